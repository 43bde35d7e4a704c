//! `throughput` and `latency` with `--server`: the generator drives a `dtlsd serve` it did
//! not start (here one the test starts, with its echo backend, through the daemon's own
//! `dtlsd::serve::Server`), two generator threads; the records really go through that
//! server (its shard counters move).

use std::time::Duration;

use bench::loadgen::run::External;
use bench::loadgen::server::{ServerSetup, TestServer};
use bench::loadgen::{CipherChoice, IoChoice};
use bench::records::Version;
use bench::{latency, throughput};

fn daemon() -> (TestServer, External) {
    let server = TestServer::start(&ServerSetup {
        shards: 1,
        control_threads: 1,
        io: IoChoice::Auto,
        null_protection: false,
        mtu: 1500,
        data_io: Default::default(),
    })
    .expect("dtlsd serve starts");
    let ext = External {
        addr: server.addr(),
        ca: server.ca().to_path_buf(),
    };
    (server, ext)
}

fn records_opened(server: &TestServer) -> u64 {
    server.stats().expect("stats").shards_total().records_opened
}

#[test]
fn throughput_against_a_running_server_round_trips_data() {
    let (server, ext) = daemon();
    let addr = ext.addr;
    let out = throughput::run(&throughput::Config {
        size: 512,
        sessions: 4,
        duration: Duration::from_millis(500),
        cipher: CipherChoice::Aes128Gcm,
        version: Version::V12,
        io: IoChoice::Auto,
        shards: 1,
        gso: true,
        server_io: Default::default(),
        window: 8,
        compare_none: false,
        slice: Duration::from_millis(200),
        warmup: Duration::from_millis(100),
        threads: 2,
        server: Some(ext),
        compare_cid: false,
    })
    .expect("throughput runs");
    let m = &out.measured[0];
    assert!(m.counts.received > 0, "nothing verified");
    assert_eq!(m.counts.corrupt, 0);
    assert!(
        m.per_thread.iter().all(|t| t.received > 0),
        "{:?}",
        m.per_thread
    );
    assert!(records_opened(&server) >= m.counts.received);
    assert_eq!(out.doc["config"]["server"], addr.to_string());
    assert!(out.text.contains("(external)"), "{}", out.text);
    // No in-process server: no counters of one.
    assert_eq!(out.doc["results"]["server_counters"], serde_json::json!([]));
    server.shutdown().expect("shutdown");
}

#[test]
fn latency_against_a_running_server_round_trips_data() {
    let (server, ext) = daemon();
    let dir = tempfile::tempdir().expect("temp dir");
    let out = latency::run(&latency::Config {
        size: 256,
        sessions: 2,
        rate: 2000.0,
        duration: Duration::from_millis(400),
        warmup: Duration::from_millis(100),
        cipher: CipherChoice::Aes128Gcm,
        version: Version::V12,
        io: IoChoice::Auto,
        shards: 1,
        server_io: Default::default(),
        gso: false,
        interval: Duration::from_millis(200),
        out: dir.path().to_path_buf(),
        json: None,
        compare_none: false,
        threads: 2,
        server: Some(ext),
        spin: false,
        hiccups: false,
    })
    .expect("latency runs");
    assert!(out.run.counts.received > 0);
    assert_eq!(out.run.counts.corrupt, 0);
    assert_eq!(out.run.per_thread.len(), 2);
    assert!(out.run.per_thread.iter().all(|t| t.received > 0));
    assert_eq!(
        out.run.counts.received,
        out.run.per_thread.iter().map(|t| t.received).sum::<u64>()
    );
    assert!(records_opened(&server) >= out.run.counts.received);
    assert_eq!(out.doc["config"]["generator"]["threads"], 2);
    server.shutdown().expect("shutdown");
}
