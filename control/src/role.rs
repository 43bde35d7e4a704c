//! [`Role`]: which side of a handshake an engine plays. Its own module so that the parts
//! both roles and both protocol versions share (the inbox, the key schedule, the shared
//! handshake data) need nothing from the state machines.

/// Which side of the handshake this engine plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Sends the ClientHello.
    Client,
    /// Answers it.
    Server,
}
