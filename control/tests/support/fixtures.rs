//! Engine configurations for the in-memory tests: certificates from `dtls_crypto`'s test PKI
//! (generated once per test binary), the TESTING.md PSK, and helpers to turn
//! [`SessionKeys`] into the data plane's `Sealer`/`Opener`.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use control::crypto::pem::{parse_certificates, parse_private_key};
use control::crypto::pki_types::UnixTime;
use control::crypto::test_pki::TestPki;
use control::crypto::{CertificateVerifier, PeerVerifier, SigningKey, TicketKeys};
use control::{CertifiedKey, CipherSuite, ClientAuth, Config, Psk, SessionKeys};
use dataplane::record::v13::{HeaderForm, InnerContentType, Opener13, Sealer13};
use dataplane::record::{ContentType, Opener, ReplayWindow, Sealer};

pub const CLIENT_ADDR: &str = "10.0.0.1:40000";
pub const SERVER_ADDR: &str = "10.0.0.2:4433";

pub fn client_addr() -> SocketAddr {
    CLIENT_ADDR.parse().expect("valid address literal")
}

pub fn server_addr() -> SocketAddr {
    SERVER_ADDR.parse().expect("valid address literal")
}

/// The test PKI of this binary.
pub fn pki() -> &'static TestPki {
    static PKI: OnceLock<TestPki> = OnceLock::new();
    PKI.get_or_init(|| TestPki::generate().expect("test PKI generation"))
}

pub fn certified_key(cert_pem: &str, key_pem: &str) -> Arc<CertifiedKey> {
    let chain = parse_certificates(cert_pem.as_bytes()).expect("test cert parses");
    let key =
        SigningKey::from_der(&parse_private_key(key_pem.as_bytes()).expect("test key parses"))
            .expect("test key loads");
    Arc::new(CertifiedKey { chain, key })
}

pub fn server_ec_key() -> Arc<CertifiedKey> {
    static K: OnceLock<Arc<CertifiedKey>> = OnceLock::new();
    K.get_or_init(|| certified_key(&pki().server.cert_pem, &pki().server.key_pem))
        .clone()
}

pub fn server_rsa_key() -> Arc<CertifiedKey> {
    static K: OnceLock<Arc<CertifiedKey>> = OnceLock::new();
    K.get_or_init(|| certified_key(&pki().server_rsa.cert_pem, &pki().server_rsa.key_pem))
        .clone()
}

pub fn client_ec_key() -> Arc<CertifiedKey> {
    static K: OnceLock<Arc<CertifiedKey>> = OnceLock::new();
    K.get_or_init(|| certified_key(&pki().client.cert_pem, &pki().client.key_pem))
        .clone()
}

/// A WebPKI verifier trusting the test CA.
pub fn ca_verifier() -> PeerVerifier {
    let roots = parse_certificates(pki().ca.cert_pem.as_bytes()).expect("CA parses");
    PeerVerifier::WebPki(CertificateVerifier::new(&roots).expect("CA is a trust anchor"))
}

pub const PSK_IDENTITY: &[u8] = b"client1";
pub const PSK_KEY: [u8; 16] = [
    0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff,
];

pub fn psk() -> Psk {
    Psk {
        identity: PSK_IDENTITY.to_vec(),
        key: zeroize::Zeroizing::new(PSK_KEY.to_vec()),
    }
}

/// A client verifying the server against the test CA, offering `suites`.
pub fn client_config(suites: &[CipherSuite]) -> Config {
    Config {
        cipher_suites: suites.to_vec(),
        server_name: Some("localhost".into()),
        psks: if suites.iter().any(|s| s.uses_psk()) {
            vec![psk()]
        } else {
            Vec::new()
        },
        ..Config::new(ca_verifier())
    }
}

/// A server with the ECDSA (or, for ECDHE_RSA suites, RSA) test certificate and the PSK.
pub fn server_config(suites: &[CipherSuite]) -> Config {
    let rsa = suites
        .iter()
        .any(|s| s.key_exchange() == Some(control::KeyExchange::EcdheRsa));
    Config {
        cipher_suites: suites.to_vec(),
        certificate: Some(if rsa {
            server_rsa_key()
        } else {
            server_ec_key()
        }),
        psks: vec![psk()],
        client_auth: ClientAuth::None,
        // As `dtlsd serve` ships: one copy per timer firing toward the client (the client
        // sends two); the loss sweeps hold their goals with it (docs/security.md).
        retransmit: control::RetransmitConfig {
            copies: 1,
            ..control::RetransmitConfig::default()
        },
        ..Config::new(ca_verifier())
    }
}

/// A DTLS 1.3-only server with the EC certificate, verifying clients against the test CA.
pub fn dtls13_server_config() -> Config {
    Config {
        certificate: Some(server_ec_key()),
        ..Config::new(ca_verifier()).dtls13_only()
    }
}

/// The wall-clock time at which the in-memory tests start (2027-01-15), inside the test
/// PKI's validity (1975..4096). The engine reads no clock: tests hand it this (or this plus
/// the virtual time elapsed).
pub fn test_wall() -> UnixTime {
    UnixTime::since_unix_epoch(Duration::from_secs(1_800_000_000))
}

/// Server ticket keys (for resumption tests), created at [`test_wall`].
pub fn ticket_keys(seed: u64) -> Arc<Mutex<TicketKeys>> {
    let mut rng = control::crypto::SeededRng::new(seed);
    Arc::new(Mutex::new(
        TicketKeys::new(
            &mut rng,
            test_wall(),
            Duration::from_secs(3600),
            Duration::from_secs(7200),
        )
        .expect("ticket keys"),
    ))
}

/// The data plane side of one endpoint after KeysReady, built exactly as a shard would.
#[derive(Debug)]
pub struct DataKeys {
    pub suite: CipherSuite,
    pub sealer: DataSealer,
    pub opener: DataOpener,
    /// Length of our connection ID in the peer's records (0: none; RFC 9146).
    pub local_cid_len: usize,
}

/// The write side: plain records, or tls12_cid records with the peer's CID (RFC 9146).
#[derive(Debug)]
pub enum DataSealer {
    Plain(Sealer),
    Cid(Box<dataplane::record::CidSealer>),
}

/// The read side: plain records, or tls12_cid records with our CID (RFC 9146).
#[derive(Debug)]
pub enum DataOpener {
    Plain(Opener),
    Cid(Box<dataplane::record::CidOpener>),
}

/// Everything of [`SessionKeys`] except the record keys (moved into [`DataKeys`]).
#[derive(Debug)]
pub struct SessionInfo {
    pub peer: SocketAddr,
    pub suite: CipherSuite,
    pub write_next_sequence: u64,
    pub replay_window: usize,
    pub peer_identity: control::PeerIdentity,
    pub alpn: Option<Vec<u8>>,
    pub resumed: bool,
    pub exporter: control::Exporter,
    pub ticket: Option<control::SessionTicket>,
    pub at: Instant,
    /// Our connection ID and the peer's (RFC 9146), when negotiated.
    pub local_cid: Option<Vec<u8>>,
    pub peer_cid: Option<Vec<u8>>,
}

/// The DTLS 1.3 data plane of one session: epoch-3 `Sealer13`/`Opener13`.
#[derive(Debug)]
pub struct DataKeys13 {
    pub suite: CipherSuite,
    pub sealer: Sealer13,
    pub opener: Opener13,
    /// The previous read epoch after a KeyUpdate, kept for records still in flight
    /// (RFC 9147 §8).
    pub previous: Option<Opener13>,
    /// The peer's connection ID, in the unified header of our records (empty: none).
    pub peer_cid: Vec<u8>,
    /// Our connection ID, in the peer's records to us (empty: none; RFC 9147 §9).
    pub local_cid: Vec<u8>,
    /// Application-data records that opened and carried `local_cid` (with one).
    pub cid_records_in: usize,
}

impl DataKeys13 {
    /// One application-data record carrying `data` (unified header, 16-bit sequence
    /// number, length present).
    pub fn seal(&mut self, data: &[u8]) -> Vec<u8> {
        let form = if self.peer_cid.is_empty() {
            HeaderForm::default()
        } else {
            HeaderForm::with_cid(&self.peer_cid)
        };
        let mut rec = vec![0u8; self.sealer.record_len(&form, data.len(), 0)];
        let off = self.sealer.plaintext_offset(&form);
        rec[off..off + data.len()].copy_from_slice(data);
        let n = self
            .sealer
            .seal(
                InnerContentType::ApplicationData,
                &form,
                &mut rec,
                data.len(),
                0,
            )
            .expect("seal record");
        rec.truncate(n);
        rec
    }

    /// Opens one protected record of the application epoch: `Some` with its plaintext
    /// when it is application data; `None` for other content (the engine's) or records
    /// that do not open.
    pub fn open(&mut self, record: &[u8]) -> Option<Vec<u8>> {
        let cid_len = self.local_cid.len();
        let with_our_cid = !self.local_cid.is_empty()
            && record.first().is_some_and(|b| b & 0x10 != 0)
            && record.get(1..1 + cid_len) == Some(&self.local_cid[..]);
        for opener in std::iter::once(&mut self.opener).chain(self.previous.as_mut()) {
            let mut buf = record.to_vec();
            if let Ok(opened) = opener.open(&mut buf, cid_len) {
                let app = opened.content_type == InnerContentType::ApplicationData;
                if app && with_our_cid {
                    self.cid_records_in += 1;
                }
                return app.then(|| opened.plaintext.to_vec());
            }
        }
        None
    }

    /// The peer moved to a new read epoch: the current one is kept as the previous.
    pub fn update_read(&mut self, opener: Opener13) {
        self.previous = Some(std::mem::replace(&mut self.opener, opener));
    }
}

/// Splits a DTLS 1.3 KeysReady into the data plane's `Sealer13`/`Opener13` and the rest.
pub fn install_keys13(keys: SessionKeys, at: Instant) -> (DataKeys13, SessionInfo) {
    let SessionKeys {
        peer,
        suite,
        records,
        replay_window,
        peer_identity,
        alpn,
        resumed,
        exporter,
        ticket,
        local_cid,
        peer_cid,
        ..
    } = keys;
    let (read, write) = records.into_dtls13().expect("DTLS 1.3 keys");
    assert_eq!(read.epoch, 3, "DTLS 1.3 application data starts at epoch 3");
    let write_next_sequence = write.next_sequence;
    let sealer = Sealer13::new(write.epoch, write.keys).with_next_sequence(write.next_sequence);
    let opener = Opener13::new(
        read.epoch,
        read.keys,
        ReplayWindow::new(replay_window.clamp(64, 4096)),
    );
    (
        DataKeys13 {
            suite,
            sealer,
            opener,
            previous: None,
            peer_cid: peer_cid.clone().unwrap_or_default(),
            local_cid: local_cid.clone().unwrap_or_default(),
            cid_records_in: 0,
        },
        SessionInfo {
            peer,
            suite,
            write_next_sequence,
            replay_window,
            peer_identity,
            alpn,
            resumed,
            exporter,
            ticket,
            at,
            local_cid,
            peer_cid,
        },
    )
}

/// Splits KeysReady into the shard's Sealer/Opener and the rest.
pub fn install_keys(keys: SessionKeys, at: Instant) -> (DataKeys, SessionInfo) {
    let SessionKeys {
        peer,
        suite,
        records,
        replay_window,
        peer_identity,
        alpn,
        resumed,
        exporter,
        ticket,
        local_cid,
        peer_cid,
        ..
    } = keys;
    let (read, write) = records.into_dtls12().expect("DTLS 1.2 keys");
    assert_eq!(read.epoch, 1, "DTLS 1.2 application data is epoch 1");
    assert_eq!(write.epoch, 1, "DTLS 1.2 application data is epoch 1");
    let write_next_sequence = write.next_sequence;
    let sealer = match peer_cid.as_ref().filter(|c| !c.is_empty()) {
        Some(cid) => DataSealer::Cid(Box::new(
            dataplane::record::CidSealer::new(write.epoch, write.key, write.next_sequence, cid)
                .expect("CID sealer from KeysReady"),
        )),
        None => DataSealer::Plain(
            Sealer::new(write.epoch, write.key, write.next_sequence)
                .expect("sealer from KeysReady"),
        ),
    };
    let window = ReplayWindow::new(replay_window.clamp(64, 4096));
    let local_cid_len = local_cid.as_ref().map_or(0, Vec::len);
    let opener = match local_cid.as_ref().filter(|c| !c.is_empty()) {
        Some(cid) => DataOpener::Cid(Box::new(
            dataplane::record::CidOpener::new(read.epoch, read.key, window, cid)
                .expect("CID opener from KeysReady"),
        )),
        None => DataOpener::Plain(Opener::new(read.epoch, read.key, window)),
    };
    (
        DataKeys {
            suite,
            sealer,
            opener,
            local_cid_len,
        },
        SessionInfo {
            peer,
            suite,
            write_next_sequence,
            replay_window,
            peer_identity,
            alpn,
            resumed,
            exporter,
            ticket,
            at,
            local_cid,
            peer_cid,
        },
    )
}

impl DataKeys {
    /// One application-data record carrying `data`.
    pub fn seal(&mut self, data: &[u8]) -> Vec<u8> {
        self.seal_as(ContentType::ApplicationData, data)
    }

    /// One epoch-1 record of any content type (to forge post-handshake messages with the
    /// real keys, e.g. a renegotiation ClientHello).
    pub fn seal_as(&mut self, ct: ContentType, data: &[u8]) -> Vec<u8> {
        let sealer = match &mut self.sealer {
            DataSealer::Plain(sealer) => sealer,
            DataSealer::Cid(sealer) => {
                let mut rec = vec![0u8; sealer.record_len(data.len(), 0)];
                let off = sealer.plaintext_offset();
                rec[off..off + data.len()].copy_from_slice(data);
                let n = sealer
                    .seal(ct, &mut rec, data.len(), 0)
                    .expect("seal record");
                rec.truncate(n);
                return rec;
            }
        };
        let off = sealer.plaintext_offset();
        let mut rec = vec![0u8; off + data.len() + sealer.overhead()];
        rec[off..off + data.len()].copy_from_slice(data);
        let n = sealer
            .seal(ct, dataplane::record::DTLS_1_2, &mut rec, data.len())
            .expect("seal record");
        rec.truncate(n);
        rec
    }

    /// Opens one record of any content type.
    pub fn open_any(&mut self, record: &[u8]) -> Option<(ContentType, Vec<u8>)> {
        let mut buf = record.to_vec();
        match &mut self.opener {
            DataOpener::Plain(opener) => {
                let opened = opener.open(&mut buf).ok()?;
                Some((opened.content_type, opened.plaintext.to_vec()))
            }
            DataOpener::Cid(opener) => {
                let opened = opener.open(&mut buf).ok()?;
                Some((opened.content_type, opened.plaintext.to_vec()))
            }
        }
    }

    /// Opens one application-data record; `None` if it does not authenticate.
    pub fn open(&mut self, record: &[u8]) -> Option<Vec<u8>> {
        let (content_type, plaintext) = self.open_any(record)?;
        (content_type == ContentType::ApplicationData).then_some(plaintext)
    }
}
