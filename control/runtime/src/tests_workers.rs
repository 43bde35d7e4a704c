//! Several handshake workers over the same in-memory shard queues: real client engines on
//! one side, the loops' commands executed as a shard would on the other.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, mpsc};
use std::time::Instant;

use dtls_crypto::SeededRng;
use dtls_shard::{
    ControlInbound, ControlLanes, DEFAULT_INBOUND_BYTES, SessionId, ShardCommand, ShardQueues,
};

use super::tests::{SUITE, client};
use super::{AccessList, ControlCounters, ControlThread, Reload, RuntimeConfig};
use crate::fixtures::{server_config, test_wall};
use control::{Acceptor, AcceptorConfig, Connection};

/// `m` workers on `shards` shards, sharing one engine configuration and one set of
/// counters, as the daemon builds them.
struct Workers {
    loops: Vec<ControlThread>,
    queues: Vec<Arc<ShardQueues>>,
    lanes: ControlLanes,
    counters: Arc<ControlCounters>,
    config: Arc<control::Config>,
}

fn workers(m: usize, shards: usize, settings: RuntimeConfig, now: Instant) -> Workers {
    let config = Arc::new(server_config(&[SUITE], false));
    let lanes = ControlLanes::by_source(m);
    let queues: Vec<_> = (0..shards)
        .map(|_| {
            Arc::new(ShardQueues::with_lanes(
                1024,
                256,
                DEFAULT_INBOUND_BYTES,
                lanes.clone(),
            ))
        })
        .collect();
    let counters = Arc::new(ControlCounters::default());
    let loops = (0..m)
        .map(|w| {
            let mut rng = SeededRng::new(1 + w as u64);
            let acceptor = Acceptor::new(
                Arc::clone(&config),
                AcceptorConfig::default(),
                &mut rng,
                now,
            )
            .expect("server config is valid");
            let mut seed = 100 * (w as u64 + 1);
            let factory = Box::new(move || {
                seed += 1;
                Box::new(SeededRng::new(seed)) as Box<dyn control::Rng + Send>
            });
            let mut ctl = ControlThread::new(acceptor, queues.clone(), settings.clone(), factory);
            ctl.set_worker(w, m);
            ctl.set_counters(Arc::clone(&counters));
            ctl
        })
        .collect();
    Workers {
        loops,
        queues,
        lanes,
        counters,
        config,
    }
}

/// `n` peer addresses (one per source address) whose source hashes to `lane`.
fn peers_on(lanes: &ControlLanes, lane: usize, n: usize) -> Vec<SocketAddr> {
    (1..=250u16)
        .map(|i| SocketAddr::from(([10, 0, i as u8, 1], 5000 + i)))
        .filter(|p| lanes.of_peer(*p) == lane)
        .take(n)
        .collect()
}

/// The sessions installed: handle → peer.
type Sessions = HashMap<SessionId, SocketAddr>;

/// One round: every client's datagrams to shard 0's queue, a turn of every worker, and
/// the commands executed (flights fed to their client, keys recorded).
fn round(
    w: &mut Workers,
    clients: &mut [(SocketAddr, Connection)],
    server: SocketAddr,
    now: Instant,
    installed: &mut Sessions,
) {
    let q = &w.queues[0];
    let mut buf = vec![0u8; 4096];
    for (peer, c) in clients.iter_mut() {
        while let Some(t) = c.poll_transmit(now, &mut buf) {
            q.push_inbound(ControlInbound::Handshake {
                peer: *peer,
                datagram: buf[..t.len].to_vec(),
            })
            .expect("inbound queue has room");
        }
    }
    for ctl in &mut w.loops {
        ctl.run_turn(now, test_wall());
    }
    while let Some(cmd) = q.poll_command() {
        match cmd {
            ShardCommand::Transmit { peer, datagram } => {
                let (_, c) = clients
                    .iter_mut()
                    .find(|(p, _)| *p == peer)
                    .expect("a flight to a known client");
                c.handle_datagram(now, test_wall(), server, &datagram);
            }
            ShardCommand::InstallKeys { session, peer, .. } => {
                assert!(installed.insert(session, peer).is_none(), "one handle each");
            }
            ShardCommand::ExpectKeys { .. } => {}
            other => panic!("unexpected command {other:?}"),
        }
    }
}

#[test]
fn handshakes_from_many_sources_complete_each_on_its_sources_worker() {
    let now = Instant::now();
    let server: SocketAddr = "192.0.2.1:4433".parse().expect("literal");
    let mut w = workers(2, 1, RuntimeConfig::default(), now);
    let mut peers = peers_on(&w.lanes, 0, 5);
    peers.extend(peers_on(&w.lanes, 1, 5));
    // A second port of the first source: the same source, so the same worker.
    let second = SocketAddr::new(peers[0].ip(), 40_000);
    assert_eq!(w.lanes.of_peer(second), 0);
    peers.push(second);
    let mut clients: Vec<_> = peers
        .iter()
        .enumerate()
        .map(|(i, p)| (*p, client(server, 7 + i as u64, now)))
        .collect();
    let mut installed = Sessions::new();
    for _ in 0..8 {
        round(&mut w, &mut clients, server, now, &mut installed);
        if clients.iter().all(|(_, c)| c.is_established()) {
            break;
        }
    }
    assert!(clients.iter().all(|(_, c)| c.is_established()));
    assert_eq!(installed.len(), peers.len());
    // Each session's handle names the worker of its peer's source: the handshake ran there
    // from its first ClientHello (cookie included) to its keys.
    for (id, peer) in &installed {
        assert_eq!(w.lanes.of_session(*id), w.lanes.of_peer(*peer), "{peer}");
    }
    let per_worker: Vec<(u64, u64, usize)> = w
        .loops
        .iter()
        .map(|ctl| {
            let c = ctl.worker_counters();
            (
                c.handshakes_started
                    .load(std::sync::atomic::Ordering::Relaxed),
                c.handshakes_completed
                    .load(std::sync::atomic::Ordering::Relaxed),
                ctl.installed_sessions(),
            )
        })
        .collect();
    assert_eq!(per_worker, vec![(6, 6, 6), (5, 5, 5)]);
    let total = w.counters.snapshot();
    assert_eq!(
        (total.handshakes_started, total.handshakes_completed),
        (11, 11)
    );
    assert_eq!(
        total.cookies_sent, 11,
        "one cookie each, from the same worker"
    );
    assert_eq!(total.handshakes_shed, 0);
}

#[test]
fn a_reload_reaches_every_worker() {
    let now = Instant::now();
    let server: SocketAddr = "192.0.2.1:4433".parse().expect("literal");
    let mut w = workers(2, 1, RuntimeConfig::default(), now);
    // What the daemon does: one channel per worker, the same reload to each.
    let senders: Vec<_> = w
        .loops
        .iter_mut()
        .map(|ctl| {
            let (tx, rx) = mpsc::channel();
            ctl.set_reloads(rx);
            tx
        })
        .collect();
    let reload = Reload {
        config: Arc::clone(&w.config),
        recheck_certificates: false,
        limits: None,
        access: Some(AccessList {
            allow: Vec::new(),
            deny: vec!["10.0.0.0/8".parse().expect("literal")],
        }),
    };
    for tx in &senders {
        tx.send(reload.clone()).expect("worker listens");
    }
    let mut peers = peers_on(&w.lanes, 0, 2);
    peers.extend(peers_on(&w.lanes, 1, 2));
    let mut clients: Vec<_> = peers
        .iter()
        .enumerate()
        .map(|(i, p)| (*p, client(server, 50 + i as u64, now)))
        .collect();
    let mut installed = Sessions::new();
    round(&mut w, &mut clients, server, now, &mut installed);
    let stats = w.counters.snapshot();
    assert_eq!(stats.reloads, 2, "each worker applied it");
    // Every ClientHello was refused by its own worker under the reloaded deny list.
    assert_eq!(stats.datagrams_denied, 4);
    assert_eq!(stats.cookies_sent, 0);
    assert!(installed.is_empty());
}

#[test]
fn an_overloaded_worker_sheds_new_handshakes_after_the_cookie_and_recovers() {
    let now = Instant::now();
    let server: SocketAddr = "192.0.2.1:4433".parse().expect("literal");
    let settings = RuntimeConfig {
        shed_backlog: 4,
        overload_admit_per_turn: 0,
        ..RuntimeConfig::default()
    };
    let mut w = workers(2, 1, settings, now);
    let peer = peers_on(&w.lanes, 1, 1)[0];
    let mut clients = vec![(peer, client(server, 9, now))];
    let mut installed = Sessions::new();
    // ClientHello, HelloVerifyRequest back.
    round(&mut w, &mut clients, server, now, &mut installed);
    assert_eq!(w.counters.snapshot().cookies_sent, 1);
    // Synthetic saturation: junk from the same source ahead of the ClientHello with its
    // cookie fills worker 1's lane past the threshold.
    for _ in 0..4 {
        w.queues[0]
            .push_inbound(ControlInbound::Handshake {
                peer,
                datagram: vec![0x16; 8],
            })
            .expect("room");
    }
    assert_eq!(w.queues[0].lane_len(1), 4);
    assert_eq!(w.queues[0].lane_len(0), 0);
    round(&mut w, &mut clients, server, now, &mut installed);
    let stats = w.counters.snapshot();
    assert_eq!(stats.handshakes_shed, 1, "{stats:?}");
    assert_eq!(
        stats.handshakes_started, 0,
        "no engine, no asymmetric crypto"
    );
    assert_eq!(w.loops[1].handshakes(), 0);
    // The backlog is gone: the client's retransmission (its timer) goes through.
    let later = now + std::time::Duration::from_secs(2);
    clients[0].1.handle_timeout(later);
    for _ in 0..6 {
        round(&mut w, &mut clients, server, later, &mut installed);
    }
    assert!(clients[0].1.is_established());
    let stats = w.counters.snapshot();
    assert_eq!((stats.handshakes_shed, stats.handshakes_completed), (1, 1));
    assert_eq!(installed.values().collect::<Vec<_>>(), vec![&peer]);
}

/// Under overload a worker still admits `overload_admit_per_turn` cookie-verified new
/// handshakes per turn (reachable clients complete at a reduced rate) and sheds the rest.
#[test]
fn an_overloaded_worker_still_admits_one_new_handshake_per_turn() {
    let now = Instant::now();
    let server: SocketAddr = "192.0.2.1:4433".parse().expect("literal");
    let settings = RuntimeConfig {
        shed_backlog: 4,
        overload_admit_per_turn: 1,
        ..RuntimeConfig::default()
    };
    let mut w = workers(2, 1, settings, now);
    let peers = peers_on(&w.lanes, 1, 3);
    let mut clients: Vec<_> = peers
        .iter()
        .enumerate()
        .map(|(i, p)| (*p, client(server, 20 + i as u64, now)))
        .collect();
    let mut installed = Sessions::new();
    round(&mut w, &mut clients, server, now, &mut installed);
    assert_eq!(w.counters.snapshot().cookies_sent, 3);
    for _ in 0..4 {
        w.queues[0]
            .push_inbound(ControlInbound::Handshake {
                peer: peers[0],
                datagram: vec![0x16; 8],
            })
            .expect("room");
    }
    // The three ClientHellos with their cookies arrive in one overloaded turn.
    round(&mut w, &mut clients, server, now, &mut installed);
    let stats = w.counters.snapshot();
    assert_eq!(
        (stats.handshakes_started, stats.handshakes_shed),
        (1, 2),
        "{stats:?}"
    );
}

#[test]
fn one_worker_numbers_sessions_as_before() {
    let lanes = ControlLanes::single();
    let peer: SocketAddr = "10.1.2.3:4".parse().expect("literal");
    assert_eq!(lanes.of_peer(peer), 0);
    assert_eq!(lanes.of_session(SessionId::new(1)), 0);
    let two = ControlLanes::by_source(2);
    assert_eq!(two.of_session(SessionId::new(3)), 1);
    assert_eq!(two.of_session(SessionId::new(4)), 0);
    // A source is its address (IPv6: its /64), whatever the port.
    let v6a: SocketAddr = "[2001:db8:1:2:aaaa::1]:1000".parse().expect("literal");
    let v6b: SocketAddr = "[2001:db8:1:2:bbbb::9]:2000".parse().expect("literal");
    assert_eq!(two.of_peer(v6a), two.of_peer(v6b));
}

/// What worker `ctl` knows of its installed sessions: handle → peer (asked as `dtlsd
/// status` asks, through the admin channel).
fn known(ctl: &mut ControlThread, now: Instant) -> Sessions {
    let (admin_tx, admin_rx) = mpsc::channel();
    ctl.set_admin(admin_rx);
    let (tx, rx) = mpsc::channel();
    admin_tx
        .send(super::AdminRequest::Sessions(tx))
        .expect("the loop holds the receiver");
    ctl.run_turn(now, test_wall());
    rx.try_recv()
        .expect("answered in the turn")
        .into_iter()
        .map(|s| (s.session, s.peer))
        .collect()
}

#[test]
fn a_peer_that_moves_to_another_workers_source_stays_with_its_sessions_worker() {
    let now = Instant::now();
    let server: SocketAddr = "192.0.2.1:4433".parse().expect("literal");
    let mut w = workers(2, 1, RuntimeConfig::default(), now);
    // A session established from a source of worker 0.
    let from = peers_on(&w.lanes, 0, 1)[0];
    let mut clients = vec![(from, client(server, 41, now))];
    let mut installed = Sessions::new();
    for _ in 0..8 {
        round(&mut w, &mut clients, server, now, &mut installed);
        if clients[0].1.is_established() {
            break;
        }
    }
    let (&id, _) = installed.iter().next().expect("one session installed");
    assert_eq!(w.lanes.of_session(id), 0);
    // The shard saw its records (under its CID) come from an address of worker 1's
    // sources: the report follows the session's handle to worker 0, not the new source.
    let to = peers_on(&w.lanes, 1, 1)[0];
    assert_eq!(w.lanes.of_peer(to), 1);
    let moved = ControlInbound::PeerMoved {
        session: id,
        from,
        peer: to,
    };
    assert_eq!(w.lanes.lane(&moved), 0, "routed by session");
    w.queues[0].push_inbound(moved).expect("room");
    for ctl in &mut w.loops {
        ctl.run_turn(now, test_wall());
    }
    // Worker 0 renamed the session; worker 1 holds nothing of it.
    assert_eq!(known(&mut w.loops[0], now), Sessions::from([(id, to)]));
    assert!(known(&mut w.loops[1], now).is_empty());
    // Its later reports still reach worker 0, which closes it under its new address: a
    // close_notify goes to `to`, and no session is left anywhere.
    let (kick_tx, kick_rx) = mpsc::channel();
    w.loops[0].set_admin(kick_rx);
    let (tx, rx) = mpsc::channel();
    kick_tx
        .send(super::AdminRequest::Kick {
            target: super::KickTarget::Peer(to),
            reply: tx,
        })
        .expect("the loop holds the receiver");
    w.loops[0].run_turn(now, test_wall());
    assert_eq!(rx.try_recv().expect("answered"), vec![id]);
    let mut closes = Vec::new();
    while let Some(cmd) = w.queues[0].poll_command() {
        if let ShardCommand::Close { session, .. } = cmd {
            closes.push(session);
        }
    }
    assert_eq!(closes, vec![id]);
    w.queues[0]
        .push_inbound(ControlInbound::SessionClosed {
            session: id,
            peer: to,
            reason: dtls_shard::CloseReason::Closed(dtls_shard::CloseCause::Requested),
            stats: dtls_shard::SessionCounters::default(),
        })
        .expect("room");
    for ctl in &mut w.loops {
        ctl.run_turn(now, test_wall());
    }
    assert_eq!(
        w.loops
            .iter()
            .map(ControlThread::installed_sessions)
            .collect::<Vec<_>>(),
        vec![0, 0]
    );
}
