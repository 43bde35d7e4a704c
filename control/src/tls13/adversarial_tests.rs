//! DTLS 1.3-specific adversarial shapes at engine level (TESTING.md "Adversarial"; issue
//! 18), between our client and server in memory on the virtual clock: forged ACKs, a
//! KeyUpdate flood, records of retired epochs, a spoofed HelloRetryRequest on a live
//! session. The forged records are sealed with the misbehaving side's own keys (what a
//! malicious authenticated peer can send), so they need the engine's transport; the
//! shapes an off-path attacker can send without keys are in
//! `control/tests/adversarial13.rs` and `control/dtlsd/tests/mitm.rs`.

use std::collections::VecDeque;
use std::time::Duration;

use dataplane::record::v13::InnerContentType;
use dtls_proto::tls13::{Ack, KeyUpdate, RecordNumber};
use dtls_proto::{HandshakeType, NamedGroup};

use super::tests::{client13, pair, server13, settle};
use super::transport::Flight13;
use super::{ENGINE_SEQUENCE_RESERVE, EPOCH_APPLICATION, Engine13};
use crate::pair_tests::Pair;
use crate::version::Inner;
use crate::{Connection, Event};

pub(super) fn engine(c: &mut Connection) -> &mut Engine13 {
    match &mut c.inner {
        Inner::V13(e) => e,
        Inner::V12(_) => panic!("a DTLS 1.2 connection"),
    }
}

pub(super) fn server(pair: &mut Pair) -> &mut Connection {
    pair.server.as_mut().expect("server")
}

/// A settled DTLS 1.3 pair (X25519, no cookie), events of the handshake dropped.
pub(super) fn live() -> Pair {
    let mut client = client13();
    client.tls13_groups = vec![NamedGroup::X25519];
    let mut pair = pair(client, server13());
    settle(&mut pair, Duration::from_secs(10));
    assert!(pair.client.is_established());
    assert!(server(&mut pair).is_established());
    pair.client_events.clear();
    pair.server_events.clear();
    pair
}

/// One record the client seals with its own keys of `epoch`, alone in a datagram.
pub(super) fn client_record(
    pair: &mut Pair,
    content: InnerContentType,
    epoch: u64,
    body: &[u8],
) -> Vec<u8> {
    let mut datagram = Vec::new();
    engine(&mut pair.client)
        .core
        .transport
        .push_record(&mut datagram, content, epoch, &[body])
        .expect("within the engine's reserve");
    datagram
}

/// A handshake message of the client's (the next message_seq), sealed in `epoch`.
pub(super) fn client_message(
    pair: &mut Pair,
    epoch: u64,
    msg_type: HandshakeType,
    body: Vec<u8>,
) -> Vec<u8> {
    let core = &mut engine(&mut pair.client).core;
    let message = core.out_message(epoch, msg_type, body);
    let mut out = VecDeque::new();
    Flight13::new(vec![message])
        .pack(1200, false, &mut core.transport, &mut out)
        .expect("pack");
    assert_eq!(out.len(), 1);
    out.pop_front().expect("one datagram")
}

fn ack_body(records: Vec<RecordNumber>) -> Vec<u8> {
    let mut body = Vec::new();
    Ack { records }.emit(&mut body).expect("emit");
    body
}

pub(super) fn to_server(pair: &mut Pair, datagram: &[u8]) {
    let (now, wall) = (pair.now, pair.wall);
    let s = server(pair);
    let from = s.peer();
    s.handle_datagram(now, wall, from, datagram);
}

pub(super) fn to_client(pair: &mut Pair, datagram: &[u8]) {
    let (now, wall) = (pair.now, pair.wall);
    let from = pair.client.peer();
    pair.client.handle_datagram(now, wall, from, datagram);
}

/// Everything the server has queued to send.
pub(super) fn server_output(pair: &mut Pair) -> Vec<Vec<u8>> {
    let now = pair.now;
    let mut buf = vec![0u8; 2048];
    let s = server(pair);
    std::iter::from_fn(|| {
        s.poll_transmit(now, &mut buf)
            .map(|t| buf[..t.len].to_vec())
    })
    .collect()
}

pub(super) fn client_output(pair: &mut Pair) -> Vec<Vec<u8>> {
    let now = pair.now;
    let mut buf = vec![0u8; 2048];
    std::iter::from_fn(|| {
        pair.client
            .poll_transmit(now, &mut buf)
            .map(|t| buf[..t.len].to_vec())
    })
    .collect()
}

pub(super) fn events(c: &mut Connection) -> Vec<Event> {
    std::iter::from_fn(|| c.poll_event()).collect()
}

/// (read epochs, write epochs) of the KeysUpdated events in `events`.
fn updated_epochs(events: &[Event]) -> (Vec<u64>, Vec<u64>) {
    let (mut read, mut write) = (Vec::new(), Vec::new());
    for e in events {
        if let Event::KeysUpdated(k) = e {
            read.extend(k.read.as_ref().map(|k| k.epoch));
            write.extend(k.write.as_ref().map(|k| k.epoch));
        }
    }
    (read, write)
}

/// Forged ACKs (RFC 9147 §7) from an authenticated peer while our KeyUpdate waits for
/// its ACK: record numbers we never sent, the largest list a record holds, the right
/// sequence numbers in a future epoch, and a body that does not parse. None acknowledges
/// the KeyUpdate: our write keys stay, the timer still resends it, nothing is sent in
/// answer (bounded work: one parse of at most a record's worth of numbers), and the
/// malformed one is counted. The real ACK then completes the update.
#[test]
fn forged_acks_change_nothing_and_suppress_no_retransmission() {
    let mut pair = live();
    let now = pair.now;
    assert!(server(&mut pair).update_keys(now, false));
    // The server's KeyUpdate is lost: only forged ACKs reach it.
    let lost = server_output(&mut pair);
    assert_eq!(lost.len(), 1, "one KeyUpdate record");
    let deadline = server(&mut pair).poll_timeout().expect("timer armed");
    let never_sent: Vec<RecordNumber> = (1_000..1_100)
        .map(|sequence| RecordNumber {
            epoch: EPOCH_APPLICATION,
            sequence,
        })
        .collect();
    // A record's plaintext holds at most 2^14 bytes: 2 of length, 16 per number.
    let huge: Vec<RecordNumber> = (0..(16_384 - 2) / 16)
        .map(|i| RecordNumber {
            epoch: EPOCH_APPLICATION,
            sequence: 1 << 40 | i,
        })
        .collect();
    // Every sequence number of the engine's reserve, in epochs that do not exist yet.
    let future: Vec<RecordNumber> = [EPOCH_APPLICATION + 1, EPOCH_APPLICATION + 7, u64::MAX]
        .into_iter()
        .flat_map(|epoch| {
            (0..ENGINE_SEQUENCE_RESERVE).map(move |sequence| RecordNumber { epoch, sequence })
        })
        .collect();
    let before = server(&mut pair).stats();
    for records in [never_sent, huge, future] {
        let d = client_record(
            &mut pair,
            InnerContentType::Ack,
            EPOCH_APPLICATION,
            &ack_body(records),
        );
        for _ in 0..100 {
            to_server(&mut pair, &d);
        }
    }
    let garbage = client_record(
        &mut pair,
        InnerContentType::Ack,
        EPOCH_APPLICATION,
        &[0xff, 0xff, 1],
    );
    to_server(&mut pair, &garbage);
    let after = server(&mut pair).stats();
    assert!(
        server_output(&mut pair).is_empty(),
        "no answer to a forged ACK"
    );
    assert!(
        updated_epochs(&events(server(&mut pair))).1.is_empty(),
        "write keys unchanged"
    );
    assert_eq!(
        after.malformed_records,
        before.malformed_records + 1,
        "the garbage ACK is counted"
    );
    assert_eq!(
        after.rejected_records,
        before.rejected_records + 3 * 99,
        "each copy after the first is a replay, counted"
    );
    let s = server(&mut pair);
    assert_eq!(
        s.poll_timeout(),
        Some(deadline),
        "retransmission still scheduled"
    );
    assert!(engine(s).core.update_pending);
    // The timer resends the KeyUpdate: nothing forged suppressed it.
    pair.now = deadline;
    server(&mut pair).handle_timeout(deadline);
    let resent = server_output(&mut pair);
    assert!(!resent.is_empty());
    for d in &resent {
        to_client(&mut pair, d);
    }
    for d in client_output(&mut pair) {
        to_server(&mut pair, &d);
    }
    let (_, write) = updated_epochs(&events(server(&mut pair)));
    assert_eq!(
        write,
        [EPOCH_APPLICATION + 1],
        "the real ACK completes the update"
    );
    assert_eq!(server(&mut pair).poll_timeout(), None);
    assert!(server(&mut pair).is_established() && !server(&mut pair).is_finished());
}

/// A KeyUpdate flood (RFC 9147 §8): the peer sends 24 KeyUpdate(update_requested)
/// messages, all sealed in epoch 3, without waiting for our ACKs. We answer with one
/// KeyUpdate of our own at a time (RFC 9147 §8: no new KeyUpdate until the last is
/// acknowledged), acknowledge only what opened, and the read epochs we keep stay capped.
/// The peer's epoch moves once: a KeyUpdate sent in epoch 3 moves it to 4, and the others
/// in epoch 3 are KeyUpdates it may not send before our ACK of the first (counted as
/// stale). (Before that check each KeyUpdate that opened moved the peer's epoch, until
/// epoch 7 shared epoch 3's two header bits and the old records no longer opened; through
/// a data plane, which opens epoch 3 until control retires it, once per message.)
#[test]
fn key_update_flood_gets_one_update_at_a_time_and_bounded_epochs() {
    let mut pair = live();
    let mut body = Vec::new();
    KeyUpdate::Requested.emit(&mut body);
    // Within half the client's engine reserve of epoch 3, which the flood's records come
    // from: past it the client's engine starts its own KeyUpdate (a message_seq this
    // harness, which sends only the flood, would leave as a gap).
    let flood = 24;
    let mut acks = 0;
    let mut key_updates = 0;
    for _ in 0..flood {
        let d = client_message(
            &mut pair,
            EPOCH_APPLICATION,
            HandshakeType::KeyUpdate,
            body.clone(),
        );
        to_server(&mut pair, &d);
        for out in server_output(&mut pair) {
            // What went out: ACKs, and KeyUpdates (handshake records); tell them apart by
            // opening them as the client.
            to_client(&mut pair, &out);
            let (read, _) = updated_epochs(&events(&mut pair.client));
            if read.is_empty() {
                acks += 1;
            } else {
                key_updates += read.len();
            }
        }
        // The client's ACKs of the server's KeyUpdate are never sent (the flood goes on).
        let _ = client_output(&mut pair);
    }
    let s = server(&mut pair);
    let read_epochs: Vec<u64> = engine(s).core.transport.read_epochs().collect();
    let (read, write) = updated_epochs(&events(s));
    assert_eq!(
        key_updates, 1,
        "one KeyUpdate of ours until it is acknowledged"
    );
    assert!(write.is_empty(), "not acknowledged: our write keys stay");
    assert!(read_epochs.len() <= 6, "read epochs held: {read_epochs:?}");
    // RFC 9147 §8: the peer's epoch moves once, to 4; the other KeyUpdates, all in epoch
    // 3, came before our ACK of the first and move nothing (counted).
    assert_eq!(read, [4], "the peer's epoch moved {} times", read.len());
    assert_eq!(s.stats().stale_key_updates, flood - 1);
    assert!(acks <= flood as usize + 1, "ACKs {acks}");
    assert!(s.is_established() && !s.is_finished());
}

/// Records of a retired epoch (RFC 9147 §8: the old keys are kept only a while after a
/// KeyUpdate) are dropped once the epoch is retired: an epoch-3 record the peer sealed
/// early, held back by an attacker and delivered after six KeyUpdates, no longer opens
/// (counted, nothing sent, no event), while the same kind of record opened before.
#[test]
fn records_for_retired_epochs_are_dropped_after_the_retirement() {
    let mut pair = live();
    let bogus = |sequence| {
        ack_body(vec![RecordNumber {
            epoch: EPOCH_APPLICATION,
            sequence,
        }])
    };
    let early = client_record(
        &mut pair,
        InnerContentType::Ack,
        EPOCH_APPLICATION,
        &bogus(900),
    );
    let held = client_record(
        &mut pair,
        InnerContentType::Ack,
        EPOCH_APPLICATION,
        &bogus(901),
    );
    let before = server(&mut pair).stats();
    to_server(&mut pair, &early);
    let opened = server(&mut pair).stats();
    assert_eq!(
        (
            opened.ignored_records,
            opened.rejected_records,
            opened.malformed_records
        ),
        (
            before.ignored_records,
            before.rejected_records,
            before.malformed_records
        ),
        "an epoch-3 record opens while epoch 3 is current"
    );
    for round in 0..6 {
        let now = pair.now;
        assert!(pair.client.update_keys(now, true), "update {round}");
        settle(&mut pair, Duration::from_secs(10));
    }
    let (read, _) = updated_epochs(&pair.server_events);
    assert_eq!(read.last(), Some(&(EPOCH_APPLICATION + 6)));
    pair.server_events.clear();
    let s = server(&mut pair);
    let epochs: Vec<u64> = engine(s).core.transport.read_epochs().collect();
    assert!(
        !epochs.contains(&EPOCH_APPLICATION),
        "epoch 3 retired: {epochs:?}"
    );
    let before = s.stats();
    to_server(&mut pair, &held);
    let after = server(&mut pair).stats();
    assert_eq!(
        after.ignored_records + after.rejected_records,
        before.ignored_records + before.rejected_records + 1,
        "the retired epoch's record is dropped and counted"
    );
    assert!(server_output(&mut pair).is_empty());
    assert!(events(server(&mut pair)).is_empty());
    // The session goes on in the new epochs.
    let now = pair.now;
    assert!(pair.client.update_keys(now, false));
    settle(&mut pair, Duration::from_secs(10));
    let (read, _) = updated_epochs(&pair.server_events);
    assert_eq!(read, [EPOCH_APPLICATION + 7]);
}

/// A spoofed HelloRetryRequest on a live DTLS 1.3 session does nothing (TESTING.md "State
/// machine": spoofed epoch-0 messages on a live session): the server's real HRR replayed
/// after completion, and one with another message_seq, change no state, produce no
/// output and no event, and the session keeps working (a KeyUpdate completes).
#[test]
fn a_spoofed_hello_retry_request_on_a_live_session_does_nothing() {
    use std::cell::RefCell;
    use std::rc::Rc;
    let mut client = client13();
    client.tls13_groups = vec![NamedGroup::X25519];
    // The cookie exchange: the acceptor's stateless HelloRetryRequest comes first.
    let mut pair = Pair::with_acceptor(client, server13(), None, crate::AcceptorConfig::default());
    let hrr: Rc<RefCell<Option<Vec<u8>>>> = Rc::default();
    let seen = Rc::clone(&hrr);
    pair.filter = Box::new(move |from_client, d| {
        if !from_client && seen.borrow().is_none() {
            *seen.borrow_mut() = Some(d.clone());
        }
        true
    });
    settle(&mut pair, Duration::from_secs(10));
    assert!(pair.client.is_established() && server(&mut pair).is_established());
    let hrr = hrr.borrow().clone().expect("a HelloRetryRequest");
    // Epoch-0 handshake record holding a ServerHello (the HRR form).
    assert_eq!(
        (hrr[0], hrr[3], hrr[4], hrr[13]),
        (22, 0, 0, HandshakeType::ServerHello.to_u8())
    );
    let mut renumbered = hrr.clone();
    renumbered[17..19].copy_from_slice(&[0, 5]);
    pair.client_events.clear();
    let state = pair.client.state_name();
    let stats = pair.client.stats();
    for d in [&hrr, &renumbered, &hrr] {
        to_client(&mut pair, d);
    }
    assert!(
        client_output(&mut pair).is_empty(),
        "nothing sent in answer"
    );
    assert!(events(&mut pair.client).is_empty(), "no event");
    assert_eq!(pair.client.state_name(), state);
    assert!(pair.client.is_established() && !pair.client.is_finished());
    assert_eq!(pair.client.stats().datagrams_sent, stats.datagrams_sent);
    let now = pair.now;
    assert!(pair.client.update_keys(now, true));
    settle(&mut pair, Duration::from_secs(10));
    let (read, write) = updated_epochs(&pair.client_events);
    assert_eq!(
        (read, write),
        (vec![EPOCH_APPLICATION + 1], vec![EPOCH_APPLICATION + 1])
    );
}

/// A RequestConnectionId flood (RFC 9147 §9): the peer asks for 255 CIDs twenty times
/// over without waiting for our NewConnectionId answers. We issue at most 8 CIDs over the
/// whole session (the engine's cap), hold at most 1 + 8 of our own, and stay up.
#[test]
fn request_connection_id_flood_gets_at_most_8_connection_ids() {
    use dtls_proto::tls13::RequestConnectionId;
    let mut client = client13();
    client.tls13_groups = vec![NamedGroup::X25519];
    client.connection_id = crate::ConnectionIds::On { len: 4 };
    let mut s = server13();
    s.connection_id = crate::ConnectionIds::On { len: 8 };
    let mut pair = pair(client, s);
    settle(&mut pair, Duration::from_secs(10));
    assert!(server(&mut pair).is_established());
    assert_eq!(super::cids::MAX_ISSUED_CIDS, 8);
    let mut body = Vec::new();
    RequestConnectionId { num_cids: 255 }.emit(&mut body);
    // (Twenty: within the client engine's reserve of epoch-3 sequence numbers, which its
    // ACKs share; in memory no data plane renews it.)
    for _ in 0..20 {
        let d = client_message(
            &mut pair,
            EPOCH_APPLICATION,
            HandshakeType::RequestConnectionId,
            body.clone(),
        );
        to_server(&mut pair, &d);
        // Our answers reach the client, whose ACKs go back: the server is free to answer
        // every request it is allowed to.
        pair.exchange();
    }
    settle(&mut pair, Duration::from_secs(30));
    let issued: usize = pair
        .server_events
        .iter()
        .filter_map(|e| match e {
            Event::ConnectionIds(u) => Some(u.issued.len()),
            _ => None,
        })
        .sum();
    assert_eq!(issued, 8, "at most 8 CIDs issued over the session");
    let s = server(&mut pair);
    assert_eq!(
        engine(s).core.cids.as_ref().expect("cids").local.len(),
        1 + 8
    );
    assert!(s.is_established() && !s.is_finished());
}
