//! The DTLS 1.2 record header (RFC 6347 §4.1), smoltcp style: [`RecordHeader`] gives
//! accessors over a byte buffer, [`RecordRepr`] is the parsed, validated form.
//!
//! ```text
//! struct {
//!     ContentType type;             // 1 byte
//!     ProtocolVersion version;      // 2 bytes
//!     uint16 epoch;                 // 2 bytes
//!     uint48 sequence_number;       // 6 bytes
//!     uint16 length;                // 2 bytes
//!     opaque fragment[DTLSPlaintext.length];
//! } DTLSPlaintext;
//! ```
//!
//! Unlike smoltcp, the accessors here never panic even on a buffer that was not checked:
//! a field that lies outside the buffer reads as 0 and a setter outside it writes nothing.
//! Use [`RecordHeader::new_checked`] (or [`RecordHeader::check_len`]) before trusting values.

use dtls_proto::ContentType;

use super::{DTLS_1_0, DTLS_1_2, HEADER_LEN, MAX_CIPHERTEXT_LEN, MAX_SEQUENCE};

mod field {
    use core::ops::Range;
    pub(super) const CONTENT_TYPE: usize = 0;
    pub(super) const VERSION: Range<usize> = 1..3;
    pub(super) const EPOCH: Range<usize> = 3..5;
    pub(super) const SEQUENCE: Range<usize> = 5..11;
    pub(super) const LENGTH: Range<usize> = 11..13;
}

/// Why a record header or a datagram could not be parsed or emitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// Fewer than [`HEADER_LEN`] bytes.
    #[error("record header truncated: {len} bytes, need 13")]
    HeaderTruncated {
        /// Bytes available.
        len: usize,
    },
    /// The length field claims more bytes than the buffer holds.
    #[error("record length {length} exceeds the {available} bytes that follow the header")]
    LengthExceedsBuffer {
        /// The header's length field.
        length: u16,
        /// Bytes after the header.
        available: usize,
    },
    /// The content type is none of the RFC 6347 / RFC 6520 types.
    #[error("unknown record content type {0}")]
    UnknownContentType(u8),
    /// The version is neither DTLS 1.0 nor DTLS 1.2.
    #[error("unsupported record version {0:#06x}")]
    UnsupportedVersion(u16),
    /// The length field exceeds 2^14 + 2048 (RFC 5246 §6.2.3).
    #[error("record length {0} exceeds 2^14 + 2048")]
    RecordTooLong(u16),
    /// A sequence number above 2^48 - 1 cannot be encoded.
    #[error("sequence number {0} does not fit in 48 bits")]
    SequenceOutOfRange(u64),
    /// The output buffer is too small for what is emitted.
    #[error("buffer of {len} bytes too small, need {need}")]
    BufferTooSmall {
        /// Bytes available.
        len: usize,
        /// Bytes needed.
        need: usize,
    },
}

/// Accessors over the bytes of one record (header followed by the fragment).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordHeader<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> RecordHeader<T> {
    /// Wraps a buffer without checking it. Accessors still never panic.
    pub const fn new_unchecked(buffer: T) -> Self {
        Self { buffer }
    }

    /// Wraps a buffer after [`Self::check_len`] succeeded on it.
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let header = Self::new_unchecked(buffer);
        header.check_len()?;
        Ok(header)
    }

    /// Checks the buffer holds the 13-byte header and the `length` bytes it announces.
    /// Bytes beyond the record are allowed (the rest of a datagram).
    pub fn check_len(&self) -> Result<(), WireError> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN {
            return Err(WireError::HeaderTruncated { len });
        }
        let length = self.length();
        let available = len - HEADER_LEN;
        if usize::from(length) > available {
            return Err(WireError::LengthExceedsBuffer { length, available });
        }
        Ok(())
    }

    /// Gives the buffer back.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Header plus fragment length: `13 + length`.
    pub fn total_len(&self) -> usize {
        HEADER_LEN + usize::from(self.length())
    }

    fn read<const N: usize>(&self, range: core::ops::Range<usize>) -> [u8; N] {
        let mut out = [0u8; N];
        if let Some(src) = self.buffer.as_ref().get(range)
            && src.len() == N
        {
            out.copy_from_slice(src);
        }
        out
    }

    /// The raw content type byte.
    pub fn content_type(&self) -> u8 {
        self.buffer
            .as_ref()
            .get(field::CONTENT_TYPE)
            .copied()
            .unwrap_or(0)
    }

    /// The record-layer version (0xfefd for DTLS 1.2).
    pub fn version(&self) -> u16 {
        u16::from_be_bytes(self.read(field::VERSION))
    }

    /// The epoch.
    pub fn epoch(&self) -> u16 {
        u16::from_be_bytes(self.read(field::EPOCH))
    }

    /// The 48-bit sequence number.
    pub fn sequence(&self) -> u64 {
        let b: [u8; 6] = self.read(field::SEQUENCE);
        u64::from_be_bytes([0, 0, b[0], b[1], b[2], b[3], b[4], b[5]])
    }

    /// The epoch and sequence number as one 64-bit value, as they appear on the wire
    /// (RFC 6347 §4.1.2.1: the 64-bit seq_num of the MAC/AAD is epoch‖sequence).
    pub fn epoch_and_sequence(&self) -> u64 {
        u64::from_be_bytes(self.read(field::EPOCH.start..field::SEQUENCE.end))
    }

    /// The fragment length field.
    pub fn length(&self) -> u16 {
        u16::from_be_bytes(self.read(field::LENGTH))
    }

    /// The fragment: `length` bytes after the header, cut short if the buffer is shorter.
    pub fn payload(&self) -> &[u8] {
        let data = self.buffer.as_ref();
        let rest = data.get(HEADER_LEN..).unwrap_or(&[]);
        let n = rest.len().min(usize::from(self.length()));
        &rest[..n]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> RecordHeader<T> {
    fn write(&mut self, range: core::ops::Range<usize>, bytes: &[u8]) {
        if let Some(dst) = self.buffer.as_mut().get_mut(range)
            && dst.len() == bytes.len()
        {
            dst.copy_from_slice(bytes);
        }
    }

    /// Sets the content type byte.
    pub fn set_content_type(&mut self, value: u8) {
        if let Some(b) = self.buffer.as_mut().get_mut(field::CONTENT_TYPE) {
            *b = value;
        }
    }

    /// Sets the version.
    pub fn set_version(&mut self, value: u16) {
        self.write(field::VERSION, &value.to_be_bytes());
    }

    /// Sets the epoch.
    pub fn set_epoch(&mut self, value: u16) {
        self.write(field::EPOCH, &value.to_be_bytes());
    }

    /// Sets the sequence number; only its low 48 bits are written.
    pub fn set_sequence(&mut self, value: u64) {
        let b = value.to_be_bytes();
        self.write(field::SEQUENCE, &b[2..]);
    }

    /// Sets the length field.
    pub fn set_length(&mut self, value: u16) {
        self.write(field::LENGTH, &value.to_be_bytes());
    }

    /// The fragment, mutable; cut short if the buffer is shorter than `length`.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let n = usize::from(self.length());
        let data = self.buffer.as_mut();
        let rest = data.get_mut(HEADER_LEN..).unwrap_or(&mut []);
        let n = rest.len().min(n);
        &mut rest[..n]
    }
}

/// A parsed, validated record header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RecordRepr {
    /// The content type.
    pub content_type: ContentType,
    /// The record-layer version ([`DTLS_1_0`] or [`DTLS_1_2`]).
    pub version: u16,
    /// The epoch.
    pub epoch: u16,
    /// The 48-bit sequence number.
    pub sequence: u64,
    /// The fragment length.
    pub length: u16,
}

impl RecordRepr {
    /// Parses and validates a header: length checked against the buffer, known content
    /// type, DTLS 1.0 or 1.2 version, length at most 2^14 + 2048.
    pub fn parse<T: AsRef<[u8]>>(header: &RecordHeader<T>) -> Result<Self, WireError> {
        header.check_len()?;
        let content_type = ContentType::from_u8(header.content_type())
            .ok_or(WireError::UnknownContentType(header.content_type()))?;
        let version = header.version();
        if version != DTLS_1_2 && version != DTLS_1_0 {
            return Err(WireError::UnsupportedVersion(version));
        }
        let length = header.length();
        // RFC 5246 §6.2.3: "The length (in bytes) of the following TLSCiphertext.fragment.
        // The length MUST NOT exceed 2^14 + 2048."
        if usize::from(length) > MAX_CIPHERTEXT_LEN {
            return Err(WireError::RecordTooLong(length));
        }
        Ok(Self {
            content_type,
            version,
            epoch: header.epoch(),
            sequence: header.sequence(),
            length,
        })
    }

    /// Header length, always [`HEADER_LEN`].
    pub const fn header_len(&self) -> usize {
        HEADER_LEN
    }

    /// Header plus fragment length.
    pub fn buffer_len(&self) -> usize {
        HEADER_LEN + usize::from(self.length)
    }

    /// Writes the header fields into `header` (only the low 48 bits of the sequence).
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, header: &mut RecordHeader<T>) {
        header.set_content_type(self.content_type.into());
        header.set_version(self.version);
        header.set_epoch(self.epoch);
        header.set_sequence(self.sequence);
        header.set_length(self.length);
    }

    /// Writes the 13 header bytes at the start of `buf`.
    pub fn emit_into(&self, buf: &mut [u8]) -> Result<(), WireError> {
        if buf.len() < HEADER_LEN {
            return Err(WireError::BufferTooSmall {
                len: buf.len(),
                need: HEADER_LEN,
            });
        }
        if self.sequence > MAX_SEQUENCE {
            return Err(WireError::SequenceOutOfRange(self.sequence));
        }
        self.emit(&mut RecordHeader::new_unchecked(buf));
        Ok(())
    }
}

/// Writes a header in one go; `buf` must hold at least [`HEADER_LEN`] bytes (callers on the
/// hot path check that once for the whole record).
#[inline]
pub(crate) fn write_header(
    buf: &mut [u8; HEADER_LEN],
    content_type: ContentType,
    version: u16,
    epoch_and_sequence: u64,
    length: u16,
) {
    buf[0] = content_type as u8;
    buf[1..3].copy_from_slice(&version.to_be_bytes());
    buf[3..11].copy_from_slice(&epoch_and_sequence.to_be_bytes());
    buf[11..13].copy_from_slice(&length.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: [u8; 16] = [
        23, 0xfe, 0xfd, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x01, 0x02, 0x00, 0x03, 0xaa, 0xbb,
        0xcc,
    ];

    #[test]
    fn accessors_read_fields() {
        let h = RecordHeader::new_checked(&SAMPLE[..]).expect("sample is well formed");
        assert_eq!(h.content_type(), 23);
        assert_eq!(h.version(), DTLS_1_2);
        assert_eq!(h.epoch(), 1);
        assert_eq!(h.sequence(), 0x0102);
        assert_eq!(h.epoch_and_sequence(), (1 << 48) | 0x0102);
        assert_eq!(h.length(), 3);
        assert_eq!(h.payload(), &[0xaa, 0xbb, 0xcc]);
        let repr = RecordRepr::parse(&h).expect("valid header");
        assert_eq!(repr.content_type, ContentType::ApplicationData);
        assert_eq!(repr.buffer_len(), 16);
    }

    #[test]
    fn short_buffers_rejected_and_accessors_do_not_panic() {
        for n in 0..SAMPLE.len() {
            let h = RecordHeader::new_unchecked(&SAMPLE[..n]);
            assert!(h.check_len().is_err(), "len {n}");
            let _ = (
                h.content_type(),
                h.version(),
                h.epoch(),
                h.sequence(),
                h.length(),
            );
            assert!(h.payload().len() <= n.saturating_sub(HEADER_LEN));
        }
        assert_eq!(
            RecordHeader::new_checked(&SAMPLE[..5]).expect_err("must be rejected"),
            WireError::HeaderTruncated { len: 5 }
        );
        assert_eq!(
            RecordHeader::new_checked(&SAMPLE[..14]).expect_err("must be rejected"),
            WireError::LengthExceedsBuffer {
                length: 3,
                available: 1
            }
        );
    }

    #[test]
    fn parse_rejects_bad_type_version_and_length() {
        let mut b = SAMPLE;
        b[0] = 19;
        assert_eq!(
            RecordRepr::parse(&RecordHeader::new_unchecked(&b[..])),
            Err(WireError::UnknownContentType(19))
        );
        let mut b = SAMPLE;
        b[1] = 0x03;
        b[2] = 0x03;
        assert_eq!(
            RecordRepr::parse(&RecordHeader::new_unchecked(&b[..])),
            Err(WireError::UnsupportedVersion(0x0303))
        );
        let mut big = vec![0u8; HEADER_LEN + MAX_CIPHERTEXT_LEN + 1];
        big[..HEADER_LEN].copy_from_slice(&SAMPLE[..HEADER_LEN]);
        let len = u16::try_from(MAX_CIPHERTEXT_LEN + 1).expect("fits");
        big[11..13].copy_from_slice(&len.to_be_bytes());
        assert_eq!(
            RecordRepr::parse(&RecordHeader::new_unchecked(&big[..])),
            Err(WireError::RecordTooLong(len))
        );
    }

    #[test]
    fn emit_round_trips_and_checks() {
        let repr = RecordRepr {
            content_type: ContentType::Handshake,
            version: DTLS_1_0,
            epoch: 0xbeef,
            sequence: MAX_SEQUENCE,
            length: 0,
        };
        let mut buf = [0u8; HEADER_LEN];
        repr.emit_into(&mut buf).expect("buffer is large enough");
        assert_eq!(
            RecordRepr::parse(&RecordHeader::new_unchecked(&buf[..])),
            Ok(repr)
        );
        assert_eq!(
            repr.emit_into(&mut [0u8; 12]),
            Err(WireError::BufferTooSmall { len: 12, need: 13 })
        );
        let bad = RecordRepr {
            sequence: MAX_SEQUENCE + 1,
            ..repr
        };
        assert_eq!(
            bad.emit_into(&mut buf),
            Err(WireError::SequenceOutOfRange(MAX_SEQUENCE + 1))
        );
        let mut fast = [0u8; HEADER_LEN];
        write_header(
            &mut fast,
            ContentType::Handshake,
            DTLS_1_0,
            (0xbeef << 48) | MAX_SEQUENCE,
            0,
        );
        assert_eq!(fast, buf);
    }

    #[test]
    fn setters_on_short_buffer_write_nothing() {
        let mut b = [0u8; 4];
        let mut h = RecordHeader::new_unchecked(&mut b[..]);
        h.set_content_type(22);
        h.set_version(DTLS_1_2);
        h.set_epoch(7);
        h.set_sequence(9);
        h.set_length(1);
        assert!(h.payload_mut().is_empty());
        assert_eq!(b, [22, 0xfe, 0xfd, 0]);
    }
}
