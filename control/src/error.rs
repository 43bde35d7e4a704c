//! Why a handshake failed.
//!
//! Every variant is fatal to the connection it happened on. Records that fail
//! authentication or parsing are never errors: they are dropped silently and counted
//! (RFC 6347 §4.1.2.7).

use dtls_proto::{AlertDescription, WireError};

/// The typed reason of a failed handshake, carried by [`crate::Event::HandshakeFailed`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HandshakeError {
    /// The retransmission give-up limit was reached (count or total time) in `state`.
    ///
    /// `unauthenticated` counts the peer's records under the new keys that failed
    /// authentication meanwhile, and `finished_unanswered` says we had sent our Finished
    /// and heard nothing back under the new keys. Such records are discarded silently (RFC
    /// 6347 §4.1.2.7, so an off-path attacker cannot abort a handshake with forged
    /// records), but when the handshake then times out they are the likely reason: keys
    /// that do not match, most often a wrong PSK.
    #[error(
        "handshake timed out in {state}{}",
        if *unauthenticated > 0 {
            format!(
                "; {unauthenticated} of the peer's records under the new keys failed \
                 authentication (mismatched keys: a wrong PSK?)"
            )
        } else if *finished_unanswered {
            "; the peer never answered our Finished (it could not authenticate it: \
             mismatched keys, a wrong PSK?)"
                .to_owned()
        } else {
            String::new()
        }
    )]
    Timeout {
        /// The state the handshake was in.
        state: &'static str,
        /// The peer's records under the new keys that failed authentication.
        unauthenticated: u64,
        /// We had sent our Finished and the peer never answered under the new keys.
        finished_unanswered: bool,
    },
    /// The peer sent a fatal alert.
    #[error("peer sent fatal alert {description:?}")]
    PeerAlert {
        /// The alert description.
        description: AlertDescription,
    },
    /// A handshake message could not be decoded.
    #[error("malformed {message}: {source}")]
    Decode {
        /// The message being parsed.
        message: &'static str,
        /// The wire error.
        source: WireError,
    },
    /// A message arrived that the state machine does not expect now.
    #[error("unexpected message in state {state}: handshake type {got}")]
    UnexpectedMessage {
        /// The state we were in.
        state: &'static str,
        /// The handshake type received (or 20 for ChangeCipherSpec content).
        got: u8,
    },
    /// The peer does not speak DTLS 1.2.
    #[error("peer does not offer DTLS 1.2 (version {version:#06x})")]
    ProtocolVersion {
        /// The highest version the peer offered.
        version: u16,
    },
    /// No cipher suite in common.
    #[error("no cipher suite in common")]
    NoCommonSuite,
    /// No ECDHE group in common.
    #[error("no ECDHE group in common")]
    NoCommonGroup,
    /// No signature scheme in common with our key or configuration.
    #[error("no signature scheme in common")]
    NoCommonSignatureScheme,
    /// The peer did not negotiate extended_master_secret and we require it.
    #[error("peer does not support extended_master_secret (required)")]
    ExtendedMasterSecretRequired,
    /// The peer's renegotiation_info is not empty on an initial handshake (RFC 5746 §3.4).
    #[error("renegotiation_info not empty on an initial handshake")]
    InsecureRenegotiation,
    /// The peer negotiated a parameter we did not offer or that is invalid.
    #[error("illegal parameter: {what}")]
    IllegalParameter {
        /// What was wrong.
        what: &'static str,
    },
    /// The peer sent an extension we never offered.
    #[error("unsolicited extension {ext_type:#06x}")]
    UnsupportedExtension {
        /// The extension type.
        ext_type: u16,
    },
    /// The peer's certificate chain is invalid or did not verify.
    #[error("bad peer certificate: {source}")]
    BadCertificate {
        /// Why.
        source: dtls_crypto::Error,
    },
    /// The client's certificate verified but the server's identity rules
    /// ([`crate::Config::client_identity`]) admit no client of that name.
    #[error("client identity {identity} is not allowed")]
    AccessDenied {
        /// What the certificate names.
        identity: String,
    },
    /// A certificate was required and the peer sent none.
    #[error("peer certificate required")]
    CertificateRequired,
    /// A handshake signature did not verify.
    #[error("handshake signature did not verify")]
    BadSignature,
    /// Finished verify_data did not match.
    #[error("Finished verify_data mismatch")]
    BadFinished,
    /// The client's PSK identity is unknown.
    #[error("unknown PSK identity")]
    UnknownPskIdentity,
    /// A PSK suite was negotiated but no PSK is configured.
    #[error("no PSK configured")]
    NoPsk,
    /// No ALPN protocol in common (RFC 7301 §3.2).
    #[error("no ALPN protocol in common")]
    NoApplicationProtocol,
    /// Our certificate or key is missing for the negotiated suite.
    #[error("no certificate configured for the negotiated suite")]
    NoCertificate,
    /// A cryptographic operation failed (bad peer point, signing failure, ...).
    #[error("crypto: {source}")]
    Crypto {
        /// The crypto error.
        source: dtls_crypto::Error,
    },
    /// The epoch's sequence number space or the engine's reserve is spent.
    #[error("record sequence numbers exhausted")]
    SequenceExhausted,
    /// An invariant of the engine did not hold (a bug).
    #[error("internal error: {what}")]
    Internal {
        /// What went wrong.
        what: &'static str,
    },
}

impl HandshakeError {
    /// The fatal alert to send for this error, or `None` when no alert is sent (timeouts
    /// and alerts received from the peer).
    ///
    /// RFC 5246 §7.2: "Upon transmission or receipt of a fatal alert message, both parties
    /// immediately close the connection."
    pub fn alert(&self) -> Option<AlertDescription> {
        use AlertDescription as A;
        Some(match self {
            HandshakeError::Timeout { .. } | HandshakeError::PeerAlert { .. } => return None,
            HandshakeError::Decode { source, .. } => source.alert(),
            HandshakeError::UnexpectedMessage { .. } => A::UnexpectedMessage,
            HandshakeError::ProtocolVersion { .. } => A::ProtocolVersion,
            HandshakeError::NoCommonSuite
            | HandshakeError::NoCommonGroup
            | HandshakeError::NoCommonSignatureScheme
            | HandshakeError::ExtendedMasterSecretRequired
            | HandshakeError::InsecureRenegotiation
            | HandshakeError::CertificateRequired
            | HandshakeError::NoPsk
            | HandshakeError::NoCertificate => A::HandshakeFailure,
            HandshakeError::IllegalParameter { .. } => A::IllegalParameter,
            HandshakeError::UnsupportedExtension { .. } => A::UnsupportedExtension,
            HandshakeError::BadCertificate { .. } => A::BadCertificate,
            // RFC 5246 §7.2.2: access_denied "A valid certificate or PSK was received, but
            // when access control was applied, the sender decided not to proceed with
            // negotiation."
            HandshakeError::AccessDenied { .. } => A::AccessDenied,
            HandshakeError::BadSignature | HandshakeError::BadFinished => A::DecryptError,
            HandshakeError::UnknownPskIdentity => A::UnknownPskIdentity,
            HandshakeError::NoApplicationProtocol => A::NoApplicationProtocol,
            HandshakeError::Crypto {
                source: dtls_crypto::Error::InvalidPeerPublicKey { .. },
            } => A::IllegalParameter,
            HandshakeError::Crypto { .. }
            | HandshakeError::SequenceExhausted
            | HandshakeError::Internal { .. } => A::InternalError,
        })
    }
}

impl From<dtls_crypto::Error> for HandshakeError {
    fn from(source: dtls_crypto::Error) -> Self {
        HandshakeError::Crypto { source }
    }
}
