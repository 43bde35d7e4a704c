//! The DTLS handshake engines (sans-IO): DTLS 1.2 (RFC 6347 on RFC 5246) and DTLS 1.3
//! (RFC 9147 on RFC 8446, module `tls13`), behind one [`Connection`] that dispatches by the
//! negotiated version (see docs/handshake.md, "DTLS 1.3").
//!
//! What it does:
//! - [`Connection`]: one handshake, client or server, driven by
//!   [`Connection::handle_datagram`] / [`Connection::handle_timeout`] and drained by
//!   [`Connection::poll_transmit`] / [`Connection::poll_event`] / [`Connection::poll_timeout`];
//!   no sockets, no threads, no clock reads (time is always an argument: the monotonic
//!   `now`, and the wall clock `wall` where certificate validity and tickets need it) and
//!   randomness from an injected [`dtls_crypto::Rng`];
//! - [`Acceptor`]: the server's stateless front door that answers ClientHellos without a
//!   valid cookie with a HelloVerifyRequest and allocates nothing for them
//!   (RFC 6347 §4.2.1); only a cookie-verified ClientHello becomes a server [`Connection`];
//! - ECDHE_ECDSA / ECDHE_RSA / PSK / ECDHE_PSK AEAD suites ([`CipherSuite`]), extended
//!   master secret, secure renegotiation indication (renegotiation is refused), ALPN,
//!   use_srtp with the RFC 5705 [`Exporter`], heartbeat negotiation, client authentication;
//! - RFC 9146 connection IDs ([`ConnectionIds`]): the connection_id extension in both
//!   roles, a server's CIDs from an injected [`CidIssuer`], `tls12_cid` records for the
//!   epoch-1 handshake records in each direction with a non-empty CID, and the CIDs in
//!   [`SessionKeys`] for the data plane;
//! - flight packing to the MTU, fragmentation, reassembly (through `dtls_proto`) and the
//!   retransmission timer (1 s doubling to 60 s, RFC 6347 §4.2.4.1).
//!
//! On completion [`Event::KeysReady`] hands over [`SessionKeys`]: the epoch-1 keys with
//! their sequence numbers for the data plane.
//!
//! # Driving it
//!
//! ```text
//! client:  conn = Connection::client(config, rng, now, server_addr, ticket)
//! server:  for a datagram from an address without a live engine (or for which
//!          engine.is_new_client_hello(datagram) is true):
//!            match acceptor.handle_datagram(now, from, datagram, &mut buf) {
//!              Accept(hello) => engine = Connection::server(config, rng, now, wall, hello),
//!              Reply(t)      => send buf[..t.len] to t.destination (HelloVerifyRequest),
//!              Drop(_)       => ignore,
//!            }
//! both:    engine.handle_datagram(now, wall, from, datagram) / engine.handle_timeout(now)
//!          then drain poll_transmit (one datagram per call), poll_event, poll_timeout.
//! ```
//!
//! After [`Event::KeysReady`], open epoch-1 `application_data` records with the handed-over
//! read key and keep feeding every datagram to the engine too (it ignores application
//! data): it answers a retransmitted peer flight with its final flight (RFC 6347 §4.2.4),
//! reports alerts and close_notify and refuses renegotiation. A server engine has no timer
//! after completion; drop it once the peer's application data proves the final flight
//! arrived, or after a grace period (RFC 6347 §4.2.4 suggests twice the maximum segment
//! lifetime).
//!
//! What it does not do: application data (the data plane seals and opens it with the
//! handed-over keys), DTLS 1.0, CBC or NULL suites, renegotiation, I/O; in DTLS 1.3
//! resumption and psk_ke.

#![forbid(unsafe_code)]

mod acceptor;
mod acceptor13;
#[cfg(test)]
mod cid_tests;
mod client;
mod config;
mod connection;
mod error;
mod events;
#[cfg(test)]
mod feature_tests;
mod flight;
mod handshake;
mod hello_pool;
mod inbox;
mod keys;
#[cfg(test)]
mod pair_tests;
mod record_layer;
mod role;
mod server;
mod state;
mod timer;
mod tls13;
mod version;

pub use acceptor::{AcceptOutcome, Acceptor, AcceptorConfig, DropReason, VerifiedClientHello};
pub use config::{
    CertifiedKey, CidIssuer, ClientAuth, ClientIdentityPolicy, Config, ConfigError, ConnectionIds,
    DEFAULT_CID_LEN, DEFAULT_MAX_CLIENT_CERTIFICATE_CHAIN, DEFAULT_REASSEMBLY_BUDGET,
    IdentityRefused, MAX_CID_LEN, MAX_TLS13_TICKETS, MIN_MTU, Psk, RandomCids, RetransmitConfig,
};
pub use connection::{ClaimedIdentity, ConnectionStats};
pub use error::HandshakeError;
pub use events::{
    CidUpdate, EpochKeys, EpochKeys13, Event, PeerIdentity, RecordKeys, SessionKeys, Transmit,
    UpdatedKeys,
};
pub use hello_pool::{HelloPool, HelloPoolConfig, HelloPoolStats};
pub use keys::exporter::{ExportError, Exporter, SRTP_EXPORTER_LABEL};
pub use keys::ticket::SessionTicket;
pub use role::Role;
pub use version::Connection;

/// Re-exports of the building blocks and the protocol vocabulary (defined in `dtls-proto`)
/// that appear in this crate's API.
pub use dtls_crypto::{self as crypto, PeerVerifier, Rng, SigningKey};
pub use dtls_proto::{
    AlertDescription, AlertLevel, CipherSuite, HeartbeatMode, KeyExchange, NamedGroup,
    ProtocolVersion, ReassemblyBudget, SignatureScheme, SrtpProtectionProfile,
    tls13::PskKeyExchangeMode,
};
