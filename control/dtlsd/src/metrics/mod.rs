//! The `--metrics` endpoint: OpenMetrics text at `/metrics` and a health report at
//! `/healthz`, served over HTTP/1.1 by one thread.
//!
//! What it does: the `dtlsd-metrics` thread runs a current-thread tokio runtime; hyper's
//! HTTP/1.1 server handles each accepted connection on its own task, so a slow or idle
//! client holds one task and one descriptor, never the endpoint. Each connection is bounded:
//! its request head must arrive within [`HEADER_TIMEOUT`] and be at most [`MAX_REQUEST`]
//! bytes (431 beyond), the whole exchange must end within [`CONNECTION_DEADLINE`], one
//! request per connection (no keep-alive), and at most [`MAX_CONNECTIONS`] are open at once
//! (more get a 503 and are closed). `/metrics` encodes the control thread's counters and
//! every shard's data-plane and I/O counters, read from the `Arc` handles the loops share
//! ([`Sources`]) with relaxed atomic loads, so a scrape never blocks or slows a shard.
//! `/healthz` reports how long ago each shard and the control thread last finished a loop
//! turn ([`Health`]), 503 when one is stalled.
//!
//! Why these crates: `prometheus-client` is the Prometheus project's Rust client and encodes
//! OpenMetrics, the format Prometheus asks for first; its [`Collector`] trait reads our own
//! atomics at scrape time, so nothing is copied into a second set of counters. hyper is the
//! HTTP implementation most of the Rust ecosystem runs on (with the header-read timer and
//! head size limit this endpoint needs); on a current-thread runtime, inside the one thread
//! the old endpoint had, it adds no threads and nothing to the data path. A blocking server
//! would need a thread per slow client to stay responsive; here a slow client costs a task.
//!
//! What it does not do: TLS, keep-alive, HTTP/2, histograms (I/O batch sizes are exposed as
//! batch and datagram counters, whose ratio is the mean batch size).
//!
//! [`Collector`]: prometheus_client::collector::Collector

mod exposition;
mod health;
mod process;
mod server;

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::thread::JoinHandle;
use std::time::Duration;

use dtls_io::IoCounters;
use dtls_runtime::ControlCounters;
use dtls_shard::{Progress, ShardCounters};

pub use exposition::{CONTENT_TYPE, Snapshot, WorkerReading, render, render_snapshot};
pub use health::{Health, STALL_AFTER};
pub use process::ProcessStats;

/// Largest request head (hyper's smallest read buffer); a larger one gets 431.
pub const MAX_REQUEST: usize = 8 * 1024;
/// A request head must be complete this long after the connection is accepted.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// A connection is closed this long after it was accepted, whatever it is doing.
pub const CONNECTION_DEADLINE: Duration = Duration::from_secs(10);
/// Most connections open at once.
pub const MAX_CONNECTIONS: usize = 64;
/// Most descriptors the endpoint holds: its connections, the listener, a spare and the
/// runtime's own (epoll and its waker).
pub const MAX_DESCRIPTORS: usize = MAX_CONNECTIONS + 4;
/// How often the accept loop looks at the stop flag.
const STOP_POLL: Duration = Duration::from_millis(50);
/// Pause after a failed accept (descriptors exhausted, ...) instead of spinning.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// Errors of the metrics endpoint.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The listen address could not be bound (in use, not local, no permission).
    #[error("cannot serve metrics on {addr}: {source}")]
    Bind {
        /// The `--metrics` address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The server thread or its runtime could not be started.
    #[error("cannot start the metrics thread: {0}")]
    Spawn(#[source] std::io::Error),
}

/// What one shard shares with the endpoint: its data-plane counters, its listen socket's
/// I/O counters and its progress stamp.
#[derive(Debug, Clone)]
pub struct ShardSource {
    /// The shard's own counters.
    pub shard: Arc<ShardCounters>,
    /// The shard's listen-socket I/O counters.
    pub io: Arc<IoCounters>,
    /// When the shard last finished a loop turn.
    pub progress: Arc<Progress>,
    /// Where the shard publishes its sessions for `dtlsd status`.
    pub snapshots: Arc<dtls_shard::SessionSnapshots>,
    /// The listen address the shard's socket is bound to.
    pub listen: std::net::SocketAddr,
}

/// Everything `/metrics` and `/healthz` report.
#[derive(Debug, Clone)]
pub struct Sources {
    /// The control thread's counters.
    pub control: Arc<ControlCounters>,
    /// When the control thread (the first handshake worker) last finished a loop turn.
    pub control_progress: Arc<Progress>,
    /// Each handshake worker, in worker order (the metrics label them; health checks each).
    pub workers: Vec<WorkerSource>,
    /// One entry per shard, in shard index order.
    pub shards: Vec<ShardSource>,
    /// The certificate files in use and when they expire.
    pub certificates: Arc<Certificates>,
    /// The node forwarder's counters, in a fleet (`crate::forward`).
    pub forwarding: Option<Arc<crate::forward::ForwardCounters>>,
}

/// One handshake worker's counters and turn stamp.
#[derive(Debug, Clone)]
pub struct WorkerSource {
    /// Its own counters.
    pub counters: Arc<dtls_runtime::WorkerCounters>,
    /// When it last finished a loop turn.
    pub progress: Arc<Progress>,
}

/// One certificate file in use: which key named it, and the earliest `notAfter` among its
/// certificates (when the chain, or the trust it gives, stops verifying).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateReading {
    /// The configuration key (`cert`, `client_ca`, `ca`).
    pub key: &'static str,
    /// The file.
    pub path: std::path::PathBuf,
    /// Earliest `notAfter`, Unix seconds.
    pub not_after: i64,
}

/// The certificate files the daemon loaded, set at start and at each reload, read by the
/// metrics thread (`dtlsd_certificate_expiry_timestamp_seconds`).
#[derive(Debug, Default)]
pub struct Certificates(std::sync::Mutex<Vec<CertificateReading>>);

impl Certificates {
    /// Replaces the set with `files` (`(key, path)`); a file whose certificates cannot be
    /// read is left out (start-up and reload have already refused or reported it).
    pub fn set(&self, files: &[(&'static str, &std::path::Path)]) {
        let readings = files
            .iter()
            .filter_map(|&(key, path)| {
                let not_after = crate::certcheck::earliest_not_after(path)?;
                Some(CertificateReading {
                    key,
                    path: path.to_path_buf(),
                    not_after,
                })
            })
            .collect();
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = readings;
    }

    /// The readings now.
    pub fn read(&self) -> Vec<CertificateReading> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl Sources {
    /// Reads every counter now and renders the exposition text.
    pub fn render(&self) -> String {
        render_snapshot(Snapshot::read(self))
    }
}

/// A bound, not yet serving, metrics listener: binding comes first so that a bad address
/// stops startup before any shard runs.
#[derive(Debug)]
pub struct Listener {
    inner: TcpListener,
    addr: SocketAddr,
}

impl Listener {
    /// Binds `addr`.
    ///
    /// # Errors
    /// [`Error::Bind`] naming the address.
    pub fn bind(addr: SocketAddr) -> Result<Self, Error> {
        let bind = |source| Error::Bind { addr, source };
        let inner = TcpListener::bind(addr).map_err(bind)?;
        inner.set_nonblocking(true).map_err(bind)?;
        let addr = inner.local_addr().map_err(bind)?;
        Ok(Self { inner, addr })
    }

    /// The bound address (the real port when `addr` asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves on a thread named `dtlsd-metrics` until `stop` is set.
    ///
    /// # Errors
    /// [`Error::Spawn`] when the runtime or the thread cannot start.
    pub fn spawn(self, sources: Sources, stop: Arc<AtomicBool>) -> Result<JoinHandle<()>, Error> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()
            .map_err(Error::Spawn)?;
        let app = Arc::new(server::App::new(sources));
        std::thread::Builder::new()
            .name("dtlsd-metrics".into())
            .spawn(move || runtime.block_on(server::serve(self.inner, app, stop)))
            .map_err(Error::Spawn)
    }
}
