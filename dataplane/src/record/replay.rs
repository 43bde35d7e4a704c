//! The anti-replay window (RFC 6347 §4.1.2.6).
//!
//! RFC 6347 §4.1.2.6: "A bitmap window is used to accept only packets that have not been
//! received yet ... The window MUST NOT be updated until the packet has been
//! authenticated." Callers [`ReplayWindow::check`] before decrypting and
//! [`ReplayWindow::update`] only after the tag verified (the CVE-2016-2181 shape: a forged
//! record with a huge sequence number must not move the window).
//!
//! The bitmap is a ring of 64-bit words (the RFC 6479 layout): bit `s % 64` of word
//! `(s / 64) % words` stands for sequence `s`. The ring holds at least one word more than
//! the window needs, so moving the right edge only clears the words it passes over — at
//! most the whole ring, however far it jumps. Check and update cost O(1) for a given size.

/// Why a sequence number was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Replayed {
    /// The record was already received.
    #[error("duplicate sequence number")]
    Duplicate,
    /// The sequence number is left of the window.
    #[error("sequence number older than the replay window")]
    TooOld,
}

/// A window size outside [`ReplayWindow::MIN_SIZE`]..=[`ReplayWindow::MAX_SIZE`] or not a
/// multiple of 64.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("replay window size {0} must be a multiple of 64 in 64..=65536")]
pub struct WindowSizeError(pub usize);

/// Sliding window of the sequence numbers received under one epoch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplayWindow {
    /// Ring of bitmap words; its length is a power of two, at least `size / 64 + 1`.
    words: Box<[u64]>,
    /// `words.len() - 1`.
    mask: u64,
    /// Window size in sequence numbers (multiple of 64).
    size: u64,
    /// Highest sequence number accepted so far (0 before any: its bit is then clear).
    top: u64,
}

impl ReplayWindow {
    /// Smallest window (RFC 6347 §4.1.2.6: "a window size of 64 is preferred").
    pub const MIN_SIZE: usize = 64;
    /// Largest window.
    pub const MAX_SIZE: usize = 65536;
    /// The default window size used by the data plane.
    pub const DEFAULT_SIZE: usize = 128;

    /// A window of `size` sequence numbers, rounded up to a multiple of 64 and clamped to
    /// `MIN_SIZE..=MAX_SIZE` (so this cannot fail; see [`Self::try_new`] for a strict form).
    pub fn new(size: usize) -> Self {
        let size = size
            .clamp(Self::MIN_SIZE, Self::MAX_SIZE)
            .next_multiple_of(64);
        Self::with_size(size)
    }

    /// A window of exactly `size` sequence numbers.
    pub fn try_new(size: usize) -> Result<Self, WindowSizeError> {
        if !(Self::MIN_SIZE..=Self::MAX_SIZE).contains(&size) || !size.is_multiple_of(64) {
            return Err(WindowSizeError(size));
        }
        Ok(Self::with_size(size))
    }

    fn with_size(size: usize) -> Self {
        let words = (size / 64 + 1).next_power_of_two();
        Self {
            words: vec![0u64; words].into_boxed_slice(),
            mask: (words - 1) as u64,
            size: size as u64,
            top: 0,
        }
    }

    /// Window size in sequence numbers.
    pub fn size(&self) -> usize {
        // `size` came from a usize in `with_size`.
        self.size as usize
    }

    /// Highest sequence number accepted so far (0 if none).
    pub fn highest(&self) -> u64 {
        self.top
    }

    #[inline]
    fn slot(&self, seq: u64) -> (usize, u64) {
        // `mask < words.len()`, so the index is in bounds and fits a usize.
        (((seq >> 6) & self.mask) as usize, 1u64 << (seq & 63))
    }

    /// Would `seq` be accepted? Does not change the window.
    #[inline]
    pub fn check(&self, seq: u64) -> Result<(), Replayed> {
        if seq > self.top {
            return Ok(());
        }
        if self.top - seq >= self.size {
            return Err(Replayed::TooOld);
        }
        let (word, bit) = self.slot(seq);
        if self.words.get(word).is_some_and(|w| w & bit != 0) {
            return Err(Replayed::Duplicate);
        }
        Ok(())
    }

    /// Marks `seq` as received; call only after the record authenticated. A sequence
    /// number left of the window is ignored.
    #[inline]
    pub fn update(&mut self, seq: u64) {
        if seq > self.top {
            let old_block = self.top >> 6;
            let new_block = seq >> 6;
            let blocks = new_block - old_block;
            if blocks > self.mask {
                self.words.fill(0);
            } else {
                for b in old_block + 1..=new_block {
                    let (word, _) = self.slot(b << 6);
                    if let Some(w) = self.words.get_mut(word) {
                        *w = 0;
                    }
                }
            }
            self.top = seq;
        } else if self.top - seq >= self.size {
            return;
        }
        let (word, bit) = self.slot(seq);
        if let Some(w) = self.words.get_mut(word) {
            *w |= bit;
        }
    }

    /// Check, then update if accepted: for callers that authenticated already.
    pub fn check_and_update(&mut self, seq: u64) -> Result<(), Replayed> {
        self.check(seq)?;
        self.update(seq);
        Ok(())
    }
}

impl Default for ReplayWindow {
    fn default() -> Self {
        Self::with_size(Self::DEFAULT_SIZE)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::MAX_SEQUENCE;

    #[test]
    fn sizes() {
        assert_eq!(ReplayWindow::new(0).size(), 64);
        assert_eq!(ReplayWindow::new(65).size(), 128);
        assert_eq!(ReplayWindow::new(1 << 20).size(), 65536);
        assert_eq!(ReplayWindow::try_new(100), Err(WindowSizeError(100)));
        assert_eq!(ReplayWindow::try_new(0), Err(WindowSizeError(0)));
        assert!(ReplayWindow::try_new(4096).is_ok());
        assert_eq!(ReplayWindow::default().size(), 128);
    }

    /// Reference model: a set of accepted numbers and the same window rule.
    fn model_accepts(seen: &std::collections::BTreeSet<u64>, size: u64, seq: u64) -> bool {
        let top = seen.last().copied().unwrap_or(0);
        if seq > top {
            return true;
        }
        top - seq < size && !seen.contains(&seq)
    }

    #[test]
    fn matches_model_on_pseudo_random_walk() {
        for size in [64usize, 128, 192, 1024, 4096] {
            let mut w = ReplayWindow::try_new(size).expect("valid size");
            let mut seen = std::collections::BTreeSet::new();
            let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
            let mut base = 0u64;
            for _ in 0..20_000 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let seq = match x % 10 {
                    0 => base + (x >> 8) % (4 * size as u64), // jump ahead
                    1..=6 => base.saturating_sub((x >> 8) % (size as u64 + 64)),
                    _ => base + 1,
                };
                let seq = seq.min(MAX_SEQUENCE);
                let want = model_accepts(&seen, size as u64, seq);
                assert_eq!(w.check(seq).is_ok(), want, "size {size} seq {seq}");
                if want {
                    w.update(seq);
                    seen.insert(seq);
                    base = base.max(seq);
                }
            }
        }
    }
}
