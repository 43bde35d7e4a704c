//! The connection IDs a server issues (RFC 9146 §3: the server chooses the CID its clients
//! put in their records): QUIC-LB CIDs (draft-ietf-quic-load-balancers-21) whose server ID
//! names the node and the shard that own the session, so whoever routes records can find the
//! owner from the CID alone: the kernel's reuseport steering program and the shards' hand-off
//! read the shard id where [`ShardCids::shard_field`] says it is (node-to-node forwarding
//! is later work).
//!
//! Layout: without a QUIC-LB key, configuration 0 in plaintext mode (the owner is visible
//! to observers, see `docs/architecture.md`); with keys, encrypted CIDs with a plaintext
//! shard octet after the nonce ([`EncryptedCids`], at least 8 octets). Either way the first
//! octet's low bits carry the CID length, a 2-octet
//! server ID (node id in 8 bits, shard id in 8 bits, [`dataplane::cid::ServerIdLayout`]) and
//! a random nonce filling the rest. A configured length too short for that (under 7 octets:
//! the draft's 4-octet minimum nonce) or an owner out of range gets random CIDs instead,
//! which still work through the CID table but name no owner.

use std::sync::Arc;

use control::{CidIssuer, Rng};
use dataplane::cid::{
    CidOwner, ConfigId, EncryptedCids, FirstOctetBits, QuicLbConfig, ServerIdLayout, ShardField,
};

/// Octets of server ID in our CIDs.
const SERVER_ID_LEN: usize = 2;
/// Bits of the server ID that hold the node id.
const NODE_BITS: u32 = 8;
/// Bits of the server ID that hold the shard id.
const SHARD_BITS: u32 = 8;

/// Issues the CIDs of the sessions one shard of one node owns.
#[derive(Debug, Clone)]
pub struct ShardCids {
    /// Who owns the sessions.
    pub owner: CidOwner,
    /// With a QUIC-LB key (`key_store`'s `quic_lb_keys`): encrypted CIDs of that length,
    /// under the keys' current codepoint ([`EncryptedCids`]); `None`: plaintext mode.
    pub encrypted: Option<Arc<EncryptedCids>>,
}

impl ShardCids {
    /// Where the shard id sits in the CIDs of `len` octets this issuer hands out; `None`
    /// when such CIDs are random (too short for the QUIC-LB layout) and name no shard.
    pub fn shard_field(len: usize) -> Option<ShardField> {
        ShardField::plaintext_with_length(ConfigId::new(0).ok()?, Self::layout()?, len)
    }

    /// How node and shard sit in our server IDs; plaintext and encrypted CIDs share it.
    pub fn layout() -> Option<ServerIdLayout> {
        ServerIdLayout::new(SERVER_ID_LEN, NODE_BITS, SHARD_BITS).ok()
    }

    /// The QUIC-LB CID of `len` octets naming this owner, with `nonce` random octets;
    /// `None` when `len` or the owner does not fit the layout.
    fn quic_lb(&self, len: usize, rng: &mut dyn Rng) -> Option<Vec<u8>> {
        let nonce_len = len.checked_sub(1 + SERVER_ID_LEN)?;
        let config = QuicLbConfig::plaintext(
            ConfigId::new(0).ok()?,
            SERVER_ID_LEN,
            nonce_len,
            FirstOctetBits::CidLength,
        )
        .ok()?;
        let layout = ServerIdLayout::new(SERVER_ID_LEN, NODE_BITS, SHARD_BITS).ok()?;
        let server_id = layout.pack(self.owner).ok()?;
        // §5.4: without a key the nonce must not be predictable; it comes from the engine's
        // CSPRNG. A 4-octet or longer nonce makes two live sessions of a shard sharing a
        // CID unlikely (the shard's table would send the older one's records to the newer).
        let mut nonce = vec![0u8; nonce_len];
        rng.fill(&mut nonce);
        let cid = config.encode(server_id.as_bytes(), &nonce, 0).ok()?;
        Some(cid.as_bytes().to_vec())
    }

    /// The encrypted CID of `len` octets naming this owner; `None` without keys, or when
    /// `len` is not the keys' length or the owner does not fit.
    fn encrypted(&self, len: usize, rng: &mut dyn Rng) -> Option<Vec<u8>> {
        let cids = self.encrypted.as_ref().filter(|c| c.cid_len() == len)?;
        // §9.6: a nonce is not reused under one key; 4 or more random octets make a repeat
        // unlikely (a repeat would give two sessions of this shard one CID).
        let mut nonce = vec![0u8; cids.nonce_len()];
        rng.fill(&mut nonce);
        let cid = cids.issue(self.owner, &nonce).ok()?;
        Some(cid.as_bytes().to_vec())
    }
}

impl CidIssuer for ShardCids {
    fn issue(&mut self, len: usize, rng: &mut dyn Rng) -> Vec<u8> {
        let issued = match self.encrypted {
            Some(_) => self.encrypted(len, rng),
            None => self.quic_lb(len, rng),
        };
        issued.unwrap_or_else(|| {
            let mut cid = vec![0u8; len];
            rng.fill(&mut cid);
            cid
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dtls_crypto::SeededRng;

    #[test]
    fn cids_name_node_and_shard() {
        let config = QuicLbConfig::plaintext(
            ConfigId::new(0).expect("id"),
            2,
            5,
            FirstOctetBits::CidLength,
        )
        .expect("config");
        let layout = ServerIdLayout::new(2, 8, 8).expect("layout");
        let mut rng = SeededRng::new(7);
        let owner = CidOwner { node: 3, shard: 9 };
        let mut issuer = ShardCids {
            owner,
            encrypted: None,
        };
        let a = issuer.issue(8, &mut rng);
        let b = issuer.issue(8, &mut rng);
        assert_eq!(a.len(), 8);
        assert_ne!(a, b, "fresh nonces");
        for cid in [&a, &b] {
            let server_id = config.decode_server_id(cid).expect("ours");
            assert_eq!(layout.unpack(&server_id), Some(owner));
        }
        // Too short for a QUIC-LB CID, or a shard beyond the layout: random, right length.
        assert_eq!(issuer.issue(4, &mut rng).len(), 4);
        let mut wide = ShardCids {
            owner: CidOwner {
                node: 0,
                shard: 300,
            },
            encrypted: None,
        };
        assert_eq!(wide.issue(8, &mut rng).len(), 8);
        assert!(issuer.issue(0, &mut rng).is_empty());
    }

    #[test]
    fn shard_field_finds_the_issued_shard() {
        let mut rng = SeededRng::new(9);
        for len in [7, 8, 20] {
            let field = ShardCids::shard_field(len).expect("long enough");
            for shard in [0, 1, 200] {
                let mut issuer = ShardCids {
                    owner: CidOwner { node: 0, shard },
                    encrypted: None,
                };
                assert_eq!(field.shard_of(&issuer.issue(len, &mut rng)), Some(shard));
            }
        }
        assert_eq!(ShardCids::shard_field(6), None, "random CIDs name no shard");
    }

    #[test]
    fn encrypted_cids_name_their_owner_to_the_key_holders_only() {
        let key = dataplane::cid::QuicLbKey {
            config_id: ConfigId::new(2).expect("id"),
            key: zeroize::Zeroizing::new([7; 16]),
        };
        let layout = ShardCids::layout().expect("layout");
        let cids = Arc::new(EncryptedCids::new(10, layout, &[key]).expect("fits"));
        let field = ShardField::encrypted(Arc::clone(&cids)).expect("shard bits");
        let owner = CidOwner { node: 5, shard: 3 };
        let mut issuer = ShardCids {
            owner,
            encrypted: Some(Arc::clone(&cids)),
        };
        let mut rng = SeededRng::new(3);
        let cid = issuer.issue(10, &mut rng);
        assert_eq!(cids.owner_of(&cid), Some(owner));
        assert_eq!(field.shard_of(&cid), Some(3));
        assert_eq!(field.node_of(&cid), Some(5));
        assert_ne!(&cid[1..3], &[5, 3], "the server ID is encrypted");
        assert_ne!(issuer.issue(10, &mut rng), cid, "fresh nonces");
        // Another length than the keys': random, naming no owner.
        let other = issuer.issue(12, &mut rng);
        assert_eq!(other.len(), 12);
        assert_eq!(field.shard_of(&other), None);
    }
}
