//! `dtls-tune autotune`: measures the data-plane knobs `dtlsd` has (`io`, `shards`) with
//! real trials of `dtls-bench throughput` run in-process (an in-process `dtlsd` with an echo
//! backend on loopback, real DTLS 1.2 sessions, AES-128-GCM, 1200-byte datagrams), prints
//! every trial, and writes the best point into a copy of the operator's configuration.
//!
//! Budget: the coarse pass tries every usable backend at shard counts 1, 2, 4, ... up to the
//! cores left after the load generator; the refinement pass tries the best backend at the
//! shard counts next to the best one. Each trial gets an equal share of `--duration`
//! (at least [`MIN_TRIAL`]); handshakes and a short warm-up come on top.
//!
//! What it does not tune: AF_XDP (`io = "xdp"` needs a NIC queue per shard, not loopback;
//! the trials skip it and say so), and knobs the daemon has no key for. On loopback the
//! generator shares the machine, so the figures rank settings on this host; they are not
//! line-rate numbers.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use bench::loadgen::{CipherChoice, IoChoice};
use bench::records::Version;
use bench::throughput;

/// The shortest measured time a trial gets.
pub const MIN_TRIAL: Duration = Duration::from_millis(300);

/// One trial's settings and what it measured.
#[derive(Debug, Clone)]
pub struct Trial {
    /// `io`.
    pub io: IoChoice,
    /// `shards`.
    pub shards: usize,
    /// Verified round trips per second.
    pub pps: f64,
    /// Server CPU per verified round trip, ns (shard and control threads).
    pub server_ns: f64,
    /// Generator CPU per round trip, ns.
    pub loadgen_ns: f64,
    /// Round-trip time, 99th percentile, ns.
    pub p99_ns: u64,
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
}

impl Settings {
    /// Defaults for a host with `cores` CPUs: backends that set up here, shards up to the
    /// cores the generator leaves (at least one).
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
        }
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

fn trial(io: IoChoice, shards: usize, share: Duration, sessions: usize) -> Result<Trial> {
    let cfg = throughput::Config {
        size: 1200,
        sessions,
        duration: share,
        cipher: CipherChoice::Aes128Gcm,
        version: Version::V12,
        io,
        shards,
        gso: true,
        window: 8,
        compare_none: false,
        slice: share,
        warmup: Duration::from_millis(100),
        threads: 1,
        server: None,
        compare_cid: false,
    };
    let outcome = throughput::run(&cfg)
        .with_context(|| format!("trial io = {}, shards = {shards}", io.name()))?;
    let m = outcome
        .measured
        .first()
        .context("the throughput run measured nothing")?;
    let ns = m.cpu_ns_per_datagram();
    Ok(Trial {
        io,
        shards,
        pps: m.counts.pps(),
        server_ns: ns["server"].as_f64().unwrap_or(0.0),
        loadgen_ns: ns["loadgen"].as_f64().unwrap_or(0.0),
        p99_ns: m.rtt.p99,
    })
}

/// Runs the coarse pass and the refinement; `progress` gets each trial as it finishes.
///
/// # Errors
/// A trial that cannot run (the in-process server or generator fails).
pub fn run(settings: &Settings, mut progress: impl FnMut(&Trial)) -> Result<Vec<Trial>> {
    if settings.backends.is_empty() {
        bail!("no I/O backend to try");
    }
    let coarse = coarse_shards(settings.max_shards);
    let planned = settings.backends.len() * coarse.len() + 2;
    let share = (settings.duration / planned as u32).max(MIN_TRIAL);
    let mut trials = Vec::new();
    for &io in &settings.backends {
        for &shards in &coarse {
            let t = trial(io, shards, share, settings.sessions)?;
            progress(&t);
            trials.push(t);
        }
    }
    if let Some(best) = best(&trials).cloned() {
        for shards in [best.shards.saturating_sub(1), best.shards + 1] {
            if shards == 0
                || shards > settings.max_shards
                || trials.iter().any(|t| t.io == best.io && t.shards == shards)
            {
                continue;
            }
            let t = trial(best.io, shards, share, settings.sessions)?;
            progress(&t);
            trials.push(t);
        }
    }
    Ok(trials)
}

/// The trial with the most round trips per second (fewer shards on a tie).
pub fn best(trials: &[Trial]) -> Option<&Trial> {
    trials.iter().max_by(|a, b| {
        a.pps
            .total_cmp(&b.pps)
            .then_with(|| b.shards.cmp(&a.shards))
    })
}

/// When the runner-up is within `margin` (a fraction) of the best trial's rate, the two are
/// not told apart by this budget: the runner-up.
pub fn runner_up_within(trials: &[Trial], margin: f64) -> Option<&Trial> {
    let top = best(trials)?;
    trials
        .iter()
        .filter(|t| !(t.io == top.io && t.shards == top.shards))
        .max_by(|a, b| a.pps.total_cmp(&b.pps))
        .filter(|t| t.pps >= top.pps * (1.0 - margin))
}

/// The header of the trial table ([`table`], [`Trial::row`]).
pub const TABLE_HEADER: &str = "  io     shards        pps   server ns/rt  loadgen ns/rt   p99 µs";

impl Trial {
    /// This trial as a row of the table under [`TABLE_HEADER`], after a one-character mark.
    pub fn row(&self) -> String {
        format!(
            "{:<6} {:>6} {:>10.0} {:>14.0} {:>14.0} {:>8.1}",
            self.io.name(),
            self.shards,
            self.pps,
            self.server_ns,
            self.loadgen_ns,
            self.p99_ns as f64 / 1000.0
        )
    }
}

/// The table of every trial, the best marked.
pub fn table(trials: &[Trial]) -> String {
    let best = best(trials).map(|t| (t.io, t.shards));
    let mut out = format!("{TABLE_HEADER}\n");
    for t in trials {
        let mark = if Some((t.io, t.shards)) == best {
            '*'
        } else {
            ' '
        };
        let _ = writeln!(out, "{mark} {}", t.row());
    }
    out
}

/// The configuration in `base` with `io` and `shards` set to `best`'s, in its `[serve]` or
/// `[connect]` table; other keys and tables are kept, except `interface` (AF_XDP only, and
/// the trials do not choose AF_XDP) and `cpus` (its CPUs were chosen for another shard
/// count: `dtls-tune plan` gives new ones).
///
/// # Errors
/// `base` is not readable TOML with a `[serve]` or `[connect]` table.
pub fn tuned_config(base: &Path, best: &Trial) -> Result<String> {
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
    table.remove("interface");
    table.remove("cpus");
    table.insert("io".into(), toml::Value::String(best.io.name().into()));
    table.insert(
        "shards".into(),
        toml::Value::Integer(i64::try_from(best.shards).unwrap_or(i64::MAX)),
    );
    let mut out = format!(
        "# Written by `dtls-tune autotune` from {}: io = \"{}\" and shards = {} measured best\n\
         # ({:.0} round trips/s, {:.0} ns of server CPU per round trip, in-process loopback\n\
         # trial). Run `dtls-tune plan` for `cpus`.\n",
        base.display(),
        best.io.name(),
        best.shards,
        best.pps,
        best.server_ns
    );
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
mod tests {
    use super::*;

    #[test]
    fn coarse_shards_double_up_to_the_maximum() {
        assert_eq!(coarse_shards(1), vec![1]);
        assert_eq!(coarse_shards(6), vec![1, 2, 4, 6]);
        assert_eq!(coarse_shards(8), vec![1, 2, 4, 8]);
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn best_prefers_rate_then_fewer_shards() {
        let t = |io, shards, pps| Trial {
            io,
            shards,
            pps,
            server_ns: 0.0,
            loadgen_ns: 0.0,
            p99_ns: 0,
        };
        let trials = [
            t(IoChoice::Mmsg, 1, 10.0),
            t(IoChoice::Uring, 2, 20.0),
            t(IoChoice::Uring, 1, 20.0),
        ];
        let b = best(&trials).expect("a best");
        assert_eq!((b.io, b.shards), (IoChoice::Uring, 1));
    }
}
