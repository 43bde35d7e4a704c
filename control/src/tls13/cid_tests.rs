//! DTLS 1.3 connection IDs (RFC 9147 §9) between our client and server, in memory: CIDs
//! both ways, a zero-length CID on one side, either side off, the CID in every protected
//! record, NewConnectionId in answer to RequestConnectionId (within its cap), a
//! cid_immediate switch, and the messages refused without CIDs.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use dataplane::record::v13::{MixedKind, MixedRecords};
use dtls_proto::HandshakeType;
use dtls_proto::tls13::{ConnectionIdUsage, NewConnectionId, RequestConnectionId};

use super::cids::MAX_ISSUED_CIDS;
use super::tests::{client13, keys, pair, server13, settle};
use super::{EPOCH_APPLICATION, Engine13};
use crate::pair_tests::Pair;
use crate::version::Inner;
use crate::{CidUpdate, Connection, ConnectionIds, Event, HandshakeError, SessionKeys};

fn cids(len: Option<u8>) -> ConnectionIds {
    len.map_or(ConnectionIds::Off, |len| ConnectionIds::On { len })
}

/// Datagrams seen on the wire: (from the client, bytes).
type Seen = Rc<RefCell<Vec<(bool, Vec<u8>)>>>;

/// A settled DTLS 1.3 handshake with the given CID lengths (`None`: off), every datagram
/// recorded.
fn handshake(client: Option<u8>, server: Option<u8>) -> (Pair, Seen, SessionKeys, SessionKeys) {
    let mut c = client13();
    c.connection_id = cids(client);
    let mut s = server13();
    s.connection_id = cids(server);
    let mut pair = pair(c, s);
    let seen: Seen = Rc::default();
    let log = Rc::clone(&seen);
    pair.filter = Box::new(move |from_client, d| {
        log.borrow_mut().push((from_client, d.clone()));
        true
    });
    settle(&mut pair, Duration::from_secs(10));
    let (ck, sk) = keys(&mut pair);
    (pair, seen, *ck, *sk)
}

fn engine(c: &mut Connection) -> &mut Engine13 {
    match &mut c.inner {
        Inner::V13(e) => e,
        Inner::V12(_) => panic!("a DTLS 1.2 connection"),
    }
}

fn server(pair: &mut Pair) -> &mut Engine13 {
    engine(pair.server.as_mut().expect("server"))
}

/// The CID (`None`: no C bit) of every protected record in `datagrams` sent by the client
/// (`from_client`) or the server, read with the receiver's CID length.
fn record_cids(seen: &Seen, from_client: bool, cid_len: usize) -> Vec<Option<Vec<u8>>> {
    let mut out = Vec::new();
    for (client, d) in seen.borrow().iter() {
        if *client != from_client {
            continue;
        }
        for record in MixedRecords::new(d, cid_len) {
            if let MixedKind::Ciphertext(header) = record.kind {
                out.push(header.cid(record.bytes).map(<[u8]>::to_vec));
            }
        }
    }
    out
}

fn cid_updates(events: &mut Vec<Event>) -> Vec<CidUpdate> {
    let mut out = Vec::new();
    events.retain(|e| match e {
        Event::ConnectionIds(u) => {
            out.push((**u).clone());
            false
        }
        _ => true,
    });
    out
}

#[test]
fn cids_both_ways_are_in_every_protected_record_from_the_handshake_epoch_on() {
    let (mut pair, seen, ck, sk) = handshake(Some(4), Some(8));
    let client_cid = ck.local_cid.clone().expect("negotiated");
    let server_cid = sk.local_cid.clone().expect("negotiated");
    assert_eq!((client_cid.len(), server_cid.len()), (4, 8));
    assert_eq!(ck.peer_cid.as_deref(), Some(&server_cid[..]));
    assert_eq!(sk.peer_cid.as_deref(), Some(&client_cid[..]));
    // The client's records carry the server's CID, the server's the client's: epoch 2
    // (the server's flight, the client's Finished) and the ACKs of epoch 3.
    let from_client = record_cids(&seen, true, 8);
    let from_server = record_cids(&seen, false, 4);
    assert!(!from_client.is_empty() && !from_server.is_empty());
    assert!(from_client.iter().all(|c| c.as_ref() == Some(&server_cid)));
    assert!(from_server.iter().all(|c| c.as_ref() == Some(&client_cid)));
    assert_eq!(
        pair.client.connection_ids13(),
        Some((&[client_cid][..], &server_cid[..]))
    );
    assert!(pair.client.is_established());
    assert!(server(&mut pair).core.is_established());
}

#[test]
fn a_zero_length_cid_means_records_to_that_side_carry_none() {
    let (_, seen, ck, sk) = handshake(Some(0), Some(8));
    assert_eq!(ck.local_cid.as_deref(), Some(&[][..]));
    assert_eq!(sk.peer_cid.as_deref(), Some(&[][..]));
    let server_cid = sk.local_cid.expect("negotiated");
    assert_eq!(server_cid.len(), 8);
    assert!(
        record_cids(&seen, true, 8)
            .iter()
            .all(|c| c.as_ref() == Some(&server_cid))
    );
    let from_server = record_cids(&seen, false, 0);
    assert!(!from_server.is_empty() && from_server.iter().all(Option::is_none));
}

#[test]
fn without_the_servers_consent_there_are_no_cids() {
    for (client, server) in [(Some(8), None), (None, Some(8))] {
        let (pair, seen, ck, sk) = handshake(client, server);
        assert_eq!((ck.local_cid, ck.peer_cid), (None, None));
        assert_eq!((sk.local_cid, sk.peer_cid), (None, None));
        assert!(record_cids(&seen, true, 0).iter().all(Option::is_none));
        assert_eq!(pair.client.connection_ids13(), None);
    }
}

#[test]
fn a_client_offering_both_versions_gets_dtls12_cids_from_a_dtls12_server() {
    let mut c = client13();
    c.versions = vec![
        dtls_proto::ProtocolVersion::Dtls1_3,
        dtls_proto::ProtocolVersion::Dtls1_2,
    ];
    c.connection_id = cids(Some(6));
    let mut s = server13();
    s.versions = vec![dtls_proto::ProtocolVersion::Dtls1_2];
    s.connection_id = cids(Some(8));
    let mut pair = pair(c, s);
    settle(&mut pair, Duration::from_secs(10));
    let (ck, sk) = keys(&mut pair);
    assert_eq!(ck.version, dtls_proto::ProtocolVersion::Dtls1_2);
    assert_eq!(ck.local_cid.as_ref().map(Vec::len), Some(6));
    assert_eq!(ck.peer_cid, sk.local_cid);
}

#[test]
fn request_connection_id_is_answered_with_spare_cids_from_the_issuer() {
    let (mut pair, _, _, sk) = handshake(Some(4), Some(8));
    assert!(pair.client.request_connection_ids(pair.now, 3));
    assert!(
        !pair.client.request_connection_ids(pair.now, 3),
        "one request at a time"
    );
    settle(&mut pair, Duration::from_secs(10));
    let issued = cid_updates(&mut pair.server_events);
    assert_eq!(issued.len(), 1, "{issued:?}");
    assert_eq!(issued[0].issued.len(), 3);
    assert!(issued[0].issued.iter().all(|c| c.len() == 8));
    assert_eq!(issued[0].peer, None);
    let cids = engine(&mut pair.client).core.cids.clone().expect("cids");
    assert_eq!(
        cids.spare.iter().cloned().collect::<Vec<_>>(),
        issued[0].issued
    );
    assert_eq!(
        cids.peer,
        sk.local_cid.expect("server CID"),
        "spare CIDs wait"
    );
    let server_local = server(&mut pair).core.cids.clone().expect("cids").local;
    assert_eq!(server_local.len(), 4, "the handshake's CID and three more");
    // Answered: the next request may go.
    assert!(pair.client.request_connection_ids(pair.now, 1));
    assert!(pair.client.is_established() && !pair.client.is_finished());
}

/// A request that reaches the server while another flight of its own is unacknowledged (a
/// KeyUpdate here; after a handshake, its NewSessionTicket) is answered once that flight is
/// acknowledged, not dropped (RFC 9147 §9: "as soon as possible").
#[test]
fn request_connection_id_during_another_flight_is_answered_after_it() {
    let (mut pair, _, _, _) = handshake(Some(4), Some(8));
    let now = pair.now;
    assert!(
        pair.server
            .as_mut()
            .expect("server")
            .update_keys(now, false)
    );
    assert!(pair.client.request_connection_ids(now, 2));
    // The server reads the request before the client's ACK of its KeyUpdate: it holds
    // it (it used to drop it, having acknowledged it) and answers after that ACK.
    settle(&mut pair, Duration::from_secs(10));
    let issued: usize = cid_updates(&mut pair.server_events)
        .iter()
        .map(|u| u.issued.len())
        .sum();
    assert_eq!(issued, 2);
    let spare = engine(&mut pair.client)
        .core
        .cids
        .clone()
        .expect("cids")
        .spare;
    assert_eq!(spare.len(), 2);
    assert!(pair.client.request_connection_ids(pair.now, 1), "answered");
}

/// Sends a RequestConnectionId from the client whatever the engine's own rules say.
fn force_request(pair: &mut Pair, num_cids: u8) {
    let now = pair.now;
    let core = &mut engine(&mut pair.client).core;
    let mut body = Vec::new();
    RequestConnectionId { num_cids }.emit(&mut body);
    let epoch = core.transport.write_epoch();
    let message = core.out_message(epoch, HandshakeType::RequestConnectionId, body);
    core.send_flight(now, vec![message]).expect("flight");
}

#[test]
fn a_request_connection_id_flood_gets_a_bounded_number_of_cids() {
    let (mut pair, _, _, _) = handshake(Some(4), Some(8));
    // (Within the engine's reserve of epoch-3 sequence numbers: in memory no data plane
    // hands post-handshake records over, so no KeyUpdate renews it.)
    for _ in 0..12 {
        force_request(&mut pair, 3);
        pair.exchange();
        settle(&mut pair, Duration::from_secs(5));
    }
    let issued: usize = cid_updates(&mut pair.server_events)
        .iter()
        .map(|u| u.issued.len())
        .sum();
    assert_eq!(issued, MAX_ISSUED_CIDS);
    let core = &server(&mut pair).core;
    assert_eq!(
        core.cids.as_ref().expect("cids").local.len(),
        1 + MAX_ISSUED_CIDS
    );
    assert!(core.is_established() && !core.is_finished());
    let spare = engine(&mut pair.client)
        .core
        .cids
        .clone()
        .expect("cids")
        .spare;
    assert_eq!(spare.len(), super::cids::MAX_SPARE_CIDS);
}

#[test]
fn cid_immediate_switches_the_cid_of_our_records() {
    let (mut pair, seen, _, _) = handshake(Some(4), Some(8));
    let fresh = vec![0xab; 8];
    let now = pair.now;
    {
        let core = &mut server(&mut pair).core;
        let mut body = Vec::new();
        NewConnectionId {
            cids: vec![fresh.clone(), vec![0xcd; 8]],
            usage: ConnectionIdUsage::Immediate,
        }
        .emit(&mut body)
        .expect("emit");
        let epoch = core.transport.write_epoch();
        assert_eq!(epoch, EPOCH_APPLICATION);
        let message = core.out_message(epoch, HandshakeType::NewConnectionId, body);
        core.send_flight(now, vec![message]).expect("flight");
    }
    seen.borrow_mut().clear();
    settle(&mut pair, Duration::from_secs(10));
    let updates = cid_updates(&mut pair.client_events);
    assert_eq!(
        updates,
        vec![CidUpdate {
            issued: Vec::new(),
            peer: Some(fresh.clone()),
            spare: vec![vec![0xcd; 8]],
        }]
    );
    // The client's ACK of the NewConnectionId already carries the new CID.
    let from_client = record_cids(&seen, true, 8);
    assert!(!from_client.is_empty());
    assert!(from_client.iter().all(|c| c.as_ref() == Some(&fresh)));
    let cids = engine(&mut pair.client).core.cids.clone().expect("cids");
    assert_eq!(cids.peer, fresh);
    assert_eq!(cids.spare.len(), 1);
}

#[test]
fn cid_messages_without_negotiated_cids_are_unexpected() {
    let (mut pair, _, _, _) = handshake(None, Some(8));
    assert!(!pair.client.request_connection_ids(pair.now, 1));
    force_request(&mut pair, 1);
    settle(&mut pair, Duration::from_secs(5));
    let failed = pair.server_events.iter().any(|e| {
        matches!(
            e,
            Event::HandshakeFailed(HandshakeError::UnexpectedMessage { .. })
        )
    });
    assert!(failed, "{:?}", pair.server_events);
}

#[test]
fn a_request_from_a_peer_sending_an_empty_cid_is_unexpected() {
    // The server asked for a zero-length CID: the client sends none and may not ask for
    // more (RFC 9147 §9).
    let (mut pair, _, _, _) = handshake(Some(4), Some(0));
    assert!(!pair.client.request_connection_ids(pair.now, 1));
    force_request(&mut pair, 1);
    settle(&mut pair, Duration::from_secs(5));
    assert!(server(&mut pair).core.is_finished());
}

/// A settled DTLS 1.3 handshake with the given CID lengths and `rrc` settings; returns
/// whether (client, server) negotiated the return-routability check.
fn rrc_handshake(client: (Option<u8>, bool), server: (Option<u8>, bool)) -> (bool, bool) {
    let mut c = client13();
    (c.connection_id, c.rrc) = (cids(client.0), client.1);
    let mut s = server13();
    (s.connection_id, s.rrc) = (cids(server.0), server.1);
    let mut pair = pair(c, s);
    settle(&mut pair, Duration::from_secs(10));
    let (ck, sk) = keys(&mut pair);
    (ck.rrc, sk.rrc)
}

#[test]
fn rrc_is_negotiated_in_13_with_cids_when_both_sides_offer_it() {
    // RFC 9853 §3: the `rrc` extension in ClientHello and ServerHello, with connection_id.
    assert_eq!(
        rrc_handshake((Some(0), true), (Some(8), true)),
        (true, true)
    );
    // "The client and server MUST NOT use RRC unless both sides have successfully
    // exchanged `rrc` extensions."
    assert_eq!(
        rrc_handshake((Some(0), false), (Some(8), true)),
        (false, false)
    );
    assert_eq!(
        rrc_handshake((Some(0), true), (Some(8), false)),
        (false, false)
    );
    // Without CIDs no side offers or answers it.
    assert_eq!(rrc_handshake((None, true), (Some(8), true)), (false, false));
    assert_eq!(rrc_handshake((Some(0), true), (None, true)), (false, false));
}

/// The client's spare CIDs of the server, oldest first.
fn client_spares(pair: &mut Pair) -> Vec<Vec<u8>> {
    let cids = engine(&mut pair.client).core.cids.clone().expect("cids");
    cids.spare.into_iter().collect()
}

/// CIDs the server issued in NewConnectionId since the last call.
fn newly_issued(pair: &mut Pair) -> Vec<Vec<u8>> {
    cid_updates(&mut pair.server_events)
        .into_iter()
        .flat_map(|u| u.issued)
        .collect()
}

/// The client moves to its oldest spare CID of the server, as its data plane does on a new
/// path (`peer_cid_rotated`), and the server's data plane then retires every CID before
/// it (`retire_connection_ids`). Returns the CID the client uses now.
fn move_on(pair: &mut Pair) -> Vec<u8> {
    let now = pair.now;
    let next = client_spares(pair).first().cloned().expect("a spare CID");
    pair.client.peer_cid_rotated(now, &next);
    let server = pair.server.as_mut().expect("server");
    let local = server.connection_ids13().expect("cids").0.to_vec();
    let at = local
        .iter()
        .position(|c| *c == next)
        .expect("one of the server's");
    assert_eq!(server.retire_connection_ids(now, &local[..at]), at);
    settle(pair, Duration::from_secs(10));
    next
}

/// RFC 9147 §9 and RFC 9853 §9: the CIDs a peer moved past are replaced unasked (one for
/// one, so it always has a fresh one for its next path), while at most
/// `MAX_ISSUED_CIDS` are unused at the peer and `MAX_CIDS_PER_SESSION` were issued over
/// the session; the mover's own records (its ACKs) carry its new CID at once.
#[test]
fn retired_cids_are_replaced_unasked_within_the_bounds() {
    use super::cids::MAX_CIDS_PER_SESSION;
    let (mut pair, seen, _, _) = handshake(Some(4), Some(8));
    assert!(pair.client.request_connection_ids(pair.now, 8));
    settle(&mut pair, Duration::from_secs(10));
    assert_eq!(newly_issued(&mut pair).len(), MAX_ISSUED_CIDS);
    assert_eq!(client_spares(&mut pair).len(), MAX_ISSUED_CIDS);
    // Moves past the last of the first spares: each is replaced, unasked, at once.
    for n in 0..MAX_ISSUED_CIDS + 3 {
        seen.borrow_mut().clear();
        let now_used = move_on(&mut pair);
        let fresh = newly_issued(&mut pair);
        assert_eq!(fresh.len(), 1, "move {n}: one retired, one replaced");
        assert!(fresh.iter().all(|c| c.len() == 8 && *c != now_used));
        // The client's ACK of the replacement went under its new CID (the server's
        // engine, which retired the old one, took it: nothing is left to resend).
        let from_client = record_cids(&seen, true, 8);
        assert!(!from_client.is_empty(), "move {n}: the client acknowledged");
        assert!(
            from_client.iter().all(|c| c.as_ref() == Some(&now_used)),
            "move {n}: {from_client:02x?}"
        );
        assert!(server(&mut pair).core.flight.is_empty(), "move {n}");
        let spares = client_spares(&mut pair);
        assert_eq!(spares.len(), MAX_ISSUED_CIDS, "move {n}");
        assert_eq!(spares.last(), fresh.last());
        let core = &server(&mut pair).core;
        let cids = core.cids.as_ref().expect("cids");
        assert_eq!(
            cids.local.first(),
            Some(&now_used),
            "the retired ones are gone"
        );
        assert_eq!(cids.issued_live(), MAX_ISSUED_CIDS);
    }
    // No more than `MAX_ISSUED_CIDS` unused at the peer: a request on top gets none.
    force_request(&mut pair, 4);
    settle(&mut pair, Duration::from_secs(5));
    assert!(newly_issued(&mut pair).is_empty());
    // Near the end of the session's share, fewer than were retired, then none.
    server(&mut pair)
        .core
        .cids
        .as_mut()
        .expect("cids")
        .issued_total = MAX_CIDS_PER_SESSION - 1;
    move_on(&mut pair);
    assert_eq!(newly_issued(&mut pair).len(), 1);
    seen.borrow_mut().clear();
    move_on(&mut pair);
    assert!(
        newly_issued(&mut pair).is_empty(),
        "the session's share is spent"
    );
    let from_server = record_cids(&seen, false, 4);
    assert!(
        from_server.is_empty(),
        "no empty NewConnectionId goes out unasked"
    );
    let core = &server(&mut pair).core;
    assert_eq!(
        core.cids.as_ref().expect("cids").issued_total,
        MAX_CIDS_PER_SESSION
    );
    assert!(core.is_established() && !core.is_finished());
    assert!(pair.client.is_established() && !pair.client.is_finished());
}

/// RFC 9853 §9: "an endpoint should proactively send a RequestConnectionId message to ask
/// for new CIDs as soon as the pool of spare CIDs is depleted (or goes below a
/// threshold)": a rotation that leaves fewer than `SPARE_CIDS_LOW` asks for what is
/// missing to the level first asked for.
#[test]
fn a_rotation_that_leaves_few_spares_asks_for_more() {
    use super::cids::SPARE_CIDS_LOW;
    let (mut pair, _, _, _) = handshake(Some(4), Some(8));
    assert!(pair.client.request_connection_ids(pair.now, 3));
    settle(&mut pair, Duration::from_secs(10));
    assert_eq!(newly_issued(&mut pair).len(), 3);
    let now = pair.now;
    // Rotations without retirements (the server's data plane never saw the new CIDs):
    // the first leaves enough spares, the second does not.
    let spares = client_spares(&mut pair);
    assert!(!pair.client.peer_cid_rotated(now, &spares[0]));
    assert!(pair.client.peer_cid_rotated(now, &spares[1]));
    assert!(client_spares(&mut pair).len() < SPARE_CIDS_LOW);
    assert!(
        !pair.client.request_connection_ids(now, 1),
        "the top-up request is under way"
    );
    settle(&mut pair, Duration::from_secs(10));
    // The client asked for the 2 missing to the 3 it first wanted; the server (3 unused
    // at the client, none retired) is within its bound and gives them.
    let fresh = newly_issued(&mut pair);
    assert_eq!(fresh.len(), 2);
    let spares = client_spares(&mut pair);
    assert_eq!(spares.len(), 1 + fresh.len());
    assert_eq!(&spares[1..], &fresh[..]);
    // Rotating to a CID the engine uses already, or without CIDs: nothing.
    let current = engine(&mut pair.client)
        .core
        .cids
        .clone()
        .expect("cids")
        .peer;
    assert!(!pair.client.peer_cid_rotated(pair.now, &current));
    assert!(pair.client.is_established() && !pair.client.is_finished());
}
