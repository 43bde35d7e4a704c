//! The shard core in memory: no sockets, no poller, a virtual clock. Each test drives
//! [`ShardCore`] through its public calls and checks what it wrote into its output batches,
//! what it told control and what it counted.

mod common;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dataplane::record::{Aead, ContentType, Opener, ReplayWindow, Sealer};
use dtls_shard::{
    CloseReason, ControlInbound, Effects, FlowRef, HeartbeatPolicy, InstallError, OpenFlow,
    ReadKeys, RelayMode, SessionId, ShardCommand, ShardConfig, ShardCore, ShardCounters,
    ShardQueues, ShardStats, UpstreamPrefix, WriteKeys,
};

use common::key;

/// Upstream flows are plain numbers here; `fail` makes the next opens fail with that errno.
/// `peers`: whom each open was for, in order (failed ones too).
#[derive(Debug, Default)]
struct Flows {
    opened: u32,
    fail: Option<i32>,
    peers: Vec<SocketAddr>,
}

impl OpenFlow<u32> for Flows {
    fn open_flow(&mut self, peer: SocketAddr) -> io::Result<u32> {
        self.peers.push(peer);
        if let Some(errno) = self.fail {
            return Err(io::Error::from_raw_os_error(errno));
        }
        self.opened += 1;
        Ok(self.opened)
    }
}

/// The far end of one session: the DTLS peer (serve) or server (connect), with the record
/// state matching the keys [`Peer::install`] gives the core.
struct Peer {
    addr: SocketAddr,
    sealer: Sealer,
    opener: Opener,
    seed: u8,
}

impl Peer {
    fn new(n: u8) -> Self {
        let seed = n.wrapping_mul(2);
        Self {
            addr: SocketAddr::from(([192, 0, 2, n], 4000 + u16::from(n))),
            sealer: Sealer::new(1, key(seed), 0).expect("sealer"),
            opener: Opener::new(1, key(seed.wrapping_add(1)), ReplayWindow::new(128)),
            seed,
        }
    }

    fn handle(&self) -> SessionId {
        SessionId::new(u64::from(self.seed))
    }

    fn install(&self, heartbeat: HeartbeatPolicy) -> ShardCommand {
        ShardCommand::InstallKeys {
            session: self.handle(),
            peer: self.addr,
            read: ReadKeys {
                epoch: 1,
                key: key(self.seed),
                replay_window: 128,
            },
            write: WriteKeys {
                epoch: 1,
                key: key(self.seed.wrapping_add(1)),
                next_seq: 0,
            },
            heartbeat,
            cid: Vec::new(),
            peer_cid: Vec::new(),
            rrc: false,
            upstream: UpstreamPrefix::None,
        }
    }

    fn seal_as(&mut self, content_type: ContentType, plaintext: &[u8]) -> Vec<u8> {
        common::seal_record(&mut self.sealer, content_type, plaintext)
    }

    fn seal(&mut self, plaintext: &[u8]) -> Vec<u8> {
        self.seal_as(ContentType::ApplicationData, plaintext)
    }

    fn open(&mut self, mut record: Vec<u8>) -> (ContentType, Vec<u8>) {
        let opened = self
            .opener
            .open(&mut record)
            .expect("the core's record opens");
        (opened.content_type, opened.plaintext.to_vec())
    }
}

const BOTH_WAYS: HeartbeatPolicy = HeartbeatPolicy {
    answer: true,
    probe: true,
};

/// A core, its output batches and a virtual clock.
struct Harness {
    core: ShardCore<u32>,
    fx: Effects,
    flows: Flows,
    counters: ShardCounters,
    t0: Instant,
}

impl Harness {
    fn new(mode: RelayMode, tune: impl FnOnce(&mut ShardConfig)) -> Self {
        let mut config = ShardConfig::with_mode(mode, SocketAddr::from(([192, 0, 2, 200], 9)));
        tune(&mut config);
        let queues = Arc::new(ShardQueues::new(64, 64));
        Self {
            core: ShardCore::new(queues, config, 7, &[7; 32]),
            fx: Effects::new(64, 1472, false),
            flows: Flows::default(),
            counters: ShardCounters::default(),
            t0: Instant::now(),
        }
    }

    fn serve() -> Self {
        Self::new(RelayMode::Serve, |_| {})
    }

    fn at(&self, ms: u64) -> Instant {
        self.t0 + Duration::from_millis(ms)
    }

    fn command(&mut self, ms: u64, command: ShardCommand) {
        let now = self.at(ms);
        self.core
            .handle_command(now, command, &mut self.fx, &mut self.flows);
        self.core.end_commands(&mut self.fx);
    }

    fn datagram(&mut self, ms: u64, from: SocketAddr, datagram: &[u8]) {
        let now = self.at(ms);
        let mut datagram = datagram.to_vec();
        self.core
            .handle_datagram(now, from, &mut datagram, &mut self.fx, &mut self.flows);
    }

    fn on_flow(&mut self, ms: u64, flow: FlowRef, datagram: &[u8]) {
        let now = self.at(ms);
        let mut datagram = datagram.to_vec();
        self.core
            .handle_flow_datagram(now, flow, &mut datagram, &mut self.fx);
    }

    /// The datagrams queued on the shard socket since the last call, by destination.
    fn net(&mut self) -> Vec<(SocketAddr, Vec<u8>)> {
        let sent = self
            .fx
            .net
            .sends()
            .map(|s| (s.destination, s.payload.to_vec()))
            .collect();
        self.fx.net.clear();
        sent
    }

    /// The datagrams the core staged for upstream flows since the last call, each with its
    /// flow, as the driver would send them.
    fn upstream(&mut self) -> Vec<(u32, Vec<u8>)> {
        let mut sent = Vec::new();
        self.core
            .flush_flows(&mut self.fx, |flow, payload, segment| {
                assert!(segment.is_none(), "no GSO in these effects");
                sent.push((*flow, payload.to_vec()));
                Ok(payload.len())
            });
        sent
    }

    /// What the core told control since the last call.
    fn inbound(&mut self) -> Vec<ControlInbound> {
        self.core.pump();
        std::iter::from_fn(|| self.core.queues().poll_inbound()).collect()
    }

    fn stats(&mut self) -> ShardStats {
        self.core.publish(&self.counters);
        self.counters.snapshot()
    }

    /// The return-routability counters: (challenges sent, validated, failed).
    fn rrc_counts(&mut self) -> (u64, u64, u64) {
        let s = self.stats();
        (s.rrc_challenges_sent, s.rrc_validated, s.rrc_failed)
    }

    /// A check just validated `moved`: control heard that `session` moved there from
    /// `from`, the table followed, and it was the one check and the one move so far.
    fn assert_moved_after_one_check(
        &mut self,
        session: SessionId,
        from: SocketAddr,
        moved: SocketAddr,
    ) {
        assert_eq!(
            self.inbound(),
            vec![ControlInbound::PeerMoved {
                session,
                from,
                peer: moved,
            }]
        );
        let sessions = self.core.sessions();
        assert!(sessions.lookup(&from).is_none() && sessions.lookup(&moved).is_some());
        assert_eq!(self.rrc_counts(), (1, 1, 0));
        assert_eq!(self.stats().sessions_moved, 1);
    }

    /// The flow of `peer`'s session.
    fn flow_of(&self, peer: SocketAddr) -> FlowRef {
        let id = self.core.sessions().lookup(&peer).expect("a session");
        FlowRef::Session(id)
    }
}

#[test]
fn serve_relays_both_ways_in_memory() {
    let mut h = Harness::serve();
    let mut peer = Peer::new(1);
    h.command(0, peer.install(BOTH_WAYS));
    assert_eq!(h.fx.opened.len(), 1, "the session's flow is opened");
    let flow = h.flow_of(peer.addr);
    assert_eq!(h.fx.opened[0], flow);

    let record = peer.seal(b"to the backend");
    h.datagram(1, peer.addr, &record);
    assert_eq!(h.upstream(), vec![(1, b"to the backend".to_vec())]);

    h.on_flow(2, flow, b"from the backend");
    let net = h.net();
    assert_eq!(net.len(), 1);
    assert_eq!(net[0].0, peer.addr);
    assert_eq!(
        peer.open(net[0].1.clone()),
        (ContentType::ApplicationData, b"from the backend".to_vec())
    );
    let s = h.stats();
    assert_eq!((s.records_opened, s.records_sealed), (1, 1));
    assert_eq!((s.upstream_datagrams_out, s.upstream_datagrams_in), (1, 1));
    assert_eq!(s.sessions_active, 1);
    let session = h.core.sessions().find(&peer.addr).expect("session");
    assert_eq!(session.counters.plaintext_in, 14);
    assert_eq!(session.counters.plaintext_out, 16);
}

#[test]
fn session_views_show_each_sessions_traffic_and_idle_time() {
    let mut h = Harness::serve();
    let (mut a, b) = (Peer::new(1), Peer::new(2));
    h.command(0, a.install(BOTH_WAYS));
    h.command(0, b.install(BOTH_WAYS));
    let record = a.seal(b"twelve bytes");
    h.datagram(1_000, a.addr, &record);
    let flow = h.flow_of(a.addr);
    h.on_flow(2_000, flow, b"back");

    let mut views = Vec::new();
    h.core.session_views(h.at(5_000), &mut views);
    views.sort_by_key(|v| v.peer);
    assert_eq!(views.len(), 2);
    let (va, vb) = (&views[0], &views[1]);
    assert_eq!(va.peer, a.addr);
    assert_eq!(va.idle, Duration::from_secs(3));
    assert_eq!(
        (
            va.counters.records_opened,
            va.counters.records_sealed,
            va.counters.plaintext_in,
            va.counters.plaintext_out
        ),
        (1, 1, 12, 4)
    );
    assert!(!va.dtls13);
    assert_eq!(vb.peer, b.addr);
    assert_eq!(vb.idle, Duration::from_secs(5));
    assert_eq!(vb.counters, dtls_shard::SessionCounters::default());
    assert_ne!(va.session, vb.session);
}

#[test]
fn replayed_and_tampered_records_are_dropped_and_the_session_lives_on() {
    let mut h = Harness::serve();
    let mut peer = Peer::new(2);
    h.command(0, peer.install(BOTH_WAYS));
    let first = peer.seal(b"once");
    h.datagram(1, peer.addr, &first);
    h.datagram(2, peer.addr, &first);
    let mut tampered = peer.seal(b"flipped");
    let last = tampered.len() - 1;
    tampered[last] ^= 0x01;
    h.datagram(3, peer.addr, &tampered);
    let after = peer.seal(b"still here");
    h.datagram(4, peer.addr, &after);
    let delivered: Vec<Vec<u8>> = h.upstream().into_iter().map(|(_, p)| p).collect();
    assert_eq!(delivered, vec![b"once".to_vec(), b"still here".to_vec()]);
    let s = h.stats();
    assert_eq!((s.drop_replay, s.drop_bad_tag), (1, 1));
    assert_eq!(s.sessions_active, 1);
    assert!(h.inbound().is_empty(), "nothing for control");
}

#[test]
fn early_records_wait_for_keys_only_for_peers_control_names() {
    let mut h = Harness::serve();
    let mut named = Peer::new(3);
    let mut stranger = Peer::new(4);
    h.command(0, ShardCommand::ExpectKeys { peer: named.addr });
    let early = named.seal(b"first datagram of a resumed session");
    h.datagram(1, named.addr, &early);
    let spoofed = stranger.seal(b"nobody asked");
    h.datagram(1, stranger.addr, &spoofed);
    assert!(h.upstream().is_empty());
    let s = h.stats();
    assert_eq!((s.early_parked, s.drop_unknown_session), (1, 1));
    assert!(s.early_bytes > 0);

    h.command(2, named.install(BOTH_WAYS));
    assert_eq!(
        h.upstream(),
        vec![(1, b"first datagram of a resumed session".to_vec())]
    );
    let s = h.stats();
    assert_eq!((s.early_replayed, s.early_bytes), (1, 0));
}

#[test]
fn the_early_records_byte_budget_holds_and_parked_records_expire() {
    let mut named = Peer::new(15);
    let mut late = Peer::new(16);
    let first = named.seal(b"fits");
    let second = named.seal(b"also fits");
    let third = named.seal(b"one too many");
    let budget = first.len() + second.len();
    let mut h = Harness::new(RelayMode::Serve, |c| {
        c.early_bytes = budget;
        c.sweep_interval = Duration::from_secs(1);
    });
    h.command(0, ShardCommand::ExpectKeys { peer: named.addr });
    for record in [&first, &second, &third] {
        h.datagram(1, named.addr, record);
    }
    let s = h.stats();
    assert_eq!((s.early_parked, s.drop_unknown_session), (2, 1));
    assert_eq!(s.early_bytes, budget as u64);
    h.command(2, named.install(BOTH_WAYS));
    let delivered: Vec<Vec<u8>> = h.upstream().into_iter().map(|(_, p)| p).collect();
    assert_eq!(delivered, vec![b"fits".to_vec(), b"also fits".to_vec()]);
    assert_eq!(h.stats().early_bytes, 0);

    // A peer whose keys never come: its parked record is dropped after ten seconds of
    // virtual time (early::MAX_AGE), the budget freed and the drop counted.
    h.command(3_000, ShardCommand::ExpectKeys { peer: late.addr });
    let record = late.seal(b"keys never come");
    h.datagram(3_001, late.addr, &record);
    assert!(h.stats().early_bytes > 0);
    h.core.handle_timeout(h.at(12_000), &mut h.fx);
    assert!(h.stats().early_bytes > 0, "not yet ten seconds");
    h.core.handle_timeout(h.at(13_001), &mut h.fx);
    let s = h.stats();
    assert_eq!((s.early_bytes, s.drop_unknown_session), (0, 2));
    h.command(14_000, late.install(BOTH_WAYS));
    assert!(h.upstream().is_empty(), "nothing was replayed");
}

#[test]
fn connect_holds_at_most_the_pending_byte_budget_while_a_handshake_runs() {
    let mut h = Harness::new(RelayMode::Connect, |c| c.pending_bytes = 10);
    let mut server = Peer::new(17);
    let source = SocketAddr::from(([127, 0, 0, 1], 6010));
    h.datagram(0, source, b"12345");
    h.datagram(1, source, b"67890");
    h.datagram(2, source, b"x");
    let s = h.stats();
    assert_eq!((s.pending_bytes, s.drop_pending), (10, 1));
    h.command(3, server_install(&server, source));
    let sealed: Vec<Vec<u8>> = h
        .upstream()
        .into_iter()
        .map(|(_, record)| server.open(record).1)
        .collect();
    assert_eq!(sealed, vec![b"12345".to_vec(), b"67890".to_vec()]);
    assert_eq!(h.stats().pending_bytes, 0);
}

#[test]
fn handshake_datagrams_go_to_control_through_the_fair_stage() {
    let mut h = Harness::serve();
    let source = SocketAddr::from(([198, 51, 100, 1], 5000));
    // An epoch-0 handshake record header (type 22, DTLS 1.2, epoch 0, seq 0, length 1).
    let hello = [22, 254, 253, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1];
    h.datagram(0, source, &hello);
    let inbound = h.inbound();
    assert_eq!(
        inbound,
        vec![ControlInbound::Handshake {
            peer: source,
            datagram: hello.to_vec()
        }]
    );
    h.datagram(1, source, &[0xff; 3]);
    assert_eq!(h.stats().drop_malformed, 1);
}

/// A spoofed ClientHello flood fills the fair stage (and the control queue) and drops the
/// rest; a reachable client whose cookie-verified handshake control holds (`ExpectKeys`)
/// still gets its next flight to control, in the admitted lane, ahead of the 1024 datagrams
/// the stage holds. Before the lane, that flight was dropped like the flood's excess. A
/// noted peer that floods gets no more than one bucket of the lane.
#[test]
fn an_admitted_peers_flight_reaches_control_ahead_of_a_full_fair_stage() {
    let mut h = Harness::serve();
    let hello = [22, 254, 253, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1];
    for i in 0..3000u32 {
        let [_, a, b, c] = i.to_be_bytes();
        h.datagram(0, SocketAddr::from(([10, a, b, c], 4000)), &hello);
    }
    let flood = h.stats();
    assert!(flood.drop_handshake_overflow > 0, "{flood:?}");
    let client = SocketAddr::from(([198, 51, 100, 7], 5000));
    // Not yet admitted: its datagram meets the full stage like any other.
    h.datagram(1, client, &hello);
    assert_eq!(
        h.stats().drop_handshake_overflow,
        flood.drop_handshake_overflow + 1
    );
    // Control verified its cookie and started its handshake.
    h.command(2, ShardCommand::ExpectKeys { peer: client });
    let flight = [22, 254, 253, 0, 0, 0, 0, 0, 0, 0, 1, 0, 1, 2];
    h.datagram(3, client, &flight);
    let s = h.stats();
    assert_eq!(s.handshake_admitted, 1, "{s:?}");
    assert_eq!(s.drop_handshake_overflow, flood.drop_handshake_overflow + 1);
    // Control's first take is what the queue held before the client's flight came; the
    // next one starts with the flight, while about a thousand flood datagrams still wait.
    let first = h.inbound();
    assert!(!first.is_empty());
    assert!(
        !first
            .iter()
            .any(|m| matches!(m, ControlInbound::Handshake { peer, .. } if *peer == client))
    );
    let second = h.inbound();
    assert_eq!(
        second.first(),
        Some(&ControlInbound::Handshake {
            peer: client,
            datagram: flight.to_vec()
        })
    );
    assert!(h.stats().handshake_stage_bytes > 0, "the flood still waits");
    // An admitted peer flooding its own datagrams holds one bucket of the lane; the rest
    // overflows into the general stage (full here) and is dropped, counted.
    let before = h.stats();
    for _ in 0..500 {
        h.datagram(4, client, &flight);
    }
    let after = h.stats();
    assert!(
        after.handshake_admitted - before.handshake_admitted <= 64,
        "{after:?}"
    );
    assert!(after.drop_handshake_overflow > before.drop_handshake_overflow);
}

#[test]
fn heartbeat_requests_are_answered_with_the_same_payload() {
    let mut h = Harness::serve();
    let mut peer = Peer::new(5);
    h.command(0, peer.install(BOTH_WAYS));
    // RFC 6520 §4: type 1 (request), payload_length 4, payload, 16 bytes of padding.
    let mut request = vec![1, 0, 4, b'p', b'i', b'n', b'g'];
    request.extend_from_slice(&[0xaa; 16]);
    let record = peer.seal_as(ContentType::Heartbeat, &request);
    h.datagram(1, peer.addr, &record);
    let net = h.net();
    assert_eq!(net.len(), 1);
    let (content_type, response) = peer.open(net[0].1.clone());
    assert_eq!(content_type, ContentType::Heartbeat);
    assert_eq!(&response[..7], &[2, 0, 4, b'p', b'i', b'n', b'g']);
    assert_eq!(response.len(), 7 + 16);
    assert_eq!(h.stats().heartbeats_answered, 1);

    // A lying payload_length is dropped silently (RFC 6520 §4).
    let liar = peer.seal_as(ContentType::Heartbeat, &[1, 0xff, 0xff, 0, 0]);
    h.datagram(2, peer.addr, &liar);
    assert!(h.net().is_empty());
    assert_eq!(h.stats().drop_heartbeat, 1);
}

#[test]
fn keepalive_probes_a_silent_peer_and_closes_after_three_unanswered() {
    let mut h = Harness::new(RelayMode::Serve, |c| {
        c.keepalive = Some(Duration::from_secs(5));
        c.sweep_interval = Duration::from_secs(1);
    });
    let mut peer = Peer::new(6);
    h.command(0, peer.install(BOTH_WAYS));
    let mut probes = 0;
    for second in 1..=25u64 {
        let now = h.at(second * 1000);
        h.core.handle_timeout(now, &mut h.fx);
        for (to, datagram) in h.net() {
            assert_eq!(to, peer.addr);
            let (content_type, message) = peer.open(datagram);
            match content_type {
                ContentType::Heartbeat => {
                    assert_eq!(message[0], 1, "a HeartbeatRequest");
                    probes += 1;
                }
                ContentType::Alert => assert_eq!(message, [1, 0], "close_notify"),
                other => panic!("unexpected {other:?}"),
            }
        }
    }
    assert_eq!(probes, 3);
    let closed = h.inbound();
    assert!(
        matches!(
            closed.as_slice(),
            [ControlInbound::SessionClosed {
                reason: CloseReason::KeepaliveTimeout,
                ..
            }]
        ),
        "{closed:?}"
    );
    let s = h.stats();
    assert_eq!((s.keepalive_sent, s.sessions_keepalive_timeout), (3, 1));
    assert_eq!(s.sessions_active, 0);
}

#[test]
fn an_answered_probe_keeps_the_session() {
    let mut h = Harness::new(RelayMode::Serve, |c| {
        c.keepalive = Some(Duration::from_secs(5));
    });
    let mut peer = Peer::new(7);
    h.command(0, peer.install(BOTH_WAYS));
    h.core.handle_timeout(h.at(6_000), &mut h.fx);
    let net = h.net();
    let (_, request) = peer.open(net[0].1.clone());
    let mut response = request.clone();
    response[0] = 2;
    let record = peer.seal_as(ContentType::Heartbeat, &response);
    h.datagram(6_100, peer.addr, &record);
    assert_eq!(h.stats().keepalive_answered, 1);
    for second in 7..=30u64 {
        // The peer keeps talking: no more probes and no close.
        let record = peer.seal(b"alive");
        h.datagram(second * 1000, peer.addr, &record);
        h.core.handle_timeout(h.at(second * 1000 + 1), &mut h.fx);
    }
    assert_eq!(h.stats().keepalive_sent, 1);
    assert_eq!(h.stats().sessions_active, 1);
}

#[test]
fn close_notify_is_answered_and_data_before_it_still_reaches_the_backend() {
    let mut h = Harness::serve();
    let mut peer = Peer::new(8);
    h.command(0, peer.install(BOTH_WAYS));
    // One datagram: data, then close_notify.
    let mut datagram = peer.seal(b"last words");
    datagram.extend(peer.seal_as(ContentType::Alert, &[1, 0]));
    h.datagram(1, peer.addr, &datagram);
    assert_eq!(h.core.sessions().len(), 0, "the session is gone");
    // Its flow is retired, not dropped: the staged plaintext still goes out on it.
    assert_eq!(h.upstream(), vec![(1, b"last words".to_vec())]);
    let net = h.net();
    assert_eq!(net.len(), 1);
    assert_eq!(
        peer.open(net[0].1.clone()),
        (ContentType::Alert, vec![1, 0])
    );
    let inbound = h.inbound();
    assert!(
        matches!(
            inbound.as_slice(),
            [ControlInbound::SessionClosed {
                reason: CloseReason::CloseNotify,
                stats,
                ..
            }] if stats.plaintext_in == 10
        ),
        "{inbound:?}"
    );
    // After the drain the retired flow is dropped.
    assert!(
        h.core
            .flow(FlowRef::Session(match h.fx.opened[0] {
                FlowRef::Session(id) => id,
                other => panic!("{other:?}"),
            }))
            .is_none()
    );
}

#[test]
fn idle_sessions_expire_on_the_virtual_clock() {
    let mut h = Harness::new(RelayMode::Serve, |c| {
        c.idle_timeout = Duration::from_secs(30);
    });
    let mut quiet = Peer::new(9);
    let mut busy = Peer::new(10);
    h.command(0, quiet.install(BOTH_WAYS));
    h.command(0, busy.install(BOTH_WAYS));
    let record = busy.seal(b"hi");
    h.datagram(20_000, busy.addr, &record);
    h.core.handle_timeout(h.at(29_999), &mut h.fx);
    assert_eq!(h.core.sessions().len(), 2);
    h.core.handle_timeout(h.at(31_000), &mut h.fx);
    assert_eq!(h.core.sessions().len(), 1);
    assert!(h.core.sessions().lookup(&busy.addr).is_some());
    let net = h.net();
    assert_eq!(net.len(), 1);
    assert_eq!(net[0].0, quiet.addr);
    assert_eq!(
        quiet.open(net[0].1.clone()),
        (ContentType::Alert, vec![1, 0])
    );
    assert!(matches!(
        h.inbound().as_slice(),
        [ControlInbound::SessionClosed { peer, reason: CloseReason::IdleTimeout, .. }]
            if *peer == quiet.addr
    ));
    assert_eq!(h.stats().sessions_expired, 1);
}

#[test]
fn a_full_table_refuses_and_an_innocent_session_keeps_working() {
    let mut h = Harness::new(RelayMode::Serve, |c| c.max_sessions = 1);
    let mut first = Peer::new(11);
    let second = Peer::new(12);
    h.command(0, first.install(BOTH_WAYS));
    h.command(1, second.install(BOTH_WAYS));
    assert!(matches!(
        h.inbound().as_slice(),
        [ControlInbound::SessionClosed {
            reason: CloseReason::Rejected(InstallError::TableFull { capacity: 1 }),
            ..
        }]
    ));
    let record = first.seal(b"unaffected");
    h.datagram(2, first.addr, &record);
    assert_eq!(h.upstream(), vec![(1, b"unaffected".to_vec())]);
    assert_eq!(h.stats().install_failed, 1);
}

#[test]
fn out_of_descriptors_refuses_with_an_alert_after_the_final_flight() {
    let mut h = Harness::serve();
    let mut peer = Peer::new(13);
    h.flows.fail = Some(libc_emfile());
    h.command(0, peer.install(BOTH_WAYS));
    assert!(matches!(
        h.inbound().as_slice(),
        [ControlInbound::SessionClosed {
            reason: CloseReason::Rejected(InstallError::OutOfDescriptors),
            ..
        }]
    ));
    assert!(h.net().is_empty(), "the alert waits for the final flight");
    h.command(
        1,
        ShardCommand::Transmit {
            peer: peer.addr,
            datagram: b"final flight".to_vec(),
        },
    );
    let net = h.net();
    assert_eq!(net.len(), 2);
    assert_eq!(net[0].1, b"final flight");
    // RFC 5246 §7.2: fatal(2) internal_error(80).
    assert_eq!(
        peer.open(net[1].1.clone()),
        (ContentType::Alert, vec![2, 80])
    );
    let s = h.stats();
    assert_eq!((s.sessions_refused_descriptors, s.sessions_active), (1, 0));
    // Serve: the flow was asked for the DTLS peer (transparent mode binds to it).
    assert_eq!(h.flows.peers, vec![peer.addr]);
}

/// EMFILE on Linux.
fn libc_emfile() -> i32 {
    24
}

#[test]
fn connect_waits_for_the_handshake_then_seals_what_was_queued() {
    let mut h = Harness::new(RelayMode::Connect, |_| {});
    let mut server = Peer::new(14);
    let source = SocketAddr::from(([127, 0, 0, 1], 6000));
    h.datagram(0, source, b"queued one");
    h.datagram(1, source, b"queued two");
    let pending = match h.fx.opened.as_slice() {
        [flow @ FlowRef::Pending(_)] => *flow,
        other => panic!("one waiting flow, got {other:?}"),
    };
    h.fx.opened.clear();
    assert_eq!(h.inbound(), vec![ControlInbound::Open { peer: source }]);

    // Control's flight goes out on the waiting flow; the server's answer goes to control.
    h.command(
        2,
        ShardCommand::Transmit {
            peer: source,
            datagram: b"client hello".to_vec(),
        },
    );
    h.on_flow(3, pending, b"server hello");
    assert_eq!(
        h.inbound(),
        vec![ControlInbound::Handshake {
            peer: source,
            datagram: b"server hello".to_vec()
        }]
    );
    // Keys: the waiting flow becomes the session's, the handshake datagram staged before
    // still goes out on it, then the queued plaintext, sealed.
    h.command(4, server_install(&server, source));
    let session = h.flow_of(source);
    assert_eq!(h.fx.opened, vec![session]);
    let sent = h.upstream();
    assert_eq!(sent.len(), 3);
    assert!(
        sent.iter().all(|(flow, _)| *flow == 1),
        "one flow: {sent:?}"
    );
    assert_eq!(sent[0].1, b"client hello");
    assert_eq!(
        server.open(sent[1].1.clone()),
        (ContentType::ApplicationData, b"queued one".to_vec())
    );
    assert_eq!(
        server.open(sent[2].1.clone()),
        (ContentType::ApplicationData, b"queued two".to_vec())
    );

    // The server's record is opened and its plaintext goes to the local source.
    let record = server.seal(b"reply");
    h.on_flow(5, session, &record);
    assert_eq!(h.net(), vec![(source, b"reply".to_vec())]);
    let s = h.stats();
    assert_eq!((s.handshakes_requested, s.sessions_installed), (1, 1));
    assert_eq!(s.pending_bytes, 0);
}

/// Connect mode: the session of local `source` with `server`'s keys (the far end seals
/// with the keys the core reads).
fn server_install(server: &Peer, source: SocketAddr) -> ShardCommand {
    match server.install(BOTH_WAYS) {
        ShardCommand::InstallKeys {
            session,
            read,
            write,
            heartbeat,
            ..
        } => ShardCommand::InstallKeys {
            session,
            peer: source,
            read,
            write,
            heartbeat,
            cid: Vec::new(),
            peer_cid: Vec::new(),
            rrc: false,
            upstream: UpstreamPrefix::None,
        },
        other => other,
    }
}

#[test]
fn connect_refuses_a_source_without_a_flow_and_tries_again_later() {
    let mut h = Harness::new(RelayMode::Connect, |_| {});
    let source = SocketAddr::from(([127, 0, 0, 1], 6001));
    h.flows.fail = Some(libc_emfile());
    h.datagram(0, source, b"dropped");
    assert!(h.fx.opened.is_empty());
    assert!(h.inbound().is_empty());
    let s = h.stats();
    assert_eq!((s.drop_refused, s.sessions_refused_descriptors), (1, 1));
    h.flows.fail = None;
    h.datagram(1, source, b"second try");
    assert_eq!(h.inbound(), vec![ControlInbound::Open { peer: source }]);
    // Connect: each try asked for a flow for the local source.
    assert_eq!(h.flows.peers, vec![source, source]);
}

#[test]
fn a_failed_handshake_still_sends_controls_last_datagram() {
    let mut h = Harness::new(RelayMode::Connect, |_| {});
    let source = SocketAddr::from(([127, 0, 0, 1], 6002));
    h.datagram(0, source, b"hello?");
    h.command(
        1,
        ShardCommand::Transmit {
            peer: source,
            datagram: b"fatal alert".to_vec(),
        },
    );
    h.command(1, ShardCommand::Forget { peer: source });
    assert_eq!(h.upstream(), vec![(1, b"fatal alert".to_vec())]);
    assert_eq!(h.stats().drop_pending, 1);
}

#[test]
fn sessions_are_closed_by_handle_and_a_stale_handle_reaches_nothing() {
    let mut h = Harness::serve();
    let peer = Peer::new(15);
    h.command(0, peer.install(BOTH_WAYS));
    let first = h.flow_of(peer.addr);
    h.command(
        1,
        ShardCommand::Close {
            session: peer.handle(),
            reason: dtls_shard::CloseCause::Revoked,
        },
    );
    assert!(matches!(
        h.inbound().as_slice(),
        [ControlInbound::SessionClosed { session, peer: p, .. }]
            if *session == peer.handle() && *p == peer.addr
    ));
    // The same peer's next session (new keys, new handle) may take the same slot: the old
    // handle and the old slot id find nothing.
    let mut again = Peer::new(15);
    let new_handle = SessionId::new(1000);
    let install = match again.install(BOTH_WAYS) {
        ShardCommand::InstallKeys {
            peer,
            read,
            write,
            heartbeat,
            ..
        } => ShardCommand::InstallKeys {
            session: new_handle,
            peer,
            read,
            write,
            heartbeat,
            cid: Vec::new(),
            peer_cid: Vec::new(),
            rrc: false,
            upstream: UpstreamPrefix::None,
        },
        other => other,
    };
    h.command(2, install);
    let second = h.flow_of(peer.addr);
    assert_ne!(first, second, "a new generation of the slot");
    h.command(
        3,
        ShardCommand::Close {
            session: peer.handle(),
            reason: dtls_shard::CloseCause::Revoked,
        },
    );
    assert!(h.inbound().is_empty(), "the stale handle closed nothing");
    assert_eq!(h.core.sessions().len(), 1);
    let record = again.seal(b"new session");
    h.datagram(4, peer.addr, &record);
    let sent = h.upstream();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].1, b"new session");
    assert_eq!(
        h.core.sessions().find(&peer.addr).map(|s| s.handle),
        Some(new_handle)
    );
}

#[test]
fn a_rekey_keeps_the_session_and_its_counters() {
    let mut h = Harness::serve();
    let mut peer = Peer::new(16);
    h.command(0, peer.install(BOTH_WAYS));
    let record = peer.seal(b"before");
    h.datagram(1, peer.addr, &record);
    h.upstream();
    // New keys for the same peer at epoch 2 (a new handshake of the same client).
    let mut next = Peer::new(17);
    next.sealer = Sealer::new(2, key(next.seed), 0).expect("sealer");
    let install = match next.install(BOTH_WAYS) {
        ShardCommand::InstallKeys {
            mut read,
            heartbeat,
            write,
            ..
        } => {
            read.epoch = 2;
            ShardCommand::InstallKeys {
                session: peer.handle(),
                peer: peer.addr,
                read,
                write,
                heartbeat,
                cid: Vec::new(),
                peer_cid: Vec::new(),
                rrc: false,
                upstream: UpstreamPrefix::None,
            }
        }
        other => other,
    };
    h.command(2, install);
    // The old epoch's records are dropped, the new one's relayed, counters carry on.
    let old = peer.seal(b"old epoch");
    h.datagram(3, peer.addr, &old);
    let new = next.seal(b"after");
    h.datagram(4, peer.addr, &new);
    assert_eq!(h.upstream(), vec![(1, b"after".to_vec())]);
    let s = h.stats();
    assert_eq!((s.sessions_rekeyed, s.drop_unknown_epoch), (1, 1));
    let session = h.core.sessions().find(&peer.addr).expect("same session");
    assert_eq!(session.counters.records_opened, 2);
}

/// DTLS 1.3 sessions in the core: unified-header records opened and sealed by the shard,
/// post-handshake messages handed to control, read epochs kept across a KeyUpdate.
mod v13 {
    use dataplane::record::v13::{HeaderForm, InnerContentType, Opener13, Sealer13, TrafficKeys13};
    use dtls_shard::{ReadKeys13, WriteKeys13};

    use super::*;

    fn keys(seed: u8) -> TrafficKeys13 {
        TrafficKeys13::new(
            Aead::Aes128Gcm,
            &[seed; 16],
            &[seed ^ 0x33; 12],
            &[seed ^ 0x77; 16],
        )
        .expect("valid key sizes")
    }

    /// The far end of a DTLS 1.3 session: its write epochs' sealers, its read epoch.
    struct Peer13 {
        addr: SocketAddr,
        handle: SessionId,
        seed: u8,
        sealer: Sealer13,
        opener: Opener13,
        /// The CID the core issued: the peer puts it in its records (empty: none).
        cid: Vec<u8>,
        /// The session negotiated the return-routability check (RFC 9853).
        rrc: bool,
        /// The length of the CID the core puts in its records to the peer (0: none).
        own_cid_len: usize,
    }

    impl Peer13 {
        fn new(n: u8) -> Self {
            let seed = n.wrapping_mul(4);
            Self {
                addr: SocketAddr::from(([198, 51, 100, n], 5000 + u16::from(n))),
                handle: SessionId::new(1000 + u64::from(n)),
                seed,
                sealer: Sealer13::new(3, keys(seed)),
                opener: Opener13::new(3, keys(seed + 1), ReplayWindow::new(128)),
                cid: Vec::new(),
                rrc: false,
                own_cid_len: 0,
            }
        }

        /// Keys for the core: it reads what the peer writes and the other way round.
        fn install(&self, epoch: u64, write: bool) -> ShardCommand {
            let step = (epoch - 3) as u8 * 2;
            ShardCommand::InstallKeys13 {
                session: self.handle,
                peer: self.addr,
                read: Some(Box::new(ReadKeys13 {
                    epoch,
                    keys: keys(self.seed + step),
                    replay_window: 128,
                    next_expected: 0,
                })),
                write: write.then(|| {
                    Box::new(WriteKeys13 {
                        epoch,
                        keys: keys(self.seed + step + 1),
                        next_seq: 0,
                    })
                }),
                cid: self.cid.clone(),
                peer_cid: Vec::new(),
                rrc: self.rrc,
                upstream: UpstreamPrefix::None,
            }
        }

        /// The peer moves to `epoch` both ways (its side of a KeyUpdate).
        fn update(&mut self, epoch: u64) {
            let step = (epoch - 3) as u8 * 2;
            self.sealer = Sealer13::new(epoch, keys(self.seed + step));
            self.opener = Opener13::new(epoch, keys(self.seed + step + 1), ReplayWindow::new(128));
        }

        fn seal_as(&mut self, content_type: InnerContentType, content: &[u8]) -> Vec<u8> {
            let form = if self.cid.is_empty() {
                HeaderForm::default()
            } else {
                HeaderForm::with_cid(&self.cid)
            };
            let mut record = vec![0; self.sealer.record_len(&form, content.len(), 0)];
            let at = self.sealer.plaintext_offset(&form);
            record[at..at + content.len()].copy_from_slice(content);
            let n = self
                .sealer
                .seal(content_type, &form, &mut record, content.len(), 0)
                .expect("seal");
            record.truncate(n);
            record
        }

        fn seal(&mut self, content: &[u8]) -> Vec<u8> {
            self.seal_as(InnerContentType::ApplicationData, content)
        }

        fn open(&mut self, mut record: Vec<u8>) -> (InnerContentType, Vec<u8>) {
            let opened = self
                .opener
                .open(&mut record, self.own_cid_len)
                .expect("the core's record opens");
            (opened.content_type, opened.plaintext.to_vec())
        }
    }

    #[test]
    fn a_dtls13_session_relays_both_ways() {
        let mut h = Harness::serve();
        let mut peer = Peer13::new(1);
        h.command(0, peer.install(3, true));
        let flow = h.flow_of(peer.addr);
        let record = peer.seal(b"1.3 to the backend");
        assert_eq!(record[0] & 0xe0, 0x20, "a unified header");
        h.datagram(1, peer.addr, &record);
        assert_eq!(h.upstream(), vec![(1, b"1.3 to the backend".to_vec())]);
        h.on_flow(2, flow, b"1.3 back");
        let net = h.net();
        assert_eq!(net.len(), 1);
        assert_eq!(
            peer.open(net[0].1.clone()),
            (InnerContentType::ApplicationData, b"1.3 back".to_vec())
        );
        let s = h.stats();
        assert_eq!((s.records_opened, s.records_sealed), (1, 1));
        assert!(h.inbound().is_empty());
    }

    #[test]
    fn replayed_and_tampered_13_records_are_dropped() {
        let mut h = Harness::serve();
        let mut peer = Peer13::new(2);
        h.command(0, peer.install(3, true));
        let first = peer.seal(b"once");
        h.datagram(1, peer.addr, &first);
        h.datagram(2, peer.addr, &first);
        let mut tampered = peer.seal(b"flipped");
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        h.datagram(3, peer.addr, &tampered);
        let after = peer.seal(b"after");
        h.datagram(4, peer.addr, &after);
        let delivered: Vec<Vec<u8>> = h.upstream().into_iter().map(|(_, p)| p).collect();
        assert_eq!(delivered, vec![b"once".to_vec(), b"after".to_vec()]);
        let s = h.stats();
        assert_eq!((s.drop_replay, s.drop_bad_tag), (1, 1));
    }

    #[test]
    fn post_handshake_messages_and_acks_go_to_control_as_plaintext() {
        let mut h = Harness::serve();
        let mut peer = Peer13::new(3);
        h.command(0, peer.install(3, true));
        // A KeyUpdate (type 24, update_not_requested) with its DTLS handshake header.
        let key_update = [24, 0, 0, 1, 0, 5, 0, 0, 0, 0, 0, 1, 0];
        let record = peer.seal_as(InnerContentType::Handshake, &key_update);
        h.datagram(1, peer.addr, &record);
        let ack_body = [0, 16, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 7];
        let record = peer.seal_as(InnerContentType::Ack, &ack_body);
        h.datagram(2, peer.addr, &record);
        assert_eq!(
            h.inbound(),
            vec![
                ControlInbound::PostHandshake {
                    session: peer.handle,
                    epoch: 3,
                    sequence: 0,
                    ack: false,
                    message: key_update.to_vec(),
                },
                ControlInbound::PostHandshake {
                    session: peer.handle,
                    epoch: 3,
                    sequence: 1,
                    ack: true,
                    message: ack_body.to_vec(),
                },
            ]
        );
        assert!(h.upstream().is_empty());
        assert_eq!(h.stats().post_handshake_forwarded, 2);
    }

    #[test]
    fn a_key_update_keeps_the_old_read_epoch_until_control_retires_it() {
        let mut h = Harness::serve();
        let mut peer = Peer13::new(4);
        h.command(0, peer.install(3, true));
        let late = peer.seal(b"sent under epoch 3");
        // Control installs epoch 4 both ways; the peer moves too.
        h.command(1, peer.install(4, true));
        peer.update(4);
        let new = peer.seal(b"epoch 4");
        h.datagram(2, peer.addr, &new);
        // A record of epoch 3 still in flight opens with the kept epoch.
        h.datagram(3, peer.addr, &late);
        assert_eq!(
            h.upstream().into_iter().map(|(_, p)| p).collect::<Vec<_>>(),
            vec![b"epoch 4".to_vec(), b"sent under epoch 3".to_vec()]
        );
        // Replies go out under epoch 4.
        let flow = h.flow_of(peer.addr);
        h.on_flow(4, flow, b"reply");
        let net = h.net();
        assert_eq!(
            peer.open(net[0].1.clone()),
            (InnerContentType::ApplicationData, b"reply".to_vec())
        );
        // Retired: epoch 3's records are no longer opened (the peer is at 4: epoch 3 is the
        // most recent past epoch with their bits, RFC 9147 §4.2.2), dropped and counted
        // instead of reaching the backend.
        h.command(
            5,
            ShardCommand::RetireEpoch {
                session: peer.handle,
                epoch: 3,
            },
        );
        let mut old = Peer13::new(4);
        let stale = old.seal(b"too late");
        h.datagram(6, peer.addr, &stale);
        assert!(h.upstream().is_empty());
        let s = h.stats();
        assert_eq!(s.sessions_rekeyed, 1);
        assert_eq!(s.drop_retired_epoch, 1);
        assert_eq!(h.core.sessions().len(), 1);
    }

    /// Issue 18, records for retired epochs: a peer at epoch 7 after four KeyUpdates, the
    /// shard holding 7 and 6 (control retired 3 to 5). RFC 9147 §4.2.2 resolves a record's
    /// two epoch bits to the most recent past epoch that has them: epochs 4 and 5, retired,
    /// are dropped unopened and counted (`drop_retired_epoch`), never handed to control;
    /// epoch 3's bits are epoch 7's, so its record fails authentication there (`bad_tag`);
    /// epochs 6 and 7 are delivered. Before any KeyUpdate a handshake record (epoch 2: a
    /// retransmitted Finished) still goes to control.
    #[test]
    fn records_of_retired_epochs_are_dropped_and_counted_and_never_reach_control() {
        let mut h = Harness::serve();
        let mut peer = Peer13::new(7);
        let sealed_in = |epoch: u64, payload: &[u8]| {
            let mut p = Peer13::new(7);
            p.update(epoch);
            p.seal(payload)
        };
        h.command(0, peer.install(3, true));
        let mut handshake = Sealer13::new(2, keys(99));
        let form = HeaderForm::default();
        let mut finished = vec![0; handshake.record_len(&form, 4, 0)];
        let n = handshake
            .seal(InnerContentType::Handshake, &form, &mut finished, 4, 0)
            .expect("seal");
        finished.truncate(n);
        h.datagram(1, peer.addr, &finished);
        assert_eq!(h.stats().handshake_forwarded, 1, "epoch 2 is control's");
        assert_eq!(h.inbound().len(), 1);
        for epoch in 4..=7 {
            h.command(2, peer.install(epoch, true));
            if epoch >= 6 {
                for retired in [epoch - 3, epoch - 2] {
                    h.command(
                        2,
                        ShardCommand::RetireEpoch {
                            session: peer.handle,
                            epoch: retired,
                        },
                    );
                }
            }
        }
        peer.update(7);
        let before = h.stats();
        for (epoch, payload) in [
            (4, &b"retired 4"[..]),
            (5, b"retired 5"),
            (3, b"retired 3"),
            (6, b"held 6"),
        ] {
            h.datagram(3, peer.addr, &sealed_in(epoch, payload));
        }
        let current = peer.seal(b"current 7");
        h.datagram(3, peer.addr, &current);
        assert_eq!(
            h.upstream().into_iter().map(|(_, p)| p).collect::<Vec<_>>(),
            vec![b"held 6".to_vec(), b"current 7".to_vec()]
        );
        let s = h.stats();
        assert_eq!(
            (
                s.drop_retired_epoch - before.drop_retired_epoch,
                s.drop_bad_tag - before.drop_bad_tag,
                s.handshake_forwarded - before.handshake_forwarded,
            ),
            (2, 1, 0)
        );
        assert!(h.inbound().is_empty(), "nothing for control");
        assert_eq!(h.core.sessions().len(), 1);
    }

    #[test]
    fn a_write_only_key_update_keeps_the_read_epoch_and_its_window() {
        let mut h = Harness::serve();
        let mut peer = Peer13::new(10);
        h.command(0, peer.install(3, true));
        let first = peer.seal(b"one");
        h.datagram(1, peer.addr, &first);
        let second = peer.seal(b"two");
        // Our KeyUpdate was acknowledged: control installs write epoch 4 only.
        let mut install = peer.install(4, true);
        if let ShardCommand::InstallKeys13 { read, .. } = &mut install {
            *read = None;
        }
        h.command(2, install);
        // Epoch 3 still reads, with its replay window: the replayed record is dropped.
        h.datagram(3, peer.addr, &second);
        h.datagram(4, peer.addr, &first);
        assert_eq!(
            h.upstream().into_iter().map(|(_, p)| p).collect::<Vec<_>>(),
            vec![b"one".to_vec(), b"two".to_vec()]
        );
        assert_eq!(h.stats().drop_replay, 1);
        // Replies go out under epoch 4.
        peer.update(4);
        let flow = h.flow_of(peer.addr);
        h.on_flow(5, flow, b"reply");
        let net = h.net();
        assert_eq!(
            peer.open(net[0].1.clone()),
            (InnerContentType::ApplicationData, b"reply".to_vec())
        );
        assert_eq!(h.stats().sessions_rekeyed, 1);
    }

    #[test]
    fn close_notify_under_13_is_answered_and_ends_the_session() {
        let mut h = Harness::serve();
        let mut peer = Peer13::new(5);
        h.command(0, peer.install(3, true));
        let record = peer.seal_as(InnerContentType::Alert, &[1, 0]);
        h.datagram(1, peer.addr, &record);
        let net = h.net();
        assert_eq!(
            peer.open(net[0].1.clone()),
            (InnerContentType::Alert, vec![1, 0])
        );
        assert!(matches!(
            h.inbound().as_slice(),
            [ControlInbound::SessionClosed {
                reason: CloseReason::CloseNotify,
                ..
            }]
        ));
        // Heartbeats do not exist in DTLS 1.3: dropped, not answered.
        let mut other = Peer13::new(6);
        h.command(2, other.install(3, true));
        let record = other.seal_as(InnerContentType::Heartbeat, &[1, 0, 1, 9]);
        h.datagram(3, other.addr, &record);
        assert!(h.net().is_empty());
        assert_eq!(h.stats().drop_unexpected_content, 1);
    }

    #[test]
    fn handshake_records_of_13_peers_reach_control() {
        let mut h = Harness::serve();
        // A peer without a session sends unified-header records (its epoch-2 flight).
        let mut stranger = Peer13::new(7);
        stranger.sealer = Sealer13::new(2, keys(99));
        let flight = stranger.seal_as(InnerContentType::Handshake, b"finished");
        h.datagram(0, stranger.addr, &flight);
        assert!(matches!(
            h.inbound().as_slice(),
            [ControlInbound::Handshake { peer, .. }] if *peer == stranger.addr
        ));
        assert_eq!(h.stats().drop_malformed, 0);
        // A session's peer retransmitting an epoch-2 record: control's too; its epoch-3
        // records in the same datagram are the shard's.
        let mut peer = Peer13::new(8);
        h.command(1, peer.install(3, true));
        let mut late = Sealer13::new(2, keys(98));
        let form = HeaderForm::default();
        let mut record = vec![0; late.record_len(&form, 4, 0)];
        let n = late
            .seal(InnerContentType::Handshake, &form, &mut record, 4, 0)
            .expect("seal");
        record.truncate(n);
        record.extend(peer.seal(b"data"));
        h.datagram(2, peer.addr, &record);
        assert_eq!(h.inbound().len(), 1, "the datagram went to control");
        assert_eq!(h.upstream(), vec![(1, b"data".to_vec())]);
    }

    #[test]
    fn a_13_clients_data_ahead_of_its_keys_waits_for_them() {
        let mut h = Harness::serve();
        let mut peer = Peer13::new(11);
        h.command(0, ShardCommand::ExpectKeys { peer: peer.addr });
        // The client's Finished (epoch 2) with its first data (epoch 3) in one datagram,
        // then data alone: both before control installed the keys.
        let mut finished = Sealer13::new(2, keys(97));
        let form = HeaderForm::default();
        let mut record = vec![0; finished.record_len(&form, 4, 0)];
        let n = finished
            .seal(InnerContentType::Handshake, &form, &mut record, 4, 0)
            .expect("seal");
        record.truncate(n);
        record.extend(peer.seal(b"with the Finished"));
        h.datagram(1, peer.addr, &record);
        let alone = peer.seal(b"right after");
        h.datagram(2, peer.addr, &alone);
        assert_eq!(h.inbound().len(), 1, "the Finished went to control");
        assert!(h.upstream().is_empty());
        assert_eq!(h.stats().early_parked, 2);
        h.command(3, peer.install(3, true));
        assert_eq!(
            h.upstream().into_iter().map(|(_, p)| p).collect::<Vec<_>>(),
            vec![b"with the Finished".to_vec(), b"right after".to_vec()]
        );
        // The Finished reaches control again with the replayed datagram: answered as a
        // retransmission there.
        assert_eq!(h.inbound().len(), 1);
        assert_eq!(h.stats().early_replayed, 2);
    }

    #[test]
    fn keys_for_a_handshake_epoch_or_without_write_keys_are_refused() {
        let mut h = Harness::serve();
        let peer = Peer13::new(9);
        h.command(0, peer.install(3, false));
        h.command(1, {
            let mut c = peer.install(3, true);
            if let ShardCommand::InstallKeys13 {
                read: Some(read), ..
            } = &mut c
            {
                read.epoch = 2;
            }
            c
        });
        let closed: Vec<_> = h
            .inbound()
            .into_iter()
            .map(|m| match m {
                ControlInbound::SessionClosed {
                    reason: CloseReason::Rejected(e),
                    ..
                } => e,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(
            closed,
            vec![InstallError::NoWriteKeys, InstallError::HandshakeEpoch]
        );
        assert_eq!(h.core.sessions().len(), 0);
    }

    /// A core issuing 8-byte CIDs, and a peer using one.
    fn with_cids(n: u8) -> (Harness, Peer13) {
        let mut h = Harness::new(RelayMode::Serve, |c| c.cid_len = 8);
        let mut peer = Peer13::new(n);
        peer.cid = vec![0xc0, n, 1, 2, 3, 4, 5, 6];
        h.command(0, peer.install(3, true));
        (h, peer)
    }

    #[test]
    fn a_peer_that_moves_keeps_its_session_by_connection_id() {
        let (mut h, mut peer) = with_cids(10);
        let first = peer.seal(b"from home");
        h.datagram(1, peer.addr, &first);
        // NAT rebinding: same session, new address.
        let moved = SocketAddr::from(([203, 0, 113, 10], 61000));
        let record = peer.seal(b"from the new port");
        h.datagram(2, moved, &record);
        let delivered: Vec<Vec<u8>> = h.upstream().into_iter().map(|(_, p)| p).collect();
        assert_eq!(
            delivered,
            vec![b"from home".to_vec(), b"from the new port".to_vec()]
        );
        assert_eq!(
            h.inbound(),
            vec![ControlInbound::PeerMoved {
                session: peer.handle,
                from: peer.addr,
                peer: moved,
            }]
        );
        // Replies go to the new address; the old one no longer reaches the session.
        let flow = h.flow_of(moved);
        h.on_flow(3, flow, b"reply");
        let net = h.net();
        assert_eq!(net[0].0, moved);
        assert_eq!(
            peer.open(net[0].1.clone()),
            (InnerContentType::ApplicationData, b"reply".to_vec())
        );
        assert!(h.core.sessions().lookup(&peer.addr).is_none());
        assert_eq!(h.stats().sessions_moved, 1);
    }

    #[test]
    fn replayed_forged_or_older_records_from_elsewhere_never_move_a_session() {
        let (mut h, mut peer) = with_cids(11);
        let older = peer.seal(b"older");
        let newer = peer.seal(b"newer");
        h.datagram(1, peer.addr, &newer);
        let attacker = SocketAddr::from(([198, 18, 0, 66], 4444));
        // A copy of a record already seen: the replay check refuses it.
        h.datagram(2, attacker, &newer);
        // A forged record under the CID: fails authentication.
        let mut forged = peer.seal(b"forged");
        let last = forged.len() - 1;
        forged[last] ^= 0x80;
        h.datagram(3, attacker, &forged);
        // An older record not seen yet (reordered): delivered, but not the newest.
        h.datagram(4, attacker, &older);
        let delivered: Vec<Vec<u8>> = h.upstream().into_iter().map(|(_, p)| p).collect();
        assert_eq!(delivered, vec![b"newer".to_vec(), b"older".to_vec()]);
        assert!(h.inbound().is_empty(), "no move reported");
        assert_eq!(
            h.core.sessions().lookup(&peer.addr),
            Some(match h.flow_of(peer.addr) {
                FlowRef::Session(id) => id,
                other => panic!("{other:?}"),
            })
        );
        let s = h.stats();
        assert_eq!((s.sessions_moved, s.drop_not_moved), (0, 3));
        assert_eq!((s.drop_replay, s.drop_bad_tag), (1, 1));
    }

    #[test]
    fn cids_issued_after_the_handshake_reach_the_session_within_a_bound() {
        let (mut h, mut peer) = with_cids(15);
        let issued: Vec<Vec<u8>> = (0..10u8)
            .map(|i| vec![0xc0, 15, 9, i, 3, 4, 5, 6])
            .collect();
        // One of another length is not the session's (its records are read with 8 bytes).
        let mut cids = issued.clone();
        cids.push(vec![1, 2, 3]);
        h.command(
            1,
            ShardCommand::AddCids {
                session: peer.handle,
                cids,
            },
        );
        let table = h.core.sessions();
        let home = table.lookup(&peer.addr).expect("session");
        assert_eq!(
            table.session(home).map(|s| s.extra_cids().len()),
            Some(dtls_shard::MAX_EXTRA_CIDS)
        );
        assert_eq!(table.lookup_cid(&issued[7]), Some(home));
        assert_eq!(table.lookup_cid(&issued[8]), None, "over the bound");
        assert_eq!(table.lookup_cid(&[1, 2, 3]), None);
        // The peer uses a new CID from a new address: the session's record, and it moves.
        peer.cid = issued[3].clone();
        let moved = SocketAddr::from(([203, 0, 113, 15], 4015));
        h.datagram(2, moved, &peer.seal(b"under a new cid"));
        assert_eq!(h.upstream(), vec![(1, b"under a new cid".to_vec())]);
        assert_eq!(h.stats().sessions_moved, 1);
        // Closed: none of its CIDs names it any more.
        h.command(
            3,
            ShardCommand::Close {
                session: peer.handle,
                reason: dtls_shard::CloseCause::Requested,
            },
        );
        let table = h.core.sessions();
        assert!(issued.iter().all(|c| table.lookup_cid(c).is_none()));
        assert_eq!(table.lookup_cid(&[0xc0, 15, 1, 2, 3, 4, 5, 6]), None);
    }

    #[test]
    fn an_unknown_connection_id_is_not_a_session() {
        let (mut h, mut peer) = with_cids(12);
        peer.cid = vec![0xc0, 99, 1, 2, 3, 4, 5, 6];
        let record = peer.seal(b"whose?");
        h.datagram(1, SocketAddr::from(([203, 0, 113, 12], 1)), &record);
        assert!(h.upstream().is_empty());
        // Not a session's, and application data (epoch 3) of no handshake control expects
        // keys for: dropped and counted, not parked, not control's.
        assert!(h.inbound().is_empty());
        let s = h.stats();
        assert_eq!((s.sessions_moved, s.drop_unknown_session), (0, 1));
    }

    #[test]
    fn our_records_carry_the_connection_id_the_peer_asked_for() {
        let mut h = Harness::serve();
        let mut peer = Peer13::new(13);
        let mut install = peer.install(3, true);
        if let ShardCommand::InstallKeys13 { peer_cid, .. } = &mut install {
            *peer_cid = vec![7, 7, 7, 7];
        }
        h.command(0, install);
        let flow = h.flow_of(peer.addr);
        h.on_flow(1, flow, b"with a cid");
        let net = h.net();
        let mut record = net[0].1.clone();
        assert_eq!(record[0] & 0x10, 0x10, "the C bit");
        assert_eq!(&record[1..5], &[7, 7, 7, 7]);
        let opened = peer
            .opener
            .open(&mut record, 4)
            .expect("opens with the CID length");
        assert_eq!(opened.plaintext, b"with a cid");
        // A CID over 20 bytes is refused.
        let other = Peer13::new(14);
        let mut too_long = other.install(3, true);
        if let ShardCommand::InstallKeys13 { cid, .. } = &mut too_long {
            *cid = vec![1; 21];
        }
        h.command(2, too_long);
        assert!(matches!(
            h.inbound().as_slice(),
            [ControlInbound::SessionClosed {
                reason: CloseReason::Rejected(InstallError::CidLength(21)),
                ..
            }]
        ));
    }

    /// RFC 9853 in DTLS 1.3 sessions: return_routability_check as the inner content type.
    mod rrc13 {
        use dtls_proto::{RrcMessage, RrcMessageType};

        use super::*;

        fn with_rrc(n: u8) -> (Harness, Peer13) {
            let mut h = Harness::new(RelayMode::Serve, |c| c.cid_len = 8);
            let mut peer = Peer13::new(n);
            peer.cid = vec![0xc0, n, 1, 2, 3, 4, 5, 6];
            peer.rrc = true;
            h.command(0, peer.install(3, true));
            (h, peer)
        }

        fn seal_rrc(peer: &mut Peer13, msg: RrcMessage) -> Vec<u8> {
            let mut body = [0u8; 16];
            let len = msg.emit(&mut body).expect("fits");
            peer.seal_as(InnerContentType::ReturnRoutabilityCheck, &body[..len])
        }

        /// The kind and cookie of the return_routability_check message in `record`.
        fn rrc_of(peer: &mut Peer13, record: Vec<u8>) -> (RrcMessageType, [u8; 8]) {
            let (content_type, body) = peer.open(record);
            assert_eq!(content_type, InnerContentType::ReturnRoutabilityCheck);
            match RrcMessage::parse(&body) {
                Ok(RrcMessage::Known { kind, cookie }) => (kind, cookie),
                other => panic!("{other:?}"),
            }
        }

        fn slot(h: &Harness, addr: SocketAddr) -> Option<dtls_shard::SlotId> {
            h.core.sessions().lookup(&addr)
        }

        #[test]
        fn a_13_session_moves_only_after_the_new_address_answers_the_challenge() {
            let (mut h, mut peer) = with_rrc(50);
            h.datagram(1, peer.addr, &peer.seal(b"from home"));
            let moved = SocketAddr::from(([203, 0, 113, 50], 62050));
            h.datagram(2, moved, &peer.seal(b"from the new port"));
            let delivered: Vec<Vec<u8>> = h.upstream().into_iter().map(|(_, p)| p).collect();
            assert_eq!(
                delivered,
                vec![b"from home".to_vec(), b"from the new port".to_vec()]
            );
            assert!(h.inbound().is_empty(), "no move yet");
            assert!(slot(&h, peer.addr).is_some() && slot(&h, moved).is_none());
            let net = h.net();
            assert_eq!(net.len(), 1);
            assert_eq!(net[0].0, moved, "the challenge goes to the new address");
            let (kind, cookie) = rrc_of(&mut peer, net[0].1.clone());
            assert_eq!(kind, RrcMessageType::PathChallenge);
            // A response with another cookie is silently discarded.
            let mut wrong = cookie;
            wrong[0] ^= 1;
            h.datagram(3, moved, &seal_rrc(&mut peer, RrcMessage::response(wrong)));
            assert!(h.inbound().is_empty());
            // The echo of the cookie validates it: the session moves.
            h.datagram(4, moved, &seal_rrc(&mut peer, RrcMessage::response(cookie)));
            h.assert_moved_after_one_check(peer.handle, peer.addr, moved);
        }

        /// The CID in the unified header of a record of ours (C bit set, 8-byte CIDs here).
        fn cid_of(record: &[u8], len: usize) -> Vec<u8> {
            assert_ne!(record[0] & 0x10, 0, "the C bit");
            record[1..1 + len].to_vec()
        }

        #[test]
        fn a_peer_that_moves_under_a_later_cid_retires_the_earlier_ones() {
            let (mut h, mut peer) = with_rrc(54);
            let first = peer.cid.clone();
            let issued: Vec<Vec<u8>> = (0..3u8).map(|i| vec![0xc0, 54, 9, i, 3, 4, 5, 6]).collect();
            h.command(
                1,
                ShardCommand::AddCids {
                    session: peer.handle,
                    cids: issued.clone(),
                },
            );
            h.datagram(2, peer.addr, &peer.seal(b"from home"));
            let home = slot(&h, peer.addr).expect("session");
            // The peer moves and, for privacy, switches to its second spare CID of ours.
            peer.cid = issued[1].clone();
            let moved = SocketAddr::from(([203, 0, 113, 54], 62054));
            h.datagram(3, moved, &peer.seal(b"from the new port"));
            let delivered: Vec<Vec<u8>> = h.upstream().into_iter().map(|(_, p)| p).collect();
            assert_eq!(
                delivered,
                vec![b"from home".to_vec(), b"from the new port".to_vec()]
            );
            let s = h.stats();
            assert_eq!((s.peer_cid_switches, s.cids_retired), (1, 2));
            // Control hears which, to replace them (RFC 9147 §9).
            assert_eq!(
                h.inbound(),
                vec![ControlInbound::CidsRetired {
                    session: peer.handle,
                    cids: vec![first.clone(), issued[0].clone()],
                }]
            );
            let table = h.core.sessions();
            assert_eq!(table.lookup_cid(&issued[1]), Some(home));
            assert_eq!(table.lookup_cid(&issued[2]), Some(home), "later ones stay");
            assert_eq!(table.lookup_cid(&first), None, "the handshake's is retired");
            assert_eq!(table.lookup_cid(&issued[0]), None, "an earlier one too");
            assert_eq!(
                table
                    .session(home)
                    .and_then(|s| s.cid())
                    .map(|c| c.as_slice().to_vec()),
                Some(issued[1].clone())
            );
            // The check goes on under the new CID; the echo moves the session.
            let net = h.net();
            let (_, cookie) = rrc_of(&mut peer, net[0].1.clone());
            h.datagram(4, moved, &seal_rrc(&mut peer, RrcMessage::response(cookie)));
            h.assert_moved_after_one_check(peer.handle, peer.addr, moved);
            // A record under a retired CID: from the new address it is dropped unopened,
            // from the old one it names no session.
            peer.cid = first.clone();
            h.datagram(5, moved, &peer.seal(b"under the old cid"));
            h.datagram(6, peer.addr, &peer.seal(b"old cid, old address"));
            assert!(h.upstream().is_empty());
            let s = h.stats();
            assert_eq!((s.drop_retired_cid, s.drop_unknown_session), (1, 1));
            assert_eq!(s.sessions_moved, 1, "no move back");
            // A KeyUpdate (the session's own handle, the handshake's CID in the command)
            // keeps the CIDs as they are.
            peer.cid = issued[1].clone();
            let mut update = peer.install(4, true);
            if let ShardCommand::InstallKeys13 { peer: addr, .. } = &mut update {
                *addr = moved;
            }
            h.command(7, update);
            peer.update(4);
            let table = h.core.sessions();
            assert_eq!(table.lookup_cid(&first), None);
            assert_eq!(table.lookup_cid(&issued[1]), slot(&h, moved));
            h.datagram(8, moved, &peer.seal(b"after the key update"));
            assert_eq!(h.upstream(), vec![(1, b"after the key update".to_vec())]);
        }

        #[test]
        fn our_records_switch_to_a_spare_cid_of_the_peer_after_an_address_change() {
            let mut h = Harness::new(RelayMode::Serve, |c| c.cid_len = 8);
            let mut peer = Peer13::new(55);
            peer.cid = vec![0xc0, 55, 1, 2, 3, 4, 5, 6];
            peer.rrc = true;
            peer.own_cid_len = 4;
            let theirs: Vec<Vec<u8>> = (0..3u8).map(|i| vec![0xee, i, 0xee, i]).collect();
            let mut install = peer.install(3, true);
            if let ShardCommand::InstallKeys13 { peer_cid, .. } = &mut install {
                *peer_cid = theirs[0].clone();
            }
            h.command(0, install);
            h.command(
                1,
                ShardCommand::PeerCids {
                    session: peer.handle,
                    immediate: None,
                    spare: theirs[1..].to_vec(),
                },
            );
            // The peer moves: the challenge to its new address carries its next CID.
            h.datagram(2, peer.addr, &peer.seal(b"from home"));
            let moved = SocketAddr::from(([203, 0, 113, 55], 62055));
            h.datagram(3, moved, &peer.seal(b"moved"));
            let net = h.net();
            assert_eq!(net.len(), 1);
            assert_eq!(cid_of(&net[0].1, 4), theirs[1]);
            // Control hears of it: the engine's records follow, and it tops its spares up.
            let handle = peer.handle;
            let rotated = move |cid: &[u8]| ControlInbound::PeerCidRotated {
                session: handle,
                cid: cid.to_vec(),
            };
            assert_eq!(h.inbound(), vec![rotated(&theirs[1])]);
            let (_, cookie) = rrc_of(&mut peer, net[0].1.clone());
            h.datagram(4, moved, &seal_rrc(&mut peer, RrcMessage::response(cookie)));
            let flow = h.flow_of(moved);
            h.on_flow(5, flow, b"reply");
            let net = h.net();
            assert_eq!(cid_of(&net[0].1, 4), theirs[1], "the new path keeps it");
            assert_eq!(h.stats().cid_rotations, 1);
            // We moved (the peer challenges us): the answer goes under its last spare CID;
            // out of spares, the next answer keeps it.
            h.datagram(
                6,
                moved,
                &seal_rrc(&mut peer, RrcMessage::challenge([1; 8])),
            );
            h.datagram(
                7,
                moved,
                &seal_rrc(&mut peer, RrcMessage::challenge([2; 8])),
            );
            let net = h.net();
            assert_eq!(net.len(), 2);
            assert!(net.iter().all(|(_, d)| cid_of(d, 4) == theirs[2]));
            assert_eq!(h.stats().cid_rotations, 2);
            // Once per rotation: the move (validated above) and the one spare taken.
            let inbound = h.inbound();
            assert_eq!(
                inbound
                    .iter()
                    .filter(|m| matches!(m, ControlInbound::PeerCidRotated { .. }))
                    .collect::<Vec<_>>(),
                vec![&rotated(&theirs[2])]
            );
            // Still none; cid_immediate switches at once.
            h.datagram(
                8_000,
                moved,
                &seal_rrc(&mut peer, RrcMessage::challenge([3; 8])),
            );
            assert_eq!(cid_of(&h.net()[0].1, 4), theirs[2]);
            h.command(
                8_001,
                ShardCommand::PeerCids {
                    session: peer.handle,
                    immediate: Some(vec![0xab; 6]),
                    spare: Vec::new(),
                },
            );
            h.on_flow(8_002, flow, b"now");
            assert_eq!(cid_of(&h.net()[0].1, 6), vec![0xab; 6]);
            assert_eq!(h.stats().cid_rotations, 2);
        }

        #[test]
        fn a_13_address_that_never_answers_does_not_take_the_session() {
            let (mut h, mut peer) = with_rrc(51);
            h.datagram(1, peer.addr, &peer.seal(b"from home"));
            let spoofed = SocketAddr::from(([198, 18, 0, 51], 4444));
            h.datagram(2, spoofed, &peer.seal(b"raced copy"));
            assert_eq!(h.net().len(), 1, "one challenge");
            for ms in [1_500, 2_600, 3_700, 4_800] {
                h.core.handle_timeout(h.at(ms), &mut h.fx);
            }
            assert_eq!(h.net().len(), 2, "two retransmissions");
            assert!(h.inbound().is_empty(), "never moved");
            assert!(slot(&h, peer.addr).is_some() && slot(&h, spoofed).is_none());
            assert_eq!(h.rrc_counts(), (3, 0, 1));
        }

        #[test]
        fn a_13_peers_challenge_is_answered_and_without_rrc_dropped() {
            let (mut h, mut peer) = with_rrc(52);
            h.datagram(
                1,
                peer.addr,
                &seal_rrc(&mut peer, RrcMessage::challenge([7; 8])),
            );
            let net = h.net();
            assert_eq!(net.len(), 1);
            assert_eq!(net[0].0, peer.addr);
            assert_eq!(
                rrc_of(&mut peer, net[0].1.clone()),
                (RrcMessageType::PathResponse, [7; 8])
            );
            assert_eq!(h.stats().rrc_responses_sent, 1);
            // RFC 9853 §3: not negotiated, not used: dropped, and moves are immediate.
            let mut plain = Peer13::new(53);
            plain.cid = vec![0xc0, 53, 1, 2, 3, 4, 5, 6];
            h.command(2, plain.install(3, true));
            h.datagram(
                3,
                plain.addr,
                &seal_rrc(&mut plain, RrcMessage::challenge([8; 8])),
            );
            assert!(h.net().is_empty());
            assert_eq!(h.stats().rrc_responses_sent, 1);
            let moved = SocketAddr::from(([203, 0, 113, 53], 62053));
            h.datagram(4, moved, &plain.seal(b"moved"));
            assert!(slot(&h, moved).is_some());
            assert_eq!(h.stats().rrc_challenges_sent, 0);
        }
        /// Control's datagrams for a session (`TransmitSession`: its engine's NewConnectionId,
        /// KeyUpdate, ACKs) go where the session's own records go, not to an address control
        /// named: while a new address is checked, there within its anti-amplification limit
        /// and to the validated one beyond it (RFC 9853 §5); after the move, to the new one,
        /// though control may not have heard of the move yet. And when the answer to the
        /// check comes under a later CID, control hears of the move before the CIDs it
        /// retires, so the replacements it sends are its only flight on the new path.
        #[test]
        fn control_datagrams_of_a_session_follow_its_path_and_the_move_is_reported_first() {
            let (mut h, mut peer) = with_rrc(56);
            let first = peer.cid.clone();
            let later = vec![0xc0, 56, 9, 9, 3, 4, 5, 6];
            h.command(
                1,
                ShardCommand::AddCids {
                    session: peer.handle,
                    cids: vec![later.clone()],
                },
            );
            h.datagram(2, peer.addr, &peer.seal(b"from home"));
            let moved = SocketAddr::from(([203, 0, 113, 56], 62056));
            let probe = peer.seal(b"from the new port");
            h.datagram(3, moved, &probe);
            let net = h.net();
            let (_, cookie) = rrc_of(&mut peer, net[0].1.clone());
            h.upstream();
            let session = peer.handle;
            let transmit = |len| ShardCommand::TransmitSession {
                session,
                datagram: vec![0x2f; len],
            };
            // Within the limit: to the address being checked (what it sent, times three,
            // less the challenge).
            h.command(4, transmit(40));
            assert_eq!(h.net(), vec![(moved, vec![0x2f; 40])]);
            // Beyond it: to the validated address.
            h.command(5, transmit(3 * probe.len()));
            assert_eq!(h.net(), vec![(peer.addr, vec![0x2f; 3 * probe.len()])]);
            // The answer comes under the later CID: the session moves, then retires the
            // handshake's CID, in that order.
            peer.cid = later.clone();
            h.datagram(6, moved, &seal_rrc(&mut peer, RrcMessage::response(cookie)));
            assert_eq!(
                h.inbound(),
                vec![
                    ControlInbound::PeerMoved {
                        session: peer.handle,
                        from: peer.addr,
                        peer: moved,
                    },
                    ControlInbound::CidsRetired {
                        session: peer.handle,
                        cids: vec![first],
                    },
                ]
            );
            // Control, not yet aware of the move, sends the replacement: it goes to the new
            // address, any size. (A `Transmit` still goes where control says.)
            h.command(7, transmit(3 * probe.len()));
            assert_eq!(h.net(), vec![(moved, vec![0x2f; 3 * probe.len()])]);
            h.command(
                8,
                ShardCommand::Transmit {
                    peer: peer.addr,
                    datagram: vec![0x16; 20],
                },
            );
            assert_eq!(h.net(), vec![(peer.addr, vec![0x16; 20])]);
            // A session that is gone: nothing sent, counted.
            h.command(
                9,
                ShardCommand::Close {
                    session: peer.handle,
                    reason: dtls_shard::CloseCause::Requested,
                },
            );
            h.net();
            h.inbound();
            let before = h.stats().drop_unknown_session;
            h.command(10, transmit(40));
            assert!(h.net().is_empty());
            assert_eq!(h.stats().drop_unknown_session, before + 1);
        }
    }
}

/// DTLS 1.2 sessions with RFC 9146 connection IDs: tls12_cid records found by CID, moves
/// only for the newest authenticated record, unknown CIDs dropped.
mod v12_cid {
    use dataplane::record::{CidOpener, CidSealer, TLS12_CID};

    use super::*;

    /// A 1.2 peer that asked the core for none and was given an 8-byte CID by it; the
    /// core's records to it carry the peer's own 4-byte CID.
    struct PeerCid {
        addr: SocketAddr,
        handle: SessionId,
        seed: u8,
        cid: Vec<u8>,
        peer_cid: Vec<u8>,
        sealer: CidSealer,
        opener: CidOpener,
        /// Both sides negotiated the return-routability check (RFC 9853).
        rrc: bool,
    }

    impl PeerCid {
        fn new(n: u8) -> Self {
            let seed = n.wrapping_mul(2);
            let cid = vec![0x07, 0, n, 1, 2, 3, 4, 5];
            let peer_cid = vec![0xaa, n, 0xbb, 0xcc];
            Self {
                addr: SocketAddr::from(([192, 0, 2, n], 4000 + u16::from(n))),
                handle: SessionId::new(500 + u64::from(n)),
                seed,
                sealer: CidSealer::new(1, key(seed), 0, &cid).expect("sealer"),
                opener: CidOpener::new(
                    1,
                    key(seed.wrapping_add(1)),
                    ReplayWindow::new(128),
                    &peer_cid,
                )
                .expect("opener"),
                cid,
                peer_cid,
                rrc: false,
            }
        }

        fn install(&self) -> ShardCommand {
            ShardCommand::InstallKeys {
                session: self.handle,
                peer: self.addr,
                read: ReadKeys {
                    epoch: 1,
                    key: key(self.seed),
                    replay_window: 128,
                },
                write: WriteKeys {
                    epoch: 1,
                    key: key(self.seed.wrapping_add(1)),
                    next_seq: 0,
                },
                heartbeat: HeartbeatPolicy::default(),
                cid: self.cid.clone(),
                peer_cid: self.peer_cid.clone(),
                rrc: self.rrc,
                upstream: UpstreamPrefix::None,
            }
        }

        fn seal(&mut self, content: &[u8]) -> Vec<u8> {
            self.seal_as(ContentType::ApplicationData, content)
        }

        fn seal_as(&mut self, content_type: ContentType, content: &[u8]) -> Vec<u8> {
            let mut record = vec![0; self.sealer.record_len(content.len(), 3)];
            let at = self.sealer.plaintext_offset();
            record[at..at + content.len()].copy_from_slice(content);
            let n = self
                .sealer
                .seal(content_type, &mut record, content.len(), 3)
                .expect("seal");
            record.truncate(n);
            record
        }

        fn open(&mut self, mut record: Vec<u8>) -> (ContentType, Vec<u8>) {
            let opened = self
                .opener
                .open(&mut record)
                .expect("the core's record opens");
            (opened.content_type, opened.plaintext.to_vec())
        }
    }

    fn with_cid(n: u8) -> (Harness, PeerCid) {
        let mut h = Harness::new(RelayMode::Serve, |c| c.cid_len = 8);
        let peer = PeerCid::new(n);
        h.command(0, peer.install());
        (h, peer)
    }

    fn slot(h: &Harness, addr: SocketAddr) -> Option<dtls_shard::SlotId> {
        h.core.sessions().lookup(&addr)
    }

    #[test]
    fn records_from_a_new_address_move_the_session() {
        let (mut h, mut peer) = with_cid(21);
        let first = peer.seal(b"from home");
        assert_eq!(first[0], TLS12_CID);
        h.datagram(1, peer.addr, &first);
        let moved = SocketAddr::from(([203, 0, 113, 21], 61000));
        let second = peer.seal(b"from the new port");
        h.datagram(2, moved, &second);
        let delivered: Vec<Vec<u8>> = h.upstream().into_iter().map(|(_, p)| p).collect();
        assert_eq!(
            delivered,
            vec![b"from home".to_vec(), b"from the new port".to_vec()]
        );
        assert_eq!(
            h.inbound(),
            vec![ControlInbound::PeerMoved {
                session: peer.handle,
                from: peer.addr,
                peer: moved,
            }]
        );
        // Replies go to the new address, in tls12_cid records with the peer's CID.
        let flow = h.flow_of(moved);
        h.on_flow(3, flow, b"reply");
        let net = h.net();
        assert_eq!(net[0].0, moved);
        assert_eq!(net[0].1[0], TLS12_CID);
        assert_eq!(&net[0].1[11..15], &peer.peer_cid[..]);
        assert_eq!(
            peer.open(net[0].1.clone()),
            (ContentType::ApplicationData, b"reply".to_vec())
        );
        assert!(slot(&h, peer.addr).is_none());
        assert_eq!(h.stats().sessions_moved, 1);
    }

    #[test]
    fn an_old_record_replayed_from_a_spoofed_address_does_not_move_the_session() {
        let (mut h, mut peer) = with_cid(22);
        let older = peer.seal(b"older");
        let newer = peer.seal(b"newer");
        h.datagram(1, peer.addr, &older);
        h.datagram(2, peer.addr, &newer);
        let home = slot(&h, peer.addr).expect("session");
        let attacker = SocketAddr::from(([198, 18, 0, 22], 4444));
        // Copies of records already seen: refused by the replay window.
        h.datagram(3, attacker, &older);
        h.datagram(4, attacker, &newer);
        // A forged record under the CID: fails authentication.
        let mut forged = peer.seal(b"forged");
        let last = forged.len() - 1;
        forged[last] ^= 0x80;
        h.datagram(5, attacker, &forged);
        let delivered: Vec<Vec<u8>> = h.upstream().into_iter().map(|(_, p)| p).collect();
        assert_eq!(delivered, vec![b"older".to_vec(), b"newer".to_vec()]);
        assert!(h.inbound().is_empty(), "no move reported");
        assert_eq!(slot(&h, peer.addr), Some(home));
        assert!(slot(&h, attacker).is_none());
        let s = h.stats();
        assert_eq!((s.sessions_moved, s.drop_not_moved), (0, 3));
        assert_eq!((s.drop_replay, s.drop_bad_tag), (2, 1));
    }

    #[test]
    fn a_reordered_older_record_from_elsewhere_is_delivered_but_does_not_move() {
        let (mut h, mut peer) = with_cid(23);
        let older = peer.seal(b"older");
        let newer = peer.seal(b"newer");
        h.datagram(1, peer.addr, &newer);
        let elsewhere = SocketAddr::from(([198, 18, 0, 23], 5555));
        h.datagram(2, elsewhere, &older);
        let delivered: Vec<Vec<u8>> = h.upstream().into_iter().map(|(_, p)| p).collect();
        assert_eq!(delivered, vec![b"newer".to_vec(), b"older".to_vec()]);
        assert!(h.inbound().is_empty());
        assert!(slot(&h, peer.addr).is_some());
        assert_eq!(h.stats().drop_not_moved, 1);
    }

    #[test]
    fn a_garbage_connection_id_is_counted_and_dropped() {
        let (mut h, mut peer) = with_cid(24);
        let mut record = peer.seal(b"whose?");
        record[12] ^= 0xff; // inside the CID
        h.datagram(1, SocketAddr::from(([203, 0, 113, 24], 1)), &record);
        h.datagram(2, peer.addr, &record);
        assert!(h.upstream().is_empty());
        assert!(h.inbound().is_empty(), "nothing for control");
        let s = h.stats();
        assert_eq!((s.drop_unknown_session, s.sessions_moved), (2, 0));
        // The session is untouched: its next record still opens.
        let ok = peer.seal(b"still here");
        h.datagram(3, peer.addr, &ok);
        assert_eq!(h.upstream().len(), 1);
    }

    /// Issue 18's MITM reorder test: a client's Finished under the CID it negotiated, alone
    /// in a datagram before its keys, reaches control (it used to be parked only, and the
    /// handshake stalled); a stranger's record under an unknown CID still reaches nobody.
    #[test]
    fn a_handshaking_peers_lone_cid_record_reaches_control_and_waits_for_keys() {
        let mut h = Harness::new(RelayMode::Serve, |c| c.cid_len = 8);
        let mut peer = PeerCid::new(26);
        h.command(0, ShardCommand::ExpectKeys { peer: peer.addr });
        let finished = peer.seal_as(ContentType::Handshake, b"finished");
        h.datagram(1, peer.addr, &finished);
        let stranger = SocketAddr::from(([198, 18, 0, 26], 26));
        h.datagram(1, stranger, &peer.seal(b"nobody asked"));
        assert_eq!(
            h.inbound(),
            vec![ControlInbound::Handshake {
                peer: peer.addr,
                datagram: finished,
            }]
        );
        let data = peer.seal(b"first data");
        h.datagram(2, peer.addr, &data);
        let s = h.stats();
        assert_eq!((s.early_parked, s.drop_unknown_session), (2, 1));
        h.command(3, peer.install());
        let delivered: Vec<Vec<u8>> = h.upstream().into_iter().map(|(_, p)| p).collect();
        assert_eq!(delivered, vec![b"first data".to_vec()]);
    }

    #[test]
    fn a_plain_record_where_the_cid_was_negotiated_is_dropped() {
        let (mut h, peer) = with_cid(25);
        let mut plain = Sealer::new(1, key(peer.seed), 5).expect("sealer");
        let record = common::seal_record(&mut plain, ContentType::ApplicationData, b"plain");
        h.datagram(1, peer.addr, &record);
        assert!(h.upstream().is_empty());
        assert_eq!(h.stats().drop_unexpected_content, 1);
    }

    /// RFC 9853: sessions that negotiated the return-routability check.
    mod rrc {
        use dtls_proto::{RrcMessage, RrcMessageType};

        use super::*;

        fn with_rrc(n: u8) -> (Harness, PeerCid) {
            let mut h = Harness::new(RelayMode::Serve, |c| c.cid_len = 8);
            let mut peer = PeerCid::new(n);
            peer.rrc = true;
            h.command(0, peer.install());
            (h, peer)
        }

        impl PeerCid {
            fn seal_rrc(&mut self, msg: RrcMessage) -> Vec<u8> {
                let mut body = [0u8; 16];
                let len = msg.emit(&mut body).expect("fits");
                let mut record = vec![0; self.sealer.record_len(len, 0)];
                let at = self.sealer.plaintext_offset();
                record[at..at + len].copy_from_slice(&body[..len]);
                let n = self
                    .sealer
                    .seal(ContentType::ReturnRoutabilityCheck, &mut record, len, 0)
                    .expect("seal");
                record.truncate(n);
                record
            }

            /// The cookie of the path_challenge in `record`.
            fn challenge(&mut self, record: Vec<u8>) -> [u8; 8] {
                let (content_type, body) = self.open(record);
                assert_eq!(content_type, ContentType::ReturnRoutabilityCheck);
                match RrcMessage::parse(&body) {
                    Ok(RrcMessage::Known {
                        kind: RrcMessageType::PathChallenge,
                        cookie,
                    }) => cookie,
                    other => panic!("{other:?}"),
                }
            }
        }

        const MOVED: ([u8; 4], u16) = ([203, 0, 113, 40], 62000);

        #[test]
        fn the_session_moves_only_after_the_new_address_answers_the_challenge() {
            let (mut h, mut peer) = with_rrc(40);
            h.datagram(1, peer.addr, &peer.seal(b"from home"));
            let moved = SocketAddr::from(MOVED);
            h.datagram(2, moved, &peer.seal(b"from the new port"));
            // Delivered, but the session stays until the new address answers.
            let delivered: Vec<Vec<u8>> = h.upstream().into_iter().map(|(_, p)| p).collect();
            assert_eq!(
                delivered,
                vec![b"from home".to_vec(), b"from the new port".to_vec()]
            );
            assert!(h.inbound().is_empty(), "no move yet");
            assert!(slot(&h, peer.addr).is_some() && slot(&h, moved).is_none());
            let net = h.net();
            assert_eq!(net.len(), 1);
            assert_eq!(net[0].0, moved, "the challenge goes to the new address");
            let cookie = peer.challenge(net[0].1.clone());
            // A reply meanwhile goes to the new address: within three times what it sent.
            let flow = h.flow_of(peer.addr);
            h.on_flow(3, flow, b"reply");
            let net = h.net();
            assert_eq!(net[0].0, moved);
            assert_eq!(
                peer.open(net[0].1.clone()),
                (ContentType::ApplicationData, b"reply".to_vec())
            );
            // A response with another cookie is silently discarded.
            let mut wrong = cookie;
            wrong[0] ^= 1;
            h.datagram(4, moved, &peer.seal_rrc(RrcMessage::response(wrong)));
            assert!(h.inbound().is_empty());
            // The echo of the cookie validates it: the session moves.
            h.datagram(5, moved, &peer.seal_rrc(RrcMessage::response(cookie)));
            h.assert_moved_after_one_check(peer.handle, peer.addr, moved);
            // Records from the new address are the session's own now: no new check.
            h.datagram(6, moved, &peer.seal(b"settled"));
            assert!(h.net().is_empty());
            assert_eq!(h.stats().rrc_challenges_sent, 1);
        }

        #[test]
        fn an_address_that_never_answers_does_not_take_the_session() {
            let (mut h, mut peer) = with_rrc(41);
            h.datagram(1, peer.addr, &peer.seal(b"from home"));
            // An off-path copy of a genuine record that won the race from elsewhere.
            let spoofed = SocketAddr::from(([198, 18, 0, 41], 4444));
            h.datagram(2, spoofed, &peer.seal(b"raced copy"));
            assert_eq!(h.net().len(), 1, "one challenge");
            // Retransmitted after the timer, then given up.
            for ms in [1_500, 2_600, 3_700, 4_800] {
                h.core.handle_timeout(h.at(ms), &mut h.fx);
            }
            let net = h.net();
            assert_eq!(net.len(), 2, "retransmissions: {net:?}");
            let cookies: Vec<[u8; 8]> = net
                .into_iter()
                .map(|(to, record)| {
                    assert_eq!(to, spoofed);
                    peer.challenge(record)
                })
                .collect();
            assert_ne!(cookies[0], cookies[1], "a fresh cookie each time");
            assert!(h.inbound().is_empty(), "never moved");
            assert!(slot(&h, peer.addr).is_some() && slot(&h, spoofed).is_none());
            assert_eq!(h.rrc_counts(), (3, 0, 1));
            // Replies go to the session's own address again.
            let flow = h.flow_of(peer.addr);
            h.on_flow(5_000, flow, b"reply");
            assert_eq!(h.net()[0].0, peer.addr);
        }

        /// Issue 15: the sweep walks a large table a share per call; a path check still
        /// retransmits and gives up within one sweep interval of each timeout.
        #[test]
        fn path_checks_time_out_on_time_when_the_sweep_walks_a_share_per_call() {
            let mut h = Harness::new(RelayMode::Serve, |c| {
                c.cid_len = 8;
                c.max_sessions = 100_000;
                c.sweep_interval = Duration::from_secs(1);
            });
            let mut peer = PeerCid::new(43);
            peer.rrc = true;
            h.command(0, peer.install());
            h.core.handle_timeout(h.at(0), &mut h.fx);
            h.datagram(1, peer.addr, &peer.seal(b"from home"));
            let spoofed = SocketAddr::from(([198, 18, 0, 43], 4444));
            h.datagram(2, spoofed, &peer.seal(b"raced copy"));
            assert_eq!(h.net().len(), 1, "one challenge");
            let (mut sent, mut failed_at) = (vec![2], None);
            for ms in 3..=6_000 {
                let before = h.core.sweep_stats().slots;
                h.core.handle_timeout(h.at(ms), &mut h.fx);
                // 100 slots a millisecond (300 for the first call, 3 ms after the last).
                let share = if ms == 3 { 300 } else { 100 };
                assert_eq!(h.core.sweep_stats().slots - before, share, "at {ms} ms");
                if !h.net().is_empty() {
                    sent.push(ms);
                }
                if failed_at.is_none() && h.rrc_counts().2 == 1 {
                    failed_at = Some(ms);
                }
            }
            assert_eq!(sent.len(), 3, "two retransmissions: {sent:?}");
            let timeout = dtls_shard::RRC_TIMEOUT.as_millis() as u64;
            let failed = failed_at.expect("given up");
            for (prev, at) in sent.iter().zip(sent.iter().skip(1).chain([&failed])) {
                assert!(
                    (prev + timeout..=prev + timeout + 1_001).contains(at),
                    "{sent:?}, given up at {failed}"
                );
            }
            assert!(slot(&h, peer.addr).is_some() && slot(&h, spoofed).is_none());
            assert_eq!(h.rrc_counts(), (3, 0, 1));
        }

        #[test]
        fn what_goes_to_an_unvalidated_address_stays_within_three_times_what_it_sent() {
            let (mut h, mut peer) = with_rrc(42);
            h.datagram(1, peer.addr, &peer.seal(b"from home"));
            let spoofed = SocketAddr::from(([198, 18, 0, 42], 4444));
            let record = peer.seal(b"x");
            let received = record.len();
            h.datagram(2, spoofed, &record);
            let flow = h.flow_of(peer.addr);
            for i in 0..20u64 {
                h.on_flow(3 + i, flow, &[0x55; 100]);
            }
            let net = h.net();
            let to_new: usize = net
                .iter()
                .filter(|(to, _)| *to == spoofed)
                .map(|(_, d)| d.len())
                .sum();
            assert!(to_new <= 3 * received, "{to_new} > 3 x {received}");
            assert!(to_new > 0, "the challenge went out");
            assert_eq!(net.len(), 21, "the rest went to the validated address");
            assert!(
                net.iter()
                    .filter(|(to, _)| *to != spoofed)
                    .all(|(to, _)| *to == peer.addr)
            );
        }

        #[test]
        fn a_peers_challenge_is_answered_to_the_address_it_came_from() {
            let (mut h, mut peer) = with_rrc(43);
            h.datagram(1, peer.addr, &peer.seal_rrc(RrcMessage::challenge([9; 8])));
            let net = h.net();
            assert_eq!(net.len(), 1);
            assert_eq!(net[0].0, peer.addr);
            let (content_type, body) = peer.open(net[0].1.clone());
            assert_eq!(content_type, ContentType::ReturnRoutabilityCheck);
            assert_eq!(RrcMessage::parse(&body), Ok(RrcMessage::response([9; 8])));
            // Unknown message types are ignored (RFC 9853 §4).
            let body = [7u8, 1, 2];
            let mut unknown = vec![0; peer.sealer.record_len(body.len(), 0)];
            let at = peer.sealer.plaintext_offset();
            unknown[at..at + body.len()].copy_from_slice(&body);
            let n = peer
                .sealer
                .seal(
                    ContentType::ReturnRoutabilityCheck,
                    &mut unknown,
                    body.len(),
                    0,
                )
                .expect("seal");
            h.datagram(2, peer.addr, &unknown[..n]);
            assert!(h.net().is_empty());
            assert_eq!(h.stats().rrc_responses_sent, 1);
        }

        #[test]
        fn without_rrc_negotiated_challenges_are_dropped_and_moves_are_immediate() {
            let (mut h, mut peer) = with_cid(44);
            h.datagram(1, peer.addr, &peer.seal_rrc(RrcMessage::challenge([9; 8])));
            assert!(h.net().is_empty());
            assert_eq!(h.stats().rrc_responses_sent, 0);
            let moved = SocketAddr::from(MOVED);
            h.datagram(2, moved, &peer.seal(b"moved"));
            assert_eq!(h.inbound().len(), 1, "PeerMoved at once");
            assert_eq!(h.stats().rrc_challenges_sent, 0);
        }
    }
}
