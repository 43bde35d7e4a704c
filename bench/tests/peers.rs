//! `dtls-bench peers` (B8) with a tiny duration: both stacks moved real records and
//! completed real handshakes, in memory and over UDP loopback, and the ratios are usable
//! numbers.

use std::process::Command;

use serde_json::Value;

#[test]
fn tiny_run_measures_both_stacks() {
    let report = bench::peers::run(&bench::peers::Config {
        duration: std::time::Duration::from_millis(40),
        rounds: 2,
        size: 1200,
    })
    .expect("B8 runs");
    for (what, r) in [
        ("our records", report.ours_records),
        ("OpenSSL records", report.openssl_records),
        ("raw AEAD records", report.raw_records),
        ("our handshakes", report.ours_handshakes),
        ("OpenSSL handshakes", report.openssl_handshakes),
    ] {
        assert!(r.total > 0, "{what}: nothing done");
        assert!(r.median.is_finite() && r.median > 0.0, "{what}: {r:?}");
        assert!(r.min <= r.median && r.median <= r.max, "{what}: {r:?}");
    }
    // Records are counted in passes of 64 after a complete write + read each.
    assert!(report.ours_records.total >= 128 && report.openssl_records.total >= 128);
    for ratio in [
        report.records_ratio,
        report.records_ratio_raw,
        report.records_ceiling,
        report.handshakes_ratio,
    ] {
        assert!(ratio.is_finite() && ratio > 0.0, "{report:?}");
    }
    assert!(
        report.openssl_version.starts_with("OpenSSL"),
        "{}",
        report.openssl_version
    );
    let figs = report.figures();
    assert_eq!(figs.len(), 7);
    assert!(figs.iter().all(|f| f.value.is_finite() && f.value > 0.0));
}

#[test]
fn cli_writes_comparable_json() {
    let dir = std::env::temp_dir().join(format!("dtls-bench-peers-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let out = dir.join("peers.json");
    let o = Command::new(env!("CARGO_BIN_EXE_dtls-bench"))
        .args(["peers", "--duration", "0.04", "--rounds", "1"])
        .args([
            "--udp-duration",
            "0.2",
            "--udp-rounds",
            "1",
            "--sessions",
            "2",
        ])
        .args(["--window", "4", "--json"])
        .arg(&out)
        .output()
        .expect("run dtls-bench peers");
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(text.contains("ours / OpenSSL: records"), "{text}{stderr}");
    let v: Value =
        serde_json::from_str(&std::fs::read_to_string(&out).expect("json written")).expect("JSON");
    // A debug build's generator may saturate a core in such a short run: then the run is
    // invalid, says so, and exits 3; either way the exit code and the file agree.
    match o.status.code() {
        Some(0) => assert_eq!(v["valid"], Value::Bool(true), "{text}{stderr}"),
        Some(3) => {
            assert_eq!(v["valid"], Value::Bool(false));
            assert!(!v["invalid_reasons"].as_array().expect("reasons").is_empty());
            assert!(text.contains("INVALID: "), "{text}");
            assert!(stderr.contains("dtls-bench: INVALID run: "), "{stderr}");
        }
        other => panic!("exit {other:?}: {text}{stderr}"),
    }
    assert_eq!(v["config"]["cookie_exchange"], Value::Bool(true));
    assert!(v["results"]["handshakes"]["openssl"]["total"].as_u64() > Some(0));
    assert!(v["results"]["records"]["ours"]["total"].as_u64() > Some(0));
    let figs = bench::compare::figures_from_json(&v).expect("figures array");
    assert!(
        figs.iter()
            .any(|f| f.name == "peers.records.aes128gcm.1200.ratio_ours_openssl")
    );
    assert_eq!(v["config"]["transport"], Value::String("both".into()));
    assert!(text.contains("ours / OpenSSL per server core"), "{text}");
    for name in [
        "peers.udp.records_per_core_s.ours",
        "peers.udp.records_per_core_s.openssl",
        "peers.udp.records_per_core_s.ratio",
        "peers.udp.records_per_core_s.ratio_relay",
    ] {
        let f = figs
            .iter()
            .find(|f| f.name == name)
            .unwrap_or_else(|| panic!("{name} missing from {figs:?}"));
        assert!(f.value.is_finite() && f.value > 0.0, "{f:?}");
    }
    assert!(v["results"]["udp"]["ours"]["records"].as_u64() > Some(0));
    let bad = Command::new(env!("CARGO_BIN_EXE_dtls-bench"))
        .args(["peers", "--duration", "-1"])
        .output()
        .expect("run");
    assert!(!bad.status.success());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn udp_run_moves_records_on_every_side() {
    let report = bench::peers::udp::run(&bench::peers::udp::UdpConfig {
        duration: std::time::Duration::from_millis(300),
        rounds: 2,
        sessions: 3,
        window: 4,
        ..bench::peers::udp::UdpConfig::default()
    })
    .expect("B8 over UDP runs");
    let relay = report
        .openssl_relay
        .as_ref()
        .expect("relay measured by default");
    for (what, side) in [
        ("ours", &report.ours),
        ("OpenSSL echo", &report.openssl),
        ("OpenSSL relay", relay),
    ] {
        assert!(side.records > 0, "{what}: no records echoed: {side:?}");
        assert_eq!(side.corrupt, 0, "{what}: {side:?}");
        assert!(
            side.server_cpu > std::time::Duration::ZERO,
            "{what}: {side:?}"
        );
        assert_eq!(side.slice_per_core.len(), 2, "{what}: one figure per round");
        for rate in [side.records_per_s(), side.records_per_core_s()] {
            assert!(rate.is_finite() && rate > 0.0, "{what}: {side:?}");
        }
    }
    // The servers' own counters saw at least the records the clients verified (ours
    // publishes once per loop turn: at most one window per session may be unpublished).
    assert!(report.openssl_server_echoed >= report.openssl.records);
    assert!(report.ours_server_opened + 3 * 4 >= report.ours.records);
    let ratio_relay = report.ratio_relay_per_core.expect("relay ratio");
    for ratio in [
        report.ratio_per_core,
        report.ratio_per_s,
        report.ratio_per_core_range.0,
        report.ratio_per_core_range.1,
        ratio_relay,
    ] {
        assert!(ratio.is_finite() && ratio > 0.0, "{report:?}");
    }
    assert!(report.ratio_per_core_range.0 <= report.ratio_per_core_range.1);
    if let Some(r) = report.ratio_user_per_record {
        assert!(r.is_finite() && r > 0.0, "{report:?}");
    }
    for side in [&report.ours, &report.openssl] {
        // The user/kernel split is tick-sampled: it may exceed the measured total by
        // rounding (two 10 ms ticks per slice, two slices), never by more.
        let split = side.server_user + side.server_system;
        assert!(
            split <= side.server_cpu + std::time::Duration::from_millis(100),
            "{side:?}"
        );
    }
    let names: Vec<String> = report.figures().into_iter().map(|f| f.name).collect();
    assert!(
        names.contains(&"peers.udp.records_per_core_s.ratio".to_string()),
        "{names:?}"
    );
    assert!(report.table().contains("ours / OpenSSL per server core"));
}

#[test]
fn udp_run_rejects_bad_options() {
    for cfg in [
        bench::peers::udp::UdpConfig {
            sessions: 0,
            ..Default::default()
        },
        bench::peers::udp::UdpConfig {
            size: 8,
            ..Default::default()
        },
        bench::peers::udp::UdpConfig {
            rounds: 0,
            ..Default::default()
        },
        bench::peers::udp::UdpConfig {
            rounds: 1 << 40,
            ..Default::default()
        },
        bench::peers::udp::UdpConfig {
            window: 0,
            ..Default::default()
        },
    ] {
        assert!(matches!(
            bench::peers::udp::run(&cfg),
            Err(bench::peers::PeersError::Options(_))
        ));
    }
}
