//! `dtlsd check-config`: parse, validate, and load every PEM file the configuration names.

use std::path::Path;

use dtls_crypto::pem::{load_certificates, load_private_key};
use dtls_crypto::{CertificateVerifier, SigningKey};

use crate::config::{self, CertKeyPaths, Config, ConfigError, ConfigErrors, Problem, ServerTrust};

/// Loads `path`, validates it and loads the PEM files it names.
///
/// # Errors
/// Every problem found, one [`ConfigError`] each, naming its key.
pub fn check_file(path: &Path) -> Result<Config, ConfigErrors> {
    let raw = config::raw::load_file(path)?;
    let config = config::validate(raw)?;
    let errors = load_pem_files(&config);
    if errors.is_empty() {
        Ok(config)
    } else {
        Err(ConfigErrors(errors))
    }
}

/// Loads the certificates, keys and CAs a valid configuration names, through
/// `dtls_crypto::pem`, and returns what failed. Keys must be of a type dtls-crypto can sign
/// with; CA files must hold usable trust anchors.
pub fn load_pem_files(config: &Config) -> Vec<ConfigError> {
    let mut errors = Vec::new();
    let role = config.role();
    let mut check = |key: &str, result: Result<(), dtls_crypto::Error>| {
        if let Err(source) = result {
            errors.push(ConfigError::new(role, key, Problem::Pem { source }));
        }
    };
    let cert_key = |paths: &CertKeyPaths| {
        (
            load_certificates(&paths.cert).map(drop),
            load_private_key(&paths.key).and_then(|k| SigningKey::from_der(&k).map(drop)),
        )
    };
    let ca = |path: &Path| CertificateVerifier::from_pem_file(path).map(drop);
    match config {
        Config::Serve(s) => {
            if let Some(paths) = &s.credentials.certificate {
                let (c, k) = cert_key(paths);
                check("cert", c);
                check("key", k);
            }
            if let Some(path) = &s.credentials.client_ca {
                check("client_ca", ca(path));
            }
        }
        Config::Connect(c) => {
            if let Some(paths) = &c.client_certificate {
                let (cert, key) = cert_key(paths);
                check("cert", cert);
                check("key", key);
            }
            if let ServerTrust::Ca { ca: path, .. } = &c.trust {
                check("ca", ca(path));
            }
        }
    }
    errors
}
