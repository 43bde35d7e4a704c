//! RFC 9146 connection IDs between our client and server, in memory: the extension in both
//! hellos, zero-length CIDs, either side off, an injected issuer, the tls12_cid format of
//! the epoch-1 handshake records (and their retransmissions), resumption, and the keys and
//! CIDs handed to the data plane.

use std::time::Duration;

use dataplane::record::v13::{MixedKind, MixedRecords};
use dataplane::record::{
    CidOpener, CidSealer, ContentType, DTLS_1_2, Opener, ReplayWindow, Sealer, TLS12_CID,
};

use crate::feature_tests::ticket_server;
use crate::pair_tests::{Pair, client_config, server_config};
use crate::{CidIssuer, CipherSuite, ConnectionIds, Rng, SessionKeys};

const SUITES: [CipherSuite; 1] = [CipherSuite::EcdheEcdsaAes128GcmSha256];

fn cids(len: Option<u8>) -> ConnectionIds {
    len.map_or(ConnectionIds::Off, |len| ConnectionIds::On { len })
}

/// A handshake with the given CID lengths (`None`: off); returns both sides' keys and the
/// pair, whose `filter` recorded nothing.
fn handshake(client: Option<u8>, server: Option<u8>) -> (Box<SessionKeys>, Box<SessionKeys>, Pair) {
    let mut c = client_config(&SUITES);
    c.connection_id = cids(client);
    let mut s = server_config(&SUITES, false);
    s.connection_id = cids(server);
    let mut pair = Pair::new(c, s);
    pair.run(Duration::from_secs(10));
    let ck = Pair::keys(&mut pair.client_events)
        .unwrap_or_else(|| panic!("client keys: {:?}", pair.client_events));
    let sk = Pair::keys(&mut pair.server_events)
        .unwrap_or_else(|| panic!("server keys: {:?}", pair.server_events));
    (ck, sk, pair)
}

/// Moves one application record from `from` to `to` in the format their CIDs call for:
/// tls12_cid with `to`'s CID when it is non-empty, the plain format otherwise.
fn check_app_data(from: SessionKeys, to: SessionKeys) {
    assert_eq!(from.peer_cid, to.local_cid, "both sides agree on the CID");
    let msg = b"hello under a connection ID";
    let cid = to.local_cid.clone().unwrap_or_default();
    let window = ReplayWindow::new(to.replay_window);
    let (_, w) = from.records.into_dtls12().expect("DTLS 1.2 keys");
    let (r, _) = to.records.into_dtls12().expect("DTLS 1.2 keys");
    if cid.is_empty() {
        let mut sealer = Sealer::new(w.epoch, w.key, w.next_sequence).expect("sealer");
        let mut opener = Opener::new(r.epoch, r.key, window);
        let mut rec = vec![0u8; sealer.record_len(msg.len())];
        let at = sealer.plaintext_offset();
        rec[at..at + msg.len()].copy_from_slice(msg);
        let len = sealer
            .seal(ContentType::ApplicationData, DTLS_1_2, &mut rec, msg.len())
            .expect("seal");
        assert_ne!(rec[0], TLS12_CID);
        assert_eq!(opener.open(&mut rec[..len]).expect("open").plaintext, msg);
    } else {
        let mut sealer = CidSealer::new(w.epoch, w.key, w.next_sequence, &cid).expect("sealer");
        let mut opener = CidOpener::new(r.epoch, r.key, window, &cid).expect("opener");
        let mut rec = vec![0u8; sealer.record_len(msg.len(), 0)];
        let at = sealer.plaintext_offset();
        rec[at..at + msg.len()].copy_from_slice(msg);
        let len = sealer
            .seal(ContentType::ApplicationData, &mut rec, msg.len(), 0)
            .expect("seal");
        assert_eq!(rec[0], TLS12_CID);
        assert_eq!(&rec[11..11 + cid.len()], &cid[..]);
        assert_eq!(opener.open(&mut rec[..len]).expect("open").plaintext, msg);
    }
}

/// The epoch-1 records of `datagram`: (tls12_cid format, CID bytes when so), read with the
/// receiver's CID length.
fn epoch1_records(datagram: &[u8], cid_len: usize) -> Vec<(bool, Vec<u8>)> {
    MixedRecords::new(datagram, cid_len)
        .filter(|r| u16::from_be_bytes([r.bytes[3], r.bytes[4]]) == 1)
        .map(|r| match r.kind {
            MixedKind::Dtls12Cid => (true, r.bytes[11..11 + cid_len].to_vec()),
            _ => (false, Vec::new()),
        })
        .collect()
}

#[test]
fn both_sides_with_cids_use_tls12_cid_records_both_ways() {
    let (ck, sk, _) = handshake(Some(4), Some(8));
    let (client_cid, server_cid) = (
        ck.local_cid.clone().expect("negotiated"),
        sk.local_cid.clone().expect("negotiated"),
    );
    assert_eq!((client_cid.len(), server_cid.len()), (4, 8));
    assert_eq!(ck.peer_cid.as_ref(), Some(&server_cid));
    assert_eq!(sk.peer_cid.as_ref(), Some(&client_cid));
    check_app_data(*ck, *sk);

    let (ck, sk, _) = handshake(Some(4), Some(8));
    check_app_data(*sk, *ck);
}

#[test]
fn finished_records_carry_the_receivers_cid() {
    let mut c = client_config(&SUITES);
    c.connection_id = ConnectionIds::On { len: 3 };
    let mut s = server_config(&SUITES, false);
    s.connection_id = ConnectionIds::On { len: 6 };
    let mut pair = Pair::new(c, s);
    let seen = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
    let log = seen.clone();
    pair.filter = Box::new(move |from_client, d| {
        // The receiver's CID length: the server's is 6, the client's 3.
        let len = if from_client { 6 } else { 3 };
        for r in epoch1_records(d, len) {
            log.borrow_mut().push((from_client, r));
        }
        true
    });
    pair.run(Duration::from_secs(10));
    let ck = Pair::keys(&mut pair.client_events).expect("client keys");
    let sk = Pair::keys(&mut pair.server_events).expect("server keys");
    let seen = seen.borrow();
    // RFC 9146 §3: once encryption is on, records go out as tls12_cid with the peer's CID:
    // the client's Finished with the server's CID, the server's with the client's.
    assert!(seen.contains(&(true, (true, sk.local_cid.clone().expect("server CID")))));
    assert!(seen.contains(&(false, (true, ck.local_cid.clone().expect("client CID")))));
    assert!(
        seen.iter().all(|(_, (cid_format, _))| *cid_format),
        "{seen:?}"
    );
}

#[test]
fn zero_length_cid_means_plain_records_towards_that_side() {
    // RFC 9146 §3: the client sends the server's CID but asks to receive none.
    let (ck, sk, _) = handshake(Some(0), Some(8));
    assert_eq!(ck.local_cid.as_deref(), Some(&[][..]));
    assert_eq!(sk.peer_cid.as_deref(), Some(&[][..]));
    assert_eq!(ck.peer_cid.as_ref().map(Vec::len), Some(8));
    check_app_data(*ck, *sk);
    let (ck, sk, _) = handshake(Some(0), Some(8));
    check_app_data(*sk, *ck);

    // The server asks for none: the client's records are plain, the server's carry the
    // client's CID.
    let (ck, sk, _) = handshake(Some(5), Some(0));
    assert_eq!(sk.local_cid.as_deref(), Some(&[][..]));
    assert_eq!(ck.peer_cid.as_deref(), Some(&[][..]));
    check_app_data(*sk, *ck);
    let (ck, sk, _) = handshake(Some(5), Some(0));
    check_app_data(*ck, *sk);

    // Both zero-length: negotiated, plain records both ways.
    let (ck, sk, _) = handshake(Some(0), Some(0));
    assert_eq!(ck.local_cid.as_deref(), Some(&[][..]));
    assert_eq!(sk.local_cid.as_deref(), Some(&[][..]));
    check_app_data(*ck, *sk);
}

#[test]
fn either_side_off_means_no_cids() {
    for (client, server) in [(None, Some(8)), (Some(8), None), (None, None)] {
        let (ck, sk, _) = handshake(client, server);
        for k in [&ck, &sk] {
            assert_eq!((k.local_cid.as_ref(), k.peer_cid.as_ref()), (None, None));
        }
        check_app_data(*ck, *sk);
    }
}

/// Issues a counter-derived CID, as a router-aware driver would.
struct Counter(u8);

impl CidIssuer for Counter {
    fn issue(&mut self, len: usize, _rng: &mut dyn Rng) -> Vec<u8> {
        self.0 += 1;
        vec![self.0; len]
    }
}

#[test]
fn the_servers_cid_comes_from_the_injected_issuer() {
    let mut c = client_config(&SUITES);
    c.connection_id = ConnectionIds::On { len: 0 };
    let mut s = server_config(&SUITES, false);
    s.connection_id = ConnectionIds::On { len: 7 };
    let mut pair = Pair::new(c, s);
    pair.issuer = Box::new(Counter(0x40));
    pair.run(Duration::from_secs(10));
    let ck = Pair::keys(&mut pair.client_events).expect("client keys");
    let sk = Pair::keys(&mut pair.server_events).expect("server keys");
    assert_eq!(sk.local_cid, Some(vec![0x41; 7]));
    assert_eq!(ck.peer_cid, Some(vec![0x41; 7]));
    check_app_data(*ck, *sk);
}

#[test]
fn a_lost_final_flight_is_resent_under_the_clients_cid() {
    // The server's CCS + Finished is lost once: the client retransmits its flight, and the
    // server's resent Finished is again a tls12_cid record the client opens.
    let mut c = client_config(&SUITES);
    c.connection_id = ConnectionIds::On { len: 5 };
    let mut s = server_config(&SUITES, false);
    s.connection_id = ConnectionIds::On { len: 8 };
    let mut pair = Pair::new(c, s);
    let mut dropped = false;
    let finished = std::rc::Rc::new(std::cell::Cell::new(0));
    let count = finished.clone();
    pair.filter = Box::new(move |from_client, d| {
        if from_client {
            return true;
        }
        let cid_records = epoch1_records(d, 5).iter().filter(|(c, _)| *c).count();
        if cid_records == 0 {
            return true;
        }
        count.set(count.get() + 1);
        if !dropped {
            dropped = true;
            return false;
        }
        true
    });
    pair.run(Duration::from_secs(30));
    let ck = Pair::keys(&mut pair.client_events).expect("client completes");
    let server = pair.server.as_ref().expect("server");
    assert!(server.is_established());
    assert_eq!(server.stats().peer_triggered_retransmits, 1);
    assert!(finished.get() >= 2, "the Finished went out twice");
    let sk = Pair::keys(&mut pair.server_events).expect("server keys");
    check_app_data(*sk, *ck);
}

#[test]
fn resumption_negotiates_cids_again() {
    let mut server = ticket_server(&SUITES);
    server.connection_id = ConnectionIds::On { len: 6 };
    let mut client = client_config(&SUITES);
    client.connection_id = ConnectionIds::On { len: 2 };
    let mut pair = Pair::new(client.clone(), server.clone());
    pair.run(Duration::from_secs(10));
    let ck = Pair::keys(&mut pair.client_events).expect("client keys");
    let ticket = ck.ticket.expect("ticket");

    let mut again = Pair::resuming(client, server, Some(ticket));
    again.run(Duration::from_secs(10));
    let ck2 = Pair::keys(&mut again.client_events).expect("resumed client keys");
    let sk2 = Pair::keys(&mut again.server_events).expect("resumed server keys");
    assert!(ck2.resumed && sk2.resumed);
    assert_eq!(sk2.local_cid.as_ref().map(Vec::len), Some(6));
    assert_eq!(ck2.local_cid.as_ref().map(Vec::len), Some(2));
    check_app_data(*ck2, *sk2);
}

#[test]
fn cid_length_is_validated() {
    let mut c = client_config(&SUITES);
    c.connection_id = ConnectionIds::On { len: 21 };
    assert_eq!(
        c.validate(),
        Err(crate::ConfigError::CidTooLong { len: 21 })
    );
    c.connection_id = ConnectionIds::On { len: 20 };
    assert_eq!(c.validate(), Ok(()));
}

/// A handshake with the given CID lengths and `rrc` settings; returns (client, server)
/// negotiated `rrc`.
fn rrc_handshake(client: (Option<u8>, bool), server: (Option<u8>, bool)) -> (bool, bool) {
    let mut c = client_config(&SUITES);
    (c.connection_id, c.rrc) = (cids(client.0), client.1);
    let mut s = server_config(&SUITES, false);
    (s.connection_id, s.rrc) = (cids(server.0), server.1);
    let mut pair = Pair::new(c, s);
    pair.run(Duration::from_secs(10));
    let ck = Pair::keys(&mut pair.client_events).expect("client keys");
    let sk = Pair::keys(&mut pair.server_events).expect("server keys");
    (ck.rrc, sk.rrc)
}

#[test]
fn rrc_is_negotiated_with_cids_when_both_sides_offer_it() {
    // RFC 9853 §3: both sides on (the default) and CIDs on, either length.
    assert_eq!(
        rrc_handshake((Some(4), true), (Some(8), true)),
        (true, true)
    );
    assert_eq!(
        rrc_handshake((Some(0), true), (Some(8), true)),
        (true, true)
    );
    // "The client and server MUST NOT use RRC unless both sides have successfully
    // exchanged `rrc` extensions."
    assert_eq!(
        rrc_handshake((Some(4), false), (Some(8), true)),
        (false, false)
    );
    assert_eq!(
        rrc_handshake((Some(4), true), (Some(8), false)),
        (false, false)
    );
    // Without CIDs no side offers or answers it ("A client offering the `rrc` extension
    // MUST also offer the `connection_id` extension").
    assert_eq!(rrc_handshake((None, true), (Some(8), true)), (false, false));
    assert_eq!(rrc_handshake((Some(4), true), (None, true)), (false, false));
}

#[test]
fn rrc_extension_is_in_the_hellos_only_with_cids() {
    let mut config = client_config(&SUITES);
    config.connection_id = ConnectionIds::On { len: 4 };
    let hello = crate::client::build_client_hello(&config, [0; 32], Vec::new(), None, Some(&[1]));
    assert_eq!(
        hello.extensions.raw(dtls_proto::ExtensionType::Rrc),
        Some(&[][..])
    );
    let hello = crate::client::build_client_hello(&config, [0; 32], Vec::new(), None, None);
    assert_eq!(hello.extensions.raw(dtls_proto::ExtensionType::Rrc), None);
    config.rrc = false;
    let hello = crate::client::build_client_hello(&config, [0; 32], Vec::new(), None, Some(&[1]));
    assert_eq!(hello.extensions.raw(dtls_proto::ExtensionType::Rrc), None);
}
