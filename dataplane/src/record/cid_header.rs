//! The DTLS 1.2 record header with connection ID (RFC 9146 §4), smoltcp style like
//! [`super::RecordHeader`]: [`CidRecordHeader`] gives accessors over a byte buffer,
//! [`CidRecordRepr`] is the parsed, validated form.
//!
//! ```text
//! struct {
//!     ContentType outer_type = tls12_cid;   // 1 byte, 25
//!     ProtocolVersion version;              // 2 bytes
//!     uint16 epoch;                         // 2 bytes
//!     uint48 sequence_number;               // 6 bytes
//!     opaque cid[cid_length];               // the negotiated length
//!     uint16 length;                        // 2 bytes
//!     opaque enc_content[DTLSCiphertext.length];
//! } DTLSCiphertext;
//! ```
//!
//! RFC 9146 §4: the CID length is not on the wire; the receiver knows it from the
//! negotiation (it chose the CID its peers send). So every constructor here takes it.
//! The rule that delimits a record is the one of the mixed-datagram walker
//! ([`super::v13::MixedRecords`], `MixedKind::Dtls12Cid`): a CID of at most 255 bytes
//! (RFC 9146 §3, `opaque cid<0..2^8-1>`), the length field at byte `11 + cid_len`, and
//! the whole record inside the buffer. `tests/proptest_cid12.rs` checks both agree.
//!
//! Like [`super::RecordHeader`], no accessor panics, whatever the buffer: a field outside
//! it reads as 0 (the CID as empty), a setter outside it writes nothing.

use super::v13::MAX_CID_LEN;
use super::{DTLS_1_2, MAX_CIPHERTEXT_LEN, MAX_SEQUENCE};

/// RFC 9146 §4: the outer content type of a record with connection ID, tls12_cid(25),
/// from the protocol vocabulary.
pub use dtls_proto::TLS12_CID;

/// Length of the fixed part of a tls12_cid header: type(1) version(2) epoch(2)
/// sequence(6) length(2); the header is this plus the CID length.
pub const CID_HEADER_FIXED_LEN: usize = 13;

/// Where the CID starts: after type, version, epoch and sequence number.
const CID_AT: usize = 11;

/// Why a tls12_cid header could not be parsed or emitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CidWireError {
    /// A CID length no negotiation can produce (RFC 9146 §3: at most 255 bytes).
    #[error("connection ID length {0} exceeds 255")]
    CidTooLong(usize),
    /// Fewer bytes than the header with this CID length.
    #[error("tls12_cid header truncated: {len} bytes, need {need}")]
    HeaderTruncated {
        /// Bytes available.
        len: usize,
        /// Header length: 13 plus the CID length.
        need: usize,
    },
    /// The length field claims more bytes than the buffer holds.
    #[error("record length {length} exceeds the {available} bytes that follow the header")]
    LengthExceedsBuffer {
        /// The header's length field.
        length: u16,
        /// Bytes after the header.
        available: usize,
    },
    /// The first byte is not tls12_cid(25).
    #[error("outer content type {0} is not tls12_cid(25)")]
    NotCidRecord(u8),
    /// The version is not DTLS 1.2 (RFC 9146 is an extension of DTLS 1.2 only).
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

/// Accessors over the bytes of one tls12_cid record (header followed by the fragment),
/// for a given CID length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CidRecordHeader<T: AsRef<[u8]>> {
    buffer: T,
    cid_len: usize,
}

impl<T: AsRef<[u8]>> CidRecordHeader<T> {
    /// Wraps a buffer holding a record with a `cid_len`-byte CID, without checking it.
    /// Accessors still never panic.
    pub const fn new_unchecked(buffer: T, cid_len: usize) -> Self {
        Self { buffer, cid_len }
    }

    /// Wraps a buffer after [`Self::check_len`] succeeded on it.
    pub fn new_checked(buffer: T, cid_len: usize) -> Result<Self, CidWireError> {
        let header = Self::new_unchecked(buffer, cid_len);
        header.check_len()?;
        Ok(header)
    }

    /// Checks the CID length is at most 255 and the buffer holds the header and the
    /// `length` bytes it announces. Bytes beyond the record are allowed (the rest of a
    /// datagram). Nothing else is judged: see [`CidRecordRepr::parse`].
    pub fn check_len(&self) -> Result<(), CidWireError> {
        if self.cid_len > MAX_CID_LEN {
            return Err(CidWireError::CidTooLong(self.cid_len));
        }
        let len = self.buffer.as_ref().len();
        let need = self.header_len();
        if len < need {
            return Err(CidWireError::HeaderTruncated { len, need });
        }
        let length = self.length();
        let available = len - need;
        if usize::from(length) > available {
            return Err(CidWireError::LengthExceedsBuffer { length, available });
        }
        Ok(())
    }

    /// Gives the buffer back.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The CID length this header was read with.
    pub const fn cid_len(&self) -> usize {
        self.cid_len
    }

    /// Header length: `13 + cid_len` (saturating, for a CID length no check admitted).
    pub const fn header_len(&self) -> usize {
        CID_HEADER_FIXED_LEN.saturating_add(self.cid_len)
    }

    /// Header plus fragment length.
    pub fn total_len(&self) -> usize {
        self.header_len().saturating_add(usize::from(self.length()))
    }

    fn read<const N: usize>(&self, start: usize) -> [u8; N] {
        let mut out = [0u8; N];
        if let Some(src) = start
            .checked_add(N)
            .and_then(|end| self.buffer.as_ref().get(start..end))
        {
            out.copy_from_slice(src);
        }
        out
    }

    /// The raw outer content type byte (25 in a well-formed record).
    pub fn content_type(&self) -> u8 {
        self.buffer.as_ref().first().copied().unwrap_or(0)
    }

    /// The record-layer version (0xfefd for DTLS 1.2).
    pub fn version(&self) -> u16 {
        u16::from_be_bytes(self.read(1))
    }

    /// The epoch.
    pub fn epoch(&self) -> u16 {
        u16::from_be_bytes(self.read(3))
    }

    /// The 48-bit sequence number.
    pub fn sequence(&self) -> u64 {
        self.epoch_and_sequence() & MAX_SEQUENCE
    }

    /// The epoch and sequence number as one 64-bit value, as on the wire.
    pub fn epoch_and_sequence(&self) -> u64 {
        u64::from_be_bytes(self.read(3))
    }

    /// The CID: `cid_len` bytes after the sequence number, empty if the buffer is shorter.
    pub fn cid(&self) -> &[u8] {
        CID_AT
            .checked_add(self.cid_len)
            .and_then(|end| self.buffer.as_ref().get(CID_AT..end))
            .unwrap_or(&[])
    }

    /// The fragment length field (after the CID).
    pub fn length(&self) -> u16 {
        match CID_AT.checked_add(self.cid_len) {
            Some(at) => u16::from_be_bytes(self.read(at)),
            None => 0,
        }
    }

    /// The fragment: `length` bytes after the header, cut short if the buffer is shorter.
    pub fn payload(&self) -> &[u8] {
        let rest = self.buffer.as_ref().get(self.header_len()..).unwrap_or(&[]);
        let n = rest.len().min(usize::from(self.length()));
        &rest[..n]
    }
}

/// A parsed, validated tls12_cid header; the CID borrows the record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CidRecordRepr<'a> {
    /// The epoch.
    pub epoch: u16,
    /// The 48-bit sequence number.
    pub sequence: u64,
    /// The connection ID (at most 255 bytes).
    pub cid: &'a [u8],
    /// The fragment length.
    pub length: u16,
}

impl<'a> CidRecordRepr<'a> {
    /// Parses and validates a header: lengths checked against the buffer, outer type
    /// tls12_cid(25), version DTLS 1.2, length at most 2^14 + 2048.
    pub fn parse(header: &CidRecordHeader<&'a [u8]>) -> Result<Self, CidWireError> {
        header.check_len()?;
        if header.content_type() != TLS12_CID {
            return Err(CidWireError::NotCidRecord(header.content_type()));
        }
        let version = header.version();
        if version != DTLS_1_2 {
            return Err(CidWireError::UnsupportedVersion(version));
        }
        let length = header.length();
        // RFC 5246 §6.2.3: "The length MUST NOT exceed 2^14 + 2048."
        if usize::from(length) > MAX_CIPHERTEXT_LEN {
            return Err(CidWireError::RecordTooLong(length));
        }
        Ok(Self {
            epoch: header.epoch(),
            sequence: header.sequence(),
            // check_len: cid_len <= 255 and the buffer holds the whole header.
            cid: header
                .buffer
                .get(CID_AT..CID_AT + header.cid_len)
                .unwrap_or(&[]),
            length,
        })
    }

    /// Header length: `13 + cid.len()`.
    pub fn header_len(&self) -> usize {
        CID_HEADER_FIXED_LEN + self.cid.len()
    }

    /// Header plus fragment length.
    pub fn buffer_len(&self) -> usize {
        self.header_len() + usize::from(self.length)
    }

    /// Writes the header (outer type 25, version DTLS 1.2) at the start of `buf`.
    pub fn emit_into(&self, buf: &mut [u8]) -> Result<(), CidWireError> {
        if self.cid.len() > MAX_CID_LEN {
            return Err(CidWireError::CidTooLong(self.cid.len()));
        }
        if self.sequence > MAX_SEQUENCE {
            return Err(CidWireError::SequenceOutOfRange(self.sequence));
        }
        let need = self.header_len();
        let len = buf.len();
        let header = buf
            .get_mut(..need)
            .ok_or(CidWireError::BufferTooSmall { len, need })?;
        let epoch_seq = (u64::from(self.epoch) << 48) | self.sequence;
        write_cid_header(header, DTLS_1_2, epoch_seq, self.cid, self.length);
        Ok(())
    }
}

/// Writes a tls12_cid header into `header`, which must be exactly `13 + cid.len()` bytes
/// (callers check that once for the whole record); writes nothing otherwise.
#[inline]
pub(crate) fn write_cid_header(
    header: &mut [u8],
    version: u16,
    epoch_and_sequence: u64,
    cid: &[u8],
    length: u16,
) {
    let Some((fixed, rest)) = header.split_first_chunk_mut::<CID_AT>() else {
        return;
    };
    let Some((cid_out, length_out)) = rest.split_at_mut_checked(cid.len()) else {
        return;
    };
    let Ok(length_out) = <&mut [u8; 2]>::try_from(length_out) else {
        return;
    };
    fixed[0] = TLS12_CID;
    fixed[1..3].copy_from_slice(&version.to_be_bytes());
    fixed[3..11].copy_from_slice(&epoch_and_sequence.to_be_bytes());
    cid_out.copy_from_slice(cid);
    *length_out = length.to_be_bytes();
}

#[cfg(test)]
mod tests {
    use super::*;

    const CID: [u8; 3] = [0xc1, 0xc2, 0xc3];
    const SAMPLE: [u8; 19] = [
        25, 0xfe, 0xfd, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x01, 0x02, 0xc1, 0xc2, 0xc3, 0x00,
        0x03, 0xaa, 0xbb, 0xcc,
    ];

    #[test]
    fn accessors_read_fields() {
        let h = CidRecordHeader::new_checked(&SAMPLE[..], 3).expect("well formed");
        assert_eq!(h.content_type(), 25);
        assert_eq!(h.version(), DTLS_1_2);
        assert_eq!(h.epoch(), 1);
        assert_eq!(h.sequence(), 0x0102);
        assert_eq!(h.epoch_and_sequence(), (1 << 48) | 0x0102);
        assert_eq!(h.cid(), &CID);
        assert_eq!(h.length(), 3);
        assert_eq!(h.header_len(), 16);
        assert_eq!(h.total_len(), 19);
        assert_eq!(h.payload(), &[0xaa, 0xbb, 0xcc]);
        let repr = CidRecordRepr::parse(&h).expect("valid");
        assert_eq!(
            repr,
            CidRecordRepr {
                epoch: 1,
                sequence: 0x0102,
                cid: &CID,
                length: 3
            }
        );
        assert_eq!(repr.buffer_len(), 19);
        let mut out = [0u8; 16];
        repr.emit_into(&mut out).expect("fits");
        assert_eq!(out, SAMPLE[..16]);
    }

    #[test]
    fn short_buffers_and_wrong_cid_lengths_never_panic() {
        for cid_len in [0, 1, 3, 4, 16, 255, 256, usize::MAX] {
            for n in 0..=SAMPLE.len() {
                let h = CidRecordHeader::new_unchecked(&SAMPLE[..n], cid_len);
                let _ = (
                    h.content_type(),
                    h.version(),
                    h.epoch(),
                    h.sequence(),
                    h.cid(),
                    h.length(),
                    h.payload(),
                    h.total_len(),
                    h.check_len(),
                    CidRecordRepr::parse(&h),
                );
                if n < SAMPLE.len() && cid_len == 3 {
                    assert!(h.check_len().is_err(), "len {n}");
                }
            }
        }
        assert_eq!(
            CidRecordHeader::new_checked(&SAMPLE[..], 256).expect_err("too long"),
            CidWireError::CidTooLong(256)
        );
        assert_eq!(
            CidRecordHeader::new_checked(&SAMPLE[..10], 3).expect_err("truncated"),
            CidWireError::HeaderTruncated { len: 10, need: 16 }
        );
        assert_eq!(
            CidRecordHeader::new_checked(&SAMPLE[..17], 3).expect_err("short body"),
            CidWireError::LengthExceedsBuffer {
                length: 3,
                available: 1
            }
        );
        // Read with 4 CID bytes, the length field is 0x03aa: more than the buffer.
        assert!(matches!(
            CidRecordHeader::new_checked(&SAMPLE[..], 4),
            Err(CidWireError::LengthExceedsBuffer { length: 0x03aa, .. })
        ));
    }

    #[test]
    fn parse_rejects_bad_type_version_and_length() {
        let mut b = SAMPLE;
        b[0] = 23;
        assert_eq!(
            CidRecordRepr::parse(&CidRecordHeader::new_unchecked(&b[..], 3)),
            Err(CidWireError::NotCidRecord(23))
        );
        let mut b = SAMPLE;
        b[2] = 0xff;
        assert_eq!(
            CidRecordRepr::parse(&CidRecordHeader::new_unchecked(&b[..], 3)),
            Err(CidWireError::UnsupportedVersion(0xfeff))
        );
        let too_long = MAX_CIPHERTEXT_LEN + 1;
        let mut big = vec![0u8; 16 + too_long];
        big[..16].copy_from_slice(&SAMPLE[..16]);
        big[14..16].copy_from_slice(&(too_long as u16).to_be_bytes());
        assert_eq!(
            CidRecordRepr::parse(&CidRecordHeader::new_unchecked(&big[..], 3)),
            Err(CidWireError::RecordTooLong(too_long as u16))
        );
    }

    #[test]
    fn emit_checks_its_inputs() {
        let repr = CidRecordRepr {
            epoch: 0xbeef,
            sequence: MAX_SEQUENCE,
            cid: &CID,
            length: 0,
        };
        assert_eq!(
            repr.emit_into(&mut [0u8; 15]),
            Err(CidWireError::BufferTooSmall { len: 15, need: 16 })
        );
        let bad = CidRecordRepr {
            sequence: MAX_SEQUENCE + 1,
            ..repr
        };
        assert_eq!(
            bad.emit_into(&mut [0u8; 16]),
            Err(CidWireError::SequenceOutOfRange(MAX_SEQUENCE + 1))
        );
        let long = [0u8; 256];
        let bad = CidRecordRepr { cid: &long, ..repr };
        assert_eq!(
            bad.emit_into(&mut [0u8; 300]),
            Err(CidWireError::CidTooLong(256))
        );
        let mut buf = [0u8; 16];
        repr.emit_into(&mut buf).expect("fits");
        let h = CidRecordHeader::new_checked(&buf[..], 3).expect("well formed");
        assert_eq!(CidRecordRepr::parse(&h), Ok(repr));
        // A header slice of the wrong size is left alone.
        let mut wrong = [0x55u8; 17];
        write_cid_header(&mut wrong, DTLS_1_2, 1, &CID, 0);
        assert_eq!(wrong, [0x55; 17]);
    }
}
