//! Where the daemon runs and listens: `--cpus LIST` pins shards to the listed CPUs, one shard
//! per CPU by default, so two daemons given disjoint lists never share a core (without
//! `--cpus`, the CPUs of the affinity mask they start with); `--dual-stack`
//! takes IPv4 and IPv6 clients on one `[::]` port.

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
fn without_cpus_the_shards_take_the_affinity_mask_the_daemon_starts_with() {
    // As `taskset -c N dtlsd serve` or systemd's CPUAffinity= would: the daemon inherits
    // the mask of the thread that spawns it, so narrow this test thread's to one CPU.
    let cpu = last_cpu();
    let me = std::fs::read_link("/proc/thread-self").expect("/proc/thread-self");
    let tid = me
        .file_name()
        .and_then(|t| t.to_str())
        .expect("a thread id")
        .to_owned();
    let narrowed = std::process::Command::new("taskset")
        .args(["-p", "-c", &cpu.to_string(), &tid])
        .output()
        .expect("run taskset");
    assert!(narrowed.status.success(), "{narrowed:?}");
    assert_eq!(cpus_allowed("/proc/thread-self/status"), cpu.to_string());

    let pki = TempDir::new("cpus-mask");
    certs(&pki);
    let backend = EchoBackend::start();
    // No --cpus, no --shards: one shard (one core in the mask), pinned to that core.
    let serve = Daemon::start_serve(backend.addr, &pki, &[]);
    assert_eq!(
        shard_threads(serve.pid()),
        vec![("dtlsd-shard-0".to_owned(), cpu.to_string())]
    );
    let mut client = Client::connect(Client::config(&pki), serve.listen);
    client.echo(b"inside the mask");
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

#[test]
fn a_dual_stack_listener_serves_ipv4_and_ipv6_clients_on_one_port() {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
    let pki = TempDir::new("dual-stack");
    certs(&pki);
    let backend = EchoBackend::start();
    let wildcard = SocketAddr::new(Ipv6Addr::UNSPECIFIED.into(), common::free_udp_port());
    let serve = Daemon::start_serve_at(wildcard, backend.addr, &pki, &["--dual-stack"]);
    let port = serve.listen.port();
    let config = Client::config(&pki);
    for ip in [
        IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(Ipv6Addr::LOCALHOST),
    ] {
        let mut client = Client::connect_from(
            config.clone(),
            SocketAddr::new(ip, port),
            ip,
            common::IO_TIMEOUT,
        );
        client.echo(format!("hello over {ip}").as_bytes());
    }
    // The IPv4 client appears as its IPv4-mapped address.
    let log = serve.log();
    assert!(
        log.lines()
            .any(|l| l.contains("session established") && l.contains("peer=[::ffff:127.0.0.1]")),
        "{log}"
    );
}
