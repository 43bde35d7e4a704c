//! dtls-shard: one data-plane shard of the DTLS relay.
//!
//! What it does: a [`Shard`] owns one UDP socket (SO_REUSEPORT on the listen address) and its
//! `dtls-io` backend (io_uring or recvmmsg/sendmmsg), a [`SessionTable`] (peer address →
//! session: read [`Opener`](dataplane::record::Opener), write
//! [`Sealer`](dataplane::record::Sealer), its own connected upstream socket to the backend,
//! last activity, counters) and a transmit batch. Each loop turn ([`Shard::run_turn`]):
//!
//! 1. applies the control thread's [`ShardCommand`]s (install keys, close, transmit);
//! 2. waits on one epoll set (shard socket and upstream sockets; no wait when work is
//!    pending), reads backend replies from the ready upstream sockets and seals each straight
//!    into the transmit batch;
//! 3. runs the idle sweep when due;
//! 4. flushes the batch (equal-size records to one peer go out as one GSO send) and receives
//!    one batch of datagrams; for each record of a known session at its epoch: replay check,
//!    AEAD open in place, window update (RFC 6347 §4.1.2.6), plaintext to the upstream
//!    socket. Epoch 0, handshake records and unknown peers go to the control thread as
//!    whole datagrams ([`ControlInbound::Handshake`]); everything else is dropped and
//!    counted by reason ([`ShardStats`]).
//!
//! Each turn ends by adding its tally to the shared [`ShardCounters`] and marking the
//! shard's [`Progress`] (when the turn ended, for the daemon's health check).
//!
//! A new session whose upstream socket cannot be had (no descriptor left: EMFILE/ENFILE, or
//! no port) is refused and counted by reason; in serve mode its peer, whose handshake just
//! finished, gets a fatal internal_error alert under its new keys. Established sessions are
//! not affected.
//!
//! The per-packet path allocates nothing except the copy of a datagram handed to control.
//! Queues are bounded and lock-free; a full queue drops and counts, a shard never blocks.
//!
//! Of the protocol vocabulary (`dtls-proto`) it uses only the record-level part: content
//! types, alert and heartbeat codes.
//!
//! What it does not do (yet): spawn or pin threads, run handshakes or parse a handshake
//! message (the `control` crate does), DTLS 1.3 epochs or connection IDs, keeping two read
//! epochs during a rekey (`RetireEpoch`). An idle shard sleeps in one `epoll_wait` over its
//! own socket and every upstream socket; control's commands do not wake it, so they wait at
//! most [`ShardConfig::recv_wait`].

mod counters;
mod early;
mod fair;
mod hash;
mod pending;
mod progress;
mod queue;
mod refuse;
mod relay;
mod session;
mod shard;
mod upstream;

pub use counters::{ShardCounters, ShardStats};
pub use hash::{AddrHashBuilder, AddrHasher};
pub use progress::Progress;
pub use queue::{
    AeadLimit, CloseCause, CloseReason, ControlInbound, DEFAULT_INBOUND_BYTES, HeartbeatPolicy,
    InstallError, ReadKeys, ShardCommand, ShardQueues, WriteKeys,
};
pub use refuse::is_out_of_descriptors;
pub use relay::RelayMode;
pub use session::{
    Probe, Session, SessionCounters, SessionTable, SlotId, TableFull, connect_upstream,
};
pub use shard::{Shard, ShardConfig};

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
