//! The control loop's work on each message and timer: admitting handshakes, driving their
//! engines, handing keys to shards, and the bookkeeping of sessions that shards report
//! closed.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use dataplane::cid::CidOwner;
use dataplane::record::RecordKey;
use dtls_crypto::pki_types::UnixTime;
use dtls_proto::tls13::RecordNumber;
use dtls_proto::{AlertDescription, HeartbeatMode};
use dtls_shard::{
    AeadLimit, CloseCause, CloseReason, ControlInbound, HeartbeatPolicy, ReadKeys, ReadKeys13,
    SessionCounters, SessionId, ShardCommand, UpstreamPrefix, WriteKeys, WriteKeys13,
};

use super::cids::ShardCids;
use super::limits::Refusal;
use super::log::{Closed, Established, HandshakeFailure, Peer};
use super::upstream_header::{self, ClientIdentity, SessionFacts};
use super::{
    CLOSING_MEMORY, ControlCounters, ControlThread, EPOCH_RETIRE_AFTER, Front, Handshake,
    Installed, MAX_TICKETS, TICKET_CHECK, earliest,
};
use control::{
    AcceptOutcome, CipherSuite, Connection, DropReason, EpochKeys13, Event, HandshakeError,
    PeerIdentity, PeerVerifier, RecordKeys, SessionKeys, UpdatedKeys,
};

impl ControlThread {
    pub(super) fn handle_inbound(
        &mut self,
        now: Instant,
        wall: UnixTime,
        shard: usize,
        message: ControlInbound,
    ) {
        match message {
            ControlInbound::Handshake { peer, datagram } => {
                self.handle_handshake_datagram(now, wall, shard, peer, &datagram);
                // The shard copied it into a buffer of its pool: back there.
                if let Some(queues) = self.shards.get(shard) {
                    queues.recycle(datagram);
                }
            }
            ControlInbound::SessionClosed {
                session,
                peer,
                reason,
                stats,
            } => self.session_closed(now, session, peer, &reason, stats),
            ControlInbound::Open { peer } => self.open(now, shard, peer),
            ControlInbound::PostHandshake {
                session,
                epoch,
                sequence,
                ack,
                message,
            } => {
                let record = RecordNumber { epoch, sequence };
                self.post_handshake(now, wall, session, record, ack, &message);
            }
            ControlInbound::PeerMoved {
                session,
                from,
                peer,
            } => self.peer_moved(now, session, from, peer),
            ControlInbound::CidsRetired { session, cids } => {
                self.cids_retired(now, session, &cids);
            }
            ControlInbound::PeerCidRotated { session, cid } => {
                self.peer_cid_rotated(now, session, &cid);
            }
            ControlInbound::AeadLimitReached { session, limit } => {
                ControlCounters::bump(&self.counters.aead_limits);
                if !self.update_keys(now, session, limit) {
                    // No rekeying in DTLS 1.2 here: RFC 9147 §4.5.3 allows closing instead.
                    self.close_session(now, session, CloseCause::AeadLimit);
                }
            }
        }
    }

    /// The engine of installed DTLS 1.3 session `id`: its peer (the key of `handshakes`).
    fn engine_of(&self, id: SessionId) -> Option<SocketAddr> {
        let peer = self.installed.get(&id)?.peer;
        self.handshakes
            .get(&peer)
            .is_some_and(|h| h.session == Some(id))
            .then_some(peer)
    }

    /// A DTLS 1.3 post-handshake record of session `id` that its shard opened: into the
    /// session's engine, whose answers go out through the shard.
    fn post_handshake(
        &mut self,
        now: Instant,
        wall: UnixTime,
        id: SessionId,
        record: RecordNumber,
        ack: bool,
        message: &[u8],
    ) {
        let Some(peer) = self.engine_of(id) else {
            ControlCounters::bump(&self.counters.post_handshake_dropped);
            return;
        };
        ControlCounters::bump(&self.counters.post_handshake);
        // RFC 9147 §8: a record under the peer's new epoch verified: its older read epochs
        // are no longer needed.
        let shard = self.installed.get(&id).map(|s| s.shard);
        let mut retired = Vec::new();
        self.retiring.retain(|&(_, session, epoch)| {
            let done = session == id && epoch < record.epoch;
            if done {
                retired.push(epoch);
            }
            !done
        });
        if let Some(shard) = shard {
            for epoch in retired {
                self.push(shard, ShardCommand::RetireEpoch { session: id, epoch });
            }
        }
        if let Some(h) = self.handshakes.get_mut(&peer) {
            let stale = h.conn.stats().stale_key_updates;
            h.conn
                .handle_post_handshake(now, wall, record, ack, message);
            if h.conn.stats().stale_key_updates > stale {
                ControlCounters::bump(&self.counters.key_updates_stale);
            }
        }
        self.drain(now, peer);
    }

    /// A key of session `id` reached an AEAD limit: a DTLS 1.3 session updates its keys
    /// (RFC 9147 §4.5.3: "the endpoint MUST ... update the keys"; on the integrity limit
    /// of the read key the peer is asked to update its own). Returns whether the session
    /// is taken care of that way (else it is to be closed).
    fn update_keys(&mut self, now: Instant, id: SessionId, limit: AeadLimit) -> bool {
        let Some(peer) = self.engine_of(id) else {
            return false;
        };
        let request_peer = matches!(limit, AeadLimit::Integrity { .. });
        if let Some(h) = self.handshakes.get_mut(&peer) {
            // `false`: an update is under way already; its keys come with its ACK.
            h.conn.update_keys(now, request_peer);
        }
        self.drain(now, peer);
        true
    }

    /// A shard removed session `id` (on its own, or on our `Close`), or refused to install
    /// it; `peer` is its address when it ended.
    fn session_closed(
        &mut self,
        now: Instant,
        id: SessionId,
        peer: SocketAddr,
        reason: &CloseReason,
        stats: SessionCounters,
    ) {
        ControlCounters::bump(&self.counters.sessions_closed);
        let session = match reason {
            // Control closed it: its entry left `installed` then. (Or, with several
            // workers, another worker's new handshake of the peer replaced it in its shard.)
            CloseReason::Closed(_) => match self.closing.remove(&id) {
                Some((_, s)) => Some(s),
                None => self.forget_installed(id),
            },
            _ => self.forget_installed(id),
        };
        if matches!(reason, CloseReason::Rejected(_)) {
            ControlCounters::bump(&self.counters.install_failed);
        }
        let who = self.peer(peer);
        self.log.session_closed(
            now,
            &Closed {
                peer: who,
                reason,
                duration: session
                    .as_ref()
                    .map(|s| now.saturating_duration_since(s.established)),
                stats,
                identity: session.as_ref().map(|s| &s.identity),
            },
        );
        self.retiring.retain(|&(_, session, _)| session != id);
        // The shard ended the session: its completed engine has nothing left to do (an
        // engine that serves another session of the peer stays).
        if self.handshakes.get(&peer).is_some_and(|h| match h.session {
            Some(session) => session == id,
            None => h.completed_at.is_some(),
        }) {
            self.remove_handshake(peer);
        }
    }

    /// DTLS 1.3: session `id`'s shard retired `cids` of ours (the peer moved on to a
    /// later one): its engine replaces them (a NewConnectionId, and `AddCids` to the
    /// shard, from [`Self::drain`]).
    fn cids_retired(&mut self, now: Instant, id: SessionId, cids: &[Vec<u8>]) {
        let Some(peer) = self.engine_of(id) else {
            return;
        };
        ControlCounters::bump(&self.counters.cid_retirements);
        if let Some(h) = self.handshakes.get_mut(&peer) {
            h.conn.retire_connection_ids(now, cids);
        }
        self.drain(now, peer);
    }

    /// DTLS 1.3: session `id`'s shard put `cid`, the peer's next spare, in its records
    /// after an address change: the engine's records follow, and it asks for more CIDs
    /// when few are left. In connect mode this is how our own move shows (the server's
    /// path_challenge), so the engine's flight under way goes out again on the new path.
    fn peer_cid_rotated(&mut self, now: Instant, id: SessionId, cid: &[u8]) {
        let Some(peer) = self.engine_of(id) else {
            return;
        };
        if let Some(h) = self.handshakes.get_mut(&peer) {
            if h.conn.peer_cid_rotated(now, cid) {
                ControlCounters::bump(&self.counters.cid_requests);
            }
            if matches!(self.front, Front::Client { .. }) {
                h.conn.path_changed(now);
            }
        }
        self.drain(now, peer);
    }

    /// Session `id`'s peer moved from `from` to `peer` (its shard checked the record that
    /// moved it): the by-peer index follows, and a DTLS 1.3 engine's flight under way
    /// goes out again to the new address (its copies went to the old one).
    fn peer_moved(&mut self, now: Instant, id: SessionId, from: SocketAddr, peer: SocketAddr) {
        let Some(session) = self.installed.get_mut(&id) else {
            return;
        };
        session.peer = peer;
        self.by_source.remove(&self.settings.limits, from);
        self.by_source.add(&self.settings.limits, peer);
        if self.by_peer.get(&from) == Some(&id) {
            self.by_peer.remove(&from);
        }
        self.by_peer.insert(peer, id);
        // A DTLS 1.3 session's engine follows it.
        if self
            .handshakes
            .get(&from)
            .is_some_and(|h| h.session == Some(id))
            && let Some(h) = self.handshakes.remove(&from)
        {
            self.handshakes.insert(peer, h);
            if let Some(h) = self.handshakes.get_mut(&peer) {
                h.conn.path_changed(now);
            }
            self.drain(now, peer);
        }
    }

    /// How logs name `peer`: with the DTLS server in connect mode.
    fn peer(&self, addr: SocketAddr) -> Peer {
        Peer {
            addr,
            server: match self.front {
                Front::Client { server } => Some(server),
                Front::Server(_) => None,
            },
        }
    }

    /// `dtlsd connect`: a local source without a session sent plaintext; its shard holds
    /// an upstream socket for it and waits for keys (or a `Close` when no handshake starts).
    fn open(&mut self, now: Instant, shard: usize, peer: SocketAddr) {
        let Front::Client { server } = self.front else {
            // Only connect-mode shards send `Open`.
            ControlCounters::bump(&self.counters.acceptor_drops);
            return;
        };
        if self
            .handshakes
            .get(&peer)
            .is_some_and(|h| h.completed_at.is_none())
        {
            return; // already under way
        }
        if self.draining.load(Relaxed) {
            self.refused(now, peer, Refusal::Draining, false);
            self.push(shard, ShardCommand::Forget { peer });
            return;
        }
        if self.half_open.len() >= self.settings.limits.max_half_open {
            self.refused(now, peer, Refusal::HalfOpenFull, false);
            self.push(shard, ShardCommand::Forget { peer });
            return;
        }
        let rng = (self.rng_factory)();
        // One use per ticket: taken out, never put back. RFC 8446 Appendix C.4: "Clients
        // SHOULD NOT reuse a ticket for multiple connections. Reuse of a ticket allows
        // passive observers to correlate different connections." A DTLS 1.3 session's
        // server sends a fresh ticket after each handshake, resumed ones included.
        let resume = self.tickets.remove(&peer).filter(|t| t.is_usable(now));
        match Connection::client(Arc::clone(&self.config), rng, now, server, resume) {
            Ok(conn) => self.start_handshake(now, shard, peer, conn),
            // The configuration was validated when the loop was built or reloaded.
            Err(_) => {
                ControlCounters::bump(&self.counters.handshakes_failed_protocol);
                self.push(shard, ShardCommand::Forget { peer });
            }
        }
    }

    /// Counts and reports a handshake that was not started.
    fn refused(&mut self, now: Instant, peer: SocketAddr, refusal: Refusal, alert_sent: bool) {
        let counter = match refusal {
            Refusal::HalfOpenPerAddress | Refusal::HalfOpenPerPrefix => {
                &self.counters.half_open_refused_source
            }
            Refusal::HalfOpenFull => &self.counters.half_open_refused,
            Refusal::MaxSessions | Refusal::MaxSessionsPerShard => &self.counters.sessions_refused,
            Refusal::Draining => &self.counters.handshakes_refused_draining,
            Refusal::HandshakeRate => &self.counters.handshakes_refused_rate,
            Refusal::SessionsPerAddress => &self.counters.sessions_refused_per_address,
            Refusal::Denied => &self.counters.datagrams_denied,
            Refusal::NotAllowed => &self.counters.datagrams_not_allowed,
            Refusal::Overloaded => &self.counters.handshakes_shed,
        };
        ControlCounters::bump(counter);
        let peer = self.peer(peer);
        self.log.handshake_refused(now, peer, refusal, alert_sent);
    }

    /// Serve mode: whether a cookie-verified handshake of `peer` on `shard` may start, and
    /// room made for it. A source over its half-open share, or a daemon or shard whose
    /// installed sessions reach their cap, is refused; half-open handshakes holding the
    /// room a newcomer needs are shed, oldest first.
    fn admit(&mut self, now: Instant, shard: usize, peer: SocketAddr) -> Result<(), Refusal> {
        if self.draining.load(Relaxed) {
            return Err(Refusal::Draining);
        }
        if self.overloaded && self.overload_admits == 0 {
            return Err(Refusal::Overloaded);
        }
        let limits = self.settings.limits;
        // A peer with a session replaces it: no new room needed.
        let new_session = !self.by_peer.contains_key(&peer);
        let shard_sessions = self.shard_sessions.get(shard).copied().unwrap_or(0);
        if new_session && self.installed.len() >= limits.max_sessions {
            return Err(Refusal::MaxSessions);
        }
        if new_session && shard_sessions >= limits.max_sessions_per_shard {
            return Err(Refusal::MaxSessionsPerShard);
        }
        // A peer restarting its own handshake frees its entry first.
        let restarting = self
            .handshakes
            .get(&peer)
            .is_some_and(|h| h.half_open.is_some());
        if !restarting {
            self.half_open.check_source(&limits, peer)?;
        }
        if new_session {
            // A restarting peer's own half-open entry is about to go.
            let held = (self.by_source.count(&limits, peer)
                + self.half_open.address_count(&limits, peer))
            .saturating_sub(usize::from(restarting));
            if held >= limits.sessions_per_address {
                return Err(Refusal::SessionsPerAddress);
            }
        }
        // Last, so a handshake refused for another reason spends no token.
        self.rate.take(now, &limits, peer.ip())?;
        self.remove_handshake(peer);
        while let Some(oldest) = self.half_open.oldest_if_full(&limits) {
            self.shed(now, oldest);
        }
        // Every half-open handshake holds a session's room until it completes, so a
        // completed handshake always finds its shard's table with room.
        while new_session && self.installed.len() + self.half_open.len() >= limits.max_sessions {
            let Some(oldest) = self.half_open.oldest(None) else {
                break;
            };
            self.shed(now, oldest);
        }
        while new_session
            && shard_sessions + self.half_open.count(shard) >= limits.max_sessions_per_shard
        {
            let Some(oldest) = self.half_open.oldest(Some(shard)) else {
                break;
            };
            self.shed(now, oldest);
        }
        if self.overloaded {
            // One of the turn's few admissions under overload (checked above).
            self.overload_admits -= 1;
        }
        Ok(())
    }

    /// Drops a half-open handshake to make room for a newer one.
    fn shed(&mut self, now: Instant, peer: SocketAddr) {
        ControlCounters::bump(&self.counters.half_open_shed);
        self.remove_handshake(peer);
        let peer = self.peer(peer);
        self.log.handshake_shed(now, peer);
    }

    /// Keeps a new engine for `peer` (replacing a previous one: a client that restarted)
    /// and sends its first flight.
    fn start_handshake(&mut self, now: Instant, shard: usize, peer: SocketAddr, conn: Connection) {
        ControlCounters::bump(&self.counters.handshakes_started);
        ControlCounters::bump(&self.worker_counters.handshakes_started);
        self.remove_handshake(peer);
        let ticket = self.half_open.insert(&self.settings.limits, peer, shard);
        self.handshakes.insert(
            peer,
            Handshake {
                shard,
                conn,
                started_at: now,
                completed_at: None,
                half_open: Some(ticket),
                session: None,
                asked_cids: false,
                settled: false,
                renegotiations_logged: 0,
            },
        );
        self.drain(now, peer);
    }

    fn handle_handshake_datagram(
        &mut self,
        now: Instant,
        wall: UnixTime,
        shard: usize,
        peer: SocketAddr,
        datagram: &[u8],
    ) {
        match &self.front {
            Front::Server(_) => {}
            Front::Client { server } => {
                // From the server, through the upstream socket of local source `peer`.
                let server = *server;
                if let Some(h) = self.handshakes.get_mut(&peer) {
                    h.conn.handle_datagram(now, wall, server, datagram);
                    self.drain(now, peer);
                } else {
                    ControlCounters::bump(&self.counters.acceptor_drops);
                    // A DTLS 1.2 session's engine is gone after its grace period; the shard
                    // sends protected handshake records here. After the handshake the
                    // server has nothing to say in one but a renegotiation request
                    // (HelloRequest), which we do not follow: dropped, and said so.
                    if protected_handshake_record(datagram) {
                        let who = self.peer(peer);
                        self.log.renegotiation_refused(now, who, "1.2", false);
                    }
                }
                return;
            }
        }
        if let Some(h) = self.handshakes.get_mut(&peer)
            && !h.conn.is_new_client_hello(datagram)
        {
            h.conn.handle_datagram(now, wall, peer, datagram);
            self.drain(now, peer);
            return;
        }
        // Before any reply: a source the access lists refuse never hears from us.
        if let Err(refusal) = self.access.check(peer.ip()) {
            let counter = match refusal {
                Refusal::Denied => &self.counters.datagrams_denied,
                _ => &self.counters.datagrams_not_allowed,
            };
            ControlCounters::bump(counter);
            return;
        }
        let Front::Server(acceptor) = &mut self.front else {
            return;
        };
        let rejected = acceptor.cookies_rejected();
        let outcome = acceptor.handle_datagram(now, peer, datagram, &mut self.buf);
        if acceptor.cookies_rejected() != rejected {
            ControlCounters::bump(&self.counters.cookies_rejected);
        }
        match outcome {
            AcceptOutcome::Reply(t) => {
                ControlCounters::bump(&self.counters.cookies_sent);
                // From the shard's buffer pool (it recycles it once sent): a spoofed hello
                // costs no allocation here either.
                let bytes = &self.buf[..t.len];
                let datagram = match self.shards.get(shard) {
                    Some(queues) => queues.copy_datagram(bytes),
                    None => bytes.to_vec(),
                };
                self.push(
                    shard,
                    ShardCommand::Transmit {
                        peer: t.destination,
                        datagram,
                    },
                );
            }
            // A fragment of a hello being put together: not a drop.
            AcceptOutcome::Drop(DropReason::Reassembling) => {}
            AcceptOutcome::Drop(_) => ControlCounters::bump(&self.counters.acceptor_drops),
            AcceptOutcome::Accept(hello) => {
                if let Err(refusal) = self.admit(now, shard, peer) {
                    // Refused before any flight of ours; the client learns why at once
                    // instead of retransmitting into silence (a full daemon, or an address
                    // at its sessions). Half-open and rate refusals stay silent: the source
                    // is busy with handshakes of its own, and its retransmission timer is
                    // the back-off the rate wants.
                    let tell = matches!(
                        refusal,
                        Refusal::MaxSessions
                            | Refusal::MaxSessionsPerShard
                            | Refusal::SessionsPerAddress
                            | Refusal::Draining
                    );
                    // Counted before the alert leaves: whoever sees the alert sees the count.
                    self.refused(now, peer, refusal, tell);
                    if tell {
                        let datagram = hello.refusal(AlertDescription::InternalError);
                        self.push(shard, ShardCommand::Transmit { peer, datagram });
                    }
                    return;
                }
                let rng = (self.rng_factory)();
                // RFC 9146, RFC 9147 §9: the CIDs a client negotiates name this node and
                // shard.
                let cids = ShardCids {
                    owner: CidOwner {
                        node: u32::from(self.settings.node_id),
                        shard: u16::try_from(shard).unwrap_or(u16::MAX),
                    },
                    encrypted: self.settings.encrypted_cids.clone(),
                };
                match Connection::server_with_cids(
                    Arc::clone(&self.config),
                    rng,
                    now,
                    wall,
                    hello,
                    Box::new(cids),
                ) {
                    Ok(conn) => {
                        // Before the server's flight: the shard may then park records the
                        // client sends ahead of its keys (a resumed client's first data).
                        self.push(shard, ShardCommand::ExpectKeys { peer });
                        self.start_handshake(now, shard, peer, conn);
                    }
                    // The acceptor validated the same configuration: unreachable in
                    // practice, counted rather than trusted.
                    Err(_) => ControlCounters::bump(&self.counters.handshakes_failed_protocol),
                }
            }
        }
    }

    pub(super) fn handle_timeouts(&mut self, now: Instant, wall: UnixTime) {
        if let Front::Server(acceptor) = &mut self.front
            && acceptor.poll_timeout().is_some_and(|at| at <= now)
        {
            acceptor.handle_timeout(now, &mut *self.acceptor_rng);
        }
        if self.ticket_check.is_none_or(|at| now >= at) {
            self.ticket_check = Some(now + TICKET_CHECK);
            self.rotate_ticket_keys(wall);
            // Client mode: DTLS 1.3 tickets past their lifetime go (RFC 8446 §4.6.1:
            // "Clients MUST NOT cache tickets for longer than 7 days, regardless of the
            // ticket_lifetime").
            self.tickets.retain(|_, t| t.is_usable(now));
            // A shard's report of a session we closed that never came (its queue was full).
            self.closing
                .retain(|_, (at, _)| now.saturating_duration_since(*at) < CLOSING_MEMORY);
        }
        if self.next_timer.is_none_or(|at| at > now) {
            return;
        }
        // A sweep over every entry, only when the earliest deadline is due.
        let grace = self.settings.completed_grace;
        let mut due = Vec::new();
        let mut next = None;
        // Only completed entries expire here, so the half-open table is unchanged.
        self.handshakes.retain(|peer, h| match h.completed_at {
            // A DTLS 1.3 session's engine: its timers run (final flight, KeyUpdate). After
            // the grace period it keeps only what the session needs (a flight of ours
            // awaiting its ACK puts that off by another period).
            completed if h.session.is_some() => {
                if let Some(at) = completed.filter(|_| !h.settled) {
                    if at + grace <= now {
                        h.settled = h.conn.settle();
                        if !h.settled {
                            h.completed_at = Some(now);
                            next = earliest(next, Some(now + grace));
                        }
                    } else {
                        next = earliest(next, Some(at + grace));
                    }
                }
                match h.conn.poll_timeout() {
                    Some(at) if at <= now => due.push(*peer),
                    other => next = earliest(next, other),
                }
                true
            }
            Some(at) => {
                let keep = at + grace > now;
                if keep {
                    next = earliest(next, Some(at + grace));
                }
                keep
            }
            None => {
                match h.conn.poll_timeout() {
                    Some(at) if at <= now => due.push(*peer),
                    other => next = earliest(next, other),
                }
                true
            }
        });
        let mut retire = Vec::new();
        self.retiring.retain(|&(at, session, epoch)| {
            let due = at <= now;
            if due {
                retire.push((session, epoch));
            } else {
                next = earliest(next, Some(at));
            }
            !due
        });
        self.next_timer = next;
        for (session, epoch) in retire {
            if let Some(shard) = self.installed.get(&session).map(|s| s.shard) {
                self.push(shard, ShardCommand::RetireEpoch { session, epoch });
            }
        }
        for peer in due {
            if let Some(h) = self.handshakes.get_mut(&peer) {
                h.conn.handle_timeout(now);
            }
            self.drain(now, peer);
        }
    }

    /// Rotates the session-ticket keys when due (wall-clock schedule: tickets carry wall
    /// times). The old key keeps opening tickets for one ticket lifetime.
    fn rotate_ticket_keys(&mut self, wall: UnixTime) {
        let Some(keys) = &self.config.ticket_keys else {
            return;
        };
        // A poisoned lock means a panic elsewhere already; tickets then stay as they are.
        let Ok(mut keys) = keys.lock() else {
            return;
        };
        if keys.poll_timeout().as_secs() > wall.as_secs() {
            return;
        }
        match keys.handle_timeout(wall, &mut *self.acceptor_rng) {
            Ok(true) => ControlCounters::bump(&self.counters.ticket_rotations),
            Ok(false) => {}
            Err(_) => ControlCounters::bump(&self.counters.ticket_rotation_failures),
        }
    }

    /// Events first (keys go to the shard before the final flight), then datagrams; a dead
    /// engine is dropped.
    pub(super) fn drain(&mut self, now: Instant, peer: SocketAddr) {
        let Some(h) = self.handshakes.get_mut(&peer) else {
            return;
        };
        let shard = h.shard;
        let mut keys = Vec::new();
        let mut updates = Vec::new();
        let mut issued = Vec::new();
        let mut immediate = None;
        let mut spare = Vec::new();
        let mut failure = None;
        let mut alert_received = None;
        while let Some(event) = h.conn.poll_event() {
            match event {
                Event::KeysReady(mut k) => {
                    if let Some(ticket) = h.half_open.take() {
                        self.half_open.remove(&self.settings.limits, ticket);
                    }
                    h.completed_at = Some(now);
                    if k.resumed {
                        ControlCounters::bump(match k.records {
                            RecordKeys::Dtls12 { .. } => &self.counters.handshakes_resumed12,
                            RecordKeys::Dtls13 { .. } => &self.counters.handshakes_resumed13,
                        });
                    }
                    // DTLS 1.2: the ticket came in the handshake (RFC 5077 §3.3).
                    if let Some(ticket) = k.ticket.take() {
                        keep_ticket(&mut self.tickets, peer, ticket);
                    }
                    keys.push(k);
                }
                Event::HandshakeFailed(error) => {
                    self.counters.count_failure(&error);
                    failure = Some(error);
                }
                Event::AlertReceived { description, .. } => alert_received = Some(description),
                Event::KeysUpdated(update) => updates.push(update),
                // DTLS 1.3 CIDs issued after the handshake (RFC 9147 §9): the shard indexes
                // them for the session (bounded, see `ShardCommand::AddCids`). A switch of
                // the peer's CID (cid_immediate) goes to the shard's sealer
                // (`ShardCommand::PeerCids`), as do its spare CIDs (below).
                Event::ConnectionIds(update) => {
                    issued.extend(update.issued);
                    if update.peer.is_some() {
                        immediate = update.peer;
                    }
                    spare.extend(update.spare);
                }
                // The shard ends the session on the peer's close_notify or fatal alert.
                Event::Closed { .. } => {}
            }
        }
        // DTLS 1.3 (client): tickets come after the handshake, in NewSessionTicket records
        // the shard opened (`ControlInbound::PostHandshake`) and the engine took in. Only
        // the newest is kept for this source's next handshake (it has the most life left;
        // the others would only ever be offered after it, which the one use per ticket
        // rules out).
        let mut newest = None;
        while let Some(ticket) = h.conn.poll_session_ticket() {
            newest = Some(ticket);
        }
        if let Some(ticket) = newest {
            keep_ticket(&mut self.tickets, peer, ticket);
        }
        if let Some(error) = &failure {
            let alert_received = match error {
                HandshakeError::PeerAlert { description } => Some(*description),
                _ => alert_received,
            };
            self.log.handshake_failed(
                now,
                &HandshakeFailure {
                    peer: Peer {
                        addr: peer,
                        server: match self.front {
                            Front::Client { server } => Some(server),
                            Front::Server(_) => None,
                        },
                    },
                    version: h.conn.version(),
                    error,
                    alert_sent: error.alert(),
                    alert_received,
                    claimed: h.conn.claimed_identity(),
                },
            );
        }
        // RFC 5746 §4.2, RFC 5246 §7.2.2: the engine refused a renegotiation request on the
        // established session (a no_renegotiation warning; the session goes on). The
        // operator hears of it.
        let refused = h.conn.stats().renegotiations_refused;
        if refused > h.renegotiations_logged {
            h.renegotiations_logged = refused;
            let who = Peer {
                addr: peer,
                server: match self.front {
                    Front::Client { server } => Some(server),
                    Front::Server(_) => None,
                },
            };
            self.log
                .renegotiation_refused(now, who, h.conn.version(), true);
        }
        // DTLS 1.3 client: once established (our Finished acknowledged), the server is
        // asked for spare CIDs, for our address changes (RFC 9147 §9). Once per session:
        // the shard uses them up one per change, and they are topped up as it does (the
        // server replaces the CIDs it retires, and the engine asks again when few are
        // left, see `peer_cid_rotated`).
        if matches!(self.front, Front::Client { .. })
            && !h.asked_cids
            && h.completed_at.is_some()
            && h.conn.request_connection_ids(now, crate::PEER_CIDS_ASKED)
        {
            h.asked_cids = true;
        }
        // Every datagram of this engine goes to its peer: the client in serve mode, the
        // server through local source `peer`'s upstream socket in connect mode. During the
        // handshake the shard routes by `peer`; once a DTLS 1.3 session was installed (in
        // an earlier turn: its keys are in the shard) by the session, whose address the
        // shard may have moved already while its `PeerMoved` is still on its way to us
        // (see `ShardCommand::TransmitSession`).
        let installed = h.session;
        let mut transmits = Vec::new();
        while let Some(t) = h.conn.poll_transmit(now, &mut self.buf) {
            transmits.push(self.buf[..t.len].to_vec());
        }
        let finished = h.conn.is_finished();
        let failed_client =
            finished && h.completed_at.is_none() && matches!(self.front, Front::Client { .. });
        let handshake_time = now.saturating_duration_since(h.started_at);
        let mut session = h.session;
        for k in keys {
            ControlCounters::bump(&self.counters.handshakes_completed);
            ControlCounters::bump(&self.worker_counters.handshakes_completed);
            let installed = self.install(now, shard, peer, *k, handshake_time);
            if let Some(id) = installed
                && let Some(h) = self.handshakes.get_mut(&peer)
            {
                h.session = Some(id);
                session = Some(id);
            }
        }
        // A KeyUpdate's keys go to the shard before the datagrams that follow it (our ACK
        // of the peer's KeyUpdate; records under our new write epoch come from the shard).
        if let Some(id) = session {
            for update in updates {
                self.install_update(now, shard, peer, id, *update);
            }
            if immediate.is_some() || !spare.is_empty() {
                self.counters
                    .peer_cids_spare
                    .fetch_add(spare.len() as u64, std::sync::atomic::Ordering::Relaxed);
                self.push(
                    shard,
                    ShardCommand::PeerCids {
                        session: id,
                        immediate,
                        spare,
                    },
                );
            }
            // Before the NewConnectionId that carries them goes out (below).
            if !issued.is_empty() {
                self.counters
                    .cids_issued
                    .fetch_add(issued.len() as u64, Relaxed);
                self.push(
                    shard,
                    ShardCommand::AddCids {
                        session: id,
                        cids: issued,
                    },
                );
            }
        }
        for datagram in transmits {
            let command = match installed {
                Some(session) => ShardCommand::TransmitSession { session, datagram },
                None => ShardCommand::Transmit { peer, datagram },
            };
            self.push(shard, command);
        }
        // A DTLS 1.3 engine that served an installed session failed after the handshake (a
        // fatal alert sent, RFC 8446 §6.2; its KeyUpdate never acknowledged, RFC 9147 §8; a
        // post-handshake message it could not take): the session ends too, in the shard,
        // after the alert went out, rather than living on with no engine to update its keys.
        if failure.is_some()
            && let Some(id) = session
            && self.installed.contains_key(&id)
        {
            ControlCounters::bump(&self.counters.sessions_engine_failed);
            self.close_session(now, id, CloseCause::EngineFailed);
        }
        if failed_client {
            // The shard holds an upstream socket and queued plaintext for this source.
            self.push(shard, ShardCommand::Forget { peer });
        }
        if finished {
            self.remove_handshake(peer);
        } else {
            // After the installation: a DTLS 1.3 session's engine keeps its own timers.
            let grace = self.settings.completed_grace;
            let deadline = self.handshakes.get(&peer).and_then(|h| h.deadline(grace));
            self.next_timer = earliest(self.next_timer, deadline);
        }
    }

    /// Drops `peer`'s engine, keeping the half-open table right.
    pub(super) fn remove_handshake(&mut self, peer: SocketAddr) {
        if let Some(h) = self.handshakes.remove(&peer)
            && let Some(ticket) = h.half_open
        {
            self.half_open.remove(&self.settings.limits, ticket);
        }
    }

    /// Hands the session's keys to `shard` under `peer` (the client's address in serve
    /// mode, the local source in connect mode). Returns the session's handle when it is a
    /// DTLS 1.3 session whose keys were queued (its engine then serves it).
    fn install(
        &mut self,
        now: Instant,
        shard: usize,
        peer: SocketAddr,
        keys: SessionKeys,
        handshake_time: Duration,
    ) -> Option<SessionId> {
        let SessionKeys {
            suite,
            records,
            replay_window,
            heartbeat: peer_mode,
            peer_identity,
            resumed,
            local_cid,
            peer_cid,
            rrc,
            alpn,
            ..
        } = keys;
        let version = match &records {
            RecordKeys::Dtls12 { .. } => "1.2",
            RecordKeys::Dtls13 { .. } => "1.3",
        };
        // A peer with a DTLS 1.2 session that completes another 1.2 handshake keeps its
        // handle: the shard replaces that session's keys. A DTLS 1.3 session (whose keys
        // the shard would take for a KeyUpdate) or a session of the other version is
        // closed and replaced by a new one.
        let id = match self.by_peer.get(&peer).copied() {
            Some(id)
                if version == "1.2"
                    && self.installed.get(&id).is_some_and(|s| s.version == "1.2") =>
            {
                id
            }
            old => {
                if let Some(old) = old {
                    self.close_session(now, old, CloseCause::Replaced);
                }
                let id = SessionId::new(self.next_session);
                // Worker w of m numbers its sessions k·m + w.
                self.next_session += self.workers as u64;
                id
            }
        };
        let upstream = self.upstream_prefix(
            (shard, peer),
            version,
            suite,
            &peer_identity,
            resumed,
            alpn.as_deref(),
        );
        let command = match records {
            RecordKeys::Dtls12 { read, write } => {
                // RFC 6520 §2: requests only to a peer that said peer_allowed_to_send;
                // answers only when we said it (a negotiated extension carries both modes).
                let heartbeat = HeartbeatPolicy {
                    answer: peer_mode.is_some()
                        && self.config.heartbeat == Some(HeartbeatMode::PeerAllowedToSend),
                    probe: peer_mode == Some(HeartbeatMode::PeerAllowedToSend),
                };
                let (read_key, write_key) = if self.settings.null_record_protection {
                    (RecordKey::null_baseline(), RecordKey::null_baseline())
                } else {
                    (read.key, write.key)
                };
                // RFC 9146: records to us carry our CID, records to the peer its CID
                // (empty: the plain format). The null baseline has no tls12_cid form
                // (those records are AEAD only): a benchmark that sets it runs without
                // CIDs.
                let (cid, peer_cid) = if self.settings.null_record_protection {
                    (Vec::new(), Vec::new())
                } else {
                    (
                        local_cid.clone().unwrap_or_default(),
                        peer_cid.clone().unwrap_or_default(),
                    )
                };
                ShardCommand::InstallKeys {
                    session: id,
                    peer,
                    read: ReadKeys {
                        epoch: read.epoch,
                        key: read_key,
                        replay_window,
                    },
                    write: WriteKeys {
                        epoch: write.epoch,
                        key: write_key,
                        next_seq: write.next_sequence,
                    },
                    heartbeat,
                    cid,
                    peer_cid,
                    // RFC 9853 needs CIDs (none with the null baseline).
                    rrc: rrc && !self.settings.null_record_protection,
                    upstream,
                }
            }
            // DTLS 1.3 connection IDs (RFC 9147 §9): the peer's records carry ours (found
            // by it at byte 1), ours carry the peer's. (The null baseline is a DTLS 1.2
            // record key: 1.3 keys stay real.)
            RecordKeys::Dtls13 { read, write } => ShardCommand::InstallKeys13 {
                session: id,
                peer,
                read: Some(read_keys13(*read, replay_window)),
                write: Some(write_keys13(*write)),
                cid: local_cid.clone().unwrap_or_default(),
                peer_cid: peer_cid.clone().unwrap_or_default(),
                rrc,
                upstream,
            },
        };
        if !self.push(shard, command) {
            return None;
        }
        let who = self.peer(peer);
        self.log.session_established(
            now,
            &Established {
                peer: who,
                version,
                suite,
                identity: &peer_identity,
                resumed,
                shard,
                handshake_time,
            },
        );
        self.by_peer.insert(peer, id);
        let replaced = self.installed.insert(
            id,
            Installed {
                peer,
                shard,
                established: now,
                identity: peer_identity,
                version,
                suite,
                cid: local_cid,
                peer_cid,
            },
        );
        let observed = &self.counters.observed;
        observed.handshake_completed(handshake_time);
        observed.session_added(suite);
        if let Some(old) = &replaced {
            observed.session_removed(old.suite);
        }
        match replaced {
            // The same peer's new handshake rekeyed its session, possibly on another
            // shard (it cannot today: one address hashes to one shard).
            Some(old) if old.shard != shard => {
                if let Some(n) = self.shard_sessions.get_mut(old.shard) {
                    *n = n.saturating_sub(1);
                }
                if let Some(n) = self.shard_sessions.get_mut(shard) {
                    *n += 1;
                }
            }
            Some(_) => {}
            None => {
                self.by_source.add(&self.settings.limits, peer);
                if let Some(n) = self.shard_sessions.get_mut(shard) {
                    *n += 1;
                }
            }
        }
        (version == "1.3").then_some(id)
    }

    /// DTLS 1.3: the keys of a KeyUpdate of session `id` to its shard (RFC 9147 §8): the
    /// peer's next read epoch (the previous one is retired once a record of the new one
    /// reaches control, or [`EPOCH_RETIRE_AFTER`] later) and/or our next write epoch.
    fn install_update(
        &mut self,
        now: Instant,
        shard: usize,
        peer: SocketAddr,
        id: SessionId,
        update: UpdatedKeys,
    ) {
        let UpdatedKeys { read, write } = update;
        let new_read = read.as_ref().map(|k| k.epoch);
        // A KeyUpdate keeps the session's CIDs (the shard takes them with the keys).
        let (cid, peer_cid) = self
            .installed
            .get(&id)
            .map(|s| {
                (
                    s.cid.clone().unwrap_or_default(),
                    s.peer_cid.clone().unwrap_or_default(),
                )
            })
            .unwrap_or_default();
        let command = ShardCommand::InstallKeys13 {
            session: id,
            peer,
            read: read.map(|k| read_keys13(k, self.config.replay_window)),
            write: write.map(write_keys13),
            cid,
            peer_cid,
            // Kept by the shard with the upstream prefix.
            rrc: false,
            // Kept by the shard: a KeyUpdate does not change who the peer is.
            upstream: UpstreamPrefix::None,
        };
        if !self.push(shard, command) {
            return;
        }
        ControlCounters::bump(&self.counters.key_updates);
        if let Some(epoch) = new_read {
            let at = now + EPOCH_RETIRE_AFTER;
            self.retiring.push((at, id, epoch - 1));
            self.next_timer = earliest(self.next_timer, Some(at));
        }
    }

    /// Serve mode with [`RuntimeConfig::proxy_header`](super::RuntimeConfig) set: the
    /// header the backend gets in front of the session's datagrams (built here, once).
    fn upstream_prefix(
        &self,
        (shard, peer): (usize, SocketAddr),
        version: &str,
        suite: CipherSuite,
        identity: &PeerIdentity,
        resumed: bool,
        alpn: Option<&[u8]>,
    ) -> UpstreamPrefix {
        let (Front::Server(_), Some(header)) = (&self.front, self.settings.proxy_header) else {
            return UpstreamPrefix::None;
        };
        // A certificate was checked against trust anchors unless verification is off.
        let verified = !matches!(
            self.config.peer_verification,
            PeerVerifier::DangerousAcceptAnyCertificateForTestsOnly
        );
        let identity = ClientIdentity::of(identity, verified);
        let facts = SessionFacts {
            client: peer,
            listen: self
                .shard_listen
                .get(shard)
                .copied()
                .unwrap_or(header.listen),
            version: if version == "1.3" {
                "DTLSv1.3"
            } else {
                "DTLSv1.2"
            },
            suite,
            identity: &identity,
            resumed,
            alpn,
        };
        upstream_header::prefix(header, &facts)
    }

    /// Queues `command` to `shard`; a full queue drops it (counted). Returns whether queued.
    pub(super) fn push(&self, shard: usize, command: ShardCommand) -> bool {
        let Some(queues) = self.shards.get(shard) else {
            return false;
        };
        match queues.push_command(command) {
            Ok(()) => true,
            Err(_) => {
                ControlCounters::bump(&self.counters.queue_full_drops);
                false
            }
        }
    }
}

/// Whether `datagram` starts with a DTLS 1.2 record of handshake content under an epoch
/// other than 0 (RFC 6347 §4.1: type, version, epoch, sequence number, length).
fn protected_handshake_record(datagram: &[u8]) -> bool {
    matches!(datagram, [22, 0xfe, 0xfd, e0, e1, ..] if [*e0, *e1] != [0, 0])
}

/// The shard's read state of a DTLS 1.3 epoch.
fn read_keys13(keys: EpochKeys13, replay_window: usize) -> Box<ReadKeys13> {
    Box::new(ReadKeys13 {
        epoch: keys.epoch,
        keys: keys.keys,
        replay_window,
        next_expected: keys.next_sequence,
    })
}

/// The shard's write state of a DTLS 1.3 epoch: its records start past the engine's.
fn write_keys13(keys: EpochKeys13) -> Box<WriteKeys13> {
    Box::new(WriteKeys13 {
        epoch: keys.epoch,
        keys: keys.keys,
        next_seq: keys.next_sequence,
    })
}

/// Client mode: keeps `ticket` as local source `peer`'s next one (replacing an older one),
/// unless [`MAX_TICKETS`] other sources hold one.
fn keep_ticket(
    tickets: &mut std::collections::HashMap<SocketAddr, control::SessionTicket>,
    peer: SocketAddr,
    ticket: control::SessionTicket,
) {
    if tickets.len() < MAX_TICKETS || tickets.contains_key(&peer) {
        tickets.insert(peer, ticket);
    }
}
