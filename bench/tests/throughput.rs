//! `throughput` moves and verifies bytes with `--cipher aes128gcm` and with the null
//! baseline (`--compare-none` runs both, interleaved).

use std::time::Duration;

use bench::loadgen::{CipherChoice, IoChoice};
use bench::records::Version;
use bench::throughput;

#[test]
fn aes128gcm_and_none_both_move_verified_bytes() {
    let out = throughput::run(&throughput::Config {
        size: 1200,
        sessions: 2,
        duration: Duration::from_millis(800),
        cipher: CipherChoice::Aes128Gcm,
        version: Version::V12,
        io: IoChoice::Mmsg,
        shards: 1,
        gso: true,
        server_io: Default::default(),
        window: 8,
        compare_none: true,
        slice: Duration::from_millis(200),
        warmup: Duration::from_millis(100),
        threads: 1,
        server: None,
        compare_cid: false,
    })
    .expect("throughput runs");
    assert_eq!(out.measured.len(), 2);
    assert_eq!(out.measured[0].cipher, CipherChoice::Aes128Gcm);
    assert_eq!(out.measured[1].cipher, CipherChoice::None);
    for m in &out.measured {
        assert!(m.counts.received > 0, "{:?}: nothing verified", m.cipher);
        assert!(m.counts.sent >= m.counts.received);
        assert_eq!(m.counts.corrupt, 0, "{:?}", m.cipher);
        assert_eq!(m.counts.open_errors, 0, "{:?}", m.cipher);
        assert_eq!(m.slice_pps.len(), 2, "two rounds of 200 ms");
    }
    // AES-GCM records carry an 8-byte explicit nonce and a 16-byte tag; null ones neither.
    assert_eq!(out.measured[0].wire_bytes, 1200 + 13 + 8 + 16 + 28);
    assert_eq!(out.measured[1].wire_bytes, 1200 + 13 + 28);
    assert!(out.r1.is_some_and(|r| r > 0.0));
    let doc = &out.doc;
    assert!(doc["results"]["ratios"]["r1"].as_f64().is_some());
    assert!(doc["valid"].is_boolean());
    let names: Vec<&str> = doc["figures"]
        .as_array()
        .expect("figures")
        .iter()
        .filter_map(|f| f["name"].as_str())
        .collect();
    assert!(names.contains(&"throughput.aes128gcm.1200.pps"));
    assert!(names.contains(&"throughput.none.1200.pps"));
    assert!(names.contains(&"throughput.aes128gcm.1200.r1"));
}

/// DTLS 1.3 sessions (ChaCha20-Poly1305, unified header) move verified bytes, next to the
/// plaintext baseline; the figures name the version.
#[test]
fn dtls13_sessions_move_verified_bytes_next_to_the_baseline() {
    let out = throughput::run(&throughput::Config {
        size: 1200,
        sessions: 2,
        duration: Duration::from_millis(800),
        cipher: CipherChoice::Chacha20,
        version: Version::V13,
        io: IoChoice::Mmsg,
        shards: 1,
        gso: true,
        server_io: Default::default(),
        window: 8,
        compare_none: true,
        slice: Duration::from_millis(200),
        warmup: Duration::from_millis(100),
        threads: 1,
        server: None,
        compare_cid: false,
    })
    .expect("throughput runs");
    assert_eq!(out.measured.len(), 2);
    for m in &out.measured {
        assert!(m.counts.received > 0, "{:?}: nothing verified", m.cipher);
        assert_eq!(m.counts.corrupt, 0, "{:?}", m.cipher);
        assert_eq!(m.counts.open_errors, 0, "{:?}", m.cipher);
    }
    // RFC 9147 §4: unified header (1 + 2-byte sequence number + 2-byte length), the inner
    // content type byte, the 16-byte tag.
    assert_eq!(out.measured[0].wire_bytes, 1200 + 5 + 1 + 16 + 28);
    let names = figure_names(&out.doc);
    assert!(
        names.contains(&"throughput.chacha20_dtls13.1200.pps"),
        "{names:?}"
    );
    assert!(names.contains(&"throughput.none.1200.pps"));
    assert!(names.contains(&"throughput.chacha20_dtls13.1200.r1"));
    assert_eq!(out.doc["config"]["version"], "1.3");
}

/// The `name` of every figure in a report document.
fn figure_names(doc: &serde_json::Value) -> Vec<&str> {
    doc["figures"]
        .as_array()
        .expect("figures")
        .iter()
        .filter_map(|f| f["name"].as_str())
        .collect()
}

fn config(sessions: usize, threads: usize) -> throughput::Config {
    throughput::Config {
        size: 1200,
        sessions,
        duration: Duration::from_millis(600),
        cipher: CipherChoice::Aes128Gcm,
        version: Version::V12,
        io: IoChoice::Mmsg,
        shards: 1,
        gso: true,
        server_io: Default::default(),
        window: 8,
        compare_none: false,
        slice: Duration::from_millis(200),
        warmup: Duration::from_millis(100),
        threads,
        server: None,
        compare_cid: false,
    }
}

/// `--threads 2`: the sessions are split over two generator threads, each moves verified
/// records on its own sockets, and the totals are the sums of the threads' counters.
#[test]
fn two_generator_threads_each_move_records_and_the_totals_add_up() {
    let out = throughput::run(&config(4, 2)).expect("throughput runs");
    assert_eq!(out.measured.len(), 1);
    let m = &out.measured[0];
    assert_eq!(m.per_thread.len(), 2);
    for (i, t) in m.per_thread.iter().enumerate() {
        assert!(t.received > 0, "loadgen-{i} verified nothing: {t:?}");
        assert_eq!(t.corrupt, 0);
        assert_eq!(t.open_errors, 0);
    }
    assert_eq!(
        m.counts.received,
        m.per_thread.iter().map(|t| t.received).sum::<u64>()
    );
    assert_eq!(
        m.counts.sent,
        m.per_thread.iter().map(|t| t.sent).sum::<u64>()
    );
    // Both threads are there, by name, in the CPU accounting.
    for name in ["loadgen-0", "loadgen-1"] {
        assert!(m.cpu.iter().any(|t| t.name == name), "{name}: {:?}", m.cpu);
    }
    assert_eq!(out.doc["config"]["generator"]["threads"], 2);
    assert_eq!(
        out.doc["results"]["runs"][0]["per_thread"]
            .as_array()
            .map(Vec::len),
        Some(2)
    );
    assert!(out.text.contains("generator 2 thread(s)"), "{}", out.text);
}

/// `--compare-cid` (DTLS 1.2): both halves move verified records through the same server;
/// the CID half's sessions all got a CID and every echo came back in a `tls12_cid`
/// record, the other half's in none; the ratio is reported.
#[test]
fn compare_cid_moves_records_with_and_without_connection_ids() {
    let mut cfg = config(2, 1);
    cfg.compare_cid = true;
    cfg.duration = Duration::from_millis(800);
    let out = throughput::run(&cfg).expect("throughput runs");
    assert_eq!(out.measured.len(), 2);
    let (off, on) = (&out.measured[0], &out.measured[1]);
    assert!(!off.cid && on.cid);
    for m in [off, on] {
        assert!(m.counts.received > 0, "cid {}: nothing verified", m.cid);
        assert_eq!(m.counts.corrupt, 0);
        assert_eq!(m.counts.open_errors, 0);
        assert_eq!(m.slice_pps.len(), 2, "two rounds of 200 ms");
    }
    assert_eq!(off.cid_sessions, 0);
    assert_eq!(off.counts.cid_records, 0);
    assert_eq!(on.cid_sessions, 2);
    assert_eq!(on.counts.cid_records, on.counts.received);
    // RFC 9146 §4: tls12_cid adds the 8-byte CID to the header and the real type byte to
    // the inner plaintext.
    assert_eq!(off.wire_bytes, 1200 + 13 + 8 + 16 + 28);
    assert_eq!(on.wire_bytes, 1200 + 13 + 8 + 8 + 1 + 16 + 28);
    assert!(
        out.doc["results"]["ratios"]["cid"]
            .as_f64()
            .is_some_and(|r| r > 0.0)
    );
    let names = figure_names(&out.doc);
    assert!(
        names.contains(&"throughput.aes128gcm.1200.pps"),
        "{names:?}"
    );
    assert!(names.contains(&"throughput.aes128gcm_cid.1200.pps"));
    assert!(names.contains(&"throughput.aes128gcm.1200.cid_ratio"));
}

/// `--compare-cid --version 1.3`: the CID half's records carry the C bit and the CID
/// both ways.
#[test]
fn compare_cid_in_dtls13_uses_the_c_bit() {
    let mut cfg = config(2, 1);
    cfg.compare_cid = true;
    cfg.version = Version::V13;
    cfg.cipher = CipherChoice::Chacha20;
    cfg.duration = Duration::from_millis(800);
    let out = throughput::run(&cfg).expect("throughput runs");
    let (off, on) = (&out.measured[0], &out.measured[1]);
    assert!(off.counts.received > 0 && on.counts.received > 0);
    assert_eq!(off.counts.cid_records, 0);
    assert_eq!(on.cid_sessions, 2);
    assert_eq!(on.counts.cid_records, on.counts.received);
    assert_eq!(on.counts.open_errors, 0);
    // RFC 9147 §4: the unified header grows by the 8-byte CID.
    assert_eq!(on.wire_bytes, off.wire_bytes + 8);
}
