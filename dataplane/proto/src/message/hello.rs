//! ClientHello, HelloVerifyRequest and ServerHello (RFC 5246 §7.4.1, RFC 6347 §4.2.1).

use crate::WireError;
use crate::codec::{Prefix, Reader, put_u16, put_vec8, u16_list, with_len_prefix};
use crate::codes::{COMPRESSION_NULL, HandshakeType};
use crate::extensions::Extensions;
use crate::suites::{CipherSuite, ProtocolVersion};

/// Length of `Random` (RFC 5246 §7.4.1.2).
pub const RANDOM_LEN: usize = 32;
/// Maximum `SessionID` length (RFC 5246 §7.4.1.2: `opaque SessionID<0..32>`).
pub const MAX_SESSION_ID_LEN: usize = 32;
/// Maximum cookie length (RFC 6347 §4.2.1: `opaque cookie<0..2^8-1>`).
pub const MAX_COOKIE_LEN: usize = 255;

fn session_id<'a>(r: &mut Reader<'a>) -> Result<&'a [u8], WireError> {
    let id = r.vec8()?;
    if id.len() > MAX_SESSION_ID_LEN {
        return Err(WireError::BadLength { what: "session_id" });
    }
    Ok(id)
}

fn put_session_id(out: &mut Vec<u8>, id: &[u8]) -> Result<(), WireError> {
    if id.len() > MAX_SESSION_ID_LEN {
        return Err(WireError::TooLong { what: "session_id" });
    }
    put_vec8(out, id, "session_id")
}

/// Parses the optional trailing extension block (RFC 5246 §7.4.1.2: a hello may end
/// after compression_methods; otherwise the block must fill the rest exactly).
fn trailing_extensions(r: &mut Reader<'_>) -> Result<Extensions, WireError> {
    if r.is_empty() {
        return Ok(Extensions::default());
    }
    Extensions::parse(r.rest())
}

/// ClientHello (RFC 6347 §4.2.1: the TLS 1.2 ClientHello plus a cookie after session_id).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ClientHello {
    /// Highest version the client supports.
    pub client_version: ProtocolVersion,
    /// Client random.
    pub random: [u8; RANDOM_LEN],
    /// `SessionID<0..32>`: empty, or the session (ticket) being resumed.
    pub session_id: Vec<u8>,
    /// `opaque cookie<0..2^8-1>`: empty on the first ClientHello.
    pub cookie: Vec<u8>,
    /// `CipherSuite cipher_suites<2..2^16-2>`, client preference order.
    pub cipher_suites: Vec<CipherSuite>,
    /// `CompressionMethod compression_methods<1..2^8-1>`; always contains null(0).
    pub compression_methods: Vec<u8>,
    /// The extension block.
    pub extensions: Extensions,
}

impl ClientHello {
    /// Message type.
    pub const MSG_TYPE: HandshakeType = HandshakeType::ClientHello;

    /// Parses a ClientHello body.
    pub fn parse(body: &[u8]) -> Result<Self, WireError> {
        let mut r = Reader::new(body, "ClientHello");
        let client_version = ProtocolVersion::from_u16(r.u16()?);
        let random = r.array::<RANDOM_LEN>()?;
        let session_id = session_id(&mut r)?.to_vec();
        // The u8 length prefix bounds the cookie at 255; a prefix longer than the rest of
        // the message is reported as truncation.
        let cookie = r.vec8()?.to_vec();
        let suites = u16_list(r.vec16()?, 2, "cipher_suites")?;
        let compression_methods = r.vec8()?;
        if compression_methods.is_empty() {
            return Err(WireError::BadLength {
                what: "compression_methods",
            });
        }
        // RFC 5246 §7.4.1.2: "this vector MUST contain, and all implementations MUST
        // support, CompressionMethod.null".
        if !compression_methods.contains(&COMPRESSION_NULL) {
            return Err(WireError::IllegalValue {
                what: "compression_methods without null",
            });
        }
        let compression_methods = compression_methods.to_vec();
        let extensions = trailing_extensions(&mut r)?;
        Ok(ClientHello {
            client_version,
            random,
            session_id,
            cookie,
            cipher_suites: suites.into_iter().map(CipherSuite::from_u16).collect(),
            compression_methods,
            extensions,
        })
    }

    /// Appends the body. The extension block is omitted when empty.
    pub fn emit(&self, out: &mut Vec<u8>) -> Result<(), WireError> {
        if self.cipher_suites.is_empty() {
            return Err(WireError::IllegalValue {
                what: "ClientHello without cipher suites",
            });
        }
        if self.compression_methods.is_empty() {
            return Err(WireError::IllegalValue {
                what: "ClientHello without compression methods",
            });
        }
        put_u16(out, self.client_version.to_u16());
        out.extend_from_slice(&self.random);
        put_session_id(out, &self.session_id)?;
        put_vec8(out, &self.cookie, "cookie")?;
        with_len_prefix(out, Prefix::U16, "cipher_suites", |out| {
            self.cipher_suites
                .iter()
                .for_each(|s| put_u16(out, s.to_u16()));
            Ok(())
        })?;
        put_vec8(out, &self.compression_methods, "compression_methods")?;
        if !self.extensions.is_empty() {
            self.extensions.emit(out)?;
        }
        Ok(())
    }
}

/// HelloVerifyRequest (RFC 6347 §4.2.1).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HelloVerifyRequest {
    /// RFC 6347 §4.2.1: DTLS 1.2 servers SHOULD send DTLS 1.0 here, independent of the
    /// version that will be negotiated.
    pub server_version: ProtocolVersion,
    /// `opaque cookie<0..2^8-1>`.
    pub cookie: Vec<u8>,
}

impl HelloVerifyRequest {
    /// Message type.
    pub const MSG_TYPE: HandshakeType = HandshakeType::HelloVerifyRequest;

    /// Parses a HelloVerifyRequest body.
    pub fn parse(body: &[u8]) -> Result<Self, WireError> {
        let mut r = Reader::new(body, "HelloVerifyRequest");
        let server_version = ProtocolVersion::from_u16(r.u16()?);
        let cookie = r.vec8()?.to_vec();
        r.finish()?;
        Ok(HelloVerifyRequest {
            server_version,
            cookie,
        })
    }

    /// Appends the body.
    pub fn emit(&self, out: &mut Vec<u8>) -> Result<(), WireError> {
        put_u16(out, self.server_version.to_u16());
        put_vec8(out, &self.cookie, "cookie")
    }
}

/// ServerHello (RFC 5246 §7.4.1.3).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ServerHello {
    /// Negotiated version.
    pub server_version: ProtocolVersion,
    /// Server random.
    pub random: [u8; RANDOM_LEN],
    /// `SessionID<0..32>`.
    pub session_id: Vec<u8>,
    /// The selected suite.
    pub cipher_suite: CipherSuite,
    /// The selected compression method (must be null(0) for us; checked by the engine).
    pub compression_method: u8,
    /// The extension block (see [`Extensions::check_server_hello`]).
    pub extensions: Extensions,
}

impl ServerHello {
    /// Message type.
    pub const MSG_TYPE: HandshakeType = HandshakeType::ServerHello;

    /// Parses a ServerHello body.
    pub fn parse(body: &[u8]) -> Result<Self, WireError> {
        let mut r = Reader::new(body, "ServerHello");
        let server_version = ProtocolVersion::from_u16(r.u16()?);
        let random = r.array::<RANDOM_LEN>()?;
        let session_id = session_id(&mut r)?.to_vec();
        let cipher_suite = CipherSuite::from_u16(r.u16()?);
        let compression_method = r.u8()?;
        let extensions = trailing_extensions(&mut r)?;
        Ok(ServerHello {
            server_version,
            random,
            session_id,
            cipher_suite,
            compression_method,
            extensions,
        })
    }

    /// Appends the body. The extension block is omitted when empty.
    pub fn emit(&self, out: &mut Vec<u8>) -> Result<(), WireError> {
        put_u16(out, self.server_version.to_u16());
        out.extend_from_slice(&self.random);
        put_session_id(out, &self.session_id)?;
        put_u16(out, self.cipher_suite.to_u16());
        out.push(self.compression_method);
        if !self.extensions.is_empty() {
            self.extensions.emit(out)?;
        }
        Ok(())
    }
}
