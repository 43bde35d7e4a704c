//! Interop over real UDP on loopback against independent implementations (TESTING.md
//! "Interop peers"): our client against `openssl s_server -dtls1_2 -listen` and
//! `gnutls-serv --udp --echo`, our server against `openssl s_client -dtls1_2` and
//! `gnutls-cli --udp`, for ECDHE-ECDSA-AES128-GCM, ECDHE-RSA-AES256-GCM, ECDHE-ECDSA-CHACHA20
//! and PSK-AES128-GCM, once at MTU 300 (certificate flight fragmented both ways), once with
//! client certificates. Each test checks the suite on both sides (ours from KeysReady, the
//! peer's from its output), application data byte for byte in both directions, and, against
//! OpenSSL, the RFC 5705 exporter against `-keymatexport`.
//!
//! Certificates come from the `openssl` command line (an implementation independent of ours).
//! A missing `openssl`/`gnutls-*` fails the test: install them with
//! `apt-get install -y openssl gnutls-bin`.

mod support;

use std::time::{Duration, Instant};

use control::CipherSuite;
use support::interop::*;
use support::peers::*;
use support::pki::{CertFiles, TempDir, TestPki};
use support::udp::UdpEndpoint;

const EXPORT_LABEL: &str = "EXPORTER-h5-interop";

fn openssl_name(suite: CipherSuite) -> &'static str {
    match suite {
        ECDSA_AES128 => "ECDHE-ECDSA-AES128-GCM-SHA256",
        RSA_AES256 => "ECDHE-RSA-AES256-GCM-SHA384",
        ECDSA_CHACHA => "ECDHE-ECDSA-CHACHA20-POLY1305",
        PSK_AES128 => "PSK-AES128-GCM-SHA256",
        other => panic!("no interop case for {other:?}"),
    }
}

fn gnutls_name(suite: CipherSuite) -> &'static str {
    match suite {
        ECDSA_AES128 => "GNUTLS_ECDHE_ECDSA_AES_128_GCM_SHA256",
        RSA_AES256 => "GNUTLS_ECDHE_RSA_AES_256_GCM_SHA384",
        ECDSA_CHACHA => "GNUTLS_ECDHE_ECDSA_CHACHA20_POLY1305",
        PSK_AES128 => "GNUTLS_PSK_AES_128_GCM_SHA256",
        other => panic!("no interop case for {other:?}"),
    }
}

fn gnutls_priority_for(suite: CipherSuite) -> String {
    match suite {
        ECDSA_AES128 => format!("{}:-KX-ALL:+ECDHE-ECDSA", gnutls_priority("AES-128-GCM")),
        RSA_AES256 => format!("{}:-KX-ALL:+ECDHE-RSA", gnutls_priority("AES-256-GCM")),
        ECDSA_CHACHA => format!(
            "{}:-KX-ALL:+ECDHE-ECDSA",
            gnutls_priority("CHACHA20-POLY1305")
        ),
        PSK_AES128 => gnutls_psk_priority("AES-128-GCM"),
        other => panic!("no interop case for {other:?}"),
    }
}

/// What gnutls-cli prints in its `- Description:` line for the cipher.
fn gnutls_description_cipher(suite: CipherSuite) -> &'static str {
    match suite {
        ECDSA_AES128 => "(AES-128-GCM)",
        RSA_AES256 => "(AES-256-GCM)",
        ECDSA_CHACHA => "(CHACHA20-POLY1305)",
        PSK_AES128 => "(PSK)-(AES-128-GCM)",
        other => panic!("no interop case for {other:?}"),
    }
}

/// Application data both ways with a peer that prints what it receives and sends what is
/// written to its stdin (s_server, s_client, gnutls-cli): `out` must show up in the peer's
/// output, `back` must arrive at our endpoint byte for byte.
fn exchange_app_data(ep: &mut UdpEndpoint, peer: &mut PeerProcess, out: &[u8], back: &[u8]) {
    ep.send_app(out);
    drive_until_peer(ep, peer, out, IO_TIMEOUT);
    peer.write_stdin(back);
    assert!(
        ep.wait_app(back, IO_TIMEOUT),
        "reply not received; got {:?}\n{}",
        String::from_utf8_lossy(&ep.app_bytes()),
        peer.transcript()
    );
    assert_eq!(ep.app_bytes(), back, "application data differs");
}

/// RFC 5705 exporter equals OpenSSL's -keymatexport.
fn assert_exporter_matches_openssl(ep: &UdpEndpoint, peer: &PeerProcess) {
    let theirs = peer
        .openssl_keying_material()
        .unwrap_or_else(|| panic!("no keying material\n{}", peer.transcript()));
    assert_eq!(
        ep.export(EXPORT_LABEL, 32),
        theirs,
        "exporter differs from OpenSSL's"
    );
}

fn openssl_opts(pki: &TestPki, case: Case, own: Option<CertFiles>) -> OpensslOpts {
    let auth = if case.suite.uses_psk() {
        OpensslAuth::Psk
    } else {
        OpensslAuth::Cert {
            own,
            ca: pki.ca.clone(),
        }
    };
    let mut o = OpensslOpts::new(openssl_name(case.suite), auth);
    o.mtu = case.mtu;
    o.keymat = Some((EXPORT_LABEL.into(), 32));
    o
}

// ---------- our client vs openssl s_server ----------

fn client_vs_openssl(case: Case) {
    let pki = TestPki::shared();
    let dir = TempDir::new("ic-openssl");
    let own = (!case.suite.uses_psk()).then(|| server_cert_for(pki, case.suite).clone());
    let mut sopts = openssl_opts(pki, case, own);
    sopts.require_client_cert = case.client_cert;
    let mut server = openssl_s_server(&sopts, dir.path());
    let mut ep = connect(pki, case, &server);
    drive_until_peer(
        &mut ep,
        &server,
        format!("CIPHER is {}", openssl_name(case.suite)).as_bytes(),
        IO_TIMEOUT,
    );
    if case.client_cert {
        // s_server with -Verify prints the verified client chain.
        drive_until_peer(&mut ep, &server, b"client1", IO_TIMEOUT);
    }
    // Client → server: s_server prints what it receives; server → client: s_server sends
    // what is written to its stdin.
    exchange_app_data(
        &mut ep,
        &mut server,
        &payload(&format!("our client {:?} {:?}", case.suite, case.mtu), 600),
        &payload("s_server replies", 400),
    );
    assert_exporter_matches_openssl(&ep, &server);
    assert!(ep.failed.is_none());
}

#[test]
fn our_client_vs_openssl_ecdhe_ecdsa_aes128_gcm() {
    client_vs_openssl(Case::suite(ECDSA_AES128));
}

#[test]
fn our_client_vs_openssl_ecdhe_rsa_aes256_gcm() {
    client_vs_openssl(Case::suite(RSA_AES256));
}

#[test]
fn our_client_vs_openssl_ecdhe_ecdsa_chacha20() {
    client_vs_openssl(Case::suite(ECDSA_CHACHA));
}

#[test]
fn our_client_vs_openssl_psk_aes128_gcm() {
    client_vs_openssl(Case::suite(PSK_AES128));
}

#[test]
fn our_client_vs_openssl_mtu_300_fragments_the_certificate_flight() {
    client_vs_openssl(Case {
        mtu: Some(300),
        ..Case::suite(ECDSA_AES128)
    });
}

#[test]
fn our_client_vs_openssl_with_client_certificate() {
    client_vs_openssl(Case {
        client_cert: true,
        ..Case::suite(ECDSA_AES128)
    });
}

// ---------- our client vs gnutls-serv --echo ----------

fn client_vs_gnutls(case: Case) {
    let pki = TestPki::shared();
    let dir = TempDir::new("ic-gnutls");
    let auth = if case.suite.uses_psk() {
        GnutlsAuth::Psk
    } else {
        GnutlsAuth::Cert {
            own: Some(server_cert_for(pki, case.suite).clone()),
            ca: pki.ca.clone(),
        }
    };
    let mut sopts = GnutlsOpts::new(gnutls_priority_for(case.suite), auth);
    sopts.mtu = case.mtu;
    sopts.require_client_cert = case.client_cert;
    sopts.extra = vec!["-d".into(), "4".into()];
    let server = gnutls_serv(&sopts, dir.path());
    let mut ep = connect(pki, case, &server);
    drive_until_peer(
        &mut ep,
        &server,
        format!("Selected cipher suite: {}", gnutls_name(case.suite)).as_bytes(),
        IO_TIMEOUT,
    );
    // The echo server round-trips small payloads (TESTING.md: up to ~100 bytes).
    for i in 0..3 {
        let msg = payload(&format!("echo {i} {:?}", case.suite), 90);
        let before = ep.app_bytes().len();
        ep.send_app(&msg);
        let deadline = Instant::now() + IO_TIMEOUT;
        while ep.app_bytes().len() < before + msg.len() && Instant::now() < deadline {
            ep.turn(Duration::from_millis(10));
        }
        assert_eq!(
            &ep.app_bytes()[before..],
            &msg[..],
            "echo differs\n{}",
            server.transcript()
        );
    }
    if case.client_cert {
        // --require-client-cert: the echo above already proves it accepted a certificate;
        // its debug log shows the CertificateVerify it checked.
        server.expect_output("CERTIFICATE VERIFY (15) was received", IO_TIMEOUT);
        server.expect_output("verify cert vrfy: using ECDSA-SHA256", IO_TIMEOUT);
    }
    assert!(ep.failed.is_none());
}

#[test]
fn our_client_vs_gnutls_ecdhe_ecdsa_aes128_gcm() {
    client_vs_gnutls(Case::suite(ECDSA_AES128));
}

#[test]
fn our_client_vs_gnutls_ecdhe_rsa_aes256_gcm() {
    client_vs_gnutls(Case::suite(RSA_AES256));
}

#[test]
fn our_client_vs_gnutls_ecdhe_ecdsa_chacha20() {
    client_vs_gnutls(Case::suite(ECDSA_CHACHA));
}

#[test]
fn our_client_vs_gnutls_psk_aes128_gcm() {
    client_vs_gnutls(Case::suite(PSK_AES128));
}

#[test]
fn our_client_vs_gnutls_mtu_300() {
    client_vs_gnutls(Case {
        mtu: Some(300),
        ..Case::suite(ECDSA_AES128)
    });
}

#[test]
fn our_client_vs_gnutls_with_client_certificate() {
    client_vs_gnutls(Case {
        client_cert: true,
        ..Case::suite(ECDSA_AES128)
    });
}

// ---------- our server vs openssl s_client ----------

fn server_vs_openssl(case: Case) {
    let pki = TestPki::shared();
    let dir = TempDir::new("is-openssl");
    let sock = UdpEndpoint::server_socket();
    let addr = sock.local_addr().expect("local addr");
    let own = case.client_cert.then(|| pki.client_ec.clone());
    let copts = openssl_opts(pki, case, own);
    let mut client = openssl_s_client(&copts, addr, dir.path());
    let mut ep = accept(pki, case, sock, &client);
    assert_suite(&ep, case);
    assert_client_identity(&ep, pki, case);
    drive_until_peer(
        &mut ep,
        &client,
        format!("Cipher is {}", openssl_name(case.suite)).as_bytes(),
        IO_TIMEOUT,
    );
    if !case.suite.uses_psk() {
        drive_until_peer(&mut ep, &client, b"Verification: OK", IO_TIMEOUT);
    }
    exchange_app_data(
        &mut ep,
        &mut client,
        &payload(&format!("our server {:?} {:?}", case.suite, case.mtu), 600),
        // Lines starting with Q/R/K are s_client commands: this one starts lower-case.
        &payload("s_client replies", 400),
    );
    assert_exporter_matches_openssl(&ep, &client);
    assert!(ep.failed.is_none());
}

#[test]
fn our_server_vs_openssl_ecdhe_ecdsa_aes128_gcm() {
    server_vs_openssl(Case::suite(ECDSA_AES128));
}

#[test]
fn our_server_vs_openssl_ecdhe_rsa_aes256_gcm() {
    server_vs_openssl(Case::suite(RSA_AES256));
}

#[test]
fn our_server_vs_openssl_ecdhe_ecdsa_chacha20() {
    server_vs_openssl(Case::suite(ECDSA_CHACHA));
}

#[test]
fn our_server_vs_openssl_psk_aes128_gcm() {
    server_vs_openssl(Case::suite(PSK_AES128));
}

#[test]
fn our_server_vs_openssl_mtu_300_fragments_the_certificate_flight() {
    server_vs_openssl(Case {
        mtu: Some(300),
        ..Case::suite(ECDSA_AES128)
    });
}

#[test]
fn our_server_vs_openssl_with_client_certificate() {
    server_vs_openssl(Case {
        client_cert: true,
        ..Case::suite(ECDSA_AES128)
    });
}

// ---------- our server vs gnutls-cli ----------

fn server_vs_gnutls(case: Case) {
    let pki = TestPki::shared();
    let dir = TempDir::new("is-gnutls");
    let sock = UdpEndpoint::server_socket();
    let addr = sock.local_addr().expect("local addr");
    let auth = if case.suite.uses_psk() {
        GnutlsAuth::Psk
    } else {
        GnutlsAuth::Cert {
            own: case.client_cert.then(|| pki.client_ec.clone()),
            ca: pki.ca.clone(),
        }
    };
    let mut copts = GnutlsOpts::new(gnutls_priority_for(case.suite), auth);
    copts.mtu = case.mtu;
    let mut client = gnutls_cli(&copts, addr, dir.path());
    let mut ep = accept(pki, case, sock, &client);
    assert_suite(&ep, case);
    assert_client_identity(&ep, pki, case);
    drive_until_peer(&mut ep, &client, b"- Handshake was completed", IO_TIMEOUT);
    drive_until_peer(
        &mut ep,
        &client,
        gnutls_description_cipher(case.suite).as_bytes(),
        IO_TIMEOUT,
    );
    exchange_app_data(
        &mut ep,
        &mut client,
        &payload(&format!("our server {:?} {:?}", case.suite, case.mtu), 300),
        &payload("gnutls-cli replies", 200),
    );
    assert!(ep.failed.is_none());
}

#[test]
fn our_server_vs_gnutls_ecdhe_ecdsa_aes128_gcm() {
    server_vs_gnutls(Case::suite(ECDSA_AES128));
}

#[test]
fn our_server_vs_gnutls_ecdhe_rsa_aes256_gcm() {
    server_vs_gnutls(Case::suite(RSA_AES256));
}

#[test]
fn our_server_vs_gnutls_ecdhe_ecdsa_chacha20() {
    server_vs_gnutls(Case::suite(ECDSA_CHACHA));
}

#[test]
fn our_server_vs_gnutls_psk_aes128_gcm() {
    server_vs_gnutls(Case::suite(PSK_AES128));
}

#[test]
fn our_server_vs_gnutls_mtu_300() {
    server_vs_gnutls(Case {
        mtu: Some(300),
        ..Case::suite(ECDSA_AES128)
    });
}

#[test]
fn our_server_vs_gnutls_with_client_certificate() {
    server_vs_gnutls(Case {
        client_cert: true,
        ..Case::suite(ECDSA_AES128)
    });
}

// ---------- renegotiation refused, against a real peer ----------

/// `R` on s_client's stdin starts a renegotiation (a ClientHello under epoch 1). Our server
/// refuses with a no_renegotiation warning (RFC 5746 §4.2); OpenSSL then reports "no
/// renegotiation" and ends the connection with a fatal alert, which closes our session.
#[test]
fn our_server_refuses_openssl_renegotiation() {
    let pki = TestPki::shared();
    let dir = TempDir::new("is-reneg");
    let case = Case::suite(ECDSA_AES128);
    let sock = UdpEndpoint::server_socket();
    let addr = sock.local_addr().expect("local addr");
    let mut client = openssl_s_client(&openssl_opts(pki, case, None), addr, dir.path());
    let mut ep = accept(pki, case, sock, &client);
    drive_until_peer(&mut ep, &client, b"Verification: OK", IO_TIMEOUT);
    client.write_stdin(b"before renegotiation\n");
    assert!(ep.wait_app(b"before renegotiation\n", IO_TIMEOUT));
    client.write_stdin(b"R\n");
    drive_until_peer(&mut ep, &client, b"RENEGOTIATING", IO_TIMEOUT);
    drive_until_peer(&mut ep, &client, b"no renegotiation", IO_TIMEOUT);
    let deadline = Instant::now() + IO_TIMEOUT;
    while ep.closed.is_none() && Instant::now() < deadline {
        ep.turn(Duration::from_millis(10));
    }
    assert_eq!(
        ep.closed,
        Some(true),
        "session not closed by the peer's alert"
    );
    assert!(ep.failed.is_none());
    assert_eq!(ep.app_bytes(), b"before renegotiation\n");
}
