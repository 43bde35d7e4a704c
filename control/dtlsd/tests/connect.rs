//! `dtlsd connect` over real loopback sockets: local plaintext sources → `dtlsd connect` →
//! `dtlsd serve` → a UDP echo backend and back, and `dtlsd connect` → `gnutls-serv --echo`.
//!
//! Every wait has a deadline; daemons and peers are killed on drop.

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Daemon, EchoBackend, TempDir, certs, collect, wait_for};

/// Concurrent local sources, each its own DTLS session.
const SOURCES: usize = 100;
/// Datagrams each source sends (lock-step rounds: every source sends, then every echo is
/// checked).
const ROUNDS: usize = 8;
/// The first round includes 100 handshakes on a 2-core machine running other tests.
const FIRST_ECHO: Duration = Duration::from_secs(60);
const ECHO: Duration = Duration::from_secs(20);

/// The datagram source `id` sends in `round`: its id and round, then a pattern of both, 16 to
/// 1200 bytes long.
fn datagram(id: usize, round: usize) -> Vec<u8> {
    let len = 16 + (id * 131 + round * 977) % 1185;
    let mut d = Vec::with_capacity(len);
    d.extend_from_slice(&(id as u16).to_be_bytes());
    d.extend_from_slice(&(round as u16).to_be_bytes());
    d.extend((4..len).map(|i| (i as u8) ^ (id as u8).wrapping_mul(31) ^ round as u8));
    d
}

/// Sends `ROUNDS` datagrams from each of `SOURCES` sockets to `entry` and checks every echo
/// byte for byte; returns the number verified.
fn echo_rounds(entry: SocketAddr) -> usize {
    let sockets: Vec<UdpSocket> = (0..SOURCES)
        .map(|_| {
            let s = UdpSocket::bind("127.0.0.1:0").expect("bind source");
            s.connect(entry).expect("connect source");
            s
        })
        .collect();
    let mut verified = 0;
    let mut buf = vec![0u8; 2048];
    for round in 0..ROUNDS {
        for (id, s) in sockets.iter().enumerate() {
            s.send(&datagram(id, round)).expect("send");
        }
        let wait = if round == 0 { FIRST_ECHO } else { ECHO };
        let deadline = Instant::now() + wait;
        for (id, s) in sockets.iter().enumerate() {
            let left = deadline.saturating_duration_since(Instant::now());
            s.set_read_timeout(Some(left.max(Duration::from_millis(1))))
                .expect("timeout");
            let n = s
                .recv(&mut buf)
                .unwrap_or_else(|e| panic!("source {id} round {round}: no echo ({e})"));
            assert_eq!(
                &buf[..n],
                &datagram(id, round)[..],
                "source {id} round {round}: echo differs"
            );
            verified += 1;
        }
    }
    verified
}

/// `versions`: what `--versions` both daemons get; the sessions run the first.
fn hundred_sessions(io: &str, shards: &str, versions: &str) {
    let pki = TempDir::new(&format!("connect-{io}-{shards}"));
    certs(&pki);
    let backend = EchoBackend::start();
    let tuning = ["--io", io, "--shards", shards, "--versions", versions];
    let mut serve = Daemon::start_serve(backend.addr, &pki, &tuning);
    let mut connect = Daemon::start_connect(serve.listen, &pki, &tuning);
    let verified = echo_rounds(connect.listen);
    assert_eq!(verified, SOURCES * ROUNDS);

    // Drain both: exit 0, one handshake per source on each side.
    assert!(connect.terminate().success(), "{}", connect.log());
    assert!(serve.terminate().success(), "{}", serve.log());
    let completed = format!("handshakes_completed={SOURCES}");
    assert!(connect.log().contains(&completed), "{}", connect.log());
    assert!(serve.log().contains(&completed), "{}", serve.log());
    let version = versions.split(',').next().expect("a version");
    let established = format!("version={version}");
    for log in [connect.log(), serve.log()] {
        let n = log
            .lines()
            .filter(|l| l.contains("session established") && l.contains(&established))
            .count();
        assert_eq!(n, SOURCES, "{log}");
    }
}

#[test]
fn hundred_sessions_uring_one_shard() {
    hundred_sessions("uring", "1", "1.2");
}

#[test]
fn hundred_sessions_uring_two_shards() {
    hundred_sessions("uring", "2", "1.3,1.2");
}

#[test]
fn hundred_sessions_mmsg_one_shard() {
    hundred_sessions("mmsg", "1", "1.3");
}

#[test]
fn hundred_sessions_mmsg_two_shards() {
    hundred_sessions("mmsg", "2", "1.2");
}

/// A UDP port free on 0.0.0.0 and [::] a moment ago (gnutls-serv binds both).
fn free_dual_stack_port() -> u16 {
    for _ in 0..64 {
        let port = UdpSocket::bind("0.0.0.0:0")
            .and_then(|s| s.local_addr())
            .expect("bind")
            .port();
        match UdpSocket::bind(("::", port)) {
            Ok(_) => return port,
            Err(e) if e.kind() != std::io::ErrorKind::AddrInUse => return port,
            Err(_) => {}
        }
    }
    panic!("no free UDP port");
}

#[test]
fn connect_to_gnutls_serv_echo() {
    let pki = TempDir::new("connect-gnutls");
    certs(&pki);
    let port = free_dual_stack_port();
    let priority = "NORMAL:-VERS-ALL:+VERS-DTLS1.2:-CIPHER-ALL:+AES-128-GCM";
    let mut gnutls = Command::new("gnutls-serv")
        .args(["--udp", "--echo", "-p", &port.to_string()])
        .args(["--x509certfile", &pki.file("server.pem")])
        .args(["--x509keyfile", &pki.file("server.key")])
        .args(["--priority", priority])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn gnutls-serv (apt-get install gnutls-bin)");
    let out = collect(gnutls.stdout.take().expect("piped"));
    let err = collect(gnutls.stderr.take().expect("piped"));
    let listening = "UDP Echo Server listening";
    let deadline = Instant::now() + Duration::from_secs(20);
    while !(wait_for(&out, listening, Duration::from_millis(50))
        || wait_for(&err, listening, Duration::from_millis(50)))
    {
        assert!(
            Instant::now() < deadline,
            "gnutls-serv did not start:\n{}\n{}",
            out.lock().expect("lock"),
            err.lock().expect("lock")
        );
    }
    let server: SocketAddr = ([127, 0, 0, 1], port).into();
    let mut connect = Daemon::start_connect(server, &pki, &[]);

    // gnutls-serv's UDP mode serves one client at a time: one local source, one session,
    // every echo checked.
    let source = UdpSocket::bind("127.0.0.1:0").expect("bind");
    source.connect(connect.listen).expect("connect");
    source
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    let mut buf = [0u8; 2048];
    for round in 0..5 {
        let msg = format!("round {round} through dtlsd connect and gnutls-serv\n");
        source.send(msg.as_bytes()).expect("send");
        let n = source
            .recv(&mut buf)
            .unwrap_or_else(|e| panic!("no echo from gnutls-serv ({e}):\n{}", connect.log()));
        assert_eq!(&buf[..n], msg.as_bytes());
    }
    assert!(connect.terminate().success(), "{}", connect.log());
    assert!(
        connect.log().contains("handshakes_completed=1"),
        "{}",
        connect.log()
    );
    let _ = gnutls.kill();
    let _ = gnutls.wait();
}

/// A local source whose session idled out comes back: its next handshake resumes with the
/// ticket the server issued (RFC 5077), on both sides. DTLS 1.2 (the DTLS 1.3 case is in
/// dtls13.rs).
#[test]
fn a_returning_source_resumes_with_its_ticket() {
    let pki = TempDir::new("connect-resume");
    certs(&pki);
    let backend = EchoBackend::start();
    let mut serve = Daemon::start_serve(backend.addr, &pki, &["--shards", "1"]);
    let mut connect = Daemon::start_connect(
        serve.listen,
        &pki,
        &["--idle-timeout", "1", "--versions", "1.2"],
    );
    let source = UdpSocket::bind("127.0.0.1:0").expect("bind");
    source.connect(connect.listen).expect("connect");
    source
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    let mut buf = [0u8; 64];
    for msg in [&b"first session"[..], b"after idle expiry"] {
        source.send(msg).expect("send");
        let n = source.recv(&mut buf).expect("echo");
        assert_eq!(&buf[..n], msg);
        // Idle sweep closes the session after 1 s (close_notify to the server).
        std::thread::sleep(Duration::from_millis(2500));
    }
    assert!(connect.terminate().success(), "{}", connect.log());
    assert!(serve.terminate().success(), "{}", serve.log());
    for log in [connect.log(), serve.log()] {
        assert!(log.contains("handshakes_completed=2"), "{log}");
        assert!(log.contains("handshakes_resumed=1"), "{log}");
    }
}
