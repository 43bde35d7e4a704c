//! Connection IDs that name the node and shard that own a session.
//!
//! Server-issued CIDs follow QUIC-LB (draft-ietf-quic-load-balancers-21, "QUIC-LB:
//! Generating Routable QUIC Connection IDs"): a first octet holding the config rotation
//! codepoint, then a server ID and a nonce, in plaintext or encrypted with AES-128 (one block
//! when server ID and nonce add up to 16 octets, a four-pass Feistel network otherwise).
//! A QUIC-LB-aware load balancer in front of us can route our DTLS 1.3 records by them.
//!
//! - [`QuicLbConfig`]: one validated configuration (codepoint, lengths, optional key) that
//!   encodes CIDs and decodes them back; [`QuicLbConfigs`] picks the configuration named by a
//!   CID's first octet.
//! - [`ServerIdLayout`]: how a [`CidOwner`] (node id, shard id) is packed into server ID bytes.
//! - [`ConnectionId`], [`ServerId`], [`CidPlaintext`]: fixed-size values, no heap.
//!
//! Sans-IO: the nonce and the first octet's free bits come from the caller; nothing here reads
//! a clock or an RNG. Decoding, which runs per packet on the routing path, never allocates and
//! never panics, whatever the bytes: a CID that cannot be decoded is `None` (the draft calls it
//! unroutable, §4.1), never an error.
//!
//! - [`EncryptedCids`]: the encrypted CIDs the daemon issues, an encrypted QUIC-LB CID
//!   followed by one plaintext octet naming the shard (for the in-host steering), with keys
//!   that rotate under new codepoints.
//!
//! What it does not do: choose nonces or keep per-connection state. [`QuicLbConfig`] CIDs are
//! exactly `1 + server ID + nonce` long; [`EncryptedCids`] appends its shard octet after the
//! nonce, which load balancers ignore (they read the configured lengths only).
//!
//! ```
//! use dataplane::cid::{CidOwner, ConfigId, FirstOctetBits, QuicLbConfig, ServerIdLayout};
//!
//! let key = [0x8f; 16];
//! let config = QuicLbConfig::encrypted(ConfigId::new(1)?, 3, 6, FirstOctetBits::CidLength, &key)?;
//! let layout = ServerIdLayout::new(3, 16, 8)?;
//!
//! let owner = CidOwner { node: 513, shard: 7 };
//! let server_id = layout.pack(owner)?;
//! let cid = config.encode(server_id.as_bytes(), &[1, 2, 3, 4, 5, 6], 0)?;
//! assert_eq!(cid.as_bytes().len(), 10);
//!
//! let decoded = config.decode_server_id(cid.as_bytes()).expect("our own CID decodes");
//! assert_eq!(layout.unpack(&decoded), Some(owner));
//! # Ok::<(), dataplane::cid::CidError>(())
//! ```

mod feistel;
mod keyed;
mod layout;
mod quic_lb;

pub use keyed::{EncryptedCids, QuicLbKey};
pub use layout::{CidOwner, ServerIdLayout, ShardField};
pub use quic_lb::{
    CidPlaintext, ConfigId, ConnectionId, FirstOctetBits, QuicLbConfig, QuicLbConfigs, ServerId,
};

/// The longest CID QUIC version 1 allows, and so the longest QUIC-LB CID (RFC 9000 §17.2).
pub const MAX_CID_LEN: usize = 20;
/// Server ID lengths a configuration may use, in octets (§5.1: at least one octet; at most 15
/// so that the 4-octet minimum nonce still fits in 19 octets).
pub const SERVER_ID_LEN: core::ops::RangeInclusive<usize> = 1..=15;
/// Nonce lengths a configuration may use, in octets (§5.3: at least 4; at most 18 so that the
/// 1-octet minimum server ID still fits in 19 octets).
pub const NONCE_LEN: core::ops::RangeInclusive<usize> = 4..=18;
/// The most octets server ID and nonce may take together (§5.3).
pub const MAX_PLAINTEXT_LEN: usize = MAX_CID_LEN - 1;

/// Why a configuration, a layout or the inputs of an encoding were refused.
///
/// Configuration and layout errors come from operator input; encoding errors are caller bugs
/// (a server ID or nonce of the wrong length). None is a decoding error: decoding returns
/// `None` for anything it cannot route.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CidError {
    /// A config rotation codepoint above 0b110; 0b111 is reserved for unroutable CIDs.
    #[error("config rotation codepoint {0} is not 0..=6 (0b111 is reserved)")]
    ConfigId(u8),
    /// A server ID length outside 1..=15.
    #[error("server ID length {0} is not 1..=15 octets")]
    ServerIdLength(usize),
    /// A nonce length outside 4..=18.
    #[error("nonce length {0} is not 4..=18 octets")]
    NonceLength(usize),
    /// Server ID and nonce together longer than 19 octets.
    #[error("server ID ({server_id_len}) and nonce ({nonce_len}) exceed 19 octets together")]
    PlaintextLength {
        /// Configured server ID length.
        server_id_len: usize,
        /// Configured nonce length.
        nonce_len: usize,
    },
    /// aws-lc refused the AES-128 key (it does so only on internal failure).
    #[error("the AES implementation rejected the key")]
    KeyRejected,
    /// A node and shard that do not fit in the server ID (or in the id types).
    #[error(
        "{node_bits} node bits and {shard_bits} shard bits do not fit a {server_id_len}-octet server ID"
    )]
    LayoutWidth {
        /// Server ID length in octets.
        server_id_len: usize,
        /// Bits given to the node id.
        node_bits: u32,
        /// Bits given to the shard id.
        shard_bits: u32,
    },
    /// A node id wider than the layout's node bits.
    #[error("node id {node} does not fit in {bits} bits")]
    NodeOutOfRange {
        /// The node id.
        node: u32,
        /// The layout's node bits.
        bits: u32,
    },
    /// A shard id wider than the layout's shard bits.
    #[error("shard id {shard} does not fit in {bits} bits")]
    ShardOutOfRange {
        /// The shard id.
        shard: u16,
        /// The layout's shard bits.
        bits: u32,
    },
    /// Random octets for an unroutable CID outside 7..=19.
    #[error("an unroutable CID takes 7 to 19 random octets, got {0}")]
    UnroutableLength(usize),
    /// A server ID passed to `encode` whose length is not the configuration's.
    #[error("server ID must be {expected} octets, got {got}")]
    WrongServerIdLength {
        /// The configuration's server ID length.
        expected: usize,
        /// The length given.
        got: usize,
    },
    /// An [`EncryptedCids`] key set without a key.
    #[error("no QUIC-LB key")]
    NoKey,
    /// Two keys of one [`EncryptedCids`] key set under the same codepoint.
    #[error("two QUIC-LB keys under config rotation codepoint {0}")]
    DuplicateConfigId(u8),
    /// A nonce passed to `encode` whose length is not the configuration's.
    #[error("nonce must be {expected} octets, got {got}")]
    WrongNonceLength {
        /// The configuration's nonce length.
        expected: usize,
        /// The length given.
        got: usize,
    },
}
