//! The encoders against the field layouts of their specifications, byte by byte.

use super::*;
use dtls_crypto::pki_types::CertificateDer;
use rcgen::{CertificateParams, DistinguishedName, KeyPair, SanType};

fn facts<'a>(
    client: &str,
    listen: &str,
    identity: &'a ClientIdentity,
    alpn: Option<&'a [u8]>,
) -> SessionFacts<'a> {
    SessionFacts {
        client: client.parse().expect("client address"),
        listen: listen.parse().expect("listen address"),
        version: "DTLSv1.2",
        suite: CipherSuite::EcdheEcdsaAes128GcmSha256,
        identity,
        resumed: false,
        alpn,
    }
}

/// The header with its CRC32c field zeroed, and that field's value.
fn split_crc(header: &[u8]) -> (Vec<u8>, u32) {
    let at = header.len() - 4;
    assert_eq!(
        header[at - 3..at],
        [PP2_TYPE_CRC32C, 0, 4],
        "CRC32c TLV last"
    );
    let mut zeroed = header.to_vec();
    zeroed[at..].fill(0);
    let crc = u32::from_be_bytes(header[at..].try_into().expect("4 bytes"));
    (zeroed, crc)
}

#[test]
fn crc32c_matches_the_published_check_values() {
    // The CRC catalogue's check value of "123456789" for CRC-32C (iSCSI).
    assert_eq!(crc32c(b"123456789"), 0xe306_9283);
    // RFC 3720 §B.4: 32 bytes of zeros give "aa 36 91 8a" (the CRC, least significant
    // byte first).
    assert_eq!(crc32c(&[0; 32]), 0x8a91_36aa);
    assert_eq!(crc32c(&[0xff; 32]), 0x62a8_ab43);
}

#[test]
fn v2_ipv4_with_a_psk_identity() {
    let id = ClientIdentity::Psk(b"client1".to_vec());
    let header = proxy_v2(&facts("127.0.0.2:5000", "127.0.0.1:4433", &id, None));
    let mut want = Vec::new();
    want.extend_from_slice(b"\x0d\x0a\x0d\x0a\x00\x0d\x0a\x51\x55\x49\x54\x0a");
    want.push(0x21); // version 2, PROXY
    want.push(0x12); // AF_INET, DGRAM
    want.extend_from_slice(&[0x00, 0x50]); // 80 bytes follow
    want.extend_from_slice(&[127, 0, 0, 2, 127, 0, 0, 1]);
    want.extend_from_slice(&[0x13, 0x88, 0x11, 0x51]); // 5000, 4433
    // PP2_TYPE_SSL: client = SSL only, verify = 1 (no certificate), two sub-TLVs.
    want.extend_from_slice(&[0x20, 0x00, 48, 0x01, 0, 0, 0, 1]);
    want.extend_from_slice(&[0x21, 0x00, 8]);
    want.extend_from_slice(b"DTLSv1.2");
    want.extend_from_slice(&[0x23, 0x00, 29]);
    want.extend_from_slice(b"ECDHE-ECDSA-AES128-GCM-SHA256");
    want.extend_from_slice(&[0xe0, 0x00, 7]);
    want.extend_from_slice(b"client1");
    want.extend_from_slice(&[0x03, 0x00, 4, 0, 0, 0, 0]);
    assert_eq!(want.len(), 16 + 80);
    let (zeroed, crc) = split_crc(&header);
    assert_eq!(zeroed, want);
    // §2.2.3: the receiver zeroes the field and computes the CRC of the whole header.
    assert_eq!(crc, crc32c(&want));
}

#[test]
fn v2_ipv6_with_a_verified_certificate_of_a_resumed_session_and_alpn() {
    let id = ClientIdentity::Certificate {
        name: Some("client.test".into()),
        verified: true,
    };
    let mut f = facts("[2001:db8::1]:6000", "[::]:4433", &id, Some(b"coap"));
    f.resumed = true;
    f.suite = CipherSuite::PskAes128GcmSha256;
    let header = proxy_v2(&f);
    let (zeroed, crc) = split_crc(&header);
    assert_eq!(crc, crc32c(&zeroed));
    assert_eq!(&zeroed[12..14], &[0x21, 0x22], "PROXY over UDP/IPv6");
    let len = usize::from(u16::from_be_bytes([zeroed[14], zeroed[15]]));
    assert_eq!(
        16 + len,
        zeroed.len(),
        "the length counts everything after byte 16"
    );
    let mut addrs = Vec::new();
    addrs.extend_from_slice(&"2001:db8::1".parse::<Ipv6Addr>().expect("literal").octets());
    addrs.extend_from_slice(&[0; 16]);
    addrs.extend_from_slice(&[0x17, 0x70, 0x11, 0x51]); // 6000, 4433
    assert_eq!(&zeroed[16..52], &addrs[..]);
    // SSL: certificate in the session but not on this (resumed) connection; verified.
    let ssl_len = 5 + (3 + 8) + (3 + 21) + (3 + 11);
    assert_eq!(&zeroed[52..55], &[0x20, 0, ssl_len as u8]);
    assert_eq!(&zeroed[55..60], &[0x05, 0, 0, 0, 0]);
    let subs = &zeroed[60..55 + ssl_len];
    assert_eq!(&subs[..11], b"\x21\x00\x08DTLSv1.2");
    assert_eq!(&subs[11..35], b"\x23\x00\x15PSK-AES128-GCM-SHA256");
    assert_eq!(&subs[35..], b"\x22\x00\x0bclient.test");
    let rest = &zeroed[55 + ssl_len..];
    assert_eq!(rest, b"\x01\x00\x04coap\x03\x00\x04\x00\x00\x00\x00");
}

#[test]
fn v2_unverified_certificate_and_mixed_families() {
    let id = ClientIdentity::Certificate {
        name: None,
        verified: false,
    };
    // An IPv4 client beside an IPv6 listen address: both IPv6, the client IPv4-mapped.
    let header = proxy_v2(&facts("192.0.2.7:1", "[::1]:2", &id, None));
    assert_eq!(header[13], 0x22);
    assert_eq!(
        &header[16..32],
        &"::ffff:192.0.2.7"
            .parse::<Ipv6Addr>()
            .expect("literal")
            .octets()
    );
    // Certificate on this connection and in the session, verify non-zero, no CN sub-TLV.
    let ssl = &header[52..];
    assert_eq!(ssl[0], PP2_TYPE_SSL);
    assert_eq!(&ssl[3..8], &[0x07, 0, 0, 0, 1]);
    let ssl_len = usize::from(u16::from_be_bytes([ssl[1], ssl[2]]));
    assert_eq!(ssl_len, 5 + 11 + 32);
    // No identity of any kind: nothing but SSL and the checksum.
    let none = proxy_v2(&facts(
        "192.0.2.7:1",
        "192.0.2.8:2",
        &ClientIdentity::None,
        None,
    ));
    assert_eq!(none.len(), 16 + 12 + 3 + 48 + 7);
}

#[test]
fn an_identity_too_long_for_a_tlv_is_left_out_not_cut() {
    let id = ClientIdentity::Psk(vec![b'a'; MAX_IDENTITY_LEN + 1]);
    let header = proxy_v2(&facts("127.0.0.2:5000", "127.0.0.1:4433", &id, None));
    assert!(!header.windows(3).any(|w| w == [0xe0, 0x01, 0x00]));
    assert_eq!(header.len(), 16 + 12 + 3 + 48 + 7);
    let fits = ClientIdentity::Psk(vec![b'a'; MAX_IDENTITY_LEN]);
    let header = proxy_v2(&facts("127.0.0.2:5000", "127.0.0.1:4433", &fits, None));
    assert_eq!(header.len(), 16 + 12 + 3 + 48 + 3 + MAX_IDENTITY_LEN + 7);
    assert!(header.len() <= dtls_shard::MAX_PREFIX_LEN);
}

#[test]
fn spp_layout_for_ipv4_and_ipv6() {
    let h = spp(
        "203.0.113.9:40000".parse().expect("literal"),
        "198.51.100.1:4433".parse().expect("literal"),
    );
    let mut want = vec![0x56, 0xec];
    want.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 203, 0, 113, 9]);
    want.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 198, 51, 100, 1]);
    want.extend_from_slice(&[0x9c, 0x40, 0x11, 0x51]);
    assert_eq!(h.to_vec(), want);
    let h = spp(
        "[2001:db8::9]:1".parse().expect("literal"),
        "[2001:db8::1]:65535".parse().expect("literal"),
    );
    assert_eq!(h.len(), SPP_LEN);
    assert_eq!(
        &h[2..18],
        &"2001:db8::9".parse::<Ipv6Addr>().expect("literal").octets()
    );
    assert_eq!(
        &h[18..34],
        &"2001:db8::1".parse::<Ipv6Addr>().expect("literal").octets()
    );
    assert_eq!(&h[34..], &[0, 1, 0xff, 0xff]);
}

#[test]
fn prefixes_by_protocol() {
    let id = ClientIdentity::None;
    let f = facts("127.0.0.2:5000", "127.0.0.1:4433", &id, None);
    let header = |protocol| ProxyHeader {
        protocol,
        listen: f.listen,
    };
    let v2 = proxy_v2(&f);
    assert_eq!(
        prefix(header(ProxyProtocol::V2First), &f),
        UpstreamPrefix::First(v2.clone().into())
    );
    assert_eq!(
        prefix(header(ProxyProtocol::V2Every), &f),
        UpstreamPrefix::Every(v2.into())
    );
    assert_eq!(
        prefix(header(ProxyProtocol::Spp), &f).bytes(),
        &spp(f.client, f.listen)[..]
    );
}

fn certificate(cn: Option<&str>, sans: Vec<SanType>) -> Vec<u8> {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    if let Some(cn) = cn {
        dn.push(rcgen::DnType::CommonName, cn);
    }
    dn.push(rcgen::DnType::OrganizationName, "dtlsd tests");
    params.distinguished_name = dn;
    params.subject_alt_names = sans;
    params
        .self_signed(&key)
        .expect("certificate")
        .der()
        .to_vec()
}

#[test]
fn certificate_names_are_the_common_name_else_the_first_san() {
    let dns = |d: &str| SanType::DnsName(d.try_into().expect("dns name"));
    let both = certificate(Some("client.test"), vec![dns("other.test")]);
    assert_eq!(certificate_name(&both).as_deref(), Some("client.test"));
    let san_only = certificate(None, vec![dns("first.test"), dns("second.test")]);
    assert_eq!(certificate_name(&san_only).as_deref(), Some("first.test"));
    let ip = certificate(None, vec![SanType::IpAddress([10, 0, 0, 1].into())]);
    assert_eq!(certificate_name(&ip).as_deref(), Some("10.0.0.1"));
    assert_eq!(certificate_name(&certificate(None, Vec::new())), None);
    assert_eq!(certificate_name(b"not a certificate"), None);
    // Through the identity: a name too long for a TLV is dropped.
    let long = format!("{}.test", "a".repeat(MAX_IDENTITY_LEN));
    let chain = vec![CertificateDer::from(certificate(Some(&long), Vec::new()))];
    assert_eq!(
        ClientIdentity::of(&PeerIdentity::Certificates(chain), true),
        ClientIdentity::Certificate {
            name: None,
            verified: true
        }
    );
}
