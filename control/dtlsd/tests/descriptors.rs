//! `dtlsd` under a low open-files limit (`ulimit -n` in a shell that then execs the built
//! binary): the start-up check warns or raises the limit, and once sessions have taken every
//! descriptor, new sessions are refused and counted while established ones keep working,
//! the metrics endpoint still answers and the daemon keeps running.
//!
//! Every wait has a deadline; daemons are killed on drop.

mod common;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{
    Client, DTLSD, Daemon, EchoBackend, IO_TIMEOUT, START_TIMEOUT, TempDir, certs, collect,
    free_tcp_addr, free_udp_addr,
};

/// The open-files limit the starved daemons run under: room for their fixed descriptors
/// (about 15 with metrics) and a few dozen sessions.
const LOW_LIMIT: u32 = 40;
/// Most sessions tried before giving up on seeing a refusal.
const MAX_TRIES: usize = LOW_LIMIT as usize + 10;

/// `dtlsd ARGS` started through `sh -c 'ulimit LIMIT && exec dtlsd ARGS'`, killed on drop.
struct Limited {
    child: Child,
    stderr: Arc<Mutex<String>>,
}

impl Limited {
    /// Starts `dtlsd args` under `ulimit` arguments `ulimit` and waits for `ready` in its log.
    fn start(ulimit: &str, args: &[String], ready: &str) -> Self {
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(format!("ulimit {ulimit} && exec \"$0\" \"$@\""))
            .arg(DTLSD)
            .args(args)
            .env("NO_COLOR", "1")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn sh");
        let stderr = collect(child.stderr.take().expect("piped stderr"));
        let mut d = Self { child, stderr };
        let deadline = Instant::now() + START_TIMEOUT;
        while !d.log().contains(ready) {
            assert!(
                Instant::now() < deadline && d.is_running(),
                "dtlsd did not start under `ulimit {ulimit}`:\n{}",
                d.log()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        d
    }

    fn log(&self) -> String {
        self.stderr.lock().expect("log lock").clone()
    }

    fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The soft and hard "Max open files" of the running process.
    fn nofile(&self) -> (u64, u64) {
        let limits = std::fs::read_to_string(format!("/proc/{}/limits", self.child.id()))
            .expect("read /proc/PID/limits");
        let line = limits
            .lines()
            .find(|l| l.starts_with("Max open files"))
            .expect("a Max open files line");
        let mut numbers = line
            .split_whitespace()
            .filter_map(|w| w.parse::<u64>().ok());
        (
            numbers.next().expect("soft limit"),
            numbers.next().expect("hard limit"),
        )
    }
}

impl Drop for Limited {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve_args(listen: SocketAddr, backend: SocketAddr, pki: &TempDir) -> Vec<String> {
    [
        "serve",
        "--listen",
        &listen.to_string(),
        "--backend",
        &backend.to_string(),
        "--cert",
        &pki.file("server.pem"),
        "--key",
        &pki.file("server.key"),
        "--shards",
        "1",
    ]
    .map(String::from)
    .to_vec()
}

/// `GET path` over a fresh connection: status and body.
fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT).expect("connect to metrics");
    stream
        .set_read_timeout(Some(IO_TIMEOUT))
        .expect("read timeout");
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").expect("send request");
    let mut raw = String::new();
    stream.read_to_string(&mut raw).expect("read response");
    let (head, body) = raw.split_once("\r\n\r\n").expect("head and body");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("bad status line in {head:?}"));
    (status, body.to_owned())
}

/// Every sample of a `/metrics` body, by series.
fn samples(body: &str) -> HashMap<String, u64> {
    body.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series.to_owned(), value.parse().ok()?))
        })
        .collect()
}

/// Polls `/metrics` until `done` holds (the shards publish once per turn); returns the
/// last samples either way.
fn scrape_until(
    addr: SocketAddr,
    done: impl Fn(&HashMap<String, u64>) -> bool,
) -> HashMap<String, u64> {
    let deadline = Instant::now() + IO_TIMEOUT;
    loop {
        let (status, body) = get(addr, "/metrics");
        assert_eq!(status, 200, "{body}");
        let s = samples(&body);
        if done(&s) || Instant::now() > deadline {
            return s;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// What became of a new session.
enum Fate {
    /// Application data came back through it.
    Echoed,
    /// The server refused it with a fatal internal_error alert.
    Refused,
}

/// Sends `payload` on `client` until its echo or an alert comes back.
fn fate(client: &mut Client, payload: &[u8]) -> Fate {
    let deadline = Instant::now() + IO_TIMEOUT;
    while Instant::now() < deadline {
        client.send_app(payload);
        let resend = Instant::now() + Duration::from_millis(500);
        while Instant::now() < resend {
            let opened = client.turn(Duration::from_millis(50));
            if let Some(alert) = opened.alerts.first() {
                // RFC 5246 §7.2: fatal(2) internal_error(80).
                assert_eq!(alert.as_slice(), [2, 80], "unexpected alert");
                return Fate::Refused;
            }
            if opened.app.iter().any(|p| p == payload) {
                return Fate::Echoed;
            }
        }
    }
    panic!("neither an echo nor an alert for {payload:?}");
}

#[test]
fn serve_refuses_sessions_without_a_descriptor_and_keeps_the_others() {
    let pki = TempDir::new("serve");
    certs(&pki);
    let backend = EchoBackend::start();
    let (listen, metrics) = (free_udp_addr(), free_tcp_addr());
    let mut args = serve_args(listen, backend.addr, &pki);
    args.extend(["--metrics".into(), metrics.to_string()]);
    let mut daemon = Limited::start(&format!("-n {LOW_LIMIT}"), &args, "dtlsd serve listening");
    // The start-up check could not raise a hard limit of LOW_LIMIT: it says so with numbers.
    let log = daemon.log();
    assert!(
        log.contains(&format!(
            "open-files limit (RLIMIT_NOFILE) {LOW_LIMIT} is below the"
        )) && log.contains("LimitNOFILE=")
            && log.contains("ulimit -n"),
        "no warning about the limit:\n{log}"
    );

    let config = Client::config(&pki);
    let mut established = Vec::new();
    let mut refused = 0;
    for i in 0..MAX_TRIES {
        let mut client = Client::connect(Arc::clone(&config), listen);
        match fate(&mut client, format!("session {i}").as_bytes()) {
            Fate::Echoed => {
                assert_eq!(
                    refused, 0,
                    "a session got a descriptor after one was refused"
                );
                established.push(client);
            }
            Fate::Refused => refused += 1,
        }
        if refused == 3 {
            break;
        }
    }
    assert_eq!(
        refused, 3,
        "no session was refused within {MAX_TRIES} tries"
    );
    assert!(!established.is_empty(), "no session was established at all");

    // Established sessions keep working.
    for (i, client) in established.iter_mut().enumerate() {
        client.echo(format!("still here {i}").as_bytes());
    }
    // The endpoint answers (with its reserved descriptor) and counts the refusals.
    let refused_series = "dtlsd_sessions_refused_total{shard=\"0\",reason=\"descriptors\"}";
    let s = scrape_until(metrics, |s| s.get(refused_series) == Some(&refused));
    assert_eq!(s.get(refused_series), Some(&refused), "{s:?}");
    assert_eq!(
        s.get("dtlsd_sessions_active{shard=\"0\"}"),
        Some(&(established.len() as u64)),
        "{s:?}"
    );
    assert_eq!(
        s.get("dtlsd_session_install_failures_total{shard=\"0\"}"),
        Some(&refused),
        "{s:?}"
    );
    let (status, body) = get(metrics, "/healthz");
    assert_eq!(status, 200, "{body}");
    assert!(daemon.is_running(), "dtlsd stopped:\n{}", daemon.log());

    // A session that ends gives its descriptor back: a new one can start.
    let mut leaving = established.pop().expect("an established session");
    leaving.send_close_notify();
    let deadline = Instant::now() + IO_TIMEOUT;
    loop {
        let mut client = Client::connect(Arc::clone(&config), listen);
        if matches!(fate(&mut client, b"after a close"), Fate::Echoed) {
            break;
        }
        assert!(Instant::now() < deadline, "no session after one closed");
    }
    assert!(daemon.is_running(), "dtlsd stopped:\n{}", daemon.log());
}

#[test]
fn connect_drops_a_new_sources_datagram_without_a_descriptor() {
    let pki = TempDir::new("connect");
    certs(&pki);
    let backend = EchoBackend::start();
    let server = Daemon::start_serve(backend.addr, &pki, &["--shards", "1"]);
    let (listen, metrics) = (free_udp_addr(), free_tcp_addr());
    let args = [
        "connect",
        "--listen",
        &listen.to_string(),
        "--server",
        &server.listen.to_string(),
        "--ca",
        &pki.file("ca.pem"),
        "--server-name",
        "localhost",
        "--shards",
        "1",
        "--metrics",
        &metrics.to_string(),
    ]
    .map(String::from);
    let mut daemon = Limited::start(&format!("-n {LOW_LIMIT}"), &args, "dtlsd connect listening");

    // Each local source gets its own upstream socket until none is left.
    let mut sources = Vec::new();
    let mut starved = None;
    for i in 0..MAX_TRIES {
        let source = UdpSocket::bind("127.0.0.1:0").expect("bind a source");
        source
            .set_read_timeout(Some(Duration::from_millis(200)))
            .expect("read timeout");
        let payload = format!("source {i}");
        if echoes(&source, listen, payload.as_bytes(), Duration::from_secs(3)) {
            sources.push(source);
        } else {
            starved = Some(source);
            break;
        }
    }
    let starved = starved.expect("a source went without a session");
    assert!(!sources.is_empty(), "no source got a session at all");
    // Its datagrams were dropped and counted, its session refused for want of a descriptor.
    let refused_series = "dtlsd_sessions_refused_total{shard=\"0\",reason=\"descriptors\"}";
    let s = scrape_until(metrics, |s| {
        s.get(refused_series).is_some_and(|v| *v >= 1)
            && s.get("dtlsd_drops_total{shard=\"0\",reason=\"refused\"}") == s.get(refused_series)
    });
    let refusals = *s.get(refused_series).unwrap_or(&0);
    assert!(refusals >= 1, "{s:?}");
    assert_eq!(
        s.get("dtlsd_drops_total{shard=\"0\",reason=\"refused\"}"),
        Some(&refusals),
        "{s:?}"
    );
    // The others keep working, and so does the daemon.
    for (i, source) in sources.iter().enumerate() {
        let payload = format!("still here {i}");
        assert!(
            echoes(source, listen, payload.as_bytes(), IO_TIMEOUT),
            "source {i} lost its session"
        );
    }
    assert!(daemon.is_running(), "dtlsd stopped:\n{}", daemon.log());
    drop(starved);
}

/// Sends `payload` from `source` to `to` (every 500 ms) until it comes back, within `wait`.
fn echoes(source: &UdpSocket, to: SocketAddr, payload: &[u8], wait: Duration) -> bool {
    let deadline = Instant::now() + wait;
    let mut buf = [0u8; 2048];
    while Instant::now() < deadline {
        source.send_to(payload, to).expect("send from a source");
        let resend = Instant::now() + Duration::from_millis(500);
        while Instant::now() < resend {
            if let Ok(n) = source.recv(&mut buf)
                && &buf[..n] == payload
            {
                return true;
            }
        }
    }
    false
}

#[test]
fn start_raises_a_low_soft_limit_to_what_the_caps_need() {
    let pki = TempDir::new("raise");
    certs(&pki);
    let listen = free_udp_addr();
    let mut args = serve_args(listen, "127.0.0.1:9".parse().expect("address"), &pki);
    args.extend(["--max-sessions".into(), "4096".into()]);
    // Soft 256, hard 8192: one shard of 4096 sessions needs 4096 + 8 + 64 = 4168.
    let daemon = Limited::start(
        "-S -n 256 && ulimit -H -n 8192",
        &args,
        "dtlsd serve listening",
    );
    let needed = 4096 + dtlsd::descriptors::PER_SHARD + dtlsd::descriptors::FIXED;
    assert_eq!(daemon.nofile(), (needed, 8192), "{}", daemon.log());
    let log = daemon.log();
    assert!(
        log.contains("raised the open-files limit (RLIMIT_NOFILE)") && !log.contains("is below"),
        "{log}"
    );
}
