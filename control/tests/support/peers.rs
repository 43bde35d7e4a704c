//! Independent DTLS peers (`openssl s_server/s_client`, `gnutls-serv/gnutls-cli`, wolfSSL's
//! example server and client) as child processes on loopback.
//!
//! Every wait has a deadline, every process is killed on drop (and wrapped in `timeout` so that
//! it dies even if the test binary is killed), stdout and stderr are captured by threads. A
//! missing tool fails the test with a clear message: interop is part of the test command, it is
//! never skipped.

use std::io::{Read, Write};
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::pki::CertFiles;

/// No peer process outlives this, whatever happens to the test binary.
const PROCESS_LIFETIME_S: u32 = 60;

/// Default deadline for a peer to become ready or print an expected line.
pub const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// Fails the test unless `tool` is on PATH.
pub fn require_tool(tool: &str) {
    let found = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(
        found,
        "`{tool}` is not installed; interop tests need it: apt-get install -y openssl gnutls-bin"
    );
}

/// A UDP port that was free on 127.0.0.1, 0.0.0.0 and [::] a moment ago.
pub fn free_udp_port() -> u16 {
    for _ in 0..64 {
        let Ok(sock) = UdpSocket::bind("0.0.0.0:0") else {
            continue;
        };
        let Ok(addr) = sock.local_addr() else {
            continue;
        };
        let port = addr.port();
        drop(sock);
        // gnutls-serv also binds [::]:PORT; make sure that is free too.
        let v6_ok = match UdpSocket::bind(("::", port)) {
            Ok(_) => true,
            // No IPv6 on this host: fine.
            Err(e) => e.kind() != std::io::ErrorKind::AddrInUse,
        };
        if v6_ok {
            return port;
        }
    }
    panic!("no free UDP port found");
}

/// Bytes a child wrote on one stream, with a condition variable for waiters.
#[derive(Debug, Default)]
pub struct Captured {
    data: Mutex<(Vec<u8>, bool)>,
    changed: Condvar,
}

impl Captured {
    fn spawn_reader<R: Read + Send + 'static>(self: &Arc<Self>, mut r: R) -> JoinHandle<()> {
        let me = Arc::clone(self);
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            loop {
                let n = match r.read(&mut buf) {
                    Ok(n) => n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(_) => 0,
                };
                let mut g = me.data.lock().expect("capture lock poisoned");
                if n == 0 {
                    g.1 = true;
                    me.changed.notify_all();
                    return;
                }
                g.0.extend_from_slice(&buf[..n]);
                me.changed.notify_all();
            }
        })
    }

    pub fn bytes(&self) -> Vec<u8> {
        self.data.lock().expect("capture lock poisoned").0.clone()
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes()).into_owned()
    }

    /// Waits until `pred` holds on the captured bytes, the stream closes, or the deadline.
    fn wait_until(&self, deadline: Instant, pred: impl Fn(&[u8]) -> bool) -> bool {
        let mut g = self.data.lock().expect("capture lock poisoned");
        loop {
            if pred(&g.0) {
                return true;
            }
            let now = Instant::now();
            if g.1 || now >= deadline {
                return false;
            }
            g = self
                .changed
                .wait_timeout(g, deadline - now)
                .expect("capture lock poisoned")
                .0;
        }
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || hay.windows(needle.len()).any(|w| w == needle)
}

/// A running peer process.
#[derive(Debug)]
pub struct PeerProcess {
    pub name: String,
    pub port: u16,
    child: Child,
    stdin: Option<ChildStdin>,
    pub stdout: Arc<Captured>,
    pub stderr: Arc<Captured>,
    readers: Vec<JoinHandle<()>>,
}

impl PeerProcess {
    /// Spawns `program args` under `timeout`, stdin piped (and held), stdout/stderr captured.
    pub fn spawn(name: &str, port: u16, program: &str, args: &[String], cwd: &Path) -> Self {
        require_tool(program);
        let mut cmd = Command::new("timeout");
        cmd.arg("-s")
            .arg("KILL")
            .arg(PROCESS_LIFETIME_S.to_string())
            .arg(program)
            .args(args)
            .current_dir(cwd)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {program}: {e}"));
        let stdout = Arc::new(Captured::default());
        let stderr = Arc::new(Captured::default());
        let mut readers = Vec::new();
        if let Some(out) = child.stdout.take() {
            readers.push(stdout.spawn_reader(out));
        }
        if let Some(err) = child.stderr.take() {
            readers.push(stderr.spawn_reader(err));
        }
        let stdin = child.stdin.take();
        Self {
            name: format!("{name} ({program} {})", args.join(" ")),
            port,
            child,
            stdin,
            stdout,
            stderr,
            readers,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// Everything the process printed so far, for assertion messages.
    pub fn transcript(&self) -> String {
        format!(
            "---- {} ----\n[stdout]\n{}\n[stderr]\n{}\n----",
            self.name,
            self.stdout.text(),
            self.stderr.text()
        )
    }

    /// Waits until `needle` appears on stdout or stderr; panics with the transcript otherwise.
    pub fn expect_output(&self, needle: &str, timeout: Duration) {
        assert!(
            self.wait_output(needle, timeout),
            "{needle:?} not seen within {timeout:?}\n{}",
            self.transcript()
        );
    }

    /// Waits until `needle` appears on stdout or stderr.
    pub fn wait_output(&self, needle: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let n = needle.as_bytes();
        loop {
            if contains(&self.stdout.bytes(), n) || contains(&self.stderr.bytes(), n) {
                return true;
            }
            // Wait on stdout for a short slice, then re-check both streams.
            let slice = (Instant::now() + Duration::from_millis(20)).min(deadline);
            self.stdout.wait_until(slice, |b| contains(b, n));
            if Instant::now() >= deadline {
                return contains(&self.stdout.bytes(), n) || contains(&self.stderr.bytes(), n);
            }
        }
    }

    /// Waits until `needle` appears on stdout.
    pub fn wait_stdout(&self, needle: &[u8], timeout: Duration) -> bool {
        self.stdout
            .wait_until(Instant::now() + timeout, |b| contains(b, needle))
    }

    /// Writes to the process's stdin (s_server/s_client send it as application data).
    pub fn write_stdin(&mut self, bytes: &[u8]) {
        let stdin = self.stdin.as_mut().expect("stdin already closed");
        stdin.write_all(bytes).expect("writing peer stdin");
        stdin.flush().expect("flushing peer stdin");
    }

    /// Closes stdin (s_server/s_client then shut down).
    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// Waits for the process to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(s)) = self.child.try_wait() {
                return Some(s);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The hex string after `Keying material: ` in the output (OpenSSL's `-keymatexport`).
    pub fn openssl_keying_material(&self) -> Option<Vec<u8>> {
        let text = self.stdout.text();
        let line = text
            .lines()
            .find_map(|l| l.trim().strip_prefix("Keying material: "))?;
        hex_decode(line.trim())
    }
}

impl Drop for PeerProcess {
    fn drop(&mut self) {
        self.stdin = None;
        // SIGTERM to `timeout` is forwarded to the peer; SIGKILL if it does not go quietly.
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        if self.wait_exit(Duration::from_secs(2)).is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
    }
}

pub fn hex_decode(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// The test PSK used everywhere (identity and key as in TESTING.md).
pub const PSK_IDENTITY: &str = "client1";
pub const PSK_KEY_HEX: &str = "00112233445566778899aabbccddeeff";

/// How an OpenSSL peer authenticates.
#[derive(Debug, Clone)]
pub enum OpensslAuth {
    /// Certificate (server cert, or client cert for client auth) plus the CA to verify the other side.
    Cert { own: Option<CertFiles>, ca: PathBuf },
    /// PSK with the TESTING.md identity and key.
    Psk,
}

/// Options shared by `s_server` and `s_client`.
#[derive(Debug, Clone)]
pub struct OpensslOpts {
    /// OpenSSL cipher name, e.g. `ECDHE-ECDSA-AES128-GCM-SHA256`.
    pub cipher: String,
    pub auth: OpensslAuth,
    pub mtu: Option<u16>,
    /// Server only: require a client certificate (`-Verify 1`).
    pub require_client_cert: bool,
    /// `-keymatexport LABEL -keymatexportlen LEN`.
    pub keymat: Option<(String, usize)>,
    pub extra: Vec<String>,
}

impl OpensslOpts {
    pub fn new(cipher: &str, auth: OpensslAuth) -> Self {
        Self {
            cipher: cipher.to_owned(),
            auth,
            mtu: None,
            require_client_cert: false,
            keymat: None,
            extra: Vec::new(),
        }
    }

    fn common_args(&self, args: &mut Vec<String>) {
        args.extend(["-dtls1_2".into(), "-cipher".into(), self.cipher.clone()]);
        if let Some(mtu) = self.mtu {
            args.extend(["-mtu".into(), mtu.to_string()]);
        }
        if let Some((label, len)) = &self.keymat {
            args.extend([
                "-keymatexport".into(),
                label.clone(),
                "-keymatexportlen".into(),
                len.to_string(),
            ]);
        }
        args.extend(self.extra.iter().cloned());
    }
}

fn path_arg(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

/// Spawns a server peer and waits (up to [`READY_TIMEOUT`]) until it prints `ready`, its sign
/// that it listens.
fn spawn_listening(
    name: &str,
    port: u16,
    program: &str,
    args: &[String],
    cwd: &Path,
    ready: &str,
) -> PeerProcess {
    let p = PeerProcess::spawn(name, port, program, args, cwd);
    p.expect_output(ready, READY_TIMEOUT);
    p
}

/// `CERT_FLAG cert.pem KEY_FLAG key.pem` for one certificate and its key.
fn cert_key_args(own: &CertFiles, cert_flag: &str, key_flag: &str) -> [String; 4] {
    [
        cert_flag.into(),
        path_arg(&own.cert),
        key_flag.into(),
        path_arg(&own.key),
    ]
}

/// `IDENTITY_FLAG client1 KEY_FLAG 0011...` for the test PSK.
fn psk_args(identity_flag: &str, key_flag: &str) -> [String; 4] {
    [
        identity_flag.into(),
        PSK_IDENTITY.into(),
        key_flag.into(),
        PSK_KEY_HEX.into(),
    ]
}

/// `openssl s_server -dtls1_2 -listen -accept 127.0.0.1:PORT ... -naccept 1`, waited until ready.
pub fn openssl_s_server(opts: &OpensslOpts, cwd: &Path) -> PeerProcess {
    let port = free_udp_port();
    let mut args: Vec<String> = vec![
        "s_server".into(),
        "-listen".into(),
        "-accept".into(),
        format!("127.0.0.1:{port}"),
        "-naccept".into(),
        "1".into(),
    ];
    opts.common_args(&mut args);
    match &opts.auth {
        OpensslAuth::Cert { own, ca } => {
            let own = own.as_ref().expect("s_server needs a certificate");
            args.extend(cert_key_args(own, "-cert", "-key"));
            args.extend(["-CAfile".into(), path_arg(ca)]);
            if opts.require_client_cert {
                args.extend(["-Verify".into(), "1".into(), "-verify_return_error".into()]);
            }
        }
        OpensslAuth::Psk => {
            args.push("-nocert".into());
            args.extend(psk_args("-psk_identity", "-psk"));
        }
    }
    spawn_listening("openssl s_server", port, "openssl", &args, cwd, "ACCEPT")
}

/// `openssl s_client -dtls1_2 -connect ADDR ...`; not waited on (call `expect_output`).
pub fn openssl_s_client(opts: &OpensslOpts, server: SocketAddr, cwd: &Path) -> PeerProcess {
    let mut args: Vec<String> = vec!["s_client".into(), "-connect".into(), server.to_string()];
    opts.common_args(&mut args);
    match &opts.auth {
        OpensslAuth::Cert { own, ca } => {
            args.extend([
                "-CAfile".into(),
                path_arg(ca),
                "-verify_return_error".into(),
            ]);
            if let Some(own) = own {
                args.extend(cert_key_args(own, "-cert", "-key"));
            }
        }
        OpensslAuth::Psk => args.extend(psk_args("-psk_identity", "-psk")),
    }
    PeerProcess::spawn("openssl s_client", server.port(), "openssl", &args, cwd)
}

/// GnuTLS priority string for DTLS 1.2 with one cipher (certificate key exchanges).
pub fn gnutls_priority(cipher: &str) -> String {
    format!("NORMAL:-VERS-ALL:+VERS-DTLS1.2:-CIPHER-ALL:+{cipher}")
}

/// GnuTLS priority string for plain PSK with one cipher.
pub fn gnutls_psk_priority(cipher: &str) -> String {
    format!("NORMAL:-VERS-ALL:+VERS-DTLS1.2:-KX-ALL:+PSK:-CIPHER-ALL:+{cipher}")
}

/// How a GnuTLS peer authenticates.
#[derive(Debug, Clone)]
pub enum GnutlsAuth {
    Cert { own: Option<CertFiles>, ca: PathBuf },
    Psk,
}

#[derive(Debug, Clone)]
pub struct GnutlsOpts {
    pub priority: String,
    pub auth: GnutlsAuth,
    pub mtu: Option<u16>,
    /// Server only: `--require-client-cert`.
    pub require_client_cert: bool,
    pub extra: Vec<String>,
}

impl GnutlsOpts {
    pub fn new(priority: String, auth: GnutlsAuth) -> Self {
        Self {
            priority,
            auth,
            mtu: None,
            require_client_cert: false,
            extra: Vec::new(),
        }
    }

    /// `-p PORT --priority PRIORITY [--mtu=MTU]`, shared by `gnutls-serv` and `gnutls-cli`.
    fn common_args(&self, port: u16, args: &mut Vec<String>) {
        args.extend([
            "-p".into(),
            port.to_string(),
            "--priority".into(),
            self.priority.clone(),
        ]);
        if let Some(mtu) = self.mtu {
            args.push(format!("--mtu={mtu}"));
        }
    }
}

/// `gnutls-serv --udp --echo -p PORT ...`, waited until it listens.
pub fn gnutls_serv(opts: &GnutlsOpts, cwd: &Path) -> PeerProcess {
    let port = free_udp_port();
    let mut args: Vec<String> = vec!["--udp".into(), "--echo".into()];
    opts.common_args(port, &mut args);
    match &opts.auth {
        GnutlsAuth::Cert { own, ca } => {
            let own = own.as_ref().expect("gnutls-serv needs a certificate");
            args.extend(cert_key_args(own, "--x509certfile", "--x509keyfile"));
            args.extend(["--x509cafile".into(), path_arg(ca)]);
            if opts.require_client_cert {
                args.push("--require-client-cert".into());
            }
        }
        GnutlsAuth::Psk => {
            let file = cwd.join("psk.passwd");
            std::fs::write(&file, format!("{PSK_IDENTITY}:{PSK_KEY_HEX}\n"))
                .expect("writing psk.passwd");
            args.extend(["--pskpasswd".into(), path_arg(&file)]);
        }
    }
    args.extend(opts.extra.iter().cloned());
    spawn_listening(
        "gnutls-serv",
        port,
        "gnutls-serv",
        &args,
        cwd,
        "UDP Echo Server listening on IPv4",
    )
}

/// `gnutls-cli --udp -p PORT ... 127.0.0.1`; not waited on.
pub fn gnutls_cli(opts: &GnutlsOpts, server: SocketAddr, cwd: &Path) -> PeerProcess {
    let mut args: Vec<String> = vec!["--udp".into()];
    opts.common_args(server.port(), &mut args);
    match &opts.auth {
        GnutlsAuth::Cert { own, ca } => {
            args.extend(["--x509cafile".into(), path_arg(ca)]);
            if let Some(own) = own {
                args.extend(cert_key_args(own, "--x509certfile", "--x509keyfile"));
            }
        }
        GnutlsAuth::Psk => args.extend(psk_args("--pskusername", "--pskkey")),
    }
    args.extend(opts.extra.iter().cloned());
    args.push(server.ip().to_string());
    PeerProcess::spawn("gnutls-cli", server.port(), "gnutls-cli", &args, cwd)
}

/// Environment variables naming wolfSSL 5.9.4's example programs (TESTING.md "DTLS 1.3 and
/// connection-ID peer"). `scripts/wolfssl-peer.sh` builds them once into a cache and prints
/// both; `scripts/test.sh` runs it and exports them.
pub const WOLFSSL_CLIENT_ENV: &str = "DTLS_WOLFSSL_CLIENT";
pub const WOLFSSL_SERVER_ENV: &str = "DTLS_WOLFSSL_SERVER";

/// The wolfSSL example program named by `var`; fails the test when it is not set or not there.
pub fn wolfssl_program(var: &str) -> PathBuf {
    let path = std::env::var_os(var).map(PathBuf::from).unwrap_or_else(|| {
        panic!(
            "{var} is not set; the wolfSSL interop tests need wolfSSL's example programs: \
             run scripts/wolfssl-peer.sh and export the DTLS_WOLFSSL_CLIENT and \
             DTLS_WOLFSSL_SERVER lines it prints (scripts/test.sh does both)"
        )
    });
    assert!(
        path.is_file(),
        "{var}={} is not a file; rebuild it with scripts/wolfssl-peer.sh",
        path.display()
    );
    path
}

/// Options shared by wolfSSL's example `server` and `client` (certificates; DTLS 1.2 unless
/// `dtls13`).
#[derive(Debug, Clone)]
pub struct WolfsslOpts {
    /// wolfSSL cipher name(s) for `-l`, `:`-separated: OpenSSL style for 1.2
    /// (`ECDHE-ECDSA-AES128-GCM-SHA256`), `TLS13-AES128-GCM-SHA256` for 1.3.
    pub cipher: String,
    /// DTLS 1.3 (`-v 4`) instead of DTLS 1.2 (`-v 3`).
    pub dtls13: bool,
    /// Own certificate and key (`-c`/`-k`); a client without one gets `-x` (no client cert).
    pub own: Option<CertFiles>,
    /// The CA that verifies the other side (`-A`).
    pub ca: PathBuf,
    /// DTLS path MTU (`-u MTU`).
    pub mtu: Option<u16>,
    /// Server only: require a client certificate (without it the server gets `-d`).
    pub require_client_cert: bool,
    pub extra: Vec<String>,
}

impl WolfsslOpts {
    pub fn new(cipher: &str, own: Option<CertFiles>, ca: PathBuf) -> Self {
        Self {
            cipher: cipher.to_owned(),
            dtls13: false,
            own,
            ca,
            mtu: None,
            require_client_cert: false,
            extra: Vec::new(),
        }
    }

    /// `-u [MTU] -v 3|4 -l CIPHER -A CA [-c CERT -k KEY]`. `-u` takes an optional argument, so
    /// the MTU (when set) follows it directly.
    fn common_args(&self, args: &mut Vec<String>) {
        args.push("-u".into());
        if let Some(mtu) = self.mtu {
            args.push(mtu.to_string());
        }
        args.extend([
            "-v".into(),
            if self.dtls13 { "4" } else { "3" }.into(),
            "-l".into(),
            self.cipher.clone(),
            "-A".into(),
            path_arg(&self.ca),
        ]);
        if let Some(own) = &self.own {
            args.extend(cert_key_args(own, "-c", "-k"));
        }
    }
}

/// The examples look for `certs/dh2048.pem` from their working directory upwards to find the
/// wolfSSL tree (and fail otherwise): run them from their own directory. Paths given to them
/// are absolute.
fn wolfssl_cwd(program: &Path) -> &Path {
    program
        .parent()
        .expect("wolfSSL example program has a directory")
}

/// wolfSSL's example server: `server -u -v 3 -p 0 -R READY -e ...`, echoing every record it
/// receives (`-e`). It binds an ephemeral port on 127.0.0.1 and writes it to the
/// ready file in `dir`; this waits (up to [`READY_TIMEOUT`]) for that port.
pub fn wolfssl_server(opts: &WolfsslOpts, dir: &Path) -> PeerProcess {
    let program = wolfssl_program(WOLFSSL_SERVER_ENV);
    assert!(opts.own.is_some(), "the wolfSSL server needs a certificate");
    let ready = dir.join("wolfssl-server.ready");
    let mut args: Vec<String> = Vec::new();
    opts.common_args(&mut args);
    args.extend([
        "-p".into(),
        "0".into(),
        "-R".into(),
        path_arg(&ready),
        "-e".into(),
    ]);
    if !opts.require_client_cert {
        args.push("-d".into());
    }
    args.extend(opts.extra.iter().cloned());
    let mut p = spawn_wolfssl("wolfSSL server", 0, &program, args);
    p.port = wait_ready_port(&ready, &p);
    p
}

/// The port the wolfSSL server wrote to its ready file (`-R`), a line ending in a newline.
fn wait_ready_port(ready: &Path, p: &PeerProcess) -> u16 {
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        if let Ok(text) = std::fs::read_to_string(ready)
            && let Some(line) = text.strip_suffix('\n')
            && let Ok(port) = line.trim().parse::<u16>()
            && port != 0
        {
            return port;
        }
        assert!(
            Instant::now() < deadline,
            "no port in {} within {READY_TIMEOUT:?}\n{}",
            ready.display(),
            p.transcript()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// wolfSSL's example client: `client -u -v 3 -h 127.0.0.1 -p PORT ...`. After the handshake
/// it sends `hello wolfssl!` (14 bytes, no newline), prints the first record it gets back on a
/// line of its own, and exits. Not waited on.
pub fn wolfssl_client(opts: &WolfsslOpts, server: SocketAddr) -> PeerProcess {
    let program = wolfssl_program(WOLFSSL_CLIENT_ENV);
    let mut args: Vec<String> = Vec::new();
    opts.common_args(&mut args);
    if opts.own.is_none() {
        args.push("-x".into());
    }
    args.extend([
        "-h".into(),
        server.ip().to_string(),
        "-p".into(),
        server.port().to_string(),
    ]);
    args.extend(opts.extra.iter().cloned());
    spawn_wolfssl("wolfSSL client", server.port(), &program, args)
}

/// Runs a wolfSSL example under `stdbuf -oL` (its `printf`s are block-buffered on a pipe and
/// would show only at exit) from its own directory (see [`wolfssl_cwd`]).
fn spawn_wolfssl(name: &str, port: u16, program: &Path, args: Vec<String>) -> PeerProcess {
    let mut full = vec!["-oL".to_owned(), path_arg(program)];
    full.extend(args);
    PeerProcess::spawn(name, port, "stdbuf", &full, wolfssl_cwd(program))
}
