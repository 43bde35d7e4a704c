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
//!
//! With RFC 9146 connection IDs a keyed DTLS 1.2 epoch is protected in the `tls12_cid`
//! record format in the directions where a non-empty CID was negotiated: the writer seals
//! such an epoch with a [`CidSealer`] (the peer's CID in every record), the reader opens it
//! with a [`CidOpener`] (our CID). RFC 9146 §3: "If DTLS peers have negotiated the use of a
//! non-zero-length CID for a given direction, then once encryption is enabled they MUST send
//! with the record format defined in Figure 3 with the new Content Type tls12_cid." So a
//! reader of such an epoch refuses records in the plain format, and the other way round.

use dataplane::record::{
    CidOpener, CidSealer, ContentType, HEADER_LEN, Opener, RecordRepr, Sealer,
};

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
    /// A keyed epoch whose records carry the peer's connection ID (RFC 9146 §4).
    SealedCid(Box<CidSealer>),
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
            WriteProtection::SealedCid(sealer) => sealer.next_sequence(),
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
        self.install_entry(sealer.epoch(), WriteProtection::Sealed(sealer));
    }

    /// Installs the write state of `sealer`'s epoch in the tls12_cid format (RFC 9146 §4),
    /// like [`Self::install`].
    pub(crate) fn install_cid(&mut self, sealer: CidSealer) {
        self.install_entry(sealer.epoch(), WriteProtection::SealedCid(Box::new(sealer)));
    }

    fn install_entry(&mut self, epoch: u16, protection: WriteProtection) {
        let entry = WriteEpoch {
            epoch,
            protection,
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
            // Header with CID, explicit nonce, the inner type byte and the tag.
            Some(WriteProtection::SealedCid(sealer)) => sealer.record_len(0, 0),
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
            WriteProtection::SealedCid(sealer) => {
                // RFC 9146 §4: the real content type travels inside, no padding.
                let offset = sealer.plaintext_offset();
                datagram.resize(start + sealer.record_len(plaintext_len, 0), 0);
                let mut at = start + offset;
                for p in parts {
                    datagram[at..at + p.len()].copy_from_slice(p);
                    at += p.len();
                }
                let len = sealer
                    .seal(content_type, &mut datagram[start..], plaintext_len, 0)
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

/// How the records of one keyed read epoch are protected.
#[derive(Debug)]
enum ReadProtection {
    /// The RFC 6347 record format.
    Plain(Opener),
    /// The tls12_cid format with our connection ID (RFC 9146 §4).
    Cid(Box<CidOpener>),
}

impl ReadProtection {
    fn epoch(&self) -> u16 {
        match self {
            ReadProtection::Plain(o) => o.epoch(),
            ReadProtection::Cid(o) => o.epoch(),
        }
    }
}

/// What [`RecordReader::open`] made of a protected record.
#[derive(Debug)]
pub(crate) enum ReadOutcome<'b> {
    /// No keys for the record's epoch.
    NoKeys,
    /// Authentication, replay or format check failed (RFC 6347 §4.1.2.7: silently
    /// discarded), or the record's format is not the one negotiated for the epoch.
    Rejected,
    /// Opened in place.
    Opened {
        /// The real content type.
        content_type: ContentType,
        /// The plaintext, inside the caller's buffer.
        plaintext: &'b [u8],
    },
}

/// Read state: the table of keyed read epochs (epoch 0 is plaintext and needs no state
/// here) and the records that arrived early for the next one.
#[derive(Debug, Default)]
pub(crate) struct RecordReader {
    /// Read state of the installed epochs in ascending order, each with its replay window.
    epochs: Vec<ReadProtection>,
    /// Whole records (header included) of [`RecordReader::next_epoch`], with their epoch.
    early: Vec<(u16, Vec<u8>)>,
}

impl RecordReader {
    /// A reader of plaintext epoch 0 only.
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// The newest epoch we can read (0 before any keys).
    pub(crate) fn newest_epoch(&self) -> u16 {
        self.epochs.last().map_or(0, ReadProtection::epoch)
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

    /// Opens `record`, a whole record of keyed `epoch`, in place; `cid_format` says whether
    /// it is a tls12_cid record.
    pub(crate) fn open<'b>(
        &mut self,
        epoch: u16,
        record: &'b mut [u8],
        cid_format: bool,
    ) -> ReadOutcome<'b> {
        let Some(state) = self.epochs.iter_mut().find(|e| e.epoch() == epoch) else {
            return ReadOutcome::NoKeys;
        };
        match (state, cid_format) {
            (ReadProtection::Plain(opener), false) => match opener.open(record) {
                Ok(o) => ReadOutcome::Opened {
                    content_type: o.content_type,
                    plaintext: o.plaintext,
                },
                Err(_) => ReadOutcome::Rejected,
            },
            (ReadProtection::Cid(opener), true) => match opener.open(record) {
                Ok(o) => ReadOutcome::Opened {
                    content_type: o.content_type,
                    plaintext: o.plaintext,
                },
                Err(_) => ReadOutcome::Rejected,
            },
            // RFC 9146 §3: with a CID negotiated for this direction the peer "MUST send
            // with the record format defined in Figure 3"; without one it has no CID of
            // ours to send.
            _ => ReadOutcome::Rejected,
        }
    }

    /// Keeps `record` (a whole record of `epoch`) until the keys of `epoch` arrive.
    /// Only records of the next epoch are kept, at most [`MAX_EARLY_RECORDS`]; returns
    /// whether it was kept.
    pub(crate) fn hold_early(&mut self, epoch: u16, record: &[u8]) -> bool {
        if epoch != self.next_epoch() || self.early.len() >= MAX_EARLY_RECORDS {
            return false;
        }
        self.early.push((epoch, record.to_vec()));
        true
    }

    /// Installs the read state of `opener`'s epoch and returns the records that were
    /// kept for it, in arrival order (others kept are dropped).
    pub(crate) fn install(&mut self, opener: Opener) -> Vec<Vec<u8>> {
        self.install_entry(ReadProtection::Plain(opener))
    }

    /// Installs the read state of `opener`'s epoch in the tls12_cid format, like
    /// [`Self::install`].
    pub(crate) fn install_cid(&mut self, opener: CidOpener) -> Vec<Vec<u8>> {
        self.install_entry(ReadProtection::Cid(Box::new(opener)))
    }

    fn install_entry(&mut self, state: ReadProtection) -> Vec<Vec<u8>> {
        let epoch = state.epoch();
        match self
            .epochs
            .binary_search_by_key(&epoch, ReadProtection::epoch)
        {
            Ok(at) => self.epochs[at] = state,
            Err(at) => self.epochs.insert(at, state),
        }
        std::mem::take(&mut self.early)
            .into_iter()
            .filter(|(e, _)| *e == epoch)
            .map(|(_, r)| r)
            .collect()
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
        let mut probe = one.clone();
        assert!(matches!(r.open(1, &mut probe, false), ReadOutcome::NoKeys));
        assert!(!r.hold_early(2, &two), "not the next epoch");
        for _ in 0..MAX_EARLY_RECORDS {
            assert!(r.hold_early(1, &one));
        }
        assert!(!r.hold_early(1, &one), "cap");
        let early = r.install(Opener::new(1, key(), ReplayWindow::new(64)));
        assert_eq!(early.len(), MAX_EARLY_RECORDS);
        assert!(r.is_protected());
        assert_eq!((r.newest_epoch(), r.next_epoch()), (1, 2));
        let mut bytes = early[0].clone();
        assert!(matches!(
            r.open(1, &mut bytes, false),
            ReadOutcome::Opened {
                plaintext: b"one",
                ..
            }
        ));

        assert!(r.hold_early(2, &two));
        let early = r.install(Opener::new(2, key(), ReplayWindow::new(64)));
        assert_eq!(early, vec![two]);
        let mut again = one.clone();
        assert!(
            matches!(r.open(1, &mut again, false), ReadOutcome::Rejected),
            "replay"
        );
    }

    #[test]
    fn cid_epochs_write_and_read_tls12_cid_records() {
        let cid = [0xc1, 0xd2, 0xe3];
        let mut w = RecordWriter::new(0);
        w.install_cid(CidSealer::new(1, key(), 0, &cid).expect("sealer"));
        let mut d = Vec::new();
        w.push_record(&mut d, ContentType::Handshake, 1, &[b"fin", b"ished"])
            .expect("epoch 1");
        assert_eq!(d.len(), w.overhead(1) + 8);
        assert_eq!(d[0], dataplane::record::TLS12_CID);
        assert_eq!(&d[11..14], &cid);

        let mut r = RecordReader::new();
        assert!(r.hold_early(1, &d));
        let early =
            r.install_cid(CidOpener::new(1, key(), ReplayWindow::new(64), &cid).expect("opener"));
        assert_eq!(early, vec![d.clone()]);
        let mut bytes = d.clone();
        assert!(matches!(
            r.open(1, &mut bytes, true),
            ReadOutcome::Opened {
                content_type: ContentType::Handshake,
                plaintext: b"finished"
            }
        ));
        // RFC 9146 §3: a CID epoch takes only tls12_cid records, a plain one none.
        let mut plain = RecordWriter::new(0);
        plain.install(Sealer::new(1, key(), 5).expect("sealer"));
        let mut p = Vec::new();
        plain
            .push_record(&mut p, ContentType::Handshake, 1, &[b"x"])
            .expect("epoch 1");
        assert!(matches!(r.open(1, &mut p, false), ReadOutcome::Rejected));
        let mut r2 = RecordReader::new();
        r2.install(Opener::new(1, key(), ReplayWindow::new(64)));
        let mut bytes = d.clone();
        assert!(matches!(
            r2.open(1, &mut bytes, true),
            ReadOutcome::Rejected
        ));
    }
}
