//! Hello extensions (RFC 5246 §7.4.1.4) parsed into a typed [`Extensions`] struct.
//!
//! Typed fields exist for the extensions our handshake uses; every other extension is
//! kept raw in [`Extensions::other`] in the order received, so the engine can ignore it
//! (server side) or reject it as unsolicited (client side, RFC 5246 §7.4.1.4).

use crate::WireError;
use crate::codec::{Prefix, Reader, put_u16, put_vec8, put_vec16, u16_list, with_len_prefix};
use crate::codes::{
    EC_POINT_FORMAT_UNCOMPRESSED, ExtensionType, HeartbeatMode, NamedGroup, SignatureScheme,
    SrtpProtectionProfile,
};

/// The server_name extension (RFC 6066 §3).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ServerName {
    /// Empty extension_data: the server's acknowledgement in ServerHello.
    Acknowledged,
    /// A list holding one host_name (ASCII, no NUL, non-empty).
    HostName(String),
    /// A non-empty list holding only name types other than host_name.
    OtherTypesOnly,
}

/// use_srtp extension data (RFC 5764 §4.1.1).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UseSrtp {
    /// `SRTPProtectionProfiles<2..2^16-1>`: the client's offer, or the server's single
    /// choice.
    pub profiles: Vec<SrtpProtectionProfile>,
    /// `opaque srtp_mki<0..255>`.
    pub mki: Vec<u8>,
}

/// An extension without a typed field, as received.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RawExtension {
    /// Its type.
    pub ext_type: ExtensionType,
    /// Its extension_data.
    pub data: Vec<u8>,
}

/// The extension block of a ClientHello or ServerHello.
///
/// `None` / `false` means the extension was absent. Parsing rejects duplicates
/// (RFC 5246 §7.4.1.4: "There MUST NOT be more than one extension of the same type.")
/// with `illegal_parameter`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Extensions {
    /// server_name(0) (RFC 6066 §3).
    pub server_name: Option<ServerName>,
    /// supported_groups(10) (RFC 8422 §5.1.1); unknown groups are kept as `Unknown`.
    pub supported_groups: Option<Vec<NamedGroup>>,
    /// ec_point_formats(11) (RFC 8422 §5.1.2); always contains uncompressed(0) when parsed.
    pub ec_point_formats: Option<Vec<u8>>,
    /// signature_algorithms(13) (RFC 5246 §7.4.1.4.1).
    pub signature_algorithms: Option<Vec<SignatureScheme>>,
    /// use_srtp(14) (RFC 5764 §4.1.1).
    pub use_srtp: Option<UseSrtp>,
    /// heartbeat(15) (RFC 6520 §2).
    pub heartbeat: Option<HeartbeatMode>,
    /// application_layer_protocol_negotiation(16) (RFC 7301 §3.1): protocol names.
    pub alpn: Option<Vec<Vec<u8>>>,
    /// extended_master_secret(23) (RFC 7627 §5.1): present or not.
    pub extended_master_secret: bool,
    /// session_ticket(35) (RFC 5077 §3.2): empty (request / acknowledgement) or a ticket.
    pub session_ticket: Option<Vec<u8>>,
    /// renegotiation_info(0xff01) (RFC 5746 §3.2): `renegotiated_connection`; empty on an
    /// initial handshake.
    pub renegotiation_info: Option<Vec<u8>>,
    /// Every other extension, in the order received (emitted after the typed ones).
    pub other: Vec<RawExtension>,
}

impl Extensions {
    /// Parses `Extension extensions<0..2^16-1>` including its two-byte length, which must
    /// span all of `data`.
    pub fn parse(data: &[u8]) -> Result<Self, WireError> {
        let mut r = Reader::new(data, "extensions");
        let list = r.vec16()?;
        r.finish()?;
        Self::parse_list(list)
    }

    /// Parses the extension list without its length prefix.
    pub fn parse_list(list: &[u8]) -> Result<Self, WireError> {
        let mut r = Reader::new(list, "extension");
        let mut raw: Vec<(u16, &[u8])> = Vec::new();
        while !r.is_empty() {
            let ext_type = r.u16()?;
            let data = r.vec16()?;
            raw.push((ext_type, data));
        }
        // RFC 5246 §7.4.1.4: "There MUST NOT be more than one extension of the same type."
        // Sorting keeps duplicate detection O(n log n) on hostile input.
        let mut types: Vec<u16> = raw.iter().map(|(t, _)| *t).collect();
        types.sort_unstable();
        if let Some(w) = types.windows(2).find(|w| w[0] == w[1]) {
            return Err(WireError::DuplicateExtension { ext_type: w[0] });
        }
        let mut ext = Extensions::default();
        for (code, data) in raw {
            ext.parse_one(ExtensionType::from_u16(code), data)?;
        }
        Ok(ext)
    }

    fn parse_one(&mut self, ext_type: ExtensionType, data: &[u8]) -> Result<(), WireError> {
        match ext_type {
            ExtensionType::ServerName => self.server_name = Some(parse_server_name(data)?),
            ExtensionType::SupportedGroups => {
                let list = single_vec16(data, "supported_groups")?;
                let codes = u16_list(list, 2, "supported_groups")?;
                self.supported_groups = Some(codes.into_iter().map(NamedGroup::from_u16).collect());
            }
            ExtensionType::EcPointFormats => {
                let mut r = Reader::new(data, "ec_point_formats");
                let formats = r.vec8()?;
                r.finish()?;
                if formats.is_empty() {
                    return Err(WireError::BadLength {
                        what: "ec_point_formats",
                    });
                }
                // RFC 8422 §5.1.2 / §5.2: a peer that sends the extension must include
                // uncompressed; otherwise the handshake fails with illegal_parameter.
                if !formats.contains(&EC_POINT_FORMAT_UNCOMPRESSED) {
                    return Err(WireError::IllegalValue {
                        what: "ec_point_formats without uncompressed",
                    });
                }
                self.ec_point_formats = Some(formats.to_vec());
            }
            ExtensionType::SignatureAlgorithms => {
                let list = single_vec16(data, "signature_algorithms")?;
                let codes = u16_list(list, 2, "signature_algorithms")?;
                self.signature_algorithms =
                    Some(codes.into_iter().map(SignatureScheme::from_u16).collect());
            }
            ExtensionType::UseSrtp => {
                let mut r = Reader::new(data, "use_srtp");
                let profiles = u16_list(r.vec16()?, 2, "use_srtp profiles")?;
                let mki = r.vec8()?;
                r.finish()?;
                self.use_srtp = Some(UseSrtp {
                    profiles: profiles
                        .into_iter()
                        .map(SrtpProtectionProfile::from_u16)
                        .collect(),
                    mki: mki.to_vec(),
                });
            }
            ExtensionType::Heartbeat => {
                let mut r = Reader::new(data, "heartbeat");
                let mode = HeartbeatMode::from_u8(r.u8()?);
                r.finish()?;
                // RFC 6520 §2: "Upon reception of an unknown mode, an error Alert message
                // using illegal_parameter as its AlertDescription MUST be sent".
                if !mode.is_known() {
                    return Err(WireError::IllegalValue {
                        what: "heartbeat mode",
                    });
                }
                self.heartbeat = Some(mode);
            }
            ExtensionType::Alpn => self.alpn = Some(parse_alpn(data)?),
            ExtensionType::ExtendedMasterSecret => {
                // RFC 7627 §5.1: "The "extension_data" field of this extension is empty."
                if !data.is_empty() {
                    return Err(WireError::BadLength {
                        what: "extended_master_secret",
                    });
                }
                self.extended_master_secret = true;
            }
            ExtensionType::SessionTicket => self.session_ticket = Some(data.to_vec()),
            ExtensionType::RenegotiationInfo => {
                let mut r = Reader::new(data, "renegotiation_info");
                let conn = r.vec8()?;
                r.finish()?;
                self.renegotiation_info = Some(conn.to_vec());
            }
            _ => self.other.push(RawExtension {
                ext_type,
                data: data.to_vec(),
            }),
        }
        Ok(())
    }

    /// The body of an extension kept raw (in [`Self::other`]), e.g. the TLS 1.3 ones, whose
    /// form depends on the message ([`crate::tls13::extensions`]).
    pub fn raw(&self, ext_type: ExtensionType) -> Option<&[u8]> {
        self.other
            .iter()
            .find(|e| e.ext_type == ext_type)
            .map(|e| e.data.as_slice())
    }

    /// Whether no extension is present.
    pub fn is_empty(&self) -> bool {
        self.present_types().is_empty()
    }

    /// The types present, typed ones first (emit order), then `other` in order.
    pub fn present_types(&self) -> Vec<ExtensionType> {
        let mut t = Vec::new();
        let flags = [
            (self.server_name.is_some(), ExtensionType::ServerName),
            (
                self.supported_groups.is_some(),
                ExtensionType::SupportedGroups,
            ),
            (
                self.ec_point_formats.is_some(),
                ExtensionType::EcPointFormats,
            ),
            (
                self.signature_algorithms.is_some(),
                ExtensionType::SignatureAlgorithms,
            ),
            (self.use_srtp.is_some(), ExtensionType::UseSrtp),
            (self.heartbeat.is_some(), ExtensionType::Heartbeat),
            (self.alpn.is_some(), ExtensionType::Alpn),
            (
                self.extended_master_secret,
                ExtensionType::ExtendedMasterSecret,
            ),
            (self.session_ticket.is_some(), ExtensionType::SessionTicket),
            (
                self.renegotiation_info.is_some(),
                ExtensionType::RenegotiationInfo,
            ),
        ];
        t.extend(flags.iter().filter(|(p, _)| *p).map(|(_, ty)| *ty));
        t.extend(self.other.iter().map(|e| e.ext_type));
        t
    }

    /// Checks the ServerHello-specific rules that the generic parser cannot know:
    /// server_name must be empty (RFC 6066 §3), ALPN must name exactly one protocol
    /// (RFC 7301 §3.1), use_srtp must carry exactly one profile (RFC 5764 §4.1.1),
    /// session_ticket must be empty (RFC 5077 §3.2), signature_algorithms must be absent
    /// (RFC 5246 §7.4.1.4.1: "Servers MUST NOT send this extension").
    pub fn check_server_hello(&self) -> Result<(), WireError> {
        let bad = |what| Err(WireError::IllegalValue { what });
        if matches!(&self.server_name, Some(n) if *n != ServerName::Acknowledged) {
            return bad("server_name in ServerHello not empty");
        }
        if matches!(&self.alpn, Some(list) if list.len() != 1) {
            return bad("ALPN in ServerHello not exactly one protocol");
        }
        if matches!(&self.use_srtp, Some(s) if s.profiles.len() != 1) {
            return bad("use_srtp in ServerHello not exactly one profile");
        }
        if matches!(&self.session_ticket, Some(t) if !t.is_empty()) {
            return bad("session_ticket in ServerHello not empty");
        }
        if self.signature_algorithms.is_some() {
            return bad("signature_algorithms in ServerHello");
        }
        Ok(())
    }

    /// Appends `extensions<0..2^16-1>` with its length prefix. Fails if a field is too
    /// long for its encoding or an `other` entry repeats a type already present.
    pub fn emit(&self, out: &mut Vec<u8>) -> Result<(), WireError> {
        let mut types: Vec<u16> = self.present_types().iter().map(|t| t.to_u16()).collect();
        types.sort_unstable();
        if let Some(w) = types.windows(2).find(|w| w[0] == w[1]) {
            return Err(WireError::DuplicateExtension { ext_type: w[0] });
        }
        with_len_prefix(out, Prefix::U16, "extensions", |out| self.emit_list(out))
    }

    fn emit_list(&self, out: &mut Vec<u8>) -> Result<(), WireError> {
        if let Some(name) = &self.server_name {
            ext(out, ExtensionType::ServerName, |out| match name {
                ServerName::Acknowledged => Ok(()),
                ServerName::HostName(host) => {
                    with_len_prefix(out, Prefix::U16, "server_name list", |out| {
                        out.push(0); // NameType host_name(0)
                        put_vec16(out, host.as_bytes(), "host_name")
                    })
                }
                // Nothing meaningful to re-encode; refuse rather than invent bytes.
                ServerName::OtherTypesOnly => Err(WireError::IllegalValue {
                    what: "server_name without host_name cannot be emitted",
                }),
            })?;
        }
        if let Some(groups) = &self.supported_groups {
            ext(out, ExtensionType::SupportedGroups, |out| {
                u16_vec(out, groups.iter().map(|g| g.to_u16()), "supported_groups")
            })?;
        }
        if let Some(formats) = &self.ec_point_formats {
            ext(out, ExtensionType::EcPointFormats, |out| {
                put_vec8(out, formats, "ec_point_formats")
            })?;
        }
        if let Some(schemes) = &self.signature_algorithms {
            ext(out, ExtensionType::SignatureAlgorithms, |out| {
                u16_vec(
                    out,
                    schemes.iter().map(|s| s.to_u16()),
                    "signature_algorithms",
                )
            })?;
        }
        if let Some(srtp) = &self.use_srtp {
            ext(out, ExtensionType::UseSrtp, |out| {
                u16_vec(out, srtp.profiles.iter().map(|p| p.to_u16()), "use_srtp")?;
                put_vec8(out, &srtp.mki, "srtp_mki")
            })?;
        }
        if let Some(mode) = self.heartbeat {
            ext(out, ExtensionType::Heartbeat, |out| {
                out.push(mode.to_u8());
                Ok(())
            })?;
        }
        if let Some(protocols) = &self.alpn {
            ext(out, ExtensionType::Alpn, |out| {
                with_len_prefix(out, Prefix::U16, "ALPN list", |out| {
                    protocols
                        .iter()
                        .try_for_each(|p| put_vec8(out, p, "ALPN protocol"))
                })
            })?;
        }
        if self.extended_master_secret {
            ext(out, ExtensionType::ExtendedMasterSecret, |_| Ok(()))?;
        }
        if let Some(ticket) = &self.session_ticket {
            ext(out, ExtensionType::SessionTicket, |out| {
                out.extend_from_slice(ticket);
                Ok(())
            })?;
        }
        if let Some(conn) = &self.renegotiation_info {
            ext(out, ExtensionType::RenegotiationInfo, |out| {
                put_vec8(out, conn, "renegotiated_connection")
            })?;
        }
        for raw in &self.other {
            ext(out, raw.ext_type, |out| {
                out.extend_from_slice(&raw.data);
                Ok(())
            })?;
        }
        Ok(())
    }
}

fn ext(
    out: &mut Vec<u8>,
    ext_type: ExtensionType,
    body: impl FnOnce(&mut Vec<u8>) -> Result<(), WireError>,
) -> Result<(), WireError> {
    put_u16(out, ext_type.to_u16());
    with_len_prefix(out, Prefix::U16, "extension_data", body)
}

fn u16_vec(
    out: &mut Vec<u8>,
    codes: impl Iterator<Item = u16>,
    what: &'static str,
) -> Result<(), WireError> {
    with_len_prefix(out, Prefix::U16, what, |out| {
        codes.for_each(|c| put_u16(out, c));
        Ok(())
    })
}

/// extension_data that is exactly one `<..2^16-1>` vector.
fn single_vec16<'a>(data: &'a [u8], what: &'static str) -> Result<&'a [u8], WireError> {
    let mut r = Reader::new(data, what);
    let v = r.vec16()?;
    r.finish()?;
    Ok(v)
}

fn parse_server_name(data: &[u8]) -> Result<ServerName, WireError> {
    if data.is_empty() {
        return Ok(ServerName::Acknowledged);
    }
    let list = single_vec16(data, "server_name")?;
    if list.is_empty() {
        return Err(WireError::BadLength {
            what: "server_name list",
        });
    }
    let mut r = Reader::new(list, "server_name");
    let mut host: Option<String> = None;
    while !r.is_empty() {
        let name_type = r.u8()?;
        // RFC 6066 §3: future name types "MUST begin with a 16-bit length field", so every
        // entry can be skipped as a u16-prefixed vector.
        let name = r.vec16()?;
        if name_type != 0 {
            continue;
        }
        // RFC 6066 §3: "The ServerNameList MUST NOT contain more than one name of the same
        // name_type."
        if host.is_some() {
            return Err(WireError::IllegalValue {
                what: "server_name: two host_names",
            });
        }
        // HostName<1..2^16-1>, ASCII (RFC 6066 §3); a NUL would let names alias.
        if name.is_empty() {
            return Err(WireError::BadLength { what: "host_name" });
        }
        if !name.iter().all(|b| b.is_ascii() && *b != 0) {
            return Err(WireError::IllegalValue { what: "host_name" });
        }
        host = Some(String::from_utf8_lossy(name).into_owned());
    }
    Ok(host.map_or(ServerName::OtherTypesOnly, ServerName::HostName))
}

fn parse_alpn(data: &[u8]) -> Result<Vec<Vec<u8>>, WireError> {
    // RFC 7301 §3.1: ProtocolName<1..2^8-1>; ProtocolNameList<2..2^16-1>.
    let list = single_vec16(data, "ALPN")?;
    if list.len() < 2 {
        return Err(WireError::BadLength { what: "ALPN list" });
    }
    let mut r = Reader::new(list, "ALPN");
    let mut names = Vec::new();
    while !r.is_empty() {
        let name = r.vec8()?;
        if name.is_empty() {
            return Err(WireError::BadLength {
                what: "ALPN protocol name",
            });
        }
        names.push(name.to_vec());
    }
    Ok(names)
}
