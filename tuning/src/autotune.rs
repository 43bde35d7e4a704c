//! `dtls-tune autotune`: measures the data-plane knobs `dtlsd` has keys for with real
//! trials run in-process: `dtls-bench throughput` (an in-process `dtlsd` with an echo
//! backend on loopback, real DTLS 1.2 sessions, AES-128-GCM, 1200-byte datagrams) for `io`,
//! `shards`, `gso`, `io_batch`, `uring_buffers` and the socket buffers
//! (`socket_recv_buffer` = `socket_send_buffer`), and `dtls-bench handshakes` (full DTLS 1.2
//! handshakes against an in-process `dtlsd`) for `control_threads`. It prints every trial and
//! writes the best point into a copy of the operator's configuration.
//!
//! Search: a coarse pass over every usable backend at shard counts 1, 2, 4, ... up to the
//! cores left after the load generator; then, one knob at a time from the best point so
//! far, a coarse grid of each other knob (GSO off, batches 8/32/128, rings, buffers 256 KiB
//! to 32 MiB, 1, 2, 4, ... workers); then the neighbours of the best value of each numeric
//! knob (half and double, the shard count ± 1). The trials start from the base
//! configuration's values.
//!
//! Budget: every trial gets an equal share of `--duration` (at least [`MIN_TRIAL`]);
//! handshakes and a short warm-up come on top. The first pass always runs whole; after it,
//! trials stop once `--duration` is spent, coarse grids before refinements, and the knobs
//! left untried keep the base configuration's value and are named ([`Outcome::untried`]).
//!
//! Latency: the best trial, and the runner-up when it came within 5 % of the best's rate
//! (closer than the budget can tell apart), each run open loop by `dtls-bench latency` at
//! [`LATENCY_LOAD`] of its own round-trip rate ([`latency_trial`]); of two, the one with the
//! lower p99.9 is written.
//!
//! What it does not tune: AF_XDP (`io = "xdp"` needs a NIC queue per shard, not loopback;
//! the trials skip it and say so). On loopback the generator shares the machine, so the
//! figures rank settings on this host; they are not line-rate numbers.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use bench::loadgen::{CipherChoice, IoChoice};
use bench::records::Version;
use bench::throughput;
use dtlsd::config::{DataIo, IO_BATCH_RANGE, SOCKET_BUFFER_RANGE, URING_BUFFERS_RANGE};

/// The shortest measured time a trial gets.
pub const MIN_TRIAL: Duration = Duration::from_millis(300);

/// Coarse `io_batch` values.
const BATCHES: [usize; 3] = [8, 32, 128];
/// Coarse `uring_buffers` values (those below the batch are left out).
const RINGS: [u16; 3] = [32, 256, 1024];
/// Coarse socket buffer sizes, bytes.
const SOCKET_BUFFERS: [usize; 4] = [256 << 10, 1 << 20, 8 << 20, 32 << 20];
/// Handshakes in flight during a handshake trial (spread over 16 loopback sources, so
/// every worker gets some).
pub const HANDSHAKE_PARALLEL: usize = 16;

/// The open-loop load of a latency check: this share of the contender's measured
/// round-trip rate (half load: the tail there is the waiting the settings cause, not
/// saturation).
pub const LATENCY_LOAD: f64 = 0.5;

/// One data-plane trial's settings and what it measured.
#[derive(Debug, Clone)]
pub struct Trial {
    /// `io`.
    pub io: IoChoice,
    /// `shards`.
    pub shards: usize,
    /// `io_batch`, `uring_buffers`, `gso`, `socket_recv_buffer`/`socket_send_buffer`.
    pub data_io: DataIo,
    /// Verified round trips per second.
    pub pps: f64,
    /// Server CPU per verified round trip, ns (shard and control threads).
    pub server_ns: f64,
    /// Generator CPU per round trip, ns.
    pub loadgen_ns: f64,
    /// Round-trip time, 99th percentile, ns.
    pub p99_ns: u64,
}

impl Trial {
    /// Whether `self` ran the settings `(io, shards, data_io)`.
    fn ran(&self, io: IoChoice, shards: usize, data_io: &DataIo) -> bool {
        self.io == io && self.shards == shards && self.data_io == *data_io
    }

    fn same_point(&self, other: &Trial) -> bool {
        self.ran(other.io, other.shards, &other.data_io)
    }
}

/// One handshake-worker trial: full DTLS 1.2 handshakes against an in-process `dtlsd`.
#[derive(Debug, Clone)]
pub struct HandshakeTrial {
    /// `control_threads`.
    pub control_threads: usize,
    /// Completed full handshakes per second.
    pub rate: f64,
    /// Completed per CPU-second of the workers.
    pub per_cpu_s: Option<f64>,
    /// Handshakes that failed.
    pub failed: u64,
}

/// The knobs tuned after `io` and `shards`, by their configuration key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Knob {
    /// `gso`.
    Gso,
    /// `io_batch`.
    Batch,
    /// `uring_buffers`.
    UringBuffers,
    /// `socket_recv_buffer` and `socket_send_buffer`, tried together.
    SocketBuffers,
    /// `control_threads`.
    ControlThreads,
}

impl Knob {
    /// Every knob, in trial order.
    pub const ALL: [Knob; 5] = [
        Knob::Gso,
        Knob::Batch,
        Knob::UringBuffers,
        Knob::SocketBuffers,
        Knob::ControlThreads,
    ];

    /// The configuration key(s).
    pub fn key(self) -> &'static str {
        match self {
            Knob::Gso => "gso",
            Knob::Batch => "io_batch",
            Knob::UringBuffers => "uring_buffers",
            Knob::SocketBuffers => "socket_recv_buffer/socket_send_buffer",
            Knob::ControlThreads => "control_threads",
        }
    }
}

/// Autotune settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Total measured time.
    pub duration: Duration,
    /// Client sessions per trial.
    pub sessions: usize,
    /// Most shards to try.
    pub max_shards: usize,
    /// Backends to try.
    pub backends: Vec<IoChoice>,
    /// Where the trials start: the base configuration's batch, ring, GSO and buffers.
    pub start: DataIo,
    /// Most handshake workers to try.
    pub max_control_threads: usize,
}

impl Settings {
    /// Defaults for a host with `cores` CPUs: backends that set up here, shards up to the
    /// cores the generator leaves (at least one), handshake workers up to the cores.
    pub fn for_host(duration: Duration, cores: usize, uring_ok: bool) -> Self {
        let mut backends = Vec::new();
        if uring_ok {
            backends.push(IoChoice::Uring);
        }
        backends.push(IoChoice::Mmsg);
        Self {
            duration,
            sessions: 16,
            max_shards: cores.saturating_sub(1).max(1),
            backends,
            start: DataIo::default(),
            max_control_threads: cores.clamp(1, 64),
        }
    }
}

/// What the trials found.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    /// Every data-plane trial, in the order run.
    pub trials: Vec<Trial>,
    /// Every handshake-worker trial, in the order run.
    pub handshakes: Vec<HandshakeTrial>,
    /// The knobs at least one trial varied.
    pub tried: Vec<Knob>,
    /// Knobs not trialled, each with why (the budget was spent, or it does not apply).
    pub untried: Vec<(Knob, &'static str)>,
}

/// A contender's latency, open loop at [`LATENCY_LOAD`] of its round-trip rate.
#[derive(Debug, Clone)]
pub struct LatencyTrial {
    /// The settings (and their throughput trial).
    pub trial: Trial,
    /// The offered rate, datagrams per second.
    pub rate: f64,
    /// Round-trip time from the intended send time, ns: median, 99th, 99.9th percentile.
    pub p50_ns: u64,
    /// 99th percentile, ns.
    pub p99_ns: u64,
    /// 99.9th percentile, ns.
    pub p999_ns: u64,
    /// Datagrams lost.
    pub lost: u64,
}

/// The measured time of each latency check for an autotune of `duration`: a tenth of it,
/// within [`MIN_TRIAL`] and 3 s.
pub fn latency_share(duration: Duration) -> Duration {
    (duration / 10).clamp(MIN_TRIAL, Duration::from_secs(3))
}

/// Runs `dtls-bench latency` in-process with `t`'s settings, open loop at [`LATENCY_LOAD`]
/// of `t`'s rate, for `share` (its histogram files go to a scratch directory, removed after).
///
/// # Errors
/// The in-process server or the generator fails.
pub fn latency_trial(t: &Trial, share: Duration, sessions: usize) -> Result<LatencyTrial> {
    let out = std::env::temp_dir().join(format!(
        "dtls-tune-latency-{}-{}",
        std::process::id(),
        t.shards
    ));
    let rate = (t.pps * LATENCY_LOAD).max(1.0);
    let cfg = bench::latency::Config {
        size: 1200,
        sessions,
        rate,
        duration: share,
        warmup: Duration::from_millis(100),
        cipher: CipherChoice::Aes128Gcm,
        version: Version::V12,
        io: t.io,
        shards: t.shards,
        server_io: t.data_io,
        gso: true,
        interval: share,
        out: out.clone(),
        json: None,
        compare_none: false,
        threads: 1,
        server: None,
        spin: false,
        hiccups: false,
    };
    let run = bench::latency::run(&cfg);
    let _ = std::fs::remove_dir_all(&out);
    let run = run
        .with_context(|| {
            format!(
                "latency check io = {}, {}",
                t.io.name(),
                knobs_text(&t.data_io)
            )
        })?
        .run;
    Ok(LatencyTrial {
        trial: t.clone(),
        rate,
        p50_ns: run.histogram.value_at_quantile(0.5),
        p99_ns: run.histogram.value_at_quantile(0.99),
        p999_ns: run.histogram.value_at_quantile(0.999),
        lost: run.counts.lost,
    })
}

/// Of the latency checks, the one with the lowest p99.9 (the first on a tie).
pub fn best_latency(checks: &[LatencyTrial]) -> Option<&LatencyTrial> {
    checks
        .iter()
        .reduce(|a, b| if b.p999_ns < a.p999_ns { b } else { a })
}

/// The header of the latency table ([`LatencyTrial::row`]).
pub const LATENCY_HEADER: &str =
    "  io     shards   rate/s    p50 µs    p99 µs  p99.9 µs   lost  batch  ring  gso  sockbuf";

impl LatencyTrial {
    /// One line of the latency table.
    pub fn row(&self) -> String {
        let t = &self.trial;
        format!(
            "{:<6} {:>6} {:>8.0} {:>9.1} {:>9.1} {:>9.1} {:>6}  {:>5} {:>5}  {:<4} {}",
            t.io.name(),
            t.shards,
            self.rate,
            self.p50_ns as f64 / 1e3,
            self.p99_ns as f64 / 1e3,
            self.p999_ns as f64 / 1e3,
            self.lost,
            t.data_io.batch,
            t.data_io.uring_buffers,
            if t.data_io.gso { "on" } else { "off" },
            bytes_short(t.data_io.recv_buffer),
        )
    }
}

/// Shard counts of the coarse pass: 1, 2, 4, ... and `max`.
fn coarse_shards(max: usize) -> Vec<usize> {
    let mut v: Vec<usize> = std::iter::successors(Some(1usize), |n| n.checked_mul(2))
        .take_while(|n| *n <= max)
        .collect();
    if v.last() != Some(&max) {
        v.push(max);
    }
    v
}

fn trial(
    io: IoChoice,
    shards: usize,
    data_io: DataIo,
    share: Duration,
    sessions: usize,
) -> Result<Trial> {
    let cfg = throughput::Config {
        size: 1200,
        sessions,
        duration: share,
        cipher: CipherChoice::Aes128Gcm,
        version: Version::V12,
        io,
        shards,
        gso: true,
        server_io: data_io,
        window: 8,
        compare_none: false,
        slice: share,
        warmup: Duration::from_millis(100),
        threads: 1,
        server: None,
        compare_cid: false,
    };
    let outcome = throughput::run(&cfg).with_context(|| {
        format!(
            "trial io = {}, shards = {shards}, {}",
            io.name(),
            knobs_text(&data_io)
        )
    })?;
    let m = outcome
        .measured
        .first()
        .context("the throughput run measured nothing")?;
    let ns = m.cpu_ns_per_datagram();
    Ok(Trial {
        io,
        shards,
        data_io,
        pps: m.counts.pps(),
        server_ns: ns["server"].as_f64().unwrap_or(0.0),
        loadgen_ns: ns["loadgen"].as_f64().unwrap_or(0.0),
        p99_ns: m.rtt.p99,
    })
}

fn handshake_trial(control_threads: usize, share: Duration) -> Result<HandshakeTrial> {
    let cfg = bench::handshakes::Config {
        duration: share,
        parallel: HANDSHAKE_PARALLEL,
        resume: false,
        server: None,
        ca: None,
        version: Version::V12,
        group: bench::handshakes::Group::default(),
        control_threads,
        threads: 1,
    };
    let k = bench::handshakes::full_in_process(&cfg)
        .with_context(|| format!("handshake trial control_threads = {control_threads}"))?;
    Ok(HandshakeTrial {
        control_threads,
        rate: k.rate,
        per_cpu_s: k.per_control_cpu_s,
        failed: k.failed,
    })
}

/// `data_io` in words, for errors.
fn knobs_text(d: &DataIo) -> String {
    format!(
        "io_batch = {}, uring_buffers = {}, gso = {}, socket buffers = {}",
        d.batch, d.uring_buffers, d.gso, d.recv_buffer
    )
}

/// The values of `knob` to try around `best` (its best point so far): the coarse grid, or
/// with `refine` the neighbours of `best`'s value (half and double).
fn candidates(knob: Knob, best: &Trial, refine: bool) -> Vec<DataIo> {
    let d = best.data_io;
    let with_batch = |batch: usize| DataIo {
        batch,
        // The ring must hold a batch.
        uring_buffers: d
            .uring_buffers
            .max(u16::try_from(batch.next_power_of_two()).unwrap_or(u16::MAX)),
        ..d
    };
    let in_range =
        |v: usize, (lo, hi): (i64, i64)| i64::try_from(v).is_ok_and(|v| (lo..=hi).contains(&v));
    match knob {
        Knob::Gso if refine => Vec::new(),
        Knob::Gso => vec![DataIo { gso: !d.gso, ..d }],
        Knob::Batch => {
            let values: Vec<usize> = if refine {
                vec![d.batch / 2, d.batch * 2]
            } else {
                BATCHES.to_vec()
            };
            values
                .into_iter()
                .filter(|&b| in_range(b, IO_BATCH_RANGE))
                .map(with_batch)
                .collect()
        }
        Knob::UringBuffers if best.io != IoChoice::Uring => Vec::new(),
        Knob::UringBuffers => {
            let values: Vec<u16> = if refine {
                vec![d.uring_buffers / 2, d.uring_buffers.saturating_mul(2)]
            } else {
                RINGS.to_vec()
            };
            values
                .into_iter()
                .filter(|&r| {
                    in_range(usize::from(r), URING_BUFFERS_RANGE) && usize::from(r) >= d.batch
                })
                .map(|uring_buffers| DataIo { uring_buffers, ..d })
                .collect()
        }
        Knob::SocketBuffers => {
            let values: Vec<usize> = if refine {
                vec![d.recv_buffer / 2, d.recv_buffer * 2]
            } else {
                SOCKET_BUFFERS.to_vec()
            };
            values
                .into_iter()
                .filter(|&b| in_range(b, SOCKET_BUFFER_RANGE))
                .map(|b| DataIo {
                    recv_buffer: b,
                    send_buffer: b,
                    ..d
                })
                .collect()
        }
        Knob::ControlThreads => Vec::new(),
    }
}

/// Worker counts of the handshake trials: 1, 2, 4, ... and `max`, or with `refine` the
/// neighbours of `best`.
fn worker_candidates(max: usize, best: Option<usize>, refine: bool) -> Vec<usize> {
    match (refine, best) {
        (false, _) => coarse_shards(max),
        (true, Some(b)) => [b.saturating_sub(1), b + 1]
            .into_iter()
            .filter(|&n| (1..=max).contains(&n))
            .collect(),
        (true, None) => Vec::new(),
    }
}

/// The trial runner's state: the budget and what ran.
struct Runner<'a, F> {
    settings: &'a Settings,
    share: Duration,
    /// Trials the budget allows after the first pass.
    allowed: usize,
    /// In the first pass, which always runs whole.
    first_pass: bool,
    ran: usize,
    out: Outcome,
    progress: F,
}

impl<F: FnMut(&str)> Runner<'_, F> {
    fn budget_left(&self) -> bool {
        self.ran < self.allowed
    }

    fn untried(&mut self, knob: Knob, why: &'static str) {
        if !self.out.tried.contains(&knob) && !self.out.untried.iter().any(|(k, _)| *k == knob) {
            self.out.untried.push((knob, why));
        }
    }

    /// Runs the data-plane trial `(io, shards, data_io)` unless it ran already; `false`
    /// when the budget is spent.
    fn data(
        &mut self,
        io: IoChoice,
        shards: usize,
        data_io: DataIo,
        knob: Option<Knob>,
    ) -> Result<bool> {
        if self.out.trials.iter().any(|t| t.ran(io, shards, &data_io)) {
            return Ok(true);
        }
        if !self.first_pass && !self.budget_left() {
            return Ok(false);
        }
        let t = trial(io, shards, data_io, self.share, self.settings.sessions)?;
        (self.progress)(&format!("  {}", t.row()));
        self.out.trials.push(t);
        self.ran += 1;
        if let Some(k) = knob.filter(|k| !self.out.tried.contains(k)) {
            self.out.tried.push(k);
        }
        Ok(true)
    }

    fn workers(&mut self, n: usize) -> Result<bool> {
        if self.out.handshakes.iter().any(|h| h.control_threads == n) {
            return Ok(true);
        }
        if !self.budget_left() {
            return Ok(false);
        }
        let h = handshake_trial(n, self.share)?;
        (self.progress)(&format!(
            "  handshakes: control_threads = {}, {:.0}/s, {} failed",
            h.control_threads, h.rate, h.failed
        ));
        self.out.handshakes.push(h);
        self.ran += 1;
        if !self.out.tried.contains(&Knob::ControlThreads) {
            self.out.tried.push(Knob::ControlThreads);
        }
        Ok(true)
    }

    /// One pass over `knob`: its coarse grid or its refinement around the best point.
    fn knob(&mut self, knob: Knob, refine: bool) -> Result<()> {
        if knob == Knob::ControlThreads {
            let best = best_handshake(&self.out.handshakes).map(|h| h.control_threads);
            for n in worker_candidates(self.settings.max_control_threads, best, refine) {
                if !self.workers(n)? {
                    self.untried(knob, "--duration spent");
                }
            }
            return Ok(());
        }
        let Some(best) = best(&self.out.trials).cloned() else {
            return Ok(());
        };
        let values = candidates(knob, &best, refine);
        if values.is_empty() && !refine && knob == Knob::UringBuffers {
            self.untried(knob, "the best backend is mmsg");
        }
        for data_io in values {
            if !self.data(best.io, best.shards, data_io, Some(knob))? {
                self.untried(knob, "--duration spent");
            }
        }
        Ok(())
    }
}

/// Runs the first pass (`io` × coarse shards), the coarse grids of the other knobs and
/// the refinements, within the budget; `progress` gets each trial's row as it finishes.
///
/// # Errors
/// A trial that cannot run (the in-process server or generator fails).
pub fn run(settings: &Settings, progress: impl FnMut(&str)) -> Result<Outcome> {
    if settings.backends.is_empty() {
        bail!("no I/O backend to try");
    }
    let coarse = coarse_shards(settings.max_shards);
    let first = settings.backends.len() * coarse.len();
    let workers = coarse_shards(settings.max_control_threads).len();
    // The first pass, the shards' refinement, GSO, the coarse grids of batch, ring and
    // buffers, the workers, and two neighbours for each numeric knob.
    let planned =
        first + 2 + 1 + BATCHES.len() + RINGS.len() + SOCKET_BUFFERS.len() + workers + 2 * 4;
    let share = (settings.duration / u32::try_from(planned).unwrap_or(u32::MAX)).max(MIN_TRIAL);
    let total = usize::try_from(settings.duration.as_nanos() / share.as_nanos().max(1))
        .unwrap_or(usize::MAX);
    let mut r = Runner {
        settings,
        share,
        allowed: total.saturating_sub(first),
        first_pass: true,
        ran: 0,
        out: Outcome::default(),
        progress,
    };
    for &io in &settings.backends {
        for &shards in &coarse {
            r.data(io, shards, settings.start, None)?;
        }
    }
    r.ran = 0;
    r.first_pass = false;
    for knob in Knob::ALL {
        r.knob(knob, false)?;
    }
    // Refinement: the shard counts next to the best, then each numeric knob's neighbours.
    if let Some(b) = best(&r.out.trials).cloned() {
        for shards in [b.shards.saturating_sub(1), b.shards + 1] {
            if (1..=settings.max_shards).contains(&shards) {
                r.data(b.io, shards, b.data_io, None)?;
            }
        }
    }
    for knob in [
        Knob::Batch,
        Knob::UringBuffers,
        Knob::SocketBuffers,
        Knob::ControlThreads,
    ] {
        r.knob(knob, true)?;
    }
    for knob in Knob::ALL {
        r.untried(knob, "--duration spent");
    }
    Ok(r.out)
}

/// The trial with the most round trips per second (fewer shards on a tie).
pub fn best(trials: &[Trial]) -> Option<&Trial> {
    trials.iter().max_by(|a, b| {
        a.pps
            .total_cmp(&b.pps)
            .then_with(|| b.shards.cmp(&a.shards))
    })
}

/// The handshake trial with the most handshakes per second (fewer workers on a tie).
pub fn best_handshake(trials: &[HandshakeTrial]) -> Option<&HandshakeTrial> {
    trials.iter().max_by(|a, b| {
        a.rate
            .total_cmp(&b.rate)
            .then_with(|| b.control_threads.cmp(&a.control_threads))
    })
}

/// When the runner-up is within `margin` (a fraction) of the best trial's rate, the two are
/// not told apart by this budget: the runner-up.
pub fn runner_up_within(trials: &[Trial], margin: f64) -> Option<&Trial> {
    let top = best(trials)?;
    trials
        .iter()
        .filter(|t| !t.same_point(top))
        .max_by(|a, b| a.pps.total_cmp(&b.pps))
        .filter(|t| t.pps >= top.pps * (1.0 - margin))
}

/// The header of the trial table ([`table`], [`Trial::row`]).
pub const TABLE_HEADER: &str =
    "  io     shards        pps   server ns/rt  loadgen ns/rt   p99 µs  batch  ring  gso  sockbuf";

/// The header of the handshake-worker table ([`handshake_table`], [`HandshakeTrial::row`]).
pub const HANDSHAKE_HEADER: &str = "  control_threads  handshakes/s  per worker CPU-s  failed";

/// Bytes as `256K`, `8M`.
fn bytes_short(b: usize) -> String {
    if b >= 1 << 20 && b.is_multiple_of(1 << 20) {
        format!("{}M", b >> 20)
    } else if b >= 1 << 10 && b.is_multiple_of(1 << 10) {
        format!("{}K", b >> 10)
    } else {
        b.to_string()
    }
}

impl Trial {
    /// This trial as a row of the table under [`TABLE_HEADER`], after a one-character mark.
    pub fn row(&self) -> String {
        let ring = if self.io == IoChoice::Mmsg {
            "-".to_owned()
        } else {
            self.data_io.uring_buffers.to_string()
        };
        format!(
            "{:<6} {:>6} {:>10.0} {:>14.0} {:>14.0} {:>8.1} {:>6} {:>5} {:>4} {:>8}",
            self.io.name(),
            self.shards,
            self.pps,
            self.server_ns,
            self.loadgen_ns,
            self.p99_ns as f64 / 1000.0,
            self.data_io.batch,
            ring,
            if self.data_io.gso { "on" } else { "off" },
            bytes_short(self.data_io.recv_buffer),
        )
    }
}

impl HandshakeTrial {
    /// This trial as a row under [`HANDSHAKE_HEADER`], after a one-character mark.
    pub fn row(&self) -> String {
        format!(
            "{:>15} {:>13.0} {:>17} {:>7}",
            self.control_threads,
            self.rate,
            self.per_cpu_s.map_or("-".into(), |v| format!("{v:.0}")),
            self.failed
        )
    }
}

/// The table of every trial, the best marked.
pub fn table(trials: &[Trial]) -> String {
    let best = best(trials);
    let mut out = format!("{TABLE_HEADER}\n");
    for t in trials {
        let mark = if best.is_some_and(|b| b.same_point(t)) {
            '*'
        } else {
            ' '
        };
        let _ = writeln!(out, "{mark} {}", t.row());
    }
    out
}

/// The table of the latency checks, the lowest p99.9 marked.
pub fn latency_table(checks: &[LatencyTrial]) -> String {
    let chosen = best_latency(checks);
    let mut out = format!("{LATENCY_HEADER}\n");
    for c in checks {
        let mark = if chosen.is_some_and(|b| std::ptr::eq(b, c)) {
            '*'
        } else {
            ' '
        };
        let _ = writeln!(out, "{mark} {}", c.row());
    }
    out
}

/// The table of every handshake-worker trial, the best marked.
pub fn handshake_table(trials: &[HandshakeTrial]) -> String {
    let best = best_handshake(trials).map(|h| h.control_threads);
    let mut out = format!("{HANDSHAKE_HEADER}\n");
    for h in trials {
        let mark = if Some(h.control_threads) == best {
            '*'
        } else {
            ' '
        };
        let _ = writeln!(out, "{mark} {}", h.row());
    }
    out
}

/// The configuration in `base` with `io` and `shards` set to `best`'s, and each other knob
/// in `tried` to the best trial's value (`control_threads` to `workers`', when given), in
/// its `[serve]` or `[connect]` table; other keys and tables are kept, except `interface`
/// (AF_XDP only, and the trials do not choose AF_XDP) and `cpus` (its CPUs were chosen for
/// another shard count: `dtls-tune plan` gives new ones).
///
/// # Errors
/// `base` is not readable TOML with a `[serve]` or `[connect]` table.
pub fn tuned_config(
    base: &Path,
    best: &Trial,
    workers: Option<&HandshakeTrial>,
    tried: &[Knob],
) -> Result<String> {
    let text =
        std::fs::read_to_string(base).with_context(|| format!("reading {}", base.display()))?;
    let mut doc: toml::Table =
        toml::from_str(&text).with_context(|| format!("parsing {}", base.display()))?;
    let key = ["serve", "connect"]
        .into_iter()
        .find(|k| doc.get(*k).is_some_and(toml::Value::is_table))
        .context("no [serve] or [connect] table")?;
    let table = doc
        .get_mut(key)
        .and_then(toml::Value::as_table_mut)
        .context("no [serve] or [connect] table")?;
    let int = |v: usize| toml::Value::Integer(i64::try_from(v).unwrap_or(i64::MAX));
    // A base serving through AF_XDP (`io = "xdp"`, or `auto` with an interface) keeps its
    // path: the trials ran the socket backends on loopback and say nothing about it, so its
    // `io`, `interface` and `shards` (one per NIC queue) stay, and only what applies to
    // either path is written (the handshake workers).
    let xdp = table.contains_key("interface")
        && matches!(
            table.get("io").and_then(toml::Value::as_str),
            Some("xdp" | "auto") | None
        );
    table.remove("cpus");
    if xdp {
        let mut out = format!(
            "# Written by `dtls-tune autotune` from {}: this configuration serves through\n\
             # AF_XDP on its interface, which the in-process loopback trials cannot run; its\n\
             # io, interface and shards are kept. The socket-path trials' best ({} with {}\n\
             # shards, {:.0} round trips/s) applies only if you switch to it.\n",
            base.display(),
            best.io.name(),
            best.shards,
            best.pps,
        );
        if let Some(w) = workers {
            table.insert("control_threads".into(), int(w.control_threads));
            let _ = writeln!(
                out,
                "#   control_threads = {} ({:.0} full handshakes/s)",
                w.control_threads, w.rate
            );
        }
        out.push_str("# Run `dtls-tune plan` for `cpus`.\n");
        out.push_str(&toml::to_string(&doc).context("writing TOML")?);
        return Ok(out);
    }
    table.remove("interface");
    table.insert("io".into(), toml::Value::String(best.io.name().into()));
    table.insert("shards".into(), int(best.shards));
    let d = &best.data_io;
    let mut set = vec![
        format!("io = \"{}\"", best.io.name()),
        format!("shards = {}", best.shards),
    ];
    if tried.contains(&Knob::Gso) {
        table.insert("gso".into(), toml::Value::Boolean(d.gso));
        set.push(format!("gso = {}", d.gso));
    }
    // A batch needs a ring that holds it: the two go together.
    if tried.contains(&Knob::Batch) || tried.contains(&Knob::UringBuffers) {
        table.insert("io_batch".into(), int(d.batch));
        table.insert("uring_buffers".into(), int(usize::from(d.uring_buffers)));
        set.push(format!("io_batch = {}", d.batch));
        set.push(format!("uring_buffers = {}", d.uring_buffers));
    }
    if tried.contains(&Knob::SocketBuffers) {
        table.insert("socket_recv_buffer".into(), int(d.recv_buffer));
        table.insert("socket_send_buffer".into(), int(d.send_buffer));
        set.push(format!(
            "socket_recv_buffer = socket_send_buffer = {}",
            d.recv_buffer
        ));
    }
    if let Some(w) = workers {
        table.insert("control_threads".into(), int(w.control_threads));
        set.push(format!("control_threads = {}", w.control_threads));
    }
    let mut out = format!(
        "# Written by `dtls-tune autotune` from {}: measured best on this host\n\
         # ({:.0} round trips/s, {:.0} ns of server CPU per round trip, in-process loopback\n\
         # trial{}):\n",
        base.display(),
        best.pps,
        best.server_ns,
        workers.map_or(String::new(), |w| format!(
            "; {:.0} full handshakes/s",
            w.rate
        )),
    );
    for line in set {
        let _ = writeln!(out, "#   {line}");
    }
    out.push_str("# Run `dtls-tune plan` for `cpus`.\n");
    out.push_str(&toml::to_string(&doc).context("writing TOML")?);
    Ok(out)
}

/// Parses a duration: `500ms`, `10s`, `2m`, or seconds (`1.5`).
///
/// # Errors
/// Not a positive duration of at most a day.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let (number, scale) = if let Some(n) = text.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = text.strip_suffix('m') {
        (n, 60.0)
    } else {
        (text, 1.0)
    };
    let v: f64 = number
        .trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a duration (500ms, 10s, 2m)"))?;
    let secs = v * scale;
    if !(secs.is_finite() && secs > 0.0 && secs <= 86_400.0) {
        return Err(format!("{text:?}: must be more than 0 and at most a day"));
    }
    Ok(Duration::from_secs_f64(secs))
}

#[cfg(test)]
#[path = "autotune_tests.rs"]
mod tests;
