//! Session lifecycle: idle expiry, close_notify both ways, control's `Close` and `Transmit`,
//! refused installs, sequence exhaustion.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use dataplane::record::{ContentType, MAX_SEQUENCE, Opener, ReplayWindow, Sealer};
use dtls_io::IoMode;
use dtls_shard::{
    AeadLimit, CloseCause, CloseReason, ControlInbound, HeartbeatPolicy, InstallError, ReadKeys,
    Shard, ShardCommand, ShardConfig, ShardQueues, UpstreamPrefix, WriteKeys,
};

const CLOSE_NOTIFY: [u8; 2] = [1, 0];

fn start(cfg: ShardConfig) -> (Shard, Arc<ShardQueues>) {
    let queues = Arc::new(ShardQueues::new(16, 16));
    (shard(cfg, queues.clone()), queues)
}

/// Waits (without turns) for the peer's next datagram and opens it.
fn next_record(peer: &mut Peer) -> (ContentType, Vec<u8>) {
    let until = Instant::now() + DEADLINE;
    while Instant::now() < until {
        if let Some(d) = peer.try_recv() {
            return peer.open(d).expect("authentic record");
        }
    }
    panic!("no datagram for peer {}", peer.addr);
}

#[test]
fn idle_sessions_expire_with_close_notify() {
    for mode in modes("idle_sessions_expire_with_close_notify") {
        let backend = EchoBackend::start();
        let mut cfg = config(backend.addr, mode);
        cfg.idle_timeout = Duration::from_secs(30);
        cfg.sweep_interval = Duration::from_secs(1);
        let (mut shard, queues) = start(cfg);
        let mut quiet = Peer::new(10);
        let mut busy = Peer::new(11);
        queues.push_command(quiet.install()).expect("room");
        queues.push_command(busy.install()).expect("room");
        let t0 = Instant::now();
        shard.run_turn(t0).expect("turn");
        assert_eq!(shard.stats().sessions_active, 2);

        // `busy` speaks at t0 + 20 s; the sweep at t0 + 31 s takes only `quiet`.
        let to = shard.local_addr().expect("addr");
        let record = busy.seal(b"alive");
        busy.socket.send_to(&record, to).expect("send");
        let t20 = t0 + Duration::from_secs(20);
        let until = Instant::now() + DEADLINE;
        while shard.stats().records_opened == 0 && Instant::now() < until {
            shard.run_turn(t20).expect("turn");
        }
        assert_eq!(shard.stats().records_opened, 1);
        assert_eq!(shard.stats().sessions_active, 2, "no sweep before 30 s");

        shard.run_turn(t0 + Duration::from_secs(31)).expect("turn");
        let stats = shard.stats();
        assert_eq!(stats.sessions_active, 1, "{mode:?} {stats:?}");
        assert_eq!(stats.sessions_expired, 1);
        assert!(matches!(
            queues.poll_inbound(),
            Some(ControlInbound::SessionClosed {
                peer,
                reason: CloseReason::IdleTimeout,
                ..
            }) if peer == quiet.addr
        ));
        assert_eq!(
            next_record(&mut quiet),
            (ContentType::Alert, CLOSE_NOTIFY.to_vec())
        );
        assert_eq!(
            shard.sessions().iter().next().map(|s| s.peer),
            Some(busy.addr)
        );
        // The expired peer's records are now the control thread's business.
        let late = quiet.seal(b"late");
        quiet.socket.send_to(&late, to).expect("send");
        let until = Instant::now() + DEADLINE;
        while shard.stats().drop_unknown_session == 0 && Instant::now() < until {
            shard.run_turn(t0 + Duration::from_secs(32)).expect("turn");
        }
        assert_eq!(shard.stats().drop_unknown_session, 1);
    }
}

#[test]
fn close_notify_both_ways() {
    for mode in modes("close_notify_both_ways") {
        let backend = EchoBackend::start();
        let (mut shard, queues) = start(config(backend.addr, mode));
        let mut leaving = Peer::new(20);
        let mut closed = Peer::new(21);
        queues.push_command(leaving.install()).expect("room");
        queues.push_command(closed.install()).expect("room");
        assert!(turn_until(&mut shard, |s| s.stats().sessions_active == 2));

        // The peer closes: RFC 5246 §7.2.1, the shard answers with its own close_notify.
        let to = shard.local_addr().expect("addr");
        let alert = leaving.seal_as(ContentType::Alert, &CLOSE_NOTIFY);
        leaving.socket.send_to(&alert, to).expect("send");
        // The reply is sealed while the turn handles received datagrams, so it leaves with
        // the next turn's flush.
        let reply = turn_until_recv(&mut shard, &leaving).expect("close_notify back");
        assert_eq!(
            leaving.open(reply).expect("authentic"),
            (ContentType::Alert, CLOSE_NOTIFY.to_vec())
        );
        assert_eq!(shard.stats().sessions_closed, 1);
        assert!(matches!(
            queues.poll_inbound(),
            Some(ControlInbound::SessionClosed {
                peer,
                reason: CloseReason::CloseNotify,
                ..
            }) if peer == leaving.addr
        ));

        // Control closes: close_notify to the peer, and a report of the cause with the
        // session's counters.
        queues
            .push_command(ShardCommand::Close {
                session: closed.handle(),
                reason: CloseCause::Revoked,
            })
            .expect("room");
        assert!(turn_until(&mut shard, |s| s.stats().sessions_closed == 2));
        assert_eq!(
            next_record(&mut closed),
            (ContentType::Alert, CLOSE_NOTIFY.to_vec())
        );
        assert!(matches!(
            queues.poll_inbound(),
            Some(ControlInbound::SessionClosed {
                peer,
                reason: CloseReason::Closed(CloseCause::Revoked),
                stats,
                ..
            }) if peer == closed.addr && stats.records_sealed == 1
        ));
        assert_eq!(shard.stats().sessions_active, 0);
    }
}

#[test]
fn fatal_alert_ends_the_session() {
    let backend = EchoBackend::start();
    let (mut shard, queues) = start(config(backend.addr, IoMode::Mmsg));
    let mut peer = Peer::new(22);
    queues.push_command(peer.install()).expect("room");
    assert!(turn_until(&mut shard, |s| s.stats().sessions_active == 1));
    // fatal(2) bad_record_mac(20)
    let alert = peer.seal_as(ContentType::Alert, &[2, 20]);
    peer.socket
        .send_to(&alert, shard.local_addr().expect("addr"))
        .expect("send");
    assert!(turn_until(&mut shard, |s| s.stats().sessions_active == 0));
    assert!(matches!(
        queues.poll_inbound(),
        Some(ControlInbound::SessionClosed {
            peer: p,
            reason: CloseReason::FatalAlert { description: 20 },
            ..
        }) if p == peer.addr
    ));
}

#[test]
fn transmit_sends_control_datagrams_as_is() {
    for mode in modes("transmit_sends_control_datagrams_as_is") {
        let backend = EchoBackend::start();
        let (mut shard, queues) = start(config(backend.addr, mode));
        let peer = Peer::new(30);
        let flight = vec![22, 0xfe, 0xfd, 0, 0, 1, 2, 3, 4, 5, 6, 0, 1, 9];
        queues
            .push_command(ShardCommand::Transmit {
                peer: peer.addr,
                datagram: flight.clone(),
            })
            .expect("room");
        assert_eq!(turn_until_recv(&mut shard, &peer), Some(flight));
        assert_eq!(shard.stats().datagrams_out, 1);
        assert_eq!(shard.stats().commands, 1);
    }
}

#[test]
fn refused_installs_are_reported() {
    let backend = EchoBackend::start();
    let mut cfg = config(backend.addr, IoMode::Mmsg);
    cfg.max_sessions = 1;
    let (mut shard, queues) = start(cfg);
    let a = Peer::new(40);
    let b = Peer::new(41);
    let c = Peer::new(42);
    queues.push_command(a.install()).expect("room");
    queues.push_command(b.install()).expect("room");
    let mut bad_window = c.install();
    if let ShardCommand::InstallKeys { read, .. } = &mut bad_window {
        read.replay_window = 100;
    }
    queues.push_command(bad_window).expect("room");
    let mut epoch_zero = c.install();
    if let ShardCommand::InstallKeys { write, .. } = &mut epoch_zero {
        write.epoch = 0;
    }
    queues.push_command(epoch_zero).expect("room");
    assert!(turn_until(&mut shard, |s| s.stats().install_failed == 3));
    assert_eq!(shard.stats().sessions_active, 1);
    assert!(matches!(
        queues.poll_inbound(),
        Some(ControlInbound::SessionClosed {
            peer,
            reason: CloseReason::Rejected(InstallError::TableFull { capacity: 1 }),
            ..
        }) if peer == b.addr
    ));
    assert!(matches!(
        queues.poll_inbound(),
        Some(ControlInbound::SessionClosed {
            peer,
            reason: CloseReason::Rejected(InstallError::ReplayWindow(_)),
            ..
        }) if peer == c.addr
    ));
    assert!(matches!(
        queues.poll_inbound(),
        Some(ControlInbound::SessionClosed {
            peer,
            reason: CloseReason::Rejected(InstallError::EpochZero),
            ..
        }) if peer == c.addr
    ));
    // Keys for an existing peer replace the old ones (a rekey), within capacity.
    queues.push_command(a.install()).expect("room");
    assert!(turn_until(&mut shard, |s| s.stats().sessions_rekeyed == 1));
    assert_eq!(shard.stats().sessions_active, 1);
}

#[test]
fn exhausted_write_sequence_is_reported_once() {
    let backend = EchoBackend::start();
    let (mut shard, queues) = start(config(backend.addr, IoMode::Mmsg));
    let mut peer = Peer::new(50);
    let mut install = peer.install();
    if let ShardCommand::InstallKeys {
        write: WriteKeys { next_seq, .. },
        ..
    } = &mut install
    {
        *next_seq = MAX_SEQUENCE;
    }
    queues.push_command(install).expect("room");
    assert!(turn_until(&mut shard, |s| s.stats().sessions_active == 1));
    let to = shard.local_addr().expect("addr");
    for m in [&b"one"[..], b"two", b"three"] {
        let record = peer.seal(m);
        peer.socket.send_to(&record, to).expect("send");
    }
    // The last sequence number carries one echo; the other two are dropped.
    assert!(turn_until(&mut shard, |s| {
        let st = s.stats();
        st.records_sealed + st.drop_sequence_exhausted == 3
    }));
    assert_eq!(shard.stats().records_sealed, 1);
    assert_eq!(shard.stats().drop_sequence_exhausted, 2);
    assert_eq!(
        queues.poll_inbound(),
        Some(ControlInbound::AeadLimitReached {
            session: peer.handle(),
            limit: AeadLimit::SequenceExhausted,
        })
    );
    assert!(queues.poll_inbound().is_none());
    let (ct, _) = next_record(&mut peer);
    assert_eq!(ct, ContentType::ApplicationData);
}

#[test]
fn rekey_switches_both_directions_to_the_new_epoch() {
    for mode in modes("rekey_switches_both_directions_to_the_new_epoch") {
        let backend = EchoBackend::start();
        let (mut shard, queues) = start(config(backend.addr, mode));
        let mut peer = Peer::new(60);
        queues.push_command(peer.install()).expect("room");
        assert!(turn_until(&mut shard, |s| s.stats().sessions_active == 1));
        let to = shard.local_addr().expect("addr");
        let old_epoch = peer.seal(b"old epoch");

        queues
            .push_command(ShardCommand::InstallKeys {
                session: peer.handle(),
                peer: peer.addr,
                read: ReadKeys {
                    epoch: 2,
                    key: key(200),
                    replay_window: 64,
                },
                write: WriteKeys {
                    epoch: 2,
                    key: key(201),
                    next_seq: 0,
                },
                heartbeat: HeartbeatPolicy::default(),
                cid: Vec::new(),
                peer_cid: Vec::new(),
                rrc: false,
                upstream: UpstreamPrefix::None,
            })
            .expect("room");
        assert!(turn_until(&mut shard, |s| s.stats().sessions_rekeyed == 1));
        peer.sealer = Sealer::new(2, key(200), 0).expect("sealer");
        peer.opener = Opener::new(2, key(201), ReplayWindow::new(64));

        peer.socket.send_to(&old_epoch, to).expect("send");
        let record = peer.seal(b"new epoch");
        peer.socket.send_to(&record, to).expect("send");
        let reply = turn_until_recv(&mut shard, &peer).expect("echo");
        assert_eq!(
            peer.open(reply).expect("sealed under epoch 2"),
            (ContentType::ApplicationData, b"new epoch".to_vec())
        );
        let stats = shard.stats();
        assert_eq!(stats.drop_unknown_epoch, 1, "{mode:?} {stats:?}");
        assert_eq!(stats.records_opened, 1);
        assert_eq!(stats.sessions_active, 1);
    }
}
