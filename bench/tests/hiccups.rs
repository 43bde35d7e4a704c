//! `dtls-bench hiccups`: the host-noise probes on their own, as an operator qualifies a host.

use std::process::Command;

/// The command probes every CPU, names the other processes' CPU, and writes a result
/// document whose per-CPU wake-ups show the probes ran; `--spin` is refused where the
/// spinning generator threads and the shards outnumber the cores.
#[test]
fn hiccups_probes_every_cpu_and_writes_its_document() {
    let dir = tempfile::tempdir().expect("temp dir");
    let json = dir.path().join("hiccups.json");
    let o = Command::new(env!("CARGO_BIN_EXE_dtls-bench"))
        .args(["hiccups", "--duration", "0.3", "--json"])
        .arg(&json)
        .output()
        .expect("run dtls-bench hiccups");
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(stdout.contains("host hiccups: cpu"), "{stdout}");
    assert!(stdout.contains("other processes: "), "{stdout}");
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).expect("json")).expect("valid");
    let cpus = doc["results"]["hiccups"]["cpus"].as_array().expect("cpus");
    assert_eq!(
        cpus.len(),
        core_affinity::get_core_ids().expect("cores").len()
    );
    for c in cpus {
        assert!(c["wakeups"].as_u64().expect("wakeups") > 0, "{c}");
    }
    let o = Command::new(env!("CARGO_BIN_EXE_dtls-bench"))
        .args(["hiccups", "--duration", "0"])
        .output()
        .expect("run dtls-bench hiccups");
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("--duration"));
}

/// `latency --spin` with more spinning threads and shards than cores is refused up front.
#[test]
fn spinning_beyond_the_cores_is_refused() {
    let cores = core_affinity::get_core_ids().expect("cores").len();
    let threads = cores.to_string();
    let o = Command::new(env!("CARGO_BIN_EXE_dtls-bench"))
        .args(["latency", "--rate", "1000", "--duration", "0.1", "--spin"])
        .args(["--threads", &threads, "--sessions", &threads])
        .output()
        .expect("run dtls-bench latency");
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("--spin") && err.contains("cores"), "{err}");
}
