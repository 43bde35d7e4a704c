//! Runs the built `dtlsd` binary: `certs`, `check-config`, `--help`, exit codes.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};

use dtls_crypto::pki_types::UnixTime;
use dtls_crypto::{CertificateVerifier, SigningKey, pem};

fn dtlsd(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_dtlsd"))
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run dtlsd")
}

fn scratch(name: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "dtlsd-cli-{name}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create scratch dir");
    dir
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Writes a test PKI into `dir/pki` with the binary.
fn certs(dir: &Path) -> PathBuf {
    let pki = dir.join("pki");
    let out = dtlsd(&["certs", "--out", pki.to_str().expect("utf-8 path")]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    pki
}

fn check(dir: &Path, toml: &str) -> (Output, String) {
    let path = dir.join("dtlsd.toml");
    std::fs::write(&path, toml).expect("write config");
    let path = path.to_str().expect("utf-8 path").to_owned();
    (dtlsd(&["check-config", &path]), path)
}

#[test]
fn certs_writes_five_files_that_parse_and_verify() {
    let dir = scratch("certs");
    let out_dir = dir.join("not/yet/there");
    let out = dtlsd(&["certs", "--out", out_dir.to_str().expect("utf-8 path")]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    let mut names: Vec<String> = std::fs::read_dir(&out_dir)
        .expect("out dir exists")
        .map(|e| {
            e.expect("dir entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "ca.pem",
            "client.key",
            "client.pem",
            "server.key",
            "server.pem"
        ]
    );
    assert_eq!(stdout(&out).lines().count(), 5);
    for key in ["server.key", "client.key"] {
        let mode = std::fs::metadata(out_dir.join(key))
            .expect("key file")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{key}");
        SigningKey::from_pem_file(out_dir.join(key)).expect("key loads");
    }
    let verifier = CertificateVerifier::from_pem_file(out_dir.join("ca.pem")).expect("CA loads");
    let server = pem::load_certificates(out_dir.join("server.pem")).expect("server cert");
    let now = UnixTime::now();
    verifier
        .verify_server(&server, "localhost", now)
        .expect("valid for localhost");
    verifier
        .verify_server(&server, "127.0.0.1", now)
        .expect("valid for 127.0.0.1");
    let client = pem::load_certificates(out_dir.join("client.pem")).expect("client cert");
    verifier.verify_client(&client, now).expect("client cert");

    // Running again replaces the files with a fresh PKI and keeps the key mode.
    let before = std::fs::read(out_dir.join("server.pem")).expect("read");
    std::fs::set_permissions(
        out_dir.join("server.key"),
        std::fs::Permissions::from_mode(0o644),
    )
    .expect("chmod");
    let again = dtlsd(&["certs", "--out", out_dir.to_str().expect("utf-8 path")]);
    assert_eq!(again.status.code(), Some(0), "stderr: {}", stderr(&again));
    assert_ne!(
        std::fs::read(out_dir.join("server.pem")).expect("read"),
        before
    );
    let mode = std::fs::metadata(out_dir.join("server.key"))
        .expect("key file")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
}

#[test]
fn certs_gives_the_keys_to_a_named_group_and_refuses_an_unknown_one() {
    use std::os::unix::fs::MetadataExt as _;
    let dir = scratch("certs-group");
    let out_dir = dir.join("pki");
    // `daemon` is group 1 on Debian (base-passwd), present on every Debian machine.
    let out = dtlsd(&[
        "certs",
        "--out",
        out_dir.to_str().expect("utf-8 path"),
        "--group",
        "daemon",
    ]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    for key in ["server.key", "client.key"] {
        let meta = std::fs::metadata(out_dir.join(key)).expect("key file");
        assert_eq!(meta.permissions().mode() & 0o777, 0o640, "{key}");
        assert_eq!(meta.gid(), 1, "{key} belongs to group daemon");
        SigningKey::from_pem_file(out_dir.join(key)).expect("key loads");
    }
    // Certificates keep their mode and group.
    let cert = std::fs::metadata(out_dir.join("server.pem")).expect("cert");
    assert_eq!(cert.permissions().mode() & 0o777, 0o644);
    assert_ne!(cert.gid(), 1);
    // An unknown group fails before anything is written, naming it.
    let other = dir.join("other");
    let out = dtlsd(&[
        "certs",
        "--out",
        other.to_str().expect("utf-8 path"),
        "--group",
        "no-such-group-here",
    ]);
    assert_ne!(out.status.code(), Some(0));
    assert!(
        stderr(&out).contains("no group named \"no-such-group-here\""),
        "{}",
        stderr(&out)
    );
    assert!(!other.exists(), "nothing written");
}

#[test]
fn certs_server_sans_as_openssl_sees_them() {
    let pki = certs(&scratch("openssl"));
    let out = Command::new("openssl")
        .args(["x509", "-noout", "-ext", "subjectAltName", "-in"])
        .arg(pki.join("server.pem"))
        .output()
        .expect("run openssl (apt-get install -y openssl, as TESTING.md says)");
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("DNS:localhost"), "{text}");
    assert!(text.contains("IP Address:127.0.0.1"), "{text}");
}

#[test]
fn certs_into_an_unwritable_place_fails_with_one_line() {
    let dir = scratch("unwritable");
    let file = dir.join("a-file");
    std::fs::write(&file, "x").expect("write");
    let out = dtlsd(&[
        "certs",
        "--out",
        file.join("sub").to_str().expect("utf-8 path"),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("dtlsd: error: cannot create directory"),
        "{err}"
    );
    assert!(err.contains("a-file/sub"), "{err}");
}

#[test]
fn check_config_accepts_good_serve_and_connect_files() {
    let dir = scratch("good");
    certs(&dir);
    let (out, path) = check(
        &dir,
        "[serve]\nlisten = \"0.0.0.0:4433\"\nbackend = \"127.0.0.1:9000\"\n\
         cert = \"pki/server.pem\"\nkey = \"pki/server.key\"\nclient_ca = \"pki/ca.pem\"\n\
         psk = [\"alice:000102030405060708090a0b0c0d0e0f\"]\nshards = 2\nio = \"mmsg\"\n",
    );
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    assert_eq!(stdout(&out), format!("{path}: ok (serve config)\n"));

    let (out, path) = check(
        &dir,
        "[connect]\nlisten = \"127.0.0.1:5000\"\nserver = \"127.0.0.1:4433\"\n\
         ca = \"pki/ca.pem\"\nserver_name = \"localhost\"\n\
         cert = \"pki/client.pem\"\nkey = \"pki/client.key\"\n",
    );
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    assert_eq!(stdout(&out), format!("{path}: ok (connect config)\n"));
}

#[test]
fn check_config_names_an_unknown_key_and_its_table() {
    let dir = scratch("unknown");
    let (out, path) = check(
        &dir,
        "[serve]\nlisten = \"0.0.0.0:4433\"\nbackend = \"127.0.0.1:9000\"\n\
         psk = [\"a:00\"]\nmtu_bytes = 1400\n",
    );
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with(&format!(
            "{path}: serve.mtu_bytes: unknown field `mtu_bytes`"
        )),
        "{err}"
    );
    assert!(stdout(&out).is_empty());
}

#[test]
fn check_config_names_each_bad_key() {
    let dir = scratch("bad");
    let (out, path) = check(
        &dir,
        "[serve]\nlisten = \"0.0.0.0\"\nbackend = \"127.0.0.1:9000\"\n\
         psk = [\"a:0g\"]\nmtu = 50\n",
    );
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 3, "{err}");
    assert!(
        err.contains(&format!(
            "{path}: serve.listen: `0.0.0.0` is not a usable socket address"
        )),
        "{err}"
    );
    assert!(
        err.contains("serve.mtu: 50 is out of range: must be between 576 and 9000"),
        "{err}"
    );
    assert!(
        err.contains("serve.psk[0]: PSK `a`: key has a non-hex character"),
        "{err}"
    );
}

#[test]
fn check_config_names_a_missing_cert_file_and_its_path() {
    let dir = scratch("missing");
    let (out, _) = check(
        &dir,
        "[serve]\nlisten = \"0.0.0.0:4433\"\nbackend = \"127.0.0.1:9000\"\n\
         cert = \"nowhere/server.pem\"\nkey = \"nowhere/server.key\"\n",
    );
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    let cert = dir.join("nowhere/server.pem").display().to_string();
    assert!(
        err.contains(&format!("serve.cert: cannot read {cert}: No such file")),
        "{err}"
    );
    assert!(err.contains("serve.key: cannot read"), "{err}");
}

#[test]
fn check_config_loads_the_pem_files() {
    let dir = scratch("pem");
    let pki = certs(&dir);
    std::fs::write(dir.join("garbage.pem"), "not a certificate\n").expect("write");
    let (out, _) = check(
        &dir,
        "[connect]\nlisten = \"127.0.0.1:5000\"\nserver = \"127.0.0.1:4433\"\n\
         ca = \"garbage.pem\"\ncert = \"pki/client.pem\"\nkey = \"pki/client.pem\"\n",
    );
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 2, "{err}");
    assert!(err.contains("connect.ca: no certificate found in"), "{err}");
    assert!(err.contains("connect.key: PEM error in"), "{err}");
    assert!(
        err.contains(&pki.join("client.pem").display().to_string()),
        "{err}"
    );
}

#[test]
fn check_config_of_a_missing_file_fails() {
    let dir = scratch("nofile");
    let path = dir.join("absent.toml");
    let out = dtlsd(&["check-config", path.to_str().expect("utf-8 path")]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("cannot read config file"), "{err}");
}

#[test]
fn help_documents_every_flag_and_usage_errors_exit_2() {
    let top = dtlsd(&["--help"]);
    assert_eq!(top.status.code(), Some(0));
    let text = stdout(&top);
    for word in ["certs", "check-config", "--log-format"] {
        assert!(text.contains(word), "{word} in {text}");
    }
    let certs_help = stdout(&dtlsd(&["certs", "--help"]));
    assert!(certs_help.contains("--out <DIR>"), "{certs_help}");
    assert!(certs_help.contains("created if missing"), "{certs_help}");
    let check_help = stdout(&dtlsd(&["check-config", "--help"]));
    assert!(check_help.contains("<FILE>"), "{check_help}");
    assert_eq!(dtlsd(&["certs"]).status.code(), Some(2));
    assert_eq!(dtlsd(&["serve"]).status.code(), Some(2));
}

#[test]
fn connect_configuration_errors_name_the_key_and_exit_2() {
    let dir = scratch("connect-errors");
    let help = stdout(&dtlsd(&["connect", "--help"]));
    for flag in [
        "--listen",
        "--server",
        "--ca",
        "--server-name",
        "--insecure-skip-verify",
        "--psk",
        "--cert",
        "--key",
        "--keepalive",
        "--io",
    ] {
        assert!(help.contains(flag), "{flag} in {help}");
    }
    // No way to authenticate the server.
    let out = dtlsd(&[
        "connect",
        "--listen",
        "127.0.0.1:0",
        "--server",
        "127.0.0.1:4433",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("connect.ca: no credentials"),
        "{}",
        stderr(&out)
    );
    // A CA file that does not exist: named with its path, one line.
    let missing = dir.join("nope.pem");
    let missing = missing.to_str().expect("utf-8 path");
    let out = dtlsd(&[
        "connect",
        "--listen",
        "127.0.0.1:0",
        "--server",
        "127.0.0.1:4433",
        "--ca",
        missing,
        "--server-name",
        "localhost",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("connect.ca: cannot read") && err.contains(missing),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
}

#[test]
fn connect_on_a_port_in_use_fails_naming_the_address() {
    let dir = scratch("connect-in-use");
    let pki = certs(&dir);
    let taken = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr").to_string();
    let ca = pki.join("ca.pem");
    let out = dtlsd(&[
        "connect",
        "--listen",
        &addr,
        "--server",
        "127.0.0.1:4433",
        "--ca",
        ca.to_str().expect("utf-8 path"),
        "--server-name",
        "localhost",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains(&format!("cannot listen on {addr}")), "{err}");
}

#[test]
fn a_bad_versions_list_names_the_key_and_exits_2() {
    let help = stdout(&dtlsd(&["serve", "--help"]));
    assert!(help.contains("--versions"), "{help}");
    let out = dtlsd(&[
        "connect",
        "--listen",
        "127.0.0.1:0",
        "--server",
        "127.0.0.1:4433",
        "--insecure-skip-verify",
        "--versions",
        "1.3,1.0",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("connect.versions: `1.3,1.0` is not a usable DTLS version list"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
}
