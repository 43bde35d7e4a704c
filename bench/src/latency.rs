//! `dtls-bench latency` (B3): open loop at a fixed aggregate rate through the in-process
//! `dtlsd` and echo backend, HdrHistogram of round-trip latency (3 significant digits, ns),
//! corrected for coordinated omission: each datagram carries its *intended* send time
//! (start + k / rate) and latency is measured from it, so a stalled generator or server
//! shows up as latency instead of fewer samples.
//!
//! Writes the `.hgrm` percentile distribution (µs) and the `.hlog` interval log (one
//! histogram per `--interval`, V2 compressed, ns values, max column in ms).
//!
//! The run is invalid when the generator fell behind its schedule (more than 1 % of the
//! datagrams sent over 1 ms late, or fewer than 95 % of the scheduled ones sent) or when
//! its thread used 95 % of a core or more (not with `--spin`: a spinning thread always
//! uses its whole core, and its schedule alone tells whether it kept up).
//!
//! Beside the run, probes on every CPU measure the host's hiccups ([`crate::hiccup`]), so
//! that a tail the host put there is told from one the data plane did.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::{Context as _, Result};
use hdrhistogram::Histogram;
use serde_json::{Value, json};

use crate::compare::{Better, Figure};
use crate::hiccup::{HiccupMeter, Hiccups};
use crate::hist::{self, HGRM_SCALE, Interval, Percentiles};
use crate::loadgen::cpu::{self, CpuSnapshot, ThreadCpu};
use crate::loadgen::flow::{Counts, FlowConfig, Flows};
use crate::loadgen::run;
use crate::loadgen::server::TestServer;
use crate::loadgen::threads::{self, Lockstep};
use crate::loadgen::{CipherChoice, IoChoice};
use crate::records::Version;

/// Settings of one `latency` run.
#[derive(Debug, Clone)]
pub struct Config {
    /// Plaintext bytes per datagram.
    pub size: usize,
    /// Client sessions (the rate is spread round robin over them).
    pub sessions: usize,
    /// Aggregate datagrams per second.
    pub rate: f64,
    /// Measured time.
    pub duration: Duration,
    /// Unmeasured warm-up at the same rate.
    pub warmup: Duration,
    /// Record protection.
    pub cipher: CipherChoice,
    /// The DTLS version of the sessions (the null baseline's are DTLS 1.2).
    pub version: Version,
    /// Server I/O backend.
    pub io: IoChoice,
    /// Server shards.
    pub shards: usize,
    /// The in-process server's data-plane I/O sizes (`io_batch`, `uring_buffers`, `gso`,
    /// socket buffers); ignored with [`Config::server`].
    pub server_io: dtlsd::config::DataIo,
    /// Generator GSO/GRO.
    pub gso: bool,
    /// `.hlog` interval.
    pub interval: Duration,
    /// Where to write `latency.hgrm`, `latency.hlog` (and `result.json` when `json` is unset).
    pub out: PathBuf,
    /// JSON result file (default `out/result.json`).
    pub json: Option<PathBuf>,
    /// Also measure the null baseline (after the cipher's run, same rate) and report the
    /// ratios of the percentiles (B3's ratio to B1's latency).
    pub compare_none: bool,
    /// Generator threads: the sessions and the rate are split evenly over them.
    pub threads: usize,
    /// A running server instead of the in-process one (no `compare_none` then).
    pub server: Option<run::External>,
    /// Generator threads spin between sends instead of sleeping ([`Flows::set_spin`]);
    /// the in-process echo backend then stays off their cores.
    pub spin: bool,
    /// Measure the host's hiccups on every CPU during each run ([`crate::hiccup`]).
    pub hiccups: bool,
}

impl Config {
    fn json(&self) -> Value {
        json!({
            "benchmark": "B3",
            "size": self.size,
            "sessions": self.sessions,
            "rate_pps": self.rate,
            "duration_s": self.duration.as_secs_f64(),
            "warmup_s": self.warmup.as_secs_f64(),
            "cipher": self.cipher.name(),
            "version": self.version.name(),
            "io": self.io.name(),
            "shards": self.shards,
            "gso": self.gso,
            "interval_s": self.interval.as_secs_f64(),
            "compare_none": self.compare_none,
            "server": self.server.as_ref().map_or("in-process".to_string(), |s| s.addr.to_string()),
            "generator": {"threads": self.threads, "rate_per_thread_pps": self.rate / self.threads.max(1) as f64, "spin": self.spin},
            "hiccups": self.hiccups,
            "mode": "open loop, latency from intended send time",
            "histogram": {"unit": "ns", "significant_digits": hist::SIGFIG, "hgrm_unit": "us"},
        })
    }
}

/// An open-loop measurement.
#[derive(Debug, Clone)]
pub struct LatencyRun {
    /// Counters.
    pub counts: Counts,
    /// The whole run's histogram, ns.
    pub histogram: Histogram<u64>,
    /// One histogram per interval.
    pub intervals: Vec<Interval>,
    /// Wall-clock start.
    pub started: SystemTime,
    /// CPU per thread.
    pub cpu: Vec<ThreadCpu>,
    /// Target rate.
    pub rate: f64,
    /// Each generator thread's counters (its share of the rate is `rate / threads`).
    pub per_thread: Vec<Counts>,
    /// The generator threads spun (their CPU use says nothing of their load).
    pub spin: bool,
    /// The host's hiccups during the run, when measured.
    pub hiccups: Option<Hiccups>,
}

impl LatencyRun {
    /// Reasons the run is invalid (the generator fell behind).
    pub fn invalid_reasons(&self) -> Vec<String> {
        let mut out = Vec::new();
        let scheduled = self.rate * self.counts.elapsed.as_secs_f64();
        if (self.counts.sent as f64) < 0.95 * scheduled {
            out.push(format!(
                "generator sent {} of {scheduled:.0} scheduled datagrams",
                self.counts.sent
            ));
        }
        if self.counts.late_sends * 100 > self.counts.sent.max(1) {
            out.push(format!(
                "generator behind schedule: {} of {} sends over 1 ms late (max lag {:?})",
                self.counts.late_sends, self.counts.sent, self.counts.max_send_lag
            ));
        }
        // A thread behind its share while the others were early would hide in the sums.
        let threads = self.per_thread.len();
        if threads > 1 {
            let share = self.rate / threads as f64;
            for (i, c) in self.per_thread.iter().enumerate() {
                let scheduled = share * c.elapsed.as_secs_f64();
                if (c.sent as f64) < 0.95 * scheduled || c.late_sends * 100 > c.sent.max(1) {
                    out.push(format!(
                        "generator thread loadgen-{i} behind its share: sent {} of {scheduled:.0} scheduled, {} over 1 ms late",
                        c.sent, c.late_sends
                    ));
                }
            }
        }
        if !self.spin {
            out.extend(run::saturation_reasons(&self.cpu));
        }
        if self.counts.received == 0 {
            out.push("no datagram came back".into());
        }
        if self.counts.corrupt > 0 || self.counts.open_errors > 0 {
            out.push(format!(
                "{} corrupt echoes, {} records failed to open",
                self.counts.corrupt, self.counts.open_errors
            ));
        }
        out
    }

    /// Writes `latency.hgrm` and `latency.hlog` into `dir`.
    pub fn write_files(&self, dir: &Path) -> Result<(PathBuf, PathBuf)> {
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
        let hgrm = dir.join("latency.hgrm");
        std::fs::write(&hgrm, hist::hgrm(&self.histogram, HGRM_SCALE))
            .with_context(|| format!("write {}", hgrm.display()))?;
        let hlog = dir.join("latency.hlog");
        let bytes = hist::hlog(self.started, &self.intervals)?;
        std::fs::write(&hlog, bytes).with_context(|| format!("write {}", hlog.display()))?;
        Ok((hgrm, hlog))
    }

    /// `{"rate_pps", "sent", "received", "latency_ns", ...}`.
    pub fn json(&self) -> Value {
        json!({
            "rate_pps": self.rate,
            "achieved_pps": self.counts.pps(),
            "sent": self.counts.sent,
            "verified": self.counts.received,
            "seconds": self.counts.elapsed.as_secs_f64(),
            "latency_ns": Percentiles::of(&self.histogram).json(),
            "max_send_lag_ns": self.counts.max_send_lag.as_nanos() as u64,
            "late_sends": self.counts.late_sends,
            "spin": self.spin,
            "run_queue_wait_ns": self.cpu.iter().filter(|t| t.wait_ns > 0).map(|t| (t.name.clone(), json!(t.wait_ns))).collect::<serde_json::Map<_, _>>(),
            "timer_arms": self.counts.timer_arms,
            "spin_polls": self.counts.spin_polls,
            "hiccups": self.hiccups.as_ref().map(Hiccups::json),
            "per_thread": self.per_thread.iter().map(|c| json!({
                "sent": c.sent, "verified": c.received, "late_sends": c.late_sends,
                "max_send_lag_ns": c.max_send_lag.as_nanos() as u64,
            })).collect::<Vec<_>>(),
            "drops": {
                "lost_or_late": self.counts.outstanding_at_end,
                "stale": self.counts.stale,
                "corrupt": self.counts.corrupt,
                "open_errors": self.counts.open_errors,
                "send_errors": self.counts.send_errors,
            },
            "cpu": cpu::json(&self.cpu),
        })
    }
}

/// Open loop on `flows` at `rate` for `duration` (after `warmup` at the same rate).
pub fn measure(
    flows: &mut Flows,
    rate: f64,
    duration: Duration,
    warmup: Duration,
    interval: Duration,
) -> Result<LatencyRun> {
    let mut histogram = hist::new_latency_ns()?;
    if !warmup.is_zero() {
        flows.open_loop(rate, warmup, &mut histogram, warmup, |_, _| {})?;
        histogram.reset();
    }
    let mut intervals = Vec::new();
    let started = SystemTime::now();
    let before = CpuSnapshot::take();
    let counts = flows.open_loop(rate, duration, &mut histogram, interval, |start, h| {
        intervals.push(Interval {
            start,
            length: interval,
            histogram: h.clone(),
        });
    })?;
    let after = CpuSnapshot::take();
    // The last interval may be shorter than `interval`.
    if let Some(last) = intervals.last_mut() {
        last.length = counts
            .elapsed
            .saturating_sub(last.start)
            .max(Duration::from_millis(1));
    }
    Ok(LatencyRun {
        counts,
        histogram,
        intervals,
        started,
        cpu: before.delta(&after),
        rate,
        per_thread: vec![counts],
        spin: false,
        hiccups: None,
    })
}

/// One generator thread's open-loop run: its counters, histograms and the marks around it.
struct Part {
    counts: Counts,
    histogram: Histogram<u64>,
    intervals: Vec<Interval>,
    started: SystemTime,
    marks: (usize, usize),
    hiccups: Option<Hiccups>,
}

/// [`measure`] on one generator thread of several: its share `rate` (warm-up unmarked),
/// the measured run between two marks of `lockstep`, so that all threads run it together.
/// With `probes` (one thread's), the host's hiccups between the marks.
fn measure_part(
    flows: &mut Flows,
    rate: f64,
    cfg: &Config,
    lockstep: &Lockstep,
    probes: Option<&HiccupMeter>,
) -> Result<Part> {
    flows.set_spin(cfg.spin);
    let mut histogram = hist::new_latency_ns()?;
    if !cfg.warmup.is_zero() {
        flows.open_loop(rate, cfg.warmup, &mut histogram, cfg.warmup, |_, _| {})?;
        histogram.reset();
    }
    let mut intervals = Vec::new();
    let first = lockstep.mark()?;
    let hiccups_before = probes.map(HiccupMeter::snapshot).transpose()?;
    let started = SystemTime::now();
    let interval = cfg.interval;
    let counts = flows.open_loop(rate, cfg.duration, &mut histogram, interval, |start, h| {
        intervals.push(Interval {
            start,
            length: interval,
            histogram: h.clone(),
        });
    })?;
    let last = lockstep.mark()?;
    let hiccups = match (probes, hiccups_before) {
        (Some(p), Some(before)) => Some(p.snapshot()?.since(&before)?),
        _ => None,
    };
    if let Some(last) = intervals.last_mut() {
        last.length = counts
            .elapsed
            .saturating_sub(last.start)
            .max(Duration::from_millis(1));
    }
    Ok(Part {
        counts,
        histogram,
        intervals,
        started,
        marks: (first, last),
        hiccups,
    })
}

/// The threads' parts of one run merged: counters added (the run lasted as long as its
/// longest thread), histograms and same-numbered intervals added, the CPU between the marks.
fn merge_parts(parts: Vec<Part>, rate: f64, spin: bool, lockstep: &Lockstep) -> Result<LatencyRun> {
    let mut counts = Counts::default();
    let mut histogram = hist::new_latency_ns()?;
    let mut intervals: Vec<Interval> = Vec::new();
    let mut started = None::<SystemTime>;
    let mut per_thread = Vec::with_capacity(parts.len());
    let mut hiccups = None;
    let marks = parts
        .first()
        .map(|p| p.marks)
        .context("no generator thread")?;
    for p in parts {
        counts.add_concurrent(&p.counts);
        per_thread.push(p.counts);
        hiccups = hiccups.or(p.hiccups);
        histogram.add(&p.histogram).context("merge histograms")?;
        started = Some(started.map_or(p.started, |s| s.min(p.started)));
        for (k, iv) in p.intervals.into_iter().enumerate() {
            match intervals.get_mut(k) {
                Some(m) => {
                    m.start = m.start.min(iv.start);
                    m.length = m.length.max(iv.length);
                    m.histogram.add(&iv.histogram).context("merge intervals")?;
                }
                None => intervals.push(iv),
            }
        }
    }
    let cpu = match (lockstep.snapshot(marks.0), lockstep.snapshot(marks.1)) {
        (Some(before), Some(after)) => before.delta(&after),
        _ => Vec::new(),
    };
    Ok(LatencyRun {
        counts,
        histogram,
        intervals,
        started: started.unwrap_or_else(SystemTime::now),
        cpu,
        rate,
        per_thread,
        spin,
        hiccups,
    })
}

/// The in-process server(s) (one per cipher) or `cfg.server`, and the client groups.
fn setup(cfg: &Config, ciphers: &[CipherChoice]) -> Result<(Vec<TestServer>, Vec<run::Group>)> {
    match &cfg.server {
        Some(ext) => {
            if ciphers.len() > 1 {
                anyhow::bail!(
                    "--compare-none needs the in-process server (null record protection): not with --server"
                );
            }
            Ok((Vec::new(), vec![ext.group(cfg.cipher, cfg.version)]))
        }
        None => run::start_servers_with(
            ciphers,
            cfg.version,
            cfg.shards,
            cfg.io,
            run::server_mtu(cfg.size),
            cfg.server_io,
            if cfg.spin {
                run::BackendPlacement::OffSpinningGenerators {
                    threads: cfg.threads.max(1),
                }
            } else {
                run::BackendPlacement::Auto
            },
        ),
    }
}

/// The hiccup probes of a run (after its servers started), when asked for.
fn start_probes(cfg: &Config) -> Result<Option<HiccupMeter>> {
    if !cfg.hiccups {
        return Ok(None);
    }
    HiccupMeter::on_all_cpus()
        .context("hiccup probes (--no-hiccups leaves them out)")
        .map(Some)
}

/// The report's hiccup lines for `run` (none when not measured), `label` before them.
fn hiccup_lines(text: &mut String, indent: &str, label: &str, run: &LatencyRun) {
    if let Some(h) = &run.hiccups {
        let _ = writeln!(
            text,
            "{indent}{label}run-queue waits: {}",
            cpu::waits_line(&run.cpu, run.counts.elapsed)
        );
        let _ = writeln!(text, "{indent}{label}host hiccups: {}", h.line());
        let _ = writeln!(
            text,
            "{indent}{label}other processes: {}",
            cpu::others_line(&h.others)
        );
        for note in [h.note(), h.others_note()].into_iter().flatten() {
            let _ = writeln!(text, "{indent}note: {note}");
        }
    }
}

/// The outcome: document, text and the measurement.
#[derive(Debug)]
pub struct Outcome {
    /// The result document.
    pub doc: Value,
    /// The human-readable report.
    pub text: String,
    /// The measurement.
    pub run: LatencyRun,
}

/// Runs the benchmark and writes its files.
pub fn run(cfg: &Config) -> Result<Outcome> {
    let mtu = run::server_mtu(cfg.size);
    let mut ciphers = vec![cfg.cipher];
    if cfg.compare_none && !cfg.cipher.is_null() {
        ciphers.push(CipherChoice::None);
    }
    let (servers, groups) = setup(cfg, &ciphers)?;
    let probes = start_probes(cfg)?;
    let flow_cfg = FlowConfig {
        size: cfg.size,
        window: 64,
        gso: cfg.gso,
    };
    let threads = cfg.threads.max(1);
    let share = cfg.rate / threads as f64;
    // With --compare-none: the cipher's run, then the baseline's, same rate and sessions.
    let generated = threads::on_generators(
        &groups,
        cfg.sessions,
        threads,
        flow_cfg,
        usize::from(mtu),
        |gen_share| {
            let mut out = Vec::with_capacity(gen_share.flows.len());
            let mine = probes.as_ref().filter(|_| gen_share.index == 0);
            for mut f in gen_share.flows {
                out.push(measure_part(&mut f, share, cfg, gen_share.lockstep, mine)?);
                f.close();
            }
            Ok(out)
        },
    );
    for s in servers {
        s.shutdown()?;
    }
    let (per_thread, lockstep) = generated?;
    let mut by_group: Vec<Vec<Part>> = groups.iter().map(|_| Vec::new()).collect();
    for thread in per_thread {
        for (parts, part) in by_group.iter_mut().zip(thread) {
            parts.push(part);
        }
    }
    let mut runs = by_group
        .into_iter()
        .map(|parts| merge_parts(parts, cfg.rate, cfg.spin, &lockstep))
        .collect::<Result<Vec<_>>>()?;
    let baseline = if runs.len() > 1 { runs.pop() } else { None };
    let run = runs
        .pop()
        .ok_or_else(|| anyhow::anyhow!("no latency measurement"))?;
    let (hgrm, hlog) = run.write_files(&cfg.out)?;
    let mut invalid = run.invalid_reasons();
    let p = Percentiles::of(&run.histogram);
    let mut text = String::new();
    let _ = writeln!(
        text,
        "dtls-bench latency: {} B, {} sessions, {:.0} pps open loop, {}, {}",
        cfg.size,
        cfg.sessions,
        cfg.rate,
        run::label(cfg.cipher, cfg.version),
        generator_note(cfg)
    );
    let _ = writeln!(text, "  {}", p.line_us());
    let _ = writeln!(text, "  cpu: {}", cpu::lines(&run.cpu));
    let _ = writeln!(text, "  generator: {}", kept_up(&run));
    hiccup_lines(&mut text, "  ", "", &run);
    let prefix = format!(
        "latency.{}.{}.{}pps",
        run::label(cfg.cipher, cfg.version),
        cfg.size,
        cfg.rate as u64
    );
    let mut figures = latency_figures(&prefix, &p);
    let mut ratios = json!({});
    if let Some(b) = &baseline {
        let bp = Percentiles::of(&b.histogram);
        let ratio = |a: u64, z: u64| if z > 0 { a as f64 / z as f64 } else { 0.0 };
        let (r50, r99) = (ratio(p.p50, bp.p50), ratio(p.p99, bp.p99));
        let _ = writeln!(text, "  none (baseline): {}", bp.line_us());
        hiccup_lines(&mut text, "  ", "none (baseline): ", b);
        let _ = writeln!(text, "  ratio to the baseline: p50 {r50:.3}, p99 {r99:.3}");
        invalid.extend(
            b.invalid_reasons()
                .into_iter()
                .map(|r| format!("baseline: {r}")),
        );
        figures.extend(latency_figures(
            &format!("latency.none.{}.{}pps", cfg.size, cfg.rate as u64),
            &bp,
        ));
        figures.push(Figure::new(
            format!("{prefix}.p50_ratio_to_none"),
            r50,
            "ratio",
            Better::Lower,
        ));
        ratios = json!({"p50_to_none": r50, "p99_to_none": r99});
    }
    let _ = writeln!(text, "  wrote {} and {}", hgrm.display(), hlog.display());
    if !invalid.is_empty() {
        let _ = writeln!(text, "  INVALID: {}", invalid.join("; "));
    }
    let results = json!({
        "pps": run.counts.pps(),
        "latency_ns": p.json(),
        "cpu": cpu::json(&run.cpu),
        "drops": run.json()["drops"].clone(),
        "run": run.json(),
        "baseline": baseline.as_ref().map(LatencyRun::json),
        "ratios": ratios,
        "files": {"hgrm": hgrm.display().to_string(), "hlog": hlog.display().to_string()},
    });
    let doc = run::document(
        "dtls-bench latency",
        cfg.json(),
        results,
        &figures,
        &invalid,
    );
    let json_path = cfg
        .json
        .clone()
        .unwrap_or_else(|| cfg.out.join("result.json"));
    run::write_json(&json_path, &doc)?;
    let _ = writeln!(text, "  wrote {}", json_path.display());
    Ok(Outcome { doc, text, run })
}

/// The generator threads and the server of a run, for the report's first line.
fn generator_note(cfg: &Config) -> String {
    let server = cfg
        .server
        .as_ref()
        .map_or("in-process server".to_string(), |s| {
            format!("server {} (external)", s.addr)
        });
    let spin = if cfg.spin { " (spinning)" } else { "" };
    format!("{} generator thread(s){spin}, {server}", cfg.threads.max(1))
}

/// Whether the generator kept to its schedule: every thread sent its share on time and no
/// thread was saturated (else the run is invalid, see [`LatencyRun::invalid_reasons`]).
fn kept_up(run: &LatencyRun) -> String {
    let threads = run.per_thread.len().max(1);
    let behind = run
        .invalid_reasons()
        .iter()
        .filter(|r| r.contains("generator"))
        .count();
    if behind == 0 {
        format!(
            "{threads} thread(s), kept up (max send lag {:?})",
            run.counts.max_send_lag
        )
    } else {
        format!("{threads} thread(s), FELL BEHIND: the run is invalid")
    }
}

/// p50/p99/p99.9/max figures (ns, lower is better) under `prefix`.
pub fn latency_figures(prefix: &str, p: &Percentiles) -> Vec<Figure> {
    [
        ("p50", p.p50),
        ("p99", p.p99),
        ("p999", p.p999),
        ("max", p.max),
    ]
    .into_iter()
    .map(|(k, v)| Figure::new(format!("{prefix}.{k}_ns"), v as f64, "ns", Better::Lower))
    .collect()
}

/// B3 at fractions of the maximum: a closed-loop probe (window 16 per session, `probe`
/// long) on the same sessions measures the maximum rate, then each of `loads` (fractions,
/// e.g. 0.1 0.5 0.9) runs open loop at that share of it. Files go to
/// `out/load-<percent>/latency.{hgrm,hlog}`; one result document for all loads.
pub fn run_loads(cfg: &Config, loads: &[f64], probe: Duration) -> Result<Outcome> {
    if loads.is_empty()
        || loads
            .iter()
            .any(|l| !(l.is_finite() && *l > 0.0 && *l <= 1.0))
    {
        anyhow::bail!("--load fractions must be in (0, 1]");
    }
    let mtu = run::server_mtu(cfg.size);
    let (servers, groups) = setup(cfg, &[cfg.cipher])?;
    let probes = start_probes(cfg)?;
    let flow_cfg = FlowConfig {
        size: cfg.size,
        window: 16,
        gso: cfg.gso,
    };
    let threads = cfg.threads.max(1);
    let generated = threads::on_generators(
        &groups,
        cfg.sessions,
        threads,
        flow_cfg,
        usize::from(mtu),
        |share| {
            let mut flows = share.flows;
            let Some(mut f) = flows.pop() else {
                anyhow::bail!("no sessions");
            };
            // All threads probe at once; the maximum is their sum.
            let mine = f.closed_loop(probe, None)?.pps();
            let max = share.lockstep.sum(mine)?;
            if max < 1.0 {
                anyhow::bail!("the closed-loop probe moved nothing");
            }
            let mut parts = Vec::with_capacity(loads.len());
            let mine = probes.as_ref().filter(|_| share.index == 0);
            for &load in loads {
                parts.push(measure_part(
                    &mut f,
                    max * load / threads as f64,
                    cfg,
                    share.lockstep,
                    mine,
                )?);
            }
            f.close();
            Ok((max, parts))
        },
    );
    for s in servers {
        s.shutdown()?;
    }
    let (per_thread, lockstep) = generated?;
    let max_pps = per_thread.first().map_or(0.0, |(max, _)| *max);
    let mut by_load: Vec<Vec<Part>> = loads.iter().map(|_| Vec::new()).collect();
    for (_, thread) in per_thread {
        for (parts, part) in by_load.iter_mut().zip(thread) {
            parts.push(part);
        }
    }
    let runs = by_load
        .into_iter()
        .zip(loads)
        .map(|(parts, load)| merge_parts(parts, max_pps * load, cfg.spin, &lockstep))
        .collect::<Result<Vec<_>>>()?;
    let mut text = String::new();
    let _ = writeln!(
        text,
        "dtls-bench latency: {} B, {} sessions, {}, {}, open loop at fractions of the closed-loop maximum {:.0} pps",
        cfg.size,
        cfg.sessions,
        run::label(cfg.cipher, cfg.version),
        generator_note(cfg),
        max_pps
    );
    let mut figures = Vec::new();
    let mut invalid = Vec::new();
    let mut entries = Vec::new();
    for (load, r) in loads.iter().zip(&runs) {
        let pct = (load * 100.0).round() as u64;
        let dir = cfg.out.join(format!("load-{pct}"));
        let (hgrm, hlog) = r.write_files(&dir)?;
        let p = Percentiles::of(&r.histogram);
        let _ = writeln!(text, "  {pct:>3} % ({:.0} pps): {}", r.rate, p.line_us());
        let _ = writeln!(text, "        cpu: {}", cpu::lines(&r.cpu));
        let _ = writeln!(text, "        generator: {}", kept_up(r));
        hiccup_lines(&mut text, "        ", "", r);
        figures.extend(latency_figures(
            &format!(
                "latency.{}.{}.load{pct}",
                run::label(cfg.cipher, cfg.version),
                cfg.size
            ),
            &p,
        ));
        invalid.extend(
            r.invalid_reasons()
                .into_iter()
                .map(|x| format!("load {pct} %: {x}")),
        );
        let mut e = r.json();
        e["load"] = json!(load);
        e["files"] =
            json!({"hgrm": hgrm.display().to_string(), "hlog": hlog.display().to_string()});
        entries.push(e);
    }
    if !invalid.is_empty() {
        let _ = writeln!(text, "  INVALID: {}", invalid.join("; "));
    }
    let mut config = cfg.json();
    config["loads"] = json!(loads);
    config["probe_s"] = json!(probe.as_secs_f64());
    let first = runs.first();
    let results = json!({
        "max_pps": max_pps,
        "pps": first.map(|r| r.counts.pps()),
        "latency_ns": first.map(|r| Percentiles::of(&r.histogram).json()),
        "loads": entries,
    });
    let doc = run::document("dtls-bench latency", config, results, &figures, &invalid);
    let json_path = cfg
        .json
        .clone()
        .unwrap_or_else(|| cfg.out.join("result.json"));
    run::write_json(&json_path, &doc)?;
    let _ = writeln!(
        text,
        "  wrote {} and load-*/latency.{{hgrm,hlog}}",
        json_path.display()
    );
    let run = runs
        .into_iter()
        .last()
        .ok_or_else(|| anyhow::anyhow!("no latency measurement"))?;
    Ok(Outcome { doc, text, run })
}
