//! Record keys: the AEAD, its key and the fixed IV of one direction of one epoch.

use core::fmt;

use aws_lc_rs::aead::{self as aws_aead, LessSafeKey, UnboundKey};
use dtls_proto::Aead;
use zeroize::{Zeroize, ZeroizeOnDrop};

/// The fixed IV buffer is sized for the largest `fixed_iv_len`.
pub(crate) const MAX_FIXED_IV_LEN: usize = 12;
/// Every AEAD here has a 16-byte tag.
pub(crate) const TAG_LEN: usize = Aead::TAG_LEN;

/// The aws-lc-rs implementation of `aead`.
fn algorithm(aead: Aead) -> &'static aws_aead::Algorithm {
    match aead {
        Aead::Aes128Gcm => &aws_aead::AES_128_GCM,
        Aead::Aes256Gcm => &aws_aead::AES_256_GCM,
        Aead::ChaCha20Poly1305 => &aws_aead::CHACHA20_POLY1305,
    }
}

/// Why key material was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// The key has the wrong length for the AEAD.
    #[error("{aead:?} key must be {expected} bytes, got {got}")]
    KeyLength {
        /// The AEAD.
        aead: Aead,
        /// Required length.
        expected: usize,
        /// Given length.
        got: usize,
    },
    /// The fixed IV has the wrong length for the AEAD.
    #[error("{aead:?} fixed IV must be {expected} bytes, got {got}")]
    IvLength {
        /// The AEAD.
        aead: Aead,
        /// Required length.
        expected: usize,
        /// Given length.
        got: usize,
    },
    /// aws-lc refused the key (it does so only on internal failure).
    #[error("the AEAD implementation rejected the key")]
    Rejected,
    /// A starting sequence number above 2^48 - 1.
    #[error("starting sequence number {0} does not fit in 48 bits")]
    SequenceOutOfRange(u64),
}

/// The fixed IV, zeroized on drop.
#[derive(Zeroize, ZeroizeOnDrop)]
pub(crate) struct FixedIv(pub(crate) [u8; MAX_FIXED_IV_LEN]);

/// What protects records under one key.
pub(crate) enum Protection {
    /// Header and plaintext, no tag. Only reachable through [`RecordKey::null_baseline`].
    Null,
    /// A real AEAD.
    Aead {
        aead: Aead,
        key: LessSafeKey,
        iv: FixedIv,
    },
}

/// Key material of one direction of one epoch: the AEAD key and its fixed IV.
///
/// The key bytes go straight into an aws-lc AEAD context (whose memory aws-lc clears when
/// it is freed); the fixed IV is a fixed-size array zeroized on drop. Not `Clone`; `Debug`
/// shows the AEAD only.
///
/// ```compile_fail
/// fn needs_clone<T: Clone>() {}
/// needs_clone::<dataplane::record::RecordKey>(); // key material is never duplicated
/// ```
pub struct RecordKey {
    pub(crate) protection: Protection,
}

impl RecordKey {
    /// Key material for `aead`; `key` and `fixed_iv` must have exactly
    /// [`Aead::key_len`] and [`Aead::fixed_iv_len`] bytes.
    pub fn new(aead: Aead, key: &[u8], fixed_iv: &[u8]) -> Result<Self, KeyError> {
        if key.len() != aead.key_len() {
            return Err(KeyError::KeyLength {
                aead,
                expected: aead.key_len(),
                got: key.len(),
            });
        }
        if fixed_iv.len() != aead.fixed_iv_len() {
            return Err(KeyError::IvLength {
                aead,
                expected: aead.fixed_iv_len(),
                got: fixed_iv.len(),
            });
        }
        let unbound = UnboundKey::new(algorithm(aead), key).map_err(|_| KeyError::Rejected)?;
        let mut iv = FixedIv([0u8; MAX_FIXED_IV_LEN]);
        iv.0[..fixed_iv.len()].copy_from_slice(fixed_iv);
        Ok(Self {
            protection: Protection::Aead {
                aead,
                key: LessSafeKey::new(unbound),
                iv,
            },
        })
    }

    /// DTLS 1.3 key material: `write_key` and the 12-byte `write_iv` of RFC 8446 §5.3
    /// ("iv_length ... MUST be set to max(8 bytes, N_MIN)", 12 for all three AEADs here),
    /// which the per-record nonce XORs with the whole sequence number. Only
    /// [`super::v13::TrafficKeys13`] makes these, so the 1.2 [`super::Sealer`] and
    /// [`super::Opener`] (which read a 4-byte salt for GCM) never get one.
    pub(crate) fn new_v13(aead: Aead, key: &[u8], iv: &[u8]) -> Result<Self, KeyError> {
        if key.len() != aead.key_len() {
            return Err(KeyError::KeyLength {
                aead,
                expected: aead.key_len(),
                got: key.len(),
            });
        }
        if iv.len() != MAX_FIXED_IV_LEN {
            return Err(KeyError::IvLength {
                aead,
                expected: MAX_FIXED_IV_LEN,
                got: iv.len(),
            });
        }
        let unbound = UnboundKey::new(algorithm(aead), key).map_err(|_| KeyError::Rejected)?;
        let mut fixed = FixedIv([0u8; MAX_FIXED_IV_LEN]);
        fixed.0.copy_from_slice(iv);
        Ok(Self {
            protection: Protection::Aead {
                aead,
                key: LessSafeKey::new(unbound),
                iv: fixed,
            },
        })
    }

    /// The plaintext baseline of the benchmarks: records carry header and plaintext, no
    /// tag, no encryption. There is no [`Aead`] variant for it, so nothing negotiated on
    /// the wire can select it.
    pub fn null_baseline() -> Self {
        Self {
            protection: Protection::Null,
        }
    }

    /// The AEAD, `None` for the null baseline.
    pub fn aead(&self) -> Option<Aead> {
        match &self.protection {
            Protection::Null => None,
            Protection::Aead { aead, .. } => Some(*aead),
        }
    }

    /// Bytes between the header and the plaintext (the explicit nonce).
    pub fn explicit_nonce_len(&self) -> usize {
        self.aead().map_or(0, Aead::explicit_nonce_len)
    }

    /// Bytes after the plaintext (the tag).
    pub fn tag_len(&self) -> usize {
        self.aead().map_or(0, Aead::tag_len)
    }
}

// Every part is cleared on drop: the fixed IV by `FixedIv`'s derive, the key schedule by
// aws-lc (`EVP_AEAD_CTX_free` → `OPENSSL_free`, which `OPENSSL_cleanse`s the allocation).
impl ZeroizeOnDrop for RecordKey {}

impl fmt::Debug for RecordKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.aead() {
            Some(aead) => f
                .debug_struct("RecordKey")
                .field("aead", &aead)
                .finish_non_exhaustive(),
            None => f.write_str("RecordKey(null baseline)"),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// `T`'s drop glue wipes it: `ZeroizeOnDrop`, and `T` needs dropping (the derive's
    /// `Drop`, which calls `zeroize`; a bare marker impl on plain bytes would not).
    pub(crate) fn drop_zeroizes<T: ZeroizeOnDrop>() {
        assert!(
            std::mem::needs_drop::<T>(),
            "{} has no Drop",
            std::any::type_name::<T>()
        );
    }

    /// Issue 18 (key material of a closed session is zeroized), the data plane's record
    /// keys: a session's `Sealer`/`Opener` (and `Sealer13`/`Opener13` through
    /// `TrafficKeys13`) own a `RecordKey`, dropped with the session. Its AEAD key lives in
    /// aws-lc, which cleanses the allocation when the key is freed (`OPENSSL_free`); its
    /// fixed IV is a `FixedIv`, checked here on a canary without reading freed memory: its
    /// drop glue is the derive's `zeroize`, and `zeroize` leaves no canary byte.
    #[test]
    fn the_fixed_iv_of_a_record_key_is_wiped_on_drop() {
        const CANARY: u8 = 0xa5;
        drop_zeroizes::<FixedIv>();
        drop_zeroizes::<RecordKey>();
        for aead in Aead::ALL {
            let key = vec![CANARY; aead.key_len()];
            let iv = vec![CANARY; aead.fixed_iv_len()];
            let mut record_key = RecordKey::new(aead, &key, &iv).expect("valid lengths");
            let Protection::Aead { iv: held, .. } = &mut record_key.protection else {
                panic!("an AEAD key");
            };
            assert_eq!(&held.0[..iv.len()], &iv[..], "the IV is held in a FixedIv");
            held.zeroize();
            assert_eq!(held.0, [0; MAX_FIXED_IV_LEN], "{aead:?}");
        }
    }

    #[test]
    fn lengths_are_checked() {
        for aead in Aead::ALL {
            let key = vec![7u8; aead.key_len()];
            let iv = vec![9u8; aead.fixed_iv_len()];
            assert!(RecordKey::new(aead, &key, &iv).is_ok());
            assert_eq!(
                RecordKey::new(aead, &key[1..], &iv).expect_err("must be rejected"),
                KeyError::KeyLength {
                    aead,
                    expected: aead.key_len(),
                    got: aead.key_len() - 1
                }
            );
            assert_eq!(
                RecordKey::new(aead, &key, &[0u8; 5]).expect_err("must be rejected"),
                KeyError::IvLength {
                    aead,
                    expected: aead.fixed_iv_len(),
                    got: 5
                }
            );
        }
    }

    #[test]
    fn debug_shows_no_key_bytes() {
        let key = RecordKey::new(Aead::Aes128Gcm, &[0xab; 16], &[0xcd; 4]).expect("valid");
        let s = format!("{key:?}");
        assert!(s.contains("Aes128Gcm"), "{s}");
        assert!(!s.to_lowercase().contains("ab"), "{s}");
        assert!(!s.contains("171"), "{s}");
        assert_eq!(
            format!("{:?}", RecordKey::null_baseline()),
            "RecordKey(null baseline)"
        );
    }

    #[test]
    fn fixed_iv_zeroizes() {
        let mut iv = FixedIv([0x55; MAX_FIXED_IV_LEN]);
        iv.zeroize();
        assert_eq!(iv.0, [0u8; MAX_FIXED_IV_LEN]);
    }
}
