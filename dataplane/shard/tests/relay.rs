//! End to end over loopback: 50 peers → shard (decrypt) → UDP echo backend → shard (encrypt)
//! → peers, with the shard on its own thread in `Shard::run`, on both io backends.

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::*;
use dataplane::record::ContentType;
use dtls_io::{BackendKind, IoMode};
use dtls_shard::ShardQueues;

const PEERS: u8 = 50;
const ROUNDS: usize = 10;
/// Records per peer per round: equal sizes, so the echoes to one peer can share a GSO send.
const PER_ROUND: usize = 2;

fn message(peer: u8, round: usize, k: usize) -> Vec<u8> {
    let len = 40 + 37 * round; // 40..=373 bytes, equal within a round
    let mut m: Vec<u8> = (0..len)
        .map(|i| (i as u8).wrapping_mul(7) ^ peer ^ (k as u8))
        .collect();
    m[..4].copy_from_slice(&[peer, round as u8, k as u8, 0xee]);
    m
}

fn echo_through_shard(mode: IoMode) {
    let backend = EchoBackend::start();
    let queues = Arc::new(ShardQueues::new(256, 256));
    let stop = Arc::new(AtomicBool::new(false));
    let (ready_tx, ready_rx) = mpsc::channel();
    let cfg = config(backend.addr, mode);
    let (q, s) = (queues.clone(), stop.clone());
    let thread = std::thread::spawn(move || {
        // A shard is not Send: it is built on the thread that runs it.
        let mut shard = shard(cfg, q);
        let info = (
            shard.local_addr().expect("addr"),
            shard.backend_kind(),
            shard.counters().clone(),
        );
        ready_tx.send(info).expect("test thread waits");
        shard.run(&s).expect("shard loop");
        (shard.stats(), shard.io_counters().snapshot())
    });
    let (shard_addr, kind, counters) = ready_rx.recv_timeout(DEADLINE).expect("shard started");
    assert_eq!(
        kind,
        match mode {
            IoMode::Uring => BackendKind::Uring,
            _ => BackendKind::Mmsg,
        }
    );

    let mut peers: Vec<Peer> = (0..PEERS).map(Peer::new).collect();
    for p in &peers {
        queues.push_command(p.install()).expect("queue has room");
    }
    let until = Instant::now() + DEADLINE;
    while counters.snapshot().sessions_active < u64::from(PEERS) && Instant::now() < until {
        std::thread::yield_now();
    }
    assert_eq!(counters.snapshot().sessions_active, u64::from(PEERS));

    for round in 0..ROUNDS {
        for (i, p) in peers.iter_mut().enumerate() {
            for k in 0..PER_ROUND {
                let record = p.seal(&message(i as u8, round, k));
                p.socket.send_to(&record, shard_addr).expect("send");
            }
        }
        for (i, p) in peers.iter_mut().enumerate() {
            let expected: BTreeSet<Vec<u8>> =
                (0..PER_ROUND).map(|k| message(i as u8, round, k)).collect();
            let mut got = BTreeSet::new();
            let until = Instant::now() + DEADLINE;
            while got.len() < PER_ROUND && Instant::now() < until {
                if let Some(d) = p.try_recv() {
                    let (ct, plaintext) = p.open(d).expect("shard's record authenticates");
                    assert_eq!(ct, ContentType::ApplicationData);
                    got.insert(plaintext);
                }
            }
            assert_eq!(got, expected, "peer {i} round {round}");
        }
    }

    stop.store(true, Ordering::Relaxed);
    let (stats, io) = thread.join().expect("shard thread");
    let total = u64::from(PEERS) * (ROUNDS * PER_ROUND) as u64;
    assert_eq!(stats.records_opened, total);
    assert_eq!(stats.records_sealed, total);
    assert_eq!(stats.upstream_datagrams_out, total);
    assert_eq!(stats.upstream_datagrams_in, total);
    assert_eq!(stats.datagrams_in, total);
    assert_eq!(stats.datagrams_out, total);
    assert_eq!(stats.sessions_installed, u64::from(PEERS));
    assert_eq!(stats.sessions_active, u64::from(PEERS));
    assert_eq!(
        stats.drop_malformed
            + stats.drop_replay
            + stats.drop_bad_tag
            + stats.drop_unknown_session
            + stats.drop_unknown_epoch
            + stats.drop_queue_full
            + stats.drop_tx_full
            + stats.upstream_send_errors,
        0,
        "{stats:?}"
    );
    assert_eq!(io.datagrams_out, total, "{io:?}");
    assert_eq!(io.send_errors, 0);
    assert_eq!(backend.stop(), total);
    eprintln!("{mode:?}: {stats:?}\n{io:?}");
}

#[test]
fn fifty_peers_echo_byte_for_byte_mmsg() {
    echo_through_shard(IoMode::Mmsg);
}

#[test]
fn fifty_peers_echo_byte_for_byte_uring() {
    if uring_available("fifty_peers_echo_byte_for_byte_uring") {
        echo_through_shard(IoMode::Uring);
    }
}

/// A shard running `cfg` on a thread of its own: its address, its stop flag and the thread,
/// which hands back the shard's stats.
fn run_shard(
    cfg: dtls_shard::ShardConfig,
    queues: &Arc<ShardQueues>,
) -> (
    std::net::SocketAddr,
    Arc<AtomicBool>,
    std::thread::JoinHandle<dtls_shard::ShardStats>,
) {
    let stop = Arc::new(AtomicBool::new(false));
    let (ready_tx, ready_rx) = mpsc::channel();
    let (q, s) = (queues.clone(), stop.clone());
    let thread = std::thread::spawn(move || {
        let mut shard = shard(cfg, q);
        ready_tx
            .send(shard.local_addr().expect("addr"))
            .expect("test thread waits");
        shard.run(&s).expect("shard loop");
        shard.stats()
    });
    let to = ready_rx.recv_timeout(DEADLINE).expect("shard started");
    (to, stop, thread)
}

/// An idle shard sleeps in `epoll_wait`, and both a peer's datagram and the backend's reply
/// wake it at once: round trips take far less than the sleep bound.
fn wakes_on_both_sides(mode: IoMode) {
    const SLEEP: Duration = Duration::from_secs(3);
    let backend = EchoBackend::start();
    let queues = Arc::new(ShardQueues::new(16, 16));
    let mut peer = Peer::new(1);
    // Queued before the first turn, which therefore does not sleep.
    queues.push_command(peer.install()).expect("room");
    let mut cfg = config(backend.addr, mode);
    cfg.recv_wait = SLEEP;
    let (to, stop, thread) = run_shard(cfg, &queues);
    // Let the shard go idle first.
    std::thread::sleep(Duration::from_millis(50));
    for i in 0..5u8 {
        let started = Instant::now();
        let record = peer.seal(&[i; 100]);
        peer.socket.send_to(&record, to).expect("send");
        let reply = loop {
            if let Some(d) = peer.try_recv() {
                break d;
            }
            assert!(started.elapsed() < DEADLINE, "no echo");
        };
        let rtt = started.elapsed();
        assert_eq!(
            peer.open(reply).expect("authentic"),
            (ContentType::ApplicationData, vec![i; 100])
        );
        assert!(
            rtt < SLEEP / 3,
            "{mode:?}: round trip {rtt:?} waited for the sleep bound"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    stop.store(true, Ordering::Relaxed);
    // Wake the sleeping shard so it sees the flag.
    peer.socket.send_to(&[0], to).expect("send");
    let stats = thread.join().expect("shard thread");
    assert_eq!(stats.records_sealed, 5);
}

#[test]
fn idle_shard_wakes_on_datagrams_and_replies_mmsg() {
    wakes_on_both_sides(IoMode::Mmsg);
}

#[test]
fn idle_shard_wakes_on_datagrams_and_replies_uring() {
    if uring_available("idle_shard_wakes_on_datagrams_and_replies_uring") {
        wakes_on_both_sides(IoMode::Uring);
    }
}

/// An idle shard asleep in `epoll_wait` takes control's command (a new session's keys) at
/// once: the push signals the shard's eventfd, which ends the wait, instead of the command
/// waiting out `recv_wait`.
fn command_wakes_idle_shard(mode: IoMode) {
    const SLEEP: Duration = Duration::from_secs(3);
    let backend = EchoBackend::start();
    let queues = Arc::new(ShardQueues::new(16, 16));
    let mut cfg = config(backend.addr, mode);
    cfg.recv_wait = SLEEP;
    let (to, stop, thread) = run_shard(cfg, &queues);
    let peer = Peer::new(4);
    for round in 0..3u64 {
        let started = Instant::now();
        while !queues.is_asleep() {
            assert!(started.elapsed() < DEADLINE, "the shard never went idle");
            std::thread::yield_now();
        }
        let pushed = Instant::now();
        // Keys again each round (the same session's rekey): one command per sleep.
        queues.push_command(peer.install()).expect("room");
        while queues.has_commands() {
            assert!(pushed.elapsed() < DEADLINE, "command never taken");
            std::thread::yield_now();
        }
        let taken = pushed.elapsed();
        assert!(
            taken < SLEEP / 3,
            "{mode:?}: the command waited {taken:?}, as for the sleep bound"
        );
        assert_eq!(
            queues.wakes(),
            round + 1,
            "one wake-up per command to a sleeper"
        );
    }
    stop.store(true, Ordering::Relaxed);
    // The stop flag is not watched by the wait: a datagram ends it.
    peer.socket.send_to(&[0], to).expect("send");
    thread.join().expect("shard thread");
}

#[test]
fn idle_shard_wakes_on_control_commands_mmsg() {
    command_wakes_idle_shard(IoMode::Mmsg);
}

#[test]
fn idle_shard_wakes_on_control_commands_uring() {
    if uring_available("idle_shard_wakes_on_control_commands_uring") {
        command_wakes_idle_shard(IoMode::Uring);
    }
}

/// Several records of one peer in one datagram reach the backend in order, the equal-size
/// ones as one UDP GSO send on the session's upstream socket.
#[test]
fn one_sessions_records_go_upstream_in_order_as_gso_runs() {
    use std::net::UdpSocket;
    for mode in modes("one_sessions_records_go_upstream_in_order_as_gso_runs") {
        // A backend that records what it receives, in order.
        let backend = UdpSocket::bind("127.0.0.1:0").expect("bind backend");
        backend
            .set_read_timeout(Some(Duration::from_millis(50)))
            .expect("timeout");
        let queues = Arc::new(ShardQueues::new(16, 16));
        let mut shard = shard(
            config(backend.local_addr().expect("addr"), mode),
            queues.clone(),
        );
        let to = shard.local_addr().expect("addr");
        let mut peer = Peer::new(3);
        queues.push_command(peer.install()).expect("room");
        assert!(turn_until(&mut shard, |s| s.stats().sessions_active == 1));

        // 8 records of 300 B then one of 100 B, all in one datagram.
        let messages: Vec<Vec<u8>> = (0..9u8)
            .map(|i| vec![i; if i == 8 { 100 } else { 300 }])
            .collect();
        let datagram: Vec<u8> = messages.iter().flat_map(|m| peer.seal(m)).collect();
        peer.socket.send_to(&datagram, to).expect("send");
        let mut got = Vec::new();
        let mut buf = [0u8; 2048];
        let until = Instant::now() + DEADLINE;
        while got.len() < messages.len() && Instant::now() < until {
            shard.run_turn(Instant::now()).expect("turn");
            if let Ok(n) = backend.recv(&mut buf) {
                got.push(buf[..n].to_vec());
            }
        }
        assert_eq!(got, messages, "every record, in order");
        let stats = shard.stats();
        assert_eq!(stats.upstream_datagrams_out, 9);
        if shard.io().is_some_and(|io| io.gso()) {
            assert_eq!(
                stats.upstream_gso_sends, 1,
                "one GSO run of 8 + the short tail"
            );
        }
    }
}
