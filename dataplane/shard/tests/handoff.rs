//! Records under a connection ID that reach a shard other than the one the CID names (the
//! kernel's reuseport hash after a NAT rebinding, steering off): two shard cores of one
//! process in memory, a DTLS 1.2 peer using a QUIC-LB CID that names shard 1.
//!
//! Without hand-off (a core given no [`Handoffs`], as every core was before) such a record
//! is dropped as `drop_unknown_session`: the owner never sees it, the session does not
//! move, and a client whose new address keeps hashing to the other shard is cut off. With
//! hand-off the receiving shard queues it to the owner, which opens it and moves the
//! session.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use dataplane::cid::{ConfigId, ServerIdLayout, ShardField};
use dataplane::record::v13::{HeaderForm, InnerContentType, Sealer13, TrafficKeys13};
use dataplane::record::{Aead, CidSealer, ContentType, TLS12_CID};
use dtls_shard::{
    ControlInbound, Effects, HANDOFF_CAPACITY, Handoff, Handoffs, HeartbeatPolicy, OpenFlow,
    ReadKeys, ReadKeys13, RelayMode, SessionId, ShardCommand, ShardConfig, ShardCore,
    ShardCounters, ShardQueues, ShardStats, UpstreamPrefix, WriteKeys, WriteKeys13,
};

use common::key;

#[derive(Debug, Default)]
struct Flows(u32);

impl OpenFlow<u32> for Flows {
    fn open_flow(&mut self, _peer: std::net::SocketAddr) -> std::io::Result<u32> {
        self.0 += 1;
        Ok(self.0)
    }
}

/// One shard core of a process with `shards` cores.
struct Core {
    core: ShardCore<u32>,
    fx: Effects,
    flows: Flows,
    counters: ShardCounters,
    t0: Instant,
}

impl Core {
    fn new(queues: Arc<ShardQueues>) -> Self {
        let mut config =
            ShardConfig::with_mode(RelayMode::Serve, "192.0.2.200:9".parse().expect("literal"));
        config.cid_len = 8;
        Self {
            core: ShardCore::new(queues, config, 7, &[7; 32]),
            fx: Effects::new(64, 1472, false),
            flows: Flows::default(),
            counters: ShardCounters::default(),
            t0: Instant::now(),
        }
    }

    fn command(&mut self, command: ShardCommand) {
        self.core
            .handle_command(self.t0, command, &mut self.fx, &mut self.flows);
        self.core.end_commands(&mut self.fx);
    }

    fn datagram(&mut self, from: SocketAddr, datagram: &[u8]) {
        let mut datagram = datagram.to_vec();
        self.core
            .handle_datagram(self.t0, from, &mut datagram, &mut self.fx, &mut self.flows);
    }

    /// Handles what other shards queued for this one; returns how many.
    fn handoffs(&mut self) -> usize {
        let mut n = 0;
        while let Some(mut h) = self.core.queues().handoffs().pop() {
            self.core
                .handle_handoff(self.t0, h.source, &mut h.datagram, &mut self.fx);
            n += 1;
        }
        n
    }

    fn upstream(&mut self) -> Vec<Vec<u8>> {
        let mut sent = Vec::new();
        self.core.flush_flows(&mut self.fx, |_, payload, _| {
            sent.push(payload.to_vec());
            Ok(payload.len())
        });
        sent
    }

    fn inbound(&mut self) -> Vec<ControlInbound> {
        self.core.pump();
        std::iter::from_fn(|| self.core.queues().poll_inbound()).collect()
    }

    fn stats(&mut self) -> ShardStats {
        self.core.publish(&self.counters);
        self.counters.snapshot()
    }
}

/// Where `dtlsd serve` puts the shard id: 8-octet CIDs, 2-octet server ID (node 8 bits,
/// shard 8 bits).
fn field() -> ShardField {
    let layout = ServerIdLayout::new(2, 8, 8).expect("layout");
    ShardField::plaintext_with_length(ConfigId::new(0).expect("id"), layout, 8).expect("fits")
}

/// Two shard cores; with `handoff` each can hand records to the other.
fn two_shards(handoff: bool) -> [Core; 2] {
    let queues: Vec<_> = (0..2).map(|_| Arc::new(ShardQueues::new(64, 64))).collect();
    let mut cores = [Core::new(queues[0].clone()), Core::new(queues[1].clone())];
    if handoff {
        for (i, core) in cores.iter_mut().enumerate() {
            core.core
                .set_handoffs(Handoffs::new(field(), i as u16, queues.clone()));
        }
    }
    cores
}

/// A DTLS 1.2 peer whose session shard 1 owns: its CID names node 0, shard 1.
struct Peer {
    addr: SocketAddr,
    sealer: CidSealer,
}

const CID_SHARD1: [u8; 8] = [0x07, 0, 1, 0xa1, 0xa2, 0xa3, 0xa4, 0xa5];

impl Peer {
    fn new() -> Self {
        Self {
            addr: "192.0.2.1:4001".parse().expect("literal"),
            sealer: CidSealer::new(1, key(2), 0, &CID_SHARD1).expect("sealer"),
        }
    }

    fn install(&self) -> ShardCommand {
        ShardCommand::InstallKeys {
            session: SessionId::new(77),
            peer: self.addr,
            read: ReadKeys {
                epoch: 1,
                key: key(2),
                replay_window: 128,
            },
            write: WriteKeys {
                epoch: 1,
                key: key(3),
                next_seq: 0,
            },
            heartbeat: HeartbeatPolicy::default(),
            cid: CID_SHARD1.to_vec(),
            peer_cid: Vec::new(),
            rrc: false,
            upstream: UpstreamPrefix::None,
        }
    }

    fn seal(&mut self, content: &[u8]) -> Vec<u8> {
        let mut record = vec![0; self.sealer.record_len(content.len(), 0)];
        let at = self.sealer.plaintext_offset();
        record[at..at + content.len()].copy_from_slice(content);
        let n = self
            .sealer
            .seal(ContentType::ApplicationData, &mut record, content.len(), 0)
            .expect("seal");
        record.truncate(n);
        record
    }
}

/// A tls12_cid record under `cid`.
fn seal12(cid: &[u8], content: &[u8]) -> Vec<u8> {
    let mut sealer = CidSealer::new(1, key(2), 0, cid).expect("sealer");
    let mut record = vec![0; sealer.record_len(content.len(), 0)];
    let at = sealer.plaintext_offset();
    record[at..at + content.len()].copy_from_slice(content);
    let n = sealer
        .seal(ContentType::ApplicationData, &mut record, content.len(), 0)
        .expect("seal");
    record.truncate(n);
    record
}

fn moved() -> SocketAddr {
    "203.0.113.5:61000".parse().expect("literal")
}

#[test]
fn without_handoff_a_record_on_the_wrong_shard_is_dropped() {
    let [mut s0, mut s1] = two_shards(false);
    let mut peer = Peer::new();
    s1.command(peer.install());
    let record = peer.seal(b"after the rebinding");
    assert_eq!(record[0], TLS12_CID);
    // The kernel's hash sent the new 4-tuple to shard 0.
    s0.datagram(moved(), &record);
    assert!(s0.upstream().is_empty());
    assert_eq!(s0.stats().drop_unknown_session, 1, "dropped, counted");
    assert_eq!(s0.stats().cid_handoffs, 0);
    assert_eq!(s1.handoffs(), 0, "the owner never sees it");
    assert!(s1.inbound().is_empty(), "the session did not move");
}

#[test]
fn a_record_on_the_wrong_shard_is_handed_to_its_owner_and_moves_the_session() {
    let [mut s0, mut s1] = two_shards(true);
    let mut peer = Peer::new();
    s1.command(peer.install());
    s1.datagram(peer.addr, &peer.seal(b"from home"));
    s0.datagram(moved(), &peer.seal(b"after the rebinding"));
    assert!(s0.upstream().is_empty());
    let s = s0.stats();
    assert_eq!((s.cid_handoffs, s.drop_unknown_session), (1, 0));
    assert_eq!(s1.handoffs(), 1);
    assert_eq!(
        s1.upstream(),
        vec![b"from home".to_vec(), b"after the rebinding".to_vec()]
    );
    assert_eq!(
        s1.inbound(),
        vec![ControlInbound::PeerMoved {
            session: SessionId::new(77),
            from: peer.addr,
            peer: moved(),
        }]
    );
    assert_eq!(s1.stats().sessions_moved, 1);
    // The owner's own records from the new address are its own: no hand-off.
    s1.datagram(moved(), &peer.seal(b"steered"));
    assert_eq!(s1.upstream(), vec![b"steered".to_vec()]);
    assert_eq!(s1.stats().cid_handoffs, 0);
}

#[test]
fn a_handed_off_record_is_never_handed_on() {
    let [mut s0, mut s1] = two_shards(true);
    // Shard 1 is handed a record naming shard 0 (say the group changed under a sender):
    // it holds no such session and drops it, counted, instead of handing it back.
    let cid0 = [0x07, 0, 0, 1, 2, 3, 4, 5];
    s1.core
        .queues()
        .handoffs()
        .push(Handoff {
            source: moved(),
            datagram: seal12(&cid0, b"ping-pong"),
        })
        .expect("room");
    assert_eq!(s1.handoffs(), 1);
    assert_eq!(s0.handoffs(), 0, "not handed on");
    let s = s1.stats();
    assert_eq!((s.cid_handoffs, s.drop_unknown_session), (0, 1));
}

#[test]
fn a_full_handoff_queue_drops_and_counts() {
    let [mut s0, mut s1] = two_shards(true);
    let mut peer = Peer::new();
    s1.command(peer.install());
    for _ in 0..=HANDOFF_CAPACITY {
        s0.datagram(moved(), &peer.seal(b"x"));
    }
    let s = s0.stats();
    assert_eq!(
        (s.cid_handoffs, s.drop_handoff_full),
        (HANDOFF_CAPACITY as u64, 1)
    );
    assert_eq!(s1.handoffs(), HANDOFF_CAPACITY);
}

#[test]
fn other_cids_and_records_stay_where_they_landed() {
    let [mut s0, mut s1] = two_shards(true);
    // A CID of another QUIC-LB configuration, one naming a shard past the last, and one
    // naming this shard: counted here as unknown, never queued.
    for cid in [
        [0x27, 0, 1, 1, 2, 3, 4, 5],
        [0x07, 0, 9, 1, 2, 3, 4, 5],
        [0x07, 0, 0, 1, 2, 3, 4, 5],
    ] {
        s0.datagram(moved(), &seal12(&cid, b"x"));
    }
    let s = s0.stats();
    assert_eq!((s.cid_handoffs, s.drop_unknown_session), (0, 3));
    assert_eq!(s1.handoffs(), 0);
}

fn keys13(seed: u8) -> TrafficKeys13 {
    TrafficKeys13::new(
        Aead::Aes128Gcm,
        &[seed; 16],
        &[seed ^ 0x33; 12],
        &[seed ^ 0x77; 16],
    )
    .expect("valid key sizes")
}

#[test]
fn a_dtls13_record_with_the_c_bit_is_handed_over_too() {
    let [mut s0, mut s1] = two_shards(true);
    let home: SocketAddr = "198.51.100.3:5003".parse().expect("literal");
    s1.command(ShardCommand::InstallKeys13 {
        session: SessionId::new(78),
        peer: home,
        read: Some(Box::new(ReadKeys13 {
            epoch: 3,
            keys: keys13(8),
            replay_window: 128,
            next_expected: 0,
        })),
        write: Some(Box::new(WriteKeys13 {
            epoch: 3,
            keys: keys13(9),
            next_seq: 0,
        })),
        cid: CID_SHARD1.to_vec(),
        peer_cid: Vec::new(),
        rrc: false,
        upstream: UpstreamPrefix::None,
    });
    let mut sealer = Sealer13::new(3, keys13(8));
    let form = HeaderForm::with_cid(&CID_SHARD1);
    let content = b"1.3 after the rebinding";
    let mut record = vec![0; sealer.record_len(&form, content.len(), 0)];
    let at = sealer.plaintext_offset(&form);
    record[at..at + content.len()].copy_from_slice(content);
    let n = sealer
        .seal(
            InnerContentType::ApplicationData,
            &form,
            &mut record,
            content.len(),
            0,
        )
        .expect("seal");
    record.truncate(n);
    assert_eq!(record[0] & 0xf0, 0x30, "unified header with the C bit");
    s0.datagram(moved(), &record);
    assert_eq!(s0.stats().cid_handoffs, 1);
    assert_eq!(s1.handoffs(), 1);
    assert_eq!(s1.upstream(), vec![content.to_vec()]);
    assert_eq!(s1.stats().sessions_moved, 1);
}

/// In a fleet ([`Handoffs::with_nodes`]): a record whose CID names another node goes to the
/// node forwarder's queue with its source, whether 1.2 or 1.3, counted in `cid_forwards`;
/// this node's CIDs are still handed between its shards; a full forwarder queue drops and
/// counts. The forwarded copy, handed to the owner's shard with the client's address (what
/// the owner's forwarder does), moves the session there.
#[test]
fn a_cid_naming_another_node_goes_to_the_node_forwarder() {
    let queues: Vec<_> = (0..2).map(|_| Arc::new(ShardQueues::new(64, 64))).collect();
    let (tx, rx) = std::sync::mpsc::sync_channel(2);
    // This node is node 5; the peer's CID names node 0, shard 1 (another node's session).
    let mut here = Core::new(queues[0].clone());
    here.core
        .set_handoffs(Handoffs::new(field(), 0, queues.clone()).with_nodes(5, tx));
    let mut peer = Peer::new();
    let record = peer.seal(b"to node 0");
    here.datagram(moved(), &record);
    let mut v13 = vec![0x3c];
    v13.extend_from_slice(&CID_SHARD1);
    v13.extend_from_slice(&[0, 1, 0xaa, 0xbb]);
    here.datagram(moved(), &v13);
    here.datagram(moved(), &record);
    let s = here.stats();
    assert_eq!(
        (s.cid_forwards, s.drop_forward_full, s.cid_handoffs),
        (2, 1, 0)
    );
    assert_eq!(s.drop_unknown_session, 0);
    let first = rx.try_recv().expect("queued");
    assert_eq!((first.node, first.source), (0, moved()));
    assert_eq!(first.datagram, record);
    assert_eq!(rx.try_recv().expect("queued").datagram, v13);
    assert_eq!(
        queues[1].handoffs().pop(),
        None,
        "not handed to a local shard"
    );

    // Node 0, shard 1, the owner: the forwarder hands it over with the client's address.
    let [_, mut owner] = two_shards(true);
    owner.command(peer.install());
    owner
        .core
        .queues()
        .handoffs()
        .push(Handoff {
            source: first.source,
            datagram: first.datagram,
        })
        .expect("room");
    assert_eq!(owner.handoffs(), 1);
    assert_eq!(owner.upstream(), vec![b"to node 0".to_vec()]);
    assert_eq!(owner.stats().sessions_moved, 1);
}
