//! [`SessionSnapshots`]: a shard's sessions as seen from another thread (`dtlsd status`),
//! published on request, off the per-packet path.
//!
//! A reader calls [`SessionSnapshots::request`] and then [`SessionSnapshots::wait`]. The
//! shard looks at the request counter once per loop turn (one atomic load); when a request
//! is pending it copies one [`SessionView`] per live session into the shared buffer under a
//! mutex the reader holds only to clone it, then bumps the published counter and wakes the
//! reader. A shard that nobody asks pays that one load per turn, never a lock; a busy shard
//! answers at the end of its current turn, an idle one within its `recv_wait`
//! (a request signals nothing).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::queue::SessionId;
use crate::session::SessionCounters;

/// One session as its shard last saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionView {
    /// The session's handle (control's name for it).
    pub session: SessionId,
    /// The peer's address (serve) or the local source's (connect), as the shard has it now
    /// (a connection ID may have moved it since the handshake).
    pub peer: SocketAddr,
    /// Time since the last authenticated record or relayed datagram.
    pub idle: Duration,
    /// Records and bytes each way.
    pub counters: SessionCounters,
    /// The session runs DTLS 1.3 records.
    pub dtls13: bool,
}

/// Where one shard publishes its [`SessionView`]s for readers on other threads.
#[derive(Debug, Default)]
pub struct SessionSnapshots {
    /// Generation readers asked for.
    requested: AtomicU64,
    /// Generation the shard last published (under `rows`' lock).
    published: AtomicU64,
    rows: Mutex<Vec<SessionView>>,
    ready: Condvar,
}

impl SessionSnapshots {
    /// Asks the shard for a fresh snapshot; returns the generation to [`Self::wait`] for.
    pub fn request(&self) -> u64 {
        self.requested.fetch_add(1, Ordering::AcqRel) + 1
    }

    /// The sessions as published for `generation` or later, or `None` when the shard did not
    /// answer within `timeout` (a stopped or stuck shard).
    pub fn wait(&self, generation: u64, timeout: Duration) -> Option<Vec<SessionView>> {
        let deadline = Instant::now() + timeout;
        let mut rows = self.lock();
        while self.published.load(Ordering::Acquire) < generation {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            rows = self
                .ready
                .wait_timeout(rows, left)
                .map_or_else(|e| e.into_inner().0, |(guard, _)| guard);
        }
        Some(rows.clone())
    }

    /// Whether a reader waits for a snapshot (the shard's once-per-turn check).
    pub(crate) fn is_requested(&self) -> bool {
        self.requested.load(Ordering::Acquire) > self.published.load(Ordering::Relaxed)
    }

    /// The shard's side: replaces the published rows with what `fill` writes and wakes the
    /// readers.
    pub(crate) fn publish(&self, fill: impl FnOnce(&mut Vec<SessionView>)) {
        let generation = self.requested.load(Ordering::Acquire);
        let mut rows = self.lock();
        rows.clear();
        fill(&mut rows);
        self.published.store(generation, Ordering::Release);
        drop(rows);
        self.ready.notify_all();
    }

    fn lock(&self) -> MutexGuard<'_, Vec<SessionView>> {
        // A reader that panicked while holding the lock left the rows intact.
        self.rows.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn view(n: u64) -> SessionView {
        SessionView {
            session: SessionId::new(n),
            peer: ([127, 0, 0, 1], 4000 + n as u16).into(),
            idle: Duration::from_secs(n),
            counters: SessionCounters::default(),
            dtls13: false,
        }
    }

    #[test]
    fn nothing_is_published_until_asked() {
        let s = SessionSnapshots::default();
        assert!(!s.is_requested());
        let generation = s.request();
        assert!(s.is_requested());
        s.publish(|rows| rows.push(view(1)));
        assert!(!s.is_requested());
        assert_eq!(s.wait(generation, Duration::ZERO), Some(vec![view(1)]));
    }

    #[test]
    fn a_reader_waits_for_the_publishing_thread() {
        let s = Arc::new(SessionSnapshots::default());
        let generation = s.request();
        let shard = {
            let s = Arc::clone(&s);
            std::thread::spawn(move || {
                while !s.is_requested() {
                    std::thread::yield_now();
                }
                s.publish(|rows| rows.extend([view(1), view(2)]));
            })
        };
        let rows = s.wait(generation, Duration::from_secs(10));
        shard.join().expect("shard thread");
        assert_eq!(rows, Some(vec![view(1), view(2)]));
    }

    #[test]
    fn a_shard_that_does_not_answer_times_out() {
        let s = SessionSnapshots::default();
        let old = s.request();
        s.publish(|rows| rows.push(view(1)));
        let generation = s.request();
        assert_eq!(s.wait(generation, Duration::from_millis(20)), None);
        // An older generation is already satisfied.
        assert_eq!(s.wait(old, Duration::ZERO), Some(vec![view(1)]));
    }
}
