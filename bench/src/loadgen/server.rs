//! The system under test, in-process: `dtlsd::serve::Server` on loopback with a generated
//! test PKI, relaying to a UDP echo backend thread.
//!
//! The echo backend (`echo-backend` thread) answers every datagram with the same bytes, to
//! its source, batched through `dtls-io` (io_uring when available, else mmsg;
//! `flush_and_poll_recv`, GSO/GRO on). Where the host has three cores or more it is pinned
//! off shard 0's core and off the generator's (the last); on two it is not pinned, or, next
//! to a spinning generator, shares shard 0's core (`run::backend_core`).
//!
//! In-process means the server's RSS and CPU are this process's: per-thread CPU tells the
//! server's threads (`dtlsd-*`) from the generator's (`loadgen-*`).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{Context as _, Result, anyhow};
use dtls_io::{IoConfig, SocketConfig, TxBatch, UdpIo};
use dtlsd::config::{CertKeyPaths, LogFormat, ServeConfig, ServerCredentials, Tuning};
use dtlsd::serve::{Options, Server};

use super::IoChoice;
use super::run::BackendPlacement;

/// Loopback.
pub const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// The address the generator's sockets bind to for `server`: 127.0.0.1 for a server on
/// loopback (the in-process one, or `--server 127.0.0.1:...`), else the unspecified address
/// of its family, so the kernel picks the source of the route to it (a daemon across a veth
/// pair or on another host).
pub fn bind_ip_for(server: std::net::SocketAddr) -> IpAddr {
    match server.ip() {
        IpAddr::V4(ip) if ip.is_loopback() => LOOPBACK,
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        IpAddr::V6(ip) if ip.is_loopback() => IpAddr::V6(std::net::Ipv6Addr::LOCALHOST),
        IpAddr::V6(_) => IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED),
    }
}

/// How to run the server under test.
#[derive(Debug, Clone, Copy)]
pub struct ServerSetup {
    /// Shard threads.
    pub shards: usize,
    /// Handshake worker threads of the server's control plane.
    pub control_threads: usize,
    /// Shard I/O backend.
    pub io: IoChoice,
    /// Null record protection after the handshake (the `none` baseline).
    pub null_protection: bool,
    /// Path MTU the server assumes.
    pub mtu: u16,
    /// The shards' batch, ring, GSO and socket buffer sizes (`dtlsd`'s `io_batch`,
    /// `uring_buffers`, `gso`, `socket_recv_buffer`, `socket_send_buffer`).
    pub data_io: dtlsd::config::DataIo,
}

/// A UDP echo server on its own thread.
#[derive(Debug)]
pub struct Echo {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    echoed: Arc<AtomicU64>,
    handle: Option<JoinHandle<()>>,
}

impl Echo {
    /// Starts the echo thread on 127.0.0.1 (ephemeral port).
    pub fn start() -> Result<Self> {
        Self::start_placed(SocketAddr::new(LOOPBACK, 0), BackendPlacement::Auto)
    }

    /// Starts the echo thread on `addr` (`dtls-bench echo`: the backend of an external
    /// `dtlsd serve` driven with `--server`).
    pub fn start_on(addr: SocketAddr) -> Result<Self> {
        Self::start_placed(addr, BackendPlacement::Auto)
    }

    /// Starts the echo thread on `addr`, on the core `placement` gives it.
    pub fn start_placed(addr: SocketAddr, placement: BackendPlacement) -> Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let echoed = Arc::new(AtomicU64::new(0));
        let (tx, rx) = mpsc::channel();
        let handle = {
            let stop = Arc::clone(&stop);
            let echoed = Arc::clone(&echoed);
            std::thread::Builder::new()
                .name("echo-backend".into())
                .spawn(move || echo_thread(addr, placement, &stop, &echoed, &tx))
                .context("spawn echo backend")?
        };
        let addr = rx
            .recv_timeout(Duration::from_secs(10))
            .map_err(|_| anyhow!("echo backend did not start"))?
            .map_err(|e| anyhow!("echo backend: {e}"))?;
        Ok(Self {
            addr,
            stop,
            echoed,
            handle: Some(handle),
        })
    }

    /// Its address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Datagrams echoed so far.
    pub fn echoed(&self) -> u64 {
        self.echoed.load(Relaxed)
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        self.stop.store(true, Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

fn echo_thread(
    addr: SocketAddr,
    placement: BackendPlacement,
    stop: &AtomicBool,
    echoed: &AtomicU64,
    ready: &mpsc::Sender<std::result::Result<SocketAddr, String>>,
) {
    // Off shard 0's core and off the generator's where there is a third; on two cores not
    // pinned, or on shard 0's next to a spinning generator (see `run::backend_core`).
    super::run::pin_backend(placement);
    let cfg = IoConfig {
        mode: dtls_io::IoMode::Auto,
        ..IoConfig::default()
    };
    let sock_cfg = SocketConfig {
        reuse_port: false,
        ..SocketConfig::default()
    };
    let mut io = match UdpIo::bind(addr, &sock_cfg, &cfg) {
        Ok(io) => io,
        Err(e) => {
            let _ = ready.send(Err(e.to_string()));
            return;
        }
    };
    match io.local_addr() {
        Ok(a) => {
            if ready.send(Ok(a)).is_err() {
                return;
            }
        }
        Err(e) => {
            let _ = ready.send(Err(e.to_string()));
            return;
        }
    }
    let mut tx = TxBatch::new(cfg.batch * 64, 65_535, true);
    let mut count = 0u64;
    while !stop.load(Relaxed) {
        let batch = match io.flush_and_poll_recv(&mut tx, Duration::from_millis(20)) {
            Ok(b) => b,
            Err(_) => continue,
        };
        for dg in batch.iter() {
            if tx.push(dg.source, dg.payload).is_ok() {
                count += 1;
            }
        }
        echoed.store(count, Relaxed);
    }
}

/// The server under test, its echo backend and its PKI directory.
#[derive(Debug)]
pub struct TestServer {
    server: Option<Server>,
    echo: Echo,
    _pki: tempfile::TempDir,
    ca: PathBuf,
}

impl TestServer {
    /// Generates a test PKI, starts the echo backend and the server on 127.0.0.1:0.
    pub fn start(setup: &ServerSetup) -> Result<Self> {
        Self::start_placed(setup, BackendPlacement::Auto)
    }

    /// [`TestServer::start`] with the echo backend on the core `placement` gives it.
    pub fn start_placed(setup: &ServerSetup, placement: BackendPlacement) -> Result<Self> {
        let pki = tempfile::tempdir().context("temporary PKI directory")?;
        dtlsd::certs::write_test_pki(pki.path(), None).context("writing the test PKI")?;
        let echo = Echo::start_placed(SocketAddr::new(LOOPBACK, 0), placement)?;
        let config = ServeConfig {
            listen: vec![SocketAddr::new(LOOPBACK, 0)],
            backend: echo.addr(),
            credentials: ServerCredentials {
                certificate: Some(CertKeyPaths {
                    cert: pki.path().join("server.pem"),
                    key: pki.path().join("server.key"),
                }),
                psks: Vec::new(),
                client_ca: None,
                identity_rules: Default::default(),
            },
            proxy_protocol: None,
            cid_steering: true,
            upstream_source: Default::default(),
            cluster: Default::default(),
            key_store: None,
            tuning: Tuning {
                shards: Some(setup.shards.max(1)),
                control_threads: Some(setup.control_threads.max(1)),
                cpus: None,
                io: setup.io.daemon(),
                data_io: setup.data_io,
                interface: None,
                mtu: setup.mtu,
                metrics: None,
                admin_socket: dtlsd::config::AdminSocket::Off,
                idle_timeout: Duration::from_secs(300),
                drain_timeout: Duration::ZERO,
                keepalive: None,
                log_format: LogFormat::Human,
                // Every generated client comes from 127.0.0.1: no per-source share or rate,
                // so a benchmark measures capacity, not the abuse limits.
                limits: dtlsd::config::limits::Limits {
                    half_open_per_address: usize::MAX,
                    half_open_per_prefix: usize::MAX,
                    handshakes_per_second: 0,
                    sessions_per_address: usize::MAX,
                    ..dtlsd::config::limits::Limits::default()
                },
                takeover: false,
                dual_stack: false,
                run_as: None,
                // The daemon's defaults: the generator's clients offer DTLS 1.2 only.
                versions: dtlsd::config::DEFAULT_VERSIONS.to_vec(),
                tls13_groups: control::Config::new(control::PeerVerifier::RejectAll).tls13_groups,
                tls13_cipher_suites: control::CipherSuite::SUPPORTED_TLS13.to_vec(),
                // The daemon's default; the load generator's clients do not offer the
                // extension, so their sessions run without CIDs either way.
                connection_id: control::ConnectionIds::On {
                    len: dtlsd::config::DEFAULT_SERVE_CID_LEN,
                },
                rrc: true,
            },
        };
        let options = Options {
            null_record_protection: setup.null_protection,
        };
        let server = Server::start(config, options).context("starting dtlsd in-process")?;
        Ok(Self {
            server: Some(server),
            echo,
            ca: pki.path().join("ca.pem"),
            _pki: pki,
        })
    }

    /// The server's listen address.
    pub fn addr(&self) -> SocketAddr {
        self.server
            .as_ref()
            .map_or(SocketAddr::new(LOOPBACK, 0), |s| s.local_addr())
    }

    /// The CA certificate clients verify the server with.
    pub fn ca(&self) -> &std::path::Path {
        &self.ca
    }

    /// The echo backend.
    pub fn echo(&self) -> &Echo {
        &self.echo
    }

    /// The server's counters.
    pub fn stats(&self) -> Option<dtlsd::daemon::Stats> {
        self.server.as_ref().map(|s| s.stats())
    }

    /// The server's shard counters summed, plus the control thread's handshake counters
    /// and the echo backend's count, as JSON (totals since start).
    pub fn counters_json(&self) -> serde_json::Value {
        let Some(stats) = self.stats() else {
            return serde_json::Value::Null;
        };
        let s = stats.shards_total();
        let c = &stats.control;
        serde_json::json!({
            "datagrams_in": s.datagrams_in,
            "datagrams_out": s.datagrams_out,
            "records_opened": s.records_opened,
            "records_sealed": s.records_sealed,
            "upstream_datagrams_out": s.upstream_datagrams_out,
            "upstream_datagrams_in": s.upstream_datagrams_in,
            "upstream_send_errors": s.upstream_send_errors,
            "drop_malformed": s.drop_malformed,
            "drop_replay": s.drop_replay,
            "drop_bad_tag": s.drop_bad_tag,
            "drop_unknown_session": s.drop_unknown_session,
            "drop_queue_full": s.drop_queue_full,
            "drop_tx_full": s.drop_tx_full,
            "drop_oversize": s.drop_oversize,
            "sessions_installed": s.sessions_installed,
            "handshakes_started": c.handshakes_started,
            "handshakes_completed": c.handshakes_completed,
            "handshakes_failed_timeout": c.handshakes_failed_timeout,
            "cookies_sent": c.cookies_sent,
            "acceptor_drops": c.acceptor_drops,
            "half_open_refused": c.half_open_refused,
            "queue_full_drops": c.queue_full_drops,
            "handshake_forwarded": s.handshake_forwarded,
            "drop_pending": s.drop_pending,
            "echoed": self.echo.echoed(),
        })
    }

    /// Stops the server (close_notify to every session) and the echo backend.
    pub fn shutdown(mut self) -> Result<()> {
        match self.server.take() {
            Some(s) => s.shutdown(),
            None => Ok(()),
        }
    }
}
