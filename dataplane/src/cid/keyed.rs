//! Encrypted QUIC-LB CIDs that still name their shard in clear, for the in-host steering.
//!
//! An encrypted CID (draft-ietf-quic-load-balancers-21 §5.4) hides the whole server ID,
//! so a classic BPF program cannot read the shard from it. [`EncryptedCids`] issues
//!
//! ```text
//! first octet | AES(server ID (node, shard) + nonce) | shard (1 octet, plaintext)
//! ```
//!
//! The first `1 + server ID + nonce` octets are an ordinary encrypted QUIC-LB CID, which a
//! QUIC-LB load balancer decodes as the draft says (it reads the configured server ID and
//! nonce lengths from the second octet and ignores what follows); the last octet repeats the
//! shard id in clear, where the steering program and the shards' hand-off read it. The
//! first octet's low bits self-encode the whole length, trailing octet included.
//!
//! What the plaintext octet gives away: which shard (CPU) of its node serves a session, not
//! the node. A client keeps its shard across CID rotations, so an observer who sees a
//! client move learns that the old and new CIDs name the same one of the node's shards: up
//! to 8 bits that link the two CIDs, fewer with fewer shards, against the whole server ID
//! and nonce in plaintext mode.
//!
//! Keys rotate (§3.1, "config rotation"): the configuration that issues is the current
//! one; CIDs under an earlier codepoint whose key is still installed keep decoding until
//! [`EncryptedCids::set_keys`] drops it. Keys are behind a lock so the issuer (control
//! thread) and the decoders (shards, node forwarder) share one set; reads never block on
//! each other, a poisoned lock is read through (the keys are replaced whole).

use std::sync::{PoisonError, RwLock};

use super::{
    CidError, CidOwner, ConfigId, ConnectionId, FirstOctetBits, MAX_CID_LEN, NONCE_LEN,
    QuicLbConfig, QuicLbConfigs, ServerIdLayout,
};

/// One QUIC-LB key under its config rotation codepoint.
pub struct QuicLbKey {
    /// The codepoint (0..=6) CIDs under this key carry in their first octet's top bits.
    pub config_id: ConfigId,
    /// The AES-128 key.
    pub key: zeroize::Zeroizing<[u8; 16]>,
}

impl core::fmt::Debug for QuicLbKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "QuicLbKey(codepoint {}, <redacted>)",
            self.config_id.value()
        )
    }
}

/// The installed configurations and which one issues.
struct Keys {
    current: ConfigId,
    configs: QuicLbConfigs,
}

/// Issues and decodes encrypted CIDs of one length with a trailing plaintext shard octet
/// (see the module docs).
pub struct EncryptedCids {
    cid_len: u8,
    layout: ServerIdLayout,
    keys: RwLock<Keys>,
}

impl core::fmt::Debug for EncryptedCids {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("EncryptedCids")
            .field("cid_len", &self.cid_len)
            .field("layout", &self.layout)
            .field("current", &self.current().value())
            .finish_non_exhaustive()
    }
}

impl EncryptedCids {
    /// CIDs of `cid_len` octets (8..=20: first octet, server ID, at least a 4-octet nonce and
    /// the shard octet) for `layout`, whose shard id must fit the one plaintext octet.
    /// `keys[0]` issues; the others (at most 6, distinct codepoints) only decode.
    ///
    /// The mode follows from the length (§5.4.1, §5.4.2): server ID and nonce of exactly 16
    /// octets (`cid_len` = server ID + nonce + 2 = 18 with a 2-octet server ID) take one AES
    /// block, every other length the four-pass Feistel network.
    ///
    /// # Errors
    /// A length the layout does not fit, shard bits over 8, no key, or two keys under one
    /// codepoint.
    pub fn new(
        cid_len: usize,
        layout: ServerIdLayout,
        keys: &[QuicLbKey],
    ) -> Result<Self, CidError> {
        if layout.shard_bits() > 8 {
            return Err(CidError::LayoutWidth {
                server_id_len: layout.server_id_len(),
                node_bits: layout.node_bits(),
                shard_bits: layout.shard_bits(),
            });
        }
        let min = 1 + layout.server_id_len() + NONCE_LEN.start() + 1;
        if cid_len < min || cid_len > MAX_CID_LEN {
            return Err(CidError::NonceLength(
                cid_len.saturating_sub(2 + layout.server_id_len()),
            ));
        }
        let cids = Self {
            // At most 20 (checked above).
            cid_len: cid_len as u8,
            layout,
            keys: RwLock::new(Keys {
                current: ConfigId::new(0)?,
                configs: QuicLbConfigs::new(),
            }),
        };
        cids.set_keys(keys)?;
        Ok(cids)
    }

    /// Replaces the keys: `keys[0]` issues from now on, the others still decode. CIDs under
    /// a codepoint no longer listed stop decoding (they name no owner; sessions still find
    /// them in their shard's CID table while their address does not change).
    ///
    /// # Errors
    /// No key, or two keys under one codepoint; the old keys stay then.
    pub fn set_keys(&self, keys: &[QuicLbKey]) -> Result<(), CidError> {
        let Some(current) = keys.first() else {
            return Err(CidError::NoKey);
        };
        let mut configs = QuicLbConfigs::new();
        for key in keys {
            if configs.get(key.config_id).is_some() {
                return Err(CidError::DuplicateConfigId(key.config_id.value()));
            }
            configs.insert(QuicLbConfig::encrypted(
                key.config_id,
                self.layout.server_id_len(),
                self.nonce_len(),
                FirstOctetBits::CidLength,
                &key.key,
            )?);
        }
        *self.keys.write().unwrap_or_else(PoisonError::into_inner) = Keys {
            current: current.config_id,
            configs,
        };
        Ok(())
    }

    /// The CID length in octets.
    pub fn cid_len(&self) -> usize {
        usize::from(self.cid_len)
    }

    /// The server ID layout.
    pub fn layout(&self) -> ServerIdLayout {
        self.layout
    }

    /// Nonce octets in each CID: the length less first octet, server ID and shard octet.
    pub fn nonce_len(&self) -> usize {
        self.cid_len() - 2 - self.layout.server_id_len()
    }

    /// The codepoint that issues.
    pub fn current(&self) -> ConfigId {
        self.keys
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .current
    }

    /// The first octet of CIDs issued under `config_id`: the codepoint, then the length
    /// less one.
    pub fn first_octet(&self, config_id: ConfigId) -> u8 {
        config_id.value() << 5 | (self.cid_len - 1)
    }

    /// Whether `first_octet` is that of a CID of ours under an installed key.
    pub fn knows(&self, first_octet: u8) -> bool {
        let keys = self.keys.read().unwrap_or_else(PoisonError::into_inner);
        ConfigId::of_first_octet(first_octet)
            .is_some_and(|id| keys.configs.get(id).is_some() && first_octet == self.first_octet(id))
    }

    /// The CID naming `owner` under the current key, with `nonce` ([`Self::nonce_len`]
    /// octets the caller drew at random: §9.6 forbids reusing a nonce under one key).
    ///
    /// # Errors
    /// An owner the layout cannot hold, or a nonce of another length.
    pub fn issue(&self, owner: CidOwner, nonce: &[u8]) -> Result<ConnectionId, CidError> {
        let server_id = self.layout.pack(owner)?;
        let keys = self.keys.read().unwrap_or_else(PoisonError::into_inner);
        let config = keys.configs.get(keys.current).ok_or(CidError::NoKey)?;
        let inner = config.encode(server_id.as_bytes(), nonce, 0)?;
        let mut octets = [0u8; MAX_CID_LEN];
        let len = self.cid_len();
        octets[..len - 1].copy_from_slice(inner.as_bytes());
        // The length self-encoded covers the shard octet too (§3.1: the low bits hold the
        // length of the rest of the CID).
        octets[0] = self.first_octet(keys.current);
        // The layout held the shard in at most 8 bits (checked in `new`).
        octets[len - 1] = owner.shard as u8;
        Ok(ConnectionId::from_valid(&octets[..len]))
    }

    /// The owner `cid` (the CID's octets, or more: the rest of a record may follow) names,
    /// decrypted; `None` when its first octet is not one of ours under an installed key,
    /// when it is too short, when the decrypted server ID is not one the layout packs, or
    /// when the plaintext shard octet disagrees with the encrypted one (a forged or
    /// damaged CID). Never allocates, never panics.
    pub fn owner_of(&self, cid: &[u8]) -> Option<CidOwner> {
        let cid = cid.get(..self.cid_len())?;
        let keys = self.keys.read().unwrap_or_else(PoisonError::into_inner);
        let id = ConfigId::of_first_octet(cid[0])?;
        if cid[0] != self.first_octet(id) {
            return None;
        }
        let server_id = keys.configs.get(id)?.decode_server_id(cid)?;
        let owner = self.layout.unpack(&server_id)?;
        (u16::from(cid[self.cid_len() - 1]) == owner.shard).then_some(owner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(id: u8, fill: u8) -> QuicLbKey {
        QuicLbKey {
            config_id: ConfigId::new(id).expect("id"),
            key: zeroize::Zeroizing::new([fill; 16]),
        }
    }

    fn layout() -> ServerIdLayout {
        ServerIdLayout::new(2, 8, 8).expect("layout")
    }

    #[test]
    fn issued_cids_hide_the_node_and_decode_back() {
        // 8: four-pass over 6 octets; 18: one AES block (2 + 14 = 16); 20: four-pass.
        for len in [8, 18, 20] {
            let cids = EncryptedCids::new(len, layout(), &[key(1, 0x42)]).expect("fits");
            let owner = CidOwner { node: 7, shard: 3 };
            let nonce = vec![0x11; cids.nonce_len()];
            let cid = cids.issue(owner, &nonce).expect("issue");
            let bytes = cid.as_bytes();
            assert_eq!(bytes.len(), len);
            assert_eq!(bytes[0], 1 << 5 | (len as u8 - 1));
            assert_eq!(bytes[len - 1], 3, "the plaintext shard octet");
            assert_ne!(&bytes[1..3], &[7, 3], "the server ID is not in clear");
            assert_eq!(cids.owner_of(bytes), Some(owner));
            // A QUIC-LB load balancer with the same key and lengths decodes the prefix.
            let lb = QuicLbConfig::encrypted(
                ConfigId::new(1).expect("id"),
                2,
                cids.nonce_len(),
                FirstOctetBits::CidLength,
                &[0x42; 16],
            )
            .expect("config");
            assert_eq!(
                lb.decode_server_id(bytes).expect("routable").as_bytes(),
                &[7, 3]
            );
        }
    }

    #[test]
    fn forged_or_foreign_cids_name_no_owner() {
        let cids = EncryptedCids::new(10, layout(), &[key(2, 1)]).expect("fits");
        let owner = CidOwner { node: 1, shard: 4 };
        let cid = cids.issue(owner, &[9; 6]).expect("issue");
        let mut forged = cid.as_bytes().to_vec();
        forged[9] = 5;
        assert_eq!(cids.owner_of(&forged), None, "shard octet changed");
        let mut other = cid.as_bytes().to_vec();
        other[0] = 3 << 5 | 9;
        assert_eq!(cids.owner_of(&other), None, "no key under codepoint 3");
        assert_eq!(cids.owner_of(&cid.as_bytes()[..9]), None, "short");
        assert_eq!(cids.owner_of(&[]), None);
        assert!(cids.knows(cid.as_bytes()[0]) && !cids.knows(other[0]));
    }

    #[test]
    fn rotation_keeps_the_previous_key_decoding_until_it_is_dropped() {
        let cids = EncryptedCids::new(8, layout(), &[key(0, 1)]).expect("fits");
        let owner = CidOwner { node: 2, shard: 1 };
        let old = cids.issue(owner, &[1; 4]).expect("issue");
        cids.set_keys(&[key(1, 2), key(0, 1)]).expect("rotate");
        let new = cids.issue(owner, &[1; 4]).expect("issue");
        assert_eq!(new.as_bytes()[0] >> 5, 1, "issued under the new codepoint");
        assert_eq!(cids.owner_of(old.as_bytes()), Some(owner));
        assert_eq!(cids.owner_of(new.as_bytes()), Some(owner));
        cids.set_keys(&[key(1, 2)]).expect("retire");
        assert_eq!(cids.owner_of(old.as_bytes()), None);
        assert_eq!(cids.owner_of(new.as_bytes()), Some(owner));
        // Refused sets leave the keys as they were.
        assert_eq!(cids.set_keys(&[]), Err(CidError::NoKey));
        assert_eq!(
            cids.set_keys(&[key(3, 1), key(3, 2)]),
            Err(CidError::DuplicateConfigId(3))
        );
        assert_eq!(cids.current().value(), 1);
    }

    #[test]
    fn lengths_and_layouts_that_do_not_fit_are_refused() {
        assert!(
            EncryptedCids::new(7, layout(), &[key(0, 1)]).is_err(),
            "nonce of 3"
        );
        assert!(EncryptedCids::new(21, layout(), &[key(0, 1)]).is_err());
        let wide = ServerIdLayout::new(3, 8, 9).expect("layout");
        assert!(
            EncryptedCids::new(12, wide, &[key(0, 1)]).is_err(),
            "9 shard bits"
        );
        assert!(EncryptedCids::new(8, layout(), &[]).is_err());
    }
}
