//! `dtls-bench openssl-server` (B8 across a network): the binary serves DTLS 1.2 on a real
//! address to peers it has never seen, and the generator that drives `dtlsd serve`
//! (`throughput --server`) round-trips verified records through it, as an echo server and
//! as a relay whose backend really sees every record.

use std::net::{SocketAddr, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use bench::loadgen::run::External;
use bench::loadgen::server::Echo;
use bench::loadgen::{CipherChoice, IoChoice};
use bench::records::Version;
use bench::throughput;

/// The child server, killed when the test ends however it ends.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> SocketAddr {
    UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("a free loopback port")
}

fn start(dir: &std::path::Path, backend: Option<SocketAddr>) -> (Server, External) {
    let pki = control::crypto::test_pki::generate_test_pki(dir).expect("test PKI");
    let addr = free_port();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_dtls-bench"));
    cmd.arg("openssl-server")
        .arg("--listen")
        .arg(addr.to_string())
        .arg("--cert")
        .arg(&pki.server_cert)
        .arg("--key")
        .arg(&pki.server_key)
        .stdout(Stdio::null());
    if let Some(b) = backend {
        cmd.arg("--backend").arg(b.to_string());
    }
    let child = Server(cmd.spawn().expect("dtls-bench openssl-server starts"));
    // Datagrams sent before it binds are lost and the client's handshake retransmits.
    std::thread::sleep(Duration::from_millis(300));
    (
        child,
        External {
            addr,
            ca: pki.ca_cert,
        },
    )
}

fn drive(ext: External) -> throughput::Outcome {
    throughput::run(&throughput::Config {
        size: 1200,
        sessions: 4,
        duration: Duration::from_millis(600),
        cipher: CipherChoice::Aes128Gcm,
        version: Version::V12,
        io: IoChoice::Auto,
        shards: 1,
        gso: true,
        server_io: Default::default(),
        window: 8,
        compare_none: false,
        slice: Duration::from_millis(200),
        warmup: Duration::from_millis(100),
        threads: 1,
        server: Some(ext),
        compare_cid: false,
    })
    .expect("throughput against openssl-server runs")
}

#[test]
fn openssl_echo_server_round_trips_the_generators_records() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (_server, ext) = start(dir.path(), None);
    let out = drive(ext);
    let m = &out.measured[0];
    assert!(m.counts.received > 0, "nothing verified: {}", out.text);
    assert_eq!(m.counts.corrupt, 0);
}

#[test]
fn openssl_relay_sends_every_record_through_its_backend() {
    let dir = tempfile::tempdir().expect("temp dir");
    let echo = Echo::start().expect("echo backend");
    let (_server, ext) = start(dir.path(), Some(echo.addr()));
    let out = drive(ext);
    let m = &out.measured[0];
    assert!(m.counts.received > 0, "nothing verified: {}", out.text);
    assert_eq!(m.counts.corrupt, 0);
    // Every verified record went to the backend and came back through the relay.
    assert!(
        echo.echoed() >= m.counts.received,
        "backend echoed {} < {} verified",
        echo.echoed(),
        m.counts.received
    );
}
