//! `autotune` with a tiny budget: real trials on loopback, and a configuration that
//! `dtlsd check-config` accepts.

mod common;

use common::run;

#[test]
fn tiny_budget_writes_a_config_dtlsd_accepts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let base = dir.path().join("base.toml");
    // AF_XDP in the base: the loopback trials cannot run it, so the written file keeps the
    // base's path (`io`, `interface`, `shards`) rather than switching it to a socket backend.
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
        .take_while(|l| !l.trim().is_empty())
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
    assert_eq!(serve.tuning.shards, None, "the base named no shard count");
    assert_eq!(serve.tuning.io, dtlsd::config::IoMode::Xdp);
    assert_eq!(serve.tuning.interface.as_deref(), Some("lo"));
    let written = std::fs::read_to_string(&out).expect("tuned config");
    assert!(written.contains("AF_XDP"), "{written}");
    assert_eq!(
        serve.tuning.idle_timeout,
        std::time::Duration::from_secs(60)
    );
    assert_eq!(serve.tuning.limits.max_sessions, 1000);
}

/// The columns of a trial row (the best's `*` dropped).
fn columns(row: &str) -> Vec<&str> {
    row.split_whitespace().filter(|c| *c != "*").collect()
}

#[test]
fn a_small_budget_trials_every_io_knob_and_the_workers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let base = dir.path().join("base.toml");
    std::fs::write(
        &base,
        "[serve]\nlisten = \"127.0.0.1:4433\"\nbackend = \"127.0.0.1:9000\"\n\
         psk = [\"client1:00112233445566778899aabbccddeeff\"]\nio_batch = 16\n",
    )
    .expect("write base");
    let out = dir.path().join("tuned.toml");
    let result = run(&[
        "autotune",
        "--duration",
        "6s",
        "--sessions",
        "2",
        "--max-shards",
        "1",
        "--max-control-threads",
        "2",
        "--config",
        &base.display().to_string(),
        "--out",
        &out.display().to_string(),
    ]);
    let stdout = String::from_utf8_lossy(&result.stdout);
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert!(result.status.success(), "{stdout}\n{stderr}");
    let rows: Vec<Vec<&str>> = stdout
        .lines()
        .skip_while(|l| !l.starts_with("all trials"))
        .skip(2)
        .take_while(|l| !l.trim().is_empty())
        .map(columns)
        .collect();
    // io shards pps server loadgen p99 batch ring gso sockbuf
    assert!(rows.iter().all(|r| r.len() == 10), "{stdout}");
    // The first pass starts from the base's batch.
    assert_eq!(rows[0][6], "16", "{stdout}");
    // The coarse grids of every knob ran (the ring's only where io_uring sets up).
    for (column, value) in [(8, "off"), (6, "8"), (6, "128"), (9, "256K"), (9, "32M")] {
        assert!(
            rows.iter().any(|r| r[column] == value),
            "no trial with column {column} = {value}:\n{stdout}"
        );
    }
    // The ring is trialled when io_uring won the first pass (every later trial is then on
    // it); else the note says why not.
    if rows.iter().filter(|r| r[0] == "uring").count() > 1 {
        assert!(rows.iter().any(|r| r[7] == "1024"), "{stdout}");
    } else {
        assert!(
            stderr.contains("uring_buffers not tried (the best backend is mmsg)"),
            "{stdout}\n{stderr}"
        );
    }
    for r in &rows {
        let pps: f64 = r[2].parse().expect("pps");
        assert!(pps > 0.0, "a trial without traffic: {r:?}");
    }
    let best: Vec<&str> = stdout
        .lines()
        .skip_while(|l| !l.starts_with("all trials"))
        .filter(|l| l.starts_with('*'))
        .map(columns)
        .next()
        .expect("a best trial");
    // The latency scenario ran on the best trial (and the runner-up when it came within
    // 5 %), open loop with traffic; the written point is the one with the lowest p99.9.
    let checks: Vec<Vec<&str>> = stdout
        .lines()
        .skip_while(|l| !l.starts_with("latency, open loop"))
        .skip(2)
        .take_while(|l| !l.trim().is_empty())
        .map(columns)
        .collect();
    assert!((1..=2).contains(&checks.len()), "{stdout}");
    for c in &checks {
        let rate: f64 = c[2].parse().expect("rate");
        let p50: f64 = c[3].parse().expect("p50");
        assert!(
            rate > 0.0 && p50 > 0.0,
            "a latency check without traffic: {c:?}"
        );
    }
    assert_eq!(
        checks[0][0], best[0],
        "the best trial is checked first\n{stdout}"
    );
    assert_eq!(checks[0][7], best[6], "{stdout}");
    let chosen_line = stdout
        .lines()
        .skip_while(|l| !l.starts_with("latency, open loop"))
        .find(|l| l.starts_with('*'))
        .expect("a chosen latency row");
    let c = columns(chosen_line);
    // The trial-row layout of the chosen point: io, shards, pps, server, loadgen, p99,
    // batch, ring, gso, sockbuf.
    let best: Vec<&str> = vec![c[0], c[1], c[2], "", "", "", c[7], c[8], c[9], c[10]];
    // Both worker counts were trialled with real handshakes.
    let workers: Vec<Vec<&str>> = stdout
        .lines()
        .skip_while(|l| !l.starts_with("handshake workers"))
        .skip(2)
        .take_while(|l| !l.trim().is_empty())
        .map(columns)
        .collect();
    assert_eq!(workers.len(), 2, "{stdout}");
    for w in &workers {
        let rate: f64 = w[1].parse().expect("rate");
        assert!(rate > 0.0, "no handshake completed: {w:?}\n{stdout}");
    }
    let best_workers: usize = stdout
        .lines()
        .skip_while(|l| !l.starts_with("handshake workers"))
        .find(|l| l.starts_with('*'))
        .and_then(|l| columns(l).first().and_then(|c| c.parse().ok()))
        .expect("a best worker count");

    // dtlsd check-config accepts what was written, and it is the best trial's point.
    let checked = dtlsd::check::check_file(&out).unwrap_or_else(|e| {
        panic!(
            "dtlsd check-config refuses the tuned config: {e}\n{}",
            std::fs::read_to_string(&out).unwrap_or_default()
        )
    });
    let dtlsd::config::Config::Serve(serve) = checked.config else {
        panic!("a serve config");
    };
    let t = &serve.tuning;
    let io = match t.io {
        dtlsd::config::IoMode::Uring => "uring",
        dtlsd::config::IoMode::Mmsg => "mmsg",
        other => panic!("io = {other:?} was never trialled"),
    };
    assert_eq!(io, best[0]);
    assert_eq!(t.data_io.batch.to_string(), best[6], "{stdout}");
    if best[0] == "uring" {
        assert_eq!(t.data_io.uring_buffers.to_string(), best[7], "{stdout}");
    }
    assert_eq!(if t.data_io.gso { "on" } else { "off" }, best[8]);
    let sockbuf = match best[9].split_at(best[9].len() - 1) {
        (n, "M") => n.parse::<usize>().expect("MiB") << 20,
        (n, "K") => n.parse::<usize>().expect("KiB") << 10,
        _ => best[9].parse().expect("bytes"),
    };
    assert_eq!(t.data_io.recv_buffer, sockbuf, "{stdout}");
    assert_eq!(t.data_io.send_buffer, sockbuf);
    assert!(t.data_io.uring_buffers as usize >= t.data_io.batch);
    assert_eq!(t.control_threads, Some(best_workers));
}
