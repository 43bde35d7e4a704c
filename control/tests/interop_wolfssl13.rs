//! DTLS 1.3 interop over real UDP on loopback against wolfSSL 5.9.4's example programs
//! (TESTING.md "DTLS 1.3 and connection-ID peer", built with `--enable-dtls13
//! --enable-mlkem` by `scripts/wolfssl-peer.sh`): our client against `server -u -v 4 -e`
//! (echoes every record), our server against `client -u -v 4` (sends `hello wolfssl!`,
//! prints the reply). Cases: each TLS 1.3 AEAD suite, X25519MLKEM768 (`--pqc`) and
//! X25519/P-256 key shares, our stateless cookie HelloRetryRequest (the acceptor's
//! default), a HelloRetryRequest forced by a group mismatch, a client
//! certificate, resumption both ways (`-r`, which needs wolfSSL's `--enable-session-ticket`,
//! part of the script's build), connection IDs both ways in both roles (`--cid`: both CIDs
//! negotiated, wolfSSL's application data in records carrying our CID, ours carrying its).
//! Each test checks the
//! version and suite on both sides and application data byte for byte both ways.
//!
//! The programs come from `DTLS_WOLFSSL_CLIENT`/`DTLS_WOLFSSL_SERVER` (`scripts/test.sh`
//! exports them); without them the tests fail, naming the script.

mod support;

use std::time::{Duration, Instant};

use control::{AcceptorConfig, CipherSuite, ClientAuth, Config, NamedGroup};
use support::interop::*;
use support::peers::*;
use support::pki::{TempDir, TestPki};
use support::udp::UdpEndpoint;

/// What the wolfSSL example client sends after its handshake (`kHelloMsg`, no newline).
const WOLFSSL_HELLO: &[u8] = b"hello wolfssl!";

#[derive(Debug, Clone, Copy)]
struct Case13 {
    suite: CipherSuite,
    /// Our groups (the client offers a share for the first).
    groups: &'static [NamedGroup],
    /// wolfSSL's `--pqc` group, if any.
    wolfssl_pqc: Option<&'static str>,
    client_cert: bool,
    mtu: Option<u16>,
    /// wolfSSL sends a KeyUpdate before its data (`-I`).
    key_update: bool,
    /// Connection IDs (RFC 9147 §9): ours of this length, wolfSSL's [`WOLFSSL_CID`]
    /// (`--cid`).
    cid: Option<u8>,
}

/// The CID wolfSSL asks for (`--cid`): its records to us carry ours, ours to it this one.
const WOLFSSL_CID: &str = "wolfcid1";

impl Case13 {
    fn new(suite: CipherSuite) -> Self {
        Self {
            suite,
            groups: &[NamedGroup::X25519, NamedGroup::Secp256r1],
            wolfssl_pqc: None,
            client_cert: false,
            mtu: None,
            key_update: false,
            cid: None,
        }
    }
}

fn wolfssl_cipher(suite: CipherSuite) -> &'static str {
    match suite {
        CipherSuite::Tls13Aes128GcmSha256 => "TLS13-AES128-GCM-SHA256",
        CipherSuite::Tls13Aes256GcmSha384 => "TLS13-AES256-GCM-SHA384",
        CipherSuite::Tls13Chacha20Poly1305Sha256 => "TLS13-CHACHA20-POLY1305-SHA256",
        other => panic!("no DTLS 1.3 case for {other:?}"),
    }
}

fn wolfssl_suite_line(suite: CipherSuite) -> String {
    let iana = match suite {
        CipherSuite::Tls13Aes128GcmSha256 => "TLS_AES_128_GCM_SHA256",
        CipherSuite::Tls13Aes256GcmSha384 => "TLS_AES_256_GCM_SHA384",
        CipherSuite::Tls13Chacha20Poly1305Sha256 => "TLS_CHACHA20_POLY1305_SHA256",
        other => panic!("no DTLS 1.3 case for {other:?}"),
    };
    format!("SSL cipher suite is {iana}\n")
}

fn wolfssl_opts(pki: &TestPki, case: Case13, server: bool) -> WolfsslOpts {
    let own = if server {
        Some(pki.server_ec.clone())
    } else {
        case.client_cert.then(|| pki.client_ec.clone())
    };
    let mut opts = WolfsslOpts::new(wolfssl_cipher(case.suite), own, pki.ca.clone());
    opts.dtls13 = true;
    opts.mtu = case.mtu;
    opts.require_client_cert = case.client_cert;
    if case.key_update && !server {
        opts.extra.push("-I".to_owned());
    }
    if let Some(pqc) = case.wolfssl_pqc {
        opts.extra.extend(["--pqc".to_owned(), pqc.to_owned()]);
    }
    if case.cid.is_some() {
        opts.extra
            .extend(["--cid".to_owned(), WOLFSSL_CID.to_owned()]);
    }
    opts
}

fn our_config(pki: &TestPki, case: Case13, server: bool) -> Config {
    let mut config = Config {
        tls13_cipher_suites: vec![case.suite],
        tls13_groups: case.groups.to_vec(),
        mtu: case.mtu.map_or(1200, usize::from),
        ..Config::new(ca_verifier(pki)).dtls13_only()
    };
    if let Some(len) = case.cid {
        config.connection_id = control::ConnectionIds::On { len };
    }
    if server {
        config.certificate = Some(certified(&pki.server_ec));
        if case.client_cert {
            config.client_auth = ClientAuth::Required;
        }
    } else {
        config.server_name = Some("localhost".into());
        if case.client_cert {
            config.certificate = Some(certified(&pki.client_ec));
        }
    }
    config
}

fn drive_until_wolfssl_reports(ep: &mut UdpEndpoint, peer: &PeerProcess, case: Case13) {
    drive_until_peer(ep, peer, b"SSL version is DTLSv1.3\n", IO_TIMEOUT);
    drive_until_peer(
        ep,
        peer,
        wolfssl_suite_line(case.suite).as_bytes(),
        IO_TIMEOUT,
    );
}

fn assert_ours(ep: &UdpEndpoint, case: Case13) {
    assert_eq!(ep.conn.version(), "1.3");
    let info = ep.info.as_ref().expect("keys ready");
    assert_eq!(info.suite, case.suite, "negotiated suite");
    match case.cid {
        // RFC 9147 §9: ours of the configured length, wolfSSL's the one given with --cid.
        Some(len) => {
            assert_eq!(
                info.local_cid.as_ref().map(Vec::len),
                Some(usize::from(len))
            );
            assert_eq!(info.peer_cid.as_deref(), Some(WOLFSSL_CID.as_bytes()));
        }
        None => assert_eq!((&info.local_cid, &info.peer_cid), (&None, &None)),
    }
}

/// With CIDs, wolfSSL's application data came in records carrying our CID (ours to it
/// carry its CID by construction, and it opened them: the bytes crossed).
fn assert_cid_records(ep: &UdpEndpoint, case: Case13, peer: &PeerProcess) {
    if case.cid.is_some() {
        let data = ep.data13.as_ref().expect("1.3 keys");
        assert!(
            data.cid_records_in > 0,
            "no record with our CID from wolfSSL\n{}",
            peer.transcript()
        );
    }
}

// ---------- our client vs wolfSSL's example server (echo) ----------

fn client_vs_wolfssl(case: Case13) {
    let pki = TestPki::shared();
    let dir = TempDir::new("ic-wolfssl13");
    let server = wolfssl_server(&wolfssl_opts(pki, case, true), dir.path());
    let mut ep = UdpEndpoint::client(our_config(pki, case, false), server.addr());
    assert_handshake(&mut ep, &server);
    assert_ours(&ep, case);
    drive_until_wolfssl_reports(&mut ep, &server, case);
    if case.key_update {
        // Our KeyUpdate, asking wolfSSL for its own: both directions move to epoch 4
        // before the echoes.
        while ep.conn.poll_timeout().is_some() {
            ep.turn(Duration::from_millis(10));
        }
        assert!(
            ep.conn.update_keys(Instant::now(), true),
            "KeyUpdate started"
        );
        let deadline = Instant::now() + IO_TIMEOUT;
        while ep.key_updates < 2 && Instant::now() < deadline {
            ep.turn(Duration::from_millis(10));
        }
        // wolfSSL answers a requested update only when it next writes: our write side
        // (acknowledged) moved; its side moves with the first echo.
        assert!(
            ep.key_updates >= 1,
            "no KeyUpdate acknowledged\n{}",
            server.transcript()
        );
    }
    for (i, &len) in [16usize, 90, 600, 1100].iter().enumerate() {
        let msg = &payload(&format!("echo13 {i}"), len)[..];
        let before = ep.app_bytes().len();
        ep.send_app(msg);
        let deadline = Instant::now() + IO_TIMEOUT;
        while ep.app_bytes().len() < before + msg.len() && Instant::now() < deadline {
            ep.turn(Duration::from_millis(10));
        }
        assert_eq!(
            &ep.app_bytes()[before..],
            msg,
            "echo of {len} bytes differs\n{}",
            server.transcript()
        );
    }
    assert_cid_records(&ep, case, &server);
    // The server's ACK ended our final flight.
    assert_eq!(
        ep.conn.poll_timeout(),
        None,
        "final flight never acknowledged"
    );
    assert!(ep.failed.is_none());
    assert!(ep.alerts.is_empty(), "alerts {:?}", ep.alerts);
}

#[test]
fn our_client_vs_wolfssl13_aes128_gcm_x25519() {
    client_vs_wolfssl(Case13::new(CipherSuite::Tls13Aes128GcmSha256));
}

#[test]
fn our_client_vs_wolfssl13_with_connection_ids() {
    client_vs_wolfssl(Case13 {
        cid: Some(6),
        ..Case13::new(CipherSuite::Tls13Aes128GcmSha256)
    });
}

#[test]
fn our_client_vs_wolfssl13_aes256_gcm() {
    client_vs_wolfssl(Case13::new(CipherSuite::Tls13Aes256GcmSha384));
}

#[test]
fn our_client_vs_wolfssl13_chacha20() {
    client_vs_wolfssl(Case13::new(CipherSuite::Tls13Chacha20Poly1305Sha256));
}

#[test]
fn our_client_vs_wolfssl13_x25519mlkem768() {
    // wolfSSL's server takes only an unfragmented first ClientHello (its
    // WOLFSSL_DTLS_CH_FRAG allows fragments only once the cookie is verified), so this case
    // runs at MTU 1500, where the ~1.4 KB hybrid ClientHello fits one datagram. Our own
    // server reassembles a fragmented first ClientHello (the acceptor's hello pool).
    client_vs_wolfssl(Case13 {
        groups: &[NamedGroup::X25519Mlkem768],
        wolfssl_pqc: Some("X25519MLKEM768"),
        mtu: Some(1500),
        ..Case13::new(CipherSuite::Tls13Aes128GcmSha256)
    });
}

#[test]
fn our_client_vs_wolfssl13_p256() {
    client_vs_wolfssl(Case13 {
        groups: &[NamedGroup::Secp256r1],
        ..Case13::new(CipherSuite::Tls13Aes128GcmSha256)
    });
}

#[test]
fn our_client_vs_wolfssl13_key_update_mid_stream() {
    client_vs_wolfssl(Case13 {
        key_update: true,
        ..Case13::new(CipherSuite::Tls13Aes128GcmSha256)
    });
}

#[test]
fn our_client_vs_wolfssl13_with_client_certificate() {
    client_vs_wolfssl(Case13 {
        client_cert: true,
        ..Case13::new(CipherSuite::Tls13Aes128GcmSha256)
    });
}

// ---------- our server vs wolfSSL's example client ----------

fn server_vs_wolfssl(case: Case13, settings: AcceptorConfig) {
    let pki = TestPki::shared();
    let sock = UdpEndpoint::server_socket();
    let addr = sock.local_addr().expect("local addr");
    let mut client = wolfssl_client(&wolfssl_opts(pki, case, false), addr);
    let mut ep = match UdpEndpoint::accept_with(
        our_config(pki, case, true),
        settings,
        sock,
        HANDSHAKE_TIMEOUT,
    ) {
        Ok(ep) => ep,
        Err(e) => panic!("{e}\n{}", client.transcript()),
    };
    assert_handshake(&mut ep, &client);
    assert_ours(&ep, case);
    drive_until_wolfssl_reports(&mut ep, &client, case);
    assert!(
        ep.wait_app(WOLFSSL_HELLO, IO_TIMEOUT),
        "greeting not received; got {:?}; {} key updates, {:?} {:?}\n{}",
        String::from_utf8_lossy(&ep.app_bytes()),
        ep.key_updates,
        ep.conn.stats(),
        ep.conn.state_name(),
        client.transcript()
    );
    assert_eq!(ep.app_bytes(), WOLFSSL_HELLO, "application data differs");
    assert_cid_records(&ep, case, &client);
    if case.key_update {
        assert!(ep.key_updates >= 1, "no KeyUpdate applied");
    }
    let reply = payload(&format!("our 1.3 server {:?}", case.suite), 200);
    ep.send_app(&reply);
    let mut line = reply.clone();
    line.push(b'\n');
    drive_until_peer(&mut ep, &client, &line, IO_TIMEOUT);
    let deadline = Instant::now() + IO_TIMEOUT;
    while ep.closed.is_none() && Instant::now() < deadline {
        ep.turn(Duration::from_millis(10));
    }
    assert_eq!(
        ep.closed,
        Some(true),
        "no close_notify\n{}",
        client.transcript()
    );
    let status = client.wait_exit(IO_TIMEOUT);
    assert!(
        status.is_some_and(|s| s.success()),
        "wolfSSL client exit {status:?}\n{}",
        client.transcript()
    );
    assert!(ep.failed.is_none());
}

fn no_cookie() -> AcceptorConfig {
    AcceptorConfig {
        require_cookie: false,
        ..AcceptorConfig::default()
    }
}

#[test]
fn our_server_vs_wolfssl13_with_connection_ids() {
    server_vs_wolfssl(
        Case13 {
            cid: Some(8),
            ..Case13::new(CipherSuite::Tls13Aes128GcmSha256)
        },
        AcceptorConfig::default(),
    );
}

#[test]
fn our_server_vs_wolfssl13_aes128_gcm() {
    server_vs_wolfssl(
        Case13::new(CipherSuite::Tls13Aes128GcmSha256),
        AcceptorConfig::default(),
    );
}

#[test]
fn our_server_vs_wolfssl13_aes256_gcm() {
    server_vs_wolfssl(
        Case13::new(CipherSuite::Tls13Aes256GcmSha384),
        AcceptorConfig::default(),
    );
}

#[test]
fn our_server_vs_wolfssl13_chacha20() {
    server_vs_wolfssl(
        Case13::new(CipherSuite::Tls13Chacha20Poly1305Sha256),
        AcceptorConfig::default(),
    );
}

#[test]
fn our_server_vs_wolfssl13_x25519mlkem768() {
    server_vs_wolfssl(
        Case13 {
            groups: &[NamedGroup::X25519Mlkem768, NamedGroup::X25519],
            wolfssl_pqc: Some("X25519MLKEM768"),
            ..Case13::new(CipherSuite::Tls13Aes128GcmSha256)
        },
        AcceptorConfig::default(),
    );
}

#[test]
fn our_server_vs_wolfssl13_stateless_hello_retry_request_for_cookie_and_group() {
    // wolfSSL's client sends one share (X25519 or P-256 by its defaults); a server that
    // takes only P-384 asks for it in the same stateless HelloRetryRequest as the cookie.
    server_vs_wolfssl(
        Case13 {
            groups: &[NamedGroup::Secp384r1],
            ..Case13::new(CipherSuite::Tls13Aes256GcmSha384)
        },
        AcceptorConfig::default(),
    );
}

#[test]
fn our_server_vs_wolfssl13_engine_hello_retry_request_for_the_group() {
    // Without the cookie exchange the engine itself sends the HelloRetryRequest.
    server_vs_wolfssl(
        Case13 {
            groups: &[NamedGroup::Secp384r1],
            ..Case13::new(CipherSuite::Tls13Aes128GcmSha256)
        },
        no_cookie(),
    );
}

#[test]
fn our_server_vs_wolfssl13_key_update_before_data() {
    // `-I`: the wolfSSL client sends a KeyUpdate before its application data; the greeting
    // then arrives under epoch 4 keys, which our engine derived and handed over.
    let mut case = Case13::new(CipherSuite::Tls13Aes128GcmSha256);
    case.key_update = true;
    server_vs_wolfssl(case, AcceptorConfig::default());
}

#[test]
fn our_server_vs_wolfssl13_with_client_certificate() {
    server_vs_wolfssl(
        Case13 {
            client_cert: true,
            ..Case13::new(CipherSuite::Tls13Aes128GcmSha256)
        },
        AcceptorConfig::default(),
    );
}

// ---------- resumption (RFC 8446 §2.2) with `-r` ----------

/// Ticket keys created now (the UDP endpoints hand the engines the real wall clock).
fn wall_clock_ticket_keys() -> std::sync::Arc<std::sync::Mutex<control::crypto::TicketKeys>> {
    let keys = control::crypto::TicketKeys::new(
        &mut control::crypto::SeededRng::new(13),
        control::crypto::pki_types::UnixTime::now(),
        Duration::from_secs(3600),
        Duration::from_secs(7200),
    )
    .expect("ticket keys");
    std::sync::Arc::new(std::sync::Mutex::new(keys))
}

#[test]
fn our_server_resumes_a_wolfssl13_client() {
    // `client -r`: a full handshake, a ticket from us, close_notify, then a second
    // connection (a new socket) that offers the ticket and prints "reused session id".
    let pki = TestPki::shared();
    let case = Case13::new(CipherSuite::Tls13Aes128GcmSha256);
    let sock = UdpEndpoint::server_socket();
    let addr = sock.local_addr().expect("local addr");
    let second = sock.try_clone().expect("clone socket");
    let mut opts = wolfssl_opts(pki, case, false);
    opts.extra.push("-r".to_owned());
    let mut client = wolfssl_client(&opts, addr);
    let mut config = our_config(pki, case, true);
    config.ticket_keys = Some(wall_clock_ticket_keys());
    let accept = |sock| {
        UdpEndpoint::accept_with(
            config.clone(),
            AcceptorConfig::default(),
            sock,
            HANDSHAKE_TIMEOUT,
        )
    };
    let mut ep = accept(sock).unwrap_or_else(|e| panic!("{e}\n{}", client.transcript()));
    assert_handshake(&mut ep, &client);
    assert!(!ep.info.as_ref().expect("keys").resumed);
    assert!(
        ep.wait_app(WOLFSSL_HELLO, IO_TIMEOUT),
        "greeting not received\n{}",
        client.transcript()
    );
    let reply = payload("full", 50);
    ep.send_app(&reply);
    let deadline = Instant::now() + IO_TIMEOUT;
    while ep.closed.is_none() && Instant::now() < deadline {
        ep.turn(Duration::from_millis(10));
    }
    assert_eq!(
        ep.closed,
        Some(true),
        "no close_notify\n{}",
        client.transcript()
    );
    let mut ep = accept(second).unwrap_or_else(|e| panic!("{e}\n{}", client.transcript()));
    assert_handshake(&mut ep, &client);
    assert_ours(&ep, case);
    assert!(
        ep.info.as_ref().expect("keys").resumed,
        "not resumed\n{}",
        client.transcript()
    );
    drive_until_peer(&mut ep, &client, b"reused session id\n", IO_TIMEOUT);
    assert!(
        ep.wait_app(b"resuming wolfssl!", IO_TIMEOUT),
        "resumed greeting not received; got {:?}\n{}",
        String::from_utf8_lossy(&ep.app_bytes()),
        client.transcript()
    );
    let reply = payload("resumed", 50);
    ep.send_app(&reply);
    let mut line = reply.clone();
    line.push(b'\n');
    drive_until_peer(&mut ep, &client, &line, IO_TIMEOUT);
    let status = client.wait_exit(IO_TIMEOUT);
    assert!(
        status.is_some_and(|s| s.success()),
        "wolfSSL client exit {status:?}\n{}",
        client.transcript()
    );
}

#[test]
fn our_client_resumes_with_a_wolfssl13_server_ticket() {
    // `server -r`: one resumption allowed. Our client takes the server's NewSessionTicket,
    // closes, and offers it on a new connection.
    let pki = TestPki::shared();
    let dir = TempDir::new("ic-wolfssl13-resume");
    let case = Case13::new(CipherSuite::Tls13Aes128GcmSha256);
    let mut opts = wolfssl_opts(pki, case, true);
    opts.extra.push("-r".to_owned());
    let server = wolfssl_server(&opts, dir.path());
    let config = our_config(pki, case, false);
    let mut ep = UdpEndpoint::client(config.clone(), server.addr());
    assert_handshake(&mut ep, &server);
    let full_identity = ep.info.as_ref().expect("keys").peer_identity.clone();
    let msg = payload("before resumption", 100);
    ep.send_app(&msg);
    assert!(
        ep.wait_app(&msg, IO_TIMEOUT),
        "echo differs\n{}",
        server.transcript()
    );
    let deadline = Instant::now() + IO_TIMEOUT;
    let mut ticket = None;
    while ticket.is_none() && Instant::now() < deadline {
        ep.turn(Duration::from_millis(10));
        ticket = ep.conn.poll_session_ticket();
    }
    let ticket = ticket.unwrap_or_else(|| panic!("no ticket\n{}", server.transcript()));
    ep.conn.close(Instant::now());
    ep.run_for(Duration::from_millis(200));
    let mut ep = UdpEndpoint::client_resuming(config, server.addr(), Some(ticket));
    assert_handshake(&mut ep, &server);
    assert_ours(&ep, case);
    let info = ep.info.as_ref().expect("keys");
    assert!(info.resumed, "not resumed\n{}", server.transcript());
    assert_eq!(info.peer_identity, full_identity);
    let msg = payload("resumed", 300);
    ep.send_app(&msg);
    assert!(
        ep.wait_app(&msg, IO_TIMEOUT),
        "echo differs\n{}",
        server.transcript()
    );
}

// ---------- version negotiation with a DTLS 1.2 peer ----------

fn both_versions(mut config: Config) -> Config {
    config.versions = vec![
        control::ProtocolVersion::Dtls1_3,
        control::ProtocolVersion::Dtls1_2,
    ];
    config.cipher_suites = vec![CipherSuite::EcdheEcdsaAes128GcmSha256];
    config
}

#[test]
fn our_client_offering_both_versions_falls_back_to_a_wolfssl_dtls12_server() {
    let pki = TestPki::shared();
    let dir = TempDir::new("ic-wolfssl13-fallback");
    let mut sopts = WolfsslOpts::new(
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        Some(pki.server_ec.clone()),
        pki.ca.clone(),
    );
    sopts.dtls13 = false;
    let server = wolfssl_server(&sopts, dir.path());
    // One X25519 share: the hello fits a datagram (a DTLS 1.2 server need not reassemble).
    let case = Case13 {
        groups: &[NamedGroup::X25519],
        ..Case13::new(CipherSuite::Tls13Aes128GcmSha256)
    };
    let mut ep = UdpEndpoint::client(both_versions(our_config(pki, case, false)), server.addr());
    assert_handshake(&mut ep, &server);
    assert_eq!(ep.conn.version(), "1.2");
    drive_until_peer(&mut ep, &server, b"SSL version is DTLSv1.2\n", IO_TIMEOUT);
    let msg = payload("fallback", 300);
    ep.send_app(&msg);
    assert!(
        ep.wait_app(&msg, IO_TIMEOUT),
        "echo differs\n{}",
        server.transcript()
    );
}

#[test]
fn our_server_allowing_both_versions_serves_a_wolfssl_dtls12_client() {
    let pki = TestPki::shared();
    let sock = UdpEndpoint::server_socket();
    let addr = sock.local_addr().expect("local addr");
    let copts = WolfsslOpts::new("ECDHE-ECDSA-AES128-GCM-SHA256", None, pki.ca.clone());
    let client = wolfssl_client(&copts, addr);
    let case = Case13::new(CipherSuite::Tls13Aes128GcmSha256);
    let mut ep = match UdpEndpoint::accept_with(
        both_versions(our_config(pki, case, true)),
        AcceptorConfig::default(),
        sock,
        HANDSHAKE_TIMEOUT,
    ) {
        Ok(ep) => ep,
        Err(e) => panic!("{e}\n{}", client.transcript()),
    };
    assert_handshake(&mut ep, &client);
    assert_eq!(ep.conn.version(), "1.2");
    drive_until_peer(&mut ep, &client, b"SSL version is DTLSv1.2\n", IO_TIMEOUT);
    assert!(
        ep.wait_app(WOLFSSL_HELLO, IO_TIMEOUT),
        "greeting not received\n{}",
        client.transcript()
    );
    let reply = payload("our dual server", 100);
    ep.send_app(&reply);
    let mut line = reply.clone();
    line.push(b'\n');
    drive_until_peer(&mut ep, &client, &line, IO_TIMEOUT);
}
