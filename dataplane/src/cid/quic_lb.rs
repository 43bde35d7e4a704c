//! QUIC-LB configurations: encoding a CID from a server ID and a nonce, and decoding one back
//! (draft-ietf-quic-load-balancers-21 §3 "First CID octet", §5 "Server ID Encoding in
//! Connection IDs").

use core::fmt;

use super::feistel::{Aes128Ecb, BLOCK_LEN, Block, FourPass};
use super::{CidError, MAX_CID_LEN, MAX_PLAINTEXT_LEN, NONCE_LEN, SERVER_ID_LEN};

/// The first octet's low five bits (§3.3): the length of the rest of the CID, or random bits.
const LOW_BITS: u8 = 0x1f;
/// Fewest random octets after the first octet of an unroutable CID (§3.2: "SHOULD be of at
/// least length 8").
const MIN_UNROUTABLE_RANDOM_LEN: usize = 7;

/// A config rotation codepoint: the first octet's three most significant bits (§3.1).
///
/// 0..=6; 0b111 is reserved for CIDs of servers with no active configuration (§3.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConfigId(u8);

impl ConfigId {
    /// The reserved codepoint of unroutable CIDs.
    pub const UNROUTABLE: u8 = 0b111;

    /// A codepoint for a configuration.
    ///
    /// §3.1: "A configuration MUST NOT use the reserved identifier 0b111".
    pub fn new(id: u8) -> Result<Self, CidError> {
        if id < Self::UNROUTABLE {
            Ok(Self(id))
        } else {
            Err(CidError::ConfigId(id))
        }
    }

    /// The codepoint a CID's first octet names; `None` for the reserved 0b111.
    pub fn of_first_octet(first_octet: u8) -> Option<Self> {
        Self::new(first_octet >> 5).ok()
    }

    /// The codepoint, 0..=6.
    pub fn value(self) -> u8 {
        self.0
    }
}

/// What the first octet's five low bits carry (§3.3 "Length Self-Description").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FirstOctetBits {
    /// The length of the CID after the first octet (so the CID length minus one).
    CidLength,
    /// Bits the caller chooses at random for each CID (§3.3: they SHOULD have no observable
    /// relationship to earlier CIDs of the connection).
    Random,
}

/// A QUIC-LB server ID: 1 to 15 octets.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ServerId {
    /// Octets past `len` are zero, so the derived comparisons are by value.
    bytes: [u8; 15],
    len: u8,
}

impl ServerId {
    /// A server ID of `bytes`; [`CidError::ServerIdLength`] unless 1 to 15 octets.
    pub fn new(bytes: &[u8]) -> Result<Self, CidError> {
        if !SERVER_ID_LEN.contains(&bytes.len()) {
            return Err(CidError::ServerIdLength(bytes.len()));
        }
        Ok(Self::from_valid(bytes))
    }

    /// `bytes` is 1 to 15 octets long.
    pub(crate) fn from_valid(bytes: &[u8]) -> Self {
        let mut id = Self {
            bytes: [0; 15],
            len: bytes.len() as u8,
        };
        id.bytes[..bytes.len()].copy_from_slice(bytes);
        id
    }

    /// The octets.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

impl fmt::Debug for ServerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ServerId(")?;
        for octet in self.as_bytes() {
            write!(f, "{octet:02x}")?;
        }
        write!(f, ")")
    }
}

/// A connection ID of up to 20 octets, held by value.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConnectionId {
    /// Octets past `len` are zero.
    bytes: [u8; MAX_CID_LEN],
    len: u8,
}

impl ConnectionId {
    /// An unroutable CID for a server with no active configuration: codepoint 0b111, the
    /// length self-encoded, then `random` (7 to 19 octets the caller drew at random).
    ///
    /// §3.2: such servers "MUST issue connection IDs with the reserved value of the three most
    /// significant bits set to 0b111" and "These connection IDs MUST self-encode their length";
    /// the CID "SHOULD be of at least length 8", which is enforced here.
    pub fn unroutable(random: &[u8]) -> Result<Self, CidError> {
        if !(MIN_UNROUTABLE_RANDOM_LEN..=MAX_PLAINTEXT_LEN).contains(&random.len()) {
            return Err(CidError::UnroutableLength(random.len()));
        }
        let mut cid = Self {
            bytes: [0; MAX_CID_LEN],
            len: 1 + random.len() as u8,
        };
        cid.bytes[0] = ConfigId::UNROUTABLE << 5 | random.len() as u8;
        cid.bytes[1..=random.len()].copy_from_slice(random);
        Ok(cid)
    }

    /// A CID of the given octets (1 to 20: the caller checked); used to append octets
    /// after a nonce ([`super::EncryptedCids`]).
    pub(super) fn from_valid(octets: &[u8]) -> Self {
        let mut cid = Self {
            bytes: [0; MAX_CID_LEN],
            len: octets.len() as u8,
        };
        cid.bytes[..octets.len()].copy_from_slice(octets);
        cid
    }

    /// The octets, first octet included.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }

    /// The config rotation codepoint of the first octet; `None` for an unroutable CID.
    pub fn config_id(&self) -> Option<ConfigId> {
        ConfigId::of_first_octet(self.bytes[0])
    }
}

impl fmt::Debug for ConnectionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ConnectionId(")?;
        for octet in self.as_bytes() {
            write!(f, "{octet:02x}")?;
        }
        write!(f, ")")
    }
}

/// What a decoded CID carried: its configuration, server ID and nonce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CidPlaintext {
    config_id: ConfigId,
    bytes: [u8; MAX_PLAINTEXT_LEN],
    server_id_len: u8,
    nonce_len: u8,
}

impl CidPlaintext {
    /// The configuration the CID was decoded with.
    pub fn config_id(&self) -> ConfigId {
        self.config_id
    }

    /// The server ID.
    pub fn server_id(&self) -> ServerId {
        ServerId::from_valid(&self.bytes[..usize::from(self.server_id_len)])
    }

    /// The nonce.
    pub fn nonce(&self) -> &[u8] {
        let start = usize::from(self.server_id_len);
        &self.bytes[start..start + usize::from(self.nonce_len)]
    }
}

/// How the server ID and nonce are protected.
enum Cipher {
    /// No key: the CID shows them as they are.
    Plaintext,
    /// Server ID and nonce are exactly one AES block (§5.4.1).
    SinglePass(Aes128Ecb),
    /// Any other length: the four-pass Feistel network (§5.4.2).
    FourPass(Aes128Ecb),
}

/// One QUIC-LB configuration: codepoint, server ID and nonce lengths, what the first octet's
/// low bits carry, and an optional AES-128 key.
///
/// Encodes the CIDs a server issues and decodes CIDs back to their server ID (what a load
/// balancer, or a shard receiving a misdelivered record, does per packet). Not `Clone`; key
/// schedules live in aws-lc and are cleared when dropped. `Debug` shows no key material.
pub struct QuicLbConfig {
    config_id: ConfigId,
    server_id_len: u8,
    nonce_len: u8,
    first_octet: FirstOctetBits,
    cipher: Cipher,
}

impl QuicLbConfig {
    /// A configuration without a key: server ID and nonce appear in the CID as they are.
    ///
    /// §5.3: "failure to define a key means that observers can determine the assigned server of
    /// any connection".
    pub fn plaintext(
        config_id: ConfigId,
        server_id_len: usize,
        nonce_len: usize,
        first_octet: FirstOctetBits,
    ) -> Result<Self, CidError> {
        Self::build(config_id, server_id_len, nonce_len, first_octet, None)
    }

    /// A configuration with a 16-octet AES-128 key: single-pass encryption when server ID and
    /// nonce add up to 16 octets, the four-pass Feistel network otherwise.
    pub fn encrypted(
        config_id: ConfigId,
        server_id_len: usize,
        nonce_len: usize,
        first_octet: FirstOctetBits,
        key: &[u8; 16],
    ) -> Result<Self, CidError> {
        Self::build(config_id, server_id_len, nonce_len, first_octet, Some(key))
    }

    fn build(
        config_id: ConfigId,
        server_id_len: usize,
        nonce_len: usize,
        first_octet: FirstOctetBits,
        key: Option<&[u8; 16]>,
    ) -> Result<Self, CidError> {
        // §5.3: "The nonce length MUST be at least 4 octets. The server ID length MUST be at
        // least 1 octet." and "the server ID and nonce lengths MUST sum to 19 octets or less".
        if !SERVER_ID_LEN.contains(&server_id_len) {
            return Err(CidError::ServerIdLength(server_id_len));
        }
        if !NONCE_LEN.contains(&nonce_len) {
            return Err(CidError::NonceLength(nonce_len));
        }
        let plaintext_len = server_id_len + nonce_len;
        if plaintext_len > MAX_PLAINTEXT_LEN {
            return Err(CidError::PlaintextLength {
                server_id_len,
                nonce_len,
            });
        }
        let cipher = match key {
            None => Cipher::Plaintext,
            // §5.4.1: "When the nonce length and server ID length sum to exactly 16 octets, the
            // server MUST use a single-pass encryption algorithm."
            Some(key) if plaintext_len == BLOCK_LEN => Cipher::SinglePass(Aes128Ecb::new(key)?),
            // §5.4.2: with any other sum "the server MUST follow the algorith below".
            Some(key) => Cipher::FourPass(Aes128Ecb::new(key)?),
        };
        Ok(Self {
            config_id,
            // Both are at most 18 (checked above).
            server_id_len: server_id_len as u8,
            nonce_len: nonce_len as u8,
            first_octet,
            cipher,
        })
    }

    /// The config rotation codepoint.
    pub fn config_id(&self) -> ConfigId {
        self.config_id
    }

    /// Server ID length in octets.
    pub fn server_id_len(&self) -> usize {
        usize::from(self.server_id_len)
    }

    /// Nonce length in octets.
    pub fn nonce_len(&self) -> usize {
        usize::from(self.nonce_len)
    }

    /// The length of every CID this configuration issues: first octet, server ID, nonce.
    pub fn cid_len(&self) -> usize {
        1 + self.plaintext_len()
    }

    /// Whether the configuration has a key.
    pub fn is_encrypted(&self) -> bool {
        !matches!(self.cipher, Cipher::Plaintext)
    }

    fn plaintext_len(&self) -> usize {
        usize::from(self.server_id_len) + usize::from(self.nonce_len)
    }

    /// Builds the CID for `server_id` and `nonce` (each exactly the configured length).
    ///
    /// `random_bits` fills the first octet's low five bits under [`FirstOctetBits::Random`]
    /// and is ignored under [`FirstOctetBits::CidLength`]. The nonce comes from the caller:
    /// §9.6 says a server "MUST NOT reuse a nonce until it switches to a configuration with
    /// new keys", and without a key the nonce must look unrelated to earlier ones (§5.4).
    pub fn encode(
        &self,
        server_id: &[u8],
        nonce: &[u8],
        random_bits: u8,
    ) -> Result<ConnectionId, CidError> {
        if server_id.len() != self.server_id_len() {
            return Err(CidError::WrongServerIdLength {
                expected: self.server_id_len(),
                got: server_id.len(),
            });
        }
        if nonce.len() != self.nonce_len() {
            return Err(CidError::WrongNonceLength {
                expected: self.nonce_len(),
                got: nonce.len(),
            });
        }
        let len = self.plaintext_len();
        let mut cid = ConnectionId {
            bytes: [0; MAX_CID_LEN],
            len: 1 + len as u8,
        };
        // §3.1: "The first three bits of any connection ID MUST encode an identifier for the
        // configuration that the connection ID uses."
        let low_bits = match self.first_octet {
            FirstOctetBits::CidLength => len as u8,
            FirstOctetBits::Random => random_bits & LOW_BITS,
        };
        cid.bytes[0] = self.config_id.0 << 5 | low_bits;
        let block = &mut cid.bytes[1..=len];
        block[..server_id.len()].copy_from_slice(server_id);
        block[server_id.len()..].copy_from_slice(nonce);
        match &self.cipher {
            Cipher::Plaintext => {}
            Cipher::SinglePass(aes) => aes.encrypt_block(as_block(block)),
            Cipher::FourPass(aes) => FourPass::new(len).encrypt(aes, block),
        }
        Ok(cid)
    }

    /// The server ID and nonce of `cid`, or `None` when this configuration cannot route it.
    ///
    /// `cid` starts at the first octet; octets past [`Self::cid_len`] are ignored (§5.5: the
    /// load balancer reads consecutive octets from the second). `None` when the first octet
    /// names another codepoint, when `cid` is too short, or when the configuration
    /// self-encodes lengths and the first octet claims fewer octets than the configuration
    /// needs (§4.1 allows that check). Never allocates, never panics.
    pub fn decode(&self, cid: &[u8]) -> Option<CidPlaintext> {
        let ciphertext = self.routable_block(cid)?;
        let len = ciphertext.len();
        let mut plaintext = CidPlaintext {
            config_id: self.config_id,
            bytes: [0; MAX_PLAINTEXT_LEN],
            server_id_len: self.server_id_len,
            nonce_len: self.nonce_len,
        };
        let block = &mut plaintext.bytes[..len];
        block.copy_from_slice(ciphertext);
        match &self.cipher {
            Cipher::Plaintext => {}
            // §5.5.1: the 16 octets are one ciphertext block.
            Cipher::SinglePass(aes) => aes.decrypt_block(as_block(block)),
            Cipher::FourPass(aes) => FourPass::new(len).decrypt(aes, block),
        }
        Some(plaintext)
    }

    /// The server ID of `cid` alone, or `None` as for [`Self::decode`]. With four-pass
    /// encryption this takes three AES operations instead of four when the nonce is at least
    /// as long as the server ID (§5.5.2).
    pub fn decode_server_id(&self, cid: &[u8]) -> Option<ServerId> {
        let ciphertext = self.routable_block(cid)?;
        let sid_len = self.server_id_len();
        let mut server_id = ServerId {
            bytes: [0; 15],
            len: self.server_id_len,
        };
        match &self.cipher {
            Cipher::Plaintext => server_id.bytes[..sid_len].copy_from_slice(&ciphertext[..sid_len]),
            Cipher::SinglePass(aes) => {
                let mut block: Block = [0; BLOCK_LEN];
                block.copy_from_slice(ciphertext);
                aes.decrypt_block(&mut block);
                server_id.bytes[..sid_len].copy_from_slice(&block[..sid_len]);
            }
            Cipher::FourPass(aes) => FourPass::new(ciphertext.len()).decrypt_server_id(
                aes,
                ciphertext,
                &mut server_id.bytes[..sid_len],
            ),
        }
        Some(server_id)
    }

    /// The server ID and nonce octets of `cid` if this configuration can route it (§4.1).
    fn routable_block<'a>(&self, cid: &'a [u8]) -> Option<&'a [u8]> {
        let (&first_octet, rest) = cid.split_first()?;
        if ConfigId::of_first_octet(first_octet) != Some(self.config_id) {
            return None;
        }
        let len = self.plaintext_len();
        if self.first_octet == FirstOctetBits::CidLength
            && usize::from(first_octet & LOW_BITS) < len
        {
            return None;
        }
        rest.get(..len)
    }
}

impl fmt::Debug for QuicLbConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mode = match self.cipher {
            Cipher::Plaintext => "plaintext",
            Cipher::SinglePass(_) => "single-pass AES-128",
            Cipher::FourPass(_) => "four-pass AES-128",
        };
        f.debug_struct("QuicLbConfig")
            .field("config_id", &self.config_id.0)
            .field("server_id_len", &self.server_id_len)
            .field("nonce_len", &self.nonce_len)
            .field("first_octet", &self.first_octet)
            .field("mode", &mode)
            .finish_non_exhaustive()
    }
}

/// A 16-octet slice as an AES block; only called where the plaintext length is 16.
fn as_block(block: &mut [u8]) -> &mut Block {
    block
        .try_into()
        .expect("single-pass configurations have 16 octets of server ID and nonce")
}

/// The configurations in use, at most one per codepoint: a CID's first octet picks which
/// decodes it (§3.1), as a load balancer does during a configuration rotation.
#[derive(Debug, Default)]
pub struct QuicLbConfigs {
    slots: [Option<QuicLbConfig>; 7],
}

impl QuicLbConfigs {
    /// No configurations: every CID is unroutable.
    pub fn new() -> Self {
        Self::default()
    }

    /// Installs `config` at its codepoint, returning the configuration it replaces.
    pub fn insert(&mut self, config: QuicLbConfig) -> Option<QuicLbConfig> {
        let slot = usize::from(config.config_id.0);
        self.slots[slot].replace(config)
    }

    /// Removes the configuration at `config_id`.
    pub fn remove(&mut self, config_id: ConfigId) -> Option<QuicLbConfig> {
        self.slots[usize::from(config_id.0)].take()
    }

    /// The configuration at `config_id`.
    pub fn get(&self, config_id: ConfigId) -> Option<&QuicLbConfig> {
        self.slots[usize::from(config_id.0)].as_ref()
    }

    /// The configuration `cid`'s first octet names; `None` for 0b111, an empty codepoint or an
    /// empty `cid`.
    pub fn config_of(&self, cid: &[u8]) -> Option<&QuicLbConfig> {
        self.get(ConfigId::of_first_octet(*cid.first()?)?)
    }

    /// [`QuicLbConfig::decode`] with the configuration `cid` names.
    pub fn decode(&self, cid: &[u8]) -> Option<CidPlaintext> {
        self.config_of(cid)?.decode(cid)
    }

    /// [`QuicLbConfig::decode_server_id`] with the configuration `cid` names.
    pub fn decode_server_id(&self, cid: &[u8]) -> Option<(ConfigId, ServerId)> {
        let config = self.config_of(cid)?;
        Some((config.config_id, config.decode_server_id(cid)?))
    }
}
