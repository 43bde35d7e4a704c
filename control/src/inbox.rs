//! Incoming handshake messages: fragments from records into the wire crate's
//! [`Reassembler`], complete messages out in message_seq order, and recognition of a
//! retransmitted peer flight (RFC 6347 §4.2.4).

use std::sync::Arc;

use dtls_proto::{
    DropReason, FragmentOutcome, HandshakeFragments, HandshakeType, MessageCaps,
    ReassembledMessage, Reassembler, ReassemblyConfig, VERIFY_DATA_LEN,
};

use crate::config::Config;
use crate::role::Role;

/// Largest ClientHello body a server engine takes. The acceptor requires the first
/// ClientHello in one record, whose plaintext is at most 2^14 bytes (RFC 6347 §4.1, RFC 5246
/// §6.2.1), and a ClientHello never legitimately reaches an engine's reassembler after that
/// (a retransmission is old, a new handshake goes to the acceptor, renegotiation is
/// refused). One record's worth also leaves room for DTLS 1.3: a hybrid X25519MLKEM768
/// ClientHello is about 1.4 KB.
const MAX_CLIENT_HELLO: usize = 1 << 14;

/// PSK identities of up to 128 bytes are always accepted, longer ones when configured:
/// RFC 4279 §5.3, "implementations ... MUST support arbitrary PSK identities up to 128
/// octets in length".
const MIN_PSK_IDENTITY: usize = 128;

/// Largest signature of a scheme we verify ([`dtls_proto::SignatureScheme::SUPPORTED`]):
/// RSA with an 8192-bit key (the verifier's RSA limit), 1024 bytes; ECDSA P-384 DER is at
/// most 104 and Ed25519 64.
const MAX_SIGNATURE: usize = 8192 / 8;

/// Caps per message type for what the peer of `role` may send, below the per-handshake
/// `max_message_len`.
fn message_caps(config: &Config, role: Role) -> MessageCaps {
    match role {
        // What a client sends a server in DTLS 1.2. Any other type gets 0 bytes: the
        // engine rejects it anyway, and a claim costs nothing.
        Role::Server => {
            let longest_identity = config
                .psks
                .iter()
                .map(|p| p.identity.len())
                .max()
                .unwrap_or(0)
                .max(MIN_PSK_IDENTITY);
            MessageCaps::uniform(0)
                .with(HandshakeType::ClientHello, MAX_CLIENT_HELLO)
                .with(
                    HandshakeType::Certificate,
                    config.max_client_certificate_chain,
                )
                // The largest ClientKeyExchange is ECDHE_PSK (RFC 5489 §2):
                // psk_identity<0..2^16-1> (RFC 4279 §2) then point<1..2^8-1> (RFC 8422
                // §5.7); ECDHE alone is 1 + 32..97 bytes, PSK alone 2 + identity.
                .with(
                    HandshakeType::ClientKeyExchange,
                    2 + longest_identity + 1 + 255,
                )
                // DigitallySigned (RFC 5246 §4.7): SignatureAndHashAlgorithm, then
                // signature<0..2^16-1>.
                .with(HandshakeType::CertificateVerify, 2 + 2 + MAX_SIGNATURE)
                .with(HandshakeType::Finished, VERIFY_DATA_LEN)
        }
        // A server's flight: certificate chains, CertificateRequest CA lists and tickets
        // can be large, so they keep `max_message_len`; only the fixed-size messages are
        // capped.
        Role::Client => MessageCaps::NONE
            // server_version, cookie<0..2^8-1> (RFC 6347 §4.2.1).
            .with(HandshakeType::HelloVerifyRequest, 2 + 1 + 255)
            // `struct { } HelloRequest;`, `struct { } ServerHelloDone;` (RFC 5246 §7.4.1.1,
            // §7.4.5).
            .with(HandshakeType::HelloRequest, 0)
            .with(HandshakeType::ServerHelloDone, 0)
            .with(HandshakeType::Finished, VERIFY_DATA_LEN),
    }
}

/// What one handshake record did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct RecordOutcome {
    /// Some fragment did not parse or was dropped by the reassembler.
    pub(crate) malformed: bool,
    /// The record carried the first fragment of the peer flight we already answered:
    /// the peer is retransmitting, so our answer was probably lost.
    pub(crate) saw_old_flight_start: bool,
    /// An encrypted HelloRequest or ClientHello: the peer wants to renegotiate
    /// (RFC 6347 §4.2.2: a rehandshake restarts message_seq at 0, so these never go
    /// through the reassembler).
    pub(crate) renegotiation: bool,
}

/// The incoming message queue of one handshake.
#[derive(Debug)]
pub(crate) struct Inbox {
    reassembler: Reassembler,
    /// message_seq of the first message of the peer flight our current flight answers.
    answered_flight_start: Option<u16>,
    /// message_seq of the first message delivered since we last sent a flight.
    new_flight_start: Option<u16>,
    /// Conflicting fragments seen (see [`Inbox::handle_record`]).
    pub(crate) conflicts: u64,
    /// Fragments refused by the per-connection cap or the shared budget.
    pub(crate) buffer_refused: u64,
}

impl Inbox {
    /// The inbox of an engine playing `role` with `config`: its caps, and buffers charged
    /// to the configuration's shared budget.
    pub(crate) fn new(config: &Config, role: Role) -> Self {
        let max = config.max_handshake_buffer;
        let limits = ReassemblyConfig {
            max_handshake_bytes: max,
            max_message_len: max.min(ReassemblyConfig::default().max_message_len),
            message_caps: message_caps(config, role),
            ..ReassemblyConfig::default()
        };
        Self {
            reassembler: Reassembler::with_budget(limits, 0, Arc::clone(&config.reassembly_budget)),
            answered_flight_start: None,
            new_flight_start: None,
            conflicts: 0,
            buffer_refused: 0,
        }
    }

    /// Expects `seq` as the next message (a server engine starts after the ClientHello
    /// the acceptor verified).
    pub(crate) fn advance_to(&mut self, seq: u16) {
        self.reassembler.advance_to(seq);
    }

    /// We just sent a new flight: it answers the peer messages delivered since the last one.
    pub(crate) fn mark_flight_sent(&mut self) {
        if let Some(start) = self.new_flight_start.take() {
            self.answered_flight_start = Some(start);
        }
    }

    /// Sets the answered flight explicitly (the acceptor's ClientHello).
    pub(crate) fn set_answered_flight_start(&mut self, seq: u16) {
        self.answered_flight_start = Some(seq);
        self.new_flight_start = None;
    }

    /// Feeds the plaintext of one handshake record received in `epoch`.
    pub(crate) fn handle_record(&mut self, payload: &[u8], epoch: u16) -> RecordOutcome {
        let mut outcome = RecordOutcome::default();
        for fragment in HandshakeFragments::new(payload) {
            let Ok((header, data)) = fragment else {
                outcome.malformed = true;
                break;
            };
            // Finished is the only handshake message protected by epoch 1 in DTLS 1.2
            // (plus renegotiation attempts after completion); a plaintext Finished or an
            // encrypted message of another type is not acceptable.
            let renegotiation = matches!(
                header.msg_type,
                HandshakeType::HelloRequest | HandshakeType::ClientHello
            );
            if epoch != 0 && renegotiation {
                outcome.renegotiation = true;
                continue;
            }
            if (epoch == 0) == (header.msg_type == HandshakeType::Finished) {
                outcome.malformed = true;
                continue;
            }
            match self.reassembler.handle_fragment(&header, data) {
                FragmentOutcome::Accepted => {}
                FragmentOutcome::Old { message_seq, .. } => {
                    if Some(message_seq) == self.answered_flight_start
                        && header.fragment_offset == 0
                    {
                        outcome.saw_old_flight_start = true;
                    }
                }
                FragmentOutcome::Dropped {
                    reason: DropReason::LengthMismatch | DropReason::TypeMismatch,
                } => {
                    // Two fragments disagree on what message `message_seq` is. They are
                    // never merged; but if the first one came from a spoofer, keeping it
                    // would block the real message forever. The newest fragment wins: the
                    // buffered messages are discarded (the peer retransmits) and this one
                    // is stored.
                    outcome.malformed = true;
                    self.conflicts += 1;
                    self.reassembler.clear();
                    if let FragmentOutcome::Dropped {
                        reason: DropReason::HandshakeBudget | DropReason::GlobalBudget,
                    } = self.reassembler.handle_fragment(&header, data)
                    {
                        self.buffer_refused += 1;
                    }
                }
                FragmentOutcome::Dropped {
                    reason: DropReason::HandshakeBudget | DropReason::GlobalBudget,
                } => {
                    // Well-formed, but no room now: the peer's retransmission brings it
                    // again (RFC 6347 §4.2.4), by when other handshakes may have finished.
                    self.buffer_refused += 1;
                }
                FragmentOutcome::Dropped { .. } => outcome.malformed = true,
            }
        }
        outcome
    }

    /// The next complete message, in order.
    pub(crate) fn pop_message(&mut self) -> Option<ReassembledMessage> {
        let message = self.reassembler.poll_message()?;
        self.new_flight_start.get_or_insert(message.message_seq);
        Some(message)
    }
}
