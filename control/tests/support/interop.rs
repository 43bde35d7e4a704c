//! Our side of the interop tests (`interop.rs`, `interop_wolfssl.rs`): engine configurations
//! built from the `openssl`-made [`TestPki`], one test case's parameters, and the steps every
//! interop test takes with our endpoint on a real UDP socket (handshake, suite check, driving
//! while a peer process prints, payloads).

use std::sync::Arc;
use std::time::{Duration, Instant};

use control::crypto::pem::{parse_certificates, parse_private_key};
use control::crypto::{CertificateVerifier, PeerVerifier, SigningKey};
use control::{CertifiedKey, CipherSuite, ClientAuth, Config, PeerIdentity};

use super::fixtures::psk;
use super::peers::{PSK_IDENTITY, PeerProcess};
use super::pki::{CertFiles, TestPki};
use super::udp::UdpEndpoint;

pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
pub const IO_TIMEOUT: Duration = Duration::from_secs(5);

pub const ECDSA_AES128: CipherSuite = CipherSuite::EcdheEcdsaAes128GcmSha256;
pub const RSA_AES256: CipherSuite = CipherSuite::EcdheRsaAes256GcmSha384;
pub const ECDSA_CHACHA: CipherSuite = CipherSuite::EcdheEcdsaChacha20Poly1305Sha256;
pub const PSK_AES128: CipherSuite = CipherSuite::PskAes128GcmSha256;

/// One interop case: the one suite both sides allow, the MTU (1200 unless set), and whether
/// the client authenticates with a certificate.
#[derive(Debug, Clone, Copy)]
pub struct Case {
    pub suite: CipherSuite,
    pub mtu: Option<u16>,
    pub client_cert: bool,
    /// Connection IDs (RFC 9146): the length of the CID we ask for, `None` for off.
    pub cid: Option<u8>,
}

impl Case {
    pub fn suite(suite: CipherSuite) -> Self {
        Self {
            suite,
            mtu: None,
            client_cert: false,
            cid: None,
        }
    }
}

/// The server certificate for `suite`: RSA for ECDHE-RSA, ECDSA otherwise.
pub fn server_cert_for(pki: &TestPki, suite: CipherSuite) -> &CertFiles {
    if suite == RSA_AES256 {
        &pki.server_rsa
    } else {
        &pki.server_ec
    }
}

pub fn certified(files: &CertFiles) -> Arc<CertifiedKey> {
    let chain = parse_certificates(files.cert_pem.as_bytes()).expect("certificate parses");
    let key =
        SigningKey::from_der(&parse_private_key(files.key_pem.as_bytes()).expect("key parses"))
            .expect("key loads");
    Arc::new(CertifiedKey { chain, key })
}

pub fn ca_verifier(pki: &TestPki) -> PeerVerifier {
    let roots = parse_certificates(pki.ca_pem.as_bytes()).expect("CA parses");
    PeerVerifier::WebPki(CertificateVerifier::new(&roots).expect("CA is a trust anchor"))
}

pub fn our_client_config(pki: &TestPki, case: Case) -> Config {
    Config {
        cipher_suites: vec![case.suite],
        server_name: Some("localhost".into()),
        psks: if case.suite.uses_psk() {
            vec![psk()]
        } else {
            Vec::new()
        },
        certificate: case.client_cert.then(|| certified(&pki.client_ec)),
        mtu: case.mtu.map_or(1200, usize::from),
        connection_id: connection_ids(case),
        ..Config::new(ca_verifier(pki))
    }
}

fn connection_ids(case: Case) -> control::ConnectionIds {
    case.cid.map_or(control::ConnectionIds::Off, |len| {
        control::ConnectionIds::On { len }
    })
}

pub fn our_server_config(pki: &TestPki, case: Case) -> Config {
    Config {
        cipher_suites: vec![case.suite],
        certificate: Some(certified(server_cert_for(pki, case.suite))),
        psks: vec![psk()],
        client_auth: if case.client_cert {
            ClientAuth::Required
        } else {
            ClientAuth::None
        },
        mtu: case.mtu.map_or(1200, usize::from),
        connection_id: connection_ids(case),
        ..Config::new(ca_verifier(pki))
    }
}

/// Printable payload of `len` bytes ending in a newline, tagged so each test's is unique.
pub fn payload(tag: &str, len: usize) -> Vec<u8> {
    let mut v: Vec<u8> = tag.as_bytes().to_vec();
    v.push(b' ');
    let mut i = 0u8;
    while v.len() + 1 < len {
        v.push(b'a' + i % 26);
        i = i.wrapping_add(1);
    }
    v.push(b'\n');
    v
}

/// Drives our endpoint until the peer prints `needle` (or the timeout).
pub fn drive_until_peer(
    ep: &mut UdpEndpoint,
    peer: &PeerProcess,
    needle: &[u8],
    timeout: Duration,
) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        let hay = [peer.stdout.bytes(), peer.stderr.bytes()].concat();
        if hay.windows(needle.len()).any(|w| w == needle) {
            return;
        }
        ep.turn(Duration::from_millis(10));
    }
    panic!(
        "peer did not print {:?} within {timeout:?}\n{}",
        String::from_utf8_lossy(needle),
        peer.transcript()
    );
}

pub fn assert_suite(ep: &UdpEndpoint, case: Case) {
    let info = ep.info.as_ref().expect("keys ready");
    assert_eq!(info.suite, case.suite, "negotiated suite");
}

pub fn assert_handshake(ep: &mut UdpEndpoint, peer: &PeerProcess) {
    if let Err(e) = ep.handshake(HANDSHAKE_TIMEOUT) {
        panic!("{e}\n{}", peer.transcript());
    }
}

/// Our client connects to the `server` peer and completes the handshake with the case's suite.
pub fn connect(pki: &TestPki, case: Case, server: &PeerProcess) -> UdpEndpoint {
    let mut ep = UdpEndpoint::client(our_client_config(pki, case), server.addr());
    assert_handshake(&mut ep, server);
    assert_suite(&ep, case);
    ep
}

/// Our server, on `sock`, accepts the `client` peer's cookie-verified ClientHello and completes
/// the handshake.
pub fn accept(
    pki: &TestPki,
    case: Case,
    sock: std::net::UdpSocket,
    client: &PeerProcess,
) -> UdpEndpoint {
    let mut ep = match UdpEndpoint::accept(our_server_config(pki, case), sock, HANDSHAKE_TIMEOUT) {
        Ok(ep) => ep,
        Err(e) => panic!("{e}\n{}", client.transcript()),
    };
    assert_handshake(&mut ep, client);
    ep
}

/// Our server saw the identity the case calls for: the test client certificate, the test PSK
/// identity, or none.
pub fn assert_client_identity(ep: &UdpEndpoint, pki: &TestPki, case: Case) {
    let info = ep.info.as_ref().expect("keys ready");
    match (&info.peer_identity, case.client_cert, case.suite.uses_psk()) {
        (PeerIdentity::Certificates(chain), true, _) => {
            let expected = parse_certificates(pki.client_ec.cert_pem.as_bytes()).expect("parses");
            assert_eq!(chain[0], expected[0], "client certificate");
        }
        (PeerIdentity::Psk(id), false, true) => assert_eq!(id, PSK_IDENTITY.as_bytes()),
        (PeerIdentity::None, false, false) => {}
        (other, _, _) => panic!("unexpected peer identity {other:?} for {case:?}"),
    }
}
