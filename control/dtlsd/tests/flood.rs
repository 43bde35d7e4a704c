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

mod common;

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use common::{Client, Daemon, EchoBackend, TempDir, certs};
use control::crypto::SystemRng;
use control::{Config, Connection};
use dataplane::record::{ContentType, DTLS_1_2, HEADER_LEN};

/// The flood's sessions complete their handshakes and wait for the flood within this.
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
            let app = c.turn(left).app;
            record(app, &mut seen);
        }
    }
    let deadline = Instant::now() + Duration::from_secs(3);
    while seen.iter().any(|s| !s) && Instant::now() < deadline {
        let app = c.turn(Duration::from_millis(20)).app;
        record(app, &mut seen);
    }
    let flood_deadline = Instant::now() + IO_TIMEOUT;
    while !flood_done.load(Relaxed) && Instant::now() < flood_deadline {
        let app = c.turn(Duration::from_millis(20)).app;
        record(app, &mut seen);
    }
    // One more round trip after the flood, sent once.
    let last = format!("session {id} after the flood").into_bytes();
    c.send_app(&last);
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut after_flood_echo = false;
    while !after_flood_echo && Instant::now() < deadline {
        after_flood_echo = c.turn(Duration::from_millis(50)).app.contains(&last);
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
    let mut daemon = Daemon::start(backend.addr, &pki, "auto");
    let server = daemon.listen;
    let config = Client::config(&pki);

    let clients: Vec<Client> = (0..SESSIONS)
        .map(|_| Client::connect_within(Arc::clone(&config), server, IO_TIMEOUT))
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
