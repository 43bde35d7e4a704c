//! IANA code tables used by the DTLS 1.2 handshake: named groups, signature schemes,
//! handshake types, extension types, SRTP protection profiles, client certificate types
//! and heartbeat modes.
//!
//! Each table is an enum with an `Unknown` variant, because the protocol requires many
//! unknown values to be carried and ignored (RFC 5246 §7.4.1.4 for extensions, RFC 8422
//! §5.1.1 for groups, RFC 5246 §7.4.1.4.1 for signature algorithms). `from_*` never fails;
//! `Unknown` is only produced for codes that have no named variant.

/// Defines a code-point enum over an integer type with total `from`/`to` conversions.
macro_rules! code_enum {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident : $repr:ty as ($from:ident, $to:ident) {
            $( $(#[$vmeta:meta])* $variant:ident = $value:literal, )*
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        $vis enum $name {
            $( $(#[$vmeta])* $variant, )*
            /// A code point without a named variant, kept so it can be ignored or reported.
            /// Never constructed by the `from` function for a code that has a named variant.
            Unknown($repr),
        }

        impl $name {
            /// Every named variant, in declaration order.
            pub const KNOWN: &'static [$name] = &[$($name::$variant,)*];

            /// Maps a wire code to its variant (`Unknown` when it has no name).
            pub const fn $from(code: $repr) -> Self {
                match code {
                    $( $value => $name::$variant, )*
                    other => $name::Unknown(other),
                }
            }

            /// The wire code.
            pub const fn $to(self) -> $repr {
                match self {
                    $( $name::$variant => $value, )*
                    $name::Unknown(code) => code,
                }
            }

            /// Whether this is a named (known) code point.
            pub const fn is_known(self) -> bool {
                !matches!(self, $name::Unknown(_))
            }
        }
    };
}
pub(crate) use code_enum;

code_enum! {
    /// Handshake message types (RFC 5246 §7.4, RFC 6347 §4.3.2, RFC 5077 §3.3; DTLS 1.3:
    /// RFC 8446 §4, RFC 9147 §5.1 and §9).
    pub enum HandshakeType: u8 as (from_u8, to_u8) {
        /// hello_request(0)
        HelloRequest = 0,
        /// client_hello(1)
        ClientHello = 1,
        /// server_hello(2)
        ServerHello = 2,
        /// hello_verify_request(3), DTLS only (RFC 6347 §4.2.1)
        HelloVerifyRequest = 3,
        /// new_session_ticket(4) (RFC 5077; RFC 8446 §4.6.1 in 1.3)
        NewSessionTicket = 4,
        /// end_of_early_data(5) (RFC 8446 §4.5) — 1.3 only; DTLS 1.3 never sends it
        /// (RFC 9147 §5.6), it is named so that it can be refused by name.
        EndOfEarlyData = 5,
        /// encrypted_extensions(8) (RFC 8446 §4.3.1) — 1.3 only.
        EncryptedExtensions = 8,
        /// request_connection_id(9) (RFC 9147 §9) — 1.3 only.
        RequestConnectionId = 9,
        /// new_connection_id(10) (RFC 9147 §9) — 1.3 only.
        NewConnectionId = 10,
        /// certificate(11)
        Certificate = 11,
        /// server_key_exchange(12)
        ServerKeyExchange = 12,
        /// certificate_request(13)
        CertificateRequest = 13,
        /// server_hello_done(14)
        ServerHelloDone = 14,
        /// certificate_verify(15)
        CertificateVerify = 15,
        /// client_key_exchange(16)
        ClientKeyExchange = 16,
        /// finished(20)
        Finished = 20,
        /// key_update(24) (RFC 8446 §4.6.3) — 1.3 only.
        KeyUpdate = 24,
        /// message_hash(254) (RFC 8446 §4.4.1): the synthetic message that stands for
        /// ClientHello1 in the transcript after a HelloRetryRequest; never on the wire.
        MessageHash = 254,
    }
}

code_enum! {
    /// Named groups for ECDHE (RFC 8422 §5.1.1, RFC 7919; IANA "TLS Supported Groups").
    pub enum NamedGroup: u16 as (from_u16, to_u16) {
        /// secp256r1(23)
        Secp256r1 = 23,
        /// secp384r1(24)
        Secp384r1 = 24,
        /// secp521r1(25) — recognised, not implemented by our crypto.
        Secp521r1 = 25,
        /// x25519(29)
        X25519 = 29,
        /// x448(30) — recognised, not implemented by our crypto.
        X448 = 30,
        /// X25519MLKEM768(0x11EC): the hybrid of ML-KEM-768 (FIPS 203) and X25519
        /// (draft-ietf-tls-ecdhe-mlkem; IANA "TLS Supported Groups") — TLS 1.3 only.
        X25519Mlkem768 = 0x11ec,
    }
}

impl NamedGroup {
    /// Groups this project implements, in our default preference order.
    pub const SUPPORTED: &'static [NamedGroup] = &[
        NamedGroup::X25519,
        NamedGroup::Secp256r1,
        NamedGroup::Secp384r1,
    ];

    /// Length in bytes of a public key (the `point` field) for the supported groups:
    /// 32 for X25519, 65 / 97 for uncompressed P-256 / P-384 points (RFC 8422 §5.4.1).
    pub const fn public_key_len(self) -> Option<usize> {
        match self {
            NamedGroup::X25519 => Some(32),
            NamedGroup::Secp256r1 => Some(65),
            NamedGroup::Secp384r1 => Some(97),
            _ => None,
        }
    }
}

code_enum! {
    /// Signature schemes (RFC 8446 §4.2.3 names; in TLS 1.2 the same two bytes are the
    /// `SignatureAndHashAlgorithm` {hash, signature} pair of RFC 5246 §7.4.1.4.1, RFC 8422
    /// §5.1.3 and RFC 8447).
    pub enum SignatureScheme: u16 as (from_u16, to_u16) {
        /// rsa_pkcs1_sha256 {sha256(4), rsa(1)}
        RsaPkcs1Sha256 = 0x0401,
        /// ecdsa_secp256r1_sha256 {sha256(4), ecdsa(3)}
        EcdsaSecp256r1Sha256 = 0x0403,
        /// rsa_pkcs1_sha384 {sha384(5), rsa(1)}
        RsaPkcs1Sha384 = 0x0501,
        /// ecdsa_secp384r1_sha384 {sha384(5), ecdsa(3)}
        EcdsaSecp384r1Sha384 = 0x0503,
        /// rsa_pkcs1_sha512 — recognised, not offered.
        RsaPkcs1Sha512 = 0x0601,
        /// ecdsa_secp521r1_sha512 — recognised, not offered.
        EcdsaSecp521r1Sha512 = 0x0603,
        /// rsa_pss_rsae_sha256
        RsaPssRsaeSha256 = 0x0804,
        /// rsa_pss_rsae_sha384
        RsaPssRsaeSha384 = 0x0805,
        /// rsa_pss_rsae_sha512 — recognised, not offered.
        RsaPssRsaeSha512 = 0x0806,
        /// ed25519 (RFC 8422 §5.1.3)
        Ed25519 = 0x0807,
        /// ed448 — recognised, not offered.
        Ed448 = 0x0808,
    }
}

impl SignatureScheme {
    /// Schemes this project implements, in our default preference order.
    pub const SUPPORTED: &'static [SignatureScheme] = &[
        SignatureScheme::EcdsaSecp256r1Sha256,
        SignatureScheme::EcdsaSecp384r1Sha384,
        SignatureScheme::Ed25519,
        SignatureScheme::RsaPssRsaeSha256,
        SignatureScheme::RsaPssRsaeSha384,
        SignatureScheme::RsaPkcs1Sha256,
        SignatureScheme::RsaPkcs1Sha384,
    ];

    /// Whether the scheme signs with an RSA key (usable with ECDHE_RSA suites).
    pub const fn is_rsa(self) -> bool {
        matches!(
            self,
            SignatureScheme::RsaPkcs1Sha256
                | SignatureScheme::RsaPkcs1Sha384
                | SignatureScheme::RsaPkcs1Sha512
                | SignatureScheme::RsaPssRsaeSha256
                | SignatureScheme::RsaPssRsaeSha384
                | SignatureScheme::RsaPssRsaeSha512
        )
    }

    /// Whether the scheme signs with an ECDSA or EdDSA key (usable with ECDHE_ECDSA suites,
    /// RFC 8422 §2: "ECDHE_ECDSA" covers EdDSA certificates too).
    pub const fn is_ecdsa_or_eddsa(self) -> bool {
        matches!(
            self,
            SignatureScheme::EcdsaSecp256r1Sha256
                | SignatureScheme::EcdsaSecp384r1Sha384
                | SignatureScheme::EcdsaSecp521r1Sha512
                | SignatureScheme::Ed25519
                | SignatureScheme::Ed448
        )
    }
}

code_enum! {
    /// Extension types (IANA "TLS ExtensionType Values").
    pub enum ExtensionType: u16 as (from_u16, to_u16) {
        /// server_name(0) (RFC 6066)
        ServerName = 0,
        /// max_fragment_length(1) (RFC 6066)
        MaxFragmentLength = 1,
        /// status_request(5) (RFC 6066)
        StatusRequest = 5,
        /// supported_groups(10) (RFC 8422, RFC 7919)
        SupportedGroups = 10,
        /// ec_point_formats(11) (RFC 8422)
        EcPointFormats = 11,
        /// signature_algorithms(13) (RFC 5246, RFC 8446)
        SignatureAlgorithms = 13,
        /// use_srtp(14) (RFC 5764)
        UseSrtp = 14,
        /// heartbeat(15) (RFC 6520)
        Heartbeat = 15,
        /// application_layer_protocol_negotiation(16) (RFC 7301)
        Alpn = 16,
        /// signed_certificate_timestamp(18) (RFC 6962)
        SignedCertificateTimestamp = 18,
        /// padding(21) (RFC 7685)
        Padding = 21,
        /// encrypt_then_mac(22) (RFC 7366) — irrelevant for AEAD suites.
        EncryptThenMac = 22,
        /// extended_master_secret(23) (RFC 7627)
        ExtendedMasterSecret = 23,
        /// record_size_limit(28) (RFC 8449)
        RecordSizeLimit = 28,
        /// session_ticket(35) (RFC 5077, RFC 8447)
        SessionTicket = 35,
        /// pre_shared_key(41) (RFC 8446 §4.2.11) — 1.3.
        PreSharedKey = 41,
        /// early_data(42) (RFC 8446 §4.2.10) — 1.3.
        EarlyData = 42,
        /// supported_versions(43) (RFC 8446 §4.2.1) — used by DTLS 1.3.
        SupportedVersions = 43,
        /// cookie(44) (RFC 8446 §4.2.2) — 1.3.
        Cookie = 44,
        /// psk_key_exchange_modes(45) (RFC 8446 §4.2.9) — 1.3.
        PskKeyExchangeModes = 45,
        /// certificate_authorities(47) (RFC 8446 §4.2.4) — 1.3.
        CertificateAuthorities = 47,
        /// oid_filters(48) (RFC 8446 §4.2.5) — 1.3.
        OidFilters = 48,
        /// post_handshake_auth(49) (RFC 8446 §4.2.6) — 1.3.
        PostHandshakeAuth = 49,
        /// signature_algorithms_cert(50) (RFC 8446 §4.2.3) — 1.3.
        SignatureAlgorithmsCert = 50,
        /// key_share(51) (RFC 8446 §4.2.8) — 1.3.
        KeyShare = 51,
        /// connection_id(54) (RFC 9146)
        ConnectionId = 54,
        /// rrc(61) (RFC 9853 §3, §10.2): empty in ClientHello and ServerHello.
        Rrc = 61,
        /// renegotiation_info(0xff01) (RFC 5746)
        RenegotiationInfo = 0xff01,
    }
}

code_enum! {
    /// SRTP protection profiles negotiated by use_srtp (RFC 5764 §4.1.2, RFC 7714 §14.2).
    pub enum SrtpProtectionProfile: u16 as (from_u16, to_u16) {
        /// SRTP_AES128_CM_HMAC_SHA1_80 {0x00, 0x01}
        Aes128CmHmacSha1_80 = 0x0001,
        /// SRTP_AES128_CM_HMAC_SHA1_32 {0x00, 0x02}
        Aes128CmHmacSha1_32 = 0x0002,
        /// SRTP_NULL_HMAC_SHA1_80 {0x00, 0x05}
        NullHmacSha1_80 = 0x0005,
        /// SRTP_NULL_HMAC_SHA1_32 {0x00, 0x06}
        NullHmacSha1_32 = 0x0006,
        /// SRTP_AEAD_AES_128_GCM {0x00, 0x07} (RFC 7714)
        AeadAes128Gcm = 0x0007,
        /// SRTP_AEAD_AES_256_GCM {0x00, 0x08} (RFC 7714)
        AeadAes256Gcm = 0x0008,
    }
}

impl SrtpProtectionProfile {
    /// (master key length, master salt length) in bytes, which size the RFC 5705 exporter
    /// output for "EXTRACTOR-dtls_srtp" (RFC 5764 §4.2: 2 * (key + salt) bytes).
    /// RFC 5764 §4.1.2 gives 128-bit keys and 112-bit salts for the AES-CM profiles;
    /// RFC 7714 §12 gives 128/256-bit keys and 96-bit salts for the AEAD profiles.
    /// `None` for the NULL-cipher profiles (which we never negotiate) and unknown ones.
    pub const fn master_key_salt_len(self) -> Option<(usize, usize)> {
        match self {
            SrtpProtectionProfile::Aes128CmHmacSha1_80
            | SrtpProtectionProfile::Aes128CmHmacSha1_32 => Some((16, 14)),
            SrtpProtectionProfile::AeadAes128Gcm => Some((16, 12)),
            SrtpProtectionProfile::AeadAes256Gcm => Some((32, 12)),
            _ => None,
        }
    }
}

code_enum! {
    /// ClientCertificateType in CertificateRequest (RFC 5246 §7.4.4, RFC 8422 §5.5).
    pub enum ClientCertificateType: u8 as (from_u8, to_u8) {
        /// rsa_sign(1)
        RsaSign = 1,
        /// ecdsa_sign(64)
        EcdsaSign = 64,
    }
}

code_enum! {
    /// HeartbeatMode of the heartbeat extension (RFC 6520 §2).
    pub enum HeartbeatMode: u8 as (from_u8, to_u8) {
        /// peer_allowed_to_send(1)
        PeerAllowedToSend = 1,
        /// peer_not_allowed_to_send(2)
        PeerNotAllowedToSend = 2,
    }
}

/// ECPointFormat `uncompressed(0)` (RFC 8422 §5.1.2), the only format we use.
pub const EC_POINT_FORMAT_UNCOMPRESSED: u8 = 0;

/// CompressionMethod `null(0)` (RFC 5246 §7.4.1.2), the only method we accept.
pub const COMPRESSION_NULL: u8 = 0;

/// ECCurveType `named_curve(3)` (RFC 8422 §5.4); explicit curves are deprecated.
pub const CURVE_TYPE_NAMED_CURVE: u8 = 3;

/// ChangeCipherSpec content type value, the single byte of a CCS message (RFC 5246 §7.1).
pub const CHANGE_CIPHER_SPEC: u8 = 1;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_tables_round_trip_and_keep_unknowns() {
        for &g in NamedGroup::KNOWN {
            assert_eq!(NamedGroup::from_u16(g.to_u16()), g);
        }
        assert_eq!(NamedGroup::from_u16(29), NamedGroup::X25519);
        assert_eq!(NamedGroup::from_u16(0x1234), NamedGroup::Unknown(0x1234));
        assert!(!NamedGroup::from_u16(0x1234).is_known());
        assert_eq!(SignatureScheme::from_u16(0x0807), SignatureScheme::Ed25519);
        assert_eq!(SignatureScheme::EcdsaSecp384r1Sha384.to_u16(), 0x0503);
        assert_eq!(SignatureScheme::RsaPssRsaeSha384.to_u16(), 0x0805);
        assert_eq!(ExtensionType::RenegotiationInfo.to_u16(), 0xff01);
        assert_eq!(
            ExtensionType::from_u16(23),
            ExtensionType::ExtendedMasterSecret
        );
        assert_eq!(HandshakeType::from_u8(3), HandshakeType::HelloVerifyRequest);
        assert_eq!(HandshakeType::from_u8(99), HandshakeType::Unknown(99));
        assert_eq!(
            SrtpProtectionProfile::from_u16(7),
            SrtpProtectionProfile::AeadAes128Gcm
        );
        assert_eq!(
            SrtpProtectionProfile::AeadAes256Gcm.master_key_salt_len(),
            Some((32, 12))
        );
        for &s in SignatureScheme::SUPPORTED {
            assert!(
                s.is_rsa() != s.is_ecdsa_or_eddsa(),
                "{s:?} in exactly one family"
            );
        }
    }
}
