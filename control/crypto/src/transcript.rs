//! The handshake transcript hash.

use std::fmt;

use aws_lc_rs::digest;
use dtls_proto::{HandshakeType, PrfHash};

use crate::Error;
use crate::prf::{MAX_HASH_LEN, digest_algorithm};

/// A transcript hash value (32 bytes for SHA-256, 48 for SHA-384).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct HandshakeHash {
    bytes: [u8; MAX_HASH_LEN],
    len: usize,
}

impl HandshakeHash {
    /// `Hash(data)` in one go, e.g. over a ClientHello truncated before its PSK binders
    /// (RFC 8446 §4.2.11.2) or the empty string.
    pub fn digest(hash: PrfHash, data: &[u8]) -> Self {
        Self::from_digest(&digest::digest(digest_algorithm(hash), data))
    }

    /// `Hash(parts[0] || parts[1] || ...)` without joining them first, e.g. a DTLS 1.3
    /// message's TLS-style header and its body (RFC 9147 §5.2) where nothing may allocate.
    pub fn digest_parts(hash: PrfHash, parts: &[&[u8]]) -> Self {
        let mut ctx = digest::Context::new(digest_algorithm(hash));
        for part in parts {
            ctx.update(part);
        }
        Self::from_digest(&ctx.finish())
    }

    /// Wraps `bytes` as a hash value of `hash`'s length; `None` when the length differs
    /// (a hash carried in a cookie, RFC 8446 §4.2.2).
    pub fn from_bytes(hash: PrfHash, bytes: &[u8]) -> Option<Self> {
        if bytes.len() != digest_algorithm(hash).output_len() {
            return None;
        }
        let mut out = Self {
            bytes: [0; MAX_HASH_LEN],
            len: bytes.len(),
        };
        out.bytes[..out.len].copy_from_slice(bytes);
        Some(out)
    }

    fn from_digest(digest: &digest::Digest) -> Self {
        let mut out = Self {
            bytes: [0; MAX_HASH_LEN],
            len: digest.as_ref().len(),
        };
        out.bytes[..out.len].copy_from_slice(digest.as_ref());
        out
    }

    /// Wraps a hash value given as bytes (test vectors).
    #[cfg(test)]
    pub(crate) fn from_slice(bytes: &[u8]) -> Self {
        let mut out = Self {
            bytes: [0; MAX_HASH_LEN],
            len: bytes.len(),
        };
        out.bytes[..out.len].copy_from_slice(bytes);
        out
    }

    /// The hash bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

impl AsRef<[u8]> for HandshakeHash {
    fn as_ref(&self) -> &[u8] {
        self.as_bytes()
    }
}

impl fmt::Debug for HandshakeHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HandshakeHash(")?;
        for b in self.as_bytes() {
            write!(f, "{b:02x}")?;
        }
        write!(f, ")")
    }
}

/// The running hash of the handshake messages (RFC 5246 §7.4.9 "handshake_messages").
///
/// Messages are added in DTLS form *as if unfragmented*: RFC 6347 §4.2.6 — "the Finished
/// MAC MUST be computed as if each handshake message had been sent as a single fragment",
/// i.e. the 12-byte DTLS handshake header with fragment_offset = 0 and fragment_length =
/// length, then the body. RFC 6347 §4.2.1 / §4.2.6: the first ClientHello and the
/// HelloVerifyRequest are not included; call [`Transcript::reset`] or do not add them.
///
/// Until the cipher suite (and so the hash) is known, messages are buffered; after
/// [`Transcript::select_hash`] they are hashed incrementally. The raw messages can also be
/// retained for TLS 1.2 CertificateVerify, which signs the messages themselves with the
/// signature scheme's hash (RFC 5246 §7.4.8), which may differ from the PRF hash.
pub struct Transcript {
    hash: Option<(PrfHash, digest::Context)>,
    messages: Vec<u8>,
    retain: bool,
}

impl fmt::Debug for Transcript {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Transcript")
            .field("hash", &self.hash.as_ref().map(|(h, _)| *h))
            .field("buffered_len", &self.messages.len())
            .field("retain", &self.retain)
            .finish()
    }
}

impl Default for Transcript {
    fn default() -> Self {
        Self::new()
    }
}

impl Transcript {
    /// An empty transcript that retains raw messages until [`Transcript::stop_retaining`].
    pub fn new() -> Self {
        Self {
            hash: None,
            messages: Vec::new(),
            retain: true,
        }
    }

    /// Adds one complete handshake message (header and body) to the transcript.
    pub fn update(&mut self, message: &[u8]) {
        if let Some((_, ctx)) = &mut self.hash {
            ctx.update(message);
        }
        if self.retain || self.hash.is_none() {
            self.messages.extend_from_slice(message);
        }
    }

    /// Starts hashing with the negotiated suite's hash, over everything buffered so far.
    /// Selecting the same hash again is a no-op.
    ///
    /// # Errors
    /// [`Error::TranscriptHashAlreadySelected`] if a different hash was selected before.
    pub fn select_hash(&mut self, hash: PrfHash) -> Result<(), Error> {
        match &self.hash {
            Some((selected, _)) if *selected == hash => Ok(()),
            Some((selected, _)) => Err(Error::TranscriptHashAlreadySelected {
                selected: *selected,
            }),
            None => {
                let mut ctx = digest::Context::new(digest_algorithm(hash));
                ctx.update(&self.messages);
                self.hash = Some((hash, ctx));
                if !self.retain {
                    self.messages = Vec::new();
                }
                Ok(())
            }
        }
    }

    /// The selected hash, if any.
    pub fn selected_hash(&self) -> Option<PrfHash> {
        self.hash.as_ref().map(|(h, _)| *h)
    }

    /// Hash of all messages added so far, leaving the running state untouched (for the EMS
    /// session_hash, Finished, and anything else that needs an intermediate value).
    ///
    /// # Errors
    /// [`Error::TranscriptHashNotSelected`] before [`Transcript::select_hash`].
    pub fn current_hash(&self) -> Result<HandshakeHash, Error> {
        let (_, ctx) = self.hash.as_ref().ok_or(Error::TranscriptHashNotSelected)?;
        Ok(HandshakeHash::from_digest(&ctx.clone().finish()))
    }

    /// Replaces everything added so far (the first ClientHello) by the synthetic
    /// `message_hash` message, for a TLS 1.3 / DTLS 1.3 HelloRetryRequest. Call it once the
    /// hash is selected (from the suite the HelloRetryRequest names) and before adding the
    /// HelloRetryRequest itself.
    ///
    /// RFC 8446 §4.4.1: "When the server responds to a ClientHello with a
    /// HelloRetryRequest, the value of ClientHello1 is replaced with a special synthetic
    /// handshake message of handshake type "message_hash" containing Hash(ClientHello1).
    /// I.e., Transcript-Hash(ClientHello1, HelloRetryRequest, ... Mn) =
    ///     Hash(message_hash ||        /* Handshake type */
    ///          00 00 Hash.length  ||  /* Handshake message length (bytes) */
    ///          Hash(ClientHello1) ||  /* Hash of ClientHello1 */
    ///          HelloRetryRequest  || ... || Mn)".
    ///
    /// The synthetic message has the 4-byte TLS header, which is also the form DTLS 1.3
    /// hashes: RFC 9147 §5.2 computes the transcript "over the original TLS 1.3-style
    /// Handshake messages without the message_seq, fragment_offset, and fragment_length
    /// values". Raw messages, when retained, are replaced the same way.
    ///
    /// # Errors
    /// [`Error::TranscriptHashNotSelected`] before [`Transcript::select_hash`].
    pub fn roll_up_for_hello_retry(&mut self) -> Result<(), Error> {
        let hash = self
            .selected_hash()
            .ok_or(Error::TranscriptHashNotSelected)?;
        let client_hello1 = self.current_hash()?;
        let len = u8::try_from(hash.output_len())
            .expect("a hash length (32 or 48) fits the low byte of uint24");
        let retain = self.retain;
        *self = Self::new();
        self.retain = retain;
        self.update(&[HandshakeType::MessageHash.to_u8(), 0, 0, len]);
        self.update(client_hello1.as_bytes());
        self.select_hash(hash)
    }

    /// The raw messages added so far, while they are being retained (or before a hash was
    /// selected); `None` once [`Transcript::stop_retaining`] dropped them.
    pub fn messages(&self) -> Option<&[u8]> {
        (self.retain || self.hash.is_none()).then_some(self.messages.as_slice())
    }

    /// Stops retaining raw messages (e.g. once no CertificateVerify can follow) and frees
    /// them if the hash is already running.
    pub fn stop_retaining(&mut self) {
        self.retain = false;
        if self.hash.is_some() {
            self.messages = Vec::new();
        }
    }

    /// Forgets everything (e.g. after a HelloVerifyRequest, RFC 6347 §4.2.1).
    pub fn reset(&mut self) {
        *self = Self::new();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sha(hash: PrfHash, data: &[u8]) -> Vec<u8> {
        digest::digest(digest_algorithm(hash), data)
            .as_ref()
            .to_vec()
    }

    #[test]
    fn buffered_then_incremental_equals_one_shot() {
        for hash in [PrfHash::Sha256, PrfHash::Sha384] {
            let mut t = Transcript::new();
            t.update(b"client hello ");
            t.update(b"server hello ");
            assert!(matches!(
                t.current_hash(),
                Err(Error::TranscriptHashNotSelected)
            ));
            t.select_hash(hash).expect("first selection");
            let mid = t.current_hash().expect("hash selected");
            assert_eq!(mid.as_bytes(), sha(hash, b"client hello server hello "));
            t.update(b"finished");
            let end = t.current_hash().expect("hash selected");
            assert_eq!(
                end.as_bytes(),
                sha(hash, b"client hello server hello finished")
            );
            assert_eq!(end.as_bytes().len(), hash.output_len());
            assert_eq!(
                t.messages(),
                Some(&b"client hello server hello finished"[..])
            );
        }
    }

    #[test]
    fn reselecting_is_checked() {
        let mut t = Transcript::new();
        t.select_hash(PrfHash::Sha256).expect("first selection");
        t.select_hash(PrfHash::Sha256)
            .expect("same hash again is fine");
        assert!(matches!(
            t.select_hash(PrfHash::Sha384),
            Err(Error::TranscriptHashAlreadySelected {
                selected: PrfHash::Sha256
            })
        ));
    }

    #[test]
    fn stop_retaining_drops_messages_but_keeps_hashing() {
        let mut t = Transcript::new();
        t.update(b"a");
        t.stop_retaining();
        // Still buffered: the hash is not known yet.
        assert_eq!(t.messages(), Some(&b"a"[..]));
        t.select_hash(PrfHash::Sha256).expect("first selection");
        assert_eq!(t.messages(), None);
        t.update(b"b");
        assert_eq!(
            t.current_hash().expect("hash selected").as_bytes(),
            sha(PrfHash::Sha256, b"ab")
        );
        t.reset();
        assert_eq!(t.selected_hash(), None);
        assert_eq!(t.messages(), Some(&b""[..]));
    }

    #[test]
    fn hello_retry_replaces_the_first_client_hello_by_message_hash() {
        for hash in [PrfHash::Sha256, PrfHash::Sha384] {
            let mut t = Transcript::new();
            t.update(b"client hello 1");
            assert!(matches!(
                t.roll_up_for_hello_retry(),
                Err(Error::TranscriptHashNotSelected)
            ));
            t.select_hash(hash).expect("first selection");
            t.roll_up_for_hello_retry().expect("hash selected");
            t.update(b"hello retry request");
            t.update(b"client hello 2");

            // RFC 8446 §4.4.1: Hash(message_hash || 00 00 Hash.length || Hash(ClientHello1)
            // || HelloRetryRequest || ...), message_hash = 254.
            let len = u8::try_from(hash.output_len()).expect("32 or 48");
            let mut expected = vec![254, 0, 0, len];
            expected.extend_from_slice(&sha(hash, b"client hello 1"));
            expected.extend_from_slice(b"hello retry request");
            expected.extend_from_slice(b"client hello 2");
            assert_eq!(
                t.current_hash().expect("hash selected").as_bytes(),
                sha(hash, &expected)
            );
            // Retained messages follow the same substitution; the hash stays selected.
            assert_eq!(t.messages(), Some(&expected[..]));
            assert_eq!(t.selected_hash(), Some(hash));
        }

        // Without retention the raw messages are gone, and the hash is the same.
        let mut t = Transcript::new();
        t.stop_retaining();
        t.update(b"client hello 1");
        t.select_hash(PrfHash::Sha256).expect("first selection");
        t.roll_up_for_hello_retry().expect("hash selected");
        assert_eq!(t.messages(), None);
        let mut expected = vec![254, 0, 0, 32];
        expected.extend_from_slice(&sha(PrfHash::Sha256, b"client hello 1"));
        assert_eq!(
            t.current_hash().expect("hash selected").as_bytes(),
            sha(PrfHash::Sha256, &expected)
        );
    }

    #[test]
    fn one_shot_digest_matches_the_running_hash() {
        let mut t = Transcript::new();
        t.update(b"abc");
        t.select_hash(PrfHash::Sha384).expect("first selection");
        assert_eq!(
            t.current_hash().expect("hash selected"),
            HandshakeHash::digest(PrfHash::Sha384, b"abc")
        );
    }
}
