//! Protocol versions and the AEAD-only cipher suites we negotiate, with the parameters
//! the key schedule needs (IANA "TLS Cipher Suites"; RFC 5288, RFC 5289, RFC 7905,
//! RFC 5487, RFC 5489, RFC 5746).

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
    /// suite (RFC 5746 §3.3).
    pub enum CipherSuite: u16 as (from_u16, to_u16) {
        /// TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256 {0xC0,0x2B} (RFC 5289)
        EcdheEcdsaWithAes128GcmSha256 = 0xc02b,
        /// TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384 {0xC0,0x2C} (RFC 5289)
        EcdheEcdsaWithAes256GcmSha384 = 0xc02c,
        /// TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256 {0xC0,0x2F} (RFC 5289)
        EcdheRsaWithAes128GcmSha256 = 0xc02f,
        /// TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384 {0xC0,0x30} (RFC 5289)
        EcdheRsaWithAes256GcmSha384 = 0xc030,
        /// TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256 {0xCC,0xA8} (RFC 7905)
        EcdheRsaWithChacha20Poly1305Sha256 = 0xcca8,
        /// TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256 {0xCC,0xA9} (RFC 7905)
        EcdheEcdsaWithChacha20Poly1305Sha256 = 0xcca9,
        /// TLS_PSK_WITH_AES_128_GCM_SHA256 {0x00,0xA8} (RFC 5487)
        PskWithAes128GcmSha256 = 0x00a8,
        /// TLS_PSK_WITH_AES_256_GCM_SHA384 {0x00,0xA9} (RFC 5487)
        PskWithAes256GcmSha384 = 0x00a9,
        /// TLS_ECDHE_PSK_WITH_CHACHA20_POLY1305_SHA256 {0xCC,0xAC} (RFC 7905)
        EcdhePskWithChacha20Poly1305Sha256 = 0xccac,
        /// TLS_EMPTY_RENEGOTIATION_INFO_SCSV {0x00,0xFF} (RFC 5746 §3.3) — a signal only.
        EmptyRenegotiationInfoScsv = 0x00ff,
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

/// The record-protection AEAD of a suite.
///
/// This mirrors `dataplane::record::Aead` (same three variants, same names); it is kept
/// local so this crate does not depend on the record layer, and the engine maps it with a
/// one-line `match`. There is deliberately no NULL variant: no suite maps to null
/// protection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SuiteAead {
    /// AES-128-GCM (RFC 5288): 16-byte key, 4-byte fixed IV, 8-byte explicit nonce.
    Aes128Gcm,
    /// AES-256-GCM (RFC 5288): 32-byte key, 4-byte fixed IV, 8-byte explicit nonce.
    Aes256Gcm,
    /// ChaCha20-Poly1305 (RFC 7905): 32-byte key, 12-byte fixed IV, no explicit nonce.
    ChaCha20Poly1305,
}

impl SuiteAead {
    /// `SecurityParameters.enc_key_length` (RFC 5246 §6.3).
    pub const fn key_len(self) -> usize {
        match self {
            SuiteAead::Aes128Gcm => 16,
            SuiteAead::Aes256Gcm | SuiteAead::ChaCha20Poly1305 => 32,
        }
    }

    /// `SecurityParameters.fixed_iv_length`: 4 for GCM (RFC 5288 §3), 12 for ChaCha20
    /// (RFC 7905 §2).
    pub const fn fixed_iv_len(self) -> usize {
        match self {
            SuiteAead::Aes128Gcm | SuiteAead::Aes256Gcm => 4,
            SuiteAead::ChaCha20Poly1305 => 12,
        }
    }

    /// Bytes of explicit nonce carried in each record: 8 for GCM, 0 for ChaCha20.
    pub const fn explicit_nonce_len(self) -> usize {
        match self {
            SuiteAead::Aes128Gcm | SuiteAead::Aes256Gcm => 8,
            SuiteAead::ChaCha20Poly1305 => 0,
        }
    }
}

/// The hash of the TLS 1.2 PRF (RFC 5246 §5) and of the handshake transcript.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PrfHash {
    /// SHA-256 (the default TLS 1.2 PRF).
    Sha256,
    /// SHA-384 (suites ending in `_SHA384`, RFC 5288 §3 / RFC 5289 §3.2).
    Sha384,
}

impl PrfHash {
    /// Digest length in bytes.
    pub const fn output_len(self) -> usize {
        match self {
            PrfHash::Sha256 => 32,
            PrfHash::Sha384 => 48,
        }
    }
}

/// Everything the key schedule needs to know about a negotiable suite.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SuiteParams {
    /// The suite.
    pub suite: CipherSuite,
    /// Key exchange and authentication.
    pub key_exchange: KeyExchange,
    /// Record protection.
    pub aead: SuiteAead,
    /// PRF / transcript hash.
    pub prf_hash: PrfHash,
}

impl SuiteParams {
    /// Bytes of key block to derive (RFC 5246 §6.3; AEAD suites have no MAC keys):
    /// 2 * (key length + fixed IV length).
    pub const fn key_block_len(&self) -> usize {
        2 * (self.aead.key_len() + self.aead.fixed_iv_len())
    }
}

impl CipherSuite {
    /// The suites we implement, in our default server preference order.
    pub const SUPPORTED: &'static [CipherSuite] = &[
        CipherSuite::EcdheEcdsaWithAes128GcmSha256,
        CipherSuite::EcdheEcdsaWithChacha20Poly1305Sha256,
        CipherSuite::EcdheEcdsaWithAes256GcmSha384,
        CipherSuite::EcdheRsaWithAes128GcmSha256,
        CipherSuite::EcdheRsaWithChacha20Poly1305Sha256,
        CipherSuite::EcdheRsaWithAes256GcmSha384,
        CipherSuite::EcdhePskWithChacha20Poly1305Sha256,
        CipherSuite::PskWithAes128GcmSha256,
        CipherSuite::PskWithAes256GcmSha384,
    ];

    /// Parameters of a negotiable suite; `None` for the SCSV and unknown codes.
    pub const fn params(self) -> Option<SuiteParams> {
        use KeyExchange as K;
        use PrfHash as H;
        use SuiteAead as A;
        let (key_exchange, aead, prf_hash) = match self {
            CipherSuite::EcdheEcdsaWithAes128GcmSha256 => (K::EcdheEcdsa, A::Aes128Gcm, H::Sha256),
            CipherSuite::EcdheEcdsaWithAes256GcmSha384 => (K::EcdheEcdsa, A::Aes256Gcm, H::Sha384),
            CipherSuite::EcdheRsaWithAes128GcmSha256 => (K::EcdheRsa, A::Aes128Gcm, H::Sha256),
            CipherSuite::EcdheRsaWithAes256GcmSha384 => (K::EcdheRsa, A::Aes256Gcm, H::Sha384),
            CipherSuite::EcdheRsaWithChacha20Poly1305Sha256 => {
                (K::EcdheRsa, A::ChaCha20Poly1305, H::Sha256)
            }
            CipherSuite::EcdheEcdsaWithChacha20Poly1305Sha256 => {
                (K::EcdheEcdsa, A::ChaCha20Poly1305, H::Sha256)
            }
            CipherSuite::PskWithAes128GcmSha256 => (K::Psk, A::Aes128Gcm, H::Sha256),
            CipherSuite::PskWithAes256GcmSha384 => (K::Psk, A::Aes256Gcm, H::Sha384),
            CipherSuite::EcdhePskWithChacha20Poly1305Sha256 => {
                (K::EcdhePsk, A::ChaCha20Poly1305, H::Sha256)
            }
            CipherSuite::EmptyRenegotiationInfoScsv | CipherSuite::Unknown(_) => return None,
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
    pub const fn aead(self) -> Option<SuiteAead> {
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suite_codes_match_iana() {
        let expected: [(CipherSuite, u16); 10] = [
            (CipherSuite::EcdheEcdsaWithAes128GcmSha256, 0xC02B),
            (CipherSuite::EcdheEcdsaWithAes256GcmSha384, 0xC02C),
            (CipherSuite::EcdheRsaWithAes128GcmSha256, 0xC02F),
            (CipherSuite::EcdheRsaWithAes256GcmSha384, 0xC030),
            (CipherSuite::EcdheRsaWithChacha20Poly1305Sha256, 0xCCA8),
            (CipherSuite::EcdheEcdsaWithChacha20Poly1305Sha256, 0xCCA9),
            (CipherSuite::PskWithAes128GcmSha256, 0x00A8),
            (CipherSuite::PskWithAes256GcmSha384, 0x00A9),
            (CipherSuite::EcdhePskWithChacha20Poly1305Sha256, 0xCCAC),
            (CipherSuite::EmptyRenegotiationInfoScsv, 0x00FF),
        ];
        for (suite, code) in expected {
            assert_eq!(suite.to_u16(), code);
            assert_eq!(CipherSuite::from_u16(code), suite);
        }
        // A CBC suite (TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA) is unknown and unusable.
        assert_eq!(CipherSuite::from_u16(0xC009).params(), None);
        assert_eq!(CipherSuite::EmptyRenegotiationInfoScsv.params(), None);
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
                SuiteAead::Aes128Gcm => "Aes128Gcm",
                SuiteAead::Aes256Gcm => "Aes256Gcm",
                SuiteAead::ChaCha20Poly1305 => "Chacha20Poly1305",
            };
            assert!(name.contains(aead), "{name}");
            let kx = match p.key_exchange {
                KeyExchange::EcdheEcdsa => "EcdheEcdsa",
                KeyExchange::EcdheRsa => "EcdheRsa",
                KeyExchange::Psk => "PskWith",
                KeyExchange::EcdhePsk => "EcdhePsk",
            };
            assert!(name.starts_with(kx), "{name}");
        }
        let p = CipherSuite::EcdheRsaWithAes256GcmSha384
            .params()
            .expect("supported");
        assert_eq!(p.key_block_len(), 2 * (32 + 4));
        let p = CipherSuite::EcdhePskWithChacha20Poly1305Sha256
            .params()
            .expect("supported");
        assert_eq!(p.key_block_len(), 2 * (32 + 12));
    }

    #[test]
    fn version_ordering() {
        assert_eq!(ProtocolVersion::Dtls1_2.to_u16(), 0xfefd);
        assert!(ProtocolVersion::Dtls1_2.offers_dtls12());
        assert!(ProtocolVersion::from_u16(0xfefc).offers_dtls12());
        assert!(!ProtocolVersion::Dtls1_0.offers_dtls12());
        assert!(!ProtocolVersion::from_u16(0x0303).offers_dtls12());
    }
}
