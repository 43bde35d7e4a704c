//! The kernel's route and neighbour tables over rtnetlink, for the AF_XDP backend's next hop
//! per peer: `RTM_GETROUTE` for a peer's address (the output interface and the gateway, if
//! any), then `RTM_GETNEIGH` for the next hop's MAC on our interface. One request and one
//! answer each, on a blocking socket with a short timeout, only when a peer is first learned
//! (never per packet). No `unsafe`: socket2's safe calls (an unbound netlink socket sends to
//! the kernel).
//!
//! Messages (`linux/netlink.h`, `linux/rtnetlink.h`, `linux/neighbour.h`), native byte order:
//! `nlmsghdr` (16 bytes), then `rtmsg` (12) or `ndmsg` (12), then attributes (`rtattr`: 2
//! bytes length, 2 bytes type, the value, padded to 4).

use std::io::{self, Read};
use std::net::IpAddr;
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};

const NLMSG_ERROR: u16 = 2;
const NLM_F_REQUEST: u16 = 1;
const RTM_NEWROUTE: u16 = 24;
const RTM_GETROUTE: u16 = 26;
const RTM_NEWNEIGH: u16 = 28;
const RTM_GETNEIGH: u16 = 30;
const RTA_DST: u16 = 1;
const RTA_OIF: u16 = 4;
const RTA_GATEWAY: u16 = 5;
const NDA_DST: u16 = 1;
const NDA_LLADDR: u16 = 2;
/// Neighbour states whose link-layer address can be used (`NUD_REACHABLE | NUD_STALE |
/// NUD_DELAY | NUD_PROBE | NUD_PERMANENT`); `INCOMPLETE`, `FAILED`, `NOARP` and `NONE` not.
const NUD_VALID: u16 = 0x02 | 0x04 | 0x08 | 0x10 | 0x80;
const HEADER: usize = 16;
/// How long one answer may take (the kernel answers at once; a lost one is not retried).
const TIMEOUT: Duration = Duration::from_millis(200);

/// The kernel's route to an address: the interface and, off-link, the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Route {
    /// Output interface index (0 when the answer had none, e.g. an unreachable route).
    pub oif: u32,
    /// The gateway, when the address is not on-link.
    pub gateway: Option<IpAddr>,
}

/// A netlink route socket.
#[derive(Debug)]
pub(crate) struct RouteTable {
    socket: Socket,
    seq: u32,
    buf: Vec<u8>,
}

fn family(ip: IpAddr) -> u8 {
    match ip {
        IpAddr::V4(_) => libc::AF_INET as u8,
        IpAddr::V6(_) => libc::AF_INET6 as u8,
    }
}

fn octets(ip: &IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

fn push_attr(msg: &mut Vec<u8>, kind: u16, value: &[u8]) {
    let len = 4 + value.len();
    msg.extend_from_slice(&(len as u16).to_ne_bytes());
    msg.extend_from_slice(&kind.to_ne_bytes());
    msg.extend_from_slice(value);
    msg.resize(msg.len().next_multiple_of(4), 0);
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// The attributes after a fixed `body`-byte header of a message payload: (type, value).
fn attrs(payload: &[u8], body: usize) -> impl Iterator<Item = (u16, &[u8])> {
    let mut at = body;
    std::iter::from_fn(move || {
        let len = usize::from(u16_at(payload, at)?);
        let kind = u16_at(payload, at + 2)?;
        let value = payload.get(at + 4..at + len.max(4))?;
        at += len.max(4).next_multiple_of(4);
        Some((kind & 0x3fff, value))
    })
}

fn ip_from(value: &[u8]) -> Option<IpAddr> {
    match value.len() {
        4 => Some(IpAddr::from(<[u8; 4]>::try_from(value).ok()?)),
        16 => Some(IpAddr::from(<[u8; 16]>::try_from(value).ok()?)),
        _ => None,
    }
}

/// Parses the payload of an `RTM_NEWROUTE` answer.
pub(crate) fn parse_route(payload: &[u8]) -> Option<Route> {
    let mut route = Route {
        oif: 0,
        gateway: None,
    };
    if payload.len() < 12 {
        return None;
    }
    for (kind, value) in attrs(payload, 12) {
        match kind {
            RTA_OIF => route.oif = u32_at(value, 0)?,
            RTA_GATEWAY => route.gateway = ip_from(value),
            _ => {}
        }
    }
    Some(route)
}

/// Parses the payload of an `RTM_NEWNEIGH` answer: the MAC when the entry is usable.
pub(crate) fn parse_neighbour(payload: &[u8]) -> Option<[u8; 6]> {
    let state = u16_at(payload, 8)?;
    if state & NUD_VALID == 0 {
        return None;
    }
    attrs(payload, 12)
        .find(|(kind, _)| *kind == NDA_LLADDR)
        .and_then(|(_, v)| <[u8; 6]>::try_from(v).ok())
}

impl RouteTable {
    /// Opens a `NETLINK_ROUTE` socket.
    pub(crate) fn open() -> io::Result<Self> {
        let socket = Socket::new(
            Domain::from(libc::AF_NETLINK),
            Type::DGRAM.cloexec(),
            Some(Protocol::from(libc::NETLINK_ROUTE)),
        )?;
        socket.set_read_timeout(Some(TIMEOUT))?;
        Ok(Self {
            socket,
            seq: 0,
            buf: vec![0u8; 8192],
        })
    }

    /// Sends one request of `kind` with `body` and returns the payload of the answer of
    /// `answer` type (`Ok(None)`: the kernel answered with an error such as ENOENT).
    fn request(&mut self, kind: u16, body: &[u8], answer: u16) -> io::Result<Option<Vec<u8>>> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let mut msg = Vec::with_capacity(HEADER + body.len());
        msg.extend_from_slice(&((HEADER + body.len()) as u32).to_ne_bytes());
        msg.extend_from_slice(&kind.to_ne_bytes());
        msg.extend_from_slice(&NLM_F_REQUEST.to_ne_bytes());
        msg.extend_from_slice(&seq.to_ne_bytes());
        msg.extend_from_slice(&0u32.to_ne_bytes());
        msg.extend_from_slice(body);
        self.socket.send(&msg)?;
        loop {
            let n = (&self.socket).read(&mut self.buf)?;
            let mut at = 0;
            while at + HEADER <= n {
                let len = u32_at(&self.buf, at).unwrap_or(0) as usize;
                let typ = u16_at(&self.buf, at + 4).unwrap_or(0);
                let got = u32_at(&self.buf, at + 8).unwrap_or(0);
                if len < HEADER || at + len > n {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "truncated netlink message",
                    ));
                }
                let payload = &self.buf[at + HEADER..at + len];
                if got == seq {
                    if typ == answer {
                        return Ok(Some(payload.to_vec()));
                    }
                    if typ == NLMSG_ERROR {
                        // struct nlmsgerr: a negative errno (0 is an ACK, not asked for).
                        let errno = u32_at(payload, 0).map_or(0, |e| e as i32);
                        return match -errno {
                            0 | libc::ENOENT | libc::ENETUNREACH | libc::EHOSTUNREACH => Ok(None),
                            e => Err(io::Error::from_raw_os_error(e)),
                        };
                    }
                }
                at += len.next_multiple_of(4);
            }
        }
    }

    /// The kernel's route to `dest` (`ip route get DEST`), `None` when there is none.
    pub(crate) fn route(&mut self, dest: IpAddr) -> io::Result<Option<Route>> {
        let bits = if dest.is_ipv4() { 32 } else { 128 };
        let mut body = vec![family(dest), bits, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        push_attr(&mut body, RTA_DST, &octets(&dest));
        Ok(self
            .request(RTM_GETROUTE, &body, RTM_NEWROUTE)?
            .as_deref()
            .and_then(parse_route))
    }

    /// The usable MAC of neighbour `ip` on interface `ifindex` (`ip neigh get IP dev IF`),
    /// `None` when the kernel has no usable entry (not resolved yet, or failed).
    pub(crate) fn neighbour(&mut self, ifindex: u32, ip: IpAddr) -> io::Result<Option<[u8; 6]>> {
        let mut body = vec![family(ip), 0, 0, 0];
        body.extend_from_slice(&(ifindex as i32).to_ne_bytes());
        body.extend_from_slice(&[0, 0, 0, 0]); // state, flags, type
        push_attr(&mut body, NDA_DST, &octets(&ip));
        Ok(self
            .request(RTM_GETNEIGH, &body, RTM_NEWNEIGH)?
            .as_deref()
            .and_then(parse_neighbour))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_and_neighbour_answers_parse() {
        // rtmsg, then RTA_TABLE, RTA_DST, RTA_OIF, RTA_GATEWAY.
        let mut route = vec![2, 32, 0, 0, 254, 0, 0, 1, 0, 0, 0, 0];
        push_attr(&mut route, 15, &254u32.to_ne_bytes());
        push_attr(&mut route, RTA_DST, &[10, 253, 0, 1]);
        push_attr(&mut route, RTA_OIF, &7u32.to_ne_bytes());
        push_attr(&mut route, RTA_GATEWAY, &[10, 252, 0, 3]);
        assert_eq!(
            parse_route(&route),
            Some(Route {
                oif: 7,
                gateway: Some(IpAddr::from([10, 252, 0, 3]))
            })
        );
        let mut on_link = vec![10, 128, 0, 0, 254, 0, 0, 1, 0, 0, 0, 0];
        push_attr(&mut on_link, RTA_OIF, &3u32.to_ne_bytes());
        assert_eq!(
            parse_route(&on_link),
            Some(Route {
                oif: 3,
                gateway: None
            })
        );
        assert_eq!(parse_route(&[0; 4]), None);
        // A truncated attribute ends the walk instead of reading past the payload.
        let mut cut = on_link.clone();
        push_attr(&mut cut, RTA_GATEWAY, &[1, 2, 3, 4]);
        cut.truncate(cut.len() - 2);
        assert_eq!(parse_route(&cut).map(|r| r.gateway), Some(None));

        // ndmsg (state REACHABLE), then NDA_DST, NDA_LLADDR.
        let mac = [2, 0, 0, 0, 0, 0x33];
        let mut neigh = vec![2, 0, 0, 0];
        neigh.extend_from_slice(&7i32.to_ne_bytes());
        neigh.extend_from_slice(&0x02u16.to_ne_bytes());
        neigh.extend_from_slice(&[0, 1]);
        push_attr(&mut neigh, NDA_DST, &[10, 252, 0, 3]);
        push_attr(&mut neigh, NDA_LLADDR, &mac);
        assert_eq!(parse_neighbour(&neigh), Some(mac));
        // INCOMPLETE: no usable address yet.
        neigh[8..10].copy_from_slice(&0x01u16.to_ne_bytes());
        assert_eq!(parse_neighbour(&neigh), None);
    }

    /// Against this host's kernel: the loopback address routes through `lo` without a
    /// gateway, and a missing neighbour is `None`, not an error.
    #[test]
    fn the_kernel_answers_a_route_lookup() {
        let mut t = match RouteTable::open() {
            Ok(t) => t,
            Err(e) => {
                eprintln!("skipped: no netlink route socket here ({e})");
                return;
            }
        };
        let lo = t
            .route(IpAddr::from([127, 0, 0, 1]))
            .expect("route lookup")
            .expect("a route to 127.0.0.1");
        assert!(lo.oif > 0 && lo.gateway.is_none(), "{lo:?}");
        assert_eq!(
            t.neighbour(lo.oif, IpAddr::from([127, 0, 0, 99]))
                .expect("neighbour lookup"),
            None
        );
    }
}
