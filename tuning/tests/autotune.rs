//! `autotune` with a tiny budget: real trials on loopback, and a configuration that
//! `dtlsd check-config` accepts.

mod common;

use common::run;

#[test]
fn tiny_budget_writes_a_config_dtlsd_accepts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let base = dir.path().join("base.toml");
    // AF_XDP in the base: autotune's trials do not choose it, so `interface` must go.
    std::fs::write(
        &base,
        "[serve]\nlisten = \"127.0.0.1:4433\"\nbackend = \"127.0.0.1:9000\"\n\
         psk = [\"client1:00112233445566778899aabbccddeeff\"]\nidle_timeout = 60\n\
         io = \"xdp\"\ninterface = \"lo\"\n\n[limits]\nmax_sessions = 1000\n",
    )
    .expect("write base");
    let out = dir.path().join("tuned.toml");
    let result = run(&[
        "autotune",
        "--duration",
        "400ms",
        "--sessions",
        "2",
        "--max-shards",
        "1",
        "--config",
        &base.display().to_string(),
        "--out",
        &out.display().to_string(),
    ]);
    let stdout = String::from_utf8_lossy(&result.stdout);
    assert!(
        result.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&result.stderr)
    );
    // One row per trial: mmsg always, uring where it sets up; every trial measured traffic.
    let rows: Vec<&str> = stdout
        .lines()
        .skip_while(|l| !l.starts_with("all trials"))
        .skip(2)
        .filter(|l| !l.trim().is_empty())
        .collect();
    assert!(!rows.is_empty(), "{stdout}");
    assert!(rows.iter().any(|r| r.contains("mmsg")), "{stdout}");
    assert_eq!(
        rows.iter().filter(|r| r.starts_with('*')).count(),
        1,
        "{stdout}"
    );
    for row in &rows {
        let pps: f64 = row
            .split_whitespace()
            .filter(|c| *c != "*")
            .nth(2)
            .and_then(|c| c.parse().ok())
            .unwrap_or_else(|| panic!("no pps in {row}"));
        assert!(pps > 0.0, "a trial without traffic: {row}");
    }
    let checked = dtlsd::check::check_file(&out).unwrap_or_else(|e| {
        panic!(
            "dtlsd check-config refuses the tuned config: {e}\n{}",
            std::fs::read_to_string(&out).unwrap_or_default()
        )
    });
    let dtlsd::config::Config::Serve(serve) = checked.config else {
        panic!("a serve config");
    };
    assert_eq!(serve.tuning.shards, Some(1));
    assert!(matches!(
        serve.tuning.io,
        dtlsd::config::IoMode::Uring | dtlsd::config::IoMode::Mmsg
    ));
    assert_eq!(serve.tuning.interface, None);
    assert_eq!(
        serve.tuning.idle_timeout,
        std::time::Duration::from_secs(60)
    );
    assert_eq!(serve.tuning.limits.max_sessions, 1000);
}
