//! DTLS 1.2 handshake-layer wire formats.
//!
//! What it does:
//! - code tables: versions, AEAD cipher suites with their key-schedule parameters, named
//!   groups, signature schemes, handshake / extension / alert types, SRTP profiles
//!   ([`codes`], [`suites`], [`alert`]);
//! - the 12-byte handshake header as a smoltcp-style checked view plus a parsed `Repr`
//!   ([`header`]);
//! - parse and emit of every DTLS 1.2 handshake message body we use, the ChangeCipherSpec
//!   and Alert messages ([`message`], [`alert`]), hello extensions ([`extensions`]) and
//!   the heartbeat message ([`heartbeat`]);
//! - fragmentation of outgoing messages ([`fragment`]) and bounded reassembly of incoming
//!   ones ([`reassembly`]).
//!
//! What it does not do: no cryptography (signatures, PRF, transcript hashing live in
//! `dtls-crypto`), no state machine and no I/O (the `control` crate's engine), no record
//! layer (`dataplane::record`). Parsers never panic on any input; every parse error names
//! the alert to send ([`WireError::alert`]).

#![forbid(unsafe_code)]

mod codec;
mod error;

pub mod alert;
pub mod codes;
pub mod extensions;
pub mod fragment;
pub mod header;
pub mod heartbeat;
pub mod message;
pub mod reassembly;
pub mod suites;

#[cfg(test)]
mod tests;

pub use alert::{Alert, AlertDescription, AlertLevel};
pub use codec::U24_MAX;
pub use codes::{
    CHANGE_CIPHER_SPEC, COMPRESSION_NULL, CURVE_TYPE_NAMED_CURVE, ClientCertificateType,
    EC_POINT_FORMAT_UNCOMPRESSED, ExtensionType, HandshakeType, HeartbeatMode, NamedGroup,
    SignatureScheme, SrtpProtectionProfile,
};
pub use error::WireError;
pub use extensions::{Extensions, RawExtension, ServerName, UseSrtp};
pub use fragment::{Fragment, Fragmenter, fragment_into_vec};
pub use header::{HANDSHAKE_HEADER_LEN, HandshakeFragments, HandshakeHeader, HandshakeRepr};
pub use heartbeat::{
    HeartbeatMessage, HeartbeatMessageType, MAX_HEARTBEAT_LEN, MIN_HEARTBEAT_PADDING,
};
pub use message::{
    Certificate, CertificateRequest, CertificateVerify, ChangeCipherSpec, ClientHello,
    ClientKeyExchange, DigitallySigned, EcdheParams, Finished, HandshakeMessage, HelloRequest,
    HelloVerifyRequest, MAX_COOKIE_LEN, MAX_SESSION_ID_LEN, NewSessionTicket, RANDOM_LEN,
    ServerHello, ServerHelloDone, ServerKeyExchange, VERIFY_DATA_LEN, encode_message,
};
pub use reassembly::{
    DropReason, FragmentOutcome, MessageCaps, ReassembledMessage, Reassembler, ReassemblyBudget,
    ReassemblyConfig, ReassemblyStats,
};
pub use suites::{CipherSuite, KeyExchange, PrfHash, ProtocolVersion, SuiteAead, SuiteParams};
