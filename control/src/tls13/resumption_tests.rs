//! DTLS 1.3 resumption (RFC 8446 §2.2, §4.6.1): NewSessionTickets after the handshake,
//! offered as PSKs with a binder and an obfuscated ticket age, the original identities
//! carried through; a ticket that does not open, has expired or has a wrong age leads to
//! a full handshake, never a failure.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use dtls_crypto::pki_types::UnixTime;
use dtls_crypto::{SeededRng, TicketKeys};
use dtls_proto::tls13::PskKeyExchangeMode::{PskDheKe, PskKe};
use dtls_proto::{CipherSuite, NamedGroup, ProtocolVersion};

use super::tests::{
    check_app_data, client13, keys, no_cookie, psk_client, psk_server, server13, settle,
    with_client_cert,
};
use crate::pair_tests::{Pair, test_wall};
use crate::{AcceptorConfig, ClientAuth, Config, PeerIdentity, SessionKeys, SessionTicket};

pub(super) fn ticket_keys() -> Arc<Mutex<TicketKeys>> {
    let keys = TicketKeys::new(
        &mut SeededRng::new(77),
        test_wall(),
        Duration::from_secs(3600),
        Duration::from_secs(7200),
    )
    .expect("ticket keys");
    Arc::new(Mutex::new(keys))
}

fn issuing(mut server: Config, keys: &Arc<Mutex<TicketKeys>>) -> Config {
    server.ticket_keys = Some(Arc::clone(keys));
    server
}

/// A handshake that runs until quiet; the client's tickets and both sides' keys.
fn handshake(
    client: Config,
    server: Config,
    ticket: Option<SessionTicket>,
    settings: AcceptorConfig,
    wall: UnixTime,
) -> (
    Box<SessionKeys>,
    Box<SessionKeys>,
    Vec<SessionTicket>,
    usize,
) {
    // Returns the keys, the client's tickets and the bytes both sides sent.
    let mut pair = Pair::with_acceptor(client, server, ticket, settings);
    pair.wall = wall;
    let bytes = Arc::new(Mutex::new(0usize));
    let counter = Arc::clone(&bytes);
    pair.filter = Box::new(move |_, d| {
        *counter.lock().expect("counter") += d.len();
        true
    });
    settle(&mut pair, Duration::from_secs(10));
    let (ck, sk) = keys(&mut pair);
    let mut tickets = Vec::new();
    while let Some(t) = pair.client.poll_session_ticket() {
        tickets.push(t);
    }
    let bytes = *bytes.lock().expect("counter");
    (ck, sk, tickets, bytes)
}

fn first_ticket(client: &Config, server: &Config) -> SessionTicket {
    let (ck, _, mut tickets, _) = handshake(
        client.clone(),
        server.clone(),
        None,
        no_cookie(),
        test_wall(),
    );
    assert!(!ck.resumed);
    assert_eq!(tickets.len(), 1);
    tickets.remove(0)
}

fn client_auth_pair() -> (Config, Config, Arc<Mutex<TicketKeys>>) {
    let keys = ticket_keys();
    let mut server = issuing(server13(), &keys);
    server.client_auth = ClientAuth::Required;
    (with_client_cert(client13()), server, keys)
}

#[test]
fn every_suite_resumes_without_certificates_and_keeps_both_identities() {
    for suite in CipherSuite::SUPPORTED_TLS13 {
        let (mut client, mut server, _) = client_auth_pair();
        client.tls13_cipher_suites = vec![*suite];
        server.tls13_cipher_suites = vec![*suite];
        let (full_ck, full_sk, mut tickets, full_bytes) = handshake(
            client.clone(),
            server.clone(),
            None,
            no_cookie(),
            test_wall(),
        );
        let ticket = tickets.pop().expect("a ticket");
        assert_eq!(ticket.version(), ProtocolVersion::Dtls1_3);
        assert_eq!(ticket.suite, *suite);
        assert_eq!(ticket.lifetime_hint, 7200);
        let (ck, sk, again, bytes) =
            handshake(client, server, Some(ticket), no_cookie(), test_wall());
        assert!(ck.resumed && sk.resumed, "{suite:?}");
        assert_eq!(ck.suite, *suite);
        // RFC 8446 §2.2: the resumed session keeps the original identities (the server
        // keeps the client's end-entity certificate).
        assert_eq!(ck.peer_identity, full_ck.peer_identity);
        let PeerIdentity::Certificates(chain) = &full_sk.peer_identity else {
            panic!("{:?}", full_sk.peer_identity)
        };
        assert_eq!(
            sk.peer_identity,
            PeerIdentity::Certificates(vec![chain[0].clone()])
        );
        // No certificates either way: fewer bytes than the full handshake, though the
        // ticket (with the client's certificate sealed in it) goes both ways.
        assert!(bytes < full_bytes, "{bytes} vs {full_bytes}");
        // A resumed session is issued a new ticket.
        assert_eq!(again.len(), 1);
        check_app_data(*ck, *sk);
    }
}

#[test]
fn a_resumed_session_resumes_again_with_its_new_ticket() {
    let (client, server, _) = client_auth_pair();
    let mut ticket = first_ticket(&client, &server);
    for _ in 0..3 {
        let (ck, sk, mut tickets, _) = handshake(
            client.clone(),
            server.clone(),
            Some(ticket),
            no_cookie(),
            test_wall(),
        );
        assert!(ck.resumed && sk.resumed);
        assert!(matches!(sk.peer_identity, PeerIdentity::Certificates(_)));
        ticket = tickets.pop().expect("a new ticket");
    }
}

#[test]
fn resumption_after_a_hello_retry_request_stateful_and_stateless() {
    let (mut client, mut server, _) = client_auth_pair();
    client.tls13_groups = vec![NamedGroup::X25519, NamedGroup::Secp256r1];
    let ticket = first_ticket(&client, &server);
    // The engine's own HelloRetryRequest: the server takes only P-256 now.
    server.tls13_groups = vec![NamedGroup::Secp256r1];
    let (ck, sk, _, _) = handshake(
        client.clone(),
        server.clone(),
        Some(ticket),
        no_cookie(),
        test_wall(),
    );
    assert!(ck.resumed && sk.resumed);
    // The acceptor's stateless HelloRetryRequest with a cookie.
    server.tls13_groups = vec![NamedGroup::X25519];
    let ticket = first_ticket(&client, &server);
    let (ck, sk, _, _) = handshake(
        client,
        server,
        Some(ticket),
        AcceptorConfig::default(),
        test_wall(),
    );
    assert!(ck.resumed && sk.resumed);
}

fn full_handshake_with(client: Config, server: Config, ticket: SessionTicket, wall: UnixTime) {
    let (ck, sk, _, _) = handshake(client, server, Some(ticket), no_cookie(), wall);
    assert!(!ck.resumed && !sk.resumed);
    assert!(matches!(ck.peer_identity, PeerIdentity::Certificates(_)));
    check_app_data(*ck, *sk);
}

#[test]
fn a_tampered_ticket_gets_a_full_handshake() {
    let (client, server, _) = client_auth_pair();
    for at in [0, 20, usize::MAX] {
        let mut ticket = first_ticket(&client, &server);
        let i = at.min(ticket.ticket.len() - 1);
        ticket.ticket[i] ^= 0x40;
        full_handshake_with(client.clone(), server.clone(), ticket, test_wall());
    }
}

#[test]
fn an_expired_or_stale_ticket_gets_a_full_handshake() {
    let (client, server, _) = client_auth_pair();
    let later =
        |secs| UnixTime::since_unix_epoch(Duration::from_secs(test_wall().as_secs() + secs));
    // Past its lifetime (7200 s).
    let ticket = first_ticket(&client, &server);
    full_handshake_with(client.clone(), server.clone(), ticket, later(7200));
    // Within its lifetime, but the age the client reports (its clock did not move) is a
    // minute off ours (RFC 8446 §4.2.11.1, §8.3).
    let ticket = first_ticket(&client, &server);
    full_handshake_with(client.clone(), server.clone(), ticket, later(60));
    // A few seconds off is within the window.
    let ticket = first_ticket(&client, &server);
    let (ck, sk, _, _) = handshake(client, server, Some(ticket), no_cookie(), later(5));
    assert!(ck.resumed && sk.resumed);
}

/// What a client that keeps tickets (`dtlsd connect`) asks before offering one: a DTLS 1.3
/// ticket is usable until its ticket_lifetime (7200 s here) after it arrived, not at it.
#[test]
fn a_ticket_is_usable_within_its_lifetime_only() {
    let (client, server, _) = client_auth_pair();
    let ticket = first_ticket(&client, &server);
    let arrived = ticket
        .resumption13()
        .expect("a DTLS 1.3 ticket")
        .received_at;
    assert!(ticket.is_usable(arrived));
    assert!(ticket.is_usable(arrived + Duration::from_secs(7199)));
    assert!(!ticket.is_usable(arrived + Duration::from_secs(7200)));
}

#[test]
fn tickets_survive_one_key_rotation_and_not_a_revocation() {
    let (client, server, keys) = client_auth_pair();
    let old = first_ticket(&client, &server);
    keys.lock()
        .expect("keys")
        .rotate(test_wall(), &mut SeededRng::new(5))
        .expect("rotate");
    let (ck, _, _, _) = handshake(
        client.clone(),
        server.clone(),
        Some(old),
        no_cookie(),
        test_wall(),
    );
    assert!(ck.resumed, "a ticket of the previous key still opens");
    let ticket = first_ticket(&client, &server);
    keys.lock()
        .expect("keys")
        .revoke_all(test_wall(), &mut SeededRng::new(6))
        .expect("revoke");
    full_handshake_with(client, server, ticket, test_wall());
}

#[test]
fn another_server_s_ticket_gets_a_full_handshake() {
    let (client, server, _) = client_auth_pair();
    let ticket = first_ticket(&client, &server);
    let other = issuing(server.clone(), &ticket_keys_seeded(99));
    full_handshake_with(client, other, ticket, test_wall());
}

fn ticket_keys_seeded(seed: u64) -> Arc<Mutex<TicketKeys>> {
    let keys = TicketKeys::new(
        &mut SeededRng::new(seed),
        test_wall(),
        Duration::from_secs(3600),
        Duration::from_secs(7200),
    )
    .expect("ticket keys");
    Arc::new(Mutex::new(keys))
}

#[test]
fn resumption_uses_psk_ke_only_when_both_sides_allow_it() {
    let keys = ticket_keys();
    let modes = |mut c: Config, m: &[_]| {
        c.tls13_psk_modes = m.to_vec();
        c
    };
    let client = modes(client13(), &[PskKe, PskDheKe]);
    let mut server = modes(issuing(server13(), &keys), &[PskKe]);
    let ticket = first_ticket(&client, &server);
    // No group in common: only psk_ke can complete.
    server.tls13_groups = vec![NamedGroup::Secp384r1];
    let mut client_x25519 = client.clone();
    client_x25519.tls13_groups = vec![NamedGroup::X25519];
    let (ck, sk, _, _) = handshake(
        client_x25519,
        server,
        Some(ticket),
        no_cookie(),
        test_wall(),
    );
    assert!(ck.resumed && sk.resumed);
    check_app_data(*ck, *sk);
    // A server allowing psk_dhe_ke only issues tickets to this client, resumed with
    // psk_dhe_ke.
    let server = issuing(server13(), &keys);
    let ticket = first_ticket(&client, &server);
    let (ck, sk, _, _) = handshake(client, server, Some(ticket), no_cookie(), test_wall());
    assert!(ck.resumed && sk.resumed);
}

#[test]
fn tickets_per_connection_are_bounded_and_each_resumes() {
    let keys = ticket_keys();
    let mut server = issuing(server13(), &keys);
    server.tls13_tickets = 3;
    let (_, _, tickets, _) = handshake(client13(), server.clone(), None, no_cookie(), test_wall());
    assert_eq!(tickets.len(), 3);
    let nonces: std::collections::BTreeSet<_> = tickets.iter().map(|t| t.ticket.clone()).collect();
    assert_eq!(nonces.len(), 3);
    for ticket in tickets {
        let (ck, sk, _, _) = handshake(
            client13(),
            server.clone(),
            Some(ticket),
            no_cookie(),
            test_wall(),
        );
        assert!(ck.resumed && sk.resumed);
    }
    server.tls13_tickets = u8::MAX;
    let (_, _, tickets, _) = handshake(client13(), server, None, no_cookie(), test_wall());
    assert_eq!(tickets.len(), usize::from(crate::MAX_TLS13_TICKETS));
}

#[test]
fn no_tickets_without_ticket_keys_or_when_the_client_does_not_ask() {
    let (_, _, tickets, _) = handshake(client13(), server13(), None, no_cookie(), test_wall());
    assert!(tickets.is_empty());
    let client = Config {
        offer_session_ticket: false,
        ..client13()
    };
    let (_, _, tickets, _) = handshake(
        client,
        issuing(server13(), &ticket_keys()),
        None,
        no_cookie(),
        test_wall(),
    );
    assert!(tickets.is_empty());
}

#[test]
fn an_external_psk_session_resumes_with_its_psk_identity() {
    let keys = ticket_keys();
    let server = issuing(psk_server(), &keys);
    let client = psk_client(7);
    let ticket = first_ticket(&client, &server);
    let (ck, sk, _, _) = handshake(
        client.clone(),
        server.clone(),
        Some(ticket),
        no_cookie(),
        test_wall(),
    );
    assert!(ck.resumed && sk.resumed);
    assert_eq!(ck.peer_identity, PeerIdentity::Psk(b"client13".to_vec()));
    assert_eq!(sk.peer_identity, PeerIdentity::Psk(b"client13".to_vec()));
    // Once the server no longer knows the identity, its tickets no longer resume; the
    // external PSK offered beside the ticket is not known either: certificates.
    let ticket = first_ticket(&client, &server);
    let mut reloaded = issuing(server13(), &keys);
    reloaded.psks.clear();
    let client = Config {
        server_name: Some("localhost".into()),
        peer_verification: crate::pair_tests::verifier(),
        ..client
    };
    let (ck, sk, _, _) = handshake(client, reloaded, Some(ticket), no_cookie(), test_wall());
    assert!(!ck.resumed && !sk.resumed);
}

#[test]
fn a_dtls13_ticket_is_not_offered_by_a_dtls12_client() {
    let (client, server, _) = client_auth_pair();
    let ticket = first_ticket(&client, &server);
    let client12 = Config {
        versions: vec![ProtocolVersion::Dtls1_2],
        ..client
    };
    let server12 = Config {
        versions: vec![ProtocolVersion::Dtls1_2],
        ..server
    };
    let (ck, sk, _, _) = handshake(client12, server12, Some(ticket), no_cookie(), test_wall());
    assert_eq!(ck.version, ProtocolVersion::Dtls1_2);
    assert!(!ck.resumed && !sk.resumed);
}

#[test]
fn a_client_offering_both_versions_with_a_ticket_falls_back_to_a_dtls12_server_hello() {
    // The DTLS 1.2 engine takes over the hello as sent, binders included (its Finished
    // covers those bytes).
    let (client, server, _) = client_auth_pair();
    let both = Config {
        versions: vec![ProtocolVersion::Dtls1_3, ProtocolVersion::Dtls1_2],
        ..client
    };
    let server12 = Config {
        versions: vec![ProtocolVersion::Dtls1_2],
        ..server.clone()
    };
    for settings in [no_cookie(), AcceptorConfig::default()] {
        let ticket = first_ticket(&both, &server);
        let (ck, sk, _, _) = handshake(
            both.clone(),
            server12.clone(),
            Some(ticket),
            settings,
            test_wall(),
        );
        assert_eq!(ck.version, ProtocolVersion::Dtls1_2);
        assert!(!ck.resumed && !sk.resumed);
    }
}

#[test]
fn a_wrong_binder_on_a_ticket_the_server_takes_is_decrypt_error() {
    // RFC 8446 §4.2.11.2: "If binder validation fails, the server MUST abort the
    // handshake with a "decrypt_error" alert". The ticket opens; the client's PSK is wrong.
    let (client, server, _) = client_auth_pair();
    let mut ticket = first_ticket(&client, &server);
    match &mut ticket.secret {
        crate::keys::ticket::TicketSecret::Dtls13(r) => r.psk[0] ^= 1,
        crate::keys::ticket::TicketSecret::Dtls12(_) => panic!("a DTLS 1.3 ticket"),
    }
    let mut pair = Pair::with_acceptor(client, server, Some(ticket), no_cookie());
    pair.run(Duration::from_secs(10));
    assert!(
        pair.server_events.iter().any(|e| matches!(
            e,
            crate::Event::HandshakeFailed(crate::HandshakeError::BadFinished)
        )),
        "{:?}",
        pair.server_events
    );
}

#[test]
fn a_server_that_now_requires_client_certificates_does_not_resume_a_session_without_one() {
    let keys = ticket_keys();
    let client = with_client_cert(client13());
    let server = issuing(server13(), &keys);
    let ticket = first_ticket(&client, &server);
    let required = Config {
        client_auth: ClientAuth::Required,
        ..server
    };
    let (ck, sk, _, _) = handshake(client, required, Some(ticket), no_cookie(), test_wall());
    assert!(!ck.resumed && !sk.resumed);
    assert!(matches!(sk.peer_identity, PeerIdentity::Certificates(_)));
}
