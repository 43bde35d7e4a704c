//! Serve mode: the turn's plaintext to the backend, sent once the receive batch is handled.
//!
//! Opening a record used to end in one `send` per datagram on the session's upstream
//! socket; on loopback that per-datagram trip through the stack was about half of a shard's
//! CPU. Now the plaintext is staged here (one copy) and [`UpstreamTx::flush`] sends each
//! session's datagrams together: equal-size runs of two or more as one UDP GSO send
//! (`UDP_SEGMENT`, where the kernel accepts it), the rest one `send` each. A session's
//! datagrams keep their order; different sessions never share a send (each has its own
//! socket).
//!
//! Bounded: [`STAGING_BYTES`] of plaintext and [`MAX_ENTRIES`] datagrams, allocated once.
//! The shard flushes before a datagram could overflow it ([`UpstreamTx::needs_flush`]);
//! should a push still not fit, that datagram is sent at once (counted, never dropped).

use dtls_io::{MAX_GSO_BYTES, MAX_GSO_SEGMENTS, send_segments};

use crate::counters::Tally;
use crate::session::{Session, SessionTable, SlotId};

/// Plaintext bytes staged per flush.
pub(crate) const STAGING_BYTES: usize = 256 * 1024;
/// Datagrams staged per flush.
pub(crate) const MAX_ENTRIES: usize = 8192;
/// Room kept for one more datagram: its largest plaintext (a 64 KiB datagram) and most
/// records (each at least 29 bytes on the wire).
const ONE_DATAGRAM_BYTES: usize = 65_536;
const ONE_DATAGRAM_RECORDS: usize = 65_536 / 29 + 1;

#[derive(Debug, Clone, Copy)]
struct Entry {
    id: SlotId,
    start: usize,
    len: usize,
}

/// Staged plaintext datagrams of one turn.
#[derive(Debug)]
pub(crate) struct UpstreamTx {
    staging: Vec<u8>,
    entries: Vec<Entry>,
    /// Where a GSO run is laid out contiguously.
    run: Vec<u8>,
    gso: bool,
}

impl UpstreamTx {
    /// Buffers for one flush; `gso` when the kernel accepts UDP GSO.
    pub fn new(gso: bool) -> Self {
        Self {
            staging: Vec::with_capacity(STAGING_BYTES),
            entries: Vec::with_capacity(MAX_ENTRIES),
            run: Vec::with_capacity(MAX_GSO_BYTES),
            gso,
        }
    }

    /// Whether one more datagram might not fit: flush before handling it.
    pub fn needs_flush(&self) -> bool {
        self.staging.len() + ONE_DATAGRAM_BYTES > STAGING_BYTES
            || self.entries.len() + ONE_DATAGRAM_RECORDS > MAX_ENTRIES
    }

    /// Stages `plaintext` for session `id`; `false` when it does not fit (send it now).
    pub fn push(&mut self, id: SlotId, plaintext: &[u8]) -> bool {
        if self.entries.len() >= MAX_ENTRIES || self.staging.len() + plaintext.len() > STAGING_BYTES
        {
            return false;
        }
        self.entries.push(Entry {
            id,
            start: self.staging.len(),
            len: plaintext.len(),
        });
        self.staging.extend_from_slice(plaintext);
        true
    }

    /// Sends everything staged, session by session, and empties the buffers.
    pub fn flush(&mut self, table: &mut SessionTable, tally: &mut Tally) {
        if self.entries.is_empty() {
            return;
        }
        // Grouped by session, each session's datagrams in arrival order (`start` grows with
        // arrival). Unstable sort: no scratch allocation on the per-packet path.
        self.entries
            .sort_unstable_by_key(|e| (e.id.to_token(), e.start));
        let mut i = 0;
        while i < self.entries.len() {
            let id = self.entries[i].id;
            let mut j = i + 1;
            while j < self.entries.len() && self.entries[j].id == id {
                j += 1;
            }
            match table.session_mut(id) {
                Some(session) => send_session(
                    session,
                    &self.entries[i..j],
                    &self.staging,
                    &mut self.run,
                    self.gso,
                    tally,
                ),
                // The session closed later in the same turn (e.g. its close_notify).
                None => tally.upstream_send_errors += (j - i) as u64,
            }
            i = j;
        }
        self.entries.clear();
        self.staging.clear();
    }
}

/// Sends one session's staged datagrams in order: equal-size runs through GSO.
fn send_session(
    session: &mut Session,
    entries: &[Entry],
    staging: &[u8],
    run: &mut Vec<u8>,
    gso: bool,
    tally: &mut Tally,
) {
    let bytes = |e: &Entry| staging.get(e.start..e.start + e.len).unwrap_or(&[]);
    let mut i = 0;
    while i < entries.len() {
        let size = entries[i].len;
        let mut j = i + 1;
        let mut total = size;
        if gso && size > 0 {
            // A GSO run: equal sizes, the last one may be shorter (and ends the run).
            while j < entries.len()
                && j - i < MAX_GSO_SEGMENTS
                && entries[j].len > 0
                && entries[j].len <= size
                && total + entries[j].len <= MAX_GSO_BYTES
            {
                total += entries[j].len;
                j += 1;
                if entries[j - 1].len < size {
                    break;
                }
            }
        }
        if j - i >= 2 {
            run.clear();
            for e in &entries[i..j] {
                run.extend_from_slice(bytes(e));
            }
            let segment = u16::try_from(size).unwrap_or(u16::MAX);
            account(
                session,
                tally,
                send_segments(&session.upstream, run, Some(segment)),
                j - i,
                total,
            );
            tally.upstream_gso_sends += 1;
        } else {
            let sent = session.upstream.send(bytes(&entries[i]));
            account(session, tally, sent, 1, size);
        }
        i = j;
    }
}

fn account(
    session: &mut Session,
    tally: &mut Tally,
    sent: std::io::Result<usize>,
    datagrams: usize,
    bytes: usize,
) {
    match sent {
        Ok(_) => {
            tally.upstream_datagrams_out += datagrams as u64;
            tally.upstream_bytes_out += bytes as u64;
            session.counters.plaintext_in += bytes as u64;
        }
        Err(_) => tally.upstream_send_errors += datagrams as u64,
    }
}
