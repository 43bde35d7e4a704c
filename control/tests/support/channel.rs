//! A seeded, deterministic impairment channel for one direction of an in-memory pair:
//! loss, duplication, reordering (random extra delay), re-fragmentation (one record per
//! datagram; records never span datagrams), and targeted drops of the N-th record.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use super::wire::record_ranges;

/// splitmix64: small, seedable, good enough to pick drops.
#[derive(Debug, Clone)]
pub struct SimRng(u64);

impl SimRng {
    pub fn new(seed: u64) -> Self {
        Self(seed ^ 0x9e37_79b9_7f4a_7c15)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    pub fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && self.unit() < p
    }

    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next_u64() % n }
    }
}

/// What the channel does to datagrams.
#[derive(Debug, Clone, Default)]
pub struct Impairment {
    /// Probability that a datagram is lost.
    pub loss: f64,
    /// Probability that a datagram is delivered twice.
    pub duplicate: f64,
    /// Probability that a datagram gets an extra random delay in `0..=jitter` (reordering).
    pub reorder: f64,
    /// One-way latency of every datagram.
    pub delay: Duration,
    /// Upper bound of the extra delay of reordered datagrams.
    pub jitter: Duration,
    /// Send every record of a multi-record datagram as its own datagram.
    pub refragment: bool,
    /// Record indices (counted over every record this direction ever carried, from 0) to drop.
    pub drop_records: BTreeSet<usize>,
    /// Datagram indices (counted from 0) to drop.
    pub drop_datagrams: BTreeSet<usize>,
    /// Drops every record for which this returns `true` (gets the whole record).
    pub drop_record_if: Option<fn(&[u8]) -> bool>,
    /// Keep every datagram in [`Channel::held`] instead of delivering it (the test delivers
    /// by hand).
    pub hold: bool,
}

impl Impairment {
    pub fn perfect() -> Self {
        Self {
            delay: Duration::from_millis(5),
            ..Self::default()
        }
    }

    pub fn lossy(loss: f64) -> Self {
        Self {
            loss,
            ..Self::perfect()
        }
    }
}

/// Counters of one direction.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ChannelStats {
    /// Datagrams handed to the channel by the sender.
    pub datagrams_in: usize,
    /// Bytes handed to the channel by the sender.
    pub bytes_in: usize,
    /// Records handed to the channel.
    pub records_in: usize,
    /// Datagrams delivered to the receiver (duplicates included).
    pub datagrams_out: usize,
    pub bytes_out: usize,
    pub dropped_datagrams: usize,
    pub dropped_records: usize,
    pub duplicated: usize,
    /// Largest datagram the sender handed in.
    pub max_datagram: usize,
}

#[derive(Debug)]
struct InFlight {
    at: Instant,
    order: u64,
    bytes: Vec<u8>,
}

/// One direction.
#[derive(Debug)]
pub struct Channel {
    pub impairment: Impairment,
    rng: SimRng,
    queue: Vec<InFlight>,
    order: u64,
    pub stats: ChannelStats,
    /// Every datagram the sender handed in, in order (for inspection).
    pub log: Vec<Vec<u8>>,
    pub keep_log: bool,
    /// Datagrams kept back in `hold` mode.
    pub held: Vec<Vec<u8>>,
}

impl Channel {
    pub fn new(impairment: Impairment, seed: u64) -> Self {
        Self {
            impairment,
            rng: SimRng::new(seed),
            queue: Vec::new(),
            order: 0,
            stats: ChannelStats::default(),
            log: Vec::new(),
            keep_log: true,
            held: Vec::new(),
        }
    }

    /// Accepts one datagram sent at `now`.
    pub fn send(&mut self, now: Instant, datagram: &[u8]) {
        let index = self.stats.datagrams_in;
        self.stats.datagrams_in += 1;
        self.stats.bytes_in += datagram.len();
        self.stats.max_datagram = self.stats.max_datagram.max(datagram.len());
        if self.keep_log {
            self.log.push(datagram.to_vec());
        }
        let ranges = record_ranges(datagram);
        let first_record = self.stats.records_in;
        self.stats.records_in += ranges.len();
        if self.impairment.drop_datagrams.contains(&index) {
            self.stats.dropped_datagrams += 1;
            return;
        }
        // Targeted record drops: rebuild the datagram without them.
        let mut kept: Vec<&[u8]> = Vec::new();
        for (i, r) in ranges.iter().enumerate() {
            let filtered = self
                .impairment
                .drop_record_if
                .is_some_and(|f| f(&datagram[r.clone()]));
            if filtered || self.impairment.drop_records.contains(&(first_record + i)) {
                self.stats.dropped_records += 1;
            } else {
                kept.push(&datagram[r.clone()]);
            }
        }
        // Trailing bytes that are not a whole record are passed through unchanged.
        let tail_start = ranges.last().map_or(0, |r| r.end);
        let tail = &datagram[tail_start..];
        let pieces: Vec<Vec<u8>> = if self.impairment.refragment && kept.len() > 1 {
            let mut v: Vec<Vec<u8>> = kept.iter().map(|r| r.to_vec()).collect();
            if let Some(last) = v.last_mut() {
                last.extend_from_slice(tail);
            }
            v
        } else {
            let mut d: Vec<u8> = kept.concat();
            d.extend_from_slice(tail);
            if d.is_empty() { Vec::new() } else { vec![d] }
        };
        if self.impairment.hold {
            self.held.extend(pieces);
            return;
        }
        for piece in pieces {
            if self.rng.chance(self.impairment.loss) {
                self.stats.dropped_datagrams += 1;
                continue;
            }
            let copies = if self.rng.chance(self.impairment.duplicate) {
                self.stats.duplicated += 1;
                2
            } else {
                1
            };
            for _ in 0..copies {
                let mut at = now + self.impairment.delay;
                if self.rng.chance(self.impairment.reorder) {
                    let j = self.impairment.jitter.as_micros() as u64;
                    at += Duration::from_micros(self.rng.below(j + 1));
                }
                self.order += 1;
                self.queue.push(InFlight {
                    at,
                    order: self.order,
                    bytes: piece.clone(),
                });
            }
        }
    }

    /// When the next datagram arrives.
    pub fn next_arrival(&self) -> Option<Instant> {
        self.queue.iter().map(|f| f.at).min()
    }

    /// The next datagram due at or before `now`.
    pub fn poll_arrival(&mut self, now: Instant) -> Option<Vec<u8>> {
        let i = self
            .queue
            .iter()
            .enumerate()
            .filter(|(_, f)| f.at <= now)
            .min_by_key(|(_, f)| (f.at, f.order))
            .map(|(i, _)| i)?;
        let f = self.queue.swap_remove(i);
        self.stats.datagrams_out += 1;
        self.stats.bytes_out += f.bytes.len();
        Some(f.bytes)
    }

    pub fn in_flight(&self) -> usize {
        self.queue.len()
    }
}
