//! DTLS 1.3 rows of the checklist's "State machine" items (TESTING.md "Adversarial";
//! issue 18) that need a misbehaving authenticated peer, at engine level on the virtual
//! clock: a Certificate without its CertificateVerify when client authentication is
//! required, and Finished messages sent again, altered or extra after completion. The
//! harness (a live pair, records sealed with the client's own keys) is
//! `adversarial_tests.rs`'s.

use std::collections::VecDeque;

use dtls_proto::{HandshakeType, NamedGroup};

use super::adversarial_tests::{engine, events, live, server, server_output, to_server};
use super::tests::{client13, pair, server13, with_client_cert};
use super::transport::{Flight13, OutMessage13};
use super::{EPOCH_APPLICATION, EPOCH_HANDSHAKE};
use crate::pair_tests::Pair;
use crate::{ClientAuth, Event, HandshakeError};

/// The unified header's first bits (RFC 9147 §4: 001CSLEE): a protected record.
fn protected(d: &[u8]) -> bool {
    d.first().is_some_and(|b| b & 0xe0 == 0x20)
}

/// Certificate without CertificateVerify when client authentication is required (RFC 8446
/// §4.4.3: a client that sends a certificate MUST send CertificateVerify; §4.4.2.4, §6:
/// a message out of order is an unexpected_message): the client's own Certificate, then
/// its Finished numbered as if no CertificateVerify had been, both sealed with its
/// handshake keys. The server fails with unexpected_message, never completes and never
/// hands out keys.
#[test]
fn certificate_without_certificate_verify_is_rejected_when_client_auth_is_required() {
    let mut server_config = server13();
    server_config.client_auth = ClientAuth::Required;
    let mut client = with_client_cert(client13());
    client.tls13_groups = vec![NamedGroup::X25519];
    let mut pair = pair(client, server_config);
    // None of the client's protected records reaches the server: its final flight is
    // replaced below.
    pair.filter = Box::new(|from_client, d| !from_client || !protected(d));
    pair.exchange();
    assert!(pair.client.is_established(), "{:?}", pair.client_events);
    let flight = engine(&mut pair.client).core.flight.messages.clone();
    let find = |t: HandshakeType| {
        flight
            .iter()
            .find(|m| m.msg_type == t)
            .unwrap_or_else(|| panic!("{t:?} in the client's final flight"))
    };
    let certificate = find(HandshakeType::Certificate);
    assert_eq!(
        find(HandshakeType::CertificateVerify).message_seq,
        certificate.message_seq + 1
    );
    let finished = find(HandshakeType::Finished);
    let mut forged = Flight13::new(vec![
        OutMessage13::new(
            EPOCH_HANDSHAKE,
            HandshakeType::Certificate,
            certificate.message_seq,
            certificate.body.clone(),
        ),
        OutMessage13::new(
            EPOCH_HANDSHAKE,
            HandshakeType::Finished,
            certificate.message_seq + 1,
            finished.body.clone(),
        ),
    ]);
    let mut out = VecDeque::new();
    forged
        .pack(
            1200,
            false,
            &mut engine(&mut pair.client).core.transport,
            &mut out,
        )
        .expect("pack");
    for d in &out {
        to_server(&mut pair, d);
    }
    let s = server(&mut pair);
    let evs = events(s);
    assert!(
        evs.iter().any(|e| matches!(
            e,
            Event::HandshakeFailed(HandshakeError::UnexpectedMessage { .. })
        )),
        "{evs:?}"
    );
    assert!(
        !evs.iter().any(|e| matches!(e, Event::KeysReady(_))),
        "{evs:?}"
    );
    assert!(!s.is_established());
    assert!(s.is_finished());
}

/// Extra or altered Finished after completion (RFC 9147 §5.8.3, §7: a retransmitted
/// final flight is answered with an ACK; RFC 8446 §4.4.4): on a live session the client's
/// Finished altered and sealed again under its own message_seq is taken as the duplicate
/// it claims to be, answered with at most one ACK each time; that record with a flipped
/// byte (what an attacker without keys can make of it) and the same record replayed are
/// dropped unanswered. An extra Finished, under the next message_seq, in the handshake or
/// the application epoch, is never accepted. No second completion, no new keys.
#[test]
fn extra_or_altered_finished_after_completion_is_never_accepted() {
    let mut pair = live();
    // The client's Finished was its last message.
    let seq = engine(&mut pair.client).core.next_send_seq.wrapping_sub(1);
    let seal = |pair: &mut Pair, epoch: u64, message_seq: u16, body: Vec<u8>| {
        let mut out = VecDeque::new();
        Flight13::new(vec![OutMessage13::new(
            epoch,
            HandshakeType::Finished,
            message_seq,
            body,
        )])
        .pack(
            1200,
            false,
            &mut engine(&mut pair.client).core.transport,
            &mut out,
        )
        .expect("pack");
        assert_eq!(out.len(), 1);
        out.pop_front().expect("one datagram")
    };
    let check = |pair: &mut Pair, what: &str, d: &[u8], at_most: usize| {
        to_server(pair, d);
        let out = server_output(pair);
        assert!(out.len() <= at_most, "{what}: {} answers", out.len());
        let s = server(pair);
        assert!(s.is_established(), "{what}: the session is kept");
        let evs = events(s);
        assert!(
            !evs.iter().any(|e| matches!(
                e,
                Event::KeysReady(_) | Event::KeysUpdated(_) | Event::HandshakeFailed(_)
            )),
            "{what}: {evs:?}"
        );
    };
    let body = vec![0x5a; 32];
    for _ in 0..3 {
        let d = seal(&mut pair, EPOCH_HANDSHAKE, seq, body.clone());
        check(&mut pair, "altered, same message_seq", &d, 1);
        let mut flipped = d.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        check(&mut pair, "flipped record", &flipped, 0);
        check(&mut pair, "replayed record", &d, 0);
    }
    // Extra Finished messages: new message_seqs, one in each epoch. Each is taken off the
    // record layer and ignored, counted (a Finished is no post-handshake message).
    let next = engine(&mut pair.client).core.next_send_seq;
    for (epoch, message_seq) in [(EPOCH_HANDSHAKE, next), (EPOCH_APPLICATION, next + 1)] {
        let ignored = server(&mut pair).stats().ignored_records;
        let d = seal(&mut pair, epoch, message_seq, body.clone());
        check(&mut pair, "extra Finished", &d, 1);
        assert_eq!(
            server(&mut pair).stats().ignored_records,
            ignored + 1,
            "the extra Finished in epoch {epoch} counted as ignored"
        );
    }
}
