//! Checks of a certificate chain file and its private key, shared by `dtlsd check-config`,
//! start-up and SIGHUP reload (all through [`check_cert_key`]), so a pair that cannot
//! authenticate a handshake never reaches the engine.
//!
//! Errors (the pair is refused):
//! - a file that cannot be read or parsed, a key type dtls-crypto cannot sign with;
//! - an encrypted private key (PKCS#8 `ENCRYPTED PRIVATE KEY`, or legacy PEM encryption
//!   with `Proc-Type: 4,ENCRYPTED`): the daemon cannot ask for a passphrase, and the
//!   message says how to write an unencrypted copy;
//! - a key that does not match the end-entity certificate: a signature made with the key
//!   ([`SigningKey`]) does not verify with the certificate's public key (webpki);
//! - a certificate in the file that has expired or is not valid yet at `now`;
//! - a chain out of order or with strays: every certificate but the last must be certified
//!   by the one right after it (its issuer name is the next one's subject, its signature
//!   verifies with the next one's key, and the next one is a CA), so a self-issued root can
//!   only be last, and no certificate may appear twice.
//!
//! Warnings (the pair is used; they are printed by check-config and logged otherwise):
//! - a certificate that expires within [`EXPIRY_WARNING`];
//! - a key file readable by group or others (mode `& 0o044`);
//! - a chain link whose signature algorithm cannot be checked here.
//!
//! What "complete" can mean without the peer's trust store: the chain must hold together
//! from the end entity to its last certificate. The last certificate's issuer is expected
//! to be a trust anchor the peer holds, so it may be absent (RFC 5246 §7.4.2: the root
//! "MAY be omitted"), or present as a self-issued last certificate. An end entity issued
//! directly by a root (what `dtlsd certs` writes) cannot be told apart from one whose
//! intermediates are missing, so that case gives neither error nor warning; a verifying
//! client (`dtlsd connect --ca`) reports a missing intermediate as an unknown issuer.
//!
//! No clock reads here: the caller passes `now`.

use std::fmt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use dtls_crypto::pki_types::{CertificateDer, UnixTime};
use dtls_crypto::{SigningKey, SigningKeyKind};
use x509_parser::certificate::X509Certificate;
use x509_parser::error::X509Error;
use x509_parser::time::ASN1Time;
use zeroize::Zeroizing;

use crate::config::CertKeyPaths;

/// A certificate expiring sooner than this gives a warning.
pub const EXPIRY_WARNING: Duration = Duration::from_secs(14 * 24 * 3600);

/// What the test signature of the key/certificate match check covers. Never sent anywhere.
const MATCH_PROBE: &[u8] = b"dtlsd: does this private key belong to this certificate?";

/// Which configuration key a finding is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    /// The certificate chain file (`cert`).
    Cert,
    /// The private key file (`key`).
    Key,
}

impl Field {
    /// The configuration key's name.
    pub fn key(self) -> &'static str {
        match self {
            Field::Cert => "cert",
            Field::Key => "key",
        }
    }
}

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// The pair is refused.
    Error,
    /// The pair is used; the operator should look.
    Warning,
}

/// One problem found with one file of a certificate/key pair.
#[derive(Debug)]
pub struct Finding {
    /// The key it is about.
    pub field: Field,
    /// Error or warning.
    pub severity: Severity,
    /// What is wrong.
    pub problem: CredentialProblem,
}

impl fmt::Display for Finding {
    /// `key: problem` (`cert: certificate #1 (CN=localhost) in ... expired on ...`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field.key(), self.problem)
    }
}

/// Where a certificate sits in its file: 1-based, the end entity is #1.
#[derive(Debug, Clone)]
pub struct CertId {
    /// 0-based index in the file.
    pub index: usize,
    /// The subject name, one line.
    pub subject: String,
}

impl fmt::Display for CertId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "certificate #{} ({})", self.index + 1, self.subject)
    }
}

/// What is wrong with a certificate chain file or a private key file. Every message names
/// the file; none contains key material.
#[derive(Debug, thiserror::Error)]
pub enum CredentialProblem {
    /// The file could not be read or parsed, or the key cannot sign.
    #[error("{source}")]
    Load {
        /// What dtls-crypto reported (names the file).
        source: dtls_crypto::Error,
    },
    /// The key file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The private key is encrypted.
    #[error(
        "{path} holds an encrypted private key ({format}); dtlsd cannot ask for a passphrase: \
         write an unencrypted copy with `openssl pkey -in {path} -out {path}.plain`, keep it \
         mode 0600 and name that file instead",
        path = path.display()
    )]
    EncryptedKey {
        /// The file.
        path: PathBuf,
        /// Which encryption: PKCS#8 or legacy PEM.
        format: &'static str,
    },
    /// The key does not belong to the end-entity certificate.
    #[error(
        "the private key in {} ({kind}) does not match the certificate in {}: a signature made \
         with the key does not verify with the certificate's public key",
        key.display(), cert.display(), kind = key_kind(*kind)
    )]
    KeyMismatch {
        /// The key file.
        key: PathBuf,
        /// The certificate file.
        cert: PathBuf,
        /// The key's type.
        kind: SigningKeyKind,
    },
    /// The end-entity certificate could not be used to check the key.
    #[error("cannot check the key against {}: {source}", cert.display())]
    MatchUnchecked {
        /// The certificate file.
        cert: PathBuf,
        /// What dtls-crypto reported.
        source: dtls_crypto::Error,
    },
    /// A certificate that X.509 parsing refuses.
    #[error("certificate #{} in {} is not valid X.509: {reason}", index + 1, path.display())]
    Unparsable {
        /// The file.
        path: PathBuf,
        /// 0-based index in the file.
        index: usize,
        /// The parser's message.
        reason: String,
    },
    /// `notAfter` has passed (RFC 5280 §4.1.2.5).
    #[error("{cert} in {} expired on {not_after}", path.display())]
    Expired {
        /// The file.
        path: PathBuf,
        /// Which certificate.
        cert: CertId,
        /// Its `notAfter`, RFC 3339.
        not_after: String,
    },
    /// `notBefore` is still ahead (RFC 5280 §4.1.2.5).
    #[error(
        "{cert} in {} is not valid before {not_before} (is the clock right?)",
        path.display()
    )]
    NotYetValid {
        /// The file.
        path: PathBuf,
        /// Which certificate.
        cert: CertId,
        /// Its `notBefore`, RFC 3339.
        not_before: String,
    },
    /// A warning: `notAfter` is close.
    #[error("{cert} in {} expires in {left} ({not_after})", path.display())]
    ExpiresSoon {
        /// The file.
        path: PathBuf,
        /// Which certificate.
        cert: CertId,
        /// Time left, in words (`5 days`, `3 hours`).
        left: String,
        /// Its `notAfter`, RFC 3339.
        not_after: String,
    },
    /// The same certificate appears twice.
    #[error("{cert} in {} is a duplicate of certificate #{}", path.display(), first + 1)]
    Duplicate {
        /// The file.
        path: PathBuf,
        /// The later copy.
        cert: CertId,
        /// 0-based index of the first copy.
        first: usize,
    },
    /// The next certificate did not issue this one, but a later one did.
    #[error(
        "chain out of order in {}: {cert} is followed by {next}, but its issuer is #{}; \
         order the file end entity first, each certificate followed by its issuer",
        path.display(), issuer + 1
    )]
    OutOfOrder {
        /// The file.
        path: PathBuf,
        /// The certificate whose issuer is misplaced.
        cert: CertId,
        /// The certificate right after it.
        next: CertId,
        /// 0-based index of its issuer.
        issuer: usize,
    },
    /// A self-issued certificate (a root) that is not the last one.
    #[error(
        "chain out of order in {}: {cert} is self-issued (a root) but is followed by {next}; \
         order the file end entity first, each certificate followed by its issuer, a root (if \
         any) last",
        path.display()
    )]
    RootNotLast {
        /// The file.
        path: PathBuf,
        /// The root.
        cert: CertId,
        /// The certificate right after it.
        next: CertId,
    },
    /// The next certificate did not issue this one, and no other in the file did.
    #[error(
        "broken chain in {}: {cert} is followed by {next}, which did not issue it (issuer \
         {issuer_name}); remove stray certificates and put each issuer after what it issued",
        path.display()
    )]
    NotIssuedByNext {
        /// The file.
        path: PathBuf,
        /// The certificate.
        cert: CertId,
        /// The one after it.
        next: CertId,
        /// The issuer name `cert` names.
        issuer_name: String,
    },
    /// The names link but the signature does not verify with the next one's key.
    #[error(
        "broken chain in {}: the signature on {cert} does not verify with the key of {next} \
         (same name, different key: a wrong or outdated intermediate?)",
        path.display()
    )]
    BadLinkSignature {
        /// The file.
        path: PathBuf,
        /// The certificate.
        cert: CertId,
        /// Its named issuer.
        next: CertId,
    },
    /// A certificate placed as an issuer is not a CA.
    #[error(
        "broken chain in {}: {issuer} issues {cert} but is not a CA certificate \
         (basicConstraints cA is not set)",
        path.display()
    )]
    IssuerNotCa {
        /// The file.
        path: PathBuf,
        /// The certificate issued.
        cert: CertId,
        /// The non-CA after it.
        issuer: CertId,
    },
    /// A warning: a chain link signed with an algorithm this check cannot verify.
    #[error(
        "cannot verify the signature on {cert} in {} with the key of {next}: {reason}",
        path.display()
    )]
    LinkUnchecked {
        /// The file.
        path: PathBuf,
        /// The certificate.
        cert: CertId,
        /// Its named issuer.
        next: CertId,
        /// Why.
        reason: String,
    },
    /// A warning: the key file's mode lets group or others read it.
    #[error(
        "{} is readable by {who} (mode {mode:04o}); run `chmod 600 {}`",
        path.display(), path.display()
    )]
    KeyReadableByOthers {
        /// The file.
        path: PathBuf,
        /// `group`, `others` or `group and others`.
        who: &'static str,
        /// Its permission bits.
        mode: u32,
    },
}

fn key_kind(kind: SigningKeyKind) -> &'static str {
    match kind {
        SigningKeyKind::EcdsaP256 => "ECDSA P-256",
        SigningKeyKind::EcdsaP384 => "ECDSA P-384",
        SigningKeyKind::Rsa => "RSA",
        SigningKeyKind::Ed25519 => "Ed25519",
    }
}

/// The outcome of [`check_cert_key`].
#[derive(Debug)]
pub struct Checked {
    /// The chain and key, when both loaded and no finding is an error.
    pub loaded: Option<control::CertifiedKey>,
    /// Every finding, errors and warnings, certificate findings first.
    pub findings: Vec<Finding>,
}

impl Checked {
    /// The errors only.
    pub fn errors(&self) -> impl Iterator<Item = &Finding> {
        self.findings
            .iter()
            .filter(|f| f.severity == Severity::Error)
    }

    /// The warnings only.
    pub fn warnings(&self) -> impl Iterator<Item = &Finding> {
        self.findings
            .iter()
            .filter(|f| f.severity == Severity::Warning)
    }
}

/// Loads a certificate chain and its private key and checks them at `now` (see the module
/// documentation for what is checked).
pub fn check_cert_key(paths: &CertKeyPaths, now: UnixTime) -> Checked {
    let mut findings = Vec::new();
    let chain = check_chain_file(&paths.cert, now, &mut findings);
    let key = check_key_file(&paths.key, &mut findings);
    if let (Some(chain), Some(key)) = (&chain, &key)
        && let Some(problem) = key_mismatch(paths, chain, key)
    {
        findings.push(Finding {
            field: Field::Key,
            severity: Severity::Error,
            problem,
        });
    }
    let ok = findings.iter().all(|f| f.severity == Severity::Warning);
    let loaded = match (chain, key) {
        (Some(chain), Some(key)) if ok => Some(control::CertifiedKey { chain, key }),
        _ => None,
    };
    Checked { loaded, findings }
}

/// The errors of a refused pair, one line (`key: problem; cert: problem`).
#[derive(Debug, thiserror::Error)]
#[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
pub struct CredentialErrors(pub Vec<Finding>);

/// Loads and checks a certificate chain and its key for the handshake engine at `now`
/// ([`check_cert_key`]); logs each warning. What start-up and SIGHUP reload use.
///
/// # Errors
/// Every error finding, on one line.
pub fn load_certified_key(
    paths: &CertKeyPaths,
    now: UnixTime,
) -> Result<Arc<control::CertifiedKey>, CredentialErrors> {
    let checked = check_cert_key(paths, now);
    for warning in checked.warnings() {
        tracing::warn!(config_key = warning.field.key(), "{}", warning.problem);
    }
    match checked.loaded {
        Some(loaded) => Ok(Arc::new(loaded)),
        None => Err(CredentialErrors(
            checked
                .findings
                .into_iter()
                .filter(|f| f.severity == Severity::Error)
                .collect(),
        )),
    }
}

fn error(field: Field, problem: CredentialProblem) -> Finding {
    Finding {
        field,
        severity: Severity::Error,
        problem,
    }
}

fn warning(field: Field, problem: CredentialProblem) -> Finding {
    Finding {
        field,
        severity: Severity::Warning,
        problem,
    }
}

/// The earliest `notAfter` (Unix seconds) of the certificates in the PEM file `path`, or
/// `None` when it holds none that parse.
pub fn earliest_not_after(path: &Path) -> Option<i64> {
    let ders = dtls_crypto::pem::load_certificates(path).ok()?;
    ders.iter()
        .filter_map(|der| x509_parser::parse_x509_certificate(der).ok())
        .map(|(_, cert)| cert.validity().not_after.timestamp())
        .min()
}

/// Loads the chain and checks each certificate's validity and the chain's order.
fn check_chain_file(
    path: &Path,
    now: UnixTime,
    findings: &mut Vec<Finding>,
) -> Option<Vec<CertificateDer<'static>>> {
    let ders = match dtls_crypto::pem::load_certificates(path) {
        Ok(ders) => ders,
        Err(source) => {
            findings.push(error(Field::Cert, CredentialProblem::Load { source }));
            return None;
        }
    };
    let mut parsed = Vec::with_capacity(ders.len());
    for (index, der) in ders.iter().enumerate() {
        match x509_parser::parse_x509_certificate(der) {
            Ok((_, cert)) => parsed.push(cert),
            Err(e) => {
                findings.push(error(
                    Field::Cert,
                    CredentialProblem::Unparsable {
                        path: path.to_path_buf(),
                        index,
                        reason: one_line(&e.to_string()),
                    },
                ));
                return None;
            }
        }
    }
    for (index, cert) in parsed.iter().enumerate() {
        if let Some(f) = validity(path, index, cert, now) {
            findings.push(f);
        }
    }
    check_order(path, &ders, &parsed, findings);
    Some(ders)
}

fn cert_id(index: usize, cert: &X509Certificate<'_>) -> CertId {
    CertId {
        index,
        subject: one_line(&cert.subject().to_string()),
    }
}

/// RFC 5280 §4.1.2.5: the certificate is valid from `notBefore` to `notAfter`, inclusive.
fn validity(
    path: &Path,
    index: usize,
    cert: &X509Certificate<'_>,
    now: UnixTime,
) -> Option<Finding> {
    let now = i64::try_from(now.as_secs()).unwrap_or(i64::MAX);
    let v = cert.validity();
    let (not_before, not_after) = (v.not_before.timestamp(), v.not_after.timestamp());
    let path = path.to_path_buf();
    let cert_id = cert_id(index, cert);
    if now < not_before {
        return Some(error(
            Field::Cert,
            CredentialProblem::NotYetValid {
                path,
                cert: cert_id,
                not_before: rfc3339(v.not_before),
            },
        ));
    }
    if now > not_after {
        return Some(error(
            Field::Cert,
            CredentialProblem::Expired {
                path,
                cert: cert_id,
                not_after: rfc3339(v.not_after),
            },
        ));
    }
    let left = not_after.abs_diff(now);
    (left < EXPIRY_WARNING.as_secs()).then(|| {
        warning(
            Field::Cert,
            CredentialProblem::ExpiresSoon {
                path,
                cert: cert_id,
                left: in_words(left),
                not_after: rfc3339(v.not_after),
            },
        )
    })
}

/// Whole days, or whole hours under a day, or minutes under an hour.
fn in_words(secs: u64) -> String {
    let plural = |n: u64, unit: &str| format!("{n} {unit}{}", if n == 1 { "" } else { "s" });
    match secs {
        s if s >= 86_400 => plural(s / 86_400, "day"),
        s if s >= 3_600 => plural(s / 3_600, "hour"),
        s => plural(s / 60, "minute"),
    }
}

fn rfc3339(t: ASN1Time) -> String {
    t.to_datetime()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| t.to_string())
}

/// No duplicates; each certificate but the last certified by the next one.
fn check_order(
    path: &Path,
    ders: &[CertificateDer<'_>],
    certs: &[X509Certificate<'_>],
    findings: &mut Vec<Finding>,
) {
    let path_buf = || path.to_path_buf();
    for (index, der) in ders.iter().enumerate() {
        if let Some(first) = ders[..index].iter().position(|d| d == der) {
            findings.push(error(
                Field::Cert,
                CredentialProblem::Duplicate {
                    path: path_buf(),
                    cert: cert_id(index, &certs[index]),
                    first,
                },
            ));
            return;
        }
    }
    for (index, pair) in certs.windows(2).enumerate() {
        let (cert, next) = (&pair[0], &pair[1]);
        let (this_id, next_id) = (cert_id(index, cert), cert_id(index + 1, next));
        if cert.issuer().as_raw() != next.subject().as_raw() {
            let issuer = certs
                .iter()
                .enumerate()
                .skip(index + 2)
                .chain(certs.iter().enumerate().take(index))
                .find(|(_, c)| c.subject().as_raw() == cert.issuer().as_raw())
                .map(|(i, _)| i);
            let self_issued = cert.issuer().as_raw() == cert.subject().as_raw();
            let problem = match issuer {
                _ if self_issued => CredentialProblem::RootNotLast {
                    path: path_buf(),
                    cert: this_id,
                    next: next_id,
                },
                Some(issuer) => CredentialProblem::OutOfOrder {
                    path: path_buf(),
                    cert: this_id,
                    next: next_id,
                    issuer,
                },
                None => CredentialProblem::NotIssuedByNext {
                    path: path_buf(),
                    cert: this_id,
                    next: next_id,
                    issuer_name: one_line(&cert.issuer().to_string()),
                },
            };
            findings.push(error(Field::Cert, problem));
            return;
        }
        match cert.verify_signature(Some(next.public_key())) {
            Ok(()) => {}
            Err(X509Error::SignatureUnsupportedAlgorithm) => findings.push(warning(
                Field::Cert,
                CredentialProblem::LinkUnchecked {
                    path: path_buf(),
                    cert: this_id.clone(),
                    next: next_id.clone(),
                    reason: "unsupported signature algorithm".into(),
                },
            )),
            Err(_) => {
                findings.push(error(
                    Field::Cert,
                    CredentialProblem::BadLinkSignature {
                        path: path_buf(),
                        cert: this_id,
                        next: next_id,
                    },
                ));
                return;
            }
        }
        // RFC 5280 §4.2.1.9: a certificate's key verifies certificate signatures only when
        // basicConstraints asserts cA; clients refuse a chain through a non-CA.
        if !next.is_ca() {
            findings.push(error(
                Field::Cert,
                CredentialProblem::IssuerNotCa {
                    path: path_buf(),
                    cert: this_id,
                    issuer: next_id,
                },
            ));
            return;
        }
    }
}

/// Reads the key file: a warning for group/other read bits, an error for an encrypted key
/// or one that cannot be loaded.
fn check_key_file(path: &Path, findings: &mut Vec<Finding>) -> Option<SigningKey> {
    if let Ok(meta) = std::fs::metadata(path) {
        let mode = meta.permissions().mode() & 0o7777;
        let who = match (mode & 0o040 != 0, mode & 0o004 != 0) {
            (true, true) => Some("group and others"),
            (true, false) => Some("group"),
            (false, true) => Some("others"),
            (false, false) => None,
        };
        if let Some(who) = who {
            findings.push(warning(
                Field::Key,
                CredentialProblem::KeyReadableByOthers {
                    path: path.to_path_buf(),
                    who,
                    mode,
                },
            ));
        }
    }
    let bytes = match std::fs::read(path) {
        Ok(bytes) => Zeroizing::new(bytes),
        Err(source) => {
            findings.push(error(
                Field::Key,
                CredentialProblem::Read {
                    path: path.to_path_buf(),
                    source,
                },
            ));
            return None;
        }
    };
    if let Some(format) = encryption(&bytes) {
        findings.push(error(
            Field::Key,
            CredentialProblem::EncryptedKey {
                path: path.to_path_buf(),
                format,
            },
        ));
        return None;
    }
    let loaded = dtls_crypto::pem::load_private_key(path).and_then(|k| SigningKey::from_der(&k));
    match loaded {
        Ok(key) => Some(key),
        Err(source) => {
            findings.push(error(Field::Key, CredentialProblem::Load { source }));
            None
        }
    }
}

/// How the first private key in a PEM file is encrypted, if it is: PKCS#8
/// `EncryptedPrivateKeyInfo` (RFC 5958 §3, label `ENCRYPTED PRIVATE KEY` per RFC 7468 §11),
/// or RFC 1421 PEM encryption (`Proc-Type: 4,ENCRYPTED`, OpenSSL's traditional format).
fn encryption(pem_text: &[u8]) -> Option<&'static str> {
    // A file the PEM parser refuses is reported by the loader with its own message.
    let blocks = pem::parse_many(pem_text).ok()?;
    let first_key = blocks.iter().find(|b| b.tag().ends_with("PRIVATE KEY"))?;
    if first_key.tag() == "ENCRYPTED PRIVATE KEY" {
        return Some("PKCS#8 ENCRYPTED PRIVATE KEY");
    }
    first_key
        .headers()
        .get("Proc-Type")
        .is_some_and(|v| v.contains("ENCRYPTED"))
        .then_some("legacy PEM encryption, Proc-Type: 4,ENCRYPTED")
}

/// Signs [`MATCH_PROBE`] with the key and verifies it with the end-entity certificate.
fn key_mismatch(
    paths: &CertKeyPaths,
    chain: &[CertificateDer<'_>],
    key: &SigningKey,
) -> Option<CredentialProblem> {
    let end_entity = chain.first()?;
    // Every key kind has at least one scheme (see `SigningKey::schemes`).
    let scheme = *key.schemes().first()?;
    let result = key
        .sign(scheme, MATCH_PROBE)
        .and_then(|sig| dtls_crypto::verify_signature(scheme, end_entity, MATCH_PROBE, &sig));
    match result {
        Ok(()) => None,
        Err(dtls_crypto::Error::BadSignature { .. }) => Some(CredentialProblem::KeyMismatch {
            key: paths.key.clone(),
            cert: paths.cert.clone(),
            kind: key.kind(),
        }),
        Err(source) => Some(CredentialProblem::MatchUnchecked {
            cert: paths.cert.clone(),
            source,
        }),
    }
}

/// Control characters (from certificate names) shown escaped, so a message stays one line.
fn one_line(s: &str) -> String {
    s.chars()
        .flat_map(|c| {
            if c.is_control() {
                c.escape_default().collect::<Vec<_>>()
            } else {
                vec![c]
            }
        })
        .collect()
}

#[cfg(test)]
#[path = "certcheck_tests.rs"]
mod tests;
