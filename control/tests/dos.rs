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
    let mut acc = acceptor(now);
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

fn outcome(
    acc: &mut Acceptor,
    now: Instant,
    from: SocketAddr,
    dg: &[u8],
) -> (&'static str, Vec<u8>) {
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
    let (kind, reply) = outcome(&mut acc, t0, a, &hello.datagram(DTLS_1_2, 0, 0));
    assert_eq!(kind, "reply");
    let cookie = cookie_from(&reply);
    assert!(!cookie.is_empty());
    hello.cookie = cookie.clone();
    let good = hello.datagram(DTLS_1_2, 1, 1);
    assert_eq!(outcome(&mut acc, t0, a, &good).0, "accept", "valid cookie");
    assert_eq!(
        outcome(&mut acc, t0, b, &good).0,
        "reply",
        "cookie moved to another address"
    );
    let other_port: SocketAddr = "198.51.100.1:4001".parse().expect("address literal");
    assert_eq!(
        outcome(&mut acc, t0, other_port, &good).0,
        "reply",
        "cookie moved to another port"
    );
    for i in 0..cookie.len() {
        let mut h = hello.clone();
        h.cookie[i] ^= 0x01;
        assert_eq!(
            outcome(&mut acc, t0, a, &h.datagram(DTLS_1_2, 1, 1)).0,
            "reply",
            "altered byte {i}"
        );
    }
    let mut forged = hello.clone();
    forged.cookie = vec![0x11; cookie.len()];
    assert_eq!(
        outcome(&mut acc, t0, a, &forged.datagram(DTLS_1_2, 1, 1)).0,
        "reply",
        "forged"
    );
    let mut short = hello.clone();
    short.cookie.truncate(cookie.len() - 1);
    assert_eq!(
        outcome(&mut acc, t0, a, &short.datagram(DTLS_1_2, 1, 1)).0,
        "reply",
        "truncated"
    );
    // The cookie binds the ClientHello parameters.
    let mut changed = hello.clone();
    changed.random[0] ^= 1;
    assert_eq!(
        outcome(&mut acc, t0, a, &changed.datagram(DTLS_1_2, 1, 1)).0,
        "reply",
        "other random"
    );
    let mut changed = hello.clone();
    changed.cipher_suites.reverse();
    assert_eq!(
        outcome(&mut acc, t0, a, &changed.datagram(DTLS_1_2, 1, 1)).0,
        "reply",
        "other suites"
    );
    // One rotation: the previous secret still works (overlap). Two: expired.
    let mut rng = SeededRng::new(9);
    let r1 = acc.poll_timeout().expect("rotation scheduled");
    acc.handle_timeout(r1, &mut rng);
    assert_eq!(
        outcome(&mut acc, r1, a, &good).0,
        "accept",
        "within the rotation overlap"
    );
    let r2 = acc.poll_timeout().expect("rotation scheduled");
    assert!(r2 > r1);
    acc.handle_timeout(r2, &mut rng);
    assert_eq!(outcome(&mut acc, r2, a, &good).0, "reply", "expired cookie");
    // Every refusal above carried a cookie, and each is counted
    // (`dtlsd_cookies_rejected_total`): moved twice, each altered byte, forged, truncated,
    // the two changed hellos, expired. The first hello had none: not a rejection.
    assert_eq!(acc.cookies_rejected(), 2 + cookie.len() as u64 + 2 + 2 + 1);
}

#[test]
fn an_engine_exists_only_after_a_valid_cookie_and_only_then_does_crypto() {
    // Stateless: the acceptor takes `&self` for datagrams; measure its rate for spoofed
    // hellos next to a full server engine creation (which does ECDHE + signing).
    let now = Instant::now();
    let mut acc = acceptor(now);
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

/// A ClientHello padded to about `size` body bytes, split into fragments of `max` body bytes
/// each in their own datagram (records numbered from `sequence`).
fn fragmented_hello(
    spec: &ClientHelloSpec,
    message_seq: u16,
    sequence: u64,
    max: usize,
) -> Vec<Vec<u8>> {
    let whole = RawFragment::whole(HT_CLIENT_HELLO, message_seq, spec.body());
    whole
        .split(max)
        .iter()
        .enumerate()
        .map(|(i, f)| handshake_datagram(sequence + i as u64, DTLS_1_2, std::slice::from_ref(f)))
        .collect()
}

fn padded(seed: u8, body_bytes: usize) -> ClientHelloSpec {
    let mut h = ClientHelloSpec::typical(seed);
    let base = h.body().len();
    h.extensions
        .push((0xfe00, vec![0x5a; body_bytes.saturating_sub(base + 4)]));
    h
}

#[test]
fn a_fragmented_client_hello_is_put_together_answered_and_accepted() {
    let now = Instant::now();
    let mut acc = acceptor(now);
    let from: SocketAddr = "198.51.100.7:4433".parse().expect("address literal");
    // A 1400-byte hello (the size of a post-quantum one) over a small MTU: three fragments,
    // delivered out of order, one of them twice.
    let mut hello = padded(9, 1400);
    let parts = fragmented_hello(&hello, 0, 0, 500);
    assert_eq!(parts.len(), 3);
    let sent: usize = parts.iter().map(Vec::len).sum::<usize>() + parts[1].len();
    assert_eq!(outcome(&mut acc, now, from, &parts[2]).0, "drop");
    assert_eq!(outcome(&mut acc, now, from, &parts[1]).0, "drop");
    assert_eq!(outcome(&mut acc, now, from, &parts[1]).0, "drop");
    let (kind, reply) = outcome(&mut acc, now, from, &parts[0]);
    assert_eq!(
        kind, "reply",
        "the complete hello gets a HelloVerifyRequest"
    );
    assert!(
        reply.len() <= sent,
        "{} B answered with {} B",
        sent,
        reply.len()
    );
    // RFC 6347 §4.2.1: the answer carries the record sequence number of the hello: here,
    // of the first of its records that arrived.
    assert_eq!(split_records(&reply).0[0].sequence, 2);
    // The second hello, with the cookie, is fragmented too: accepted once complete.
    hello.cookie = cookie_from(&reply);
    let parts = fragmented_hello(&hello, 1, 3, 400);
    let (last, first) = parts.split_last().expect("fragments");
    for p in first {
        assert_eq!(outcome(&mut acc, now, from, p).0, "drop");
    }
    assert_eq!(outcome(&mut acc, now, from, last).0, "accept");
    let stats = acc.hello_pool_stats();
    assert_eq!(stats.completed, 2);
    assert_eq!(stats.evicted, 0);
}

#[test]
fn a_spoofed_fragment_flood_evicts_only_unverified_hellos_and_an_honest_client_gets_through() {
    let now = Instant::now();
    let mut acc = acceptor(now);
    let mut rng = SimRng::new(11);
    let honest: SocketAddr = "198.51.100.8:4433".parse().expect("address literal");
    let hello = padded(4, 1400);
    let parts = fragmented_hello(&hello, 0, 0, 500);
    assert_eq!(outcome(&mut acc, now, honest, &parts[0]).0, "drop");
    // 20,000 first fragments of 1400-byte hellos from spoofed sources: each is held at most
    // until the pool needs its slot, and none is ever answered.
    let spoof = fragmented_hello(&padded(5, 1400), 0, 0, 500);
    for _ in 0..20_000 {
        let from = spoofed_addr(&mut rng);
        assert_eq!(outcome(&mut acc, now, from, &spoof[0]).0, "drop");
    }
    let stats = acc.hello_pool_stats();
    assert!(stats.evicted >= 20_000 - 256, "{stats:?}");
    assert_eq!(stats.completed, 0);
    // The honest client retransmits its whole hello and is answered.
    let mut answered = false;
    for p in &parts {
        answered |= outcome(&mut acc, now, honest, p).0 == "reply";
    }
    assert!(answered, "the honest hello completes after the flood");
}

#[test]
fn fragments_that_lie_about_their_bounds_are_refused() {
    let now = Instant::now();
    let mut acc = acceptor(now);
    let from: SocketAddr = "198.51.100.9:4433".parse().expect("address literal");
    // A claimed 64 KiB hello: longer than a pool slot.
    let huge = RawFragment {
        msg_type: HT_CLIENT_HELLO,
        length: 65_000,
        message_seq: 0,
        fragment_offset: 0,
        body: vec![0; 100],
    };
    let dg = handshake_datagram(0, DTLS_1_2, &[huge]);
    let mut buf = vec![0u8; 4096];
    assert!(matches!(
        acc.handle_datagram(now, from, &dg, &mut buf),
        AcceptOutcome::Drop(control::DropReason::Fragmented)
    ));
    // A fragment past the end of its message.
    let past = RawFragment {
        msg_type: HT_CLIENT_HELLO,
        length: 300,
        message_seq: 0,
        fragment_offset: 250,
        body: vec![0; 100],
    };
    let dg = handshake_datagram(0, DTLS_1_2, &[past]);
    assert!(matches!(
        acc.handle_datagram(now, from, &dg, &mut buf),
        AcceptOutcome::Drop(control::DropReason::Fragmented | control::DropReason::Malformed)
    ));
    assert!(acc.hello_pool_stats().refused >= 1);
    assert_eq!(acc.hello_pool_stats().fragments, 0, "nothing held");
}
