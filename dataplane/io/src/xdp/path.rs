//! The AF_XDP backend's per-frame work that touches no kernel object: a received frame parsed
//! (lengths and checksums checked) and its sender's MAC learned as the next hop back; a
//! reply's next hop looked up and its frame built (IPv4 header checksum, UDP checksum).
//! [`XdpIo`](super::XdpIo) runs exactly this per datagram, around the rings. It is public
//! (hidden from the docs, not a stable API) so that the instruction-count gate (`dtls-icount`)
//! can measure the AF_XDP packet path without sockets, which valgrind cannot run (no
//! AF_XDP, no bpf()). No `unsafe` here.

use std::collections::HashMap;
use std::collections::hash_map::Entry as Slot;
use std::net::{IpAddr, SocketAddr};

use super::frame::{self, RxDrop};

/// Most peers whose MAC we remember; the table is cleared when full (entries come back with
/// each peer's next datagram).
const MAX_NEIGHBOURS: usize = 1 << 16;

/// Where a reply to a peer goes at the link layer, and from which of our addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NextHop {
    /// The MAC the peer's last frame came from (the peer on-link, else the router).
    pub mac: [u8; 6],
    /// Our address the peer sent to (the source of our replies).
    pub local: IpAddr,
}

/// A received frame that carries a datagram for our port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RxDatagram {
    /// The sender's address and port.
    pub source: SocketAddr,
    /// Our address it was sent to.
    pub local: IpAddr,
    /// Where the UDP payload starts in the frame.
    pub payload_offset: usize,
    /// Its length.
    pub payload_len: usize,
    /// The first frame from this source address (since the table was last cleared): the
    /// caller may look its next hop up in the kernel's route table ([`FramePath::route_via`]).
    pub new_peer: bool,
}

/// Why a received frame carries nothing for us (each a counted drop in [`XdpIo`](super::XdpIo)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RxRefused {
    /// Too short for its headers, bad version, lengths that disagree with the frame.
    Malformed,
    /// IPv4 header or UDP checksum wrong, or an IPv6 UDP checksum of zero.
    BadChecksum,
    /// Not unfragmented UDP over IPv4/IPv6.
    NotUdp,
    /// UDP to another port than ours.
    NotOurs,
}

/// Why a datagram cannot be framed for the TX ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxRefused {
    /// Its IP packet would exceed the interface MTU (EMSGSIZE on the socket backends).
    TooBig,
    /// No frame learned from the destination: the kernel's tables must pick the next hop.
    NoNextHop,
}

/// The next hop back to one peer address.
#[derive(Debug, Clone, Copy)]
struct Neighbour {
    /// The MAC the peer's last frame came from.
    frame_mac: [u8; 6],
    /// The MAC replies go to; `None`: through the kernel socket (the route leaves through
    /// another interface, or its gateway's MAC is not known yet).
    mac: Option<[u8; 6]>,
    /// Our address the peer sent to.
    local: IpAddr,
    /// Set from the route table ([`FramePath::route_via`]): frames no longer change it.
    routed: bool,
}

/// The per-frame state of one AF_XDP queue: our MAC, port and MTU, and the next hop learned
/// per peer address (from its frames, or from the route table).
#[derive(Debug, Clone)]
pub struct FramePath {
    mac: [u8; 6],
    port: u16,
    mtu: usize,
    neighbours: HashMap<IpAddr, Neighbour>,
}

impl FramePath {
    /// The path of an interface with MAC `mac` and MTU `mtu`, serving UDP port `port`.
    pub fn new(mac: [u8; 6], port: u16, mtu: usize) -> Self {
        Self {
            mac,
            port,
            mtu,
            neighbours: HashMap::new(),
        }
    }

    /// Parses `frame` (Ethernet + IPv4/IPv6 + UDP, lengths and checksums checked) and, when it
    /// carries a datagram for our port, learns its sender's MAC as the next hop back to its
    /// source address.
    ///
    /// # Errors
    /// Why the frame carries nothing for us.
    pub fn receive(&mut self, frame: &[u8]) -> Result<RxDatagram, RxRefused> {
        let f = frame::parse(frame).map_err(|e| match e {
            RxDrop::Malformed => RxRefused::Malformed,
            RxDrop::BadChecksum => RxRefused::BadChecksum,
            RxDrop::NotUdp => RxRefused::NotUdp,
        })?;
        if f.destination.port() != self.port {
            return Err(RxRefused::NotOurs);
        }
        let ip = f.source.ip();
        let local = f.destination.ip();
        if self.neighbours.len() >= MAX_NEIGHBOURS && !self.neighbours.contains_key(&ip) {
            self.neighbours.clear();
        }
        let new_peer = match self.neighbours.entry(ip) {
            Slot::Occupied(mut e) => {
                let n = e.get_mut();
                n.local = local;
                n.frame_mac = f.src_mac;
                if !n.routed {
                    n.mac = Some(f.src_mac);
                }
                false
            }
            Slot::Vacant(e) => {
                e.insert(Neighbour {
                    frame_mac: f.src_mac,
                    mac: Some(f.src_mac),
                    local,
                    routed: false,
                });
                true
            }
        };
        Ok(RxDatagram {
            source: f.source,
            local,
            payload_offset: f.payload_offset,
            payload_len: f.payload_len,
            new_peer,
        })
    }

    /// The next hop of a `len`-byte datagram to `dest`, checked against the MTU.
    ///
    /// # Errors
    /// [`TxRefused::TooBig`] over the MTU; [`TxRefused::NoNextHop`] when no frame came from
    /// `dest`'s address.
    pub fn next_hop(&self, dest: &SocketAddr, len: usize) -> Result<NextHop, TxRefused> {
        if frame::header_len(dest) - frame::ETH_LEN + len > self.mtu {
            return Err(TxRefused::TooBig);
        }
        match self.neighbours.get(&dest.ip()) {
            Some(&Neighbour {
                mac: Some(mac),
                local,
                ..
            }) => Ok(NextHop { mac, local }),
            _ => Err(TxRefused::NoNextHop),
        }
    }

    /// Sets the next hop of `peer` from the kernel's route table: replies go to `mac` (the
    /// route's gateway, or the peer on-link), or with `None` through the kernel socket; frames
    /// from the peer no longer change it. True when `mac` is another MAC than the peer's
    /// frames come from (asymmetric routing); false too when `peer` is not in the table.
    pub fn route_via(&mut self, peer: IpAddr, mac: Option<[u8; 6]>) -> bool {
        let Some(n) = self.neighbours.get_mut(&peer) else {
            return false;
        };
        n.mac = mac;
        n.routed = true;
        mac.is_some_and(|m| m != n.frame_mac)
    }

    /// Writes the frame carrying `payload` to `dest` through `hop` into `buf` (from our MAC,
    /// `hop.local` and our port): its length, or `None` when the families of `hop.local` and
    /// `dest` differ or `buf` is too small.
    pub fn build(
        &self,
        buf: &mut [u8],
        hop: NextHop,
        dest: SocketAddr,
        payload: &[u8],
    ) -> Option<usize> {
        let source = SocketAddr::new(hop.local, self.port);
        frame::build(buf, self.mac, hop.mac, source, dest, payload)
    }

    /// Bytes of headers in front of a payload sent to `dest` (Ethernet, IP, UDP).
    pub fn header_len(dest: &SocketAddr) -> usize {
        frame::header_len(dest)
    }

    /// The MTU sends are checked against.
    pub fn mtu(&self) -> usize {
        self.mtu
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OURS: [u8; 6] = [2, 0, 0, 0, 0, 1];
    const PEER: [u8; 6] = [2, 0, 0, 0, 0, 2];

    #[test]
    fn a_received_frame_teaches_the_next_hop_of_the_reply() {
        let ours: SocketAddr = "10.0.0.1:4433".parse().expect("literal");
        let peer: SocketAddr = "10.0.0.2:5000".parse().expect("literal");
        let mut client = FramePath::new(PEER, 5000, 1500);
        let mut server = FramePath::new(OURS, 4433, 1500);
        assert_eq!(
            server.next_hop(&peer, 10),
            Err(TxRefused::NoNextHop),
            "nothing learned yet"
        );
        let mut buf = [0u8; 256];
        let to_server = NextHop {
            mac: OURS,
            local: peer.ip(),
        };
        let n = client
            .build(&mut buf, to_server, ours, b"hello")
            .expect("fits");
        let d = server.receive(&buf[..n]).expect("ours");
        assert!(d.new_peer);
        assert_eq!(d.source, peer);
        assert_eq!(d.local, ours.ip());
        assert_eq!(
            &buf[d.payload_offset..d.payload_offset + d.payload_len],
            b"hello"
        );
        let hop = server.next_hop(&peer, 5).expect("learned");
        assert_eq!(
            hop,
            NextHop {
                mac: PEER,
                local: ours.ip()
            }
        );
        let n = server.build(&mut buf, hop, peer, b"world").expect("fits");
        // The client's path serves port 5000: the reply is for it, from our MAC.
        let back = client.receive(&buf[..n]).expect("reply");
        assert_eq!(back.source, ours);
        assert_eq!(client.next_hop(&ours, 5).map(|h| h.mac), Ok(OURS));
        // Another port is not ours; the MTU bounds the IP packet (20 + 8 + payload).
        assert_eq!(server.receive(&buf[..n]), Err(RxRefused::NotOurs));
        assert_eq!(server.next_hop(&peer, 1472), Ok(hop));
        assert_eq!(server.next_hop(&peer, 1473), Err(TxRefused::TooBig));
        // The route table overrides what frames taught: another router, or the kernel.
        let router = [2, 0, 0, 0, 0, 3];
        assert!(server.route_via(peer.ip(), Some(router)));
        let again = client
            .build(&mut buf, to_server, ours, b"again")
            .expect("fits");
        let d = server.receive(&buf[..again]).expect("ours");
        assert!(!d.new_peer, "known since the first frame");
        assert_eq!(server.next_hop(&peer, 5).map(|h| h.mac), Ok(router));
        assert!(
            !server.route_via(peer.ip(), Some(PEER)),
            "same MAC as its frames"
        );
        assert!(!server.route_via(peer.ip(), None));
        assert_eq!(server.next_hop(&peer, 5), Err(TxRefused::NoNextHop));
        assert!(!server.route_via("10.9.9.9".parse().expect("literal"), Some(router)));
        let n = server.build(&mut buf, hop, peer, b"world").expect("fits");
        let mut bad = buf[..n].to_vec();
        bad[n - 1] ^= 1;
        assert_eq!(client.receive(&bad), Err(RxRefused::BadChecksum));
        assert_eq!(client.receive(&bad[..20]), Err(RxRefused::Malformed));
    }
}
