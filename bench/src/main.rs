//! `dtls-bench`: benchmarks for the DTLS data plane.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, Result};
use bench::host::HostInfo;
use bench::records::{self, Cipher};
use bench::report;
use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "dtls-bench",
    version,
    about = "Benchmarks for the DTLS data plane"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// B0: record seal/open per size and cipher vs raw aws-lc-rs on the same buffers.
    Records(RecordsArgs),
}

#[derive(Debug, Args)]
struct RecordsArgs {
    /// Plaintext sizes in bytes (repeat or list: --size 64 1200).
    #[arg(long = "size", num_args = 1.., default_values_t = [64usize, 256, 1200, 1350, 1400])]
    sizes: Vec<usize>,
    /// Ciphers (default: all AEADs and the null baseline).
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
        sizes: args.sizes,
        ciphers: if args.ciphers.is_empty() {
            Cipher::ALL.to_vec()
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

fn main() -> Result<()> {
    match Cli::parse().command {
        Command::Records(args) => records_cmd(args),
    }
}
