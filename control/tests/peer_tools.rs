//! Checks the interop process layer itself: the independent peers talk to each other through
//! it (openssl ↔ openssl, gnutls ↔ gnutls, wolfSSL ↔ wolfSSL) with the exact flags the interop
//! tests use. If these fail, an interop failure says nothing about our engine.

mod support;

use std::time::Duration;

use support::peers::*;
use support::pki::{TempDir, TestPki};

#[test]
fn openssl_client_and_server_exchange_data_through_the_process_layer() {
    let pki = TestPki::shared();
    let dir = TempDir::new("tools-openssl");
    let auth_srv = OpensslAuth::Cert {
        own: Some(pki.server_ec.clone()),
        ca: pki.ca.clone(),
    };
    let mut sopts = OpensslOpts::new("ECDHE-ECDSA-AES128-GCM-SHA256", auth_srv);
    sopts.mtu = Some(300);
    sopts.keymat = Some(("EXPORTER-h5-test".into(), 32));
    let mut server = openssl_s_server(&sopts, dir.path());

    let mut copts = OpensslOpts::new(
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        OpensslAuth::Cert {
            own: None,
            ca: pki.ca.clone(),
        },
    );
    copts.mtu = Some(300);
    copts.keymat = Some(("EXPORTER-h5-test".into(), 32));
    let mut client = openssl_s_client(&copts, server.addr(), dir.path());

    client.expect_output("Cipher is ECDHE-ECDSA-AES128-GCM-SHA256", READY_TIMEOUT);
    server.expect_output("CIPHER is ECDHE-ECDSA-AES128-GCM-SHA256", READY_TIMEOUT);
    client.expect_output("Verification: OK", READY_TIMEOUT);

    client.write_stdin(b"ping from s_client\n");
    assert!(
        server.wait_stdout(b"ping from s_client\n", READY_TIMEOUT),
        "{}",
        server.transcript()
    );
    server.write_stdin(b"pong from s_server\n");
    assert!(
        client.wait_stdout(b"pong from s_server\n", READY_TIMEOUT),
        "{}",
        client.transcript()
    );
    let a = client
        .openssl_keying_material()
        .unwrap_or_else(|| panic!("no keying material\n{}", client.transcript()));
    let b = server
        .openssl_keying_material()
        .unwrap_or_else(|| panic!("no keying material\n{}", server.transcript()));
    assert_eq!(a.len(), 32);
    assert_eq!(a, b);

    client.close_stdin();
    assert!(client.wait_exit(Duration::from_secs(5)).is_some());
}

#[test]
fn gnutls_client_and_echo_server_exchange_data_through_the_process_layer() {
    let pki = TestPki::shared();
    let dir = TempDir::new("tools-gnutls");
    let priority = gnutls_priority("AES-128-GCM");
    let sopts = GnutlsOpts::new(
        priority.clone(),
        GnutlsAuth::Cert {
            own: Some(pki.server_ec.clone()),
            ca: pki.ca.clone(),
        },
    );
    let server = gnutls_serv(&sopts, dir.path());
    let copts = GnutlsOpts::new(
        priority,
        GnutlsAuth::Cert {
            own: None,
            ca: pki.ca.clone(),
        },
    );
    let mut client = gnutls_cli(&copts, server.addr(), dir.path());
    client.expect_output("- Handshake was completed", READY_TIMEOUT);
    client.expect_output("(ECDSA-SHA256)-(AES-128-GCM)", READY_TIMEOUT);
    client.write_stdin(b"echo me\n");
    assert!(
        client.wait_stdout(b"echo me", READY_TIMEOUT),
        "{}\n{}",
        client.transcript(),
        server.transcript()
    );
}

#[test]
fn gnutls_psk_client_and_echo_server_exchange_data_through_the_process_layer() {
    let dir = TempDir::new("tools-gnutls-psk");
    let priority = gnutls_psk_priority("AES-128-GCM");
    let server = gnutls_serv(
        &GnutlsOpts::new(priority.clone(), GnutlsAuth::Psk),
        dir.path(),
    );
    let mut client = gnutls_cli(
        &GnutlsOpts::new(priority, GnutlsAuth::Psk),
        server.addr(),
        dir.path(),
    );
    client.expect_output("- Handshake was completed", READY_TIMEOUT);
    client.expect_output(")-(PSK)-(AES-128-GCM)", READY_TIMEOUT);
    client.write_stdin(b"psk echo\n");
    assert!(
        client.wait_stdout(b"psk echo", READY_TIMEOUT),
        "{}\n{}",
        client.transcript(),
        server.transcript()
    );
}

#[test]
fn wolfssl_client_and_echo_server_exchange_data_through_the_process_layer() {
    let pki = TestPki::shared();
    let dir = TempDir::new("tools-wolfssl");
    let cipher = "ECDHE-ECDSA-AES128-GCM-SHA256";
    let mut sopts = WolfsslOpts::new(cipher, Some(pki.server_ec.clone()), pki.ca.clone());
    sopts.mtu = Some(300);
    let server = wolfssl_server(&sopts, dir.path());
    let mut copts = WolfsslOpts::new(cipher, None, pki.ca.clone());
    copts.mtu = Some(300);
    let mut client = wolfssl_client(&copts, server.addr());
    for peer in [&client, &server] {
        peer.expect_output("SSL version is DTLSv1.2\n", READY_TIMEOUT);
        peer.expect_output(
            "SSL cipher suite is TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256\n",
            READY_TIMEOUT,
        );
    }
    // The client prints the echo of its greeting on a line of its own, then exits 0.
    assert!(
        client.wait_stdout(b"\nhello wolfssl!\n", READY_TIMEOUT),
        "{}\n{}",
        client.transcript(),
        server.transcript()
    );
    let status = client.wait_exit(READY_TIMEOUT);
    assert!(
        status.is_some_and(|s| s.success()),
        "client exit {status:?}\n{}",
        client.transcript()
    );
}

/// The cached build has what the DTLS 1.3 and connection-ID tests need. `--cid` takes the
/// connection ID as a string (its bytes, not hex); each side prints the CID it sends, which
/// is the one the other side asked for.
#[test]
fn wolfssl_client_and_server_negotiate_dtls13_with_connection_ids() {
    let pki = TestPki::shared();
    let dir = TempDir::new("tools-wolfssl13");
    let cipher = "TLS13-AES128-GCM-SHA256";
    let mut sopts = WolfsslOpts::new(cipher, Some(pki.server_ec.clone()), pki.ca.clone());
    sopts.dtls13 = true;
    sopts.extra = vec!["--cid".into(), "srv".into()];
    let server = wolfssl_server(&sopts, dir.path());
    let mut copts = WolfsslOpts::new(cipher, None, pki.ca.clone());
    copts.dtls13 = true;
    copts.extra = vec!["--cid".into(), "client-cid".into()];
    let mut client = wolfssl_client(&copts, server.addr());
    for peer in [&client, &server] {
        peer.expect_output("SSL version is DTLSv1.3\n", READY_TIMEOUT);
        peer.expect_output(
            "SSL cipher suite is TLS_AES_128_GCM_SHA256\n",
            READY_TIMEOUT,
        );
        peer.expect_output("CID extension was negotiated\n", READY_TIMEOUT);
    }
    // "srv" and "client-cid" in hex.
    client.expect_output("Sending CID is 737276\n", READY_TIMEOUT);
    server.expect_output("Sending CID is 636c69656e742d636964\n", READY_TIMEOUT);
    assert!(
        client.wait_stdout(b"\nhello wolfssl!\n", READY_TIMEOUT),
        "{}\n{}",
        client.transcript(),
        server.transcript()
    );
    let status = client.wait_exit(READY_TIMEOUT);
    assert!(
        status.is_some_and(|s| s.success()),
        "client exit {status:?}\n{}",
        client.transcript()
    );
}
