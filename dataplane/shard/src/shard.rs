//! [`Shard`]: one core's socket, io backend, session table and loop turn.

use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::{Duration, Instant};

use dataplane::record::{ContentType, Opener, ReplayWindow, Sealer};
use dtls_io::{BackendKind, IoConfig, SocketConfig, TxBatch, UdpIo, bind_udp};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};

use crate::Error;
use crate::counters::{ShardCounters, ShardStats, Tally};
use crate::queue::{
    CloseReason, ControlInbound, InstallError, ReadKeys, ShardCommand, ShardQueues, WriteKeys,
};
use crate::relay::{self, Drained, Out};
use crate::session::{Session, SessionTable, SlotId, connect_upstream};

/// Largest UDP payload (IPv4): the upstream receive buffer size.
const MAX_UDP_PAYLOAD: usize = 65_507;

/// How a shard is set up.
#[derive(Debug, Clone, Copy)]
pub struct ShardConfig {
    /// Where each session's plaintext goes (one upstream socket per session).
    pub backend: SocketAddr,
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
}

impl ShardConfig {
    /// Defaults for relaying to `backend`.
    pub fn new(backend: SocketAddr) -> Self {
        Self {
            backend,
            io: IoConfig::default(),
            max_sessions: 4096,
            idle_timeout: Duration::from_secs(300),
            sweep_interval: Duration::from_secs(1),
            tx_batch: 64,
            max_datagram: 1472,
            recv_wait: Duration::from_millis(1),
            upstream_budget: 16,
        }
    }
}

/// One shard: owns its socket and io backend, its session table with one upstream socket per
/// session, an epoll set over those upstream sockets, and a transmit batch. Not `Send` (the
/// io backend is single-issuer): build it on the thread that runs it.
#[derive(Debug)]
pub struct Shard {
    io: UdpIo,
    tx: TxBatch,
    table: SessionTable,
    queues: Arc<ShardQueues>,
    counters: Arc<ShardCounters>,
    tally: Tally,
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
        Ok(Self {
            tx: TxBatch::new(config.tx_batch, config.max_datagram, io.gso()),
            io,
            table: SessionTable::with_capacity(max_sessions),
            queues,
            counters: Arc::new(ShardCounters::default()),
            tally: Tally::default(),
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
        self.handle_commands(now);
        let idle = !self.received
            && self.tx.is_empty()
            && self.ready.is_empty()
            && !self.queues.has_commands();
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
            tx,
            table,
            queues,
            tally,
            ..
        } = self;
        let batch = io.flush_and_poll_recv(tx, Duration::ZERO)?;
        self.received = !batch.is_empty();
        let mut out = Out { tx, queues, tally };
        for d in batch.iter_mut() {
            relay::handle_datagram(table, &mut out, now, d.source, d.payload);
        }
        self.counters.absorb(&mut self.tally, self.table.len());
        Ok(())
    }

    fn handle_commands(&mut self, now: Instant) {
        // A transmit needs a batch slot: leave the rest queued for the next turn.
        while !self.tx.is_full() {
            let Some(command) = self.queues.poll_command() else {
                break;
            };
            self.tally.commands += 1;
            match command {
                ShardCommand::InstallKeys { peer, read, write } => {
                    self.install(now, peer, read, write);
                }
                ShardCommand::Close { peer } => {
                    let mut out = Out {
                        tx: &mut self.tx,
                        queues: &self.queues,
                        tally: &mut self.tally,
                    };
                    if let Some(mut session) = self.table.remove(&peer) {
                        send_close_notify(&mut session, &mut out);
                        out.tally.sessions_closed += 1;
                    }
                }
                ShardCommand::Transmit { peer, datagram } => {
                    if self.tx.push(peer, &datagram).is_ok() {
                        self.tally.datagrams_out += 1;
                        self.tally.bytes_out += datagram.len() as u64;
                    } else {
                        self.tally.drop_tx_full += 1;
                    }
                }
            }
        }
    }

    fn install(&mut self, now: Instant, peer: SocketAddr, read: ReadKeys, write: WriteKeys) {
        match self.try_install(now, peer, read, write) {
            Ok(()) => {}
            Err(e) => {
                self.tally.install_failed += 1;
                let message = ControlInbound::SessionClosed {
                    peer,
                    reason: CloseReason::Rejected(e),
                };
                if self.queues.push_inbound(message).is_err() {
                    self.tally.drop_queue_full += 1;
                }
            }
        }
    }

    fn try_install(
        &mut self,
        now: Instant,
        peer: SocketAddr,
        read: ReadKeys,
        write: WriteKeys,
    ) -> Result<(), InstallError> {
        // RFC 6347 §4.1: epoch 0 is the initial null-protection state; keys start at 1.
        if read.epoch == 0 || write.epoch == 0 {
            return Err(InstallError::EpochZero);
        }
        let window = ReplayWindow::try_new(read.replay_window)?;
        let opener = Opener::new(read.epoch, read.key, window);
        let sealer = Sealer::new(write.epoch, write.key, write.next_seq)?;
        if let Some(session) = self.table.find_mut(&peer) {
            session.rekey(opener, sealer);
            self.tally.sessions_rekeyed += 1;
            return Ok(());
        }
        if self.table.len() >= self.table.capacity() {
            return Err(InstallError::TableFull {
                capacity: self.table.capacity(),
            });
        }
        let upstream =
            connect_upstream(self.config.backend).map_err(|e| InstallError::Upstream(e.kind()))?;
        let session = Session::new(peer, opener, sealer, upstream, now);
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
        self.tally.sessions_installed += 1;
        Ok(())
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
            let id = SlotId::from_token(event.token().0);
            if let Some(session) = self.table.session_mut(id)
                && !session.ready
            {
                session.ready = true;
                self.ready.push(id);
            }
        }
        let mut out = Out {
            tx: &mut self.tx,
            queues: &self.queues,
            tally: &mut self.tally,
        };
        let mut i = 0;
        while i < self.ready.len() {
            let id = self.ready[i];
            let drained = relay::drain_upstream(
                &mut self.table,
                id,
                &mut out,
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

    fn sweep(&mut self, now: Instant) {
        let mut out = Out {
            tx: &mut self.tx,
            queues: &self.queues,
            tally: &mut self.tally,
        };
        self.table
            .expire_idle(now, self.config.idle_timeout, |mut session| {
                send_close_notify(&mut session, &mut out);
                out.tally.sessions_expired += 1;
                out.report(ControlInbound::SessionClosed {
                    peer: session.peer,
                    reason: CloseReason::IdleTimeout,
                });
            });
    }
}

/// RFC 5246 §7.2.1: close_notify before closing the write side.
fn send_close_notify(session: &mut Session, out: &mut Out<'_>) {
    // AlertLevel warning(1), AlertDescription close_notify(0).
    relay::seal_to_peer(session, out, ContentType::Alert, &[1, 0]);
}
