//! The acceptor's DTLS 1.3 door: a stateless HelloRetryRequest whose cookie carries the
//! hash of the first ClientHello (RFC 8446 §4.4.1, §4.2.2; RFC 9147 §5.1), written into the
//! caller's buffer without allocating, never larger than the datagrams that brought the
//! ClientHello; and the check of the cookie in the second ClientHello.
//!
//! Cookie layout (inside the `cookie` extension):
//!
//! ```text
//! cipher_suite(2) | group(2) | named(1) | hash_len(1) | Hash(ClientHello1)(hash_len) | tag(32)
//! tag = HMAC(cookie secret, peer address, "dtls13 hrr", the bytes before the tag,
//!            client random)
//! ```
//!
//! `named` is 1 when the HelloRetryRequest carried key_share (the first ClientHello had
//! no share for the group), so the server can rebuild the exact message. The suite and
//! group are what the HelloRetryRequest chose (RFC 8446 §4.1.4: the
//! ServerHello must repeat the suite; the second ClientHello must carry a share for the
//! group); the hash lets the server rebuild the transcript
//! `message_hash(Hash(ClientHello1)) | HelloRetryRequest | ClientHello2` without having kept
//! anything (RFC 8446 §4.4.1).

use std::net::SocketAddr;

use dtls_crypto::{COOKIE_LEN, CookieKeys, HandshakeHash};
use dtls_proto::{CipherSuite, ExtensionType, HandshakeType, NamedGroup, ProtocolVersion};

use crate::config::Config;

/// What a verified cookie says about the HelloRetryRequest the server sent.
#[derive(Debug, Clone)]
pub(crate) struct RetryState {
    pub(crate) suite: CipherSuite,
    pub(crate) group: NamedGroup,
    /// The HelloRetryRequest named the group in key_share.
    pub(crate) named: bool,
    pub(crate) client_hello1: HandshakeHash,
    /// The cookie as sent (the HelloRetryRequest is rebuilt with it for the transcript).
    pub(crate) cookie: Vec<u8>,
}

/// The DTLS 1.3 extensions of a ClientHello, as slices of the datagram.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Hello13<'a> {
    /// supported_versions' list (2-byte versions).
    versions: Option<&'a [u8]>,
    /// supported_groups' list (2-byte groups).
    groups: Option<&'a [u8]>,
    /// key_share's client_shares (group(2) len(2) key_exchange entries).
    shares: Option<&'a [u8]>,
    /// The cookie extension's cookie.
    pub(crate) cookie: Option<&'a [u8]>,
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

/// The body of a `vec<..2^16-1>` (or `<..2^8-1>` with `one_byte`) that fills `data`.
fn whole_vec(data: &[u8], one_byte: bool) -> Option<&[u8]> {
    let (len, at) = if one_byte {
        (usize::from(*data.first()?), 1)
    } else {
        (usize::from(u16_at(data, 0)?), 2)
    };
    (data.len() == at + len).then(|| &data[at..])
}

impl<'a> Hello13<'a> {
    /// Scans the extension block after `compression_methods` (with its length prefix, or
    /// empty) without allocating. `None` when it is malformed.
    pub(crate) fn scan(rest: &'a [u8]) -> Option<Self> {
        let mut out = Self::default();
        if rest.is_empty() {
            return Some(out);
        }
        let mut list = whole_vec(rest, false)?;
        while !list.is_empty() {
            let ext_type = u16_at(list, 0)?;
            let len = usize::from(u16_at(list, 2)?);
            let data = list.get(4..4 + len)?;
            list = &list[4 + len..];
            match ExtensionType::from_u16(ext_type) {
                ExtensionType::SupportedVersions => out.versions = Some(whole_vec(data, true)?),
                ExtensionType::SupportedGroups => out.groups = Some(whole_vec(data, false)?),
                ExtensionType::KeyShare => out.shares = Some(whole_vec(data, false)?),
                ExtensionType::Cookie => out.cookie = Some(whole_vec(data, false)?),
                _ => {}
            }
        }
        Some(out)
    }

    /// Whether supported_versions is present at all (the client knows DTLS 1.3).
    pub(crate) fn has_versions(&self) -> bool {
        self.versions.is_some()
    }

    /// Whether supported_versions lists `version`.
    pub(crate) fn offers(&self, version: ProtocolVersion) -> bool {
        self.versions.is_some_and(|v| {
            v.chunks_exact(2)
                .any(|c| u16::from_be_bytes([c[0], c[1]]) == version.to_u16())
        })
    }

    fn lists_group(&self, group: NamedGroup) -> bool {
        self.groups.is_some_and(|g| {
            g.chunks_exact(2)
                .any(|c| u16::from_be_bytes([c[0], c[1]]) == group.to_u16())
        })
    }

    fn has_share(&self, group: NamedGroup) -> bool {
        let Some(mut shares) = self.shares else {
            return false;
        };
        while let (Some(g), Some(len)) = (u16_at(shares, 0), u16_at(shares, 2)) {
            if g == group.to_u16() {
                return true;
            }
            let Some(next) = shares.get(4 + usize::from(len)..) else {
                return false;
            };
            shares = next;
        }
        false
    }
}

/// The suite and group of our HelloRetryRequest (RFC 8446 §4.1.1, server preference): the
/// first of our groups the client sent a share for, else the first it supports. `None`
/// when nothing is in common (the engine could not complete either).
pub(crate) fn choose(
    config: &Config,
    cipher_suites: &[u8],
    hello: &Hello13<'_>,
) -> Option<(CipherSuite, NamedGroup)> {
    let suite = config.tls13_cipher_suites.iter().copied().find(|s| {
        cipher_suites
            .chunks_exact(2)
            .any(|c| u16::from_be_bytes([c[0], c[1]]) == s.to_u16())
    })?;
    let group = config
        .tls13_groups
        .iter()
        .copied()
        .find(|g| hello.has_share(*g) && hello.lists_group(*g))
        .or_else(|| {
            config
                .tls13_groups
                .iter()
                .copied()
                .find(|g| hello.lists_group(*g))
        })?;
    Some((suite, group))
}

const LABEL: &[u8] = b"dtls13 hrr";

/// Bytes of state before the hash.
const STATE_HEAD: usize = 6;

/// Largest cookie: the state, a SHA-384 hash and the tag.
pub(crate) const MAX_COOKIE13: usize = STATE_HEAD + 48 + COOKIE_LEN;

/// Writes the cookie for `suite`, `group` and `client_hello1` into `out`; returns its
/// length.
#[allow(clippy::too_many_arguments)]
pub(crate) fn make_cookie(
    cookies: &CookieKeys,
    peer: SocketAddr,
    suite: CipherSuite,
    group: NamedGroup,
    named: bool,
    client_hello1: &HandshakeHash,
    random: &[u8],
    out: &mut [u8; MAX_COOKIE13],
) -> usize {
    let hash = client_hello1.as_bytes();
    let state_len = STATE_HEAD + hash.len();
    out[..2].copy_from_slice(&suite.to_u16().to_be_bytes());
    out[2..4].copy_from_slice(&group.to_u16().to_be_bytes());
    out[4] = u8::from(named);
    // A hash is 32 or 48 bytes.
    out[5] = hash.len() as u8;
    out[STATE_HEAD..state_len].copy_from_slice(hash);
    let tag = cookies.generate(peer, &[LABEL, &out[..state_len], random]);
    out[state_len..state_len + COOKIE_LEN].copy_from_slice(&tag);
    state_len + COOKIE_LEN
}

/// Checks a cookie from a second ClientHello; `Some` with what the HelloRetryRequest chose
/// when it verifies (allocates only then).
pub(crate) fn check_cookie(
    cookies: &CookieKeys,
    peer: SocketAddr,
    cookie: &[u8],
    random: &[u8],
) -> Option<RetryState> {
    let hash_len = usize::from(*cookie.get(5)?);
    let state_len = STATE_HEAD + hash_len;
    if cookie.len() != state_len + COOKIE_LEN {
        return None;
    }
    let (state, tag) = cookie.split_at(state_len);
    if !cookies.verify(peer, &[LABEL, state, random], tag) {
        return None;
    }
    let suite = CipherSuite::from_u16(u16_at(state, 0)?);
    let group = NamedGroup::from_u16(u16_at(state, 2)?);
    let params = suite.tls13_params()?;
    let named = match state[4] {
        0 => false,
        1 => true,
        _ => return None,
    };
    let client_hello1 = HandshakeHash::from_bytes(params.hash(), &state[STATE_HEAD..])?;
    Some(RetryState {
        suite,
        group,
        named,
        client_hello1,
        cookie: cookie.to_vec(),
    })
}

/// `Hash(ClientHello1)` as the transcript has it (RFC 9147 §5.2: the TLS-style header).
pub(crate) fn hash_client_hello(suite: CipherSuite, body: &[u8]) -> Option<HandshakeHash> {
    let hash = suite.tls13_params()?.hash();
    let len = u32::try_from(body.len()).ok()?.to_be_bytes();
    let header = [HandshakeType::ClientHello.to_u8(), len[1], len[2], len[3]];
    Some(HandshakeHash::digest_parts(hash, &[&header, body]))
}

/// Writes a HelloRetryRequest body (RFC 8446 §4.1.4) into `out` without allocating:
/// the ServerHello form with the special random, the client's session id echoed,
/// supported_versions, key_share (only when the client sent no share for `group`:
/// RFC 8446 §4.2.8 forbids naming a group it already sent a share for) and the cookie.
/// Returns the length, `None` when `out` is too small.
pub(crate) fn write_hello_retry_request(
    out: &mut [u8],
    session_id: &[u8],
    suite: CipherSuite,
    group: Option<NamedGroup>,
    cookie: &[u8],
) -> Option<usize> {
    let mut w = Writer { out, at: 0 };
    w.put(&ProtocolVersion::Dtls1_2.to_u16().to_be_bytes())?;
    w.put(&dtls_proto::tls13::HELLO_RETRY_REQUEST_RANDOM)?;
    w.put(&[u8::try_from(session_id.len()).ok()?])?;
    w.put(session_id)?;
    w.put(&suite.to_u16().to_be_bytes())?;
    w.put(&[dtls_proto::COMPRESSION_NULL])?;
    let ext_len = 6 + group.map_or(0, |_| 6) + 6 + cookie.len();
    w.put(&u16::try_from(ext_len).ok()?.to_be_bytes())?;
    w.put(&ExtensionType::SupportedVersions.to_u16().to_be_bytes())?;
    w.put(&[0, 2])?;
    w.put(&ProtocolVersion::Dtls1_3.to_u16().to_be_bytes())?;
    if let Some(group) = group {
        w.put(&ExtensionType::KeyShare.to_u16().to_be_bytes())?;
        w.put(&[0, 2])?;
        w.put(&group.to_u16().to_be_bytes())?;
    }
    w.put(&ExtensionType::Cookie.to_u16().to_be_bytes())?;
    w.put(&u16::try_from(cookie.len() + 2).ok()?.to_be_bytes())?;
    w.put(&u16::try_from(cookie.len()).ok()?.to_be_bytes())?;
    w.put(cookie)?;
    Some(w.at)
}

/// Whether the HelloRetryRequest for this hello names `group` in key_share (the client
/// sent no share for it).
pub(crate) fn retry_names_group(hello: &Hello13<'_>, group: NamedGroup) -> bool {
    !hello.has_share(group)
}

struct Writer<'o> {
    out: &'o mut [u8],
    at: usize,
}

impl Writer<'_> {
    fn put(&mut self, bytes: &[u8]) -> Option<()> {
        self.out
            .get_mut(self.at..self.at + bytes.len())?
            .copy_from_slice(bytes);
        self.at += bytes.len();
        Some(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls13::server::hello_retry_request_body;

    #[test]
    fn the_hello_retry_request_written_in_place_is_the_engine_s() {
        let cookie = [7u8; 70];
        for group in [None, Some(NamedGroup::Secp384r1)] {
            let mut out = [0u8; 256];
            let n = write_hello_retry_request(
                &mut out,
                &[1, 2, 3],
                CipherSuite::Tls13Aes256GcmSha384,
                group,
                &cookie,
            )
            .expect("fits");
            let built = hello_retry_request_body(
                &[1, 2, 3],
                CipherSuite::Tls13Aes256GcmSha384,
                group,
                Some(&cookie),
            )
            .expect("builds");
            assert_eq!(&out[..n], &built[..]);
        }
    }

    #[test]
    fn cookies_verify_only_for_their_peer_and_random() {
        let mut rng = dtls_crypto::SeededRng::new(5);
        let now = std::time::Instant::now();
        let keys = CookieKeys::new(&mut rng, now, std::time::Duration::from_secs(60));
        let peer: SocketAddr = "127.0.0.1:1000".parse().expect("addr");
        let hash = hash_client_hello(CipherSuite::Tls13Aes128GcmSha256, b"hello").expect("hash");
        let mut buf = [0u8; MAX_COOKIE13];
        let n = make_cookie(
            &keys,
            peer,
            CipherSuite::Tls13Aes128GcmSha256,
            NamedGroup::X25519,
            true,
            &hash,
            &[9; 32],
            &mut buf,
        );
        let state = check_cookie(&keys, peer, &buf[..n], &[9; 32]).expect("verifies");
        assert_eq!(state.group, NamedGroup::X25519);
        assert!(state.named);
        assert_eq!(state.client_hello1, hash);
        let other: SocketAddr = "127.0.0.2:1000".parse().expect("addr");
        assert!(check_cookie(&keys, other, &buf[..n], &[9; 32]).is_none());
        assert!(check_cookie(&keys, peer, &buf[..n], &[8; 32]).is_none());
        let mut forged = buf;
        forged[2] ^= 1;
        assert!(check_cookie(&keys, peer, &forged[..n], &[9; 32]).is_none());
    }
}
