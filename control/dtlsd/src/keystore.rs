//! The key store of `dtlsd serve` (`key_store`): secrets every node of a fleet shares, read
//! at start and on every SIGHUP, so a session ticket or a cookie one node made is accepted by
//! another, and rotated without dropping anything.
//!
//! A TOML file (a Kubernetes Secret mounted read-only, see `docs/scale-out.md`):
//!
//! ```toml
//! ticket_secrets = ["<64 hex digits: current>", "<64 hex digits: previous>"]
//! cookie_secrets = ["<64 hex digits: current>", "<64 hex digits: previous>"]
//! forward_secrets = ["<64 hex digits: current>", "<64 hex digits: previous>"]
//! ```
//!
//! Each list holds the current secret and, optionally, the one it replaced, still
//! accepted (tickets sealed under it open for one ticket lifetime after the reload that
//! retired it; cookies made under it verify until the next rotation). Rotating is writing
//! `[new, old]` to every node and sending SIGHUP. Secrets from the store never rotate on
//! their own. Unknown keys are errors; secrets never appear in error messages.
//!
//! `forward_secrets` (optional; required when `[[nodes]]` lists other nodes) key the HMAC of
//! records forwarded between nodes (`crate::forward`): a node signs with the current one
//! and accepts either, so nodes that reloaded and nodes that did not yet keep forwarding
//! to each other during a rotation.
//!
//! `quic_lb_keys` (optional) turn on encrypted connection IDs
//! (`dataplane::cid::EncryptedCids`): AES-128 keys of 32 hex digits, each under its QUIC-LB
//! config rotation codepoint (0 to 6), the current one first:
//!
//! ```toml
//! quic_lb_keys = [{ codepoint = 1, key = "<32 hex digits>" }, { codepoint = 0, key = "<32 hex digits>" }]
//! ```
//!
//! The first issues every new CID; the second (the previous key, under another codepoint)
//! still decodes the CIDs issued under it, so clients that move keep reaching their shard
//! and node during a rotation. Rotating is writing `[new, old]` with a new codepoint to every
//! node (and the load balancer), SIGHUP, and later `[new]` alone. Adding or removing the key
//! list needs a restart (the CID layout changes).

use std::fmt;
use std::path::Path;
use std::time::Instant;

use anyhow::{Context, anyhow, bail};
use dataplane::cid::{ConfigId, QuicLbKey};
use dataplane::forward::{ForwardKey, KEY_LEN as FORWARD_KEY_LEN};
use dtls_crypto::pki_types::UnixTime;
use dtls_crypto::{COOKIE_SECRET_LEN, CookieKeys, Rng, TICKET_SECRET_LEN, TicketKeys};
use serde::Deserialize;
use zeroize::Zeroizing;

/// Length of every secret in the store, in bytes.
pub const SECRET_LEN: usize = 32;
const _: () = assert!(
    SECRET_LEN == TICKET_SECRET_LEN
        && SECRET_LEN == COOKIE_SECRET_LEN
        && SECRET_LEN == FORWARD_KEY_LEN
);

/// A current secret and, optionally, the previous one.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretPair {
    current: Zeroizing<[u8; SECRET_LEN]>,
    previous: Option<Zeroizing<[u8; SECRET_LEN]>>,
}

/// The secrets of one key store file.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyStore {
    /// Session-ticket secrets.
    pub tickets: SecretPair,
    /// HelloVerifyRequest / HelloRetryRequest cookie secrets.
    pub cookies: SecretPair,
    /// Node-to-node forwarding secrets, when given.
    pub forwards: Option<SecretPair>,
    /// QUIC-LB keys (current first) under their codepoints, when given.
    pub quic_lb: Option<Vec<(u8, Zeroizing<[u8; QUIC_LB_KEY_LEN]>)>>,
}

/// Length of a QUIC-LB key (AES-128), in bytes.
pub const QUIC_LB_KEY_LEN: usize = 16;

impl fmt::Debug for SecretPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretPair(<redacted>)")
    }
}

impl fmt::Debug for KeyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("KeyStore(<redacted>)")
    }
}

/// A secret as written (hex), zeroized on drop.
#[derive(Deserialize)]
#[serde(from = "String")]
struct HexSecret(Zeroizing<String>);

impl From<String> for HexSecret {
    fn from(s: String) -> Self {
        Self(Zeroizing::new(s))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStore {
    ticket_secrets: Option<Vec<HexSecret>>,
    cookie_secrets: Option<Vec<HexSecret>>,
    forward_secrets: Option<Vec<HexSecret>>,
    quic_lb_keys: Option<Vec<RawQuicLbKey>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawQuicLbKey {
    codepoint: i64,
    key: HexSecret,
}

impl KeyStore {
    /// Reads and checks the store at `path`.
    ///
    /// # Errors
    /// The file cannot be read, is not TOML of the expected shape, or a list is missing,
    /// empty, longer than two, or holds a secret that is not 64 hex digits; the message
    /// names the file and the key, never a secret.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = Zeroizing::new(
            std::fs::read_to_string(path)
                .with_context(|| format!("key_store {}", path.display()))?,
        );
        Self::parse(&text).with_context(|| format!("key_store {}", path.display()))
    }

    /// Parses a store's text.
    ///
    /// # Errors
    /// As [`KeyStore::load`].
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        // toml's messages quote the offending line, which may hold a secret: keep only the
        // position.
        let raw: RawStore = toml::from_str(text).map_err(|e| {
            let known = [
                "ticket_secrets",
                "cookie_secrets",
                "forward_secrets",
                "quic_lb_keys",
            ];
            let unknown = e.message().contains("unknown field");
            match (unknown, e.span()) {
                (true, _) => anyhow!("unknown key (known: {})", known.join(", ")),
                (false, Some(span)) => anyhow!(
                    "not a key store (line {})",
                    text.get(..span.start)
                        .map_or(0, |t| t.matches('\n').count())
                        + 1
                ),
                (false, None) => anyhow!("not a key store"),
            }
        })?;
        Ok(Self {
            tickets: pair("ticket_secrets", raw.ticket_secrets)?,
            cookies: pair("cookie_secrets", raw.cookie_secrets)?,
            forwards: raw
                .forward_secrets
                .map(|list| pair("forward_secrets", Some(list)))
                .transpose()?,
            quic_lb: raw.quic_lb_keys.map(quic_lb_keys).transpose()?,
        })
    }

    /// The QUIC-LB keys, current first, when the store has `quic_lb_keys`.
    pub fn quic_lb_keys(&self) -> Option<Vec<QuicLbKey>> {
        self.quic_lb.as_ref().map(|keys| {
            keys.iter()
                .filter_map(|(codepoint, key)| {
                    Some(QuicLbKey {
                        // Checked to be 0..=6 when parsed.
                        config_id: ConfigId::new(*codepoint).ok()?,
                        key: key.clone(),
                    })
                })
                .collect()
        })
    }

    /// The node-to-node forwarding keys (current, previous), when the store has
    /// `forward_secrets`.
    pub fn forward_keys(&self) -> Option<(ForwardKey, Option<ForwardKey>)> {
        self.forwards.as_ref().map(|pair| {
            (
                ForwardKey::new(&pair.current),
                pair.previous.as_deref().map(ForwardKey::new),
            )
        })
    }

    /// Ticket keys from the store's ticket secrets (nonce starts from `rng`).
    ///
    /// # Errors
    /// aws-lc rejected a key (not expected).
    pub fn ticket_keys(
        &self,
        rng: &mut dyn Rng,
        now: UnixTime,
        lifetime: std::time::Duration,
    ) -> anyhow::Result<TicketKeys> {
        TicketKeys::from_secrets(
            &self.tickets.current,
            self.tickets.previous.as_deref(),
            rng,
            now,
            lifetime,
        )
        .context("session ticket keys from the key store")
    }

    /// Cookie keys from the store's cookie secrets.
    pub fn cookie_keys(&self, now: Instant) -> CookieKeys {
        CookieKeys::from_secrets(&self.cookies.current, self.cookies.previous.as_deref(), now)
    }
}

/// Checks `quic_lb_keys`: one or two keys (current, previous) of 16 bytes under distinct
/// codepoints 0 to 6 (0b111 is the draft's unroutable codepoint, §3.1).
fn quic_lb_keys(list: Vec<RawQuicLbKey>) -> anyhow::Result<Vec<(u8, Zeroizing<[u8; 16]>)>> {
    const KEY: &str = "quic_lb_keys";
    if list.is_empty() {
        bail!("{KEY}: empty (give the current key, then the previous one)");
    }
    if list.len() > 2 {
        bail!("{KEY}: {} keys, at most 2 (current, previous)", list.len());
    }
    let mut keys = Vec::with_capacity(list.len());
    for (i, raw) in list.iter().enumerate() {
        let codepoint = u8::try_from(raw.codepoint)
            .ok()
            .filter(|c| ConfigId::new(*c).is_ok())
            .ok_or_else(|| anyhow!("{KEY}[{i}].codepoint: {} is not 0 to 6", raw.codepoint))?;
        if keys.iter().any(|(c, _)| *c == codepoint) {
            bail!(
                "{KEY}[{i}].codepoint: {codepoint} is used twice (a new key takes a new codepoint)"
            );
        }
        let bytes = Zeroizing::new(
            crate::config::validate::decode_hex(raw.key.0.trim())
                .map_err(|e| anyhow!("{KEY}[{i}].key: {e}"))?,
        );
        if bytes.len() != QUIC_LB_KEY_LEN {
            bail!(
                "{KEY}[{i}].key: {} bytes, must be {QUIC_LB_KEY_LEN} ({} hex digits)",
                bytes.len(),
                2 * QUIC_LB_KEY_LEN
            );
        }
        let mut key = Zeroizing::new([0u8; QUIC_LB_KEY_LEN]);
        key.copy_from_slice(&bytes);
        keys.push((codepoint, key));
    }
    Ok(keys)
}

fn pair(key: &str, list: Option<Vec<HexSecret>>) -> anyhow::Result<SecretPair> {
    let Some(list) = list else {
        bail!("{key}: missing");
    };
    let secret = |i: usize, hex: &str| -> anyhow::Result<Zeroizing<[u8; SECRET_LEN]>> {
        let bytes = Zeroizing::new(
            crate::config::validate::decode_hex(hex.trim())
                .map_err(|e| anyhow!("{key}[{i}]: {e}"))?,
        );
        let mut out = Zeroizing::new([0u8; SECRET_LEN]);
        if bytes.len() != SECRET_LEN {
            bail!(
                "{key}[{i}]: {} bytes, must be {SECRET_LEN} ({} hex digits)",
                bytes.len(),
                2 * SECRET_LEN
            );
        }
        out.copy_from_slice(&bytes);
        Ok(out)
    };
    match list.as_slice() {
        [current] => Ok(SecretPair {
            current: secret(0, &current.0)?,
            previous: None,
        }),
        [current, previous] => Ok(SecretPair {
            current: secret(0, &current.0)?,
            previous: Some(secret(1, &previous.0)?),
        }),
        [] => bail!("{key}: empty (give the current secret, then the previous one)"),
        _ => bail!(
            "{key}: {} secrets, at most 2 (current, previous)",
            list.len()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "0101010101010101010101010101010101010101010101010101010101010101";
    const B: &str = "0202020202020202020202020202020202020202020202020202020202020202";
    const K: &str = "0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f";

    #[test]
    fn parses_current_and_previous() {
        let s = KeyStore::parse(&format!(
            "ticket_secrets = [\"{A}\", \"{B}\"]\ncookie_secrets = [\"{B}\"]\n"
        ))
        .expect("valid");
        assert_eq!(*s.tickets.current, [1; 32]);
        assert_eq!(s.tickets.previous.as_deref(), Some(&[2; 32]));
        assert_eq!(*s.cookies.current, [2; 32]);
        assert!(s.cookies.previous.is_none());
        assert!(s.forwards.is_none() && s.forward_keys().is_none());
        assert_eq!(format!("{s:?}"), "KeyStore(<redacted>)");
        let s = KeyStore::parse(&format!(
            "ticket_secrets = [\"{A}\"]\ncookie_secrets = [\"{B}\"]\n\
             forward_secrets = [\"{B}\", \"{A}\"]\n"
        ))
        .expect("valid");
        let forwards = s.forwards.as_ref().expect("forward secrets");
        assert_eq!(*forwards.current, [2; 32]);
        assert_eq!(forwards.previous.as_deref(), Some(&[1; 32]));
        assert!(s.quic_lb_keys().is_none());
        let s = KeyStore::parse(&format!(
            "ticket_secrets = [\"{A}\"]\ncookie_secrets = [\"{B}\"]\n\
             quic_lb_keys = [{{ codepoint = 2, key = \"{K}\" }}, {{ codepoint = 0, key = \"{K}\" }}]\n"
        ))
        .expect("valid");
        let keys = s.quic_lb_keys().expect("quic_lb_keys");
        assert_eq!(keys.len(), 2);
        assert_eq!(
            (keys[0].config_id.value(), keys[1].config_id.value()),
            (2, 0)
        );
        assert_eq!(*keys[0].key, [0x0f; 16]);
    }

    #[test]
    fn bad_quic_lb_keys_name_the_key_and_never_the_secret() {
        let base = format!("ticket_secrets = [\"{A}\"]\ncookie_secrets = [\"{A}\"]\n");
        for (keys, expected) in [
            ("[]".to_string(), "quic_lb_keys: empty"),
            (
                format!("[{{ codepoint = 7, key = \"{K}\" }}]"),
                "quic_lb_keys[0].codepoint: 7 is not 0 to 6",
            ),
            (
                format!("[{{ codepoint = 1, key = \"{K}\" }}, {{ codepoint = 1, key = \"{K}\" }}]"),
                "quic_lb_keys[1].codepoint: 1 is used twice",
            ),
            (
                format!("[{{ codepoint = 1, key = \"{A}\" }}]"),
                "quic_lb_keys[0].key: 32 bytes, must be 16",
            ),
            (
                format!(
                    "[{{ codepoint = 1, key = \"{K}\" }}, {{ codepoint = 2, key = \"{K}\" }}, {{ codepoint = 3, key = \"{K}\" }}]"
                ),
                "quic_lb_keys: 3 keys",
            ),
        ] {
            let text = format!("{base}quic_lb_keys = {keys}\n");
            let e = format!("{:#}", KeyStore::parse(&text).expect_err(&text));
            assert!(e.contains(expected), "{e}");
            assert!(!e.contains(K) && !e.contains(A), "secret in {e}");
        }
    }

    #[test]
    fn bad_stores_name_the_key_and_never_the_secret() {
        let secret = "ab".repeat(31);
        for (text, expected) in [
            (
                format!("cookie_secrets = [\"{A}\"]\n"),
                "ticket_secrets: missing",
            ),
            (
                format!("ticket_secrets = []\ncookie_secrets = [\"{A}\"]\n"),
                "ticket_secrets: empty",
            ),
            (
                format!("ticket_secrets = [\"{A}\"]\ncookie_secrets = [\"{A}\", \"{secret}\"]\n"),
                "cookie_secrets[1]: 31 bytes, must be 32",
            ),
            (
                format!("ticket_secrets = [\"{A}\",\"{A}\",\"{A}\"]\ncookie_secrets = [\"{A}\"]\n"),
                "ticket_secrets: 3 secrets",
            ),
            (
                format!(
                    "ticket_secrets = [\"{A}\"]\ncookie_secrets = [\"{A}\"]\nquic_lb = \"{secret}\"\n"
                ),
                "unknown key",
            ),
            (
                format!("ticket_secrets = \"{secret}\n"),
                "not a key store (line 1)",
            ),
            (
                format!(
                    "ticket_secrets = [\"{A}\"]\ncookie_secrets = [\"{A}\"]\nforward_secrets = [\"{secret}\"]\n"
                ),
                "forward_secrets[0]: 31 bytes, must be 32",
            ),
            (
                format!(
                    "ticket_secrets = [\"{A}\"]\ncookie_secrets = [\"{A}\"]\nforward_secrets = []\n"
                ),
                "forward_secrets: empty",
            ),
        ] {
            let e = format!("{:#}", KeyStore::parse(&text).expect_err(&text));
            assert!(e.contains(expected), "{e}");
            assert!(!e.contains(&secret) && !e.contains(A), "secret in {e}");
        }
    }
}
