//! A blocking-socket driver for the engine over real UDP (interop tests).
//!
//! It does what the control thread and a shard will do, minus batching: loops
//! `poll_transmit` → `send_to`, `recv_from` (with a read timeout) → `handle_datagram`,
//! `handle_timeout` when `poll_timeout` is due, on the real clock. After KeysReady it seals
//! and opens application data with `dataplane::record` and keeps feeding every other record
//! (retransmitted flights, alerts) to the engine. Every wait has a deadline.

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};

use control::crypto::SystemRng;
use control::crypto::pki_types::UnixTime;
use control::{
    AcceptOutcome, Acceptor, AcceptorConfig, AlertDescription, AlertLevel, Config, Connection,
    Event, HandshakeError,
};

use dataplane::record::ReplayWindow;
use dataplane::record::v13::{MixedKind, MixedRecords, Opener13, Sealer13};
use dtls_proto::ProtocolVersion;

use super::fixtures::{DataKeys, DataKeys13, SessionInfo, install_keys, install_keys13};
use super::wire::{CT_APPLICATION_DATA, record_ranges};

const POLL: Duration = Duration::from_millis(10);

/// One engine on one real UDP socket.
#[derive(Debug)]
pub struct UdpEndpoint {
    pub sock: UdpSocket,
    pub peer: SocketAddr,
    pub conn: Connection,
    pub mtu: usize,
    pub data: Option<DataKeys>,
    /// The DTLS 1.3 data plane, once a 1.3 handshake completed.
    pub data13: Option<DataKeys13>,
    pub info: Option<SessionInfo>,
    pub failed: Option<HandshakeError>,
    pub alerts: Vec<(AlertLevel, AlertDescription)>,
    pub closed: Option<bool>,
    /// Application data received, in order.
    pub app_in: Vec<Vec<u8>>,
    pub datagrams_out: usize,
    pub datagrams_in: usize,
    /// Size of the largest datagram received from the peer (after the acceptor).
    pub largest_datagram_in: usize,
    /// DTLS 1.3 KeyUpdate events applied to the data plane.
    pub key_updates: usize,
    buf: Vec<u8>,
}

fn bind_loopback() -> UdpSocket {
    let sock = UdpSocket::bind("127.0.0.1:0").expect("bind loopback UDP socket");
    sock.set_read_timeout(Some(POLL)).expect("set read timeout");
    sock
}

impl UdpEndpoint {
    fn new(sock: UdpSocket, peer: SocketAddr, conn: Connection, mtu: usize) -> Self {
        Self {
            sock,
            peer,
            conn,
            mtu,
            data: None,
            data13: None,
            info: None,
            failed: None,
            alerts: Vec::new(),
            closed: None,
            app_in: Vec::new(),
            datagrams_out: 0,
            datagrams_in: 0,
            largest_datagram_in: 0,
            key_updates: 0,
            buf: vec![0u8; 65_536],
        }
    }

    /// A client on a fresh loopback socket, handshake started.
    pub fn client(config: Config, server: SocketAddr) -> Self {
        Self::client_resuming(config, server, None)
    }

    /// [`Self::client`] offering `ticket` for resumption.
    pub fn client_resuming(
        config: Config,
        server: SocketAddr,
        ticket: Option<control::SessionTicket>,
    ) -> Self {
        let mtu = config.mtu;
        let conn = Connection::client(
            Arc::new(config),
            Box::new(SystemRng::new()),
            Instant::now(),
            server,
            ticket,
        )
        .expect("client config is valid");
        Self::new(bind_loopback(), server, conn, mtu)
    }

    /// A loopback socket for a server, to tell the peer its port before [`Self::accept`].
    pub fn server_socket() -> UdpSocket {
        bind_loopback()
    }

    /// Runs the stateless acceptor on `sock` until a cookie-verified ClientHello arrives,
    /// then returns the server engine for it.
    pub fn accept(config: Config, sock: UdpSocket, timeout: Duration) -> Result<Self, String> {
        Self::accept_with(config, AcceptorConfig::default(), sock, timeout)
    }

    /// [`Self::accept`] with acceptor `settings`.
    pub fn accept_with(
        config: Config,
        settings: AcceptorConfig,
        sock: UdpSocket,
        timeout: Duration,
    ) -> Result<Self, String> {
        let mtu = config.mtu;
        let config = Arc::new(config);
        let mut rng = SystemRng::new();
        let mut acceptor = Acceptor::new(Arc::clone(&config), settings, &mut rng, Instant::now())
            .expect("server config is valid");
        let deadline = Instant::now() + timeout;
        let mut buf = vec![0u8; 65_536];
        let mut out = vec![0u8; 65_536];
        let mut replies = 0;
        while Instant::now() < deadline {
            let (n, from) = match sock.recv_from(&mut buf) {
                Ok(x) => x,
                // EINTR: a signal (e.g. SIGCHLD from a peer process exiting) is no error.
                Err(e) if is_timeout(&e) || e.kind() == std::io::ErrorKind::Interrupted => {
                    continue;
                }
                Err(e) => return Err(format!("recv_from: {e}")),
            };
            match acceptor.handle_datagram(Instant::now(), from, &buf[..n], &mut out) {
                AcceptOutcome::Reply(t) => {
                    assert!(
                        t.len <= n,
                        "acceptor amplified: {} B out for {n} B in",
                        t.len
                    );
                    send_to(&sock, &out[..t.len], t.destination)
                        .map_err(|e| format!("send_to: {e}"))?;
                    replies += 1;
                }
                AcceptOutcome::Drop(_) => {}
                AcceptOutcome::Accept(hello) => {
                    let conn = Connection::server(
                        Arc::clone(&config),
                        Box::new(SystemRng::new()),
                        Instant::now(),
                        UnixTime::now(),
                        hello,
                    )
                    .expect("server config is valid");
                    let mut ep = Self::new(sock, from, conn, mtu);
                    ep.datagrams_in = 1;
                    ep.drain_events();
                    return Ok(ep);
                }
            }
        }
        Err(format!(
            "no cookie-verified ClientHello within {timeout:?} ({replies} HelloVerifyRequests sent)"
        ))
    }

    fn drain_events(&mut self) {
        while let Some(ev) = self.conn.poll_event() {
            match ev {
                Event::KeysReady(keys) if keys.version == ProtocolVersion::Dtls1_3 => {
                    let (d, i) = install_keys13(*keys, Instant::now());
                    self.data13 = Some(d);
                    self.info = Some(i);
                }
                Event::KeysReady(keys) => {
                    let (d, i) = install_keys(*keys, Instant::now());
                    self.data = Some(d);
                    self.info = Some(i);
                }
                Event::AlertReceived { level, description } => {
                    self.alerts.push((level, description));
                }
                Event::HandshakeFailed(e) => self.failed = Some(e),
                Event::Closed { by_peer } => self.closed = Some(by_peer),
                Event::KeysUpdated(update) => {
                    // DTLS 1.3 KeyUpdate: the data plane moves to the new epoch(s).
                    let update = *update;
                    if let Some(data) = self.data13.as_mut() {
                        if let Some(read) = update.read {
                            data.update_read(Opener13::new(
                                read.epoch,
                                read.keys,
                                ReplayWindow::new(ReplayWindow::DEFAULT_SIZE),
                            ));
                        }
                        if let Some(write) = update.write {
                            data.sealer = Sealer13::new(write.epoch, write.keys)
                                .with_next_sequence(write.next_sequence);
                        }
                    }
                    self.key_updates += 1;
                }
                Event::ConnectionIds(_) => {}
            }
        }
    }

    fn flush(&mut self) {
        let now = Instant::now();
        while let Some(t) = self.conn.poll_transmit(now, &mut self.buf) {
            assert!(
                t.len <= self.mtu,
                "engine sent {} B, MTU {}",
                t.len,
                self.mtu
            );
            assert_eq!(t.destination, self.peer);
            // A send error (e.g. ICMP port unreachable from a dead peer) is like a loss.
            let _ = send_to(&self.sock, &self.buf[..t.len], t.destination);
            self.datagrams_out += 1;
        }
        self.drain_events();
    }

    /// One turn: send what is queued, wait up to `max_wait` for a datagram, handle it and
    /// any due timer.
    pub fn turn(&mut self, max_wait: Duration) {
        self.flush();
        let wait = match self.conn.poll_timeout() {
            Some(t) => t
                .saturating_duration_since(Instant::now())
                .clamp(Duration::from_millis(1), max_wait),
            None => max_wait,
        };
        let _ = self
            .sock
            .set_read_timeout(Some(wait.max(Duration::from_millis(1))));
        let mut rx = vec![0u8; 65_536];
        match self.sock.recv_from(&mut rx) {
            Ok((n, from)) if from == self.peer => {
                self.datagrams_in += 1;
                self.largest_datagram_in = self.largest_datagram_in.max(n);
                self.handle_datagram(&rx[..n]);
            }
            _ => {}
        }
        let now = Instant::now();
        if self.conn.poll_timeout().is_some_and(|t| t <= now) {
            self.conn.handle_timeout(now);
        }
        self.flush();
    }

    /// The shard's split: application data to the data plane keys, the rest to the engine.
    fn handle_datagram(&mut self, datagram: &[u8]) {
        let now = Instant::now();
        if let Some(data) = self.data13.as_mut() {
            // DTLS 1.3: protected application data to the data plane, everything else
            // (ACKs, alerts, retransmitted handshake records) to the engine.
            let mut rest = Vec::new();
            for record in MixedRecords::new(datagram, data.local_cid.len()) {
                match (record.kind, data.open(record.bytes)) {
                    (MixedKind::Ciphertext(_), Some(plaintext)) => self.app_in.push(plaintext),
                    _ => rest.extend_from_slice(record.bytes),
                }
            }
            if !rest.is_empty() {
                self.conn
                    .handle_datagram(now, UnixTime::now(), self.peer, &rest);
            }
            self.drain_events();
            return;
        }
        let Some(data) = self.data.as_mut() else {
            self.conn
                .handle_datagram(now, UnixTime::now(), self.peer, datagram);
            self.drain_events();
            return;
        };
        let mut rest = Vec::new();
        if data.local_cid_len > 0 {
            // RFC 9146: the peer's protected records carry our CID (tls12_cid).
            use dataplane::record::v13::{MixedKind, MixedRecords};
            for r in MixedRecords::new(datagram, data.local_cid_len) {
                match r.kind {
                    MixedKind::Dtls12Cid => match data.open_any(r.bytes) {
                        Some((dataplane::record::ContentType::ApplicationData, p)) => {
                            self.app_in.push(p)
                        }
                        _ => rest.extend_from_slice(r.bytes),
                    },
                    _ => rest.extend_from_slice(r.bytes),
                }
            }
            if !rest.is_empty() {
                self.conn
                    .handle_datagram(now, UnixTime::now(), self.peer, &rest);
            }
            self.drain_events();
            return;
        }
        let ranges = record_ranges(datagram);
        for r in ranges {
            let rec = &datagram[r];
            if rec[0] == CT_APPLICATION_DATA {
                if let Some(p) = data.open(rec) {
                    self.app_in.push(p);
                }
            } else {
                rest.extend_from_slice(rec);
            }
        }
        if !rest.is_empty() {
            self.conn
                .handle_datagram(now, UnixTime::now(), self.peer, &rest);
        }
        self.drain_events();
    }

    /// Drives until KeysReady, failure or `timeout`.
    pub fn handshake(&mut self, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        while self.data.is_none()
            && self.data13.is_none()
            && self.failed.is_none()
            && Instant::now() < deadline
        {
            self.turn(POLL);
        }
        if self.data.is_some() || self.data13.is_some() {
            return Ok(());
        }
        Err(format!(
            "handshake did not complete: state {}, failed {:?}, alerts {:?}, {} datagrams out / {} in",
            self.conn.state_name(),
            self.failed,
            self.alerts,
            self.datagrams_out,
            self.datagrams_in
        ))
    }

    /// Sends one application-data record.
    pub fn send_app(&mut self, data: &[u8]) {
        let rec = match self.data13.as_mut() {
            Some(data13) => data13.seal(data),
            None => self.data.as_mut().expect("keys ready").seal(data),
        };
        send_to(&self.sock, &rec, self.peer).expect("send application data");
    }

    /// All application data received so far, concatenated.
    pub fn app_bytes(&self) -> Vec<u8> {
        self.app_in.concat()
    }

    /// Keeps driving until the concatenated application data contains `needle`.
    pub fn wait_app(&mut self, needle: &[u8], timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            let got = self.app_bytes();
            if got.windows(needle.len()).any(|w| w == needle) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            self.turn(POLL);
        }
    }

    /// Drives for `d` (answering retransmissions and alerts).
    pub fn run_for(&mut self, d: Duration) {
        let deadline = Instant::now() + d;
        while Instant::now() < deadline {
            self.turn(POLL);
        }
    }

    /// RFC 5705 exporter output.
    pub fn export(&self, label: &str, len: usize) -> Vec<u8> {
        let mut out = vec![0u8; len];
        self.info
            .as_ref()
            .expect("keys ready")
            .exporter
            .export(label.as_bytes(), None, &mut out)
            .expect("export");
        out
    }
}

/// `send_to`, retried when a signal interrupts it.
fn send_to(sock: &UdpSocket, buf: &[u8], dest: SocketAddr) -> std::io::Result<usize> {
    loop {
        match sock.send_to(buf, dest) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

fn is_timeout(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
    )
}
