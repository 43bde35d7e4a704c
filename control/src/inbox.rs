//! Incoming handshake messages: fragments from records into the wire crate's
//! [`Reassembler`], complete messages out in message_seq order, and recognition of a
//! retransmitted peer flight (RFC 6347 §4.2.4).

use dtls_wire::{
    DropReason, FragmentOutcome, HandshakeFragments, HandshakeType, ReassembledMessage,
    Reassembler, ReassemblyConfig,
};

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
}

impl Inbox {
    pub(crate) fn new(max_handshake_bytes: usize) -> Self {
        let config = ReassemblyConfig {
            max_handshake_bytes,
            max_message_len: max_handshake_bytes.min(ReassemblyConfig::default().max_message_len),
            ..ReassemblyConfig::default()
        };
        Self {
            reassembler: Reassembler::new(config, 0),
            answered_flight_start: None,
            new_flight_start: None,
            conflicts: 0,
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
                    let next = u16::try_from(self.reassembler.next_seq()).unwrap_or(u16::MAX);
                    self.reassembler = Reassembler::new(*self.reassembler.config(), next);
                    let _ = self.reassembler.handle_fragment(&header, data);
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
