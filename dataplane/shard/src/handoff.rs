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

use std::net::SocketAddr;
use std::sync::Arc;

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

/// What a shard needs to hand records to their owners: where the shard id sits in our CIDs,
/// its own id, and every shard's queues in shard order.
#[derive(Debug, Clone)]
pub struct Handoffs {
    field: ShardField,
    shard: u16,
    shards: Vec<Arc<ShardQueues>>,
}

/// Where a datagram goes after [`Handoffs::owner`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Owner {
    /// Not a CID of ours that names another shard of this process: handle it here.
    Here,
    /// The shard with this index owns it.
    Shard(usize),
}

impl Handoffs {
    /// Shard `shard` of `shards` (every shard's queues, indexed by shard id), whose CIDs
    /// carry their shard id where `field` says.
    pub fn new(field: ShardField, shard: u16, shards: Vec<Arc<ShardQueues>>) -> Self {
        Self {
            field,
            shard,
            shards,
        }
    }

    /// Who owns the CID at the start of `cid` (followed by the rest of the record).
    pub(crate) fn owner(&self, cid: &[u8]) -> Owner {
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
