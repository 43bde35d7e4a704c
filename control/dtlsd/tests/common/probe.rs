//! Looking at a running daemon from outside: its `/metrics` samples, its resident memory, and
//! a UDP backend that records every datagram that reaches it.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::IO_TIMEOUT;

/// One `/metrics` scrape: every sample by series (`name{labels}`).
#[derive(Debug, Clone, Default)]
pub struct Samples(HashMap<String, f64>);

impl Samples {
    /// `GET /metrics` over a fresh connection (the server closes after each answer).
    pub fn scrape(addr: SocketAddr) -> Self {
        let mut stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT).expect("connect to metrics");
        stream
            .set_read_timeout(Some(IO_TIMEOUT))
            .expect("read timeout");
        write!(
            stream,
            "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
        )
        .expect("send request");
        let mut raw = String::new();
        stream.read_to_string(&mut raw).expect("read response");
        let (head, body) = raw.split_once("\r\n\r\n").expect("head and body");
        assert!(
            head.starts_with("HTTP/1.1 200"),
            "metrics answered {head:?}"
        );
        Self(
            body.lines()
                .filter(|l| !l.starts_with('#'))
                .filter_map(|l| {
                    let (series, value) = l.rsplit_once(' ')?;
                    Some((series.to_owned(), value.parse().ok()?))
                })
                .collect(),
        )
    }

    /// Scrapes until `done` holds or `timeout` passes (the shards publish once per loop
    /// turn); returns the last scrape either way.
    pub fn scrape_until(
        addr: SocketAddr,
        timeout: Duration,
        done: impl Fn(&Samples) -> bool,
    ) -> Self {
        let deadline = Instant::now() + timeout;
        loop {
            let s = Self::scrape(addr);
            if done(&s) || Instant::now() > deadline {
                return s;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sum of every series of `name` (all label sets; 0 when the family is absent).
    pub fn total(&self, name: &str) -> u64 {
        self.sum(|series| {
            series == name
                || series
                    .strip_prefix(name)
                    .is_some_and(|rest| rest.starts_with('{'))
        })
    }

    /// Sum of the series of `name` that carry `label` (e.g. `reason="pending"`).
    pub fn labelled(&self, name: &str, label: &str) -> u64 {
        self.sum(|series| {
            series
                .strip_prefix(name)
                .and_then(|rest| rest.strip_prefix('{'))
                .is_some_and(|labels| labels.split([',', '}']).any(|l| l == label))
        })
    }

    fn sum(&self, matches: impl Fn(&str) -> bool) -> u64 {
        self.0
            .iter()
            .filter(|(series, _)| matches(series))
            .map(|(_, v)| *v as u64)
            .sum()
    }
}

/// Resident set size of process `pid` in KiB (`VmRSS` of `/proc/PID/status`).
pub fn rss_kib(pid: u32) -> u64 {
    let status =
        std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc/PID/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().strip_suffix("kB"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmRSS in /proc/{pid}/status"))
}

/// A UDP backend on a loopback port that keeps every datagram it receives (and answers
/// none, or echoes each), stopped on drop.
pub struct RecordingBackend {
    pub addr: SocketAddr,
    received: Arc<Mutex<Vec<Vec<u8>>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl RecordingBackend {
    /// Records and answers nothing.
    pub fn start() -> Self {
        Self::spawn(false)
    }

    /// Records and echoes every datagram to its sender.
    pub fn echoing() -> Self {
        Self::spawn(true)
    }

    fn spawn(echo: bool) -> Self {
        let sock = UdpSocket::bind("127.0.0.1:0").expect("bind recording backend");
        sock.set_read_timeout(Some(Duration::from_millis(50)))
            .expect("read timeout");
        let addr = sock.local_addr().expect("backend address");
        let received = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (sink, flag) = (Arc::clone(&received), Arc::clone(&stop));
        let thread = std::thread::spawn(move || {
            let mut buf = vec![0u8; 65_536];
            while !flag.load(Relaxed) {
                if let Ok((n, from)) = sock.recv_from(&mut buf) {
                    sink.lock().expect("backend lock").push(buf[..n].to_vec());
                    if echo {
                        let _ = sock.send_to(&buf[..n], from);
                    }
                }
            }
        });
        Self {
            addr,
            received,
            stop,
            thread: Some(thread),
        }
    }

    /// Every datagram received so far, in arrival order.
    pub fn received(&self) -> Vec<Vec<u8>> {
        self.received.lock().expect("backend lock").clone()
    }

    /// Waits up to `timeout` for every one of `expected` to arrive; returns those that did
    /// not.
    pub fn wait_for_all(&self, expected: &[Vec<u8>], timeout: Duration) -> Vec<Vec<u8>> {
        let deadline = Instant::now() + timeout;
        loop {
            let got = self.received();
            let missing: Vec<Vec<u8>> = expected
                .iter()
                .filter(|e| !got.contains(e))
                .cloned()
                .collect();
            if missing.is_empty() || Instant::now() > deadline {
                return missing;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for RecordingBackend {
    fn drop(&mut self) {
        self.stop.store(true, Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
