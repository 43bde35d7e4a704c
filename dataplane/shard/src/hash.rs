//! A small, fast, seeded hasher for peer addresses (and our connection IDs).
//!
//! The session table is probed once per received datagram, so SipHash (std's default) would
//! be a measurable share of the per-packet cost. This is a multiply-rotate hash in the style
//! of FxHash over the few words a `SocketAddr` feeds it, with a per-table random seed (taken
//! once from std's `RandomState`) and a final avalanche so both the low bits (bucket index)
//! and the high bits (hashbrown's control byte) are well mixed.
//!
//! It is not a keyed PRF: an attacker who could choose many peer addresses *and* get each of
//! them into the table could still aim for collisions. Entries are only inserted for peers
//! that completed a cookie-verified handshake, and the seed differs per table and per run.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};

const K: u64 = 0x517c_c1b7_2722_0a95;

/// Builds [`AddrHasher`]s with one random seed per table.
#[derive(Debug, Clone, Copy)]
pub struct AddrHashBuilder {
    seed: u64,
}

impl AddrHashBuilder {
    /// A builder with a fresh random seed.
    pub fn random() -> Self {
        Self {
            seed: RandomState::new().hash_one(0x5eed_u64),
        }
    }

    /// A builder with a fixed seed (tests, reproducible benchmarks).
    pub fn with_seed(seed: u64) -> Self {
        Self { seed }
    }
}

impl Default for AddrHashBuilder {
    fn default() -> Self {
        Self::random()
    }
}

impl BuildHasher for AddrHashBuilder {
    type Hasher = AddrHasher;

    #[inline]
    fn build_hasher(&self) -> AddrHasher {
        AddrHasher { hash: self.seed }
    }
}

/// The hasher; see the module docs.
#[derive(Debug, Clone, Copy)]
pub struct AddrHasher {
    hash: u64,
}

impl AddrHasher {
    #[inline(always)]
    fn add(&mut self, word: u64) {
        self.hash = (self.hash.rotate_left(5) ^ word).wrapping_mul(K);
    }
}

impl Hasher for AddrHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in chunks.by_ref() {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            self.add(u64::from_le_bytes(w));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut w = [0u8; 8];
            w[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(w) ^ ((rest.len() as u64) << 59));
        }
    }

    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.add(u64::from(i));
    }

    #[inline]
    fn write_u16(&mut self, i: u16) {
        self.add(u64::from(i));
    }

    #[inline]
    fn write_u32(&mut self, i: u32) {
        self.add(u64::from(i));
    }

    #[inline]
    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }

    #[inline]
    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }

    #[inline]
    fn finish(&self) -> u64 {
        // Final avalanche (the murmur3 fmix64 constants): multiply-rotate leaves the low bits
        // weak, and hashbrown indexes buckets with them.
        let mut h = self.hash;
        h ^= h >> 33;
        h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^= h >> 33;
        h
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use std::net::SocketAddr;

    #[test]
    fn nearby_addresses_spread_over_buckets() {
        let b = AddrHashBuilder::with_seed(1);
        // 4096 peers on one host, consecutive ports: the low 10 bits (a 1024-bucket table)
        // must take most of the 1024 values.
        let low: HashSet<u64> = (0..4096u16)
            .map(|p| {
                let a = SocketAddr::from(([10, 0, 0, 1], 20000 + p));
                b.hash_one(a) & 1023
            })
            .collect();
        assert!(low.len() > 1000, "only {} buckets used", low.len());
        // Different hosts, same port.
        let low: HashSet<u64> = (0..4096u32)
            .map(|h| {
                let a = SocketAddr::from((std::net::Ipv4Addr::from(0x0a00_0000 + h), 443));
                b.hash_one(a) & 1023
            })
            .collect();
        assert!(low.len() > 1000, "only {} buckets used", low.len());
    }

    #[test]
    fn seed_changes_the_hash() {
        let a = SocketAddr::from(([127, 0, 0, 1], 4433));
        let h1 = AddrHashBuilder::with_seed(1).hash_one(a);
        let h2 = AddrHashBuilder::with_seed(2).hash_one(a);
        assert_ne!(h1, h2);
        assert_eq!(h1, AddrHashBuilder::with_seed(1).hash_one(a));
    }
}
