//! The engine's record layer: epochs as data.
//!
//! [`RecordWriter`] holds a small table of write epochs, each with its own sequence
//! numbers and, for every epoch but the plaintext epoch 0, its sealer; the epoch our
//! alerts go out in is a number in it. [`RecordReader`] holds the read epochs: epoch 0 is
//! plaintext, every other epoch has an opener with its replay window, and records of the
//! next epoch that arrive before its keys wait in it. Nothing here knows which handshake
//! installs which epoch: DTLS 1.2 has epochs 0 and 1 (RFC 6347 §4.1: "The epoch number is initially zero
//! and is incremented each time a ChangeCipherSpec message is sent"), DTLS 1.3 numbers
//! 0 (plaintext), 1 (early data), 2 (handshake) and 3 and up (application data)
//! (RFC 9147 §6.1), and both write through the same table.

use dataplane::record::{ContentType, HEADER_LEN, Opener, RecordHeader, RecordRepr, Sealer};

use crate::error::HandshakeError;

/// The record-layer version we write (RFC 6347 §4.1: DTLS 1.2 is {254, 253}).
pub(crate) const RECORD_VERSION: u16 = dataplane::record::DTLS_1_2;

/// How the records of one write epoch are protected.
#[derive(Debug)]
enum WriteProtection {
    /// Epoch 0: plaintext records, numbered by this counter.
    Plaintext { next_sequence: u64 },
    /// A keyed epoch: the sealer numbers its records.
    Sealed(Sealer),
}

/// One write epoch.
#[derive(Debug)]
struct WriteEpoch {
    epoch: u16,
    protection: WriteProtection,
    /// The engine never writes a record of this epoch at or past this sequence number:
    /// the data plane continues from it (see [`crate::SessionKeys::write`]).
    limit: u64,
}

impl WriteEpoch {
    fn next_sequence(&self) -> u64 {
        match &self.protection {
            WriteProtection::Plaintext { next_sequence } => *next_sequence,
            WriteProtection::Sealed(sealer) => sealer.next_sequence(),
        }
    }
}

/// Write state: the table of write epochs and the current one.
#[derive(Debug)]
pub(crate) struct RecordWriter {
    /// Installed epochs in ascending order; epoch 0 (plaintext) is always first.
    epochs: Vec<WriteEpoch>,
    /// The epoch our own records (alerts) go out in when the caller names none.
    current: u16,
}

impl RecordWriter {
    /// A writer with only the plaintext epoch 0, whose first record carries
    /// `first_sequence`.
    pub(crate) fn new(first_sequence: u64) -> Self {
        Self {
            epochs: vec![WriteEpoch {
                epoch: 0,
                protection: WriteProtection::Plaintext {
                    next_sequence: first_sequence,
                },
                limit: u64::MAX,
            }],
            current: 0,
        }
    }

    /// The newest installed epoch.
    pub(crate) fn newest_epoch(&self) -> u16 {
        self.epochs.last().map_or(0, |e| e.epoch)
    }

    /// The epoch after the newest installed one: where the next keys go.
    pub(crate) fn next_epoch(&self) -> u16 {
        self.newest_epoch().saturating_add(1)
    }

    /// Installs the write state of `sealer`'s epoch (replacing any state of that epoch).
    /// The current epoch does not change: that is the handshake's decision.
    pub(crate) fn install(&mut self, sealer: Sealer) {
        let epoch = sealer.epoch();
        let entry = WriteEpoch {
            epoch,
            protection: WriteProtection::Sealed(sealer),
            limit: u64::MAX,
        };
        match self.epochs.binary_search_by_key(&epoch, |e| e.epoch) {
            Ok(at) => self.epochs[at] = entry,
            Err(at) => self.epochs.insert(at, entry),
        }
    }

    /// The epoch our alerts go out in.
    pub(crate) fn current_epoch(&self) -> u16 {
        self.current
    }

    /// Moves the current epoch up to `epoch` (after the handshake switched to it, e.g. on
    /// sending ChangeCipherSpec); it never goes back. Records of an epoch that is not
    /// installed are never written.
    pub(crate) fn advance_current_epoch(&mut self, epoch: u16) {
        self.current = self.current.max(epoch);
    }

    /// The sequence number the next record of `epoch` would carry.
    #[cfg(test)]
    pub(crate) fn next_sequence(&self, epoch: u16) -> Option<u64> {
        self.find(epoch).map(WriteEpoch::next_sequence)
    }

    /// Keeps the next `count` sequence numbers of `epoch` for the engine and returns the
    /// first one past them, from which the data plane continues; the engine writes no
    /// record of `epoch` from there on. `None` when `epoch` is not installed.
    pub(crate) fn reserve(&mut self, epoch: u16, count: u64) -> Option<u64> {
        let entry = self.find_mut(epoch)?;
        let limit = entry.next_sequence().saturating_add(count);
        entry.limit = limit;
        Some(limit)
    }

    /// Bytes a record of `epoch` adds around its plaintext.
    pub(crate) fn overhead(&self, epoch: u16) -> usize {
        match self.find(epoch).map(|e| &e.protection) {
            Some(WriteProtection::Sealed(sealer)) => HEADER_LEN + sealer.overhead(),
            Some(WriteProtection::Plaintext { .. }) | None => HEADER_LEN,
        }
    }

    fn find(&self, epoch: u16) -> Option<&WriteEpoch> {
        self.epochs.iter().find(|e| e.epoch == epoch)
    }

    fn find_mut(&mut self, epoch: u16) -> Option<&mut WriteEpoch> {
        self.epochs.iter_mut().find(|e| e.epoch == epoch)
    }

    /// Appends one record of `epoch` with `parts` concatenated as its plaintext.
    pub(crate) fn push_record(
        &mut self,
        datagram: &mut Vec<u8>,
        content_type: ContentType,
        epoch: u16,
        parts: &[&[u8]],
    ) -> Result<(), HandshakeError> {
        let entry = self.find_mut(epoch).ok_or(HandshakeError::Internal {
            what: "record of an epoch without write state",
        })?;
        if entry.next_sequence() >= entry.limit {
            return Err(HandshakeError::SequenceExhausted);
        }
        let plaintext_len: usize = parts.iter().map(|p| p.len()).sum();
        let start = datagram.len();
        match &mut entry.protection {
            WriteProtection::Plaintext { next_sequence } => {
                let length =
                    u16::try_from(plaintext_len).map_err(|_| HandshakeError::Internal {
                        what: "record too long",
                    })?;
                let repr = RecordRepr {
                    content_type,
                    version: RECORD_VERSION,
                    epoch,
                    sequence: *next_sequence,
                    length,
                };
                datagram.resize(start + HEADER_LEN, 0);
                repr.emit_into(&mut datagram[start..])
                    .map_err(|_| HandshakeError::SequenceExhausted)?;
                *next_sequence += 1;
                for p in parts {
                    datagram.extend_from_slice(p);
                }
            }
            WriteProtection::Sealed(sealer) => {
                let offset = sealer.plaintext_offset();
                let total = HEADER_LEN + sealer.overhead() + plaintext_len;
                datagram.resize(start + total, 0);
                let mut at = start + offset;
                for p in parts {
                    datagram[at..at + p.len()].copy_from_slice(p);
                    at += p.len();
                }
                let len = sealer
                    .seal(
                        content_type,
                        RECORD_VERSION,
                        &mut datagram[start..],
                        plaintext_len,
                    )
                    .map_err(|_| HandshakeError::SequenceExhausted)?;
                datagram.truncate(start + len);
            }
        }
        Ok(())
    }
}

/// How many records of the next read epoch, received before its keys, are kept for when
/// the keys arrive (a legitimate reorder, such as a Finished before its ChangeCipherSpec).
const MAX_EARLY_RECORDS: usize = 8;

/// Read state: the table of keyed read epochs (epoch 0 is plaintext and needs no state
/// here) and the records that arrived early for the next one.
#[derive(Debug, Default)]
pub(crate) struct RecordReader {
    /// Openers of the installed epochs in ascending order, each with its replay window.
    epochs: Vec<Opener>,
    /// Whole records (header included) of [`RecordReader::next_epoch`].
    early: Vec<Vec<u8>>,
}

impl RecordReader {
    /// A reader of plaintext epoch 0 only.
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// The newest epoch we can read (0 before any keys).
    pub(crate) fn newest_epoch(&self) -> u16 {
        self.epochs.last().map_or(0, Opener::epoch)
    }

    /// The epoch after the newest one: whose keys come next.
    pub(crate) fn next_epoch(&self) -> u16 {
        self.newest_epoch().saturating_add(1)
    }

    /// Whether the peer's records are protected now (a keyed epoch is installed), so
    /// plaintext records can no longer be trusted.
    pub(crate) fn is_protected(&self) -> bool {
        !self.epochs.is_empty()
    }

    /// The read state of keyed `epoch`, if installed.
    pub(crate) fn opener_mut(&mut self, epoch: u16) -> Option<&mut Opener> {
        self.epochs.iter_mut().find(|o| o.epoch() == epoch)
    }

    /// Keeps `record` (a whole record of `epoch`) until the keys of `epoch` arrive.
    /// Only records of the next epoch are kept, at most [`MAX_EARLY_RECORDS`]; returns
    /// whether it was kept.
    pub(crate) fn hold_early(&mut self, epoch: u16, record: &[u8]) -> bool {
        if epoch != self.next_epoch() || self.early.len() >= MAX_EARLY_RECORDS {
            return false;
        }
        self.early.push(record.to_vec());
        true
    }

    /// Installs the read state of `opener`'s epoch and returns the records that were
    /// kept for it, in arrival order (others kept are dropped).
    pub(crate) fn install(&mut self, opener: Opener) -> Vec<Vec<u8>> {
        let epoch = opener.epoch();
        match self.epochs.binary_search_by_key(&epoch, Opener::epoch) {
            Ok(at) => self.epochs[at] = opener,
            Err(at) => self.epochs.insert(at, opener),
        }
        let mut early = std::mem::take(&mut self.early);
        // Kept records passed the record splitter, so each holds a whole header.
        early.retain(|r| RecordHeader::new_checked(&r[..]).is_ok_and(|h| h.epoch() == epoch));
        early
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dataplane::record::{Aead, Opener, RecordKey, Records, ReplayWindow};

    fn key() -> RecordKey {
        RecordKey::new(Aead::Aes128Gcm, &[7; 16], &[9; 4]).expect("key")
    }

    #[test]
    fn epochs_keep_their_own_sequence_numbers() {
        let mut w = RecordWriter::new(5);
        assert_eq!(w.next_epoch(), 1);
        w.install(Sealer::new(1, key(), 0).expect("sealer"));
        assert_eq!(w.next_epoch(), 2);
        let mut d = Vec::new();
        w.push_record(&mut d, ContentType::Handshake, 0, &[b"a"])
            .expect("epoch 0");
        w.push_record(&mut d, ContentType::Handshake, 1, &[b"b", b"c"])
            .expect("epoch 1");
        w.push_record(&mut d, ContentType::Handshake, 0, &[b"d"])
            .expect("epoch 0");
        let headers: Vec<(u16, u64)> = Records::new(&d)
            .map(|r| (r.header.epoch(), r.header.sequence()))
            .collect();
        assert_eq!(headers, [(0, 5), (1, 0), (0, 6)]);
        assert_eq!(w.next_sequence(0), Some(7));
        assert_eq!(w.next_sequence(1), Some(1));
        // The sealed record opens under the same key.
        let record = Records::new(&d).nth(1).expect("record").range;
        let mut opener = Opener::new(1, key(), ReplayWindow::new(64));
        let mut bytes = d[record].to_vec();
        let opened = opener.open(&mut bytes).expect("open");
        assert_eq!(opened.plaintext, b"bc");
    }

    #[test]
    fn reserve_stops_the_engine_at_the_limit() {
        let mut w = RecordWriter::new(0);
        w.install(Sealer::new(1, key(), 3).expect("sealer"));
        assert_eq!(w.current_epoch(), 0);
        w.advance_current_epoch(1);
        w.advance_current_epoch(0);
        assert_eq!(w.current_epoch(), 1, "never goes back");
        assert_eq!(w.reserve(1, 2), Some(5));
        assert_eq!(w.reserve(2, 2), None);
        let mut d = Vec::new();
        for _ in 0..2 {
            w.push_record(&mut d, ContentType::Alert, 1, &[&[1, 0]])
                .expect("within the reserve");
        }
        assert!(matches!(
            w.push_record(&mut d, ContentType::Alert, 1, &[&[1, 0]]),
            Err(HandshakeError::SequenceExhausted)
        ));
        assert!(matches!(
            w.push_record(&mut d, ContentType::Alert, 2, &[&[1, 0]]),
            Err(HandshakeError::Internal { .. })
        ));
    }

    #[test]
    fn reader_keeps_records_of_the_next_epoch_until_its_keys() {
        let mut w = RecordWriter::new(0);
        w.install(Sealer::new(1, key(), 0).expect("sealer"));
        w.install(Sealer::new(2, key(), 0).expect("sealer"));
        let mut one = Vec::new();
        w.push_record(&mut one, ContentType::Handshake, 1, &[b"one"])
            .expect("epoch 1");
        let mut two = Vec::new();
        w.push_record(&mut two, ContentType::Handshake, 2, &[b"two"])
            .expect("epoch 2");

        let mut r = RecordReader::new();
        assert!(!r.is_protected());
        assert_eq!(r.next_epoch(), 1);
        assert!(r.opener_mut(1).is_none());
        assert!(!r.hold_early(2, &two), "not the next epoch");
        for _ in 0..MAX_EARLY_RECORDS {
            assert!(r.hold_early(1, &one));
        }
        assert!(!r.hold_early(1, &one), "cap");
        let early = r.install(Opener::new(1, key(), ReplayWindow::new(64)));
        assert_eq!(early.len(), MAX_EARLY_RECORDS);
        assert!(r.is_protected());
        assert_eq!((r.newest_epoch(), r.next_epoch()), (1, 2));
        let opener = r.opener_mut(1).expect("installed");
        let mut bytes = early[0].clone();
        assert_eq!(opener.open(&mut bytes).expect("open").plaintext, b"one");

        assert!(r.hold_early(2, &two));
        let early = r.install(Opener::new(2, key(), ReplayWindow::new(64)));
        assert_eq!(early, vec![two]);
        assert!(r.opener_mut(1).is_some() && r.opener_mut(2).is_some());
    }
}
