//! `dtls-bench`: benchmarks for the DTLS data plane.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, Result};
use bench::host::HostInfo;
use bench::records::{self, Cipher, Version};
use bench::report;
use bench::validity::{EXIT_INVALID_RUN, InvalidRun};
use clap::{Args, Parser, Subcommand};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(
    name = "dtls-bench",
    version,
    about = "Benchmarks for the DTLS data plane",
    after_help = "Exit codes: 0 done; 1 error (compare: a figure regressed); 2 usage error \
                  (compare: also unusable input or a file marked invalid); 3 a measuring run (throughput, latency, \
                  handshakes, flood, overload, peers) was invalid: its report and files are written, \
                  marked \"valid\": false. quick reports an invalid run and exits 0."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// B0: record seal/open per size and cipher vs raw aws-lc-rs on the same buffers
    /// (--version 1.3: the DTLS 1.3 record layer vs our DTLS 1.2 one).
    Records(RecordsArgs),
    /// UDP impairment proxy: loss, duplication, reordering, delay, both directions, seeded.
    Impair(bench::impair::ImpairArgs),
    /// Regression gate: compare the `figures` of two result files (exit 0 ok, 1 regression,
    /// 2 unusable input); optional github-action-benchmark and Bencher exports.
    Compare(bench::compare::Options),
    /// B8: OpenSSL's DTLS 1.2 record path and handshake rate next to ours, as ratios.
    Peers(bench::peers::PeersArgs),
    /// B8 across a network: OpenSSL's DTLS 1.2 echo server (or relay, with --backend) on a
    /// real address, for `throughput --server` from another host or namespace
    /// (scripts/xdp-bench.sh). Runs until killed.
    OpensslServer(bench::peers::openssl_net::OpenSslServerArgs),
    /// The one-command tour: in-process dtlsd + echo backend on loopback, 64 sessions with
    /// real handshakes, handshakes/s, throughput, latency; writes results/<timestamp>/.
    Quick(bench::commands::QuickArgs),
    /// B1/B2: closed-loop relay throughput per cipher; R1 with --compare-none.
    Throughput(bench::commands::ThroughputArgs),
    /// B3: open-loop latency at a fixed rate, HdrHistogram .hgrm and .hlog out.
    Latency(bench::commands::LatencyArgs),
    /// B4: full and resumed handshakes/s with the crypto-only bound of the same run.
    Handshakes(bench::commands::HandshakesArgs),
    /// B5: spoofed-looking ClientHello flood from many loopback sources.
    Flood(bench::commands::FloodArgs),
    /// B10: the throughput established sessions keep while new handshakes (full, or
    /// stalling after the cookie) arrive at twice the control plane's capacity.
    Overload(bench::commands::OverloadArgs),
    /// A UDP echo server (batched dtls-io, GSO/GRO): the backend of an external
    /// `dtlsd serve` that throughput and latency drive with --server. Runs until killed.
    Echo(bench::commands::EchoArgs),
    /// One table of every figure of several result files, same-run ratios first, and a
    /// merged result for `compare` (the end of scripts/bench.sh).
    Summary(bench::summary::SummaryArgs),
    /// Host noise with nothing of ours running: real-time hiccup probes on every CPU and
    /// the CPU time of every other process (qualify a host before a latency run).
    Hiccups(bench::commands::HiccupsArgs),
}

#[derive(Debug, Args)]
struct RecordsArgs {
    /// Record layer under test: 1.2 (vs raw aws-lc-rs) or 1.3 (vs our DTLS 1.2 record
    /// layer).
    #[arg(long, value_enum, default_value_t = Version::V12)]
    version: Version,
    /// Plaintext sizes in bytes (repeat or list: --size 64 1200).
    #[arg(long = "size", num_args = 1.., default_values_t = [64usize, 256, 1200, 1350, 1400])]
    sizes: Vec<usize>,
    /// Ciphers (default: all AEADs, and for 1.2 the null baseline, which has no 1.3 form).
    #[arg(long = "cipher", value_enum, num_args = 1..)]
    ciphers: Vec<Cipher>,
    /// Measured runs per figure (median reported; at least 5).
    #[arg(long, default_value_t = 7, value_parser = clap::value_parser!(u32).range(5..))]
    runs: u32,
    /// Records per timed pass.
    #[arg(long, default_value_t = 64)]
    batch: usize,
    /// Milliseconds of timed work per run.
    #[arg(long, default_value_t = 50)]
    min_run_ms: u64,
    /// Also write the results as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

fn records_cmd(args: RecordsArgs) -> Result<()> {
    let config = records::Config {
        version: args.version,
        sizes: args.sizes,
        ciphers: if args.ciphers.is_empty() {
            args.version.default_ciphers()
        } else {
            args.ciphers
        },
        runs: args.runs as usize,
        batch: args.batch,
        min_run: Duration::from_millis(args.min_run_ms),
    };
    let host = HostInfo::detect();
    let rows = records::run(&config, |row| {
        eprintln!(
            "  {} {} B {}: {:.1} ns/record",
            row.cipher.name(),
            row.size,
            row.op.name(),
            row.ours.median_ns
        );
    })?;
    print!("{}", report::table(&host, &config, &rows));
    if let Some(path) = args.json {
        let doc = report::json(&host, &config, &rows);
        let text = serde_json::to_string_pretty(&doc).context("serialize JSON")?;
        std::fs::write(&path, text + "\n").with_context(|| format!("write {}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

fn main() -> ExitCode {
    let result = match Cli::parse().command {
        Command::Records(args) => records_cmd(args),
        Command::Impair(args) => bench::impair::run_cli(&args)
            .map(|stats| println!("impair: {}", bench::impair::stats_line(&stats)))
            .map_err(Into::into),
        Command::Compare(args) => std::process::exit(bench::compare::run_cli(&args)),
        Command::Peers(args) => peers_cmd(&args),
        Command::OpensslServer(args) => {
            bench::peers::openssl_net::run_cli(&args).map_err(Into::into)
        }
        Command::Quick(args) => bench::commands::quick_cli(&args),
        Command::Throughput(args) => bench::commands::throughput_cli(&args),
        Command::Latency(args) => bench::commands::latency_cli(&args),
        Command::Handshakes(args) => bench::commands::handshakes_cli(&args),
        Command::Flood(args) => bench::commands::flood_cli(&args),
        Command::Overload(args) => bench::commands::overload_cli(&args),
        Command::Echo(args) => bench::commands::echo_cli(&args),
        Command::Summary(args) => bench::summary::run_cli(&args).map_err(Into::into),
        Command::Hiccups(args) => bench::commands::hiccups_cli(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // The report and files are out; say why they cannot be trusted, last.
        Err(e) => match e.downcast_ref::<InvalidRun>() {
            Some(invalid) => {
                eprintln!("dtls-bench: {invalid}");
                ExitCode::from(EXIT_INVALID_RUN)
            }
            None => {
                eprintln!("Error: {e:?}");
                ExitCode::FAILURE
            }
        },
    }
}

/// B8, then its verdict: an invalid run exits [`EXIT_INVALID_RUN`] after the tables and
/// the JSON.
fn peers_cmd(args: &bench::peers::PeersArgs) -> Result<()> {
    let outcome = bench::peers::run_cli(args)?;
    let reasons = outcome.invalid_reasons();
    if reasons.is_empty() {
        Ok(())
    } else {
        Err(InvalidRun { reasons }.into())
    }
}
