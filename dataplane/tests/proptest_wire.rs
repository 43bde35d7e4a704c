//! Property tests: header parser, splitter, opener and replay window never panic and
//! agree with simple reference models.

use std::collections::BTreeSet;

use dataplane::record::{
    Aead, ContentType, DTLS_1_0, DTLS_1_2, HEADER_LEN, MAX_CIPHERTEXT_LEN, MAX_SEQUENCE, Opener,
    RecordHeader, RecordKey, RecordRepr, Records, RecordsMut, ReplayWindow,
};
use proptest::prelude::*;

fn content_type() -> impl Strategy<Value = ContentType> {
    prop_oneof![
        Just(ContentType::ChangeCipherSpec),
        Just(ContentType::Alert),
        Just(ContentType::Handshake),
        Just(ContentType::ApplicationData),
        Just(ContentType::Heartbeat),
    ]
}

fn repr(max_len: u16) -> impl Strategy<Value = RecordRepr> {
    (
        content_type(),
        prop_oneof![Just(DTLS_1_0), Just(DTLS_1_2)],
        any::<u16>(),
        0..=MAX_SEQUENCE,
        0..=max_len,
    )
        .prop_map(
            |(content_type, version, epoch, sequence, length)| RecordRepr {
                content_type,
                version,
                epoch,
                sequence,
                length,
            },
        )
}

fn encode(r: &RecordRepr, fill: u8) -> Vec<u8> {
    let mut v = vec![fill; r.buffer_len()];
    r.emit_into(&mut v).expect("buffer sized by buffer_len");
    v
}

/// Reference splitter: the well-formed prefix, record by record.
fn reference_split(d: &[u8]) -> (Vec<std::ops::Range<usize>>, usize) {
    let mut out = Vec::new();
    let mut off = 0;
    while d.len() - off >= 13 {
        let len = 13 + usize::from(u16::from_be_bytes([d[off + 11], d[off + 12]]));
        if off + len > d.len() {
            break;
        }
        out.push(off..off + len);
        off += len;
    }
    (out, d.len() - off)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn header_accessors_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..80)) {
        let h = RecordHeader::new_unchecked(&bytes[..]);
        let _ = (h.content_type(), h.version(), h.epoch(), h.sequence(), h.length());
        prop_assert!(h.sequence() <= MAX_SEQUENCE);
        prop_assert!(h.payload().len() <= bytes.len().saturating_sub(HEADER_LEN));
        let checked = RecordHeader::new_checked(&bytes[..]);
        prop_assert_eq!(checked.is_ok(), bytes.len() >= 13 && h.total_len() <= bytes.len());
        if let Ok(repr) = RecordRepr::parse(&h) {
            // parse → emit reproduces the header bytes.
            let mut out = [0u8; HEADER_LEN];
            repr.emit_into(&mut out).expect("13 bytes");
            prop_assert_eq!(&out[..], &bytes[..HEADER_LEN]);
            prop_assert_eq!(h.payload().len(), usize::from(repr.length));
        }
        let mut m = bytes.clone();
        let mut hm = RecordHeader::new_unchecked(&mut m[..]);
        hm.set_sequence(u64::MAX);
        hm.set_length(7);
        let _ = hm.payload_mut();
    }

    #[test]
    fn emit_then_parse_round_trips(r in repr(MAX_CIPHERTEXT_LEN as u16)) {
        let mut buf = vec![0u8; r.buffer_len()];
        let mut h = RecordHeader::new_unchecked(&mut buf[..]);
        r.emit(&mut h);
        prop_assert_eq!(RecordRepr::parse(&h), Ok(r));
        prop_assert_eq!(h.payload_mut().len(), usize::from(r.length));
    }

    #[test]
    fn splitter_never_panics_and_consumes_the_well_formed_prefix(
        d in proptest::collection::vec(any::<u8>(), 0..200),
    ) {
        let (want, dropped) = reference_split(&d);
        let mut it = Records::new(&d);
        let got: Vec<_> = it.by_ref().map(|r| r.range).collect();
        prop_assert_eq!(&got, &want);
        prop_assert_eq!(it.dropped_bytes(), dropped);
        prop_assert_eq!(it.consumed_bytes() + dropped, d.len());
        let mut m = d.clone();
        let mut itm = RecordsMut::new(&mut m);
        let lens: Vec<_> = itm.by_ref().map(|h| h.total_len()).collect();
        prop_assert_eq!(lens, want.iter().map(|r| r.len()).collect::<Vec<_>>());
        prop_assert_eq!(itm.dropped_bytes(), dropped);
    }

    #[test]
    fn splitter_yields_built_records_and_drops_a_truncated_tail(
        reprs in proptest::collection::vec(repr(300), 0..6),
        tail in repr(300),
        cut in 1usize..400,
    ) {
        let mut d = Vec::new();
        for (i, r) in reprs.iter().enumerate() {
            d.extend(encode(r, i as u8));
        }
        let complete = d.len();
        let tail_bytes = encode(&tail, 0xee);
        let keep = tail_bytes.len().saturating_sub(cut);
        d.extend_from_slice(&tail_bytes[..keep]);
        let mut it = Records::new(&d);
        let parsed: Vec<RecordRepr> = it
            .by_ref()
            .map(|r| RecordRepr::parse(&r.header).expect("built records are valid"))
            .collect();
        prop_assert_eq!(&parsed, &reprs);
        prop_assert_eq!(it.dropped_bytes(), keep);
        prop_assert_eq!(it.consumed_bytes(), complete);
    }

    #[test]
    fn opener_never_panics_and_never_accepts_noise(
        d in proptest::collection::vec(any::<u8>(), 0..120),
        which in 0usize..3,
        epoch in 0u16..3,
    ) {
        let aead = Aead::ALL[which];
        let key = RecordKey::new(aead, &vec![1; aead.key_len()], &vec![2; aead.fixed_iv_len()])
            .expect("valid key");
        let mut o = Opener::new(1, key, ReplayWindow::new(64));
        let mut d = d;
        if d.len() >= HEADER_LEN {
            // Make some inputs reach the AEAD: a consistent header for epoch 0..3.
            d[0] = 23;
            d[1] = 0xfe;
            d[2] = 0xfd;
            d[3..5].copy_from_slice(&epoch.to_be_bytes());
            let len = (d.len() - HEADER_LEN) as u16;
            d[11..13].copy_from_slice(&len.to_be_bytes());
        }
        let window = o.window().clone();
        prop_assert!(o.open(&mut d).is_err());
        prop_assert_eq!(o.window(), &window);
    }

    #[test]
    fn replay_window_matches_model(
        size_words in 1usize..8,
        steps in proptest::collection::vec((any::<bool>(), 0u64..2000, any::<bool>()), 1..300),
    ) {
        let size = size_words * 64;
        let mut w = ReplayWindow::try_new(size).expect("valid size");
        let mut seen = BTreeSet::new();
        let mut top = 0u64;
        for (forward, delta, authentic) in steps {
            let seq = if forward { top + delta } else { top.saturating_sub(delta) };
            let model_ok = seq > top
                || (top - seq < size as u64 && !seen.contains(&seq));
            prop_assert_eq!(w.check(seq).is_ok(), model_ok, "seq {}", seq);
            // Only authentic records update the window (a forged one is checked only).
            if model_ok && authentic {
                w.update(seq);
                seen.insert(seq);
                top = top.max(seq);
            }
        }
    }
}
