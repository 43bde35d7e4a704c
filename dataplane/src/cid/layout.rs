//! Our server IDs: the node and the shard that own a session, packed into QUIC-LB server ID
//! octets so that a CID names both.

use std::sync::Arc;

use super::{CidError, EncryptedCids, SERVER_ID_LEN, ServerId};

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

/// Where the shard id sits in a plaintext QUIC-LB CID of one length, for whoever must find
/// a record's owning shard from its bytes alone: the shard's CID lookup on a miss, and the
/// in-host steering program (`dtls_io::CidSteering`) that reads the same bits in the
/// kernel.
///
/// A plaintext CID (draft-ietf-quic-load-balancers-21 §5.2) is the first octet, then the
/// server ID in clear, then the nonce; a [`ServerIdLayout`] puts the shard id
/// `node_bits` into the server ID. The first octet must equal [`ShardField::first_octet`]
/// (the configuration's codepoint and, with [`super::FirstOctetBits::CidLength`], the
/// length): another codepoint or length is not a CID this field describes.
///
/// With encrypted CIDs ([`ShardField::encrypted`]) the shard id is the plaintext octet
/// after the nonce, the node id is read by decrypting the server ID, and a CID under any
/// codepoint whose key is installed is ours (the first octet the steering program matches
/// is the codepoint that issued when the field was made).
#[derive(Debug, Clone)]
pub struct ShardField {
    cid_len: u8,
    first_octet: u8,
    bit_offset: u32,
    bits: u32,
    /// Width of the node id, which starts at the server ID's first bit (bit 8).
    node_bits: u32,
    /// The keys of encrypted CIDs.
    keyed: Option<Arc<EncryptedCids>>,
}

impl PartialEq for ShardField {
    fn eq(&self, other: &Self) -> bool {
        let keys_eq = match (&self.keyed, &other.keyed) {
            (None, None) => true,
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            _ => false,
        };
        keys_eq
            && (
                self.cid_len,
                self.first_octet,
                self.bit_offset,
                self.bits,
                self.node_bits,
            ) == (
                other.cid_len,
                other.first_octet,
                other.bit_offset,
                other.bits,
                other.node_bits,
            )
    }
}

impl Eq for ShardField {}

impl ShardField {
    /// The shard field of `cid_len`-octet plaintext CIDs of configuration `config` whose
    /// first octet's low bits carry the length; `None` when the layout has no shard bits or
    /// `cid_len` cannot hold the first octet, the server ID and the draft's 4-octet
    /// minimum nonce (such CIDs are random, naming no shard).
    pub fn plaintext_with_length(
        config: super::ConfigId,
        layout: ServerIdLayout,
        cid_len: usize,
    ) -> Option<Self> {
        let min = 1 + layout.server_id_len() + *super::NONCE_LEN.start();
        if layout.shard_bits == 0 || cid_len < min || cid_len > super::MAX_CID_LEN {
            return None;
        }
        // cid_len is 7..=20 (checked above): the length of the rest fits the 5 low bits.
        let first_octet = config.value() << 5 | (cid_len - 1) as u8;
        Some(Self {
            cid_len: cid_len as u8,
            first_octet,
            bit_offset: 8 + layout.node_bits,
            bits: layout.shard_bits,
            node_bits: layout.node_bits,
            keyed: None,
        })
    }

    /// The shard field of the encrypted CIDs `cids` issues: the last octet, in clear.
    /// `None` when the layout has no shard bits (one shard per node).
    pub fn encrypted(cids: Arc<EncryptedCids>) -> Option<Self> {
        let layout = cids.layout();
        if layout.shard_bits == 0 {
            return None;
        }
        // 8..=20 octets (EncryptedCids::new checked).
        let cid_len = cids.cid_len() as u8;
        Some(Self {
            cid_len,
            first_octet: cids.first_octet(cids.current()),
            bit_offset: 8 * (u32::from(cid_len) - 1),
            bits: 8,
            node_bits: layout.node_bits,
            keyed: Some(cids),
        })
    }

    /// The CID length in octets.
    pub fn cid_len(&self) -> usize {
        usize::from(self.cid_len)
    }

    /// The first octet every CID of this field starts with (encrypted CIDs: under the
    /// codepoint current when the field was made; CIDs of any installed key are ours, see
    /// [`ShardField::is_encrypted`]).
    pub fn first_octet(&self) -> u8 {
        self.first_octet
    }

    /// Whether the CIDs are encrypted ([`ShardField::encrypted`]): their keys, and so
    /// their codepoint, rotate at run time, so whoever matches the first octet must accept
    /// the length under any codepoint.
    pub fn is_encrypted(&self) -> bool {
        self.keyed.is_some()
    }

    /// The shard id's first bit, counted from the CID's most significant bit (so 8 is the
    /// first bit of the server ID).
    pub fn bit_offset(&self) -> u32 {
        self.bit_offset
    }

    /// The shard id's width in bits (1..=16).
    pub fn bits(&self) -> u32 {
        self.bits
    }

    /// The shard `cid` names: `None` unless it is `cid_len` octets (or more: the caller may
    /// pass the rest of a record) starting with [`ShardField::first_octet`].
    pub fn shard_of(&self, cid: &[u8]) -> Option<u16> {
        let cid = self.ours(cid)?;
        // At most 16 bits (`bits` is 1..=16).
        Some(read_bits(cid, self.bit_offset, self.bits) as u16)
    }

    /// The node `cid` names (the server ID's first `node_bits` bits): `None` as for
    /// [`ShardField::shard_of`], or when the layout has no node bits (every CID is this
    /// node's then).
    pub fn node_of(&self, cid: &[u8]) -> Option<u32> {
        if let Some(keyed) = &self.keyed {
            // The node id is encrypted: decrypt (only records that missed their shard's
            // CID table get here).
            return (self.node_bits > 0)
                .then(|| keyed.owner_of(cid).map(|owner| owner.node))
                .flatten();
        }
        let cid = self.ours(cid)?;
        (self.node_bits > 0).then(|| {
            // A node id of up to 32 bits spans up to 5 octets: read it in two halves.
            let high = self.node_bits.saturating_sub(16);
            let low = self.node_bits - high;
            let mut node = 0u32;
            if high > 0 {
                node = read_bits(cid, 8, high) << low;
            }
            node | read_bits(cid, 8 + high, low)
        })
    }

    /// The CID's first `cid_len` octets when it starts with our first octet.
    fn ours<'a>(&self, cid: &'a [u8]) -> Option<&'a [u8]> {
        let cid = cid.get(..self.cid_len())?;
        let ours = match &self.keyed {
            // Any codepoint with an installed key: CIDs of the previous key still route
            // during a rotation.
            Some(keyed) => keyed.knows(cid[0]),
            None => cid[0] == self.first_octet,
        };
        ours.then_some(cid)
    }
}

/// `bits` (1..=16) bits of `cid` from bit `offset` (counted from the most significant bit
/// of octet 0); zeros past the CID's end.
fn read_bits(cid: &[u8], offset: u32, bits: u32) -> u32 {
    // The field spans at most 3 octets (16 bits at any bit offset); read 4 from its first
    // octet, big-endian.
    let start = (offset / 8) as usize;
    let mut word = [0u8; 4];
    for (w, b) in word.iter_mut().zip(cid.get(start..).unwrap_or_default()) {
        *w = *b;
    }
    let word = u32::from_be_bytes(word);
    let shift = 32 - offset % 8 - bits;
    word >> shift & ((1u32 << bits) - 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cid::{ConfigId, FirstOctetBits, QuicLbConfig};

    #[test]
    fn shard_field_reads_what_pack_wrote() {
        // (server ID octets, node bits, shard bits): byte-aligned, unaligned, and a field
        // spanning three octets.
        for (sid_len, node_bits, shard_bits) in [(2, 8, 8), (3, 5, 11), (3, 7, 16), (1, 0, 3)] {
            let layout = ServerIdLayout::new(sid_len, node_bits, shard_bits).expect("layout");
            let id = ConfigId::new(2).expect("id");
            let cid_len = 1 + sid_len + 5;
            let field = ShardField::plaintext_with_length(id, layout, cid_len).expect("fits");
            let config =
                QuicLbConfig::plaintext(id, sid_len, 5, FirstOctetBits::CidLength).expect("config");
            let max_shard = ((1u32 << shard_bits) - 1) as u16;
            for shard in [0, 1, max_shard / 3, max_shard] {
                let node = if node_bits == 0 { 0 } else { 1 };
                let sid = layout.pack(CidOwner { node, shard }).expect("pack");
                let cid = config
                    .encode(sid.as_bytes(), &[0xff; 5], 0)
                    .expect("encode");
                assert_eq!(cid.as_bytes()[0], field.first_octet());
                assert_eq!(field.shard_of(cid.as_bytes()), Some(shard), "{layout:?}");
                let named = (node_bits > 0).then_some(node);
                assert_eq!(field.node_of(cid.as_bytes()), named, "{layout:?}");
            }
        }
    }

    #[test]
    fn shard_field_refuses_what_it_does_not_describe() {
        let layout = ServerIdLayout::new(2, 8, 8).expect("layout");
        let id = ConfigId::new(0).expect("id");
        // Too short for the nonce, or no shard bits: no field.
        assert_eq!(ShardField::plaintext_with_length(id, layout, 6), None);
        let no_shard = ServerIdLayout::new(2, 8, 0).expect("layout");
        assert_eq!(ShardField::plaintext_with_length(id, no_shard, 8), None);
        let field = ShardField::plaintext_with_length(id, layout, 8).expect("fits");
        assert_eq!(field.first_octet(), 7);
        assert_eq!(field.shard_of(&[7, 0, 5, 1, 1, 1, 1, 1]), Some(5));
        // Another codepoint, another length, or too few octets: not ours to read.
        assert_eq!(field.shard_of(&[0x27, 0, 5, 1, 1, 1, 1, 1]), None);
        assert_eq!(field.shard_of(&[8, 0, 5, 1, 1, 1, 1, 1, 1]), None);
        assert_eq!(field.shard_of(&[7, 0, 5]), None);
    }
}
