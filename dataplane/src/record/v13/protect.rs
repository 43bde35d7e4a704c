//! In-place DTLS 1.3 record protection: [`Sealer13`] (write state) and [`Opener13`] (read
//! state) of one epoch.
//!
//! Record format (RFC 9147 §4, RFC 8446 §5.2):
//! `unified_hdr ‖ AEAD(content ‖ type(1) ‖ zeros(padding)) ‖ tag(16)`, then the sequence
//! number bits of the header XORed with the mask over the first 16 bytes of the encrypted
//! record (RFC 9147 §4.2.3).
//!
//! - Nonce, RFC 8446 §5.3: "The 64-bit record sequence number is encoded in network byte
//!   order and padded to the left with zeros to iv_length. The padded record sequence
//!   number is XORed with either the static client_write_iv or server_write_iv". RFC 9147
//!   §4: "In DTLS 1.3 the 64-bit sequence_number is used as the sequence number for the
//!   AEAD computation; unlike DTLS 1.2, the epoch is not included."
//! - AAD, RFC 9147 §4: "The entire header value shown in Figure 4 (but prior to record
//!   number encryption; see Section 4.2.3) is used as the additional data value for the
//!   AEAD function." So the sealer seals under the header with the clear sequence bits and
//!   masks them afterwards; the opener unmasks them in place (the header of an opened
//!   record holds the clear bits) and authenticates the header as it then is.
//!
//! Nothing here allocates; nonce and mask are stack arrays, the AAD is the header in place.

use core::fmt;

use dtls_proto::Aead;

use super::sn::SnKey;
use super::{
    HeaderForm, MAX_ENCRYPTED_RECORD_LEN, MAX_INNER_PLAINTEXT_LEN, MaskError, UnifiedHeader,
    UnifiedWireError, reconstruct_sequence,
};
use crate::record::key::TAG_LEN;
use crate::record::{
    KeyError, MAX_PLAINTEXT_LEN, RecordKey, ReplayWindow, Replayed, aead_open_in_place,
    aead_seal_in_place,
};

/// The content types a DTLSInnerPlaintext can carry, defined in the protocol vocabulary.
pub use dtls_proto::InnerContentType;

/// Key material of one direction of one epoch: the AEAD key, its 12-byte IV and the
/// sn_key (RFC 9147 §4.2.3: `[sender]_sn_key = HKDF-Expand-Label(Secret, "sn", "",
/// key_length)`), derived by the control plane.
///
/// Not `Clone`; `Debug` shows the AEAD only; every part is cleared on drop (the fixed IV by
/// [`RecordKey`], the key schedules by aws-lc).
pub struct TrafficKeys13 {
    record: RecordKey,
    sn: SnKey,
}

impl TrafficKeys13 {
    /// Keys for `aead`: `key` and `sn_key` of [`Aead::key_len`] bytes, `iv` of 12.
    pub fn new(aead: Aead, key: &[u8], iv: &[u8], sn_key: &[u8]) -> Result<Self, KeyError> {
        Ok(Self {
            record: RecordKey::new_v13(aead, key, iv)?,
            sn: SnKey::new(aead, sn_key)?,
        })
    }

    /// The AEAD.
    pub fn aead(&self) -> Aead {
        self.sn.aead()
    }
}

impl fmt::Debug for TrafficKeys13 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TrafficKeys13")
            .field("aead", &self.aead())
            .finish_non_exhaustive()
    }
}

/// The number of records a key may protect.
///
/// RFC 8446 §5.5: "For AES-GCM, up to 2^24.5 full-size records (about 24 million) may be
/// encrypted on a given connection while keeping a safety margin of approximately 2^-57
/// for Authenticated Encryption (AE) security. For ChaCha20/Poly1305, the record sequence
/// number would wrap before the safety limit is reached." RFC 9147 §4.5.3: these limits
/// "apply equally to DTLS".
pub const fn confidentiality_limit(aead: Aead) -> u64 {
    match aead {
        // floor(2^24.5)
        Aead::Aes128Gcm | Aead::Aes256Gcm => 23_726_566,
        Aead::ChaCha20Poly1305 => u64::MAX,
    }
}

/// RFC 8446 §5.3: the 12-byte IV XOR the sequence number, left-padded with zeros.
#[inline(always)]
fn nonce(iv: &[u8; 12], sequence: u64) -> [u8; 12] {
    let mut n = *iv;
    for (b, s) in n[4..].iter_mut().zip(sequence.to_be_bytes()) {
        *b ^= s;
    }
    n
}

/// XORs the sequence number bytes of a header with the leading mask bytes.
#[inline(always)]
fn apply_mask(sequence_bytes: &mut [u8], mask: &[u8; 5]) {
    for (b, m) in sequence_bytes.iter_mut().zip(mask) {
        *b ^= m;
    }
}

/// Why a record could not be sealed. None of these consumes a sequence number except
/// [`Seal13Error::Aead`] and [`Seal13Error::Mask`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Seal13Error {
    /// RFC 8446 §5.4: content plus padding longer than 2^14 ("the full encoded
    /// TLSInnerPlaintext MUST NOT exceed 2^14 + 1 octets").
    #[error("content and padding of {0} bytes exceed 2^14")]
    PlaintextTooLong(usize),
    /// RFC 9147 §4.2.1: "Implementations MUST either abandon an association or rekey prior
    /// to allowing the sequence number to wrap." Fatal for this key: rekey or close.
    #[error("64-bit sequence space of this epoch is exhausted")]
    SequenceExhausted,
    /// The record buffer cannot hold header, inner plaintext and tag.
    #[error("record buffer of {len} bytes too small, need {need}")]
    BufferTooSmall {
        /// Bytes available.
        len: usize,
        /// Bytes needed.
        need: usize,
    },
    /// The header form cannot be built (a CID longer than 255 bytes).
    #[error(transparent)]
    Header(#[from] UnifiedWireError),
    /// A record without length field already ended this datagram (RFC 9147 §4: "Omitting
    /// the length field MUST only be used for the last record in a datagram").
    #[error("a record without length field already ended the datagram")]
    DatagramClosed,
    /// The AEAD implementation failed (it does only on internal error).
    #[error("AEAD seal failed")]
    Aead,
    /// The mask could not be computed (only on internal error: every sealed record has at
    /// least 17 bytes).
    #[error(transparent)]
    Mask(#[from] MaskError),
}

/// Why a record was not opened. Callers count and drop (RFC 9147 §4.5.2: "invalid records
/// SHOULD be silently discarded"); the exceptions, fatal to the session, are
/// [`Open13Error::NoContentType`] and [`Open13Error::UnknownContentType`], and reaching the
/// integrity limit ([`Opener13::integrity_limit_reached`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Open13Error {
    /// The header is malformed or announces more bytes than given.
    #[error(transparent)]
    Malformed(#[from] UnifiedWireError),
    /// The buffer holds more than the record its length field announces: `open` takes
    /// exactly one.
    #[error("record buffer holds {len} bytes but the record is {record_len}")]
    TrailingBytes {
        /// Bytes given.
        len: usize,
        /// Header plus length.
        record_len: usize,
    },
    /// The record's epoch bits are not those of this opener's epoch.
    #[error("record epoch bits {got}, expected {expected}")]
    WrongEpoch {
        /// This opener's epoch bits.
        expected: u8,
        /// The record's epoch bits.
        got: u8,
    },
    /// RFC 9147 §4.2.3: records whose ciphertext is shorter than the 16-byte sample "MUST
    /// [be rejected] as if they had failed deprotection"; also any shorter than tag plus
    /// content type.
    #[error("encrypted record of {0} bytes too short")]
    TooShort(usize),
    /// RFC 8446 §5.2: encrypted record longer than 2^14 + 256 (record_overflow).
    #[error("encrypted record of {0} bytes exceeds 2^14 + 256")]
    RecordTooLong(usize),
    /// RFC 8446 §5.4: inner plaintext longer than 2^14 + 1 (record_overflow).
    #[error("inner plaintext of {0} bytes exceeds 2^14 + 1")]
    PlaintextTooLong(usize),
    /// The mask could not be computed (internal error).
    #[error(transparent)]
    Mask(#[from] MaskError),
    /// The replay window refused the reconstructed sequence number (checked before
    /// decryption).
    #[error("replayed record: {0}")]
    Replayed(#[from] Replayed),
    /// The tag did not verify. Counted against the key's integrity limit; the encrypted
    /// bytes were cleared so no unauthenticated plaintext stays in the buffer.
    #[error("record failed authentication")]
    AuthenticationFailed,
    /// RFC 8446 §5.4: "If a receiving implementation does not find a non-zero octet in the
    /// cleartext, it MUST terminate the connection with an "unexpected_message" alert."
    /// The record authenticated and counts as received.
    #[error("inner plaintext has no content type")]
    NoContentType,
    /// RFC 8446 §5: "If a TLS implementation receives an unexpected record type, it MUST
    /// terminate the connection with an "unexpected_message" alert." The record
    /// authenticated and counts as received.
    #[error("unknown inner content type {0}")]
    UnknownContentType(u8),
}

/// A record opened in place.
#[derive(Debug, PartialEq, Eq)]
pub struct Opened13<'b> {
    /// The content type from the inner plaintext.
    pub content_type: InnerContentType,
    /// The full epoch (the opener's).
    pub epoch: u64,
    /// The reconstructed 64-bit sequence number.
    pub sequence: u64,
    /// The content, padding and type byte removed, inside the caller's record buffer.
    pub plaintext: &'b mut [u8],
}

/// Write state of one epoch: the keys and the next sequence number.
#[derive(Debug)]
pub struct Sealer13 {
    epoch: u64,
    next_seq: u64,
    keys: TrafficKeys13,
}

impl Sealer13 {
    /// Write state for `epoch`, starting at sequence number 0 (RFC 9147 §4.2: "each
    /// sequence_number initially being 0 for each epoch").
    pub fn new(epoch: u64, keys: TrafficKeys13) -> Self {
        Self {
            epoch,
            next_seq: 0,
            keys,
        }
    }

    /// The same state continuing at `next_seq` (a key handed over mid-epoch).
    pub fn with_next_sequence(mut self, next_seq: u64) -> Self {
        self.next_seq = next_seq;
        self
    }

    /// The epoch.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The AEAD.
    pub fn aead(&self) -> Aead {
        self.keys.aead()
    }

    /// The sequence number the next record will carry.
    pub fn next_sequence(&self) -> u64 {
        self.next_seq
    }

    /// RFC 9147 §4.5.3 / RFC 8446 §5.5: true once this key protected as many records as
    /// [`confidentiality_limit`] allows; the caller then updates keys ("Implementations
    /// SHOULD NOT protect more records than allowed by the limit").
    pub fn confidentiality_limit_reached(&self) -> bool {
        self.next_seq >= confidentiality_limit(self.aead())
    }

    /// Where the content starts in the record buffer: right after the header.
    pub fn plaintext_offset(&self, form: &HeaderForm<'_>) -> usize {
        form.header_len()
    }

    /// Length of the record that `content_len` bytes of content and `padding` zeros become:
    /// header, content, type byte, padding, tag (saturating at `usize::MAX`).
    pub fn record_len(&self, form: &HeaderForm<'_>, content_len: usize, padding: usize) -> usize {
        (form.header_len() + 1 + TAG_LEN)
            .saturating_add(content_len)
            .saturating_add(padding)
    }

    /// Seals one record in place. The content must already be at
    /// `record[plaintext_offset(form)..][..content_len]`; the header goes before it, the
    /// type byte, `padding` zero bytes and the tag after it. Returns the record length and
    /// consumes one sequence number.
    ///
    /// A form without length field makes a record that runs to the end of the datagram:
    /// RFC 9147 §4: "Omitting the length field MUST only be used for the last record in a
    /// datagram."
    pub fn seal(
        &mut self,
        content_type: InnerContentType,
        form: &HeaderForm<'_>,
        record: &mut [u8],
        content_len: usize,
        padding: usize,
    ) -> Result<usize, Seal13Error> {
        // RFC 8446 §5.4: "The full encoded TLSInnerPlaintext MUST NOT exceed 2^14 + 1
        // octets."
        let padded = content_len.saturating_add(padding);
        if padded > MAX_PLAINTEXT_LEN {
            return Err(Seal13Error::PlaintextTooLong(padded));
        }
        let seq = self.next_seq;
        // RFC 9147 §4.2.1: the sequence number must not wrap (u64::MAX stays unused, so
        // the next value is always representable).
        if seq == u64::MAX {
            return Err(Seal13Error::SequenceExhausted);
        }
        let header_len = form.header_len();
        let inner_len = padded + 1;
        let encrypted_len = inner_len + TAG_LEN;
        let need = header_len + encrypted_len;
        let len = record.len();
        let (header, body) = record
            .get_mut(..need)
            .ok_or(Seal13Error::BufferTooSmall { len, need })?
            .split_at_mut(header_len);
        // The header with the sequence number in the clear: the AAD (RFC 9147 §4).
        form.emit(self.epoch, seq, encrypted_len, header)?;
        let (inner, tag) = body.split_at_mut(inner_len);
        // RFC 8446 §5.2: content ‖ type ‖ zeros.
        crate::record::inner::finish(inner, content_len, content_type as u8);
        let iv = match &self.keys.record.protection {
            crate::record::key::Protection::Aead { iv, .. } => iv.0,
            crate::record::key::Protection::Null => return Err(Seal13Error::Aead),
        };
        self.next_seq = seq + 1;
        aead_seal_in_place(&self.keys.record, nonce(&iv, seq), header, inner, tag)
            .map_err(|_| Seal13Error::Aead)?;
        // RFC 9147 §4.2.3: mask over the first 16 bytes of the encrypted record, XORed
        // into the sequence number bits.
        let mask = self.keys.sn.mask(body)?;
        let at = header_len - form.sequence.bytes() - if form.length { 2 } else { 0 };
        if let Some(bits) = header.get_mut(at..at + form.sequence.bytes()) {
            apply_mask(bits, &mask);
        }
        Ok(need)
    }
}

/// Read state of one epoch: keys, replay window, the next expected sequence number and the
/// failed-authentication counter.
#[derive(Debug)]
pub struct Opener13 {
    epoch: u64,
    keys: TrafficKeys13,
    window: ReplayWindow,
    next_expected: u64,
    failed_auth: u64,
    integrity_limit: u64,
}

impl Opener13 {
    /// Read state for `epoch`. The integrity limit is the AEAD's RFC 9147 §4.5.3 limit
    /// ([`Aead::integrity_limit`]).
    pub fn new(epoch: u64, keys: TrafficKeys13, window: ReplayWindow) -> Self {
        let integrity_limit = keys.aead().integrity_limit();
        Self {
            epoch,
            keys,
            window,
            next_expected: 0,
            failed_auth: 0,
            integrity_limit,
        }
    }

    /// Overrides the integrity limit (tests, or a stricter local policy).
    pub fn with_integrity_limit(mut self, limit: u64) -> Self {
        self.integrity_limit = limit;
        self
    }

    /// The same state continuing an epoch whose records up to `next_expected - 1` were
    /// opened elsewhere (a key handed over mid-epoch, with its replay window).
    pub fn with_next_expected(mut self, next_expected: u64) -> Self {
        self.next_expected = next_expected;
        self
    }

    /// The epoch.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The AEAD.
    pub fn aead(&self) -> Aead {
        self.keys.aead()
    }

    /// The replay window.
    pub fn window(&self) -> &ReplayWindow {
        &self.window
    }

    /// One plus the highest sequence number opened so far (0 before any): what wire bits
    /// are reconstructed against (RFC 9147 §4.2.2).
    pub fn next_expected(&self) -> u64 {
        self.next_expected
    }

    /// Records that failed authentication under this key.
    pub fn failed_authentications(&self) -> u64 {
        self.failed_auth
    }

    /// The integrity limit in force.
    pub fn integrity_limit(&self) -> u64 {
        self.integrity_limit
    }

    /// RFC 9147 §4.5.3: "Implementations MUST count the number of received packets that
    /// fail authentication with each key. If the number of packets that fail
    /// authentication exceeds a limit that is specific to the AEAD in use, an
    /// implementation SHOULD immediately close the connection." True once reached.
    pub fn integrity_limit_reached(&self) -> bool {
        self.failed_auth >= self.integrity_limit
    }

    /// Opens one whole record (unified header and encrypted record, nothing after it) in
    /// place. `cid_len` is the connection ID length negotiated for records to us.
    ///
    /// Order: header and epoch checks, sequence number unmasked (in the buffer) and
    /// reconstructed, replay check without update, AEAD open, and only after the tag
    /// verified, the window update (RFC 9147 §4.5.1: "The window MUST NOT be updated due to
    /// a received record until that record has been deprotected successfully"). The replay
    /// check runs before decryption, as in the 1.2 [`crate::record::Opener`], so replayed
    /// records cost no AEAD work; RFC 9147 §4.5.1 recommends ("SHOULD") checking after
    /// deprotection against a timing channel on the record number.
    pub fn open<'b>(
        &mut self,
        record: &'b mut [u8],
        cid_len: usize,
    ) -> Result<Opened13<'b>, Open13Error> {
        let header = UnifiedHeader::parse(record, cid_len)?;
        if header.record_len != record.len() {
            return Err(Open13Error::TrailingBytes {
                len: record.len(),
                record_len: header.record_len,
            });
        }
        let expected = (self.epoch & 3) as u8;
        if header.epoch_bits != expected {
            return Err(Open13Error::WrongEpoch {
                expected,
                got: header.epoch_bits,
            });
        }
        let encrypted_len = header.encrypted_len();
        if encrypted_len > MAX_ENCRYPTED_RECORD_LEN {
            return Err(Open13Error::RecordTooLong(encrypted_len));
        }
        // At least the 16-byte sample (RFC 9147 §4.2.3), and tag plus type byte.
        let Some(inner_len) = encrypted_len.checked_sub(TAG_LEN).filter(|&n| n >= 1) else {
            return Err(Open13Error::TooShort(encrypted_len));
        };
        if inner_len > MAX_INNER_PLAINTEXT_LEN {
            return Err(Open13Error::PlaintextTooLong(inner_len));
        }
        let (head, body) = record.split_at_mut(header.header_len);
        // RFC 9147 §4.2.3: "Decryption is accomplished by the same process."
        let mask = self.keys.sn.mask(body)?;
        let wire = match head.get_mut(header.sequence_range()) {
            Some(bits) => {
                apply_mask(bits, &mask);
                match bits {
                    [hi, lo] => u16::from_be_bytes([*hi, *lo]),
                    [lo] => u16::from(*lo),
                    _ => 0,
                }
            }
            None => 0,
        };
        // RFC 9147 §4.2.2: closest to one plus the highest deprotected.
        let sequence = reconstruct_sequence(self.next_expected, wire, header.sequence.bits());
        self.window.check(sequence)?;

        let iv = match &self.keys.record.protection {
            crate::record::key::Protection::Aead { iv, .. } => iv.0,
            crate::record::key::Protection::Null => {
                return Err(Open13Error::AuthenticationFailed);
            }
        };
        let (inner, tag) = body.split_at_mut(inner_len);
        if aead_open_in_place(&self.keys.record, nonce(&iv, sequence), head, inner, tag).is_err() {
            // RFC 9147 §4.5.2: invalid records are silently discarded. Clear what aws-lc
            // may have decrypted; count against the integrity limit (RFC 9147 §4.5.3).
            inner.fill(0);
            self.failed_auth = self.failed_auth.saturating_add(1);
            return Err(Open13Error::AuthenticationFailed);
        }
        // RFC 9147 §4.5.1: update only after deprotection succeeded.
        self.window.update(sequence);
        self.next_expected = self.next_expected.max(sequence.saturating_add(1));

        // RFC 8446 §5.4: the type is the last non-zero byte; the zeros after it are padding.
        let Some((plaintext, raw)) = crate::record::inner::split(inner) else {
            return Err(Open13Error::NoContentType);
        };
        let content_type =
            InnerContentType::from_u8(raw).ok_or(Open13Error::UnknownContentType(raw))?;
        Ok(Opened13 {
            content_type,
            epoch: self.epoch,
            sequence,
            plaintext,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nonce_is_iv_xor_left_padded_sequence() {
        let iv = [1u8, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12];
        assert_eq!(
            nonce(&iv, 0x0102_0304_0506_0708),
            [
                1,
                2,
                3,
                4,
                5 ^ 1,
                6 ^ 2,
                7 ^ 3,
                8 ^ 4,
                9 ^ 5,
                10 ^ 6,
                11 ^ 7,
                12 ^ 8
            ]
        );
        assert_eq!(nonce(&iv, 0), iv);
    }

    #[test]
    fn keys_check_lengths_and_hide_bytes() {
        assert_eq!(
            TrafficKeys13::new(Aead::Aes128Gcm, &[1; 16], &[2; 4], &[3; 16])
                .expect_err("a 1.2 GCM salt is not a 1.3 IV"),
            KeyError::IvLength {
                aead: Aead::Aes128Gcm,
                expected: 12,
                got: 4
            }
        );
        assert!(TrafficKeys13::new(Aead::Aes256Gcm, &[1; 32], &[2; 12], &[3; 16]).is_err());
        let keys = TrafficKeys13::new(Aead::ChaCha20Poly1305, &[0xab; 32], &[0xcd; 12], &[3; 32])
            .expect("valid");
        assert_eq!(
            format!("{keys:?}"),
            "TrafficKeys13 { aead: ChaCha20Poly1305, .. }"
        );
    }
}
