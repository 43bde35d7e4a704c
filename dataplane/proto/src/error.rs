//! The crate-local error type.

use crate::alert::AlertDescription;

/// Why a handshake-layer structure could not be parsed or emitted.
///
/// Every parse error names the alert the engine should send
/// ([`WireError::alert`]); whether to send it (handshake messages) or drop silently
/// (records that fail parsing, RFC 6347 §4.1.2.7) is the engine's decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// The input ended before a field that must be present.
    #[error("{what}: input truncated")]
    Truncated {
        /// The structure or field being parsed.
        what: &'static str,
    },
    /// A length field disagrees with the data (too short for its element size, below its
    /// minimum, or not a multiple of the element size).
    #[error("{what}: invalid length")]
    BadLength {
        /// The structure or field being parsed.
        what: &'static str,
    },
    /// Bytes remained after a structure that must fill its container exactly.
    #[error("{what}: trailing bytes")]
    TrailingBytes {
        /// The structure or field being parsed.
        what: &'static str,
    },
    /// A field holds a value the protocol forbids at that place.
    #[error("{what}: illegal value")]
    IllegalValue {
        /// The structure or field being parsed.
        what: &'static str,
    },
    /// A handshake message that cannot be interpreted here: an unknown type, or a key
    /// exchange message before a suite was negotiated.
    #[error("{what}: unexpected message")]
    UnexpectedMessage {
        /// What was unexpected.
        what: &'static str,
    },
    /// The same extension type appeared twice in one extension block.
    #[error("duplicate extension type {ext_type:#06x}")]
    DuplicateExtension {
        /// The repeated extension type code.
        ext_type: u16,
    },
    /// A value is too long for its length prefix or for the protocol (emit side).
    #[error("{what}: too long to encode")]
    TooLong {
        /// The structure or field being emitted.
        what: &'static str,
    },
    /// The caller's output buffer is too small (emit side).
    #[error("output buffer too small: need {needed} bytes, have {available}")]
    BufferTooSmall {
        /// Bytes the encoding needs.
        needed: usize,
        /// Bytes the buffer offers.
        available: usize,
    },
}

impl WireError {
    /// The alert description a peer should receive for this error.
    ///
    /// Malformed encodings map to `decode_error` (RFC 5246 §7.2.2: "A message could not be
    /// decoded because some field was out of the specified range or the length of the message
    /// was incorrect"); syntactically valid but forbidden values and duplicate extensions map
    /// to `illegal_parameter`; messages that cannot be interpreted map to
    /// `unexpected_message` (RFC 5246 §7.2.2). Emit-side errors are local bugs and map to `internal_error`.
    pub fn alert(&self) -> AlertDescription {
        match self {
            WireError::Truncated { .. }
            | WireError::BadLength { .. }
            | WireError::TrailingBytes { .. } => AlertDescription::DecodeError,
            WireError::IllegalValue { .. } | WireError::DuplicateExtension { .. } => {
                AlertDescription::IllegalParameter
            }
            WireError::UnexpectedMessage { .. } => AlertDescription::UnexpectedMessage,
            WireError::TooLong { .. } | WireError::BufferTooSmall { .. } => {
                AlertDescription::InternalError
            }
        }
    }
}
