//! The in-memory pair (quinn-proto style): a client engine, a server behind the stateless
//! [`Acceptor`], a virtual clock and one seeded [`Channel`] per direction.
//!
//! The server side routes like the control thread will: datagrams from the client go to the
//! client's server engine while it is alive, otherwise to the acceptor, which answers with a
//! HelloVerifyRequest or hands over a cookie-verified ClientHello for a new engine. After
//! KeysReady each side seals and opens application data with `dataplane::record` exactly as a
//! shard does, and keeps handing every non-application record to its engine.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use control::crypto::SeededRng;
use control::crypto::pki_types::UnixTime;
use control::{
    AcceptOutcome, Acceptor, AcceptorConfig, AlertDescription, AlertLevel, Config, Connection,
    DropReason, Event, HandshakeError, SessionTicket,
};

use super::channel::{Channel, Impairment};
use super::fixtures::{DataKeys, SessionInfo, client_addr, install_keys, server_addr, test_wall};
use super::wire::{CT_APPLICATION_DATA, record_ranges};

/// Big enough for any datagram, so that an oversized one is seen (and fails the MTU check)
/// instead of being dropped by a short buffer.
const TX_BUF: usize = 65_536;

/// One datagram an endpoint sent, with its virtual send time.
#[derive(Debug, Clone)]
pub struct Sent {
    pub at: Duration,
    pub bytes: Vec<u8>,
}

/// One endpoint.
#[derive(Debug)]
pub struct Side {
    pub name: &'static str,
    pub addr: SocketAddr,
    pub conn: Option<Connection>,
    pub data: Option<DataKeys>,
    pub info: Option<SessionInfo>,
    pub keys_ready: usize,
    pub failed: Option<HandshakeError>,
    pub failures: usize,
    pub alerts: Vec<(AlertLevel, AlertDescription)>,
    pub closed: Option<bool>,
    /// Application data received (opened by the data plane keys).
    pub app_in: Vec<Vec<u8>>,
    /// Application-data records that did not open.
    pub app_rejected: usize,
    /// Every datagram this side sent.
    pub sent: Vec<Sent>,
    /// Largest datagram this side may send.
    pub mtu: usize,
}

impl Side {
    fn new(name: &'static str, addr: SocketAddr, mtu: usize) -> Self {
        Self {
            name,
            addr,
            conn: None,
            data: None,
            info: None,
            keys_ready: 0,
            failed: None,
            failures: 0,
            alerts: Vec::new(),
            closed: None,
            app_in: Vec::new(),
            app_rejected: 0,
            sent: Vec::new(),
            mtu,
        }
    }

    pub fn is_ready(&self) -> bool {
        self.data.is_some()
    }

    pub fn conn(&self) -> &Connection {
        self.conn.as_ref().expect("engine exists")
    }

    pub fn conn_mut(&mut self) -> &mut Connection {
        self.conn.as_mut().expect("engine exists")
    }

    /// Alerts received with this description.
    pub fn alerts_with(&self, d: AlertDescription) -> usize {
        self.alerts.iter().filter(|(_, x)| *x == d).count()
    }

    fn drain_events(&mut self, now: Instant) {
        let Some(conn) = self.conn.as_mut() else {
            return;
        };
        while let Some(ev) = conn.poll_event() {
            match ev {
                Event::KeysReady(keys) => {
                    self.keys_ready += 1;
                    let (data, info) = install_keys(*keys, now);
                    self.data = Some(data);
                    self.info = Some(info);
                }
                Event::AlertReceived { level, description } => {
                    self.alerts.push((level, description));
                }
                Event::HandshakeFailed(e) => {
                    self.failures += 1;
                    self.failed = Some(e);
                }
                Event::Closed { by_peer } => self.closed = Some(by_peer),
                Event::KeysUpdated(_) | Event::ConnectionIds(_) => {}
            }
        }
    }
}

/// How to build a [`Pair`].
#[derive(Debug, Clone)]
pub struct PairConfig {
    pub client: Config,
    pub server: Config,
    pub acceptor: AcceptorConfig,
    pub c2s: Impairment,
    pub s2c: Impairment,
    pub seed: u64,
}

impl PairConfig {
    pub fn new(client: Config, server: Config) -> Self {
        Self {
            client,
            server,
            acceptor: AcceptorConfig::default(),
            c2s: Impairment::perfect(),
            s2c: Impairment::perfect(),
            seed: 1,
        }
    }

    /// The same impairment both ways.
    pub fn impaired(mut self, imp: Impairment) -> Self {
        self.c2s = imp.clone();
        self.s2c = imp;
        self
    }

    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }
}

/// Client + acceptor + server engine + channels + virtual clock.
#[derive(Debug)]
pub struct Pair {
    pub start: Instant,
    pub now: Instant,
    pub client: Side,
    pub server: Side,
    pub acceptor: Acceptor,
    pub server_config: Arc<Config>,
    pub c2s: Channel,
    pub s2c: Channel,
    /// Server engines created by the acceptor.
    pub accepted: usize,
    /// HelloVerifyRequests (and other stateless replies) the acceptor sent.
    pub acceptor_replies: usize,
    pub acceptor_drops: Vec<DropReason>,
    /// Bytes the acceptor received and sent (amplification check).
    pub acceptor_bytes_in: usize,
    pub acceptor_bytes_out: usize,
    seed: u64,
    steps: u64,
    buf: Vec<u8>,
}

/// Guard against an engine that keeps asking to be woken at the same instant.
const MAX_STEPS: u64 = 2_000_000;

impl Pair {
    pub fn new(cfg: PairConfig) -> Self {
        Self::with_ticket(cfg, None)
    }

    /// A pair whose client offers `ticket` for resumption.
    pub fn with_ticket(cfg: PairConfig, ticket: Option<SessionTicket>) -> Self {
        let start = Instant::now();
        let server_config = Arc::new(cfg.server);
        let mut acceptor_rng = SeededRng::new(cfg.seed.wrapping_mul(7).wrapping_add(3));
        let acceptor = Acceptor::new(
            Arc::clone(&server_config),
            cfg.acceptor,
            &mut acceptor_rng,
            start,
        )
        .expect("server config is valid");
        let client_mtu = cfg.client.mtu;
        let client_conn = Connection::client(
            Arc::new(cfg.client),
            Box::new(SeededRng::new(cfg.seed.wrapping_mul(7).wrapping_add(1))),
            start,
            server_addr(),
            ticket,
        )
        .expect("client config is valid");
        let mut client = Side::new("client", client_addr(), client_mtu);
        client.conn = Some(client_conn);
        let server = Side::new("server", server_addr(), server_config.mtu);
        let mut pair = Self {
            start,
            now: start,
            client,
            server,
            acceptor,
            server_config,
            c2s: Channel::new(cfg.c2s, cfg.seed.wrapping_mul(7).wrapping_add(4)),
            s2c: Channel::new(cfg.s2c, cfg.seed.wrapping_mul(7).wrapping_add(5)),
            accepted: 0,
            acceptor_replies: 0,
            acceptor_drops: Vec::new(),
            acceptor_bytes_in: 0,
            acceptor_bytes_out: 0,
            seed: cfg.seed,
            steps: 0,
            buf: vec![0u8; TX_BUF],
        };
        pair.client.drain_events(start);
        pair
    }

    /// Replaces the client by a new one on the same address (e.g. after a failed handshake).
    pub fn restart_client(&mut self, config: Config, seed: u64) {
        let mtu = config.mtu;
        let conn = Connection::client(
            Arc::new(config),
            Box::new(SeededRng::new(seed)),
            self.now,
            server_addr(),
            None,
        )
        .expect("client config is valid");
        self.client = Side::new("client", client_addr(), mtu);
        self.client.conn = Some(conn);
        // The previous attempt is over; its failure is history on the server side too.
        self.server.failed = None;
        self.server.closed = None;
        self.server.alerts.clear();
        self.client.drain_events(self.now);
    }

    /// Delivers (in order) every datagram held by the client→server channel.
    pub fn release_held_c2s(&mut self) {
        for d in std::mem::take(&mut self.c2s.held) {
            let from = self.client.addr;
            self.deliver_to_server(from, &d);
        }
        self.flush();
    }

    /// Delivers (in order) every datagram held by the server→client channel.
    pub fn release_held_s2c(&mut self) {
        for d in std::mem::take(&mut self.s2c.held) {
            self.deliver_to_client(&d);
        }
        self.flush();
    }

    /// Every epoch-1 record either side ever put on the wire has a distinct sequence number
    /// per direction: no (key, nonce) pair is used twice, retransmissions and the data plane's
    /// records included.
    pub fn assert_no_epoch1_sequence_reuse(&self) {
        for (name, chan) in [("client", &self.c2s), ("server", &self.s2c)] {
            let mut seen = std::collections::BTreeSet::new();
            for d in &chan.log {
                for r in super::wire::split_records(d).0 {
                    if r.epoch == 1 {
                        assert!(
                            seen.insert(r.sequence),
                            "{name} reused epoch-1 sequence {} (nonce reuse)",
                            r.sequence
                        );
                    }
                }
            }
        }
    }

    /// Virtual time since the start.
    pub fn elapsed(&self) -> Duration {
        self.now - self.start
    }

    /// The virtual wall clock: [`test_wall`] at the start, advancing with the virtual time.
    pub fn wall(&self) -> UnixTime {
        UnixTime::since_unix_epoch(Duration::from_secs(test_wall().as_secs()) + self.elapsed())
    }

    pub fn both_ready(&self) -> bool {
        self.client.is_ready() && self.server.is_ready()
    }

    pub fn any_failed(&self) -> bool {
        self.client.failed.is_some() || self.server.failed.is_some()
    }

    /// Sends every queued datagram of both engines into the channels.
    fn pump_transmits(&mut self) -> bool {
        let mut progress = false;
        let now = self.now;
        let at = now - self.start;
        for (side, chan, dest) in [
            (&mut self.client, &mut self.c2s, server_addr()),
            (&mut self.server, &mut self.s2c, client_addr()),
        ] {
            let Some(conn) = side.conn.as_mut() else {
                continue;
            };
            while let Some(t) = conn.poll_transmit(now, &mut self.buf) {
                progress = true;
                assert!(
                    t.len <= side.mtu,
                    "{} sent a {}-byte datagram, MTU is {}",
                    side.name,
                    t.len,
                    side.mtu
                );
                assert_eq!(
                    t.destination, dest,
                    "{} sent to the wrong address",
                    side.name
                );
                assert!(t.segment_size.is_none() || t.segment_size.is_some_and(|s| s > 0));
                let bytes = &self.buf[..t.len];
                side.sent.push(Sent {
                    at,
                    bytes: bytes.to_vec(),
                });
                chan.send(now, bytes);
            }
            side.drain_events(now);
        }
        progress
    }

    /// Hands a datagram that arrived for the server to the acceptor or the server engine.
    pub fn deliver_to_server(&mut self, from: SocketAddr, datagram: &[u8]) {
        let now = self.now;
        let live =
            from == self.client.addr && self.server.conn.as_ref().is_some_and(|c| !c.is_finished());
        if live {
            let wall = self.wall();
            route(&mut self.server, now, wall, from, datagram);
            self.server.drain_events(now);
            return;
        }
        self.acceptor_bytes_in += datagram.len();
        match self
            .acceptor
            .handle_datagram(now, from, datagram, &mut self.buf)
        {
            AcceptOutcome::Reply(t) => {
                assert_eq!(t.destination, from);
                self.acceptor_replies += 1;
                self.acceptor_bytes_out += t.len;
                if from == self.client.addr {
                    let bytes = self.buf[..t.len].to_vec();
                    self.server.sent.push(Sent {
                        at: now - self.start,
                        bytes: bytes.clone(),
                    });
                    self.s2c.send(now, &bytes);
                }
            }
            AcceptOutcome::Drop(reason) => self.acceptor_drops.push(reason),
            AcceptOutcome::Accept(hello) => {
                assert_eq!(hello.peer(), from);
                if from != self.client.addr {
                    // A spoofed address got through the cookie check: never expected.
                    panic!("acceptor accepted a ClientHello from {from}");
                }
                self.accepted += 1;
                let rng = SeededRng::new(
                    self.seed
                        .wrapping_mul(7)
                        .wrapping_add(2)
                        .wrapping_add(1000 * self.accepted as u64),
                );
                let conn = Connection::server(
                    Arc::clone(&self.server_config),
                    Box::new(rng),
                    now,
                    self.wall(),
                    hello,
                )
                .expect("server config is valid");
                // A new engine replaces a dead one; the data plane keys of an old session stay
                // until the new one hands over its own. The old engine's outcome is history.
                self.server.conn = Some(conn);
                self.server.failed = None;
                self.server.closed = None;
                self.server.alerts.clear();
                self.server.drain_events(now);
            }
        }
    }

    /// Hands a datagram to the client (engine and data plane).
    pub fn deliver_to_client(&mut self, datagram: &[u8]) {
        let now = self.now;
        let wall = self.wall();
        route(&mut self.client, now, wall, server_addr(), datagram);
        self.client.drain_events(now);
    }

    /// Delivers everything due now and sends everything queued, until nothing moves.
    pub fn flush(&mut self) {
        loop {
            let mut progress = self.pump_transmits();
            while let Some(d) = self.c2s.poll_arrival(self.now) {
                progress = true;
                let from = self.client.addr;
                self.deliver_to_server(from, &d);
            }
            while let Some(d) = self.s2c.poll_arrival(self.now) {
                progress = true;
                self.deliver_to_client(&d);
            }
            if !progress {
                return;
            }
            self.bump();
        }
    }

    fn bump(&mut self) {
        self.steps += 1;
        assert!(
            self.steps < MAX_STEPS,
            "pair made no progress in virtual time (livelock)"
        );
    }

    /// The next instant anything happens.
    pub fn next_wakeup(&self) -> Option<Instant> {
        [
            self.c2s.next_arrival(),
            self.s2c.next_arrival(),
            self.client
                .conn
                .as_ref()
                .filter(|c| !c.is_finished())
                .and_then(Connection::poll_timeout),
            self.server
                .conn
                .as_ref()
                .filter(|c| !c.is_finished())
                .and_then(Connection::poll_timeout),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Fires the timers that are due.
    fn fire_timers(&mut self) {
        let now = self.now;
        for side in [&mut self.client, &mut self.server] {
            if let Some(conn) = side.conn.as_mut()
                && conn.poll_timeout().is_some_and(|t| t <= now)
            {
                conn.handle_timeout(now);
                side.drain_events(now);
            }
        }
        // Cookie secret rotation (timer-driven, like the control thread does it).
        if self.acceptor.poll_timeout().is_some_and(|t| t <= now) {
            let mut rng = SeededRng::new(self.seed ^ (now - self.start).as_nanos() as u64);
            self.acceptor.handle_timeout(now, &mut rng);
        }
    }

    /// Runs until `done` holds or the virtual clock passes `start + limit`, or nothing is
    /// left to happen. Returns whether `done` held.
    pub fn drive_until(&mut self, limit: Duration, mut done: impl FnMut(&Pair) -> bool) -> bool {
        let deadline = self.start + limit;
        loop {
            self.flush();
            if done(self) {
                return true;
            }
            let Some(next) = self.next_wakeup() else {
                return false;
            };
            if next > deadline {
                self.now = self.now.max(deadline);
                return false;
            }
            self.now = self.now.max(next);
            self.fire_timers();
            self.bump();
        }
    }

    /// Runs until both sides have keys (or `limit`). Returns whether they do.
    pub fn handshake(&mut self, limit: Duration) -> bool {
        self.drive_until(limit, |p| p.both_ready() || p.any_failed()) && self.both_ready()
    }

    /// Runs the handshake to completion within `limit` and checks the keys match; on failure
    /// panics with `context`, both sides' states and their errors.
    pub fn assert_handshake(&mut self, limit: Duration, context: impl std::fmt::Display) {
        assert!(
            self.handshake(limit),
            "{context}: handshake did not complete within {limit:?}: client {} {:?} / server {:?} {:?}",
            self.client.conn().state_name(),
            self.client.failed,
            self.server.conn.as_ref().map(|c| c.state_name()),
            self.server.failed
        );
        self.assert_keys_match();
    }

    /// Advances the virtual clock by `d`, handling everything on the way.
    pub fn advance(&mut self, d: Duration) {
        let until = self.now + d;
        let limit = until - self.start;
        self.drive_until(limit, |_| false);
        self.now = self.now.max(until);
        self.flush();
    }

    /// Asserts both sides completed with the same suite and matching keys: a record sealed by
    /// each side opens on the other, and the RFC 5705 exporters agree.
    pub fn assert_keys_match(&mut self) {
        let c_info = self.client.info.as_ref().expect("client has keys");
        let s_info = self.server.info.as_ref().expect("server has keys");
        assert_eq!(c_info.suite, s_info.suite, "suites differ");
        assert_eq!(c_info.peer, self.server.addr);
        assert_eq!(s_info.peer, self.client.addr);
        let mut a = [0u8; 32];
        let mut b = [0u8; 32];
        c_info
            .exporter
            .export(b"EXPORTER-h5-test", None, &mut a)
            .expect("client export");
        s_info
            .exporter
            .export(b"EXPORTER-h5-test", None, &mut b)
            .expect("server export");
        assert_eq!(a, b, "exporters differ");
        assert_ne!(a, [0u8; 32]);
        let (c, s) = (
            self.client.data.as_mut().expect("client keys"),
            self.server.data.as_mut().expect("server keys"),
        );
        let msg = b"client to server, sealed with the handed-over keys";
        let rec = c.seal(msg);
        assert_eq!(
            s.open(&rec).as_deref(),
            Some(&msg[..]),
            "server cannot open client record"
        );
        let msg = b"server to client";
        let rec = s.seal(msg);
        assert_eq!(
            c.open(&rec).as_deref(),
            Some(&msg[..]),
            "client cannot open server record"
        );
    }

    /// Sends application data from the client through the channel (data plane path).
    pub fn client_send_app(&mut self, data: &[u8]) {
        let rec = self.client.data.as_mut().expect("client keys").seal(data);
        self.c2s.send(self.now, &rec);
    }

    /// Sends application data from the server through the channel (data plane path).
    pub fn server_send_app(&mut self, data: &[u8]) {
        let rec = self.server.data.as_mut().expect("server keys").seal(data);
        self.s2c.send(self.now, &rec);
    }
}

/// The shard's split: application data to the data plane keys, every other record to the
/// engine (in one datagram, in order).
fn route(side: &mut Side, now: Instant, wall: UnixTime, from: SocketAddr, datagram: &[u8]) {
    let Some(data) = side.data.as_mut() else {
        if let Some(conn) = side.conn.as_mut() {
            conn.handle_datagram(now, wall, from, datagram);
        }
        return;
    };
    let mut rest = Vec::with_capacity(datagram.len());
    let ranges = record_ranges(datagram);
    let end = ranges.last().map_or(0, |r| r.end);
    for r in ranges {
        let rec = &datagram[r];
        if rec[0] == CT_APPLICATION_DATA {
            match data.open(rec) {
                Some(p) => side.app_in.push(p),
                None => side.app_rejected += 1,
            }
        } else {
            rest.extend_from_slice(rec);
        }
    }
    rest.extend_from_slice(&datagram[end..]);
    if !rest.is_empty()
        && let Some(conn) = side.conn.as_mut()
    {
        conn.handle_datagram(now, wall, from, &rest);
    }
}
