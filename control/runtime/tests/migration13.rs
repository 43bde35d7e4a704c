//! Issue 13: a DTLS 1.3 client that moves under a connection ID, through the real path of
//! both daemons minus their sockets and threads: `dtlsd connect`'s shard core (connect
//! mode) and control loop (client engines) on one side, `dtlsd serve`'s shard core (serve
//! mode) and control loop (acceptor, server engines) on the other, a NAT between them that
//! gives the client a new address, and an echo backend behind the server. One virtual
//! clock; every hop is delivered in order, nothing is lost except what goes to an address
//! the NAT no longer maps (as a real NAT whose mapping changed).
//!
//! What it checks: after a move, the server's replacement for the CID the client moved
//! past (a NewConnectionId, RFC 9147 §9) reaches the client on its new, validated path
//! (RFC 9853 §5) within the exchange that moved it, with the clock standing still, so not
//! after a retransmission timeout; and nothing of the session's is sent to the address the
//! client left.

mod common;

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use control::{CipherSuite, Config, ConnectionIds};
use dtls_crypto::SeededRng;
use dtls_io::ConnectedSent;
use dtls_proto::{NamedGroup, ProtocolVersion};
use dtls_runtime::{ControlThread, RuntimeConfig};
use dtls_shard::{
    Effects, FlowRef, OpenFlow, RelayMode, ShardConfig, ShardCore, ShardCounters, ShardQueues,
    ShardStats,
};

use common::{test_wall, verifier};

const SERVER: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 4433);
const BACKEND: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 7);
/// The local application's source address, on `dtlsd connect`'s listen socket.
const APP: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 50_000);
/// The server's CIDs (serve's default length).
const CID_LEN: u8 = 8;

/// The client's outside address after `moves` changes of the NAT: a new port each time,
/// a new address within 127.0.0.0/8 every second time.
fn outside(moves: u16) -> SocketAddr {
    let host = u8::try_from(1 + moves / 2).expect("few moves");
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, host)), 40_000 + moves)
}

/// What a shard sends in a turn: on its socket `(destination, datagram)`, on upstream
/// flows `(flow, datagram)`.
type Sent = (Vec<(SocketAddr, Vec<u8>)>, Vec<(FlowRef, Vec<u8>)>);

/// Upstream flows are numbers here.
struct Flows(u32);

impl OpenFlow<u32> for Flows {
    fn open_flow(&mut self, _peer: SocketAddr) -> io::Result<u32> {
        self.0 += 1;
        Ok(self.0)
    }
}

/// One daemon: its shard core and control loop over their queues.
struct Daemon {
    core: ShardCore<u32>,
    fx: Effects,
    flows: Flows,
    ctl: ControlThread,
    queues: Arc<ShardQueues>,
    counters: ShardCounters,
    rx: Vec<u8>,
}

impl Daemon {
    fn new(core: ShardCore<u32>, ctl: ControlThread, queues: Arc<ShardQueues>) -> Self {
        Self {
            core,
            fx: Effects::new(64, 1472, false),
            flows: Flows(0),
            ctl,
            queues,
            counters: ShardCounters::default(),
            rx: vec![0; 65_536],
        }
    }

    fn stats(&mut self) -> ShardStats {
        self.core.publish(&self.counters);
        self.counters.snapshot()
    }

    /// A datagram on the shard socket.
    fn receive(&mut self, now: Instant, from: SocketAddr, datagram: &[u8]) {
        let rx = &mut self.rx[..datagram.len()];
        rx.copy_from_slice(datagram);
        self.core
            .handle_datagram(now, from, rx, &mut self.fx, &mut self.flows);
    }

    /// A datagram on upstream flow `flow`.
    fn receive_flow(&mut self, now: Instant, flow: FlowRef, datagram: &[u8]) {
        let rx = &mut self.rx[..datagram.len()];
        rx.copy_from_slice(datagram);
        self.core.handle_flow_datagram(now, flow, rx, &mut self.fx);
    }

    /// One turn of both threads: the shard hands control what it staged, control runs
    /// (timers due at `now` included), the shard runs control's commands and its sweep.
    /// Returns what the shard then sends.
    fn turn(&mut self, now: Instant) -> Sent {
        self.core.pump();
        self.ctl.run_turn(now, test_wall());
        while let Some(command) = self.queues.poll_command() {
            self.core
                .handle_command(now, command, &mut self.fx, &mut self.flows);
        }
        self.core.end_commands(&mut self.fx);
        self.core.handle_timeout(now, &mut self.fx);
        let net = self
            .fx
            .net
            .sends()
            .map(|s| (s.destination, s.payload.to_vec()))
            .collect();
        self.fx.net.clear();
        let mut flows = Vec::new();
        self.core.flush_flows_together(&mut self.fx, |sends| {
            let mut sent = ConnectedSent::default();
            for (_, s) in sends {
                flows.push((FlowRef::from_token(s.flow), s.payload.to_vec()));
                sent.datagrams += 1;
            }
            sent
        });
        self.fx.opened.clear();
        (net, flows)
    }
}

/// `dtlsd connect` (1.3 only, CIDs on: it sends the server's, receives none) and `dtlsd
/// serve` (8-byte CIDs), the return-routability check on, with the NAT and backend.
struct World {
    client: Daemon,
    server: Daemon,
    /// The client's address as the server sees it.
    nat: SocketAddr,
    /// The client's flow to the server (its session's, once installed).
    client_flow: Option<FlowRef>,
    /// The local application's inbox.
    app: Vec<Vec<u8>>,
    /// Datagrams the server sent to addresses the NAT no longer maps.
    lost: Vec<(SocketAddr, Vec<u8>)>,
    /// The CIDs of the client's DTLS 1.3 records to the server, in order.
    cids: Vec<Vec<u8>>,
}

impl World {
    fn new(now: Instant) -> Self {
        let server_config = Config {
            connection_id: ConnectionIds::On { len: CID_LEN },
            rrc: true,
            ..common::server_config(vec![ProtocolVersion::Dtls1_3])
        };
        let (server_ctl, server_queues) = common::control_thread(server_config, now, 4096);
        let mut serve = ShardConfig::with_mode(RelayMode::Serve, BACKEND);
        serve.cid_len = usize::from(CID_LEN);
        let server_core = ShardCore::new(Arc::clone(&server_queues), serve, 3, &[3; 32]);

        let client_config = Config {
            cipher_suites: vec![CipherSuite::EcdheEcdsaAes128GcmSha256],
            versions: vec![ProtocolVersion::Dtls1_3],
            tls13_groups: vec![NamedGroup::X25519],
            server_name: Some("localhost".into()),
            connection_id: ConnectionIds::On { len: 0 },
            rrc: true,
            ..Config::new(verifier())
        };
        let client_queues = Arc::new(ShardQueues::new(4096, 4096));
        let mut seed = 100;
        let client_ctl = ControlThread::client(
            Arc::new(client_config),
            SERVER,
            vec![Arc::clone(&client_queues)],
            RuntimeConfig::default(),
            Box::new(move || {
                seed += 1;
                Box::new(SeededRng::new(seed)) as Box<dyn control::Rng + Send>
            }),
        )
        .expect("client config is valid");
        let connect = ShardConfig::with_mode(RelayMode::Connect, SERVER);
        let client_core = ShardCore::new(Arc::clone(&client_queues), connect, 5, &[5; 32]);
        Self {
            client: Daemon::new(client_core, client_ctl, client_queues),
            server: Daemon::new(server_core, server_ctl, server_queues),
            nat: outside(0),
            client_flow: None,
            app: Vec::new(),
            lost: Vec::new(),
            cids: Vec::new(),
        }
    }

    /// Turns both daemons at `now` (the clock stands still) until neither sends anything
    /// and neither control loop has work left.
    fn settle(&mut self, now: Instant) {
        for _ in 0..64 {
            let (client_net, client_flows) = self.client.turn(now);
            let (server_net, server_flows) = self.server.turn(now);
            let quiet = client_net.is_empty()
                && client_flows.is_empty()
                && server_net.is_empty()
                && server_flows.is_empty();
            for (to, datagram) in client_net {
                assert_eq!(to, APP, "connect's plaintext goes to the application");
                self.app.push(datagram);
            }
            for (flow, datagram) in client_flows {
                // Every upstream flow of connect goes to the server, through the NAT.
                self.client_flow = Some(flow);
                self.cids.extend(cid_of(&datagram).map(<[u8]>::to_vec));
                self.server.receive(now, self.nat, &datagram);
            }
            for (flow, datagram) in server_flows {
                // The echo backend.
                self.server.receive_flow(now, flow, &datagram);
            }
            for (to, datagram) in server_net {
                if to == self.nat {
                    let flow = self.client_flow.expect("the client spoke first");
                    self.client.receive_flow(now, flow, &datagram);
                } else {
                    self.lost.push((to, datagram));
                }
            }
            if quiet
                && self.client.queues.inbound_len() == 0
                && self.server.queues.inbound_len() == 0
            {
                return;
            }
        }
        panic!("no quiet turn");
    }

    /// The application sends `payload` and gets it back through the backend's echo.
    fn echo(&mut self, now: Instant, payload: &[u8]) {
        self.client.receive(now, APP, payload);
        self.settle(now);
        assert_eq!(
            self.app.pop().as_deref(),
            Some(payload),
            "echo of {payload:?}"
        );
    }
}

/// Moves of the client, back to back, one echo each: more than the spare CIDs it first got.
const MOVES: u16 = 12;

/// The CID of a DTLS 1.3 record with the C bit (RFC 9147 §4: unified header `001CSLEE`,
/// the CID right after the first byte), `CID_LEN` bytes.
fn cid_of(datagram: &[u8]) -> Option<&[u8]> {
    let first = *datagram.first()?;
    (first & 0xe0 == 0x20 && first & 0x10 != 0)
        .then(|| datagram.get(1..1 + usize::from(CID_LEN)))?
}

#[test]
fn a_moved_clients_replacement_cid_reaches_its_new_path_in_the_same_exchange() {
    let mut now = Instant::now();
    let mut w = World::new(now);
    w.echo(now, b"hello");
    // connect asks for spare CIDs once its Finished is acknowledged (RFC 9147 §9).
    now += Duration::from_millis(10);
    w.settle(now);
    let first = w.client.ctl.counters().snapshot().peer_cids_spare;
    assert_eq!(first, 8, "connect's first spares");
    let mut paths: Vec<Vec<u8>> = Vec::new();
    for k in 1..=MOVES {
        // The NAT maps the client to a new address; the old mapping is gone. The clock
        // stands still through the whole exchange: nothing can be a retransmission.
        now += Duration::from_millis(1);
        let left = w.nat;
        w.nat = outside(k);
        let spares = w.client.ctl.counters().snapshot().peer_cids_spare;
        let forwarded = w.client.stats().post_handshake_forwarded;
        let payload = k.to_be_bytes();
        w.cids.clear();
        w.echo(now, &payload);
        let server = w.server.stats();
        assert_eq!(
            (server.sessions_moved, server.rrc_validated),
            (u64::from(k), u64::from(k)),
            "move {k}: the server checked and moved the session (RFC 9853 §5)"
        );
        // Nothing of the session's went to the address the client left: not the server's
        // NewConnectionId replacing the CID the client moved past (it used to go there
        // first, addressed by control's stale view of the peer, and was lost).
        assert!(
            w.lost.is_empty(),
            "move {k}: sent to addresses the client left ({left}): {:?}",
            w.lost
                .iter()
                .map(|(a, d)| (*a, d.len()))
                .collect::<Vec<_>>()
        );
        // The replacement reached the client on its new path in this exchange, the clock
        // standing still (so not after a retransmission timeout).
        assert_eq!(
            w.client.ctl.counters().snapshot().peer_cids_spare,
            spares + 1,
            "move {k}: the replacement CID arrived"
        );
        // Once: the server's control heard of the move before the retirement, so the
        // NewConnectionId was its only flight on the new path, not resent there as a
        // flight that went to the old one.
        assert_eq!(
            w.client.stats().post_handshake_forwarded - forwarded,
            1,
            "move {k}: one NewConnectionId"
        );
        // The client's records on this path carry one CID, never used on another
        // (RFC 9147 §9, RFC 9853 §9).
        let last = w
            .cids
            .last()
            .cloned()
            .unwrap_or_else(|| panic!("move {k}: no CID"));
        assert!(
            !paths.contains(&last),
            "move {k}: CID {last:02x?} used on two paths"
        );
        paths.push(last);
    }
    // The client never ran short: every move past its first spares used a replacement.
    let client = w.client.ctl.counters().snapshot();
    assert_eq!(client.peer_cids_spare, first + u64::from(MOVES));
    assert_eq!(w.client.stats().cid_rotations, u64::from(MOVES));
    assert_eq!(
        w.server.ctl.counters().snapshot().cid_retirements,
        u64::from(MOVES)
    );
}
