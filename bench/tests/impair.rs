//! The impairment proxy on real loopback UDP: seeded loss, duplication and reordering at
//! the configured rates in each direction, the same seed making the same decisions, delay,
//! and one upstream flow per client.

use std::collections::HashSet;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use bench::impair::{DirectionStats, ImpairConfig, Impairments, Proxy, ProxyStats};

const HANG_GUARD: Duration = Duration::from_secs(20);

fn localhost() -> SocketAddr {
    "127.0.0.1:0".parse().expect("address literal")
}

/// Receives datagrams (a u32 sequence number first) until stopped.
struct Sink {
    seen: Arc<Mutex<Vec<u32>>>,
    count: Arc<AtomicU64>,
    first_peer: Arc<Mutex<Option<SocketAddr>>>,
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Sink {
    fn start(sock: UdpSocket) -> Self {
        sock.set_read_timeout(Some(Duration::from_millis(20)))
            .expect("read timeout");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let count = Arc::new(AtomicU64::new(0));
        let first_peer = Arc::new(Mutex::new(None));
        let stop = Arc::new(AtomicBool::new(false));
        let (v, c, p, s) = (
            Arc::clone(&seen),
            Arc::clone(&count),
            Arc::clone(&first_peer),
            Arc::clone(&stop),
        );
        let thread = thread::spawn(move || {
            let mut buf = [0u8; 2048];
            while !s.load(Ordering::Relaxed) {
                if let Ok((n, from)) = sock.recv_from(&mut buf) {
                    p.lock().expect("lock").get_or_insert(from);
                    if let Some(seq) = buf.get(..n).and_then(|b| b.first_chunk::<4>()) {
                        v.lock().expect("lock").push(u32::from_be_bytes(*seq));
                    }
                    c.fetch_add(1, Ordering::SeqCst);
                }
            }
        });
        Self {
            seen,
            count,
            first_peer,
            stop,
            thread: Some(thread),
        }
    }

    fn finish(mut self) -> Vec<u32> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().expect("sink thread");
        }
        std::mem::take(&mut *self.seen.lock().expect("lock"))
    }
}

/// Waits until the proxy has read `received` datagrams and the sink has everything the
/// proxy sent (and, with `all_out`, nothing is held any more), or
/// the run's hang guard `give_up` passed: the assertions then report what is missing).
fn settle(
    sink: &Sink,
    stats: impl Fn() -> DirectionStats,
    received: u64,
    all_out: bool,
    give_up: Instant,
) {
    loop {
        let s = stats();
        let done = s.received == received
            && sink.count.load(Ordering::SeqCst) == s.sent
            && (!all_out || s.sent == s.received - s.dropped + s.duplicated);
        if done {
            return;
        }
        if Instant::now() > give_up {
            eprintln!(
                "gave up waiting: sink has {}, proxy {s:?}",
                sink.count.load(Ordering::SeqCst)
            );
            return;
        }
        thread::sleep(Duration::from_micros(100));
    }
}

fn payload(seq: u32) -> [u8; 16] {
    let mut p = [0xabu8; 16];
    p[..4].copy_from_slice(&seq.to_be_bytes());
    p
}

/// What the receiver saw: (unique, duplicates, late first arrivals).
fn observe(seen: &[u32]) -> (usize, usize, usize) {
    let mut uniq = HashSet::new();
    let (mut dups, mut late, mut max) = (0, 0, None::<u32>);
    for &s in seen {
        if !uniq.insert(s) {
            dups += 1;
            continue;
        }
        if max.is_some_and(|m| s < m) {
            late += 1;
        }
        max = max.max(Some(s));
    }
    (uniq.len(), dups, late)
}

fn rates_of(imp: Impairments, n: u32, seed: u64, to_client: bool) -> (Vec<u32>, ProxyStats) {
    let server = UdpSocket::bind(localhost()).expect("bind server");
    let server_addr = server.local_addr().expect("server addr");
    let server_tx = server.try_clone().expect("clone");
    let mut config =
        ImpairConfig::symmetric(localhost(), server_addr, Impairments::default(), seed);
    if to_client {
        config.to_client = imp;
    } else {
        config.to_server = imp;
    }
    let proxy = Proxy::start(config).expect("proxy starts");
    let client = UdpSocket::bind(localhost()).expect("bind client");
    client.connect(proxy.local_addr()).expect("connect");
    let give_up = Instant::now() + HANG_GUARD;
    let dir = |s: ProxyStats| if to_client { s.to_client } else { s.to_server };
    let sink;
    if to_client {
        // Open the flow with one datagram (not impaired on the way in), then the server
        // sends `n` datagrams back through it.
        let server_sink = Sink::start(server);
        client.send(b"hello").expect("send hello");
        let t0 = Instant::now();
        while server_sink.first_peer.lock().expect("lock").is_none() && t0.elapsed() < HANG_GUARD {
            thread::sleep(Duration::from_millis(1));
        }
        let flow = server_sink
            .first_peer
            .lock()
            .expect("lock")
            .expect("flow opened");
        server_sink.finish();
        sink = Sink::start(client.try_clone().expect("clone"));
        for batch in (0..n).collect::<Vec<_>>().chunks(32) {
            for &seq in batch {
                server_tx.send_to(&payload(seq), flow).expect("send");
            }
            settle(
                &sink,
                || dir(proxy.stats()),
                u64::from(batch[batch.len() - 1]) + 1,
                false,
                give_up,
            );
        }
    } else {
        sink = Sink::start(server);
        for batch in (0..n).collect::<Vec<_>>().chunks(32) {
            for &seq in batch {
                client.send(&payload(seq)).expect("send");
            }
            settle(
                &sink,
                || dir(proxy.stats()),
                u64::from(batch[batch.len() - 1]) + 1,
                false,
                give_up,
            );
        }
    }
    settle(&sink, || dir(proxy.stats()), u64::from(n), true, give_up);
    let stats = proxy.stop();
    (sink.finish(), stats)
}

fn assert_rates(to_client: bool) {
    let n = 20_000u32;
    let imp = Impairments {
        loss: 0.10,
        dup: 0.10,
        reorder: 0.10,
        // Long enough that held datagrams wait for their successor, not the timer.
        hold: Duration::from_millis(200),
        ..Impairments::default()
    };
    let (seen, stats) = rates_of(imp, n, 42, to_client);
    let d = if to_client {
        stats.to_client
    } else {
        stats.to_server
    };
    let (unique, dups, late) = observe(&seen);
    // Every datagram the proxy sent arrived, and the receiver's view matches the counters.
    assert_eq!(d.received, u64::from(n), "{stats:?}");
    assert_eq!(seen.len() as u64, d.sent, "{stats:?}");
    assert_eq!(unique as u64, d.received - d.dropped, "{stats:?}");
    assert_eq!(dups as u64, d.duplicated, "{stats:?}");
    let loss = 1.0 - unique as f64 / f64::from(n);
    let dup = dups as f64 / unique as f64;
    let reorder = late as f64 / unique as f64;
    for (what, got) in [("loss", loss), ("dup", dup), ("reorder", reorder)] {
        assert!(
            (got - 0.10).abs() <= 0.015,
            "{what} rate {got:.4} not within 10% ± 1.5% (to_client {to_client}, {stats:?})"
        );
    }
}

#[test]
fn to_server_rates_within_tolerance() {
    assert_rates(false);
}

#[test]
fn to_client_rates_within_tolerance() {
    assert_rates(true);
}

#[test]
fn same_seed_same_outcome_on_the_wire() {
    let imp = Impairments {
        loss: 0.2,
        dup: 0.1,
        reorder: 0.1,
        hold: Duration::from_millis(200),
        ..Impairments::default()
    };
    let (a, sa) = rates_of(imp, 2000, 7, false);
    let (b, sb) = rates_of(imp, 2000, 7, false);
    let (c, _) = rates_of(imp, 2000, 8, false);
    assert_eq!(sa, sb);
    let set = |v: &[u32]| v.iter().copied().collect::<HashSet<u32>>();
    assert_eq!(
        set(&a),
        set(&b),
        "the same seed delivers the same datagrams"
    );
    assert_ne!(set(&a), set(&c), "another seed drops other datagrams");
}

#[test]
fn delay_applies_both_ways_and_clients_get_their_own_flows() {
    let echo = UdpSocket::bind(localhost()).expect("bind echo");
    let echo_addr = echo.local_addr().expect("echo addr");
    echo.set_read_timeout(Some(Duration::from_millis(20)))
        .expect("timeout");
    let stop = Arc::new(AtomicBool::new(false));
    let sources = Arc::new(Mutex::new(HashSet::new()));
    let (s, src) = (Arc::clone(&stop), Arc::clone(&sources));
    let echo_thread = thread::spawn(move || {
        let mut buf = vec![0u8; 70_000];
        while !s.load(Ordering::Relaxed) {
            if let Ok((n, from)) = echo.recv_from(&mut buf) {
                src.lock().expect("lock").insert(from);
                let _ = echo.send_to(&buf[..n], from);
            }
        }
    });
    let delay = Duration::from_millis(30);
    let imp = Impairments {
        delay,
        ..Impairments::default()
    };
    let proxy =
        Proxy::start(ImpairConfig::symmetric(localhost(), echo_addr, imp, 1)).expect("proxy");
    let clients: Vec<UdpSocket> = (0..2)
        .map(|_| {
            let c = UdpSocket::bind(localhost()).expect("bind");
            c.connect(proxy.local_addr()).expect("connect");
            c.set_read_timeout(Some(HANG_GUARD)).expect("timeout");
            c
        })
        .collect();
    for (i, c) in clients.iter().enumerate() {
        let msg = format!("client {i}");
        let t0 = Instant::now();
        c.send(msg.as_bytes()).expect("send");
        let mut buf = [0u8; 64];
        let n = c.recv(&mut buf).expect("echo comes back");
        assert!(
            t0.elapsed() >= 2 * delay,
            "round trip took {:?}",
            t0.elapsed()
        );
        assert_eq!(&buf[..n], msg.as_bytes(), "each client gets its own echo");
    }
    // Empty and maximum-size datagrams pass unharmed.
    let c = &clients[0];
    let mut big = vec![0u8; 65_507];
    big[0] = 0x17;
    let mut buf = vec![0u8; 70_000];
    for dg in [&[][..], &big[..]] {
        c.send(dg).expect("send");
        let n = c.recv(&mut buf).expect("echo comes back");
        assert_eq!(&buf[..n], dg);
    }
    let stats = proxy.stop();
    stop.store(true, Ordering::Relaxed);
    echo_thread.join().expect("echo thread");
    assert_eq!(stats.flows, 2);
    assert_eq!(
        sources.lock().expect("lock").len(),
        2,
        "one upstream flow per client"
    );
    assert_eq!((stats.to_server.sent, stats.to_client.sent), (4, 4));
}

#[test]
fn bad_flags_name_the_flag_and_fail() {
    for (args, flag) in [
        (&["--loss", "1.5"][..], "--loss"),
        (&["--dup=-0.1"][..], "--dup"),
        (&["--reorder", "150%"][..], "--reorder"),
        (&["--delay", "soon"][..], "--delay"),
    ] {
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_dtls-bench"))
            .args([
                "impair",
                "--listen",
                "127.0.0.1:0",
                "--forward",
                "127.0.0.1:9",
            ])
            .args(args)
            .output()
            .expect("run dtls-bench");
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(flag), "{args:?}: {err}");
    }
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_dtls-bench"))
        .args([
            "impair",
            "--listen",
            "not-an-address",
            "--forward",
            "127.0.0.1:9",
        ])
        .output()
        .expect("run dtls-bench");
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--listen"));
    // A delay that would overflow deadlines is refused at start, naming the flag.
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_dtls-bench"))
        .args([
            "impair",
            "--listen",
            "127.0.0.1:0",
            "--forward",
            "127.0.0.1:9",
        ])
        .args(["--delay", "18446744073709551615"])
        .output()
        .expect("run dtls-bench");
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("--delay"));
}
