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

use anyhow::Result;
use serde_json::{Value, json};

use crate::compare::{Better, Figure};
use crate::hist::{self, Percentiles};
use crate::loadgen::cpu::{self, CpuSnapshot};
use crate::loadgen::flow::{Counts, FlowConfig};
use crate::loadgen::run::{self, CpuAccum};
use crate::loadgen::server::TestServer;
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
    /// Outstanding datagrams per session.
    pub window: usize,
    /// Also run the null baseline interleaved and report R1.
    pub compare_none: bool,
    /// Length of one slice with `compare_none`.
    pub slice: Duration,
    /// Unmeasured warm-up per server.
    pub warmup: Duration,
}

impl Config {
    /// The server MTU these sizes need.
    pub fn mtu(&self) -> u16 {
        run::server_mtu(self.size)
    }

    fn json(&self) -> Value {
        json!({
            "benchmark": if self.compare_none { "B1+B2" } else if self.cipher.is_null() { "B1" } else { "B2" },
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
            "generator": {"threads": 1, "io": "mmsg", "socket_per_session": true,
                          "pinning": "generator on the last core, dtlsd shard N on core N"},
            "mode": "closed loop",
        })
    }
}

/// One cipher's measurement.
#[derive(Debug, Clone)]
pub struct Measured {
    /// Record protection.
    pub cipher: CipherChoice,
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
                .sum::<f64>()
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
    /// The measurements (cipher first, then `none` with `compare_none`).
    pub measured: Vec<Measured>,
    /// R1 when measured.
    pub r1: Option<f64>,
}

/// Runs the benchmark.
pub fn run(cfg: &Config) -> Result<Outcome> {
    let mut ciphers = vec![cfg.cipher];
    if cfg.compare_none && !cfg.cipher.is_null() {
        ciphers.push(CipherChoice::None);
    }
    let (servers, groups) =
        run::start_servers(&ciphers, cfg.version, cfg.shards, cfg.io, cfg.mtu())?;
    let flow_cfg = FlowConfig {
        size: cfg.size,
        window: cfg.window,
        gso: cfg.gso,
    };
    let measured = run::on_loadgen(
        &groups,
        cfg.sessions,
        flow_cfg,
        usize::from(cfg.mtu()),
        |mut flows, hs| {
            let n = flows.len();
            for f in flows.iter_mut() {
                f.closed_loop(cfg.warmup, None)?;
            }
            let mut counts = vec![Counts::default(); n];
            let mut slices = vec![Vec::new(); n];
            let mut cpus = vec![CpuAccum::default(); n];
            let mut hists = (0..n)
                .map(|_| hist::new_latency_ns())
                .collect::<Result<Vec<_>, _>>()?;
            let rounds = if n > 1 {
                (cfg.duration.as_secs_f64() / (cfg.slice.as_secs_f64() * n as f64))
                    .round()
                    .max(1.0) as usize
            } else {
                1
            };
            let slice = if n > 1 { cfg.slice } else { cfg.duration };
            for round in 0..rounds {
                for j in 0..n {
                    // Alternate the order each round so drift hits both sides alike.
                    let g = if round % 2 == 0 { j } else { n - 1 - j };
                    let before = CpuSnapshot::take();
                    let c = flows[g].closed_loop(slice, Some(&mut hists[g]))?;
                    let after = CpuSnapshot::take();
                    cpus[g].add(&before, &after, c.elapsed);
                    slices[g].push(c.pps());
                    counts[g].add(&c);
                }
            }
            let mut out = Vec::with_capacity(n);
            for (g, f) in flows.into_iter().enumerate() {
                out.push(Measured {
                    cipher: groups[g].cipher,
                    counts: counts[g],
                    slice_pps: slices[g].clone(),
                    rtt: Percentiles::of(&hists[g]),
                    cpu: cpus[g].threads(),
                    wire_bytes: f.record_len() + IP_UDP_HEADER,
                    handshakes_per_s: hs[g].rate(),
                });
                f.close();
            }
            Ok(out)
        },
    )?;
    let counters: Vec<Value> = servers.iter().map(TestServer::counters_json).collect();
    for s in servers {
        s.shutdown()?;
    }
    let mut out = report(cfg, measured);
    out.doc["results"]["server_counters"] = Value::Array(counters);
    Ok(out)
}

fn report(cfg: &Config, measured: Vec<Measured>) -> Outcome {
    let mut invalid = Vec::new();
    let mut figures = Vec::new();
    let mut text = String::new();
    let _ = writeln!(
        text,
        "dtls-bench throughput: {} B, {} sessions, window {}, server io {} x{} shard(s), generator GSO {}",
        cfg.size,
        cfg.sessions,
        cfg.window,
        cfg.io.name(),
        cfg.shards,
        if cfg.gso { "on" } else { "off" }
    );
    for m in &measured {
        let pps = m.counts.pps();
        let name = run::label(m.cipher, cfg.version);
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
        let _ = writeln!(text, "    cpu: {}", cpu::lines(&m.cpu));
        let per = m.cpu_ns_per_datagram();
        let _ = writeln!(
            text,
            "    cpu per round trip: server {:.0} ns, generator {:.0} ns, echo {:.0} ns",
            per["server"].as_f64().unwrap_or(0.0),
            per["loadgen"].as_f64().unwrap_or(0.0),
            per["echo"].as_f64().unwrap_or(0.0)
        );
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
        invalid.extend(run::saturation_reasons(&m.cpu));
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
        [dtls, none] if none.counts.pps() > 0.0 => {
            let total = dtls.counts.pps() / none.counts.pps();
            let rounds: Vec<f64> = dtls
                .slice_pps
                .iter()
                .zip(&none.slice_pps)
                .map(|(a, b)| if *b > 0.0 { a / b } else { 0.0 })
                .collect();
            let min = rounds.iter().copied().fold(f64::INFINITY, f64::min);
            let max = rounds.iter().copied().fold(0.0, f64::max);
            // BENCHMARKS.md: the median of the runs (here: rounds), with min and max.
            let r1 = median(&rounds);
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
        },
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
