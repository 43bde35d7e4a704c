//! B8 across a network (`dtls-bench openssl-server`): OpenSSL's DTLS 1.2 echo server (or,
//! with a backend, relay) on a real address, so that the generator that drives `dtlsd serve`
//! (`dtls-bench throughput --server`) drives OpenSSL the same way from another host or
//! network namespace (scripts/xdp-bench.sh, across its veth pair). The server's CPU per
//! record is then read from /proc by the caller, as for the daemon.
//!
//! The server is the one [`super::openssl_udp`] runs over loopback, made to accept peers off
//! the wire: one socket bound to the listen address (SO_REUSEPORT), and for each new peer a
//! socket bound to the same address and `connect`ed to it (what an OpenSSL server gets after
//! `DTLSv1_listen`); the kernel delivers that peer's datagrams to its connected socket from
//! then on. The first datagram (and any that reach the listen socket before the connect) are
//! handed to the peer's `SSL` ahead of its socket. Every record costs one `recv` and one
//! `send` (OpenSSL's datagram BIO has no batching), `SSL_read` → `SSL_write` of the same bytes
//! (`--backend`: sent to the backend on a connected socket per session, its answer sealed
//! back: the four datagrams per record our relay moves). One thread, epoll, edge-triggered.
//! ECDHE-ECDSA-AES128-GCM-SHA256, X25519 or P-256, cookie exchange on, MTU 1500.
//!
//! What it does not do: retransmit its handshake flights on a timer (a lost flight waits
//! for the client's retransmission, which OpenSSL answers), bind cookies to the client's
//! address, or resume sessions. A benchmark peer, not a server to expose.

use std::collections::{HashMap, VecDeque};
use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use openssl::ssl::{ErrorCode, Ssl, SslContext, SslStream};

use super::PeersError;
use super::openssl_side::{server_context, ssl_err};
use super::openssl_udp::write_record;

/// Most sessions at once; datagrams from further new peers are dropped.
const MAX_SESSIONS: usize = 4096;
/// The listen socket's token; session `i` has `1 + 2i` (its socket) and `2 + 2i` (upstream).
const LISTEN: Token = Token(0);
/// How often the server prints its counts.
const REPORT_EVERY: Duration = Duration::from_secs(10);

/// `dtls-bench openssl-server` options.
#[derive(Debug, Clone, clap::Args)]
pub struct OpenSslServerArgs {
    /// Address to serve DTLS on (an address of this host, not the unspecified one: each
    /// peer's socket is bound to it and connected).
    #[arg(long)]
    pub listen: SocketAddr,
    /// Server certificate chain (PEM, leaf first; an ECDSA P-256 key for the B8 suite).
    #[arg(long)]
    pub cert: PathBuf,
    /// Its private key (PEM).
    #[arg(long)]
    pub key: PathBuf,
    /// Relay each record's plaintext to this UDP echo backend and seal its answer back (the
    /// like-for-like peer of `dtlsd serve`); without it, echo each record.
    #[arg(long)]
    pub backend: Option<SocketAddr>,
    /// Path MTU the server assumes for its records and flights.
    #[arg(long, default_value_t = 1500)]
    pub mtu: u32,
}

/// A connected UDP socket under an `SslStream`, with datagrams that reached the listen
/// socket before it existed read first.
#[derive(Debug)]
struct PeerSock {
    socket: UdpSocket,
    early: VecDeque<Vec<u8>>,
}

impl Read for PeerSock {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let Some(d) = self.early.pop_front() {
            // Like UDP: a datagram longer than the buffer is cut.
            let n = d.len().min(buf.len());
            buf[..n].copy_from_slice(&d[..n]);
            return Ok(n);
        }
        self.socket.recv(buf)
    }
}

impl Write for PeerSock {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.socket.send(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

struct Session {
    peer: SocketAddr,
    stream: SslStream<PeerSock>,
    established: bool,
    upstream: Option<UdpSocket>,
}

/// Counts printed every [`REPORT_EVERY`].
#[derive(Debug, Default, Clone, Copy)]
struct Counts {
    handshakes: u64,
    records: u64,
    failed: u64,
    closed: u64,
    refused: u64,
}

fn io_err(what: &str, e: impl std::fmt::Display) -> PeersError {
    PeersError::OpenSsl(format!("{what}: {e}"))
}

fn unspecified(like: SocketAddr) -> SocketAddr {
    match like {
        SocketAddr::V4(_) => SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0),
        SocketAddr::V6(_) => SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 0),
    }
}

/// A nonblocking socket bound to `addr` with SO_REUSEPORT (no GRO: OpenSSL reads one
/// datagram per `recv`).
fn bind_shared(addr: SocketAddr) -> Result<UdpSocket, PeersError> {
    let cfg = dtls_io::SocketConfig {
        reuse_port: true,
        gro: false,
        ..dtls_io::SocketConfig::default()
    };
    dtls_io::bind_udp(addr, &cfg)
        .map(|b| b.socket)
        .map_err(|e| io_err(&format!("bind {addr}"), e))
}

struct Server {
    ctx: SslContext,
    listen_addr: SocketAddr,
    backend: Option<SocketAddr>,
    mtu: u32,
    poll: Poll,
    listen: UdpSocket,
    sessions: Vec<Option<Session>>,
    by_peer: HashMap<SocketAddr, usize>,
    buf: Vec<u8>,
    counts: Counts,
}

impl Server {
    fn register(&self, fd: i32, token: Token) -> Result<(), PeersError> {
        self.poll
            .registry()
            .register(&mut SourceFd(&fd), token, Interest::READABLE)
            .map_err(|e| io_err("epoll register", e))
    }

    /// Reads the listen socket dry: datagrams of known peers go to their session, a new
    /// peer gets a session.
    fn accept(&mut self) -> Result<(), PeersError> {
        loop {
            let (n, peer) = match self.listen.recv_from(&mut self.buf) {
                Ok(r) => r,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(io_err("recv on the listen socket", e)),
            };
            let datagram = self.buf[..n].to_vec();
            if let Some(&i) = self.by_peer.get(&peer) {
                if let Some(s) = self.sessions.get_mut(i).and_then(Option::as_mut) {
                    s.stream.get_mut().early.push_back(datagram);
                }
                self.drive(i)?;
                continue;
            }
            if self.by_peer.len() >= MAX_SESSIONS {
                self.counts.refused += 1;
                continue;
            }
            let socket = bind_shared(self.listen_addr)?;
            socket
                .connect(peer)
                .map_err(|e| io_err(&format!("connect to {peer}"), e))?;
            let mut ssl = Ssl::new(&self.ctx).map_err(|e| ssl_err("SSL_new", e))?;
            ssl.set_accept_state();
            ssl.set_mtu(self.mtu).map_err(|e| ssl_err("MTU", e))?;
            let fd = socket.as_raw_fd();
            let stream = SslStream::new(
                ssl,
                PeerSock {
                    socket,
                    early: VecDeque::from([datagram]),
                },
            )
            .map_err(|e| ssl_err("server stream", e))?;
            let i = match self.sessions.iter().position(Option::is_none) {
                Some(i) => i,
                None => {
                    self.sessions.push(None);
                    self.sessions.len() - 1
                }
            };
            self.register(fd, Token(1 + 2 * i))?;
            self.sessions[i] = Some(Session {
                peer,
                stream,
                established: false,
                upstream: None,
            });
            self.by_peer.insert(peer, i);
            self.drive(i)?;
        }
    }

    fn close(&mut self, i: usize) {
        if let Some(s) = self.sessions.get_mut(i).and_then(Option::take) {
            self.by_peer.remove(&s.peer);
            let fd = s.stream.get_ref().socket.as_raw_fd();
            let _ = self.poll.registry().deregister(&mut SourceFd(&fd));
            if let Some(up) = &s.upstream {
                let _ = self
                    .poll
                    .registry()
                    .deregister(&mut SourceFd(&up.as_raw_fd()));
            }
        }
    }

    /// Session `i`'s socket is readable (or it has early datagrams): handshake, then
    /// records until `SSL_read` wants more.
    fn drive(&mut self, i: usize) -> Result<(), PeersError> {
        let Some(s) = self.sessions.get_mut(i).and_then(Option::as_mut) else {
            return Ok(());
        };
        if !s.established {
            match s.stream.do_handshake() {
                Ok(()) => {
                    s.established = true;
                    self.counts.handshakes += 1;
                    if let Some(backend) = self.backend {
                        let up = UdpSocket::bind(unspecified(backend))
                            .and_then(|u| u.connect(backend).map(|()| u))
                            .and_then(|u| u.set_nonblocking(true).map(|()| u))
                            .map_err(|e| io_err(&format!("upstream socket to {backend}"), e))?;
                        let fd = up.as_raw_fd();
                        s.upstream = Some(up);
                        self.register(fd, Token(2 + 2 * i))?;
                    }
                }
                Err(e) if e.code() == ErrorCode::WANT_READ => return Ok(()),
                Err(e) => {
                    eprintln!("openssl-server: handshake with {} failed: {e}", s.peer);
                    self.counts.failed += 1;
                    self.close(i);
                    return Ok(());
                }
            }
        }
        let Some(s) = self.sessions.get_mut(i).and_then(Option::as_mut) else {
            return Ok(());
        };
        loop {
            match s.stream.ssl_read(&mut self.buf) {
                Ok(len) => {
                    let rec = &self.buf[..len];
                    match &s.upstream {
                        // A full socket buffer drops the datagram, as UDP would.
                        Some(up) => {
                            let _ = up.send(rec);
                        }
                        None => {
                            if write_record(&mut s.stream, rec)? {
                                self.counts.records += 1;
                            }
                        }
                    }
                }
                Err(e) if e.code() == ErrorCode::WANT_READ => return Ok(()),
                Err(e) => {
                    if e.code() != ErrorCode::ZERO_RETURN {
                        eprintln!("openssl-server: session with {} failed: {e}", s.peer);
                        self.counts.failed += 1;
                    } else {
                        self.counts.closed += 1;
                    }
                    self.close(i);
                    return Ok(());
                }
            }
        }
    }

    /// Session `i`'s backend answered: seal every answer back.
    fn relay_back(&mut self, i: usize) -> Result<(), PeersError> {
        let Some(s) = self.sessions.get_mut(i).and_then(Option::as_mut) else {
            return Ok(());
        };
        let Some(up) = &s.upstream else {
            return Ok(());
        };
        loop {
            match up.recv(&mut self.buf) {
                Ok(len) => {
                    if write_record(&mut s.stream, &self.buf[..len])? {
                        self.counts.records += 1;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // ECONNREFUSED from an earlier send while the backend was not listening.
                Err(_) => return Ok(()),
            }
        }
    }
}

/// Runs the server until the process is killed, printing its counts every 10 s.
///
/// # Errors
/// Unreadable certificate or key, an address that cannot be bound, epoll failures.
pub fn run_cli(args: &OpenSslServerArgs) -> Result<(), PeersError> {
    if args.listen.ip().is_unspecified() || args.listen.port() == 0 {
        return Err(PeersError::Options(
            "--listen: a specific address and port (each peer's socket is bound to it)".into(),
        ));
    }
    let read = |p: &PathBuf| {
        std::fs::read(p).map_err(|e| PeersError::Options(format!("{}: {e}", p.display())))
    };
    let mut cookie_secret = [0u8; 32];
    control::Rng::fill(&mut control::crypto::SystemRng::new(), &mut cookie_secret);
    let ctx = server_context(&read(&args.cert)?, &read(&args.key)?, &cookie_secret)
        .map_err(|e| ssl_err("server context", e))?;
    let listen = bind_shared(args.listen)?;
    let mut server = Server {
        ctx,
        listen_addr: args.listen,
        backend: args.backend,
        mtu: args.mtu,
        poll: Poll::new().map_err(|e| io_err("epoll", e))?,
        listen,
        sessions: Vec::new(),
        by_peer: HashMap::new(),
        buf: vec![0u8; 65_536],
        counts: Counts::default(),
    };
    server.register(server.listen.as_raw_fd(), LISTEN)?;
    println!(
        "dtls-bench openssl-server: {} on {}{} ({})",
        if args.backend.is_some() {
            "relay"
        } else {
            "echo"
        },
        args.listen,
        args.backend
            .map(|b| format!(" to backend {b}"))
            .unwrap_or_default(),
        openssl::version::version()
    );
    let mut events = Events::with_capacity(1024);
    let mut reported = Instant::now();
    loop {
        match server.poll.poll(&mut events, Some(Duration::from_secs(1))) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(io_err("epoll wait", e)),
        }
        for ev in events.iter() {
            match ev.token() {
                LISTEN => server.accept()?,
                Token(t) if t % 2 == 1 => server.drive((t - 1) / 2)?,
                Token(t) => server.relay_back((t - 2) / 2)?,
            }
        }
        if reported.elapsed() >= REPORT_EVERY {
            reported = Instant::now();
            let c = server.counts;
            println!(
                "  {} sessions, {} handshakes, {} records, {} failed, {} closed, {} refused",
                server.by_peer.len(),
                c.handshakes,
                c.records,
                c.failed,
                c.closed,
                c.refused
            );
        }
    }
}
