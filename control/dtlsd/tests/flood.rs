//! `dtlsd serve` under a flood: while eight sessions of our own engine stream paced,
//! byte-checked datagrams through the daemon to a UDP echo backend, other threads flood the
//! listen port with (1) seeded random garbage, (2) cookie-less DTLS 1.2 ClientHellos from
//! many loopback source addresses (127.0.0.2..=127.0.0.250) and (3) application-data records
//! for sessions that do not exist.
//!
//! Asserted: every session datagram comes back intact (the flood is paced below what a
//! loopback socket buffer drops, so no loss is tolerated and nothing is resent), every
//! session still round-trips after the flood, the daemon is still running, and the bytes
//! that come back to the ClientHello sources (HelloVerifyRequests) are at most the bytes
//! they sent (TESTING.md, DoS: amplification ≤ 1.0 before cookie validation).
//!
//! Every wait has a deadline; the daemon is killed on drop.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read};
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Barrier, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use control::crypto::SystemRng;
use control::{Config, Connection, Event, PeerVerifier};
use dataplane::record::{ContentType, DTLS_1_2, HEADER_LEN, Opener, Records, ReplayWindow, Sealer};
use dtls_crypto::CertificateVerifier;

const DTLSD: &str = env!("CARGO_BIN_EXE_dtlsd");
const START_TIMEOUT: Duration = Duration::from_secs(20);
const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// Sessions streaming through the daemon during the flood.
const SESSIONS: usize = 8;
/// Datagrams each session sends during the flood, one every `SEND_INTERVAL`.
const STREAM_LEN: usize = 200;
const SEND_INTERVAL: Duration = Duration::from_millis(10);
/// Upper bounds on the flood: it stops at whichever comes first.
const FLOOD_TIME: Duration = Duration::from_millis(2_500);
const FLOOD_MAX_PER_THREAD: usize = 20_000;
/// Each flood thread sends this many datagrams, then sleeps `FLOOD_PAUSE`.
const FLOOD_BURST: usize = 16;
const FLOOD_PAUSE: Duration = Duration::from_millis(2);
/// Spoofed-looking ClientHello sources: 127.0.0.2 ..= 127.0.0.250.
const SPOOF_FIRST: u8 = 2;
const SPOOF_LAST: u8 = 250;

// ---------- scaffolding (the same shapes as tests/serve.rs) ----------

struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "dtlsd-flood-{tag}-{}-{}",
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

/// A running `dtlsd serve --shards 2`, killed on drop.
struct Daemon {
    child: Child,
    stderr: Arc<Mutex<String>>,
    listen: SocketAddr,
}

impl Daemon {
    fn start(backend: SocketAddr, pki: &TempDir) -> Self {
        let mut last_log = String::new();
        for _ in 0..3 {
            let listen: SocketAddr = format!("127.0.0.1:{}", free_udp_port())
                .parse()
                .expect("address");
            let mut child = Command::new(DTLSD)
                .env("NO_COLOR", "1")
                .env("RUST_LOG", "info")
                .args(["serve", "--listen", &listen.to_string()])
                .args(["--backend", &backend.to_string()])
                .args(["--cert", &pki.file("server.pem")])
                .args(["--key", &pki.file("server.key")])
                .args(["--io", "auto", "--shards", "2"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn dtlsd serve");
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

    fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Seeded xorshift64*: reproducible flood contents without a dependency.
struct Prng(u64);

impl Prng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn fill(&mut self, buf: &mut [u8]) {
        for b in buf {
            *b = self.next() as u8;
        }
    }
}

// ---------- our engine as a blocking client ----------

struct Client {
    sock: UdpSocket,
    server: SocketAddr,
    conn: Connection,
    sealer: Option<Sealer>,
    opener: Option<Opener>,
    buf: Vec<u8>,
    rx: Vec<u8>,
}

fn client_config(pki: &TempDir) -> Arc<Config> {
    let ca = CertificateVerifier::from_pem_file(pki.file("ca.pem")).expect("load ca.pem");
    Arc::new(Config {
        peer_verification: PeerVerifier::WebPki(ca),
        server_name: Some("localhost".into()),
        ..Config::default()
    })
}

impl Client {
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
            rx: vec![0u8; 65_536],
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

    /// Sends what the engine queued, waits up to `wait` for one datagram from the server,
    /// handles it and the timer, and returns the application data it carried.
    fn turn(&mut self, wait: Duration) -> Vec<Vec<u8>> {
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
        let mut app = Vec::new();
        if let Ok((n, from)) = self.sock.recv_from(&mut self.rx)
            && from == self.server
        {
            let datagram = self.rx[..n].to_vec();
            self.conn.handle_datagram(Instant::now(), from, &datagram);
            app = self.open(&datagram);
        }
        let now = Instant::now();
        if self.conn.poll_timeout().is_some_and(|t| t <= now) {
            self.conn.handle_timeout(now);
        }
        self.flush();
        app
    }

    fn open(&mut self, datagram: &[u8]) -> Vec<Vec<u8>> {
        let mut app = Vec::new();
        let Some(opener) = self.opener.as_mut() else {
            return app;
        };
        let ranges: Vec<_> = Records::new(datagram)
            .filter(|r| r.header.epoch() == 1)
            .map(|r| r.range.clone())
            .collect();
        for range in ranges {
            let mut record = datagram[range].to_vec();
            if let Ok(o) = opener.open(&mut record)
                && o.content_type == ContentType::ApplicationData
            {
                app.push(o.plaintext.to_vec());
            }
        }
        app
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
}

/// The `index`th datagram of session `id`: a tag plus a pattern of varying length.
fn payload(id: usize, index: usize) -> Vec<u8> {
    format!("session {id} datagram {index} ")
        .bytes()
        .chain((0..(id * 31 + index * 17) % 400).map(|i| (i * 7 + id + index) as u8))
        .collect()
}

/// What one session saw of its stream.
#[derive(Debug)]
struct StreamOutcome {
    id: usize,
    received: usize,
    duplicates: usize,
    foreign: usize,
    after_flood_echo: bool,
}

/// Streams `STREAM_LEN` paced datagrams (none resent), collects the echoes, then waits for
/// the flood to end and makes one more round trip.
fn stream(mut c: Client, id: usize, start: &Barrier, flood_done: &AtomicBool) -> StreamOutcome {
    let expected: HashMap<Vec<u8>, usize> = (0..STREAM_LEN).map(|i| (payload(id, i), i)).collect();
    let mut seen = vec![false; STREAM_LEN];
    let (mut duplicates, mut foreign) = (0, 0);
    let mut record = |app: Vec<Vec<u8>>, seen: &mut [bool]| {
        for p in app {
            match expected.get(&p) {
                Some(&i) if seen[i] => duplicates += 1,
                Some(&i) => seen[i] = true,
                None => foreign += 1,
            }
        }
    };
    start.wait();
    let begin = Instant::now();
    for i in 0..STREAM_LEN {
        c.send_app(&payload(id, i));
        let next = begin + SEND_INTERVAL * (i as u32 + 1);
        while let Some(left) = next.checked_duration_since(Instant::now()) {
            let app = c.turn(left);
            record(app, &mut seen);
        }
    }
    let deadline = Instant::now() + Duration::from_secs(3);
    while seen.iter().any(|s| !s) && Instant::now() < deadline {
        let app = c.turn(Duration::from_millis(20));
        record(app, &mut seen);
    }
    let flood_deadline = Instant::now() + IO_TIMEOUT;
    while !flood_done.load(Relaxed) && Instant::now() < flood_deadline {
        let app = c.turn(Duration::from_millis(20));
        record(app, &mut seen);
    }
    // One more round trip after the flood, sent once.
    let last = format!("session {id} after the flood").into_bytes();
    c.send_app(&last);
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut after_flood_echo = false;
    while !after_flood_echo && Instant::now() < deadline {
        after_flood_echo = c.turn(Duration::from_millis(50)).contains(&last);
    }
    StreamOutcome {
        id,
        received: seen.iter().filter(|s| **s).count(),
        duplicates,
        foreign,
        after_flood_echo,
    }
}

// ---------- the flood ----------

/// Runs `send` in paced bursts until `FLOOD_TIME` or `FLOOD_MAX_PER_THREAD` datagrams.
fn paced(start: &Barrier, mut send: impl FnMut(usize)) -> usize {
    start.wait();
    let begin = Instant::now();
    let mut sent = 0;
    while sent < FLOOD_MAX_PER_THREAD && begin.elapsed() < FLOOD_TIME {
        for _ in 0..FLOOD_BURST {
            send(sent);
            sent += 1;
        }
        std::thread::sleep(FLOOD_PAUSE);
    }
    sent
}

/// (1) Datagrams of random bytes and random sizes (1..=1400) from one socket.
fn flood_garbage(server: SocketAddr, seed: u64, start: &Barrier) -> usize {
    let sock = UdpSocket::bind("127.0.0.1:0").expect("bind garbage socket");
    let mut rng = Prng(seed);
    let mut buf = vec![0u8; 1400];
    paced(start, |_| {
        let len = 1 + rng.below(buf.len());
        rng.fill(&mut buf[..len]);
        let _ = sock.send_to(&buf[..len], server);
    })
}

/// (3) Well-formed-looking epoch-1 application-data records (random sequence numbers and
/// ciphertext) for sessions the daemon does not have.
fn flood_unknown_sessions(server: SocketAddr, seed: u64, start: &Barrier) -> usize {
    let socks: Vec<UdpSocket> = (0..8)
        .map(|_| UdpSocket::bind("127.0.0.1:0").expect("bind unknown-session socket"))
        .collect();
    let mut rng = Prng(seed);
    let mut buf = vec![0u8; HEADER_LEN + 8 + 1200 + 16];
    paced(start, |n| {
        let body = 8 + 16 + rng.below(1200);
        rng.fill(&mut buf[..HEADER_LEN + body]);
        buf[0] = ContentType::ApplicationData as u8;
        buf[1..3].copy_from_slice(&DTLS_1_2.to_be_bytes());
        buf[3..5].copy_from_slice(&1u16.to_be_bytes());
        buf[11..13].copy_from_slice(&(body as u16).to_be_bytes());
        let _ = socks[n % socks.len()].send_to(&buf[..HEADER_LEN + body], server);
    })
}

/// What the ClientHello flood sent and what came back to its sources.
#[derive(Debug, Default)]
struct HelloFlood {
    sent: usize,
    bytes_out: usize,
    smallest_hello: usize,
    replies: usize,
    bytes_in: usize,
    largest_reply: usize,
    verify_requests: usize,
}

impl HelloFlood {
    fn drain(&mut self, socks: &[UdpSocket], buf: &mut [u8]) {
        for s in socks {
            while let Ok(n) = s.recv(buf) {
                self.replies += 1;
                self.bytes_in += n;
                self.largest_reply = self.largest_reply.max(n);
                // RFC 6347 §4.2.1: HelloVerifyRequest is handshake type 3 in a handshake record.
                if n > HEADER_LEN && buf[0] == ContentType::Handshake as u8 && buf[HEADER_LEN] == 3
                {
                    self.verify_requests += 1;
                }
            }
        }
    }
}

/// (2) Cookie-less ClientHellos, each source address 127.0.0.2..=127.0.0.250 in turn.
fn flood_hellos(server: SocketAddr, config: Arc<Config>, start: &Barrier) -> HelloFlood {
    let socks: Vec<UdpSocket> = (SPOOF_FIRST..=SPOOF_LAST)
        .map(|last| {
            let s = UdpSocket::bind((Ipv4Addr::new(127, 0, 0, last), 0))
                .expect("bind a 127.0.0.x source");
            s.set_nonblocking(true).expect("nonblocking");
            s
        })
        .collect();
    // First flights of fresh engine clients: real DTLS 1.2 ClientHellos without a cookie.
    let mut buf = vec![0u8; 65_536];
    let hellos: Vec<Vec<u8>> = (0..16)
        .map(|_| {
            let mut conn = Connection::client(
                Arc::clone(&config),
                Box::new(SystemRng::new()),
                Instant::now(),
                server,
                None,
            )
            .expect("client config is valid");
            let t = conn
                .poll_transmit(Instant::now(), &mut buf)
                .expect("a new client sends a ClientHello");
            buf[..t.len].to_vec()
        })
        .collect();
    assert!(
        hellos
            .iter()
            .all(|h| h[0] == ContentType::Handshake as u8 && h[HEADER_LEN] == 1),
        "not ClientHello records"
    );
    let mut out = HelloFlood {
        smallest_hello: hellos.iter().map(Vec::len).min().unwrap_or(0),
        ..HelloFlood::default()
    };
    let mut rx = vec![0u8; 65_536];
    let sent = paced(start, |n| {
        let hello = &hellos[n % hellos.len()];
        if socks[n % socks.len()].send_to(hello, server).is_ok() {
            out.bytes_out += hello.len();
        }
        if n % socks.len() == socks.len() - 1 {
            out.drain(&socks, &mut rx);
        }
    });
    let deadline = Instant::now() + Duration::from_millis(500);
    while Instant::now() < deadline {
        out.drain(&socks, &mut rx);
        std::thread::sleep(Duration::from_millis(20));
    }
    out.sent = sent;
    out
}

// ---------- the test ----------

#[test]
fn sessions_survive_a_flood_of_garbage_and_spoofed_hellos() {
    let began = Instant::now();
    let pki = TempDir::new("flood");
    certs(&pki);
    let backend = EchoBackend::start();
    let mut daemon = Daemon::start(backend.addr, &pki);
    let server = daemon.listen;
    let config = client_config(&pki);

    let clients: Vec<Client> = (0..SESSIONS)
        .map(|_| Client::connect(Arc::clone(&config), server))
        .collect();

    // Sessions and the three flood threads start together.
    let start = Arc::new(Barrier::new(SESSIONS + 3));
    let flood_done = Arc::new(AtomicBool::new(false));
    let sessions: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(id, c)| {
            let (start, done) = (Arc::clone(&start), Arc::clone(&flood_done));
            std::thread::spawn(move || stream(c, id, &start, &done))
        })
        .collect();
    let garbage = {
        let start = Arc::clone(&start);
        std::thread::spawn(move || flood_garbage(server, 0x5eed_0001, &start))
    };
    let unknown = {
        let start = Arc::clone(&start);
        std::thread::spawn(move || flood_unknown_sessions(server, 0x5eed_0002, &start))
    };
    let hellos = {
        let (start, config) = (Arc::clone(&start), Arc::clone(&config));
        std::thread::spawn(move || flood_hellos(server, config, &start))
    };
    let garbage = garbage.join().expect("garbage flood thread");
    let unknown = unknown.join().expect("unknown-session flood thread");
    let hellos = hellos.join().expect("ClientHello flood thread");
    flood_done.store(true, Relaxed);
    let outcomes: Vec<StreamOutcome> = sessions
        .into_iter()
        .map(|t| t.join().expect("session thread"))
        .collect();

    let delivered: usize = outcomes.iter().map(|o| o.received).sum();
    let total = SESSIONS * STREAM_LEN;
    eprintln!(
        "flood: {garbage} garbage, {unknown} unknown-session records, {} ClientHellos \
         ({} bytes) -> {} replies ({} HelloVerifyRequests, {} bytes, ratio {:.3}); \
         sessions delivered {delivered}/{total} ({:.2} %); {:.1} s",
        hellos.sent,
        hellos.bytes_out,
        hellos.replies,
        hellos.verify_requests,
        hellos.bytes_in,
        hellos.bytes_in as f64 / hellos.bytes_out.max(1) as f64,
        100.0 * delivered as f64 / total as f64,
        began.elapsed().as_secs_f64()
    );

    assert!(
        daemon.is_running(),
        "dtlsd exited during the flood:\n{}",
        daemon.log()
    );
    for o in &outcomes {
        assert_eq!(
            (o.received, o.duplicates, o.foreign),
            (STREAM_LEN, 0, 0),
            "session {} lost, duplicated or mangled datagrams: {o:?}\ndtlsd:\n{}",
            o.id,
            daemon.log()
        );
        assert!(
            o.after_flood_echo,
            "session {} did not round-trip after the flood: {o:?}\ndtlsd:\n{}",
            o.id,
            daemon.log()
        );
    }
    assert!(
        garbage > 0 && unknown > 0 && hellos.sent > 0,
        "no flood sent"
    );
    // The hellos were well-formed enough to be answered: the flood exercised the cookie path.
    assert!(
        hellos.verify_requests > 0,
        "no HelloVerifyRequest came back: {hellos:?}\ndtlsd:\n{}",
        daemon.log()
    );
    // TESTING.md DoS: bytes out / bytes in before cookie validation ≤ 1.0, overall and per
    // reply.
    assert!(
        hellos.bytes_in <= hellos.bytes_out,
        "amplification: {} bytes back for {} sent: {hellos:?}",
        hellos.bytes_in,
        hellos.bytes_out
    );
    assert!(
        hellos.largest_reply <= hellos.smallest_hello,
        "a reply larger than the smallest ClientHello: {hellos:?}"
    );
    assert!(
        hellos.replies <= hellos.sent,
        "more replies than ClientHellos: {hellos:?}"
    );
    assert!(
        daemon.is_running(),
        "dtlsd exited after the flood:\n{}",
        daemon.log()
    );
}
