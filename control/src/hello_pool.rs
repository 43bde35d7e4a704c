//! Reassembly of first ClientHellos that arrive in fragments, before any cookie, in a fixed
//! preallocated pool.
//!
//! A stateless server cannot keep state for a ClientHello whose cookie it has not checked
//! (RFC 6347 §4.2.1, RFC 9147 §5.1), yet a ClientHello larger than the path MTU arrives in
//! fragments: DTLS 1.3's default X25519MLKEM768 key share alone is 1,216 bytes, so its first
//! ClientHello (about 1.4 KB) exceeds a 1200-byte MTU, and a 1.2 ClientHello with many
//! suites and extensions can too. This pool holds such hellos while they are incomplete,
//! and nothing else:
//!
//! - every slot and every index is allocated when the pool is built; offering a fragment
//!   never allocates, so a spoofed flood costs no heap;
//! - one slot per source address (a new hello from the same address replaces the old one);
//!   at most [`HelloPoolConfig::per_ip`] slots per IP address, its own least recently used
//!   slot making room for its next one;
//! - when the pool is full, the least recently used slot (another unverified hello) is
//!   evicted: a flood evicts only unverified hellos, never a connection, and a real client
//!   retransmits its hello;
//! - a hello longer than [`HelloPoolConfig::slot_bytes`] is refused.
//!
//! The [`Acceptor`](crate::Acceptor) owns the pool (one per acceptor, so one per control
//! thread); a complete hello is judged like an unfragmented one (cookie check, then the
//! allocation of a connection only for a valid cookie) and its slot freed.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

/// Sizes of a [`HelloPool`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HelloPoolConfig {
    /// Hellos reassembled at once (default 256).
    pub slots: usize,
    /// Largest ClientHello body held (default 4 KiB: the post-quantum hello with room for
    /// a ticket and many suites).
    pub slot_bytes: usize,
    /// Most slots one IP address holds (default 4).
    pub per_ip: usize,
}

impl Default for HelloPoolConfig {
    fn default() -> Self {
        Self {
            slots: 256,
            slot_bytes: 4096,
            per_ip: 4,
        }
    }
}

impl HelloPoolConfig {
    /// Bytes the pool allocates when built (buffers and coverage bitmaps; the indexes add
    /// a few dozen bytes per slot).
    pub fn memory(&self) -> usize {
        self.slots * (self.slot_bytes + self.slot_bytes.div_ceil(64) * 8)
    }
}

/// One hello being reassembled.
#[derive(Debug)]
struct Slot {
    peer: Option<SocketAddr>,
    message_seq: u16,
    /// The body's length, from the fragments' header.
    total: usize,
    /// Bytes of the body held so far.
    held: usize,
    /// Bytes of the datagrams that carried its fragments (for the amplification rule).
    datagram_bytes: usize,
    /// The record sequence number of the first fragment's record.
    record_sequence: u64,
    /// When it was last offered a fragment (a pool-wide counter).
    used: u64,
    /// Which body bytes are held, one bit per byte.
    covered: Box<[u64]>,
    body: Box<[u8]>,
}

/// A complete hello, as the pool hands it back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Complete {
    pub slot: usize,
    pub message_seq: u16,
    pub record_sequence: u64,
    pub datagram_bytes: usize,
}

/// What became of one fragment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Offer {
    /// Held; the hello is not complete yet.
    Held,
    /// The hello is complete in this slot.
    Complete(Complete),
    /// Refused: longer than a slot, or the fragment lies outside its hello.
    Refused,
}

/// Counters of a [`HelloPool`].
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct HelloPoolStats {
    /// Fragments held.
    pub fragments: u64,
    /// Hellos completed.
    pub completed: u64,
    /// Incomplete hellos evicted to make room (pool full, or their IP at its share).
    pub evicted: u64,
    /// Fragments refused (hello too long, fragment out of bounds).
    pub refused: u64,
}

/// The pool (see the module documentation).
#[derive(Debug)]
pub struct HelloPool {
    config: HelloPoolConfig,
    slots: Box<[Slot]>,
    free: Vec<usize>,
    by_peer: HashMap<SocketAddr, usize>,
    per_ip: HashMap<IpAddr, usize>,
    clock: u64,
    stats: HelloPoolStats,
}

impl HelloPool {
    /// A pool of `config.slots` slots (at least 1) of `config.slot_bytes` each, all
    /// allocated now.
    pub fn new(config: HelloPoolConfig) -> Self {
        let n = config.slots.max(1);
        let config = HelloPoolConfig {
            slots: n,
            per_ip: config.per_ip.max(1),
            ..config
        };
        let words = config.slot_bytes.div_ceil(64);
        let slots = (0..n)
            .map(|_| Slot {
                peer: None,
                message_seq: 0,
                total: 0,
                held: 0,
                datagram_bytes: 0,
                record_sequence: 0,
                used: 0,
                covered: vec![0; words].into_boxed_slice(),
                body: vec![0; config.slot_bytes].into_boxed_slice(),
            })
            .collect();
        Self {
            config,
            slots,
            free: (0..n).rev().collect(),
            // Twice the entries they ever hold: when removals have left the tables full of
            // tombstones, hashbrown rehashes in place (no allocation) as long as the live
            // entries are at most half its capacity; at exactly `n` it would grow instead.
            by_peer: HashMap::with_capacity(2 * n),
            per_ip: HashMap::with_capacity(2 * n),
            clock: 0,
            stats: HelloPoolStats::default(),
        }
    }

    /// Its sizes.
    pub fn config(&self) -> HelloPoolConfig {
        self.config
    }

    /// Hellos being reassembled.
    pub fn len(&self) -> usize {
        self.by_peer.len()
    }

    /// True when no hello is being reassembled.
    pub fn is_empty(&self) -> bool {
        self.by_peer.is_empty()
    }

    /// Its counters.
    pub fn stats(&self) -> HelloPoolStats {
        self.stats
    }

    /// Offers one fragment of `peer`'s ClientHello: its message_seq, the body's total
    /// length, the fragment's offset and bytes, the record sequence number and the
    /// carrying datagram's length. Never allocates.
    #[allow(
        clippy::too_many_arguments,
        reason = "the fields of one fragment, passed as they were parsed"
    )]
    pub(crate) fn offer(
        &mut self,
        peer: SocketAddr,
        message_seq: u16,
        total: usize,
        offset: usize,
        fragment: &[u8],
        record_sequence: u64,
        datagram_len: usize,
    ) -> Offer {
        let end = offset.saturating_add(fragment.len());
        if total > self.config.slot_bytes || end > total || fragment.is_empty() {
            self.stats.refused += 1;
            return Offer::Refused;
        }
        self.clock += 1;
        let index = match self.by_peer.get(&peer).copied() {
            Some(i) if self.slots[i].message_seq == message_seq && self.slots[i].total == total => {
                i
            }
            // A new hello (or the same one with another length: the newest wins) from an
            // address that had one: its slot starts over.
            Some(i) => {
                self.reset(i, message_seq, total, record_sequence);
                i
            }
            None => {
                let i = self.take_slot(peer);
                self.slots[i].peer = Some(peer);
                self.by_peer.insert(peer, i);
                *self.per_ip.entry(peer.ip()).or_insert(0) += 1;
                self.reset(i, message_seq, total, record_sequence);
                i
            }
        };
        let slot = &mut self.slots[index];
        slot.used = self.clock;
        slot.datagram_bytes = slot.datagram_bytes.saturating_add(datagram_len);
        // Overlapping fragments are fine: bytes already held are kept (RFC 6347 §4.2.3
        // lets a sender refragment on retransmission).
        for (k, byte) in fragment.iter().enumerate() {
            let at = offset + k;
            let (word, bit) = (at / 64, 1u64 << (at % 64));
            if slot.covered[word] & bit == 0 {
                slot.covered[word] |= bit;
                slot.body[at] = *byte;
                slot.held += 1;
            }
        }
        self.stats.fragments += 1;
        if slot.held < slot.total {
            return Offer::Held;
        }
        self.stats.completed += 1;
        Offer::Complete(Complete {
            slot: index,
            message_seq: slot.message_seq,
            record_sequence: slot.record_sequence,
            datagram_bytes: slot.datagram_bytes,
        })
    }

    /// The body of a complete hello.
    pub(crate) fn body(&self, complete: &Complete) -> &[u8] {
        let slot = &self.slots[complete.slot];
        &slot.body[..slot.total]
    }

    /// Frees a slot (its hello was judged).
    pub(crate) fn release(&mut self, slot: usize) {
        let Some(peer) = self.slots.get_mut(slot).and_then(|s| s.peer.take()) else {
            return;
        };
        self.by_peer.remove(&peer);
        if let Some(n) = self.per_ip.get_mut(&peer.ip()) {
            *n -= 1;
            if *n == 0 {
                self.per_ip.remove(&peer.ip());
            }
        }
        self.free.push(slot);
    }

    fn reset(&mut self, i: usize, message_seq: u16, total: usize, record_sequence: u64) {
        let slot = &mut self.slots[i];
        slot.message_seq = message_seq;
        slot.total = total;
        slot.held = 0;
        slot.datagram_bytes = 0;
        slot.record_sequence = record_sequence;
        slot.covered.fill(0);
    }

    /// A free slot for a new source: its IP's least recently used slot when that IP is at
    /// its share, a free one, or else the pool's least recently used one.
    fn take_slot(&mut self, peer: SocketAddr) -> usize {
        let ip_full = self
            .per_ip
            .get(&peer.ip())
            .is_some_and(|n| *n >= self.config.per_ip);
        if !ip_full && let Some(i) = self.free.pop() {
            return i;
        }
        let victim = self
            .slots
            .iter()
            .enumerate()
            .filter(|(_, s)| s.peer.is_some_and(|p| !ip_full || p.ip() == peer.ip()))
            .min_by_key(|(_, s)| s.used)
            .map(|(i, _)| i)
            .unwrap_or(0);
        self.stats.evicted += 1;
        self.release(victim);
        // `release` put it on the free list last.
        self.free.pop().unwrap_or(victim)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(ip: [u8; 4], port: u16) -> SocketAddr {
        SocketAddr::from((ip, port))
    }

    fn small() -> HelloPool {
        HelloPool::new(HelloPoolConfig {
            slots: 4,
            slot_bytes: 1500,
            per_ip: 2,
        })
    }

    #[test]
    fn fragments_in_any_order_with_overlap_complete_the_hello() {
        let mut pool = small();
        let body: Vec<u8> = (0..1400u32).map(|i| (i % 251) as u8).collect();
        let peer = addr([192, 0, 2, 1], 5000);
        assert_eq!(
            pool.offer(peer, 0, 1400, 1000, &body[1000..], 7, 500),
            Offer::Held
        );
        assert_eq!(
            pool.offer(peer, 0, 1400, 0, &body[..600], 8, 700),
            Offer::Held
        );
        // Overlapping the held bytes and filling the gap.
        let done = pool.offer(peer, 0, 1400, 500, &body[500..1100], 9, 700);
        let Offer::Complete(c) = done else {
            panic!("{done:?}")
        };
        assert_eq!(pool.body(&c), body.as_slice());
        assert_eq!((c.record_sequence, c.datagram_bytes), (7, 1900));
        pool.release(c.slot);
        assert!(pool.is_empty());
        assert_eq!(pool.stats().completed, 1);
    }

    #[test]
    fn bounds_are_checked_before_anything_is_held() {
        let mut pool = small();
        let peer = addr([192, 0, 2, 1], 5000);
        assert_eq!(pool.offer(peer, 0, 1501, 0, &[1], 0, 50), Offer::Refused);
        assert_eq!(
            pool.offer(peer, 0, 100, 90, &[1; 20], 0, 50),
            Offer::Refused
        );
        assert_eq!(
            pool.offer(peer, 0, 100, usize::MAX, &[1; 2], 0, 50),
            Offer::Refused
        );
        assert_eq!(pool.offer(peer, 0, 100, 0, &[], 0, 50), Offer::Refused);
        assert!(pool.is_empty());
        assert_eq!(pool.stats().refused, 4);
    }

    #[test]
    fn a_new_hello_or_length_from_the_same_address_starts_over() {
        let mut pool = small();
        let peer = addr([192, 0, 2, 1], 5000);
        pool.offer(peer, 0, 100, 0, &[1; 60], 0, 80);
        // Same address, another total length: the old bytes do not count.
        assert_eq!(pool.offer(peer, 0, 120, 60, &[2; 60], 1, 80), Offer::Held);
        assert!(matches!(
            pool.offer(peer, 0, 120, 0, &[3; 60], 2, 80),
            Offer::Complete(_)
        ));
        assert_eq!(pool.len(), 1);
    }

    #[test]
    fn a_flooding_ip_evicts_only_its_own_and_a_full_pool_its_oldest() {
        let mut pool = small();
        let honest = addr([198, 51, 100, 9], 4433);
        pool.offer(honest, 0, 1000, 0, &[9; 500], 0, 600);
        // One IP on many ports: it keeps at most two slots, evicting its own.
        for port in 1..=50 {
            pool.offer(addr([203, 0, 113, 1], port), 0, 1000, 0, &[1; 100], 0, 200);
        }
        assert_eq!(pool.len(), 3, "the honest hello and the flooder's two");
        assert!(pool.by_peer.contains_key(&honest));
        // Many IPs: the pool is full, the least recently used goes (the honest one is
        // oldest, unless it keeps sending).
        pool.offer(honest, 0, 1000, 500, &[9; 100], 0, 200);
        for ip in 2..=3 {
            pool.offer(addr([203, 0, 113, ip], 1), 0, 1000, 0, &[1; 100], 0, 200);
        }
        assert!(pool.by_peer.contains_key(&honest), "recently used, kept");
        assert_eq!(pool.len(), 4);
        assert!(pool.stats().evicted >= 48);
        // The honest client completes.
        assert!(matches!(
            pool.offer(honest, 0, 1000, 600, &[9; 400], 0, 500),
            Offer::Complete(_)
        ));
    }

    #[test]
    fn memory_is_what_the_config_says() {
        let c = HelloPoolConfig::default();
        assert_eq!(c.memory(), 256 * (4096 + 64 * 8));
    }
}
