//! `latency`: open loop at a fixed rate (with the null baseline) and at fractions of the
//! probed maximum; files written and readable.

use std::time::Duration;

use bench::latency;
use bench::loadgen::{CipherChoice, IoChoice};
use bench::records::Version;
use hdrhistogram::serialization::interval_log::{IntervalLogIterator, LogEntry};

fn config(out: &std::path::Path, compare_none: bool) -> latency::Config {
    latency::Config {
        size: 256,
        sessions: 2,
        rate: 2000.0,
        duration: Duration::from_millis(500),
        warmup: Duration::from_millis(100),
        cipher: CipherChoice::Chacha20,
        version: Version::V12,
        io: IoChoice::Auto,
        shards: 1,
        server_io: Default::default(),
        gso: false,
        interval: Duration::from_millis(200),
        out: out.to_path_buf(),
        json: None,
        compare_none,
        threads: 1,
        server: None,
        spin: false,
        hiccups: false,
    }
}

fn intervals_in(path: &std::path::Path) -> usize {
    let bytes = std::fs::read(path).expect("hlog");
    IntervalLogIterator::new(&bytes)
        .map(|e| e.expect("entry parses"))
        .filter(|e| matches!(e, LogEntry::Interval(_)))
        .count()
}

#[test]
fn fixed_rate_with_baseline_writes_files_and_ratios() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = latency::run(&config(dir.path(), true)).expect("latency runs");
    assert!(out.run.counts.received > 0);
    assert_eq!(out.run.counts.corrupt, 0);
    assert_eq!(out.run.counts.open_errors, 0);
    assert!(!out.run.histogram.is_empty());
    let hgrm = std::fs::read_to_string(dir.path().join("latency.hgrm")).expect("hgrm");
    assert!(hgrm.contains("#[Max     ="));
    // 500 ms in 200 ms intervals: two full ones and the rest.
    assert!(intervals_in(&dir.path().join("latency.hlog")) >= 2);
    let doc: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("result.json")).expect("json"),
    )
    .expect("valid JSON");
    assert!(
        doc["results"]["baseline"]["verified"]
            .as_u64()
            .expect("baseline")
            > 0
    );
    assert!(doc["results"]["ratios"]["p50_to_none"].as_f64().is_some());
    assert_eq!(doc["config"]["cipher"], "chacha20");
}

/// `--spin`: the generator polls without sleeping (no send timer armed, polls counted), its
/// whole-core CPU use does not invalidate the run, and the hiccup probes report every CPU
/// for the run and for the baseline.
#[test]
fn a_spinning_generator_never_sleeps_and_hiccups_are_reported() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut cfg = config(dir.path(), true);
    cfg.spin = true;
    cfg.hiccups = true;
    let out = latency::run(&cfg).expect("latency runs");
    let run = &out.run;
    assert!(run.counts.received > 0);
    assert_eq!(run.counts.corrupt + run.counts.open_errors, 0);
    assert!(run.spin);
    assert_eq!(
        run.counts.timer_arms, 0,
        "a spinning generator armed its timer"
    );
    assert!(run.counts.spin_polls >= run.counts.sent, "{:?}", run.counts);
    assert!(
        !run.invalid_reasons()
            .iter()
            .any(|r| r.contains("saturated")),
        "{:?}",
        run.invalid_reasons()
    );
    let cpus = core_affinity::get_core_ids().expect("cpus").len();
    let r = &out.doc["results"];
    for which in ["run", "baseline"] {
        let h = &r[which]["hiccups"];
        let per_cpu = h["cpus"].as_array().expect("hiccups per cpu");
        assert_eq!(per_cpu.len(), cpus, "{which}");
        for c in per_cpu {
            assert!(c["wakeups"].as_u64().expect("wakeups") > 0, "{which}: {c}");
        }
        assert!(
            h["wall_ns"].as_u64().expect("wall") >= 400_000_000,
            "{which}"
        );
    }
    assert_eq!(r["run"]["spin_polls"], run.counts.spin_polls);
    assert_eq!(r["run"]["timer_arms"], 0);
    assert!(
        r["run"]["hiccups"]["others"]["percent_of_a_core"].is_number(),
        "{}",
        r["run"]["hiccups"]
    );
    assert!(out.text.contains("host hiccups: cpu"), "{}", out.text);
    assert!(out.text.contains("other processes: "), "{}", out.text);
    assert!(out.text.contains("(spinning)"), "{}", out.text);
}

/// Sleeping (the default) the generator waits on its send timer between sends.
#[test]
fn a_sleeping_generator_waits_on_its_send_timer() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = latency::run(&config(dir.path(), false)).expect("latency runs");
    assert!(out.run.counts.received > 0);
    assert!(out.run.counts.timer_arms > 0);
    assert_eq!(out.run.counts.spin_polls, 0);
    assert!(out.run.hiccups.is_none());
    assert!(out.doc["results"]["run"]["hiccups"].is_null());
}

#[test]
fn loads_probe_the_maximum_and_run_each_fraction() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = latency::run_loads(
        &config(dir.path(), false),
        &[0.1, 0.3],
        Duration::from_millis(300),
    )
    .expect("latency loads run");
    let r = &out.doc["results"];
    let max = r["max_pps"].as_f64().expect("max");
    assert!(max > 0.0);
    let loads = r["loads"].as_array().expect("loads");
    assert_eq!(loads.len(), 2);
    for (l, want) in loads.iter().zip([0.1, 0.3]) {
        assert_eq!(l["load"].as_f64(), Some(want));
        assert!((l["rate_pps"].as_f64().expect("rate") - want * max).abs() < 1e-6 * max);
        assert!(l["verified"].as_u64().expect("verified") > 0);
    }
    for pct in [10, 30] {
        let d = dir.path().join(format!("load-{pct}"));
        assert!(d.join("latency.hgrm").is_file() && d.join("latency.hlog").is_file());
    }
    assert!(
        latency::run_loads(
            &config(dir.path(), false),
            &[1.5],
            Duration::from_millis(100)
        )
        .is_err()
    );
}
