//! `dtlsd serve`: terminate DTLS from any number of clients on one port and relay each
//! session's plaintext to the backend over its own upstream UDP flow.
//!
//! [`Server::start`] loads the certificate, key, client CA and PSKs into a
//! `control::Config` (server preference order: the engine's default suite order; heartbeat
//! `peer_allowed_to_send`, so peers may probe us; session tickets with an hourly key
//! rotation), then starts the shared machinery of
//! [`Daemon`] in serve mode with a stateless cookie front. [`Server::reload`] re-reads the
//! credential files for SIGHUP; a bad file keeps the old configuration.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use control::crypto::SystemRng;
use control::runtime::{ControlThread, RuntimeConfig};
use control::{Acceptor, AcceptorConfig, ClientAuth, HeartbeatMode, PeerVerifier};
use dtls_crypto::pki_types::UnixTime;
use dtls_crypto::{CertificateVerifier, TicketKeys};
use dtls_shard::{RelayMode, ShardConfig};
use zeroize::Zeroizing;

use crate::config::ServeConfig;
use crate::daemon::{Daemon, load_certified_key};

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
    config: ServeConfig,
    /// Session-ticket keys, kept across reloads so tickets stay valid.
    tickets: Arc<Mutex<TicketKeys>>,
}

impl Server {
    /// Loads the credentials and starts shards, the control thread and metrics.
    ///
    /// # Errors
    /// An unreadable or invalid PEM file, a socket that cannot be bound (port in use), or
    /// a thread that could not start.
    pub fn start(config: ServeConfig, options: Options) -> anyhow::Result<Self> {
        let tickets = TicketKeys::new(
            &mut SystemRng::new(),
            UnixTime::now(),
            TICKET_ROTATION,
            TICKET_LIFETIME,
        )
        .context("session ticket keys")?;
        let tickets = Arc::new(Mutex::new(tickets));
        let engine = Arc::new(engine_config(&config, &tickets)?);
        let shard_config = ShardConfig::with_mode(RelayMode::Serve, config.backend);
        let settings = RuntimeConfig {
            null_record_protection: options.null_record_protection,
            ..RuntimeConfig::default()
        };
        let daemon = Daemon::start(
            config.listen,
            shard_config,
            &config.tuning,
            Box::new(move |queues| {
                let mut rng = SystemRng::new();
                let acceptor =
                    Acceptor::new(engine, AcceptorConfig::default(), &mut rng, Instant::now())
                        .context("server configuration")?;
                Ok(ControlThread::new(
                    acceptor,
                    queues,
                    settings,
                    Box::new(|| Box::new(SystemRng::new())),
                ))
            }),
        )?;
        tracing::info!(
            listen = %daemon.local_addr(),
            backend = %config.backend,
            shards = daemon.shard_count(),
            "dtlsd serve listening"
        );
        Ok(Self {
            daemon,
            config,
            tickets,
        })
    }

    /// Re-reads the certificate, key, client CA and PSK settings of the configuration the
    /// server started with (SIGHUP): new handshakes use them, live sessions continue.
    ///
    /// # Errors
    /// A file that cannot be read or parsed: the old configuration stays in use.
    pub fn reload(&self) -> anyhow::Result<()> {
        let engine = engine_config(&self.config, &self.tickets)?;
        self.daemon.reload(engine)
    }

    /// Sends close_notify to every session and stops every thread.
    ///
    /// # Errors
    /// A thread that stopped with an error or panicked.
    pub fn shutdown(self) -> anyhow::Result<()> {
        self.daemon.shutdown()
    }
}

/// Everything a running daemon offers (address, counters, health) is available here.
impl std::ops::Deref for Server {
    type Target = Daemon;

    fn deref(&self) -> &Daemon {
        &self.daemon
    }
}

/// The handshake engine's server configuration from the resolved daemon configuration,
/// issuing and accepting session tickets under `tickets` (RFC 5077).
///
/// # Errors
/// A PEM file that cannot be read or parsed, or a configuration the engine refuses.
pub fn engine_config(
    config: &ServeConfig,
    tickets: &Arc<Mutex<TicketKeys>>,
) -> anyhow::Result<control::Config> {
    let creds = &config.credentials;
    let certificate = match &creds.certificate {
        None => None,
        Some(paths) => Some(load_certified_key(paths)?),
    };
    let (client_auth, peer_verification) = match &creds.client_ca {
        None => (
            ClientAuth::None,
            PeerVerifier::DangerousAcceptAnyCertificateForTestsOnly,
        ),
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
        // Without client authentication no peer certificate is ever asked for, so the
        // accept-any policy above is never consulted.
        peer_verification,
        psks,
        mtu: usize::from(config.tuning.mtu),
        heartbeat: Some(HeartbeatMode::PeerAllowedToSend),
        ticket_keys: Some(Arc::clone(tickets)),
        ticket_lifetime: u32::try_from(TICKET_LIFETIME.as_secs()).unwrap_or(u32::MAX),
        ..control::Config::default()
    };
    engine.validate().context("server configuration")?;
    Ok(engine)
}
