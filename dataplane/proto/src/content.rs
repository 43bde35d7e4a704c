//! Record content types (RFC 6347 §4.1, RFC 6520 for heartbeat): the one piece of record
//! vocabulary every layer shares. The record layer (`dataplane::record`) reads and writes
//! it; the shard routes by it; the engine frames its handshake, CCS and alert records with it.

/// Record content types (RFC 6347 §4.1, RFC 6520 for heartbeat).
///
/// Unlike the handshake code tables there is no `Unknown` variant: the record layer drops a
/// record of any other content type (RFC 6347 §4.1.2.7: "invalid records SHOULD be silently
/// discarded"), so an unknown value never travels further as a `ContentType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum ContentType {
    /// change_cipher_spec(20)
    ChangeCipherSpec = 20,
    /// alert(21)
    Alert = 21,
    /// handshake(22)
    Handshake = 22,
    /// application_data(23)
    ApplicationData = 23,
    /// heartbeat(24), RFC 6520
    Heartbeat = 24,
    /// return_routability_check(27), RFC 9853 §4 (DTLS 1.2 and 1.3, sessions that
    /// negotiated the `rrc` extension).
    ReturnRoutabilityCheck = RETURN_ROUTABILITY_CHECK,
}

impl ContentType {
    /// The content type for a wire value, `None` for unknown values.
    pub fn from_u8(v: u8) -> Option<Self> {
        match v {
            20 => Some(Self::ChangeCipherSpec),
            21 => Some(Self::Alert),
            22 => Some(Self::Handshake),
            23 => Some(Self::ApplicationData),
            24 => Some(Self::Heartbeat),
            RETURN_ROUTABILITY_CHECK => Some(Self::ReturnRoutabilityCheck),
            _ => None,
        }
    }
}

/// tls12_cid(25), RFC 9146 §4: the outer content type of a DTLS 1.2 record that carries a
/// connection ID (its real type is inside the encrypted DTLSInnerPlaintext).
pub const TLS12_CID: u8 = 25;

/// ack(26), RFC 9147 §7: a record content type of DTLS 1.3 only.
pub const ACK: u8 = 26;

/// return_routability_check(27), RFC 9853 §4 and §10.1 (IANA TLS ContentType registry).
pub const RETURN_ROUTABILITY_CHECK: u8 = 27;

/// The content types a DTLS 1.3 DTLSInnerPlaintext (or a DTLSPlaintext record of 1.3) can
/// carry (RFC 9147 §4.1, Figure 5: the decrypted content type): the shared ones less
/// change_cipher_spec, plus ack.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum InnerContentType {
    /// alert(21)
    Alert = ContentType::Alert as u8,
    /// handshake(22)
    Handshake = ContentType::Handshake as u8,
    /// application_data(23)
    ApplicationData = ContentType::ApplicationData as u8,
    /// heartbeat(24), RFC 6520
    Heartbeat = ContentType::Heartbeat as u8,
    /// ack(26), RFC 9147 §7
    Ack = ACK,
    /// return_routability_check(27), RFC 9853 §4: in DTLS 1.3 the message travels as the
    /// inner content type of a protected record ("The `return_routability_check` message
    /// MUST be authenticated and encrypted using the currently active security context"),
    /// in sessions that negotiated `rrc`.
    ReturnRoutabilityCheck = RETURN_ROUTABILITY_CHECK,
}

impl InnerContentType {
    /// The content type for a wire value, `None` for the others (RFC 9147 §4.1, Figure 5:
    /// "else → Error").
    pub fn from_u8(v: u8) -> Option<Self> {
        match v {
            ACK => Some(Self::Ack),
            _ => match ContentType::from_u8(v)? {
                ContentType::Alert => Some(Self::Alert),
                ContentType::Handshake => Some(Self::Handshake),
                ContentType::ApplicationData => Some(Self::ApplicationData),
                ContentType::Heartbeat => Some(Self::Heartbeat),
                ContentType::ReturnRoutabilityCheck => Some(Self::ReturnRoutabilityCheck),
                ContentType::ChangeCipherSpec => None,
            },
        }
    }
}

impl From<ContentType> for u8 {
    fn from(ct: ContentType) -> u8 {
        ct as u8
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_types_round_trip() {
        for v in 0..=u8::MAX {
            match ContentType::from_u8(v) {
                Some(ct) => assert_eq!(u8::from(ct), v),
                None => assert!(!(20..=24).contains(&v), "{v}"),
            }
        }
    }

    #[test]
    fn inner_content_types_are_the_shared_ones_less_ccs_plus_ack() {
        for t in [21u8, 22, 23, 24, 26, 27] {
            assert_eq!(InnerContentType::from_u8(t).map(|c| c as u8), Some(t));
        }
        for t in [0u8, 20, 25, 28, 255] {
            assert_eq!(InnerContentType::from_u8(t), None);
        }
    }
}
