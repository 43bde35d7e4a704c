//! Byte-level encoding of the kernel structures we exchange: socket addresses and control
//! messages (cmsgs). Everything here is safe code over byte slices; bounds are checked before
//! every read, so malformed kernel output can at worst be ignored, never panic.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

/// Length of `struct sockaddr_in`.
pub(crate) const SOCKADDR_IN_LEN: usize = 16;
/// Length of `struct sockaddr_in6`; large enough for either family.
pub(crate) const SOCKADDR_IN6_LEN: usize = 28;

/// Storage for an encoded socket address, aligned like `sockaddr_storage`'s members.
#[derive(Debug, Clone, Copy)]
#[repr(C, align(8))]
pub(crate) struct SockAddrBuf(pub [u8; SOCKADDR_IN6_LEN]);

impl SockAddrBuf {
    pub(crate) const fn zeroed() -> Self {
        Self([0; SOCKADDR_IN6_LEN])
    }

    /// Writes `addr` as a `sockaddr_in`/`sockaddr_in6` and returns its length.
    pub(crate) fn encode(&mut self, addr: &SocketAddr) -> usize {
        let b = &mut self.0;
        *b = [0; SOCKADDR_IN6_LEN];
        match addr {
            SocketAddr::V4(a) => {
                b[0..2].copy_from_slice(&(libc::AF_INET as u16).to_ne_bytes());
                b[2..4].copy_from_slice(&a.port().to_be_bytes());
                b[4..8].copy_from_slice(&a.ip().octets());
                SOCKADDR_IN_LEN
            }
            SocketAddr::V6(a) => {
                b[0..2].copy_from_slice(&(libc::AF_INET6 as u16).to_ne_bytes());
                b[2..4].copy_from_slice(&a.port().to_be_bytes());
                b[4..8].copy_from_slice(&a.flowinfo().to_be_bytes());
                b[8..24].copy_from_slice(&a.ip().octets());
                b[24..28].copy_from_slice(&a.scope_id().to_ne_bytes());
                SOCKADDR_IN6_LEN
            }
        }
    }
}

fn array<const N: usize>(b: &[u8], at: usize) -> Option<[u8; N]> {
    b.get(at..at.checked_add(N)?)?.try_into().ok()
}

/// Parses a `sockaddr_in`/`sockaddr_in6` the kernel wrote. `None` for other families or a
/// short buffer.
pub(crate) fn decode_sockaddr(b: &[u8]) -> Option<SocketAddr> {
    let family = i32::from(u16::from_ne_bytes(array(b, 0)?));
    let port = u16::from_be_bytes(array(b, 2)?);
    if family == libc::AF_INET && b.len() >= SOCKADDR_IN_LEN {
        let ip = Ipv4Addr::from(array::<4>(b, 4)?);
        Some(SocketAddr::V4(SocketAddrV4::new(ip, port)))
    } else if family == libc::AF_INET6 && b.len() >= SOCKADDR_IN6_LEN {
        let flow = u32::from_be_bytes(array(b, 4)?);
        let ip = Ipv6Addr::from(array::<16>(b, 8)?);
        let scope = u32::from_ne_bytes(array(b, 24)?);
        Some(SocketAddr::V6(SocketAddrV6::new(ip, port, flow, scope)))
    } else {
        None
    }
}

const fn cmsg_align(n: usize) -> usize {
    let a = std::mem::size_of::<usize>();
    (n + a - 1) & !(a - 1)
}

/// `CMSG_ALIGN(sizeof(struct cmsghdr))`: `size_t cmsg_len; int cmsg_level; int cmsg_type;`.
const CMSG_HDR: usize = cmsg_align(std::mem::size_of::<usize>() + 8);

/// `CMSG_SPACE(n)`.
pub(crate) const fn cmsg_space(n: usize) -> usize {
    CMSG_HDR + cmsg_align(n)
}

/// Control buffer for receives: room for UDP_GRO, IP(V6)_PKTINFO and SO_RXQ_OVFL.
pub(crate) const RECV_CMSG_LEN: usize = 128;
/// Control buffer for sends: one UDP_SEGMENT cmsg.
pub(crate) const SEND_CMSG_LEN: usize = cmsg_space(std::mem::size_of::<u16>());

/// Aligned control-message storage handed to the kernel.
#[derive(Debug, Clone, Copy)]
#[repr(C, align(8))]
pub(crate) struct CmsgBuf<const N: usize>(pub [u8; N]);

impl<const N: usize> CmsgBuf<N> {
    pub(crate) const fn zeroed() -> Self {
        Self([0; N])
    }
}

impl CmsgBuf<SEND_CMSG_LEN> {
    /// Writes one `SOL_UDP / UDP_SEGMENT` cmsg carrying `segment_size`; returns its length.
    pub(crate) fn encode_udp_segment(&mut self, segment_size: u16) -> usize {
        let b = &mut self.0;
        *b = [0; SEND_CMSG_LEN];
        let len = CMSG_HDR + std::mem::size_of::<u16>();
        let w = std::mem::size_of::<usize>();
        b[..w].copy_from_slice(&len.to_ne_bytes());
        b[w..w + 4].copy_from_slice(&libc::SOL_UDP.to_ne_bytes());
        b[w + 4..w + 8].copy_from_slice(&libc::UDP_SEGMENT.to_ne_bytes());
        b[CMSG_HDR..CMSG_HDR + 2].copy_from_slice(&segment_size.to_ne_bytes());
        SEND_CMSG_LEN
    }
}

/// What the receive cmsgs told us about one received message.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct RecvCmsgs {
    /// UDP_GRO: size of each coalesced segment (the last may be shorter).
    pub gro_segment_size: Option<usize>,
    /// IP_PKTINFO / IPV6_PKTINFO: the local (destination) address of the datagram.
    pub local: Option<IpAddr>,
    /// SO_RXQ_OVFL: the socket's cumulative drop counter.
    pub kernel_drops: Option<u32>,
}

/// Walks a control buffer the kernel filled (`CMSG_FIRSTHDR`/`CMSG_NXTHDR` done on bytes).
pub(crate) fn decode_recv_cmsgs(control: &[u8]) -> RecvCmsgs {
    let mut out = RecvCmsgs::default();
    let w = std::mem::size_of::<usize>();
    let mut at = 0usize;
    while let Some(len_bytes) = array::<{ std::mem::size_of::<usize>() }>(control, at) {
        let len = usize::from_ne_bytes(len_bytes);
        let (Some(level), Some(kind)) =
            (array::<4>(control, at + w), array::<4>(control, at + w + 4))
        else {
            break;
        };
        let (level, kind) = (i32::from_ne_bytes(level), i32::from_ne_bytes(kind));
        if len < CMSG_HDR {
            break;
        }
        let Some(data) = control.get(at + CMSG_HDR..at.saturating_add(len)) else {
            break;
        };
        match (level, kind) {
            (libc::SOL_UDP, libc::UDP_GRO) => {
                if let Some(v) = array::<4>(data, 0) {
                    let size = i32::from_ne_bytes(v);
                    out.gro_segment_size = usize::try_from(size).ok().filter(|s| *s > 0);
                }
            }
            (libc::IPPROTO_IP, libc::IP_PKTINFO) => {
                // struct in_pktinfo { int ipi_ifindex; in_addr ipi_spec_dst; in_addr ipi_addr; }
                if let Some(a) = array::<4>(data, 8) {
                    out.local = Some(IpAddr::V4(Ipv4Addr::from(a)));
                }
            }
            (libc::IPPROTO_IPV6, libc::IPV6_PKTINFO) => {
                // struct in6_pktinfo { in6_addr ipi6_addr; unsigned ipi6_ifindex; }
                if let Some(a) = array::<16>(data, 0) {
                    out.local = Some(IpAddr::V6(Ipv6Addr::from(a)));
                }
            }
            (libc::SOL_SOCKET, libc::SO_RXQ_OVFL) => {
                if let Some(v) = array::<4>(data, 0) {
                    out.kernel_drops = Some(u32::from_ne_bytes(v));
                }
            }
            _ => {}
        }
        at = match at.checked_add(cmsg_align(len)) {
            Some(next) => next,
            None => break,
        };
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sockaddr_round_trip_v4_and_v6() {
        let mut buf = SockAddrBuf::zeroed();
        for addr in [
            "127.0.0.1:4433".parse::<SocketAddr>().expect("literal"),
            "[::1]:65535".parse().expect("literal"),
            SocketAddr::V6(SocketAddrV6::new(Ipv6Addr::LOCALHOST, 9, 0x12345, 3)),
        ] {
            let n = buf.encode(&addr);
            assert_eq!(decode_sockaddr(&buf.0[..n]), Some(addr));
        }
        assert_eq!(decode_sockaddr(&buf.0[..10]), None);
        assert_eq!(decode_sockaddr(&[0u8; 28]), None);
    }

    #[test]
    fn udp_segment_cmsg_decodes_as_written() {
        let mut c = CmsgBuf::<SEND_CMSG_LEN>::zeroed();
        let n = c.encode_udp_segment(1200);
        assert_eq!(n, SEND_CMSG_LEN);
        let w = std::mem::size_of::<usize>();
        assert_eq!(
            usize::from_ne_bytes(c.0[..w].try_into().expect("usize width")),
            CMSG_HDR + 2
        );
        assert_eq!(u16::from_ne_bytes([c.0[CMSG_HDR], c.0[CMSG_HDR + 1]]), 1200);
    }

    #[test]
    fn recv_cmsgs_parse_and_garbage_is_ignored() {
        let mut b = [0u8; RECV_CMSG_LEN];
        let w = std::mem::size_of::<usize>();
        let put = |b: &mut [u8], at: usize, level: i32, kind: i32, data: &[u8]| -> usize {
            let len = CMSG_HDR + data.len();
            b[at..at + w].copy_from_slice(&len.to_ne_bytes());
            b[at + w..at + w + 4].copy_from_slice(&level.to_ne_bytes());
            b[at + w + 4..at + w + 8].copy_from_slice(&kind.to_ne_bytes());
            b[at + CMSG_HDR..at + len].copy_from_slice(data);
            at + cmsg_align(len)
        };
        let mut at = put(
            &mut b,
            0,
            libc::SOL_UDP,
            libc::UDP_GRO,
            &1350i32.to_ne_bytes(),
        );
        let mut pkt = [0u8; 12];
        pkt[8..12].copy_from_slice(&[127, 0, 0, 2]);
        at = put(&mut b, at, libc::IPPROTO_IP, libc::IP_PKTINFO, &pkt);
        at = put(
            &mut b,
            at,
            libc::SOL_SOCKET,
            libc::SO_RXQ_OVFL,
            &7u32.to_ne_bytes(),
        );
        let c = decode_recv_cmsgs(&b[..at]);
        assert_eq!(c.gro_segment_size, Some(1350));
        assert_eq!(c.local, Some(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2))));
        assert_eq!(c.kernel_drops, Some(7));
        // A length field pointing past the buffer, a zero length, and random bytes: no panic.
        let mut bad = [0xffu8; 64];
        assert_eq!(decode_recv_cmsgs(&bad), RecvCmsgs::default());
        bad[..w].copy_from_slice(&0usize.to_ne_bytes());
        assert_eq!(decode_recv_cmsgs(&bad), RecvCmsgs::default());
        for seed in 0u8..=255 {
            let junk: Vec<u8> = (0..97u8).map(|i| i.wrapping_mul(seed) ^ seed).collect();
            let _ = decode_recv_cmsgs(&junk);
        }
    }
}
