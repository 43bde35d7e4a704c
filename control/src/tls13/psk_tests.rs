//! External PSKs in DTLS 1.3 with psk_ke and psk_dhe_ke (RFC 8446 §4.2.9): the mode both
//! sides allow, psk_ke only as an opt-in of both.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use dtls_proto::tls13::PskKeyExchangeMode::{PskDheKe, PskKe};
use dtls_proto::{ExtensionType, HandshakeType, NamedGroup, ServerHello};

use super::tests::{
    check_app_data, client13, complete, keys, pair, psk, psk_client, psk_server, settle,
};
use crate::pair_tests::Pair;
use crate::{Config, Event, HandshakeError, PeerIdentity};

/// Whether the server's ServerHello (the plaintext epoch-0 handshake record it sends)
/// carries a key_share, seen by a filter on the pair; `None` until one passed.
fn watch_server_hello_key_share(pair: &mut Pair) -> Rc<RefCell<Option<bool>>> {
    let seen = Rc::new(RefCell::new(None));
    let out = Rc::clone(&seen);
    pair.filter = Box::new(move |to_server, d| {
        // DTLSPlaintext header (13 bytes), then the DTLS handshake header (12 bytes).
        let is_hello =
            d.first() == Some(&22) && d.get(13) == Some(&HandshakeType::ServerHello.to_u8());
        if !to_server && is_hello {
            let len = d.get(14..17).map_or(0, |l| {
                usize::from(l[0]) << 16 | usize::from(l[1]) << 8 | usize::from(l[2])
            });
            if let Some(hello) = d.get(25..25 + len).and_then(|b| ServerHello::parse(b).ok()) {
                let has =
                    super::messages::raw(&hello.extensions, ExtensionType::KeyShare).is_some();
                *seen.borrow_mut() = Some(has);
            }
        }
        true
    });
    out
}

fn with_modes(mut config: Config, modes: &[dtls_proto::tls13::PskKeyExchangeMode]) -> Config {
    config.tls13_psk_modes = modes.to_vec();
    config
}

#[test]
fn psk_ke_is_used_when_both_sides_allow_it_and_needs_no_common_group() {
    for (client_modes, server_modes) in [
        (&[PskKe][..], &[PskKe][..]),
        (&[PskKe, PskDheKe][..], &[PskKe, PskDheKe][..]),
        (&[PskDheKe, PskKe][..], &[PskKe][..]),
    ] {
        let client = with_modes(psk_client(7), client_modes);
        let mut server = with_modes(psk_server(), server_modes);
        // No group in common: only a handshake without (EC)DHE can complete.
        server.tls13_groups = vec![NamedGroup::Secp384r1];
        let mut pair = pair(client, server);
        let key_share = watch_server_hello_key_share(&mut pair);
        settle(&mut pair, Duration::from_secs(10));
        let (ck, sk) = keys(&mut pair);
        assert_eq!(
            *key_share.borrow(),
            Some(false),
            "{client_modes:?} {server_modes:?}"
        );
        assert_eq!(ck.peer_identity, PeerIdentity::Psk(b"client13".to_vec()));
        assert_eq!(sk.peer_identity, PeerIdentity::Psk(b"client13".to_vec()));
        check_app_data(*ck, *sk);
    }
}

#[test]
fn the_server_prefers_its_first_mode_and_psk_dhe_ke_is_the_default() {
    for (client_modes, server_modes) in [
        (&[PskKe, PskDheKe][..], &[PskDheKe, PskKe][..]),
        (&[PskKe, PskDheKe][..], &[PskDheKe][..]),
        (&[PskDheKe][..], &[PskDheKe, PskKe][..]),
    ] {
        let client = with_modes(psk_client(7), client_modes);
        let server = with_modes(psk_server(), server_modes);
        let mut pair = pair(client, server);
        let key_share = watch_server_hello_key_share(&mut pair);
        settle(&mut pair, Duration::from_secs(10));
        let (ck, sk) = keys(&mut pair);
        assert_eq!(
            *key_share.borrow(),
            Some(true),
            "{client_modes:?} {server_modes:?}"
        );
        assert_eq!(sk.peer_identity, PeerIdentity::Psk(b"client13".to_vec()));
        check_app_data(*ck, *sk);
    }
    assert_eq!(
        Config::new(crate::PeerVerifier::RejectAll).tls13_psk_modes,
        vec![PskDheKe]
    );
}

#[test]
fn a_server_that_does_not_allow_psk_ke_refuses_it_and_authenticates_with_its_certificate() {
    // The client offers only psk_ke; the server (default: psk_dhe_ke only) does not take
    // the PSK and answers with a full handshake, which this client verifies.
    let client = Config {
        psks: vec![psk(b"client13", 7)],
        tls13_psk_modes: vec![PskKe],
        ..client13()
    };
    let (ck, sk, _) = complete(client, psk_server());
    assert!(matches!(ck.peer_identity, PeerIdentity::Certificates(_)));
    assert_eq!(sk.peer_identity, PeerIdentity::None);
    // Without a way to verify certificates, the same client fails instead of going on
    // without forward secrecy.
    let client = with_modes(psk_client(7), &[PskKe]);
    let mut pair = pair(client, psk_server());
    pair.run(Duration::from_secs(10));
    assert!(
        pair.client_events.iter().any(|e| matches!(
            e,
            Event::HandshakeFailed(HandshakeError::BadCertificate { .. })
        )),
        "{:?}",
        pair.client_events
    );
}

#[test]
fn a_client_that_does_not_allow_psk_ke_gets_psk_dhe_ke_or_a_full_handshake() {
    // Server psk_ke only, client psk_dhe_ke only: no mode in common, certificates.
    let client = Config {
        psks: vec![psk(b"client13", 7)],
        ..client13()
    };
    let server = with_modes(psk_server(), &[PskKe]);
    let (ck, sk, _) = complete(client, server);
    assert!(matches!(ck.peer_identity, PeerIdentity::Certificates(_)));
    assert_eq!(sk.peer_identity, PeerIdentity::None);
}

#[test]
fn a_client_without_psk_modes_offers_no_psk_and_asks_for_no_tickets() {
    let client = Config {
        psks: vec![psk(b"client13", 7)],
        tls13_psk_modes: Vec::new(),
        ..client13()
    };
    let (ck, sk, _) = complete(client, psk_server());
    assert!(matches!(ck.peer_identity, PeerIdentity::Certificates(_)));
    assert_eq!(sk.peer_identity, PeerIdentity::None);
}
