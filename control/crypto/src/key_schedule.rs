//! Master secret, key expansion, Finished and the keying-material exporter.

use std::fmt;

use dataplane::record::RecordKey;
use dtls_proto::{Aead, PrfHash, RANDOM_LEN, VERIFY_DATA_LEN};
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::{Error, PremasterSecret, prf};

/// Length of the master secret (RFC 5246 §8.1: "always exactly 48 bytes in length").
pub const MASTER_SECRET_LEN: usize = 48;

/// Largest key and fixed IV a supported AEAD needs.
const MAX_KEY_LEN: usize = 32;
const MAX_FIXED_IV_LEN: usize = 12;

/// The 48-byte TLS 1.2 master secret. Zeroized on drop, not `Clone`, `Debug` shows nothing.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct MasterSecret([u8; MASTER_SECRET_LEN]);

impl fmt::Debug for MasterSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterSecret(<redacted>)")
    }
}

/// A handshake role: which side sends a Finished message (selects its PRF label), or which
/// side an endpoint is when picking its write and read keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sender {
    /// `"client finished"`.
    Client,
    /// `"server finished"`.
    Server,
}

/// PRF labels TLS 1.2 and RFC 7627 use themselves. RFC 5705 §4 has exporter labels
/// registered (or prefixed "EXPERIMENTAL"); these are taken, and exporting under them could
/// reproduce handshake secrets, so they are refused (as OpenSSL refuses them).
const RESERVED_EXPORTER_LABELS: [&[u8]; 5] = [
    b"client finished",
    b"server finished",
    b"master secret",
    b"extended master secret",
    b"key expansion",
];

impl MasterSecret {
    /// RFC 5246 §8.1:
    /// `master_secret = PRF(pre_master_secret, "master secret",
    ///                      ClientHello.random + ServerHello.random)[0..47]`.
    ///
    /// Use only when extended_master_secret was not negotiated.
    pub fn derive(
        hash: PrfHash,
        premaster: &PremasterSecret,
        client_random: &[u8; RANDOM_LEN],
        server_random: &[u8; RANDOM_LEN],
    ) -> Self {
        let mut out = [0u8; MASTER_SECRET_LEN];
        prf(
            hash,
            premaster.as_bytes(),
            b"master secret",
            &[client_random, server_random],
            &mut out,
        );
        Self(out)
    }

    /// RFC 7627 §4:
    /// `master_secret = PRF(pre_master_secret, "extended master secret", session_hash)[0..47]`
    /// where `session_hash` is the transcript hash from ClientHello up to and including
    /// ClientKeyExchange (RFC 7627 §3), computed with the suite's PRF hash.
    pub fn derive_extended(
        hash: PrfHash,
        premaster: &PremasterSecret,
        session_hash: &[u8],
    ) -> Self {
        let mut out = [0u8; MASTER_SECRET_LEN];
        prf(
            hash,
            premaster.as_bytes(),
            b"extended master secret",
            &[session_hash],
            &mut out,
        );
        Self(out)
    }

    /// Wraps 48 bytes restored from a session ticket or a client session cache.
    pub fn from_bytes(bytes: [u8; MASTER_SECRET_LEN]) -> Self {
        Self(bytes)
    }

    /// An explicit copy, for the places that must keep the secret twice (a session ticket
    /// issued on a resumed session, a client session cache next to a live exporter). Named
    /// rather than `Clone` so every copy of key material is a visible decision.
    pub fn duplicate(&self) -> Self {
        Self(self.0)
    }

    pub(crate) fn as_bytes(&self) -> &[u8; MASTER_SECRET_LEN] {
        &self.0
    }

    /// Key expansion (RFC 5246 §6.3):
    /// `key_block = PRF(master_secret, "key expansion", server_random + client_random)`,
    /// partitioned as client MAC key, server MAC key (both empty for AEAD suites), client
    /// write key, server write key, client write IV, server write IV. For AES-GCM the IV is
    /// the 4-byte implicit salt (RFC 5288 §3); for ChaCha20-Poly1305 it is the 12-byte fixed
    /// IV (RFC 7905 §2).
    pub fn expand_keys(
        &self,
        hash: PrfHash,
        shape: KeyBlockShape,
        client_random: &[u8; RANDOM_LEN],
        server_random: &[u8; RANDOM_LEN],
    ) -> KeyBlock {
        let mut raw = [0u8; 2 * (MAX_KEY_LEN + MAX_FIXED_IV_LEN)];
        let (k, iv) = (shape.key_len, shape.fixed_iv_len);
        let used = &mut raw[..2 * (k + iv)];
        prf(
            hash,
            &self.0,
            b"key expansion",
            &[server_random, client_random],
            used,
        );
        let mut block = KeyBlock {
            shape,
            client_write_key: [0; MAX_KEY_LEN],
            server_write_key: [0; MAX_KEY_LEN],
            client_write_iv: [0; MAX_FIXED_IV_LEN],
            server_write_iv: [0; MAX_FIXED_IV_LEN],
        };
        block.client_write_key[..k].copy_from_slice(&used[..k]);
        block.server_write_key[..k].copy_from_slice(&used[k..2 * k]);
        block.client_write_iv[..iv].copy_from_slice(&used[2 * k..2 * k + iv]);
        block.server_write_iv[..iv].copy_from_slice(&used[2 * k + iv..]);
        raw.zeroize();
        block
    }

    /// Finished `verify_data` (RFC 5246 §7.4.9):
    /// `PRF(master_secret, finished_label, Hash(handshake_messages))[0..11]`, where
    /// `handshake_hash` is the transcript hash up to (not including) this Finished.
    pub fn verify_data(
        &self,
        hash: PrfHash,
        sender: Sender,
        handshake_hash: &[u8],
    ) -> [u8; VERIFY_DATA_LEN] {
        let label: &[u8] = match sender {
            Sender::Client => b"client finished",
            Sender::Server => b"server finished",
        };
        let mut out = [0u8; VERIFY_DATA_LEN];
        prf(hash, &self.0, label, &[handshake_hash], &mut out);
        out
    }

    /// Keying-material exporter (RFC 5705 §4), filling `out`:
    ///
    /// ```text
    /// PRF(master_secret, label, client_random + server_random
    ///     [+ context_value_length (uint16) + context_value])[length]
    /// ```
    ///
    /// With no context the length field is omitted too, so `None` and `Some(&[])` give
    /// different outputs (RFC 5705 §4). With extended master secret negotiated the same
    /// formula runs on the extended master secret (RFC 7627 does not change the exporter; it
    /// only makes the master secret, and so exported keys, bound to the handshake).
    ///
    /// # Errors
    /// [`Error::ReservedExporterLabel`] for a TLS-internal label,
    /// [`Error::ExporterContextTooLong`] for a context over 65535 bytes.
    pub fn export(
        &self,
        hash: PrfHash,
        client_random: &[u8; RANDOM_LEN],
        server_random: &[u8; RANDOM_LEN],
        label: &[u8],
        context: Option<&[u8]>,
        out: &mut [u8],
    ) -> Result<(), Error> {
        if RESERVED_EXPORTER_LABELS.contains(&label) {
            return Err(Error::ReservedExporterLabel);
        }
        match context {
            None => prf(hash, &self.0, label, &[client_random, server_random], out),
            Some(ctx) => {
                let len = u16::try_from(ctx.len())
                    .map_err(|_| Error::ExporterContextTooLong { len: ctx.len() })?;
                prf(
                    hash,
                    &self.0,
                    label,
                    &[client_random, server_random, &len.to_be_bytes(), ctx],
                    out,
                );
            }
        }
        Ok(())
    }
}

/// Key and fixed-IV lengths of an AEAD, which decide how the key block is cut (RFC 5246 §6.3);
/// made from the [`Aead`] (RFC 5288 §3, RFC 7905 §2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyBlockShape {
    key_len: usize,
    fixed_iv_len: usize,
}

impl KeyBlockShape {
    /// Key length in bytes.
    pub const fn key_len(self) -> usize {
        self.key_len
    }

    /// Fixed (implicit) IV length in bytes.
    pub const fn fixed_iv_len(self) -> usize {
        self.fixed_iv_len
    }
}

impl From<Aead> for KeyBlockShape {
    fn from(aead: Aead) -> Self {
        Self {
            key_len: aead.key_len(),
            fixed_iv_len: aead.fixed_iv_len(),
        }
    }
}

/// Both directions' write keys and fixed IVs from one key expansion. Zeroized on drop, not
/// `Clone`, `Debug` shows only the shape.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct KeyBlock {
    #[zeroize(skip)]
    shape: KeyBlockShape,
    client_write_key: [u8; MAX_KEY_LEN],
    server_write_key: [u8; MAX_KEY_LEN],
    client_write_iv: [u8; MAX_FIXED_IV_LEN],
    server_write_iv: [u8; MAX_FIXED_IV_LEN],
}

impl fmt::Debug for KeyBlock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyBlock")
            .field("shape", &self.shape)
            .finish_non_exhaustive()
    }
}

impl KeyBlock {
    /// The AEAD shape this block was cut for.
    pub fn shape(&self) -> KeyBlockShape {
        self.shape
    }

    /// `client_write_key`.
    pub fn client_write_key(&self) -> &[u8] {
        &self.client_write_key[..self.shape.key_len]
    }

    /// `server_write_key`.
    pub fn server_write_key(&self) -> &[u8] {
        &self.server_write_key[..self.shape.key_len]
    }

    /// `client_write_IV` (GCM salt or ChaCha20 fixed IV).
    pub fn client_write_iv(&self) -> &[u8] {
        &self.client_write_iv[..self.shape.fixed_iv_len]
    }

    /// `server_write_IV` (GCM salt or ChaCha20 fixed IV).
    pub fn server_write_iv(&self) -> &[u8] {
        &self.server_write_iv[..self.shape.fixed_iv_len]
    }

    /// The record-layer key for what the client writes (the client's write key, the
    /// server's read key).
    ///
    /// # Errors
    /// [`Error::RecordKey`] when `aead` does not match the shape this block was cut for.
    pub fn client_record_key(&self, aead: Aead) -> Result<RecordKey, Error> {
        RecordKey::new(aead, self.client_write_key(), self.client_write_iv())
            .map_err(|source| Error::RecordKey { source })
    }

    /// The record-layer key for what the server writes (the server's write key, the
    /// client's read key).
    ///
    /// # Errors
    /// [`Error::RecordKey`] when `aead` does not match the shape this block was cut for.
    pub fn server_record_key(&self, aead: Aead) -> Result<RecordKey, Error> {
        RecordKey::new(aead, self.server_write_key(), self.server_write_iv())
            .map_err(|source| Error::RecordKey { source })
    }

    /// This endpoint's `(write, read)` record keys, given which side it is.
    ///
    /// # Errors
    /// As [`KeyBlock::client_record_key`].
    pub fn record_keys(&self, aead: Aead, local: Sender) -> Result<(RecordKey, RecordKey), Error> {
        let (client, server) = (self.client_record_key(aead)?, self.server_record_key(aead)?);
        Ok(match local {
            Sender::Client => (client, server),
            Sender::Server => (server, client),
        })
    }
}

#[cfg(test)]
#[path = "key_schedule_tests.rs"]
pub(crate) mod tests;
