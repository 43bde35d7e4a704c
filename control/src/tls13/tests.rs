//! In-memory client ↔ server tests of the DTLS 1.3 engine: every suite and group, with and
//! without client authentication, each signature key kind, HelloRetryRequest, failures.

use std::time::Duration;

use dataplane::record::ReplayWindow;
use dataplane::record::v13::{HeaderForm, InnerContentType, Opener13, Sealer13};
use dtls_proto::{CipherSuite, NamedGroup, ProtocolVersion};

use crate::pair_tests::{Pair, certified, pki, verifier};
use crate::{
    AcceptorConfig, ClientAuth, Config, Event, HandshakeError, PeerIdentity, RecordKeys,
    SessionKeys,
};

pub(super) fn client13() -> Config {
    Config {
        server_name: Some("localhost".into()),
        ..Config::new(verifier()).dtls13_only()
    }
}

pub(super) fn server13() -> Config {
    let pki = pki();
    Config {
        certificate: Some(certified(&pki.server.cert_pem, &pki.server.key_pem)),
        ..Config::new(verifier()).dtls13_only()
    }
}

pub(super) fn with_client_cert(mut config: Config) -> Config {
    let pki = pki();
    config.certificate = Some(certified(&pki.client.cert_pem, &pki.client.key_pem));
    config
}

/// An acceptor without the cookie exchange (the stateless HelloRetryRequest is tested
/// apart).
pub(super) fn no_cookie() -> AcceptorConfig {
    AcceptorConfig {
        require_cookie: false,
        ..AcceptorConfig::default()
    }
}

pub(super) fn pair(client: Config, server: Config) -> Pair {
    Pair::with_acceptor(client, server, None, no_cookie())
}

/// Runs until both sides are established and every timer is quiet (the client's final
/// flight acknowledged), or `limit` passed.
pub(super) fn settle(pair: &mut Pair, limit: Duration) {
    pair.run(limit);
    let end = pair.now + limit;
    while let Some(next) = pair.client.poll_timeout() {
        if next > end || pair.client.is_finished() {
            break;
        }
        pair.now = next;
        pair.client.handle_timeout(pair.now);
        if let Some(s) = pair.server.as_mut() {
            s.handle_timeout(pair.now);
        }
        pair.exchange();
    }
}

/// A DTLS 1.3 client (X25519) and server past their handshake, every timer quiet.
fn settled_x25519_pair() -> Pair {
    let mut client = client13();
    client.tls13_groups = vec![NamedGroup::X25519];
    let mut pair = pair(client, server13());
    settle(&mut pair, Duration::from_secs(10));
    pair
}

pub(super) fn keys(pair: &mut Pair) -> (Box<SessionKeys>, Box<SessionKeys>) {
    let ck = Pair::keys(&mut pair.client_events)
        .unwrap_or_else(|| panic!("client keys: {:?}", pair.client_events));
    let sk = Pair::keys(&mut pair.server_events)
        .unwrap_or_else(|| panic!("server keys: {:?}", pair.server_events));
    (ck, sk)
}

/// Seals a record with `from`'s write keys and opens it with `to`'s read keys, as the
/// data plane would with `Sealer13`/`Opener13`.
pub(super) fn check_app_data(from: SessionKeys, to: SessionKeys) {
    let (_, write) = from.records.into_dtls13().expect("DTLS 1.3 keys");
    let (read, _) = to.records.into_dtls13().expect("DTLS 1.3 keys");
    assert_eq!((write.epoch, read.epoch), (3, 3));
    let mut sealer = Sealer13::new(write.epoch, write.keys).with_next_sequence(write.next_sequence);
    let mut opener = Opener13::new(read.epoch, read.keys, ReplayWindow::new(to.replay_window));
    let form = HeaderForm::default();
    let msg = b"hello over DTLS 1.3";
    let mut record = vec![0u8; sealer.record_len(&form, msg.len(), 0)];
    let at = sealer.plaintext_offset(&form);
    record[at..at + msg.len()].copy_from_slice(msg);
    let len = sealer
        .seal(
            InnerContentType::ApplicationData,
            &form,
            &mut record,
            msg.len(),
            0,
        )
        .expect("seal");
    let opened = opener.open(&mut record[..len], 0).expect("open");
    assert_eq!(opened.plaintext, msg);
}

pub(super) fn complete(
    client: Config,
    server: Config,
) -> (Box<SessionKeys>, Box<SessionKeys>, Pair) {
    let mut pair = pair(client, server);
    settle(&mut pair, Duration::from_secs(10));
    let (ck, sk) = keys(&mut pair);
    (ck, sk, pair)
}

#[test]
fn every_suite_and_group_completes_with_and_without_client_auth() {
    for &suite in CipherSuite::SUPPORTED_TLS13 {
        for group in [
            NamedGroup::X25519Mlkem768,
            NamedGroup::X25519,
            NamedGroup::Secp256r1,
            NamedGroup::Secp384r1,
        ] {
            for client_auth in [false, true] {
                let mut client = client13();
                client.tls13_cipher_suites = vec![suite];
                client.tls13_groups = vec![group];
                let mut server = server13();
                if client_auth {
                    client = with_client_cert(client);
                    server.client_auth = ClientAuth::Required;
                }
                let (ck, sk, pair) = complete(client, server);
                let what = format!("{suite:?} {group:?} client_auth={client_auth}");
                assert_eq!((ck.suite, sk.suite), (suite, suite), "{what}");
                assert_eq!(ck.version, ProtocolVersion::Dtls1_3, "{what}");
                assert_eq!(pair.client.version(), "1.3");
                assert!(
                    matches!(ck.peer_identity, PeerIdentity::Certificates(ref c) if !c.is_empty()),
                    "{what}"
                );
                if client_auth {
                    assert!(
                        matches!(sk.peer_identity, PeerIdentity::Certificates(ref c) if !c.is_empty()),
                        "{what}"
                    );
                } else {
                    assert_eq!(sk.peer_identity, PeerIdentity::None, "{what}");
                }
                assert!(pair.max_datagram <= 1200, "{what}: {}", pair.max_datagram);
                // The server's ACK ended the client's final flight: no timer left.
                assert_eq!(pair.client.poll_timeout(), None, "{what}");
                assert_eq!(
                    pair.server.as_ref().and_then(|s| s.poll_timeout()),
                    None,
                    "{what}"
                );
                let (mut a, mut b) = ([0u8; 32], [0u8; 32]);
                ck.exporter
                    .export(b"EXPERIMENTAL test", Some(b"ctx"), &mut a)
                    .expect("export");
                sk.exporter
                    .export(b"EXPERIMENTAL test", Some(b"ctx"), &mut b)
                    .expect("export");
                assert_eq!(a, b, "{what}");
                check_app_data(*sk, *ck);
            }
        }
    }
}

#[test]
fn application_keys_work_both_ways_and_start_after_the_engine_reserve() {
    let (ck, sk, _) = complete(client13(), server13());
    let (ck2, sk2, _) = complete(client13(), server13());
    let RecordKeys::Dtls13 { write, .. } = &ck.records else {
        panic!("1.3 keys")
    };
    assert_eq!(write.next_sequence, super::ENGINE_SEQUENCE_RESERVE);
    check_app_data(*ck, *sk);
    check_app_data(*sk2, *ck2);
}

#[test]
fn rsa_pss_p384_and_ed25519_server_keys_complete() {
    let pki = pki();
    for (cert, key) in [
        (&pki.server_rsa.cert_pem, &pki.server_rsa.key_pem),
        (&pki.server_p384.cert_pem, &pki.server_p384.key_pem),
        (&pki.server_ed25519.cert_pem, &pki.server_ed25519.key_pem),
    ] {
        let server = Config {
            certificate: Some(certified(cert, key)),
            ..server13()
        };
        let (ck, sk, _) = complete(client13(), server);
        assert_eq!(ck.suite, sk.suite);
        check_app_data(*ck, *sk);
    }
}

#[test]
fn the_hybrid_group_is_offered_first_by_default() {
    let (ck, _, _) = complete(client13(), server13());
    assert_eq!(ck.version, ProtocolVersion::Dtls1_3);
    // The default ClientHello carries an X25519MLKEM768 share (1216 bytes): it does not fit
    // one 1200-byte datagram, so it went out fragmented.
    let mut pair = pair(client13(), server13());
    let mut buf = vec![0u8; 2048];
    let mut first_flight = Vec::new();
    while let Some(t) = pair.client.poll_transmit(pair.now, &mut buf) {
        first_flight.push(t.len);
    }
    assert!(first_flight.len() >= 2, "{first_flight:?}");
    assert!(first_flight.iter().all(|&n| n <= 1200));
}

#[test]
fn a_group_without_a_client_share_takes_a_hello_retry_request() {
    let mut client = client13();
    client.tls13_groups = vec![NamedGroup::X25519, NamedGroup::Secp384r1];
    let mut server = server13();
    server.tls13_groups = vec![NamedGroup::Secp384r1];
    let (ck, sk, pair) = complete(client, server);
    check_app_data(*ck, *sk);
    assert!(pair.client.is_established());
}

#[test]
fn no_group_in_common_fails_with_handshake_failure() {
    let mut client = client13();
    client.tls13_groups = vec![NamedGroup::X25519];
    let mut server = server13();
    server.tls13_groups = vec![NamedGroup::Secp384r1];
    let mut pair = pair(client, server);
    pair.run(Duration::from_secs(10));
    assert!(
        pair.server_events
            .iter()
            .any(|e| matches!(e, Event::HandshakeFailed(HandshakeError::NoCommonGroup))),
        "{:?}",
        pair.server_events
    );
    assert!(pair.client.is_finished());
}

#[test]
fn required_client_certificate_missing_fails() {
    let mut server = server13();
    server.client_auth = ClientAuth::Required;
    let mut pair = pair(client13(), server);
    pair.run(Duration::from_secs(10));
    assert!(
        pair.server_events.iter().any(|e| matches!(
            e,
            Event::HandshakeFailed(HandshakeError::CertificateRequired)
        )),
        "{:?}",
        pair.server_events
    );
}

#[test]
fn optional_client_certificate_missing_completes_without_identity() {
    let mut server = server13();
    server.client_auth = ClientAuth::Optional;
    let (_, sk, _) = complete(client13(), server);
    assert_eq!(sk.peer_identity, PeerIdentity::None);
}

#[test]
fn a_wrong_server_name_fails_with_bad_certificate() {
    let client = Config {
        server_name: Some("example.org".into()),
        ..client13()
    };
    let mut pair = pair(client, server13());
    pair.run(Duration::from_secs(10));
    assert!(
        pair.client_events.iter().any(|e| matches!(
            e,
            Event::HandshakeFailed(HandshakeError::BadCertificate { .. })
        )),
        "{:?}",
        pair.client_events
    );
    assert!(pair.server.as_ref().is_some_and(|s| s.is_finished()));
}

/// With the acceptor's cookie exchange (the default): a stateless HelloRetryRequest,
/// never larger than the ClientHello (the pair checks every reply), then the handshake.
fn complete_with_cookie(client: Config, server: Config) -> (Box<SessionKeys>, Box<SessionKeys>) {
    let mut pair = Pair::new(client, server);
    let mut retries = 0;
    pair.filter = Box::new(move |from_client, d| {
        // The acceptor's HelloRetryRequest is the only plaintext ServerHello before the
        // engine exists; count them through the random.
        if !from_client && d.len() > 13 + 12 + 34 && d[0] == 22 && d[13] == 2 {
            let random = &d[13 + 12 + 2..13 + 12 + 34];
            if random == dtls_proto::tls13::HELLO_RETRY_REQUEST_RANDOM {
                retries += 1;
                assert!(retries <= 2, "more than one HelloRetryRequest");
            }
        }
        true
    });
    settle(&mut pair, Duration::from_secs(10));
    keys(&mut pair)
}

#[test]
fn the_cookie_exchange_is_a_stateless_hello_retry_request() {
    // X25519 share, server takes X25519: the HelloRetryRequest carries only the cookie.
    let mut client = client13();
    client.tls13_groups = vec![NamedGroup::X25519];
    let (ck, sk) = complete_with_cookie(client, server13());
    check_app_data(*ck, *sk);
}

#[test]
fn the_stateless_hello_retry_request_also_picks_the_group() {
    // The client's share is X25519; the server takes only P-384: one HelloRetryRequest
    // carries both the cookie and the group.
    let mut client = client13();
    client.tls13_groups = vec![NamedGroup::X25519, NamedGroup::Secp384r1];
    client.tls13_cipher_suites = vec![CipherSuite::Tls13Aes256GcmSha384];
    let mut server = server13();
    server.tls13_groups = vec![NamedGroup::Secp384r1];
    let (ck, sk) = complete_with_cookie(client, server);
    assert_eq!(ck.suite, CipherSuite::Tls13Aes256GcmSha384);
    check_app_data(*ck, *sk);
}

#[test]
fn a_fragmented_hybrid_client_hello_goes_through_the_pool_and_the_cookie() {
    // The default: X25519MLKEM768 first, so the first ClientHello is fragmented at MTU
    // 1200 and put together in the acceptor's hello pool.
    let mut server = server13();
    server.client_auth = ClientAuth::Required;
    let (ck, sk) = complete_with_cookie(with_client_cert(client13()), server);
    check_app_data(*sk, *ck);
}

#[test]
fn a_dtls13_only_client_against_a_dtls12_only_server_fails_with_protocol_version() {
    let pki = pki();
    let server = Config {
        certificate: Some(certified(&pki.server.cert_pem, &pki.server.key_pem)),
        ..Config::new(verifier())
    };
    let mut pair = Pair::new(client13(), server);
    pair.run(Duration::from_secs(10));
    assert!(
        pair.client_events.iter().any(|e| matches!(
            e,
            Event::HandshakeFailed(HandshakeError::PeerAlert {
                description: dtls_proto::AlertDescription::ProtocolVersion
            })
        )),
        "{:?}",
        pair.client_events
    );
    assert!(pair.server.is_none());
}

// ---------- version negotiation ----------

fn dual(mut config: Config) -> Config {
    config.versions = vec![ProtocolVersion::Dtls1_3, ProtocolVersion::Dtls1_2];
    config
}

fn server12() -> Config {
    let pki = pki();
    Config {
        certificate: Some(certified(&pki.server.cert_pem, &pki.server.key_pem)),
        ..Config::new(verifier())
    }
}

fn client12() -> Config {
    Config {
        server_name: Some("localhost".into()),
        ..Config::new(verifier())
    }
}

fn negotiate(client: Config, server: Config, settings: AcceptorConfig) -> (Pair, ProtocolVersion) {
    let mut pair = Pair::with_acceptor(client, server, None, settings);
    settle(&mut pair, Duration::from_secs(10));
    let (ck, sk) = keys(&mut pair);
    assert_eq!(ck.version, sk.version);
    assert_eq!(ck.suite, sk.suite);
    let version = ck.version;
    (pair, version)
}

#[test]
fn a_client_offering_both_gets_dtls13_from_a_server_allowing_both() {
    let (pair, version) = negotiate(
        dual(client13()),
        dual(server13()),
        AcceptorConfig::default(),
    );
    assert_eq!(version, ProtocolVersion::Dtls1_3);
    assert_eq!(pair.client.version(), "1.3");
}

#[test]
fn a_client_offering_both_falls_back_to_a_dtls12_server_after_its_hello_verify_request() {
    let (pair, version) = negotiate(dual(client13()), server12(), AcceptorConfig::default());
    assert_eq!(version, ProtocolVersion::Dtls1_2);
    assert_eq!(pair.client.version(), "1.2");
    assert!(
        pair.server.as_ref().is_some_and(|s| s.version() == "1.2"),
        "server engine"
    );
}

#[test]
fn a_client_offering_both_takes_a_dtls12_server_hello() {
    // Without the cookie exchange the first answer is the DTLS 1.2 ServerHello itself.
    let (pair, version) = negotiate(dual(client13()), server12(), no_cookie());
    assert_eq!(version, ProtocolVersion::Dtls1_2);
    assert_eq!(pair.client.version(), "1.2");
}

#[test]
fn a_dtls12_client_gets_dtls12_from_a_server_allowing_both() {
    let (pair, version) = negotiate(client12(), dual(server13()), AcceptorConfig::default());
    assert_eq!(version, ProtocolVersion::Dtls1_2);
    assert_eq!(pair.client.version(), "1.2");
}

#[test]
fn a_dtls12_only_client_against_a_dtls13_only_server_fails_with_protocol_version() {
    let mut pair = Pair::new(client12(), server13());
    pair.run(Duration::from_secs(10));
    assert!(
        pair.client_events.iter().any(|e| matches!(
            e,
            Event::HandshakeFailed(HandshakeError::PeerAlert {
                description: dtls_proto::AlertDescription::ProtocolVersion
            })
        )),
        "{:?}",
        pair.client_events
    );
    assert!(pair.server.is_none());
}

#[test]
fn a_downgrade_to_dtls12_is_caught_by_the_sentinel() {
    // An attacker strips supported_versions from the client's hello: the server, which
    // allows DTLS 1.3, answers in DTLS 1.2 with the RFC 8446 §4.1.3 sentinel, and the
    // client, which offered DTLS 1.3, aborts with illegal_parameter.
    let mut client = dual(client13());
    client.tls13_groups = vec![NamedGroup::X25519];
    let mut pair = Pair::with_acceptor(client, dual(server13()), None, no_cookie());
    pair.filter = Box::new(|from_client, d| {
        let pattern = [0x00, 0x2b, 0x00, 0x05, 0x04, 0xfe, 0xfc, 0xfe, 0xfd];
        if from_client && let Some(at) = d.windows(pattern.len()).position(|w| w == pattern) {
            // Renamed to an unknown extension type.
            d[at] = 0xfa;
            d[at + 1] = 0xfa;
        }
        true
    });
    pair.run(Duration::from_secs(10));
    assert!(
        pair.client_events.iter().any(|e| matches!(
            e,
            Event::HandshakeFailed(HandshakeError::IllegalParameter { .. })
        )),
        "{:?}",
        pair.client_events
    );
    assert!(!pair.client.is_established());
}

// ---------- KeyUpdate ----------

fn updated(events: &mut Vec<Event>) -> (Vec<crate::EpochKeys13>, Vec<crate::EpochKeys13>) {
    let (mut read, mut write) = (Vec::new(), Vec::new());
    events.retain_mut(|e| {
        if let Event::KeysUpdated(k) = e {
            read.extend(k.read.take());
            write.extend(k.write.take());
            false
        } else {
            true
        }
    });
    (read, write)
}

fn seal_open(write: crate::EpochKeys13, read: crate::EpochKeys13) {
    assert_eq!(write.epoch, read.epoch);
    let mut sealer = Sealer13::new(write.epoch, write.keys).with_next_sequence(write.next_sequence);
    let mut opener = Opener13::new(read.epoch, read.keys, ReplayWindow::new(64));
    let form = HeaderForm::default();
    let msg = b"after KeyUpdate";
    let mut record = vec![0u8; sealer.record_len(&form, msg.len(), 0)];
    let at = sealer.plaintext_offset(&form);
    record[at..at + msg.len()].copy_from_slice(msg);
    let len = sealer
        .seal(
            InnerContentType::ApplicationData,
            &form,
            &mut record,
            msg.len(),
            0,
        )
        .expect("seal");
    assert_eq!(
        opener.open(&mut record[..len], 0).expect("open").plaintext,
        msg
    );
}

#[test]
fn a_requested_key_update_moves_both_directions_to_epoch_4() {
    let mut pair = settled_x25519_pair();
    assert!(pair.client.update_keys(pair.now, true));
    assert!(!pair.client.update_keys(pair.now, true), "one at a time");
    settle(&mut pair, Duration::from_secs(10));
    let (c_read, c_write) = updated(&mut pair.client_events);
    let (s_read, s_write) = updated(&mut pair.server_events);
    let epochs = |v: &Vec<crate::EpochKeys13>| v.iter().map(|k| k.epoch).collect::<Vec<_>>();
    assert_eq!(
        (
            epochs(&c_read),
            epochs(&c_write),
            epochs(&s_read),
            epochs(&s_write)
        ),
        (vec![4], vec![4], vec![4], vec![4]),
        "client {:?} server {:?}",
        pair.client_events,
        pair.server_events
    );
    assert_eq!(c_write[0].next_sequence, super::ENGINE_SEQUENCE_RESERVE);
    let mut c_read = c_read;
    let mut s_read = s_read;
    seal_open(c_write.into_iter().next().expect("w"), s_read.remove(0));
    seal_open(s_write.into_iter().next().expect("w"), c_read.remove(0));
    assert_eq!(pair.client.poll_timeout(), None);
    assert!(pair.client.is_established() && !pair.client.is_finished());
}

#[test]
fn a_key_update_survives_the_loss_of_its_first_copy_and_of_the_ack() {
    let mut pair = settled_x25519_pair();
    // Lose the client's first KeyUpdate and the server's first ACK of it.
    let mut lost = (false, false);
    pair.filter = Box::new(move |from_client, d| {
        let protected = d[0] & 0xe0 == 0x20;
        if protected && from_client && !lost.0 {
            lost.0 = true;
            return false;
        }
        if protected && !from_client && !lost.1 {
            lost.1 = true;
            return false;
        }
        true
    });
    assert!(pair.client.update_keys(pair.now, false));
    settle(&mut pair, Duration::from_secs(30));
    let (_, c_write) = updated(&mut pair.client_events);
    let (s_read, s_write) = updated(&mut pair.server_events);
    assert!(s_write.is_empty(), "not requested");
    assert_eq!(c_write.len(), 1);
    let mut s_read = s_read;
    assert_eq!(
        s_read.len(),
        1,
        "the retransmission is recognized, not applied twice"
    );
    seal_open(c_write.into_iter().next().expect("w"), s_read.remove(0));
}

/// RFC 9147 §5.8 / §8: a KeyUpdate sent long after the handshake (past
/// `max_handshake_time`) is a flight with its own retransmission budget: its lost first
/// copy is resent, acknowledged, and the keys change; a second update works after it.
#[test]
fn a_key_update_long_after_the_handshake_time_limit_is_still_retransmitted() {
    let bound = Duration::from_secs(20);
    let mut client = client13();
    client.tls13_groups = vec![NamedGroup::X25519];
    client.retransmit.max_handshake_time = Some(bound);
    let mut server = server13();
    server.retransmit.max_handshake_time = Some(bound);
    let mut pair = pair(client, server);
    settle(&mut pair, Duration::from_secs(10));
    assert!(pair.client.is_established());
    assert!(pair.server.as_ref().is_some_and(|s| s.is_established()));
    assert_eq!(
        pair.client.poll_timeout(),
        None,
        "final flight acknowledged"
    );
    // Well past the handshake's time limit.
    pair.now += bound * 3;
    let mut lost = false;
    pair.filter = Box::new(move |from_client, d| {
        let protected = d[0] & 0xe0 == 0x20;
        if protected && from_client && !lost {
            lost = true;
            return false;
        }
        true
    });
    assert!(pair.client.update_keys(pair.now, false));
    settle(&mut pair, Duration::from_secs(30));
    let (_, c_write) = updated(&mut pair.client_events);
    let (s_read, _) = updated(&mut pair.server_events);
    assert_eq!(
        (c_write.len(), s_read.len()),
        (1, 1),
        "the lost KeyUpdate was resent and acknowledged: client {:?} server {:?}",
        pair.client_events,
        pair.server_events
    );
    let mut s_read = s_read;
    seal_open(c_write.into_iter().next().expect("w"), s_read.remove(0));
    assert_eq!(pair.client.poll_timeout(), None);
    // Key updates go on: a second one, requested both ways, moves both to epoch 5/4.
    pair.now += bound * 3;
    assert!(pair.client.update_keys(pair.now, true));
    settle(&mut pair, Duration::from_secs(30));
    let (_, c_write) = updated(&mut pair.client_events);
    let (s_read, s_write) = updated(&mut pair.server_events);
    let epochs = |v: &Vec<crate::EpochKeys13>| v.iter().map(|k| k.epoch).collect::<Vec<_>>();
    assert_eq!(
        (epochs(&c_write), epochs(&s_read), epochs(&s_write)),
        (vec![5], vec![5], vec![4])
    );
    assert!(pair.client.is_established() && !pair.client.is_finished());
}

/// RFC 9147 §8: a KeyUpdate that the peer never acknowledges (it went silent: every copy
/// lost, through the whole retransmission budget, on the virtual clock) fails the
/// connection with a timeout, once, instead of leaving the update pending forever (no key
/// update possible again, the old keys in use past the point we meant to retire them).
#[test]
fn a_key_update_never_acknowledged_fails_the_connection() {
    let mut pair = settled_x25519_pair();
    assert!(pair.client.is_established());
    pair.client_events.clear();
    // The server hears nothing from the client anymore.
    pair.filter = Box::new(|from_client, _| !from_client);
    pair.now += Duration::from_secs(60);
    let sent = pair.client.stats().datagrams_sent;
    assert!(pair.client.update_keys(pair.now, false));
    // Backing off to 60 s per copy: an hour covers the default ten retransmissions.
    settle(&mut pair, Duration::from_secs(3600));
    let copies = pair.client.stats().datagrams_sent - sent;
    assert!(copies > 10, "resent through its budget: {copies} datagrams");
    assert!(
        pair.client.is_finished(),
        "state {}",
        pair.client.state_name()
    );
    let failures: Vec<_> = pair
        .client_events
        .iter()
        .filter(|e| matches!(e, Event::HandshakeFailed(_)))
        .collect();
    assert!(
        matches!(
            failures[..],
            [Event::HandshakeFailed(crate::HandshakeError::Timeout {
                state: "KeyUpdate unacknowledged",
                ..
            })]
        ),
        "{:?}",
        pair.client_events
    );
    assert_eq!(pair.client.poll_timeout(), None, "nothing left to resend");
    assert!(!pair.client.update_keys(pair.now, false));
}

// ---------- external PSK (psk_dhe_ke) ----------

pub(super) fn psk(identity: &[u8], key: u8) -> crate::Psk {
    crate::Psk {
        identity: identity.to_vec(),
        key: zeroize::Zeroizing::new(vec![key; 32]),
    }
}

pub(super) fn psk_client(key: u8) -> Config {
    Config {
        psks: vec![psk(b"client13", key)],
        tls13_groups: vec![NamedGroup::X25519],
        ..Config::new(crate::PeerVerifier::RejectAll).dtls13_only()
    }
}

pub(super) fn psk_server() -> Config {
    Config {
        psks: vec![psk(b"other", 1), psk(b"client13", 7)],
        ..server13()
    }
}

#[test]
fn an_external_psk_authenticates_both_sides_with_and_without_a_hello_retry_request() {
    for settings in [AcceptorConfig::default(), no_cookie()] {
        let (_, version) = negotiate(psk_client(7), psk_server(), settings);
        assert_eq!(version, ProtocolVersion::Dtls1_3);
    }
    let mut pair =
        Pair::with_acceptor(psk_client(7), psk_server(), None, AcceptorConfig::default());
    settle(&mut pair, Duration::from_secs(10));
    let (ck, sk) = keys(&mut pair);
    assert_eq!(ck.peer_identity, PeerIdentity::Psk(b"client13".to_vec()));
    assert_eq!(sk.peer_identity, PeerIdentity::Psk(b"client13".to_vec()));
    check_app_data(*ck, *sk);
}

#[test]
fn an_external_psk_after_the_engine_s_own_hello_retry_request() {
    let mut server = psk_server();
    server.tls13_groups = vec![NamedGroup::Secp256r1];
    let mut client = psk_client(7);
    client.tls13_groups = vec![NamedGroup::X25519, NamedGroup::Secp256r1];
    let (_, version) = negotiate(client, server, no_cookie());
    assert_eq!(version, ProtocolVersion::Dtls1_3);
}

#[test]
fn a_wrong_psk_fails_the_binder_with_decrypt_error() {
    let mut pair =
        Pair::with_acceptor(psk_client(8), psk_server(), None, AcceptorConfig::default());
    pair.run(Duration::from_secs(10));
    assert!(
        pair.server_events
            .iter()
            .any(|e| matches!(e, Event::HandshakeFailed(HandshakeError::BadFinished))),
        "{:?}",
        pair.server_events
    );
    assert!(
        pair.client_events.iter().any(|e| matches!(
            e,
            Event::HandshakeFailed(HandshakeError::PeerAlert {
                description: dtls_proto::AlertDescription::DecryptError
            })
        )),
        "{:?}",
        pair.client_events
    );
}

#[test]
fn an_unknown_psk_identity_falls_back_to_certificates() {
    let client = Config {
        psks: vec![psk(b"stranger", 7)],
        ..client13()
    };
    let (ck, sk, _) = complete(client, psk_server());
    assert!(matches!(ck.peer_identity, PeerIdentity::Certificates(_)));
    assert_eq!(sk.peer_identity, PeerIdentity::None);
}

// ---------- settling after the handshake ----------

/// `Connection::settle` on a server whose session lives on: before it, a client Finished
/// retransmitted (its ACK lost) is answered with an ACK (RFC 9147 §7); after it the
/// handshake epoch is gone and the copy is dropped unanswered, while the session's
/// post-handshake messages (a KeyUpdate both ways) still work.
#[test]
fn a_settled_server_no_longer_answers_a_retransmitted_finished_but_still_updates_keys() {
    use std::cell::Cell;
    use std::rc::Rc;
    let mut pair = pair(client13(), server13());
    // Everything of the server's after the client's Finished (its ACK) is lost.
    let finished_sent = Rc::new(Cell::new(false));
    let seen = Rc::clone(&finished_sent);
    pair.filter = Box::new(move |from_client, d| {
        // A unified header (001CSLEE) in the handshake epoch (EE = 2).
        if from_client && d.first().is_some_and(|b| b & 0xe0 == 0x20 && b & 0x03 == 2) {
            seen.set(true);
        }
        from_client || !seen.get()
    });
    assert!(
        !pair.client.settle(),
        "a handshake in progress does not settle"
    );
    pair.run(Duration::from_secs(10));
    assert!(pair.client.is_established() && finished_sent.get());
    assert!(
        !pair.client.settle(),
        "the client's Finished awaits its ACK"
    );
    let _ = keys(&mut pair);
    let wall = pair.wall;
    let mut buf = vec![0u8; 2048];
    // The client's timer resends its Finished (a new record number each time).
    let mut resend = |pair: &mut Pair| {
        let at = pair
            .client
            .poll_timeout()
            .expect("the Finished's timer runs");
        pair.now = at;
        pair.client.handle_timeout(at);
        let t = pair
            .client
            .poll_transmit(at, &mut buf)
            .expect("Finished resent");
        buf[..t.len].to_vec()
    };
    let first = resend(&mut pair);
    let second = resend(&mut pair);
    let now = pair.now;
    let server = pair.server.as_mut().expect("server");
    let client_addr = server.peer();
    let mut out = vec![0u8; 2048];

    server.handle_datagram(now, wall, client_addr, &first);
    let ack = server
        .poll_transmit(now, &mut out)
        .map(|t| out[..t.len].to_vec())
        .expect("in the grace period a retransmitted Finished gets an ACK");
    assert!(server.poll_transmit(now, &mut out).is_none());

    assert!(
        server.settle(),
        "established, nothing of ours unacknowledged"
    );
    server.handle_datagram(now, wall, client_addr, &second);
    assert!(
        server.poll_transmit(now, &mut out).is_none(),
        "a settled server drops the handshake epoch's records unanswered"
    );
    assert!(server.is_established());
    // The first answer reaches the client: its final flight is done.
    let server_addr = pair.client.peer();
    pair.client.handle_datagram(now, wall, server_addr, &ack);
    assert_eq!(pair.client.poll_timeout(), None, "the client took the ACK");
    pair.filter = Box::new(|_, _| true);

    // The session goes on: the client updates its keys and asks the server to.
    let later = now + Duration::from_secs(10);
    pair.now = later;
    assert!(pair.client.update_keys(later, true));
    settle(&mut pair, Duration::from_secs(10));
    let (server_read, server_write) = updated(&mut pair.server_events);
    let (client_read, client_write) = updated(&mut pair.client_events);
    assert_eq!(
        (server_read.len(), server_write.len()),
        (1, 1),
        "the settled server took the client's KeyUpdate and sent its own"
    );
    seal_open(
        client_write.into_iter().next().expect("client write"),
        server_read.into_iter().next().expect("server read"),
    );
    seal_open(
        server_write.into_iter().next().expect("server write"),
        client_read.into_iter().next().expect("client read"),
    );
}

#[test]
fn a_dtls12_engine_never_settles() {
    let (_, _, mut pair) = {
        let mut p = Pair::with_acceptor(
            crate::pair_tests::client_config(&[CipherSuite::EcdheEcdsaAes128GcmSha256]),
            crate::pair_tests::server_config(&[CipherSuite::EcdheEcdsaAes128GcmSha256], false),
            None,
            no_cookie(),
        );
        p.run(Duration::from_secs(10));
        let (c, s) = keys(&mut p);
        (c, s, p)
    };
    assert!(pair.client.is_established());
    assert!(!pair.client.settle());
    assert!(!pair.server.as_mut().expect("server").settle());
}

/// RFC 9147 §8: "KeyUpdates MUST be acknowledged". A client that updates its keys five
/// times without asking the server to update its own sends its second KeyUpdate in epoch
/// 4 while the server still writes in epoch 3: the server acknowledges it anyway (RFC 9147
/// §7 ties the ACK's epoch to the acknowledged record's during the handshake only). Before
/// the fix the server left it out of its ACK, and the client resent it until it gave up.
#[test]
fn consecutive_key_updates_are_each_acknowledged_while_the_peer_keeps_its_epoch() {
    let mut pair = settled_x25519_pair();
    for round in 0..5u64 {
        assert!(pair.client.update_keys(pair.now, false), "update {round}");
        settle(&mut pair, Duration::from_secs(30));
        let (_, c_write) = updated(&mut pair.client_events);
        let (s_read, s_write) = updated(&mut pair.server_events);
        let epochs = |v: &Vec<crate::EpochKeys13>| v.iter().map(|k| k.epoch).collect::<Vec<_>>();
        assert_eq!(
            (epochs(&c_write), epochs(&s_read), epochs(&s_write)),
            (vec![4 + round], vec![4 + round], vec![]),
            "update {round}"
        );
        let mut s_read = s_read;
        seal_open(c_write.into_iter().next().expect("w"), s_read.remove(0));
    }
    assert_eq!(pair.client.poll_timeout(), None, "nothing left to resend");
}
