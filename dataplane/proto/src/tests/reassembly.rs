//! Reassembler behaviour, including the TESTING.md Parsing cases.

use std::sync::Arc;

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
    let cfg = ReassemblyConfig {
        max_handshake_bytes: 4096,
        ..ReassemblyConfig::default()
    };
    let mut r = Reassembler::new(cfg, 0);
    let m = body(60_000);
    // Claims are free: only received bytes count. In-order 1000-byte fragments fit until
    // the buffer (grown by doubling, at most 4096 bytes) would pass the cap.
    let mut accepted = 0;
    for k in 0..10 {
        match offer(&mut r, 0, &m, k * 1000..(k + 1) * 1000) {
            FragmentOutcome::Accepted => accepted += 1,
            other => {
                assert_eq!(
                    other,
                    FragmentOutcome::Dropped {
                        reason: DropReason::HandshakeBudget
                    }
                );
                break;
            }
        }
        assert!(r.buffered_bytes() <= cfg.max_handshake_bytes);
    }
    assert_eq!(
        accepted, 4,
        "1000, 2000, 4000 bytes of capacity; 8000 is refused"
    );
    assert_eq!(r.buffered_bytes(), 4000);
    assert_eq!(r.stats().over_budget, 1);
    // A future message is charged against the same cap.
    let h = repr(1, 50_000, 0, 200);
    assert_eq!(
        r.handle_fragment(&h, &m[..200]),
        FragmentOutcome::Dropped {
            reason: DropReason::HandshakeBudget
        }
    );
    let h = repr(1, 50_000, 0, 96);
    assert_eq!(r.handle_fragment(&h, &m[..96]), FragmentOutcome::Accepted);
    assert_eq!(r.buffered_bytes(), 4096);
    assert!(r.peak_buffered_bytes() <= cfg.max_handshake_bytes);
    // Too far ahead.
    let h = repr(cfg.max_messages_ahead + 1, 1, 0, 1);
    assert_eq!(
        r.handle_fragment(&h, &m[..1]),
        FragmentOutcome::Dropped {
            reason: DropReason::TooFarAhead
        }
    );
    // advance_to releases what it discards.
    r.advance_to(1);
    assert_eq!(r.buffered_bytes(), 96);
    r.advance_to(0);
    assert_eq!(r.next_seq(), 1, "never moves back");
}

#[test]
fn a_claimed_length_is_never_allocated_up_front() {
    let mut r = Reassembler::new(ReassemblyConfig::default(), 0);
    let m = body(64 * 1024);
    // A 26-byte fragment (12-byte header, 14 bytes) claiming a 64 KiB message, at the
    // start and in the middle of two messages.
    assert_eq!(offer(&mut r, 0, &m, 0..14), FragmentOutcome::Accepted);
    assert_eq!(r.buffered_bytes(), 14);
    assert_eq!(
        offer(&mut r, 1, &m, 30_000..30_014),
        FragmentOutcome::Accepted
    );
    let piece = r.buffered_bytes() - 14;
    assert!(
        (14..128).contains(&piece),
        "an out-of-order piece costs its bytes and a small fixed overhead, not {piece}"
    );
    // In-order growth stays within twice what was received, and within the message.
    let mut received = 14;
    for start in (14..m.len()).step_by(1200) {
        let end = (start + 1200).min(m.len());
        assert_eq!(offer(&mut r, 0, &m, start..end), FragmentOutcome::Accepted);
        received = end;
        let held = r.buffered_bytes() - piece;
        assert!(
            held >= received && held <= (2 * received).min(m.len()),
            "{held} for {received}"
        );
    }
    assert_eq!(received, m.len());
    assert_eq!(r.poll_message().expect("complete").body, m);
    assert_eq!(r.buffered_bytes(), piece);
}

#[test]
fn out_of_order_pieces_are_extended_and_absorbed() {
    let mut r = Reassembler::new(ReassemblyConfig::default(), 0);
    let m = body(10_000);
    // The first 1000 bytes are lost; the rest arrives in order: one piece, not nine.
    for k in 1..10 {
        assert_eq!(
            offer(&mut r, 0, &m, k * 1000..(k + 1) * 1000),
            FragmentOutcome::Accepted
        );
    }
    let one_piece = r.buffered_bytes();
    assert!((9000..2 * 9000 + 128).contains(&one_piece), "{one_piece}");
    // The retransmitted start absorbs the piece and completes the message.
    assert_eq!(offer(&mut r, 0, &m, 0..1000), FragmentOutcome::Accepted);
    assert_eq!(r.buffered_bytes(), 10_000);
    assert_eq!(r.poll_message().expect("complete").body, m);
    assert_eq!(r.buffered_bytes(), 0);
}

#[test]
fn bytes_already_held_are_never_overwritten() {
    let mut r = Reassembler::new(ReassemblyConfig::default(), 0);
    let m = body(300);
    let forged = vec![0xee; 300];
    // Held piece first, then an overlapping fragment with other bytes, then the prefix.
    assert_eq!(offer(&mut r, 0, &m, 100..200), FragmentOutcome::Accepted);
    assert_eq!(
        offer(&mut r, 0, &forged, 50..250),
        FragmentOutcome::Accepted
    );
    assert_eq!(offer(&mut r, 0, &m, 0..60), FragmentOutcome::Accepted);
    assert_eq!(offer(&mut r, 0, &forged, 0..280), FragmentOutcome::Accepted);
    assert_eq!(offer(&mut r, 0, &m, 250..300), FragmentOutcome::Accepted);
    let got = r.poll_message().expect("complete").body;
    assert_eq!(got[..50], m[..50]);
    assert_eq!(
        got[50..100],
        forged[50..100],
        "the forged copy came first there"
    );
    assert_eq!(got[100..200], m[100..200], "the held piece is kept");
    assert_eq!(got[200..280], forged[200..280]);
    assert_eq!(got[280..], m[280..]);
}

#[test]
fn caps_per_message_type_refuse_oversize_claims_before_allocating() {
    let cfg = ReassemblyConfig {
        message_caps: MessageCaps::NONE
            .with(HandshakeType::Finished, 12)
            .with(HandshakeType::ClientKeyExchange, 300),
        ..ReassemblyConfig::default()
    };
    assert_eq!(cfg.max_len_of(HandshakeType::Finished), 12);
    assert_eq!(
        cfg.max_len_of(HandshakeType::Certificate),
        cfg.max_message_len
    );
    assert_eq!(
        cfg.max_len_of(HandshakeType::Unknown(254)),
        cfg.max_message_len
    );
    let mut r = Reassembler::new(cfg, 0);
    let fin = |len: u32, flen: u32| HandshakeRepr {
        msg_type: HandshakeType::Finished,
        ..repr(0, len, 0, flen)
    };
    let too_large = FragmentOutcome::Dropped {
        reason: DropReason::MessageTooLarge,
    };
    assert_eq!(r.handle_fragment(&fin(13, 1), &[1]), too_large);
    assert_eq!(r.handle_fragment(&fin(65_536, 14), &[1; 14]), too_large);
    let cke = HandshakeRepr {
        msg_type: HandshakeType::ClientKeyExchange,
        ..repr(0, 301, 0, 1)
    };
    assert_eq!(r.handle_fragment(&cke, &[1]), too_large);
    assert_eq!(r.buffered_bytes(), 0);
    assert_eq!(r.pending_messages(), 0);
    assert_eq!(r.stats().too_large, 3);
    assert_eq!(
        r.handle_fragment(&fin(12, 12), &[7; 12]),
        FragmentOutcome::Accepted
    );
    assert_eq!(r.poll_message().expect("complete").body, [7; 12]);
}

#[test]
fn a_shared_budget_bounds_many_reassemblers_and_is_released() {
    let budget = Arc::new(ReassemblyBudget::new(10_000));
    let m = body(64 * 1024);
    let mut rs: Vec<Reassembler> = (0..20)
        .map(|_| Reassembler::with_budget(ReassemblyConfig::default(), 0, Arc::clone(&budget)))
        .collect();
    let mut refused = 0;
    for r in &mut rs {
        match offer(r, 0, &m, 0..1000) {
            FragmentOutcome::Accepted => {}
            FragmentOutcome::Dropped {
                reason: DropReason::GlobalBudget,
            } => refused += 1,
            other => panic!("{other:?}"),
        }
        assert!(budget.used() <= budget.limit());
    }
    assert_eq!(refused, 10);
    assert_eq!(budget.refused(), 10);
    assert_eq!(budget.used(), 10_000);
    assert_eq!(budget.peak(), 10_000);
    let total: usize = rs.iter().map(Reassembler::buffered_bytes).sum();
    assert_eq!(total, budget.used());
    assert_eq!(rs[19].stats().over_global_budget, 1);
    // Dropping one engine's reassembler frees room for a refused one's retransmission.
    drop(rs.remove(0));
    assert_eq!(budget.used(), 9_000);
    assert_eq!(
        offer(&mut rs[18], 0, &m, 0..1000),
        FragmentOutcome::Accepted
    );
    // Delivery and clear() release too.
    let small = body(500);
    assert_eq!(
        offer(&mut rs[0], 1, &small, 0..500),
        FragmentOutcome::Dropped {
            reason: DropReason::GlobalBudget
        }
    );
    rs[1].clear();
    assert_eq!(rs[1].buffered_bytes(), 0);
    assert_eq!(
        offer(&mut rs[0], 1, &small, 0..500),
        FragmentOutcome::Accepted
    );
    drop(rs);
    assert_eq!(budget.used(), 0);
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
    // Four pieces beyond the (empty) in-order prefix fill the cap.
    for k in 1..5 {
        assert_eq!(
            offer(&mut r, 0, &m, k * 10..k * 10 + 1),
            FragmentOutcome::Accepted
        );
    }
    assert_eq!(
        offer(&mut r, 0, &m, 60..61),
        FragmentOutcome::Dropped {
            reason: DropReason::TooManyRanges
        }
    );
    // Extending a piece needs no new one.
    assert_eq!(offer(&mut r, 0, &m, 11..15), FragmentOutcome::Accepted);
    // Bytes that continue the in-order prefix are always taken: the cap never blocks
    // completion once the peer retransmits.
    assert_eq!(offer(&mut r, 0, &m, 0..35), FragmentOutcome::Accepted);
    assert_eq!(offer(&mut r, 0, &m, 35..100), FragmentOutcome::Accepted);
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
