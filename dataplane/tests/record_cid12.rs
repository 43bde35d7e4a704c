//! DTLS 1.2 records with connection ID (RFC 9146): round trips per AEAD and CID length, the
//! record format and the RFC 9146 §5 AAD checked against aws-lc directly, tampering,
//! replay, padding, wrong CIDs and CID lengths, and the mixed-datagram walker.

use aws_lc_rs::aead::{AES_128_GCM, AES_256_GCM, Aad, CHACHA20_POLY1305, LessSafeKey, Nonce};
use aws_lc_rs::aead::{Algorithm, UnboundKey};
use dataplane::record::v13::{MixedKind, MixedRecordsMut};
use dataplane::record::{
    Aead, CidOpenError, CidOpener, CidRecordHeader, CidRecordRepr, CidSealer, CidSetupError,
    CidWireError, ContentType, DTLS_1_2, MAX_PLAINTEXT_LEN, MAX_SEQUENCE, Opener, RecordKey,
    ReplayWindow, Replayed, SealError, Sealer,
};

const EPOCH: u16 = 1;
const CID_LENGTHS: [usize; 5] = [1, 8, 20, 21, 255];

fn key_bytes(aead: Aead) -> (Vec<u8>, Vec<u8>) {
    let key = (0..aead.key_len()).map(|i| i as u8 ^ 0x5a).collect();
    let iv = (0..aead.fixed_iv_len()).map(|i| 0xa0 + i as u8).collect();
    (key, iv)
}

fn record_key(aead: Aead) -> RecordKey {
    let (k, iv) = key_bytes(aead);
    RecordKey::new(aead, &k, &iv).expect("valid key")
}

fn cid(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31) ^ 0xc3)
        .collect()
}

fn pair(aead: Aead, cid: &[u8]) -> (CidSealer, CidOpener) {
    (
        CidSealer::new(EPOCH, record_key(aead), 0, cid).expect("valid sealer"),
        CidOpener::new(EPOCH, record_key(aead), ReplayWindow::new(128), cid).expect("valid"),
    )
}

fn content(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + 1) as u8).collect()
}

fn seal(sealer: &mut CidSealer, ct: ContentType, msg: &[u8], padding: usize) -> Vec<u8> {
    let mut rec = vec![0xeeu8; sealer.record_len(msg.len(), padding) + 5];
    let at = sealer.plaintext_offset();
    rec[at..at + msg.len()].copy_from_slice(msg);
    let len = sealer
        .seal(ct, &mut rec, msg.len(), padding)
        .expect("seal succeeds");
    assert_eq!(len, sealer.record_len(msg.len(), padding));
    rec.truncate(len);
    rec
}

#[test]
fn round_trip_every_aead_cid_length_and_size() {
    for aead in Aead::ALL {
        for cid_len in CID_LENGTHS {
            let cid = cid(cid_len);
            let (mut sealer, mut opener) = pair(aead, &cid);
            assert_eq!(sealer.header_len(), 13 + cid_len);
            let cases = [
                (ContentType::ApplicationData, 0, 0),
                (ContentType::Handshake, 1, 0),
                (ContentType::Alert, 2, 3),
                (ContentType::Heartbeat, 100, 28),
                (ContentType::ApplicationData, MAX_PLAINTEXT_LEN - 1, 0),
                (ContentType::ApplicationData, 0, MAX_PLAINTEXT_LEN - 1),
            ];
            for (i, (ct, len, padding)) in cases.into_iter().enumerate() {
                let msg = content(len);
                let mut rec = seal(&mut sealer, ct, &msg, padding);
                let opened = opener
                    .open(&mut rec)
                    .unwrap_or_else(|e| panic!("{aead:?} cid {cid_len} len {len}: {e}"));
                assert_eq!(opened.plaintext, &msg[..]);
                assert_eq!(opened.content_type, ct);
                assert_eq!(opened.sequence, i as u64);
                assert!(opened.newest);
            }
            assert_eq!(sealer.next_sequence(), cases.len() as u64);
            assert_eq!(opener.failed_authentications(), 0);
        }
    }
}

#[test]
fn zero_length_cid_means_plain_records() {
    // RFC 9146 §3: an empty CID asks for none; records are then plain RFC 6347 records.
    for aead in Aead::ALL {
        assert_eq!(
            CidSealer::new(EPOCH, record_key(aead), 0, &[]).expect_err("empty CID"),
            CidSetupError::EmptyCid
        );
        assert_eq!(
            CidOpener::new(EPOCH, record_key(aead), ReplayWindow::new(64), &[])
                .expect_err("empty CID"),
            CidSetupError::EmptyCid
        );
        let mut sealer = Sealer::new(EPOCH, record_key(aead), 0).expect("valid");
        let mut opener = Opener::new(EPOCH, record_key(aead), ReplayWindow::new(64));
        let msg = b"plain";
        let mut rec = vec![0u8; sealer.record_len(msg.len())];
        let at = sealer.plaintext_offset();
        rec[at..at + msg.len()].copy_from_slice(msg);
        let n = sealer
            .seal(ContentType::ApplicationData, DTLS_1_2, &mut rec, msg.len())
            .expect("seal");
        assert_eq!(rec[0], 23, "the real type on the wire, not tls12_cid");
        assert_eq!(opener.open(&mut rec[..n]).expect("opens").plaintext, msg);
    }
}

fn algorithm(aead: Aead) -> &'static Algorithm {
    match aead {
        Aead::Aes128Gcm => &AES_128_GCM,
        Aead::Aes256Gcm => &AES_256_GCM,
        Aead::ChaCha20Poly1305 => &CHACHA20_POLY1305,
    }
}

/// The nonce of a record, built by hand: RFC 5288 §3 (salt ‖ explicit nonce from the
/// record) or RFC 7905 §2 (IV XOR left-padded epoch‖sequence).
fn reference_nonce(aead: Aead, epoch_seq: u64, explicit: &[u8]) -> [u8; 12] {
    let (_, iv) = key_bytes(aead);
    let mut nonce = [0u8; 12];
    match aead {
        Aead::Aes128Gcm | Aead::Aes256Gcm => {
            nonce[..4].copy_from_slice(&iv);
            nonce[4..].copy_from_slice(explicit);
        }
        Aead::ChaCha20Poly1305 => {
            nonce.copy_from_slice(&iv);
            for (n, s) in nonce[4..].iter_mut().zip(epoch_seq.to_be_bytes()) {
                *n ^= s;
            }
        }
    }
    nonce
}

/// Opens `sealed` (ciphertext ‖ tag) with aws-lc directly.
fn reference_open(aead: Aead, nonce: [u8; 12], aad: &[u8], sealed: &[u8]) -> Option<Vec<u8>> {
    let (k, _) = key_bytes(aead);
    let key = LessSafeKey::new(UnboundKey::new(algorithm(aead), &k).expect("valid key"));
    let mut buf = sealed.to_vec();
    let plain = key
        .open_in_place(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(aad),
            &mut buf,
        )
        .ok()?;
    Some(plain.to_vec())
}

/// Seals `inner` (a whole DTLSInnerPlaintext) with aws-lc directly into a tls12_cid record.
fn reference_seal(aead: Aead, cid: &[u8], sequence: u64, inner: &[u8]) -> Vec<u8> {
    let (k, _) = key_bytes(aead);
    let key = LessSafeKey::new(UnboundKey::new(algorithm(aead), &k).expect("valid key"));
    let epoch_seq = (u64::from(EPOCH) << 48) | sequence;
    let explicit: Vec<u8> = match aead {
        Aead::ChaCha20Poly1305 => Vec::new(),
        _ => epoch_seq.to_be_bytes().to_vec(),
    };
    let aad = rfc9146_aad(cid, epoch_seq, inner.len());
    let mut body = inner.to_vec();
    key.seal_in_place_append_tag(
        Nonce::assume_unique_for_key(reference_nonce(aead, epoch_seq, &explicit)),
        Aad::from(&aad),
        &mut body,
    )
    .expect("seal");
    let mut rec = vec![25, 0xfe, 0xfd];
    rec.extend_from_slice(&epoch_seq.to_be_bytes());
    rec.extend_from_slice(cid);
    rec.extend_from_slice(&((explicit.len() + body.len()) as u16).to_be_bytes());
    rec.extend_from_slice(&explicit);
    rec.extend_from_slice(&body);
    rec
}

/// RFC 9146 §5, written out field by field.
fn rfc9146_aad(cid: &[u8], epoch_seq: u64, inner_len: usize) -> Vec<u8> {
    let mut aad = vec![0xff; 8]; // seq_num_placeholder
    aad.push(25); // tls12_cid
    aad.push(cid.len() as u8); // cid_length
    aad.push(25); // tls12_cid
    aad.extend_from_slice(&[0xfe, 0xfd]); // DTLSCiphertext.version
    aad.extend_from_slice(&epoch_seq.to_be_bytes()); // epoch ‖ sequence_number
    aad.extend_from_slice(cid); // cid
    aad.extend_from_slice(&(inner_len as u16).to_be_bytes()); // length_of_DTLSInnerPlaintext
    aad
}

#[test]
fn record_format_and_aad_match_rfc_9146() {
    for aead in Aead::ALL {
        for cid_len in CID_LENGTHS {
            let cid = cid(cid_len);
            let mut sealer =
                CidSealer::new(EPOCH, record_key(aead), 0x0000_1234_5678, &cid).expect("valid");
            let msg = b"the record body";
            let rec = seal(&mut sealer, ContentType::Handshake, msg, 2);
            // Header: tls12_cid, version, epoch, sequence, CID, length (RFC 9146 §4).
            assert_eq!(rec[0], 25);
            assert_eq!(rec[1..3], [0xfe, 0xfd]);
            assert_eq!(rec[3..5], EPOCH.to_be_bytes());
            assert_eq!(rec[5..11], [0, 0, 0x12, 0x34, 0x56, 0x78]);
            assert_eq!(&rec[11..11 + cid_len], &cid[..]);
            let header_len = 13 + cid_len;
            let length = u16::from_be_bytes([rec[header_len - 2], rec[header_len - 1]]);
            assert_eq!(usize::from(length), rec.len() - header_len);
            let epoch_seq = (u64::from(EPOCH) << 48) | 0x1234_5678;
            let explicit_len = aead.explicit_nonce_len();
            let explicit = &rec[header_len..header_len + explicit_len];
            if explicit_len == 8 {
                assert_eq!(explicit, epoch_seq.to_be_bytes());
            }
            let sealed = &rec[header_len + explicit_len..];
            let inner_len = msg.len() + 1 + 2;
            assert_eq!(sealed.len(), inner_len + 16);
            let nonce = reference_nonce(aead, epoch_seq, explicit);
            let aad = rfc9146_aad(&cid, epoch_seq, inner_len);
            assert_eq!(aad.len(), 23 + cid_len);
            let inner = reference_open(aead, nonce, &aad, sealed).expect("RFC 9146 AAD opens");
            let mut want = msg.to_vec();
            want.extend_from_slice(&[22, 0, 0]);
            assert_eq!(inner, want, "content ‖ real_type ‖ zeros");

            // Neither the RFC 6347 AAD (seq ‖ type ‖ version ‖ length) nor the AAD of the
            // drafts (seq ‖ tls12_cid ‖ version ‖ cid ‖ cid_length ‖ length) opens it.
            let mut rfc6347 = epoch_seq.to_be_bytes().to_vec();
            rfc6347.extend_from_slice(&[25, 0xfe, 0xfd]);
            rfc6347.extend_from_slice(&(inner_len as u16).to_be_bytes());
            assert!(reference_open(aead, nonce, &rfc6347, sealed).is_none());
            let mut draft = epoch_seq.to_be_bytes().to_vec();
            draft.extend_from_slice(&[25, 0xfe, 0xfd]);
            draft.extend_from_slice(&cid);
            draft.push(cid_len as u8);
            draft.extend_from_slice(&(inner_len as u16).to_be_bytes());
            assert!(reference_open(aead, nonce, &draft, sealed).is_none());

            // And a record built by hand to RFC 9146 opens with the CidOpener.
            let mut opener =
                CidOpener::new(EPOCH, record_key(aead), ReplayWindow::new(64), &cid).expect("ok");
            let mut theirs = reference_seal(aead, &cid, 77, b"hello\x17\0\0\0");
            let opened = opener.open(&mut theirs).expect("hand-built record opens");
            assert_eq!(opened.plaintext, b"hello");
            assert_eq!(opened.content_type, ContentType::ApplicationData);
            assert_eq!(opened.sequence, 77);
        }
    }
}

#[test]
fn tampering_with_any_byte_is_rejected() {
    for aead in Aead::ALL {
        for cid_len in [1, 8] {
            let cid = cid(cid_len);
            let (mut sealer, mut opener) = pair(aead, &cid);
            let rec = seal(
                &mut sealer,
                ContentType::ApplicationData,
                b"do not touch",
                3,
            );
            for i in 0..rec.len() {
                for flip in [0x01u8, 0x80] {
                    let mut bad = rec.clone();
                    bad[i] ^= flip;
                    let got = opener.open(&mut bad);
                    assert!(
                        got.is_err(),
                        "{aead:?} cid {cid_len} byte {i} flip {flip:#x}"
                    );
                    if (11..11 + cid_len).contains(&i) {
                        assert_eq!(got, Err(CidOpenError::WrongCid), "CID byte {i}");
                    }
                }
            }
            // The explicit nonce of GCM, the ciphertext and the tag reach the AEAD.
            assert!(opener.failed_authentications() > 0);
            assert_eq!(opener.window().highest(), 0, "no failure moved the window");
            // Cut or lengthened records fail too.
            for n in 0..rec.len() {
                assert!(opener.open(&mut rec[..n].to_vec()).is_err(), "cut to {n}");
            }
            let mut longer = rec.clone();
            longer.push(0);
            assert!(matches!(
                opener.open(&mut longer),
                Err(CidOpenError::TrailingBytes { .. })
            ));
            let mut good = rec.clone();
            assert_eq!(
                opener
                    .open(&mut good)
                    .expect("the original opens")
                    .plaintext,
                b"do not touch"
            );
        }
    }
}

#[test]
fn the_aad_binds_the_cid_and_the_length() {
    // An AEAD failure, not a parse error: a record sealed under one CID, with the CID
    // bytes rewritten to the opener's, fails the tag (the CID is in the AAD).
    for aead in Aead::ALL {
        let (a, b) = ([1u8, 2, 3, 4], [1u8, 2, 3, 5]);
        let mut sealer = CidSealer::new(EPOCH, record_key(aead), 0, &a).expect("valid");
        let mut opener =
            CidOpener::new(EPOCH, record_key(aead), ReplayWindow::new(64), &b).expect("ok");
        let mut rec = seal(&mut sealer, ContentType::ApplicationData, b"x", 0);
        assert_eq!(opener.open(&mut rec.clone()), Err(CidOpenError::WrongCid));
        rec[11..15].copy_from_slice(&b);
        assert_eq!(
            opener.open(&mut rec),
            Err(CidOpenError::AuthenticationFailed)
        );
        // Padding moved into the content changes length_of_DTLSInnerPlaintext: sealing
        // "x" with one zero of padding is not sealing "x\0".
        let (mut s, mut o) = pair(aead, &a);
        let padded = seal(&mut s, ContentType::ApplicationData, b"x", 1);
        let mut longer = seal(&mut s, ContentType::ApplicationData, b"x\0", 0);
        assert_eq!(padded.len(), longer.len());
        assert_eq!(o.open(&mut padded.clone()).expect("opens").plaintext, b"x");
        assert_eq!(o.open(&mut longer).expect("opens").plaintext, b"x\0");
    }
}

#[test]
fn a_record_with_another_cid_length_fails_cleanly() {
    for aead in Aead::ALL {
        let long = cid(8);
        let mut sealer = CidSealer::new(EPOCH, record_key(aead), 0, &long).expect("valid");
        let rec = seal(&mut sealer, ContentType::ApplicationData, b"routing", 0);
        for other in [1usize, 4, 7, 9, 20, 255] {
            // The opener's CID as a prefix of the record's and as something else.
            for own in [cid(other), vec![0x42; other]] {
                let mut opener =
                    CidOpener::new(EPOCH, record_key(aead), ReplayWindow::new(64), &own)
                        .expect("ok");
                let mut copy = rec.clone();
                let got = opener.open(&mut copy);
                assert!(got.is_err(), "{aead:?} opener cid {other}: {got:?}");
                assert_eq!(opener.window().highest(), 0);
            }
        }
        // The header parser with the wrong length disagrees on where the length sits.
        let h = CidRecordHeader::new_unchecked(&rec[..], 4);
        assert!(CidRecordRepr::parse(&h).is_err());
        let h = CidRecordHeader::new_checked(&rec[..], 8).expect("right length");
        assert_eq!(CidRecordRepr::parse(&h).expect("valid").cid, &long[..]);
    }
}

#[test]
fn replays_are_refused_and_reordering_within_the_window_accepted() {
    for aead in Aead::ALL {
        let cid = cid(5);
        let (mut sealer, mut opener) = pair(aead, &cid);
        let recs: Vec<_> = (0..200)
            .map(|_| seal(&mut sealer, ContentType::ApplicationData, b"data", 0))
            .collect();
        let open = |o: &mut CidOpener, i: usize| {
            let mut r = recs[i].clone();
            o.open(&mut r).map(|x| (x.sequence, x.newest))
        };
        assert_eq!(open(&mut opener, 0), Ok((0, true)));
        assert_eq!(
            open(&mut opener, 0),
            Err(CidOpenError::Replayed(Replayed::Duplicate))
        );
        assert_eq!(open(&mut opener, 199), Ok((199, true)));
        // 150 is inside the 128-record window below 199, and not the newest; 50 is not.
        assert_eq!(open(&mut opener, 150), Ok((150, false)));
        assert_eq!(
            open(&mut opener, 150),
            Err(CidOpenError::Replayed(Replayed::Duplicate))
        );
        assert_eq!(
            open(&mut opener, 50),
            Err(CidOpenError::Replayed(Replayed::TooOld))
        );
        assert_eq!(opener.failed_authentications(), 0);
    }
}

#[test]
fn forged_records_never_move_the_window_and_count_toward_the_limit() {
    for aead in Aead::ALL {
        let cid = cid(3);
        let (mut sealer, opener) = pair(aead, &cid);
        let mut opener = opener.with_integrity_limit(3);
        let rec = seal(&mut sealer, ContentType::ApplicationData, b"real", 0);
        for i in 0..3 {
            assert!(!opener.integrity_limit_reached());
            let mut forged = rec.clone();
            // The largest sequence number, and a broken tag.
            forged[5..11].copy_from_slice(&MAX_SEQUENCE.to_be_bytes()[2..]);
            let last = forged.len() - 1;
            forged[last] ^= i + 1;
            assert_eq!(
                opener.open(&mut forged),
                Err(CidOpenError::AuthenticationFailed)
            );
            // No unauthenticated plaintext stays in the buffer.
            let start = 13 + cid.len() + aead.explicit_nonce_len();
            assert!(forged[start..last - 15].iter().all(|&b| b == 0));
        }
        assert!(opener.integrity_limit_reached());
        assert_eq!(opener.failed_authentications(), 3);
        assert_eq!(opener.window().highest(), 0);
        assert_eq!(
            opener.open(&mut rec.clone()).expect("opens").plaintext,
            b"real"
        );
    }
}

#[test]
fn wrong_epoch_type_and_version_are_rejected_before_the_aead() {
    let aead = Aead::Aes128Gcm;
    let cid = cid(4);
    let (mut sealer, mut opener) = pair(aead, &cid);
    let rec = seal(&mut sealer, ContentType::ApplicationData, b"e", 0);
    let mut bad = rec.clone();
    bad[4] = 2;
    assert_eq!(
        opener.open(&mut bad),
        Err(CidOpenError::WrongEpoch {
            expected: 1,
            got: 2
        })
    );
    let mut bad = rec.clone();
    bad[0] = 23;
    assert_eq!(
        opener.open(&mut bad),
        Err(CidOpenError::Malformed(CidWireError::NotCidRecord(23)))
    );
    let mut bad = rec.clone();
    bad[2] = 0xff;
    assert_eq!(
        opener.open(&mut bad),
        Err(CidOpenError::Malformed(CidWireError::UnsupportedVersion(
            0xfeff
        )))
    );
    assert_eq!(opener.failed_authentications(), 0);
    // A fragment too short for explicit nonce, tag and type byte.
    let mut short = rec[..15].to_vec();
    short.extend_from_slice(&24u16.to_be_bytes());
    short.extend_from_slice(&[0; 24]);
    assert_eq!(opener.open(&mut short), Err(CidOpenError::TooShort(24)));
}

#[test]
fn all_zero_and_unknown_inner_types_authenticate_and_are_refused() {
    for aead in Aead::ALL {
        let cid = cid(6);
        let mut opener =
            CidOpener::new(EPOCH, record_key(aead), ReplayWindow::new(64), &cid).expect("ok");
        let mut zeros = reference_seal(aead, &cid, 4, &[0; 9]);
        assert_eq!(opener.open(&mut zeros), Err(CidOpenError::NoContentType));
        // It authenticated: the window took it.
        assert_eq!(
            opener.open(&mut reference_seal(aead, &cid, 4, &[0; 9])),
            Err(CidOpenError::Replayed(Replayed::Duplicate))
        );
        let mut nested = reference_seal(aead, &cid, 5, b"abc\x19\0");
        assert_eq!(
            opener.open(&mut nested),
            Err(CidOpenError::UnknownContentType(25))
        );
        // Content that ends in zeros keeps them when the type byte follows.
        let mut trailing = reference_seal(aead, &cid, 6, b"ab\0\0\x17\0\0");
        assert_eq!(
            opener.open(&mut trailing).expect("opens").plaintext,
            b"ab\0\0"
        );
        // An inner plaintext of 2^14 + 1 bytes is refused before the AEAD (RFC 9146 §5).
        let mut big = reference_seal(aead, &cid, 7, &vec![0x17; MAX_PLAINTEXT_LEN + 1]);
        assert_eq!(
            opener.open(&mut big),
            Err(CidOpenError::PlaintextTooLong(MAX_PLAINTEXT_LEN + 1))
        );
        assert_eq!(opener.failed_authentications(), 0);
    }
}

#[test]
fn sealer_limits() {
    let aead = Aead::ChaCha20Poly1305;
    let cid = cid(2);
    let mut sealer = CidSealer::new(EPOCH, record_key(aead), MAX_SEQUENCE, &cid).expect("valid");
    let mut buf = vec![0u8; sealer.record_len(MAX_PLAINTEXT_LEN, 1)];
    // Content, type byte and padding over 2^14.
    assert_eq!(
        sealer.seal(ContentType::ApplicationData, &mut buf, MAX_PLAINTEXT_LEN, 0),
        Err(SealError::PlaintextTooLong(MAX_PLAINTEXT_LEN + 1))
    );
    assert_eq!(
        sealer.seal(ContentType::ApplicationData, &mut buf, 10, usize::MAX),
        Err(SealError::PlaintextTooLong(usize::MAX))
    );
    let need = sealer.record_len(4, 0);
    assert_eq!(
        sealer.seal(ContentType::ApplicationData, &mut buf[..need - 1], 4, 0),
        Err(SealError::BufferTooSmall {
            len: need - 1,
            need
        })
    );
    assert_eq!(sealer.sequences_left(), 1);
    assert_eq!(
        sealer.seal(ContentType::ApplicationData, &mut buf, 4, 0),
        Ok(need)
    );
    assert_eq!(sealer.sequences_left(), 0);
    assert_eq!(
        sealer.seal(ContentType::ApplicationData, &mut buf, 4, 0),
        Err(SealError::SequenceExhausted)
    );
}

#[test]
fn a_datagram_of_cid_records_walks_and_opens_in_place() {
    for aead in Aead::ALL {
        let cid = cid(8);
        let (mut sealer, mut opener) = pair(aead, &cid);
        let mut datagram = Vec::new();
        let msgs: [&[u8]; 3] = [b"one", b"", b"three"];
        for (i, m) in msgs.iter().enumerate() {
            datagram.extend(seal(&mut sealer, ContentType::ApplicationData, m, i));
        }
        let mut walk = MixedRecordsMut::new(&mut datagram, cid.len());
        let mut got = Vec::new();
        for r in walk.by_ref() {
            assert_eq!(r.kind, MixedKind::Dtls12Cid);
            got.push(opener.open(r.bytes).expect("opens").plaintext.to_vec());
        }
        assert_eq!(walk.dropped_bytes(), 0);
        assert_eq!(got, msgs.map(<[u8]>::to_vec));
    }
}
