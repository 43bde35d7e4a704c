//! DTLS 1.2 interop over real UDP on loopback against wolfSSL 5.9.4's example programs
//! (TESTING.md "DTLS 1.3 and connection-ID peer"), a third implementation beside OpenSSL and
//! GnuTLS and the one the DTLS 1.3 and connection-ID tests will use: our client against
//! `server -u -v 3 -e` (echoes every record), our server against `client -u -v 3` (sends
//! `hello wolfssl!`, prints the reply), for ECDHE-ECDSA-AES128-GCM, ECDHE-ECDSA-CHACHA20 and
//! ECDHE-RSA-AES256-GCM, once at MTU 300, once with a client certificate, and once with RFC 9146
//! connection IDs both ways (`--cid` on wolfSSL's side; both CIDs checked, and application data
//! crosses in tls12_cid records sealed and opened with the negotiated CIDs). Each test checks the
//! suite on both sides (ours from KeysReady, wolfSSL's from its `SSL cipher suite is` line)
//! and application data byte for byte in both directions.
//!
//! The programs come from `scripts/wolfssl-peer.sh` (built once into a cache; wolfSSL is GPL
//! and is never linked into our crates), named by `DTLS_WOLFSSL_CLIENT`/`DTLS_WOLFSSL_SERVER`,
//! which `scripts/test.sh` exports. Without them the tests fail, naming the script.

mod support;

use std::time::{Duration, Instant};

use control::CipherSuite;
use support::interop::*;
use support::peers::*;
use support::pki::{TempDir, TestPki};
use support::udp::UdpEndpoint;

/// What the wolfSSL example client sends after its handshake (`kHelloMsg`, no newline).
const WOLFSSL_HELLO: &[u8] = b"hello wolfssl!";

/// The cipher name wolfSSL's `-l` takes (OpenSSL style).
fn wolfssl_cipher(suite: CipherSuite) -> &'static str {
    match suite {
        ECDSA_AES128 => "ECDHE-ECDSA-AES128-GCM-SHA256",
        RSA_AES256 => "ECDHE-RSA-AES256-GCM-SHA384",
        ECDSA_CHACHA => "ECDHE-ECDSA-CHACHA20-POLY1305",
        other => panic!("no wolfSSL interop case for {other:?}"),
    }
}

/// What the examples print after the handshake: `SSL cipher suite is <IANA name>`.
fn wolfssl_suite_line(suite: CipherSuite) -> String {
    let iana = match suite {
        ECDSA_AES128 => "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
        RSA_AES256 => "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
        ECDSA_CHACHA => "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
        other => panic!("no wolfSSL interop case for {other:?}"),
    };
    format!("SSL cipher suite is {iana}\n")
}

/// The CID wolfSSL asks for (`--cid`): its records to us carry ours, ours to it this one.
const WOLFSSL_CID: &str = "wolfcid1";

/// With connection IDs on, both sides' CIDs were negotiated (RFC 9146): ours of the
/// configured length, wolfSSL's the one given with `--cid`.
fn assert_cids(ep: &UdpEndpoint, case: Case, peer: &PeerProcess) {
    let info = ep.info.as_ref().expect("keys ready");
    match case.cid {
        Some(len) => {
            assert_eq!(
                info.local_cid.as_ref().map(Vec::len),
                Some(usize::from(len)),
                "{}",
                peer.transcript()
            );
            assert_eq!(
                info.peer_cid.as_deref(),
                Some(WOLFSSL_CID.as_bytes()),
                "{}",
                peer.transcript()
            );
        }
        None => assert_eq!((&info.local_cid, &info.peer_cid), (&None, &None)),
    }
}

/// The peer printed `SSL version is DTLSv1.2` and the case's suite.
fn drive_until_wolfssl_reports(ep: &mut UdpEndpoint, peer: &PeerProcess, case: Case) {
    drive_until_peer(ep, peer, b"SSL version is DTLSv1.2\n", IO_TIMEOUT);
    drive_until_peer(
        ep,
        peer,
        wolfssl_suite_line(case.suite).as_bytes(),
        IO_TIMEOUT,
    );
}

// ---------- our client vs wolfSSL's example server (echo) ----------

fn client_vs_wolfssl(case: Case) {
    let pki = TestPki::shared();
    let dir = TempDir::new("ic-wolfssl");
    let mut sopts = WolfsslOpts::new(
        wolfssl_cipher(case.suite),
        Some(server_cert_for(pki, case.suite).clone()),
        pki.ca.clone(),
    );
    sopts.mtu = case.mtu;
    sopts.require_client_cert = case.client_cert;
    if case.cid.is_some() {
        sopts.extra.extend(["--cid".into(), WOLFSSL_CID.into()]);
    }
    let server = wolfssl_server(&sopts, dir.path());
    let mut ep = connect(pki, case, &server);
    drive_until_wolfssl_reports(&mut ep, &server, case);
    assert_cids(&ep, case, &server);
    if let Some(mtu) = case.mtu {
        // wolfSSL's flight (484 B in one datagram without `-u MTU`) came in pieces that fit.
        assert!(
            ep.largest_datagram_in <= usize::from(mtu),
            "wolfSSL sent a {} B datagram at MTU {mtu}",
            ep.largest_datagram_in
        );
    }
    // `-e` writes back each record it reads: what we send must come back byte for byte,
    // one record at a time (sizes up to what one record holds at the case's MTU).
    let sizes: &[usize] = if case.mtu.is_some() {
        &[16, 90, 200]
    } else {
        &[16, 90, 600, 1100]
    };
    for (i, &len) in sizes.iter().enumerate() {
        let msg = &payload(&format!("echo {i}"), len)[..];
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
    assert!(ep.failed.is_none());
    assert!(ep.alerts.is_empty(), "alerts {:?}", ep.alerts);
}

#[test]
fn our_client_vs_wolfssl_ecdhe_ecdsa_aes128_gcm() {
    client_vs_wolfssl(Case::suite(ECDSA_AES128));
}

#[test]
fn our_client_vs_wolfssl_ecdhe_ecdsa_chacha20() {
    client_vs_wolfssl(Case::suite(ECDSA_CHACHA));
}

#[test]
fn our_client_vs_wolfssl_ecdhe_rsa_aes256_gcm() {
    client_vs_wolfssl(Case::suite(RSA_AES256));
}

#[test]
fn our_client_vs_wolfssl_mtu_300_fragments_the_certificate_flight() {
    client_vs_wolfssl(Case {
        mtu: Some(300),
        ..Case::suite(ECDSA_AES128)
    });
}

#[test]
fn our_client_vs_wolfssl_with_connection_ids() {
    client_vs_wolfssl(Case {
        cid: Some(6),
        ..Case::suite(ECDSA_AES128)
    });
}

#[test]
fn our_client_vs_wolfssl_with_client_certificate() {
    client_vs_wolfssl(Case {
        client_cert: true,
        ..Case::suite(ECDSA_AES128)
    });
}

// ---------- our server vs wolfSSL's example client ----------

fn server_vs_wolfssl(case: Case) {
    let pki = TestPki::shared();
    let sock = UdpEndpoint::server_socket();
    let addr = sock.local_addr().expect("local addr");
    let mut copts = WolfsslOpts::new(
        wolfssl_cipher(case.suite),
        case.client_cert.then(|| pki.client_ec.clone()),
        pki.ca.clone(),
    );
    copts.mtu = case.mtu;
    if case.cid.is_some() {
        copts.extra.extend(["--cid".into(), WOLFSSL_CID.into()]);
    }
    let mut client = wolfssl_client(&copts, addr);
    let mut ep = accept(pki, case, sock, &client);
    assert_suite(&ep, case);
    assert_cids(&ep, case, &client);
    assert_client_identity(&ep, pki, case);
    drive_until_wolfssl_reports(&mut ep, &client, case);
    // Client → server: its fixed greeting, exactly once before we answer (it resends only
    // after 2 s without a reply).
    assert!(
        ep.wait_app(WOLFSSL_HELLO, IO_TIMEOUT),
        "greeting not received; got {:?}\n{}",
        String::from_utf8_lossy(&ep.app_bytes()),
        client.transcript()
    );
    assert_eq!(ep.app_bytes(), WOLFSSL_HELLO, "application data differs");
    // Server → client: it prints the first record it reads (up to 255 bytes) on its own line.
    let reply = payload(&format!("our server {:?} {:?}", case.suite, case.mtu), 200);
    ep.send_app(&reply);
    let mut line = reply.clone();
    line.push(b'\n');
    drive_until_peer(&mut ep, &client, &line, IO_TIMEOUT);
    // Then it sends close_notify and exits 0.
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

#[test]
fn our_server_vs_wolfssl_ecdhe_ecdsa_aes128_gcm() {
    server_vs_wolfssl(Case::suite(ECDSA_AES128));
}

#[test]
fn our_server_vs_wolfssl_ecdhe_ecdsa_chacha20() {
    server_vs_wolfssl(Case::suite(ECDSA_CHACHA));
}

#[test]
fn our_server_vs_wolfssl_ecdhe_rsa_aes256_gcm() {
    server_vs_wolfssl(Case::suite(RSA_AES256));
}

#[test]
fn our_server_vs_wolfssl_mtu_300_fragments_the_certificate_flight() {
    server_vs_wolfssl(Case {
        mtu: Some(300),
        ..Case::suite(ECDSA_AES128)
    });
}

#[test]
fn our_server_vs_wolfssl_with_connection_ids() {
    server_vs_wolfssl(Case {
        cid: Some(8),
        ..Case::suite(ECDSA_CHACHA)
    });
}

#[test]
fn our_server_vs_wolfssl_with_client_certificate() {
    server_vs_wolfssl(Case {
        client_cert: true,
        ..Case::suite(ECDSA_AES128)
    });
}
