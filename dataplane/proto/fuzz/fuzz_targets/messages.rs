//! Every handshake message parser, plus the alert, ChangeCipherSpec, heartbeat, RFC 9853
//! return_routability_check and handshake-header parsers. Byte 0 picks the message type, byte 1 the key exchange;
//! whatever parses must round-trip through emit.
#![no_main]

use dtls_proto::{
    Alert, ChangeCipherSpec, HandshakeFragments, HandshakeMessage, HandshakeType, HeartbeatMessage,
    KeyExchange, RrcMessage,
};
use libfuzzer_sys::fuzz_target;

const TYPES: [u8; 13] = [0, 1, 2, 3, 4, 11, 12, 13, 14, 15, 16, 20, 99];
const KXS: [Option<KeyExchange>; 5] = [
    None,
    Some(KeyExchange::EcdheEcdsa),
    Some(KeyExchange::EcdheRsa),
    Some(KeyExchange::Psk),
    Some(KeyExchange::EcdhePsk),
];

fuzz_target!(|data: &[u8]| {
    let [sel_type, sel_kx, body @ ..] = data else {
        return;
    };
    let msg_type = HandshakeType::from_u8(TYPES[usize::from(*sel_type) % TYPES.len()]);
    let kx = KXS[usize::from(*sel_kx) % KXS.len()];
    if let Ok(msg) = HandshakeMessage::parse(msg_type, body, kx) {
        let mut out = Vec::new();
        if msg.emit(&mut out).is_ok() {
            assert_eq!(
                HandshakeMessage::parse(msg_type, &out, kx).as_ref(),
                Ok(&msg)
            );
        }
    }
    let _ = Alert::parse(body);
    let _ = ChangeCipherSpec::parse(body);
    if let Ok(hb) = HeartbeatMessage::parse(body) {
        // Never echo more than the record held.
        assert!(hb.payload.len() + 3 + 16 <= body.len());
    }
    if let Ok(msg @ RrcMessage::Known { .. }) = RrcMessage::parse(body) {
        let mut out = [0u8; 16];
        let n = msg.emit(&mut out).expect("a known message fits 9 bytes");
        assert_eq!(&out[..n], body);
    }
    for (repr, frag) in HandshakeFragments::new(body).flatten() {
        assert_eq!(frag.len(), repr.fragment_length as usize);
        assert!(repr.fragment_offset + repr.fragment_length <= repr.length);
    }
});
