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
    /// The group the key files should belong to does not exist.
    #[error("no group named {name:?}")]
    UnknownGroup {
        /// The name asked for.
        name: String,
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
/// Mode of the private key files when a group is named: the group (a service user's) may
/// read them too.
pub const GROUP_KEY_FILE_MODE: u32 = 0o640;
/// Mode of the certificate files.
pub const CERT_FILE_MODE: u32 = 0o644;

/// Generates a CA and ECDSA P-256 server and client certificates (server SANs `localhost`
/// and `127.0.0.1`) through `dtls_crypto::test_pki`, and writes `ca.pem`, `server.pem`,
/// `server.key`, `client.pem` and `client.key` into `dir`, creating it if missing and
/// replacing files already there. Key files get mode 0600, or 0640 and group `key_group`
/// when one is named (what a daemon running as that group's user needs: `dtlsd certs --out
/// /etc/dtlsd --group dtlsd`). The CA key is not kept.
///
/// # Errors
/// Generation fails, the group does not exist, or `dir` or a file cannot be created or
/// written.
pub fn write_test_pki(dir: &Path, key_group: Option<&str>) -> Result<Vec<PathBuf>, CertsError> {
    let key_gid = key_group
        .map(|name| match nix::unistd::Group::from_name(name) {
            Ok(Some(group)) => Ok(group.gid),
            _ => Err(CertsError::UnknownGroup { name: name.into() }),
        })
        .transpose()?;
    let key_mode = if key_gid.is_some() {
        GROUP_KEY_FILE_MODE
    } else {
        KEY_FILE_MODE
    };
    let pki = TestPki::generate().map_err(|source| CertsError::Generate { source })?;
    std::fs::create_dir_all(dir).map_err(|source| CertsError::CreateDir {
        path: dir.to_path_buf(),
        source,
    })?;
    let files: [(&str, &str, u32, bool); 5] = [
        ("ca.pem", &pki.ca.cert_pem, CERT_FILE_MODE, false),
        ("server.pem", &pki.server.cert_pem, CERT_FILE_MODE, false),
        ("server.key", &pki.server.key_pem, key_mode, true),
        ("client.pem", &pki.client.cert_pem, CERT_FILE_MODE, false),
        ("client.key", &pki.client.key_pem, key_mode, true),
    ];
    let mut written = Vec::with_capacity(files.len());
    for (name, contents, mode, is_key) in files {
        let path = dir.join(name);
        let group = key_gid.filter(|_| is_key);
        write_file(&path, contents.as_bytes(), mode, group).map_err(|source| {
            CertsError::Write {
                path: path.clone(),
                source,
            }
        })?;
        written.push(path);
    }
    Ok(written)
}

/// Writes `contents` to `path` with `mode` (and `group`, when given). A file that already
/// exists is narrowed to `mode` and given its group before it is truncated, so a key never
/// sits in a file that others may read.
fn write_file(
    path: &Path,
    contents: &[u8],
    mode: u32,
    group: Option<nix::unistd::Gid>,
) -> std::io::Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(mode & 0o600)
        .open(path)?;
    if let Some(gid) = group {
        std::os::unix::fs::fchown(&file, None, Some(gid.as_raw()))?;
    }
    file.set_permissions(std::fs::Permissions::from_mode(mode))?;
    file.set_len(0)?;
    file.write_all(contents)?;
    file.sync_all()
}
