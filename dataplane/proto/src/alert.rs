//! Alert protocol codes and the two-byte Alert message (RFC 5246 §7.2).

use crate::WireError;
use crate::codes::code_enum;

code_enum! {
    /// AlertLevel (RFC 5246 §7.2).
    pub enum AlertLevel: u8 as (from_u8, to_u8) {
        /// warning(1)
        Warning = 1,
        /// fatal(2)
        Fatal = 2,
    }
}

code_enum! {
    /// AlertDescription (RFC 5246 §7.2 plus later registrations from the IANA
    /// "TLS Alerts" registry that apply to (D)TLS 1.2).
    pub enum AlertDescription: u8 as (from_u8, to_u8) {
        /// close_notify(0)
        CloseNotify = 0,
        /// unexpected_message(10)
        UnexpectedMessage = 10,
        /// bad_record_mac(20)
        BadRecordMac = 20,
        /// decryption_failed_RESERVED(21) — must not be sent (RFC 5246).
        DecryptionFailedReserved = 21,
        /// record_overflow(22)
        RecordOverflow = 22,
        /// decompression_failure(30)
        DecompressionFailure = 30,
        /// handshake_failure(40)
        HandshakeFailure = 40,
        /// no_certificate_RESERVED(41) — must not be sent (RFC 5246).
        NoCertificateReserved = 41,
        /// bad_certificate(42)
        BadCertificate = 42,
        /// unsupported_certificate(43)
        UnsupportedCertificate = 43,
        /// certificate_revoked(44)
        CertificateRevoked = 44,
        /// certificate_expired(45)
        CertificateExpired = 45,
        /// certificate_unknown(46)
        CertificateUnknown = 46,
        /// illegal_parameter(47)
        IllegalParameter = 47,
        /// unknown_ca(48)
        UnknownCa = 48,
        /// access_denied(49)
        AccessDenied = 49,
        /// decode_error(50)
        DecodeError = 50,
        /// decrypt_error(51)
        DecryptError = 51,
        /// export_restriction_RESERVED(60) — must not be sent (RFC 5246).
        ExportRestrictionReserved = 60,
        /// protocol_version(70)
        ProtocolVersion = 70,
        /// insufficient_security(71)
        InsufficientSecurity = 71,
        /// internal_error(80)
        InternalError = 80,
        /// inappropriate_fallback(86) (RFC 7507)
        InappropriateFallback = 86,
        /// user_canceled(90)
        UserCanceled = 90,
        /// no_renegotiation(100)
        NoRenegotiation = 100,
        /// unsupported_extension(110) (RFC 5246 §7.2, RFC 6066)
        UnsupportedExtension = 110,
        /// certificate_unobtainable(111) (RFC 6066)
        CertificateUnobtainable = 111,
        /// unrecognized_name(112) (RFC 6066)
        UnrecognizedName = 112,
        /// bad_certificate_status_response(113) (RFC 6066)
        BadCertificateStatusResponse = 113,
        /// bad_certificate_hash_value(114) (RFC 6066)
        BadCertificateHashValue = 114,
        /// unknown_psk_identity(115) (RFC 4279 §2)
        UnknownPskIdentity = 115,
        /// no_application_protocol(120) (RFC 7301 §3.2)
        NoApplicationProtocol = 120,
    }
}

/// An Alert message: `struct { AlertLevel level; AlertDescription description; }`
/// (RFC 5246 §7.2), exactly two bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Alert {
    /// warning or fatal.
    pub level: AlertLevel,
    /// What happened.
    pub description: AlertDescription,
}

impl Alert {
    /// Encoded length.
    pub const LEN: usize = 2;

    /// A fatal alert with `description`.
    pub const fn fatal(description: AlertDescription) -> Self {
        Alert {
            level: AlertLevel::Fatal,
            description,
        }
    }

    /// The close_notify warning alert (RFC 5246 §7.2.1).
    pub const fn close_notify() -> Self {
        Alert {
            level: AlertLevel::Warning,
            description: AlertDescription::CloseNotify,
        }
    }

    /// Parses the plaintext of an alert record. It must be exactly two bytes (we do not
    /// accept several alerts or a fragmented alert in one DTLS record).
    pub fn parse(data: &[u8]) -> Result<Self, WireError> {
        match data {
            [level, description] => Ok(Alert {
                level: AlertLevel::from_u8(*level),
                description: AlertDescription::from_u8(*description),
            }),
            _ if data.len() < 2 => Err(WireError::Truncated { what: "alert" }),
            _ => Err(WireError::TrailingBytes { what: "alert" }),
        }
    }

    /// The two wire bytes.
    pub const fn to_bytes(self) -> [u8; 2] {
        [self.level.to_u8(), self.description.to_u8()]
    }

    /// Appends the two wire bytes.
    pub fn emit(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to_bytes());
    }

    /// Whether the alert ends the session: fatal level, or close_notify (RFC 5246 §7.2.1).
    pub fn is_fatal_or_close(&self) -> bool {
        self.level == AlertLevel::Fatal || self.description == AlertDescription::CloseNotify
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alert_parses_exactly_two_bytes() {
        let a = Alert::parse(&[2, 40]).expect("two bytes are an alert");
        assert_eq!(a, Alert::fatal(AlertDescription::HandshakeFailure));
        assert_eq!(a.to_bytes(), [2, 40]);
        assert_eq!(
            Alert::parse(&[2]),
            Err(WireError::Truncated { what: "alert" })
        );
        assert_eq!(
            Alert::parse(&[]),
            Err(WireError::Truncated { what: "alert" })
        );
        assert_eq!(
            Alert::parse(&[2, 40, 1]),
            Err(WireError::TrailingBytes { what: "alert" })
        );
        let unknown = Alert::parse(&[7, 201]).expect("unknown codes are representable");
        assert_eq!(unknown.level, AlertLevel::Unknown(7));
        assert_eq!(unknown.description, AlertDescription::Unknown(201));
        assert_eq!(AlertDescription::UnknownPskIdentity.to_u8(), 115);
        assert_eq!(AlertDescription::NoRenegotiation.to_u8(), 100);
        assert_eq!(AlertDescription::UnsupportedExtension.to_u8(), 110);
        assert!(Alert::close_notify().is_fatal_or_close());
        let mut out = Vec::new();
        Alert::close_notify().emit(&mut out);
        assert_eq!(out, [1, 0]);
    }
}
