//! New sessions refused because their upstream socket could not be had.
//!
//! Every session owns one upstream UDP socket, so a shard needs one file descriptor per
//! session (and per connect-mode source waiting for its handshake). When `socket(2)` fails
//! with EMFILE (the process is at its `RLIMIT_NOFILE`) or ENFILE (the system-wide table is
//! full), or the socket cannot be bound or connected for another reason (e.g. no ephemeral
//! port left), the new session is refused, counted by reason, and nothing else changes:
//! established sessions keep their sockets and keep working.
//!
//! In serve's transparent mode the socket is also bound to the client's own address and
//! port; a bind the kernel refuses (EADDRINUSE: a socket of this host holds that port on a
//! wildcard address, e.g. the listen port itself; EADDRNOTAVAIL) refuses that session alone,
//! counted apart ([`TransparentSource`]).
//!
//! - Serve mode: the refusal comes at `InstallKeys`, after the handshake finished, so the
//!   peer believes it has a session. It is told with a fatal `internal_error` alert sealed
//!   under the keys it just agreed ([`Refusals`]), instead of being left with a session
//!   that silently drops everything.
//! - Connect mode: the refusal comes at a new local source's first datagram, before any
//!   handshake; that datagram is dropped and counted, and the source's next datagram tries
//!   again ([`refuse_source`]).

use std::io;
use std::net::SocketAddr;

use dataplane::record::ContentType;
use dtls_proto::{Alert, AlertDescription};

use crate::counters::Tally;
use crate::queue::InstallError;
use crate::records::WriteState;
use crate::relay::{self, Out, Side};

/// Most refused peers whose alert waits for their final flight; beyond that the alert is
/// sent at once.
const MAX_OWED: usize = 256;

/// Whether `error` says the process (EMFILE) or the system (ENFILE) ran out of file
/// descriptors.
pub fn is_out_of_descriptors(error: &io::Error) -> bool {
    matches!(error.raw_os_error(), Some(libc::EMFILE | libc::ENFILE))
}

/// Why a transparent upstream socket (serve, `upstream_source = "transparent"`) could not
/// take the client's address: the driver wraps the error of the option, bind or connect in
/// this, so the refusal is counted as `sessions_refused_transparent`.
#[derive(Debug, thiserror::Error)]
#[error("transparent bind to the client's address: {0}")]
pub struct TransparentSource(pub io::Error);

impl TransparentSource {
    /// `error` of a transparent socket as an `io::Error` marked as this, unless it is a lack
    /// of descriptors (counted as such, whatever the socket).
    pub fn wrap(error: io::Error) -> io::Error {
        if is_out_of_descriptors(&error) {
            error
        } else {
            io::Error::new(error.kind(), Self(error))
        }
    }

    /// Whether `error` is one [`Self::wrap`] marked.
    pub fn is(error: &io::Error) -> bool {
        error.get_ref().is_some_and(|e| e.is::<Self>())
    }
}

/// Counts one refused session under its reason.
fn count(error: &io::Error, tally: &mut Tally) {
    if is_out_of_descriptors(error) {
        tally.sessions_refused_descriptors += 1;
    } else if TransparentSource::is(error) {
        tally.sessions_refused_transparent += 1;
    } else {
        tally.sessions_refused_socket += 1;
    }
}

/// Connect mode: a new source's upstream socket could not be had; its datagram is dropped.
pub(crate) fn refuse_source(error: &io::Error, tally: &mut Tally) {
    count(error, tally);
    tally.drop_refused += 1;
}

/// A refused serve-mode peer still owed its alert.
#[derive(Debug)]
struct Owed {
    peer: SocketAddr,
    sealer: WriteState,
    /// Turns ended since the refusal.
    turns: u8,
}

/// Serve mode: peers whose session was refused after their handshake, each owed a fatal
/// `internal_error` alert under its new write keys.
///
/// Control queues `InstallKeys` before the `Transmit` carrying the server's final flight
/// (ChangeCipherSpec and Finished, epoch 1 sequence 0). The alert must follow that flight:
/// a client still in epoch 0 may discard an epoch-1 record (RFC 6347 §4.1). So the alert
/// goes out right after the peer's next `Transmit`, or at the end of the following turn's
/// commands when none came (an abbreviated handshake ends with the client's flight).
#[derive(Debug, Default)]
pub(crate) struct Refusals {
    owed: Vec<Owed>,
}

impl Refusals {
    /// Counts the refusal of `peer`'s session for `error` and owes it an alert sealed by
    /// `sealer` (the write keys just installed). Returns the error `InstallKeys` reports.
    pub fn refuse(
        &mut self,
        peer: SocketAddr,
        mut sealer: WriteState,
        error: &io::Error,
        out: &mut Out<'_>,
    ) -> InstallError {
        count(error, out.tally);
        self.owed.retain(|o| o.peer != peer);
        if self.owed.len() < MAX_OWED {
            self.owed.push(Owed {
                peer,
                sealer,
                turns: 0,
            });
        } else {
            send_internal_error(peer, &mut sealer, out);
        }
        if is_out_of_descriptors(error) {
            InstallError::OutOfDescriptors
        } else {
            InstallError::Upstream(error.kind())
        }
    }

    /// A handshake datagram to `peer` was just queued: the alert it is owed goes after it.
    pub fn after_transmit(&mut self, peer: SocketAddr, out: &mut Out<'_>) {
        if self.owed.is_empty() || out.tx.is_full() {
            return;
        }
        if let Some(i) = self.owed.iter().position(|o| o.peer == peer) {
            let mut owed = self.owed.swap_remove(i);
            send_internal_error(owed.peer, &mut owed.sealer, out);
        }
    }

    /// End of a turn's commands: sends the alerts owed since the previous turn (their
    /// flight did not come, or came before the keys), while the batch has room.
    pub fn end_turn(&mut self, out: &mut Out<'_>) {
        let mut i = 0;
        while i < self.owed.len() {
            if self.owed[i].turns == 0 {
                self.owed[i].turns = 1;
                i += 1;
            } else if out.tx.is_full() {
                return;
            } else {
                let mut owed = self.owed.swap_remove(i);
                send_internal_error(owed.peer, &mut owed.sealer, out);
            }
        }
    }
}

/// Seals a fatal `internal_error` alert to `peer` into the transmit batch. RFC 5246 §7.2.2:
/// internal_error is for "an internal error unrelated to the peer or the correctness of the
/// protocol (such as a memory allocation failure)", and "is always fatal"; RFC 5246 §7.2:
/// after a fatal alert both sides close the connection (we hold nothing more for it).
fn send_internal_error(peer: SocketAddr, sealer: &mut WriteState, out: &mut Out<'_>) {
    let alert = Alert::fatal(AlertDescription::InternalError).to_bytes();
    if sealer.sequences_left() == 0 {
        out.tally.drop_sequence_exhausted += 1;
        return;
    }
    // Serve mode only: the peer is on the shard socket.
    relay::seal_to(out, Side::Net, peer, 0, sealer, ContentType::Alert, &alert);
}

#[cfg(test)]
mod tests {
    use dataplane::record::{Aead, Opener, RecordKey, ReplayWindow, Sealer};
    use dtls_io::TxBatch;

    use super::*;
    use crate::fair::FairForward;
    use crate::flows::FlowTx;
    use crate::queue::ShardQueues;
    use crate::relay::RelayMode;

    fn key() -> RecordKey {
        RecordKey::new(Aead::Aes128Gcm, &[7; 16], &[9; 4]).expect("valid key sizes")
    }

    /// Everything an [`Out`] borrows.
    struct Parts {
        tx: TxBatch,
        flows: FlowTx,
        opened: Vec<crate::FlowRef>,
        queues: ShardQueues,
        tally: Tally,
        pad_state: u64,
        cookies: crate::rrc::RrcCookies,
        fair: FairForward,
        admitted: FairForward,
    }

    fn parts() -> Parts {
        Parts {
            tx: TxBatch::new(16, 1500, false),
            flows: FlowTx::new(false),
            opened: Vec::new(),
            queues: ShardQueues::new(4, 4),
            tally: Tally::default(),
            pad_state: 1,
            cookies: crate::rrc::RrcCookies::new(&[1; 32]),
            fair: FairForward::new(1 << 20),
            admitted: FairForward::admitted(1 << 20),
        }
    }

    macro_rules! out {
        ($p:expr) => {
            Out {
                tx: &mut $p.tx,
                flows: &mut $p.flows,
                opened: &mut $p.opened,
                queues: &$p.queues,
                tally: &mut $p.tally,
                mode: RelayMode::Serve,
                pad_state: &mut $p.pad_state,
                cookies: &mut $p.cookies,
                fair: &mut $p.fair,
                admitted: &mut $p.admitted,
                handoffs: None,
            }
        };
    }

    /// The queued datagrams to `peer`, in order (no GSO: one datagram per send).
    fn sent(out: &Out<'_>, peer: SocketAddr) -> Vec<Vec<u8>> {
        out.tx
            .sends()
            .filter(|s| s.destination == peer)
            .map(|s| s.payload.to_vec())
            .collect()
    }

    /// Opens `record` with the peer's read state for our write key (epoch 1).
    fn open_alert(record: &[u8]) -> Vec<u8> {
        let mut opener = Opener::new(1, key(), ReplayWindow::new(64));
        let mut record = record.to_vec();
        let opened = opener
            .open(&mut record)
            .expect("the alert opens under the keys");
        assert_eq!(opened.content_type, ContentType::Alert);
        opened.plaintext.to_vec()
    }

    fn emfile() -> io::Error {
        io::Error::from_raw_os_error(libc::EMFILE)
    }

    #[test]
    fn the_alert_follows_the_final_flight() {
        let peer: SocketAddr = "192.0.2.1:4433".parse().expect("address");
        let mut p = parts();
        let (mut out, mut refusals) = (out!(p), Refusals::default());
        let sealer = WriteState::V12(Sealer::new(1, key(), 1).expect("sealer"));
        let error = refusals.refuse(peer, sealer, &emfile(), &mut out);
        assert_eq!(error, InstallError::OutOfDescriptors);
        assert_eq!(out.tally.sessions_refused_descriptors, 1);
        assert_eq!(out.tally.sessions_refused_socket, 0);
        assert!(
            out.tx.is_empty(),
            "nothing before the server's final flight"
        );

        // Control's Transmit of the final flight, then the alert right after it.
        out.tx.push(peer, b"final flight").expect("room");
        refusals.after_transmit(peer, &mut out);
        let sent = sent(&out, peer);
        assert_eq!(sent.len(), 2);
        assert_eq!(sent[0], b"final flight");
        // RFC 5246 §7.2: fatal(2) internal_error(80).
        assert_eq!(open_alert(&sent[1]), [2, 80]);
        // Owed once: later turns send nothing more.
        refusals.end_turn(&mut out);
        refusals.end_turn(&mut out);
        assert_eq!(out.tx.len(), 2);
    }

    #[test]
    fn without_a_flight_the_alert_goes_at_the_next_turn() {
        let peer: SocketAddr = "192.0.2.2:4433".parse().expect("address");
        let mut p = parts();
        let (mut out, mut refusals) = (out!(p), Refusals::default());
        let sealer = WriteState::V12(Sealer::new(1, key(), 1).expect("sealer"));
        let no_port = io::Error::from_raw_os_error(libc::EADDRNOTAVAIL);
        let error = refusals.refuse(peer, sealer, &no_port, &mut out);
        assert_eq!(error, InstallError::Upstream(no_port.kind()));
        assert_eq!(out.tally.sessions_refused_socket, 1);
        // The turn that refused may still see the flight: nothing yet.
        refusals.end_turn(&mut out);
        assert!(out.tx.is_empty());
        // A Transmit to another peer does not release it.
        refusals.after_transmit("192.0.2.3:1".parse().expect("address"), &mut out);
        assert!(out.tx.is_empty());
        refusals.end_turn(&mut out);
        let sent = sent(&out, peer);
        assert_eq!(sent.len(), 1);
        assert_eq!(open_alert(&sent[0]), [2, 80]);
        assert_eq!(out.tally.records_sealed, 1);
    }

    #[test]
    fn emfile_and_enfile_are_out_of_descriptors() {
        assert!(is_out_of_descriptors(&io::Error::from_raw_os_error(
            libc::EMFILE
        )));
        assert!(is_out_of_descriptors(&io::Error::from_raw_os_error(
            libc::ENFILE
        )));
        assert!(!is_out_of_descriptors(&io::Error::from_raw_os_error(
            libc::EADDRNOTAVAIL
        )));
        assert!(!is_out_of_descriptors(&io::Error::other("no os error")));
    }

    #[test]
    fn a_transparent_bind_refused_is_counted_apart_but_no_descriptor_is_still_descriptors() {
        let peer: SocketAddr = "192.0.2.4:4433".parse().expect("address");
        let mut p = parts();
        let (mut out, mut refusals) = (out!(p), Refusals::default());
        let in_use = TransparentSource::wrap(io::Error::from_raw_os_error(libc::EADDRINUSE));
        assert!(TransparentSource::is(&in_use));
        let sealer = WriteState::V12(Sealer::new(1, key(), 1).expect("sealer"));
        let error = refusals.refuse(peer, sealer, &in_use, &mut out);
        assert_eq!(error, InstallError::Upstream(io::ErrorKind::AddrInUse));
        assert_eq!(out.tally.sessions_refused_transparent, 1);
        assert_eq!(out.tally.sessions_refused_socket, 0);
        // The peer is owed its alert like any refused session.
        refusals.end_turn(&mut out);
        refusals.end_turn(&mut out);
        assert_eq!(open_alert(&sent(&out, peer)[0]), [2, 80]);

        let no_fd = TransparentSource::wrap(emfile());
        assert!(!TransparentSource::is(&no_fd));
        let sealer = WriteState::V12(Sealer::new(1, key(), 1).expect("sealer"));
        let error = refusals.refuse(peer, sealer, &no_fd, &mut out);
        assert_eq!(error, InstallError::OutOfDescriptors);
        assert_eq!(out.tally.sessions_refused_descriptors, 1);
        assert_eq!(out.tally.sessions_refused_transparent, 1);
    }
}
