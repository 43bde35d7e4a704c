//! The return-routability check of RFC 9853 for sessions that negotiated it (DTLS 1.2 and
//! 1.3 with connection IDs; the state is version-neutral): a session whose authenticated, newest
//! record came from a new address keeps its address until that address answers a
//! path_challenge; until then replies go there only up to three times what it sent.
//!
//! Per session: at most one check (one address, one outstanding cookie), boxed so sessions
//! without one pay a pointer. The sweep retransmits it (a fresh cookie each time) and gives
//! up after [`RRC_CHALLENGES`] unanswered challenges: the session stays where it was.
//!
//! Cookies come from [`RrcCookies`]: HMAC-SHA-256 under a per-shard random key (injected by
//! the driver: the core reads no RNG) over a counter, truncated to 8 bytes.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use aws_lc_rs::hmac;
use dtls_proto::{RRC_COOKIE_LEN, RrcMessage};

/// How long each path_challenge waits for its answer (RFC 9853 §5.5: "If an implementation
/// has no way to obtain information regarding the RTT of the active path, T SHOULD be set
/// to 1 second"). The shard's sweep paces the retransmissions, so with a coarser sweep the wait is
/// the sweep interval.
pub const RRC_TIMEOUT: Duration = Duration::from_secs(1);

/// path_challenges sent for one new address (the first and retransmissions) before the
/// check gives up (RFC 9853 §5.3: "The initiator MAY send multiple ... path_challenge" to
/// cater for loss, paced).
pub const RRC_CHALLENGES: u8 = 3;

/// The anti-amplification factor (RFC 9853 §2: "three times the amount of data received
/// from an unvalidated address").
const AMPLIFICATION: u64 = 3;

/// Unpredictable cookies: HMAC-SHA-256(key, counter), truncated. RFC 9853 §4: each cookie
/// carries "64 bits of entropy (e.g., obtained from the CSPRNG used by the TLS
/// implementation)", and §5.3: "Each path_challenge message MUST contain random data"; a
/// PRF under a random key never repeats a counter, so no cookie is reused (§8).
pub struct RrcCookies {
    key: hmac::Key,
    counter: u64,
}

impl std::fmt::Debug for RrcCookies {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RrcCookies")
            .field("counter", &self.counter)
            .finish_non_exhaustive()
    }
}

impl RrcCookies {
    /// Cookies under `key`: 32 random bytes from the caller (the driver draws them from
    /// the system's CSPRNG; tests pass fixed ones).
    pub fn new(key: &[u8; 32]) -> Self {
        Self {
            key: hmac::Key::new(hmac::HMAC_SHA256, key),
            counter: 0,
        }
    }

    /// The next cookie.
    pub(crate) fn next(&mut self) -> [u8; RRC_COOKIE_LEN] {
        self.counter += 1;
        let tag = hmac::sign(&self.key, &self.counter.to_be_bytes());
        let mut cookie = [0u8; RRC_COOKIE_LEN];
        cookie.copy_from_slice(&tag.as_ref()[..RRC_COOKIE_LEN]);
        cookie
    }
}

/// The check of one new address of a session.
#[derive(Debug)]
pub(crate) struct PathCheck {
    /// The address being checked.
    pub to: SocketAddr,
    /// The cookie of the last path_challenge sent; only its echo validates the address.
    pub cookie: [u8; RRC_COOKIE_LEN],
    /// When the last path_challenge was sent.
    pub sent_at: Instant,
    /// path_challenges sent so far.
    pub challenges: u8,
    /// Bytes of authenticated datagrams received from `to`.
    pub received: u64,
    /// Bytes sent to `to` (challenges and replies) since the check started.
    pub sent: u64,
    /// A path_response echoed the last cookie: the session moves to `to`.
    pub validated: bool,
}

impl PathCheck {
    /// Whether `len` more bytes to the unvalidated address stay within the
    /// anti-amplification limit; if so they are counted as sent.
    pub fn spend(&mut self, len: usize) -> bool {
        let sent = self.sent + len as u64;
        if sent > AMPLIFICATION * self.received {
            return false;
        }
        self.sent = sent;
        true
    }
}

/// What a session does with the return-routability check.
#[derive(Debug, Default)]
pub(crate) enum PathState {
    /// Not negotiated: a new address is taken as soon as a record from it authenticated
    /// and was the newest (RFC 9146 §6).
    #[default]
    Off,
    /// Negotiated, no address being checked.
    Idle,
    /// Negotiated, checking a new address.
    Checking(Box<PathCheck>),
}

impl PathState {
    /// The state of a new session (`rrc`: both sides negotiated it).
    pub fn new(rrc: bool) -> Self {
        if rrc { Self::Idle } else { Self::Off }
    }

    /// The check in progress, if any.
    pub fn check_mut(&mut self) -> Option<&mut PathCheck> {
        match self {
            Self::Checking(check) => Some(check),
            Self::Off | Self::Idle => None,
        }
    }
}

/// The message a path_challenge with `cookie` is answered with, and the parsed message of
/// a received record (`None`: malformed, or of a type we do not know, ignored as RFC 9853
/// §4 requires).
pub(crate) fn parse(plaintext: &[u8]) -> Option<RrcMessage> {
    match RrcMessage::parse(plaintext) {
        Ok(msg @ RrcMessage::Known { .. }) => Some(msg),
        Ok(RrcMessage::Unknown(_)) | Err(_) => None,
    }
}
