//! A session's record protection, by DTLS version: the read epochs and the write epoch.
//!
//! DTLS 1.2 sessions open records with 13-byte headers ([`Opener`]) and seal with a
//! [`Sealer`]; DTLS 1.3 sessions open unified-header records ([`Opener13`], the epoch found
//! from the header's two epoch bits among the epochs held, RFC 9147 §4.2.2) and seal with a
//! [`Sealer13`]. Both keep a small table of read epochs ([`ReadEpochs`]) so a KeyUpdate
//! (RFC 9147 §8) keeps the old read epoch for records still in flight.
//!
//! A DTLS 1.2 session with RFC 9146 connection IDs reads `tls12_cid` records with
//! [`CidOpener`]s when we asked for a non-empty CID ([`ReadState::V12Cid`]), and seals them
//! with a [`CidSealer`] when the peer did ([`WriteState::V12Cid`]); each direction is
//! independent (a zero-length CID keeps that direction in the plain format, RFC 9146 §3).

use dataplane::record::v13::{HeaderForm, InnerContentType, Opener13, Seal13Error, Sealer13};
use dataplane::record::{CidOpener, CidSealer, ContentType, DTLS_1_2, Opener, SealError, Sealer};

/// Most read epochs a session keeps besides the current one.
pub const MAX_OLDER_READ_EPOCHS: usize = 3;

/// What a read epoch table needs of its entries.
pub trait EpochOpener {
    /// The epoch number (16 bits in DTLS 1.2, 64 in DTLS 1.3).
    fn epoch_number(&self) -> u64;
}

impl EpochOpener for Opener {
    fn epoch_number(&self) -> u64 {
        u64::from(self.epoch())
    }
}

impl EpochOpener for CidOpener {
    fn epoch_number(&self) -> u64 {
        u64::from(self.epoch())
    }
}

impl EpochOpener for Opener13 {
    fn epoch_number(&self) -> u64 {
        self.epoch()
    }
}

/// A session's read epochs: the current one and, after a rekey that asked to keep it, up to
/// [`MAX_OLDER_READ_EPOCHS`] older ones (newest first), each an opener with its own keys,
/// replay window and integrity count. Records of any epoch held here are opened; others are
/// dropped. DTLS 1.2 sessions here replace the read epoch on a rekey (they keep none), so
/// the older list stays empty and allocates nothing; DTLS 1.3's KeyUpdate keeps the old
/// epoch for records still in flight (RFC 9147 §8).
#[derive(Debug)]
pub struct ReadEpochs<O> {
    current: O,
    older: Vec<O>,
}

impl<O: EpochOpener> ReadEpochs<O> {
    /// One read epoch.
    pub fn new(current: O) -> Self {
        Self {
            current,
            older: Vec::new(),
        }
    }

    /// The newest read epoch.
    pub fn current(&self) -> &O {
        &self.current
    }

    /// The read state of `epoch`, if the session holds it.
    #[inline]
    pub fn get_mut(&mut self, epoch: u64) -> Option<&mut O> {
        if self.current.epoch_number() == epoch {
            return Some(&mut self.current);
        }
        self.older.iter_mut().find(|o| o.epoch_number() == epoch)
    }

    /// The read state of `epoch`, if the session holds it.
    pub fn get(&self, epoch: u64) -> Option<&O> {
        std::iter::once(&self.current)
            .chain(&self.older)
            .find(|o| o.epoch_number() == epoch)
    }

    /// Makes `opener` the current epoch. With `keep_previous`, the replaced one stays
    /// readable (the oldest beyond [`MAX_OLDER_READ_EPOCHS`] goes); without, every older
    /// epoch goes.
    pub fn install(&mut self, opener: O, keep_previous: bool) {
        let previous = std::mem::replace(&mut self.current, opener);
        if keep_previous {
            let current = self.current.epoch_number();
            self.older.retain(|o| o.epoch_number() != current);
            if previous.epoch_number() != current {
                self.older.insert(0, previous);
            }
            self.older.truncate(MAX_OLDER_READ_EPOCHS);
        } else {
            self.older.clear();
        }
    }

    /// Stops reading `epoch` (never the current one). Returns whether it was held.
    pub fn retire(&mut self, epoch: u64) -> bool {
        let before = self.older.len();
        self.older.retain(|o| o.epoch_number() != epoch);
        self.older.len() != before
    }

    /// The epochs held, current first.
    pub fn epochs(&self) -> impl Iterator<Item = u64> + '_ {
        std::iter::once(&self.current)
            .chain(&self.older)
            .map(EpochOpener::epoch_number)
    }
}

/// A session's read state, by version.
#[derive(Debug)]
pub enum ReadState {
    /// DTLS 1.2.
    V12(ReadEpochs<Opener>),
    /// DTLS 1.2 with our connection ID in the peer's records (RFC 9146 §4: `tls12_cid`
    /// records), boxed: a CID opener holds its CID inline.
    V12Cid(Box<ReadEpochs<CidOpener>>),
    /// DTLS 1.3: the epochs held and the length of the connection ID in records to us.
    V13 {
        /// The application epochs held (3 and up), boxed: a 1.3 opener (AEAD and record
        /// number keys) is several times a 1.2 one, and most sessions of a table should not
        /// pay for it.
        epochs: Box<ReadEpochs<Opener13>>,
        /// Length of our connection ID in the peer's records (0: none).
        cid_len: usize,
    },
}

impl ReadState {
    /// The failed authentications and whether the integrity limit is reached, for `epoch`.
    pub(crate) fn integrity(&self, epoch: u64) -> Option<(u64, bool)> {
        match self {
            ReadState::V12(e) => e
                .get(epoch)
                .map(|o| (o.failed_authentications(), o.integrity_limit_reached())),
            ReadState::V12Cid(e) => e
                .get(epoch)
                .map(|o| (o.failed_authentications(), o.integrity_limit_reached())),
            ReadState::V13 { epochs, .. } => epochs
                .get(epoch)
                .map(|o| (o.failed_authentications(), o.integrity_limit_reached())),
        }
    }

    /// The length of our CID in the peer's records (0: none), which delimits their
    /// headers (RFC 9146 §4, RFC 9147 §4: the length is not on the wire).
    pub fn cid_len(&self) -> usize {
        match self {
            ReadState::V12(_) => 0,
            ReadState::V12Cid(e) => e.current().cid().len(),
            ReadState::V13 { cid_len, .. } => *cid_len,
        }
    }
}

/// Longest connection ID a session here carries (ours or the peer's): QUIC-LB CIDs are at
/// most 20 bytes, and RFC 9146/9147 peers choose theirs (we refuse longer ones).
pub const MAX_SESSION_CID_LEN: usize = 20;

/// A connection ID held inline (no allocation): at most [`MAX_SESSION_CID_LEN`] bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct CidKey {
    len: u8,
    bytes: [u8; MAX_SESSION_CID_LEN],
}

impl CidKey {
    /// `cid`, or `None` when it is longer than [`MAX_SESSION_CID_LEN`].
    pub fn new(cid: &[u8]) -> Option<Self> {
        let mut bytes = [0; MAX_SESSION_CID_LEN];
        bytes.get_mut(..cid.len())?.copy_from_slice(cid);
        Some(Self {
            len: cid.len() as u8,
            bytes,
        })
    }

    /// Its bytes.
    pub fn as_slice(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }

    /// Whether it is the empty CID ("none").
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// DTLS 1.3 write state: the epoch's sealer and the connection ID the peer asked for in
/// records to it (empty: none).
#[derive(Debug)]
pub struct Write13 {
    /// The write epoch.
    pub sealer: Sealer13,
    /// The peer's connection ID.
    pub peer_cid: CidKey,
    /// Spare connection IDs the peer gave us (NewConnectionId with usage cid_spare, RFC
    /// 9147 §9), oldest first, at most [`MAX_SPARE_PEER_CIDS`]: the next is put in our
    /// records after an address change ([`Write13::rotate`]). Empty (no allocation) unless
    /// the peer gave some.
    pub spare: Vec<CidKey>,
}

/// Spare CIDs of the peer a DTLS 1.3 session keeps (control's engine keeps as many; RFC
/// 9147 §9: "Implementations which receive more spare CIDs than they wish to maintain MAY
/// simply discard any extra CIDs").
pub const MAX_SPARE_PEER_CIDS: usize = 8;

impl Write13 {
    /// Write state for `sealer` whose records carry `peer_cid`, no spares yet.
    pub fn new(sealer: Sealer13, peer_cid: CidKey) -> Self {
        Self {
            sealer,
            peer_cid,
            spare: Vec::new(),
        }
    }

    /// Keeps the peer's spare CIDs in order (bounded, skipping empty ones, repeats and the
    /// current one). Returns how many were kept.
    pub fn add_spare(&mut self, cids: &[CidKey]) -> usize {
        let mut kept = 0;
        for cid in cids {
            if self.spare.len() >= MAX_SPARE_PEER_CIDS {
                break;
            }
            if cid.is_empty() || *cid == self.peer_cid || self.spare.contains(cid) {
                continue;
            }
            self.spare.push(*cid);
            kept += 1;
        }
        kept
    }

    /// Puts the oldest spare CID of the peer in our records from now on, after an address
    /// change (RFC 9147 §9: "Implementations SHOULD use a new CID whenever sending on a
    /// new path"; RFC 9853 §9: "peers SHOULD avoid using the same CID on multiple network
    /// paths ... as an adversary can otherwise correlate the communication interaction
    /// across those different paths"). Returns whether the CID changed (false: no spare
    /// left).
    pub fn rotate(&mut self) -> bool {
        if self.spare.is_empty() {
            return false;
        }
        self.peer_cid = self.spare.remove(0);
        true
    }

    /// The new write state of a KeyUpdate carries on with this one's CIDs (a KeyUpdate
    /// changes keys, not CIDs; control's command names the handshake's peer CID).
    pub fn keep_cids_of(&mut self, old: &mut Write13) {
        self.peer_cid = old.peer_cid;
        self.spare = std::mem::take(&mut old.spare);
    }

    /// Seals one record (see [`WriteState::seal`]). Out of line: the 1.2 seal path, which
    /// shares the caller, stays small enough to be inlined.
    #[inline(never)]
    fn seal(
        &mut self,
        content_type: ContentType,
        buf: &mut [u8],
        len: usize,
    ) -> Result<usize, WriteError> {
        let inner = match content_type {
            ContentType::Alert => InnerContentType::Alert,
            ContentType::Handshake => InnerContentType::Handshake,
            ContentType::ApplicationData => InnerContentType::ApplicationData,
            // RFC 9853 §4: the same content type, inside the protection.
            ContentType::ReturnRoutabilityCheck => InnerContentType::ReturnRoutabilityCheck,
            // No heartbeat in DTLS 1.3 (RFC 8446 has none; RFC 6520 is for 1.2).
            _ => return Err(WriteError::Failed),
        };
        let form = if self.peer_cid.is_empty() {
            HeaderForm::default()
        } else {
            HeaderForm::with_cid(self.peer_cid.as_slice())
        };
        Ok(self.sealer.seal(inner, &form, buf, len, 0)?)
    }

    /// The header form of our records: 16-bit sequence number, length, the peer's CID.
    #[inline]
    fn form(&self) -> HeaderForm<'_> {
        if self.peer_cid.is_empty() {
            HeaderForm::default()
        } else {
            HeaderForm::with_cid(self.peer_cid.as_slice())
        }
    }
}

/// A session's write state, by version.
#[derive(Debug)]
pub enum WriteState {
    /// DTLS 1.2.
    V12(Sealer),
    /// DTLS 1.2 with the peer's connection ID in our records (RFC 9146 §4: `tls12_cid`,
    /// no padding), boxed: a CID sealer holds the CID inline.
    V12Cid(Box<CidSealer>),
    /// DTLS 1.3 (unified header: 16-bit sequence number, length, the peer's CID if any),
    /// boxed for the same reason as [`ReadState::V13`].
    V13(Box<Write13>),
}

/// Why a record could not be sealed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum WriteError {
    /// The AEAD or the buffer failed.
    Failed,
}

impl From<SealError> for WriteError {
    fn from(_: SealError) -> Self {
        WriteError::Failed
    }
}

impl From<Seal13Error> for WriteError {
    fn from(_: Seal13Error) -> Self {
        WriteError::Failed
    }
}

impl WriteState {
    /// Records this key may still seal (RFC 6347 §4.1: 1.2 sequence numbers never wrap;
    /// RFC 9147 §4.2.1 the same for 1.3's 64 bits).
    #[inline]
    pub fn sequences_left(&self) -> u64 {
        match self {
            WriteState::V12(s) => s.sequences_left(),
            WriteState::V12Cid(s) => s.sequences_left(),
            WriteState::V13(w) => u64::MAX - w.sealer.next_sequence(),
        }
    }

    /// The record `len` bytes of plaintext become.
    #[inline]
    pub fn record_len(&self, len: usize) -> usize {
        match self {
            WriteState::V12(s) => s.record_len(len),
            WriteState::V12Cid(s) => s.record_len(len, 0),
            WriteState::V13(w) => w.sealer.record_len(&w.form(), len, 0),
        }
    }

    /// Where the plaintext goes in the record buffer.
    #[inline]
    pub fn plaintext_offset(&self) -> usize {
        match self {
            WriteState::V12(s) => s.plaintext_offset(),
            WriteState::V12Cid(s) => s.plaintext_offset(),
            WriteState::V13(w) => w.sealer.plaintext_offset(&w.form()),
        }
    }

    /// Seals the `len` bytes at [`Self::plaintext_offset`] of `buf` as one record of
    /// `content_type`; returns the record's length.
    #[inline]
    pub(crate) fn seal(
        &mut self,
        content_type: ContentType,
        buf: &mut [u8],
        len: usize,
    ) -> Result<usize, WriteError> {
        match self {
            WriteState::V12(s) => Ok(s.seal(content_type, DTLS_1_2, buf, len)?),
            WriteState::V12Cid(s) => Ok(s.seal(content_type, buf, len, 0)?),
            WriteState::V13(w) => w.seal(content_type, buf, len),
        }
    }

    /// DTLS 1.3: the key has sealed as many records as its AEAD's confidentiality limit
    /// allows (RFC 9147 §4.5.3); control must update the keys.
    pub fn confidentiality_limit_reached(&self) -> bool {
        match self {
            WriteState::V12(_) | WriteState::V12Cid(_) => false,
            WriteState::V13(w) => w.sealer.confidentiality_limit_reached(),
        }
    }
}

#[cfg(test)]
mod tests {
    use dataplane::record::{Aead, RecordKey, ReplayWindow};

    use super::*;

    #[test]
    fn read_epochs_are_a_small_table() {
        let key = |seed: u8| RecordKey::new(Aead::Aes128Gcm, &[seed; 16], &[1; 4]).expect("key");
        let opener = |epoch: u16| Opener::new(epoch, key(epoch as u8), ReplayWindow::new(64));
        let mut read = ReadEpochs::new(opener(1));
        assert_eq!(read.epochs().collect::<Vec<_>>(), vec![1]);
        assert!(read.get_mut(2).is_none());
        // Kept: the previous epoch stays readable, newest first, at most three older.
        for epoch in 2..=6 {
            read.install(opener(epoch), true);
        }
        assert_eq!(read.epochs().collect::<Vec<_>>(), vec![6, 5, 4, 3]);
        assert_eq!(read.current().epoch(), 6);
        assert_eq!(read.get_mut(4).map(|o| o.epoch()), Some(4));
        assert!(read.get(2).is_none(), "the oldest went");
        assert!(read.retire(5));
        assert!(!read.retire(5));
        assert!(!read.retire(6), "never the current one");
        assert_eq!(read.epochs().collect::<Vec<_>>(), vec![6, 4, 3]);
        // Not kept (a DTLS 1.2 rekey): only the new epoch is read.
        read.install(opener(7), false);
        assert_eq!(read.epochs().collect::<Vec<_>>(), vec![7]);
    }
}
