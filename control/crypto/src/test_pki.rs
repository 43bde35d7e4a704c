//! Test PKI generation: a CA and server/client certificates for tests, interop runs and
//! `dtlsd certs`.
//!
//! Files (standard PEM labels, loadable by OpenSSL and GnuTLS):
//! `ca.pem`, `ca.key`, `server.pem`, `server.key`, `client.pem`, `client.key` (ECDSA P-256,
//! server SAN `localhost` and `127.0.0.1`), and `server-rsa.pem`, `server-rsa.key`
//! (RSA 2048, same SANs, for ECDHE_RSA suites), all issued by the P-256 CA.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};

use crate::Error;

/// One certificate and its private key, in PEM.
#[derive(Debug, Clone)]
pub struct PemPair {
    /// The certificate (`CERTIFICATE`).
    pub cert_pem: String,
    /// The private key (`PRIVATE KEY`, PKCS#8).
    pub key_pem: String,
}

/// A generated test PKI, in memory.
#[derive(Debug, Clone)]
pub struct TestPki {
    /// The self-signed CA.
    pub ca: PemPair,
    /// ECDSA P-256 server certificate for `localhost` / `127.0.0.1`.
    pub server: PemPair,
    /// ECDSA P-256 client certificate (client-auth EKU).
    pub client: PemPair,
    /// RSA 2048 server certificate for `localhost` / `127.0.0.1`.
    pub server_rsa: PemPair,
    /// Server certificate (localhost) with an ECDSA P-384 key.
    pub server_p384: PemPair,
    /// Server certificate (localhost) with an Ed25519 key.
    pub server_ed25519: PemPair,
}

/// Where [`generate_test_pki`] wrote each file.
#[derive(Debug, Clone)]
pub struct TestPkiPaths {
    /// `ca.pem`.
    pub ca_cert: PathBuf,
    /// `ca.key`.
    pub ca_key: PathBuf,
    /// `server.pem`.
    pub server_cert: PathBuf,
    /// `server.key`.
    pub server_key: PathBuf,
    /// `client.pem`.
    pub client_cert: PathBuf,
    /// `client.key`.
    pub client_key: PathBuf,
    /// `server-rsa.pem`.
    pub server_rsa_cert: PathBuf,
    /// `server-rsa.key`.
    pub server_rsa_key: PathBuf,
}

fn rc(source: rcgen::Error) -> Error {
    Error::TestPki { source }
}

fn leaf_params(common_name: &str, server: bool) -> Result<CertificateParams, Error> {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    params.distinguished_name = dn;
    params.is_ca = IsCa::NoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    if server {
        params.subject_alt_names = vec![
            SanType::DnsName("localhost".try_into().map_err(rc)?),
            SanType::IpAddress([127, 0, 0, 1].into()),
        ];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    } else {
        params.subject_alt_names = vec![SanType::DnsName(common_name.try_into().map_err(rc)?)];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    }
    Ok(params)
}

impl TestPki {
    /// Generates fresh keys and certificates (valid from 1975 to 4096, rcgen's defaults,
    /// so tests pass whatever time they verify at).
    ///
    /// # Errors
    /// [`Error::TestPki`] when rcgen fails.
    pub fn generate() -> Result<Self, Error> {
        let ca_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(rc)?;
        let mut ca_params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "dtls test CA");
        ca_params.distinguished_name = dn;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_cert = ca_params.self_signed(&ca_key).map_err(rc)?;
        let ca = PemPair {
            cert_pem: ca_cert.pem(),
            key_pem: ca_key.serialize_pem(),
        };
        let issuer = Issuer::new(ca_params, ca_key);

        let issue = |params: CertificateParams, key: KeyPair| -> Result<PemPair, Error> {
            let cert = params.signed_by(&key, &issuer).map_err(rc)?;
            Ok(PemPair {
                cert_pem: cert.pem(),
                key_pem: key.serialize_pem(),
            })
        };
        let server = issue(
            leaf_params("localhost", true)?,
            KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(rc)?,
        )?;
        let client = issue(
            leaf_params("client.test", false)?,
            KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(rc)?,
        )?;
        let server_rsa = issue(
            leaf_params("localhost", true)?,
            KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_2048)
                .map_err(rc)?,
        )?;
        let server_p384 = issue(
            leaf_params("localhost", true)?,
            KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).map_err(rc)?,
        )?;
        let server_ed25519 = issue(
            leaf_params("localhost", true)?,
            KeyPair::generate_for(&rcgen::PKCS_ED25519).map_err(rc)?,
        )?;
        Ok(Self {
            ca,
            server,
            client,
            server_rsa,
            server_p384,
            server_ed25519,
        })
    }
}

/// Generates a test PKI (see [`TestPki::generate`]) and writes it into `dir`, creating the
/// directory if needed and overwriting existing files.
///
/// # Errors
/// [`Error::TestPki`] or [`Error::Io`].
pub fn generate_test_pki(dir: &Path) -> Result<TestPkiPaths, Error> {
    let pki = TestPki::generate()?;
    std::fs::create_dir_all(dir).map_err(|source| Error::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let write = |name: &str, contents: &str| -> Result<PathBuf, Error> {
        let path = dir.join(name);
        std::fs::write(&path, contents).map_err(|source| Error::Io {
            path: path.clone(),
            source,
        })?;
        Ok(path)
    };
    Ok(TestPkiPaths {
        ca_cert: write("ca.pem", &pki.ca.cert_pem)?,
        ca_key: write("ca.key", &pki.ca.key_pem)?,
        server_cert: write("server.pem", &pki.server.cert_pem)?,
        server_key: write("server.key", &pki.server.key_pem)?,
        client_cert: write("client.pem", &pki.client.cert_pem)?,
        client_key: write("client.key", &pki.client.key_pem)?,
        server_rsa_cert: write("server-rsa.pem", &pki.server_rsa.cert_pem)?,
        server_rsa_key: write("server-rsa.key", &pki.server_rsa.key_pem)?,
    })
}
