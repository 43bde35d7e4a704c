//! The AES-128 block cipher and the four-pass Feistel network of QUIC-LB
//! (draft-ietf-quic-load-balancers-21 §5.4.2 "General Case: Four-Pass Encryption",
//! §5.5.2 for the load balancer's side).
//!
//! AES comes from aws-lc-rs: `aws_lc_rs::cipher::EncryptingKey::ecb` and
//! `DecryptingKey::ecb` over `AES_128`, always called on exactly one 16-octet block (ECB mode
//! takes no IV, so neither call touches an RNG or the heap). Every buffer here is a fixed-size
//! array on the stack.

use aws_lc_rs::cipher::{
    AES_128, DecryptingKey, DecryptionContext, EncryptingKey, UnboundCipherKey,
};

use super::{CidError, MAX_PLAINTEXT_LEN};

/// One AES block.
pub(crate) const BLOCK_LEN: usize = 16;
/// The longest half of a plaintext block: 19 octets split into halves of 10 (the middle octet
/// shared).
const MAX_HALF_LEN: usize = MAX_PLAINTEXT_LEN.div_ceil(2);

/// An AES block.
pub(crate) type Block = [u8; BLOCK_LEN];
/// One half of a four-pass plaintext or ciphertext; only the first `half_len` octets are used.
type Half = [u8; MAX_HALF_LEN];

/// AES-128 in ECB mode, one block at a time (§5.4: "Encryption below uses the AES-128-ECB
/// cipher").
///
/// Not `Clone`; aws-lc clears the expanded key schedules when they are dropped.
pub(crate) struct Aes128Ecb {
    encrypt: EncryptingKey,
    decrypt: DecryptingKey,
}

impl Aes128Ecb {
    pub(crate) fn new(key: &[u8; 16]) -> Result<Self, CidError> {
        let unbound = || UnboundCipherKey::new(&AES_128, key).map_err(|_| CidError::KeyRejected);
        Ok(Self {
            encrypt: EncryptingKey::ecb(unbound()?).map_err(|_| CidError::KeyRejected)?,
            decrypt: DecryptingKey::ecb(unbound()?).map_err(|_| CidError::KeyRejected)?,
        })
    }

    pub(crate) fn encrypt_block(&self, block: &mut Block) {
        // ECB fails only on a length that is not a whole number of blocks or on an IV context;
        // this is exactly one block and `encrypt` builds the (empty) ECB context itself.
        self.encrypt
            .encrypt(block)
            .expect("one 16-octet block is valid AES-ECB input");
    }

    pub(crate) fn decrypt_block(&self, block: &mut Block) {
        self.decrypt
            .decrypt(block, DecryptionContext::None)
            .expect("one 16-octet block with no IV is valid AES-ECB input");
    }
}

/// The lengths that shape the four-pass network for one plaintext length.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FourPass {
    /// Server ID plus nonce length, 5..=19 (never 16, which is the single-pass case).
    len: usize,
    /// `half_len`: half of `len`, rounded up (§5.4.2.2).
    half: usize,
    odd: bool,
}

impl FourPass {
    /// The network for `len` octets of server ID and nonce; `len` is in 5..=19.
    pub(crate) fn new(len: usize) -> Self {
        debug_assert!((5..=MAX_PLAINTEXT_LEN).contains(&len));
        Self {
            len,
            half: len.div_ceil(2),
            odd: len % 2 == 1,
        }
    }

    /// §5.4.2.3 step 12: left_2 and right_2 form the ciphertext, in place of `block`.
    pub(crate) fn encrypt(self, aes: &Aes128Ecb, block: &mut [u8]) {
        let (mut left, mut right) = self.split(block);
        // Steps 3 to 11: right_1, left_1, right_2, left_2.
        self.pass(aes, 1, &left, &mut right);
        self.pass(aes, 2, &right, &mut left);
        self.pass(aes, 3, &left, &mut right);
        self.pass(aes, 4, &right, &mut left);
        self.join(&left, &right, block);
    }

    /// §5.5.2: the four passes in reverse, recovering server ID and nonce in place of `block`.
    /// (The draft's pseudocode clears the first nibble of left_1 after computing right_1; the
    /// right half is meant, as in §5.4.2.3 step 9, and is what is cleared here.)
    pub(crate) fn decrypt(self, aes: &Aes128Ecb, block: &mut [u8]) {
        let (mut left, mut right) = self.split(block);
        self.pass(aes, 4, &right, &mut left);
        self.pass(aes, 3, &left, &mut right);
        self.pass(aes, 2, &right, &mut left);
        self.pass(aes, 1, &left, &mut right);
        self.join(&left, &right, block);
    }

    /// §5.5.2: the server ID alone. Three passes suffice when it lies in the whole octets of
    /// left_0 ("the nonce is at least as large as the server ID"); a fourth otherwise.
    pub(crate) fn decrypt_server_id(self, aes: &Aes128Ecb, block: &[u8], out: &mut [u8]) {
        let (mut left, mut right) = self.split(block);
        self.pass(aes, 4, &right, &mut left);
        self.pass(aes, 3, &left, &mut right);
        self.pass(aes, 2, &right, &mut left);
        if out.len() <= self.len / 2 {
            out.copy_from_slice(&left[..out.len()]);
        } else {
            self.pass(aes, 1, &left, &mut right);
            let mut joined = [0u8; MAX_PLAINTEXT_LEN];
            self.join(&left, &right, &mut joined[..self.len]);
            out.copy_from_slice(&joined[..out.len()]);
        }
    }

    /// §5.4.2.3 step 2: the first and last `half_len` octets; for an odd length the middle
    /// octet goes to both, left keeping its high nibble and right its low nibble.
    fn split(self, block: &[u8]) -> (Half, Half) {
        let (mut left, mut right) = ([0u8; MAX_HALF_LEN], [0u8; MAX_HALF_LEN]);
        left[..self.half].copy_from_slice(&block[..self.half]);
        right[..self.half].copy_from_slice(&block[self.len - self.half..self.len]);
        if self.odd {
            left[self.half - 1] &= 0xf0;
            right[0] &= 0x0f;
        }
        (left, right)
    }

    /// §5.4.2.3 step 12: the halves concatenated; for an odd length the middle octet is the
    /// left's high nibble and the right's low nibble (the other nibbles are zero).
    fn join(self, left: &Half, right: &Half, block: &mut [u8]) {
        block[..self.half].copy_from_slice(&left[..self.half]);
        if self.odd {
            block[self.half - 1] |= right[0];
            block[self.half..self.len].copy_from_slice(&right[1..self.half]);
        } else {
            block[self.half..self.len].copy_from_slice(&right[..self.half]);
        }
    }

    /// One pass (§5.4.2.3 steps 3 and 4): `into ^= truncate(AES(expand(len, pass, from)),
    /// half_len)`. Odd passes produce a right half, even passes a left half; for an odd length
    /// the nibble the other half owns is then cleared (steps 5, 7, 9, 11).
    fn pass(self, aes: &Aes128Ecb, pass: u8, from: &Half, into: &mut Half) {
        let mut block = expand(self.len, pass, &from[..self.half]);
        aes.encrypt_block(&mut block);
        for (octet, mask) in into[..self.half].iter_mut().zip(&block) {
            *octet ^= mask;
        }
        if self.odd {
            if pass % 2 == 1 {
                into[0] &= 0x0f;
            } else {
                into[self.half - 1] &= 0xf0;
            }
        }
    }
}

/// §5.4.2.2 expand(length, pass, input_bytes): the input in the most significant octets, zero
/// padding, then `length` as the fifteenth octet and `pass` as the sixteenth.
fn expand(len: usize, pass: u8, input: &[u8]) -> Block {
    let mut block = [0u8; BLOCK_LEN];
    block[..input.len()].copy_from_slice(input);
    // `len` is at most 19 (checked when the configuration was built).
    block[14] = len as u8;
    block[15] = pass;
    block
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("test hex"))
            .collect()
    }

    /// §5.4.2.2's expand example.
    #[test]
    fn expand_matches_the_draft_example() {
        assert_eq!(
            expand(6, 2, &hex("aaba3c")).to_vec(),
            hex("aaba3c00000000000000000000000602")
        );
    }

    /// §5.4.2.3 step 2's split example: 0x7040b81b55ccf3 into 0x7040b810 and 0x0b55ccf3.
    #[test]
    fn split_of_an_odd_length_shares_the_middle_octet() {
        let shape = FourPass::new(7);
        let (left, right) = shape.split(&hex("7040b81b55ccf3"));
        assert_eq!(left[..4], hex("7040b810")[..]);
        assert_eq!(right[..4], hex("0b55ccf3")[..]);
        let mut joined = [0u8; 7];
        shape.join(&left, &right, &mut joined);
        assert_eq!(joined[..], hex("7040b81b55ccf3")[..]);
    }

    /// Every intermediate value of §5.4.2.4's encryption example. The draft's step 10 line
    /// `left_1 ^ 0xb3e4357c` misquotes its own AES output (0xb334357c); the result it gives,
    /// 0x67947d2c, is the XOR with the AES output, which is what is checked here.
    #[test]
    fn encryption_example_step_by_step() {
        let key: [u8; 16] = hex("fdf726a9893ec05c0632d3956680baf0")
            .try_into()
            .expect("16 octets");
        let aes = Aes128Ecb::new(&key).expect("key");
        let shape = FourPass::new(7);

        let (mut left, mut right) = shape.split(&hex("31441a9c69c275"));
        assert_eq!(left[..4], hex("31441a90")[..]);
        assert_eq!(right[..4], hex("0c69c275")[..]);

        let mut block = expand(7, 1, &left[..4]);
        assert_eq!(block.to_vec(), hex("31441a90000000000000000000000701"));
        aes.encrypt_block(&mut block);
        assert_eq!(block.to_vec(), hex("a255dd8cdacf01948d3a848c3c7fee23"));

        shape.pass(&aes, 1, &left, &mut right);
        assert_eq!(right[..4], hex("0e3c1ff9")[..]);
        shape.pass(&aes, 2, &right, &mut left);
        assert_eq!(left[..4], hex("d4a04850")[..]);
        shape.pass(&aes, 3, &left, &mut right);
        assert_eq!(right[..4], hex("09be054a")[..]);
        shape.pass(&aes, 4, &right, &mut left);
        assert_eq!(left[..4], hex("67947d20")[..]);

        let mut step10 = expand(7, 4, &hex("09be054a"));
        aes.encrypt_block(&mut step10);
        assert_eq!(step10.to_vec(), hex("b334357cfdf81e3fafe180154eaf7378"));

        let mut cid = hex("31441a9c69c275");
        shape.encrypt(&aes, &mut cid);
        assert_eq!(cid, hex("67947d29be054a"));
        shape.decrypt(&aes, &mut cid);
        assert_eq!(cid, hex("31441a9c69c275"));
        let mut server_id = [0u8; 3];
        shape.decrypt_server_id(&aes, &hex("67947d29be054a"), &mut server_id);
        assert_eq!(server_id[..], hex("31441a")[..]);
    }

    #[test]
    fn single_block_decrypt_inverts_encrypt() {
        let aes = Aes128Ecb::new(&[0x42; 16]).expect("key");
        let mut block = *b"sixteen octets!!";
        aes.encrypt_block(&mut block);
        assert_ne!(&block, b"sixteen octets!!");
        aes.decrypt_block(&mut block);
        assert_eq!(&block, b"sixteen octets!!");
    }

    /// The server-ID-only decryption agrees with the full one for every length, whether it
    /// stops after three passes or needs the fourth.
    #[test]
    fn server_id_shortcut_agrees_with_full_decryption() {
        let aes = Aes128Ecb::new(&[0x17; 16]).expect("key");
        for len in (5..=MAX_PLAINTEXT_LEN).filter(|&l| l != BLOCK_LEN) {
            let shape = FourPass::new(len);
            let ciphertext: Vec<u8> = (0..len as u8).map(|i| i.wrapping_mul(37) ^ 0xa5).collect();
            let mut plaintext = ciphertext.clone();
            shape.decrypt(&aes, &mut plaintext);
            for sid_len in 1..=len - 4 {
                let mut sid = vec![0u8; sid_len];
                shape.decrypt_server_id(&aes, &ciphertext, &mut sid);
                assert_eq!(sid[..], plaintext[..sid_len], "len {len} sid {sid_len}");
            }
            let mut again = plaintext.clone();
            shape.encrypt(&aes, &mut again);
            assert_eq!(again, ciphertext, "len {len}");
        }
    }
}
