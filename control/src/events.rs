//! What the engine reports: [`Event`], [`SessionKeys`] and [`Transmit`].

use std::fmt;
use std::net::SocketAddr;

use dataplane::record::RecordKey;
use dataplane::record::v13::TrafficKeys13;
use dtls_crypto::pki_types::CertificateDer;
use dtls_crypto::tls13::TrafficSecret;

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
    /// DTLS 1.3 KeyUpdate (RFC 9147 §8): new keys for the next epoch of one or both
    /// directions. Read keys come as soon as the peer's KeyUpdate arrived (keep the old
    /// epoch until a record of the new one opens); write keys once our KeyUpdate was
    /// acknowledged (RFC 9147 §8: not before).
    KeysUpdated(Box<UpdatedKeys>),
    /// DTLS 1.3 connection IDs changed after the handshake (RFC 9147 §9): CIDs of ours we
    /// gave the peer in a NewConnectionId, the peer's CID to put in our records from now
    /// on when it asked for that (cid_immediate), and spare CIDs it gave us.
    ConnectionIds(Box<CidUpdate>),
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

/// The keys and sequence numbers of one DTLS 1.3 epoch, one direction: what the runtime
/// turns into `dtls_shard::queue::ReadKeys13` / `WriteKeys13`.
pub struct EpochKeys13 {
    /// The epoch (3 for the first application epoch, RFC 9147 §6.1).
    pub epoch: u64,
    /// Record protection and record-number keys of the epoch.
    pub keys: TrafficKeys13,
    /// The traffic secret the keys come from: the next epoch's keys after a KeyUpdate are
    /// derived from it (RFC 8446 §7.2).
    pub secret: TrafficSecret,
    /// The next record sequence number to use (write) or the lowest that may still be
    /// accepted (read: 0).
    pub next_sequence: u64,
}

impl fmt::Debug for EpochKeys13 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EpochKeys13")
            .field("epoch", &self.epoch)
            .field("next_sequence", &self.next_sequence)
            .finish_non_exhaustive()
    }
}

/// The keys a DTLS 1.3 KeyUpdate brought ([`Event::KeysUpdated`]).
#[derive(Debug)]
pub struct UpdatedKeys {
    /// The peer's next epoch.
    pub read: Option<EpochKeys13>,
    /// Our next epoch; `next_sequence` past the engine's reserve.
    pub write: Option<EpochKeys13>,
}

/// See [`Event::ConnectionIds`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CidUpdate {
    /// CIDs of ours the peer may put in its records to us from now on, besides the
    /// session's earlier ones (a driver that finds sessions by CID adds them).
    pub issued: Vec<Vec<u8>>,
    /// The peer's CID for our records from now on (the data plane's header changes).
    pub peer: Option<Vec<u8>>,
    /// Spare CIDs the peer gave us (NewConnectionId with usage cid_spare), oldest first,
    /// for our records after an address change (RFC 9147 §9).
    pub spare: Vec<Vec<u8>>,
}

/// The record keys of a completed session, by protocol version.
#[derive(Debug)]
pub enum RecordKeys {
    /// DTLS 1.2: one application epoch (1) each way.
    Dtls12 {
        /// Keys to open the peer's records.
        read: EpochKeys,
        /// Keys to seal our records. `next_sequence` is past every epoch-1 record the
        /// engine sent or may still send (it keeps a small reserve for retransmitting its
        /// last flight), so a shard continuing from it never reuses a nonce.
        write: EpochKeys,
    },
    /// DTLS 1.3: the first application epoch (3) each way, with the traffic secrets for
    /// later KeyUpdates.
    Dtls13 {
        /// Keys to open the peer's records.
        read: Box<EpochKeys13>,
        /// Keys to seal our records; `next_sequence` is past the records the engine keeps
        /// for itself (ACKs and alerts after completion), as in DTLS 1.2.
        write: Box<EpochKeys13>,
    },
}

/// Everything a shard needs to run a session once the handshake completed.
///
/// DTLS 1.2: build a `dataplane::record::Sealer` from the write keys of
/// [`RecordKeys::Dtls12`] and an `Opener` from its read keys with a `ReplayWindow` of
/// [`SessionKeys::replay_window`]. DTLS 1.3: `Sealer13`/`Opener13` from
/// [`RecordKeys::Dtls13`].
pub struct SessionKeys {
    /// The peer's address.
    pub peer: SocketAddr,
    /// The negotiated cipher suite.
    pub suite: CipherSuite,
    /// The record keys, by version.
    pub records: RecordKeys,
    /// Replay window size (records) for the read side.
    pub replay_window: usize,
    /// Our connection ID (RFC 9146 §3): what the peer puts in its records to us, which are
    /// then `tls12_cid` records. `None` when CIDs were not negotiated; empty when we asked
    /// for none (the peer's records use the plain format).
    pub local_cid: Option<Vec<u8>>,
    /// The peer's connection ID: what we put in our records to it (`tls12_cid` records when
    /// non-empty). `None` when CIDs were not negotiated; empty when the peer asked for none.
    pub peer_cid: Option<Vec<u8>>,
    /// Both sides negotiated the return-routability check (RFC 9853 §3, only with CIDs):
    /// the data plane checks a new peer address before moving the session to it.
    pub rrc: bool,
    /// Who the peer proved to be.
    pub peer_identity: PeerIdentity,
    /// The ALPN protocol both sides agreed on (RFC 7301).
    pub alpn: Option<Vec<u8>>,
    /// The SRTP protection profile both sides agreed on (RFC 5764).
    pub srtp_profile: Option<SrtpProtectionProfile>,
    /// The peer's heartbeat mode (RFC 6520 §2), `None` when heartbeats were not
    /// negotiated: `PeerAllowedToSend` means *we* may send it HeartbeatRequests.
    pub heartbeat: Option<HeartbeatMode>,
    /// The protocol version negotiated.
    pub version: dtls_proto::ProtocolVersion,
    /// Whether this session was resumed from a ticket (abbreviated handshake).
    pub resumed: bool,
    /// The RFC 5705 keying-material exporter of this session.
    pub exporter: Exporter,
    /// A ticket the client may use to resume later (client only; RFC 5077).
    pub ticket: Option<SessionTicket>,
}

impl RecordKeys {
    /// The DTLS 1.2 read and write keys, `None` for a DTLS 1.3 session.
    pub fn into_dtls12(self) -> Option<(EpochKeys, EpochKeys)> {
        match self {
            RecordKeys::Dtls12 { read, write } => Some((read, write)),
            RecordKeys::Dtls13 { .. } => None,
        }
    }

    /// The DTLS 1.3 read and write keys, `None` for a DTLS 1.2 session.
    pub fn into_dtls13(self) -> Option<(Box<EpochKeys13>, Box<EpochKeys13>)> {
        match self {
            RecordKeys::Dtls13 { read, write } => Some((read, write)),
            RecordKeys::Dtls12 { .. } => None,
        }
    }
}

impl fmt::Debug for SessionKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionKeys")
            .field("peer", &self.peer)
            .field("suite", &self.suite)
            .field("records", &self.records)
            .field("replay_window", &self.replay_window)
            .field("peer_identity", &self.peer_identity)
            .field("alpn", &self.alpn)
            .field("srtp_profile", &self.srtp_profile)
            .field("resumed", &self.resumed)
            .finish_non_exhaustive()
    }
}
