//! Helpers shared by the loopback tests: bounded receive loops and payload patterns.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use dtls_io::{Error, IoConfig, IoMode, SocketConfig, UdpIo, bind_udp};

pub mod netns;

/// Every test gives up after this long; nothing can hang.
pub const DEADLINE: Duration = Duration::from_secs(10);

/// Whether io_uring tests can run here. Hosts that forbid io_uring (a container's seccomp
/// profile, `kernel.io_uring_disabled`) run the mmsg half only and say why on stderr; set
/// `DTLS_IO_REQUIRE_URING=1` to make that a failure instead (as on our CI host).
pub fn uring_available(test: &str) -> bool {
    let s = UdpSocket::bind("127.0.0.1:0").expect("bind");
    match UdpIo::new(s, &config(IoMode::Uring)) {
        Ok(_) => true,
        Err(Error::Uring(reason)) => {
            assert!(
                std::env::var_os("DTLS_IO_REQUIRE_URING").is_none(),
                "{test}: io_uring required but unavailable: {reason}"
            );
            eprintln!("{test}: io_uring unavailable here ({reason}); testing mmsg only");
            false
        }
        Err(e) => panic!("{test}: unexpected setup error {e}"),
    }
}

/// The backends to test on this host: mmsg always, io_uring when available.
pub fn modes(test: &str) -> Vec<IoMode> {
    let mut m = vec![IoMode::Mmsg];
    if uring_available(test) {
        m.push(IoMode::Uring);
    }
    m
}

pub fn config(mode: IoMode) -> IoConfig {
    IoConfig {
        mode,
        ..IoConfig::default()
    }
}

pub fn open(addr: &str, cfg: &IoConfig) -> UdpIo {
    let a: SocketAddr = addr.parse().expect("test address literal");
    let s = bind_udp(a, &SocketConfig::default()).expect("bind on loopback");
    UdpIo::new(s.socket, cfg).expect("backend available on this host")
}

/// Datagram `i` of length `len`: the index in the first 4 bytes, then a pattern of `i`.
pub fn payload(i: u32, len: usize) -> Vec<u8> {
    let mut v: Vec<u8> = (0..len)
        .map(|k| (k as u32).wrapping_mul(31).wrapping_add(i) as u8)
        .collect();
    if len >= 4 {
        v[..4].copy_from_slice(&i.to_be_bytes());
    }
    v
}

/// Receives on `io` until `count` datagrams arrived or the deadline passed.
pub fn recv_n(io: &mut UdpIo, count: usize) -> Vec<(SocketAddr, Vec<u8>)> {
    let until = Instant::now() + DEADLINE;
    let mut out = Vec::new();
    while out.len() < count && Instant::now() < until {
        let batch = io
            .poll_recv(Duration::from_millis(100))
            .expect("receive works");
        out.extend(batch.iter().map(|d| (d.source, d.payload.to_vec())));
    }
    out
}

/// Receives on a plain std socket until `count` datagrams arrived or the deadline passed.
pub fn std_recv_n(s: &UdpSocket, count: usize) -> Vec<Vec<u8>> {
    std_recv_within(s, count, DEADLINE)
}

/// Like [`std_recv_n`] with a custom bound (for "nothing more arrives" checks).
pub fn std_recv_within(s: &UdpSocket, count: usize, within: Duration) -> Vec<Vec<u8>> {
    s.set_read_timeout(Some(Duration::from_millis(50)))
        .expect("set timeout");
    let until = Instant::now() + within;
    let mut out = Vec::new();
    let mut buf = vec![0u8; 70_000];
    while out.len() < count && Instant::now() < until {
        if let Ok((n, _)) = s.recv_from(&mut buf) {
            out.push(buf[..n].to_vec());
        }
    }
    out
}

/// Indexes received payloads by their 4-byte index, asserting each is byte-exact.
pub fn check_exact(got: &[Vec<u8>], sizes: &[usize]) {
    let mut seen = BTreeMap::new();
    for p in got {
        assert!(p.len() >= 4, "short datagram {p:?}");
        let i = u32::from_be_bytes(p[..4].try_into().expect("4 bytes"));
        let want = payload(i, sizes[i as usize]);
        assert_eq!(p, &want, "datagram {i} corrupted");
        assert!(seen.insert(i, ()).is_none(), "datagram {i} delivered twice");
    }
    assert_eq!(seen.len(), sizes.len(), "missing datagrams");
}
