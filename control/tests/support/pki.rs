//! Test certificates written to a temporary directory with the `openssl` command line tool.
//!
//! The interop peers need PEM files on disk, and generating them with an independent
//! implementation keeps our own certificate code out of the loop: a CA (P-256), an ECDSA
//! P-256 server certificate, an RSA-2048 server certificate (for ECDHE-RSA) and an ECDSA
//! client certificate, all issued by the CA, with SAN `localhost` and `127.0.0.1`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use super::peers::require_tool;

/// A directory removed on drop.
#[derive(Debug)]
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    pub fn new(tag: &str) -> Self {
        use std::sync::atomic::{AtomicU64, Ordering};
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        // Integration tests get a scratch directory inside the target dir.
        let path = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("dtls-h5-{tag}-{}-{n}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&path).expect("create temp dir");
        Self { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn join(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// One certificate with its key, as files and as PEM text.
#[derive(Debug, Clone)]
pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub cert_pem: String,
    pub key_pem: String,
}

/// The test PKI. Shared by all tests of one test binary (generated once).
#[derive(Debug)]
pub struct TestPki {
    _dir: TempDir,
    pub ca: PathBuf,
    pub ca_pem: String,
    pub server_ec: CertFiles,
    pub server_rsa: CertFiles,
    pub client_ec: CertFiles,
    /// A self-signed certificate that the CA did not issue (for rejection tests).
    pub rogue_ec: CertFiles,
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running openssl {args:?}: {e}"));
    assert!(
        out.status.success(),
        "openssl {args:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

fn issue(dir: &Path, name: &str, key_args: &[&str], cn: &str, eku: &str) -> CertFiles {
    let key = format!("{name}.key");
    let csr = format!("{name}.csr");
    let pem = format!("{name}.pem");
    let ext = format!("{name}.ext");
    let mut args = key_args.to_vec();
    args.extend_from_slice(&["-out", &key]);
    openssl(dir, &args);
    openssl(
        dir,
        &[
            "req",
            "-new",
            "-key",
            &key,
            "-subj",
            &format!("/CN={cn}"),
            "-out",
            &csr,
        ],
    );
    std::fs::write(
        dir.join(&ext),
        format!(
            "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=critical,CA:FALSE\n\
             keyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage={eku}\n"
        ),
    )
    .expect("write ext file");
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "30",
            "-sha256",
            "-extfile",
            &ext,
            "-out",
            &pem,
        ],
    );
    CertFiles {
        cert: dir.join(&pem),
        key: dir.join(&key),
        cert_pem: read(&dir.join(&pem)),
        key_pem: read(&dir.join(&key)),
    }
}

/// The shared PKI lives in a static and is never dropped: remove the ones earlier test runs
/// left behind (older than ten minutes, so that a concurrent run keeps its own).
fn remove_stale_pki_dirs() {
    let root = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    for e in entries.flatten() {
        let stale = e
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > std::time::Duration::from_secs(600));
        if stale && e.file_name().to_string_lossy().starts_with("dtls-h5-pki-") {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

const EC_KEY: &[&str] = &[
    "genpkey",
    "-algorithm",
    "EC",
    "-pkeyopt",
    "ec_paramgen_curve:P-256",
];
const RSA_KEY: &[&str] = &[
    "genpkey",
    "-algorithm",
    "RSA",
    "-pkeyopt",
    "rsa_keygen_bits:2048",
];

impl TestPki {
    fn generate() -> Self {
        require_tool("openssl");
        remove_stale_pki_dirs();
        let dir = TempDir::new("pki");
        let d = dir.path();
        let mut ca_key = EC_KEY.to_vec();
        ca_key.extend_from_slice(&["-out", "ca.key"]);
        openssl(d, &ca_key);
        openssl(
            d,
            &[
                "req",
                "-x509",
                "-new",
                "-key",
                "ca.key",
                "-subj",
                "/CN=dtls test ca",
                "-days",
                "30",
                "-sha256",
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
                "-out",
                "ca.pem",
            ],
        );
        let server_ec = issue(d, "server-ec", EC_KEY, "localhost", "serverAuth");
        let server_rsa = issue(d, "server-rsa", RSA_KEY, "localhost", "serverAuth");
        let client_ec = issue(d, "client-ec", EC_KEY, "client1", "clientAuth");
        // Rogue: self-signed, same names, not issued by the CA.
        let mut rogue_key = EC_KEY.to_vec();
        rogue_key.extend_from_slice(&["-out", "rogue.key"]);
        openssl(d, &rogue_key);
        openssl(
            d,
            &[
                "req",
                "-x509",
                "-new",
                "-key",
                "rogue.key",
                "-subj",
                "/CN=localhost",
                "-days",
                "30",
                "-addext",
                "subjectAltName=DNS:localhost,IP:127.0.0.1",
                "-out",
                "rogue.pem",
            ],
        );
        let rogue_ec = CertFiles {
            cert: d.join("rogue.pem"),
            key: d.join("rogue.key"),
            cert_pem: read(&d.join("rogue.pem")),
            key_pem: read(&d.join("rogue.key")),
        };
        Self {
            ca: d.join("ca.pem"),
            ca_pem: read(&d.join("ca.pem")),
            server_ec,
            server_rsa,
            client_ec,
            rogue_ec,
            _dir: dir,
        }
    }

    /// The PKI of this test binary, generated on first use.
    pub fn shared() -> &'static TestPki {
        static PKI: OnceLock<TestPki> = OnceLock::new();
        PKI.get_or_init(TestPki::generate)
    }
}
