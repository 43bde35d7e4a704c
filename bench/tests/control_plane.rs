//! `handshakes`, `flood` and `overload` against the in-process server, short runs.

use std::time::Duration;

use bench::handshakes::Group;
use bench::records::Version;
use bench::{flood, handshakes, overload};

#[test]
fn handshakes_complete_and_the_bound_is_measured() {
    let out = handshakes::run(&handshakes::Config {
        duration: Duration::from_millis(300),
        parallel: 2,
        resume: true,
        server: None,
        ca: None,
        version: Version::V12,
        group: Group::default(),
        control_threads: 1,
        threads: 1,
    })
    .expect("handshakes run");
    assert!(out.bound > 0.0);
    assert_eq!(out.kinds.len(), 2);
    let full = &out.kinds[0];
    assert!(full.completed > 0, "{:?}", full.first_error);
    assert_eq!(full.failed, 0, "{:?}", full.first_error);
    assert_eq!(full.resumed, 0, "the full phase offers no tickets");
    // dtlsd issues session tickets: the second phase resumes with them.
    let resumed = &out.kinds[1];
    assert!(resumed.resumed > 0, "{:?}", resumed.first_error);
    assert_eq!(resumed.failed, 0, "{:?}", resumed.first_error);
    assert!(
        out.doc["results"]["server_side_bound_per_s"]
            .as_f64()
            .is_some_and(|b| b > 0.0)
    );
    assert!(
        out.doc["results"]["ratios"]["full_to_bound"]
            .as_f64()
            .is_some()
    );
    assert!(out.doc["valid"].is_boolean());
}

/// DTLS 1.3 with each group: full handshakes complete, the second phase resumes with the
/// tickets that came in NewSessionTicket after the first phase's handshakes, and the
/// figures name the version and group.
#[test]
fn dtls13_handshakes_complete_and_resume_in_each_group() {
    for group in [Group::X25519, Group::X25519Mlkem768, Group::P256] {
        let out = handshakes::run(&handshakes::Config {
            duration: Duration::from_millis(300),
            parallel: 2,
            resume: true,
            server: None,
            ca: None,
            version: Version::V13,
            group,
            control_threads: 1,
            threads: 1,
        })
        .expect("handshakes run");
        assert!(out.bound > 0.0);
        let full = &out.kinds[0];
        assert!(full.completed > 0, "{group:?}: {:?}", full.first_error);
        assert_eq!(full.failed, 0, "{group:?}: {:?}", full.first_error);
        assert_eq!(full.resumed, 0);
        let resumed = &out.kinds[1];
        assert!(resumed.resumed > 0, "{group:?}: {:?}", resumed.first_error);
        assert_eq!(resumed.failed, 0, "{group:?}: {:?}", resumed.first_error);
        assert_eq!(out.doc["config"]["version"], "1.3");
        assert_eq!(out.doc["config"]["group"], group.name());
        assert!(out.text.contains("DTLS 1.3"), "{}", out.text);
    }
}

/// `--control-threads 2`: the clients spread over 127.0.0.1-16, so both of the in-process
/// server's handshake workers run handshakes, and the control CPU counts both threads.
#[test]
fn handshakes_reach_both_workers_of_a_two_worker_server() {
    let out = handshakes::run(&handshakes::Config {
        duration: Duration::from_millis(400),
        parallel: 8,
        resume: false,
        server: None,
        ca: None,
        version: Version::V12,
        group: Group::default(),
        control_threads: 2,
        threads: 1,
    })
    .expect("handshakes run");
    let full = &out.kinds[0];
    assert!(full.completed > 0, "{:?}", full.first_error);
    assert_eq!(full.failed, 0, "{:?}", full.first_error);
    // Each worker did a real share of the work (an idle worker's loop costs next to no
    // CPU; all clients from one address would leave one worker idle).
    let workers: Vec<u64> = full
        .cpu
        .iter()
        .filter(|t| t.name.starts_with("dtlsd-control-"))
        .map(|t| t.cpu_ns)
        .collect();
    assert_eq!(workers.len(), 2, "{:?}", full.cpu);
    let busiest = workers.iter().copied().max().unwrap_or(0);
    assert!(
        workers.iter().all(|&ns| ns > 0 && ns >= busiest / 10),
        "both workers worked: {:?}",
        full.cpu
    );
    assert!(full.per_control_cpu_s.is_some_and(|r| r > 0.0));
    assert_eq!(out.doc["config"]["control_threads"], 2);
    assert!(out.text.contains("(2 handshake workers)"), "{}", out.text);
}

/// `--threads 2`: both generator threads run handshakes (each its half of --parallel,
/// its own tickets), and the resumed phase still resumes.
#[test]
fn two_generator_threads_both_handshake() {
    let out = handshakes::run(&handshakes::Config {
        duration: Duration::from_millis(400),
        parallel: 4,
        resume: true,
        server: None,
        ca: None,
        version: Version::V12,
        group: Group::default(),
        control_threads: 1,
        threads: 2,
    })
    .expect("handshakes run");
    let full = &out.kinds[0];
    assert!(full.completed > 0, "{:?}", full.first_error);
    assert_eq!(full.failed, 0, "{:?}", full.first_error);
    for name in ["loadgen-0", "loadgen-1"] {
        assert!(
            full.cpu.iter().any(|t| t.name == name && t.cpu_ns > 0),
            "{name}: {:?}",
            full.cpu
        );
    }
    assert!(out.kinds[1].resumed > 0, "{:?}", out.kinds[1].first_error);
    assert_eq!(out.doc["config"]["generator_threads"], 2);
}

#[test]
fn flood_is_answered_without_amplification() {
    let out = flood::run(&flood::Config {
        rate: 500.0,
        duration: Duration::from_millis(400),
        sources: 8,
        parallel: 1,
    })
    .expect("flood runs");
    assert!(out.flood.hellos > 0);
    assert!(out.flood.replies > 0, "HelloVerifyRequests came back");
    // RFC 6347 §4.2.1: the HelloVerifyRequest must not be larger than the ClientHello.
    let hello = out.doc["results"]["hello_bytes"]
        .as_u64()
        .expect("hello size");
    assert!(out.flood.max_reply as u64 <= hello);
    assert!(out.flood.bytes_in <= out.flood.bytes_out);
    assert!(
        out.legit.0 > 0,
        "legitimate handshakes completed during the flood"
    );
    assert!(out.doc["results"]["rss_delta_bytes"].is_i64());
}

/// Both attacks reach the server (its handshake counters move with the attacker's cookie-
/// bearing hellos and completed handshakes), every phase's bulk records are echoed intact,
/// and the kept ratios are measured. A short run at half the probed capacity: the figures
/// themselves are the benchmark's, not the test's.
#[test]
fn overload_attacks_reach_the_server_while_sessions_relay() {
    let out = overload::run(&overload::Config {
        sessions: 4,
        size: 200,
        window: 4,
        attacks: vec![overload::Attack::Full, overload::Attack::HalfOpen],
        factor: 0.5,
        sources: 8,
        slice: Duration::from_millis(400),
        rounds: 1,
        probe: Duration::from_millis(300),
        probe_parallel: 4,
        control_threads: 1,
        version: Version::V12,
    })
    .expect("overload runs");
    assert_eq!(out.kept.len(), 2);
    assert!(out.kept.iter().all(|k| *k > 0.0), "{:?}", out.kept);
    let r = &out.doc["results"];
    assert!(r["quiet_pps"].as_f64().is_some_and(|p| p > 0.0));
    assert_eq!(r["bulk_corrupt"], 0);
    let full = &r["attacks"][0];
    let half = &r["attacks"][1];
    assert_eq!(full["attack"], "full");
    assert!(full["completed"].as_u64().is_some_and(|n| n > 0), "{full}");
    assert_eq!(half["attack"], "half-open");
    let cookie_hellos = half["cookie_hellos"].as_u64().unwrap_or(0);
    assert!(cookie_hellos > 0, "{half}");
    assert_eq!(half["completed"], 0, "half-open attempts never finish");
    // The server started an engine for each cookie-bearing hello it took (probe, bulk
    // sessions and the full attack's add more), and shed or refused none at half capacity.
    let started = r["server"]["counters"]["handshakes_started"]
        .as_u64()
        .unwrap_or(0);
    assert!(
        started >= cookie_hellos,
        "started {started} < {cookie_hellos}"
    );
    assert!(
        out.text.contains("kept"),
        "the report names the kept ratio: {}",
        out.text
    );
}
