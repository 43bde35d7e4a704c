//! Walking the records of one DTLS 1.3 datagram, where unified-header records (protected)
//! and 13-byte DTLSPlaintext records (epoch 0 handshake, alerts and ACKs before keys) mix.
//!
//! RFC 9147 §4.1: "If the first byte is alert(21), handshake(22), or ack(proposed, 26), the
//! record MUST be interpreted as a DTLSPlaintext record. If the first byte is any other
//! value, then receivers MUST check to see if the leading bits of the first byte are 001.
//! If so, the implementation MUST process the record as DTLSCiphertext ... Otherwise, the
//! record MUST be rejected as if it had failed deprotection". Figure 5 of the same section
//! adds the values of earlier versions on the same port: 20, 23 and 24 (13-byte header)
//! and tls12_cid(25) (RFC 9146 §4: the CID sits between sequence number and length).
//! The walker delimits all of these and says which is which; judging them is the caller's.
//!
//! RFC 9147 §4.3: "Records MUST NOT span datagrams", so a record whose header or length
//! does not fit what remains, or a first byte that names no record format, ends the walk;
//! the rest is reported by `dropped_bytes()`. A record without length field (L = 0) runs to
//! the end of the datagram and is the last one.
//!
//! RFC 9147 §4: "If the second or later record has a connection ID which does not
//! correspond to the same association used for previous records, the rest of the datagram
//! MUST be discarded." The walkers keep the CID of the first unified-header record that
//! carries one and end the walk at a unified-header record with another CID (the rest
//! counts as dropped). Records without CID are the caller's to match by address.

use core::ops::Range;

use super::{MAX_CID_LEN, UnifiedHeader, is_unified};
use crate::record::RecordHeader;

use dtls_proto::{ACK, TLS12_CID};

/// Which record format a walked record has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MixedKind {
    /// The 13-byte DTLSPlaintext header (first byte 20..=24 or 26); the byte is the content
    /// type. In DTLS 1.3 only alert(21), handshake(22) and ack(26) are valid here.
    Plaintext(u8),
    /// A DTLS 1.2 record with connection ID, tls12_cid(25) (RFC 9146 §4), delimited with the
    /// walker's CID length.
    Dtls12Cid,
    /// A DTLSCiphertext record with a unified header (first byte `0b001xxxxx`).
    Ciphertext(UnifiedHeader),
}

/// One record found by [`MixedRecords`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MixedRecord<'a> {
    /// Byte range of the whole record in the datagram.
    pub range: Range<usize>,
    /// The record's format.
    pub kind: MixedKind,
    /// The record's bytes (header and body).
    pub bytes: &'a [u8],
}

/// One record found by [`MixedRecordsMut`], to be opened in place.
#[derive(Debug, PartialEq, Eq)]
pub struct MixedRecordMut<'a> {
    /// The record's format.
    pub kind: MixedKind,
    /// The record's bytes (header and body).
    pub bytes: &'a mut [u8],
}

/// The CID of the first unified-header record that carried one, copied (so the mutable
/// walker, which hands out its records, can still compare).
#[derive(Debug, Clone)]
struct FirstCid {
    seen: bool,
    len: usize,
    bytes: [u8; MAX_CID_LEN],
}

impl FirstCid {
    const fn new() -> Self {
        Self {
            seen: false,
            len: 0,
            bytes: [0; MAX_CID_LEN],
        }
    }

    /// Whether `record` may follow the records before it: it carries no CID in a unified
    /// header, or the same CID as the first one that did.
    fn admits(&mut self, kind: &MixedKind, record: &[u8]) -> bool {
        let MixedKind::Ciphertext(header) = kind else {
            return true;
        };
        let Some(cid) = header.cid(record) else {
            return true;
        };
        if self.seen {
            return self.bytes.get(..self.len) == Some(cid);
        }
        let Some(slot) = self.bytes.get_mut(..cid.len()) else {
            return false;
        };
        slot.copy_from_slice(cid);
        self.len = cid.len();
        self.seen = true;
        true
    }
}

/// The format and length of the record at the start of `rest`, if it is well formed.
#[inline]
fn next(rest: &[u8], cid_len: usize) -> Option<(MixedKind, usize)> {
    let first = *rest.first()?;
    match first {
        20..=24 | ACK => {
            let header = RecordHeader::new_checked(rest).ok()?;
            Some((MixedKind::Plaintext(first), header.total_len()))
        }
        TLS12_CID => {
            // RFC 9146 §4: type(1) version(2) epoch(2) sequence(6) cid(cid_len) length(2),
            // the CID at most 255 bytes (RFC 9146 §3).
            if cid_len > MAX_CID_LEN {
                return None;
            }
            let length_at = 11 + cid_len;
            let header_len = length_at + 2;
            let length = match rest.get(length_at..header_len)? {
                &[hi, lo] => usize::from(u16::from_be_bytes([hi, lo])),
                _ => return None,
            };
            let total = header_len + length;
            (total <= rest.len()).then_some((MixedKind::Dtls12Cid, total))
        }
        _ if is_unified(first) => {
            let header = UnifiedHeader::parse(rest, cid_len).ok()?;
            Some((MixedKind::Ciphertext(header), header.record_len))
        }
        _ => None,
    }
}

/// Iterates the records of a datagram, read-only.
#[derive(Debug, Clone)]
pub struct MixedRecords<'a> {
    datagram: &'a [u8],
    cid_len: usize,
    offset: usize,
    dropped: usize,
    first_cid: FirstCid,
}

impl<'a> MixedRecords<'a> {
    /// Starts a walk over `datagram`; `cid_len` is the connection ID length negotiated for
    /// records to this receiver (used for records with the C bit and for tls12_cid).
    pub fn new(datagram: &'a [u8], cid_len: usize) -> Self {
        Self {
            datagram,
            cid_len,
            offset: 0,
            dropped: 0,
            first_cid: FirstCid::new(),
        }
    }

    /// Bytes dropped because what remained was not a well-formed record.
    pub fn dropped_bytes(&self) -> usize {
        self.dropped
    }
}

impl<'a> Iterator for MixedRecords<'a> {
    type Item = MixedRecord<'a>;

    fn next(&mut self) -> Option<Self::Item> {
        let rest = self.datagram.get(self.offset..)?;
        if rest.is_empty() {
            return None;
        }
        let Some((kind, len)) = next(rest, self.cid_len)
            .filter(|(kind, len)| self.first_cid.admits(kind, rest.get(..*len).unwrap_or(&[])))
        else {
            // RFC 9147 §4.3: records never span datagrams; the rest cannot be a record.
            // RFC 9147 §4: after a record of another association, the rest is discarded.
            self.dropped += rest.len();
            self.offset = self.datagram.len();
            return None;
        };
        let start = self.offset;
        self.offset += len;
        Some(MixedRecord {
            range: start..self.offset,
            kind,
            bytes: rest.get(..len)?,
        })
    }
}

/// Iterates the records of a datagram as disjoint mutable slices, so that each protected
/// one can be opened in place with [`super::Opener13::open`].
#[derive(Debug)]
pub struct MixedRecordsMut<'a> {
    rest: &'a mut [u8],
    cid_len: usize,
    dropped: usize,
    first_cid: FirstCid,
}

impl<'a> MixedRecordsMut<'a> {
    /// Starts a walk over `datagram` (see [`MixedRecords::new`]).
    pub fn new(datagram: &'a mut [u8], cid_len: usize) -> Self {
        Self {
            rest: datagram,
            cid_len,
            dropped: 0,
            first_cid: FirstCid::new(),
        }
    }

    /// Bytes dropped because what remained was not a well-formed record.
    pub fn dropped_bytes(&self) -> usize {
        self.dropped
    }
}

impl<'a> Iterator for MixedRecordsMut<'a> {
    type Item = MixedRecordMut<'a>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let rest = core::mem::take(&mut self.rest);
        let Some((kind, len)) = next(rest, self.cid_len)
            .filter(|(kind, len)| self.first_cid.admits(kind, rest.get(..*len).unwrap_or(&[])))
        else {
            // RFC 9147 §4.3: records never span datagrams; the rest cannot be a record.
            // RFC 9147 §4: after a record of another association, the rest is discarded.
            self.dropped += rest.len();
            return None;
        };
        let available = rest.len();
        let Some((bytes, tail)) = rest.split_at_mut_checked(len) else {
            // Unreachable: `next` returns lengths within `rest`. Drop rather than panic.
            self.dropped += available;
            return None;
        };
        self.rest = tail;
        Some(MixedRecordMut { kind, bytes })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::v13::{HeaderForm, SequenceLen};

    fn plaintext(ct: u8, len: u16) -> Vec<u8> {
        let mut v = vec![ct, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 1];
        v.extend_from_slice(&len.to_be_bytes());
        v.extend(std::iter::repeat_n(0xaa, usize::from(len)));
        v
    }

    fn ciphertext(form: &HeaderForm<'_>, body: usize) -> Vec<u8> {
        let mut v = vec![0u8; form.header_len() + body];
        form.emit(1, 7, body, &mut v).expect("fits");
        v
    }

    fn tls12_cid(cid: &[u8], len: u16) -> Vec<u8> {
        let mut v = vec![25, 0xfe, 0xfd, 0, 1, 0, 0, 0, 0, 0, 1];
        v.extend_from_slice(cid);
        v.extend_from_slice(&len.to_be_bytes());
        v.extend(std::iter::repeat_n(0xbb, usize::from(len)));
        v
    }

    #[test]
    fn walks_mixed_records_and_stops_after_lengthless() {
        let cid = [9u8, 8, 7, 6];
        let mut d = plaintext(22, 5);
        d.extend(ciphertext(&HeaderForm::default(), 17));
        d.extend(plaintext(26, 0));
        d.extend(tls12_cid(&cid, 3));
        d.extend(ciphertext(&HeaderForm::with_cid(&cid), 20));
        let lengthless = HeaderForm {
            cid: None,
            sequence: SequenceLen::Bits8,
            length: false,
        };
        // A lengthless record takes the rest, whatever follows it.
        let mut last = ciphertext(&lengthless, 0);
        last.extend(plaintext(21, 2));
        d.extend(&last);

        let mut it = MixedRecords::new(&d, cid.len());
        let got: Vec<_> = it.by_ref().map(|r| (r.range, r.kind)).collect();
        assert_eq!(it.dropped_bytes(), 0);
        let kinds: Vec<_> = got
            .iter()
            .map(|(_, k)| match k {
                MixedKind::Plaintext(t) => u32::from(*t),
                MixedKind::Dtls12Cid => 25,
                MixedKind::Ciphertext(h) => 100 + h.header_len as u32,
            })
            .collect();
        assert_eq!(kinds, vec![22, 105, 26, 25, 109, 102]);
        let ranges: Vec<_> = got.into_iter().map(|(r, _)| r).collect();
        assert_eq!(
            ranges,
            vec![0..18, 18..40, 40..53, 53..73, 73..102, 102..d.len()]
        );

        let mut m = d.clone();
        let mut it = MixedRecordsMut::new(&mut m, cid.len());
        let lens: Vec<_> = it.by_ref().map(|r| r.bytes.len()).collect();
        assert_eq!(lens, vec![18, 22, 13, 20, 29, d.len() - 102]);
        assert_eq!(it.dropped_bytes(), 0);
    }

    #[test]
    fn a_record_with_another_cid_ends_the_walk() {
        let (a, b) = ([1u8, 2, 3], [1u8, 2, 4]);
        let mut d = plaintext(22, 1);
        d.extend(ciphertext(&HeaderForm::default(), 17));
        d.extend(ciphertext(&HeaderForm::with_cid(&a), 17));
        d.extend(ciphertext(&HeaderForm::default(), 17));
        d.extend(ciphertext(&HeaderForm::with_cid(&a), 17));
        let good = d.len();
        d.extend(ciphertext(&HeaderForm::with_cid(&b), 17));
        d.extend(ciphertext(&HeaderForm::with_cid(&a), 17));
        let mut it = MixedRecords::new(&d, 3);
        assert_eq!(it.by_ref().count(), 5);
        assert_eq!(it.dropped_bytes(), d.len() - good);
        let mut m = d.clone();
        let mut it = MixedRecordsMut::new(&mut m, 3);
        assert_eq!(it.by_ref().count(), 5);
        assert_eq!(it.dropped_bytes(), d.len() - good);
    }

    #[test]
    fn unknown_first_byte_and_overlong_length_end_the_walk() {
        for bad_first in [0u8, 19, 27, 31, 64, 0x80, 0xff] {
            let mut d = plaintext(22, 1);
            d.push(bad_first);
            d.extend(plaintext(22, 1));
            let mut it = MixedRecords::new(&d, 0);
            assert_eq!(it.by_ref().count(), 1, "first byte {bad_first}");
            assert_eq!(it.dropped_bytes(), 15);
        }
        let mut d = ciphertext(&HeaderForm::default(), 4);
        d.truncate(d.len() - 1);
        let mut it = MixedRecords::new(&d, 0);
        assert_eq!(it.next(), None);
        assert_eq!(it.dropped_bytes(), 8);
        // A CID length no negotiation can produce delimits nothing (and does not overflow).
        for cid_len in [256, usize::MAX] {
            let d = tls12_cid(&[1, 2], 3);
            assert_eq!(MixedRecords::new(&d, cid_len).count(), 0);
            let mut d = ciphertext(&HeaderForm::with_cid(&[1, 2]), 3);
            assert_eq!(MixedRecordsMut::new(&mut d, cid_len).count(), 0);
        }
        let mut d = tls12_cid(&[1, 2], 3);
        d.pop();
        let mut m = d.clone();
        let mut it = MixedRecordsMut::new(&mut m, 2);
        assert_eq!(it.next(), None);
        assert_eq!(it.dropped_bytes(), d.len());
        assert_eq!(MixedRecords::new(&[], 0).count(), 0);
    }
}
