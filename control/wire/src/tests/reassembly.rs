//! Reassembler behaviour, including the TESTING.md Parsing cases.

use crate::*;

fn repr(seq: u16, len: u32, off: u32, flen: u32) -> HandshakeRepr {
    HandshakeRepr {
        msg_type: HandshakeType::Certificate,
        length: len,
        message_seq: seq,
        fragment_offset: off,
        fragment_length: flen,
    }
}

fn body(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 7 + 3) as u8).collect()
}

fn offer(
    r: &mut Reassembler,
    seq: u16,
    full: &[u8],
    range: core::ops::Range<usize>,
) -> FragmentOutcome {
    let h = repr(
        seq,
        full.len() as u32,
        range.start as u32,
        range.len() as u32,
    );
    r.handle_fragment(&h, &full[range])
}

#[test]
fn out_of_order_overlapping_fragments_complete_in_order() {
    let mut r = Reassembler::new(ReassemblyConfig::default(), 0);
    let m0 = body(500);
    let m1 = body(40);
    // Message 1 first (future), then message 0 in overlapping pieces, backwards.
    assert_eq!(offer(&mut r, 1, &m1, 0..40), FragmentOutcome::Accepted);
    assert_eq!(r.poll_message(), None, "message 0 missing");
    assert_eq!(offer(&mut r, 0, &m0, 300..500), FragmentOutcome::Accepted);
    assert_eq!(offer(&mut r, 0, &m0, 100..350), FragmentOutcome::Accepted);
    assert!(!r.has_message());
    assert_eq!(offer(&mut r, 0, &m0, 0..120), FragmentOutcome::Accepted);
    assert_eq!(r.buffered_bytes(), 540);
    let first = r.poll_message().expect("message 0 complete");
    assert_eq!((first.message_seq, &first.body), (0, &m0));
    let second = r.poll_message().expect("message 1 complete");
    assert_eq!((second.message_seq, &second.body), (1, &m1));
    assert_eq!(r.poll_message(), None);
    assert_eq!(r.buffered_bytes(), 0);
    assert_eq!(r.next_seq(), 2);
    // A retransmission of message 0 is reported as old, not stored.
    assert_eq!(
        offer(&mut r, 0, &m0, 0..100),
        FragmentOutcome::Old {
            message_seq: 0,
            msg_type: HandshakeType::Certificate
        }
    );
    assert_eq!(r.buffered_bytes(), 0);
    assert_eq!(r.stats().old, 1);
}

#[test]
fn transcript_bytes_are_the_unfragmented_encoding() {
    let mut r = Reassembler::new(ReassemblyConfig::default(), 3);
    let m = body(30);
    offer(&mut r, 3, &m, 10..30);
    offer(&mut r, 3, &m, 0..10);
    let msg = r.poll_message().expect("complete");
    let mut expected = Vec::new();
    encode_message(HandshakeType::Certificate, 3, &m, &mut expected).expect("fits");
    assert_eq!(msg.transcript_bytes(), expected);
}

#[test]
fn fragment_beyond_message_length_is_dropped() {
    let mut r = Reassembler::new(ReassemblyConfig::default(), 0);
    // Header parsing already rejects it ...
    let mut wire = repr(0, 10, 8, 4)
        .to_bytes()
        .map(|b| b.to_vec())
        .unwrap_or_default();
    assert!(wire.is_empty(), "to_bytes refuses offset+len > length");
    wire = vec![11, 0, 0, 10, 0, 0, 0, 0, 8, 0, 0, 4, 1, 2, 3, 4];
    assert!(matches!(
        HandshakeFragments::new(&wire).next(),
        Some(Err(WireError::BadLength { .. }))
    ));
    // ... and the reassembler checks again for hand-made headers.
    assert_eq!(
        r.handle_fragment(&repr(0, 10, 8, 4), &[1, 2, 3, 4]),
        FragmentOutcome::Dropped {
            reason: DropReason::Malformed
        }
    );
    // data length disagreeing with fragment_length.
    assert_eq!(
        r.handle_fragment(&repr(0, 10, 0, 4), &[1, 2, 3]),
        FragmentOutcome::Dropped {
            reason: DropReason::Malformed
        }
    );
    assert_eq!(r.buffered_bytes(), 0);
    assert_eq!(r.stats().malformed, 2);
}

#[test]
fn max_length_claim_allocates_nothing() {
    let mut r = Reassembler::new(ReassemblyConfig::default(), 0);
    let h = repr(0, U24_MAX as u32, 0, 4);
    assert_eq!(
        r.handle_fragment(&h, &[1, 2, 3, 4]),
        FragmentOutcome::Dropped {
            reason: DropReason::MessageTooLarge
        }
    );
    assert_eq!(r.buffered_bytes(), 0);
    assert_eq!(r.peak_buffered_bytes(), 0);
    assert_eq!(r.pending_messages(), 0);
}

#[test]
fn per_handshake_budget_is_enforced() {
    let cfg = ReassemblyConfig::default();
    let mut r = Reassembler::new(cfg, 0);
    let big = vec![0u8; 1];
    // Each first fragment of a 64 KiB message reserves 64 KiB: two fit, the third not.
    for seq in 0..2 {
        let h = repr(seq, cfg.max_message_len as u32, 0, 1);
        assert_eq!(r.handle_fragment(&h, &big), FragmentOutcome::Accepted);
    }
    let h = repr(2, cfg.max_message_len as u32, 0, 1);
    assert_eq!(
        r.handle_fragment(&h, &big),
        FragmentOutcome::Dropped {
            reason: DropReason::HandshakeBudget
        }
    );
    assert_eq!(r.buffered_bytes(), cfg.max_handshake_bytes);
    assert!(r.peak_buffered_bytes() <= cfg.max_handshake_bytes);
    // Too far ahead.
    let h = repr(cfg.max_messages_ahead + 1, 1, 0, 1);
    assert_eq!(
        r.handle_fragment(&h, &big),
        FragmentOutcome::Dropped {
            reason: DropReason::TooFarAhead
        }
    );
    // advance_to releases what it discards.
    r.advance_to(1);
    assert_eq!(r.buffered_bytes(), cfg.max_message_len);
    r.advance_to(0);
    assert_eq!(r.next_seq(), 1, "never moves back");
}

#[test]
fn different_total_lengths_are_never_merged() {
    let mut r = Reassembler::new(ReassemblyConfig::default(), 0);
    let a = body(100);
    let b = body(120);
    assert_eq!(offer(&mut r, 0, &a, 0..60), FragmentOutcome::Accepted);
    // Completes the range 0..100 only if merged, but claims length 120.
    assert_eq!(
        offer(&mut r, 0, &b, 60..100),
        FragmentOutcome::Dropped {
            reason: DropReason::LengthMismatch
        }
    );
    assert!(!r.has_message());
    // Different type with the same length is also kept apart.
    let h = HandshakeRepr {
        msg_type: HandshakeType::Finished,
        ..repr(0, 100, 60, 40)
    };
    assert_eq!(
        r.handle_fragment(&h, &a[60..]),
        FragmentOutcome::Dropped {
            reason: DropReason::TypeMismatch
        }
    );
    assert!(!r.has_message());
    assert_eq!(offer(&mut r, 0, &a, 60..100), FragmentOutcome::Accepted);
    assert_eq!(r.poll_message().expect("complete").body, a);
    assert_eq!(r.stats().length_mismatch, 1);
    assert_eq!(r.stats().type_mismatch, 1);
}

#[test]
fn zero_length_fragment_flood_is_bounded() {
    let mut r = Reassembler::new(ReassemblyConfig::default(), 0);
    let m = body(1000);
    assert_eq!(offer(&mut r, 0, &m, 0..10), FragmentOutcome::Accepted);
    let before = r.buffered_bytes();
    let start = std::time::Instant::now();
    for i in 0..200_000u32 {
        let seq = (i % 17) as u16; // within the window, new and existing messages
        let h = repr(seq, 1000, i % 1000, 0);
        let out = r.handle_fragment(&h, &[]);
        assert_eq!(
            out,
            FragmentOutcome::Dropped {
                reason: DropReason::EmptyFragment
            }
        );
    }
    assert_eq!(
        r.buffered_bytes(),
        before,
        "zero-length fragments allocate nothing"
    );
    assert_eq!(r.pending_messages(), 1);
    assert_eq!(r.stats().empty, 200_000);
    assert!(start.elapsed() < std::time::Duration::from_secs(5));
}

#[test]
fn empty_messages_complete_with_one_empty_fragment() {
    let mut r = Reassembler::new(ReassemblyConfig::default(), 0);
    let h = HandshakeRepr::unfragmented(HandshakeType::ServerHelloDone, 0, 0);
    assert_eq!(r.handle_fragment(&h, &[]), FragmentOutcome::Accepted);
    let m = r.poll_message().expect("complete");
    assert_eq!(m.msg_type, HandshakeType::ServerHelloDone);
    assert!(m.body.is_empty());
    assert_eq!(m.transcript_bytes(), [14, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
}

#[test]
fn disjoint_range_count_is_capped() {
    let cfg = ReassemblyConfig {
        max_ranges_per_message: 4,
        ..ReassemblyConfig::default()
    };
    let mut r = Reassembler::new(cfg, 0);
    let m = body(100);
    for k in 0..4 {
        assert_eq!(
            offer(&mut r, 0, &m, k * 10..k * 10 + 1),
            FragmentOutcome::Accepted
        );
    }
    assert_eq!(
        offer(&mut r, 0, &m, 50..51),
        FragmentOutcome::Dropped {
            reason: DropReason::TooManyRanges
        }
    );
    // A fragment bridging existing ranges is still accepted and completes the message.
    assert_eq!(offer(&mut r, 0, &m, 0..100), FragmentOutcome::Accepted);
    assert_eq!(r.poll_message().expect("complete").body, m);
}

#[test]
fn first_copy_wins_for_complete_messages() {
    let mut r = Reassembler::new(ReassemblyConfig::default(), 0);
    let m = body(10);
    offer(&mut r, 0, &m, 0..10);
    let other = vec![0xff; 10];
    assert_eq!(offer(&mut r, 0, &other, 0..10), FragmentOutcome::Accepted);
    assert_eq!(r.poll_message().expect("complete").body, m);
}
