//! Configuration errors: each names the key (`table.key`) it is about.

use std::fmt;
use std::path::PathBuf;

/// Which command a configuration is for; also the TOML table its keys live in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// `dtlsd serve`, table `[serve]`.
    Serve,
    /// `dtlsd connect`, table `[connect]`.
    Connect,
}

impl Role {
    /// The TOML table name (`serve` or `connect`).
    pub fn table(self) -> &'static str {
        match self {
            Role::Serve => "serve",
            Role::Connect => "connect",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.table())
    }
}

/// One problem with one configuration key.
///
/// Displays as `table.key: problem`, e.g. `serve.mtu: 50 is out of range: must be between
/// 576 and 9000`. Secrets (PSK keys) never appear in the message.
#[derive(Debug, thiserror::Error)]
#[error("{}{problem}", key.as_ref().map_or(String::new(), |k| format!("{k}: ")))]
pub struct ConfigError {
    /// The dotted key path (`serve.mtu`, `connect.psk`, `serve.psk[1]`, a table name, or
    /// `--config`); `None` for problems of the whole file.
    pub key: Option<String>,
    /// What is wrong with it.
    pub problem: Problem,
}

impl ConfigError {
    /// An error about the whole file.
    pub fn file(problem: Problem) -> Self {
        Self { key: None, problem }
    }

    /// An error about `key` in the table of `role`.
    pub fn new(role: Role, key: &str, problem: Problem) -> Self {
        Self {
            key: Some(format!("{}.{key}", role.table())),
            problem,
        }
    }
}

/// What is wrong with a key.
#[derive(Debug, thiserror::Error)]
pub enum Problem {
    /// The configuration file could not be read.
    #[error("cannot read config file {}: {source}", path.display())]
    ConfigFileUnreadable {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The TOML is malformed, has a value of the wrong type, or has a key no table knows.
    #[error("{message}{}", line.map_or(String::new(), |l| format!(" (line {l})")))]
    Toml {
        /// The TOML parser's message, on one line.
        message: String,
        /// The 1-based line the parser pointed at, when known.
        line: Option<usize>,
    },
    /// The file has neither a `[serve]` nor a `[connect]` table, or both.
    #[error("{reason}")]
    Tables {
        /// What is wrong.
        reason: &'static str,
    },
    /// A required key is absent (from both the file and the flags).
    #[error("missing (set it in the file or with {flag})")]
    Missing {
        /// The command-line flag that sets it.
        flag: &'static str,
    },
    /// A number outside its bounds.
    #[error("{value} is out of range: must be between {min} and {max}")]
    OutOfRange {
        /// The value given.
        value: i64,
        /// Smallest value allowed.
        min: i64,
        /// Largest value allowed.
        max: i64,
    },
    /// A value that is not a socket address, or one that cannot be used.
    #[error("`{value}` is not a usable socket address: {reason}")]
    BadAddress {
        /// The value given.
        value: String,
        /// Why.
        reason: String,
    },
    /// A PSK that is not `ID:HEX`, or whose identity or key is unusable. The key itself is
    /// never echoed.
    #[error("PSK {reason}")]
    BadPsk {
        /// Why, naming the identity where one was parsed.
        reason: String,
    },
    /// Two PSKs share one identity.
    #[error("PSK identity `{identity}` is given twice")]
    DuplicatePskIdentity {
        /// The identity.
        identity: String,
    },
    /// The server name is neither a DNS name nor an IP address.
    #[error("`{value}` is not a valid DNS name or IP address")]
    BadServerName {
        /// The value given.
        value: String,
    },
    /// A `cpus` value that cannot be used.
    #[error("`{value}` is not a CPU list: {reason}")]
    BadCpuList {
        /// The value given.
        value: String,
        /// Why it cannot be used.
        reason: String,
    },
    /// `admin_socket` is neither `off` nor a usable socket path.
    #[error("`{value}` is not a usable admin socket: {reason}")]
    BadAdminSocket {
        /// The value given.
        value: String,
        /// Why.
        reason: String,
    },
    /// `versions` is empty, names a version other than `1.2` and `1.3`, or names one twice.
    #[error("`{value}` is not a usable DTLS version list: {reason}")]
    BadVersions {
        /// The value given (its entries joined by commas).
        value: String,
        /// Why.
        reason: &'static str,
    },
    /// `tls13_groups` or `tls13_cipher_suites` is empty, names something unknown, or
    /// names one entry twice.
    #[error("`{value}` is not a usable list: {reason}")]
    BadList {
        /// The value given (its entries joined by commas).
        value: String,
        /// Why.
        reason: String,
    },
    /// `io = "xdp"` in `[connect]`.
    #[error("\"xdp\" is only for serve (connect's listen side is local plaintext)")]
    XdpServeOnly,
    /// `io = "xdp"` without `interface`.
    #[error(
        "io = \"xdp\" needs the interface to attach to (set it in the file or with --interface)"
    )]
    XdpNeedsInterface,
    /// Not a network interface name.
    #[error("`{value}` is not an interface name (1 to 15 bytes, no `/` or whitespace)")]
    BadInterface {
        /// The value given.
        value: String,
    },
    /// The key needs another key that is absent.
    #[error("requires `{other}` to be set too")]
    Requires {
        /// The other key.
        other: &'static str,
    },
    /// The key cannot be combined with another key that is set.
    #[error("cannot be combined with `{other}`")]
    Conflicts {
        /// The other key.
        other: &'static str,
    },
    /// Transparent mode with `listen` and `backend` of different address families: each
    /// upstream socket binds a client's address (the listen family) and connects to the
    /// backend.
    #[error(
        "`transparent` needs `listen` ({listen}) and `backend` ({backend}) in one address family"
    )]
    TransparentFamilies {
        /// The listen address.
        listen: std::net::SocketAddr,
        /// The backend address.
        backend: std::net::SocketAddr,
    },
    /// None of the keys that supply credentials is set.
    #[error("no credentials: set {needed}")]
    NoCredentials {
        /// Which keys could supply them.
        needed: &'static str,
    },
    /// `keepalive` must be shorter than `idle_timeout`, or sessions expire before a probe.
    #[error("{keepalive} s must be shorter than idle_timeout ({idle_timeout} s)")]
    KeepaliveNotBelowIdle {
        /// The keepalive interval.
        keepalive: i64,
        /// The idle timeout.
        idle_timeout: i64,
    },
    /// A size in range that the backend still cannot use (e.g. `uring_buffers` not a power
    /// of two).
    #[error("{value} is not usable: {reason}")]
    BadSize {
        /// The value given.
        value: i64,
        /// Why.
        reason: &'static str,
    },
    /// An allow or deny list entry that is not a CIDR range.
    #[error("`{value}` is not usable: {reason}")]
    BadRange {
        /// The entry as written.
        value: String,
        /// Why.
        reason: String,
    },
    /// A user or group name the system does not know.
    #[error("{reason}")]
    BadAccount {
        /// Why (which name, which database).
        reason: String,
    },
    /// A value that must be unique (a node's id, name or address) appears twice.
    #[error("`{value}` is given twice")]
    Duplicate {
        /// The value.
        value: String,
    },
    /// A node id or name that no `[[nodes]]` table lists.
    #[error("`{value}` is not listed in [[nodes]]")]
    NodeNotListed {
        /// The id or name given.
        value: String,
    },
    /// A string that must not be empty.
    #[error("must not be empty")]
    Empty,
    /// An identity rule that can match nothing.
    #[error("an empty name matches no certificate")]
    EmptyName,
    /// A number larger than another key's value allows.
    #[error("{value} exceeds {other} ({limit})")]
    Exceeds {
        /// The value given.
        value: usize,
        /// The key that bounds it.
        other: &'static str,
        /// That key's value.
        limit: usize,
    },
    /// A file named by the key is missing, unreadable or not a regular file.
    #[error("cannot read {}: {reason}", path.display())]
    FileUnreadable {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A PEM file named by the key does not hold what it should.
    #[error("{source}")]
    Pem {
        /// What dtls-crypto reported (names the file).
        source: dtls_crypto::Error,
    },
    /// A certificate chain or private key that cannot authenticate a handshake, or (as a
    /// warning) one that expires soon or whose key file others can read; see
    /// `crate::certcheck`.
    #[error("{source}")]
    Credential {
        /// What the check found (names the file); boxed, it is large.
        source: Box<crate::certcheck::CredentialProblem>,
    },
    /// The key store file does not load (`crate::keystore`); never holds a secret.
    #[error("{reason}")]
    KeyStore {
        /// Why, naming the file and the store's key.
        reason: String,
    },
}

/// All the problems found in one configuration.
#[derive(Debug)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    /// One error per line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

impl From<ConfigError> for ConfigErrors {
    fn from(e: ConfigError) -> Self {
        Self(vec![e])
    }
}
