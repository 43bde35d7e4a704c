//! The DTLS 1.3 record layer (RFC 9147 §4), beside the DTLS 1.2 one of the parent module.
//!
//! - [`UnifiedHeader`] / [`HeaderForm`]: the variable-length unified header of protected
//!   records (RFC 9147 §4, Figure 3: `0b001CSLEE`), checked parsing that never panics and
//!   building for a chosen form.
//! - [`MixedRecords`] / [`MixedRecordsMut`]: walk one datagram whose records mix unified
//!   headers and 13-byte DTLSPlaintext headers, told apart by the first byte (RFC 9147 §4.1);
//!   a record with another association's CID ends the walk (RFC 9147 §4).
//! - [`DatagramWriter13`]: seal records back to back into one datagram, a record without
//!   length field only as the last one (RFC 9147 §4).
//! - [`SnKey`]: record number encryption (RFC 9147 §4.2.3), the construction of QUIC header
//!   protection (RFC 9001 §5.4.3, §5.4.4): AES through aws-lc-rs's
//!   `aead::quic::HeaderProtectionKey`, ChaCha20 through the block function in `sn.rs`.
//! - [`reconstruct_sequence`] / [`reconstruct_epoch`]: full sequence number and epoch from
//!   the bits on the wire (RFC 9147 §4.2.2).
//! - [`TrafficKeys13`], [`Sealer13`], [`Opener13`]: in-place protection of one direction of
//!   one epoch: per-record nonce from the 64-bit sequence number (RFC 8446 §5.3), the
//!   header as AAD (RFC 9147 §4), DTLSInnerPlaintext with its type byte and padding
//!   (RFC 8446 §5.2, §5.4), replay window and integrity limit (RFC 9147 §4.5.1, §4.5.3).
//!
//! Like the 1.2 layer, nothing on the per-record path allocates.
//!
//! ```
//! use dataplane::record::{Aead, ReplayWindow};
//! use dataplane::record::v13::{HeaderForm, InnerContentType, Opener13, Sealer13, TrafficKeys13};
//!
//! let keys = || TrafficKeys13::new(Aead::Aes128Gcm, &[7; 16], &[1; 12], &[9; 16]);
//! let mut sealer = Sealer13::new(3, keys()?);
//! let mut opener = Opener13::new(3, keys()?, ReplayWindow::new(64));
//!
//! let form = HeaderForm::default();
//! let msg = b"hello";
//! let mut record = vec![0u8; sealer.record_len(&form, msg.len(), 0)];
//! let at = form.header_len();
//! record[at..at + msg.len()].copy_from_slice(msg);
//! let len = sealer.seal(InnerContentType::ApplicationData, &form, &mut record, msg.len(), 0)?;
//!
//! let opened = opener.open(&mut record[..len], 0)?;
//! assert_eq!(opened.content_type, InnerContentType::ApplicationData);
//! assert_eq!(opened.plaintext, msg);
//! # Ok::<(), dataplane::Error>(())
//! ```

mod datagram;
mod header;
mod protect;
mod sn;
mod split;

pub use datagram::DatagramWriter13;
pub use header::{HeaderForm, SequenceLen, UnifiedHeader, UnifiedWireError};
pub use protect::{
    InnerContentType, Open13Error, Opened13, Opener13, Seal13Error, Sealer13, TrafficKeys13,
    confidentiality_limit,
};
pub use sn::{MaskError, SnKey, reconstruct_epoch, reconstruct_sequence};
pub use split::{MixedKind, MixedRecord, MixedRecordMut, MixedRecords, MixedRecordsMut};

/// RFC 9147 §4, Figure 3: the three high bits of a unified header's first byte are `001`.
pub const FIXED_BITS: u8 = 0b0010_0000;
/// The mask selecting the fixed bits of the first byte.
pub const FIXED_MASK: u8 = 0b1110_0000;
/// RFC 9147 §4: "The C bit (0x10) is set if the Connection ID is present."
pub const FLAG_CID: u8 = 0x10;
/// RFC 9147 §4: "The S bit (0x08) indicates the size of the sequence number. 0 means an
/// 8-bit sequence number, 1 means 16-bit."
pub const FLAG_SEQ16: u8 = 0x08;
/// RFC 9147 §4: "The L bit (0x04) is set if the length is present."
pub const FLAG_LENGTH: u8 = 0x04;
/// RFC 9147 §4: "The two low bits (0x03) include the low-order two bits of the epoch."
pub const EPOCH_BITS: u8 = 0x03;
/// The longest connection ID (RFC 9146 §3: `opaque cid<0..2^8-1>`).
pub const MAX_CID_LEN: usize = 255;
/// RFC 9147 §4.2.3: the mask is computed over "the first 16 bytes of the ciphertext".
pub const SN_SAMPLE_LEN: usize = 16;
/// RFC 8446 §5.2: the length of `encrypted_record` "MUST NOT exceed 2^14 + 256 bytes".
pub const MAX_ENCRYPTED_RECORD_LEN: usize = (1 << 14) + 256;
/// RFC 8446 §5.4: "the full encoded TLSInnerPlaintext MUST NOT exceed 2^14 + 1 octets".
pub const MAX_INNER_PLAINTEXT_LEN: usize = (1 << 14) + 1;

/// Is `first` the first byte of a unified header (RFC 9147 §4.1: "the leading bits of the
/// first byte are 001")?
#[inline]
pub const fn is_unified(first: u8) -> bool {
    first & FIXED_MASK == FIXED_BITS
}
