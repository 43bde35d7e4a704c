//! The DTLS 1.3 ACK (RFC 9147 §7) and connection-ID messages (RFC 9147 §9: NewConnectionId,
//! RequestConnectionId; the connection_id extension, RFC 9146 §3) on arbitrary bytes: no
//! panic, and what parses is the one encoding of its value: it re-encodes to exactly the
//! input. An ACK holds one record number per 16 bytes of its list. The first byte picks
//! the parser.
#![no_main]

use dtls_proto::tls13::extensions::{emit_connection_id, parse_connection_id};
use dtls_proto::tls13::messages::{Ack, NewConnectionId, RequestConnectionId};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&pick, body)) = data.split_first() else {
        return;
    };
    let mut out = Vec::new();
    match pick % 4 {
        0 => {
            if let Ok(ack) = Ack::parse(body) {
                assert_eq!(2 + 16 * ack.records.len(), body.len());
                ack.emit(&mut out).expect("a parsed ACK emits");
                assert_eq!(out, body);
            }
        }
        1 => {
            if let Ok(m) = NewConnectionId::parse(body) {
                assert!(m.cids.iter().all(|c| c.len() <= 255));
                m.emit(&mut out).expect("a parsed NewConnectionId emits");
                assert_eq!(out, body);
            }
        }
        2 => match RequestConnectionId::parse(body) {
            Ok(m) => {
                m.emit(&mut out);
                assert_eq!(out, body);
            }
            Err(_) => assert_ne!(body.len(), 1),
        },
        _ => {
            if let Ok(cid) = parse_connection_id(body) {
                assert!(cid.len() <= 255);
                emit_connection_id(&cid, &mut out).expect("a parsed CID emits");
                assert_eq!(out, body);
            }
        }
    }
});
