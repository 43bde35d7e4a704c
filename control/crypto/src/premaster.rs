//! Premaster secrets: ECDHE shared secrets and the PSK constructions.

use std::fmt;

use zeroize::Zeroizing;

use crate::Error;

/// Longest PSK accepted. RFC 4279 §5.3: implementations "MUST support ... arbitrary PSKs
/// up to 64 octets in length"; 512 leaves room and bounds the premaster secret's size.
pub const MAX_PSK_LEN: usize = 512;

/// A premaster secret: the raw ECDH shared secret `Z`, or a PSK-derived value. Zeroized on
/// drop, not `Clone`, `Debug` shows only the length.
pub struct PremasterSecret {
    bytes: Zeroizing<Vec<u8>>,
}

impl fmt::Debug for PremasterSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PremasterSecret(<{} bytes redacted>)", self.bytes.len())
    }
}

impl PremasterSecret {
    /// Wraps an ECDH shared secret (the x-coordinate for NIST curves, RFC 8422 §5.10; the
    /// X25519 output, RFC 8422 §5.11).
    pub(crate) fn from_shared_secret(z: &[u8]) -> Self {
        Self {
            bytes: Zeroizing::new(z.to_vec()),
        }
    }

    /// Plain PSK (RFC 4279 §2): "the premaster secret is formed as follows: if the PSK is N
    /// octets long, concatenate a uint16 with the value N, N zero octets, a second uint16 with
    /// the value N, and the PSK itself."
    ///
    /// # Errors
    /// [`Error::InvalidPskLength`] when the PSK is empty or longer than [`MAX_PSK_LEN`].
    pub fn psk(psk: &[u8]) -> Result<Self, Error> {
        let n = psk_len(psk)?;
        let mut bytes = Zeroizing::new(Vec::with_capacity(4 + 2 * psk.len()));
        bytes.extend_from_slice(&n.to_be_bytes());
        bytes.resize(2 + psk.len(), 0);
        bytes.extend_from_slice(&n.to_be_bytes());
        bytes.extend_from_slice(psk);
        Ok(Self { bytes })
    }

    /// ECDHE_PSK (RFC 5489 §2): "other_secret" is the ECDH shared secret `Z`, and the
    /// premaster secret is `uint16 len(Z) ‖ Z ‖ uint16 len(psk) ‖ psk` (the RFC 4279 §2
    /// structure with `other_secret = Z`).
    ///
    /// # Errors
    /// [`Error::InvalidPskLength`] when the PSK is empty or longer than [`MAX_PSK_LEN`].
    pub fn ecdhe_psk(ecdhe: PremasterSecret, psk: &[u8]) -> Result<Self, Error> {
        let n = psk_len(psk)?;
        let z = &ecdhe.bytes;
        let z_len = u16::try_from(z.len()).map_err(|_| Error::AgreementFailed)?;
        let mut bytes = Zeroizing::new(Vec::with_capacity(4 + z.len() + psk.len()));
        bytes.extend_from_slice(&z_len.to_be_bytes());
        bytes.extend_from_slice(z);
        bytes.extend_from_slice(&n.to_be_bytes());
        bytes.extend_from_slice(psk);
        Ok(Self { bytes })
    }

    /// The secret bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }
}

fn psk_len(psk: &[u8]) -> Result<u16, Error> {
    if psk.is_empty() || psk.len() > MAX_PSK_LEN {
        return Err(Error::InvalidPskLength { len: psk.len() });
    }
    u16::try_from(psk.len()).map_err(|_| Error::InvalidPskLength { len: psk.len() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_psk_layout() {
        let pms = PremasterSecret::psk(&[0xaa, 0xbb, 0xcc]).expect("valid PSK");
        assert_eq!(pms.as_bytes(), &[0, 3, 0, 0, 0, 0, 3, 0xaa, 0xbb, 0xcc][..]);
    }

    #[test]
    fn ecdhe_psk_layout() {
        let z = PremasterSecret::from_shared_secret(&[1, 2, 3, 4]);
        let pms = PremasterSecret::ecdhe_psk(z, &[9, 8]).expect("valid PSK");
        assert_eq!(pms.as_bytes(), &[0, 4, 1, 2, 3, 4, 0, 2, 9, 8][..]);
    }

    #[test]
    fn psk_length_bounds() {
        assert!(matches!(
            PremasterSecret::psk(&[]),
            Err(Error::InvalidPskLength { len: 0 })
        ));
        assert!(PremasterSecret::psk(&[7; MAX_PSK_LEN]).is_ok());
        assert!(matches!(
            PremasterSecret::psk(&[7; MAX_PSK_LEN + 1]),
            Err(Error::InvalidPskLength { .. })
        ));
        let z = PremasterSecret::from_shared_secret(&[1; 32]);
        assert!(PremasterSecret::ecdhe_psk(z, &[]).is_err());
    }

    #[test]
    fn debug_redacts() {
        let pms = PremasterSecret::psk(&[0x42; 16]).expect("valid PSK");
        let shown = format!("{pms:?}");
        assert!(!shown.contains("42"), "{shown}");
    }
}
