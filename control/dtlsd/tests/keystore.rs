//! The key store (`key_store`): two `dtlsd serve` nodes reading one store accept each
//! other's session tickets, and a rotation (new secret, old one kept as previous, SIGHUP)
//! drops none; once the old secret leaves the store its tickets stop resuming (the client
//! falls back to a full handshake). Cookies likewise: one node's HelloVerifyRequest cookie
//! verifies on the other, and through a cookie-secret rotation (Operational checklist item).

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Client, Daemon, EchoBackend, TempDir, certs, wait_until};
use control::crypto::pki_types::UnixTime;
use control::{Config, Connection, ProtocolVersion};

const S1: &str = "1111111111111111111111111111111111111111111111111111111111111111";
const S2: &str = "2222222222222222222222222222222222222222222222222222222222222222";
const S3: &str = "3333333333333333333333333333333333333333333333333333333333333333";
const C1: &str = "c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1";
const C2: &str = "c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2";
const C3: &str = "c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3";
const RESUMED_12: &str = r#"dtlsd_handshakes_resumed_total{version="1.2"}"#;

fn write_store(path: &str, tickets: &[&str]) {
    write_store_with(path, tickets, &[C1]);
}

fn write_store_with(path: &str, tickets: &[&str], cookies: &[&str]) {
    let list = |l: &[&str]| {
        l.iter()
            .map(|s| format!("\"{s}\""))
            .collect::<Vec<_>>()
            .join(", ")
    };
    std::fs::write(
        path,
        format!(
            "ticket_secrets = [{}]\ncookie_secrets = [{}]\n",
            list(tickets),
            list(cookies)
        ),
    )
    .expect("write key store");
}

fn reload(d: &Daemon, count: usize) {
    d.signal("HUP");
    wait_until(
        "reload",
        || d.log(),
        || d.log().matches("configuration reloaded").count() >= count,
    );
}

#[test]
fn nodes_sharing_a_key_store_resume_each_others_tickets_through_a_rotation() {
    let pki = TempDir::new("keystore");
    certs(&pki);
    let store = pki.file("keys.toml");
    write_store(&store, &[S1]);
    let backend = EchoBackend::start();
    let args = ["--shards", "1", "--key-store", &store, "--versions", "1.2"];
    let a = Daemon::start_serve_with_metrics(backend.addr, &pki, &args);
    let b = Daemon::start_serve_with_metrics(backend.addr, &pki, &args);
    let config = Arc::new(Config {
        versions: vec![ProtocolVersion::Dtls1_2],
        ..(*Client::config(&pki)).clone()
    });
    let connect = |d: &Daemon, ticket| {
        let mut c = Client::try_connect(
            Arc::clone(&config),
            d.listen,
            ticket,
            Duration::from_secs(10),
        )
        .unwrap_or_else(|e| panic!("handshake: {e}\n{}", d.log()));
        c.echo(b"through the key store");
        c
    };
    // Three tickets from node A, under S1 (a ticket is spent once here).
    let mut tickets = (0..3)
        .map(|_| {
            connect(&a, None)
                .ticket
                .take()
                .expect("node A issues a ticket")
        })
        .collect::<Vec<_>>()
        .into_iter();
    let mut next = || tickets.next().expect("enough tickets");

    // Node B opens node A's ticket: an abbreviated handshake.
    let mut on_b = connect(&b, Some(next()));
    assert_eq!(b.metric(RESUMED_12), Some(1), "{}", b.log());
    let b_ticket = on_b.ticket.take().expect("node B issues a ticket");

    // Rotation: S2 current, S1 previous, on B. A's S1 ticket still resumes there.
    write_store(&store, &[S2, S1]);
    reload(&b, 1);
    connect(&b, Some(next()));
    assert_eq!(b.metric(RESUMED_12), Some(2), "{}", b.log());
    // And B's new tickets (S2) resume on A once A has the rotated store too.
    let mut fresh = connect(&b, None);
    let s2_ticket = fresh.ticket.take().expect("ticket under S2");
    reload(&a, 1);
    connect(&a, Some(s2_ticket));
    assert_eq!(a.metric(RESUMED_12), Some(1), "{}", a.log());

    // S1 leaves the store: its tickets no longer resume, the handshake is a full one.
    write_store(&store, &[S3, S2]);
    reload(&b, 2);
    connect(&b, Some(next()));
    connect(&b, Some(b_ticket));
    assert_eq!(b.metric(RESUMED_12), Some(2), "{}", b.log());

    // A store that does not parse keeps the running secrets (the reload fails, counted).
    std::fs::write(&store, "ticket_secrets = 7\n").expect("write");
    b.signal("HUP");
    wait_until(
        "failed reload",
        || b.log(),
        || b.metric("dtlsd_reloads_failed_total") == Some(1),
    );
    let log = b.log();
    assert!(log.contains("key_store"), "{log}");
    assert!(!log.contains(S3), "a secret in the log: {log}");
}

/// `dtlsd check-config` and the start-up checks load the store: a bad one is named.
#[test]
fn check_config_names_a_bad_key_store() {
    let pki = TempDir::new("keystore-check");
    certs(&pki);
    let store = pki.file("keys.toml");
    std::fs::write(&store, format!("ticket_secrets = [\"{S1}\"]\n")).expect("write");
    let config = pki.file("serve.toml");
    std::fs::write(
        &config,
        "[serve]\nlisten = \"127.0.0.1:4433\"\nbackend = \"127.0.0.1:9000\"\n\
         cert = \"server.pem\"\nkey = \"server.key\"\nkey_store = \"keys.toml\"\n",
    )
    .expect("write");
    let errors = dtlsd::check::check_file(std::path::Path::new(&config))
        .expect_err("cookie_secrets missing")
        .0
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].starts_with("serve.key_store: key_store ")
            && errors[0].ends_with("cookie_secrets: missing"),
        "{errors:?}"
    );
    write_store(&store, &[S1]);
    dtlsd::check::check_file(std::path::Path::new(&config)).expect("valid store");
}

/// The handshake message type of the first record of a datagram from the server (a DTLS
/// 1.2 handshake record: 13-byte header, then the message type).
fn first_message_type(datagram: &[u8]) -> Option<u8> {
    (datagram.first() == Some(&22)).then(|| datagram.get(13).copied())?
}

/// A DTLS 1.2 client of our engine that stops after the cookie exchange with `server`,
/// holding its cookie-bearing ClientHello.
struct HeldHello {
    sock: UdpSocket,
    conn: Connection,
    server: SocketAddr,
    hello: Vec<u8>,
}

impl HeldHello {
    fn get(config: &Arc<Config>, server: SocketAddr) -> Self {
        let sock = UdpSocket::bind("127.0.0.1:0").expect("bind");
        sock.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let (mut conn, first) = common::first_hello(config, server);
        sock.send_to(&first, server).expect("send");
        let mut buf = vec![0u8; 65_536];
        let (n, from) = sock.recv_from(&mut buf).expect("HelloVerifyRequest");
        assert_eq!(first_message_type(&buf[..n]), Some(3), "HelloVerifyRequest");
        conn.handle_datagram(Instant::now(), UnixTime::now(), from, &buf[..n]);
        let t = conn
            .poll_transmit(Instant::now(), &mut buf)
            .expect("the ClientHello with the cookie");
        let hello = buf[..t.len].to_vec();
        Self {
            sock,
            conn,
            server,
            hello,
        }
    }

    /// Sends the held hello to `to`; returns the first message type of the answer.
    fn answer_from(&self, to: SocketAddr) -> Option<u8> {
        self.sock.send_to(&self.hello, to).expect("send");
        let mut buf = vec![0u8; 65_536];
        let (n, _) = self.sock.recv_from(&mut buf).expect("an answer");
        first_message_type(&buf[..n])
    }

    /// Sends the held hello to its server and runs the handshake to the end.
    fn complete(mut self) {
        self.sock.send_to(&self.hello, self.server).expect("send");
        let mut buf = vec![0u8; 65_536];
        let deadline = Instant::now() + Duration::from_secs(10);
        self.sock
            .set_read_timeout(Some(Duration::from_millis(50)))
            .expect("timeout");
        while !self.conn.is_established() {
            assert!(
                Instant::now() < deadline && !self.conn.is_finished(),
                "handshake stuck in {}",
                self.conn.state_name()
            );
            if let Ok((n, from)) = self.sock.recv_from(&mut buf) {
                self.conn
                    .handle_datagram(Instant::now(), UnixTime::now(), from, &buf[..n]);
            }
            if self
                .conn
                .poll_timeout()
                .is_some_and(|t| t <= Instant::now())
            {
                self.conn.handle_timeout(Instant::now());
            }
            while let Some(t) = self.conn.poll_transmit(Instant::now(), &mut buf) {
                self.sock
                    .send_to(&buf[..t.len], t.destination)
                    .expect("send");
            }
        }
    }
}

/// Operational: cookie-secret rotation without failures, daemon level. A HelloVerifyRequest
/// cookie node A made verifies on node B (one key store); a cookie made before a rotation
/// (`[C2, C1]`, SIGHUP) still verifies after it and its handshake completes; once C1 leaves
/// the store (`[C3, C2]`) a cookie made under it is answered with a fresh
/// HelloVerifyRequest, never with a handshake (RFC 6347 §4.2.1: the server verifies the
/// cookie before it commits any state).
#[test]
fn cookies_verify_on_another_node_and_through_a_cookie_secret_rotation() {
    let pki = TempDir::new("keystore-cookies");
    certs(&pki);
    let store = pki.file("keys.toml");
    write_store_with(&store, &[S1], &[C1]);
    let backend = EchoBackend::start();
    let args = ["--shards", "1", "--key-store", &store, "--versions", "1.2"];
    let a = Daemon::start_serve_with_metrics(backend.addr, &pki, &args);
    let b = Daemon::start_serve_with_metrics(backend.addr, &pki, &args);
    let config = Arc::new(Config {
        versions: vec![ProtocolVersion::Dtls1_2],
        ..(*Client::config(&pki)).clone()
    });

    // A's cookie, presented to B from the same address: B starts the handshake.
    let across = HeldHello::get(&config, a.listen);
    assert_eq!(
        across.answer_from(b.listen),
        Some(2),
        "ServerHello from B\n{}",
        b.log()
    );

    // Two cookies under C1, then the rotation on A.
    let kept = HeldHello::get(&config, a.listen);
    let retired = HeldHello::get(&config, a.listen);
    write_store_with(&store, &[S1], &[C2, C1]);
    reload(&a, 1);
    // C1 is the previous secret: its cookie still verifies, the handshake completes.
    kept.complete();
    // New cookies are made under C2 and verify.
    HeldHello::get(&config, a.listen).complete();

    // C1 leaves the store: its cookie is answered with a new HelloVerifyRequest.
    write_store_with(&store, &[S1], &[C3, C2]);
    reload(&a, 2);
    assert_eq!(
        retired.answer_from(a.listen),
        Some(3),
        "a fresh HelloVerifyRequest\n{}",
        a.log()
    );
    assert!(!a.log().contains(C3), "a secret in the log");
}
