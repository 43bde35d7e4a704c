//! The DTLS 1.3 handshake engine (RFC 9147 on RFC 8446), both roles, beside the DTLS 1.2
//! engine and driven the same way (`handle_*` in, `poll_*` out, time as an argument,
//! randomness injected); [`crate::Connection`] dispatches to one or the other.
//!
//! - [`transport`]: epoch 0 in DTLSPlaintext records, epochs 2 (handshake) and 3
//!   (application) under unified headers with record-number encryption; our flight cut to
//!   the MTU, with what the peer acknowledged of it (RFC 9147 §7);
//! - [`client`] / [`server`]: the messages of each role: a full handshake with
//!   certificates (ECDSA, RSA-PSS, Ed25519) and optional client authentication, key
//!   exchange in X25519MLKEM768, X25519, P-256 or P-384, HelloRetryRequest when the
//!   client's key share is for a group the server does not take.
//!
//! Retransmission (RFC 9147 §5.8): a flight is resent whole the first time, then only
//! what the peer did not acknowledge; the timer doubles (1 s to 60 s by default, the
//! configuration's [`crate::RetransmitConfig`]). Receiving part of the peer's next flight
//! answers ours (RFC 9147 §7.1: it is implicitly acknowledged); while waiting for the
//! rest, the timer sends an ACK of the records we have instead of our flight, so the peer
//! resends only what is missing. The final flight (the client's Finished) is resent until
//! the server's ACK arrives (RFC 9147 §5.8.3, §7).
//!
//! On completion [`Event::KeysReady`] carries [`crate::RecordKeys::Dtls13`]: the epoch-3
//! keys and traffic secrets each way. Keep feeding the engine the peer's datagrams (it
//! ignores application data) until the peer's ACK or application data shows the handshake
//! ended, as with DTLS 1.2.
//!
//! After completion: KeyUpdate both ways (RFC 9147 §8, [`crate::Event::KeysUpdated`]);
//! NewSessionTickets from a server with ticket keys, kept by the client for
//! [`crate::Connection::poll_session_ticket`] (RFC 8446 §4.6.1).
//! External PSKs (RFC 8446 §4.2.11) replace certificates when both sides know the
//! identity, and so do resumption tickets (RFC 8446 §2.2), with psk_dhe_ke or, where both
//! sides allow it, psk_ke ([`crate::Config::tls13_psk_modes`]).
//!
//! Connection IDs (RFC 9147 §9) with [`crate::Config::connection_id`]: negotiated in the
//! hellos, carried by every protected record, more of them with NewConnectionId and
//! RequestConnectionId ([`cids`]).
//!
//! Not here yet: early data (never accepted).

#[cfg(test)]
mod adversarial_tests;
#[cfg(test)]
mod cid_tests;
mod cids;
pub(crate) mod client;
#[cfg(test)]
mod loss_tests;
mod messages;
#[cfg(test)]
mod mtu_tests;
#[cfg(test)]
mod nonce_tests;
#[cfg(test)]
mod parsing_tests;
mod psk;
#[cfg(test)]
mod psk_tests;
#[cfg(test)]
mod restart_tests;
#[cfg(test)]
mod resumption_tests;
pub(crate) mod server;
#[cfg(test)]
mod srtp_tests;
#[cfg(test)]
mod state_machine_tests;
#[cfg(test)]
mod tests;
pub(crate) mod transport;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use dataplane::record::v13::{
    InnerContentType, MixedKind, MixedRecords, Opener13, Sealer13, TrafficKeys13, reconstruct_epoch,
};
use dataplane::record::{RecordHeader, ReplayWindow};
use dtls_crypto::pki_types::UnixTime;
use dtls_crypto::tls13::{MasterSecret, ResumptionMasterSecret, TrafficSecret};
use dtls_crypto::{Rng, Transcript};
use dtls_proto::tls13::{Ack, KeyUpdate, RecordNumber};
use dtls_proto::{
    ACK, Alert, AlertDescription, AlertLevel, DropReason, FragmentOutcome, HandshakeFragments,
    HandshakeType, MessageCaps, ReassembledMessage, Reassembler, ReassemblyConfig,
    Tls13SuiteParams,
};

use crate::config::{CidIssuer, Config, RandomCids};
use crate::connection::{ClaimedIdentity, ConnectionStats};
use crate::error::HandshakeError;
use crate::events::{EpochKeys13, Event, PeerIdentity, Transmit, UpdatedKeys};
use crate::keys::ticket::SessionTicket;
use crate::role::Role;
use crate::timer::{RetransmitTimer, TimerAction};
use transport::{Flight13, OutMessage13, Transport13};

/// Sequence numbers of epoch 3 the engine keeps for itself after completion (ACKs,
/// alerts); the data plane's first record uses the number after them.
pub(crate) const ENGINE_SEQUENCE_RESERVE: u64 = 64;

/// Sequence numbers of the engine's reserve that ACKs leave to our KeyUpdate's copies
/// (the first and its retransmissions, `max_retransmits` 12 by default): below it ACKs are
/// withheld (counted) until the KeyUpdate moved us to a fresh reserve.
pub(crate) const ACK_FLOOR: u64 = ENGINE_SEQUENCE_RESERVE / 4;

/// The epoch of handshake traffic keys (RFC 9147 §6.1).
pub(crate) const EPOCH_HANDSHAKE: u64 = 2;
/// The epoch of the first application traffic keys (RFC 9147 §6.1).
pub(crate) const EPOCH_APPLICATION: u64 = 3;

/// Where a DTLS 1.3 handshake stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum State13 {
    ExpectClientHello,
    ExpectServerHello,
    ExpectEncryptedExtensions,
    ExpectCertificateOrRequest,
    ExpectCertificate,
    ExpectCertificateVerify,
    ExpectFinished,
    Established,
    Failed,
    Closed,
}

impl State13 {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::ExpectClientHello => "ExpectClientHello",
            Self::ExpectServerHello => "ExpectServerHello",
            Self::ExpectEncryptedExtensions => "ExpectEncryptedExtensions",
            Self::ExpectCertificateOrRequest => "ExpectCertificateOrRequest",
            Self::ExpectCertificate => "ExpectCertificate",
            Self::ExpectCertificateVerify => "ExpectCertificateVerify",
            Self::ExpectFinished => "ExpectFinished",
            Self::Established => "Established",
            Self::Failed => "Failed",
            Self::Closed => "Closed",
        }
    }
}

/// The handshake secrets once the ServerHello is known: both handshake traffic secrets
/// and the master secret that follows them (RFC 8446 §7.1).
pub(crate) struct Secrets13 {
    pub(crate) client_handshake: TrafficSecret,
    pub(crate) server_handshake: TrafficSecret,
    pub(crate) master: MasterSecret,
}

/// What a role keeps.
#[derive(Debug)]
pub(crate) enum Side13 {
    Client(Box<client::ClientState13>),
    Server(Box<server::ServerState13>),
}

/// One DTLS 1.3 handshake engine.
pub(crate) struct Engine13 {
    pub(crate) core: Core13,
    pub(crate) side: Side13,
}

/// What both roles share.
pub(crate) struct Core13 {
    pub(crate) role: Role,
    pub(crate) peer: SocketAddr,
    pub(crate) config: Arc<Config>,
    pub(crate) rng: Box<dyn Rng + Send>,
    pub(crate) state: State13,
    pub(crate) transport: Transport13,
    reassembler: Reassembler,
    pub(crate) transcript: Transcript,
    pub(crate) suite: Option<Tls13SuiteParams>,
    pub(crate) secrets: Option<Secrets13>,
    /// The message_seq of our next handshake message (RFC 9147 §5.2).
    pub(crate) next_send_seq: u16,
    flight: Flight13,
    /// The peer's messages since we sent our flight answer it (RFC 9147 §7.1).
    flight_answered: bool,
    /// Handshake records of the peer's current flight that we received and processed,
    /// to acknowledge (RFC 9147 §7).
    to_ack: Vec<RecordNumber>,
    /// The newest handshake record of the peer we processed: a later one that skips
    /// sequence numbers shows a loss (RFC 9147 §7.1).
    last_record: Option<RecordNumber>,
    /// When to acknowledge a partly received peer flight (RFC 9147 §7.1).
    ack_deadline: Option<Instant>,
    /// A record of the datagram being read showed a loss: acknowledge once it is read.
    ack_now: bool,
    timer: RetransmitTimer,
    outbox: VecDeque<Vec<u8>>,
    pub(crate) events: VecDeque<Event>,
    pub(crate) stats: ConnectionStats,
    last_peer_triggered: Option<Instant>,
    /// Client: the server answered in DTLS 1.2 (a HelloVerifyRequest or a DTLS 1.2
    /// ServerHello); the DTLS 1.2 engine takes over with this ClientHello and the CID it
    /// offered.
    pub(crate) fallback: Option<(dtls_proto::ClientHello, Option<Vec<u8>>)>,
    /// After completion: our current application write secret and the peer's, for
    /// KeyUpdate (RFC 8446 §7.2).
    pub(crate) app_secrets: Option<(TrafficSecret, TrafficSecret)>,
    /// Our KeyUpdate is the current flight: switch write keys once it is acknowledged.
    update_pending: bool,
    /// After a HelloRetryRequest: the transcript bytes before the second ClientHello
    /// (message_hash and the HelloRetryRequest), for PSK binders (RFC 8446 §4.2.11.2).
    pub(crate) retry_prefix: Vec<u8>,
    /// After completion: the resumption master secret, for NewSessionTicket PSKs (RFC
    /// 8446 §4.6.1).
    pub(crate) resumption: Option<ResumptionMasterSecret>,
    /// After completion: who the peer proved to be, for the tickets of this session
    /// (RFC 8446 §2.2: a resumed session keeps the original identity).
    pub(crate) peer_identity: Option<PeerIdentity>,
    /// Client: tickets received, for [`crate::Connection::poll_session_ticket`] (the
    /// newest [`crate::MAX_TLS13_TICKETS`]).
    pub(crate) tickets: VecDeque<SessionTicket>,
    /// The connection IDs, once negotiated (RFC 9147 §9).
    pub(crate) cids: Option<cids::Cids13>,
    /// Where the CIDs we issue come from (a server's: the driver's, naming the owner).
    pub(crate) issuer: Box<dyn CidIssuer + Send>,
}

impl std::fmt::Debug for Engine13 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine13")
            .field("role", &self.core.role)
            .field("peer", &self.core.peer)
            .field("state", &self.core.state.name())
            .finish_non_exhaustive()
    }
}

/// The largest NewConnectionId we read: a list of 2 + 255 bytes of CIDs and the usage
/// byte (far more than the [`cids::MAX_SPARE_CIDS`] we keep).
const MAX_NEW_CONNECTION_ID: usize = 2 + 255 + 1;

/// Caps per message type of what the peer of `role` may send (a claim costs nothing until
/// its bytes arrive; these stop a claim of a huge Finished or ServerHello).
fn message_caps(config: &Config, role: Role) -> MessageCaps {
    match role {
        Role::Server => MessageCaps::uniform(0)
            .with(HandshakeType::ClientHello, 1 << 14)
            .with(
                HandshakeType::Certificate,
                config.max_client_certificate_chain,
            )
            .with(HandshakeType::CertificateVerify, 4 + 1024)
            .with(HandshakeType::Finished, 48)
            .with(HandshakeType::KeyUpdate, 1)
            .with(HandshakeType::RequestConnectionId, 1)
            .with(HandshakeType::NewConnectionId, MAX_NEW_CONNECTION_ID),
        Role::Client => MessageCaps::NONE
            .with(HandshakeType::ServerHello, 1 << 14)
            // server_version, cookie<0..2^8-1> (RFC 6347 §4.2.1).
            .with(HandshakeType::HelloVerifyRequest, 2 + 1 + 255)
            .with(HandshakeType::CertificateVerify, 4 + 1024)
            .with(HandshakeType::Finished, 48)
            .with(HandshakeType::KeyUpdate, 1)
            .with(HandshakeType::RequestConnectionId, 1)
            .with(HandshakeType::NewConnectionId, MAX_NEW_CONNECTION_ID),
    }
}

impl Core13 {
    pub(crate) fn new(
        role: Role,
        config: Arc<Config>,
        rng: Box<dyn Rng + Send>,
        peer: SocketAddr,
        plain_seq: u64,
    ) -> Self {
        let max = config.max_handshake_buffer;
        let limits = ReassemblyConfig {
            max_handshake_bytes: max,
            max_message_len: max.min(ReassemblyConfig::default().max_message_len),
            message_caps: message_caps(&config, role),
            ..ReassemblyConfig::default()
        };
        let reassembler =
            Reassembler::with_budget(limits, 0, Arc::clone(&config.reassembly_budget));
        let mut transcript = Transcript::new();
        // TLS 1.3 signs transcript hashes, never the raw messages.
        transcript.stop_retaining();
        Self {
            role,
            peer,
            timer: RetransmitTimer::new(config.retransmit),
            config,
            rng,
            state: match role {
                Role::Client => State13::ExpectServerHello,
                Role::Server => State13::ExpectFinished,
            },
            transport: Transport13::new(plain_seq),
            reassembler,
            transcript,
            suite: None,
            secrets: None,
            next_send_seq: 0,
            flight: Flight13::default(),
            flight_answered: false,
            to_ack: Vec::new(),
            last_record: None,
            ack_deadline: None,
            ack_now: false,
            outbox: VecDeque::new(),
            events: VecDeque::new(),
            stats: ConnectionStats::default(),
            last_peer_triggered: None,
            fallback: None,
            app_secrets: None,
            update_pending: false,
            retry_prefix: Vec::new(),
            resumption: None,
            peer_identity: None,
            tickets: VecDeque::new(),
            cids: None,
            issuer: Box::new(RandomCids),
        }
    }

    pub(crate) fn is_established(&self) -> bool {
        self.state == State13::Established
    }

    pub(crate) fn is_finished(&self) -> bool {
        matches!(self.state, State13::Failed | State13::Closed)
    }

    /// Whether more handshake records of the peer may come that we acknowledge: not
    /// after failing, and not on a server that received the client's final flight.
    fn awaits_peer_handshake(&self) -> bool {
        !(self.is_finished() || self.is_established() && self.role == Role::Server)
    }

    pub(crate) fn suite(&self) -> Result<Tls13SuiteParams, HandshakeError> {
        self.suite.ok_or(HandshakeError::Internal {
            what: "no suite negotiated",
        })
    }

    pub(crate) fn secrets(&self) -> Result<&Secrets13, HandshakeError> {
        self.secrets.as_ref().ok_or(HandshakeError::Internal {
            what: "no handshake secrets",
        })
    }

    /// Expects `seq` as the peer's next message_seq.
    pub(crate) fn expect_peer_seq(&mut self, seq: u16) {
        self.reassembler.advance_to(seq);
    }

    /// Adds one message (TLS-style 4-byte header and body, RFC 9147 §5.2) to the
    /// transcript.
    pub(crate) fn hash_message(&mut self, msg_type: HandshakeType, body: &[u8]) {
        let mut header = Vec::with_capacity(4);
        // Bodies are below 2^24 (the reassembler's and our own caps).
        let _ = dtls_proto::tls13::messages::put_tls_handshake_header(
            &mut header,
            msg_type,
            body.len(),
        );
        self.transcript.update(&header);
        self.transcript.update(body);
    }

    /// A message of our next flight: numbered, hashed, queued for [`Core13::send_flight`].
    pub(crate) fn out_message(
        &mut self,
        epoch: u64,
        msg_type: HandshakeType,
        body: Vec<u8>,
    ) -> OutMessage13 {
        self.hash_message(msg_type, &body);
        let seq = self.next_send_seq;
        self.next_send_seq = self.next_send_seq.wrapping_add(1);
        OutMessage13::new(epoch, msg_type, seq, body)
    }

    /// Installs our write keys for `epoch` from `secret`.
    pub(crate) fn install_write(
        &mut self,
        epoch: u64,
        secret: &TrafficSecret,
    ) -> Result<(), HandshakeError> {
        let keys = self.traffic_keys(secret)?;
        self.transport.install_write(Sealer13::new(epoch, keys));
        Ok(())
    }

    /// Installs the peer's keys for `epoch` from `secret`.
    pub(crate) fn install_read(
        &mut self,
        epoch: u64,
        secret: &TrafficSecret,
    ) -> Result<(), HandshakeError> {
        let keys = self.traffic_keys(secret)?;
        let window = ReplayWindow::new(ReplayWindow::DEFAULT_SIZE);
        self.transport
            .install_read(Opener13::new(epoch, keys, window));
        Ok(())
    }

    pub(crate) fn traffic_keys(
        &self,
        secret: &TrafficSecret,
    ) -> Result<TrafficKeys13, HandshakeError> {
        let aead = self.suite()?.aead();
        let keys = secret.traffic_keys(aead);
        TrafficKeys13::new(aead, keys.key(), keys.iv(), keys.sn_key()).map_err(|_| {
            HandshakeError::Internal {
                what: "traffic key lengths",
            }
        })
    }

    // ----- input -----

    pub(crate) fn handle_datagram(
        &mut self,
        side: &mut Side13,
        now: Instant,
        wall: UnixTime,
        peer: SocketAddr,
        datagram: &[u8],
    ) {
        if peer != self.peer || self.is_finished() {
            return;
        }
        // The CID length of the peer's protected records is known once the hellos
        // negotiated it, possibly by a record of this very datagram (a ServerHello with
        // the server's first protected records): the rest is read again with it.
        let mut offset = 0;
        'datagram: loop {
            let cid_len = self.transport.local_cid_len();
            let rest = datagram.get(offset..).unwrap_or_default();
            let mut records = MixedRecords::new(rest, cid_len);
            for record in records.by_ref() {
                if self.is_finished() || self.fallback.is_some() {
                    break 'datagram;
                }
                self.handle_record(side, now, wall, record.kind, record.bytes);
                if self.transport.local_cid_len() != cid_len {
                    offset += record.range.end;
                    continue 'datagram;
                }
            }
            if records.dropped_bytes() > 0 {
                self.stats.malformed_records += 1;
            }
            break;
        }
        // The ACK for a loss goes out once the whole datagram was read: a later record of
        // it may complete the flight (then there is nothing left to acknowledge).
        if std::mem::take(&mut self.ack_now) && self.awaits_peer_handshake() {
            self.send_ack();
            self.ack_deadline = None;
        }
    }

    /// One record of a datagram from the peer.
    fn handle_record(
        &mut self,
        side: &mut Side13,
        now: Instant,
        wall: UnixTime,
        kind: MixedKind,
        bytes: &[u8],
    ) {
        match kind {
            MixedKind::Plaintext(content_type) => {
                let Ok(header) = RecordHeader::new_checked(bytes) else {
                    self.stats.malformed_records += 1;
                    return;
                };
                if header.epoch() != 0 {
                    // RFC 9147 §4: DTLS 1.3 protects every epoch but 0 with the
                    // unified header.
                    self.stats.ignored_records += 1;
                    return;
                }
                let number = RecordNumber {
                    epoch: 0,
                    sequence: header.sequence(),
                };
                self.handle_content(side, now, wall, content_type, number, header.payload());
            }
            MixedKind::Ciphertext(header) => {
                let Some(epoch) =
                    reconstruct_epoch(header.epoch_bits, self.transport.read_epochs())
                else {
                    self.stats.ignored_records += 1;
                    return;
                };
                // RFC 9147 §4 / §9: the negotiated CID is in every protected record.
                if !self.admits_cid(header.cid(bytes)) {
                    self.stats.ignored_records += 1;
                    return;
                }
                let cid_len = self.transport.local_cid_len();
                let Some(opener) = self.transport.opener_mut(epoch) else {
                    self.stats.ignored_records += 1;
                    return;
                };
                let mut buf = bytes.to_vec();
                let Ok(opened) = opener.open(&mut buf, cid_len) else {
                    // RFC 9147 §4.5.2: "Invalid records SHOULD be silently discarded".
                    self.stats.rejected_records += 1;
                    return;
                };
                let number = RecordNumber {
                    epoch,
                    sequence: opened.sequence,
                };
                let content_type = opened.content_type as u8;
                let plaintext = opened.plaintext.to_vec();
                if opened.content_type == InnerContentType::ApplicationData {
                    // The data plane opens application data with its own keys.
                    self.stats.ignored_records += 1;
                    return;
                }
                self.handle_content(side, now, wall, content_type, number, &plaintext);
            }
            MixedKind::Dtls12Cid => self.stats.ignored_records += 1,
        }
    }

    /// A record the data plane opened under application keys (it holds them, RFC 9147
    /// §4): handshake messages (KeyUpdate, NewSessionTicket, ...) or an ACK's body, with
    /// the record's epoch and sequence number. Only after completion; records of an
    /// epoch below the application's are never the data plane's and are ignored.
    pub(crate) fn handle_post_handshake(
        &mut self,
        side: &mut Side13,
        now: Instant,
        wall: UnixTime,
        number: RecordNumber,
        ack: bool,
        plaintext: &[u8],
    ) {
        if !self.is_established() || number.epoch < EPOCH_APPLICATION {
            self.stats.ignored_records += 1;
            return;
        }
        let content_type = if ack {
            ACK
        } else {
            InnerContentType::Handshake as u8
        };
        self.handle_content(side, now, wall, content_type, number, plaintext);
        self.keep_reserve(now);
    }

    /// After completion the engine seals its ACKs, KeyUpdates and alerts from a few
    /// sequence numbers of each write epoch ([`ENGINE_SEQUENCE_RESERVE`]); the data plane
    /// uses the rest. Once half of them are spent, a KeyUpdate moves us to a new epoch
    /// (with a fresh reserve) before they run out: it goes first, other post-handshake
    /// flights wait for it ([`Self::reserve_low`]), and ACKs leave the last
    /// [`ACK_FLOOR`] numbers to its retransmissions. A peer that sends post-handshake
    /// messages faster than it acknowledges our KeyUpdate (a flood) therefore costs us
    /// withheld ACKs and deferred answers, never the engine.
    pub(crate) fn keep_reserve(&mut self, now: Instant) {
        if self.reserve_low()
            && let Err(e) = self.start_key_update(now, false)
        {
            self.fail(e);
        }
    }

    /// Whether half of the engine's sequence numbers of the write epoch are spent: new
    /// post-handshake flights other than our KeyUpdate wait until it moved us on.
    pub(crate) fn reserve_low(&self) -> bool {
        self.transport
            .reserve_left(self.transport.write_epoch())
            .is_some_and(|left| left <= ENGINE_SEQUENCE_RESERVE / 2)
    }

    /// Whether a new post-handshake flight (a NewConnectionId, a RequestConnectionId)
    /// must wait: one flight at a time, and none while the reserve waits for our KeyUpdate.
    pub(crate) fn flight_busy(&self) -> bool {
        !self.flight.is_empty() || self.reserve_low()
    }

    fn handle_content(
        &mut self,
        side: &mut Side13,
        now: Instant,
        wall: UnixTime,
        content_type: u8,
        number: RecordNumber,
        payload: &[u8],
    ) {
        const ALERT: u8 = InnerContentType::Alert as u8;
        const HANDSHAKE: u8 = InnerContentType::Handshake as u8;
        match content_type {
            HANDSHAKE => self.handle_handshake_record(side, now, wall, number, payload),
            ACK if number.epoch != 0 => {
                self.handle_ack(payload);
                // A spent reserve's KeyUpdate before anything else that waited.
                self.keep_reserve(now);
                // A RequestConnectionId held while this flight was under way.
                if let Err(e) = self.answer_connection_ids(now) {
                    self.fail(e);
                }
            }
            ALERT => {
                // An unauthenticated alert is believed only before the peer's keys are
                // in use: a spoofed epoch-0 alert must not end a keyed handshake.
                if number.epoch == 0 && self.transport.read_epoch() != 0 {
                    self.stats.ignored_records += 1;
                    return;
                }
                self.handle_alert(payload);
            }
            _ => self.stats.ignored_records += 1,
        }
    }

    fn handle_handshake_record(
        &mut self,
        side: &mut Side13,
        now: Instant,
        wall: UnixTime,
        number: RecordNumber,
        payload: &[u8],
    ) {
        let mut useful = false;
        let mut old = false;
        let mut old_post_handshake = false;
        for fragment in HandshakeFragments::new(payload) {
            let Ok((header, data)) = fragment else {
                self.stats.malformed_records += 1;
                break;
            };
            // RFC 9147 §5: ClientHello, ServerHello and HelloRetryRequest are the only
            // plaintext handshake messages; everything else is protected.
            let hello = matches!(
                header.msg_type,
                HandshakeType::ClientHello
                    | HandshakeType::ServerHello
                    | HandshakeType::HelloVerifyRequest
            );
            if hello != (number.epoch == 0) {
                self.stats.malformed_records += 1;
                continue;
            }
            match self.reassembler.handle_fragment(&header, data) {
                FragmentOutcome::Accepted => useful = true,
                FragmentOutcome::Old { .. }
                    if matches!(
                        header.msg_type,
                        HandshakeType::KeyUpdate
                            | HandshakeType::NewSessionTicket
                            | HandshakeType::RequestConnectionId
                            | HandshakeType::NewConnectionId
                    ) =>
                {
                    // A post-handshake message again: our ACK was lost (RFC 9147 §7).
                    old_post_handshake = true;
                }
                FragmentOutcome::Old { .. } => old = true,
                FragmentOutcome::Dropped {
                    reason: DropReason::HandshakeBudget | DropReason::GlobalBudget,
                } => self.stats.buffer_refused += 1,
                FragmentOutcome::Dropped {
                    reason: DropReason::LengthMismatch | DropReason::TypeMismatch,
                } => {
                    // The newest wins, as in the 1.2 engine: a spoofer's fragment must not
                    // block the real message.
                    self.stats.conflicting_fragments += 1;
                    self.reassembler.clear();
                    if self.reassembler.handle_fragment(&header, data) == FragmentOutcome::Accepted
                    {
                        useful = true;
                    }
                }
                FragmentOutcome::Dropped { .. } => self.stats.malformed_records += 1,
            }
        }
        let mut gap = false;
        if useful {
            if !self.to_ack.contains(&number) {
                self.to_ack.push(number);
            }
            // RFC 9147 §7.1: part of the peer's next flight implicitly acknowledges ours.
            self.flight_answered = true;
            gap = self.last_record.is_some_and(|last| {
                last.epoch == number.epoch && number.sequence > last.sequence.saturating_add(1)
            });
            if self.last_record.is_none_or(|last| number > last) {
                self.last_record = Some(number);
            }
        }
        while let Some(message) = self.reassembler.poll_message() {
            if self.is_finished() || self.fallback.is_some() {
                return;
            }
            if let Err(e) = self.handle_message(side, now, wall, number.epoch, message) {
                return self.fail(e);
            }
        }
        if old_post_handshake && !self.is_finished() {
            self.to_ack.push(number);
            self.send_ack();
            self.to_ack.clear();
        } else if old && !useful {
            self.handle_peer_retransmission(now, number);
        }
        // RFC 9147 §7.1: "When an implementation detects a disruption in the receipt of
        // the current incoming flight, it SHOULD generate an ACK that covers the messages
        // from that flight which it has received and processed so far." A record that
        // skips sequence numbers is such a disruption; the flight is still incomplete while
        // our own flight is the one answering nothing yet (the peer's is not done).
        let awaiting_more = self.awaits_peer_handshake();
        if gap && awaiting_more {
            self.ack_now = true;
        } else if useful && awaiting_more && self.flight_answered && !self.to_ack.is_empty() {
            // RFC 9147 §7.1: a flight that stays incomplete is acknowledged after a
            // quarter of the retransmission timeout, before the peer's timer resends it
            // whole.
            self.ack_deadline
                .get_or_insert(now + self.config.retransmit.initial / 4);
        }
    }

    /// The peer sent records of a flight we already processed: if we completed, our ACK
    /// was lost (RFC 9147 §7: ACK again); otherwise our answer was, and we resend what it
    /// did not acknowledge (RFC 9147 §5.8.1).
    fn handle_peer_retransmission(&mut self, now: Instant, number: RecordNumber) {
        let gap = self.config.retransmit.initial / 4;
        if self.last_peer_triggered.is_some_and(|at| now < at + gap) {
            return;
        }
        self.last_peer_triggered = Some(now);
        if self.flight_answered && !self.is_established() {
            // The peer resends the flight we are receiving: say what we have (RFC 9147
            // §7.1), our own flight was answered already.
            self.send_ack();
            return;
        }
        if self.is_established() && self.role == Role::Server {
            if !self.to_ack.contains(&number) {
                self.to_ack.push(number);
            }
            self.send_ack();
            return;
        }
        if self.flight.is_empty() {
            return;
        }
        self.stats.peer_triggered_retransmits += 1;
        self.retransmit_flight(false);
    }

    fn handle_ack(&mut self, payload: &[u8]) {
        let Ok(ack) = Ack::parse(payload) else {
            self.stats.malformed_records += 1;
            return;
        };
        if !self.flight.handle_ack(&ack.records) {
            return;
        }
        self.flight_answered = true;
        if !self.flight.is_acked() {
            // RFC 9147 §7.2: "Upon receipt of an ACK that leaves it with only some
            // messages from a flight having been acknowledged, an implementation SHOULD
            // retransmit the unacknowledged messages or fragments."
            self.retransmit_flight(true);
        }
        if self.flight.is_acked() {
            // RFC 9147 §5.8.3 / §7: a flight acknowledged in full needs no timer; the
            // final flight is done.
            self.timer.disarm();
            if self.is_established() {
                self.flight = Flight13::default();
                if std::mem::take(&mut self.update_pending)
                    && let Err(e) = self.switch_write_keys()
                {
                    self.fail(e);
                }
            }
        }
    }

    fn handle_alert(&mut self, payload: &[u8]) {
        let Ok(alert) = Alert::parse(payload) else {
            self.stats.malformed_records += 1;
            return;
        };
        self.events.push_back(Event::AlertReceived {
            level: alert.level,
            description: alert.description,
        });
        if alert.description == AlertDescription::CloseNotify {
            // RFC 8446 §6.1: each party sends close_notify before closing its write side.
            if !self.is_finished() {
                self.queue_alert(Alert::close_notify());
                self.timer.disarm();
                self.state = State13::Closed;
                self.events.push_back(Event::Closed { by_peer: true });
            }
            return;
        }
        // RFC 8446 §6: every alert but close_notify and user_canceled is fatal in TLS 1.3,
        // whatever its level says.
        if alert.level == AlertLevel::Fatal || alert.description != AlertDescription::UserCanceled {
            self.timer.disarm();
            if self.is_established() {
                self.state = State13::Closed;
                self.events.push_back(Event::Closed { by_peer: true });
            } else {
                self.fail(HandshakeError::PeerAlert {
                    description: alert.description,
                });
            }
        }
    }

    /// A whole handshake message; `epoch` is the epoch of the record that completed it.
    fn handle_message(
        &mut self,
        side: &mut Side13,
        now: Instant,
        wall: UnixTime,
        epoch: u64,
        message: ReassembledMessage,
    ) -> Result<(), HandshakeError> {
        if self.is_established() {
            // Post-handshake messages: NewSessionTicket (client) and KeyUpdate; anything
            // else is unexpected here.
            if message.msg_type == HandshakeType::NewSessionTicket && self.role == Role::Client {
                self.handle_new_session_ticket(now, &message.body)?;
                // RFC 9147 §5.8.4 / §7: post-handshake messages are acknowledged.
                self.send_ack();
                self.to_ack.clear();
                return Ok(());
            }
            match message.msg_type {
                HandshakeType::KeyUpdate => {
                    return self.handle_key_update(now, epoch, &message.body);
                }
                HandshakeType::RequestConnectionId => {
                    return self.handle_request_connection_id(now, &message.body);
                }
                HandshakeType::NewConnectionId => {
                    return self.handle_new_connection_id(&message.body);
                }
                _ => {}
            }
            self.stats.ignored_records += 1;
            return Ok(());
        }
        self.state = match side {
            Side13::Client(client) => client.handle_message(self, now, wall, message)?,
            Side13::Server(server) => server.handle_message(self, now, wall, message)?,
        };
        Ok(())
    }

    pub(crate) fn handle_timeout(&mut self, now: Instant) {
        if self.ack_deadline.is_some_and(|at| now >= at) {
            self.ack_deadline = None;
            if !self.is_finished() {
                self.send_ack();
            }
        }
        match self.timer.handle_timeout(now) {
            TimerAction::Idle => {}
            TimerAction::Retransmit => {
                if self.flight_answered && !self.to_ack.is_empty() {
                    // RFC 9147 §7.1: the peer's flight is arriving but stalled: say what
                    // we have, so it resends only the rest.
                    self.send_ack();
                } else {
                    self.stats.timer_retransmits += 1;
                    let copies = self.config.retransmit.copies.max(1);
                    for _ in 0..copies {
                        self.retransmit_flight(true);
                    }
                }
            }
            TimerAction::GiveUp => {
                if self.is_established() && self.update_pending {
                    // Our KeyUpdate was sent its whole retransmission budget long and never
                    // acknowledged: the peer is gone or broken. RFC 9147 §8: "KeyUpdates
                    // MUST be acknowledged" and "Implementations MUST NOT send records
                    // with the new keys until the KeyUpdate and all preceding messages
                    // have been acknowledged", so the keys we meant to retire (near an
                    // AEAD limit, RFC 9147 §4.5.3) could never be: the connection fails
                    // (the driver closes the session) rather than going on under them
                    // with no way to update again.
                    self.fail(HandshakeError::Timeout {
                        state: "KeyUpdate unacknowledged",
                        unauthenticated: self.stats.rejected_records,
                        finished_unanswered: false,
                    });
                    return;
                }
                if self.is_established() {
                    // The final flight (or another post-handshake flight: a ticket, CIDs)
                    // was never acknowledged, but nothing depends on it: stop resending it.
                    self.flight = Flight13::default();
                    return;
                }
                self.fail(HandshakeError::Timeout {
                    state: self.state.name(),
                    unauthenticated: self.stats.rejected_records,
                    finished_unanswered: self.role == Role::Server
                        && self.state == State13::ExpectFinished,
                });
            }
        }
    }

    pub(crate) fn poll_transmit(&mut self, buf: &mut [u8]) -> Option<Transmit> {
        while let Some(datagram) = self.outbox.pop_front() {
            let Some(dst) = buf.get_mut(..datagram.len()) else {
                continue;
            };
            dst.copy_from_slice(&datagram);
            self.stats.datagrams_sent += 1;
            return Some(Transmit {
                destination: self.peer,
                len: datagram.len(),
                segment_size: None,
            });
        }
        None
    }

    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        match (self.timer.poll_timeout(), self.ack_deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    pub(crate) fn close(&mut self) {
        if self.is_finished() {
            return;
        }
        self.queue_alert(Alert::close_notify());
        self.timer.disarm();
        self.ack_deadline = None;
        self.state = State13::Closed;
        self.events.push_back(Event::Closed { by_peer: false });
    }

    // ----- KeyUpdate (RFC 9147 §8, RFC 8446 §4.6.3) -----

    /// The peer's KeyUpdate, carried in a record of `epoch`: its next epoch's read keys go
    /// to the driver, our ACK goes out, and when the peer asked for it, our own KeyUpdate.
    fn handle_key_update(
        &mut self,
        now: Instant,
        epoch: u64,
        body: &[u8],
    ) -> Result<(), HandshakeError> {
        let request = KeyUpdate::parse(body).map_err(|source| HandshakeError::Decode {
            message: "KeyUpdate",
            source,
        })?;
        // RFC 9147 §8: a KeyUpdate sent in epoch N moves its sender to N + 1, and
        // "implementations MUST NOT send records with the new keys or send a new KeyUpdate
        // until the previous KeyUpdate has been acknowledged". A KeyUpdate in an epoch
        // older than the newest we read is one the peer may not send: we moved it past
        // that epoch already. It is acknowledged (the peer may be missing our ACK) and
        // counted, and moves nothing: the peer's epoch moves at most once per epoch it
        // actually used, however many KeyUpdates one epoch carries. (A data plane keeps
        // opening the old epoch until it is retired, so without this check a flood in one
        // epoch moved the read epoch once per message.)
        if epoch < self.transport.read_epoch() {
            self.stats.stale_key_updates += 1;
            self.send_ack();
            self.to_ack.clear();
            return Ok(());
        }
        let (_, peer) = self.app_secrets.as_ref().ok_or(HandshakeError::Internal {
            what: "KeyUpdate without application secrets",
        })?;
        let next = peer.next();
        let epoch = self.transport.read_epoch() + 1;
        self.install_read(epoch, &next)?;
        let keys = self.traffic_keys(&next)?;
        let read = EpochKeys13 {
            epoch,
            keys,
            secret: next.duplicate(),
            next_sequence: 0,
        };
        if let Some((_, peer)) = self.app_secrets.as_mut() {
            *peer = next;
        }
        self.events
            .push_back(Event::KeysUpdated(Box::new(UpdatedKeys {
                read: Some(read),
                write: None,
            })));
        // RFC 9147 §8: the KeyUpdate is acknowledged with an ACK.
        self.send_ack();
        self.to_ack.clear();
        // RFC 8446 §4.6.3: "If the request_update field is set to "update_requested",
        // then the receiver MUST send a KeyUpdate of its own with request_update set to
        // "update_not_requested" prior to sending its next Application Data record."
        if request == KeyUpdate::Requested && !self.update_pending {
            self.start_key_update(now, false)?;
        }
        Ok(())
    }

    /// Sends our KeyUpdate (in the current write epoch, retransmitted until the peer
    /// acknowledges it); the write keys change once it does (RFC 9147 §8: "the sender
    /// MUST NOT send records protected with the new keys until the KeyUpdate has been
    /// acknowledged").
    pub(crate) fn start_key_update(
        &mut self,
        now: Instant,
        request_peer: bool,
    ) -> Result<(), HandshakeError> {
        // One at a time, and not while the final flight still waits for its ACK.
        if !self.is_established() || self.update_pending || !self.flight.is_empty() {
            return Ok(());
        }
        let mut body = Vec::with_capacity(1);
        if request_peer {
            KeyUpdate::Requested.emit(&mut body);
        } else {
            KeyUpdate::NotRequested.emit(&mut body);
        }
        let epoch = self.transport.write_epoch();
        let message = self.out_message(epoch, HandshakeType::KeyUpdate, body);
        self.send_flight(now, vec![message])?;
        self.update_pending = true;
        Ok(())
    }

    fn switch_write_keys(&mut self) -> Result<(), HandshakeError> {
        let (own, _) = self.app_secrets.as_ref().ok_or(HandshakeError::Internal {
            what: "KeyUpdate without application secrets",
        })?;
        let next = own.next();
        let epoch = self.transport.write_epoch() + 1;
        self.install_write(epoch, &next)?;
        let next_sequence = self
            .transport
            .reserve(epoch, ENGINE_SEQUENCE_RESERVE)
            .ok_or(HandshakeError::Internal {
                what: "no write keys for the new epoch",
            })?;
        let write = EpochKeys13 {
            epoch,
            keys: self.traffic_keys(&next)?,
            secret: next.duplicate(),
            next_sequence,
        };
        if let Some((own, _)) = self.app_secrets.as_mut() {
            *own = next;
        }
        self.events
            .push_back(Event::KeysUpdated(Box::new(UpdatedKeys {
                read: None,
                write: Some(write),
            })));
        Ok(())
    }

    // ----- output -----

    /// Sends `messages` as our new flight; with `expect_answer` (or for the final flight,
    /// which waits for an ACK) the retransmission timer runs.
    pub(crate) fn send_flight(
        &mut self,
        now: Instant,
        messages: Vec<OutMessage13>,
    ) -> Result<(), HandshakeError> {
        let post_handshake = messages.iter().all(|m| m.epoch >= EPOCH_APPLICATION);
        self.flight = Flight13::new(messages);
        self.flight_answered = false;
        self.to_ack.clear();
        self.last_record = None;
        self.ack_deadline = None;
        self.ack_now = false;
        self.flight.pack(
            self.config.mtu,
            false,
            &mut self.transport,
            &mut self.outbox,
        )?;
        // A flight of post-handshake messages only (KeyUpdate, NewSessionTicket,
        // NewConnectionId, RequestConnectionId: RFC 8446 §4.6, "These messages use a
        // handshake content type and are encrypted under the appropriate application
        // traffic key") gets its own retransmission budget, whenever it goes out: RFC 9147
        // §5.8.4, "reliability is established via independent state machines, each of
        // which behaves as described in Section 5.8.1". `max_handshake_time` bounds the
        // handshake's flights only.
        if post_handshake {
            self.timer.arm_post_handshake_flight(now);
        } else {
            self.timer.arm_new_flight(now);
        }
        Ok(())
    }

    /// Sends our flight again: with `only_unacked`, the parts the peer has not
    /// acknowledged (RFC 9147 §7.1: "implementations SHOULD ... retransmit only the
    /// records the peer has not acknowledged"); after repeated loss at the back-off MTU
    /// (RFC 9147 §5.8.1 on RFC 6347 §4.1.1.1 path MTU discovery).
    fn retransmit_flight(&mut self, only_unacked: bool) {
        let mut mtu = self.config.mtu;
        if self.timer.retransmits() >= self.config.retransmit.backoff_after {
            mtu = mtu.min(
                self.config
                    .retransmit
                    .backoff_mtu
                    .max(crate::config::MIN_MTU),
            );
        }
        if let Err(e) = self
            .flight
            .pack(mtu, only_unacked, &mut self.transport, &mut self.outbox)
        {
            self.fail(e);
        }
    }

    /// After completion, the path changed: our unacknowledged flight goes out again now
    /// (its copies went to the old path), and its timer starts over.
    pub(crate) fn path_changed(&mut self, now: Instant) {
        if !self.is_established() || self.flight.is_empty() || self.flight.is_acked() {
            return;
        }
        self.retransmit_flight(true);
        self.timer.arm_new_flight(now);
    }

    /// Sends an ACK of the handshake records received in the peer's current flight, in
    /// our newest write epoch (RFC 9147 §7: "During the handshake, ACK records MUST be
    /// sent with an epoch which is equal to or higher than the record which is being
    /// acknowledged ... After the handshake, implementations MUST use the highest available
    /// sending epoch").
    ///
    /// The epoch rule binds the handshake only: afterwards each side's epoch moves with its
    /// own KeyUpdates (RFC 9147 §8), so a peer that updated its keys twice while we did not
    /// sends its KeyUpdate in epoch 4 while we write in 3, and that KeyUpdate MUST still be
    /// acknowledged ("KeyUpdates MUST be acknowledged"). Filtering it out left the peer
    /// retransmitting its second KeyUpdate until it gave up (found by
    /// `control/dtlsd/tests/retired_epochs13.rs`).
    pub(crate) fn send_ack(&mut self) {
        let epoch = self.transport.write_epoch();
        if epoch == 0 {
            return;
        }
        let established = epoch >= EPOCH_APPLICATION;
        let mut records: Vec<RecordNumber> = self
            .to_ack
            .iter()
            .copied()
            .filter(|r| r.epoch <= epoch || established && r.epoch >= EPOCH_APPLICATION)
            .collect();
        records.sort_unstable();
        // A datagram's worth of record numbers (16 bytes each).
        records.truncate(64);
        if records.is_empty() {
            return;
        }
        // The reserve's last numbers are our KeyUpdate's (see `keep_reserve`): a peer
        // whose messages outrun its ACK of our KeyUpdate is not acknowledged meanwhile
        // (it retransmits; RFC 9147 §7 lets an ACK cover them later).
        if self
            .transport
            .reserve_left(epoch)
            .is_some_and(|left| left <= ACK_FLOOR)
        {
            self.stats.acks_withheld += 1;
            return;
        }
        let mut body = Vec::with_capacity(2 + 16 * records.len());
        if (Ack { records }).emit(&mut body).is_err() {
            return;
        }
        let mut datagram = Vec::with_capacity(body.len() + 32);
        if self
            .transport
            .push_record(&mut datagram, InnerContentType::Ack, epoch, &[&body])
            .is_ok()
        {
            self.outbox.push_back(datagram);
        }
    }

    /// Queues a one-record datagram carrying `alert` in our newest write epoch.
    pub(crate) fn queue_alert(&mut self, alert: Alert) {
        let mut datagram = Vec::with_capacity(64);
        let epoch = self.transport.write_epoch();
        if self
            .transport
            .push_record(
                &mut datagram,
                InnerContentType::Alert,
                epoch,
                &[&alert.to_bytes()],
            )
            .is_ok()
        {
            self.outbox.push_back(datagram);
        }
    }

    /// Completion on our side: the final flight (client) or ACK (server) went out.
    pub(crate) fn established(&mut self) {
        if self.role == Role::Server {
            // The ACK that follows covers the client's whole flight.
            self.timer.disarm();
            self.ack_deadline = None;
            self.flight = Flight13::default();
        }
    }

    /// Fails the handshake: fatal alert when the error calls for one, event, dead state.
    pub(crate) fn fail(&mut self, error: HandshakeError) {
        if self.is_finished() {
            return;
        }
        if let Some(description) = error.alert() {
            self.queue_alert(Alert::fatal(description));
        }
        self.timer.disarm();
        self.ack_deadline = None;
        self.flight = Flight13::default();
        self.state = State13::Failed;
        self.events.push_back(Event::HandshakeFailed(error));
    }
}

impl Engine13 {
    /// See [`crate::Connection::settle`]: drops what only the handshake needed once it is
    /// over and no flight of ours awaits an ACK. False when it cannot settle yet.
    pub(crate) fn settle(&mut self) -> bool {
        let core = &mut self.core;
        if !core.is_established() || !core.flight.is_empty() || core.update_pending {
            return false;
        }
        // The handshake epoch goes: a record of the peer under it (a retransmitted
        // Finished) is dropped unopened from now on, unanswered.
        core.transport.drop_epochs_below(EPOCH_APPLICATION);
        core.reassembler.clear();
        // Nothing after completion reads the transcript (no post-handshake client
        // authentication here); every secret that needed it is derived already.
        let mut transcript = Transcript::new();
        transcript.stop_retaining();
        core.transcript = transcript;
        core.secrets = None;
        core.flight = Flight13::default();
        core.retry_prefix = Vec::new();
        core.to_ack = Vec::new();
        core.outbox.shrink_to_fit();
        core.events.shrink_to_fit();
        match &mut self.side {
            Side13::Client(c) => c.settle(),
            Side13::Server(s) => s.settle(),
        }
        true
    }

    pub(crate) fn claimed_identity(&self) -> ClaimedIdentity<'_> {
        match &self.side {
            Side13::Client(_) => ClaimedIdentity {
                server_name: self.core.config.server_name.as_deref(),
                psk_identity: None,
            },
            Side13::Server(server) => ClaimedIdentity {
                server_name: server.server_name.as_deref(),
                psk_identity: None,
            },
        }
    }

    pub(crate) fn handle_datagram(
        &mut self,
        now: Instant,
        wall: UnixTime,
        peer: SocketAddr,
        datagram: &[u8],
    ) {
        self.core
            .handle_datagram(&mut self.side, now, wall, peer, datagram);
    }

    /// See [`crate::Connection::handle_post_handshake`].
    pub(crate) fn handle_post_handshake(
        &mut self,
        now: Instant,
        wall: UnixTime,
        number: RecordNumber,
        ack: bool,
        plaintext: &[u8],
    ) {
        self.core
            .handle_post_handshake(&mut self.side, now, wall, number, ack, plaintext);
    }

    /// Whether `datagram` starts with a ClientHello of another handshake (another
    /// random): see [`crate::Connection::is_new_client_hello`].
    pub(crate) fn is_new_client_hello(&self, datagram: &[u8]) -> bool {
        let Side13::Server(server) = &self.side else {
            return false;
        };
        let Ok(header) = RecordHeader::new_checked(datagram) else {
            return false;
        };
        let payload = header.payload();
        header.epoch() == 0
            && header.content_type() == InnerContentType::Handshake as u8
            && payload.first() == Some(&HandshakeType::ClientHello.to_u8())
            && payload
                .get(12 + 2..12 + 2 + 32)
                .is_some_and(|random| random != server.client_random)
    }
}
