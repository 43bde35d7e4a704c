//! Cryptography for the DTLS 1.2 and 1.3 handshake engines, on aws-lc-rs.
//!
//! What this crate does:
//! - randomness injection ([`Rng`], [`SystemRng`], and the test-only [`SeededRng`]);
//! - the TLS 1.2 PRF with SHA-256/SHA-384 (RFC 5246 §5), the master secret, standard
//!   (RFC 5246 §8.1) and extended (RFC 7627 §4), key expansion for the AEAD suites
//!   (RFC 5246 §6.3, RFC 5288, RFC 7905), Finished `verify_data` (RFC 5246 §7.4.9) and the
//!   keying-material exporter (RFC 5705) — see [`MasterSecret`];
//! - the handshake transcript hash ([`Transcript`]);
//! - ephemeral ECDH over X25519, secp256r1 and secp384r1 ([`EphemeralKeyPair`]) with peer
//!   point validation, and PSK / ECDHE_PSK premaster secrets ([`PremasterSecret`]);
//! - certificate chains and private keys from PEM ([`pem`]), signing ([`SigningKey`]) and
//!   verification of chains, names and handshake signatures through rustls-webpki
//!   ([`PeerVerifier`], [`verify_signature`]);
//! - stateless HelloVerifyRequest cookies with rotating secrets ([`CookieKeys`]);
//! - RFC 5077 session tickets with rotating AES-256-GCM keys ([`TicketKeys`]);
//! - a test PKI generator ([`test_pki::generate_test_pki`]);
//! - for TLS 1.3 / DTLS 1.3 ([`tls13`]): HKDF-Expand-Label with the `"tls13 "` or `"dtls13"`
//!   prefix, the key schedule from the early secret to traffic keys, Finished, binders,
//!   KeyUpdate, resumption and the exporter, and key shares including the hybrid
//!   X25519MLKEM768; the HelloRetryRequest transcript roll-up is in [`Transcript`].
//!
//! What it does not do: no I/O besides reading PEM files and writing the test PKI, no clock
//! reads (time is always an argument), no handshake state machine, no wire encoding of
//! handshake messages and no record protection (that is `dataplane::record`).
//!
//! The protocol vocabulary it works over is `dtls-proto`'s, never a copy: ECDH takes a
//! `dtls_proto::NamedGroup` (the implemented groups are `NamedGroup::SUPPORTED`), signing and
//! verification a `dtls_proto::SignatureScheme` (`SignatureScheme::SUPPORTED`), the PRF and
//! transcript a `dtls_proto::PrfHash`, the key block a `dtls_proto::Aead`.

#![forbid(unsafe_code)]

mod cookie;
mod ecdhe;
mod error;
mod key_schedule;
mod ops;
pub mod pem;
mod premaster;
mod prf;
mod rng;
mod sign;
pub mod test_pki;
mod ticket;
pub mod tls13;
mod transcript;
mod verify;

pub use cookie::{COOKIE_LEN, COOKIE_SECRET_LEN, CookieKey, CookieKeys};
pub use ecdhe::EphemeralKeyPair;
pub use error::Error;
pub use key_schedule::{KeyBlock, KeyBlockShape, MASTER_SECRET_LEN, MasterSecret, Sender};
pub use ops::{AsymmetricOps, asymmetric_ops};
pub use premaster::{MAX_PSK_LEN, PremasterSecret};
pub use prf::prf;
pub use rng::{Rng, SeededRng, SystemRng};
pub use sign::{SigningKey, SigningKeyKind};
pub use ticket::{
    SessionState, SessionState13, TICKET_KEY_NAME_LEN, TICKET_SECRET_LEN, TicketKeys, TicketPeer,
};
pub use transcript::{HandshakeHash, Transcript};
pub use verify::{CertificateVerifier, PeerVerifier, verify_signature, verify_signature_spki};

/// Re-export of the certificate, key and time types used in this crate's API.
pub use rustls_pki_types as pki_types;
