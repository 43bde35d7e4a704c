//! The `[limits]` table: caps on what peers can make the daemon hold (sessions, half-open
//! handshakes per source), shared by `serve` and `connect`.
//!
//! ```toml
//! [limits]
//! max_sessions = 16384           # sessions of the daemon (installed and in handshake)
//! max_sessions_per_shard = 5184  # default: derived from max_sessions and the shard count
//! max_half_open = 4096           # handshakes past the cookie, not completed; the oldest is shed
//! half_open_per_address = 256    # ... from one IPv4 address or IPv6 /64
//! half_open_per_prefix = 1024    # ... from one IPv4 /24 or IPv6 /48
//! ipv4_prefix = 24
//! ipv6_prefix = 48
//! handshake_timeout = 60         # seconds before a handshake in progress gives up
//! # serve: per source address (IPv4 address, IPv6 /64), after the cookie; reloadable
//! handshakes_per_second = 100    # new handshakes a second, after the burst (0: off)
//! handshake_burst = 256
//! sessions_per_address = 1024    # established and half-open
//! # serve: who gets any reply at all; deny wins, an empty allow list allows all; reloadable
//! allow = ["10.0.0.0/8", "2001:db8::/32"]
//! deny = ["10.66.0.0/16"]
//! ```
//!
//! `docs/dtlsd.md` explains each cap, its default and the counter that shows it being hit.

use dtls_runtime::AccessList;
use ipnet::IpNet;
use serde::Deserialize;

use super::error::{ConfigError, Problem};

/// Default `max_sessions`.
pub const DEFAULT_MAX_SESSIONS: usize = 16_384;
/// Bounds of `max_sessions` and `max_sessions_per_shard`.
pub const SESSIONS_RANGE: (i64, i64) = (1, 10_000_000);
/// Bounds of `max_half_open`.
pub const HALF_OPEN_RANGE: (i64, i64) = (1, 1_000_000);
/// Bounds of `ipv4_prefix`.
pub const IPV4_PREFIX_RANGE: (i64, i64) = (8, 32);
/// Bounds of `ipv6_prefix` (a /64 is one IPv6 "address" for `half_open_per_address`).
pub const IPV6_PREFIX_RANGE: (i64, i64) = (16, 64);
/// Bounds of `handshake_timeout`, in seconds.
pub const HANDSHAKE_TIMEOUT_RANGE: (i64, i64) = (1, 600);
/// Bounds of `handshakes_per_second` (0 turns the rate off).
pub const HANDSHAKE_RATE_RANGE: (i64, i64) = (0, 1_000_000);
/// Bounds of `handshake_burst`.
pub const HANDSHAKE_BURST_RANGE: (i64, i64) = (1, 1_000_000);
/// Most entries of `allow` and of `deny` (each datagram from an unknown source is checked
/// against them one by one).
pub const MAX_ACCESS_ENTRIES: usize = 1024;
/// Default `handshake_timeout`, in seconds: five retransmissions of the RFC 6347 timer (at
/// 1, 3, 7, 15 and 31 s) fit, the sixth (at 63 s) does not.
pub const DEFAULT_HANDSHAKE_TIMEOUT_SECS: u64 = 60;
/// Headroom of the derived per-shard cap over an even split (see [`Limits::per_shard`]).
const SHARD_HEADROOM: f64 = 1.25;
/// Slack added to the derived per-shard cap, for small caps where the spread is wide.
const SHARD_SLACK: usize = 64;

/// Keys of `[limits]`, as written (flags `--max-sessions` and `--max-sessions-per-shard`
/// override the first two).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    pub max_sessions: Option<i64>,
    pub max_sessions_per_shard: Option<i64>,
    pub max_half_open: Option<i64>,
    pub half_open_per_address: Option<i64>,
    pub half_open_per_prefix: Option<i64>,
    pub ipv4_prefix: Option<i64>,
    pub ipv6_prefix: Option<i64>,
    pub handshake_timeout: Option<i64>,
    pub handshakes_per_second: Option<i64>,
    pub handshake_burst: Option<i64>,
    pub sessions_per_address: Option<i64>,
    pub allow: Option<Vec<String>>,
    pub deny: Option<Vec<String>>,
}

/// Validated caps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Most sessions of the daemon.
    pub max_sessions: usize,
    /// Most sessions of one shard, or `None` to derive it from the shard count.
    pub max_sessions_per_shard: Option<usize>,
    /// Most half-open handshakes.
    pub max_half_open: usize,
    /// Most half-open handshakes per source address (IPv4 address, IPv6 /64).
    pub half_open_per_address: usize,
    /// Most half-open handshakes per prefix.
    pub half_open_per_prefix: usize,
    /// IPv4 prefix length of `half_open_per_prefix`.
    pub ipv4_prefix: u8,
    /// IPv6 prefix length of `half_open_per_prefix`.
    pub ipv6_prefix: u8,
    /// How long a handshake in progress may take before it gives up (both roles).
    pub handshake_timeout: std::time::Duration,
    /// Serve: new handshakes a second per source address (0: no rate). Reloadable.
    pub handshakes_per_second: u32,
    /// Serve: handshakes a source address may start at once before the rate applies.
    /// Reloadable.
    pub handshake_burst: u32,
    /// Serve: most sessions (established and half-open) per source address. Reloadable.
    pub sessions_per_address: usize,
    /// Serve: the allow and deny lists. Reloadable.
    pub access: AccessList,
}

impl Default for Limits {
    fn default() -> Self {
        let runtime = dtls_runtime::Limits::default();
        Self {
            max_sessions: DEFAULT_MAX_SESSIONS,
            max_sessions_per_shard: None,
            max_half_open: runtime.max_half_open,
            half_open_per_address: runtime.half_open_per_address,
            half_open_per_prefix: runtime.half_open_per_prefix,
            ipv4_prefix: runtime.ipv4_prefix,
            ipv6_prefix: runtime.ipv6_prefix,
            handshake_timeout: std::time::Duration::from_secs(DEFAULT_HANDSHAKE_TIMEOUT_SECS),
            handshakes_per_second: runtime.handshakes_per_second,
            handshake_burst: runtime.handshake_burst,
            sessions_per_address: runtime.sessions_per_address,
            access: AccessList::default(),
        }
    }
}

impl Limits {
    /// The per-shard cap with `shards` shards: the configured one, or an even split with
    /// 25 % headroom plus 64, at most `max_sessions`. The kernel's SO_REUSEPORT hash
    /// spreads peers over shards like balls into bins: with n sessions on k shards the
    /// fullest shard holds about n/k + 3·sqrt(n/k), which the headroom covers from about
    /// 150 sessions per shard up; the slack covers smaller caps.
    pub fn per_shard(&self, shards: usize) -> usize {
        self.max_sessions_per_shard.unwrap_or_else(|| {
            let even = self.max_sessions.div_ceil(shards.max(1));
            #[allow(
                clippy::cast_possible_truncation,
                clippy::cast_sign_loss,
                clippy::cast_precision_loss,
                reason = "a positive session count far below 2^52"
            )]
            let headroom = (even as f64 * SHARD_HEADROOM).ceil() as usize;
            (headroom + SHARD_SLACK).min(self.max_sessions)
        })
    }

    /// `self` with the keys a reload applies (the per-source rules and the access lists)
    /// taken from `new`.
    pub fn reloaded(&self, new: &Limits) -> Limits {
        Limits {
            handshakes_per_second: new.handshakes_per_second,
            handshake_burst: new.handshake_burst,
            sessions_per_address: new.sessions_per_address,
            access: new.access.clone(),
            ..self.clone()
        }
    }

    /// The control loop's caps with `shards` shards.
    pub fn runtime(&self, shards: usize) -> dtls_runtime::Limits {
        dtls_runtime::Limits {
            max_half_open: self.max_half_open,
            half_open_per_address: self.half_open_per_address,
            half_open_per_prefix: self.half_open_per_prefix,
            ipv4_prefix: self.ipv4_prefix,
            ipv6_prefix: self.ipv6_prefix,
            max_sessions: self.max_sessions,
            max_sessions_per_shard: self.per_shard(shards),
            handshakes_per_second: self.handshakes_per_second,
            handshake_burst: self.handshake_burst,
            sessions_per_address: self.sessions_per_address,
            ..dtls_runtime::Limits::default()
        }
    }
}

fn limits_error(key: &str, problem: Problem) -> ConfigError {
    ConfigError {
        key: Some(format!("limits.{key}")),
        problem,
    }
}

fn ranged(
    errors: &mut Vec<ConfigError>,
    key: &str,
    value: Option<i64>,
    (min, max): (i64, i64),
) -> Option<Option<usize>> {
    match value {
        None => Some(None),
        Some(v) if (min..=max).contains(&v) => usize::try_from(v).ok().map(Some),
        Some(value) => {
            errors.push(limits_error(key, Problem::OutOfRange { value, min, max }));
            None
        }
    }
}

/// Parses the CIDR ranges of `limits.KEY`, one error per bad entry (`limits.allow[2]`). A
/// bare address is a range of one (/32 or /128); host bits set below the prefix length
/// are an error (`10.0.0.1/8` is a typo for `10.0.0.0/8` or for `10.0.0.1/32`).
fn ranges(
    errors: &mut Vec<ConfigError>,
    key: &str,
    value: Option<&[String]>,
) -> Option<Vec<IpNet>> {
    let value = value.unwrap_or_default();
    let before = errors.len();
    if value.len() > MAX_ACCESS_ENTRIES {
        errors.push(limits_error(
            key,
            Problem::Exceeds {
                value: value.len(),
                other: "the most entries of a list",
                limit: MAX_ACCESS_ENTRIES,
            },
        ));
        return None;
    }
    let mut nets = Vec::with_capacity(value.len());
    for (i, text) in value.iter().enumerate() {
        let parsed = text
            .parse::<IpNet>()
            .or_else(|_| text.parse::<std::net::IpAddr>().map(IpNet::from));
        let problem = match parsed {
            Ok(net) if net.trunc() == net => {
                nets.push(net);
                continue;
            }
            Ok(net) => format!(
                "host bits are set below /{} (did you mean {}?)",
                net.prefix_len(),
                net.trunc()
            ),
            Err(_) => "not a CIDR range (ADDRESS/LENGTH) or an IP address".to_owned(),
        };
        errors.push(limits_error(
            &format!("{key}[{i}]"),
            Problem::BadRange {
                value: text.clone(),
                reason: problem,
            },
        ));
    }
    (errors.len() == before).then_some(nets)
}

/// Validates `[limits]`, pushing one error per bad key.
pub fn validate(raw: &RawLimits, errors: &mut Vec<ConfigError>) -> Option<Limits> {
    let d = Limits::default();
    let max_sessions = ranged(errors, "max_sessions", raw.max_sessions, SESSIONS_RANGE);
    let per_shard = ranged(
        errors,
        "max_sessions_per_shard",
        raw.max_sessions_per_shard,
        SESSIONS_RANGE,
    );
    let half_open = ranged(errors, "max_half_open", raw.max_half_open, HALF_OPEN_RANGE);
    let per_address = ranged(
        errors,
        "half_open_per_address",
        raw.half_open_per_address,
        HALF_OPEN_RANGE,
    );
    let per_prefix = ranged(
        errors,
        "half_open_per_prefix",
        raw.half_open_per_prefix,
        HALF_OPEN_RANGE,
    );
    let v4 = ranged(errors, "ipv4_prefix", raw.ipv4_prefix, IPV4_PREFIX_RANGE);
    let v6 = ranged(errors, "ipv6_prefix", raw.ipv6_prefix, IPV6_PREFIX_RANGE);
    let timeout = ranged(
        errors,
        "handshake_timeout",
        raw.handshake_timeout,
        HANDSHAKE_TIMEOUT_RANGE,
    );
    let rate = ranged(
        errors,
        "handshakes_per_second",
        raw.handshakes_per_second,
        HANDSHAKE_RATE_RANGE,
    );
    let burst = ranged(
        errors,
        "handshake_burst",
        raw.handshake_burst,
        HANDSHAKE_BURST_RANGE,
    );
    let per_address_sessions = ranged(
        errors,
        "sessions_per_address",
        raw.sessions_per_address,
        SESSIONS_RANGE,
    );
    let allow = ranges(errors, "allow", raw.allow.as_deref());
    let deny = ranges(errors, "deny", raw.deny.as_deref());
    let limits = Limits {
        max_sessions: max_sessions?.unwrap_or(d.max_sessions),
        max_sessions_per_shard: per_shard?,
        max_half_open: half_open?.unwrap_or(d.max_half_open),
        half_open_per_address: per_address?.unwrap_or(d.half_open_per_address),
        half_open_per_prefix: per_prefix?.unwrap_or(d.half_open_per_prefix),
        ipv4_prefix: u8::try_from(v4?.unwrap_or(usize::from(d.ipv4_prefix))).ok()?,
        ipv6_prefix: u8::try_from(v6?.unwrap_or(usize::from(d.ipv6_prefix))).ok()?,
        handshake_timeout: timeout?.map_or(d.handshake_timeout, |s| {
            std::time::Duration::from_secs(s as u64)
        }),
        handshakes_per_second: u32::try_from(rate?.unwrap_or(d.handshakes_per_second as usize))
            .ok()?,
        handshake_burst: u32::try_from(burst?.unwrap_or(d.handshake_burst as usize)).ok()?,
        sessions_per_address: per_address_sessions?.unwrap_or(d.sessions_per_address),
        access: AccessList {
            allow: allow?,
            deny: deny?,
        },
    };
    let before = errors.len();
    if let Some(per_shard) = limits.max_sessions_per_shard
        && per_shard > limits.max_sessions
    {
        errors.push(limits_error(
            "max_sessions_per_shard",
            Problem::Exceeds {
                value: per_shard,
                other: "limits.max_sessions",
                limit: limits.max_sessions,
            },
        ));
    }
    if limits.half_open_per_address > limits.half_open_per_prefix {
        errors.push(limits_error(
            "half_open_per_address",
            Problem::Exceeds {
                value: limits.half_open_per_address,
                other: "limits.half_open_per_prefix",
                limit: limits.half_open_per_prefix,
            },
        ));
    }
    (errors.len() == before).then_some(limits)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_per_shard_cap_has_headroom_and_never_exceeds_the_total() {
        let l = Limits {
            max_sessions: 16_384,
            ..Limits::default()
        };
        assert_eq!(l.per_shard(1), 16_384);
        assert_eq!(l.per_shard(4), 5_120 + 64);
        assert_eq!(l.per_shard(16), 1_280 + 64);
        let small = Limits {
            max_sessions: 10,
            ..Limits::default()
        };
        assert_eq!(small.per_shard(4), 10);
        let fixed = Limits {
            max_sessions_per_shard: Some(100),
            ..l
        };
        assert_eq!(fixed.per_shard(4), 100);
        assert_eq!(fixed.runtime(4).max_sessions_per_shard, 100);
    }

    #[test]
    fn per_source_keys_and_access_lists_validate() {
        let raw = RawLimits {
            handshakes_per_second: Some(0),
            handshake_burst: Some(5),
            sessions_per_address: Some(3),
            allow: Some(vec![
                "10.0.0.0/8".into(),
                "2001:db8::/32".into(),
                "192.0.2.7".into(),
            ]),
            deny: Some(vec!["10.66.0.0/16".into()]),
            ..RawLimits::default()
        };
        let mut errors = Vec::new();
        let l = validate(&raw, &mut errors).expect("valid");
        assert!(errors.is_empty());
        assert_eq!(
            (
                l.handshakes_per_second,
                l.handshake_burst,
                l.sessions_per_address
            ),
            (0, 5, 3)
        );
        let text: Vec<String> = l.access.allow.iter().map(ToString::to_string).collect();
        assert_eq!(text, ["10.0.0.0/8", "2001:db8::/32", "192.0.2.7/32"]);
        assert_eq!(l.access.deny.len(), 1);
        let r = l.runtime(2);
        assert_eq!(
            (
                r.handshakes_per_second,
                r.handshake_burst,
                r.sessions_per_address
            ),
            (0, 5, 3)
        );
        let d = Limits::default();
        assert_eq!(
            (
                d.handshakes_per_second,
                d.handshake_burst,
                d.sessions_per_address
            ),
            (100, 256, 1024)
        );
        assert_eq!(d.access, AccessList::default());
        // A reload takes the per-source keys and the lists, nothing else.
        let mut new = l.clone();
        new.max_sessions = 1;
        new.access.deny.clear();
        let reloaded = d.reloaded(&new);
        assert_eq!(reloaded.max_sessions, d.max_sessions);
        assert_eq!(reloaded.access, new.access);
        assert_eq!(reloaded.sessions_per_address, 3);
    }

    #[test]
    fn bad_per_source_keys_and_ranges_are_named() {
        let raw = RawLimits {
            handshakes_per_second: Some(-1),
            handshake_burst: Some(0),
            sessions_per_address: Some(0),
            allow: Some(vec![
                "10.0.0.0/8".into(),
                "2001:db8::/32".into(),
                "10.0.0/8".into(),
            ]),
            deny: Some(vec!["10.0.0.1/8".into(), "::1/129".into()]),
            ..RawLimits::default()
        };
        let mut errors = Vec::new();
        assert!(validate(&raw, &mut errors).is_none());
        let text: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert_eq!(text.len(), 6, "{text:?}");
        assert!(
            text[0].starts_with("limits.handshakes_per_second: -1 is out of range"),
            "{text:?}"
        );
        assert!(
            text[1].starts_with("limits.handshake_burst: 0 is out of range"),
            "{text:?}"
        );
        assert!(
            text[2].starts_with("limits.sessions_per_address: 0 is out of range"),
            "{text:?}"
        );
        assert_eq!(
            text[3],
            "limits.allow[2]: `10.0.0/8` is not usable: not a CIDR range (ADDRESS/LENGTH) or an IP address"
        );
        assert_eq!(
            text[4],
            "limits.deny[0]: `10.0.0.1/8` is not usable: host bits are set below /8 (did you mean 10.0.0.0/8?)"
        );
        assert!(text[5].starts_with("limits.deny[1]: `::1/129`"), "{text:?}");
        let raw = RawLimits {
            deny: Some(vec!["10.0.0.0/8".into(); MAX_ACCESS_ENTRIES + 1]),
            ..RawLimits::default()
        };
        let mut errors = Vec::new();
        assert!(validate(&raw, &mut errors).is_none());
        assert_eq!(
            errors[0].to_string(),
            "limits.deny: 1025 exceeds the most entries of a list (1024)"
        );
    }

    #[test]
    fn bad_keys_are_named() {
        let raw = RawLimits {
            max_sessions: Some(0),
            ipv4_prefix: Some(40),
            ..RawLimits::default()
        };
        let mut errors = Vec::new();
        assert!(validate(&raw, &mut errors).is_none());
        let text: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert!(
            text[0].starts_with("limits.max_sessions: 0 is out of range"),
            "{text:?}"
        );
        assert!(text[1].starts_with("limits.ipv4_prefix: 40"), "{text:?}");
        let raw = RawLimits {
            max_sessions: Some(100),
            max_sessions_per_shard: Some(200),
            half_open_per_address: Some(2000),
            ..RawLimits::default()
        };
        let mut errors = Vec::new();
        assert!(validate(&raw, &mut errors).is_none());
        let text: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert_eq!(
            text,
            vec![
                "limits.max_sessions_per_shard: 200 exceeds limits.max_sessions (100)",
                "limits.half_open_per_address: 2000 exceeds limits.half_open_per_prefix (1024)",
            ]
        );
    }
}
