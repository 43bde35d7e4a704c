//! The session table: peer address → slot, preallocated, no allocation on lookup.
//!
//! Sans-IO: a [`Session`] holds its upstream flow as an opaque `F` chosen by the driver (the
//! shard's connected `UdpSocket`; a plain id in tests and the instruction-count workloads)
//! and never does I/O on it.
//!
//! Slots live in a `Vec` sized once; a free list hands them out. Each slot carries a
//! generation that changes when its session is removed, so a [`SlotId`] kept elsewhere (an
//! epoll token, the shard's ready list) can never reach the next session in that slot.
//! The index is a `HashMap` reserved for the full capacity with the seeded
//! [`AddrHashBuilder`]: lookups hash a `SocketAddr` and never allocate, and inserts up to
//! the capacity never grow it (removals leave tombstones that hashbrown clears by rehashing
//! in place, without allocating).
//!
//! An occupancy bitmap (one bit per slot, set on insert, cleared on removal) lets the shard's
//! sweep find the live sessions among a range of slots without touching the empty slots
//! themselves ([`SessionTable::next_occupied`]): an almost empty table of a million slots
//! costs the sweep 16 thousand words a pass, not a million ~440-byte slots. The per-packet
//! lookups (by address, by CID) never read it. A bitmap rather than a dense list of occupied
//! indexes: one bit a slot instead of two words (the list and each slot's place in it), one
//! bit operation on insert and removal instead of a swap-remove that moves another session's
//! entry, and the sweep's cursor stays a slot index that removals and inserts mid-pass cannot
//! reorder (a swap-remove would move a not-yet-visited session behind the cursor).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Instant;

use dataplane::record::v13::Opener13;
use dataplane::record::{Opener, Sealer};

use crate::flows::UpstreamPrefix;
use crate::hash::AddrHashBuilder;
use crate::queue::{HeartbeatPolicy, SessionId};
use crate::records::{CidKey, ReadEpochs, ReadState, Write13, WriteState};
use crate::rrc::PathState;

/// CIDs of ours a DTLS 1.3 session may have beyond the handshake's: what the engine issues
/// over a session (`control`'s `MAX_ISSUED_CIDS`, RFC 9147 §9 lets it issue fewer).
pub const MAX_EXTRA_CIDS: usize = 8;

/// What a CID in a record to a session is to it ([`Session::cid_use`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CidUse {
    /// The session's CID.
    Current,
    /// A CID of ours issued after the handshake, not used by the peer so far.
    Later,
    /// Not one of the session's CIDs (retired, or never its own).
    Retired,
}

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
    /// The id of a session not in a table.
    const UNSET: Self = Self {
        index: u32::MAX,
        generation: 0,
    };

    /// Packs into one word (an epoll token).
    pub fn to_token(self) -> usize {
        ((self.generation as usize) << 32) | self.index as usize
    }

    /// The slot index (below the table's capacity).
    pub fn index(self) -> usize {
        self.index as usize
    }

    /// The slot's generation at insertion.
    pub fn generation(self) -> u32 {
        self.generation
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

/// One DTLS session of a shard; `F` is its upstream flow (see the module docs).
#[derive(Debug)]
pub struct Session<F> {
    /// Its slot in the table (set on insertion).
    id: SlotId,
    /// Its handle, as control names it.
    pub handle: SessionId,
    /// The DTLS peer's address (serve) or the local source's (connect): an attribute, and
    /// the table's index for records from the peer; [`SessionTable::rebind`] changes it.
    pub peer: SocketAddr,
    /// Read state: a small table of epochs, each with its keys and replay window (DTLS 1.2
    /// or 1.3).
    pub read: ReadState,
    /// Write state: the one write epoch, its keys and next sequence number.
    pub sealer: WriteState,
    /// This session's own upstream flow: to the backend (serve) or to the DTLS server
    /// (connect). The driver's connected socket; the core never does I/O on it.
    pub flow: F,
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
    /// What goes in front of the plaintext sent to the backend (serve mode): a PROXY v2 or
    /// SPP header control built at installation, on the first or on every datagram.
    pub upstream: UpstreamPrefix,
    /// Counters.
    pub counters: SessionCounters,
    /// An `AeadLimitReached` was sent for the current keys.
    pub(crate) limit_reported: bool,
    /// Our connection ID: what the peer puts in its records to us (indexed by the table).
    cid: Option<CidKey>,
    /// DTLS 1.3: more CIDs of ours the engine issued after the handshake (NewConnectionId,
    /// RFC 9147 §9), indexed by the table like `cid`, at most [`MAX_EXTRA_CIDS`]; empty
    /// (no allocation) for every other session.
    extra_cids: Vec<CidKey>,
    /// The return-routability check (RFC 9853): off, idle, or checking a new address.
    pub(crate) path: PathState,
}

impl<F> Session<F> {
    /// Session `handle` of `peer` with the given DTLS 1.2 keys and upstream flow, active as
    /// of `now`.
    pub fn new(
        handle: SessionId,
        peer: SocketAddr,
        opener: Opener,
        sealer: Sealer,
        flow: F,
        now: Instant,
    ) -> Self {
        Self::with_records(
            handle,
            peer,
            ReadState::V12(ReadEpochs::new(opener)),
            WriteState::V12(sealer),
            flow,
            now,
        )
    }

    /// Session `handle` of `peer` with the given read and write state (either version).
    pub fn with_records(
        handle: SessionId,
        peer: SocketAddr,
        read: ReadState,
        sealer: WriteState,
        flow: F,
        now: Instant,
    ) -> Self {
        Self {
            id: SlotId::UNSET,
            handle,
            peer,
            read,
            sealer,
            flow,
            last_activity: now,
            last_peer_activity: now,
            heartbeat: HeartbeatPolicy::default(),
            probe: None,
            next_probe: 0,
            upstream: UpstreamPrefix::None,
            counters: SessionCounters::default(),
            limit_reported: false,
            cid: None,
            extra_cids: Vec::new(),
            path: PathState::Off,
        }
    }

    /// Our connection ID in the peer's records, if any.
    pub fn cid(&self) -> Option<&CidKey> {
        self.cid.as_ref()
    }

    /// The CIDs of ours issued after the handshake (DTLS 1.3) that reach this session too.
    pub fn extra_cids(&self) -> &[CidKey] {
        &self.extra_cids
    }

    /// Whether a record under `cid` may be this session's: our current CID (or none when
    /// the session has none), or one issued after the handshake that the peer may switch
    /// to ([`CidUse::Later`]); any other CID was retired or never ours.
    #[inline]
    pub fn cid_use(&self, cid: &[u8]) -> CidUse {
        match &self.cid {
            Some(current) if current.as_slice() == cid => CidUse::Current,
            None if cid.is_empty() => CidUse::Current,
            _ if self.extra_cids.iter().any(|c| c.as_slice() == cid) => CidUse::Later,
            _ => CidUse::Retired,
        }
    }

    /// Sets our connection ID before the session is inserted (the table indexes it).
    pub fn with_cid(mut self, cid: Option<CidKey>) -> Self {
        self.cid = cid.filter(|c| !c.is_empty());
        self
    }

    /// Its handle in the table (meaningless before it is inserted).
    pub fn id(&self) -> SlotId {
        self.id
    }

    /// New DTLS 1.2 keys both ways (a new handshake of the same peer: RFC 6347 §4.1, the
    /// old epoch's records are not read after it); counters and flow stay.
    pub fn rekey(&mut self, opener: Opener, sealer: Sealer) {
        self.rekey12(
            ReadState::V12(ReadEpochs::new(opener)),
            WriteState::V12(sealer),
        );
    }

    /// [`Self::rekey`] with read and write state in either DTLS 1.2 record format (the new
    /// handshake may have negotiated other connection IDs, RFC 9146).
    pub fn rekey12(&mut self, read: ReadState, sealer: WriteState) {
        self.read = read;
        self.sealer = sealer;
        self.limit_reported = false;
    }

    /// New DTLS 1.3 keys: when given, a new read epoch (the previous one stays readable for
    /// records still in flight, RFC 9147 §8) and a new write epoch.
    pub fn update_keys13(
        &mut self,
        opener: Option<Opener13>,
        sealer: Option<Write13>,
        cid_len: usize,
    ) {
        match (&mut self.read, opener) {
            (ReadState::V13 { epochs, cid_len: c }, opener) => {
                if let Some(opener) = opener {
                    epochs.install(opener, true);
                }
                *c = cid_len;
            }
            (other, Some(opener)) => {
                *other = ReadState::V13 {
                    epochs: Box::new(ReadEpochs::new(opener)),
                    cid_len,
                }
            }
            (_, None) => {}
        }
        if let Some(write) = sealer {
            self.sealer = WriteState::V13(Box::new(write));
        }
        self.limit_reported = false;
    }
}

#[derive(Debug)]
struct Slot<F> {
    generation: u32,
    session: Option<Session<F>>,
}

/// The table is at capacity.
#[derive(Debug)]
pub struct TableFull<F>(pub Session<F>);

/// Sessions in preallocated slots, found by peer address (the per-packet index) and by
/// handle; with a fixed capacity.
#[derive(Debug)]
pub struct SessionTable<F> {
    index: HashMap<SocketAddr, SlotId, AddrHashBuilder>,
    by_handle: HashMap<SessionId, SlotId>,
    /// Sessions by our connection ID (only sessions that have one). Probed per record of a
    /// CID session, so with the fast seeded hasher too (SipHash cost ~350 instructions per
    /// packet, `packet-cid-*` in the icount gate); only our own CIDs are inserted, so a peer
    /// cannot aim for collisions.
    by_cid: HashMap<CidKey, SlotId, AddrHashBuilder>,
    slots: Vec<Slot<F>>,
    /// Bit `i % 64` of word `i / 64` is set while slot `i` holds a session.
    occupied: Vec<u64>,
    free: Vec<u32>,
    /// Flows of sessions removed since the last drain of the upstream stage.
    retired: Vec<(SlotId, F)>,
}

impl<F> SessionTable<F> {
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
            by_handle: HashMap::with_capacity(capacity),
            by_cid: HashMap::with_hasher(AddrHashBuilder::random()),
            slots,
            occupied: vec![0; capacity.div_ceil(64)],
            free,
            retired: Vec::new(),
        }
    }

    /// The first slot at or after `from` and before `end` that holds a session: what the
    /// sweep visits, found from the occupancy bitmap (64 slots per word read).
    pub fn next_occupied(&self, from: usize, end: usize) -> Option<usize> {
        let end = end.min(self.slots.len());
        if from >= end {
            return None;
        }
        let mut word_at = from / 64;
        // Bits below `from` in its word are not asked about.
        let mut word = self.occupied.get(word_at)? & (u64::MAX << (from % 64));
        loop {
            if word != 0 {
                let index = word_at * 64 + word.trailing_zeros() as usize;
                return (index < end).then_some(index);
            }
            word_at += 1;
            if word_at * 64 >= end {
                return None;
            }
            word = *self.occupied.get(word_at)?;
        }
    }

    fn set_occupied(&mut self, index: u32, on: bool) {
        let index = index as usize;
        if let Some(word) = self.occupied.get_mut(index / 64) {
            let bit = 1u64 << (index % 64);
            if on {
                *word |= bit;
            } else {
                *word &= !bit;
            }
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

    /// The slot of the session whose connection ID is `cid`.
    pub fn lookup_cid(&self, cid: &[u8]) -> Option<SlotId> {
        self.by_cid.get(&CidKey::new(cid)?).copied()
    }

    /// Gives the session in `id` a new connection ID (or none); the index follows.
    pub fn set_cid(&mut self, id: SlotId, cid: Option<CidKey>) {
        let cid = cid.filter(|c| !c.is_empty());
        let Some(session) = self.session_mut(id) else {
            return;
        };
        let old = std::mem::replace(&mut session.cid, cid);
        if let Some(old) = old {
            self.by_cid.remove(&old);
        }
        if let Some(new) = cid {
            self.by_cid.insert(new, id);
        }
    }

    /// Indexes more CIDs of ours for the session in `id` (DTLS 1.3 NewConnectionId, RFC
    /// 9147 §9: the peer may use any of them in its records to us), up to
    /// [`MAX_EXTRA_CIDS`] over the session's life; empty ones, ones some session already
    /// holds and those over the bound are skipped. Returns how many were added. They are
    /// unindexed with the session (a CID is never retired earlier: DTLS 1.3 has no message
    /// by which the peer says it stopped using one).
    pub fn add_cids(&mut self, id: SlotId, cids: &[CidKey]) -> usize {
        let mut added = 0;
        for cid in cids {
            if cid.is_empty() || self.by_cid.contains_key(cid) {
                continue;
            }
            let Some(session) = self.session_mut(id) else {
                return added;
            };
            if session.extra_cids.len() >= MAX_EXTRA_CIDS {
                break;
            }
            session.extra_cids.push(*cid);
            self.by_cid.insert(*cid, id);
            added += 1;
        }
        added
    }

    /// DTLS 1.3: the peer switched to `to`, a CID of ours issued after the handshake
    /// (a record under it authenticated and was the newest seen): it becomes the session's
    /// CID, and the CIDs issued before it (the handshake's and earlier NewConnectionId
    /// ones) are retired, unindexed: records under them no longer reach the session (RFC
    /// 9147 §9: "Endpoints SHOULD use receiver-provided CIDs in the order they were
    /// provided", so a peer that moved on to a CID does not go back to an earlier one; RFC
    /// 9853 §9: the same CID on two paths would link them). Returns the retired CIDs,
    /// oldest first (none: `to` is not one of the session's later CIDs).
    pub fn switch_cid(&mut self, id: SlotId, to: &CidKey) -> Vec<CidKey> {
        let Some(session) = self.session_mut(id) else {
            return Vec::new();
        };
        let Some(at) = session.extra_cids.iter().position(|c| c == to) else {
            return Vec::new();
        };
        let later = session.extra_cids.split_off(at + 1);
        let mut retired = std::mem::replace(&mut session.extra_cids, later);
        retired.pop(); // `to` itself
        if let Some(old) = session.cid.replace(*to) {
            retired.insert(0, old);
        }
        for cid in &retired {
            self.by_cid.remove(cid);
        }
        retired
    }

    /// The slot of session `handle`.
    pub fn lookup_handle(&self, handle: SessionId) -> Option<SlotId> {
        self.by_handle.get(&handle).copied()
    }

    /// The session in `id`, if it is still there.
    #[inline]
    pub fn session(&self, id: SlotId) -> Option<&Session<F>> {
        let slot = self.slots.get(id.index as usize)?;
        (slot.generation == id.generation)
            .then_some(slot.session.as_ref())
            .flatten()
    }

    /// The session in `id`, mutably, if it is still there.
    #[inline]
    pub fn session_mut(&mut self, id: SlotId) -> Option<&mut Session<F>> {
        let slot = self.slots.get_mut(id.index as usize)?;
        if slot.generation != id.generation {
            return None;
        }
        slot.session.as_mut()
    }

    /// `peer`'s session.
    pub fn find(&self, peer: &SocketAddr) -> Option<&Session<F>> {
        let id = self.lookup(peer)?;
        self.session(id)
    }

    /// `peer`'s session, mutably.
    pub fn find_mut(&mut self, peer: &SocketAddr) -> Option<&mut Session<F>> {
        let id = self.lookup(peer)?;
        self.session_mut(id)
    }

    /// Inserts a session for a peer that has none (the caller checks with [`Self::lookup`];
    /// an existing entry for the same peer is replaced and returned in `Ok(.., Some(old))`).
    #[allow(
        clippy::result_large_err,
        reason = "the caller's session comes back whole; inserts are not on the packet path"
    )]
    pub fn insert(
        &mut self,
        session: Session<F>,
    ) -> Result<(SlotId, Option<Session<F>>), TableFull<F>> {
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
        self.by_handle.insert(session.handle, id);
        if let Some(cid) = session.cid {
            self.by_cid.insert(cid, id);
        }
        for cid in &session.extra_cids {
            self.by_cid.insert(*cid, id);
        }
        let mut session = session;
        session.id = id;
        slot.session = Some(session);
        self.set_occupied(index, true);
        Ok((id, old))
    }

    /// Removes and returns `peer`'s session.
    pub fn remove(&mut self, peer: &SocketAddr) -> Option<Session<F>> {
        let id = self.lookup(peer)?;
        self.remove_id(id)
    }

    /// Removes and returns the session in `id`, if it is still there.
    pub fn remove_id(&mut self, id: SlotId) -> Option<Session<F>> {
        let slot = self.slots.get_mut(id.index as usize)?;
        if slot.generation != id.generation {
            return None;
        }
        let session = slot.session.take()?;
        self.index.remove(&session.peer);
        self.by_handle.remove(&session.handle);
        if let Some(cid) = &session.cid {
            self.by_cid.remove(cid);
        }
        for cid in &session.extra_cids {
            self.by_cid.remove(cid);
        }
        slot.generation = slot.generation.wrapping_add(1) & GENERATION_MASK;
        self.free.push(id.index);
        self.set_occupied(id.index, false);
        Some(session)
    }

    /// The session in slot `index` (any generation) and its id: for sweeps that visit every
    /// slot and may act on each session.
    pub(crate) fn slot_mut(&mut self, index: usize) -> Option<(SlotId, &mut Session<F>)> {
        let slot = self.slots.get_mut(index)?;
        let id = SlotId {
            index: u32::try_from(index).ok()?,
            generation: slot.generation,
        };
        slot.session.as_mut().map(|s| (id, s))
    }

    /// The session in `id` is now called `handle` (control's new handshake of the same
    /// peer).
    pub fn set_handle(&mut self, id: SlotId, handle: SessionId) {
        let Some(session) = self.session_mut(id) else {
            return;
        };
        let old = std::mem::replace(&mut session.handle, handle);
        self.by_handle.remove(&old);
        self.by_handle.insert(handle, id);
    }

    /// Moves the session in `id` to peer address `peer` (the address index follows). False
    /// when the session is gone or another session has that address.
    pub fn rebind(&mut self, id: SlotId, peer: SocketAddr) -> bool {
        if self.index.get(&peer).is_some_and(|other| *other != id) {
            return false;
        }
        let Some(session) = self.session_mut(id) else {
            return false;
        };
        let old = std::mem::replace(&mut session.peer, peer);
        self.index.remove(&old);
        self.index.insert(peer, id);
        true
    }

    /// Keeps a removed session's flow until [`Self::clear_retired`], so what was staged for
    /// it before it closed (plaintext, its close_notify) can still be sent.
    pub fn retire(&mut self, session: Session<F>) {
        self.retired.push((session.id, session.flow));
    }

    /// The flow of a session retired since the last [`Self::clear_retired`].
    pub fn retired_flow(&self, id: SlotId) -> Option<&F> {
        self.retired.iter().find(|(r, _)| *r == id).map(|(_, f)| f)
    }

    /// Drops the retired flows (the driver's sockets close).
    pub fn clear_retired(&mut self) {
        self.retired.clear();
    }

    /// Every session, in slot order.
    pub fn iter(&self) -> impl Iterator<Item = &Session<F>> {
        self.slots.iter().filter_map(|s| s.session.as_ref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dataplane::record::{Aead, RecordKey, ReplayWindow};

    fn session(port: u16, now: Instant) -> Session<u16> {
        let key = || RecordKey::new(Aead::Aes128Gcm, &[port as u8; 16], &[1; 4]).expect("key");
        let peer = SocketAddr::from(([127, 0, 0, 1], port));
        Session::new(
            SessionId::new(u64::from(port)),
            peer,
            Opener::new(1, key(), ReplayWindow::new(64)),
            Sealer::new(1, key(), 0).expect("sealer"),
            port,
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
    fn handles_find_sessions_and_the_address_is_an_attribute() {
        let now = Instant::now();
        let mut t = SessionTable::with_capacity(4);
        let (a, _) = t.insert(session(1, now)).expect("room");
        let (b, _) = t.insert(session(2, now)).expect("room");
        assert_eq!(t.lookup_handle(SessionId::new(1)), Some(a));
        assert_eq!(t.lookup_handle(SessionId::new(2)), Some(b));
        assert_eq!(t.lookup_handle(SessionId::new(3)), None);

        // The peer moves: the address index follows, the handle and slot stay.
        let moved = SocketAddr::from(([198, 51, 100, 7], 9999));
        assert!(t.rebind(a, moved));
        assert_eq!(t.lookup(&moved), Some(a));
        assert_eq!(t.lookup(&SocketAddr::from(([127, 0, 0, 1], 1))), None);
        assert_eq!(t.session(a).map(|s| s.peer), Some(moved));
        assert_eq!(t.lookup_handle(SessionId::new(1)), Some(a));
        // Never onto another session's address.
        assert!(!t.rebind(a, SocketAddr::from(([127, 0, 0, 1], 2))));
        assert_eq!(t.session(a).map(|s| s.peer), Some(moved));

        // Removal by slot clears both indexes; the stale slot id finds nothing after.
        assert_eq!(t.remove_id(a).map(|s| s.handle), Some(SessionId::new(1)));
        assert_eq!(t.lookup(&moved), None);
        assert_eq!(t.lookup_handle(SessionId::new(1)), None);
        assert!(!t.rebind(a, moved));
        assert!(t.remove_id(a).is_none());
        assert_eq!(t.len(), 1);
    }

    /// The occupancy bitmap agrees with the slots across word boundaries, after removals
    /// and reuse; `next_occupied` keeps to its range.
    #[test]
    fn next_occupied_finds_exactly_the_occupied_slots() {
        let now = Instant::now();
        let mut t = SessionTable::with_capacity(200);
        for p in 1..=130 {
            t.insert(session(p, now)).expect("room");
        }
        for p in (2..=130).step_by(3) {
            t.remove(&SocketAddr::from(([127, 0, 0, 1], p)))
                .expect("present");
        }
        for p in 131..=140 {
            t.insert(session(p, now)).expect("room");
        }
        let by_slots: Vec<usize> = (0..t.capacity())
            .filter(|&i| t.slot_mut(i).is_some())
            .collect();
        let mut by_bitmap = Vec::new();
        let mut from = 0;
        while let Some(i) = t.next_occupied(from, t.capacity()) {
            by_bitmap.push(i);
            from = i + 1;
        }
        assert_eq!(by_bitmap, by_slots);
        assert_eq!(by_bitmap.len(), t.len());
        let first = by_slots[0];
        assert_eq!(t.next_occupied(first, first), None, "empty range");
        assert_eq!(t.next_occupied(first, first + 1), Some(first));
        let past = by_slots
            .iter()
            .copied()
            .find(|&i| i >= 64)
            .expect("past a word");
        assert_eq!(
            t.next_occupied(64, 10_000),
            Some(past),
            "end clipped to capacity"
        );
        assert_eq!(t.next_occupied(t.capacity(), usize::MAX), None);
    }
}
