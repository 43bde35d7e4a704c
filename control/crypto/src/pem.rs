//! Loading certificate chains and private keys from PEM (through rustls-pki-types).
//!
//! Standard labels: `CERTIFICATE`, `PRIVATE KEY` (PKCS#8), `EC PRIVATE KEY` (SEC1) and
//! `RSA PRIVATE KEY` (PKCS#1). Other sections in the same file are skipped.

use std::path::Path;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::Error;

/// Reads every certificate in a PEM file, in file order (end entity first for a chain).
///
/// # Errors
/// [`Error::Pem`] when the file cannot be read or parsed, [`Error::NoCertificates`] when it
/// holds none.
pub fn load_certificates(path: impl AsRef<Path>) -> Result<Vec<CertificateDer<'static>>, Error> {
    let path = path.as_ref();
    let pem_err = |source| Error::Pem {
        path: Some(path.to_path_buf()),
        source,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(pem_err)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(pem_err)?;
    if certs.is_empty() {
        return Err(Error::NoCertificates {
            path: Some(path.to_path_buf()),
        });
    }
    Ok(certs)
}

/// Reads every certificate in a PEM buffer.
///
/// # Errors
/// As [`load_certificates`].
pub fn parse_certificates(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, Error> {
    let pem_err = |source| Error::Pem { path: None, source };
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(pem_err)?;
    if certs.is_empty() {
        return Err(Error::NoCertificates { path: None });
    }
    Ok(certs)
}

/// Reads the first private key (PKCS#8, SEC1 or PKCS#1) in a PEM file.
///
/// # Errors
/// [`Error::Pem`] when the file cannot be read, cannot be parsed or holds no key.
pub fn load_private_key(path: impl AsRef<Path>) -> Result<PrivateKeyDer<'static>, Error> {
    let path = path.as_ref();
    PrivateKeyDer::from_pem_file(path).map_err(|source| Error::Pem {
        path: Some(path.to_path_buf()),
        source,
    })
}

/// Reads the first private key in a PEM buffer.
///
/// # Errors
/// As [`load_private_key`].
pub fn parse_private_key(pem: &[u8]) -> Result<PrivateKeyDer<'static>, Error> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|source| Error::Pem { path: None, source })
}
