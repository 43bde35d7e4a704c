//! What the engine reports: [`Event`], [`SessionKeys`] and [`Transmit`].

use std::fmt;
use std::net::SocketAddr;

use dataplane::record::RecordKey;
use dtls_crypto::pki_types::CertificateDer;

use dtls_proto::{AlertDescription, AlertLevel, HeartbeatMode, SrtpProtectionProfile};

use crate::error::HandshakeError;
use crate::keys::exporter::Exporter;
use crate::keys::ticket::SessionTicket;
use dtls_proto::CipherSuite;

/// One datagram written by [`crate::Connection::poll_transmit`] into the caller's buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transmit {
    /// Where to send it.
    pub destination: SocketAddr,
    /// Bytes written at the start of the caller's buffer.
    pub len: usize,
    /// For GSO: the size of each segment when `len` holds several equal-size datagrams.
    /// The handshake engine always writes one datagram per call, so this is `None`.
    pub segment_size: Option<usize>,
}

/// Something the application must know about, from [`crate::Connection::poll_event`].
#[derive(Debug)]
pub enum Event {
    /// The handshake completed: everything a shard needs to run the session.
    KeysReady(Box<SessionKeys>),
    /// The peer sent an alert (fatal alerts are followed by [`Event::HandshakeFailed`] or
    /// [`Event::Closed`]).
    AlertReceived {
        /// Warning or fatal.
        level: AlertLevel,
        /// The alert description (RFC 5246 §7.2).
        description: AlertDescription,
    },
    /// The handshake failed; the engine is dead. A fatal alert was queued when the protocol
    /// says to send one (see [`HandshakeError::alert`]).
    HandshakeFailed(HandshakeError),
    /// The session was closed with close_notify (sent by us or by the peer).
    Closed {
        /// `true` when the peer sent close_notify, `false` when [`crate::Connection::close`]
        /// was called.
        by_peer: bool,
    },
}

/// Who the peer proved to be.
#[derive(Clone, PartialEq, Eq)]
pub enum PeerIdentity {
    /// No authentication of the peer (a server without client authentication, or the
    /// insecure test mode).
    None,
    /// The peer's certificate chain, end-entity first, verified unless the insecure mode
    /// is on.
    Certificates(Vec<CertificateDer<'static>>),
    /// The PSK identity the client used (RFC 4279 §2).
    Psk(Vec<u8>),
}

impl fmt::Debug for PeerIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PeerIdentity::None => f.write_str("None"),
            PeerIdentity::Certificates(chain) => write!(f, "Certificates({} certs)", chain.len()),
            PeerIdentity::Psk(id) => write!(f, "Psk({})", String::from_utf8_lossy(id)),
        }
    }
}

/// The keys and sequence numbers of one epoch, one direction.
///
/// DTLS 1.2 has one application epoch (1); DTLS 1.3 will hand over several (and update
/// them), which is why the epoch travels with the key and is a `u64`-capable field.
pub struct EpochKeys {
    /// The epoch these keys protect (1 for DTLS 1.2 application data).
    pub epoch: u16,
    /// The record protection key and fixed IV.
    pub key: RecordKey,
    /// The next record sequence number to use (write) or the lowest that may still be
    /// accepted (read: 0).
    pub next_sequence: u64,
}

impl fmt::Debug for EpochKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EpochKeys")
            .field("epoch", &self.epoch)
            .field("next_sequence", &self.next_sequence)
            .finish_non_exhaustive()
    }
}

/// Everything a shard needs to run a session once the handshake completed.
///
/// Build a `dataplane::record::Sealer` from [`SessionKeys::write`] and an `Opener` from
/// [`SessionKeys::read`] with a `ReplayWindow` of [`SessionKeys::replay_window`].
pub struct SessionKeys {
    /// The peer's address.
    pub peer: SocketAddr,
    /// The negotiated cipher suite.
    pub suite: CipherSuite,
    /// Keys to open the peer's records.
    pub read: EpochKeys,
    /// Keys to seal our records. `next_sequence` is past every epoch-1 record the engine
    /// sent or may still send (it keeps a small reserve for retransmitting its last flight),
    /// so a shard continuing from it never reuses a nonce.
    pub write: EpochKeys,
    /// Replay window size (records) for the read side.
    pub replay_window: usize,
    /// Our connection ID (RFC 9146 §3): what the peer puts in its records to us, which are
    /// then `tls12_cid` records. `None` when CIDs were not negotiated; empty when we asked
    /// for none (the peer's records use the plain format).
    pub local_cid: Option<Vec<u8>>,
    /// The peer's connection ID: what we put in our records to it (`tls12_cid` records when
    /// non-empty). `None` when CIDs were not negotiated; empty when the peer asked for none.
    pub peer_cid: Option<Vec<u8>>,
    /// Who the peer proved to be.
    pub peer_identity: PeerIdentity,
    /// The ALPN protocol both sides agreed on (RFC 7301).
    pub alpn: Option<Vec<u8>>,
    /// The SRTP protection profile both sides agreed on (RFC 5764).
    pub srtp_profile: Option<SrtpProtectionProfile>,
    /// The peer's heartbeat mode (RFC 6520 §2), `None` when heartbeats were not
    /// negotiated: `PeerAllowedToSend` means *we* may send it HeartbeatRequests.
    pub heartbeat: Option<HeartbeatMode>,
    /// Whether this session was resumed from a ticket (abbreviated handshake).
    pub resumed: bool,
    /// The RFC 5705 keying-material exporter of this session.
    pub exporter: Exporter,
    /// A ticket the client may use to resume later (client only; RFC 5077).
    pub ticket: Option<SessionTicket>,
}

impl fmt::Debug for SessionKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionKeys")
            .field("peer", &self.peer)
            .field("suite", &self.suite)
            .field("read", &self.read)
            .field("write", &self.write)
            .field("replay_window", &self.replay_window)
            .field("peer_identity", &self.peer_identity)
            .field("alpn", &self.alpn)
            .field("srtp_profile", &self.srtp_profile)
            .field("resumed", &self.resumed)
            .finish_non_exhaustive()
    }
}
