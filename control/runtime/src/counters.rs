//! The control thread's counters: relaxed atomics, shareable with a metrics reader.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use control::{CipherSuite, HandshakeError};

macro_rules! counters {
    ($( $(#[$doc:meta])* $name:ident ),* $(,)?) => {
        /// Live counters of one control thread (relaxed atomics: each is exact, a set of
        /// them read together is not a consistent snapshot).
        #[derive(Debug, Default)]
        pub struct ControlCounters {
            $( $(#[$doc])* pub $name: AtomicU64, )*
            /// The handshake-duration histogram and the sessions by suite.
            pub observed: Observed,
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
    /// ClientHellos whose cookie did not verify (forged, altered, expired, or issued to
    /// another address): answered statelessly, no handshake started.
    cookies_rejected,
    /// Datagrams from unknown peers the acceptor dropped (not a ClientHello, malformed).
    acceptor_drops,
    /// Connect mode: handshakes for local sources refused because the half-open cap was
    /// reached.
    half_open_refused,
    /// Cookie-verified ClientHellos refused because their source address or prefix had its
    /// share of half-open handshakes.
    half_open_refused_source,
    /// Cookie-verified ClientHellos shed because their worker was overloaded (its inbound
    /// backlog at [`crate::RuntimeConfig::shed_backlog`]), before any asymmetric crypto.
    handshakes_shed,
    /// Half-open handshakes dropped to make room for newer ones (the table or a session cap
    /// was full).
    half_open_shed,
    /// Cookie-verified ClientHellos refused with an alert because the daemon or the peer's
    /// shard holds its most sessions (`max_sessions`).
    sessions_refused,
    /// Handshakes refused because the daemon is draining (serve: cookie-verified
    /// ClientHellos, answered with an alert; connect: new local sources).
    handshakes_refused_draining,
    /// Cookie-verified ClientHellos refused because their source address spent its
    /// handshake burst and the rate had not refilled a token (`handshakes_per_second`).
    handshakes_refused_rate,
    /// Cookie-verified ClientHellos refused because their source address holds its most
    /// sessions (`sessions_per_address`).
    sessions_refused_per_address,
    /// Datagrams from sources without a handshake in progress dropped unanswered because
    /// a deny-list range holds the source.
    datagrams_denied,
    /// Datagrams from sources without a handshake in progress dropped unanswered because
    /// the allow list is set and no range of it holds the source.
    datagrams_not_allowed,
    /// Handshakes that failed because the client's verified certificate matched no
    /// identity rule (access_denied alert sent).
    handshakes_failed_identity,
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
    /// Installed DTLS 1.3 sessions closed because their engine failed on what the peer
    /// sent after the handshake (a fatal alert went to the peer first).
    sessions_engine_failed,
    /// AEAD limit reports from the shards (a DTLS 1.2 session is closed, a DTLS 1.3 one
    /// updates its keys).
    aead_limits,
    /// DTLS 1.3 post-handshake records (KeyUpdate, NewSessionTicket, ACK) the shards opened
    /// under application keys and control fed to the session's engine.
    post_handshake,
    /// DTLS 1.3 post-handshake records dropped: their session or its engine is gone.
    post_handshake_dropped,
    /// DTLS 1.3 key updates handed to a shard (a new read or write epoch, RFC 9147 §8).
    key_updates,
    /// DTLS 1.3 KeyUpdates from peers that moved no epoch: carried in an epoch older than
    /// the peer's newest (a new KeyUpdate before ours of the previous one was
    /// acknowledged, RFC 9147 §8), acknowledged and otherwise ignored.
    key_updates_stale,
    /// DTLS 1.3 spare connection IDs of peers (NewConnectionId, RFC 9147 §9) handed to a
    /// shard, which puts them in its records after address changes.
    peer_cids_spare,
    /// DTLS 1.3 requests for more spare connection IDs of a peer (RequestConnectionId,
    /// RFC 9147 §9) after a shard's rotation left fewer than two: made, or waiting for
    /// the engine's flight under way.
    cid_requests,
    /// DTLS 1.3 connection IDs of ours issued after the handshake (NewConnectionId, RFC 9147
    /// §9: asked for by a RequestConnectionId or replacing retired ones), each within the
    /// engine's bounds (8 unused at the peer, 256 over a session).
    cids_issued,
    /// DTLS 1.3 retirements of our connection IDs reported by the shards (the peer moved
    /// on to a later one); the engine replaces them unasked within its bounds.
    cid_retirements,
    /// Configurations reloaded (SIGHUP) and in use for new handshakes.
    reloads,
    /// Reloaded configurations refused by validation (the previous one stays).
    reloads_failed,
    /// Completed DTLS 1.2 handshakes that resumed a session from a ticket (abbreviated,
    /// RFC 5077).
    handshakes_resumed12,
    /// Completed DTLS 1.3 handshakes that resumed a session from a ticket (a resumption
    /// PSK, RFC 8446 §2.2).
    handshakes_resumed13,
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
            HandshakeError::AccessDenied { .. } => &self.handshakes_failed_identity,
            _ => &self.handshakes_failed_protocol,
        };
        counter.fetch_add(1, Relaxed);
    }

    pub(crate) fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Relaxed);
    }
}

/// Upper bounds, in seconds, of the handshake-duration histogram's buckets (the last,
/// One handshake worker's own counters (the daemon's metrics label them by worker).
#[derive(Debug, Default)]
pub struct WorkerCounters {
    /// Engines this worker created.
    pub handshakes_started: AtomicU64,
    /// Handshakes this worker completed.
    pub handshakes_completed: AtomicU64,
    /// Sessions this worker holds now.
    pub sessions: AtomicU64,
    /// Messages waiting in this worker's lanes at the start of its last turn.
    pub backlog: AtomicU64,
}

/// `+Inf`, is implied): from a loopback handshake (about a millisecond) to one that needed
/// several retransmissions.
pub const HANDSHAKE_BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

/// Room for every suite of [`CipherSuite::KNOWN`].
const SUITE_SLOTS: usize = 16;

/// What the control thread observes beyond plain counters: how long completed handshakes
/// took (from the engine's creation to the keys' hand-over) and how many installed
/// sessions use each suite. Relaxed atomics, read by the metrics thread.
#[derive(Debug, Default)]
pub struct Observed {
    /// Per bucket of [`HANDSHAKE_BUCKETS`], then `+Inf`: handshakes that took at most that
    /// long and more than the previous bound (not cumulative).
    latency: [AtomicU64; HANDSHAKE_BUCKETS.len() + 1],
    latency_sum_micros: AtomicU64,
    /// Installed sessions per suite, indexed as [`CipherSuite::KNOWN`].
    suites: [AtomicU64; SUITE_SLOTS],
}

/// A reading of the handshake-duration histogram.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LatencyReading {
    /// `(upper bound in seconds, handshakes at most that long)`, cumulative, ending with
    /// `f64::INFINITY` (the count).
    pub buckets: Vec<(f64, u64)>,
    /// Sum of the durations, in seconds.
    pub sum: f64,
}

impl Observed {
    /// Records one completed handshake that took `took`.
    pub(crate) fn handshake_completed(&self, took: Duration) {
        let secs = took.as_secs_f64();
        let bucket = HANDSHAKE_BUCKETS
            .iter()
            .position(|&bound| secs <= bound)
            .unwrap_or(HANDSHAKE_BUCKETS.len());
        self.latency[bucket].fetch_add(1, Relaxed);
        let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        self.latency_sum_micros.fetch_add(micros, Relaxed);
    }

    /// One more installed session uses `suite`.
    pub(crate) fn session_added(&self, suite: CipherSuite) {
        if let Some(slot) = Self::slot(suite) {
            slot_of(&self.suites, slot).fetch_add(1, Relaxed);
        }
    }

    /// One installed session of `suite` is gone.
    pub(crate) fn session_removed(&self, suite: CipherSuite) {
        if let Some(slot) = Self::slot(suite) {
            // Never below zero, even if a removal were counted twice.
            let _ = slot_of(&self.suites, slot)
                .fetch_update(Relaxed, Relaxed, |n| Some(n.saturating_sub(1)));
        }
    }

    fn slot(suite: CipherSuite) -> Option<usize> {
        CipherSuite::KNOWN
            .iter()
            .position(|&s| s == suite)
            .filter(|&i| i < SUITE_SLOTS)
    }

    /// The histogram now.
    pub fn latency(&self) -> LatencyReading {
        let mut total = 0;
        let buckets = HANDSHAKE_BUCKETS
            .iter()
            .copied()
            .chain([f64::INFINITY])
            .zip(&self.latency)
            .map(|(bound, n)| {
                total += n.load(Relaxed);
                (bound, total)
            })
            .collect();
        LatencyReading {
            buckets,
            sum: self.latency_sum_micros.load(Relaxed) as f64 / 1e6,
        }
    }

    /// Installed sessions per suite now, every known suite listed (zeros included).
    pub fn sessions_by_suite(&self) -> Vec<(CipherSuite, u64)> {
        CipherSuite::KNOWN
            .iter()
            .take(SUITE_SLOTS)
            .filter(|s| **s != CipherSuite::EmptyRenegotiationInfoScsv)
            .map(|&s| {
                (
                    s,
                    Self::slot(s).map_or(0, |i| slot_of(&self.suites, i).load(Relaxed)),
                )
            })
            .collect()
    }
}

fn slot_of(slots: &[AtomicU64; SUITE_SLOTS], i: usize) -> &AtomicU64 {
    &slots[i.min(SUITE_SLOTS - 1)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handshake_durations_fall_in_cumulative_buckets() {
        let o = Observed::default();
        for ms in [1, 3, 3, 40, 20_000] {
            o.handshake_completed(Duration::from_millis(ms));
        }
        let r = o.latency();
        let at = |bound: f64| r.buckets.iter().find(|b| b.0 == bound).map(|b| b.1);
        assert_eq!(at(0.001), Some(1));
        assert_eq!(at(0.005), Some(3));
        assert_eq!(at(0.05), Some(4));
        assert_eq!(at(10.0), Some(4));
        assert_eq!(r.buckets.last(), Some(&(f64::INFINITY, 5)));
        assert!((r.sum - 20.047).abs() < 1e-9, "{}", r.sum);
    }

    #[test]
    fn sessions_by_suite_go_up_and_down_and_never_below_zero() {
        let o = Observed::default();
        let suite = CipherSuite::EcdheEcdsaAes128GcmSha256;
        o.session_added(suite);
        o.session_added(suite);
        o.session_removed(suite);
        o.session_removed(CipherSuite::PskAes128GcmSha256);
        let by = o.sessions_by_suite();
        assert!(by.contains(&(suite, 1)));
        assert!(by.contains(&(CipherSuite::PskAes128GcmSha256, 0)));
        assert!(
            !by.iter()
                .any(|(s, _)| *s == CipherSuite::EmptyRenegotiationInfoScsv)
        );
        assert!(CipherSuite::KNOWN.len() <= SUITE_SLOTS);
    }
}
