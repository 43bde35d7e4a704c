//! `quick` completes with a short duration and writes its three files.

use std::time::Duration;

use bench::loadgen::{CipherChoice, IoChoice};
use bench::quick;

#[test]
fn quick_completes_and_writes_results() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = quick::run(&quick::Config {
        duration: Duration::from_secs(1),
        sessions: 4,
        size: 1200,
        cipher: CipherChoice::Aes128Gcm,
        io: IoChoice::Auto,
        shards: Some(1),
        out: dir.path().to_path_buf(),
    })
    .expect("quick runs");
    assert!(out.dir.starts_with(dir.path()));
    for f in ["result.json", "latency.hgrm", "latency.hlog"] {
        let p = out.dir.join(f);
        assert!(p.is_file(), "{} written", p.display());
    }
    let text = std::fs::read_to_string(out.dir.join("result.json")).expect("result.json");
    let doc: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
    // The file is the document returned (floats may differ in the last digit).
    assert_eq!(doc["timestamp"], out.doc["timestamp"]);
    assert_eq!(
        doc["results"]["handshakes"],
        out.doc["results"]["handshakes"]
    );
    assert_eq!(doc["tool"], "dtls-bench quick");
    assert!(doc["valid"].is_boolean(), "valid field: {}", doc["valid"]);
    let r = &doc["results"];
    assert_eq!(r["handshakes"], 4);
    assert!(r["handshakes_per_s"].as_f64().expect("number") > 0.0);
    assert!(r["pps"].as_f64().expect("number") > 0.0);
    assert!(r["gbps_payload"].as_f64().expect("number") > 0.0);
    assert_eq!(r["drops"]["corrupt"], 0);
    assert_eq!(r["drops"]["open_errors"], 0);
    assert!(r["latency_ns"]["count"].as_u64().expect("count") > 0);
    assert!(r["latency_ns"]["p50"].as_u64().expect("p50") > 0);
    assert!(r["cpu"]["threads"]["dtlsd-shard-0"].is_number());
    assert!(r["cpu"]["threads"]["loadgen-0"].is_number());
    let figures = doc["figures"].as_array().expect("figures array");
    assert!(
        figures
            .iter()
            .any(|f| f["name"] == "quick.pps" && f["better"] == "higher")
    );
    assert!(
        figures
            .iter()
            .all(|f| f["value"].is_number() && f["unit"].is_string())
    );
    assert!(out.text.contains("handshakes:") && out.text.contains("Mpps"));
}
