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

/// External PSKs are used with SHA-256 (RFC 8446 §4.2.11: "If no hash algorithm is
/// provisioned for the PSK, then it MUST default to SHA-256"); a PSK is offered and accepted
/// only with SHA-256 suites.
pub(crate) const PSK_HASH: dtls_proto::PrfHash = dtls_proto::PrfHash::Sha256;

/// `Transcript-Hash(prefix, Truncate(ClientHello))` (RFC 8446 §4.2.11.2): the messages
/// before this ClientHello (after a HelloRetryRequest: message_hash and the
/// HelloRetryRequest), its TLS-style header with the full length, and its body up to the
/// binders list.
pub(crate) fn binder_transcript(
    hash: dtls_proto::PrfHash,
    prefix: &[u8],
    body: &[u8],
    binders_len: usize,
) -> HandshakeHash {
    let len = u32::try_from(body.len()).unwrap_or(0).to_be_bytes();
    let header = [
        dtls_proto::HandshakeType::ClientHello.to_u8(),
        len[1],
        len[2],
        len[3],
    ];
    let truncated = &body[..body.len().saturating_sub(binders_len)];
    HandshakeHash::digest_parts(hash, &[prefix, &header, truncated])
}

/// The binder of `psk` (external, or a resumption PSK from a ticket) over `transcript`, in
/// the transcript's hash (RFC 8446 §4.2.11.2).
pub(crate) fn psk_binder(
    hash: dtls_proto::PrfHash,
    kind: dtls_crypto::tls13::PskKind,
    psk: &[u8],
    transcript: &HandshakeHash,
) -> dtls_crypto::tls13::VerifyData {
    dtls_crypto::tls13::EarlySecret::new(hash, dtls_crypto::tls13::LabelPrefix::Dtls13, Some(psk))
        .binder_key(kind)
        .binder(transcript)
}

/// The synthetic messages a HelloRetryRequest puts before the second ClientHello in the
/// transcript (RFC 8446 §4.4.1): message_hash(Hash(ClientHello1)) and the HelloRetryRequest.
pub(crate) fn retry_prefix(client_hello1: &HandshakeHash, hello_retry_request: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&dtls_proto::tls13::messages::message_hash_header(
        client_hello1.as_bytes().len(),
    ));
    out.extend_from_slice(client_hello1.as_bytes());
    let _ = dtls_proto::tls13::messages::put_tls_handshake_header(
        &mut out,
        dtls_proto::HandshakeType::ServerHello,
        hello_retry_request.len(),
    );
    out.extend_from_slice(hello_retry_request);
    out
}

/// Whether pre_shared_key is the last extension of the ClientHello `body` (RFC 8446
/// §4.2.11: "The "pre_shared_key" extension MUST be the last extension in the
/// ClientHello").
pub(crate) fn pre_shared_key_is_last(body: &[u8]) -> bool {
    fn skip(body: &[u8], at: usize, len_bytes: usize) -> Option<usize> {
        let len = match len_bytes {
            1 => usize::from(*body.get(at)?),
            _ => usize::from(u16::from_be_bytes([*body.get(at)?, *body.get(at + 1)?])),
        };
        Some(at + len_bytes + len)
    }
    let list = (|| {
        let at = skip(body, 2 + 32, 1)?; // session id
        let at = skip(body, at, 1)?; // cookie
        let at = skip(body, at, 2)?; // suites
        let at = skip(body, at, 1)?; // compression
        body.get(at + 2..)
    })();
    list.is_some_and(|l| dtls_proto::tls13::extensions::pre_shared_key_is_last(l).unwrap_or(false))
}
