//! `dtlsd serve` over real loopback sockets: the built binary between DTLS clients
//! (openssl, gnutls-cli, our own engine) and a UDP echo backend.
//!
//! Every wait has a deadline; the daemon and client processes are killed on drop.

mod common;

use std::net::UdpSocket;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{
    Client, Daemon, EchoBackend, IO_TIMEOUT, Peer, START_TIMEOUT, TempDir, certs, collect,
    wait_exit, wait_for,
};

/// Writes `line` to the client and expects it back on its stdout (client → dtlsd → echo
/// backend → dtlsd → client).
fn echo_through(mut peer: Peer, daemon: &Daemon, line: &str) {
    peer.write_line(line);
    assert!(
        wait_for(&peer.stdout, line, IO_TIMEOUT),
        "echo not received\n{}\ndtlsd:\n{}",
        peer.transcript(),
        daemon.log()
    );
}

fn many_clients_through(io: &str) {
    const CLIENTS: usize = 24;
    const MESSAGES: usize = 6;
    let pki = TempDir::new(io);
    certs(&pki);
    let backend = EchoBackend::start();
    let daemon = Daemon::start(backend.addr, &pki, io);
    let config = Client::config(&pki);
    let threads: Vec<_> = (0..CLIENTS)
        .map(|id| {
            let config = Arc::clone(&config);
            let server = daemon.listen;
            std::thread::spawn(move || {
                let mut c = Client::connect(config, server);
                for m in 0..MESSAGES {
                    let payload: Vec<u8> = format!("client {id} message {m} ")
                        .bytes()
                        .chain((0..(id * 7 + m * 13) % 200).map(|i| i as u8))
                        .collect();
                    c.echo(&payload);
                }
            })
        })
        .collect();
    let mut failures = Vec::new();
    for t in threads {
        if let Err(e) = t.join() {
            failures.push(
                e.downcast_ref::<String>()
                    .cloned()
                    .unwrap_or_else(|| "client panicked".into()),
            );
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {CLIENTS} clients failed: {failures:?}\ndtlsd:\n{}",
        failures.len(),
        daemon.log()
    );
}

// ---------- tests ----------

#[test]
fn openssl_s_client_echoes_through_serve() {
    let pki = TempDir::new("openssl");
    certs(&pki);
    let backend = EchoBackend::start();
    let daemon = Daemon::start(backend.addr, &pki, "auto");
    let args: Vec<String> = [
        "s_client",
        "-dtls1_2",
        "-connect",
        &daemon.listen.to_string(),
        "-CAfile",
        &pki.file("ca.pem"),
        "-verify_return_error",
        "-cipher",
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "-quiet",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let peer = Peer::spawn("openssl", &args);
    echo_through(peer, &daemon, "hello from openssl s_client through dtlsd");
}

#[test]
fn gnutls_cli_echoes_through_serve() {
    let pki = TempDir::new("gnutls");
    certs(&pki);
    let backend = EchoBackend::start();
    let daemon = Daemon::start(backend.addr, &pki, "auto");
    let args: Vec<String> = [
        "--udp",
        "-p",
        &daemon.listen.port().to_string(),
        "--x509cafile",
        &pki.file("ca.pem"),
        "--priority",
        "NORMAL:-VERS-ALL:+VERS-DTLS1.2",
        "127.0.0.1",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let peer = Peer::spawn("gnutls-cli", &args);
    echo_through(peer, &daemon, "hello from gnutls-cli via dtlsd");
}

#[test]
fn many_engine_clients_with_io_uring() {
    many_clients_through("uring");
}

#[test]
fn many_engine_clients_with_mmsg() {
    many_clients_through("mmsg");
}

#[test]
fn sigterm_sends_close_notify_and_exits_zero() {
    let pki = TempDir::new("sigterm");
    certs(&pki);
    let backend = EchoBackend::start();
    let mut daemon = Daemon::start(backend.addr, &pki, "auto");
    let mut client = Client::connect(Client::config(&pki), daemon.listen);
    client.echo(b"before shutdown");
    let status = daemon.terminate();
    assert!(status.success(), "exit status {status:?}\n{}", daemon.log());
    // RFC 5246 §7.2.1: close_notify is a warning-level (1) alert with description 0.
    let deadline = Instant::now() + IO_TIMEOUT;
    let mut alerts = Vec::new();
    while Instant::now() < deadline && alerts.is_empty() {
        alerts = client.turn(Duration::from_millis(100)).alerts;
    }
    assert_eq!(
        alerts,
        vec![vec![1u8, 0]],
        "no close_notify\n{}",
        daemon.log()
    );
}

#[test]
fn port_in_use_fails_naming_the_address() {
    let pki = TempDir::new("inuse");
    certs(&pki);
    // A socket without SO_REUSEPORT: the daemon's SO_REUSEPORT bind must fail.
    let holder = UdpSocket::bind("127.0.0.1:0").expect("bind a port");
    let listen = holder.local_addr().expect("address");
    let mut child = Daemon::spawn(
        listen,
        "127.0.0.1:9".parse().expect("address"),
        &pki,
        "auto",
    );
    let stderr = collect(child.stderr.take().expect("piped stderr"));
    let status = wait_exit(&mut child, START_TIMEOUT);
    let _ = child.kill();
    let status = status.expect("dtlsd exits when the port is in use");
    assert!(!status.success(), "dtlsd succeeded on a port in use");
    assert!(
        wait_for(&stderr, &listen.to_string(), Duration::from_secs(2)),
        "the error does not name {listen}:\n{}",
        stderr.lock().expect("lock")
    );
    drop(holder);
}
