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
        window: 8,
        compare_none: true,
        slice: Duration::from_millis(200),
        warmup: Duration::from_millis(100),
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
        window: 8,
        compare_none: true,
        slice: Duration::from_millis(200),
        warmup: Duration::from_millis(100),
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
    let names: Vec<&str> = out.doc["figures"]
        .as_array()
        .expect("figures")
        .iter()
        .filter_map(|f| f["name"].as_str())
        .collect();
    assert!(
        names.contains(&"throughput.chacha20_dtls13.1200.pps"),
        "{names:?}"
    );
    assert!(names.contains(&"throughput.none.1200.pps"));
    assert!(names.contains(&"throughput.chacha20_dtls13.1200.r1"));
    assert_eq!(out.doc["config"]["version"], "1.3");
}
