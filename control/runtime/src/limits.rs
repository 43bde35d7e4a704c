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
//! - Each source address (IPv4 address, IPv6 /64) may hold
//!   [`Limits::sessions_per_address`] sessions, established and half-open together
//!   ([`SessionsBySource`]), and start [`Limits::handshakes_per_second`] handshakes a
//!   second after a burst of [`Limits::handshake_burst`] (`crate::rate`). Both are checked
//!   only for a ClientHello that returned our cookie: a spoofed source cannot get one, so
//!   it cannot spend an innocent address's budget.
//! - [`AccessList`]: allow and deny lists of CIDR ranges, checked before the acceptor
//!   answers a datagram from a source without a handshake in progress (so a denied source
//!   never gets a HelloVerifyRequest).

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;

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
    /// New handshakes a second from one source address, after the burst; 0 turns the
    /// rate off. Default 100: a client makes one handshake per session, so only a host
    /// fronting many clients (a NAT, a `dtlsd connect`) comes near it, and then only
    /// while they all reconnect at once; 100 full handshakes a second are a few percent
    /// of what one control thread completes, so one address cannot starve the others.
    pub handshakes_per_second: u32,
    /// Handshakes one source address may start at once before the rate applies. Default
    /// 256, [`Limits::half_open_per_address`]'s default: a batch the half-open cap admits
    /// is not refused by the rate too.
    pub handshake_burst: u32,
    /// Most sessions (established and half-open) of one source address. Default 1024: a
    /// carrier-grade NAT shares one IPv4 address among a few hundred subscribers at most,
    /// and a `dtlsd connect` in front of many local clients has one address; 1024 is a
    /// sixteenth of `dtlsd`'s default `max_sessions`, so it takes sixteen addresses to
    /// fill the daemon.
    pub sessions_per_address: usize,
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
            handshakes_per_second: 100,
            handshake_burst: 256,
            sessions_per_address: 1024,
        }
    }
}

impl Limits {
    /// `self` with the per-source rules a reload may change taken from `new` (the other
    /// caps size tables and keep their running values).
    pub fn reloaded(self, new: &Limits) -> Limits {
        Limits {
            handshakes_per_second: new.handshakes_per_second,
            handshake_burst: new.handshake_burst,
            sessions_per_address: new.sessions_per_address,
            ..self
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
    /// The source address spent its [`Limits::handshake_burst`] and the rate has not
    /// refilled a token yet.
    HandshakeRate,
    /// The source address holds [`Limits::sessions_per_address`] sessions.
    SessionsPerAddress,
    /// The source is in a range of [`AccessList::deny`].
    Denied,
    /// The handshake worker was overloaded (shed after the cookie, before any asymmetric
    /// crypto; see [`crate::RuntimeConfig::shed_backlog`]).
    Overloaded,
    /// [`AccessList::allow`] is not empty and has no range holding the source.
    NotAllowed,
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
            Refusal::HandshakeRate => "handshake_rate",
            Refusal::SessionsPerAddress => "sessions_per_address",
            Refusal::Denied => "denied",
            Refusal::Overloaded => "overloaded",
            Refusal::NotAllowed => "not_allowed",
        }
    }
}

/// Allow and deny lists of CIDR ranges (see the module documentation). The deny list
/// wins; an empty allow list allows every source not denied.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AccessList {
    /// Ranges that may connect; empty: all.
    pub allow: Vec<IpNet>,
    /// Ranges that may not connect, whatever `allow` says.
    pub deny: Vec<IpNet>,
}

impl AccessList {
    /// Whether `ip` may start a handshake. An IPv4-mapped IPv6 address (a dual-stack
    /// socket's view of an IPv4 peer) is checked as the IPv4 address it is.
    ///
    /// # Errors
    /// [`Refusal::Denied`] or [`Refusal::NotAllowed`].
    pub fn check(&self, ip: IpAddr) -> Result<(), Refusal> {
        let ip = ip.to_canonical();
        if self.deny.iter().any(|net| net.contains(&ip)) {
            return Err(Refusal::Denied);
        }
        if !self.allow.is_empty() && !self.allow.iter().any(|net| net.contains(&ip)) {
            return Err(Refusal::NotAllowed);
        }
        Ok(())
    }
}

/// An address masked to a prefix length, tagged with its family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) struct Prefix {
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

/// The key that counts as one source address: an IPv4 address, or an IPv6 address masked
/// to [`Limits::ipv6_address_prefix`].
pub(super) fn address_key(limits: &Limits, ip: IpAddr) -> Prefix {
    // A dual-stack socket reports IPv4 clients as ::ffff:a.b.c.d: count them as the IPv4
    // addresses they are, not as members of one IPv6 /64 (which would put every IPv4
    // client in one share).
    let ip = ip.to_canonical();
    match ip {
        IpAddr::V4(_) => prefix(ip, 32),
        IpAddr::V6(_) => prefix(ip, limits.ipv6_address_prefix),
    }
}

/// Installed sessions per source address (see [`Limits::sessions_per_address`]).
#[derive(Debug, Default)]
pub(super) struct SessionsBySource {
    counts: HashMap<Prefix, usize>,
}

impl SessionsBySource {
    /// Counts a session of `peer`.
    pub fn add(&mut self, limits: &Limits, peer: SocketAddr) {
        *self
            .counts
            .entry(address_key(limits, peer.ip()))
            .or_default() += 1;
    }

    /// Forgets a session of `peer`.
    pub fn remove(&mut self, limits: &Limits, peer: SocketAddr) {
        let key = address_key(limits, peer.ip());
        if let Some(n) = self.counts.get_mut(&key) {
            *n -= 1;
            if *n == 0 {
                self.counts.remove(&key);
            }
        }
    }

    /// Installed sessions of `peer`'s address.
    pub fn count(&self, limits: &Limits, peer: SocketAddr) -> usize {
        let key = address_key(limits, peer.ip());
        self.counts.get(&key).copied().unwrap_or(0)
    }

    /// Forgets everything (shutdown).
    pub fn clear(&mut self) {
        self.counts.clear();
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
        let ip = ip.to_canonical(); // as in `address_key`
        let length = match ip {
            IpAddr::V4(_) => limits.ipv4_prefix,
            IpAddr::V6(_) => limits.ipv6_prefix,
        };
        (address_key(limits, ip), prefix(ip, length))
    }

    /// Half-open handshakes of `peer`'s address.
    pub fn address_count(&self, limits: &Limits, peer: SocketAddr) -> usize {
        let key = address_key(limits, peer.ip());
        self.addresses.get(&key).copied().unwrap_or(0)
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
    fn deny_wins_and_an_empty_allow_list_allows_all() {
        let net = |s: &str| s.parse::<IpNet>().expect("literal");
        let ip = |s: &str| s.parse::<IpAddr>().expect("literal");
        let open = AccessList::default();
        assert_eq!(open.check(ip("203.0.113.9")), Ok(()));
        let list = AccessList {
            allow: vec![net("10.0.0.0/8"), net("2001:db8::/32")],
            deny: vec![net("10.1.0.0/16")],
        };
        assert_eq!(list.check(ip("10.2.3.4")), Ok(()));
        assert_eq!(list.check(ip("10.1.3.4")), Err(Refusal::Denied));
        assert_eq!(list.check(ip("192.0.2.1")), Err(Refusal::NotAllowed));
        assert_eq!(list.check(ip("2001:db8:5::1")), Ok(()));
        assert_eq!(list.check(ip("2001:db9::1")), Err(Refusal::NotAllowed));
        // A dual-stack socket sees IPv4 peers as ::ffff:a.b.c.d.
        assert_eq!(list.check(ip("::ffff:10.1.0.1")), Err(Refusal::Denied));
        assert_eq!(list.check(ip("::ffff:10.9.0.1")), Ok(()));
        let deny_only = AccessList {
            allow: Vec::new(),
            deny: vec![net("0.0.0.0/0")],
        };
        assert_eq!(deny_only.check(ip("127.0.0.1")), Err(Refusal::Denied));
        assert_eq!(deny_only.check(ip("::1")), Ok(()));
    }

    #[test]
    fn sessions_count_by_address_and_reload_keeps_table_sizes() {
        let limits = Limits::default();
        let mut s = SessionsBySource::default();
        s.add(&limits, addr("10.0.0.1:1"));
        s.add(&limits, addr("10.0.0.1:2"));
        s.add(&limits, addr("[2001:db8:0:1::1]:1"));
        s.add(&limits, addr("[2001:db8:0:1::2]:1"));
        assert_eq!(s.count(&limits, addr("10.0.0.1:9")), 2);
        assert_eq!(s.count(&limits, addr("10.0.0.2:9")), 0);
        assert_eq!(s.count(&limits, addr("[2001:db8:0:1::9]:9")), 2);
        s.remove(&limits, addr("10.0.0.1:1"));
        s.remove(&limits, addr("10.0.0.1:2"));
        assert_eq!(s.count(&limits, addr("10.0.0.1:9")), 0);
        assert_eq!(s.counts.len(), 1, "empty entries are dropped");
        let new = Limits {
            max_half_open: 1,
            handshakes_per_second: 5,
            handshake_burst: 6,
            sessions_per_address: 7,
            ..Limits::default()
        };
        let reloaded = limits.reloaded(&new);
        assert_eq!(reloaded.max_half_open, limits.max_half_open);
        assert_eq!(
            (
                reloaded.handshakes_per_second,
                reloaded.handshake_burst,
                reloaded.sessions_per_address
            ),
            (5, 6, 7)
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
