//! The shard core's sweep on a virtual clock (issue 15, latency tail): each
//! `handle_timeout` walks the share of the table that fell due since the previous call, not
//! the whole table, and every deadline (idle expiry, keepalive probes) still falls within
//! one sweep interval (plus one step) of when it is due. No sockets, no wall clock.

mod common;

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dtls_shard::{
    CloseCause, ControlInbound, Effects, HeartbeatPolicy, OpenFlow, ReadKeys, RelayMode, SessionId,
    ShardCommand, ShardConfig, ShardCore, ShardQueues, SweepStats, UpstreamPrefix, WriteKeys,
};

use common::key;

/// Upstream flows are plain numbers.
#[derive(Debug, Default)]
struct Flows(u32);

impl OpenFlow<u32> for Flows {
    fn open_flow(&mut self, _peer: SocketAddr) -> io::Result<u32> {
        self.0 += 1;
        Ok(self.0)
    }
}

const PROBING: HeartbeatPolicy = HeartbeatPolicy {
    answer: true,
    probe: true,
};

/// DTLS record content types, read off the first octet of what the core sends.
const ALERT: u8 = 21;
const HEARTBEAT: u8 = 24;

/// Session `i`'s peer address.
fn peer(i: u32) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::from(0x0a00_0000 | i), 4000))
}

fn install(i: u32, heartbeat: HeartbeatPolicy) -> ShardCommand {
    let seed = i as u8;
    ShardCommand::InstallKeys {
        session: SessionId::new(u64::from(i) + 1),
        peer: peer(i),
        read: ReadKeys {
            epoch: 1,
            key: key(seed),
            replay_window: 64,
        },
        write: WriteKeys {
            epoch: 1,
            key: key(seed.wrapping_add(1)),
            next_seq: 0,
        },
        heartbeat,
        cid: Vec::new(),
        peer_cid: Vec::new(),
        rrc: false,
        upstream: UpstreamPrefix::None,
    }
}

/// A core with `capacity` slots, a 1 s sweep interval, and a virtual clock.
struct Harness {
    core: ShardCore<u32>,
    fx: Effects,
    flows: Flows,
    t0: Instant,
}

impl Harness {
    fn new(capacity: usize, tune: impl FnOnce(&mut ShardConfig)) -> Self {
        let mut config =
            ShardConfig::with_mode(RelayMode::Serve, SocketAddr::from(([192, 0, 2, 200], 9)));
        config.max_sessions = capacity;
        config.sweep_interval = Duration::from_secs(1);
        tune(&mut config);
        Self {
            core: ShardCore::new(Arc::new(ShardQueues::new(64, 64)), config, 7, &[7; 32]),
            fx: Effects::new(64, 1472, false),
            flows: Flows::default(),
            t0: Instant::now(),
        }
    }

    fn at(&self, ms: u64) -> Instant {
        self.t0 + Duration::from_millis(ms)
    }

    fn command(&mut self, ms: u64, command: ShardCommand) {
        let now = self.at(ms);
        self.core
            .handle_command(now, command, &mut self.fx, &mut self.flows);
        self.core.end_commands(&mut self.fx);
    }

    /// The sweep at `ms`; returns when it asks to be called again.
    fn tick(&mut self, ms: u64) -> Instant {
        let now = self.at(ms);
        self.core.handle_timeout(now, &mut self.fx)
    }

    /// Content types of what the core sent on the shard socket since the last call.
    fn sent(&mut self) -> Vec<u8> {
        let types = self.fx.net.sends().map(|s| s.payload[0]).collect();
        self.fx.net.clear();
        types
    }

    /// Why each session closed since the last call, as control heard it.
    fn closed(&mut self) -> Vec<dtls_shard::CloseReason> {
        self.core.pump();
        std::iter::from_fn(|| self.core.queues().poll_inbound())
            .filter_map(|m| match m {
                ControlInbound::SessionClosed { reason, .. } => Some(reason),
                _ => None,
            })
            .collect()
    }

    fn stats(&self) -> SweepStats {
        self.core.sweep_stats()
    }
}

#[test]
fn a_short_step_walks_only_its_share_of_a_large_table() {
    let mut h = Harness::new(100_000, |_| {});
    // An idle shard without sessions is asked back once per interval, as before.
    assert_eq!(h.tick(0), h.at(1_000));
    assert_eq!(h.tick(1), h.at(1_000));
    for i in 0..4 {
        h.command(2, install(i, HeartbeatPolicy::default()));
    }
    let before = h.stats();
    let next = h.tick(3);
    let walked = h.stats().slots - before.slots;
    // 2 ms since the previous call: 2/1000 of the table, not all of it.
    assert_eq!(walked, 200, "{:?}", h.stats());
    // With sessions in the table it asks to be called again within a step.
    assert!(next <= h.at(4), "next call at {:?}", next - h.t0);
    // A step of 1 ms at a time: 100 slots each, a pass per second of virtual time.
    let mut most = 0;
    let mut last = h.stats();
    for ms in 4..=1_003 {
        h.tick(ms);
        let now = h.stats();
        most = most.max(now.slots - last.slots);
        last = now;
    }
    assert_eq!(most, 100);
    assert_eq!(last.slots - before.slots, 200 + 1_000 * 100);
    assert_eq!(last.passes - before.passes, 1, "{last:?}");
    // The four sessions (slots 0..4) were looked at once in that pass.
    assert_eq!(last.sessions - before.sessions, 4);
    // A clock that jumps a whole interval walks the whole table in that call.
    let before = h.stats();
    h.tick(2_500);
    assert_eq!(h.stats().slots - before.slots, 100_000);
}

#[test]
fn idle_expiry_is_spread_over_the_interval_and_on_time() {
    const N: u32 = 1_000;
    const IDLE_MS: u64 = 3_000;
    let mut h = Harness::new(N as usize, |c| {
        c.idle_timeout = Duration::from_millis(IDLE_MS);
    });
    h.tick(0);
    for i in 0..N {
        h.command(0, install(i, HeartbeatPolicy::default()));
    }
    let mut most_in_one_call = 0;
    let mut last_expiry = 0;
    for ms in 1..=IDLE_MS + 1_500 {
        let before = h.core.sessions().len();
        h.tick(ms);
        let gone = before - h.core.sessions().len();
        if gone > 0 {
            assert!(ms >= IDLE_MS, "expired at {ms} ms, before the deadline");
            last_expiry = ms;
        }
        most_in_one_call = most_in_one_call.max(gone);
    }
    assert!(h.core.sessions().is_empty());
    // Within one interval (and one step) of the deadline.
    assert!(
        last_expiry <= IDLE_MS + 1_000 + 1,
        "last at {last_expiry} ms"
    );
    // A share per call (1 000 slots over 1 000 ms), never the whole table at once.
    assert!(most_in_one_call <= 2, "{most_in_one_call} in one call");
}

#[test]
fn a_session_installed_behind_the_cursor_expires_on_the_next_pass() {
    let mut h = Harness::new(1_000, |c| {
        c.idle_timeout = Duration::from_secs(2);
    });
    h.tick(0);
    for ms in 1..=500 {
        h.tick(ms);
    }
    // The cursor is half way; the session goes into slot 0, already walked this pass.
    h.command(500, install(1, HeartbeatPolicy::default()));
    assert_eq!(
        h.core.sessions().lookup(&peer(1)).map(|id| id.index()),
        Some(0)
    );
    let mut expired_at = None;
    for ms in 501..=4_000 {
        h.tick(ms);
        if expired_at.is_none() && h.core.sessions().is_empty() {
            expired_at = Some(ms);
        }
    }
    let at = expired_at.expect("expired");
    assert!((2_500..=3_501).contains(&at), "expired at {at} ms");
    assert_eq!(h.closed(), vec![dtls_shard::CloseReason::IdleTimeout]);
}

#[test]
fn a_slot_reused_mid_pass_is_swept_as_its_new_session() {
    let mut h = Harness::new(1_000, |c| {
        c.idle_timeout = Duration::from_secs(2);
    });
    h.tick(0);
    h.command(0, install(1, HeartbeatPolicy::default()));
    let old = h.core.sessions().lookup(&peer(1)).expect("installed");
    for ms in 1..=1_900 {
        h.tick(ms);
    }
    // Control closes it mid-pass; a new session takes the same slot, new generation.
    h.command(
        1_900,
        ShardCommand::Close {
            session: SessionId::new(2),
            reason: CloseCause::Shutdown,
        },
    );
    h.command(1_900, install(2, HeartbeatPolicy::default()));
    let new = h.core.sessions().lookup(&peer(2)).expect("installed");
    assert_eq!(new.index(), old.index());
    assert_ne!(new.generation(), old.generation());
    let mut expired_at = None;
    for ms in 1_901..=5_000 {
        h.tick(ms);
        if expired_at.is_none() && h.core.sessions().is_empty() {
            expired_at = Some(ms);
        }
    }
    // On the new session's deadline (1.9 s + 2 s), not the old one's (2 s).
    let at = expired_at.expect("expired");
    assert!((3_900..=4_901).contains(&at), "expired at {at} ms");
    assert_eq!(
        h.closed(),
        vec![
            dtls_shard::CloseReason::Closed(CloseCause::Shutdown),
            dtls_shard::CloseReason::IdleTimeout
        ]
    );
}

#[test]
fn keepalive_probes_fire_on_time_with_millisecond_steps() {
    let mut h = Harness::new(50_000, |c| {
        c.keepalive = Some(Duration::from_secs(5));
    });
    h.tick(0);
    h.command(0, install(1, PROBING));
    let mut probes = Vec::new();
    let mut closed_at = None;
    for ms in 1..=25_000 {
        h.tick(ms);
        for kind in h.sent() {
            match kind {
                HEARTBEAT => probes.push(ms),
                ALERT => closed_at = Some(ms),
                other => panic!("content type {other} at {ms} ms"),
            }
        }
    }
    assert_eq!(probes.len(), 3, "{probes:?}");
    // Each due 5 s after the previous silence or probe; sent within one interval of it.
    let mut due = 5_000;
    for &at in &probes {
        assert!(
            (due..=due + 1_001).contains(&at),
            "probe at {at}, due {due}"
        );
        due = at + 5_000;
    }
    let closed = closed_at.expect("closed after three unanswered probes");
    assert!((due..=due + 1_001).contains(&closed), "closed at {closed}");
    assert_eq!(h.closed(), vec![dtls_shard::CloseReason::KeepaliveTimeout]);
}
