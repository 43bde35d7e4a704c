//! Issue 18, DoS: handshakes at twice the control plane's capacity while established
//! sessions carry bulk traffic, through the daemon's path minus its sockets (the sans-IO
//! shard core and the control loop, [`common::daemon`]) on a virtual clock.
//!
//! Capacity here is what the control loop takes from a shard per turn
//! (`RuntimeConfig::inbound_budget`, 256 datagrams); each overloaded turn brings twice that
//! in handshake datagrams: ClientHellos from fresh spoofed sources plus the datagrams of
//! real clients, which retransmit on their own timers. Asserted with counters, not clocks:
//!
//! - shed first: the excess is dropped in the shard's fair stage or shed by control after
//!   the cookie, each counted, and the fair stage stays within its cap (2 MiB) every turn;
//! - established sessions keep every datagram: each sends records every turn and every one
//!   reaches the backend, none is dropped, no session closes;
//! - real handshakes still complete: those control admits (one per overloaded turn, the
//!   rest shed) while the overload goes on, the others within a bounded virtual time
//!   after it.
//!
//! One test alone in its binary; it prints its figures (`--nocapture`).

mod common;

use std::time::Instant;

use dtls_proto::ProtocolVersion;

use common::daemon::Daemon;
use common::overload::{
    CAPACITY, ESTABLISHED, OVERLOAD_TURNS, Outcome, REAL, RECORDS_PER_TURN, STAGE_CAP, TICK,
    assert_no_session_drops, established_then_real, first_hello, outcome, send_bulk, spoofed, turn,
};

#[test]
fn handshakes_at_twice_capacity_are_shed_first_and_established_sessions_keep_every_datagram() {
    let start = Instant::now();
    let server = common::server_config(vec![ProtocolVersion::Dtls1_3, ProtocolVersion::Dtls1_2]);
    let mut daemon = Daemon::new(server, start);
    let mut peers = established_then_real(&mut daemon, start, ESTABLISHED, REAL);
    let upstream_before = daemon.flush_upstream();
    let before = daemon.shard_stats();
    let control_before = daemon.ctl.counters().snapshot();

    // The overload: real clients start, spoofed hellos fill every turn to twice capacity.
    let hello = first_hello(start);
    let (mut next_spoofed, mut spoofed_answers, mut relayed, mut sent_records) = (0u32, 0, 0, 0);
    let mut stage_peak = 0;
    let mut now = start;
    for t in 0..OVERLOAD_TURNS {
        now += TICK;
        let in_before = daemon.shard_stats().datagrams_in;
        for p in &mut peers[ESTABLISHED..] {
            p.send(&mut daemon, now);
        }
        let real = (daemon.shard_stats().datagrams_in - in_before) as usize;
        for _ in real..2 * CAPACITY {
            daemon.receive(now, spoofed(next_spoofed), &hello);
            next_spoofed += 1;
        }
        sent_records += send_bulk(
            &mut daemon,
            &mut peers[..ESTABLISHED],
            now,
            t,
            RECORDS_PER_TURN,
        );
        stage_peak = stage_peak.max(daemon.staged());
        spoofed_answers += turn(&mut daemon, &mut peers, now, Some(t));
        relayed += daemon.flush_upstream();
    }
    let Outcome {
        during,
        stats,
        control,
        shed_stage,
        shed_control,
        started,
    } = outcome(&mut daemon, &peers, &before, &control_before);
    println!(
        "{OVERLOAD_TURNS} turns at {} handshake datagrams per turn (capacity {CAPACITY}): {} spoofed hellos, {spoofed_answers} answered; shed: {shed_stage} in the fair stage, {shed_control} by control after the cookie; {started} real handshakes admitted (engines); fair stage peak {stage_peak} B; established: {sent_records} records sent, {relayed} relayed; real handshakes completed during the overload: {} of {REAL} (turns {during:?})",
        2 * CAPACITY,
        next_spoofed,
        during.len(),
    );

    // Shed first, counted, within the stage's cap.
    assert!(shed_stage + shed_control > 0, "nothing was shed");
    assert!(stage_peak <= STAGE_CAP, "fair stage held {stage_peak} B");
    assert_eq!(stats.drop_queue_full - before.drop_queue_full, 0);
    // Established sessions keep every datagram.
    assert_eq!(
        relayed, sent_records,
        "every record of an established session"
    );
    assert_eq!(upstream_before, 0);
    assert_no_session_drops(&before, &stats);
    assert_eq!(control.sessions_closed, 0, "no session closed");
    // Real handshakes go on at a reduced rate: control admits one cookie-verified
    // handshake per overloaded turn (`overload_admit_per_turn`) and sheds the rest; the
    // admitted ones complete while the overload lasts.
    assert!(shed_control > 0, "control shed none after the cookie");
    assert!(
        !during.is_empty() && during.len() as u64 <= started,
        "{} completed, {started} admitted",
        during.len()
    );

    // Real handshakes complete: those the overload left waiting once it ends, within the
    // clients' retransmission timers (virtual time).
    let mut after = 0;
    while peers[ESTABLISHED..].iter().any(|p| p.sealer.is_none()) {
        after += 1;
        assert!(after <= 2400, "real handshakes still waiting after 120 s");
        now += TICK;
        for p in &mut peers[ESTABLISHED..] {
            p.send(&mut daemon, now);
        }
        turn(&mut daemon, &mut peers, now, None);
    }
    println!(
        "the rest completed within {:?} after the overload",
        TICK * after
    );
    assert_eq!(daemon.ctl.installed_sessions(), ESTABLISHED + REAL);
    assert_eq!(daemon.ctl.counters().snapshot().sessions_closed, 0);
}
