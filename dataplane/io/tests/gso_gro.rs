//! UDP GSO on send and GRO on receive, over loopback, for both backends.

mod common;

use std::net::UdpSocket;

use common::*;
use dtls_io::{IoMode, TxBatch};

#[test]
fn gso_run_arrives_as_separate_exact_datagrams_at_plain_socket() {
    for mode in modes("gso_run_arrives_as_separate_exact_datagrams_at_plain_socket") {
        let mut io = open("127.0.0.1:0", &config(mode));
        let plain = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let dest = plain.local_addr().expect("bound");
        let mut sizes = vec![1200; 10];
        sizes.push(500); // the last segment of a run may be shorter
        let mut tx = TxBatch::new(32, 1500, true);
        for (i, len) in sizes.iter().enumerate() {
            tx.push(dest, &payload(i as u32, *len)).expect("room");
        }
        assert_eq!(tx.sends().count(), 1, "one GSO run");
        io.flush(&mut tx).expect("flush");
        let got = std_recv_n(&plain, sizes.len());
        // A GSO run is split by the kernel in order.
        let want: Vec<Vec<u8>> = sizes
            .iter()
            .enumerate()
            .map(|(i, l)| payload(i as u32, *l))
            .collect();
        assert_eq!(got, want, "{mode:?}");
        let s = io.stats();
        assert_eq!(
            (s.gso_sends, s.gso_segments, s.datagrams_out),
            (1, 11, 11),
            "{mode:?}"
        );
        assert!(io.gso(), "kernel accepted GSO");
    }
}

#[test]
fn a_gso_run_never_spans_two_destinations() {
    for mode in modes("a_gso_run_never_spans_two_destinations") {
        let mut io = open("127.0.0.1:0", &config(mode));
        let a = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let b = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let (da, db) = (
            a.local_addr().expect("bound"),
            b.local_addr().expect("bound"),
        );
        let plan = [da, da, da, db, db, db, da, da];
        let sizes = vec![1000; plan.len()];
        let mut tx = TxBatch::new(32, 1500, true);
        for (i, d) in plan.iter().enumerate() {
            tx.push(*d, &payload(i as u32, 1000)).expect("room");
        }
        let runs: Vec<_> = tx
            .sends()
            .map(|s| (s.destination, s.segment_count))
            .collect();
        assert_eq!(runs, vec![(da, 3), (db, 3), (da, 2)]);
        io.flush(&mut tx).expect("flush");
        let got_a = std_recv_n(&a, 5);
        let got_b = std_recv_n(&b, 3);
        let idx = |v: &Vec<Vec<u8>>| -> Vec<u32> {
            v.iter()
                .map(|p| u32::from_be_bytes(p[..4].try_into().expect("4 bytes")))
                .collect()
        };
        assert_eq!(idx(&got_a), vec![0, 1, 2, 6, 7], "{mode:?}");
        assert_eq!(idx(&got_b), vec![3, 4, 5], "{mode:?}");
        let mut all = got_a;
        all.extend(got_b);
        check_exact(&all, &sizes);
        // Nothing extra arrives anywhere.
        let quiet = std::time::Duration::from_millis(200);
        assert!(
            std_recv_within(&a, 1, quiet).is_empty() && std_recv_within(&b, 1, quiet).is_empty()
        );
        assert_eq!(io.stats().gso_sends, 3);
    }
}

#[test]
fn gso_burst_to_gro_receiver_is_split_back_into_segments() {
    let pairs = if uring_available("gso_burst_to_gro_receiver_is_split_back_into_segments") {
        vec![(IoMode::Mmsg, IoMode::Uring), (IoMode::Uring, IoMode::Mmsg)]
    } else {
        vec![(IoMode::Mmsg, IoMode::Mmsg)]
    };
    for (sender, receiver) in pairs {
        let mut tx_io = open("127.0.0.1:0", &config(sender));
        let mut rx_io = open("127.0.0.1:0", &config(receiver));
        assert!(
            dtls_io::gro_enabled(rx_io.socket()),
            "bind_udp turns GRO on"
        );
        let dest = rx_io.local_addr().expect("bound");
        let mut sizes = vec![1200; 20];
        sizes.push(300);
        let mut tx = TxBatch::new(32, 1500, true);
        for (i, len) in sizes.iter().enumerate() {
            tx.push(dest, &payload(i as u32, *len)).expect("room");
        }
        tx_io.flush(&mut tx).expect("flush");

        let mut strides = Vec::new();
        let mut got = Vec::new();
        let until = std::time::Instant::now() + DEADLINE;
        while got.len() < sizes.len() && std::time::Instant::now() < until {
            let b = rx_io
                .poll_recv(std::time::Duration::from_millis(100))
                .expect("recv");
            strides.extend(b.messages().map(|m| (m.stride, m.payload.len())));
            got.extend(b.iter().map(|d| d.payload.to_vec()));
        }
        // Loopback hands the GSO skb to a GRO socket whole: one message, stride 1200.
        assert!(
            strides.contains(&(1200, 20 * 1200 + 300)),
            "{receiver:?}: {strides:?}"
        );
        let want: Vec<Vec<u8>> = sizes
            .iter()
            .enumerate()
            .map(|(i, l)| payload(i as u32, *l))
            .collect();
        assert_eq!(got, want, "{receiver:?}");
        let s = rx_io.stats();
        assert_eq!(
            (s.gro_datagrams, s.gro_segments, s.datagrams_in),
            (1, 21, 21),
            "{receiver:?}"
        );
    }
}

#[test]
fn in_place_mutation_through_iter_mut_is_seen_by_iter() {
    for mode in modes("in_place_mutation_through_iter_mut_is_seen_by_iter") {
        let mut tx_io = open("127.0.0.1:0", &config(IoMode::Mmsg));
        let mut rx_io = open("127.0.0.1:0", &config(mode));
        let dest = rx_io.local_addr().expect("bound");
        let mut tx = TxBatch::new(8, 1500, true);
        for i in 0..4 {
            tx.push(dest, &[i as u8; 100]).expect("room");
        }
        tx_io.flush(&mut tx).expect("flush");
        let until = std::time::Instant::now() + DEADLINE;
        let mut seen = 0;
        while seen < 4 && std::time::Instant::now() < until {
            let b = rx_io
                .poll_recv(std::time::Duration::from_millis(100))
                .expect("recv");
            for d in b.iter_mut() {
                d.payload.iter_mut().for_each(|x| *x ^= 0xff);
            }
            for d in b.iter() {
                assert_eq!(d.payload, &[(seen as u8) ^ 0xff; 100][..]);
                seen += 1;
            }
        }
        assert_eq!(seen, 4);
    }
}

/// SO_NO_CHECK makes the kernel refuse every GSO send with EINVAL: the run must go out as
/// single datagrams, nothing lost, GSO left on for later runs.
#[test]
#[allow(unsafe_code)]
fn gso_refused_by_kernel_is_resent_as_single_datagrams() {
    use std::os::fd::AsRawFd;
    for mode in modes("gso_refused_by_kernel_is_resent_as_single_datagrams") {
        let mut io = open("127.0.0.1:0", &config(mode));
        let one: libc::c_int = 1;
        // SAFETY: valid fd, pointer to a live c_int with its size.
        let rc = unsafe {
            libc::setsockopt(
                io.socket().as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_NO_CHECK,
                (&raw const one).cast(),
                size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        assert_eq!(rc, 0);
        let plain = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let dest = plain.local_addr().expect("bound");
        let sizes = [700usize; 6];
        let mut tx = TxBatch::new(8, 1500, true);
        for (i, len) in sizes.iter().enumerate() {
            tx.push(dest, &payload(i as u32, *len)).expect("room");
        }
        io.flush(&mut tx).expect("flush");
        let got = std_recv_n(&plain, sizes.len());
        let want: Vec<Vec<u8>> = sizes
            .iter()
            .enumerate()
            .map(|(i, l)| payload(i as u32, *l))
            .collect();
        assert_eq!(got, want, "{mode:?}");
        let s = io.stats();
        assert_eq!(
            (s.datagrams_out, s.gso_sends, s.send_errors),
            (6, 0, 0),
            "{mode:?}: {s:?}"
        );
        assert!(io.gso(), "EINVAL splits the run but keeps GSO on");
    }
}

/// A connected socket with UDP_GRO on gets a GSO run as one coalesced receive;
/// `recv_segments` reports the segment size and `Received::datagrams` cuts it back into
/// the datagrams sent, in order; without GRO each datagram is its own receive.
#[test]
fn recv_segments_splits_a_coalesced_receive_by_its_cmsg_segment_size() {
    let sender = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let gro = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let plain = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let from = sender.local_addr().expect("bound");
    for s in [&gro, &plain] {
        s.connect(from).expect("connect");
        s.set_nonblocking(true).expect("nonblocking");
    }
    assert!(dtls_io::enable_gro(&gro), "kernel accepted UDP_GRO");
    let sizes = [300usize, 300, 300, 300, 120];
    let want: Vec<Vec<u8>> = sizes
        .iter()
        .enumerate()
        .map(|(i, l)| payload(i as u32, *l))
        .collect();
    let run: Vec<u8> = want.concat();
    for to in [&gro, &plain] {
        sender
            .connect(to.local_addr().expect("bound"))
            .expect("connect");
        dtls_io::send_segments(&sender, &run, Some(300)).expect("gso send");
    }
    let mut buf = vec![0u8; 65_536];
    // Loopback hands the GSO skb to a GRO socket whole.
    let r = recv_within(&gro, &mut buf);
    assert_eq!(
        (r.len, r.segment, r.truncated),
        (run.len(), Some(300), false)
    );
    assert_eq!(r.count(), sizes.len());
    let got: Vec<Vec<u8>> = r.datagrams(&mut buf).map(|d| d.to_vec()).collect();
    assert_eq!(got, want);
    assert!(
        dtls_io::recv_segments(&gro, &mut buf).is_err(),
        "nothing more"
    );
    // Without GRO: one receive per datagram, no segment size.
    let mut got = Vec::new();
    for _ in &sizes {
        let r = recv_within(&plain, &mut buf);
        assert_eq!((r.segment, r.count()), (None, 1));
        got.extend(r.datagrams(&mut buf).map(|d| d.to_vec()));
    }
    assert_eq!(got, want);
    // A buffer too small for the batch: cut, and said so.
    dtls_io::send_segments(&sender, &run, Some(300)).expect("gso send");
    let mut small = vec![0u8; 64];
    let r = recv_within(&plain, &mut small);
    assert!(r.truncated && r.len == 64, "{r:?}");
}

/// `recv_segments` until something arrives (10 s at most: a bound, not a timing check).
fn recv_within(socket: &UdpSocket, buf: &mut [u8]) -> dtls_io::Received {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match dtls_io::recv_segments(socket, buf) {
            Ok(r) => return r,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                assert!(std::time::Instant::now() < deadline, "nothing arrived");
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            Err(e) => panic!("receive: {e}"),
        }
    }
}
