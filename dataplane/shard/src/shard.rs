//! [`Shard`]: one core's socket, io backend, session table and loop turn.

use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::{Duration, Instant};

use dataplane::record::{ContentType, Opener, ReplayWindow, Sealer};
use dtls_io::{BackendKind, IoConfig, SocketConfig, TxBatch, UdpIo, bind_udp};
use dtls_proto::Alert;
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};

use crate::Error;
use crate::counters::{Gauges, ShardCounters, ShardStats, Tally};
use crate::early::EarlyRecords;
use crate::fair::FairForward;
use crate::pending::{PENDING_TOKEN_BIT, Pending, PendingTable};
use crate::progress::Progress;
use crate::queue::{
    CloseReason, ControlInbound, HeartbeatPolicy, InstallError, ReadKeys, ShardCommand,
    ShardQueues, WriteKeys,
};
use crate::refuse::{self, Refusals};
use crate::relay::{self, Drained, MAX_RECORD_LEN, Out, RelayMode};
use crate::session::{Probe, Session, SessionTable, SlotId, connect_upstream};
use crate::upstream::UpstreamTx;

/// Most peers whose early records a shard parks at once.
const EARLY_PEERS: usize = 1024;

/// Keepalive requests sent (first send and retransmissions) without an answer before the
/// session is closed.
const KEEPALIVE_PROBES: u8 = 3;

/// Largest UDP payload (IPv4): the upstream receive buffer size.
const MAX_UDP_PAYLOAD: usize = 65_507;

/// How a shard is set up.
#[derive(Debug, Clone, Copy)]
pub struct ShardConfig {
    /// Which side of DTLS the listen socket is on.
    pub mode: RelayMode,
    /// Where each session's upstream socket is connected: the plaintext backend (serve) or
    /// the DTLS server (connect).
    pub upstream: SocketAddr,
    /// The io backend and its batch sizes.
    pub io: IoConfig,
    /// Most sessions (the table and upstream ready list are sized for it).
    pub max_sessions: usize,
    /// A session with no traffic either way for this long is closed.
    pub idle_timeout: Duration,
    /// How often the idle sweep runs (it visits every slot).
    pub sweep_interval: Duration,
    /// Most datagrams sent per loop turn.
    pub tx_batch: usize,
    /// Largest datagram sent to a peer; larger backend datagrams are dropped and counted.
    pub max_datagram: usize,
    /// How long an idle turn sleeps. Datagrams on the shard socket and backend replies wake
    /// it at once (one epoll set watches both); control's commands do not, so this bounds
    /// how long an idle shard takes to notice them.
    pub recv_wait: Duration,
    /// Most backend datagrams relayed per session per turn (fairness between sessions).
    pub upstream_budget: usize,
    /// Send a keepalive HeartbeatRequest to a peer silent for this long (only where the
    /// peer allows requests, RFC 6520 §2); a session whose peer answers none of
    /// three requests, one interval apart, is closed. `None`: no probes.
    pub keepalive: Option<Duration>,
    /// Serve mode: byte budget of the protected datagrams parked for peers whose keys are
    /// on their way (see `early`).
    pub early_bytes: usize,
    /// Connect mode: byte budget of the plaintext held for local sources waiting for their
    /// handshake (each source also holds at most 64 KiB).
    pub pending_bytes: usize,
    /// Byte budget of the handshake datagrams staged for control (see `fair`).
    pub handshake_stage_bytes: usize,
}

impl ShardConfig {
    /// Defaults for serve mode, relaying to `backend`.
    pub fn new(backend: SocketAddr) -> Self {
        Self::with_mode(RelayMode::Serve, backend)
    }

    /// Defaults for `mode` with upstream sockets connected to `upstream`.
    pub fn with_mode(mode: RelayMode, upstream: SocketAddr) -> Self {
        Self {
            mode,
            upstream,
            io: IoConfig::default(),
            max_sessions: 4096,
            idle_timeout: Duration::from_secs(300),
            sweep_interval: Duration::from_secs(1),
            tx_batch: 64,
            max_datagram: 1472,
            recv_wait: Duration::from_millis(1),
            upstream_budget: 16,
            keepalive: None,
            early_bytes: crate::early::DEFAULT_MAX_BYTES,
            pending_bytes: crate::pending::DEFAULT_MAX_BYTES,
            handshake_stage_bytes: crate::fair::DEFAULT_MAX_BYTES,
        }
    }
}

/// One shard: owns its socket and io backend, its session table with one upstream socket per
/// session, an epoll set over those upstream sockets, and a transmit batch. Not `Send` (the
/// io backend is single-issuer): build it on the thread that runs it.
#[derive(Debug)]
pub struct Shard {
    io: UdpIo,
    table: SessionTable,
    /// Transmit batch, control queue, tally and send buffers of the per-packet paths.
    out: Out,
    /// Connect mode: local sources waiting for their handshake.
    pending: PendingTable,
    /// Serve mode: records of peers whose handshake is finishing.
    early: EarlyRecords,
    counters: Arc<ShardCounters>,
    /// Marked once per turn, for the daemon's health check.
    progress: Arc<Progress>,
    /// Serve mode: refused peers owed a fatal alert.
    refusals: Refusals,
    poll: Poll,
    events: Events,
    /// Sessions whose upstream socket may still hold datagrams (epoll is edge-triggered).
    ready: Vec<SlotId>,
    scratch: Box<[u8]>,
    config: ShardConfig,
    next_sweep: Option<Instant>,
    /// The last turn's receive returned datagrams (there may be more: do not sleep).
    received: bool,
}

/// The epoll token of the shard socket (no slot token reaches it: slot indexes are below
/// `u32::MAX`).
const LISTEN: Token = Token(usize::MAX);

impl Shard {
    /// A shard on `socket` (made nonblocking) talking to control through `queues`.
    pub fn new(
        socket: UdpSocket,
        queues: Arc<ShardQueues>,
        config: ShardConfig,
    ) -> Result<Self, Error> {
        let io = UdpIo::new(socket, &config.io)?;
        // The kernel accepted UDP GSO on the listen socket: upstream sockets may use it too.
        let gso = io.gso();
        let max_sessions = config.max_sessions.max(1);
        let poll = Poll::new().map_err(Error::Poll)?;
        // Edge-triggered: a turn sleeps only after a receive came back empty, and every
        // datagram arriving after that is a new edge (see `run_turn`).
        poll.registry()
            .register(
                &mut SourceFd(&io.socket().as_raw_fd()),
                LISTEN,
                Interest::READABLE,
            )
            .map_err(Error::Poll)?;
        let out = Out {
            tx: TxBatch::new(config.tx_batch, config.max_datagram, gso),
            queues,
            tally: Tally::default(),
            mode: config.mode,
            seal_buf: match config.mode {
                RelayMode::Serve => Box::default(),
                RelayMode::Connect => vec![0; MAX_RECORD_LEN].into_boxed_slice(),
            },
            pad_state: pad_seed(),
            upstream: UpstreamTx::new(gso),
            fair: FairForward::new(config.handshake_stage_bytes),
        };
        Ok(Self {
            out,
            io,
            table: SessionTable::with_capacity(max_sessions),
            pending: PendingTable::with_capacity(max_sessions, config.pending_bytes),
            early: EarlyRecords::new(
                max_sessions.min(EARLY_PEERS),
                MAX_RECORD_LEN,
                config.early_bytes,
            ),
            counters: Arc::new(ShardCounters::default()),
            progress: Arc::default(),
            refusals: Refusals::default(),
            poll,
            events: Events::with_capacity(1024),
            // Live sessions appear at most once; entries of sessions removed since the last
            // pass (at most one per slot) are dropped on the next pass: 2x never grows.
            ready: Vec::with_capacity(max_sessions.saturating_mul(2)),
            scratch: vec![0; MAX_UDP_PAYLOAD].into_boxed_slice(),
            config,
            next_sweep: None,
            received: false,
        })
    }

    /// Binds a shard socket on `listen` with [`bind_udp`] (SO_REUSEPORT, GRO, big buffers).
    pub fn bind(
        listen: SocketAddr,
        socket: &SocketConfig,
        queues: Arc<ShardQueues>,
        config: ShardConfig,
    ) -> Result<Self, Error> {
        Self::new(bind_udp(listen, socket)?.socket, queues, config)
    }

    /// The shard socket's address.
    pub fn local_addr(&self) -> Result<SocketAddr, Error> {
        Ok(self.io.local_addr()?)
    }

    /// The io backend in use.
    pub fn backend_kind(&self) -> BackendKind {
        self.io.kind()
    }

    /// The io layer (its counters, GSO state).
    pub fn io(&self) -> &UdpIo {
        &self.io
    }

    /// The live counters (shareable with a metrics thread).
    pub fn counters(&self) -> &Arc<ShardCounters> {
        &self.counters
    }

    /// When the last turn ended (shareable with a health check).
    pub fn progress(&self) -> &Arc<Progress> {
        &self.progress
    }

    /// A snapshot of the counters as of the end of the last turn.
    pub fn stats(&self) -> ShardStats {
        self.counters.snapshot()
    }

    /// The session table.
    pub fn sessions(&self) -> &SessionTable {
        &self.table
    }

    /// Runs turns until `stop` is set, reading the clock once per turn.
    pub fn run(&mut self, stop: &AtomicBool) -> Result<(), Error> {
        while !stop.load(Relaxed) {
            self.run_turn(Instant::now())?;
        }
        Ok(())
    }

    /// One loop turn at time `now`: apply control's commands; wait on the epoll set (up to
    /// [`ShardConfig::recv_wait`], and only when nothing is pending) and seal what the
    /// backend sent into the transmit batch; run the idle sweep when due; then flush the
    /// batch and receive one batch of datagrams (one `io_uring_enter` with io_uring) and
    /// handle it.
    pub fn run_turn(&mut self, now: Instant) -> Result<(), Error> {
        self.out.fair.pump(&self.out.queues);
        self.handle_commands(now);
        let idle = !self.received
            && self.out.tx.is_empty()
            && self.ready.is_empty()
            && !self.out.queues.has_commands();
        let wait = if idle {
            self.config.recv_wait
        } else {
            Duration::ZERO
        };
        self.poll_upstream(now, wait)?;
        let sweep_due = self.next_sweep.is_none_or(|at| now >= at);
        if sweep_due {
            self.sweep(now);
            self.next_sweep = Some(now + self.config.sweep_interval);
        }
        let Self {
            io,
            table,
            pending,
            early,
            out,
            poll,
            config,
            ..
        } = self;
        let batch = io.flush_and_poll_recv(&mut out.tx, Duration::ZERO)?;
        self.received = !batch.is_empty();
        for d in batch.iter_mut() {
            match config.mode {
                RelayMode::Serve => {
                    if out.upstream.needs_flush() {
                        out.upstream.flush(table, &mut out.tally);
                    }
                    relay::handle_datagram(table, early, out, now, d.source, d.payload);
                }
                RelayMode::Connect => {
                    let waiting = Waiting {
                        pending,
                        poll,
                        upstream: config.upstream,
                    };
                    handle_local(table, waiting, out, now, d.source, d.payload);
                }
            }
        }
        out.upstream.flush(table, &mut out.tally);
        out.fair.pump(&out.queues);
        let gauges = Gauges {
            sessions_active: self.table.len(),
            early_bytes: self.early.bytes(),
            pending_bytes: self.pending.bytes(),
            handshake_stage_bytes: self.out.fair.bytes(),
        };
        self.counters.absorb(&mut self.out.tally, gauges);
        self.progress.mark(now);
        Ok(())
    }

    fn handle_commands(&mut self, now: Instant) {
        // A transmit needs a batch slot: leave the rest queued for the next turn.
        while !self.out.tx.is_full() {
            let Some(command) = self.out.queues.poll_command() else {
                break;
            };
            self.out.tally.commands += 1;
            match command {
                ShardCommand::InstallKeys {
                    peer,
                    read,
                    write,
                    heartbeat,
                } => {
                    self.install(now, peer, read, write, heartbeat);
                }
                ShardCommand::Close { peer, reason } => {
                    if let Some(p) = self.pending.remove(&peer) {
                        self.out.tally.drop_pending += p.queued.len() as u64;
                    }
                    self.early.take(&peer);
                    let out = &mut self.out;
                    // Plaintext this turn staged for the session goes out before it closes.
                    out.upstream.flush(&mut self.table, &mut out.tally);
                    if let Some(mut session) = self.table.remove(&peer) {
                        send_close_notify(&mut session, out);
                        out.tally.sessions_closed += 1;
                        out.report(ControlInbound::SessionClosed {
                            peer,
                            reason: CloseReason::Closed(reason),
                            stats: session.counters,
                        });
                    }
                }
                ShardCommand::ExpectKeys { peer } => self.early.note(peer, now),
                ShardCommand::Transmit { peer, datagram } => {
                    self.transmit(peer, &datagram);
                    self.refusals.after_transmit(peer, &mut self.out);
                }
            }
        }
        self.refusals.end_turn(&mut self.out);
    }

    /// A handshake datagram from control: to the peer through the listen socket (serve), or
    /// to the server through the source's upstream socket (connect).
    fn transmit(&mut self, peer: SocketAddr, datagram: &[u8]) {
        let socket = match self.config.mode {
            RelayMode::Serve => {
                if self.out.tx.push(peer, datagram).is_ok() {
                    self.out.tally.datagrams_out += 1;
                    self.out.tally.bytes_out += datagram.len() as u64;
                } else {
                    self.out.tally.drop_tx_full += 1;
                }
                return;
            }
            RelayMode::Connect => match self.pending.get_mut(&peer) {
                Some(p) => &p.upstream,
                None => match self.table.find_mut(&peer) {
                    Some(s) => &s.upstream,
                    None => {
                        self.out.tally.drop_unknown_session += 1;
                        return;
                    }
                },
            },
        };
        match socket.send(datagram) {
            Ok(n) => {
                self.out.tally.upstream_datagrams_out += 1;
                self.out.tally.upstream_bytes_out += n as u64;
            }
            Err(_) => self.out.tally.upstream_send_errors += 1,
        }
    }

    fn install(
        &mut self,
        now: Instant,
        peer: SocketAddr,
        read: ReadKeys,
        write: WriteKeys,
        heartbeat: HeartbeatPolicy,
    ) {
        match self.try_install(now, peer, read, write, heartbeat) {
            Ok(queued) => {
                self.flush_queued(peer, queued);
                self.replay_early(now, peer);
            }
            Err(e) => {
                if let Some(p) = self.pending.remove(&peer) {
                    self.out.tally.drop_pending += p.queued.len() as u64;
                }
                self.out.tally.install_failed += 1;
                self.early.take(&peer);
                self.out.report(ControlInbound::SessionClosed {
                    peer,
                    reason: CloseReason::Rejected(e),
                    stats: Default::default(),
                });
            }
        }
    }

    /// Serve mode: opens the records the peer sent before its keys were installed.
    fn replay_early(&mut self, now: Instant, peer: SocketAddr) {
        let parked = self.early.take(&peer);
        let Some(id) = self.table.lookup(&peer) else {
            return;
        };
        let out = &mut self.out;
        for mut datagram in parked {
            out.tally.early_replayed += 1;
            relay::handle_protected(&mut self.table, id, out, now, &mut datagram);
        }
        out.upstream.flush(&mut self.table, &mut out.tally);
    }

    /// Connect mode: seals and sends what the source sent while its handshake ran (empty
    /// in serve mode).
    fn flush_queued(&mut self, peer: SocketAddr, queued: Vec<Vec<u8>>) {
        let Some(id) = self.table.lookup(&peer) else {
            return;
        };
        let out = &mut self.out;
        for plaintext in queued {
            if let Some(session) = self.table.session_mut(id) {
                relay::seal_record(session, out, ContentType::ApplicationData, &plaintext);
            }
        }
    }

    fn try_install(
        &mut self,
        now: Instant,
        peer: SocketAddr,
        read: ReadKeys,
        write: WriteKeys,
        heartbeat: HeartbeatPolicy,
    ) -> Result<Vec<Vec<u8>>, InstallError> {
        // RFC 6347 §4.1: epoch 0 is the initial null-protection state; keys start at 1.
        if read.epoch == 0 || write.epoch == 0 {
            return Err(InstallError::EpochZero);
        }
        let window = ReplayWindow::try_new(read.replay_window)?;
        let opener = Opener::new(read.epoch, read.key, window);
        let sealer = Sealer::new(write.epoch, write.key, write.next_seq)?;
        if let Some(session) = self.table.find_mut(&peer) {
            session.rekey(opener, sealer);
            session.heartbeat = heartbeat;
            self.out.tally.sessions_rekeyed += 1;
            return Ok(Vec::new());
        }
        if self.table.len() >= self.table.capacity() {
            return Err(InstallError::TableFull {
                capacity: self.table.capacity(),
            });
        }
        let (upstream, queued) = match self.config.mode {
            RelayMode::Serve => match connect_upstream(self.config.upstream) {
                Ok(socket) => (socket, Vec::new()),
                Err(e) => return Err(self.refusals.refuse(peer, sealer, &e, &mut self.out)),
            },
            // The handshake ran over the source's own socket: the server knows its port.
            RelayMode::Connect => match self.pending.remove(&peer) {
                Some(p) => {
                    // Re-registered below under the slot's token.
                    let _ = self
                        .poll
                        .registry()
                        .deregister(&mut SourceFd(&p.upstream.as_raw_fd()));
                    (p.upstream, p.queued)
                }
                None => return Err(InstallError::Upstream(std::io::ErrorKind::NotFound)),
            },
        };
        let mut session = Session::new(peer, opener, sealer, upstream, now);
        session.heartbeat = heartbeat;
        let (id, _) = self
            .table
            .insert(session)
            .map_err(|_| InstallError::TableFull {
                capacity: self.table.capacity(),
            })?;
        let registered = match self.table.session(id) {
            Some(s) => self.poll.registry().register(
                &mut SourceFd(&s.upstream.as_raw_fd()),
                Token(id.to_token()),
                Interest::READABLE,
            ),
            None => Ok(()),
        };
        if let Err(e) = registered {
            self.table.remove(&peer);
            return Err(InstallError::Upstream(e.kind()));
        }
        self.out.tally.sessions_installed += 1;
        if self.config.mode == RelayMode::Connect {
            // Datagrams that arrived between the deregistration and now raised no edge.
            if let Some(s) = self.table.session_mut(id)
                && !s.ready
            {
                s.ready = true;
                self.ready.push(id);
            }
        }
        Ok(queued)
    }

    /// Collects readiness (one `epoll_wait` of at most `wait`) and relays what the ready
    /// upstream sockets hold, within each session's budget and the batch's room.
    fn poll_upstream(&mut self, now: Instant, wait: Duration) -> Result<(), Error> {
        match self.poll.poll(&mut self.events, Some(wait)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Error::Poll(e)),
        }
        for event in self.events.iter() {
            if event.token() == LISTEN {
                continue; // the receive below runs every turn
            }
            if event.token().0 & PENDING_TOKEN_BIT != 0 {
                if let Some(peer) = self.pending.peer_of(event.token().0) {
                    drain_waiting(&self.pending, &mut self.out, peer, &mut self.scratch);
                }
                continue;
            }
            let id = SlotId::from_token(event.token().0);
            if let Some(session) = self.table.session_mut(id)
                && !session.ready
            {
                session.ready = true;
                self.ready.push(id);
            }
        }
        let out = &mut self.out;
        let mut i = 0;
        while i < self.ready.len() {
            let id = self.ready[i];
            let drained = relay::drain_upstream(
                &mut self.table,
                id,
                out,
                now,
                &mut self.scratch,
                self.config.upstream_budget.max(1),
            );
            match drained {
                Drained::More => i += 1,
                Drained::Empty => {
                    if let Some(session) = self.table.session_mut(id) {
                        session.ready = false;
                    }
                    self.ready.swap_remove(i);
                }
            }
        }
        Ok(())
    }

    /// Keepalive (RFC 6520 §3): a peer silent for `interval` gets a HeartbeatRequest; an
    /// unanswered one is resent with the same payload each `interval` while the peer stays
    /// silent, and after [`KEEPALIVE_PROBES`] sends the session is closed. At most one
    /// request is in flight per session.
    fn keepalive(&mut self, now: Instant, interval: Duration) {
        let out = &mut self.out;
        for index in 0..self.table.capacity() {
            let Some((_, session)) = self.table.slot_mut(index) else {
                continue;
            };
            if !session.heartbeat.probe
                || now.saturating_duration_since(session.last_peer_activity) < interval
            {
                continue;
            }
            let payload = match session.probe {
                None => {
                    session.next_probe = session.next_probe.wrapping_add(1);
                    session.probe = Some(Probe {
                        payload: session.next_probe,
                        sent: 0,
                        at: now,
                    });
                    session.next_probe
                }
                Some(p) if now.saturating_duration_since(p.at) < interval => continue,
                Some(p) if p.sent >= KEEPALIVE_PROBES => {
                    let peer = session.peer;
                    if let Some(mut session) = self.table.remove(&peer) {
                        send_close_notify(&mut session, out);
                        out.tally.sessions_keepalive_timeout += 1;
                        out.report(ControlInbound::SessionClosed {
                            peer,
                            reason: CloseReason::KeepaliveTimeout,
                            stats: session.counters,
                        });
                    }
                    continue;
                }
                Some(p) => p.payload,
            };
            if let Some(p) = &mut session.probe {
                p.sent += 1;
                p.at = now;
            }
            relay::send_heartbeat_request(session, out, payload);
        }
    }

    fn sweep(&mut self, now: Instant) {
        self.out.tally.drop_pending += self.pending.expire(now) as u64;
        self.out.tally.drop_unknown_session += self.early.expire(now) as u64;
        if let Some(interval) = self.config.keepalive {
            self.keepalive(now, interval);
        }
        let out = &mut self.out;
        self.table
            .expire_idle(now, self.config.idle_timeout, |mut session| {
                send_close_notify(&mut session, out);
                out.tally.sessions_expired += 1;
                out.report(ControlInbound::SessionClosed {
                    peer: session.peer,
                    reason: CloseReason::IdleTimeout,
                    stats: session.counters,
                });
            });
    }
}

/// RFC 5246 §7.2.1: close_notify before closing the write side.
fn send_close_notify(session: &mut Session, out: &mut Out) {
    relay::seal_record(
        session,
        out,
        ContentType::Alert,
        &Alert::close_notify().to_bytes(),
    );
}

/// What the connect path needs to make a source wait for its handshake.
struct Waiting<'a> {
    pending: &'a mut PendingTable,
    poll: &'a Poll,
    upstream: SocketAddr,
}

/// Connect mode: one plaintext datagram from local `source`: sealed to the server when the
/// source has a session, queued while its handshake runs, or the start of one.
fn handle_local(
    table: &mut SessionTable,
    waiting: Waiting<'_>,
    out: &mut Out,
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
    if waiting.pending.get(&source).is_some() {
        if !waiting.pending.queue(&source, plaintext) {
            out.tally.drop_pending += 1;
        }
        return;
    }
    if waiting.pending.is_full() || table.len() + waiting.pending.len() >= table.capacity() {
        out.tally.drop_pending += 1;
        return;
    }
    let upstream = match connect_upstream(waiting.upstream) {
        Ok(socket) => socket,
        Err(e) => return refuse::refuse_source(&e, &mut out.tally),
    };
    let token = waiting.pending.next_token();
    if waiting
        .poll
        .registry()
        .register(
            &mut SourceFd(&upstream.as_raw_fd()),
            Token(token),
            Interest::READABLE,
        )
        .is_err()
    {
        out.tally.drop_pending += 1;
        return;
    }
    waiting
        .pending
        .insert(source, Pending::new(upstream, token, now));
    if !waiting.pending.queue(&source, plaintext) {
        out.tally.drop_pending += 1;
    }
    out.tally.handshakes_requested += 1;
    out.report(ControlInbound::Open { peer: source });
}

/// Connect mode: every datagram the server sent to a waiting source goes to control (its
/// handshake engine). Edge-triggered: read until the socket is empty.
fn drain_waiting(pending: &PendingTable, out: &mut Out, peer: SocketAddr, scratch: &mut [u8]) {
    let Some(p) = pending.get(&peer) else {
        return;
    };
    loop {
        match p.upstream.recv(scratch) {
            Ok(n) => {
                out.tally.upstream_datagrams_in += 1;
                out.tally.upstream_bytes_in += n as u64;
                out.forward(peer, scratch.get(..n).unwrap_or(&[]));
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
            // E.g. ECONNREFUSED (no server yet): reported once, counted; the socket stays
            // usable and the handshake retransmits.
            Err(_) => out.tally.upstream_recv_errors += 1,
        }
    }
}

/// A seed for heartbeat padding: std's per-process random hash keys.
fn pad_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(0x6865_6172_7462_6561);
    h.finish()
}
