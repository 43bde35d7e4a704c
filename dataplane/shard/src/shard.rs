//! [`Shard`]: the driver of one core's [`ShardCore`]: its socket, io backend, the upstream
//! sockets of its sessions, one epoll set and the loop turn.
//!
//! The driver does every I/O and reads the clock once per turn; what to do with each
//! datagram, command and timer is the core's.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::os::fd::{AsFd, AsRawFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::{Duration, Instant};

use dtls_io::{
    BackendKind, ConnectedSend, ConnectedSent, IoConfig, IoCounters, SocketConfig, TxBatch, UdpIo,
    XdpConfig, XdpFilter, XdpIo, XdpProgram, bind_udp, enable_gro, recv_segments, send_segments,
};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token, Waker};

use crate::Error;
use crate::core::{Effects, FlowRef, OpenFlow, ShardCore};
use crate::counters::{ShardCounters, ShardStats};
use crate::progress::Progress;
use crate::queue::ShardQueues;
use crate::refuse::TransparentSource;
use crate::relay::RelayMode;
use crate::session::{SessionTable, SlotId};
use crate::snapshot::SessionSnapshots;

/// The upstream receive buffer size: the largest UDP GRO batch (64 KiB), which also holds
/// the largest single UDP payload.
const MAX_UDP_PAYLOAD: usize = 65_536;

/// How a shard is set up (the core uses all but `upstream` and `io`, the driver's).
#[derive(Debug, Clone, Copy)]
pub struct ShardConfig {
    /// Which side of DTLS the listen socket is on.
    pub mode: RelayMode,
    /// Where each session's upstream socket is connected: the plaintext backend (serve) or
    /// the DTLS server (connect).
    pub upstream: SocketAddr,
    /// Which address each upstream socket sends from (serve mode; connect ignores it).
    pub upstream_source: UpstreamSource,
    /// The io backend and its batch sizes.
    pub io: IoConfig,
    /// Most sessions (the table and upstream ready list are sized for it).
    pub max_sessions: usize,
    /// A session with no traffic either way for this long is closed.
    pub idle_timeout: Duration,
    /// How often the sweep looks at each session (idle expiry, keepalive, path checks):
    /// each turn walks the share of the table's slots due since the last turn, a whole pass
    /// per interval; waiting sources and parked records expire once per interval.
    pub sweep_interval: Duration,
    /// Most datagrams sent per loop turn.
    pub tx_batch: usize,
    /// Largest datagram sent to a peer; larger backend datagrams are dropped and counted.
    pub max_datagram: usize,
    /// Longest sleep of an idle turn. Datagrams on the shard socket, backend replies and
    /// control's commands wake it at once (one epoll set watches the sockets and the
    /// eventfd a command signals); what nothing signals (the stop flag, a snapshot
    /// request, another shard's handoff) waits at most this long.
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
    /// Length of the connection IDs this shard's sessions were issued (0: none). A DTLS
    /// 1.3 record from an address without a session whose header carries a CID is looked
    /// up by its first `cid_len` bytes (RFC 9147 §9: the peer may have moved).
    pub cid_len: usize,
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
            upstream_source: UpstreamSource::Ephemeral,
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
            cid_len: 0,
        }
    }
}

/// One shard: owns its socket and io backend, the [`ShardCore`] with its session table, one
/// upstream socket per session (held by the core as the session's flow), an epoll set over
/// those upstream sockets, and the core's output batches. Not `Send` (the io backend is
/// single-issuer): build it on the thread that runs it.
#[derive(Debug)]
pub struct Shard {
    io: ListenIo,
    core: ShardCore<UdpSocket>,
    fx: Effects,
    /// Opens upstream sockets for the core.
    upstream: Upstream,
    counters: Arc<ShardCounters>,
    /// Marked once per turn, for the daemon's health check.
    progress: Arc<Progress>,
    /// Filled at the end of a turn when another thread asked (`dtlsd status`).
    snapshots: Arc<SessionSnapshots>,
    poll: Poll,
    events: Events,
    /// Sessions whose upstream socket may still hold datagrams (epoll is edge-triggered).
    ready: Vec<SlotId>,
    /// Per slot: 1 + the generation of the id on the ready list, 0 when none is.
    on_ready: Vec<u32>,
    scratch: Box<[u8]>,
    config: ShardConfig,
    /// AF_XDP: the last turn's receive returned datagrams (there may be more: do not
    /// sleep). A socket shard asks its io instead (`UdpIo::recv_may_hold_more`), so that a
    /// receive that found the socket empty lets the next turn sleep at once: every datagram
    /// after it raises a new readiness edge, and an extra turn without waiting (an
    /// `epoll_wait` and a receive that find nothing) cost two kernel calls per datagram at
    /// low load.
    xdp_received: bool,
    /// When an AF_XDP shard last read the kernel's socket statistics.
    xdp_stats_at: Instant,
    /// AF_XDP: the listen socket may hold datagrams the kernel delivered (its edge was seen
    /// and it has not been read empty since).
    kernel_ready: bool,
}

/// What handing one received datagram to the core needs, borrowed apart from the io.
struct Received<'a> {
    core: &'a mut ShardCore<UdpSocket>,
    fx: &'a mut Effects,
    upstream: &'a mut Upstream,
    poll: &'a Poll,
    ready: &'a mut Vec<SlotId>,
    on_ready: &'a mut [u32],
    now: Instant,
}

impl Received<'_> {
    fn datagram(&mut self, source: SocketAddr, payload: &mut [u8]) {
        if self.fx.flows.needs_flush() {
            self.core.flush_flows(self.fx, send_flow);
        }
        self.core
            .handle_datagram(self.now, source, payload, self.fx, self.upstream);
        if !self.fx.opened.is_empty() {
            register_opened(self.core, self.fx, self.poll, self.ready, self.on_ready);
        }
    }
}

/// Where an AF_XDP shard takes its datagrams from ([`Shard::with_xdp`]).
#[derive(Debug, Clone)]
pub struct XdpListen {
    /// The interface whose queue this shard serves (in the shard's network namespace).
    pub interface: String,
    /// The receive queue: the shard's index.
    pub queue: u32,
    /// The program already attached to the interface by the first shard; `None`: attach
    /// it (with an XSKMAP of `queues` slots).
    pub program: Option<Arc<XdpProgram>>,
    /// XSKMAP slots when attaching (at least the number of shards).
    pub queues: u32,
    /// Skip the zero-copy attempt.
    pub force_copy: bool,
}

/// The shard's listen-side datagram I/O: the UDP socket through `dtls-io`'s socket
/// backends, or an AF_XDP socket on one interface queue. In AF_XDP mode the UDP socket is
/// still bound on the listen address: it holds the port, the kernel keeps its path MTU, what
/// the XDP program passes to the kernel for our port (IP fragments, reassembled) arrives on
/// it and is read (token `KERNEL`), and replies to peers with no learned MAC leave through
/// it.
#[derive(Debug)]
enum ListenIo {
    Socket(UdpIo),
    Xdp { xdp: Box<XdpIo>, socket: UdpSocket },
}

impl ListenIo {
    fn flush(&mut self, tx: &mut TxBatch) -> Result<(), dtls_io::Error> {
        match self {
            Self::Socket(io) => io.flush(tx),
            Self::Xdp { xdp, .. } => xdp.flush(tx),
        }
    }

    fn socket(&self) -> &UdpSocket {
        match self {
            Self::Socket(io) => io.socket(),
            Self::Xdp { socket, .. } => socket,
        }
    }

    fn counters(&self) -> &Arc<IoCounters> {
        match self {
            Self::Socket(io) => io.counters(),
            Self::Xdp { xdp, .. } => xdp.counters(),
        }
    }
}

/// The epoll token of the shard socket (no flow token reaches it: slot indexes are below
/// `u32::MAX` and pending tokens below `usize::MAX`).
const LISTEN: Token = Token(usize::MAX);
/// The epoll token of the eventfd control signals when it queues a command for a sleeping
/// shard ([`ShardQueues::set_waker`]).
const WAKE: Token = Token(usize::MAX - 1);
/// The epoll token of the listen socket of an AF_XDP shard (see [`Shard::with_xdp`]).
const KERNEL: Token = Token(usize::MAX - 2);

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
    // A peer that sends GSO runs (the serve side toward connect, a batching backend) lands
    // as one receive per run instead of one per datagram; best effort.
    enable_gro(&socket);
    Ok(socket)
}

/// Which address a serve-mode session's upstream socket sends from, so which address the
/// backend sees.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum UpstreamSource {
    /// This host's own, on an ephemeral port ([`connect_upstream`]).
    #[default]
    Ephemeral,
    /// The client's address and port (IP_TRANSPARENT / IPV6_TRANSPARENT,
    /// [`dtls_io::connect_transparent`]): an unmodified backend sees the real client. A
    /// bind the kernel refuses refuses that session alone, counted as
    /// `sessions_refused_transparent`. The socket keeps the address of the handshake: a
    /// client that moves later (a connection ID from a new address) is still the old one
    /// at the backend.
    Transparent,
}

/// A nonblocking socket bound to `client` (another host's address, IP_TRANSPARENT) and
/// connected to `backend`, with [`connect_upstream`]'s buffers; its errors marked as
/// [`TransparentSource`] unless they are a lack of descriptors.
pub fn connect_transparent_upstream(
    client: SocketAddr,
    backend: SocketAddr,
) -> io::Result<UdpSocket> {
    let socket = dtls_io::connect_transparent(client, backend).map_err(TransparentSource::wrap)?;
    dtls_io::set_buffer_sizes(&socket, UPSTREAM_BUFFER, UPSTREAM_BUFFER);
    enable_gro(&socket);
    Ok(socket)
}

/// The driver's [`OpenFlow`]: a socket connected to the shard's upstream, from an ephemeral
/// port or (serve, transparent) from the peer's own address.
#[derive(Debug, Clone, Copy)]
struct Upstream {
    to: SocketAddr,
    source: UpstreamSource,
    mode: RelayMode,
}

impl OpenFlow<UdpSocket> for Upstream {
    fn open_flow(&mut self, peer: SocketAddr) -> io::Result<UdpSocket> {
        match (self.mode, self.source) {
            (RelayMode::Serve, UpstreamSource::Transparent) => {
                connect_transparent_upstream(peer, self.to)
            }
            _ => connect_upstream(self.to),
        }
    }
}

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
        Self::build(ListenIo::Socket(io), gso, queues, config)
    }

    /// A shard whose client-facing datagrams go through an AF_XDP socket on queue
    /// `xdp.queue` of `xdp.interface` (see [`XdpListen`]); `socket` stays bound on the
    /// listen address. The program redirects UDP to the socket's port at its address
    /// (any address of the interface when the socket is bound to the wildcard); replies
    /// leave as Ethernet frames to the MAC their peer's datagrams came from (see
    /// `dtls_io::XdpIo`). What the program passes to the kernel for our port (IP fragments,
    /// reassembled by the kernel) is read from `socket` and served like the rest, and replies
    /// to a peer with no learned MAC leave through `socket`. Datagrams larger than the interface MTU are refused and counted
    /// in `send_errors` as the socket backends count EMSGSIZE.
    ///
    /// # Errors
    /// [`Error::Io`] with [`dtls_io::Error::Xdp`] naming why AF_XDP cannot be set up.
    pub fn with_xdp(
        socket: UdpSocket,
        queues: Arc<ShardQueues>,
        config: ShardConfig,
        xdp: &XdpListen,
    ) -> Result<Self, Error> {
        let local = socket
            .local_addr()
            .map_err(|source| dtls_io::Error::Socket {
                op: "getsockname",
                source,
            })?;
        socket
            .set_nonblocking(true)
            .map_err(|source| dtls_io::Error::Socket {
                op: "O_NONBLOCK",
                source,
            })?;
        let filter = XdpFilter {
            port: local.port(),
            v4: match local.ip() {
                std::net::IpAddr::V4(a) => Some(a),
                std::net::IpAddr::V6(_) => None,
            },
            v6: match local.ip() {
                std::net::IpAddr::V6(a) => Some(a),
                std::net::IpAddr::V4(_) => None,
            },
        };
        let mut cfg = XdpConfig::new(xdp.interface.clone(), filter);
        cfg.queue = xdp.queue;
        cfg.queues = xdp.queues.max(xdp.queue + 1);
        cfg.force_copy = xdp.force_copy;
        let mut io = match &xdp.program {
            Some(program) => XdpIo::with_program(&cfg, Arc::clone(program))?,
            None => XdpIo::new(&cfg)?,
        };
        io.set_kernel_socket(
            socket
                .try_clone()
                .map_err(|source| dtls_io::Error::Socket {
                    op: "dup of the listen socket",
                    source,
                })?,
        );
        // Each datagram is its own frame: no GSO toward peers, and none upstream either
        // (the kernel's acceptance on a socket is what vouches for it elsewhere).
        Self::build(
            ListenIo::Xdp {
                xdp: Box::new(io),
                socket,
            },
            false,
            queues,
            config,
        )
    }

    fn build(
        io: ListenIo,
        gso: bool,
        queues: Arc<ShardQueues>,
        config: ShardConfig,
    ) -> Result<Self, Error> {
        let listen_fd = match &io {
            ListenIo::Socket(io) => io.socket().as_raw_fd(),
            // The AF_XDP socket is readable when its RX ring holds frames.
            ListenIo::Xdp { xdp, .. } => xdp.fd(),
        };
        let max_sessions = config.max_sessions.max(1);
        let poll = Poll::new().map_err(Error::Poll)?;
        // Edge-triggered: a turn sleeps only after a receive came back empty, and every
        // datagram arriving after that is a new edge (see `run_turn`).
        poll.registry()
            .register(&mut SourceFd(&listen_fd), LISTEN, Interest::READABLE)
            .map_err(Error::Poll)?;
        if let ListenIo::Xdp { xdp, .. } = &io
            && let Some(fd) = xdp.kernel_fd()
        {
            poll.registry()
                .register(&mut SourceFd(&fd), KERNEL, Interest::READABLE)
                .map_err(Error::Poll)?;
        }
        // Control's commands (keys of a new session, a flight to send) end an idle wait at
        // once instead of after `recv_wait`.
        queues.set_waker(Waker::new(poll.registry(), WAKE).map_err(Error::Poll)?);
        Ok(Self {
            core: ShardCore::new(queues, config, pad_seed(), &rrc_key()),
            fx: Effects::new(config.tx_batch, config.max_datagram, gso),
            upstream: Upstream {
                to: config.upstream,
                source: config.upstream_source,
                mode: config.mode,
            },
            io,
            counters: Arc::new(ShardCounters::default()),
            progress: Arc::default(),
            snapshots: Arc::default(),
            poll,
            events: Events::with_capacity(1024),
            // Live sessions appear at most once; entries of sessions removed since the last
            // pass (at most one per slot) are dropped on the next pass: 2x never grows.
            ready: Vec::with_capacity(max_sessions.saturating_mul(2)),
            on_ready: vec![0; max_sessions],
            scratch: vec![0; MAX_UDP_PAYLOAD].into_boxed_slice(),
            config,
            xdp_received: false,
            xdp_stats_at: Instant::now(),
            kernel_ready: true,
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
        self.io.socket().local_addr().map_err(|source| {
            Error::Io(dtls_io::Error::Socket {
                op: "getsockname",
                source,
            })
        })
    }

    /// The io backend in use.
    pub fn backend_kind(&self) -> BackendKind {
        match &self.io {
            ListenIo::Socket(io) => io.kind(),
            ListenIo::Xdp { .. } => BackendKind::Xdp,
        }
    }

    /// The socket io layer (its counters, GSO state); `None` for an AF_XDP shard.
    pub fn io(&self) -> Option<&UdpIo> {
        match &self.io {
            ListenIo::Socket(io) => Some(io),
            ListenIo::Xdp { .. } => None,
        }
    }

    /// The AF_XDP socket of an AF_XDP shard (its mode, program, counters).
    pub fn xdp(&self) -> Option<&XdpIo> {
        match &self.io {
            ListenIo::Xdp { xdp, .. } => Some(xdp),
            ListenIo::Socket(_) => None,
        }
    }

    /// The listen socket (read only with the socket backends; bound in both).
    pub fn socket(&self) -> &UdpSocket {
        self.io.socket()
    }

    /// The listen-side io counters, whichever the backend (shareable with a metrics
    /// thread; the `xdp_*` fields move only on an AF_XDP shard).
    pub fn io_counters(&self) -> &Arc<IoCounters> {
        self.io.counters()
    }

    /// The live counters (shareable with a metrics thread).
    pub fn counters(&self) -> &Arc<ShardCounters> {
        &self.counters
    }

    /// When the last turn ended (shareable with a health check).
    pub fn progress(&self) -> &Arc<Progress> {
        &self.progress
    }

    /// Where this shard publishes its sessions when asked (shareable with an admin thread).
    pub fn snapshots(&self) -> &Arc<SessionSnapshots> {
        &self.snapshots
    }

    /// A snapshot of the counters as of the end of the last turn.
    pub fn stats(&self) -> ShardStats {
        self.counters.snapshot()
    }

    /// The session table.
    pub fn sessions(&self) -> &SessionTable<UdpSocket> {
        self.core.sessions()
    }

    /// Runs turns until `stop` is set, reading the clock once per turn.
    pub fn run(&mut self, stop: &AtomicBool) -> Result<(), Error> {
        while !stop.load(Relaxed) {
            self.run_turn(Instant::now())?;
        }
        Ok(())
    }

    /// One loop turn at time `now`: apply control's commands; wait on the epoll set (up to
    /// [`ShardConfig::recv_wait`], and only when nothing is pending) and hand what the
    /// upstream sockets hold to the core; run the core's sweep when due; then flush the
    /// batch and receive one batch of datagrams (one `io_uring_enter` with io_uring), hand
    /// each to the core, and send what it staged for upstream sockets.
    pub fn run_turn(&mut self, now: Instant) -> Result<(), Error> {
        self.core.pump();
        self.handle_commands(now);
        let idle = self.may_sleep();
        // Asleep only once no command is waiting: a command pushed from then on signals
        // the waker (one eventfd write), which ends the wait.
        let wait = if idle && self.core.queues().prepare_sleep() {
            self.config.recv_wait
        } else {
            Duration::ZERO
        };
        let polled = self.poll_upstream(now, wait);
        self.core.queues().woke();
        polled?;
        self.core.handle_timeout(now, &mut self.fx);
        self.register_opened();
        self.handle_handoffs(now)?;
        let mut rx = Received {
            core: &mut self.core,
            fx: &mut self.fx,
            upstream: &mut self.upstream,
            poll: &self.poll,
            ready: &mut self.ready,
            on_ready: &mut self.on_ready,
            now,
        };
        match &mut self.io {
            ListenIo::Socket(io) => {
                let batch = io.flush_and_poll_recv(&mut rx.fx.net, Duration::ZERO)?;
                for d in batch.iter_mut() {
                    rx.datagram(d.source, d.payload);
                }
            }
            ListenIo::Xdp { xdp, .. } => {
                xdp.flush(&mut rx.fx.net)?;
                let n = xdp.poll_recv(Duration::ZERO)?;
                self.xdp_received = n > 0;
                for i in 0..n {
                    if let Some(d) = xdp.datagram_mut(i) {
                        rx.datagram(d.source, d.payload);
                    }
                }
                // What the program passed to the kernel for our port, a batch at most per
                // turn (the flag stays up while more may wait).
                if self.kernel_ready {
                    let mut read = 0;
                    while read < self.config.io.batch.max(1) {
                        let Some((len, source)) = xdp.recv_kernel(&mut self.scratch)? else {
                            self.kernel_ready = false;
                            break;
                        };
                        rx.datagram(source, &mut self.scratch[..len]);
                        read += 1;
                    }
                    self.xdp_received |= read > 0;
                }
                if now.duration_since(self.xdp_stats_at) >= self.config.sweep_interval {
                    self.xdp_stats_at = now;
                    xdp.refresh_kernel_stats();
                }
            }
        }
        flush_flows(&mut self.core, &mut self.fx, &mut self.io)?;
        self.core.pump();
        self.core.publish(&self.counters);
        if self.snapshots.is_requested() {
            self.snapshots
                .publish(|rows| self.core.session_views(now, rows));
        }
        self.progress.mark(now);
        Ok(())
    }

    /// Whether a turn starting now may wait on the epoll set (up to
    /// [`ShardConfig::recv_wait`]): the last receive left nothing behind, nothing is staged
    /// to send, no upstream socket is left with datagrams, no command or hand-off waits.
    /// What arrives while it waits ends the wait (a datagram, a reply, a command's wake-up).
    pub fn may_sleep(&self) -> bool {
        let listen_more = match &self.io {
            ListenIo::Socket(io) => io.recv_may_hold_more(),
            ListenIo::Xdp { .. } => self.xdp_received,
        };
        !listen_more
            && self.fx.net.is_empty()
            && self.ready.is_empty()
            && !self.core.queues().has_commands()
            && self.core.queues().handoffs().is_empty()
    }

    fn handle_commands(&mut self, now: Instant) {
        // A transmit needs a batch slot: leave the rest queued for the next turn.
        while !self.fx.net.is_full() {
            let Some(command) = self.core.queues().poll_command() else {
                break;
            };
            self.core
                .handle_command(now, command, &mut self.fx, &mut self.upstream);
            self.register_opened();
        }
        self.core.end_commands(&mut self.fx);
    }

    /// Records other shards received for this shard's sessions, as many as the transmit
    /// batch has room to answer.
    fn handle_handoffs(&mut self, now: Instant) -> Result<(), Error> {
        while !self.fx.net.is_full() {
            let Some(mut handoff) = self.core.queues().handoffs().pop() else {
                break;
            };
            if self.fx.flows.needs_flush() {
                flush_flows(&mut self.core, &mut self.fx, &mut self.io)?;
            }
            self.core
                .handle_handoff(now, handoff.source, &mut handoff.datagram, &mut self.fx);
        }
        Ok(())
    }

    /// Serve mode: hand records under CIDs naming other shards to them (see
    /// [`crate::Handoffs`]).
    pub fn set_handoffs(&mut self, handoffs: crate::Handoffs) {
        self.core.set_handoffs(handoffs);
    }

    fn register_opened(&mut self) {
        register_opened(
            &mut self.core,
            &mut self.fx,
            &self.poll,
            &mut self.ready,
            &mut self.on_ready,
        );
    }

    /// Collects readiness (one `epoll_wait` of at most `wait`) and hands what the ready
    /// upstream sockets hold to the core, within each session's budget and the batch's room.
    fn poll_upstream(&mut self, now: Instant, wait: Duration) -> Result<(), Error> {
        match self.poll.poll(&mut self.events, Some(wait)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Error::Poll(e)),
        }
        for event in self.events.iter() {
            if event.token() == KERNEL {
                self.kernel_ready = true;
                continue;
            }
            if event.token() == LISTEN || event.token() == WAKE {
                continue; // the receive below runs every turn; commands at the next
            }
            match FlowRef::from_token(event.token().0) {
                flow @ FlowRef::Pending(_) => {
                    drain(
                        &mut self.core,
                        &mut self.fx,
                        &mut self.io,
                        flow,
                        now,
                        &mut self.scratch,
                        usize::MAX,
                    )?;
                }
                FlowRef::Session(id) => mark_ready(&mut self.ready, &mut self.on_ready, id),
            }
        }
        let budget = self.config.upstream_budget.max(1);
        let mut i = 0;
        while i < self.ready.len() {
            let id = self.ready[i];
            let flow = FlowRef::Session(id);
            match drain(
                &mut self.core,
                &mut self.fx,
                &mut self.io,
                flow,
                now,
                &mut self.scratch,
                budget,
            )? {
                Drained::More => i += 1,
                Drained::Empty => {
                    if let Some(mark) = self.on_ready.get_mut(id.index())
                        && *mark == id.generation() + 1
                    {
                        *mark = 0;
                    }
                    self.ready.swap_remove(i);
                }
            }
        }
        Ok(())
    }
}

/// Puts session `id` on the ready list unless it is there already.
fn mark_ready(ready: &mut Vec<SlotId>, on_ready: &mut [u32], id: SlotId) {
    if let Some(mark) = on_ready.get_mut(id.index())
        && *mark != id.generation() + 1
    {
        *mark = id.generation() + 1;
        ready.push(id);
    }
}

/// Registers the flows the core opened (or moved) with the epoll set. A moved flow (a
/// waiting source's socket that became its session's) is re-registered under its new
/// token; a session's flow is put on the ready list, since datagrams that arrived before
/// raised no edge under that token. A flow that cannot be registered is abandoned.
fn register_opened(
    core: &mut ShardCore<UdpSocket>,
    fx: &mut Effects,
    poll: &Poll,
    ready: &mut Vec<SlotId>,
    on_ready: &mut [u32],
) {
    while let Some(flow) = fx.opened.pop() {
        let Some(socket) = core.flow(flow) else {
            continue;
        };
        let fd = socket.as_raw_fd();
        let token = Token(flow.to_token());
        let registry = poll.registry();
        let registered = match registry.register(&mut SourceFd(&fd), token, Interest::READABLE) {
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                registry.reregister(&mut SourceFd(&fd), token, Interest::READABLE)
            }
            other => other,
        };
        match (registered, flow) {
            (Err(e), _) => core.abandon_flow(flow, e.kind(), fx),
            (Ok(()), FlowRef::Session(id)) => mark_ready(ready, on_ready, id),
            (Ok(()), FlowRef::Pending(_)) => {}
        }
    }
}

/// How a drain of one upstream socket ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Drained {
    /// The socket has nothing more (or the flow is gone): off the ready list.
    Empty,
    /// Budget or transmit batch exhausted: stay on the ready list for the next turn.
    More,
}

/// Hands up to `budget` datagrams from `flow`'s socket to the core (a GRO receive is
/// handed over whole, so the budget may be passed by one receive's datagrams). Edge-
/// triggered: a waiting source's socket is read until it is empty (its datagrams only go to
/// control). Upstream sockets have UDP_GRO on: one receive may carry several datagrams of
/// the flow, cut apart here in order by the segment size the kernel reported; the transmit
/// batch is flushed in the middle of one when it fills, so no segment is lost to it.
fn drain(
    core: &mut ShardCore<UdpSocket>,
    fx: &mut Effects,
    io: &mut ListenIo,
    flow: FlowRef,
    now: Instant,
    scratch: &mut [u8],
    budget: usize,
) -> Result<Drained, Error> {
    let mut taken = 0;
    while taken < budget {
        if fx.net.is_full() {
            return Ok(Drained::More);
        }
        let Some(socket) = core.flow(flow) else {
            return Ok(Drained::Empty);
        };
        match recv_segments(socket, scratch) {
            Ok(received) if received.truncated => {
                taken += 1;
                core.flow_receive_failed();
            }
            Ok(received) => {
                taken += received.count();
                if received.segment.is_some() {
                    core.flow_gro_received();
                }
                for datagram in received.datagrams(scratch) {
                    if fx.net.is_full() {
                        io.flush(&mut fx.net)?;
                    }
                    core.handle_flow_datagram(now, flow, datagram, fx);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Drained::Empty),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            // E.g. ECONNREFUSED from an ICMP port unreachable (no server yet): counted, the
            // socket stays usable (and a handshake retransmits).
            Err(_) => {
                taken += 1;
                core.flow_receive_failed();
            }
        }
    }
    Ok(Drained::More)
}

/// Sends what the core staged for upstream flows. On a socket shard every flow's sends go
/// to the kernel together ([`UdpIo::send_connected`]: one `io_uring_enter` for all of them,
/// or one `sendmmsg` per flow), the end of a turn being the one flush point; an AF_XDP
/// shard has no ring for its upstream sockets and makes one send call each.
fn flush_flows(
    core: &mut ShardCore<UdpSocket>,
    fx: &mut Effects,
    io: &mut ListenIo,
) -> Result<(), Error> {
    match io {
        ListenIo::Socket(udp) => {
            let mut failed = None;
            core.flush_flows_together(fx, |sends| {
                let sends = sends.map(|(socket, s)| ConnectedSend {
                    socket: socket.as_fd(),
                    payload: s.payload,
                    segment: s.segment,
                });
                udp.send_connected(sends).unwrap_or_else(|e| {
                    failed = Some(e);
                    ConnectedSent::default()
                })
            });
            failed.map_or(Ok(()), |e| Err(e.into()))
        }
        ListenIo::Xdp { .. } => {
            core.flush_flows(fx, send_flow);
            Ok(())
        }
    }
}

/// One send staged by the core on an upstream socket: a datagram, or a GSO run.
fn send_flow(socket: &UdpSocket, payload: &[u8], segment: Option<u16>) -> io::Result<usize> {
    match segment {
        Some(_) => send_segments(socket, payload, segment),
        None => socket.send(payload),
    }
}

/// The key of the shard's return-routability cookies (RFC 9853 §4: from a CSPRNG).
fn rrc_key() -> [u8; 32] {
    let mut key = [0u8; 32];
    // aws-lc's system RNG fails only when the kernel's does; a shard cannot run then.
    aws_lc_rs::rand::fill(&mut key).expect("system random generator");
    key
}

/// A seed for heartbeat padding: std's per-process random hash keys.
fn pad_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(0x6865_6172_7462_6561);
    h.finish()
}
