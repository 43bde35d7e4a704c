//! The DTLS 1.3 handshake's record layer and flights: epoch 0 in DTLSPlaintext records,
//! epochs 2 and 3 under [`Sealer13`]/[`Opener13`] with unified headers (RFC 9147 §4), and
//! the flight we sent last with what the peer acknowledged of it (RFC 9147 §7).

use std::collections::VecDeque;

use dataplane::record::v13::{HeaderForm, InnerContentType, Opener13, Sealer13};
use dataplane::record::{DTLS_1_2, HEADER_LEN};
use dtls_proto::tls13::RecordNumber;
use dtls_proto::{HANDSHAKE_HEADER_LEN, HandshakeRepr, HandshakeType};

use crate::error::HandshakeError;

/// Unified header of our records: 16-bit sequence number, length present (RFC 9147 §4: the
/// length may only be left out in the last record of a datagram; we always send it so
/// records can share datagrams), and the peer's CID once one was negotiated (see
/// [`Transport13::set_cids`]).
const FORM: HeaderForm<'static> = HeaderForm {
    cid: None,
    sequence: dataplane::record::v13::SequenceLen::Bits16,
    length: true,
};

/// Bytes a protected record adds to its content: header (without CID), type byte and AEAD
/// tag.
const PROTECTED_OVERHEAD: usize = 5 + 1 + 16;

/// Read epochs kept: the handshake's and the peer's last few application epochs.
const MAX_READ_EPOCHS: usize = 6;

/// Smallest handshake fragment worth starting in a partly filled datagram.
const MIN_FRAGMENT: usize = 32;

/// Our write epochs and the peer's read epochs.
#[derive(Debug, Default)]
pub(crate) struct Transport13 {
    /// The next epoch-0 record sequence number.
    plain_seq: u64,
    /// Write state of epochs 2 and up, oldest first.
    sealers: Vec<Sealer13>,
    /// Read state of epochs 2 and up, oldest first.
    openers: Vec<Opener13>,
    /// Per write epoch handed on to a data plane: the first sequence number that is no
    /// longer ours (see [`Transport13::reserve`]).
    ceilings: Vec<(u64, u64)>,
    /// The peer's CID, in the header of every protected record we send when not empty
    /// (RFC 9147 §4: the C bit and the CID).
    peer_cid: Vec<u8>,
    /// The length of our CIDs, which the peer's protected records carry (0: none).
    local_cid_len: usize,
    /// Every protected record number sealed, in order: tests check that no (epoch, key)
    /// and sequence number, so no AEAD nonce, is ever used twice.
    #[cfg(test)]
    pub(crate) sealed: Vec<RecordNumber>,
}

impl Transport13 {
    /// A transport whose epoch-0 records start at `plain_seq`.
    pub(crate) fn new(plain_seq: u64) -> Self {
        Self {
            plain_seq,
            ..Self::default()
        }
    }

    /// Connection IDs negotiated (RFC 9147 §9): from now on our protected records carry
    /// `peer_cid` (none when empty), and the peer's carry CIDs of `local_cid_len` bytes.
    pub(crate) fn set_cids(&mut self, peer_cid: Vec<u8>, local_cid_len: usize) {
        self.peer_cid = peer_cid;
        self.local_cid_len = local_cid_len;
    }

    /// The length of the CIDs in the peer's protected records to us (0: none).
    pub(crate) fn local_cid_len(&self) -> usize {
        self.local_cid_len
    }

    /// Bytes a protected record of ours adds to its content.
    fn protected_overhead(&self) -> usize {
        PROTECTED_OVERHEAD + self.peer_cid.len()
    }

    pub(crate) fn install_write(&mut self, sealer: Sealer13) {
        self.sealers.push(sealer);
    }

    pub(crate) fn install_read(&mut self, opener: Opener13) {
        self.openers.push(opener);
        // Read epochs only grow after completion (the peer's KeyUpdates): the oldest go.
        if self.openers.len() > MAX_READ_EPOCHS {
            self.openers.remove(0);
        }
    }

    /// Forgets the read and write state of every epoch below `epoch` (the handshake's,
    /// once it is over), and the room it took.
    pub(crate) fn drop_epochs_below(&mut self, epoch: u64) {
        self.sealers.retain(|s| s.epoch() >= epoch);
        self.openers.retain(|o| o.epoch() >= epoch);
        self.ceilings.retain(|(e, _)| *e >= epoch);
        self.sealers.shrink_to_fit();
        self.openers.shrink_to_fit();
        self.ceilings.shrink_to_fit();
    }

    /// The newest epoch we write in (0 before keys).
    pub(crate) fn write_epoch(&self) -> u64 {
        self.sealers.last().map_or(0, Sealer13::epoch)
    }

    /// The newest epoch we read (0 before keys).
    pub(crate) fn read_epoch(&self) -> u64 {
        self.openers.last().map_or(0, Opener13::epoch)
    }

    /// The read state of `epoch`.
    pub(crate) fn opener_mut(&mut self, epoch: u64) -> Option<&mut Opener13> {
        self.openers.iter_mut().find(|o| o.epoch() == epoch)
    }

    /// The epochs we hold read keys for.
    pub(crate) fn read_epochs(&self) -> impl Iterator<Item = u64> + '_ {
        self.openers.iter().map(Opener13::epoch)
    }

    /// Reserves `count` sequence numbers of `epoch` for the engine and returns the first
    /// number after them (where a data plane continuing the epoch starts). The engine
    /// never seals a record of the epoch past them: a record number is used once per
    /// epoch (RFC 9147 §4.2.1), whoever seals it.
    pub(crate) fn reserve(&mut self, epoch: u64, count: u64) -> Option<u64> {
        let sealer = self.sealers.iter().find(|s| s.epoch() == epoch)?;
        let ceiling = sealer.next_sequence().saturating_add(count);
        self.ceilings.retain(|(e, _)| *e != epoch);
        self.ceilings.push((epoch, ceiling));
        Some(ceiling)
    }

    /// Sequence numbers of `epoch` the engine may still use (`None`: no data plane shares
    /// the epoch).
    pub(crate) fn reserve_left(&self, epoch: u64) -> Option<u64> {
        let (_, ceiling) = self.ceilings.iter().find(|(e, _)| *e == epoch)?;
        let sealer = self.sealers.iter().find(|s| s.epoch() == epoch)?;
        Some(ceiling.saturating_sub(sealer.next_sequence()))
    }

    /// Appends one record of `content_type` carrying `parts` in `epoch` to `datagram` and
    /// returns its record number.
    pub(crate) fn push_record(
        &mut self,
        datagram: &mut Vec<u8>,
        content_type: InnerContentType,
        epoch: u64,
        parts: &[&[u8]],
    ) -> Result<RecordNumber, HandshakeError> {
        let content_len: usize = parts.iter().map(|p| p.len()).sum();
        if epoch == 0 {
            let sequence = self.plain_seq;
            self.plain_seq += 1;
            let length = u16::try_from(content_len).map_err(|_| HandshakeError::Internal {
                what: "plaintext record too long",
            })?;
            // RFC 9147 §5: DTLSPlaintext with legacy_record_version {254, 253}.
            datagram.push(content_type as u8);
            datagram.extend_from_slice(&DTLS_1_2.to_be_bytes());
            datagram.extend_from_slice(&[0, 0]);
            datagram.extend_from_slice(&sequence.to_be_bytes()[2..]);
            datagram.extend_from_slice(&length.to_be_bytes());
            parts.iter().for_each(|p| datagram.extend_from_slice(p));
            return Ok(RecordNumber { epoch, sequence });
        }
        let sealer = self.sealers.iter_mut().find(|s| s.epoch() == epoch).ok_or(
            HandshakeError::Internal {
                what: "no write keys for the epoch",
            },
        )?;
        let sequence = sealer.next_sequence();
        if self
            .ceilings
            .iter()
            .any(|(e, ceiling)| *e == epoch && sequence >= *ceiling)
        {
            // The data plane seals from the ceiling on.
            return Err(HandshakeError::Internal {
                what: "the engine's sequence numbers of the epoch are spent",
            });
        }
        // The sealer borrows `self.sealers`; the header form borrows the CID beside it.
        let form = HeaderForm {
            cid: (!self.peer_cid.is_empty()).then_some(self.peer_cid.as_slice()),
            ..FORM
        };
        let start = datagram.len();
        let record_len = sealer.record_len(&form, content_len, 0);
        datagram.resize(start + record_len, 0);
        let record = &mut datagram[start..];
        let mut at = sealer.plaintext_offset(&form);
        for p in parts {
            record[at..at + p.len()].copy_from_slice(p);
            at += p.len();
        }
        let len = sealer
            .seal(content_type, &form, record, content_len, 0)
            .map_err(|_| HandshakeError::Internal {
                what: "sealing a handshake record failed",
            })?;
        datagram.truncate(start + len);
        #[cfg(test)]
        self.sealed.push(RecordNumber { epoch, sequence });
        Ok(RecordNumber { epoch, sequence })
    }
}

/// One handshake message of our current flight.
#[derive(Debug, Clone)]
pub(crate) struct OutMessage13 {
    /// The epoch its records go out in (0 for ClientHello/ServerHello, 2 for the rest of
    /// the handshake).
    pub(crate) epoch: u64,
    pub(crate) msg_type: HandshakeType,
    pub(crate) message_seq: u16,
    pub(crate) body: Vec<u8>,
    /// Byte ranges the peer acknowledged, sorted and disjoint.
    acked: Vec<(u32, u32)>,
}

impl OutMessage13 {
    pub(crate) fn new(
        epoch: u64,
        msg_type: HandshakeType,
        message_seq: u16,
        body: Vec<u8>,
    ) -> Self {
        Self {
            epoch,
            msg_type,
            message_seq,
            body,
            acked: Vec::new(),
        }
    }

    fn len(&self) -> u32 {
        // Bodies are built by us and stay far below 2^24.
        u32::try_from(self.body.len()).unwrap_or(u32::MAX)
    }

    fn mark_acked(&mut self, start: u32, end: u32) {
        self.acked.push((start, end));
        self.acked.sort_unstable();
        let mut merged: Vec<(u32, u32)> = Vec::with_capacity(self.acked.len());
        for &(s, e) in &self.acked {
            match merged.last_mut() {
                Some(last) if s <= last.1 => last.1 = last.1.max(e),
                _ => merged.push((s, e)),
            }
        }
        self.acked = merged;
    }

    fn is_acked(&self) -> bool {
        matches!(self.acked.as_slice(), [(0, e)] if *e >= self.len())
    }

    /// The byte ranges not acknowledged yet (the whole body, even when empty, when
    /// nothing was).
    fn unacked(&self) -> Vec<(u32, u32)> {
        if self.acked.is_empty() {
            return vec![(0, self.len())];
        }
        let mut gaps = Vec::new();
        let mut at = 0;
        for &(s, e) in &self.acked {
            if s > at {
                gaps.push((at, s));
            }
            at = at.max(e);
        }
        if at < self.len() {
            gaps.push((at, self.len()));
        }
        gaps
    }
}

/// Which bytes of which message one record we sent carried.
#[derive(Debug, Clone, Copy)]
struct SentRecord {
    number: RecordNumber,
    message: usize,
    start: u32,
    end: u32,
}

/// The flight we sent last, what of it went in which record, and what was acknowledged.
#[derive(Debug, Default)]
pub(crate) struct Flight13 {
    pub(crate) messages: Vec<OutMessage13>,
    sent: Vec<SentRecord>,
}

impl Flight13 {
    pub(crate) fn new(messages: Vec<OutMessage13>) -> Self {
        Self {
            messages,
            sent: Vec::new(),
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.messages.is_empty()
    }

    /// Whether every message was acknowledged in full.
    pub(crate) fn is_acked(&self) -> bool {
        self.messages.iter().all(OutMessage13::is_acked)
    }

    /// RFC 9147 §7: marks what the records in `numbers` carried as received by the peer.
    /// Returns whether any record of this flight was among them.
    pub(crate) fn handle_ack(&mut self, numbers: &[RecordNumber]) -> bool {
        let mut any = false;
        for record in &self.sent {
            if numbers.contains(&record.number) {
                any = true;
                if let Some(m) = self.messages.get_mut(record.message) {
                    m.mark_acked(record.start, record.end);
                }
            }
        }
        any
    }

    /// Cuts the flight (with `only_unacked`, only what the peer has not acknowledged) into
    /// records and packs them into datagrams of at most `mtu` bytes (RFC 9147 §4.4: "each
    /// DTLS record MUST fit within a single datagram"; several records may share one).
    /// Every record gets a fresh record number (RFC 9147 §5.8.1: retransmissions are new
    /// records).
    pub(crate) fn pack(
        &mut self,
        mtu: usize,
        only_unacked: bool,
        transport: &mut Transport13,
        out: &mut VecDeque<Vec<u8>>,
    ) -> Result<(), HandshakeError> {
        let mut datagram: Vec<u8> = Vec::with_capacity(mtu);
        for (index, message) in self.messages.iter().enumerate() {
            let ranges = if only_unacked {
                if message.is_acked() {
                    continue;
                }
                message.unacked()
            } else {
                vec![(0, message.len())]
            };
            let overhead = HANDSHAKE_HEADER_LEN
                + if message.epoch == 0 {
                    HEADER_LEN
                } else {
                    transport.protected_overhead()
                };
            if overhead + 1 >= mtu {
                return Err(HandshakeError::Internal {
                    what: "MTU too small",
                });
            }
            for (start, end) in ranges {
                let mut at = start;
                loop {
                    let left = (end - at) as usize;
                    let room = mtu.saturating_sub(datagram.len() + overhead);
                    // Start a new datagram rather than send a sliver of a message.
                    if room < left.clamp(1, MIN_FRAGMENT) && !datagram.is_empty() {
                        out.push_back(std::mem::replace(&mut datagram, Vec::with_capacity(mtu)));
                        continue;
                    }
                    let take = left.min(room);
                    let piece_end = at + take as u32;
                    let header = HandshakeRepr {
                        msg_type: message.msg_type,
                        length: message.len(),
                        message_seq: message.message_seq,
                        fragment_offset: at,
                        fragment_length: take as u32,
                    }
                    .to_bytes()
                    .map_err(|_| HandshakeError::Internal {
                        what: "handshake message too long",
                    })?;
                    let data = &message.body[at as usize..piece_end as usize];
                    let number = transport.push_record(
                        &mut datagram,
                        InnerContentType::Handshake,
                        message.epoch,
                        &[&header, data],
                    )?;
                    self.sent.push(SentRecord {
                        number,
                        message: index,
                        start: at,
                        end: piece_end,
                    });
                    at = piece_end;
                    if at >= end {
                        break;
                    }
                }
            }
        }
        if !datagram.is_empty() {
            out.push_back(datagram);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acked_ranges_merge_and_leave_gaps() {
        let mut m = OutMessage13::new(2, HandshakeType::Certificate, 1, vec![0; 100]);
        assert_eq!(m.unacked(), [(0, 100)]);
        m.mark_acked(10, 20);
        m.mark_acked(50, 100);
        assert_eq!(m.unacked(), [(0, 10), (20, 50)]);
        m.mark_acked(0, 10);
        m.mark_acked(15, 60);
        assert!(m.is_acked() || m.unacked().is_empty());
        assert!(m.is_acked());
    }

    #[test]
    fn an_empty_message_is_sent_once_and_acked_whole() {
        let mut m = OutMessage13::new(2, HandshakeType::EncryptedExtensions, 1, Vec::new());
        assert_eq!(m.unacked(), [(0, 0)]);
        assert!(!m.is_acked());
        m.mark_acked(0, 0);
        assert!(m.is_acked());
    }

    #[test]
    fn the_engine_never_seals_past_its_reserve() {
        use dataplane::record::Aead;
        use dataplane::record::v13::TrafficKeys13;
        let keys = TrafficKeys13::new(Aead::Aes128Gcm, &[7; 16], &[9; 12], &[5; 16]).expect("keys");
        let mut t = Transport13::new(0);
        t.install_write(Sealer13::new(3, keys));
        assert_eq!(
            t.reserve_left(3),
            None,
            "no data plane shares the epoch yet"
        );
        assert_eq!(t.reserve(3, 2), Some(2));
        assert_eq!(t.reserve_left(3), Some(2));
        let mut datagram = Vec::new();
        for sequence in 0..2 {
            let n = t
                .push_record(&mut datagram, InnerContentType::Ack, 3, &[b"ack"])
                .expect("within the reserve");
            assert_eq!((n.epoch, n.sequence), (3, sequence));
        }
        assert_eq!(t.reserve_left(3), Some(0));
        let len = datagram.len();
        assert!(
            t.push_record(&mut datagram, InnerContentType::Ack, 3, &[b"ack"])
                .is_err(),
            "sequence 2 is the data plane's"
        );
        assert_eq!(datagram.len(), len, "nothing written");
    }
}
