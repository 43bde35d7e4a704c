//! The per-packet paths of both relay modes, sans-IO: they write into the caller's batches
//! ([`Out`]). Nothing here allocates except the copy of a datagram handed to the control
//! thread.
//!
//! - Serve: DTLS peer → backend ([`handle_datagram`]: open, plaintext staged for the
//!   session's upstream flow) and backend → peer ([`handle_flow_datagram`]: seal into the
//!   transmit batch).
//! - Connect: the server's records arrive on the session's upstream flow
//!   ([`handle_flow_datagram`]: open, plaintext into the transmit batch to the local source),
//!   and local plaintext is sealed in place into the flow stage ([`seal_record`], called by
//!   the core's connect path).
//!
//! Heartbeats (RFC 6520) are answered here in both modes; keepalive probes are sent by the
//! core's sweep through [`send_heartbeat_request`].

use std::net::SocketAddr;
use std::time::Instant;

use dataplane::record::v13::{
    FLAG_CID, InnerContentType, MixedKind, MixedRecords, MixedRecordsMut, Open13Error, Opener13,
    is_unified, reconstruct_epoch,
};
use dataplane::record::{
    CidOpenError, ContentType, MAX_PLAINTEXT_LEN, OpenError, Records, RecordsMut, TLS12_CID,
};
use dtls_io::TxBatch;
use dtls_proto::{
    Alert, AlertDescription, AlertLevel, HEARTBEAT_HEADER_LEN, HeartbeatMessageType,
    MIN_HEARTBEAT_PADDING, RRC_MESSAGE_LEN, RrcMessage, RrcMessageType,
};

use crate::counters::Tally;
use crate::early::EarlyRecords;
use crate::fair::FairForward;
use crate::flows::{FlowTx, UpstreamPrefix};
use crate::handoff::{Handoffs, Owner};
use crate::queue::{AeadLimit, CloseReason, ControlInbound, ShardQueues};
use crate::records::{
    CidKey, MAX_OLDER_READ_EPOCHS, MAX_SESSION_CID_LEN, ReadEpochs, ReadState, WriteState,
};
use crate::rrc::{self, PathCheck, PathState, RRC_CHALLENGES, RRC_TIMEOUT, RrcCookies};
use crate::session::{CidUse, Session, SessionTable, SlotId};

/// Which side of DTLS the shard's listen socket is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelayMode {
    /// `dtlsd serve`: DTLS peers on the listen socket, plaintext on each session's upstream
    /// socket (to the backend).
    Serve,
    /// `dtlsd connect`: plaintext local sources on the listen socket, DTLS on each session's
    /// upstream socket (to the server).
    Connect,
}

/// One of a session's two paths: the shard socket (datagrams addressed to the session's
/// peer) or the session's own upstream flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Side {
    /// The shard socket.
    Net,
    /// The session's upstream flow.
    Flow,
}

impl RelayMode {
    /// The whole difference between the modes: which side carries DTLS records (and
    /// control's handshake datagrams). The other side carries plaintext.
    #[inline]
    pub(crate) fn dtls(self) -> Side {
        match self {
            RelayMode::Serve => Side::Net,
            RelayMode::Connect => Side::Flow,
        }
    }

    /// The side that carries plaintext.
    #[inline]
    pub(crate) fn plain(self) -> Side {
        match self.dtls() {
            Side::Net => Side::Flow,
            Side::Flow => Side::Net,
        }
    }
}

/// Largest sealed record: header (with a connection ID), explicit nonce, 2^14 plaintext
/// (and the inner content type of a tls12_cid record), tag.
pub(crate) const MAX_RECORD_LEN: usize = 13 + MAX_SESSION_CID_LEN + 8 + MAX_PLAINTEXT_LEN + 1 + 16;

/// What the per-packet paths write to: the caller's batches (datagrams on the shard socket,
/// datagrams on upstream flows, flows opened), the control queue, the turn's tally. Borrowed
/// from the core and the caller's [`Effects`](crate::Effects) for one call, apart from the
/// session table, so both can be borrowed at once.
#[derive(Debug)]
pub(crate) struct Out<'a> {
    /// Datagrams on the shard socket: sealed records to peers (serve), plaintext to local
    /// sources (connect), handshake datagrams from control (serve).
    pub tx: &'a mut TxBatch,
    /// Datagrams on upstream flows.
    pub flows: &'a mut FlowTx,
    /// Flows the core opened (or moved) in this call: the driver registers them.
    pub opened: &'a mut Vec<crate::FlowRef>,
    pub queues: &'a ShardQueues,
    pub tally: &'a mut Tally,
    pub mode: RelayMode,
    /// State of the generator of heartbeat padding.
    pub pad_state: &'a mut u64,
    /// Cookies of the return-routability check.
    pub cookies: &'a mut RrcCookies,
    /// Handshake datagrams on their way to control, queued fairly between sources.
    pub fair: &'a mut FairForward,
    /// The admitted lane: datagrams of peers whose cookie-verified handshake control holds,
    /// pumped before `fair` (see `fair`).
    pub admitted: &'a mut FairForward,
    /// The other shards' hand-off queues; `None` when there is nobody to hand to, or for a
    /// datagram that was itself handed to this shard (never handed on).
    pub handoffs: Option<&'a Handoffs>,
}

impl Out<'_> {
    /// Hands a datagram whose connection ID starts at `cid_offset` and is not in this
    /// shard's table to the shard the CID names, or to the node forwarder when it names
    /// another node; `false` when it names none other (then it is this shard's to count and
    /// drop). A full queue drops it, counted.
    fn hand_off(&mut self, source: SocketAddr, datagram: &[u8], cid_offset: usize) -> bool {
        let Some(handoffs) = self.handoffs else {
            return false;
        };
        match datagram
            .get(cid_offset..)
            .map_or(Owner::Here, |cid| handoffs.owner(cid))
        {
            Owner::Here => return false,
            Owner::Shard(owner) => {
                if handoffs.push(owner, source, datagram) {
                    self.tally.cid_handoffs += 1;
                } else {
                    self.tally.drop_handoff_full += 1;
                }
            }
            Owner::Node(node) => {
                if handoffs.forward(node, source, datagram) {
                    self.tally.cid_forwards += 1;
                } else {
                    self.tally.drop_forward_full += 1;
                }
            }
        }
        true
    }

    /// Hands `message` to control; a full queue drops it (counted, never blocks).
    pub fn report(&mut self, message: ControlInbound) {
        if self.queues.push_inbound(message).is_err() {
            self.tally.drop_queue_full += 1;
        }
    }

    /// Queues one datagram on `side` for a session (`peer` on the shard socket, flow token
    /// `flow` on its upstream flow), written in place by `write` into `max_len` bytes (it
    /// returns the length used; 0: nothing to send). Counts it: on the shard socket when
    /// queued (the driver flushes the batch), on a flow when the driver sends it. Returns
    /// the length queued, or None when the batch or stage is full (counted).
    #[inline(always)]
    pub fn push_with(
        &mut self,
        side: Side,
        peer: SocketAddr,
        flow: usize,
        max_len: usize,
        write: impl FnOnce(&mut [u8]) -> usize,
    ) -> Option<usize> {
        match side {
            Side::Net => match self.tx.push_with(peer, max_len, write) {
                Ok(n) => {
                    if n > 0 {
                        self.tally.datagrams_out += 1;
                        self.tally.bytes_out += n as u64;
                    }
                    Some(n)
                }
                Err(_) => {
                    self.tally.drop_tx_full += 1;
                    None
                }
            },
            Side::Flow => {
                let staged = self.flows.push_with(flow, max_len, write);
                if staged.is_none() {
                    self.tally.upstream_send_errors += 1;
                }
                staged
            }
        }
    }

    /// Queues a copy of `datagram` on `side` (see [`Self::push_with`]). Returns whether it
    /// was queued.
    #[inline]
    pub fn push(&mut self, side: Side, peer: SocketAddr, flow: usize, datagram: &[u8]) -> bool {
        let len = datagram.len();
        let queued = match side {
            Side::Net => self.tx.push(peer, datagram).is_ok(),
            Side::Flow => self.flows.push(flow, datagram),
        };
        match (queued, side) {
            (true, Side::Net) => {
                self.tally.datagrams_out += 1;
                self.tally.bytes_out += len as u64;
            }
            (true, Side::Flow) => {}
            (false, Side::Net) => self.tally.drop_tx_full += 1,
            (false, Side::Flow) => self.tally.upstream_send_errors += 1,
        }
        queued
    }

    /// Hands a datagram to control through the fair stage (see `fair`): a source whose
    /// share is full loses its excess there, counted as `drop_handshake_overflow`.
    pub fn forward(&mut self, peer: SocketAddr, datagram: &[u8]) {
        if self.fair.push(self.queues, peer, datagram) {
            self.tally.handshake_forwarded += 1;
            if self.fair.len() >= crate::fair::PER_BUCKET {
                self.fair.pump(self.queues);
            }
        } else {
            self.tally.drop_handshake_overflow += 1;
        }
    }

    /// Hands a datagram of a peer whose cookie-verified handshake control holds (noted by
    /// `ExpectKeys`) to control through the admitted lane, ahead of the general stage; when
    /// the lane is full, through the general stage like any other.
    pub fn forward_admitted(&mut self, peer: SocketAddr, datagram: &[u8]) {
        if self.admitted.push(self.queues, peer, datagram) {
            self.tally.handshake_forwarded += 1;
            self.tally.handshake_admitted += 1;
        } else {
            self.forward(peer, datagram);
        }
    }
}

/// RFC 9147 §6.1: the first DTLS 1.3 application epoch, the one a new session starts with.
const FIRST_APPLICATION_EPOCH13: u64 = 3;

/// What a read-only walk over a datagram found.
struct Scan {
    records: usize,
    /// Some record is epoch 0 or handshake content: the control thread needs the datagram.
    for_control: bool,
    /// Records that are not control's (the shard opens them).
    shard_records: usize,
    /// Bytes after the last whole record.
    trailing: bool,
}

/// Whether a unified-header record whose two epoch bits match none of the epochs held
/// (`held`, the current one first) belongs to an application epoch the session retired.
///
/// RFC 9147 §4.2.2: "After the handshake is complete, if the epoch bits do not match those
/// from the current epoch, implementations SHOULD use the most recent past epoch which has
/// matching bits". Below the current epoch, that is an application epoch whose keys were
/// retired (3 and up: RFC 9147 §8 keeps an old epoch for records in flight, not for ever,
/// and control retires it) or a handshake epoch (2: a client's retransmitted Finished,
/// which control acknowledges). A retired epoch's record cannot be opened by anyone: it is
/// dropped unopened and counted (RFC 9147 §4.5.2: "invalid records SHOULD be silently
/// discarded"), instead of costing control a datagram. Records of later epochs (a peer
/// ahead of our install) are not retired: they still go to control.
fn is_retired_epoch(bits: u8, held: &[u64]) -> bool {
    let Some(&current) = held.first() else {
        return false;
    };
    let back = match current.wrapping_sub(u64::from(bits)) & 3 {
        0 => 4,
        d => d,
    };
    current
        .checked_sub(back)
        .is_some_and(|past| past >= FIRST_APPLICATION_EPOCH13)
}

/// The read epochs a DTLS 1.3 session holds, current first, in an array (no allocation on
/// the per-packet path) with their count.
fn held13(epochs: &ReadEpochs<Opener13>) -> ([u64; 1 + MAX_OLDER_READ_EPOCHS], usize) {
    let mut held = [0u64; 1 + MAX_OLDER_READ_EPOCHS];
    let n = epochs
        .epochs()
        .zip(held.iter_mut())
        .map(|(e, h)| *h = e)
        .count();
    (held, n)
}

/// A datagram of a DTLS 1.3 session (or of a peer without one): its DTLSPlaintext records
/// (epoch 0: a ClientHello, a plaintext alert or ACK) and its unified-header records of an
/// epoch the shard does not hold (epoch 2: the handshake's) belong to control; records of
/// a held application epoch are the shard's, and so are those of a retired one
/// ([`is_retired_epoch`]: dropped). `held` lists the current epoch first.
fn scan13(datagram: &[u8], cid_len: usize, held: &[u64]) -> Scan {
    let mut records = MixedRecords::new(datagram, cid_len);
    let mut s = Scan {
        records: 0,
        for_control: false,
        shard_records: 0,
        trailing: false,
    };
    for r in records.by_ref() {
        s.records += 1;
        let control = match r.kind {
            MixedKind::Plaintext(_) | MixedKind::Dtls12Cid => true,
            MixedKind::Ciphertext(h) => {
                reconstruct_epoch(h.epoch_bits, held.iter().copied()).is_none()
                    && !is_retired_epoch(h.epoch_bits, held)
            }
        };
        s.for_control |= control;
        s.shard_records += usize::from(!control);
    }
    s.trailing = records.dropped_bytes() > 0;
    s
}

/// A datagram of a DTLS 1.2 session whose records to us carry our `cid_len`-byte CID
/// (RFC 9146 §4): its plain records of epoch 0 or handshake content are control's, its
/// tls12_cid records the shard's (their real type is inside; a retransmitted Finished
/// travels with the epoch-0 records of its flight, which take the datagram to control).
fn scan12_cid(datagram: &[u8], cid_len: usize) -> Scan {
    let mut records = MixedRecords::new(datagram, cid_len);
    let mut s = Scan {
        records: 0,
        for_control: false,
        shard_records: 0,
        trailing: false,
    };
    for r in records.by_ref() {
        s.records += 1;
        let control = match r.kind {
            MixedKind::Plaintext(content_type) => {
                record_epoch(r.bytes) == 0 || content_type == ContentType::Handshake as u8
            }
            MixedKind::Dtls12Cid | MixedKind::Ciphertext(_) => false,
        };
        s.for_control |= control;
        s.shard_records += usize::from(!control);
    }
    s.trailing = records.dropped_bytes() > 0;
    s
}

/// The epoch of a DTLS 1.2 record (plain or tls12_cid: bytes 3 and 4), whose header the
/// walker checked.
#[inline]
fn record_epoch(record: &[u8]) -> u16 {
    match record.get(3..5) {
        Some(&[hi, lo]) => u16::from_be_bytes([hi, lo]),
        _ => 0,
    }
}

fn scan(datagram: &[u8]) -> Scan {
    let mut records = Records::new(datagram);
    let mut s = Scan {
        records: 0,
        for_control: false,
        shard_records: 0,
        trailing: false,
    };
    for r in records.by_ref() {
        s.records += 1;
        let control =
            r.header.epoch() == 0 || r.header.content_type() == ContentType::Handshake as u8;
        s.for_control |= control;
        s.shard_records += usize::from(!control);
    }
    s.trailing = records.dropped_bytes() > 0;
    s
}

/// Serve mode: one datagram from `source`: open its records with the peer's session and
/// relay the plaintext upstream; hand what the data plane does not handle to control; count
/// and drop the rest.
pub(crate) fn handle_datagram<F>(
    table: &mut SessionTable<F>,
    early: &mut EarlyRecords,
    out: &mut Out<'_>,
    now: Instant,
    source: SocketAddr,
    datagram: &mut [u8],
    cid_len: usize,
) {
    out.tally.datagrams_in += 1;
    out.tally.bytes_in += datagram.len() as u64;
    // A DTLS 1.2 record under one of our connection IDs: the session is found by CID first,
    // then by address (RFC 9146 §6: the CID, not the address, names the session).
    if cid_len > 0 && datagram.first() == Some(&TLS12_CID) {
        return handle_cid12(table, early, out, now, source, datagram, cid_len);
    }
    let Some(id) = table.lookup(&source) else {
        return handle_unknown(table, early, out, now, source, datagram, cid_len);
    };
    handle_protected(table, id, out, now, datagram);
}

/// Serve mode: a datagram that starts with a tls12_cid record (RFC 9146 §4): type(1)
/// version(2) epoch(2) sequence(6), then our `cid_len`-byte CID. From the session's own
/// address it is that session's; from another, it may move the session
/// ([`handle_moved`]). A CID no session holds is dropped and counted
/// (`drop_unknown_session`), unless its source is a peer in a handshake control holds
/// (noted by `ExpectKeys`): then control gets a copy and the shard parks one.
fn handle_cid12<F>(
    table: &mut SessionTable<F>,
    early: &mut EarlyRecords,
    out: &mut Out<'_>,
    now: Instant,
    source: SocketAddr,
    datagram: &mut [u8],
    cid_len: usize,
) {
    let found = datagram
        .get(11..11 + cid_len)
        .and_then(|cid| table.lookup_cid(cid));
    let Some(id) = found else {
        if out.hand_off(source, datagram, 11) {
            return;
        }
        // RFC 9146 §4: once the CID is negotiated, every record of epoch 1 on is a tls12_cid
        // record, so a handshaking client's Finished in a datagram of its own looks like its
        // first data: only its (encrypted) inner type tells them apart. Control opens its
        // copy with the handshake's keys (and ignores data); the parked copy is data that
        // reached the shard ahead of the session's keys. Only peers control named are
        // forwarded, so an unknown CID from anyone else costs control nothing.
        let handshaking = early.is_noted(&source);
        if handshaking {
            out.forward_admitted(source, datagram);
        }
        if early.park(source, datagram) {
            out.tally.early_parked += 1;
        } else if !handshaking {
            out.tally.drop_unknown_session += 1;
        }
        return;
    };
    if table.session(id).is_some_and(|s| s.peer == source) {
        handle_protected(table, id, out, now, datagram);
    } else {
        handle_moved(table, id, out, now, source, datagram);
    }
}

/// Serve mode: a datagram from an address without a session (off the per-packet path of
/// established sessions, so kept out of line).
#[cold]
#[inline(never)]
fn handle_unknown<F>(
    table: &mut SessionTable<F>,
    early: &mut EarlyRecords,
    out: &mut Out<'_>,
    now: Instant,
    source: SocketAddr,
    datagram: &mut [u8],
    cid_len: usize,
) {
    // RFC 9147 §9: a record carrying one of our connection IDs from an unknown address may
    // be its session's peer after a NAT rebinding or a network change.
    if let Some(id) = lookup_by_cid(table, datagram, cid_len) {
        return handle_moved(table, id, out, now, source, datagram);
    }
    if cid_len > 0
        && datagram
            .first()
            .is_some_and(|&b| is_unified(b) && b & FLAG_CID != 0)
        && out.hand_off(source, datagram, 1)
    {
        return;
    }
    // A DTLS 1.3 handshake's records (unified headers, epoch 2) from a peer without a
    // session are control's like the 1.2 ones; records of the first application epoch (3)
    // are a client's data sent right after its Finished, ahead of its keys.
    let unified = matches!(datagram.first(), Some(&first) if is_unified(first));
    let found = if unified {
        scan13(datagram, cid_len, &[FIRST_APPLICATION_EPOCH13])
    } else {
        scan(datagram)
    };
    // No session: during a handshake every datagram belongs to control (including the
    // client's epoch-1 Finished). Protected records alone cannot be anything control
    // handles. A DTLS 1.3 datagram with both goes to control and is parked too: once the
    // keys are in, control gets the handshake records again (answered as a
    // retransmission) and the shard opens the rest.
    if found.for_control {
        // A peer whose cookie-verified handshake control holds goes first (see `fair`).
        if early.is_noted(&source) {
            out.forward_admitted(source, datagram);
        } else {
            out.forward(source, datagram);
        }
    }
    let park = if found.for_control {
        unified && found.shard_records > 0
    } else {
        found.records > 0
    };
    if park {
        // Records of a peer finishing its handshake wait for its keys (see `early`).
        if early.park(source, datagram) {
            out.tally.early_parked += 1;
        } else {
            out.tally.drop_unknown_session += 1;
        }
    } else if !found.for_control {
        out.tally.drop_malformed += 1;
    }
}

/// The session whose connection ID the datagram's first record carries: a unified header
/// with the C bit, then `cid_len` bytes of CID.
fn lookup_by_cid<F>(table: &SessionTable<F>, datagram: &[u8], cid_len: usize) -> Option<SlotId> {
    let (&first, rest) = datagram.split_first()?;
    if cid_len == 0 || !is_unified(first) || first & FLAG_CID == 0 {
        return None;
    }
    table.lookup_cid(rest.get(..cid_len)?)
}

/// A datagram for session `id` that came from `source`, not the session's address, under
/// its connection ID. Its records are opened as the session's; the address moves to
/// `source` only when one of them authenticated and was the newest the session has seen
/// (RFC 9146 §6, RFC 9147 §9: "only if the record ... has been successfully deprotected
/// and is the newest"), so a replayed or forged copy from elsewhere never moves it.
///
/// With the return-routability check negotiated (RFC 9853) the move waits: the records are
/// delivered as usual, and [`check_new_path`] challenges `source`; the session moves when
/// the answer comes back (in [`protected`]), and stays where it was if none does.
fn handle_moved<F>(
    table: &mut SessionTable<F>,
    id: SlotId,
    out: &mut Out<'_>,
    now: Instant,
    source: SocketAddr,
    datagram: &mut [u8],
) {
    let Some(from) = table.session(id).map(|s| s.peer) else {
        return;
    };
    let received = datagram.len();
    let mut newest = false;
    let closed = protected(table, id, out, now, source, datagram, &mut newest);
    if let Some(reason) = closed {
        return close_session(table, out, from, reason);
    }
    if !newest {
        out.tally.drop_not_moved += 1;
        return;
    }
    let Some(session) = table.session_mut(id) else {
        return;
    };
    if session.peer == source {
        return; // a path_response in this datagram validated it: moved already
    }
    if !matches!(session.path, PathState::Off) {
        return check_new_path(session, out, now, source, received);
    }
    let handle = session.handle;
    rotate_peer_cid(session, out);
    if table.rebind(id, source) {
        out.tally.sessions_moved += 1;
        out.report(ControlInbound::PeerMoved {
            session: handle,
            from,
            peer: source,
        });
    }
}

/// A DTLS datagram of a known session (from its peer in serve mode, from the server in
/// connect mode): handshake content to control, records opened, the session closed when a
/// record says so.
#[inline]
pub(crate) fn handle_protected<F>(
    table: &mut SessionTable<F>,
    id: SlotId,
    out: &mut Out<'_>,
    now: Instant,
    datagram: &mut [u8],
) {
    let Some(peer) = table.session(id).map(|s| s.peer) else {
        return;
    };
    let mut newest = false;
    if let Some(reason) = protected(table, id, out, now, peer, datagram, &mut newest) {
        close_session(table, out, peer, reason);
    }
}

/// The work of [`handle_protected`] for a datagram from `source`: handshake content to
/// control (as from `source`), records opened; `newest` is set when a record of the
/// current read epoch authenticated with a sequence number above every one seen before.
/// Returns why the session must close, if a record says so.
fn protected<F>(
    table: &mut SessionTable<F>,
    id: SlotId,
    out: &mut Out<'_>,
    now: Instant,
    source: SocketAddr,
    datagram: &mut [u8],
    newest: &mut bool,
) -> Option<CloseReason> {
    let session = table.session(id)?;
    let found = match &session.read {
        ReadState::V12(_) => scan(datagram),
        ReadState::V12Cid(epochs) => scan12_cid(datagram, epochs.current().cid().len()),
        ReadState::V13 { epochs, cid_len } => {
            let (held, n) = held13(epochs);
            scan13(datagram, *cid_len, &held[..n])
        }
    };
    if found.records == 0 {
        out.tally.drop_malformed += 1;
        return None;
    }
    if found.for_control {
        // Copied before any record is opened in place.
        out.forward(source, datagram);
    }
    if found.trailing {
        out.tally.drop_malformed += 1;
    }
    let mut switch_to = None;
    let closed = open_records(
        table,
        id,
        out,
        now,
        source,
        datagram,
        newest,
        &mut switch_to,
    );
    if closed.is_none()
        && table
            .session(id)
            .is_some_and(|s| matches!(s.path, PathState::Checking(_)))
    {
        finish_path_check(table, id, out);
    }
    // After the move a path_response in this datagram completed, if it did: control hears
    // of the move first ([`ControlInbound::PeerMoved`], then [`ControlInbound::CidsRetired`]), so
    // the engine's replacements are its one flight on the new path, sent once. (Without
    // the check, [`handle_moved`] moves the session after this: the engine then sends its
    // replacements and sends them again for the path change, a duplicate.)
    if let Some(to) = switch_to {
        switch_cid(table, id, out, &to);
    }
    closed
}

/// Opens the records of a known peer's datagram in place; returns why the session must close,
/// if a record says so.
#[allow(
    clippy::too_many_arguments,
    reason = "the per-packet path passes its state along"
)]
fn open_records<F>(
    table: &mut SessionTable<F>,
    id: SlotId,
    out: &mut Out<'_>,
    now: Instant,
    source: SocketAddr,
    datagram: &mut [u8],
    newest: &mut bool,
    switch_to: &mut Option<CidKey>,
) -> Option<CloseReason> {
    let session = table.session_mut(id)?;
    match session.read {
        ReadState::V13 { .. } => {
            return open_records13(session, out, now, source, datagram, newest, switch_to);
        }
        ReadState::V12Cid(_) => {
            return open_records12_cid(session, out, now, source, datagram, newest);
        }
        ReadState::V12(_) => {}
    }
    for header in RecordsMut::new(datagram) {
        let (epoch, content_type) = (header.epoch(), header.content_type());
        if epoch == 0 || content_type == ContentType::Handshake as u8 {
            continue; // went to control with the whole datagram
        }
        let opener = match &mut session.read {
            ReadState::V12(epochs) => epochs.get_mut(u64::from(epoch)),
            ReadState::V12Cid(_) | ReadState::V13 { .. } => None,
        };
        let Some(opener) = opener else {
            out.tally.drop_unknown_epoch += 1;
            session.counters.drops += 1;
            continue;
        };
        if content_type != ContentType::ApplicationData as u8
            && content_type != ContentType::Alert as u8
            && content_type != ContentType::Heartbeat as u8
            && content_type != ContentType::ReturnRoutabilityCheck as u8
        {
            out.tally.drop_unexpected_content += 1;
            continue;
        }
        // RFC 6347 §4.1.2.6: the opener checks the replay window, verifies the tag and only
        // then updates the window (CVE-2016-2181).
        match opener.open(header.into_inner()) {
            Ok(opened) => {
                note_opened(session, out, now);
                match opened.content_type {
                    ContentType::ApplicationData => {
                        deliver_plaintext(session, out, opened.plaintext);
                    }
                    ContentType::Alert => {
                        if let Some(reason) = handle_alert(session, out, opened.plaintext) {
                            return Some(reason);
                        }
                    }
                    ContentType::Heartbeat => handle_heartbeat(session, out, opened.plaintext),
                    ContentType::ReturnRoutabilityCheck => {
                        handle_rrc(session, out, source, opened.plaintext);
                    }
                    _ => out.tally.drop_unexpected_content += 1,
                }
            }
            Err(e) => {
                session.counters.drops += 1;
                match e {
                    OpenError::Replayed(_) => out.tally.drop_replay += 1,
                    OpenError::AuthenticationFailed => {
                        out.tally.drop_bad_tag += 1;
                        report_integrity_limit(session, u64::from(epoch), out);
                    }
                    OpenError::WrongEpoch { .. } => out.tally.drop_unknown_epoch += 1,
                    OpenError::Malformed(_)
                    | OpenError::TrailingBytes { .. }
                    | OpenError::TooShort(_)
                    | OpenError::PlaintextTooLong(_) => out.tally.drop_malformed += 1,
                }
            }
        }
    }
    None
}

/// The records of a datagram of a DTLS 1.2 session that asked for a CID, opened in place:
/// tls12_cid records with our CID (RFC 9146 §4, §5), delivered, answered or closing the
/// session as in [`open_records`]; `newest` is set when a record of the current read epoch
/// authenticated with a sequence number above every one opened before (RFC 9146 §6).
fn open_records12_cid<F>(
    session: &mut Session<F>,
    out: &mut Out<'_>,
    now: Instant,
    source: SocketAddr,
    datagram: &mut [u8],
    newest: &mut bool,
) -> Option<CloseReason> {
    let cid_len = session.read.cid_len();
    for record in MixedRecordsMut::new(datagram, cid_len) {
        let epoch = record_epoch(record.bytes);
        match record.kind {
            MixedKind::Dtls12Cid => {}
            MixedKind::Plaintext(content_type) => {
                if epoch == 0 || content_type == ContentType::Handshake as u8 {
                    continue; // went to control with the whole datagram
                }
                // RFC 9146 §3: with our CID negotiated, protected records "MUST" use the
                // tls12_cid format; a plain one is not the peer's.
                session.counters.drops += 1;
                out.tally.drop_unexpected_content += 1;
                continue;
            }
            MixedKind::Ciphertext(_) => {
                session.counters.drops += 1;
                out.tally.drop_malformed += 1;
                continue;
            }
        }
        let opened = match &mut session.read {
            ReadState::V12Cid(epochs) => {
                let current = epochs.current().epoch() == epoch;
                epochs
                    .get_mut(u64::from(epoch))
                    .map(|o| (current, o.open(record.bytes)))
            }
            ReadState::V12(_) | ReadState::V13 { .. } => None,
        };
        let Some((current, opened)) = opened else {
            out.tally.drop_unknown_epoch += 1;
            session.counters.drops += 1;
            continue;
        };
        match opened {
            Ok(opened) => {
                // RFC 9146 §6: the address moves only for a datagram "newer" (in terms of
                // both epoch and sequence number) "than the newest datagram received".
                if current && opened.newest {
                    *newest = true;
                }
                note_opened(session, out, now);
                match opened.content_type {
                    ContentType::ApplicationData => {
                        deliver_plaintext(session, out, opened.plaintext);
                    }
                    ContentType::Alert => {
                        if let Some(reason) = handle_alert(session, out, opened.plaintext) {
                            return Some(reason);
                        }
                    }
                    ContentType::Heartbeat => handle_heartbeat(session, out, opened.plaintext),
                    ContentType::ReturnRoutabilityCheck => {
                        handle_rrc(session, out, source, opened.plaintext);
                    }
                    // A retransmitted Finished (its flight's plain records took the datagram
                    // to control) or change_cipher_spec, which never has a CID.
                    _ => out.tally.drop_unexpected_content += 1,
                }
            }
            Err(e) => {
                session.counters.drops += 1;
                match e {
                    CidOpenError::Replayed(_) => out.tally.drop_replay += 1,
                    CidOpenError::AuthenticationFailed => {
                        out.tally.drop_bad_tag += 1;
                        report_integrity_limit(session, u64::from(epoch), out);
                    }
                    CidOpenError::WrongEpoch { .. } => out.tally.drop_unknown_epoch += 1,
                    // Another session's CID later in the datagram.
                    CidOpenError::WrongCid => out.tally.drop_unknown_session += 1,
                    CidOpenError::NoContentType | CidOpenError::UnknownContentType(_) => {
                        out.tally.drop_unexpected_content += 1;
                    }
                    CidOpenError::Malformed(_)
                    | CidOpenError::TrailingBytes { .. }
                    | CidOpenError::TooShort(_)
                    | CidOpenError::PlaintextTooLong(_) => out.tally.drop_malformed += 1,
                }
            }
        }
    }
    None
}

/// The records of a DTLS 1.3 session's datagram from `source`, opened in place: application
/// data delivered, alerts and return_routability_check messages (RFC 9853) handled as in
/// 1.2, post-handshake messages (KeyUpdate,
/// NewSessionTicket, NewConnectionId, ...) and ACKs under application keys handed to control
/// as plaintext (only the shard holds those keys). DTLSPlaintext records and records of an
/// epoch the shard does not hold went to control with the whole datagram.
fn open_records13<F>(
    session: &mut Session<F>,
    out: &mut Out<'_>,
    now: Instant,
    source: SocketAddr,
    datagram: &mut [u8],
    newest: &mut bool,
    switch_to: &mut Option<CidKey>,
) -> Option<CloseReason> {
    let cid_len = match &session.read {
        ReadState::V13 { cid_len, .. } => *cid_len,
        ReadState::V12(_) | ReadState::V12Cid(_) => return None,
    };
    for record in MixedRecordsMut::new(datagram, cid_len) {
        let MixedKind::Ciphertext(header) = record.kind else {
            continue;
        };
        // The record's CID (RFC 9147 §9): ours in use, a later one of ours the peer may
        // switch to, or one we retired (dropped unopened).
        let later = match header.cid(record.bytes) {
            Some(cid) if cid_len > 0 => match session.cid_use(cid) {
                CidUse::Current => None,
                CidUse::Later => CidKey::new(cid),
                CidUse::Retired => {
                    out.tally.drop_retired_cid += 1;
                    session.counters.drops += 1;
                    continue;
                }
            },
            _ => None,
        };
        let mut retired = false;
        let opened = match &mut session.read {
            ReadState::V13 { epochs, .. } => {
                let current = epochs.current().epoch();
                match reconstruct_epoch(header.epoch_bits, epochs.epochs()) {
                    Some(epoch) => epochs.get_mut(epoch).map(|o| {
                        // Above everything seen: what may move the session's address.
                        let highest = (epoch == current).then(|| o.next_expected());
                        (epoch, highest, o.open(record.bytes, cid_len))
                    }),
                    None => {
                        let (held, n) = held13(epochs);
                        retired = is_retired_epoch(header.epoch_bits, &held[..n]);
                        None
                    }
                }
            }
            ReadState::V12(_) | ReadState::V12Cid(_) => None,
        };
        let Some((epoch, highest, opened)) = opened else {
            // A retired epoch's (see `scan13`), or control's (an epoch the shard does not
            // hold: the handshake's).
            if retired {
                out.tally.drop_retired_epoch += 1;
                session.counters.drops += 1;
            }
            continue;
        };
        match opened {
            Ok(opened) => {
                if highest.is_some_and(|h| opened.sequence >= h) {
                    *newest = true;
                    // The peer moved on to a later CID of ours (RFC 9147 §9).
                    if later.is_some() {
                        *switch_to = later;
                    }
                }
                note_opened(session, out, now);
                match opened.content_type {
                    InnerContentType::ApplicationData => {
                        deliver_plaintext(session, out, opened.plaintext);
                    }
                    InnerContentType::Alert => {
                        if let Some(reason) = handle_alert(session, out, opened.plaintext) {
                            return Some(reason);
                        }
                    }
                    InnerContentType::Handshake | InnerContentType::Ack => {
                        out.tally.post_handshake_forwarded += 1;
                        out.report(ControlInbound::PostHandshake {
                            session: session.handle,
                            epoch: opened.epoch,
                            sequence: opened.sequence,
                            ack: opened.content_type == InnerContentType::Ack,
                            message: opened.plaintext.to_vec(),
                        });
                    }
                    // RFC 9853 §4 under 1.3: the same message as the inner content type.
                    InnerContentType::ReturnRoutabilityCheck => {
                        handle_rrc(session, out, source, opened.plaintext);
                    }
                    // No heartbeat in DTLS 1.3.
                    InnerContentType::Heartbeat => out.tally.drop_unexpected_content += 1,
                }
            }
            Err(e) => {
                session.counters.drops += 1;
                match e {
                    Open13Error::Replayed(_) => out.tally.drop_replay += 1,
                    Open13Error::AuthenticationFailed => {
                        out.tally.drop_bad_tag += 1;
                        report_integrity_limit(session, epoch, out);
                    }
                    Open13Error::WrongEpoch { .. } => out.tally.drop_unknown_epoch += 1,
                    // RFC 8446 §5: an unknown inner type is unexpected_message; the data
                    // plane drops and counts it (control decides about the session).
                    Open13Error::UnknownContentType(_) => out.tally.drop_unexpected_content += 1,
                    _ => out.tally.drop_malformed += 1,
                }
            }
        }
    }
    None
}

/// A record from the peer authenticated: counted, and the session is active as of `now`.
#[inline]
fn note_opened<F>(session: &mut Session<F>, out: &mut Out<'_>, now: Instant) {
    out.tally.records_opened += 1;
    session.counters.records_opened += 1;
    session.last_activity = now;
    session.last_peer_activity = now;
}

/// An opened application-data record, out on the plaintext side: to the backend's flow
/// (serve: staged, sent with the session's other datagrams of this batch in GSO runs) or to
/// the local source on the shard socket (connect).
///
/// A serve-mode session with an [`UpstreamPrefix`] (PROXY v2, SPP) has it staged in front
/// of the plaintext, in the same copy; a `First` prefix is then dropped from the session.
fn deliver_plaintext<F>(session: &mut Session<F>, out: &mut Out<'_>, plaintext: &[u8]) {
    let side = out.mode.plain();
    let queued = if session.upstream.is_none() || side == Side::Net {
        out.push(side, session.peer, session.id().to_token(), plaintext)
    } else {
        push_prefixed(session, out, plaintext)
    };
    if queued {
        session.counters.plaintext_in += plaintext.len() as u64;
    }
}

/// The prefixed path of [`deliver_plaintext`], out of line so the plain path stays as it was.
#[inline(never)]
fn push_prefixed<F>(session: &mut Session<F>, out: &mut Out<'_>, plaintext: &[u8]) -> bool {
    let flow = session.id().to_token();
    let queued = out
        .flows
        .push_prefixed(flow, session.upstream.bytes(), plaintext);
    if !queued {
        out.tally.upstream_send_errors += 1;
    } else if let UpstreamPrefix::First(_) = session.upstream {
        session.upstream = UpstreamPrefix::None;
    }
    queued
}

/// An authenticated heartbeat message (RFC 6520 §4).
fn handle_heartbeat<F>(session: &mut Session<F>, out: &mut Out<'_>, message: &mut [u8]) {
    let Some((&kind, rest)) = message.split_first() else {
        out.tally.drop_heartbeat += 1;
        return;
    };
    let Some(payload_len) = rest
        .get(..2)
        .map(|l| usize::from(u16::from_be_bytes([l[0], l[1]])))
    else {
        out.tally.drop_heartbeat += 1;
        return;
    };
    // RFC 6520 §4: "If the payload_length of a received HeartbeatMessage is too large, the
    // received HeartbeatMessage MUST be discarded silently." The padding "MUST be at least
    // 16" bytes.
    if HEARTBEAT_HEADER_LEN + payload_len + MIN_HEARTBEAT_PADDING > message.len() {
        out.tally.drop_heartbeat += 1;
        return;
    }
    match HeartbeatMessageType::from_u8(kind) {
        Some(HeartbeatMessageType::Request) if session.heartbeat.answer => {
            // RFC 6520 §4: "the receiver MUST send a corresponding HeartbeatResponse message
            // carrying an exact copy of the payload of the received HeartbeatRequest." The
            // request is turned into the response where it lies (opened in place): the type
            // changes, payload_length and payload stay, 16 bytes of our own padding follow.
            let response =
                &mut message[..HEARTBEAT_HEADER_LEN + payload_len + MIN_HEARTBEAT_PADDING];
            response[0] = HeartbeatMessageType::Response.to_u8();
            fill_padding(
                out.pad_state,
                &mut response[HEARTBEAT_HEADER_LEN + payload_len..],
            );
            if seal_record(session, out, ContentType::Heartbeat, response) {
                out.tally.heartbeats_answered += 1;
            }
        }
        Some(HeartbeatMessageType::Response) => {
            // RFC 6520 §3: only a response to the request in flight counts.
            let payload = &message[HEARTBEAT_HEADER_LEN..HEARTBEAT_HEADER_LEN + payload_len];
            match session.probe {
                Some(probe) if payload == probe.payload.to_be_bytes() => {
                    session.probe = None;
                    out.tally.keepalive_answered += 1;
                }
                _ => out.tally.drop_heartbeat += 1,
            }
        }
        _ => out.tally.drop_heartbeat += 1,
    }
}

/// Sends (or resends: RFC 6520 §3 "retransmitted using the same payload") the session's
/// keepalive HeartbeatRequest carrying `payload`.
pub(crate) fn send_heartbeat_request<F>(session: &mut Session<F>, out: &mut Out<'_>, payload: u64) {
    let mut message = [0u8; HEARTBEAT_HEADER_LEN + 8 + MIN_HEARTBEAT_PADDING];
    message[0] = HeartbeatMessageType::Request.to_u8();
    message[1..3].copy_from_slice(&8u16.to_be_bytes());
    message[3..11].copy_from_slice(&payload.to_be_bytes());
    fill_padding(out.pad_state, &mut message[11..]);
    if seal_record(session, out, ContentType::Heartbeat, &message) {
        out.tally.keepalive_sent += 1;
    }
}

/// RFC 6520 §4: "The padding is random content". SplitMix64: the padding is encrypted and
/// ignored by the receiver; it needs no secrecy of its own, only not to be a constant.
fn fill_padding(state: &mut u64, padding: &mut [u8]) {
    for chunk in padding.chunks_mut(8) {
        *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = *state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        let bytes = z.to_le_bytes();
        chunk.copy_from_slice(&bytes[..chunk.len()]);
    }
}

/// RFC 9147 §4.5.3: past the integrity limit the endpoint "SHOULD immediately close the
/// connection"; control decides (close or rekey), told once per key.
fn report_integrity_limit<F>(session: &mut Session<F>, epoch: u64, out: &mut Out<'_>) {
    let Some((failed, reached)) = session.read.integrity(epoch) else {
        return;
    };
    if reached && !session.limit_reported {
        session.limit_reported = true;
        out.report(ControlInbound::AeadLimitReached {
            session: session.handle,
            limit: AeadLimit::Integrity { failed },
        });
    }
}

/// An authenticated alert from the peer. Returns the reason when the session ends.
fn handle_alert<F>(
    session: &mut Session<F>,
    out: &mut Out<'_>,
    alert: &[u8],
) -> Option<CloseReason> {
    let &[level, description] = alert else {
        out.tally.drop_malformed += 1;
        return None;
    };
    if AlertDescription::from_u8(description) == AlertDescription::CloseNotify {
        // RFC 5246 §7.2.1: "the other party MUST respond with a close_notify alert of its
        // own and close down the connection immediately".
        seal_record(
            session,
            out,
            ContentType::Alert,
            &Alert::close_notify().to_bytes(),
        );
        return Some(CloseReason::CloseNotify);
    }
    if AlertLevel::from_u8(level) == AlertLevel::Fatal {
        // RFC 5246 §7.2: on a fatal alert both parties "MUST immediately close the connection".
        return Some(CloseReason::FatalAlert { description });
    }
    out.tally.drop_unexpected_content += 1;
    None
}

/// Removes `peer`'s session and tells control why. Its flow is retired, not dropped:
/// plaintext staged for the backend this turn (records that came before the close, even in
/// the same datagram) still goes out when the driver drains the stage, and only then does
/// the driver's socket close (which also takes it out of the driver's epoll set).
pub(crate) fn close_session<F>(
    table: &mut SessionTable<F>,
    out: &mut Out<'_>,
    peer: SocketAddr,
    reason: CloseReason,
) {
    if let Some(session) = table.remove(&peer) {
        out.tally.sessions_closed += 1;
        out.report(ControlInbound::SessionClosed {
            session: session.handle,
            peer,
            reason,
            stats: session.counters,
        });
        table.retire(session);
    }
}

/// Seals `plaintext` as one record of the session in place on the DTLS side: straight into
/// the transmit batch to the peer (serve), or into the stage of its upstream flow to the
/// server (connect). Returns whether a record was queued.
pub(crate) fn seal_record<F>(
    session: &mut Session<F>,
    out: &mut Out<'_>,
    content_type: ContentType,
    plaintext: &[u8],
) -> bool {
    if session.sealer.sequences_left() == 0 {
        // RFC 6347 §4.1: sequence numbers never wrap; nothing more under this key.
        out.tally.drop_sequence_exhausted += 1;
        if !session.limit_reported {
            session.limit_reported = true;
            out.report(ControlInbound::AeadLimitReached {
                session: session.handle,
                limit: AeadLimit::SequenceExhausted,
            });
        }
        return false;
    }
    let len = plaintext.len();
    let record_len = session.sealer.record_len(len);
    if len > MAX_PLAINTEXT_LEN || record_len > out.tx.max_datagram() {
        out.tally.drop_oversize += 1;
        return false;
    }
    let side = out.mode.dtls();
    let peer = path_for(session, side, record_len);
    let flow = session.id().to_token();
    if seal_to(
        out,
        side,
        peer,
        flow,
        &mut session.sealer,
        content_type,
        plaintext,
    ) {
        session.counters.records_sealed += 1;
        session.counters.plaintext_out += plaintext.len() as u64;
        true
    } else {
        false
    }
}

/// Where a datagram of `len` bytes of `session` goes on `side` now: its peer's address, or
/// (serve mode) the new address being checked while the datagram stays within that
/// address's anti-amplification limit, which it is then counted against. RFC 9853 §5: "A
/// receiver that observes the peer's address change MUST stop sending any buffered
/// application data or limit the data sent to the unvalidated address to the
/// anti-amplification limit": the new address while within it, the validated one after.
#[inline(always)]
fn path_for<F>(session: &mut Session<F>, side: Side, len: usize) -> SocketAddr {
    if side == Side::Net
        && let Some(check) = session.path.check_mut()
        && check.spend(len)
    {
        return check.to;
    }
    session.peer
}

/// Control's `datagram` for `session` (a DTLS 1.3 post-handshake flight or ACK, sealed by
/// its engine) on the session's current path, as the session's own records go
/// ([`path_for`]): never to an address control still holds after the peer left it.
#[cold]
pub(crate) fn transmit_on_path<F>(session: &mut Session<F>, out: &mut Out<'_>, datagram: &[u8]) {
    let side = out.mode.dtls();
    let peer = path_for(session, side, datagram.len());
    out.push(side, peer, session.id().to_token(), datagram);
}

/// Seals `plaintext` as one record with `sealer`, in place on `side` (see [`Out::push_with`]).
/// Returns whether a record was queued; a seal failure is counted (`seal_failed`), as is a
/// full batch or stage. The caller checks the sequence space and the size first.
#[inline(always)]
pub(crate) fn seal_to(
    out: &mut Out<'_>,
    side: Side,
    peer: SocketAddr,
    flow: usize,
    sealer: &mut WriteState,
    content_type: ContentType,
    plaintext: &[u8],
) -> bool {
    let len = plaintext.len();
    let at = sealer.plaintext_offset();
    let mut sealed = false;
    let queued = out.push_with(side, peer, flow, sealer.record_len(len), |buf| {
        let Some(dst) = buf.get_mut(at..at + len) else {
            return 0;
        };
        dst.copy_from_slice(plaintext);
        match sealer.seal(content_type, buf, len) {
            Ok(n) => {
                sealed = true;
                n
            }
            Err(_) => 0,
        }
    });
    match queued {
        Some(_) if sealed => {
            out.tally.records_sealed += 1;
            true
        }
        Some(_) => {
            out.tally.seal_failed += 1;
            false
        }
        None => false,
    }
}

/// RFC 9853 §5.1 (basic check): an authenticated record of `session` that was the newest
/// it has seen came from `source`, not its address, in a datagram of `received` bytes.
/// The session stays where it is; `source` is sent a path_challenge, and what it sent
/// counts towards what may be sent to it before it answers (§2, §5). While another address is
/// being checked the new one is not ("the presented algorithms are not designed to handle
/// nested rebindings ... A new path validation will start when new data is received").
///
/// Version-neutral: DTLS 1.3 sessions (RFC 9853 covers both versions) take the same path,
/// the challenge sealed with the session's write state as a record whose inner content
/// type is return_routability_check.
#[cold]
pub(crate) fn check_new_path<F>(
    session: &mut Session<F>,
    out: &mut Out<'_>,
    now: Instant,
    source: SocketAddr,
    received: usize,
) {
    match &mut session.path {
        PathState::Off => return,
        PathState::Checking(check) => {
            if check.to == source {
                check.received += received as u64;
            }
            return;
        }
        PathState::Idle => {}
    }
    session.path = PathState::Checking(Box::new(PathCheck {
        to: source,
        cookie: [0; dtls_proto::RRC_COOKIE_LEN],
        sent_at: now,
        challenges: 0,
        received: received as u64,
        sent: 0,
        validated: false,
    }));
    // Probing a new path: under a fresh CID of the peer when it gave us one (RFC 9853 §9:
    // "peers SHOULD avoid using the same CID on multiple network paths, in particular
    // when initiating connection migration or when probing a new network path").
    rotate_peer_cid(session, out);
    send_challenge(session, out, now);
}

/// Sends a path_challenge with a fresh cookie to the address being checked (RFC 9853 §5.3:
/// "Each path_challenge message MUST contain random data"), within the anti-amplification
/// limit: a challenge that would pass it is not sent (the next datagram from the address,
/// or the sweep, tries again).
fn send_challenge<F>(session: &mut Session<F>, out: &mut Out<'_>, now: Instant) {
    let record_len = session.sealer.record_len(RRC_MESSAGE_LEN);
    if session.sealer.sequences_left() == 0 || record_len > out.tx.max_datagram() {
        return;
    }
    let Some(check) = session.path.check_mut() else {
        return;
    };
    check.sent_at = now;
    check.challenges += 1;
    if !check.spend(record_len) {
        return;
    }
    check.cookie = out.cookies.next();
    let (to, cookie) = (check.to, check.cookie);
    if send_rrc(session, out, to, RrcMessage::challenge(cookie)) {
        out.tally.rrc_challenges_sent += 1;
    }
}

/// Seals one return_routability_check message to `to` on the DTLS side.
fn send_rrc<F>(
    session: &mut Session<F>,
    out: &mut Out<'_>,
    to: SocketAddr,
    msg: RrcMessage,
) -> bool {
    let mut body = [0u8; RRC_MESSAGE_LEN];
    let Ok(len) = msg.emit(&mut body) else {
        return false;
    };
    let (side, flow) = (out.mode.dtls(), session.id().to_token());
    let sent = seal_to(
        out,
        side,
        to,
        flow,
        &mut session.sealer,
        ContentType::ReturnRoutabilityCheck,
        &body[..len],
    );
    if sent {
        session.counters.records_sealed += 1;
    }
    sent
}

/// An opened return_routability_check record of `session` from `source`.
///
/// - path_challenge: answered at once with a path_response to `source` (RFC 9853 §5.4:
///   "The responder MUST NOT delay sending an elicited `path_response`", "MUST send
///   exactly one ... for each valid `path_challenge` it received", "to the address from
///   which the corresponding `path_challenge` was received").
/// - path_response: validates the address being checked when it echoes the last cookie
///   sent; [`finish_path_check`] then moves the session. Anything else is dropped (§5.4:
///   "The initiator MUST silently discard any invalid `path_response` or `path_drop`").
/// - path_drop answers the enhanced check (§5.2), which we never send: discarded.
///
/// RFC 9853 §3: "The client and server MUST NOT use RRC unless both sides have
/// successfully exchanged `rrc` extensions": without it every message is dropped.
#[cold]
fn handle_rrc<F>(session: &mut Session<F>, out: &mut Out<'_>, source: SocketAddr, body: &[u8]) {
    if matches!(session.path, PathState::Off) {
        out.tally.drop_unexpected_content += 1;
        return;
    }
    let Some(RrcMessage::Known { kind, cookie }) = rrc::parse(body) else {
        // §4: unknown types are parsed and "gracefully" ignored.
        out.tally.drop_unexpected_content += 1;
        return;
    };
    match kind {
        RrcMessageType::PathChallenge => {
            if session.sealer.sequences_left() == 0 {
                return;
            }
            if let Some(check) = session.path.check_mut()
                && check.to == source
            {
                // Our reply to an unvalidated address counts towards its limit too.
                check.sent += session.sealer.record_len(RRC_MESSAGE_LEN) as u64;
            }
            // The peer saw us on a new path: our records there carry a fresh CID of its,
            // the answer first (RFC 9853 §9).
            rotate_peer_cid(session, out);
            if send_rrc(session, out, source, RrcMessage::response(cookie)) {
                out.tally.rrc_responses_sent += 1;
            }
        }
        RrcMessageType::PathResponse => match session.path.check_mut() {
            Some(check) if check.challenges > 0 && check.cookie == cookie => {
                check.validated = true;
            }
            _ => out.tally.drop_unexpected_content += 1,
        },
        RrcMessageType::PathDrop | RrcMessageType::Unknown(_) => {
            out.tally.drop_unexpected_content += 1;
        }
    }
}

/// DTLS 1.3: after an address change (the peer's: its move, or the check of its new
/// address; ours, as its path_challenge shows) our records carry the peer's next spare
/// CID, when it gave us one (RFC 9147 §9: "Implementations SHOULD use a new CID whenever
/// sending on a new path"). Without spares the CID stays (the peer still accepts it);
/// DTLS 1.2 has no way to get new CIDs (RFC 9146 has no update message: a new handshake
/// is the only way). Each path_challenge of the peer takes the next spare: a retransmitted
/// one (our answer was lost) uses one more, which the peer accepts as well (it retires the
/// earlier ones), and no time or state tells it from the challenge of a second move.
///
/// The engine learns the new CID ([`ControlInbound::PeerCidRotated`]): its own records
/// (ACKs, post-handshake messages) must carry it too, since the peer may retire the old
/// one as soon as it sees the new, and it asks the peer for more when few spares are left.
#[cold]
fn rotate_peer_cid<F>(session: &mut Session<F>, out: &mut Out<'_>) {
    if let WriteState::V13(write) = &mut session.sealer
        && write.rotate()
    {
        out.tally.cid_rotations += 1;
        out.report(ControlInbound::PeerCidRotated {
            session: session.handle,
            cid: write.peer_cid.as_slice().to_vec(),
        });
    }
}

/// DTLS 1.3: the peer put `to`, a later CID of ours, in a record that authenticated and
/// was the newest: it becomes the session's CID and the earlier ones are retired
/// ([`SessionTable::switch_cid`]); the engine replaces them
/// ([`ControlInbound::CidsRetired`]).
#[cold]
fn switch_cid<F>(table: &mut SessionTable<F>, id: SlotId, out: &mut Out<'_>, to: &CidKey) {
    let retired = table.switch_cid(id, to);
    if retired.is_empty() {
        return;
    }
    out.tally.peer_cid_switches += 1;
    out.tally.cids_retired += retired.len() as u64;
    if let Some(session) = table.session(id) {
        out.report(ControlInbound::CidsRetired {
            session: session.handle,
            cids: retired.iter().map(|c| c.as_slice().to_vec()).collect(),
        });
    }
}

/// Moves session `id` to the address its path check validated, if one did (RFC 9853
/// §5.1: "When the initiator receives the `return_routability_check` message of type
/// `path_response` and verifies that it contains the sent cookie, it updates the peer
/// address binding"); the old address is forgotten.
#[cold]
fn finish_path_check<F>(table: &mut SessionTable<F>, id: SlotId, out: &mut Out<'_>) {
    let Some(session) = table.session_mut(id) else {
        return;
    };
    let to = match &session.path {
        PathState::Checking(check) if check.validated => check.to,
        _ => return,
    };
    let (from, handle) = (session.peer, session.handle);
    session.path = PathState::Idle;
    out.tally.rrc_validated += 1;
    if table.rebind(id, to) {
        out.tally.sessions_moved += 1;
        out.report(ControlInbound::PeerMoved {
            session: handle,
            from,
            peer: to,
        });
    }
}

/// The sweep's visit of a session checking a new address: the challenge is sent again
/// after [`RRC_TIMEOUT`] without an answer, and after [`RRC_CHALLENGES`] the check gives
/// up and the session stays where it was (RFC 9853 §5.1: "If T expires, the peer address
/// binding is not updated").
pub(crate) fn path_timeout<F>(session: &mut Session<F>, out: &mut Out<'_>, now: Instant) {
    let Some(check) = session.path.check_mut() else {
        return;
    };
    if now.saturating_duration_since(check.sent_at) < RRC_TIMEOUT {
        return;
    }
    if check.challenges >= RRC_CHALLENGES {
        session.path = PathState::Idle;
        out.tally.rrc_failed += 1;
        return;
    }
    send_challenge(session, out, now);
}

/// One datagram from session `id`'s upstream flow: backend plaintext sealed to the peer
/// (serve), or the server's records opened and delivered to the local source (connect).
pub(crate) fn handle_flow_datagram<F>(
    table: &mut SessionTable<F>,
    id: SlotId,
    out: &mut Out<'_>,
    now: Instant,
    datagram: &mut [u8],
) {
    out.tally.upstream_datagrams_in += 1;
    out.tally.upstream_bytes_in += datagram.len() as u64;
    match out.mode.dtls() {
        Side::Flow => handle_protected(table, id, out, now, datagram),
        Side::Net => {
            let Some(session) = table.session_mut(id) else {
                return;
            };
            session.last_activity = now;
            seal_record(session, out, ContentType::ApplicationData, datagram);
        }
    }
}
