//! Ephemeral elliptic-curve Diffie-Hellman (RFC 8422) over aws-lc-rs `agreement`.

use std::fmt;

use aws_lc_rs::agreement::{self, PrivateKey, UnparsedPublicKey};
use dtls_proto::NamedGroup;
use zeroize::Zeroizing;

use crate::{Error, PremasterSecret, Rng};

/// Longest public value: an uncompressed P-384 point.
const MAX_PUBLIC_LEN: usize = 1 + 2 * 48;

/// How many times a private scalar is redrawn when the random bytes are not a valid scalar
/// (for P-256 this happens with probability about 2^-32 per draw).
const MAX_SCALAR_DRAWS: usize = 8;

/// What this crate needs to run ECDH in one group.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Curve {
    pub(crate) algorithm: &'static agreement::Algorithm,
    /// Length of the public value on the wire (ECPoint / X25519 u-coordinate).
    pub(crate) public_len: usize,
    pub(crate) private_len: usize,
}

/// The implementation of `group`, `None` for a group this crate does not implement. The
/// implemented ones are exactly [`NamedGroup::SUPPORTED`] (X25519, secp256r1, secp384r1).
pub(crate) fn curve(group: NamedGroup) -> Option<Curve> {
    let (algorithm, scalar_len) = match group {
        NamedGroup::Secp256r1 => (&agreement::ECDH_P256, 32),
        NamedGroup::Secp384r1 => (&agreement::ECDH_P384, 48),
        NamedGroup::X25519 => (&agreement::X25519, 32),
        _ => return None,
    };
    // The wire length comes from the vocabulary (RFC 8422 §5.4.1 / §5.11).
    let public_len = group.public_key_len()?;
    Some(Curve {
        algorithm,
        public_len,
        private_len: scalar_len,
    })
}

/// One side's ephemeral key pair for one handshake. Its private key comes from the injected
/// [`Rng`], so a seeded RNG gives a reproducible handshake.
pub struct EphemeralKeyPair {
    group: NamedGroup,
    curve: Curve,
    private: PrivateKey,
    public: [u8; MAX_PUBLIC_LEN],
}

impl fmt::Debug for EphemeralKeyPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EphemeralKeyPair")
            .field("group", &self.group)
            .finish_non_exhaustive()
    }
}

impl EphemeralKeyPair {
    /// Draws a private key from `rng` and computes the public value.
    ///
    /// # Errors
    /// [`Error::UnsupportedGroup`] for a group outside [`NamedGroup::SUPPORTED`];
    /// [`Error::AgreementFailed`] if aws-lc rejects every draw (practically impossible).
    pub fn generate(group: NamedGroup, rng: &mut dyn Rng) -> Result<Self, Error> {
        let curve = curve(group).ok_or(Error::UnsupportedGroup { group })?;
        crate::ops::count_key_exchange();
        let mut scalar = Zeroizing::new([0u8; 48]);
        let scalar = &mut scalar[..curve.private_len];
        for _ in 0..MAX_SCALAR_DRAWS {
            rng.fill(scalar);
            // P-256/P-384: aws-lc rejects 0 and values >= the group order; redraw then.
            // X25519 clamps any 32 bytes (RFC 7748 §5).
            if let Ok(private) = PrivateKey::from_private_key(curve.algorithm, scalar) {
                return Self::from_private(group, curve, private);
            }
        }
        Err(Error::AgreementFailed)
    }

    /// Builds a key pair from a fixed private key (test vectors).
    #[cfg(test)]
    pub(crate) fn from_private_bytes(group: NamedGroup, private: &[u8]) -> Result<Self, Error> {
        let curve = curve(group).ok_or(Error::UnsupportedGroup { group })?;
        let private = PrivateKey::from_private_key(curve.algorithm, private)
            .map_err(|_| Error::AgreementFailed)?;
        Self::from_private(group, curve, private)
    }

    fn from_private(group: NamedGroup, curve: Curve, private: PrivateKey) -> Result<Self, Error> {
        let public_key = private
            .compute_public_key()
            .map_err(|_| Error::AgreementFailed)?;
        let bytes = public_key.as_ref();
        if bytes.len() != curve.public_len {
            return Err(Error::AgreementFailed);
        }
        let mut public = [0u8; MAX_PUBLIC_LEN];
        public[..bytes.len()].copy_from_slice(bytes);
        Ok(Self {
            group,
            curve,
            private,
            public,
        })
    }

    /// The group of this key pair.
    pub fn group(&self) -> NamedGroup {
        self.group
    }

    /// The public value as sent in ServerKeyExchange / ClientKeyExchange: the uncompressed
    /// point `04 ‖ X ‖ Y` for NIST curves (RFC 8422 §5.4.1), the 32-byte u-coordinate for
    /// X25519 (RFC 8422 §5.11).
    pub fn public_key(&self) -> &[u8] {
        &self.public[..self.curve.public_len]
    }

    /// Computes the shared secret with the peer's public value, consuming the key pair (each
    /// ephemeral key is used once).
    ///
    /// # Errors
    /// [`Error::InvalidPeerPublicKey`] (alert illegal_parameter) when the peer value has the
    /// wrong length or format, is not on the curve, is the point at infinity, or (X25519)
    /// gives the all-zero secret.
    pub fn agree(self, peer_public_key: &[u8]) -> Result<PremasterSecret, Error> {
        let group = self.group;
        let invalid = Error::InvalidPeerPublicKey { group };
        if peer_public_key.len() != self.curve.public_len {
            return Err(invalid);
        }
        // RFC 8422 §5.1.2: only the uncompressed point format is negotiated, so the first
        // octet of a NIST-curve point must be 4 (this also rules out the one-byte encoding
        // of the point at infinity). aws-lc checks the point is on the curve.
        if group != NamedGroup::X25519 && peer_public_key[0] != 0x04 {
            return Err(invalid);
        }
        let peer = UnparsedPublicKey::new(self.curve.algorithm, peer_public_key);
        let premaster = agreement::agree(&self.private, peer, invalid, |z| {
            // RFC 8422 §5.11: "[X25519] MUST check whether the computed premaster secret is
            // the all-zero value and abort the handshake if so". (For the NIST curves an
            // x-coordinate of zero is a legitimate point and stays accepted.)
            if group == NamedGroup::X25519 && z.iter().all(|&b| b == 0) {
                return Err(Error::InvalidPeerPublicKey { group });
            }
            Ok(PremasterSecret::from_shared_secret(z))
        })?;
        Ok(premaster)
    }
}

#[cfg(test)]
#[path = "ecdhe_tests.rs"]
mod tests;
