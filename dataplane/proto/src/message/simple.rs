//! Fixed-shape messages: Finished, NewSessionTicket, HelloRequest, ServerHelloDone and
//! the ChangeCipherSpec protocol message.

use crate::WireError;
use crate::codec::{Reader, put_u32, put_vec16};
use crate::codes::{CHANGE_CIPHER_SPEC, HandshakeType};

/// Length of `verify_data` for every DTLS 1.2 suite we negotiate: RFC 5246 §7.4.9,
/// "verify_data_length ... for all cipher suites that don't explicitly specify it is 12".
/// (DTLS 1.3's Finished is the hash length.)
pub const VERIFY_DATA_LEN: usize = 12;

/// Finished (RFC 5246 §7.4.9).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Finished {
    /// PRF(master_secret, finished_label, Hash(handshake_messages))[0..11].
    pub verify_data: [u8; VERIFY_DATA_LEN],
}

impl Finished {
    /// Message type.
    pub const MSG_TYPE: HandshakeType = HandshakeType::Finished;

    /// Parses a Finished body: exactly 12 bytes.
    pub fn parse(body: &[u8]) -> Result<Self, WireError> {
        let mut r = Reader::new(body, "Finished");
        let verify_data = r.array::<VERIFY_DATA_LEN>()?;
        r.finish()?;
        Ok(Finished { verify_data })
    }

    /// Appends the body.
    pub fn emit(&self, out: &mut Vec<u8>) -> Result<(), WireError> {
        out.extend_from_slice(&self.verify_data);
        Ok(())
    }
}

/// NewSessionTicket (RFC 5077 §3.3):
/// `uint32 ticket_lifetime_hint; opaque ticket<0..2^16-1>;`
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NewSessionTicket {
    /// Seconds; 0 means unspecified.
    pub lifetime_hint: u32,
    /// The opaque ticket; empty means "no ticket after all" (RFC 5077 §3.3).
    pub ticket: Vec<u8>,
}

impl NewSessionTicket {
    /// Message type.
    pub const MSG_TYPE: HandshakeType = HandshakeType::NewSessionTicket;

    /// Parses a NewSessionTicket body.
    pub fn parse(body: &[u8]) -> Result<Self, WireError> {
        let mut r = Reader::new(body, "NewSessionTicket");
        let lifetime_hint = r.u32()?;
        let ticket = r.vec16()?.to_vec();
        r.finish()?;
        Ok(NewSessionTicket {
            lifetime_hint,
            ticket,
        })
    }

    /// Appends the body.
    pub fn emit(&self, out: &mut Vec<u8>) -> Result<(), WireError> {
        put_u32(out, self.lifetime_hint);
        put_vec16(out, &self.ticket, "ticket")
    }
}

fn parse_empty(body: &[u8], what: &'static str) -> Result<(), WireError> {
    Reader::new(body, what).finish()
}

/// HelloRequest (RFC 5246 §7.4.1.1): empty body. We never renegotiate; the engine
/// answers it with a no_renegotiation warning or ignores it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct HelloRequest;

impl HelloRequest {
    /// Message type.
    pub const MSG_TYPE: HandshakeType = HandshakeType::HelloRequest;

    /// Parses the (empty) body.
    pub fn parse(body: &[u8]) -> Result<Self, WireError> {
        parse_empty(body, "HelloRequest").map(|()| HelloRequest)
    }

    /// Appends the (empty) body.
    pub fn emit(&self, _out: &mut Vec<u8>) -> Result<(), WireError> {
        Ok(())
    }
}

/// ServerHelloDone (RFC 5246 §7.4.5): empty body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ServerHelloDone;

impl ServerHelloDone {
    /// Message type.
    pub const MSG_TYPE: HandshakeType = HandshakeType::ServerHelloDone;

    /// Parses the (empty) body.
    pub fn parse(body: &[u8]) -> Result<Self, WireError> {
        parse_empty(body, "ServerHelloDone").map(|()| ServerHelloDone)
    }

    /// Appends the (empty) body.
    pub fn emit(&self, _out: &mut Vec<u8>) -> Result<(), WireError> {
        Ok(())
    }
}

/// The ChangeCipherSpec message (content type 20): the single byte 1 (RFC 5246 §7.1).
/// Not a handshake message: it has no handshake header and no message_seq.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ChangeCipherSpec;

impl ChangeCipherSpec {
    /// Encoded length.
    pub const LEN: usize = 1;

    /// Parses a ChangeCipherSpec record payload: exactly `[1]`.
    pub fn parse(data: &[u8]) -> Result<Self, WireError> {
        let mut r = Reader::new(data, "ChangeCipherSpec");
        if r.u8()? != CHANGE_CIPHER_SPEC {
            return Err(WireError::IllegalValue {
                what: "ChangeCipherSpec value",
            });
        }
        r.finish()?;
        Ok(ChangeCipherSpec)
    }

    /// Appends the single byte.
    pub fn emit(&self, out: &mut Vec<u8>) {
        out.push(CHANGE_CIPHER_SPEC);
    }
}
