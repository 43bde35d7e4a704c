//! The AF_XDP backend's next hop per peer comes from the kernel's route table when it differs
//! from where the peer's frames came from (asymmetric routing). Four network namespaces built
//! by the test, one Ethernet segment (a bridge):
//!
//! ```text
//!   xdp ns: "xa" 10.247.0.1/24            peer ns: "pb" 10.247.0.2/24, 10.246.0.1/32 on lo
//!   XdpIo on xa, port 4433 (echo)         sends from 10.246.0.1 straight to 10.247.0.1
//!   route 10.246.0.0/24 via 10.247.0.3    (its frames carry pb's MAC)
//!              \                          /
//!               bridge "sw0" in ns "s" ---
//!              /
//!   router ns: "rc" 10.247.0.3/24, forwarding, 10.246.0.1 via 10.247.0.2, no redirects
//! ```
//!
//! The peer's frames come from its own MAC, but the route table of the XDP side sends
//! 10.246.0.0/24 through the router. With the route table read per peer, every echo the
//! AF_XDP socket frames goes to the router's MAC and the router forwards it (its
//! `ForwDatagrams` count moves by at least as many); with only the learned MAC, the echoes
//! would go to the peer directly and the router would forward none. Both sides are this test
//! binary again under `ip netns exec`. Needs root and `ip`; elsewhere it prints why it skips.

mod common;

use std::io::Read;
use std::net::{Ipv4Addr, UdpSocket};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use common::netns::{self, ip, is_root};
use dtls_io::{TxBatch, XdpConfig, XdpFilter, XdpIo};

const ROLE: &str = "DTLS_IO_XDP_ROUTE_ROLE";
const TEST: &str = "replies_follow_the_route_table_not_the_frames_sender";
const XDP_V4: Ipv4Addr = Ipv4Addr::new(10, 247, 0, 1);
/// The peer's address behind the router, as the XDP side's route table sees it.
const PEER_V4: Ipv4Addr = Ipv4Addr::new(10, 246, 0, 1);
const PORT: u16 = 4433;
const QUIT: &[u8] = b"QUIT";
/// Datagrams the peer sends (one at a time, each echoed).
const ROUNDS: usize = 50;
/// A generous bound for one reply (a stuck test, not a slow one).
const REPLY_WAIT: Duration = Duration::from_secs(5);

fn in_ns(ns: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new("ip")
        .args(["netns", "exec", ns])
        .args(args)
        .output()
        .map_err(|e| format!("cannot run `ip netns exec`: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "`{}` in {ns} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// The namespaces, the bridge and the routes; deleted on drop.
struct Namespaces {
    xdp: String,
    switch: String,
    peer: String,
    router: String,
}

impl Namespaces {
    fn build() -> Result<Self, String> {
        let tag = format!("dtlsio-rt{}", std::process::id());
        let ns = Self {
            xdp: format!("{tag}-a"),
            switch: format!("{tag}-s"),
            peer: format!("{tag}-b"),
            router: format!("{tag}-c"),
        };
        for name in [&ns.xdp, &ns.switch, &ns.peer, &ns.router] {
            ip(&["netns", "add", name])?;
            ip(&["-n", name, "link", "set", "lo", "up"])?;
        }
        let (a, s, b, c) = (
            ns.xdp.as_str(),
            ns.switch.as_str(),
            ns.peer.as_str(),
            ns.router.as_str(),
        );
        ip(&["-n", s, "link", "add", "name", "sw0", "type", "bridge"])?;
        ip(&["-n", s, "link", "set", "sw0", "up"])?;
        for (n, dev, port) in [(a, "xa", "sa"), (b, "pb", "sb"), (c, "rc", "sc")] {
            ip(&[
                "-n", s, "link", "add", port, "type", "veth", "peer", "name", dev, "netns", n,
            ])?;
            ip(&["-n", s, "link", "set", port, "master", "sw0"])?;
            ip(&["-n", s, "link", "set", port, "up"])?;
            ip(&["-n", n, "link", "set", dev, "up"])?;
        }
        ip(&["-n", a, "addr", "add", "10.247.0.1/24", "dev", "xa"])?;
        ip(&["-n", b, "addr", "add", "10.247.0.2/24", "dev", "pb"])?;
        ip(&["-n", b, "addr", "add", "10.246.0.1/32", "dev", "lo"])?;
        ip(&["-n", c, "addr", "add", "10.247.0.3/24", "dev", "rc"])?;
        ip(&[
            "-n",
            a,
            "route",
            "add",
            "10.246.0.0/24",
            "via",
            "10.247.0.3",
        ])?;
        ip(&[
            "-n",
            c,
            "route",
            "add",
            "10.246.0.1/32",
            "via",
            "10.247.0.2",
        ])?;
        // The router forwards, out the interface it received on, without telling the XDP
        // side to go direct (a redirect would change the XDP side's route to the peer).
        for key in [
            "net.ipv4.ip_forward=1",
            "net.ipv4.conf.all.send_redirects=0",
            "net.ipv4.conf.rc.send_redirects=0",
        ] {
            in_ns(c, &["sysctl", "-q", "-w", key]).map_err(|e| {
                if e.contains("No such file") {
                    format!("cannot run `sysctl` (procps): {e}")
                } else {
                    e
                }
            })?;
        }
        Ok(ns)
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for name in [&self.xdp, &self.switch, &self.peer, &self.router] {
            let _ = Command::new("ip").args(["netns", "del", name]).status();
        }
    }
}

fn spawn_role(ns: &str, role: &str) -> Child {
    netns::spawn_role(ns, TEST, ROLE, role)
}

/// `Ip: ... ForwDatagrams` of namespace `ns` (/proc/net/snmp).
fn forwarded(ns: &str) -> u64 {
    let snmp = in_ns(ns, &["cat", "/proc/net/snmp"]).expect("read /proc/net/snmp");
    let mut ip_lines = snmp.lines().filter(|l| l.starts_with("Ip:"));
    let (names, values) = (
        ip_lines.next().expect("Ip header"),
        ip_lines.next().expect("Ip values"),
    );
    let at = names
        .split_whitespace()
        .position(|n| n == "ForwDatagrams")
        .expect("ForwDatagrams column");
    values
        .split_whitespace()
        .nth(at)
        .and_then(|v| v.parse().ok())
        .expect("ForwDatagrams value")
}

#[test]
fn replies_follow_the_route_table_not_the_frames_sender() {
    match std::env::var(ROLE).as_deref() {
        Ok("xdp") => return play_xdp(),
        Ok("peer") => return play_peer(),
        _ => {}
    }
    if !is_root() {
        eprintln!("skipped: needs root for network namespaces, bpf() and AF_XDP");
        return;
    }
    let ns = match Namespaces::build() {
        Ok(ns) => ns,
        Err(e) if e.contains("cannot run") => {
            eprintln!("skipped: {e}");
            return;
        }
        Err(e) => panic!("cannot build the test's network namespaces: {e}"),
    };
    let mut xdp = spawn_role(&ns.xdp, "xdp");
    let (_ready, mut lines) = netns::wait_ready(&mut xdp);
    let before = forwarded(&ns.router);
    let peer = spawn_role(&ns.peer, "peer")
        .wait_with_output()
        .expect("peer role");
    let peer_err = String::from_utf8_lossy(&peer.stderr);
    let status = xdp.wait().expect("xdp role");
    let mut rest = String::new();
    let _ = lines.read_to_string(&mut rest);
    let mut xdp_err = String::new();
    let _ = xdp
        .stderr
        .take()
        .expect("piped")
        .read_to_string(&mut xdp_err);
    assert!(
        peer.status.success(),
        "peer side failed:\n{peer_err}\nxdp side said:\n{rest}\n{xdp_err}"
    );
    assert!(status.success(), "xdp side failed:\n{rest}\n{xdp_err}");
    eprintln!("{}", rest.trim());
    let line = |key: &str| -> u64 {
        rest.lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("the xdp side's {key} line:\n{rest}"))
    };
    let (framed, echoed) = (line("FRAMED "), line("ECHOED "));
    let through_router = forwarded(&ns.router) - before;
    assert!(
        framed > 0,
        "the AF_XDP socket framed no echo itself:\n{rest}"
    );
    assert!(
        through_router >= echoed,
        "{echoed} echoes ({framed} framed by the AF_XDP socket) but only {through_router} \
         forwarded by the router: replies went to the frames' sender, not the route's gateway"
    );
}

fn play_peer() {
    dtls_io::disable_tx_checksum_offload("pb").expect("turn off tx checksum offload on pb");
    let sock = UdpSocket::bind((PEER_V4, 0)).expect("bind peer socket");
    sock.set_read_timeout(Some(REPLY_WAIT)).expect("timeout");
    sock.connect((XDP_V4, PORT)).expect("connect");
    let mut buf = [0u8; 2048];
    for i in 0..ROUNDS {
        let data = format!("round {i}");
        sock.send(data.as_bytes()).expect("send");
        let n = sock
            .recv(&mut buf)
            .unwrap_or_else(|e| panic!("no echo of round {i}: {e}"));
        assert_eq!(&buf[..n], data.as_bytes());
        // Spread over ~250 ms: the router's MAC is resolved (by the kernel, for the first
        // echo, which leaves through the kernel socket) while the rounds go on.
        std::thread::sleep(Duration::from_millis(5));
    }
    sock.send(QUIT).expect("quit");
    eprintln!("peer: {ROUNDS} echoes through the router");
}

fn play_xdp() {
    let filter = XdpFilter {
        port: PORT,
        v4: Some(XDP_V4),
        v6: None,
    };
    let mut io = XdpIo::new(&XdpConfig::new("xa", filter)).expect("AF_XDP on the veth");
    let ours = UdpSocket::bind((XDP_V4, PORT)).expect("bind the listen socket");
    ours.set_nonblocking(true).expect("nonblocking");
    io.set_kernel_socket(ours);
    println!("READY");
    let mut tx = TxBatch::new(256, 2048, false);
    let deadline = Instant::now() + Duration::from_secs(60);
    'outer: while Instant::now() < deadline {
        io.poll_recv(Duration::from_millis(100)).expect("receive");
        for d in io.datagrams() {
            if d.payload == QUIT {
                break 'outer;
            }
            tx.push(d.source, d.payload).expect("room in the batch");
        }
        io.flush(&mut tx).expect("send");
    }
    let s = io.stats();
    println!("STATS {s:?}");
    println!("FRAMED {}", s.datagrams_out - s.tx_kernel);
    println!("ECHOED {}", s.datagrams_out);
    assert_eq!(s.send_errors, 0, "{s:?}");
    assert!(s.next_hop_routed >= 1, "{s:?}");
    assert_eq!(
        s.datagrams_out as usize, ROUNDS,
        "every round echoed once: {s:?}"
    );
}
