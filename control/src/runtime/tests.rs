//! The control loop against in-memory shard queues: a real client engine on one side, the
//! commands the shard would execute on the other.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dtls_crypto::SeededRng;
use dtls_shard::{ControlInbound, ShardCommand, ShardQueues};

use super::{ControlThread, RuntimeConfig};
use crate::pair_tests::{client_config, server_config};
use crate::{Acceptor, AcceptorConfig, CipherSuite, Connection, Event};

const SUITE: CipherSuite = CipherSuite::EcdheEcdsaAes128GcmSha256;

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
        Box::new(SeededRng::new(seed)) as Box<dyn crate::Rng + Send>
    });
    (
        ControlThread::new(acceptor, queues.clone(), settings, factory),
        queues,
    )
}

fn client(server: SocketAddr, seed: u64, now: Instant) -> Connection {
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
                c.handle_datagram(now, server, &datagram);
                order.push(false);
            }
            ShardCommand::Close { .. } => panic!("unexpected Close"),
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
        assert!(ctl.run_turn(now) || c.is_established());
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
    ctl.run_turn(now + Duration::from_secs(2));
    let again: Vec<_> = std::iter::from_fn(|| q.poll_command()).collect();
    assert!(!again.is_empty(), "final flight retransmitted");
    assert!(
        again
            .iter()
            .all(|c| matches!(c, ShardCommand::Transmit { peer: p, .. } if *p == peer)),
        "only transmits: {again:?}"
    );
    // Then, after the grace period, it goes.
    ctl.run_turn(now + Duration::from_secs(31));
    assert_eq!(ctl.handshakes(), 0);
    // Shutdown closes the installed session through its shard.
    assert_eq!(ctl.close_all(), 1);
    assert!(matches!(q.poll_command(), Some(ShardCommand::Close { peer: p }) if p == peer));
}

#[test]
fn half_open_cap_refuses_new_engines() {
    let now = Instant::now();
    let server = addr("127.0.0.1:4433");
    let settings = RuntimeConfig {
        max_half_open: 1,
        ..RuntimeConfig::default()
    };
    let (mut ctl, queues) = control(1, settings, now);
    let q = &queues[0];
    for (i, port) in [50001u16, 50002].into_iter().enumerate() {
        let peer = SocketAddr::new(server.ip(), port);
        let mut c = client(server, 20 + i as u64, now);
        // ClientHello → HelloVerifyRequest → ClientHello with cookie.
        client_to_control(&mut c, q, peer, now);
        ctl.run_turn(now);
        commands_to_client(&mut c, q, server, now);
        client_to_control(&mut c, q, peer, now);
        ctl.run_turn(now);
        commands_to_client(&mut c, q, server, now);
    }
    let stats = ctl.counters().snapshot();
    assert_eq!(stats.cookies_sent, 2);
    assert_eq!(stats.handshakes_started, 1);
    assert_eq!(stats.half_open_refused, 1);
    assert_eq!(ctl.half_open(), 1);
    assert_eq!(ctl.handshakes(), 1);
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
    ctl.run_turn(now);
    commands_to_client(&mut c, q, server, now);
    client_to_control(&mut c, q, peer, now);
    ctl.run_turn(now);
    let first = std::iter::from_fn(|| q.poll_command()).count();
    assert!(first > 0, "server flight queued");
    // The client goes silent: the server retransmits, then gives up.
    let mut t = now;
    let mut retransmitted = 0;
    for _ in 0..200 {
        let Some(at) = ctl.poll_timeout() else { break };
        t = at.max(t);
        ctl.run_turn(t);
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
        peer,
        reason: dtls_shard::CloseReason::IdleTimeout,
    })
    .expect("room");
    assert!(ctl.run_turn(now));
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
        ctl.run_turn(now);
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
    ctl.run_turn(now);
    let mut replies = 0;
    while let Some(cmd) = q.poll_command() {
        match cmd {
            ShardCommand::Transmit { datagram, .. } => {
                replies += 1;
                new.handle_datagram(now, server, &datagram);
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
