//! Protocol versions and the AEAD-only cipher suites we negotiate, with the parameters
//! the key schedule and the record layer need: key exchange, record AEAD and PRF hash
//! (IANA "TLS Cipher Suites"; RFC 5288, RFC 5289, RFC 7905, RFC 5487, RFC 5489, RFC 5746).
//!
//! [`CipherSuite`] is the code table (it carries unknown codes, as a ClientHello's list
//! must); [`SuiteParams`] is a suite we implement, with its properties, and exists only for
//! the suites in [`CipherSuite::SUPPORTED`].

use crate::codes::code_enum;

code_enum! {
    /// ProtocolVersion on the wire. DTLS versions are the one's complement of the TLS
    /// version they are based on (RFC 6347 §4.1), so a *numerically lower* DTLS version is
    /// *newer*.
    pub enum ProtocolVersion: u16 as (from_u16, to_u16) {
        /// DTLS 1.0 {254, 255}
        Dtls1_0 = 0xfeff,
        /// DTLS 1.2 {254, 253}
        Dtls1_2 = 0xfefd,
        /// DTLS 1.3 {254, 252} (RFC 9147 §5.3), negotiated through supported_versions only:
        /// the legacy_version field stays {254, 253}.
        Dtls1_3 = 0xfefc,
    }
}

impl ProtocolVersion {
    /// Whether a ClientHello advertising this `client_version` can negotiate DTLS 1.2:
    /// a DTLS version (major 254) no older than {254, 253}. RFC 6347 §4.2.1 /
    /// RFC 5246 §E.1: client_version is the highest version the client supports.
    pub const fn offers_dtls12(self) -> bool {
        let v = self.to_u16();
        (v >> 8) == 0xfe && (v & 0xff) <= 0xfd
    }
}

code_enum! {
    /// Cipher suites we know. Only AEAD suites have a named variant (no CBC, RC4 or NULL
    /// suite can ever be selected), plus the renegotiation SCSV, which is a signal and not a
    /// suite (RFC 5746 §3.3). The variant names are what the daemon logs (`suite=...`).
    pub enum CipherSuite: u16 as (from_u16, to_u16) {
        /// TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256 {0xC0,0x2B} (RFC 5289)
        EcdheEcdsaAes128GcmSha256 = 0xc02b,
        /// TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384 {0xC0,0x2C} (RFC 5289)
        EcdheEcdsaAes256GcmSha384 = 0xc02c,
        /// TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256 {0xC0,0x2F} (RFC 5289)
        EcdheRsaAes128GcmSha256 = 0xc02f,
        /// TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384 {0xC0,0x30} (RFC 5289)
        EcdheRsaAes256GcmSha384 = 0xc030,
        /// TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256 {0xCC,0xA8} (RFC 7905)
        EcdheRsaChacha20Poly1305Sha256 = 0xcca8,
        /// TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256 {0xCC,0xA9} (RFC 7905)
        EcdheEcdsaChacha20Poly1305Sha256 = 0xcca9,
        /// TLS_PSK_WITH_AES_128_GCM_SHA256 {0x00,0xA8} (RFC 5487)
        PskAes128GcmSha256 = 0x00a8,
        /// TLS_PSK_WITH_AES_256_GCM_SHA384 {0x00,0xA9} (RFC 5487)
        PskAes256GcmSha384 = 0x00a9,
        /// TLS_ECDHE_PSK_WITH_CHACHA20_POLY1305_SHA256 {0xCC,0xAC} (RFC 7905)
        EcdhePskChacha20Poly1305Sha256 = 0xccac,
        /// TLS_EMPTY_RENEGOTIATION_INFO_SCSV {0x00,0xFF} (RFC 5746 §3.3) — a signal only.
        EmptyRenegotiationInfoScsv = 0x00ff,
        /// TLS_AES_128_GCM_SHA256 {0x13,0x01} (RFC 8446 §B.4) — TLS/DTLS 1.3 only: it names
        /// an AEAD and a hash, no key exchange, so [`CipherSuite::params`] is `None`.
        Tls13Aes128GcmSha256 = 0x1301,
        /// TLS_AES_256_GCM_SHA384 {0x13,0x02} (RFC 8446 §B.4) — 1.3 only.
        Tls13Aes256GcmSha384 = 0x1302,
        /// TLS_CHACHA20_POLY1305_SHA256 {0x13,0x03} (RFC 8446 §B.4) — 1.3 only.
        Tls13Chacha20Poly1305Sha256 = 0x1303,
    }
}

/// How a suite establishes the premaster secret and authenticates the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyExchange {
    /// Ephemeral ECDH, server signs with an ECDSA or EdDSA key (RFC 8422).
    EcdheEcdsa,
    /// Ephemeral ECDH, server signs with an RSA key (RFC 8422).
    EcdheRsa,
    /// Plain pre-shared key (RFC 4279 §2).
    Psk,
    /// Ephemeral ECDH combined with a pre-shared key, no signature (RFC 5489).
    EcdhePsk,
}

impl KeyExchange {
    /// Whether the server sends Certificate and signs ServerKeyExchange.
    pub const fn uses_certificates(self) -> bool {
        matches!(self, KeyExchange::EcdheEcdsa | KeyExchange::EcdheRsa)
    }

    /// Whether an ECDHE exchange takes place.
    pub const fn uses_ecdhe(self) -> bool {
        !matches!(self, KeyExchange::Psk)
    }

    /// Whether a pre-shared key is involved.
    pub const fn uses_psk(self) -> bool {
        matches!(self, KeyExchange::Psk | KeyExchange::EcdhePsk)
    }
}

/// The record-protection AEAD of a suite: the algorithm identifier, with the lengths the
/// key schedule and the record format need. The record layer (`dataplane::record`) maps it
/// to its implementation.
///
/// Only real AEADs: there is deliberately no NULL variant, so no suite (and nothing
/// negotiated on the wire) can map to the benchmarks' null baseline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Aead {
    /// AES-128-GCM (RFC 5288): 16-byte key, 4-byte fixed IV, 8-byte explicit nonce.
    Aes128Gcm,
    /// AES-256-GCM (RFC 5288): 32-byte key, 4-byte fixed IV, 8-byte explicit nonce.
    Aes256Gcm,
    /// ChaCha20-Poly1305 (RFC 7905): 32-byte key, 12-byte fixed IV, no explicit nonce.
    ChaCha20Poly1305,
}

impl Aead {
    /// All variants, for tests and benchmarks.
    pub const ALL: [Aead; 3] = [Aead::Aes128Gcm, Aead::Aes256Gcm, Aead::ChaCha20Poly1305];

    /// Authentication tag length of every AEAD here.
    pub const TAG_LEN: usize = 16;

    /// `SecurityParameters.enc_key_length` (RFC 5246 §6.3).
    pub const fn key_len(self) -> usize {
        match self {
            Aead::Aes128Gcm => 16,
            Aead::Aes256Gcm | Aead::ChaCha20Poly1305 => 32,
        }
    }

    /// `SecurityParameters.fixed_iv_length`, the implicit part of the nonce derived by the
    /// key schedule: 4 for GCM (RFC 5288 §3 `salt`), 12 for ChaCha20 (RFC 7905 §2
    /// `client/server_write_IV`).
    pub const fn fixed_iv_len(self) -> usize {
        match self {
            Aead::Aes128Gcm | Aead::Aes256Gcm => 4,
            Aead::ChaCha20Poly1305 => 12,
        }
    }

    /// Bytes of explicit nonce carried in each record: 8 for GCM (RFC 5288 §3), 0 for
    /// ChaCha20 (RFC 7905).
    pub const fn explicit_nonce_len(self) -> usize {
        match self {
            Aead::Aes128Gcm | Aead::Aes256Gcm => 8,
            Aead::ChaCha20Poly1305 => 0,
        }
    }

    /// Authentication tag length: 16 for all three.
    pub const fn tag_len(self) -> usize {
        Self::TAG_LEN
    }

    /// The number of failed authentications after which the key must be retired.
    ///
    /// RFC 9147 §4.5.3 (Integrity Limits): "For AEAD_AES_128_GCM, AEAD_AES_256_GCM, and
    /// AEAD_CHACHA20_POLY1305, the limit on the number of records that fail authentication
    /// is 2^36." The same section: "If the total number of records that fail
    /// authentication exceeds a limit that is specific to the AEAD in use, an
    /// implementation SHOULD immediately close the connection."
    pub const fn integrity_limit(self) -> u64 {
        1 << 36
    }

    /// A short stable name (`aes128gcm`, `aes256gcm`, `chacha20poly1305`).
    pub const fn name(self) -> &'static str {
        match self {
            Aead::Aes128Gcm => "aes128gcm",
            Aead::Aes256Gcm => "aes256gcm",
            Aead::ChaCha20Poly1305 => "chacha20poly1305",
        }
    }
}

/// The hash of the TLS 1.2 PRF (RFC 5246 §5) and of the handshake transcript, named by
/// the cipher suite (RFC 5246 §5: "New cipher suites MUST explicitly specify a PRF and, in
/// general, SHOULD use the TLS PRF with SHA-256 or a stronger standard hash function").
/// The PRF itself is computed by `dtls-crypto`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PrfHash {
    /// SHA-256 (the default TLS 1.2 PRF): the `_SHA256` suites.
    Sha256,
    /// SHA-384: the `_SHA384` suites (RFC 5288 §3 / RFC 5289 §3.2).
    Sha384,
}

impl PrfHash {
    /// Digest length in bytes (32 or 48).
    pub const fn output_len(self) -> usize {
        match self {
            PrfHash::Sha256 => 32,
            PrfHash::Sha384 => 48,
        }
    }
}

/// A suite we implement, with everything the engine, the key schedule and the record
/// layer need to know about it. Only [`CipherSuite::params`] makes one, so holding a
/// `SuiteParams` means the suite is negotiable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SuiteParams {
    suite: CipherSuite,
    key_exchange: KeyExchange,
    aead: Aead,
    prf_hash: PrfHash,
}

impl SuiteParams {
    /// The suite's code.
    pub const fn suite(&self) -> CipherSuite {
        self.suite
    }

    /// Key exchange and authentication.
    pub const fn key_exchange(&self) -> KeyExchange {
        self.key_exchange
    }

    /// Record protection.
    pub const fn aead(&self) -> Aead {
        self.aead
    }

    /// PRF / transcript hash (RFC 5246 §5; SHA-384 for the `_SHA384` suites).
    pub const fn prf_hash(&self) -> PrfHash {
        self.prf_hash
    }

    /// Whether the suite needs an ECDHE exchange.
    pub const fn uses_ecdhe(&self) -> bool {
        self.key_exchange.uses_ecdhe()
    }

    /// Whether the suite is authenticated by a pre-shared key.
    pub const fn uses_psk(&self) -> bool {
        self.key_exchange.uses_psk()
    }

    /// Whether the server authenticates with a certificate.
    pub const fn uses_certificate(&self) -> bool {
        self.key_exchange.uses_certificates()
    }

    /// Bytes of key block to derive (RFC 5246 §6.3; AEAD suites have no MAC keys):
    /// 2 * (key length + fixed IV length).
    pub const fn key_block_len(&self) -> usize {
        2 * (self.aead.key_len() + self.aead.fixed_iv_len())
    }
}

/// A TLS 1.3 suite (RFC 8446 §B.4) as DTLS 1.3 uses it: only the record AEAD and the
/// hash of the key schedule and transcript; key exchange and authentication are negotiated
/// apart (key_share, signature_algorithms, pre_shared_key). Only
/// [`CipherSuite::tls13_params`] makes one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Tls13SuiteParams {
    suite: CipherSuite,
    aead: Aead,
    hash: PrfHash,
}

impl Tls13SuiteParams {
    /// The suite's code.
    pub const fn suite(&self) -> CipherSuite {
        self.suite
    }

    /// Record protection.
    pub const fn aead(&self) -> Aead {
        self.aead
    }

    /// The HKDF and transcript hash.
    pub const fn hash(&self) -> PrfHash {
        self.hash
    }
}

impl CipherSuite {
    /// The TLS 1.3 suites we implement, in our default preference order.
    pub const SUPPORTED_TLS13: &'static [CipherSuite] = &[
        CipherSuite::Tls13Aes128GcmSha256,
        CipherSuite::Tls13Aes256GcmSha384,
        CipherSuite::Tls13Chacha20Poly1305Sha256,
    ];

    /// Parameters of a TLS 1.3 suite; `None` for every 1.2 suite, the SCSV and unknown
    /// codes (a 1.3 handshake never negotiates a 1.2 suite, RFC 8446 §4.1.3).
    pub const fn tls13_params(self) -> Option<Tls13SuiteParams> {
        let (aead, hash) = match self {
            CipherSuite::Tls13Aes128GcmSha256 => (Aead::Aes128Gcm, PrfHash::Sha256),
            CipherSuite::Tls13Aes256GcmSha384 => (Aead::Aes256Gcm, PrfHash::Sha384),
            CipherSuite::Tls13Chacha20Poly1305Sha256 => (Aead::ChaCha20Poly1305, PrfHash::Sha256),
            _ => return None,
        };
        Some(Tls13SuiteParams {
            suite: self,
            aead,
            hash,
        })
    }

    /// The suites we implement, in our default preference order (a server's choice among
    /// the client's offers, a client's order of offering).
    pub const SUPPORTED: &'static [CipherSuite] = &[
        CipherSuite::EcdheEcdsaAes128GcmSha256,
        CipherSuite::EcdheEcdsaAes256GcmSha384,
        CipherSuite::EcdheEcdsaChacha20Poly1305Sha256,
        CipherSuite::EcdheRsaAes128GcmSha256,
        CipherSuite::EcdheRsaAes256GcmSha384,
        CipherSuite::EcdheRsaChacha20Poly1305Sha256,
        CipherSuite::EcdhePskChacha20Poly1305Sha256,
        CipherSuite::PskAes128GcmSha256,
        CipherSuite::PskAes256GcmSha384,
    ];

    /// Parameters of a negotiable suite; `None` for the SCSV and unknown codes.
    pub const fn params(self) -> Option<SuiteParams> {
        use Aead as A;
        use KeyExchange as K;
        use PrfHash as H;
        let (key_exchange, aead, prf_hash) = match self {
            CipherSuite::EcdheEcdsaAes128GcmSha256 => (K::EcdheEcdsa, A::Aes128Gcm, H::Sha256),
            CipherSuite::EcdheEcdsaAes256GcmSha384 => (K::EcdheEcdsa, A::Aes256Gcm, H::Sha384),
            CipherSuite::EcdheRsaAes128GcmSha256 => (K::EcdheRsa, A::Aes128Gcm, H::Sha256),
            CipherSuite::EcdheRsaAes256GcmSha384 => (K::EcdheRsa, A::Aes256Gcm, H::Sha384),
            CipherSuite::EcdheRsaChacha20Poly1305Sha256 => {
                (K::EcdheRsa, A::ChaCha20Poly1305, H::Sha256)
            }
            CipherSuite::EcdheEcdsaChacha20Poly1305Sha256 => {
                (K::EcdheEcdsa, A::ChaCha20Poly1305, H::Sha256)
            }
            CipherSuite::PskAes128GcmSha256 => (K::Psk, A::Aes128Gcm, H::Sha256),
            CipherSuite::PskAes256GcmSha384 => (K::Psk, A::Aes256Gcm, H::Sha384),
            CipherSuite::EcdhePskChacha20Poly1305Sha256 => {
                (K::EcdhePsk, A::ChaCha20Poly1305, H::Sha256)
            }
            // 1.3 suites carry no key exchange and are never negotiated by the 1.2 engine.
            CipherSuite::Tls13Aes128GcmSha256
            | CipherSuite::Tls13Aes256GcmSha384
            | CipherSuite::Tls13Chacha20Poly1305Sha256
            | CipherSuite::EmptyRenegotiationInfoScsv
            | CipherSuite::Unknown(_) => return None,
        };
        Some(SuiteParams {
            suite: self,
            key_exchange,
            aead,
            prf_hash,
        })
    }

    /// Key exchange kind of a negotiable suite.
    pub const fn key_exchange(self) -> Option<KeyExchange> {
        match self.params() {
            Some(p) => Some(p.key_exchange),
            None => None,
        }
    }

    /// Record AEAD of a negotiable suite.
    pub const fn aead(self) -> Option<Aead> {
        match self.params() {
            Some(p) => Some(p.aead),
            None => None,
        }
    }

    /// PRF hash of a negotiable suite.
    pub const fn prf_hash(self) -> Option<PrfHash> {
        match self.params() {
            Some(p) => Some(p.prf_hash),
            None => None,
        }
    }

    /// Whether this is a suite we implement that needs an ECDHE exchange (`false` for the
    /// SCSV and unknown codes).
    pub const fn uses_ecdhe(self) -> bool {
        matches!(self.params(), Some(p) if p.uses_ecdhe())
    }

    /// Whether this is a suite we implement that is authenticated by a pre-shared key
    /// (`false` for the SCSV and unknown codes).
    pub const fn uses_psk(self) -> bool {
        matches!(self.params(), Some(p) if p.uses_psk())
    }

    /// Whether this is a suite we implement in which the server authenticates with a
    /// certificate (`false` for the SCSV and unknown codes).
    pub const fn uses_certificate(self) -> bool {
        matches!(self.params(), Some(p) if p.uses_certificate())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suite_codes_match_iana() {
        let expected: [(CipherSuite, u16); 10] = [
            (CipherSuite::EcdheEcdsaAes128GcmSha256, 0xC02B),
            (CipherSuite::EcdheEcdsaAes256GcmSha384, 0xC02C),
            (CipherSuite::EcdheRsaAes128GcmSha256, 0xC02F),
            (CipherSuite::EcdheRsaAes256GcmSha384, 0xC030),
            (CipherSuite::EcdheRsaChacha20Poly1305Sha256, 0xCCA8),
            (CipherSuite::EcdheEcdsaChacha20Poly1305Sha256, 0xCCA9),
            (CipherSuite::PskAes128GcmSha256, 0x00A8),
            (CipherSuite::PskAes256GcmSha384, 0x00A9),
            (CipherSuite::EcdhePskChacha20Poly1305Sha256, 0xCCAC),
            (CipherSuite::EmptyRenegotiationInfoScsv, 0x00FF),
        ];
        for (suite, code) in expected {
            assert_eq!(suite.to_u16(), code);
            assert_eq!(CipherSuite::from_u16(code), suite);
        }
        // A CBC suite (TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA) is unknown and unusable.
        let cbc = CipherSuite::from_u16(0xC009);
        assert_eq!(cbc.params(), None);
        assert_eq!(CipherSuite::EmptyRenegotiationInfoScsv.params(), None);
        for s in [cbc, CipherSuite::EmptyRenegotiationInfoScsv] {
            assert!(!s.uses_ecdhe() && !s.uses_psk() && !s.uses_certificate());
        }
    }

    #[test]
    fn suite_params_are_consistent_with_names() {
        for &s in CipherSuite::SUPPORTED {
            let p = s.params().expect("every supported suite has parameters");
            let name = format!("{s:?}");
            assert_eq!(
                p.prf_hash == PrfHash::Sha384,
                name.ends_with("Sha384"),
                "{name}"
            );
            let aead = match p.aead {
                Aead::Aes128Gcm => "Aes128Gcm",
                Aead::Aes256Gcm => "Aes256Gcm",
                Aead::ChaCha20Poly1305 => "Chacha20Poly1305",
            };
            assert!(name.contains(aead), "{name}");
            let kx = match p.key_exchange {
                KeyExchange::EcdheEcdsa => "EcdheEcdsa",
                KeyExchange::EcdheRsa => "EcdheRsa",
                KeyExchange::Psk => "PskAes",
                KeyExchange::EcdhePsk => "EcdhePsk",
            };
            assert!(name.starts_with(kx), "{name}");
            assert_eq!(s.uses_psk(), p.key_exchange.uses_psk());
            assert_eq!(s.uses_ecdhe(), p.key_exchange.uses_ecdhe());
            assert_eq!(s.uses_certificate(), p.key_exchange.uses_certificates());
        }
        let p = CipherSuite::EcdheRsaAes256GcmSha384
            .params()
            .expect("supported");
        assert_eq!(p.key_block_len(), 2 * (32 + 4));
        let p = CipherSuite::EcdhePskChacha20Poly1305Sha256
            .params()
            .expect("supported");
        assert_eq!(p.key_block_len(), 2 * (32 + 12));
    }

    #[test]
    fn version_ordering() {
        assert_eq!(ProtocolVersion::Dtls1_2.to_u16(), 0xfefd);
        assert!(ProtocolVersion::Dtls1_2.offers_dtls12());
        assert!(ProtocolVersion::from_u16(0xfefc).offers_dtls12());
        assert_eq!(ProtocolVersion::from_u16(0xfefc), ProtocolVersion::Dtls1_3);
        for suite in [
            CipherSuite::Tls13Aes128GcmSha256,
            CipherSuite::Tls13Aes256GcmSha384,
            CipherSuite::Tls13Chacha20Poly1305Sha256,
        ] {
            assert_eq!(
                suite.params(),
                None,
                "{suite:?} is never negotiated by DTLS 1.2"
            );
            let p = suite.tls13_params().expect("a 1.3 suite");
            assert_eq!(p.suite(), suite);
        }
        assert_eq!(
            CipherSuite::Tls13Aes256GcmSha384
                .tls13_params()
                .map(|p| (p.aead(), p.hash())),
            Some((Aead::Aes256Gcm, PrfHash::Sha384))
        );
        assert_eq!(
            CipherSuite::Tls13Chacha20Poly1305Sha256
                .tls13_params()
                .map(|p| (p.aead(), p.hash())),
            Some((Aead::ChaCha20Poly1305, PrfHash::Sha256))
        );
        for suite in CipherSuite::SUPPORTED {
            assert!(suite.tls13_params().is_none(), "{suite:?} is 1.2 only");
        }
        assert!(!ProtocolVersion::Dtls1_0.offers_dtls12());
        assert!(!ProtocolVersion::from_u16(0x0303).offers_dtls12());
    }
}
