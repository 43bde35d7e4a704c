//! Randomness injected into the sans-IO engine.

use aws_lc_rs::digest;
use aws_lc_rs::rand::{SecureRandom, SystemRandom};

/// A source of random bytes, passed into the engine so that handshakes are deterministic
/// under test (random values, ECDHE private keys, cookie and ticket secrets all come from it).
pub trait Rng {
    /// Fills `dest` entirely with random bytes.
    fn fill(&mut self, dest: &mut [u8]);
}

impl<R: Rng + ?Sized> Rng for &mut R {
    fn fill(&mut self, dest: &mut [u8]) {
        (**self).fill(dest);
    }
}

impl<R: Rng + ?Sized> Rng for Box<R> {
    fn fill(&mut self, dest: &mut [u8]) {
        (**self).fill(dest);
    }
}

/// The operating system's CSPRNG through aws-lc (`RAND_bytes`). Use this in production.
#[derive(Debug, Default)]
pub struct SystemRng {
    inner: SystemRandom,
}

impl SystemRng {
    /// A handle on the system RNG.
    pub fn new() -> Self {
        Self {
            inner: SystemRandom::new(),
        }
    }
}

impl Rng for SystemRng {
    fn fill(&mut self, dest: &mut [u8]) {
        // aws-lc's RAND_bytes aborts the process rather than return failure, so the error arm
        // is unreachable in practice; an unseeded RNG must never produce key material.
        self.inner
            .fill(dest)
            .expect("aws-lc RAND_bytes never reports failure (it aborts instead)");
    }
}

/// A deterministic generator for tests and simulations: SHA-256 in counter mode over a seed.
///
/// **Not for production.** Anyone who knows the seed knows every "random" value, including
/// private keys and cookie/ticket secrets. It exists so that two engines driven by a virtual
/// clock replay the exact same handshake for a given seed.
#[derive(Debug, Clone)]
pub struct SeededRng {
    seed: [u8; 32],
    counter: u64,
    block: [u8; 32],
    used: usize,
}

impl SeededRng {
    /// A generator from a 64-bit seed (test convenience).
    pub fn new(seed: u64) -> Self {
        let mut bytes = [0u8; 32];
        bytes[..8].copy_from_slice(&seed.to_be_bytes());
        Self::from_seed(bytes)
    }

    /// A generator from a 32-byte seed.
    pub fn from_seed(seed: [u8; 32]) -> Self {
        Self {
            seed,
            counter: 0,
            block: [0; 32],
            used: 32,
        }
    }

    fn refill(&mut self) {
        let mut ctx = digest::Context::new(&digest::SHA256);
        ctx.update(b"dtls-crypto SeededRng");
        ctx.update(&self.seed);
        ctx.update(&self.counter.to_be_bytes());
        self.block.copy_from_slice(ctx.finish().as_ref());
        self.counter = self.counter.wrapping_add(1);
        self.used = 0;
    }
}

impl Rng for SeededRng {
    fn fill(&mut self, dest: &mut [u8]) {
        let mut filled = 0;
        while filled < dest.len() {
            if self.used == self.block.len() {
                self.refill();
            }
            let n = (self.block.len() - self.used).min(dest.len() - filled);
            dest[filled..filled + n].copy_from_slice(&self.block[self.used..self.used + n]);
            self.used += n;
            filled += n;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeded_rng_is_deterministic_and_seed_dependent() {
        let (mut a, mut b, mut c) = (SeededRng::new(7), SeededRng::new(7), SeededRng::new(8));
        let (mut x, mut y, mut z) = ([0u8; 100], [0u8; 100], [0u8; 100]);
        a.fill(&mut x);
        // Split fills produce the same stream as one fill.
        b.fill(&mut y[..33]);
        b.fill(&mut y[33..]);
        c.fill(&mut z);
        assert_eq!(x, y);
        assert_ne!(x, z);
        assert_ne!(x[..32], x[32..64]);
    }

    #[test]
    fn system_rng_fills() {
        let mut rng = SystemRng::new();
        let (mut x, mut y) = ([0u8; 32], [0u8; 32]);
        rng.fill(&mut x);
        rng.fill(&mut y);
        assert_ne!(x, y);
    }
}
