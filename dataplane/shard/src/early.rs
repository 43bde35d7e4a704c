//! Serve mode: protected records that arrive while their peer's handshake is finishing.
//!
//! In an abbreviated (resumed) handshake the client sends the last flight, and its first
//! application-data record can reach the shard before the control thread has processed that
//! flight and installed the session's keys (RFC 6347 §4.1: a record of an epoch the receiver
//! does not have keys for yet "MAY" be buffered). Dropping it would lose the first datagram
//! of every resumed session. So a peer whose datagram the shard just handed to control is
//! noted here, and its protected records are parked (at most [`MAX_PER_PEER`]) until
//! `InstallKeys` replays them through the normal path, or dropped (and counted as unknown
//! session) after [`MAX_AGE`].
//!
//! Bounded against floods: at most `capacity` peers are noted (a spoofed-ClientHello flood
//! fills the table and then parking simply stops; nothing else depends on it), each with at
//! most [`MAX_PER_PEER`] datagrams.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::hash::AddrHashBuilder;

/// Most datagrams parked per peer.
pub(crate) const MAX_PER_PEER: usize = 4;
/// A note (and what it parked) is forgotten this long after the peer's last handshake
/// datagram.
pub(crate) const MAX_AGE: Duration = Duration::from_secs(10);

#[derive(Debug)]
struct Early {
    since: Instant,
    datagrams: Vec<Vec<u8>>,
}

/// Peers in a handshake and the protected datagrams they sent meanwhile.
#[derive(Debug)]
pub(crate) struct EarlyRecords {
    peers: HashMap<SocketAddr, Early, AddrHashBuilder>,
    capacity: usize,
}

impl EarlyRecords {
    pub fn with_capacity(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        Self {
            peers: HashMap::with_capacity_and_hasher(capacity, AddrHashBuilder::random()),
            capacity,
        }
    }

    /// `peer` sent a handshake datagram at `now`.
    pub fn note(&mut self, peer: SocketAddr, now: Instant) {
        if let Some(e) = self.peers.get_mut(&peer) {
            e.since = now;
        } else if self.peers.len() < self.capacity {
            self.peers.insert(
                peer,
                Early {
                    since: now,
                    datagrams: Vec::new(),
                },
            );
        }
    }

    /// Parks a copy of `datagram` from `peer` if the peer is noted and has room.
    pub fn park(&mut self, peer: SocketAddr, datagram: &[u8]) -> bool {
        match self.peers.get_mut(&peer) {
            Some(e) if e.datagrams.len() < MAX_PER_PEER => {
                e.datagrams.push(datagram.to_vec());
                true
            }
            _ => false,
        }
    }

    /// Forgets `peer`, handing back what it parked.
    pub fn take(&mut self, peer: &SocketAddr) -> Vec<Vec<u8>> {
        self.peers
            .remove(peer)
            .map(|e| e.datagrams)
            .unwrap_or_default()
    }

    /// Forgets peers noted before `now - MAX_AGE`; returns how many parked datagrams went.
    pub fn expire(&mut self, now: Instant) -> usize {
        let mut dropped = 0;
        self.peers.retain(|_, e| {
            let keep = now.saturating_duration_since(e.since) < MAX_AGE;
            if !keep {
                dropped += e.datagrams.len();
            }
            keep
        });
        dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parks_only_for_noted_peers_within_bounds_and_expires() {
        let now = Instant::now();
        let a: SocketAddr = "127.0.0.1:1".parse().expect("literal");
        let b: SocketAddr = "127.0.0.1:2".parse().expect("literal");
        let c: SocketAddr = "127.0.0.1:3".parse().expect("literal");
        let mut e = EarlyRecords::with_capacity(2);
        assert!(!e.park(a, b"x"), "not noted");
        e.note(a, now);
        e.note(b, now);
        e.note(c, now); // over capacity: not noted
        assert!(!e.park(c, b"x"));
        for i in 0..MAX_PER_PEER {
            assert!(e.park(a, &[i as u8]));
        }
        assert!(!e.park(a, b"one too many"));
        assert_eq!(e.take(&a).len(), MAX_PER_PEER);
        assert!(e.take(&a).is_empty());
        assert!(e.park(b, b"y"));
        assert_eq!(e.expire(now + MAX_AGE), 1);
        assert!(!e.park(b, b"z"), "expired");
    }
}
