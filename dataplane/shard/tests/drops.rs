//! What the shard does with records it must not relay: replays, garbage, wrong epochs, bad
//! tags, unknown peers, a full control queue. Single-threaded: the test drives the turns.

mod common;

use std::collections::BTreeSet;
use std::net::UdpSocket;
use std::sync::Arc;
use std::time::Instant;

use common::*;
use dataplane::record::ContentType;
use dtls_io::IoMode;
use dtls_shard::{ControlInbound, Shard, ShardQueues};

/// A shard with `peer`'s session installed and an echo backend.
fn setup(mode: IoMode, peer: &Peer, inbound: usize) -> (Shard, Arc<ShardQueues>, EchoBackend) {
    let backend = EchoBackend::start();
    let queues = Arc::new(ShardQueues::new(16, inbound));
    let mut shard = shard(config(backend.addr, mode), queues.clone());
    queues.push_command(peer.install()).expect("room");
    assert!(turn_until(&mut shard, |s| s.stats().sessions_active == 1));
    (shard, queues, backend)
}

/// Collects `n` echoes for `peer`, opened.
fn echoes(shard: &mut Shard, peer: &mut Peer, n: usize) -> BTreeSet<Vec<u8>> {
    let mut got = BTreeSet::new();
    while got.len() < n {
        let Some(d) = turn_until_recv(shard, peer) else {
            break;
        };
        let (ct, plaintext) = peer.open(d).expect("authentic reply");
        assert_eq!(ct, ContentType::ApplicationData);
        got.insert(plaintext);
    }
    got
}

fn set(items: &[&[u8]]) -> BTreeSet<Vec<u8>> {
    items.iter().map(|i| i.to_vec()).collect()
}

#[test]
fn replayed_records_are_dropped_and_counted() {
    for mode in modes("replayed_records_are_dropped_and_counted") {
        let mut peer = Peer::new(1);
        let (mut shard, _queues, _backend) = setup(mode, &peer, 16);
        let to = shard.local_addr().expect("addr");
        let first = peer.seal(b"first");
        let second = peer.seal(b"second");
        for d in [&first, &second, &first, &second, &first] {
            peer.socket.send_to(d, to).expect("send");
        }
        assert!(turn_until(&mut shard, |s| s.stats().datagrams_in == 5));
        let stats = shard.stats();
        assert_eq!(stats.records_opened, 2, "{mode:?} {stats:?}");
        assert_eq!(stats.drop_replay, 3);
        assert_eq!(stats.upstream_datagrams_out, 2);
        assert_eq!(
            echoes(&mut shard, &mut peer, 2),
            set(&[b"first", b"second"])
        );
        let session = shard.sessions().iter().next().expect("session stays");
        assert_eq!(session.counters.drops, 3);
        assert_eq!(session.counters.records_opened, 2);
    }
}

#[test]
fn garbage_is_counted_and_sessions_are_unaffected() {
    for mode in modes("garbage_is_counted_and_sessions_are_unaffected") {
        let mut peer = Peer::new(2);
        let (mut shard, queues, _backend) = setup(mode, &peer, 16);
        let to = shard.local_addr().expect("addr");

        let send = |peer: &Peer, d: &[u8]| {
            peer.socket.send_to(d, to).expect("send");
        };
        // Malformed: too short for a header; a length field beyond the datagram; a record
        // with a bad version; a good record followed by trailing garbage.
        send(&peer, &[23, 0xfe]);
        send(&peer, &[0xff; 100]);
        let mut bad_version = peer.seal(b"v");
        bad_version[1..3].copy_from_slice(&[3, 3]);
        send(&peer, &bad_version);
        let mut trailing = peer.seal(b"kept");
        trailing.extend_from_slice(&[23, 0xfe, 0xfd, 0]);
        send(&peer, &trailing);
        // Bad tag and an epoch the session has no keys for.
        let mut bad_tag = peer.seal(b"forged");
        let last = bad_tag.len() - 1;
        bad_tag[last] ^= 1;
        send(&peer, &bad_tag);
        let mut epoch2 = peer.seal(b"future");
        epoch2[3..5].copy_from_slice(&2u16.to_be_bytes());
        send(&peer, &epoch2);
        // Garbage from a peer nobody knows is malformed too, and does not reach control.
        let stranger = UdpSocket::bind("127.0.0.1:0").expect("bind");
        stranger.send_to(&[0x42; 64], to).expect("send");
        // And a good record after all that.
        let good = peer.seal(b"still here");
        send(&peer, &good);
        let sent = 8;

        assert!(turn_until(&mut shard, |s| s.stats().datagrams_in == sent));
        let stats = shard.stats();
        assert_eq!(stats.drop_malformed, 5, "{mode:?} {stats:?}");
        assert_eq!(stats.drop_bad_tag, 1);
        assert_eq!(stats.drop_unknown_epoch, 1);
        assert_eq!(stats.records_opened, 2);
        assert_eq!(stats.handshake_forwarded, 0);
        assert!(queues.poll_inbound().is_none());
        assert_eq!(
            echoes(&mut shard, &mut peer, 2),
            set(&[b"kept", b"still here"])
        );
        assert_eq!(shard.stats().sessions_active, 1);
        let session = shard.sessions().iter().next().expect("session stays");
        let dtls_shard::ReadState::V12(epochs) = &session.read else {
            panic!("a DTLS 1.2 session");
        };
        assert_eq!(epochs.current().failed_authentications(), 1);
    }
}

/// A DTLS 1.0-version handshake record of epoch 0 (a ClientHello's shape, not its content).
fn handshake_record() -> Vec<u8> {
    let mut r = vec![22, 0xfe, 0xff, 0, 0, 0, 0, 0, 0, 0, 0, 0, 6];
    r.extend_from_slice(&[1, 0, 0, 2, 0xab, 0xcd]);
    r
}

#[test]
fn unknown_peers_and_epoch_zero_go_to_control() {
    for mode in modes("unknown_peers_and_epoch_zero_go_to_control") {
        let mut peer = Peer::new(3);
        let (mut shard, queues, _backend) = setup(mode, &peer, 16);
        let to = shard.local_addr().expect("addr");
        let stranger = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let hello = handshake_record();
        stranger.send_to(&hello, to).expect("send");
        // Protected data from a stranger: nothing control could do with it.
        let mut other = Peer::new(4);
        let record = other.seal(b"who?");
        other.socket.send_to(&record, to).expect("send");
        // A known peer's datagram with an epoch-0 handshake record and an app-data record:
        // the whole datagram (as received) goes to control, the app data is relayed.
        let mut mixed = handshake_record();
        mixed.extend_from_slice(&peer.seal(b"app"));
        peer.socket.send_to(&mixed, to).expect("send");

        assert!(turn_until(&mut shard, |s| s.stats().datagrams_in == 3));
        let stats = shard.stats();
        assert_eq!(stats.handshake_forwarded, 2, "{mode:?} {stats:?}");
        assert_eq!(stats.drop_unknown_session, 1);
        let mut inbound = vec![
            queues.poll_inbound().expect("first"),
            queues.poll_inbound().expect("second"),
        ];
        assert!(queues.poll_inbound().is_none());
        inbound.sort_by_key(|m| match m {
            ControlInbound::Handshake { datagram, .. } => datagram.len(),
            _ => 0,
        });
        assert_eq!(
            inbound,
            vec![
                ControlInbound::Handshake {
                    peer: stranger.local_addr().expect("addr"),
                    datagram: hello,
                },
                ControlInbound::Handshake {
                    peer: peer.addr,
                    datagram: mixed,
                },
            ]
        );
        assert_eq!(echoes(&mut shard, &mut peer, 1), set(&[b"app"]));
    }
}

#[test]
fn a_full_control_queue_holds_handshakes_fairly_and_a_noisy_source_loses_its_excess() {
    for mode in modes("a_full_control_queue_holds_handshakes_fairly") {
        let peer = Peer::new(5);
        let (mut shard, queues, _backend) = setup(mode, &peer, 1);
        let to = shard.local_addr().expect("addr");
        let strangers: Vec<UdpSocket> = (0..3)
            .map(|_| UdpSocket::bind("127.0.0.1:0").expect("bind"))
            .collect();
        for s in &strangers {
            s.send_to(&handshake_record(), to).expect("send");
        }
        assert!(turn_until(&mut shard, |s| s.stats().datagrams_in == 3));
        let stats = shard.stats();
        assert_eq!(stats.handshake_forwarded, 3, "{mode:?} {stats:?}");
        // The queue holds one; the other two wait in the shard's fair stage, not dropped.
        assert_eq!(stats.drop_queue_full, 0);
        // Each holds a pooled buffer (the stage counts the memory held, not the length).
        assert_eq!(
            stats.handshake_stage_bytes,
            2 * dtls_shard::POOL_BUFFER_BYTES as u64
        );
        for _ in 0..3 {
            assert!(matches!(
                queues.poll_inbound(),
                Some(ControlInbound::Handshake { .. })
            ));
            assert!(queues.poll_inbound().is_none());
            shard.run_turn(Instant::now()).expect("turn");
        }
        assert_eq!(shard.stats().handshake_stage_bytes, 0);
        // One source sending far more than its share of the stage loses the excess.
        let noisy = &strangers[0];
        for _ in 0..200 {
            noisy.send_to(&handshake_record(), to).expect("send");
        }
        assert!(turn_until(&mut shard, |s| s.stats().datagrams_in == 203));
        let stats = shard.stats();
        assert!(stats.drop_handshake_overflow > 0, "{stats:?}");
        assert_eq!(
            stats.drop_handshake_overflow + stats.handshake_forwarded,
            203,
            "{stats:?}"
        );
        // Quiet sources (other addresses) still get through while the noisy one's share is
        // full. Sources share a stage bucket only by a keyed hash of their address (1 in 64):
        // at most a couple of the eight may land in the noisy one's.
        let quiet: Vec<UdpSocket> = (2..10)
            .map(|i| UdpSocket::bind(format!("127.0.0.{i}:0")).expect("bind"))
            .collect();
        for q in &quiet {
            q.send_to(&handshake_record(), to).expect("send");
        }
        assert!(turn_until(&mut shard, |s| s.stats().datagrams_in == 211));
        let quiet_addrs: BTreeSet<_> = quiet
            .iter()
            .map(|q| q.local_addr().expect("addr"))
            .collect();
        let mut seen = BTreeSet::new();
        // Control takes what the shard hands it (one at a time: the queue holds one); the
        // quiet sources come within the first rounds of the stage, long before the noisy
        // source's backlog of about 60 is through.
        for _ in 0..20 {
            while let Some(m) = queues.poll_inbound() {
                if let ControlInbound::Handshake { peer, .. } = m
                    && quiet_addrs.contains(&peer)
                {
                    seen.insert(peer);
                }
            }
            shard.run_turn(Instant::now()).expect("turn");
        }
        assert!(
            seen.len() >= 6,
            "quiet sources starved: {} of 8 through",
            seen.len()
        );
        assert!(
            shard.stats().handshake_stage_bytes > 0,
            "the noisy backlog is still waiting"
        );
        assert_eq!(stats.sessions_active, 1);
    }
}
