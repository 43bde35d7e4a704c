//! Property tests of the tls12_cid record layer (RFC 9146): parsing and opening never
//! panic on any bytes, the header parser delimits records exactly as the mixed-datagram
//! walker does, and sealed records round-trip while damaged ones never open.

use dataplane::record::v13::{MixedKind, MixedRecords};
use dataplane::record::{
    Aead, CidOpener, CidRecordHeader, CidRecordRepr, CidSealer, ContentType, RecordKey,
    ReplayWindow,
};
use proptest::prelude::*;

fn aead() -> impl Strategy<Value = Aead> {
    prop_oneof![
        Just(Aead::Aes128Gcm),
        Just(Aead::Aes256Gcm),
        Just(Aead::ChaCha20Poly1305),
    ]
}

fn key(aead: Aead) -> RecordKey {
    RecordKey::new(
        aead,
        &vec![0x42; aead.key_len()],
        &vec![7; aead.fixed_iv_len()],
    )
    .expect("valid lengths")
}

fn content_type() -> impl Strategy<Value = ContentType> {
    prop_oneof![
        Just(ContentType::ChangeCipherSpec),
        Just(ContentType::Alert),
        Just(ContentType::Handshake),
        Just(ContentType::ApplicationData),
        Just(ContentType::Heartbeat),
    ]
}

/// Bytes that often start like a tls12_cid record.
fn record_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..80),
        (proptest::collection::vec(any::<u8>(), 0..80), any::<u16>()).prop_map(|(mut v, e)| {
            let head = [25u8, 0xfe, 0xfd, (e >> 8) as u8, e as u8];
            let n = head.len().min(v.len());
            v[..n].copy_from_slice(&head[..n]);
            v
        }),
    ]
}

proptest! {
    #[test]
    fn parsing_never_panics_and_agrees_with_the_walker(
        bytes in record_bytes(),
        cid_len in prop_oneof![0usize..40, 250usize..300, Just(usize::MAX)],
    ) {
        let h = CidRecordHeader::new_unchecked(&bytes[..], cid_len);
        let _ = (h.content_type(), h.version(), h.epoch(), h.sequence(), h.cid(), h.length());
        let _ = (h.payload(), h.total_len(), h.header_len());
        let checked = h.check_len();
        let _ = CidRecordRepr::parse(&h);
        // The walker's rule (record/v13/split.rs) and ours delimit the same record.
        if bytes.first() == Some(&25) {
            let walked = MixedRecords::new(&bytes, cid_len).next();
            match (checked, walked) {
                (Ok(()), Some(r)) => {
                    prop_assert_eq!(r.kind, MixedKind::Dtls12Cid);
                    prop_assert_eq!(r.bytes.len(), h.total_len());
                }
                (Err(_), None) => {}
                (c, w) => prop_assert!(false, "header {:?} walker {:?}", c, w),
            }
        }
        if let Ok(repr) = CidRecordRepr::parse(&h) {
            let mut out = vec![0u8; repr.header_len()];
            repr.emit_into(&mut out).expect("parsed headers re-emit");
            prop_assert_eq!(&out[..], &bytes[..repr.header_len()]);
        }
    }

    #[test]
    fn opening_any_bytes_never_panics(
        aead in aead(),
        bytes in record_bytes(),
        cid_len in 1usize..=255,
    ) {
        let cid = vec![0u8; cid_len];
        let mut opener = CidOpener::new(0, key(aead), ReplayWindow::new(64), &cid)
            .expect("valid");
        let mut b = bytes.clone();
        prop_assert!(opener.open(&mut b).is_err());
    }

    #[test]
    fn sealed_records_open_and_damaged_ones_never_do(
        aead in aead(),
        cid in proptest::collection::vec(any::<u8>(), 1..=255),
        ct in content_type(),
        msg in proptest::collection::vec(any::<u8>(), 0..300),
        padding in 0usize..64,
        seq in 0u64..(1 << 48),
        damage in proptest::collection::vec((any::<usize>(), 1u8..=255), 1..4),
        other_len in 1usize..=255,
    ) {
        let mut sealer = CidSealer::new(3, key(aead), seq, &cid).expect("valid");
        let mut rec = vec![0u8; sealer.record_len(msg.len(), padding)];
        let at = sealer.plaintext_offset();
        rec[at..at + msg.len()].copy_from_slice(&msg);
        let n = sealer.seal(ct, &mut rec, msg.len(), padding).expect("seal");
        prop_assert_eq!(n, rec.len());

        let mut bad = rec.clone();
        for (at, flip) in &damage {
            let i = at % bad.len();
            bad[i] ^= flip;
        }
        let mut opener = CidOpener::new(3, key(aead), ReplayWindow::new(64), &cid)
            .expect("valid");
        if bad != rec {
            prop_assert!(opener.open(&mut bad).is_err());
        }
        // A record for another CID length fails without panicking.
        if other_len != cid.len() {
            let other = vec![0x5au8; other_len];
            let mut wrong = CidOpener::new(3, key(aead), ReplayWindow::new(64), &other)
                .expect("valid");
            prop_assert!(wrong.open(&mut rec.clone()).is_err());
        }
        let opened = opener.open(&mut rec).expect("the sealed record opens");
        prop_assert_eq!(opened.content_type, ct);
        prop_assert_eq!(opened.sequence, seq);
        prop_assert_eq!(&opened.plaintext[..], &msg[..]);
    }
}
