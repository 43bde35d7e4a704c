//! `dtls-bench quick`: the one-command tour. On loopback it starts `dtlsd` in-process with a
//! generated test PKI and a UDP echo backend, brings up 64 client sessions with real
//! handshakes through the load generator, and runs three phases one after the other:
//!
//! 1. **handshakes**: all sessions handshake at once; handshakes/s = sessions / time from
//!    the first ClientHello to the last KeysReady (cookie exchange included);
//! 2. **throughput** (60 % of `--duration`): closed loop, 16 outstanding datagrams per
//!    session: Mpps, Gbit/s payload and wire, CPU per thread;
//! 3. **latency** (40 % of `--duration`): open loop at half the throughput phase's rate,
//!    coordinated-omission corrected; p50/p90/p99/p99.9/p99.99/max.
//!
//! Writes `<out>/<timestamp>/{result.json,latency.hgrm,latency.hlog}`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, Result};
use serde_json::{Value, json};

use crate::compare::{Better, Figure};
use crate::hist::{self, Percentiles};
use crate::latency::{self, LatencyRun};
use crate::loadgen::cpu::{self, CpuSnapshot, ThreadCpu};
use crate::loadgen::flow::{Counts, FlowConfig};
use crate::loadgen::run;
use crate::loadgen::{CipherChoice, IP_UDP_HEADER, IoChoice};

/// Settings of `quick`.
#[derive(Debug, Clone)]
pub struct Config {
    /// Total measured time of the throughput and latency phases.
    pub duration: Duration,
    /// Client sessions.
    pub sessions: usize,
    /// Plaintext bytes per datagram.
    pub size: usize,
    /// Record protection.
    pub cipher: CipherChoice,
    /// Server I/O backend.
    pub io: IoChoice,
    /// Server shards (`None`: one per core beyond the first, at least one).
    pub shards: Option<usize>,
    /// Results root; the run writes into `<out>/<timestamp>/`.
    pub out: PathBuf,
}

/// What `quick` measured.
#[derive(Debug)]
pub struct Outcome {
    /// The result document.
    pub doc: Value,
    /// The short report.
    pub text: String,
    /// The directory written.
    pub dir: PathBuf,
}

struct Measured {
    handshakes_per_s: f64,
    handshakes: u64,
    handshake_p50: Duration,
    throughput: Counts,
    tput_cpu: Vec<ThreadCpu>,
    wire_bytes: usize,
    latency: LatencyRun,
}

/// Outstanding datagrams per session in the throughput phase.
const QUICK_WINDOW: usize = 16;

fn default_shards() -> usize {
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    if cores <= 2 { 1 } else { cores - 1 }
}

/// Runs `quick`.
pub fn run(cfg: &Config) -> Result<Outcome> {
    let shards = cfg.shards.unwrap_or_else(default_shards);
    let mtu = run::server_mtu(cfg.size);
    let (mut servers, groups) = run::start_servers(
        &[cfg.cipher],
        crate::records::Version::V12,
        shards,
        cfg.io,
        mtu,
    )?;
    let server = servers.pop().context("one server per cipher")?;
    let flow_cfg = FlowConfig {
        size: cfg.size,
        window: QUICK_WINDOW,
        gso: true,
    };
    let tput_time = cfg.duration.mul_f64(0.6);
    let lat_time = cfg
        .duration
        .saturating_sub(tput_time)
        .max(Duration::from_millis(200));
    let m = run::on_loadgen(
        &groups,
        cfg.sessions,
        flow_cfg,
        usize::from(mtu),
        |flows, hs| {
            let mut flows = flows;
            let Some(mut f) = flows.pop() else {
                anyhow::bail!("no sessions");
            };
            let hs = hs.into_iter().next().unwrap_or_default();
            let mut durations = hs.durations.clone();
            durations.sort();
            let handshake_p50 = durations
                .get(durations.len() / 2)
                .copied()
                .unwrap_or_default();
            let before = CpuSnapshot::take();
            let throughput = f.closed_loop(tput_time, None)?;
            let after = CpuSnapshot::take();
            let rate = (throughput.pps() * 0.5).max(1000.0);
            let latency = latency::measure(
                &mut f,
                rate,
                lat_time,
                Duration::ZERO,
                Duration::from_secs(1),
            )?;
            let wire_bytes = f.record_len() + IP_UDP_HEADER;
            f.close();
            Ok(Measured {
                handshakes_per_s: hs.rate(),
                handshakes: hs.completed,
                handshake_p50,
                throughput,
                tput_cpu: before.delta(&after),
                wire_bytes,
                latency,
            })
        },
    )?;
    server.shutdown()?;
    let stamp = crate::report::rfc3339_now().replace(':', "-");
    let dir = cfg.out.join(stamp);
    let (hgrm, hlog) = m.latency.write_files(&dir)?;
    let (doc, mut text) = report(cfg, shards, &m);
    let json_path = dir.join("result.json");
    run::write_json(&json_path, &doc)?;
    let _ = writeln!(
        text,
        "wrote {}, {}, {}",
        json_path.display(),
        hgrm.display(),
        hlog.display()
    );
    Ok(Outcome { doc, text, dir })
}

fn report(cfg: &Config, shards: usize, m: &Measured) -> (Value, String) {
    let pps = m.throughput.pps();
    let gbps_payload = pps * cfg.size as f64 * 8.0 / 1e9;
    let gbps_wire = pps * m.wire_bytes as f64 * 8.0 / 1e9;
    let lat = Percentiles::of(&m.latency.histogram);
    let mut invalid = run::saturation_reasons(&m.tput_cpu);
    if m.throughput.received == 0 {
        invalid.push("throughput phase: no datagram came back".into());
    }
    if m.throughput.corrupt > 0 || m.throughput.open_errors > 0 {
        invalid.push(format!(
            "throughput phase: {} corrupt echoes, {} records failed to open",
            m.throughput.corrupt, m.throughput.open_errors
        ));
    }
    invalid.extend(
        m.latency
            .invalid_reasons()
            .into_iter()
            .map(|r| format!("latency phase: {r}")),
    );
    let mut text = String::new();
    let _ = writeln!(
        text,
        "dtls-bench quick: dtlsd in-process on loopback ({} shard(s), io {}), {} sessions, {} B, {}",
        shards,
        cfg.io.name(),
        cfg.sessions,
        cfg.size,
        cfg.cipher.name()
    );
    let _ = writeln!(
        text,
        "  handshakes: {} in parallel, {:.0}/s (median {:.1} ms each)",
        m.handshakes,
        m.handshakes_per_s,
        m.handshake_p50.as_secs_f64() * 1e3
    );
    let _ = writeln!(
        text,
        "  throughput: {:.3} Mpps, {gbps_payload:.2} Gbit/s payload, {gbps_wire:.2} Gbit/s wire (closed loop, {:.1} s)",
        pps / 1e6,
        m.throughput.elapsed.as_secs_f64()
    );
    let _ = writeln!(text, "  cpu: {}", cpu::lines(&m.tput_cpu));
    let _ = writeln!(
        text,
        "  latency at {:.0} pps (open loop): {}",
        m.latency.rate,
        lat.line_us()
    );
    let _ = writeln!(
        text,
        "  {}",
        if invalid.is_empty() {
            "valid: yes".to_string()
        } else {
            format!("INVALID: {}", invalid.join("; "))
        }
    );
    let mut figures = vec![
        Figure::new(
            "quick.handshakes_per_s",
            m.handshakes_per_s,
            "handshakes/s",
            Better::Higher,
        ),
        Figure::new("quick.pps", pps, "datagrams/s", Better::Higher),
        Figure::new("quick.gbps_payload", gbps_payload, "Gbit/s", Better::Higher),
        Figure::new("quick.gbps_wire", gbps_wire, "Gbit/s", Better::Higher),
    ];
    figures.extend(latency::latency_figures("quick.latency", &lat));
    let config = json!({
        "benchmark": "quick",
        "duration_s": cfg.duration.as_secs_f64(),
        "sessions": cfg.sessions,
        "size": cfg.size,
        "cipher": cfg.cipher.name(),
        "io": cfg.io.name(),
        "shards": shards,
        "window": QUICK_WINDOW,
        "phases": {
            "handshakes": "all sessions at once",
            "throughput": {"mode": "closed loop", "seconds": m.throughput.elapsed.as_secs_f64()},
            "latency": {"mode": "open loop at half the throughput rate", "rate_pps": m.latency.rate},
        },
        "histogram": {"unit": "ns", "significant_digits": hist::SIGFIG, "hgrm_unit": "us"},
    });
    let results = json!({
        "handshakes_per_s": m.handshakes_per_s,
        "handshakes": m.handshakes,
        "pps": pps,
        "gbps_payload": gbps_payload,
        "gbps_wire": gbps_wire,
        "latency_ns": lat.json(),
        "drops": {
            "lost": m.throughput.lost,
            "corrupt": m.throughput.corrupt + m.latency.counts.corrupt,
            "open_errors": m.throughput.open_errors + m.latency.counts.open_errors,
            "send_errors": m.throughput.send_errors + m.latency.counts.send_errors,
            "latency_lost_or_late": m.latency.counts.outstanding_at_end,
            "stale": m.throughput.stale + m.latency.counts.stale,
        },
        "cpu": cpu::json(&m.tput_cpu),
        "latency_phase": m.latency.json(),
        "ratios": {},
    });
    (
        run::document("dtls-bench quick", config, results, &figures, &invalid),
        text,
    )
}

/// The default results root: `results/` under the current directory.
pub fn default_out() -> PathBuf {
    Path::new("results").to_path_buf()
}
