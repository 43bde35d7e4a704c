//! The RFC 5705 keying-material exporter of a completed session.

use std::fmt;

use dtls_proto::SrtpProtectionProfile;
use dtls_proto::{PrfHash, RANDOM_LEN};

use dtls_crypto::tls13::ExporterSecret;

use crate::keys::session::MasterBytes;

/// Label of the DTLS-SRTP key derivation (RFC 5764 §4.2).
pub const SRTP_EXPORTER_LABEL: &[u8] = b"EXTRACTOR-dtls_srtp";

/// Why the exporter refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ExportError {
    /// The label is one TLS uses itself (RFC 5705 §4).
    #[error("reserved exporter label")]
    ReservedLabel,
    /// The context is longer than 65535 bytes.
    #[error("exporter context too long")]
    ContextTooLong,
    /// The profile has no known key/salt lengths.
    #[error("unknown SRTP profile")]
    UnknownSrtpProfile,
}

/// Exports keying material from a session: the RFC 5705 §4 exporter of DTLS 1.2 (from the
/// master secret) or the RFC 8446 §7.5 exporter of DTLS 1.3 (from exporter_master_secret).
///
/// Holds a copy of the secret: zeroized on drop, never printed.
pub struct Exporter {
    inner: Inner,
}

enum Inner {
    Tls12 {
        master: MasterBytes,
        hash: PrfHash,
        client_random: [u8; RANDOM_LEN],
        server_random: [u8; RANDOM_LEN],
    },
    Tls13(ExporterSecret),
}

impl fmt::Debug for Exporter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.inner {
            Inner::Tls12 { hash, .. } => f
                .debug_struct("Exporter")
                .field("hash", hash)
                .finish_non_exhaustive(),
            Inner::Tls13(_) => f.debug_struct("Exporter13").finish_non_exhaustive(),
        }
    }
}

/// Labels TLS itself uses with the PRF (RFC 5705 §4: exporters must not reuse them).
const RESERVED_LABELS: &[&[u8]] = &[
    b"client finished",
    b"server finished",
    b"master secret",
    b"extended master secret",
    b"key expansion",
];

impl Exporter {
    pub(crate) fn new(
        master: MasterBytes,
        hash: PrfHash,
        client_random: [u8; RANDOM_LEN],
        server_random: [u8; RANDOM_LEN],
    ) -> Self {
        Self {
            inner: Inner::Tls12 {
                master,
                hash,
                client_random,
                server_random,
            },
        }
    }

    /// The DTLS 1.3 exporter over `exporter_master_secret` (RFC 8446 §7.5).
    pub(crate) fn tls13(secret: ExporterSecret) -> Self {
        Self {
            inner: Inner::Tls13(secret),
        }
    }

    /// Fills `out` with `PRF(master_secret, label, client_random + server_random
    /// [+ context_length + context])` (RFC 5705 §4). `None` and `Some(&[])` differ.
    ///
    /// # Errors
    /// [`ExportError::ReservedLabel`], [`ExportError::ContextTooLong`].
    pub fn export(
        &self,
        label: &[u8],
        context: Option<&[u8]>,
        out: &mut [u8],
    ) -> Result<(), ExportError> {
        let (master, hash, client_random, server_random) = match &self.inner {
            Inner::Tls12 {
                master,
                hash,
                client_random,
                server_random,
            } => (master, *hash, client_random, server_random),
            Inner::Tls13(secret) => {
                if RESERVED_LABELS.contains(&label) {
                    return Err(ExportError::ReservedLabel);
                }
                let context = context.unwrap_or(&[]);
                if context.len() > usize::from(u16::MAX) {
                    return Err(ExportError::ContextTooLong);
                }
                // RFC 8446 §7.5: "providing no context computes the same value as providing
                // an empty context".
                return secret
                    .export(label, context, out)
                    .map_err(|_| ExportError::ReservedLabel);
            }
        };
        master
            .master()
            .export(hash, client_random, server_random, label, context, out)
            .map_err(|e| match e {
                dtls_crypto::Error::ExporterContextTooLong { .. } => ExportError::ContextTooLong,
                _ => ExportError::ReservedLabel,
            })
    }

    /// The DTLS-SRTP keying material for `profile` (RFC 5764 §4.2): `2 * (key + salt)`
    /// bytes laid out as client key, server key, client salt, server salt.
    ///
    /// # Errors
    /// [`ExportError::UnknownSrtpProfile`] for a profile without known lengths.
    pub fn export_srtp(&self, profile: SrtpProtectionProfile) -> Result<Vec<u8>, ExportError> {
        let (key, salt) = profile
            .master_key_salt_len()
            .ok_or(ExportError::UnknownSrtpProfile)?;
        let mut out = vec![0u8; 2 * (key + salt)];
        self.export(SRTP_EXPORTER_LABEL, None, &mut out)?;
        Ok(out)
    }
}
