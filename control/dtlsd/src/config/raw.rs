//! The configuration as written: every key optional, straight from TOML or from flags.
//!
//! A file holds exactly one table, `[serve]` or `[connect]`; its keys are the long flags of
//! that command with `_` for `-` (`--idle-timeout` is `idle_timeout`). Unknown keys and
//! unknown tables are errors (`deny_unknown_fields`) that name the key and its table.
//! Values are checked later, by [`super::validate`].

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::Deserialize;
use zeroize::Zeroizing;

use super::cluster::RawNode;
use super::error::{ConfigError, Problem};
use super::limits::RawLimits;

/// Which datagram I/O backend the shards use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum IoMode {
    /// AF_XDP when `interface` is set and it can be set up, else io_uring where the kernel
    /// allows it, else recvmmsg/sendmmsg (each fallback logged with its reason).
    #[default]
    Auto,
    /// io_uring only; setting it up failing is an error.
    Uring,
    /// recvmmsg/sendmmsg.
    Mmsg,
    /// AF_XDP on `interface` (serve only): an XDP program hands the listen address's UDP
    /// to one AF_XDP socket per shard (shard i on receive queue i); setting it up failing
    /// is an error.
    Xdp,
}

/// How log lines are written (to stderr).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Human,
    /// One JSON object per line.
    Json,
}

/// What `serve` tells the backend about each session's client (`proxy_protocol`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, clap::ValueEnum)]
pub enum ProxyProtocolMode {
    /// Plaintext as it is: the backend sees the daemon's address.
    #[default]
    #[serde(rename = "off")]
    #[value(name = "off")]
    Off,
    /// A PROXY protocol v2 header on the first datagram of each session.
    #[serde(rename = "v2-first")]
    #[value(name = "v2-first")]
    V2First,
    /// A PROXY protocol v2 header on every datagram.
    #[serde(rename = "v2-every")]
    #[value(name = "v2-every")]
    V2Every,
    /// Cloudflare's Simple Proxy Protocol header (38 bytes) on every datagram.
    #[serde(rename = "spp")]
    #[value(name = "spp")]
    Spp,
}

/// Which address `serve` sends each session's plaintext to the backend from
/// (`upstream_source`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum UpstreamSourceMode {
    /// The daemon's own address, an ephemeral port per session.
    #[default]
    Daemon,
    /// The client's own address and port (IP_TRANSPARENT): the backend sees the real client.
    /// Needs CAP_NET_ADMIN or CAP_NET_RAW and policy routing for the replies.
    Transparent,
}

/// A PSK as given, `ID:HEX`, not parsed yet. Zeroized on drop; `Debug` shows nothing.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(from = "String")]
pub struct PskSpec(pub Zeroizing<String>);

impl fmt::Debug for PskSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PskSpec(<redacted>)")
    }
}

impl From<String> for PskSpec {
    fn from(s: String) -> Self {
        Self(Zeroizing::new(s))
    }
}

impl FromStr for PskSpec {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self(Zeroizing::new(s.to_owned())))
    }
}

/// `listen` of `[serve]`: one address (`listen = "IP:PORT"`) or several (`listen = ["IP:PORT",
/// ...]`, or `--listen` repeated).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum ListenSpec {
    /// One address.
    One(String),
    /// A list of addresses.
    Many(Vec<String>),
}

impl ListenSpec {
    /// Each address with the key that names it in errors: `listen` for the one-address
    /// form, `listen[i]` in a list.
    pub fn entries(&self) -> Vec<(String, &str)> {
        match self {
            ListenSpec::One(addr) => vec![("listen".to_owned(), addr.as_str())],
            ListenSpec::Many(list) => list
                .iter()
                .enumerate()
                .map(|(i, addr)| (format!("listen[{i}]"), addr.as_str()))
                .collect(),
        }
    }
}

impl From<&str> for ListenSpec {
    fn from(addr: &str) -> Self {
        ListenSpec::One(addr.to_owned())
    }
}

/// Keys of `[serve]`; see `docs/dtlsd.md` for each.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServe {
    pub listen: Option<ListenSpec>,
    pub backend: Option<String>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub psk: Option<Vec<PskSpec>>,
    pub client_ca: Option<PathBuf>,
    pub allow_cn: Option<Vec<String>>,
    pub allow_dns: Option<Vec<String>>,
    pub allow_uri: Option<Vec<String>>,
    pub proxy_protocol: Option<ProxyProtocolMode>,
    pub cid_steering: Option<bool>,
    pub upstream_source: Option<UpstreamSourceMode>,
    pub shards: Option<i64>,
    pub control_threads: Option<i64>,
    pub cpus: Option<String>,
    pub io: Option<IoMode>,
    pub io_batch: Option<i64>,
    pub uring_buffers: Option<i64>,
    pub gso: Option<bool>,
    pub socket_recv_buffer: Option<i64>,
    pub socket_send_buffer: Option<i64>,
    pub interface: Option<String>,
    pub mtu: Option<i64>,
    pub metrics: Option<String>,
    pub admin_socket: Option<String>,
    pub idle_timeout: Option<i64>,
    pub drain_timeout: Option<i64>,
    pub keepalive: Option<i64>,
    pub log_format: Option<LogFormat>,
    pub takeover: Option<bool>,
    pub dual_stack: Option<bool>,
    pub user: Option<String>,
    pub group: Option<String>,
    pub connection_id: Option<bool>,
    pub connection_id_length: Option<i64>,
    pub rrc: Option<bool>,
    pub versions: Option<Vec<String>>,
    pub tls13_groups: Option<Vec<String>>,
    pub tls13_cipher_suites: Option<Vec<String>>,
    pub node_id: Option<i64>,
    pub node_name: Option<String>,
    pub key_store: Option<PathBuf>,
    /// The file's `[limits]` table (a sibling of `[serve]`).
    #[serde(skip)]
    pub limits: RawLimits,
    /// The file's `[[nodes]]` tables (siblings of `[serve]`).
    #[serde(skip)]
    pub nodes: Vec<RawNode>,
}

/// Keys of `[connect]`; see `docs/dtlsd.md` for each.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConnect {
    pub listen: Option<String>,
    pub server: Option<String>,
    pub ca: Option<PathBuf>,
    pub server_name: Option<String>,
    pub insecure_skip_verify: Option<bool>,
    pub psk: Option<PskSpec>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub shards: Option<i64>,
    pub control_threads: Option<i64>,
    pub cpus: Option<String>,
    pub io: Option<IoMode>,
    pub io_batch: Option<i64>,
    pub uring_buffers: Option<i64>,
    pub gso: Option<bool>,
    pub socket_recv_buffer: Option<i64>,
    pub socket_send_buffer: Option<i64>,
    pub mtu: Option<i64>,
    pub metrics: Option<String>,
    pub admin_socket: Option<String>,
    pub idle_timeout: Option<i64>,
    pub drain_timeout: Option<i64>,
    pub keepalive: Option<i64>,
    pub log_format: Option<LogFormat>,
    pub takeover: Option<bool>,
    pub dual_stack: Option<bool>,
    pub user: Option<String>,
    pub group: Option<String>,
    pub connection_id: Option<bool>,
    pub connection_id_length: Option<i64>,
    pub rrc: Option<bool>,
    pub versions: Option<Vec<String>>,
    pub tls13_groups: Option<Vec<String>>,
    pub tls13_cipher_suites: Option<Vec<String>>,
    /// The file's `[limits]` table (a sibling of `[connect]`).
    #[serde(skip)]
    pub limits: RawLimits,
}

/// A whole configuration file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFile {
    pub serve: Option<RawServe>,
    pub connect: Option<RawConnect>,
    pub limits: Option<RawLimits>,
    pub nodes: Option<Vec<RawNode>>,
}

/// A file's one table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RawConfig {
    /// A `[serve]` table.
    Serve(RawServe),
    /// A `[connect]` table.
    Connect(RawConnect),
}

/// Reads and parses a configuration file. Relative paths in it (`cert`, `key`, `ca`,
/// `client_ca`) are taken relative to the file's directory.
///
/// # Errors
/// The file cannot be read, is not TOML of the expected shape, or has zero or two tables.
/// Problems that belong to no key have no key.
pub fn load_file(path: &Path) -> Result<RawConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| {
        ConfigError::file(Problem::ConfigFileUnreadable {
            path: path.to_path_buf(),
            source,
        })
    })?;
    let mut raw = parse_str(&text)?;
    if let Some(dir) = path.parent() {
        raw.resolve_relative_paths(dir);
    }
    Ok(raw)
}

/// Parses configuration text (paths are left as written).
///
/// # Errors
/// As [`load_file`].
pub fn parse_str(text: &str) -> Result<RawConfig, ConfigError> {
    let file: RawFile = toml::from_str(text).map_err(|e| toml_error(text, &e))?;
    let limits = file.limits.unwrap_or_default();
    match (file.serve, file.connect) {
        (Some(serve), None) => Ok(RawConfig::Serve(RawServe {
            limits,
            nodes: file.nodes.unwrap_or_default(),
            ..serve
        })),
        (None, Some(_)) if file.nodes.is_some() => Err(ConfigError {
            key: Some("nodes".to_owned()),
            problem: Problem::Tables {
                reason: "[[nodes]] configures `dtlsd serve` only",
            },
        }),
        (None, Some(connect)) => Ok(RawConfig::Connect(RawConnect { limits, ..connect })),
        (None, None) => Err(ConfigError::file(Problem::Tables {
            reason: "no [serve] or [connect] table",
        })),
        (Some(_), Some(_)) => Err(ConfigError::file(Problem::Tables {
            reason: "both [serve] and [connect] tables: one file configures one command",
        })),
    }
}

impl RawConfig {
    fn resolve_relative_paths(&mut self, dir: &Path) {
        let fix = |p: &mut Option<PathBuf>| {
            if let Some(path) = p.as_mut().filter(|p| p.is_relative()) {
                *path = dir.join(&*path);
            }
        };
        match self {
            RawConfig::Serve(s) => {
                fix(&mut s.key_store);
                fix(&mut s.cert);
                fix(&mut s.key);
                fix(&mut s.client_ca);
            }
            RawConfig::Connect(c) => {
                fix(&mut c.cert);
                fix(&mut c.key);
                fix(&mut c.ca);
            }
        }
    }
}

/// Turns a TOML error into one line naming `table.key`, found from the error's position:
/// the key is the `key =` on (or above) the line the parser pointed at, the table the last
/// `[table]` header above it.
fn toml_error(text: &str, err: &toml::de::Error) -> ConfigError {
    let message = err.message().replace('\n', " ").trim().to_owned();
    let Some(span) = err.span() else {
        return ConfigError::file(Problem::Toml {
            message,
            line: None,
        });
    };
    let start = span.start.min(text.len());
    let line_index = text
        .get(..start)
        .map_or(0, |before| before.matches('\n').count());
    let lines: Vec<&str> = text.lines().collect();
    let mut key = None;
    let mut table = None;
    for (i, l) in lines.iter().enumerate().take(line_index + 1).rev() {
        let t = l.trim();
        if let Some(header) = t.strip_prefix('[') {
            let name = header.trim_start_matches('[');
            let name = name.split(']').next().unwrap_or(name).trim().to_owned();
            if i == line_index {
                // The error is about the header itself (e.g. an unknown table).
                key = Some(name);
            } else {
                table = Some(name);
            }
            break;
        }
        if key.is_none()
            && let Some((k, _)) = t.split_once('=')
        {
            let k = k.trim().trim_matches('"');
            if !k.is_empty()
                && k.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
            {
                key = Some(k.to_owned());
            }
        }
    }
    let key = match (table, key) {
        (Some(t), Some(k)) => Some(format!("{t}.{k}")),
        (None, Some(k)) => Some(k),
        (Some(t), None) => Some(t),
        (None, None) => None,
    };
    ConfigError {
        key,
        problem: Problem::Toml {
            message,
            line: Some(line_index + 1),
        },
    }
}
