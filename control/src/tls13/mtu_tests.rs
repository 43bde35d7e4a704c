//! No DTLS 1.3 datagram larger than the configured MTU (TESTING.md "Adversarial", loss /
//! reorder; issue 18): every datagram of a whole session, both ways.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use super::nonce_tests::quiet;
use super::resumption_tests::ticket_keys;
use super::tests::{client13, server13, settle, with_client_cert};
use crate::ClientAuth;
use crate::pair_tests::Pair;

/// RFC 9147 §4.4: "each DTLS record MUST fit within a single datagram", and a handshake
/// message larger than the PMTU is fragmented to fit (§5.5). At MTU 300 and 576, with the
/// acceptor's cookie exchange, the default hybrid share (a 1 216-byte key share in the
/// ClientHello), certificates both ways, NewSessionTickets, then KeyUpdates both ways and
/// a RequestConnectionId with their ACKs: every datagram either side or the acceptor
/// sends fits the MTU, and the handshake messages were indeed cut to it (some datagrams
/// fill most of it).
#[test]
fn every_dtls13_datagram_fits_the_configured_mtu() {
    for mtu in [300usize, 576] {
        let mut client = with_client_cert(client13());
        client.mtu = mtu;
        let mut server = server13();
        server.mtu = mtu;
        server.client_auth = ClientAuth::Required;
        server.ticket_keys = Some(ticket_keys());
        let mut pair = Pair::new(client, server);
        let sizes = Rc::new(RefCell::new(Vec::new()));
        let seen = Rc::clone(&sizes);
        pair.filter = Box::new(move |from_client, d| {
            seen.borrow_mut().push((from_client, d.len()));
            true
        });
        settle(&mut pair, Duration::from_secs(30));
        assert!(pair.client.is_established(), "mtu {mtu}");
        quiet(&mut pair, Duration::from_secs(30));
        let handshake = sizes.borrow().len();
        for request_peer in [true, false] {
            pair.now += Duration::from_secs(2);
            let now = pair.now;
            assert!(pair.client.update_keys(now, request_peer), "mtu {mtu}");
            quiet(&mut pair, Duration::from_secs(30));
        }
        pair.now += Duration::from_secs(2);
        let now = pair.now;
        pair.server
            .as_mut()
            .expect("server")
            .update_keys(now, false);
        quiet(&mut pair, Duration::from_secs(30));
        pair.now += Duration::from_secs(2);
        let now = pair.now;
        pair.client.request_connection_ids(now, 2);
        quiet(&mut pair, Duration::from_secs(30));
        let sizes = sizes.borrow();
        assert!(
            sizes.len() > handshake + 4,
            "mtu {mtu}: post-handshake datagrams {}",
            sizes.len() - handshake
        );
        let too_big: Vec<_> = sizes.iter().filter(|(_, len)| *len > mtu).collect();
        assert!(too_big.is_empty(), "mtu {mtu}: {too_big:?}");
        let largest = sizes.iter().map(|(_, len)| *len).max().unwrap_or(0);
        assert!(largest > mtu * 3 / 4, "mtu {mtu}: largest {largest}");
        println!(
            "mtu {mtu}: {} datagrams ({handshake} in the handshake), largest {largest} B",
            sizes.len()
        );
    }
}
