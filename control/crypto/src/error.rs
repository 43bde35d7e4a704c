//! The crate-local error type.

use std::path::PathBuf;

/// Errors from this crate.
///
/// The doc comment of each variant names the TLS alert an engine would send when the error
/// comes from peer input (RFC 5246 §7.2.2); errors from local configuration are marked as such.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The peer's ECDH public value is malformed, not on the curve, the identity, or gives an
    /// all-zero shared secret. Alert: illegal_parameter.
    #[error("invalid peer ECDH public key for {group:?}")]
    InvalidPeerPublicKey {
        /// The group the key was offered for.
        group: dtls_proto::NamedGroup,
    },
    /// A named group this crate does not implement (outside
    /// [`dtls_proto::NamedGroup::SUPPORTED`]). Alert: illegal_parameter.
    #[error("unsupported named group 0x{:04x}", .group.to_u16())]
    UnsupportedGroup {
        /// The group.
        group: dtls_proto::NamedGroup,
    },
    /// The underlying key agreement failed for a reason other than the peer key.
    #[error("ECDH key generation or agreement failed")]
    AgreementFailed,
    /// A signature scheme this crate does not implement, or one the key cannot produce.
    /// Alert: illegal_parameter (peer input) / handshake_failure (local).
    #[error("signature scheme 0x{:04x} is not supported here", .scheme.to_u16())]
    UnsupportedSignatureScheme {
        /// The scheme.
        scheme: dtls_proto::SignatureScheme,
    },
    /// Producing a signature failed.
    #[error("signing failed")]
    SigningFailed,
    /// A handshake signature did not verify. Alert: decrypt_error.
    #[error("signature verification failed: {source}")]
    BadSignature {
        /// What webpki reported.
        source: webpki::Error,
    },
    /// The peer sent no certificate where one is required. Alert: handshake_failure.
    #[error("empty certificate chain")]
    EmptyCertificateChain,
    /// The certificate chain or name did not verify. Alert: bad_certificate (or
    /// certificate_expired / unknown_ca; see the source).
    #[error("certificate verification failed: {source}")]
    InvalidCertificate {
        /// What webpki reported.
        source: webpki::Error,
    },
    /// The peer presented a certificate chain where the policy accepts none
    /// ([`crate::PeerVerifier::RejectAll`]). Alert: bad_certificate.
    #[error("no certificate is accepted from this peer (PSK-only or no client authentication)")]
    CertificateNotAccepted,
    /// The server name to check is neither a DNS name nor an IP address. Local configuration.
    #[error("invalid server name {name:?}")]
    InvalidServerName {
        /// The rejected name.
        name: String,
    },
    /// A trust anchor could not be parsed. Local configuration.
    #[error("invalid trust anchor: {source}")]
    InvalidTrustAnchor {
        /// What webpki reported.
        source: webpki::Error,
    },
    /// No trust anchors were given to a verifier. Local configuration.
    #[error("no trust anchors")]
    NoTrustAnchors,
    /// A PEM file or buffer could not be read or parsed. Local configuration.
    #[error("PEM error in {}: {source}", path.as_ref().map_or("<memory>".into(), |p| p.display().to_string()))]
    Pem {
        /// The file, when the PEM came from one.
        path: Option<PathBuf>,
        /// What rustls-pki-types reported.
        source: rustls_pki_types::pem::Error,
    },
    /// A PEM input held no certificate. Local configuration.
    #[error("no certificate found in {}", path.as_ref().map_or("<memory>".into(), |p| p.display().to_string()))]
    NoCertificates {
        /// The file, when the PEM came from one.
        path: Option<PathBuf>,
    },
    /// The private key is of a type or curve this crate cannot sign with. Local configuration.
    #[error("unsupported or invalid private key: {reason}")]
    UnsupportedPrivateKey {
        /// Why it was rejected.
        reason: &'static str,
    },
    /// The exporter label is one TLS reserves for itself (RFC 5705 §4).
    #[error("exporter label is reserved by TLS")]
    ReservedExporterLabel,
    /// The exporter context is longer than 2^16 - 1 bytes (RFC 5705 §4).
    #[error("exporter context of {len} bytes exceeds 65535")]
    ExporterContextTooLong {
        /// Its length.
        len: usize,
    },
    /// An HKDF-Expand-Label input does not fit `HkdfLabel` (RFC 8446 §7.1): an empty label,
    /// one over 249 bytes (255 with the prefix), a context over 255 bytes, or an output
    /// longer than 255 hash lengths or 65535 bytes. From local input (exporter label and
    /// length, ticket nonce).
    #[error(
        "HKDF-Expand-Label input out of range (label {label_len}, context {context_len}, output {out_len} bytes)"
    )]
    InvalidHkdfLabel {
        /// Label length without the prefix.
        label_len: usize,
        /// Context length.
        context_len: usize,
        /// Requested output length.
        out_len: usize,
    },
    /// The transcript hash was read before the suite's hash was selected.
    #[error("transcript hash not selected yet")]
    TranscriptHashNotSelected,
    /// The transcript hash was selected twice with different algorithms.
    #[error("transcript hash already selected as {selected:?}")]
    TranscriptHashAlreadySelected {
        /// The hash in use.
        selected: dtls_proto::PrfHash,
    },
    /// A PSK is empty or longer than the premaster secret can carry (RFC 4279 §2).
    #[error("PSK of {len} bytes is empty or too long")]
    InvalidPskLength {
        /// Its length.
        len: usize,
    },
    /// A ticket could not be authenticated, names no known key, or is malformed.
    /// The engine falls back to a full handshake (RFC 5077 §3.1).
    #[error("session ticket rejected")]
    TicketRejected,
    /// A ticket authenticated but its lifetime has passed. Full handshake follows.
    #[error("session ticket expired")]
    TicketExpired,
    /// The session state to put in a ticket does not fit the encoding.
    #[error("session state too large for a ticket ({len} bytes of peer identity)")]
    SessionStateTooLarge {
        /// Length of the peer identity.
        len: usize,
    },
    /// Sealing a ticket failed.
    #[error("ticket sealing failed")]
    TicketSealFailed,
    /// The record layer refused the key material (the AEAD does not match the key block).
    #[error("record key rejected: {source}")]
    RecordKey {
        /// What the record layer reported.
        source: dataplane::record::KeyError,
    },
    /// Generating the test PKI failed.
    #[error("test PKI generation failed: {source}")]
    TestPki {
        /// What rcgen reported.
        source: rcgen::Error,
    },
    /// Reading or writing a file failed.
    #[error("I/O error on {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}
