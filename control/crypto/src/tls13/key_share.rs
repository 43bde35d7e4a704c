//! TLS 1.3 key shares (RFC 8446 §4.2.8): X25519, secp256r1 and secp384r1 ECDHE, and the
//! hybrid X25519MLKEM768 (draft-ietf-tls-ecdhe-mlkem) of ML-KEM-768 (FIPS 203) and X25519.
//!
//! The client generates a [`ClientKeyShare`] per offered group and, once the ServerHello
//! names one, completes it with the server's share. The server answers a client share in
//! one step with [`ServerKeyShare::respond`]. For the ECDHE groups both sides agree; for the
//! hybrid the server encapsulates to the client's ML-KEM key and the client decapsulates.
//!
//! Randomness: every (EC)DH private key, including the X25519 half of the hybrid, is drawn
//! from the injected [`Rng`] as in [`EphemeralKeyPair`]. ML-KEM key generation and
//! encapsulation draw from aws-lc's own DRBG: aws-lc-rs 1.19 (`aws_lc_rs::kem`, stable, no
//! feature needed) offers no way to pass the seed or the encapsulation randomness in, so
//! a seeded [`Rng`] does not make a hybrid handshake reproducible byte for byte (it still
//! makes every other value reproducible).

use std::fmt;

use aws_lc_rs::kem::{self, Ciphertext, DecapsulationKey, EncapsulationKey};
use dtls_proto::NamedGroup;
use zeroize::Zeroizing;

use crate::{EphemeralKeyPair, Error, Rng};

/// ML-KEM-768 encapsulation key length (FIPS 203 §8, Table 3: 384·k + 32 with k = 3).
pub const MLKEM768_ENCAPSULATION_KEY_LEN: usize = 1184;
/// ML-KEM-768 ciphertext length (FIPS 203 §8, Table 3: 32·(du·k + dv)).
pub const MLKEM768_CIPHERTEXT_LEN: usize = 1088;
/// ML-KEM shared secret length (FIPS 203: 32 bytes for every parameter set).
const MLKEM_SHARED_SECRET_LEN: usize = 32;
/// X25519 public value and shared secret length (RFC 7748 §6.1).
const X25519_LEN: usize = 32;

/// Client key_share length of X25519MLKEM768: encapsulation key ‖ X25519 public value.
pub const X25519MLKEM768_CLIENT_SHARE_LEN: usize = MLKEM768_ENCAPSULATION_KEY_LEN + X25519_LEN;
/// Server key_share length of X25519MLKEM768: ciphertext ‖ X25519 public value.
pub const X25519MLKEM768_SERVER_SHARE_LEN: usize = MLKEM768_CIPHERTEXT_LEN + X25519_LEN;

/// The groups this module implements for TLS 1.3, in our default preference order (the
/// hybrid first, as DESIGN.md asks).
pub const KEY_SHARE_GROUPS: &[NamedGroup] = &[
    NamedGroup::X25519Mlkem768,
    NamedGroup::X25519,
    NamedGroup::Secp256r1,
    NamedGroup::Secp384r1,
];

/// The (EC)DHE input to the key schedule ([`super::EarlySecret::into_handshake_secret`]):
/// the ECDH shared secret (RFC 8446 §7.4.1 / §7.4.2) or, for X25519MLKEM768, the ML-KEM
/// shared secret ‖ the X25519 shared secret. Zeroized on drop, not `Clone`, `Debug` shows
/// only the length.
pub struct SharedSecret {
    bytes: Zeroizing<Vec<u8>>,
}

impl fmt::Debug for SharedSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SharedSecret(<{} bytes redacted>)", self.bytes.len())
    }
}

impl SharedSecret {
    fn from_parts(parts: &[&[u8]]) -> Self {
        let mut bytes = Zeroizing::new(Vec::with_capacity(parts.iter().map(|p| p.len()).sum()));
        for part in parts {
            bytes.extend_from_slice(part);
        }
        Self { bytes }
    }

    /// Wraps a shared secret given as bytes (test vectors).
    #[cfg(test)]
    pub(crate) fn from_slice(bytes: &[u8]) -> Self {
        Self::from_parts(&[bytes])
    }

    /// The secret bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }
}

enum ClientPrivate {
    Ecdhe(EphemeralKeyPair),
    X25519Mlkem768 {
        mlkem: DecapsulationKey,
        x25519: EphemeralKeyPair,
    },
}

/// A client's key share for one group, kept until the ServerHello.
pub struct ClientKeyShare {
    group: NamedGroup,
    private: ClientPrivate,
    public: Vec<u8>,
}

impl fmt::Debug for ClientKeyShare {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientKeyShare")
            .field("group", &self.group)
            .finish_non_exhaustive()
    }
}

impl ClientKeyShare {
    /// Generates a key share for `group`.
    ///
    /// # Errors
    /// [`Error::UnsupportedGroup`] for a group outside [`KEY_SHARE_GROUPS`];
    /// [`Error::AgreementFailed`] if aws-lc fails to generate a key.
    pub fn generate(group: NamedGroup, rng: &mut dyn Rng) -> Result<Self, Error> {
        match group {
            NamedGroup::X25519Mlkem768 => {
                crate::ops::count_key_exchange();
                let mlkem = DecapsulationKey::generate(&kem::ML_KEM_768)
                    .map_err(|_| Error::AgreementFailed)?;
                let ek = mlkem
                    .encapsulation_key()
                    .and_then(|ek| ek.key_bytes())
                    .map_err(|_| Error::AgreementFailed)?;
                let x25519 = EphemeralKeyPair::generate(NamedGroup::X25519, rng)?;
                // draft-ietf-tls-ecdhe-mlkem: "the client's key_exchange value is the
                // concatenation of the client's ML-KEM-768 encapsulation key and the
                // client's X25519 ephemeral share" (ML-KEM first, unlike the NIST-curve
                // hybrids).
                let mut public = Vec::with_capacity(X25519MLKEM768_CLIENT_SHARE_LEN);
                public.extend_from_slice(ek.as_ref());
                public.extend_from_slice(x25519.public_key());
                if public.len() != X25519MLKEM768_CLIENT_SHARE_LEN {
                    return Err(Error::AgreementFailed);
                }
                Ok(Self {
                    group,
                    private: ClientPrivate::X25519Mlkem768 { mlkem, x25519 },
                    public,
                })
            }
            _ => {
                let pair = ecdhe_key_pair(group, rng)?;
                Ok(Self {
                    group,
                    public: pair.public_key().to_vec(),
                    private: ClientPrivate::Ecdhe(pair),
                })
            }
        }
    }

    /// The group.
    pub fn group(&self) -> NamedGroup {
        self.group
    }

    /// The `key_exchange` bytes of this `KeyShareEntry`: the uncompressed point for the NIST
    /// curves (RFC 8446 §4.2.8.2), the 32-byte public value for X25519 (§4.2.8.2), the
    /// 1184-byte encapsulation key ‖ 32-byte X25519 value for X25519MLKEM768.
    pub fn public_key(&self) -> &[u8] {
        &self.public
    }

    /// Completes the exchange with the server's `key_exchange` bytes, consuming the share.
    ///
    /// # Errors
    /// [`Error::InvalidPeerPublicKey`] (alert illegal_parameter) when the server share has
    /// the wrong length or is invalid for the group (see [`EphemeralKeyPair::agree`]; for
    /// the hybrid, a ciphertext aws-lc rejects or an invalid X25519 half).
    pub fn complete(self, server_share: &[u8]) -> Result<SharedSecret, Error> {
        let invalid = Error::InvalidPeerPublicKey { group: self.group };
        match self.private {
            ClientPrivate::Ecdhe(pair) => {
                let z = pair.agree(server_share)?;
                Ok(SharedSecret::from_parts(&[z.as_bytes()]))
            }
            ClientPrivate::X25519Mlkem768 { mlkem, x25519 } => {
                // draft-ietf-tls-ecdhe-mlkem: the server's key_exchange is the ML-KEM
                // ciphertext ‖ the server's X25519 share; FIPS 203 §7.3 requires the
                // ciphertext length check before decapsulation.
                if server_share.len() != X25519MLKEM768_SERVER_SHARE_LEN {
                    return Err(invalid);
                }
                let (ct, x_public) = server_share.split_at(MLKEM768_CIPHERTEXT_LEN);
                // ML-KEM decapsulation does not fail on a wrong ciphertext (implicit
                // rejection gives an unrelated secret, FIPS 203 §6.3); an error here is
                // aws-lc refusing the input.
                let k = mlkem
                    .decapsulate(Ciphertext::from(ct))
                    .map_err(|_| Error::InvalidPeerPublicKey { group: self.group })?;
                let z = x25519.agree(x_public).map_err(|_| invalid)?;
                hybrid_secret(k.as_ref(), z.as_bytes(), self.group)
            }
        }
    }
}

/// The server's answer to a client key share: its own `key_exchange` bytes and the shared
/// secret.
pub struct ServerKeyShare {
    group: NamedGroup,
    public: Vec<u8>,
    shared: SharedSecret,
}

impl fmt::Debug for ServerKeyShare {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerKeyShare")
            .field("group", &self.group)
            .finish_non_exhaustive()
    }
}

impl ServerKeyShare {
    /// Answers the client's `key_exchange` bytes for `group`: ECDHE with a fresh key pair,
    /// or, for X25519MLKEM768, encapsulation to the client's ML-KEM key plus X25519.
    ///
    /// # Errors
    /// [`Error::UnsupportedGroup`] for a group outside [`KEY_SHARE_GROUPS`];
    /// [`Error::InvalidPeerPublicKey`] (alert illegal_parameter) when the client share has
    /// the wrong length or is invalid: not a point on the curve, an all-zero X25519
    /// secret, or an ML-KEM encapsulation key failing the FIPS 203 §7.2 modulus check
    /// (draft-ietf-tls-ecdhe-mlkem requires the check and the alert);
    /// [`Error::AgreementFailed`] if aws-lc fails internally.
    pub fn respond(
        group: NamedGroup,
        client_share: &[u8],
        rng: &mut dyn Rng,
    ) -> Result<Self, Error> {
        let invalid = Error::InvalidPeerPublicKey { group };
        match group {
            NamedGroup::X25519Mlkem768 => {
                if client_share.len() != X25519MLKEM768_CLIENT_SHARE_LEN {
                    return Err(invalid);
                }
                let (ek, x_public) = client_share.split_at(MLKEM768_ENCAPSULATION_KEY_LEN);
                if !mlkem768_encapsulation_key_is_valid(ek) {
                    return Err(invalid);
                }
                let ek = EncapsulationKey::new(&kem::ML_KEM_768, ek).map_err(|_| invalid)?;
                crate::ops::count_key_exchange();
                let (ct, k) = ek.encapsulate().map_err(|_| Error::AgreementFailed)?;
                let x25519 = EphemeralKeyPair::generate(NamedGroup::X25519, rng)?;
                let mut public = Vec::with_capacity(X25519MLKEM768_SERVER_SHARE_LEN);
                public.extend_from_slice(ct.as_ref());
                public.extend_from_slice(x25519.public_key());
                if public.len() != X25519MLKEM768_SERVER_SHARE_LEN {
                    return Err(Error::AgreementFailed);
                }
                let z = x25519
                    .agree(x_public)
                    .map_err(|_| Error::InvalidPeerPublicKey { group })?;
                Ok(Self {
                    group,
                    public,
                    shared: hybrid_secret(k.as_ref(), z.as_bytes(), group)?,
                })
            }
            _ => {
                let pair = ecdhe_key_pair(group, rng)?;
                let public = pair.public_key().to_vec();
                let z = pair.agree(client_share)?;
                Ok(Self {
                    group,
                    public,
                    shared: SharedSecret::from_parts(&[z.as_bytes()]),
                })
            }
        }
    }

    /// The group.
    pub fn group(&self) -> NamedGroup {
        self.group
    }

    /// The server's `key_exchange` bytes for the ServerHello.
    pub fn public_key(&self) -> &[u8] {
        &self.public
    }

    /// The shared secret for the key schedule.
    pub fn shared_secret(&self) -> &SharedSecret {
        &self.shared
    }
}

/// An ECDHE key pair for a TLS 1.3 ECDHE group (not the hybrid).
fn ecdhe_key_pair(group: NamedGroup, rng: &mut dyn Rng) -> Result<EphemeralKeyPair, Error> {
    match group {
        NamedGroup::X25519 | NamedGroup::Secp256r1 | NamedGroup::Secp384r1 => {
            EphemeralKeyPair::generate(group, rng)
        }
        _ => Err(Error::UnsupportedGroup { group }),
    }
}

/// draft-ietf-tls-ecdhe-mlkem (X25519MLKEM768): the shared secret is the ML-KEM shared
/// secret ‖ the X25519 shared secret, 64 bytes.
fn hybrid_secret(mlkem: &[u8], x25519: &[u8], group: NamedGroup) -> Result<SharedSecret, Error> {
    if mlkem.len() != MLKEM_SHARED_SECRET_LEN || x25519.len() != X25519_LEN {
        return Err(Error::InvalidPeerPublicKey { group });
    }
    Ok(SharedSecret::from_parts(&[mlkem, x25519]))
}

/// The ML-KEM encapsulation key check (FIPS 203 §7.2, "modulus check"): the first 384·k
/// bytes decode to 12-bit coefficients (ByteDecode_12, two per three bytes, little-endian)
/// that must all be below q = 3329, i.e. re-encoding them gives the same bytes. The length
/// is checked by the caller.
fn mlkem768_encapsulation_key_is_valid(ek: &[u8]) -> bool {
    const Q: u16 = 3329;
    let polys = &ek[..MLKEM768_ENCAPSULATION_KEY_LEN - 32];
    polys.chunks_exact(3).all(|b| {
        let (b0, b1, b2) = (u16::from(b[0]), u16::from(b[1]), u16::from(b[2]));
        let d1 = b0 | ((b1 & 0x0f) << 8);
        let d2 = (b1 >> 4) | (b2 << 4);
        d1 < Q && d2 < Q
    })
}

#[cfg(test)]
#[path = "key_share_tests.rs"]
mod tests;
