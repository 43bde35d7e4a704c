//! Serve mode: protected records that arrive while their peer's handshake is finishing.
//!
//! In an abbreviated (resumed) handshake the client sends the last flight, and its first
//! application-data record can reach the shard before the control thread has processed that
//! flight and installed the session's keys (RFC 6347 §4.1: a record of an epoch the receiver
//! does not have keys for yet "MAY" be buffered). Dropping it would lose the first datagram
//! of every resumed session. So a peer whose cookie-verified handshake control holds is
//! noted here (control's `ExpectKeys`, sent before the server's flight), and its protected
//! records are parked (at most [`MAX_PER_PEER`]) until `InstallKeys` replays them through
//! the normal path, or dropped (and counted as unknown session) after [`MAX_AGE`].
//!
//! Bounded against floods: only peers control names are noted, so a spoofed or cookie-less
//! source can make the shard hold nothing; at most `capacity` peers are noted; a parked
//! datagram is at most one largest record long; and all parked datagrams together hold at
//! most `max_bytes`. Past any bound a datagram is simply not parked.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::hash::AddrHashBuilder;

/// Most datagrams parked per peer.
pub(crate) const MAX_PER_PEER: usize = 4;
/// A note (and what it parked) is forgotten this long after control named the peer.
pub(crate) const MAX_AGE: Duration = Duration::from_secs(10);
/// Default byte budget of every datagram parked by one shard.
pub(crate) const DEFAULT_MAX_BYTES: usize = 1 << 20;

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
    /// Longest datagram parked (the largest record the data plane accepts).
    max_datagram: usize,
    /// Budget of parked bytes, and what is parked now.
    max_bytes: usize,
    bytes: usize,
}

impl EarlyRecords {
    /// Room for `capacity` peers, datagrams of at most `max_datagram` bytes and `max_bytes`
    /// bytes in all.
    pub fn new(capacity: usize, max_datagram: usize, max_bytes: usize) -> Self {
        let capacity = capacity.max(1);
        Self {
            peers: HashMap::with_capacity_and_hasher(capacity, AddrHashBuilder::random()),
            capacity,
            max_datagram,
            max_bytes,
            bytes: 0,
        }
    }

    /// Control holds a handshake for `peer` (at `now`): park its records until its keys.
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

    /// Control holds a handshake for `peer`.
    pub fn is_noted(&self, peer: &SocketAddr) -> bool {
        self.peers.contains_key(peer)
    }

    /// Parks a copy of `datagram` from `peer` if the peer is noted and every bound allows.
    pub fn park(&mut self, peer: SocketAddr, datagram: &[u8]) -> bool {
        if datagram.len() > self.max_datagram || self.bytes + datagram.len() > self.max_bytes {
            return false;
        }
        match self.peers.get_mut(&peer) {
            Some(e) if e.datagrams.len() < MAX_PER_PEER => {
                e.datagrams.push(datagram.to_vec());
                self.bytes += datagram.len();
                true
            }
            _ => false,
        }
    }

    /// Forgets `peer`, handing back what it parked.
    pub fn take(&mut self, peer: &SocketAddr) -> Vec<Vec<u8>> {
        let parked = self
            .peers
            .remove(peer)
            .map(|e| e.datagrams)
            .unwrap_or_default();
        self.bytes -= parked.iter().map(Vec::len).sum::<usize>();
        parked
    }

    /// Bytes parked now.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Forgets peers noted before `now - MAX_AGE`; returns how many parked datagrams went.
    pub fn expire(&mut self, now: Instant) -> usize {
        let mut dropped = 0;
        let mut freed = 0;
        self.peers.retain(|_, e| {
            let keep = now.saturating_duration_since(e.since) < MAX_AGE;
            if !keep {
                dropped += e.datagrams.len();
                freed += e.datagrams.iter().map(Vec::len).sum::<usize>();
            }
            keep
        });
        self.bytes -= freed;
        if self.peers.is_empty() && self.peers.capacity() > self.capacity {
            self.peers.shrink_to(self.capacity);
        }
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
        let mut e = EarlyRecords::new(2, 100, 1000);
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
        assert_eq!(e.bytes(), 0);
    }

    #[test]
    fn datagram_size_and_total_bytes_are_capped() {
        let now = Instant::now();
        let mut e = EarlyRecords::new(8, 100, 250);
        let peers: Vec<SocketAddr> = (1..=4)
            .map(|p| SocketAddr::from(([127, 0, 0, 1], p)))
            .collect();
        for p in &peers {
            e.note(*p, now);
        }
        assert!(!e.park(peers[0], &[0; 101]), "longer than one record");
        assert!(e.park(peers[0], &[0; 100]));
        assert!(e.park(peers[1], &[0; 100]));
        assert!(!e.park(peers[2], &[0; 100]), "over the byte budget");
        assert!(e.park(peers[2], &[0; 50]));
        assert_eq!(e.bytes(), 250);
        assert_eq!(e.take(&peers[0]).len(), 1);
        assert_eq!(e.bytes(), 150);
        assert!(e.park(peers[3], &[0; 100]));
    }
}
