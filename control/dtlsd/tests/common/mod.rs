//! Helpers shared by the `dtlsd serve` integration tests (serve, flood, metrics): temp
//! dirs and the test PKI, free ports, a UDP echo backend, the daemon and client processes
//! (killed on drop), waits with deadlines and our own engine as a blocking client;
//! [`probe`] reads a running daemon's `/metrics` and resident memory; [`balancer`] is a
//! 4-tuple-hashing UDP front for a fleet of nodes; [`innocent`] is a session that must lose
//! nothing while another is attacked.

// Each test binary uses a subset of these helpers.
#![allow(dead_code)]

pub mod balancer;
pub mod innocent;
pub mod mitm;
pub mod probe;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use control::crypto::SystemRng;
use control::crypto::pki_types::UnixTime;
use control::{Config, Connection, Event, PeerVerifier};
use dataplane::record::{ContentType, DTLS_1_2, HEADER_LEN, Opener, Records, ReplayWindow, Sealer};
use dtls_crypto::CertificateVerifier;

pub const DTLSD: &str = env!("CARGO_BIN_EXE_dtlsd");
pub const START_TIMEOUT: Duration = Duration::from_secs(20);
pub const IO_TIMEOUT: Duration = Duration::from_secs(15);

// ---------- scaffolding ----------

/// A temp directory named after the test binary, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "dtlsd-{}-{tag}-{}-{}",
            env!("CARGO_CRATE_NAME"),
            std::process::id(),
            N.fetch_add(1, Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("create temp dir");
        Self(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn file(&self, name: &str) -> String {
        self.0.join(name).to_string_lossy().into_owned()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Writes the test PKI with `dtlsd certs`.
pub fn certs(dir: &TempDir) {
    let out = Command::new(DTLSD)
        .args(["certs", "--out"])
        .arg(dir.path())
        .output()
        .expect("run dtlsd certs");
    assert!(out.status.success(), "dtlsd certs: {out:?}");
}

pub fn free_udp_addr() -> SocketAddr {
    UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("bind an ephemeral UDP port")
}

pub fn free_udp_port() -> u16 {
    free_udp_addr().port()
}

pub fn free_tcp_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("bind an ephemeral TCP port")
}

/// A UDP echo server on a loopback port, stopped on drop.
pub struct EchoBackend {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl EchoBackend {
    pub fn start() -> Self {
        let sock = UdpSocket::bind("127.0.0.1:0").expect("bind echo backend");
        sock.set_read_timeout(Some(Duration::from_millis(50)))
            .expect("read timeout");
        let addr = sock.local_addr().expect("echo address");
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let mut buf = vec![0u8; 65_536];
            while !flag.load(Relaxed) {
                if let Ok((n, from)) = sock.recv_from(&mut buf) {
                    let _ = sock.send_to(&buf[..n], from);
                }
            }
        });
        Self {
            addr,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for EchoBackend {
    fn drop(&mut self) {
        self.stop.store(true, Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Collects a child's pipe into a shared string on a thread.
pub fn collect(pipe: impl Read + Send + 'static) -> Arc<Mutex<String>> {
    let text = Arc::new(Mutex::new(String::new()));
    let sink = Arc::clone(&text);
    std::thread::spawn(move || {
        let mut reader = BufReader::new(pipe);
        let mut line = String::new();
        while reader.read_line(&mut line).is_ok_and(|n| n > 0) {
            sink.lock().expect("log lock").push_str(&line);
            line.clear();
        }
    });
    text
}

/// Whether `needle` shows up in `text` within `timeout`.
pub fn wait_for(text: &Mutex<String>, needle: &str, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if text.lock().expect("log lock").contains(needle) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    false
}

/// The child's exit status if it exits within `timeout`.
pub fn wait_exit(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    None
}

/// Polls `done` every 10 ms for up to 30 s; on a timeout, fails naming `what` with `log()`.
pub fn wait_until(what: &str, log: impl Fn() -> String, done: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(Instant::now() < deadline, "timed out: {what}\n{}", log());
        std::thread::sleep(Duration::from_millis(10));
    }
}

// ---------- the daemon ----------

/// Spawns `dtlsd serve` with the test PKI and `extra` arguments, stderr piped.
fn spawn_serve(listen: SocketAddr, backend: SocketAddr, pki: &TempDir, extra: &[&str]) -> Child {
    spawn_serve_env(listen, backend, pki, extra, &[])
}

/// [`spawn_serve`] with `env` variables added.
fn spawn_serve_env(
    listen: SocketAddr,
    backend: SocketAddr,
    pki: &TempDir,
    extra: &[&str],
    env: &[(&str, &str)],
) -> Child {
    Command::new(DTLSD)
        .env("NO_COLOR", "1")
        .env("RUST_LOG", "info")
        .envs(env.iter().copied())
        .args(["serve", "--listen", &listen.to_string()])
        .args(["--backend", &backend.to_string()])
        .args(["--cert", &pki.file("server.pem")])
        .args(["--key", &pki.file("server.key")])
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn dtlsd serve")
}

/// Spawns `dtlsd connect` to `server`, trusting the test CA for the name `localhost`, with
/// `extra` arguments, stderr piped.
fn spawn_connect(listen: SocketAddr, server: SocketAddr, pki: &TempDir, extra: &[&str]) -> Child {
    spawn_connect_env(listen, server, pki, extra, &[])
}

/// [`spawn_connect`] with `env` variables added.
fn spawn_connect_env(
    listen: SocketAddr,
    server: SocketAddr,
    pki: &TempDir,
    extra: &[&str],
    env: &[(&str, &str)],
) -> Child {
    Command::new(DTLSD)
        .env("NO_COLOR", "1")
        .env("RUST_LOG", "info")
        .envs(env.iter().copied())
        .args(["connect", "--listen", &listen.to_string()])
        .args(["--server", &server.to_string()])
        .args(["--ca", &pki.file("ca.pem"), "--server-name", "localhost"])
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn dtlsd connect")
}

/// Spawns `dtlsd serve --shards 2 --metrics <metrics>`.
pub fn spawn_daemon(
    listen: SocketAddr,
    metrics: SocketAddr,
    backend: SocketAddr,
    pki: &TempDir,
) -> Child {
    spawn_serve(
        listen,
        backend,
        pki,
        &["--shards", "2", "--metrics", &metrics.to_string()],
    )
}

/// What `dtlsd serve` logs once it listens.
const SERVE_READY: &str = "dtlsd serve listening";
/// What `dtlsd connect` logs once it listens.
const CONNECT_READY: &str = "dtlsd connect listening";

/// A running `dtlsd serve` or `dtlsd connect`, killed on drop.
pub struct Daemon {
    child: Child,
    stderr: Arc<Mutex<String>>,
    pub listen: SocketAddr,
    metrics: Option<SocketAddr>,
}

impl Daemon {
    /// Spawns `dtlsd serve --io <io> --shards 2`.
    pub fn spawn(listen: SocketAddr, backend: SocketAddr, pki: &TempDir, io: &str) -> Child {
        spawn_serve(listen, backend, pki, &["--io", io, "--shards", "2"])
    }

    /// Starts `dtlsd serve --io <io> --shards 2` on a free port.
    pub fn start(backend: SocketAddr, pki: &TempDir, io: &str) -> Self {
        Self::start_serve(backend, pki, &["--io", io, "--shards", "2"])
    }

    /// Starts `dtlsd serve` with `extra` arguments on a free port.
    pub fn start_serve(backend: SocketAddr, pki: &TempDir, extra: &[&str]) -> Self {
        Self::start_on(SERVE_READY, || {
            let listen = free_udp_addr();
            (listen, None, spawn_serve(listen, backend, pki, extra))
        })
    }

    /// Starts `dtlsd serve` with `extra` arguments on `listen` (a new free port of the same
    /// address when another process takes it first).
    pub fn start_serve_at(
        listen: SocketAddr,
        backend: SocketAddr,
        pki: &TempDir,
        extra: &[&str],
    ) -> Self {
        let mut first = true;
        Self::start_on(SERVE_READY, || {
            let mut at = listen;
            if !std::mem::take(&mut first) {
                at.set_port(free_udp_port());
            }
            (at, None, spawn_serve(at, backend, pki, extra))
        })
    }

    /// Starts `dtlsd serve` with `extra` arguments and `env` variables on a free port.
    pub fn start_serve_env(
        backend: SocketAddr,
        pki: &TempDir,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Self {
        Self::start_on(SERVE_READY, || {
            let listen = free_udp_addr();
            (
                listen,
                None,
                spawn_serve_env(listen, backend, pki, extra, env),
            )
        })
    }

    /// Starts `dtlsd connect` to `server` with `extra` arguments on a free port.
    pub fn start_connect(server: SocketAddr, pki: &TempDir, extra: &[&str]) -> Self {
        Self::start_on(CONNECT_READY, || {
            let listen = free_udp_addr();
            (listen, None, spawn_connect(listen, server, pki, extra))
        })
    }

    /// Starts `dtlsd connect --listen <free> --server <server>` with exactly `args` beyond
    /// those (no CA: the caller chooses how the server is trusted).
    pub fn start_connect_args(server: SocketAddr, args: &[&str]) -> Self {
        Self::start_on(CONNECT_READY, || {
            let listen = free_udp_addr();
            let child = Command::new(DTLSD)
                .env("NO_COLOR", "1")
                .env("RUST_LOG", "info")
                .args(["connect", "--listen", &listen.to_string()])
                .args(["--server", &server.to_string()])
                .args(args)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn dtlsd connect");
            (listen, None, child)
        })
    }

    /// Starts `dtlsd serve` with `extra` arguments and `--metrics` on free ports.
    pub fn start_serve_with_metrics(backend: SocketAddr, pki: &TempDir, extra: &[&str]) -> Self {
        Self::start_serve_with_metrics_env(backend, pki, extra, &[])
    }

    /// [`Daemon::start_serve_with_metrics`] with `env` variables added (`RUST_LOG`: the log
    /// filter, `info` otherwise).
    pub fn start_serve_with_metrics_env(
        backend: SocketAddr,
        pki: &TempDir,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Self {
        Self::start_with_metrics_on(SERVE_READY, extra, |listen, args| {
            spawn_serve_env(listen, backend, pki, args, env)
        })
    }

    /// [`Daemon::start_connect`] with `env` variables added.
    pub fn start_connect_env(
        server: SocketAddr,
        pki: &TempDir,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Self {
        Self::start_on(CONNECT_READY, || {
            let listen = free_udp_addr();
            (
                listen,
                None,
                spawn_connect_env(listen, server, pki, extra, env),
            )
        })
    }

    /// Starts `dtlsd connect` to `server` with `extra` arguments and `--metrics` on free
    /// ports.
    pub fn start_connect_with_metrics(server: SocketAddr, pki: &TempDir, extra: &[&str]) -> Self {
        Self::start_with_metrics_on(CONNECT_READY, extra, |listen, args| {
            spawn_connect(listen, server, pki, args)
        })
    }

    fn start_with_metrics_on(
        ready: &str,
        extra: &[&str],
        spawn: impl Fn(SocketAddr, &[&str]) -> Child,
    ) -> Self {
        Self::start_on(ready, || {
            let (listen, metrics) = (free_udp_addr(), free_tcp_addr());
            let metrics_arg = metrics.to_string();
            let args: Vec<&str> = extra
                .iter()
                .copied()
                .chain(["--metrics", &metrics_arg])
                .collect();
            (listen, Some(metrics), spawn(listen, &args))
        })
    }

    /// The value of one sample (`name{labels}` exactly as exposed) on `/metrics`.
    pub fn metric(&self, series: &str) -> Option<u64> {
        let (status, body) = http_get(self.metrics(), "/metrics");
        assert_eq!(status, 200, "{body}");
        body.lines().find_map(|l| {
            l.strip_prefix(series)?
                .strip_prefix(' ')?
                .trim()
                .parse()
                .ok()
        })
    }

    /// The daemon's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `signal` (e.g. "HUP") to the daemon.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{signal} failed");
    }

    /// Starts `dtlsd serve --shards 2 --metrics <addr>` on free UDP and TCP ports.
    pub fn start_with_metrics(backend: SocketAddr, pki: &TempDir) -> Self {
        Self::start_serve_with_metrics(backend, pki, &["--shards", "2"])
    }

    /// Starts the daemon `spawn` gives on free ports; retries on new ports when another
    /// process took a probed one in between (the daemon then exits naming the address).
    fn start_on(
        ready: &str,
        mut spawn: impl FnMut() -> (SocketAddr, Option<SocketAddr>, Child),
    ) -> Self {
        let mut last_log = String::new();
        for _ in 0..3 {
            let (listen, metrics, mut child) = spawn();
            // The metrics listener is TCP, whose error reads "in use" too.
            let retry_on = if metrics.is_some() {
                "in use"
            } else {
                "Address already in use"
            };
            let stderr = collect(child.stderr.take().expect("piped stderr"));
            let mut d = Self {
                child,
                stderr,
                listen,
                metrics,
            };
            let deadline = Instant::now() + START_TIMEOUT;
            while Instant::now() < deadline {
                if d.log().contains(ready) {
                    return d;
                }
                if d.child.try_wait().ok().flatten().is_some() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            // Let the log reader catch up with a process that just exited.
            std::thread::sleep(Duration::from_millis(50));
            last_log = d.log();
            if !last_log.contains(retry_on) {
                break;
            }
        }
        panic!("dtlsd did not start:\n{last_log}");
    }

    /// The `--metrics` address of a daemon from `start_with_metrics`.
    pub fn metrics(&self) -> SocketAddr {
        self.metrics.expect("daemon started with --metrics")
    }

    pub fn log(&self) -> String {
        self.stderr.lock().expect("log lock").clone()
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Waits up to `timeout` for the daemon to exit on its own.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        wait_exit(&mut self.child, timeout)
    }

    pub fn terminate(&mut self) -> ExitStatus {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM failed");
        wait_exit(&mut self.child, IO_TIMEOUT)
            .unwrap_or_else(|| panic!("dtlsd did not exit after SIGTERM:\n{}", self.log()))
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------- client processes ----------

/// A client process (openssl, gnutls-cli) killed on drop.
pub struct Peer {
    child: Child,
    pub stdout: Arc<Mutex<String>>,
    pub stderr: Arc<Mutex<String>>,
}

impl Peer {
    pub fn spawn(program: &str, args: &[String]) -> Self {
        Self::from_command(Command::new(program).args(args), program)
    }

    /// `openssl s_client -dtls1_2` to `server`, verifying against the test CA.
    pub fn openssl(server: SocketAddr, pki: &TempDir) -> Self {
        Self::from_command(
            Command::new("openssl")
                .args(["s_client", "-dtls1_2", "-connect", &server.to_string()])
                .args(["-CAfile", &pki.file("ca.pem"), "-verify_return_error"])
                .args(["-cipher", "ECDHE-ECDSA-AES128-GCM-SHA256", "-quiet"]),
            "openssl s_client",
        )
    }

    /// Spawns `command` with all three standard streams piped.
    fn from_command(command: &mut Command, what: &str) -> Self {
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {what}: {e}"));
        let stdout = collect(child.stdout.take().expect("piped stdout"));
        let stderr = collect(child.stderr.take().expect("piped stderr"));
        Self {
            child,
            stdout,
            stderr,
        }
    }

    pub fn write_line(&mut self, line: &str) {
        let stdin = self.child.stdin.as_mut().expect("piped stdin");
        stdin
            .write_all(format!("{line}\n").as_bytes())
            .expect("write to the client's stdin");
        stdin.flush().expect("flush stdin");
    }

    pub fn transcript(&self) -> String {
        format!(
            "stdout:\n{}\nstderr:\n{}",
            self.stdout.lock().expect("lock"),
            self.stderr.lock().expect("lock")
        )
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------- our engine as a blocking client ----------

/// The application records of a DTLS 1.3 session: unified headers, the server's CID in
/// ours when it gave one (our own CID is zero-length: its records carry none).
struct Data13 {
    sealer: dataplane::record::v13::Sealer13,
    opener: dataplane::record::v13::Opener13,
    peer_cid: Vec<u8>,
    /// Our earlier write epochs' sealers, oldest first: a test seals records under keys
    /// the server has since retired (RFC 9147 §8).
    retired_sealers: Vec<dataplane::record::v13::Sealer13>,
}

pub struct Client {
    sock: UdpSocket,
    server: SocketAddr,
    conn: Connection,
    sealer: Option<Sealer>,
    /// Replaces `sealer` when the server gave a connection ID (RFC 9146 tls12_cid records).
    cid_sealer: Option<dataplane::record::CidSealer>,
    opener: Option<Opener>,
    /// A DTLS 1.3 session's record keys, with the server's CID (RFC 9147 §9) when it gave
    /// one; replaces `sealer` and `opener`.
    data13: Option<Data13>,
    buf: Vec<u8>,
    rx: Vec<u8>,
    /// Why the handshake failed, once it has.
    failed: Option<String>,
    /// The session ticket the server issued (RFC 5077), if any.
    pub ticket: Option<control::SessionTicket>,
    /// Datagrams received from the server so far.
    received: u64,
}

/// A fresh client engine of ours for `server` and its first datagram (a cookie-less
/// ClientHello, or its first fragment), for tests that drive the handshake by hand.
pub fn first_hello(config: &Arc<Config>, server: SocketAddr) -> (Connection, Vec<u8>) {
    let mut conn = Connection::client(
        Arc::clone(config),
        Box::new(SystemRng::new()),
        Instant::now(),
        server,
        None,
    )
    .expect("client config is valid");
    let mut buf = vec![0u8; 65_536];
    let t = conn
        .poll_transmit(Instant::now(), &mut buf)
        .expect("a new client sends a ClientHello");
    buf.truncate(t.len);
    (conn, buf)
}

/// What one incoming datagram held once opened.
#[derive(Debug, Default)]
pub struct Opened {
    pub app: Vec<Vec<u8>>,
    pub alerts: Vec<Vec<u8>>,
}

impl Client {
    /// DTLS 1.3 only, asking for no CID of its own (it puts the server's in its records,
    /// which a RequestConnectionId needs: RFC 9147 §9).
    pub fn config13(pki: &TempDir) -> Arc<Config> {
        let mut config = (*Self::config(pki)).clone();
        config.connection_id = control::ConnectionIds::On { len: 0 };
        config.versions = vec![control::ProtocolVersion::Dtls1_3];
        Arc::new(config)
    }

    /// A client config that verifies the server against the test CA as `localhost`.
    pub fn config(pki: &TempDir) -> Arc<Config> {
        let ca = CertificateVerifier::from_pem_file(pki.file("ca.pem")).expect("load ca.pem");
        Arc::new(Config {
            server_name: Some("localhost".into()),
            // This client answers no RFC 9853 path_challenge (dtlsd connect's shard does),
            // so it does not offer rrc and the server moves its sessions at once.
            rrc: false,
            ..Config::new(PeerVerifier::WebPki(ca))
        })
    }

    /// Connects and completes the handshake within `IO_TIMEOUT`.
    pub fn connect(config: Arc<Config>, server: SocketAddr) -> Self {
        Self::connect_within(config, server, IO_TIMEOUT)
    }

    /// Connects and completes the handshake within `timeout`.
    pub fn connect_within(config: Arc<Config>, server: SocketAddr, timeout: Duration) -> Self {
        Self::try_connect(config, server, None, timeout)
            .unwrap_or_else(|e| panic!("handshake did not complete: {e}"))
    }

    /// Connects from an ephemeral port of `ip` (any 127.0.0.0/8 address on loopback) and
    /// completes the handshake within `timeout`.
    pub fn connect_from(
        config: Arc<Config>,
        server: SocketAddr,
        ip: IpAddr,
        timeout: Duration,
    ) -> Self {
        Self::try_connect_from(config, server, (ip, 0).into(), None, timeout)
            .unwrap_or_else(|e| panic!("handshake did not complete: {e}"))
    }

    /// Connects from exactly `local` (address and port) and completes the handshake within
    /// `timeout`, or says why not.
    pub fn try_connect_bound(
        config: Arc<Config>,
        server: SocketAddr,
        local: SocketAddr,
        timeout: Duration,
    ) -> Result<Self, String> {
        Self::try_connect_from(config, server, local, None, timeout)
    }

    /// Connects (offering `ticket` for resumption, when given) and completes the handshake
    /// within `timeout`, or says why not (the handshake failed, or the time ran out).
    pub fn try_connect(
        config: Arc<Config>,
        server: SocketAddr,
        ticket: Option<control::SessionTicket>,
        timeout: Duration,
    ) -> Result<Self, String> {
        let local = (Ipv4Addr::LOCALHOST, 0).into();
        Self::try_connect_from(config, server, local, ticket, timeout)
    }

    /// As [`Client::try_connect`], from an ephemeral port of `ip`.
    pub fn try_connect_from(
        config: Arc<Config>,
        server: SocketAddr,
        local: SocketAddr,
        ticket: Option<control::SessionTicket>,
        timeout: Duration,
    ) -> Result<Self, String> {
        let sock = UdpSocket::bind(local).expect("bind client socket");
        let conn = Connection::client(
            config,
            Box::new(SystemRng::new()),
            Instant::now(),
            server,
            ticket,
        )
        .expect("client config is valid");
        Self::complete(sock, server, conn, timeout)
    }

    /// Completes the handshake `conn` has under way with `server` over `sock` (sending what
    /// it has queued first) within `timeout`, or says why not.
    pub fn complete(
        sock: UdpSocket,
        server: SocketAddr,
        conn: Connection,
        timeout: Duration,
    ) -> Result<Self, String> {
        let mut c = Self {
            sock,
            server,
            conn,
            sealer: None,
            cid_sealer: None,
            opener: None,
            data13: None,
            buf: vec![0u8; 65_536],
            rx: vec![0u8; 65_536],
            failed: None,
            ticket: None,
            received: 0,
        };
        let deadline = Instant::now() + timeout;
        while c.sealer.is_none() && c.cid_sealer.is_none() && c.data13.is_none() {
            if let Some(e) = c.failed.take() {
                return Err(e);
            }
            if Instant::now() >= deadline {
                return Err(format!("timed out in state {}", c.conn.state_name()));
            }
            c.turn(Duration::from_millis(50));
        }
        Ok(c)
    }

    fn flush(&mut self) {
        let now = Instant::now();
        while let Some(t) = self.conn.poll_transmit(now, &mut self.buf) {
            let _ = self.sock.send_to(&self.buf[..t.len], t.destination);
        }
        while let Some(event) = self.conn.poll_event() {
            match event {
                Event::KeysReady(keys) => {
                    let mut keys = *keys;
                    self.ticket = keys.ticket.take();
                    // Our own CID (records to us) is always zero-length here: the tests ask
                    // the server for none and read plain records.
                    assert!(keys.local_cid.as_ref().is_none_or(Vec::is_empty));
                    let peer_cid = keys.peer_cid.take().filter(|c| !c.is_empty());
                    if keys.version == control::ProtocolVersion::Dtls1_3 {
                        let (read, write) = keys.records.into_dtls13().expect("DTLS 1.3 keys");
                        self.data13 = Some(Data13 {
                            sealer: dataplane::record::v13::Sealer13::new(write.epoch, write.keys)
                                .with_next_sequence(write.next_sequence),
                            opener: dataplane::record::v13::Opener13::new(
                                read.epoch,
                                read.keys,
                                ReplayWindow::new(keys.replay_window.clamp(64, 4096)),
                            ),
                            peer_cid: peer_cid.unwrap_or_default(),
                            retired_sealers: Vec::new(),
                        });
                        continue;
                    }
                    let (read, write) = keys.records.into_dtls12().expect("DTLS 1.2 keys");
                    let (epoch, key, next) = (write.epoch, write.key, write.next_sequence);
                    match peer_cid {
                        Some(cid) => {
                            self.cid_sealer = Some(
                                dataplane::record::CidSealer::new(epoch, key, next, &cid)
                                    .expect("CID sealer from KeysReady"),
                            );
                        }
                        None => {
                            self.sealer =
                                Some(Sealer::new(epoch, key, next).expect("sealer from KeysReady"));
                        }
                    }
                    self.opener = Some(Opener::new(
                        read.epoch,
                        read.key,
                        ReplayWindow::new(keys.replay_window.clamp(64, 4096)),
                    ));
                }
                Event::HandshakeFailed(e) => self.failed = Some(e.to_string()),
                // DTLS 1.3 (RFC 9147 §8): the server's new epoch (its KeyUpdate), or ours
                // once the server acknowledged our KeyUpdate.
                Event::KeysUpdated(update) => {
                    let Some(data) = self.data13.as_mut() else {
                        continue;
                    };
                    if let Some(read) = update.read {
                        data.opener = dataplane::record::v13::Opener13::new(
                            read.epoch,
                            read.keys,
                            ReplayWindow::new(64),
                        );
                    }
                    if let Some(write) = update.write {
                        let next = dataplane::record::v13::Sealer13::new(write.epoch, write.keys)
                            .with_next_sequence(write.next_sequence);
                        let old = std::mem::replace(&mut data.sealer, next);
                        data.retired_sealers.push(old);
                    }
                }
                Event::AlertReceived { .. } | Event::Closed { .. } | Event::ConnectionIds(_) => {}
            }
        }
    }

    /// Sends what the engine queued, waits up to `wait` for one datagram from the server
    /// and handles it and the timer. Returns the opened contents of what arrived.
    pub fn turn(&mut self, wait: Duration) -> Opened {
        self.flush();
        let wait = self
            .conn
            .poll_timeout()
            .map_or(wait, |t| {
                t.saturating_duration_since(Instant::now()).min(wait)
            })
            .max(Duration::from_millis(1));
        self.sock
            .set_read_timeout(Some(wait))
            .expect("read timeout");
        let mut opened = Opened::default();
        if let Ok((n, from)) = self.sock.recv_from(&mut self.rx)
            && from == self.server
        {
            self.received += 1;
            let datagram = self.rx[..n].to_vec();
            self.conn
                .handle_datagram(Instant::now(), UnixTime::now(), from, &datagram);
            opened = self.open(&datagram);
        }
        let now = Instant::now();
        if self.conn.poll_timeout().is_some_and(|t| t <= now) {
            self.conn.handle_timeout(now);
        }
        self.flush();
        opened
    }

    fn open(&mut self, datagram: &[u8]) -> Opened {
        let mut opened = Opened::default();
        if let Some(data) = self.data13.as_mut() {
            use dataplane::record::v13::{InnerContentType, MixedKind, MixedRecords};
            for record in MixedRecords::new(datagram, 0) {
                if !matches!(record.kind, MixedKind::Ciphertext(_)) {
                    continue;
                }
                let mut bytes = record.bytes.to_vec();
                if let Ok(o) = data.opener.open(&mut bytes, 0) {
                    match o.content_type {
                        InnerContentType::ApplicationData => opened.app.push(o.plaintext.to_vec()),
                        InnerContentType::Alert => opened.alerts.push(o.plaintext.to_vec()),
                        _ => {}
                    }
                }
            }
            return opened;
        }
        let Some(opener) = self.opener.as_mut() else {
            return opened;
        };
        let ranges: Vec<_> = Records::new(datagram)
            .filter(|r| r.header.epoch() == 1)
            .map(|r| r.range.clone())
            .collect();
        for range in ranges {
            let mut record = datagram[range].to_vec();
            if let Ok(o) = opener.open(&mut record) {
                match o.content_type {
                    ContentType::ApplicationData => opened.app.push(o.plaintext.to_vec()),
                    ContentType::Alert => opened.alerts.push(o.plaintext.to_vec()),
                    _ => {}
                }
            }
        }
        opened
    }

    /// The client's own address (what the server sees as its peer).
    pub fn local_addr(&self) -> SocketAddr {
        self.sock.local_addr().expect("client address")
    }

    pub fn send_app(&mut self, payload: &[u8]) {
        self.send_record(ContentType::ApplicationData, payload);
    }

    /// Sends a close_notify alert (RFC 5246 §7.2.1): the server ends the session.
    pub fn send_close_notify(&mut self) {
        self.send_record(ContentType::Alert, &[1, 0]);
    }

    /// Sends one datagram holding an application-data record with `payload` and then an
    /// alert record (`[level, description]`, e.g. `[1, 0]` for close_notify).
    pub fn send_app_and_alert(&mut self, payload: &[u8], alert: [u8; 2]) {
        let mut datagram = self.seal(ContentType::ApplicationData, payload);
        datagram.extend(self.seal(ContentType::Alert, &alert));
        self.sock
            .send_to(&datagram, self.server)
            .expect("send a datagram");
    }

    fn send_record(&mut self, content_type: ContentType, payload: &[u8]) {
        let record = self.seal(content_type, payload);
        self.sock
            .send_to(&record, self.server)
            .expect("send a record");
    }

    /// The server's connection ID in our records, when it gave one (RFC 9146).
    /// DTLS 1.3: asks the server for `count` more of its CIDs (RequestConnectionId) and
    /// waits for them (the server's NewConnectionId); returns them.
    /// The engine sends no RequestConnectionId while its own last flight (the client's
    /// Finished) waits for the server's ACK (RFC 9147 §7): that ACK may still be on its way
    /// after the first echo, so this turns until the request can go out.
    pub fn request_cids(&mut self, count: u8) -> Vec<Vec<u8>> {
        let deadline = Instant::now() + IO_TIMEOUT;
        while !self.conn.request_connection_ids(Instant::now(), count) {
            assert!(
                Instant::now() < deadline,
                "RequestConnectionId not sent (state {})",
                self.conn.state_name()
            );
            self.turn(Duration::from_millis(20));
        }
        self.flush();
        while Instant::now() < deadline {
            let spare = self.conn.spare_connection_ids13();
            if !spare.is_empty() {
                return spare;
            }
            self.turn(Duration::from_millis(100));
        }
        panic!("no NewConnectionId from the server");
    }

    /// DTLS 1.3: our records carry `cid` (one of the server's) from now on.
    pub fn use_peer_cid(&mut self, cid: &[u8]) {
        self.data13.as_mut().expect("a DTLS 1.3 session").peer_cid = cid.to_vec();
    }

    pub fn peer_cid(&self) -> Option<&[u8]> {
        if let Some(data) = &self.data13 {
            return (!data.peer_cid.is_empty()).then_some(data.peer_cid.as_slice());
        }
        self.cid_sealer
            .as_ref()
            .map(dataplane::record::CidSealer::cid)
    }

    /// NAT rebinding: from now on the client sends from a new socket (a new source port on
    /// the same address); the session's keys stay.
    pub fn rebind(&mut self) {
        let ip = self.sock.local_addr().expect("local address").ip();
        self.sock = UdpSocket::bind((ip, 0)).expect("bind a new client socket");
    }

    /// DTLS 1.3: sends one record of `inner` content around `payload`, sealed with the
    /// session's current write keys and the next sequence number, past the engine: an
    /// authenticated peer sending whatever it likes (a handshake message or an ACK of its
    /// own making).
    pub fn send_raw13(&mut self, inner: dataplane::record::v13::InnerContentType, payload: &[u8]) {
        let record = self.seal13(inner, payload);
        self.sock
            .send_to(&record, self.server)
            .expect("send a record");
    }

    /// [`Client::send_raw13`] sealed under our write epoch `epoch` (the current one or an
    /// earlier one, see [`Client::seal_app13_in`]): a flood that must stay in one epoch
    /// whatever the engine does meanwhile.
    pub fn send_raw13_in(
        &mut self,
        epoch: u64,
        inner: dataplane::record::v13::InnerContentType,
        payload: &[u8],
    ) {
        let record = self.seal13_with(Some(epoch), inner, payload);
        self.send_datagram(&record);
    }

    /// [`Client::echo`] with application data sealed under our write epoch `epoch`.
    pub fn echo13_in(&mut self, epoch: u64, payload: &[u8]) {
        let deadline = Instant::now() + IO_TIMEOUT;
        while Instant::now() < deadline {
            let record = self.seal_app13_in(epoch, payload);
            self.send_datagram(&record);
            let resend = Instant::now() + Duration::from_secs(1);
            while Instant::now() < resend {
                let opened = self.turn(Duration::from_millis(100));
                if opened.app.iter().any(|p| p == payload) {
                    return;
                }
            }
        }
        panic!("no echo of {:?}", String::from_utf8_lossy(payload));
    }

    /// DTLS 1.3: one application-data record around `payload`, sealed under our write epoch
    /// `epoch` (the current one or an earlier one kept in `retired_sealers`) with its next
    /// sequence number; not sent.
    pub fn seal_app13_in(&mut self, epoch: u64, payload: &[u8]) -> Vec<u8> {
        let inner = dataplane::record::v13::InnerContentType::ApplicationData;
        self.seal13_with(Some(epoch), inner, payload)
    }

    /// DTLS 1.3: our current write epoch.
    pub fn write_epoch13(&self) -> u64 {
        self.data13
            .as_ref()
            .expect("a DTLS 1.3 session")
            .sealer
            .epoch()
    }

    /// DTLS 1.3: one KeyUpdate of ours (not asking the server for one, RFC 9147 §8),
    /// turning until the server acknowledged it and our records use the next epoch (the
    /// previous sealer is kept, see [`Client::seal_app13_in`]). Returns the new epoch.
    pub fn update_keys13(&mut self) -> u64 {
        let before = self.write_epoch13();
        let deadline = Instant::now() + IO_TIMEOUT;
        // No KeyUpdate while a flight of ours waits for its ACK (RFC 9147 §7, §8).
        while !self.conn.update_keys(Instant::now(), false) {
            assert!(
                Instant::now() < deadline,
                "KeyUpdate not sent (state {})",
                self.conn.state_name()
            );
            self.turn(Duration::from_millis(20));
        }
        while self.write_epoch13() == before {
            assert!(
                Instant::now() < deadline,
                "KeyUpdate from epoch {before} not acknowledged"
            );
            self.turn(Duration::from_millis(20));
        }
        self.write_epoch13()
    }

    /// Sends `datagram` as it is, from our socket.
    pub fn send_datagram(&self, datagram: &[u8]) {
        self.sock
            .send_to(datagram, self.server)
            .expect("send a datagram");
    }

    /// Turns until no datagram arrived for `quiet` (at most `IO_TIMEOUT`); returns how
    /// many datagrams arrived meanwhile.
    pub fn settle(&mut self, quiet: Duration) -> u64 {
        let start = self.received;
        let deadline = Instant::now() + IO_TIMEOUT;
        let mut last = (self.received, Instant::now());
        while Instant::now() < deadline && last.1.elapsed() < quiet {
            self.turn(Duration::from_millis(5));
            if self.received != last.0 {
                last = (self.received, Instant::now());
            }
        }
        self.received - start
    }

    /// DTLS 1.3: the server's spare connection IDs the engine holds (from NewConnectionId).
    pub fn spare_cids13(&self) -> Vec<Vec<u8>> {
        self.conn.spare_connection_ids13()
    }

    fn seal13(
        &mut self,
        inner: dataplane::record::v13::InnerContentType,
        payload: &[u8],
    ) -> Vec<u8> {
        self.seal13_with(None, inner, payload)
    }

    /// One DTLS 1.3 record of `inner` around `payload`, sealed under write epoch `epoch`
    /// (`None`: the current one) with that epoch's next sequence number.
    fn seal13_with(
        &mut self,
        epoch: Option<u64>,
        inner: dataplane::record::v13::InnerContentType,
        payload: &[u8],
    ) -> Vec<u8> {
        use dataplane::record::v13::HeaderForm;
        let data = self.data13.as_mut().expect("a DTLS 1.3 session");
        let form = if data.peer_cid.is_empty() {
            HeaderForm::default()
        } else {
            HeaderForm::with_cid(&data.peer_cid)
        };
        let sealer = match epoch {
            Some(epoch) if epoch != data.sealer.epoch() => data
                .retired_sealers
                .iter_mut()
                .find(|s| s.epoch() == epoch)
                .unwrap_or_else(|| panic!("no sealer of epoch {epoch}")),
            _ => &mut data.sealer,
        };
        let mut record = vec![0u8; sealer.record_len(&form, payload.len(), 0)];
        let at = sealer.plaintext_offset(&form);
        record[at..at + payload.len()].copy_from_slice(payload);
        let n = sealer
            .seal(inner, &form, &mut record, payload.len(), 0)
            .expect("seal a DTLS 1.3 record");
        record.truncate(n);
        record
    }

    /// One record of `content_type` around `payload`, sealed with the next sequence number.
    fn seal(&mut self, content_type: ContentType, payload: &[u8]) -> Vec<u8> {
        if self.data13.is_some() {
            use dataplane::record::v13::InnerContentType;
            let inner = match content_type {
                ContentType::Alert => InnerContentType::Alert,
                _ => InnerContentType::ApplicationData,
            };
            return self.seal13(inner, payload);
        }
        if let Some(sealer) = self.cid_sealer.as_mut() {
            let mut record = vec![0u8; sealer.record_len(payload.len(), 0)];
            let offset = sealer.plaintext_offset();
            record[offset..offset + payload.len()].copy_from_slice(payload);
            let n = sealer
                .seal(content_type, &mut record, payload.len(), 0)
                .expect("seal a tls12_cid record");
            record.truncate(n);
            return record;
        }
        let sealer = self.sealer.as_mut().expect("keys installed");
        let offset = sealer.plaintext_offset();
        let mut record = vec![0u8; HEADER_LEN + sealer.overhead() + payload.len()];
        record[offset..offset + payload.len()].copy_from_slice(payload);
        let n = sealer
            .seal(content_type, DTLS_1_2, &mut record, payload.len())
            .expect("seal a record");
        record.truncate(n);
        record
    }

    /// Sends `payload` and waits for the identical echo (resending on a silent second;
    /// echoes of earlier payloads are skipped).
    pub fn echo(&mut self, payload: &[u8]) {
        self.echo_within(payload, IO_TIMEOUT, Duration::from_secs(1));
    }

    /// [`Client::echo`] with its own patience: resends every `resend` until `timeout`
    /// (for tests whose flood makes the kernel drop most datagrams to the daemon).
    pub fn echo_within(&mut self, payload: &[u8], timeout: Duration, resend: Duration) {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            self.send_app(payload);
            let resend = Instant::now() + resend;
            while Instant::now() < resend {
                let opened = self.turn(Duration::from_millis(100));
                if opened.app.iter().any(|p| p == payload) {
                    return;
                }
            }
        }
        panic!("no echo of {:?}", String::from_utf8_lossy(payload));
    }
}

// ---------- HTTP ----------

/// `GET path` on `addr` (HTTP/1.1, `Connection: close`): the status code and the body.
pub fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut stream = std::net::TcpStream::connect_timeout(&addr, IO_TIMEOUT).expect("connect");
    stream.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .expect("send request");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read response");
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}
