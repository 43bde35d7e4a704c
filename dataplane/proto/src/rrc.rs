//! The return-routability check message (RFC 9853 §4), content type
//! `return_routability_check` (27).
//!
//! ```text
//! uint64 Cookie;
//! enum { path_challenge(0), path_response(1), path_drop(2), (255) } rrc_msg_type;
//! struct {
//!     rrc_msg_type msg_type;
//!     select (return_routability_check.msg_type) {
//!         case path_challenge: Cookie;
//!         case path_response:  Cookie;
//!         case path_drop:      Cookie;
//!     };
//! } return_routability_check;
//! ```
//!
//! Codepoints (RFC 9853 §10, IANA Considerations): the content type
//! `return_routability_check` is 27 in the TLS ContentType registry (§10.1, DTLS-OK "Y",
//! DTLS 1.2 and 1.3 only; [`crate::RETURN_ROUTABILITY_CHECK`]) and the `rrc`
//! extension is 61 in the TLS ExtensionType Values registry (§10.2, "CH, SH", DTLS-only;
//! [`crate::ExtensionType::Rrc`]). The draft's text carries them as TBD2 and TBD1; the values
//! are those IANA registered, which other implementations' registry tables agree on.
//!
//! RFC 9853 §4: "implementations MUST be able to parse and gracefully ignore messages
//! with an unknown `msg_type`": such a message parses as [`RrcMessageType::Unknown`] (its
//! body, whose shape we cannot know, is not read).

use crate::WireError;

/// The length of a cookie (RFC 9853 §4: "an 8-byte field").
pub const RRC_COOKIE_LEN: usize = 8;

/// The length of every message this module emits: type and cookie.
pub const RRC_MESSAGE_LEN: usize = 1 + RRC_COOKIE_LEN;

/// rrc_msg_type (RFC 9853 §4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RrcMessageType {
    /// path_challenge(0)
    PathChallenge,
    /// path_response(1)
    PathResponse,
    /// path_drop(2)
    PathDrop,
    /// Any other value: ignored (RFC 9853 §4).
    Unknown(u8),
}

impl RrcMessageType {
    /// The message type for a wire value.
    pub const fn from_u8(code: u8) -> Self {
        match code {
            0 => Self::PathChallenge,
            1 => Self::PathResponse,
            2 => Self::PathDrop,
            other => Self::Unknown(other),
        }
    }

    /// The wire value.
    pub const fn to_u8(self) -> u8 {
        match self {
            Self::PathChallenge => 0,
            Self::PathResponse => 1,
            Self::PathDrop => 2,
            Self::Unknown(code) => code,
        }
    }
}

/// A parsed return_routability_check message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RrcMessage {
    /// One of the three known messages with its cookie.
    Known {
        /// path_challenge, path_response or path_drop.
        kind: RrcMessageType,
        /// The cookie.
        cookie: [u8; RRC_COOKIE_LEN],
    },
    /// A message of a type we do not know, to be ignored.
    Unknown(u8),
}

impl RrcMessage {
    /// A path_challenge carrying `cookie`.
    pub const fn challenge(cookie: [u8; RRC_COOKIE_LEN]) -> Self {
        Self::Known {
            kind: RrcMessageType::PathChallenge,
            cookie,
        }
    }

    /// A path_response echoing `cookie`.
    pub const fn response(cookie: [u8; RRC_COOKIE_LEN]) -> Self {
        Self::Known {
            kind: RrcMessageType::PathResponse,
            cookie,
        }
    }

    /// Parses the content of one return_routability_check record: exactly a type and, for
    /// the known types, an 8-byte cookie.
    pub fn parse(body: &[u8]) -> Result<Self, WireError> {
        let (&code, rest) = body.split_first().ok_or(WireError::Truncated {
            what: "return_routability_check",
        })?;
        let kind = RrcMessageType::from_u8(code);
        if let RrcMessageType::Unknown(code) = kind {
            return Ok(Self::Unknown(code));
        }
        let cookie = rest
            .first_chunk::<RRC_COOKIE_LEN>()
            .ok_or(WireError::Truncated { what: "rrc cookie" })?;
        if rest.len() != RRC_COOKIE_LEN {
            return Err(WireError::TrailingBytes {
                what: "return_routability_check",
            });
        }
        Ok(Self::Known {
            kind,
            cookie: *cookie,
        })
    }

    /// Writes a known message into `out` (at least [`RRC_MESSAGE_LEN`] bytes); returns the
    /// length written. An [`RrcMessage::Unknown`] has no body we could write.
    pub fn emit(&self, out: &mut [u8]) -> Result<usize, WireError> {
        let Self::Known { kind, cookie } = self else {
            return Err(WireError::IllegalValue {
                what: "unknown rrc_msg_type",
            });
        };
        let available = out.len();
        let slot = out
            .first_chunk_mut::<RRC_MESSAGE_LEN>()
            .ok_or(WireError::BufferTooSmall {
                needed: RRC_MESSAGE_LEN,
                available,
            })?;
        slot[0] = kind.to_u8();
        slot[1..].copy_from_slice(cookie);
        Ok(RRC_MESSAGE_LEN)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn challenge_bytes() {
        let mut out = [0u8; RRC_MESSAGE_LEN];
        let n = RrcMessage::challenge([1, 2, 3, 4, 5, 6, 7, 8])
            .emit(&mut out)
            .expect("fits");
        assert_eq!(n, 9);
        assert_eq!(out, [0, 1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(
            RrcMessage::parse(&[1, 9, 9, 9, 9, 9, 9, 9, 9]),
            Ok(RrcMessage::response([9; 8]))
        );
        assert_eq!(
            RrcMessage::parse(&[2, 0, 0, 0, 0, 0, 0, 0, 7]),
            Ok(RrcMessage::Known {
                kind: RrcMessageType::PathDrop,
                cookie: [0, 0, 0, 0, 0, 0, 0, 7],
            })
        );
    }

    #[test]
    fn bad_lengths_and_unknown_types() {
        assert!(RrcMessage::parse(&[]).is_err());
        assert!(RrcMessage::parse(&[0, 1, 2, 3]).is_err());
        assert!(RrcMessage::parse(&[0; 10]).is_err());
        // RFC 9853 §4: unknown types parse (to be ignored), whatever follows.
        assert_eq!(RrcMessage::parse(&[3]), Ok(RrcMessage::Unknown(3)));
        assert_eq!(
            RrcMessage::parse(&[255, 1, 2]),
            Ok(RrcMessage::Unknown(255))
        );
        assert!(RrcMessage::Unknown(3).emit(&mut [0; 16]).is_err());
        assert!(RrcMessage::challenge([0; 8]).emit(&mut [0; 8]).is_err());
    }

    proptest! {
        #[test]
        fn round_trip(code in 0u8..3, cookie in any::<[u8; 8]>()) {
            let msg = RrcMessage::Known { kind: RrcMessageType::from_u8(code), cookie };
            let mut out = [0u8; 16];
            let n = msg.emit(&mut out).expect("fits");
            prop_assert_eq!(RrcMessage::parse(&out[..n]), Ok(msg));
        }

        #[test]
        fn parse_never_panics(body in proptest::collection::vec(any::<u8>(), 0..32)) {
            if let Ok(msg @ RrcMessage::Known { .. }) = RrcMessage::parse(&body) {
                let mut out = [0u8; 16];
                let n = msg.emit(&mut out).expect("fits");
                prop_assert_eq!(&out[..n], &body[..]);
            }
        }
    }
}
