//! Both backends send and receive mixed-size datagrams over loopback, byte-exact.

mod common;

use common::*;
use dtls_io::{BackendKind, IoMode, TxBatch};

fn mixed_sizes(n: usize) -> Vec<usize> {
    const SIZES: [usize; 9] = [4, 64, 1200, 1200, 1200, 577, 1350, 1400, 9000];
    (0..n)
        .map(|i| SIZES[(i * 7 + i / 3) % SIZES.len()])
        .collect()
}

fn round_trip(sender: IoMode, receiver: IoMode, addr: &str, gso: bool) {
    let mut cfg_s = config(sender);
    cfg_s.gso = gso;
    let mut tx_io = open(addr, &cfg_s);
    let mut rx_io = open(addr, &config(receiver));
    let expect_kind = |m| {
        if m == IoMode::Mmsg {
            BackendKind::Mmsg
        } else {
            BackendKind::Uring
        }
    };
    assert_eq!(tx_io.kind(), expect_kind(sender));
    assert_eq!(rx_io.kind(), expect_kind(receiver));
    let dest = rx_io.local_addr().expect("bound");
    let src = tx_io.local_addr().expect("bound");

    let sizes = mixed_sizes(600);
    let mut tx = TxBatch::new(64, 9000, gso);
    let mut got = Vec::new();
    for (i, len) in sizes.iter().enumerate() {
        if tx.push(dest, &payload(i as u32, *len)).is_err() {
            tx_io.flush(&mut tx).expect("flush");
            tx.push(dest, &payload(i as u32, *len))
                .expect("empty batch has room");
        }
        if tx.is_full() {
            tx_io.flush(&mut tx).expect("flush");
            // Drain as we go so the receive queue never overflows.
            let b = rx_io.poll_recv(std::time::Duration::ZERO).expect("recv");
            got.extend(b.iter().map(|d| {
                assert_eq!(d.source, src);
                d.payload.to_vec()
            }));
        }
    }
    tx_io.flush(&mut tx).expect("flush");
    assert!(tx.is_empty());
    let rest = recv_n(&mut rx_io, sizes.len() - got.len());
    got.extend(rest.into_iter().map(|(s, p)| {
        assert_eq!(s, src);
        p
    }));
    check_exact(&got, &sizes);

    let out = tx_io.stats();
    assert_eq!(out.datagrams_out, sizes.len() as u64);
    assert_eq!(out.bytes_out, sizes.iter().sum::<usize>() as u64);
    assert_eq!(out.send_errors, 0);
    if gso {
        assert!(
            out.gso_sends > 0 && out.gso_segments > out.gso_sends,
            "{out:?}"
        );
    } else {
        assert_eq!(out.gso_sends, 0);
    }
    let inn = rx_io.stats();
    assert_eq!(inn.datagrams_in, sizes.len() as u64);
    assert_eq!(inn.bytes_in, sizes.iter().sum::<usize>() as u64);
    assert!(inn.recv_batches > 0);
}

#[test]
fn mmsg_to_mmsg_mixed_sizes_exact() {
    round_trip(IoMode::Mmsg, IoMode::Mmsg, "127.0.0.1:0", false);
}

#[test]
fn mmsg_to_mmsg_gso_exact() {
    round_trip(IoMode::Mmsg, IoMode::Mmsg, "127.0.0.1:0", true);
}

#[test]
fn uring_to_uring_mixed_sizes_exact() {
    if !uring_available("uring_to_uring_mixed_sizes_exact") {
        return;
    }
    round_trip(IoMode::Uring, IoMode::Uring, "127.0.0.1:0", false);
}

#[test]
fn uring_to_uring_gso_exact() {
    if !uring_available("uring_to_uring_gso_exact") {
        return;
    }
    round_trip(IoMode::Uring, IoMode::Uring, "127.0.0.1:0", true);
}

#[test]
fn uring_to_mmsg_and_back_exact() {
    if !uring_available("uring_to_mmsg_and_back_exact") {
        return;
    }
    round_trip(IoMode::Uring, IoMode::Mmsg, "127.0.0.1:0", true);
    round_trip(IoMode::Mmsg, IoMode::Uring, "127.0.0.1:0", true);
}

#[test]
fn ipv6_both_backends_exact() {
    if !uring_available("ipv6_both_backends_exact") {
        round_trip(IoMode::Mmsg, IoMode::Mmsg, "[::1]:0", true);
        return;
    }
    round_trip(IoMode::Uring, IoMode::Mmsg, "[::1]:0", true);
    round_trip(IoMode::Mmsg, IoMode::Uring, "[::1]:0", false);
}

#[test]
fn receive_times_out_empty_and_pktinfo_reports_local_address() {
    for mode in modes("receive_times_out_empty_and_pktinfo_reports_local_address") {
        let mut io = open("127.0.0.1:0", &config(mode));
        let t = std::time::Instant::now();
        assert!(
            io.poll_recv(std::time::Duration::from_millis(50))
                .expect("recv")
                .is_empty()
        );
        assert!(t.elapsed() < std::time::Duration::from_secs(5));
        let peer = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        peer.send_to(b"ping", io.local_addr().expect("bound"))
            .expect("send");
        let until = std::time::Instant::now() + DEADLINE;
        loop {
            assert!(std::time::Instant::now() < until, "nothing received");
            let b = io
                .poll_recv(std::time::Duration::from_millis(100))
                .expect("recv");
            if let Some(d) = b.iter().next() {
                assert_eq!(d.payload, b"ping");
                assert_eq!(d.source, peer.local_addr().expect("bound"));
                assert_eq!(d.local, Some("127.0.0.1".parse().expect("literal")));
                break;
            }
        }
    }
}

#[test]
fn reuseport_sockets_share_a_port_and_report_what_was_granted() {
    let cfg = dtls_io::SocketConfig::default();
    let first = dtls_io::bind_udp("127.0.0.1:0".parse().expect("literal"), &cfg).expect("bind");
    let second = dtls_io::bind_udp(first.local_addr, &cfg).expect("SO_REUSEPORT lets a shard bind");
    assert_eq!(first.local_addr, second.local_addr);
    for s in [&first, &second] {
        assert!(s.recv_buffer > 0 && s.send_buffer > 0, "{s:?}");
        assert!(s.gro && s.drop_counter && s.pktinfo, "{s:?}");
    }
    let v6 = dtls_io::bind_udp("[::1]:0".parse().expect("literal"), &cfg).expect("bind v6");
    assert!(v6.local_addr.is_ipv6() && v6.pktinfo);
    // Without SO_REUSEPORT the port is taken.
    let plain = dtls_io::SocketConfig {
        reuse_port: false,
        ..cfg
    };
    assert!(matches!(
        dtls_io::bind_udp(first.local_addr, &plain),
        Err(dtls_io::Error::Socket { op: "bind", .. })
    ));
}

#[test]
fn oversized_datagram_is_dropped_and_counted_never_delivered_truncated() {
    for mode in modes("oversized_datagram_is_dropped_and_counted_never_delivered_truncated") {
        let cfg = dtls_io::IoConfig {
            recv_buffer_size: 512,
            ..config(mode)
        };
        let mut io = open("127.0.0.1:0", &cfg);
        let peer = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        let dest = io.local_addr().expect("bound");
        peer.send_to(&[1u8; 1000], dest).expect("send");
        peer.send_to(&[2u8; 100], dest).expect("send");
        let got = recv_n(&mut io, 1);
        assert_eq!(got.len(), 1, "{mode:?}");
        assert_eq!(got[0].1, vec![2u8; 100], "{mode:?}");
        assert_eq!(io.stats().recv_truncated, 1, "{mode:?}");
    }
}

/// A shard-style loop: every turn is `flush_and_poll_recv` (one io_uring_enter with io_uring),
/// the server echoing what it got in its next turn.
#[test]
fn echo_loop_of_flush_and_poll_recv_turns_is_exact() {
    for mode in modes("echo_loop_of_flush_and_poll_recv_turns_is_exact") {
        let mut client = open("127.0.0.1:0", &config(mode));
        let mut server = open("127.0.0.1:0", &config(mode));
        let dest = server.local_addr().expect("bound");
        let sizes = mixed_sizes(500);
        let mut ctx = TxBatch::new(32, 9000, true);
        let mut stx = TxBatch::new(256, 9000, true);
        let (mut sent, mut got) = (0usize, Vec::new());
        let until = std::time::Instant::now() + DEADLINE;
        let turn = std::time::Duration::from_millis(1);
        while got.len() < sizes.len() && std::time::Instant::now() < until {
            while sent < sizes.len() && !ctx.is_full() {
                ctx.push(dest, &payload(sent as u32, sizes[sent]))
                    .expect("room");
                sent += 1;
            }
            let back = client
                .flush_and_poll_recv(&mut ctx, turn)
                .expect("client turn");
            got.extend(back.iter().map(|d| d.payload.to_vec()));
            assert!(ctx.is_empty(), "a turn flushes everything");
            let rx = server
                .flush_and_poll_recv(&mut stx, turn)
                .expect("server turn");
            let echoes: Vec<_> = rx.iter().map(|d| (d.source, d.payload.to_vec())).collect();
            for (src, p) in echoes {
                if stx.push(src, &p).is_err() {
                    server.flush(&mut stx).expect("flush");
                    stx.push(src, &p).expect("empty batch has room");
                }
            }
        }
        check_exact(&got, &sizes);
        let (c, s) = (client.stats(), server.stats());
        assert_eq!((c.send_errors, s.send_errors), (0, 0));
        assert_eq!(s.datagrams_in, sizes.len() as u64);
        assert_eq!(c.datagrams_in, sizes.len() as u64);
    }
}

/// A receive without a wait is one kernel call with mmsg (`recvmmsg` with MSG_DONTWAIT, no
/// `poll` before it), whether a datagram is queued or not; a receive that may wait polls
/// first. The shard's and the load generator's turns receive this way once per turn.
#[test]
fn mmsg_nonblocking_receive_is_one_kernel_call() {
    use std::time::{Duration, Instant};
    let mut rx_io = open("127.0.0.1:0", &config(IoMode::Mmsg));
    let dest = rx_io.local_addr().expect("bound");
    let sender = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");

    let before = rx_io.stats().recv_calls;
    assert!(rx_io.poll_recv(Duration::ZERO).expect("recv").is_empty());
    assert_eq!(rx_io.stats().recv_calls - before, 1, "empty socket");

    sender.send_to(&payload(1, 100), dest).expect("send");
    // Loopback delivers inside the sender's call; still, poll with a wait until it is there.
    let until = Instant::now() + Duration::from_secs(5);
    let mut got = 0;
    while got == 0 && Instant::now() < until {
        let before = rx_io.stats().recv_calls;
        let n = rx_io
            .poll_recv(Duration::ZERO)
            .expect("recv")
            .message_count();
        assert_eq!(rx_io.stats().recv_calls - before, 1, "nonblocking receive");
        got += n;
    }
    assert_eq!(got, 1);

    sender.send_to(&payload(2, 100), dest).expect("send");
    let before = rx_io.stats().recv_calls;
    let n = rx_io
        .poll_recv(Duration::from_secs(5))
        .expect("recv")
        .message_count();
    assert_eq!(n, 1);
    assert_eq!(
        rx_io.stats().recv_calls - before,
        2,
        "a receive that may wait: poll, then recvmmsg"
    );
    assert_eq!(rx_io.stats().recv_waits, 1, "only the poll waits");
}

/// `recv_may_hold_more` after a receive: true when it filled the batch (datagrams may be
/// left that raise no new readiness edge), false once a receive found the socket empty.
#[test]
fn a_full_receive_batch_may_hold_more_a_short_one_does_not() {
    use std::time::{Duration, Instant};
    for mode in modes("a_full_receive_batch_may_hold_more_a_short_one_does_not") {
        let mut rx_io = open("127.0.0.1:0", &config(mode));
        let batch = rx_io.batch();
        let dest = rx_io.local_addr().expect("bound");
        let sender = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        for i in 0..batch + 5 {
            sender.send_to(&payload(i as u32, 64), dest).expect("send");
        }
        let until = Instant::now() + Duration::from_secs(10);
        let (mut got, mut full) = (0, 0);
        while got < batch + 5 && Instant::now() < until {
            let n = rx_io
                .poll_recv(Duration::from_millis(10))
                .expect("recv")
                .message_count();
            got += n;
            if n == batch {
                full += 1;
                assert!(rx_io.recv_may_hold_more(), "{mode:?}: a full batch");
            }
        }
        assert_eq!(got, batch + 5, "{mode:?}");
        assert!(full >= 1, "{mode:?}: no full batch");
        // Drained: the next receive finds nothing, and says so.
        let n = rx_io
            .poll_recv(Duration::ZERO)
            .expect("recv")
            .message_count();
        assert_eq!(n, 0);
        assert!(!rx_io.recv_may_hold_more(), "{mode:?}: an empty socket");
        sender.send_to(&payload(99, 64), dest).expect("send");
        let until = Instant::now() + Duration::from_secs(10);
        let mut one = 0;
        while one == 0 && Instant::now() < until {
            one = rx_io
                .poll_recv(Duration::from_millis(10))
                .expect("recv")
                .message_count();
        }
        assert_eq!(one, 1);
        assert!(
            !rx_io.recv_may_hold_more(),
            "{mode:?}: one datagram, a short batch"
        );
    }
}
