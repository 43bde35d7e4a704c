//! Checks a merged [`RawServe`]/[`RawConnect`] and builds the typed configuration.
//!
//! Every problem is collected (not just the first), each naming its key. Files named by
//! keys must exist and be readable regular files; their PEM contents are checked by
//! `crate::check`, not here.

use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use dtls_crypto::MAX_PSK_LEN;
use dtls_crypto::pki_types::ServerName;

use super::error::{ConfigError, ConfigErrors, Problem, Role};
use super::raw::{
    ListenSpec, ProxyProtocolMode, PskSpec, RawConnect, RawServe, UpstreamSourceMode,
};
use super::{
    AdminSocket, CONNECTION_ID_LENGTH_RANGE, CONTROL_THREADS_RANGE, CertKeyPaths, ConnectConfig,
    DEFAULT_CONNECT_CID_LEN, DEFAULT_IDLE_TIMEOUT_SECS, DEFAULT_MTU, DEFAULT_SERVE_CID_LEN,
    DEFAULT_VERSIONS, DRAIN_TIMEOUT_RANGE, DataIo, IDLE_TIMEOUT_RANGE, IO_BATCH_RANGE,
    KEEPALIVE_RANGE, MAX_ADMIN_SOCKET_PATH, MAX_PSK_IDENTITY_LEN, MTU_RANGE, Psk, SHARDS_RANGE,
    SOCKET_BUFFER_RANGE, ServeConfig, ServerCredentials, ServerTrust, Tuning, URING_BUFFERS_RANGE,
};
use super::{TLS13_CIPHER_SUITES, TLS13_GROUPS};
use control::ProtocolVersion;
use dtls_runtime::ProxyProtocol;
use dtls_shard::UpstreamSource;

/// Validates a `[serve]` configuration (file and flags already merged).
///
/// # Errors
/// Every problem found, each naming its key.
pub fn validate_serve(raw: RawServe) -> Result<ServeConfig, ConfigErrors> {
    let mut c = Checker::new(Role::Serve);
    let listen = c.listen(raw.listen.as_ref());
    let backend = c.address(
        "backend",
        "--backend",
        raw.backend.as_deref(),
        AddrUse::Peer,
    );
    let tuning = c.tuning(&TuningIn {
        shards: raw.shards,
        control_threads: raw.control_threads,
        cpus: raw.cpus.as_deref(),
        io: raw.io,
        io_batch: raw.io_batch,
        uring_buffers: raw.uring_buffers,
        gso: raw.gso,
        socket_recv_buffer: raw.socket_recv_buffer,
        socket_send_buffer: raw.socket_send_buffer,
        interface: raw.interface.as_deref(),
        mtu: raw.mtu,
        metrics: raw.metrics.as_deref(),
        admin_socket: raw.admin_socket.as_deref(),
        idle_timeout: raw.idle_timeout,
        drain_timeout: raw.drain_timeout,
        keepalive: raw.keepalive,
        log_format: raw.log_format,
        limits: &raw.limits,
        takeover: raw.takeover,
        dual_stack: raw.dual_stack,
        user: raw.user.as_deref(),
        group: raw.group.as_deref(),
        connection_id: raw.connection_id,
        connection_id_length: raw.connection_id_length,
        rrc: raw.rrc,
        default_cid_len: DEFAULT_SERVE_CID_LEN,
        versions: raw.versions.as_deref(),
        tls13_groups: raw.tls13_groups.as_deref(),
        tls13_cipher_suites: raw.tls13_cipher_suites.as_deref(),
    });
    let certificate = c.cert_key(raw.cert.as_deref(), raw.key.as_deref());
    let mut psks = Vec::new();
    for (i, spec) in raw.psk.iter().flatten().enumerate() {
        let key = format!("psk[{i}]");
        match parse_psk(spec) {
            Ok(psk) if psks.iter().any(|p: &Psk| p.identity == psk.identity) => {
                c.push(
                    &key,
                    Problem::DuplicatePskIdentity {
                        identity: psk.identity,
                    },
                );
            }
            Ok(psk) => psks.push(psk),
            Err(reason) => c.push(&key, Problem::BadPsk { reason }),
        }
    }
    let client_ca = c.file("client_ca", raw.client_ca.as_deref());
    let key_store = c.file("key_store", raw.key_store.as_deref());
    if raw.client_ca.is_some() && raw.cert.is_none() {
        // Client certificates are requested only in certificate suites (RFC 5246 §7.4.4:
        // a non-anonymous server can optionally request a certificate).
        c.push("client_ca", Problem::Requires { other: "cert" });
    }
    let mut identity_rules = dtls_runtime::IdentityRules::default();
    for (key, list, rule) in [
        ("allow_cn", &raw.allow_cn, &mut identity_rules.cn),
        ("allow_dns", &raw.allow_dns, &mut identity_rules.dns),
        ("allow_uri", &raw.allow_uri, &mut identity_rules.uri),
    ] {
        let list = list.as_deref().unwrap_or_default();
        if !list.is_empty() && raw.client_ca.is_none() {
            // Only a verified certificate has an identity to check.
            c.push(key, Problem::Requires { other: "client_ca" });
        }
        for (i, name) in list.iter().enumerate() {
            if name.trim().is_empty() {
                c.push(&format!("{key}[{i}]"), Problem::EmptyName);
            } else {
                rule.push(name.clone());
            }
        }
    }
    let no_psk = raw.psk.as_ref().is_none_or(Vec::is_empty);
    if raw.cert.is_none() && raw.key.is_none() && no_psk {
        c.push(
            "cert",
            Problem::NoCredentials {
                needed: "cert and key, or at least one psk",
            },
        );
    }
    c.dual_stack(listen.as_deref().unwrap_or_default(), tuning.as_ref());
    let af_xdp = raw.io == Some(super::IoMode::Xdp) || raw.interface.is_some();
    if af_xdp && listen.as_ref().is_some_and(|l| l.len() > 1) {
        // One XDP program per interface, redirecting one address and port.
        c.push(
            "listen",
            Problem::Conflicts {
                other: "AF_XDP (io = \"xdp\", or `interface` with io = \"auto\"): one listen address",
            },
        );
    }
    let cluster = super::cluster::validate(
        raw.node_id,
        raw.node_name.as_deref(),
        &raw.nodes,
        &mut c.errors,
    );
    let upstream_source = raw.upstream_source.unwrap_or_default();
    if upstream_source == UpstreamSourceMode::Transparent {
        // Every upstream socket is made after the drop and needs CAP_NET_ADMIN, which a
        // plain setuid takes away (see `crate::privileges`).
        if raw.user.is_some() {
            c.push(
                "user",
                Problem::Conflicts {
                    other: "upstream_source = \"transparent\" (use systemd's User= with AmbientCapabilities=CAP_NET_ADMIN)",
                },
            );
        }
        // The backend learns the client from the source address itself: a header in front
        // of the plaintext would tell it twice, and a backend expecting one from this daemon
        // could not also be reached by it with a foreign source.
        if raw
            .proxy_protocol
            .is_some_and(|p| p != ProxyProtocolMode::Off)
        {
            c.push(
                "upstream_source",
                Problem::Conflicts {
                    other: "proxy_protocol",
                },
            );
        }
        // Each upstream socket binds the client's address: a socket of the backend's family.
        if let (Some(list), Some(b)) = (&listen, backend)
            && let Some(&l) = list.iter().find(|l| l.is_ipv4() != b.is_ipv4())
        {
            c.push(
                "upstream_source",
                Problem::TransparentFamilies {
                    listen: l,
                    backend: b,
                },
            );
        }
    }
    c.finish()?;
    match (listen, backend, tuning, cluster) {
        (Some(listen), Some(backend), Some(tuning), Some(cluster)) => Ok(ServeConfig {
            listen,
            backend,
            credentials: ServerCredentials {
                certificate,
                psks,
                client_ca,
                identity_rules,
            },
            proxy_protocol: match raw.proxy_protocol.unwrap_or_default() {
                ProxyProtocolMode::Off => None,
                ProxyProtocolMode::V2First => Some(ProxyProtocol::V2First),
                ProxyProtocolMode::V2Every => Some(ProxyProtocol::V2Every),
                ProxyProtocolMode::Spp => Some(ProxyProtocol::Spp),
            },
            cid_steering: raw.cid_steering.unwrap_or(true),
            upstream_source: match upstream_source {
                UpstreamSourceMode::Daemon => UpstreamSource::Ephemeral,
                UpstreamSourceMode::Transparent => UpstreamSource::Transparent,
            },
            cluster,
            key_store,
            tuning,
        }),
        // finish() returned early on any error; every check that yields None pushed one.
        _ => Err(ConfigErrors(Vec::new())),
    }
}

/// Validates a `[connect]` configuration (file and flags already merged).
///
/// # Errors
/// Every problem found, each naming its key.
pub fn validate_connect(raw: RawConnect) -> Result<ConnectConfig, ConfigErrors> {
    let mut c = Checker::new(Role::Connect);
    let listen = c.address("listen", "--listen", raw.listen.as_deref(), AddrUse::Bind);
    let server = c.address("server", "--server", raw.server.as_deref(), AddrUse::Peer);
    let tuning = c.tuning(&TuningIn {
        shards: raw.shards,
        control_threads: raw.control_threads,
        cpus: raw.cpus.as_deref(),
        io: raw.io,
        io_batch: raw.io_batch,
        uring_buffers: raw.uring_buffers,
        gso: raw.gso,
        socket_recv_buffer: raw.socket_recv_buffer,
        socket_send_buffer: raw.socket_send_buffer,
        interface: None,
        mtu: raw.mtu,
        metrics: raw.metrics.as_deref(),
        admin_socket: raw.admin_socket.as_deref(),
        idle_timeout: raw.idle_timeout,
        drain_timeout: raw.drain_timeout,
        keepalive: raw.keepalive,
        log_format: raw.log_format,
        limits: &raw.limits,
        takeover: raw.takeover,
        dual_stack: raw.dual_stack,
        user: raw.user.as_deref(),
        group: raw.group.as_deref(),
        connection_id: raw.connection_id,
        connection_id_length: raw.connection_id_length,
        rrc: raw.rrc,
        default_cid_len: DEFAULT_CONNECT_CID_LEN,
        versions: raw.versions.as_deref(),
        tls13_groups: raw.tls13_groups.as_deref(),
        tls13_cipher_suites: raw.tls13_cipher_suites.as_deref(),
    });
    let client_certificate = c.cert_key(raw.cert.as_deref(), raw.key.as_deref());
    let insecure = raw.insecure_skip_verify.unwrap_or(false);
    let ca = c.file("ca", raw.ca.as_deref());
    if raw.ca.is_some() && insecure {
        c.push("insecure_skip_verify", Problem::Conflicts { other: "ca" });
    }
    if raw.psk.is_some() {
        if raw.ca.is_some() {
            c.push("psk", Problem::Conflicts { other: "ca" });
        }
        if insecure {
            c.push(
                "psk",
                Problem::Conflicts {
                    other: "insecure_skip_verify",
                },
            );
        }
        if raw.cert.is_some() {
            // Client certificates exist only in certificate suites (RFC 4279 §2: no
            // CertificateRequest in PSK suites).
            c.push("cert", Problem::Conflicts { other: "psk" });
        }
    }
    if raw.server_name.is_some() && raw.ca.is_none() {
        c.push("server_name", Problem::Requires { other: "ca" });
    }
    let server_name = raw
        .server_name
        .clone()
        .or_else(|| server.map(|s| s.ip().to_string()));
    if let Some(name) = raw.server_name.as_deref()
        && ServerName::try_from(name).is_err()
    {
        c.push(
            "server_name",
            Problem::BadServerName {
                value: name.to_owned(),
            },
        );
    }
    let psk = match raw.psk.as_ref().map(parse_psk) {
        Some(Ok(psk)) => Some(psk),
        Some(Err(reason)) => {
            c.push("psk", Problem::BadPsk { reason });
            None
        }
        None => None,
    };
    if raw.ca.is_none() && !insecure && raw.psk.is_none() {
        c.push(
            "ca",
            Problem::NoCredentials {
                needed: "ca, insecure_skip_verify = true, or psk",
            },
        );
    }
    c.dual_stack(listen.as_slice(), tuning.as_ref());
    c.finish()?;
    let trust = match (ca, server_name, psk) {
        (Some(ca), Some(server_name), _) => Some(ServerTrust::Ca { ca, server_name }),
        (_, _, Some(psk)) => Some(ServerTrust::Psk(psk)),
        _ if insecure => Some(ServerTrust::InsecureSkipVerify),
        _ => None,
    };
    match (listen, server, trust, tuning) {
        (Some(listen), Some(server), Some(trust), Some(tuning)) => Ok(ConnectConfig {
            listen,
            server,
            trust,
            client_certificate,
            tuning,
        }),
        // finish() returned early on any error; every check that yields None pushed one.
        _ => Err(ConfigErrors(Vec::new())),
    }
}

/// Parses `ID:HEX` (split at the last `:`, so identities may contain `:`). The error text
/// never contains key material.
///
/// # Errors
/// Why the PSK is unusable.
pub fn parse_psk(spec: &PskSpec) -> Result<Psk, String> {
    let Some((identity, hex)) = spec.0.rsplit_once(':') else {
        return Err("is not ID:HEX (no `:`)".into());
    };
    if identity.is_empty() {
        return Err("identity is empty".into());
    }
    if identity.len() > MAX_PSK_IDENTITY_LEN {
        return Err(format!(
            "identity is {} bytes, more than {MAX_PSK_IDENTITY_LEN}",
            identity.len()
        ));
    }
    let key = decode_hex(hex).map_err(|e| format!("`{identity}`: key {e}"))?;
    // RFC 4279 §2 carries the PSK in a premaster secret of bounded size.
    if key.is_empty() || key.len() > MAX_PSK_LEN {
        return Err(format!(
            "`{identity}`: key is {} bytes, must be 1 to {MAX_PSK_LEN}",
            key.len()
        ));
    }
    Ok(Psk::new(identity.to_owned(), key))
}

pub(crate) fn decode_hex(hex: &str) -> Result<Vec<u8>, String> {
    let digits = hex.as_bytes();
    if !digits.len().is_multiple_of(2) {
        return Err(format!(
            "has an odd number of hex digits ({})",
            digits.len()
        ));
    }
    let nibble = |i: usize, d: u8| -> Result<u8, String> {
        char::from(d)
            .to_digit(16)
            .and_then(|v| u8::try_from(v).ok())
            .ok_or_else(|| format!("has a non-hex character at position {}", i + 1))
    };
    digits
        .chunks_exact(2)
        .enumerate()
        .map(|(i, pair)| Ok(nibble(2 * i, pair[0])? << 4 | nibble(2 * i + 1, pair[1])?))
        .collect()
}

/// How an address will be used: a local one to bind, or a peer's to send to.
#[derive(Clone, Copy)]
enum AddrUse {
    Bind,
    Peer,
}

struct TuningIn<'a> {
    limits: &'a super::limits::RawLimits,
    shards: Option<i64>,
    control_threads: Option<i64>,
    cpus: Option<&'a str>,
    io: Option<super::IoMode>,
    io_batch: Option<i64>,
    uring_buffers: Option<i64>,
    gso: Option<bool>,
    socket_recv_buffer: Option<i64>,
    socket_send_buffer: Option<i64>,
    /// The `interface` key (serve only).
    interface: Option<&'a str>,
    mtu: Option<i64>,
    metrics: Option<&'a str>,
    admin_socket: Option<&'a str>,
    idle_timeout: Option<i64>,
    drain_timeout: Option<i64>,
    keepalive: Option<i64>,
    log_format: Option<super::LogFormat>,
    takeover: Option<bool>,
    dual_stack: Option<bool>,
    user: Option<&'a str>,
    group: Option<&'a str>,
    connection_id: Option<bool>,
    connection_id_length: Option<i64>,
    rrc: Option<bool>,
    /// The role's `connection_id_length` when the key is absent.
    default_cid_len: u8,
    versions: Option<&'a [String]>,
    tls13_groups: Option<&'a [String]>,
    tls13_cipher_suites: Option<&'a [String]>,
}

struct Checker {
    role: Role,
    errors: Vec<ConfigError>,
}

impl Checker {
    fn new(role: Role) -> Self {
        Self {
            role,
            errors: Vec::new(),
        }
    }

    fn push(&mut self, key: &str, problem: Problem) {
        self.errors.push(ConfigError::new(self.role, key, problem));
    }

    fn finish(&mut self) -> Result<(), ConfigErrors> {
        if self.errors.is_empty() {
            Ok(())
        } else {
            Err(ConfigErrors(std::mem::take(&mut self.errors)))
        }
    }

    fn address(
        &mut self,
        key: &str,
        flag: &'static str,
        value: Option<&str>,
        usage: AddrUse,
    ) -> Option<SocketAddr> {
        let Some(value) = value else {
            self.push(key, Problem::Missing { flag });
            return None;
        };
        self.parse_address(key, value, usage)
    }

    fn parse_address(&mut self, key: &str, value: &str, usage: AddrUse) -> Option<SocketAddr> {
        let bad = |reason: &str| Problem::BadAddress {
            value: value.to_owned(),
            reason: reason.to_owned(),
        };
        match value.parse::<SocketAddr>() {
            Err(_) => {
                self.push(
                    key,
                    bad("expected IP:PORT such as 127.0.0.1:4433 or [::1]:4433 \
                         (host names are not resolved)"),
                );
                None
            }
            Ok(addr) if matches!(usage, AddrUse::Peer) && addr.port() == 0 => {
                self.push(key, bad("port 0 cannot be sent to"));
                None
            }
            Ok(addr) if matches!(usage, AddrUse::Peer) && addr.ip().is_unspecified() => {
                self.push(key, bad("an unspecified address cannot be sent to"));
                None
            }
            Ok(addr) => Some(addr),
        }
    }

    fn range(&mut self, key: &str, value: i64, (min, max): (i64, i64)) -> Option<i64> {
        if (min..=max).contains(&value) {
            Some(value)
        } else {
            self.push(key, Problem::OutOfRange { value, min, max });
            None
        }
    }

    /// Checks that `path`, when given, names a readable regular file.
    fn file(&mut self, key: &str, path: Option<&Path>) -> Option<PathBuf> {
        let path = path?;
        let unreadable = |reason: String| Problem::FileUnreadable {
            path: path.to_path_buf(),
            reason,
        };
        match std::fs::metadata(path) {
            Err(e) => self.push(key, unreadable(e.to_string())),
            Ok(m) if !m.is_file() => self.push(key, unreadable("not a regular file".into())),
            Ok(_) => match File::open(path) {
                Err(e) => self.push(key, unreadable(e.to_string())),
                Ok(_) => return Some(path.to_path_buf()),
            },
        }
        None
    }

    fn cert_key(&mut self, cert: Option<&Path>, key: Option<&Path>) -> Option<CertKeyPaths> {
        let cert_file = self.file("cert", cert);
        let key_file = self.file("key", key);
        match (cert, key) {
            (Some(_), None) => self.push("cert", Problem::Requires { other: "key" }),
            (None, Some(_)) => self.push("key", Problem::Requires { other: "cert" }),
            _ => {}
        }
        Some(CertKeyPaths {
            cert: cert_file?,
            key: key_file?,
        })
    }

    /// `admin_socket`: `off`, or an absolute path that fits a UNIX socket address.
    fn admin_socket(&mut self, value: &str) -> Option<AdminSocket> {
        let bad = |reason: &str| Problem::BadAdminSocket {
            value: value.to_owned(),
            reason: reason.to_owned(),
        };
        if value == "off" {
            return Some(AdminSocket::Off);
        }
        let path = Path::new(value);
        if !path.is_absolute() {
            self.push("admin_socket", bad("must be an absolute path, or `off`"));
            return None;
        }
        if value.len() > MAX_ADMIN_SOCKET_PATH {
            let reason = format!("longer than {MAX_ADMIN_SOCKET_PATH} bytes (sun_path)");
            self.push("admin_socket", bad(&reason));
            return None;
        }
        Some(AdminSocket::At(path.to_path_buf()))
    }

    /// `listen` of `[serve]`: one address or a non-empty list of distinct ones, each a
    /// bindable `IP:PORT` (errors name `listen` or `listen[i]`).
    fn listen(&mut self, spec: Option<&ListenSpec>) -> Option<Vec<SocketAddr>> {
        let Some(spec) = spec else {
            self.address("listen", "--listen", None, AddrUse::Bind);
            return None;
        };
        let entries = spec.entries();
        if entries.is_empty() {
            self.push(
                "listen",
                Problem::BadList {
                    value: "[]".to_owned(),
                    reason: "at least one address is needed".to_owned(),
                },
            );
            return None;
        }
        let mut addresses = Vec::with_capacity(entries.len());
        let mut ok = true;
        for (key, value) in entries {
            match self.parse_address(&key, value, AddrUse::Bind) {
                Some(addr) if addresses.contains(&addr) && addr.port() != 0 => {
                    self.push(
                        &key,
                        Problem::BadAddress {
                            value: value.to_owned(),
                            reason: "given twice".to_owned(),
                        },
                    );
                    ok = false;
                }
                Some(addr) => addresses.push(addr),
                None => ok = false,
            }
        }
        ok.then_some(addresses)
    }

    /// `dual_stack` needs the IPv6 wildcard address: only a socket bound to `[::]` receives
    /// IPv4 datagrams as IPv4-mapped addresses.
    fn dual_stack(&mut self, listen: &[SocketAddr], tuning: Option<&Tuning>) {
        let wildcard = std::net::IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED);
        if let Some(t) = tuning
            && t.dual_stack
            && !listen.is_empty()
            && listen.iter().all(|l| l.ip() != wildcard)
        {
            self.push(
                "dual_stack",
                Problem::Requires {
                    other: "listen = \"[::]:PORT\"",
                },
            );
        }
    }

    /// A CPU list (`2-7`, `0,2,4-5`): every CPU in the process's affinity mask, none twice.
    fn cpus(&mut self, value: &str) -> Option<Vec<usize>> {
        let allowed: Vec<usize> = core_affinity::get_core_ids()
            .unwrap_or_default()
            .into_iter()
            .map(|c| c.id)
            .collect();
        match parse_cpu_list(value, &allowed) {
            Ok(cpus) => Some(cpus),
            Err(reason) => {
                self.push(
                    "cpus",
                    Problem::BadCpuList {
                        value: value.to_owned(),
                        reason,
                    },
                );
                None
            }
        }
    }

    /// `versions`: `1.3` and/or `1.2`, each once, in preference order.
    fn versions(&mut self, value: Option<&[String]>) -> Option<Vec<ProtocolVersion>> {
        let Some(value) = value else {
            return Some(DEFAULT_VERSIONS.to_vec());
        };
        let mut bad = |reason: &'static str| {
            let value = value.join(",");
            self.push("versions", Problem::BadVersions { value, reason });
            None
        };
        let mut versions = Vec::with_capacity(value.len());
        for v in value {
            let version = match v.trim() {
                "1.3" => ProtocolVersion::Dtls1_3,
                "1.2" => ProtocolVersion::Dtls1_2,
                _ => return bad("each entry must be `1.3` or `1.2`"),
            };
            if versions.contains(&version) {
                return bad("a version is listed twice");
            }
            versions.push(version);
        }
        if versions.is_empty() {
            return bad("the list is empty");
        }
        Some(versions)
    }

    /// A preference list of `names` (matched without regard to case), each once.
    fn named_list<T: Copy + PartialEq>(
        &mut self,
        key: &str,
        value: Option<&[String]>,
        names: &[(&str, T)],
    ) -> Option<Vec<T>> {
        let Some(value) = value else {
            return Some(names.iter().map(|(_, v)| *v).collect());
        };
        let mut bad = |reason: String| {
            let value = value.join(",");
            self.push(key, Problem::BadList { value, reason });
            None
        };
        let mut items = Vec::with_capacity(value.len());
        for v in value {
            let Some(&(_, item)) = names.iter().find(|(n, _)| n.eq_ignore_ascii_case(v.trim()))
            else {
                let known: Vec<&str> = names.iter().map(|(n, _)| *n).collect();
                return bad(format!("`{}` is not one of {}", v.trim(), known.join(", ")));
            };
            if items.contains(&item) {
                return bad(format!("`{}` is listed twice", v.trim()));
            }
            items.push(item);
        }
        if items.is_empty() {
            return bad("the list is empty".into());
        }
        Some(items)
    }

    /// `interface` goes with `io = "xdp"` (required) or `io = "auto"` (AF_XDP tried first),
    /// and only in `[serve]` (the listen side of connect is local plaintext): `Some(None)`
    /// without AF_XDP, `Some(Some(name))` with.
    fn interface(
        &mut self,
        io: Option<super::IoMode>,
        interface: Option<&str>,
    ) -> Option<Option<String>> {
        let xdp = io == Some(super::IoMode::Xdp);
        if xdp && self.role == Role::Connect {
            self.push("io", Problem::XdpServeOnly);
            return None;
        }
        if interface.is_some() && self.role == Role::Connect {
            self.push("interface", Problem::XdpServeOnly);
            return None;
        }
        let auto = matches!(io, None | Some(super::IoMode::Auto));
        match (xdp || auto, interface) {
            (_, None) if !xdp => Some(None),
            (false, Some(_)) => {
                self.push(
                    "interface",
                    Problem::Conflicts {
                        other: "io = \"uring\" or \"mmsg\" (interface is for io = \"xdp\" or \"auto\")",
                    },
                );
                None
            }
            (_, None) => {
                self.push("interface", Problem::XdpNeedsInterface);
                None
            }
            (_, Some(name)) => {
                // IFNAMSIZ is 16 with the NUL; '/' and whitespace are never in a name.
                let bad = name.is_empty()
                    || name.len() > 15
                    || name.contains('/')
                    || name.chars().any(char::is_whitespace);
                if bad {
                    self.push(
                        "interface",
                        Problem::BadInterface {
                            value: name.to_owned(),
                        },
                    );
                    return None;
                }
                Some(Some(name.to_owned()))
            }
        }
    }

    /// `io_batch`, `uring_buffers` (a power of two, at least the batch), `gso` and the
    /// socket buffer sizes; absent keys take `DataIo::default()`'s values.
    fn data_io(&mut self, t: &TuningIn<'_>) -> Option<DataIo> {
        let default = DataIo::default();
        let batch = t
            .io_batch
            .map(|v| self.range("io_batch", v, IO_BATCH_RANGE));
        let buffers = t
            .uring_buffers
            .map(|v| self.range("uring_buffers", v, URING_BUFFERS_RANGE));
        let recv = t
            .socket_recv_buffer
            .map(|v| self.range("socket_recv_buffer", v, SOCKET_BUFFER_RANGE));
        let send = t
            .socket_send_buffer
            .map(|v| self.range("socket_send_buffer", v, SOCKET_BUFFER_RANGE));
        let batch = match batch {
            Some(v) => usize::try_from(v?).ok()?,
            None => default.batch,
        };
        let uring_buffers = match buffers {
            Some(v) => {
                let v = v?;
                // The ring hands out buffers by a mask, and must hold a whole batch.
                let reason = if !v.unsigned_abs().is_power_of_two() {
                    Some("must be a power of two")
                } else if v.unsigned_abs() < batch as u64 {
                    Some("must be at least io_batch (a receive batch takes one buffer each)")
                } else {
                    None
                };
                if let Some(reason) = reason {
                    self.push("uring_buffers", Problem::BadSize { value: v, reason });
                    return None;
                }
                u16::try_from(v).ok()?
            }
            None => DataIo::default_uring_buffers(batch),
        };
        Some(DataIo {
            batch,
            uring_buffers,
            gso: t.gso.unwrap_or(default.gso),
            recv_buffer: match recv {
                Some(v) => usize::try_from(v?).ok()?,
                None => default.recv_buffer,
            },
            send_buffer: match send {
                Some(v) => usize::try_from(v?).ok()?,
                None => default.send_buffer,
            },
        })
    }

    fn tuning(&mut self, t: &TuningIn<'_>) -> Option<Tuning> {
        let limits = super::limits::validate(t.limits, &mut self.errors);
        let versions = self.versions(t.versions);
        let tls13_groups = self.named_list("tls13_groups", t.tls13_groups, &TLS13_GROUPS);
        let tls13_cipher_suites = self.named_list(
            "tls13_cipher_suites",
            t.tls13_cipher_suites,
            &TLS13_CIPHER_SUITES,
        );
        let shards = t.shards.map(|v| self.range("shards", v, SHARDS_RANGE));
        let control_threads = t
            .control_threads
            .map(|v| self.range("control_threads", v, CONTROL_THREADS_RANGE));
        let cpus = t.cpus.map(|v| self.cpus(v));
        let mtu = t.mtu.map(|v| self.range("mtu", v, MTU_RANGE));
        let idle = t
            .idle_timeout
            .map(|v| self.range("idle_timeout", v, IDLE_TIMEOUT_RANGE));
        let drain = t
            .drain_timeout
            .map(|v| self.range("drain_timeout", v, DRAIN_TIMEOUT_RANGE));
        let keepalive = t
            .keepalive
            .map(|v| self.range("keepalive", v, KEEPALIVE_RANGE));
        let metrics = t
            .metrics
            .map(|m| self.parse_address("metrics", m, AddrUse::Bind));
        let cid_len = t
            .connection_id_length
            .map(|v| self.range("connection_id_length", v, CONNECTION_ID_LENGTH_RANGE));
        if t.connection_id == Some(false) && t.connection_id_length.is_some() {
            self.push(
                "connection_id_length",
                Problem::Conflicts {
                    other: "connection_id = false",
                },
            );
            return None;
        }
        let run_as = match (t.user, t.group) {
            (None, None) => Some(None),
            (None, Some(_)) => {
                self.push("group", Problem::Requires { other: "user" });
                None
            }
            (Some(user), group) => match crate::privileges::resolve(user, group) {
                Ok(run_as) => Some(Some(run_as)),
                Err(reason) => {
                    let key = if reason.contains("group") {
                        "group"
                    } else {
                        "user"
                    };
                    self.push(key, Problem::BadAccount { reason });
                    None
                }
            },
        };
        let interface = self.interface(t.io, t.interface);
        let data_io = self.data_io(t);
        let admin_socket = match t.admin_socket {
            None => Some(AdminSocket::Default),
            Some(value) => self.admin_socket(value),
        };
        let idle_secs = match idle {
            Some(v) => v?,
            None => i64::try_from(DEFAULT_IDLE_TIMEOUT_SECS).unwrap_or(i64::MAX),
        };
        if let Some(Some(k)) = keepalive
            && k >= idle_secs
        {
            self.push(
                "keepalive",
                Problem::KeepaliveNotBelowIdle {
                    keepalive: k,
                    idle_timeout: idle_secs,
                },
            );
            return None;
        }
        Some(Tuning {
            shards: match shards {
                Some(v) => Some(usize::try_from(v?).ok()?),
                None => None,
            },
            control_threads: match control_threads {
                Some(v) => Some(usize::try_from(v?).ok()?),
                None => None,
            },
            cpus: match cpus {
                Some(v) => Some(v?),
                None => None,
            },
            io: t.io.unwrap_or_default(),
            interface: interface?,
            data_io: data_io?,
            mtu: match mtu {
                Some(v) => u16::try_from(v?).ok()?,
                None => DEFAULT_MTU,
            },
            metrics: metrics.flatten(),
            admin_socket: admin_socket?,
            idle_timeout: Duration::from_secs(idle_secs.unsigned_abs()),
            drain_timeout: match drain {
                Some(v) => Duration::from_secs(v?.unsigned_abs()),
                None => Duration::ZERO,
            },
            keepalive: match keepalive {
                Some(v) => Some(Duration::from_secs(v?.unsigned_abs())),
                None => None,
            },
            log_format: t.log_format.unwrap_or_default(),
            limits: limits?,
            takeover: t.takeover.unwrap_or(false),
            dual_stack: t.dual_stack.unwrap_or(false),
            run_as: run_as?,
            connection_id: match (t.connection_id, cid_len) {
                (Some(false), _) => control::ConnectionIds::Off,
                (_, Some(len)) => control::ConnectionIds::On {
                    len: u8::try_from(len?).ok()?,
                },
                (_, None) => control::ConnectionIds::On {
                    len: t.default_cid_len,
                },
            },
            rrc: t.rrc.unwrap_or(true),
            versions: versions?,
            tls13_groups: tls13_groups?,
            tls13_cipher_suites: tls13_cipher_suites?,
        })
    }
}

/// Parses a CPU list in the kernel's own format (cpuset(7) "List format": comma-separated
/// numbers and `A-B` ranges) into the CPUs in the order given; each must be in `allowed`
/// (the process's affinity mask) and appear once.
pub(crate) fn parse_cpu_list(value: &str, allowed: &[usize]) -> Result<Vec<usize>, String> {
    /// More CPUs than any machine the daemon runs on has; bounds a range's expansion.
    const MAX_CPUS: usize = 4096;
    let number = |s: &str| {
        s.trim()
            .parse::<usize>()
            .map_err(|_| format!("`{}` is not a CPU number", s.trim()))
    };
    let mut cpus = Vec::new();
    for part in value.split(',') {
        let (first, last) = match part.split_once('-') {
            Some((a, b)) => (number(a)?, number(b)?),
            None => {
                let n = number(part)?;
                (n, n)
            }
        };
        if first > last {
            return Err(format!("range {first}-{last} is backwards"));
        }
        if last >= MAX_CPUS {
            return Err(format!("CPU {last} is beyond {MAX_CPUS}"));
        }
        for cpu in first..=last {
            if !allowed.contains(&cpu) {
                return Err(format!(
                    "CPU {cpu} is not one this process may run on ({})",
                    format_cpu_list(allowed)
                ));
            }
            if cpus.contains(&cpu) {
                return Err(format!("CPU {cpu} is listed twice"));
            }
            cpus.push(cpu);
        }
    }
    Ok(cpus)
}

/// `cpus` as a short list for messages: `0-3,6`.
fn format_cpu_list(cpus: &[usize]) -> String {
    let mut sorted = cpus.to_vec();
    sorted.sort_unstable();
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while i < sorted.len() {
        let start = sorted[i];
        while i + 1 < sorted.len() && sorted[i + 1] == sorted[i] + 1 {
            i += 1;
        }
        out.push(if sorted[i] == start {
            start.to_string()
        } else {
            format!("{start}-{}", sorted[i])
        });
        i += 1;
    }
    if out.is_empty() {
        "none".into()
    } else {
        out.join(",")
    }
}
