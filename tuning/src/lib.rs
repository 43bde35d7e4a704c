//! dtls-tune: tells an operator what on a host holds the `dtlsd` data plane back and how to
//! fix it.
//!
//! What it does: reads a host's `/proc` and `/sys` (or a copy of them under another root, as
//! the tests do) and the `dtlsd` configuration, then
//! - [`checks`]: findings with a status, the reason it matters for a UDP data plane and the
//!   exact fix (`dtls-tune check [--json]`);
//! - [`plan`]: shard → core map, handshake-worker cores, IRQ and RPS placement, as a config
//!   snippet and a shell script (`dtls-tune plan`);
//! - [`emit`]: a sysctl.d file, a tuned profile or a systemd drop-in (`dtls-tune emit`);
//! - [`apply`]: writes the sysctl part, after showing the difference, only when told
//!   `--yes` (`dtls-tune apply`);
//! - [`autotune`]: real `dtls-bench throughput` trials over `io` and `shards`, the best
//!   written as `dtlsd` configuration (`dtls-tune autotune`).
//!
//! What it does not do: change anything but sysctls, or keep state.
//! docs/tuning.md explains every finding and documents `check --json`.
#![forbid(unsafe_code)]

pub mod apply;
pub mod autotune;
pub mod checks;
pub mod cpus;
pub mod emit;
pub mod host;
pub mod nic;
pub mod plan;
pub mod target;

use std::path::Path;

use anyhow::Result;
use serde::Serialize;

use crate::checks::{Finding, Status};
use crate::cpus::Topology;
use crate::host::Host;
use crate::nic::Nic;
use crate::plan::Plan;
use crate::target::{Overrides, Target};

/// A host read once, with the configuration it is tuned for and the plan for it.
#[derive(Debug)]
pub struct Inspection {
    /// The host's files.
    pub host: Host,
    /// Its CPUs.
    pub topology: Topology,
    /// The daemon settings.
    pub target: Target,
    /// The data-plane interface: the config's `interface`, `--interface`, or the default
    /// route's.
    pub nic: Option<Nic>,
    /// Where shards, workers and interrupts go.
    pub plan: Plan,
}

impl Inspection {
    /// Reads the host under `root`, the configuration `config` (if any) and the overrides.
    ///
    /// # Errors
    /// The configuration does not load or validate.
    pub fn new(root: &Path, config: Option<&Path>, overrides: &Overrides) -> Result<Self> {
        let host = Host::new(root);
        let topology = Topology::read(&host);
        let target = match config {
            Some(path) => Target::from_config(path, &topology)?,
            None => Target::defaults(&topology),
        }
        .with(overrides, &topology);
        let interface = target
            .interface
            .clone()
            .or_else(|| host.default_route_interface());
        let nic = interface.as_deref().and_then(|i| Nic::read(&host, i));
        let plan = plan::plan(&topology, nic.as_ref(), &target);
        Ok(Self {
            host,
            topology,
            target,
            nic,
            plan,
        })
    }

    /// Runs every check.
    pub fn check(&self) -> Report {
        let ctx = checks::Context {
            host: &self.host,
            topology: &self.topology,
            nic: self.nic.as_ref(),
            target: &self.target,
            plan: &self.plan,
        };
        Report {
            tool: "dtls-tune",
            version: env!("CARGO_PKG_VERSION"),
            root: self.host.root().display().to_string(),
            target: TargetSummary {
                role: self.target.role,
                io: self.target.io_name(),
                interface: self.nic.as_ref().map(|n| n.name.clone()),
                shards: self.target.shards,
                control_threads: self.target.control_threads,
                port: self.target.port,
            },
            findings: checks::run(&ctx),
        }
    }

    /// The sysctls `emit --sysctl` writes and `apply` applies.
    pub fn sysctls(&self) -> Vec<emit::Sysctl> {
        emit::sysctls(&self.host, &self.target)
    }
}

/// What `check` found; `check --json` prints it (schema in docs/tuning.md).
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// `dtls-tune`.
    pub tool: &'static str,
    /// This crate's version.
    pub version: &'static str,
    /// The root the host was read under.
    pub root: String,
    /// What the host was checked for.
    pub target: TargetSummary,
    /// Every finding, in the order of [`checks::IDS`].
    pub findings: Vec<Finding>,
}

/// The configuration a report was made for.
#[derive(Debug, Clone, Serialize)]
pub struct TargetSummary {
    /// `serve` or `connect`.
    pub role: &'static str,
    /// The `io` key.
    pub io: &'static str,
    /// The data-plane interface, if one was found.
    pub interface: Option<String>,
    /// Shards.
    pub shards: usize,
    /// Handshake workers.
    pub control_threads: usize,
    /// The DTLS port, if known.
    pub port: Option<u16>,
}

impl Report {
    /// How many findings have `status`.
    pub fn count(&self, status: Status) -> usize {
        self.findings.iter().filter(|f| f.status == status).count()
    }

    /// The finding `id`.
    pub fn finding(&self, id: &str) -> Option<&Finding> {
        self.findings.iter().find(|f| f.id == id)
    }

    /// The JSON form, with a `summary` of counts per status.
    pub fn json(&self) -> serde_json::Value {
        let mut value = serde_json::to_value(self).unwrap_or_default();
        value["summary"] = serde_json::json!({
            "ok": self.count(Status::Ok),
            "warn": self.count(Status::Warn),
            "fail": self.count(Status::Fail),
            "skip": self.count(Status::Skip),
        });
        value
    }

    /// The human form: one block per finding, fixes indented.
    pub fn text(&self) -> String {
        use std::fmt::Write as _;
        let mut out = format!(
            "dtls-tune check: {} (io {}, {} shards, {} handshake workers, interface {})\n\n",
            self.root,
            self.target.io,
            self.target.shards,
            self.target.control_threads,
            self.target.interface.as_deref().unwrap_or("none")
        );
        for f in &self.findings {
            let _ = writeln!(
                out,
                "[{:<4}] {:<24} {}\n       {}",
                f.status.name(),
                f.id,
                f.observed,
                f.why
            );
            if let Some(fix) = &f.fix {
                let _ = writeln!(out, "       fix: {fix}");
            }
        }
        let _ = writeln!(
            out,
            "\n{} ok, {} warn, {} fail, {} skip",
            self.count(Status::Ok),
            self.count(Status::Warn),
            self.count(Status::Fail),
            self.count(Status::Skip)
        );
        out
    }
}
