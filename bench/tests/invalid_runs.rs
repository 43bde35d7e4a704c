//! A measuring command whose run is invalid says so and exits 3, with its files written and
//! marked `"valid": false`, and `compare` refuses what it wrote. The invalid condition is a
//! real one: an open-loop rate no generator can hold (50 million datagrams/s) makes it fall
//! behind its schedule.

use std::process::Command;

use serde_json::Value;

#[test]
fn latency_at_an_impossible_rate_is_invalid_and_exits_3() {
    let dir = tempfile::tempdir().expect("temp dir");
    let json = dir.path().join("latency.json");
    let o = Command::new(env!("CARGO_BIN_EXE_dtls-bench"))
        .args([
            "latency",
            "--rate",
            "50000000",
            "--duration",
            "0.2",
            "--warmup",
            "0.05",
        ])
        .args(["--sessions", "1", "--size", "64", "--out"])
        .arg(dir.path())
        .arg("--json")
        .arg(&json)
        .output()
        .expect("run dtls-bench latency");
    let stdout = String::from_utf8_lossy(&o.stdout);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(3), "{stdout}{stderr}");
    assert!(
        stdout.contains("p50") && stdout.contains("INVALID:"),
        "{stdout}"
    );
    let last = stderr.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("dtls-bench: INVALID run: generator sent"),
        "the verdict is the last line: {stderr}"
    );
    // Everything is still written, marked invalid.
    let doc: Value =
        serde_json::from_str(&std::fs::read_to_string(&json).expect("json written")).expect("JSON");
    assert_eq!(doc["valid"], Value::Bool(false));
    let reasons = doc["invalid_reasons"].as_array().expect("reasons");
    assert!(
        reasons.iter().any(|r| r
            .as_str()
            .is_some_and(|r| r.contains("scheduled datagrams"))),
        "{reasons:?}"
    );
    assert!(dir.path().join("latency.hgrm").is_file());
    let o = Command::new(env!("CARGO_BIN_EXE_dtls-bench"))
        .arg("compare")
        .arg(&json)
        .arg(&json)
        .output()
        .expect("run dtls-bench compare");
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("marked invalid"));
}
