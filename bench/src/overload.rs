//! `dtls-bench overload` (B10): the throughput established sessions keep while new
//! handshakes arrive at a multiple of what the control plane can complete.
//!
//! One in-process `dtlsd` (one shard, `--control-threads` handshake workers) and its echo
//! backend. First a probe measures the handshake capacity `C` (full handshakes/s of
//! `--probe-parallel` clients in flight, nothing else running). Then `--sessions`
//! established sessions run closed-loop bulk traffic (`loadgen-0`) in alternating slices:
//! a quiet slice, then one slice per attack, the order reversed every round so drift hits
//! every phase alike. During an attack slice the `attack-0` thread starts new handshakes
//! open loop at `--factor` × `C` per second from `--sources` loopback addresses
//! (127.3.x.y), each attempt a fresh client engine of ours:
//!
//! - `full`: the attempt runs to completion (then close_notify); an attempt not done after
//!   [`ABANDON`] (its flight was shed; the attacker does not retransmit) gives its slot up.
//! - `half-open`: the attempt answers the cookie (HelloVerifyRequest, or the HelloRetryRequest
//!   of DTLS 1.3) with its cookie-bearing ClientHello and is then dropped: the server's
//!   handshake stalls after the cookie, holding a half-open entry until its timeout, and
//!   the attacker spends no asymmetric crypto beyond one key share.
//!
//! Reported: bulk round trips/s per phase, the **kept ratio** (an attack phase's rate over
//! the quiet phase's, same run), the attacker's offered and completed rates, and the
//! server's shedding counters over the run. Established sessions never reach the control
//! plane, so what they lose is the CPU the handshake workers and the attacker take from
//! the shard and the generator; on a host with fewer cores than threads (the 2-core VM:
//! shard, control, echo backend, generator and attacker) that share is what the ratio
//! shows.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow};
use control::Connection;
use control::crypto::SystemRng;
use control::crypto::pki_types::UnixTime;
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use serde_json::{Value, json};

use crate::compare::{Better, Figure};
use crate::loadgen::client::{HANDSHAKE_TIMEOUT, HandshakePlan, TICKET_WAIT, run_handshakes};
use crate::loadgen::cpu::{self, CpuSnapshot};
use crate::loadgen::flow::{Counts, FlowConfig};
use crate::loadgen::run::{self, CpuAccum, Group};
use crate::loadgen::server::{LOOPBACK, ServerSetup, TestServer};
use crate::loadgen::{CipherChoice, IoChoice};
use crate::records::Version;

/// An attempt of the `full` attack not established after this long gives its slot up.
pub const ABANDON: Duration = Duration::from_secs(1);

/// What the attacker does with each new handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Attack {
    /// Real handshakes, completed (then closed).
    Full,
    /// Handshakes that stall after the cookie: the cookie-bearing ClientHello, then nothing.
    HalfOpen,
}

impl Attack {
    /// Its name in reports and figures.
    pub fn name(self) -> &'static str {
        match self {
            Attack::Full => "full",
            Attack::HalfOpen => "half-open",
        }
    }
}

/// Settings of one `overload` run.
#[derive(Debug, Clone)]
pub struct Config {
    /// Established sessions carrying bulk traffic.
    pub sessions: usize,
    /// Plaintext bytes per bulk datagram.
    pub size: usize,
    /// Outstanding bulk datagrams per session (closed loop).
    pub window: usize,
    /// The attacks, each a phase of its own beside the quiet one.
    pub attacks: Vec<Attack>,
    /// New handshakes offered per second, as a multiple of the probed capacity.
    pub factor: f64,
    /// Attacker source addresses (127.3.x.y).
    pub sources: usize,
    /// Seconds of one slice.
    pub slice: Duration,
    /// Rounds (each: one slice per phase).
    pub rounds: usize,
    /// Seconds of the capacity probe.
    pub probe: Duration,
    /// Full handshakes in flight during the probe.
    pub probe_parallel: usize,
    /// Handshake worker threads of the server.
    pub control_threads: usize,
    /// DTLS version of every handshake and session.
    pub version: Version,
}

/// What the attacker did in its slices.
#[derive(Debug, Clone, Copy, Default)]
pub struct AttackCounts {
    /// Attempts the schedule called for.
    pub scheduled: u64,
    /// Attempts started (a fresh client engine's first ClientHello sent).
    pub started: u64,
    /// Scheduled attempts skipped because the next slot's attempt was still running.
    pub slot_busy: u64,
    /// Cookie-bearing ClientHellos sent (the server's handshake starts on each).
    pub cookie_hellos: u64,
    /// Handshakes completed.
    pub completed: u64,
    /// Attempts given up after [`ABANDON`].
    pub abandoned: u64,
    /// Attack time.
    pub elapsed: Duration,
}

impl AttackCounts {
    fn add(&mut self, o: &AttackCounts) {
        self.scheduled += o.scheduled;
        self.started += o.started;
        self.slot_busy += o.slot_busy;
        self.cookie_hellos += o.cookie_hellos;
        self.completed += o.completed;
        self.abandoned += o.abandoned;
        self.elapsed += o.elapsed;
    }

    fn per_s(&self, n: u64) -> f64 {
        n as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// The outcome.
#[derive(Debug)]
pub struct Outcome {
    /// Result document.
    pub doc: Value,
    /// Text report.
    pub text: String,
    /// Kept ratio per attack, in `Config::attacks` order.
    pub kept: Vec<f64>,
}

/// 127.3.0.1, 127.3.0.2, ... (250 per /24, so no prefix holds more than the server's
/// per-prefix share of half-open handshakes).
fn source_addr(i: usize) -> IpAddr {
    let n = i as u32;
    IpAddr::V4(Ipv4Addr::new(
        127,
        3 + (n / 62_500) as u8,
        ((n / 250) % 250) as u8,
        (n % 250 + 1) as u8,
    ))
}

struct Attempt {
    conn: Connection,
    started: Instant,
}

struct Slot {
    socket: UdpSocket,
    attempt: Option<Attempt>,
}

/// Sends every datagram `conn` has queued; returns how many.
fn flush(conn: &mut Connection, socket: &UdpSocket, server: SocketAddr, buf: &mut [u8]) -> u64 {
    let mut n = 0;
    while let Some(t) = conn.poll_transmit(Instant::now(), buf) {
        let _ = socket.send_to(&buf[..t.len], server);
        n += 1;
    }
    n
}

/// Runs one attack for `duration` at `rate` attempts per second.
fn attack(
    server: SocketAddr,
    config: &Arc<control::Config>,
    kind: Attack,
    rate: f64,
    sources: usize,
    duration: Duration,
) -> Result<AttackCounts> {
    let mut poll = Poll::new().context("epoll")?;
    let mut events = Events::with_capacity(1024);
    // One attempt per slot at a time: enough slots that the schedule finds a free one even
    // when every attempt runs until it is abandoned, spread over `sources` addresses.
    let needed = (rate * ABANDON.as_secs_f64() * 1.25).ceil() as usize;
    let count = sources.max(needed).max(1);
    let mut slots = Vec::with_capacity(count);
    for i in 0..count {
        let ip = source_addr(i % sources.max(1));
        let socket =
            UdpSocket::bind(SocketAddr::new(ip, 0)).with_context(|| format!("bind {ip}"))?;
        socket.set_nonblocking(true).context("O_NONBLOCK")?;
        poll.registry()
            .register(
                &mut SourceFd(&socket.as_raw_fd()),
                Token(i),
                Interest::READABLE,
            )
            .context("epoll register")?;
        slots.push(Slot {
            socket,
            attempt: None,
        });
    }
    let mut c = AttackCounts::default();
    let mut buf = vec![0u8; 16 * 1024];
    let mut out = vec![0u8; 16 * 1024];
    let gap = 1.0 / rate;
    let start = Instant::now();
    let end = start + duration;
    let mut next = 0usize;
    loop {
        let now = Instant::now();
        if now >= end {
            break;
        }
        let elapsed = now.duration_since(start).as_secs_f64();
        while (c.scheduled as f64) * gap <= elapsed {
            c.scheduled += 1;
            let count = slots.len();
            let slot = &mut slots[next];
            next = (next + 1) % count;
            if let Some(a) = &slot.attempt {
                if now.duration_since(a.started) < ABANDON {
                    c.slot_busy += 1;
                    continue;
                }
                c.abandoned += 1;
            }
            let mut conn = Connection::client(
                Arc::clone(config),
                Box::new(SystemRng::new()),
                now,
                server,
                None,
            )
            .context("client engine")?;
            if flush(&mut conn, &slot.socket, server, &mut out) > 0 {
                c.started += 1;
            }
            slot.attempt = Some(Attempt { conn, started: now });
        }
        match poll.poll(&mut events, Some(Duration::from_millis(1))) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e).context("epoll wait"),
        }
        for ev in events.iter() {
            let Some(slot) = slots.get_mut(ev.token().0) else {
                continue;
            };
            while let Ok((n, from)) = slot.socket.recv_from(&mut buf) {
                let Some(a) = slot.attempt.as_mut() else {
                    continue;
                };
                if from != server {
                    continue;
                }
                let now = Instant::now();
                a.conn
                    .handle_datagram(now, UnixTime::now(), from, &buf[..n]);
                let sent = flush(&mut a.conn, &slot.socket, server, &mut out);
                match kind {
                    Attack::HalfOpen => {
                        // The first answer is the cookie; what the engine sends back is
                        // its cookie-bearing ClientHello. Then the attempt stops.
                        if sent > 0 {
                            c.cookie_hellos += 1;
                            slot.attempt = None;
                        }
                    }
                    Attack::Full => {
                        if a.conn.is_established() {
                            c.completed += 1;
                            a.conn.close(now);
                            flush(&mut a.conn, &slot.socket, server, &mut out);
                            slot.attempt = None;
                        } else if a.conn.is_finished() {
                            slot.attempt = None;
                        }
                    }
                }
            }
        }
    }
    c.elapsed = start.elapsed();
    Ok(c)
}

/// One measured slice of bulk traffic.
#[derive(Debug, Clone, Copy)]
struct Slice {
    /// 0: quiet; k: `Config::attacks[k - 1]`.
    phase: usize,
    counts: Counts,
}

/// Runs the benchmark.
pub fn run(cfg: &Config) -> Result<Outcome> {
    let mtu = run::server_mtu(cfg.size);
    let server = TestServer::start(&ServerSetup {
        shards: 1,
        control_threads: cfg.control_threads,
        io: IoChoice::Auto,
        null_protection: false,
        mtu,
        data_io: Default::default(),
    })?;
    let addr = server.addr();
    let group = Group {
        server: addr,
        ca: server.ca().to_path_buf(),
        cipher: CipherChoice::Aes128Gcm,
        version: cfg.version,
        cid: false,
    };
    let config = Arc::new(run::group_config(&group, usize::from(mtu))?);
    // The capacity probe: full handshakes, closed loop, nothing else running.
    let probe = run_handshakes(
        &config,
        &HandshakePlan {
            server: addr,
            bind_ip: LOOPBACK,
            sources: 16,
            parallel: cfg.probe_parallel,
            total: None,
            duration: cfg.probe,
            keep: false,
            collect_tickets: false,
            offer_tickets: false,
            timeout: HANDSHAKE_TIMEOUT,
            ticket_wait: TICKET_WAIT,
        },
        &mut Vec::new(),
    )?;
    let capacity = probe.rate();
    if capacity <= 0.0 {
        return Err(anyhow!(
            "the capacity probe completed no handshake: {}",
            probe.first_error.as_deref().unwrap_or("no error reported")
        ));
    }
    let rate = capacity * cfg.factor;
    let stats_before = server.stats();
    let phases = cfg.attacks.len() + 1;
    let flow_cfg = FlowConfig {
        size: cfg.size,
        window: cfg.window,
        gso: true,
    };
    let (slices, attacks, cpu) = run::on_loadgen(
        std::slice::from_ref(&group),
        cfg.sessions,
        flow_cfg,
        usize::from(mtu),
        |flows, _| {
            let mut flows = flows.into_iter().next().context("no flows")?;
            flows.closed_loop(cfg.slice.min(Duration::from_secs(1)), None)?;
            let mut slices = Vec::with_capacity(cfg.rounds * phases);
            let mut attacks = vec![AttackCounts::default(); cfg.attacks.len()];
            let mut cpu = vec![CpuAccum::default(); phases];
            for round in 0..cfg.rounds {
                for j in 0..phases {
                    let phase = if round % 2 == 0 { j } else { phases - 1 - j };
                    let before = CpuSnapshot::take();
                    let wall = Instant::now();
                    let counts = match phase.checked_sub(1).map(|k| (k, cfg.attacks[k])) {
                        None => flows.closed_loop(cfg.slice, None)?,
                        Some((k, kind)) => {
                            let (counts, a, a_cpu) = std::thread::scope(|scope| -> Result<_> {
                                let attacker = std::thread::Builder::new()
                                    .name("attack-0".into())
                                    .spawn_scoped(scope, || {
                                        let r = attack(
                                            addr,
                                            &config,
                                            kind,
                                            rate,
                                            cfg.sources,
                                            cfg.slice,
                                        );
                                        // Measured before it exits: gone from the
                                        // process's snapshot after.
                                        (r, CpuSnapshot::take())
                                    })
                                    .context("spawn the attack thread")?;
                                let counts = flows.closed_loop(cfg.slice, None);
                                let (a, a_cpu) = attacker
                                    .join()
                                    .map_err(|_| anyhow!("the attack thread panicked"))?;
                                Ok((counts?, a?, a_cpu))
                            })?;
                            attacks[k].add(&a);
                            cpu[phase].add_named(&before, &a_cpu, "attack-0");
                            counts
                        }
                    };
                    cpu[phase].add(&before, &CpuSnapshot::take(), wall.elapsed());
                    slices.push(Slice { phase, counts });
                }
            }
            flows.close();
            Ok((slices, attacks, cpu))
        },
    )?;
    let stats_after = server.stats();
    let counters = server.counters_json();
    server.shutdown()?;
    Ok(report(
        cfg,
        capacity,
        rate,
        &slices,
        &attacks,
        &cpu,
        stats_before.as_ref(),
        stats_after.as_ref(),
        counters,
    ))
}

/// Bulk round trips per second of one phase over all its slices.
fn phase_pps(slices: &[Slice], phase: usize) -> f64 {
    let (n, t) = slices
        .iter()
        .filter(|s| s.phase == phase)
        .fold((0u64, 0f64), |(n, t), s| {
            (n + s.counts.received, t + s.counts.elapsed.as_secs_f64())
        });
    n as f64 / t.max(1e-9)
}

/// The shard's CPU per bulk round trip in one phase, nanoseconds: what the data plane
/// spends per record pair whatever CPU share it got.
fn shard_ns_per_round_trip(slices: &[Slice], phase: usize, cpu: &CpuAccum) -> Option<f64> {
    let received: u64 = slices
        .iter()
        .filter(|s| s.phase == phase)
        .map(|s| s.counts.received)
        .sum();
    let ns: u64 = cpu
        .threads()
        .iter()
        .filter(|t| t.name.starts_with("dtlsd-shard"))
        .map(|t| t.cpu_ns)
        .sum();
    (received > 0 && ns > 0).then(|| ns as f64 / received as f64)
}

#[allow(clippy::too_many_arguments)]
fn report(
    cfg: &Config,
    capacity: f64,
    rate: f64,
    slices: &[Slice],
    attacks: &[AttackCounts],
    cpu: &[CpuAccum],
    before: Option<&dtlsd::daemon::Stats>,
    after: Option<&dtlsd::daemon::Stats>,
    counters: Value,
) -> Outcome {
    let delta = |f: fn(&dtlsd::daemon::Stats) -> u64| match (before, after) {
        (Some(b), Some(a)) => Some(f(a).saturating_sub(f(b))),
        _ => None,
    };
    let shed = delta(|s| s.control.handshakes_shed);
    let half_open_shed = delta(|s| s.control.half_open_shed);
    let refused_source = delta(|s| s.control.half_open_refused_source);
    let refused_rate = delta(|s| s.control.handshakes_refused_rate);
    let sessions_refused = delta(|s| s.control.sessions_refused);
    let stage_drops = delta(|s| s.shards_total().drop_queue_full);
    let quiet = phase_pps(slices, 0);
    let lost: u64 = slices.iter().map(|s| s.counts.lost).sum();
    let corrupt: u64 = slices.iter().map(|s| s.counts.corrupt).sum();
    let mut text = String::new();
    let _ = writeln!(
        text,
        "dtls-bench overload: DTLS {}, {} established sessions of {} B bulk, handshake capacity {capacity:.0}/s (probe: {} in flight, {:.1} s), attacks at {:.1}x = {rate:.0}/s from {} sources, {} rounds of {:.1} s slices",
        match cfg.version {
            Version::V12 => "1.2",
            Version::V13 => "1.3",
        },
        cfg.sessions,
        cfg.size,
        cfg.probe_parallel,
        cfg.probe.as_secs_f64(),
        cfg.factor,
        cfg.sources,
        cfg.rounds,
        cfg.slice.as_secs_f64()
    );
    let quiet_cost = shard_ns_per_round_trip(slices, 0, &cpu[0]);
    let cost = |c: Option<f64>| c.map_or("?".to_string(), |c| format!("{c:.0} ns"));
    let _ = writeln!(
        text,
        "  quiet:      {quiet:.0} round trips/s; shard CPU per round trip {}",
        cost(quiet_cost)
    );
    let _ = writeln!(text, "    cpu: {}", cpu::lines(&cpu[0].threads()));
    let mut kept = Vec::new();
    let mut figures = vec![Figure::new(
        "overload.capacity_hs_per_s",
        capacity,
        "handshakes/s",
        Better::Higher,
    )];
    let mut invalid = Vec::new();
    let mut attack_json = Vec::new();
    for (k, (kind, a)) in cfg.attacks.iter().zip(attacks).enumerate() {
        let pps = phase_pps(slices, k + 1);
        let ratio = pps / quiet.max(1e-9);
        kept.push(ratio);
        let offered = a.per_s(a.started);
        let _ = writeln!(
            text,
            "  {:<10}  {pps:.0} round trips/s: kept {:.1} % of quiet; attacker offered {offered:.0}/s of {rate:.0} ({} slot busy), {}",
            format!("{}:", kind.name()),
            ratio * 100.0,
            a.slot_busy,
            match kind {
                Attack::Full => format!(
                    "completed {:.0}/s ({:.2}x capacity), abandoned {}",
                    a.per_s(a.completed),
                    a.per_s(a.completed) / capacity,
                    a.abandoned
                ),
                Attack::HalfOpen =>
                    format!("cookie-bearing hellos {:.0}/s", a.per_s(a.cookie_hellos)),
            }
        );
        let attack_cost = shard_ns_per_round_trip(slices, k + 1, &cpu[k + 1]);
        let cost_ratio = quiet_cost.zip(attack_cost).map(|(q, a)| a / q);
        let _ = writeln!(
            text,
            "    shard CPU per round trip {} ({} quiet's; it also carries the attack's handshake datagrams, in smaller batches)",
            cost(attack_cost),
            cost_ratio.map_or("?".to_string(), |r| format!("{r:.2}x"))
        );
        let _ = writeln!(text, "    cpu: {}", cpu::lines(&cpu[k + 1].threads()));
        let due = rate * a.elapsed.as_secs_f64();
        if (a.started as f64) < 0.9 * due {
            invalid.push(format!(
                "{} attack: the attacker fell behind, {} of {due:.0} handshakes started (a host with more cores, or a lower --factor)",
                kind.name(),
                a.started,
            ));
        }
        figures.push(Figure::new(
            format!("overload.{}.kept", kind.name()),
            ratio,
            "ratio",
            Better::Higher,
        ));
        attack_json.push(json!({
            "attack": kind.name(),
            "pps": pps,
            "kept": ratio,
            "scheduled": a.scheduled,
            "started": a.started,
            "slot_busy": a.slot_busy,
            "cookie_hellos": a.cookie_hellos,
            "completed": a.completed,
            "abandoned": a.abandoned,
            "offered_per_s": offered,
            "shard_ns_per_round_trip": attack_cost,
            "shard_cost_vs_quiet": cost_ratio,
            "completed_per_s": a.per_s(a.completed),
            "cpu": cpu::json(&cpu[k + 1].threads()),
        }));
    }
    let show = |v: Option<u64>| v.map_or("?".to_string(), |v| v.to_string());
    let _ = writeln!(
        text,
        "  server over the run: shed by workers {}, half-open shed {}, refused per source {} / rate {}, sessions refused {}, shard stage drops {}; bulk lost {lost}, corrupt {corrupt}",
        show(shed),
        show(half_open_shed),
        show(refused_source),
        show(refused_rate),
        show(sessions_refused),
        show(stage_drops)
    );
    if corrupt > 0 {
        invalid.push(format!("{corrupt} corrupt echoes"));
    }
    if !invalid.is_empty() {
        let _ = writeln!(text, "  INVALID: {}", invalid.join("; "));
    }
    let results = json!({
        "capacity_hs_per_s": capacity,
        "attack_rate_per_s": rate,
        "quiet_pps": quiet,
        "quiet_cpu": cpu::json(&cpu[0].threads()),
        "quiet_shard_ns_per_round_trip": quiet_cost,
        "attacks": attack_json,
        "bulk_lost": lost,
        "bulk_corrupt": corrupt,
        "server": {
            "handshakes_shed": shed,
            "half_open_shed": half_open_shed,
            "half_open_refused_source": refused_source,
            "handshakes_refused_rate": refused_rate,
            "sessions_refused": sessions_refused,
            "stage_drops": stage_drops,
            "counters": counters,
        },
        "slices": slices.iter().map(|s| json!({"phase": s.phase, "pps": s.counts.pps()})).collect::<Vec<_>>(),
    });
    let config_json = json!({
        "benchmark": "B10",
        "version": match cfg.version { Version::V12 => "1.2", Version::V13 => "1.3" },
        "sessions": cfg.sessions,
        "size": cfg.size,
        "attacks": cfg.attacks.iter().map(|a| a.name()).collect::<Vec<_>>(),
        "factor": cfg.factor,
        "sources": cfg.sources,
        "slice_s": cfg.slice.as_secs_f64(),
        "rounds": cfg.rounds,
        "probe_s": cfg.probe.as_secs_f64(),
        "probe_parallel": cfg.probe_parallel,
        "control_threads": cfg.control_threads,
        "shards": 1,
    });
    Outcome {
        doc: run::document(
            "dtls-bench overload",
            config_json,
            results,
            &figures,
            &invalid,
        ),
        text,
        kept,
    }
}
