//! Our server IDs: the node and the shard that own a session, packed into QUIC-LB server ID
//! octets so that a CID names both.

use super::{CidError, SERVER_ID_LEN, ServerId};

/// The widest node id a layout can hold.
const MAX_NODE_BITS: u32 = u32::BITS;
/// The widest shard id a layout can hold.
const MAX_SHARD_BITS: u32 = u16::BITS;

/// Who owns a session: a node of the cluster and a shard (worker) on that node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CidOwner {
    /// The node id, from configuration.
    pub node: u32,
    /// The shard on that node.
    pub shard: u16,
}

/// How a [`CidOwner`] sits in a server ID: the node id in the `node_bits` most significant
/// bits, the shard id in the next `shard_bits`, and zeros in the rest.
///
/// Unused bits are zero on packing and must be zero on unpacking, so a random CID that decodes
/// to a server ID with stray bits is not mistaken for one of ours (the draft, §5.1, lets a
/// configuration over-provision the server ID space for exactly that).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ServerIdLayout {
    server_id_len: u8,
    node_bits: u32,
    shard_bits: u32,
}

impl ServerIdLayout {
    /// A layout for `server_id_len`-octet server IDs (1..=15) with up to 32 node bits and 16
    /// shard bits, together no more than the server ID holds. Either width may be zero (one
    /// node, or one shard per node).
    pub fn new(server_id_len: usize, node_bits: u32, shard_bits: u32) -> Result<Self, CidError> {
        if !SERVER_ID_LEN.contains(&server_id_len) {
            return Err(CidError::ServerIdLength(server_id_len));
        }
        if node_bits > MAX_NODE_BITS
            || shard_bits > MAX_SHARD_BITS
            || node_bits + shard_bits > 8 * server_id_len as u32
        {
            return Err(CidError::LayoutWidth {
                server_id_len,
                node_bits,
                shard_bits,
            });
        }
        Ok(Self {
            // At most 15 (checked above).
            server_id_len: server_id_len as u8,
            node_bits,
            shard_bits,
        })
    }

    /// Server ID length in octets.
    pub fn server_id_len(&self) -> usize {
        usize::from(self.server_id_len)
    }

    /// Bits given to the node id.
    pub fn node_bits(&self) -> u32 {
        self.node_bits
    }

    /// Bits given to the shard id.
    pub fn shard_bits(&self) -> u32 {
        self.shard_bits
    }

    /// The server ID naming `owner`; an error if the node or shard id is too wide.
    pub fn pack(&self, owner: CidOwner) -> Result<ServerId, CidError> {
        if u128::from(owner.node) > mask(self.node_bits) {
            return Err(CidError::NodeOutOfRange {
                node: owner.node,
                bits: self.node_bits,
            });
        }
        if u128::from(owner.shard) > mask(self.shard_bits) {
            return Err(CidError::ShardOutOfRange {
                shard: owner.shard,
                bits: self.shard_bits,
            });
        }
        let value = (u128::from(owner.node) << self.shard_bits | u128::from(owner.shard))
            << self.padding_bits();
        let octets = value.to_be_bytes();
        Ok(ServerId::from_valid(
            &octets[octets.len() - self.server_id_len()..],
        ))
    }

    /// The owner `server_id` names; `None` if it has another length or nonzero unused bits.
    pub fn unpack(&self, server_id: &ServerId) -> Option<CidOwner> {
        let bytes = server_id.as_bytes();
        if bytes.len() != self.server_id_len() {
            return None;
        }
        let mut octets = [0u8; 16];
        octets[16 - bytes.len()..].copy_from_slice(bytes);
        let value = u128::from_be_bytes(octets);
        if value & mask(self.padding_bits()) != 0 {
            return None;
        }
        let value = value >> self.padding_bits();
        // Both fit: each is masked to at most 32 and 16 bits.
        Some(CidOwner {
            node: (value >> self.shard_bits & mask(self.node_bits)) as u32,
            shard: (value & mask(self.shard_bits)) as u16,
        })
    }

    /// Low bits of the server ID that belong to neither id.
    fn padding_bits(&self) -> u32 {
        8 * u32::from(self.server_id_len) - self.node_bits - self.shard_bits
    }
}

/// The `bits` low bits set; `bits` is at most 120.
fn mask(bits: u32) -> u128 {
    (1u128 << bits) - 1
}
