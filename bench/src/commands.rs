//! Command-line arguments and entry points of the data-plane commands: `quick`,
//! `throughput`, `latency`, `handshakes`, `flood`.
//!
//! Each measuring command prints its report and writes its files, then returns
//! [`validity::InvalidRun`] when the run was invalid (the binary exits with
//! [`crate::validity::EXIT_INVALID_RUN`]); `quick` ends with a banner instead.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Result, bail};
use clap::Args;

use crate::loadgen::run::{self, write_json};
use crate::loadgen::{CipherChoice, IoChoice, MIN_PAYLOAD, Switch};
use crate::validity;
use crate::{latency, quick, throughput};

/// Seconds as a decimal number (`0.5`, `10`).
pub fn parse_secs(s: &str) -> Result<Duration, String> {
    let v: f64 = s.parse().map_err(|e| format!("{s:?}: {e}"))?;
    if !(v.is_finite() && v > 0.0 && v <= 86_400.0) {
        return Err(format!("{s:?}: seconds must be in (0, 86400]"));
    }
    Ok(Duration::from_secs_f64(v))
}

fn check_size(size: usize) -> Result<()> {
    if !(MIN_PAYLOAD..=8900).contains(&size) {
        bail!("--size {size}: must be in {MIN_PAYLOAD}..=8900 bytes");
    }
    Ok(())
}

fn check_version(cipher: CipherChoice, version: crate::records::Version) -> Result<()> {
    if version == crate::records::Version::V13 && cipher.is_null() {
        bail!("--cipher none has no DTLS 1.3 form: use --compare-none with a cipher");
    }
    Ok(())
}

/// `--server ADDR --ca FILE`: drive a running `dtlsd serve` instead of the in-process one
/// (`throughput`, `latency`, `handshakes`).
#[derive(Debug, Clone, Args)]
pub struct ServerArgs {
    /// A running server (default: dtlsd in-process with a generated PKI). For `throughput`
    /// and `latency` its backend must echo every datagram (e.g. `dtls-bench echo`).
    #[arg(long, requires = "ca")]
    pub server: Option<std::net::SocketAddr>,
    /// CA certificate of --server (its certificate must name `localhost`).
    #[arg(long)]
    pub ca: Option<PathBuf>,
}

impl ServerArgs {
    /// The external server, when one was named.
    ///
    /// # Errors
    /// `--server` without `--ca`.
    pub fn external(&self) -> Result<Option<run::External>> {
        run::External::from_args(self.server, self.ca.as_deref())
    }
}

/// `--spin` with the in-process server: every spinning generator thread needs a core that no
/// shard uses (the shards take the first cores, the generator threads the last), or it takes
/// a shard's core from it for whole time slices.
fn check_spin(threads: usize, shards: usize, cores: usize) -> Result<()> {
    if threads + shards > cores {
        bail!(
            "--spin: {threads} spinning generator thread(s) and {shards} shard(s) need {} cores, this host has {cores} (spin fewer threads, or drive a --server elsewhere)",
            threads + shards
        );
    }
    Ok(())
}

/// `--threads N`: generator threads.
fn check_threads(threads: usize, sessions: usize) -> Result<()> {
    if threads == 0 || threads > sessions {
        bail!("--threads {threads}: must be in 1..=--sessions ({sessions})");
    }
    Ok(())
}

/// `dtls-bench quick`.
#[derive(Debug, Args)]
pub struct QuickArgs {
    /// Seconds of traffic (throughput phase 60 %, latency phase 40 %).
    #[arg(long, default_value = "10", value_parser = parse_secs)]
    pub duration: Duration,
    /// Client sessions (real handshakes).
    #[arg(long, default_value_t = 64)]
    pub sessions: usize,
    /// Plaintext bytes per datagram.
    #[arg(long, default_value_t = 1200)]
    pub size: usize,
    /// Record protection.
    #[arg(long, value_enum, default_value = "aes128gcm")]
    pub cipher: CipherChoice,
    /// Server I/O backend.
    #[arg(long, value_enum, default_value = "auto")]
    pub io: IoChoice,
    /// Server shards (default: one per core beyond the first, at least one).
    #[arg(long)]
    pub shards: Option<usize>,
    /// Results root: writes `<out>/<timestamp>/{result.json,latency.hgrm,latency.hlog}`.
    #[arg(long, default_value = "results")]
    pub out: PathBuf,
}

/// Runs `quick` and prints its report; an invalid run ends with
/// [`validity::invalid_banner`] and is still a success (the tour).
pub fn quick_cli(a: &QuickArgs) -> Result<()> {
    check_size(a.size)?;
    if a.sessions == 0 {
        bail!("--sessions must be at least 1");
    }
    let out = quick::run(&quick::Config {
        duration: a.duration,
        sessions: a.sessions,
        size: a.size,
        cipher: a.cipher,
        io: a.io,
        shards: a.shards,
        out: a.out.clone(),
    })?;
    print!("{}", out.text);
    if let Some(reasons) = validity::invalid_reasons(&out.doc) {
        print!("{}", validity::invalid_banner(&reasons));
    }
    Ok(())
}

/// Prints a measuring command's report, writes its result document to `json` when asked,
/// and turns an invalid run into [`validity::InvalidRun`] (exit code 3) after the report.
fn emit(text: &str, doc: &serde_json::Value, json: Option<&std::path::Path>) -> Result<()> {
    print!("{text}");
    if let Some(path) = json {
        write_json(path, doc)?;
        println!("wrote {}", path.display());
    }
    Ok(validity::check(doc)?)
}

/// `dtls-bench throughput`.
#[derive(Debug, Args)]
pub struct ThroughputArgs {
    /// Plaintext bytes per datagram.
    #[arg(long, default_value_t = 1200)]
    pub size: usize,
    /// Client sessions.
    #[arg(long, default_value_t = 64)]
    pub sessions: usize,
    /// Measured seconds.
    #[arg(long, default_value = "10", value_parser = parse_secs)]
    pub duration: Duration,
    /// Record protection (`none`: the plaintext baseline through the same engine).
    #[arg(long, value_enum, default_value = "aes128gcm")]
    pub cipher: CipherChoice,
    /// DTLS version of the sessions (1.3: the same AEAD's TLS 1.3 suite; --compare-none's
    /// baseline stays plaintext).
    #[arg(long, value_enum, default_value = "1.2")]
    pub version: crate::records::Version,
    /// Server I/O backend.
    #[arg(long, value_enum, default_value = "auto")]
    pub io: IoChoice,
    /// Server shards.
    #[arg(long, default_value_t = 1)]
    pub shards: usize,
    /// Generator UDP GSO/GRO.
    #[arg(long, value_enum, default_value = "on")]
    pub gso: Switch,
    /// Outstanding datagrams per session.
    #[arg(long, default_value_t = 16)]
    pub window: usize,
    /// Also run `--cipher none`, interleaved, and print R1 = DTLS pps / plaintext pps.
    #[arg(long)]
    pub compare_none: bool,
    /// Also run the same cipher's sessions with connection IDs (RFC 9146 `tls12_cid`
    /// records, DTLS 1.3 with the C bit; both ways), interleaved through the same server,
    /// and print the ratio CID pps / no-CID pps.
    #[arg(long, conflicts_with = "compare_none")]
    pub compare_cid: bool,
    /// Slice length with --compare-none or --compare-cid, seconds.
    #[arg(long, default_value = "0.5", value_parser = parse_secs)]
    pub slice: Duration,
    /// Unmeasured warm-up per server, seconds.
    #[arg(long, default_value = "1", value_parser = parse_secs)]
    pub warmup: Duration,
    /// Generator threads: the sessions are split over them, each with its own sockets.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    #[command(flatten)]
    pub target: ServerArgs,
    /// Write the result document here.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// Runs `throughput`, prints its report and writes its document.
///
/// # Errors
/// Bad arguments, a failed run, or [`validity::InvalidRun`] after the report.
pub fn throughput_cli(a: &ThroughputArgs) -> Result<()> {
    check_size(a.size)?;
    if a.sessions == 0 || a.window == 0 || a.shards == 0 {
        bail!("--sessions, --window and --shards must be at least 1");
    }
    check_version(a.cipher, a.version)?;
    check_threads(a.threads, a.sessions)?;
    if a.compare_cid && a.cipher.is_null() {
        bail!("--compare-cid needs a cipher: the null baseline has no connection-ID form");
    }
    let out = throughput::run(&throughput::Config {
        size: a.size,
        sessions: a.sessions,
        duration: a.duration,
        cipher: a.cipher,
        version: a.version,
        io: a.io,
        shards: a.shards,
        gso: a.gso.on(),
        server_io: Default::default(),
        window: a.window,
        compare_none: a.compare_none,
        slice: a.slice,
        warmup: a.warmup,
        threads: a.threads,
        server: a.target.external()?,
        compare_cid: a.compare_cid,
    })?;
    emit(&out.text, &out.doc, a.json.as_deref())
}

/// `dtls-bench latency`.
#[derive(Debug, Args)]
pub struct LatencyArgs {
    /// Aggregate datagrams per second (open loop).
    #[arg(long, required_unless_present = "load", conflicts_with = "load")]
    pub rate: Option<f64>,
    /// Instead of --rate: fractions of the closed-loop maximum measured first on the same
    /// sessions (e.g. --load 0.1 0.5 0.9).
    #[arg(long, num_args = 1..)]
    pub load: Vec<f64>,
    /// Seconds of the closed-loop probe with --load.
    #[arg(long, default_value = "2", value_parser = parse_secs)]
    pub probe: Duration,
    /// Plaintext bytes per datagram.
    #[arg(long, default_value_t = 1200)]
    pub size: usize,
    /// Client sessions.
    #[arg(long, default_value_t = 64)]
    pub sessions: usize,
    /// Measured seconds.
    #[arg(long, default_value = "10", value_parser = parse_secs)]
    pub duration: Duration,
    /// Unmeasured warm-up at the same rate, seconds.
    #[arg(long, default_value = "1", value_parser = parse_secs)]
    pub warmup: Duration,
    /// Record protection.
    #[arg(long, value_enum, default_value = "aes128gcm")]
    pub cipher: CipherChoice,
    /// DTLS version of the sessions (1.3: the same AEAD's TLS 1.3 suite; --compare-none's
    /// baseline stays plaintext).
    #[arg(long, value_enum, default_value = "1.2")]
    pub version: crate::records::Version,
    /// Server I/O backend.
    #[arg(long, value_enum, default_value = "auto")]
    pub io: IoChoice,
    /// Server shards.
    #[arg(long, default_value_t = 1)]
    pub shards: usize,
    /// Generator UDP GSO/GRO.
    #[arg(long, value_enum, default_value = "on")]
    pub gso: Switch,
    /// `.hlog` interval, seconds.
    #[arg(long, default_value = "1", value_parser = parse_secs)]
    pub interval: Duration,
    /// Also measure `--cipher none` at the same rate and print the latency ratios.
    #[arg(long)]
    pub compare_none: bool,
    /// Generator threads: the sessions and the rate are split evenly over them, each with
    /// its own sockets and histogram (merged at the end).
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Generator threads spin between sends instead of sleeping: sends leave on time and
    /// replies are read without a wake-up, at the price of one whole core per thread (give
    /// each a core no server thread uses). The CPU-saturation check does not apply then.
    #[arg(long)]
    pub spin: bool,
    /// Leave out the host hiccup probes (one real-time thread per CPU waking every 1 ms).
    #[arg(long)]
    pub no_hiccups: bool,
    #[command(flatten)]
    pub target: ServerArgs,
    /// Directory for latency.hgrm, latency.hlog (and result.json without --json).
    #[arg(long, default_value = "results/latency")]
    pub out: PathBuf,
    /// Write the result document here.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// Runs `latency`, prints its report and writes its files.
///
/// # Errors
/// Bad arguments, a failed run, or [`validity::InvalidRun`] after the report.
pub fn latency_cli(a: &LatencyArgs) -> Result<()> {
    check_size(a.size)?;
    let rate = a.rate.unwrap_or(1.0);
    if !(rate.is_finite() && rate >= 1.0) {
        bail!("--rate must be at least 1 datagram/s");
    }
    if a.sessions == 0 || a.shards == 0 {
        bail!("--sessions and --shards must be at least 1");
    }
    if !a.load.is_empty() && a.compare_none {
        bail!("--compare-none works with --rate, not with --load");
    }
    check_version(a.cipher, a.version)?;
    check_threads(a.threads, a.sessions)?;
    let server = a.target.external()?;
    if a.spin && server.is_none() {
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        check_spin(a.threads, a.shards, cores)?;
    }
    let cfg = latency::Config {
        size: a.size,
        sessions: a.sessions,
        rate,
        duration: a.duration,
        warmup: a.warmup,
        cipher: a.cipher,
        version: a.version,
        io: a.io,
        shards: a.shards,
        server_io: Default::default(),
        gso: a.gso.on(),
        interval: a.interval,
        out: a.out.clone(),
        json: a.json.clone(),
        compare_none: a.compare_none,
        threads: a.threads,
        server,
        spin: a.spin,
        hiccups: !a.no_hiccups,
    };
    let out = if a.load.is_empty() {
        latency::run(&cfg)?
    } else {
        latency::run_loads(&cfg, &a.load, a.probe)?
    };
    print!("{}", out.text);
    Ok(validity::check(&out.doc)?)
}

/// `dtls-bench handshakes`.
#[derive(Debug, Args)]
pub struct HandshakesArgs {
    /// Seconds per kind (full, resumed).
    #[arg(long, default_value = "5", value_parser = parse_secs)]
    pub duration: Duration,
    /// Handshakes in flight at once.
    #[arg(long, default_value_t = 16)]
    pub parallel: usize,
    /// Also measure ticket-resumed handshakes.
    #[arg(long)]
    pub resume: bool,
    #[command(flatten)]
    pub target: ServerArgs,
    /// Generator threads: --parallel is split over them.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// DTLS version the clients offer (only that one).
    #[arg(long, value_enum, default_value = "1.2")]
    pub version: crate::records::Version,
    /// DTLS 1.3: the key-exchange group the clients offer (only that one).
    #[arg(long, value_enum)]
    pub group: Option<crate::handshakes::Group>,
    /// Handshake workers of the in-process server (dtlsd's `--control-threads`); the
    /// clients then spread over 127.0.0.1-16 so the server shares them out.
    #[arg(long, default_value_t = 1, conflicts_with = "server")]
    pub control_threads: usize,
    /// Write the result document here.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// Runs `handshakes`, prints its report and writes its document.
///
/// # Errors
/// Bad arguments, a failed run, or [`validity::InvalidRun`] after the report.
pub fn handshakes_cli(a: &HandshakesArgs) -> Result<()> {
    if a.parallel == 0 {
        bail!("--parallel must be at least 1");
    }
    if a.group.is_some() && a.version != crate::records::Version::V13 {
        bail!("--group names a DTLS 1.3 key-exchange group: it needs --version 1.3");
    }
    let out = crate::handshakes::run(&crate::handshakes::Config {
        duration: a.duration,
        parallel: a.parallel,
        resume: a.resume,
        server: a.target.server,
        ca: a.target.ca.clone(),
        version: a.version,
        group: a.group.unwrap_or_default(),
        control_threads: a.control_threads,
        threads: a.threads,
    })?;
    emit(&out.text, &out.doc, a.json.as_deref())
}

/// `dtls-bench flood`.
#[derive(Debug, Args)]
pub struct FloodArgs {
    /// ClientHellos per second.
    #[arg(long, default_value_t = 20_000.0)]
    pub rate: f64,
    /// Seconds of flood.
    #[arg(long, default_value = "5", value_parser = parse_secs)]
    pub duration: Duration,
    /// Distinct loopback source addresses (127.1.x.y).
    #[arg(long, default_value_t = 256)]
    pub sources: usize,
    /// Legitimate handshakes in flight during the flood (0: the flood alone).
    #[arg(long, default_value_t = 4)]
    pub parallel: usize,
    /// Write the result document here.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// Runs `flood`, prints its report and writes its document.
///
/// # Errors
/// Bad arguments, a failed run, or [`validity::InvalidRun`] after the report.
pub fn flood_cli(a: &FloodArgs) -> Result<()> {
    if !(a.rate.is_finite() && a.rate >= 1.0) || a.sources == 0 || a.sources > 60_000 {
        bail!("--rate must be at least 1 and --sources in 1..=60000");
    }
    let out = crate::flood::run(&crate::flood::Config {
        rate: a.rate,
        duration: a.duration,
        sources: a.sources,
        parallel: a.parallel,
    })?;
    emit(&out.text, &out.doc, a.json.as_deref())
}

/// `dtls-bench overload`.
#[derive(Debug, Args)]
pub struct OverloadArgs {
    /// Established sessions carrying bulk traffic.
    #[arg(long, default_value_t = 64)]
    pub sessions: usize,
    /// Plaintext bytes per bulk datagram.
    #[arg(long, default_value_t = 1200)]
    pub size: usize,
    /// Outstanding bulk datagrams per session.
    #[arg(long, default_value_t = 16)]
    pub window: usize,
    /// The attacks, each measured in slices of its own against quiet slices.
    #[arg(long, value_enum, num_args = 1.., default_values_t = [crate::overload::Attack::Full, crate::overload::Attack::HalfOpen])]
    pub attack: Vec<crate::overload::Attack>,
    /// New handshakes per second offered, as a multiple of the probed capacity.
    #[arg(long, default_value_t = 2.0)]
    pub factor: f64,
    /// Attacker source addresses (127.3.x.y).
    #[arg(long, default_value_t = 512)]
    pub sources: usize,
    /// Seconds of one slice.
    #[arg(long, default_value = "2", value_parser = parse_secs)]
    pub slice: Duration,
    /// Rounds (each: a quiet slice and one slice per attack).
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// Seconds of the handshake-capacity probe.
    #[arg(long, default_value = "2", value_parser = parse_secs)]
    pub probe: Duration,
    /// Full handshakes in flight during the probe.
    #[arg(long, default_value_t = 64)]
    pub probe_parallel: usize,
    /// Handshake worker threads of the server.
    #[arg(long, default_value_t = 1)]
    pub control_threads: usize,
    /// DTLS version of every handshake and session.
    #[arg(long, value_enum, default_value = "1.2")]
    pub version: crate::records::Version,
    /// Write the result document here.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// Runs `overload`, prints its report and writes its document.
///
/// # Errors
/// Bad arguments, a failed run, or [`validity::InvalidRun`] after the report.
pub fn overload_cli(a: &OverloadArgs) -> Result<()> {
    check_size(a.size)?;
    if a.sessions == 0 || a.window == 0 || a.rounds == 0 || a.probe_parallel == 0 {
        bail!("--sessions, --window, --rounds and --probe-parallel must be at least 1");
    }
    if !(a.factor.is_finite() && a.factor > 0.0) {
        bail!("--factor must be a positive number");
    }
    if a.sources == 0 || a.sources > 60_000 {
        bail!("--sources must be in 1..=60000");
    }
    if a.control_threads == 0 {
        bail!("--control-threads must be at least 1");
    }
    let mut attacks = a.attack.clone();
    attacks.dedup();
    let out = crate::overload::run(&crate::overload::Config {
        sessions: a.sessions,
        size: a.size,
        window: a.window,
        attacks,
        factor: a.factor,
        sources: a.sources,
        slice: a.slice,
        rounds: a.rounds,
        probe: a.probe,
        probe_parallel: a.probe_parallel,
        control_threads: a.control_threads,
        version: a.version,
    })?;
    emit(&out.text, &out.doc, a.json.as_deref())
}

/// `dtls-bench echo`.
#[derive(Debug, Args)]
pub struct EchoArgs {
    /// Address to answer on.
    #[arg(long, default_value = "127.0.0.1:9000")]
    pub listen: std::net::SocketAddr,
}

/// Runs the echo backend until the process is killed, printing its count every 10 s.
///
/// # Errors
/// The address cannot be bound.
pub fn echo_cli(a: &EchoArgs) -> Result<()> {
    let echo = crate::loadgen::server::Echo::start_on(a.listen)?;
    println!("dtls-bench echo: answering on {}", echo.addr());
    loop {
        std::thread::sleep(Duration::from_secs(10));
        println!("  {} datagrams echoed", echo.echoed());
    }
}

/// `dtls-bench hiccups`.
#[derive(Debug, Args)]
pub struct HiccupsArgs {
    /// Measured seconds.
    #[arg(long, default_value = "10", value_parser = parse_secs)]
    pub duration: Duration,
    /// Write the result document here.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// Measures the host's noise with nothing of ours running: the real-time hiccup probes on
/// every CPU and the CPU time of every other process, for `--duration` (qualify a host
/// before a latency run on it).
///
/// # Errors
/// The probes cannot start, or the JSON cannot be written.
pub fn hiccups_cli(a: &HiccupsArgs) -> Result<()> {
    if a.duration.is_zero() {
        bail!("--duration must be positive");
    }
    let meter = crate::hiccup::HiccupMeter::on_all_cpus()?;
    let before = meter.snapshot()?;
    std::thread::sleep(a.duration);
    let h = meter.snapshot()?.since(&before)?;
    drop(meter);
    println!(
        "dtls-bench hiccups: {:.1} s, {} CPUs",
        h.wall.as_secs_f64(),
        h.cpus.len()
    );
    println!("  host hiccups: {}", h.line());
    println!(
        "  other processes: {}",
        crate::loadgen::cpu::others_line(&h.others)
    );
    for note in [h.note(), h.others_note()].into_iter().flatten() {
        println!("  note: {note}");
    }
    if let Some(path) = &a.json {
        let doc = run::document(
            "dtls-bench hiccups",
            serde_json::json!({"duration_s": a.duration.as_secs_f64(), "period_ns": crate::hiccup::PERIOD.as_nanos() as u64}),
            serde_json::json!({"hiccups": h.json()}),
            &[],
            &[],
        );
        write_json(path, &doc)?;
        println!("  wrote {}", path.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Spinning generator threads and shards each need a core of their own.
    #[test]
    fn spinning_needs_a_core_per_generator_thread_besides_the_shards() {
        assert!(check_spin(1, 1, 2).is_ok());
        assert!(check_spin(4, 4, 16).is_ok());
        let e = check_spin(2, 1, 2).expect_err("three threads on two cores");
        assert!(e.to_string().contains("need 3 cores"), "{e}");
    }
}
