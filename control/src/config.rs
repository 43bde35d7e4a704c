//! Engine configuration: suites, groups, certificates, PSKs, extensions, MTU and timers.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dtls_crypto::pki_types::CertificateDer;
use dtls_crypto::{CookieKeys, PeerVerifier, SigningKey, TicketKeys};
use dtls_proto::tls13::PskKeyExchangeMode;
use dtls_proto::{
    CipherSuite, HeartbeatMode, NamedGroup, ProtocolVersion, ReassemblyBudget, SignatureScheme,
    SrtpProtectionProfile, SuiteParams,
};
use zeroize::Zeroizing;

/// The smallest MTU the engine accepts (a DTLS record with a handshake fragment must fit).
pub const MIN_MTU: usize = 128;

/// Default of [`Config::reassembly_budget`]: 8 MiB for every half-open handshake of a
/// server together.
///
/// Why: a handshake holds bytes only while a message it receives is incomplete or ahead of
/// order (a complete message is handed to the engine at once and released). A server's
/// incoming flight without client certificates fits one datagram and holds nothing in
/// between; with client certificates the chain (typically 1–8 KiB) is held while its
/// datagrams arrive. 8 MiB lets all 4096 half-open handshakes the control thread allows
/// (`RuntimeConfig::max_half_open`) hold 2 KiB each at the same instant, or 1000 of them a
/// whole 8 KiB chain, which legitimate traffic does not reach; an attacker who completes
/// cookie exchanges and then sends claims or partial messages is held to this total
/// instead of 4096 × [`Config::max_handshake_buffer`] (256 MiB).
pub const DEFAULT_REASSEMBLY_BUDGET: usize = 8 << 20;

/// Default of [`Config::max_client_certificate_chain`]: 32 KiB.
///
/// Why: real client chains are a leaf and one or two intermediates, 1–2 KiB each with RSA
/// and under 1 KiB with ECDSA, so today's chains stay under 8 KiB. Post-quantum
/// certificates, which DTLS 1.3 will bring, are larger: an ML-DSA-65 certificate is about
/// 5.5 KiB and an ML-DSA-87 one about 7.5 KiB, so a three-certificate ML-DSA-87 chain
/// (~23 KiB) still fits.
pub const DEFAULT_MAX_CLIENT_CERTIFICATE_CHAIN: usize = 32 << 10;

/// Flight retransmission settings (RFC 6347 §4.2.4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetransmitConfig {
    /// First timeout of every flight. Default 1 s (RFC 6347 §4.2.4.1).
    pub initial: Duration,
    /// Cap of the doubling timeout. Default 60 s (RFC 6347 §4.2.4.1, RFC 6298).
    pub max: Duration,
    /// Give up after this many timer-driven retransmissions of one flight. Default 12.
    pub max_retransmits: u32,
    /// Give up when the handshake has not completed this long after it started.
    /// Default 120 s; `None` for no limit.
    pub max_handshake_time: Option<Duration>,
    /// After this many retransmissions of one flight, fragment to [`Self::backoff_mtu`]
    /// (PMTU back-off, RFC 6347 §4.1.1.1). Default 2.
    pub backoff_after: u32,
    /// The MTU used after back-off (never larger than the configured MTU). Default 576.
    pub backoff_mtu: usize,
    /// Copies of the flight sent at each timer-driven retransmission (each with fresh
    /// record sequence numbers). Default 2: a timeout means loss, and a second copy makes
    /// the retry far more likely to get through on a lossy path while the exponential
    /// back-off still halves the sending rate at every timeout. 1 gives the classic
    /// behaviour. The first transmission of a flight is always a single copy.
    pub copies: u32,
}

impl Default for RetransmitConfig {
    fn default() -> Self {
        Self {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(60),
            max_retransmits: 12,
            max_handshake_time: Some(Duration::from_secs(120)),
            backoff_after: 2,
            backoff_mtu: 576,
            copies: 2,
        }
    }
}

/// A certificate chain (end-entity first) and its private key.
pub struct CertifiedKey {
    /// DER certificates, end-entity first.
    pub chain: Vec<CertificateDer<'static>>,
    /// The end-entity's private key.
    pub key: SigningKey,
}

impl fmt::Debug for CertifiedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertifiedKey")
            .field("chain_len", &self.chain.len())
            .finish_non_exhaustive()
    }
}

/// Whether a server asks for client certificates (RFC 5246 §7.4.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// No CertificateRequest.
    None,
    /// CertificateRequest sent; an empty client Certificate is accepted.
    Optional,
    /// CertificateRequest sent; the handshake fails without a verified client certificate.
    Required,
}

/// One pre-shared key and its identity (RFC 4279).
#[derive(Clone)]
pub struct Psk {
    /// The PSK identity (sent in clear in ClientKeyExchange).
    pub identity: Vec<u8>,
    /// The key (at most `dtls_crypto` `MAX_PSK_LEN` bytes).
    pub key: Zeroizing<Vec<u8>>,
}

impl fmt::Debug for Psk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Psk")
            .field("identity", &String::from_utf8_lossy(&self.identity))
            .finish_non_exhaustive()
    }
}

/// The most NewSessionTickets a DTLS 1.3 server sends on one connection.
pub const MAX_TLS13_TICKETS: u8 = 4;

/// Configuration shared by many connections of one role (wrap it in an `Arc`).
///
/// Role-specific fields are ignored by the other role. There is no `Default`: build one with
/// [`Config::new`], which takes the peer-certificate policy, so no configuration can skip
/// verification without naming [`PeerVerifier::DangerousAcceptAnyCertificateForTestsOnly`].
#[derive(Debug, Clone)]
pub struct Config {
    /// Cipher suites in preference order: a server picks the first of these the client
    /// offers (server preference); a client offers them in this order. Each must be one of
    /// [`CipherSuite::SUPPORTED`].
    pub cipher_suites: Vec<CipherSuite>,
    /// ECDHE groups in preference order, each one of [`NamedGroup::SUPPORTED`].
    pub groups: Vec<NamedGroup>,
    /// Signature schemes we accept from the peer and may use, in preference order.
    pub signature_schemes: Vec<SignatureScheme>,
    /// Refuse peers without extended_master_secret (RFC 7627 §5.2, §5.3). Default `true`.
    pub require_extended_master_secret: bool,
    /// Largest datagram the engine sends. Default 1200.
    pub mtu: usize,
    /// Flight retransmission timer.
    pub retransmit: RetransmitConfig,
    /// Replay window size handed to the shard. Default 1024.
    pub replay_window: usize,
    /// Our certificate and key (server: required for ECDHE suites; client: used when the
    /// server sends CertificateRequest).
    pub certificate: Option<Arc<CertifiedKey>>,
    /// How the peer's certificate chain is checked (handshake signatures are always
    /// checked): [`PeerVerifier::WebPki`] against trust anchors, [`PeerVerifier::RejectAll`]
    /// where no certificate is expected (PSK-only clients, servers without client
    /// authentication), or the accept-any mode, which is for tests only.
    pub peer_verification: PeerVerifier,
    /// Client: the server name to send (SNI) and to verify. Server: unused.
    pub server_name: Option<String>,
    /// Server: whether to request client certificates.
    pub client_auth: ClientAuth,
    /// Client: the first entry is our identity and key. Server: every identity we accept.
    pub psks: Vec<Psk>,
    /// Server: the PSK identity hint sent in ServerKeyExchange (RFC 4279 §2).
    pub psk_identity_hint: Option<Vec<u8>>,
    /// ALPN protocols in preference order (RFC 7301); empty for no ALPN.
    pub alpn_protocols: Vec<Vec<u8>>,
    /// SRTP profiles in preference order (RFC 5764); empty for no use_srtp.
    pub srtp_profiles: Vec<SrtpProtectionProfile>,
    /// Our heartbeat mode (RFC 6520); `None` to not negotiate heartbeats.
    pub heartbeat: Option<HeartbeatMode>,
    /// Server: ticket keys to issue and accept session tickets (RFC 5077); `None` disables.
    /// Shared by every connection of the server (sealing advances a nonce, hence the
    /// mutex; it is taken once per full handshake and once per resumption attempt).
    /// Client: unused.
    pub ticket_keys: Option<Arc<Mutex<TicketKeys>>>,
    /// Server: cookie secrets shared with other servers (a key store;
    /// [`CookieKeys::from_secrets`]), used by the [`crate::Acceptor`] instead of its own
    /// rotating secret so a cookie made by one server verifies on another. A reload that
    /// brings new ones applies them to the next ClientHello. `None` (default): the
    /// acceptor's own secret.
    pub cookie_keys: Option<Arc<CookieKeys>>,
    /// Client: offer the session_ticket extension (RFC 5077); in DTLS 1.3, send
    /// psk_key_exchange_modes so that the server sends tickets (RFC 8446 §4.2.9).
    /// Default `true`.
    pub offer_session_ticket: bool,
    /// Ticket lifetime hint the server sends, seconds. Default 7200.
    pub ticket_lifetime: u32,
    /// Cap on the bytes one connection holds to reassemble incoming handshake messages,
    /// counted as buffers grow with the bytes received (a claimed message length costs
    /// nothing until its bytes arrive). Also the largest incoming message. Default 64 KiB.
    pub max_handshake_buffer: usize,
    /// Server: the largest client Certificate message body accepted (the DER certificates,
    /// 3 bytes of length each and 3 for the list); a fragment claiming more is dropped
    /// before anything is allocated. Default [`DEFAULT_MAX_CLIENT_CERTIFICATE_CHAIN`].
    /// Client: unused (a server's chain may be as large as `max_handshake_buffer`).
    pub max_client_certificate_chain: usize,
    /// Bytes of reassembly buffers shared by every engine built from this configuration
    /// and its clones (all half-open handshakes of one server, or all handshakes of one
    /// `dtlsd connect`). A fragment that would exceed it is dropped and counted
    /// ([`ReassemblyBudget::refused`], [`crate::ConnectionStats::buffer_refused`]); the
    /// handshake is not failed and takes the peer's retransmission. A control thread keeps
    /// the budget of the configuration it started with across reloads, so in-progress and
    /// new handshakes share one total. Default [`DEFAULT_REASSEMBLY_BUDGET`].
    pub reassembly_budget: Arc<ReassemblyBudget>,
    /// The protocol versions this endpoint negotiates, in preference order: a client
    /// offers them in supported_versions (RFC 8446 §4.2.1), a server picks DTLS 1.3 when
    /// it is here and offered. Default DTLS 1.2 only: the data plane runs DTLS 1.2
    /// sessions today, so DTLS 1.3 is opted into (`[Dtls1_3]` or `[Dtls1_3, Dtls1_2]`).
    pub versions: Vec<ProtocolVersion>,
    /// DTLS 1.3 cipher suites in preference order (each one of
    /// [`CipherSuite::SUPPORTED_TLS13`]); the server picks the first the client offers.
    pub tls13_cipher_suites: Vec<CipherSuite>,
    /// DTLS 1.3 key-exchange groups in preference order (each one of
    /// `dtls_crypto::tls13::KEY_SHARE_GROUPS`). A client sends a key share for the first.
    /// Default X25519MLKEM768, X25519, P-256, P-384: the hybrid post-quantum group first.
    /// To require the hybrid group, keep only [`NamedGroup::X25519Mlkem768`]; to turn it
    /// off, remove it.
    pub tls13_groups: Vec<NamedGroup>,
    /// DTLS 1.3 PSK key exchange modes this endpoint allows (RFC 8446 §4.2.9), for external
    /// PSKs and resumption tickets alike, in preference order: a client offers them, a
    /// server uses the first of them the client offers. Default psk_dhe_ke only.
    /// [`PskKeyExchangeMode::PskKe`] (a PSK without (EC)DHE) gives no forward secrecy:
    /// whoever later learns the PSK, or the ticket key that sealed a ticket, reads every
    /// session that used it. It is used only when both sides name it here.
    pub tls13_psk_modes: Vec<PskKeyExchangeMode>,
    /// Server: NewSessionTickets sent after each DTLS 1.3 handshake when
    /// [`Config::ticket_keys`] is set and the client offered a PSK mode we allow
    /// (RFC 8446 §4.6.1); at most [`MAX_TLS13_TICKETS`]. Default 1.
    pub tls13_tickets: u8,
    /// Connection IDs (RFC 9146): whether to negotiate them and the length of the CID we ask
    /// the peer to put in its records to us. Client: the connection_id extension is offered
    /// and the server's CID used when it answers with one. Server: a client that offers the
    /// extension gets one issued (see [`CidIssuer`]). Default off.
    pub connection_id: ConnectionIds,
    /// The return-routability check (RFC 9853): with CIDs on, the `rrc` extension is
    /// offered (client) or answered (server, to a client that offered it with
    /// connection_id), and a session where both sides sent it checks a new peer address
    /// before moving to it (the data plane does the check). Default on (it only matters
    /// when [`Config::connection_id`] is on). RFC 9853 §3: "A client offering the
    /// `connection_id` extension SHOULD also offer the `rrc` extension".
    pub rrc: bool,
    /// Server: who may connect among the clients whose certificate verified (ghostunnel's
    /// `--allow-cn` and its siblings); `None` admits every verified certificate. Checked
    /// right after the chain verifies and before anything is derived from the handshake,
    /// and when a ticket would resume a certificate session. PSK sessions are not
    /// concerned (their identities are the access list). Default `None`.
    pub client_identity: Option<Arc<dyn ClientIdentityPolicy>>,
}

/// A server's rule on verified client certificates (see [`Config::client_identity`]).
pub trait ClientIdentityPolicy: fmt::Debug + Send + Sync {
    /// Whether the client whose verified end-entity certificate is `end_entity` (DER) may
    /// connect. A refusal fails the handshake with an access_denied alert.
    ///
    /// # Errors
    /// [`IdentityRefused`] naming the identity the certificate showed.
    fn check(&self, end_entity: &[u8]) -> Result<(), IdentityRefused>;
}

/// A client certificate that a [`ClientIdentityPolicy`] turned away.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityRefused {
    /// What the certificate names (for logs), as the policy read it.
    pub identity: String,
}

/// Default length of the connection IDs we ask peers to send (RFC 9146), in bytes: enough
/// for a QUIC-LB CID with a 2-byte server ID and a 5-byte nonce.
pub const DEFAULT_CID_LEN: u8 = 8;

/// Longest connection ID we issue or accept from a peer, in bytes: a data-plane session
/// holds CIDs inline up to this length (QUIC-LB's maximum, RFC 9000 §17.2).
pub const MAX_CID_LEN: u8 = 20;

/// Whether a handshake negotiates RFC 9146 connection IDs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionIds {
    /// The connection_id extension is neither offered (client) nor answered (server).
    Off,
    /// Negotiated when the peer takes part; `len` is the length of the CID we ask the peer
    /// to send, 0 to `MAX_CID_LEN` bytes. RFC 9146 §3: a zero-length CID means we send
    /// the peer's CID but do not wish to receive one ("A zero-length value indicates that
    /// the client is prepared to send using a CID but does not wish the server to use one
    /// when sending").
    On {
        /// Length of our CID in bytes.
        len: u8,
    },
}

impl ConnectionIds {
    /// The length of the CID we ask for, `None` when CIDs are off.
    pub fn cid_len(self) -> Option<usize> {
        match self {
            ConnectionIds::Off => None,
            ConnectionIds::On { len } => Some(usize::from(len)),
        }
    }
}

/// Where a server's connection IDs come from (RFC 9146 §3: "the server ... chooses the CID"
/// that the client puts in its records). The default draws random bytes; a driver that
/// routes by CID (QUIC-LB CIDs naming node and shard) passes its own to
/// [`crate::Connection::server_with_cids`].
pub trait CidIssuer {
    /// A new CID of `len` bytes (the configured length) for one session, unique among the
    /// live sessions of whoever routes by it; randomness from `rng`.
    fn issue(&mut self, len: usize, rng: &mut dyn dtls_crypto::Rng) -> Vec<u8>;
}

/// The default [`CidIssuer`]: `len` random bytes.
#[derive(Debug, Clone, Copy, Default)]
pub struct RandomCids;

impl CidIssuer for RandomCids {
    fn issue(&mut self, len: usize, rng: &mut dyn dtls_crypto::Rng) -> Vec<u8> {
        let mut cid = vec![0u8; len];
        rng.fill(&mut cid);
        cid
    }
}

impl Config {
    /// Server: applies [`Config::client_identity`] to a verified client `chain` (its end
    /// entity first).
    ///
    /// # Errors
    /// [`HandshakeError::AccessDenied`](crate::HandshakeError::AccessDenied) when the rules
    /// admit no such client.
    pub(crate) fn check_client_identity(
        &self,
        chain: &[CertificateDer<'_>],
    ) -> Result<(), crate::HandshakeError> {
        let (Some(rules), Some(end_entity)) = (&self.client_identity, chain.first()) else {
            return Ok(());
        };
        rules
            .check(end_entity.as_ref())
            .map_err(|refused| crate::HandshakeError::AccessDenied {
                identity: refused.identity,
            })
    }

    /// A configuration with the given peer-certificate policy and defaults for the rest:
    /// every AEAD suite, X25519/P-256/P-384, extended master secret required, MTU 1200, the
    /// RFC 6347 timer, no certificate, no PSK, no client authentication.
    pub fn new(peer_verification: PeerVerifier) -> Self {
        Self {
            cipher_suites: CipherSuite::SUPPORTED.to_vec(),
            groups: vec![
                NamedGroup::X25519,
                NamedGroup::Secp256r1,
                NamedGroup::Secp384r1,
            ],
            signature_schemes: SignatureScheme::SUPPORTED.to_vec(),
            require_extended_master_secret: true,
            mtu: 1200,
            retransmit: RetransmitConfig::default(),
            replay_window: 1024,
            certificate: None,
            peer_verification,
            server_name: None,
            client_auth: ClientAuth::None,
            psks: Vec::new(),
            psk_identity_hint: None,
            alpn_protocols: Vec::new(),
            srtp_profiles: Vec::new(),
            heartbeat: None,
            ticket_keys: None,
            cookie_keys: None,
            offer_session_ticket: true,
            ticket_lifetime: 7200,
            client_identity: None,
            max_handshake_buffer: 64 * 1024,
            max_client_certificate_chain: DEFAULT_MAX_CLIENT_CERTIFICATE_CHAIN,
            reassembly_budget: Arc::new(ReassemblyBudget::new(DEFAULT_REASSEMBLY_BUDGET)),
            versions: vec![ProtocolVersion::Dtls1_2],
            tls13_cipher_suites: CipherSuite::SUPPORTED_TLS13.to_vec(),
            tls13_groups: vec![
                NamedGroup::X25519Mlkem768,
                NamedGroup::X25519,
                NamedGroup::Secp256r1,
                NamedGroup::Secp384r1,
            ],
            tls13_psk_modes: vec![PskKeyExchangeMode::PskDheKe],
            tls13_tickets: 1,
            connection_id: ConnectionIds::Off,
            rrc: true,
        }
    }

    /// Whether this endpoint negotiates `version`.
    pub fn allows(&self, version: ProtocolVersion) -> bool {
        self.versions.contains(&version)
    }

    /// Allows DTLS 1.3 only, the configuration of a 1.3 engine's tests and of peers that
    /// must not fall back.
    #[must_use]
    pub fn dtls13_only(mut self) -> Self {
        self.versions = vec![ProtocolVersion::Dtls1_3];
        self
    }

    /// Keeps only the PSK suites (plain PSK and ECDHE_PSK, RFC 4279 / RFC 5489), in the
    /// current order: what a PSK-configured client offers, so a server cannot pick a
    /// certificate suite that the PSK would not authenticate.
    #[must_use]
    pub fn psk_suites_only(mut self) -> Self {
        self.cipher_suites.retain(|s| s.uses_psk());
        self
    }

    /// Whether the configuration accepts any certificate without verification.
    pub fn accepts_unverified_certificates(&self) -> bool {
        matches!(
            self.peer_verification,
            PeerVerifier::DangerousAcceptAnyCertificateForTestsOnly
        )
    }

    /// Checks the settings that would make every handshake fail.
    ///
    /// # Errors
    /// [`ConfigError`] naming the bad setting.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.mtu < MIN_MTU {
            return Err(ConfigError::MtuTooSmall { mtu: self.mtu });
        }
        if self.versions.is_empty()
            || self
                .versions
                .iter()
                .any(|v| !matches!(v, ProtocolVersion::Dtls1_2 | ProtocolVersion::Dtls1_3))
        {
            return Err(ConfigError::NoVersions);
        }
        if self.allows(ProtocolVersion::Dtls1_3) {
            if let Some(&suite) = self
                .tls13_cipher_suites
                .iter()
                .find(|s| s.tls13_params().is_none())
            {
                return Err(ConfigError::UnsupportedCipherSuite { suite });
            }
            if self.tls13_cipher_suites.is_empty() {
                return Err(ConfigError::NoCipherSuites);
            }
            if let Some(&group) = self
                .tls13_groups
                .iter()
                .find(|g| !dtls_crypto::tls13::KEY_SHARE_GROUPS.contains(g))
            {
                return Err(ConfigError::UnsupportedGroup { group });
            }
            if self.tls13_groups.is_empty() {
                return Err(ConfigError::NoGroups);
            }
        }
        if !self.allows(ProtocolVersion::Dtls1_2) {
            // The DTLS 1.2 settings below do not apply.
            return self.validate_common();
        }
        if self.cipher_suites.is_empty() {
            return Err(ConfigError::NoCipherSuites);
        }
        if let Some(&suite) = self.cipher_suites.iter().find(|s| s.params().is_none()) {
            return Err(ConfigError::UnsupportedCipherSuite { suite });
        }
        if let Some(&group) = self
            .groups
            .iter()
            .find(|g| !NamedGroup::SUPPORTED.contains(g))
        {
            return Err(ConfigError::UnsupportedGroup { group });
        }
        if self.suites().any(|s| s.uses_ecdhe()) && self.groups.is_empty() {
            return Err(ConfigError::NoGroups);
        }
        self.validate_common()
    }

    fn validate_common(&self) -> Result<(), ConfigError> {
        if let ConnectionIds::On { len } = self.connection_id
            && len > MAX_CID_LEN
        {
            return Err(ConfigError::CidTooLong { len });
        }
        if self.retransmit.initial.is_zero() || self.retransmit.max < self.retransmit.initial {
            return Err(ConfigError::BadRetransmitTimer);
        }
        if self.client_auth != ClientAuth::None
            && matches!(self.peer_verification, PeerVerifier::RejectAll)
        {
            return Err(ConfigError::ClientAuthWithoutVerifier);
        }
        Ok(())
    }

    /// Checks a client configuration: [`Config::validate`], and a certificate suite offered
    /// only with a way to verify the server's certificate (otherwise the server could pick a
    /// suite whose certificate we can only refuse).
    ///
    /// # Errors
    /// [`ConfigError`] naming the bad setting.
    pub fn validate_client(&self) -> Result<(), ConfigError> {
        self.validate()?;
        if self.allows(ProtocolVersion::Dtls1_3)
            && matches!(self.peer_verification, PeerVerifier::RejectAll)
            && self.psks.is_empty()
        {
            // DTLS 1.3 without PSK authenticates the server by certificate only.
            return Err(ConfigError::CertificateSuitesWithoutVerifier);
        }
        if !self.allows(ProtocolVersion::Dtls1_2) {
            return Ok(());
        }
        if matches!(self.peer_verification, PeerVerifier::RejectAll)
            && self.suites().any(|s| !s.uses_psk())
        {
            return Err(ConfigError::CertificateSuitesWithoutVerifier);
        }
        if self.suites().all(|s| s.uses_psk()) && self.psks.is_empty() {
            return Err(ConfigError::PskSuitesWithoutPsk);
        }
        Ok(())
    }

    /// The configured suites we implement, in preference order (after [`Config::validate`],
    /// every configured suite).
    pub(crate) fn suites(&self) -> impl Iterator<Item = SuiteParams> + '_ {
        self.cipher_suites.iter().filter_map(|s| s.params())
    }
}

/// A configuration that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The MTU is below [`MIN_MTU`].
    #[error("MTU {mtu} is below the minimum of {MIN_MTU}")]
    MtuTooSmall {
        /// The configured MTU.
        mtu: usize,
    },
    /// No cipher suite enabled.
    #[error("no cipher suite enabled")]
    NoCipherSuites,
    /// A cipher suite outside [`CipherSuite::SUPPORTED`] (an unknown code or the SCSV).
    #[error("cipher suite {suite:?} is not supported")]
    UnsupportedCipherSuite {
        /// The suite.
        suite: CipherSuite,
    },
    /// A named group outside [`NamedGroup::SUPPORTED`].
    #[error("named group {group:?} is not supported")]
    UnsupportedGroup {
        /// The group.
        group: NamedGroup,
    },
    /// ECDHE suites enabled but no group.
    #[error("ECDHE suites enabled but no named group")]
    NoGroups,
    /// Zero initial timeout or a cap below it.
    #[error("retransmission timer: initial must be > 0 and max >= initial")]
    BadRetransmitTimer,
    /// Client certificates are requested but every certificate would be refused.
    #[error("client authentication is on but the peer verifier accepts no certificate")]
    ClientAuthWithoutVerifier,
    /// A client offers certificate suites with no way to verify the server's certificate.
    #[error("certificate suites offered but no trust anchors to verify the server with")]
    CertificateSuitesWithoutVerifier,
    /// No protocol version, or one other than DTLS 1.2 and 1.3.
    #[error("versions must be a non-empty list of DTLS 1.2 and DTLS 1.3")]
    NoVersions,
    /// A connection ID length above [`MAX_CID_LEN`].
    #[error("connection ID length {len} exceeds {MAX_CID_LEN}")]
    CidTooLong {
        /// The configured length.
        len: u8,
    },
    /// A client offers only PSK suites but has no PSK.
    #[error("only PSK suites offered but no PSK configured")]
    PskSuitesWithoutPsk,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_implemented_suites_and_groups_validate() {
        let base = Config::new(PeerVerifier::RejectAll);
        assert_eq!(base.validate(), Ok(()));
        for suite in [
            CipherSuite::EmptyRenegotiationInfoScsv,
            CipherSuite::from_u16(0xc009), // a CBC suite
        ] {
            let mut c = base.clone();
            c.cipher_suites.push(suite);
            assert_eq!(
                c.validate(),
                Err(ConfigError::UnsupportedCipherSuite { suite })
            );
        }
        for group in [NamedGroup::X448, NamedGroup::Unknown(0x1234)] {
            let mut c = base.clone();
            c.groups.insert(0, group);
            assert_eq!(c.validate(), Err(ConfigError::UnsupportedGroup { group }));
        }
        let psk = base.psk_suites_only();
        assert!(!psk.cipher_suites.is_empty());
        assert!(psk.cipher_suites.iter().all(|s| s.uses_psk()));
    }
}
