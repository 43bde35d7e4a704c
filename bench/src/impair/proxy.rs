//! The socket side of the impairment proxy: one thread for the listen socket (client →
//! target lanes) and one thread per client flow (target → client lane).
//!
//! Waiting: with nothing held or delayed, a thread blocks in `recv` (10 ms timeout, to see
//! the stop flag); with datagrams pending it polls its socket without blocking and sleeps
//! at most 200 µs between polls, so delays are kept to about 0.2 ms.

use std::collections::HashMap;
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use super::{Decision, ImpairConfig, ImpairError, Lane, lane_seed};

const IDLE_WAIT: Duration = Duration::from_millis(10);
const POLL_STEP: Duration = Duration::from_micros(200);
const MAX_DATAGRAM: usize = 65_536;

/// Counters of one direction (a snapshot).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DirectionStats {
    /// Datagrams that arrived.
    pub received: u64,
    /// Datagrams sent on (copies included).
    pub sent: u64,
    /// Datagrams dropped by the loss decision.
    pub dropped: u64,
    /// Datagrams sent twice.
    pub duplicated: u64,
    /// Datagrams held for reordering.
    pub reordered: u64,
    /// Sends that failed (counted, the datagram is lost).
    pub send_errors: u64,
}

/// Proxy counters (a snapshot).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProxyStats {
    /// Client → target.
    pub to_server: DirectionStats,
    /// Target → client.
    pub to_client: DirectionStats,
    /// Client flows opened.
    pub flows: u64,
    /// Datagrams from new clients refused because `max_flows` was reached.
    pub refused: u64,
}

#[derive(Debug, Default)]
struct DirectionCounters {
    received: AtomicU64,
    sent: AtomicU64,
    dropped: AtomicU64,
    duplicated: AtomicU64,
    reordered: AtomicU64,
    send_errors: AtomicU64,
}

impl DirectionCounters {
    fn count(&self, d: Decision) {
        self.received.fetch_add(1, Ordering::Relaxed);
        if d.drop {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
        if d.duplicate {
            self.duplicated.fetch_add(1, Ordering::Relaxed);
        }
        if d.reorder {
            self.reordered.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn sent(&self, r: io::Result<usize>) {
        match r {
            Ok(_) => self.sent.fetch_add(1, Ordering::Relaxed),
            Err(_) => self.send_errors.fetch_add(1, Ordering::Relaxed),
        };
    }

    fn snapshot(&self) -> DirectionStats {
        DirectionStats {
            received: self.received.load(Ordering::Relaxed),
            sent: self.sent.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
            duplicated: self.duplicated.load(Ordering::Relaxed),
            reordered: self.reordered.load(Ordering::Relaxed),
            send_errors: self.send_errors.load(Ordering::Relaxed),
        }
    }
}

#[derive(Debug, Default)]
struct Counters {
    to_server: DirectionCounters,
    to_client: DirectionCounters,
    flows: AtomicU64,
    refused: AtomicU64,
}

/// Starts impairment proxies.
#[derive(Debug)]
pub struct Proxy;

impl Proxy {
    /// Binds the listen socket and starts the proxy on its own thread.
    pub fn start(config: ImpairConfig) -> Result<ProxyHandle, ImpairError> {
        config.to_server.validate()?;
        config.to_client.validate()?;
        let io_err = |what: String| move |source| ImpairError::Io { what, source };
        let listen = UdpSocket::bind(config.listen)
            .map_err(io_err(format!("--listen: bind {}", config.listen)))?;
        let local_addr = listen
            .local_addr()
            .map_err(io_err("listen socket address".into()))?;
        let stop = Arc::new(AtomicBool::new(false));
        let counters = Arc::new(Counters::default());
        let (s, c) = (Arc::clone(&stop), Arc::clone(&counters));
        let thread = thread::Builder::new()
            .name("impair-listen".into())
            .spawn(move || listen_loop(&config, &listen, &s, &c))
            .map_err(io_err("spawn proxy thread".into()))?;
        Ok(ProxyHandle {
            local_addr,
            stop,
            counters,
            thread: Some(thread),
        })
    }
}

/// A running proxy; stopping (or dropping) it joins its threads.
#[derive(Debug)]
pub struct ProxyHandle {
    local_addr: SocketAddr,
    stop: Arc<AtomicBool>,
    counters: Arc<Counters>,
    thread: Option<JoinHandle<()>>,
}

impl ProxyHandle {
    /// Where clients send.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Counters so far.
    pub fn stats(&self) -> ProxyStats {
        let c = &self.counters;
        ProxyStats {
            to_server: c.to_server.snapshot(),
            to_client: c.to_client.snapshot(),
            flows: c.flows.load(Ordering::Relaxed),
            refused: c.refused.load(Ordering::Relaxed),
        }
    }

    /// Stops every thread (held and delayed datagrams are discarded); returns the final
    /// counters.
    pub fn stop(mut self) -> ProxyStats {
        self.shutdown();
        self.stats()
    }

    fn shutdown(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            // A panicked proxy thread has nothing left to clean up.
            let _ = t.join();
        }
    }
}

impl Drop for ProxyHandle {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Blocking or polling receive, depending on whether the lane has something pending.
struct Waiter {
    nonblocking: bool,
    timeout_set: bool,
}

impl Waiter {
    fn new() -> Self {
        Self {
            nonblocking: false,
            timeout_set: false,
        }
    }

    /// One receive attempt: `Ok(None)` when nothing arrived in time.
    fn recv(
        &mut self,
        sock: &UdpSocket,
        buf: &mut [u8],
        deadline: Option<Instant>,
    ) -> io::Result<Option<(usize, SocketAddr)>> {
        let want_nonblocking = deadline.is_some();
        if want_nonblocking != self.nonblocking {
            sock.set_nonblocking(want_nonblocking)?;
            self.nonblocking = want_nonblocking;
        }
        if !want_nonblocking && !self.timeout_set {
            sock.set_read_timeout(Some(IDLE_WAIT))?;
            self.timeout_set = true;
        }
        match sock.recv_from(buf) {
            Ok(r) => Ok(Some(r)),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                if let Some(d) = deadline {
                    let now = Instant::now();
                    if d > now {
                        thread::sleep((d - now).min(POLL_STEP));
                    }
                }
                Ok(None)
            }
            // ICMP errors surfacing on a UDP socket (ECONNREFUSED and the like) are not
            // fatal to a proxy; the caller counts nothing for them.
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => Ok(None),
            Err(e) => Err(e),
        }
    }
}

struct Flow {
    upstream: Arc<UdpSocket>,
    lane: Lane,
    thread: Option<JoinHandle<()>>,
}

fn open_flow(
    config: &ImpairConfig,
    listen: &UdpSocket,
    client: SocketAddr,
    index: u64,
    stop: &Arc<AtomicBool>,
    counters: &Arc<Counters>,
) -> io::Result<Flow> {
    let any: SocketAddr = if config.forward.is_ipv4() {
        (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let upstream = UdpSocket::bind(any)?;
    upstream.connect(config.forward)?;
    let upstream = Arc::new(upstream);
    let back = listen.try_clone()?;
    let lane = Lane::new(&config.to_client, lane_seed(config.seed, index, 1));
    let (up, s, c) = (
        Arc::clone(&upstream),
        Arc::clone(stop),
        Arc::clone(counters),
    );
    let thread = thread::Builder::new()
        .name(format!("impair-flow-{index}"))
        .spawn(move || flow_loop(lane, &up, &back, client, &s, &c))?;
    Ok(Flow {
        upstream,
        lane: Lane::new(&config.to_server, lane_seed(config.seed, index, 0)),
        thread: Some(thread),
    })
}

fn listen_loop(
    config: &ImpairConfig,
    listen: &UdpSocket,
    stop: &Arc<AtomicBool>,
    counters: &Arc<Counters>,
) {
    let mut flows: HashMap<SocketAddr, Flow> = HashMap::new();
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let mut waiter = Waiter::new();
    while !stop.load(Ordering::Relaxed) {
        let deadline = flows.values().filter_map(|f| f.lane.next_deadline()).min();
        let got = match waiter.recv(listen, &mut buf, deadline) {
            Ok(g) => g,
            Err(_) => {
                // A socket that cannot even be read is unusable; avoid a hot loop.
                thread::sleep(POLL_STEP);
                None
            }
        };
        let now = Instant::now();
        if let Some((n, client)) = got {
            if !flows.contains_key(&client) {
                if flows.len() >= config.max_flows {
                    counters.refused.fetch_add(1, Ordering::Relaxed);
                } else {
                    let index = counters.flows.fetch_add(1, Ordering::Relaxed);
                    match open_flow(config, listen, client, index, stop, counters) {
                        Ok(flow) => {
                            flows.insert(client, flow);
                        }
                        Err(_) => {
                            counters.refused.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            }
            if let (Some(flow), Some(dg)) = (flows.get_mut(&client), buf.get(..n)) {
                let d = flow.lane.handle_datagram(now, dg);
                counters.to_server.count(d);
            }
        }
        for flow in flows.values_mut() {
            while let Some(dg) = flow.lane.poll_due(now) {
                counters.to_server.sent(flow.upstream.send(&dg));
            }
        }
    }
    for flow in flows.values_mut() {
        if let Some(t) = flow.thread.take() {
            // A panicked flow thread has nothing left to clean up.
            let _ = t.join();
        }
    }
}

fn flow_loop(
    mut lane: Lane,
    upstream: &UdpSocket,
    back: &UdpSocket,
    client: SocketAddr,
    stop: &AtomicBool,
    counters: &Counters,
) {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let mut waiter = Waiter::new();
    while !stop.load(Ordering::Relaxed) {
        let got = match waiter.recv(upstream, &mut buf, lane.next_deadline()) {
            Ok(g) => g,
            Err(_) => {
                thread::sleep(POLL_STEP);
                None
            }
        };
        let now = Instant::now();
        if let Some((n, _)) = got
            && let Some(dg) = buf.get(..n)
        {
            counters.to_client.count(lane.handle_datagram(now, dg));
        }
        while let Some(dg) = lane.poll_due(now) {
            counters.to_client.sent(back.send_to(&dg, client));
        }
    }
}
