//! The TLS 1.3 / DTLS 1.3 key schedule (RFC 8446 §7.1–§7.3 and §7.5, RFC 9147 §4.2.3 and
//! §5.9), one type per stage:
//!
//! ```text
//! EarlySecret ──binder_key──────────────────▶ BinderKey ──binder──▶ VerifyData
//!     │ (PSK or 0)   └─client_early_traffic_secret, early_exporter_master_secret
//!     ▼ into_handshake_secret((EC)DHE or 0)
//! HandshakeSecret ──{client,server}_handshake_traffic_secret──▶ TrafficSecret
//!     ▼ into_master_secret
//! MasterSecret ──{client,server}_application_traffic_secret──▶ TrafficSecret
//!               ├─exporter_master_secret──▶ ExporterSecret ──export──▶ keying material
//!               └─resumption_master_secret─▶ ResumptionMasterSecret ──psk──▶ ResumptionPsk
//! TrafficSecret ──traffic_keys──▶ TrafficKeys (key, iv, sn_key)
//!               ├─verify_data──▶ VerifyData (Finished)
//!               └─next──▶ TrafficSecret (KeyUpdate)
//! ```
//!
//! Every secret is zeroized on drop, not `Clone`, and prints nothing in `Debug`. A stage is
//! consumed by the next (`into_*`), so a handshake cannot derive from a stage it has left.
//! Transcript hashes are [`HandshakeHash`] values from [`crate::Transcript`] (or
//! [`HandshakeHash::digest`]), of the same hash as the schedule.

use std::fmt;

use aws_lc_rs::{constant_time, hmac};
use dtls_proto::{Aead, PrfHash};
use zeroize::{Zeroize, ZeroizeOnDrop};

use super::hkdf::{LabelPrefix, MAX_LABEL_LEN, Secret};
use super::key_share::SharedSecret;
use crate::prf::{MAX_HASH_LEN, hmac_algorithm};
use crate::{Error, HandshakeHash};

/// Length of a TLS 1.3 / DTLS 1.3 per-record nonce and so of the traffic IV. RFC 8446 §5.3:
/// "The length of the TLS per-record nonce (iv_length) is set to the larger of 8 bytes and
/// N_MIN for the AEAD algorithm"; N_MIN is 12 for AES-GCM (RFC 5116 §5.1) and
/// ChaCha20-Poly1305 (RFC 8439 §2.8).
pub const TRAFFIC_IV_LEN: usize = 12;

/// Longest AEAD key (AES-256-GCM, ChaCha20-Poly1305).
const MAX_KEY_LEN: usize = 32;

/// Which kind of PSK a binder is for; it selects the binder key label (RFC 8446 §7.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PskKind {
    /// A PSK provisioned outside TLS: `"ext binder"`.
    External,
    /// A PSK from a NewSessionTicket: `"res binder"`.
    Resumption,
}

/// The Early Secret: `HKDF-Extract(0, PSK)`, with `PSK` the 0-value when no PSK is used.
#[derive(Debug)]
pub struct EarlySecret(Secret);

impl EarlySecret {
    /// RFC 8446 §7.1: `Early Secret = HKDF-Extract(salt = 0, IKM = PSK)`; "if a given secret
    /// is not available, then the 0-value consisting of a string of Hash.length bytes set to
    /// zeros is used" — so `psk: None` for a certificate-only handshake. `prefix` is the
    /// HKDF-Expand-Label prefix for every secret derived from this one (RFC 9147 §5.9).
    pub fn new(hash: PrfHash, prefix: LabelPrefix, psk: Option<&[u8]>) -> Self {
        Self(Secret::extract(hash, prefix, &[], psk))
    }

    /// `binder_key = Derive-Secret(Early Secret, "ext binder" | "res binder", "")`.
    pub fn binder_key(&self, kind: PskKind) -> BinderKey {
        let label: &[u8] = match kind {
            PskKind::External => b"ext binder",
            PskKind::Resumption => b"res binder",
        };
        BinderKey(self.0.derive_empty(label))
    }

    /// `client_early_traffic_secret = Derive-Secret(Early Secret, "c e traffic",
    /// ClientHello)`, for 0-RTT data.
    pub fn client_early_traffic_secret(&self, client_hello: &HandshakeHash) -> TrafficSecret {
        TrafficSecret(self.0.derive(b"c e traffic", client_hello))
    }

    /// `early_exporter_master_secret = Derive-Secret(Early Secret, "e exp master",
    /// ClientHello)`.
    pub fn early_exporter_master_secret(&self, client_hello: &HandshakeHash) -> ExporterSecret {
        ExporterSecret(self.0.derive(b"e exp master", client_hello))
    }

    /// `Handshake Secret = HKDF-Extract(Derive-Secret(Early Secret, "derived", ""),
    /// (EC)DHE)`, with the 0-value when no (EC)DHE took place (psk_ke).
    pub fn into_handshake_secret(self, shared: Option<&SharedSecret>) -> HandshakeSecret {
        HandshakeSecret(self.0.next_stage(shared.map(SharedSecret::as_bytes)))
    }

    #[cfg(test)]
    pub(crate) fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

/// The Handshake Secret.
#[derive(Debug)]
pub struct HandshakeSecret(Secret);

impl HandshakeSecret {
    /// `client_handshake_traffic_secret = Derive-Secret(Handshake Secret, "c hs traffic",
    /// ClientHello...ServerHello)`.
    pub fn client_handshake_traffic_secret(&self, hello_hash: &HandshakeHash) -> TrafficSecret {
        TrafficSecret(self.0.derive(b"c hs traffic", hello_hash))
    }

    /// `server_handshake_traffic_secret = Derive-Secret(Handshake Secret, "s hs traffic",
    /// ClientHello...ServerHello)`.
    pub fn server_handshake_traffic_secret(&self, hello_hash: &HandshakeHash) -> TrafficSecret {
        TrafficSecret(self.0.derive(b"s hs traffic", hello_hash))
    }

    /// `Master Secret = HKDF-Extract(Derive-Secret(Handshake Secret, "derived", ""), 0)`.
    pub fn into_master_secret(self) -> MasterSecret {
        MasterSecret(self.0.next_stage(None))
    }

    #[cfg(test)]
    pub(crate) fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

/// The (TLS 1.3) Master Secret.
#[derive(Debug)]
pub struct MasterSecret(Secret);

impl MasterSecret {
    /// `client_application_traffic_secret_0 = Derive-Secret(Master Secret, "c ap traffic",
    /// ClientHello...server Finished)`.
    pub fn client_application_traffic_secret(
        &self,
        server_finished: &HandshakeHash,
    ) -> TrafficSecret {
        TrafficSecret(self.0.derive(b"c ap traffic", server_finished))
    }

    /// `server_application_traffic_secret_0 = Derive-Secret(Master Secret, "s ap traffic",
    /// ClientHello...server Finished)`.
    pub fn server_application_traffic_secret(
        &self,
        server_finished: &HandshakeHash,
    ) -> TrafficSecret {
        TrafficSecret(self.0.derive(b"s ap traffic", server_finished))
    }

    /// `exporter_master_secret = Derive-Secret(Master Secret, "exp master",
    /// ClientHello...server Finished)`.
    pub fn exporter_master_secret(&self, server_finished: &HandshakeHash) -> ExporterSecret {
        ExporterSecret(self.0.derive(b"exp master", server_finished))
    }

    /// `resumption_master_secret = Derive-Secret(Master Secret, "res master",
    /// ClientHello...client Finished)`.
    pub fn resumption_master_secret(
        &self,
        client_finished: &HandshakeHash,
    ) -> ResumptionMasterSecret {
        ResumptionMasterSecret(self.0.derive(b"res master", client_finished))
    }

    #[cfg(test)]
    pub(crate) fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

/// A traffic secret: client/server early, handshake or application traffic secret.
#[derive(Debug)]
pub struct TrafficSecret(Secret);

impl TrafficSecret {
    /// The record keys of this secret for `aead` (RFC 8446 §7.3, RFC 9147 §4.2.3):
    ///
    /// ```text
    /// [sender]_write_key = HKDF-Expand-Label(Secret, "key", "", key_length)
    /// [sender]_write_iv  = HKDF-Expand-Label(Secret, "iv", "", iv_length)
    /// sn_key             = HKDF-Expand-Label(Secret, "sn", "", key_length)
    /// ```
    ///
    /// `sn_key` is DTLS 1.3's record-number encryption key; TLS 1.3 has no use for it.
    pub fn traffic_keys(&self, aead: Aead) -> TrafficKeys {
        let key_len = aead.key_len();
        let mut keys = TrafficKeys {
            aead,
            key: [0; MAX_KEY_LEN],
            iv: [0; TRAFFIC_IV_LEN],
            sn_key: [0; MAX_KEY_LEN],
        };
        self.0.expand_label(b"key", b"", &mut keys.key[..key_len]);
        self.0.expand_label(b"iv", b"", &mut keys.iv);
        self.0.expand_label(b"sn", b"", &mut keys.sn_key[..key_len]);
        keys
    }

    /// The secret after a KeyUpdate (RFC 8446 §7.2):
    /// `application_traffic_secret_N+1 = HKDF-Expand-Label(application_traffic_secret_N,
    /// "traffic upd", "", Hash.length)`.
    pub fn next(&self) -> TrafficSecret {
        TrafficSecret(self.0.expand_secret(b"traffic upd", b""))
    }

    /// Finished `verify_data` with this secret as the BaseKey (RFC 8446 §4.4.4):
    ///
    /// ```text
    /// finished_key = HKDF-Expand-Label(BaseKey, "finished", "", Hash.length)
    /// verify_data = HMAC(finished_key, Transcript-Hash(Handshake Context,
    ///                    Certificate*, CertificateVerify*))
    /// ```
    ///
    /// The BaseKey is the sender's handshake traffic secret (or, for post-handshake
    /// authentication, the client's current application traffic secret).
    pub fn verify_data(&self, transcript_hash: &HandshakeHash) -> VerifyData {
        finished_mac(&self.0, transcript_hash)
    }

    /// An explicit copy (e.g. the write secret kept for the next KeyUpdate while its keys go
    /// to the record layer). Named rather than `Clone` so every copy is a visible decision.
    pub fn duplicate(&self) -> Self {
        Self(self.0.duplicate())
    }

    /// The hash this secret derives with.
    pub fn hash(&self) -> PrfHash {
        self.0.hash()
    }

    #[cfg(test)]
    pub(crate) fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }

    #[cfg(test)]
    pub(crate) fn finished_key(&self) -> Vec<u8> {
        let mut key = vec![0u8; self.0.hash().output_len()];
        self.0.expand_label(b"finished", b"", &mut key);
        key
    }
}

/// `HMAC(finished_key(base_key), transcript_hash)` (RFC 8446 §4.4.4).
fn finished_mac(base_key: &Secret, transcript_hash: &HandshakeHash) -> VerifyData {
    debug_assert_eq!(
        transcript_hash.as_bytes().len(),
        base_key.hash().output_len()
    );
    let len = base_key.hash().output_len();
    let mut finished_key = [0u8; MAX_HASH_LEN];
    base_key.expand_label(b"finished", b"", &mut finished_key[..len]);
    let key = hmac::Key::new(hmac_algorithm(base_key.hash()), &finished_key[..len]);
    finished_key.zeroize();
    let tag = hmac::sign(&key, transcript_hash.as_bytes());
    let mut out = VerifyData {
        bytes: [0; MAX_HASH_LEN],
        len,
    };
    out.bytes[..len].copy_from_slice(tag.as_ref());
    out
}

/// A PSK binder key (RFC 8446 §7.1).
#[derive(Debug)]
pub struct BinderKey(Secret);

impl BinderKey {
    /// The PSK binder (RFC 8446 §4.2.11.2): "computed in the same way as the Finished
    /// message (Section 4.4.4) but with the BaseKey being the binder_key", over
    /// `Transcript-Hash(Truncate(ClientHello1))` — the ClientHello up to and including the
    /// identities, its length fields set as if the binders were present. After a
    /// HelloRetryRequest the hash also covers the rolled-up first ClientHello and the
    /// HelloRetryRequest.
    pub fn binder(&self, truncated_hello_hash: &HandshakeHash) -> VerifyData {
        finished_mac(&self.0, truncated_hello_hash)
    }
}

/// An exporter master secret (or early exporter master secret).
#[derive(Debug)]
pub struct ExporterSecret(Secret);

impl ExporterSecret {
    /// The TLS 1.3 exporter (RFC 8446 §7.5), filling `out`:
    ///
    /// ```text
    /// TLS-Exporter(label, context_value, key_length) =
    ///     HKDF-Expand-Label(Derive-Secret(Secret, label, ""),
    ///                       "exporter", Hash(context_value), key_length)
    /// ```
    ///
    /// RFC 8446 §7.5: "If no context is provided, the context_value is zero length.
    /// Consequently, providing no context computes the same value as providing an empty
    /// context" — so the context is a plain slice.
    ///
    /// # Errors
    /// [`Error::InvalidHkdfLabel`] for an empty label, one over [`MAX_LABEL_LEN`] bytes, or
    /// an output longer than 255 hash lengths.
    pub fn export(&self, label: &[u8], context: &[u8], out: &mut [u8]) -> Result<(), Error> {
        let hash = self.0.hash();
        if label.is_empty() || label.len() > MAX_LABEL_LEN {
            return Err(Error::InvalidHkdfLabel {
                label_len: label.len(),
                context_len: context.len(),
                out_len: out.len(),
            });
        }
        let secret = self.0.derive_empty(label);
        super::hkdf::hkdf_expand_label(
            hash,
            secret.prefix(),
            secret.as_bytes(),
            b"exporter",
            HandshakeHash::digest(hash, context).as_bytes(),
            out,
        )
    }

    #[cfg(test)]
    pub(crate) fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

/// The resumption master secret, from which each NewSessionTicket's PSK is derived.
#[derive(Debug)]
pub struct ResumptionMasterSecret(Secret);

impl ResumptionMasterSecret {
    /// The PSK of the ticket with `ticket_nonce` (RFC 8446 §4.6.1):
    /// `HKDF-Expand-Label(resumption_master_secret, "resumption", ticket_nonce, Hash.length)`.
    ///
    /// # Errors
    /// [`Error::InvalidHkdfLabel`] when the nonce is longer than 255 bytes (`opaque
    /// ticket_nonce<0..255>`).
    pub fn psk(&self, ticket_nonce: &[u8]) -> Result<ResumptionPsk, Error> {
        let len = self.0.hash().output_len();
        let mut psk = ResumptionPsk {
            bytes: [0; MAX_HASH_LEN],
            len,
        };
        super::hkdf::hkdf_expand_label(
            self.0.hash(),
            self.0.prefix(),
            self.0.as_bytes(),
            b"resumption",
            ticket_nonce,
            &mut psk.bytes[..len],
        )?;
        Ok(psk)
    }

    #[cfg(test)]
    pub(crate) fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

/// A resumption PSK (the input to [`EarlySecret::new`] when the ticket is used). Zeroized
/// on drop, not `Clone`, `Debug` shows nothing.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct ResumptionPsk {
    bytes: [u8; MAX_HASH_LEN],
    #[zeroize(skip)]
    len: usize,
}

impl fmt::Debug for ResumptionPsk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ResumptionPsk(<redacted>)")
    }
}

impl ResumptionPsk {
    /// The PSK bytes (`Hash.length` of them), to keep with the ticket.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

/// A Finished `verify_data` or a PSK binder: `Hash.length` bytes of HMAC.
#[derive(Clone, Copy)]
pub struct VerifyData {
    bytes: [u8; MAX_HASH_LEN],
    len: usize,
}

impl fmt::Debug for VerifyData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "VerifyData(<{} bytes>)", self.len)
    }
}

impl VerifyData {
    /// The bytes to send.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }

    /// Whether `received` equals this value, compared in constant time. RFC 8446 §4.4.4:
    /// "Recipients of Finished messages MUST verify that the contents are correct and if
    /// incorrect MUST terminate the connection with a "decrypt_error" alert" (binders
    /// likewise, §4.2.11).
    pub fn matches(&self, received: &[u8]) -> bool {
        constant_time::verify_slices_are_equal(self.as_bytes(), received).is_ok()
    }
}

/// One direction's record-protection keys from one traffic secret. Zeroized on drop, not
/// `Clone`, `Debug` shows only the AEAD.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct TrafficKeys {
    #[zeroize(skip)]
    aead: Aead,
    key: [u8; MAX_KEY_LEN],
    iv: [u8; TRAFFIC_IV_LEN],
    sn_key: [u8; MAX_KEY_LEN],
}

impl fmt::Debug for TrafficKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TrafficKeys")
            .field("aead", &self.aead)
            .finish_non_exhaustive()
    }
}

impl TrafficKeys {
    /// The AEAD these keys are for.
    pub fn aead(&self) -> Aead {
        self.aead
    }

    /// `write_key` (`key_length` bytes).
    pub fn key(&self) -> &[u8] {
        &self.key[..self.aead.key_len()]
    }

    /// `write_iv` ([`TRAFFIC_IV_LEN`] bytes), XORed with the padded record sequence number
    /// to form each nonce (RFC 8446 §5.3).
    pub fn iv(&self) -> &[u8] {
        &self.iv
    }

    /// `sn_key` (`key_length` bytes), which encrypts DTLS 1.3 record numbers (RFC 9147
    /// §4.2.3).
    pub fn sn_key(&self) -> &[u8] {
        &self.sn_key[..self.aead.key_len()]
    }
}

#[cfg(test)]
#[path = "key_schedule_tests.rs"]
mod tests;
