//! `dtlsd serve`: shard threads on one SO_REUSEPORT listen address, one control thread, and
//! a signal-driven drain.
//!
//! Startup: resolve the configuration (flags over `--config`), load the certificate, key,
//! client CA and PSKs into a `control::Config` (server preference order: the engine's
//! default suite order), spawn the shard threads (each pinned to a core when the platform
//! allows, each binding the listen address with SO_REUSEPORT through `dtls-io` on the
//! selected backend) and wait until every shard reports its socket bound, then start the
//! control thread. A bind failure (port in use) stops everything with one line naming the
//! address.
//!
//! Shutdown on SIGINT/SIGTERM: the control thread stops and queues `Close` (close_notify)
//! for every installed session, the shards get a moment to flush their queues, then they
//! stop and the process exits 0.
//!
//! `--metrics ADDR` is bound before any shard starts (a bind failure stops startup with one
//! line naming the address) and served by `dtlsd::metrics` on its own thread, which only
//! reads the shards' and the control thread's relaxed atomic counters.
//!
//! Not here yet: heartbeat keepalive probes (`--keepalive`), SIGHUP reload. `--keepalive` is
//! logged as ignored when set.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow};
use control::crypto::SystemRng;
use control::runtime::{ControlThread, RuntimeConfig};
use control::{Acceptor, AcceptorConfig, CertifiedKey, ClientAuth, PeerVerifier, SigningKey};
use dtls_crypto::CertificateVerifier;
use dtls_io::{IoConfig, SocketConfig};
use dtls_shard::{Shard, ShardConfig, ShardQueues};
use dtlsd::config::merge::ServeFlags;
use dtlsd::config::{IoMode, LogFormat, ServeConfig};
use dtlsd::metrics::{self, ShardSource, Sources};
use zeroize::Zeroizing;

/// Exit code for an invalid configuration (as `check-config` and usage errors).
const EXIT_INVALID_CONFIG: u8 = 2;
/// Capacity of each queue between a shard and the control thread.
const QUEUE_CAPACITY: usize = 4096;
/// How often the main thread looks at the signal flag and the threads' health.
const MAIN_POLL: Duration = Duration::from_millis(20);
/// Longest wait for the shards to apply the final `Close` commands.
const DRAIN_WAIT: Duration = Duration::from_secs(1);
/// Longest wait for every shard to bind its socket.
const STARTUP_WAIT: Duration = Duration::from_secs(10);

/// Runs `dtlsd serve` until SIGINT/SIGTERM. Logging starts (through `init_logging`) once
/// the configuration is resolved, in its `log_format`.
///
/// An invalid configuration is reported on stderr (one line per problem) and gives exit
/// code 2.
///
/// # Errors
/// An unreadable or invalid PEM file, a socket that cannot be
/// bound (port in use), or a thread that could not start.
pub fn run(flags: ServeFlags, init_logging: fn(LogFormat)) -> anyhow::Result<ExitCode> {
    let config = match flags.resolve() {
        Ok(config) => config,
        Err(errors) => {
            // One line per problem, each naming its key; exit 2 like `check-config`.
            for e in &errors.0 {
                eprintln!("dtlsd: error: {}", e.to_string().replace('\n', " "));
            }
            return Ok(ExitCode::from(EXIT_INVALID_CONFIG));
        }
    };
    init_logging(config.tuning.log_format);
    let engine = Arc::new(engine_config(&config)?);
    let term = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(signal, Arc::clone(&term))
            .context("installing signal handlers")?;
    }
    warn_unimplemented(&config);
    // Bound before the shards start so that a bad address stops startup at once.
    let metrics_listener = config
        .tuning
        .metrics
        .map(metrics::Listener::bind)
        .transpose()?;

    let shard_count = config.tuning.shards.unwrap_or_else(default_shards).max(1);
    let queues: Vec<Arc<ShardQueues>> = (0..shard_count)
        .map(|_| Arc::new(ShardQueues::new(QUEUE_CAPACITY, QUEUE_CAPACITY)))
        .collect();
    let shard_stop = Arc::new(AtomicBool::new(false));
    let (shards, shard_sources) = match spawn_shards(&config, &queues, &shard_stop) {
        Ok(spawned) => spawned,
        Err(e) => {
            shard_stop.store(true, Relaxed);
            return Err(e);
        }
    };

    let mut rng = SystemRng::new();
    let acceptor = Acceptor::new(
        Arc::clone(&engine),
        AcceptorConfig::default(),
        &mut rng,
        Instant::now(),
    )
    .context("server configuration")?;
    let control_stop = Arc::new(AtomicBool::new(false));
    let mut control = ControlThread::new(
        acceptor,
        queues.clone(),
        RuntimeConfig::default(),
        Box::new(|| Box::new(SystemRng::new())),
    );
    let control_counters = Arc::clone(control.counters());
    let control_handle = {
        let stop = Arc::clone(&control_stop);
        std::thread::Builder::new()
            .name("dtlsd-control".into())
            .spawn(move || {
                control.run(&stop);
                control.installed_sessions()
            })
            .context("spawning the control thread")?
    };
    let metrics_stop = Arc::new(AtomicBool::new(false));
    let metrics_handle = match metrics_listener {
        None => None,
        Some(listener) => {
            let addr = listener.local_addr();
            let sources = Sources {
                control: Arc::clone(&control_counters),
                shards: shard_sources,
            };
            let handle = listener.spawn(sources, Arc::clone(&metrics_stop))?;
            tracing::info!(%addr, "serving metrics at /metrics and /healthz");
            Some(handle)
        }
    };
    tracing::info!(
        listen = %config.listen,
        backend = %config.backend,
        shards = shard_count,
        "dtlsd serve listening"
    );

    let mut failed = false;
    while !term.load(Relaxed) {
        if control_handle.is_finished()
            || shards.iter().any(JoinHandle::is_finished)
            || metrics_handle.as_ref().is_some_and(JoinHandle::is_finished)
        {
            tracing::error!("a worker thread stopped unexpectedly; shutting down");
            failed = true;
            break;
        }
        std::thread::sleep(MAIN_POLL);
    }
    tracing::info!("shutting down: closing every session");
    control_stop.store(true, Relaxed);
    if control_handle.join().is_err() {
        tracing::error!("the control thread panicked");
        failed = true;
    }
    // Give the shards time to apply the Close commands (each sends close_notify).
    let deadline = Instant::now() + DRAIN_WAIT;
    while queues.iter().any(|q| q.has_commands()) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(2));
    }
    std::thread::sleep(Duration::from_millis(20));
    shard_stop.store(true, Relaxed);
    for handle in shards {
        match handle.join() {
            Ok(true) => {}
            Ok(false) => failed = true,
            Err(_) => {
                tracing::error!("a shard thread panicked");
                failed = true;
            }
        }
    }
    metrics_stop.store(true, Relaxed);
    if metrics_handle.is_some_and(|h| h.join().is_err()) {
        tracing::error!("the metrics thread panicked");
        failed = true;
    }
    let stats = control_counters.snapshot();
    tracing::info!(
        handshakes_started = stats.handshakes_started,
        handshakes_completed = stats.handshakes_completed,
        cookies_sent = stats.cookies_sent,
        half_open_refused = stats.half_open_refused,
        queue_full_drops = stats.queue_full_drops,
        "dtlsd serve stopped"
    );
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// One shard per core beyond the first (the control thread's), at least one.
fn default_shards() -> usize {
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    if cores <= 2 { 1 } else { cores - 1 }
}

fn warn_unimplemented(config: &ServeConfig) {
    if config.tuning.keepalive.is_some() {
        tracing::warn!("--keepalive probes are not implemented yet; ignored");
    }
}

/// The handshake engine's server configuration from the resolved daemon configuration.
fn engine_config(config: &ServeConfig) -> anyhow::Result<control::Config> {
    let creds = &config.credentials;
    let certificate = match &creds.certificate {
        None => None,
        Some(paths) => {
            let chain = dtls_crypto::pem::load_certificates(&paths.cert)
                .with_context(|| format!("cert {}", paths.cert.display()))?;
            let key = SigningKey::from_pem_file(&paths.key)
                .with_context(|| format!("key {}", paths.key.display()))?;
            Some(Arc::new(CertifiedKey { chain, key }))
        }
    };
    let (client_auth, peer_verification) = match &creds.client_ca {
        None => (
            ClientAuth::None,
            PeerVerifier::DangerousAcceptAnyCertificateForTestsOnly,
        ),
        Some(path) => {
            let verifier = CertificateVerifier::from_pem_file(path)
                .with_context(|| format!("client_ca {}", path.display()))?;
            (ClientAuth::Required, PeerVerifier::WebPki(verifier))
        }
    };
    let psks = creds
        .psks
        .iter()
        .map(|p| control::Psk {
            identity: p.identity.as_bytes().to_vec(),
            key: Zeroizing::new(p.key().to_vec()),
        })
        .collect();
    let engine = control::Config {
        certificate,
        client_auth,
        // Without client authentication no peer certificate is ever asked for, so the
        // accept-any policy above is never consulted.
        peer_verification,
        psks,
        mtu: usize::from(config.tuning.mtu),
        ..control::Config::default()
    };
    engine.validate().context("server configuration")?;
    Ok(engine)
}

fn io_mode(mode: IoMode) -> dtls_io::IoMode {
    match mode {
        IoMode::Auto => dtls_io::IoMode::Auto,
        IoMode::Uring => dtls_io::IoMode::Uring,
        IoMode::Mmsg => dtls_io::IoMode::Mmsg,
    }
}

/// What a shard reports once its socket is bound: its index and counters, or why it failed.
type Ready = Result<(usize, ShardSource), String>;

/// Spawns one thread per shard; each binds its socket and reports before running. Returns
/// once every shard is bound, with each shard's counters in index order, or the first
/// failure (the others are then stopped by the caller through `stop`).
fn spawn_shards(
    config: &ServeConfig,
    queues: &[Arc<ShardQueues>],
    stop: &Arc<AtomicBool>,
) -> anyhow::Result<(Vec<JoinHandle<bool>>, Vec<ShardSource>)> {
    let mut shard_config = ShardConfig::new(config.backend);
    shard_config.io = IoConfig {
        mode: io_mode(config.tuning.io),
        ..IoConfig::default()
    };
    shard_config.idle_timeout = config.tuning.idle_timeout;
    shard_config.max_datagram = usize::from(config.tuning.mtu);
    let cores = core_affinity::get_core_ids().unwrap_or_default();
    let listen = config.listen;
    let (ready_tx, ready_rx) = mpsc::channel::<Ready>();
    let mut handles = Vec::with_capacity(queues.len());
    for (index, q) in queues.iter().enumerate() {
        let q = Arc::clone(q);
        let stop = Arc::clone(stop);
        let ready = ready_tx.clone();
        let core = (!cores.is_empty()).then(|| cores[index % cores.len()]);
        let handle = std::thread::Builder::new()
            .name(format!("dtlsd-shard-{index}"))
            .spawn(move || run_shard(index, listen, shard_config, q, core, &stop, &ready))
            .context("spawning a shard thread")?;
        handles.push(handle);
    }
    drop(ready_tx);
    let mut sources: Vec<Option<ShardSource>> = vec![None; queues.len()];
    for _ in 0..queues.len() {
        match ready_rx.recv_timeout(STARTUP_WAIT) {
            Ok(Ok((index, source))) => {
                if let Some(slot) = sources.get_mut(index) {
                    *slot = Some(source);
                }
            }
            Ok(Err(message)) => return Err(anyhow!(message)),
            Err(_) => return Err(anyhow!("shards did not start within {STARTUP_WAIT:?}")),
        }
    }
    let sources = sources
        .into_iter()
        .collect::<Option<Vec<_>>>()
        .ok_or_else(|| anyhow!("a shard reported twice at startup"))?;
    Ok((handles, sources))
}

/// A shard thread: pin, bind, report, run. Returns whether it stopped cleanly.
fn run_shard(
    index: usize,
    listen: SocketAddr,
    config: ShardConfig,
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
    let mut shard = match Shard::bind(listen, &SocketConfig::default(), queues, config) {
        Ok(shard) => shard,
        Err(e) => {
            // The receiver is gone only when startup already failed: nothing to report to.
            let _ = ready.send(Err(format!("cannot listen on {listen}: {e}")));
            return false;
        }
    };
    if let Some(reason) = shard.io().fallback_reason() {
        tracing::info!(shard = index, %reason, "io_uring unavailable; using recvmmsg/sendmmsg");
    }
    tracing::info!(shard = index, backend = ?shard.backend_kind(), "shard bound");
    let source = ShardSource {
        shard: Arc::clone(shard.counters()),
        io: Arc::clone(shard.io().counters()),
    };
    if ready.send(Ok((index, source))).is_err() {
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
