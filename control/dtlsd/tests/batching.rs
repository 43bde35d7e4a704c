//! Batching on the upstream flows, through `dtlsd connect` → `dtlsd serve` → a UDP echo
//! backend on loopback: bursts of equal-size datagrams from one local source leave `dtlsd
//! connect` as UDP GSO runs toward the server (more than one datagram per send call), and
//! serve's runs back to connect arrive as coalesced UDP GRO receives on connect's upstream
//! socket, cut apart again so that every datagram comes back exactly once and in order.
//! Checked for both io backends; the counters say the mechanism ran, the echoes say it
//! lost, duplicated and reordered nothing. Sends of many sessions in one turn share kernel
//! calls: with io_uring one `io_uring_enter` carries every flow's sends toward the server.

mod common;

use std::net::UdpSocket;
use std::time::Duration;

use common::{Daemon, EchoBackend, TempDir, certs};

/// Datagrams per burst (sent back to back, so they share the daemons' turns).
const BURST: usize = 32;
/// Plaintext bytes of each.
const SIZE: usize = 1000;
/// Bursts tried at most before the counters must have moved (each is checked anyway).
const MAX_BURSTS: usize = 200;

/// Datagram `seq` of burst `burst`: both numbers, then a pattern of them.
fn datagram(burst: usize, seq: usize) -> Vec<u8> {
    let mut d = Vec::with_capacity(SIZE);
    d.extend_from_slice(&(burst as u32).to_be_bytes());
    d.extend_from_slice(&(seq as u32).to_be_bytes());
    d.extend((8..SIZE).map(|i| (i as u8) ^ (seq as u8).wrapping_mul(7) ^ burst as u8));
    d
}

fn bursts_are_batched_both_ways(io: &str) {
    let pki = TempDir::new(&format!("batching-{io}"));
    certs(&pki);
    let backend = EchoBackend::start();
    let tuning = ["--io", io, "--shards", "1"];
    let serve = Daemon::start_serve_with_metrics(backend.addr, &pki, &tuning);
    let connect = Daemon::start_connect_with_metrics(serve.listen, &pki, &tuning);
    let source = UdpSocket::bind("127.0.0.1:0").expect("bind source");
    source.connect(connect.listen).expect("connect source");
    source
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let mut buf = vec![0u8; 65_536];
    // The handshake first: one datagram there and back.
    source.send(b"hello").expect("send");
    let n = source.recv(&mut buf).expect("first echo");
    assert_eq!(&buf[..n], b"hello");

    let metric = |d: &Daemon, name: &str| d.metric(&format!("{name}{{shard=\"0\"}}")).unwrap_or(0);
    let mut batched = false;
    for burst in 0..MAX_BURSTS {
        for seq in 0..BURST {
            source.send(&datagram(burst, seq)).expect("send");
        }
        // Exactly once, in order: the next echo is always the next datagram.
        for seq in 0..BURST {
            let n = source
                .recv(&mut buf)
                .unwrap_or_else(|e| panic!("{io}: burst {burst}: echo {seq} missing ({e})"));
            assert_eq!(
                &buf[..n],
                &datagram(burst, seq)[..],
                "{io}: burst {burst}: echo {seq} lost, duplicated or out of order"
            );
        }
        let gso = metric(&connect, "dtlsd_upstream_gso_sends_total");
        let gro = metric(&connect, "dtlsd_upstream_gro_receives_total");
        if gso > 0 && gro > 0 {
            batched = true;
            break;
        }
    }
    assert!(
        batched,
        "{io}: connect never sent a GSO run or took a GRO receive\nconnect:\n{}\nserve:\n{}",
        connect.log(),
        serve.log()
    );
    // More than one datagram per send call toward the server, and every received datagram
    // of a coalesced receive counted one by one.
    let out = metric(&connect, "dtlsd_upstream_datagrams_out_total");
    let calls = metric(&connect, "dtlsd_upstream_send_calls_total");
    assert!(
        calls > 0 && out > calls,
        "{io}: {out} datagrams in {calls} send calls"
    );
    let datagrams_in = metric(&connect, "dtlsd_upstream_datagrams_in_total");
    let gro = metric(&connect, "dtlsd_upstream_gro_receives_total");
    assert!(
        datagrams_in >= 2 * gro,
        "{io}: {datagrams_in} datagrams, {gro} GRO receives"
    );
    // Nothing was dropped on the way.
    for d in [&connect, &serve] {
        assert_eq!(
            metric(d, "dtlsd_upstream_send_errors_total"),
            0,
            "{}",
            d.log()
        );
    }
}

#[test]
fn bursts_are_batched_both_ways_uring() {
    bursts_are_batched_both_ways("uring");
}

#[test]
fn bursts_are_batched_both_ways_mmsg() {
    bursts_are_batched_both_ways("mmsg");
}

/// Sources sending at once, each through its own session.
const SOURCES: usize = 16;

/// `SOURCES` local sources send one datagram each, all at once, and wait for the echoes:
/// their records reach `dtlsd connect` in one receive batch, so its turn stages one send per
/// session toward the server. With io_uring they go in one `io_uring_enter` (far fewer
/// kernel calls than sends); with mmsg one `sendmmsg` per session (never more calls than
/// sends). The counters say so; the echoes say nothing was lost.
fn sessions_share_kernel_calls(io: &str) {
    let pki = TempDir::new(&format!("batching-flows-{io}"));
    certs(&pki);
    let backend = EchoBackend::start();
    let tuning = ["--io", io, "--shards", "1"];
    let serve = Daemon::start_serve_with_metrics(backend.addr, &pki, &tuning);
    let connect = Daemon::start_connect_with_metrics(serve.listen, &pki, &tuning);
    let sources: Vec<UdpSocket> = (0..SOURCES)
        .map(|_| {
            let s = UdpSocket::bind("127.0.0.1:0").expect("bind source");
            s.connect(connect.listen).expect("connect source");
            s.set_read_timeout(Some(Duration::from_secs(30)))
                .expect("timeout");
            s
        })
        .collect();
    let mut buf = vec![0u8; 2048];
    // Every session's handshake first.
    for (i, s) in sources.iter().enumerate() {
        s.send(format!("hello {i}").as_bytes()).expect("send");
        let n = s.recv(&mut buf).expect("first echo");
        assert_eq!(&buf[..n], format!("hello {i}").as_bytes());
    }
    let metric = |d: &Daemon, name: &str| d.metric(&format!("{name}{{shard=\"0\"}}")).unwrap_or(0);
    let calls0 = metric(&connect, "dtlsd_upstream_send_calls_total");
    let syscalls0 = metric(&connect, "dtlsd_upstream_send_syscalls_total");
    let mut shared = false;
    for round in 0..MAX_BURSTS {
        for (i, s) in sources.iter().enumerate() {
            s.send(&datagram(round, i)).expect("send");
        }
        for (i, s) in sources.iter().enumerate() {
            let n = s
                .recv(&mut buf)
                .unwrap_or_else(|e| panic!("{io}: round {round}: echo {i} missing ({e})"));
            assert_eq!(&buf[..n], &datagram(round, i)[..], "{io}: round {round}");
        }
        let calls = metric(&connect, "dtlsd_upstream_send_calls_total") - calls0;
        let syscalls = metric(&connect, "dtlsd_upstream_send_syscalls_total") - syscalls0;
        assert!(
            syscalls <= calls,
            "{io}: {syscalls} kernel calls for {calls} sends"
        );
        eprintln!(
            "{io}: after round {round}: {calls} upstream sends in {syscalls} kernel calls \
             ({} datagrams relayed)",
            (round + 1) * SOURCES
        );
        if io == "mmsg" && round >= 4 {
            shared = true;
            break;
        }
        // Several sessions' sends in one io_uring_enter, on average over the rounds.
        if io == "uring" && calls >= 64 && 2 * syscalls <= calls {
            shared = true;
            break;
        }
    }
    assert!(
        shared,
        "{io}: the sessions' sends never shared a kernel call\nconnect:\n{}",
        connect.log()
    );
    assert_eq!(metric(&connect, "dtlsd_upstream_send_errors_total"), 0);
}

#[test]
fn sessions_share_kernel_calls_uring() {
    sessions_share_kernel_calls("uring");
}

#[test]
fn sessions_share_kernel_calls_mmsg() {
    sessions_share_kernel_calls("mmsg");
}
