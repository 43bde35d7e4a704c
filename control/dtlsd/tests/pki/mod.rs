//! Certificates for the credential-check tests, generated with rcgen (ECDSA P-256): roots,
//! intermediates and end entities with chosen validity periods. Shared by the integration
//! tests (`mod pki;`) and the unit tests of `certcheck` (through `#[path]`).

// Each test binary uses a subset of these helpers.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, SanType,
};
use time::{Duration, OffsetDateTime};

/// A CA that can issue certificates.
pub type Ca = CertifiedIssuer<'static, KeyPair>;

/// A certificate's validity period.
#[derive(Debug, Clone, Copy)]
pub struct Validity {
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
}

impl Validity {
    /// From yesterday to a year from now.
    pub fn current() -> Self {
        Self::days(-1, 365)
    }

    /// From `from` to `to` days from now (negative: in the past).
    pub fn days(from: i64, to: i64) -> Self {
        let now = OffsetDateTime::now_utc();
        Self {
            not_before: now + Duration::days(from),
            not_after: now + Duration::days(to),
        }
    }

    /// Ended yesterday.
    pub fn expired() -> Self {
        Self::days(-30, -1)
    }

    /// Starts tomorrow.
    pub fn not_yet() -> Self {
        Self::days(1, 365)
    }

    /// Ends in `days` days and an hour (so the whole days left read `days`).
    pub fn ending_in(days: i64) -> Self {
        let now = OffsetDateTime::now_utc();
        Self {
            not_before: now - Duration::days(1),
            not_after: now + Duration::days(days) + Duration::hours(1),
        }
    }
}

fn name(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    dn
}

fn key() -> KeyPair {
    KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("P-256 key")
}

fn ca_params(common_name: &str) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = name(common_name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params
}

/// A self-signed root, valid from 1975 to 4096 (rcgen's default).
pub fn root(common_name: &str) -> Ca {
    CertifiedIssuer::self_signed(ca_params(common_name), key()).expect("root")
}

/// An intermediate CA issued by `parent`.
pub fn intermediate(common_name: &str, parent: &Ca) -> Ca {
    CertifiedIssuer::signed_by(ca_params(common_name), key(), parent).expect("intermediate")
}

/// A server end entity (SAN `localhost`, `127.0.0.1`) issued by `issuer`: its PEM
/// certificate and its key.
pub fn leaf(validity: Validity, issuer: &Ca) -> (String, KeyPair) {
    let mut params = CertificateParams::default();
    params.distinguished_name = name("localhost");
    params.is_ca = IsCa::NoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.subject_alt_names = vec![
        SanType::DnsName("localhost".try_into().expect("DNS name")),
        SanType::IpAddress([127, 0, 0, 1].into()),
    ];
    params.not_before = validity.not_before;
    params.not_after = validity.not_after;
    let key = key();
    let cert = params.signed_by(&key, issuer).expect("leaf");
    (cert.pem(), key)
}

/// A fresh P-256 key in PKCS#8 PEM (one that matches no certificate).
pub fn other_key_pem() -> String {
    key().serialize_pem()
}

/// Writes `text` to `dir/name` with `mode`, returning the path.
pub fn write(dir: &Path, name: &str, text: &str, mode: u32) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write test file");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
    path
}

/// The files of a server: `ca.pem` (the root a client trusts), `chain` written as
/// `server.pem` from the PEM blocks given, and `key` as `server.key` (mode 0600).
pub struct Files {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

pub fn write_files(dir: &Path, ca: &Ca, chain: &[&str], key_pem: &str) -> Files {
    Files {
        ca: write(dir, "ca.pem", &ca.pem(), 0o644),
        cert: write(dir, "server.pem", &chain.concat(), 0o644),
        key: write(dir, "server.key", key_pem, 0o600),
    }
}
