//! New handshakes per second per source address: a token bucket per address in a
//! fixed-size table, time passed in.
//!
//! Each source address (an IPv4 address, an IPv6 /64, as [`Limits::ipv6_address_prefix`]
//! says) has a bucket of [`Limits::handshake_burst`] tokens refilled at
//! [`Limits::handshakes_per_second`]; a cookie-verified ClientHello takes one token or is
//! refused. The table has [`RATE_SLOTS`] slots in sets of [`RATE_WAYS`] chosen by a keyed
//! hash of the address, allocated on first use and never grown: an address not in its set
//! takes an empty slot, else the slot whose bucket holds the most tokens (the one closest
//! to a fresh bucket, so evicting it gives away the least). Only sources that passed the
//! cookie exchange reach the table (their address is their own), and the hash key is
//! random per process, so nobody can aim their addresses at one set to evict a victim.

use std::hash::BuildHasher;
use std::time::Instant;

use super::limits::{Limits, Prefix, Refusal, address_key};

/// Slots of the table (about 56 bytes each: 900 KiB when the rate is on).
pub(super) const RATE_SLOTS: usize = 16_384;
/// Slots one address may live in.
pub(super) const RATE_WAYS: usize = 4;
/// Tokens are counted in thousandths, so a slow rate still refills between handshakes.
const MILLI: u64 = 1000;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    source: Prefix,
    /// Thousandths of a token.
    milli: u64,
    /// When `milli` was last brought up to date.
    at: Instant,
}

impl Bucket {
    /// The bucket's thousandths at `now` (refilled, capped at the burst).
    fn level(&self, now: Instant, limits: &Limits) -> u64 {
        let full = u64::from(limits.handshake_burst) * MILLI;
        let micros = now.saturating_duration_since(self.at).as_micros();
        // tokens/s × µs / 1000 = thousandths of a token.
        let refill = micros.saturating_mul(u128::from(limits.handshakes_per_second)) / 1000;
        let refill = u64::try_from(refill).unwrap_or(u64::MAX);
        self.milli.saturating_add(refill).min(full)
    }
}

/// The buckets of every source address seen (see the module documentation).
#[derive(Debug)]
pub(super) struct HandshakeRate {
    slots: Vec<Option<Bucket>>,
    capacity: usize,
    hasher: std::hash::RandomState,
}

impl Default for HandshakeRate {
    fn default() -> Self {
        Self::with_slots(RATE_SLOTS)
    }
}

impl HandshakeRate {
    /// A table of `capacity` slots (rounded up to a whole set), allocated on first use.
    pub fn with_slots(capacity: usize) -> Self {
        Self {
            slots: Vec::new(),
            capacity: capacity.max(RATE_WAYS).next_multiple_of(RATE_WAYS),
            hasher: std::hash::RandomState::new(),
        }
    }

    /// Takes one token of `ip`'s bucket at `now`, or refuses with
    /// [`Refusal::HandshakeRate`]. A rate of 0 admits everything and keeps no state.
    pub fn take(
        &mut self,
        now: Instant,
        limits: &Limits,
        ip: std::net::IpAddr,
    ) -> Result<(), Refusal> {
        if limits.handshakes_per_second == 0 {
            return Ok(());
        }
        if self.slots.is_empty() {
            self.slots = vec![None; self.capacity];
        }
        let source = address_key(limits, ip);
        let sets = self.capacity / RATE_WAYS;
        let set = usize::try_from(self.hasher.hash_one(source) % sets as u64).unwrap_or(0);
        let ways = &mut self.slots[set * RATE_WAYS..(set + 1) * RATE_WAYS];
        let slot = match ways
            .iter()
            .position(|s| s.is_some_and(|b| b.source == source))
        {
            Some(i) => i,
            None => {
                // An empty slot, else the fullest bucket (closest to a fresh one).
                let victim = ways
                    .iter()
                    .enumerate()
                    .max_by_key(|(_, s)| s.map_or(u64::MAX, |b| b.level(now, limits)))
                    .map_or(0, |(i, _)| i);
                ways[victim] = Some(Bucket {
                    source,
                    milli: u64::from(limits.handshake_burst) * MILLI,
                    at: now,
                });
                victim
            }
        };
        let Some(bucket) = ways[slot].as_mut() else {
            return Ok(());
        };
        bucket.milli = bucket.level(now, limits);
        bucket.at = now;
        if bucket.milli < MILLI {
            return Err(Refusal::HandshakeRate);
        }
        bucket.milli -= MILLI;
        Ok(())
    }

    /// Addresses with a bucket now (tests).
    #[cfg(test)]
    pub fn held(&self) -> usize {
        self.slots.iter().filter(|s| s.is_some()).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::IpAddr;
    use std::time::Duration;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("literal")
    }

    fn limits(rate: u32, burst: u32) -> Limits {
        Limits {
            handshakes_per_second: rate,
            handshake_burst: burst,
            ..Limits::default()
        }
    }

    #[test]
    fn a_burst_then_the_rate() {
        let l = limits(10, 3);
        let mut r = HandshakeRate::default();
        let t0 = Instant::now();
        for _ in 0..3 {
            assert_eq!(r.take(t0, &l, ip("192.0.2.1")), Ok(()));
        }
        assert_eq!(r.take(t0, &l, ip("192.0.2.1")), Err(Refusal::HandshakeRate));
        // Another address has its own bucket.
        assert_eq!(r.take(t0, &l, ip("192.0.2.2")), Ok(()));
        // 10/s: one token after 100 ms, not before.
        let early = t0 + Duration::from_millis(99);
        assert_eq!(
            r.take(early, &l, ip("192.0.2.1")),
            Err(Refusal::HandshakeRate)
        );
        let later = t0 + Duration::from_millis(100);
        assert_eq!(r.take(later, &l, ip("192.0.2.1")), Ok(()));
        assert_eq!(
            r.take(later, &l, ip("192.0.2.1")),
            Err(Refusal::HandshakeRate)
        );
        // A long pause refills up to the burst only.
        let idle = t0 + Duration::from_secs(3600);
        for _ in 0..3 {
            assert_eq!(r.take(idle, &l, ip("192.0.2.1")), Ok(()));
        }
        assert_eq!(
            r.take(idle, &l, ip("192.0.2.1")),
            Err(Refusal::HandshakeRate)
        );
    }

    #[test]
    fn ipv6_addresses_share_their_64_and_rate_zero_is_off() {
        let l = limits(1, 1);
        let mut r = HandshakeRate::default();
        let t0 = Instant::now();
        assert_eq!(r.take(t0, &l, ip("2001:db8:1:1::1")), Ok(()));
        assert_eq!(
            r.take(t0, &l, ip("2001:db8:1:1::2")),
            Err(Refusal::HandshakeRate)
        );
        assert_eq!(r.take(t0, &l, ip("2001:db8:1:2::1")), Ok(()));
        let off = limits(0, 1);
        let mut r = HandshakeRate::default();
        for _ in 0..100 {
            assert_eq!(r.take(t0, &off, ip("192.0.2.1")), Ok(()));
        }
        assert_eq!(r.held(), 0);
    }

    #[test]
    fn the_table_never_grows_and_evicts_the_fullest_bucket() {
        let l = limits(1, 2);
        let mut r = HandshakeRate::with_slots(RATE_WAYS);
        let t0 = Instant::now();
        // One set: the first four addresses fill it; the drained one stays put.
        for _ in 0..2 {
            assert_eq!(r.take(t0, &l, ip("198.51.100.1")), Ok(()));
        }
        for i in 2..=4 {
            assert_eq!(r.take(t0, &l, ip(&format!("198.51.100.{i}"))), Ok(()));
        }
        assert_eq!(r.held(), RATE_WAYS);
        // A flood of new addresses churns the other slots, never the drained bucket.
        for i in 5..=200 {
            assert_eq!(r.take(t0, &l, ip(&format!("198.51.100.{i}"))), Ok(()));
        }
        assert_eq!(r.held(), RATE_WAYS);
        assert_eq!(
            r.take(t0, &l, ip("198.51.100.1")),
            Err(Refusal::HandshakeRate),
            "the drained bucket survived the churn"
        );
    }
}
