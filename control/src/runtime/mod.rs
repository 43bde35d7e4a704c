//! The control thread: the loop that runs the handshake engines for every shard.
//!
//! What it does: [`ControlThread`] owns one [`ShardQueues`] handle per shard, the stateless
//! [`Acceptor`], the server [`Connection`]s of handshakes in progress (peer address → shard
//! index and engine, bounded by [`RuntimeConfig::max_half_open`]), their timers, and an
//! injected RNG factory. It is the only place that reads the clock (`Instant::now()` once
//! per turn); the engines stay sans-IO.
//!
//! Each turn it drains every shard's [`ControlInbound`] queue: a handshake datagram goes to
//! the peer's engine when one exists (and is not a fresh ClientHello), else to the acceptor,
//! whose HelloVerifyRequest goes back as a [`ShardCommand::Transmit`] to the shard the
//! datagram came from (SO_REUSEPORT hashes a peer to one shard, so that shard owns it). Then
//! it runs due timers. After every engine call it collects the events first and the
//! datagrams second, so `InstallKeys` is queued before the `Transmit` carrying the final
//! flight (the queue is FIFO: the shard holds the keys before the client can answer that
//! flight with application data). A completed engine is kept for
//! [`RuntimeConfig::completed_grace`] to answer a retransmitted client Finished
//! (RFC 6347 §4.2.4), then dropped.
//!
//! Flights go out through the owning shard's socket (no socket of its own here): the shard
//! already sends from the listen address, and one sender per socket keeps the shard's
//! io_uring ring single-issuer.
//!
//! What it does not do: spawn or pin threads (the daemon does), sessions' records (the
//! shards do), rekeying (an AEAD limit report closes the session), DTLS 1.3.

mod counters;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use dataplane::record::RecordKey;
use dtls_shard::{ControlInbound, HeartbeatPolicy, ReadKeys, ShardCommand, ShardQueues, WriteKeys};
use dtls_wire::HeartbeatMode;

pub use counters::{ControlCounters, ControlStats};

use crate::{
    AcceptOutcome, Acceptor, Config, ConfigError, Connection, Event, Rng, SessionKeys,
    SessionTicket,
};

/// How often the control thread looks at the ticket keys' rotation schedule.
const TICKET_CHECK: Duration = Duration::from_secs(1);
/// Client mode: most tickets kept for local sources' next handshakes.
const MAX_TICKETS: usize = 65_536;

/// Makes the RNG of each new engine.
pub type RngFactory = Box<dyn FnMut() -> Box<dyn Rng + Send> + Send>;

/// Buffer for one outgoing handshake datagram (larger than any MTU we accept).
const TRANSMIT_BUF: usize = 16 * 1024;

/// Settings of the control loop.
#[derive(Debug, Clone, Copy)]
pub struct RuntimeConfig {
    /// Most handshakes in progress at once; cookie-verified ClientHellos beyond it are
    /// refused (counted in [`ControlStats::half_open_refused`]). Default 4096.
    pub max_half_open: usize,
    /// How long a completed engine is kept to answer a retransmitted client Finished.
    /// Default 30 s.
    pub completed_grace: Duration,
    /// Most messages taken from one shard's queue per turn (fairness). Default 256.
    pub inbound_budget: usize,
    /// Longest sleep of an idle turn. Default 1 ms.
    pub idle_sleep: Duration,
    /// Retries (1 ms apart) of a `Close` command onto a full queue at shutdown. Default 50.
    pub close_retries: u32,
    /// **Benchmarks only**: after each real handshake, install
    /// [`RecordKey::null_baseline`] keys both ways instead of the negotiated ones, so a
    /// benchmark measures the plaintext baseline through the very same engine. Never set
    /// from a configuration file or flag. Default `false`.
    pub null_record_protection: bool,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        Self {
            max_half_open: 4096,
            completed_grace: Duration::from_secs(30),
            inbound_budget: 256,
            idle_sleep: Duration::from_millis(1),
            close_retries: 50,
            null_record_protection: false,
        }
    }
}

/// One handshake engine and where its peer lives.
#[derive(Debug)]
struct Handshake {
    shard: usize,
    conn: Connection,
    /// When the handshake completed (`None` while in progress).
    completed_at: Option<Instant>,
}

impl Handshake {
    /// When this entry next needs the loop: its retransmission timer while in progress,
    /// the end of its grace period once completed.
    fn deadline(&self, grace: Duration) -> Option<Instant> {
        match self.completed_at {
            Some(at) => Some(at + grace),
            None => self.conn.poll_timeout(),
        }
    }
}

/// Which side of the handshakes this loop runs.
#[derive(Debug)]
enum Front {
    /// `dtlsd serve`: the stateless cookie front answers unknown peers.
    Server(Box<Acceptor>),
    /// `dtlsd connect`: one client engine per local source, all to `server`. Engines and
    /// shard sessions are keyed by the local source address; the server's address is what
    /// the engine talks to.
    Client {
        /// The DTLS server.
        server: SocketAddr,
    },
}

/// The control loop (see the module documentation). Run it on its own thread with
/// [`ControlThread::run`], or turn by turn with [`ControlThread::run_turn`].
pub struct ControlThread {
    config: Arc<Config>,
    front: Front,
    /// New configurations to use from the next handshake on (SIGHUP reload).
    reloads: Option<mpsc::Receiver<Arc<Config>>>,
    shards: Vec<Arc<ShardQueues>>,
    settings: RuntimeConfig,
    rng_factory: RngFactory,
    acceptor_rng: Box<dyn Rng + Send>,
    handshakes: HashMap<SocketAddr, Handshake>,
    /// Entries of `handshakes` not completed yet (bounded by `max_half_open`).
    half_open: usize,
    /// No entry of `handshakes` has a deadline before this (it may be early, never late).
    next_timer: Option<Instant>,
    /// Sessions whose keys were handed to a shard (peer → shard index), for shutdown.
    installed: HashMap<SocketAddr, usize>,
    /// Client mode: the last session ticket per local source, offered by its next handshake
    /// (RFC 5077 §3.4; the server may still choose a full handshake).
    tickets: HashMap<SocketAddr, SessionTicket>,
    /// When the ticket keys' rotation schedule is next looked at.
    ticket_check: Option<Instant>,
    counters: Arc<ControlCounters>,
    buf: Box<[u8]>,
}

impl std::fmt::Debug for ControlThread {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlThread")
            .field("shards", &self.shards.len())
            .field("handshakes", &self.handshakes.len())
            .field("installed", &self.installed.len())
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl ControlThread {
    /// A control loop for `shards` (index = shard number) serving with `acceptor`
    /// (whose configuration every engine uses); `rng_factory` gives each engine its RNG.
    pub fn new(
        acceptor: Acceptor,
        shards: Vec<Arc<ShardQueues>>,
        settings: RuntimeConfig,
        rng_factory: RngFactory,
    ) -> Self {
        let config = Arc::clone(acceptor.config());
        Self::with_front(
            Front::Server(Box::new(acceptor)),
            config,
            shards,
            settings,
            rng_factory,
        )
    }

    /// A control loop for `dtlsd connect`: client engines to `server` with `config`, one
    /// per local source a shard reports with [`ControlInbound::Open`].
    ///
    /// # Errors
    /// [`ConfigError`] when the configuration cannot work.
    pub fn client(
        config: Arc<Config>,
        server: SocketAddr,
        shards: Vec<Arc<ShardQueues>>,
        settings: RuntimeConfig,
        rng_factory: RngFactory,
    ) -> Result<Self, ConfigError> {
        config.validate()?;
        Ok(Self::with_front(
            Front::Client { server },
            config,
            shards,
            settings,
            rng_factory,
        ))
    }

    fn with_front(
        front: Front,
        config: Arc<Config>,
        shards: Vec<Arc<ShardQueues>>,
        settings: RuntimeConfig,
        mut rng_factory: RngFactory,
    ) -> Self {
        let acceptor_rng = rng_factory();
        Self {
            config,
            front,
            reloads: None,
            shards,
            settings,
            rng_factory,
            acceptor_rng,
            handshakes: HashMap::new(),
            half_open: 0,
            next_timer: None,
            installed: HashMap::new(),
            tickets: HashMap::new(),
            ticket_check: None,
            counters: Arc::new(ControlCounters::default()),
            buf: vec![0; TRANSMIT_BUF].into_boxed_slice(),
        }
    }

    /// Takes new configurations from `reloads`: each one received is used by every
    /// handshake started after it (live sessions keep their keys; engines in progress keep
    /// the configuration they started with). The sender validates before sending; one that
    /// still fails validation here is counted in [`ControlStats::reloads_failed`] and the
    /// old one stays.
    pub fn set_reloads(&mut self, reloads: mpsc::Receiver<Arc<Config>>) {
        self.reloads = Some(reloads);
    }

    /// The live counters (shareable with a metrics thread).
    pub fn counters(&self) -> &Arc<ControlCounters> {
        &self.counters
    }

    /// Handshakes in progress or in their completion grace period.
    pub fn handshakes(&self) -> usize {
        self.handshakes.len()
    }

    /// Handshakes in progress (counted against [`RuntimeConfig::max_half_open`]).
    pub fn half_open(&self) -> usize {
        self.half_open
    }

    /// Sessions whose keys were handed to a shard and not reported closed since.
    pub fn installed_sessions(&self) -> usize {
        self.installed.len()
    }

    /// Runs turns until `stop` is set, then closes every installed session
    /// ([`ControlThread::close_all`]). Sleeps up to [`RuntimeConfig::idle_sleep`] when a turn
    /// found nothing to do.
    pub fn run(&mut self, stop: &AtomicBool) {
        while !stop.load(Relaxed) {
            let now = Instant::now();
            if !self.run_turn(now) {
                let sleep = self
                    .poll_timeout()
                    .map_or(self.settings.idle_sleep, |at| {
                        at.saturating_duration_since(now)
                    })
                    .min(self.settings.idle_sleep);
                std::thread::sleep(sleep);
            }
        }
        self.close_all();
    }

    /// One turn at `now`: drain the shards' queues, then run due timers. Returns whether a
    /// message was handled (a busy loop should not sleep).
    pub fn run_turn(&mut self, now: Instant) -> bool {
        let mut busy = false;
        while let Some(config) = self.reloads.as_ref().and_then(|r| r.try_recv().ok()) {
            busy = true;
            self.reload(config);
        }
        for shard in 0..self.shards.len() {
            for _ in 0..self.settings.inbound_budget {
                let Some(message) = self.shards[shard].poll_inbound() else {
                    break;
                };
                busy = true;
                self.handle_inbound(now, shard, message);
            }
        }
        self.handle_timeouts(now);
        busy
    }

    /// The earliest timer: an engine's retransmission, a grace period's end, or the cookie
    /// secret's rotation.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let cookies = match &self.front {
            Front::Server(acceptor) => acceptor.poll_timeout(),
            Front::Client { .. } => None,
        };
        self.next_timer.into_iter().chain(cookies).min()
    }

    fn reload(&mut self, mut config: Arc<Config>) {
        // One reassembly budget for all of this loop's handshakes, old and new config alike.
        Arc::make_mut(&mut config).reassembly_budget = Arc::clone(&self.config.reassembly_budget);
        let applied = match &mut self.front {
            Front::Server(acceptor) => acceptor.replace_config(Arc::clone(&config)),
            Front::Client { .. } => config.validate(),
        };
        match applied {
            Ok(()) => {
                self.config = config;
                ControlCounters::bump(&self.counters.reloads);
            }
            Err(_) => ControlCounters::bump(&self.counters.reloads_failed),
        }
    }

    /// Sends `Close` (close_notify, then removal) for every installed session, retrying a
    /// full queue up to [`RuntimeConfig::close_retries`] times. Returns how many were sent.
    pub fn close_all(&mut self) -> usize {
        let mut sent = 0;
        for (peer, shard) in std::mem::take(&mut self.installed) {
            let Some(queues) = self.shards.get(shard) else {
                continue;
            };
            let mut command = ShardCommand::Close { peer };
            for attempt in 0..=self.settings.close_retries {
                match queues.push_command(command) {
                    Ok(()) => {
                        sent += 1;
                        break;
                    }
                    Err(back) => {
                        command = back;
                        if attempt == self.settings.close_retries {
                            ControlCounters::bump(&self.counters.queue_full_drops);
                        } else {
                            std::thread::sleep(Duration::from_millis(1));
                        }
                    }
                }
            }
        }
        self.handshakes.clear();
        self.half_open = 0;
        self.next_timer = None;
        sent
    }

    fn handle_inbound(&mut self, now: Instant, shard: usize, message: ControlInbound) {
        match message {
            ControlInbound::Handshake { peer, datagram } => {
                self.handle_handshake_datagram(now, shard, peer, &datagram);
            }
            ControlInbound::SessionClosed { peer, .. } => {
                ControlCounters::bump(&self.counters.sessions_closed);
                self.installed.remove(&peer);
                // The shard ended the session: a completed engine has nothing left to do.
                if self
                    .handshakes
                    .get(&peer)
                    .is_some_and(|h| h.completed_at.is_some())
                {
                    self.remove_handshake(peer);
                }
            }
            ControlInbound::Open { peer } => self.open(now, shard, peer),
            ControlInbound::AeadLimitReached { peer, .. } => {
                // No rekeying in DTLS 1.2 here: RFC 9147 §4.5.3 allows closing instead.
                ControlCounters::bump(&self.counters.aead_limits);
                if let Some(shard) = self.installed.remove(&peer) {
                    self.push(shard, ShardCommand::Close { peer });
                }
            }
        }
    }

    /// `dtlsd connect`: a local source without a session sent plaintext; its shard holds
    /// an upstream socket for it and waits for keys (or a `Close` when no handshake starts).
    fn open(&mut self, now: Instant, shard: usize, peer: SocketAddr) {
        let Front::Client { server } = self.front else {
            // Only connect-mode shards send `Open`.
            ControlCounters::bump(&self.counters.acceptor_drops);
            return;
        };
        if self
            .handshakes
            .get(&peer)
            .is_some_and(|h| h.completed_at.is_none())
        {
            return; // already under way
        }
        if self.half_open >= self.settings.max_half_open {
            ControlCounters::bump(&self.counters.half_open_refused);
            self.push(shard, ShardCommand::Close { peer });
            return;
        }
        let rng = (self.rng_factory)();
        let resume = self.tickets.remove(&peer);
        match Connection::client(Arc::clone(&self.config), rng, now, server, resume) {
            Ok(conn) => self.start_handshake(now, shard, peer, conn),
            // The configuration was validated when the loop was built or reloaded.
            Err(_) => {
                ControlCounters::bump(&self.counters.handshakes_failed_protocol);
                self.push(shard, ShardCommand::Close { peer });
            }
        }
    }

    /// Keeps a new engine for `peer` (replacing a previous one: a client that restarted)
    /// and sends its first flight.
    fn start_handshake(&mut self, now: Instant, shard: usize, peer: SocketAddr, conn: Connection) {
        ControlCounters::bump(&self.counters.handshakes_started);
        self.remove_handshake(peer);
        self.half_open += 1;
        self.handshakes.insert(
            peer,
            Handshake {
                shard,
                conn,
                completed_at: None,
            },
        );
        self.drain(now, peer);
    }

    fn handle_handshake_datagram(
        &mut self,
        now: Instant,
        shard: usize,
        peer: SocketAddr,
        datagram: &[u8],
    ) {
        let acceptor = match &self.front {
            Front::Server(acceptor) => acceptor,
            Front::Client { server } => {
                // From the server, through the upstream socket of local source `peer`.
                let server = *server;
                if let Some(h) = self.handshakes.get_mut(&peer) {
                    h.conn.handle_datagram(now, server, datagram);
                    self.drain(now, peer);
                } else {
                    ControlCounters::bump(&self.counters.acceptor_drops);
                }
                return;
            }
        };
        if let Some(h) = self.handshakes.get_mut(&peer)
            && !h.conn.is_new_client_hello(datagram)
        {
            h.conn.handle_datagram(now, peer, datagram);
            self.drain(now, peer);
            return;
        }
        match acceptor.handle_datagram(now, peer, datagram, &mut self.buf) {
            AcceptOutcome::Reply(t) => {
                ControlCounters::bump(&self.counters.cookies_sent);
                let datagram = self.buf[..t.len].to_vec();
                self.push(
                    shard,
                    ShardCommand::Transmit {
                        peer: t.destination,
                        datagram,
                    },
                );
            }
            AcceptOutcome::Drop(_) => ControlCounters::bump(&self.counters.acceptor_drops),
            AcceptOutcome::Accept(hello) => {
                if self.half_open >= self.settings.max_half_open {
                    ControlCounters::bump(&self.counters.half_open_refused);
                    return;
                }
                let rng = (self.rng_factory)();
                match Connection::server(Arc::clone(&self.config), rng, now, hello) {
                    Ok(conn) => self.start_handshake(now, shard, peer, conn),
                    // The acceptor validated the same configuration: unreachable in
                    // practice, counted rather than trusted.
                    Err(_) => ControlCounters::bump(&self.counters.handshakes_failed_protocol),
                }
            }
        }
    }

    fn handle_timeouts(&mut self, now: Instant) {
        if let Front::Server(acceptor) = &mut self.front
            && acceptor.poll_timeout().is_some_and(|at| at <= now)
        {
            acceptor.handle_timeout(now, &mut *self.acceptor_rng);
        }
        if self.ticket_check.is_none_or(|at| now >= at) {
            self.ticket_check = Some(now + TICKET_CHECK);
            self.rotate_ticket_keys();
        }
        if self.next_timer.is_none_or(|at| at > now) {
            return;
        }
        // A sweep over every entry, only when the earliest deadline is due.
        let grace = self.settings.completed_grace;
        let mut due = Vec::new();
        let mut next = None;
        // Only completed entries expire here, so `half_open` is unchanged.
        self.handshakes.retain(|peer, h| match h.completed_at {
            Some(at) => {
                let keep = at + grace > now;
                if keep {
                    next = earliest(next, Some(at + grace));
                }
                keep
            }
            None => {
                match h.conn.poll_timeout() {
                    Some(at) if at <= now => due.push(*peer),
                    other => next = earliest(next, other),
                }
                true
            }
        });
        self.next_timer = next;
        for peer in due {
            if let Some(h) = self.handshakes.get_mut(&peer) {
                h.conn.handle_timeout(now);
            }
            self.drain(now, peer);
        }
    }

    /// Rotates the session-ticket keys when due (wall-clock schedule: tickets carry wall
    /// times). The old key keeps opening tickets for one ticket lifetime.
    fn rotate_ticket_keys(&mut self) {
        let Some(keys) = &self.config.ticket_keys else {
            return;
        };
        // A poisoned lock means a panic elsewhere already; tickets then stay as they are.
        let Ok(mut keys) = keys.lock() else {
            return;
        };
        let wall = dtls_crypto::pki_types::UnixTime::now();
        if keys.poll_timeout().as_secs() > wall.as_secs() {
            return;
        }
        match keys.handle_timeout(wall, &mut *self.acceptor_rng) {
            Ok(true) => ControlCounters::bump(&self.counters.ticket_rotations),
            Ok(false) => {}
            Err(_) => ControlCounters::bump(&self.counters.ticket_rotation_failures),
        }
    }

    /// Events first (keys go to the shard before the final flight), then datagrams; a dead
    /// engine is dropped.
    fn drain(&mut self, now: Instant, peer: SocketAddr) {
        let Some(h) = self.handshakes.get_mut(&peer) else {
            return;
        };
        let shard = h.shard;
        let mut keys = Vec::new();
        while let Some(event) = h.conn.poll_event() {
            match event {
                Event::KeysReady(mut k) => {
                    if h.completed_at.is_none() {
                        self.half_open = self.half_open.saturating_sub(1);
                    }
                    h.completed_at = Some(now);
                    if k.resumed {
                        ControlCounters::bump(&self.counters.handshakes_resumed);
                    }
                    if let Some(ticket) = k.ticket.take()
                        && (self.tickets.len() < MAX_TICKETS || self.tickets.contains_key(&peer))
                    {
                        self.tickets.insert(peer, ticket);
                    }
                    keys.push(k);
                }
                Event::HandshakeFailed(error) => {
                    self.counters.count_failure(&error);
                }
                Event::AlertReceived { .. } | Event::Closed { .. } => {}
            }
        }
        // Every datagram of this engine goes to its peer: the client in serve mode, the
        // server through local source `peer`'s upstream socket in connect mode. The shard
        // routes by `peer` either way.
        let mut transmits = Vec::new();
        while let Some(t) = h.conn.poll_transmit(now, &mut self.buf) {
            transmits.push(self.buf[..t.len].to_vec());
        }
        let finished = h.conn.is_finished();
        let failed_client =
            finished && h.completed_at.is_none() && matches!(self.front, Front::Client { .. });
        let deadline = h.deadline(self.settings.completed_grace);
        for k in keys {
            ControlCounters::bump(&self.counters.handshakes_completed);
            self.install(shard, peer, *k);
        }
        for datagram in transmits {
            self.push(shard, ShardCommand::Transmit { peer, datagram });
        }
        if failed_client {
            // The shard holds an upstream socket and queued plaintext for this source.
            self.push(shard, ShardCommand::Close { peer });
        }
        if finished {
            self.remove_handshake(peer);
        } else {
            self.next_timer = earliest(self.next_timer, deadline);
        }
    }

    /// Drops `peer`'s engine, keeping the half-open count right.
    fn remove_handshake(&mut self, peer: SocketAddr) {
        if let Some(h) = self.handshakes.remove(&peer)
            && h.completed_at.is_none()
        {
            self.half_open = self.half_open.saturating_sub(1);
        }
    }

    /// Hands the session's keys to `shard` under `peer` (the client's address in serve
    /// mode, the local source in connect mode).
    fn install(&mut self, shard: usize, peer: SocketAddr, keys: SessionKeys) {
        let SessionKeys {
            read,
            write,
            replay_window,
            heartbeat: peer_mode,
            ..
        } = keys;
        // RFC 6520 §2: requests only to a peer that said peer_allowed_to_send; answers only
        // when we said it (a negotiated extension carries both modes).
        let heartbeat = HeartbeatPolicy {
            answer: peer_mode.is_some()
                && self.config.heartbeat == Some(HeartbeatMode::PeerAllowedToSend),
            probe: peer_mode == Some(HeartbeatMode::PeerAllowedToSend),
        };
        let (read_key, write_key) = if self.settings.null_record_protection {
            (RecordKey::null_baseline(), RecordKey::null_baseline())
        } else {
            (read.key, write.key)
        };
        let command = ShardCommand::InstallKeys {
            peer,
            read: ReadKeys {
                epoch: read.epoch,
                key: read_key,
                replay_window,
            },
            write: WriteKeys {
                epoch: write.epoch,
                key: write_key,
                next_seq: write.next_sequence,
            },
            heartbeat,
        };
        if self.push(shard, command) {
            self.installed.insert(peer, shard);
        }
    }

    /// Queues `command` to `shard`; a full queue drops it (counted). Returns whether queued.
    fn push(&self, shard: usize, command: ShardCommand) -> bool {
        let Some(queues) = self.shards.get(shard) else {
            return false;
        };
        match queues.push_command(command) {
            Ok(()) => true,
            Err(_) => {
                ControlCounters::bump(&self.counters.queue_full_drops);
                false
            }
        }
    }
}

/// The earlier of two optional instants (`None` is "never").
fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

#[cfg(test)]
mod tests;
