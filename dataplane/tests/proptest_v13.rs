//! Property tests of the DTLS 1.3 record layer: parsing, walking and opening never panic
//! on any bytes, headers and records round-trip, reconstruction agrees with a model.

use dataplane::record::v13::{
    HeaderForm, InnerContentType, MixedKind, MixedRecords, MixedRecordsMut, Opener13, Sealer13,
    SequenceLen, TrafficKeys13, UnifiedHeader, reconstruct_epoch, reconstruct_sequence,
};
use dataplane::record::{Aead, ReplayWindow};
use proptest::prelude::*;

fn aead() -> impl Strategy<Value = Aead> {
    prop_oneof![
        Just(Aead::Aes128Gcm),
        Just(Aead::Aes256Gcm),
        Just(Aead::ChaCha20Poly1305),
    ]
}

fn keys(aead: Aead) -> TrafficKeys13 {
    TrafficKeys13::new(
        aead,
        &vec![0x42; aead.key_len()],
        &[7; 12],
        &vec![0x24; aead.key_len()],
    )
    .expect("valid lengths")
}

fn sequence_len() -> impl Strategy<Value = SequenceLen> {
    prop_oneof![Just(SequenceLen::Bits8), Just(SequenceLen::Bits16)]
}

/// Datagrams that are mostly well-formed records of every kind, then damaged at random.
fn datagram() -> impl Strategy<Value = (Vec<u8>, usize)> {
    let record = prop_oneof![
        // 13-byte header records.
        (prop_oneof![20u8..=24, Just(26u8)], 0u16..40).prop_map(|(t, len)| {
            let mut v = vec![t, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 1];
            v.extend_from_slice(&len.to_be_bytes());
            v.resize(13 + usize::from(len), 0xab);
            v
        }),
        // tls12_cid with a 4-byte CID.
        (0u16..40).prop_map(|len| {
            let mut v = vec![25, 0xfe, 0xfd, 0, 1, 0, 0, 0, 0, 0, 1, 1, 2, 3, 4];
            v.extend_from_slice(&len.to_be_bytes());
            v.resize(17 + usize::from(len), 0xcd);
            v
        }),
        // Unified headers of any form.
        (any::<bool>(), sequence_len(), any::<u64>(), 0usize..40).prop_map(
            |(cid, sequence, seq, body)| {
                let cid_bytes = [9u8; 4];
                let form = HeaderForm {
                    cid: cid.then_some(&cid_bytes[..]),
                    sequence,
                    length: true,
                };
                let mut v = vec![0x5a; form.header_len() + body];
                form.emit(seq, seq, body, &mut v).expect("fits");
                v
            }
        ),
    ];
    (
        proptest::collection::vec(record, 0..6),
        proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
        any::<bool>(),
        prop_oneof![4 => Just(4usize), 2 => 0usize..8, 1 => Just(usize::MAX)],
    )
        .prop_map(|(records, damage, truncate, cid_len)| {
            let mut d: Vec<u8> = records.concat();
            if !d.is_empty() {
                for (at, byte) in damage {
                    let i = at.index(d.len());
                    d[i] = byte;
                }
                if truncate {
                    d.pop();
                }
            }
            (d, cid_len)
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64), cid_len in prop_oneof![0usize..300, Just(usize::MAX)]) {
        if let Ok(h) = UnifiedHeader::parse(&bytes, cid_len) {
            prop_assert!(h.header_len <= h.record_len && h.record_len <= bytes.len());
            prop_assert!(h.sequence_range().end <= h.header_len);
            prop_assert_eq!(h.cid(&bytes).map(<[u8]>::len), h.cid_len.map(usize::from));
        }
    }

    #[test]
    fn walkers_never_panic_and_tile_the_datagram((d, cid_len) in datagram()) {
        let mut it = MixedRecords::new(&d, cid_len);
        let mut end = 0;
        let mut lens = Vec::new();
        for r in it.by_ref() {
            prop_assert_eq!(r.range.start, end);
            prop_assert_eq!(r.bytes, &d[r.range.clone()]);
            prop_assert!(!r.bytes.is_empty());
            if let MixedKind::Ciphertext(h) = r.kind {
                prop_assert_eq!(h.record_len, r.bytes.len());
            }
            end = r.range.end;
            lens.push(r.bytes.len());
        }
        prop_assert_eq!(end + it.dropped_bytes(), d.len());
        let mut m = d.clone();
        let mut it = MixedRecordsMut::new(&mut m, cid_len);
        let lens_mut: Vec<_> = it.by_ref().map(|r| r.bytes.len()).collect();
        prop_assert_eq!(lens_mut, lens);
        prop_assert_eq!(end + it.dropped_bytes(), d.len());
    }

    #[test]
    fn open_never_panics_or_accepts_noise(
        aead in aead(),
        mut bytes in proptest::collection::vec(any::<u8>(), 0..80),
        first in 0x20u8..0x40,
        cid_len in 0usize..6,
    ) {
        if let Some(b) = bytes.first_mut() {
            *b = first;
        }
        let mut opener = Opener13::new(u64::from(first & 3), keys(aead), ReplayWindow::new(64));
        prop_assert!(opener.open(&mut bytes, cid_len).is_err());
        prop_assert_eq!(opener.next_expected(), 0);
    }

    #[test]
    fn seal_open_round_trip(
        aead in aead(),
        content in proptest::collection::vec(any::<u8>(), 0..200),
        padding in 0usize..40,
        cid in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..8)),
        sequence in sequence_len(),
        length in any::<bool>(),
        epoch in any::<u64>(),
        start in prop_oneof![0u64..300, 0u64..70_000, 0u64..u64::MAX],
        shift in prop_oneof![0u64..4, 100u64..140, 30_000u64..35_000],
        ct in prop_oneof![
            Just(InnerContentType::Alert),
            Just(InnerContentType::Handshake),
            Just(InnerContentType::ApplicationData),
            Just(InnerContentType::Ack),
        ],
    ) {
        let form = HeaderForm { cid: cid.as_deref(), sequence, length };
        let mut sealer = Sealer13::new(epoch, keys(aead)).with_next_sequence(start);
        let mut opener = Opener13::new(epoch, keys(aead), ReplayWindow::new(64))
            .with_next_expected(start.saturating_sub(shift));
        let mut rec = vec![0u8; sealer.record_len(&form, content.len(), padding)];
        let at = sealer.plaintext_offset(&form);
        rec[at..at + content.len()].copy_from_slice(&content);
        let len = sealer.seal(ct, &form, &mut rec, content.len(), padding).expect("seals");
        prop_assert_eq!(len, rec.len());
        // The opener expects `start - shift`: numbers less than half a window away come
        // back exactly; farther ones reconstruct to another number and fail the tag.
        let opened = opener.open(&mut rec, form.cid.map_or(0, <[u8]>::len));
        let expected = start.saturating_sub(shift);
        let wire = (start & ((1 << sequence.bits()) - 1)) as u16;
        let found = reconstruct_sequence(expected, wire, sequence.bits()) == start;
        prop_assert!(found || shift >= 1 << (sequence.bits() - 1));
        if found {
            let opened = opened.expect("opens");
            prop_assert_eq!(opened.sequence, start);
            prop_assert_eq!(opened.content_type, ct);
            prop_assert_eq!(&opened.plaintext[..], &content[..]);
        } else {
            prop_assert!(opened.is_err());
        }
    }

    #[test]
    fn emit_parse_round_trip(
        cid in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..=255)),
        sequence in sequence_len(),
        length in any::<bool>(),
        epoch in any::<u64>(),
        seq in any::<u64>(),
        body in 0usize..300,
    ) {
        let form = HeaderForm { cid: cid.as_deref(), sequence, length };
        let mut rec = vec![0u8; form.header_len() + body];
        let at = form.emit(epoch, seq, body, &mut rec).expect("fits");
        let h = UnifiedHeader::parse(&rec, cid.as_ref().map_or(0, Vec::len)).expect("parses");
        prop_assert_eq!(h.header_len, at);
        prop_assert_eq!(h.record_len, rec.len());
        prop_assert_eq!(u64::from(h.epoch_bits), epoch & 3);
        prop_assert_eq!(u64::from(h.wire_sequence), seq & ((1 << sequence.bits()) - 1));
        prop_assert_eq!(h.cid(&rec), cid.as_deref());
        prop_assert_eq!(h.length_present, length);
    }

    #[test]
    fn sequence_reconstruction_finds_anything_within_half_a_window(
        expected in any::<u64>(),
        offset in any::<i32>(),
        sixteen in any::<bool>(),
    ) {
        let bits = if sixteen { 16 } else { 8 };
        let half = 1i64 << (bits - 1);
        // Strictly inside (-half, half): no tie, exactly one closest candidate.
        let delta = i64::from(offset).rem_euclid(2 * half - 1) - (half - 1);
        if let Some(seq) = expected.checked_add_signed(delta) {
            let wire = (seq & ((1 << bits) - 1)) as u16;
            prop_assert_eq!(reconstruct_sequence(expected, wire, bits), seq);
        }
    }

    #[test]
    fn epoch_reconstruction_matches_model(
        bits in any::<u8>(),
        held in proptest::collection::vec(any::<u64>(), 0..6),
    ) {
        let want = held.iter().copied().filter(|e| (e & 3) as u8 == bits & 3).max();
        prop_assert_eq!(reconstruct_epoch(bits, held.iter().copied()), want);
    }
}
