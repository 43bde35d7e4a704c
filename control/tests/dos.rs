//! The stateless cookie front door under spoofing (TESTING.md "DoS / amplification"):
//! spoofed ClientHellos of every size never get more bytes back than they carried and never
//! create an engine; forged, moved, altered and expired cookies are refused, a cookie from
//! the previous secret is still accepted within the rotation overlap.

mod support;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use control::crypto::SeededRng;
use control::{AcceptOutcome, Acceptor, AcceptorConfig, CipherSuite, Connection, Event};
use support::channel::SimRng;
use support::fixtures::*;
use support::wire::*;

const ECDSA: CipherSuite = CipherSuite::EcdheEcdsaAes128GcmSha256;

fn acceptor(now: Instant) -> Acceptor {
    let mut rng = SeededRng::new(42);
    Acceptor::new(
        Arc::new(server_config(&[ECDSA])),
        AcceptorConfig::default(),
        &mut rng,
        now,
    )
    .expect("valid config")
}

fn spoofed_addr(rng: &mut SimRng) -> SocketAddr {
    let ip = Ipv4Addr::from((rng.next_u64() as u32) | 0x0100_0000);
    SocketAddr::new(IpAddr::V4(ip), 1024 + (rng.below(60_000) as u16))
}

/// A ClientHello padded with an unknown extension to reach `size` bytes on the wire.
fn hello_of_size(seed: u8, size: usize) -> Vec<u8> {
    let mut h = ClientHelloSpec::typical(seed);
    let base = h.datagram(DTLS_1_2, 0, 0).len();
    if size > base + 4 {
        h.extensions.push((0xfe00, vec![0x5a; size - base - 4]));
    }
    h.datagram(DTLS_1_2, 0, 0)
}

#[test]
fn spoofed_client_hellos_of_every_size_are_answered_with_at_most_as_many_bytes() {
    let now = Instant::now();
    let acc = acceptor(now);
    let mut rng = SimRng::new(7);
    let mut buf = vec![0u8; 4096];
    let (mut bytes_in, mut bytes_out, mut replies, mut drops) = (0usize, 0usize, 0usize, 0usize);
    let minimal = {
        let mut h = ClientHelloSpec::typical(0);
        h.extensions.clear();
        h.cipher_suites = vec![0xc02b];
        h.datagram(DTLS_1_2, 0, 0)
    };
    let mut datagrams = vec![minimal];
    for size in (80..=1400).step_by(7) {
        datagrams.push(hello_of_size(size as u8, size));
    }
    // Garbage of every size from 0 to 200 bytes, and truncations of a real hello.
    let full = hello_of_size(1, 300);
    for n in 0..=200usize {
        datagrams.push((0..n).map(|i| (i * 31 + n) as u8).collect());
        datagrams.push(full[..n.min(full.len())].to_vec());
    }
    for dg in &datagrams {
        for _ in 0..5 {
            let from = spoofed_addr(&mut rng);
            bytes_in += dg.len();
            match acc.handle_datagram(now, from, dg, &mut buf) {
                AcceptOutcome::Reply(t) => {
                    assert_eq!(t.destination, from);
                    assert!(
                        t.len <= dg.len(),
                        "{} B answered with {} B",
                        dg.len(),
                        t.len
                    );
                    bytes_out += t.len;
                    replies += 1;
                }
                AcceptOutcome::Drop(_) => drops += 1,
                AcceptOutcome::Accept(_) => panic!("a spoofed ClientHello created an engine"),
            }
        }
    }
    let ratio = bytes_out as f64 / bytes_in as f64;
    println!(
        "spoofed hellos: {} datagrams, {replies} HelloVerifyRequests/alerts, {drops} dropped; \
         bytes out/in = {bytes_out}/{bytes_in} = {ratio:.3}; engines created: 0",
        datagrams.len() * 5
    );
    assert!(replies > 0 && ratio <= 1.0);
}

fn cookie_from(reply: &[u8]) -> Vec<u8> {
    let recs = split_records(reply).0;
    let f = &recs[0].handshake_fragments()[0];
    assert_eq!(f.msg_type, HT_HELLO_VERIFY_REQUEST);
    hello_verify_cookie(&f.body).expect("cookie")
}

fn outcome(acc: &Acceptor, now: Instant, from: SocketAddr, dg: &[u8]) -> (&'static str, Vec<u8>) {
    let mut buf = vec![0u8; 4096];
    match acc.handle_datagram(now, from, dg, &mut buf) {
        AcceptOutcome::Reply(t) => ("reply", buf[..t.len].to_vec()),
        AcceptOutcome::Drop(_) => ("drop", Vec::new()),
        AcceptOutcome::Accept(h) => {
            assert_eq!(h.peer(), from);
            ("accept", Vec::new())
        }
    }
}

#[test]
fn forged_moved_altered_and_expired_cookies_are_refused() {
    let t0 = Instant::now();
    let mut acc = acceptor(t0);
    let a: SocketAddr = "198.51.100.1:4000".parse().expect("address literal");
    let b: SocketAddr = "198.51.100.2:4000".parse().expect("address literal");
    let mut hello = ClientHelloSpec::typical(3);
    let (kind, reply) = outcome(&acc, t0, a, &hello.datagram(DTLS_1_2, 0, 0));
    assert_eq!(kind, "reply");
    let cookie = cookie_from(&reply);
    assert!(!cookie.is_empty());
    hello.cookie = cookie.clone();
    let good = hello.datagram(DTLS_1_2, 1, 1);
    assert_eq!(outcome(&acc, t0, a, &good).0, "accept", "valid cookie");
    assert_eq!(
        outcome(&acc, t0, b, &good).0,
        "reply",
        "cookie moved to another address"
    );
    let other_port: SocketAddr = "198.51.100.1:4001".parse().expect("address literal");
    assert_eq!(
        outcome(&acc, t0, other_port, &good).0,
        "reply",
        "cookie moved to another port"
    );
    for i in 0..cookie.len() {
        let mut h = hello.clone();
        h.cookie[i] ^= 0x01;
        assert_eq!(
            outcome(&acc, t0, a, &h.datagram(DTLS_1_2, 1, 1)).0,
            "reply",
            "altered byte {i}"
        );
    }
    let mut forged = hello.clone();
    forged.cookie = vec![0x11; cookie.len()];
    assert_eq!(
        outcome(&acc, t0, a, &forged.datagram(DTLS_1_2, 1, 1)).0,
        "reply",
        "forged"
    );
    let mut short = hello.clone();
    short.cookie.truncate(cookie.len() - 1);
    assert_eq!(
        outcome(&acc, t0, a, &short.datagram(DTLS_1_2, 1, 1)).0,
        "reply",
        "truncated"
    );
    // The cookie binds the ClientHello parameters.
    let mut changed = hello.clone();
    changed.random[0] ^= 1;
    assert_eq!(
        outcome(&acc, t0, a, &changed.datagram(DTLS_1_2, 1, 1)).0,
        "reply",
        "other random"
    );
    let mut changed = hello.clone();
    changed.cipher_suites.reverse();
    assert_eq!(
        outcome(&acc, t0, a, &changed.datagram(DTLS_1_2, 1, 1)).0,
        "reply",
        "other suites"
    );
    // One rotation: the previous secret still works (overlap). Two: expired.
    let mut rng = SeededRng::new(9);
    let r1 = acc.poll_timeout().expect("rotation scheduled");
    acc.handle_timeout(r1, &mut rng);
    assert_eq!(
        outcome(&acc, r1, a, &good).0,
        "accept",
        "within the rotation overlap"
    );
    let r2 = acc.poll_timeout().expect("rotation scheduled");
    assert!(r2 > r1);
    acc.handle_timeout(r2, &mut rng);
    assert_eq!(outcome(&acc, r2, a, &good).0, "reply", "expired cookie");
}

#[test]
fn an_engine_exists_only_after_a_valid_cookie_and_only_then_does_crypto() {
    // Stateless: the acceptor takes `&self` for datagrams; measure its rate for spoofed
    // hellos next to a full server engine creation (which does ECDHE + signing).
    let now = Instant::now();
    let acc = acceptor(now);
    let dg = hello_of_size(1, 200);
    let from: SocketAddr = "203.0.113.5:999".parse().expect("address literal");
    let mut buf = vec![0u8; 2048];
    let n = 20_000;
    let t = Instant::now();
    for _ in 0..n {
        assert!(matches!(
            acc.handle_datagram(now, from, &dg, &mut buf),
            AcceptOutcome::Reply(_)
        ));
    }
    let per_hvr = t.elapsed() / n;
    // A cookie-verified hello creates an engine, which answers with its first flight.
    let cookie = match acc.handle_datagram(now, from, &dg, &mut buf) {
        AcceptOutcome::Reply(t) => cookie_from(&buf[..t.len]),
        other => panic!("{other:?}"),
    };
    let mut h = ClientHelloSpec::typical(1);
    h.cookie = cookie;
    let dg2 = h.datagram(DTLS_1_2, 1, 1);
    let hello = match acc.handle_datagram(now, from, &dg2, &mut buf) {
        AcceptOutcome::Accept(h) => h,
        other => panic!("{other:?}"),
    };
    let t = Instant::now();
    let mut conn = Connection::server(
        Arc::new(server_config(&[ECDSA])),
        Box::new(SeededRng::new(1)),
        now,
        test_wall(),
        hello,
    )
    .expect("config");
    let per_engine = t.elapsed();
    let mut flight = 0;
    while let Some(tx) = conn.poll_transmit(now, &mut buf) {
        flight += tx.len;
    }
    assert!(
        flight > dg2.len(),
        "server flight only after the cookie: {flight} B"
    );
    while let Some(ev) = conn.poll_event() {
        assert!(!matches!(ev, Event::HandshakeFailed(_)), "{ev:?}");
    }
    println!(
        "HelloVerifyRequest: {per_hvr:?} each ({:.0}/s, unoptimized build); server engine with \
         its first flight: {per_engine:?}",
        1.0 / per_hvr.as_secs_f64()
    );
    // The stateless reply must be far cheaper than the asymmetric crypto behind the cookie.
    assert!(
        per_hvr * 5 < per_engine,
        "HVR {per_hvr:?} vs engine {per_engine:?}"
    );
}
