//! dtls-shard: one data-plane shard of the DTLS relay, as a sans-IO core and a thin driver.
//!
//! - [`ShardCore`] is the per-packet logic with no socket, poller or clock: a
//!   [`SessionTable`] (peer address → generation-checked [`SlotId`] → session: read
//!   [`Opener`](dataplane::record::Opener), write [`Sealer`](dataplane::record::Sealer), its
//!   upstream flow as an opaque value, last activity, counters), the connect-mode sources
//!   waiting for a handshake, the serve-mode records parked for a finishing handshake and
//!   the fair stage towards control. It takes `(now, from, datagram)`, datagrams from
//!   upstream flows, control's [`ShardCommand`]s and timeouts, and writes into the caller's
//!   [`Effects`]: sealed records and plaintext for the shard socket, datagrams for upstream
//!   flows ([`FlowTx`]), flows to register. For each record of a known session at its
//!   epoch: replay check, AEAD open in place, window update (RFC 6347 §4.1.2.6), plaintext
//!   to the session's flow. Epoch 0, handshake records and unknown peers go to the control
//!   thread as whole datagrams ([`ControlInbound::Handshake`]); everything else is dropped
//!   and counted by reason ([`ShardStats`]). Serve and connect are one [`RelayMode`]: which
//!   side carries DTLS.
//! - [`Shard`] drives it on one core: one UDP socket (SO_REUSEPORT on the listen address)
//!   through `dtls-io` (io_uring or recvmmsg/sendmmsg), or one AF_XDP socket on a NIC
//!   queue ([`Shard::with_xdp`]; the UDP socket then only holds the address), one connected
//!   upstream socket per session (the core's flow values) in one edge-triggered epoll set,
//!   and the clock read once per turn. Each turn ([`Shard::run_turn`]) applies control's commands,
//!   reads the ready upstream sockets into the core, runs the core's sweep (a share a turn), flushes the
//!   transmit batch and receives one batch of datagrams into the core, then sends what the core
//!   staged for upstream sockets (equal-size runs as one GSO send). It ends by adding the turn's
//!   tally to the shared [`ShardCounters`] and marking the shard's [`Progress`].
//!
//! A new session whose upstream socket cannot be had (no descriptor left: EMFILE/ENFILE, or
//! no port) is refused and counted by reason; in serve mode its peer, whose handshake just
//! finished, gets a fatal internal_error alert under its new keys. Established sessions are
//! not affected.
//!
//! A record under a connection ID that names another shard of the process (it reached this
//! one because reuseport steering is off or was misdirected) is handed to its owner through
//! the owner's [`HandoffQueue`] ([`Handoffs`], counted in `cid_handoffs`). One whose CID
//! names another node of the fleet goes to the daemon's node forwarder ([`NodeForward`],
//! counted in `cid_forwards`).
//!
//! The per-packet path allocates nothing except the copy of a datagram handed to another
//! shard or to another node; the copies handed to control (and control's flights back) use
//! the queues' buffer pool ([`ShardQueues::take_buffer`]), so a flood of spoofed hellos
//! costs no allocation. Queues are bounded and lock-free; a full queue drops and counts, a
//! shard never blocks.
//!
//! Of the protocol vocabulary (`dtls-proto`) it uses only the record-level part: content
//! types, alert and heartbeat codes.
//!
//! What it does not do: spawn or pin threads (the daemon does), run handshakes or parse a
//! handshake message (the `control` crate does; DTLS 1.3 post-handshake messages go to it as
//! plaintext). An idle shard sleeps in one `epoll_wait` over its
//! own socket, every upstream socket and an eventfd that a command pushed while it sleeps
//! signals ([`ShardQueues::set_waker`]), so control's commands wake it at once;
//! [`ShardConfig::recv_wait`] bounds the sleep.

mod core;
mod counters;
mod early;
mod fair;
mod flows;
mod handoff;
mod hash;
mod pending;
mod progress;
mod queue;
mod records;
mod refuse;
mod relay;
mod rrc;
mod session;
mod shard;
mod snapshot;

pub use crate::core::{Effects, FlowRef, OpenFlow, ShardCore, SweepStats};
pub use counters::{ShardCounters, ShardStats};
pub use flows::{FlowSend, FlowTx, MAX_PREFIX_LEN, UpstreamPrefix};
pub use handoff::{HANDOFF_CAPACITY, Handoff, HandoffQueue, Handoffs, NodeForward};
pub use hash::{AddrHashBuilder, AddrHasher};
pub use progress::Progress;
pub use queue::{
    AeadLimit, CloseCause, CloseReason, ControlInbound, ControlLanes, DEFAULT_INBOUND_BYTES,
    HeartbeatPolicy, InstallError, MAX_STAGED, POOL_BUFFER_BYTES, POOL_BUFFERS_PER_LANE, ReadKeys,
    ReadKeys13, SessionId, ShardCommand, ShardQueues, WriteKeys, WriteKeys13,
};
pub use records::{
    CidKey, EpochOpener, MAX_OLDER_READ_EPOCHS, MAX_SESSION_CID_LEN, MAX_SPARE_PEER_CIDS,
    ReadEpochs, ReadState, Write13, WriteState,
};
pub use refuse::{TransparentSource, is_out_of_descriptors};
pub use relay::RelayMode;
pub use rrc::{RRC_CHALLENGES, RRC_TIMEOUT, RrcCookies};
pub use session::{
    CidUse, MAX_EXTRA_CIDS, Probe, Session, SessionCounters, SessionTable, SlotId, TableFull,
};
pub use shard::{Shard, ShardConfig, UPSTREAM_BUFFER, UpstreamSource, XdpListen, connect_upstream};
pub use snapshot::{SessionSnapshots, SessionView};

/// Errors that stop a shard. All are fatal to the shard's loop (the caller logs and rebuilds
/// it); per-record and per-session problems are counted, never returned.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The io backend failed to set up or to send/receive.
    #[error(transparent)]
    Io(#[from] dtls_io::Error),
    /// The epoll set over the upstream sockets could not be created or waited on.
    #[error("upstream poll failed: {0}")]
    Poll(std::io::Error),
}
