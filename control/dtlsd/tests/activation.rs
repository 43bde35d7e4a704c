//! systemd socket activation: `systemd-socket-activate` (from the systemd package) binds the
//! listen address, waits for the first datagram, then execs `dtlsd serve` with the socket at
//! fd 3 and `LISTEN_FDS=1 LISTEN_PID=<its pid>`, as a `.socket` unit would.

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

use common::{Client, EchoBackend, TempDir, certs, collect, wait_exit, wait_for};

const ACTIVATE: &str = "/usr/bin/systemd-socket-activate";

/// `systemd-socket-activate -d -l LISTEN dtlsd serve --listen SERVE_LISTEN ...`, stderr
/// collected; returns once the activator listens.
fn activate(
    listen: SocketAddr,
    serve_listen: SocketAddr,
    pki: &TempDir,
    backend: SocketAddr,
    extra: &[&str],
) -> (Child, Arc<Mutex<String>>) {
    assert!(
        std::path::Path::new(ACTIVATE).exists(),
        "{ACTIVATE} is missing: apt-get install systemd"
    );
    let mut child = Command::new(ACTIVATE)
        .args(["--datagram", "--listen", &listen.to_string()])
        .args(["-E", "NO_COLOR=1", "-E", "RUST_LOG=info"])
        .arg(common::DTLSD)
        .args(["serve", "--listen", &serve_listen.to_string()])
        .args(["--backend", &backend.to_string()])
        .args([
            "--cert",
            &pki.file("server.pem"),
            "--key",
            &pki.file("server.key"),
        ])
        .args(["--admin-socket", "off"])
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn systemd-socket-activate");
    let log = collect(child.stderr.take().expect("piped stderr"));
    assert!(
        wait_for(&log, "Listening on", common::IO_TIMEOUT),
        "{}",
        log.lock().expect("log")
    );
    // The activator execs the daemon on the first datagram, which stays queued for it (and
    // is dropped by it: not DTLS).
    UdpSocket::bind("127.0.0.1:0")
        .expect("bind")
        .send_to(b"wake up", listen)
        .expect("send");
    (child, log)
}

#[test]
fn serve_takes_its_listen_socket_from_socket_activation() {
    let pki = TempDir::new("activation");
    certs(&pki);
    let backend = EchoBackend::start();
    let listen = common::free_udp_addr();
    let (mut child, log) = activate(listen, listen, &pki, backend.addr, &["--shards", "1"]);
    assert!(
        wait_for(&log, "dtlsd serve listening", common::IO_TIMEOUT),
        "{}",
        log.lock().expect("log")
    );
    let text = log.lock().expect("log").clone();
    assert!(
        text.contains(&format!(
            "listen socket from socket activation fd=3 addr={listen}"
        )),
        "{text}"
    );
    let mut client = Client::connect(Client::config(&pki), listen);
    client.echo(b"through an activated socket");
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn an_activated_socket_on_another_address_is_refused_naming_it() {
    let pki = TempDir::new("activation-other");
    certs(&pki);
    let passed = common::free_udp_addr();
    let configured = common::free_udp_addr();
    let (mut child, log) = activate(
        passed,
        configured,
        &pki,
        "127.0.0.1:9".parse().expect("addr"),
        &[],
    );
    let status = wait_exit(&mut child, common::IO_TIMEOUT).expect("dtlsd exits");
    assert!(!status.success());
    // The exit can be seen before the pipe's reader thread has the last lines.
    let reason = format!(
        "socket activation: fd 3 is bound to {passed}, which is not a listen address ({configured})"
    );
    assert!(
        wait_for(&log, &reason, common::IO_TIMEOUT),
        "{}",
        log.lock().expect("log")
    );
}

#[test]
fn several_shards_need_so_reuseport_on_the_activated_socket() {
    let pki = TempDir::new("activation-reuseport");
    certs(&pki);
    let listen = common::free_udp_addr();
    // systemd-socket-activate does not set SO_REUSEPORT (a .socket unit does with
    // ReusePort=yes): a second shard could not bind beside the passed socket.
    let (mut child, log) = activate(
        listen,
        listen,
        &pki,
        "127.0.0.1:9".parse().expect("addr"),
        &["--shards", "2"],
    );
    let status = wait_exit(&mut child, common::IO_TIMEOUT).expect("dtlsd exits");
    assert!(!status.success());
    let reason =
        format!("socket activation: the socket for {listen} has no SO_REUSEPORT, so its 2 shards");
    assert!(
        wait_for(&log, &reason, common::IO_TIMEOUT),
        "{}",
        log.lock().expect("log")
    );
}
