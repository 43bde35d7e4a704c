//! The two bounded, lock-free queues between a shard and the control thread.
//!
//! - control → shard: [`ShardCommand`] (install keys, close, transmit a handshake flight
//!   to an address or a DTLS 1.3 post-handshake flight on a session's path, expect a peer's
//!   keys);
//! - shard → control: [`ControlInbound`] (handshake datagrams, session closed, AEAD limits);
//!
//! and a third, from the other shards: records under a CID this shard owns that reached
//! them ([`crate::HandoffQueue`]).
//!
//! Several control workers ([`ControlLanes`]): the inbound side is one queue per worker
//! (a *lane*); the shard picks the lane of each message by [`ControlLanes::lane`] (a keyed
//! hash of the peer's source for handshake datagrams, the owning worker encoded in the
//! [`SessionId`] for per-session messages), and each worker drains only its own lane of
//! every shard. The command queue has one producer per worker. With one lane (the default)
//! nothing differs from a single queue.
//!
//! Both are crossbeam [`ArrayQueue`]s allocated once. A push onto a full queue never blocks
//! and never waits: the message is handed back to the caller and counted here
//! ([`ShardQueues::commands_dropped`], [`ShardQueues::inbound_dropped`]). The inbound queue
//! is also bounded in bytes ([`ShardQueues::with_inbound_bytes`]): the datagrams it carries
//! are copies of what unauthenticated peers sent, so their count alone does not bound the
//! memory they hold.
//!
//! Datagram buffers: the copies of datagrams a shard hands to control and the flights
//! control hands back are taken from a pool of [`ShardQueues::pool_capacity`] buffers of
//! [`POOL_BUFFER_BYTES`] allocated with the queues ([`ShardQueues::take_buffer`]) and given
//! back to it once used ([`ShardQueues::recycle`]): control recycles each handshake datagram
//! after its turn with it, the shard each `Transmit` after copying it into its batch. A
//! spoofed ClientHello answered with a HelloVerifyRequest or HelloRetryRequest therefore
//! costs no heap allocation on either side. When the pool is empty (more datagrams in
//! flight than it holds) or a datagram is larger than a pooled buffer, a buffer is
//! allocated and counted ([`ShardQueues::pool_misses`]); a recycled buffer of the pooled
//! size joins the pool while it has room, so the pool refills itself.
//!
//! Ordering: each queue is FIFO. Control should push `InstallKeys` for a session *before*
//! the `Transmit` that carries its last handshake flight: the shard then holds the keys before
//! the peer can answer that flight with application data.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::OnceLock;
use std::sync::atomic::{
    AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed, Ordering::SeqCst, fence,
};

use crossbeam_queue::ArrayQueue;
use dataplane::record::v13::TrafficKeys13;
use dataplane::record::{CidSetupError, KeyError, RecordKey, WindowSizeError};

use crate::flows::UpstreamPrefix;
use crate::handoff::HandoffQueue;
use crate::session::SessionCounters;

/// Default byte budget of the datagrams queued to control by one shard.
pub const DEFAULT_INBOUND_BYTES: usize = 4 << 20;

/// Datagrams a shard stages for control at most (its fair stage, see `fair`).
pub const MAX_STAGED: usize = 1024;

/// Datagrams a shard stages at most in its admitted lane: those of peers whose
/// cookie-verified handshake control holds, ahead of the fair stage (see `fair`).
pub const MAX_ADMITTED_STAGED: usize = 128;

/// Buffers of each shard's datagram pool per control worker, beyond [`MAX_STAGED`] and
/// [`MAX_ADMITTED_STAGED`]: the
/// datagrams the shard lets wait in the worker's lane (256) and the worker's answers to a
/// turn's worth of them (256). With `m` workers the pool holds `MAX_STAGED +
/// MAX_ADMITTED_STAGED + m · POOL_BUFFERS_PER_LANE` buffers ([`ShardQueues::pool_capacity`]): every copy in flight
/// under a flood fits, so a flood allocates nothing however long it lasts.
pub const POOL_BUFFERS_PER_LANE: usize = 512;

/// Capacity of each pooled buffer: a datagram of a standard 1500-byte MTU with room to
/// spare (a HelloVerifyRequest, a HelloRetryRequest with its cookie, a hello fragment).
pub const POOL_BUFFER_BYTES: usize = 2048;

/// Read state to install for one epoch: the key and the replay window size.
#[derive(Debug)]
pub struct ReadKeys {
    /// The epoch these keys protect.
    pub epoch: u16,
    /// The peer's write key.
    pub key: RecordKey,
    /// Replay window size in records (a multiple of 64, see `ReplayWindow::try_new`).
    pub replay_window: usize,
}

/// Write state to install for one epoch: the key and the next sequence number.
#[derive(Debug)]
pub struct WriteKeys {
    /// The epoch these keys protect.
    pub epoch: u16,
    /// Our write key.
    pub key: RecordKey,
    /// The sequence number of the next record we send in this epoch.
    pub next_seq: u64,
}

/// DTLS 1.3 read state of one epoch (RFC 9147 §4): keys, sn key and replay window.
#[derive(Debug)]
pub struct ReadKeys13 {
    /// The epoch (3 and up for application data).
    pub epoch: u64,
    /// The peer's traffic keys for it.
    pub keys: TrafficKeys13,
    /// Replay window size in records (a multiple of 64).
    pub replay_window: usize,
    /// The next sequence number expected (0 for a new epoch).
    pub next_expected: u64,
}

/// DTLS 1.3 write state of one epoch.
#[derive(Debug)]
pub struct WriteKeys13 {
    /// The epoch.
    pub epoch: u64,
    /// Our traffic keys for it.
    pub keys: TrafficKeys13,
    /// The sequence number of the next record we send in it.
    pub next_seq: u64,
}

/// What a session may do with heartbeats (RFC 6520), from the handshake's negotiation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HeartbeatPolicy {
    /// Answer the peer's HeartbeatRequests: heartbeats were negotiated and we said
    /// `peer_allowed_to_send`. Otherwise heartbeat records are dropped and counted.
    pub answer: bool,
    /// We may send HeartbeatRequests (the peer said `peer_allowed_to_send`, RFC 6520 §2:
    /// otherwise we "MUST NOT send HeartbeatRequest messages"): keepalive probes use them.
    pub probe: bool,
}

/// A session's handle, from the moment control hands its keys to a shard until the shard
/// reports it closed: what the control thread, both queues and the shard's table name a
/// session by. Control allocates them from one 64-bit serial per loop, never reused, so a
/// stale handle can never reach a later session, whatever address or table slot that one
/// gets. The peer's address is only an attribute of the session (and a lookup index).
///
/// With several control workers, worker `w` of `m` numbers its sessions `k·m + w` (k ≥ 1):
/// the handle names its owner ([`ControlLanes::of_session`]), so the shard's reports on a
/// session reach the worker that holds it wherever its peer has moved since.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId(u64);

impl SessionId {
    /// The handle numbered `serial`.
    pub const fn new(serial: u64) -> Self {
        Self(serial)
    }

    /// Its number.
    pub const fn get(self) -> u64 {
        self.0
    }
}

impl std::fmt::Display for SessionId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A command from the control thread to one shard.
#[derive(Debug)]
pub enum ShardCommand {
    /// Create session `session` for `peer` (with its own upstream flow), or replace the keys
    /// of `peer`'s session when it exists (a new epoch; records of the old read epoch are
    /// then dropped; the session is then known as `session`).
    InstallKeys {
        /// The session's handle.
        session: SessionId,
        /// The peer's address.
        peer: SocketAddr,
        /// Read state.
        read: ReadKeys,
        /// Write state.
        write: WriteKeys,
        /// Heartbeat permissions of the session.
        heartbeat: HeartbeatPolicy,
        /// Our connection ID (RFC 9146): what the peer puts in its records to us, which are
        /// then `tls12_cid` records (empty: none, plain records), at most 20 bytes. Records
        /// carrying it reach this session from any address, and move it (RFC 9146 §6).
        cid: Vec<u8>,
        /// The peer's connection ID, put in our records to it as `tls12_cid` records
        /// (empty: none, plain records).
        peer_cid: Vec<u8>,
        /// Both sides negotiated the return-routability check (RFC 9853): a new address
        /// of the peer is checked with a path_challenge before the session moves to it,
        /// and the peer's path_challenges are answered.
        rrc: bool,
        /// Serve mode: the header put in front of the plaintext sent to the backend
        /// (PROXY v2, SPP). It replaces the session's when `peer` has one (a new
        /// handshake, perhaps by another identity); ignored in connect mode.
        upstream: UpstreamPrefix,
    },
    /// DTLS 1.3: create session `session` for `peer` with application-epoch keys (both
    /// `read` and `write` needed), or, when `peer` has a session, install a new read epoch
    /// when given (the previous one stays readable for records in flight, RFC 9147 §8) and
    /// a new write epoch when given (a KeyUpdate changes one direction at a time).
    InstallKeys13 {
        /// The session's handle.
        session: SessionId,
        /// The peer's address.
        peer: SocketAddr,
        /// Read state of the new epoch (boxed: 1.3 keys are large, commands are not; `None`:
        /// the read epochs stay).
        read: Option<Box<ReadKeys13>>,
        /// Write state of the new epoch (`None`: the write epoch stays).
        write: Option<Box<WriteKeys13>>,
        /// Our connection ID: what the peer puts in its records to us (empty: none), at
        /// most 20 bytes. Records from an unknown address carrying it reach this session
        /// (RFC 9147 §9).
        cid: Vec<u8>,
        /// The peer's connection ID, put in our records to it (empty: none).
        peer_cid: Vec<u8>,
        /// Both sides negotiated the return-routability check (RFC 9853), as in
        /// `InstallKeys`. Used when the command creates the session; a KeyUpdate keeps the
        /// session's check.
        rrc: bool,
        /// Serve mode: the header put in front of the plaintext sent to the backend. Used
        /// when the command creates the session; a KeyUpdate keeps the session's.
        upstream: UpstreamPrefix,
    },
    /// DTLS 1.3: more connection IDs of ours that the engine issued to the peer after the
    /// handshake (NewConnectionId, RFC 9147 §9); records under any of them reach the
    /// session from any address, as under its first. At most `MAX_EXTRA_CIDS` over a
    /// session; they go with it.
    AddCids {
        /// The session.
        session: SessionId,
        /// The new CIDs (each at most 20 bytes, of the session's CID length).
        cids: Vec<Vec<u8>>,
    },
    /// DTLS 1.3: connection IDs of the peer from its NewConnectionId (RFC 9147 §9): the
    /// one our records carry from now on (usage cid_immediate) and spare ones, kept in
    /// order (at most `MAX_SPARE_PEER_CIDS`) for the next address change, when our
    /// records switch to the oldest (privacy: the same CID on two paths links them).
    PeerCids {
        /// The session.
        session: SessionId,
        /// cid_immediate: the CID to put in our records now.
        immediate: Option<Vec<u8>>,
        /// cid_spare: CIDs for later, oldest first.
        spare: Vec<Vec<u8>>,
    },
    /// DTLS 1.3: stop reading `epoch` of the session (a record under the newer epoch
    /// verified, or its grace period ended; RFC 9147 §8).
    RetireEpoch {
        /// The session.
        session: SessionId,
        /// The epoch.
        epoch: u64,
    },
    /// Send close_notify to the session's peer and remove it; a `SessionClosed` carrying
    /// `reason` and the session's counters comes back. Nothing happens when the session is
    /// gone already (its `SessionClosed` is on its way).
    Close {
        /// The session.
        session: SessionId,
        /// Why control closes it.
        reason: CloseCause,
    },
    /// A handshake on `peer` ended without a session: drop what the shard holds for it
    /// (connect mode: the source's upstream flow, after the datagrams already transmitted
    /// on it, and the plaintext queued for it; serve mode: records parked for its keys).
    /// Nothing comes back.
    Forget {
        /// The peer's address.
        peer: SocketAddr,
    },
    /// Serve mode: control holds a cookie-verified handshake for `peer`, so protected
    /// records it sends before its keys arrive may be parked for them (a resumed client's
    /// first application data overtakes the installation of its keys). Only peers named
    /// here are parked for: an unverified source can make the shard hold nothing.
    ExpectKeys {
        /// The peer's address.
        peer: SocketAddr,
    },
    /// Send `datagram` to `peer` as is (a handshake flight built by control). In connect
    /// mode `peer` is the local source and the datagram goes to the server through that
    /// source's upstream socket.
    Transmit {
        /// The destination.
        peer: SocketAddr,
        /// The whole datagram.
        datagram: Vec<u8>,
    },
    /// Send `datagram` as is on installed session `session`'s current path: a DTLS 1.3
    /// post-handshake flight or ACK its engine built (NewConnectionId, KeyUpdate,
    /// NewSessionTicket, ...). The shard moves a session to a new address (RFC 9146 §6,
    /// RFC 9147 §9, after the check of RFC 9853 §5) before control hears of it
    /// ([`ControlInbound::PeerMoved`] is on its way), so an address from control may be
    /// one the peer left; the session's is not. Serve mode: where the session's own
    /// records go (the address being checked, within its anti-amplification limit, else
    /// the peer's); connect mode: the session's upstream flow. Dropped and counted
    /// (`drop_unknown_session`) when the session is gone.
    TransmitSession {
        /// The session.
        session: SessionId,
        /// The whole datagram.
        datagram: Vec<u8>,
    },
}

/// A message from a shard to the control thread.
#[derive(Debug, PartialEq, Eq)]
pub enum ControlInbound {
    /// A datagram the shard does not handle (unknown peer, epoch 0, handshake content),
    /// copied whole.
    Handshake {
        /// Where it came from.
        peer: SocketAddr,
        /// Its bytes.
        datagram: Vec<u8>,
    },
    /// Connect mode: local source `peer` sent plaintext and has no session; the shard holds
    /// an upstream flow for it (and the first datagrams) until `InstallKeys` or `Forget`.
    Open {
        /// The local source address.
        peer: SocketAddr,
    },
    /// The shard removed a session (on its own or on control's `Close`), or refused to
    /// create it.
    SessionClosed {
        /// The session.
        session: SessionId,
        /// The peer's address when it ended.
        peer: SocketAddr,
        /// Why.
        reason: CloseReason,
        /// What the session carried (zero for a refused installation).
        stats: SessionCounters,
    },
    /// DTLS 1.3: a post-handshake message (KeyUpdate, NewSessionTicket, NewConnectionId,
    /// RequestConnectionId, ...) or an ACK arrived under the session's application keys,
    /// which only the shard holds: opened here, handed to control as plaintext.
    PostHandshake {
        /// The session.
        session: SessionId,
        /// The epoch it arrived in.
        epoch: u64,
        /// Its record's sequence number (what an ACK of it names, RFC 9147 §7).
        sequence: u64,
        /// An ACK record's body (RFC 9147 §7) rather than handshake messages.
        ack: bool,
        /// The plaintext (handshake messages with their DTLS headers, or the ACK body).
        message: Vec<u8>,
    },
    /// The session's peer moved: a record under its connection ID from `peer` authenticated
    /// and was the newest seen (RFC 9146 §6, RFC 9147 §9); replies go to `peer` from now on.
    PeerMoved {
        /// The session.
        session: SessionId,
        /// Its address before.
        from: SocketAddr,
        /// Its address now.
        peer: SocketAddr,
    },
    /// DTLS 1.3: the peer moved on to a later CID of ours (a record under it authenticated
    /// and was the newest seen), so the shard retired `cids`, the ones issued before it
    /// (records under them no longer reach the session). The engine replaces them with
    /// fresh spare CIDs, unasked (RFC 9147 §9), so the peer has one for its next move.
    CidsRetired {
        /// The session.
        session: SessionId,
        /// The retired CIDs, oldest first.
        cids: Vec<Vec<u8>>,
    },
    /// DTLS 1.3: after an address change our records carry `cid`, the peer's oldest spare
    /// CID, from now on (RFC 9147 §9: "Implementations SHOULD use a new CID whenever
    /// sending on a new path"). The engine seals its own records (ACKs, post-handshake
    /// messages) under it too, and asks the peer for more when few spares are left.
    PeerCidRotated {
        /// The session.
        session: SessionId,
        /// The peer's CID our records carry now.
        cid: Vec<u8>,
    },
    /// A key of this session reached a limit: control should rekey or close. Sent once per
    /// installed key pair.
    AeadLimitReached {
        /// The session.
        session: SessionId,
        /// Which limit.
        limit: AeadLimit,
    },
}

impl ControlInbound {
    /// Bytes of the datagram it carries (0 for the others).
    pub fn datagram_len(&self) -> usize {
        match self {
            ControlInbound::Handshake { datagram, .. } => datagram.len(),
            ControlInbound::PostHandshake { message, .. } => message.len(),
            _ => 0,
        }
    }
}

/// Which per-key limit was reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AeadLimit {
    /// RFC 9147 §4.5.3: failed authentications reached the AEAD's integrity limit on the read
    /// key; the endpoint "SHOULD immediately close the connection" (or rekey).
    Integrity {
        /// Failed authentications counted under the read key.
        failed: u64,
    },
    /// RFC 6347 §4.1: the write epoch's 48-bit sequence space is spent; records to the peer
    /// are dropped until new keys arrive.
    SequenceExhausted,
    /// RFC 9147 §4.5.3: the DTLS 1.3 write key sealed as many records as its AEAD's
    /// confidentiality limit allows; control must update the keys (KeyUpdate) or close.
    Confidentiality,
}

/// Why a shard ended a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloseReason {
    /// The peer sent close_notify (answered with ours, RFC 5246 §7.2.1).
    CloseNotify,
    /// The peer sent a fatal alert (RFC 5246 §7.2: the connection ends at once).
    FatalAlert {
        /// The alert description code.
        description: u8,
    },
    /// No traffic for the configured idle timeout (close_notify sent).
    IdleTimeout,
    /// The peer answered none of the keepalive HeartbeatRequests (close_notify sent).
    KeepaliveTimeout,
    /// `InstallKeys` was refused; no session exists.
    Rejected(InstallError),
    /// Control closed it (close_notify sent).
    Closed(CloseCause),
}

/// Why control closes a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseCause {
    /// The daemon is shutting down.
    Shutdown,
    /// A reload removed the session's PSK identity, or its client certificate no longer
    /// verifies against the reloaded CA.
    Revoked,
    /// A DTLS 1.2 key reached its AEAD limit (no 1.2 rekey: RFC 9147 §4.5.3 allows closing).
    AeadLimit,
    /// An operator asked for it.
    Requested,
    /// A new handshake of the same peer replaced it (a DTLS 1.3 session, or a session of
    /// the other version, is replaced rather than rekeyed).
    Replaced,
    /// The session's DTLS 1.3 engine in control failed after the handshake: it sent a fatal
    /// alert (RFC 8446 §6.2: "Upon transmission or receipt of a fatal alert message, both
    /// parties MUST immediately close the connection"), or our KeyUpdate was never
    /// acknowledged (RFC 9147 §8). Without it the session could neither update its keys nor
    /// answer the peer's post-handshake messages.
    EngineFailed,
}

impl CloseCause {
    /// A short stable name for logs and metrics labels.
    pub fn as_str(self) -> &'static str {
        match self {
            CloseCause::Shutdown => "shutdown",
            CloseCause::Revoked => "revoked",
            CloseCause::AeadLimit => "aead_limit",
            CloseCause::Requested => "requested",
            CloseCause::Replaced => "replaced",
            CloseCause::EngineFailed => "engine_failed",
        }
    }
}

impl CloseReason {
    /// A short stable name for logs and metrics labels.
    pub fn as_str(&self) -> &'static str {
        match self {
            CloseReason::CloseNotify => "close_notify",
            CloseReason::FatalAlert { .. } => "fatal_alert",
            CloseReason::IdleTimeout => "idle_timeout",
            CloseReason::KeepaliveTimeout => "keepalive_timeout",
            CloseReason::Rejected(_) => "install_refused",
            CloseReason::Closed(cause) => cause.as_str(),
        }
    }
}

/// Why `InstallKeys` was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InstallError {
    /// The session table is full.
    #[error("session table full ({capacity} sessions)")]
    TableFull {
        /// The table's capacity.
        capacity: usize,
    },
    /// Keys for epoch 0, which is never protected (its records always go to control).
    #[error("keys for epoch 0")]
    EpochZero,
    /// DTLS 1.3 keys for a handshake epoch (0 to 2: control's, RFC 9147 §6.1).
    #[error("DTLS 1.3 keys for a handshake epoch")]
    HandshakeEpoch,
    /// A DTLS 1.3 session without write keys.
    #[error("DTLS 1.3 session without write keys")]
    NoWriteKeys,
    /// A DTLS 1.3 session without read keys.
    #[error("DTLS 1.3 session without read keys")]
    NoReadKeys,
    /// A connection ID longer than 255 bytes.
    #[error("connection ID of {0} bytes")]
    CidLength(usize),
    /// The replay window size is invalid.
    #[error(transparent)]
    ReplayWindow(#[from] WindowSizeError),
    /// The write state is invalid (sequence number out of range).
    #[error(transparent)]
    Key(#[from] KeyError),
    /// Connection-ID record protection refused the keys (RFC 9146 records are AEAD only).
    #[error(transparent)]
    Cid(#[from] CidSetupError),
    /// The upstream socket could not be created, connected or registered.
    #[error("upstream socket: {0}")]
    Upstream(io::ErrorKind),
    /// No file descriptor was left for the upstream socket (EMFILE or ENFILE).
    #[error("upstream socket: no file descriptor left")]
    OutOfDescriptors,
    /// An upstream prefix longer than [`MAX_PREFIX_LEN`](crate::MAX_PREFIX_LEN).
    #[error("upstream prefix of {0} bytes")]
    PrefixLength(usize),
}

/// How the messages of the shards to control are spread over the control plane's workers
/// (the same value, keys included, for every shard of a daemon: a peer's datagrams reach
/// one worker whichever shard receives them).
///
/// - Datagrams from a peer ([`ControlInbound::Handshake`], [`ControlInbound::Open`]) go to
///   the lane of a keyed hash (SipHash, random keys per daemon: a source cannot aim at a
///   worker) of the peer's *source*: its IPv4 address, or its IPv6 /64, whatever the port.
///   One source therefore always meets the same worker, so that worker's per-source
///   limits (handshake rate, sessions and half-open handshakes per address) hold exactly
///   as with one worker. [`ControlLanes::by_address`] hashes the whole address instead
///   (`dtlsd connect`, whose local sources all share one IP address and no per-source
///   limit).
/// - Messages on a session go to the worker that owns it, encoded in its [`SessionId`].
#[derive(Debug, Clone)]
pub struct ControlLanes {
    count: usize,
    keys: RandomState,
    whole_address: bool,
}

impl Default for ControlLanes {
    fn default() -> Self {
        Self::single()
    }
}

impl ControlLanes {
    /// One worker: every message in lane 0.
    pub fn single() -> Self {
        Self::by_source(1)
    }

    /// `count` workers (at least 1), datagrams spread by source (IPv4 address, IPv6 /64).
    pub fn by_source(count: usize) -> Self {
        Self {
            count: count.max(1),
            keys: RandomState::new(),
            whole_address: false,
        }
    }

    /// `count` workers, datagrams spread by the whole address (IP and port).
    pub fn by_address(count: usize) -> Self {
        Self {
            whole_address: true,
            ..Self::by_source(count)
        }
    }

    /// Number of lanes (workers).
    pub fn count(&self) -> usize {
        self.count
    }

    /// The lane of datagrams from `peer`.
    pub fn of_peer(&self, peer: SocketAddr) -> usize {
        if self.count == 1 {
            return 0;
        }
        let source: u128 = match peer.ip().to_canonical() {
            IpAddr::V4(v4) => u128::from(u32::from(v4)),
            IpAddr::V6(v6) => u128::from(v6) >> 64 | 1 << 127,
        };
        let hash = if self.whole_address {
            self.keys.hash_one((source, peer.port()))
        } else {
            self.keys.hash_one(source)
        };
        (hash % self.count as u64) as usize
    }

    /// The lane of the worker that owns session `id`.
    pub fn of_session(&self, id: SessionId) -> usize {
        (id.get() % self.count as u64) as usize
    }

    /// The lane `message` goes to.
    pub fn lane(&self, message: &ControlInbound) -> usize {
        match message {
            ControlInbound::Handshake { peer, .. } | ControlInbound::Open { peer } => {
                self.of_peer(*peer)
            }
            ControlInbound::SessionClosed { session, .. }
            | ControlInbound::PostHandshake { session, .. }
            | ControlInbound::PeerMoved { session, .. }
            | ControlInbound::CidsRetired { session, .. }
            | ControlInbound::PeerCidRotated { session, .. }
            | ControlInbound::AeadLimitReached { session, .. } => self.of_session(*session),
        }
    }
}

/// One shard's queues to and from control, shared (in an `Arc`) by the shard and the
/// control workers.
#[derive(Debug)]
pub struct ShardQueues {
    commands: ArrayQueue<ShardCommand>,
    /// One inbound queue per control worker.
    inbound: Box<[ArrayQueue<ControlInbound>]>,
    lanes: ControlLanes,
    commands_dropped: AtomicU64,
    inbound_dropped: AtomicU64,
    /// Datagram bytes in `inbound` now (added by the shard, released by control).
    inbound_bytes: AtomicUsize,
    inbound_bytes_cap: usize,
    /// Datagrams other shards received for this shard's sessions (see `handoff`).
    handoffs: HandoffQueue,
    /// Wakes the shard from its idle wait when a command arrives (an eventfd in the epoll
    /// set the shard waits on; see [`ShardQueues::set_waker`]).
    waker: OnceLock<mio::Waker>,
    /// The shard is in (or entering) its idle wait: the next command pushed wakes it.
    asleep: AtomicBool,
    /// Wake-ups sent (commands that found the shard asleep).
    wakes: AtomicU64,
    /// Free datagram buffers of [`POOL_BUFFER_BYTES`] (see the module documentation).
    pool: ArrayQueue<Vec<u8>>,
    /// Buffers allocated because the pool was empty or the datagram too large for one.
    pool_misses: AtomicU64,
}

impl ShardQueues {
    /// Queues of the given capacities (at least 1 each), allocated now, with the default
    /// inbound byte budget ([`DEFAULT_INBOUND_BYTES`]).
    pub fn new(command_capacity: usize, inbound_capacity: usize) -> Self {
        Self::with_inbound_bytes(command_capacity, inbound_capacity, DEFAULT_INBOUND_BYTES)
    }

    /// Queues of the given capacities whose inbound datagrams hold at most `inbound_bytes`
    /// bytes at once (at least one datagram always fits).
    pub fn with_inbound_bytes(
        command_capacity: usize,
        inbound_capacity: usize,
        inbound_bytes: usize,
    ) -> Self {
        Self::with_lanes(
            command_capacity,
            inbound_capacity,
            inbound_bytes,
            ControlLanes::single(),
        )
    }

    /// Queues for several control workers: one inbound queue of `inbound_capacity` per lane
    /// of `lanes`, all under one byte budget of `inbound_bytes`.
    pub fn with_lanes(
        command_capacity: usize,
        inbound_capacity: usize,
        inbound_bytes: usize,
        lanes: ControlLanes,
    ) -> Self {
        let pool_capacity =
            MAX_STAGED + MAX_ADMITTED_STAGED + POOL_BUFFERS_PER_LANE * lanes.count();
        Self {
            commands: ArrayQueue::new(command_capacity.max(1)),
            inbound: (0..lanes.count())
                .map(|_| ArrayQueue::new(inbound_capacity.max(1)))
                .collect(),
            lanes,
            commands_dropped: AtomicU64::new(0),
            inbound_dropped: AtomicU64::new(0),
            inbound_bytes: AtomicUsize::new(0),
            inbound_bytes_cap: inbound_bytes,
            handoffs: HandoffQueue::default(),
            waker: OnceLock::new(),
            asleep: AtomicBool::new(false),
            wakes: AtomicU64::new(0),
            pool: {
                let pool = ArrayQueue::new(pool_capacity);
                for _ in 0..pool_capacity {
                    let _ = pool.push(Vec::with_capacity(POOL_BUFFER_BYTES));
                }
                pool
            },
            pool_misses: AtomicU64::new(0),
        }
    }

    /// An empty buffer with room for `len` bytes: a pooled one when `len` fits one and the
    /// pool has one, else a new allocation (counted in [`ShardQueues::pool_misses`]). Hand
    /// it back with [`ShardQueues::recycle`] once its bytes are used.
    pub fn take_buffer(&self, len: usize) -> Vec<u8> {
        if len <= POOL_BUFFER_BYTES
            && let Some(buffer) = self.pool.pop()
        {
            return buffer;
        }
        self.pool_misses.fetch_add(1, Relaxed);
        Vec::with_capacity(len.max(POOL_BUFFER_BYTES))
    }

    /// A copy of `datagram` in a buffer from [`ShardQueues::take_buffer`].
    pub fn copy_datagram(&self, datagram: &[u8]) -> Vec<u8> {
        let mut buffer = self.take_buffer(datagram.len());
        buffer.extend_from_slice(datagram);
        buffer
    }

    /// Gives a used buffer back: it joins the pool when it has the pooled capacity and the
    /// pool has room; anything else is freed.
    pub fn recycle(&self, mut buffer: Vec<u8>) {
        if buffer.capacity() == POOL_BUFFER_BYTES {
            buffer.clear();
            // A full pool hands it back: it is freed here.
            let _ = self.pool.push(buffer);
        }
    }

    /// Free buffers in the pool now.
    pub fn pool_len(&self) -> usize {
        self.pool.len()
    }

    /// Buffers the pool holds when every one is back (all of them at the start).
    pub fn pool_capacity(&self) -> usize {
        self.pool.capacity()
    }

    /// Buffers allocated because the pool was empty or a datagram larger than a pooled
    /// buffer (see [`ShardQueues::take_buffer`]).
    pub fn pool_misses(&self) -> u64 {
        self.pool_misses.load(Relaxed)
    }

    /// How inbound messages are spread over the control workers.
    pub fn lanes(&self) -> &ControlLanes {
        &self.lanes
    }

    /// The queue of datagrams other shards hand to this one.
    pub fn handoffs(&self) -> &HandoffQueue {
        &self.handoffs
    }

    /// Control side: queues a command. When the queue is full the command is counted as
    /// dropped and handed back.
    #[allow(
        clippy::result_large_err,
        reason = "the caller's own command comes back; it is as large in the queue"
    )]
    pub fn push_command(&self, command: ShardCommand) -> Result<(), ShardCommand> {
        self.commands.push(command).inspect_err(|_| {
            self.commands_dropped.fetch_add(1, Relaxed);
        })?;
        // Pairs with the fence in `prepare_sleep`: either the shard sees this command
        // before it sleeps, or this sees it asleep and wakes it.
        fence(SeqCst);
        if self.asleep.load(Relaxed) && self.asleep.swap(false, Relaxed) {
            self.wakes.fetch_add(1, Relaxed);
            if let Some(waker) = self.waker.get() {
                // A failed wake costs at most the wait's bound (`recv_wait`).
                let _ = waker.wake();
            }
        }
        Ok(())
    }

    /// Shard side: the waker of the shard's wait (an eventfd registered in its epoll set),
    /// signalled when a command is pushed while the shard sleeps. Set once; later calls
    /// change nothing.
    pub fn set_waker(&self, waker: mio::Waker) {
        let _ = self.waker.set(waker);
    }

    /// Shard side, before an idle wait: marks the shard asleep and says whether it may
    /// sleep (no command is waiting). Call [`ShardQueues::woke`] after the wait.
    pub fn prepare_sleep(&self) -> bool {
        self.asleep.store(true, Relaxed);
        fence(SeqCst);
        if self.commands.is_empty() {
            return true;
        }
        self.asleep.store(false, Relaxed);
        false
    }

    /// Shard side, after its wait: commands no longer need to wake it.
    pub fn woke(&self) {
        self.asleep.store(false, Relaxed);
    }

    /// Whether the shard is in (or entering) its idle wait.
    pub fn is_asleep(&self) -> bool {
        self.asleep.load(Relaxed)
    }

    /// Wake-ups sent to the shard (commands that found it asleep).
    pub fn wakes(&self) -> u64 {
        self.wakes.load(Relaxed)
    }

    /// Shard side: the next command, if any.
    pub fn poll_command(&self) -> Option<ShardCommand> {
        self.commands.pop()
    }

    /// Whether commands are waiting.
    pub fn has_commands(&self) -> bool {
        !self.commands.is_empty()
    }

    /// Shard side: queues a message for control. When the queue is full the message is
    /// counted as dropped and handed back.
    #[allow(
        clippy::result_large_err,
        reason = "the caller's own message comes back; it is as large in the queue"
    )]
    pub fn push_inbound(&self, message: ControlInbound) -> Result<(), ControlInbound> {
        let bytes = message.datagram_len();
        // One producer (the shard) adds; control only releases: the check cannot be
        // overtaken by another push.
        let queued = self.inbound_bytes.load(Relaxed);
        if bytes > 0 && queued > 0 && queued + bytes > self.inbound_bytes_cap {
            self.inbound_dropped.fetch_add(1, Relaxed);
            return Err(message);
        }
        self.inbound_bytes.fetch_add(bytes, Relaxed);
        let lane = self.lanes.lane(&message);
        let Some(queue) = self.inbound.get(lane) else {
            self.inbound_bytes.fetch_sub(bytes, Relaxed);
            self.inbound_dropped.fetch_add(1, Relaxed);
            return Err(message);
        };
        queue.push(message).inspect_err(|_| {
            self.inbound_bytes.fetch_sub(bytes, Relaxed);
            self.inbound_dropped.fetch_add(1, Relaxed);
        })
    }

    /// Whether a message of `bytes` datagram bytes would be refused now (count or bytes).
    /// With several lanes: whether every lane is full.
    pub fn inbound_is_full(&self, bytes: usize) -> bool {
        let queued = self.inbound_bytes.load(Relaxed);
        self.inbound.iter().all(ArrayQueue::is_full)
            || (bytes > 0 && queued > 0 && queued + bytes > self.inbound_bytes_cap)
    }

    /// Control side: the next message from the shard, if any (every lane, in lane order:
    /// for one consumer of all lanes).
    pub fn poll_inbound(&self) -> Option<ControlInbound> {
        (0..self.inbound.len()).find_map(|lane| self.poll_lane(lane))
    }

    /// Control worker `lane`: the next message from the shard for it, if any.
    pub fn poll_lane(&self, lane: usize) -> Option<ControlInbound> {
        let message = self.inbound.get(lane)?.pop()?;
        self.inbound_bytes
            .fetch_sub(message.datagram_len(), Relaxed);
        Some(message)
    }

    /// Messages waiting in the inbound queue (all lanes).
    pub fn inbound_len(&self) -> usize {
        self.inbound.iter().map(ArrayQueue::len).sum()
    }

    /// Messages waiting for control worker `lane`.
    pub fn lane_len(&self, lane: usize) -> usize {
        self.inbound.get(lane).map_or(0, ArrayQueue::len)
    }

    /// Datagram bytes waiting in the inbound queue.
    pub fn inbound_bytes(&self) -> usize {
        self.inbound_bytes.load(Relaxed)
    }

    /// Commands refused because the queue was full.
    pub fn commands_dropped(&self) -> u64 {
        self.commands_dropped.load(Relaxed)
    }

    /// Messages to control refused because the queue was full.
    pub fn inbound_dropped(&self) -> u64 {
        self.inbound_dropped.load(Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_queues_drop_count_and_hand_back() {
        let q = ShardQueues::new(1, 1);
        let peer: SocketAddr = "127.0.0.1:1".parse().expect("literal");
        let close = || ShardCommand::Close {
            session: SessionId::new(7),
            reason: CloseCause::Shutdown,
        };
        assert!(q.push_command(close()).is_ok());
        let back = q.push_command(close());
        assert!(
            matches!(back, Err(ShardCommand::Close { session, .. }) if session == SessionId::new(7))
        );
        assert_eq!(q.commands_dropped(), 1);
        assert!(q.has_commands());
        assert!(matches!(q.poll_command(), Some(ShardCommand::Close { .. })));
        assert!(q.poll_command().is_none());

        let msg = |b: u8| ControlInbound::Handshake {
            peer,
            datagram: vec![b],
        };
        assert!(q.push_inbound(msg(1)).is_ok());
        assert_eq!(q.push_inbound(msg(2)), Err(msg(2)));
        assert_eq!(q.inbound_dropped(), 1);
        assert_eq!(q.poll_inbound(), Some(msg(1)));
        assert_eq!(q.poll_inbound(), None);
    }

    #[test]
    fn inbound_bytes_are_bounded_and_released() {
        let q = ShardQueues::with_inbound_bytes(4, 16, 1000);
        let peer: SocketAddr = "127.0.0.1:1".parse().expect("literal");
        let msg = |n: usize| ControlInbound::Handshake {
            peer,
            datagram: vec![0; n],
        };
        assert!(q.push_inbound(msg(600)).is_ok());
        assert!(q.inbound_is_full(600));
        assert!(q.push_inbound(msg(600)).is_err(), "over the byte budget");
        assert!(q.push_inbound(msg(400)).is_ok(), "fits exactly");
        assert_eq!(q.inbound_bytes(), 1000);
        assert_eq!(q.inbound_dropped(), 1);
        assert!(q.poll_inbound().is_some());
        assert_eq!(q.inbound_bytes(), 400);
        assert!(q.push_inbound(msg(600)).is_ok(), "room again");
        // A message bigger than the whole budget still goes through an empty queue.
        let big = ShardQueues::with_inbound_bytes(4, 16, 10);
        assert!(big.push_inbound(msg(100)).is_ok());
    }

    #[test]
    fn pooled_buffers_go_round_and_the_pool_refills_itself() {
        let q = ShardQueues::new(4, 4);
        assert_eq!(q.pool_len(), q.pool_capacity());
        let a = q.copy_datagram(&[7; 1200]);
        assert_eq!(
            (a.as_slice(), a.capacity()),
            (&[7; 1200][..], POOL_BUFFER_BYTES)
        );
        assert_eq!((q.pool_len(), q.pool_misses()), (q.pool_capacity() - 1, 0));
        q.recycle(a);
        assert_eq!(q.pool_len(), q.pool_capacity());
        // Larger than a pooled buffer: allocated, counted, and freed (not pooled) after.
        let big = q.copy_datagram(&[1; POOL_BUFFER_BYTES + 1]);
        assert_eq!(q.pool_misses(), 1);
        q.recycle(big);
        assert_eq!(q.pool_len(), q.pool_capacity());
        // An empty pool allocates a buffer of the pooled size, which then joins the pool
        // (buffers lost on the way are replaced that way); a full pool frees what comes back.
        let taken: Vec<Vec<u8>> = (0..q.pool_capacity()).map(|_| q.take_buffer(10)).collect();
        assert_eq!((q.pool_len(), q.pool_misses()), (0, 1));
        let extra = q.take_buffer(10);
        assert_eq!((extra.capacity(), q.pool_misses()), (POOL_BUFFER_BYTES, 2));
        q.recycle(extra);
        assert_eq!(q.pool_len(), 1);
        for b in taken {
            q.recycle(b);
        }
        assert_eq!(q.pool_len(), q.pool_capacity());
        q.recycle(Vec::with_capacity(POOL_BUFFER_BYTES));
        assert_eq!(q.pool_len(), q.pool_capacity());
        // Foreign buffers (another capacity) never join it.
        let _ = q.take_buffer(1);
        q.recycle(vec![0; 100]);
        assert_eq!(q.pool_len(), q.pool_capacity() - 1);
    }
}
