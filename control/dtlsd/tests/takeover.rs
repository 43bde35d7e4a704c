//! A listen address in use stops start-up (exit 1, one line naming the address and its
//! owner), over real sockets through the `dtlsd` binary; `--takeover` shares it for a
//! restart: the new daemon starts, the old one is stopped, the new one serves.

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{
    Client, DTLSD, EchoBackend, IO_TIMEOUT, START_TIMEOUT, TempDir, certs, collect, free_tcp_addr,
    free_udp_addr, http_get, wait_exit, wait_for,
};

/// A `dtlsd` process, killed on drop.
struct Proc {
    child: Child,
    stderr: Arc<Mutex<String>>,
}

impl Proc {
    fn spawn(args: &[String]) -> Self {
        let mut child = Command::new(DTLSD)
            .args(args)
            .env("NO_COLOR", "1")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn dtlsd");
        let stderr = collect(child.stderr.take().expect("piped stderr"));
        Self { child, stderr }
    }

    /// Spawns and waits for `ready` in the log.
    fn start(args: &[String], ready: &str) -> Self {
        let p = Self::spawn(args);
        assert!(
            wait_for(&p.stderr, ready, START_TIMEOUT),
            "dtlsd did not start: {}",
            p.log()
        );
        p
    }

    /// Waits for the process to exit; its exit code and whole stderr.
    fn exit(mut self) -> (Option<i32>, String) {
        let status = wait_exit(&mut self.child, START_TIMEOUT);
        std::thread::sleep(Duration::from_millis(50));
        (status.and_then(|s| s.code()), self.log())
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn log(&self) -> String {
        self.stderr.lock().expect("log lock").clone()
    }

    fn terminate(mut self) -> Option<i32> {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success());
        wait_exit(&mut self.child, IO_TIMEOUT).and_then(|s| s.code())
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve_args(
    listen: SocketAddr,
    backend: SocketAddr,
    pki: &TempDir,
    extra: &[&str],
) -> Vec<String> {
    let mut args: Vec<String> = [
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
        "2",
    ]
    .iter()
    .map(ToString::to_string)
    .collect();
    args.extend(extra.iter().map(ToString::to_string));
    args
}

fn connect_args(listen: SocketAddr, server: SocketAddr, pki: &TempDir) -> Vec<String> {
    [
        "connect",
        "--listen",
        &listen.to_string(),
        "--server",
        &server.to_string(),
        "--ca",
        &pki.file("ca.pem"),
        "--server-name",
        "localhost",
        "--shards",
        "1",
    ]
    .iter()
    .map(ToString::to_string)
    .collect()
}

const SERVE_READY: &str = "dtlsd serve listening";
const CONNECT_READY: &str = "dtlsd connect listening";

/// The one-line refusal: exit 1, naming the address, the owner and the way out.
fn assert_refused(second: Proc, addr: SocketAddr, owner: &str) {
    let (code, log) = second.exit();
    assert_eq!(code, Some(1), "{log}");
    assert_eq!(log.lines().count(), 1, "{log}");
    assert!(
        log.starts_with(&format!(
            "dtlsd: error: cannot listen on {addr}: Address already in use"
        )),
        "{log}"
    );
    assert!(log.contains(&format!("held by {owner}")), "{log}");
    assert!(
        log.trim_end()
            .ends_with("; pass --takeover to share it during a restart"),
        "{log}"
    );
}

#[test]
fn a_second_serve_on_the_same_address_exits_1_naming_the_first() {
    let pki = TempDir::new("second-serve");
    certs(&pki);
    let backend = EchoBackend::start();
    let listen = free_udp_addr();
    let first = Proc::start(&serve_args(listen, backend.addr, &pki, &[]), SERVE_READY);
    let second = Proc::spawn(&serve_args(listen, backend.addr, &pki, &[]));
    assert_refused(second, listen, &format!("pid {} (dtlsd)", first.pid()));
    assert_eq!(first.terminate(), Some(0));
}

#[test]
fn a_plain_udp_socket_owner_is_named_and_takeover_cannot_share_it() {
    let pki = TempDir::new("plain-owner");
    certs(&pki);
    let held = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let addr = held.local_addr().expect("address");
    let backend = free_udp_addr();
    let serve = Proc::spawn(&serve_args(addr, backend, &pki, &[]));
    // The owner's name is this test binary's (truncated) name.
    assert_refused(serve, addr, &format!("pid {} (", std::process::id()));
    // A socket without SO_REUSEPORT cannot be shared: --takeover fails at the shards' bind.
    let (code, log) = Proc::spawn(&serve_args(addr, backend, &pki, &["--takeover"])).exit();
    assert_eq!(code, Some(1), "{log}");
    assert!(log.contains(&format!("cannot listen on {addr}")), "{log}");
}

#[test]
fn a_second_connect_on_the_same_address_exits_1_naming_the_first() {
    let pki = TempDir::new("second-connect");
    certs(&pki);
    let listen = free_udp_addr();
    let server = free_udp_addr();
    let first = Proc::start(&connect_args(listen, server, &pki), CONNECT_READY);
    let second = Proc::spawn(&connect_args(listen, server, &pki));
    assert_refused(second, listen, &format!("pid {} (dtlsd)", first.pid()));
}

#[test]
fn takeover_restarts_without_refusing_the_address() {
    let pki = TempDir::new("takeover");
    certs(&pki);
    let backend = EchoBackend::start();
    let listen = free_udp_addr();
    let old = Proc::start(&serve_args(listen, backend.addr, &pki, &[]), SERVE_READY);
    // The restart recipe: start the new daemon with --takeover, then SIGTERM the old one.
    let new = Proc::start(
        &serve_args(listen, backend.addr, &pki, &["--takeover"]),
        SERVE_READY,
    );
    let log = new.log();
    assert!(
        log.contains("WARN")
            && log.contains("--takeover: sharing the listen address")
            && log.contains(&format!("pid {} (dtlsd)", old.pid())),
        "{log}"
    );
    assert_eq!(old.terminate(), Some(0));
    // Every client now reaches the new daemon.
    let local = free_udp_addr();
    let _entry = Proc::start(&connect_args(local, listen, &pki), CONNECT_READY);
    for i in 0..4 {
        let s = UdpSocket::bind("127.0.0.1:0").expect("bind");
        s.connect(local).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(20)))
            .expect("timeout");
        let msg = format!("after the restart {i}");
        s.send(msg.as_bytes()).expect("send");
        let mut buf = [0u8; 128];
        let n = s
            .recv(&mut buf)
            .unwrap_or_else(|e| panic!("no echo ({e}):\n{}", new.log()));
        assert_eq!(&buf[..n], msg.as_bytes());
    }
    assert_eq!(new.terminate(), Some(0));
}

/// The sum over every shard of the samples of `family` whose labels contain `label` (all of
/// them for an empty `label`).
fn metric_sum(metrics: SocketAddr, family: &str, label: &str) -> u64 {
    let (status, body) = http_get(metrics, "/metrics");
    assert_eq!(status, 200, "{body}");
    body.lines()
        .filter(|l| l.starts_with(&format!("{family}{{")) && l.contains(label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// Operational: restart under load. The daemon dies outright (SIGKILL: no close_notify to
/// anyone) and a new one takes the address while its eight sessions (DTLS 1.2 and 1.3) keep
/// sending: the new daemon has no keys for their records and drops every one silently,
/// counted as `unknown_session` (RFC 6347 §4.1.2.7 and RFC 9147 §4.5.2: invalid records are
/// discarded; no alert storm toward the senders, nothing sent at all), and each client then
/// gets a new session with a new handshake.
#[test]
fn restart_under_load_drops_the_old_sessions_records_without_alerts() {
    let pki = TempDir::new("restart-load");
    certs(&pki);
    let backend = EchoBackend::start();
    let listen = free_udp_addr();
    let first = free_tcp_addr();
    let old = Proc::start(
        &serve_args(
            listen,
            backend.addr,
            &pki,
            &["--metrics", &first.to_string()],
        ),
        SERVE_READY,
    );
    let configs = [
        control::ProtocolVersion::Dtls1_2,
        control::ProtocolVersion::Dtls1_3,
    ]
    .map(|v| {
        Arc::new(control::Config {
            versions: vec![v],
            ..(*Client::config(&pki)).clone()
        })
    });
    let mut clients: Vec<Client> = (0..8)
        .map(|i| {
            let mut c = Client::connect(Arc::clone(&configs[i % 2]), listen);
            c.echo(b"before the restart");
            c
        })
        .collect();
    // Whatever the old daemon sent after the handshake (DTLS 1.3 tickets, connection IDs
    // and their retransmissions) is read before it dies.
    for c in &mut clients {
        c.settle(Duration::from_millis(200));
    }
    drop(old);
    let second = free_tcp_addr();
    let new = Proc::start(
        &serve_args(
            listen,
            backend.addr,
            &pki,
            &["--metrics", &second.to_string()],
        ),
        SERVE_READY,
    );
    const RECORDS: u64 = 100;
    for c in &mut clients {
        for i in 0..RECORDS {
            c.send_app(format!("old session record {i}").as_bytes());
        }
    }
    for c in &mut clients {
        assert_eq!(
            c.settle(Duration::from_millis(300)),
            0,
            "the new daemon answered an old session's records\n{}",
            new.log()
        );
    }
    let total = RECORDS * clients.len() as u64;
    let deadline = std::time::Instant::now() + IO_TIMEOUT;
    while metric_sum(second, "dtlsd_drops_total", "reason=\"unknown_session\"") < total
        && std::time::Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        metric_sum(second, "dtlsd_drops_total", "reason=\"unknown_session\""),
        total,
        "{}",
        new.log()
    );
    assert_eq!(metric_sum(second, "dtlsd_datagrams_out_total", ""), 0);
    // Every client starts over and gets through.
    for i in 0..clients.len() {
        let mut c = Client::connect(Arc::clone(&configs[i % 2]), listen);
        c.echo(b"after the restart");
    }
}
