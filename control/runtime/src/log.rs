//! What the control loop tells an operator: one call per handshake failure or refusal, per
//! session established and per session closed (never per packet).
//!
//! The loop only reports; a [`SessionLog`] decides how to write it (the daemon formats log
//! lines and rate-limits failures per source and globally). Calls come from the control
//! thread, between engine calls, so an implementation must not block for long.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use dtls_proto::AlertDescription;
use dtls_shard::{CloseReason, SessionCounters};

use super::limits::Refusal;
use control::{CipherSuite, ClaimedIdentity, HandshakeError, PeerIdentity};

/// Who is on the other side, as the shard's session table knows them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer {
    /// The session's key in the shard: the DTLS client (serve) or the local source
    /// (connect).
    pub addr: SocketAddr,
    /// Connect mode: the DTLS server the session goes to.
    pub server: Option<SocketAddr>,
}

/// A handshake that failed after the cookie exchange.
#[derive(Debug)]
pub struct HandshakeFailure<'a> {
    /// The peer.
    pub peer: Peer,
    /// The protocol version ("1.2").
    pub version: &'static str,
    /// Why.
    pub error: &'a HandshakeError,
    /// The fatal alert we sent, if any.
    pub alert_sent: Option<AlertDescription>,
    /// The fatal alert the peer sent, if that is why.
    pub alert_received: Option<AlertDescription>,
    /// The SNI host name and PSK identity the peer claimed, when known.
    pub claimed: ClaimedIdentity<'a>,
}

/// A session whose keys went to its shard.
#[derive(Debug)]
pub struct Established<'a> {
    /// The peer.
    pub peer: Peer,
    /// The protocol version ("1.2").
    pub version: &'static str,
    /// The negotiated suite.
    pub suite: CipherSuite,
    /// Who the peer proved to be.
    pub identity: &'a PeerIdentity,
    /// Whether it resumed a session from a ticket.
    pub resumed: bool,
    /// The shard that carries it.
    pub shard: usize,
    /// From the engine's creation to its keys.
    pub handshake_time: Duration,
}

/// A session that ended.
#[derive(Debug)]
pub struct Closed<'a> {
    /// The peer.
    pub peer: Peer,
    /// Why it ended.
    pub reason: &'a CloseReason,
    /// How long it lived, when its start is known.
    pub duration: Option<Duration>,
    /// Records and plaintext bytes each way.
    pub stats: SessionCounters,
    /// Who the peer proved to be, when known.
    pub identity: Option<&'a PeerIdentity>,
}

/// Where the control loop reports handshakes and sessions (see the module documentation).
/// Every method does nothing by default.
pub trait SessionLog: Send {
    /// A handshake failed after the cookie exchange.
    fn handshake_failed(&mut self, _now: Instant, _failure: &HandshakeFailure<'_>) {}
    /// A handshake was not started (a cap was reached); `alert_sent` tells whether the
    /// peer was told.
    fn handshake_refused(
        &mut self,
        _now: Instant,
        _peer: Peer,
        _refusal: Refusal,
        _alert_sent: bool,
    ) {
    }
    /// The peer asked an established DTLS 1.2 session to renegotiate (a HelloRequest or
    /// ClientHello under the session's keys) and was refused: with a no_renegotiation
    /// warning when `alert_sent` (the session's engine was still there), silently when the
    /// engine was gone. The session goes on either way.
    fn renegotiation_refused(
        &mut self,
        _now: Instant,
        _peer: Peer,
        _version: &'static str,
        _alert_sent: bool,
    ) {
    }
    /// A half-open handshake was dropped to make room for a newer one.
    fn handshake_shed(&mut self, _now: Instant, _peer: Peer) {}
    /// A session's keys reached its shard.
    fn session_established(&mut self, _now: Instant, _session: &Established<'_>) {}
    /// A session ended.
    fn session_closed(&mut self, _now: Instant, _session: &Closed<'_>) {}
    /// Called once per loop turn (for summaries of suppressed lines).
    fn tick(&mut self, _now: Instant) {}
}

/// A [`SessionLog`] that writes nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoLog;

impl SessionLog for NoLog {}
