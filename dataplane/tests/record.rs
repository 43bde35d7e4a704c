//! Record protection: round trips, the record formats checked independently against raw
//! aws-lc-rs, tampering, epochs, replay, per-key limits.

use aws_lc_rs::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey};
use dataplane::record::{
    Aead, ContentType, DTLS_1_0, DTLS_1_2, HEADER_LEN, MAX_CIPHERTEXT_LEN, MAX_PLAINTEXT_LEN,
    MAX_SEQUENCE, OpenError, Opener, RecordHeader, RecordKey, RecordRepr, RecordsMut, ReplayWindow,
    Replayed, SealError, Sealer, WireError,
};

const EPOCH: u16 = 1;
const SIZES: [usize; 8] = [0, 1, 15, 64, 256, 1200, 1400, MAX_PLAINTEXT_LEN];

fn key_bytes(aead: Aead) -> (Vec<u8>, Vec<u8>) {
    let key = (0..aead.key_len()).map(|i| i as u8 ^ 0x5a).collect();
    let iv = (0..aead.fixed_iv_len()).map(|i| 0xa0 + i as u8).collect();
    (key, iv)
}

fn record_key(aead: Option<Aead>) -> RecordKey {
    match aead {
        None => RecordKey::null_baseline(),
        Some(aead) => {
            let (k, iv) = key_bytes(aead);
            RecordKey::new(aead, &k, &iv).expect("valid key")
        }
    }
}

fn pair(aead: Option<Aead>, next_seq: u64) -> (Sealer, Opener) {
    let sealer = Sealer::new(EPOCH, record_key(aead), next_seq).expect("valid start");
    let opener = Opener::new(EPOCH, record_key(aead), ReplayWindow::new(64));
    (sealer, opener)
}

fn all() -> [Option<Aead>; 4] {
    [
        None,
        Some(Aead::Aes128Gcm),
        Some(Aead::Aes256Gcm),
        Some(Aead::ChaCha20Poly1305),
    ]
}

fn plaintext(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + 3) as u8).collect()
}

/// Seals `pt` as application data and returns the record bytes.
fn seal(sealer: &mut Sealer, pt: &[u8]) -> Vec<u8> {
    let mut buf = vec![0u8; sealer.record_len(pt.len())];
    let off = sealer.plaintext_offset();
    buf[off..off + pt.len()].copy_from_slice(pt);
    let n = sealer
        .seal(ContentType::ApplicationData, DTLS_1_2, &mut buf, pt.len())
        .expect("seal");
    assert_eq!(n, buf.len());
    buf
}

#[test]
fn round_trip_every_protection_and_size() {
    for aead in all() {
        let (mut s, mut o) = pair(aead, 0);
        assert_eq!(s.aead(), aead);
        assert_eq!(o.aead(), aead);
        for (i, &size) in SIZES.iter().enumerate() {
            let pt = plaintext(size);
            let mut rec = seal(&mut s, &pt);
            let repr = RecordRepr::parse(&RecordHeader::new_unchecked(&rec[..])).expect("parse");
            assert_eq!(repr.content_type, ContentType::ApplicationData);
            assert_eq!(repr.version, DTLS_1_2);
            assert_eq!(repr.epoch, EPOCH);
            assert_eq!(repr.sequence, i as u64);
            assert_eq!(usize::from(repr.length), size + s.overhead());
            let body = &rec[s.plaintext_offset()..][..size];
            if aead.is_some() && size >= 16 {
                assert_ne!(body, &pt[..], "{aead:?}: ciphertext must differ");
            } else if aead.is_none() {
                assert_eq!(body, &pt[..], "null baseline carries plaintext");
            }
            let opened = o.open(&mut rec).expect("open");
            assert_eq!(opened.content_type, ContentType::ApplicationData);
            assert_eq!(opened.sequence, i as u64);
            assert_eq!(opened.plaintext, &pt[..]);
        }
        assert_eq!(s.next_sequence(), SIZES.len() as u64);
        assert_eq!(o.failed_authentications(), 0);
    }
}

#[test]
fn overheads() {
    let (s, _) = pair(Some(Aead::Aes128Gcm), 0);
    assert_eq!((s.plaintext_offset(), s.overhead()), (21, 24));
    let (s, _) = pair(Some(Aead::ChaCha20Poly1305), 0);
    assert_eq!((s.plaintext_offset(), s.overhead()), (13, 16));
    let (s, _) = pair(None, 0);
    assert_eq!((s.plaintext_offset(), s.overhead()), (13, 0));
}

/// The record formats, checked against raw aws-lc-rs with nonce and AAD built by hand from
/// the RFC text (not from the crate's helpers).
#[test]
fn record_format_matches_rfc_5288_and_rfc_7905() {
    for aead in Aead::ALL {
        let (k, iv) = key_bytes(aead);
        let epoch = 0x0203;
        let seq = 0x0000_a1b2_c3d4_e5f6 & MAX_SEQUENCE;
        let mut s = Sealer::new(epoch, record_key(Some(aead)), seq).expect("start");
        let pt = plaintext(100);
        let mut rec = vec![0u8; s.record_len(pt.len())];
        let off = s.plaintext_offset();
        rec[off..off + pt.len()].copy_from_slice(&pt);
        s.seal(ContentType::Handshake, DTLS_1_2, &mut rec, pt.len())
            .expect("seal");

        let mut seq_num = [0u8; 8]; // epoch‖sequence
        seq_num[..2].copy_from_slice(&epoch.to_be_bytes());
        seq_num[2..].copy_from_slice(&seq.to_be_bytes()[2..]);
        assert_eq!(rec[0], 22);
        assert_eq!(&rec[1..3], &[0xfe, 0xfd]);
        assert_eq!(&rec[3..11], &seq_num);
        let frag_len = u16::from_be_bytes([rec[11], rec[12]]) as usize;
        assert_eq!(frag_len, rec.len() - HEADER_LEN);

        let mut aad = seq_num.to_vec();
        aad.push(22);
        aad.extend_from_slice(&[0xfe, 0xfd]);
        aad.extend_from_slice(&(pt.len() as u16).to_be_bytes());

        let alg = match aead {
            Aead::Aes128Gcm => &aead::AES_128_GCM,
            Aead::Aes256Gcm => &aead::AES_256_GCM,
            Aead::ChaCha20Poly1305 => &aead::CHACHA20_POLY1305,
        };
        let raw = LessSafeKey::new(UnboundKey::new(alg, &k).expect("key"));
        let mut nonce = [0u8; 12];
        let ct_start = match aead {
            Aead::Aes128Gcm | Aead::Aes256Gcm => {
                // RFC 5288 §3: salt(4) ‖ nonce_explicit(8); the explicit part is in the
                // record, and we send epoch‖sequence.
                assert_eq!(&rec[13..21], &seq_num, "explicit nonce is epoch‖seq");
                nonce[..4].copy_from_slice(&iv);
                nonce[4..].copy_from_slice(&rec[13..21]);
                21
            }
            Aead::ChaCha20Poly1305 => {
                // RFC 7905 §2: IV XOR (0x00000000 ‖ seq_num).
                nonce.copy_from_slice(&iv);
                for i in 0..8 {
                    nonce[4 + i] ^= seq_num[i];
                }
                13
            }
        };
        let mut body = rec[ct_start..].to_vec();
        let out = raw
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(&aad),
                &mut body,
            )
            .expect("raw aws-lc opens our record");
        assert_eq!(out, &pt[..], "{aead:?}");
    }
}

fn assert_auth_fails(o: &mut Opener, rec: &mut [u8], what: &str) {
    let before = o.failed_authentications();
    let window = o.window().clone();
    assert_eq!(o.open(rec), Err(OpenError::AuthenticationFailed), "{what}");
    assert_eq!(o.failed_authentications(), before + 1, "{what}: counted");
    assert_eq!(o.window(), &window, "{what}: window unchanged");
}

#[test]
fn tampering_is_rejected() {
    for aead in Aead::ALL {
        let (mut s, mut o) = pair(Some(aead), 7);
        let pt = plaintext(300);
        let good = seal(&mut s, &pt);
        let tag_at = good.len() - 1;
        let ct_at = s.plaintext_offset() + 150;

        // Each AAD field of the header.
        let mut r = good.clone();
        r[0] = ContentType::Handshake as u8; // type
        assert_auth_fails(&mut o, &mut r, "type");
        let mut r = good.clone();
        r[10] ^= 0x01; // sequence
        assert_auth_fails(&mut o, &mut r, "sequence");
        let mut r = good.clone();
        r[5] ^= 0x80; // sequence, high byte
        assert_auth_fails(&mut o, &mut r, "sequence high byte");
        let mut r = good[..good.len() - 1].to_vec(); // length (one byte shorter record)
        let len = u16::from_be_bytes([r[11], r[12]]) - 1;
        r[11..13].copy_from_slice(&len.to_be_bytes());
        assert_auth_fails(&mut o, &mut r, "length");
        let mut r = good.clone();
        r[1..3].copy_from_slice(&DTLS_1_0.to_be_bytes()); // version
        assert_eq!(
            o.open(&mut r),
            Err(OpenError::Malformed(WireError::UnsupportedVersion(
                DTLS_1_0
            )))
        );
        let mut r = good.clone();
        r[4] ^= 0x01; // epoch
        assert_eq!(
            o.open(&mut r),
            Err(OpenError::WrongEpoch {
                expected: EPOCH,
                got: EPOCH ^ 1
            })
        );

        // Tag, ciphertext, explicit nonce.
        let mut r = good.clone();
        r[tag_at] ^= 0x01;
        assert_auth_fails(&mut o, &mut r, "tag");
        let mut r = good.clone();
        r[ct_at] ^= 0x01;
        assert_auth_fails(&mut o, &mut r, "ciphertext");
        // No unauthenticated plaintext is left behind in the buffer.
        let off = s.plaintext_offset();
        assert!(r[off..off + pt.len()].iter().all(|&b| b == 0), "cleared");
        if aead.explicit_nonce_len() > 0 {
            let mut r = good.clone();
            r[HEADER_LEN + 3] ^= 0x01;
            assert_auth_fails(&mut o, &mut r, "explicit nonce");
        }

        // The untouched record still opens: failures did not move the window.
        let mut r = good.clone();
        assert_eq!(o.open(&mut r).expect("good record").plaintext, &pt[..]);
        assert!(!o.integrity_limit_reached());
    }
}

#[test]
fn wrong_epoch_and_wrong_key_rejected() {
    let (mut s, _) = pair(Some(Aead::Aes128Gcm), 0);
    let mut rec = seal(&mut s, b"hello");
    let mut o2 = Opener::new(2, record_key(Some(Aead::Aes128Gcm)), ReplayWindow::new(64));
    assert_eq!(
        o2.open(&mut rec),
        Err(OpenError::WrongEpoch {
            expected: 2,
            got: 1
        })
    );
    let other = RecordKey::new(Aead::Aes128Gcm, &[9; 16], &[1, 2, 3, 4]).expect("key");
    let mut o3 = Opener::new(EPOCH, other, ReplayWindow::new(64));
    assert_eq!(o3.open(&mut rec), Err(OpenError::AuthenticationFailed));
}

#[test]
fn replays_are_never_delivered() {
    for aead in all() {
        let (mut s, mut o) = pair(aead, 0);
        let records: Vec<Vec<u8>> = (0..200).map(|i| seal(&mut s, &plaintext(i % 50))).collect();
        let mut delivered = vec![0u32; records.len()];
        // Deliver in a scrambled order with every record sent three times.
        let mut order: Vec<usize> = (0..records.len()).flat_map(|i| [i, i, i]).collect();
        let mut x = 12345u64;
        for i in (1..order.len()).rev() {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            order.swap(i, (x >> 33) as usize % (i + 1));
        }
        for i in order {
            let mut r = records[i].clone();
            match o.open(&mut r) {
                Ok(opened) => delivered[opened.sequence as usize] += 1,
                Err(OpenError::Replayed(_)) => {}
                Err(e) => panic!("{aead:?}: unexpected {e}"),
            }
        }
        assert!(
            delivered.iter().all(|&n| n <= 1),
            "{aead:?}: a replay got through"
        );
        let mut r = records[199].clone();
        assert_eq!(
            o.open(&mut r),
            Err(OpenError::Replayed(Replayed::Duplicate))
        );
        let mut r = records[0].clone();
        assert!(matches!(o.open(&mut r), Err(OpenError::Replayed(_))));
    }
}

/// CVE-2016-2181 shape: a forged record with sequence 2^48 - 1 and a bad tag must not
/// move the window (which would make every later genuine record "too old").
#[test]
fn forged_max_sequence_leaves_window_unchanged() {
    for aead in Aead::ALL {
        let (mut s, mut o) = pair(Some(aead), 0);
        let mut first = seal(&mut s, b"one");
        o.open(&mut first).expect("first");
        let mut forger = Sealer::new(EPOCH, record_key(Some(aead)), MAX_SEQUENCE).expect("s");
        let mut forged = seal(&mut forger, b"forged");
        let last = forged.len() - 1;
        forged[last] ^= 0xff;
        let window = o.window().clone();
        assert_auth_fails(&mut o, &mut forged, "forged max sequence");
        assert_eq!(o.window(), &window);
        assert_eq!(o.window().highest(), 0);
        let mut next = seal(&mut s, b"two");
        assert_eq!(o.open(&mut next).expect("genuine").plaintext, b"two");
    }
}

#[test]
fn integrity_limit_is_reported() {
    assert_eq!(Aead::Aes128Gcm.integrity_limit(), 1 << 36);
    let (mut s, o) = pair(Some(Aead::ChaCha20Poly1305), 0);
    assert_eq!(o.integrity_limit(), 1 << 36);
    let mut o = o.with_integrity_limit(3);
    let good = seal(&mut s, b"payload");
    for i in 1..=3 {
        assert!(!o.integrity_limit_reached());
        let mut r = good.clone();
        r[HEADER_LEN] ^= 1;
        assert_eq!(o.open(&mut r), Err(OpenError::AuthenticationFailed));
        assert_eq!(o.failed_authentications(), i);
    }
    assert!(o.integrity_limit_reached());
    // Replays and malformed records are not authentication failures.
    let mut r = good.clone();
    o.open(&mut r).expect("genuine");
    let mut r = good.clone();
    assert!(matches!(o.open(&mut r), Err(OpenError::Replayed(_))));
    assert_eq!(o.failed_authentications(), 3);
}

#[test]
fn sealer_refuses_once_sequence_space_is_spent() {
    for aead in all() {
        let (mut s, mut o) = pair(aead, MAX_SEQUENCE);
        assert_eq!(s.sequences_left(), 1);
        let mut last = seal(&mut s, b"last one");
        assert_eq!(s.sequences_left(), 0);
        assert_eq!(o.open(&mut last).expect("open").sequence, MAX_SEQUENCE);
        let mut buf = vec![0u8; s.record_len(4)];
        assert_eq!(
            s.seal(ContentType::ApplicationData, DTLS_1_2, &mut buf, 4),
            Err(SealError::SequenceExhausted)
        );
        assert_eq!(s.next_sequence(), MAX_SEQUENCE + 1);
        assert!(buf.iter().all(|&b| b == 0), "nothing written");
    }
}

#[test]
fn size_limits() {
    for aead in all() {
        let (mut s, mut o) = pair(aead, 0);
        let mut buf = vec![0u8; s.record_len(MAX_PLAINTEXT_LEN + 1)];
        assert_eq!(
            s.seal(
                ContentType::ApplicationData,
                DTLS_1_2,
                &mut buf,
                MAX_PLAINTEXT_LEN + 1
            ),
            Err(SealError::PlaintextTooLong(MAX_PLAINTEXT_LEN + 1))
        );
        let need = s.record_len(10);
        assert_eq!(
            s.seal(
                ContentType::ApplicationData,
                DTLS_1_2,
                &mut buf[..need - 1],
                10
            ),
            Err(SealError::BufferTooSmall {
                len: need - 1,
                need
            })
        );
        assert_eq!(
            s.next_sequence(),
            0,
            "refused seals consume no sequence number"
        );

        // A fragment over 2^14 + 2048.
        let mut big = vec![0u8; HEADER_LEN + MAX_CIPHERTEXT_LEN + 1];
        let frag = (MAX_CIPHERTEXT_LEN + 1) as u16;
        big[..HEADER_LEN].copy_from_slice(&[23, 0xfe, 0xfd, 0, 1, 0, 0, 0, 0, 0, 9, 0, 0]);
        big[11..13].copy_from_slice(&frag.to_be_bytes());
        assert_eq!(
            o.open(&mut big),
            Err(OpenError::Malformed(WireError::RecordTooLong(frag)))
        );
        // A fragment within 2^14 + 2048 whose plaintext would exceed 2^14.
        let pt_len = MAX_PLAINTEXT_LEN + 1;
        let frag = (pt_len + s.overhead()) as u16;
        let mut big = vec![0u8; HEADER_LEN + usize::from(frag)];
        big[..11].copy_from_slice(&[23, 0xfe, 0xfd, 0, 1, 0, 0, 0, 0, 0, 9]);
        big[11..13].copy_from_slice(&frag.to_be_bytes());
        assert_eq!(o.open(&mut big), Err(OpenError::PlaintextTooLong(pt_len)));
        if aead.is_some() {
            let mut short = vec![23, 0xfe, 0xfd, 0, 1, 0, 0, 0, 0, 0, 9, 0, 10];
            short.extend_from_slice(&[0; 10]);
            assert_eq!(o.open(&mut short), Err(OpenError::TooShort(10)));
        }
        let mut two = seal(&mut s, b"x");
        two.extend_from_slice(&[0]);
        assert!(matches!(
            o.open(&mut two),
            Err(OpenError::TrailingBytes { .. })
        ));
        assert!(matches!(
            o.open(&mut two[..5]),
            Err(OpenError::Malformed(WireError::HeaderTruncated { len: 5 }))
        ));
        assert_eq!(o.failed_authentications(), 0);
    }
}

#[test]
fn datagram_of_several_records_opens_in_place() {
    let (mut s, mut o) = pair(Some(Aead::Aes256Gcm), 0);
    let mut datagram = Vec::new();
    for i in 0..4 {
        datagram.extend(seal(&mut s, &plaintext(10 * i + 1)));
    }
    let complete = datagram.len();
    datagram.extend_from_slice(&[23, 0xfe, 0xfd, 0, 1]); // truncated tail
    let mut records = RecordsMut::new(&mut datagram);
    let mut seen = Vec::new();
    for rec in records.by_ref() {
        let opened = o.open(rec.into_inner()).expect("open");
        assert_eq!(
            opened.plaintext,
            &plaintext(10 * opened.sequence as usize + 1)[..]
        );
        seen.push(opened.sequence);
    }
    assert_eq!(seen, vec![0, 1, 2, 3]);
    assert_eq!(records.dropped_bytes(), datagram.len() - complete);
}

#[test]
fn other_content_types_and_versions_round_trip() {
    let (mut s, mut o) = pair(Some(Aead::Aes128Gcm), 0);
    for ct in [
        ContentType::Alert,
        ContentType::Handshake,
        ContentType::ChangeCipherSpec,
        ContentType::Heartbeat,
    ] {
        let mut buf = vec![0u8; s.record_len(2)];
        let off = s.plaintext_offset();
        buf[off..off + 2].copy_from_slice(&[1, 2]);
        s.seal(ct, DTLS_1_2, &mut buf, 2).expect("seal");
        let opened = o.open(&mut buf).expect("open");
        assert_eq!(opened.content_type, ct);
        assert_eq!(opened.plaintext, &[1, 2]);
    }
}

/// TESTING.md record-layer checklist: 10^6 bad-tag records on a live session are dropped
/// and counted per key; the session keeps working.
#[test]
fn a_million_bad_tags_are_dropped_and_counted() {
    let (mut s, mut o) = pair(Some(Aead::Aes128Gcm), 0);
    let mut first = seal(&mut s, b"live");
    o.open(&mut first).expect("genuine");
    let good = seal(&mut s, b"x");
    let window = o.window().clone();
    let mut r = good.clone();
    for i in 0..1_000_000u32 {
        r.copy_from_slice(&good);
        let last = r.len() - 1;
        r[last] ^= 1 + (i % 255) as u8;
        assert_eq!(o.open(&mut r), Err(OpenError::AuthenticationFailed));
    }
    assert_eq!(o.failed_authentications(), 1_000_000);
    assert_eq!(o.window(), &window);
    assert!(!o.integrity_limit_reached(), "2^36 is far away");
    let mut r = good.clone();
    assert_eq!(o.open(&mut r).expect("genuine").plaintext, b"x");
}
