//! `dtls-bench compare` as CI runs it: the built binary on files, checked by exit code,
//! report and exported files.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::{Value, json};

struct Dir(PathBuf);

impl Dir {
    fn new(name: &str) -> Self {
        let p =
            std::env::temp_dir().join(format!("dtls-bench-compare-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("temp dir");
        Self(p)
    }

    fn write(&self, name: &str, doc: &Value) -> PathBuf {
        let p = self.0.join(name);
        std::fs::write(&p, serde_json::to_string_pretty(doc).expect("json")).expect("write");
        p
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn doc(pps: f64, p99: f64, extra: bool) -> Value {
    let mut figures = vec![
        json!({"name": "throughput.aes128gcm.1200.pps", "value": pps, "unit": "pps", "better": "higher"}),
        json!({"name": "latency.aes128gcm.1200.p99_ns", "value": p99, "unit": "ns", "better": "lower"}),
    ];
    if extra {
        figures.push(json!({"name": "flood.bytes_out_per_in", "value": 0.5, "unit": "ratio", "better": "lower"}));
    }
    json!({ "tool": "dtls-bench test", "results": {"pps": pps}, "figures": figures })
}

fn compare(base: &Path, new: &Path, extra: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_dtls-bench"))
        .arg("compare")
        .arg(base)
        .arg(new)
        .args(["--threshold", "5"])
        .args(extra)
        .output()
        .expect("run dtls-bench")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn regressions_beyond_threshold_fail_with_a_table() {
    let d = Dir::new("regress");
    let base = d.write("base.json", &doc(1_000_000.0, 50_000.0, false));
    // Higher-is-better figure 10% down.
    let slower = d.write("slower.json", &doc(900_000.0, 50_000.0, false));
    let o = compare(&base, &slower, &[]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let t = text(&o);
    assert!(
        t.contains("REGRESSED") && t.contains("throughput.aes128gcm.1200.pps"),
        "{t}"
    );
    assert!(t.contains("-10.00%"), "{t}");
    assert!(t.contains("1 regression(s)"), "{t}");
    // Lower-is-better figure 10% up.
    let laggier = d.write("laggier.json", &doc(1_000_000.0, 55_000.0, false));
    let o = compare(&base, &laggier, &[]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let t = text(&o);
    assert!(
        t.contains("latency.aes128gcm.1200.p99_ns") && t.contains("+10.00%"),
        "{t}"
    );
}

#[test]
fn equal_and_improved_runs_pass() {
    let d = Dir::new("pass");
    let base = d.write("base.json", &doc(1_000_000.0, 50_000.0, false));
    let o = compare(&base, &base, &[]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains("no regression"), "{}", text(&o));
    let better = d.write("better.json", &doc(1_500_000.0, 20_000.0, false));
    let o = compare(&base, &better, &[]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(text(&o).matches("improved").count(), 2, "{}", text(&o));
    // Within the threshold: 4% worse on both passes at 5%.
    let noise = d.write("noise.json", &doc(960_000.0, 52_000.0, false));
    let o = compare(&base, &noise, &[]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
}

#[test]
fn missing_figure_warns_new_figure_listed() {
    let d = Dir::new("missing");
    let base = d.write("base.json", &doc(1.0e6, 5.0e4, true));
    let new = d.write("new.json", &doc(1.0e6, 5.0e4, false));
    let o = compare(&base, &new, &[]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "a missing figure is a warning: {}",
        text(&o)
    );
    assert!(
        text(&o).contains("warning: flood.bytes_out_per_in is in BASE but missing from NEW"),
        "{}",
        text(&o)
    );
    let o = compare(&new, &base, &[]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(
        text(&o).contains("new figure: flood.bytes_out_per_in"),
        "{}",
        text(&o)
    );
}

#[test]
fn unusable_input_exits_2_with_a_clear_error() {
    let d = Dir::new("bad");
    let good = d.write("good.json", &doc(1.0e6, 5.0e4, false));
    let malformed = d.0.join("malformed.json");
    std::fs::write(&malformed, "{\"figures\": [").expect("write");
    let o = compare(&good, &malformed, &[]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("malformed JSON"), "{}", text(&o));
    assert!(text(&o).contains("malformed.json"), "{}", text(&o));
    let no_figures = d.write("nofig.json", &json!({"results": {}}));
    let o = compare(&no_figures, &good, &[]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("no top-level \"figures\" array"),
        "{}",
        text(&o)
    );
    let o = compare(&good, &d.0.join("absent.json"), &[]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("cannot read"), "{}", text(&o));
    let o = Command::new(env!("CARGO_BIN_EXE_dtls-bench"))
        .args(["compare"])
        .arg(&good)
        .arg(&good)
        .args(["--threshold", "-3"])
        .output()
        .expect("run");
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
}

#[test]
fn a_file_marked_invalid_is_refused_on_either_side_with_exit_2() {
    let d = Dir::new("invalid");
    let mut valid = doc(1.0e6, 5.0e4, false);
    valid["valid"] = json!(true);
    valid["invalid_reasons"] = json!([]);
    let good = d.write("good.json", &valid);
    let mut bad = doc(1.0e6, 5.0e4, false);
    bad["valid"] = json!(false);
    bad["invalid_reasons"] =
        json!(["generator thread loadgen-0 saturated (97.0% of a core >= 95%)"]);
    let bad = d.write("saturated.json", &bad);
    assert_eq!(compare(&good, &good, &[]).status.code(), Some(0));
    for (base, new) in [(&good, &bad), (&bad, &good)] {
        let o = compare(base, new, &[]);
        assert_eq!(o.status.code(), Some(2), "{}", text(&o));
        let t = text(&o);
        assert!(
            t.contains("saturated.json") && !t.contains("good.json"),
            "{t}"
        );
        assert!(t.contains("marked invalid"), "{t}");
        assert!(t.contains("loadgen-0 saturated (97.0%"), "{t}");
    }
    // A suite's merged summary with an invalid run is refused the same way.
    let summary = d.write(
        "summary.json",
        &json!({
            "tool": "dtls-bench summary",
            "valid": false,
            "invalid_runs": [{"file": "r/b5-flood.json", "tool": "dtls-bench flood", "reasons": ["no datagram came back"]}],
            "figures": doc(1.0e6, 5.0e4, false)["figures"],
        }),
    );
    let o = compare(&good, &summary, &[]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("summary.json")
            && text(&o).contains("r/b5-flood.json is invalid (no datagram came back)"),
        "{}",
        text(&o)
    );
}

#[test]
fn github_and_bencher_exports_parse_and_hold_the_figures() {
    let d = Dir::new("export");
    let base = d.write("base.json", &doc(1.0e6, 5.0e4, true));
    let new = d.write("new.json", &doc(1.1e6, 4.0e4, true));
    let gh = d.0.join("gh.json");
    let bmf = d.0.join("bmf.json");
    let o = compare(
        &base,
        &new,
        &[
            "--github-json",
            gh.to_str().expect("utf-8 path"),
            "--bmf",
            bmf.to_str().expect("utf-8 path"),
        ],
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let read = |p: &Path| -> Value {
        serde_json::from_str(&std::fs::read_to_string(p).expect("export written")).expect("JSON")
    };
    assert_eq!(
        read(&gh),
        json!([{"name": "throughput.aes128gcm.1200.pps", "unit": "pps", "value": 1.1e6}])
    );
    let smaller = read(&d.0.join("gh-smaller.json"));
    let names: Vec<&str> = smaller
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|f| f["name"].as_str())
        .collect();
    assert_eq!(
        names,
        ["latency.aes128gcm.1200.p99_ns", "flood.bytes_out_per_in"]
    );
    assert_eq!(smaller[0]["value"], json!(4.0e4));
    let b = read(&bmf);
    assert_eq!(b["throughput.aes128gcm.1200"]["pps"]["value"], json!(1.1e6));
    assert_eq!(b["latency.aes128gcm.1200"]["p99_ns"]["value"], json!(4.0e4));
    assert_eq!(b["flood"]["bytes_out_per_in"]["value"], json!(0.5));
}

#[test]
fn records_json_is_comparable() {
    let d = Dir::new("records");
    let out = d.0.join("records.json");
    let o = Command::new(env!("CARGO_BIN_EXE_dtls-bench"))
        .args([
            "records",
            "--size",
            "64",
            "--cipher",
            "aes128gcm",
            "--runs",
            "5",
            "--batch",
            "4",
            "--min-run-ms",
            "1",
            "--json",
        ])
        .arg(&out)
        .output()
        .expect("run records");
    assert!(o.status.success(), "{}", text(&o));
    let v: Value =
        serde_json::from_str(&std::fs::read_to_string(&out).expect("json")).expect("parses");
    let figs = bench::compare::figures_from_json(&v).expect("figures array");
    assert!(
        figs.iter()
            .any(|f| f.name == "records.seal.aes128gcm.64.ratio_to_raw" && f.value > 0.0)
    );
    let o = compare(&out, &out, &[]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
}
