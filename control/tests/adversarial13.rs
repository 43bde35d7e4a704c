//! DTLS 1.3 adversarial shapes an off-path attacker can send without keys, at engine level
//! over the public API (TESTING.md "Adversarial", issue 18). The shapes that need a
//! malicious authenticated peer (forged ACKs, KeyUpdate and RequestConnectionId floods,
//! retired epochs, a spoofed HelloRetryRequest on a live session) are engine unit tests in
//! `control/src/tls13/adversarial_tests.rs`; docs/adversarial.md maps both.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use control::crypto::SeededRng;
use control::{AcceptOutcome, Acceptor, AcceptorConfig, Config, Connection, NamedGroup};
use support::fixtures::*;

/// The acceptor of a DTLS 1.3 server (test PKI, cookie secret from seed 1) and a fresh
/// DTLS 1.3 client engine of ours offering `groups`, both at `now`.
fn acceptor_and_client13(now: Instant, groups: Vec<NamedGroup>) -> (Acceptor, Connection) {
    let acc = Acceptor::new(
        Arc::new(dtls13_server_config()),
        AcceptorConfig::default(),
        &mut SeededRng::new(1),
        now,
    )
    .expect("valid config");
    let client_config = Config {
        server_name: Some("localhost".into()),
        tls13_groups: groups,
        ..Config::new(ca_verifier()).dtls13_only()
    };
    let client = Connection::client(
        Arc::new(client_config),
        Box::new(SeededRng::new(9)),
        now,
        server_addr(),
        None,
    )
    .expect("client");
    (acc, client)
}

/// HRR cookie replay from another address (RFC 9147 §5.1: the cookie proves the client
/// can receive at its address): a ClientHello carrying a valid cookie issued to address A
/// but sent from address B is refused, with no ServerHello and no engine; from A the same
/// datagram is accepted. Whatever B gets back is no larger than what B sent.
#[test]
fn hrr_cookie_replay_from_another_address_is_refused() {
    let now = Instant::now();
    let (mut acc, mut client) = acceptor_and_client13(now, vec![NamedGroup::X25519]);
    let server_addr = server_addr();
    let a = client_addr();
    let b: SocketAddr = "10.9.8.7:5555".parse().expect("addr");
    assert_ne!(a, b);
    let mut buf = vec![0u8; 4096];
    let first = client
        .poll_transmit(now, &mut buf)
        .map(|t| buf[..t.len].to_vec())
        .expect("ClientHello");
    let mut reply = vec![0u8; 4096];
    let hrr = match acc.handle_datagram(now, a, &first, &mut reply) {
        AcceptOutcome::Reply(t) => reply[..t.len].to_vec(),
        other => panic!("expected a HelloRetryRequest, got {other:?}"),
    };
    client.handle_datagram(now, test_wall(), server_addr, &hrr);
    let second = client
        .poll_transmit(now, &mut buf)
        .map(|t| buf[..t.len].to_vec())
        .expect("the second ClientHello, with the cookie");
    assert!(client.poll_transmit(now, &mut buf).is_none());
    // From B (the attacker replaying A's cookie), again and again: never accepted.
    for _ in 0..3 {
        match acc.handle_datagram(now, b, &second, &mut reply) {
            AcceptOutcome::Accept(_) => panic!("a cookie issued to {a} accepted from {b}"),
            AcceptOutcome::Reply(t) => {
                assert!(t.len <= second.len(), "amplification toward {b}");
                // At most a fresh stateless HelloRetryRequest (a ServerHello-typed message
                // with the HRR random), never the handshake going on: no engine exists.
                assert_eq!(reply[13], 2, "a ServerHello-typed message");
                assert_eq!(
                    reply[13 + 12 + 2..][..4],
                    [0xcf, 0x21, 0xad, 0x74],
                    "with the HelloRetryRequest random (RFC 8446 §4.1.3)"
                );
            }
            AcceptOutcome::Drop(_) => {}
        }
    }
    // Each replay is counted (`dtlsd_cookies_rejected_total`).
    assert_eq!(acc.cookies_rejected(), 3);
    // From A, the cookie's own address, the same datagram is accepted.
    assert!(
        matches!(
            acc.handle_datagram(now, a, &second, &mut reply),
            AcceptOutcome::Accept(_)
        ),
        "the cookie verifies for its own address"
    );
    assert_eq!(acc.cookies_rejected(), 3);
}

/// Every datagram `conn` has to send now.
fn transmit_all(conn: &mut Connection, now: Instant) -> Vec<Vec<u8>> {
    let mut buf = vec![0u8; 4096];
    std::iter::from_fn(|| {
        conn.poll_transmit(now, &mut buf)
            .map(|t| buf[..t.len].to_vec())
    })
    .collect()
}

/// Expensive asymmetric crypto only after the cookie (RFC 9147 §5.1: the cookie exchange
/// proves the client receives at its address before the server commits to the
/// handshake), DTLS 1.3: the first ClientHello (X25519 alone in one datagram, and the
/// default hybrid X25519MLKEM768 fragmented over several), sent 50 times, gets stateless
/// HelloRetryRequests; the second one, carrying the cookie, replayed 50 times from
/// another address, gets no engine; the acceptor's verdict on the real one is Accept.
/// Through all of it this thread generates no key share, runs no encapsulation and makes
/// no signature (`control::crypto::asymmetric_ops`). Only the server engine built from the
/// verified hello does: its key share and the CertificateVerify signature.
#[test]
fn expensive_asymmetric_crypto_runs_only_after_the_dtls13_cookie() {
    for groups in [
        vec![NamedGroup::X25519],
        Config::new(ca_verifier()).tls13_groups,
    ] {
        let now = Instant::now();
        let server = Arc::new(dtls13_server_config());
        let (mut acc, mut client) = acceptor_and_client13(now, groups.clone());
        let (a, b) = (client_addr(), "10.9.8.7:5555".parse().expect("addr"));
        let first = transmit_all(&mut client, now);
        let mut reply = vec![0u8; 4096];
        // The client's own key share is made; from here on the server side runs alone.
        let before = control::crypto::asymmetric_ops();
        let mut hrr = None;
        for _ in 0..50 {
            for d in &first {
                match acc.handle_datagram(now, a, d, &mut reply) {
                    AcceptOutcome::Reply(t) => hrr = Some(reply[..t.len].to_vec()),
                    AcceptOutcome::Drop(_) => {}
                    AcceptOutcome::Accept(_) => panic!("{groups:?}: accepted without a cookie"),
                }
            }
        }
        assert_eq!(
            control::crypto::asymmetric_ops(),
            before,
            "{groups:?}: asymmetric crypto for a hello without a cookie"
        );
        let hrr = hrr.expect("a HelloRetryRequest");
        client.handle_datagram(now, test_wall(), server_addr(), &hrr);
        let second = transmit_all(&mut client, now);
        assert!(!second.is_empty(), "{groups:?}: the second ClientHello");
        let before = control::crypto::asymmetric_ops();
        for _ in 0..50 {
            for d in &second {
                if let AcceptOutcome::Accept(_) = acc.handle_datagram(now, b, d, &mut reply) {
                    panic!("{groups:?}: a cookie for {a} accepted from {b}");
                }
            }
        }
        let mut accepted = None;
        for d in &second {
            if let AcceptOutcome::Accept(hello) = acc.handle_datagram(now, a, d, &mut reply) {
                accepted = Some(hello);
            }
        }
        let hello = accepted.expect("the cookie verifies for its own address");
        assert_eq!(
            control::crypto::asymmetric_ops(),
            before,
            "{groups:?}: asymmetric crypto before an engine exists"
        );
        // The engine behind the cookie does the work: one key share (ECDHE, or the hybrid's
        // encapsulation and X25519 half) and one signature, for its first flight.
        let mut server_conn =
            Connection::server(server, Box::new(SeededRng::new(3)), now, test_wall(), hello)
                .expect("server engine");
        let flight = transmit_all(&mut server_conn, now);
        assert!(!flight.is_empty(), "{groups:?}: the server's first flight");
        let after = control::crypto::asymmetric_ops();
        assert!(
            after.key_exchanges > before.key_exchanges,
            "{groups:?}: {after:?}"
        );
        assert_eq!(
            after.signatures,
            before.signatures + 1,
            "{groups:?}: {after:?}"
        );
    }
}

/// A DTLSPlaintext record (RFC 9147 §4: type, legacy version {254, 253}, epoch,
/// sequence_number(48), length).
fn plaintext_record(content_type: u8, epoch: u16, sequence: u64, payload: &[u8]) -> Vec<u8> {
    let mut r = vec![content_type, 0xfe, 0xfd];
    r.extend_from_slice(&epoch.to_be_bytes());
    r.extend_from_slice(&sequence.to_be_bytes()[2..]);
    r.extend_from_slice(&u16::try_from(payload.len()).expect("short").to_be_bytes());
    r.extend_from_slice(payload);
    r
}

/// A whole handshake message (RFC 9147 §5.2 header) of `msg_type`.
fn handshake_message(msg_type: u8, message_seq: u16, body: &[u8]) -> Vec<u8> {
    let len = u32::try_from(body.len()).expect("short").to_be_bytes();
    let mut m = vec![msg_type];
    m.extend_from_slice(&len[1..]);
    m.extend_from_slice(&message_seq.to_be_bytes());
    m.extend_from_slice(&[0, 0, 0]);
    m.extend_from_slice(&len[1..]);
    m.extend_from_slice(body);
    m
}

/// What an off-path attacker can send as the first message of a DTLS 1.3 exchange:
/// a plaintext Finished (epoch 0 and epoch 2 in the plaintext header), a
/// ChangeCipherSpec, plaintext application data, and unified-header records (RFC 9147
/// §4) of the handshake and application epochs with garbage ciphertext.
fn first_messages() -> Vec<(&'static str, Vec<u8>)> {
    let finished = handshake_message(20, 0, &[0x11; 32]);
    vec![
        ("Finished", plaintext_record(22, 0, 0, &finished)),
        ("Finished, epoch 2", plaintext_record(22, 2, 0, &finished)),
        ("ChangeCipherSpec", plaintext_record(20, 0, 0, &[1])),
        (
            "application data",
            plaintext_record(23, 0, 1, b"canary plaintext"),
        ),
        (
            "application data, epoch 3",
            plaintext_record(23, 3, 0, b"canary plaintext"),
        ),
        // 001CSLEE: no CID, 16-bit sequence, length present; epochs 2 and 3.
        (
            "protected, epoch 2",
            [&[0x2e, 0, 0, 0, 40][..], &[0x5a; 40]].concat(),
        ),
        (
            "protected, epoch 3",
            [&[0x2f, 0, 0, 0, 40][..], &[0x5a; 40]].concat(),
        ),
    ]
}

/// ChangeCipherSpec, Finished or application data as the first message, DTLS 1.3 (RFC 9147
/// §5: the handshake starts with a ClientHello; RFC 8446 §5: records of a type not yet
/// allowed are not taken): a server's acceptor answers none of them and builds no engine,
/// and then the real ClientHello still gets its HelloRetryRequest; a client waiting for
/// its ServerHello takes none of them (no keys, no failure, no answer) and then takes
/// that HelloRetryRequest and sends its second ClientHello.
#[test]
fn change_cipher_spec_finished_or_application_data_as_the_first_dtls13_message_changes_nothing() {
    let now = Instant::now();
    let (mut acc, mut client) = acceptor_and_client13(now, vec![NamedGroup::X25519]);
    let hello = transmit_all(&mut client, now);
    let mut reply = vec![0u8; 4096];
    for (what, d) in first_messages() {
        for _ in 0..10 {
            match acc.handle_datagram(now, client_addr(), &d, &mut reply) {
                AcceptOutcome::Drop(_) => {}
                other => panic!("{what} as the first message to a server: {other:?}"),
            }
            client.handle_datagram(now, test_wall(), server_addr(), &d);
            assert!(
                transmit_all(&mut client, now).is_empty(),
                "{what}: answered"
            );
            assert!(!client.is_established() && !client.is_finished(), "{what}");
            if let Some(e) = client.poll_event() {
                panic!("{what}: the client took it: {e:?}");
            }
        }
    }
    assert_eq!(acc.hello_pool_len(), 0);
    let hrr = match acc.handle_datagram(now, client_addr(), &hello[0], &mut reply) {
        AcceptOutcome::Reply(t) => reply[..t.len].to_vec(),
        other => panic!("the real ClientHello: {other:?}"),
    };
    client.handle_datagram(now, test_wall(), server_addr(), &hrr);
    let second = transmit_all(&mut client, now);
    assert_eq!(second.len(), 1, "the second ClientHello");
    assert!(matches!(
        acc.handle_datagram(now, client_addr(), &second[0], &mut reply),
        AcceptOutcome::Accept(_)
    ));
}

/// Where the cookie extension (RFC 8446 §4.2.2, type 44) sits in a ClientHello datagram
/// of one record and one whole message: (offset of its extension_data length field,
/// offset of the extensions block length field).
fn cookie_extension(datagram: &[u8]) -> (usize, usize) {
    let u16_at = |at: usize| usize::from(u16::from_be_bytes([datagram[at], datagram[at + 1]]));
    // Record header 13, handshake header 12, legacy_version 2, random 32.
    let mut at = 13 + 12 + 2 + 32;
    at += 1 + usize::from(datagram[at]); // legacy_session_id
    at += 1 + usize::from(datagram[at]); // legacy_cookie (DTLS)
    at += 2 + u16_at(at); // cipher_suites
    at += 1 + usize::from(datagram[at]); // legacy_compression_methods
    let extensions = at;
    let end = at + 2 + u16_at(at);
    at += 2;
    while at < end {
        if u16_at(at) == 44 {
            return (at + 2, extensions);
        }
        at += 4 + u16_at(at + 2);
    }
    panic!("no cookie extension");
}

/// `datagram` with the cookie extension's data replaced by `data`, every length around it
/// (extensions block, handshake message and fragment, record) made to agree.
fn with_cookie_data(datagram: &[u8], data: &[u8]) -> Vec<u8> {
    let (ext_len_at, extensions_at) = cookie_extension(datagram);
    let u16_at = |at: usize| usize::from(u16::from_be_bytes([datagram[at], datagram[at + 1]]));
    let old = u16_at(ext_len_at);
    let mut d = datagram[..ext_len_at].to_vec();
    d.extend_from_slice(&u16::try_from(data.len()).expect("short").to_be_bytes());
    d.extend_from_slice(data);
    d.extend_from_slice(&datagram[ext_len_at + 2 + old..]);
    let grow = |d: &mut Vec<u8>, at: usize, width: usize| {
        let mut v = [0u8; 4];
        v[4 - width..].copy_from_slice(&d[at..at + width]);
        let n = (u32::from_be_bytes(v) as usize + data.len()) - old;
        d[at..at + width].copy_from_slice(&(n as u32).to_be_bytes()[4 - width..]);
    };
    grow(&mut d, extensions_at, 2);
    grow(&mut d, 11, 2); // record length
    grow(&mut d, 13 + 1, 3); // handshake length
    grow(&mut d, 13 + 9, 3); // fragment length
    d
}

/// Cookie lengths 0, 2^16 − 1 and past the extension, DTLS 1.3 (RFC 8446 §4.2.2: `opaque
/// cookie<1..2^16-1>`): the client's real second ClientHello with its cookie extension
/// rewritten: an empty cookie, a cookie length of 2^16 − 1 inside a short extension, an
/// extension length running past the extensions block, a cookie one byte short of its
/// length field, a cookie of 1 000 random bytes, and the real cookie with one byte more.
/// None is accepted, no answer is larger than what came in, and none costs any
/// asymmetric crypto; the real hello is then accepted.
#[test]
fn dtls13_cookie_lengths_0_max_and_past_the_extension_are_refused() {
    let now = Instant::now();
    let (mut acc, mut client) = acceptor_and_client13(now, vec![NamedGroup::X25519]);
    let first = transmit_all(&mut client, now);
    let mut reply = vec![0u8; 4096];
    let AcceptOutcome::Reply(t) = acc.handle_datagram(now, client_addr(), &first[0], &mut reply)
    else {
        panic!("a HelloRetryRequest");
    };
    client.handle_datagram(now, test_wall(), server_addr(), &reply[..t.len]);
    let second = transmit_all(&mut client, now).remove(0);
    let (ext_len_at, extensions_at) = cookie_extension(&second);
    let ext_len = usize::from(u16::from_be_bytes([
        second[ext_len_at],
        second[ext_len_at + 1],
    ]));
    let cookie = second[ext_len_at + 4..ext_len_at + 2 + ext_len].to_vec();
    let set = |at: usize, value: u16| {
        let mut d = second.clone();
        d[at..at + 2].copy_from_slice(&value.to_be_bytes());
        d
    };
    let shapes = [
        ("empty cookie", with_cookie_data(&second, &[0, 0])),
        ("cookie length 2^16 - 1", set(ext_len_at + 2, u16::MAX)),
        (
            "cookie length 0 in a full extension",
            set(ext_len_at + 2, 0),
        ),
        ("extension past the block", set(ext_len_at, u16::MAX)),
        (
            "extensions block past the message",
            set(extensions_at, u16::MAX),
        ),
        (
            "cookie one byte short",
            with_cookie_data(
                &second,
                &[&((cookie.len() + 1) as u16).to_be_bytes()[..], &cookie[..]].concat(),
            ),
        ),
        (
            "1000 random bytes",
            with_cookie_data(
                &second,
                &[&1000u16.to_be_bytes()[..], &[0x5a; 1000][..]].concat(),
            ),
        ),
        (
            "the cookie and one byte more",
            with_cookie_data(
                &second,
                &[
                    &((cookie.len() + 1) as u16).to_be_bytes()[..],
                    &cookie[..],
                    &[0][..],
                ]
                .concat(),
            ),
        ),
    ];
    let before = control::crypto::asymmetric_ops();
    for (what, d) in &shapes {
        assert_ne!(d, &second, "{what}");
        match acc.handle_datagram(now, client_addr(), d, &mut reply) {
            AcceptOutcome::Accept(_) => panic!("{what}: accepted"),
            AcceptOutcome::Reply(t) => assert!(t.len <= d.len(), "{what}: amplification"),
            AcceptOutcome::Drop(_) => {}
        }
    }
    assert_eq!(control::crypto::asymmetric_ops(), before);
    // The helper rebuilds the real hello exactly from its own cookie.
    let same = with_cookie_data(
        &second,
        &[&(cookie.len() as u16).to_be_bytes()[..], &cookie[..]].concat(),
    );
    assert_eq!(same, second);
    assert!(matches!(
        acc.handle_datagram(now, client_addr(), &second, &mut reply),
        AcceptOutcome::Accept(_)
    ));
}
