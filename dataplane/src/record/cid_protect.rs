//! In-place protection of DTLS 1.2 records with connection ID (RFC 9146): [`CidSealer`]
//! (write state) and [`CidOpener`] (read state) of one epoch.
//!
//! Record format (RFC 9146 §4, §5):
//! `tls12_cid header ‖ [explicit_nonce(8)] ‖ AEAD(content ‖ real_type(1) ‖ zeros) ‖ tag(16)`.
//!
//! - DTLSInnerPlaintext, RFC 9146 §4: `content ‖ real_type ‖ zeros`; "zeros: An
//!   arbitrary-length run of zero-valued bytes may appear in the cleartext after the type
//!   field." The opener strips the zeros; the last non-zero byte is the type.
//! - Nonces as in the 1.2 layer, through the same functions as [`super::Sealer`] and
//!   [`super::Opener`]: AES-GCM, RFC 5288 §3, `salt(4) ‖ explicit_nonce(8)` with the explicit
//!   nonce epoch‖sequence carried in the record; ChaCha20-Poly1305, RFC 7905 §2, the 12-byte
//!   IV XOR `0x00000000 ‖ epoch‖sequence`.
//! - AAD, RFC 9146 §5.3 (AEAD ciphers):
//!   `additional_data = seq_num_placeholder + tls12_cid + cid_length + tls12_cid +
//!   DTLSCiphertext.version + epoch + sequence_number + cid + length_of_DTLSInnerPlaintext`,
//!   where "seq_num_placeholder: 8 bytes of 0xff", tls12_cid is the byte 25 and cid_length
//!   one byte: `0xff×8 ‖ 25 ‖ cid_len ‖ 25 ‖ version(2) ‖ epoch(2) ‖ sequence(6) ‖ cid ‖
//!   inner length(2)`, 23 + cid_len bytes. (This is the RFC's AAD, not the one of the
//!   drafts before it, which some stacks still send as "deprecated CID".)
//! - Sizes, RFC 9146 §5: "length_of_DTLSInnerPlaintext: The length (in bytes) of the
//!   serialized DTLSInnerPlaintext (two-byte integer). The length MUST NOT exceed 2^14."
//! - Only the AEAD form (RFC 9146 §5.3): the data plane has AEAD suites only, so the
//!   block-cipher MAC forms of §5.1 and §5.2 are not implemented.
//!
//! A zero-length CID: RFC 9146 §3 lets a peer send an empty `connection_id` extension,
//! meaning it sends CIDs but does not want to receive them. Records in that direction use
//! the plain RFC 6347 format with the real content type, so the caller protects them with
//! [`super::Sealer`] / [`super::Opener`]; [`CidSealer::new`] and [`CidOpener::new`]
//! refuse an empty CID ([`CidSetupError::EmptyCid`]).
//!
//! Peer address updates (RFC 9146 §6) are the caller's: [`CidOpened::newest`] says whether
//! the record was newer than every record opened before under this opener, one of the
//! conditions §6 sets before the caller may move the peer's address.
//!
//! Nothing here allocates; nonce and AAD are stack arrays.
//!
//! ```
//! use dataplane::record::{Aead, CidOpener, CidSealer, ContentType, RecordKey, ReplayWindow};
//!
//! let key = || RecordKey::new(Aead::ChaCha20Poly1305, &[7; 32], &[1; 12]);
//! let cid = [0xc0, 0xff, 0xee, 0x01]; // the CID the receiver asked for
//! let mut sealer = CidSealer::new(1, key()?, 0, &cid)?;
//! let mut opener = CidOpener::new(1, key()?, ReplayWindow::new(64), &cid)?;
//!
//! let (msg, padding) = (b"hello", 11);
//! let mut record = vec![0u8; sealer.record_len(msg.len(), padding)];
//! let at = sealer.plaintext_offset();
//! record[at..at + msg.len()].copy_from_slice(msg);
//! let len = sealer.seal(ContentType::ApplicationData, &mut record, msg.len(), padding)?;
//! assert_eq!(record[0], 25); // tls12_cid: the real type travels encrypted
//! assert_eq!(&record[11..15], &cid);
//!
//! let opened = opener.open(&mut record[..len])?;
//! assert_eq!(opened.content_type, ContentType::ApplicationData);
//! assert_eq!(opened.plaintext, msg);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use dtls_proto::{Aead, ContentType};

use super::cid_header::{CID_HEADER_FIXED_LEN, CidWireError, TLS12_CID, write_cid_header};
use super::key::{Protection, TAG_LEN};
use super::protect::{chacha_nonce, epoch_and_sequence, gcm_nonce, open_raw, seal_raw};
use super::v13::MAX_CID_LEN;
use super::{
    DTLS_1_2, MAX_CIPHERTEXT_LEN, MAX_PLAINTEXT_LEN, MAX_SEQUENCE, RecordKey, ReplayWindow,
    Replayed, SealError,
};

/// The longest RFC 9146 §5 AAD: 23 fixed bytes and a 255-byte CID.
pub const MAX_CID_AAD_LEN: usize = 23 + MAX_CID_LEN;

/// RFC 9146 §5: "seq_num_placeholder: 8 bytes of 0xff."
const SEQ_NUM_PLACEHOLDER: [u8; 8] = [0xff; 8];

/// Builds the RFC 9146 §5.3 AEAD additional data into `buf`; returns the `23 + cid.len()`
/// bytes written. `cid` is at most 255 bytes (every caller holds a [`Cid`]); a longer one
/// is cut to 255, which no caller can reach.
#[inline(always)]
fn cid_additional_data<'a>(
    buf: &'a mut [u8; MAX_CID_AAD_LEN],
    version: u16,
    epoch_seq: u64,
    cid: &[u8],
    inner_len: u16,
) -> &'a [u8] {
    let cid = cid.get(..MAX_CID_LEN).unwrap_or(cid);
    let n = cid.len();
    buf[..8].copy_from_slice(&SEQ_NUM_PLACEHOLDER);
    buf[8] = TLS12_CID;
    // n <= 255 (cut above).
    buf[9] = n as u8;
    buf[10] = TLS12_CID;
    buf[11..13].copy_from_slice(&version.to_be_bytes());
    buf[13..21].copy_from_slice(&epoch_seq.to_be_bytes());
    buf[21..21 + n].copy_from_slice(cid);
    buf[21 + n..23 + n].copy_from_slice(&inner_len.to_be_bytes());
    &buf[..23 + n]
}

/// CIDs up to this long are held inline in a [`Cid`]; longer ones (RFC 9146 allows 255
/// bytes) are boxed. 20 bytes covers every CID a shard session takes (`dtls-shard`'s
/// `MAX_SESSION_CID_LEN`) and QUIC-LB's longest.
const INLINE_CID_LEN: usize = 20;

/// A connection ID of 1 to 255 bytes: inline up to [`INLINE_CID_LEN`] bytes (no allocation,
/// no pointer to follow on the per-record path), boxed beyond. Inline 255-byte storage made
/// every CID sealer and opener ~235 bytes larger each, per session, for CIDs nobody uses.
#[derive(Clone, PartialEq, Eq)]
enum Cid {
    Inline {
        len: u8,
        bytes: [u8; INLINE_CID_LEN],
    },
    Boxed(Box<[u8]>),
}

impl Cid {
    fn new(cid: &[u8]) -> Result<Self, CidSetupError> {
        if cid.is_empty() {
            return Err(CidSetupError::EmptyCid);
        }
        let len = u8::try_from(cid.len()).map_err(|_| CidSetupError::CidTooLong(cid.len()))?;
        if cid.len() > INLINE_CID_LEN {
            return Ok(Self::Boxed(cid.into()));
        }
        let mut bytes = [0u8; INLINE_CID_LEN];
        bytes[..cid.len()].copy_from_slice(cid);
        Ok(Self::Inline { len, bytes })
    }

    #[inline]
    fn as_slice(&self) -> &[u8] {
        match self {
            Self::Inline { len, bytes } => &bytes[..usize::from(*len)],
            Self::Boxed(b) => b,
        }
    }

    /// Its length (1 to 255).
    #[inline]
    fn len(&self) -> usize {
        self.as_slice().len()
    }
}

impl core::fmt::Debug for Cid {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "Cid(")?;
        for b in self.as_slice() {
            write!(f, "{b:02x}")?;
        }
        write!(f, ")")
    }
}

/// Why a [`CidSealer`] or [`CidOpener`] could not be made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CidSetupError {
    /// An empty CID: the peer asked for none, so records in this direction are plain
    /// RFC 6347 records ([`super::Sealer`] / [`super::Opener`]), RFC 9146 §3.
    #[error("a zero-length connection ID means plain DTLS 1.2 records")]
    EmptyCid,
    /// RFC 9146 §3: `opaque cid<0..2^8-1>`.
    #[error("connection ID of {0} bytes exceeds 255")]
    CidTooLong(usize),
    /// A starting sequence number above 2^48 - 1.
    #[error("starting sequence number {0} does not fit in 48 bits")]
    SequenceOutOfRange(u64),
    /// The null baseline key: tls12_cid records are always AEAD-protected.
    #[error("tls12_cid records need an AEAD key")]
    NoAead,
}

/// Why a tls12_cid record was not opened. Callers count and drop; the exceptions, fatal to
/// the session, are [`CidOpenError::NoContentType`] and [`CidOpenError::UnknownContentType`]
/// (records that authenticated), and reaching the integrity limit
/// ([`CidOpener::integrity_limit_reached`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CidOpenError {
    /// The header is malformed or announces more bytes than given.
    #[error(transparent)]
    Malformed(#[from] CidWireError),
    /// The buffer holds more than one record: `open` takes exactly one.
    #[error("record buffer holds {len} bytes but the record is {record_len}")]
    TrailingBytes {
        /// Bytes given.
        len: usize,
        /// Header plus length.
        record_len: usize,
    },
    /// The record belongs to another epoch.
    #[error("record of epoch {got}, expected {expected}")]
    WrongEpoch {
        /// This opener's epoch.
        expected: u16,
        /// The record's epoch.
        got: u16,
    },
    /// The record's CID is not this opener's (checked before any AEAD work, not counted
    /// against the integrity limit: such a record was misrouted, not forged under this key).
    #[error("record carries another connection ID")]
    WrongCid,
    /// The fragment is shorter than explicit nonce, type byte and tag.
    #[error("fragment of {0} bytes shorter than the AEAD overhead and type byte")]
    TooShort(u16),
    /// RFC 9146 §5: DTLSInnerPlaintext longer than 2^14.
    #[error("inner plaintext of {0} bytes exceeds 2^14")]
    PlaintextTooLong(usize),
    /// The replay window refused the sequence number (checked before decryption).
    #[error("replayed record: {0}")]
    Replayed(#[from] Replayed),
    /// The tag did not verify. Counted against the key's integrity limit; the fragment
    /// bytes were cleared so no unauthenticated plaintext stays in the buffer.
    #[error("record failed authentication")]
    AuthenticationFailed,
    /// The DTLSInnerPlaintext is all zeros: no content type. The record authenticated and
    /// counts as received. RFC 9146 says nothing more; like RFC 8446 §5.4 ("If a receiving
    /// implementation does not find a non-zero octet in the cleartext, it MUST terminate the
    /// connection with an "unexpected_message" alert") the caller closes.
    #[error("inner plaintext has no content type")]
    NoContentType,
    /// The real content type is none of the DTLS 1.2 types (RFC 5246 §6: an unexpected
    /// record type is an "unexpected_message"). The record authenticated and counts as
    /// received.
    #[error("unknown inner content type {0}")]
    UnknownContentType(u8),
}

/// A tls12_cid record opened in place.
#[derive(Debug, PartialEq, Eq)]
pub struct CidOpened<'b> {
    /// The real content type from the inner plaintext.
    pub content_type: ContentType,
    /// The record's sequence number.
    pub sequence: u64,
    /// RFC 9146 §6: whether this record is newer than every record this opener opened
    /// before (a condition for taking its source address as the peer's new one). Epochs
    /// are the caller's to compare: an opener serves one epoch.
    pub newest: bool,
    /// The content, type byte and padding removed, inside the caller's record buffer.
    pub plaintext: &'b mut [u8],
}

/// Write state of one epoch with a peer that asked for a CID: key, the peer's CID and the
/// next sequence number.
#[derive(Debug)]
pub struct CidSealer {
    epoch: u16,
    next_seq: u64,
    key: RecordKey,
    cid: Cid,
}

impl CidSealer {
    /// Write state for `epoch` starting at sequence `next_seq` (at most 2^48 - 1), sending
    /// `peer_cid` (the CID the peer asked to receive: 1 to 255 bytes).
    pub fn new(
        epoch: u16,
        key: RecordKey,
        next_seq: u64,
        peer_cid: &[u8],
    ) -> Result<Self, CidSetupError> {
        if next_seq > MAX_SEQUENCE {
            return Err(CidSetupError::SequenceOutOfRange(next_seq));
        }
        if key.aead().is_none() {
            return Err(CidSetupError::NoAead);
        }
        Ok(Self {
            epoch,
            next_seq,
            key,
            cid: Cid::new(peer_cid)?,
        })
    }

    /// The CID every record carries.
    pub fn cid(&self) -> &[u8] {
        self.cid.as_slice()
    }

    /// The header length: `13 + cid_len`.
    pub fn header_len(&self) -> usize {
        CID_HEADER_FIXED_LEN + self.cid.len()
    }

    /// Where the content starts in the record buffer: header plus explicit nonce.
    pub fn plaintext_offset(&self) -> usize {
        self.header_len() + self.key.explicit_nonce_len()
    }

    /// Length of the record that `content_len` bytes of content and `padding` zeros
    /// become: header, explicit nonce, content, type byte, padding, tag (saturating).
    pub fn record_len(&self, content_len: usize, padding: usize) -> usize {
        (self.plaintext_offset() + 1 + self.key.tag_len())
            .saturating_add(content_len)
            .saturating_add(padding)
    }

    /// The epoch.
    pub fn epoch(&self) -> u16 {
        self.epoch
    }

    /// The sequence number the next record will carry (2^48 once exhausted).
    pub fn next_sequence(&self) -> u64 {
        self.next_seq
    }

    /// The AEAD.
    pub fn aead(&self) -> Option<Aead> {
        self.key.aead()
    }

    /// How many more records this epoch can seal (0 once exhausted).
    pub fn sequences_left(&self) -> u64 {
        (MAX_SEQUENCE + 1).saturating_sub(self.next_seq)
    }

    /// Seals one record in place. The content must already be at
    /// `record[plaintext_offset()..][..content_len]`; header and explicit nonce go before
    /// it, the type byte, `padding` zeros and the tag after it. Returns the record length
    /// and consumes one sequence number.
    pub fn seal(
        &mut self,
        content_type: ContentType,
        record: &mut [u8],
        content_len: usize,
        padding: usize,
    ) -> Result<usize, SealError> {
        // RFC 9146 §5: length_of_DTLSInnerPlaintext "MUST NOT exceed 2^14".
        let inner_len = content_len.saturating_add(1).saturating_add(padding);
        if inner_len > MAX_PLAINTEXT_LEN {
            return Err(SealError::PlaintextTooLong(inner_len));
        }
        let seq = self.next_seq;
        // RFC 6347 §4.1: the sequence number is 48 bits and must not wrap.
        if seq > MAX_SEQUENCE {
            return Err(SealError::SequenceExhausted);
        }
        let Protection::Aead { aead, key, iv } = &self.key.protection else {
            // `new` refused the null baseline.
            return Err(SealError::Aead);
        };
        let header_len = CID_HEADER_FIXED_LEN + self.cid.len();
        let explicit_len = aead.explicit_nonce_len();
        let fragment_len = explicit_len + inner_len + TAG_LEN;
        let need = header_len + fragment_len;
        let too_small = SealError::BufferTooSmall {
            len: record.len(),
            need,
        };
        let (header, body) = record
            .get_mut(..need)
            .ok_or(too_small)?
            .split_at_mut(header_len);
        let (explicit, rest) = body.split_at_mut(explicit_len);
        let (inner, tag) = rest.split_at_mut(inner_len);
        let tag = tag.first_chunk_mut::<TAG_LEN>().ok_or(too_small)?;
        let epoch_seq = epoch_and_sequence(self.epoch, seq);
        let cid = self.cid.as_slice();
        // fragment_len <= 2^14 + 24, so it fits a u16.
        write_cid_header(header, DTLS_1_2, epoch_seq, cid, fragment_len as u16);
        // RFC 9146 §4: content ‖ real_type ‖ zeros.
        crate::record::inner::finish(inner, content_len, content_type as u8);
        let nonce = match aead {
            Aead::Aes128Gcm | Aead::Aes256Gcm => {
                // RFC 6347 §4.1.2.1 / RFC 5288 §3: the explicit nonce is epoch‖sequence,
                // carried in the record.
                if let Some(explicit) = explicit.first_chunk_mut::<8>() {
                    *explicit = epoch_seq.to_be_bytes();
                }
                gcm_nonce(&iv.0, epoch_seq)
            }
            Aead::ChaCha20Poly1305 => chacha_nonce(&iv.0, epoch_seq),
        };
        let mut aad = [0u8; MAX_CID_AAD_LEN];
        // inner_len <= 2^14.
        let aad = cid_additional_data(&mut aad, DTLS_1_2, epoch_seq, cid, inner_len as u16);
        self.next_seq = seq + 1;
        seal_raw(key, nonce, aad, inner, tag)?;
        Ok(need)
    }
}

/// Read state of one epoch for records sent to our CID: key, our CID, replay window,
/// failed-authentication counter.
#[derive(Debug)]
pub struct CidOpener {
    epoch: u16,
    key: RecordKey,
    cid: Cid,
    window: ReplayWindow,
    newest: Option<u64>,
    failed_auth: u64,
    integrity_limit: u64,
}

impl CidOpener {
    /// Read state for `epoch`, for records carrying `own_cid` (the CID we asked the peer to
    /// send: 1 to 255 bytes). The integrity limit is the AEAD's RFC 9147 §4.5.3 limit
    /// ([`Aead::integrity_limit`]), as for [`super::Opener`].
    pub fn new(
        epoch: u16,
        key: RecordKey,
        window: ReplayWindow,
        own_cid: &[u8],
    ) -> Result<Self, CidSetupError> {
        let Some(aead) = key.aead() else {
            return Err(CidSetupError::NoAead);
        };
        Ok(Self {
            epoch,
            key,
            cid: Cid::new(own_cid)?,
            window,
            newest: None,
            failed_auth: 0,
            integrity_limit: aead.integrity_limit(),
        })
    }

    /// Overrides the integrity limit (tests, or a stricter local policy).
    pub fn with_integrity_limit(mut self, limit: u64) -> Self {
        self.integrity_limit = limit;
        self
    }

    /// The epoch.
    pub fn epoch(&self) -> u16 {
        self.epoch
    }

    /// The CID records must carry; its length delimits the header (RFC 9146 §4).
    pub fn cid(&self) -> &[u8] {
        self.cid.as_slice()
    }

    /// The AEAD.
    pub fn aead(&self) -> Option<Aead> {
        self.key.aead()
    }

    /// The replay window.
    pub fn window(&self) -> &ReplayWindow {
        &self.window
    }

    /// Records that failed authentication under this key.
    pub fn failed_authentications(&self) -> u64 {
        self.failed_auth
    }

    /// The integrity limit in force.
    pub fn integrity_limit(&self) -> u64 {
        self.integrity_limit
    }

    /// RFC 9147 §4.5.3: true once the failed authentications reached the AEAD's limit;
    /// the caller then rekeys or closes, as with [`super::Opener`].
    pub fn integrity_limit_reached(&self) -> bool {
        self.failed_auth >= self.integrity_limit
    }

    /// Opens one whole tls12_cid record (header and fragment, nothing after it) in place.
    ///
    /// Order (RFC 6347 §4.1.2.6): header, epoch and CID checks, replay check without
    /// update, AEAD open, and only after the tag verified, the window update; then the
    /// padding is stripped and the real type read.
    pub fn open<'b>(&mut self, record: &'b mut [u8]) -> Result<CidOpened<'b>, CidOpenError> {
        let cid = self.cid.as_slice();
        let header_len = CID_HEADER_FIXED_LEN + cid.len();
        let Some((fixed, rest)) = record.split_first_chunk::<11>() else {
            return Err(CidWireError::HeaderTruncated {
                len: record.len(),
                need: header_len,
            }
            .into());
        };
        let Some((wire_cid, [l0, l1, ..])) = rest.split_at_checked(cid.len()) else {
            return Err(CidWireError::HeaderTruncated {
                len: record.len(),
                need: header_len,
            }
            .into());
        };
        let [outer_type, v0, v1, e0, e1, s0, s1, s2, s3, s4, s5] = *fixed;
        let length = u16::from_be_bytes([*l0, *l1]);
        let record_len = header_len + usize::from(length);
        if record_len != record.len() {
            if record_len > record.len() {
                return Err(CidWireError::LengthExceedsBuffer {
                    length,
                    available: record.len() - header_len,
                }
                .into());
            }
            return Err(CidOpenError::TrailingBytes {
                len: record.len(),
                record_len,
            });
        }
        if outer_type != TLS12_CID {
            return Err(CidWireError::NotCidRecord(outer_type).into());
        }
        let version = u16::from_be_bytes([v0, v1]);
        if version != DTLS_1_2 {
            return Err(CidWireError::UnsupportedVersion(version).into());
        }
        let epoch = u16::from_be_bytes([e0, e1]);
        if epoch != self.epoch {
            return Err(CidOpenError::WrongEpoch {
                expected: self.epoch,
                got: epoch,
            });
        }
        if wire_cid != cid {
            return Err(CidOpenError::WrongCid);
        }
        // RFC 5246 §6.2.3: TLSCiphertext.length "MUST NOT exceed 2^14 + 2048".
        if usize::from(length) > MAX_CIPHERTEXT_LEN {
            return Err(CidWireError::RecordTooLong(length).into());
        }
        let Protection::Aead { aead, key, iv } = &self.key.protection else {
            // `new` refused the null baseline.
            return Err(CidOpenError::AuthenticationFailed);
        };
        let explicit_len = aead.explicit_nonce_len();
        // At least the real type byte inside.
        let inner_len = usize::from(length)
            .checked_sub(explicit_len + TAG_LEN)
            .filter(|&n| n >= 1)
            .ok_or(CidOpenError::TooShort(length))?;
        // RFC 9146 §5: length_of_DTLSInnerPlaintext "MUST NOT exceed 2^14".
        if inner_len > MAX_PLAINTEXT_LEN {
            return Err(CidOpenError::PlaintextTooLong(inner_len));
        }
        let epoch_seq = u64::from_be_bytes([e0, e1, s0, s1, s2, s3, s4, s5]);
        let sequence = epoch_seq & MAX_SEQUENCE;
        // RFC 6347 §4.1.2.6: check before decrypting; the window is not touched yet.
        self.window.check(sequence)?;

        let mut aad = [0u8; MAX_CID_AAD_LEN];
        // inner_len <= 2^14.
        let aad = cid_additional_data(&mut aad, version, epoch_seq, cid, inner_len as u16);
        // In bounds: record.len() == header_len + length, length == explicit + inner + tag.
        let (explicit, rest) = record[header_len..].split_at_mut(explicit_len);
        let (inner, tag) = rest.split_at_mut(inner_len);
        let tag = tag
            .first_chunk::<TAG_LEN>()
            .ok_or(CidOpenError::TooShort(length))?;
        let nonce = match aead {
            Aead::Aes128Gcm | Aead::Aes256Gcm => {
                // RFC 5288 §3: the receiver takes nonce_explicit from the record.
                let explicit = explicit
                    .first_chunk::<8>()
                    .ok_or(CidOpenError::TooShort(length))?;
                gcm_nonce(&iv.0, u64::from_be_bytes(*explicit))
            }
            Aead::ChaCha20Poly1305 => chacha_nonce(&iv.0, epoch_seq),
        };
        if open_raw(key, nonce, aad, inner, tag).is_err() {
            // RFC 6347 §4.1.2.7: invalid records are silently discarded. Clear what aws-lc
            // may have decrypted; count against the integrity limit (RFC 9147 §4.5.3).
            inner.fill(0);
            self.failed_auth = self.failed_auth.saturating_add(1);
            return Err(CidOpenError::AuthenticationFailed);
        }
        // RFC 6347 §4.1.2.6: "The window MUST NOT be updated until the packet has been
        // authenticated."
        self.window.update(sequence);
        let newest = self.newest.is_none_or(|n| sequence > n);
        if newest {
            self.newest = Some(sequence);
        }

        // RFC 9146 §4: the zeros follow the type; the last non-zero byte is the type.
        let Some((plaintext, raw)) = crate::record::inner::split(inner) else {
            return Err(CidOpenError::NoContentType);
        };
        let content_type =
            ContentType::from_u8(raw).ok_or(CidOpenError::UnknownContentType(raw))?;
        Ok(CidOpened {
            content_type,
            sequence,
            newest,
            plaintext,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aad_layout() {
        let mut buf = [0u8; MAX_CID_AAD_LEN];
        let aad = cid_additional_data(&mut buf, DTLS_1_2, 0x0102_0304_0506_0708, &[9, 8], 0x0a0b);
        assert_eq!(
            aad,
            [
                0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 25, 2, 25, 0xfe, 0xfd, 1, 2, 3, 4,
                5, 6, 7, 8, 9, 8, 0x0a, 0x0b
            ]
        );
        let long = [7u8; MAX_CID_LEN];
        let aad = cid_additional_data(&mut buf, DTLS_1_2, 0, &long, 1);
        assert_eq!(aad.len(), MAX_CID_AAD_LEN);
        assert_eq!(aad[9], 255);
    }

    #[test]
    fn setup_checks() {
        let key = || RecordKey::new(Aead::Aes128Gcm, &[1; 16], &[2; 4]).expect("valid");
        assert_eq!(
            CidSealer::new(1, key(), 0, &[]).expect_err("empty"),
            CidSetupError::EmptyCid
        );
        assert_eq!(
            CidSealer::new(1, key(), 0, &[0; 256]).expect_err("long"),
            CidSetupError::CidTooLong(256)
        );
        assert_eq!(
            CidSealer::new(1, key(), MAX_SEQUENCE + 1, &[1]).expect_err("seq"),
            CidSetupError::SequenceOutOfRange(MAX_SEQUENCE + 1)
        );
        assert_eq!(
            CidSealer::new(1, RecordKey::null_baseline(), 0, &[1]).expect_err("null"),
            CidSetupError::NoAead
        );
        assert_eq!(
            CidOpener::new(1, key(), ReplayWindow::new(64), &[]).expect_err("empty"),
            CidSetupError::EmptyCid
        );
        assert_eq!(
            CidOpener::new(1, RecordKey::null_baseline(), ReplayWindow::new(64), &[1])
                .expect_err("null"),
            CidSetupError::NoAead
        );
        let s = CidSealer::new(1, key(), 0, &[0xab, 0x01]).expect("valid");
        assert_eq!(
            format!("{s:?}"),
            "CidSealer { epoch: 1, next_seq: 0, key: RecordKey { aead: Aes128Gcm, .. }, \
             cid: Cid(ab01) }"
        );
    }

    #[test]
    fn cids_up_to_twenty_bytes_are_inline_and_longer_ones_boxed() {
        for len in [1usize, 8, 20, 21, 255] {
            let bytes: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let cid = Cid::new(&bytes).expect("valid");
            assert_eq!(cid.as_slice(), &bytes[..]);
            assert_eq!(cid.len(), len);
            assert_eq!(matches!(cid, Cid::Boxed(_)), len > INLINE_CID_LEN, "{len}");
        }
        // What a session pays per direction (B7): no 255-byte inline array.
        assert!(core::mem::size_of::<CidSealer>() <= 96);
        assert!(core::mem::size_of::<CidOpener>() <= 160);
    }
}
