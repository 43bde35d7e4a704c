//! The DTLS protocol vocabulary and the DTLS 1.2 and 1.3 handshake-layer wire formats: the bottom
//! crate that the record layer, the shard, the crypto and the engine all share, so each code
//! point is defined once.
//!
//! What it does:
//! - record-level vocabulary: content types ([`ContentType`]), the record AEAD identifiers
//!   ([`Aead`]), alert levels and descriptions ([`alert`]), heartbeat message types and the
//!   RFC 6520 lengths ([`heartbeat`]);
//! - handshake code tables: versions, AEAD cipher suites with their key exchange, AEAD and
//!   PRF hash ([`suites`]), named groups, signature schemes, handshake / extension types,
//!   SRTP profiles ([`codes`]);
//! - the 12-byte handshake header as a smoltcp-style checked view plus a parsed `Repr`
//!   ([`header`]);
//! - parse and emit of every DTLS 1.2 handshake message body we use, the ChangeCipherSpec
//!   and Alert messages ([`message`], [`alert`]), hello extensions ([`extensions`]) and
//!   the heartbeat message ([`heartbeat`]) and the return-routability check message of
//!   RFC 9853 ([`rrc`]);
//! - fragmentation of outgoing messages ([`fragment`]) and bounded reassembly of incoming
//!   ones ([`reassembly`]);
//! - the DTLS 1.3 wire formats: the TLS 1.3 extension bodies (supported_versions,
//!   key_share, pre_shared_key, psk_key_exchange_modes, cookie, connection_id) and the
//!   messages 1.3 adds or reshapes (EncryptedExtensions, Certificate, CertificateRequest,
//!   Finished, NewSessionTicket, KeyUpdate, ACK, RequestConnectionId, NewConnectionId)
//!   ([`tls13`]).
//!
//! What it does not do: no cryptography (ECDH, signatures, PRF, transcript hashing live in
//! `dtls-crypto`, as functions over these enums), no state machine and no I/O (the
//! `control` crate's engine), no record protection (`dataplane::record`). It depends on no
//! other crate of the workspace. Parsers never panic on any input; every parse error names
//! the alert to send ([`WireError::alert`]).

#![forbid(unsafe_code)]

mod codec;
mod error;

pub mod alert;
pub mod codes;
mod content;
pub mod extensions;
pub mod fragment;
pub mod header;
pub mod heartbeat;
pub mod message;
pub mod reassembly;
pub mod rrc;
pub mod suites;
pub mod tls13;

#[cfg(test)]
mod tests;

pub use alert::{Alert, AlertDescription, AlertLevel};
pub use codec::U24_MAX;
pub use codes::{
    CHANGE_CIPHER_SPEC, COMPRESSION_NULL, CURVE_TYPE_NAMED_CURVE, ClientCertificateType,
    EC_POINT_FORMAT_UNCOMPRESSED, ExtensionType, HandshakeType, HeartbeatMode, NamedGroup,
    SignatureScheme, SrtpProtectionProfile,
};
pub use content::{ACK, ContentType, InnerContentType, RETURN_ROUTABILITY_CHECK, TLS12_CID};
pub use error::WireError;
pub use extensions::{Extensions, RawExtension, ServerName, UseSrtp};
pub use fragment::{Fragment, Fragmenter, fragment_into_vec};
pub use header::{HANDSHAKE_HEADER_LEN, HandshakeFragments, HandshakeHeader, HandshakeRepr};
pub use heartbeat::{
    HEARTBEAT_HEADER_LEN, HeartbeatMessage, HeartbeatMessageType, MAX_HEARTBEAT_LEN,
    MIN_HEARTBEAT_PADDING,
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
pub use rrc::{RRC_COOKIE_LEN, RRC_MESSAGE_LEN, RrcMessage, RrcMessageType};
pub use suites::{
    Aead, CipherSuite, KeyExchange, PrfHash, ProtocolVersion, SuiteParams, Tls13SuiteParams,
};
