//! Incoming handshake reassembly (RFC 6347 §4.2.2, §4.2.3).
//!
//! One [`Reassembler`] per handshake. It takes fragments in any order, with overlaps and
//! duplicates, and yields complete messages strictly in `message_seq` order through
//! [`Reassembler::poll_message`].
//!
//! Defences (TESTING.md, Parsing):
//! - every bound is checked before anything is allocated: `offset + len <= msg_len`,
//!   `msg_len <= max_message_len`, buffered bytes `<= max_handshake_bytes`;
//! - fragments whose total length (or type) differs from the first fragment seen for that
//!   message_seq are never merged: they are dropped and counted;
//! - received byte ranges are kept merged and capped per message, so a flood of tiny or
//!   zero-length fragments costs O(cap) per fragment and never allocates;
//! - messages older than the next expected one are reported, not stored, so the engine
//!   can recognise a retransmitted peer flight (RFC 6347 §4.2.4); messages too far ahead
//!   are dropped.

use core::ops::Range;

use crate::codes::HandshakeType;
use crate::header::{HANDSHAKE_HEADER_LEN, HandshakeRepr};

/// Limits of one [`Reassembler`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReassemblyConfig {
    /// Largest message body accepted (default 64 KiB).
    pub max_message_len: usize,
    /// Largest total of buffered message bodies (default 128 KiB).
    pub max_handshake_bytes: usize,
    /// How many messages beyond the next expected one are buffered (default 16).
    /// RFC 6347 §4.2.2: an implementation "MAY discard" future messages or queue them.
    pub max_messages_ahead: u16,
    /// Most disjoint received ranges per message (default 256: a 64 KiB message in
    /// 250-byte fragments received in the worst order needs about 130).
    pub max_ranges_per_message: usize,
}

impl Default for ReassemblyConfig {
    fn default() -> Self {
        ReassemblyConfig {
            max_message_len: 64 * 1024,
            max_handshake_bytes: 128 * 1024,
            max_messages_ahead: 16,
            max_ranges_per_message: 256,
        }
    }
}

/// Why a fragment was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// `data.len() != fragment_length`, or `fragment_offset + fragment_length > length`.
    Malformed,
    /// `message_seq` more than `max_messages_ahead` beyond the next expected message.
    TooFarAhead,
    /// `length > max_message_len`.
    MessageTooLarge,
    /// Buffering it would exceed `max_handshake_bytes`.
    HandshakeBudget,
    /// Its `length` differs from the first fragment seen for this message_seq.
    LengthMismatch,
    /// Its `msg_type` differs from the first fragment seen for this message_seq.
    TypeMismatch,
    /// It would create more than `max_ranges_per_message` disjoint ranges.
    TooManyRanges,
    /// A zero-length fragment of a non-empty message: it carries nothing.
    EmptyFragment,
}

/// What happened to one fragment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FragmentOutcome {
    /// Stored, or already held (duplicate); a message may now be ready.
    Accepted,
    /// Part of a message already delivered: the peer is retransmitting (RFC 6347 §4.2.4).
    Old {
        /// Its message_seq.
        message_seq: u16,
        /// Its type.
        msg_type: HandshakeType,
    },
    /// Dropped and counted in [`ReassemblyStats`].
    Dropped {
        /// Why.
        reason: DropReason,
    },
}

/// Counters of a [`Reassembler`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReassemblyStats {
    /// Fragments stored or recognised as duplicates.
    pub accepted: u64,
    /// Fragments of already delivered messages.
    pub old: u64,
    /// Dropped: [`DropReason::Malformed`].
    pub malformed: u64,
    /// Dropped: [`DropReason::TooFarAhead`].
    pub too_far_ahead: u64,
    /// Dropped: [`DropReason::MessageTooLarge`].
    pub too_large: u64,
    /// Dropped: [`DropReason::HandshakeBudget`].
    pub over_budget: u64,
    /// Dropped: [`DropReason::LengthMismatch`].
    pub length_mismatch: u64,
    /// Dropped: [`DropReason::TypeMismatch`].
    pub type_mismatch: u64,
    /// Dropped: [`DropReason::TooManyRanges`].
    pub too_many_ranges: u64,
    /// Dropped: [`DropReason::EmptyFragment`].
    pub empty: u64,
}

impl ReassemblyStats {
    fn count_drop(&mut self, reason: DropReason) {
        let c = match reason {
            DropReason::Malformed => &mut self.malformed,
            DropReason::TooFarAhead => &mut self.too_far_ahead,
            DropReason::MessageTooLarge => &mut self.too_large,
            DropReason::HandshakeBudget => &mut self.over_budget,
            DropReason::LengthMismatch => &mut self.length_mismatch,
            DropReason::TypeMismatch => &mut self.type_mismatch,
            DropReason::TooManyRanges => &mut self.too_many_ranges,
            DropReason::EmptyFragment => &mut self.empty,
        };
        *c += 1;
    }

    /// Total dropped fragments.
    pub fn dropped(&self) -> u64 {
        self.malformed
            + self.too_far_ahead
            + self.too_large
            + self.over_budget
            + self.length_mismatch
            + self.type_mismatch
            + self.too_many_ranges
            + self.empty
    }
}

/// A complete handshake message, in order.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ReassembledMessage {
    /// Its type.
    pub msg_type: HandshakeType,
    /// Its message_seq.
    pub message_seq: u16,
    /// The complete body.
    pub body: Vec<u8>,
}

impl ReassembledMessage {
    /// The header of the message as if it had not been fragmented.
    pub fn header(&self) -> HandshakeRepr {
        // body.len() <= max_message_len and was a u24 on the wire, so it fits u32.
        HandshakeRepr::unfragmented(self.msg_type, self.message_seq, self.body.len() as u32)
    }

    /// Appends the canonical encoding that enters the handshake transcript: header with
    /// `fragment_offset = 0` and `fragment_length = length`, then the body
    /// (RFC 6347 §4.2.6: hash as if each message "had been sent as a single fragment").
    pub fn write_transcript(&self, out: &mut Vec<u8>) {
        let h = self.header();
        let len = h.length.to_be_bytes();
        let seq = h.message_seq.to_be_bytes();
        out.reserve(HANDSHAKE_HEADER_LEN + self.body.len());
        out.push(h.msg_type.to_u8());
        out.extend_from_slice(&len[1..]);
        out.extend_from_slice(&seq);
        out.extend_from_slice(&[0, 0, 0]);
        out.extend_from_slice(&len[1..]);
        out.extend_from_slice(&self.body);
    }

    /// The canonical encoding as a new vector (see [`write_transcript`](Self::write_transcript)).
    pub fn transcript_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.write_transcript(&mut out);
        out
    }
}

#[derive(Debug)]
struct Partial {
    message_seq: u32,
    msg_type: HandshakeType,
    body: Vec<u8>,
    /// Sorted, disjoint, non-touching received ranges.
    ranges: Vec<Range<usize>>,
    /// At least one fragment arrived (matters for empty messages).
    received: bool,
}

impl Partial {
    fn is_complete(&self) -> bool {
        self.received
            && (self.body.is_empty()
                || (self.ranges.len() == 1 && self.ranges[0] == (0..self.body.len())))
    }
}

/// Merges `new` (non-empty) into `ranges`; fails without change if that would exceed
/// `cap` ranges. O(len) per call.
fn insert_range(ranges: &mut Vec<Range<usize>>, new: Range<usize>, cap: usize) -> bool {
    // Ranges before `i` end strictly before `new` starts; ranges from `j` on start
    // strictly after it ends. Everything in i..j overlaps or touches `new`.
    let i = ranges.partition_point(|r| r.end < new.start);
    let j = ranges.partition_point(|r| r.start <= new.end);
    if i == j {
        if ranges.len() >= cap {
            return false;
        }
        ranges.insert(i, new);
    } else {
        let start = new.start.min(ranges[i].start);
        let end = new.end.max(ranges[j - 1].end);
        ranges.drain(i + 1..j);
        ranges[i] = start..end;
    }
    true
}

/// Reassembles one handshake's incoming messages. See the module documentation.
#[derive(Debug)]
pub struct Reassembler {
    config: ReassemblyConfig,
    /// Next message_seq to deliver; u32 so that delivering 65535 cannot wrap.
    next_seq: u32,
    /// Partial and complete messages, sorted by message_seq.
    pending: Vec<Partial>,
    buffered_bytes: usize,
    peak_buffered_bytes: usize,
    stats: ReassemblyStats,
}

impl Reassembler {
    /// A reassembler expecting `next_seq` first (0 for a fresh handshake; a server engine
    /// created from a cookie-verified ClientHello with message_seq 1 starts at 2).
    pub fn new(config: ReassemblyConfig, next_seq: u16) -> Self {
        Reassembler {
            config,
            next_seq: u32::from(next_seq),
            pending: Vec::new(),
            buffered_bytes: 0,
            peak_buffered_bytes: 0,
            stats: ReassemblyStats::default(),
        }
    }

    /// The limits in force.
    pub fn config(&self) -> &ReassemblyConfig {
        &self.config
    }

    /// The message_seq expected next (65536 after message 65535 was delivered).
    pub fn next_seq(&self) -> u32 {
        self.next_seq
    }

    /// Skips ahead to `seq`, discarding anything buffered below it. Never moves back.
    pub fn advance_to(&mut self, seq: u16) {
        let seq = u32::from(seq);
        if seq <= self.next_seq {
            return;
        }
        self.next_seq = seq;
        let mut freed = 0;
        self.pending.retain(|p| {
            let keep = p.message_seq >= seq;
            if !keep {
                freed += p.body.len();
            }
            keep
        });
        self.buffered_bytes -= freed;
    }

    /// Bytes of message bodies currently allocated and accounted against
    /// `max_handshake_bytes`.
    pub fn buffered_bytes(&self) -> usize {
        self.buffered_bytes
    }

    /// The largest value [`buffered_bytes`](Self::buffered_bytes) has had.
    pub fn peak_buffered_bytes(&self) -> usize {
        self.peak_buffered_bytes
    }

    /// Counters.
    pub fn stats(&self) -> &ReassemblyStats {
        &self.stats
    }

    /// Messages held (partial or complete, not yet polled).
    pub fn pending_messages(&self) -> usize {
        self.pending.len()
    }

    /// Offers one fragment (`data` must be exactly `header.fragment_length` bytes, as
    /// produced by [`crate::HandshakeFragments`]).
    pub fn handle_fragment(&mut self, header: &HandshakeRepr, data: &[u8]) -> FragmentOutcome {
        let outcome = self.classify_and_store(header, data);
        match outcome {
            FragmentOutcome::Accepted => self.stats.accepted += 1,
            FragmentOutcome::Old { .. } => self.stats.old += 1,
            FragmentOutcome::Dropped { reason } => self.stats.count_drop(reason),
        }
        outcome
    }

    fn classify_and_store(&mut self, header: &HandshakeRepr, data: &[u8]) -> FragmentOutcome {
        let drop = |reason| FragmentOutcome::Dropped { reason };
        // RFC 6347 §4.2.3: the fragment must lie inside the message. All three fields are
        // u24 (checked), so the usize conversions below are exact.
        if header.check_bounds().is_err() || data.len() != header.fragment_length as usize {
            return drop(DropReason::Malformed);
        }
        let seq = u32::from(header.message_seq);
        if seq < self.next_seq {
            return FragmentOutcome::Old {
                message_seq: header.message_seq,
                msg_type: header.msg_type,
            };
        }
        if seq - self.next_seq > u32::from(self.config.max_messages_ahead) {
            return drop(DropReason::TooFarAhead);
        }
        let length = header.length as usize;
        let start = header.fragment_offset as usize;
        let end = start + data.len();
        let idx = self.pending.partition_point(|p| p.message_seq < seq);
        let existing = self.pending.get(idx).is_some_and(|p| p.message_seq == seq);
        if existing {
            let p = &mut self.pending[idx];
            // Never merge fragments that disagree on the message they belong to.
            if p.body.len() != length {
                return drop(DropReason::LengthMismatch);
            }
            if p.msg_type != header.msg_type {
                return drop(DropReason::TypeMismatch);
            }
            if length == 0 {
                p.received = true;
                return FragmentOutcome::Accepted;
            }
            if data.is_empty() {
                return drop(DropReason::EmptyFragment);
            }
            if p.is_complete() {
                // A duplicate of a message we hold; the first copy wins.
                return FragmentOutcome::Accepted;
            }
            if !insert_range(
                &mut p.ranges,
                start..end,
                self.config.max_ranges_per_message,
            ) {
                return drop(DropReason::TooManyRanges);
            }
            p.body[start..end].copy_from_slice(data);
            p.received = true;
            return FragmentOutcome::Accepted;
        }
        if data.is_empty() && length > 0 {
            return drop(DropReason::EmptyFragment);
        }
        // Bound checks before the allocation.
        if length > self.config.max_message_len {
            return drop(DropReason::MessageTooLarge);
        }
        if self.buffered_bytes + length > self.config.max_handshake_bytes {
            return drop(DropReason::HandshakeBudget);
        }
        let mut body = vec![0u8; length];
        body[start..end].copy_from_slice(data);
        let ranges = if data.is_empty() {
            Vec::new()
        } else {
            core::iter::once(start..end).collect()
        };
        self.buffered_bytes += length;
        self.peak_buffered_bytes = self.peak_buffered_bytes.max(self.buffered_bytes);
        self.pending.insert(
            idx,
            Partial {
                message_seq: seq,
                msg_type: header.msg_type,
                body,
                ranges,
                received: true,
            },
        );
        FragmentOutcome::Accepted
    }

    /// Whether the next expected message is complete.
    pub fn has_message(&self) -> bool {
        self.pending
            .first()
            .is_some_and(|p| p.message_seq == self.next_seq && p.is_complete())
    }

    /// The next complete message in message_seq order, if it is complete.
    pub fn poll_message(&mut self) -> Option<ReassembledMessage> {
        if !self.has_message() {
            return None;
        }
        let p = self.pending.remove(0);
        self.buffered_bytes -= p.body.len();
        self.next_seq += 1;
        Some(ReassembledMessage {
            msg_type: p.msg_type,
            // p.message_seq came from a u16.
            message_seq: p.message_seq as u16,
            body: p.body,
        })
    }
}
