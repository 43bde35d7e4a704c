//! DTLS 1.3 sessions through the control loop: a real 1.3 client engine on one side, on the
//! other a stand-in for the shard that installs the keys control hands it, opens the
//! client's application-epoch records with them and passes post-handshake plaintext back
//! up, as `dtls_shard`'s relay does.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dataplane::record::ReplayWindow;
use dataplane::record::v13::{
    HeaderForm, InnerContentType, MixedKind, MixedRecords, Opener13, Sealer13, reconstruct_epoch,
};
use dtls_crypto::SeededRng;
use dtls_proto::{NamedGroup, ProtocolVersion};
use dtls_shard::{AeadLimit, CloseCause, ControlInbound, SessionId, ShardCommand, ShardQueues};

use super::{ControlThread, RuntimeConfig};
use crate::fixtures::{client_config, server_config, test_wall};
use control::{Acceptor, AcceptorConfig, CipherSuite, Connection, EpochKeys13, Event};

const SUITE: CipherSuite = CipherSuite::EcdheEcdsaAes128GcmSha256;

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("literal address")
}

/// A serve loop that negotiates DTLS 1.3 first, on one shard.
fn control13(now: Instant) -> (ControlThread, Arc<ShardQueues>) {
    let config = control::Config {
        versions: vec![ProtocolVersion::Dtls1_3, ProtocolVersion::Dtls1_2],
        ..server_config(&[SUITE], false)
    };
    let mut rng = SeededRng::new(1);
    let acceptor = Acceptor::new(Arc::new(config), AcceptorConfig::default(), &mut rng, now)
        .expect("server config is valid");
    let queues = Arc::new(ShardQueues::new(64, 64));
    let mut seed = 10;
    let factory = Box::new(move || {
        seed += 1;
        Box::new(SeededRng::new(seed)) as Box<dyn control::Rng + Send>
    });
    let ctl = ControlThread::new(
        acceptor,
        vec![Arc::clone(&queues)],
        RuntimeConfig::default(),
        factory,
    );
    (ctl, queues)
}

fn client13(server: SocketAddr, now: Instant) -> Connection {
    let config = control::Config {
        versions: vec![ProtocolVersion::Dtls1_3],
        // One datagram per ClientHello: no hybrid share to fragment.
        tls13_groups: vec![NamedGroup::X25519],
        ..client_config(&[SUITE])
    };
    Connection::client(
        Arc::new(config),
        Box::new(SeededRng::new(7)),
        now,
        server,
        None,
    )
    .expect("client config is valid")
}

/// The shard's side of one DTLS 1.3 session: what control installed.
#[derive(Default)]
struct Shard13 {
    session: Option<SessionId>,
    openers: Vec<Opener13>,
    sealer: Option<Sealer13>,
    retired: Vec<u64>,
    /// Every command, by name, in order.
    log: Vec<&'static str>,
}

impl Shard13 {
    /// Runs control's commands: keys installed here, datagrams handed to the client.
    fn commands(&mut self, q: &ShardQueues, c: &mut Connection, server: SocketAddr, now: Instant) {
        while let Some(cmd) = q.poll_command() {
            match cmd {
                ShardCommand::InstallKeys13 {
                    session,
                    read,
                    write,
                    cid,
                    peer_cid,
                    ..
                } => {
                    self.log.push("install13");
                    assert!(
                        cid.is_empty() && peer_cid.is_empty(),
                        "CIDs are off in this test"
                    );
                    assert!(self.session.is_none_or(|s| s == session));
                    self.session = Some(session);
                    if let Some(r) = read {
                        let window = ReplayWindow::new(r.replay_window);
                        self.openers.push(
                            Opener13::new(r.epoch, r.keys, window)
                                .with_next_expected(r.next_expected),
                        );
                    }
                    if let Some(w) = write {
                        self.sealer =
                            Some(Sealer13::new(w.epoch, w.keys).with_next_sequence(w.next_seq));
                    }
                }
                ShardCommand::RetireEpoch { epoch, .. } => {
                    self.log.push("retire");
                    self.openers.retain(|o| o.epoch() != epoch);
                    self.retired.push(epoch);
                }
                ShardCommand::Transmit { datagram, .. } => {
                    self.log.push("transmit");
                    c.handle_datagram(now, test_wall(), server, &datagram);
                }
                // After the installation: on the session's path, the client's here.
                ShardCommand::TransmitSession { session, datagram } => {
                    assert_eq!(Some(session), self.session, "the installed session");
                    self.log.push("transmit");
                    c.handle_datagram(now, test_wall(), server, &datagram);
                }
                ShardCommand::ExpectKeys { .. } => self.log.push("expect"),
                ShardCommand::InstallKeys { .. } => panic!("a DTLS 1.2 install"),
                ShardCommand::Close { .. } => self.log.push("close"),
                ShardCommand::Forget { .. } => self.log.push("forget"),
                ShardCommand::AddCids { .. } => self.log.push("add cids"),
                ShardCommand::PeerCids { .. } => self.log.push("peer cids"),
            }
        }
    }

    /// The client's datagrams as the shard handles them: a datagram with a record of an
    /// epoch it does not hold (or a plaintext one) to control whole; post-handshake
    /// records of a held epoch opened, their plaintext to control.
    fn client_sent(&mut self, c: &mut Connection, q: &ShardQueues, peer: SocketAddr, now: Instant) {
        let mut buf = vec![0u8; 4096];
        while let Some(t) = c.poll_transmit(now, &mut buf) {
            let datagram = buf[..t.len].to_vec();
            let held: Vec<u64> = self.openers.iter().map(Opener13::epoch).collect();
            let whole = MixedRecords::new(&datagram, 0).any(|r| match r.kind {
                MixedKind::Ciphertext(h) => {
                    reconstruct_epoch(h.epoch_bits, held.iter().copied()).is_none()
                }
                _ => true,
            });
            if whole {
                q.push_inbound(ControlInbound::Handshake {
                    peer,
                    datagram: datagram.clone(),
                })
                .expect("room");
            }
            for r in MixedRecords::new(&datagram, 0) {
                let MixedKind::Ciphertext(h) = r.kind else {
                    continue;
                };
                let Some(epoch) = reconstruct_epoch(h.epoch_bits, held.iter().copied()) else {
                    continue;
                };
                let opener = self
                    .openers
                    .iter_mut()
                    .find(|o| o.epoch() == epoch)
                    .expect("held");
                let mut bytes = r.bytes.to_vec();
                let opened = opener
                    .open(&mut bytes, 0)
                    .expect("the client's record opens");
                let ack = match opened.content_type {
                    InnerContentType::Ack => true,
                    InnerContentType::Handshake => false,
                    other => panic!("unexpected {other:?}"),
                };
                q.push_inbound(ControlInbound::PostHandshake {
                    session: self.session.expect("installed"),
                    epoch: opened.epoch,
                    sequence: opened.sequence,
                    ack,
                    message: opened.plaintext.to_vec(),
                })
                .expect("room");
            }
        }
    }
}

/// A DTLS 1.3 session set up through [`control13`] and [`settle`]: a client of `peer`
/// established with the server at 127.0.0.1:4433, its keys installed in the fake shard.
struct Established13 {
    ctl: ControlThread,
    q: Arc<ShardQueues>,
    shard: Shard13,
    c: Connection,
    server: SocketAddr,
    peer: SocketAddr,
}

fn established13(now: Instant, peer: &str) -> Established13 {
    let server = addr("127.0.0.1:4433");
    let peer = addr(peer);
    let (mut ctl, q) = control13(now);
    let mut shard = Shard13::default();
    let mut c = client13(server, now);
    settle(&mut ctl, &mut shard, &mut c, &q, (peer, server), now);
    assert!(c.is_established(), "client state {}", c.state_name());
    Established13 {
        ctl,
        q,
        shard,
        c,
        server,
        peer,
    }
}

/// Runs the loop and the client until neither has anything left to say.
fn settle(
    ctl: &mut ControlThread,
    shard: &mut Shard13,
    c: &mut Connection,
    q: &ShardQueues,
    (peer, server): (SocketAddr, SocketAddr),
    now: Instant,
) {
    for _ in 0..16 {
        shard.client_sent(c, q, peer, now);
        let busy = ctl.run_turn(now, test_wall());
        shard.commands(q, c, server, now);
        if !busy {
            return;
        }
    }
    panic!("no quiet turn");
}

/// Seals `msg` as application data with `sealer` and opens it with `keys`.
fn carries(sealer: &mut Sealer13, keys: EpochKeys13, msg: &[u8]) -> bool {
    let mut opener = Opener13::new(keys.epoch, keys.keys, ReplayWindow::new(64));
    let form = HeaderForm::default();
    let mut record = vec![0u8; sealer.record_len(&form, msg.len(), 0)];
    let at = sealer.plaintext_offset(&form);
    record[at..at + msg.len()].copy_from_slice(msg);
    let Ok(len) = sealer.seal(
        InnerContentType::ApplicationData,
        &form,
        &mut record,
        msg.len(),
        0,
    ) else {
        return false;
    };
    opener
        .open(&mut record[..len], 0)
        .is_ok_and(|o| o.plaintext == msg)
}

#[test]
fn a_13_session_is_installed_its_engine_stays_and_key_updates_reach_the_shard() {
    let now = Instant::now();
    let Established13 {
        mut ctl,
        q,
        mut shard,
        mut c,
        server,
        peer,
    } = established13(now, "127.0.0.1:50013");
    let client_keys = std::iter::from_fn(|| c.poll_event())
        .find_map(|e| match e {
            Event::KeysReady(k) => Some(k),
            _ => None,
        })
        .expect("client keys");
    let control::RecordKeys::Dtls13 {
        read: c_read,
        write: _,
    } = client_keys.records
    else {
        panic!("a DTLS 1.3 session");
    };
    // Keys before the flight that follows them, epoch 3 both ways; the shard's records
    // start past the engine's reserve.
    let install = shard
        .log
        .iter()
        .position(|c| *c == "install13")
        .expect("installed");
    assert!(
        shard.log[install + 1..].contains(&"transmit"),
        "{:?}",
        shard.log
    );
    assert_eq!(
        shard
            .openers
            .iter()
            .map(Opener13::epoch)
            .collect::<Vec<_>>(),
        [3]
    );
    let mut sealer = shard.sealer.take().expect("write keys");
    assert_eq!((sealer.epoch(), sealer.next_sequence()), (3, 64));
    assert!(carries(&mut sealer, *c_read, b"epoch 3"));
    // The server's ACK of the client's Finished reached the client: its final flight is
    // done (no retransmission timer left).
    assert_eq!(
        c.poll_timeout(),
        None,
        "the client's Finished was acknowledged"
    );
    let stats = ctl.counters().snapshot();
    assert_eq!(
        (stats.handshakes_completed, ctl.installed_sessions()),
        (1, 1)
    );
    // The engine outlives the 1.2 grace period: it serves the session.
    ctl.run_turn(now + Duration::from_secs(60), test_wall());
    assert_eq!(ctl.handshakes(), 1);
    let later = now + Duration::from_secs(61);

    // The client updates its keys and asks the server to do the same: the server's shard
    // gets epoch 4 to read at once, then epoch 4 to write once the client acknowledged
    // the server's own KeyUpdate; epoch 3 goes once a record of epoch 4 arrived.
    shard.log.clear();
    assert!(c.update_keys(later, true));
    settle(&mut ctl, &mut shard, &mut c, &q, (peer, server), later);
    let mut c_read4 = None;
    while let Some(e) = c.poll_event() {
        if let Event::KeysUpdated(mut k) = e {
            c_read4 = c_read4.or(k.read.take());
        }
    }
    let c_read4 = c_read4.expect("the client read the server's KeyUpdate");
    assert_eq!(c_read4.epoch, 4);
    assert_eq!(
        shard
            .openers
            .iter()
            .map(Opener13::epoch)
            .collect::<Vec<_>>(),
        [4]
    );
    assert_eq!(shard.retired, [3]);
    let mut sealer = shard.sealer.take().expect("write keys of epoch 4");
    assert_eq!((sealer.epoch(), sealer.next_sequence()), (4, 64));
    assert!(carries(&mut sealer, c_read4, b"epoch 4"));
    let stats = ctl.counters().snapshot();
    assert_eq!(stats.key_updates, 2, "read, then write");
    assert!(stats.post_handshake >= 2, "{stats:?}");
    assert_eq!(stats.post_handshake_dropped, 0);
    assert!(!shard.log.contains(&"close"), "{:?}", shard.log);

    // An AEAD limit on a 1.3 session starts a KeyUpdate instead of closing it.
    shard.log.clear();
    let session = shard.session.expect("session");
    q.push_inbound(ControlInbound::AeadLimitReached {
        session,
        limit: AeadLimit::Confidentiality,
    })
    .expect("room");
    let at = later + Duration::from_secs(1);
    settle(&mut ctl, &mut shard, &mut c, &q, (peer, server), at);
    assert!(!shard.log.contains(&"close"), "{:?}", shard.log);
    let sealer = shard.sealer.as_ref().expect("write keys of epoch 5");
    assert_eq!((sealer.epoch(), sealer.next_sequence()), (5, 64));
    assert_eq!(ctl.counters().snapshot().aead_limits, 1);
    assert_eq!(ctl.installed_sessions(), 1);
}

#[test]
fn post_handshake_records_of_an_unknown_session_are_dropped_and_counted() {
    let now = Instant::now();
    let (mut ctl, q) = control13(now);
    q.push_inbound(ControlInbound::PostHandshake {
        session: SessionId::new(99),
        epoch: 3,
        sequence: 0,
        ack: true,
        message: vec![0, 0],
    })
    .expect("room");
    ctl.run_turn(now, test_wall());
    assert_eq!(ctl.counters().snapshot().post_handshake_dropped, 1);
    assert!(q.poll_command().is_none());
}

/// What control sent the shard while a flood ran: (read-epoch installs, write-epoch
/// installs, retirements, closes, datagrams), the datagrams not delivered to the client
/// (the attacker keeps going whatever the server says).
fn tally_commands(q: &ShardQueues, t: &mut (usize, usize, usize, usize, usize)) {
    while let Some(cmd) = q.poll_command() {
        match cmd {
            ShardCommand::InstallKeys13 { read, write, .. } => {
                t.0 += usize::from(read.is_some());
                t.1 += usize::from(write.is_some());
            }
            ShardCommand::RetireEpoch { .. } => t.2 += 1,
            ShardCommand::Close { .. } => t.3 += 1,
            ShardCommand::Transmit { datagram, .. }
            | ShardCommand::TransmitSession { datagram, .. } => {
                t.4 += 1;
                q.recycle(datagram);
            }
            _ => {}
        }
    }
}

/// Issue 18, DTLS 1.3 shapes at the control loop (what a shard hands it once a record
/// opened under the session's keys: only the authenticated peer can send these): a flood
/// of forged ACKs (record numbers never sent, a body that does not parse, a full record's
/// worth of numbers), then a flood of KeyUpdate(update_requested) without waiting for our
/// ACKs. Each is taken in (counted); forged ACKs change nothing; none closes the session;
/// the KeyUpdates of one epoch move the peer's read epoch once (RFC 9147 §8), the rest are
/// counted as stale; our write keys stay until our own KeyUpdate is acknowledged;
/// nothing is answered more than once per message.
#[test]
fn forged_ack_and_key_update_floods_are_bounded_and_the_session_survives() {
    let now = Instant::now();
    let Established13 {
        mut ctl,
        q,
        mut shard,
        mut c,
        ..
    } = established13(now, "127.0.0.1:50014");
    let session = shard.session.expect("installed");
    let later = now + Duration::from_secs(1);
    let post = |epoch, sequence, ack, message| ControlInbound::PostHandshake {
        session,
        epoch,
        sequence,
        ack,
        message,
    };

    // Forged ACKs, in epoch 3 (the shard opened them: sequence numbers never seen).
    const ACKS: u64 = 600;
    let mut t = (0, 0, 0, 0, 0);
    let ack = |records: &[(u64, u64)]| {
        let mut body = Vec::new();
        dtls_proto::tls13::Ack {
            records: records
                .iter()
                .map(|&(epoch, sequence)| dtls_proto::tls13::RecordNumber { epoch, sequence })
                .collect(),
        }
        .emit(&mut body)
        .expect("emit");
        body
    };
    let full: Vec<(u64, u64)> = (0..1023).map(|s| (3, 1_000_000 + s)).collect();
    let before = ctl.counters().snapshot();
    for i in 0..ACKS {
        let body = match i % 4 {
            0 => ack(&[(3, 1_000_000 + i), (2, 77 + i)]),
            1 => ack(&[(u64::from(u16::MAX), u64::MAX >> 16), (4, i)]),
            2 => vec![0xff; 7],
            _ => ack(&full),
        };
        q.push_inbound(post(3, 200 + i, true, body)).expect("room");
        if q.inbound_len() >= 32 {
            ctl.run_turn(later, test_wall());
            tally_commands(&q, &mut t);
        }
    }
    ctl.run_turn(later, test_wall());
    tally_commands(&q, &mut t);
    let stats = ctl.counters().snapshot();
    assert_eq!(stats.post_handshake - before.post_handshake, ACKS);
    assert_eq!(stats.post_handshake_dropped, 0);
    assert_eq!(t, (0, 0, 0, 0, 0), "a forged ACK changed something");
    assert_eq!((ctl.installed_sessions(), ctl.handshakes()), (1, 1));

    // A KeyUpdate flood: the client's real KeyUpdate (its message_seq), then the same
    // message under the next message_seqs and record numbers, all in epoch 3.
    assert!(c.update_keys(later, true));
    let mut buf = vec![0u8; 4096];
    let t0 = c
        .poll_transmit(later, &mut buf)
        .expect("the client's KeyUpdate");
    let mut record = buf[..t0.len].to_vec();
    let opened = shard.openers[0]
        .open(&mut record, 0)
        .expect("the client's KeyUpdate opens");
    assert_eq!(opened.content_type, InnerContentType::Handshake);
    let (first_sequence, key_update) = (opened.sequence, opened.plaintext.to_vec());
    assert_eq!(key_update[0], 24, "a KeyUpdate");
    let message_seq = u16::from_be_bytes([key_update[4], key_update[5]]);
    const FLOOD: u16 = 40;
    let mut t = (0, 0, 0, 0, 0);
    for k in 0..FLOOD {
        let mut m = key_update.clone();
        m[4..6].copy_from_slice(&(message_seq + k).to_be_bytes());
        q.push_inbound(post(3, first_sequence + u64::from(k), false, m))
            .expect("room");
        ctl.run_turn(later, test_wall());
        tally_commands(&q, &mut t);
    }
    let (reads, writes, _retired, closes, datagrams) = t;
    println!("KeyUpdate flood of {FLOOD}: {t:?}");
    assert_eq!(closes, 0);
    // RFC 9147 §8: a KeyUpdate in epoch 3 moves the peer to epoch 4, once; the other 39,
    // still in epoch 3 (the shard opens it until control retires it), are KeyUpdates
    // the peer may not send before our ACK of the first: acknowledged, counted, no move.
    assert_eq!(
        reads, 1,
        "the peer's epoch moved {reads} times for {FLOOD} KeyUpdates in one epoch"
    );
    let stats = ctl.counters().snapshot();
    assert_eq!(stats.key_updates_stale, u64::from(FLOOD) - 1);
    assert_eq!(
        writes, 0,
        "our KeyUpdate is not acknowledged: our write keys stay"
    );
    assert!(
        datagrams <= usize::from(FLOOD) + 1,
        "{datagrams} datagrams for {FLOOD} messages"
    );
    assert_eq!((ctl.installed_sessions(), ctl.handshakes()), (1, 1));
    assert_eq!(ctl.counters().snapshot().post_handshake_dropped, 0);

    // The same flood one epoch on: a KeyUpdate in epoch 4 (the one the peer moved to)
    // moves it once more, to 5, and no further, however many follow in epoch 4.
    let mut t = (0, 0, 0, 0, 0);
    for k in 0..FLOOD {
        let mut m = key_update.clone();
        m[4..6].copy_from_slice(&(message_seq + FLOOD + k).to_be_bytes());
        q.push_inbound(post(4, u64::from(k), false, m))
            .expect("room");
        ctl.run_turn(later, test_wall());
        tally_commands(&q, &mut t);
    }
    assert_eq!((t.0, t.1, t.3), (1, 0, 0), "{t:?}");
    assert_eq!(
        ctl.counters().snapshot().key_updates_stale,
        2 * (u64::from(FLOOD) - 1)
    );
    assert_eq!((ctl.installed_sessions(), ctl.handshakes()), (1, 1));
}

/// A post-handshake message the session's engine cannot take (a KeyUpdate whose
/// request_update is neither 0 nor 1: RFC 8446 §4.6.3, a decode_error) fails the engine:
/// its fatal alert goes to the peer, then the session is closed in the shard
/// (`engine_failed`) and counted, instead of living on there with no engine to update its
/// keys.
#[test]
fn a_session_whose_engine_fails_after_the_handshake_is_closed_and_counted() {
    let now = Instant::now();
    let Established13 {
        mut ctl, q, shard, ..
    } = established13(now, "127.0.0.1:50015");
    let session = shard.session.expect("installed");
    // key_update(24), length 1, message_seq 3 (after ClientHello, ClientHello and
    // Finished), one fragment, request_update 7.
    let bad = vec![24, 0, 0, 1, 0, 3, 0, 0, 0, 0, 0, 1, 7];
    q.push_inbound(ControlInbound::PostHandshake {
        session,
        epoch: 3,
        sequence: 100,
        ack: false,
        message: bad,
    })
    .expect("room");
    ctl.run_turn(now, test_wall());
    let mut commands = Vec::new();
    while let Some(cmd) = q.poll_command() {
        commands.push(match cmd {
            // An installed session's datagrams go by session (its current path).
            ShardCommand::TransmitSession { session: s, .. } if s == session => "transmit",
            ShardCommand::Close {
                session: s,
                reason: CloseCause::EngineFailed,
            } if s == session => "close engine_failed",
            _ => "other",
        });
    }
    assert_eq!(
        commands,
        ["transmit", "close engine_failed"],
        "the alert, then the close"
    );
    let stats = ctl.counters().snapshot();
    assert_eq!(stats.sessions_engine_failed, 1);
    assert_eq!((ctl.installed_sessions(), ctl.handshakes()), (0, 0));
}

/// RFC 9147 §8: our KeyUpdate (on an AEAD limit) that the client never acknowledges (it
/// went silent: every copy lost) fails the session's engine after its retransmission
/// budget, on the virtual clock, and control closes the session in the shard
/// (`CloseCause::EngineFailed`) instead of keeping it under keys it can never update again.
#[test]
fn a_key_update_the_peer_never_acknowledges_closes_the_session() {
    let now = Instant::now();
    let Established13 {
        mut ctl,
        q,
        shard,
        peer,
        ..
    } = established13(now, "127.0.0.1:50014");
    let session = shard.session.expect("installed");
    q.push_inbound(ControlInbound::AeadLimitReached {
        session,
        limit: AeadLimit::Confidentiality,
    })
    .expect("room");
    let mut at = now + Duration::from_secs(1);
    let (mut sent, mut closed) = (0, None);
    for _ in 0..1000 {
        ctl.run_turn(at, test_wall());
        while let Some(cmd) = q.poll_command() {
            match cmd {
                // Lost on the way to the client.
                ShardCommand::TransmitSession { datagram, .. } => {
                    sent += 1;
                    q.recycle(datagram);
                }
                ShardCommand::Close { session, reason } => closed = Some((session, reason)),
                other => panic!("unexpected {other:?}"),
            }
        }
        if closed.is_some() {
            break;
        }
        let Some(next) = ctl.poll_timeout() else {
            break;
        };
        at = next.max(at + Duration::from_millis(1));
    }
    assert_eq!(closed, Some((session, CloseCause::EngineFailed)));
    assert!(
        sent > 10,
        "the KeyUpdate was resent through its budget: {sent}"
    );
    assert_eq!(ctl.installed_sessions(), 0);
    // The shard's report of the close finds nothing left to do.
    q.push_inbound(ControlInbound::SessionClosed {
        session,
        peer,
        reason: dtls_shard::CloseReason::Closed(CloseCause::EngineFailed),
        stats: dtls_shard::SessionCounters::default(),
    })
    .expect("room");
    ctl.run_turn(at, test_wall());
    assert_eq!(ctl.handshakes(), 0, "the failed engine is gone");
}
