//! The AF_XDP backend over a real veth pair between two network namespaces built by the test:
//!
//! ```text
//!   xdp ns: "xa" 10.249.0.1/24, fd49::1/64       peer ns: "xb" 10.249.0.2/24, fd49::2/64
//!   XdpIo on xa queue 0, port 4433 (echo)  <-veth->  plain UDP sockets, ping
//!   kernel UDP sockets on 4433 (read by XdpIo)          10.249.0.3/24 (fragments only)
//!   and 4434 (echo)
//! ```
//!
//! The peer first sends a few datagrams with partial checksums (see below), which the AF_XDP
//! side must drop and count. Then it sends datagrams of many sizes to 4433 over IPv4 and IPv6; the AF_XDP socket
//! receives them, echoes them framed by us, and the peer checks every byte. ARP and neighbour
//! discovery must work for that (the program passes them to the kernel), `ping` must be
//! answered by the kernel, UDP to another port must reach the kernel's socket, and a datagram
//! too big for one frame (IP fragments) must reach the kernel's socket on 4433 itself, which
//! the AF_XDP side reads (`recv_kernel`). That datagram comes from a second peer address
//! (10.249.0.3) that sends nothing else, so no MAC is learned for it: the reply must leave
//! through the kernel socket (`tx_kernel`), routed by the kernel. Sends larger than the MTU
//! are refused and counted. After the XDP side exits, the interface has
//! no XDP program left (the bpf_link went with the process).
//!
//! Both sides are this test binary again, started with `ip netns exec` (a thread cannot enter
//! a namespace without unsafe code). Needs root and `ip`; elsewhere it prints why it skips.
//!
//! The peer turns transmit checksum offload off on its veth end first
//! (`dtls_io::disable_tx_checksum_offload`: the `SIOCETHTOOL` ioctl, as `ethtool -K xb tx off`
//! would, without needing the tool).
//! With offload on, a local socket's frames cross the veth with a partial UDP checksum that
//! only a NIC would complete, and the AF_XDP side rightly drops them as `rx_bad_checksum`.

mod common;

use std::io::Read;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use common::netns::{self, ip, is_root};
use dtls_io::{TxBatch, XdpConfig, XdpFilter, XdpIo};

const ROLE: &str = "DTLS_IO_XDP_ROLE";
const TEST: &str = "af_xdp_echoes_over_veth_and_passes_everything_else";
const XDP_V4: Ipv4Addr = Ipv4Addr::new(10, 249, 0, 1);
const PEER_V4: Ipv4Addr = Ipv4Addr::new(10, 249, 0, 2);
/// A second peer address that sends only a fragmented datagram.
const FRAGMENTS_V4: Ipv4Addr = Ipv4Addr::new(10, 249, 0, 3);
/// The fragmented datagram's size (two fragments at MTU 1500).
const FRAGMENTED: usize = 3000;
const XDP_V6: Ipv6Addr = Ipv6Addr::new(0xfd49, 0, 0, 0, 0, 0, 0, 1);
const PEER_V6: Ipv6Addr = Ipv6Addr::new(0xfd49, 0, 0, 0, 0, 0, 0, 2);
const PORT: u16 = 4433;
const OTHER_PORT: u16 = 4434;
const QUIT: &[u8] = b"QUIT";
const BURST: usize = 100;
/// Datagrams the peer sends before it turns checksum offload off.
const PARTIAL_SUMS: u64 = 3;
/// A generous bound for one reply on an idle veth pair (a stuck test, not a slow one).
const REPLY_WAIT: Duration = Duration::from_secs(5);

fn ip_output(args: &[&str]) -> String {
    Command::new("ip")
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

/// The two namespaces and the veth pair; deleted on drop.
struct Namespaces {
    xdp: String,
    peer: String,
}

impl Namespaces {
    fn build() -> Result<Self, String> {
        let tag = format!("dtlsio-af{}", std::process::id());
        let ns = Self {
            xdp: format!("{tag}-a"),
            peer: format!("{tag}-b"),
        };
        for name in [&ns.xdp, &ns.peer] {
            ip(&["netns", "add", name])?;
            ip(&["-n", name, "link", "set", "lo", "up"])?;
        }
        let (a, b) = (ns.xdp.as_str(), ns.peer.as_str());
        ip(&[
            "-n", a, "link", "add", "xa", "type", "veth", "peer", "name", "xb", "netns", b,
        ])?;
        ip(&["-n", a, "addr", "add", "10.249.0.1/24", "dev", "xa"])?;
        ip(&["-n", b, "addr", "add", "10.249.0.2/24", "dev", "xb"])?;
        ip(&["-n", b, "addr", "add", "10.249.0.3/24", "dev", "xb"])?;
        ip(&["-n", a, "addr", "add", "fd49::1/64", "dev", "xa", "nodad"])?;
        ip(&["-n", b, "addr", "add", "fd49::2/64", "dev", "xb", "nodad"])?;
        for (n, dev) in [(a, "xa"), (b, "xb")] {
            ip(&["-n", n, "link", "set", dev, "up"])?;
        }
        Ok(ns)
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for name in [&self.xdp, &self.peer] {
            let _ = Command::new("ip").args(["netns", "del", name]).status();
        }
    }
}

fn spawn_role(ns: &str, role: &str) -> Child {
    netns::spawn_role(ns, TEST, ROLE, role)
}

#[test]
fn af_xdp_echoes_over_veth_and_passes_everything_else() {
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
    let (ready, mut lines) = netns::wait_ready(&mut xdp);
    eprintln!("xdp side: {}", ready.trim());
    assert!(
        ip_output(&["-n", &ns.xdp, "link", "show", "xa"]).contains("prog/xdp"),
        "the program is attached while the socket lives"
    );

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
    assert!(
        !ip_output(&["-n", &ns.xdp, "link", "show", "xa"]).contains("prog/xdp"),
        "the program left the interface with the process"
    );
}

/// Sizes the peer sends: empty, tiny, odd, and up to the largest that fits the 1500 MTU.
fn sizes(max: usize) -> Vec<usize> {
    let mut v = vec![0, 1, 2, 3, 17, 64, 100, 255, 256, 577, 1000, 1200, 1399];
    v.extend([max - 1, max]);
    v
}

fn payload(len: usize, seed: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 + seed * 7 + 1) as u8).collect()
}

fn echo(sock: &UdpSocket, data: &[u8]) {
    let mut buf = [0u8; 65_536];
    sock.send(data).expect("send");
    let n = sock.recv(&mut buf).unwrap_or_else(|e| {
        panic!("no echo of a {}-byte datagram: {e}", data.len());
    });
    assert_eq!(&buf[..n], data, "echo differs for {} bytes", data.len());
}

fn play_peer() {
    // With offload still on, these leave with partial UDP checksums: garbage to the AF_XDP
    // side, which must drop and count them (fixed port and payload: the same bytes each run).
    let sock = UdpSocket::bind((PEER_V4, 40_001)).expect("bind");
    for _ in 0..PARTIAL_SUMS {
        sock.send_to(b"partial checksum", (XDP_V4, PORT))
            .expect("send");
    }
    dtls_io::disable_tx_checksum_offload("xb").expect("turn off tx checksum offload on xb");
    let ping = Command::new("ping")
        .args(["-c", "1", "-W", "5", "10.249.0.1"])
        .output();
    match ping {
        Ok(o) => assert!(
            o.status.success(),
            "ping through the XDP interface failed: {}",
            String::from_utf8_lossy(&o.stdout)
        ),
        Err(e) => eprintln!("ping not run ({e}); ARP is still exercised by the UDP below"),
    }
    let targets = [
        (
            SocketAddr::from((PEER_V4, 0)),
            SocketAddr::from((XDP_V4, PORT)),
            1500 - 28,
        ),
        (
            SocketAddr::from((PEER_V6, 0)),
            SocketAddr::from((XDP_V6, PORT)),
            1500 - 48,
        ),
    ];
    for (local, remote, max) in targets {
        let sock = UdpSocket::bind(local).expect("bind peer socket");
        sock.set_read_timeout(Some(REPLY_WAIT)).expect("timeout");
        sock.connect(remote).expect("connect");
        for (i, len) in sizes(max).into_iter().enumerate() {
            echo(&sock, &payload(len, i));
        }
        // A burst: more datagrams in flight at once than one receive batch takes (64), all
        // must come back in some order (100 small ones fit the peer's default socket buffer).
        let mut want: Vec<Vec<u8>> = (0..BURST).map(|i| payload(100 + i, i)).collect();
        for p in &want {
            sock.send(p).expect("send burst");
        }
        let mut got = Vec::new();
        let mut buf = [0u8; 2048];
        while got.len() < want.len() {
            let n = sock.recv(&mut buf).expect("burst echo");
            got.push(buf[..n].to_vec());
        }
        want.sort();
        got.sort();
        assert_eq!(got, want, "burst over {remote}");
        eprintln!("peer: {remote} echoed byte for byte");
    }
    // Another port reaches the kernel's socket.
    let sock = UdpSocket::bind((PEER_V4, 0)).expect("bind");
    sock.set_read_timeout(Some(REPLY_WAIT)).expect("timeout");
    sock.connect((XDP_V4, OTHER_PORT)).expect("connect");
    echo(&sock, b"to the kernel's socket");
    // IP fragments pass to the kernel, which reassembles them for its socket on our port;
    // the AF_XDP side reads it there and answers with the length, through the kernel socket
    // (it never had a frame from this address, so it knows no MAC for it).
    let sock = UdpSocket::bind((FRAGMENTS_V4, 0)).expect("bind");
    sock.set_read_timeout(Some(REPLY_WAIT)).expect("timeout");
    sock.connect((XDP_V4, PORT)).expect("connect");
    sock.send(&payload(FRAGMENTED, 9)).expect("send");
    let mut buf = [0u8; 64];
    let n = sock
        .recv(&mut buf)
        .expect("an answer to the fragmented datagram");
    assert_eq!(&buf[..n], format!("kernel {FRAGMENTED}").as_bytes());
    sock.send(QUIT).expect("quit");
    eprintln!("peer: done");
}

fn play_xdp() {
    let filter = XdpFilter {
        port: PORT,
        v4: Some(XDP_V4),
        v6: Some(XDP_V6),
    };
    let mut io = XdpIo::new(&XdpConfig::new("xa", filter)).expect("AF_XDP on the veth");
    // Kernel sockets: another port, and our own port (reached only by what the program passes).
    let kernel_echo = |addr: SocketAddr| {
        let s = UdpSocket::bind(addr).expect("bind kernel socket");
        std::thread::spawn(move || {
            let mut buf = [0u8; 65_536];
            while let Ok((n, from)) = s.recv_from(&mut buf) {
                let _ = s.send_to(&buf[..n], from);
            }
        });
    };
    kernel_echo(SocketAddr::from((XDP_V4, OTHER_PORT)));
    let ours = UdpSocket::bind((XDP_V4, PORT)).expect("bind the listen socket");
    ours.set_nonblocking(true).expect("nonblocking");
    io.set_kernel_socket(ours);
    let mut passed = vec![0u8; 65_536];
    println!(
        "READY zero_copy={} copy_reason={:?} mtu={}",
        io.zero_copy(),
        io.copy_reason().map(ToString::to_string),
        io.mtu()
    );
    let mut tx = TxBatch::new(256, 2048, false);
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut oversize_tried = false;
    'outer: while Instant::now() < deadline {
        io.poll_recv(Duration::from_millis(100)).expect("receive");
        let mut first = None;
        for d in io.datagrams() {
            if d.payload == QUIT {
                break 'outer;
            }
            first.get_or_insert(d.source);
            tx.push(d.source, d.payload).expect("room in the batch");
        }
        // What the kernel got for our port (the fragmented datagram): answered with its length.
        while let Some((n, from)) = io.recv_kernel(&mut passed).expect("kernel socket") {
            tx.push(from, format!("kernel {n}").as_bytes())
                .expect("room");
        }
        if let (Some(peer), false) = (first, oversize_tried) {
            // One byte over the MTU: refused and counted, not sent.
            let max = if peer.is_ipv4() { 1500 - 28 } else { 1500 - 48 };
            tx.push(peer, &vec![0u8; max + 1]).expect("room");
            oversize_tried = true;
        }
        io.flush(&mut tx).expect("send");
    }
    let s = io.stats();
    println!("STATS {s:?}");
    assert_eq!(s.tx_too_big, 1, "the oversize send was refused");
    assert_eq!(s.rx_bad_checksum, PARTIAL_SUMS, "{s:?}");
    assert_eq!(s.rx_malformed + s.rx_not_udp + s.rx_not_ours, 0, "{s:?}");
    assert_eq!(
        s.rx_kernel, 1,
        "the fragmented datagram, read from the kernel socket"
    );
    assert_eq!(s.tx_kernel, 1, "its answer, sent through the kernel socket");
    assert_eq!(s.tx_no_neighbour, 0, "{s:?}");
    assert!(s.datagrams_out + 1 >= s.datagrams_in, "{s:?}");
    assert!(s.datagrams_in >= 2 * (15 + BURST as u64), "{s:?}");
}
