//! Per-shard counters: relaxed atomics a metrics thread reads while the shard runs.
//!
//! The shard counts into a plain per-turn tally and adds it to the atomics once per loop turn,
//! so the per-packet path does no atomic read-modify-write.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// What a shard holds now, stored with each turn's counters.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Gauges {
    pub sessions_active: usize,
    pub early_bytes: usize,
    pub pending_bytes: usize,
    pub handshake_stage_bytes: usize,
}

macro_rules! shard_counters {
    ($( $(#[doc = $doc:literal])* $name:ident, )*) => {
        /// Live counters of one shard. Every field only grows except the gauges
        /// ([`Gauges`]).
        #[derive(Debug, Default)]
        pub struct ShardCounters {
            $( $(#[doc = $doc])* $name: AtomicU64, )*
            sessions_active: AtomicU64,
            early_bytes: AtomicU64,
            pending_bytes: AtomicU64,
            handshake_stage_bytes: AtomicU64,
        }

        /// A plain copy of [`ShardCounters`] at one instant.
        #[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
        pub struct ShardStats {
            $( $(#[doc = $doc])* pub $name: u64, )*
            /// Sessions in the table now.
            pub sessions_active: u64,
            /// Bytes of protected datagrams parked for peers whose keys are on their way.
            pub early_bytes: u64,
            /// Connect mode: plaintext bytes held for sources waiting for their handshake.
            pub pending_bytes: u64,
            /// Bytes of handshake datagrams staged for the control thread.
            pub handshake_stage_bytes: u64,
        }

        /// What one loop turn counted, added to the atomics at the end of the turn.
        #[derive(Debug, Default)]
        pub(crate) struct Tally {
            $( pub $name: u64, )*
        }

        impl ShardStats {
            /// Field-by-field sum of two snapshots (e.g. over shards).
            pub fn sum(a: &Self, b: &Self) -> Self {
                Self {
                    $( $name: a.$name.wrapping_add(b.$name), )*
                    sessions_active: a.sessions_active.wrapping_add(b.sessions_active),
                    early_bytes: a.early_bytes.wrapping_add(b.early_bytes),
                    pending_bytes: a.pending_bytes.wrapping_add(b.pending_bytes),
                    handshake_stage_bytes: a
                        .handshake_stage_bytes
                        .wrapping_add(b.handshake_stage_bytes),
                }
            }
        }

        impl ShardCounters {
            /// Reads every counter (each relaxed; the set is not one atomic snapshot).
            pub fn snapshot(&self) -> ShardStats {
                ShardStats {
                    $( $name: self.$name.load(Relaxed), )*
                    sessions_active: self.sessions_active.load(Relaxed),
                    early_bytes: self.early_bytes.load(Relaxed),
                    pending_bytes: self.pending_bytes.load(Relaxed),
                    handshake_stage_bytes: self.handshake_stage_bytes.load(Relaxed),
                }
            }

            /// Adds a turn's tally (and resets it) and stores the gauges.
            pub(crate) fn absorb(&self, tally: &mut Tally, gauges: Gauges) {
                $(
                    if tally.$name != 0 {
                        self.$name.fetch_add(tally.$name, Relaxed);
                        tally.$name = 0;
                    }
                )*
                self.sessions_active.store(gauges.sessions_active as u64, Relaxed);
                self.early_bytes.store(gauges.early_bytes as u64, Relaxed);
                self.pending_bytes.store(gauges.pending_bytes as u64, Relaxed);
                self.handshake_stage_bytes
                    .store(gauges.handshake_stage_bytes as u64, Relaxed);
            }
        }
    };
}

shard_counters! {
    /// Datagrams received on the listen socket (GRO segments one by one): DTLS from peers
    /// in serve mode, plaintext from local sources in connect mode.
    datagrams_in,
    /// Bytes of those datagrams.
    bytes_in,
    /// Datagrams queued on the listen socket: sealed records and control's flights to peers
    /// (serve), plaintext to local sources (connect).
    datagrams_out,
    /// Bytes of those datagrams.
    bytes_out,
    /// Records authenticated and decrypted.
    records_opened,
    /// Records sealed.
    records_sealed,
    /// Datagrams sent on upstream sockets: plaintext to the backend (serve), records and
    /// flights to the server (connect).
    upstream_datagrams_out,
    /// Bytes of those datagrams.
    upstream_bytes_out,
    /// Datagrams received on upstream sockets: backend plaintext (serve), the server's
    /// records (connect).
    upstream_datagrams_in,
    /// Bytes of those datagrams.
    upstream_bytes_in,
    /// Datagrams copied to the control thread (handshake, epoch 0, unknown peer).
    handshake_forwarded,
    /// Of those, datagrams of peers whose cookie-verified handshake control holds, staged
    /// in the admitted lane ahead of the fair stage.
    handshake_admitted,
    /// Dropped: not a record, a truncated record, bad version or length (one per record, or
    /// one per datagram that holds no record at all or ends in garbage).
    drop_malformed,
    /// Dropped: the replay window refused the sequence number.
    drop_replay,
    /// Dropped: the AEAD tag did not verify.
    drop_bad_tag,
    /// Dropped: a protected record from a peer with no session and nothing for control.
    drop_unknown_session,
    /// Dropped: a protected record of an epoch the session has no keys for.
    drop_unknown_epoch,
    /// DTLS 1.3: dropped unopened, a record whose epoch bits name an application epoch
    /// older than those the session holds (RFC 9147 §4.2.2): one whose keys were retired
    /// after a KeyUpdate (a late or replayed record, or a peer sealing with stale keys).
    drop_retired_epoch,
    /// Dropped: a content type the data plane does not handle at this epoch (e.g. change
    /// cipher spec or heartbeat in epoch 1, or a warning alert).
    drop_unexpected_content,
    /// Dropped: the queue to the control thread was full.
    drop_queue_full,
    /// Dropped: a handshake datagram for control found its source's share of the fair stage
    /// (or the stage's byte budget) full: a noisy source loses its own excess.
    drop_handshake_overflow,
    /// Dropped: the transmit batch was full this turn.
    drop_tx_full,
    /// Dropped: a backend datagram too large for one record within the configured datagram size.
    drop_oversize,
    /// Dropped: the session's write epoch has no sequence numbers left.
    drop_sequence_exhausted,
    /// The AEAD failed while sealing (an internal error; an empty datagram was queued).
    seal_failed,
    /// Sends to the backend that failed (socket buffer full, ICMP error reported).
    upstream_send_errors,
    /// Receives from the backend that failed with something other than "would block".
    upstream_recv_errors,
    /// Sessions created by `InstallKeys`.
    sessions_installed,
    /// `InstallKeys` for a peer that already had a session (new epoch keys).
    sessions_rekeyed,
    /// `InstallKeys` refused (table full, bad window size or sequence, upstream socket).
    install_failed,
    /// Sessions ended by the peer's close_notify or fatal alert, or by control's `Close`.
    sessions_closed,
    /// Sessions removed by the idle sweep.
    sessions_expired,
    /// Commands taken from the control queue.
    commands,
    /// Heartbeat records dropped: malformed, payload_length too large, padding under 16
    /// bytes (RFC 6520 §4), not negotiated, or a response to no request in flight.
    drop_heartbeat,
    /// HeartbeatRequests answered.
    heartbeats_answered,
    /// DTLS 1.3: post-handshake messages and ACKs opened under application keys and handed
    /// to control.
    post_handshake_forwarded,
    /// Sessions whose peer moved: a record under their connection ID from a new address
    /// authenticated and was the newest seen.
    sessions_moved,
    /// Datagrams under a session's connection ID from a new address that did not move it
    /// (no record authenticated, or none was the newest: a replay or a reordered copy).
    drop_not_moved,
    /// DTLS 1.3: times a peer switched to a later CID of ours (issued with
    /// NewConnectionId): a record under it authenticated and was the newest seen.
    peer_cid_switches,
    /// DTLS 1.3: CIDs of ours retired because the peer switched to a later one; records
    /// under them count as `drop_retired_cid`.
    cids_retired,
    /// DTLS 1.3: records dropped because their CID is not one of the session's (retired
    /// after the peer switched to a later one), unopened.
    drop_retired_cid,
    /// DTLS 1.3: times our records to a peer switched to one of its spare CIDs after an
    /// address change (ours, seen as its path_challenge, or the peer's validated move).
    cid_rotations,
    /// Return-routability check (RFC 9853): path_challenges sent to a new address of a
    /// peer (first sends and retransmissions).
    rrc_challenges_sent,
    /// Return-routability checks that the new address passed (the session moved).
    rrc_validated,
    /// Return-routability checks given up: no valid path_response after every challenge
    /// (the session stayed where it was).
    rrc_failed,
    /// path_challenges from peers answered with a path_response.
    rrc_responses_sent,
    /// Records under a connection ID naming another shard of this process, handed to that
    /// shard's queue (they reached this one: reuseport steering off or misdirected).
    cid_handoffs,
    /// Records to hand to another shard dropped because its hand-off queue was full.
    drop_handoff_full,
    /// Records under a connection ID naming another node of the fleet, queued for the
    /// daemon's node forwarder.
    cid_forwards,
    /// Records for another node dropped because the node forwarder's queue was full.
    drop_forward_full,
    /// Keepalive HeartbeatRequests sent (first sends and retransmissions).
    keepalive_sent,
    /// Keepalive HeartbeatRequests answered.
    keepalive_answered,
    /// Sessions closed because keepalive requests went unanswered.
    sessions_keepalive_timeout,
    /// Connect mode: handshakes asked of control for new local sources.
    handshakes_requested,
    /// UDP GSO sends on upstream flows (serve: to the backend; connect: to the server), each
    /// carrying two or more datagrams of one session, counted one by one in
    /// `upstream_datagrams_out`.
    upstream_gso_sends,
    /// Successful send calls on upstream flows, GSO or single:
    /// `upstream_datagrams_out / upstream_send_calls` is the datagrams per send.
    upstream_send_calls,
    /// Kernel calls that carried the upstream sends (an `io_uring_enter` for all of a
    /// turn's flows, a `sendmmsg` per flow with the mmsg backend, a `sendmsg` per send
    /// on an AF_XDP shard): `upstream_send_calls / upstream_send_syscalls` is the sends per
    /// kernel call.
    upstream_send_syscalls,
    /// Receives on upstream flows that brought two or more datagrams at once (UDP GRO; each
    /// counted in `upstream_datagrams_in`).
    upstream_gro_receives,
    /// Serve mode: protected datagrams of a peer finishing its handshake, held for its keys.
    early_parked,
    /// Serve mode: held datagrams opened once the keys arrived (the rest count as
    /// `drop_unknown_session` when they expire).
    early_replayed,
    /// Connect mode: plaintext dropped while its source waited for a handshake (per-source
    /// queue full, too many sources waiting, or the handshake failed).
    drop_pending,
    /// New sessions refused because no file descriptor was left for their upstream socket
    /// (EMFILE or ENFILE). Serve: the peer gets a fatal internal_error alert; connect: the
    /// new source's datagram is dropped (`drop_refused`).
    sessions_refused_descriptors,
    /// New sessions refused because their upstream socket could not be created, bound or
    /// connected for another reason (e.g. no ephemeral port left).
    sessions_refused_socket,
    /// Serve, transparent mode: new sessions refused because their upstream socket could not
    /// be bound to the client's address and port (EADDRINUSE, EADDRNOTAVAIL, the option
    /// refused). The peer gets a fatal internal_error alert.
    sessions_refused_transparent,
    /// Connect mode: plaintext from a new source dropped because its session was refused
    /// (see `sessions_refused_descriptors` and `sessions_refused_socket`).
    drop_refused,
}
