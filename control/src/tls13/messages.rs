//! What both roles of the DTLS 1.3 engine build or check the same way: extension lookups,
//! Finished, CertificateVerify and the Certificate message.

use dtls_crypto::pki_types::CertificateDer;
use dtls_crypto::{HandshakeHash, SigningKey, verify_signature};
use dtls_proto::tls13::{Certificate13, CertificateEntry};
use dtls_proto::{
    CertificateVerify, DigitallySigned, ExtensionType, Extensions, SignatureScheme, WireError,
};

use crate::config::CertifiedKey;
use crate::error::HandshakeError;

pub(crate) fn decode(message: &'static str) -> impl Fn(WireError) -> HandshakeError {
    move |source| HandshakeError::Decode { message, source }
}

/// RFC 8446 §4.4.3: "RSA signatures MUST use an RSASSA-PSS algorithm, regardless of
/// whether RSASSA-PKCS1-v1_5 algorithms appear in "signature_algorithms"". The schemes a
/// DTLS 1.3 CertificateVerify may use, of those we implement.
pub(crate) fn tls13_scheme(scheme: SignatureScheme) -> bool {
    matches!(
        scheme,
        SignatureScheme::EcdsaSecp256r1Sha256
            | SignatureScheme::EcdsaSecp384r1Sha384
            | SignatureScheme::RsaPssRsaeSha256
            | SignatureScheme::RsaPssRsaeSha384
            | SignatureScheme::Ed25519
    )
}

/// The schemes we offer or accept in DTLS 1.3: the configured ones valid in 1.3.
pub(crate) fn offered_schemes(configured: &[SignatureScheme]) -> Vec<SignatureScheme> {
    configured
        .iter()
        .copied()
        .filter(|s| tls13_scheme(*s))
        .collect()
}

/// An extension's raw body, if present.
pub(crate) fn raw(ext: &Extensions, ext_type: ExtensionType) -> Option<&[u8]> {
    ext.raw(ext_type)
}

/// Appends a raw extension to `ext`.
pub(crate) fn push_raw(ext: &mut Extensions, ext_type: ExtensionType, data: Vec<u8>) {
    ext.other.push(dtls_proto::RawExtension { ext_type, data });
}

/// The content a CertificateVerify signs (RFC 8446 §4.4.3): 64 spaces, the context string
/// ("TLS 1.3, server CertificateVerify" or "TLS 1.3, client CertificateVerify"; DTLS 1.3
/// keeps them, RFC 9147 §5 changes only the HKDF labels), a zero byte, the transcript hash.
pub(crate) fn signed_content(server: bool, hash: &HandshakeHash) -> Vec<u8> {
    let context: &[u8] = if server {
        b"TLS 1.3, server CertificateVerify"
    } else {
        b"TLS 1.3, client CertificateVerify"
    };
    let mut out = Vec::with_capacity(64 + context.len() + 1 + hash.as_bytes().len());
    out.extend_from_slice(&[0x20; 64]);
    out.extend_from_slice(context);
    out.push(0);
    out.extend_from_slice(hash.as_bytes());
    out
}

/// Our Certificate message body: `context` and the chain (an empty list when we have no
/// certificate, which a client may send, RFC 8446 §4.4.2.4).
pub(crate) fn certificate_body(
    context: &[u8],
    certified: Option<&CertifiedKey>,
) -> Result<Vec<u8>, HandshakeError> {
    let message = Certificate13 {
        context: context.to_vec(),
        entries: certified
            .map(|c| {
                c.chain
                    .iter()
                    .map(|der| CertificateEntry {
                        cert_data: der.as_ref().to_vec(),
                        extensions: Vec::new(),
                    })
                    .collect()
            })
            .unwrap_or_default(),
    };
    let mut body = Vec::new();
    message
        .emit(&mut body)
        .map_err(|_| HandshakeError::Internal {
            what: "certificate chain too long",
        })?;
    Ok(body)
}

/// Our CertificateVerify body over `hash` with `scheme`.
pub(crate) fn certificate_verify_body(
    key: &SigningKey,
    scheme: SignatureScheme,
    server: bool,
    hash: &HandshakeHash,
) -> Result<Vec<u8>, HandshakeError> {
    let signature = key.sign(scheme, &signed_content(server, hash))?;
    let mut body = Vec::with_capacity(4 + signature.len());
    CertificateVerify {
        signed: DigitallySigned { scheme, signature },
    }
    .emit(&mut body)
    .map_err(|_| HandshakeError::Internal {
        what: "signature too long",
    })?;
    Ok(body)
}

/// Checks the peer's CertificateVerify over `hash` against its end-entity certificate:
/// the scheme must be one we offered and valid in TLS 1.3 (RFC 8446 §4.4.3: "If the
/// CertificateVerify message is sent by a server, the signature algorithm MUST be one
/// offered in the client's "signature_algorithms" extension").
pub(crate) fn check_certificate_verify(
    body: &[u8],
    offered: &[SignatureScheme],
    end_entity: &CertificateDer<'_>,
    server: bool,
    hash: &HandshakeHash,
) -> Result<(), HandshakeError> {
    let verify = CertificateVerify::parse(body).map_err(decode("CertificateVerify"))?;
    let scheme = verify.signed.scheme;
    if !tls13_scheme(scheme) || !offered.contains(&scheme) {
        return Err(HandshakeError::IllegalParameter {
            what: "CertificateVerify scheme not offered",
        });
    }
    verify_signature(
        scheme,
        end_entity,
        &signed_content(server, hash),
        &verify.signed.signature,
    )
    .map_err(|_| HandshakeError::BadSignature)
}

/// The chain of a received Certificate message (RFC 8446 §4.4.2), checking the context.
pub(crate) fn parse_certificate(
    body: &[u8],
    context: &[u8],
) -> Result<Vec<CertificateDer<'static>>, HandshakeError> {
    let message = Certificate13::parse(body).map_err(decode("Certificate"))?;
    if message.context != context {
        return Err(HandshakeError::IllegalParameter {
            what: "certificate_request_context mismatch",
        });
    }
    Ok(message
        .entries
        .into_iter()
        .map(|e| CertificateDer::from(e.cert_data))
        .collect())
}
