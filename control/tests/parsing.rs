//! Parsing negatives (TESTING.md "Adversarial checklist / Parsing") against live engines and
//! the acceptor: bad record lengths, bad fragment bounds, huge message lengths, conflicting
//! fragment lengths, zero-length fragment floods, oversized heartbeats, bad cookie lengths.
//! Each hostile input must leave the handshake able to complete with matching keys.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use control::{AcceptOutcome, CipherSuite, DropReason};
use dataplane::record::ContentType;
use support::fixtures::*;
use support::pair::{Pair, PairConfig};
use support::wire::*;

const ECDSA: CipherSuite = CipherSuite::EcdheEcdsaAes128GcmSha256;
const LIMIT: Duration = Duration::from_secs(30);

fn pair() -> Pair {
    Pair::new(PairConfig::new(
        client_config(&[ECDSA]),
        server_config(&[ECDSA]),
    ))
}

fn complete(p: &mut Pair, what: &str) {
    assert!(
        p.handshake(LIMIT),
        "{what}: no completion: client {} {:?} / server {:?}",
        p.client.conn().state_name(),
        p.client.failed,
        p.server.failed
    );
    p.assert_keys_match();
    assert_eq!((p.client.keys_ready, p.server.keys_ready), (1, 1));
}

/// A pair whose server→client direction is held; returns once the server's first flight
/// (ServerHello...) is held, the client still in ExpectServerHello.
fn pair_with_server_flight_held() -> Pair {
    let mut cfg = PairConfig::new(client_config(&[ECDSA]), server_config(&[ECDSA]));
    cfg.s2c.hold = true;
    let mut p = Pair::new(cfg);
    // HelloVerifyRequest first.
    assert!(p.drive_until(LIMIT, |p| !p.s2c.held.is_empty()));
    p.release_held_s2c();
    assert!(p.drive_until(LIMIT, |p| !p.s2c.held.is_empty()));
    assert_eq!(p.client.conn().state_name(), "ExpectServerHello");
    p
}

fn release(p: &mut Pair) {
    p.s2c.impairment.hold = false;
    p.release_held_s2c();
}

/// What the client did in response to a hostile datagram: nothing.
fn assert_client_unmoved(p: &mut Pair, sent_before: usize, what: &str) {
    p.flush();
    assert_eq!(p.client.conn().state_name(), "ExpectServerHello", "{what}");
    assert_eq!(p.client.sent.len(), sent_before, "{what}: client answered");
    assert!(p.client.failed.is_none(), "{what}: {:?}", p.client.failed);
}

#[test]
fn record_longer_than_the_datagram_drops_the_rest_without_state_change() {
    let mut p = pair_with_server_flight_held();
    let sent = p.client.sent.len();
    let malformed = p.client.conn().stats().malformed_records;
    // A lone record whose length runs past the datagram.
    let mut bad = RawRecord::new(CT_HANDSHAKE, 0, 90, vec![0; 10]).to_bytes();
    bad[11..13].copy_from_slice(&500u16.to_be_bytes());
    p.deliver_to_client(&bad);
    assert_client_unmoved(&mut p, sent, "overlong record");
    assert!(p.client.conn().stats().malformed_records > malformed);
    // The real flight with an overlong record appended: the valid records are used.
    let held = std::mem::take(&mut p.s2c.held);
    for mut d in held {
        d.extend_from_slice(&bad);
        p.deliver_to_client(&d);
    }
    p.s2c.impairment.hold = false;
    complete(&mut p, "flight + overlong record");
    // And an overlong record at the start of a datagram hides what follows it.
    let mut p = pair_with_server_flight_held();
    let sent = p.client.sent.len();
    let held = std::mem::take(&mut p.s2c.held);
    for d in &held {
        let mut hiding = bad.clone();
        let total = 10 + d.len();
        hiding[11..13].copy_from_slice(&(total as u16 + 1).to_be_bytes());
        hiding.extend_from_slice(d);
        p.deliver_to_client(&hiding);
    }
    assert_client_unmoved(&mut p, sent, "records after an overlong record");
    p.s2c.held = held;
    release(&mut p);
    complete(&mut p, "after hidden flight");
}

#[test]
fn fragment_beyond_message_length_is_dropped() {
    let mut p = pair_with_server_flight_held();
    let sent = p.client.sent.len();
    for (offset, body) in [(40u32, 20usize), (0, 51), (50, 1), (0xff_ffff, 5)] {
        let frag = RawFragment {
            msg_type: HT_SERVER_HELLO,
            length: 50,
            message_seq: 1,
            fragment_offset: offset,
            body: vec![0x41; body],
        };
        p.deliver_to_client(&handshake_datagram(100 + offset as u64, DTLS_1_2, &[frag]));
    }
    // A fragment_length field larger than the bytes that follow.
    let frag = RawFragment {
        msg_type: HT_SERVER_HELLO,
        length: 50,
        message_seq: 1,
        fragment_offset: 0,
        body: vec![0x41; 10],
    };
    let mut payload = Vec::new();
    frag.encode_with_fragment_length(&mut payload, 40);
    p.deliver_to_client(&RawRecord::new(CT_HANDSHAKE, 0, 200, payload).to_bytes());
    assert_client_unmoved(&mut p, sent, "out-of-bounds fragments");
    release(&mut p);
    complete(&mut p, "after out-of-bounds fragments");
}

#[test]
fn fragments_of_one_message_with_different_lengths_are_never_merged() {
    let mut p = pair_with_server_flight_held();
    let sent = p.client.sent.len();
    // The real ServerHello's first bytes, but claiming a longer message: if it were merged
    // with the real (shorter) message, the result would not parse or the transcript would
    // differ and the Finished check would fail.
    let real = p.s2c.held[0].clone();
    let real_hello = split_records(&real).0[0].handshake_fragments()[0].clone();
    assert_eq!(real_hello.msg_type, HT_SERVER_HELLO);
    let fake = RawFragment {
        length: real_hello.length + 40,
        body: real_hello.body[..20].to_vec(),
        ..real_hello.clone()
    };
    let tail = RawFragment {
        length: real_hello.length + 40,
        fragment_offset: real_hello.length,
        body: vec![0x43; 40],
        ..real_hello.clone()
    };
    p.deliver_to_client(&handshake_datagram(400, DTLS_1_2, &[fake, tail]));
    assert_client_unmoved(&mut p, sent, "conflicting fragment lengths");
    // The real flight never merges with the fake: whatever happens next, no message built
    // from both halves is processed (that would fail decoding or the Finished check).
    release(&mut p);
    p.drive_until(LIMIT, |p| p.both_ready() || p.any_failed());
    assert!(
        p.client.failed.is_none(),
        "merged fragments: {:?}",
        p.client.failed
    );
    assert!(
        p.server.failed.is_none(),
        "merged fragments: {:?}",
        p.server.failed
    );
    if p.both_ready() {
        p.assert_keys_match();
    }
}

/// DoS resilience: one spoofed fragment of the next message, with a wrong total length, must
/// not keep the real (complete, unfragmented) message from being accepted.
#[test]
fn conflicting_fragment_from_a_spoofer_does_not_block_the_real_message() {
    let mut p = pair_with_server_flight_held();
    let real = p.s2c.held[0].clone();
    let real_hello = split_records(&real).0[0].handshake_fragments()[0].clone();
    let fake = RawFragment {
        length: real_hello.length + 40,
        body: vec![0x44; 20],
        ..real_hello
    };
    p.deliver_to_client(&handshake_datagram(400, DTLS_1_2, &[fake]));
    release(&mut p);
    complete(&mut p, "real flight after one spoofed conflicting fragment");
}

#[test]
fn zero_length_fragment_flood_costs_bounded_time_and_changes_nothing() {
    let mut p = pair_with_server_flight_held();
    let sent = p.client.sent.len();
    let zero = RawFragment {
        msg_type: HT_SERVER_HELLO,
        length: 100,
        message_seq: 1,
        fragment_offset: 0,
        body: Vec::new(),
    };
    let frags = vec![zero; 100]; // 100 × 12 B = 1200 B per record
    let dg = handshake_datagram(500, DTLS_1_2, &frags);
    let t0 = Instant::now();
    for i in 0..2000u64 {
        let mut d = dg.clone();
        d[5..11].copy_from_slice(&(500 + i).to_be_bytes()[2..]);
        p.deliver_to_client(&d);
    }
    let took = t0.elapsed();
    // 200 000 fragments; generous bound for an unoptimized build on a busy 2-core box.
    assert!(
        took < Duration::from_secs(10),
        "zero-length flood took {took:?}"
    );
    println!("200 000 zero-length fragments handled in {took:?}");
    assert_client_unmoved(&mut p, sent, "zero-length flood");
    release(&mut p);
    complete(&mut p, "after zero-length flood");
}

#[test]
fn heartbeat_with_oversized_payload_length_is_never_answered() {
    let mut c = client_config(&[ECDSA]);
    let mut s = server_config(&[ECDSA]);
    c.heartbeat = Some(control::HeartbeatMode::PeerAllowedToSend);
    s.heartbeat = Some(control::HeartbeatMode::PeerAllowedToSend);
    let mut p = Pair::new(PairConfig::new(c, s));
    complete(&mut p, "heartbeat negotiation");
    p.advance(Duration::from_secs(1));
    let (c_sent, s_sent) = (p.s2c.stats.datagrams_in, p.c2s.stats.datagrams_in);
    // type request(1), payload_length 16384, 3 payload bytes + 16 padding.
    let mut hb = vec![1u8, 0x40, 0x00, b'a', b'b', b'c'];
    hb.extend_from_slice(&[0u8; 16]);
    let sealed = p
        .client
        .data
        .as_mut()
        .expect("keys")
        .seal_as(ContentType::Heartbeat, &hb);
    let from = p.client.addr;
    p.deliver_to_server(from, &sealed);
    p.deliver_to_server(
        from,
        &RawRecord::new(CT_HEARTBEAT, 0, 77, hb.clone()).to_bytes(),
    );
    p.deliver_to_client(&RawRecord::new(CT_HEARTBEAT, 0, 78, hb).to_bytes());
    p.advance(Duration::from_secs(2));
    assert_eq!(
        p.s2c.stats.datagrams_in, c_sent,
        "server answered a heartbeat"
    );
    assert_eq!(
        p.c2s.stats.datagrams_in, s_sent,
        "client answered a heartbeat"
    );
    assert!(p.client.failed.is_none() && p.server.failed.is_none());
    p.assert_keys_match();
}

fn acceptor_reply(p: &mut Pair, from: SocketAddr, dg: &[u8]) -> AcceptOutcome {
    let mut buf = vec![0u8; 4096];
    let out = p.acceptor.handle_datagram(p.now, from, dg, &mut buf);
    if let AcceptOutcome::Reply(t) = &out {
        assert!(
            t.len <= dg.len(),
            "reply {} B > request {} B",
            t.len,
            dg.len()
        );
        let recs = split_records(&buf[..t.len]).0;
        assert_eq!(recs.len(), 1);
        let f = &recs[0].handshake_fragments()[0];
        assert_eq!(f.msg_type, HT_HELLO_VERIFY_REQUEST);
        let cookie = hello_verify_cookie(&f.body).expect("cookie");
        assert!(!cookie.is_empty() && cookie.len() <= 255);
    }
    out
}

#[test]
fn cookie_lengths_0_255_and_past_the_message_are_handled() {
    let mut p = pair();
    let from: SocketAddr = "192.0.2.20:2000".parse().expect("address literal");
    // Empty cookie: a HelloVerifyRequest.
    let hello = ClientHelloSpec::typical(5);
    assert!(matches!(
        acceptor_reply(&mut p, from, &hello.datagram(DTLS_1_2, 0, 0)),
        AcceptOutcome::Reply(_)
    ));
    // 255-byte cookie (not ours): a HelloVerifyRequest again, never an engine.
    let mut h = ClientHelloSpec::typical(5);
    h.cookie = vec![0x99; 255];
    assert!(matches!(
        acceptor_reply(&mut p, from, &h.datagram(DTLS_1_2, 1, 1)),
        AcceptOutcome::Reply(_)
    ));
    // Cookie length byte larger than what follows.
    let mut h = ClientHelloSpec::typical(5);
    h.cookie = vec![0x99; 10];
    h.cookie_len_override = Some(200);
    let mut dg = h.datagram(DTLS_1_2, 2, 1);
    // Cut the message right after the cookie bytes (lengths fixed up to the cut).
    let cut = RECORD_HEADER_LEN + HANDSHAKE_HEADER_LEN + 2 + 32 + 1 + 1 + 10;
    dg.truncate(cut);
    let body_len = (cut - RECORD_HEADER_LEN - HANDSHAKE_HEADER_LEN) as u32;
    dg[11..13].copy_from_slice(&((cut - RECORD_HEADER_LEN) as u16).to_be_bytes());
    dg[RECORD_HEADER_LEN + 1..RECORD_HEADER_LEN + 4].copy_from_slice(&body_len.to_be_bytes()[1..]);
    dg[RECORD_HEADER_LEN + 9..RECORD_HEADER_LEN + 12].copy_from_slice(&body_len.to_be_bytes()[1..]);
    assert!(matches!(
        acceptor_reply(&mut p, from, &dg),
        AcceptOutcome::Drop(DropReason::Malformed)
    ));
    // Cookie length byte 255 on a message that ends inside it.
    h.cookie_len_override = Some(255);
    let dg = h.datagram(DTLS_1_2, 3, 1);
    assert!(matches!(
        acceptor_reply(&mut p, from, &dg),
        AcceptOutcome::Drop(_)
    ));
}
