//! The cipher suites this engine negotiates.
//!
//! AEAD suites only (no CBC, RC4 or NULL): nothing here maps to the record layer's null
//! baseline key.

use dataplane::record::Aead;
use dtls_crypto::PrfHash;

pub use dtls_proto::KeyExchange;

/// A DTLS 1.2 cipher suite this engine supports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CipherSuite {
    /// TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256 (0xC02B, RFC 5289)
    EcdheEcdsaAes128GcmSha256,
    /// TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384 (0xC02C, RFC 5289)
    EcdheEcdsaAes256GcmSha384,
    /// TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256 (0xCCA9, RFC 7905)
    EcdheEcdsaChacha20Poly1305Sha256,
    /// TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256 (0xC02F, RFC 5289)
    EcdheRsaAes128GcmSha256,
    /// TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384 (0xC030, RFC 5289)
    EcdheRsaAes256GcmSha384,
    /// TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256 (0xCCA8, RFC 7905)
    EcdheRsaChacha20Poly1305Sha256,
    /// TLS_PSK_WITH_AES_128_GCM_SHA256 (0x00A8, RFC 5487)
    PskAes128GcmSha256,
    /// TLS_PSK_WITH_AES_256_GCM_SHA384 (0x00A9, RFC 5487)
    PskAes256GcmSha384,
    /// TLS_ECDHE_PSK_WITH_CHACHA20_POLY1305_SHA256 (0xCCAC, RFC 7905)
    EcdhePskChacha20Poly1305Sha256,
}

impl CipherSuite {
    /// Every supported suite, in the default preference order.
    pub const ALL: [CipherSuite; 9] = [
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

    /// The IANA code point.
    pub fn code(self) -> u16 {
        match self {
            CipherSuite::EcdheEcdsaAes128GcmSha256 => 0xc02b,
            CipherSuite::EcdheEcdsaAes256GcmSha384 => 0xc02c,
            CipherSuite::EcdheEcdsaChacha20Poly1305Sha256 => 0xcca9,
            CipherSuite::EcdheRsaAes128GcmSha256 => 0xc02f,
            CipherSuite::EcdheRsaAes256GcmSha384 => 0xc030,
            CipherSuite::EcdheRsaChacha20Poly1305Sha256 => 0xcca8,
            CipherSuite::PskAes128GcmSha256 => 0x00a8,
            CipherSuite::PskAes256GcmSha384 => 0x00a9,
            CipherSuite::EcdhePskChacha20Poly1305Sha256 => 0xccac,
        }
    }

    /// The suite for an IANA code point, if supported.
    pub fn from_code(code: u16) -> Option<Self> {
        CipherSuite::ALL.into_iter().find(|s| s.code() == code)
    }

    /// The wire code-table value.
    pub fn to_wire(self) -> dtls_proto::CipherSuite {
        dtls_proto::CipherSuite::from_u16(self.code())
    }

    /// The suite for a wire code-table value, if supported.
    pub fn from_wire(suite: dtls_proto::CipherSuite) -> Option<Self> {
        Self::from_code(suite.to_u16())
    }

    /// The key exchange.
    pub fn key_exchange(self) -> KeyExchange {
        match self {
            CipherSuite::EcdheEcdsaAes128GcmSha256
            | CipherSuite::EcdheEcdsaAes256GcmSha384
            | CipherSuite::EcdheEcdsaChacha20Poly1305Sha256 => KeyExchange::EcdheEcdsa,
            CipherSuite::EcdheRsaAes128GcmSha256
            | CipherSuite::EcdheRsaAes256GcmSha384
            | CipherSuite::EcdheRsaChacha20Poly1305Sha256 => KeyExchange::EcdheRsa,
            CipherSuite::PskAes128GcmSha256 | CipherSuite::PskAes256GcmSha384 => KeyExchange::Psk,
            CipherSuite::EcdhePskChacha20Poly1305Sha256 => KeyExchange::EcdhePsk,
        }
    }

    /// The record protection AEAD.
    pub fn aead(self) -> Aead {
        match self {
            CipherSuite::EcdheEcdsaAes128GcmSha256
            | CipherSuite::EcdheRsaAes128GcmSha256
            | CipherSuite::PskAes128GcmSha256 => Aead::Aes128Gcm,
            CipherSuite::EcdheEcdsaAes256GcmSha384
            | CipherSuite::EcdheRsaAes256GcmSha384
            | CipherSuite::PskAes256GcmSha384 => Aead::Aes256Gcm,
            CipherSuite::EcdheEcdsaChacha20Poly1305Sha256
            | CipherSuite::EcdheRsaChacha20Poly1305Sha256
            | CipherSuite::EcdhePskChacha20Poly1305Sha256 => Aead::ChaCha20Poly1305,
        }
    }

    /// The PRF / transcript hash (RFC 5246 §5; SHA-384 for the `_SHA384` suites).
    pub fn prf_hash(self) -> PrfHash {
        match self {
            CipherSuite::EcdheEcdsaAes256GcmSha384
            | CipherSuite::EcdheRsaAes256GcmSha384
            | CipherSuite::PskAes256GcmSha384 => PrfHash::Sha384,
            _ => PrfHash::Sha256,
        }
    }

    /// Whether the suite needs an ECDHE exchange.
    pub fn uses_ecdhe(self) -> bool {
        !matches!(self.key_exchange(), KeyExchange::Psk)
    }

    /// Whether the suite is authenticated by a pre-shared key.
    pub fn uses_psk(self) -> bool {
        matches!(
            self.key_exchange(),
            KeyExchange::Psk | KeyExchange::EcdhePsk
        )
    }

    /// Whether the server authenticates with a certificate.
    pub fn uses_certificate(self) -> bool {
        matches!(
            self.key_exchange(),
            KeyExchange::EcdheEcdsa | KeyExchange::EcdheRsa
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip() {
        for s in CipherSuite::ALL {
            assert_eq!(CipherSuite::from_code(s.code()), Some(s));
        }
        assert_eq!(
            CipherSuite::from_code(0xc02b),
            Some(CipherSuite::EcdheEcdsaAes128GcmSha256)
        );
        // A CBC suite is never recognised.
        assert_eq!(CipherSuite::from_code(0xc009), None);
    }
}
