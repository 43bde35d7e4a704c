//! The DTLS 1.2 record layer (RFC 6347 §4.1).
//!
//! - [`RecordHeader`] / [`RecordRepr`]: the 13-byte record header as checked accessors over
//!   a byte buffer (no accessor can panic, whatever the bytes) and a parsed representation.
//! - [`Records`] / [`RecordsMut`]: walk every record of one datagram.
//! - [`RecordKey`], [`Sealer`], [`Opener`]: in-place AEAD protection of one epoch, one
//!   direction, with nonces built from epoch‖sequence (never from an RNG).
//! - [`CidRecordHeader`] / [`CidRecordRepr`], [`CidSealer`], [`CidOpener`]: DTLS 1.2 records
//!   with connection ID (RFC 9146): the tls12_cid(25) header, whose CID length the receiver
//!   knows from the negotiation, and their protection with the inner content type, padding
//!   and the RFC 9146 §5 AAD, on the same nonces and AEAD calls as [`Sealer`] / [`Opener`].
//! - [`ReplayWindow`]: the RFC 6347 §4.1.2.6 sliding window, O(1) check and update.
//! - [`v13`]: the DTLS 1.3 record layer (RFC 9147 §4): unified header, record number
//!   encryption, sequence and epoch reconstruction, [`v13::Sealer13`] / [`v13::Opener13`].
//!
//! Nothing on the per-record path allocates.
//!
//! ```
//! use dataplane::record::{Aead, ContentType, DTLS_1_2, Opener, RecordKey, ReplayWindow, Sealer};
//!
//! let (key, iv) = ([7u8; 16], [1u8; 4]);
//! let mut sealer = Sealer::new(1, RecordKey::new(Aead::Aes128Gcm, &key, &iv)?, 0)?;
//! let mut opener = Opener::new(1, RecordKey::new(Aead::Aes128Gcm, &key, &iv)?, ReplayWindow::new(64));
//!
//! let msg = b"hello";
//! let mut record = vec![0u8; sealer.record_len(msg.len())];
//! let at = sealer.plaintext_offset();
//! record[at..at + msg.len()].copy_from_slice(msg);
//! let len = sealer.seal(ContentType::ApplicationData, DTLS_1_2, &mut record, msg.len())?;
//!
//! let opened = opener.open(&mut record[..len])?;
//! assert_eq!(opened.plaintext, msg);
//! # Ok::<(), dataplane::Error>(())
//! ```

use dtls_proto::ProtocolVersion;

mod cid_header;
mod cid_protect;
mod header;
mod inner;
mod key;
mod protect;
mod replay;
mod split;
pub mod v13;

pub use cid_header::{
    CID_HEADER_FIXED_LEN, CidRecordHeader, CidRecordRepr, CidWireError, TLS12_CID,
};
pub use cid_protect::{
    CidOpenError, CidOpened, CidOpener, CidSealer, CidSetupError, MAX_CID_AAD_LEN,
};
/// The vocabulary this layer's API speaks ([`Sealer::seal`] takes a content type,
/// [`RecordKey::new`] an AEAD), defined once in `dtls-proto` and re-exported here.
pub use dtls_proto::{Aead, ContentType};
pub use header::{RecordHeader, RecordRepr, WireError};
pub use key::{KeyError, RecordKey};
pub use protect::{OpenError, Opened, Opener, SealError, Sealer};
#[doc(hidden)]
pub use protect::{aead_open_in_place, aead_seal_in_place};
pub use replay::{ReplayWindow, Replayed, WindowSizeError};
pub use split::{RecordRef, Records, RecordsMut};

/// Length of the DTLS 1.2 record header: type(1) version(2) epoch(2) sequence(6) length(2).
pub const HEADER_LEN: usize = 13;
/// The record-layer version value of DTLS 1.0 (RFC 4347), still used in ClientHello records.
pub const DTLS_1_0: u16 = ProtocolVersion::Dtls1_0.to_u16();
/// The record-layer version value of DTLS 1.2 (RFC 6347 §4.1).
pub const DTLS_1_2: u16 = ProtocolVersion::Dtls1_2.to_u16();
/// The largest sequence number a record can carry (48 bits, RFC 6347 §4.1).
pub const MAX_SEQUENCE: u64 = (1 << 48) - 1;
/// RFC 6347 §4.1 / RFC 5246 §6.2.1: "The length MUST NOT exceed 2^14."
pub const MAX_PLAINTEXT_LEN: usize = 1 << 14;
/// RFC 5246 §6.2.3: "The length MUST NOT exceed 2^14 + 2048" (TLSCiphertext.length).
pub const MAX_CIPHERTEXT_LEN: usize = (1 << 14) + 2048;
