//! The control thread's counters: relaxed atomics, shareable with a metrics reader.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use control::HandshakeError;

macro_rules! counters {
    ($( $(#[$doc:meta])* $name:ident ),* $(,)?) => {
        /// Live counters of one control thread (relaxed atomics: each is exact, a set of
        /// them read together is not a consistent snapshot).
        #[derive(Debug, Default)]
        pub struct ControlCounters {
            $( $(#[$doc])* pub $name: AtomicU64, )*
        }

        /// A copy of [`ControlCounters`] at one moment.
        #[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
        pub struct ControlStats {
            $( $(#[$doc])* pub $name: u64, )*
        }

        impl ControlCounters {
            /// Reads every counter.
            pub fn snapshot(&self) -> ControlStats {
                ControlStats {
                    $( $name: self.$name.load(Relaxed), )*
                }
            }
        }
    };
}

counters! {
    /// Engines created: server engines from a cookie-verified ClientHello, client engines
    /// for a local source (`dtlsd connect`).
    handshakes_started,
    /// Handshakes that completed (keys handed to the shard).
    handshakes_completed,
    /// Handshakes that failed because the retransmission limit was reached.
    handshakes_failed_timeout,
    /// Handshakes that failed because the peer sent a fatal alert.
    handshakes_failed_peer_alert,
    /// Handshakes that failed for a protocol reason (bad message, no common parameters,
    /// bad certificate, ...).
    handshakes_failed_protocol,
    /// HelloVerifyRequests (and version alerts) sent by the stateless acceptor.
    cookies_sent,
    /// Datagrams from unknown peers the acceptor dropped (not a ClientHello, malformed).
    acceptor_drops,
    /// Connect mode: handshakes for local sources refused because the half-open cap was
    /// reached.
    half_open_refused,
    /// Cookie-verified ClientHellos refused because their source address or prefix had its
    /// share of half-open handshakes.
    half_open_refused_source,
    /// Half-open handshakes dropped to make room for newer ones (the table or a session cap
    /// was full).
    half_open_shed,
    /// Cookie-verified ClientHellos refused with an alert because the daemon or the peer's
    /// shard holds its most sessions (`max_sessions`).
    sessions_refused,
    /// Live sessions closed by a reload that removed their PSK identity or no longer
    /// verifies their client certificate.
    sessions_revoked,
    /// Sessions a shard refused to install (table full, no upstream socket).
    install_failed,
    /// Handshake-failure and refusal log lines not written because of the rate limit.
    log_lines_suppressed,
    /// Gauge: bytes the handshakes in progress hold in reassembly buffers now (of the
    /// shared budget), stored once per loop turn.
    reassembly_bytes,
    /// Handshake fragments not buffered because the shared reassembly budget was spent
    /// (the peer's retransmission brings them again), stored once per loop turn.
    reassembly_refused,
    /// Gauge: fragmented ClientHellos being put together in the acceptor's preallocated
    /// pool now (before any cookie), stored once per loop turn.
    hello_pool_held,
    /// Fragmented ClientHellos evicted from the pool before they were complete (pool full,
    /// or their IP address at its share), stored once per loop turn.
    hello_pool_evicted,
    /// Commands to a shard dropped because its queue was full.
    queue_full_drops,
    /// Sessions the shards reported closed.
    sessions_closed,
    /// AEAD limit reports from the shards (the session is closed).
    aead_limits,
    /// Configurations reloaded (SIGHUP) and in use for new handshakes.
    reloads,
    /// Reloaded configurations refused by validation (the previous one stays).
    reloads_failed,
    /// Completed handshakes that resumed a session from a ticket (abbreviated).
    handshakes_resumed,
    /// Session-ticket key rotations.
    ticket_rotations,
    /// Session-ticket key rotations that failed (the current key stays in use).
    ticket_rotation_failures,
}

impl ControlCounters {
    /// Counts one failed handshake under its reason.
    pub(crate) fn count_failure(&self, error: &HandshakeError) {
        let counter = match error {
            HandshakeError::Timeout { .. } => &self.handshakes_failed_timeout,
            HandshakeError::PeerAlert { .. } => &self.handshakes_failed_peer_alert,
            _ => &self.handshakes_failed_protocol,
        };
        counter.fetch_add(1, Relaxed);
    }

    pub(crate) fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Relaxed);
    }
}
