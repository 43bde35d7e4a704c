//! [`Connection`]: what users drive, dispatching to the DTLS 1.2 engine
//! ([`crate::connection`]) or the DTLS 1.3 engine ([`crate::tls13`]) by the version the
//! handshake negotiates.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use dtls_crypto::Rng;
use dtls_crypto::pki_types::UnixTime;
use dtls_proto::ProtocolVersion;
use dtls_proto::tls13::RecordNumber;

use crate::acceptor::VerifiedClientHello;
use crate::config::{CidIssuer, Config, ConfigError, RandomCids};
use crate::connection::{ClaimedIdentity, Connection12, ConnectionStats};
use crate::events::{Event, Transmit};
use crate::keys::ticket::SessionTicket;
use crate::role::Role;
use crate::tls13::Engine13;

/// One DTLS handshake engine (client or server, DTLS 1.2 or 1.3).
///
/// Drive it with [`Connection::handle_datagram`] and [`Connection::handle_timeout`]; after
/// each call drain [`Connection::poll_transmit`] and [`Connection::poll_event`] and re-arm
/// your timer from [`Connection::poll_timeout`].
///
/// Application data is not handled here: on [`Event::KeysReady`] build the data plane's
/// sealer and opener from the keys ([`crate::RecordKeys`]). Keep passing every datagram
/// from the peer to the engine afterwards (it ignores application data): it answers a
/// retransmitted final flight (RFC 6347 §4.2.4; RFC 9147 §7 with an ACK), handles alerts
/// and refuses renegotiation.
pub struct Connection {
    pub(crate) inner: Inner,
}

/// The engine of the negotiated (or, for a client before the ServerHello, the preferred)
/// version.
#[derive(Debug)]
pub(crate) enum Inner {
    V12(Box<Connection12>),
    V13(Box<Engine13>),
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.inner.fmt(f)
    }
}

impl Connection {
    /// Starts a client handshake with `peer` and queues the first ClientHello: DTLS 1.3
    /// when the configuration allows it ([`Config::versions`]), else DTLS 1.2.
    ///
    /// With `resume`, the ticket is offered by the engine of its version: a DTLS 1.2 ticket
    /// for an abbreviated handshake (RFC 5077 §3.4), a DTLS 1.3 ticket as a resumption PSK
    /// (RFC 8446 §2.2); the server may still answer with a full handshake.
    ///
    /// # Errors
    /// [`ConfigError`] when the configuration cannot work.
    pub fn client(
        config: Arc<Config>,
        rng: Box<dyn Rng + Send>,
        now: Instant,
        peer: SocketAddr,
        resume: Option<SessionTicket>,
    ) -> Result<Self, ConfigError> {
        let inner = if config.allows(ProtocolVersion::Dtls1_3) {
            let resume = resume.filter(|t| t.version() == ProtocolVersion::Dtls1_3);
            Inner::V13(Box::new(Engine13::client(config, rng, now, peer, resume)?))
        } else {
            let resume = resume.filter(|t| t.version() == ProtocolVersion::Dtls1_2);
            Inner::V12(Box::new(Connection12::client(
                config, rng, now, peer, resume,
            )?))
        };
        Ok(Self { inner })
    }

    /// Creates a server engine from a ClientHello the [`crate::Acceptor`] verified, and
    /// queues the server's first flight: DTLS 1.3 when the client offers it in
    /// supported_versions and the configuration allows it, else DTLS 1.2. `wall` is the
    /// wall-clock time at `now`, for session tickets (the engine reads no clock).
    ///
    /// # Errors
    /// [`ConfigError`] when the configuration cannot work.
    pub fn server(
        config: Arc<Config>,
        rng: Box<dyn Rng + Send>,
        now: Instant,
        wall: UnixTime,
        hello: Box<VerifiedClientHello>,
    ) -> Result<Self, ConfigError> {
        Self::server_with_cids(config, rng, now, wall, hello, Box::new(RandomCids))
    }

    /// [`Connection::server`] whose connection IDs, when the client negotiates CIDs (RFC
    /// 9146 in DTLS 1.2, RFC 9147 §9 in DTLS 1.3), come from `issuer` rather than the
    /// engine's RNG alone: a driver that routes records by CID issues CIDs naming the owner
    /// of the session. A DTLS 1.3 session keeps the issuer for the CIDs it gives the
    /// client later (NewConnectionId).
    ///
    /// # Errors
    /// [`ConfigError`] when the configuration cannot work.
    pub fn server_with_cids(
        config: Arc<Config>,
        rng: Box<dyn Rng + Send>,
        now: Instant,
        wall: UnixTime,
        hello: Box<VerifiedClientHello>,
        mut issuer: Box<dyn CidIssuer + Send>,
    ) -> Result<Self, ConfigError> {
        let inner = if config.allows(ProtocolVersion::Dtls1_3) && hello.offers_dtls13() {
            Inner::V13(Box::new(Engine13::server(
                config, rng, now, wall, *hello, issuer,
            )?))
        } else {
            Inner::V12(Box::new(Connection12::server_with_cids(
                config,
                rng,
                now,
                wall,
                hello,
                &mut *issuer,
            )?))
        };
        Ok(Self { inner })
    }

    /// A DTLS 1.3 client: the next ticket the server sent after the handshake
    /// (NewSessionTicket, RFC 8446 §4.6.1), to pass to a later [`Connection::client`] for
    /// resumption. Drain it after [`Connection::handle_datagram`] like the events; `None`
    /// on a server and with DTLS 1.2 (whose ticket comes in [`crate::SessionKeys::ticket`]).
    pub fn poll_session_ticket(&mut self) -> Option<SessionTicket> {
        match &mut self.inner {
            Inner::V12(_) => None,
            Inner::V13(e) => e.core.tickets.pop_front(),
        }
    }

    /// The 1.2 engine (tests that look inside it).
    #[cfg(test)]
    pub(crate) fn v12(&self) -> &Connection12 {
        match &self.inner {
            Inner::V12(c) => c,
            Inner::V13(_) => panic!("a DTLS 1.3 connection"),
        }
    }

    /// This engine's role.
    pub fn role(&self) -> Role {
        match &self.inner {
            Inner::V12(c) => c.role(),
            Inner::V13(e) => e.core.role,
        }
    }

    /// The protocol version this engine speaks, for logs ("1.2" or "1.3").
    pub fn version(&self) -> &'static str {
        match &self.inner {
            Inner::V12(c) => c.version(),
            Inner::V13(_) => "1.3",
        }
    }

    /// The protocol version this engine speaks.
    pub fn protocol_version(&self) -> ProtocolVersion {
        match &self.inner {
            Inner::V12(_) => ProtocolVersion::Dtls1_2,
            Inner::V13(_) => ProtocolVersion::Dtls1_3,
        }
    }

    /// The negotiated cipher suite, once the ServerHello has been sent or received.
    pub fn suite(&self) -> Option<crate::CipherSuite> {
        match &self.inner {
            Inner::V12(c) => c.suite(),
            Inner::V13(e) => e.core.suite.map(|s| s.suite()),
        }
    }

    /// Who the peer claims to be so far, for logs (nothing here is verified): the server
    /// name (server: the client's SNI host name; client: the name we verify the server
    /// against) and the PSK identity (server: the one the client named, known or not;
    /// client: ours, when PSK suites are offered).
    pub fn claimed_identity(&self) -> ClaimedIdentity<'_> {
        match &self.inner {
            Inner::V12(c) => c.claimed_identity(),
            Inner::V13(e) => e.claimed_identity(),
        }
    }

    /// The peer's address.
    pub fn peer(&self) -> SocketAddr {
        match &self.inner {
            Inner::V12(c) => c.peer(),
            Inner::V13(e) => e.core.peer,
        }
    }

    /// Whether the handshake completed (and [`Event::KeysReady`] was queued).
    pub fn is_established(&self) -> bool {
        match &self.inner {
            Inner::V12(c) => c.is_established(),
            Inner::V13(e) => e.core.is_established(),
        }
    }

    /// Whether the engine is dead (failed or closed) and can be dropped.
    pub fn is_finished(&self) -> bool {
        match &self.inner {
            Inner::V12(c) => c.is_finished(),
            Inner::V13(e) => e.core.is_finished(),
        }
    }

    /// The name of the current handshake state (e.g. `"ExpectServerHello"`), for logs.
    pub fn state_name(&self) -> &'static str {
        match &self.inner {
            Inner::V12(c) => c.state_name(),
            Inner::V13(e) => e.core.state.name(),
        }
    }

    /// Counters.
    pub fn stats(&self) -> ConnectionStats {
        match &self.inner {
            Inner::V12(c) => c.stats(),
            Inner::V13(e) => e.core.stats,
        }
    }

    /// Whether `datagram` starts with a plaintext ClientHello of a *different* handshake
    /// (another client random): the peer restarted. A server driver hands such datagrams
    /// to the [`crate::Acceptor`] instead of this engine, and keeps this session until the
    /// new handshake completes. Retransmissions of this handshake's own ClientHello return
    /// `false` and belong to this engine.
    pub fn is_new_client_hello(&self, datagram: &[u8]) -> bool {
        match &self.inner {
            Inner::V12(c) => c.is_new_client_hello(datagram),
            Inner::V13(e) => e.is_new_client_hello(datagram),
        }
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
        match &mut self.inner {
            Inner::V12(c) => c.handle_datagram(now, wall, peer, datagram),
            Inner::V13(e) => {
                e.handle_datagram(now, wall, peer, datagram);
                self.fall_back(now, wall, peer, datagram);
            }
        }
    }

    /// DTLS 1.3: a record that the data plane opened under application keys (it holds
    /// them; the engine sees only the plaintext): `ack` says whether it was an ACK record
    /// (its body in `plaintext`), else it carried handshake messages with their DTLS
    /// headers (KeyUpdate, NewSessionTicket, ...). `record` is its record number, which an
    /// ACK of it names (RFC 9147 §7). The answers (an ACK, a KeyUpdate of ours) come out
    /// of [`Connection::poll_transmit`] sealed in our current write epoch with the
    /// engine's reserved sequence numbers; new keys come as [`Event::KeysUpdated`].
    /// Ignored before completion and in DTLS 1.2.
    pub fn handle_post_handshake(
        &mut self,
        now: Instant,
        wall: UnixTime,
        record: RecordNumber,
        ack: bool,
        plaintext: &[u8],
    ) {
        let Inner::V13(e) = &mut self.inner else {
            return;
        };
        e.handle_post_handshake(now, wall, record, ack, plaintext);
    }

    /// A client that offered both versions got a DTLS 1.2 answer (HelloVerifyRequest or
    /// ServerHello): the DTLS 1.2 engine takes over with the same ClientHello (random,
    /// transcript) and reads the datagram that carried the answer.
    fn fall_back(&mut self, now: Instant, wall: UnixTime, peer: SocketAddr, datagram: &[u8]) {
        let Inner::V13(engine) = &mut self.inner else {
            return;
        };
        let Some((hello, offered_cid)) = engine.core.fallback.take() else {
            return;
        };
        let config = Arc::clone(&engine.core.config);
        // The engine is dropped right below; its generator goes on in the 1.2 engine.
        let rng = std::mem::replace(&mut engine.core.rng, Box::new(Spent));
        let mut v12 = Connection12::client_with_hello(config, rng, now, peer, hello, offered_cid);
        // The ClientHello it queued was sent already (by the 1.3 engine).
        let mut scratch = vec![0u8; v12.core.config.mtu.max(crate::config::MIN_MTU)];
        while v12.poll_transmit(now, &mut scratch).is_some() {}
        v12.handle_datagram(now, wall, peer, datagram);
        self.inner = Inner::V12(Box::new(v12));
    }

    /// Advances timers to `now`: retransmits the current flight (or, in DTLS 1.3, sends an
    /// ACK) or gives up.
    pub fn handle_timeout(&mut self, now: Instant) {
        match &mut self.inner {
            Inner::V12(c) => c.handle_timeout(now),
            Inner::V13(e) => e.core.handle_timeout(now),
        }
    }

    /// Writes the next datagram to send into `buf` (which should hold at least the
    /// configured MTU). A datagram larger than `buf` is dropped.
    pub fn poll_transmit(&mut self, now: Instant, buf: &mut [u8]) -> Option<Transmit> {
        match &mut self.inner {
            Inner::V12(c) => c.poll_transmit(now, buf),
            Inner::V13(e) => e.core.poll_transmit(buf),
        }
    }

    /// When [`Connection::handle_timeout`] next has work to do.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match &self.inner {
            Inner::V12(c) => c.poll_timeout(),
            Inner::V13(e) => e.core.poll_timeout(),
        }
    }

    /// The next event, if any.
    pub fn poll_event(&mut self) -> Option<Event> {
        match &mut self.inner {
            Inner::V12(c) => c.poll_event(),
            Inner::V13(e) => e.core.events.pop_front(),
        }
    }

    /// DTLS 1.3: starts a KeyUpdate (RFC 9147 §8) of our write keys, asking the peer to
    /// update its own too with `request_peer`. The new keys come as
    /// [`Event::KeysUpdated`]: ours once the peer acknowledged the KeyUpdate, the peer's
    /// when its KeyUpdate arrives. Nothing happens before completion, while an update is
    /// under way, or in DTLS 1.2 (which has no KeyUpdate); returns whether one started.
    pub fn update_keys(&mut self, now: Instant, request_peer: bool) -> bool {
        let Inner::V13(e) = &mut self.inner else {
            return false;
        };
        let before = e.core.next_send_seq;
        if let Err(err) = e.core.start_key_update(now, request_peer) {
            e.core.fail(err);
        }
        e.core.next_send_seq != before
    }

    /// DTLS 1.3: asks the peer for `count` more of its connection IDs (RequestConnectionId,
    /// RFC 9147 §9); they come back as spare CIDs. Returns whether the request went out:
    /// not before completion, without CIDs (or with an empty CID of the peer), while an
    /// earlier request is unanswered or another post-handshake message of ours is under
    /// way, nor in DTLS 1.2.
    pub fn request_connection_ids(&mut self, now: Instant, count: u8) -> bool {
        let Inner::V13(e) = &mut self.inner else {
            return false;
        };
        match e.core.request_connection_ids(now, count) {
            Ok(sent) => sent,
            Err(err) => {
                e.core.fail(err);
                false
            }
        }
    }

    /// DTLS 1.3: the data plane retired `retired`, CIDs of ours, because the peer moved
    /// on to a later one (RFC 9147 §9). The engine forgets them and replaces them with
    /// fresh ones in a NewConnectionId of its own (cid_spare, unasked), within its bounds
    /// on CIDs outstanding and issued over the session; the new CIDs come as
    /// [`Event::ConnectionIds`]. Returns how many were the engine's. Nothing happens
    /// without CIDs, before completion or in DTLS 1.2.
    pub fn retire_connection_ids(&mut self, now: Instant, retired: &[Vec<u8>]) -> usize {
        let Inner::V13(e) = &mut self.inner else {
            return 0;
        };
        e.core
            .retire_connection_ids(now, retired)
            .unwrap_or_else(|err| {
                e.core.fail(err);
                0
            })
    }

    /// DTLS 1.3: the data plane put `cid`, the peer's oldest spare CID, in its records
    /// after an address change (RFC 9147 §9). The engine's own records (ACKs,
    /// post-handshake messages) carry it from now on, and when few spares are left the
    /// peer is asked for more (RequestConnectionId, now or once the engine's flight under
    /// way is acknowledged). Returns whether such a request was made. Nothing happens
    /// without CIDs, before completion or in DTLS 1.2.
    pub fn peer_cid_rotated(&mut self, now: Instant, cid: &[u8]) -> bool {
        let Inner::V13(e) = &mut self.inner else {
            return false;
        };
        e.core.peer_cid_rotated(now, cid).unwrap_or_else(|err| {
            e.core.fail(err);
            false
        })
    }

    /// DTLS 1.3: the session's path changed (the peer's address moved, or ours did): a
    /// post-handshake flight of the engine still unacknowledged went to the old path and
    /// is likely lost, so it is sent again now rather than after the retransmission
    /// timer (which restarts from its initial value). Nothing happens in DTLS 1.2, before
    /// completion or without such a flight.
    pub fn path_changed(&mut self, now: Instant) {
        let Inner::V13(e) = &mut self.inner else {
            return;
        };
        e.core.path_changed(now);
    }

    /// DTLS 1.3: the connection IDs in use, once negotiated: ours (the handshake's first,
    /// then those issued with NewConnectionId) and the peer's current one (what our
    /// records carry; empty: none). `None` without CIDs and in DTLS 1.2 (see
    /// [`crate::SessionKeys::local_cid`]).
    pub fn connection_ids13(&self) -> Option<(&[Vec<u8>], &[u8])> {
        let Inner::V13(e) = &self.inner else {
            return None;
        };
        e.core
            .cids
            .as_ref()
            .map(|c| (c.local.as_slice(), c.peer.as_slice()))
    }

    /// DTLS 1.3: the peer's spare connection IDs (from its NewConnectionId with usage
    /// cid_spare, RFC 9147 §9), oldest first; a driver may put any of them in its records
    /// instead of the current one (e.g. after its own address changed, for privacy). Empty
    /// without CIDs and in DTLS 1.2.
    pub fn spare_connection_ids13(&self) -> Vec<Vec<u8>> {
        let Inner::V13(e) = &self.inner else {
            return Vec::new();
        };
        e.core
            .cids
            .as_ref()
            .map(|c| c.spare.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Drops what only the handshake needed, for an engine kept for the life of its
    /// session (DTLS 1.3: it answers KeyUpdates, ACKs and connection-ID requests): the
    /// handshake epoch's keys, the transcript, the handshake secrets, our last flight, the
    /// hello and the peer's certificate chain. Call it once the completed handshake's grace
    /// period is over, the same window a DTLS 1.2 engine is kept to answer a retransmitted
    /// final flight (RFC 6347 §4.2.4); after it a client Finished retransmitted under the
    /// handshake epoch is dropped unopened, unacknowledged. Returns false, changing nothing,
    /// for a DTLS 1.2 engine, a handshake not established, or while a flight of ours (a
    /// NewSessionTicket, a KeyUpdate) awaits its ACK: try again later.
    pub fn settle(&mut self) -> bool {
        match &mut self.inner {
            Inner::V12(_) => false,
            Inner::V13(e) => e.settle(),
        }
    }

    /// Queues close_notify (RFC 5246 §7.2.1, RFC 8446 §6.1) and closes the engine. Emits
    /// [`Event::Closed`] with `by_peer: false`.
    pub fn close(&mut self, now: Instant) {
        match &mut self.inner {
            Inner::V12(c) => c.close(now),
            Inner::V13(e) => e.core.close(),
        }
    }
}

/// The generator left in a DTLS 1.3 engine whose own moved to the DTLS 1.2 engine that took
/// its handshake over; that engine is dropped at once and never draws from it.
struct Spent;

impl Rng for Spent {
    fn fill(&mut self, dest: &mut [u8]) {
        dest.fill(0);
    }
}
