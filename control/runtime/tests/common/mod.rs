//! What the control-loop integration tests share: the test PKI, the wall-clock time handed
//! to the engines, a certified server configuration and a [`ControlThread`] over in-memory
//! shard queues (the daemon's, minus its threads and sockets).

// Each test binary uses a subset of these helpers.
#![allow(dead_code)]

pub mod daemon;
pub mod overload;

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use control::{Acceptor, AcceptorConfig, CertifiedKey, Config, PeerVerifier, SigningKey};
use dtls_crypto::pki_types::UnixTime;
use dtls_crypto::test_pki::TestPki;
use dtls_crypto::{CertificateVerifier, SeededRng, pem};
use dtls_proto::ProtocolVersion;
use dtls_runtime::{ControlThread, RuntimeConfig};
use dtls_shard::ShardQueues;

/// The wall-clock time the tests hand the engines (2027-01-15), inside the test PKI's
/// validity. The control loop reads the clock only in `run`, which these tests do not call.
pub fn test_wall() -> UnixTime {
    UnixTime::since_unix_epoch(Duration::from_secs(1_800_000_000))
}

fn pki() -> &'static TestPki {
    static PKI: OnceLock<TestPki> = OnceLock::new();
    PKI.get_or_init(|| TestPki::generate().expect("test PKI"))
}

/// Verifies the test PKI's chains.
pub fn verifier() -> PeerVerifier {
    let ca = pem::parse_certificates(pki().ca.cert_pem.as_bytes()).expect("ca");
    PeerVerifier::WebPki(CertificateVerifier::new(&ca).expect("verifier"))
}

/// A server of `versions` with the test PKI's P-256 certificate, defaults otherwise.
pub fn server_config(versions: Vec<ProtocolVersion>) -> Config {
    let pki = pki();
    Config {
        versions,
        certificate: Some(Arc::new(CertifiedKey {
            chain: pem::parse_certificates(pki.server.cert_pem.as_bytes()).expect("cert"),
            key: SigningKey::from_pem_slice(pki.server.key_pem.as_bytes()).expect("key"),
        })),
        ..Config::new(verifier())
    }
}

/// The control loop for `server` over one shard's queues (`capacity` commands and
/// datagrams each way), with seeded randomness.
pub fn control_thread(
    server: Config,
    now: Instant,
    capacity: usize,
) -> (ControlThread, Arc<ShardQueues>) {
    control_thread_with(server, now, capacity, RuntimeConfig::default())
}

/// [`control_thread`] with the loop's own settings (its limits, overload policy).
pub fn control_thread_with(
    server: Config,
    now: Instant,
    capacity: usize,
    runtime: RuntimeConfig,
) -> (ControlThread, Arc<ShardQueues>) {
    let mut rng = SeededRng::new(1);
    let acceptor = Acceptor::new(Arc::new(server), AcceptorConfig::default(), &mut rng, now)
        .expect("server config is valid");
    let queues = Arc::new(ShardQueues::new(capacity, capacity));
    let mut seed = 10;
    let factory = Box::new(move || {
        seed += 1;
        Box::new(SeededRng::new(seed)) as Box<dyn control::Rng + Send>
    });
    let ctl = ControlThread::new(acceptor, vec![Arc::clone(&queues)], runtime, factory);
    (ctl, queues)
}
