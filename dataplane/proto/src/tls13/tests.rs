//! Round trips and rejections of the DTLS 1.3 codecs.

use super::extensions::*;
use super::messages::*;
use crate::codes::{ExtensionType, HandshakeType, NamedGroup};
use crate::extensions::{Extensions, RawExtension};
use crate::suites::ProtocolVersion;
use crate::{SignatureScheme, WireError};

#[test]
fn supported_versions_both_forms() {
    let mut out = Vec::new();
    emit_supported_versions_client(
        &[ProtocolVersion::Dtls1_3, ProtocolVersion::Dtls1_2],
        &mut out,
    )
    .expect("fits");
    assert_eq!(out, [4, 0xfe, 0xfc, 0xfe, 0xfd]);
    assert_eq!(
        parse_supported_versions_client(&out),
        Ok(vec![ProtocolVersion::Dtls1_3, ProtocolVersion::Dtls1_2])
    );
    // versions<2..254>: an empty list or an odd length is illegal.
    assert!(parse_supported_versions_client(&[0]).is_err());
    assert!(parse_supported_versions_client(&[3, 0xfe, 0xfc, 0]).is_err());
    assert!(emit_supported_versions_client(&[], &mut Vec::new()).is_err());
    let mut out = Vec::new();
    emit_supported_versions_server(ProtocolVersion::Dtls1_3, &mut out);
    assert_eq!(
        parse_supported_versions_server(&out),
        Ok(ProtocolVersion::Dtls1_3)
    );
    assert!(parse_supported_versions_server(&[0xfe, 0xfc, 0]).is_err());
}

#[test]
fn key_share_client_server_and_retry() {
    let entries = vec![
        KeyShareEntry {
            group: NamedGroup::X25519Mlkem768,
            key_exchange: vec![7; 1216],
        },
        KeyShareEntry {
            group: NamedGroup::X25519,
            key_exchange: vec![9; 32],
        },
    ];
    let mut out = Vec::new();
    emit_key_share_client(&entries, &mut out).expect("fits");
    assert_eq!(out.len(), 2 + (4 + 1216) + (4 + 32));
    assert_eq!(parse_key_share_client(&out), Ok(entries.clone()));
    // The same group twice is illegal (RFC 8446 §4.2.8).
    let mut twice = Vec::new();
    emit_key_share_client(&[entries[1].clone(), entries[1].clone()], &mut twice).expect("fits");
    assert!(matches!(
        parse_key_share_client(&twice),
        Err(WireError::IllegalValue { .. })
    ));
    // An empty client_shares list is allowed (the client waits for a HelloRetryRequest).
    assert_eq!(parse_key_share_client(&[0, 0]), Ok(vec![]));
    let mut one = Vec::new();
    emit_key_share_server(&entries[1], &mut one).expect("fits");
    assert_eq!(parse_key_share_server(&one), Ok(entries[1].clone()));
    assert!(
        parse_key_share_server(&[0, 0x1d, 0, 0]).is_err(),
        "empty key_exchange"
    );
    let mut retry = Vec::new();
    emit_key_share_retry(NamedGroup::Secp256r1, &mut retry);
    assert_eq!(parse_key_share_retry(&retry), Ok(NamedGroup::Secp256r1));
    assert!(parse_key_share_retry(&[0]).is_err());
}

#[test]
fn psk_extensions_and_the_last_extension_rule() {
    let offered = OfferedPsks {
        identities: vec![PskIdentity {
            identity: b"ticket".to_vec(),
            obfuscated_ticket_age: 0x0102_0304,
        }],
        binders: vec![vec![0xbb; 32]],
    };
    let mut out = Vec::new();
    offered.emit(&mut out).expect("fits");
    assert_eq!(OfferedPsks::parse(&out), Ok(offered.clone()));
    assert_eq!(offered.binders_len(), 2 + 1 + 32);
    // The binders are the tail of the body.
    let mut binders = Vec::new();
    offered.emit_binders(&mut binders).expect("fits");
    assert!(out.ends_with(&binders));
    // Mismatched counts and short binders are refused.
    let mut bad = offered.clone();
    bad.binders.push(vec![0; 32]);
    assert!(bad.emit(&mut Vec::new()).is_err());
    let short = OfferedPsks {
        binders: vec![vec![0; 31]],
        ..offered.clone()
    };
    let mut body = Vec::new();
    short
        .emit(&mut body)
        .expect("the writer does not check binder sizes");
    assert!(OfferedPsks::parse(&body).is_err());
    assert!(OfferedPsks::parse(&[0, 0, 0, 0]).is_err(), "no identity");

    let mut modes = Vec::new();
    emit_psk_key_exchange_modes(&[PskKeyExchangeMode::PskDheKe], &mut modes).expect("fits");
    assert_eq!(modes, [1, 1]);
    assert_eq!(
        parse_psk_key_exchange_modes(&[2, 1, 7]),
        Ok(vec![
            PskKeyExchangeMode::PskDheKe,
            PskKeyExchangeMode::Unknown(7)
        ])
    );
    assert!(parse_psk_key_exchange_modes(&[0]).is_err());
    let mut sel = Vec::new();
    emit_pre_shared_key_server(0, &mut sel);
    assert_eq!(parse_pre_shared_key_server(&sel), Ok(0));

    let ext = |t: ExtensionType, body: &[u8]| {
        let mut v = t.to_u16().to_be_bytes().to_vec();
        v.extend_from_slice(&(body.len() as u16).to_be_bytes());
        v.extend_from_slice(body);
        v
    };
    let mut last = ext(ExtensionType::SupportedVersions, &[2, 0xfe, 0xfc]);
    last.extend(ext(ExtensionType::PreSharedKey, &out));
    assert_eq!(pre_shared_key_is_last(&last), Ok(true));
    let mut not_last = ext(ExtensionType::PreSharedKey, &out);
    not_last.extend(ext(ExtensionType::SupportedVersions, &[2, 0xfe, 0xfc]));
    assert_eq!(pre_shared_key_is_last(&not_last), Ok(false));
    assert_eq!(pre_shared_key_is_last(&[]), Ok(true));
    assert!(pre_shared_key_is_last(&[0, 41, 0, 9]).is_err(), "truncated");
}

#[test]
fn cookie_connection_id_and_raw_lookup() {
    let mut out = Vec::new();
    emit_cookie(b"state", &mut out).expect("fits");
    assert_eq!(parse_cookie(&out), Ok(b"state".to_vec()));
    assert!(parse_cookie(&[0, 0]).is_err(), "cookie<1..2^16-1>");
    assert!(emit_cookie(&[], &mut Vec::new()).is_err());
    let mut cid = Vec::new();
    emit_connection_id(&[1, 2, 3], &mut cid).expect("fits");
    assert_eq!(parse_connection_id(&cid), Ok(vec![1, 2, 3]));
    assert_eq!(
        parse_connection_id(&[0]),
        Ok(vec![]),
        "zero-length: send me none"
    );
    assert_eq!(parse_early_data_ticket(&[0, 0, 0x40, 0]), Ok(0x4000));

    let ext = Extensions {
        other: vec![RawExtension {
            ext_type: ExtensionType::Cookie,
            data: out.clone(),
        }],
        ..Extensions::default()
    };
    assert_eq!(ext.raw(ExtensionType::Cookie), Some(out.as_slice()));
    assert_eq!(ext.raw(ExtensionType::KeyShare), None);
}

#[test]
fn certificate_and_request_round_trip() {
    let cert = Certificate13 {
        context: vec![],
        entries: vec![
            CertificateEntry {
                cert_data: vec![0x30; 700],
                extensions: vec![],
            },
            CertificateEntry {
                cert_data: vec![0x31; 600],
                extensions: vec![0, 5, 0, 0],
            },
        ],
    };
    let mut out = Vec::new();
    cert.emit(&mut out).expect("fits");
    assert_eq!(Certificate13::parse(&out), Ok(cert.clone()));
    assert_eq!(cert.chain().count(), 2);
    // An empty cert_data is refused both ways; a lying list length is truncation.
    let empty = Certificate13 {
        context: vec![],
        entries: vec![CertificateEntry::default()],
    };
    assert!(empty.emit(&mut Vec::new()).is_err());
    assert!(Certificate13::parse(&[0, 0, 0, 9, 0, 0, 0]).is_err());
    // A client without a certificate: the request's context and no entries.
    let none = Certificate13 {
        context: vec![1, 2],
        entries: vec![],
    };
    let mut out = Vec::new();
    none.emit(&mut out).expect("fits");
    assert_eq!(out, [2, 1, 2, 0, 0, 0]);
    assert_eq!(Certificate13::parse(&out), Ok(none));

    let request = CertificateRequest13 {
        context: vec![],
        extensions: Extensions {
            signature_algorithms: Some(vec![SignatureScheme::EcdsaSecp256r1Sha256]),
            ..Extensions::default()
        },
    };
    let mut out = Vec::new();
    request.emit(&mut out).expect("fits");
    assert_eq!(CertificateRequest13::parse(&out), Ok(request));
    // signature_algorithms is required (RFC 8446 §4.3.2).
    assert!(CertificateRequest13::parse(&[0, 0, 0]).is_err());
}

#[test]
fn finished_ticket_key_update() {
    assert!(Finished13::parse(&[0; 32], 32).is_ok());
    assert!(Finished13::parse(&[0; 32], 48).is_err());
    let ticket = NewSessionTicket13 {
        lifetime: 7200,
        age_add: 0xdead_beef,
        nonce: vec![0, 1],
        ticket: vec![5; 100],
        extensions: vec![],
    };
    let mut out = Vec::new();
    ticket.emit(&mut out).expect("fits");
    assert_eq!(NewSessionTicket13::parse(&out), Ok(ticket.clone()));
    let too_long = NewSessionTicket13 {
        lifetime: MAX_TICKET_LIFETIME + 1,
        ..ticket.clone()
    };
    assert!(too_long.emit(&mut Vec::new()).is_err());
    let mut forged = out.clone();
    forged[..4].copy_from_slice(&(MAX_TICKET_LIFETIME + 1).to_be_bytes());
    assert!(NewSessionTicket13::parse(&forged).is_err());
    assert_eq!(KeyUpdate::parse(&[1]), Ok(KeyUpdate::Requested));
    assert!(matches!(
        KeyUpdate::parse(&[2]),
        Err(WireError::IllegalValue { .. })
    ));
    assert!(KeyUpdate::parse(&[]).is_err());
    let mut ku = Vec::new();
    KeyUpdate::NotRequested.emit(&mut ku);
    assert_eq!(ku, [0]);
}

#[test]
fn ack_and_connection_id_messages() {
    let ack = Ack {
        records: vec![
            RecordNumber {
                epoch: 2,
                sequence: 0,
            },
            RecordNumber {
                epoch: 3,
                sequence: 1 << 40,
            },
        ],
    };
    let mut out = Vec::new();
    ack.emit(&mut out).expect("fits");
    assert_eq!(out.len(), 2 + 32);
    assert_eq!(Ack::parse(&out), Ok(ack));
    assert!(
        Ack::parse(&[0, 15, 0]).is_err(),
        "not a whole record number"
    );
    assert_eq!(Ack::parse(&[0, 0]), Ok(Ack::default()));

    assert_eq!(
        RequestConnectionId::parse(&[3]),
        Ok(RequestConnectionId { num_cids: 3 })
    );
    assert!(RequestConnectionId::parse(&[3, 3]).is_err());
    let new = NewConnectionId {
        cids: vec![vec![1; 8], vec![]],
        usage: ConnectionIdUsage::Spare,
    };
    let mut out = Vec::new();
    new.emit(&mut out).expect("fits");
    assert_eq!(NewConnectionId::parse(&out), Ok(new));
    let last = out.len() - 1;
    out[last] = 2;
    assert!(NewConnectionId::parse(&out).is_err(), "unknown usage");
}

#[test]
fn hello_retry_request_downgrade_and_transcript_headers() {
    assert!(is_hello_retry_request(&HELLO_RETRY_REQUEST_RANDOM));
    assert!(!is_hello_retry_request(&[0; 32]));
    let mut random = [7u8; 32];
    assert!(!has_downgrade_sentinel(&random));
    random[24..].copy_from_slice(b"DOWNGRD\x01");
    assert!(has_downgrade_sentinel(&random));
    assert_eq!(message_hash_header(32), [254, 0, 0, 32]);
    let mut out = Vec::new();
    put_tls_handshake_header(&mut out, HandshakeType::Finished, 48).expect("fits");
    assert_eq!(out, [20, 0, 0, 48]);
    assert!(put_tls_handshake_header(&mut out, HandshakeType::Finished, 1 << 24).is_err());
}

#[test]
fn parsers_never_panic_on_prefixes_of_valid_input() {
    let mut ticket = Vec::new();
    NewSessionTicket13 {
        lifetime: 1,
        age_add: 2,
        nonce: vec![3],
        ticket: vec![4; 9],
        extensions: vec![0, 42, 0, 4, 0, 0, 0, 1],
    }
    .emit(&mut ticket)
    .expect("fits");
    for n in 0..ticket.len() {
        let cut = &ticket[..n];
        assert!(NewSessionTicket13::parse(cut).is_err());
        let _ = Certificate13::parse(cut);
        let _ = OfferedPsks::parse(cut);
        let _ = parse_key_share_client(cut);
        let _ = NewConnectionId::parse(cut);
        let _ = Ack::parse(cut);
        let _ = pre_shared_key_is_last(cut);
    }
}

mod props {
    use proptest::collection::vec;
    use proptest::prelude::*;

    use super::*;

    /// Whatever parses re-encodes to the same bytes' meaning: parse(emit(parse(x))) ==
    /// parse(x).
    fn round_trips<T: PartialEq + std::fmt::Debug>(
        data: &[u8],
        parse: impl Fn(&[u8]) -> Result<T, WireError>,
        emit: impl Fn(&T, &mut Vec<u8>) -> Result<(), WireError>,
    ) {
        if let Ok(v) = parse(data) {
            let mut out = Vec::new();
            if emit(&v, &mut out).is_ok() {
                assert_eq!(parse(&out), Ok(v));
            }
        }
    }

    proptest! {
        #[test]
        fn no_parser_panics_and_what_parses_round_trips(data in vec(any::<u8>(), 0..300)) {
            round_trips(&data, Certificate13::parse, Certificate13::emit);
            round_trips(&data, NewSessionTicket13::parse, NewSessionTicket13::emit);
            round_trips(&data, NewConnectionId::parse, NewConnectionId::emit);
            round_trips(&data, Ack::parse, Ack::emit);
            round_trips(&data, OfferedPsks::parse, OfferedPsks::emit);
            round_trips(&data, parse_key_share_client, |v, o| emit_key_share_client(v, o));
            round_trips(&data, parse_cookie, |v, o| emit_cookie(v, o));
            round_trips(&data, parse_psk_key_exchange_modes, |v, o| {
                emit_psk_key_exchange_modes(v, o)
            });
            let _ = CertificateRequest13::parse(&data);
            let _ = EncryptedExtensions::parse(&data);
            let _ = KeyUpdate::parse(&data);
            let _ = parse_supported_versions_client(&data);
            let _ = parse_key_share_server(&data);
            let _ = pre_shared_key_is_last(&data);
        }
    }
}
