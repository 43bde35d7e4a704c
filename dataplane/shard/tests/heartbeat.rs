//! Heartbeats in the data plane (RFC 6520): requests answered with an exact copy of their
//! payload, malformed ones discarded and counted, keepalive probes resent with the same
//! payload and a session closed when its peer answers none. Timers run on a virtual clock
//! passed to `run_turn`.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use dataplane::record::ContentType;
use dtls_io::IoMode;
use dtls_shard::{CloseReason, ControlInbound, Shard, ShardQueues};

/// A heartbeat message: type, payload_length (as claimed), payload, padding.
fn heartbeat(kind: u8, claimed_len: u16, payload: &[u8], padding: usize) -> Vec<u8> {
    let mut m = vec![kind];
    m.extend_from_slice(&claimed_len.to_be_bytes());
    m.extend_from_slice(payload);
    m.extend(std::iter::repeat_n(0xa5, padding));
    m
}

/// Runs turns at virtual time `now` until `done` holds (bounded by the real deadline).
fn turn_at(shard: &mut Shard, now: Instant, mut done: impl FnMut(&Shard) -> bool) -> bool {
    let until = Instant::now() + DEADLINE;
    while Instant::now() < until {
        shard.run_turn(now).expect("turn");
        if done(shard) {
            return true;
        }
    }
    false
}

/// Runs turns at `now` until `peer` receives a datagram, then opens it.
fn recv_at(shard: &mut Shard, now: Instant, peer: &mut Peer) -> (ContentType, Vec<u8>) {
    peer.socket
        .set_read_timeout(Some(Duration::from_millis(1)))
        .expect("timeout");
    let until = Instant::now() + DEADLINE;
    while Instant::now() < until {
        shard.run_turn(now).expect("turn");
        if let Some(d) = peer.try_recv() {
            return peer.open(d).expect("authentic record");
        }
    }
    panic!("no datagram for {}", peer.addr);
}

#[test]
fn requests_are_answered_and_bad_ones_dropped() {
    for mode in modes("requests_are_answered_and_bad_ones_dropped") {
        let backend = EchoBackend::start();
        let queues = Arc::new(ShardQueues::new(16, 16));
        let mut shard = shard(config(backend.addr, mode), queues.clone());
        let to = shard.local_addr().expect("addr");
        let mut peer = Peer::new(7);
        queues.push_command(peer.install()).expect("room");
        let now = Instant::now();
        assert!(turn_at(&mut shard, now, |s| s.stats().sessions_active == 1));

        // payload_length larger than the message: RFC 6520 §4, discarded silently.
        let lying = peer.seal_as(ContentType::Heartbeat, &heartbeat(1, 1000, b"abc", 16));
        // Padding under 16 bytes.
        let short_pad = peer.seal_as(ContentType::Heartbeat, &heartbeat(1, 3, b"abc", 15));
        // A response to no request in flight.
        let stray = peer.seal_as(ContentType::Heartbeat, &heartbeat(2, 3, b"abc", 16));
        for d in [lying, short_pad, stray] {
            peer.socket.send_to(&d, to).expect("send");
        }
        assert!(turn_at(&mut shard, now, |s| s.stats().drop_heartbeat == 3));

        let payload = b"are you there? 0123456789";
        let request = heartbeat(1, payload.len() as u16, payload, 16);
        let record = peer.seal_as(ContentType::Heartbeat, &request);
        peer.socket.send_to(&record, to).expect("send");
        let (ct, response) = recv_at(&mut shard, now, &mut peer);
        assert_eq!(ct, ContentType::Heartbeat);
        assert_eq!(response[0], 2, "heartbeat_response");
        assert_eq!(&response[1..3], &(payload.len() as u16).to_be_bytes());
        assert_eq!(&response[3..3 + payload.len()], payload);
        assert!(response.len() >= 3 + payload.len() + 16, "padding ≥ 16");
        let stats = shard.stats();
        assert_eq!(stats.heartbeats_answered, 1);
        assert_eq!(stats.drop_heartbeat, 3);
        assert_eq!(
            stats.sessions_active, 1,
            "bad heartbeats do not end the session"
        );
    }
}

#[test]
fn keepalive_probes_then_closes_a_silent_peer() {
    let backend = EchoBackend::start();
    let queues = Arc::new(ShardQueues::new(16, 16));
    let mut cfg = config(backend.addr, IoMode::Mmsg);
    cfg.keepalive = Some(Duration::from_secs(5));
    cfg.sweep_interval = Duration::from_secs(1);
    let mut shard = shard(cfg, queues.clone());
    let to = shard.local_addr().expect("addr");
    let mut peer = Peer::new(9);
    queues.push_command(peer.install()).expect("room");
    let t0 = Instant::now();
    assert!(turn_at(&mut shard, t0, |s| s.stats().sessions_active == 1));
    let at = |secs: u64| t0 + Duration::from_secs(secs);

    // Silent for 5 s: a request arrives; the peer answers it.
    let (ct, request) = recv_at(&mut shard, at(6), &mut peer);
    assert_eq!((ct, request[0]), (ContentType::Heartbeat, 1));
    let payload = request[3..11].to_vec();
    let answer = peer.seal_as(ContentType::Heartbeat, &heartbeat(2, 8, &payload, 16));
    peer.socket.send_to(&answer, to).expect("send");
    assert!(turn_at(&mut shard, at(6), |s| s.stats().keepalive_answered == 1));

    // Silent again: a new request (new payload), resent with the same payload each
    // interval, three sends in all, then close_notify and SessionClosed.
    let (_, first) = recv_at(&mut shard, at(12), &mut peer);
    assert_ne!(first[3..11], payload[..], "a new request has a new payload");
    let (_, second) = recv_at(&mut shard, at(18), &mut peer);
    let (_, third) = recv_at(&mut shard, at(24), &mut peer);
    assert_eq!(
        first[..11],
        second[..11],
        "RFC 6520 §3: same payload when resent"
    );
    assert_eq!(first[..11], third[..11]);
    let (ct, alert) = recv_at(&mut shard, at(30), &mut peer);
    assert_eq!((ct, alert), (ContentType::Alert, vec![1, 0]));
    let stats = shard.stats();
    assert_eq!(stats.keepalive_sent, 4);
    assert_eq!(stats.sessions_keepalive_timeout, 1);
    assert_eq!(stats.sessions_active, 0);
    assert!(matches!(
        queues.poll_inbound(),
        Some(ControlInbound::SessionClosed {
            peer: p,
            reason: CloseReason::KeepaliveTimeout,
            stats,
            ..
        }) if p == peer.addr && stats.records_sealed == 5
    ));
}
