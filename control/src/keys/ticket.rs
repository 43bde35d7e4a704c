//! What a client keeps to resume a session: an RFC 5077 ticket (DTLS 1.2) or an RFC 8446
//! §4.6.1 NewSessionTicket (DTLS 1.3).

use std::fmt;
use std::time::{Duration, Instant};

use crate::events::PeerIdentity;
use crate::keys::session::MasterBytes;
use dtls_proto::{CipherSuite, ProtocolVersion};

/// A session ticket and the state the client needs to resume with it (RFC 5077 §3.4 for
/// DTLS 1.2, RFC 8446 §2.2 / §4.6.1 for DTLS 1.3).
///
/// Pass it to [`crate::Connection::client`] to attempt an abbreviated handshake (a DTLS 1.2
/// ticket) or a PSK handshake without certificates (a DTLS 1.3 ticket, see
/// [`SessionTicket::version`]): a ticket is offered only by the engine of its version. Holds
/// the session's secret: zeroized on drop, not printed.
pub struct SessionTicket {
    /// The opaque ticket from NewSessionTicket.
    pub ticket: Vec<u8>,
    /// The server's lifetime hint in seconds (0: unspecified); for DTLS 1.3 the ticket's
    /// `ticket_lifetime` (RFC 8446 §4.6.1: not used beyond it).
    pub lifetime_hint: u32,
    /// The suite of the session the ticket resumes.
    pub suite: CipherSuite,
    /// Whether the session used extended_master_secret (DTLS 1.3: always, the key
    /// schedule binds the whole transcript).
    pub extended_master_secret: bool,
    pub(crate) secret: TicketSecret,
}

/// The secret a ticket resumes, by version.
pub(crate) enum TicketSecret {
    Dtls12(MasterBytes),
    Dtls13(Box<Resumption13>),
}

/// What a DTLS 1.3 ticket needs besides the ticket itself (RFC 8446 §4.6.1).
pub(crate) struct Resumption13 {
    /// The resumption PSK for this ticket (zeroized on drop).
    pub(crate) psk: zeroize::Zeroizing<Vec<u8>>,
    /// `ticket_age_add`: added to the ticket age the client reports (RFC 8446 §4.2.11.1).
    pub(crate) age_add: u32,
    /// When the ticket arrived, on the engine's clock (the ticket age starts here).
    pub(crate) received_at: Instant,
    /// The server's identity in the original session (RFC 8446 §2.2: a resumed session
    /// keeps it; no certificate is sent again).
    pub(crate) peer_identity: PeerIdentity,
}

impl SessionTicket {
    pub(crate) fn new(
        ticket: Vec<u8>,
        lifetime_hint: u32,
        suite: CipherSuite,
        extended_master_secret: bool,
        master: MasterBytes,
    ) -> Self {
        Self {
            ticket,
            lifetime_hint,
            suite,
            extended_master_secret,
            secret: TicketSecret::Dtls12(master),
        }
    }

    pub(crate) fn new13(
        ticket: Vec<u8>,
        lifetime: u32,
        suite: CipherSuite,
        resumption: Resumption13,
    ) -> Self {
        Self {
            ticket,
            lifetime_hint: lifetime,
            suite,
            extended_master_secret: true,
            secret: TicketSecret::Dtls13(Box::new(resumption)),
        }
    }

    /// The protocol version of the session the ticket resumes.
    pub fn version(&self) -> ProtocolVersion {
        match self.secret {
            TicketSecret::Dtls12(_) => ProtocolVersion::Dtls1_2,
            TicketSecret::Dtls13(_) => ProtocolVersion::Dtls1_3,
        }
    }

    /// The DTLS 1.2 master secret.
    pub(crate) fn master(&self) -> Option<&MasterBytes> {
        match &self.secret {
            TicketSecret::Dtls12(master) => Some(master),
            TicketSecret::Dtls13(_) => None,
        }
    }

    /// The DTLS 1.3 resumption state.
    pub(crate) fn resumption13(&self) -> Option<&Resumption13> {
        match &self.secret {
            TicketSecret::Dtls12(_) => None,
            TicketSecret::Dtls13(r) => Some(r),
        }
    }

    /// Whether the ticket may still be offered at `now` (the engine's clock): a DTLS 1.3
    /// ticket within its `ticket_lifetime` (at most seven days, which the parser enforces)
    /// since it arrived; a DTLS 1.2 ticket always (its lifetime is only a hint, RFC 5077
    /// §3.3, and the server decides). A client that keeps tickets drops those this says
    /// no to: the engine would not offer them anyway.
    pub fn is_usable(&self, now: Instant) -> bool {
        match self.secret {
            TicketSecret::Dtls12(_) => true,
            TicketSecret::Dtls13(_) => self.usable13(now),
        }
    }

    /// DTLS 1.3: whether the ticket is still within its lifetime at `now` (RFC 8446
    /// §4.6.1: "Clients MUST NOT cache tickets for longer than 7 days ... [or] the
    /// ticket_lifetime").
    pub(crate) fn usable13(&self, now: Instant) -> bool {
        self.resumption13().is_some_and(|r| {
            now.saturating_duration_since(r.received_at)
                < Duration::from_secs(u64::from(self.lifetime_hint))
        })
    }
}

impl fmt::Debug for SessionTicket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionTicket")
            .field("version", &self.version())
            .field("ticket_len", &self.ticket.len())
            .field("lifetime_hint", &self.lifetime_hint)
            .field("suite", &self.suite)
            .finish_non_exhaustive()
    }
}
