//! Fail closed, over real sockets: `dtlsd connect --psk` never settles for a certificate or a
//! wrong key; SIGHUP re-reads the configuration file and revokes what it removed; the session
//! cap refuses before any flight; every failure leaves one log line naming the peer and why.

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Client, Daemon, EchoBackend, Peer, TempDir, certs, free_udp_port, wait_until};
use control::{CertifiedKey, Config, PeerVerifier, Psk};
use dtls_crypto::CertificateVerifier;

const KEY_A: &str = "00112233445566778899aabbccddeeff";
const KEY_B: &str = "ffeeddccbbaa99887766554433221100";

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

/// Our engine as a PSK client (PSK suites only, no certificate accepted), as `dtlsd
/// connect --psk` configures it.
fn psk_client(identity: &str, key: &str) -> Arc<Config> {
    Arc::new(
        Config {
            psks: vec![Psk {
                identity: identity.as_bytes().to_vec(),
                key: zeroize::Zeroizing::new(hex(key)),
            }],
            ..Config::new(PeerVerifier::RejectAll)
        }
        .psk_suites_only(),
    )
}

/// Our engine with `client`'s certificate, verifying the server against `server_ca`.
fn cert_client(client: &TempDir, server_ca: &TempDir) -> Arc<Config> {
    let chain = dtls_crypto::pem::load_certificates(client.file("client.pem")).expect("cert");
    let key = control::SigningKey::from_pem_file(client.file("client.key")).expect("key");
    let ca = CertificateVerifier::from_pem_file(server_ca.file("ca.pem")).expect("ca");
    Arc::new(Config {
        certificate: Some(Arc::new(CertifiedKey { chain, key })),
        server_name: Some("localhost".into()),
        ..Config::new(PeerVerifier::WebPki(ca))
    })
}

/// The log line that contains every one of `needles`.
fn line_with<'a>(log: &'a str, needles: &[&str]) -> Option<&'a str> {
    log.lines().find(|l| needles.iter().all(|n| l.contains(n)))
}

/// Waits until `client` receives a close_notify alert from the server.
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

/// A local source's datagram through `entry`: whether anything came back within `wait`.
fn echo_through(entry: SocketAddr, payload: &[u8], wait: Duration) -> Option<Vec<u8>> {
    let s = UdpSocket::bind("127.0.0.1:0").expect("bind");
    s.connect(entry).expect("connect");
    s.set_read_timeout(Some(wait)).expect("timeout");
    s.send(payload).expect("send");
    let mut buf = [0u8; 2048];
    s.recv(&mut buf).ok().map(|n| buf[..n].to_vec())
}

/// Issue 9, bug 1: a PSK-configured `dtlsd connect` offered every suite and accepted any
/// certificate, so a server that holds a certificate and knows no PSK got the plaintext.
#[test]
fn connect_with_a_psk_refuses_a_certificate_server_that_lacks_the_psk() {
    let pki = TempDir::new("fc-openssl");
    certs(&pki);
    let port = free_udp_port();
    let server: SocketAddr = ([127, 0, 0, 1], port).into();
    let openssl = Peer::spawn(
        "openssl",
        &[
            "s_server",
            "-dtls1_2",
            "-listen",
            "-accept",
            &server.to_string(),
            "-cert",
            &pki.file("server.pem"),
            "-key",
            &pki.file("server.key"),
            "-naccept",
            "1",
        ]
        .map(String::from),
    );
    wait_until(
        "openssl s_server listens",
        || openssl.transcript(),
        || openssl.transcript().contains("ACCEPT"),
    );
    let mut connect = Daemon::start_connect_args(server, &["--psk", &format!("client1:{KEY_A}")]);
    let payload = b"plaintext only a PSK holder may see";
    assert_eq!(
        echo_through(connect.listen, payload, Duration::from_secs(3)),
        None
    );
    wait_until(
        "the failure is logged",
        || connect.log(),
        || connect.log().contains("handshake failed"),
    );
    let log = connect.log();
    let line = line_with(&log, &["handshake failed", &format!("server={server}")])
        .unwrap_or_else(|| panic!("no failure line naming the server:\n{log}"));
    assert!(line.contains("alert_received=HandshakeFailure"), "{line}");
    assert!(line.contains("psk_identity=client1"), "{line}");
    assert_eq!(
        log.lines()
            .filter(|l| l.contains("handshake failed"))
            .count(),
        1,
        "one line per failure:\n{log}"
    );
    assert!(
        !openssl.transcript().contains("plaintext only"),
        "the server saw the plaintext:\n{}",
        openssl.transcript()
    );
    assert!(connect.terminate().success());
}

/// Issue 9, bug 1: a wrong PSK key against a server with a certificate and PSKs "worked"
/// through a certificate suite. Now only PSK suites are offered, the keys cannot match, and
/// the client gives up naming the likely reason.
#[test]
fn connect_with_a_wrong_psk_key_fails_and_says_why() {
    let pki = TempDir::new("fc-wrong-psk");
    certs(&pki);
    let backend = EchoBackend::start();
    let mut serve = Daemon::start_serve(
        backend.addr,
        &pki,
        &["--psk", &format!("client1:{KEY_A}"), "--shards", "1"],
    );
    let config = pki.file("connect.toml");
    std::fs::write(&config, "[connect]\n\n[limits]\nhandshake_timeout = 3\n").expect("write");
    let mut connect = Daemon::start_connect_args(
        serve.listen,
        // The diagnosis below is the DTLS 1.2 engine's (a server silent after our Finished).
        &[
            "--psk",
            &format!("client1:{KEY_B}"),
            "--config",
            &config,
            "--versions",
            "1.2",
        ],
    );
    assert_eq!(
        echo_through(connect.listen, b"never delivered", Duration::from_secs(2)),
        None
    );
    wait_until(
        "the client gives up",
        || connect.log(),
        || connect.log().contains("handshake failed"),
    );
    let log = connect.log();
    let line = line_with(
        &log,
        &["handshake failed", &format!("server={}", serve.listen)],
    )
    .unwrap_or_else(|| panic!("no failure line naming the server:\n{log}"));
    assert!(line.contains("never answered our Finished"), "{line}");
    assert!(line.contains("a wrong PSK?"), "{line}");
    assert!(connect.terminate().success());
    assert!(serve.terminate().success(), "{}", serve.log());
    assert!(
        serve.log().contains("handshakes_completed=0"),
        "{}",
        serve.log()
    );
}

/// Issue 9, bug 2: SIGHUP re-reads the configuration file. A removed PSK closes its live
/// sessions (close_notify, counted, logged), is refused for new handshakes and for
/// resumption with its tickets; the other PSKs are untouched.
#[test]
fn sighup_revokes_a_removed_psk_everywhere() {
    let pki = TempDir::new("fc-reload-psk");
    certs(&pki);
    let config = pki.file("dtlsd.toml");
    let both = format!("[serve]\npsk = [\"alice:{KEY_A}\", \"bob:{KEY_B}\"]\n");
    std::fs::write(&config, &both).expect("write");
    let backend = EchoBackend::start();
    let mut serve = Daemon::start_serve_with_metrics(
        backend.addr,
        &pki,
        &["--config", &config, "--shards", "1"],
    );
    let mut alice = Client::connect(psk_client("alice", KEY_A), serve.listen);
    alice.echo(b"alice before");
    let mut bob = Client::connect(psk_client("bob", KEY_B), serve.listen);
    bob.echo(b"bob before");
    let bob_ticket = bob.ticket.take().expect("the server issues tickets");

    std::fs::write(&config, format!("[serve]\npsk = [\"alice:{KEY_A}\"]\n")).expect("write");
    serve.signal("HUP");
    wait_until(
        "reload",
        || serve.log(),
        || serve.log().contains("configuration reloaded"),
    );
    assert!(receives_close_notify(&mut bob), "{}", serve.log());
    alice.echo(b"alice after");
    let fresh = Client::try_connect(
        psk_client("bob", KEY_B),
        serve.listen,
        None,
        Duration::from_secs(10),
    );
    assert!(fresh.is_err(), "a removed PSK must be refused");
    let resumed = Client::try_connect(
        psk_client("bob", KEY_B),
        serve.listen,
        Some(bob_ticket),
        Duration::from_secs(10),
    );
    assert!(
        resumed.is_err(),
        "a ticket of a removed PSK must not resume"
    );
    assert_eq!(serve.metric("dtlsd_sessions_revoked_total"), Some(1));
    assert_eq!(serve.metric("dtlsd_reloads_total"), Some(1));
    assert_eq!(serve.metric("dtlsd_reloads_failed_total"), Some(0));
    let log = serve.log();
    assert!(
        line_with(&log, &["session closed", "reason=revoked", "psk:bob"]).is_some(),
        "{log}"
    );
    assert!(
        line_with(&log, &["session established", "psk:alice", "resumed=false"]).is_some(),
        "{log}"
    );
    assert!(
        line_with(&log, &["handshake failed", "psk_identity=bob"]).is_some(),
        "{log}"
    );
    assert!(serve.terminate().success(), "{}", serve.log());
}

/// Issue 9, bug 2: a new client CA closes the live sessions whose certificate it does not
/// verify and refuses them afterwards; a certificate it does verify gets in.
#[test]
fn sighup_with_a_new_client_ca_closes_sessions_it_no_longer_verifies() {
    let old = TempDir::new("fc-ca-old");
    certs(&old);
    let new = TempDir::new("fc-ca-new");
    certs(&new);
    let client_ca = old.file("clients-ca.pem");
    std::fs::copy(old.file("ca.pem"), &client_ca).expect("copy");
    let config = old.file("dtlsd.toml");
    std::fs::write(&config, format!("[serve]\nclient_ca = \"{client_ca}\"\n")).expect("write");
    let backend = EchoBackend::start();
    let mut serve = Daemon::start_serve_with_metrics(
        backend.addr,
        &old,
        &["--config", &config, "--shards", "1"],
    );
    let mut live = Client::connect(cert_client(&old, &old), serve.listen);
    live.echo(b"before the new CA");

    std::fs::copy(new.file("ca.pem"), &client_ca).expect("replace the client CA");
    serve.signal("HUP");
    wait_until(
        "reload",
        || serve.log(),
        || serve.log().contains("configuration reloaded"),
    );
    assert!(receives_close_notify(&mut live), "{}", serve.log());
    let refused = Client::try_connect(
        cert_client(&old, &old),
        serve.listen,
        None,
        Duration::from_secs(10),
    );
    assert!(
        refused.is_err(),
        "a certificate of the old CA must be refused"
    );
    let mut admitted = Client::connect(cert_client(&new, &old), serve.listen);
    admitted.echo(b"after the new CA");
    assert_eq!(serve.metric("dtlsd_sessions_revoked_total"), Some(1));
    assert!(serve.terminate().success(), "{}", serve.log());
}

/// Issue 9, bug 2: a reload names the changed keys it cannot apply, and a reload that fails
/// counts in `dtlsd_reloads_failed_total` and keeps the configuration.
#[test]
fn sighup_names_keys_that_need_a_restart_and_counts_failures() {
    let pki = TempDir::new("fc-reload-fail");
    certs(&pki);
    let config = pki.file("dtlsd.toml");
    std::fs::write(&config, format!("[serve]\npsk = [\"alice:{KEY_A}\"]\n")).expect("write");
    let backend = EchoBackend::start();
    let mut serve = Daemon::start_serve_with_metrics(
        backend.addr,
        &pki,
        &["--config", &config, "--shards", "1"],
    );
    std::fs::write(
        &config,
        format!("[serve]\npsk = [\"alice:{KEY_A}\"]\nmtu = 1300\n\n[limits]\nmax_sessions = 9\n"),
    )
    .expect("write");
    serve.signal("HUP");
    wait_until(
        "restart warning",
        || serve.log(),
        || serve.log().contains("need a restart"),
    );
    let log = serve.log();
    let line = line_with(&log, &["need a restart"]).expect("warning");
    assert!(line.contains("mtu") && line.contains("limits"), "{line}");
    // The control thread counts the reload when it takes the new configuration, a moment
    // after the main thread's warning.
    wait_until(
        "the reload counted",
        || serve.log(),
        || serve.metric("dtlsd_reloads_total") == Some(1),
    );

    std::fs::write(&config, "[serve]\nmtu = \"large\"\n").expect("write");
    serve.signal("HUP");
    wait_until(
        "failed reload",
        || serve.log(),
        || serve.log().contains("reload failed"),
    );
    wait_until(
        "the failed reload counted",
        || serve.log(),
        || serve.metric("dtlsd_reloads_failed_total") == Some(1),
    );
    let mut alice = Client::connect(psk_client("alice", KEY_A), serve.listen);
    alice.echo(b"the previous configuration still serves");
    assert!(serve.terminate().success(), "{}", serve.log());
}

/// Issue 9: the session cap is a setting, and a handshake beyond it is refused before the
/// server's flight with an alert and a counter, never completed and then dropped.
#[test]
fn the_session_cap_refuses_with_an_alert_before_any_flight() {
    let pki = TempDir::new("fc-cap");
    certs(&pki);
    let backend = EchoBackend::start();
    let mut serve = Daemon::start_serve_with_metrics(
        backend.addr,
        &pki,
        &["--max-sessions", "2", "--shards", "1"],
    );
    let config = Client::config(&pki);
    let mut first = Client::connect(Arc::clone(&config), serve.listen);
    first.echo(b"first");
    let mut second = Client::connect(Arc::clone(&config), serve.listen);
    second.echo(b"second");
    let started = Instant::now();
    let third = Client::try_connect(
        Arc::clone(&config),
        serve.listen,
        None,
        Duration::from_secs(10),
    );
    let Err(why) = third else {
        panic!("a third session past max_sessions = 2 was admitted");
    };
    assert!(why.contains("InternalError"), "{why}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "refused at once, not timed out"
    );
    assert_eq!(
        serve.metric("dtlsd_handshakes_refused_total{reason=\"max_sessions\"}"),
        Some(1)
    );
    assert_eq!(
        serve.metric("dtlsd_session_install_failures_total{shard=\"0\"}"),
        Some(0)
    );
    // The refusal's log line may reach stderr after the alert reached the client.
    wait_until(
        "the refusal is logged",
        || serve.log(),
        || line_with(&serve.log(), &["handshake refused", "reason=max_sessions"]).is_some(),
    );
    // A closed session makes room.
    first.send_close_notify();
    wait_until(
        "the session closes",
        || serve.log(),
        || serve.log().contains("reason=close_notify"),
    );
    let mut third = Client::connect(Arc::clone(&config), serve.listen);
    third.echo(b"third, after a close");
    second.echo(b"second still here");
    assert!(serve.terminate().success(), "{}", serve.log());
}
