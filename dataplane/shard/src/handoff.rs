//! Hand-off between shards: a record under one of our connection IDs that reached a shard
//! other than the one its CID names is passed to that shard through its hand-off queue.
//!
//! SO_REUSEPORT spreads datagrams by a hash of the 4-tuple, so after a NAT rebinding a
//! client's records may reach a shard that does not hold its session. The reuseport
//! steering program (`dtls_io::SteeringProgram`) sends them to their owner in the kernel;
//! this is what catches the rest: steering off, a reuseport group whose order changed
//! (another process sharing the port, a socket closed), an older kernel. The receiving
//! shard finds no session under the CID, reads the owner's shard id from it
//! ([`ShardField`]) and pushes a copy of the datagram onto the owner's [`HandoffQueue`];
//! the owner opens it like one it received itself, so the session moves (RFC 9146 §6) and
//! answers from the same listen port.
//!
//! Counted, never dropped silently: each hand-off in the sender's `cid_handoffs`, a full
//! queue in its `drop_handoff_full`. A datagram handed off is never handed on (its owner
//! counts it as any unknown CID), so two shards cannot bounce one between them.
//!
//! The copy is an allocation on a path that steering keeps empty; the queue is bounded in
//! datagrams ([`HANDOFF_CAPACITY`]), each at most one record's worth of bytes.
//!
//! Across nodes ([`Handoffs::with_nodes`]): a CID naming another node of the fleet (its
//! node id, [`ShardField::node_of`]) is not this process's at all; a copy goes onto the
//! node forwarder's bounded queue ([`NodeForward`], counted in `cid_forwards`, a full queue
//! in `drop_forward_full`), and the daemon's forwarder sends it to that node, which hands
//! it to its owning shard's [`HandoffQueue`] as if it had arrived there.

use std::net::SocketAddr;
use std::sync::{Arc, mpsc};

use crossbeam_queue::ArrayQueue;
use dataplane::cid::ShardField;

use crate::queue::ShardQueues;

/// Datagrams a shard's hand-off queue holds at once.
pub const HANDOFF_CAPACITY: usize = 1024;

/// A datagram another shard received for a session this one owns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handoff {
    /// Where it came from (the peer's new address, maybe).
    pub source: SocketAddr,
    /// The datagram as received.
    pub datagram: Vec<u8>,
}

/// One shard's incoming hand-offs: many producers (the other shards), one consumer.
#[derive(Debug)]
pub struct HandoffQueue {
    queue: ArrayQueue<Handoff>,
}

impl HandoffQueue {
    /// A queue of `capacity` datagrams (at least 1), allocated now.
    pub fn new(capacity: usize) -> Self {
        Self {
            queue: ArrayQueue::new(capacity.max(1)),
        }
    }

    /// Queues a datagram for the owner; a full queue hands it back.
    pub fn push(&self, handoff: Handoff) -> Result<(), Handoff> {
        self.queue.push(handoff)
    }

    /// The next datagram handed to this shard, if any.
    pub fn pop(&self) -> Option<Handoff> {
        self.queue.pop()
    }

    /// Whether datagrams are waiting.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }
}

impl Default for HandoffQueue {
    fn default() -> Self {
        Self::new(HANDOFF_CAPACITY)
    }
}

/// A datagram under a CID that names another node, on its way to the daemon's node
/// forwarder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeForward {
    /// The node the CID names.
    pub node: u32,
    /// Where the datagram came from (the client's address as this node saw it).
    pub source: SocketAddr,
    /// The datagram as received.
    pub datagram: Vec<u8>,
}

/// This node's id and the forwarder's queue.
#[derive(Debug, Clone)]
struct ToNodes {
    own: u32,
    queue: mpsc::SyncSender<NodeForward>,
}

/// What a shard needs to hand records to their owners: where the shard id sits in our CIDs,
/// its own id, every shard's queues in shard order, and (in a fleet) the way to other nodes.
#[derive(Debug, Clone)]
pub struct Handoffs {
    field: ShardField,
    shard: u16,
    shards: Vec<Arc<ShardQueues>>,
    nodes: Option<ToNodes>,
}

/// Where a datagram goes after [`Handoffs::owner`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Owner {
    /// Not a CID of ours that names another shard of this process: handle it here.
    Here,
    /// The shard with this index owns it.
    Shard(usize),
    /// Another node owns it.
    Node(u32),
}

impl Handoffs {
    /// Shard `shard` of `shards` (every shard's queues, indexed by shard id), whose CIDs
    /// carry their shard id where `field` says.
    pub fn new(field: ShardField, shard: u16, shards: Vec<Arc<ShardQueues>>) -> Self {
        Self {
            field,
            shard,
            shards,
            nodes: None,
        }
    }

    /// Records under CIDs that name a node other than `own` go onto `queue` for the
    /// daemon's node forwarder (see the module docs); a full queue drops them, counted.
    #[must_use]
    pub fn with_nodes(mut self, own: u32, queue: mpsc::SyncSender<NodeForward>) -> Self {
        self.nodes = Some(ToNodes { own, queue });
        self
    }

    /// Who owns the CID at the start of `cid` (followed by the rest of the record).
    pub(crate) fn owner(&self, cid: &[u8]) -> Owner {
        if let Some(nodes) = &self.nodes
            && let Some(node) = self.field.node_of(cid)
            && node != nodes.own
        {
            return Owner::Node(node);
        }
        match self.field.shard_of(cid) {
            Some(shard) if shard != self.shard && usize::from(shard) < self.shards.len() => {
                Owner::Shard(usize::from(shard))
            }
            _ => Owner::Here,
        }
    }

    /// Pushes a copy of `datagram` from `source` onto shard `shard`'s queue; `false` when it
    /// is full.
    pub(crate) fn push(&self, shard: usize, source: SocketAddr, datagram: &[u8]) -> bool {
        self.shards[shard]
            .handoffs()
            .push(Handoff {
                source,
                datagram: datagram.to_vec(),
            })
            .is_ok()
    }

    /// Queues a copy of `datagram` from `source` for node `node`; `false` when the
    /// forwarder's queue is full (or the forwarder is gone, shutting down).
    pub(crate) fn forward(&self, node: u32, source: SocketAddr, datagram: &[u8]) -> bool {
        let Some(nodes) = &self.nodes else {
            return false;
        };
        nodes
            .queue
            .try_send(NodeForward {
                node,
                source,
                datagram: datagram.to_vec(),
            })
            .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dataplane::cid::{ConfigId, ServerIdLayout};

    #[test]
    fn owner_is_the_shard_the_cid_names_when_it_is_another() {
        let layout = ServerIdLayout::new(2, 8, 8).expect("layout");
        let field = ShardField::plaintext_with_length(ConfigId::new(0).expect("id"), layout, 8)
            .expect("fits");
        let queues: Vec<_> = (0..3).map(|_| Arc::new(ShardQueues::new(4, 4))).collect();
        let handoffs = Handoffs::new(field, 1, queues.clone());
        let cid = |shard| [7, 0, shard, 1, 2, 3, 4, 5, 0xee];
        assert_eq!(handoffs.owner(&cid(0)), Owner::Shard(0));
        assert_eq!(handoffs.owner(&cid(2)), Owner::Shard(2));
        assert_eq!(handoffs.owner(&cid(1)), Owner::Here, "ours");
        assert_eq!(handoffs.owner(&cid(3)), Owner::Here, "no such shard");
        assert_eq!(
            handoffs.owner(&[8, 0, 0, 1, 2, 3, 4, 5]),
            Owner::Here,
            "not our CID"
        );
        let source = "127.0.0.1:9".parse().expect("literal");
        assert!(handoffs.push(2, source, &cid(2)));
        let got = queues[2].handoffs().pop().expect("queued");
        assert_eq!((got.source, got.datagram), (source, cid(2).to_vec()));
    }

    #[test]
    fn a_cid_naming_another_node_goes_to_the_forwarder() {
        let layout = ServerIdLayout::new(2, 8, 8).expect("layout");
        let field = ShardField::plaintext_with_length(ConfigId::new(0).expect("id"), layout, 8)
            .expect("fits");
        let queues: Vec<_> = (0..2).map(|_| Arc::new(ShardQueues::new(4, 4))).collect();
        let (tx, rx) = mpsc::sync_channel(1);
        let handoffs = Handoffs::new(field, 0, queues).with_nodes(5, tx);
        let cid = |node, shard| [7, node, shard, 1, 2, 3, 4, 5];
        assert_eq!(handoffs.owner(&cid(5, 1)), Owner::Shard(1), "this node's");
        assert_eq!(handoffs.owner(&cid(5, 0)), Owner::Here);
        assert_eq!(handoffs.owner(&cid(9, 0)), Owner::Node(9));
        assert_eq!(handoffs.owner(&[8, 9, 0, 1, 2, 3, 4, 5]), Owner::Here);
        let source = "127.0.0.1:9".parse().expect("literal");
        assert!(handoffs.forward(9, source, &cid(9, 0)));
        assert!(!handoffs.forward(9, source, &cid(9, 0)), "full");
        let got = rx.try_recv().expect("queued");
        assert_eq!((got.node, got.source), (9, source));
        assert_eq!(got.datagram, cid(9, 0).to_vec());
    }

    #[test]
    fn a_full_queue_refuses() {
        let q = HandoffQueue::new(1);
        let source = "127.0.0.1:9".parse().expect("literal");
        let h = |b| Handoff {
            source,
            datagram: vec![b],
        };
        assert!(q.push(h(1)).is_ok());
        assert_eq!(q.push(h(2)), Err(h(2)));
        assert_eq!(q.pop(), Some(h(1)));
        assert!(q.is_empty());
    }
}
