//! The DTLS data plane.
//!
//! What it does: DTLS 1.2 record wire formats (header accessors, the datagram splitter),
//! in-place record protection (AES-128-GCM, AES-256-GCM, ChaCha20-Poly1305 through
//! aws-lc-rs), the anti-replay window and per-key limits (sequence exhaustion, failed
//! authentication counts); the same for DTLS 1.3 in [`record::v13`] (unified header,
//! record number encryption, sequence and epoch reconstruction). Later: the session table, shards and the io_uring / mmsg
//! backends.
//! Also [`cid`]: QUIC-LB connection IDs that name the node and shard owning a session;
//! [`forward`]: the authenticated encapsulation of a record forwarded to the node its CID
//! names (the format only: no daemon sends it yet).
//!
//! The protocol vocabulary it speaks (content types, AEAD identifiers, versions) is defined in
//! `dtls-proto`; this crate adds the implementation (aws-lc keys, nonces, the window).
//!
//! What it does not do: handshakes. It never parses a ClientHello and never derives keys;
//! it receives finished [`record::RecordKey`]s from the control plane. Records it cannot
//! handle go to the control plane as whole datagrams.
#![forbid(unsafe_code)]

pub mod cid;
pub mod forward;
pub mod record;

/// Every error the data plane's record layer reports, for callers that want one type.
///
/// None of these is fatal to a session by itself: bad, replayed and wrong-epoch records are
/// counted and dropped. The caller rekeys or closes when [`record::SealError::SequenceExhausted`]
/// is returned or [`record::Opener::integrity_limit_reached`] turns true.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    /// A record header or datagram could not be parsed.
    #[error(transparent)]
    Wire(#[from] record::WireError),
    /// Key material was rejected.
    #[error(transparent)]
    Key(#[from] record::KeyError),
    /// A record could not be sealed.
    #[error(transparent)]
    Seal(#[from] record::SealError),
    /// A record could not be opened.
    #[error(transparent)]
    Open(#[from] record::OpenError),
    /// A DTLS 1.3 unified header could not be parsed or built.
    #[error(transparent)]
    Wire13(#[from] record::v13::UnifiedWireError),
    /// A DTLS 1.3 record could not be sealed.
    #[error(transparent)]
    Seal13(#[from] record::v13::Seal13Error),
    /// A DTLS 1.3 record could not be opened.
    #[error(transparent)]
    Open13(#[from] record::v13::Open13Error),
}
