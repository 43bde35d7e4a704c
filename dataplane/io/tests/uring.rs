//! io_uring specifics: feature probing, multishot re-arm after buffer exhaustion, and the
//! `IoMode::Auto` fallback when setup fails.

mod common;

use std::net::UdpSocket;
use std::time::{Duration, Instant};

use common::*;
use dtls_io::{BackendKind, Error, IoConfig, IoMode, TxBatch, UringFault, UringUnavailable};

#[test]
fn auto_picks_uring_here_and_reports_setup_flags() {
    let io = open("127.0.0.1:0", &config(IoMode::Auto));
    if !uring_available("auto_picks_uring_here_and_reports_setup_flags") {
        // Then Auto must have fallen back and kept a typed reason.
        assert_eq!(io.kind(), BackendKind::Mmsg);
        assert!(io.fallback_reason().is_some());
        return;
    }
    assert_eq!(io.kind(), BackendKind::Uring);
    assert!(io.fallback_reason().is_none());
    let f = io.uring_features().expect("uring backend has features");
    eprintln!("io_uring features on this host: {f:?}");
    assert!(f.nodrop && f.ext_arg);
    // Kernels >= 6.1 take both SINGLE_ISSUER and DEFER_TASKRUN (this host: 6.18).
    let mut v = f
        .kernel
        .split(|c: char| !c.is_ascii_digit())
        .map(|x| x.parse::<u32>().unwrap_or(0));
    let version = (v.next().unwrap_or(0), v.next().unwrap_or(0));
    if version >= (6, 1) {
        assert!(f.single_issuer && f.defer_taskrun && f.submit_all, "{f:?}");
    }
}

#[test]
fn multishot_rearms_after_buffer_exhaustion_and_loses_nothing() {
    if !uring_available("multishot_rearms_after_buffer_exhaustion_and_loses_nothing") {
        return;
    }
    let cfg = IoConfig {
        mode: IoMode::Uring,
        batch: 16,
        uring_buffers: 16,
        recv_buffer_size: 2048,
        ..IoConfig::default()
    };
    let bound = dtls_io::bind_udp(
        "127.0.0.1:0".parse().expect("literal"),
        &dtls_io::SocketConfig::default(),
    )
    .expect("bind");
    let (dest, granted) = (bound.local_addr, bound.recv_buffer);
    let mut io = dtls_io::UdpIo::new(bound.socket, &cfg).expect("io_uring available");
    // Arm the multishot receive with its 16 buffers.
    assert!(io.poll_recv(Duration::ZERO).expect("recv").is_empty());
    let peer = UdpSocket::bind("127.0.0.1:0").expect("bind");
    const N: usize = 1000;
    for i in 0..N {
        peer.send_to(&payload(i as u32, 200), dest).expect("send");
    }
    let mut got = Vec::new();
    let until = Instant::now() + DEADLINE;
    let mut idle = 0;
    while got.len() < N && idle < 3 && Instant::now() < until {
        let b = io
            .poll_recv(Duration::from_millis(50))
            .expect("recv never fails here");
        idle = if b.is_empty() { idle + 1 } else { 0 };
        got.extend(b.iter().map(|d| d.payload.to_vec()));
    }
    // A marker after the burst carries the kernel's final drop count (SO_RXQ_OVFL).
    peer.send_to(b"after", dest).expect("send");
    let last = recv_n(&mut io, 1);
    assert_eq!(
        last.first().map(|(_, p)| p.as_slice()),
        Some(&b"after"[..]),
        "still armed"
    );
    let s = io.stats();
    eprintln!("granted SO_RCVBUF {granted}: {s:?}");
    assert_eq!(
        got.len() as u64 + s.kernel_drops,
        N as u64,
        "loss beyond what the kernel reported"
    );
    assert!(
        s.recv_buffer_exhausted >= 1,
        "16 buffers cannot hold {N} datagrams: {s:?}"
    );
    assert!(s.recv_rearms >= s.recv_buffer_exhausted, "{s:?}");
    if granted >= 2 << 20 {
        // The socket buffer holds the whole burst: nothing may be missing.
        assert_eq!(s.kernel_drops, 0);
        check_exact(&got, &vec![200usize; N]);
    } else {
        let mut seen = std::collections::BTreeSet::new();
        for p in &got {
            let i = u32::from_be_bytes(p[..4].try_into().expect("4 bytes"));
            assert_eq!(p, &payload(i, 200));
            assert!(seen.insert(i), "duplicate {i}");
        }
    }
}

#[test]
fn auto_falls_back_to_mmsg_with_the_reason() {
    let cases = [
        (UringFault::SetupErrno(libc::ENOSYS), "ENOSYS"),
        (UringFault::Sysctl(2), "io_uring_disabled=2"),
        (UringFault::SetupErrno(libc::EPERM), "EPERM"),
    ];
    for (fault, word) in cases {
        let cfg = IoConfig {
            uring_fault: Some(fault),
            ..config(IoMode::Auto)
        };
        let mut io = open("127.0.0.1:0", &cfg);
        assert_eq!(io.kind(), BackendKind::Mmsg);
        let reason = io.fallback_reason().expect("fallback keeps its reason");
        match (fault, reason) {
            (UringFault::SetupErrno(libc::ENOSYS), UringUnavailable::NotImplemented)
            | (UringFault::Sysctl(2), UringUnavailable::DisabledBySysctl { value: 2 })
            | (UringFault::SetupErrno(libc::EPERM), UringUnavailable::PermissionDenied) => {}
            other => panic!("unexpected mapping {other:?}"),
        }
        assert!(reason.to_string().contains(word), "{reason}");
        // The fallback backend works on the same socket.
        let peer = UdpSocket::bind("127.0.0.1:0").expect("bind");
        peer.send_to(b"hello", io.local_addr().expect("bound"))
            .expect("send");
        let got = recv_n(&mut io, 1);
        assert_eq!(got.first().map(|(_, p)| p.as_slice()), Some(&b"hello"[..]));

        // Asking for io_uring explicitly surfaces the error instead.
        let strict = IoConfig {
            mode: IoMode::Uring,
            ..cfg
        };
        let s = UdpSocket::bind("127.0.0.1:0").expect("bind");
        assert!(matches!(
            dtls_io::UdpIo::new(s, &strict),
            Err(Error::Uring(_))
        ));
    }
}

#[test]
fn dropping_an_armed_ring_is_clean_and_repeatable() {
    if !uring_available("dropping_an_armed_ring_is_clean_and_repeatable") {
        return;
    }
    let until = Instant::now() + DEADLINE;
    for _ in 0..20 {
        assert!(Instant::now() < until);
        let mut io = open("127.0.0.1:0", &config(IoMode::Uring));
        let peer = UdpSocket::bind("127.0.0.1:0").expect("bind");
        peer.send_to(b"x", io.local_addr().expect("bound"))
            .expect("send");
        let _ = recv_n(&mut io, 1);
        // Leave datagrams queued and the multishot armed, then drop.
        peer.send_to(b"y", io.local_addr().expect("bound"))
            .expect("send");
    }
}

#[test]
fn bad_configs_are_typed_errors() {
    let s = || UdpSocket::bind("127.0.0.1:0").expect("bind");
    let bad = [
        IoConfig {
            batch: 0,
            ..IoConfig::default()
        },
        IoConfig {
            recv_buffer_size: 0,
            ..IoConfig::default()
        },
        IoConfig {
            mode: IoMode::Uring,
            uring_buffers: 100,
            ..IoConfig::default()
        },
        IoConfig {
            mode: IoMode::Uring,
            batch: 64,
            uring_buffers: 32,
            ..IoConfig::default()
        },
    ];
    for cfg in bad {
        assert!(
            matches!(dtls_io::UdpIo::new(s(), &cfg), Err(Error::Config { .. })),
            "{cfg:?}"
        );
    }
}

#[test]
fn under_overflow_received_plus_kernel_reported_drops_equals_sent() {
    for mode in modes("under_overflow_received_plus_kernel_reported_drops_equals_sent") {
        let cfg = IoConfig {
            mode,
            batch: 16,
            uring_buffers: 16,
            recv_buffer_size: 2048,
            ..IoConfig::default()
        };
        let small = dtls_io::SocketConfig {
            recv_buffer: 32 * 1024,
            ..dtls_io::SocketConfig::default()
        };
        let bound =
            dtls_io::bind_udp("127.0.0.1:0".parse().expect("literal"), &small).expect("bind");
        let dest = bound.local_addr;
        let mut io = dtls_io::UdpIo::new(bound.socket, &cfg).expect("backend");
        assert!(io.poll_recv(Duration::ZERO).expect("recv").is_empty());
        let peer = UdpSocket::bind("127.0.0.1:0").expect("bind");
        const N: u32 = 2000;
        for i in 0..N {
            peer.send_to(&payload(i, 200), dest).expect("send");
        }
        let mut burst = Vec::new();
        let until = Instant::now() + DEADLINE;
        let mut idle = 0;
        // Drain until the queue stays empty, then send a marker: it carries the drop count.
        while idle < 3 && Instant::now() < until {
            let b = io.poll_recv(Duration::from_millis(50)).expect("recv");
            idle = if b.is_empty() { idle + 1 } else { 0 };
            burst.extend(b.iter().map(|d| d.payload.to_vec()));
        }
        peer.send_to(b"marker", dest).expect("send");
        let marker = recv_n(&mut io, 1);
        assert_eq!(
            marker.first().map(|(_, p)| p.as_slice()),
            Some(&b"marker"[..])
        );
        let s = io.stats();
        eprintln!("{mode:?}: received {} of {N}, {s:?}", burst.len());
        assert!(
            s.kernel_drops > 0,
            "a 32 KiB buffer cannot hold {N} datagrams"
        );
        assert_eq!(
            burst.len() as u64 + s.kernel_drops,
            u64::from(N),
            "{mode:?}"
        );
        // What did arrive is intact and unique.
        let mut seen = std::collections::BTreeSet::new();
        for p in &burst {
            let i = u32::from_be_bytes(p[..4].try_into().expect("4 bytes"));
            assert_eq!(p, &payload(i, 200));
            assert!(seen.insert(i));
        }
    }
}

/// The calling thread's voluntary context switches so far (`/proc/thread-self/status`).
fn voluntary_switches() -> u64 {
    let status = std::fs::read_to_string("/proc/thread-self/status").expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("voluntary_ctxt_switches line")
}

/// A receive with a zero timeout never asks the kernel to wait (`recv_waits`): its
/// `io_uring_enter` asks for no completion, runs the deferred receive work and returns.
/// Asking for one with a zero timeout made the kernel arm and fire a timer for the expired
/// timeout on every call (perf: a quarter of a shard's CPU at low load). Nor does such a
/// receive block the thread (no voluntary context switch). The same for a turn that also
/// sends (`flush_and_poll_recv`).
#[test]
fn a_zero_timeout_receive_never_sleeps() {
    if !uring_available("a_zero_timeout_receive_never_sleeps") {
        return;
    }
    const CALLS: u64 = 200;
    let mut io = open("127.0.0.1:0", &config(IoMode::Uring));
    let sink = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    let dest = sink.local_addr().expect("bound");
    // Armed, the socket empty.
    assert!(io.poll_recv(Duration::ZERO).expect("recv").is_empty());
    let before = voluntary_switches();
    for _ in 0..CALLS {
        assert!(io.poll_recv(Duration::ZERO).expect("recv").is_empty());
    }
    let mut tx = TxBatch::new(4, 1500, false);
    for i in 0..CALLS {
        tx.push(dest, &payload(i as u32, 100)).expect("room");
        let got = io
            .flush_and_poll_recv(&mut tx, Duration::ZERO)
            .expect("turn")
            .message_count();
        assert_eq!(got, 0);
    }
    let switches = voluntary_switches() - before;
    // Slack for the odd page fault or preemption; sleeping on every call is 2 * CALLS.
    assert!(
        switches < CALLS / 10,
        "{switches} voluntary context switches in {} zero-timeout receives",
        2 * CALLS
    );
    let stats = io.stats();
    assert_eq!(stats.datagrams_out, CALLS);
    assert_eq!(stats.recv_calls, 2 * CALLS + 1);
    assert_eq!(
        stats.recv_waits, 0,
        "a zero-timeout receive asked the kernel to wait"
    );
    // A receive with a timeout does wait (and says so).
    assert!(
        io.poll_recv(Duration::from_millis(1))
            .expect("recv")
            .is_empty()
    );
    assert_eq!(io.stats().recv_waits, 1);
}
