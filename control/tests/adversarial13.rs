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

/// HRR cookie replay from another address (RFC 9147 §5.1: the cookie proves the client
/// can receive at its address): a ClientHello carrying a valid cookie issued to address A
/// but sent from address B is refused, with no ServerHello and no engine; from A the same
/// datagram is accepted. Whatever B gets back is no larger than what B sent.
#[test]
fn hrr_cookie_replay_from_another_address_is_refused() {
    let now = Instant::now();
    let mut rng = SeededRng::new(1);
    let server = dtls13_server_config();
    let mut acc = Acceptor::new(Arc::new(server), AcceptorConfig::default(), &mut rng, now)
        .expect("valid config");
    let client_config = Config {
        server_name: Some("localhost".into()),
        tls13_groups: vec![NamedGroup::X25519],
        ..Config::new(ca_verifier()).dtls13_only()
    };
    let server_addr = server_addr();
    let a = client_addr();
    let b: SocketAddr = "10.9.8.7:5555".parse().expect("addr");
    assert_ne!(a, b);
    let mut client = Connection::client(
        Arc::new(client_config),
        Box::new(SeededRng::new(9)),
        now,
        server_addr,
        None,
    )
    .expect("client");
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
