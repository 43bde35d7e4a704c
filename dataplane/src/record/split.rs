//! Walking the records of one datagram.
//!
//! RFC 6347 §4.1.1: "Multiple DTLS records may be placed in a single datagram." Records
//! never span datagrams, so a record whose length field exceeds what remains of the
//! datagram (or a trailing piece shorter than a header) ends the walk; the bytes left are
//! dropped and reported by `dropped_bytes()`. Nothing is validated beyond lengths: content
//! type, version and epoch are the caller's to judge (see [`super::RecordRepr::parse`]).
//!
//! These walkers read every record with the 13-byte header. A datagram that may carry
//! tls12_cid(25) records (RFC 9146 §4: the CID sits before the length field) is walked with
//! [`super::v13::MixedRecords`] / [`super::v13::MixedRecordsMut`], which take the CID length.

use core::ops::Range;

use super::RecordHeader;

/// One record found by [`Records`]: where it lies in the datagram and its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordRef<'a> {
    /// Byte range of the whole record (header and fragment) in the datagram.
    pub range: Range<usize>,
    /// The record's bytes, exactly `13 + length` of them; `check_len` holds.
    pub header: RecordHeader<&'a [u8]>,
}

/// Length of the well-formed record at the start of `rest`, if there is one.
#[inline]
fn next_len(rest: &[u8]) -> Option<usize> {
    let header = RecordHeader::new_checked(rest).ok()?;
    Some(header.total_len())
}

/// Iterates the records of a datagram, read-only.
#[derive(Debug, Clone)]
pub struct Records<'a> {
    datagram: &'a [u8],
    offset: usize,
    dropped: usize,
}

impl<'a> Records<'a> {
    /// Starts a walk over `datagram`.
    pub fn new(datagram: &'a [u8]) -> Self {
        Self {
            datagram,
            offset: 0,
            dropped: 0,
        }
    }

    /// Bytes dropped so far because a record did not fit in what remained.
    pub fn dropped_bytes(&self) -> usize {
        self.dropped
    }

    /// Bytes consumed as well-formed records so far.
    pub fn consumed_bytes(&self) -> usize {
        self.offset.min(self.datagram.len()) - self.dropped
    }
}

impl<'a> Iterator for Records<'a> {
    type Item = RecordRef<'a>;

    fn next(&mut self) -> Option<Self::Item> {
        let rest = self.datagram.get(self.offset..)?;
        if rest.is_empty() {
            return None;
        }
        let Some(len) = next_len(rest) else {
            // RFC 6347 §4.1.1: records never span datagrams; the rest cannot be a record.
            self.dropped += rest.len();
            self.offset = self.datagram.len();
            return None;
        };
        let start = self.offset;
        self.offset += len;
        Some(RecordRef {
            range: start..self.offset,
            header: RecordHeader::new_unchecked(&rest[..len]),
        })
    }
}

/// Iterates the records of a datagram as disjoint mutable slices, so that each can be
/// opened in place with [`super::Opener::open`].
#[derive(Debug)]
pub struct RecordsMut<'a> {
    rest: &'a mut [u8],
    dropped: usize,
}

impl<'a> RecordsMut<'a> {
    /// Starts a walk over `datagram`.
    pub fn new(datagram: &'a mut [u8]) -> Self {
        Self {
            rest: datagram,
            dropped: 0,
        }
    }

    /// Bytes dropped so far because a record did not fit in what remained.
    pub fn dropped_bytes(&self) -> usize {
        self.dropped
    }
}

impl<'a> Iterator for RecordsMut<'a> {
    type Item = RecordHeader<&'a mut [u8]>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let rest = core::mem::take(&mut self.rest);
        let Some(len) = next_len(rest) else {
            // RFC 6347 §4.1.1: records never span datagrams; the rest cannot be a record.
            self.dropped += rest.len();
            return None;
        };
        let (record, tail) = rest.split_at_mut(len);
        self.rest = tail;
        Some(RecordHeader::new_unchecked(record))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::HEADER_LEN;

    fn record(len: u16, fill: u8) -> Vec<u8> {
        let mut v = vec![23, 0xfe, 0xfd, 0, 1, 0, 0, 0, 0, 0, 5];
        v.extend_from_slice(&len.to_be_bytes());
        v.extend(std::iter::repeat_n(fill, usize::from(len)));
        v
    }

    #[test]
    fn walks_all_records_and_drops_truncated_tail() {
        let mut d = record(3, 1);
        d.extend(record(0, 0));
        d.extend(record(20, 2));
        let good = d.len();
        let mut bad = record(10, 3);
        bad.truncate(HEADER_LEN + 4);
        d.extend(&bad);
        let mut it = Records::new(&d);
        let ranges: Vec<_> = it.by_ref().map(|r| r.range).collect();
        assert_eq!(ranges, vec![0..16, 16..29, 29..62]);
        assert_eq!(it.dropped_bytes(), d.len() - good);
        assert_eq!(it.consumed_bytes(), good);
        assert!(it.next().is_none());

        let mut m = d.clone();
        let mut it = RecordsMut::new(&mut m);
        let lens: Vec<_> = it.by_ref().map(|h| h.total_len()).collect();
        assert_eq!(lens, vec![16, 13, 33]);
        assert_eq!(it.dropped_bytes(), d.len() - good);
    }

    #[test]
    fn short_tail_is_dropped() {
        let mut d = record(2, 9);
        d.extend_from_slice(&[23, 0xfe]);
        let mut it = Records::new(&d);
        assert_eq!(it.next().map(|r| r.range), Some(0..15));
        assert!(it.next().is_none());
        assert_eq!(it.dropped_bytes(), 2);
        assert_eq!(Records::new(&[]).count(), 0);
    }
}
