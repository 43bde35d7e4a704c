//! The shard's sweep of its session table, a share at a time (issue 15, latency tail).
//!
//! Every session is looked at once per [`ShardConfig::sweep_interval`]: keepalive probes
//! (RFC 6520 §3), path-check retransmissions and give-ups (RFC 9853), idle expiry. Doing
//! all of it in one call every interval walked every slot of the table three times and
//! held the shard thread (every datagram of the shard waiting) for 230–420 µs at 16 384
//! slots and 64 sessions, and of the order of 100 ms at a million slots. Instead each
//! [`ShardCore::handle_timeout`] walks the slots that fell due since the previous call,
//! `capacity × elapsed / interval` of them (the remainder carried to the next call, at most
//! the whole table), from a cursor that wraps: a pass over the table still completes once
//! per interval, so each session is looked at within one interval (plus one call's step)
//! of the previous look and every deadline keeps its precision of one interval; a clock
//! that jumps a whole interval or more in one call still gets the whole pass in that call.
//! Each slot is visited once, doing the work of the three former passes in their order
//! (keepalive, path check, idle expiry). The occupancy bitmap of the table
//! ([`SessionTable::next_occupied`]) skips empty slots 64 at a time, so what a call costs
//! is proportional to the sessions in its share, not to the slots.
//!
//! A session inserted into a slot the cursor has passed this pass is looked at on the next
//! pass, within one interval: its deadlines (idle timeout, keepalive interval, path check
//! timeout) all lie at least that far ahead or keep the one-interval precision. A slot
//! emptied and reused mid-pass is visited as whatever it holds when the cursor reaches it
//! (the visit reads the slot's current generation).

use std::time::{Duration, Instant};

use super::{
    CloseReason, ControlInbound, KEEPALIVE_PROBES, Out, PathState, Probe, ShardCore,
    send_close_notify,
};
use crate::relay;
use crate::session::{SessionTable, SlotId};

/// Shortest time [`ShardCore::handle_timeout`] asks to wait while the table holds sessions:
/// an idle shard's driver wakes every `recv_wait` (1 ms by default) anyway, so this adds no
/// wake-up, and each call's share stays small (`capacity / 1000` slots at the default
/// 1 s interval: 1 000 slots, 16 bitmap words, at a million slots). A longer step would
/// mean fewer calls but a longer pause each (10 ms: 10 000 sessions of a full
/// million-slot table in one call).
pub(crate) const SWEEP_STEP: Duration = Duration::from_millis(1);

/// What the sweep has walked since the core was made ([`ShardCore::sweep_stats`]).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SweepStats {
    /// Slots walked (empty or not), all passes together.
    pub slots: u64,
    /// Sessions visited (occupied slots walked).
    pub sessions: u64,
    /// Passes completed: the cursor went past the table's last slot.
    pub passes: u64,
}

/// Where the sweep stands: the cursor and how many slots fell due.
#[derive(Debug, Default)]
pub(super) struct SweepPace {
    /// The next slot to walk.
    cursor: usize,
    /// The previous call (`None`: no call yet, the first walks the whole table).
    last: Option<Instant>,
    /// Slots × nanoseconds due and not yet walked (below one interval's nanoseconds).
    credit: u128,
    pub(super) stats: SweepStats,
}

impl SweepPace {
    /// How many slots fell due at `now` for a table of `capacity` slots walked once per
    /// `interval`: all of them on the first call and whenever `interval` or more passed.
    pub(super) fn due(&mut self, now: Instant, capacity: usize, interval: Duration) -> usize {
        let Some(last) = self.last else {
            self.last = Some(now);
            return capacity;
        };
        // A clock that went back walks nothing and does not move `last` back.
        let elapsed = now.saturating_duration_since(last);
        self.last = Some(last.max(now));
        if elapsed >= interval {
            self.credit = 0;
            return capacity;
        }
        // Called every turn: 64-bit arithmetic where it fits (an interval of seconds and
        // up to 2^32 slots), 128-bit otherwise.
        let interval_ns = interval.as_nanos().max(1);
        let small = (|| {
            let interval_ns = u64::try_from(interval_ns).ok()?;
            let credit = u64::try_from(self.credit).ok()?;
            let added = u64::try_from(elapsed.as_nanos())
                .ok()?
                .checked_mul(u64::try_from(capacity).ok()?)?;
            let credit = credit.checked_add(added)?;
            Some((
                u128::from(credit / interval_ns),
                u128::from(credit % interval_ns),
            ))
        })();
        let (whole, rest) = small.unwrap_or_else(|| {
            let credit = self.credit + elapsed.as_nanos().saturating_mul(capacity as u128);
            (credit / interval_ns, credit % interval_ns)
        });
        if whole >= capacity as u128 {
            self.credit = 0;
            return capacity;
        }
        self.credit = rest;
        // Below `capacity` (checked above), so it fits.
        usize::try_from(whole).unwrap_or(capacity)
    }

    /// How long until one more slot falls due (at least [`SWEEP_STEP`]).
    pub(super) fn wait(&self, capacity: usize, interval: Duration) -> Duration {
        let short = interval.as_nanos().max(1).saturating_sub(self.credit);
        let ns = match (u64::try_from(short), u64::try_from(capacity)) {
            (Ok(short), Ok(capacity)) => short.div_ceil(capacity.max(1)),
            _ => u64::try_from(short.div_ceil(capacity.max(1) as u128)).unwrap_or(u64::MAX),
        };
        Duration::from_nanos(ns).max(SWEEP_STEP)
    }

    /// Takes `count` slots from the cursor on: the ranges to walk (a second one when it
    /// wraps), the cursor moved past them.
    fn take(&mut self, count: usize, capacity: usize) -> [(usize, usize); 2] {
        let count = count.min(capacity);
        let start = self.cursor.min(capacity);
        let first = (start, (start + count).min(capacity));
        let rest = count - (first.1 - first.0);
        self.stats.slots += count as u64;
        if start + count >= capacity && count > 0 {
            self.stats.passes += 1;
        }
        self.cursor = if start + count >= capacity {
            rest
        } else {
            start + count
        };
        if self.cursor >= capacity {
            self.cursor = 0;
        }
        [first, (0, rest)]
    }
}

impl<F> ShardCore<F> {
    /// Walks the slots due at `now` (see the module docs), visiting each session in them.
    pub(super) fn sweep_slots(&mut self, now: Instant, fx: &mut super::Effects) {
        let capacity = self.table.capacity();
        let due = self.pace.due(now, capacity, self.config.sweep_interval);
        let mut out = self.ctx.out(fx);
        for (from, end) in self.pace.take(due, capacity) {
            let mut at = from;
            while let Some(index) = self.table.next_occupied(at, end) {
                at = index + 1;
                self.pace.stats.sessions += 1;
                visit(&mut self.table, index, &self.config, &mut out, now);
            }
        }
    }

    /// When the sweep next has slots to walk: soon while the table holds sessions, never
    /// before `next_interval` (the per-interval work) when it holds none, so an idle shard
    /// without sessions wakes no more often than once per interval.
    pub(super) fn sweep_due(&self, now: Instant, next_interval: Instant) -> Instant {
        if self.table.is_empty() {
            return next_interval;
        }
        let wait = self
            .pace
            .wait(self.table.capacity(), self.config.sweep_interval);
        next_interval.min(now + wait)
    }

    /// What the sweep has walked so far (tests and benchmarks; not on the packet path).
    pub fn sweep_stats(&self) -> SweepStats {
        self.pace.stats
    }
}

/// One look at the session in slot `index`, if any: keepalive (RFC 6520 §3), the path
/// check's retransmission or give-up (RFC 9853), idle expiry, in that order; a session
/// closed by the first is not looked at further.
fn visit<F>(
    table: &mut SessionTable<F>,
    index: usize,
    config: &crate::shard::ShardConfig,
    out: &mut Out<'_>,
    now: Instant,
) {
    if let Some(interval) = config.keepalive
        && !keepalive(table, index, interval, out, now)
    {
        return;
    }
    let Some((id, session)) = table.slot_mut(index) else {
        return;
    };
    if matches!(session.path, PathState::Checking(_)) {
        relay::path_timeout(session, out, now);
    }
    if now.saturating_duration_since(session.last_activity) < config.idle_timeout {
        return;
    }
    close(table, id, out, CloseReason::IdleTimeout);
}

/// Closes the session `id` the sweep gave up on: close_notify to the peer, counted by
/// `reason` (idle expiry or keepalive timeout), reported to control, its flow retired.
fn close<F>(table: &mut SessionTable<F>, id: SlotId, out: &mut Out<'_>, reason: CloseReason) {
    let Some(mut session) = table.remove_id(id) else {
        return;
    };
    send_close_notify(&mut session, out);
    match reason {
        CloseReason::KeepaliveTimeout => out.tally.sessions_keepalive_timeout += 1,
        _ => out.tally.sessions_expired += 1,
    }
    out.report(ControlInbound::SessionClosed {
        session: session.handle,
        peer: session.peer,
        reason,
        stats: session.counters,
    });
    table.retire(session);
}

/// Keepalive (RFC 6520 §3) of the session in slot `index`: a peer silent for `interval`
/// gets a HeartbeatRequest; an unanswered one is resent with the same payload each
/// `interval` while the peer stays silent, and after [`KEEPALIVE_PROBES`] sends the
/// session is closed. At most one request is in flight per session. False when the
/// session is closed (or the slot is empty).
fn keepalive<F>(
    table: &mut SessionTable<F>,
    index: usize,
    interval: Duration,
    out: &mut Out<'_>,
    now: Instant,
) -> bool {
    let Some((id, session)) = table.slot_mut(index) else {
        return false;
    };
    if !session.heartbeat.probe
        || now.saturating_duration_since(session.last_peer_activity) < interval
    {
        return true;
    }
    let payload = match session.probe {
        None => {
            session.next_probe = session.next_probe.wrapping_add(1);
            session.probe = Some(Probe {
                payload: session.next_probe,
                sent: 0,
                at: now,
            });
            session.next_probe
        }
        Some(p) if now.saturating_duration_since(p.at) < interval => return true,
        Some(p) if p.sent >= KEEPALIVE_PROBES => {
            close(table, id, out, CloseReason::KeepaliveTimeout);
            return false;
        }
        Some(p) => p.payload,
    };
    if let Some(p) = &mut session.probe {
        p.sent += 1;
        p.at = now;
    }
    relay::send_heartbeat_request(session, out, payload);
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    #[test]
    fn the_first_call_and_a_whole_interval_walk_the_whole_table() {
        let t0 = Instant::now();
        let mut pace = SweepPace::default();
        assert_eq!(pace.due(t0, 1000, SECOND), 1000);
        assert_eq!(pace.due(t0 + SECOND, 1000, SECOND), 1000);
        assert_eq!(pace.due(t0 + 5 * SECOND, 1000, SECOND), 1000);
    }

    #[test]
    fn short_steps_walk_their_share_and_a_pass_per_interval() {
        let t0 = Instant::now();
        let mut pace = SweepPace::default();
        let capacity = 1_000_000;
        let first = pace.due(t0, capacity, SECOND);
        pace.take(first, capacity);
        // 1 ms of a 1 s interval: a thousandth of the table.
        let ms = Duration::from_millis(1);
        assert_eq!(pace.due(t0 + ms, capacity, SECOND), 1000);
        // 0.3 ms steps: 300 slots each, the remainder carried, never lost.
        let mut walked = 0;
        let mut at = t0 + ms;
        for _ in 0..10 {
            at += Duration::from_micros(300);
            let due = pace.due(at, capacity, SECOND);
            assert_eq!(due, 300);
            walked += due;
        }
        assert_eq!(walked, 3000);
        // A small table: a slot every 62.5 ms, nothing between.
        let mut small = SweepPace::default();
        small.due(t0, 16, SECOND);
        assert_eq!(small.due(t0 + Duration::from_millis(62), 16, SECOND), 0);
        // 0.5 ms until the next slot: asked back after SWEEP_STEP, not sooner.
        assert_eq!(small.wait(16, SECOND), SWEEP_STEP);
        assert_eq!(small.due(t0 + Duration::from_millis(63), 16, SECOND), 1);
        // Half a millisecond into the next slot's 62.5 ms: due in 62 ms.
        assert_eq!(small.wait(16, SECOND), Duration::from_millis(62));
    }

    #[test]
    fn the_cursor_wraps_and_counts_passes() {
        let mut pace = SweepPace::default();
        assert_eq!(pace.take(6, 10), [(0, 6), (0, 0)]);
        assert_eq!(pace.stats.passes, 0);
        assert_eq!(pace.take(6, 10), [(6, 10), (0, 2)]);
        assert_eq!(pace.stats.passes, 1);
        assert_eq!(pace.take(10, 10), [(2, 10), (0, 2)]);
        assert_eq!(pace.stats.passes, 2);
        assert_eq!(pace.take(8, 10), [(2, 10), (0, 0)]);
        assert_eq!(pace.cursor, 0);
        assert_eq!(pace.stats.passes, 3);
        assert_eq!(pace.take(0, 10), [(0, 0), (0, 0)]);
        assert_eq!(
            pace.stats,
            SweepStats {
                slots: 30,
                sessions: 0,
                passes: 3
            }
        );
    }

    #[test]
    fn a_clock_that_goes_back_walks_nothing() {
        let t0 = Instant::now() + SECOND;
        let mut pace = SweepPace::default();
        pace.due(t0, 100, SECOND);
        assert_eq!(pace.due(t0 - Duration::from_millis(500), 100, SECOND), 0);
        assert_eq!(pace.due(t0 + Duration::from_millis(500), 100, SECOND), 50);
    }
}
