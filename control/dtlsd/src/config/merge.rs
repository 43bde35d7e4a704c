//! Command-line flags of `serve` and `connect`, and their merge over a config file: a flag
//! that is given overrides the file's key; a repeated `--psk` (or a `--versions` list)
//! replaces the file's whole list; the boolean flags (`--insecure-skip-verify`, `--takeover`,
//! `--transparent`) can only turn their key on (and `--no-gso` its key off).

use std::path::PathBuf;

use clap::Args;

use super::error::{ConfigError, ConfigErrors, Problem, Role};
use super::limits::RawLimits;
use super::raw::{
    self, IoMode, ListenSpec, LogFormat, ProxyProtocolMode, PskSpec, RawConfig, RawConnect,
    RawServe, UpstreamSourceMode,
};
use super::validate::{validate_connect, validate_serve};
use super::{ConnectConfig, ServeConfig};

/// Settings `serve` and `connect` share (`[same tuning flags]` in the usage).
#[derive(Debug, Clone, Default, Args)]
pub struct TuningFlags {
    /// Shard threads, one pinned per core [default: one per available core; 1..=1024].
    #[arg(long, value_name = "N")]
    pub shards: Option<i64>,
    /// Handshake worker threads of the control plane [default: the cores left over by the
    /// shards, between 1 and 8; 1..=64].
    #[arg(long, value_name = "N")]
    pub control_threads: Option<i64>,
    /// CPUs the shards are pinned to, in order, e.g. `2-7` or `0,2,4-5` (each must be in
    /// the process's affinity mask); shard i runs on the i-th, round robin [default: the
    /// CPUs the process may use (taskset, systemd CPUAffinity=); --shards defaults to
    /// their number when this is given].
    #[arg(long, value_name = "LIST")]
    pub cpus: Option<String>,
    /// Datagram I/O backend; `auto` tries AF_XDP first when --interface is given, then
    /// io_uring, then recvmmsg/sendmmsg, logging why each one it passes over cannot be used;
    /// `xdp` (serve only, with --interface) is AF_XDP, an error when it cannot be set up
    /// [default: auto].
    #[arg(long, value_enum, value_name = "BACKEND")]
    pub io: Option<IoMode>,
    /// Datagrams per receive batch and per send kernel call of each shard (io_uring and
    /// mmsg) [default: 32; 1..=1024].
    #[arg(long, value_name = "N")]
    pub io_batch: Option<i64>,
    /// io_uring provided receive buffers per shard (64 KiB each), a power of two of at
    /// least --io-batch [default: 64, or --io-batch rounded up to a power of two when that
    /// is more; 1..=4096].
    #[arg(long, value_name = "N")]
    pub uring_buffers: Option<i64>,
    /// Send equal-size datagrams to one peer one by one instead of as one UDP GSO
    /// super-datagram [default: GSO on where the kernel takes it].
    #[arg(long)]
    pub no_gso: bool,
    /// SO_RCVBUF asked for on each shard socket, in bytes (the kernel caps it at
    /// net.core.rmem_max without CAP_NET_ADMIN) [default: 8388608; 4096..=1073741824].
    #[arg(long, value_name = "BYTES")]
    pub socket_recv_buffer: Option<i64>,
    /// SO_SNDBUF asked for on each shard socket, in bytes (capped at net.core.wmem_max
    /// without CAP_NET_ADMIN) [default: 8388608; 4096..=1073741824].
    #[arg(long, value_name = "BYTES")]
    pub socket_send_buffer: Option<i64>,
    /// Path MTU toward peers, in bytes [default: 1400; 576..=9000].
    #[arg(long, value_name = "BYTES")]
    pub mtu: Option<i64>,
    /// Serve Prometheus metrics at http://ADDR/metrics (and /healthz) [default: off].
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<String>,
    /// Admin UNIX socket for `dtlsd status` and `dtlsd kick` (mode 0600), or `off`
    /// [default: /run/dtlsd/MODE-IP-PORT.sock, skipped with a warning when /run/dtlsd cannot
    /// be created].
    #[arg(long, value_name = "PATH")]
    pub admin_socket: Option<String>,
    /// Close a session after this many seconds without traffic [default: 300; 1..=86400].
    #[arg(long, value_name = "SECS")]
    pub idle_timeout: Option<i64>,
    /// On SIGTERM/SIGINT, refuse new handshakes and let live sessions run this many seconds
    /// (or until they all end) before close_notify; a second signal ends the drain at once
    /// [default: 0, close at once; 0..=3600]. Reloadable.
    #[arg(long, value_name = "SECS")]
    pub drain_timeout: Option<i64>,
    /// Send a heartbeat probe to sessions idle this many seconds; must be below
    /// --idle-timeout [default: off; 1..=3600].
    #[arg(long, value_name = "SECS")]
    pub keepalive: Option<i64>,
    /// Most sessions of the daemon, installed or in handshake; more are refused with an
    /// alert [default: 16384, or the file's limits.max_sessions].
    #[arg(long, value_name = "N")]
    pub max_sessions: Option<i64>,
    /// Most sessions of one shard [default: derived from --max-sessions and --shards with
    /// 25 % headroom, see docs/dtlsd.md].
    #[arg(long, value_name = "N")]
    pub max_sessions_per_shard: Option<i64>,
    /// Start even if another process holds --listen, sharing it through SO_REUSEPORT: for a
    /// restart without downtime, start the new daemon with --takeover, then SIGTERM the old
    /// one. Without it, a listen address in use stops start-up naming its owner.
    #[arg(long)]
    pub takeover: bool,
    /// With --listen [::]:PORT, take IPv4 clients on the same sockets too (IPV6_V6ONLY off;
    /// they appear as ::ffff:a.b.c.d) [default: IPv6 only].
    #[arg(long)]
    pub dual_stack: bool,
    /// Once the sockets are bound and the files read, run as this user (needs starting as
    /// root; see docs/operations.md) [default: stay as started].
    #[arg(long, value_name = "NAME")]
    pub user: Option<String>,
    /// With --user: run as this group [default: the user's primary group].
    #[arg(long, value_name = "NAME")]
    pub group: Option<String>,
    /// Do not negotiate connection IDs (RFC 9146), which let a session survive its client's
    /// address changing (NAT rebinding) [default: on].
    #[arg(long)]
    pub no_connection_id: bool,
    /// Length of the connection ID this side asks its peer to send, in bytes [default: 8 for
    /// serve, 0 for connect (use the server's, receive none); 0..=20].
    #[arg(long, value_name = "BYTES")]
    pub connection_id_length: Option<i64>,
    /// Do not negotiate the return-routability check (RFC 9853) with connection IDs: a
    /// session then follows an authenticated, newest record to its new address at once
    /// instead of checking the address first [default: on].
    #[arg(long)]
    pub no_rrc: bool,
    /// DTLS versions to negotiate, in preference order, comma-separated: `1.3`, `1.2`
    /// [default: 1.3,1.2].
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    pub versions: Vec<String>,
    /// DTLS 1.3 key-exchange groups, in preference order, comma-separated: `X25519MLKEM768`,
    /// `X25519`, `P-256`, `P-384` [default: all four, in that order].
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    pub tls13_groups: Vec<String>,
    /// DTLS 1.3 cipher suites, in preference order, comma-separated:
    /// `TLS_AES_128_GCM_SHA256`, `TLS_AES_256_GCM_SHA384`, `TLS_CHACHA20_POLY1305_SHA256`
    /// [default: all three, in that order].
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    pub tls13_cipher_suites: Vec<String>,
    /// Log format. Not a flag of its own: the global `--log-format` flag of `dtlsd` is
    /// copied here, so it overrides the file's `log_format` like any other flag.
    #[arg(skip)]
    pub log_format: Option<LogFormat>,
}

/// Flags of `dtlsd serve`.
#[derive(Debug, Clone, Default, Args)]
pub struct ServeFlags {
    /// UDP address to accept DTLS clients on (IP:PORT); repeat for several, each served
    /// by its own shards.
    #[arg(long, value_name = "ADDR")]
    pub listen: Vec<String>,
    /// UDP address each session's plaintext is relayed to (IP:PORT).
    #[arg(long, value_name = "ADDR")]
    pub backend: Option<String>,
    /// Server certificate chain (PEM, end entity first); needs --key.
    #[arg(long, value_name = "PEM")]
    pub cert: Option<PathBuf>,
    /// Private key of --cert (PEM: PKCS#8, SEC1 or PKCS#1).
    #[arg(long, value_name = "PEM")]
    pub key: Option<PathBuf>,
    /// A pre-shared key clients may use, as IDENTITY:HEXKEY; repeat for several.
    #[arg(long, value_name = "ID:HEX")]
    pub psk: Vec<PskSpec>,
    /// Require client certificates issued by this CA (PEM); needs --cert.
    #[arg(long, value_name = "PEM")]
    pub client_ca: Option<PathBuf>,
    /// Admit only client certificates with this subject common name (or another rule's
    /// match); repeat for several. Needs --client-ca.
    #[arg(long, value_name = "NAME")]
    pub allow_cn: Vec<String>,
    /// Admit only client certificates with this DNS subject alternative name (or another
    /// rule's match); repeat for several. Needs --client-ca.
    #[arg(long, value_name = "NAME")]
    pub allow_dns: Vec<String>,
    /// Admit only client certificates with this URI subject alternative name, e.g. a
    /// SPIFFE ID (or another rule's match); repeat for several. Needs --client-ca.
    #[arg(long, value_name = "URI")]
    pub allow_uri: Vec<String>,
    /// Tell the backend each session's client: a PROXY protocol v2 header on the first
    /// or on every datagram, or Cloudflare's Simple Proxy Protocol header on every
    /// datagram [default: off].
    #[arg(long, value_enum, value_name = "MODE")]
    pub proxy_protocol: Option<ProxyProtocolMode>,
    /// Do not attach the reuseport program that sends each connection-ID record to the
    /// shard its CID names; records that reach another shard are then handed over through
    /// a queue (`dtlsd_cid_handoffs_total`) [default: on when connection IDs are].
    #[arg(long)]
    pub no_cid_steering: bool,
    /// Which address the backend sees each session's datagrams come from: the daemon's
    /// (an ephemeral port per session), or the client's own address and port
    /// (`transparent`: IP_TRANSPARENT, needs CAP_NET_ADMIN or CAP_NET_RAW and policy
    /// routing, see docs/dtlsd.md) [default: daemon].
    #[arg(long, value_enum, value_name = "SOURCE")]
    pub upstream_source: Option<UpstreamSourceMode>,
    /// Short for --upstream-source transparent.
    #[arg(long, conflicts_with = "upstream_source")]
    pub transparent: bool,
    /// This node's id (0-255), carried in every connection ID it issues; must be listed in
    /// the file's [[nodes]] when that is given [default: 0]. Replaces the file's node_id
    /// and node_name.
    #[arg(long, value_name = "ID", conflicts_with = "node_name")]
    pub node_id: Option<i64>,
    /// Pick this node's id from the file's [[nodes]] entry with this name (e.g. the
    /// Kubernetes node name from the downward API). Replaces the file's node_id and
    /// node_name.
    #[arg(long, value_name = "NAME")]
    pub node_name: Option<String>,
    /// Key store file (TOML: ticket_secrets, cookie_secrets) shared by every node, so
    /// tickets and cookies made by one node are accepted by another; re-read on SIGHUP
    /// [default: secrets of this process, rotated by it].
    #[arg(long, value_name = "FILE")]
    pub key_store: Option<PathBuf>,
    /// The network interface the listen address is on, whose receive queues the shards
    /// serve (shard i on queue i) through AF_XDP; needs CAP_NET_ADMIN and CAP_BPF (see
    /// docs/operations.md). With --io xdp (required there) or --io auto (AF_XDP tried
    /// first; serve only).
    #[arg(long, value_name = "IF")]
    pub interface: Option<String>,
    /// TOML config file; flags given on the command line override its keys.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub tuning: TuningFlags,
}

/// Flags of `dtlsd connect`.
#[derive(Debug, Clone, Default, Args)]
pub struct ConnectFlags {
    /// UDP address local plaintext clients send to (IP:PORT).
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
    /// The DTLS server (IP:PORT).
    #[arg(long, value_name = "ADDR")]
    pub server: Option<String>,
    /// Trust server certificates issued by these CAs (PEM).
    #[arg(long, value_name = "PEM")]
    pub ca: Option<PathBuf>,
    /// Name the server certificate must be valid for [default: the --server IP].
    #[arg(long, value_name = "NAME")]
    pub server_name: Option<String>,
    /// Accept any server certificate. For tests only.
    #[arg(long)]
    pub insecure_skip_verify: bool,
    /// Use a pre-shared key, as IDENTITY:HEXKEY, instead of certificates.
    #[arg(long, value_name = "ID:HEX")]
    pub psk: Option<PskSpec>,
    /// Client certificate chain (PEM) offered when the server asks; needs --key.
    #[arg(long, value_name = "PEM")]
    pub cert: Option<PathBuf>,
    /// Private key of --cert (PEM).
    #[arg(long, value_name = "PEM")]
    pub key: Option<PathBuf>,
    /// TOML config file; flags given on the command line override its keys.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub tuning: TuningFlags,
}

/// A repeatable flag's values, which replace the file's list when given at all.
fn list_flag(flag: Vec<String>, file: Option<Vec<String>>) -> Option<Vec<String>> {
    if flag.is_empty() { file } else { Some(flag) }
}

/// `file`'s keys, each replaced by the flag's value where the flag was given.
pub fn merge_serve(file: RawServe, flags: ServeFlags) -> RawServe {
    let t = flags.tuning;
    // Either flag names this node instead of the file (a node's identity comes from its
    // command line, its fleet from the shared file).
    let (node_id, node_name) = if flags.node_id.is_some() || flags.node_name.is_some() {
        (flags.node_id, flags.node_name)
    } else {
        (file.node_id, file.node_name)
    };
    RawServe {
        listen: match <[String; 1]>::try_from(flags.listen) {
            Ok([one]) => Some(ListenSpec::One(one)),
            Err(list) if list.is_empty() => file.listen,
            Err(list) => Some(ListenSpec::Many(list)),
        },
        backend: flags.backend.or(file.backend),
        cert: flags.cert.or(file.cert),
        key: flags.key.or(file.key),
        psk: if flags.psk.is_empty() {
            file.psk
        } else {
            Some(flags.psk)
        },
        client_ca: flags.client_ca.or(file.client_ca),
        allow_cn: list_flag(flags.allow_cn, file.allow_cn),
        allow_dns: list_flag(flags.allow_dns, file.allow_dns),
        allow_uri: list_flag(flags.allow_uri, file.allow_uri),
        proxy_protocol: flags.proxy_protocol.or(file.proxy_protocol),
        cid_steering: if flags.no_cid_steering {
            Some(false)
        } else {
            file.cid_steering
        },
        upstream_source: if flags.transparent {
            Some(UpstreamSourceMode::Transparent)
        } else {
            flags.upstream_source.or(file.upstream_source)
        },
        shards: t.shards.or(file.shards),
        control_threads: t.control_threads.or(file.control_threads),
        cpus: t.cpus.or(file.cpus),
        io: t.io.or(file.io),
        io_batch: t.io_batch.or(file.io_batch),
        uring_buffers: t.uring_buffers.or(file.uring_buffers),
        gso: if t.no_gso { Some(false) } else { file.gso },
        socket_recv_buffer: t.socket_recv_buffer.or(file.socket_recv_buffer),
        socket_send_buffer: t.socket_send_buffer.or(file.socket_send_buffer),
        interface: flags.interface.or(file.interface),
        mtu: t.mtu.or(file.mtu),
        metrics: t.metrics.or(file.metrics),
        admin_socket: t.admin_socket.or(file.admin_socket),
        idle_timeout: t.idle_timeout.or(file.idle_timeout),
        drain_timeout: t.drain_timeout.or(file.drain_timeout),
        keepalive: t.keepalive.or(file.keepalive),
        log_format: t.log_format.or(file.log_format),
        limits: merge_limits(file.limits, t.max_sessions, t.max_sessions_per_shard),
        takeover: if t.takeover {
            Some(true)
        } else {
            file.takeover
        },
        dual_stack: if t.dual_stack {
            Some(true)
        } else {
            file.dual_stack
        },
        user: t.user.or(file.user),
        group: t.group.or(file.group),
        connection_id: if t.no_connection_id {
            Some(false)
        } else {
            file.connection_id
        },
        connection_id_length: t.connection_id_length.or(file.connection_id_length),
        rrc: if t.no_rrc { Some(false) } else { file.rrc },
        versions: list_flag(t.versions, file.versions),
        tls13_groups: list_flag(t.tls13_groups, file.tls13_groups),
        tls13_cipher_suites: list_flag(t.tls13_cipher_suites, file.tls13_cipher_suites),
        node_id,
        node_name,
        key_store: flags.key_store.or(file.key_store),
        nodes: file.nodes,
    }
}

/// `[limits]` with the flags that override it.
fn merge_limits(file: RawLimits, max_sessions: Option<i64>, per_shard: Option<i64>) -> RawLimits {
    RawLimits {
        max_sessions: max_sessions.or(file.max_sessions),
        max_sessions_per_shard: per_shard.or(file.max_sessions_per_shard),
        ..file
    }
}

/// `file`'s keys, each replaced by the flag's value where the flag was given
/// (`--insecure-skip-verify` can only turn verification off, never back on).
pub fn merge_connect(file: RawConnect, flags: ConnectFlags) -> RawConnect {
    let t = flags.tuning;
    RawConnect {
        listen: flags.listen.or(file.listen),
        server: flags.server.or(file.server),
        ca: flags.ca.or(file.ca),
        server_name: flags.server_name.or(file.server_name),
        insecure_skip_verify: if flags.insecure_skip_verify {
            Some(true)
        } else {
            file.insecure_skip_verify
        },
        psk: flags.psk.or(file.psk),
        cert: flags.cert.or(file.cert),
        key: flags.key.or(file.key),
        shards: t.shards.or(file.shards),
        control_threads: t.control_threads.or(file.control_threads),
        cpus: t.cpus.or(file.cpus),
        io: t.io.or(file.io),
        io_batch: t.io_batch.or(file.io_batch),
        uring_buffers: t.uring_buffers.or(file.uring_buffers),
        gso: if t.no_gso { Some(false) } else { file.gso },
        socket_recv_buffer: t.socket_recv_buffer.or(file.socket_recv_buffer),
        socket_send_buffer: t.socket_send_buffer.or(file.socket_send_buffer),
        mtu: t.mtu.or(file.mtu),
        metrics: t.metrics.or(file.metrics),
        admin_socket: t.admin_socket.or(file.admin_socket),
        idle_timeout: t.idle_timeout.or(file.idle_timeout),
        drain_timeout: t.drain_timeout.or(file.drain_timeout),
        keepalive: t.keepalive.or(file.keepalive),
        log_format: t.log_format.or(file.log_format),
        limits: merge_limits(file.limits, t.max_sessions, t.max_sessions_per_shard),
        takeover: if t.takeover {
            Some(true)
        } else {
            file.takeover
        },
        dual_stack: if t.dual_stack {
            Some(true)
        } else {
            file.dual_stack
        },
        user: t.user.or(file.user),
        group: t.group.or(file.group),
        connection_id: if t.no_connection_id {
            Some(false)
        } else {
            file.connection_id
        },
        connection_id_length: t.connection_id_length.or(file.connection_id_length),
        rrc: if t.no_rrc { Some(false) } else { file.rrc },
        versions: list_flag(t.versions, file.versions),
        tls13_groups: list_flag(t.tls13_groups, file.tls13_groups),
        tls13_cipher_suites: list_flag(t.tls13_cipher_suites, file.tls13_cipher_suites),
    }
}

impl ServeFlags {
    /// Loads `--config` if given (it must hold a `[serve]` table), applies the flags over
    /// it and validates the result.
    ///
    /// # Errors
    /// The file's problems, or every validation problem, each naming its key.
    pub fn resolve(&self) -> Result<ServeConfig, ConfigErrors> {
        let mut flags = self.clone();
        let file = match flags.config.take() {
            None => RawServe::default(),
            Some(path) => match raw::load_file(&path)? {
                RawConfig::Serve(s) => s,
                RawConfig::Connect(_) => return Err(wrong_table(Role::Serve).into()),
            },
        };
        validate_serve(merge_serve(file, flags))
    }
}

impl ConnectFlags {
    /// Loads `--config` if given (it must hold a `[connect]` table), applies the flags over
    /// it and validates the result.
    ///
    /// # Errors
    /// The file's problems, or every validation problem, each naming its key.
    pub fn resolve(&self) -> Result<ConnectConfig, ConfigErrors> {
        let mut flags = self.clone();
        let file = match flags.config.take() {
            None => RawConnect::default(),
            Some(path) => match raw::load_file(&path)? {
                RawConfig::Connect(c) => c,
                RawConfig::Serve(_) => return Err(wrong_table(Role::Connect).into()),
            },
        };
        validate_connect(merge_connect(file, flags))
    }
}

fn wrong_table(wanted: Role) -> ConfigError {
    ConfigError {
        key: Some("--config".into()),
        problem: Problem::Tables {
            reason: match wanted {
                Role::Serve => "the file has a [connect] table, `serve` needs [serve]",
                Role::Connect => "the file has a [serve] table, `connect` needs [connect]",
            },
        },
    }
}
