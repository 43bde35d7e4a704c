//! Incoming handshake reassembly (RFC 6347 §4.2.2, §4.2.3).
//!
//! One [`Reassembler`] per handshake. It takes fragments in any order, with overlaps and
//! duplicates, and yields complete messages strictly in `message_seq` order through
//! [`Reassembler::poll_message`].
//!
//! Defences (TESTING.md, Parsing and DoS):
//! - every bound is checked before anything is allocated: `offset + len <= msg_len`,
//!   `msg_len` against [`ReassemblyConfig::max_message_len`] and the cap of its type
//!   ([`MessageCaps`]), the bytes an allocation takes against the per-handshake cap and the
//!   [`ReassemblyBudget`] shared by every handshake of a server;
//! - memory grows with the bytes received, never with the length a fragment claims: a
//!   fragment of 14 bytes claiming a 64 KiB message allocates about 14 bytes (see
//!   `partial.rs` for the layout);
//! - fragments whose total length (or type) differs from the first fragment seen for that
//!   message_seq are never merged: they are dropped and counted;
//! - out-of-order pieces are capped per message, so a flood of tiny or zero-length
//!   fragments costs bounded work per fragment and bounded memory;
//! - messages older than the next expected one are reported, not stored, so the engine
//!   can recognise a retransmitted peer flight (RFC 6347 §4.2.4); messages too far ahead
//!   are dropped.

mod limits;
mod partial;

use std::sync::Arc;

use crate::codes::HandshakeType;
use crate::header::{HANDSHAKE_HEADER_LEN, HandshakeRepr};

pub use limits::{MessageCaps, ReassemblyBudget, ReassemblyConfig};
use partial::Partial;

/// Why a fragment was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// `data.len() != fragment_length`, or `fragment_offset + fragment_length > length`.
    Malformed,
    /// `message_seq` more than `max_messages_ahead` beyond the next expected message.
    TooFarAhead,
    /// `length` above `max_message_len` or the cap of its type.
    MessageTooLarge,
    /// Buffering it would exceed `max_handshake_bytes`.
    HandshakeBudget,
    /// Buffering it would exceed the shared [`ReassemblyBudget`].
    GlobalBudget,
    /// Its `length` differs from the first fragment seen for this message_seq.
    LengthMismatch,
    /// Its `msg_type` differs from the first fragment seen for this message_seq.
    TypeMismatch,
    /// It would hold more than `max_ranges_per_message` out-of-order pieces.
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
    /// Dropped: [`DropReason::GlobalBudget`].
    pub over_global_budget: u64,
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
            DropReason::GlobalBudget => &mut self.over_global_budget,
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
            + self.over_global_budget
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

/// Bytes charged by one reassembler, against its own cap and the shared budget.
#[derive(Debug)]
struct Account {
    max: usize,
    buffered: usize,
    peak: usize,
    budget: Option<Arc<ReassemblyBudget>>,
}

impl Account {
    /// Charges `n` bytes about to be allocated, or refuses them with nothing charged.
    fn charge(&mut self, n: usize) -> Result<(), DropReason> {
        if n == 0 {
            return Ok(());
        }
        if self.buffered.saturating_add(n) > self.max {
            return Err(DropReason::HandshakeBudget);
        }
        if let Some(budget) = &self.budget
            && !budget.try_charge(n)
        {
            return Err(DropReason::GlobalBudget);
        }
        self.buffered += n;
        self.peak = self.peak.max(self.buffered);
        Ok(())
    }

    fn release(&mut self, n: usize) {
        let n = n.min(self.buffered);
        self.buffered -= n;
        if let Some(budget) = &self.budget {
            budget.release(n);
        }
    }
}

impl Drop for Account {
    fn drop(&mut self) {
        self.release(self.buffered);
    }
}

/// Reassembles one handshake's incoming messages. See the module documentation.
#[derive(Debug)]
pub struct Reassembler {
    config: ReassemblyConfig,
    /// Next message_seq to deliver; u32 so that delivering 65535 cannot wrap.
    next_seq: u32,
    /// Partial and complete messages, sorted by message_seq.
    pending: Vec<Partial>,
    account: Account,
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
            account: Account {
                max: config.max_handshake_bytes,
                buffered: 0,
                peak: 0,
                budget: None,
            },
            stats: ReassemblyStats::default(),
        }
    }

    /// Like [`new`](Self::new), also charging every buffer to `budget`, which other
    /// reassemblers may share.
    pub fn with_budget(
        config: ReassemblyConfig,
        next_seq: u16,
        budget: Arc<ReassemblyBudget>,
    ) -> Self {
        let mut r = Self::new(config, next_seq);
        r.account.budget = Some(budget);
        r
    }

    /// The limits in force.
    pub fn config(&self) -> &ReassemblyConfig {
        &self.config
    }

    /// The shared budget this reassembler charges, if any.
    pub fn budget(&self) -> Option<&Arc<ReassemblyBudget>> {
        self.account.budget.as_ref()
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
                freed += p.charged;
            }
            keep
        });
        self.account.release(freed);
    }

    /// Discards every buffered message (their bytes are released); the next expected
    /// message_seq and the counters stay.
    pub fn clear(&mut self) {
        self.pending = Vec::new();
        self.account.release(self.account.buffered);
    }

    /// Bytes currently charged for buffered messages (against `max_handshake_bytes` and
    /// the shared budget): buffer capacities plus a fixed overhead per out-of-order piece.
    pub fn buffered_bytes(&self) -> usize {
        self.account.buffered
    }

    /// The largest value [`buffered_bytes`](Self::buffered_bytes) has had.
    pub fn peak_buffered_bytes(&self) -> usize {
        self.account.peak
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
        let max_pieces = self.config.max_ranges_per_message;
        let idx = self.pending.partition_point(|p| p.message_seq < seq);
        let account = &mut self.account;
        if let Some(p) = self.pending.get_mut(idx).filter(|p| p.message_seq == seq) {
            // Never merge fragments that disagree on the message they belong to.
            if p.length != length {
                return drop(DropReason::LengthMismatch);
            }
            if p.msg_type != header.msg_type {
                return drop(DropReason::TypeMismatch);
            }
            if length == 0 {
                return FragmentOutcome::Accepted;
            }
            if data.is_empty() {
                return drop(DropReason::EmptyFragment);
            }
            if p.is_complete() {
                // A duplicate of a message we hold; the first copy wins.
                return FragmentOutcome::Accepted;
            }
            return match p.insert(start, data, max_pieces, |n| account.charge(n)) {
                Ok(freed) => {
                    account.release(freed);
                    FragmentOutcome::Accepted
                }
                Err(reason) => drop(reason),
            };
        }
        if data.is_empty() && length > 0 {
            return drop(DropReason::EmptyFragment);
        }
        // Bound checks before any allocation.
        if length > self.config.max_len_of(header.msg_type) {
            return drop(DropReason::MessageTooLarge);
        }
        let mut p = Partial::new(seq, header.msg_type, length);
        if length == 0 {
            p.mark_received();
        } else if let Err(reason) = p.insert(start, data, max_pieces, |n| account.charge(n)) {
            return drop(reason);
        }
        // Grow the list one slot at a time: it holds at most max_messages_ahead + 1
        // messages, and usually one.
        if self.pending.len() == self.pending.capacity() {
            self.pending.reserve_exact(1);
        }
        self.pending.insert(idx, p);
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
        self.account.release(p.charged);
        self.next_seq += 1;
        Some(ReassembledMessage {
            msg_type: p.msg_type,
            // p.message_seq came from a u16.
            message_seq: p.message_seq as u16,
            body: p.into_body(),
        })
    }
}
