//! The control loop against in-memory shard queues: a real client engine on one side, the
//! commands the shard would execute on the other.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dtls_crypto::SeededRng;
use dtls_shard::{
    CloseCause, CloseReason, ControlInbound, SessionCounters, SessionId, ShardCommand, ShardQueues,
};

use super::{ControlThread, Limits, RuntimeConfig};
use crate::fixtures::{client_config, server_config, test_wall};
use control::{Acceptor, AcceptorConfig, CipherSuite, Connection, Event};

pub(crate) const SUITE: CipherSuite = CipherSuite::EcdheEcdsaAes128GcmSha256;

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("literal address")
}

fn control(
    shards: usize,
    settings: RuntimeConfig,
    now: Instant,
) -> (ControlThread, Vec<Arc<ShardQueues>>) {
    let config = Arc::new(server_config(&[SUITE], false));
    let mut rng = SeededRng::new(1);
    let acceptor = Acceptor::new(config, AcceptorConfig::default(), &mut rng, now)
        .expect("server config is valid");
    let queues: Vec<_> = (0..shards)
        .map(|_| Arc::new(ShardQueues::new(64, 64)))
        .collect();
    let mut seed = 10;
    let factory = Box::new(move || {
        seed += 1;
        Box::new(SeededRng::new(seed)) as Box<dyn control::Rng + Send>
    });
    (
        ControlThread::new(acceptor, queues.clone(), settings, factory),
        queues,
    )
}

/// A 1.2 client engine toward `server` with a seeded RNG (also the worker tests').
pub(crate) fn client(server: SocketAddr, seed: u64, now: Instant) -> Connection {
    Connection::client(
        Arc::new(client_config(&[SUITE])),
        Box::new(SeededRng::new(seed)),
        now,
        server,
        None,
    )
    .expect("client config is valid")
}

/// Client datagrams into the shard's inbound queue, as the shard would forward them.
/// Returns the datagrams forwarded.
fn client_to_control(
    c: &mut Connection,
    q: &ShardQueues,
    from: SocketAddr,
    now: Instant,
) -> Vec<Vec<u8>> {
    let mut buf = vec![0u8; 4096];
    let mut sent = Vec::new();
    while let Some(t) = c.poll_transmit(now, &mut buf) {
        let datagram = buf[..t.len].to_vec();
        sent.push(datagram.clone());
        q.push_inbound(ControlInbound::Handshake {
            peer: from,
            datagram,
        })
        .expect("inbound queue has room");
    }
    sent
}

/// What control queued for the shard, in order: `true` for InstallKeys, `false` for a
/// Transmit (whose datagram is fed to the client).
fn commands_to_client(
    c: &mut Connection,
    q: &ShardQueues,
    server: SocketAddr,
    now: Instant,
) -> Vec<bool> {
    let mut order = Vec::new();
    while let Some(cmd) = q.poll_command() {
        match cmd {
            ShardCommand::InstallKeys { read, write, .. } => {
                assert_eq!((read.epoch, write.epoch), (1, 1));
                order.push(true);
            }
            ShardCommand::Transmit { datagram, .. } => {
                c.handle_datagram(now, test_wall(), server, &datagram);
                order.push(false);
            }
            ShardCommand::ExpectKeys { .. } => {}
            ShardCommand::Close { .. } => panic!("unexpected Close"),
            ShardCommand::Forget { .. } => panic!("unexpected Forget"),
            ShardCommand::InstallKeys13 { .. }
            | ShardCommand::RetireEpoch { .. }
            | ShardCommand::AddCids { .. }
            | ShardCommand::PeerCids { .. }
            | ShardCommand::TransmitSession { .. } => {
                panic!("unexpected DTLS 1.3 command from a 1.2 loop")
            }
        }
    }
    order
}

#[test]
fn handshake_completes_and_keys_precede_the_final_flight() {
    let now = Instant::now();
    let server = addr("127.0.0.1:4433");
    let peer = addr("127.0.0.1:50000");
    let (mut ctl, queues) = control(2, RuntimeConfig::default(), now);
    let q = &queues[1];
    let mut c = client(server, 7, now);
    let mut orders = Vec::new();
    let mut last_flight = Vec::new();
    for _ in 0..6 {
        let sent = client_to_control(&mut c, q, peer, now);
        if !sent.is_empty() {
            last_flight = sent;
        }
        assert!(ctl.run_turn(now, test_wall()) || c.is_established());
        orders.push(commands_to_client(&mut c, q, server, now));
        if c.is_established() {
            break;
        }
    }
    assert!(c.is_established(), "client state {}", c.state_name());
    assert!(std::iter::from_fn(|| c.poll_event()).any(|e| matches!(e, Event::KeysReady(_))));
    // The flight that completed the handshake starts with InstallKeys.
    let last = orders
        .iter()
        .rev()
        .find(|o| o.contains(&true))
        .expect("keys installed");
    assert_eq!(last.first(), Some(&true), "InstallKeys first: {last:?}");
    assert!(last.len() > 1, "final flight follows the keys");
    assert!(
        queues[0].poll_command().is_none(),
        "nothing went to the other shard"
    );
    let stats = ctl.counters().snapshot();
    assert_eq!(stats.cookies_sent, 1);
    assert_eq!(stats.handshakes_started, 1);
    assert_eq!(stats.handshakes_completed, 1);
    assert_eq!(ctl.installed_sessions(), 1);
    assert_eq!(ctl.half_open(), 0, "a completed handshake is not half-open");
    // The engine stays for the grace period and answers a retransmitted client flight
    // (RFC 6347 §4.2.4) with its final flight again, without new keys.
    assert_eq!(ctl.handshakes(), 1);
    for datagram in last_flight {
        q.push_inbound(ControlInbound::Handshake { peer, datagram })
            .expect("room");
    }
    ctl.run_turn(now + Duration::from_secs(2), test_wall());
    let again: Vec<_> = std::iter::from_fn(|| q.poll_command()).collect();
    assert!(!again.is_empty(), "final flight retransmitted");
    assert!(
        again
            .iter()
            .all(|c| matches!(c, ShardCommand::Transmit { peer: p, .. } if *p == peer)),
        "only transmits: {again:?}"
    );
    // Then, after the grace period, it goes.
    ctl.run_turn(now + Duration::from_secs(31), test_wall());
    assert_eq!(ctl.handshakes(), 0);
    // Shutdown closes the installed session through its shard.
    assert_eq!(ctl.close_all(), 1);
    assert!(matches!(
        q.poll_command(),
        Some(ShardCommand::Close { session, reason: CloseCause::Shutdown })
            if session == SessionId::new(1)
    ));
}

/// Takes `c` from its first ClientHello through the cookie exchange to the server's flight.
fn hello_with_cookie(
    ctl: &mut ControlThread,
    c: &mut Connection,
    q: &ShardQueues,
    peer: SocketAddr,
    server: SocketAddr,
    now: Instant,
) -> Vec<bool> {
    client_to_control(c, q, peer, now);
    ctl.run_turn(now, test_wall());
    commands_to_client(c, q, server, now);
    client_to_control(c, q, peer, now);
    ctl.run_turn(now, test_wall());
    commands_to_client(c, q, server, now)
}

#[test]
fn a_full_half_open_table_sheds_its_oldest_entry_for_a_newcomer() {
    let now = Instant::now();
    let server = addr("127.0.0.1:4433");
    let settings = RuntimeConfig {
        limits: Limits {
            max_half_open: 1,
            ..Limits::default()
        },
        ..RuntimeConfig::default()
    };
    let (mut ctl, queues) = control(1, settings, now);
    let q = &queues[0];
    let first = addr("127.0.0.1:50001");
    let second = addr("127.0.0.2:50002");
    let mut a = client(server, 20, now);
    hello_with_cookie(&mut ctl, &mut a, q, first, server, now);
    assert_eq!(ctl.half_open(), 1);
    // A newcomer is not locked out by a full table: the oldest entry makes room.
    let mut b = client(server, 21, now);
    hello_with_cookie(&mut ctl, &mut b, q, second, server, now);
    let stats = ctl.counters().snapshot();
    assert_eq!(stats.cookies_sent, 2);
    assert_eq!(stats.handshakes_started, 2);
    assert_eq!(stats.half_open_shed, 1);
    assert_eq!(stats.half_open_refused, 0);
    assert_eq!(ctl.half_open(), 1);
    assert_eq!(ctl.handshakes(), 1);
    // The newcomer completes; the shed client's next flight finds no engine and only
    // earns a fresh cookie exchange from the acceptor.
    let order = handshake_through(&mut ctl, &mut b, q, second, server, now);
    assert!(b.is_established(), "{order:?}");
}

#[test]
fn one_source_address_gets_only_its_share_of_half_open_handshakes() {
    let now = Instant::now();
    let server = addr("127.0.0.1:4433");
    let settings = RuntimeConfig {
        limits: Limits {
            half_open_per_address: 2,
            half_open_per_prefix: 3,
            ..Limits::default()
        },
        ..RuntimeConfig::default()
    };
    let (mut ctl, queues) = control(1, settings, now);
    let q = &queues[0];
    let peers = [
        "10.0.0.1:1",
        "10.0.0.1:2",
        "10.0.0.1:3",
        "10.0.0.2:1",
        "10.0.0.3:1",
        "10.0.1.1:1",
    ];
    for (i, p) in peers.iter().enumerate() {
        let mut c = client(server, 40 + i as u64, now);
        hello_with_cookie(&mut ctl, &mut c, q, addr(p), server, now);
    }
    let stats = ctl.counters().snapshot();
    // 10.0.0.1 gets two, 10.0.0.2 the /24's third, 10.0.0.3 nothing, 10.0.1.1 its own.
    assert_eq!(stats.handshakes_started, 4);
    assert_eq!(stats.half_open_refused_source, 2);
    assert_eq!(ctl.half_open(), 4);
}

#[test]
fn a_handshake_past_the_session_cap_is_refused_with_an_alert_before_any_flight() {
    let now = Instant::now();
    let server = addr("127.0.0.1:4433");
    let settings = RuntimeConfig {
        limits: Limits {
            max_sessions: 1,
            max_sessions_per_shard: 1,
            ..Limits::default()
        },
        ..RuntimeConfig::default()
    };
    let (mut ctl, queues) = control(1, settings, now);
    let q = &queues[0];
    let mut a = client(server, 50, now);
    let order = handshake_through(&mut ctl, &mut a, q, addr("10.0.0.1:1"), server, now);
    assert!(a.is_established(), "{order:?}");
    assert_eq!(ctl.installed_sessions(), 1);
    // The second client passes the cookie exchange and gets one alert record, nothing else.
    let mut b = client(server, 51, now);
    client_to_control(&mut b, q, addr("10.0.0.2:1"), now);
    ctl.run_turn(now, test_wall());
    commands_to_client(&mut b, q, server, now);
    client_to_control(&mut b, q, addr("10.0.0.2:1"), now);
    ctl.run_turn(now, test_wall());
    let replies: Vec<_> = std::iter::from_fn(|| q.poll_command()).collect();
    assert_eq!(replies.len(), 1, "{replies:?}");
    let ShardCommand::Transmit { datagram, .. } = &replies[0] else {
        panic!("expected the alert, got {replies:?}");
    };
    // Alert(21) record, epoch 0, fatal(2) internal_error(80).
    assert_eq!(datagram.len(), 13 + 2);
    assert_eq!((datagram[0], datagram[3], datagram[4]), (21, 0, 0));
    assert_eq!(&datagram[13..], &[2, 80]);
    b.handle_datagram(now, test_wall(), server, datagram);
    assert!(b.is_finished(), "the client gives up at once");
    let stats = ctl.counters().snapshot();
    assert_eq!(stats.sessions_refused, 1);
    assert_eq!(stats.handshakes_started, 1);
    // Once the session closes, a newcomer fits again. (Handles count from 1.)
    q.push_inbound(ControlInbound::SessionClosed {
        session: SessionId::new(1),
        peer: addr("10.0.0.1:1"),
        reason: CloseReason::CloseNotify,
        stats: SessionCounters::default(),
    })
    .expect("room");
    ctl.run_turn(now, test_wall());
    let mut c = client(server, 52, now);
    let order = handshake_through(&mut ctl, &mut c, q, addr("10.0.0.3:1"), server, now);
    assert!(c.is_established(), "{order:?}");
}

#[test]
fn expect_keys_reaches_the_shard_before_the_server_flight() {
    let now = Instant::now();
    let server = addr("127.0.0.1:4433");
    let peer = addr("127.0.0.1:50010");
    let (mut ctl, queues) = control(1, RuntimeConfig::default(), now);
    let q = &queues[0];
    let mut c = client(server, 60, now);
    client_to_control(&mut c, q, peer, now);
    ctl.run_turn(now, test_wall());
    let hvr: Vec<_> = std::iter::from_fn(|| q.poll_command()).collect();
    assert!(
        hvr.iter()
            .all(|c| matches!(c, ShardCommand::Transmit { .. })),
        "no note for a hello without a cookie: {hvr:?}"
    );
    for cmd in hvr {
        if let ShardCommand::Transmit { datagram, .. } = cmd {
            c.handle_datagram(now, test_wall(), server, &datagram);
        }
    }
    client_to_control(&mut c, q, peer, now);
    ctl.run_turn(now, test_wall());
    let first = q.poll_command();
    assert!(
        matches!(first, Some(ShardCommand::ExpectKeys { peer: p }) if p == peer),
        "{first:?}"
    );
    assert!(matches!(
        q.poll_command(),
        Some(ShardCommand::Transmit { .. })
    ));
}

#[test]
fn retransmission_timer_fires_and_gives_up() {
    let now = Instant::now();
    let server = addr("127.0.0.1:4433");
    let peer = addr("127.0.0.1:50003");
    let (mut ctl, queues) = control(1, RuntimeConfig::default(), now);
    let q = &queues[0];
    let mut c = client(server, 30, now);
    client_to_control(&mut c, q, peer, now);
    ctl.run_turn(now, test_wall());
    commands_to_client(&mut c, q, server, now);
    client_to_control(&mut c, q, peer, now);
    ctl.run_turn(now, test_wall());
    let first = std::iter::from_fn(|| q.poll_command()).count();
    assert!(first > 0, "server flight queued");
    // The client goes silent: the server retransmits, then gives up.
    let mut t = now;
    let mut retransmitted = 0;
    for _ in 0..200 {
        let Some(at) = ctl.poll_timeout() else { break };
        t = at.max(t);
        ctl.run_turn(t, test_wall());
        retransmitted += std::iter::from_fn(|| q.poll_command()).count();
        if ctl.handshakes() == 0 {
            break;
        }
    }
    assert!(retransmitted > 0, "the flight was retransmitted");
    assert_eq!(ctl.handshakes(), 0, "the engine gave up");
    assert_eq!(ctl.counters().snapshot().handshakes_failed_timeout, 1);
}

#[test]
fn session_closed_forgets_the_session_and_garbage_is_counted() {
    let now = Instant::now();
    let peer = addr("127.0.0.1:50004");
    let (mut ctl, queues) = control(1, RuntimeConfig::default(), now);
    let q = &queues[0];
    q.push_inbound(ControlInbound::Handshake {
        peer,
        datagram: vec![0x17, 0xfe, 0xfd, 0, 1],
    })
    .expect("room");
    q.push_inbound(ControlInbound::SessionClosed {
        session: SessionId::new(99),
        peer,
        reason: dtls_shard::CloseReason::IdleTimeout,
        stats: SessionCounters::default(),
    })
    .expect("room");
    assert!(ctl.run_turn(now, test_wall()));
    let stats = ctl.counters().snapshot();
    assert_eq!(stats.acceptor_drops, 1);
    assert_eq!(stats.sessions_closed, 1);
    assert!(q.poll_command().is_none(), "nothing sent for garbage");
}

/// Drives `c` against control until it is established (bounded); returns the command order.
fn handshake_through(
    ctl: &mut ControlThread,
    c: &mut Connection,
    q: &ShardQueues,
    peer: SocketAddr,
    server: SocketAddr,
    now: Instant,
) -> Vec<bool> {
    let mut order = Vec::new();
    for _ in 0..6 {
        client_to_control(c, q, peer, now);
        ctl.run_turn(now, test_wall());
        order.extend(commands_to_client(c, q, server, now));
        if c.is_established() {
            break;
        }
    }
    order
}

/// TESTING.md, State machine: "a new ClientHello on a live address (old session kept until the
/// new one proves reachability)". The live session's keys stay in the shard (no Close, no
/// InstallKeys) while the new hello only earns a HelloVerifyRequest; keys change only when the
/// new handshake completes.
#[test]
fn new_client_hello_on_a_live_address_keeps_the_old_session_until_it_completes() {
    let now = Instant::now();
    let server = addr("127.0.0.1:4433");
    let peer = addr("127.0.0.1:50000");
    let (mut ctl, queues) = control(1, RuntimeConfig::default(), now);
    let q = &queues[0];
    let mut old = client(server, 7, now);
    let order = handshake_through(&mut ctl, &mut old, q, peer, server, now);
    assert!(old.is_established(), "first session: {}", old.state_name());
    assert_eq!(order.iter().filter(|&&k| k).count(), 1);

    // A restarted client (or a spoofer) sends a fresh ClientHello from the same address.
    let mut new = client(server, 99, now);
    client_to_control(&mut new, q, peer, now);
    ctl.run_turn(now, test_wall());
    let mut replies = 0;
    while let Some(cmd) = q.poll_command() {
        match cmd {
            ShardCommand::Transmit { datagram, .. } => {
                replies += 1;
                new.handle_datagram(now, test_wall(), server, &datagram);
            }
            other => panic!("the live session must be left alone, got {other:?}"),
        }
    }
    assert_eq!(
        replies, 1,
        "only a HelloVerifyRequest answers the unproven hello"
    );
    assert_eq!(ctl.counters().snapshot().cookies_sent, 2);

    // Once the new client proves reachability and completes, its keys replace the old ones.
    let order = handshake_through(&mut ctl, &mut new, q, peer, server, now);
    assert!(new.is_established(), "second session: {}", new.state_name());
    assert_eq!(order.iter().filter(|&&k| k).count(), 1, "{order:?}");
    assert_eq!(ctl.counters().snapshot().handshakes_completed, 2);
}

#[test]
fn negotiated_cids_reach_the_shard_and_name_it() {
    // RFC 9146: a client that offers connection_id gets a QUIC-LB CID naming the configured
    // node and the shard that owns its session; the shard is told both CIDs with the keys.
    let now = Instant::now();
    let server = addr("127.0.0.1:4433");
    let peer = addr("127.0.0.1:50002");
    let mut config = server_config(&[SUITE], false);
    config.connection_id = control::ConnectionIds::On { len: 8 };
    let mut rng = SeededRng::new(1);
    let acceptor = Acceptor::new(Arc::new(config), AcceptorConfig::default(), &mut rng, now)
        .expect("server config is valid");
    let queues: Vec<_> = (0..2).map(|_| Arc::new(ShardQueues::new(64, 64))).collect();
    let mut seed = 10;
    let factory = Box::new(move || {
        seed += 1;
        Box::new(SeededRng::new(seed)) as Box<dyn control::Rng + Send>
    });
    let settings = RuntimeConfig {
        node_id: 7,
        ..RuntimeConfig::default()
    };
    let mut ctl = ControlThread::new(acceptor, queues.clone(), settings, factory);
    let mut client_config = client_config(&[SUITE]);
    client_config.connection_id = control::ConnectionIds::On { len: 0 };
    let mut c = Connection::client(
        Arc::new(client_config),
        Box::new(SeededRng::new(9)),
        now,
        server,
        None,
    )
    .expect("client config is valid");
    let q = &queues[1];
    let mut installed = None;
    for _ in 0..6 {
        client_to_control(&mut c, q, peer, now);
        ctl.run_turn(now, test_wall());
        while let Some(cmd) = q.poll_command() {
            match cmd {
                ShardCommand::InstallKeys { cid, peer_cid, .. } => {
                    installed = Some((cid, peer_cid))
                }
                ShardCommand::Transmit { datagram, .. } => {
                    c.handle_datagram(now, test_wall(), server, &datagram);
                }
                _ => {}
            }
        }
        if c.is_established() {
            break;
        }
    }
    let (cid, peer_cid) = installed.expect("InstallKeys");
    assert_eq!(cid.len(), 8);
    assert!(peer_cid.is_empty(), "the client asked for none");
    let quic_lb = dataplane::cid::QuicLbConfig::plaintext(
        dataplane::cid::ConfigId::new(0).expect("id"),
        2,
        5,
        dataplane::cid::FirstOctetBits::CidLength,
    )
    .expect("config");
    let layout = dataplane::cid::ServerIdLayout::new(2, 8, 8).expect("layout");
    let owner = quic_lb
        .decode_server_id(&cid)
        .and_then(|id| layout.unpack(&id));
    assert_eq!(owner, Some(dataplane::cid::CidOwner { node: 7, shard: 1 }));
    let mut event = None;
    while let Some(e) = c.poll_event() {
        if let Event::KeysReady(k) = e {
            event = Some(k);
        }
    }
    let keys = event.expect("client keys");
    assert_eq!(keys.peer_cid.as_deref(), Some(&cid[..]));
}

/// `dtlsd status` and `dtlsd kick` through the admin channel: control lists what it knows of
/// each installed session and closes the ones a kick names (close_notify through the shard,
/// cause `requested`), leaving the others alone.
#[test]
fn admin_requests_list_sessions_and_kick_only_the_named_ones() {
    use crate::{AdminRequest, KickTarget};
    use std::sync::mpsc;

    let now = Instant::now();
    let server = addr("127.0.0.1:4433");
    let (a, b) = (addr("127.0.0.2:50000"), addr("127.0.0.3:50000"));
    let (mut ctl, queues) = control(1, RuntimeConfig::default(), now);
    let (admin, requests) = mpsc::channel();
    ctl.set_admin(requests);
    let q = &queues[0];
    for (peer, seed) in [(a, 7), (b, 8)] {
        let mut c = client(server, seed, now);
        handshake_through(&mut ctl, &mut c, q, peer, server, now);
        assert!(c.is_established(), "{peer}: {}", c.state_name());
    }
    while q.poll_command().is_some() {}

    let (reply, answer) = mpsc::channel();
    admin.send(AdminRequest::Sessions(reply)).expect("control");
    assert!(
        ctl.run_turn(now, test_wall()),
        "a request makes a busy turn"
    );
    let mut sessions = answer.try_recv().expect("answered in the turn");
    sessions.sort_by_key(|s| s.peer);
    assert_eq!(sessions.len(), 2);
    assert_eq!((sessions[0].peer, sessions[1].peer), (a, b));
    assert!(
        sessions
            .iter()
            .all(|s| s.version == "1.2" && s.suite == SUITE)
    );
    assert!(
        sessions
            .iter()
            .all(|s| s.shard == 0 && s.established == now)
    );
    let observed = &ctl.counters().observed;
    assert!(observed.sessions_by_suite().contains(&(SUITE, 2)));
    assert_eq!(observed.latency().buckets.last().map(|b| b.1), Some(2));

    // No session of 127.0.0.9: nothing closed.
    let (reply, answer) = mpsc::channel();
    let target = KickTarget::Address("127.0.0.9".parse().expect("ip"));
    admin
        .send(AdminRequest::Kick { target, reply })
        .expect("control");
    ctl.run_turn(now, test_wall());
    assert_eq!(answer.try_recv().expect("answered"), vec![]);
    assert!(q.poll_command().is_none());

    let (reply, answer) = mpsc::channel();
    let target = KickTarget::Peer(b);
    admin
        .send(AdminRequest::Kick { target, reply })
        .expect("control");
    ctl.run_turn(now, test_wall());
    let kicked = answer.try_recv().expect("answered");
    let b_id = sessions[1].session;
    assert_eq!(kicked, vec![b_id]);
    assert!(matches!(
        q.poll_command(),
        Some(ShardCommand::Close { session, reason: CloseCause::Requested }) if session == b_id
    ));
    assert_eq!(ctl.installed_sessions(), 1);

    // By handle.
    let (reply, answer) = mpsc::channel();
    let target = KickTarget::Session(sessions[0].session);
    admin
        .send(AdminRequest::Kick { target, reply })
        .expect("control");
    ctl.run_turn(now, test_wall());
    assert_eq!(
        answer.try_recv().expect("answered"),
        vec![sessions[0].session]
    );
    assert_eq!(ctl.installed_sessions(), 0);
    assert!(
        ctl.counters()
            .observed
            .sessions_by_suite()
            .contains(&(SUITE, 0))
    );
}

#[test]
fn the_handshake_rate_refuses_a_bursting_address_and_not_its_neighbour() {
    let now = Instant::now();
    let server = addr("127.0.0.1:4433");
    let settings = RuntimeConfig {
        limits: Limits {
            handshakes_per_second: 1,
            handshake_burst: 2,
            ..Limits::default()
        },
        ..RuntimeConfig::default()
    };
    let (mut ctl, queues) = control(1, settings, now);
    let q = &queues[0];
    for (i, p) in ["10.0.0.1:1", "10.0.0.1:2", "10.0.0.1:3", "10.0.0.2:1"]
        .iter()
        .enumerate()
    {
        let mut c = client(server, 60 + i as u64, now);
        hello_with_cookie(&mut ctl, &mut c, q, addr(p), server, now);
    }
    let stats = ctl.counters().snapshot();
    assert_eq!(stats.cookies_sent, 4, "the rate applies after the cookie");
    assert_eq!(stats.handshakes_started, 3);
    assert_eq!(stats.handshakes_refused_rate, 1);
    // A second later the bucket holds one token again.
    let later = now + Duration::from_secs(1);
    let mut c = client(server, 70, later);
    hello_with_cookie(&mut ctl, &mut c, q, addr("10.0.0.1:4"), server, later);
    assert_eq!(ctl.counters().snapshot().handshakes_started, 4);
}

#[test]
fn one_address_holds_at_most_its_sessions() {
    let now = Instant::now();
    let server = addr("127.0.0.1:4433");
    let settings = RuntimeConfig {
        limits: Limits {
            sessions_per_address: 1,
            ..Limits::default()
        },
        ..RuntimeConfig::default()
    };
    let (mut ctl, queues) = control(1, settings, now);
    let q = &queues[0];
    let mut a = client(server, 80, now);
    handshake_through(&mut ctl, &mut a, q, addr("10.0.0.1:1"), server, now);
    assert!(a.is_established());
    let mut b = client(server, 81, now);
    hello_with_cookie(&mut ctl, &mut b, q, addr("10.0.0.1:2"), server, now);
    assert_eq!(ctl.counters().snapshot().sessions_refused_per_address, 1);
    let mut c = client(server, 82, now);
    handshake_through(&mut ctl, &mut c, q, addr("10.0.0.2:1"), server, now);
    assert!(c.is_established());
    assert_eq!(ctl.installed_sessions(), 2);
}

#[test]
fn access_lists_drop_before_any_reply_and_reload_replaces_them() {
    let now = Instant::now();
    let server = addr("127.0.0.1:4433");
    let (mut ctl, queues) = control(1, RuntimeConfig::default(), now);
    let q = &queues[0];
    ctl.set_access(super::AccessList {
        allow: Vec::new(),
        deny: vec!["10.0.0.0/8".parse().expect("literal")],
    });
    let mut denied = client(server, 90, now);
    client_to_control(&mut denied, q, addr("10.0.0.1:1"), now);
    ctl.run_turn(now, test_wall());
    assert!(
        q.poll_command().is_none(),
        "no HelloVerifyRequest to a denied source"
    );
    let stats = ctl.counters().snapshot();
    assert_eq!((stats.datagrams_denied, stats.cookies_sent), (1, 0));
    let mut allowed = client(server, 91, now);
    handshake_through(&mut ctl, &mut allowed, q, addr("192.0.2.1:1"), server, now);
    assert!(allowed.is_established());
    // A reload that allows only 10.0.0.0/8: new handshakes follow it; the live session
    // from 192.0.2.1 stays.
    let (tx, rx) = std::sync::mpsc::channel();
    ctl.set_reloads(rx);
    tx.send(super::Reload {
        config: Arc::new(server_config(&[SUITE], false)),
        recheck_certificates: false,
        limits: None,
        access: Some(super::AccessList {
            allow: vec!["10.0.0.0/8".parse().expect("literal")],
            deny: Vec::new(),
        }),
    })
    .expect("send");
    ctl.run_turn(now, test_wall());
    let mut outsider = client(server, 92, now);
    client_to_control(&mut outsider, q, addr("192.0.2.2:1"), now);
    ctl.run_turn(now, test_wall());
    assert!(q.poll_command().is_none());
    assert_eq!(ctl.counters().snapshot().datagrams_not_allowed, 1);
    let mut inside = client(server, 93, now);
    handshake_through(&mut ctl, &mut inside, q, addr("10.0.0.1:2"), server, now);
    assert!(inside.is_established());
    assert_eq!(ctl.installed_sessions(), 2);
}

#[test]
fn a_draining_server_refuses_new_handshakes_with_an_alert_and_keeps_its_sessions() {
    let now = Instant::now();
    let server = addr("127.0.0.1:4433");
    let (mut ctl, queues) = control(1, RuntimeConfig::default(), now);
    let q = &queues[0];
    let mut a = client(server, 60, now);
    let order = handshake_through(&mut ctl, &mut a, q, addr("10.0.0.1:1"), server, now);
    assert!(a.is_established(), "{order:?}");
    ctl.drain_flag()
        .store(true, std::sync::atomic::Ordering::Relaxed);
    // A newcomer passes the cookie exchange and gets one fatal internal_error alert.
    let mut b = client(server, 61, now);
    client_to_control(&mut b, q, addr("10.0.0.2:1"), now);
    ctl.run_turn(now, test_wall());
    commands_to_client(&mut b, q, server, now);
    client_to_control(&mut b, q, addr("10.0.0.2:1"), now);
    ctl.run_turn(now, test_wall());
    let replies: Vec<_> = std::iter::from_fn(|| q.poll_command()).collect();
    assert_eq!(replies.len(), 1, "{replies:?}");
    let ShardCommand::Transmit { datagram, .. } = &replies[0] else {
        panic!("expected the alert, got {replies:?}");
    };
    assert_eq!(&datagram[13..], &[2, 80]);
    b.handle_datagram(now, test_wall(), server, datagram);
    assert!(b.is_finished(), "the client gives up at once");
    let stats = ctl.counters().snapshot();
    assert_eq!(stats.handshakes_refused_draining, 1);
    assert_eq!(stats.handshakes_started, 1);
    // The established session is untouched.
    assert_eq!(ctl.installed_sessions(), 1);
}
