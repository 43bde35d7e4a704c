//! The handshake states (RFC 5246 §7.3 message flow, RFC 6347 §4.2.4 flights).
//!
//! Each `Expect*` state names the next message the engine accepts. A handler consumes one
//! message in the current state and returns the next state (`Result<State, _>`); a message
//! that does not fit the state is fatal (unexpected_message). The data a handshake accumulates
//! (randoms, transcript, negotiated parameters, ephemeral keys, the peer's chain) mostly
//! spans several states, so it is kept beside the state rather than moved from state to
//! state: what both roles need in [`crate::handshake::Handshake`], what only one role keeps
//! in [`crate::client::ClientState`] or [`crate::server::ServerState`].
//!
//! Full handshake:
//! ```text
//! client                                   server
//! ExpectServerHello  <- HelloVerifyRequest (stateless Acceptor)
//! ExpectServerHello  <- ServerHello
//! ExpectServerCertificate <- Certificate (certificate suites)
//! ExpectServerKeyExchange <- ServerKeyExchange (optional for plain PSK)
//! ExpectServerHelloDone   <- [CertificateRequest] ServerHelloDone
//!   Certificate* ClientKeyExchange CertificateVerify* [CCS] Finished ->
//!                                         ExpectClientCertificate (if requested)
//!                                         ExpectClientKeyExchange
//!                                         ExpectCertificateVerify (if a cert was sent)
//!                                         ExpectChangeCipherSpec, ExpectFinished
//! ExpectNewSessionTicket <- NewSessionTicket* [CCS] Finished
//! ExpectChangeCipherSpec, ExpectFinished -> Established
//! ```
//! Abbreviated (ticket) handshake: ServerHello NewSessionTicket* [CCS] Finished from the
//! server, then [CCS] Finished from the client.

/// Where a handshake is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum State {
    /// Client: first ClientHello sent; HelloVerifyRequest or ServerHello next.
    ExpectServerHello,
    /// Client: the server's Certificate next.
    ExpectServerCertificate,
    /// Client: ServerKeyExchange next (for plain PSK it may be skipped).
    ExpectServerKeyExchange,
    /// Client: CertificateRequest or ServerHelloDone next.
    ExpectServerHelloDone,
    /// Client: the server promised a ticket: NewSessionTicket next.
    ExpectNewSessionTicket,
    /// Server: the client's Certificate next (we sent CertificateRequest).
    ExpectClientCertificate,
    /// Server: ClientKeyExchange next.
    ExpectClientKeyExchange,
    /// Server: CertificateVerify next (the client sent a certificate).
    ExpectCertificateVerify,
    /// Either: the peer's ChangeCipherSpec next.
    ExpectChangeCipherSpec,
    /// Either: the peer's Finished (in the epoch its ChangeCipherSpec opened) next.
    ExpectFinished,
    /// Keys handed out; the engine only answers retransmissions and alerts.
    Established,
    /// The handshake failed.
    Failed,
    /// close_notify sent or received.
    Closed,
}

impl State {
    /// The state's name, for logs and errors.
    pub(crate) fn name(self) -> &'static str {
        match self {
            State::ExpectServerHello => "ExpectServerHello",
            State::ExpectServerCertificate => "ExpectServerCertificate",
            State::ExpectServerKeyExchange => "ExpectServerKeyExchange",
            State::ExpectServerHelloDone => "ExpectServerHelloDone",
            State::ExpectNewSessionTicket => "ExpectNewSessionTicket",
            State::ExpectClientCertificate => "ExpectClientCertificate",
            State::ExpectClientKeyExchange => "ExpectClientKeyExchange",
            State::ExpectCertificateVerify => "ExpectCertificateVerify",
            State::ExpectChangeCipherSpec => "ExpectChangeCipherSpec",
            State::ExpectFinished => "ExpectFinished",
            State::Established => "Established",
            State::Failed => "Failed",
            State::Closed => "Closed",
        }
    }

    /// Whether the peer's ChangeCipherSpec is the next thing we accept.
    pub(crate) fn expects_change_cipher_spec(self) -> bool {
        self == State::ExpectChangeCipherSpec
    }

    /// Whether a ChangeCipherSpec may legitimately still come (it arrived early).
    pub(crate) fn awaits_peer_ccs_later(self) -> bool {
        !matches!(
            self,
            State::ExpectFinished | State::Established | State::Failed | State::Closed
        )
    }

    /// The state after the peer's ChangeCipherSpec.
    pub(crate) fn after_change_cipher_spec(self) -> State {
        match self {
            State::ExpectChangeCipherSpec => State::ExpectFinished,
            other => other,
        }
    }
}
