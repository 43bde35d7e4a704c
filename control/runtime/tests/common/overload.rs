//! What the overload tests share: DTLS 1.2 clients of our engine driven against the
//! [`Daemon`] on its virtual clock (real clients and established sessions), spoofed
//! 127.0.0.0/8 sources, and one daemon turn that hands each answer to its peer.

// Each test binary uses a subset of these helpers.
#![allow(dead_code)]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use control::{CipherSuite, Config, Connection, Event};
use dataplane::record::{ContentType, DTLS_1_2, HEADER_LEN, Sealer};
use dtls_crypto::SeededRng;
use dtls_proto::ProtocolVersion;

use dtls_runtime::ControlStats;
use dtls_shard::ShardStats;

use super::daemon::Daemon;
use super::{test_wall, verifier};

// The load both overload tests put on the daemon.

/// Datagrams the control loop takes from the shard per turn (the default inbound budget).
pub const CAPACITY: usize = 256;
/// Established sessions, each sending `RECORDS_PER_TURN` records every turn.
pub const ESTABLISHED: usize = 8;
pub const RECORDS_PER_TURN: usize = 4;
/// Real clients that start their handshakes when the overload does.
pub const REAL: usize = 16;
/// Overloaded turns, `TICK` of virtual time apart (30 s of overload).
pub const OVERLOAD_TURNS: u32 = 600;
pub const TICK: Duration = Duration::from_millis(50);
/// The cap on the memory the shard's handshake stages hold: the fair stage's 2 MiB and the
/// admitted lane's quarter of that.
pub const STAGE_CAP: u64 = 2 * 1024 * 1024 + 2 * 1024 * 1024 / 4;

/// The daemon's address as its clients see it.
pub const SERVER: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 4433);

/// A DTLS 1.2 client of ours (ECDHE-ECDSA, AES-128-GCM) toward [`SERVER`].
pub fn client(seed: u64, now: Instant) -> Connection {
    let config = Config {
        cipher_suites: vec![CipherSuite::EcdheEcdsaAes128GcmSha256],
        versions: vec![ProtocolVersion::Dtls1_2],
        server_name: Some("localhost".into()),
        ..Config::new(verifier())
    };
    Connection::client(
        Arc::new(config),
        Box::new(SeededRng::new(seed)),
        now,
        SERVER,
        None,
    )
    .expect("client config is valid")
}

/// A client of ours at `addr`; its record sealer once its handshake completed.
pub struct Peer {
    pub addr: SocketAddr,
    pub conn: Connection,
    pub sealer: Option<Sealer>,
    /// The overloaded turn in which it completed (`None`: before or after the overload).
    pub done_in: Option<u32>,
}

impl Peer {
    pub fn new(addr: SocketAddr, seed: u64, now: Instant) -> Self {
        Self {
            addr,
            conn: client(seed, now),
            sealer: None,
            done_in: None,
        }
    }

    /// Its datagrams (flights, retransmissions on its timer) into the shard.
    pub fn send(&mut self, daemon: &mut Daemon, now: Instant) {
        if self.conn.poll_timeout().is_some_and(|t| t <= now) {
            self.conn.handle_timeout(now);
        }
        let mut buf = vec![0u8; 4096];
        while let Some(t) = self.conn.poll_transmit(now, &mut buf) {
            daemon.receive(now, self.addr, &buf[..t.len]);
        }
    }

    pub fn handle(&mut self, now: Instant, datagram: &[u8], turn: Option<u32>) {
        self.conn
            .handle_datagram(now, test_wall(), SERVER, datagram);
        while let Some(event) = self.conn.poll_event() {
            if let Event::KeysReady(keys) = event {
                let (_, write) = keys.records.into_dtls12().expect("DTLS 1.2 keys");
                self.sealer = Some(
                    Sealer::new(write.epoch, write.key, write.next_sequence)
                        .expect("sealer from KeysReady"),
                );
                self.done_in = turn;
            }
        }
    }

    /// One application-data record of its session.
    pub fn record(&mut self, payload: &[u8]) -> Vec<u8> {
        let sealer = self.sealer.as_mut().expect("established");
        let offset = sealer.plaintext_offset();
        let mut record = vec![0u8; HEADER_LEN + sealer.overhead() + payload.len()];
        record[offset..offset + payload.len()].copy_from_slice(payload);
        let n = sealer
            .seal(
                ContentType::ApplicationData,
                DTLS_1_2,
                &mut record,
                payload.len(),
            )
            .expect("seal");
        record.truncate(n);
        record
    }
}

/// Spoofed source `i`: 127.x.y.z (never 127.0.0.1), its own port.
pub fn spoofed(i: u32) -> SocketAddr {
    let ip = Ipv4Addr::from(0x7f00_0000 | (i % 0x00ff_fff0 + 2));
    SocketAddr::new(IpAddr::V4(ip), 10_000 + (i % 50_000) as u16)
}

/// One turn of the daemon; what it sends goes to the peer it is for (a spoofed source's
/// answers are counted and go nowhere).
pub fn turn(daemon: &mut Daemon, peers: &mut [Peer], now: Instant, at: Option<u32>) -> u64 {
    let mut to_peers = Vec::new();
    let mut to_spoofed = 0;
    daemon.turn(now, |to, payload| {
        match peers.iter().position(|p| p.addr == to) {
            Some(i) => to_peers.push((i, payload.to_vec())),
            None => to_spoofed += 1,
        }
    });
    for (i, d) in to_peers {
        peers[i].handle(now, &d, at);
    }
    to_spoofed
}

/// Real client `i`'s address: 127.0.0.1, its own port.
pub fn local(i: usize) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 20_000 + i as u16)
}

/// `established` sessions of clients of ours, completed at `start` before anything else,
/// then `real` more clients that have not sent anything yet (the overload's real
/// clients), in that order.
pub fn established_then_real(
    daemon: &mut Daemon,
    start: Instant,
    established: usize,
    real: usize,
) -> Vec<Peer> {
    let mut peers: Vec<Peer> = (0..established)
        .map(|i| Peer::new(local(i), i as u64 + 1, start))
        .collect();
    for _ in 0..16 {
        for p in &mut peers {
            p.send(daemon, start);
        }
        turn(daemon, &mut peers, start, None);
    }
    assert!(
        peers.iter().all(|p| p.sealer.is_some()),
        "established first"
    );
    assert_eq!(daemon.ctl.installed_sessions(), established);
    peers.extend((0..real).map(|i| Peer::new(local(established + i), 100 + i as u64, start)));
    peers
}

/// A first ClientHello of a client of ours (no cookie), as one datagram.
pub fn first_hello(now: Instant) -> Vec<u8> {
    let mut c = client(7, now);
    let mut buf = vec![0u8; 4096];
    let t = c.poll_transmit(now, &mut buf).expect("a ClientHello");
    buf[..t.len].to_vec()
}

/// The bulk traffic of overloaded turn `t`: `per_turn` records from each established
/// session; returns how many were sent.
pub fn send_bulk(
    daemon: &mut Daemon,
    established: &mut [Peer],
    now: Instant,
    t: u32,
    per_turn: usize,
) -> u64 {
    let mut sent = 0;
    for (i, p) in established.iter_mut().enumerate() {
        for r in 0..per_turn {
            let record = p.record(format!("session {i} turn {t} record {r}").as_bytes());
            daemon.receive(now, p.addr, &record);
            sent += 1;
        }
    }
    sent
}

/// No record of a session was dropped between `before` and `now` (replays, bad tags,
/// unknown sessions, a full transmit batch).
pub fn assert_no_session_drops(before: &ShardStats, now: &ShardStats) {
    for drop in [
        now.drop_replay - before.drop_replay,
        now.drop_bad_tag - before.drop_bad_tag,
        now.drop_unknown_session - before.drop_unknown_session,
        now.drop_tx_full - before.drop_tx_full,
    ] {
        assert_eq!(drop, 0, "{now:?}");
    }
}

/// What an overload left in the counters, against their values before it.
pub struct Outcome {
    /// The overloaded turns in which each real client that completed did so.
    pub during: Vec<u32>,
    pub stats: ShardStats,
    pub control: ControlStats,
    /// Handshake datagrams dropped in the shard's fair stage.
    pub shed_stage: u64,
    /// Cookie-verified ClientHellos control shed before any engine.
    pub shed_control: u64,
    /// Engines started.
    pub started: u64,
}

/// The counters after the overload, `before` and `control_before` taken before it; `peers`
/// after the [`ESTABLISHED`] sessions are the real clients.
pub fn outcome(
    daemon: &mut Daemon,
    peers: &[Peer],
    before: &ShardStats,
    control_before: &ControlStats,
) -> Outcome {
    let during = peers[ESTABLISHED..]
        .iter()
        .filter_map(|p| p.done_in)
        .collect();
    let stats = daemon.shard_stats();
    let control = daemon.ctl.counters().snapshot();
    Outcome {
        during,
        shed_stage: stats.drop_handshake_overflow - before.drop_handshake_overflow,
        shed_control: control.handshakes_shed - control_before.handshakes_shed,
        started: control.handshakes_started - control_before.handshakes_started,
        stats,
        control,
    }
}
