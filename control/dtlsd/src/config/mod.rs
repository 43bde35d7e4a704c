//! The `dtlsd` configuration: TOML file and flags, merged and validated into
//! [`ServeConfig`] or [`ConnectConfig`].
//!
//! Flow: [`raw::load_file`] (TOML → [`RawServe`]/[`RawConnect`], unknown keys rejected),
//! [`merge::merge_serve`]/[`merge::merge_connect`] (flags override file values),
//! [`validate::validate_serve`]/[`validate::validate_connect`] (every problem found, each
//! naming its key). `docs/dtlsd.md` is the reference for every key.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use zeroize::Zeroizing;

pub mod cluster;
pub mod error;
pub mod limits;
pub mod merge;
pub mod raw;
pub mod validate;

#[cfg(test)]
mod tests;

pub use cluster::{Cluster, Node};
pub use error::{ConfigError, ConfigErrors, Problem, Role};
pub use raw::{
    IoMode, ListenSpec, LogFormat, ProxyProtocolMode, PskSpec, RawConfig, RawConnect, RawServe,
    UpstreamSourceMode,
};

/// Bounds of `mtu`, in bytes: 576 is the smallest datagram every IPv4 host must accept
/// (RFC 791), 9000 a jumbo frame.
pub const MTU_RANGE: (i64, i64) = (576, 9000);
/// Default `mtu`: an Ethernet MTU less room for a tunnel header.
pub const DEFAULT_MTU: u16 = 1400;
/// Bounds of `shards`.
pub const SHARDS_RANGE: (i64, i64) = (1, 1024);
/// Bounds of `control_threads`.
pub const CONTROL_THREADS_RANGE: (i64, i64) = (1, 64);
/// Bounds of `idle_timeout`, in seconds (one second to one day).
pub const IDLE_TIMEOUT_RANGE: (i64, i64) = (1, 86_400);
/// Default `idle_timeout`, in seconds.
pub const DEFAULT_IDLE_TIMEOUT_SECS: u64 = 300;
/// Bounds of `drain_timeout`, in seconds (0: close at once; at most an hour).
pub const DRAIN_TIMEOUT_RANGE: (i64, i64) = (0, 3_600);
/// Bounds of `keepalive`, in seconds (it must also be below `idle_timeout`).
pub const KEEPALIVE_RANGE: (i64, i64) = (1, 3_600);
/// Bounds of `connection_id_length`, in bytes (RFC 9146 §3 allows 0 to 255; a session here
/// holds CIDs of at most 20, QUIC-LB's maximum).
pub const CONNECTION_ID_LENGTH_RANGE: (i64, i64) = (0, 20);
/// Default `connection_id_length` of `serve`: room for a QUIC-LB CID naming node and shard.
pub const DEFAULT_SERVE_CID_LEN: u8 = 8;
/// Default `connection_id_length` of `connect`: send the server's CID, receive none (the
/// client's address is the one that changes; RFC 9146 §3).
pub const DEFAULT_CONNECT_CID_LEN: u8 = 0;
/// Default `versions`: DTLS 1.3 preferred, DTLS 1.2 for peers without it.
pub const DEFAULT_VERSIONS: [control::ProtocolVersion; 2] = [
    control::ProtocolVersion::Dtls1_3,
    control::ProtocolVersion::Dtls1_2,
];
/// `tls13_groups` names and what they stand for, in the default order (the hybrid
/// post-quantum group first).
pub const TLS13_GROUPS: [(&str, control::NamedGroup); 4] = [
    ("X25519MLKEM768", control::NamedGroup::X25519Mlkem768),
    ("X25519", control::NamedGroup::X25519),
    ("P-256", control::NamedGroup::Secp256r1),
    ("P-384", control::NamedGroup::Secp384r1),
];
/// `tls13_cipher_suites` names (RFC 8446 §B.4) and their suites, in the default order.
pub const TLS13_CIPHER_SUITES: [(&str, control::CipherSuite); 3] = [
    (
        "TLS_AES_128_GCM_SHA256",
        control::CipherSuite::Tls13Aes128GcmSha256,
    ),
    (
        "TLS_AES_256_GCM_SHA384",
        control::CipherSuite::Tls13Aes256GcmSha384,
    ),
    (
        "TLS_CHACHA20_POLY1305_SHA256",
        control::CipherSuite::Tls13Chacha20Poly1305Sha256,
    ),
];
/// Bounds of `io_batch`: datagrams per receive batch and per send kernel call. Each
/// message slot of the mmsg backend holds a 64 KiB receive buffer (a GRO batch), so 1024 is
/// 64 MiB per shard.
pub const IO_BATCH_RANGE: (i64, i64) = (1, 1024);
/// Bounds of `uring_buffers` (a power of two, at least `io_batch`): 64 KiB each, so 4096
/// pins 256 MiB per shard.
pub const URING_BUFFERS_RANGE: (i64, i64) = (1, 4096);
/// Bounds of `socket_recv_buffer` and `socket_send_buffer`, in bytes (4 KiB to 1 GiB; the
/// kernel doubles the request and, without CAP_NET_ADMIN, caps it at
/// `net.core.rmem_max`/`wmem_max`).
pub const SOCKET_BUFFER_RANGE: (i64, i64) = (4_096, 1 << 30);

/// Sizes of the shard sockets and their I/O backends (`io_batch`, `uring_buffers`, `gso`,
/// `socket_recv_buffer`, `socket_send_buffer`); the defaults are `dtls_io`'s.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataIo {
    /// Datagrams per receive batch, and send slots per kernel call (`IoConfig::batch`).
    pub batch: usize,
    /// io_uring provided buffers: the entries of the buffer ring the multishot receive
    /// fills (`IoConfig::uring_buffers`); a power of two, at least `batch`.
    pub uring_buffers: u16,
    /// UDP GSO on sends to peers and to upstream sockets.
    pub gso: bool,
    /// SO_RCVBUF asked for on each shard socket, in bytes.
    pub recv_buffer: usize,
    /// SO_SNDBUF asked for on each shard socket, in bytes.
    pub send_buffer: usize,
}

impl Default for DataIo {
    fn default() -> Self {
        let io = dtls_io::IoConfig::default();
        let socket = dtls_io::SocketConfig::default();
        Self {
            batch: io.batch,
            uring_buffers: io.uring_buffers,
            gso: io.gso,
            recv_buffer: socket.recv_buffer,
            send_buffer: socket.send_buffer,
        }
    }
}

impl DataIo {
    /// The `uring_buffers` used when the key is absent: the default, or the next power of
    /// two of `batch` when that is larger (the ring must hold a batch).
    pub fn default_uring_buffers(batch: usize) -> u16 {
        let default = DataIo::default().uring_buffers;
        u16::try_from(batch.next_power_of_two())
            .unwrap_or(u16::MAX)
            .max(default)
    }

    /// The backend settings a shard is built with.
    pub fn io_config(&self, mode: dtls_io::IoMode) -> dtls_io::IoConfig {
        dtls_io::IoConfig {
            mode,
            batch: self.batch,
            uring_buffers: self.uring_buffers,
            gso: self.gso,
            ..dtls_io::IoConfig::default()
        }
    }

    /// The socket settings a shard socket is bound with.
    pub fn socket_config(&self, only_v6: bool) -> dtls_io::SocketConfig {
        dtls_io::SocketConfig {
            only_v6,
            recv_buffer: self.recv_buffer,
            send_buffer: self.send_buffer,
            ..dtls_io::SocketConfig::default()
        }
    }
}

/// Longest PSK identity in bytes (RFC 4279 §2: `opaque psk_identity<0..2^16-1>`).
pub const MAX_PSK_IDENTITY_LEN: usize = 65_535;

/// A validated `dtlsd serve` configuration.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// UDP addresses DTLS clients connect to (at least one, no two alike), each with its
    /// own shards (see `crate::daemon`).
    pub listen: Vec<SocketAddr>,
    /// UDP address each session's plaintext is relayed to.
    pub backend: SocketAddr,
    /// How the server authenticates, and how it authenticates clients.
    pub credentials: ServerCredentials,
    /// The header in front of each session's datagrams to the backend, if any.
    pub proxy_protocol: Option<dtls_runtime::ProxyProtocol>,
    /// Attach the reuseport program that steers connection-ID records to the shard their
    /// CID names (in effect only with connection IDs long enough to name one).
    pub cid_steering: bool,
    /// Which address each session's upstream socket sends from (transparent: the client's).
    pub upstream_source: dtls_shard::UpstreamSource,
    /// This node's id (carried in the CIDs it issues) and the fleet's nodes.
    pub cluster: Cluster,
    /// The key store file shared by the fleet's nodes (`crate::keystore`), if any.
    pub key_store: Option<PathBuf>,
    /// Shards, I/O, MTU, timers, metrics, logs.
    pub tuning: Tuning,
}

/// Server credentials: a certificate, PSKs, or both (at least one).
#[derive(Debug, Clone)]
pub struct ServerCredentials {
    /// Certificate chain and key, for ECDHE_ECDSA/ECDHE_RSA suites.
    pub certificate: Option<CertKeyPaths>,
    /// PSKs clients may use (PSK suites), identities distinct.
    pub psks: Vec<Psk>,
    /// CA that client certificates must chain to; when set, client certificates are required.
    pub client_ca: Option<PathBuf>,
    /// Which verified client certificates may connect (`allow_cn`, `allow_dns`,
    /// `allow_uri`); empty: all of them.
    pub identity_rules: dtls_runtime::IdentityRules,
}

/// A validated `dtlsd connect` configuration.
#[derive(Debug, Clone)]
pub struct ConnectConfig {
    /// UDP address local plaintext clients send to.
    pub listen: SocketAddr,
    /// The DTLS server.
    pub server: SocketAddr,
    /// How the server is authenticated.
    pub trust: ServerTrust,
    /// Client certificate and key, offered when the server asks for one.
    pub client_certificate: Option<CertKeyPaths>,
    /// Shards, I/O, MTU, timers, metrics, logs.
    pub tuning: Tuning,
}

/// How `connect` authenticates the server.
#[derive(Debug, Clone)]
pub enum ServerTrust {
    /// The server's chain must lead to a CA in `ca` and be valid for `server_name`.
    Ca {
        /// PEM file of trusted CA certificates.
        ca: PathBuf,
        /// DNS name or IP address the certificate must be valid for.
        server_name: String,
    },
    /// Any certificate is accepted. For tests only.
    InsecureSkipVerify,
    /// PSK suites with this key.
    Psk(Psk),
}

/// A certificate chain file and its private key file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertKeyPaths {
    /// PEM certificate chain, end entity first.
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, SEC1 or PKCS#1).
    pub key: PathBuf,
}

/// One pre-shared key (RFC 4279). The key is zeroized on drop and never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Psk {
    /// The identity, sent in clear in ClientKeyExchange.
    pub identity: String,
    key: Zeroizing<Vec<u8>>,
}

impl Psk {
    /// A PSK from its identity and key bytes.
    pub fn new(identity: String, key: Vec<u8>) -> Self {
        Self {
            identity,
            key: Zeroizing::new(key),
        }
    }

    /// The key bytes.
    pub fn key(&self) -> &[u8] {
        &self.key
    }
}

impl fmt::Debug for Psk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Psk")
            .field("identity", &self.identity)
            .finish_non_exhaustive()
    }
}

/// Longest `admin_socket` path: a UNIX socket address holds 108 bytes with the NUL.
pub const MAX_ADMIN_SOCKET_PATH: usize = 107;

/// Where the admin socket (`dtlsd status`, `dtlsd kick`) listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminSocket {
    /// No admin socket (`admin_socket = "off"`).
    Off,
    /// `/run/dtlsd/MODE-IP-PORT.sock` for the listen address (see `crate::admin`); skipped
    /// with a warning when that directory cannot be made.
    Default,
    /// This path; a daemon that cannot listen there does not start.
    At(PathBuf),
}

/// Settings `serve` and `connect` share.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tuning {
    /// Number of shard threads, or `None` for one per available core (one per listed CPU
    /// when `cpus` is given).
    pub shards: Option<usize>,
    /// Number of handshake worker threads, or `None` for the default (see
    /// `crate::daemon::default_control_threads`).
    pub control_threads: Option<usize>,
    /// The CPUs shards are pinned to, in order (shard i on `cpus[i % len]`); `None`: the
    /// CPUs of the process's affinity mask.
    pub cpus: Option<Vec<usize>>,
    /// Datagram I/O backend.
    pub io: IoMode,
    /// Batch, ring, GSO and socket buffer sizes of the shards' I/O.
    pub data_io: DataIo,
    /// The interface AF_XDP attaches to (serve only): always `Some` when `io` is `Xdp`; with
    /// `Auto`, AF_XDP is tried first when it is `Some`.
    pub interface: Option<String>,
    /// Path MTU assumed toward peers, in bytes.
    pub mtu: u16,
    /// Where Prometheus metrics are served, if anywhere.
    pub metrics: Option<SocketAddr>,
    /// The admin socket of `dtlsd status` and `dtlsd kick`.
    pub admin_socket: AdminSocket,
    /// A session with no traffic for this long is closed.
    pub idle_timeout: Duration,
    /// On SIGTERM/SIGINT: how long live sessions may run on, with new handshakes refused,
    /// before close_notify (zero: close at once). Reloadable (main reads the latest).
    pub drain_timeout: Duration,
    /// Heartbeat probe interval on idle sessions, if any.
    pub keepalive: Option<Duration>,
    /// Log line format.
    pub log_format: LogFormat,
    /// Caps on sessions and half-open handshakes (`[limits]`).
    pub limits: limits::Limits,
    /// Share the listen address with a process already bound to it (a restart) instead of
    /// refusing to start; see `crate::portprobe`.
    pub takeover: bool,
    /// An IPv6 wildcard listen address takes IPv4 clients too (IPV6_V6ONLY off).
    pub dual_stack: bool,
    /// The account to run as once sockets are bound and files read (`user`, `group`).
    pub run_as: Option<crate::privileges::RunAs>,
    /// Connection IDs (RFC 9146): off, or on with the length of the CID we ask for.
    pub connection_id: control::ConnectionIds,
    /// The return-routability check (RFC 9853) offered and answered with connection IDs.
    pub rrc: bool,
    /// DTLS versions negotiated, in preference order.
    pub versions: Vec<control::ProtocolVersion>,
    /// DTLS 1.3 key-exchange groups, in preference order.
    pub tls13_groups: Vec<control::NamedGroup>,
    /// DTLS 1.3 cipher suites, in preference order.
    pub tls13_cipher_suites: Vec<control::CipherSuite>,
}

impl Tuning {
    /// Keys whose value differs between `self` and `other` (what a reload cannot apply).
    pub fn changed_keys(&self, other: &Tuning) -> Vec<&'static str> {
        let mut keys = Vec::new();
        let mut check = |key, changed: bool| {
            if changed {
                keys.push(key);
            }
        };
        check("shards", self.shards != other.shards);
        check(
            "control_threads",
            self.control_threads != other.control_threads,
        );
        check("cpus", self.cpus != other.cpus);
        check("dual_stack", self.dual_stack != other.dual_stack);
        check("user", self.run_as != other.run_as);
        check("io", self.io != other.io);
        check("io_batch", self.data_io.batch != other.data_io.batch);
        check(
            "uring_buffers",
            self.data_io.uring_buffers != other.data_io.uring_buffers,
        );
        check("gso", self.data_io.gso != other.data_io.gso);
        check(
            "socket_recv_buffer",
            self.data_io.recv_buffer != other.data_io.recv_buffer,
        );
        check(
            "socket_send_buffer",
            self.data_io.send_buffer != other.data_io.send_buffer,
        );
        check("interface", self.interface != other.interface);
        check("mtu", self.mtu != other.mtu);
        check("metrics", self.metrics != other.metrics);
        check("admin_socket", self.admin_socket != other.admin_socket);
        check("idle_timeout", self.idle_timeout != other.idle_timeout);
        check("keepalive", self.keepalive != other.keepalive);
        check("log_format", self.log_format != other.log_format);
        // The per-source rules and the access lists are applied by a reload.
        check(
            "limits",
            self.limits.reloaded(&other.limits) != other.limits,
        );
        check("connection_id", self.connection_id != other.connection_id);
        check("rrc", self.rrc != other.rrc);
        check("versions", self.versions != other.versions);
        check("tls13_groups", self.tls13_groups != other.tls13_groups);
        check(
            "tls13_cipher_suites",
            self.tls13_cipher_suites != other.tls13_cipher_suites,
        );
        keys
    }
}

impl ServeConfig {
    /// Keys that differ from `new` and need a restart (SIGHUP applies `cert`, `key`,
    /// `client_ca`, `psk`, `allow_cn`, `allow_dns`, `allow_uri` and, of `[limits]`,
    /// `handshakes_per_second`, `handshake_burst`, `sessions_per_address`, `allow` and
    /// `deny`).
    pub fn restart_required(&self, new: &ServeConfig) -> Vec<&'static str> {
        let mut keys = Vec::new();
        if self.listen != new.listen {
            keys.push("listen");
        }
        if self.backend != new.backend {
            keys.push("backend");
        }
        if self.proxy_protocol != new.proxy_protocol {
            keys.push("proxy_protocol");
        }
        if self.cid_steering != new.cid_steering {
            keys.push("cid_steering");
        }
        if self.upstream_source != new.upstream_source {
            keys.push("upstream_source");
        }
        if self.cluster.node_id != new.cluster.node_id {
            keys.push("node_id");
        }
        if self.cluster.nodes != new.cluster.nodes {
            keys.push("nodes");
        }
        if self.key_store != new.key_store {
            keys.push("key_store");
        }
        keys.extend(self.tuning.changed_keys(&new.tuning));
        keys
    }
}

impl ConnectConfig {
    /// Keys that differ from `new` and need a restart (SIGHUP applies `ca`,
    /// `server_name`, `insecure_skip_verify`, `psk`, `cert` and `key`).
    pub fn restart_required(&self, new: &ConnectConfig) -> Vec<&'static str> {
        let mut keys = Vec::new();
        if self.listen != new.listen {
            keys.push("listen");
        }
        if self.server != new.server {
            keys.push("server");
        }
        keys.extend(self.tuning.changed_keys(&new.tuning));
        keys
    }
}

/// A validated configuration of either command.
#[derive(Debug, Clone)]
pub enum Config {
    /// For `dtlsd serve`.
    Serve(ServeConfig),
    /// For `dtlsd connect`.
    Connect(ConnectConfig),
}

impl Config {
    /// Which command it is for.
    pub fn role(&self) -> Role {
        match self {
            Config::Serve(_) => Role::Serve,
            Config::Connect(_) => Role::Connect,
        }
    }
}

/// Validates a file's table without flags (what `dtlsd check-config` does before loading
/// the PEM files).
///
/// # Errors
/// Every problem found.
pub fn validate(raw: RawConfig) -> Result<Config, ConfigErrors> {
    match raw {
        RawConfig::Serve(s) => validate::validate_serve(s).map(Config::Serve),
        RawConfig::Connect(c) => validate::validate_connect(c).map(Config::Connect),
    }
}
