//! One message being reassembled, held in memory that grows with the bytes received, never
//! with the length the fragments claim.
//!
//! Layout: `body` holds the message's in-order prefix (bytes `0..body.len()`), grown by
//! doubling up to the message length, so in-order fragments cost amortised O(bytes).
//! Bytes received beyond the prefix wait in `pieces`, sorted and disjoint; a piece is
//! extended in place when the next bytes continue it (a lost first datagram leaves one
//! piece, not one per fragment), and is never prepended to (that would copy the piece
//! again for every byte). When the prefix reaches a piece, the piece is copied into
//! `body` and freed. The number of pieces is capped; bytes that continue the prefix are
//! always taken, so the cap cannot stop a message from completing.
//!
//! Every allocation is charged before it happens: buffer capacities plus
//! [`PIECE_OVERHEAD`] per piece.

use crate::codes::HandshakeType;

use super::DropReason;

/// One run of bytes received beyond the prefix.
#[derive(Debug)]
struct Piece {
    start: usize,
    data: Vec<u8>,
    /// Bytes charged for it (its data's capacity and [`PIECE_OVERHEAD`]).
    charged: usize,
}

impl Piece {
    fn end(&self) -> usize {
        self.start + self.data.len()
    }
}

/// Bytes charged per piece besides its data: its slot in the (doubling) piece list and
/// the allocator's per-allocation header.
pub(super) const PIECE_OVERHEAD: usize = 2 * size_of::<Piece>() + 16;

/// The capacity to grow a buffer of capacity `cap` to so that it holds `needed` bytes:
/// doubling (amortised O(1) per byte), never beyond `limit` (what the message can still
/// hold), never less than `needed`.
fn grown_capacity(cap: usize, needed: usize, limit: usize) -> usize {
    if needed <= cap {
        return cap;
    }
    cap.saturating_mul(2).min(limit).max(needed)
}

/// A message of known type and length, partly or completely received.
#[derive(Debug)]
pub(super) struct Partial {
    pub(super) message_seq: u32,
    pub(super) msg_type: HandshakeType,
    pub(super) length: usize,
    /// Bytes `0..body.len()` of the message.
    body: Vec<u8>,
    /// Bytes beyond the prefix: sorted by `start`, disjoint, non-empty, each starting after
    /// `body.len()`.
    pieces: Vec<Piece>,
    /// At least one fragment was stored (what completes an empty message).
    received: bool,
    /// Bytes charged for this message's buffers.
    pub(super) charged: usize,
}

impl Partial {
    pub(super) fn new(message_seq: u32, msg_type: HandshakeType, length: usize) -> Self {
        Partial {
            message_seq,
            msg_type,
            length,
            body: Vec::new(),
            pieces: Vec::new(),
            received: false,
            charged: 0,
        }
    }

    pub(super) fn is_complete(&self) -> bool {
        self.received && self.body.len() == self.length
    }

    /// Marks an empty message as received.
    pub(super) fn mark_received(&mut self) {
        self.received = true;
    }

    /// The complete body (call only when [`is_complete`](Self::is_complete)).
    pub(super) fn into_body(self) -> Vec<u8> {
        self.body
    }

    /// Stores `data` (non-empty) at `start`; `start + data.len() <= self.length` was
    /// checked by the caller. `charge` is called once, before anything is allocated, with
    /// the bytes the new allocations take; its error (a spent budget) drops the fragment
    /// with nothing changed, as do more than `max_pieces` pieces. Returns the bytes freed.
    /// Bytes already held are kept: for overlapping fragments the first copy wins.
    pub(super) fn insert(
        &mut self,
        start: usize,
        data: &[u8],
        max_pieces: usize,
        charge: impl FnOnce(usize) -> Result<(), DropReason>,
    ) -> Result<usize, DropReason> {
        let end = start + data.len();
        let freed = if end <= self.body.len() {
            0
        } else if start <= self.body.len() {
            self.extend_prefix(start, data, charge)?
        } else {
            self.hold(start, data, max_pieces, charge)?;
            0
        };
        self.received = true;
        Ok(freed)
    }

    /// `data` at `start` continues the prefix: append it and every piece it reaches.
    fn extend_prefix(
        &mut self,
        start: usize,
        data: &[u8],
        charge: impl FnOnce(usize) -> Result<(), DropReason>,
    ) -> Result<usize, DropReason> {
        let end = start + data.len();
        let mut new_end = end;
        let mut absorbed = 0;
        for p in &self.pieces {
            if p.start > new_end {
                break;
            }
            new_end = new_end.max(p.end());
            absorbed += 1;
        }
        let cap = self.body.capacity();
        let want = grown_capacity(cap, new_end, self.length);
        charge(want - cap)?;
        self.charged += want - cap;
        self.body.reserve_exact(want - self.body.len());
        let mut k = 0;
        while self.body.len() < new_end {
            let pos = self.body.len();
            match self.pieces.get(k) {
                Some(p) if p.start <= pos => {
                    // Held bytes win over the new copy; a piece the fragment covered
                    // entirely adds nothing.
                    self.body
                        .extend_from_slice(p.data.get(pos - p.start..).unwrap_or_default());
                    k += 1;
                }
                next => {
                    // No piece covers `pos`, so the fragment does (the union is contiguous).
                    let stop = next.map_or(end, |p| p.start.min(end));
                    let bytes = data
                        .get(pos - start..stop.saturating_sub(start))
                        .unwrap_or_default();
                    if bytes.is_empty() {
                        break; // unreachable by the invariants; never loop without progress
                    }
                    self.body.extend_from_slice(bytes);
                }
            }
        }
        let freed: usize = self.pieces.drain(..absorbed).map(|p| p.charged).sum();
        if self.pieces.is_empty() {
            self.pieces = Vec::new();
        }
        self.charged -= freed;
        Ok(freed)
    }

    /// `data` at `start` lies beyond the prefix: keep the bytes no piece holds yet.
    fn hold(
        &mut self,
        start: usize,
        data: &[u8],
        max_pieces: usize,
        charge: impl FnOnce(usize) -> Result<(), DropReason>,
    ) -> Result<(), DropReason> {
        let end = start + data.len();
        // Pieces ending before `start` (and not touching it) are not involved.
        let first = self.pieces.partition_point(|p| p.end() < start);
        // Pass 1: what the fragment adds, before anything changes.
        let (mut cursor, mut idx) = (start, first);
        let (mut new_bytes, mut new_pieces, mut cost) = (0, 0, 0);
        while cursor < end {
            match self.pieces.get(idx) {
                Some(p) if p.start <= cursor => {
                    cursor = cursor.max(p.end());
                    idx += 1;
                }
                next => {
                    let stop = next.map_or(end, |p| p.start.min(end));
                    let gap = stop - cursor;
                    new_bytes += gap;
                    match self.extendable(idx, cursor) {
                        Some(p) => {
                            let cap = p.data.capacity();
                            let limit = self.length - p.start;
                            cost += grown_capacity(cap, p.data.len() + gap, limit) - cap;
                        }
                        None => {
                            new_pieces += 1;
                            cost += gap + PIECE_OVERHEAD;
                        }
                    }
                    cursor = stop;
                }
            }
        }
        if new_bytes == 0 {
            return Ok(()); // a duplicate
        }
        if self.pieces.len() + new_pieces > max_pieces {
            return Err(DropReason::TooManyRanges);
        }
        charge(cost)?;
        self.charged += cost;
        // Pass 2: the same walk, storing.
        let (mut cursor, mut idx) = (start, first);
        while cursor < end {
            match self.pieces.get(idx) {
                Some(p) if p.start <= cursor => {
                    cursor = cursor.max(p.end());
                    idx += 1;
                }
                next => {
                    let stop = next.map_or(end, |p| p.start.min(end));
                    let bytes = data.get(cursor - start..stop - start).unwrap_or_default();
                    let length = self.length;
                    match self.extendable_mut(idx, cursor) {
                        Some(p) => {
                            let want = grown_capacity(
                                p.data.capacity(),
                                p.data.len() + bytes.len(),
                                length - p.start,
                            );
                            p.charged += want - p.data.capacity();
                            p.data.reserve_exact(want - p.data.len());
                            p.data.extend_from_slice(bytes);
                        }
                        None => {
                            if self.pieces.is_empty() {
                                // Most messages never hold more than one piece.
                                self.pieces.reserve_exact(1);
                            }
                            self.pieces.insert(
                                idx,
                                Piece {
                                    start: cursor,
                                    data: bytes.to_vec(),
                                    charged: bytes.len() + PIECE_OVERHEAD,
                                },
                            );
                            idx += 1;
                        }
                    }
                    cursor = stop;
                }
            }
        }
        Ok(())
    }

    /// The piece just before index `idx`, if it ends exactly at `at` (new bytes there
    /// extend it instead of starting a piece).
    fn extendable(&self, idx: usize, at: usize) -> Option<&Piece> {
        let p = self.pieces.get(idx.checked_sub(1)?)?;
        (p.end() == at).then_some(p)
    }

    fn extendable_mut(&mut self, idx: usize, at: usize) -> Option<&mut Piece> {
        let p = self.pieces.get_mut(idx.checked_sub(1)?)?;
        (p.end() == at).then_some(p)
    }
}
