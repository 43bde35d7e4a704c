//! Certificate and key checks through the `dtlsd` binary: `check-config` refuses (exit 2)
//! or warns (exit 0), `serve` and `connect` refuse to start (exit 2, one line naming the
//! key), and a SIGHUP reload with a bad pair keeps the previous configuration.
//!
//! Certificates come from rcgen (`pki`), valid relative to the wall clock.

mod common;
mod pki;

use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{DTLSD, Daemon, EchoBackend, START_TIMEOUT, TempDir, collect, wait_exit};
use pki::{Files, Validity};

/// Runs `dtlsd args` to its exit (killed after START_TIMEOUT: a daemon that starts when it
/// should not fails the test instead of hanging it). Returns the exit code and stderr.
fn run(args: &[&str]) -> (Option<i32>, String) {
    let mut child = Command::new(DTLSD)
        .args(args)
        .env("NO_COLOR", "1")
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn dtlsd");
    let stderr = collect(child.stderr.take().expect("piped stderr"));
    let status = wait_exit(&mut child, START_TIMEOUT);
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    // Let the reader thread take the last line of a process that just exited.
    std::thread::sleep(Duration::from_millis(50));
    let text = stderr.lock().expect("log lock").clone();
    (status.and_then(|s| s.code()), text)
}

/// `dtlsd check-config` on a `[serve]` file naming `files`: exit code, stdout, stderr and
/// the config file's path.
fn check_config(dir: &TempDir, files: &Files) -> (Option<i32>, String, String, String) {
    let config = dir.path().join("dtlsd.toml");
    std::fs::write(
        &config,
        format!(
            "[serve]\nlisten = \"127.0.0.1:4433\"\nbackend = \"127.0.0.1:9000\"\n\
             cert = \"{}\"\nkey = \"{}\"\n",
            files.cert.display(),
            files.key.display()
        ),
    )
    .expect("write config");
    let out = Command::new(DTLSD)
        .args(["check-config"])
        .arg(&config)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run dtlsd check-config");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        config.display().to_string(),
    )
}

fn serve_args(files: &Files) -> Vec<&str> {
    vec![
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--backend",
        "127.0.0.1:9",
        "--cert",
        path_str(&files.cert),
        "--key",
        path_str(&files.key),
    ]
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// check-config and `serve` both refuse the files: exit 2, one line naming `key` with
/// `needle`.
fn assert_refused(dir: &TempDir, files: &Files, key: &str, needle: &str) {
    let (code, stdout, stderr, config) = check_config(dir, files);
    assert_eq!(code, Some(2), "check-config: {stderr}");
    assert!(stdout.is_empty(), "{stdout}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with(&format!("{config}: {key}: ")) && stderr.contains(needle),
        "check-config: {stderr}"
    );
    let (code, stderr) = run(&serve_args(files));
    assert_eq!(code, Some(2), "serve: {stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with(&format!("dtlsd: error: {key}: ")) && stderr.contains(needle),
        "serve: {stderr}"
    );
}

/// A root, and an end entity with `validity` issued by it, in `dir`.
fn direct(dir: &TempDir, validity: Validity) -> Files {
    let root = pki::root("Test Root");
    let (leaf, key) = pki::leaf(validity, &root);
    pki::write_files(dir.path(), &root, &[&leaf], &key.serialize_pem())
}

#[test]
fn a_key_that_does_not_match_the_certificate_is_refused() {
    let dir = TempDir::new("mismatch");
    let root = pki::root("Test Root");
    let (leaf, _) = pki::leaf(Validity::current(), &root);
    let files = pki::write_files(dir.path(), &root, &[&leaf], &pki::other_key_pem());
    assert_refused(
        &dir,
        &files,
        "serve.key",
        &format!(
            "the private key in {} (ECDSA P-256) does not match the certificate in {}",
            files.key.display(),
            files.cert.display()
        ),
    );
}

#[test]
fn an_expired_certificate_is_refused() {
    let dir = TempDir::new("expired");
    let files = direct(&dir, Validity::expired());
    assert_refused(&dir, &files, "serve.cert", "(CN=localhost) in ");
    let (_, _, stderr, _) = check_config(&dir, &files);
    assert!(stderr.contains("expired on "), "{stderr}");
}

#[test]
fn a_certificate_not_valid_yet_is_refused() {
    let dir = TempDir::new("not-yet");
    let files = direct(&dir, Validity::not_yet());
    assert_refused(&dir, &files, "serve.cert", "is not valid before ");
}

#[test]
fn a_chain_out_of_order_is_refused() {
    let dir = TempDir::new("order");
    let root = pki::root("Test Root");
    let int = pki::intermediate("Test Intermediate", &root);
    let (leaf, key) = pki::leaf(Validity::current(), &int);
    let files = pki::write_files(
        dir.path(),
        &root,
        &[&leaf, &root.pem(), &int.pem()],
        &key.serialize_pem(),
    );
    assert_refused(&dir, &files, "serve.cert", "chain out of order in ");
    let (_, _, stderr, _) = check_config(&dir, &files);
    assert!(
        stderr.contains("is followed by certificate #2 (CN=Test Root), but its issuer is #3"),
        "{stderr}"
    );

    // In order, it passes, and the daemon serves with it.
    let good = pki::write_files(
        dir.path(),
        &root,
        &[&leaf, &int.pem()],
        &key.serialize_pem(),
    );
    let (code, stdout, stderr, _) = check_config(&dir, &good);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.ends_with("ok (serve config)\n"), "{stdout}");
    assert!(stderr.is_empty(), "{stderr}");
    let backend = EchoBackend::start();
    let serve = Daemon::start_serve(backend.addr, &dir, &["--shards", "1"]);
    let connect = Daemon::start_connect(serve.listen, &dir, &["--shards", "1"]);
    assert!(
        echo(connect.listen, b"through the chain"),
        "{}",
        serve.log()
    );
}

#[test]
fn an_encrypted_key_is_refused_with_the_way_to_decrypt_it() {
    let dir = TempDir::new("encrypted");
    let files = direct(&dir, Validity::current());
    let plain = files.key.clone();
    let pkcs8 = dir.path().join("pkcs8-encrypted.key");
    let legacy = dir.path().join("legacy-encrypted.key");
    openssl(&[
        "pkcs8",
        "-topk8",
        "-v2",
        "aes-256-cbc",
        "-passout",
        "pass:secret",
        "-in",
        path_str(&plain),
        "-out",
        path_str(&pkcs8),
    ]);
    openssl(&[
        "ec",
        "-aes128",
        "-passout",
        "pass:secret",
        "-in",
        path_str(&plain),
        "-out",
        path_str(&legacy),
    ]);
    for (key, format) in [
        (&pkcs8, "(PKCS#8 ENCRYPTED PRIVATE KEY)"),
        (&legacy, "(legacy PEM encryption, Proc-Type: 4,ENCRYPTED)"),
    ] {
        let encrypted = Files {
            ca: files.ca.clone(),
            cert: files.cert.clone(),
            key: key.clone(),
        };
        let k = key.display();
        assert_refused(
            &dir,
            &encrypted,
            "serve.key",
            &format!("{k} holds an encrypted private key {format}"),
        );
        let (_, _, stderr, _) = check_config(&dir, &encrypted);
        assert!(
            stderr.contains(&format!("`openssl pkey -in {k} -out {k}.plain`")),
            "{stderr}"
        );
        // What the message says to run gives a key that passes.
        let out = key.with_extension("key.plain");
        openssl(&[
            "pkey",
            "-passin",
            "pass:secret",
            "-in",
            path_str(key),
            "-out",
            path_str(&out),
        ]);
        pki::write(
            dir.path(),
            "decrypted.key",
            &std::fs::read_to_string(&out).expect("read"),
            0o600,
        );
        let decrypted = Files {
            ca: files.ca.clone(),
            cert: files.cert.clone(),
            key: dir.path().join("decrypted.key"),
        };
        let (code, _, stderr, _) = check_config(&dir, &decrypted);
        assert_eq!(code, Some(0), "{stderr}");
    }
}

fn openssl(args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .expect("run openssl (apt-get install -y openssl, as TESTING.md says)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_certificate_expiring_soon_is_a_warning_and_the_daemon_serves() {
    let dir = TempDir::new("soon");
    let files = direct(&dir, Validity::ending_in(5));
    let (code, stdout, stderr, config) = check_config(&dir, &files);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(stdout, format!("{config}: ok (serve config)\n"));
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with(&format!(
            "{config}: warning: serve.cert: certificate #1 (CN=localhost) in {} expires in 5 \
             days (",
            files.cert.display()
        )),
        "{stderr}"
    );
    let backend = EchoBackend::start();
    let serve = Daemon::start_serve(backend.addr, &dir, &["--shards", "1"]);
    assert!(
        serve.log().contains("WARN") && serve.log().contains("expires in 5 days"),
        "{}",
        serve.log()
    );
    let connect = Daemon::start_connect(serve.listen, &dir, &["--shards", "1"]);
    assert!(echo(connect.listen, b"still served"), "{}", serve.log());
}

#[test]
fn a_key_file_others_can_read_is_a_warning() {
    use std::os::unix::fs::PermissionsExt;
    let dir = TempDir::new("mode");
    let files = direct(&dir, Validity::current());
    std::fs::set_permissions(&files.key, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let (code, stdout, stderr, config) = check_config(&dir, &files);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(stdout, format!("{config}: ok (serve config)\n"));
    assert_eq!(
        stderr,
        format!(
            "{config}: warning: serve.key: {k} is readable by group and others (mode 0644); \
             run `chmod 600 {k}`\n",
            k = files.key.display()
        )
    );
    let backend = EchoBackend::start();
    let serve = Daemon::start_serve(backend.addr, &dir, &["--shards", "1"]);
    assert!(
        serve.log().contains("is readable by group and others"),
        "{}",
        serve.log()
    );
}

#[test]
fn connect_refuses_a_client_key_that_does_not_match() {
    let dir = TempDir::new("connect-mismatch");
    let root = pki::root("Test Root");
    let (leaf, _) = pki::leaf(Validity::current(), &root);
    let files = pki::write_files(dir.path(), &root, &[&leaf], &pki::other_key_pem());
    let (code, stderr) = run(&[
        "connect",
        "--listen",
        "127.0.0.1:0",
        "--server",
        "127.0.0.1:4433",
        "--ca",
        path_str(&files.ca),
        "--server-name",
        "localhost",
        "--cert",
        path_str(&files.cert),
        "--key",
        path_str(&files.key),
    ]);
    assert_eq!(code, Some(2), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("dtlsd: error: connect.key: the private key in")
            && stderr.contains("does not match"),
        "{stderr}"
    );
}

#[test]
fn a_reload_with_a_key_that_does_not_match_keeps_the_previous_pair() {
    let dir = TempDir::new("reload-mismatch");
    direct(&dir, Validity::current());
    let backend = EchoBackend::start();
    let serve = Daemon::start_serve(backend.addr, &dir, &["--shards", "1"]);
    let connect = Daemon::start_connect(serve.listen, &dir, &["--shards", "1"]);
    assert!(echo(connect.listen, b"before"), "{}", serve.log());

    pki::write(dir.path(), "server.key", &pki::other_key_pem(), 0o600);
    serve.signal("HUP");
    let log = serve_log_waiting(&serve, "reload failed");
    assert!(
        log.contains("does not match the certificate"),
        "the reason is logged: {log}"
    );
    assert!(!log.contains("configuration reloaded"), "{log}");
    // A new source makes a new handshake: the previous certificate and key still serve it.
    assert!(echo(connect.listen, b"after"), "{}", serve.log());
}

fn serve_log_waiting(serve: &Daemon, needle: &str) -> String {
    let deadline = std::time::Instant::now() + START_TIMEOUT;
    while std::time::Instant::now() < deadline && !serve.log().contains(needle) {
        std::thread::sleep(Duration::from_millis(10));
    }
    let log = serve.log();
    assert!(log.contains(needle), "{needle} in {log}");
    log
}

/// One datagram from a fresh local source through `entry` (a `dtlsd connect`, so a new
/// session and handshake), echoed back intact.
fn echo(entry: SocketAddr, payload: &[u8]) -> bool {
    let s = UdpSocket::bind("127.0.0.1:0").expect("bind");
    s.connect(entry).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    s.send(payload).expect("send");
    let mut buf = [0u8; 256];
    matches!(s.recv(&mut buf), Ok(n) if &buf[..n] == payload)
}
