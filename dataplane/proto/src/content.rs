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
            _ => None,
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
}
