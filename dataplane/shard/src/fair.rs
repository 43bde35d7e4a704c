//! Fair hand-off of handshake datagrams to the control thread.
//!
//! Every datagram the shard cannot handle itself (a ClientHello, a handshake flight, a
//! record of an unknown peer that looks like a handshake) is copied to control. Those come
//! from unauthenticated sources, so one noisy source (a ClientHello flood from one host)
//! must not be able to fill the shard → control queue and lock every other source out.
//!
//! The shard therefore stages them here in [`BUCKETS`] FIFO buckets chosen by a keyed hash
//! of the source IP address (SipHash with a per-shard random key, so a source cannot aim
//! for another's bucket), and moves them into the control queue round robin, one per
//! non-empty bucket per round, while the queue holds fewer than [`QUEUE_DEPTH`] messages
//! (control takes up to that many per shard per turn). A flooding source fills its own
//! bucket and then loses its excess there; every other source keeps its share. This is
//! stochastic fair queueing (McKenney, 1990) with per-source buckets.
//!
//! Bounded: [`PER_BUCKET`] datagrams per bucket, [`MAX_STAGED`] over all buckets (a flood
//! from many sources fills the stage up to there; the rest is dropped before any copy is
//! made) and a
//! byte budget, all fixed at construction; what does not fit is dropped and counted by the
//! caller. The budget counts the memory each staged datagram holds, its buffer's capacity
//! (a pooled buffer of [`POOL_BUFFER_BYTES`] for any datagram that fits one, see
//! [`ShardQueues::take_buffer`]), not its length: a flood of tiny datagrams cannot hold
//! more memory than the budget says. The copies come from the queues' buffer pool, so
//! staging a datagram allocates nothing while the pool has buffers; a copy that does not
//! make it into the control queue is recycled.
//!
//! The shard keeps two stages of this kind. The **admitted lane** holds the datagrams of
//! peers whose cookie-verified handshake control already holds (noted by `ExpectKeys`: the
//! peer proved its address and control spent a handshake's asymmetric crypto on it) and is
//! pumped first, for at most half of the control queue's room per pump, so a client's next
//! flight or retransmission is not lost in a stage full of spoofed ClientHellos and the
//! work already done for it is not wasted. It is small ([`MAX_ADMITTED_STAGED`] datagrams,
//! a quarter of the byte budget) and fair between its sources in the same way; what does
//! not fit there goes to the general stage like any other datagram. The **general stage**
//! takes everything else.

use std::collections::VecDeque;
use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::net::{IpAddr, SocketAddr};

use crate::queue::{ControlInbound, POOL_BUFFER_BYTES, ShardQueues};
pub(crate) use crate::queue::{MAX_ADMITTED_STAGED, MAX_STAGED};

/// Buckets of the fair stage.
pub(crate) const BUCKETS: usize = 64;
/// Datagrams held per bucket.
pub(crate) const PER_BUCKET: usize = 64;
/// Messages the shard lets wait in the control queue at once; the rest wait here, fairly.
pub(crate) const QUEUE_DEPTH: usize = 256;
/// Default byte budget of the staged datagrams of one shard (buffer capacity: 1024 pooled
/// buffers).
pub(crate) const DEFAULT_MAX_BYTES: usize = 2 << 20;

/// The memory a staged copy of a `len`-byte datagram holds (see `ShardQueues::take_buffer`).
fn held(len: usize) -> usize {
    len.max(POOL_BUFFER_BYTES)
}

/// One staged datagram and its source.
type Staged = (SocketAddr, Vec<u8>);

/// The fair stage (see the module documentation).
#[derive(Debug)]
pub(crate) struct FairForward {
    buckets: Box<[VecDeque<Staged>]>,
    /// Non-empty buckets in round-robin order, each at most once.
    active: VecDeque<usize>,
    /// Datagrams staged.
    staged: usize,
    /// Most datagrams staged at once.
    max_staged: usize,
    /// Buffer capacity staged.
    bytes: usize,
    max_bytes: usize,
    hasher: RandomState,
}

impl FairForward {
    /// An empty general stage whose datagrams hold at most `max_bytes`.
    pub fn new(max_bytes: usize) -> Self {
        Self::with_limits(max_bytes, MAX_STAGED)
    }

    /// The admitted lane of a shard whose general stage holds `stage_bytes`: a quarter of
    /// that, and [`MAX_ADMITTED_STAGED`] datagrams.
    pub fn admitted(stage_bytes: usize) -> Self {
        Self::with_limits(stage_bytes / 4, MAX_ADMITTED_STAGED)
    }

    /// An empty stage of at most `max_staged` datagrams holding at most `max_bytes`.
    fn with_limits(max_bytes: usize, max_staged: usize) -> Self {
        Self {
            buckets: (0..BUCKETS)
                .map(|_| VecDeque::with_capacity(PER_BUCKET))
                .collect(),
            active: VecDeque::with_capacity(BUCKETS),
            staged: 0,
            max_staged,
            bytes: 0,
            max_bytes,
            hasher: RandomState::new(),
        }
    }

    /// The bucket of `ip`: IPv4 by address, IPv6 by its /64 (one host or subnet).
    fn bucket(&self, ip: IpAddr) -> usize {
        let key: u128 = match ip {
            IpAddr::V4(v4) => u128::from(u32::from(v4)),
            IpAddr::V6(v6) => u128::from(v6) >> 64 | 1 << 127,
        };
        (self.hasher.hash_one(key) % BUCKETS as u64) as usize
    }

    /// Stages a copy of `datagram` from `peer`, in a buffer of `queues`' pool. Returns
    /// `false` (nothing staged, nothing copied) when its bucket, the stage or the byte
    /// budget is full.
    pub fn push(&mut self, queues: &ShardQueues, peer: SocketAddr, datagram: &[u8]) -> bool {
        let held = held(datagram.len());
        if self.staged >= self.max_staged || self.bytes + held > self.max_bytes {
            return false;
        }
        let b = self.bucket(peer.ip());
        let Some(bucket) = self.buckets.get_mut(b) else {
            return false;
        };
        if bucket.len() >= PER_BUCKET {
            return false;
        }
        if bucket.is_empty() {
            self.active.push_back(b);
        }
        bucket.push_back((peer, queues.copy_datagram(datagram)));
        self.staged += 1;
        self.bytes += held;
        true
    }

    /// Moves staged datagrams into `queues` round robin over the buckets while the queue
    /// holds fewer than [`QUEUE_DEPTH`] messages and has room. Returns how many moved.
    pub fn pump(&mut self, queues: &ShardQueues) -> usize {
        self.pump_at_most(queues, usize::MAX)
    }

    /// [`FairForward::pump`], moving at most `limit` datagrams.
    pub fn pump_at_most(&mut self, queues: &ShardQueues, limit: usize) -> usize {
        let mut moved = 0;
        // Each control worker's lane may hold about that many.
        while moved < limit && queues.inbound_len() < QUEUE_DEPTH * queues.lanes().count() {
            let Some(b) = self.active.pop_front() else {
                break;
            };
            let Some(bucket) = self.buckets.get_mut(b) else {
                continue;
            };
            let Some((peer, datagram)) = bucket.pop_front() else {
                continue;
            };
            let held = held(datagram.len());
            match queues.push_inbound(ControlInbound::Handshake { peer, datagram }) {
                Ok(()) => {
                    moved += 1;
                    self.staged -= 1;
                    self.bytes -= held;
                    if !bucket.is_empty() {
                        self.active.push_back(b);
                    }
                }
                Err(back) => {
                    // The queue's byte budget is full: keep it for the next turn.
                    if let ControlInbound::Handshake { peer, datagram } = back {
                        bucket.push_front((peer, datagram));
                    }
                    self.active.push_front(b);
                    break;
                }
            }
        }
        moved
    }

    /// Datagrams staged now.
    pub fn len(&self) -> usize {
        self.staged
    }

    /// Buffer bytes staged now (capacity, see the module documentation).
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Whether nothing is staged.
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.active.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(q: &ShardQueues) -> Vec<SocketAddr> {
        std::iter::from_fn(|| q.poll_inbound())
            .filter_map(|m| match m {
                ControlInbound::Handshake { peer, .. } => Some(peer),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_flooding_source_gets_one_share_of_the_queue() {
        let q = ShardQueues::new(16, 4096);
        let mut f = FairForward::new(DEFAULT_MAX_BYTES);
        let noisy: SocketAddr = "10.0.0.1:1000".parse().expect("literal");
        // The flood arrives first and overflows its own bucket.
        let staged = (0..1000).filter(|_| f.push(&q, noisy, &[1; 100])).count();
        assert_eq!(staged, PER_BUCKET);
        // Then 20 quiet sources, one hello each, in 20 other buckets (the key is random, so
        // the addresses are chosen by bucket).
        let mut taken = vec![f.bucket(noisy.ip())];
        let quiet: Vec<SocketAddr> = (0..=u16::MAX)
            .map(|i| SocketAddr::from(([10, 1, (i >> 8) as u8, i as u8], 2000)))
            .filter(|p| {
                let b = f.bucket(p.ip());
                let fresh = !taken.contains(&b);
                taken.push(b);
                fresh
            })
            .take(20)
            .collect();
        assert_eq!(quiet.len(), 20);
        let quiet_staged = quiet.iter().filter(|p| f.push(&q, **p, &[2; 100])).count();
        assert_eq!(quiet_staged, quiet.len());
        // A source that shares the flooder's bucket shares its fate (the price of hashing).
        let unlucky = (0..=u16::MAX)
            .map(|i| SocketAddr::from(([10, 2, (i >> 8) as u8, i as u8], 2000)))
            .find(|p| f.bucket(p.ip()) == f.bucket(noisy.ip()))
            .expect("65 536 addresses cover every bucket");
        assert!(!f.push(&q, unlucky, &[3; 100]));
        // The first QUEUE_DEPTH moved: every quiet source is among them, and the first round
        // takes one datagram from each bucket, the flood's included.
        assert_eq!(f.pump(&q), PER_BUCKET + quiet.len());
        let got = drain(&q);
        for p in &quiet {
            assert!(got.contains(p), "{p} starved");
        }
        let first_round = &got[..=quiet.len()];
        assert_eq!(first_round.iter().filter(|p| **p == noisy).count(), 1);
        assert!(f.is_empty());
        assert_eq!(f.bytes(), 0);
    }

    #[test]
    fn the_stage_respects_the_queue_depth_and_byte_budget() {
        let q = ShardQueues::new(16, 4096);
        // The budget counts the buffers the copies hold, not their length.
        let mut f = FairForward::new(100 * POOL_BUFFER_BYTES);
        let peers: Vec<SocketAddr> = (0..2000u16)
            .map(|i| SocketAddr::from(([10, 1, (i >> 8) as u8, i as u8], 9)))
            .collect();
        let staged = peers.iter().filter(|p| f.push(&q, **p, &[0; 10])).count();
        assert_eq!(
            staged, 100,
            "100 pooled buffers, however short the datagrams"
        );
        assert_eq!(f.bytes(), 100 * POOL_BUFFER_BYTES);
        assert_eq!(f.pump(&q), 100);
        assert_eq!(q.inbound_len(), 100);
        assert_eq!((f.len(), f.bytes()), (0, 0));
        for m in std::iter::from_fn(|| q.poll_inbound()) {
            if let ControlInbound::Handshake { datagram, .. } = m {
                q.recycle(datagram);
            }
        }
        assert_eq!(
            q.pool_misses(),
            0,
            "the copies came from the pool and went back"
        );
        // The count bound: a flood from many sources stops at MAX_STAGED.
        let mut f = FairForward::new(DEFAULT_MAX_BYTES);
        let staged = peers.iter().filter(|p| f.push(&q, **p, &[0; 100])).count();
        assert_eq!(staged, MAX_STAGED);
        assert_eq!(f.pump(&q), QUEUE_DEPTH, "only up to the depth");
        assert_eq!(f.len(), MAX_STAGED - QUEUE_DEPTH);
        assert_eq!(drain(&q).len(), QUEUE_DEPTH);
        assert_eq!(f.pump(&q), QUEUE_DEPTH);
        assert!(!f.is_empty());
    }
}
