//! The control thread: the loop that runs the handshake engines for every shard.
//!
//! What it does: [`ControlThread`] owns one [`ShardQueues`] handle per shard, the stateless
//! [`Acceptor`], the server [`Connection`]s of handshakes in progress (peer address → shard
//! index and engine, admitted under [`Limits`]: half-open caps globally, per source address
//! and per prefix, shedding the oldest when full; session caps globally, per shard and per
//! source address; a handshake rate per source address; an [`AccessList`]), their
//! timers, the installed sessions (shard, identity, start), and an injected RNG factory. It
//! is the only place that reads the clocks: [`ControlThread::run`] reads `Instant::now()` and
//! the wall clock once per turn and passes both to [`ControlThread::run_turn`], which hands
//! them to the engines (the wall clock serves certificate validity, session tickets, ticket
//! key rotation and reload checks); the engines stay sans-IO. Handshake failures and
//! refusals and sessions established and closed are reported to a [`SessionLog`].
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
//! Reload ([`Reload`]): a new engine configuration is used by every handshake started after
//! it; live sessions whose PSK identity it removed, whose client certificate its identity
//! rules refuse, or (when asked) whose client certificate no longer verifies under it, are
//! closed (close_notify, [`ControlStats::sessions_revoked`]).
//! A reload may also bring new per-source limits and access lists ([`Reload::limits`],
//! [`Reload::access`]): they apply to handshakes started after it; live sessions stay.
//!
//! Connection IDs (RFC 9146): a server engine's CID comes from [`ShardCids`], a QUIC-LB CID
//! naming this node and the shard that owns the session; both CIDs go to the shard with the
//! keys, and a shard's [`ControlInbound::PeerMoved`](dtls_shard::ControlInbound) (a record
//! under the CID authenticated from a new address) moves the session's address here too.
//!
//! DTLS 1.3 (RFC 9147): a session's engine lives as long as the session. The shard holds
//! the application keys, opens the peer's post-handshake records (KeyUpdate, ACK, ...) and
//! hands their plaintext up as [`ControlInbound::PostHandshake`](dtls_shard::ControlInbound);
//! the engine answers (its ACK, its own KeyUpdate) in datagrams it seals itself with the
//! few sequence numbers of each epoch it keeps (the shard's start past them), which go out
//! as `TransmitSession`: on the session's current path, which the shard may have moved
//! (RFC 9147 §9, RFC 9853 §5) before its `PeerMoved` reaches us. New epochs reach the shard as `InstallKeys13` (the peer's next read
//! epoch as soon as its KeyUpdate is read, our next write epoch once the peer acknowledged
//! ours); the previous read epoch is retired when a record of the new one reached control
//! or [`EPOCH_RETIRE_AFTER`] later. An AEAD limit report makes a 1.3 session update its
//! keys (RFC 9147 §4.5.3).
//!
//! Handshake workers: a daemon may run several loops ([`ControlThread::set_worker`]), each
//! a worker with its own engines, acceptor (cookie secret, hello pool), half-open table,
//! rate buckets and installed sessions. Each drains only its own lane of every shard's
//! inbound queue ([`dtls_shard::ControlLanes`]): a peer's datagrams reach the worker its
//! source hashes to for the whole handshake (and its later ones), and the shard's reports
//! on a session reach the worker whose number the [`SessionId`] carries (worker `w` of `m`
//! numbers its sessions `k·m + w`). One source always meets one worker, so the per-source
//! limits (rate, half-open and sessions per address) are exact; the global caps
//! (half-open, sessions, sessions per shard) are split evenly between the workers. What the
//! workers share read-mostly comes in the engine [`Config`] they are built with and that
//! each [`Reload`] carries to every worker: certificates, PSKs, identity rules, the session
//! ticket keys (one `Arc<Mutex<TicketKeys>>`, so a ticket issued by one worker resumes on
//! another) and the reassembly budget. Cookies need no sharing: a cookie binds the client's
//! address, which always meets the worker that issued it. Their counters may be one
//! [`ControlCounters`] ([`ControlThread::set_counters`]); [`WorkerCounters`] are each
//! worker's own.
//!
//! Overload: a worker whose lane of some shard held [`RuntimeConfig::shed_backlog`]
//! messages or more at the start of its turn is behind; until a turn starts below that, it
//! sheds new handshakes after their cookie checked out and before any asymmetric crypto
//! ([`Refusal::Overloaded`], silently: the client's retransmission is the back-off),
//! counted in [`ControlStats::handshakes_shed`], all but
//! [`RuntimeConfig::overload_admit_per_turn`] per turn (so that reachable clients still
//! complete, at a reduced rate). Handshakes under way and sessions go on.
//!
//! What it does not do: spawn or pin threads (the daemon does), sessions' records (the
//! shards do), DTLS 1.2 rekeying (an AEAD limit report closes a 1.2 session).

#![forbid(unsafe_code)]

mod admin;
mod cids;
mod counters;
#[cfg(test)]
mod fixtures;
mod handshakes;
mod identity_rules;
mod limits;
mod log;
mod rate;
pub mod upstream_header;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use dtls_crypto::pki_types::UnixTime;
use dtls_shard::{CloseCause, SessionId, ShardCommand, ShardQueues};

use self::limits::{HalfOpen, SessionsBySource};
use self::rate::HandshakeRate;
pub use admin::{AdminRequest, KickTarget, SessionInfo};
pub use cids::ShardCids;
pub use counters::{
    ControlCounters, ControlStats, HANDSHAKE_BUCKETS, LatencyReading, Observed, WorkerCounters,
};
pub use identity_rules::IdentityRules;
pub use limits::{AccessList, Limits, Refusal};
pub use log::{Closed, Established, HandshakeFailure, NoLog, Peer, SessionLog};
pub use upstream_header::{ProxyHeader, ProxyProtocol};

use control::{Acceptor, Config, ConfigError, Connection, PeerIdentity, Rng, SessionTicket};

/// How often the control thread looks at the ticket keys' rotation schedule.
const TICKET_CHECK: Duration = Duration::from_secs(1);
/// Client mode: most tickets kept for local sources' next handshakes.
const MAX_TICKETS: usize = 65_536;

/// Makes the RNG of each new engine.
pub type RngFactory = Box<dyn FnMut() -> Box<dyn Rng + Send> + Send>;

/// Buffer for one outgoing handshake datagram (larger than any MTU we accept).
const TRANSMIT_BUF: usize = 16 * 1024;
/// DTLS 1.3: how long a session's previous read epoch stays with its shard after the peer's
/// KeyUpdate when no record under the new epoch reached control sooner (RFC 9147 §8: the
/// old keys are kept for records still in flight, not for ever).
const EPOCH_RETIRE_AFTER: Duration = Duration::from_secs(10);
/// How long a session closed by control is remembered for the line its shard's report
/// completes.
const CLOSING_MEMORY: Duration = Duration::from_secs(10);

/// Settings of the control loop.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Caps on half-open handshakes and sessions.
    pub limits: Limits,
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
    /// Serve mode: the header put in front of what each session sends to the backend
    /// (PROXY v2 or SPP, see [`upstream_header`]). Default `None`: plaintext as it is.
    pub proxy_header: Option<ProxyHeader>,
    /// Serve mode: this node's id, named (with the shard) by every CID it issues
    /// ([`ShardCids`]). Default 0.
    pub node_id: u8,
    /// Serve mode: the QUIC-LB keys of encrypted CIDs, shared with the shards (which decode
    /// them) and replaced in place on a key store reload; `None`: plaintext CIDs
    /// ([`ShardCids`]). Default `None`.
    pub encrypted_cids: Option<Arc<dataplane::cid::EncryptedCids>>,
    /// Overload: messages waiting in this loop's lane of one shard's inbound queue at the
    /// start of a turn from which new handshakes are shed (see the module documentation);
    /// 0 turns shedding off. Default 192: three quarters of what a shard lets wait in a
    /// lane at once (the rest waits in its fair stage), so a loop that keeps up never
    /// sees it.
    pub shed_backlog: usize,
    /// Overload: cookie-verified new handshakes still admitted per overloaded turn (the
    /// rest are shed), so that reachable clients complete at a reduced rate while an
    /// overload lasts instead of waiting for its end; each costs one handshake's asymmetric
    /// crypto, so a turn's extra work stays bounded. 0 sheds them all. Default 1.
    pub overload_admit_per_turn: usize,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        Self {
            limits: Limits::default(),
            completed_grace: Duration::from_secs(30),
            inbound_budget: 256,
            idle_sleep: Duration::from_millis(1),
            close_retries: 50,
            null_record_protection: false,
            proxy_header: None,
            node_id: 0,
            encrypted_cids: None,
            shed_backlog: 192,
            overload_admit_per_turn: 1,
        }
    }
}

/// One handshake engine and where its peer lives.
#[derive(Debug)]
struct Handshake {
    shard: usize,
    conn: Connection,
    /// When the engine was created.
    started_at: Instant,
    /// When the handshake completed (`None` while in progress).
    completed_at: Option<Instant>,
    /// Its entry in the half-open table while in progress.
    half_open: Option<u64>,
    /// DTLS 1.3: the installed session this engine serves after completion. Such an engine
    /// lives as long as its session (no grace period): it answers the peer's KeyUpdates
    /// and ACKs, and runs ours.
    session: Option<SessionId>,
    /// DTLS 1.3 client: spare CIDs of the server were asked for (once, see
    /// [`PEER_CIDS_ASKED`]).
    asked_cids: bool,
    /// DTLS 1.3: the engine dropped its handshake-only state ([`Connection::settle`])
    /// once the grace period was over.
    settled: bool,
    /// Renegotiation requests the engine refused that the log has heard of.
    renegotiations_logged: u64,
}

/// Spare CIDs a DTLS 1.3 client (`dtlsd connect`) asks the server for once the handshake
/// is done (RequestConnectionId, RFC 9147 §9: "Implementations SHOULD use a new CID
/// whenever sending on a new path and SHOULD request new CIDs for this purpose if path
/// changes are anticipated"): the shard puts the next in its records after each address
/// change (RFC 9853 §9). Our server keeps at most 8 unused at a client, replacing those
/// the client moved past; the engine asks for more when fewer than two are left.
pub const PEER_CIDS_ASKED: u8 = 8;

/// A session whose keys went to a shard.
#[derive(Debug)]
struct Installed {
    /// The peer's address (serve) or local source (connect) it was installed under.
    peer: SocketAddr,
    shard: usize,
    established: Instant,
    identity: PeerIdentity,
    /// "1.2" or "1.3".
    version: &'static str,
    suite: control::CipherSuite,
    /// Our connection ID, when the session has one.
    cid: Option<Vec<u8>>,
    /// The peer's connection ID (what our records carry), when CIDs were negotiated.
    peer_cid: Option<Vec<u8>>,
}

/// A new configuration for the control loop (SIGHUP); a daemon with several workers
/// sends each a clone.
#[derive(Debug, Clone)]
pub struct Reload {
    /// The engine configuration for handshakes started from now on.
    pub config: Arc<Config>,
    /// Close the live sessions whose client certificate no longer verifies under
    /// `config` (set when the client CA changed). Sessions whose PSK identity `config` no
    /// longer has are always closed.
    pub recheck_certificates: bool,
    /// Serve mode: new per-source rules ([`Limits::reloaded`]: the handshake rate and burst
    /// and the sessions per address; the other caps size tables and stay), for handshakes
    /// started from now on. `None` keeps the running ones.
    pub limits: Option<Limits>,
    /// Serve mode: new allow and deny lists, for handshakes started from now on (live
    /// sessions from a source they now refuse stay). `None` keeps the running ones.
    pub access: Option<AccessList>,
}

impl Handshake {
    /// When this entry next needs the loop: its retransmission timer while in progress
    /// or while it serves a DTLS 1.3 session, the end of its grace period once completed
    /// otherwise.
    fn deadline(&self, grace: Duration) -> Option<Instant> {
        match self.completed_at {
            Some(at) if self.session.is_none() => Some(at + grace),
            Some(at) if !self.settled => earliest(self.conn.poll_timeout(), Some(at + grace)),
            _ => self.conn.poll_timeout(),
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
    reloads: Option<mpsc::Receiver<Reload>>,
    /// Operator requests (`dtlsd status`, `dtlsd kick`).
    admin: Option<mpsc::Receiver<AdminRequest>>,
    shards: Vec<Arc<ShardQueues>>,
    settings: RuntimeConfig,
    rng_factory: RngFactory,
    acceptor_rng: Box<dyn Rng + Send>,
    handshakes: HashMap<SocketAddr, Handshake>,
    /// Entries of `handshakes` not completed yet, by shard, source address and prefix.
    half_open: HalfOpen,
    /// Installed sessions by source address.
    by_source: SessionsBySource,
    /// Serve mode: the token buckets of the per-source handshake rate.
    rate: HandshakeRate,
    /// Serve mode: who may get a reply at all.
    access: AccessList,
    /// No entry of `handshakes` has a deadline before this (it may be early, never late).
    next_timer: Option<Instant>,
    /// Sessions whose keys were handed to a shard and that control has not closed.
    installed: HashMap<SessionId, Installed>,
    /// The installed session of each peer address.
    by_peer: HashMap<SocketAddr, SessionId>,
    /// The serial of the next session handle (never reused).
    next_session: u64,
    /// Installed sessions per shard.
    shard_sessions: Vec<usize>,
    /// Sessions control closed, until their shard reports them (for the closing line).
    closing: HashMap<SessionId, (Instant, Installed)>,
    /// DTLS 1.3 read epochs to retire from their shard: (when, session, epoch), oldest
    /// first.
    retiring: Vec<(Instant, SessionId, u64)>,
    /// Where handshakes and sessions are reported.
    log: Box<dyn SessionLog>,
    /// Client mode: the last session ticket per local source, offered by its next handshake
    /// (RFC 5077 §3.4; the server may still choose a full handshake).
    tickets: HashMap<SocketAddr, SessionTicket>,
    /// When the ticket keys' rotation schedule is next looked at.
    ticket_check: Option<Instant>,
    counters: Arc<ControlCounters>,
    /// This worker's own counters.
    worker_counters: Arc<WorkerCounters>,
    /// This loop's worker number and the number of workers (0 of 1 alone).
    worker: usize,
    workers: usize,
    /// Whether this turn sheds new handshakes ([`RuntimeConfig::shed_backlog`]).
    overloaded: bool,
    /// New handshakes this overloaded turn may still admit
    /// ([`RuntimeConfig::overload_admit_per_turn`]).
    overload_admits: usize,
    /// The hello pool gauges this worker added to the shared counters.
    pool_published: (u64, u64),
    /// Marked once per turn, for the daemon's health check.
    progress: Arc<dtls_shard::Progress>,
    /// Set by the daemon on SIGTERM with a drain window: new handshakes are refused
    /// ([`Refusal::Draining`]), live sessions and handshakes under way go on.
    draining: Arc<AtomicBool>,
    /// Serve mode with several listen addresses: each shard's own (bound) listen address,
    /// by shard index, for the destination of the upstream header; empty: every shard has
    /// [`ProxyHeader::listen`].
    shard_listen: Vec<SocketAddr>,
    buf: Box<[u8]>,
}

impl std::fmt::Debug for ControlThread {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlThread")
            .field("shards", &self.shards.len())
            .field("handshakes", &self.handshakes.len())
            .field("installed", &self.installed.len())
            .field("half_open", &self.half_open.len())
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
        config.validate_client()?;
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
        let shard_sessions = vec![0; shards.len()];
        Self {
            config,
            front,
            reloads: None,
            admin: None,
            shards,
            settings,
            rng_factory,
            acceptor_rng,
            handshakes: HashMap::new(),
            half_open: HalfOpen::default(),
            by_source: SessionsBySource::default(),
            rate: HandshakeRate::default(),
            access: AccessList::default(),
            next_timer: None,
            installed: HashMap::new(),
            by_peer: HashMap::new(),
            next_session: 1,
            shard_sessions,
            closing: HashMap::new(),
            retiring: Vec::new(),
            log: Box::new(NoLog),
            tickets: HashMap::new(),
            ticket_check: None,
            counters: Arc::new(ControlCounters::default()),
            worker_counters: Arc::default(),
            worker: 0,
            workers: 1,
            overloaded: false,
            overload_admits: 0,
            pool_published: (0, 0),
            progress: Arc::default(),
            draining: Arc::default(),
            shard_listen: Vec::new(),
            buf: vec![0; TRANSMIT_BUF].into_boxed_slice(),
        }
    }

    /// Makes this loop worker `index` of `count` (see the module documentation): it drains
    /// lane `index` of the shards' queues (built with [`dtls_shard::ControlLanes`] of
    /// `count` lanes), numbers its sessions `k·count + index`, and holds its share
    /// (rounded up) of the global caps of [`Limits`] (`max_half_open`, `max_sessions`,
    /// `max_sessions_per_shard`). Call it before the first turn; `count` 1 changes nothing.
    pub fn set_worker(&mut self, index: usize, count: usize) {
        let count = count.max(1);
        self.worker = index.min(count - 1);
        self.workers = count;
        self.next_session = (count + self.worker) as u64;
        let limits = &mut self.settings.limits;
        limits.max_half_open = limits.max_half_open.div_ceil(count);
        limits.max_sessions = limits.max_sessions.div_ceil(count);
        limits.max_sessions_per_shard = limits.max_sessions_per_shard.div_ceil(count);
    }

    /// This loop's worker number.
    pub fn worker(&self) -> usize {
        self.worker
    }

    /// Counts into `counters` from now on (one set shared by every worker of a daemon).
    pub fn set_counters(&mut self, counters: Arc<ControlCounters>) {
        self.counters = counters;
    }

    /// Uses `flag` as the drain switch (one shared by every worker of a daemon).
    pub fn set_drain_flag(&mut self, flag: Arc<AtomicBool>) {
        self.draining = flag;
    }

    /// This worker's own counters (shareable with a metrics thread).
    pub fn worker_counters(&self) -> &Arc<WorkerCounters> {
        &self.worker_counters
    }

    /// Takes new configurations from `reloads`: each one received is used by every
    /// handshake started after it (engines in progress keep the configuration they started
    /// with); live sessions it no longer admits are closed (see [`Reload`]). The sender
    /// validates before sending; one that still fails validation here is counted in
    /// [`ControlStats::reloads_failed`] and the old one stays.
    pub fn set_reloads(&mut self, reloads: mpsc::Receiver<Reload>) {
        self.reloads = Some(reloads);
    }

    /// The drain switch: once set, new handshakes are refused (a serve-mode client gets an
    /// `internal_error` alert after its cookie checks out; a connect-mode local source is
    /// forgotten) and counted; sessions and handshakes under way are untouched.
    pub fn drain_flag(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.draining)
    }

    /// Serve mode: answers only sources `access` admits (checked before the acceptor
    /// replies to a source without a handshake in progress).
    pub fn set_access(&mut self, access: AccessList) {
        self.access = access;
    }

    /// Serve mode: the listen address each shard's socket is bound to, by shard index (a
    /// daemon with several listen addresses), named as the destination in the upstream
    /// header of that shard's sessions instead of [`ProxyHeader::listen`].
    pub fn set_shard_listen(&mut self, addresses: Vec<SocketAddr>) {
        self.shard_listen = addresses;
    }

    /// Reports handshakes and sessions to `log` from now on.
    pub fn set_log(&mut self, log: Box<dyn SessionLog>) {
        self.log = log;
    }

    /// The live counters (shareable with a metrics thread).
    pub fn counters(&self) -> &Arc<ControlCounters> {
        &self.counters
    }

    /// When the last turn ended (shareable with a health check).
    pub fn progress(&self) -> &Arc<dtls_shard::Progress> {
        &self.progress
    }

    /// Handshakes in progress or in their completion grace period.
    pub fn handshakes(&self) -> usize {
        self.handshakes.len()
    }

    /// Handshakes in progress (counted against [`Limits::max_half_open`]).
    pub fn half_open(&self) -> usize {
        self.half_open.len()
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
            if !self.run_turn(now, UnixTime::now()) {
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

    /// One turn at `now` (`wall`: the wall-clock time of the same instant, for certificate
    /// validity, session tickets and their key rotation): drain the shards' queues, then
    /// run due timers. Returns whether a message was handled (a busy loop should not sleep).
    pub fn run_turn(&mut self, now: Instant, wall: UnixTime) -> bool {
        let mut busy = false;
        while let Some(reload) = self.reloads.as_ref().and_then(|r| r.try_recv().ok()) {
            busy = true;
            self.reload(now, wall, reload);
        }
        busy |= self.handle_admin(now);
        let lane = self.worker;
        let deepest = self
            .shards
            .iter()
            .map(|q| q.lane_len(lane))
            .max()
            .unwrap_or(0);
        let backlog: usize = self.shards.iter().map(|q| q.lane_len(lane)).sum();
        self.worker_counters.backlog.store(backlog as u64, Relaxed);
        self.overloaded = self.settings.shed_backlog > 0 && deepest >= self.settings.shed_backlog;
        self.overload_admits = self.settings.overload_admit_per_turn;
        for shard in 0..self.shards.len() {
            for _ in 0..self.settings.inbound_budget {
                let Some(message) = self.shards[shard].poll_lane(lane) else {
                    break;
                };
                busy = true;
                self.handle_inbound(now, wall, shard, message);
            }
        }
        self.handle_timeouts(now, wall);
        let budget = &self.config.reassembly_budget;
        self.counters
            .reassembly_bytes
            .store(budget.used() as u64, Relaxed);
        self.counters
            .reassembly_refused
            .store(budget.refused(), Relaxed);
        if let Front::Server(acceptor) = &self.front {
            // Each worker adds what changed in its own acceptor's pool: the shared gauges
            // are the workers' sums.
            let held = acceptor.hello_pool_len() as u64;
            let evicted = acceptor.hello_pool_stats().evicted;
            let (last_held, last_evicted) = self.pool_published;
            self.counters
                .hello_pool_held
                .fetch_add(held.wrapping_sub(last_held), Relaxed);
            self.counters
                .hello_pool_evicted
                .fetch_add(evicted.wrapping_sub(last_evicted), Relaxed);
            self.pool_published = (held, evicted);
        }
        self.worker_counters
            .sessions
            .store(self.installed.len() as u64, Relaxed);
        self.log.tick(now);
        self.progress.mark(now);
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

    fn reload(&mut self, now: Instant, wall: UnixTime, reload: Reload) {
        let Reload {
            mut config,
            recheck_certificates,
            limits,
            access,
        } = reload;
        // One reassembly budget for all of this loop's handshakes, old and new config alike.
        Arc::make_mut(&mut config).reassembly_budget = Arc::clone(&self.config.reassembly_budget);
        let applied = match &mut self.front {
            Front::Server(acceptor) => acceptor.replace_config(Arc::clone(&config)),
            Front::Client { .. } => config.validate_client(),
        };
        if applied.is_err() {
            ControlCounters::bump(&self.counters.reloads_failed);
            return;
        }
        self.config = config;
        ControlCounters::bump(&self.counters.reloads);
        if let Some(limits) = limits {
            self.settings.limits = self.settings.limits.reloaded(&limits);
        }
        if let Some(access) = access {
            self.access = access;
        }
        // Serve mode: a session stays only while the new configuration would admit its
        // peer. (Connect mode: the identities are the server's, which a reload of our own
        // trust settings does not revoke.)
        if !matches!(self.front, Front::Server(_)) {
            return;
        }
        let config = &self.config;
        let revoked: Vec<SessionId> = self
            .installed
            .iter()
            .filter(|(_, s)| match &s.identity {
                PeerIdentity::Psk(id) => !config.psks.iter().any(|p| p.identity == *id),
                PeerIdentity::Certificates(chain) => {
                    let unverified = recheck_certificates
                        && config.client_auth != control::ClientAuth::None
                        && config.peer_verification.verify_client(chain, wall).is_err();
                    // Identity rules that no longer admit the certificate revoke it, as a
                    // removed PSK identity does.
                    let refused = config.client_identity.as_ref().is_some_and(|rules| {
                        chain
                            .first()
                            .is_some_and(|ee| rules.check(ee.as_ref()).is_err())
                    });
                    unverified || refused
                }
                PeerIdentity::None => false,
            })
            .map(|(id, _)| *id)
            .collect();
        for id in revoked {
            ControlCounters::bump(&self.counters.sessions_revoked);
            self.close_session(now, id, CloseCause::Revoked);
        }
    }

    /// Closes an installed session through its shard (close_notify); its report completes
    /// the session's closing line.
    fn close_session(&mut self, now: Instant, id: SessionId, cause: CloseCause) {
        let Some(session) = self.forget_installed(id) else {
            return;
        };
        let shard = session.shard;
        self.closing.insert(id, (now, session));
        self.push(
            shard,
            ShardCommand::Close {
                session: id,
                reason: cause,
            },
        );
    }

    /// Takes session `id` out of the installed sessions (and its shard's count).
    fn forget_installed(&mut self, id: SessionId) -> Option<Installed> {
        let session = self.installed.remove(&id)?;
        self.by_source.remove(&self.settings.limits, session.peer);
        self.counters.observed.session_removed(session.suite);
        if self.by_peer.get(&session.peer) == Some(&id) {
            self.by_peer.remove(&session.peer);
        }
        if let Some(n) = self.shard_sessions.get_mut(session.shard) {
            *n = n.saturating_sub(1);
        }
        Some(session)
    }

    /// Sends `Close` (close_notify, then removal) for every installed session, retrying a
    /// full queue up to [`RuntimeConfig::close_retries`] times. Returns how many were sent.
    pub fn close_all(&mut self) -> usize {
        let mut sent = 0;
        self.by_peer.clear();
        for (id, session) in std::mem::take(&mut self.installed) {
            self.counters.observed.session_removed(session.suite);
            let Some(queues) = self.shards.get(session.shard) else {
                continue;
            };
            let mut command = ShardCommand::Close {
                session: id,
                reason: CloseCause::Shutdown,
            };
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
        self.retiring.clear();
        self.half_open.clear();
        self.by_source.clear();
        self.shard_sessions.iter_mut().for_each(|n| *n = 0);
        self.next_timer = None;
        sent
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
#[cfg(test)]
mod tests13;
#[cfg(test)]
mod tests_workers;
