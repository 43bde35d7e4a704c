//! Handshake signatures: ServerKeyExchange and CertificateVerify (RFC 5246 §7.4.3, §7.4.8).

use std::fmt;
use std::path::Path;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{self, EcdsaKeyPair, Ed25519KeyPair, KeyPair, RsaKeyPair};
use dtls_proto::SignatureScheme;
use rustls_pki_types::PrivateKeyDer;

use crate::Error;

/// The kind of a signing key, which decides the usable key-exchange suites (ECDHE_ECDSA for
/// ECDSA and Ed25519 keys, RFC 8422 §6 / RFC 8422 §5.1.3; ECDHE_RSA for RSA keys).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SigningKeyKind {
    /// ECDSA on secp256r1.
    EcdsaP256,
    /// ECDSA on secp384r1.
    EcdsaP384,
    /// RSA (any size aws-lc accepts, 2048 bits and up).
    Rsa,
    /// Ed25519.
    Ed25519,
}

impl SigningKeyKind {
    /// True for keys usable with ECDHE_ECDSA suites (ECDSA and Ed25519).
    pub fn is_ecdsa_family(self) -> bool {
        !matches!(self, Self::Rsa)
    }
}

enum Inner {
    /// aws-lc binds the hash to the curve (P-256 with SHA-256, P-384 with SHA-384), as the
    /// TLS 1.3 scheme names do; peers offer both codes in practice.
    Ecdsa(EcdsaKeyPair),
    Rsa(RsaKeyPair),
    Ed25519(Ed25519KeyPair),
}

/// A private key that signs handshake messages, with the schemes it can produce.
pub struct SigningKey {
    kind: SigningKeyKind,
    inner: Inner,
    rng: SystemRandom,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

// The schemes this crate signs and verifies are [`SignatureScheme::SUPPORTED`]; each key
// kind produces these (RFC 8446 §4.2.3 names; in TLS 1.2 they are the
// `SignatureAndHashAlgorithm` pairs of RFC 5246 §7.4.1.4.1, with the RSA-PSS and Ed25519
// code points of RFC 8446 / RFC 8422).
const ECDSA_P256_SCHEMES: &[SignatureScheme] = &[SignatureScheme::EcdsaSecp256r1Sha256];
const ECDSA_P384_SCHEMES: &[SignatureScheme] = &[SignatureScheme::EcdsaSecp384r1Sha384];
const RSA_SCHEMES: &[SignatureScheme] = &[
    SignatureScheme::RsaPssRsaeSha256,
    SignatureScheme::RsaPssRsaeSha384,
    SignatureScheme::RsaPkcs1Sha256,
    SignatureScheme::RsaPkcs1Sha384,
];
const ED25519_SCHEMES: &[SignatureScheme] = &[SignatureScheme::Ed25519];

impl SigningKey {
    /// Loads a key from parsed DER: PKCS#8 (ECDSA P-256/P-384, RSA, Ed25519), SEC1 (ECDSA) or
    /// PKCS#1 (RSA).
    ///
    /// # Errors
    /// [`Error::UnsupportedPrivateKey`] for other key types or invalid keys.
    pub fn from_der(key: &PrivateKeyDer<'_>) -> Result<Self, Error> {
        let (kind, inner) = match key {
            PrivateKeyDer::Pkcs1(der) => (
                SigningKeyKind::Rsa,
                Inner::Rsa(RsaKeyPair::from_der(der.secret_pkcs1_der()).map_err(|_| {
                    Error::UnsupportedPrivateKey {
                        reason: "invalid PKCS#1 RSA key",
                    }
                })?),
            ),
            PrivateKeyDer::Sec1(der) => ecdsa_from_der(der.secret_sec1_der())?,
            PrivateKeyDer::Pkcs8(der) => {
                let der = der.secret_pkcs8_der();
                if let Ok(pair) = ecdsa_from_der(der) {
                    pair
                } else if let Ok(rsa) = RsaKeyPair::from_pkcs8(der) {
                    (SigningKeyKind::Rsa, Inner::Rsa(rsa))
                } else if let Ok(ed) = Ed25519KeyPair::from_pkcs8_maybe_unchecked(der) {
                    (SigningKeyKind::Ed25519, Inner::Ed25519(ed))
                } else {
                    return Err(Error::UnsupportedPrivateKey {
                        reason: "PKCS#8 key is not ECDSA P-256/P-384, RSA or Ed25519",
                    });
                }
            }
            _ => {
                return Err(Error::UnsupportedPrivateKey {
                    reason: "unknown private key encoding",
                });
            }
        };
        Ok(Self {
            kind,
            inner,
            rng: SystemRandom::new(),
        })
    }

    /// Loads the first private key from a PEM file.
    ///
    /// # Errors
    /// [`Error::Pem`] or [`Error::UnsupportedPrivateKey`].
    pub fn from_pem_file(path: impl AsRef<Path>) -> Result<Self, Error> {
        Self::from_der(&crate::pem::load_private_key(path)?)
    }

    /// Loads the first private key from a PEM buffer.
    ///
    /// # Errors
    /// [`Error::Pem`] or [`Error::UnsupportedPrivateKey`].
    pub fn from_pem_slice(pem: &[u8]) -> Result<Self, Error> {
        Self::from_der(&crate::pem::parse_private_key(pem)?)
    }

    /// What kind of key this is.
    pub fn kind(&self) -> SigningKeyKind {
        self.kind
    }

    /// The schemes this key can produce, in its preference order.
    pub fn schemes(&self) -> &'static [SignatureScheme] {
        match self.kind {
            SigningKeyKind::EcdsaP256 => ECDSA_P256_SCHEMES,
            SigningKeyKind::EcdsaP384 => ECDSA_P384_SCHEMES,
            SigningKeyKind::Rsa => RSA_SCHEMES,
            SigningKeyKind::Ed25519 => ED25519_SCHEMES,
        }
    }

    /// The first of this key's schemes (in its preference order) that the peer offered.
    pub fn choose_scheme(&self, peer_offered: &[SignatureScheme]) -> Option<SignatureScheme> {
        self.schemes()
            .iter()
            .copied()
            .find(|s| peer_offered.contains(s))
    }

    /// Signs `message` (the whole signed content; hashing is part of the scheme).
    ///
    /// # Errors
    /// [`Error::UnsupportedSignatureScheme`] when this key cannot produce `scheme`,
    /// [`Error::SigningFailed`] when aws-lc fails.
    pub fn sign(&self, scheme: SignatureScheme, message: &[u8]) -> Result<Vec<u8>, Error> {
        let unsupported = Error::UnsupportedSignatureScheme { scheme };
        crate::ops::count_signature();
        match (&self.inner, scheme) {
            (Inner::Ecdsa(ecdsa), scheme) if self.schemes().contains(&scheme) => ecdsa
                .sign(&self.rng, message)
                .map(|s| s.as_ref().to_vec())
                .map_err(|_| Error::SigningFailed),
            (Inner::Rsa(rsa), scheme) => {
                let padding: &'static dyn signature::RsaEncoding = match scheme {
                    SignatureScheme::RsaPssRsaeSha256 => &signature::RSA_PSS_SHA256,
                    SignatureScheme::RsaPssRsaeSha384 => &signature::RSA_PSS_SHA384,
                    SignatureScheme::RsaPkcs1Sha256 => &signature::RSA_PKCS1_SHA256,
                    SignatureScheme::RsaPkcs1Sha384 => &signature::RSA_PKCS1_SHA384,
                    _ => return Err(unsupported),
                };
                let mut sig = vec![0u8; rsa.public_modulus_len()];
                rsa.sign(padding, &self.rng, message, &mut sig)
                    .map_err(|_| Error::SigningFailed)?;
                Ok(sig)
            }
            (Inner::Ed25519(ed), SignatureScheme::Ed25519) => {
                Ok(ed.sign(message).as_ref().to_vec())
            }
            _ => Err(unsupported),
        }
    }

    /// The public key bytes (uncompressed point, RSA public key DER, or Ed25519 key) — for
    /// tests and diagnostics.
    pub fn public_key(&self) -> &[u8] {
        match &self.inner {
            Inner::Ecdsa(ecdsa) => ecdsa.public_key().as_ref(),
            Inner::Rsa(rsa) => rsa.public_key().as_ref(),
            Inner::Ed25519(ed) => ed.public_key().as_ref(),
        }
    }
}

/// ECDSA from PKCS#8 or SEC1 DER, trying P-256 then P-384.
fn ecdsa_from_der(der: &[u8]) -> Result<(SigningKeyKind, Inner), Error> {
    let curves = [
        (
            SigningKeyKind::EcdsaP256,
            &signature::ECDSA_P256_SHA256_ASN1_SIGNING,
        ),
        (
            SigningKeyKind::EcdsaP384,
            &signature::ECDSA_P384_SHA384_ASN1_SIGNING,
        ),
    ];
    for (kind, alg) in curves {
        if let Ok(pair) = EcdsaKeyPair::from_private_key_der(alg, der) {
            return Ok((kind, Inner::Ecdsa(pair)));
        }
    }
    Err(Error::UnsupportedPrivateKey {
        reason: "not an ECDSA P-256 or P-384 key",
    })
}
