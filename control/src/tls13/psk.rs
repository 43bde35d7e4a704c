//! PSKs in DTLS 1.3 (RFC 8446 §2.2, §4.2.9, §4.2.11, §4.6.1): what a client offers
//! (a resumption ticket, an external PSK), what a server can take from the offer, and the
//! NewSessionTickets a server sends after the handshake.

use std::time::Instant;

use dtls_crypto::pki_types::{CertificateDer, UnixTime};
use dtls_crypto::tls13::PskKind;
use dtls_crypto::{SessionState13, TicketPeer};
use dtls_proto::tls13::messages::MAX_TICKET_LIFETIME;
use dtls_proto::tls13::{NewSessionTicket13, PskIdentity};
use dtls_proto::{CipherSuite, HandshakeType, PrfHash};

use super::messages::PSK_HASH;
use super::{Core13, EPOCH_APPLICATION};
use crate::config::{ClientAuth, Config, MAX_TLS13_TICKETS};
use crate::error::HandshakeError;
use crate::events::PeerIdentity;
use crate::keys::ticket::{Resumption13, SessionTicket};

// ----- client -----

/// One PSK our ClientHello offers (RFC 8446 §4.2.11): a resumption ticket or an external
/// PSK.
#[derive(Debug)]
pub(super) struct Offer {
    pub(super) identity: Vec<u8>,
    pub(super) obfuscated_ticket_age: u32,
    pub(super) key: zeroize::Zeroizing<Vec<u8>>,
    pub(super) kind: PskKind,
    pub(super) hash: PrfHash,
    /// Who the server is once it proves the PSK: the ticket's original server, or the
    /// external PSK's identity.
    pub(super) peer: PeerIdentity,
}

/// The PSKs to offer: our ticket (while within its lifetime) first, then our external
/// PSK, each only with a suite of its hash on offer; after a HelloRetryRequest only
/// those of its suite's hash (RFC 8446 §4.1.4: the client "SHOULD NOT offer any
/// pre-shared keys associated with a hash other than that of the selected cipher
/// suite").
pub(super) fn offers(
    config: &Config,
    ticket: Option<&SessionTicket>,
    retry_suite: Option<CipherSuite>,
    now: Instant,
) -> Vec<Offer> {
    let retry_hash = retry_suite.and_then(|s| s.tls13_params()).map(|p| p.hash());
    let on_offer = |hash: PrfHash| {
        retry_hash.is_none_or(|h| h == hash)
            && config
                .tls13_cipher_suites
                .iter()
                .any(|s| s.tls13_params().is_some_and(|p| p.hash() == hash))
    };
    let mut offers = Vec::new();
    if config.tls13_psk_modes.is_empty() {
        return offers;
    }
    if let Some(ticket) = ticket.filter(|t| t.usable13(now))
        && let Some(resumption) = ticket.resumption13()
        && let Some(hash) = ticket.suite.tls13_params().map(|p| p.hash())
        && on_offer(hash)
    {
        // RFC 8446 §4.2.11.1: the age in milliseconds plus ticket_age_add, modulo 2^32.
        let age = u32::try_from(
            now.saturating_duration_since(resumption.received_at)
                .as_millis(),
        )
        .unwrap_or(u32::MAX);
        offers.push(Offer {
            identity: ticket.ticket.clone(),
            obfuscated_ticket_age: age.wrapping_add(resumption.age_add),
            key: resumption.psk.clone(),
            kind: PskKind::Resumption,
            hash,
            peer: resumption.peer_identity.clone(),
        });
    }
    if let Some(psk) = offered_psk(config).filter(|_| on_offer(PSK_HASH)) {
        offers.push(Offer {
            identity: psk.identity.clone(),
            // RFC 8446 §4.2.11: "For identities established externally, an
            // obfuscated_ticket_age of 0 SHOULD be used".
            obfuscated_ticket_age: 0,
            key: psk.key.clone(),
            kind: PskKind::External,
            hash: PSK_HASH,
            peer: PeerIdentity::Psk(psk.identity.clone()),
        });
    }
    offers
}

/// Our external PSK, offered when one is configured and a SHA-256 suite is on offer.
fn offered_psk(config: &Config) -> Option<&crate::config::Psk> {
    let sha256 = config
        .tls13_cipher_suites
        .iter()
        .any(|s| s.tls13_params().is_some_and(|p| p.hash() == PSK_HASH));
    config.psks.first().filter(|_| sha256)
}

impl Core13 {
    /// A ticket from the server: its resumption PSK derived now (RFC 8446 §4.6.1:
    /// `HKDF-Expand-Label(resumption_master_secret, "resumption", ticket_nonce,
    /// Hash.length)`), kept with the suite and the server's identity of this session.
    /// Its early_data extension, if any, is ignored: we never send 0-RTT.
    pub(super) fn handle_new_session_ticket(
        &mut self,
        now: Instant,
        body: &[u8],
    ) -> Result<(), HandshakeError> {
        let message = NewSessionTicket13::parse(body).map_err(|source| HandshakeError::Decode {
            message: "NewSessionTicket",
            source,
        })?;
        // RFC 8446 §4.6.1: "The value of zero indicates that the ticket should be
        // discarded immediately."
        if message.lifetime == 0 {
            return Ok(());
        }
        let resumption = self.resumption.as_ref().ok_or(HandshakeError::Internal {
            what: "NewSessionTicket without a resumption master secret",
        })?;
        let psk = resumption
            .psk(&message.nonce)
            .map_err(|_| HandshakeError::Internal {
                what: "resumption PSK",
            })?;
        let ticket = SessionTicket::new13(
            message.ticket,
            message.lifetime,
            self.suite()?.suite(),
            Resumption13 {
                psk: zeroize::Zeroizing::new(psk.as_bytes().to_vec()),
                age_add: message.age_add,
                received_at: now,
                peer_identity: self.peer_identity.clone().unwrap_or(PeerIdentity::None),
            },
        );
        if self.tickets.len() >= usize::from(MAX_TLS13_TICKETS) {
            self.tickets.pop_front();
        }
        self.tickets.push_back(ticket);
        Ok(())
    }
}

// ----- server -----

/// One identity of the client's pre_shared_key we could take, before its binder is
/// checked.
pub(super) struct Candidate {
    pub(super) key: zeroize::Zeroizing<Vec<u8>>,
    pub(super) kind: PskKind,
    pub(super) hash: PrfHash,
    /// Who the peer is once the binder verifies: the external PSK's identity, or the
    /// identity of the session the ticket resumes.
    pub(super) identity: PeerIdentity,
}

/// How far the ticket age the client reports (RFC 8446 §4.2.11.1) may be from ours: our
/// clock counts whole seconds, and clocks drift (RFC 8446 §8.3 suggests windows of the
/// order of 10 seconds).
const TICKET_AGE_WINDOW_MS: u64 = 11_000;

/// The client's identity `id` as an external PSK we know, or as a ticket we sealed
/// that is still good (RFC 8446 §4.6.1, §4.2.11): within its lifetime, with a ticket
/// age close to ours, for a peer we would still let in. Anything else is skipped, and
/// without another PSK the handshake is a full one (never a failure).
pub(super) fn candidate(core: &Core13, id: &PskIdentity, wall: UnixTime) -> Option<Candidate> {
    let config = &core.config;
    if let Some(psk) = config.psks.iter().find(|p| p.identity == id.identity) {
        return Some(Candidate {
            key: psk.key.clone(),
            kind: PskKind::External,
            hash: PSK_HASH,
            identity: PeerIdentity::Psk(psk.identity.clone()),
        });
    }
    let keys = config.ticket_keys.as_ref()?;
    let state = keys.lock().ok()?.open13(&id.identity, wall).ok()?;
    let hash = CipherSuite::from_u16(state.cipher_suite)
        .tls13_params()?
        .hash();
    // RFC 8446 §4.2.11.1: "The "obfuscated_ticket_age" field of each PskIdentity
    // contains an obfuscated version of the ticket age formed by taking the age in
    // milliseconds and adding the "ticket_age_add" value".
    let client_age = u64::from(id.obfuscated_ticket_age.wrapping_sub(state.age_add));
    let server_age = wall
        .as_secs()
        .saturating_sub(state.issued_at.as_secs())
        .saturating_mul(1000);
    if client_age.abs_diff(server_age) > TICKET_AGE_WINDOW_MS
        || client_age >= state.lifetime.as_millis().try_into().unwrap_or(u64::MAX)
    {
        return None;
    }
    let identity = match state.peer {
        TicketPeer::None => PeerIdentity::None,
        // A PSK session resumes only while its identity is still configured.
        TicketPeer::Psk(identity) => {
            config.psks.iter().find(|p| p.identity == identity)?;
            PeerIdentity::Psk(identity)
        }
        TicketPeer::Certificate(der) => PeerIdentity::Certificates(vec![CertificateDer::from(der)]),
    };
    // A server that requires client certificates resumes only sessions that had one.
    if config.client_auth == ClientAuth::Required
        && !matches!(identity, PeerIdentity::Certificates(_))
    {
        return None;
    }
    Some(Candidate {
        key: state.psk,
        kind: PskKind::Resumption,
        hash,
        identity,
    })
}

/// After the handshake: our NewSessionTickets (RFC 8446 §4.6.1), each sealing its own
/// resumption PSK, suite, ticket_age_add, issue time and the client's identity under
/// the ticket keys; sent as a flight of epoch 3 and resent until acknowledged (RFC
/// 9147 §5.8.4 / §7). None without ticket keys or when the client offered no PSK mode
/// we allow (RFC 8446 §4.2.9: "Servers SHOULD NOT send NewSessionTicket with tickets
/// that are not compatible with the advertised modes").
pub(super) fn send_tickets(
    core: &mut Core13,
    now: Instant,
    wall: UnixTime,
    identity: &PeerIdentity,
    client_takes_tickets: bool,
) -> Result<(), HandshakeError> {
    let Some(keys) = core.config.ticket_keys.clone() else {
        return Ok(());
    };
    let count = core.config.tls13_tickets.min(MAX_TLS13_TICKETS);
    if !client_takes_tickets || count == 0 {
        return Ok(());
    }
    let resumption = core.resumption.as_ref().ok_or(HandshakeError::Internal {
        what: "no resumption master secret",
    })?;
    let peer = match identity {
        PeerIdentity::None => TicketPeer::None,
        PeerIdentity::Psk(id) => TicketPeer::Psk(id.clone()),
        PeerIdentity::Certificates(chain) => match chain.first() {
            Some(ee) => TicketPeer::Certificate(ee.to_vec()),
            None => TicketPeer::None,
        },
    };
    let Ok(mut keys) = keys.lock() else {
        return Ok(());
    };
    // RFC 8446 §4.6.1: "Servers MUST NOT use any value greater than 604800 seconds."
    let lifetime = core
        .config
        .ticket_lifetime
        .min(u32::try_from(keys.ticket_lifetime().as_secs()).unwrap_or(u32::MAX))
        .min(MAX_TICKET_LIFETIME);
    let suite = core.suite()?;
    let mut tickets = Vec::new();
    for i in 0..count {
        // RFC 8446 §4.6.1: the ticket_nonce is "unique across all tickets issued on
        // this connection".
        let nonce = vec![i];
        let psk = resumption
            .psk(&nonce)
            .map_err(|_| HandshakeError::Internal {
                what: "resumption PSK",
            })?;
        let mut age_add = [0u8; 4];
        core.rng.fill(&mut age_add);
        let age_add = u32::from_be_bytes(age_add);
        let state = SessionState13 {
            cipher_suite: suite.suite().to_u16(),
            psk: zeroize::Zeroizing::new(psk.as_bytes().to_vec()),
            age_add,
            peer: peer.clone(),
            issued_at: wall,
            lifetime: std::time::Duration::from_secs(u64::from(lifetime)),
        };
        // A ticket we cannot seal is not sent; the session goes on without one.
        let Ok(ticket) = keys.seal13(&state) else {
            break;
        };
        let mut body = Vec::new();
        let message = NewSessionTicket13 {
            lifetime,
            age_add,
            nonce,
            ticket,
            extensions: Vec::new(),
        };
        if message.emit(&mut body).is_err() {
            break;
        }
        tickets.push(body);
    }
    drop(keys);
    if tickets.is_empty() {
        return Ok(());
    }
    let messages = tickets
        .into_iter()
        .map(|body| core.out_message(EPOCH_APPLICATION, HandshakeType::NewSessionTicket, body))
        .collect();
    core.send_flight(now, messages)
}
