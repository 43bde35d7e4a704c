//! The per-packet paths: peer → backend ([`handle_datagram`]) and backend → peer
//! ([`drain_upstream`], [`seal_to_peer`]). Nothing here allocates except the copy of a
//! datagram handed to the control thread.

use std::io;
use std::net::SocketAddr;
use std::time::Instant;

use dataplane::record::{ContentType, DTLS_1_2, MAX_PLAINTEXT_LEN, OpenError, Records, RecordsMut};
use dtls_io::TxBatch;

use crate::counters::Tally;
use crate::queue::{AeadLimit, CloseReason, ControlInbound, ShardQueues};
use crate::session::{Session, SessionTable, SlotId};

/// RFC 5246 §7.2: AlertLevel warning(1), fatal(2); AlertDescription close_notify(0).
const ALERT_WARNING: u8 = 1;
const ALERT_FATAL: u8 = 2;
const CLOSE_NOTIFY: u8 = 0;

/// What the per-packet paths write to: the turn's transmit batch, the control queue and the
/// turn's tally.
#[derive(Debug)]
pub(crate) struct Out<'a> {
    pub tx: &'a mut TxBatch,
    pub queues: &'a ShardQueues,
    pub tally: &'a mut Tally,
}

impl Out<'_> {
    /// Hands `message` to control; a full queue drops it (counted, never blocks).
    pub fn report(&mut self, message: ControlInbound) {
        if self.queues.push_inbound(message).is_err() {
            self.tally.drop_queue_full += 1;
        }
    }

    fn forward(&mut self, peer: SocketAddr, datagram: &[u8]) {
        self.tally.handshake_forwarded += 1;
        self.report(ControlInbound::Handshake {
            peer,
            datagram: datagram.to_vec(),
        });
    }
}

/// What a read-only walk over a datagram found.
struct Scan {
    records: usize,
    /// Some record is epoch 0 or handshake content: the control thread needs the datagram.
    for_control: bool,
    /// Bytes after the last whole record.
    trailing: bool,
}

fn scan(datagram: &[u8]) -> Scan {
    let mut records = Records::new(datagram);
    let mut s = Scan {
        records: 0,
        for_control: false,
        trailing: false,
    };
    for r in records.by_ref() {
        s.records += 1;
        s.for_control |=
            r.header.epoch() == 0 || r.header.content_type() == ContentType::Handshake as u8;
    }
    s.trailing = records.dropped_bytes() > 0;
    s
}

/// One datagram from `source`: open its records with the peer's session and relay the
/// plaintext upstream; hand what the data plane does not handle to control; count and drop
/// the rest.
pub(crate) fn handle_datagram(
    table: &mut SessionTable,
    out: &mut Out<'_>,
    now: Instant,
    source: SocketAddr,
    datagram: &mut [u8],
) {
    out.tally.datagrams_in += 1;
    out.tally.bytes_in += datagram.len() as u64;
    let found = scan(datagram);
    let Some(id) = table.lookup(&source) else {
        // No session: during a handshake every datagram belongs to control (including the
        // client's epoch-1 Finished). Protected records alone cannot be anything control
        // handles.
        if found.for_control {
            out.forward(source, datagram);
        } else if found.records > 0 {
            out.tally.drop_unknown_session += 1;
        } else {
            out.tally.drop_malformed += 1;
        }
        return;
    };
    if found.records == 0 {
        out.tally.drop_malformed += 1;
        return;
    }
    if found.for_control {
        // Copied before any record is opened in place.
        out.forward(source, datagram);
    }
    if found.trailing {
        out.tally.drop_malformed += 1;
    }
    if let Some(reason) = open_records(table, id, out, now, datagram) {
        close_session(table, out, source, reason);
    }
}

/// Opens the records of a known peer's datagram in place; returns why the session must close,
/// if a record says so.
fn open_records(
    table: &mut SessionTable,
    id: SlotId,
    out: &mut Out<'_>,
    now: Instant,
    datagram: &mut [u8],
) -> Option<CloseReason> {
    let session = table.session_mut(id)?;
    for header in RecordsMut::new(datagram) {
        let (epoch, content_type) = (header.epoch(), header.content_type());
        if epoch == 0 || content_type == ContentType::Handshake as u8 {
            continue; // went to control with the whole datagram
        }
        if epoch != session.opener.epoch() {
            out.tally.drop_unknown_epoch += 1;
            session.counters.drops += 1;
            continue;
        }
        if content_type != ContentType::ApplicationData as u8
            && content_type != ContentType::Alert as u8
        {
            out.tally.drop_unexpected_content += 1;
            continue;
        }
        // RFC 6347 §4.1.2.6: the opener checks the replay window, verifies the tag and only
        // then updates the window (CVE-2016-2181).
        match session.opener.open(header.into_inner()) {
            Ok(opened) => {
                out.tally.records_opened += 1;
                session.counters.records_opened += 1;
                session.last_activity = now;
                match opened.content_type {
                    ContentType::ApplicationData => relay_upstream(session, out, opened.plaintext),
                    ContentType::Alert => {
                        if let Some(reason) = handle_alert(session, out, opened.plaintext) {
                            return Some(reason);
                        }
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
                        report_integrity_limit(session, out);
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

fn relay_upstream(session: &mut Session, out: &mut Out<'_>, plaintext: &[u8]) {
    match session.upstream.send(plaintext) {
        Ok(n) => {
            out.tally.upstream_datagrams_out += 1;
            out.tally.upstream_bytes_out += n as u64;
            session.counters.plaintext_in += n as u64;
        }
        Err(_) => out.tally.upstream_send_errors += 1,
    }
}

/// RFC 9147 §4.5.3: past the integrity limit the endpoint "SHOULD immediately close the
/// connection"; control decides (close or rekey), told once per key.
fn report_integrity_limit(session: &mut Session, out: &mut Out<'_>) {
    if session.opener.integrity_limit_reached() && !session.limit_reported {
        session.limit_reported = true;
        out.report(ControlInbound::AeadLimitReached {
            peer: session.peer,
            limit: AeadLimit::Integrity {
                failed: session.opener.failed_authentications(),
            },
        });
    }
}

/// An authenticated alert from the peer. Returns the reason when the session ends.
fn handle_alert(session: &mut Session, out: &mut Out<'_>, alert: &[u8]) -> Option<CloseReason> {
    let &[level, description] = alert else {
        out.tally.drop_malformed += 1;
        return None;
    };
    if description == CLOSE_NOTIFY {
        // RFC 5246 §7.2.1: "the other party MUST respond with a close_notify alert of its
        // own and close down the connection immediately".
        seal_to_peer(
            session,
            out,
            ContentType::Alert,
            &[ALERT_WARNING, CLOSE_NOTIFY],
        );
        return Some(CloseReason::CloseNotify);
    }
    if level == ALERT_FATAL {
        // RFC 5246 §7.2: on a fatal alert both parties "MUST immediately close the connection".
        return Some(CloseReason::FatalAlert { description });
    }
    out.tally.drop_unexpected_content += 1;
    None
}

/// Removes `peer`'s session and tells control why. Dropping the session closes its upstream
/// socket, which also takes it out of the shard's epoll set.
pub(crate) fn close_session(
    table: &mut SessionTable,
    out: &mut Out<'_>,
    peer: SocketAddr,
    reason: CloseReason,
) {
    if table.remove(&peer).is_some() {
        out.tally.sessions_closed += 1;
        out.report(ControlInbound::SessionClosed { peer, reason });
    }
}

/// Seals `plaintext` as one record to the session's peer straight into the transmit batch.
/// Returns whether a record was queued.
pub(crate) fn seal_to_peer(
    session: &mut Session,
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
                peer: session.peer,
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
    let at = session.sealer.plaintext_offset();
    let sealer = &mut session.sealer;
    let mut sealed = false;
    let pushed = out.tx.push_with(session.peer, record_len, |buf| {
        let Some(dst) = buf.get_mut(at..at + len) else {
            return 0;
        };
        dst.copy_from_slice(plaintext);
        match sealer.seal(content_type, DTLS_1_2, buf, len) {
            Ok(n) => {
                sealed = true;
                n
            }
            Err(_) => 0,
        }
    });
    match pushed {
        Ok(n) if sealed => {
            out.tally.records_sealed += 1;
            out.tally.datagrams_out += 1;
            out.tally.bytes_out += n as u64;
            session.counters.records_sealed += 1;
            session.counters.plaintext_out += len as u64;
            true
        }
        Ok(_) => {
            out.tally.seal_failed += 1;
            false
        }
        Err(_) => {
            out.tally.drop_tx_full += 1;
            false
        }
    }
}

/// How a drain of one upstream socket ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Drained {
    /// The socket has nothing more (or the session is gone): off the ready list.
    Empty,
    /// Budget or transmit batch exhausted: stay on the ready list for the next turn.
    More,
}

/// Relays up to `budget` backend datagrams of session `id` to its peer, each sealed into
/// the transmit batch. `scratch` must hold the largest UDP payload (65,507 bytes).
pub(crate) fn drain_upstream(
    table: &mut SessionTable,
    id: SlotId,
    out: &mut Out<'_>,
    now: Instant,
    scratch: &mut [u8],
    budget: usize,
) -> Drained {
    let Some(session) = table.session_mut(id) else {
        return Drained::Empty;
    };
    for _ in 0..budget {
        if out.tx.is_full() {
            return Drained::More;
        }
        match session.upstream.recv(scratch) {
            Ok(n) => {
                out.tally.upstream_datagrams_in += 1;
                out.tally.upstream_bytes_in += n as u64;
                session.last_activity = now;
                let plaintext = scratch.get(..n).unwrap_or(&[]);
                seal_to_peer(session, out, ContentType::ApplicationData, plaintext);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Drained::Empty,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            // E.g. ECONNREFUSED from an ICMP port unreachable: reported once, the socket
            // stays usable.
            Err(_) => out.tally.upstream_recv_errors += 1,
        }
    }
    Drained::More
}
