//! Node-to-node forwarding (`[[nodes]]` listing other nodes, `forward_secrets` in the key
//! store): a record whose connection ID names another node of the fleet reached this one
//! (the front hashed the client's new address here); it goes to the owner with the
//! client's address inside `dataplane::forward`'s authenticated encapsulation, and the
//! owner handles it as if it had come from the client.
//!
//! Two threads around one UDP socket bound to this node's `[[nodes]]` `address`:
//!
//! - `dtlsd-fwd-out` takes what the shards queued ([`NodeForward`]: the shards read the
//!   node id from the CID, `dtls_shard::Handoffs::with_nodes`), seals it with the current
//!   forwarding key and sends it to the named node's address. A node id the `[[nodes]]`
//!   list does not have is dropped (`unknown_node`).
//! - `dtlsd-fwd-in` receives forwarded packets, checks them (HMAC under the current or the
//!   previous key, time within 2 s, the sending node's replay window: `dataplane::forward`)
//!   and pushes the datagram, with the client's address it carries, onto the hand-off queue
//!   of the shard the CID names, which opens it like a datagram from that address: the
//!   session moves there after an authenticated, newest record, behind the RFC 9853
//!   return-routability check, exactly as for a client that reached this node itself.
//!   Fail closed: a packet that does not authenticate is dropped and counted (`auth`) and
//!   nothing in it is looked at; one whose CID names no shard of this node is dropped
//!   (`not_ours`), never forwarded on, so two nodes cannot bounce a packet.
//!
//! The owner answers the client directly from its listen socket (see `docs/scale-out.md`
//! for why, and what the front must do for that to reach a client behind a NAT).
//!
//! Keys rotate on SIGHUP ([`NodeForwarder::set_keys`]): sending switches to the new current
//! key, receiving accepts current and previous, so a fleet rotates one node at a time
//! without losing a packet.

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use dataplane::cid::ShardField;
use dataplane::forward::{ForwardKey, ForwardReceiver, Forwarder, OVERHEAD, Rejected};
use dtls_shard::{Handoff, NodeForward, ShardQueues};

use crate::config::cluster::Node;

/// Datagrams the shards may queue for other nodes at once (all shards together).
pub const FORWARD_QUEUE: usize = 4096;
/// How often the threads look at the stop flag.
const STOP_POLL: Duration = Duration::from_millis(100);
/// Largest packet received: a datagram of up to 64 KiB and the encapsulation.
const MAX_PACKET: usize = 65_535 + OVERHEAD;
/// First octet of a DTLS 1.2 `tls12_cid` record (RFC 9146), whose CID starts at octet 11.
const TLS12_CID: u8 = 25;

/// What the forwarder counts (`dtlsd_forwarded_*`, `dtlsd_forward_drops_total`).
#[derive(Debug, Default)]
pub struct ForwardCounters {
    /// Datagrams sent to another node.
    pub out: AtomicU64,
    /// Forwarded datagrams that authenticated and went to their owning shard.
    pub in_: AtomicU64,
    /// Received packets whose tag verified under neither key.
    pub drop_auth: AtomicU64,
    /// Received packets that are not our encapsulation.
    pub drop_malformed: AtomicU64,
    /// Received packets whose time is more than 2 s from ours.
    pub drop_stale: AtomicU64,
    /// Received packets whose sequence number was seen or is too old.
    pub drop_replay: AtomicU64,
    /// Datagrams whose CID names a node the `[[nodes]]` list does not have.
    pub drop_unknown_node: AtomicU64,
    /// Authenticated datagrams whose CID names no shard of this node.
    pub drop_not_ours: AtomicU64,
    /// Authenticated datagrams dropped because their shard's hand-off queue was full.
    pub drop_handoff_full: AtomicU64,
    /// Sends to another node that failed.
    pub drop_send_error: AtomicU64,
}

/// A reading of [`ForwardCounters`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ForwardStats {
    /// See [`ForwardCounters`].
    pub out: u64,
    /// See [`ForwardCounters`].
    pub in_: u64,
    /// Drops by reason, in [`DROP_REASONS`] order.
    pub drops: [u64; 8],
}

/// The `reason` labels of `dtlsd_forward_drops_total`.
pub const DROP_REASONS: [&str; 8] = [
    "auth",
    "malformed",
    "stale",
    "replay",
    "unknown_node",
    "not_ours",
    "handoff_full",
    "send_error",
];

impl ForwardCounters {
    /// The counters now.
    pub fn snapshot(&self) -> ForwardStats {
        ForwardStats {
            out: self.out.load(Relaxed),
            in_: self.in_.load(Relaxed),
            drops: [
                &self.drop_auth,
                &self.drop_malformed,
                &self.drop_stale,
                &self.drop_replay,
                &self.drop_unknown_node,
                &self.drop_not_ours,
                &self.drop_handoff_full,
                &self.drop_send_error,
            ]
            .map(|c| c.load(Relaxed)),
        }
    }
}

/// The forwarding socket and what start-up decided, before the shards run.
#[derive(Debug)]
pub struct ForwardSetup {
    socket: UdpSocket,
    own: u8,
    nodes: Vec<Node>,
    field: ShardField,
    /// What the shards' hand-offs push to.
    pub queue: mpsc::SyncSender<NodeForward>,
    outgoing: mpsc::Receiver<NodeForward>,
    /// Shared with the metrics endpoint.
    pub counters: Arc<ForwardCounters>,
}

impl ForwardSetup {
    /// Binds this node's forwarding address (`nodes[i].address` of node `own`).
    ///
    /// # Errors
    /// The node is not listed, or its address cannot be bound (the message names the key).
    pub fn bind(own: u8, nodes: &[Node], field: ShardField) -> anyhow::Result<Self> {
        let (index, node) = nodes
            .iter()
            .enumerate()
            .find(|(_, n)| n.id == own)
            .with_context(|| format!("node {own} is not in [[nodes]]"))?;
        let socket = UdpSocket::bind(node.address).with_context(|| {
            format!(
                "nodes[{index}].address: cannot bind {} to take records other nodes forward",
                node.address
            )
        })?;
        socket
            .set_read_timeout(Some(STOP_POLL))
            .context("forwarding socket")?;
        let (queue, outgoing) = mpsc::sync_channel(FORWARD_QUEUE);
        Ok(Self {
            socket,
            own,
            nodes: nodes.to_vec(),
            field,
            queue,
            outgoing,
            counters: Arc::default(),
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.socket.local_addr()
    }
}

/// The running forwarder.
#[derive(Debug)]
pub struct NodeForwarder {
    threads: Vec<JoinHandle<()>>,
    counters: Arc<ForwardCounters>,
    stop: Arc<AtomicBool>,
    sender: Arc<Mutex<Forwarder>>,
    receiver: Arc<Mutex<ForwardReceiver>>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl NodeForwarder {
    /// Starts both threads: sending what `setup`'s queue receives under `send_key`,
    /// receiving under `receive_keys` (current, previous) into the `shards`' hand-off
    /// queues.
    ///
    /// # Errors
    /// A thread or the socket's clone could not be made.
    pub fn start(
        setup: ForwardSetup,
        send_key: ForwardKey,
        receive_keys: (ForwardKey, Option<ForwardKey>),
        shards: Vec<Arc<ShardQueues>>,
    ) -> anyhow::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let sender = Arc::new(Mutex::new(Forwarder::new(setup.own, send_key, now_ms())));
        let receiver = Arc::new(Mutex::new(ForwardReceiver::new(
            receive_keys.0,
            receive_keys.1,
        )));
        let out_socket = setup.socket.try_clone().context("forwarding socket")?;
        let counters = Arc::clone(&setup.counters);
        let setup_counters = Arc::clone(&setup.counters);
        let nodes = setup.nodes;
        let outgoing = setup.outgoing;
        let out = {
            let stop = Arc::clone(&stop);
            let sender = Arc::clone(&sender);
            let counters = Arc::clone(&counters);
            std::thread::Builder::new()
                .name("dtlsd-fwd-out".into())
                .spawn(move || send_loop(&out_socket, &outgoing, &nodes, &sender, &counters, &stop))
                .context("spawning the forwarding thread")?
        };
        let socket = setup.socket;
        let field = setup.field;
        let own = setup.own;
        let inbound = {
            let stop = Arc::clone(&stop);
            let receiver = Arc::clone(&receiver);
            std::thread::Builder::new()
                .name("dtlsd-fwd-in".into())
                .spawn(move || {
                    receive_loop(&socket, own, field, &shards, &receiver, &counters, &stop);
                })
        };
        let inbound = match inbound {
            Ok(handle) => handle,
            Err(e) => {
                stop.store(true, Relaxed);
                let _ = out.join();
                return Err(e).context("spawning the forwarding thread");
            }
        };
        Ok(Self {
            counters: setup_counters,
            threads: vec![out, inbound],
            stop,
            sender,
            receiver,
        })
    }

    /// A key store rotation: send under `send_key`, accept `receive_keys`.
    pub fn set_keys(&self, send_key: ForwardKey, receive_keys: (ForwardKey, Option<ForwardKey>)) {
        self.sender
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .set_key(send_key);
        self.receiver
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .set_keys(receive_keys.0, receive_keys.1);
    }

    /// Its counters now.
    pub fn stats(&self) -> ForwardStats {
        self.counters.snapshot()
    }

    /// Stops both threads.
    pub fn stop(self) {
        self.stop.store(true, Relaxed);
        for t in self.threads {
            let _ = t.join();
        }
    }
}

fn send_loop(
    socket: &UdpSocket,
    outgoing: &mpsc::Receiver<NodeForward>,
    nodes: &[Node],
    sender: &Mutex<Forwarder>,
    counters: &ForwardCounters,
    stop: &AtomicBool,
) {
    let mut packet = Vec::with_capacity(MAX_PACKET);
    while !stop.load(Relaxed) {
        let item = match outgoing.recv_timeout(STOP_POLL) {
            Ok(item) => item,
            Err(mpsc::RecvTimeoutError::Timeout) => continue,
            // Every shard is gone: the daemon is stopping.
            Err(mpsc::RecvTimeoutError::Disconnected) => return,
        };
        let Some(node) = nodes.iter().find(|n| u32::from(n.id) == item.node) else {
            counters.drop_unknown_node.fetch_add(1, Relaxed);
            continue;
        };
        sender
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .encapsulate(now_ms(), item.source, &item.datagram, &mut packet);
        match socket.send_to(&packet, node.address) {
            Ok(_) => counters.out.fetch_add(1, Relaxed),
            Err(e) => {
                tracing::debug!(node = node.id, error = %e, "forwarding send failed");
                counters.drop_send_error.fetch_add(1, Relaxed)
            }
        };
    }
}

/// The shard a datagram's first record's CID names: a `tls12_cid` record's CID at octet
/// 11, a DTLS 1.3 unified header's with the C bit at octet 1.
fn shard_of(field: &ShardField, own: u8, datagram: &[u8]) -> Option<u16> {
    let first = *datagram.first()?;
    let offset = if first == TLS12_CID {
        11
    } else if first & 0xe0 == 0x20 && first & 0x10 != 0 {
        1
    } else {
        return None;
    };
    let cid = datagram.get(offset..)?;
    if field.node_of(cid) != Some(u32::from(own)) {
        return None;
    }
    field.shard_of(cid)
}

fn receive_loop(
    socket: &UdpSocket,
    own: u8,
    field: ShardField,
    shards: &[Arc<ShardQueues>],
    receiver: &Mutex<ForwardReceiver>,
    counters: &ForwardCounters,
    stop: &AtomicBool,
) {
    let mut buf = vec![0u8; MAX_PACKET];
    while !stop.load(Relaxed) {
        let n = match socket.recv_from(&mut buf) {
            Ok((n, _)) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock
                        | std::io::ErrorKind::TimedOut
                        | std::io::ErrorKind::Interrupted
                ) =>
            {
                continue;
            }
            Err(e) => {
                tracing::debug!(error = %e, "forwarding receive failed");
                std::thread::sleep(STOP_POLL);
                continue;
            }
        };
        let mut receiver = receiver.lock().unwrap_or_else(|e| e.into_inner());
        let forwarded = match receiver.open(now_ms(), &buf[..n]) {
            Ok(forwarded) => forwarded,
            Err(reason) => {
                let counter = match reason {
                    Rejected::BadTag => &counters.drop_auth,
                    Rejected::Malformed => &counters.drop_malformed,
                    Rejected::Stale => &counters.drop_stale,
                    Rejected::Replayed => &counters.drop_replay,
                };
                counter.fetch_add(1, Relaxed);
                continue;
            }
        };
        let Some(shard) =
            shard_of(&field, own, forwarded.datagram).and_then(|s| shards.get(usize::from(s)))
        else {
            counters.drop_not_ours.fetch_add(1, Relaxed);
            continue;
        };
        let handoff = Handoff {
            source: forwarded.source,
            datagram: forwarded.datagram.to_vec(),
        };
        drop(receiver);
        if shard.handoffs().push(handoff).is_ok() {
            counters.in_.fetch_add(1, Relaxed);
        } else {
            counters.drop_handoff_full.fetch_add(1, Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dataplane::cid::{ConfigId, ServerIdLayout};

    #[test]
    fn shard_of_reads_both_versions_and_only_this_nodes_cids() {
        let layout = ServerIdLayout::new(2, 8, 8).expect("layout");
        let field = ShardField::plaintext_with_length(ConfigId::new(0).expect("id"), layout, 8)
            .expect("fits");
        let cid = |node: u8, shard: u8| [7, node, shard, 1, 2, 3, 4, 5];
        let mut v12 = vec![TLS12_CID, 0xfe, 0xfd, 0, 1, 0, 0, 0, 0, 0, 1];
        v12.extend_from_slice(&cid(3, 1));
        assert_eq!(shard_of(&field, 3, &v12), Some(1));
        assert_eq!(shard_of(&field, 4, &v12), None, "another node's");
        let mut v13 = vec![0x3f];
        v13.extend_from_slice(&cid(3, 2));
        assert_eq!(shard_of(&field, 3, &v13), Some(2));
        v13[0] = 0x3f & !0x10;
        assert_eq!(shard_of(&field, 3, &v13), None, "no C bit");
        assert_eq!(shard_of(&field, 3, &[22, 0xfe, 0xfd]), None, "a handshake");
        assert_eq!(shard_of(&field, 3, &[]), None);
    }
}
