//! `dtls-bench throughput` (B1/B2): closed-loop relay throughput through the in-process
//! `dtlsd` with an echo backend, per cipher, and R1 = DTLS pps / plaintext pps when
//! `--compare-none` runs the chosen cipher and the null baseline interleaved.
//!
//! Every session keeps `window` datagrams outstanding; a datagram counts once its echo came
//! back, opened and matched byte for byte. Rates: `pps` = verified round trips per second,
//! `gbps_payload` = pps × size × 8 (one direction, plaintext), `gbps_wire` = pps × (record +
//! 28 B IPv4/UDP) × 8 (the client→server leg).
//!
//! With `--compare-none` two servers run in this process (one with null record protection),
//! each with its own sessions; after a warm-up of each, slices of `--slice` alternate
//! (cipher, none, none, cipher, …); R1 is the median of the per-round ratios DTLS pps /
//! plaintext pps (each round is one cipher slice and one baseline slice), with their min and
//! max, and the ratio of the totals.

use std::fmt::Write as _;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use hdrhistogram::Histogram;
use serde_json::{Value, json};

use crate::compare::{Better, Figure};
use crate::hist::{self, Percentiles};
use crate::loadgen::cpu;
use crate::loadgen::flow::{Counts, FlowConfig, Flows};
use crate::loadgen::run::{self, CpuAccum};
use crate::loadgen::server::TestServer;
use crate::loadgen::threads::{self, Lockstep};
use crate::loadgen::{CipherChoice, IP_UDP_HEADER, IoChoice};
use crate::records::Version;

/// Settings of one `throughput` run.
#[derive(Debug, Clone)]
pub struct Config {
    /// Plaintext bytes per datagram.
    pub size: usize,
    /// Client sessions.
    pub sessions: usize,
    /// Measured time (split in slices with `compare_none`).
    pub duration: Duration,
    /// Record protection.
    pub cipher: CipherChoice,
    /// The DTLS version of the sessions (the null baseline's are DTLS 1.2).
    pub version: Version,
    /// Server I/O backend.
    pub io: IoChoice,
    /// Server shards.
    pub shards: usize,
    /// Generator GSO/GRO.
    pub gso: bool,
    /// The in-process server's batch, ring, GSO and socket buffer sizes (its `io_batch`,
    /// `uring_buffers`, `gso`, `socket_recv_buffer`, `socket_send_buffer`).
    pub server_io: dtlsd::config::DataIo,
    /// Outstanding datagrams per session.
    pub window: usize,
    /// Also run the null baseline interleaved and report R1.
    pub compare_none: bool,
    /// Length of one slice with `compare_none`.
    pub slice: Duration,
    /// Unmeasured warm-up per server.
    pub warmup: Duration,
    /// Generator threads (the sessions are split over them; at most `sessions`).
    pub threads: usize,
    /// A running server instead of the in-process one (no `compare_none` then: that needs
    /// a server with null record protection).
    pub server: Option<run::External>,
    /// The same run with connection IDs on and off through the same server, interleaved,
    /// and their ratio.
    pub compare_cid: bool,
}

impl Config {
    /// The server MTU these sizes need.
    pub fn mtu(&self) -> u16 {
        run::server_mtu(self.size)
    }

    fn json(&self) -> Value {
        json!({
            "benchmark": if self.compare_none { "B1+B2" } else if self.cipher.is_null() { "B1" } else { "B2" },
            "server": self.server.as_ref().map_or("in-process".to_string(), |s| s.addr.to_string()),
            "compare_cid": self.compare_cid,
            "size": self.size,
            "sessions": self.sessions,
            "duration_s": self.duration.as_secs_f64(),
            "cipher": self.cipher.name(),
            "version": self.version.name(),
            "io": self.io.name(),
            "shards": self.shards,
            "gso": self.gso,
            "window": self.window,
            "compare_none": self.compare_none,
            "slice_s": self.slice.as_secs_f64(),
            "warmup_s": self.warmup.as_secs_f64(),
            "generator": {"threads": self.threads, "io": "mmsg", "socket_per_session": true,
                          "pinning": "generator thread i on the i-th core from the last, dtlsd shard N on core N"},
            "mode": "closed loop",
        })
    }
}

/// One cipher's measurement.
#[derive(Debug, Clone)]
pub struct Measured {
    /// Record protection.
    pub cipher: CipherChoice,
    /// Whether the sessions offered connection IDs (`--compare-cid`'s CID half).
    pub cid: bool,
    /// Sessions whose records carried a connection ID (either way).
    pub cid_sessions: usize,
    /// Counters of each generator thread, summed over its slices.
    pub per_thread: Vec<Counts>,
    /// Counters summed over its slices.
    pub counts: Counts,
    /// Per-slice pps.
    pub slice_pps: Vec<f64>,
    /// Round-trip times, ns.
    pub rtt: Percentiles,
    /// CPU per thread over its slices.
    pub cpu: Vec<cpu::ThreadCpu>,
    /// Bytes of one datagram on the wire.
    pub wire_bytes: usize,
    /// Handshakes/s when its sessions came up.
    pub handshakes_per_s: f64,
}

impl Measured {
    /// CPU time per verified round trip, ns: server threads (`dtlsd-*`), generator
    /// (`loadgen-*`), echo backend. Each datagram is opened and sealed once by each side.
    pub fn cpu_ns_per_datagram(&self) -> Value {
        let n = self.counts.received.max(1) as f64;
        let sum = |prefix: &str| -> f64 {
            self.cpu
                .iter()
                .filter(|t| t.name.starts_with(prefix))
                .map(|t| t.cpu_ns as f64)
                // From 0.0: an empty f64 sum is -0.0, printed "-0".
                .fold(0.0, |a, b| a + b)
                / n
        };
        json!({
            "server": sum("dtlsd-"),
            "loadgen": sum("loadgen-"),
            "echo": sum("echo-backend"),
        })
    }

    fn json(&self, size: usize) -> Value {
        let pps = self.counts.pps();
        json!({
            "cipher": self.cipher.name(),
            "cid": self.cid,
            "cid_sessions": self.cid_sessions,
            "cid_records": self.counts.cid_records,
            "per_thread": self.per_thread.iter().map(|c| json!({
                "sent": c.sent, "verified": c.received, "pps": c.pps(),
            })).collect::<Vec<_>>(),
            "pps": pps,
            "gbps_payload": pps * size as f64 * 8.0 / 1e9,
            "gbps_wire": pps * self.wire_bytes as f64 * 8.0 / 1e9,
            "wire_bytes_per_datagram": self.wire_bytes,
            "sent": self.counts.sent,
            "verified": self.counts.received,
            "seconds": self.counts.elapsed.as_secs_f64(),
            "slice_pps": self.slice_pps,
            "handshakes_per_s": self.handshakes_per_s,
            "rtt_ns": self.rtt.json(),
            "drops": {
                "lost": self.counts.lost,
                "corrupt": self.counts.corrupt,
                "open_errors": self.counts.open_errors,
                "send_errors": self.counts.send_errors,
                "outstanding_at_end": self.counts.outstanding_at_end,
                "stale": self.counts.stale,
                "late": self.counts.late,
            },
            "cpu": cpu::json(&self.cpu),
            "cpu_ns_per_datagram": self.cpu_ns_per_datagram(),
        })
    }
}

/// The outcome: the JSON document and the text report.
#[derive(Debug)]
pub struct Outcome {
    /// The result document.
    pub doc: Value,
    /// The human-readable report.
    pub text: String,
    /// The measurements (cipher first, then `none` with `compare_none`, or the same cipher
    /// with CIDs with `compare_cid`).
    pub measured: Vec<Measured>,
    /// R1 when measured.
    pub r1: Option<f64>,
}

/// What one generator thread measured: per slice, the group, its counters and the mark
/// that started it; per group, its histogram and sessions.
struct ThreadRun {
    slices: Vec<(usize, Counts, usize)>,
    last_mark: usize,
    hists: Vec<Histogram<u64>>,
    /// Per group: handshakes completed and the time they took.
    handshakes: Vec<(u64, Duration)>,
    record_len: Vec<usize>,
    cid_sessions: Vec<usize>,
}

/// The servers and client groups of a run: the in-process server(s), or `cfg.server`;
/// with `compare_cid` the same server twice, CIDs off then on.
fn setup(cfg: &Config) -> Result<(Vec<TestServer>, Vec<run::Group>)> {
    let mut ciphers = vec![cfg.cipher];
    if cfg.compare_none && !cfg.cipher.is_null() {
        ciphers.push(CipherChoice::None);
    }
    let (servers, mut groups) = match &cfg.server {
        Some(ext) => {
            if cfg.compare_none {
                bail!(
                    "--compare-none needs the in-process server (null record protection): not with --server"
                );
            }
            (Vec::new(), vec![ext.group(cfg.cipher, cfg.version)])
        }
        None => run::start_servers_with(
            &ciphers,
            cfg.version,
            cfg.shards,
            cfg.io,
            cfg.mtu(),
            cfg.server_io,
            run::BackendPlacement::Auto,
        )?,
    };
    if cfg.compare_cid {
        if cfg.compare_none || cfg.cipher.is_null() {
            bail!(
                "--compare-cid compares a cipher's sessions with and without CIDs: not with --compare-none or --cipher none"
            );
        }
        let mut with_cid = groups[0].clone();
        with_cid.cid = true;
        groups.push(with_cid);
    }
    Ok((servers, groups))
}

/// Runs the benchmark.
pub fn run(cfg: &Config) -> Result<Outcome> {
    let (servers, groups) = setup(cfg)?;
    let flow_cfg = FlowConfig {
        size: cfg.size,
        window: cfg.window,
        gso: cfg.gso,
    };
    let n = groups.len();
    let rounds = if n > 1 {
        (cfg.duration.as_secs_f64() / (cfg.slice.as_secs_f64() * n as f64))
            .round()
            .max(1.0) as usize
    } else {
        1
    };
    let slice = if n > 1 { cfg.slice } else { cfg.duration };
    let generated = threads::on_generators(
        &groups,
        cfg.sessions,
        cfg.threads,
        flow_cfg,
        usize::from(cfg.mtu()),
        |share| {
            let mut flows = share.flows;
            for f in flows.iter_mut() {
                f.closed_loop(cfg.warmup, None)?;
            }
            let mut hists = (0..n)
                .map(|_| hist::new_latency_ns())
                .collect::<Result<Vec<_>, _>>()?;
            let mut slices = Vec::with_capacity(rounds * n);
            for round in 0..rounds {
                for j in 0..n {
                    // Alternate the order each round so drift hits both sides alike.
                    let g = if round % 2 == 0 { j } else { n - 1 - j };
                    let mark = share.lockstep.mark()?;
                    let c = flows[g].closed_loop(slice, Some(&mut hists[g]))?;
                    slices.push((g, c, mark));
                }
            }
            let last_mark = share.lockstep.mark()?;
            let record_len = flows.iter().map(Flows::record_len).collect();
            let cid_sessions = flows.iter().map(Flows::cid_sessions).collect();
            for f in flows {
                f.close();
            }
            Ok(ThreadRun {
                slices,
                last_mark,
                hists,
                handshakes: share
                    .handshakes
                    .iter()
                    .map(|h| (h.completed, h.elapsed))
                    .collect(),
                record_len,
                cid_sessions,
            })
        },
    );
    let counters: Vec<Value> = servers.iter().map(TestServer::counters_json).collect();
    for s in servers {
        s.shutdown()?;
    }
    let (runs, lockstep) = generated?;
    let measured = merge(&groups, &runs, &lockstep)?;
    let mut out = report(cfg, measured);
    out.doc["results"]["server_counters"] = Value::Array(counters);
    Ok(out)
}

/// The generator threads' measurements merged per group: the counters of one slice add
/// up over the threads (the slice lasted as long as its longest thread), the histograms
/// add up, and the CPU of a slice is the process's between its marks.
fn merge(groups: &[run::Group], runs: &[ThreadRun], lockstep: &Lockstep) -> Result<Vec<Measured>> {
    let first = runs.first().context("no generator thread")?;
    let mut out = Vec::with_capacity(groups.len());
    for (g, group) in groups.iter().enumerate() {
        let mut counts = Counts::default();
        let mut slice_pps = Vec::new();
        let mut cpu_acc = CpuAccum::default();
        for (k, &(slice_group, _, mark)) in first.slices.iter().enumerate() {
            if slice_group != g {
                continue;
            }
            let mut slice = Counts::default();
            for r in runs {
                if let Some((_, c, _)) = r.slices.get(k) {
                    slice.add_concurrent(c);
                }
            }
            let end = first.slices.get(k + 1).map_or(first.last_mark, |s| s.2);
            if let (Some(before), Some(after)) = (lockstep.snapshot(mark), lockstep.snapshot(end)) {
                cpu_acc.add(&before, &after, slice.elapsed);
            }
            slice_pps.push(slice.pps());
            counts.add(&slice);
        }
        let per_thread = runs
            .iter()
            .map(|r| {
                let mut c = Counts::default();
                for (_, s, _) in r.slices.iter().filter(|s| s.0 == g) {
                    c.add(s);
                }
                c
            })
            .collect();
        let mut histogram = hist::new_latency_ns()?;
        for r in runs {
            if let Some(h) = r.hists.get(g) {
                histogram.add(h).context("merge histograms")?;
            }
        }
        // All threads handshook at once: the rate is all completions over the longest.
        let completed: u64 = runs
            .iter()
            .filter_map(|r| r.handshakes.get(g))
            .map(|h| h.0)
            .sum();
        let longest = runs
            .iter()
            .filter_map(|r| r.handshakes.get(g))
            .map(|h| h.1)
            .max()
            .unwrap_or_default();
        out.push(Measured {
            cipher: group.cipher,
            cid: group.cid,
            cid_sessions: runs.iter().filter_map(|r| r.cid_sessions.get(g)).sum(),
            per_thread,
            counts,
            slice_pps,
            rtt: Percentiles::of(&histogram),
            cpu: cpu_acc.threads(),
            wire_bytes: first.record_len.get(g).copied().unwrap_or(0) + IP_UDP_HEADER,
            handshakes_per_s: completed as f64 / longest.as_secs_f64().max(1e-9),
        });
    }
    Ok(out)
}

fn report(cfg: &Config, measured: Vec<Measured>) -> Outcome {
    let mut invalid = Vec::new();
    let mut figures = Vec::new();
    let mut text = String::new();
    let server = match &cfg.server {
        Some(ext) => format!("server {} (external)", ext.addr),
        None => format!("server io {} x{} shard(s)", cfg.io.name(), cfg.shards),
    };
    let _ = writeln!(
        text,
        "dtls-bench throughput: {} B, {} sessions, window {}, {server}, generator {} thread(s), GSO {}",
        cfg.size,
        cfg.sessions,
        cfg.window,
        cfg.threads,
        if cfg.gso { "on" } else { "off" }
    );
    for m in &measured {
        let pps = m.counts.pps();
        let name = name_of(m, cfg.version);
        let _ = writeln!(
            text,
            "  {name:<9} {:>8.3} Mpps  {:>6.2} Gbit/s payload  {:>6.2} Gbit/s wire  rtt p50 {:.1} µs p99 {:.1} µs  ({} verified, {} lost, {} corrupt)",
            pps / 1e6,
            pps * cfg.size as f64 * 8.0 / 1e9,
            pps * m.wire_bytes as f64 * 8.0 / 1e9,
            m.rtt.p50 as f64 / 1e3,
            m.rtt.p99 as f64 / 1e3,
            m.counts.received,
            m.counts.lost,
            m.counts.corrupt
        );
        if m.per_thread.len() > 1 {
            let _ = writeln!(
                text,
                "    per generator thread: {}",
                m.per_thread
                    .iter()
                    .enumerate()
                    .map(|(i, c)| format!("loadgen-{i} {:.3} Mpps", c.pps() / 1e6))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        if m.cid {
            let _ = writeln!(
                text,
                "    connection IDs: {} of {} sessions, {} of {} verified echoes in CID records",
                m.cid_sessions, cfg.sessions, m.counts.cid_records, m.counts.received
            );
            if m.cid_sessions < cfg.sessions || m.counts.cid_records < m.counts.received {
                invalid.push(format!(
                    "{name}: the server gave no CID to {} sessions ({} echoes without one)",
                    cfg.sessions - m.cid_sessions.min(cfg.sessions),
                    m.counts.received - m.counts.cid_records.min(m.counts.received)
                ));
            }
        }
        let _ = writeln!(text, "    cpu: {}", cpu::lines(&m.cpu));
        let saturated = run::saturation_reasons(&m.cpu);
        let _ = writeln!(
            text,
            "    generator: {} thread(s), {}",
            cfg.threads,
            if saturated.is_empty() {
                "kept up (no thread at 95 % of a core)".to_string()
            } else {
                format!(
                    "fell behind ({} saturated): the figure is the generator's",
                    saturated.len()
                )
            }
        );
        let per = m.cpu_ns_per_datagram();
        if cfg.server.is_some() {
            let _ = writeln!(
                text,
                "    cpu per round trip: generator {:.0} ns (the server and its backend are other processes)",
                per["loadgen"].as_f64().unwrap_or(0.0)
            );
        } else {
            let _ = writeln!(
                text,
                "    cpu per round trip: server {:.0} ns, generator {:.0} ns, echo {:.0} ns",
                per["server"].as_f64().unwrap_or(0.0),
                per["loadgen"].as_f64().unwrap_or(0.0),
                per["echo"].as_f64().unwrap_or(0.0)
            );
        }
        let prefix = format!("throughput.{name}.{}", cfg.size);
        figures.push(Figure::new(
            format!("{prefix}.pps"),
            pps,
            "datagrams/s",
            Better::Higher,
        ));
        figures.push(Figure::new(
            format!("{prefix}.gbps_payload"),
            pps * cfg.size as f64 * 8.0 / 1e9,
            "Gbit/s",
            Better::Higher,
        ));
        invalid.extend(saturated);
        if m.counts.received == 0 {
            invalid.push(format!("{name}: no datagram came back"));
        }
        if m.counts.corrupt > 0 || m.counts.open_errors > 0 {
            invalid.push(format!(
                "{name}: {} corrupt echoes, {} records failed to open",
                m.counts.corrupt, m.counts.open_errors
            ));
        }
    }
    let r1 = match measured.as_slice() {
        [dtls, none] if cfg.compare_none && none.counts.pps() > 0.0 => {
            let (r1, rounds, total, min, max) = ratio(dtls, none);
            let _ = writeln!(
                text,
                "  R1 = {} pps / none pps = {r1:.3} (median of {} rounds, min {min:.3}, max {max:.3}; totals {total:.3})",
                run::label(dtls.cipher, cfg.version),
                rounds.len()
            );
            figures.push(Figure::new(
                format!(
                    "throughput.{}.{}.r1",
                    run::label(dtls.cipher, cfg.version),
                    cfg.size
                ),
                r1,
                "ratio",
                Better::Higher,
            ));
            Some((r1, rounds, total))
        }
        _ => None,
    };
    let cid_ratio = match measured.as_slice() {
        [off, on] if cfg.compare_cid && off.counts.pps() > 0.0 => {
            let (r, rounds, total, min, max) = ratio(on, off);
            let label = run::label(off.cipher, cfg.version);
            let _ = writeln!(
                text,
                "  CID ratio = {label} pps with CIDs / without = {r:.3} (median of {} rounds, min {min:.3}, max {max:.3}; totals {total:.3})",
                rounds.len()
            );
            figures.push(Figure::new(
                format!("throughput.{label}.{}.cid_ratio", cfg.size),
                r,
                "ratio",
                Better::Higher,
            ));
            Some((r, rounds, total))
        }
        _ => None,
    };
    if !invalid.is_empty() {
        let _ = writeln!(text, "  INVALID: {}", invalid.join("; "));
    }
    let first = measured.first();
    let results = json!({
        "pps": first.map(|m| m.counts.pps()),
        "gbps_payload": first.map(|m| m.counts.pps() * cfg.size as f64 * 8.0 / 1e9),
        "gbps_wire": first.map(|m| m.counts.pps() * m.wire_bytes as f64 * 8.0 / 1e9),
        "latency_ns": first.map(|m| m.rtt.json()),
        "drops": first.map(|m| json!({
            "lost": m.counts.lost, "corrupt": m.counts.corrupt, "stale": m.counts.stale,
            "open_errors": m.counts.open_errors, "send_errors": m.counts.send_errors,
        })),
        "cpu": first.map(|m| cpu::json(&m.cpu)),
        "ratios": {
            "r1": r1.as_ref().map(|(r, _, _)| *r),
            "r1_rounds": r1.as_ref().map(|(_, rounds, _)| rounds.clone()),
            "r1_total": r1.as_ref().map(|(_, _, total)| *total),
            "cid": cid_ratio.as_ref().map(|(r, _, _)| *r),
            "cid_rounds": cid_ratio.as_ref().map(|(_, rounds, _)| rounds.clone()),
            "cid_total": cid_ratio.as_ref().map(|(_, _, total)| *total),
        },
        "generator_threads": cfg.threads,
        "runs": measured.iter().map(|m| m.json(cfg.size)).collect::<Vec<_>>(),
    });
    let doc = run::document(
        "dtls-bench throughput",
        cfg.json(),
        results,
        &figures,
        &invalid,
    );
    Outcome {
        doc,
        text,
        r1: r1.map(|(r, _, _)| r),
        measured,
    }
}

/// How the report and the figures name `m`'s sessions: the cipher's label, with `_cid`
/// for the CID half of `--compare-cid`.
fn name_of(m: &Measured, version: Version) -> String {
    let label = run::label(m.cipher, version);
    if m.cid { format!("{label}_cid") } else { label }
}

/// `a` over `b` from the same run's interleaved slices: (median of the per-round ratios,
/// the ratios, ratio of the totals, min, max). BENCHMARKS.md: the median of the runs (here:
/// rounds), with min and max.
fn ratio(a: &Measured, b: &Measured) -> (f64, Vec<f64>, f64, f64, f64) {
    let total = a.counts.pps() / b.counts.pps().max(f64::MIN_POSITIVE);
    let rounds: Vec<f64> = a
        .slice_pps
        .iter()
        .zip(&b.slice_pps)
        .map(|(x, y)| if *y > 0.0 { x / y } else { 0.0 })
        .collect();
    let min = rounds.iter().copied().fold(f64::INFINITY, f64::min);
    let max = rounds.iter().copied().fold(0.0, f64::max);
    (median(&rounds), rounds, total, min, max)
}

/// Median of `v` (0 when empty; mean of the middle two for an even count).
pub fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    match s.len() {
        0 => 0.0,
        n if n % 2 == 1 => s[n / 2],
        n => (s[n / 2 - 1] + s[n / 2]) / 2.0,
    }
}
