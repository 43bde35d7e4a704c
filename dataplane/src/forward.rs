//! Node-to-node forwarding encapsulation: the wire format a node would use to pass a record
//! whose CID names another node (`dataplane::cid::CidOwner::node`) to that node, with the
//! client's original source address, authenticated between nodes. Sans-IO: the caller
//! gives the wall-clock time in milliseconds and owns the sockets.
//!
//! **Not wired into the daemon yet** (see `docs/scale-out.md`): nothing sends or receives
//! these packets today. It is the format and its checks, tested on their own.
//!
//! Layout (all integers big-endian), then the datagram as received, then the tag:
//!
//! ```text
//! magic "DTLF" (4) | version 1 (1) | sending node (1) | family 4 or 6 (1) | reserved 0 (1)
//! | time, ms since the Unix epoch (8) | sequence (8) | source IP (16, IPv4 in the first 4)
//! | source port (2) | datagram (n) | HMAC-SHA256(key, everything before it), first 16 octets
//! ```
//!
//! Authentication: an HMAC under a key every node shares (the key store), not AEAD: the
//! datagram is a DTLS record, already protected end to end; what the receiver must trust is
//! that a node of the fleet sent it and the source address it claims. The receiver accepts
//! the current and the previous key (rotation without loss).
//!
//! Replay: the time must be within [`MAX_SKEW_MS`] of the receiver's clock, and each sending
//! node's sequence numbers pass a sliding window (updated only after the tag verified). A
//! sender starts its sequence at its start time in milliseconds shifted left by 16, so a
//! restarted node's numbers are above those it used before (up to 65,536 packets per
//! millisecond on average).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use aws_lc_rs::{constant_time, hmac};

use crate::record::ReplayWindow;

/// The first four octets of every forwarded packet.
pub const MAGIC: [u8; 4] = *b"DTLF";
/// The format version.
pub const VERSION: u8 = 1;
/// Octets before the datagram.
pub const HEADER_LEN: usize = 4 + 1 + 1 + 1 + 1 + 8 + 8 + 16 + 2;
/// Octets of the tag after the datagram.
pub const TAG_LEN: usize = 16;
/// Octets a forwarded packet adds to the datagram.
pub const OVERHEAD: usize = HEADER_LEN + TAG_LEN;
/// Length of a forwarding key.
pub const KEY_LEN: usize = 32;
/// Largest difference between a packet's time and the receiver's clock.
pub const MAX_SKEW_MS: u64 = 2_000;
/// Sequence numbers of one sending node accepted out of order.
const WINDOW: usize = 1024;

/// A forwarding key (HMAC-SHA256). Not `Clone`; `Debug` shows nothing.
pub struct ForwardKey(hmac::Key);

impl ForwardKey {
    /// The key made from `secret`.
    pub fn new(secret: &[u8; KEY_LEN]) -> Self {
        Self(hmac::Key::new(hmac::HMAC_SHA256, secret))
    }

    fn tag(&self, bytes: &[u8]) -> [u8; TAG_LEN] {
        let mut out = [0u8; TAG_LEN];
        out.copy_from_slice(&hmac::sign(&self.0, bytes).as_ref()[..TAG_LEN]);
        out
    }
}

impl fmt::Debug for ForwardKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ForwardKey(<redacted>)")
    }
}

/// The sending side of one node.
#[derive(Debug)]
pub struct Forwarder {
    node: u8,
    key: ForwardKey,
    next_seq: u64,
}

impl Forwarder {
    /// A sender for node `node`, started at `now_ms` (milliseconds since the Unix epoch).
    pub fn new(node: u8, key: ForwardKey, now_ms: u64) -> Self {
        Self {
            node,
            key,
            next_seq: now_ms << 16,
        }
    }

    /// Replaces the key (a key store rotation); the sequence goes on.
    pub fn set_key(&mut self, key: ForwardKey) {
        self.key = key;
    }

    /// Writes the packet carrying `datagram`, received from `source`, into `out` (cleared
    /// first).
    pub fn encapsulate(
        &mut self,
        now_ms: u64,
        source: SocketAddr,
        datagram: &[u8],
        out: &mut Vec<u8>,
    ) {
        let seq = self.next_seq;
        self.next_seq = seq.wrapping_add(1);
        out.clear();
        out.reserve(OVERHEAD + datagram.len());
        out.extend_from_slice(&MAGIC);
        out.push(VERSION);
        out.push(self.node);
        let mut ip = [0u8; 16];
        let family = match source.ip() {
            IpAddr::V4(v4) => {
                ip[..4].copy_from_slice(&v4.octets());
                4
            }
            IpAddr::V6(v6) => {
                ip = v6.octets();
                6
            }
        };
        out.push(family);
        out.push(0);
        out.extend_from_slice(&now_ms.to_be_bytes());
        out.extend_from_slice(&seq.to_be_bytes());
        out.extend_from_slice(&ip);
        out.extend_from_slice(&source.port().to_be_bytes());
        out.extend_from_slice(datagram);
        let tag = self.key.tag(out);
        out.extend_from_slice(&tag);
    }
}

/// A forwarded datagram that checked out.
#[derive(Debug, PartialEq, Eq)]
pub struct Forwarded<'a> {
    /// The node that forwarded it.
    pub from_node: u8,
    /// The client address it came from.
    pub source: SocketAddr,
    /// The datagram as that node received it.
    pub datagram: &'a [u8],
}

/// Why a packet was refused (each a counted drop, never a session's concern).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Rejected {
    /// Too short, not our magic or version, a bad family or reserved octet.
    #[error("not a forwarded packet")]
    Malformed,
    /// The tag verifies under neither key.
    #[error("bad tag")]
    BadTag,
    /// Its time is more than [`MAX_SKEW_MS`] away from ours.
    #[error("stale")]
    Stale,
    /// Its sequence number was seen, or is left of the sending node's window.
    #[error("replayed")]
    Replayed,
}

/// The receiving side of one node: keys and a replay window per sending node.
#[derive(Debug)]
pub struct ForwardReceiver {
    current: ForwardKey,
    previous: Option<ForwardKey>,
    windows: Vec<Option<ReplayWindow>>,
}

impl ForwardReceiver {
    /// A receiver accepting `current` and, during a rotation, `previous`.
    pub fn new(current: ForwardKey, previous: Option<ForwardKey>) -> Self {
        Self {
            current,
            previous,
            windows: (0..256).map(|_| None).collect(),
        }
    }

    /// Replaces the keys (a key store rotation); the windows stay.
    pub fn set_keys(&mut self, current: ForwardKey, previous: Option<ForwardKey>) {
        self.current = current;
        self.previous = previous;
    }

    /// Checks `packet` at `now_ms` and returns what it carries.
    ///
    /// # Errors
    /// [`Rejected`]: the packet is dropped; no state changed except on success.
    pub fn open<'a>(&mut self, now_ms: u64, packet: &'a [u8]) -> Result<Forwarded<'a>, Rejected> {
        if packet.len() < OVERHEAD || packet[..4] != MAGIC || packet[4] != VERSION || packet[7] != 0
        {
            return Err(Rejected::Malformed);
        }
        let from_node = packet[5];
        let be64 = |at: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&packet[at..at + 8]);
            u64::from_be_bytes(b)
        };
        let time = be64(8);
        let seq = be64(16);
        let mut ip = [0u8; 16];
        ip.copy_from_slice(&packet[24..40]);
        let ip = match packet[6] {
            4 if ip[4..] == [0; 12] => IpAddr::V4(Ipv4Addr::new(ip[0], ip[1], ip[2], ip[3])),
            6 => IpAddr::V6(Ipv6Addr::from(ip)),
            _ => return Err(Rejected::Malformed),
        };
        let port = u16::from_be_bytes([packet[40], packet[41]]);
        let (signed, tag) = packet.split_at(packet.len() - TAG_LEN);
        // Both keys are always tried, so the time taken does not say which one matched.
        let current =
            constant_time::verify_slices_are_equal(&self.current.tag(signed), tag).is_ok();
        let previous = self
            .previous
            .as_ref()
            .is_some_and(|k| constant_time::verify_slices_are_equal(&k.tag(signed), tag).is_ok());
        if !(current | previous) {
            return Err(Rejected::BadTag);
        }
        if time.abs_diff(now_ms) > MAX_SKEW_MS {
            return Err(Rejected::Stale);
        }
        let window =
            self.windows[usize::from(from_node)].get_or_insert_with(|| ReplayWindow::new(WINDOW));
        window
            .check_and_update(seq)
            .map_err(|_| Rejected::Replayed)?;
        Ok(Forwarded {
            from_node,
            source: SocketAddr::new(ip, port),
            datagram: &signed[HEADER_LEN..],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: u64 = 1_780_000_000_000;

    fn key(b: u8) -> ForwardKey {
        ForwardKey::new(&[b; KEY_LEN])
    }

    #[test]
    fn round_trip_v4_and_v6_and_every_rejection() {
        let mut a = Forwarder::new(1, key(7), T0);
        let mut rx = ForwardReceiver::new(key(7), None);
        let mut out = Vec::new();
        for source in ["192.0.2.9:40000", "[2001:db8::9]:443"] {
            let source: SocketAddr = source.parse().expect("addr");
            a.encapsulate(T0, source, b"\x19record", &mut out);
            assert_eq!(out.len(), OVERHEAD + 7);
            let got = rx.open(T0 + 5, &out).expect("valid");
            assert_eq!(
                got,
                Forwarded {
                    from_node: 1,
                    source,
                    datagram: b"\x19record"
                }
            );
        }
        // The same packet again: replayed.
        assert_eq!(rx.open(T0, &out), Err(Rejected::Replayed));
        // Any flipped bit: a bad tag (or malformed where the header no longer parses).
        a.encapsulate(T0, "192.0.2.9:1".parse().expect("addr"), b"x", &mut out);
        for i in 0..out.len() {
            let mut bad = out.clone();
            bad[i] ^= 0x01;
            assert!(
                matches!(
                    rx.open(T0, &bad),
                    Err(Rejected::BadTag | Rejected::Malformed)
                ),
                "octet {i}"
            );
        }
        // Truncated, or not ours.
        assert_eq!(rx.open(T0, &out[..OVERHEAD - 1]), Err(Rejected::Malformed));
        assert_eq!(rx.open(T0, &[0u8; 80]), Err(Rejected::Malformed));
        // Too old or too far ahead.
        assert_eq!(rx.open(T0 + MAX_SKEW_MS + 1, &out), Err(Rejected::Stale));
        // A stranger's key.
        let mut evil = Forwarder::new(1, key(8), T0);
        evil.encapsulate(T0, "192.0.2.9:1".parse().expect("addr"), b"x", &mut out);
        assert_eq!(rx.open(T0, &out), Err(Rejected::BadTag));
        // The untouched, valid packet still opens: the failures changed nothing.
        a.encapsulate(T0, "192.0.2.9:1".parse().expect("addr"), b"y", &mut out);
        assert!(rx.open(T0, &out).is_ok());
    }

    #[test]
    fn rotation_and_restarts_drop_nothing() {
        let mut rx = ForwardReceiver::new(key(2), Some(key(1)));
        let mut old = Forwarder::new(3, key(1), T0);
        let mut new = Forwarder::new(4, key(2), T0);
        let mut out = Vec::new();
        let src: SocketAddr = "198.51.100.1:5000".parse().expect("addr");
        old.encapsulate(T0, src, b"a", &mut out);
        assert!(rx.open(T0, &out).is_ok(), "previous key");
        new.encapsulate(T0, src, b"b", &mut out);
        assert!(rx.open(T0, &out).is_ok(), "current key");
        // Node 3 restarts a millisecond later: its new numbers are above the old ones.
        for _ in 0..100 {
            old.encapsulate(T0, src, b"c", &mut out);
            rx.open(T0, &out).expect("before the restart");
        }
        let mut restarted = Forwarder::new(3, key(2), T0 + 1);
        restarted.encapsulate(T0 + 1, src, b"d", &mut out);
        assert!(rx.open(T0 + 1, &out).is_ok(), "after the restart");
        // Once the previous key is gone, its packets are refused.
        rx.set_keys(key(2), None);
        old.encapsulate(T0, src, b"e", &mut out);
        assert_eq!(rx.open(T0, &out), Err(Rejected::BadTag));
    }
}
