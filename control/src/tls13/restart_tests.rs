//! DTLS 1.3 rows of the checklist's "Failed handshake, then a valid one from the same
//! address" and "New ClientHello on a live address" (TESTING.md "Adversarial"; issue 18),
//! at engine level: the acceptor and engines of one server, clients from one address.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use dtls_crypto::SeededRng;

use super::nonce_tests::quiet;
use super::tests::{client13, server13, settle, with_client_cert};
use crate::pair_tests::Pair;
use crate::{ClientAuth, Config, Connection, Event, HandshakeError};

/// A new client of `config` at the same address as `pair`'s (the pair delivers its
/// datagrams from that address), its events dropped.
fn new_client(pair: &Pair, config: Config, seed: u64) -> Connection {
    Connection::client(
        Arc::new(config),
        Box::new(SeededRng::new(seed)),
        pair.now,
        pair.client.peer(),
        None,
    )
    .expect("client")
}

/// Failed handshake, then a valid one from the same address (RFC 9147 §5.1: a server's
/// state for a handshake lives in its engine, created only after the cookie; nothing of a
/// failed one may stand in the next one's way): against a server requiring client
/// certificates, a client without one fails (certificate_required), and so does one that
/// expects another server name (bad_certificate); each time the engine is dropped and a
/// new client at the same address, through the same acceptor (cookie exchange, the
/// hybrid hello fragmented through its hello pool), completes.
#[test]
fn failed_handshake_then_a_valid_one_from_the_same_address_succeeds() {
    let mut server = server13();
    server.client_auth = ClientAuth::Required;
    let mut wrong_name = with_client_cert(client13());
    wrong_name.server_name = Some("not-the-server.example".into());
    type Expected = fn(&HandshakeError) -> bool;
    let failures: [(Config, Expected); 2] = [
        (client13(), |e| {
            matches!(e, HandshakeError::CertificateRequired)
        }),
        (wrong_name, |e| {
            matches!(e, HandshakeError::BadCertificate { .. })
        }),
    ];
    let mut pair = Pair::new(client13(), server);
    for (seed, (config, expected)) in (10..).zip(failures) {
        pair.server = None;
        pair.client = new_client(&pair, config, seed);
        pair.client_events.clear();
        pair.server_events.clear();
        settle(&mut pair, Duration::from_secs(30));
        let failed = pair
            .client_events
            .iter()
            .chain(&pair.server_events)
            .any(|e| matches!(e, Event::HandshakeFailed(err) if expected(err)));
        assert!(
            failed,
            "client {:?} server {:?}",
            pair.client_events, pair.server_events
        );
        assert!(!pair.client.is_established());
        assert!(
            !pair
                .server_events
                .iter()
                .any(|e| matches!(e, Event::KeysReady(_)))
        );
        // The same address, a valid client.
        pair.server = None;
        pair.client = new_client(&pair, with_client_cert(client13()), seed + 100);
        pair.client_events.clear();
        pair.server_events.clear();
        settle(&mut pair, Duration::from_secs(30));
        assert!(pair.client.is_established(), "{:?}", pair.client_events);
        assert!(pair.server.as_ref().is_some_and(Connection::is_established));
    }
}

/// New ClientHello on a live address (RFC 9147 §5.1 / RFC 6347 §4.2.8: a ClientHello
/// from the address of a live session is a new handshake only if it is not the session's
/// own hello retransmitted; the old session stays until the new one completes): the live
/// server engine tells the client's own first and second ClientHellos (retransmissions,
/// by their first fragments) from a restarted client's; the new handshake from that address completes in an engine
/// of its own, and the old session still works (a KeyUpdate both ways).
#[test]
fn new_client_hello_on_a_live_address_is_a_new_handshake_and_keeps_the_old_session() {
    let mut pair = Pair::new(client13(), server13());
    let sent = Rc::new(RefCell::new(Vec::new()));
    let log = Rc::clone(&sent);
    pair.filter = Box::new(move |from_client, d| {
        if from_client && d.first() == Some(&22) {
            log.borrow_mut().push(d.clone());
        }
        true
    });
    settle(&mut pair, Duration::from_secs(30));
    assert!(pair.client.is_established());
    let mut old_server = pair.server.take().expect("server");
    assert!(old_server.is_established());
    // The session's own hellos (plaintext handshake records), retransmitted: not new. Only
    // a first fragment (offset 0) carries the random that tells them apart; a later
    // fragment of the hybrid hello goes to the acceptor's hello pool, as a new client's
    // would (the engine answers the first fragment; the pool entry expires).
    let own: Vec<Vec<u8>> = sent.borrow_mut().drain(..).collect();
    let first_fragments: Vec<&Vec<u8>> = own
        .iter()
        .filter(|d| d.get(13 + 6..13 + 9) == Some(&[0, 0, 0][..]))
        .collect();
    assert_eq!(first_fragments.len(), 2, "both ClientHellos");
    assert!(own.len() > 2, "the hybrid hellos in fragments");
    for d in first_fragments {
        assert!(
            !old_server.is_new_client_hello(d),
            "its own hello taken as new"
        );
    }
    // A restarted client at the same address: a new handshake.
    let restarted = new_client(&pair, client13(), 7);
    let old_client = std::mem::replace(&mut pair.client, restarted);
    let old_client_events = std::mem::take(&mut pair.client_events);
    pair.server_events.clear();
    pair.exchange();
    let new_hello = sent.borrow().first().cloned().expect("the new ClientHello");
    assert!(old_server.is_new_client_hello(&new_hello));
    // Meanwhile the old engine, handed the new hello as the runtime would before it
    // decides, is not moved by it.
    let (now, wall, from) = (pair.now, pair.wall, old_server.peer());
    old_server.handle_datagram(now, wall, from, &new_hello);
    assert!(old_server.is_established());
    assert!(
        !std::iter::from_fn(|| old_server.poll_event()).any(|e| matches!(
            e,
            Event::HandshakeFailed(_) | Event::KeysReady(_) | Event::Closed { .. }
        ))
    );
    settle(&mut pair, Duration::from_secs(30));
    assert!(pair.client.is_established(), "the new handshake completes");
    assert!(pair.server.as_ref().is_some_and(Connection::is_established));
    // The old session goes on: a KeyUpdate both ways between the old pair.
    pair.client = old_client;
    pair.client_events = old_client_events;
    pair.server = Some(old_server);
    pair.server_events.clear();
    pair.filter = Box::new(|_, _| true);
    pair.now += Duration::from_secs(5);
    let now = pair.now;
    assert!(pair.client.update_keys(now, true));
    quiet(&mut pair, Duration::from_secs(30));
    let updates = |events: &[Event]| {
        events
            .iter()
            .filter(|e| matches!(e, Event::KeysUpdated(_)))
            .count()
    };
    assert!(
        updates(&pair.server_events) >= 1,
        "{:?}",
        pair.server_events
    );
    assert!(updates(&pair.client_events) >= 1);
}
