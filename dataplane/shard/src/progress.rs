//! [`Progress`]: when a loop last finished a turn, for a health check on another thread.
//!
//! A loop that already reads the clock once per turn marks the turn with that reading: one
//! relaxed store of milliseconds since the stamp's own epoch (no clock read, no
//! read-modify-write). A reader compares the stamp with its own clock: a loop that stopped
//! turning (blocked, spinning inside one turn, or dead) shows a stamp that grows old.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

/// The last turn of one loop, shareable (in an `Arc`) between the loop and a reader.
#[derive(Debug)]
pub struct Progress {
    epoch: Instant,
    /// Milliseconds from `epoch` to the last marked turn.
    last_ms: AtomicU64,
}

impl Progress {
    /// A stamp whose epoch, and first mark, is `epoch`.
    pub fn new(epoch: Instant) -> Self {
        Self {
            epoch,
            last_ms: AtomicU64::new(0),
        }
    }

    /// Marks a turn at `now` (the loop's own reading of the clock for that turn).
    #[inline]
    pub fn mark(&self, now: Instant) {
        let ms = now.saturating_duration_since(self.epoch).as_millis();
        self.last_ms
            .store(u64::try_from(ms).unwrap_or(u64::MAX), Relaxed);
    }

    /// How long before `now` the last turn was marked (zero when `now` is earlier).
    pub fn age(&self, now: Instant) -> Duration {
        let last = Duration::from_millis(self.last_ms.load(Relaxed));
        now.saturating_duration_since(self.epoch)
            .saturating_sub(last)
    }
}

impl Default for Progress {
    /// A stamp whose epoch is now.
    fn default() -> Self {
        Self::new(Instant::now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn age_is_the_time_since_the_last_mark() {
        let epoch = Instant::now();
        let p = Progress::new(epoch);
        assert_eq!(
            p.age(epoch + Duration::from_secs(3)),
            Duration::from_secs(3)
        );
        p.mark(epoch + Duration::from_millis(2500));
        assert_eq!(
            p.age(epoch + Duration::from_secs(3)),
            Duration::from_millis(500)
        );
        // A reader whose clock reading is older than the mark sees zero, not a wrap.
        assert_eq!(p.age(epoch + Duration::from_secs(1)), Duration::ZERO);
        assert_eq!(p.age(epoch), Duration::ZERO);
    }
}
