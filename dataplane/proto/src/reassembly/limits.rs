//! What a [`Reassembler`](super::Reassembler) may hold: per-message caps by type, the
//! per-handshake cap, and a byte budget shared by every handshake of one server.

use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};

use crate::codes::HandshakeType;

/// Limits of one [`Reassembler`](super::Reassembler).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReassemblyConfig {
    /// Largest message body accepted, whatever its type (default 64 KiB).
    pub max_message_len: usize,
    /// Largest total of bytes held for this handshake, counted as they are allocated
    /// (buffer capacity plus a fixed overhead per out-of-order piece; default 128 KiB).
    pub max_handshake_bytes: usize,
    /// How many messages beyond the next expected one are buffered (default 16).
    /// RFC 6347 §4.2.2: an implementation "MAY discard" future messages or queue them.
    pub max_messages_ahead: u16,
    /// Most out-of-order pieces held per message (default 256). Bytes that continue the
    /// message's in-order prefix are always taken, so a full set of pieces never stops
    /// a message from completing once the peer retransmits.
    pub max_ranges_per_message: usize,
    /// A tighter cap per message type (default: none beyond `max_message_len`).
    pub message_caps: MessageCaps,
}

impl Default for ReassemblyConfig {
    fn default() -> Self {
        ReassemblyConfig {
            max_message_len: 64 * 1024,
            max_handshake_bytes: 128 * 1024,
            max_messages_ahead: 16,
            max_ranges_per_message: 256,
            message_caps: MessageCaps::NONE,
        }
    }
}

impl ReassemblyConfig {
    /// The largest body accepted for a message of type `msg_type`.
    pub fn max_len_of(&self, msg_type: HandshakeType) -> usize {
        self.max_message_len.min(self.message_caps.get(msg_type))
    }
}

/// Per-type caps on message bodies: a fragment whose `length` exceeds its type's cap is
/// dropped before anything is allocated ([`DropReason::MessageTooLarge`]).
///
/// [`DropReason::MessageTooLarge`]: super::DropReason::MessageTooLarge
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MessageCaps {
    /// Indexed by type code; every DTLS 1.2 and 1.3 handshake type but message_hash(254)
    /// is below 32.
    by_code: [u32; 32],
    /// Codes 32 and above.
    other: u32,
}

impl MessageCaps {
    /// No cap beyond [`ReassemblyConfig::max_message_len`].
    pub const NONE: MessageCaps = MessageCaps::uniform(usize::MAX);

    /// The same cap for every type.
    pub const fn uniform(max: usize) -> Self {
        let max = saturate(max);
        MessageCaps {
            by_code: [max; 32],
            other: max,
        }
    }

    /// These caps with `max` for `msg_type`.
    #[must_use]
    pub const fn with(mut self, msg_type: HandshakeType, max: usize) -> Self {
        let code = msg_type.to_u8() as usize;
        if code < self.by_code.len() {
            self.by_code[code] = saturate(max);
        } else {
            self.other = saturate(max);
        }
        self
    }

    /// The cap for `msg_type`.
    pub const fn get(&self, msg_type: HandshakeType) -> usize {
        let code = msg_type.to_u8() as usize;
        let cap = if code < self.by_code.len() {
            self.by_code[code]
        } else {
            self.other
        };
        cap as usize
    }
}

/// Handshake lengths are 24-bit, so a u32 cap loses nothing.
const fn saturate(max: usize) -> u32 {
    if max > u32::MAX as usize {
        u32::MAX
    } else {
        max as u32
    }
}

/// Bytes of reassembly buffers shared by many reassemblers: every half-open handshake of
/// one server (TESTING.md "DoS": per-handshake *and* global buffer caps).
///
/// Reassemblers built [`with_budget`](super::Reassembler::with_budget) charge it before
/// every allocation that grows a buffer and release it when a message is delivered or
/// discarded and when they are dropped. A fragment that would take the total past
/// [`limit`](Self::limit) is dropped ([`DropReason::GlobalBudget`]) and counted in
/// [`refused`](Self::refused): the handshake is not failed, it waits for the peer's
/// retransmission, by when other handshakes may have completed.
///
/// [`DropReason::GlobalBudget`]: super::DropReason::GlobalBudget
#[derive(Debug)]
pub struct ReassemblyBudget {
    limit: usize,
    used: AtomicUsize,
    peak: AtomicUsize,
    refused: AtomicU64,
}

impl ReassemblyBudget {
    /// A budget of `limit` bytes.
    pub const fn new(limit: usize) -> Self {
        ReassemblyBudget {
            limit,
            used: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
            refused: AtomicU64::new(0),
        }
    }

    /// The limit in bytes.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Bytes charged now.
    pub fn used(&self) -> usize {
        self.used.load(Relaxed)
    }

    /// The most bytes ever charged at once.
    pub fn peak(&self) -> usize {
        self.peak.load(Relaxed)
    }

    /// Fragments refused because the budget was spent.
    pub fn refused(&self) -> u64 {
        self.refused.load(Relaxed)
    }

    /// Charges `n` bytes, or counts a refusal and charges nothing.
    pub(super) fn try_charge(&self, n: usize) -> bool {
        let charged = self.used.fetch_update(Relaxed, Relaxed, |used| {
            used.checked_add(n).filter(|&total| total <= self.limit)
        });
        match charged {
            Ok(before) => {
                self.peak.fetch_max(before + n, Relaxed);
                true
            }
            Err(_) => {
                self.refused.fetch_add(1, Relaxed);
                false
            }
        }
    }

    /// Gives back `n` bytes charged earlier.
    pub(super) fn release(&self, n: usize) {
        // Every caller releases at most what it charged, so this never underflows; the
        // saturating form keeps a logic error from wrapping the total.
        let _ = self
            .used
            .fetch_update(Relaxed, Relaxed, |used| Some(used.saturating_sub(n)));
    }
}
