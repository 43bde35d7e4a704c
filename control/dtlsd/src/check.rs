//! `dtlsd check-config`: parse, validate, and load and check every PEM file the
//! configuration names. `serve` and `connect` run the same file checks before they start.

use std::path::Path;

use dtls_crypto::CertificateVerifier;
use dtls_crypto::pki_types::UnixTime;

use crate::certcheck::{self, Severity};
use crate::config::{
    self, CertKeyPaths, Config, ConfigError, ConfigErrors, ConnectConfig, Problem, Role,
    ServeConfig, ServerTrust,
};

/// A configuration that passed every check, with the warnings found on the way.
#[derive(Debug)]
pub struct Checked {
    /// The validated configuration.
    pub config: Config,
    /// Problems that do not stop the daemon (a certificate expiring soon, a key file that
    /// others can read), each naming its key.
    pub warnings: Vec<ConfigError>,
}

/// What the file checks found: errors refuse the configuration, warnings do not.
#[derive(Debug, Default)]
pub struct FileReport {
    /// Each naming its key.
    pub errors: Vec<ConfigError>,
    /// Each naming its key.
    pub warnings: Vec<ConfigError>,
}

/// Loads `path`, validates it and loads and checks the PEM files it names, at the current
/// time.
///
/// # Errors
/// Every problem found, one [`ConfigError`] each, naming its key.
pub fn check_file(path: &Path) -> Result<Checked, ConfigErrors> {
    let raw = config::raw::load_file(path)?;
    let config = config::validate(raw)?;
    let report = check_files(&config, UnixTime::now());
    if report.errors.is_empty() {
        Ok(Checked {
            config,
            warnings: report.warnings,
        })
    } else {
        Err(ConfigErrors(report.errors))
    }
}

/// The file checks `dtlsd serve` runs before it starts, at the current time: the errors
/// `check-config` would report. Warnings are left to the loading path, which logs them.
///
/// # Errors
/// Every error found, each naming its key.
pub fn serve_files(config: ServeConfig) -> Result<ServeConfig, ConfigErrors> {
    errors_only(serve_report(&config, UnixTime::now()))?;
    Ok(config)
}

/// As [`serve_files`], for `dtlsd connect`.
///
/// # Errors
/// Every error found, each naming its key.
pub fn connect_files(config: ConnectConfig) -> Result<ConnectConfig, ConfigErrors> {
    errors_only(connect_report(&config, UnixTime::now()))?;
    Ok(config)
}

fn errors_only(report: FileReport) -> Result<(), ConfigErrors> {
    if report.errors.is_empty() {
        Ok(())
    } else {
        Err(ConfigErrors(report.errors))
    }
}

/// Loads and checks the certificates, keys and CAs a valid configuration names, at `now`
/// (see `crate::certcheck` for the certificate/key checks). Keys must be of a type
/// dtls-crypto can sign with; CA files must hold usable trust anchors.
pub fn check_files(config: &Config, now: UnixTime) -> FileReport {
    match config {
        Config::Serve(s) => serve_report(s, now),
        Config::Connect(c) => connect_report(c, now),
    }
}

fn serve_report(s: &ServeConfig, now: UnixTime) -> FileReport {
    let mut report = FileReport::default();
    if let Some(paths) = &s.credentials.certificate {
        report.cert_key(Role::Serve, paths, now);
    }
    if let Some(path) = &s.credentials.client_ca {
        report.ca(Role::Serve, "client_ca", path);
    }
    if let Some(path) = &s.key_store
        && let Err(e) = crate::keystore::KeyStore::load(path)
    {
        report.errors.push(ConfigError::new(
            Role::Serve,
            "key_store",
            Problem::KeyStore {
                reason: format!("{e:#}"),
            },
        ));
    }
    report
}

fn connect_report(c: &ConnectConfig, now: UnixTime) -> FileReport {
    let mut report = FileReport::default();
    if let Some(paths) = &c.client_certificate {
        report.cert_key(Role::Connect, paths, now);
    }
    if let ServerTrust::Ca { ca: path, .. } = &c.trust {
        report.ca(Role::Connect, "ca", path);
    }
    report
}

impl FileReport {
    fn cert_key(&mut self, role: Role, paths: &CertKeyPaths, now: UnixTime) {
        for finding in certcheck::check_cert_key(paths, now).findings {
            let error = ConfigError::new(
                role,
                finding.field.key(),
                Problem::Credential {
                    source: Box::new(finding.problem),
                },
            );
            match finding.severity {
                Severity::Error => self.errors.push(error),
                Severity::Warning => self.warnings.push(error),
            }
        }
    }

    fn ca(&mut self, role: Role, key: &str, path: &Path) {
        if let Err(source) = CertificateVerifier::from_pem_file(path) {
            self.errors
                .push(ConfigError::new(role, key, Problem::Pem { source }));
        }
    }
}
