//! In-memory client/server handshakes on a virtual clock (unit level; the big harness
//! with impairment lives in `control/tests`).

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use dataplane::record::{ContentType, DTLS_1_2, Opener, Records, ReplayWindow, Sealer};
use dtls_crypto::pki_types::UnixTime;
use dtls_crypto::test_pki::TestPki;
use dtls_crypto::{CertificateVerifier, PeerVerifier, SeededRng, SigningKey, pem};

use crate::{
    AcceptOutcome, Acceptor, AcceptorConfig, CertifiedKey, CipherSuite, ClientAuth, Config,
    Connection, Event, HandshakeError, PeerIdentity, Psk, RecordKeys, SessionKeys,
};

/// The wall-clock time the in-memory tests hand the engine (2027-01-15), inside the test
/// PKI's validity (1975..4096). The engine reads no clock.
pub(crate) fn test_wall() -> UnixTime {
    UnixTime::since_unix_epoch(Duration::from_secs(1_800_000_000))
}

pub(crate) fn pki() -> &'static TestPki {
    static PKI: OnceLock<TestPki> = OnceLock::new();
    PKI.get_or_init(|| TestPki::generate().expect("test PKI"))
}

pub(crate) fn certified(cert_pem: &str, key_pem: &str) -> Arc<CertifiedKey> {
    Arc::new(CertifiedKey {
        chain: pem::parse_certificates(cert_pem.as_bytes()).expect("cert"),
        key: SigningKey::from_pem_slice(key_pem.as_bytes()).expect("key"),
    })
}

pub(crate) fn verifier() -> PeerVerifier {
    let ca = pem::parse_certificates(pki().ca.cert_pem.as_bytes()).expect("ca");
    PeerVerifier::WebPki(CertificateVerifier::new(&ca).expect("verifier"))
}

pub(crate) fn client_config(suites: &[CipherSuite]) -> Config {
    Config {
        cipher_suites: suites.to_vec(),
        server_name: Some("localhost".into()),
        psks: vec![psk()],
        ..Config::new(verifier())
    }
}

pub(crate) fn server_config(suites: &[CipherSuite], rsa: bool) -> Config {
    let pki = pki();
    let cert = if rsa {
        certified(&pki.server_rsa.cert_pem, &pki.server_rsa.key_pem)
    } else {
        certified(&pki.server.cert_pem, &pki.server.key_pem)
    };
    Config {
        cipher_suites: suites.to_vec(),
        certificate: Some(cert),
        psks: vec![psk()],
        ..Config::new(verifier())
    }
}

fn psk() -> Psk {
    Psk {
        identity: b"client1".to_vec(),
        key: zeroize::Zeroizing::new(vec![0x11; 16]),
    }
}

/// Decides per datagram (`from_client`, bytes) whether it is delivered; may alter it.
pub(crate) type Filter = Box<dyn FnMut(bool, &mut Vec<u8>) -> bool>;

/// A client, an acceptor and (once accepted) a server, wired back to back.
pub(crate) struct Pair {
    pub(crate) now: Instant,
    pub(crate) client: Connection,
    pub(crate) server: Option<Connection>,
    acceptor: Acceptor,
    server_config: Arc<Config>,
    client_addr: SocketAddr,
    pub(crate) client_events: Vec<Event>,
    pub(crate) server_events: Vec<Event>,
    /// Called on every datagram in flight; return `false` to drop it.
    pub(crate) filter: Filter,
    pub(crate) max_datagram: usize,
    pub(crate) datagrams: usize,
    /// The server's CID issuer (handed to the first server engine; later ones draw random
    /// CIDs).
    pub(crate) issuer: Box<dyn crate::CidIssuer + Send>,
    /// The wall-clock time both sides are handed ([`test_wall`] unless a test moves it).
    pub(crate) wall: UnixTime,
}

impl Pair {
    pub(crate) fn new(client: Config, server: Config) -> Self {
        Self::resuming(client, server, None)
    }

    pub(crate) fn resuming(
        client: Config,
        server: Config,
        ticket: Option<crate::SessionTicket>,
    ) -> Self {
        Self::with_acceptor(client, server, ticket, AcceptorConfig::default())
    }

    pub(crate) fn with_acceptor(
        client: Config,
        server: Config,
        ticket: Option<crate::SessionTicket>,
        settings: AcceptorConfig,
    ) -> Self {
        let now = Instant::now();
        let client_addr: SocketAddr = "127.0.0.1:40000".parse().expect("addr");
        let server_addr: SocketAddr = "127.0.0.1:4433".parse().expect("addr");
        let server_config = Arc::new(server);
        let acceptor = Acceptor::new(server_config.clone(), settings, &mut SeededRng::new(1), now)
            .expect("acceptor");
        let client = Connection::client(
            Arc::new(client),
            Box::new(SeededRng::new(2)),
            now,
            server_addr,
            ticket,
        )
        .expect("client");
        Self {
            now,
            client,
            server: None,
            acceptor,
            server_config,
            client_addr,
            client_events: Vec::new(),
            server_events: Vec::new(),
            filter: Box::new(|_, _| true),
            max_datagram: 0,
            datagrams: 0,
            issuer: Box::new(crate::RandomCids),
            wall: test_wall(),
        }
    }

    /// Moves datagrams until both sides are quiet; returns whether anything moved.
    pub(crate) fn exchange(&mut self) -> bool {
        let mut moved = false;
        let mut buf = vec![0u8; 2048];
        loop {
            let mut any = false;
            while let Some(t) = self.client.poll_transmit(self.now, &mut buf) {
                any = true;
                self.datagrams += 1;
                self.max_datagram = self.max_datagram.max(t.len);
                let mut d = buf[..t.len].to_vec();
                if !(self.filter)(true, &mut d) {
                    continue;
                }
                self.deliver_to_server(&d);
            }
            if let Some(server) = self.server.as_mut() {
                while let Some(t) = server.poll_transmit(self.now, &mut buf) {
                    any = true;
                    self.datagrams += 1;
                    self.max_datagram = self.max_datagram.max(t.len);
                    let mut d = buf[..t.len].to_vec();
                    if !(self.filter)(false, &mut d) {
                        continue;
                    }
                    let from = self.client.peer();
                    self.client.handle_datagram(self.now, self.wall, from, &d);
                }
            }
            self.drain_events();
            if !any {
                return moved;
            }
            moved = true;
        }
    }

    fn deliver_to_server(&mut self, d: &[u8]) {
        if let Some(server) = self.server.as_mut() {
            server.handle_datagram(self.now, self.wall, self.client_addr, d);
            return;
        }
        let mut reply = vec![0u8; 2048];
        match self
            .acceptor
            .handle_datagram(self.now, self.client_addr, d, &mut reply)
        {
            AcceptOutcome::Accept(hello) => {
                self.server = Some(
                    Connection::server_with_cids(
                        self.server_config.clone(),
                        Box::new(SeededRng::new(3)),
                        self.now,
                        self.wall,
                        hello,
                        std::mem::replace(&mut self.issuer, Box::new(crate::RandomCids)),
                    )
                    .expect("server"),
                );
            }
            AcceptOutcome::Reply(t) => {
                assert!(t.len <= d.len(), "reply larger than the ClientHello");
                let mut r = reply[..t.len].to_vec();
                if (self.filter)(false, &mut r) {
                    let peer = self.client.peer();
                    self.client.handle_datagram(self.now, self.wall, peer, &r);
                }
            }
            AcceptOutcome::Drop(_) => {}
        }
    }

    fn drain_events(&mut self) {
        while let Some(e) = self.client.poll_event() {
            self.client_events.push(e);
        }
        if let Some(s) = self.server.as_mut() {
            while let Some(e) = s.poll_event() {
                self.server_events.push(e);
            }
        }
    }

    /// Runs until both sides are established or dead, or `limit` of virtual time passed.
    pub(crate) fn run(&mut self, limit: Duration) {
        let end = self.now + limit;
        loop {
            self.exchange();
            let done = |c: &Connection| c.is_established() || c.is_finished();
            if done(&self.client) && self.server.as_ref().is_some_and(done) {
                return;
            }
            let next = [
                self.client.poll_timeout(),
                self.server.as_ref().and_then(|s| s.poll_timeout()),
            ]
            .into_iter()
            .flatten()
            .min();
            let Some(next) = next else { return };
            if next > end {
                return;
            }
            self.now = self.now.max(next);
            self.client.handle_timeout(self.now);
            if let Some(s) = self.server.as_mut() {
                s.handle_timeout(self.now);
            }
        }
    }

    pub(crate) fn keys(events: &mut Vec<Event>) -> Option<Box<SessionKeys>> {
        let i = events
            .iter()
            .position(|e| matches!(e, Event::KeysReady(_)))?;
        match events.remove(i) {
            Event::KeysReady(k) => Some(k),
            _ => None,
        }
    }
}

fn complete(suites: &[CipherSuite], rsa: bool) -> (Box<SessionKeys>, Box<SessionKeys>, Pair) {
    let mut pair = Pair::new(client_config(suites), server_config(suites, rsa));
    pair.run(Duration::from_secs(10));
    let ck = Pair::keys(&mut pair.client_events)
        .unwrap_or_else(|| panic!("client keys: {:?}", pair.client_events));
    let sk = Pair::keys(&mut pair.server_events)
        .unwrap_or_else(|| panic!("server keys: {:?}", pair.server_events));
    (ck, sk, pair)
}

/// Moves one application record from `from` to `to` through real Sealer/Opener.
pub(crate) fn check_app_data(from: SessionKeys, to: SessionKeys) {
    let (_, write) = from.records.into_dtls12().expect("DTLS 1.2 keys");
    let (read, _) = to.records.into_dtls12().expect("DTLS 1.2 keys");
    let mut sealer = Sealer::new(write.epoch, write.key, write.next_sequence).expect("sealer");
    let mut opener = Opener::new(read.epoch, read.key, ReplayWindow::new(to.replay_window));
    let msg = b"hello through the data plane";
    let mut rec = vec![0u8; sealer.record_len(msg.len())];
    let off = sealer.plaintext_offset();
    rec[off..off + msg.len()].copy_from_slice(msg);
    let len = sealer
        .seal(ContentType::ApplicationData, DTLS_1_2, &mut rec, msg.len())
        .expect("seal");
    let opened = opener.open(&mut rec[..len]).expect("open");
    assert_eq!(opened.plaintext, msg);
}

#[test]
fn ecdhe_ecdsa_suites_complete() {
    for suite in [
        CipherSuite::EcdheEcdsaAes128GcmSha256,
        CipherSuite::EcdheEcdsaAes256GcmSha384,
        CipherSuite::EcdheEcdsaChacha20Poly1305Sha256,
    ] {
        let (ck, sk, pair) = complete(&[suite], false);
        assert_eq!(ck.suite, suite);
        assert_eq!(sk.suite, suite);
        assert!(matches!(ck.peer_identity, PeerIdentity::Certificates(ref c) if !c.is_empty()));
        assert_eq!(sk.peer_identity, PeerIdentity::None);
        assert!(pair.max_datagram <= 1200);
        // Exporters agree.
        let (mut a, mut b) = ([0u8; 32], [0u8; 32]);
        ck.exporter
            .export(b"EXPERIMENTAL test", None, &mut a)
            .expect("export");
        sk.exporter
            .export(b"EXPERIMENTAL test", None, &mut b)
            .expect("export");
        assert_eq!(a, b);
        assert!(matches!(
            (&ck.records, &sk.records),
            (RecordKeys::Dtls12 { write: cw, .. }, RecordKeys::Dtls12 { write: sw, .. })
                if cw.next_sequence >= 1 && sw.next_sequence >= 1
        ));
        check_app_data(*ck, *sk);
    }
}

#[test]
fn ecdhe_rsa_suites_complete() {
    for suite in [
        CipherSuite::EcdheRsaAes128GcmSha256,
        CipherSuite::EcdheRsaAes256GcmSha384,
        CipherSuite::EcdheRsaChacha20Poly1305Sha256,
    ] {
        let (ck, sk, _) = complete(&[suite], true);
        assert_eq!(ck.suite, suite);
        check_app_data(*sk, *ck);
    }
}

#[test]
fn psk_suites_complete() {
    for suite in [
        CipherSuite::PskAes128GcmSha256,
        CipherSuite::PskAes256GcmSha384,
        CipherSuite::EcdhePskChacha20Poly1305Sha256,
    ] {
        let (ck, sk, _) = complete(&[suite], false);
        assert_eq!(ck.suite, suite);
        assert_eq!(sk.peer_identity, PeerIdentity::Psk(b"client1".to_vec()));
        check_app_data(*ck, *sk);
    }
}

#[test]
fn client_auth_required_and_verified() {
    let suites = [CipherSuite::EcdheEcdsaAes128GcmSha256];
    let pki = pki();
    let mut client = client_config(&suites);
    client.certificate = Some(certified(&pki.client.cert_pem, &pki.client.key_pem));
    let mut server = server_config(&suites, false);
    server.client_auth = ClientAuth::Required;
    let mut pair = Pair::new(client, server);
    pair.run(Duration::from_secs(10));
    let sk = Pair::keys(&mut pair.server_events).expect("server keys");
    assert!(matches!(sk.peer_identity, PeerIdentity::Certificates(ref c) if c.len() == 1));
    assert!(Pair::keys(&mut pair.client_events).is_some());
}

#[test]
fn client_auth_required_without_certificate_fails() {
    let suites = [CipherSuite::EcdheEcdsaAes128GcmSha256];
    let mut server = server_config(&suites, false);
    server.client_auth = ClientAuth::Required;
    let mut pair = Pair::new(client_config(&suites), server);
    pair.run(Duration::from_secs(10));
    assert!(pair.server_events.iter().any(|e| matches!(
        e,
        Event::HandshakeFailed(HandshakeError::CertificateRequired)
    )));
    assert!(
        pair.client_events
            .iter()
            .any(|e| matches!(e, Event::HandshakeFailed(HandshakeError::PeerAlert { .. })))
    );
}

/// Admits the one end-entity certificate it was made with.
#[derive(Debug)]
struct OnlyCertificate(Vec<u8>);

impl crate::ClientIdentityPolicy for OnlyCertificate {
    fn check(&self, end_entity: &[u8]) -> Result<(), crate::IdentityRefused> {
        if end_entity == self.0.as_slice() {
            Ok(())
        } else {
            Err(crate::IdentityRefused {
                identity: format!("{} bytes", end_entity.len()),
            })
        }
    }
}

#[test]
fn client_identity_rules_admit_or_deny_with_access_denied() {
    let suites = [CipherSuite::EcdheEcdsaAes128GcmSha256];
    let pki = pki();
    let client_der = pem::parse_certificates(pki.client.cert_pem.as_bytes()).expect("cert")[0]
        .as_ref()
        .to_vec();
    for (admitted, policy) in [(true, client_der), (false, vec![0x30])] {
        let mut client = client_config(&suites);
        client.certificate = Some(certified(&pki.client.cert_pem, &pki.client.key_pem));
        let mut server = server_config(&suites, false);
        server.client_auth = ClientAuth::Required;
        server.client_identity = Some(std::sync::Arc::new(OnlyCertificate(policy)));
        let mut pair = Pair::new(client, server);
        pair.run(Duration::from_secs(10));
        if admitted {
            assert!(Pair::keys(&mut pair.server_events).is_some());
            assert!(Pair::keys(&mut pair.client_events).is_some());
            continue;
        }
        assert!(pair.server_events.iter().any(|e| matches!(
            e,
            Event::HandshakeFailed(HandshakeError::AccessDenied { identity }) if identity.ends_with("bytes")
        )));
        assert!(Pair::keys(&mut pair.server_events).is_none());
        assert!(pair.client_events.iter().any(|e| matches!(
            e,
            Event::HandshakeFailed(HandshakeError::PeerAlert {
                description: dtls_proto::AlertDescription::AccessDenied
            })
        )));
    }
}

#[test]
fn no_common_suite_fails_with_alert() {
    let mut pair = Pair::new(
        client_config(&[CipherSuite::EcdheEcdsaAes128GcmSha256]),
        server_config(&[CipherSuite::EcdheEcdsaAes256GcmSha384], false),
    );
    pair.run(Duration::from_secs(10));
    assert!(
        pair.server_events
            .iter()
            .any(|e| matches!(e, Event::HandshakeFailed(HandshakeError::NoCommonSuite)))
    );
    assert!(pair.client_events.iter().any(|e| matches!(
        e,
        Event::HandshakeFailed(HandshakeError::PeerAlert {
            description: dtls_proto::AlertDescription::HandshakeFailure
        })
    )));
}

#[test]
fn small_mtu_fragments_and_completes() {
    let suites = [CipherSuite::EcdheRsaAes128GcmSha256];
    let mut client = client_config(&suites);
    client.mtu = 300;
    let mut server = server_config(&suites, true);
    server.mtu = 300;
    let mut pair = Pair::new(client, server);
    pair.run(Duration::from_secs(10));
    assert!(Pair::keys(&mut pair.client_events).is_some());
    assert!(Pair::keys(&mut pair.server_events).is_some());
    assert!(pair.max_datagram <= 300, "{}", pair.max_datagram);
}

#[test]
fn lost_datagrams_are_retransmitted() {
    // Drop the first two datagrams in each direction after the cookie exchange.
    let suites = [CipherSuite::EcdheEcdsaAes128GcmSha256];
    let mut pair = Pair::new(client_config(&suites), server_config(&suites, false));
    let mut seen = [0usize; 2];
    pair.filter = Box::new(move |from_client, _| {
        let i = usize::from(from_client);
        seen[i] += 1;
        !(2..4).contains(&seen[i])
    });
    pair.run(Duration::from_secs(30));
    assert!(
        Pair::keys(&mut pair.client_events).is_some(),
        "{:?}",
        pair.client_events
    );
    assert!(Pair::keys(&mut pair.server_events).is_some());
    assert!(
        pair.client.stats().timer_retransmits
            + pair
                .server
                .as_ref()
                .map_or(0, |s| s.stats().timer_retransmits)
            > 0
    );
}

#[test]
fn lost_final_flight_is_answered_again() {
    // Drop the server's final flight (CCS + Finished) once: the client retransmits its
    // flight and the server resends its final flight.
    let suites = [CipherSuite::EcdheEcdsaAes128GcmSha256];
    let mut pair = Pair::new(client_config(&suites), server_config(&suites, false));
    let mut dropped = false;
    pair.filter = Box::new(move |from_client, d| {
        let ccs = Records::new(d).any(|r| r.header.content_type() == 20);
        if !from_client && ccs && !dropped {
            dropped = true;
            return false;
        }
        true
    });
    pair.run(Duration::from_secs(30));
    assert!(Pair::keys(&mut pair.client_events).is_some());
    let server = pair.server.as_ref().expect("server");
    assert!(server.is_established());
    assert_eq!(server.stats().peer_triggered_retransmits, 1);
}

#[test]
fn close_notify_reaches_peer() {
    let suites = [CipherSuite::EcdheEcdsaAes128GcmSha256];
    let (_, _, mut pair) = complete(&suites, false);
    let now = pair.now;
    pair.client.close(now);
    pair.run(Duration::from_secs(1));
    assert!(
        pair.server_events
            .iter()
            .any(|e| matches!(e, Event::Closed { by_peer: true }))
    );
    assert!(
        pair.client_events
            .iter()
            .any(|e| matches!(e, Event::Closed { by_peer: false }))
    );
}
