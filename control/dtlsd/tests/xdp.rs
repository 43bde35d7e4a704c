//! `dtlsd serve --io xdp` over a real veth pair between two network namespaces built by the
//! test (as dataplane/io/tests/xdp.rs does for the bare backend):
//!
//! ```text
//!   ns A: 10.251.0.1/24 on "xa"                       ns B: 10.251.0.2/24 on "xb"
//!   dtlsd serve --io xdp --interface xa   <-veth->   our DTLS client engine (this binary)
//!   UDP echo backend on 127.0.0.1:7007
//!   metrics on 10.251.0.1:9464 (TCP)
//! ```
//!
//! The client (and `openssl s_client -dtls1_2` where installed) completes a DTLS handshake
//! with the daemon through the AF_XDP socket, every
//! payload round-trips byte for byte (the backend echoes), and the daemon's /metrics (read
//! from ns B over TCP through the same interface, which the XDP program passes to the
//! kernel) shows the AF_XDP counters moving. ARP must work for any of that (ns B resolves
//! ns A's address: asserted from B's neighbour table), UDP to another port reaches ns A's
//! kernel (which answers ICMP port unreachable), and ICMP arriving at the XDP interface
//! reaches ns A's kernel (a socket in ns A sees ECONNREFUSED from B's port unreachable).
//! Datagrams with a bad UDP checksum are dropped and counted by the AF_XDP layer
//! (`dtlsd_xdp_rx_bad_checksum_total`), non-DTLS bytes by the shard (`dtlsd_drops_total`
//! with reason `malformed`), as on the other backends. A record larger than the MTU leaves
//! the client as IP fragments, which the program passes to ns A's kernel; the daemon reads
//! the reassembled datagram from its listen socket (a shard the kernel's hash picks; the
//! record's CID takes it to its owner) and relays it
//! (`dtlsd_xdp_rx_kernel_total`; the backend answers big datagrams with their length, since
//! an echo over the MTU would be refused). After SIGTERM the program is gone from the
//! interface.
//!
//! The helper roles are this test binary again, started with `ip netns exec` (entering a
//! namespace from a thread would need unsafe code). Needs root and `ip`; elsewhere it
//! prints why it skips. The start-up refusals (no such interface, keys given alone) need
//! neither and always run.
//!
//! Before sending, the client turns transmit checksum offload off on its veth end: with it
//! on, a local socket's frames cross the veth with a partial UDP checksum that only a NIC
//! would complete, and the AF_XDP side rightly drops them (`dtlsd_xdp_rx_bad_checksum_total`).

mod common;

use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use common::probe::Samples;
use common::{
    Client, DTLSD, Daemon, EchoBackend, IO_TIMEOUT, Peer, START_TIMEOUT, TempDir, certs, collect,
    free_udp_addr, wait_exit, wait_for,
};

const ROLE: &str = "DTLSD_XDP_ROLE";
const PKI: &str = "DTLSD_XDP_PKI";
const CLIENTS: &str = "DTLSD_XDP_CLIENTS";
const SHARDS: &str = "DTLSD_XDP_SHARDS";
const TEST: &str = "serve_over_af_xdp_relays_dtls_and_passes_everything_else";
const SERVE_V4: Ipv4Addr = Ipv4Addr::new(10, 251, 0, 1);
const PEER_V4: Ipv4Addr = Ipv4Addr::new(10, 251, 0, 2);
const PORT: u16 = 4433;
const METRICS_PORT: u16 = 9464;
const BACKEND_PORT: u16 = 7007;
/// Datagrams the client sends with partial checksums (offload still on).
const PARTIAL_SUMS: u64 = 3;
/// Datagrams of non-DTLS bytes the client sends to the DTLS port.
const GARBAGE: u64 = 5;
/// The plaintext of the record the client sends as IP fragments (over the 1500 MTU).
const FRAGMENTED: usize = 3000;
/// Datagrams up to this size the backend echoes; longer ones it answers with their length.
const ECHO_MAX: usize = 1400;
/// A port nobody listens on, in either namespace.
const CLOSED_PORT: u16 = 4499;

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("cannot run `ip`: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`ip {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn ip_output(args: &[&str]) -> String {
    Command::new("ip")
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

/// The two namespaces and the veth pair; deleted on drop.
struct Namespaces {
    serve: String,
    peer: String,
}

impl Namespaces {
    /// The pair, each veth end with `queues` receive and transmit queues; `tag` keeps the
    /// names of tests running at once apart.
    fn build(tag: &str, queues: u32) -> Result<Self, String> {
        let tag = format!("dtlsd-xdp{}{tag}", std::process::id());
        let ns = Self {
            serve: format!("{tag}-a"),
            peer: format!("{tag}-b"),
        };
        for name in [&ns.serve, &ns.peer] {
            ip(&["netns", "add", name])?;
            ip(&["-n", name, "link", "set", "lo", "up"])?;
        }
        let (a, b) = (ns.serve.as_str(), ns.peer.as_str());
        let q = queues.to_string();
        ip(&[
            "-n",
            a,
            "link",
            "add",
            "xa",
            "numrxqueues",
            &q,
            "numtxqueues",
            &q,
            "type",
            "veth",
            "peer",
            "name",
            "xb",
            "numrxqueues",
            &q,
            "numtxqueues",
            &q,
            "netns",
            b,
        ])?;
        ip(&["-n", a, "addr", "add", "10.251.0.1/24", "dev", "xa"])?;
        ip(&["-n", b, "addr", "add", "10.251.0.2/24", "dev", "xb"])?;
        for (n, dev) in [(a, "xa"), (b, "xb")] {
            ip(&["-n", n, "link", "set", dev, "up"])?;
        }
        Ok(ns)
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for name in [&self.serve, &self.peer] {
            let _ = Command::new("ip").args(["netns", "del", name]).status();
        }
    }
}

/// This test binary in namespace `ns` playing `role`.
fn role(ns: &str, role: &str, pki: &TempDir) -> Command {
    role_with(ns, role, pki, 1, 1)
}

/// [`role`], for the client role with at least `clients` sessions and `shards` shards to
/// reach.
fn role_with(ns: &str, role: &str, pki: &TempDir, clients: usize, shards: usize) -> Command {
    let exe = std::env::current_exe().expect("test binary path");
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", ns])
        .arg(exe)
        .args(["--exact", TEST, "--nocapture"])
        .env(ROLE, role)
        .env(PKI, pki.path())
        .env(CLIENTS, clients.to_string())
        .env(SHARDS, shards.to_string());
    cmd
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

/// Kills and reaps a helper on drop.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn serve_over_af_xdp_relays_dtls_and_passes_everything_else() {
    match std::env::var(ROLE).as_deref() {
        Ok("echo") => return play_echo(),
        Ok("client") => return play_client(),
        Ok("icmp") => return play_icmp(),
        _ => {}
    }
    if !is_root() {
        eprintln!("skipped: needs root for network namespaces, bpf() and AF_XDP");
        return;
    }
    let Some(ns) = namespaces("1q", 1) else {
        return;
    };
    let pki = TempDir::new("xdp");
    certs(&pki);

    // Refused at start, naming the reason: an address the interface does not carry, and
    // more shards than the veth has receive queues (one).
    let (status, log) = refused_in(
        &ns.serve,
        &pki,
        "127.0.0.1:4433",
        &["--io", "xdp", "--interface", "xa"],
    );
    assert!(!status.success(), "{log}");
    assert!(
        log.contains("127.0.0.1") && log.contains("not an address of interface \"xa\""),
        "names the address and the interface:\n{log}"
    );
    let (status, log) = refused_in(
        &ns.serve,
        &pki,
        "10.251.0.1:4433",
        &["--io", "xdp", "--interface", "xa", "--shards", "2"],
    );
    assert!(!status.success(), "{log}");
    assert!(
        log.contains("\"xa\" has 1 receive queue(s), fewer than the 2 shards"),
        "names the interface and its queues:\n{log}"
    );
    assert!(
        !ip_output(&["-n", &ns.serve, "link", "show", "xa"]).contains("prog/xdp"),
        "a refused start leaves no program behind"
    );

    relay_through_xdp(&ns, &pki, "xdp", 1, 1);
}

/// Two receive queues on the veth, two shards, `--io auto` (which picks AF_XDP since the
/// interface is given and usable): shard i serves queue i (the peer's transmit
/// queue, picked per flow, is the queue a frame arrives on), and every session of several
/// clients completes and echoes whichever queue its flow hashed to; sessions are added until
/// both queues have served one (each shard's `dtlsd_xdp_rx_frames_total` moved).
#[test]
fn serve_over_af_xdp_with_two_shards_on_two_queues() {
    if std::env::var(ROLE).is_ok() {
        return;
    }
    if !is_root() {
        eprintln!("skipped: needs root for network namespaces, bpf() and AF_XDP");
        return;
    }
    let Some(ns) = namespaces("2q", 2) else {
        return;
    };
    let pki = TempDir::new("xdp2");
    certs(&pki);
    relay_through_xdp(&ns, &pki, "auto", 2, 4);
}

/// The namespaces with `queues` queues per veth end, or `None` (printed) without `ip`.
fn namespaces(tag: &str, queues: u32) -> Option<Namespaces> {
    match Namespaces::build(tag, queues) {
        Ok(ns) => Some(ns),
        Err(e) if e.contains("cannot run") => {
            eprintln!("skipped: {e}");
            None
        }
        Err(e) => panic!("cannot build the test's network namespaces: {e}"),
    }
}

/// Runs the echo backend and `dtlsd serve --io {io} --interface xa --shards {shards}` in ns A and
/// `clients` DTLS sessions from ns B; checks the echoes, the metrics, ARP and ICMP, and that
/// the program leaves with the daemon.
fn relay_through_xdp(ns: &Namespaces, pki: &TempDir, io: &str, shards: usize, clients: usize) {
    let mut echo = Reaped(
        role(&ns.serve, "echo", pki)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn the echo backend"),
    );
    let mut lines = BufReader::new(echo.0.stdout.take().expect("piped"));
    let mut line = String::new();
    while !line.starts_with("READY") {
        line.clear();
        let n = lines.read_line(&mut line).expect("read the echo backend");
        assert!(n > 0, "the echo backend ended before it was ready");
    }

    let listen = SocketAddr::from((SERVE_V4, PORT));
    let metrics = SocketAddr::from((SERVE_V4, METRICS_PORT));
    let mut daemon = Reaped(
        Command::new("ip")
            .args(["netns", "exec", &ns.serve, DTLSD, "serve"])
            .env("NO_COLOR", "1")
            .env("RUST_LOG", "info")
            .args(["--listen", &listen.to_string()])
            .args(["--backend", &format!("127.0.0.1:{BACKEND_PORT}")])
            .args(["--cert", &pki.file("server.pem")])
            .args(["--key", &pki.file("server.key")])
            .args(["--io", io, "--interface", "xa"])
            .args(["--shards", &shards.to_string()])
            .args(["--metrics", &metrics.to_string(), "--admin-socket", "off"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn dtlsd serve in the namespace"),
    );
    let log = collect(daemon.0.stderr.take().expect("piped"));
    let read_log = || log.lock().expect("log lock").clone();
    assert!(
        wait_for(&log, "dtlsd serve listening", START_TIMEOUT),
        "dtlsd serve --io xdp did not start:\n{}",
        read_log()
    );
    if io == "auto" {
        assert!(
            read_log().contains("io auto: AF_XDP set-up works"),
            "io auto says it picked AF_XDP:\n{}",
            read_log()
        );
    }
    // veth has copy mode only: the driver's refusal is the logged reason.
    assert!(
        read_log().contains("AF_XDP in copy mode"),
        "the copy-mode choice is logged:\n{}",
        read_log()
    );
    assert!(
        ip_output(&["-n", &ns.serve, "link", "show", "xa"]).contains("prog/xdp"),
        "the program is attached while the daemon runs"
    );

    let client = role_with(&ns.peer, "client", pki, clients, shards)
        .output()
        .expect("run the client in the peer namespace");
    let client_err = String::from_utf8_lossy(&client.stderr);
    assert!(
        client.status.success(),
        "client side failed:\n{client_err}\ndaemon said:\n{}",
        read_log()
    );
    eprintln!("{}", client_err.trim());

    // OpenSSL's DTLS 1.2 client through the same path (offload is off on xb by now).
    if Command::new("openssl").arg("version").output().is_ok() {
        let args: Vec<String> = [
            "netns",
            "exec",
            &ns.peer,
            "openssl",
            "s_client",
            "-dtls1_2",
            "-connect",
            &listen.to_string(),
            "-CAfile",
            &pki.file("ca.pem"),
            "-verify_return_error",
            "-cipher",
            "ECDHE-ECDSA-AES128-GCM-SHA256",
            "-quiet",
        ]
        .iter()
        .map(ToString::to_string)
        .collect();
        let mut peer = Peer::spawn("ip", &args);
        let line = "openssl through AF_XDP";
        peer.write_line(line);
        assert!(
            wait_for(&peer.stdout, line, IO_TIMEOUT),
            "no echo to openssl s_client\n{}\ndtlsd:\n{}",
            peer.transcript(),
            read_log()
        );
    } else {
        eprintln!("openssl s_client part skipped: no openssl binary");
    }

    let icmp = role(&ns.serve, "icmp", pki)
        .output()
        .expect("run the ICMP check in the daemon's namespace");
    assert!(
        icmp.status.success(),
        "ICMP did not reach the kernel behind the XDP program:\n{}",
        String::from_utf8_lossy(&icmp.stderr)
    );

    // B resolved A's address: A's kernel saw B's ARP request past the program and answered.
    let neigh = ip_output(&["-n", &ns.peer, "neigh", "show", "10.251.0.1"]);
    assert!(
        neigh.contains("lladdr"),
        "ns B has no MAC for 10.251.0.1 (ARP did not pass the program): {neigh:?}"
    );

    let status = Command::new("kill")
        .args(["-TERM", &daemon.0.id().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -TERM failed");
    let exit = wait_exit(&mut daemon.0, IO_TIMEOUT).expect("dtlsd exits on SIGTERM");
    assert!(exit.success(), "dtlsd exit: {exit:?}\n{}", read_log());
    assert!(
        !ip_output(&["-n", &ns.serve, "link", "show", "xa"]).contains("prog/xdp"),
        "the program left the interface with the daemon"
    );
    drop(echo);
}

/// ns A: the plaintext backend, a UDP echo on 127.0.0.1 (killed by the test).
fn play_echo() {
    let sock = UdpSocket::bind((Ipv4Addr::LOCALHOST, BACKEND_PORT)).expect("bind the backend");
    println!("READY");
    let mut buf = vec![0u8; 65_536];
    while let Ok((n, from)) = sock.recv_from(&mut buf) {
        if n <= ECHO_MAX {
            let _ = sock.send_to(&buf[..n], from);
        } else {
            let _ = sock.send_to(format!("{n} bytes").as_bytes(), from);
        }
    }
}

/// ns B: a DTLS client of our own engine through the veth, then the metrics over TCP.
fn play_client() {
    // With offload still on these leave with partial UDP checksums: garbage to the AF_XDP
    // side, dropped and counted before any parsing.
    let early = UdpSocket::bind((PEER_V4, 0)).expect("bind");
    for _ in 0..PARTIAL_SUMS {
        early
            .send_to(b"partial checksum", (SERVE_V4, PORT))
            .expect("send");
    }
    dtls_io::disable_tx_checksum_offload("xb").expect("turn off tx checksum offload on xb");
    // Datagrams that are no DTLS at all: the shard drops them as it would on any backend.
    for _ in 0..GARBAGE {
        early
            .send_to(b"garbage, not a DTLS record", (SERVE_V4, PORT))
            .expect("send");
    }
    let pki = std::path::PathBuf::from(std::env::var(PKI).expect("pki dir"));
    let ca = dtls_crypto::CertificateVerifier::from_pem_file(pki.join("ca.pem")).expect("ca");
    let config = Arc::new(control::Config {
        server_name: Some("localhost".into()),
        rrc: false,
        ..control::Config::new(control::PeerVerifier::WebPki(ca))
    });
    let server = SocketAddr::from((SERVE_V4, PORT));
    let clients: usize = std::env::var(CLIENTS)
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1);
    let metrics = SocketAddr::from((SERVE_V4, METRICS_PORT));
    let shards: usize = std::env::var(SHARDS)
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1);
    // Sessions until there are `clients` and every shard's queue has had frames: the peer's
    // transmit queue (so our receive queue) is picked by a random per-socket hash, so with
    // two queues 64 sessions all on one would be a 2^-63 chance.
    let mut sessions: Vec<Client> = Vec::new();
    let all_queues_used = || {
        let s = Samples::scrape(metrics);
        (0..shards).all(|i| s.labelled("dtlsd_xdp_rx_frames_total", &format!("shard=\"{i}\"")) > 0)
    };
    while sessions.len() < clients || (sessions.len() < 64 && !all_queues_used()) {
        let c = sessions.len();
        let mut client = Client::try_connect_from(
            Arc::clone(&config),
            server,
            SocketAddr::from((PEER_V4, 0)),
            None,
            IO_TIMEOUT,
        )
        .unwrap_or_else(|e| panic!("handshake through AF_XDP did not complete: {e}"));
        for (i, len) in [1usize, 17, 100, 512, 1000, 1200].into_iter().enumerate() {
            let payload: Vec<u8> = (0..len).map(|j| (j * 31 + i * 7 + c + 1) as u8).collect();
            client.echo(&payload);
        }
        sessions.push(client);
    }
    assert!(all_queues_used(), "every shard's queue served a session");
    // A record over the MTU leaves as IP fragments: the program passes them to the kernel,
    // which reassembles the datagram for the daemon's listen sockets. The kernel's reuseport
    // hash picks the shard whose socket gets it, not the NIC's queue, so the session uses a
    // connection ID: a record on another shard's socket is handed to its owner by its CID.
    let cid_config = Arc::new(control::Config {
        connection_id: control::ConnectionIds::On { len: 0 },
        ..(*config).clone()
    });
    let mut client = Client::try_connect_from(
        cid_config,
        server,
        SocketAddr::from((PEER_V4, 0)),
        None,
        IO_TIMEOUT,
    )
    .unwrap_or_else(|e| panic!("handshake with a CID through AF_XDP did not complete: {e}"));
    assert!(client.peer_cid().is_some(), "the daemon issued a CID");
    client.echo(b"small, through the AF_XDP socket");
    let big: Vec<u8> = (0..FRAGMENTED).map(|j| (j * 13 + 5) as u8).collect();
    let answer = format!("{FRAGMENTED} bytes").into_bytes();
    let deadline = std::time::Instant::now() + IO_TIMEOUT;
    'big: loop {
        client.send_app(&big);
        let resend = std::time::Instant::now() + Duration::from_secs(1);
        while std::time::Instant::now() < resend {
            if client
                .turn(Duration::from_millis(100))
                .app
                .contains(&answer)
            {
                break 'big;
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no answer to a {FRAGMENTED}-byte record sent as IP fragments"
        );
    }
    // UDP to another port passes the program to ns A's kernel, which has no socket there.
    let other = UdpSocket::bind((PEER_V4, 0)).expect("bind");
    other.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
    other.connect((SERVE_V4, CLOSED_PORT)).expect("connect");
    other.send(b"to the kernel").expect("send");
    let err = other
        .recv(&mut [0u8; 64])
        .expect_err("nothing answers on that port");
    assert_eq!(
        err.kind(),
        std::io::ErrorKind::ConnectionRefused,
        "ns A's kernel answers port unreachable for another port"
    );

    let s = Samples::scrape_until(metrics, IO_TIMEOUT, |s| {
        s.total("dtlsd_xdp_rx_frames_total") > 0
            && s.total("dtlsd_io_send_datagrams_total") > 0
            && s.labelled("dtlsd_drops_total", "reason=\"malformed\"") >= GARBAGE
    });
    let rx = s.total("dtlsd_xdp_rx_frames_total");
    let rx_kernel = s.total("dtlsd_xdp_rx_kernel_total");
    let recv = s.total("dtlsd_io_recv_datagrams_total");
    let sent = s.total("dtlsd_io_send_datagrams_total");
    let per_shard: Vec<u64> = (0..4)
        .map(|i| s.labelled("dtlsd_xdp_rx_frames_total", &format!("shard=\"{i}\"")))
        .collect();
    eprintln!(
        "client: daemon metrics xdp_rx_frames={rx} (by shard {per_shard:?}) io_recv={recv} \
         io_send={sent}"
    );
    // The handshake's flights and six records each way at least.
    assert!(recv >= 8 + GARBAGE, "AF_XDP datagrams in: {recv}");
    assert!(sent >= 8, "AF_XDP datagrams out: {sent}");
    assert!(
        rx_kernel >= 1,
        "the fragmented record came through the kernel"
    );
    assert_eq!(
        rx + rx_kernel,
        recv + PARTIAL_SUMS,
        "every frame delivered or counted"
    );
    assert_eq!(s.total("dtlsd_xdp_rx_bad_checksum_total"), PARTIAL_SUMS);
    assert!(
        s.labelled("dtlsd_drops_total", "reason=\"malformed\"") >= GARBAGE,
        "garbage counted as malformed"
    );
    assert_eq!(s.total("dtlsd_xdp_tx_no_neighbour_total"), 0);
    assert_eq!(s.total("dtlsd_io_send_errors_total"), 0);
}

/// ns A: ICMP arriving on the XDP interface reaches the kernel: B's port unreachable for a
/// datagram from A makes A's connected socket fail with ECONNREFUSED.
fn play_icmp() {
    let sock = UdpSocket::bind((SERVE_V4, 0)).expect("bind");
    sock.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
    sock.connect((PEER_V4, CLOSED_PORT)).expect("connect");
    sock.send(b"to a closed port").expect("send");
    let err = sock
        .recv(&mut [0u8; 64])
        .expect_err("nothing answers on that port");
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused, "{err}");
}

/// Runs `dtlsd serve` with `args` on a free loopback port and returns its exit status and
/// log once it exits (it must, within the start-up bound).
fn refused(args: &[&str]) -> (std::process::ExitStatus, String) {
    let pki = TempDir::new("xdp-refused");
    certs(&pki);
    let listen = free_udp_addr().to_string();
    run_to_exit(Command::new(DTLSD), &pki, &listen, args)
}

/// [`refused`] inside network namespace `ns`, listening on `listen`.
fn refused_in(
    ns: &str,
    pki: &TempDir,
    listen: &str,
    args: &[&str],
) -> (std::process::ExitStatus, String) {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", ns, DTLSD]);
    run_to_exit(cmd, pki, listen, args)
}

fn run_to_exit(
    mut cmd: Command,
    pki: &TempDir,
    listen: &str,
    args: &[&str],
) -> (std::process::ExitStatus, String) {
    let mut child = cmd
        .env("NO_COLOR", "1")
        .args(["serve", "--listen", listen])
        .args(["--backend", "127.0.0.1:9"])
        .args(["--cert", &pki.file("server.pem")])
        .args(["--key", &pki.file("server.key")])
        .args(["--admin-socket", "off"])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn dtlsd serve");
    let log = collect(child.stderr.take().expect("piped"));
    let status = wait_exit(&mut child, START_TIMEOUT).unwrap_or_else(|| {
        let _ = child.kill();
        panic!("dtlsd kept running:\n{}", log.lock().expect("log lock"));
    });
    // The pipe's reader thread finishes with the process.
    std::thread::sleep(Duration::from_millis(100));
    let text = log.lock().expect("log lock").clone();
    (status, text)
}

#[test]
fn io_xdp_on_a_missing_interface_fails_at_start_naming_it() {
    let (status, log) = refused(&["--io", "xdp", "--interface", "nosuch0"]);
    assert!(!status.success(), "dtlsd must not start:\n{log}");
    assert!(
        log.contains("nosuch0") && log.contains("not found"),
        "the reason names the interface:\n{log}"
    );
    assert!(
        !log.contains("listening"),
        "no fallback to another backend:\n{log}"
    );
}

#[test]
fn interface_with_a_socket_backend_and_io_xdp_without_interface_are_config_errors() {
    let (status, log) = refused(&["--io", "mmsg", "--interface", "lo"]);
    assert!(!status.success(), "{log}");
    assert!(
        log.contains("interface") && log.contains("io = \"xdp\" or \"auto\""),
        "names the key and what it goes with:\n{log}"
    );
    let (status, log) = refused(&["--io", "xdp"]);
    assert!(!status.success(), "{log}");
    assert!(
        log.contains("interface") && log.contains("xdp"),
        "names the missing key:\n{log}"
    );
}

/// `--io auto` (the default) with an interface tries AF_XDP first; when it cannot work
/// (here the interface does not exist) the daemon serves through the socket backends and
/// logs why, and a session completes and echoes through it.
#[test]
fn io_auto_with_an_unusable_interface_serves_through_sockets_and_says_why() {
    if std::env::var(ROLE).is_ok() {
        return;
    }
    let pki = TempDir::new("xdp-auto");
    certs(&pki);
    let backend = EchoBackend::start();
    let daemon = Daemon::start_serve(backend.addr, &pki, &["--interface", "nosuch0"]);
    let log = daemon.log();
    assert!(
        log.contains("io auto: AF_XDP cannot be used")
            && log.contains("nosuch0")
            && log.contains("not found"),
        "the fallback and its reason are logged:\n{log}"
    );
    assert!(
        !log.contains("AF_XDP in copy mode") && !log.contains("AF_XDP in zero-copy mode"),
        "no shard serves through AF_XDP:\n{log}"
    );
    let mut client = Client::connect(Client::config(&pki), daemon.listen);
    client.echo(b"through the socket backend after io auto passed over AF_XDP");
}
