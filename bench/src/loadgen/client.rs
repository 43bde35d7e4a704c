//! Client handshakes with our engine (`control::Connection::client`), many at once on the
//! calling thread: one nonblocking UDP socket per session, readiness through one epoll set
//! (mio), the engine's timers honoured for retransmission.
//!
//! [`run_handshakes`] keeps `parallel` handshakes in flight until `total` completed or the
//! deadline passed; completed sessions are returned ([`Established`]) when asked for, so the
//! data phase continues on the same socket with the negotiated keys.

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use control::crypto::pki_types::UnixTime;
use control::crypto::{CertificateVerifier, PeerVerifier, SystemRng};
use control::{Config, Connection, Event, SessionKeys, SessionTicket};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};

use super::CipherChoice;

/// Longest a single handshake may take before it counts as failed.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Most tickets kept for resumption.
const MAX_TICKETS: usize = 100_000;
/// Longest wait in one loop turn.
const MAX_WAIT: Duration = Duration::from_millis(10);
/// DTLS 1.3, collecting tickets: how long a completed handshake waits for the server's
/// NewSessionTicket (one round trip after our Finished) before it is closed without one.
pub const TICKET_WAIT: Duration = Duration::from_secs(1);

/// A client configuration verifying the server against `ca` (name `localhost`), offering
/// only `cipher`'s suite.
pub fn client_config(ca: &Path, cipher: CipherChoice, mtu: usize) -> Result<Config> {
    let verifier = CertificateVerifier::from_pem_file(ca)
        .with_context(|| format!("CA certificate {}", ca.display()))?;
    let config = Config {
        cipher_suites: vec![cipher.suite()],
        server_name: Some("localhost".into()),
        mtu,
        ..Config::new(PeerVerifier::WebPki(verifier))
    };
    config.validate_client().context("client configuration")?;
    Ok(config)
}

/// A session whose handshake completed: its socket, engine and keys.
#[derive(Debug)]
pub struct Established {
    /// The session's socket (nonblocking, bound on loopback).
    pub socket: UdpSocket,
    /// The server address.
    pub server: SocketAddr,
    /// The engine (kept for alerts, retransmitted flights and close_notify).
    pub conn: Connection,
    /// The negotiated keys.
    pub keys: Box<SessionKeys>,
    /// Time from the first ClientHello to KeysReady.
    pub took: Duration,
}

/// What a batch of handshakes did.
#[derive(Debug, Default)]
pub struct HandshakeStats {
    /// Handshakes started.
    pub started: u64,
    /// Handshakes that reached KeysReady.
    pub completed: u64,
    /// Of those, abbreviated (resumed with a ticket).
    pub resumed: u64,
    /// Handshakes that failed or timed out.
    pub failed: u64,
    /// Wall time from the first start to the last completion.
    pub elapsed: Duration,
    /// Datagrams sent and received by the clients.
    pub datagrams_out: u64,
    /// Datagrams received.
    pub datagrams_in: u64,
    /// Per-handshake durations (completed ones), for percentiles.
    pub durations: Vec<Duration>,
    /// The completed sessions, when the caller asked to keep them.
    pub established: Vec<Established>,
    /// Tickets received (when `collect_tickets`).
    pub tickets: Vec<SessionTicket>,
    /// The first failure seen, for the report.
    pub first_error: Option<String>,
}

impl HandshakeStats {
    /// Completed handshakes per second of `elapsed`.
    pub fn rate(&self) -> f64 {
        self.completed as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// What [`run_handshakes`] should do.
#[derive(Debug, Clone)]
pub struct HandshakePlan {
    /// The server.
    pub server: SocketAddr,
    /// Local address to bind each client socket to (port 0).
    pub bind_ip: IpAddr,
    /// Spread the clients over this many consecutive IPv4 addresses from `bind_ip` (slot
    /// `i` binds `bind_ip + i % sources`), so a server that spreads handshakes over its
    /// workers by source address sees several sources; 1 (or an IPv6 `bind_ip`): `bind_ip`
    /// alone.
    pub sources: u8,
    /// Handshakes in flight at once.
    pub parallel: usize,
    /// Stop after this many started (`None`: until the deadline).
    pub total: Option<u64>,
    /// Stop starting new ones after this.
    pub duration: Duration,
    /// Keep the established sessions (else each is closed with close_notify at once).
    pub keep: bool,
    /// Keep the tickets the server issues.
    pub collect_tickets: bool,
    /// Offer a collected ticket (resumption) in each new handshake while any are left.
    pub offer_tickets: bool,
    /// Longest one handshake may take before it counts as failed (usually
    /// [`HANDSHAKE_TIMEOUT`]; longer through a lossy path).
    pub timeout: Duration,
    /// With `collect_tickets`, how long a completed DTLS 1.3 handshake keeps driving its
    /// engine (retransmitting its Finished) while it waits for the server's
    /// NewSessionTicket (usually [`TICKET_WAIT`]; longer through a lossy path, where the
    /// ticket is the proof that the server completed too).
    pub ticket_wait: Duration,
}

impl HandshakePlan {
    /// The address slot `slot` binds its client sockets to (see [`HandshakePlan::sources`]).
    fn source_ip(&self, slot: usize) -> IpAddr {
        match self.bind_ip {
            IpAddr::V4(ip) if self.sources > 1 => {
                let step = u32::try_from(slot % usize::from(self.sources)).unwrap_or(0);
                IpAddr::V4(std::net::Ipv4Addr::from(u32::from(ip).wrapping_add(step)))
            }
            ip => ip,
        }
    }
}

struct Pending {
    socket: UdpSocket,
    conn: Connection,
    started: Instant,
    /// DTLS 1.3, collecting tickets: when the handshake completed (counted then); the slot
    /// is held until the server's NewSessionTicket arrives or `ticket_wait` passed.
    awaiting_ticket: Option<Instant>,
}

fn bind(ip: IpAddr) -> Result<UdpSocket> {
    let socket = UdpSocket::bind(SocketAddr::new(ip, 0)).context("bind client socket")?;
    socket.set_nonblocking(true).context("O_NONBLOCK")?;
    Ok(socket)
}

/// Runs handshakes per `plan`. `tickets`: with `plan.offer_tickets`, each new handshake
/// offers one (popped) for resumption while any are left; with `plan.collect_tickets` the
/// tickets the server issues are added (at most 100 000 kept): a DTLS 1.2 ticket with the
/// handshake's keys, a DTLS 1.3 ticket in a NewSessionTicket after it (RFC 8446 §4.6.1),
/// for which a completed handshake keeps its slot until the ticket came (at most 1 s).
pub fn run_handshakes(
    config: &Arc<Config>,
    plan: &HandshakePlan,
    tickets: &mut Vec<SessionTicket>,
) -> Result<HandshakeStats> {
    let mut poll = Poll::new().context("epoll")?;
    let mut events = Events::with_capacity(256);
    let mut slots: Vec<Option<Pending>> = (0..plan.parallel.max(1)).map(|_| None).collect();
    let mut stats = HandshakeStats::default();
    let mut buf = vec![0u8; 65_536];
    let start = Instant::now();
    let stop_starting = start + plan.duration;
    let mut last_done = start;
    loop {
        let now = Instant::now();
        // Start new handshakes in free slots.
        for (i, slot) in slots.iter_mut().enumerate() {
            let may_start = now < stop_starting && plan.total.is_none_or(|t| stats.started < t);
            if slot.is_none() && may_start {
                let socket = bind(plan.source_ip(i))?;
                poll.registry()
                    .register(
                        &mut SourceFd(&socket.as_raw_fd()),
                        Token(i),
                        Interest::READABLE,
                    )
                    .context("epoll register")?;
                let conn = Connection::client(
                    Arc::clone(config),
                    Box::new(SystemRng::new()),
                    now,
                    plan.server,
                    if plan.offer_tickets {
                        tickets.pop()
                    } else {
                        None
                    },
                )
                .context("client engine")?;
                stats.started += 1;
                *slot = Some(Pending {
                    socket,
                    conn,
                    started: now,
                    awaiting_ticket: None,
                });
            }
        }
        if slots.iter().all(Option::is_none) {
            break;
        }
        // Flush, collect events, expire.
        let mut next_timer = now + MAX_WAIT;
        for slot in slots.iter_mut() {
            let Some(p) = slot.as_mut() else { continue };
            let mut finished = None;
            while let Some(t) = p.conn.poll_transmit(now, &mut buf) {
                // A send error is like a loss: the engine retransmits.
                let _ = p.socket.send_to(&buf[..t.len], t.destination);
                stats.datagrams_out += 1;
            }
            while let Some(ev) = p.conn.poll_event() {
                match ev {
                    Event::KeysReady(mut keys) => {
                        if plan.collect_tickets
                            && tickets.len() < MAX_TICKETS
                            && let Some(t) = keys.ticket.take()
                        {
                            tickets.insert(0, t);
                        }
                        finished = Some(Ok(keys));
                    }
                    Event::HandshakeFailed(e) => finished = Some(Err(e.to_string())),
                    Event::AlertReceived { .. }
                    | Event::Closed { .. }
                    | Event::KeysUpdated(_)
                    | Event::ConnectionIds(_) => {}
                }
            }
            if let Some(done_at) = p.awaiting_ticket {
                let mut received = false;
                while let Some(t) = p.conn.poll_session_ticket() {
                    if tickets.len() < MAX_TICKETS {
                        tickets.insert(0, t);
                    }
                    received = true;
                }
                if received || now.duration_since(done_at) > plan.ticket_wait {
                    if let Some(p) = slot.take() {
                        let _ = poll
                            .registry()
                            .deregister(&mut SourceFd(&p.socket.as_raw_fd()));
                        close(p, now, &mut buf, &mut stats);
                    }
                } else {
                    next_timer = next_timer.min(done_at + plan.ticket_wait);
                }
                continue;
            }
            if finished.is_none() && now.duration_since(p.started) > plan.timeout {
                finished = Some(Err(format!(
                    "handshake timed out in state {}",
                    p.conn.state_name()
                )));
            }
            match finished {
                None => {
                    if let Some(t) = p.conn.poll_timeout() {
                        next_timer = next_timer.min(t);
                    }
                }
                Some(outcome) => {
                    if let Ok(keys) = &outcome {
                        stats.completed += 1;
                        stats.resumed += u64::from(keys.resumed);
                        stats.durations.push(now.duration_since(p.started));
                        last_done = now;
                        if plan.collect_tickets && !plan.keep && p.conn.version() == "1.3" {
                            // Its ticket comes after the handshake: the slot waits for it.
                            p.awaiting_ticket = Some(now);
                            next_timer = next_timer.min(now + plan.ticket_wait);
                            continue;
                        }
                    }
                    let Some(p) = slot.take() else { continue };
                    let _ = poll
                        .registry()
                        .deregister(&mut SourceFd(&p.socket.as_raw_fd()));
                    match outcome {
                        Ok(keys) if plan.keep => {
                            let took = now.duration_since(p.started);
                            stats.established.push(Established {
                                socket: p.socket,
                                server: plan.server,
                                conn: p.conn,
                                keys,
                                took,
                            });
                        }
                        Ok(_) => close(p, now, &mut buf, &mut stats),
                        Err(e) => {
                            stats.failed += 1;
                            stats.first_error.get_or_insert(e);
                        }
                    }
                }
            }
        }
        if slots.iter().all(Option::is_none)
            && (now >= stop_starting || plan.total.is_some_and(|t| stats.started >= t))
        {
            break;
        }
        let wait = next_timer.saturating_duration_since(Instant::now());
        poll.poll(&mut events, Some(wait.min(MAX_WAIT)))
            .or_else(|e| {
                if e.kind() == std::io::ErrorKind::Interrupted {
                    Ok(())
                } else {
                    Err(e)
                }
            })
            .context("epoll wait")?;
        let now = Instant::now();
        for ev in events.iter() {
            let Some(Some(p)) = slots.get_mut(ev.token().0) else {
                continue;
            };
            loop {
                match p.socket.recv_from(&mut buf) {
                    Ok((n, from)) => {
                        stats.datagrams_in += 1;
                        if from == plan.server {
                            p.conn
                                .handle_datagram(now, UnixTime::now(), from, &buf[..n]);
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    // WouldBlock (drained) or an ICMP error surfaced as a recv error.
                    Err(_) => break,
                }
            }
        }
        for p in slots.iter_mut().flatten() {
            if p.conn.poll_timeout().is_some_and(|t| t <= now) {
                p.conn.handle_timeout(now);
            }
        }
    }
    stats.elapsed = last_done.saturating_duration_since(start);
    Ok(stats)
}

/// Sends close_notify on a completed handshake's session, so the server frees it now and
/// not at its idle timeout.
fn close(mut p: Pending, now: Instant, buf: &mut [u8], stats: &mut HandshakeStats) {
    p.conn.close(now);
    while let Some(t) = p.conn.poll_transmit(now, buf) {
        let _ = p.socket.send_to(&buf[..t.len], t.destination);
        stats.datagrams_out += 1;
    }
}
