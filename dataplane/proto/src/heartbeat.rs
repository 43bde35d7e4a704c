//! The Heartbeat protocol message (RFC 6520 §4), content type 24.
//!
//! ```text
//! struct {
//!    HeartbeatMessageType type;   // request(1), response(2)
//!    uint16 payload_length;
//!    opaque payload[HeartbeatMessage.payload_length];
//!    opaque padding[padding_length];   // padding_length >= 16
//! } HeartbeatMessage;
//! ```
//!
//! The parser is where Heartbleed (CVE-2014-0160) lived: it trusts nothing but the
//! record length.

use crate::WireError;
use crate::codec::Reader;

/// Minimum padding (RFC 6520 §4: "The padding_length MUST be at least 16.").
pub const MIN_HEARTBEAT_PADDING: usize = 16;

/// The fixed part of a HeartbeatMessage: type(1) + payload_length(2).
pub const HEARTBEAT_HEADER_LEN: usize = 3;

/// Maximum HeartbeatMessage length (RFC 6520 §4: "The total length of a
/// HeartbeatMessage MUST NOT exceed 2^14 or max_fragment_length when negotiated").
pub const MAX_HEARTBEAT_LEN: usize = 1 << 14;

/// HeartbeatMessageType (RFC 6520 §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HeartbeatMessageType {
    /// heartbeat_request(1)
    Request,
    /// heartbeat_response(2)
    Response,
}

impl HeartbeatMessageType {
    /// The message type for a wire value; `None` for any other value, whose message is
    /// discarded silently (RFC 6520 §4).
    pub const fn from_u8(code: u8) -> Option<Self> {
        match code {
            1 => Some(HeartbeatMessageType::Request),
            2 => Some(HeartbeatMessageType::Response),
            _ => None,
        }
    }

    /// The wire value.
    pub const fn to_u8(self) -> u8 {
        match self {
            HeartbeatMessageType::Request => 1,
            HeartbeatMessageType::Response => 2,
        }
    }
}

/// A parsed heartbeat message. The received padding is ignored (RFC 6520 §4: "The
/// padding of a received HeartbeatMessage message MUST be ignored").
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HeartbeatMessage {
    /// Request or response.
    pub kind: HeartbeatMessageType,
    /// The payload, echoed in a response.
    pub payload: Vec<u8>,
}

impl HeartbeatMessage {
    /// Parses one heartbeat record's plaintext.
    ///
    /// RFC 6520 §4: "If the payload_length of a received HeartbeatMessage is too large,
    /// the received HeartbeatMessage MUST be discarded silently." Any error here means
    /// "discard silently"; the error only says why. Unknown message types are likewise
    /// discarded (RFC 6520 §4).
    pub fn parse(record: &[u8]) -> Result<Self, WireError> {
        if record.len() > MAX_HEARTBEAT_LEN {
            return Err(WireError::BadLength {
                what: "heartbeat message longer than 2^14",
            });
        }
        let mut r = Reader::new(record, "heartbeat");
        let kind = HeartbeatMessageType::from_u8(r.u8()?).ok_or(WireError::IllegalValue {
            what: "heartbeat message type",
        })?;
        let payload_length = usize::from(r.u16()?);
        // The payload plus at least 16 bytes of padding must fit the record, or the
        // payload_length is "too large".
        let available = record.len() - HEARTBEAT_HEADER_LEN;
        if payload_length + MIN_HEARTBEAT_PADDING > available {
            return Err(WireError::BadLength {
                what: "heartbeat payload_length",
            });
        }
        let payload = r.bytes(payload_length)?.to_vec();
        Ok(HeartbeatMessage { kind, payload })
    }

    /// Appends the message with `padding` (at least 16 bytes, which the caller fills from
    /// its RNG: RFC 6520 §4 "The padding is random content").
    pub fn emit(&self, padding: &[u8], out: &mut Vec<u8>) -> Result<(), WireError> {
        if padding.len() < MIN_HEARTBEAT_PADDING {
            return Err(WireError::IllegalValue {
                what: "heartbeat padding shorter than 16",
            });
        }
        if HEARTBEAT_HEADER_LEN + self.payload.len() + padding.len() > MAX_HEARTBEAT_LEN {
            return Err(WireError::TooLong {
                what: "heartbeat message",
            });
        }
        out.push(self.kind.to_u8());
        // Bounded by MAX_HEARTBEAT_LEN above, so it fits u16.
        out.extend_from_slice(&(self.payload.len() as u16).to_be_bytes());
        out.extend_from_slice(&self.payload);
        out.extend_from_slice(padding);
        Ok(())
    }

    /// The response to this request (same payload), or `None` for a response.
    pub fn response(&self) -> Option<HeartbeatMessage> {
        (self.kind == HeartbeatMessageType::Request).then(|| HeartbeatMessage {
            kind: HeartbeatMessageType::Response,
            payload: self.payload.clone(),
        })
    }
}
