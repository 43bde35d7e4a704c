//! What `serve` and `connect` share: shard threads on SO_REUSEPORT listen addresses, the
//! control thread, the optional metrics thread, reload and drain.
//!
//! Several listen addresses (`serve` only): the shards are split between them in listen
//! order, contiguously and as evenly as the count allows ([`shard_groups`]: 4 shards on 2
//! addresses are shards 0 and 1 on the first, 2 and 3 on the second), so each address is
//! its own reuseport group of its own shard sockets. There are at least as many shards as
//! addresses. A session lives on the shard whose socket its client reached, and answers
//! go out through that socket: from the address the client sent to.
//!
//! Startup ([`Daemon::start`]): spawn the shard threads (each pinned to a core when the
//! platform allows, each binding the listen address with SO_REUSEPORT through `dtls-io` on
//! the selected backend) and wait until every shard reports its socket bound, then start
//! the control thread and the metrics thread. With port 0 the first shard's port is used
//! by the others. A bind failure (port in use) stops everything with one error naming the
//! address.
//!
//! Connection IDs that name their shard ([`CidRouting`], serve mode): each shard hands
//! records under another shard's CID to that shard's queue, and unless turned off the last
//! shard to bind attaches the reuseport steering program (`dtls_io::SteeringProgram`) so
//! the kernel delivers them to their owner in the first place. The program maps shard ids
//! to group indices, which are the order of binding: the shards bind one at a time in shard
//! order, and with `--takeover` (another process's sockets come first in the group) no
//! program is attached and the group's is removed (see `docs/architecture.md`).
//!
//! Shutdown ([`Daemon::shutdown`]): the control thread stops and queues `Close`
//! (close_notify) for every installed session, the shards get a moment to flush their
//! queues, then they stop.
//!
//! Reload ([`Daemon::reload`]): a new engine configuration goes to every handshake worker
//! through its channel; handshakes started after it use it, live sessions keep their keys.
//!
//! Handshake workers (`control_threads`, [`default_control_threads`]): the control plane is
//! that many loops on their own threads, each built by the [`ControlBuilder`] (its own
//! acceptor and engines; the engine configuration, ticket keys included, shared) and made
//! worker `w` of `m` ([`ControlThread::set_worker`]). The shards' queues have one inbound
//! lane per worker ([`ControlLanes`]: serve spreads by the client's source address, connect
//! by the whole local source address). The workers share one set of control counters and
//! the drain switch; each has its own reload and admin channel ([`Daemon::reload`] and the
//! admin socket ask every one) and its own turn stamp for `/healthz`.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow};
use dataplane::cid::ShardField;
use dtls_crypto::pki_types::UnixTime;
use dtls_io::{CidSteering, SocketConfig, SteeringProgram, XdpProgram, bind_udp};
use dtls_runtime::{ControlCounters, ControlStats, ControlThread, Reload};
use dtls_shard::{
    ControlLanes, DEFAULT_INBOUND_BYTES, Handoffs, RelayMode, Shard, ShardConfig, ShardQueues,
    ShardStats, XdpListen,
};

use crate::admin::AdminServer;
use crate::config::{AdminSocket, CertKeyPaths, IoMode, Tuning};
use crate::metrics::{self, Certificates, ShardSource, Sources, WorkerSource};
use crate::sessionlog::DaemonLog;

/// Capacity of each queue between a shard and the control thread.
pub const QUEUE_CAPACITY: usize = 4096;
/// Longest wait for the shards to apply the final `Close` commands.
const DRAIN_WAIT: Duration = Duration::from_secs(1);
/// Longest wait for every shard to bind its socket.
const STARTUP_WAIT: Duration = Duration::from_secs(10);

/// A snapshot of every counter of a running daemon.
#[derive(Debug, Clone)]
pub struct Stats {
    /// Each shard's counters, in shard order.
    pub shards: Vec<ShardStats>,
    /// The control thread's counters.
    pub control: ControlStats,
}

impl Stats {
    /// The shards' counters summed.
    pub fn shards_total(&self) -> ShardStats {
        self.shards
            .iter()
            .fold(ShardStats::default(), |total, s| ShardStats::sum(&total, s))
    }
}

/// A running daemon: shard threads, the control thread, maybe the metrics thread.
#[derive(Debug)]
pub struct Daemon {
    /// Each listen address as bound (port 0 resolved), in configuration order.
    listen: Vec<SocketAddr>,
    /// The listen address of each shard's socket, by shard index.
    shard_listen: Vec<SocketAddr>,
    shards: Vec<JoinHandle<bool>>,
    shard_stop: Arc<AtomicBool>,
    shard_sources: Vec<ShardSource>,
    queues: Vec<Arc<ShardQueues>>,
    /// The handshake workers' threads.
    control: Vec<JoinHandle<usize>>,
    control_stop: Arc<AtomicBool>,
    control_counters: Arc<ControlCounters>,
    /// The control thread's drain switch ([`Daemon::begin_drain`]).
    draining: Arc<AtomicBool>,
    metrics: Option<(JoinHandle<()>, SocketAddr)>,
    metrics_stop: Arc<AtomicBool>,
    /// One per handshake worker.
    reloads: Vec<mpsc::Sender<Reload>>,
    admin: Option<AdminServer>,
    certificates: Arc<Certificates>,
}

/// Builds a control loop once the shards' queues exist and the listen addresses are bound
/// (its second argument: each shard's listen address by shard index, with the port bound
/// when the configuration said 0); called once per handshake worker.
pub type ControlBuilder =
    Box<dyn FnMut(Vec<Arc<ShardQueues>>, Vec<SocketAddr>) -> anyhow::Result<ControlThread> + Send>;

impl Daemon {
    /// Starts shards on the `listen` addresses (at least one; see the module docs for how
    /// shards are split between several) with `shard_config` (and, when `cids` is given,
    /// CID hand-off and steering), then the control loop `control` builds, then metrics
    /// when `tuning.metrics` is set. `about` is what `dtlsd status` tells of the daemon
    /// beyond its mode and addresses (see `crate::admin`).
    ///
    /// # Errors
    /// A socket that cannot be bound (port in use, bad address), a thread that could not
    /// start, or the control loop's own error.
    pub fn start(
        listen: &[SocketAddr],
        shard_config: ShardConfig,
        tuning: &Tuning,
        cids: Option<CidRouting>,
        mut control: ControlBuilder,
        about: serde_json::Value,
    ) -> anyhow::Result<Self> {
        if listen.is_empty() {
            return Err(anyhow!("no listen address"));
        }
        let activated = crate::activation::passed();
        for &addr in listen {
            // A socket passed by systemd holds the address for us: nobody else to find.
            if activated.is_none_or(|a| !a.has(addr)) {
                crate::portprobe::check_listen(addr, tuning.takeover, !tuning.dual_stack)?;
            }
        }
        // Bound before the shards start so that a bad address stops startup at once.
        let metrics_listener = tuning.metrics.map(metrics::Listener::bind).transpose()?;
        let shard_count = tuning
            .shards
            .or(tuning.cpus.as_ref().map(Vec::len))
            .unwrap_or_else(default_shards)
            .max(1);
        let shard_count = if shard_count < listen.len() {
            tracing::info!(
                shards = listen.len(),
                "fewer shards than listen addresses: one shard per address"
            );
            listen.len()
        } else {
            shard_count
        };
        let xdp_interface = xdp_interface(tuning, listen[0].ip(), shard_count)?;
        let workers = tuning
            .control_threads
            .unwrap_or_else(|| default_control_threads(shard_count))
            .max(1);
        let lanes = match shard_config.mode {
            RelayMode::Connect => ControlLanes::by_address(workers),
            _ => ControlLanes::by_source(workers),
        };
        let queues: Vec<Arc<ShardQueues>> = (0..shard_count)
            .map(|_| {
                Arc::new(ShardQueues::with_lanes(
                    QUEUE_CAPACITY,
                    QUEUE_CAPACITY,
                    DEFAULT_INBOUND_BYTES,
                    lanes.clone(),
                ))
            })
            .collect();
        let shard_stop = Arc::new(AtomicBool::new(false));
        let mut shard_config = shard_config;
        shard_config.io = tuning.data_io.io_config(io_mode(tuning.io));
        shard_config.idle_timeout = tuning.idle_timeout;
        shard_config.max_datagram = usize::from(tuning.mtu);
        shard_config.keepalive = tuning.keepalive;
        // The control loop refuses handshakes past this before its flight, so a completed
        // handshake always finds room in its shard's table.
        shard_config.max_sessions = tuning.limits.per_shard(shard_count);
        crate::descriptors::ensure(shard_count, &shard_config, metrics_listener.is_some());
        // Shards past the field's reach issue random CIDs (`ShardCids`), which could look
        // like another shard's: no routing by CID at all then.
        let cids = cids.filter(|c| {
            let fits = shard_count <= 1 << c.field.bits();
            if !fits {
                tracing::warn!(
                    shard_count,
                    "more shards than CIDs can name: no CID steering or hand-off"
                );
            }
            fits
        });
        let forwarding = cids
            .as_ref()
            .and_then(|c| c.nodes.as_ref())
            .map(|n| Arc::clone(&n.counters));
        let routing = cids.map(|cids| Routing {
            field: cids.field.clone(),
            steer: steering(
                &cids,
                &shard_groups(shard_count, listen.len()),
                tuning.takeover,
            ),
            queues: queues.clone(),
            nodes: cids.nodes,
        });
        let spawned = spawn_shards(
            listen,
            &shard_groups(shard_count, listen.len()),
            shard_config,
            &queues,
            routing,
            &shard_stop,
            tuning.cpus.as_deref(),
            tuning.data_io.socket_config(!tuning.dual_stack),
            xdp_interface,
        );
        let (shards, shard_sources, shard_listen) = match spawned {
            Ok(spawned) => spawned,
            Err(e) => {
                shard_stop.store(true, Relaxed);
                return Err(e);
            }
        };
        let stop_shards = |shards: Vec<JoinHandle<bool>>| {
            shard_stop.store(true, Relaxed);
            for s in shards {
                let _ = s.join();
            }
        };
        // Each address as bound: its first shard's socket.
        let groups = shard_groups(shard_count, listen.len());
        let listen: Vec<SocketAddr> = (0..listen.len())
            .filter_map(|g| groups.iter().position(|&k| k == g).map(|i| shard_listen[i]))
            .collect();
        let control_counters = Arc::new(ControlCounters::default());
        let draining = Arc::new(AtomicBool::new(false));
        let mut loops = Vec::with_capacity(workers);
        let (mut reload_txs, mut admin_txs) = (Vec::new(), Vec::new());
        for worker in 0..workers {
            let mut control = match control(queues.clone(), shard_listen.clone()) {
                Ok(control) => control,
                Err(e) => {
                    stop_shards(shards);
                    return Err(e);
                }
            };
            control.set_worker(worker, workers);
            control.set_counters(Arc::clone(&control_counters));
            control.set_drain_flag(Arc::clone(&draining));
            control.set_log(Box::new(DaemonLog::new(Arc::clone(&control_counters))));
            let (reload_tx, reload_rx) = mpsc::channel();
            control.set_reloads(reload_rx);
            let (admin_tx, admin_rx) = mpsc::channel();
            control.set_admin(admin_rx);
            reload_txs.push(reload_tx);
            admin_txs.push(admin_tx);
            loops.push(control);
        }
        let snapshots = shard_sources
            .iter()
            .map(|s| Arc::clone(&s.snapshots))
            .collect();
        let mut about = about;
        about["mode"] = mode_name(shard_config.mode).into();
        about["listen"] = listen.iter().map(ToString::to_string).collect();
        about["shard_listen"] = shard_listen.iter().map(ToString::to_string).collect();
        let admin = match start_admin(
            tuning,
            (mode_name(shard_config.mode), listen[0]),
            admin_txs,
            snapshots,
            about,
        ) {
            Ok(admin) => admin,
            Err(e) => {
                stop_shards(shards);
                return Err(e);
            }
        };
        let worker_sources: Vec<WorkerSource> = loops
            .iter()
            .map(|c| WorkerSource {
                counters: Arc::clone(c.worker_counters()),
                progress: Arc::clone(c.progress()),
            })
            .collect();
        let control_progress = Arc::clone(&worker_sources[0].progress);
        let control_stop = Arc::new(AtomicBool::new(false));
        let mut control_handles = Vec::with_capacity(workers);
        for mut control in loops {
            let stop = Arc::clone(&control_stop);
            let name = if workers == 1 {
                "dtlsd-control".to_string()
            } else {
                format!("dtlsd-control-{}", control.worker())
            };
            let spawned = std::thread::Builder::new().name(name).spawn(move || {
                // Established sessions first: a handshake worker yields a core it shares
                // with a shard (see `dtls_io::HANDSHAKE_WORKER_NICE`).
                match dtls_io::raise_current_thread_nice(dtls_io::HANDSHAKE_WORKER_NICE) {
                    Ok(nice) => tracing::debug!(nice, "handshake worker below the shards"),
                    Err(e) => {
                        tracing::warn!(error = %e, "could not lower the handshake worker's priority");
                    }
                }
                control.run(&stop);
                control.installed_sessions()
            });
            match spawned {
                Ok(h) => control_handles.push(h),
                Err(e) => {
                    control_stop.store(true, Relaxed);
                    for h in control_handles {
                        let _ = h.join();
                    }
                    stop_shards(shards);
                    return Err(e).context("spawning a control thread");
                }
            }
        }
        let metrics_stop = Arc::new(AtomicBool::new(false));
        let mut daemon = Self {
            listen,
            shard_listen,
            shards,
            shard_stop,
            shard_sources,
            queues,
            control: control_handles,
            control_stop,
            draining,
            control_counters,
            metrics: None,
            metrics_stop,
            reloads: reload_txs,
            admin,
            certificates: Arc::default(),
        };
        if let Some(listener) = metrics_listener {
            let addr = listener.local_addr();
            let sources = Sources {
                control: Arc::clone(&daemon.control_counters),
                control_progress,
                workers: worker_sources,
                shards: daemon.shard_sources.clone(),
                certificates: Arc::clone(&daemon.certificates),
                forwarding,
            };
            match listener.spawn(sources, Arc::clone(&daemon.metrics_stop)) {
                Ok(handle) => {
                    tracing::info!(%addr, "serving metrics at /metrics and /healthz");
                    daemon.metrics = Some((handle, addr));
                }
                Err(e) => {
                    let _ = daemon.shutdown();
                    return Err(e.into());
                }
            }
        }
        Ok(daemon)
    }

    /// The (first) listen address, with the port bound when 0 was asked for.
    pub fn local_addr(&self) -> SocketAddr {
        self.listen[0]
    }

    /// Every listen address, in configuration order, with the ports bound.
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.listen
    }

    /// Each shard's queues, by shard index.
    pub fn shard_queues(&self) -> &[Arc<ShardQueues>] {
        &self.queues
    }

    /// The listen address of each shard's socket, by shard index.
    pub fn shard_addrs(&self) -> &[SocketAddr] {
        &self.shard_listen
    }

    /// The metrics endpoint's address, when serving metrics.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics.as_ref().map(|(_, a)| *a)
    }

    /// The certificate files in use, for `dtlsd_certificate_expiry_timestamp_seconds`: set
    /// them at start and after each reload.
    pub fn certificates(&self) -> &Certificates {
        &self.certificates
    }

    /// The admin socket's path, when there is one.
    pub fn admin_socket(&self) -> Option<&std::path::Path> {
        self.admin.as_ref().map(AdminServer::path)
    }

    /// Number of shards.
    pub fn shard_count(&self) -> usize {
        self.shards.len()
    }

    /// Every counter now.
    pub fn stats(&self) -> Stats {
        Stats {
            shards: self
                .shard_sources
                .iter()
                .map(|s| s.shard.snapshot())
                .collect(),
            control: self.control_counters.snapshot(),
        }
    }

    /// Starts the drain window: from now on new handshakes are refused (and counted);
    /// sessions and handshakes under way go on.
    pub fn begin_drain(&self) {
        self.draining.store(true, Relaxed);
    }

    /// Sessions the shards hold now (their last published gauges).
    pub fn live_sessions(&self) -> u64 {
        self.shard_sources
            .iter()
            .map(|s| s.shard.snapshot().sessions_active)
            .sum()
    }

    /// Whether a worker thread stopped on its own (an error or a panic).
    pub fn failed(&self) -> bool {
        self.control.is_empty()
            || self.control.iter().any(JoinHandle::is_finished)
            || self.shards.iter().any(JoinHandle::is_finished)
            || self.metrics.as_ref().is_some_and(|(h, _)| h.is_finished())
    }

    /// Hands a new engine configuration to the control thread (already validated by the
    /// caller); handshakes started from now on use it, and live sessions it no longer
    /// admits are closed (see [`Reload`]). `restart_required` names the changed keys a
    /// reload cannot apply; they are logged as a warning (their running values stay).
    ///
    /// # Errors
    /// The control thread is gone.
    pub fn reload(&self, reload: Reload, restart_required: &[&str]) -> anyhow::Result<()> {
        for reloads in &self.reloads {
            reloads
                .send(reload.clone())
                .map_err(|_| anyhow!("a control thread has stopped"))?;
        }
        if !restart_required.is_empty() {
            tracing::warn!(
                keys = %restart_required.join(", "),
                "SIGHUP: changed keys need a restart to take effect; kept their running values"
            );
        }
        Ok(())
    }

    /// Counts a reload that failed before reaching the control thread (a file that could
    /// not be read or parsed), in `dtlsd_reloads_failed_total`.
    pub fn count_reload_failure(&self) {
        self.control_counters
            .reloads_failed
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// Closes every session (close_notify), stops every thread and waits for them.
    ///
    /// # Errors
    /// A thread that stopped with an error or panicked.
    pub fn shutdown(mut self) -> anyhow::Result<()> {
        let mut failed = Vec::new();
        self.control_stop.store(true, Relaxed);
        for control in std::mem::take(&mut self.control) {
            if control.join().is_err() {
                failed.push("a control thread panicked");
            }
        }
        // Give the shards time to apply the Close commands (each sends close_notify).
        let deadline = Instant::now() + DRAIN_WAIT;
        while self.queues.iter().any(|q| q.has_commands()) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(2));
        }
        std::thread::sleep(Duration::from_millis(20));
        self.shard_stop.store(true, Relaxed);
        for handle in std::mem::take(&mut self.shards) {
            match handle.join() {
                Ok(true) => {}
                Ok(false) => failed.push("a shard stopped with an error"),
                Err(_) => failed.push("a shard thread panicked"),
            }
        }
        if let Some(admin) = self.admin.take() {
            admin.stop();
        }
        self.metrics_stop.store(true, Relaxed);
        if let Some((handle, _)) = self.metrics.take()
            && handle.join().is_err()
        {
            failed.push("the metrics thread panicked");
        }
        let stats = self.control_counters.snapshot();
        tracing::info!(
            handshakes_started = stats.handshakes_started,
            handshakes_completed = stats.handshakes_completed,
            handshakes_resumed = stats.handshakes_resumed12 + stats.handshakes_resumed13,
            handshakes_resumed13 = stats.handshakes_resumed13,
            cookies_sent = stats.cookies_sent,
            half_open_refused = stats.half_open_refused,
            queue_full_drops = stats.queue_full_drops,
            "dtlsd stopped"
        );
        match failed.first() {
            None => Ok(()),
            Some(first) => Err(anyhow!("{first}")),
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // A daemon dropped without `shutdown` still stops its threads.
        self.control_stop.store(true, Relaxed);
        self.shard_stop.store(true, Relaxed);
        self.metrics_stop.store(true, Relaxed);
    }
}

/// Loads a certificate chain and its private key (PEM) for the handshake engine, checked
/// at the current time by `crate::certcheck` (key matches the certificate, validity, chain
/// order, unencrypted key); warnings are logged.
///
/// # Errors
/// Every problem that refuses the pair, on one line naming each file.
pub fn load_certified_key(paths: &CertKeyPaths) -> anyhow::Result<Arc<control::CertifiedKey>> {
    Ok(crate::certcheck::load_certified_key(
        paths,
        UnixTime::now(),
    )?)
}

/// Starts the admin socket `tuning` asks for. The default path is skipped with a warning
/// when it cannot be had (no /run/dtlsd for an unprivileged user, another daemon's socket
/// there): the data plane does not depend on it. An explicit path that fails stops start-up.
fn start_admin(
    tuning: &Tuning,
    (mode, listen): (&str, SocketAddr),
    control: Vec<mpsc::Sender<dtls_runtime::AdminRequest>>,
    snapshots: Vec<Arc<dtls_shard::SessionSnapshots>>,
    about: serde_json::Value,
) -> anyhow::Result<Option<AdminServer>> {
    let (path, explicit) = match &tuning.admin_socket {
        AdminSocket::Off => return Ok(None),
        AdminSocket::Default => (crate::admin::default_path(mode, listen), false),
        AdminSocket::At(path) => (path.clone(), true),
    };
    match AdminServer::start(&path, tuning.takeover, control, snapshots, about) {
        Ok(admin) => {
            tracing::info!(path = %path.display(), "admin socket for dtlsd status and dtlsd kick");
            Ok(Some(admin))
        }
        Err(e) if !explicit => {
            tracing::warn!(error = %format!("{e:#}"), "no admin socket (set admin_socket to choose a path, or `off`)");
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// Attaches or removes the reuseport group's steering program through `socket`. A refusal
/// (a kernel without reuseport programs) leaves the kernel's hash and the hand-off queues.
fn apply_steering(index: usize, steer: &Steer, socket: &std::net::UdpSocket) {
    match steer {
        Steer::Off => {}
        Steer::Attach(programs) => match programs.first().map(|p| (p, p.attach(socket))) {
            None => {}
            Some((program, Ok(()))) => tracing::info!(
                shard = index,
                instructions = program.insns().len(),
                "CID steering program attached to the reuseport group"
            ),
            Some((_, Err(e))) => tracing::warn!(
                shard = index,
                error = %e,
                "CID steering program refused; records reach their shard by hand-off"
            ),
        },
        Steer::Detach => {
            // ENOENT: the group had no program.
            let _ = dtls_io::detach_steering(socket);
        }
    }
}

fn mode_name(mode: dtls_shard::RelayMode) -> &'static str {
    match mode {
        dtls_shard::RelayMode::Serve => "serve",
        dtls_shard::RelayMode::Connect => "connect",
    }
}

/// Where the shard id sits in the CIDs a server issues, whether the kernel should steer
/// records by it (`cid_steering`), and where records naming other nodes go.
#[derive(Debug, Clone)]
pub struct CidRouting {
    /// The shard field of the issued CIDs.
    pub field: ShardField,
    /// Attach the reuseport steering program.
    pub steer: bool,
    /// In a fleet: this node's id and the node forwarder's queue (`crate::forward`).
    pub nodes: Option<NodeRouting>,
}

/// Records under CIDs naming another node than `own` go onto `queue`.
#[derive(Debug, Clone)]
pub struct NodeRouting {
    /// This node's id.
    pub own: u32,
    /// The node forwarder's queue.
    pub queue: mpsc::SyncSender<dtls_shard::NodeForward>,
    /// The forwarder's counters, for the metrics endpoint.
    pub counters: Arc<crate::forward::ForwardCounters>,
}

/// What the shards are given for CIDs that name them.
struct Routing {
    field: ShardField,
    steer: Steer,
    queues: Vec<Arc<ShardQueues>>,
    nodes: Option<NodeRouting>,
}

/// What the last shard to bind does about the reuseport group's program.
#[derive(Debug, Clone)]
enum Steer {
    /// Attach the program of the shard's listen address: one per address, in listen order
    /// (each address is a reuseport group of its own, numbering its sockets from 0).
    Attach(Vec<SteeringProgram>),
    /// Remove the group's program (another process shares the group).
    Detach,
    /// Leave the group alone.
    Off,
}

impl Steer {
    /// What the last shard to bind into the group of listen address `group` does.
    fn for_group(&self, group: usize) -> Steer {
        match self {
            Steer::Attach(programs) => {
                Steer::Attach(programs.get(group).cloned().into_iter().collect())
            }
            Steer::Detach => Steer::Detach,
            Steer::Off => Steer::Off,
        }
    }
}

/// Which steering `cids` and the tuning call for, logged once. `groups` is each shard's
/// listen address index ([`shard_groups`]).
fn steering(cids: &CidRouting, groups: &[usize], takeover: bool) -> Steer {
    let shards = groups.len();
    let handoff = if shards > 1 { "on" } else { "off (one shard)" };
    let (steer, mode) = if takeover {
        // The other process's sockets hold the first group indices, and their order
        // changes as they close: no index a program could name is known to be ours, and
        // the old process's program would send our CIDs to its sockets.
        (
            Steer::Detach,
            "off (--takeover: the reuseport group is shared)",
        )
    } else if !cids.steer {
        (Steer::Off, "off (cid_steering = false)")
    } else if shards < 2 {
        (Steer::Off, "off (one shard)")
    } else {
        // Each address's shards are a contiguous run: its group's socket i is shard
        // first + i, and a CID naming a shard of another address falls back to the hash
        // (a client keeps the address it sends to, so that is only a forged or stray one,
        // handed to its owner like any other).
        let programs = (0..=groups.iter().copied().max().unwrap_or(0))
            .map(|group| {
                let first = groups.iter().position(|&g| g == group).unwrap_or(0);
                let count = groups.iter().filter(|&&g| g == group).count();
                SteeringProgram::new(&CidSteering {
                    // At most 20 (QUIC-LB).
                    cid_len: u8::try_from(cids.field.cid_len()).unwrap_or(u8::MAX),
                    first_octet: cids.field.first_octet(),
                    // Encrypted CIDs change codepoint when their keys rotate (SIGHUP): the
                    // program, attached once, steers every routable codepoint.
                    any_codepoint: cids.field.is_encrypted(),
                    shard_bit_offset: cids.field.bit_offset(),
                    shard_bits: cids.field.bits(),
                    first_shard: u16::try_from(first).unwrap_or(u16::MAX),
                    shards: u16::try_from(count).unwrap_or(u16::MAX),
                })
            })
            .collect();
        (Steer::Attach(programs), "reuseport program")
    };
    tracing::info!(
        steering = mode,
        handoff,
        "connection IDs name their shard: CID steering and hand-off"
    );
    steer
}

/// The listen address index of each shard: `shards` split into `addresses` contiguous runs
/// in address order, the first `shards % addresses` runs one longer.
pub fn shard_groups(shards: usize, addresses: usize) -> Vec<usize> {
    let addresses = addresses.max(1);
    let (base, extra) = (shards / addresses, shards % addresses);
    (0..addresses)
        .flat_map(|g| std::iter::repeat_n(g, base + usize::from(g < extra)))
        .collect()
}

/// Handshake workers by default: the cores the shards leave over (the shards take one core
/// each), at least 1 and at most 8. With the default shard count (every core but one)
/// that is one worker, as before workers existed; a host given fewer shards than cores
/// puts the rest to handshakes. At most 8: one worker completes on the order of 10 000
/// full handshakes a second, and each worker holds its own share of the global caps
/// (half-open, sessions), which more workers would thin out.
pub fn default_control_threads(shards: usize) -> usize {
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    cores.saturating_sub(shards).clamp(1, 8)
}

/// One shard per core beyond the first (the control thread's), at least one.
fn default_shards() -> usize {
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    if cores <= 2 { 1 } else { cores - 1 }
}

/// The interface the shards serve through AF_XDP, if any. With `io = "xdp"` every reason
/// AF_XDP cannot work stops start-up; with `io = "auto"` and an interface, AF_XDP is tried
/// first and the socket backends take over (io_uring, then recvmmsg/sendmmsg, each with its
/// own logged reason) when the interface check or the set-up probe fails, logged with why.
fn xdp_interface(
    tuning: &Tuning,
    listen: std::net::IpAddr,
    shard_count: usize,
) -> anyhow::Result<Option<&str>> {
    let Some(interface) = tuning.interface.as_deref() else {
        return Ok(None);
    };
    let shards = u32::try_from(shard_count).unwrap_or(u32::MAX);
    // Before anything is bound or attached: the reasons an operator can fix.
    let checked = dtls_io::check_xdp_interface(interface, listen, shards)
        .map_err(|e| e.to_string())
        .and_then(|queues| match tuning.io {
            // The real set-up reports its own failure, naming the shard and queue.
            IoMode::Xdp => Ok(queues),
            _ => dtls_io::probe_xdp(interface)
                .map(|()| queues)
                .map_err(|e| e.to_string()),
        });
    let queues = match (checked, tuning.io) {
        (Ok(queues), _) => queues,
        (Err(reason), IoMode::Xdp) => return Err(anyhow!("--io xdp: {reason}")),
        (Err(reason), _) => {
            tracing::warn!(
                %interface,
                %reason,
                "io auto: AF_XDP cannot be used on this interface; trying io_uring, then \
                 recvmmsg/sendmmsg"
            );
            return Ok(None);
        }
    };
    if tuning.io != IoMode::Xdp {
        tracing::info!(%interface, "io auto: AF_XDP set-up works on this interface; using it");
    }
    if let Some(queues) = queues.filter(|&q| q > shards) {
        // The program passes frames of queues without a socket to the kernel, whose
        // socket is not read: make RSS use only the shards' queues.
        tracing::warn!(
            %interface,
            queues,
            shards,
            "interface has more receive queues than shards: datagrams the NIC puts on \
             queues {shards}..{queues} are not served (ethtool -L {interface} combined \
             {shards}, or ethtool -X {interface} equal {shards})"
        );
    }
    Ok(Some(interface))
}

fn io_mode(mode: IoMode) -> dtls_io::IoMode {
    match mode {
        IoMode::Auto => dtls_io::IoMode::Auto,
        IoMode::Uring => dtls_io::IoMode::Uring,
        IoMode::Mmsg => dtls_io::IoMode::Mmsg,
        // The listen side is AF_XDP (`XdpListen`); no socket backend reads it.
        IoMode::Xdp => dtls_io::IoMode::Mmsg,
    }
}

/// What a shard reports once its socket is bound: its counters and address, or why it
/// failed.
/// An AF_XDP shard also hands on the program it attached (the first) or joined.
type Ready = Result<(ShardSource, SocketAddr, Option<Arc<XdpProgram>>), String>;

type Spawned = (Vec<JoinHandle<bool>>, Vec<ShardSource>, Vec<SocketAddr>);

/// Spawns one thread per shard, one at a time: each binds its socket on `listen[groups[i]]`
/// and reports before the next starts, so with port 0 the others of its address bind the
/// first one's port. Returns once every shard is bound, with each shard's counters and
/// bound address in index order, or the first failure (the others are then stopped by the
/// caller through `stop`).
#[allow(
    clippy::too_many_arguments,
    reason = "start-up's one call: each argument is a separate piece of the daemon"
)]
fn spawn_shards(
    listen: &[SocketAddr],
    groups: &[usize],
    config: ShardConfig,
    queues: &[Arc<ShardQueues>],
    routing: Option<Routing>,
    stop: &Arc<AtomicBool>,
    cpus: Option<&[usize]>,
    socket: SocketConfig,
    xdp_interface: Option<&str>,
) -> anyhow::Result<Spawned> {
    let mut program: Option<Arc<XdpProgram>> = None;
    let xdp_queues = u32::try_from(queues.len()).unwrap_or(u32::MAX);
    // The configured CPUs in order, else those of the process's affinity mask (taskset,
    // systemd's CPUAffinity=), so that two daemons given disjoint sets never share a core.
    let cores: Vec<core_affinity::CoreId> = match cpus {
        Some(list) => list
            .iter()
            .map(|&id| core_affinity::CoreId { id })
            .collect(),
        None => core_affinity::get_core_ids().unwrap_or_default(),
    };
    let mut handles = Vec::with_capacity(queues.len());
    let mut sources = Vec::with_capacity(queues.len());
    let mut bound = listen.to_vec();
    let mut shard_addrs = Vec::with_capacity(queues.len());
    for (index, q) in queues.iter().enumerate() {
        let q = Arc::clone(q);
        let stop = Arc::clone(stop);
        let (ready_tx, ready_rx) = mpsc::channel::<Ready>();
        let core = (!cores.is_empty()).then(|| cores[index % cores.len()]);
        let group = groups[index];
        let addr = bound[group];
        // The first shard of an address takes its socket from socket activation, if any.
        let inherited = match crate::activation::passed() {
            Some(activated) if groups.iter().position(|&g| g == group) == Some(index) => {
                let shards = groups.iter().filter(|&&g| g == group).count();
                activated.take(addr, shards)?
            }
            _ => None,
        };
        // The last shard of its address's group: the group is complete once it is bound.
        let last = groups.get(index + 1) != Some(&group);
        let cids = routing.as_ref().map(|r| ShardCidRouting {
            handoffs: (r.queues.len() > 1 || r.nodes.is_some()).then(|| {
                let id = u16::try_from(index).unwrap_or(u16::MAX);
                let handoffs = Handoffs::new(r.field.clone(), id, r.queues.clone());
                match &r.nodes {
                    Some(nodes) => handoffs.with_nodes(nodes.own, nodes.queue.clone()),
                    None => handoffs,
                }
            }),
            // Attached once every shard is in the group, in shard order.
            steer: if last {
                r.steer.for_group(group)
            } else {
                Steer::Off
            },
        });
        let xdp = xdp_interface.map(|interface| XdpListen {
            interface: interface.to_owned(),
            queue: u32::try_from(index).unwrap_or(u32::MAX),
            program: program.clone(),
            queues: xdp_queues,
            force_copy: false,
        });
        let handle = std::thread::Builder::new()
            .name(format!("dtlsd-shard-{index}"))
            .spawn(move || {
                run_shard(
                    index,
                    (addr, socket, inherited, xdp),
                    config,
                    cids,
                    q,
                    core,
                    &stop,
                    &ready_tx,
                )
            })
            .context("spawning a shard thread")?;
        handles.push(handle);
        match ready_rx.recv_timeout(STARTUP_WAIT) {
            Ok(Ok((source, local, attached))) => {
                if program.is_none() {
                    program = attached;
                }
                sources.push(source);
                bound[group] = local;
                shard_addrs.push(local);
            }
            Ok(Err(message)) => return Err(anyhow!(message)),
            Err(_) => return Err(anyhow!("shards did not start within {STARTUP_WAIT:?}")),
        }
    }
    Ok((handles, sources, shard_addrs))
}

/// One shard's part of the CID routing.
struct ShardCidRouting {
    handoffs: Option<Handoffs>,
    steer: Steer,
}

/// A shard thread: pin, bind, steer, report, run. Returns whether it stopped cleanly.
#[allow(
    clippy::too_many_arguments,
    reason = "a thread entry point: each argument is moved in once"
)]
fn run_shard(
    index: usize,
    (listen, socket, inherited, xdp): (
        SocketAddr,
        SocketConfig,
        Option<std::net::UdpSocket>,
        Option<XdpListen>,
    ),
    config: ShardConfig,
    cids: Option<ShardCidRouting>,
    queues: Arc<ShardQueues>,
    core: Option<core_affinity::CoreId>,
    stop: &AtomicBool,
    ready: &mpsc::Sender<Ready>,
) -> bool {
    match core {
        Some(id) if core_affinity::set_for_current(id) => {
            tracing::debug!(shard = index, core = id.id, "shard pinned");
        }
        Some(id) => tracing::warn!(shard = index, core = id.id, "could not pin shard to core"),
        None => tracing::warn!(shard = index, "core list unavailable; shard not pinned"),
    }
    let shard = match (inherited, &xdp) {
        (Some(passed), None) => Shard::new(passed, queues, config),
        (None, None) => Shard::bind(listen, &socket, queues, config),
        (passed, Some(x)) => passed
            .map_or_else(|| bind_udp(listen, &socket).map(|b| b.socket), Ok)
            .map_err(dtls_shard::Error::from)
            .and_then(|s| Shard::with_xdp(s, queues, config, x)),
    };
    let bound = shard.and_then(|shard| shard.local_addr().map(|addr| (shard, addr)));
    let (mut shard, local) = match bound {
        Ok(bound) => bound,
        Err(e) => {
            let message = match &xdp {
                Some(x) => format!(
                    "--io xdp: cannot serve {listen} on interface {:?} queue {}: {e}",
                    x.interface, x.queue
                ),
                None => format!("cannot listen on {listen}: {e}"),
            };
            // The receiver is gone only when startup already failed: nothing to report to.
            let _ = ready.send(Err(message));
            return false;
        }
    };
    if let Some(reason) = shard.io().and_then(|io| io.fallback_reason()) {
        tracing::info!(shard = index, %reason, "io_uring unavailable; using recvmmsg/sendmmsg");
    }
    if let (Some(io), Some(x)) = (shard.xdp(), &xdp) {
        match io.copy_reason() {
            None if io.zero_copy() => tracing::info!(
                shard = index,
                interface = %x.interface,
                queue = x.queue,
                "AF_XDP in zero-copy mode"
            ),
            None => tracing::info!(
                shard = index,
                interface = %x.interface,
                queue = x.queue,
                "AF_XDP in copy mode (zero-copy not tried)"
            ),
            Some(reason) => tracing::info!(
                shard = index,
                interface = %x.interface,
                queue = x.queue,
                %reason,
                "AF_XDP in copy mode: the driver refused zero-copy"
            ),
        }
    }
    // What the shard really runs with, read back: the batch and ring sizes of its backend,
    // GSO as the kernel left it, the socket buffers as getsockopt reports them (twice what
    // was granted, socket(7)).
    let (rcvbuf, sndbuf) = dtls_io::buffer_sizes(shard.socket());
    match shard.io() {
        Some(io) => tracing::info!(
            shard = index,
            backend = ?shard.backend_kind(),
            %local,
            batch = io.batch(),
            uring_buffers = io.provided_buffers().map_or(0, u32::from),
            uring_sq_entries = io.uring_features().map_or(0, |f| f.sq_entries),
            uring_cq_entries = io.uring_features().map_or(0, |f| f.cq_entries),
            gso = io.gso(),
            rcvbuf,
            sndbuf,
            "shard bound"
        ),
        None => tracing::info!(
            shard = index,
            backend = ?shard.backend_kind(),
            %local,
            rcvbuf,
            sndbuf,
            "shard bound"
        ),
    }
    if let Some(cids) = cids {
        if let Some(handoffs) = cids.handoffs {
            shard.set_handoffs(handoffs);
        }
        // With AF_XDP the NIC's RSS picks the queue, hence the shard: records under another
        // shard's CID reach their owner through the hand-off queue alone.
        if shard.xdp().is_none() {
            apply_steering(index, &cids.steer, shard.socket());
        }
    }
    let attached = shard.xdp().map(|io| Arc::clone(io.program()));
    let source = ShardSource {
        shard: Arc::clone(shard.counters()),
        io: Arc::clone(shard.io_counters()),
        progress: Arc::clone(shard.progress()),
        snapshots: Arc::clone(shard.snapshots()),
        listen: local,
    };
    if ready.send(Ok((source, local, attached))).is_err() {
        return false;
    }
    match shard.run(stop) {
        Ok(()) => true,
        Err(e) => {
            tracing::error!(shard = index, error = %e, "shard stopped");
            false
        }
    }
}
