//! ClientHellos captured from real peers (OpenSSL 3.0 `s_client -dtls1_2` and GnuTLS 3.7
//! `gnutls-cli --udp`) as whole first datagrams: one 13-byte DTLS record header, then the
//! handshake message.

use crate::*;

/// `openssl s_client -dtls1_2 -servername example.com -alpn h2,http/1.1
/// -use_srtp SRTP_AEAD_AES_128_GCM:SRTP_AES128_CM_SHA1_80`
const OPENSSL_CLIENT_HELLO: &[&str] = &[
    "16feff000000000000000000f1010000e500000000000000e5fefdc01a0fcdd6fe6f394fa4122d5b0c3e5f5105901b55",
    "789a16838a3228a2e697c800000038c02cc030009fcca9cca8ccaac02bc02f009ec024c028006bc023c0270067c00ac0",
    "140039c009c0130033009d009c003d003c0035002f00ff0100008300000010000e00000b6578616d706c652e636f6d00",
    "0b000403000102000a000c000a001d0017001e00190018002300000010000e000c02683208687474702f312e31000e00",
    "07000400070001000016000000170000000d002a0028040305030603080708080809080a080b08040805080604010501",
    "0601030303010302040205020602",
];

/// `gnutls-cli --udp --insecure 127.0.0.1`
const GNUTLS_CLIENT_HELLO: &[&str] = &[
    "16feff000000000000000000ce010000c200000000000000c2fefd40ba48992f7d30cd87e84d4251fc7961aa14565a4a",
    "59396449914036a8a0e90d00000032c02ccca9c0adc00ac02bc0acc009c030cca8c014c02fc013009dc09d0035009cc0",
    "9c002f009fccaac09f0039009ec09e003301000066000500050100000000000a00160014001700180019001d001e0100",
    "0101010201030104000b00020100000d00220020040108090804040308070501080a0805050308080601080b08060603",
    "02010203001600000017000000230000ff01000100001c00024000",
];

fn unhex(parts: &[&str]) -> Vec<u8> {
    let s: String = parts.concat();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("test vector is hex"))
        .collect()
}

fn client_hello_of(datagram: &[u8]) -> (HandshakeRepr, ClientHello) {
    // Record header: content type 22, version, epoch 0, sequence, length.
    assert_eq!(datagram[0], 22);
    let record_len = usize::from(u16::from_be_bytes([datagram[11], datagram[12]]));
    assert_eq!(datagram.len(), 13 + record_len);
    let mut frags = HandshakeFragments::new(&datagram[13..]);
    let (repr, body) = frags.next().expect("one fragment").expect("valid fragment");
    assert!(frags.next().is_none());
    assert!(repr.is_unfragmented());
    assert_eq!(repr.msg_type, HandshakeType::ClientHello);
    let ch = ClientHello::parse(body).expect("a real ClientHello parses");
    // Whatever we parsed re-encodes to something that parses identically.
    let mut out = Vec::new();
    ch.emit(&mut out).expect("re-encodable");
    assert_eq!(ClientHello::parse(&out).as_ref(), Ok(&ch));
    (repr, ch)
}

#[test]
fn openssl_client_hello_parses() {
    let (repr, ch) = client_hello_of(&unhex(OPENSSL_CLIENT_HELLO));
    assert_eq!(repr.message_seq, 0);
    assert_eq!(ch.client_version, ProtocolVersion::Dtls1_2);
    assert!(ch.cookie.is_empty(), "first ClientHello has no cookie");
    assert!(
        ch.cipher_suites
            .contains(&CipherSuite::EcdheEcdsaAes128GcmSha256)
    );
    assert!(
        ch.cipher_suites
            .contains(&CipherSuite::EmptyRenegotiationInfoScsv)
    );
    let ext = &ch.extensions;
    assert_eq!(
        ext.server_name,
        Some(ServerName::HostName("example.com".into()))
    );
    assert_eq!(ext.alpn, Some(vec![b"h2".to_vec(), b"http/1.1".to_vec()]));
    let srtp = ext.use_srtp.as_ref().expect("use_srtp offered");
    assert_eq!(
        srtp.profiles,
        [
            SrtpProtectionProfile::AeadAes128Gcm,
            SrtpProtectionProfile::Aes128CmHmacSha1_80
        ]
    );
    assert!(ext.extended_master_secret);
    let groups = ext.supported_groups.as_ref().expect("groups offered");
    assert!(groups.contains(&NamedGroup::X25519));
    assert!(groups.contains(&NamedGroup::Secp256r1));
    let schemes = ext.signature_algorithms.as_ref().expect("schemes offered");
    assert!(schemes.contains(&SignatureScheme::EcdsaSecp256r1Sha256));
    assert!(schemes.contains(&SignatureScheme::RsaPssRsaeSha256));
}

#[test]
fn gnutls_client_hello_parses() {
    let (repr, ch) = client_hello_of(&unhex(GNUTLS_CLIENT_HELLO));
    assert_eq!(repr.message_seq, 0);
    assert!(ch.client_version.offers_dtls12());
    assert!(ch.cookie.is_empty());
    assert!(ch.cipher_suites.iter().any(|s| s.params().is_some()));
    let ext = &ch.extensions;
    assert!(ext.extended_master_secret);
    assert!(ext.supported_groups.is_some());
    assert!(ext.signature_algorithms.is_some());
}
