//! `UdpIo::send_connected`: sends on many connected sockets (a shard's upstream flows) in
//! few kernel calls. io_uring: every socket's sends in one `io_uring_enter`; mmsg: one
//! `sendmmsg` per run of sends on one socket. Every datagram arrives, in order per socket,
//! GSO runs cut into their datagrams; a refused GSO run goes again one datagram at a time.
#![allow(unsafe_code)]

mod common;

use std::net::UdpSocket;
use std::os::fd::AsFd;

use common::{config, modes, open, payload, std_recv_n};
use dtls_io::{CONNECTED_PER_ENTER, ConnectedSend, ConnectedSent, IoMode};

/// `n` sockets connected to `n` receivers of their own.
fn flows(n: usize) -> Vec<(UdpSocket, UdpSocket)> {
    (0..n)
        .map(|_| {
            let rx = UdpSocket::bind("127.0.0.1:0").expect("bind");
            let tx = UdpSocket::bind("127.0.0.1:0").expect("bind");
            tx.connect(rx.local_addr().expect("bound"))
                .expect("connect");
            tx.set_nonblocking(true).expect("nonblocking");
            (tx, rx)
        })
        .collect()
}

#[test]
fn every_flows_sends_go_in_one_submission_with_uring_and_one_sendmmsg_per_flow_with_mmsg() {
    for mode in modes("send_connected") {
        let mut io = open("127.0.0.1:0", &config(mode));
        let flows = flows(8);
        // Per flow: a GSO run of three 500-byte datagrams, then a lone 100-byte one.
        let runs: Vec<Vec<u8>> = (0..flows.len())
            .map(|f| {
                (0..3)
                    .flat_map(|k| payload((f * 10 + k) as u32, 500))
                    .collect()
            })
            .collect();
        let singles: Vec<Vec<u8>> = (0..flows.len())
            .map(|f| payload((f * 10 + 3) as u32, 100))
            .collect();
        let sends = flows.iter().enumerate().flat_map(|(f, (tx, _))| {
            [
                ConnectedSend {
                    socket: tx.as_fd(),
                    payload: &runs[f],
                    segment: Some(500),
                },
                ConnectedSend {
                    socket: tx.as_fd(),
                    payload: &singles[f],
                    segment: None,
                },
            ]
        });
        let sent = io.send_connected(sends).expect("send");
        let syscalls = match mode {
            IoMode::Uring => 1,
            _ => flows.len() as u64,
        };
        assert_eq!(
            sent,
            ConnectedSent {
                sends: 2 * flows.len() as u64,
                datagrams: 4 * flows.len() as u64,
                bytes: 1600 * flows.len() as u64,
                gso_sends: flows.len() as u64,
                errors: 0,
                syscalls,
            },
            "{mode:?}"
        );
        for (f, (_, rx)) in flows.iter().enumerate() {
            let got = std_recv_n(rx, 4);
            let want: Vec<Vec<u8>> = (0..3)
                .map(|k| payload((f * 10 + k) as u32, 500))
                .chain([payload((f * 10 + 3) as u32, 100)])
                .collect();
            assert_eq!(got, want, "{mode:?}: flow {f}");
        }
    }
}

#[test]
fn more_sends_than_one_enter_takes_go_in_a_few_and_nothing_is_lost() {
    for mode in modes("send_connected_many") {
        let mut io = open("127.0.0.1:0", &config(mode));
        let flows = flows(CONNECTED_PER_ENTER + 3);
        let datagrams: Vec<Vec<u8>> = (0..flows.len()).map(|f| payload(f as u32, 64)).collect();
        let sends = flows
            .iter()
            .zip(&datagrams)
            .map(|((tx, _), d)| ConnectedSend {
                socket: tx.as_fd(),
                payload: d,
                segment: None,
            });
        let sent = io.send_connected(sends).expect("send");
        assert_eq!((sent.datagrams, sent.errors), (flows.len() as u64, 0));
        if mode == IoMode::Uring {
            assert_eq!(sent.syscalls, 2, "{CONNECTED_PER_ENTER} sends per enter");
        }
        for ((_, rx), d) in flows.iter().zip(&datagrams) {
            assert_eq!(std_recv_n(rx, 1), vec![d.clone()], "{mode:?}");
        }
    }
}

/// SO_NO_CHECK makes the kernel refuse GSO with EINVAL: the run goes out one datagram at a
/// time.
#[test]
fn a_refused_run_is_split_into_its_datagrams() {
    for mode in modes("send_connected_refused") {
        let mut io = open("127.0.0.1:0", &config(mode));
        let flows = flows(1);
        let (tx, rx) = &flows[0];
        let one: libc::c_int = 1;
        // SAFETY: valid fd, pointer to a live c_int with its size.
        let rc = unsafe {
            libc::setsockopt(
                std::os::fd::AsRawFd::as_raw_fd(tx),
                libc::SOL_SOCKET,
                libc::SO_NO_CHECK,
                (&raw const one).cast(),
                size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        assert_eq!(rc, 0);
        let run: Vec<u8> = (0..4).flat_map(|k| payload(k, 300)).collect();
        let sent = io
            .send_connected([ConnectedSend {
                socket: tx.as_fd(),
                payload: &run,
                segment: Some(300),
            }])
            .expect("send");
        assert_eq!(
            (sent.sends, sent.datagrams, sent.gso_sends, sent.errors),
            (4, 4, 0, 0),
            "{mode:?}"
        );
        let want: Vec<Vec<u8>> = (0..4).map(|k| payload(k, 300)).collect();
        assert_eq!(std_recv_n(rx, 4), want, "{mode:?}");
    }
}

/// With io_uring a send's `io_uring_enter` runs the deferred receive work too: a datagram
/// that arrived meanwhile is taken off the socket into the backend's completions, its
/// readiness edge spent. `recv_may_hold_more` must say so (a caller sleeping on epoll
/// would otherwise wait out its bound), and the next receive hands it over.
#[test]
fn receive_completions_taken_by_a_send_are_announced() {
    use std::time::{Duration, Instant};
    for mode in modes("receive_completions_taken_by_a_send_are_announced") {
        let mut io = open("127.0.0.1:0", &config(mode));
        let dest = io.local_addr().expect("bound");
        // Arms the receive; the socket is empty.
        assert!(io.poll_recv(Duration::ZERO).expect("recv").is_empty());
        assert!(!io.recv_may_hold_more(), "{mode:?}: empty");
        let peer = UdpSocket::bind("127.0.0.1:0").expect("bind");
        peer.send_to(&payload(5, 80), dest).expect("send");
        let flows = flows(1);
        let data = payload(6, 90);
        let sent = io
            .send_connected([ConnectedSend {
                socket: flows[0].0.as_fd(),
                payload: &data,
                segment: None,
            }])
            .expect("send");
        assert_eq!(sent.datagrams, 1, "{sent:?}");
        if mode == IoMode::Uring {
            assert!(
                io.recv_may_hold_more(),
                "the send's enter took the datagram's completion: it must be announced"
            );
        }
        let until = Instant::now() + Duration::from_secs(10);
        let mut got = 0;
        while got == 0 && Instant::now() < until {
            got = io
                .poll_recv(Duration::from_millis(10))
                .expect("recv")
                .message_count();
        }
        assert_eq!(got, 1, "{mode:?}");
        assert!(!io.recv_may_hold_more(), "{mode:?}: drained");
        assert_eq!(std_recv_n(&flows[0].1, 1), vec![data.clone()]);
    }
}
