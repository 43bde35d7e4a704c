//! Master secret bytes and the key block of a handshake.

use std::sync::Arc;

use dataplane::record::{Aead, RecordKey};
use dtls_crypto::{KeyBlock, KeyBlockShape, MASTER_SECRET_LEN, MasterSecret, PremasterSecret, prf};
use dtls_proto::{PrfHash, RANDOM_LEN};
use zeroize::Zeroizing;

use crate::error::HandshakeError;
use crate::role::Role;

/// The master secret, shared by the engine, the [`crate::Exporter`] and the client's
/// [`crate::SessionTicket`]. Cloning shares one zeroize-on-drop copy; a server sealing a
/// ticket takes its own copy with [`MasterSecret::duplicate`], whether the secret was
/// derived here or restored from a ticket.
#[derive(Clone)]
pub(crate) struct MasterBytes {
    secret: Arc<MasterSecret>,
}

impl std::fmt::Debug for MasterBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterBytes(<redacted>)")
    }
}

impl MasterBytes {
    /// RFC 7627 §4 (with `session_hash`) or RFC 5246 §8.1 (without) master secret.
    pub(crate) fn derive(
        hash: PrfHash,
        premaster: &PremasterSecret,
        session_hash: Option<&[u8]>,
        client_random: &[u8; RANDOM_LEN],
        server_random: &[u8; RANDOM_LEN],
    ) -> Self {
        let mut out = Zeroizing::new([0u8; MASTER_SECRET_LEN]);
        match session_hash {
            // RFC 7627 §4: master_secret = PRF(pre_master_secret, "extended master secret",
            //                                  session_hash)[0..47];
            Some(session_hash) => prf(
                hash,
                premaster.as_bytes(),
                b"extended master secret",
                &[session_hash],
                &mut out[..],
            ),
            // RFC 5246 §8.1: PRF(pre_master_secret, "master secret",
            //                    ClientHello.random + ServerHello.random)[0..47];
            None => prf(
                hash,
                premaster.as_bytes(),
                b"master secret",
                &[client_random, server_random],
                &mut out[..],
            ),
        }
        Self::from_bytes(*out)
    }

    pub(crate) fn from_bytes(bytes: [u8; MASTER_SECRET_LEN]) -> Self {
        Self::from_secret(MasterSecret::from_bytes(bytes))
    }

    /// A secret derived here or restored from a ticket.
    pub(crate) fn from_secret(secret: MasterSecret) -> Self {
        Self {
            secret: Arc::new(secret),
        }
    }

    /// The crypto crate's master secret (for Finished, key expansion, export).
    pub(crate) fn master(&self) -> &MasterSecret {
        &self.secret
    }
}

/// Which direction's keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Writer {
    Client,
    Server,
}

impl Writer {
    /// The keys of what `role` sends.
    pub(crate) fn own(role: Role) -> Self {
        match role {
            Role::Client => Writer::Client,
            Role::Server => Writer::Server,
        }
    }

    /// The keys of what `role` reads: its peer's.
    pub(crate) fn peer(role: Role) -> Self {
        match role {
            Role::Client => Writer::Server,
            Role::Server => Writer::Client,
        }
    }
}

/// The key block (RFC 5246 §6.3) of one epoch, with its AEAD.
pub(crate) struct EpochKeyBlock {
    epoch: u16,
    aead: Aead,
    block: KeyBlock,
}

impl EpochKeyBlock {
    pub(crate) fn expand(
        master: &MasterBytes,
        epoch: u16,
        hash: PrfHash,
        aead: Aead,
        client_random: &[u8; RANDOM_LEN],
        server_random: &[u8; RANDOM_LEN],
    ) -> Self {
        let block = master.master().expand_keys(
            hash,
            KeyBlockShape::from(aead),
            client_random,
            server_random,
        );
        Self { epoch, aead, block }
    }

    /// The epoch these keys protect.
    pub(crate) fn epoch(&self) -> u16 {
        self.epoch
    }

    /// A record key for the records `writer` sends.
    pub(crate) fn record_key(&self, writer: Writer) -> Result<RecordKey, HandshakeError> {
        let (key, iv) = match writer {
            Writer::Client => (self.block.client_write_key(), self.block.client_write_iv()),
            Writer::Server => (self.block.server_write_key(), self.block.server_write_iv()),
        };
        RecordKey::new(self.aead, key, iv).map_err(|_| HandshakeError::Internal {
            what: "record key rejected",
        })
    }
}

impl std::fmt::Debug for EpochKeyBlock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EpochKeyBlock")
            .field("epoch", &self.epoch)
            .field("aead", &self.aead)
            .finish_non_exhaustive()
    }
}
