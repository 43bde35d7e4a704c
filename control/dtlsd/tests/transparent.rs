//! Transparent mode over real interfaces: `dtlsd serve --transparent` binds each session's
//! upstream socket to the client's own address and port, so an unmodified backend sees the
//! real client.
//!
//! The test builds three network namespaces joined by two veth pairs:
//!
//! ```text
//!   client ns            daemon ns                          backend ns
//!   10.248.1.2 --veth-- 10.248.1.1 | 10.248.2.1 --veth-- 10.248.2.2:7000
//!                        dtlsd serve --transparent           echo, reports sources
//! ```
//!
//! The daemon's namespace does not forward, and the client's address is none of its own: the
//! backend's replies to the client reach the session's socket only through the policy rule
//! docs/dtlsd.md describes (`ip rule add from BACKEND ipproto udp sport PORT lookup 100`,
//! `ip route add local 0.0.0.0/0 dev lo table 100`). The client and the backend are this
//! test binary again, run inside their namespaces (`ip netns exec NS <this binary>` with
//! [`ROLE`] set), since a thread cannot enter a namespace without unsafe code. Everything
//! built is removed on the way out; a namespace that cannot be built fails the test with
//! the `ip` command's error.

mod common;

use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Client, DTLSD, START_TIMEOUT, TempDir, certs, collect, http_get, wait_exit};
use control::{Config, PeerVerifier};
use dtls_crypto::CertificateVerifier;

/// Set in the re-run test binary: which part it plays (`client`, `backend`, `metrics`).
const ROLE: &str = "DTLSD_TRANSPARENT_ROLE";
/// The test that plays every part.
const TEST: &str = "the_backend_sees_the_clients_own_address_and_port";

const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(10, 248, 1, 2);
const DAEMON_CLIENT_SIDE: Ipv4Addr = Ipv4Addr::new(10, 248, 1, 1);
const DAEMON_BACKEND_SIDE: Ipv4Addr = Ipv4Addr::new(10, 248, 2, 1);
const BACKEND_IP: Ipv4Addr = Ipv4Addr::new(10, 248, 2, 2);
const BACKEND_PORT: u16 = 7000;
const LISTEN_PORT: u16 = 4433;
/// The daemon's metrics, inside its namespace.
const METRICS: &str = "127.0.0.1:9464";
const PAYLOAD: &[u8] = b"through a transparent socket \x00\xff";

/// Runs `ip ARGS`; a failure panics with the command and what `ip` said.
fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run `ip` to build the namespaces: {e}"));
    assert!(
        out.status.success(),
        "cannot build the test's network namespaces: `ip {}` failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
}

/// The three namespaces; deleted on drop (with the veth pairs and rules inside them).
struct Namespaces {
    client: String,
    daemon: String,
    backend: String,
}

impl Namespaces {
    fn build() -> Self {
        let tag = format!("dtlsd-tp{}", std::process::id());
        let ns = Self {
            client: format!("{tag}-c"),
            daemon: format!("{tag}-d"),
            backend: format!("{tag}-b"),
        };
        // A failure below unwinds through `ns`'s drop, which deletes what was made.
        for name in [&ns.client, &ns.daemon, &ns.backend] {
            ip(&["netns", "add", name]);
            ip(&["-n", name, "link", "set", "lo", "up"]);
        }
        let (c, d, b) = (&ns.client, &ns.daemon, &ns.backend);
        let addr = |ip4: Ipv4Addr| format!("{ip4}/24");
        ip(&[
            "-n", c, "link", "add", "vc", "type", "veth", "peer", "name", "vd1", "netns", d,
        ]);
        ip(&[
            "-n", d, "link", "add", "vd2", "type", "veth", "peer", "name", "vb", "netns", b,
        ]);
        ip(&["-n", c, "addr", "add", &addr(CLIENT_IP), "dev", "vc"]);
        ip(&[
            "-n",
            d,
            "addr",
            "add",
            &addr(DAEMON_CLIENT_SIDE),
            "dev",
            "vd1",
        ]);
        ip(&[
            "-n",
            d,
            "addr",
            "add",
            &addr(DAEMON_BACKEND_SIDE),
            "dev",
            "vd2",
        ]);
        ip(&["-n", b, "addr", "add", &addr(BACKEND_IP), "dev", "vb"]);
        for (name, dev) in [(c, "vc"), (d, "vd1"), (d, "vd2"), (b, "vb")] {
            ip(&["-n", name, "link", "set", dev, "up"]);
        }
        let via = |gw: Ipv4Addr| gw.to_string();
        ip(&[
            "-n",
            c,
            "route",
            "add",
            "default",
            "via",
            &via(DAEMON_CLIENT_SIDE),
        ]);
        // The backend answers every address through the daemon's host.
        ip(&[
            "-n",
            b,
            "route",
            "add",
            "default",
            "via",
            &via(DAEMON_BACKEND_SIDE),
        ]);
        // The daemon's host delivers the backend's replies locally (docs/dtlsd.md).
        ip(&[
            "-n",
            d,
            "route",
            "add",
            "local",
            "0.0.0.0/0",
            "dev",
            "lo",
            "table",
            "100",
        ]);
        let (from, sport) = (BACKEND_IP.to_string(), BACKEND_PORT.to_string());
        ip(&[
            "-n", d, "rule", "add", "from", &from, "ipproto", "udp", "sport", &sport, "lookup",
            "100",
        ]);
        ns
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for name in [&self.client, &self.daemon, &self.backend] {
            let _ = Command::new("ip").args(["netns", "del", name]).status();
        }
    }
}

/// A process inside a namespace, killed on drop.
struct InNs {
    child: Child,
    stdout: Arc<Mutex<String>>,
    stderr: Arc<Mutex<String>>,
}

impl InNs {
    /// `program args` in namespace `ns`, with `env` set; stdout and stderr collected.
    fn spawn(ns: &str, program: &str, args: &[&str], env: &[(&str, String)]) -> Self {
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", ns, program])
            .args(args)
            .env("NO_COLOR", "1")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            command.env(k, v);
        }
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run `ip netns exec {ns} {program}`: {e}"));
        let stdout = collect(child.stdout.take().expect("piped stdout"));
        let stderr = collect(child.stderr.take().expect("piped stderr"));
        Self {
            child,
            stdout,
            stderr,
        }
    }

    /// This test binary again, in `ns`, playing `role`.
    fn role(ns: &str, role: &str, env: &[(&str, String)]) -> Self {
        let exe = std::env::current_exe().expect("the test binary's path");
        let mut env = env.to_vec();
        env.push((ROLE, role.to_owned()));
        Self::spawn(
            ns,
            exe.to_str().expect("a UTF-8 path"),
            &[TEST, "--exact", "--nocapture", "--test-threads", "1"],
            &env,
        )
    }

    /// What it wrote: stdout, then stderr.
    fn text(&self) -> String {
        let out = self.stdout.lock().expect("stdout").clone();
        out + &self.stderr.lock().expect("stderr")
    }

    fn wait_for(&self, needle: &str, what: &str) {
        let deadline = Instant::now() + START_TIMEOUT;
        while !self.text().contains(needle) {
            assert!(
                Instant::now() < deadline,
                "{what} did not say `{needle}`:\n{}",
                self.text()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits for the process to end; panics with its transcript unless it succeeded.
    fn success(&mut self, what: &str) -> String {
        let status = wait_exit(&mut self.child, Duration::from_secs(90));
        // Let the readers catch up with the last lines.
        std::thread::sleep(Duration::from_millis(100));
        let text = self.text();
        assert!(
            status.is_some_and(|s| s.success()),
            "{what} failed ({status:?}):\n{text}"
        );
        text
    }
}

impl Drop for InNs {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// The values after `prefix` on each line of `text` that holds it (the test harness may
/// have started the line: `test NAME ... CLIENT ADDR`).
fn tagged<'a>(text: &'a str, prefix: &str) -> Vec<&'a str> {
    text.lines()
        .filter_map(|l| l.split_once(prefix).map(|(_, value)| value))
        .map(str::trim)
        .collect()
}

#[test]
fn the_backend_sees_the_clients_own_address_and_port() {
    if let Ok(role) = std::env::var(ROLE) {
        match role.as_str() {
            "backend" => play_backend(),
            "client" => play_client(),
            "metrics" => print!(
                "{}",
                http_get(METRICS.parse().expect("address"), "/metrics").1
            ),
            other => panic!("unknown role {other}"),
        }
        return;
    }
    let ns = Namespaces::build();
    let pki = TempDir::new("transparent");
    certs(&pki);

    let backend = InNs::role(&ns.backend, "backend", &[]);
    backend.wait_for("READY", "the backend");
    let listen = SocketAddr::from((Ipv4Addr::UNSPECIFIED, LISTEN_PORT));
    let daemon = InNs::spawn(
        &ns.daemon,
        DTLSD,
        &[
            "serve",
            "--listen",
            &listen.to_string(),
            "--backend",
            &SocketAddr::from((BACKEND_IP, BACKEND_PORT)).to_string(),
            "--cert",
            &pki.file("server.pem"),
            "--key",
            &pki.file("server.key"),
            "--shards",
            "1",
            "--metrics",
            METRICS,
            "--transparent",
        ],
        &[],
    );
    daemon.wait_for("dtlsd serve listening", "dtlsd serve --transparent");

    let mut client = InNs::role(
        &ns.client,
        "client",
        &[("PKI", pki.path().display().to_string())],
    );
    let client_out = client.success("the client");
    let sessions = tagged(&client_out, "CLIENT ");
    let refused = tagged(&client_out, "REFUSED ");
    assert_eq!((sessions.len(), refused.len()), (1, 1), "{client_out}");
    let client_addr: SocketAddr = sessions[0].parse().expect("the client's address");
    assert_eq!(client_addr.ip(), CLIENT_IP);

    // Every datagram the backend got came from the client's own address and port (never
    // from the daemon's, never from the refused session), and held the payload as sent.
    let seen_text = backend.text();
    let seen = tagged(&seen_text, "SAW ");
    assert!(!seen.is_empty(), "the backend saw nothing:\n{seen_text}");
    for line in &seen {
        let (from, payload) = line.split_once(' ').expect("SAW FROM HEX");
        assert_eq!(
            from.parse::<SocketAddr>().expect("source address"),
            client_addr,
            "{seen_text}\ndaemon:\n{}",
            daemon.text()
        );
        assert_eq!(payload, hex(PAYLOAD));
    }

    // The session whose client port the daemon's wildcard listen socket holds was refused,
    // counted under its own reason; the daemon kept running.
    let mut metrics = InNs::role(&ns.daemon, "metrics", &[]);
    let body = metrics.success("reading the daemon's metrics");
    let series = |reason: &str| {
        let prefix = format!("dtlsd_sessions_refused_total{{shard=\"0\",reason=\"{reason}\"}} ");
        tagged(&body, &prefix).first().map(|v| v.to_string())
    };
    assert_eq!(series("transparent").as_deref(), Some("1"), "{body}");
    assert_eq!(series("socket").as_deref(), Some("0"), "{body}");
    let log = daemon.text();
    assert!(!log.contains("panicked"), "{log}");
    drop(daemon);
    drop(backend);
    drop(ns);
}

/// The backend: echoes each datagram to its source and prints `SAW SOURCE HEX`.
fn play_backend() {
    let sock = UdpSocket::bind((BACKEND_IP, BACKEND_PORT)).expect("bind the backend");
    sock.set_read_timeout(Some(Duration::from_millis(100)))
        .expect("read timeout");
    println!("READY");
    let mut buf = vec![0u8; 65_536];
    let deadline = Instant::now() + Duration::from_secs(120);
    while Instant::now() < deadline {
        let Ok((n, from)) = sock.recv_from(&mut buf) else {
            continue;
        };
        println!("SAW {from} {}", hex(&buf[..n]));
        sock.send_to(&buf[..n], from).expect("echo");
    }
}

/// The client: one session whose echo must come back byte for byte (`CLIENT ADDR`), then
/// one from the daemon's own listen port, which the daemon must refuse with a fatal
/// internal_error alert after the handshake (`REFUSED ADDR`).
fn play_client() {
    let pki = std::env::var("PKI").expect("PKI");
    let ca = CertificateVerifier::from_pem_file(format!("{pki}/ca.pem")).expect("load ca.pem");
    let config = Arc::new(Config {
        server_name: Some("localhost".into()),
        ..Config::new(PeerVerifier::WebPki(ca))
    });
    let server = SocketAddr::from((DAEMON_CLIENT_SIDE, LISTEN_PORT));
    let timeout = Duration::from_secs(15);

    let mut client =
        Client::try_connect_bound(Arc::clone(&config), server, (CLIENT_IP, 0).into(), timeout)
            .expect("handshake through the daemon");
    // Sends until the identical payload comes back through the backend and the daemon.
    client.echo(PAYLOAD);
    println!("CLIENT {}", client.local_addr());

    let local = SocketAddr::from((CLIENT_IP, LISTEN_PORT));
    let mut refused = Client::try_connect_bound(config, server, local, timeout)
        .expect("the handshake completes before the refusal");
    let deadline = Instant::now() + timeout;
    loop {
        assert!(
            Instant::now() < deadline,
            "no alert for the refused session"
        );
        let opened = refused.turn(Duration::from_millis(100));
        // RFC 5246 §7.2: fatal(2) internal_error(80).
        if opened.alerts.iter().any(|a| a == &[2, 80]) {
            break;
        }
        assert!(opened.app.is_empty(), "the refused session carried data");
    }
    println!("REFUSED {local}");
}

#[test]
fn without_the_capability_serve_stops_at_start_naming_it() {
    let pki = TempDir::new("transparent-caps");
    certs(&pki);
    // Root without CAP_NET_ADMIN and CAP_NET_RAW: dropped from the bounding set, so the
    // daemon's exec gets neither.
    let mut child = Command::new("setpriv")
        .args(["--bounding-set", "-net_admin,-net_raw"])
        .args(["--inh-caps", "-net_admin,-net_raw", "--", DTLSD])
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--backend",
            "127.0.0.1:9",
        ])
        .args([
            "--cert",
            &pki.file("server.pem"),
            "--key",
            &pki.file("server.key"),
        ])
        .args(["--shards", "1", "--transparent"])
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run setpriv to drop the capabilities: {e}"));
    let stderr = collect(child.stderr.take().expect("piped stderr"));
    let status = wait_exit(&mut child, START_TIMEOUT);
    if status.is_none() {
        let _ = child.kill();
    }
    std::thread::sleep(Duration::from_millis(100));
    let log = stderr.lock().expect("stderr").clone();
    assert_eq!(status.and_then(|s| s.code()), Some(1), "{log}");
    assert!(
        log.contains("CAP_NET_ADMIN")
            && log.contains("CAP_NET_RAW")
            && log.contains("IP_TRANSPARENT"),
        "{log}"
    );
    assert!(!log.contains("dtlsd serve listening"), "{log}");
}
