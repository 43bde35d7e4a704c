//! A generator session's record protection: DTLS 1.2 (`Sealer`/`Opener`), DTLS 1.2 with
//! RFC 9146 connection IDs (`CidSealer`/`CidOpener`: `tls12_cid` records whichever way a
//! CID was negotiated), and DTLS 1.3 (`Sealer13`/`Opener13`: unified header, 16-bit
//! sequence numbers, length present, the C bit and the server's CID when it gave one).
//!
//! [`Protection::open_datagram`] walks one received datagram and says what each record was
//! ([`Received`]); the flow checks the echoes and hands the rest to the session's engine.

use anyhow::{Context as _, Result, bail};
use control::{RecordKeys, SessionKeys};
use dataplane::record::v13::{
    HeaderForm, InnerContentType, MixedKind, MixedRecordsMut, Open13Error, Opener13, Sealer13,
    SequenceLen,
};
use dataplane::record::{
    CidOpener, CidSealer, ContentType, DTLS_1_2, Opener, RecordKey, RecordsMut, ReplayWindow,
    Sealer,
};
use dtls_proto::tls13::RecordNumber;

use super::CipherChoice;

/// RFC 9147 §4: the C bit of a unified header's first byte (`0b001CSLEE`).
const C_BIT: u8 = 0b0001_0000;

/// DTLS 1.2 write side: plain records, or `tls12_cid` records carrying the server's CID.
pub(super) enum Seal12 {
    Plain(Sealer),
    /// Boxed: the CID is stored inline (up to 255 bytes).
    Cid(Box<CidSealer>),
}

/// DTLS 1.2 read side: plain records, or `tls12_cid` records carrying our CID.
pub(super) enum Open12 {
    Plain(Opener),
    Cid(Box<CidOpener>),
}

/// A session's record protection, by version.
pub(super) enum Protection {
    V12 {
        seal: Seal12,
        open: Open12,
    },
    /// Boxed: the 1.3 keys (AEAD and record-number keys) are large.
    V13 {
        sealer: Box<Sealer13>,
        opener: Box<Opener13>,
        /// The server's CID our records carry (C = 1); empty: none (C = 0).
        peer_cid: Vec<u8>,
        /// The length of our CID in the server's records (0: none).
        local_cid_len: usize,
    },
}

/// What one record of a received datagram was.
pub(super) enum Received<'b> {
    /// Application data, opened: its plaintext, and whether the record carried a CID.
    Data { plaintext: &'b [u8], cid: bool },
    /// A record for the engine as it came (a retransmitted flight, a plaintext alert).
    Engine(&'b [u8]),
    /// DTLS 1.3: a post-handshake message (NewSessionTicket, ACK) opened with the data
    /// keys, for the engine as dtlsd's shard hands it to its control thread.
    PostHandshake {
        record: RecordNumber,
        ack: bool,
        plaintext: &'b [u8],
    },
    /// A record that failed to open (authentication, replay, format).
    OpenError,
    /// Anything else (an alert under the data keys, a record of another format).
    Ignored,
}

/// The unified header of a DTLS 1.3 record, with `cid` when the server gave one.
fn form13(cid: &[u8]) -> HeaderForm<'_> {
    HeaderForm {
        cid: (!cid.is_empty()).then_some(cid),
        sequence: SequenceLen::Bits16,
        length: true,
    }
}

impl Protection {
    /// The data keys of a completed handshake. With `cipher` `none` both directions switch
    /// to `RecordKey::null_baseline()` (the server must run with null record protection;
    /// no CIDs: RFC 9146 records need an AEAD).
    pub(super) fn new(keys: SessionKeys, cipher: CipherChoice) -> Result<Self> {
        let window = ReplayWindow::new(keys.replay_window.clamp(64, 4096));
        let peer_cid = keys.peer_cid.unwrap_or_default();
        let local_cid = keys.local_cid.unwrap_or_default();
        Ok(match keys.records {
            RecordKeys::Dtls12 { read, write } => {
                let (write_key, read_key) = if cipher.is_null() {
                    if !peer_cid.is_empty() || !local_cid.is_empty() {
                        bail!("the null baseline has no connection-ID form");
                    }
                    (RecordKey::null_baseline(), RecordKey::null_baseline())
                } else {
                    (write.key, read.key)
                };
                let seal = if peer_cid.is_empty() {
                    Seal12::Plain(
                        Sealer::new(write.epoch, write_key, write.next_sequence)
                            .context("sealer from KeysReady")?,
                    )
                } else {
                    Seal12::Cid(Box::new(
                        CidSealer::new(write.epoch, write_key, write.next_sequence, &peer_cid)
                            .context("CID sealer from KeysReady")?,
                    ))
                };
                let open = if local_cid.is_empty() {
                    Open12::Plain(Opener::new(read.epoch, read_key, window))
                } else {
                    Open12::Cid(Box::new(
                        CidOpener::new(read.epoch, read_key, window, &local_cid)
                            .context("CID opener from KeysReady")?,
                    ))
                };
                Protection::V12 { seal, open }
            }
            RecordKeys::Dtls13 { read, write } => {
                if cipher.is_null() {
                    bail!("DTLS 1.3 has no null record protection");
                }
                let (read, write) = (*read, *write);
                let sealer =
                    Sealer13::new(write.epoch, write.keys).with_next_sequence(write.next_sequence);
                let opener = Opener13::new(read.epoch, read.keys, window);
                Protection::V13 {
                    sealer: Box::new(sealer),
                    opener: Box::new(opener),
                    peer_cid,
                    local_cid_len: local_cid.len(),
                }
            }
        })
    }

    /// Whether this session's records carry a connection ID, either way.
    pub(super) fn uses_cid(&self) -> bool {
        match self {
            Protection::V12 { seal, open } => {
                matches!(seal, Seal12::Cid(_)) || matches!(open, Open12::Cid(_))
            }
            Protection::V13 {
                peer_cid,
                local_cid_len,
                ..
            } => !peer_cid.is_empty() || *local_cid_len > 0,
        }
    }

    /// Where the content starts in a record.
    pub(super) fn plaintext_offset(&self) -> usize {
        match self {
            Protection::V12 {
                seal: Seal12::Plain(s),
                ..
            } => s.plaintext_offset(),
            Protection::V12 {
                seal: Seal12::Cid(s),
                ..
            } => s.plaintext_offset(),
            Protection::V13 {
                sealer, peer_cid, ..
            } => sealer.plaintext_offset(&form13(peer_cid)),
        }
    }

    /// The length of a record of `size` content bytes.
    pub(super) fn record_len(&self, size: usize) -> usize {
        match self {
            Protection::V12 {
                seal: Seal12::Plain(s),
                ..
            } => s.record_len(size),
            Protection::V12 {
                seal: Seal12::Cid(s),
                ..
            } => s.record_len(size, 0),
            Protection::V13 {
                sealer, peer_cid, ..
            } => sealer.record_len(&form13(peer_cid), size, 0),
        }
    }

    /// Seals `size` content bytes at the plaintext offset of `buf` as `content`; the record
    /// length, 0 when the sequence space is spent.
    pub(super) fn seal(&mut self, content: ContentType, buf: &mut [u8], size: usize) -> usize {
        match self {
            Protection::V12 {
                seal: Seal12::Plain(s),
                ..
            } => s.seal(content, DTLS_1_2, buf, size).unwrap_or(0),
            // RFC 9146 §4: the real type goes into the inner plaintext, no padding.
            Protection::V12 {
                seal: Seal12::Cid(s),
                ..
            } => s.seal(content, buf, size, 0).unwrap_or(0),
            Protection::V13 {
                sealer, peer_cid, ..
            } => {
                let inner = match content {
                    ContentType::Alert => InnerContentType::Alert,
                    _ => InnerContentType::ApplicationData,
                };
                sealer
                    .seal(inner, &form13(peer_cid), buf, size, 0)
                    .unwrap_or(0)
            }
        }
    }

    /// Walks the records of one received datagram, opening the protected ones in place,
    /// and tells `each` what every record was.
    pub(super) fn open_datagram(
        &mut self,
        datagram: &mut [u8],
        mut each: impl FnMut(Received<'_>),
    ) {
        match self {
            Protection::V12 {
                open: Open12::Plain(opener),
                ..
            } => {
                for rec in RecordsMut::new(datagram) {
                    let rec = rec.into_inner();
                    if rec.first() != Some(&u8::from(ContentType::ApplicationData)) {
                        each(Received::Engine(rec));
                        continue;
                    }
                    each(match opener.open(rec) {
                        Ok(o) => Received::Data {
                            plaintext: o.plaintext,
                            cid: false,
                        },
                        Err(_) => Received::OpenError,
                    });
                }
            }
            Protection::V12 {
                open: Open12::Cid(opener),
                ..
            } => {
                let cid_len = opener.cid().len();
                for rec in MixedRecordsMut::new(datagram, cid_len) {
                    match rec.kind {
                        MixedKind::Dtls12Cid => each(match opener.open(rec.bytes) {
                            Ok(o) if o.content_type == ContentType::ApplicationData => {
                                Received::Data {
                                    plaintext: o.plaintext,
                                    cid: true,
                                }
                            }
                            Ok(_) => Received::Ignored,
                            Err(_) => Received::OpenError,
                        }),
                        // RFC 9146 §3: with a CID negotiated for records to us, application
                        // data in the plain format is not ours to accept.
                        MixedKind::Plaintext(t) if t == u8::from(ContentType::ApplicationData) => {
                            each(Received::OpenError);
                        }
                        MixedKind::Plaintext(_) => each(Received::Engine(rec.bytes)),
                        MixedKind::Ciphertext(_) => each(Received::Ignored),
                    }
                }
            }
            Protection::V13 {
                opener,
                local_cid_len,
                ..
            } => {
                let cid_len = *local_cid_len;
                for rec in MixedRecordsMut::new(datagram, cid_len) {
                    if !matches!(rec.kind, MixedKind::Ciphertext(_)) {
                        each(Received::Engine(rec.bytes));
                        continue;
                    }
                    let cid = rec.bytes.first().is_some_and(|b| b & C_BIT != 0);
                    match opener.open(rec.bytes, cid_len) {
                        Ok(o) => each(match o.content_type {
                            InnerContentType::ApplicationData => Received::Data {
                                plaintext: o.plaintext,
                                cid,
                            },
                            InnerContentType::Handshake | InnerContentType::Ack => {
                                Received::PostHandshake {
                                    record: RecordNumber {
                                        epoch: o.epoch,
                                        sequence: o.sequence,
                                    },
                                    ack: o.content_type == InnerContentType::Ack,
                                    plaintext: o.plaintext,
                                }
                            }
                            InnerContentType::Alert
                            | InnerContentType::Heartbeat
                            | InnerContentType::ReturnRoutabilityCheck => Received::Ignored,
                        }),
                        // A record of the handshake's epochs (a retransmitted flight): the
                        // epoch check comes before anything is decrypted in place.
                        Err(Open13Error::WrongEpoch { .. }) => each(Received::Engine(rec.bytes)),
                        Err(_) => each(Received::OpenError),
                    }
                }
            }
        }
    }
}
