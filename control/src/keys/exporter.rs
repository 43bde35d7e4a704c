//! The RFC 5705 keying-material exporter of a completed session.

use std::fmt;

use dtls_proto::SrtpProtectionProfile;
use dtls_proto::{PrfHash, RANDOM_LEN};

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

/// Exports keying material from a session's master secret (RFC 5705 §4).
///
/// Holds a copy of the master secret: zeroized on drop, never printed.
pub struct Exporter {
    master: MasterBytes,
    hash: PrfHash,
    client_random: [u8; RANDOM_LEN],
    server_random: [u8; RANDOM_LEN],
}

impl fmt::Debug for Exporter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Exporter")
            .field("hash", &self.hash)
            .finish_non_exhaustive()
    }
}

impl Exporter {
    pub(crate) fn new(
        master: MasterBytes,
        hash: PrfHash,
        client_random: [u8; RANDOM_LEN],
        server_random: [u8; RANDOM_LEN],
    ) -> Self {
        Self {
            master,
            hash,
            client_random,
            server_random,
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
        self.master
            .master()
            .export(
                self.hash,
                &self.client_random,
                &self.server_random,
                label,
                context,
                out,
            )
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
