//! Outgoing fragmentation (RFC 6347 §4.2.3): splits one handshake message body into
//! fragments that each carry the full 12-byte header with the message's total length.
//!
//! The engine decides per fragment how much room is left in the datagram it is filling
//! ([`Fragmenter::next_fragment`]), or fragments at a fixed size
//! ([`Fragmenter::fragments`]).

use crate::WireError;
use crate::codec::U24_MAX;
use crate::codes::HandshakeType;
use crate::header::{HANDSHAKE_HEADER_LEN, HandshakeHeader, HandshakeRepr};

/// One outgoing fragment: a header and a slice of the body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fragment<'a> {
    /// Its header (offset and length within the message).
    pub header: HandshakeRepr,
    /// The fragment bytes.
    pub data: &'a [u8],
}

impl Fragment<'_> {
    /// Header plus data length.
    pub fn encoded_len(&self) -> usize {
        HANDSHAKE_HEADER_LEN + self.data.len()
    }

    /// Appends header and data to `out`.
    pub fn write_to_vec(&self, out: &mut Vec<u8>) -> Result<(), WireError> {
        out.extend_from_slice(&self.header.to_bytes()?);
        out.extend_from_slice(self.data);
        Ok(())
    }

    /// Writes header and data at the start of `out`; returns the bytes written.
    pub fn write_to_slice(&self, out: &mut [u8]) -> Result<usize, WireError> {
        let needed = self.encoded_len();
        let available = out.len();
        let Some(dst) = out.get_mut(..needed) else {
            return Err(WireError::BufferTooSmall { needed, available });
        };
        self.header.check_bounds()?;
        let mut view = HandshakeHeader::new_unchecked(dst);
        self.header.emit(&mut view);
        view.fragment_mut().copy_from_slice(self.data);
        Ok(needed)
    }
}

/// Splits one message into fragments, front to back.
#[derive(Debug, Clone)]
pub struct Fragmenter<'a> {
    msg_type: HandshakeType,
    message_seq: u16,
    body: &'a [u8],
    offset: usize,
    /// An empty body still needs one (empty) fragment.
    sent_any: bool,
}

impl<'a> Fragmenter<'a> {
    /// Prepares to fragment `body`. Fails if the body does not fit a u24 length.
    pub fn new(
        msg_type: HandshakeType,
        message_seq: u16,
        body: &'a [u8],
    ) -> Result<Self, WireError> {
        if body.len() > U24_MAX {
            return Err(WireError::TooLong {
                what: "handshake message",
            });
        }
        Ok(Fragmenter {
            msg_type,
            message_seq,
            body,
            offset: 0,
            sent_any: false,
        })
    }

    /// Whether every byte has been handed out.
    pub fn is_done(&self) -> bool {
        self.sent_any && self.offset >= self.body.len()
    }

    /// Body bytes not yet handed out.
    pub fn remaining(&self) -> usize {
        self.body.len() - self.offset
    }

    /// The next fragment carrying at most `max_data` body bytes, or `None` when done.
    /// Also `None` when `max_data` is 0 and body bytes remain (no progress possible: the
    /// caller should start a new datagram); an empty body yields one empty fragment.
    pub fn next_fragment(&mut self, max_data: usize) -> Option<Fragment<'a>> {
        if self.is_done() {
            return None;
        }
        let take = self.remaining().min(max_data);
        if take == 0 && self.remaining() > 0 {
            return None;
        }
        let data = &self.body[self.offset..self.offset + take];
        // All values <= body.len() <= U24_MAX (checked in new), so they fit u32.
        let header = HandshakeRepr {
            msg_type: self.msg_type,
            length: self.body.len() as u32,
            message_seq: self.message_seq,
            fragment_offset: self.offset as u32,
            fragment_length: take as u32,
        };
        self.offset += take;
        self.sent_any = true;
        Some(Fragment { header, data })
    }

    /// Iterates over the remaining fragments with at most `max_data` body bytes each.
    /// With `max_data == 0` and a non-empty body it yields nothing.
    pub fn fragments(self, max_data: usize) -> impl Iterator<Item = Fragment<'a>> {
        let mut this = self;
        std::iter::from_fn(move || this.next_fragment(max_data))
    }
}

/// Appends all fragments of a message, each at most `max_data` body bytes, to `out`
/// back to back, and returns the byte range of each fragment in `out` (the engine packs
/// these into records and datagrams).
pub fn fragment_into_vec(
    msg_type: HandshakeType,
    message_seq: u16,
    body: &[u8],
    max_data: usize,
    out: &mut Vec<u8>,
) -> Result<Vec<core::ops::Range<usize>>, WireError> {
    if max_data == 0 && !body.is_empty() {
        return Err(WireError::IllegalValue {
            what: "fragment size 0",
        });
    }
    let mut ranges = Vec::new();
    for frag in Fragmenter::new(msg_type, message_seq, body)?.fragments(max_data) {
        let start = out.len();
        frag.write_to_vec(out)?;
        ranges.push(start..out.len());
    }
    Ok(ranges)
}
