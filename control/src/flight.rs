//! The outgoing flight buffer: handshake messages of one flight, cut into fragments and
//! records and packed into datagrams no larger than the MTU (RFC 6347 §4.1.1, §4.2.3).
//!
//! Timer handling lives in [`crate::timer`]; this module only builds datagrams.

use std::collections::VecDeque;

use dataplane::record::ContentType;
use dtls_proto::{CHANGE_CIPHER_SPEC, Fragmenter, HandshakeType};

use crate::error::HandshakeError;
use crate::record_layer::RecordWriter;

/// The DTLS handshake header length (RFC 6347 §4.2.2).
pub(crate) const HANDSHAKE_HEADER_LEN: usize = 12;

/// One message of a flight.
#[derive(Debug, Clone)]
pub(crate) enum OutMessage {
    /// A handshake message (body without the DTLS handshake header).
    Handshake {
        /// The write epoch its records go out in.
        epoch: u16,
        /// HandshakeType code.
        msg_type: u8,
        /// RFC 6347 §4.2.2 message_seq.
        message_seq: u16,
        /// The message body.
        body: Vec<u8>,
    },
    /// ChangeCipherSpec (always epoch 0 in DTLS 1.2).
    ChangeCipherSpec,
}

/// The messages of the flight we sent last (and may have to send again).
#[derive(Debug, Clone, Default)]
pub(crate) struct Flight {
    pub(crate) messages: Vec<OutMessage>,
}

impl Flight {
    pub(crate) fn is_empty(&self) -> bool {
        self.messages.is_empty()
    }

    /// The newest epoch the flight's handshake messages are written in: the write epoch
    /// once it was sent.
    pub(crate) fn write_epoch(&self) -> Option<u16> {
        self.messages
            .iter()
            .filter_map(|m| match m {
                OutMessage::Handshake { epoch, .. } => Some(*epoch),
                OutMessage::ChangeCipherSpec => None,
            })
            .max()
    }
}

/// Smallest handshake fragment body worth starting in a partly filled datagram.
const MIN_FRAGMENT: usize = 32;

/// Cuts `flight` into records and packs them into datagrams of at most `mtu` bytes,
/// appended to `out`. Several messages share a datagram when they fit (RFC 6347 §4.1.1:
/// "Multiple DTLS records may be placed in a single datagram"); a message larger than the
/// room left is fragmented (RFC 6347 §4.2.3), because "Each DTLS record MUST fit within a
/// single datagram" (RFC 6347 §4.1.1).
pub(crate) fn pack_flight(
    flight: &Flight,
    mtu: usize,
    writer: &mut RecordWriter,
    out: &mut VecDeque<Vec<u8>>,
) -> Result<(), HandshakeError> {
    let mut datagram: Vec<u8> = Vec::with_capacity(mtu);
    for message in &flight.messages {
        match message {
            OutMessage::ChangeCipherSpec => {
                if datagram.len() + writer.overhead(0) + 1 > mtu {
                    out.push_back(std::mem::replace(&mut datagram, Vec::with_capacity(mtu)));
                }
                writer.push_record(
                    &mut datagram,
                    ContentType::ChangeCipherSpec,
                    0,
                    &[&[CHANGE_CIPHER_SPEC]],
                )?;
            }
            OutMessage::Handshake {
                epoch,
                msg_type,
                message_seq,
                body,
            } => {
                let overhead = writer.overhead(*epoch) + HANDSHAKE_HEADER_LEN;
                if overhead >= mtu {
                    return Err(HandshakeError::Internal {
                        what: "MTU too small",
                    });
                }
                let internal = |_| HandshakeError::Internal {
                    what: "handshake message too long",
                };
                let mut fragmenter =
                    Fragmenter::new(HandshakeType::from_u8(*msg_type), *message_seq, body)
                        .map_err(internal)?;
                while !fragmenter.is_done() {
                    let left = fragmenter.remaining();
                    let room = mtu.saturating_sub(datagram.len() + overhead);
                    // Start a new datagram rather than send a sliver of a message.
                    if room < left.clamp(1, MIN_FRAGMENT) && !datagram.is_empty() {
                        out.push_back(std::mem::replace(&mut datagram, Vec::with_capacity(mtu)));
                        continue;
                    }
                    let Some(fragment) = fragmenter.next_fragment(room) else {
                        break;
                    };
                    let header = fragment.header.to_bytes().map_err(internal)?;
                    writer.push_record(
                        &mut datagram,
                        ContentType::Handshake,
                        *epoch,
                        &[&header, fragment.data],
                    )?;
                }
            }
        }
    }
    if !datagram.is_empty() {
        out.push_back(datagram);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use dataplane::record::Records;

    fn flight(sizes: &[usize]) -> Flight {
        Flight {
            messages: sizes
                .iter()
                .enumerate()
                .map(|(i, &n)| OutMessage::Handshake {
                    epoch: 0,
                    msg_type: 11,
                    message_seq: i as u16,
                    body: (0..n).map(|b| b as u8).collect(),
                })
                .collect(),
        }
    }

    /// Reassembles every message from the datagrams (by message_seq) and checks them.
    fn check(flight: &Flight, datagrams: &VecDeque<Vec<u8>>, mtu: usize) {
        let mut bodies: Vec<Vec<u8>> = vec![Vec::new(); flight.messages.len()];
        for d in datagrams {
            assert!(d.len() <= mtu, "datagram of {} > MTU {mtu}", d.len());
            for rec in Records::new(d) {
                let p = rec.header.payload();
                let seq = usize::from(u16::from_be_bytes([p[4], p[5]]));
                let off = usize::from_be_bytes([0, 0, 0, 0, 0, p[6], p[7], p[8]]);
                let len = usize::from_be_bytes([0, 0, 0, 0, 0, p[9], p[10], p[11]]);
                assert_eq!(off, bodies[seq].len(), "fragments in order");
                assert_eq!(p.len(), 12 + len);
                bodies[seq].extend_from_slice(&p[12..]);
            }
        }
        for (m, b) in flight.messages.iter().zip(&bodies) {
            let OutMessage::Handshake { body, .. } = m else {
                unreachable!()
            };
            assert_eq!(body, b);
        }
    }

    #[test]
    fn small_messages_share_one_datagram() {
        let f = flight(&[80, 40, 0]);
        let mut w = RecordWriter::new(0);
        let mut out = VecDeque::new();
        pack_flight(&f, 1200, &mut w, &mut out).expect("pack");
        assert_eq!(out.len(), 1);
        assert_eq!(Records::new(&out[0]).count(), 3);
        assert_eq!(w.next_sequence(0), Some(3));
        check(&f, &out, 1200);
    }

    #[test]
    fn large_message_fragmented_to_mtu() {
        for mtu in [200, 300, 577, 1200] {
            let f = flight(&[90, 3000, 500, 0]);
            let mut w = RecordWriter::new(7);
            let mut out = VecDeque::new();
            pack_flight(&f, mtu, &mut w, &mut out).expect("pack");
            check(&f, &out, mtu);
            assert!(out.len() >= 3000 / mtu);
            // Every datagram but the last is well filled.
            for d in out.iter().take(out.len() - 1) {
                assert!(
                    d.len() + 13 + 12 + MIN_FRAGMENT > mtu,
                    "underfilled {}",
                    d.len()
                );
            }
        }
    }

    #[test]
    fn a_flight_spans_epochs_with_their_own_sequence_numbers() {
        use dataplane::record::{Aead, RecordKey, Sealer};
        let key = RecordKey::new(Aead::Aes128Gcm, &[1; 16], &[2; 4]).expect("key");
        let mut w = RecordWriter::new(4);
        w.install(Sealer::new(w.next_epoch(), key, 0).expect("sealer"));
        let mut f = flight(&[700]);
        f.messages.push(OutMessage::ChangeCipherSpec);
        f.messages.push(OutMessage::Handshake {
            epoch: 1,
            msg_type: 20,
            message_seq: 1,
            body: vec![9; 12],
        });
        assert_eq!(f.write_epoch(), Some(1));
        let mut out = VecDeque::new();
        pack_flight(&f, 300, &mut w, &mut out).expect("pack");
        let headers: Vec<(u8, u16, u64)> = out
            .iter()
            .inspect(|d| assert!(d.len() <= 300, "datagram of {}", d.len()))
            .flat_map(|d| {
                Records::new(d)
                    .map(|r| {
                        (
                            r.header.content_type(),
                            r.header.epoch(),
                            r.header.sequence(),
                        )
                    })
                    .collect::<Vec<_>>()
            })
            .collect();
        // Three fragments of the 700-byte message and the CCS in epoch 0 from 4 on, then
        // the sealed Finished as the first record of epoch 1.
        assert_eq!(
            headers,
            [(22, 0, 4), (22, 0, 5), (22, 0, 6), (20, 0, 7), (22, 1, 0)]
        );
    }
}
