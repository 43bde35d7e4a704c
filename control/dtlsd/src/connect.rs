//! `dtlsd connect`: accept plaintext UDP on the listen address and carry each local source's
//! datagrams over its own DTLS session to the server; replies come back to that source.
//!
//! [`Client::start`] builds the client `control::Config` (server verification by CA and
//! name, any certificate for tests, or a PSK; a client certificate when given; heartbeat
//! `peer_allowed_to_send`) and starts [`Daemon`] in connect mode. The first datagram of a
//! new local source makes its shard open an upstream socket to the server and ask the
//! control thread for a handshake; the datagrams it sends meanwhile are queued (a few) and
//! go out once the keys are installed. [`Client::reload`] re-reads the CA, client
//! certificate and key for SIGHUP.

use std::sync::Arc;

use anyhow::Context;
use control::crypto::SystemRng;
use control::{HeartbeatMode, PeerVerifier};
use dtls_crypto::CertificateVerifier;
use dtls_runtime::{ControlThread, Reload, RuntimeConfig};
use dtls_shard::{RelayMode, ShardConfig};
use zeroize::Zeroizing;

use crate::config::{ConnectConfig, ServerTrust};
use crate::daemon::{Daemon, load_certified_key};

/// A running `dtlsd connect`.
#[derive(Debug)]
pub struct Client {
    daemon: Daemon,
    /// The configuration in use (its trust settings replaced by each successful reload).
    config: std::sync::Mutex<ConnectConfig>,
}

impl Client {
    /// Loads the trust anchors and credentials and starts shards, the control thread and
    /// metrics.
    ///
    /// # Errors
    /// An unreadable or invalid PEM file, a socket that cannot be bound (port in use), or
    /// a thread that could not start.
    pub fn start(config: ConnectConfig) -> anyhow::Result<Self> {
        let engine = Arc::new(engine_config(&config)?);
        let server = config.server;
        let shard_config = ShardConfig::with_mode(RelayMode::Connect, server);
        let limits = config.tuning.limits.clone();
        let daemon = Daemon::start(
            &[config.listen],
            shard_config,
            &config.tuning,
            // Connect mode: the listen socket carries plaintext, no CID records.
            None,
            Box::new(move |queues, _listen| {
                let settings = RuntimeConfig {
                    limits: limits.runtime(queues.len()),
                    ..RuntimeConfig::default()
                };
                ControlThread::client(
                    Arc::clone(&engine),
                    server,
                    queues,
                    settings,
                    Box::new(|| Box::new(SystemRng::new())),
                )
                .context("client configuration")
            }),
            serde_json::json!({ "server": server.to_string() }),
        )?;
        tracing::info!(
            listen = %daemon.local_addr(),
            server = %config.server,
            shards = daemon.shard_count(),
            "dtlsd connect listening"
        );
        daemon.certificates().set(&certificate_files(&config));
        Ok(Self {
            daemon,
            config: std::sync::Mutex::new(config),
        })
    }

    /// Applies `new` (the configuration re-read for SIGHUP): its server trust (CA and
    /// name, or PSK) and client certificate are used by every new handshake; live sessions
    /// continue. Changed keys that need a restart are named in a warning and not applied.
    ///
    /// # Errors
    /// A file that cannot be read or parsed: the old configuration stays in use (the
    /// failure is counted in `dtlsd_reloads_failed_total`).
    pub fn reload(&self, new: ConnectConfig) -> anyhow::Result<()> {
        let result = self.apply(new);
        if result.is_err() {
            self.daemon.count_reload_failure();
        }
        result
    }

    fn apply(&self, new: ConnectConfig) -> anyhow::Result<()> {
        let mut current = self
            .config
            .lock()
            .map_err(|_| anyhow::anyhow!("poisoned"))?;
        let engine = engine_config(&new)?;
        self.daemon.reload(
            Reload {
                config: Arc::new(engine),
                limits: None,
                access: None,
                recheck_certificates: false,
            },
            &current.restart_required(&new),
        )?;
        current.trust = new.trust;
        current.client_certificate = new.client_certificate;
        self.daemon.certificates().set(&certificate_files(&current));
        Ok(())
    }

    /// Sends close_notify on every session and stops every thread.
    ///
    /// # Errors
    /// A thread that stopped with an error or panicked.
    pub fn shutdown(self) -> anyhow::Result<()> {
        self.daemon.shutdown()
    }
}

/// The certificate files `config` uses, by key, for the expiry metric.
fn certificate_files(config: &ConnectConfig) -> Vec<(&'static str, &std::path::Path)> {
    let mut files = Vec::new();
    if let Some(c) = &config.client_certificate {
        files.push(("cert", c.cert.as_path()));
    }
    if let crate::config::ServerTrust::Ca { ca, .. } = &config.trust {
        files.push(("ca", ca.as_path()));
    }
    files
}

/// Everything a running daemon offers (address, counters, health) is available here.
impl std::ops::Deref for Client {
    type Target = Daemon;

    fn deref(&self) -> &Daemon {
        &self.daemon
    }
}

/// The handshake engine's client configuration from the resolved daemon configuration.
///
/// # Errors
/// A PEM file that cannot be read or parsed, or a configuration the engine refuses.
pub fn engine_config(config: &ConnectConfig) -> anyhow::Result<control::Config> {
    let certificate = match &config.client_certificate {
        None => None,
        Some(paths) => Some(load_certified_key(paths)?),
    };
    let (peer_verification, server_name) = match &config.trust {
        ServerTrust::Ca { ca, server_name } => {
            let verifier = CertificateVerifier::from_pem_file(ca)
                .with_context(|| format!("ca {}", ca.display()))?;
            (PeerVerifier::WebPki(verifier), Some(server_name.clone()))
        }
        ServerTrust::InsecureSkipVerify => {
            tracing::warn!(
                server = %config.server,
                "INSECURE: --insecure-skip-verify: the server's certificate is not verified; \
                 any active attacker can impersonate it"
            );
            (
                PeerVerifier::DangerousAcceptAnyCertificateForTestsOnly,
                None,
            )
        }
        // A PSK client authenticates the server by the PSK alone: no certificate is
        // accepted, and only PSK suites are offered (below).
        ServerTrust::Psk(_) => (PeerVerifier::RejectAll, None),
    };
    let mut engine = control::Config {
        certificate,
        server_name,
        mtu: usize::from(config.tuning.mtu),
        heartbeat: Some(HeartbeatMode::PeerAllowedToSend),
        retransmit: control::RetransmitConfig {
            max_handshake_time: Some(config.tuning.limits.handshake_timeout),
            ..control::RetransmitConfig::default()
        },
        connection_id: config.tuning.connection_id,
        rrc: config.tuning.rrc,
        versions: config.tuning.versions.clone(),
        tls13_groups: config.tuning.tls13_groups.clone(),
        tls13_cipher_suites: config.tuning.tls13_cipher_suites.clone(),
        ..control::Config::new(peer_verification)
    };
    if let ServerTrust::Psk(psk) = &config.trust {
        engine.psks = vec![control::Psk {
            identity: psk.identity.as_bytes().to_vec(),
            key: Zeroizing::new(psk.key().to_vec()),
        }];
        engine = engine.psk_suites_only();
    }
    engine.validate_client().context("client configuration")?;
    Ok(engine)
}
