//! The extension bodies TLS 1.3 adds (RFC 8446 §4.2), as DTLS 1.3 uses them (RFC 9147 §5):
//! each with the forms it takes in the messages that carry it.
//!
//! [`Extensions`](crate::Extensions) keeps these raw (in `other`); the engine finds them
//! with [`Extensions::raw`](crate::Extensions::raw) and decodes the form its message needs.
//! Parsers never panic and reject trailing bytes, empty lists where the RFC sets a minimum,
//! and values out of range, each with the alert [`WireError::alert`] names.

use crate::WireError;
use crate::codec::{
    Prefix, Reader, put_u16, put_u32, put_vec8, put_vec16, u16_list, with_len_prefix,
};
use crate::codes::NamedGroup;
use crate::suites::ProtocolVersion;

/// supported_versions in a ClientHello (RFC 8446 §4.2.1): `ProtocolVersion
/// versions<2..254>`, in preference order.
pub fn parse_supported_versions_client(data: &[u8]) -> Result<Vec<ProtocolVersion>, WireError> {
    let mut r = Reader::new(data, "supported_versions");
    let list = r.vec8()?;
    r.finish()?;
    let codes = u16_list(list, 2, "supported_versions")?;
    Ok(codes.into_iter().map(ProtocolVersion::from_u16).collect())
}

/// Writes supported_versions for a ClientHello.
pub fn emit_supported_versions_client(
    versions: &[ProtocolVersion],
    out: &mut Vec<u8>,
) -> Result<(), WireError> {
    if versions.is_empty() {
        return Err(WireError::BadLength {
            what: "supported_versions",
        });
    }
    with_len_prefix(out, Prefix::U8, "supported_versions", |o| {
        for v in versions {
            put_u16(o, v.to_u16());
        }
        Ok(())
    })
}

/// supported_versions in a ServerHello or HelloRetryRequest (RFC 8446 §4.2.1): the one
/// `selected_version`.
pub fn parse_supported_versions_server(data: &[u8]) -> Result<ProtocolVersion, WireError> {
    let mut r = Reader::new(data, "supported_versions");
    let v = r.u16()?;
    r.finish()?;
    Ok(ProtocolVersion::from_u16(v))
}

/// Writes supported_versions for a ServerHello or HelloRetryRequest.
pub fn emit_supported_versions_server(version: ProtocolVersion, out: &mut Vec<u8>) {
    put_u16(out, version.to_u16());
}

/// One `KeyShareEntry` (RFC 8446 §4.2.8): a group and its `key_exchange<1..2^16-1>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct KeyShareEntry {
    /// The group.
    pub group: NamedGroup,
    /// The public value (or, for the hybrid groups, the concatenated values).
    pub key_exchange: Vec<u8>,
}

fn read_entry(r: &mut Reader<'_>) -> Result<KeyShareEntry, WireError> {
    let group = NamedGroup::from_u16(r.u16()?);
    let key_exchange = r.vec16()?;
    if key_exchange.is_empty() {
        return Err(WireError::BadLength {
            what: "key_share key_exchange",
        });
    }
    Ok(KeyShareEntry {
        group,
        key_exchange: key_exchange.to_vec(),
    })
}

fn write_entry(e: &KeyShareEntry, out: &mut Vec<u8>) -> Result<(), WireError> {
    if e.key_exchange.is_empty() {
        return Err(WireError::BadLength {
            what: "key_share key_exchange",
        });
    }
    put_u16(out, e.group.to_u16());
    put_vec16(out, &e.key_exchange, "key_share key_exchange")
}

/// key_share in a ClientHello (RFC 8446 §4.2.8): `KeyShareEntry client_shares<0..2^16-1>`.
/// "Clients MUST NOT offer multiple KeyShareEntry values for the same group": a repeated
/// group is `illegal_parameter`.
pub fn parse_key_share_client(data: &[u8]) -> Result<Vec<KeyShareEntry>, WireError> {
    let mut r = Reader::new(data, "key_share");
    let list = r.vec16()?;
    r.finish()?;
    let mut r = Reader::new(list, "key_share entry");
    let mut entries: Vec<KeyShareEntry> = Vec::new();
    while !r.is_empty() {
        let e = read_entry(&mut r)?;
        if entries.iter().any(|o| o.group == e.group) {
            return Err(WireError::IllegalValue {
                what: "key_share with a repeated group",
            });
        }
        entries.push(e);
    }
    Ok(entries)
}

/// Writes key_share for a ClientHello.
pub fn emit_key_share_client(
    entries: &[KeyShareEntry],
    out: &mut Vec<u8>,
) -> Result<(), WireError> {
    with_len_prefix(out, Prefix::U16, "key_share", |o| {
        entries.iter().try_for_each(|e| write_entry(e, o))
    })
}

/// key_share in a ServerHello (RFC 8446 §4.2.8): the one `server_share`.
pub fn parse_key_share_server(data: &[u8]) -> Result<KeyShareEntry, WireError> {
    let mut r = Reader::new(data, "key_share");
    let e = read_entry(&mut r)?;
    r.finish()?;
    Ok(e)
}

/// Writes key_share for a ServerHello.
pub fn emit_key_share_server(entry: &KeyShareEntry, out: &mut Vec<u8>) -> Result<(), WireError> {
    write_entry(entry, out)
}

/// key_share in a HelloRetryRequest (RFC 8446 §4.2.8): the `selected_group`.
pub fn parse_key_share_retry(data: &[u8]) -> Result<NamedGroup, WireError> {
    let mut r = Reader::new(data, "key_share");
    let g = r.u16()?;
    r.finish()?;
    Ok(NamedGroup::from_u16(g))
}

/// Writes key_share for a HelloRetryRequest.
pub fn emit_key_share_retry(group: NamedGroup, out: &mut Vec<u8>) {
    put_u16(out, group.to_u16());
}

/// A PSK key exchange mode (RFC 8446 §4.2.9).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PskKeyExchangeMode {
    /// psk_ke(0): PSK-only key establishment.
    PskKe,
    /// psk_dhe_ke(1): PSK with (EC)DHE key establishment.
    PskDheKe,
    /// A mode we do not know (ignored, RFC 8446 §4.2.9 lets a server pick from the rest).
    Unknown(u8),
}

impl PskKeyExchangeMode {
    /// The mode for `code`.
    pub fn from_u8(code: u8) -> Self {
        match code {
            0 => Self::PskKe,
            1 => Self::PskDheKe,
            other => Self::Unknown(other),
        }
    }

    /// Its code.
    pub fn to_u8(self) -> u8 {
        match self {
            Self::PskKe => 0,
            Self::PskDheKe => 1,
            Self::Unknown(c) => c,
        }
    }
}

/// psk_key_exchange_modes (RFC 8446 §4.2.9): `PskKeyExchangeMode ke_modes<1..255>`.
pub fn parse_psk_key_exchange_modes(data: &[u8]) -> Result<Vec<PskKeyExchangeMode>, WireError> {
    let mut r = Reader::new(data, "psk_key_exchange_modes");
    let list = r.vec8()?;
    r.finish()?;
    if list.is_empty() {
        return Err(WireError::BadLength {
            what: "psk_key_exchange_modes",
        });
    }
    Ok(list
        .iter()
        .copied()
        .map(PskKeyExchangeMode::from_u8)
        .collect())
}

/// Writes psk_key_exchange_modes.
pub fn emit_psk_key_exchange_modes(
    modes: &[PskKeyExchangeMode],
    out: &mut Vec<u8>,
) -> Result<(), WireError> {
    if modes.is_empty() {
        return Err(WireError::BadLength {
            what: "psk_key_exchange_modes",
        });
    }
    let codes: Vec<u8> = modes.iter().map(|m| m.to_u8()).collect();
    put_vec8(out, &codes, "psk_key_exchange_modes")
}

/// cookie (RFC 8446 §4.2.2): `opaque cookie<1..2^16-1>`.
pub fn parse_cookie(data: &[u8]) -> Result<Vec<u8>, WireError> {
    let mut r = Reader::new(data, "cookie");
    let cookie = r.vec16()?;
    r.finish()?;
    if cookie.is_empty() {
        return Err(WireError::BadLength { what: "cookie" });
    }
    Ok(cookie.to_vec())
}

/// Writes cookie.
pub fn emit_cookie(cookie: &[u8], out: &mut Vec<u8>) -> Result<(), WireError> {
    if cookie.is_empty() {
        return Err(WireError::BadLength { what: "cookie" });
    }
    put_vec16(out, cookie, "cookie")
}

/// One `PskIdentity` (RFC 8446 §4.2.11).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PskIdentity {
    /// `opaque identity<1..2^16-1>`: a ticket or an external PSK's identity.
    pub identity: Vec<u8>,
    /// The ticket age plus the ticket's age_add, modulo 2^32 (0 for external PSKs).
    pub obfuscated_ticket_age: u32,
}

/// pre_shared_key in a ClientHello (RFC 8446 §4.2.11): `OfferedPsks`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct OfferedPsks {
    /// `PskIdentity identities<7..2^16-1>`.
    pub identities: Vec<PskIdentity>,
    /// `PskBinderEntry binders<33..2^16-1>`, each `opaque<32..255>`, one per identity.
    pub binders: Vec<Vec<u8>>,
}

impl OfferedPsks {
    /// Parses the extension body. The counts of identities and binders must match
    /// (RFC 8446 §4.2.11: otherwise the server "MUST abort the handshake"; we name
    /// `illegal_parameter`).
    pub fn parse(data: &[u8]) -> Result<Self, WireError> {
        let mut r = Reader::new(data, "pre_shared_key");
        let ids = r.vec16()?;
        let binders = r.vec16()?;
        r.finish()?;
        let mut ri = Reader::new(ids, "psk identity");
        let mut identities = Vec::new();
        while !ri.is_empty() {
            let identity = ri.vec16()?;
            if identity.is_empty() {
                return Err(WireError::BadLength {
                    what: "psk identity",
                });
            }
            identities.push(PskIdentity {
                identity: identity.to_vec(),
                obfuscated_ticket_age: ri.u32()?,
            });
        }
        let mut rb = Reader::new(binders, "psk binder");
        let mut out = Vec::new();
        while !rb.is_empty() {
            let b = rb.vec8()?;
            if b.len() < 32 {
                return Err(WireError::BadLength { what: "psk binder" });
            }
            out.push(b.to_vec());
        }
        if identities.is_empty() || identities.len() != out.len() {
            return Err(WireError::IllegalValue {
                what: "pre_shared_key identities and binders",
            });
        }
        Ok(Self {
            identities,
            binders: out,
        })
    }

    /// Writes the extension body.
    pub fn emit(&self, out: &mut Vec<u8>) -> Result<(), WireError> {
        if self.identities.is_empty() || self.identities.len() != self.binders.len() {
            return Err(WireError::IllegalValue {
                what: "pre_shared_key identities and binders",
            });
        }
        with_len_prefix(out, Prefix::U16, "psk identities", |o| {
            for id in &self.identities {
                put_vec16(o, &id.identity, "psk identity")?;
                put_u32(o, id.obfuscated_ticket_age);
            }
            Ok(())
        })?;
        self.emit_binders(out)
    }

    /// Writes `binders<33..2^16-1>` alone (what follows the partial ClientHello that the
    /// binders authenticate, RFC 8446 §4.2.11.2).
    pub fn emit_binders(&self, out: &mut Vec<u8>) -> Result<(), WireError> {
        with_len_prefix(out, Prefix::U16, "psk binders", |o| {
            self.binders
                .iter()
                .try_for_each(|b| put_vec8(o, b, "psk binder"))
        })
    }

    /// Bytes of `binders` with its length prefix: the tail of the ClientHello cut off for
    /// the binder hash (RFC 8446 §4.2.11.2, the "partial ClientHello").
    pub fn binders_len(&self) -> usize {
        2 + self.binders.iter().map(|b| 1 + b.len()).sum::<usize>()
    }
}

/// pre_shared_key in a ServerHello (RFC 8446 §4.2.11): the `selected_identity` index.
pub fn parse_pre_shared_key_server(data: &[u8]) -> Result<u16, WireError> {
    let mut r = Reader::new(data, "pre_shared_key");
    let i = r.u16()?;
    r.finish()?;
    Ok(i)
}

/// Writes pre_shared_key for a ServerHello.
pub fn emit_pre_shared_key_server(selected: u16, out: &mut Vec<u8>) {
    put_u16(out, selected);
}

/// RFC 8446 §4.2.11: "The "pre_shared_key" extension MUST be the last extension in the
/// ClientHello". Checks an extension list (without its length prefix): true when it holds
/// no pre_shared_key or holds it last.
pub fn pre_shared_key_is_last(list: &[u8]) -> Result<bool, WireError> {
    let mut r = Reader::new(list, "extension");
    let mut seen_psk = false;
    while !r.is_empty() {
        if seen_psk {
            return Ok(false);
        }
        seen_psk = r.u16()? == crate::ExtensionType::PreSharedKey.to_u16();
        r.vec16()?;
    }
    Ok(true)
}

/// connection_id (RFC 9146 §3, and RFC 9147 §9 for DTLS 1.3's): `opaque cid<0..2^8-1>`; an
/// empty one says "send me none".
pub fn parse_connection_id(data: &[u8]) -> Result<Vec<u8>, WireError> {
    let mut r = Reader::new(data, "connection_id");
    let cid = r.vec8()?;
    r.finish()?;
    Ok(cid.to_vec())
}

/// Writes connection_id.
pub fn emit_connection_id(cid: &[u8], out: &mut Vec<u8>) -> Result<(), WireError> {
    put_vec8(out, cid, "connection_id")
}

/// early_data in a NewSessionTicket (RFC 8446 §4.2.10): `max_early_data_size`. (In a
/// ClientHello or EncryptedExtensions its body is empty; we refuse 0-RTT and never send it.)
pub fn parse_early_data_ticket(data: &[u8]) -> Result<u32, WireError> {
    let mut r = Reader::new(data, "early_data");
    let v = r.u32()?;
    r.finish()?;
    Ok(v)
}
