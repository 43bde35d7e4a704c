//! [`ShardCore`]: the shard's per-packet logic, sans-IO.
//!
//! The core owns the session table, the connect-mode sources waiting for their handshake,
//! the serve-mode records parked for a finishing handshake, the refusals owed an alert and
//! the fair stage towards control. It takes its inputs as calls, each with the time as an
//! argument (it reads no clock):
//!
//! - [`ShardCore::handle_datagram`]: a datagram on the shard socket (a DTLS peer's in serve
//!   mode, a local source's plaintext in connect mode);
//! - [`ShardCore::handle_flow_datagram`]: a datagram on an upstream flow (the backend's
//!   plaintext in serve mode, the DTLS server's records in connect mode);
//! - [`ShardCore::handle_command`]: one of control's [`ShardCommand`]s;
//! - [`ShardCore::handle_timeout`]: the sweep (idle expiry, keepalive, expiry of waiting
//!   sources and parked records), when due.
//!
//! and writes its effects into the caller's [`Effects`]: sealed records and plaintext on the
//! shard socket (`net`), datagrams on upstream flows (`flows`), flows opened (`opened`).
//! Datagrams for control go to the lock-free [`ShardQueues`] through the fair stage, and
//! session events (opened, closed with their reason and counters) as [`ControlInbound`]
//! messages. It opens no socket: a new session's or waiting source's upstream flow comes
//! from the caller's [`OpenFlow`] (the driver connects a UDP socket; tests hand out plain
//! ids, and can fail with EMFILE), and it never sends or receives on one.
//!
//! Serve and connect are one policy with two values ([`RelayMode`]): which of a session's
//! two sides (the shard socket, the session's flow) carries DTLS. In serve mode the shard
//! socket does and each session's flow carries plaintext to the backend; in connect mode
//! the shard socket carries local plaintext and each flow carries DTLS to the server. The
//! per-packet paths ask `RelayMode::dtls` / `plain` which side to use; the only other
//! difference is where a new session's flow comes from (new in serve mode, the waiting
//! source's in connect mode).

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use dataplane::record::v13::{Opener13, Sealer13};
use dataplane::record::{CidOpener, CidSealer, ContentType, Opener, ReplayWindow, Sealer};
use dtls_io::{ConnectedSent, TxBatch};
use dtls_proto::Alert;

use crate::counters::{Gauges, ShardCounters, Tally};
use crate::early::EarlyRecords;
use crate::fair::FairForward;
use crate::flows::{FlowSend, FlowTx, MAX_PREFIX_LEN, UpstreamPrefix};
use crate::handoff::Handoffs;
use crate::pending::{PENDING_TOKEN_BIT, Pending, PendingTable};
use crate::queue::{
    CloseReason, ControlInbound, HeartbeatPolicy, InstallError, ReadKeys, ReadKeys13, SessionId,
    ShardCommand, ShardQueues, WriteKeys, WriteKeys13,
};
use crate::records::{CidKey, ReadEpochs, ReadState, Write13, WriteState};
use crate::refuse::{self, Refusals};
use crate::relay::{self, MAX_RECORD_LEN, Out, RelayMode, Side};
use crate::rrc::{PathState, RrcCookies};
use crate::session::{Probe, Session, SessionTable, SlotId};
use crate::shard::ShardConfig;
use crate::snapshot::SessionView;

mod sweep;

use sweep::SweepPace;
pub use sweep::SweepStats;

/// Most peers whose early records a shard parks at once.
const EARLY_PEERS: usize = 1024;

/// Keepalive requests sent (first send and retransmissions) without an answer before the
/// session is closed.
const KEEPALIVE_PROBES: u8 = 3;

/// An upstream flow as the driver knows it: a session's, or a connect-mode source's while
/// its handshake runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FlowRef {
    /// The flow of the session in this slot.
    Session(SlotId),
    /// The flow of a waiting source (its token has the top bit set).
    Pending(usize),
}

impl FlowRef {
    /// One word (an epoll token): slot tokens never have the top bit set, pending ones do.
    pub fn to_token(self) -> usize {
        match self {
            Self::Session(id) => id.to_token(),
            Self::Pending(token) => token,
        }
    }

    /// Unpacks a [`Self::to_token`] word.
    pub fn from_token(token: usize) -> Self {
        if token & PENDING_TOKEN_BIT != 0 {
            Self::Pending(token)
        } else {
            Self::Session(SlotId::from_token(token))
        }
    }
}

/// Where a new upstream flow comes from: the driver connects a socket to the backend (serve)
/// or to the DTLS server (connect). An error (EMFILE, no port, a transparent bind refused)
/// refuses the new session or source, counted by reason; nothing else changes.
pub trait OpenFlow<F> {
    /// A new flow for `peer`: the DTLS client whose session it carries (serve), or the
    /// local source it carries (connect). Serve's transparent mode binds it to `peer`.
    fn open_flow(&mut self, peer: SocketAddr) -> io::Result<F>;
}

/// The caller-owned output batches of the core.
#[derive(Debug)]
pub struct Effects {
    /// Datagrams on the shard socket: sealed records and handshake datagrams to peers
    /// (serve), plaintext to local sources (connect).
    pub net: TxBatch,
    /// Datagrams on upstream flows, drained by [`ShardCore::flush_flows`].
    pub flows: FlowTx,
    /// Flows opened (or, connect mode, moved from a waiting source to its session) since the
    /// caller last emptied this: the driver registers them with its poller.
    pub opened: Vec<FlowRef>,
}

impl Effects {
    /// Batches of at most `tx_batch` datagrams of `max_datagram` bytes on the shard socket;
    /// `gso`: the driver's sockets accept UDP GSO (sends are grouped into runs).
    pub fn new(tx_batch: usize, max_datagram: usize, gso: bool) -> Self {
        Self {
            net: TxBatch::new(tx_batch, max_datagram, gso),
            flows: FlowTx::new(gso),
            opened: Vec::new(),
        }
    }
}

/// What every per-packet path writes to besides the session table.
#[derive(Debug)]
struct Ctx {
    queues: Arc<ShardQueues>,
    tally: Tally,
    mode: RelayMode,
    /// State of the generator of heartbeat padding.
    pad_state: u64,
    /// Cookies of the return-routability check.
    cookies: RrcCookies,
    fair: FairForward,
    /// Serve mode: the admitted lane, pumped before `fair` (see `fair`).
    admitted: FairForward,
    /// Serve mode with CIDs that name their shard: the other shards' hand-off queues.
    handoffs: Option<Handoffs>,
}

impl Ctx {
    fn out<'a>(&'a mut self, fx: &'a mut Effects) -> Out<'a> {
        Out {
            tx: &mut fx.net,
            flows: &mut fx.flows,
            opened: &mut fx.opened,
            queues: &self.queues,
            tally: &mut self.tally,
            mode: self.mode,
            pad_state: &mut self.pad_state,
            cookies: &mut self.cookies,
            fair: &mut self.fair,
            admitted: &mut self.admitted,
            handoffs: self.handoffs.as_ref(),
        }
    }
}

/// The shard's per-packet logic without sockets, poller or clock; `F` is the driver's
/// upstream flow (see the module docs).
#[derive(Debug)]
pub struct ShardCore<F> {
    table: SessionTable<F>,
    /// Connect mode: local sources waiting for their handshake.
    pending: PendingTable<F>,
    /// Flows of waiting sources closed since the last drain of the flow stage.
    retired_pending: Vec<(usize, F)>,
    /// Serve mode: records of peers whose handshake is finishing.
    early: EarlyRecords,
    /// Serve mode: refused peers owed a fatal alert.
    refusals: Refusals,
    ctx: Ctx,
    config: ShardConfig,
    /// When the per-interval part of the sweep is next due.
    next_sweep: Option<Instant>,
    /// The incremental sweep of the session slots.
    pace: SweepPace,
}

impl<F> ShardCore<F> {
    /// A core talking to control through `queues`. `pad_seed` seeds the generator of
    /// heartbeat padding (see `relay::fill_padding`); `rrc_key` keys the cookies of the
    /// return-routability check ([`RrcCookies`]: random bytes from the caller).
    pub fn new(
        queues: Arc<ShardQueues>,
        config: ShardConfig,
        pad_seed: u64,
        rrc_key: &[u8; 32],
    ) -> Self {
        let max_sessions = config.max_sessions.max(1);
        Self {
            table: SessionTable::with_capacity(max_sessions),
            pending: PendingTable::with_capacity(max_sessions, config.pending_bytes),
            retired_pending: Vec::new(),
            early: EarlyRecords::new(
                max_sessions.min(EARLY_PEERS),
                MAX_RECORD_LEN,
                config.early_bytes,
            ),
            refusals: Refusals::default(),
            ctx: Ctx {
                queues,
                tally: Tally::default(),
                mode: config.mode,
                pad_state: pad_seed,
                cookies: RrcCookies::new(rrc_key),
                fair: FairForward::new(config.handshake_stage_bytes),
                admitted: FairForward::admitted(config.handshake_stage_bytes),
                handoffs: None,
            },
            config,
            next_sweep: None,
            pace: SweepPace::default(),
        }
    }

    /// How the core is set up.
    pub fn config(&self) -> &ShardConfig {
        &self.config
    }

    /// The queues to and from control.
    pub fn queues(&self) -> &Arc<ShardQueues> {
        &self.ctx.queues
    }

    /// Serve mode: records under a CID that names another shard of `handoffs` are handed
    /// to it (see [`crate::Handoffs`]) instead of dropped as unknown.
    pub fn set_handoffs(&mut self, handoffs: Handoffs) {
        self.ctx.handoffs = Some(handoffs);
    }

    /// The session table.
    pub fn sessions(&self) -> &SessionTable<F> {
        &self.table
    }

    /// One [`SessionView`] per live session as of `now`, appended to `out` (for
    /// [`crate::SessionSnapshots`]: a status request, never the per-packet path).
    pub fn session_views(&self, now: Instant, out: &mut Vec<SessionView>) {
        out.extend(self.table.iter().map(|s| SessionView {
            session: s.handle,
            peer: s.peer,
            idle: now.saturating_duration_since(s.last_activity),
            counters: s.counters,
            dtls13: matches!(s.read, ReadState::V13 { .. }),
        }));
    }

    /// The upstream flow `flow`, while it is open (or retired and not yet drained).
    pub fn flow(&self, flow: FlowRef) -> Option<&F> {
        match flow {
            FlowRef::Session(id) => self
                .table
                .session(id)
                .map(|s| &s.flow)
                .or_else(|| self.table.retired_flow(id)),
            FlowRef::Pending(token) => self.pending.flow_of(token).or_else(|| {
                self.retired_pending
                    .iter()
                    .find(|(t, _)| *t == token)
                    .map(|(_, f)| f)
            }),
        }
    }

    /// Moves staged handshake datagrams towards control (call once per turn at least).
    pub fn pump(&mut self) {
        // The admitted lane first, for at most half the queue's room, so the general stage
        // always moves too.
        let half = crate::fair::QUEUE_DEPTH * self.ctx.queues.lanes().count() / 2;
        self.ctx.admitted.pump_at_most(&self.ctx.queues, half);
        self.ctx.fair.pump(&self.ctx.queues);
    }

    /// Adds what happened since the last call to `counters`, with the gauges as of now.
    pub fn publish(&mut self, counters: &ShardCounters) {
        let gauges = Gauges {
            sessions_active: self.table.len(),
            early_bytes: self.early.bytes(),
            pending_bytes: self.pending.bytes(),
            handshake_stage_bytes: self.ctx.fair.bytes() + self.ctx.admitted.bytes(),
        };
        counters.absorb(&mut self.ctx.tally, gauges);
    }

    /// One datagram on the shard socket from `source` at `now`: a DTLS peer's (serve) or a
    /// local source's plaintext (connect). Opened in place.
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        source: SocketAddr,
        datagram: &mut [u8],
        fx: &mut Effects,
        flows: &mut impl OpenFlow<F>,
    ) {
        let mut out = self.ctx.out(fx);
        match out.mode.dtls() {
            // DTLS on the shard socket: a peer's records.
            Side::Net => {
                relay::handle_datagram(
                    &mut self.table,
                    &mut self.early,
                    &mut out,
                    now,
                    source,
                    datagram,
                    self.config.cid_len,
                );
            }
            // Plaintext on the shard socket: a local source's datagram.
            Side::Flow => handle_local(
                &mut self.table,
                &mut self.pending,
                &mut out,
                flows,
                now,
                source,
                datagram,
            ),
        }
    }

    /// Serve mode: one datagram another shard received from `source` under a CID naming
    /// this one ([`crate::HandoffQueue`]): handled like one received here, except that it
    /// is never handed on.
    pub fn handle_handoff(
        &mut self,
        now: Instant,
        source: SocketAddr,
        datagram: &mut [u8],
        fx: &mut Effects,
    ) {
        if self.ctx.mode.dtls() != Side::Net {
            return;
        }
        let mut out = self.ctx.out(fx);
        out.handoffs = None;
        relay::handle_datagram(
            &mut self.table,
            &mut self.early,
            &mut out,
            now,
            source,
            datagram,
            self.config.cid_len,
        );
    }

    /// One datagram that arrived on upstream flow `flow` at `now`: backend plaintext to seal
    /// (serve), the server's records (connect), or, for a waiting source, the server's
    /// handshake datagram for control.
    pub fn handle_flow_datagram(
        &mut self,
        now: Instant,
        flow: FlowRef,
        datagram: &mut [u8],
        fx: &mut Effects,
    ) {
        let mut out = self.ctx.out(fx);
        match flow {
            FlowRef::Session(id) => {
                relay::handle_flow_datagram(&mut self.table, id, &mut out, now, datagram);
            }
            FlowRef::Pending(token) => {
                out.tally.upstream_datagrams_in += 1;
                out.tally.upstream_bytes_in += datagram.len() as u64;
                if let Some(peer) = self.pending.peer_of(token) {
                    out.forward(peer, datagram);
                }
            }
        }
    }

    /// A receive error on upstream flow `flow` (e.g. ECONNREFUSED after an ICMP port
    /// unreachable): counted; the flow stays usable.
    pub fn flow_receive_failed(&mut self) {
        self.ctx.tally.upstream_recv_errors += 1;
    }

    /// A receive on an upstream flow brought two or more datagrams at once (UDP GRO):
    /// counted; the driver hands each to [`Self::handle_flow_datagram`].
    pub fn flow_gro_received(&mut self) {
        self.ctx.tally.upstream_gro_receives += 1;
    }

    /// One of control's commands, at `now`.
    pub fn handle_command(
        &mut self,
        now: Instant,
        command: ShardCommand,
        fx: &mut Effects,
        flows: &mut impl OpenFlow<F>,
    ) {
        self.ctx.tally.commands += 1;
        match command {
            ShardCommand::InstallKeys {
                session,
                peer,
                read,
                write,
                heartbeat,
                cid,
                peer_cid,
                rrc,
                upstream,
            } => {
                let keys = keys12(read, write, heartbeat, &cid, &peer_cid, rrc, upstream);
                self.install(now, session, peer, keys, fx, flows);
            }
            ShardCommand::InstallKeys13 {
                session,
                peer,
                read,
                write,
                cid,
                peer_cid,
                rrc,
                upstream,
            } => {
                let keys = keys13(read, write, &cid, &peer_cid, rrc, upstream);
                self.install(now, session, peer, keys, fx, flows);
            }
            ShardCommand::AddCids { session, cids } => {
                if let Some(id) = self.table.lookup_handle(session) {
                    let cid_len = self
                        .table
                        .session(id)
                        .filter(|s| matches!(s.read, ReadState::V13 { .. }))
                        .map(|s| s.read.cid_len());
                    // Only CIDs of the length the session's records are read with (a 1.3
                    // header does not carry it).
                    let keys: Vec<CidKey> = cids
                        .iter()
                        .filter(|c| Some(c.len()) == cid_len)
                        .filter_map(|c| CidKey::new(c))
                        .collect();
                    self.table.add_cids(id, &keys);
                }
            }
            ShardCommand::PeerCids {
                session,
                immediate,
                spare,
            } => {
                if let Some(id) = self.table.lookup_handle(session)
                    && let Some(s) = self.table.session_mut(id)
                    && let WriteState::V13(write) = &mut s.sealer
                {
                    // RFC 9147 §9: "If usage is set to "cid_immediate", then one of the
                    // new CIDs MUST be used immediately for all future records."
                    if let Some(cid) = immediate.as_deref().and_then(CidKey::new) {
                        write.peer_cid = cid;
                    }
                    let spare: Vec<CidKey> = spare.iter().filter_map(|c| CidKey::new(c)).collect();
                    write.add_spare(&spare);
                }
            }
            ShardCommand::RetireEpoch { session, epoch } => {
                if let Some(id) = self.table.lookup_handle(session)
                    && let Some(s) = self.table.session_mut(id)
                    && let ReadState::V13 { epochs, .. } = &mut s.read
                {
                    epochs.retire(epoch);
                }
            }
            ShardCommand::Close { session, reason } => {
                let Some(id) = self.table.lookup_handle(session) else {
                    return; // gone already: its SessionClosed is on its way
                };
                let mut out = self.ctx.out(fx);
                if let Some(mut session) = self.table.remove_id(id) {
                    self.early.take(&session.peer);
                    send_close_notify(&mut session, &mut out);
                    out.tally.sessions_closed += 1;
                    out.report(ControlInbound::SessionClosed {
                        session: session.handle,
                        peer: session.peer,
                        reason: CloseReason::Closed(reason),
                        stats: session.counters,
                    });
                    self.table.retire(session);
                }
            }
            ShardCommand::Forget { peer } => {
                if let Some(p) = self.pending.remove(&peer) {
                    self.ctx.tally.drop_pending += p.queued.len() as u64;
                    self.retired_pending.push((p.token, p.flow));
                }
                self.early.take(&peer);
            }
            ShardCommand::ExpectKeys { peer } => self.early.note(peer, now),
            ShardCommand::Transmit { peer, datagram } => {
                let mut out = self.ctx.out(fx);
                transmit(&self.table, &self.pending, &mut out, peer, &datagram);
                self.refusals.after_transmit(peer, &mut out);
                // Copied into the batch (or dropped, counted): the buffer goes back to
                // the pool control took it from.
                self.ctx.queues.recycle(datagram);
            }
            ShardCommand::TransmitSession { session, datagram } => {
                let mut out = self.ctx.out(fx);
                match self
                    .table
                    .lookup_handle(session)
                    .and_then(|id| self.table.session_mut(id))
                {
                    Some(s) => relay::transmit_on_path(s, &mut out, &datagram),
                    None => out.tally.drop_unknown_session += 1,
                }
                self.ctx.queues.recycle(datagram);
            }
        }
    }

    /// End of a turn's commands: alerts owed to refused peers whose flight did not come.
    pub fn end_commands(&mut self, fx: &mut Effects) {
        let mut out = self.ctx.out(fx);
        self.refusals.end_turn(&mut out);
    }

    /// The sweep at `now`: every [`ShardConfig::sweep_interval`], waiting sources and
    /// parked records past their age; on each call, the share of the session slots that fell
    /// due since the previous call (keepalive probes, path-check timeouts, idle sessions:
    /// each session looked at once per interval, see `core/sweep.rs`), so no call holds the
    /// shard for a whole table. Call it every turn; returns when it next has work: within
    /// about a millisecond ([`sweep::SWEEP_STEP`]) while the table holds sessions, else at
    /// the next interval.
    pub fn handle_timeout(&mut self, now: Instant, fx: &mut Effects) -> Instant {
        let next_interval = match self.next_sweep {
            Some(at) if now < at => at,
            _ => {
                self.sweep_interval_work(now);
                let next = now + self.config.sweep_interval;
                self.next_sweep = Some(next);
                next
            }
        };
        self.sweep_slots(now, fx);
        self.sweep_due(now, next_interval)
    }

    /// The driver could not register `flow` with its poller: its session (or waiting
    /// source) is dropped, as when the flow could not be opened.
    pub fn abandon_flow(&mut self, flow: FlowRef, error: io::ErrorKind, fx: &mut Effects) {
        match flow {
            FlowRef::Session(id) => {
                let Some(peer) = self.table.session(id).map(|s| s.peer) else {
                    return;
                };
                if let Some(session) = self.table.remove(&peer) {
                    self.ctx.tally.install_failed += 1;
                    let mut out = self.ctx.out(fx);
                    out.report(ControlInbound::SessionClosed {
                        session: session.handle,
                        peer,
                        reason: CloseReason::Rejected(InstallError::Upstream(error)),
                        stats: session.counters,
                    });
                }
            }
            FlowRef::Pending(token) => {
                if let Some(peer) = self.pending.peer_of(token)
                    && let Some(p) = self.pending.remove(&peer)
                {
                    self.ctx.tally.drop_pending += p.queued.len() as u64;
                }
            }
        }
    }

    /// Hands each send staged for upstream flows to `send` (the driver's socket send: one
    /// datagram, or a GSO run cut into `segment`-byte datagrams), counts the outcome, and
    /// then drops the flows of sessions closed since the last call. Each send is one kernel
    /// call; [`Self::flush_flows_together`] lets the driver make fewer.
    pub fn flush_flows(
        &mut self,
        fx: &mut Effects,
        mut send: impl FnMut(&F, &[u8], Option<u16>) -> io::Result<usize>,
    ) {
        self.flush_flows_together(fx, |sends| {
            let mut out = ConnectedSent::default();
            for (flow, s) in sends {
                out.syscalls += 1;
                match send(flow, s.payload, s.segment) {
                    Ok(_) => {
                        out.sends += 1;
                        out.datagrams += s.datagrams as u64;
                        out.bytes += s.payload.len() as u64;
                        out.gso_sends += u64::from(s.segment.is_some());
                    }
                    Err(_) => out.errors += s.datagrams as u64,
                }
            }
            out
        });
    }

    /// Hands every send staged for upstream flows to `send_all` at once, each with its
    /// flow (the bytes stay put until it returns, so the driver can give them all to the
    /// kernel in one submission: [`dtls_io::UdpIo::send_connected`]), counts what it
    /// reports, and then drops the flows of sessions closed since the last call. Sends
    /// whose flow is gone count as upstream send errors.
    pub fn flush_flows_together(
        &mut self,
        fx: &mut Effects,
        send_all: impl FnOnce(&mut dyn Iterator<Item = (&F, FlowSend<'_>)>) -> ConnectedSent,
    ) {
        fx.flows.plan();
        let this = &*self;
        let mut missing = 0u64;
        let sent = if fx.flows.is_empty() {
            ConnectedSent::default()
        } else {
            let mut sends =
                fx.flows
                    .planned()
                    .filter_map(|s| match this.flow(FlowRef::from_token(s.flow)) {
                        Some(flow) => Some((flow, s)),
                        None => {
                            missing += s.datagrams as u64;
                            None
                        }
                    });
            send_all(&mut sends)
        };
        fx.flows.clear();
        let tally = &mut self.ctx.tally;
        tally.upstream_datagrams_out += sent.datagrams;
        tally.upstream_bytes_out += sent.bytes;
        tally.upstream_gso_sends += sent.gso_sends;
        tally.upstream_send_calls += sent.sends;
        tally.upstream_send_syscalls += sent.syscalls;
        tally.upstream_send_errors += sent.errors + missing;
        self.table.clear_retired();
        self.retired_pending.clear();
    }

    fn install(
        &mut self,
        now: Instant,
        handle: SessionId,
        peer: SocketAddr,
        keys: Result<Keys, InstallError>,
        fx: &mut Effects,
        flows: &mut impl OpenFlow<F>,
    ) {
        let installed = keys.and_then(|keys| self.try_install(now, handle, peer, keys, fx, flows));
        match installed {
            Ok(queued) => {
                self.flush_queued(peer, queued, fx);
                self.replay_early(now, peer, fx);
            }
            Err(e) => {
                if let Some(p) = self.pending.remove(&peer) {
                    self.ctx.tally.drop_pending += p.queued.len() as u64;
                    self.retired_pending.push((p.token, p.flow));
                }
                self.ctx.tally.install_failed += 1;
                self.early.take(&peer);
                let mut out = self.ctx.out(fx);
                out.report(ControlInbound::SessionClosed {
                    session: handle,
                    peer,
                    reason: CloseReason::Rejected(e),
                    stats: Default::default(),
                });
            }
        }
    }

    fn try_install(
        &mut self,
        now: Instant,
        handle: SessionId,
        peer: SocketAddr,
        keys: Keys,
        fx: &mut Effects,
        flows: &mut impl OpenFlow<F>,
    ) -> Result<Vec<Vec<u8>>, InstallError> {
        let new_cid = match &keys {
            Keys::V13 { cid, .. } | Keys::V12 { cid, .. } => Some(*cid),
        };
        if let Some(id) = self.table.lookup(&peer) {
            // The same peer's new keys (a new 1.2 handshake, a 1.3 KeyUpdate): the session
            // keeps its counters and flow and takes the handle control gives.
            if let Some(session) = self.table.session_mut(id) {
                match keys {
                    Keys::V12 {
                        read,
                        sealer,
                        heartbeat,
                        rrc,
                        upstream,
                        ..
                    } => {
                        session.rekey12(read, sealer);
                        session.heartbeat = heartbeat;
                        session.path = PathState::new(rrc);
                        // A new handshake: the backend hears who the peer is now.
                        session.upstream = upstream;
                    }
                    // A KeyUpdate: the session keeps its upstream prefix.
                    Keys::V13 {
                        opener,
                        sealer,
                        cid,
                        ..
                    } => {
                        let cid_len = cid.as_slice().len();
                        let mut sealer = sealer.map(|s| *s);
                        // A KeyUpdate (the session's own handle; a new handshake of the
                        // same peer comes with a new one) changes keys, not CIDs: the
                        // records go on carrying the peer's current CID (it may have been
                        // rotated since the handshake), and ours stay as they are (below).
                        if session.handle == handle
                            && let (Some(new), WriteState::V13(old)) =
                                (&mut sealer, &mut session.sealer)
                        {
                            new.keep_cids_of(old);
                        }
                        session.update_keys13(opener.map(|o| *o), sealer, cid_len);
                    }
                }
            }
            // A new handshake of the same peer brings a new CID of ours; a 1.3 KeyUpdate
            // (same handle) names the handshake's, which a switch of the peer to a later
            // one of ours may have retired (see `SessionTable::switch_cid`): kept as is.
            let key_update13 = self
                .table
                .session(id)
                .is_some_and(|s| s.handle == handle && matches!(s.sealer, WriteState::V13(_)));
            if let Some(cid) = new_cid.filter(|_| !key_update13) {
                self.table.set_cid(id, Some(cid));
            }
            // Several control workers: the handle of another worker's session (its peer
            // moved to a source another worker serves, and handshook there) is gone for
            // that worker, which hears so; one worker rekeys under its own handles only.
            let lanes = self.ctx.queues.lanes();
            let previous = self.table.session_mut(id).map(|s| s.handle);
            if let Some(previous) = previous
                && previous != handle
                && lanes.of_session(previous) != lanes.of_session(handle)
            {
                let mut out = self.ctx.out(fx);
                out.report(ControlInbound::SessionClosed {
                    session: previous,
                    peer,
                    reason: CloseReason::Closed(crate::queue::CloseCause::Replaced),
                    stats: Default::default(),
                });
            }
            self.table.set_handle(id, handle);
            self.ctx.tally.sessions_rekeyed += 1;
            return Ok(Vec::new());
        }
        let (read, sealer, heartbeat, rrc, upstream) = match keys {
            Keys::V12 {
                read,
                sealer,
                heartbeat,
                rrc,
                upstream,
                ..
            } => (read, sealer, heartbeat, rrc, upstream),
            Keys::V13 {
                opener: Some(opener),
                sealer: Some(sealer),
                cid,
                rrc,
                upstream,
            } => (
                ReadState::V13 {
                    epochs: Box::new(ReadEpochs::new(*opener)),
                    cid_len: cid.as_slice().len(),
                },
                WriteState::V13(sealer),
                // No heartbeat in DTLS 1.3.
                HeartbeatPolicy::default(),
                rrc,
                upstream,
            ),
            Keys::V13 { sealer: None, .. } => return Err(InstallError::NoWriteKeys),
            Keys::V13 { opener: None, .. } => return Err(InstallError::NoReadKeys),
        };
        if self.table.len() >= self.table.capacity() {
            return Err(InstallError::TableFull {
                capacity: self.table.capacity(),
            });
        }
        let (flow, queued, waited_as) = match self.config.mode.dtls() {
            // The handshake ran on the shard socket: the session's flow is new.
            Side::Net => match flows.open_flow(peer) {
                Ok(flow) => (flow, Vec::new(), None),
                Err(e) => {
                    let mut out = self.ctx.out(fx);
                    return Err(self.refusals.refuse(peer, sealer, &e, &mut out));
                }
            },
            // The handshake ran over the source's own flow: the server knows its port.
            Side::Flow => match self.pending.remove(&peer) {
                Some(p) => (p.flow, p.queued, Some(p.token)),
                None => return Err(InstallError::Upstream(io::ErrorKind::NotFound)),
            },
        };
        let mut session =
            Session::with_records(handle, peer, read, sealer, flow, now).with_cid(new_cid);
        session.heartbeat = heartbeat;
        session.path = PathState::new(rrc);
        session.upstream = upstream;
        let capacity = self.table.capacity();
        let (id, _) = self
            .table
            .insert(session)
            .map_err(|_| InstallError::TableFull { capacity })?;
        if let Some(token) = waited_as {
            // Handshake datagrams staged for the waiting source go out on the same flow.
            fx.flows.retarget(token, id.to_token());
        }
        fx.opened.push(FlowRef::Session(id));
        self.ctx.tally.sessions_installed += 1;
        Ok(queued)
    }

    /// Serve mode: opens the records the peer sent before its keys were installed.
    fn replay_early(&mut self, now: Instant, peer: SocketAddr, fx: &mut Effects) {
        let parked = self.early.take(&peer);
        let Some(id) = self.table.lookup(&peer) else {
            return;
        };
        let mut out = self.ctx.out(fx);
        for mut datagram in parked {
            out.tally.early_replayed += 1;
            relay::handle_protected(&mut self.table, id, &mut out, now, &mut datagram);
        }
    }

    /// Connect mode: seals what the source sent while its handshake ran (empty in serve
    /// mode).
    fn flush_queued(&mut self, peer: SocketAddr, queued: Vec<Vec<u8>>, fx: &mut Effects) {
        let Some(id) = self.table.lookup(&peer) else {
            return;
        };
        let mut out = self.ctx.out(fx);
        for plaintext in queued {
            if let Some(session) = self.table.session_mut(id) {
                relay::seal_record(session, &mut out, ContentType::ApplicationData, &plaintext);
            }
        }
    }

    /// The per-interval part of the sweep: waiting sources and parked records past their
    /// age (small tables of their own, not the session slots).
    fn sweep_interval_work(&mut self, now: Instant) {
        self.ctx.tally.drop_pending += self.pending.expire(now) as u64;
        self.ctx.tally.drop_unknown_session += self.early.expire(now) as u64;
    }
}

/// Keys to install, checked and built.
enum Keys {
    V12 {
        read: ReadState,
        sealer: WriteState,
        heartbeat: HeartbeatPolicy,
        /// Our connection ID (empty: none).
        cid: CidKey,
        /// The return-routability check was negotiated (RFC 9853).
        rrc: bool,
        upstream: UpstreamPrefix,
    },
    V13 {
        /// `None`: the session's read epochs stay (a KeyUpdate of our write keys).
        opener: Option<Box<Opener13>>,
        /// `None`: the write epoch stays (the peer's KeyUpdate).
        sealer: Option<Box<Write13>>,
        /// Our connection ID (empty: none).
        cid: CidKey,
        /// The return-routability check was negotiated (RFC 9853); taken when the keys
        /// create the session (a KeyUpdate keeps the session's check).
        rrc: bool,
        upstream: UpstreamPrefix,
    },
}

/// DTLS 1.2 keys from `InstallKeys`, in the record format each direction's CID calls for
/// (RFC 9146 §3: `tls12_cid` records where a non-empty CID was negotiated).
fn keys12(
    read: ReadKeys,
    write: WriteKeys,
    heartbeat: HeartbeatPolicy,
    cid: &[u8],
    peer_cid: &[u8],
    rrc: bool,
    upstream: UpstreamPrefix,
) -> Result<Keys, InstallError> {
    // RFC 6347 §4.1: epoch 0 is the initial null-protection state; keys start at 1.
    if read.epoch == 0 || write.epoch == 0 {
        return Err(InstallError::EpochZero);
    }
    let too_long = |c: &[u8]| InstallError::CidLength(c.len());
    let cid_key = CidKey::new(cid).ok_or_else(|| too_long(cid))?;
    CidKey::new(peer_cid).ok_or_else(|| too_long(peer_cid))?;
    check_prefix(&upstream)?;
    let window = ReplayWindow::try_new(read.replay_window)?;
    let read_state = if cid.is_empty() {
        ReadState::V12(ReadEpochs::new(Opener::new(read.epoch, read.key, window)))
    } else {
        let opener = CidOpener::new(read.epoch, read.key, window, cid)?;
        ReadState::V12Cid(Box::new(ReadEpochs::new(opener)))
    };
    let sealer = if peer_cid.is_empty() {
        WriteState::V12(Sealer::new(write.epoch, write.key, write.next_seq)?)
    } else {
        let sealer = CidSealer::new(write.epoch, write.key, write.next_seq, peer_cid)?;
        WriteState::V12Cid(Box::new(sealer))
    };
    Ok(Keys::V12 {
        read: read_state,
        sealer,
        heartbeat,
        cid: cid_key,
        rrc,
        upstream,
    })
}

/// An upstream prefix is at most [`MAX_PREFIX_LEN`] bytes.
fn check_prefix(upstream: &UpstreamPrefix) -> Result<(), InstallError> {
    match upstream.bytes().len() {
        n if n > MAX_PREFIX_LEN => Err(InstallError::PrefixLength(n)),
        _ => Ok(()),
    }
}

/// DTLS 1.3 keys from `InstallKeys13`.
fn keys13(
    read: Option<Box<ReadKeys13>>,
    write: Option<Box<WriteKeys13>>,
    cid: &[u8],
    peer_cid: &[u8],
    rrc: bool,
    upstream: UpstreamPrefix,
) -> Result<Keys, InstallError> {
    check_prefix(&upstream)?;
    // RFC 9147 §6.1: epochs 0 to 2 are the handshake's (control's); application data
    // starts at epoch 3.
    let handshake_epoch = |e: u64| e < 3;
    if read.as_ref().is_some_and(|r| handshake_epoch(r.epoch))
        || write.as_ref().is_some_and(|w| handshake_epoch(w.epoch))
    {
        return Err(InstallError::HandshakeEpoch);
    }
    let too_long = |c: &[u8]| InstallError::CidLength(c.len());
    let cid = CidKey::new(cid).ok_or_else(|| too_long(cid))?;
    let peer_cid = CidKey::new(peer_cid).ok_or_else(|| too_long(peer_cid))?;
    let opener = match read {
        Some(read) => {
            let window = ReplayWindow::try_new(read.replay_window)?;
            let ReadKeys13 {
                epoch,
                keys,
                next_expected,
                ..
            } = *read;
            Some(Box::new(
                Opener13::new(epoch, keys, window).with_next_expected(next_expected),
            ))
        }
        None => None,
    };
    Ok(Keys::V13 {
        opener,
        sealer: write.map(|w| {
            let WriteKeys13 {
                epoch,
                keys,
                next_seq,
            } = *w;
            Box::new(Write13::new(
                Sealer13::new(epoch, keys).with_next_sequence(next_seq),
                peer_cid,
            ))
        }),
        cid,
        rrc,
        upstream,
    })
}

/// RFC 5246 §7.2.1: close_notify before closing the write side.
fn send_close_notify<F>(session: &mut Session<F>, out: &mut Out<'_>) {
    relay::seal_record(
        session,
        out,
        ContentType::Alert,
        &Alert::close_notify().to_bytes(),
    );
}

/// A handshake datagram from control, out on the DTLS side: to the peer on the shard socket
/// (serve), or to the server on the source's upstream flow (connect: the waiting source's,
/// or its session's for a handshake on a live session).
fn transmit<F>(
    table: &SessionTable<F>,
    pending: &PendingTable<F>,
    out: &mut Out<'_>,
    peer: SocketAddr,
    datagram: &[u8],
) {
    let side = out.mode.dtls();
    let flow = match side {
        Side::Net => Some(0),
        Side::Flow => pending
            .get(&peer)
            .map(|p| p.token)
            .or_else(|| table.lookup(&peer).map(SlotId::to_token)),
    };
    match flow {
        Some(flow) => {
            out.push(side, peer, flow, datagram);
        }
        None => out.tally.drop_unknown_session += 1,
    }
}

/// Connect mode: one plaintext datagram from local `source`: sealed to the server when the
/// source has a session, queued while its handshake runs, or the start of one.
fn handle_local<F>(
    table: &mut SessionTable<F>,
    pending: &mut PendingTable<F>,
    out: &mut Out<'_>,
    flows: &mut impl OpenFlow<F>,
    now: Instant,
    source: SocketAddr,
    plaintext: &mut [u8],
) {
    out.tally.datagrams_in += 1;
    out.tally.bytes_in += plaintext.len() as u64;
    if let Some(session) = table.find_mut(&source) {
        session.last_activity = now;
        relay::seal_record(session, out, ContentType::ApplicationData, plaintext);
        return;
    }
    if pending.get(&source).is_some() {
        if !pending.queue(&source, plaintext) {
            out.tally.drop_pending += 1;
        }
        return;
    }
    if pending.is_full() || table.len() + pending.len() >= table.capacity() {
        out.tally.drop_pending += 1;
        return;
    }
    let flow = match flows.open_flow(source) {
        Ok(flow) => flow,
        Err(e) => return refuse::refuse_source(&e, out.tally),
    };
    let token = pending.next_token();
    pending.insert(source, Pending::new(flow, token, now));
    out.opened.push(FlowRef::Pending(token));
    if !pending.queue(&source, plaintext) {
        out.tally.drop_pending += 1;
    }
    out.tally.handshakes_requested += 1;
    out.report(ControlInbound::Open { peer: source });
}
