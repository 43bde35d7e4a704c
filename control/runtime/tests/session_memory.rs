//! B7, control plane: what the control loop keeps per established session once its
//! handshake is over, measured with a counting allocator over real handshakes (a real client
//! engine per session, ECDHE-ECDSA with the test PKI's P-256 certificate, no client
//! certificate, no CIDs) run through [`ControlThread`] against in-memory shard queues.
//!
//! Three figures per version, each bytes still held on the Rust heap per session:
//! - `in grace`: every handshake just completed (a DTLS 1.2 engine is kept
//!   [`RuntimeConfig::completed_grace`] to answer a retransmitted Finished);
//! - `settled`: after the grace period (1.2 engines dropped; a DTLS 1.3 engine stays for the
//!   session's life, RFC 9147 §8/§9: it answers KeyUpdate, ACKs and NewConnectionId);
//! - what is left once every session is closed (nothing may stay behind).
//!
//! The client engines and the shard commands are allocated and freed inside the measured
//! region, so only what the control loop keeps remains. aws-lc's own `malloc` (the AEAD
//! contexts of a 1.3 engine's keys) is not seen by the Rust allocator: the daemon's RSS
//! figure (`control/dtlsd/tests/session_rss.rs`) holds it. One test alone in its binary, so
//! nothing else moves the counts while it measures; it prints its figures (`--nocapture`).

mod common;

use std::alloc::System;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use control::{CipherSuite, Config, Connection};
use dataplane::record::ReplayWindow;
use dataplane::record::v13::{MixedKind, MixedRecords, Opener13, reconstruct_epoch};
use dtls_crypto::SeededRng;
use dtls_proto::{NamedGroup, ProtocolVersion};
use dtls_runtime::{ControlThread, RuntimeConfig};
use dtls_shard::{CloseReason, ControlInbound, SessionCounters, SessionId};
use dtls_shard::{ShardCommand, ShardQueues};
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};

use common::{test_wall, verifier};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

const SUITE: CipherSuite = CipherSuite::EcdheEcdsaAes128GcmSha256;
/// Sessions per version: enough that the tables' growth is spread, few enough for a debug
/// build (each is a full ECDHE-ECDSA handshake on both sides).
const SESSIONS: usize = 300;
const SERVER: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 4433);

/// Bounds on what the control loop keeps per settled session (heap bytes; measured here:
/// 1.2 670 B, 1.3 4143 B once settled, 8481 B before `Connection::settle` existed, see
/// docs/benchmarks.md B7). A regression that keeps a finished 1.2 engine, or a 1.3
/// engine's transcript, handshake keys, hello or flight per session, breaks them.
const BOUND_12: isize = 1024;
const BOUND_13: isize = 5 * 1024;
/// Bound per session while 1.2 engines are in their grace period (measured: 3.5 KiB).
const BOUND_12_GRACE: isize = 6 * 1024;

fn versions(v: ProtocolVersion) -> Vec<ProtocolVersion> {
    vec![v]
}

fn server_config(version: ProtocolVersion) -> Config {
    Config {
        cipher_suites: vec![SUITE],
        ..common::server_config(versions(version))
    }
}

fn client_config(version: ProtocolVersion) -> Arc<Config> {
    Arc::new(Config {
        cipher_suites: vec![SUITE],
        versions: versions(version),
        // One datagram per ClientHello.
        tls13_groups: vec![NamedGroup::X25519],
        server_name: Some("localhost".into()),
        ..Config::new(verifier())
    })
}

fn control(version: ProtocolVersion, now: Instant) -> (ControlThread, Arc<ShardQueues>) {
    common::control_thread(server_config(version), now, 256)
}

/// Session `i`'s address (one source each: the per-source caps never bind).
fn peer(i: usize) -> SocketAddr {
    let i = i as u32 + 1;
    SocketAddr::from((Ipv4Addr::from(0x0a00_0000 | (i & 0x00ff_ffff)), 40_000))
}

/// The shard's side of one session while its handshake runs: the read keys of a 1.3
/// session (to open the client's ACK of our NewSessionTicket and hand it up, as the shard's
/// relay does) and its handle.
#[derive(Default)]
struct Shard {
    session: Option<SessionId>,
    opener13: Option<Opener13>,
}

impl Shard {
    /// Runs control's commands: keys taken (and dropped, as if a shard held them),
    /// datagrams handed to the client.
    fn commands(&mut self, q: &ShardQueues, c: &mut Connection, now: Instant) {
        while let Some(cmd) = q.poll_command() {
            match cmd {
                ShardCommand::InstallKeys { session, .. } => self.session = Some(session),
                ShardCommand::InstallKeys13 { session, read, .. } => {
                    self.session = Some(session);
                    if let Some(r) = read {
                        self.opener13 = Some(
                            Opener13::new(r.epoch, r.keys, ReplayWindow::new(r.replay_window))
                                .with_next_expected(r.next_expected),
                        );
                    }
                }
                ShardCommand::Transmit { datagram, .. } => {
                    c.handle_datagram(now, test_wall(), SERVER, &datagram);
                    // As the shard does: the buffer goes back to the queues' pool.
                    q.recycle(datagram);
                }
                _ => {}
            }
        }
    }

    /// The client's datagrams as the shard forwards them: handshake datagrams whole, a 1.3
    /// session's post-handshake records opened and their plaintext handed up.
    fn client_sent(&mut self, c: &mut Connection, q: &ShardQueues, from: SocketAddr, now: Instant) {
        let mut buf = vec![0u8; 4096];
        while let Some(t) = c.poll_transmit(now, &mut buf) {
            let datagram = &buf[..t.len];
            let held = self.opener13.as_ref().map(Opener13::epoch);
            let whole = MixedRecords::new(datagram, 0).any(|r| match r.kind {
                MixedKind::Ciphertext(h) => reconstruct_epoch(h.epoch_bits, held).is_none(),
                _ => true,
            });
            if whole {
                q.push_inbound(ControlInbound::Handshake {
                    peer: from,
                    datagram: datagram.to_vec(),
                })
                .expect("inbound queue has room");
                continue;
            }
            let opener = self.opener13.as_mut().expect("held");
            for r in MixedRecords::new(datagram, 0) {
                let mut bytes = r.bytes.to_vec();
                let opened = opener
                    .open(&mut bytes, 0)
                    .expect("the client's record opens");
                q.push_inbound(ControlInbound::PostHandshake {
                    session: self.session.expect("installed"),
                    epoch: opened.epoch,
                    sequence: opened.sequence,
                    ack: opened.content_type == dataplane::record::v13::InnerContentType::Ack,
                    message: opened.plaintext.to_vec(),
                })
                .expect("inbound queue has room");
            }
        }
    }
}

/// One full handshake from `from`, run until neither side has anything left to say (a 1.3
/// server's NewSessionTicket acknowledged). Returns the session's handle.
fn handshake(
    ctl: &mut ControlThread,
    q: &ShardQueues,
    version: ProtocolVersion,
    from: SocketAddr,
    seed: u64,
    now: Instant,
) -> SessionId {
    let mut c = Connection::client(
        client_config(version),
        Box::new(SeededRng::new(seed)),
        now,
        SERVER,
        None,
    )
    .expect("client config is valid");
    let mut shard = Shard::default();
    for _ in 0..16 {
        shard.client_sent(&mut c, q, from, now);
        let busy = ctl.run_turn(now, test_wall());
        shard.commands(q, &mut c, now);
        if !busy && c.is_established() {
            break;
        }
    }
    assert!(c.is_established(), "client state {}", c.state_name());
    shard.session.expect("keys installed")
}

/// Heap bytes allocated and not freed since `region` began.
fn live(region: &Region<'_, System>) -> isize {
    let c = region.change();
    // stats_alloc already counts a realloc's growth in bytes_allocated (and its shrinking in
    // bytes_deallocated); bytes_reallocated is the same change again.
    c.bytes_allocated as isize - c.bytes_deallocated as isize
}

/// The shard's report that session `id` closed (as after the peer's close_notify).
fn closed(id: SessionId, peer: SocketAddr) -> ControlInbound {
    ControlInbound::SessionClosed {
        session: id,
        peer,
        reason: CloseReason::CloseNotify,
        stats: SessionCounters::default(),
    }
}

/// (bytes per session in grace, settled, left after closing all) for `version`.
fn measure(version: ProtocolVersion) -> (isize, isize, isize) {
    let now = Instant::now();
    let (mut ctl, q) = control(version, now);
    // One session first: lazily built state (the PKI, the acceptor's pool, first-use
    // tables) is not the sessions'.
    let first = handshake(&mut ctl, &q, version, peer(SESSIONS), 1, now);
    let later = now + RuntimeConfig::default().completed_grace + Duration::from_secs(1);
    ctl.run_turn(later, test_wall());
    while q.poll_command().is_some() {}

    let region = Region::new(GLOBAL);
    let mut ids = Vec::with_capacity(SESSIONS);
    for i in 0..SESSIONS {
        ids.push(handshake(
            &mut ctl,
            &q,
            version,
            peer(i),
            100 + i as u64,
            now,
        ));
    }
    // `ids` itself is the test's, not control's.
    let ours = (ids.capacity() * size_of::<SessionId>()) as isize;
    let in_grace = live(&region) - ours;
    assert_eq!(ctl.installed_sessions(), SESSIONS + 1);

    ctl.run_turn(later, test_wall());
    while q.poll_command().is_some() {}
    let settled = live(&region) - ours;
    let engines = ctl.handshakes();
    let expected_engines = if version == ProtocolVersion::Dtls1_3 {
        SESSIONS + 1
    } else {
        0
    };
    assert_eq!(
        engines, expected_engines,
        "engines kept after the grace period"
    );

    let peers = (0..SESSIONS).map(peer).chain([peer(SESSIONS)]);
    for (id, from) in ids.iter().copied().chain([first]).zip(peers) {
        q.push_inbound(closed(id, from))
            .expect("inbound queue has room");
        if q.inbound_len() >= 200 {
            ctl.run_turn(later, test_wall());
        }
    }
    let much_later = later + Duration::from_secs(60);
    for _ in 0..4 {
        ctl.run_turn(much_later, test_wall());
        while q.poll_command().is_some() {}
    }
    assert_eq!(ctl.installed_sessions(), 0);
    assert_eq!(ctl.handshakes(), 0);
    let left = live(&region) - ours;
    let n = SESSIONS as isize;
    (in_grace / n, settled / n, left / n)
}

#[test]
fn the_control_loop_keeps_a_bounded_few_bytes_per_settled_session() {
    let (g12, s12, l12) = measure(ProtocolVersion::Dtls1_2);
    let (g13, s13, l13) = measure(ProtocolVersion::Dtls1_3);
    println!(
        "size_of Connection {} B, SessionId {} B",
        size_of::<Connection>(),
        size_of::<SessionId>()
    );
    println!("control heap per session, {SESSIONS} sessions (bytes):");
    println!("version  in-grace  settled  after-close");
    println!("1.2      {g12:>8}  {s12:>7}  {l12:>11}");
    println!("1.3      {g13:>8}  {s13:>7}  {l13:>11}");
    assert!(g12 <= BOUND_12_GRACE, "1.2 in grace: {g12} B per session");
    assert!(s12 <= BOUND_12, "1.2 settled: {s12} B per session");
    assert!(s13 <= BOUND_13, "1.3 settled: {s13} B per session");
    assert!(s12 < g12, "the grace period's end frees the 1.2 engines");
    assert!(
        s13 + 2048 <= g13,
        "the grace period's end settles the 1.3 engines: {g13} B -> {s13} B"
    );
    // Closed sessions leave at most the tables' grown capacity behind (maps keep their
    // capacity; the settled 1.2 figure is that capacity too).
    assert!(
        l12 <= s12 && l13 <= BOUND_12,
        "after close: 1.2 {l12} B, 1.3 {l13} B per session"
    );
}
