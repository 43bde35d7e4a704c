//! Connection-ID record headers and QUIC-LB CIDs on arbitrary bytes: what the shard reads
//! from an unauthenticated record to route it.
//!
//! - the tls12_cid header (RFC 9146 §4): accessors never panic, whatever the buffer; what
//!   parses lies within the buffer and re-encodes to exactly its bytes;
//! - the DTLS 1.3 unified header (RFC 9147 §4): what parses lies within the buffer, its
//!   CID and sequence number within its header;
//! - QUIC-LB CIDs (draft-ietf-quic-load-balancers), plaintext and encrypted (Feistel and
//!   one-block AES): the shard and node read from any bytes stay within their widths, a
//!   decrypted owner agrees with the CID's clear shard octet, and a CID issued for an owner
//!   with the input as its nonce decodes back to that owner.
//!
//! The first byte picks the CID length (0 to 32) and, with the next, the owner.
#![no_main]

use std::sync::{Arc, OnceLock};

use dataplane::cid::{
    CidOwner, ConfigId, EncryptedCids, QuicLbKey, ServerIdLayout, ShardField,
};
use dataplane::record::v13::UnifiedHeader;
use dataplane::record::{CidRecordHeader, CidRecordRepr};
use libfuzzer_sys::fuzz_target;

/// 3-octet server IDs: 12 node bits, 8 shard bits.
fn layout() -> ServerIdLayout {
    ServerIdLayout::new(3, 12, 8).expect("valid layout")
}

/// A plaintext field (12-octet CIDs) and encrypted CIDs of 12 (Feistel) and 18 octets
/// (one AES block), built once.
fn fields() -> &'static (ShardField, Vec<Arc<EncryptedCids>>) {
    static FIELDS: OnceLock<(ShardField, Vec<Arc<EncryptedCids>>)> = OnceLock::new();
    FIELDS.get_or_init(|| {
        let config = ConfigId::new(1).expect("codepoint");
        let plain = ShardField::plaintext_with_length(config, layout(), 12).expect("field");
        let key = QuicLbKey {
            config_id: config,
            key: zeroize::Zeroizing::new([7; 16]),
        };
        let encrypted = [12, 18]
            .into_iter()
            .map(|len| {
                Arc::new(
                    EncryptedCids::new(len, layout(), std::slice::from_ref(&key))
                        .expect("encrypted CIDs"),
                )
            })
            .collect();
        (plain, encrypted)
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&pick, bytes)) = data.split_first() else {
        return;
    };
    let cid_len = usize::from(pick % 33);

    let header = CidRecordHeader::new_unchecked(bytes, cid_len);
    let _ = (header.content_type(), header.version(), header.epoch());
    let _ = (header.sequence(), header.cid(), header.length());
    let _ = (header.payload(), header.total_len());
    if let Ok(repr) = CidRecordRepr::parse(&header) {
        assert_eq!(repr.cid.len(), cid_len);
        let record = &bytes[..repr.buffer_len()];
        let mut copy = record.to_vec();
        copy[..repr.header_len()].fill(0);
        repr.emit_into(&mut copy).expect("a parsed header emits");
        assert_eq!(copy, record, "the one encoding of the header");
    }

    if let Ok(h) = UnifiedHeader::parse(bytes, cid_len) {
        assert!(h.header_len <= h.record_len && h.record_len <= bytes.len());
        assert!(h.sequence_range().end <= h.header_len);
        match h.cid_len {
            Some(n) => assert_eq!(h.cid(bytes).map(<[u8]>::len), Some(usize::from(n))),
            None => assert!(h.cid(bytes).is_none()),
        }
        assert_eq!(h.encrypted_len(), h.record_len - h.header_len);
    }

    let (plain, encrypted) = fields();
    if let Some(shard) = plain.shard_of(bytes) {
        assert!(u32::from(shard) < 1 << plain.bits());
    }
    if let Some(node) = plain.node_of(bytes) {
        assert!(node < 1 << 12);
    }
    let owner = CidOwner {
        node: u32::from(pick) << 4 | u32::from(bytes.first().copied().unwrap_or(0) >> 4),
        shard: u16::from(bytes.get(1).copied().unwrap_or(0)),
    };
    for cids in encrypted {
        if let Some(found) = cids.owner_of(bytes) {
            assert_eq!(
                u16::from(bytes[cids.cid_len() - 1]),
                found.shard,
                "the clear shard octet"
            );
            assert!(found.node < 1 << 12);
        }
        if let Some(nonce) = bytes.get(..cids.nonce_len()) {
            let cid = cids.issue(owner, nonce).expect("the layout holds every owner here");
            assert_eq!(cid.as_bytes().len(), cids.cid_len());
            assert_eq!(cids.owner_of(cid.as_bytes()), Some(owner), "round trip");
        }
    }
});
