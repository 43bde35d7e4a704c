//! The `dtls-tune` command line: `check`, `plan`, `emit`, `autotune`, `apply` (see the library docs and
//! docs/tuning.md).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, Result};
use clap::{ArgGroup, Args, Parser, Subcommand};
use dtls_tune::Inspection;
use dtls_tune::checks::Status;
use dtls_tune::target::Overrides;

/// Host checks, core plan and tuning files for the dtlsd data plane.
#[derive(Debug, Parser)]
#[command(name = "dtls-tune", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Read-only findings (ok / warn / fail / skip), each with why and the fix. Exits 1 when
    /// any finding fails.
    Check {
        /// Print the findings as JSON (schema in docs/tuning.md).
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        host: HostArgs,
    },
    /// Shard → core map, handshake-worker cores, IRQ and RPS placement: a dtlsd config
    /// snippet and a shell script to review.
    Plan {
        /// Write the config snippet here instead of stdout.
        #[arg(long, value_name = "FILE")]
        snippet: Option<PathBuf>,
        /// Write the shell script here instead of stdout.
        #[arg(long, value_name = "FILE")]
        script: Option<PathBuf>,
        #[command(flatten)]
        host: HostArgs,
    },
    /// Write a sysctl.d file, a tuned profile or a systemd drop-in for review (nothing is
    /// applied).
    #[command(group(ArgGroup::new("kind").required(true).args(["sysctl", "tuned", "systemd"])))]
    Emit {
        /// /etc/sysctl.d/60-dtlsd.conf.
        #[arg(long)]
        sysctl: bool,
        /// /etc/tuned/dtlsd/tuned.conf.
        #[arg(long)]
        tuned: bool,
        /// /etc/systemd/system/dtlsd-serve@.service.d/50-dtls-tune.conf.
        #[arg(long)]
        systemd: bool,
        /// Write here instead of stdout.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
        #[command(flatten)]
        host: HostArgs,
    },
    /// Run real throughput trials (dtls-bench in-process, loopback) over io backend and
    /// shard count, print every trial, and write the best into a copy of --config.
    Autotune {
        /// Measured time of all trials together (`30s`, `2m`; handshakes and warm-ups come
        /// on top).
        #[arg(long, value_name = "D", value_parser = dtls_tune::autotune::parse_duration)]
        duration: std::time::Duration,
        /// The dtlsd configuration to tune (its other keys are kept).
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        /// Write the tuned configuration here instead of stdout.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
        /// Client sessions per trial.
        #[arg(long, value_name = "N", default_value_t = 16)]
        sessions: usize,
        /// Most shards to try [default: the CPUs less one, for the load generator].
        #[arg(long, value_name = "N")]
        max_shards: Option<usize>,
        /// Most handshake workers (`control_threads`) to try [default: the CPUs, at most
        /// 64].
        #[arg(long, value_name = "N")]
        max_control_threads: Option<usize>,
    },
    /// Apply the sysctl part of `emit --sysctl` to the running kernel, after showing the
    /// difference; refuses without --yes. Not persistent.
    Apply {
        /// Really write the sysctls.
        #[arg(long)]
        yes: bool,
        #[command(flatten)]
        host: HostArgs,
    },
}

/// Which host, and what it is tuned for.
#[derive(Debug, Args)]
struct HostArgs {
    /// Read /proc and /sys under this directory (a copy of another host's, or a test tree);
    /// live probes run only with /.
    #[arg(long, value_name = "DIR", default_value = "/")]
    root: PathBuf,
    /// The dtlsd configuration file (validated as `dtlsd check-config` does); without it,
    /// dtlsd's defaults.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Shards to plan for (overrides the configuration).
    #[arg(long, value_name = "N")]
    shards: Option<usize>,
    /// The data-plane interface (default: the configuration's `interface`, else the IPv4
    /// default route's).
    #[arg(long, value_name = "IF")]
    interface: Option<String>,
}

impl HostArgs {
    fn inspect(&self) -> Result<Inspection> {
        Inspection::new(
            &self.root,
            self.config.as_deref(),
            &Overrides {
                shards: self.shards,
                interface: self.interface.clone(),
            },
        )
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli.command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("dtls-tune: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn output(path: Option<&Path>, text: &str) -> Result<()> {
    match path {
        Some(p) => std::fs::write(p, text).with_context(|| format!("writing {}", p.display())),
        None => {
            print!("{text}");
            Ok(())
        }
    }
}

fn run(command: Command) -> Result<ExitCode> {
    match command {
        Command::Check { json, host } => {
            let report = host.inspect()?.check();
            if json {
                println!("{}", serde_json::to_string_pretty(&report.json())?);
            } else {
                print!("{}", report.text());
            }
            Ok(if report.count(Status::Fail) > 0 {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            })
        }
        Command::Plan {
            snippet,
            script,
            host,
        } => {
            let i = host.inspect()?;
            for note in &i.plan.notes {
                eprintln!("note: {note}");
            }
            let irqbalance = i.host.process_running("irqbalance");
            output(snippet.as_deref(), &i.plan.config_snippet(&i.target))?;
            if snippet.is_none() && script.is_none() {
                println!();
            }
            output(script.as_deref(), &i.plan.script(irqbalance))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Emit {
            sysctl,
            tuned,
            systemd,
            out,
            host,
        } => {
            let i = host.inspect()?;
            let text = if sysctl {
                dtls_tune::emit::sysctl_conf(&i.sysctls())
            } else if tuned {
                dtls_tune::emit::tuned_profile(&i.sysctls(), &i.plan)
            } else {
                debug_assert!(systemd, "clap requires one of the three");
                dtls_tune::emit::systemd_dropin(&i.plan, &i.target, &i.topology)
            };
            output(out.as_deref(), &text)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Autotune {
            duration,
            config,
            out,
            sessions,
            max_shards,
            max_control_threads,
        } => {
            use dtls_tune::autotune;
            // The base must be a configuration dtlsd accepts before anything is measured.
            let base = dtlsd::config::raw::load_file(&config)
                .map_err(|e| anyhow::anyhow!("{e}"))
                .and_then(|raw| dtlsd::config::validate(raw).map_err(|e| anyhow::anyhow!("{e}")))
                .with_context(|| format!("{} does not validate", config.display()))?;
            let cores = std::thread::available_parallelism().map_or(1, usize::from);
            let uring = dtls_tune::checks::probe_uring();
            if let Err(reason) = &uring {
                eprintln!("note: io = \"uring\" not tried: {reason}");
            }
            eprintln!(
                "note: io = \"xdp\" not tried: it needs a NIC queue per shard, the trials run on \
                 loopback"
            );
            let mut settings = autotune::Settings::for_host(duration, cores, uring.is_ok());
            settings.sessions = sessions.max(1);
            if let Some(n) = max_shards {
                settings.max_shards = n.max(1);
            }
            if let Some(n) = max_control_threads {
                settings.max_control_threads = n.clamp(1, 64);
            }
            // The trials start from the base's batch, ring, GSO and buffer sizes.
            settings.start = match &base {
                dtlsd::config::Config::Serve(s) => s.tuning.data_io,
                dtlsd::config::Config::Connect(c) => c.tuning.data_io,
            };
            println!("{}", autotune::TABLE_HEADER);
            let outcome = autotune::run(&settings, |row| println!("{row}"))?;
            let trials = &outcome.trials;
            let workers = autotune::best_handshake(&outcome.handshakes);
            for (knob, why) in &outcome.untried {
                eprintln!(
                    "note: {} not tried ({why}): the base's value is kept",
                    knob.key()
                );
            }
            if !outcome.handshakes.is_empty() {
                println!(
                    "\nhandshake workers (full DTLS 1.2 handshakes, {} in flight), best marked:\n{}",
                    autotune::HANDSHAKE_PARALLEL,
                    autotune::handshake_table(&outcome.handshakes)
                );
            }
            println!("\nall trials, best marked:\n{}", autotune::table(trials));
            let best = autotune::best(trials).context("no trial ran")?;
            if let Some(close) = autotune::runner_up_within(trials, 0.05) {
                eprintln!(
                    "note: the runner-up came within 5 % of the best: too close to call with \
                     this budget (a longer --duration separates them):\n  {}",
                    close.row()
                );
            }
            let text = autotune::tuned_config(&config, best, workers, &outcome.tried)?;
            output(out.as_deref(), &text)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Apply { yes, host } => {
            let i = host.inspect()?;
            let sysctls = i.sysctls();
            let diff = dtls_tune::apply::diff(&sysctls);
            if diff.is_empty() {
                println!("nothing to change");
                return Ok(ExitCode::SUCCESS);
            }
            print!("{diff}");
            let n = dtls_tune::apply::apply(&i.host, &sysctls, yes)?;
            println!(
                "applied {n} sysctls (not persistent: install `dtls-tune emit --sysctl` output \
                 in /etc/sysctl.d)"
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}
