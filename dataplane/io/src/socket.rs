//! UDP socket creation for shards: SO_REUSEPORT, nonblocking, large buffers, UDP_GRO,
//! packet-info and drop-count cmsgs, IPv4 and IPv6; and transparent upstream sockets, bound
//! to another host's address with IP_TRANSPARENT / IPV6_TRANSPARENT.

use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;

use socket2::{Domain, Protocol, Socket, Type};

use crate::{Error, sys};

/// How to set up a socket; every option past binding is best effort and reported back.
#[derive(Debug, Clone, Copy)]
pub struct SocketConfig {
    /// SO_REUSEPORT, so every shard binds the same address (needed for sharding).
    pub reuse_port: bool,
    /// Requested SO_RCVBUF bytes (SO_RCVBUFFORCE is tried first, needs CAP_NET_ADMIN).
    pub recv_buffer: usize,
    /// Requested SO_SNDBUF bytes (SO_SNDBUFFORCE is tried first).
    pub send_buffer: usize,
    /// Turn on UDP_GRO so the kernel may coalesce equal-size datagrams from one peer.
    pub gro: bool,
    /// For an IPv6 address: accept only IPv6 (`IPV6_V6ONLY`); `false` is dual-stack.
    pub only_v6: bool,
}

impl Default for SocketConfig {
    fn default() -> Self {
        Self {
            reuse_port: true,
            recv_buffer: 8 << 20,
            send_buffer: 8 << 20,
            gro: true,
            only_v6: true,
        }
    }
}

/// A bound, nonblocking UDP socket and what the kernel granted.
#[derive(Debug)]
pub struct BoundSocket {
    /// The socket (nonblocking).
    pub socket: UdpSocket,
    /// The address it is bound to (the real port when 0 was asked).
    pub local_addr: SocketAddr,
    /// SO_RCVBUF as the kernel reports it (it doubles the request for bookkeeping).
    pub recv_buffer: usize,
    /// SO_SNDBUF as the kernel reports it.
    pub send_buffer: usize,
    /// Whether UDP_GRO was accepted.
    pub gro: bool,
    /// Whether SO_RXQ_OVFL (kernel drop counter cmsg) was accepted.
    pub drop_counter: bool,
    /// Whether IP_PKTINFO / IPV6_RECVPKTINFO was accepted.
    pub pktinfo: bool,
}

fn os(op: &'static str) -> impl FnOnce(std::io::Error) -> Error {
    move |source| Error::Socket { op, source }
}

/// Creates, configures and binds a UDP socket for `addr`.
pub fn bind_udp(addr: SocketAddr, cfg: &SocketConfig) -> Result<BoundSocket, Error> {
    let domain = if addr.is_ipv4() {
        Domain::IPV4
    } else {
        Domain::IPV6
    };
    let s = Socket::new(
        domain,
        Type::DGRAM.nonblocking().cloexec(),
        Some(Protocol::UDP),
    )
    .map_err(os("socket"))?;
    if addr.is_ipv6() {
        s.set_only_v6(cfg.only_v6).map_err(os("IPV6_V6ONLY"))?;
    }
    if cfg.reuse_port {
        s.set_reuse_port(true).map_err(os("SO_REUSEPORT"))?;
    }
    let fd = s.as_raw_fd();
    let rcv = i32::try_from(cfg.recv_buffer).unwrap_or(i32::MAX);
    if sys::setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, rcv).is_err() {
        // Best effort: capped by net.core.rmem_max without CAP_NET_ADMIN.
        let _ = s.set_recv_buffer_size(cfg.recv_buffer);
    }
    let snd = i32::try_from(cfg.send_buffer).unwrap_or(i32::MAX);
    if sys::setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_SNDBUFFORCE, snd).is_err() {
        let _ = s.set_send_buffer_size(cfg.send_buffer);
    }
    let gro = cfg.gro && sys::setsockopt_int(fd, libc::SOL_UDP, libc::UDP_GRO, 1).is_ok();
    let drop_counter = sys::setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_RXQ_OVFL, 1).is_ok();
    let pktinfo = if addr.is_ipv4() {
        sys::setsockopt_int(fd, libc::IPPROTO_IP, libc::IP_PKTINFO, 1).is_ok()
    } else {
        sys::setsockopt_int(fd, libc::IPPROTO_IPV6, libc::IPV6_RECVPKTINFO, 1).is_ok()
    };
    s.bind(&addr.into()).map_err(os("bind"))?;
    let local_addr = s
        .local_addr()
        .map_err(os("getsockname"))?
        .as_socket()
        .ok_or(Error::Socket {
            op: "getsockname",
            source: std::io::ErrorKind::InvalidData.into(),
        })?;
    Ok(BoundSocket {
        recv_buffer: s.recv_buffer_size().unwrap_or(0),
        send_buffer: s.send_buffer_size().unwrap_or(0),
        socket: s.into(),
        local_addr,
        gro,
        drop_counter,
        pktinfo,
    })
}

/// Asks for `recv` and `send` bytes of buffer on a socket made elsewhere: SO_RCVBUFFORCE /
/// SO_SNDBUFFORCE first (they need CAP_NET_ADMIN), else the variants capped by
/// `net.core.rmem_max` / `wmem_max`. Best effort: a refusal leaves the kernel default.
pub fn set_buffer_sizes(socket: &UdpSocket, recv: usize, send: usize) {
    let fd = socket.as_raw_fd();
    let rcv = i32::try_from(recv).unwrap_or(i32::MAX);
    if sys::setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, rcv).is_err() {
        let _ = sys::setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_RCVBUF, rcv);
    }
    let snd = i32::try_from(send).unwrap_or(i32::MAX);
    if sys::setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_SNDBUFFORCE, snd).is_err() {
        let _ = sys::setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_SNDBUF, snd);
    }
}

/// SO_RCVBUF and SO_SNDBUF of `socket` as the kernel reports them (getsockopt; Linux
/// reports twice what was granted, socket(7)); 0 where the read fails.
pub fn buffer_sizes(socket: &UdpSocket) -> (usize, usize) {
    let fd = socket.as_raw_fd();
    let read = |name| {
        sys::getsockopt_int(fd, libc::SOL_SOCKET, name)
            .ok()
            .and_then(|v| usize::try_from(v).ok())
            .unwrap_or(0)
    };
    (read(libc::SO_RCVBUF), read(libc::SO_SNDBUF))
}

/// Turns UDP_GRO on for a socket made elsewhere; `false` if the kernel refused.
pub fn enable_gro(socket: &UdpSocket) -> bool {
    sys::setsockopt_int(socket.as_raw_fd(), libc::SOL_UDP, libc::UDP_GRO, 1).is_ok()
}

/// Whether UDP_GRO is on for this socket.
pub fn gro_enabled(socket: &UdpSocket) -> bool {
    sys::getsockopt_int(socket.as_raw_fd(), libc::SOL_UDP, libc::UDP_GRO).is_ok_and(|v| v != 0)
}

/// A nonblocking UDP socket bound to `source`, an address that need not be this host's
/// (IP_TRANSPARENT, or IPV6_TRANSPARENT for IPv6), and connected to `dest`: what `dest`
/// receives on it comes from `source`. An IPv4-mapped IPv6 `source` is taken as its IPv4
/// address when `dest` is IPv4.
///
/// Setting the option needs CAP_NET_RAW or CAP_NET_ADMIN in the socket's network namespace
/// (Linux `do_ip_setsockopt`/`do_ipv6_setsockopt`: EPERM otherwise; see
/// [`check_transparent`]). Replies from `dest` reach this socket only where routing
/// delivers packets for `source` locally (a policy rule into a `local` route table).
///
/// # Errors
/// `socket(2)` failing (EMFILE, ENFILE), the option refused (EPERM), `source` and `dest` of
/// different families (EAFNOSUPPORT), the bind refused (EADDRINUSE: a socket of this host
/// holds that port, e.g. a wildcard bind on it; EADDRNOTAVAIL), or the connect refused.
pub fn connect_transparent(source: SocketAddr, dest: SocketAddr) -> io::Result<UdpSocket> {
    let source = match (source.ip(), dest) {
        (IpAddr::V6(ip), SocketAddr::V4(_)) => match ip.to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), source.port()),
            None => return Err(io::Error::from_raw_os_error(libc::EAFNOSUPPORT)),
        },
        (IpAddr::V4(_), SocketAddr::V6(_)) => {
            return Err(io::Error::from_raw_os_error(libc::EAFNOSUPPORT));
        }
        _ => source,
    };
    let s = transparent_socket(dest.is_ipv4())?;
    s.bind(&source.into())?;
    s.connect(&dest.into())?;
    let socket: UdpSocket = s.into();
    Ok(socket)
}

/// Checks that this process may make transparent sockets of the family of `dest`
/// (IP_TRANSPARENT for IPv4, IPV6_TRANSPARENT for IPv6): `Err` with EPERM when it lacks
/// both CAP_NET_ADMIN and CAP_NET_RAW.
///
/// # Errors
/// The socket could not be made, or the kernel refused the option.
pub fn check_transparent(dest: SocketAddr) -> io::Result<()> {
    transparent_socket(dest.is_ipv4()).map(drop)
}

/// A nonblocking UDP socket with IP_TRANSPARENT (`v4`) or IPV6_ONLY and IPV6_TRANSPARENT.
fn transparent_socket(v4: bool) -> io::Result<Socket> {
    let domain = if v4 { Domain::IPV4 } else { Domain::IPV6 };
    let s = Socket::new(
        domain,
        Type::DGRAM.nonblocking().cloexec(),
        Some(Protocol::UDP),
    )?;
    if v4 {
        s.set_ip_transparent_v4(true)?;
    } else {
        s.set_only_v6(true)?;
        s.set_ip_transparent_v6(true)?;
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transparent_source_and_destination_of_different_families_are_refused() {
        let v4: SocketAddr = "192.0.2.7:4000".parse().expect("address");
        let v6: SocketAddr = "[2001:db8::7]:4000".parse().expect("address");
        for (source, dest) in [(v4, v6), (v6, v4)] {
            let e = connect_transparent(source, dest).expect_err("families differ");
            assert_eq!(
                e.raw_os_error(),
                Some(libc::EAFNOSUPPORT),
                "{source} -> {dest}"
            );
        }
    }
}
