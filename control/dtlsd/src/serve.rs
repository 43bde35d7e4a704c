//! `dtlsd serve`: terminate DTLS from any number of clients on one port and relay each
//! session's plaintext to the backend over its own upstream UDP flow.
//!
//! [`Server::start`] loads the certificate, key, client CA and PSKs into a
//! `control::Config` (server preference order: the engine's default suite order; heartbeat
//! `peer_allowed_to_send`, so peers may probe us; session tickets with an hourly key
//! rotation, or ticket and cookie secrets from the fleet's key store, `crate::keystore`),
//! then starts the shared machinery of
//! [`Daemon`] in serve mode with a stateless cookie front. [`Server::reload`] applies a
//! re-read configuration for SIGHUP: new credentials for new handshakes, live sessions whose
//! PSK was removed or whose client certificate the new CA no longer verifies closed, and a
//! warning naming every changed key that needs a restart; a bad file keeps the old
//! configuration. Client identity rules, per-source limits and access lists are applied by
//! a reload too, to handshakes started after it: live sessions stay (see `docs/dtlsd.md`).
//!
//! In a fleet (`[[nodes]]` listing other nodes) records whose CID names another node are
//! forwarded to it, and records other nodes forward are taken on this node's `[[nodes]]`
//! address ([`crate::forward`]), authenticated with the key store's `forward_secrets`
//! (required then; a reload rotates them).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow};
use control::crypto::SystemRng;
use control::{Acceptor, AcceptorConfig, ClientAuth, HeartbeatMode, PeerVerifier};
use dtls_crypto::pki_types::UnixTime;
use dtls_crypto::{CertificateVerifier, CookieKeys, TicketKeys};
use dtls_runtime::{ControlThread, ProxyHeader, Reload, RuntimeConfig, ShardCids};
use dtls_shard::{RelayMode, ShardConfig, UpstreamSource};
use zeroize::Zeroizing;

use crate::config::ServeConfig;
use crate::daemon::{CidRouting, Daemon, NodeRouting, load_certified_key};
use crate::forward::{ForwardSetup, NodeForwarder};
use crate::keystore::KeyStore;
use dataplane::cid::{EncryptedCids, ShardField};

/// Settings of a server that are not part of its configuration file.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// **Benchmarks only**: after each real handshake, sessions use null record
    /// protection both ways (`RecordKey::null_baseline`), so a benchmark measures the
    /// plaintext baseline through the very same engine. No flag or config key sets it.
    pub null_record_protection: bool,
}

/// How often the session-ticket key rotates (RFC 5077 §5.5: keys should be changed
/// regularly); the previous key keeps opening tickets for one ticket lifetime.
pub const TICKET_ROTATION: Duration = Duration::from_secs(3600);
/// How long an issued ticket may be used (the lifetime hint sent with it).
pub const TICKET_LIFETIME: Duration = Duration::from_secs(7200);

/// A running `dtlsd serve`.
#[derive(Debug)]
pub struct Server {
    daemon: Daemon,
    /// The configuration in use (replaced by each successful reload).
    config: Mutex<ServeConfig>,
    /// The client CA file's contents as last loaded: a reload that changes them re-checks
    /// live sessions' certificates and revokes every ticket.
    client_ca: Mutex<Option<Vec<u8>>>,
    /// Session-ticket keys, kept across reloads so tickets stay valid.
    tickets: Arc<Mutex<TicketKeys>>,
    /// The key store as last loaded (`key_store`), and the cookie secrets made from it
    /// (shared through the engine configuration).
    store: Mutex<Option<(KeyStore, Arc<CookieKeys>)>>,
    /// In a fleet: the node forwarder (`crate::forward`).
    forwarder: Option<NodeForwarder>,
    /// With `quic_lb_keys`: the keys of the encrypted CIDs, shared with the control loops
    /// and the shards, replaced in place on reload.
    encrypted_cids: Option<Arc<EncryptedCids>>,
}

impl Server {
    /// Loads the credentials and starts shards, the control thread and metrics.
    ///
    /// # Errors
    /// An unreadable or invalid PEM file, a socket that cannot be bound (port in use), or
    /// a thread that could not start.
    pub fn start(config: ServeConfig, options: Options) -> anyhow::Result<Self> {
        // Secrets every node shares come from the key store; without one, this process
        // makes its own and rotates its ticket keys hourly.
        let store = match &config.key_store {
            Some(path) => {
                let store = KeyStore::load(path)?;
                let cookies = Arc::new(store.cookie_keys(Instant::now()));
                tracing::info!(key_store = %path.display(), "ticket keys and cookie secrets from the key store");
                Some((store, cookies))
            }
            None => None,
        };
        let tickets = match &store {
            Some((store, _)) => {
                store.ticket_keys(&mut SystemRng::new(), UnixTime::now(), TICKET_LIFETIME)?
            }
            None => TicketKeys::new(
                &mut SystemRng::new(),
                UnixTime::now(),
                TICKET_ROTATION,
                TICKET_LIFETIME,
            )
            .context("session ticket keys")?,
        };
        let tickets = Arc::new(Mutex::new(tickets));
        let cookies = store.as_ref().map(|(_, c)| Arc::clone(c));
        let engine = Arc::new(engine_config(&config, &tickets, cookies)?);
        let client_ca = read_client_ca(&config)?;
        if config.upstream_source == UpstreamSource::Transparent {
            check_transparent(config.backend)?;
        }
        let mut shard_config = ShardConfig::with_mode(RelayMode::Serve, config.backend);
        shard_config.upstream_source = config.upstream_source;
        // RFC 9146 §4: tls12_cid headers do not carry the CID's length; every CID this server
        // issues has the configured one, which delimits them.
        shard_config.cid_len = config.tuning.connection_id.cid_len().unwrap_or(0);
        let limits = config.tuning.limits.clone();
        let proxy_protocol = config.proxy_protocol;
        let node_id = config.cluster.node_id;
        // CIDs long enough for the QUIC-LB layout name their shard (shorter ones are random
        // and found through each shard's CID table only).
        let encrypted_cids = encrypted_cids(store.as_ref().map(|(s, _)| s), shard_config.cid_len)?;
        let field = match &encrypted_cids {
            Some(cids) => ShardField::encrypted(Arc::clone(cids)),
            None => ShardCids::shard_field(shard_config.cid_len),
        };
        let forwarding = forward_setup(&config, field.clone(), store.as_ref().map(|(s, _)| s))?;
        let cids = field.map(|field| CidRouting {
            field,
            steer: config.cid_steering,
            nodes: forwarding.as_ref().map(|setup| NodeRouting {
                own: u32::from(node_id),
                queue: setup.queue.clone(),
                counters: Arc::clone(&setup.counters),
            }),
        });
        if cids.is_none() && shard_config.cid_len > 0 {
            tracing::info!(
                cid_len = shard_config.cid_len,
                "connection IDs too short to name a shard: no CID steering or hand-off"
            );
        }
        let settings_cids = encrypted_cids.clone();
        let daemon = Daemon::start(
            &config.listen,
            shard_config,
            &config.tuning,
            cids,
            Box::new(move |queues, shard_listen| {
                let settings = RuntimeConfig {
                    null_record_protection: options.null_record_protection,
                    limits: limits.runtime(queues.len()),
                    proxy_header: proxy_protocol.map(|protocol| ProxyHeader {
                        protocol,
                        listen: shard_listen[0],
                    }),
                    node_id,
                    encrypted_cids: settings_cids.clone(),
                    ..RuntimeConfig::default()
                };
                let mut rng = SystemRng::new();
                // Each handshake worker has its own acceptor (cookie secret, hello pool); the
                // engine configuration, ticket keys included, is shared.
                let acceptor = Acceptor::new(
                    Arc::clone(&engine),
                    AcceptorConfig::default(),
                    &mut rng,
                    Instant::now(),
                )
                .context("server configuration")?;
                let mut control = ControlThread::new(
                    acceptor,
                    queues,
                    settings,
                    Box::new(|| Box::new(SystemRng::new())),
                );
                control.set_access(limits.access.clone());
                // Each shard's sessions name the address their client reached.
                control.set_shard_listen(shard_listen);
                Ok(control)
            }),
            serde_json::json!({
                "backend": config.backend.to_string(),
                "upstream_source": match config.upstream_source {
                    UpstreamSource::Transparent => "transparent",
                    UpstreamSource::Ephemeral => "daemon",
                },
                "proxy_protocol": proxy_protocol_name(config.proxy_protocol),
            }),
        )?;
        let forwarder = match forwarding {
            Some(setup) => {
                let keys = store
                    .as_ref()
                    .and_then(|(s, _)| Some((s.forward_keys()?, s.forward_keys()?)));
                // forward_setup refused a fleet without forwarding secrets.
                let Some(((send, _), receive)) = keys else {
                    let _ = daemon.shutdown();
                    return Err(anyhow!("key_store: forward_secrets: missing"));
                };
                let local = setup.local_addr().ok();
                match NodeForwarder::start(setup, send, receive, daemon.shard_queues().to_vec()) {
                    Ok(forwarder) => {
                        tracing::info!(
                            node = node_id,
                            address = ?local,
                            "forwarding records between nodes"
                        );
                        Some(forwarder)
                    }
                    Err(e) => {
                        let _ = daemon.shutdown();
                        return Err(e);
                    }
                }
            }
            None => None,
        };
        tracing::info!(
            listen = %addresses(daemon.local_addrs()),
            backend = %config.backend,
            transparent = config.upstream_source == UpstreamSource::Transparent,
            shards = daemon.shard_count(),
            "dtlsd serve listening"
        );
        daemon.certificates().set(&certificate_files(&config));
        Ok(Self {
            daemon,
            config: Mutex::new(config),
            client_ca: Mutex::new(client_ca),
            tickets,
            store: Mutex::new(store),
            forwarder,
            encrypted_cids,
        })
    }

    /// Applies `new` (the configuration re-read for SIGHUP): its certificate, key, client
    /// CA and PSKs are used by every new handshake; live sessions of a removed PSK
    /// identity, or whose client certificate no longer verifies when the client CA
    /// changed, are closed with close_notify, and a changed client CA revokes every
    /// ticket. Changed keys that need a restart are named in a warning and not applied.
    ///
    /// # Errors
    /// A file that cannot be read or parsed: the old configuration stays in use (the
    /// failure is counted in `dtlsd_reloads_failed_total`).
    pub fn reload(&self, new: ServeConfig) -> anyhow::Result<()> {
        let result = self.apply(new);
        if result.is_err() {
            self.daemon.count_reload_failure();
        }
        result
    }

    fn apply(&self, new: ServeConfig) -> anyhow::Result<()> {
        let mut current = self.config.lock().map_err(|_| anyhow!("poisoned"))?;
        let mut store = self.store.lock().map_err(|_| anyhow!("poisoned"))?;
        // The running key store's file, re-read (a new path needs a restart). Secrets that
        // did not change keep their keys (and ticket nonce counters); changed ones replace
        // them, the store's previous secrets still accepted.
        let fresh = current
            .key_store
            .as_deref()
            .map(KeyStore::load)
            .transpose()?;
        let mut new_tickets = None;
        let mut new_store = None;
        let mut new_forward_keys = None;
        if let (Some(mut fresh), Some((old, cookies))) = (fresh, store.as_ref()) {
            if fresh.quic_lb != old.quic_lb {
                match (&self.encrypted_cids, fresh.quic_lb_keys()) {
                    (Some(cids), Some(keys)) => {
                        cids.set_keys(&keys)
                            .map_err(|e| anyhow!("key_store: quic_lb_keys: {e}"))?;
                        tracing::info!(codepoint = cids.current().value(), "QUIC-LB keys rotated");
                    }
                    _ => {
                        tracing::warn!(
                            "key_store: quic_lb_keys added or removed: the CID layout changes \
                             only on a restart; not applied"
                        );
                        fresh.quic_lb = old.quic_lb.clone();
                    }
                }
            }
            if self.forwarder.is_some() && fresh.forwards != old.forwards {
                // Send under the new current secret, accept it and the previous one.
                let keys = fresh
                    .forward_keys()
                    .zip(fresh.forward_keys())
                    .ok_or_else(|| anyhow!("key_store: forward_secrets: missing (this node forwards between [[nodes]])"))?;
                new_forward_keys = Some(keys);
            }
            if fresh.tickets != old.tickets {
                let keys =
                    fresh.ticket_keys(&mut SystemRng::new(), UnixTime::now(), TICKET_LIFETIME)?;
                new_tickets = Some(keys);
            }
            let cookies = if fresh.cookies == old.cookies {
                Arc::clone(cookies)
            } else {
                Arc::new(fresh.cookie_keys(Instant::now()))
            };
            new_store = Some((fresh, cookies));
        }
        let cookies = new_store
            .as_ref()
            .or(store.as_ref())
            .map(|(_, c)| Arc::clone(c));
        let engine = engine_config(&new, &self.tickets, cookies)?;
        let client_ca = read_client_ca(&new)?;
        let mut last_ca = self.client_ca.lock().map_err(|_| anyhow!("poisoned"))?;
        let ca_changed = *last_ca != client_ca;
        if let Some(keys) = new_tickets {
            *self.tickets.lock().map_err(|_| anyhow!("poisoned"))? = keys;
        }
        if ca_changed {
            // Tickets carry only the end-entity certificate: they are not re-verified, so
            // none issued under the old CA may resume.
            let mut keys = self.tickets.lock().map_err(|_| anyhow!("poisoned"))?;
            keys.revoke_all(UnixTime::now(), &mut SystemRng::new())
                .context("session ticket keys")?;
        }
        self.daemon.reload(
            Reload {
                config: Arc::new(engine),
                recheck_certificates: ca_changed,
                // The shard count does not change on reload; only the per-source rules of
                // these limits are applied.
                limits: Some(new.tuning.limits.runtime(self.daemon.shard_count())),
                access: Some(new.tuning.limits.access.clone()),
            },
            &current.restart_required(&new),
        )?;
        // What a reload applies is the credentials, the identity rules, the per-source
        // limits and the access lists; the rest stays as running.
        current.credentials = new.credentials;
        current.tuning.limits = current.tuning.limits.reloaded(&new.tuning.limits);
        *last_ca = client_ca;
        if new_store.is_some() {
            *store = new_store;
        }
        if let (Some(forwarder), Some(((send, _), receive))) = (&self.forwarder, new_forward_keys) {
            forwarder.set_keys(send, receive);
            tracing::info!("node-to-node forwarding keys rotated");
        }
        self.daemon.certificates().set(&certificate_files(&current));
        Ok(())
    }

    /// Sends close_notify to every session and stops every thread.
    ///
    /// # Errors
    /// A thread that stopped with an error or panicked.
    pub fn shutdown(self) -> anyhow::Result<()> {
        let result = self.daemon.shutdown();
        if let Some(forwarder) = self.forwarder {
            forwarder.stop();
        }
        result
    }

    /// The node forwarder's counters, in a fleet.
    pub fn forward_stats(&self) -> Option<crate::forward::ForwardStats> {
        self.forwarder.as_ref().map(NodeForwarder::stats)
    }
}

/// The keys of the encrypted CIDs when the key store has `quic_lb_keys`.
///
/// # Errors
/// Connection IDs off, or a length that cannot hold the encrypted layout (first octet,
/// 2-octet server ID, a nonce of at least 4 octets, the shard octet: 8 to 20): with keys
/// configured, plaintext CIDs would expose what the keys are there to hide (fail closed).
fn encrypted_cids(
    store: Option<&KeyStore>,
    cid_len: usize,
) -> anyhow::Result<Option<Arc<EncryptedCids>>> {
    let Some(keys) = store.and_then(KeyStore::quic_lb_keys) else {
        return Ok(None);
    };
    let layout = ShardCids::layout().ok_or_else(|| anyhow!("CID layout"))?;
    let cids = EncryptedCids::new(cid_len, layout, &keys).map_err(|e| {
        anyhow!(
            "key_store: quic_lb_keys: encrypted connection IDs need connection_id_length 8 to 20 \
             (it is {cid_len}): {e}"
        )
    })?;
    tracing::info!(
        cid_len,
        codepoint = cids.current().value(),
        mode = if cids.nonce_len() + layout.server_id_len() == 16 {
            "single-pass AES-128"
        } else {
            "four-pass Feistel"
        },
        "encrypted connection IDs (QUIC-LB keys from the key store)"
    );
    Ok(Some(Arc::new(cids)))
}

/// The node forwarder's socket and queue when `[[nodes]]` lists nodes besides this one and
/// the CIDs this server issues name their node (`field`).
///
/// # Errors
/// A fleet without `forward_secrets` in the key store (forwarded records must be
/// authenticated: fail closed), or this node's forwarding address cannot be bound.
fn forward_setup(
    config: &ServeConfig,
    field: Option<ShardField>,
    store: Option<&KeyStore>,
) -> anyhow::Result<Option<ForwardSetup>> {
    let cluster = &config.cluster;
    if !cluster.nodes.iter().any(|n| n.id != cluster.node_id) {
        return Ok(None);
    }
    let Some(field) = field else {
        tracing::warn!(
            "[[nodes]] lists other nodes, but connection IDs are off or shorter than 7 octets \
             and name no node: no forwarding between nodes"
        );
        return Ok(None);
    };
    if store.is_none_or(|s| s.forwards.is_none()) {
        return Err(anyhow!(
            "key_store: forward_secrets: missing; [[nodes]] lists other nodes, and records \
             forwarded between them are authenticated with these secrets"
        ));
    }
    ForwardSetup::bind(cluster.node_id, &cluster.nodes, field).map(Some)
}

/// Transparent mode's start-up check: a transparent socket of the backend's family can be
/// made. Linux (`do_ip_setsockopt`, `do_ipv6_setsockopt`) refuses IP_TRANSPARENT and
/// IPV6_TRANSPARENT with EPERM unless the process holds CAP_NET_RAW or CAP_NET_ADMIN in the
/// network namespace; failing here names the capability, instead of refusing every session.
fn check_transparent(backend: std::net::SocketAddr) -> anyhow::Result<()> {
    let option = if backend.is_ipv4() {
        "IP_TRANSPARENT"
    } else {
        "IPV6_TRANSPARENT"
    };
    match dtls_io::check_transparent(backend) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => Err(anyhow!(
            "upstream_source = \"transparent\" needs CAP_NET_ADMIN (or CAP_NET_RAW): the kernel \
             refused {option} ({e}); run as root, or grant the capability (systemd: \
             AmbientCapabilities=CAP_NET_ADMIN)"
        )),
        Err(e) => Err(anyhow!(
            "upstream_source = \"transparent\": a socket with {option} cannot be made: {e}"
        )),
    }
}

/// The `proxy_protocol` key's value for `protocol`.
fn proxy_protocol_name(protocol: Option<dtls_runtime::ProxyProtocol>) -> &'static str {
    match protocol {
        None => "off",
        Some(dtls_runtime::ProxyProtocol::V2First) => "v2-first",
        Some(dtls_runtime::ProxyProtocol::V2Every) => "v2-every",
        Some(dtls_runtime::ProxyProtocol::Spp) => "spp",
    }
}

/// Listen addresses for a log line: `A`, or `A,B,...`.
fn addresses(list: &[std::net::SocketAddr]) -> String {
    list.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// The certificate files `config` uses, by key, for the expiry metric.
fn certificate_files(config: &ServeConfig) -> Vec<(&'static str, &std::path::Path)> {
    let creds = &config.credentials;
    let mut files = Vec::new();
    if let Some(c) = &creds.certificate {
        files.push(("cert", c.cert.as_path()));
    }
    if let Some(ca) = &creds.client_ca {
        files.push(("client_ca", ca.as_path()));
    }
    files
}

/// Everything a running daemon offers (address, counters, health) is available here.
impl std::ops::Deref for Server {
    type Target = Daemon;

    fn deref(&self) -> &Daemon {
        &self.daemon
    }
}

/// The client CA file's bytes, when one is configured.
fn read_client_ca(config: &ServeConfig) -> anyhow::Result<Option<Vec<u8>>> {
    config
        .credentials
        .client_ca
        .as_ref()
        .map(|path| std::fs::read(path).with_context(|| format!("client_ca {}", path.display())))
        .transpose()
}

/// The handshake engine's server configuration from the resolved daemon configuration,
/// issuing and accepting session tickets under `tickets` (RFC 5077).
///
/// # Errors
/// A PEM file that cannot be read or parsed, or a configuration the engine refuses.
pub fn engine_config(
    config: &ServeConfig,
    tickets: &Arc<Mutex<TicketKeys>>,
    cookies: Option<Arc<CookieKeys>>,
) -> anyhow::Result<control::Config> {
    let creds = &config.credentials;
    let certificate = match &creds.certificate {
        None => None,
        Some(paths) => Some(load_certified_key(paths)?),
    };
    let (client_auth, peer_verification) = match &creds.client_ca {
        // No client authentication: no certificate is ever asked for, and none is accepted.
        None => (ClientAuth::None, PeerVerifier::RejectAll),
        Some(path) => {
            let verifier = CertificateVerifier::from_pem_file(path)
                .with_context(|| format!("client_ca {}", path.display()))?;
            (ClientAuth::Required, PeerVerifier::WebPki(verifier))
        }
    };
    let psks = creds
        .psks
        .iter()
        .map(|p| control::Psk {
            identity: p.identity.as_bytes().to_vec(),
            key: Zeroizing::new(p.key().to_vec()),
        })
        .collect();
    let engine = control::Config {
        certificate,
        client_auth,
        psks,
        mtu: usize::from(config.tuning.mtu),
        heartbeat: Some(HeartbeatMode::PeerAllowedToSend),
        retransmit: control::RetransmitConfig {
            max_handshake_time: Some(config.tuning.limits.handshake_timeout),
            // One copy per timer firing toward a client: the loss sweeps meet their goals
            // with the client alone sending two (docs/security.md), and a client that
            // stalls after the cookie then gets half the bytes.
            copies: 1,
            ..control::RetransmitConfig::default()
        },
        ticket_keys: Some(Arc::clone(tickets)),
        cookie_keys: cookies,
        ticket_lifetime: u32::try_from(TICKET_LIFETIME.as_secs()).unwrap_or(u32::MAX),
        connection_id: config.tuning.connection_id,
        rrc: config.tuning.rrc,
        client_identity: (!creds.identity_rules.is_empty()).then(|| {
            Arc::new(creds.identity_rules.clone()) as Arc<dyn control::ClientIdentityPolicy>
        }),
        versions: config.tuning.versions.clone(),
        tls13_groups: config.tuning.tls13_groups.clone(),
        tls13_cipher_suites: config.tuning.tls13_cipher_suites.clone(),
        ..control::Config::new(peer_verification)
    };
    engine.validate().context("server configuration")?;
    Ok(engine)
}
