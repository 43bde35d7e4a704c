//! Connect mode: local sources waiting for their handshake.
//!
//! The first plaintext datagram from a local source without a session makes the shard core
//! open that source's upstream flow (the driver's socket connected to the DTLS server,
//! registered in its epoll set under a token with the top bit set), queue the datagram, and
//! ask control for a handshake ([`ControlInbound::Open`](crate::ControlInbound::Open)). Control's flights go
//! out through that flow and the server's answers come back through it to control. When
//! `InstallKeys` arrives the flow becomes the session's and the queued plaintext is sealed
//! and sent; a `Close` (the handshake failed) drops it all.
//!
//! Bounded: at most `capacity` sources wait at once; each queues at most [`MAX_QUEUED`]
//! datagrams and [`MAX_QUEUED_BYTES`] bytes, and all waiting sources of a shard together at
//! most the table's byte budget ([`DEFAULT_MAX_BYTES`]); beyond that plaintext is dropped
//! and counted.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::hash::AddrHashBuilder;

/// Most plaintext datagrams held per waiting source.
pub(crate) const MAX_QUEUED: usize = 16;
/// Most plaintext bytes held per waiting source (sixteen 4 KiB datagrams).
pub(crate) const MAX_QUEUED_BYTES: usize = 64 * 1024;
/// Default byte budget of the plaintext held for every waiting source of one shard.
pub(crate) const DEFAULT_MAX_BYTES: usize = 4 << 20;
/// A source still waiting after this long is dropped (control gives up on a handshake
/// within about five minutes and then sends `Close`; this only catches a lost `Close`).
pub(crate) const MAX_WAIT: Duration = Duration::from_secs(600);
/// Epoll tokens of waiting sources have this bit set (slot tokens never do).
pub(crate) const PENDING_TOKEN_BIT: usize = 1 << (usize::BITS - 1);

/// One local source waiting for its handshake.
#[derive(Debug)]
pub(crate) struct Pending<F> {
    /// The upstream flow the handshake runs over (connected to the server).
    pub flow: F,
    /// Its epoll token.
    pub token: usize,
    /// Plaintext received from the source meanwhile, oldest first (through
    /// [`PendingTable::queue`], which keeps the byte budgets).
    pub queued: Vec<Vec<u8>>,
    /// Bytes in `queued`.
    queued_bytes: usize,
    /// When the source first sent.
    pub since: Instant,
}

/// Waiting sources by address and by epoll token.
#[derive(Debug)]
pub(crate) struct PendingTable<F> {
    by_peer: HashMap<SocketAddr, Pending<F>, AddrHashBuilder>,
    by_token: HashMap<usize, SocketAddr, AddrHashBuilder>,
    next_token: usize,
    capacity: usize,
    /// Plaintext bytes held for every waiting source, and their budget.
    bytes: usize,
    max_bytes: usize,
}

impl<F> Pending<F> {
    /// A source that starts waiting at `now` on `upstream` (epoll `token`), nothing queued.
    pub fn new(flow: F, token: usize, now: Instant) -> Self {
        Self {
            flow,
            token,
            queued: Vec::new(),
            queued_bytes: 0,
            since: now,
        }
    }
}

impl<F> PendingTable<F> {
    pub fn with_capacity(capacity: usize, max_bytes: usize) -> Self {
        Self {
            by_peer: HashMap::with_hasher(AddrHashBuilder::random()),
            by_token: HashMap::with_hasher(AddrHashBuilder::random()),
            next_token: 0,
            capacity: capacity.max(1),
            bytes: 0,
            max_bytes,
        }
    }

    /// Queues a copy of `plaintext` for waiting source `peer` when its count and byte
    /// limits and the table's byte budget allow. Returns whether it was queued.
    pub fn queue(&mut self, peer: &SocketAddr, plaintext: &[u8]) -> bool {
        let len = plaintext.len();
        if self.bytes + len > self.max_bytes {
            return false;
        }
        let Some(p) = self.by_peer.get_mut(peer) else {
            return false;
        };
        if p.queued.len() >= MAX_QUEUED || p.queued_bytes + len > MAX_QUEUED_BYTES {
            return false;
        }
        p.queued.push(plaintext.to_vec());
        p.queued_bytes += len;
        self.bytes += len;
        true
    }

    /// Plaintext bytes held for every waiting source.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    pub fn len(&self) -> usize {
        self.by_peer.len()
    }

    pub fn is_full(&self) -> bool {
        self.by_peer.len() >= self.capacity
    }

    pub fn get(&self, peer: &SocketAddr) -> Option<&Pending<F>> {
        self.by_peer.get(peer)
    }

    /// The next unused token (top bit set, never `usize::MAX`, which is the listen socket's).
    pub fn next_token(&mut self) -> usize {
        self.next_token = (self.next_token + 1) % (PENDING_TOKEN_BIT - 1);
        PENDING_TOKEN_BIT | self.next_token
    }

    pub fn insert(&mut self, peer: SocketAddr, pending: Pending<F>) {
        self.by_token.insert(pending.token, peer);
        self.bytes += pending.queued_bytes;
        if let Some(old) = self.by_peer.insert(peer, pending) {
            self.by_token.remove(&old.token);
            self.bytes -= old.queued_bytes;
        }
    }

    /// The flow of the source waiting under `token`.
    pub fn flow_of(&self, token: usize) -> Option<&F> {
        let peer = self.by_token.get(&token)?;
        self.by_peer.get(peer).map(|p| &p.flow)
    }

    /// The source waiting under `token`.
    pub fn peer_of(&self, token: usize) -> Option<SocketAddr> {
        self.by_token.get(&token).copied()
    }

    pub fn remove(&mut self, peer: &SocketAddr) -> Option<Pending<F>> {
        let pending = self.by_peer.remove(peer)?;
        self.by_token.remove(&pending.token);
        self.bytes -= pending.queued_bytes;
        Some(pending)
    }

    /// Removes sources waiting since before `now - MAX_WAIT`; returns how many plaintext
    /// datagrams they held.
    pub fn expire(&mut self, now: Instant) -> usize {
        let mut dropped = 0;
        let mut freed = 0;
        let by_token = &mut self.by_token;
        self.by_peer.retain(|_, p| {
            let keep = now.saturating_duration_since(p.since) < MAX_WAIT;
            if !keep {
                dropped += p.queued.len();
                freed += p.queued_bytes;
                by_token.remove(&p.token);
            }
            keep
        });
        self.bytes -= freed;
        dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_source_and_per_shard_byte_budgets_hold() {
        let now = Instant::now();
        let mut t = PendingTable::with_capacity(8, 3 * MAX_QUEUED_BYTES);
        let peers: Vec<SocketAddr> = (1..=4)
            .map(|p| SocketAddr::from(([127, 0, 0, 1], p)))
            .collect();
        for (i, p) in peers.iter().enumerate() {
            t.insert(*p, Pending::new(i, PENDING_TOKEN_BIT | i, now));
        }
        // A source's byte limit: 64 KiB, whatever the count.
        assert!(t.queue(&peers[0], &[0; 40_000]));
        assert!(
            !t.queue(&peers[0], &[0; 40_000]),
            "over the per-source bytes"
        );
        assert!(t.queue(&peers[0], &[0; 20_000]));
        // The count limit with small datagrams.
        for _ in 0..MAX_QUEUED {
            t.queue(&peers[1], &[0; 10]);
        }
        assert_eq!(t.get(&peers[1]).map(|p| p.queued.len()), Some(MAX_QUEUED));
        // The shard's budget: 3 x 64 KiB in all.
        assert!(t.queue(&peers[2], &[0; 60_000]));
        assert!(t.queue(&peers[3], &[0; 60_000]));
        assert!(!t.queue(&peers[3], &[0; 20_000]), "over the shard budget");
        assert_eq!(t.bytes(), 60_000 + MAX_QUEUED * 10 + 120_000);
        // Removal and expiry give the bytes back.
        let removed = t.remove(&peers[2]).expect("waiting");
        assert_eq!(removed.queued.len(), 1);
        assert_eq!(t.bytes(), 60_000 + MAX_QUEUED * 10 + 60_000);
        assert_eq!(t.expire(now + MAX_WAIT), 2 + MAX_QUEUED + 1);
        assert_eq!(t.bytes(), 0);
        assert_eq!(t.len(), 0);
    }
}
