//! The header `dtlsd serve` puts in front of the plaintext it relays to the backend, so the
//! backend learns who the client is (without it the backend sees the daemon's address for
//! every session).
//!
//! Two formats:
//! - **PROXY protocol version 2** (HAProxy's "The PROXY protocol", `doc/proxy-protocol.txt`,
//!   §2.2, binary header) with the DGRAM transport: command PROXY, family AF_INET or
//!   AF_INET6 with protocol DGRAM (`\x12`, `\x22`), the client's address and port as source,
//!   the daemon's listen address as destination, then TLVs (§2.2.1 to §2.2.6): PP2_TYPE_SSL
//!   with the DTLS version, the suite and the client certificate's name, a custom TLV with
//!   the PSK identity, PP2_TYPE_ALPN when one was negotiated, and PP2_TYPE_CRC32C last. On
//!   the first datagram of each session or on every datagram ([`ProxyProtocol`]).
//! - **Cloudflare's Simple Proxy Protocol** (SPP), what Spectrum's UDP backends expect: a
//!   fixed 38-byte header on every datagram ([`spp`]).
//!
//! Built once per session, by the control thread when it installs the session (it knows
//! the peer, the identity, the version and the suite then), and handed to the shard with
//! the keys as an [`UpstreamPrefix`]: the shard only copies the bytes. Nothing here is on
//! the per-packet path. Datagrams from the backend back to the client carry no header and
//! are not inspected for one.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use control::{CipherSuite, PeerIdentity};
use dtls_shard::UpstreamPrefix;

/// Which header the backend gets, and on which datagrams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyProtocol {
    /// PROXY v2 on the first datagram of each session (and again on the first datagram
    /// after a new handshake of the same client). A backend that loses that datagram never
    /// learns the client: use [`ProxyProtocol::V2Every`] where loss matters.
    V2First,
    /// PROXY v2 on every datagram.
    V2Every,
    /// Cloudflare's Simple Proxy Protocol on every datagram.
    Spp,
}

/// What the backend hears about each session (serve mode).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProxyHeader {
    /// The format.
    pub protocol: ProxyProtocol,
    /// The daemon's listen address: the destination (PROXY v2) or proxy address (SPP). A
    /// wildcard listen address is sent as it is: the shard does not learn which local
    /// address each datagram arrived on. A daemon with several listen addresses names each
    /// shard's own through `ControlThread::set_shard_listen`.
    pub listen: SocketAddr,
}

/// PROXY v2 §2.2: "The binary header format starts with a constant 12 bytes block".
pub const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// Version 2 (high nibble) and command PROXY (low nibble): "the connection was
/// established on behalf of another node".
const V2_PROXY: u8 = 0x21;
/// AF_INET (0x1) with DGRAM (0x2): "UDP over IPv4 ... Address length is 2*4 + 2*2 = 12".
const V2_UDP4: u8 = 0x12;
/// AF_INET6 (0x2) with DGRAM (0x2): "UDP over IPv6 ... Address length is 2*16 + 2*2 = 36".
const V2_UDP6: u8 = 0x22;

/// PP2 TLV types (§2.2).
pub const PP2_TYPE_ALPN: u8 = 0x01;
/// §2.2.3.
pub const PP2_TYPE_CRC32C: u8 = 0x03;
/// §2.2.6.
pub const PP2_TYPE_SSL: u8 = 0x20;
/// §2.2.6: "the US-ASCII string representation of the TLS version".
pub const PP2_SUBTYPE_SSL_VERSION: u8 = 0x21;
/// §2.2.6: "the Common Name field (OID: 2.5.4.3) of the client certificate's
/// Distinguished Name"; here the first subject alternative name when the subject has no
/// common name.
pub const PP2_SUBTYPE_SSL_CN: u8 = 0x22;
/// §2.2.6: "the US-ASCII string name of the used cipher".
pub const PP2_SUBTYPE_SSL_CIPHER: u8 = 0x23;
/// The PSK identity the client proved (RFC 4279 §2). The spec has no type for it; §2.2.8
/// reserves 0xE0 to 0xEF "for application-specific data": this is the first of them.
pub const PP2_TYPE_DTLSD_PSK_IDENTITY: u8 = 0xe0;
/// `pp2_tlv_ssl.client` bits (§2.2.6).
pub const PP2_CLIENT_SSL: u8 = 0x01;
/// The client presented a certificate on this connection.
pub const PP2_CLIENT_CERT_CONN: u8 = 0x02;
/// The client presented a certificate at least once in this TLS session (also true of a
/// resumed session).
pub const PP2_CLIENT_CERT_SESS: u8 = 0x04;

/// SPP's magic number.
pub const SPP_MAGIC: u16 = 0x56ec;
/// SPP's header length.
pub const SPP_LEN: usize = 38;

/// Longest identity string put in a TLV. A longer one is left out, never cut: a cut
/// identity could name someone else.
pub const MAX_IDENTITY_LEN: usize = 255;

/// Who the client proved to be, as the header names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientIdentity {
    /// Nobody (no client authentication).
    None,
    /// A client certificate: its subject's common name, else its first subject alternative
    /// name (`None` when it has neither, or one longer than [`MAX_IDENTITY_LEN`]);
    /// `verified` when it was checked against the configured CA.
    Certificate {
        /// The name.
        name: Option<String>,
        /// Checked against trust anchors.
        verified: bool,
    },
    /// A PSK identity.
    Psk(Vec<u8>),
}

impl ClientIdentity {
    /// The identity of `peer`; `verified`: certificates were checked against trust anchors.
    pub fn of(peer: &PeerIdentity, verified: bool) -> Self {
        match peer {
            PeerIdentity::None => ClientIdentity::None,
            PeerIdentity::Psk(id) => ClientIdentity::Psk(id.clone()),
            PeerIdentity::Certificates(chain) => ClientIdentity::Certificate {
                name: chain
                    .first()
                    .and_then(|der| certificate_name(der.as_ref()))
                    .filter(|n| n.len() <= MAX_IDENTITY_LEN),
                verified,
            },
        }
    }
}

/// What a PROXY v2 header tells about one session.
#[derive(Debug, Clone)]
pub struct SessionFacts<'a> {
    /// The client's address and port (the source).
    pub client: SocketAddr,
    /// The daemon's listen address (the destination).
    pub listen: SocketAddr,
    /// The DTLS version, as OpenSSL names it ("DTLSv1.2").
    pub version: &'a str,
    /// The negotiated suite.
    pub suite: CipherSuite,
    /// Who the client proved to be.
    pub identity: &'a ClientIdentity,
    /// Whether the session resumed an earlier one (a certificate then came with that one).
    pub resumed: bool,
    /// The negotiated ALPN protocol (RFC 7301), if any.
    pub alpn: Option<&'a [u8]>,
}

/// The prefix the shard puts in front of the session's datagrams to the backend.
pub fn prefix(header: ProxyHeader, facts: &SessionFacts<'_>) -> UpstreamPrefix {
    match header.protocol {
        ProxyProtocol::V2First => UpstreamPrefix::First(proxy_v2(facts).into()),
        ProxyProtocol::V2Every => UpstreamPrefix::Every(proxy_v2(facts).into()),
        ProxyProtocol::Spp => UpstreamPrefix::Every(Box::new(spp(facts.client, facts.listen))),
    }
}

/// A PROXY protocol v2 header (§2.2) for `facts`, TLVs and checksum included.
pub fn proxy_v2(facts: &SessionFacts<'_>) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(&V2_SIGNATURE);
    out.push(V2_PROXY);
    // §2.2: "The 15th and 16th bytes is the address length in bytes"; it counts
    // everything after the 16-byte header, TLVs included. Filled in at the end.
    match (facts.client, facts.listen) {
        (SocketAddr::V4(src), SocketAddr::V4(dst)) => {
            out.push(V2_UDP4);
            out.extend_from_slice(&[0, 0]);
            out.extend_from_slice(&src.ip().octets());
            out.extend_from_slice(&dst.ip().octets());
        }
        // One family for both: an IPv4 address beside an IPv6 one goes IPv4-mapped.
        (src, dst) => {
            out.push(V2_UDP6);
            out.extend_from_slice(&[0, 0]);
            out.extend_from_slice(&v6(src.ip()).octets());
            out.extend_from_slice(&v6(dst.ip()).octets());
        }
    }
    out.extend_from_slice(&facts.client.port().to_be_bytes());
    out.extend_from_slice(&facts.listen.port().to_be_bytes());

    // §2.2.6: PP2_TYPE_SSL, whose value is `client`, `verify` and sub-TLVs.
    let (client, verify) = match facts.identity {
        ClientIdentity::Certificate { verified, .. } => {
            let conn = if facts.resumed {
                0
            } else {
                PP2_CLIENT_CERT_CONN
            };
            // "The <verify> field will be zero if the client presented a certificate and
            // it was successfully verified, and non-zero otherwise."
            (
                PP2_CLIENT_SSL | conn | PP2_CLIENT_CERT_SESS,
                u32::from(!verified),
            )
        }
        ClientIdentity::None | ClientIdentity::Psk(_) => (PP2_CLIENT_SSL, 1),
    };
    let ssl = begin_tlv(&mut out, PP2_TYPE_SSL);
    out.push(client);
    out.extend_from_slice(&verify.to_be_bytes());
    // "When this field is present, the US-ASCII string representation of the TLS version
    // is appended at the end of the field in the TLV format using the type
    // PP2_SUBTYPE_SSL_VERSION."
    tlv(&mut out, PP2_SUBTYPE_SSL_VERSION, facts.version.as_bytes());
    tlv(
        &mut out,
        PP2_SUBTYPE_SSL_CIPHER,
        cipher_name(facts.suite).as_bytes(),
    );
    if let ClientIdentity::Certificate {
        name: Some(name), ..
    } = facts.identity
    {
        tlv(&mut out, PP2_SUBTYPE_SSL_CN, name.as_bytes());
    }
    end_tlv(&mut out, ssl);
    if let ClientIdentity::Psk(id) = facts.identity
        && id.len() <= MAX_IDENTITY_LEN
    {
        tlv(&mut out, PP2_TYPE_DTLSD_PSK_IDENTITY, id);
    }
    if let Some(alpn) = facts.alpn {
        tlv(&mut out, PP2_TYPE_ALPN, alpn);
    }
    // §2.2.3: the sender MUST "initialize the checksum field to '0's", "calculate the
    // CRC32c checksum of the PROXY header as described in RFC4960, Appendix B" and "put
    // the resultant value into the checksum field". Last, so the length is final.
    let crc_at = out.len() + 3;
    tlv(&mut out, PP2_TYPE_CRC32C, &[0; 4]);
    let len = u16::try_from(out.len() - 16).unwrap_or(u16::MAX);
    out[14..16].copy_from_slice(&len.to_be_bytes());
    let crc = crc32c(&out);
    out[crc_at..crc_at + 4].copy_from_slice(&crc.to_be_bytes());
    out
}

/// A Simple Proxy Protocol header. Cloudflare's description ("Simple Proxy Protocol
/// Header", developers.cloudflare.com/spectrum/reference/simple-proxy-protocol-header/):
/// "a fixed-length, 38-octet long header ... prepended to the payload of each proxied UDP
/// datagram": a 16-bit magic "0x56EC", the 128-bit client address ("an IPv4-mapped IPv6
/// address (refer to RFC 4291) in case of an IPv4 client"), the 128-bit proxy address
/// (read "in the same way"), the 16-bit client port, the 16-bit proxy port; "Magic number,
/// addresses, and port numbers are encoded in network byte order."
pub fn spp(client: SocketAddr, proxy: SocketAddr) -> [u8; SPP_LEN] {
    let mut out = [0u8; SPP_LEN];
    out[0..2].copy_from_slice(&SPP_MAGIC.to_be_bytes());
    out[2..18].copy_from_slice(&v6(client.ip()).octets());
    out[18..34].copy_from_slice(&v6(proxy.ip()).octets());
    out[34..36].copy_from_slice(&client.port().to_be_bytes());
    out[36..38].copy_from_slice(&proxy.port().to_be_bytes());
    out
}

/// `ip` as IPv6, an IPv4 address IPv4-mapped (RFC 4291 §2.5.5.2).
fn v6(ip: IpAddr) -> Ipv6Addr {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    }
}

/// §2.2: "The first byte is the Type of the vector. The second two bytes represent the
/// length in bytes of the value (not included the Type and Length bytes)". `value` is at
/// most [`MAX_IDENTITY_LEN`] or a fixed size here, far below 2^16.
fn tlv(out: &mut Vec<u8>, kind: u8, value: &[u8]) {
    let at = begin_tlv(out, kind);
    out.extend_from_slice(value);
    end_tlv(out, at);
}

/// Starts a TLV whose value follows; returns where its length goes.
fn begin_tlv(out: &mut Vec<u8>, kind: u8) -> usize {
    out.push(kind);
    out.extend_from_slice(&[0, 0]);
    out.len() - 2
}

/// Writes the length of the TLV started at `at` (its value is everything after it).
fn end_tlv(out: &mut [u8], at: usize) {
    let len = u16::try_from(out.len() - at - 2).unwrap_or(u16::MAX);
    out[at..at + 2].copy_from_slice(&len.to_be_bytes());
}

/// CRC32c (Castagnoli), as RFC 4960 Appendix B computes it: reflected polynomial
/// 0x82F63B78, initial value and final XOR all ones. Bitwise: it runs once per session.
pub fn crc32c(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0x82f6_3b78
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// The suite's name as OpenSSL spells it (the spec's example: "ECDHE-RSA-AES128-GCM-SHA256");
/// the IANA name for the 1.3 suites, as OpenSSL does too.
pub fn cipher_name(suite: CipherSuite) -> &'static str {
    match suite {
        CipherSuite::EcdheEcdsaAes128GcmSha256 => "ECDHE-ECDSA-AES128-GCM-SHA256",
        CipherSuite::EcdheEcdsaAes256GcmSha384 => "ECDHE-ECDSA-AES256-GCM-SHA384",
        CipherSuite::EcdheRsaAes128GcmSha256 => "ECDHE-RSA-AES128-GCM-SHA256",
        CipherSuite::EcdheRsaAes256GcmSha384 => "ECDHE-RSA-AES256-GCM-SHA384",
        CipherSuite::EcdheRsaChacha20Poly1305Sha256 => "ECDHE-RSA-CHACHA20-POLY1305",
        CipherSuite::EcdheEcdsaChacha20Poly1305Sha256 => "ECDHE-ECDSA-CHACHA20-POLY1305",
        CipherSuite::PskAes128GcmSha256 => "PSK-AES128-GCM-SHA256",
        CipherSuite::PskAes256GcmSha384 => "PSK-AES256-GCM-SHA384",
        CipherSuite::EcdhePskChacha20Poly1305Sha256 => "ECDHE-PSK-CHACHA20-POLY1305",
        CipherSuite::Tls13Aes128GcmSha256 => "TLS_AES_128_GCM_SHA256",
        CipherSuite::Tls13Aes256GcmSha384 => "TLS_AES_256_GCM_SHA384",
        CipherSuite::Tls13Chacha20Poly1305Sha256 => "TLS_CHACHA20_POLY1305_SHA256",
        // Never negotiated (a signal, or a code we do not implement).
        CipherSuite::EmptyRenegotiationInfoScsv | CipherSuite::Unknown(_) => "UNKNOWN",
    }
}

/// A certificate's name for the backend: its subject's first common name, else its first
/// subject alternative name (a DNS name, an IP address, a URI or an e-mail address, as
/// text). `None` for an unparsable certificate or one with neither.
pub fn certificate_name(der: &[u8]) -> Option<String> {
    use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};
    let (_, cert) = X509Certificate::from_der(der).ok()?;
    if let Some(cn) = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
    {
        return Some(cn.to_owned());
    }
    let san = cert.subject_alternative_name().ok()??;
    san.value.general_names.iter().find_map(|name| match name {
        GeneralName::DNSName(d) => Some((*d).to_owned()),
        GeneralName::RFC822Name(e) => Some((*e).to_owned()),
        GeneralName::URI(u) => Some((*u).to_owned()),
        GeneralName::IPAddress(ip) => match ip.len() {
            4 => <[u8; 4]>::try_from(*ip)
                .ok()
                .map(|a| IpAddr::from(a).to_string()),
            16 => <[u8; 16]>::try_from(*ip)
                .ok()
                .map(|a| IpAddr::from(a).to_string()),
            _ => None,
        },
        _ => None,
    })
}

#[cfg(test)]
#[path = "upstream_header_tests.rs"]
mod tests;
