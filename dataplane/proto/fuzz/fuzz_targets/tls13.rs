//! Every DTLS 1.3 wire parser (`dtls_proto::tls13`) on arbitrary bytes: no panic, and what
//! parses re-encodes to something that parses back to the same value. The first byte picks
//! the parser.
#![no_main]

use dtls_proto::tls13::extensions::*;
use dtls_proto::tls13::messages::*;
use dtls_proto::WireError;
use libfuzzer_sys::fuzz_target;

/// parse(emit(parse(x))) == parse(x) for whatever parses and emits.
fn round_trip<T: PartialEq + std::fmt::Debug>(
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

fuzz_target!(|data: &[u8]| {
    let Some((&pick, body)) = data.split_first() else {
        return;
    };
    match pick % 14 {
        0 => round_trip(body, Certificate13::parse, Certificate13::emit),
        1 => round_trip(body, NewSessionTicket13::parse, NewSessionTicket13::emit),
        2 => round_trip(body, NewConnectionId::parse, NewConnectionId::emit),
        3 => round_trip(body, Ack::parse, Ack::emit),
        4 => round_trip(body, OfferedPsks::parse, OfferedPsks::emit),
        5 => round_trip(body, parse_key_share_client, |v, o| emit_key_share_client(v, o)),
        6 => round_trip(body, parse_key_share_server, |v, o| emit_key_share_server(v, o)),
        7 => round_trip(body, parse_cookie, |v, o| emit_cookie(v, o)),
        8 => round_trip(body, parse_psk_key_exchange_modes, |v, o| {
            emit_psk_key_exchange_modes(v, o)
        }),
        9 => round_trip(body, parse_supported_versions_client, |v, o| {
            emit_supported_versions_client(v, o)
        }),
        10 => round_trip(body, CertificateRequest13::parse, CertificateRequest13::emit),
        11 => {
            let _ = KeyUpdate::parse(body);
            let _ = RequestConnectionId::parse(body);
            let _ = parse_key_share_retry(body);
            let _ = parse_supported_versions_server(body);
            let _ = parse_pre_shared_key_server(body);
        }
        12 => {
            let _ = pre_shared_key_is_last(body);
            let _ = EncryptedExtensions::parse(body);
        }
        _ => round_trip(body, parse_connection_id, |v, o| emit_connection_id(v, o)),
    }
});
