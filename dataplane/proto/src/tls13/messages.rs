//! The handshake messages DTLS 1.3 adds or reshapes (RFC 8446 §4, RFC 9147 §5 and §7):
//! parse and emit of each body. ClientHello and ServerHello keep the DTLS 1.2 layout
//! ([`ClientHello`](crate::ClientHello), [`ServerHello`](crate::ServerHello)); a
//! HelloRetryRequest is a ServerHello whose random is [`HELLO_RETRY_REQUEST_RANDOM`];
//! CertificateVerify keeps the 1.2 `DigitallySigned` layout
//! ([`CertificateVerify`](crate::CertificateVerify)). Finished is the transcript MAC, as long
//! as the suite's hash ([`Finished13`]).

use crate::WireError;
use crate::codec::{Prefix, Reader, put_u32, put_vec8, put_vec16, put_vec24, with_len_prefix};
use crate::codes::HandshakeType;
use crate::extensions::Extensions;

/// RFC 8446 §4.1.3: a ServerHello with this random is a HelloRetryRequest (the SHA-256 of
/// "HelloRetryRequest").
pub const HELLO_RETRY_REQUEST_RANDOM: [u8; 32] = [
    0xcf, 0x21, 0xad, 0x74, 0xe5, 0x9a, 0x61, 0x11, 0xbe, 0x1d, 0x8c, 0x02, 0x1e, 0x65, 0xb8, 0x91,
    0xc2, 0xa2, 0x11, 0x16, 0x7a, 0xbb, 0x8c, 0x5e, 0x07, 0x9e, 0x09, 0xe2, 0xc8, 0xa8, 0x33, 0x9c,
];

/// RFC 8446 §4.1.3: the last 8 bytes of a TLS 1.3 server's random when it negotiates
/// TLS 1.2 ("DOWNGRD" then 01); clients that support 1.3 "MUST check" for it. RFC 9147 §5.3
/// applies it to DTLS 1.3 and 1.2 alike.
pub const DOWNGRADE_SENTINEL_TLS12: [u8; 8] = [0x44, 0x4f, 0x57, 0x4e, 0x47, 0x52, 0x44, 0x01];

/// Whether a ServerHello's random marks it as a HelloRetryRequest.
pub fn is_hello_retry_request(random: &[u8; 32]) -> bool {
    *random == HELLO_RETRY_REQUEST_RANDOM
}

/// Whether a server random negotiating DTLS 1.2 carries the downgrade sentinel.
pub fn has_downgrade_sentinel(random: &[u8; 32]) -> bool {
    random[24..] == DOWNGRADE_SENTINEL_TLS12
}

/// EncryptedExtensions (RFC 8446 §4.3.1): `Extension extensions<0..2^16-1>`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct EncryptedExtensions {
    /// The extensions.
    pub extensions: Extensions,
}

impl EncryptedExtensions {
    /// Message type.
    pub const MSG_TYPE: HandshakeType = HandshakeType::EncryptedExtensions;

    /// Parses the body.
    pub fn parse(body: &[u8]) -> Result<Self, WireError> {
        Ok(Self {
            extensions: Extensions::parse(body)?,
        })
    }

    /// Appends the body.
    pub fn emit(&self, out: &mut Vec<u8>) -> Result<(), WireError> {
        self.extensions.emit(out)
    }
}

/// One `CertificateEntry` (RFC 8446 §4.4.2): an X.509 certificate and its extensions.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct CertificateEntry {
    /// `opaque cert_data<1..2^24-1>`: DER.
    pub cert_data: Vec<u8>,
    /// `Extension extensions<0..2^16-1>` (e.g. OCSP status), raw.
    pub extensions: Vec<u8>,
}

/// Certificate in TLS 1.3 (RFC 8446 §4.4.2): a request context and the entries, end-entity
/// first; an empty list is a client without a certificate.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Certificate13 {
    /// `opaque certificate_request_context<0..2^8-1>`: empty in the server's, the
    /// CertificateRequest's context in the client's.
    pub context: Vec<u8>,
    /// `CertificateEntry certificate_list<0..2^24-1>`.
    pub entries: Vec<CertificateEntry>,
}

impl Certificate13 {
    /// Message type.
    pub const MSG_TYPE: HandshakeType = HandshakeType::Certificate;

    /// Parses the body.
    pub fn parse(body: &[u8]) -> Result<Self, WireError> {
        let mut r = Reader::new(body, "Certificate");
        let context = r.vec8()?.to_vec();
        let list = r.vec24()?;
        r.finish()?;
        let mut r = Reader::new(list, "certificate_list");
        let mut entries = Vec::new();
        while !r.is_empty() {
            let cert = r.vec24()?;
            if cert.is_empty() {
                return Err(WireError::BadLength { what: "cert_data" });
            }
            let extensions = r.vec16()?;
            entries.push(CertificateEntry {
                cert_data: cert.to_vec(),
                extensions: extensions.to_vec(),
            });
        }
        Ok(Self { context, entries })
    }

    /// Appends the body.
    pub fn emit(&self, out: &mut Vec<u8>) -> Result<(), WireError> {
        put_vec8(out, &self.context, "certificate_request_context")?;
        with_len_prefix(out, Prefix::U24, "certificate_list", |o| {
            self.entries.iter().try_for_each(|e| {
                if e.cert_data.is_empty() {
                    return Err(WireError::BadLength { what: "cert_data" });
                }
                put_vec24(o, &e.cert_data, "cert_data")?;
                put_vec16(o, &e.extensions, "CertificateEntry extensions")
            })
        })
    }

    /// The DER certificates, end-entity first.
    pub fn chain(&self) -> impl Iterator<Item = &[u8]> {
        self.entries.iter().map(|e| e.cert_data.as_slice())
    }
}

/// CertificateRequest in TLS 1.3 (RFC 8446 §4.3.2): a context and extensions, which
/// "MUST" include signature_algorithms.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct CertificateRequest13 {
    /// `opaque certificate_request_context<0..2^8-1>` (empty in the handshake).
    pub context: Vec<u8>,
    /// `Extension extensions<2..2^16-1>`.
    pub extensions: Extensions,
}

impl CertificateRequest13 {
    /// Message type.
    pub const MSG_TYPE: HandshakeType = HandshakeType::CertificateRequest;

    /// Parses the body; without signature_algorithms it is `missing_extension`
    /// (RFC 8446 §4.3.2), reported as an illegal value here.
    pub fn parse(body: &[u8]) -> Result<Self, WireError> {
        let mut r = Reader::new(body, "CertificateRequest");
        let context = r.vec8()?.to_vec();
        let extensions = Extensions::parse(r.rest())?;
        if extensions.signature_algorithms.is_none() {
            return Err(WireError::IllegalValue {
                what: "CertificateRequest without signature_algorithms",
            });
        }
        Ok(Self {
            context,
            extensions,
        })
    }

    /// Appends the body.
    pub fn emit(&self, out: &mut Vec<u8>) -> Result<(), WireError> {
        put_vec8(out, &self.context, "certificate_request_context")?;
        self.extensions.emit(out)
    }
}

/// Finished in TLS 1.3 (RFC 8446 §4.4.4): `verify_data[Hash.length]`, checked by the engine
/// against the suite's hash length.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Finished13 {
    /// The MAC over the transcript.
    pub verify_data: Vec<u8>,
}

impl Finished13 {
    /// Message type.
    pub const MSG_TYPE: HandshakeType = HandshakeType::Finished;

    /// Parses a body that must be `hash_len` bytes (32 or 48).
    pub fn parse(body: &[u8], hash_len: usize) -> Result<Self, WireError> {
        if body.len() != hash_len {
            return Err(WireError::BadLength { what: "Finished" });
        }
        Ok(Self {
            verify_data: body.to_vec(),
        })
    }

    /// Appends the body.
    pub fn emit(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.verify_data);
    }
}

/// NewSessionTicket in TLS 1.3 (RFC 8446 §4.6.1).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct NewSessionTicket13 {
    /// Seconds the ticket may be used (at most 604800: seven days).
    pub lifetime: u32,
    /// Added to the ticket age the client reports, modulo 2^32.
    pub age_add: u32,
    /// `opaque ticket_nonce<0..255>`: input to the resumption PSK.
    pub nonce: Vec<u8>,
    /// `opaque ticket<1..2^16-1>`.
    pub ticket: Vec<u8>,
    /// `Extension extensions<0..2^16-2>`, raw (early_data: we never offer 0-RTT).
    pub extensions: Vec<u8>,
}

/// RFC 8446 §4.6.1: "Servers MUST NOT use any value greater than 604800 seconds".
pub const MAX_TICKET_LIFETIME: u32 = 604_800;

impl NewSessionTicket13 {
    /// Message type.
    pub const MSG_TYPE: HandshakeType = HandshakeType::NewSessionTicket;

    /// Parses the body; a lifetime over seven days or an empty ticket is illegal.
    pub fn parse(body: &[u8]) -> Result<Self, WireError> {
        let mut r = Reader::new(body, "NewSessionTicket");
        let lifetime = r.u32()?;
        let age_add = r.u32()?;
        let nonce = r.vec8()?.to_vec();
        let ticket = r.vec16()?.to_vec();
        let extensions = r.vec16()?.to_vec();
        r.finish()?;
        if lifetime > MAX_TICKET_LIFETIME {
            return Err(WireError::IllegalValue {
                what: "ticket_lifetime over seven days",
            });
        }
        if ticket.is_empty() {
            return Err(WireError::BadLength { what: "ticket" });
        }
        Ok(Self {
            lifetime,
            age_add,
            nonce,
            ticket,
            extensions,
        })
    }

    /// Appends the body.
    pub fn emit(&self, out: &mut Vec<u8>) -> Result<(), WireError> {
        if self.lifetime > MAX_TICKET_LIFETIME {
            return Err(WireError::IllegalValue {
                what: "ticket_lifetime over seven days",
            });
        }
        if self.ticket.is_empty() {
            return Err(WireError::BadLength { what: "ticket" });
        }
        put_u32(out, self.lifetime);
        put_u32(out, self.age_add);
        put_vec8(out, &self.nonce, "ticket_nonce")?;
        put_vec16(out, &self.ticket, "ticket")?;
        put_vec16(out, &self.extensions, "NewSessionTicket extensions")
    }
}

/// KeyUpdate (RFC 8446 §4.6.3): whether the peer should update its keys too.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyUpdate {
    /// update_not_requested(0).
    NotRequested,
    /// update_requested(1).
    Requested,
}

impl KeyUpdate {
    /// Message type.
    pub const MSG_TYPE: HandshakeType = HandshakeType::KeyUpdate;

    /// Parses the body; any other value is `illegal_parameter` (RFC 8446 §4.6.3).
    pub fn parse(body: &[u8]) -> Result<Self, WireError> {
        match body {
            [0] => Ok(Self::NotRequested),
            [1] => Ok(Self::Requested),
            [_] => Err(WireError::IllegalValue {
                what: "KeyUpdate request_update",
            }),
            _ => Err(WireError::BadLength { what: "KeyUpdate" }),
        }
    }

    /// Appends the body.
    pub fn emit(self, out: &mut Vec<u8>) {
        out.push(match self {
            Self::NotRequested => 0,
            Self::Requested => 1,
        });
    }
}

/// A record number (RFC 9147 §4, §7): the full epoch and sequence number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RecordNumber {
    /// `uint64 epoch`.
    pub epoch: u64,
    /// `uint64 sequence_number`.
    pub sequence: u64,
}

/// The ACK message (RFC 9147 §7), carried in its own content type (26), not in a handshake
/// message: `RecordNumber record_numbers<0..2^16-1>`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Ack {
    /// The records acknowledged.
    pub records: Vec<RecordNumber>,
}

impl Ack {
    /// Parses an ACK record's plaintext.
    pub fn parse(body: &[u8]) -> Result<Self, WireError> {
        let mut r = Reader::new(body, "ACK");
        let list = r.vec16()?;
        r.finish()?;
        if list.len() % 16 != 0 {
            return Err(WireError::BadLength {
                what: "ACK record_numbers",
            });
        }
        let records = list
            .chunks_exact(16)
            .map(|c| {
                let mut e = [0u8; 8];
                let mut s = [0u8; 8];
                e.copy_from_slice(&c[..8]);
                s.copy_from_slice(&c[8..]);
                RecordNumber {
                    epoch: u64::from_be_bytes(e),
                    sequence: u64::from_be_bytes(s),
                }
            })
            .collect();
        Ok(Self { records })
    }

    /// Appends the ACK record's plaintext.
    pub fn emit(&self, out: &mut Vec<u8>) -> Result<(), WireError> {
        with_len_prefix(out, Prefix::U16, "ACK record_numbers", |o| {
            for n in &self.records {
                o.extend_from_slice(&n.epoch.to_be_bytes());
                o.extend_from_slice(&n.sequence.to_be_bytes());
            }
            Ok(())
        })
    }
}

/// RequestConnectionId (RFC 9147 §9): how many new CIDs the sender asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RequestConnectionId {
    /// `uint8 num_cids`.
    pub num_cids: u8,
}

impl RequestConnectionId {
    /// Message type.
    pub const MSG_TYPE: HandshakeType = HandshakeType::RequestConnectionId;

    /// Parses the body.
    pub fn parse(body: &[u8]) -> Result<Self, WireError> {
        match body {
            [n] => Ok(Self { num_cids: *n }),
            _ => Err(WireError::BadLength {
                what: "RequestConnectionId",
            }),
        }
    }

    /// Appends the body.
    pub fn emit(self, out: &mut Vec<u8>) {
        out.push(self.num_cids);
    }
}

/// How the receiver of NewConnectionId may use the CIDs (RFC 9147 §9).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConnectionIdUsage {
    /// cid_immediate(0): use one now.
    Immediate,
    /// cid_spare(1): keep them for later.
    Spare,
}

/// NewConnectionId (RFC 9147 §9): `ConnectionId cids<0..2^16-1>` and their usage.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NewConnectionId {
    /// The CIDs, each `opaque<0..2^8-1>`.
    pub cids: Vec<Vec<u8>>,
    /// How to use them.
    pub usage: ConnectionIdUsage,
}

impl NewConnectionId {
    /// Message type.
    pub const MSG_TYPE: HandshakeType = HandshakeType::NewConnectionId;

    /// Parses the body.
    pub fn parse(body: &[u8]) -> Result<Self, WireError> {
        let mut r = Reader::new(body, "NewConnectionId");
        let list = r.vec16()?;
        let usage = match r.u8()? {
            0 => ConnectionIdUsage::Immediate,
            1 => ConnectionIdUsage::Spare,
            _ => {
                return Err(WireError::IllegalValue {
                    what: "NewConnectionId usage",
                });
            }
        };
        r.finish()?;
        let mut r = Reader::new(list, "ConnectionId");
        let mut cids = Vec::new();
        while !r.is_empty() {
            cids.push(r.vec8()?.to_vec());
        }
        Ok(Self { cids, usage })
    }

    /// Appends the body.
    pub fn emit(&self, out: &mut Vec<u8>) -> Result<(), WireError> {
        with_len_prefix(out, Prefix::U16, "NewConnectionId cids", |o| {
            self.cids
                .iter()
                .try_for_each(|c| put_vec8(o, c, "ConnectionId"))
        })?;
        out.push(match self.usage {
            ConnectionIdUsage::Immediate => 0,
            ConnectionIdUsage::Spare => 1,
        });
        Ok(())
    }
}

/// RFC 8446 §4.4.1: after a HelloRetryRequest the first ClientHello's place in the
/// transcript is taken by a synthetic `message_hash` handshake message carrying its hash.
/// DTLS 1.3 hashes handshake messages with the TLS header (RFC 9147 §5.2: "as if it were
/// TLS 1.3", without message_seq and fragment fields), so the synthetic message is the
/// 4-byte TLS header (type 254, 24-bit length) and the hash.
pub fn message_hash_header(hash_len: usize) -> [u8; 4] {
    let len = u32::try_from(hash_len).unwrap_or(0).to_be_bytes();
    [HandshakeType::MessageHash.to_u8(), len[1], len[2], len[3]]
}

/// Writes the 4-byte TLS handshake header that DTLS 1.3 hashes in front of each message
/// body (RFC 9147 §5.2): type and 24-bit length.
pub fn put_tls_handshake_header(
    out: &mut Vec<u8>,
    msg_type: HandshakeType,
    body_len: usize,
) -> Result<(), WireError> {
    let len = u32::try_from(body_len)
        .ok()
        .filter(|l| *l <= 0x00ff_ffff)
        .ok_or(WireError::TooLong {
            what: "handshake body",
        })?;
    out.push(msg_type.to_u8());
    out.extend_from_slice(&len.to_be_bytes()[1..]);
    Ok(())
}
