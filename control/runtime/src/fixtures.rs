//! Engine configurations for the control loop's in-memory tests: the test PKI's server
//! certificate and a client that trusts its CA.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use control::{CertifiedKey, CipherSuite, Config, PeerVerifier, SigningKey};
use dtls_crypto::pki_types::UnixTime;
use dtls_crypto::test_pki::TestPki;
use dtls_crypto::{CertificateVerifier, pem};

/// The wall-clock time the tests hand the engines (2027-01-15), inside the test PKI's
/// validity. The control loop reads the clock only in `run`, which these tests do not call.
pub(crate) fn test_wall() -> UnixTime {
    UnixTime::since_unix_epoch(Duration::from_secs(1_800_000_000))
}

fn pki() -> &'static TestPki {
    static PKI: OnceLock<TestPki> = OnceLock::new();
    PKI.get_or_init(|| TestPki::generate().expect("test PKI"))
}

fn verifier() -> PeerVerifier {
    let ca = pem::parse_certificates(pki().ca.cert_pem.as_bytes()).expect("ca");
    PeerVerifier::WebPki(CertificateVerifier::new(&ca).expect("verifier"))
}

pub(crate) fn client_config(suites: &[CipherSuite]) -> Config {
    Config {
        cipher_suites: suites.to_vec(),
        server_name: Some("localhost".into()),
        ..Config::new(verifier())
    }
}

pub(crate) fn server_config(suites: &[CipherSuite], rsa: bool) -> Config {
    let pki = pki();
    let (cert_pem, key_pem) = if rsa {
        (&pki.server_rsa.cert_pem, &pki.server_rsa.key_pem)
    } else {
        (&pki.server.cert_pem, &pki.server.key_pem)
    };
    Config {
        cipher_suites: suites.to_vec(),
        certificate: Some(Arc::new(CertifiedKey {
            chain: pem::parse_certificates(cert_pem.as_bytes()).expect("cert"),
            key: SigningKey::from_pem_slice(key_pem.as_bytes()).expect("key"),
        })),
        ..Config::new(verifier())
    }
}
