//! `dtlsd serve --metrics`: the built binary on loopback, one `openssl s_client -dtls1_2`
//! session through it to a UDP echo backend, then `/metrics`, `/healthz` and an unknown
//! path over plain HTTP/1.1.
//!
//! Every wait has a deadline; the daemon and client processes are killed on drop.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

const DTLSD: &str = env!("CARGO_BIN_EXE_dtlsd");
const START_TIMEOUT: Duration = Duration::from_secs(20);
const IO_TIMEOUT: Duration = Duration::from_secs(15);

// ---------- scaffolding (as in tests/serve.rs) ----------

struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "dtlsd-metrics-{tag}-{}-{}",
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

fn certs(dir: &TempDir) {
    let out = Command::new(DTLSD)
        .args(["certs", "--out"])
        .arg(dir.path())
        .output()
        .expect("run dtlsd certs");
    assert!(out.status.success(), "dtlsd certs: {out:?}");
}

fn free_udp_addr() -> SocketAddr {
    UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("bind an ephemeral UDP port")
}

fn free_tcp_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("bind an ephemeral TCP port")
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

fn spawn_daemon(
    listen: SocketAddr,
    metrics: SocketAddr,
    backend: SocketAddr,
    pki: &TempDir,
) -> Child {
    Command::new(DTLSD)
        .env("NO_COLOR", "1")
        .env("RUST_LOG", "info")
        .args(["serve", "--listen", &listen.to_string()])
        .args(["--backend", &backend.to_string()])
        .args(["--cert", &pki.file("server.pem")])
        .args(["--key", &pki.file("server.key")])
        .args(["--shards", "2", "--metrics", &metrics.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn dtlsd serve")
}

/// A running `dtlsd serve --metrics`, killed on drop.
struct Daemon {
    child: Child,
    stderr: Arc<Mutex<String>>,
    listen: SocketAddr,
    metrics: SocketAddr,
}

impl Daemon {
    /// Starts the daemon on free ports; retries on new ports when another process took a
    /// probed one in between (the daemon then exits naming the address).
    fn start(backend: SocketAddr, pki: &TempDir) -> Self {
        let mut last_log = String::new();
        for _ in 0..3 {
            let (listen, metrics) = (free_udp_addr(), free_tcp_addr());
            let mut child = spawn_daemon(listen, metrics, backend, pki);
            let stderr = collect(child.stderr.take().expect("piped stderr"));
            let mut d = Self {
                child,
                stderr,
                listen,
                metrics,
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
            std::thread::sleep(Duration::from_millis(50));
            last_log = d.log();
            if !last_log.contains("in use") {
                break;
            }
        }
        panic!("dtlsd did not start:\n{last_log}");
    }

    fn log(&self) -> String {
        self.stderr.lock().expect("log lock").clone()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An openssl client process killed on drop.
struct Peer {
    child: Child,
    stdout: Arc<Mutex<String>>,
    stderr: Arc<Mutex<String>>,
}

impl Peer {
    fn openssl(server: SocketAddr, pki: &TempDir) -> Self {
        let mut child = Command::new("openssl")
            .args(["s_client", "-dtls1_2", "-connect", &server.to_string()])
            .args(["-CAfile", &pki.file("ca.pem"), "-verify_return_error"])
            .args(["-cipher", "ECDHE-ECDSA-AES128-GCM-SHA256", "-quiet"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn openssl s_client");
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

// ---------- HTTP and exposition parsing ----------

struct Response {
    status: u16,
    content_type: String,
    body: String,
}

/// One `GET path` over a fresh connection (the server closes after each answer).
fn get(addr: SocketAddr, path: &str) -> Response {
    let mut stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT).expect("connect to metrics");
    stream
        .set_read_timeout(Some(IO_TIMEOUT))
        .expect("read timeout");
    stream
        .set_write_timeout(Some(IO_TIMEOUT))
        .expect("write timeout");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .expect("send request");
    let mut raw = String::new();
    stream.read_to_string(&mut raw).expect("read response");
    let (head, body) = raw
        .split_once("\r\n\r\n")
        .expect("response has a head and a body");
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.strip_prefix("HTTP/1.1 "))
        .and_then(|l| l.split(' ').next())
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("bad status line in {head:?}"));
    let content_type = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.eq_ignore_ascii_case("content-type"))
        .map(|(_, v)| v.trim().to_owned())
        .unwrap_or_default();
    let length: usize = head
        .lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse().ok())
        .expect("content-length");
    assert_eq!(length, body.len(), "content-length matches the body");
    Response {
        status,
        content_type,
        body: body.to_owned(),
    }
}

/// Parses every sample line as `name{labels} value` (labels optional) into a map from the
/// series (name with labels) to its value; panics naming the first line that does not parse.
fn parse_samples(text: &str) -> HashMap<String, u64> {
    let mut samples = HashMap::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("no value in {line:?}"));
        let value: u64 = value
            .parse()
            .unwrap_or_else(|_| panic!("value is not an integer in {line:?}"));
        let name = match series.split_once('{') {
            None => series,
            Some((name, labels)) => {
                let labels = labels
                    .strip_suffix('}')
                    .unwrap_or_else(|| panic!("unclosed labels in {line:?}"));
                for pair in labels.split(',') {
                    let (k, v) = pair
                        .split_once('=')
                        .unwrap_or_else(|| panic!("bad label in {line:?}"));
                    assert!(is_name(k), "bad label name in {line:?}");
                    assert!(
                        v.len() >= 2 && v.starts_with('"') && v.ends_with('"'),
                        "unquoted label value in {line:?}"
                    );
                }
                name
            }
        };
        assert!(
            is_name(name) && name.starts_with("dtlsd_"),
            "bad metric name in {line:?}"
        );
        assert!(
            samples.insert(series.to_owned(), value).is_none(),
            "duplicate series {series}"
        );
    }
    samples
}

fn is_name(s: &str) -> bool {
    !s.is_empty()
        && !s.starts_with(|c: char| c.is_ascii_digit())
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Sum of every series of `name` (all label sets).
fn total(samples: &HashMap<String, u64>, name: &str) -> u64 {
    samples
        .iter()
        .filter(|(series, _)| series.as_str() == name || series.starts_with(&format!("{name}{{")))
        .map(|(_, v)| v)
        .sum()
}

// ---------- tests ----------

#[test]
fn metrics_count_an_openssl_session_and_answer_healthz() {
    let pki = TempDir::new("session");
    certs(&pki);
    let backend = EchoBackend::start();
    let daemon = Daemon::start(backend.addr, &pki);

    let mut peer = Peer::openssl(daemon.listen, &pki);
    let line = "hello metrics through dtlsd";
    peer.write_line(line);
    assert!(
        wait_for(&peer.stdout, line, IO_TIMEOUT),
        "echo not received\n{}\ndtlsd:\n{}",
        peer.transcript(),
        daemon.log()
    );

    // The shards publish their counters once per loop turn: poll until they show the session.
    let deadline = Instant::now() + IO_TIMEOUT;
    let (response, samples) = loop {
        let response = get(daemon.metrics, "/metrics");
        assert_eq!(response.status, 200, "{}", response.body);
        let samples = parse_samples(&response.body);
        let done = total(&samples, "dtlsd_records_opened_total") >= 1
            && total(&samples, "dtlsd_sessions_active") == 1;
        if done || Instant::now() > deadline {
            break (response, samples);
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        response
            .content_type
            .starts_with("text/plain; version=0.0.4"),
        "content type {:?}",
        response.content_type
    );
    let body = &response.body;
    assert!(
        total(&samples, "dtlsd_handshakes_completed_total") >= 1,
        "{body}"
    );
    assert!(
        total(&samples, "dtlsd_handshakes_started_total") >= 1,
        "{body}"
    );
    assert!(total(&samples, "dtlsd_records_opened_total") >= 1, "{body}");
    assert!(total(&samples, "dtlsd_records_sealed_total") >= 1, "{body}");
    assert!(total(&samples, "dtlsd_cookies_sent_total") >= 1, "{body}");
    assert!(total(&samples, "dtlsd_datagrams_in_total") >= 1, "{body}");
    assert!(
        total(&samples, "dtlsd_upstream_datagrams_out_total") >= 1,
        "{body}"
    );
    assert_eq!(total(&samples, "dtlsd_sessions_active"), 1, "{body}");
    assert_eq!(
        total(&samples, "dtlsd_handshakes_failed_total"),
        0,
        "{body}"
    );
    // Both shards report, and drops carry the reason label.
    assert!(
        samples.contains_key("dtlsd_records_opened_total{shard=\"1\"}"),
        "{body}"
    );
    assert!(
        samples.contains_key("dtlsd_drops_total{shard=\"0\",reason=\"bad_tag\"}"),
        "{body}"
    );
    // Every family has HELP and TYPE.
    for name in [
        "dtlsd_sessions_active",
        "dtlsd_drops_total",
        "dtlsd_cookies_sent_total",
    ] {
        assert!(
            body.contains(&format!("# HELP {name} ")),
            "no HELP for {name}"
        );
        assert!(
            body.contains(&format!("# TYPE {name} ")),
            "no TYPE for {name}"
        );
    }

    let health = get(daemon.metrics, "/healthz");
    assert_eq!((health.status, health.body.as_str()), (200, "ok\n"));
    let missing = get(daemon.metrics, "/nothing-here");
    assert_eq!(missing.status, 404);
}

#[test]
fn metrics_address_in_use_fails_naming_the_address() {
    let pki = TempDir::new("inuse");
    certs(&pki);
    let holder = TcpListener::bind("127.0.0.1:0").expect("bind a TCP port");
    let metrics = holder.local_addr().expect("address");
    let mut child = spawn_daemon(
        free_udp_addr(),
        metrics,
        "127.0.0.1:9".parse().expect("address"),
        &pki,
    );
    let stderr = collect(child.stderr.take().expect("piped stderr"));
    let deadline = Instant::now() + START_TIMEOUT;
    let status = loop {
        if let Ok(Some(status)) = child.try_wait() {
            break Some(status);
        }
        if Instant::now() > deadline {
            break None;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let _ = child.kill();
    let _ = child.wait();
    let status = status.expect("dtlsd exits when the metrics port is in use");
    assert!(
        !status.success(),
        "dtlsd succeeded on a metrics port in use"
    );
    assert!(
        wait_for(
            &stderr,
            &format!("metrics on {metrics}"),
            Duration::from_secs(2)
        ),
        "the error does not name {metrics}:\n{}",
        stderr.lock().expect("lock")
    );
    drop(holder);
}
