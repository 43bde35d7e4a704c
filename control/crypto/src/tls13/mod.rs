//! TLS 1.3 and DTLS 1.3 handshake cryptography, beside the crate's TLS 1.2 PRF and key
//! schedule.
//!
//! - HKDF-Expand-Label with either label prefix, `"tls13 "` (RFC 8446 §7.1) or `"dtls13"`
//!   (RFC 9147 §5.9) — [`hkdf_expand_label`], [`LabelPrefix`];
//! - the key schedule, one type per stage: [`EarlySecret`] → [`HandshakeSecret`] →
//!   [`MasterSecret`], with the traffic secrets ([`TrafficSecret`]: record keys and IV, the
//!   DTLS record-number key, Finished, KeyUpdate), PSK binders ([`BinderKey`]), the
//!   exporter ([`ExporterSecret`]) and resumption PSKs ([`ResumptionMasterSecret`]);
//! - key shares for X25519, secp256r1, secp384r1 and the hybrid X25519MLKEM768
//!   ([`ClientKeyShare`], [`ServerKeyShare`]).
//!
//! The transcript is [`crate::Transcript`] (with
//! [`crate::Transcript::roll_up_for_hello_retry`] for a HelloRetryRequest); DTLS 1.3 feeds
//! it TLS-style handshake headers (RFC 9147 §5.2).
//!
//! Nothing here knows the handshake's states or wire encodings; the engine decides which
//! transcript hash goes where.

mod hkdf;
mod key_schedule;
mod key_share;

pub use hkdf::{LabelPrefix, MAX_CONTEXT_LEN, MAX_LABEL_LEN, hkdf_expand_label};
pub use key_schedule::{
    BinderKey, EarlySecret, ExporterSecret, HandshakeSecret, MasterSecret, PskKind,
    ResumptionMasterSecret, ResumptionPsk, TRAFFIC_IV_LEN, TrafficKeys, TrafficSecret, VerifyData,
};
pub use key_share::{
    ClientKeyShare, KEY_SHARE_GROUPS, MLKEM768_CIPHERTEXT_LEN, MLKEM768_ENCAPSULATION_KEY_LEN,
    ServerKeyShare, SharedSecret, X25519MLKEM768_CLIENT_SHARE_LEN, X25519MLKEM768_SERVER_SHARE_LEN,
};
