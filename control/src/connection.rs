//! [`Connection12`]: one DTLS 1.2 handshake engine, either role, driven by `handle_*` and
//! drained by `poll_*` (no sockets, no clock reads, randomness injected).
//!
//! Record input: every record of a datagram is judged on its own; records that fail
//! parsing or authentication are dropped silently and counted (RFC 6347 §4.1.2.7:
//! "invalid records SHOULD be silently discarded").

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use dataplane::record::v13::{MixedKind, MixedRecords};
use dataplane::record::{
    CidOpener, ContentType, Opener, RecordHeader, RecordRepr, Records, ReplayWindow,
};
use dtls_crypto::Rng;
use dtls_crypto::pki_types::UnixTime;
use dtls_proto::{Alert, AlertDescription, AlertLevel, CHANGE_CIPHER_SPEC, HandshakeType};

use crate::client::ClientState;
use crate::config::Config;
use crate::error::HandshakeError;
use crate::events::{Event, Transmit};
use crate::flight::{Flight, pack_flight};
use crate::handshake::{Handshake, Message};
use crate::inbox::Inbox;
use crate::keys::session::Writer;
use crate::record_layer::{ReadOutcome, RecordReader, RecordWriter};
use crate::role::Role;
use crate::server::ServerState;
use crate::state::State;
use crate::timer::{RetransmitTimer, TimerAction};

/// Counters of what the engine dropped or did (for tests and metrics).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConnectionStats {
    /// Records dropped because their header or content did not parse.
    pub malformed_records: u64,
    /// Protected records (epoch 1 in DTLS 1.2) that failed authentication or replay
    /// checks.
    pub rejected_records: u64,
    /// Records of an epoch we have no keys for, or of a content type not handled here.
    pub ignored_records: u64,
    /// Flight retransmissions triggered by the timer.
    pub timer_retransmits: u64,
    /// Flight retransmissions triggered by a retransmitted peer flight.
    pub peer_triggered_retransmits: u64,
    /// Datagrams the engine produced.
    pub datagrams_sent: u64,
    /// Handshake fragments that disagreed with buffered ones about their message (the
    /// newest wins and the buffered messages are discarded).
    pub conflicting_fragments: u64,
    /// Handshake fragments refused because holding them would pass the connection's
    /// `max_handshake_buffer` or the shared `reassembly_budget` (not fatal: the peer
    /// retransmits).
    pub buffer_refused: u64,
    /// Renegotiation requests (an encrypted HelloRequest or ClientHello after completion)
    /// refused with a no_renegotiation warning; the session goes on.
    pub renegotiations_refused: u64,
    /// DTLS 1.3 KeyUpdates carried in an epoch older than the peer's newest (a new
    /// KeyUpdate before ours of the previous one was acknowledged, RFC 9147 §8):
    /// acknowledged, not acted on.
    pub stale_key_updates: u64,
    /// DTLS 1.3 ACKs not sent because the engine's sequence numbers of the epoch were
    /// nearly spent and our KeyUpdate (which brings fresh ones) was not yet acknowledged.
    pub acks_withheld: u64,
}

/// Who a peer claims to be during a handshake ([`crate::Connection::claimed_identity`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClaimedIdentity<'a> {
    /// The SNI host name (RFC 6066 §3).
    pub server_name: Option<&'a str>,
    /// The PSK identity (RFC 4279 §2).
    pub psk_identity: Option<&'a [u8]>,
}

/// One DTLS 1.2 handshake engine (client or server); [`crate::Connection`] wraps it.
///
/// Drive it with [`crate::Connection::handle_datagram`] and [`crate::Connection::handle_timeout`]; after
/// each call drain [`crate::Connection::poll_transmit`] and [`crate::Connection::poll_event`] and re-arm
/// your timer from [`crate::Connection::poll_timeout`].
///
/// Application data is not handled here: on [`Event::KeysReady`] build a
/// `dataplane::record::Sealer`/`Opener` from the keys. Keep passing every datagram from the
/// peer to the engine afterwards (it ignores epoch-1 application data): it answers a
/// retransmitted final flight (RFC 6347 §4.2.4), handles alerts and refuses renegotiation.
pub(crate) struct Connection12 {
    pub(crate) core: Core,
    pub(crate) side: Side,
}

/// What only one role keeps during a handshake.
#[derive(Debug)]
pub(crate) enum Side {
    Client(Box<ClientState>),
    Server(ServerState),
}

/// What both roles share: the peer, the configuration and randomness, the handshake state
/// and its shared data, the record layer, the retransmission timer and the queues out.
pub(crate) struct Core {
    pub(crate) role: Role,
    pub(crate) peer: SocketAddr,
    pub(crate) config: Arc<Config>,
    pub(crate) rng: Box<dyn Rng + Send>,
    pub(crate) state: State,
    pub(crate) hs: Handshake,
    pub(crate) timer: RetransmitTimer,
    pub(crate) outbox: VecDeque<Vec<u8>>,
    pub(crate) events: VecDeque<Event>,
    pub(crate) stats: ConnectionStats,
    /// Read epochs (the peer's ChangeCipherSpec installs the next one).
    pub(crate) reader: RecordReader,
    /// When a peer retransmission last made us resend our flight.
    last_peer_triggered: Option<Instant>,
}

impl std::fmt::Debug for Connection12 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection12")
            .field("role", &self.core.role)
            .field("peer", &self.core.peer)
            .field("state", &self.core.state.name())
            .field("stats", &self.core.stats)
            .finish_non_exhaustive()
    }
}

impl Connection12 {
    /// This engine's role.
    pub fn role(&self) -> Role {
        self.core.role
    }

    /// The protocol version this engine speaks, for logs.
    pub fn version(&self) -> &'static str {
        "1.2"
    }

    /// The negotiated cipher suite, once the ServerHello has been sent or received.
    pub fn suite(&self) -> Option<crate::CipherSuite> {
        self.core.hs.suite.map(|s| s.suite())
    }

    /// Who the peer claims to be so far, for logs (nothing here is verified): the server
    /// name (server: the client's SNI host name; client: the name we verify the server
    /// against) and the PSK identity (server: the one the client named, known or not;
    /// client: ours, when PSK suites are offered).
    pub fn claimed_identity(&self) -> ClaimedIdentity<'_> {
        match &self.side {
            Side::Server(server) => server.claimed_identity(),
            Side::Client(client) => client.claimed_identity(&self.core.config),
        }
    }

    /// The peer's address.
    pub fn peer(&self) -> SocketAddr {
        self.core.peer
    }

    /// Whether the handshake completed (and [`Event::KeysReady`] was queued).
    pub fn is_established(&self) -> bool {
        self.core.is_established()
    }

    /// Whether the engine is dead (failed or closed) and can be dropped.
    pub fn is_finished(&self) -> bool {
        self.core.is_finished()
    }

    /// The name of the current handshake state (e.g. `"ExpectServerHello"`), for logs.
    pub fn state_name(&self) -> &'static str {
        self.core.state.name()
    }

    /// Counters.
    pub fn stats(&self) -> ConnectionStats {
        ConnectionStats {
            conflicting_fragments: self.core.hs.inbox.conflicts,
            buffer_refused: self.core.hs.inbox.buffer_refused,
            ..self.core.stats
        }
    }

    /// Whether `datagram` starts with a plaintext ClientHello of a *different* handshake
    /// (another client random): the peer restarted. A server driver hands such datagrams
    /// to the [`crate::Acceptor`] instead of this engine, and keeps this session until the
    /// new handshake completes. Retransmissions of this handshake's own ClientHello return
    /// `false` and belong to this engine.
    pub fn is_new_client_hello(&self, datagram: &[u8]) -> bool {
        if self.core.role != Role::Server {
            return false;
        }
        let Some(record) = Records::new(datagram).next() else {
            return false;
        };
        let payload = record.header.payload();
        // epoch 0, handshake content, client_hello(1), random at body offset 2.
        record.header.epoch() == 0
            && record.header.content_type() == u8::from(ContentType::Handshake)
            && payload.first() == Some(&HandshakeType::ClientHello.to_u8())
            && payload
                .get(12 + 2..12 + 2 + 32)
                .is_some_and(|random| random != self.core.hs.client_random)
    }

    /// Feeds one datagram received from `peer` at `now`; `wall` is the wall-clock time of
    /// the same instant, for certificate validity and session tickets (the engine reads no
    /// clock). Datagrams from another address are ignored (the caller routes by address).
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        wall: UnixTime,
        peer: SocketAddr,
        datagram: &[u8],
    ) {
        self.core
            .handle_datagram(&mut self.side, now, wall, peer, datagram);
    }

    /// Advances timers to `now`: retransmits the current flight or gives up.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.core.handle_timeout(now);
    }

    /// Writes the next datagram to send into `buf` (which should hold at least the
    /// configured MTU). A datagram larger than `buf` is dropped.
    pub fn poll_transmit(&mut self, _now: Instant, buf: &mut [u8]) -> Option<Transmit> {
        self.core.poll_transmit(buf)
    }

    /// When [`crate::Connection::handle_timeout`] next has work to do.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.core.timer.poll_timeout()
    }

    /// The next event, if any.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.core.events.pop_front()
    }

    /// Queues close_notify (RFC 5246 §7.2.1) and closes the engine. Emits
    /// [`Event::Closed`] with `by_peer: false`.
    pub fn close(&mut self, _now: Instant) {
        self.core.close();
    }
}

impl Core {
    pub(crate) fn new(
        role: Role,
        config: Arc<Config>,
        rng: Box<dyn Rng + Send>,
        peer: SocketAddr,
        writer: RecordWriter,
        state: State,
    ) -> Self {
        let timer = RetransmitTimer::new(config.retransmit);
        Self {
            role,
            peer,
            hs: Handshake::new(writer, Inbox::new(&config, role)),
            config,
            rng,
            state,
            timer,
            outbox: VecDeque::new(),
            events: VecDeque::new(),
            stats: ConnectionStats::default(),
            reader: RecordReader::new(),
            last_peer_triggered: None,
        }
    }

    pub(crate) fn is_established(&self) -> bool {
        matches!(self.state, State::Established)
    }

    pub(crate) fn is_finished(&self) -> bool {
        matches!(self.state, State::Failed | State::Closed)
    }

    fn handle_datagram(
        &mut self,
        side: &mut Side,
        now: Instant,
        wall: UnixTime,
        peer: SocketAddr,
        datagram: &[u8],
    ) {
        if peer != self.peer || self.is_finished() {
            return;
        }
        if let Some(cid_len) = self.hs.local_cid().map(<[u8]>::len) {
            return self.handle_cid_datagram(side, now, wall, datagram, cid_len);
        }
        let mut records = Records::new(datagram);
        for record in records.by_ref() {
            if self.is_finished() {
                break;
            }
            let Ok(repr) = RecordRepr::parse(&record.header) else {
                self.stats.malformed_records += 1;
                continue;
            };
            self.handle_record(side, now, wall, &repr, &datagram[record.range.clone()]);
        }
        if records.dropped_bytes() > 0 {
            self.stats.malformed_records += 1;
        }
    }

    /// A datagram of a peer that puts our (non-empty) CID in its protected records: plain
    /// records and tls12_cid records of `cid_len`-byte CIDs (RFC 9146 §4: the length is
    /// not on the wire; we chose it).
    fn handle_cid_datagram(
        &mut self,
        side: &mut Side,
        now: Instant,
        wall: UnixTime,
        datagram: &[u8],
        cid_len: usize,
    ) {
        let mut records = MixedRecords::new(datagram, cid_len);
        for record in records.by_ref() {
            if self.is_finished() {
                break;
            }
            match record.kind {
                MixedKind::Plaintext(_) => {
                    let Ok(repr) = RecordHeader::new_checked(record.bytes)
                        .and_then(|header| RecordRepr::parse(&header))
                    else {
                        self.stats.malformed_records += 1;
                        continue;
                    };
                    self.handle_record(side, now, wall, &repr, record.bytes);
                }
                MixedKind::Dtls12Cid => {
                    // type(1) version(2) epoch(2): the walker checked the header's length.
                    let epoch = u16::from_be_bytes([record.bytes[3], record.bytes[4]]);
                    if epoch == 0 {
                        // RFC 9146 §3: "plaintext payloads never use the new record format".
                        self.stats.malformed_records += 1;
                        continue;
                    }
                    self.handle_protected_record(side, now, wall, epoch, None, record.bytes);
                }
                // No DTLS 1.3 record belongs to a DTLS 1.2 handshake.
                MixedKind::Ciphertext(_) => self.stats.malformed_records += 1,
            }
        }
        if records.dropped_bytes() > 0 {
            self.stats.malformed_records += 1;
        }
    }

    /// One record in the plain RFC 6347 format, `bytes` whole.
    fn handle_record(
        &mut self,
        side: &mut Side,
        now: Instant,
        wall: UnixTime,
        repr: &RecordRepr,
        bytes: &[u8],
    ) {
        if repr.epoch == 0 {
            let payload = bytes
                .get(dataplane::record::HEADER_LEN..)
                .unwrap_or_default();
            self.handle_plaintext_record(side, now, wall, repr, payload);
        } else {
            let outer = Some(repr.content_type);
            self.handle_protected_record(side, now, wall, repr.epoch, outer, bytes);
        }
    }

    fn handle_timeout(&mut self, now: Instant) {
        match self.timer.handle_timeout(now) {
            TimerAction::Idle => {}
            TimerAction::Retransmit => {
                self.stats.timer_retransmits += 1;
                for _ in 0..self.config.retransmit.copies.max(1) {
                    self.retransmit_flight();
                }
            }
            TimerAction::GiveUp => self.fail(HandshakeError::Timeout {
                state: self.state.name(),
                unauthenticated: self.stats.rejected_records,
                // Our Finished went out under the new write epoch; the peer's own
                // ChangeCipherSpec and Finished never came.
                finished_unanswered: self.hs.writer.current_epoch() > self.reader.newest_epoch(),
            }),
        }
    }

    fn poll_transmit(&mut self, buf: &mut [u8]) -> Option<Transmit> {
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

    fn close(&mut self) {
        if self.is_finished() {
            return;
        }
        self.queue_alert(Alert::close_notify());
        self.timer.disarm();
        self.state = State::Closed;
        self.events.push_back(Event::Closed { by_peer: false });
    }

    // ----- record input -----

    fn handle_plaintext_record(
        &mut self,
        side: &mut Side,
        now: Instant,
        wall: UnixTime,
        repr: &RecordRepr,
        payload: &[u8],
    ) {
        match repr.content_type {
            ContentType::Handshake => {
                self.handle_handshake_payload(side, now, wall, payload, 0);
            }
            ContentType::ChangeCipherSpec => {
                if payload != [CHANGE_CIPHER_SPEC] {
                    self.stats.malformed_records += 1;
                    return;
                }
                self.handle_change_cipher_spec(side, now, wall);
            }
            ContentType::Alert => {
                // Unauthenticated alerts are believed only before keys are in use: a
                // spoofed epoch-0 alert must not kill a live session.
                if self.reader.is_protected() {
                    self.stats.ignored_records += 1;
                    return;
                }
                self.handle_alert_payload(payload);
            }
            _ => self.stats.ignored_records += 1,
        }
    }

    /// A record of keyed `epoch`: `bytes` is the whole record, `outer` its content type in
    /// the plain format, `None` for a tls12_cid record (whose real type is inside).
    fn handle_protected_record(
        &mut self,
        side: &mut Side,
        now: Instant,
        wall: UnixTime,
        epoch: u16,
        outer: Option<ContentType>,
        bytes: &[u8],
    ) {
        if outer == Some(ContentType::ApplicationData) && self.is_established() {
            // The shard / driver opens application data with its own keys.
            self.stats.ignored_records += 1;
            return;
        }
        // DTLS 1.2 changes the peer's cipher state once: before its ChangeCipherSpec,
        // records of the epoch it opens are kept for when it arrives (RFC 6347 §4.1:
        // records may be reordered).
        let peer_change_to_come = !self.reader.is_protected() && self.state.awaits_peer_ccs_later();
        let mut buf = bytes.to_vec();
        let (content_type, plaintext) = match self.reader.open(epoch, &mut buf, outer.is_none()) {
            ReadOutcome::Opened {
                content_type,
                plaintext,
            } => (content_type, plaintext.to_vec()),
            ReadOutcome::NoKeys => {
                if !(peer_change_to_come && self.reader.hold_early(epoch, bytes)) {
                    self.stats.ignored_records += 1;
                }
                return;
            }
            ReadOutcome::Rejected => {
                // RFC 6347 §4.1.2.7: records failing authentication are silently discarded.
                self.stats.rejected_records += 1;
                return;
            }
        };
        match content_type {
            ContentType::ApplicationData if self.is_established() => {
                // The shard / driver opens application data with its own keys.
                self.stats.ignored_records += 1;
            }
            ContentType::Handshake => {
                self.handle_handshake_payload(side, now, wall, &plaintext, epoch);
            }
            ContentType::Alert => self.handle_alert_payload(&plaintext),
            _ => self.stats.ignored_records += 1,
        }
    }

    fn handle_change_cipher_spec(&mut self, side: &mut Side, now: Instant, wall: UnixTime) {
        if self.reader.is_protected() {
            // A retransmitted CCS: nothing to do.
            return;
        }
        if !self.state.awaits_peer_ccs_later() {
            self.stats.ignored_records += 1;
            return;
        }
        // RFC 6347 §4.1: records may be reordered, so a CCS can arrive before the
        // handshake messages that precede it. It switches the read side to the next epoch
        // as soon as the keys exist; the Finished it protects is still only accepted in
        // message order, after every earlier message (ExpectFinished).
        self.hs.ccs_pending = true;
        self.apply_pending_change_cipher_spec(side, now, wall);
    }

    /// Installs the next read epoch if the peer's CCS arrived and the keys exist, then
    /// reads the records of that epoch that arrived early.
    fn apply_pending_change_cipher_spec(&mut self, side: &mut Side, now: Instant, wall: UnixTime) {
        let keys = match &self.hs.secrets {
            Some(secrets) if self.hs.ccs_pending && !self.reader.is_protected() => &secrets.keys,
            _ => {
                self.advance_past_change_cipher_spec();
                return;
            }
        };
        let epoch = keys.epoch();
        let key = match keys.record_key(Writer::peer(self.role)) {
            Ok(k) => k,
            Err(e) => return self.fail(e),
        };
        self.hs.ccs_pending = false;
        let window = ReplayWindow::new(ReplayWindow::DEFAULT_SIZE);
        let early = match self.hs.local_cid() {
            // RFC 9146 §3: the peer's records of this epoch carry our CID.
            Some(cid) => match CidOpener::new(epoch, key, window, cid) {
                Ok(opener) => self.reader.install_cid(opener),
                Err(_) => {
                    return self.fail(HandshakeError::Internal {
                        what: "CID opener rejected key",
                    });
                }
            },
            None => self.reader.install(Opener::new(epoch, key, window)),
        };
        self.advance_past_change_cipher_spec();
        // Records that arrived early (Finished before CCS) can be read now.
        for record in early {
            if self.is_finished() {
                break;
            }
            // Kept records passed the record splitter; type(1) version(2) epoch(2).
            let cid_format = record.first() == Some(&dataplane::record::TLS12_CID);
            let outer = if cid_format {
                None
            } else {
                match RecordHeader::new_checked(&record[..])
                    .and_then(|header| RecordRepr::parse(&header))
                {
                    Ok(repr) => Some(repr.content_type),
                    Err(_) => continue,
                }
            };
            self.handle_protected_record(side, now, wall, epoch, outer, &record);
        }
    }

    /// ExpectChangeCipherSpec -> ExpectFinished once the peer's CCS was applied.
    fn advance_past_change_cipher_spec(&mut self) {
        if self.reader.is_protected() && self.state.expects_change_cipher_spec() {
            self.state = self.state.after_change_cipher_spec();
        }
    }

    fn handle_alert_payload(&mut self, payload: &[u8]) {
        let Ok(alert) = Alert::parse(payload) else {
            self.stats.malformed_records += 1;
            return;
        };
        self.events.push_back(Event::AlertReceived {
            level: alert.level,
            description: alert.description,
        });
        if alert.description == AlertDescription::CloseNotify {
            // RFC 5246 §7.2.1: "The other party MUST respond with a close_notify alert of
            // its own and close down the connection immediately".
            if !self.is_finished() {
                self.queue_alert(Alert::close_notify());
                self.timer.disarm();
                self.state = State::Closed;
                self.events.push_back(Event::Closed { by_peer: true });
            }
            return;
        }
        if alert.level == AlertLevel::Fatal {
            let err = HandshakeError::PeerAlert {
                description: alert.description,
            };
            if self.is_established() {
                self.timer.disarm();
                self.state = State::Closed;
                self.events.push_back(Event::Closed { by_peer: true });
            } else {
                self.fail(err);
            }
        }
    }

    fn handle_handshake_payload(
        &mut self,
        side: &mut Side,
        now: Instant,
        wall: UnixTime,
        payload: &[u8],
        epoch: u16,
    ) {
        let outcome = self.hs.inbox.handle_record(payload, epoch);
        if outcome.malformed {
            self.stats.malformed_records += 1;
        }
        if outcome.saw_old_flight_start {
            self.handle_peer_retransmission(now);
        }
        if outcome.renegotiation && self.is_established() {
            // RFC 5746 §4.2 / RFC 5246 §7.2.2: we do not renegotiate; refuse with a
            // no_renegotiation warning and keep the session.
            self.stats.renegotiations_refused += 1;
            self.queue_alert(Alert {
                level: AlertLevel::Warning,
                description: AlertDescription::NoRenegotiation,
            });
        }
        while let Some(message) = self.hs.inbox.pop_message() {
            if self.is_finished() {
                return;
            }
            if let Err(e) = self.handle_message(side, now, wall, message) {
                return self.fail(e);
            }
            self.apply_pending_change_cipher_spec(side, now, wall);
        }
    }

    /// The peer sent its previous flight again: our answer was lost, send it again
    /// (RFC 6347 §4.2.4: on "Read retransmit", retransmit the last flight).
    fn handle_peer_retransmission(&mut self, now: Instant) {
        if self.hs.flight.is_empty() || self.is_finished() {
            return;
        }
        // Copies of one peer retransmission (duplicates, or the peer's own redundant
        // copies) are answered once: at most one answer per quarter of the initial timeout.
        let gap = self.config.retransmit.initial / 4;
        if self.last_peer_triggered.is_some_and(|at| now < at + gap) {
            return;
        }
        self.last_peer_triggered = Some(now);
        self.stats.peer_triggered_retransmits += 1;
        self.retransmit_flight();
    }

    fn handle_message(
        &mut self,
        side: &mut Side,
        now: Instant,
        wall: UnixTime,
        message: Message,
    ) -> Result<(), HandshakeError> {
        if matches!(self.state, State::Established) {
            // Nothing but renegotiation (handled above) is expected after completion.
            self.stats.ignored_records += 1;
            return Ok(());
        }
        // Each handler consumes the message in the current state and names the next one.
        self.state = match side {
            Side::Client(client) => client.handle_message(self, now, wall, message)?,
            Side::Server(server) => server.handle_message(self, now, wall, message)?,
        };
        Ok(())
    }

    // ----- output -----

    /// Sends `flight` as our new current flight. With `expect_answer` the retransmission
    /// timer runs; a final flight is only resent when the peer retransmits
    /// (RFC 6347 §4.2.4).
    pub(crate) fn send_flight(
        &mut self,
        now: Instant,
        flight: Flight,
        expect_answer: bool,
    ) -> Result<(), HandshakeError> {
        self.hs.flight = flight;
        self.hs.inbox.mark_flight_sent();
        pack_flight(
            &self.hs.flight,
            self.config.mtu,
            &mut self.hs.writer,
            &mut self.outbox,
        )?;
        // Our records after this flight go out in the newest epoch it used (RFC 6347 §4.1:
        // a ChangeCipherSpec in it switched the write epoch).
        if let Some(epoch) = self.hs.flight.write_epoch() {
            self.hs.writer.advance_current_epoch(epoch);
        }
        if expect_answer {
            self.timer.arm_new_flight(now);
        } else {
            self.timer.disarm();
        }
        Ok(())
    }

    fn retransmit_flight(&mut self) {
        let mut mtu = self.config.mtu;
        // RFC 6347 §4.1.1.1: after repeated loss, fall back to smaller datagrams in case
        // the path MTU is the problem.
        if self.timer.retransmits() >= self.config.retransmit.backoff_after {
            mtu = mtu.min(
                self.config
                    .retransmit
                    .backoff_mtu
                    .max(crate::config::MIN_MTU),
            );
        }
        if let Err(e) = pack_flight(&self.hs.flight, mtu, &mut self.hs.writer, &mut self.outbox) {
            self.fail(e);
        }
    }

    /// Queues a one-record datagram carrying `alert` in the current write epoch.
    pub(crate) fn queue_alert(&mut self, alert: Alert) {
        let mut datagram = Vec::with_capacity(64);
        let bytes = alert.to_bytes();
        let epoch = self.hs.writer.current_epoch();
        if self
            .hs
            .writer
            .push_record(&mut datagram, ContentType::Alert, epoch, &[&bytes])
            .is_ok()
        {
            self.outbox.push_back(datagram);
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
        self.hs.flight = Flight::default();
        self.state = State::Failed;
        self.events.push_back(Event::HandshakeFailed(error));
    }
}
