//! `dtlsd certs`: a test PKI for tests and first runs.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use dtls_crypto::test_pki::TestPki;

/// Errors of [`write_test_pki`].
#[derive(Debug, thiserror::Error)]
pub enum CertsError {
    /// Key or certificate generation failed.
    #[error("cannot generate the test PKI: {source}")]
    Generate {
        /// What dtls-crypto reported.
        source: dtls_crypto::Error,
    },
    /// The output directory could not be created.
    #[error("cannot create directory {}: {source}", path.display())]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A file could not be written.
    #[error("cannot write {}: {source}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

/// Mode of the private key files: owner read/write only.
pub const KEY_FILE_MODE: u32 = 0o600;
/// Mode of the certificate files.
pub const CERT_FILE_MODE: u32 = 0o644;

/// Generates a CA and ECDSA P-256 server and client certificates (server SANs `localhost`
/// and `127.0.0.1`) through `dtls_crypto::test_pki`, and writes `ca.pem`, `server.pem`,
/// `server.key`, `client.pem` and `client.key` into `dir`, creating it if missing and
/// replacing files already there. Key files get mode 0600. The CA key is not kept.
///
/// # Errors
/// Generation fails, or `dir` or a file cannot be created or written.
pub fn write_test_pki(dir: &Path) -> Result<Vec<PathBuf>, CertsError> {
    let pki = TestPki::generate().map_err(|source| CertsError::Generate { source })?;
    std::fs::create_dir_all(dir).map_err(|source| CertsError::CreateDir {
        path: dir.to_path_buf(),
        source,
    })?;
    let files: [(&str, &str, u32); 5] = [
        ("ca.pem", &pki.ca.cert_pem, CERT_FILE_MODE),
        ("server.pem", &pki.server.cert_pem, CERT_FILE_MODE),
        ("server.key", &pki.server.key_pem, KEY_FILE_MODE),
        ("client.pem", &pki.client.cert_pem, CERT_FILE_MODE),
        ("client.key", &pki.client.key_pem, KEY_FILE_MODE),
    ];
    let mut written = Vec::with_capacity(files.len());
    for (name, contents, mode) in files {
        let path = dir.join(name);
        write_file(&path, contents.as_bytes(), mode).map_err(|source| CertsError::Write {
            path: path.clone(),
            source,
        })?;
        written.push(path);
    }
    Ok(written)
}

/// Writes `contents` to `path` with `mode`. A file that already exists is narrowed to
/// `mode` before it is truncated, so a key never sits in a wider-mode file.
fn write_file(path: &Path, contents: &[u8], mode: u32) -> std::io::Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(mode)
        .open(path)?;
    file.set_permissions(std::fs::Permissions::from_mode(mode))?;
    file.set_len(0)?;
    file.write_all(contents)?;
    file.sync_all()
}
