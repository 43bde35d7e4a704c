//! DTLS 1.3 rows of the checklist's "Parsing" items past the hello (TESTING.md
//! "Adversarial"; issue 18), at engine level: handshake fragments of the client's final
//! flight, sealed with the client's own handshake keys (a malicious authenticated peer;
//! an off-path attacker's records fail their tag first), reach a server waiting for that
//! flight. Each shape changes nothing, and the real flight then completes.

use std::cell::RefCell;
use std::rc::Rc;

use dataplane::record::v13::InnerContentType;
use dtls_proto::{HandshakeType, NamedGroup};

use super::EPOCH_HANDSHAKE;
use super::adversarial_tests::{client_record, engine, events, server, server_output, to_server};
use super::tests::{client13, pair, server13, with_client_cert};
use crate::pair_tests::Pair;
use crate::{ClientAuth, ConnectionStats, Event};

/// A handshake fragment (RFC 9147 §5.2): type, length(24), message_seq, offset(24),
/// fragment length(24), data.
fn fragment(msg_type: HandshakeType, length: u32, seq: u16, offset: u32, data: &[u8]) -> Vec<u8> {
    let mut f = vec![msg_type.to_u8()];
    f.extend_from_slice(&length.to_be_bytes()[1..]);
    f.extend_from_slice(&seq.to_be_bytes());
    f.extend_from_slice(&offset.to_be_bytes()[1..]);
    let len = u32::try_from(data.len()).expect("short");
    f.extend_from_slice(&len.to_be_bytes()[1..]);
    f.extend_from_slice(data);
    f
}

/// A pair whose server waits for the client's final flight (X25519; with `client_auth`,
/// a required client certificate), the flight's datagrams held back, and the client's
/// Finished (message_seq, body).
struct Waiting {
    pair: Pair,
    flight: Vec<Vec<u8>>,
    finished: (u16, Vec<u8>),
}

fn waiting(client_auth: bool) -> Waiting {
    let mut client = client13();
    client.tls13_groups = vec![NamedGroup::X25519];
    let mut server_config = server13();
    if client_auth {
        client = with_client_cert(client);
        server_config.client_auth = ClientAuth::Required;
    }
    let mut pair = pair(client, server_config);
    let held = Rc::new(RefCell::new(Vec::new()));
    let keep = Rc::clone(&held);
    pair.filter = Box::new(move |from_client, d| {
        // A unified header (RFC 9147 §4, 001CSLEE): the client's protected flight.
        let protected = d.first().is_some_and(|b| b & 0xe0 == 0x20);
        if from_client && protected {
            keep.borrow_mut().push(d.clone());
            return false;
        }
        true
    });
    pair.exchange();
    assert!(pair.client.is_established());
    let finished = engine(&mut pair.client)
        .core
        .flight
        .messages
        .iter()
        .find(|m| m.msg_type == HandshakeType::Finished)
        .map(|m| (m.message_seq, m.body.clone()))
        .expect("the client's Finished");
    let flight = held.borrow().clone();
    assert!(!flight.is_empty());
    server(&mut pair).poll_event();
    Waiting {
        pair,
        flight,
        finished,
    }
}

impl Waiting {
    /// Sends `fragments` in one record of the handshake epoch; asserts the server took
    /// nothing from them (no event, not established, not failed, at most an ACK back).
    fn send(&mut self, what: &str, fragments: &[Vec<u8>]) -> ConnectionStats {
        let body = fragments.concat();
        let d = client_record(
            &mut self.pair,
            InnerContentType::Handshake,
            EPOCH_HANDSHAKE,
            &body,
        );
        to_server(&mut self.pair, &d);
        let out = server_output(&mut self.pair);
        assert!(out.len() <= 1, "{what}: {} datagrams back", out.len());
        let s = server(&mut self.pair);
        let evs = events(s);
        assert!(
            !evs.iter()
                .any(|e| matches!(e, Event::KeysReady(_) | Event::HandshakeFailed(_))),
            "{what}: {evs:?}"
        );
        assert!(!s.is_established() && !s.is_finished(), "{what}");
        s.stats()
    }

    /// The real flight completes the handshake.
    fn complete(mut self, what: &str) {
        for d in std::mem::take(&mut self.flight) {
            to_server(&mut self.pair, &d);
        }
        let s = server(&mut self.pair);
        let evs = events(s);
        assert!(s.is_established(), "{what}: then the real flight: {evs:?}");
        assert!(
            evs.iter().any(|e| matches!(e, Event::KeysReady(_))),
            "{what}: {evs:?}"
        );
    }
}

/// Fragment offset + length beyond the message length, past the hello (RFC 9147 §5.5:
/// fragments must lie within the message; RFC 8446 §6: a malformed message is not
/// taken): the client's Finished announced at its real length with fragments that run
/// past it (by one byte, from an offset past the end, and whole but one byte longer) is
/// dropped, counted as malformed, and the real Finished then completes.
#[test]
fn a_fragment_beyond_its_message_length_past_the_hello_is_dropped() {
    let mut w = waiting(false);
    let (seq, body) = w.finished.clone();
    let len = u32::try_from(body.len()).expect("short");
    let shapes = [
        (
            "one byte past",
            fragment(HandshakeType::Finished, len, seq, 1, &body),
        ),
        (
            "offset past the end",
            fragment(HandshakeType::Finished, len, seq, len + 4, &body[..4]),
        ),
        (
            "longer than the message",
            fragment(
                HandshakeType::Finished,
                len,
                seq,
                0,
                &[body.clone(), vec![0]].concat(),
            ),
        ),
    ];
    let mut malformed = server(&mut w.pair).stats().malformed_records;
    for (what, f) in shapes {
        let stats = w.send(what, &[f]);
        assert!(stats.malformed_records > malformed, "{what}: not counted");
        malformed = stats.malformed_records;
    }
    w.complete("fragments past their message");
}

/// Same message_seq, different total lengths, past the hello (never merged): the first
/// half of the client's real Finished under a claim of 48 bytes, then its second half
/// under the real length. Merged, they would make the real Finished; the server counts
/// the conflict, keeps the newest claim alone (as the 1.2 engine does, so a stale or
/// spoofed fragment never blocks the real message) and does not complete until the real
/// Finished arrives.
#[test]
fn fragments_of_one_message_with_different_lengths_past_the_hello_are_never_merged() {
    let mut w = waiting(false);
    let (seq, body) = w.finished.clone();
    let len = u32::try_from(body.len()).expect("short");
    let half = body.len() / 2;
    let conflicts = server(&mut w.pair).stats().conflicting_fragments;
    w.send(
        "first half, claiming 48 bytes",
        &[fragment(HandshakeType::Finished, 48, seq, 0, &body[..half])],
    );
    let stats = w.send(
        "second half, the real length",
        &[fragment(
            HandshakeType::Finished,
            len,
            seq,
            half as u32,
            &body[half..],
        )],
    );
    assert_eq!(stats.conflicting_fragments, conflicts + 1);
    // Both halves in one record, each under its own claim: still no Finished.
    let stats = w.send(
        "both halves, two claims, one record",
        &[
            fragment(HandshakeType::Finished, 48, seq, 0, &body[..half]),
            fragment(
                HandshakeType::Finished,
                len,
                seq,
                half as u32,
                &body[half..],
            ),
        ],
    );
    assert!(stats.conflicting_fragments > conflicts + 1);
    w.complete("conflicting lengths");
}

/// A flood of zero-length fragments (bounded work, nothing changes): 16 records of 1 300
/// empty fragments each, at every offset of the expected Finished and of the next
/// message_seqs, as the first and the last fragment of a message, claiming the Finished's
/// length or 2^24 − 1. Each fragment is one bounded step (no loop on an empty fragment, no
/// buffer for a claim): each is dropped and counted, the server takes none of them, and
/// the real flight completes.
#[test]
fn a_flood_of_zero_length_fragments_past_the_hello_changes_nothing() {
    let mut w = waiting(false);
    let (seq, body) = w.finished.clone();
    let len = u32::try_from(body.len()).expect("short");
    let before = server(&mut w.pair).stats();
    for round in 0..16u32 {
        let fragments: Vec<Vec<u8>> = (0..1300u32)
            .map(|i| {
                let seq = seq.wrapping_add((i % 4) as u16);
                let (length, offset) = match (round + i) % 4 {
                    0 => (len, 0),
                    1 => (len, len),
                    2 => (len, i % (len + 1)),
                    _ => ((1 << 24) - 1, i * 97 % (1 << 24)),
                };
                fragment(HandshakeType::Finished, length, seq, offset, &[])
            })
            .collect();
        w.send("zero-length fragments", &fragments);
    }
    let after = server(&mut w.pair).stats();
    // Each one dropped on its own (an empty fragment of a non-empty message carries
    // nothing), counted, none buffered.
    assert_eq!(
        after.malformed_records - before.malformed_records,
        16 * 1300
    );
    assert_eq!(after.buffer_refused, before.buffer_refused);
    w.complete("zero-length fragments");
}

/// The DTLS 1.3 post-hello buffer caps (RFC 9147 §5.5 leaves reassembly limits to the
/// implementation; ours cap each message type a server takes from a client, and a claim
/// costs nothing until its bytes arrive): claims of 2^24 − 1 bytes for the Certificate,
/// CertificateVerify and Finished (and a Finished one message ahead), each with a first
/// fragment, are refused before any buffer is made and counted as malformed, as the 1.2
/// engine counts them; a Certificate claim at exactly the chain cap
/// (`Config::max_client_certificate_chain`) is held, not counted; and the real flight
/// then completes.
#[test]
fn dtls13_post_hello_messages_claiming_16_mib_are_refused_by_the_caps() {
    let mut w = waiting(true);
    let (finished_seq, _) = w.finished.clone();
    let certificate_seq = finished_seq - 2;
    let mut malformed = server(&mut w.pair).stats().malformed_records;
    for (msg_type, seq) in [
        (HandshakeType::Certificate, certificate_seq),
        (HandshakeType::CertificateVerify, certificate_seq + 1),
        (HandshakeType::Finished, finished_seq),
        (HandshakeType::Finished, finished_seq + 1),
    ] {
        let stats = w.send(
            "a 16 MiB claim",
            &[fragment(msg_type, (1 << 24) - 1, seq, 0, &[0x42; 512])],
        );
        assert_eq!(
            stats.malformed_records,
            malformed + 1,
            "{msg_type:?} claim not refused"
        );
        malformed = stats.malformed_records;
    }
    let cap = u32::try_from(server13().max_client_certificate_chain).expect("small");
    let stats = w.send(
        "a claim at the cap",
        &[fragment(
            HandshakeType::Certificate,
            cap,
            certificate_seq,
            0,
            &[0x42; 512],
        )],
    );
    assert_eq!(
        stats.malformed_records, malformed,
        "a claim at the cap refused"
    );
    assert_eq!(stats.buffer_refused, 0);
    w.complete("16 MiB claims");
}
