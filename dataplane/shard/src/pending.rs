//! Connect mode: local sources waiting for their handshake.
//!
//! The first plaintext datagram from a local source without a session makes the shard open
//! that source's upstream socket (connected to the DTLS server), register it in the shard's
//! epoll set under a token with the top bit set, queue the datagram, and ask control for a
//! handshake ([`ControlInbound::Open`](crate::ControlInbound::Open)). Control's flights go
//! out through that socket and the server's answers come back through it to control. When
//! `InstallKeys` arrives the socket becomes the session's and the queued plaintext is sealed
//! and sent; a `Close` (the handshake failed) drops it all.
//!
//! Bounded: at most `capacity` sources wait at once and each queues at most
//! [`MAX_QUEUED`] datagrams; beyond that plaintext is dropped and counted.

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use crate::hash::AddrHashBuilder;

/// Most plaintext datagrams held per waiting source.
pub(crate) const MAX_QUEUED: usize = 16;
/// A source still waiting after this long is dropped (control gives up on a handshake
/// within about five minutes and then sends `Close`; this only catches a lost `Close`).
pub(crate) const MAX_WAIT: Duration = Duration::from_secs(600);
/// Epoll tokens of waiting sources have this bit set (slot tokens never do).
pub(crate) const PENDING_TOKEN_BIT: usize = 1 << (usize::BITS - 1);

/// One local source waiting for its handshake.
#[derive(Debug)]
pub(crate) struct Pending {
    /// The upstream socket the handshake runs over (connected to the server).
    pub upstream: UdpSocket,
    /// Its epoll token.
    pub token: usize,
    /// Plaintext received from the source meanwhile, oldest first.
    pub queued: Vec<Vec<u8>>,
    /// When the source first sent.
    pub since: Instant,
}

/// Waiting sources by address and by epoll token.
#[derive(Debug)]
pub(crate) struct PendingTable {
    by_peer: HashMap<SocketAddr, Pending, AddrHashBuilder>,
    by_token: HashMap<usize, SocketAddr, AddrHashBuilder>,
    next_token: usize,
    capacity: usize,
}

impl PendingTable {
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            by_peer: HashMap::with_hasher(AddrHashBuilder::random()),
            by_token: HashMap::with_hasher(AddrHashBuilder::random()),
            next_token: 0,
            capacity: capacity.max(1),
        }
    }

    pub fn len(&self) -> usize {
        self.by_peer.len()
    }

    pub fn is_full(&self) -> bool {
        self.by_peer.len() >= self.capacity
    }

    pub fn get(&self, peer: &SocketAddr) -> Option<&Pending> {
        self.by_peer.get(peer)
    }

    pub fn get_mut(&mut self, peer: &SocketAddr) -> Option<&mut Pending> {
        self.by_peer.get_mut(peer)
    }

    /// The next unused token (top bit set, never `usize::MAX`, which is the listen socket's).
    pub fn next_token(&mut self) -> usize {
        self.next_token = (self.next_token + 1) % (PENDING_TOKEN_BIT - 1);
        PENDING_TOKEN_BIT | self.next_token
    }

    pub fn insert(&mut self, peer: SocketAddr, pending: Pending) {
        self.by_token.insert(pending.token, peer);
        if let Some(old) = self.by_peer.insert(peer, pending) {
            self.by_token.remove(&old.token);
        }
    }

    pub fn peer_of(&self, token: usize) -> Option<SocketAddr> {
        self.by_token.get(&token).copied()
    }

    pub fn remove(&mut self, peer: &SocketAddr) -> Option<Pending> {
        let pending = self.by_peer.remove(peer)?;
        self.by_token.remove(&pending.token);
        Some(pending)
    }

    /// Removes sources waiting since before `now - MAX_WAIT`; returns how many plaintext
    /// datagrams they held.
    pub fn expire(&mut self, now: Instant) -> usize {
        let mut dropped = 0;
        let by_token = &mut self.by_token;
        self.by_peer.retain(|_, p| {
            let keep = now.saturating_duration_since(p.since) < MAX_WAIT;
            if !keep {
                dropped += p.queued.len();
                by_token.remove(&p.token);
            }
            keep
        });
        dropped
    }
}
