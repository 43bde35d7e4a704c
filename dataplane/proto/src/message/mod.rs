//! Handshake message bodies. Each type has `parse(&[u8])` over the complete
//! (reassembled) body and `emit(&self, &mut Vec<u8>)` that appends the body; the
//! 12-byte header is added by [`encode_message`] or the fragmenter.

pub mod cert;
pub mod hello;
pub mod kx;
pub mod simple;

pub use cert::{Certificate, CertificateRequest};
pub use hello::{
    ClientHello, HelloVerifyRequest, MAX_COOKIE_LEN, MAX_SESSION_ID_LEN, RANDOM_LEN, ServerHello,
};
pub use kx::{
    CertificateVerify, ClientKeyExchange, DigitallySigned, EcdheParams, ServerKeyExchange,
};
pub use simple::{
    ChangeCipherSpec, Finished, HelloRequest, NewSessionTicket, ServerHelloDone, VERIFY_DATA_LEN,
};

use crate::WireError;
use crate::codec::U24_MAX;
use crate::codes::HandshakeType;
use crate::header::HandshakeRepr;
use crate::suites::KeyExchange;

/// Any handshake message body, parsed.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum HandshakeMessage {
    /// hello_request(0)
    HelloRequest(HelloRequest),
    /// client_hello(1)
    ClientHello(ClientHello),
    /// server_hello(2)
    ServerHello(ServerHello),
    /// hello_verify_request(3)
    HelloVerifyRequest(HelloVerifyRequest),
    /// new_session_ticket(4)
    NewSessionTicket(NewSessionTicket),
    /// certificate(11)
    Certificate(Certificate),
    /// server_key_exchange(12)
    ServerKeyExchange(ServerKeyExchange),
    /// certificate_request(13)
    CertificateRequest(CertificateRequest),
    /// server_hello_done(14)
    ServerHelloDone(ServerHelloDone),
    /// certificate_verify(15)
    CertificateVerify(CertificateVerify),
    /// client_key_exchange(16)
    ClientKeyExchange(ClientKeyExchange),
    /// finished(20)
    Finished(Finished),
}

impl HandshakeMessage {
    /// Parses `body` as a message of type `msg_type`.
    ///
    /// `kx` is the negotiated key exchange, needed for ServerKeyExchange and
    /// ClientKeyExchange; without it those fail with [`WireError::UnexpectedMessage`].
    /// Unknown types fail the same way (RFC 5246 §7.4: unexpected handshake messages are
    /// fatal, with `unexpected_message`).
    pub fn parse(
        msg_type: HandshakeType,
        body: &[u8],
        kx: Option<KeyExchange>,
    ) -> Result<Self, WireError> {
        let no_kx = WireError::UnexpectedMessage {
            what: "key exchange message before a suite was negotiated",
        };
        Ok(match msg_type {
            HandshakeType::HelloRequest => Self::HelloRequest(HelloRequest::parse(body)?),
            HandshakeType::ClientHello => Self::ClientHello(ClientHello::parse(body)?),
            HandshakeType::ServerHello => Self::ServerHello(ServerHello::parse(body)?),
            HandshakeType::HelloVerifyRequest => {
                Self::HelloVerifyRequest(HelloVerifyRequest::parse(body)?)
            }
            HandshakeType::NewSessionTicket => {
                Self::NewSessionTicket(NewSessionTicket::parse(body)?)
            }
            HandshakeType::Certificate => Self::Certificate(Certificate::parse(body)?),
            HandshakeType::ServerKeyExchange => {
                Self::ServerKeyExchange(ServerKeyExchange::parse(body, kx.ok_or(no_kx)?)?)
            }
            HandshakeType::CertificateRequest => {
                Self::CertificateRequest(CertificateRequest::parse(body)?)
            }
            HandshakeType::ServerHelloDone => Self::ServerHelloDone(ServerHelloDone::parse(body)?),
            HandshakeType::CertificateVerify => {
                Self::CertificateVerify(CertificateVerify::parse(body)?)
            }
            HandshakeType::ClientKeyExchange => {
                Self::ClientKeyExchange(ClientKeyExchange::parse(body, kx.ok_or(no_kx)?)?)
            }
            HandshakeType::Finished => Self::Finished(Finished::parse(body)?),
            // DTLS 1.3 messages are not part of a 1.2 handshake (RFC 5246 §7.4).
            HandshakeType::EndOfEarlyData
            | HandshakeType::EncryptedExtensions
            | HandshakeType::RequestConnectionId
            | HandshakeType::NewConnectionId
            | HandshakeType::KeyUpdate
            | HandshakeType::MessageHash => {
                return Err(WireError::UnexpectedMessage {
                    what: "DTLS 1.3 handshake message in a DTLS 1.2 handshake",
                });
            }
            HandshakeType::Unknown(_) => {
                return Err(WireError::UnexpectedMessage {
                    what: "unknown handshake type",
                });
            }
        })
    }

    /// The message type.
    pub fn msg_type(&self) -> HandshakeType {
        match self {
            Self::HelloRequest(_) => HandshakeType::HelloRequest,
            Self::ClientHello(_) => HandshakeType::ClientHello,
            Self::ServerHello(_) => HandshakeType::ServerHello,
            Self::HelloVerifyRequest(_) => HandshakeType::HelloVerifyRequest,
            Self::NewSessionTicket(_) => HandshakeType::NewSessionTicket,
            Self::Certificate(_) => HandshakeType::Certificate,
            Self::ServerKeyExchange(_) => HandshakeType::ServerKeyExchange,
            Self::CertificateRequest(_) => HandshakeType::CertificateRequest,
            Self::ServerHelloDone(_) => HandshakeType::ServerHelloDone,
            Self::CertificateVerify(_) => HandshakeType::CertificateVerify,
            Self::ClientKeyExchange(_) => HandshakeType::ClientKeyExchange,
            Self::Finished(_) => HandshakeType::Finished,
        }
    }

    /// Appends the body (no header).
    pub fn emit(&self, out: &mut Vec<u8>) -> Result<(), WireError> {
        match self {
            Self::HelloRequest(m) => m.emit(out),
            Self::ClientHello(m) => m.emit(out),
            Self::ServerHello(m) => m.emit(out),
            Self::HelloVerifyRequest(m) => m.emit(out),
            Self::NewSessionTicket(m) => m.emit(out),
            Self::Certificate(m) => m.emit(out),
            Self::ServerKeyExchange(m) => m.emit(out),
            Self::CertificateRequest(m) => m.emit(out),
            Self::ServerHelloDone(m) => m.emit(out),
            Self::CertificateVerify(m) => m.emit(out),
            Self::ClientKeyExchange(m) => m.emit(out),
            Self::Finished(m) => m.emit(out),
        }
    }
}

/// Appends a complete, unfragmented handshake message (12-byte header with
/// `fragment_offset = 0`, `fragment_length = length`, then `body`). This is the form that
/// enters the handshake transcript (RFC 6347 §4.2.6) and the form of a message that fits
/// one record.
pub fn encode_message(
    msg_type: HandshakeType,
    message_seq: u16,
    body: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), WireError> {
    if body.len() > U24_MAX {
        return Err(WireError::TooLong {
            what: "handshake message",
        });
    }
    // body.len() <= U24_MAX, so it fits u32.
    let repr = HandshakeRepr::unfragmented(msg_type, message_seq, body.len() as u32);
    out.extend_from_slice(&repr.to_bytes()?);
    out.extend_from_slice(body);
    Ok(())
}
