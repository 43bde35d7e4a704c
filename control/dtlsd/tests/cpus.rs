//! `--cpus LIST`: shards run pinned to the listed CPUs, one shard per CPU by default, so two
//! daemons given disjoint lists never share a core.

mod common;

use common::{Client, Daemon, EchoBackend, TempDir, certs};

/// The `Cpus_allowed_list` line of a /proc status file.
fn cpus_allowed(status_path: &str) -> String {
    std::fs::read_to_string(status_path)
        .expect("read a /proc status file")
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .expect("Cpus_allowed_list")
        .trim()
        .to_owned()
}

/// The highest CPU this test may run on (the last number of its allowed list).
fn last_cpu() -> usize {
    let list = cpus_allowed("/proc/self/status");
    list.rsplit([',', '-'])
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("cannot read {list:?}"))
}

/// Each shard thread of `pid` (named `dtlsd-shard-N`) and its allowed CPUs.
fn shard_threads(pid: u32) -> Vec<(String, String)> {
    let mut shards = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).expect("tasks") {
        let dir = task.expect("task").path();
        let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        let comm = comm.trim();
        if comm.starts_with("dtlsd-shard-") {
            let status = dir.join("status");
            shards.push((
                comm.to_owned(),
                cpus_allowed(status.to_str().expect("utf-8")),
            ));
        }
    }
    shards.sort();
    shards
}

#[test]
fn shards_run_on_the_listed_cpus_one_per_cpu_by_default() {
    let pki = TempDir::new("cpus");
    certs(&pki);
    let backend = EchoBackend::start();
    let cpu = last_cpu();
    let serve = Daemon::start_serve(backend.addr, &pki, &["--cpus", &cpu.to_string()]);
    // One CPU listed, no --shards: one shard, pinned there.
    assert_eq!(
        shard_threads(serve.pid()),
        vec![("dtlsd-shard-0".to_owned(), cpu.to_string())]
    );
    // And it serves.
    let mut client = Client::connect(Client::config(&pki), serve.listen);
    client.echo(b"pinned");
}

#[test]
fn a_cpu_outside_the_affinity_mask_is_refused_naming_the_key() {
    let out = std::process::Command::new(common::DTLSD)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--backend",
            "127.0.0.1:9",
        ])
        .args(["--psk", "a:00ff", "--cpus", "4095"])
        .output()
        .expect("run dtlsd");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(
            "serve.cpus: `4095` is not a CPU list: CPU 4095 is not one this process may run on"
        ),
        "{stderr}"
    );
}
