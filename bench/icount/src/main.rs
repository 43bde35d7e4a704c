//! `dtls-icount`: the CI gate on instruction counts of the record and per-packet paths.
//!
//! What it measures: instructions (callgrind `Ir`) per iteration of each workload in
//! [`workload::ALL`] — record seal and open, DTLS 1.2 and 1.3 (AES-128-GCM, AES-256-GCM,
//! ChaCha20-Poly1305, and the 1.2 null baseline; 1200 B and 64 B), replay-window check and
//! update, and the shard's per-packet path without sockets (datagram walk, open, reply
//! seal). Each workload
//! runs twice under callgrind with `k1` and `k2` iterations and the same setup; the
//! difference divided by `k2 - k1` is the cost of one iteration, free of start-up and
//! setup, and deterministic for a given binary, valgrind and CPU feature set. Release build
//! only (`cargo build --release -p dtls-icount`): counts of a debug build mean nothing.
//!
//! What it does not measure: time, cache misses, branch mispredictions, system calls or
//! anything in the kernel (socket I/O, GSO/GRO, io_uring), the session-table lookup, the
//! control plane. The AEAD code path is the one aws-lc picks under valgrind's virtual CPUID
//! (no AVX-512), which can differ from the path it picks on bare metal. Wall-clock figures
//! are `dtls-bench`'s job.
//!
//! Subcommands: `check` (measure, compare with the committed baseline, exit 1 on a
//! regression; `--update` rewrites the baseline), `measure`, `compare`, and the helpers that
//! the measurement itself runs under valgrind: `run` and `features`.
#![forbid(unsafe_code)]

mod baseline;
mod callgrind;
mod workload;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context as _, Result};
use clap::{Args, Parser, Subcommand};

use crate::baseline::{Measurement, compare};
use crate::callgrind::Runner;
use crate::workload::Workload;

#[derive(Debug, Parser)]
#[command(name = "dtls-icount", about = "Instruction-count gate (callgrind)")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Args)]
struct MeasureArgs {
    /// The valgrind executable.
    #[arg(long, default_value = "valgrind")]
    valgrind: PathBuf,
    /// Smaller iteration count.
    #[arg(long, default_value_t = 200)]
    k1: u64,
    /// Larger iteration count.
    #[arg(long, default_value_t = 1200)]
    k2: u64,
    /// Measure only these workloads (default: all).
    #[arg(long = "only")]
    only: Vec<String>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Lists the workloads.
    List,
    /// Runs `iters` iterations of one workload and exits (what callgrind measures).
    Run {
        /// Workload name (see `list`).
        workload: String,
        /// Iterations after setup.
        iters: u64,
        /// Records sealed in setup for the open and per-packet workloads (default: iters).
        #[arg(long)]
        prepared: Option<u64>,
    },
    /// Prints the x86 CPU features this process sees (run under valgrind by `measure`).
    Features,
    /// Measures every workload and prints instructions per iteration.
    Measure {
        #[command(flatten)]
        args: MeasureArgs,
        /// Also write the measurement as JSON.
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// Measures and compares with the baseline; exits 1 on a regression beyond the
    /// tolerance or a workload missing from the run.
    Check {
        #[command(flatten)]
        args: MeasureArgs,
        /// The committed baseline.
        #[arg(long, default_value = "bench/icount/baseline.json")]
        baseline: PathBuf,
        /// Allowed increase in percent.
        #[arg(long, default_value_t = 3.0)]
        tolerance: f64,
        /// Rewrite the baseline with this run instead of comparing.
        #[arg(long)]
        update: bool,
        /// Also write this run as JSON (a CI artifact).
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// Compares two measurement files without running anything.
    Compare {
        /// Baseline JSON.
        base: PathBuf,
        /// New JSON.
        new: PathBuf,
        /// Allowed increase in percent.
        #[arg(long, default_value_t = 3.0)]
        tolerance: f64,
    },
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("dtls-icount: error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::List => {
            for w in &workload::ALL {
                println!("{}", w.name());
            }
        }
        Command::Run {
            workload,
            iters,
            prepared,
        } => Workload::by_name(&workload)?.run(iters, prepared.unwrap_or(iters))?,
        Command::Features => println!("{}", cpu_features()),
        Command::Measure { args, json } => {
            let m = measure(&args)?;
            for (name, v) in &m.workloads {
                println!("{name:<24} {v:>14.1}");
            }
            if let Some(path) = json {
                write_json(&path, &m)?;
            }
        }
        Command::Check {
            args,
            baseline,
            tolerance,
            update,
            json,
        } => {
            // Read the baseline first: a bad path fails before minutes of measuring.
            let base = if update {
                None
            } else {
                Some(read_json(&baseline)?)
            };
            let current = measure(&args)?;
            if let Some(path) = json {
                write_json(&path, &current)?;
            }
            let Some(base) = base else {
                write_json(&baseline, &current)?;
                for (name, v) in &current.workloads {
                    println!("{name:<24} {v:>14.1}");
                }
                println!("baseline written to {}", baseline.display());
                return Ok(ExitCode::SUCCESS);
            };
            return report(&base, &current, tolerance);
        }
        Command::Compare {
            base,
            new,
            tolerance,
        } => return report(&read_json(&base)?, &read_json(&new)?, tolerance),
    }
    Ok(ExitCode::SUCCESS)
}

/// Prints the comparison; exit code 1 when the gate fails.
fn report(base: &Measurement, current: &Measurement, tolerance: f64) -> Result<ExitCode> {
    anyhow::ensure!(
        tolerance.is_finite() && tolerance >= 0.0,
        "tolerance must be a non-negative number of percent"
    );
    let c = compare(base, current, tolerance);
    print!("{c}");
    if c.failed() {
        println!("icount: FAILED (instruction-count regression or missing workload)");
        return Ok(ExitCode::from(1));
    }
    if c.suggests_update() {
        println!(
            "icount: passed; the baseline is out of date (improvement or new workload): \
             run scripts/icount.sh --update and commit bench/icount/baseline.json"
        );
    } else {
        println!("icount: passed");
    }
    Ok(ExitCode::SUCCESS)
}

fn measure(args: &MeasureArgs) -> Result<Measurement> {
    anyhow::ensure!(
        !cfg!(debug_assertions),
        "instruction counts of a debug build mean nothing: build with --release"
    );
    let workloads: Vec<Workload> = if args.only.is_empty() {
        workload::ALL.to_vec()
    } else {
        args.only
            .iter()
            .map(|n| Workload::by_name(n))
            .collect::<Result<_>>()?
    };
    let runner = Runner::new(args.valgrind.clone(), args.k1, args.k2)?;
    let result = measure_with(&runner, &workloads);
    runner.cleanup();
    result
}

fn measure_with(runner: &Runner, workloads: &[Workload]) -> Result<Measurement> {
    let valgrind = runner.valgrind_version()?;
    let cpu_features = runner.features_under_valgrind()?;
    let mut out = Vec::new();
    for w in workloads {
        let started = Instant::now();
        let v = runner.per_iteration(w)?;
        eprintln!(
            "  {:<24} {v:>12.1} instr/iter  ({:.1} s)",
            w.name(),
            started.elapsed().as_secs_f64()
        );
        out.push((w.name().to_owned(), v));
    }
    Ok(Measurement {
        valgrind,
        rustc: env!("DTLS_ICOUNT_RUSTC_VERSION").to_owned(),
        cpu_features,
        iterations: (runner.k1, runner.k2),
        workloads: out,
    })
}

fn read_json(path: &Path) -> Result<Measurement> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let v: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    Measurement::from_json(&v).with_context(|| format!("reading {}", path.display()))
}

fn write_json(path: &Path, m: &Measurement) -> Result<()> {
    let mut text = serde_json::to_string_pretty(&m.to_json())?;
    text.push('\n');
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

/// The CPU features that steer aws-lc's AES-GCM and ChaCha20 dispatch.
fn cpu_features() -> String {
    #[cfg(target_arch = "x86_64")]
    {
        let f = [
            ("aes", std::arch::is_x86_feature_detected!("aes")),
            (
                "pclmulqdq",
                std::arch::is_x86_feature_detected!("pclmulqdq"),
            ),
            ("ssse3", std::arch::is_x86_feature_detected!("ssse3")),
            ("avx", std::arch::is_x86_feature_detected!("avx")),
            ("avx2", std::arch::is_x86_feature_detected!("avx2")),
            ("bmi2", std::arch::is_x86_feature_detected!("bmi2")),
            ("adx", std::arch::is_x86_feature_detected!("adx")),
            ("sha", std::arch::is_x86_feature_detected!("sha")),
            ("vaes", std::arch::is_x86_feature_detected!("vaes")),
            (
                "vpclmulqdq",
                std::arch::is_x86_feature_detected!("vpclmulqdq"),
            ),
            ("avx512f", std::arch::is_x86_feature_detected!("avx512f")),
        ];
        let on: Vec<&str> = f.iter().filter(|(_, on)| *on).map(|(n, _)| *n).collect();
        format!("x86_64: {}", on.join(" "))
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        std::env::consts::ARCH.to_owned()
    }
}
