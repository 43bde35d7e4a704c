//! What a client keeps to resume a session with an RFC 5077 ticket.

use std::fmt;

use crate::keys::session::MasterBytes;
use dtls_proto::CipherSuite;

/// A session ticket and the state the client needs to resume with it (RFC 5077 §3.4).
///
/// Pass it to [`crate::Connection::client`] to attempt an abbreviated handshake. Holds the
/// master secret: zeroized on drop, not printed.
pub struct SessionTicket {
    /// The opaque ticket from NewSessionTicket.
    pub ticket: Vec<u8>,
    /// The server's lifetime hint in seconds (0: unspecified).
    pub lifetime_hint: u32,
    /// The suite of the session the ticket resumes.
    pub suite: CipherSuite,
    /// Whether the session used extended_master_secret.
    pub extended_master_secret: bool,
    pub(crate) master: MasterBytes,
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
            master,
        }
    }
}

impl fmt::Debug for SessionTicket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionTicket")
            .field("ticket_len", &self.ticket.len())
            .field("lifetime_hint", &self.lifetime_hint)
            .field("suite", &self.suite)
            .finish_non_exhaustive()
    }
}
