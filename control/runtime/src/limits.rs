//! Admission of new handshakes: what an unauthenticated peer may make the control thread
//! hold, and how many sessions a shard and the daemon carry.
//!
//! - Half-open handshakes (cookie-verified, not completed) are capped globally
//!   ([`Limits::max_half_open`]), per source address ([`Limits::half_open_per_address`]:
//!   an IPv4 address, or an IPv6 /64 by default, since one host hands itself addresses
//!   from its /64 freely) and per prefix ([`Limits::half_open_per_prefix`]: /24 and /48 by
//!   default). When the global table is full a newcomer is not refused: the oldest
//!   half-open handshake is shed instead ([`HalfOpen::oldest_if_full`]), so a host that
//!   fills the table cannot lock others out; it only shortens its own entries' lives.
//! - Sessions are capped globally ([`Limits::max_sessions`]) and per shard
//!   ([`Limits::max_sessions_per_shard`], the shard's table size): a handshake that would
//!   exceed either is refused before the server's flight, with a fatal alert, rather than
//!   completed and then dropped by a full shard.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};

/// Caps on handshakes and sessions (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most half-open handshakes at once; the oldest is shed for a newcomer. Default 4096.
    pub max_half_open: usize,
    /// Most half-open handshakes from one source address. Default 256 (a `dtlsd connect`
    /// or a NAT fronts many clients from one address; each handshake is half-open for
    /// about one round trip).
    pub half_open_per_address: usize,
    /// Most half-open handshakes from one prefix. Default 1024.
    pub half_open_per_prefix: usize,
    /// IPv4 prefix length of [`Limits::half_open_per_prefix`]. Default 24.
    pub ipv4_prefix: u8,
    /// IPv6 prefix length that counts as one address. Default 64.
    pub ipv6_address_prefix: u8,
    /// IPv6 prefix length of [`Limits::half_open_per_prefix`]. Default 48.
    pub ipv6_prefix: u8,
    /// Most sessions of the daemon (installed plus half-open). Default 4096.
    pub max_sessions: usize,
    /// Most sessions of one shard (its session table's size). Default 4096.
    pub max_sessions_per_shard: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_half_open: 4096,
            half_open_per_address: 256,
            half_open_per_prefix: 1024,
            ipv4_prefix: 24,
            ipv6_address_prefix: 64,
            ipv6_prefix: 48,
            max_sessions: 4096,
            max_sessions_per_shard: 4096,
        }
    }
}

/// Why a handshake was not started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The source address has [`Limits::half_open_per_address`] handshakes in progress.
    HalfOpenPerAddress,
    /// The source prefix has [`Limits::half_open_per_prefix`] handshakes in progress.
    HalfOpenPerPrefix,
    /// Connect mode: [`Limits::max_half_open`] handshakes are in progress.
    HalfOpenFull,
    /// [`Limits::max_sessions`] sessions (installed or in progress) exist.
    MaxSessions,
    /// The peer's shard holds [`Limits::max_sessions_per_shard`] sessions.
    MaxSessionsPerShard,
    /// The daemon is draining (SIGTERM with a drain window): live sessions run on, new
    /// handshakes are refused.
    Draining,
}

impl Refusal {
    /// A short stable name for logs and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::HalfOpenPerAddress => "half_open_per_address",
            Refusal::HalfOpenPerPrefix => "half_open_per_prefix",
            Refusal::HalfOpenFull => "half_open_full",
            Refusal::MaxSessions => "max_sessions",
            Refusal::MaxSessionsPerShard => "max_sessions_per_shard",
            Refusal::Draining => "draining",
        }
    }
}

/// An address masked to a prefix length, tagged with its family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Prefix {
    bits: u128,
    v6: bool,
}

fn prefix(ip: IpAddr, len: u8) -> Prefix {
    match ip {
        IpAddr::V4(v4) => {
            let len = u32::from(len.min(32));
            let mask = u32::MAX.checked_shl(32 - len).unwrap_or(0);
            Prefix {
                bits: u128::from(u32::from(v4) & mask),
                v6: false,
            }
        }
        IpAddr::V6(v6) => {
            let len = u32::from(len.min(128));
            let mask = u128::MAX.checked_shl(128 - len).unwrap_or(0);
            Prefix {
                bits: u128::from(v6) & mask,
                v6: true,
            }
        }
    }
}

/// The half-open handshakes of one control thread: their start order per shard (to shed
/// the oldest) and their counts per source address and per prefix.
#[derive(Debug, Default)]
pub(super) struct HalfOpen {
    /// Per shard: start ticket → peer, oldest first.
    by_shard: Vec<BTreeMap<u64, SocketAddr>>,
    /// Ticket → shard, for removal.
    shards: HashMap<u64, usize>,
    addresses: HashMap<Prefix, usize>,
    prefixes: HashMap<Prefix, usize>,
    next: u64,
}

impl HalfOpen {
    /// Half-open handshakes now.
    pub fn len(&self) -> usize {
        self.shards.len()
    }

    /// Half-open handshakes of `shard`'s peers.
    pub fn count(&self, shard: usize) -> usize {
        self.by_shard.get(shard).map_or(0, BTreeMap::len)
    }

    /// The oldest half-open handshake of `shard`, or of every shard.
    pub fn oldest(&self, shard: Option<usize>) -> Option<SocketAddr> {
        let first = |m: &BTreeMap<u64, SocketAddr>| m.first_key_value().map(|(t, p)| (*t, *p));
        match shard {
            Some(s) => self.by_shard.get(s).and_then(first).map(|(_, p)| p),
            None => self
                .by_shard
                .iter()
                .filter_map(first)
                .min_by_key(|(t, _)| *t)
                .map(|(_, p)| p),
        }
    }

    fn keys(limits: &Limits, ip: IpAddr) -> (Prefix, Prefix) {
        // A dual-stack socket reports IPv4 clients as ::ffff:a.b.c.d: count them as the
        // IPv4 addresses they are, not as members of one IPv6 /64 (which would put every
        // IPv4 client in one share).
        let ip = ip.to_canonical();
        match ip {
            IpAddr::V4(_) => (prefix(ip, 32), prefix(ip, limits.ipv4_prefix)),
            IpAddr::V6(_) => (
                prefix(ip, limits.ipv6_address_prefix),
                prefix(ip, limits.ipv6_prefix),
            ),
        }
    }

    /// Whether `peer`'s address and prefix may start one more handshake.
    pub fn check_source(&self, limits: &Limits, peer: SocketAddr) -> Result<(), Refusal> {
        let (address, prefix) = Self::keys(limits, peer.ip());
        if self.addresses.get(&address).copied().unwrap_or(0) >= limits.half_open_per_address {
            return Err(Refusal::HalfOpenPerAddress);
        }
        if self.prefixes.get(&prefix).copied().unwrap_or(0) >= limits.half_open_per_prefix {
            return Err(Refusal::HalfOpenPerPrefix);
        }
        Ok(())
    }

    /// The oldest half-open handshake, when the table is at [`Limits::max_half_open`].
    pub fn oldest_if_full(&self, limits: &Limits) -> Option<SocketAddr> {
        if self.len() < limits.max_half_open.max(1) {
            return None;
        }
        self.oldest(None)
    }

    /// Counts a new half-open handshake of `peer` on `shard`; the ticket removes it again.
    pub fn insert(&mut self, limits: &Limits, peer: SocketAddr, shard: usize) -> u64 {
        let ticket = self.next;
        self.next += 1;
        if self.by_shard.len() <= shard {
            self.by_shard.resize_with(shard + 1, BTreeMap::new);
        }
        if let Some(order) = self.by_shard.get_mut(shard) {
            order.insert(ticket, peer);
        }
        self.shards.insert(ticket, shard);
        let (address, prefix) = Self::keys(limits, peer.ip());
        *self.addresses.entry(address).or_default() += 1;
        *self.prefixes.entry(prefix).or_default() += 1;
        ticket
    }

    /// Forgets the handshake of `ticket` (completed, failed, shed or replaced).
    pub fn remove(&mut self, limits: &Limits, ticket: u64) {
        let Some(shard) = self.shards.remove(&ticket) else {
            return;
        };
        let Some(peer) = self.by_shard.get_mut(shard).and_then(|o| o.remove(&ticket)) else {
            return;
        };
        let (address, prefix) = Self::keys(limits, peer.ip());
        for (map, key) in [(&mut self.addresses, address), (&mut self.prefixes, prefix)] {
            if let Some(n) = map.get_mut(&key) {
                *n -= 1;
                if *n == 0 {
                    map.remove(&key);
                }
            }
        }
    }

    /// Forgets everything (shutdown).
    pub fn clear(&mut self) {
        self.by_shard.clear();
        self.shards.clear();
        self.addresses.clear();
        self.prefixes.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().expect("literal")
    }

    #[test]
    fn per_address_and_per_prefix_caps() {
        let limits = Limits {
            half_open_per_address: 2,
            half_open_per_prefix: 3,
            ..Limits::default()
        };
        let mut h = HalfOpen::default();
        let a1 = h.insert(&limits, addr("10.0.0.1:1"), 0);
        h.insert(&limits, addr("10.0.0.1:2"), 0);
        assert_eq!(
            h.check_source(&limits, addr("10.0.0.1:3")),
            Err(Refusal::HalfOpenPerAddress)
        );
        assert_eq!(h.check_source(&limits, addr("10.0.0.2:1")), Ok(()));
        h.insert(&limits, addr("10.0.0.2:1"), 1);
        assert_eq!(
            h.check_source(&limits, addr("10.0.0.3:1")),
            Err(Refusal::HalfOpenPerPrefix),
            "a /24 holds three"
        );
        assert_eq!(h.check_source(&limits, addr("10.0.1.3:1")), Ok(()));
        h.remove(&limits, a1);
        assert_eq!(h.check_source(&limits, addr("10.0.0.1:3")), Ok(()));
        assert_eq!(h.len(), 2);
    }

    #[test]
    fn ipv6_sources_count_by_64_and_48() {
        let limits = Limits {
            half_open_per_address: 1,
            half_open_per_prefix: 2,
            ..Limits::default()
        };
        let mut h = HalfOpen::default();
        h.insert(&limits, addr("[2001:db8:1:1::1]:1"), 0);
        assert_eq!(
            h.check_source(&limits, addr("[2001:db8:1:1::ffff]:1")),
            Err(Refusal::HalfOpenPerAddress),
            "same /64"
        );
        h.insert(&limits, addr("[2001:db8:1:2::1]:1"), 0);
        assert_eq!(
            h.check_source(&limits, addr("[2001:db8:1:3::1]:1")),
            Err(Refusal::HalfOpenPerPrefix),
            "same /48"
        );
        assert_eq!(h.check_source(&limits, addr("[2001:db8:2::1]:1")), Ok(()));
    }

    #[test]
    fn ipv4_mapped_sources_count_as_the_ipv4_addresses_they_are() {
        // What a dual-stack socket reports for IPv4 clients.
        let limits = Limits {
            half_open_per_address: 1,
            half_open_per_prefix: 2,
            ..Limits::default()
        };
        let mut h = HalfOpen::default();
        h.insert(&limits, addr("[::ffff:10.0.0.1]:1"), 0);
        assert_eq!(
            h.check_source(&limits, addr("10.0.0.1:2")),
            Err(Refusal::HalfOpenPerAddress),
            "the same IPv4 address, mapped or not"
        );
        // Not one /64 for all of IPv4: another /24 has its own share.
        assert_eq!(h.check_source(&limits, addr("[::ffff:10.9.0.1]:1")), Ok(()));
        h.insert(&limits, addr("[::ffff:10.0.0.2]:1"), 0);
        assert_eq!(
            h.check_source(&limits, addr("[::ffff:10.0.0.3]:1")),
            Err(Refusal::HalfOpenPerPrefix),
            "the /24 of the mapped addresses"
        );
    }

    #[test]
    fn a_full_table_names_its_oldest_entry_globally_and_per_shard() {
        let limits = Limits {
            max_half_open: 3,
            ..Limits::default()
        };
        let mut h = HalfOpen::default();
        let first = h.insert(&limits, addr("10.0.0.1:1"), 1);
        h.insert(&limits, addr("10.0.0.2:1"), 0);
        assert_eq!(h.oldest_if_full(&limits), None);
        h.insert(&limits, addr("10.0.0.3:1"), 1);
        assert_eq!(h.oldest_if_full(&limits), Some(addr("10.0.0.1:1")));
        assert_eq!(h.oldest(Some(0)), Some(addr("10.0.0.2:1")));
        assert_eq!((h.count(0), h.count(1), h.count(7)), (1, 2, 0));
        h.remove(&limits, first);
        assert_eq!(h.oldest_if_full(&limits), None);
        assert_eq!(h.oldest(Some(1)), Some(addr("10.0.0.3:1")));
        h.insert(&limits, addr("10.0.0.4:1"), 2);
        assert_eq!(h.oldest_if_full(&limits), Some(addr("10.0.0.2:1")));
    }
}
