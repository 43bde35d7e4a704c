//! Completion: building [`SessionKeys`] for the data plane.

use dataplane::record::ReplayWindow;

use crate::connection::Core;
use crate::error::HandshakeError;
use crate::events::{EpochKeys, Event, RecordKeys, SessionKeys};
use crate::keys::exporter::Exporter;
use crate::keys::session::Writer;
use crate::keys::ticket::SessionTicket;
use crate::state::State;

/// Sequence numbers of the application write epoch the engine keeps for itself after
/// completion: resending its final flight when the peer retransmits, and alerts
/// (close_notify, no_renegotiation).
/// The shard's first record uses the number after the reserve, so no nonce is ever reused.
pub const ENGINE_SEQUENCE_RESERVE: u64 = 64;

impl Core {
    /// The handshake completed: hand the keys (and, for a client, the `ticket` it got)
    /// over; the next state is `Established`.
    pub(crate) fn complete(
        &mut self,
        ticket: Option<SessionTicket>,
    ) -> Result<State, HandshakeError> {
        let suite = self.hs.suite()?;
        let write_epoch = self.hs.writer.current_epoch();
        let next_write = self
            .hs
            .writer
            .reserve(write_epoch, ENGINE_SEQUENCE_RESERVE)
            .ok_or(HandshakeError::Internal {
                what: "complete without write keys",
            })?;
        let secrets = self.hs.secrets()?;
        let replay_window = self
            .config
            .replay_window
            .clamp(ReplayWindow::MIN_SIZE, ReplayWindow::MAX_SIZE);
        let keys = SessionKeys {
            peer: self.peer,
            suite: suite.suite(),
            records: RecordKeys::Dtls12 {
                read: EpochKeys {
                    epoch: self.reader.newest_epoch(),
                    key: secrets.keys.record_key(Writer::peer(self.role))?,
                    next_sequence: 0,
                },
                write: EpochKeys {
                    epoch: write_epoch,
                    key: secrets.keys.record_key(Writer::own(self.role))?,
                    next_sequence: next_write,
                },
            },
            version: dtls_proto::ProtocolVersion::Dtls1_2,
            replay_window,
            local_cid: self.hs.cids.as_ref().map(|c| c.local.clone()),
            peer_cid: self.hs.cids.as_ref().map(|c| c.peer.clone()),
            rrc: self.hs.cids.as_ref().is_some_and(|c| c.rrc),
            peer_identity: self.hs.peer_identity.clone(),
            alpn: self.hs.alpn.clone(),
            srtp_profile: self.hs.srtp_profile,
            heartbeat: self.hs.heartbeat,
            resumed: self.hs.resumed,
            exporter: Exporter::new(
                secrets.master.clone(),
                suite.prf_hash(),
                self.hs.client_random,
                self.hs.server_random,
            ),
            ticket,
        };
        // The client's last flight needs no more timer; the server's final flight is only
        // resent on a peer retransmission (RFC 6347 §4.2.4).
        self.timer.disarm();
        self.events.push_back(Event::KeysReady(Box::new(keys)));
        Ok(State::Established)
    }
}
