//! `dtlsd serve` over real loopback sockets: the built binary between DTLS clients
//! (openssl, gnutls-cli, our own engine) and a UDP echo backend.
//!
//! Every wait has a deadline; the daemon and client processes are killed on drop.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use control::crypto::SystemRng;
use control::{Config, Connection, Event, PeerVerifier};
use dataplane::record::{ContentType, DTLS_1_2, HEADER_LEN, Opener, Records, ReplayWindow, Sealer};
use dtls_crypto::CertificateVerifier;

const DTLSD: &str = env!("CARGO_BIN_EXE_dtlsd");
const START_TIMEOUT: Duration = Duration::from_secs(20);
const IO_TIMEOUT: Duration = Duration::from_secs(15);

// ---------- scaffolding ----------

struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "dtlsd-serve-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("create temp dir");
        Self(dir)
    }

    fn path(&self) -> &Path {
        &self.0
    }

    fn file(&self, name: &str) -> String {
        self.0.join(name).to_string_lossy().into_owned()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Writes the test PKI with `dtlsd certs`.
fn certs(dir: &TempDir) {
    let out = Command::new(DTLSD)
        .args(["certs", "--out"])
        .arg(dir.path())
        .output()
        .expect("run dtlsd certs");
    assert!(out.status.success(), "dtlsd certs: {out:?}");
}

fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("bind an ephemeral port")
        .port()
}

/// A UDP echo server on a loopback port, stopped on drop.
struct EchoBackend {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl EchoBackend {
    fn start() -> Self {
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
fn collect(pipe: impl Read + Send + 'static) -> Arc<Mutex<String>> {
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

fn wait_for(text: &Mutex<String>, needle: &str, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if text.lock().expect("log lock").contains(needle) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    false
}

/// A running `dtlsd serve`, killed on drop.
struct Daemon {
    child: Child,
    stderr: Arc<Mutex<String>>,
    listen: SocketAddr,
}

impl Daemon {
    fn spawn(listen: SocketAddr, backend: SocketAddr, pki: &TempDir, io: &str) -> Child {
        Command::new(DTLSD)
            .env("NO_COLOR", "1")
            .env("RUST_LOG", "info")
            .args(["serve", "--listen", &listen.to_string()])
            .args(["--backend", &backend.to_string()])
            .args(["--cert", &pki.file("server.pem")])
            .args(["--key", &pki.file("server.key")])
            .args(["--io", io, "--shards", "2"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn dtlsd serve")
    }

    /// Starts the daemon on a free port; retries on a new port when another process took
    /// the probed one in between (the daemon then exits naming the address).
    fn start(backend: SocketAddr, pki: &TempDir, io: &str) -> Self {
        let mut last_log = String::new();
        for _ in 0..3 {
            let listen: SocketAddr = format!("127.0.0.1:{}", free_udp_port())
                .parse()
                .expect("address");
            let mut child = Self::spawn(listen, backend, pki, io);
            let stderr = collect(child.stderr.take().expect("piped stderr"));
            let mut d = Self {
                child,
                stderr,
                listen,
            };
            let deadline = Instant::now() + START_TIMEOUT;
            while Instant::now() < deadline {
                if d.log().contains("dtlsd serve listening") {
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
            if !last_log.contains("Address already in use") {
                break;
            }
        }
        panic!("dtlsd did not start:\n{last_log}");
    }

    fn log(&self) -> String {
        self.stderr.lock().expect("log lock").clone()
    }

    fn terminate(&mut self) -> ExitStatus {
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

fn wait_exit(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    None
}

/// A client process (openssl, gnutls-cli) killed on drop.
struct Peer {
    child: Child,
    stdout: Arc<Mutex<String>>,
    stderr: Arc<Mutex<String>>,
}

impl Peer {
    fn spawn(program: &str, args: &[String]) -> Self {
        let mut child = Command::new(program)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {program}: {e}"));
        let stdout = collect(child.stdout.take().expect("piped stdout"));
        let stderr = collect(child.stderr.take().expect("piped stderr"));
        Self {
            child,
            stdout,
            stderr,
        }
    }

    fn write_line(&mut self, line: &str) {
        let stdin = self.child.stdin.as_mut().expect("piped stdin");
        stdin
            .write_all(format!("{line}\n").as_bytes())
            .expect("write to the client's stdin");
        stdin.flush().expect("flush stdin");
    }

    fn transcript(&self) -> String {
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

/// Writes `line` to the client and expects it back on its stdout (client → dtlsd → echo
/// backend → dtlsd → client).
fn echo_through(mut peer: Peer, daemon: &Daemon, line: &str) {
    peer.write_line(line);
    assert!(
        wait_for(&peer.stdout, line, IO_TIMEOUT),
        "echo not received\n{}\ndtlsd:\n{}",
        peer.transcript(),
        daemon.log()
    );
}

// ---------- our engine as a blocking client ----------

struct Client {
    sock: UdpSocket,
    server: SocketAddr,
    conn: Connection,
    sealer: Option<Sealer>,
    opener: Option<Opener>,
    buf: Vec<u8>,
}

/// What one incoming datagram held once opened.
#[derive(Debug, Default)]
struct Opened {
    app: Vec<Vec<u8>>,
    alerts: Vec<Vec<u8>>,
}

impl Client {
    fn config(pki: &TempDir) -> Arc<Config> {
        let ca = CertificateVerifier::from_pem_file(pki.file("ca.pem")).expect("load ca.pem");
        Arc::new(Config {
            peer_verification: PeerVerifier::WebPki(ca),
            server_name: Some("localhost".into()),
            ..Config::default()
        })
    }

    fn connect(config: Arc<Config>, server: SocketAddr) -> Self {
        let sock = UdpSocket::bind("127.0.0.1:0").expect("bind client socket");
        let conn = Connection::client(
            config,
            Box::new(SystemRng::new()),
            Instant::now(),
            server,
            None,
        )
        .expect("client config is valid");
        let mut c = Self {
            sock,
            server,
            conn,
            sealer: None,
            opener: None,
            buf: vec![0u8; 65_536],
        };
        let deadline = Instant::now() + IO_TIMEOUT;
        while c.sealer.is_none() {
            assert!(
                Instant::now() < deadline,
                "handshake did not complete (state {})",
                c.conn.state_name()
            );
            c.turn(Duration::from_millis(50));
        }
        c
    }

    fn flush(&mut self) {
        let now = Instant::now();
        while let Some(t) = self.conn.poll_transmit(now, &mut self.buf) {
            let _ = self.sock.send_to(&self.buf[..t.len], t.destination);
        }
        while let Some(event) = self.conn.poll_event() {
            match event {
                Event::KeysReady(keys) => {
                    let keys = *keys;
                    self.sealer = Some(
                        Sealer::new(keys.write.epoch, keys.write.key, keys.write.next_sequence)
                            .expect("sealer from KeysReady"),
                    );
                    self.opener = Some(Opener::new(
                        keys.read.epoch,
                        keys.read.key,
                        ReplayWindow::new(keys.replay_window.clamp(64, 4096)),
                    ));
                }
                Event::HandshakeFailed(e) => panic!("handshake failed: {e}"),
                Event::AlertReceived { .. } | Event::Closed { .. } => {}
            }
        }
    }

    /// Sends what the engine queued, waits up to `wait` for one datagram and handles it
    /// and the timer. Returns the opened contents of what arrived.
    fn turn(&mut self, wait: Duration) -> Opened {
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
        let mut rx = vec![0u8; 65_536];
        if let Ok((n, from)) = self.sock.recv_from(&mut rx)
            && from == self.server
        {
            let datagram = &rx[..n];
            self.conn.handle_datagram(Instant::now(), from, datagram);
            opened = self.open(datagram);
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

    fn send_app(&mut self, payload: &[u8]) {
        let sealer = self.sealer.as_mut().expect("keys installed");
        let offset = sealer.plaintext_offset();
        let mut record = vec![0u8; HEADER_LEN + sealer.overhead() + payload.len()];
        record[offset..offset + payload.len()].copy_from_slice(payload);
        let n = sealer
            .seal(
                ContentType::ApplicationData,
                DTLS_1_2,
                &mut record,
                payload.len(),
            )
            .expect("seal application data");
        self.sock
            .send_to(&record[..n], self.server)
            .expect("send application data");
    }

    /// Sends `payload` and waits for the identical echo (resending on a silent second;
    /// echoes of earlier payloads are skipped).
    fn echo(&mut self, payload: &[u8]) {
        let deadline = Instant::now() + IO_TIMEOUT;
        while Instant::now() < deadline {
            self.send_app(payload);
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
}

fn many_clients_through(io: &str) {
    const CLIENTS: usize = 24;
    const MESSAGES: usize = 6;
    let pki = TempDir::new(io);
    certs(&pki);
    let backend = EchoBackend::start();
    let daemon = Daemon::start(backend.addr, &pki, io);
    let config = Client::config(&pki);
    let threads: Vec<_> = (0..CLIENTS)
        .map(|id| {
            let config = Arc::clone(&config);
            let server = daemon.listen;
            std::thread::spawn(move || {
                let mut c = Client::connect(config, server);
                for m in 0..MESSAGES {
                    let payload: Vec<u8> = format!("client {id} message {m} ")
                        .bytes()
                        .chain((0..(id * 7 + m * 13) % 200).map(|i| i as u8))
                        .collect();
                    c.echo(&payload);
                }
            })
        })
        .collect();
    let mut failures = Vec::new();
    for t in threads {
        if let Err(e) = t.join() {
            failures.push(
                e.downcast_ref::<String>()
                    .cloned()
                    .unwrap_or_else(|| "client panicked".into()),
            );
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {CLIENTS} clients failed: {failures:?}\ndtlsd:\n{}",
        failures.len(),
        daemon.log()
    );
}

// ---------- tests ----------

#[test]
fn openssl_s_client_echoes_through_serve() {
    let pki = TempDir::new("openssl");
    certs(&pki);
    let backend = EchoBackend::start();
    let daemon = Daemon::start(backend.addr, &pki, "auto");
    let args: Vec<String> = [
        "s_client",
        "-dtls1_2",
        "-connect",
        &daemon.listen.to_string(),
        "-CAfile",
        &pki.file("ca.pem"),
        "-verify_return_error",
        "-cipher",
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "-quiet",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let peer = Peer::spawn("openssl", &args);
    echo_through(peer, &daemon, "hello from openssl s_client through dtlsd");
}

#[test]
fn gnutls_cli_echoes_through_serve() {
    let pki = TempDir::new("gnutls");
    certs(&pki);
    let backend = EchoBackend::start();
    let daemon = Daemon::start(backend.addr, &pki, "auto");
    let args: Vec<String> = [
        "--udp",
        "-p",
        &daemon.listen.port().to_string(),
        "--x509cafile",
        &pki.file("ca.pem"),
        "--priority",
        "NORMAL:-VERS-ALL:+VERS-DTLS1.2",
        "127.0.0.1",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let peer = Peer::spawn("gnutls-cli", &args);
    echo_through(peer, &daemon, "hello from gnutls-cli via dtlsd");
}

#[test]
fn many_engine_clients_with_io_uring() {
    many_clients_through("uring");
}

#[test]
fn many_engine_clients_with_mmsg() {
    many_clients_through("mmsg");
}

#[test]
fn sigterm_sends_close_notify_and_exits_zero() {
    let pki = TempDir::new("sigterm");
    certs(&pki);
    let backend = EchoBackend::start();
    let mut daemon = Daemon::start(backend.addr, &pki, "auto");
    let mut client = Client::connect(Client::config(&pki), daemon.listen);
    client.echo(b"before shutdown");
    let status = daemon.terminate();
    assert!(status.success(), "exit status {status:?}\n{}", daemon.log());
    // RFC 5246 §7.2.1: close_notify is a warning-level (1) alert with description 0.
    let deadline = Instant::now() + IO_TIMEOUT;
    let mut alerts = Vec::new();
    while Instant::now() < deadline && alerts.is_empty() {
        alerts = client.turn(Duration::from_millis(100)).alerts;
    }
    assert_eq!(
        alerts,
        vec![vec![1u8, 0]],
        "no close_notify\n{}",
        daemon.log()
    );
}

#[test]
fn port_in_use_fails_naming_the_address() {
    let pki = TempDir::new("inuse");
    certs(&pki);
    // A socket without SO_REUSEPORT: the daemon's SO_REUSEPORT bind must fail.
    let holder = UdpSocket::bind("127.0.0.1:0").expect("bind a port");
    let listen = holder.local_addr().expect("address");
    let mut child = Daemon::spawn(
        listen,
        "127.0.0.1:9".parse().expect("address"),
        &pki,
        "auto",
    );
    let stderr = collect(child.stderr.take().expect("piped stderr"));
    let status = wait_exit(&mut child, START_TIMEOUT);
    let _ = child.kill();
    let status = status.expect("dtlsd exits when the port is in use");
    assert!(!status.success(), "dtlsd succeeded on a port in use");
    assert!(
        wait_for(&stderr, &listen.to_string(), Duration::from_secs(2)),
        "the error does not name {listen}:\n{}",
        stderr.lock().expect("lock")
    );
    drop(holder);
}
