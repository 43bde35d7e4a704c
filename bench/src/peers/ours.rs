//! Our stack, measured the way the OpenSSL side is: full handshakes through
//! `control::Connection` (client) and `control::Acceptor` + `Connection` (server) in memory,
//! and 1200 B records through `dataplane::record::{Sealer, Opener}`; plus the bound of the
//! record figure: raw aws-lc-rs AES-128-GCM seal + open of the same plaintext.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use control::crypto::pem::{parse_certificates, parse_private_key};
use control::crypto::pki_types::UnixTime;
use control::crypto::{CertificateVerifier, PeerVerifier, SystemRng, TicketKeys};
use control::{
    AcceptOutcome, Acceptor, AcceptorConfig, CertifiedKey, CipherSuite, Config, Connection, Event,
    NamedGroup, SigningKey,
};
use dataplane::record::{Aead, ContentType, DTLS_1_2, Opener, RecordKey, ReplayWindow, Sealer};

use super::{PeersError, Pki};

fn ours(what: &str, e: impl std::fmt::Display) -> PeersError {
    PeersError::Ours(format!("{what}: {e}"))
}

/// Our client and server configurations and the server's stateless acceptor.
pub(super) struct Ours {
    client: Arc<Config>,
    server: Arc<Config>,
    acceptor: Acceptor,
}

impl std::fmt::Debug for Ours {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ours").finish_non_exhaustive()
    }
}

const CLIENT: SocketAddr = SocketAddr::new(
    std::net::IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 1)),
    40000,
);
const SERVER: SocketAddr = SocketAddr::new(
    std::net::IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 2)),
    4433,
);

impl Ours {
    /// ECDHE-ECDSA-AES128-GCM-SHA256 over X25519, cookie exchange required, WebPKI
    /// verification of the chain and `localhost`, extended master secret, tickets issued,
    /// system RNG (as in production).
    pub(super) fn new(pki: &Pki, mtu: usize) -> Result<Self, PeersError> {
        let chain = parse_certificates(pki.server_cert_pem.as_bytes())
            .map_err(|e| ours("server cert", e))?;
        let key_der =
            parse_private_key(pki.server_key_pem.as_bytes()).map_err(|e| ours("server key", e))?;
        let roots = parse_certificates(pki.ca_cert_pem.as_bytes()).map_err(|e| ours("CA", e))?;
        let verifier = PeerVerifier::WebPki(
            CertificateVerifier::new(&roots).map_err(|e| ours("trust anchor", e))?,
        );
        let mut rng = SystemRng::new();
        let ticket_keys = TicketKeys::new(
            &mut rng,
            UnixTime::now(),
            Duration::from_secs(3600),
            Duration::from_secs(7200),
        )
        .map_err(|e| ours("ticket keys", e))?;
        let suites = vec![CipherSuite::EcdheEcdsaAes128GcmSha256];
        let server = Arc::new(Config {
            cipher_suites: suites.clone(),
            groups: vec![NamedGroup::X25519, NamedGroup::Secp256r1],
            mtu,
            certificate: Some(Arc::new(CertifiedKey {
                chain,
                key: SigningKey::from_der(&key_der).map_err(|e| ours("signing key", e))?,
            })),
            ticket_keys: Some(Arc::new(Mutex::new(ticket_keys))),
            ..Config::new(PeerVerifier::RejectAll)
        });
        let client = Arc::new(Config {
            cipher_suites: suites,
            groups: vec![NamedGroup::X25519, NamedGroup::Secp256r1],
            mtu,
            server_name: Some("localhost".into()),
            ..Config::new(verifier)
        });
        let acceptor = Acceptor::new(
            Arc::clone(&server),
            AcceptorConfig::default(),
            &mut rng,
            Instant::now(),
        )
        .map_err(|e| ours("acceptor", e))?;
        Ok(Self {
            client,
            server,
            acceptor,
        })
    }

    /// One full handshake in memory, no loss.
    fn handshake(&mut self, buf: &mut [u8], out: &mut [u8]) -> Result<(), PeersError> {
        let now = Instant::now();
        let wall = UnixTime::now();
        let mut client = Connection::client(
            Arc::clone(&self.client),
            Box::new(SystemRng::new()),
            now,
            SERVER,
            None,
        )
        .map_err(|e| ours("client", e))?;
        let mut server: Option<Connection> = None;
        let (mut c_done, mut s_done) = (false, false);
        for _ in 0..32 {
            while let Some(t) = client.poll_transmit(now, buf) {
                let dg = buf.get(..t.len).ok_or_else(|| ours("transmit", "length"))?;
                match server.as_mut() {
                    Some(conn) => conn.handle_datagram(now, wall, CLIENT, dg),
                    None => match self.acceptor.handle_datagram(now, CLIENT, dg, out) {
                        AcceptOutcome::Reply(r) => {
                            let reply = out.get(..r.len).ok_or_else(|| ours("reply", "length"))?;
                            client.handle_datagram(now, wall, SERVER, reply);
                        }
                        AcceptOutcome::Accept(hello) => {
                            server = Some(
                                Connection::server(
                                    Arc::clone(&self.server),
                                    Box::new(SystemRng::new()),
                                    now,
                                    wall,
                                    hello,
                                )
                                .map_err(|e| ours("server", e))?,
                            );
                        }
                        AcceptOutcome::Drop(r) => {
                            return Err(ours("acceptor dropped the hello", format!("{r:?}")));
                        }
                    },
                }
            }
            if let Some(conn) = server.as_mut() {
                while let Some(t) = conn.poll_transmit(now, buf) {
                    let dg = buf.get(..t.len).ok_or_else(|| ours("transmit", "length"))?;
                    client.handle_datagram(now, wall, SERVER, dg);
                }
                while let Some(ev) = conn.poll_event() {
                    match ev {
                        Event::KeysReady(_) => s_done = true,
                        Event::HandshakeFailed(e) => return Err(ours("server handshake", e)),
                        _ => {}
                    }
                }
            }
            while let Some(ev) = client.poll_event() {
                match ev {
                    Event::KeysReady(_) => c_done = true,
                    Event::HandshakeFailed(e) => return Err(ours("client handshake", e)),
                    _ => {}
                }
            }
            if c_done && s_done {
                return Ok(());
            }
        }
        Err(PeersError::Ours(
            "handshake did not complete in memory".into(),
        ))
    }

    /// Full handshakes for at least `min` (at least one): (count, elapsed).
    pub(super) fn handshakes(&mut self, min: Duration) -> Result<(u64, Duration), PeersError> {
        let (mut buf, mut out) = (vec![0u8; 2048], vec![0u8; 2048]);
        let t0 = Instant::now();
        let mut n = 0u64;
        while n == 0 || t0.elapsed() < min {
            self.handshake(&mut buf, &mut out)?;
            n += 1;
        }
        Ok((n, t0.elapsed()))
    }
}

/// Our record layer, AES-128-GCM, one sealer and one opener on a fixed key.
pub(super) struct OurRecords {
    sealer: Sealer,
    opener: Opener,
    record: Vec<u8>,
    plaintext_out: Vec<u8>,
}

impl std::fmt::Debug for OurRecords {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OurRecords").finish_non_exhaustive()
    }
}

impl OurRecords {
    /// Sealer and opener for epoch 1 under one key (as after a handshake).
    pub(super) fn new(size: usize) -> Result<Self, PeersError> {
        let key = [0x42u8; 16];
        let iv = [0x24u8; 4];
        let rk = || RecordKey::new(Aead::Aes128Gcm, &key, &iv).map_err(|e| ours("record key", e));
        let sealer = Sealer::new(1, rk()?, 0).map_err(|e| ours("sealer", e))?;
        let opener = Opener::new(1, rk()?, ReplayWindow::new(64));
        let record = vec![0u8; sealer.record_len(size)];
        Ok(Self {
            sealer,
            opener,
            record,
            plaintext_out: vec![0u8; size],
        })
    }

    /// Per record: copy `payload` in, seal, open (replay check included), copy the plaintext
    /// out — the same copies `SSL_write`/`SSL_read` make. At least `min` (at least 64
    /// records): (records, elapsed).
    pub(super) fn records(
        &mut self,
        payload: &[u8],
        min: Duration,
    ) -> Result<(u64, Duration), PeersError> {
        let off = self.sealer.plaintext_offset();
        let t0 = Instant::now();
        let mut n = 0u64;
        while n == 0 || t0.elapsed() < min {
            for _ in 0..64 {
                let pt = self
                    .record
                    .get_mut(off..off + payload.len())
                    .ok_or_else(|| ours("record buffer", "too small"))?;
                pt.copy_from_slice(std::hint::black_box(payload));
                let len = self
                    .sealer
                    .seal(
                        ContentType::ApplicationData,
                        DTLS_1_2,
                        &mut self.record,
                        payload.len(),
                    )
                    .map_err(|e| ours("seal", e))?;
                let rec = self
                    .record
                    .get_mut(..len)
                    .ok_or_else(|| ours("seal", "length"))?;
                let opened = self.opener.open(rec).map_err(|e| ours("open", e))?;
                let out = self
                    .plaintext_out
                    .get_mut(..opened.plaintext.len())
                    .ok_or_else(|| ours("open", "plaintext length"))?;
                out.copy_from_slice(opened.plaintext);
                std::hint::black_box(&self.plaintext_out);
            }
            n += 64;
        }
        Ok((n, t0.elapsed()))
    }
}

/// Raw aws-lc-rs AES-128-GCM on one buffer: the floor under any record layer's cost.
pub(super) struct RawAead {
    key: aws_lc_rs::aead::LessSafeKey,
    buf: Vec<u8>,
    plaintext_out: Vec<u8>,
    counter: u64,
}

impl std::fmt::Debug for RawAead {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawAead").finish_non_exhaustive()
    }
}

impl RawAead {
    /// A fixed key and a buffer for `size` bytes.
    pub(super) fn new(size: usize) -> Result<Self, PeersError> {
        let unbound = aws_lc_rs::aead::UnboundKey::new(&aws_lc_rs::aead::AES_128_GCM, &[0x42; 16])
            .map_err(|_| ours("raw key", "rejected"))?;
        Ok(Self {
            key: aws_lc_rs::aead::LessSafeKey::new(unbound),
            buf: vec![0u8; size],
            plaintext_out: vec![0u8; size],
            counter: 0,
        })
    }

    /// Per record: copy in, seal in place (13-byte AAD, counter nonce), open in place,
    /// copy out. At least `min` (at least 64 records): (records, elapsed).
    pub(super) fn records(
        &mut self,
        payload: &[u8],
        min: Duration,
    ) -> Result<(u64, Duration), PeersError> {
        use aws_lc_rs::aead::{Aad, Nonce};
        let buf = self
            .buf
            .get_mut(..payload.len())
            .ok_or_else(|| ours("raw buffer", "too small"))?;
        let out = self
            .plaintext_out
            .get_mut(..payload.len())
            .ok_or_else(|| ours("raw buffer", "too small"))?;
        let aad = [0x17u8; 13];
        let t0 = Instant::now();
        let mut n = 0u64;
        while n == 0 || t0.elapsed() < min {
            for _ in 0..64 {
                self.counter += 1;
                let mut nonce = [0u8; 12];
                nonce[4..].copy_from_slice(&self.counter.to_be_bytes());
                buf.copy_from_slice(std::hint::black_box(payload));
                let tag = self
                    .key
                    .seal_in_place_separate_tag(
                        Nonce::assume_unique_for_key(nonce),
                        Aad::from(&aad),
                        buf,
                    )
                    .map_err(|_| ours("raw seal", "failed"))?;
                let pt = self
                    .key
                    .open_in_place_separate_tag(
                        Nonce::assume_unique_for_key(nonce),
                        Aad::from(&aad),
                        tag.as_ref(),
                        buf,
                    )
                    .map_err(|_| ours("raw open", "failed"))?;
                out.copy_from_slice(pt);
                std::hint::black_box(&out);
            }
            n += 64;
        }
        Ok((n, t0.elapsed()))
    }
}
