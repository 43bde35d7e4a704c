//! The session table: peer address → slot, preallocated, no allocation on lookup.
//!
//! Slots live in a `Vec` sized once; a free list hands them out. Each slot carries a
//! generation that changes when its session is removed, so a [`SlotId`] kept elsewhere (an
//! epoll token, the shard's ready list) can never reach the next session in that slot.
//! The index is a `HashMap` reserved for the full capacity with the seeded
//! [`AddrHashBuilder`]: lookups hash a `SocketAddr` and never allocate, and inserts up to
//! the capacity never grow it (removals leave tombstones that hashbrown clears by rehashing
//! in place, without allocating).

use std::collections::HashMap;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use dataplane::record::{Opener, Sealer};

use crate::hash::AddrHashBuilder;
use crate::queue::HeartbeatPolicy;

/// Slot generations stay below 2^31, so a slot's epoll token never has its top bit set
/// (the shard's other tokens do).
const GENERATION_MASK: u32 = 0x7fff_ffff;

/// Where a session lives: slot index and the slot's generation at insertion.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SlotId {
    index: u32,
    generation: u32,
}

impl SlotId {
    /// Packs into one word (an epoll token).
    pub fn to_token(self) -> usize {
        ((self.generation as usize) << 32) | self.index as usize
    }

    /// Unpacks a [`Self::to_token`] word.
    pub fn from_token(token: usize) -> Self {
        Self {
            index: (token & 0xffff_ffff) as u32,
            generation: ((token as u64) >> 32) as u32,
        }
    }
}

/// Per-session counters, plain integers: only the owning shard touches a session.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SessionCounters {
    /// Records opened from the peer.
    pub records_opened: u64,
    /// Records sealed to the peer.
    pub records_sealed: u64,
    /// Plaintext bytes relayed peer → backend.
    pub plaintext_in: u64,
    /// Plaintext bytes relayed backend → peer.
    pub plaintext_out: u64,
    /// Records from the peer dropped (replay, bad tag, malformed, unknown epoch).
    pub drops: u64,
}

/// A keepalive HeartbeatRequest in flight (RFC 6520 §3: at most one at a time).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Probe {
    /// Its payload (a per-session counter), which the response must echo.
    pub payload: u64,
    /// Times it was sent (first send and retransmissions).
    pub sent: u8,
    /// When it was last sent.
    pub at: Instant,
}

/// One DTLS session of a shard.
#[derive(Debug)]
pub struct Session {
    /// The table key: the DTLS peer's address (serve) or the local source's (connect).
    pub peer: SocketAddr,
    /// Read state of the current epoch.
    pub opener: Opener,
    /// Write state of the current epoch.
    pub sealer: Sealer,
    /// This session's own connected, nonblocking socket: to the backend (serve) or to the
    /// DTLS server (connect).
    pub upstream: UdpSocket,
    /// Last authenticated record from the DTLS peer or plaintext datagram either way.
    pub last_activity: Instant,
    /// Last authenticated record from the DTLS peer (what keepalive watches).
    pub last_peer_activity: Instant,
    /// Heartbeat permissions negotiated in the handshake.
    pub heartbeat: HeartbeatPolicy,
    /// The keepalive request in flight, if any.
    pub probe: Option<Probe>,
    /// Payload of the next new keepalive request.
    pub(crate) next_probe: u64,
    /// Counters.
    pub counters: SessionCounters,
    /// An `AeadLimitReached` was sent for the current keys.
    pub(crate) limit_reported: bool,
    /// On the shard's upstream ready list.
    pub(crate) ready: bool,
}

impl Session {
    /// A session with the given keys and upstream socket, active as of `now`.
    pub fn new(
        peer: SocketAddr,
        opener: Opener,
        sealer: Sealer,
        upstream: UdpSocket,
        now: Instant,
    ) -> Self {
        Self {
            peer,
            opener,
            sealer,
            upstream,
            last_activity: now,
            last_peer_activity: now,
            heartbeat: HeartbeatPolicy::default(),
            probe: None,
            next_probe: 0,
            counters: SessionCounters::default(),
            limit_reported: false,
            ready: false,
        }
    }

    /// Replaces both directions' keys (a new epoch); counters and socket stay.
    pub fn rekey(&mut self, opener: Opener, sealer: Sealer) {
        self.opener = opener;
        self.sealer = sealer;
        self.limit_reported = false;
    }
}

/// Receive and send buffer asked for each upstream socket (a limit, not an allocation).
pub const UPSTREAM_BUFFER: usize = 1 << 20;

/// A nonblocking UDP socket on an ephemeral port, connected to `backend`: one per session,
/// so the backend sees each session as its own flow and its replies come back to it.
pub fn connect_upstream(backend: SocketAddr) -> io::Result<UdpSocket> {
    let local: SocketAddr = if backend.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = UdpSocket::bind(local)?;
    socket.connect(backend)?;
    socket.set_nonblocking(true)?;
    // A backend (or server) answering a burst of GSO-sent datagrams can outrun one turn:
    // the default ~200 KiB overflowed in benchmarks (counted by the kernel as RcvbufErrors).
    dtls_io::set_buffer_sizes(&socket, UPSTREAM_BUFFER, UPSTREAM_BUFFER);
    Ok(socket)
}

#[derive(Debug)]
struct Slot {
    generation: u32,
    session: Option<Session>,
}

/// The table is at capacity.
#[derive(Debug)]
pub struct TableFull(pub Session);

/// Peer address → session, with a fixed capacity.
#[derive(Debug)]
pub struct SessionTable {
    index: HashMap<SocketAddr, SlotId, AddrHashBuilder>,
    slots: Vec<Slot>,
    free: Vec<u32>,
}

impl SessionTable {
    /// A table for at most `capacity` sessions (clamped to 1..=2^32-1), all memory
    /// allocated now.
    pub fn with_capacity(capacity: usize) -> Self {
        let capacity = capacity.clamp(1, u32::MAX as usize);
        let slots = (0..capacity)
            .map(|_| Slot {
                generation: 0,
                session: None,
            })
            .collect();
        // Hand out low indexes first.
        let free = (0..capacity as u32).rev().collect();
        Self {
            index: HashMap::with_capacity_and_hasher(capacity, AddrHashBuilder::random()),
            slots,
            free,
        }
    }

    /// Most sessions the table holds.
    pub fn capacity(&self) -> usize {
        self.slots.len()
    }

    /// Sessions in the table.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// True when no session is in the table.
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// The slot of `peer`'s session.
    #[inline]
    pub fn lookup(&self, peer: &SocketAddr) -> Option<SlotId> {
        self.index.get(peer).copied()
    }

    /// The session in `id`, if it is still there.
    #[inline]
    pub fn session(&self, id: SlotId) -> Option<&Session> {
        let slot = self.slots.get(id.index as usize)?;
        (slot.generation == id.generation)
            .then_some(slot.session.as_ref())
            .flatten()
    }

    /// The session in `id`, mutably, if it is still there.
    #[inline]
    pub fn session_mut(&mut self, id: SlotId) -> Option<&mut Session> {
        let slot = self.slots.get_mut(id.index as usize)?;
        if slot.generation != id.generation {
            return None;
        }
        slot.session.as_mut()
    }

    /// `peer`'s session, mutably.
    pub fn find_mut(&mut self, peer: &SocketAddr) -> Option<&mut Session> {
        let id = self.lookup(peer)?;
        self.session_mut(id)
    }

    /// Inserts a session for a peer that has none (the caller checks with [`Self::lookup`];
    /// an existing entry for the same peer is replaced and returned in `Ok(.., Some(old))`).
    #[allow(
        clippy::result_large_err,
        reason = "the caller's session comes back whole; inserts are not on the packet path"
    )]
    pub fn insert(&mut self, session: Session) -> Result<(SlotId, Option<Session>), TableFull> {
        let old = self.remove(&session.peer);
        let Some(index) = self.free.pop() else {
            return Err(TableFull(session));
        };
        let Some(slot) = self.slots.get_mut(index as usize) else {
            // Free indexes are always below the slot count; keep the index usable anyway.
            self.free.push(index);
            return Err(TableFull(session));
        };
        let id = SlotId {
            index,
            generation: slot.generation,
        };
        self.index.insert(session.peer, id);
        slot.session = Some(session);
        Ok((id, old))
    }

    /// Removes and returns `peer`'s session.
    pub fn remove(&mut self, peer: &SocketAddr) -> Option<Session> {
        let id = self.index.remove(peer)?;
        self.take_slot(id)
    }

    fn take_slot(&mut self, id: SlotId) -> Option<Session> {
        let slot = self.slots.get_mut(id.index as usize)?;
        if slot.generation != id.generation {
            return None;
        }
        let session = slot.session.take()?;
        slot.generation = slot.generation.wrapping_add(1) & GENERATION_MASK;
        self.free.push(id.index);
        Some(session)
    }

    /// Removes every session idle since `now - idle` or longer and hands each to
    /// `on_expired`. Visits every slot: call it once per sweep interval, not per packet.
    pub fn expire_idle(
        &mut self,
        now: Instant,
        idle: Duration,
        mut on_expired: impl FnMut(Session),
    ) -> usize {
        let mut expired = 0;
        for index in 0..self.slots.len() {
            let Some(slot) = self.slots.get(index) else {
                break;
            };
            let Some(session) = &slot.session else {
                continue;
            };
            if now.saturating_duration_since(session.last_activity) < idle {
                continue;
            }
            let peer = session.peer;
            if let Some(session) = self.remove(&peer) {
                expired += 1;
                on_expired(session);
            }
        }
        expired
    }

    /// The session in slot `index` (any generation) and its id: for sweeps that visit every
    /// slot and may act on each session.
    pub(crate) fn slot_mut(&mut self, index: usize) -> Option<(SlotId, &mut Session)> {
        let slot = self.slots.get_mut(index)?;
        let id = SlotId {
            index: u32::try_from(index).ok()?,
            generation: slot.generation,
        };
        slot.session.as_mut().map(|s| (id, s))
    }

    /// Every session, in slot order.
    pub fn iter(&self) -> impl Iterator<Item = &Session> {
        self.slots.iter().filter_map(|s| s.session.as_ref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dataplane::record::{Aead, RecordKey, ReplayWindow};

    fn session(port: u16, now: Instant) -> Session {
        let key = || RecordKey::new(Aead::Aes128Gcm, &[port as u8; 16], &[1; 4]).expect("key");
        let peer = SocketAddr::from(([127, 0, 0, 1], port));
        let backend = SocketAddr::from(([127, 0, 0, 1], 9));
        Session::new(
            peer,
            Opener::new(1, key(), ReplayWindow::new(64)),
            Sealer::new(1, key(), 0).expect("sealer"),
            connect_upstream(backend).expect("loopback socket"),
            now,
        )
    }

    #[test]
    fn insert_lookup_remove_and_capacity() {
        let now = Instant::now();
        let mut t = SessionTable::with_capacity(3);
        let ids: Vec<SlotId> = (1..=3)
            .map(|p| t.insert(session(p, now)).expect("room").0)
            .collect();
        assert_eq!(t.len(), 3);
        let full = t.insert(session(4, now));
        assert!(matches!(full, Err(TableFull(s)) if s.peer.port() == 4));
        let p2 = SocketAddr::from(([127, 0, 0, 1], 2));
        assert_eq!(t.lookup(&p2), Some(ids[1]));
        assert_eq!(t.session(ids[1]).map(|s| s.peer), Some(p2));
        let removed = t.remove(&p2).expect("present");
        assert_eq!(removed.peer, p2);
        assert_eq!(t.lookup(&p2), None);
        assert!(t.session(ids[1]).is_none());
        // The freed slot is reused under a new generation: the old id stays dead.
        let (id4, old) = t.insert(session(4, now)).expect("room again");
        assert!(old.is_none());
        assert_eq!(SlotId::from_token(id4.to_token()), id4);
        assert_ne!(id4, ids[1]);
        assert!(t.session_mut(ids[1]).is_none());
        assert_eq!(t.session(id4).map(|s| s.peer.port()), Some(4));
        // Same peer again replaces the old session.
        let (_, old) = t.insert(session(4, now)).expect("replace");
        assert_eq!(old.map(|s| s.peer.port()), Some(4));
        assert_eq!(t.len(), 3);
    }

    #[test]
    fn idle_sessions_expire() {
        let now = Instant::now();
        let mut t = SessionTable::with_capacity(8);
        for p in 1..=4 {
            t.insert(session(p, now)).expect("room");
        }
        let later = now + Duration::from_secs(10);
        t.find_mut(&SocketAddr::from(([127, 0, 0, 1], 3)))
            .expect("present")
            .last_activity = later;
        let mut gone = Vec::new();
        let n = t.expire_idle(later, Duration::from_secs(5), |s| gone.push(s.peer.port()));
        assert_eq!(n, 3);
        gone.sort_unstable();
        assert_eq!(gone, vec![1, 2, 4]);
        assert_eq!(t.len(), 1);
        assert_eq!(t.iter().map(|s| s.peer.port()).collect::<Vec<_>>(), vec![3]);
    }
}
