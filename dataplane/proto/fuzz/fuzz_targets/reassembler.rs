//! The handshake reassembler fed a sequence of hostile fragments. Each 10-byte entry is
//! message_seq, msg_type, length (u24), fragment_offset (u24), fragment_length (u16);
//! the fragment bytes are a pattern. Checks: no panic, memory caps hold (per message type,
//! per handshake, and a shared budget that matches what the reassembler holds and is all
//! released when it is dropped), messages come out in order and complete.
#![no_main]

use std::sync::Arc;

use dtls_proto::{
    HandshakeRepr, HandshakeType, MessageCaps, Reassembler, ReassemblyBudget, ReassemblyConfig,
};
use libfuzzer_sys::fuzz_target;

fn u24(b: &[u8]) -> u32 {
    u32::from_be_bytes([0, b[0], b[1], b[2]])
}

fuzz_target!(|data: &[u8]| {
    let cfg = ReassemblyConfig {
        max_message_len: 4096,
        max_handshake_bytes: 8192,
        max_messages_ahead: 4,
        max_ranges_per_message: 8,
        message_caps: MessageCaps::NONE.with(HandshakeType::from_u8(2), 600),
    };
    let budget = Arc::new(ReassemblyBudget::new(6000));
    let mut r = Reassembler::with_budget(cfg, 0, Arc::clone(&budget));
    let mut next = 0u32;
    for entry in data.chunks_exact(10) {
        let header = HandshakeRepr {
            message_seq: u16::from(entry[0] % 16),
            msg_type: HandshakeType::from_u8(entry[1] % 4),
            length: u24(&entry[2..5]),
            fragment_offset: u24(&entry[5..8]),
            fragment_length: u32::from(u16::from_be_bytes([entry[8], entry[9]]) % 8192),
        };
        let bytes: Vec<u8> = (0..header.fragment_length)
            .map(|i| (i as u8) ^ entry[0])
            .collect();
        let _ = r.handle_fragment(&header, &bytes);
        assert!(r.buffered_bytes() <= cfg.max_handshake_bytes);
        assert_eq!(budget.used(), r.buffered_bytes());
        assert!(budget.used() <= budget.limit());
        while let Some(m) = r.poll_message() {
            assert_eq!(u32::from(m.message_seq), next);
            assert!(m.body.len() <= cfg.max_len_of(m.msg_type));
            assert_eq!(m.transcript_bytes().len(), 12 + m.body.len());
            next += 1;
        }
    }
    drop(r);
    assert_eq!(budget.used(), 0);
});
