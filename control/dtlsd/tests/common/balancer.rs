//! A 4-tuple-hashing UDP balancer of ours, the front of a two-node fleet on loopback: one
//! front address; each client (source address and port) gets its own upstream socket, so
//! a node sees a distinct source per client, towards the node the hash of the client's
//! 4-tuple ([`pick`]) names; what a node sends to that upstream socket goes back to the
//! client from the front address.
//!
//! Replies are taken from any of the nodes, not only the one the client hashes to: that is
//! what a direct-server-return or anycast front gives (every node answers from the shared
//! service address), and what lets a node that owns a session forwarded to it by another
//! answer the client directly. Anything from elsewhere is dropped.

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::thread::JoinHandle;
use std::time::Duration;

/// The node of `nodes` a client at `client` sending to `front` reaches: FNV-1a over the
/// 4-tuple.
pub fn pick(client: SocketAddr, front: SocketAddr, nodes: usize) -> usize {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |bytes: &[u8]| {
        for b in bytes {
            hash ^= u64::from(*b);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
    };
    for addr in [client, front] {
        match addr.ip() {
            std::net::IpAddr::V4(ip) => eat(&ip.octets()),
            std::net::IpAddr::V6(ip) => eat(&ip.octets()),
        }
        eat(&addr.port().to_be_bytes());
    }
    (hash % nodes as u64) as usize
}

/// The running balancer; stopped on drop.
pub struct Balancer {
    pub front: SocketAddr,
    nodes: usize,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Balancer {
    /// A balancer on a free port of 127.0.0.1 in front of `nodes`.
    pub fn start(nodes: Vec<SocketAddr>) -> Self {
        let front = UdpSocket::bind("127.0.0.1:0").expect("bind the balancer's front");
        front.set_nonblocking(true).expect("nonblocking");
        let addr = front.local_addr().expect("front address");
        let stop = Arc::new(AtomicBool::new(false));
        let count = nodes.len();
        let thread = {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || relay(&front, &nodes, &stop))
        };
        Self {
            front: addr,
            nodes: count,
            stop,
            thread: Some(thread),
        }
    }

    /// The node index a client at `client` reaches.
    pub fn node_of(&self, client: SocketAddr) -> usize {
        pick(client, self.front, self.nodes)
    }
}

impl Drop for Balancer {
    fn drop(&mut self) {
        self.stop.store(true, Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn relay(front: &UdpSocket, nodes: &[SocketAddr], stop: &AtomicBool) {
    let front_addr = front.local_addr().expect("front address");
    // Client → (its upstream socket, the node it hashes to).
    let mut clients: HashMap<SocketAddr, (UdpSocket, SocketAddr)> = HashMap::new();
    let mut buf = vec![0u8; 65_536];
    while !stop.load(Relaxed) {
        let mut busy = false;
        while let Ok((n, client)) = front.recv_from(&mut buf) {
            busy = true;
            let (upstream, node) = clients.entry(client).or_insert_with(|| {
                let s = UdpSocket::bind("127.0.0.1:0").expect("bind an upstream socket");
                s.set_nonblocking(true).expect("nonblocking");
                (s, nodes[pick(client, front_addr, nodes.len())])
            });
            let _ = upstream.send_to(&buf[..n], *node);
        }
        for (client, (upstream, _)) in &clients {
            while let Ok((n, from)) = upstream.recv_from(&mut buf) {
                busy = true;
                if nodes.contains(&from) {
                    let _ = front.send_to(&buf[..n], client);
                }
            }
        }
        if !busy {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}
