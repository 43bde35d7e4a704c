//! `dtls-bench records` from the command line: `--version 1.2` (the default) keeps its
//! fields, `--version 1.3` compares the DTLS 1.3 record layer with the DTLS 1.2 one and
//! refuses the null cipher.

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

fn records(args: &[&str], json: Option<&Path>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_dtls-bench"));
    cmd.arg("records")
        .args([
            "--size",
            "64",
            "--runs",
            "5",
            "--batch",
            "2",
            "--min-run-ms",
            "1",
        ])
        .args(args);
    if let Some(path) = json {
        cmd.arg("--json").arg(path);
    }
    cmd.output().expect("run dtls-bench records")
}

fn run_json(args: &[&str]) -> (String, Value) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("records.json");
    let o = records(args, Some(&path));
    let stdout = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        o.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let text = std::fs::read_to_string(&path).expect("JSON written");
    (stdout, serde_json::from_str(&text).expect("valid JSON"))
}

fn keys(v: &Value) -> Vec<&str> {
    let mut k: Vec<&str> = v
        .as_object()
        .expect("object")
        .keys()
        .map(String::as_str)
        .collect();
    k.sort_unstable();
    k
}

#[test]
fn records_v12_is_the_default_and_keeps_its_fields() {
    let (table, doc) = run_json(&["--cipher", "aes128gcm", "none"]);
    let (_, explicit) = run_json(&["--version", "1.2", "--cipher", "aes128gcm", "none"]);
    for d in [&doc, &explicit] {
        assert_eq!(
            keys(&d["config"]),
            [
                "batch",
                "benchmark",
                "ciphers",
                "min_run_ms",
                "runs",
                "sizes",
                "warmup_runs"
            ]
        );
        assert_eq!(keys(&d["results"]), ["ratios", "records"]);
        let recs = d["results"]["records"].as_array().expect("records");
        assert_eq!(recs.len(), 4);
        for r in recs {
            assert_eq!(
                keys(r),
                [
                    "cipher",
                    "op",
                    "ours",
                    "ratio_ours_raw",
                    "ratio_ours_raw_max",
                    "ratio_ours_raw_min",
                    "raw",
                    "size"
                ]
            );
        }
        assert!(
            d["results"]["ratios"]["seal_aes128gcm_64"]
                .as_f64()
                .is_some()
        );
        let names: Vec<&str> = d["figures"]
            .as_array()
            .expect("figures")
            .iter()
            .filter_map(|f| f["name"].as_str())
            .collect();
        assert!(names.contains(&"records.seal.aes128gcm.64.ratio_to_raw"));
        assert!(names.iter().all(|n| n.starts_with("records.")));
    }
    assert!(
        table.contains("ours ns") && table.contains("ours/raw"),
        "{table}"
    );
}

#[test]
fn records_v13_compares_every_aead_with_v12() {
    let (table, doc) = run_json(&["--version", "1.3"]);
    assert!(
        table.contains("1.3 ns") && table.contains("1.2 ns") && table.contains("1.3/1.2"),
        "{table}"
    );
    assert_eq!(doc["config"]["dtls_version"], "1.3");
    assert_eq!(
        doc["config"]["ciphers"],
        serde_json::json!(["aes128gcm", "aes256gcm", "chacha20poly1305"])
    );
    let recs = doc["results"]["records"].as_array().expect("records");
    assert_eq!(recs.len(), 6);
    for r in recs {
        let ratio = r["ratio_v13_v12"].as_f64().expect("ratio");
        assert!(ratio > 0.0 && ratio.is_finite(), "{r}");
        assert!(r["v13"]["median_ns"].as_f64().expect("1.3 ns") > 0.0);
        assert!(r["v12"]["median_ns"].as_f64().expect("1.2 ns") > 0.0);
    }
    assert_eq!(
        doc["results"]["ratios_v13_v12"]
            .as_object()
            .expect("ratios")
            .len(),
        6
    );
}

#[test]
fn records_v13_refuses_the_null_cipher() {
    let o = records(&["--version", "1.3", "--cipher", "none"], None);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("no DTLS 1.3 record format"), "{err}");
    assert!(o.stdout.is_empty());
}
