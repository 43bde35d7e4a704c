//! DTLS 1.3 record protection (RFC 9147 §4): round trips per AEAD and header form, the
//! record format checked against aws-lc directly, tampering, replay, wrong keys, sequence
//! reconstruction across 8- and 16-bit wraps, and mixed datagrams.

use aws_lc_rs::aead::{AES_128_GCM, AES_256_GCM, Aad, CHACHA20_POLY1305, LessSafeKey, Nonce};
use aws_lc_rs::aead::{Algorithm, UnboundKey};
use dataplane::record::v13::{
    DatagramWriter13, HeaderForm, InnerContentType, MixedKind, MixedRecords, MixedRecordsMut,
    Open13Error, Opener13, Seal13Error, Sealer13, SequenceLen, SnKey, TrafficKeys13, UnifiedHeader,
    UnifiedWireError, reconstruct_epoch,
};
use dataplane::record::{Aead, ReplayWindow, Replayed};

const CID: [u8; 5] = [0xc0, 0xc1, 0xc2, 0xc3, 0xc4];
const IV: [u8; 12] = [
    0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99, 0xaa, 0xbb, 0xcc,
];

fn key(aead: Aead) -> Vec<u8> {
    (0..aead.key_len()).map(|i| i as u8 ^ 0x5a).collect()
}

fn sn_key(aead: Aead, fill: u8) -> Vec<u8> {
    vec![fill; aead.key_len()]
}

fn keys_with_sn(aead: Aead, sn_fill: u8) -> TrafficKeys13 {
    TrafficKeys13::new(aead, &key(aead), &IV, &sn_key(aead, sn_fill)).expect("valid lengths")
}

fn keys(aead: Aead) -> TrafficKeys13 {
    keys_with_sn(aead, 0x3c)
}

fn pair(aead: Aead, epoch: u64) -> (Sealer13, Opener13) {
    (
        Sealer13::new(epoch, keys(aead)),
        Opener13::new(epoch, keys(aead), ReplayWindow::new(128)),
    )
}

fn forms() -> Vec<HeaderForm<'static>> {
    let mut out = Vec::new();
    for cid in [None, Some(&CID[..])] {
        for sequence in [SequenceLen::Bits8, SequenceLen::Bits16] {
            for length in [true, false] {
                out.push(HeaderForm {
                    cid,
                    sequence,
                    length,
                });
            }
        }
    }
    out
}

fn content(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + 1) as u8).collect()
}

fn seal(
    sealer: &mut Sealer13,
    form: &HeaderForm<'_>,
    ct: InnerContentType,
    msg: &[u8],
    padding: usize,
) -> Vec<u8> {
    let mut rec = vec![0xeeu8; sealer.record_len(form, msg.len(), padding) + 7];
    let at = sealer.plaintext_offset(form);
    rec[at..at + msg.len()].copy_from_slice(msg);
    let len = sealer
        .seal(ct, form, &mut rec, msg.len(), padding)
        .expect("seal succeeds");
    assert_eq!(len, sealer.record_len(form, msg.len(), padding));
    rec.truncate(len);
    rec
}

fn cid_len(form: &HeaderForm<'_>) -> usize {
    form.cid.map_or(0, <[u8]>::len)
}

#[test]
fn round_trip_every_aead_form_and_size() {
    for aead in Aead::ALL {
        for form in forms() {
            let (mut sealer, mut opener) = pair(aead, 6);
            for (i, (len, padding)) in [(0, 0), (1, 0), (0, 3), (100, 28), (1 << 14, 0)]
                .into_iter()
                .enumerate()
            {
                let msg = content(len);
                let mut rec = seal(
                    &mut sealer,
                    &form,
                    InnerContentType::ApplicationData,
                    &msg,
                    padding,
                );
                let opened = opener
                    .open(&mut rec, cid_len(&form))
                    .unwrap_or_else(|e| panic!("{aead:?} {form:?} len {len}: {e}"));
                assert_eq!(opened.plaintext, &msg[..]);
                assert_eq!(opened.content_type, InnerContentType::ApplicationData);
                assert_eq!(opened.sequence, i as u64);
                assert_eq!(opened.epoch, 6);
            }
            assert_eq!(opener.next_expected(), 5);
        }
    }
}

fn algorithm(aead: Aead) -> &'static Algorithm {
    match aead {
        Aead::Aes128Gcm => &AES_128_GCM,
        Aead::Aes256Gcm => &AES_256_GCM,
        Aead::ChaCha20Poly1305 => &CHACHA20_POLY1305,
    }
}

/// Decrypts `encrypted` with aws-lc directly: nonce = IV XOR sequence (RFC 8446 §5.3),
/// AAD = `aad`.
fn reference_open(aead: Aead, sequence: u64, aad: &[u8], encrypted: &[u8]) -> Option<Vec<u8>> {
    let k = LessSafeKey::new(UnboundKey::new(algorithm(aead), &key(aead)).expect("valid key"));
    let mut nonce = IV;
    for (n, s) in nonce[4..].iter_mut().zip(sequence.to_be_bytes()) {
        *n ^= s;
    }
    let mut buf = encrypted.to_vec();
    let plain = k
        .open_in_place(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(aad),
            &mut buf,
        )
        .ok()?;
    Some(plain.to_vec())
}

#[test]
fn record_format_matches_rfc_9147() {
    for aead in Aead::ALL {
        for form in forms() {
            let mut sealer = Sealer13::new(0x1_0000_0001, keys(aead)).with_next_sequence(0x1234);
            let msg = b"the record body";
            let rec = seal(&mut sealer, &form, InnerContentType::Handshake, msg, 2);
            let header_len = form.header_len();
            let encrypted = &rec[header_len..];
            assert_eq!(encrypted.len(), msg.len() + 1 + 2 + 16);
            // First byte: 001CSLEE with the epoch's two low bits.
            assert_eq!(rec[0], form.first_byte(0x1_0000_0001));
            assert_eq!(rec[0] & 3, 1);
            if let Some(cid) = form.cid {
                assert_eq!(&rec[1..1 + cid.len()], cid);
            }
            if form.length {
                let at = header_len - 2;
                assert_eq!(
                    usize::from(u16::from_be_bytes([rec[at], rec[at + 1]])),
                    encrypted.len()
                );
            }
            // RFC 9147 §4.2.3: the sequence bits are XORed with the mask over the first 16
            // bytes of the encrypted record.
            let mask = SnKey::new(aead, &sn_key(aead, 0x3c))
                .expect("valid key")
                .mask(encrypted)
                .expect("16 bytes at least");
            let seq_at = 1 + cid_len(&form);
            let mut clear = rec[..header_len].to_vec();
            let wire: Vec<u8> = match form.sequence {
                SequenceLen::Bits8 => vec![0x34],
                SequenceLen::Bits16 => vec![0x12, 0x34],
            };
            for (i, w) in wire.iter().enumerate() {
                assert_eq!(rec[seq_at + i], w ^ mask[i]);
                clear[seq_at + i] = *w;
            }
            // RFC 9147 §4: AAD is the header with the clear sequence bits; RFC 8446 §5.2:
            // inner plaintext = content ‖ type ‖ zeros.
            let inner = reference_open(aead, 0x1234, &clear, encrypted).expect("authenticates");
            let mut want = msg.to_vec();
            want.extend_from_slice(&[22, 0, 0]);
            assert_eq!(inner, want);
            // The masked header as AAD does not authenticate.
            assert!(reference_open(aead, 0x1234, &rec[..header_len], encrypted).is_none());
        }
    }
}

#[test]
fn tampering_with_any_byte_is_rejected() {
    for aead in Aead::ALL {
        for form in forms() {
            let (mut sealer, mut opener) = pair(aead, 2);
            let rec = seal(
                &mut sealer,
                &form,
                InnerContentType::ApplicationData,
                b"do not touch",
                0,
            );
            for i in 0..rec.len() {
                for flip in [0x01u8, 0x80] {
                    let mut bad = rec.clone();
                    bad[i] ^= flip;
                    let got = opener.open(&mut bad, cid_len(&form));
                    assert!(got.is_err(), "{aead:?} {form:?} byte {i} flip {flip:#x}");
                }
            }
            assert_eq!(opener.next_expected(), 0, "no failure moved the window");
            let mut good = rec.clone();
            assert_eq!(
                opener
                    .open(&mut good, cid_len(&form))
                    .expect("the original still opens")
                    .plaintext,
                b"do not touch"
            );
        }
    }
}

#[test]
fn replays_are_refused_and_reordering_within_the_window_accepted() {
    for aead in Aead::ALL {
        let form = HeaderForm::default();
        let (mut sealer, mut opener) = pair(aead, 1);
        let recs: Vec<_> = (0..200)
            .map(|_| seal(&mut sealer, &form, InnerContentType::Ack, b"ack", 0))
            .collect();
        let mut first = recs[0].clone();
        opener.open(&mut first, 0).expect("first opens");
        let mut again = recs[0].clone();
        assert_eq!(
            opener.open(&mut again, 0),
            Err(Open13Error::Replayed(Replayed::Duplicate))
        );
        let mut late = recs[199].clone();
        assert_eq!(opener.open(&mut late, 0).expect("opens").sequence, 199);
        // 150 is inside the 128-record window below 199; 50 is not.
        let mut inside = recs[150].clone();
        assert_eq!(opener.open(&mut inside, 0).expect("opens").sequence, 150);
        let mut old = recs[50].clone();
        assert_eq!(
            opener.open(&mut old, 0),
            Err(Open13Error::Replayed(Replayed::TooOld))
        );
        let mut late_again = recs[199].clone();
        assert_eq!(
            opener.open(&mut late_again, 0),
            Err(Open13Error::Replayed(Replayed::Duplicate))
        );
        assert_eq!(opener.failed_authentications(), 0);
    }
}

#[test]
fn mask_from_another_sn_key_fails() {
    for aead in Aead::ALL {
        for form in forms() {
            let mut sealer = Sealer13::new(3, keys_with_sn(aead, 0x01)).with_next_sequence(77);
            let mut opener = Opener13::new(3, keys_with_sn(aead, 0x02), ReplayWindow::new(64));
            let mut rec = seal(&mut sealer, &form, InnerContentType::Alert, &[1, 0], 0);
            assert_eq!(
                opener.open(&mut rec, cid_len(&form)),
                Err(Open13Error::AuthenticationFailed),
                "{aead:?} {form:?}"
            );
            assert_eq!(opener.failed_authentications(), 1);
        }
        // Another AEAD key, same sn key: the mask matches, the tag does not.
        let mut sealer = Sealer13::new(3, keys(aead));
        let other = TrafficKeys13::new(aead, &vec![9; aead.key_len()], &IV, &sn_key(aead, 0x3c))
            .expect("valid");
        let mut opener = Opener13::new(3, other, ReplayWindow::new(64));
        let mut rec = seal(
            &mut sealer,
            &HeaderForm::default(),
            InnerContentType::Alert,
            &[1, 0],
            0,
        );
        assert_eq!(
            opener.open(&mut rec, 0),
            Err(Open13Error::AuthenticationFailed)
        );
        // Failed records leave no plaintext behind.
        assert!(rec[5..5 + 3].iter().all(|&b| b == 0));
    }
}

#[test]
fn sequence_numbers_reconstruct_across_8_and_16_bit_wraps() {
    for (sequence, start) in [(SequenceLen::Bits8, 0u64), (SequenceLen::Bits16, 0xff00)] {
        let form = HeaderForm {
            sequence,
            ..HeaderForm::default()
        };
        let aead = Aead::ChaCha20Poly1305;
        let mut sealer = Sealer13::new(9, keys(aead)).with_next_sequence(start);
        let mut opener = Opener13::new(9, keys(aead), ReplayWindow::new(128));
        let recs: Vec<_> = (0..700)
            .map(|_| {
                seal(
                    &mut sealer,
                    &form,
                    InnerContentType::ApplicationData,
                    b"x",
                    0,
                )
            })
            .collect();
        // Pairs swapped (reordering by one), every record once.
        let mut order: Vec<usize> = (0..recs.len()).collect();
        for pair in order.chunks_mut(2) {
            pair.reverse();
        }
        // The opener starts from 0; a 16-bit form starting at 0xff00 is within reach.
        for i in order {
            let mut rec = recs[i].clone();
            let opened = opener
                .open(&mut rec, 0)
                .unwrap_or_else(|e| panic!("{sequence:?} record {i}: {e}"));
            assert_eq!(opened.sequence, start + i as u64);
        }
        assert_eq!(opener.next_expected(), start + 700);
    }
}

#[test]
fn wrong_epoch_short_and_oversized_records() {
    let aead = Aead::Aes128Gcm;
    let mut sealer = Sealer13::new(5, keys(aead));
    let mut opener = Opener13::new(4, keys(aead), ReplayWindow::new(64));
    let mut rec = seal(
        &mut sealer,
        &HeaderForm::default(),
        InnerContentType::ApplicationData,
        b"epoch 5",
        0,
    );
    assert_eq!(
        opener.open(&mut rec, 0),
        Err(Open13Error::WrongEpoch {
            expected: 0,
            got: 1
        })
    );
    // RFC 9147 §4.2.3: fewer than 16 bytes of ciphertext cannot be sampled; 16 bytes have
    // no room for a content type next to the tag.
    for body in [0usize, 15, 16] {
        let mut rec = vec![0u8; 5 + body];
        HeaderForm::default()
            .emit(4, 0, body, &mut rec)
            .expect("fits");
        assert_eq!(opener.open(&mut rec, 0), Err(Open13Error::TooShort(body)));
    }
    let body = (1 << 14) + 257;
    let mut rec = vec![0u8; 5 + body];
    HeaderForm::default()
        .emit(4, 0, body, &mut rec)
        .expect("fits");
    assert_eq!(
        opener.open(&mut rec, 0),
        Err(Open13Error::RecordTooLong(body))
    );
    let body = (1 << 14) + 1 + 16 + 1;
    let mut rec = vec![0u8; 5 + body];
    HeaderForm::default()
        .emit(4, 0, body, &mut rec)
        .expect("fits");
    assert_eq!(
        opener.open(&mut rec, 0),
        Err(Open13Error::PlaintextTooLong(body - 16))
    );
    // Two records in one buffer: `open` takes one.
    let mut two = vec![0u8; 5 + 20];
    HeaderForm::default()
        .emit(4, 0, 10, &mut two)
        .expect("fits");
    assert_eq!(
        opener.open(&mut two, 0),
        Err(Open13Error::TrailingBytes {
            len: 25,
            record_len: 15
        })
    );
    assert_eq!(
        opener.open(&mut [23, 0xfe, 0xfd], 0),
        Err(Open13Error::Malformed(UnifiedWireError::NotUnified(23)))
    );
    assert_eq!(opener.failed_authentications(), 0);
}

/// A record whose inner plaintext is `inner` exactly, sealed with aws-lc directly under the
/// test keys (for inner plaintexts the sealer never makes).
fn seal_inner(aead: Aead, epoch: u64, sequence: u64, inner: &[u8]) -> Vec<u8> {
    let form = HeaderForm::default();
    let encrypted_len = inner.len() + 16;
    let mut rec = vec![0u8; form.header_len() + encrypted_len];
    form.emit(epoch, sequence, encrypted_len, &mut rec)
        .expect("fits");
    let (header, body) = rec.split_at_mut(form.header_len());
    body[..inner.len()].copy_from_slice(inner);
    let k = LessSafeKey::new(UnboundKey::new(algorithm(aead), &key(aead)).expect("valid key"));
    let mut nonce = IV;
    for (n, s) in nonce[4..].iter_mut().zip(sequence.to_be_bytes()) {
        *n ^= s;
    }
    let (plain, tag) = body.split_at_mut(inner.len());
    let t = k
        .seal_in_place_separate_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(&*header),
            plain,
        )
        .expect("seals");
    tag.copy_from_slice(t.as_ref());
    let mask = SnKey::new(aead, &sn_key(aead, 0x3c))
        .expect("valid key")
        .mask(body)
        .expect("long enough");
    header[1] ^= mask[0];
    header[2] ^= mask[1];
    rec
}

#[test]
fn padding_is_stripped_and_bad_inner_types_are_errors() {
    for aead in Aead::ALL {
        let mut opener = Opener13::new(2, keys(aead), ReplayWindow::new(64));
        let mut rec = seal_inner(aead, 2, 0, &[1, 2, 0, 3, 22, 0, 0, 0, 0]);
        let opened = opener.open(&mut rec, 0).expect("opens");
        assert_eq!(opened.content_type, InnerContentType::Handshake);
        assert_eq!(opened.plaintext, &[1, 2, 0, 3]);
        // RFC 8446 §5.4: all zeros has no content type.
        let mut rec = seal_inner(aead, 2, 1, &[0; 20]);
        assert_eq!(opener.open(&mut rec, 0), Err(Open13Error::NoContentType));
        // RFC 9147 §4.1, Figure 5: other decrypted types are errors.
        let mut rec = seal_inner(aead, 2, 2, &[9, 9, 25, 0]);
        assert_eq!(
            opener.open(&mut rec, 0),
            Err(Open13Error::UnknownContentType(25))
        );
        // Both authenticated: they count as received.
        let mut again = seal_inner(aead, 2, 1, &[0; 20]);
        assert_eq!(
            opener.open(&mut again, 0),
            Err(Open13Error::Replayed(Replayed::Duplicate))
        );
        assert_eq!(opener.next_expected(), 3);
    }
}

#[test]
fn sealer_limits_and_errors() {
    let aead = Aead::Aes256Gcm;
    let form = HeaderForm::default();
    let mut sealer = Sealer13::new(1, keys(aead)).with_next_sequence(u64::MAX - 1);
    let mut buf = vec![0u8; 64];
    assert_eq!(
        sealer.seal(InnerContentType::Alert, &form, &mut buf, 2, 0),
        Ok(5 + 2 + 1 + 16)
    );
    assert_eq!(
        sealer.seal(InnerContentType::Alert, &form, &mut buf, 2, 0),
        Err(Seal13Error::SequenceExhausted)
    );
    let mut sealer = Sealer13::new(1, keys(aead));
    assert_eq!(
        sealer.seal(InnerContentType::Alert, &form, &mut buf, 30, 20),
        Err(Seal13Error::BufferTooSmall { len: 64, need: 72 })
    );
    assert_eq!(
        sealer.seal(
            InnerContentType::ApplicationData,
            &form,
            &mut vec![0u8; 1 << 15],
            (1 << 14) - 3,
            4
        ),
        Err(Seal13Error::PlaintextTooLong((1 << 14) + 1))
    );
    let long = [0u8; 256];
    assert_eq!(
        sealer.seal(
            InnerContentType::Alert,
            &HeaderForm::with_cid(&long),
            &mut vec![0u8; 512],
            2,
            0
        ),
        Err(Seal13Error::Header(UnifiedWireError::CidTooLong(256)))
    );
    assert_eq!(
        sealer.seal(InnerContentType::Alert, &form, &mut buf, 2, usize::MAX),
        Err(Seal13Error::PlaintextTooLong(usize::MAX))
    );
    assert_eq!(sealer.record_len(&form, 2, usize::MAX), usize::MAX);
    let mut w = DatagramWriter13::new(&mut buf);
    assert_eq!(
        w.seal(
            &mut sealer,
            InnerContentType::Alert,
            &form,
            &[1],
            usize::MAX
        ),
        Err(Seal13Error::PlaintextTooLong(usize::MAX))
    );
    assert!(w.is_empty());
    assert_eq!(sealer.next_sequence(), 0, "no error consumed a number");
    // RFC 8446 §5.5 via RFC 9147 §4.5.3: 2^24.5 records under one AES-GCM key.
    assert!(!sealer.confidentiality_limit_reached());
    let sealer = Sealer13::new(1, keys(aead)).with_next_sequence(23_726_566);
    assert!(sealer.confidentiality_limit_reached());
    let chacha = Sealer13::new(1, keys(Aead::ChaCha20Poly1305)).with_next_sequence(1 << 40);
    assert!(!chacha.confidentiality_limit_reached());
}

#[test]
fn integrity_limit_counts_failed_records() {
    let aead = Aead::ChaCha20Poly1305;
    let mut sealer = Sealer13::new(1, keys(aead));
    let mut opener = Opener13::new(1, keys(aead), ReplayWindow::new(64)).with_integrity_limit(3);
    assert_eq!(opener.integrity_limit(), 3);
    for _ in 0..3 {
        assert!(!opener.integrity_limit_reached());
        let mut rec = seal(
            &mut sealer,
            &HeaderForm::default(),
            InnerContentType::ApplicationData,
            b"forged",
            0,
        );
        let last = rec.len() - 1;
        rec[last] ^= 1;
        assert_eq!(
            opener.open(&mut rec, 0),
            Err(Open13Error::AuthenticationFailed)
        );
    }
    assert!(opener.integrity_limit_reached());
    assert_eq!(
        Opener13::new(1, keys(aead), ReplayWindow::new(64)).integrity_limit(),
        1 << 36
    );
}

#[test]
fn mixed_datagram_opens_in_place_by_epoch() {
    let aead = Aead::Aes128Gcm;
    let cid = [7u8, 7, 7];
    let mut s2 = Sealer13::new(2, keys_with_sn(aead, 2));
    let mut s3 = Sealer13::new(3, keys_with_sn(aead, 3));
    let mut openers = [
        Opener13::new(2, keys_with_sn(aead, 2), ReplayWindow::new(64)),
        Opener13::new(3, keys_with_sn(aead, 3), ReplayWindow::new(64)),
    ];
    // An epoch 0 plaintext ACK (13-byte header), then epoch 2 and 3 records, the last one
    // without length field.
    let mut datagram = vec![26, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 4, 0, 2, 0, 0];
    datagram.extend(seal(
        &mut s2,
        &HeaderForm::with_cid(&cid),
        InnerContentType::Handshake,
        b"finished",
        0,
    ));
    datagram.extend(seal(
        &mut s3,
        &HeaderForm::with_cid(&cid),
        InnerContentType::ApplicationData,
        b"early data",
        0,
    ));
    let last = HeaderForm {
        length: false,
        ..HeaderForm::with_cid(&cid)
    };
    datagram.extend(seal(
        &mut s3,
        &last,
        InnerContentType::ApplicationData,
        b"tail",
        3,
    ));

    let mut walk = MixedRecordsMut::new(&mut datagram, cid.len());
    let mut seen = Vec::new();
    for record in walk.by_ref() {
        match record.kind {
            MixedKind::Plaintext(t) => seen.push((u64::from(t), Vec::new())),
            MixedKind::Ciphertext(header) => {
                assert_eq!(header.cid(record.bytes), Some(&cid[..]));
                let epoch = reconstruct_epoch(header.epoch_bits, openers.iter().map(|o| o.epoch()))
                    .expect("a key for this epoch");
                let opener = openers
                    .iter_mut()
                    .find(|o| o.epoch() == epoch)
                    .expect("held");
                let opened = opener.open(record.bytes, cid.len()).expect("opens");
                seen.push((opened.epoch, opened.plaintext.to_vec()));
            }
            MixedKind::Dtls12Cid => panic!("no tls12_cid record here"),
        }
    }
    assert_eq!(walk.dropped_bytes(), 0);
    assert_eq!(
        seen,
        vec![
            (26, vec![]),
            (2, b"finished".to_vec()),
            (3, b"early data".to_vec()),
            (3, b"tail".to_vec()),
        ]
    );
    // The header of an opened record holds the clear sequence number.
    let h = UnifiedHeader::parse(&datagram[15..], cid.len()).expect("valid");
    assert_eq!(h.wire_sequence, 0);
}

#[test]
fn datagram_writer_ends_with_the_lengthless_record() {
    let aead = Aead::ChaCha20Poly1305;
    let (mut sealer, mut opener) = pair(aead, 4);
    let mut buf = [0u8; 200];
    let mut w = DatagramWriter13::new(&mut buf);
    assert!(w.is_empty());
    let first = w
        .seal(
            &mut sealer,
            InnerContentType::Ack,
            &HeaderForm::default(),
            b"ack",
            0,
        )
        .expect("fits");
    assert_eq!(first, 0..5 + 3 + 1 + 16);
    // In place: write the content where the writer says, then seal.
    let form = HeaderForm {
        sequence: SequenceLen::Bits8,
        ..HeaderForm::default()
    };
    w.content_buf(&form)[..5].copy_from_slice(b"hello");
    let second = w
        .seal_written(&mut sealer, InnerContentType::ApplicationData, &form, 5, 0)
        .expect("fits");
    assert_eq!(second.start, first.end);
    // Too big for what is left: refused, nothing written, no sequence number spent.
    let room = w.remaining();
    assert_eq!(
        w.seal(
            &mut sealer,
            InnerContentType::ApplicationData,
            &HeaderForm::default(),
            &[0; 200],
            0
        ),
        Err(Seal13Error::BufferTooSmall {
            len: room,
            need: 5 + 200 + 1 + 16
        })
    );
    let lengthless = HeaderForm {
        length: false,
        ..HeaderForm::default()
    };
    let third = w
        .seal(
            &mut sealer,
            InnerContentType::ApplicationData,
            &lengthless,
            b"last",
            2,
        )
        .expect("fits");
    assert!(w.is_closed());
    assert_eq!(
        w.seal(
            &mut sealer,
            InnerContentType::Alert,
            &HeaderForm::default(),
            &[1, 0],
            0
        ),
        Err(Seal13Error::DatagramClosed)
    );
    assert_eq!(sealer.next_sequence(), 3);
    let len = w.finish();
    assert_eq!(len, third.end);

    let d = &mut buf[..len];
    let ranges: Vec<_> = MixedRecords::new(d, 0).map(|r| r.range).collect();
    assert_eq!(ranges, vec![first, second, third]);
    let mut opened = Vec::new();
    for r in MixedRecordsMut::new(d, 0) {
        let o = opener.open(r.bytes, 0).expect("opens");
        opened.push((o.sequence, o.plaintext.to_vec()));
    }
    assert_eq!(
        opened,
        vec![
            (0, b"ack".to_vec()),
            (1, b"hello".to_vec()),
            (2, b"last".to_vec())
        ]
    );
}

/// Forged record with the next epoch, sequence 2^48 − 1 and a bad tag (TESTING.md
/// "Adversarial", record layer): after a KeyUpdate both epochs' read states are held; a
/// record claiming the next epoch and the largest sequence number a DTLS 1.3 record may
/// carry (RFC 9147 §4.2.1: 48 bits on the wire through the record number), in every
/// header form, fails authentication and leaves both windows and both reconstruction
/// bases unchanged (RFC 9147 §4.5.1: "The window MUST NOT be updated due to a received
/// record until that record has been deprotected successfully"); the genuine records of
/// both epochs that follow still open.
#[test]
fn forged_next_epoch_max_sequence_record_leaves_the_windows_unchanged() {
    const MAX_SEQUENCE: u64 = (1 << 48) - 1;
    for aead in Aead::ALL {
        for form in forms() {
            let cid = cid_len(&form);
            let mut s3 = Sealer13::new(3, keys_with_sn(aead, 3));
            let mut o3 = Opener13::new(3, keys_with_sn(aead, 3), ReplayWindow::new(64));
            let mut s4 = Sealer13::new(4, keys_with_sn(aead, 4));
            let mut o4 = Opener13::new(4, keys_with_sn(aead, 4), ReplayWindow::new(64));
            let mut r = seal(&mut s3, &form, InnerContentType::ApplicationData, b"one", 0);
            o3.open(&mut r, cid).expect("genuine epoch 3");
            let mut r = seal(&mut s4, &form, InnerContentType::ApplicationData, b"two", 0);
            o4.open(&mut r, cid).expect("genuine epoch 4");
            let before = [
                (o3.window().clone(), o3.next_expected()),
                (o4.window().clone(), o4.next_expected()),
            ];
            let mut forger =
                Sealer13::new(4, keys_with_sn(aead, 4)).with_next_sequence(MAX_SEQUENCE);
            let mut forged = seal(
                &mut forger,
                &form,
                InnerContentType::ApplicationData,
                b"forged",
                0,
            );
            let last = forged.len() - 1;
            forged[last] ^= 0x80;
            for _ in 0..3 {
                let mut f = forged.clone();
                assert_eq!(
                    o4.open(&mut f, cid).map(|o| o.sequence),
                    Err(Open13Error::AuthenticationFailed),
                    "{aead:?} {form:?}"
                );
                let mut f = forged.clone();
                assert!(o3.open(&mut f, cid).is_err(), "{aead:?} {form:?}");
            }
            assert_eq!(o4.failed_authentications(), 3);
            let after = [
                (o3.window().clone(), o3.next_expected()),
                (o4.window().clone(), o4.next_expected()),
            ];
            assert_eq!(before, after, "{aead:?} {form:?}: a window moved");
            let mut r = seal(
                &mut s4,
                &form,
                InnerContentType::ApplicationData,
                b"three",
                0,
            );
            assert_eq!(o4.open(&mut r, cid).expect("genuine").sequence, 1);
            let mut r = seal(
                &mut s3,
                &form,
                InnerContentType::ApplicationData,
                b"four",
                0,
            );
            assert_eq!(o3.open(&mut r, cid).expect("genuine").sequence, 1);
        }
    }
}

/// 10^6 bad-tag records on a live DTLS 1.3 key (TESTING.md "Adversarial", record layer):
/// every one is refused (a bad tag, or for a few a replay, see below), the tag failures
/// counted under that key (RFC 9147
/// §4.5.3: "Implementations MUST count the number of received packets that fail
/// authentication with each key"), the window never moves, and the genuine record after
/// them opens. Each forged record carries a new sequence number, as a flood would.
#[test]
fn a_million_bad_tag_records_are_dropped_and_counted() {
    const FORGED: u64 = 1_000_000;
    let aead = Aead::Aes128Gcm;
    let form = HeaderForm::default();
    let (mut sealer, mut opener) = pair(aead, 3);
    let mut r = seal(
        &mut sealer,
        &form,
        InnerContentType::ApplicationData,
        b"one",
        0,
    );
    opener.open(&mut r, 0).expect("genuine");
    let window = opener.window().clone();
    let mut forger = Sealer13::new(3, keys(aead)).with_next_sequence(1);
    let mut record = vec![0u8; forger.record_len(&form, 64, 0)];
    let (mut failed, mut replayed) = (0u64, 0u64);
    for _ in 0..FORGED {
        let at = forger.plaintext_offset(&form);
        record[at..at + 64].fill(0x42);
        let len = forger
            .seal(InnerContentType::ApplicationData, &form, &mut record, 64, 0)
            .expect("seal");
        record[len - 1] ^= 1;
        match opener.open(&mut record[..len], 0) {
            Err(Open13Error::AuthenticationFailed) => failed += 1,
            Err(Open13Error::Replayed(_)) => replayed += 1,
            other => panic!("a forged record: {:?}", other.map(|o| o.sequence)),
        }
    }
    // The wire carries 16 bits of the sequence number, reconstructed against the window
    // that never moves (RFC 9147 §4.2.2): the forged numbers whose low bits land on the
    // one already opened are refused as replays before any AEAD work, the rest fail
    // their tag.
    assert_eq!(failed + replayed, FORGED);
    assert!(replayed <= FORGED >> 16, "{replayed} replays");
    assert_eq!(opener.failed_authentications(), failed);
    assert_eq!(opener.window(), &window);
    let mut r = seal(
        &mut sealer,
        &form,
        InnerContentType::ApplicationData,
        b"two",
        0,
    );
    assert_eq!(opener.open(&mut r, 0).expect("genuine").plaintext, b"two");
}
