//! Message parsers: round trips, truncation, lying lengths, and the TESTING.md cases.

use super::samples::{all_messages, client_hello};
use crate::*;

fn encode(m: &HandshakeMessage) -> Vec<u8> {
    let mut out = Vec::new();
    m.emit(&mut out).expect("sample messages are encodable");
    out
}

#[test]
fn every_message_round_trips() {
    for (msg, kx) in all_messages() {
        let bytes = encode(&msg);
        let parsed =
            HandshakeMessage::parse(msg.msg_type(), &bytes, kx).expect("own encoding parses");
        assert_eq!(parsed, msg);
        assert_eq!(encode(&parsed), bytes, "re-encoding is byte-identical");
    }
}

#[test]
fn every_truncation_fails_or_changes_the_message() {
    for (msg, kx) in all_messages() {
        let bytes = encode(&msg);
        let is_hello = matches!(
            msg,
            HandshakeMessage::ClientHello(_) | HandshakeMessage::ServerHello(_)
        );
        for cut in 0..bytes.len() {
            match HandshakeMessage::parse(msg.msg_type(), &bytes[..cut], kx) {
                Err(e) => assert_eq!(
                    e.alert(),
                    AlertDescription::DecodeError,
                    "{msg:?} cut {cut}"
                ),
                // Hellos may legally end before the extension block (RFC 5246 §7.4.1.2).
                Ok(other) => {
                    assert!(
                        is_hello,
                        "{:?} parsed from a prefix of {cut} bytes",
                        msg.msg_type()
                    );
                    assert_ne!(other, msg);
                }
            }
        }
    }
}

#[test]
fn every_trailing_byte_is_rejected() {
    for (msg, kx) in all_messages() {
        let mut bytes = encode(&msg);
        bytes.push(0);
        let err = HandshakeMessage::parse(msg.msg_type(), &bytes, kx)
            .expect_err("a trailing byte must not be ignored");
        assert_eq!(
            err.alert(),
            AlertDescription::DecodeError,
            "{:?}",
            msg.msg_type()
        );
    }
}

/// Offset of the cookie length byte in a ClientHello body: version, random, session_id.
fn cookie_len_offset(ch: &ClientHello) -> usize {
    2 + 32 + 1 + ch.session_id.len()
}

#[test]
fn client_hello_cookie_lengths_0_and_255_and_lying() {
    for len in [0usize, 1, 32, 255] {
        let mut ch = client_hello();
        ch.cookie = vec![0x5a; len];
        let mut body = Vec::new();
        ch.emit(&mut body).expect("cookie up to 255 encodes");
        assert_eq!(ClientHello::parse(&body).expect("valid").cookie.len(), len);
    }
    let mut ch = client_hello();
    ch.cookie = vec![0; 256];
    assert_eq!(
        ch.emit(&mut Vec::new()),
        Err(WireError::TooLong { what: "cookie" })
    );
    // A cookie length longer than the rest of the message.
    let mut ch = client_hello();
    ch.cookie = vec![];
    ch.cipher_suites = vec![CipherSuite::PskAes128GcmSha256];
    ch.extensions = Extensions::default();
    let mut body = Vec::new();
    ch.emit(&mut body).expect("valid");
    let at = cookie_len_offset(&ch);
    body[at] = 255;
    let err = ClientHello::parse(&body).expect_err("cookie longer than message");
    assert_eq!(err.alert(), AlertDescription::DecodeError);
    assert!(matches!(err, WireError::Truncated { .. }));
}

#[test]
fn client_hello_field_rules() {
    let base = client_hello();
    let mut body = Vec::new();
    base.emit(&mut body).expect("valid");

    // session_id longer than 32.
    let mut ch = base.clone();
    ch.session_id = vec![0; 33];
    assert!(ch.emit(&mut Vec::new()).is_err());
    let mut forged = body.clone();
    forged[34] = 33;
    forged.insert(35, 0);
    assert_eq!(
        ClientHello::parse(&forged),
        Err(WireError::BadLength { what: "session_id" })
    );

    // Odd cipher_suites length; empty cipher_suites.
    let mut ch = base.clone();
    ch.extensions = Extensions::default();
    ch.cipher_suites = vec![CipherSuite::PskAes128GcmSha256];
    let mut b = Vec::new();
    ch.emit(&mut b).expect("valid");
    let suites_at = cookie_len_offset(&ch) + 1 + ch.cookie.len();
    b[suites_at + 1] = 1; // length 1, odd
    assert!(ClientHello::parse(&b).is_err());
    b[suites_at + 1] = 0; // length 0
    b.drain(suites_at + 2..suites_at + 4);
    assert_eq!(
        ClientHello::parse(&b).map(|_| ()),
        Err(WireError::BadLength {
            what: "cipher_suites"
        })
    );

    // Compression methods without null: illegal_parameter (RFC 5246 §7.4.1.2).
    let mut ch = base.clone();
    ch.compression_methods = vec![1];
    let mut b = Vec::new();
    ch.emit(&mut b).expect("encodable");
    assert_eq!(
        ClientHello::parse(&b).map_err(|e| e.alert()),
        Err(AlertDescription::IllegalParameter)
    );

    // No extension block at all is valid.
    let mut ch = base;
    ch.extensions = Extensions::default();
    let mut b = Vec::new();
    ch.emit(&mut b).expect("valid");
    assert_eq!(ClientHello::parse(&b), Ok(ch));
}

#[test]
fn hello_verify_request_cookie_bounds() {
    let hvr = HelloVerifyRequest::parse(&[0xfe, 0xff, 0]).expect("empty cookie");
    assert!(hvr.cookie.is_empty());
    assert_eq!(hvr.server_version, ProtocolVersion::Dtls1_0);
    let mut b = vec![0xfe, 0xff, 255];
    b.extend_from_slice(&[1; 254]);
    assert!(matches!(
        HelloVerifyRequest::parse(&b),
        Err(WireError::Truncated { .. })
    ));
    b.push(1);
    assert_eq!(
        HelloVerifyRequest::parse(&b).expect("255").cookie.len(),
        255
    );
}

#[test]
fn certificate_lying_lengths() {
    // Outer length says 10, only 5 follow.
    assert!(Certificate::parse(&[0, 0, 10, 0, 0, 2, 1, 2]).is_err());
    // Inner length exceeds outer list.
    assert!(Certificate::parse(&[0, 0, 5, 0, 0, 9, 1, 2]).is_err());
    // Empty certificate entry: ASN.1Cert<1..2^24-1>.
    assert_eq!(
        Certificate::parse(&[0, 0, 3, 0, 0, 0]),
        Err(WireError::BadLength { what: "ASN.1Cert" })
    );
    // Empty chain is valid (client without certificate).
    assert_eq!(Certificate::parse(&[0, 0, 0]), Ok(Certificate::default()));
    // Length 2^24-1 claimed with nothing behind it: an error, no allocation of that size.
    assert!(matches!(
        Certificate::parse(&[0xff, 0xff, 0xff]),
        Err(WireError::Truncated { .. })
    ));
}

#[test]
fn key_exchange_rules() {
    // Explicit curve (curve_type 1) is refused with illegal_parameter.
    let ske = [1, 0, 23, 1, 4, 4, 3, 0, 0];
    assert_eq!(
        ServerKeyExchange::parse(&ske, KeyExchange::EcdheEcdsa).map_err(|e| e.alert()),
        Err(AlertDescription::IllegalParameter)
    );
    // Empty point.
    assert_eq!(
        ClientKeyExchange::parse(&[0], KeyExchange::EcdheEcdsa),
        Err(WireError::BadLength { what: "ECPoint" })
    );
    // The same bytes mean different things per key exchange: PSK identity "\x00\x01A".
    let psk = ClientKeyExchange::parse(&[0, 1, b'A'], KeyExchange::Psk).expect("psk identity");
    assert_eq!(
        psk,
        ClientKeyExchange::Psk {
            identity: b"A".to_vec()
        }
    );
    assert!(ClientKeyExchange::parse(&[0, 1, b'A'], KeyExchange::EcdheRsa).is_err());
    // Signed data layout (RFC 8422 §5.4).
    let params = EcdheParams {
        group: NamedGroup::Secp256r1,
        public: vec![4; 65],
    };
    let signed = params
        .signed_message(&[1; 32], &[2; 32])
        .expect("encodable");
    assert_eq!(signed.len(), 64 + 4 + 65);
    assert_eq!(&signed[64..68], &[3, 0, 23, 65]);
    // Parsing SKE/CKE needs the key exchange.
    for t in [HandshakeType::ServerKeyExchange, HandshakeType::Unknown(99)] {
        assert_eq!(
            HandshakeMessage::parse(t, &[], None).map_err(|e| e.alert()),
            Err(AlertDescription::UnexpectedMessage)
        );
    }
}

#[test]
fn certificate_request_rules() {
    // Empty certificate_types.
    assert!(CertificateRequest::parse(&[0, 0, 2, 4, 3, 0, 0]).is_err());
    // Empty signature algorithms.
    assert!(CertificateRequest::parse(&[1, 64, 0, 0, 0, 0]).is_err());
    // Minimal valid.
    let cr = CertificateRequest::parse(&[1, 64, 0, 2, 4, 3, 0, 0]).expect("valid");
    assert_eq!(cr.certificate_types, vec![ClientCertificateType::EcdsaSign]);
    assert_eq!(
        cr.signature_schemes,
        vec![SignatureScheme::EcdsaSecp256r1Sha256]
    );
    // Empty DistinguishedName.
    assert!(CertificateRequest::parse(&[1, 64, 0, 2, 4, 3, 0, 2, 0, 0]).is_err());
}

#[test]
fn fixed_messages() {
    assert!(Finished::parse(&[0; 11]).is_err());
    assert!(Finished::parse(&[0; 13]).is_err());
    assert_eq!(
        Finished::parse(&[1; 12]).expect("12 bytes").verify_data,
        [1; 12]
    );
    assert!(ServerHelloDone::parse(&[0]).is_err());
    assert!(HelloRequest::parse(&[0]).is_err());
    assert_eq!(ChangeCipherSpec::parse(&[1]), Ok(ChangeCipherSpec));
    assert_eq!(
        ChangeCipherSpec::parse(&[2]).map_err(|e| e.alert()),
        Err(AlertDescription::IllegalParameter)
    );
    assert!(ChangeCipherSpec::parse(&[1, 1]).is_err());
    assert!(ChangeCipherSpec::parse(&[]).is_err());
    let mut out = Vec::new();
    ChangeCipherSpec.emit(&mut out);
    assert_eq!(out, [1]);
    assert!(NewSessionTicket::parse(&[0, 0, 0, 1, 0, 5, 1]).is_err());
}

#[test]
fn encode_message_writes_unfragmented_header() {
    let mut out = Vec::new();
    encode_message(HandshakeType::Finished, 5, &[9; 12], &mut out).expect("fits");
    assert_eq!(&out[..12], &[20, 0, 0, 12, 0, 5, 0, 0, 0, 0, 0, 12]);
    assert_eq!(&out[12..], &[9; 12]);
}

#[test]
fn heartbeat_payload_length_beyond_record_is_discarded() {
    let hb = HeartbeatMessage {
        kind: HeartbeatMessageType::Request,
        payload: b"ping".to_vec(),
    };
    let mut rec = Vec::new();
    hb.emit(&[0xee; 16], &mut rec).expect("valid");
    assert_eq!(rec.len(), 3 + 4 + 16);
    let parsed = HeartbeatMessage::parse(&rec).expect("valid");
    assert_eq!(parsed, hb);
    assert_eq!(
        parsed.response().expect("request has a response").payload,
        b"ping"
    );
    // Heartbleed: payload_length claims more than the record holds.
    let mut bleed = rec.clone();
    bleed[1..3].copy_from_slice(&0x4000u16.to_be_bytes());
    assert!(HeartbeatMessage::parse(&bleed).is_err());
    // Payload fits but leaves less than 16 bytes of padding.
    let mut short_pad = rec.clone();
    short_pad[1..3].copy_from_slice(&5u16.to_be_bytes());
    assert!(HeartbeatMessage::parse(&short_pad).is_err());
    // Padding shorter than 16 on emit; unknown type; empty input.
    assert!(hb.emit(&[0; 15], &mut Vec::new()).is_err());
    let mut unknown = rec.clone();
    unknown[0] = 3;
    assert!(HeartbeatMessage::parse(&unknown).is_err());
    assert!(HeartbeatMessage::parse(&[]).is_err());
    assert!(HeartbeatMessage::parse(&[1, 0]).is_err());
    // Over 2^14 in total.
    let big = vec![1u8; MAX_HEARTBEAT_LEN + 1];
    assert!(HeartbeatMessage::parse(&big).is_err());
}

#[test]
fn fragmenter_covers_the_body() {
    let body: Vec<u8> = (0..1000u32).map(|i| i as u8).collect();
    let mut out = Vec::new();
    let ranges =
        fragment_into_vec(HandshakeType::Certificate, 3, &body, 300, &mut out).expect("valid");
    assert_eq!(ranges.len(), 4);
    let mut rebuilt = Vec::new();
    for r in &ranges {
        let frag = &out[r.clone()];
        let h = HandshakeHeader::new_checked(frag).expect("complete fragment");
        let repr = HandshakeRepr::parse(&h).expect("valid header");
        assert_eq!(repr.length, 1000);
        assert_eq!(repr.message_seq, 3);
        assert_eq!(repr.fragment_offset as usize, rebuilt.len());
        rebuilt.extend_from_slice(h.fragment());
    }
    assert_eq!(rebuilt, body);

    // Empty body: exactly one empty fragment.
    let frags: Vec<_> = Fragmenter::new(HandshakeType::ServerHelloDone, 4, &[])
        .expect("valid")
        .fragments(100)
        .collect();
    assert_eq!(frags.len(), 1);
    assert_eq!(frags[0].header.fragment_length, 0);

    // Zero room makes no progress instead of looping.
    let mut f = Fragmenter::new(HandshakeType::Finished, 5, &[1; 12]).expect("valid");
    assert!(f.next_fragment(0).is_none());
    let first = f.next_fragment(5).expect("room for 5");
    let mut small = [0u8; 16];
    assert_eq!(
        first.write_to_slice(&mut small),
        Err(WireError::BufferTooSmall {
            needed: 17,
            available: 16
        })
    );
    let mut buf = [0u8; 17];
    assert_eq!(first.write_to_slice(&mut buf), Ok(17));
    assert_eq!(&buf[..12], &[20, 0, 0, 12, 0, 5, 0, 0, 0, 0, 0, 5]);
    assert_eq!(f.remaining(), 7);
    assert!(fragment_into_vec(HandshakeType::Finished, 0, &[1], 0, &mut Vec::new()).is_err());
}
