//! OpenSSL's DTLS 1.2 over real UDP loopback sockets: an echo server on its own thread
//! (`ossl-server`) and the client sessions driven from the caller's thread.
//!
//! Each session has its own pair of connected UDP sockets (the server side is what an
//! OpenSSL relay gets after `DTLSv1_listen` + a connected socket per peer). The transport
//! under each `SslStream` is the socket itself: one `read` is one `recv`, one `write` one
//! `send`, so every record costs the server one `recv` and one `send` syscall, as with
//! `BIO_s_datagram`. The server waits on all its sockets through one epoll set and either
//! echoes every record it reads (`SSL_read` → `SSL_write` of the same bytes; thread
//! `ossl-server`), or, as a relay (thread `ossl-relay`), sends the plaintext to a UDP backend
//! on a connected socket per session and seals what comes back (`recv` → `SSL_write`): the
//! same four datagrams per record our relay moves.
//!
//! What it does not do: batch syscalls (OpenSSL's datagram BIO has no recvmmsg), or
//! retransmit data records (a stalled window is counted lost and reopened).

use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use openssl::ssl::{ErrorCode, SslStream};

use super::PeersError;
use super::openssl_side::{OpenSsl, ssl_err};
use super::udp::SliceCounts;

/// A session with outstanding records and no echo for this long reopens its window.
const STALL: Duration = Duration::from_millis(200);
/// Longest single epoll wait.
const MAX_WAIT: Duration = Duration::from_millis(5);
/// How long the server thread sleeps in epoll before looking at its stop flag.
const SERVER_TICK: Duration = Duration::from_millis(50);
/// Tries of a `SSL_write` that the socket refused with `EAGAIN` before the record is dropped.
const WRITE_TRIES: usize = 1000;
/// Longest time for all handshakes.
const HANDSHAKE_DEADLINE: Duration = Duration::from_secs(10);

/// A connected UDP socket as the datagram transport under an `SslStream`.
#[derive(Debug)]
struct Sock(UdpSocket);

impl Read for Sock {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.recv(buf)
    }
}

impl Write for Sock {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.send(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn io_err(what: &str, e: impl std::fmt::Display) -> PeersError {
    PeersError::OpenSsl(format!("{what}: {e}"))
}

fn connected_to(peer: SocketAddr) -> Result<UdpSocket, PeersError> {
    let lo = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0);
    let a = UdpSocket::bind(lo).map_err(|e| io_err("bind", e))?;
    a.connect(peer).map_err(|e| io_err("connect", e))?;
    a.set_nonblocking(true)
        .map_err(|e| io_err("nonblocking", e))?;
    Ok(a)
}

fn connected_pair() -> Result<(UdpSocket, UdpSocket), PeersError> {
    let lo = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0);
    let a = UdpSocket::bind(lo).map_err(|e| io_err("bind", e))?;
    let b = UdpSocket::bind(lo).map_err(|e| io_err("bind", e))?;
    let (aa, ba) = (
        a.local_addr().map_err(|e| io_err("local address", e))?,
        b.local_addr().map_err(|e| io_err("local address", e))?,
    );
    a.connect(ba).map_err(|e| io_err("connect", e))?;
    b.connect(aa).map_err(|e| io_err("connect", e))?;
    a.set_nonblocking(true)
        .map_err(|e| io_err("nonblocking", e))?;
    b.set_nonblocking(true)
        .map_err(|e| io_err("nonblocking", e))?;
    Ok((a, b))
}

/// `SSL_write` of `buf`, retried while the socket says `EAGAIN`; false when it never went.
pub(super) fn write_record<S: Read + Write>(
    s: &mut SslStream<S>,
    buf: &[u8],
) -> Result<bool, PeersError> {
    for _ in 0..WRITE_TRIES {
        match s.ssl_write(buf) {
            Ok(n) if n == buf.len() => return Ok(true),
            Ok(n) => {
                return Err(PeersError::OpenSsl(format!(
                    "SSL_write wrote {n} of {} bytes",
                    buf.len()
                )));
            }
            Err(e) if e.code() == ErrorCode::WANT_WRITE => std::thread::yield_now(),
            Err(e) => return Err(ssl_err("SSL_write", e)),
        }
    }
    Ok(false)
}

/// The echo server thread and its counters.
#[derive(Debug)]
struct Server {
    stop: Arc<AtomicBool>,
    echoed: Arc<AtomicU64>,
    handle: Option<JoinHandle<Result<(), PeersError>>>,
}

/// Server loop. Tokens `0..n` are the sessions' sockets, `n..2n` their upstream sockets
/// (relay only).
fn serve(
    mut streams: Vec<SslStream<Sock>>,
    upstreams: Vec<UdpSocket>,
    stop: &AtomicBool,
    echoed: &AtomicU64,
) -> Result<(), PeersError> {
    let mut poll = Poll::new().map_err(|e| io_err("epoll", e))?;
    let n = streams.len();
    let fds = streams
        .iter()
        .map(|s| s.get_ref().0.as_raw_fd())
        .chain(upstreams.iter().map(AsRawFd::as_raw_fd));
    for (i, fd) in fds.enumerate() {
        poll.registry()
            .register(&mut SourceFd(&fd), Token(i), Interest::READABLE)
            .map_err(|e| io_err("epoll register", e))?;
    }
    let relay = !upstreams.is_empty();
    let mut events = Events::with_capacity(1024);
    let mut buf = vec![0u8; dataplane::record::MAX_PLAINTEXT_LEN + 2048];
    let mut open = vec![true; streams.len()];
    let mut count = 0u64;
    while !stop.load(Relaxed) {
        match poll.poll(&mut events, Some(SERVER_TICK)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(io_err("epoll wait", e)),
        }
        for ev in events.iter() {
            let t = ev.token().0;
            let i = t % n.max(1);
            let (Some(s), Some(true)) = (streams.get_mut(i), open.get(i).copied()) else {
                continue;
            };
            if t >= n {
                // Backend answer: seal it back to the session. Edge-triggered: drain.
                let Some(up) = upstreams.get(i) else { continue };
                loop {
                    match up.recv(&mut buf) {
                        Ok(len) => {
                            if write_record(s, buf.get(..len).unwrap_or(&[]))? {
                                count += 1;
                            }
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        // ECONNREFUSED from an earlier send while the backend was not
                        // listening: nothing to relay.
                        Err(_) => break,
                    }
                }
                continue;
            }
            // Edge-triggered: read until the socket is empty.
            loop {
                match s.ssl_read(&mut buf) {
                    Ok(len) => {
                        let rec = buf.get(..len).unwrap_or(&[]);
                        if let Some(up) = upstreams.get(i).filter(|_| relay) {
                            // A full socket buffer drops the datagram, as UDP would.
                            let _ = up.send(rec);
                        } else if write_record(s, rec)? {
                            count += 1;
                        }
                    }
                    Err(e) if e.code() == ErrorCode::WANT_READ => break,
                    Err(e) if e.code() == ErrorCode::ZERO_RETURN => {
                        open[i] = false;
                        break;
                    }
                    Err(e) => return Err(ssl_err("server SSL_read", e)),
                }
            }
        }
        echoed.store(count, Relaxed);
    }
    Ok(())
}

impl Server {
    fn start(streams: Vec<SslStream<Sock>>, upstreams: Vec<UdpSocket>) -> Result<Self, PeersError> {
        let name = if upstreams.is_empty() {
            ECHO_THREAD
        } else {
            RELAY_THREAD
        };
        let stop = Arc::new(AtomicBool::new(false));
        let echoed = Arc::new(AtomicU64::new(0));
        let handle = {
            let (stop, echoed) = (Arc::clone(&stop), Arc::clone(&echoed));
            std::thread::Builder::new()
                .name(name.into())
                .spawn(move || serve(streams, upstreams, &stop, &echoed))
                .map_err(|e| io_err("spawn the server thread", e))?
        };
        Ok(Self {
            stop,
            echoed,
            handle: Some(handle),
        })
    }

    fn finish(&mut self) -> Result<(), PeersError> {
        self.stop.store(true, Relaxed);
        match self.handle.take() {
            Some(h) => h
                .join()
                .map_err(|_| PeersError::OpenSsl("the server thread panicked".into()))?,
            None => Ok(()),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.finish();
    }
}

/// The name of the OpenSSL echo server thread (its CPU is the per-core denominator).
pub(super) const ECHO_THREAD: &str = "ossl-server";
/// The name of the OpenSSL relay thread.
pub(super) const RELAY_THREAD: &str = "ossl-relay";

struct Client {
    stream: SslStream<Sock>,
    next_seq: u64,
    run_first_seq: u64,
    outstanding: usize,
    last_progress: Instant,
}

/// The OpenSSL server thread and the client sessions talking to it.
pub(super) struct OpenSslUdp {
    server: Server,
    clients: Vec<Client>,
    poll: Poll,
    events: Events,
    payload: Vec<u8>,
    rbuf: Vec<u8>,
    window: usize,
}

impl std::fmt::Debug for OpenSslUdp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenSslUdp")
            .field("sessions", &self.clients.len())
            .field("window", &self.window)
            .finish_non_exhaustive()
    }
}

impl OpenSslUdp {
    /// Handshakes `sessions` sessions over loopback (each on its own socket pair), then
    /// starts the server thread with the server ends: an echo server, or with `backend` a
    /// relay to that UDP address (one connected socket per session).
    pub(super) fn start(
        ossl: &OpenSsl,
        sessions: usize,
        window: usize,
        size: usize,
        backend: Option<SocketAddr>,
    ) -> Result<Self, PeersError> {
        let mut pairs = Vec::with_capacity(sessions);
        for _ in 0..sessions {
            let (cs, ss) = connected_pair()?;
            let (c, s) = ossl.ssl_pair()?;
            let c = SslStream::new(c, Sock(cs)).map_err(|e| ssl_err("client stream", e))?;
            let s = SslStream::new(s, Sock(ss)).map_err(|e| ssl_err("server stream", e))?;
            pairs.push((c, s, false, false));
        }
        // All handshakes at once, both ends driven from here.
        let deadline = Instant::now() + HANDSHAKE_DEADLINE;
        while pairs.iter().any(|p| !(p.2 && p.3)) {
            if Instant::now() > deadline {
                return Err(PeersError::OpenSsl(
                    "handshakes over loopback did not complete".into(),
                ));
            }
            for (c, s, c_done, s_done) in &mut pairs {
                for (done, stream, who) in [(c_done, c, "client"), (s_done, s, "server")] {
                    if !*done {
                        match stream.do_handshake() {
                            Ok(()) => *done = true,
                            Err(e) if e.code() == ErrorCode::WANT_READ => {}
                            Err(e) => return Err(ssl_err(&format!("{who} handshake"), e)),
                        }
                    }
                }
            }
            std::thread::yield_now();
        }
        let poll = Poll::new().map_err(|e| io_err("epoll", e))?;
        let mut clients = Vec::with_capacity(sessions);
        let mut servers = Vec::with_capacity(sessions);
        for (i, (c, s, _, _)) in pairs.into_iter().enumerate() {
            poll.registry()
                .register(
                    &mut SourceFd(&c.get_ref().0.as_raw_fd()),
                    Token(i),
                    Interest::READABLE,
                )
                .map_err(|e| io_err("epoll register", e))?;
            clients.push(Client {
                stream: c,
                next_seq: 0,
                run_first_seq: 0,
                outstanding: 0,
                last_progress: Instant::now(),
            });
            servers.push(s);
        }
        let upstreams = match backend {
            Some(addr) => (0..sessions)
                .map(|_| connected_to(addr))
                .collect::<Result<Vec<_>, _>>()?,
            None => Vec::new(),
        };
        let server = Server::start(servers, upstreams)?;
        let payload = (0..size).map(|i| (i % 251) as u8).collect();
        Ok(Self {
            server,
            clients,
            poll,
            events: Events::with_capacity(1024),
            payload,
            rbuf: vec![0u8; dataplane::record::MAX_PLAINTEXT_LEN + 2048],
            window: window.max(1),
        })
    }

    /// Reads every echo ready on client `i`.
    fn drain(
        &mut self,
        i: usize,
        counts: &mut SliceCounts,
        now: Instant,
    ) -> Result<(), PeersError> {
        let size = self.payload.len();
        let Some(c) = self.clients.get_mut(i) else {
            return Ok(());
        };
        let mut got = 0usize;
        loop {
            match c.stream.ssl_read(&mut self.rbuf) {
                Ok(n) => {
                    let rec = self.rbuf.get(..n).unwrap_or(&[]);
                    let seq = rec
                        .get(..8)
                        .and_then(|b| b.try_into().ok())
                        .map(u64::from_le_bytes);
                    let body_ok = n == size && rec.get(8..) == self.payload.get(8..);
                    match seq {
                        Some(seq) if body_ok && seq < c.run_first_seq => counts.stale += 1,
                        Some(_) if body_ok => got += 1,
                        _ => counts.corrupt += 1,
                    }
                }
                Err(e) if e.code() == ErrorCode::WANT_READ => break,
                Err(e) => return Err(ssl_err("client SSL_read", e)),
            }
        }
        if got > 0 {
            counts.received += got as u64;
            c.outstanding = c.outstanding.saturating_sub(got);
            c.last_progress = now;
        }
        Ok(())
    }

    fn wait(&mut self, timeout: Duration) -> Result<Vec<usize>, PeersError> {
        match self.poll.poll(&mut self.events, Some(timeout)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(io_err("epoll wait", e)),
        }
        Ok(self.events.iter().map(|e| e.token().0).collect())
    }

    /// Closed loop for `duration`: every session keeps `window` records outstanding; a
    /// record counts once its echo came back and matched. Echoes still in flight at the end
    /// are waited for (briefly) but not counted.
    pub(super) fn closed_loop(&mut self, duration: Duration) -> Result<SliceCounts, PeersError> {
        let mut counts = SliceCounts::default();
        let start = Instant::now();
        let end = start + duration;
        for c in &mut self.clients {
            c.run_first_seq = c.next_seq;
            c.outstanding = 0;
            c.last_progress = start;
        }
        let mut last_stall_check = start;
        loop {
            let now = Instant::now();
            if now >= end {
                break;
            }
            for c in &mut self.clients {
                while c.outstanding < self.window {
                    if let Some(head) = self.payload.get_mut(..8) {
                        head.copy_from_slice(&c.next_seq.to_le_bytes());
                    }
                    if !write_record(&mut c.stream, &self.payload)? {
                        counts.send_errors += 1;
                        break;
                    }
                    c.next_seq += 1;
                    c.outstanding += 1;
                    counts.sent += 1;
                }
            }
            let ready = self.wait(MAX_WAIT.min(end.saturating_duration_since(now)))?;
            let now = Instant::now();
            for i in ready {
                self.drain(i, &mut counts, now)?;
            }
            if now.duration_since(last_stall_check) > STALL / 4 {
                last_stall_check = now;
                for c in &mut self.clients {
                    if c.outstanding > 0 && now.duration_since(c.last_progress) > STALL {
                        counts.lost += c.outstanding as u64;
                        c.outstanding = 0;
                        c.last_progress = now;
                    }
                }
            }
        }
        counts.elapsed = start.elapsed();
        // Settle: let the echoes in flight come back so the next slice starts clean.
        let mut tail = SliceCounts::default();
        let deadline = Instant::now() + Duration::from_millis(100);
        while Instant::now() < deadline && self.clients.iter().any(|c| c.outstanding > 0) {
            let ready = self.wait(Duration::from_millis(5))?;
            let now = Instant::now();
            for i in ready {
                self.drain(i, &mut tail, now)?;
            }
        }
        counts.corrupt += tail.corrupt;
        counts.outstanding_at_end = self.clients.iter().map(|c| c.outstanding as u64).sum();
        Ok(counts)
    }

    /// Sends close_notify on every client session, stops the server thread and returns
    /// how many records it sent back in all (warm-up included).
    pub(super) fn finish(mut self) -> Result<u64, PeersError> {
        for c in &mut self.clients {
            let _ = c.stream.shutdown();
        }
        self.server.finish()?;
        // The thread stored its final count before it returned.
        Ok(self.server.echoed.load(Relaxed))
    }
}
