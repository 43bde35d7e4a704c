//! Abuse controls and access over loopback against the built binary (issue 14): allow and
//! deny lists of CIDR ranges (no reply at all to a refused source), the per-address
//! handshake rate and session cap, client-certificate identity rules (`--allow-cn`,
//! `--allow-dns`, `--allow-uri`), and SIGHUP applying new lists to new handshakes.
//!
//! Every loopback address 127.0.0.0/8 reaches the daemon on Linux, so each test plays
//! several source addresses from one host. Every wait has a deadline; daemons are killed on
//! drop.

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Client, Daemon, EchoBackend, TempDir, certs};
use control::{CertifiedKey, Config, PeerVerifier};
use dtls_crypto::CertificateVerifier;

fn ip(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, last))
}

fn wait_until(what: &str, log: impl Fn() -> String, done: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(Instant::now() < deadline, "timed out: {what}\n{}", log());
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Sends a fresh ClientHello to `server` from `from` (three times, a second apart, as a
/// client's retransmissions would) and returns whether anything at all came back.
fn any_reply_to_hellos(config: &Arc<Config>, server: SocketAddr, from: IpAddr) -> bool {
    let sock = UdpSocket::bind((from, 0)).expect("bind a source");
    sock.set_read_timeout(Some(Duration::from_secs(1)))
        .expect("timeout");
    let (_conn, hello) = common::first_hello(config, server);
    let mut buf = vec![0u8; 4096];
    for _ in 0..3 {
        sock.send_to(&hello, server).expect("send");
        if sock.recv_from(&mut buf).is_ok() {
            return true;
        }
    }
    false
}

/// A `[serve]` + `[limits]` file in `dir` with `limits` as the table's body.
fn config_file(dir: &TempDir, serve: &str, limits: &str) -> String {
    let path = dir.file("dtlsd.toml");
    std::fs::write(&path, format!("[serve]\n{serve}\n[limits]\n{limits}\n")).expect("write");
    path
}

#[test]
fn a_denied_source_gets_no_reply_and_an_allowed_one_connects() {
    let pki = TempDir::new("access-lists");
    certs(&pki);
    // 127.0.0.0/30 is allowed but 127.0.0.2 denied (deny wins); 127.0.0.5 is outside.
    let config = config_file(
        &pki,
        "",
        "allow = [\"127.0.0.0/30\", \"2001:db8::/32\"]\ndeny = [\"127.0.0.2\"]",
    );
    let backend = EchoBackend::start();
    let serve = Daemon::start_serve_with_metrics(
        backend.addr,
        &pki,
        &["--config", &config, "--shards", "1"],
    );
    let cookies = |s: &Daemon| s.metric("dtlsd_cookies_sent_total").unwrap_or(0);

    let client = Client::config(&pki);
    assert!(
        !any_reply_to_hellos(&client, serve.listen, ip(2)),
        "denied source"
    );
    assert!(
        !any_reply_to_hellos(&client, serve.listen, ip(5)),
        "source outside allow"
    );
    assert_eq!(cookies(&serve), 0, "no HelloVerifyRequest went out");
    assert_eq!(
        serve.metric("dtlsd_handshakes_refused_total{reason=\"denied\"}"),
        Some(3)
    );
    assert_eq!(
        serve.metric("dtlsd_handshakes_refused_total{reason=\"not_allowed\"}"),
        Some(3)
    );
    let mut allowed = Client::connect_from(client, serve.listen, ip(1), Duration::from_secs(10));
    allowed.echo(b"from an allowed address");
    assert_eq!(cookies(&serve), 1);
}

#[test]
fn the_handshake_rate_refuses_the_next_handshake_of_a_burst_not_another_address() {
    let pki = TempDir::new("access-rate");
    certs(&pki);
    let config = config_file(&pki, "", "handshakes_per_second = 1\nhandshake_burst = 3");
    let backend = EchoBackend::start();
    let serve = Daemon::start_serve_with_metrics(
        backend.addr,
        &pki,
        &["--config", &config, "--shards", "1"],
    );
    let config = Client::config(&pki);
    let burst: Vec<Client> = (0..3)
        .map(|_| {
            Client::connect_from(
                Arc::clone(&config),
                serve.listen,
                ip(1),
                Duration::from_secs(5),
            )
        })
        .collect();
    // The fourth within the same second: refused after the cookie, silently (the client's
    // retransmission timer, 1 s, is the back-off).
    let fourth = Client::try_connect_from(
        Arc::clone(&config),
        serve.listen,
        (ip(1), 0).into(),
        None,
        Duration::from_millis(700),
    );
    assert!(fourth.is_err(), "the fourth handshake of a burst of three");
    assert_eq!(
        serve.metric("dtlsd_handshakes_refused_total{reason=\"handshake_rate\"}"),
        Some(1)
    );
    // Another address has its own bucket.
    let mut other = Client::connect_from(
        Arc::clone(&config),
        serve.listen,
        ip(3),
        Duration::from_secs(5),
    );
    other.echo(b"another address");
    // Once a token refilled, the first address gets in again.
    let mut later = Client::connect_from(
        Arc::clone(&config),
        serve.listen,
        ip(1),
        Duration::from_secs(10),
    );
    later.echo(b"after the refill");
    assert_eq!(burst.len(), 3);
}

#[test]
fn one_address_holds_at_most_sessions_per_address() {
    let pki = TempDir::new("access-sessions");
    certs(&pki);
    let config = config_file(&pki, "", "sessions_per_address = 2");
    let backend = EchoBackend::start();
    let serve = Daemon::start_serve_with_metrics(
        backend.addr,
        &pki,
        &["--config", &config, "--shards", "1"],
    );
    let config = Client::config(&pki);
    let mut held: Vec<Client> = (0..2)
        .map(|_| {
            Client::connect_from(
                Arc::clone(&config),
                serve.listen,
                ip(1),
                Duration::from_secs(5),
            )
        })
        .collect();
    let third = Client::try_connect_from(
        Arc::clone(&config),
        serve.listen,
        (ip(1), 0).into(),
        None,
        Duration::from_secs(5),
    );
    let error = third.err().expect("a third session from one address");
    assert!(error.contains("InternalError"), "told at once: {error}");
    assert_eq!(
        serve.metric("dtlsd_handshakes_refused_total{reason=\"sessions_per_address\"}"),
        Some(1)
    );
    let mut other = Client::connect_from(
        Arc::clone(&config),
        serve.listen,
        ip(2),
        Duration::from_secs(5),
    );
    other.echo(b"another address");
    for c in &mut held {
        c.echo(b"the held sessions still work");
    }
}

/// Our engine with `pki`'s client certificate (CN and DNS name `client.test`).
fn cert_client(pki: &TempDir) -> Arc<Config> {
    let chain = dtls_crypto::pem::load_certificates(pki.file("client.pem")).expect("cert");
    let key = control::SigningKey::from_pem_file(pki.file("client.key")).expect("key");
    let ca = CertificateVerifier::from_pem_file(pki.file("ca.pem")).expect("ca");
    Arc::new(Config {
        certificate: Some(Arc::new(CertifiedKey { chain, key })),
        server_name: Some("localhost".into()),
        ..Config::new(PeerVerifier::WebPki(ca))
    })
}

#[test]
fn identity_rules_admit_a_matching_certificate_and_refuse_others_with_access_denied() {
    let pki = TempDir::new("access-identity");
    certs(&pki);
    let backend = EchoBackend::start();
    let ca = pki.file("ca.pem");
    let admitting = Daemon::start_serve_with_metrics(
        backend.addr,
        &pki,
        &[
            "--client-ca",
            &ca,
            "--allow-cn",
            "someone-else",
            "--allow-dns",
            "client.test",
            "--shards",
            "1",
        ],
    );
    let mut admitted = Client::connect(cert_client(&pki), admitting.listen);
    admitted.echo(b"a DNS name the rules list");

    let refusing = Daemon::start_serve_with_metrics(
        backend.addr,
        &pki,
        &[
            "--client-ca",
            &ca,
            "--allow-cn",
            "someone-else",
            "--allow-uri",
            "spiffe://example.net/other",
            "--shards",
            "1",
        ],
    );
    let refused = Client::try_connect(
        cert_client(&pki),
        refusing.listen,
        None,
        Duration::from_secs(10),
    );
    let error = refused.err().expect("no rule admits client.test");
    assert!(error.contains("AccessDenied"), "{error}");
    wait_until(
        "refusal logged",
        || refusing.log(),
        || refusing.log().contains("handshake failed"),
    );
    let log = refusing.log();
    let line = log
        .lines()
        .find(|l| l.contains("handshake failed"))
        .expect("a failure line");
    assert!(
        line.contains("peer=127.0.0.1:") && line.contains("cn=client.test dns=client.test"),
        "{line}"
    );
    assert!(line.contains("alert_sent=AccessDenied"), "{line}");
    assert_eq!(
        refusing.metric("dtlsd_handshakes_failed_total{reason=\"access_denied\"}"),
        Some(1)
    );
    assert_eq!(refusing.metric("dtlsd_handshakes_completed_total"), Some(0));
}

#[test]
fn sighup_narrows_the_allow_list_for_new_handshakes_and_keeps_live_sessions() {
    let pki = TempDir::new("access-reload");
    certs(&pki);
    let config = config_file(&pki, "", "");
    let backend = EchoBackend::start();
    let serve = Daemon::start_serve_with_metrics(
        backend.addr,
        &pki,
        &["--config", &config, "--shards", "1"],
    );
    let client = Client::config(&pki);
    let mut live = Client::connect_from(
        Arc::clone(&client),
        serve.listen,
        ip(2),
        Duration::from_secs(5),
    );
    live.echo(b"before the reload");

    config_file(
        &pki,
        "",
        "allow = [\"127.0.0.1/32\"]\nhandshakes_per_second = 50",
    );
    serve.signal("HUP");
    wait_until(
        "reload",
        || serve.log(),
        || serve.log().contains("configuration reloaded"),
    );
    assert!(
        !serve.log().contains("need a restart"),
        "allow and the rate are applied by a reload\n{}",
        serve.log()
    );
    assert!(
        !any_reply_to_hellos(&client, serve.listen, ip(2)),
        "127.0.0.2 is no longer allowed"
    );
    assert_eq!(
        serve.metric("dtlsd_handshakes_refused_total{reason=\"not_allowed\"}"),
        Some(3)
    );
    let mut inside = Client::connect_from(
        Arc::clone(&client),
        serve.listen,
        ip(1),
        Duration::from_secs(5),
    );
    inside.echo(b"an allowed address after the reload");
    // The session from 127.0.0.2 was not cut by the narrower list.
    live.echo(b"after the reload");
}

/// Whether `client` gets a close_notify within 10 s.
fn receives_close_notify(client: &mut Client) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if client
            .turn(Duration::from_millis(100))
            .alerts
            .iter()
            .any(|a| a == &[1, 0])
        {
            return true;
        }
    }
    false
}

#[test]
fn sighup_with_narrower_identity_rules_closes_sessions_they_no_longer_admit() {
    let pki = TempDir::new("access-identity-reload");
    certs(&pki);
    let ca = pki.file("ca.pem");
    let config = config_file(
        &pki,
        &format!("client_ca = \"{ca}\"\nallow_cn = [\"client.test\"]"),
        "",
    );
    let backend = EchoBackend::start();
    let serve = Daemon::start_serve_with_metrics(
        backend.addr,
        &pki,
        &["--config", &config, "--shards", "1"],
    );
    let mut live = Client::connect(cert_client(&pki), serve.listen);
    live.echo(b"admitted by its common name");

    config_file(
        &pki,
        &format!("client_ca = \"{ca}\"\nallow_cn = [\"someone-else\"]"),
        "",
    );
    serve.signal("HUP");
    wait_until(
        "reload",
        || serve.log(),
        || serve.log().contains("configuration reloaded"),
    );
    assert!(receives_close_notify(&mut live), "{}", serve.log());
    assert_eq!(serve.metric("dtlsd_sessions_revoked_total"), Some(1));
    let refused = Client::try_connect(
        cert_client(&pki),
        serve.listen,
        None,
        Duration::from_secs(10),
    );
    assert!(refused.err().expect("refused now").contains("AccessDenied"));
}
