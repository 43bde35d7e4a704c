//! The 12-byte DTLS handshake message header (RFC 6347 §4.2.2):
//!
//! ```text
//! struct {
//!   HandshakeType msg_type;     // 1 byte
//!   uint24 length;              // length of the whole message body
//!   uint16 message_seq;
//!   uint24 fragment_offset;
//!   uint24 fragment_length;
//!   opaque fragment[fragment_length];
//! } Handshake;
//! ```
//!
//! [`HandshakeHeader`] is a smoltcp-style view over a buffer: after
//! [`HandshakeHeader::new_checked`] no accessor can panic. [`HandshakeRepr`] is the parsed,
//! validated form.

use crate::WireError;
use crate::codec::U24_MAX;
use crate::codes::HandshakeType;

/// Length of the handshake header.
pub const HANDSHAKE_HEADER_LEN: usize = 12;

mod field {
    use core::ops::Range;
    pub const MSG_TYPE: usize = 0;
    pub const LENGTH: Range<usize> = 1..4;
    pub const MESSAGE_SEQ: Range<usize> = 4..6;
    pub const FRAGMENT_OFFSET: Range<usize> = 6..9;
    pub const FRAGMENT_LENGTH: Range<usize> = 9..12;
}

fn read_u24(b: &[u8]) -> u32 {
    u32::from_be_bytes([0, b[0], b[1], b[2]])
}

fn write_u24(b: &mut [u8], v: u32) {
    b.copy_from_slice(&v.to_be_bytes()[1..]);
}

/// A read/write view of one handshake fragment (header + fragment bytes) at the start of
/// a buffer. The buffer may continue past the fragment (several handshake fragments can
/// share one record).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HandshakeHeader<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> HandshakeHeader<T> {
    /// Wraps a buffer without checking it; accessors may panic until
    /// [`check_len`](Self::check_len) succeeds.
    pub const fn new_unchecked(buffer: T) -> Self {
        HandshakeHeader { buffer }
    }

    /// Wraps a buffer and checks that the header and the whole fragment it announces fit.
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let header = Self::new_unchecked(buffer);
        header.check_len()?;
        Ok(header)
    }

    /// Succeeds if the buffer holds the 12-byte header and `fragment_length` bytes after it.
    pub fn check_len(&self) -> Result<(), WireError> {
        let len = self.buffer.as_ref().len();
        if len < HANDSHAKE_HEADER_LEN {
            return Err(WireError::Truncated {
                what: "handshake header",
            });
        }
        if self.total_len() > len {
            return Err(WireError::Truncated {
                what: "handshake fragment",
            });
        }
        Ok(())
    }

    /// Returns the underlying buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Raw `msg_type`.
    pub fn msg_type(&self) -> u8 {
        self.buffer.as_ref()[field::MSG_TYPE]
    }

    /// `length`: the length of the complete message body.
    pub fn length(&self) -> u32 {
        read_u24(&self.buffer.as_ref()[field::LENGTH])
    }

    /// `message_seq`.
    pub fn message_seq(&self) -> u16 {
        let b = &self.buffer.as_ref()[field::MESSAGE_SEQ];
        u16::from_be_bytes([b[0], b[1]])
    }

    /// `fragment_offset`.
    pub fn fragment_offset(&self) -> u32 {
        read_u24(&self.buffer.as_ref()[field::FRAGMENT_OFFSET])
    }

    /// `fragment_length`.
    pub fn fragment_length(&self) -> u32 {
        read_u24(&self.buffer.as_ref()[field::FRAGMENT_LENGTH])
    }

    /// Header plus fragment length: where the next fragment in the record starts.
    pub fn total_len(&self) -> usize {
        // u24 always fits usize on >= 32-bit targets.
        HANDSHAKE_HEADER_LEN + self.fragment_length() as usize
    }

    /// The fragment bytes.
    pub fn fragment(&self) -> &[u8] {
        &self.buffer.as_ref()[HANDSHAKE_HEADER_LEN..self.total_len()]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> HandshakeHeader<T> {
    /// Sets `msg_type`.
    pub fn set_msg_type(&mut self, v: u8) {
        self.buffer.as_mut()[field::MSG_TYPE] = v;
    }

    /// Sets `length` (low 24 bits).
    pub fn set_length(&mut self, v: u32) {
        write_u24(&mut self.buffer.as_mut()[field::LENGTH], v);
    }

    /// Sets `message_seq`.
    pub fn set_message_seq(&mut self, v: u16) {
        self.buffer.as_mut()[field::MESSAGE_SEQ].copy_from_slice(&v.to_be_bytes());
    }

    /// Sets `fragment_offset` (low 24 bits).
    pub fn set_fragment_offset(&mut self, v: u32) {
        write_u24(&mut self.buffer.as_mut()[field::FRAGMENT_OFFSET], v);
    }

    /// Sets `fragment_length` (low 24 bits).
    pub fn set_fragment_length(&mut self, v: u32) {
        write_u24(&mut self.buffer.as_mut()[field::FRAGMENT_LENGTH], v);
    }

    /// The fragment bytes, writable.
    pub fn fragment_mut(&mut self) -> &mut [u8] {
        let end = self.total_len();
        &mut self.buffer.as_mut()[HANDSHAKE_HEADER_LEN..end]
    }
}

/// A validated handshake header: `fragment_offset + fragment_length <= length`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct HandshakeRepr {
    /// Message type.
    pub msg_type: HandshakeType,
    /// Length of the complete message body (u24).
    pub length: u32,
    /// Message sequence number.
    pub message_seq: u16,
    /// Offset of this fragment in the body (u24).
    pub fragment_offset: u32,
    /// Length of this fragment (u24).
    pub fragment_length: u32,
}

impl HandshakeRepr {
    /// The header of an unfragmented message (offset 0, fragment = whole body).
    pub fn unfragmented(msg_type: HandshakeType, message_seq: u16, length: u32) -> Self {
        HandshakeRepr {
            msg_type,
            length,
            message_seq,
            fragment_offset: 0,
            fragment_length: length,
        }
    }

    /// Parses a checked header. Rejects a fragment that extends past the message length
    /// (TESTING.md Parsing: "fragment offset+length beyond message length").
    pub fn parse<T: AsRef<[u8]>>(header: &HandshakeHeader<T>) -> Result<Self, WireError> {
        header.check_len()?;
        let repr = HandshakeRepr {
            msg_type: HandshakeType::from_u8(header.msg_type()),
            length: header.length(),
            message_seq: header.message_seq(),
            fragment_offset: header.fragment_offset(),
            fragment_length: header.fragment_length(),
        };
        repr.check_bounds()?;
        Ok(repr)
    }

    /// Succeeds if all fields fit 24 bits and `fragment_offset + fragment_length <= length`.
    pub fn check_bounds(&self) -> Result<(), WireError> {
        let max = U24_MAX as u64;
        let (len, off, flen) = (
            u64::from(self.length),
            u64::from(self.fragment_offset),
            u64::from(self.fragment_length),
        );
        if len > max || off > max || flen > max || off + flen > len {
            return Err(WireError::BadLength {
                what: "handshake fragment bounds",
            });
        }
        Ok(())
    }

    /// Whether this fragment carries the whole message.
    pub fn is_unfragmented(&self) -> bool {
        self.fragment_offset == 0 && self.fragment_length == self.length
    }

    /// Writes the 12 header bytes into `header` (the fragment bytes are the caller's).
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, header: &mut HandshakeHeader<T>) {
        header.set_msg_type(self.msg_type.to_u8());
        header.set_length(self.length);
        header.set_message_seq(self.message_seq);
        header.set_fragment_offset(self.fragment_offset);
        header.set_fragment_length(self.fragment_length);
    }

    /// The 12 header bytes. Fails if a field exceeds 24 bits or the bounds are violated.
    pub fn to_bytes(&self) -> Result<[u8; HANDSHAKE_HEADER_LEN], WireError> {
        self.check_bounds()?;
        let mut bytes = [0u8; HANDSHAKE_HEADER_LEN];
        self.emit(&mut HandshakeHeader::new_unchecked(&mut bytes[..]));
        Ok(bytes)
    }
}

/// Iterates over the handshake fragments in one handshake record's plaintext. A fragment
/// whose header or data does not fit ends the iteration with one `Err` (the rest of the
/// record is unusable, RFC 6347 §4.1.2.7 says to drop it).
#[derive(Debug, Clone)]
pub struct HandshakeFragments<'a> {
    rest: &'a [u8],
}

impl<'a> HandshakeFragments<'a> {
    /// Starts iterating over `record_payload`.
    pub fn new(record_payload: &'a [u8]) -> Self {
        HandshakeFragments {
            rest: record_payload,
        }
    }
}

impl<'a> Iterator for HandshakeFragments<'a> {
    type Item = Result<(HandshakeRepr, &'a [u8]), WireError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let parsed = HandshakeHeader::new_checked(self.rest).and_then(|h| {
            let repr = HandshakeRepr::parse(&h)?;
            Ok((repr, h.total_len()))
        });
        match parsed {
            Ok((repr, total)) => {
                let (this, rest) = self.rest.split_at(total);
                self.rest = rest;
                Some(Ok((repr, &this[HANDSHAKE_HEADER_LEN..])))
            }
            Err(e) => {
                self.rest = &[];
                Some(Err(e))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trip() {
        let repr = HandshakeRepr {
            msg_type: HandshakeType::Certificate,
            length: 0x012345,
            message_seq: 0xbeef,
            fragment_offset: 0x000100,
            fragment_length: 3,
        };
        let mut buf = repr.to_bytes().expect("valid repr").to_vec();
        buf.extend_from_slice(&[7, 8, 9]);
        assert_eq!(
            &buf[..12],
            &[11, 0x01, 0x23, 0x45, 0xbe, 0xef, 0, 1, 0, 0, 0, 3]
        );
        let h = HandshakeHeader::new_checked(&buf[..]).expect("fits");
        assert_eq!(HandshakeRepr::parse(&h), Ok(repr));
        assert_eq!(h.fragment(), &[7, 8, 9]);
    }

    #[test]
    fn header_rejects_short_and_out_of_bounds() {
        assert!(HandshakeHeader::new_checked(&[0u8; 11][..]).is_err());
        // fragment_length 4 but only 3 bytes follow.
        let buf = [1, 0, 0, 4, 0, 0, 0, 0, 0, 0, 0, 4, 1, 2, 3];
        assert_eq!(
            HandshakeHeader::new_checked(&buf[..]).map(|_| ()),
            Err(WireError::Truncated {
                what: "handshake fragment"
            })
        );
        // offset 2 + length 3 > message length 4.
        let buf = [1, 0, 0, 4, 0, 0, 0, 0, 2, 0, 0, 3, 1, 2, 3];
        let h = HandshakeHeader::new_checked(&buf[..]).expect("fragment fits buffer");
        assert!(HandshakeRepr::parse(&h).is_err());
    }

    #[test]
    fn fragments_iterator_splits_a_record() {
        let mut rec = Vec::new();
        for seq in 0..3u16 {
            let r = HandshakeRepr::unfragmented(HandshakeType::ServerHelloDone, seq, 0);
            rec.extend_from_slice(&r.to_bytes().expect("valid"));
        }
        let r = HandshakeRepr::unfragmented(HandshakeType::Finished, 3, 12);
        rec.extend_from_slice(&r.to_bytes().expect("valid"));
        rec.extend_from_slice(&[0u8; 11]); // one byte short
        let items: Vec<_> = HandshakeFragments::new(&rec).collect();
        assert_eq!(items.len(), 4);
        assert!(items[..3].iter().all(|i| i.is_ok()));
        assert!(items[3].is_err());
    }
}
