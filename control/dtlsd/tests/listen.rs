//! Several listen addresses: `--listen` repeated (or `listen = [...]`) gives each address
//! its own shards, and a session through each reaches the backend.

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use common::{Client, Daemon, EchoBackend, TempDir, certs};

#[test]
fn one_daemon_serves_sessions_on_two_listen_addresses() {
    let pki = TempDir::new("listen-two");
    certs(&pki);
    let backend = EchoBackend::start();
    let second_ip = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
    let second = SocketAddr::new(second_ip, common::free_udp_port());
    let admin = pki.file("admin.sock");
    let serve = Daemon::start_serve_with_metrics(
        backend.addr,
        &pki,
        &[
            "--listen",
            &second.to_string(),
            "--shards",
            "2",
            "--admin-socket",
            &admin,
        ],
    );
    let config = Client::config(&pki);
    let mut first_client = Client::connect(config.clone(), serve.listen);
    first_client.echo(b"through the first address");
    let mut second_client = Client::connect_from(config, second, second_ip, common::IO_TIMEOUT);
    second_client.echo(b"through the second address");
    // Two shards, one per address, in listen order.
    for (shard, listen) in [(0, serve.listen), (1, second)] {
        let series = format!("dtlsd_shard_listen{{shard=\"{shard}\",listen=\"{listen}\"}}");
        assert_eq!(serve.metric(&series), Some(1), "{series}");
    }
    assert_eq!(serve.metric("dtlsd_sessions_active{shard=\"0\"}"), Some(1));
    assert_eq!(serve.metric("dtlsd_sessions_active{shard=\"1\"}"), Some(1));
    // Status lists both addresses and each session's.
    let out = std::process::Command::new(common::DTLSD)
        .args(["status", "--json", "--admin-socket", &admin])
        .output()
        .expect("run dtlsd status");
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let both = serde_json::json!([serve.listen.to_string(), second.to_string()]);
    assert_eq!(status["daemon"]["listen"], both, "{status}");
    let mut listens: Vec<&str> = status["sessions"]
        .as_array()
        .expect("sessions")
        .iter()
        .filter_map(|s| s["listen"].as_str())
        .collect();
    listens.sort_unstable();
    assert_eq!(
        listens,
        both.as_array()
            .expect("list")
            .iter()
            .filter_map(|v| v.as_str())
            .collect::<Vec<_>>()
    );
    let log = serve.log();
    assert!(
        log.contains(&format!("listen={},{second}", serve.listen)),
        "{log}"
    );
}

#[test]
fn a_bad_entry_of_a_listen_list_is_named_by_its_index() {
    let out = std::process::Command::new(common::DTLSD)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--listen",
            "localhost:1",
        ])
        .args(["--backend", "127.0.0.1:9", "--psk", "a:00ff"])
        .output()
        .expect("run dtlsd");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("serve.listen[1]: `localhost:1` is not a usable socket address"),
        "{stderr}"
    );
}
