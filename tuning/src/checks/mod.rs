//! `dtls-tune check`: read-only findings about a host, each with a status, why it matters
//! for a UDP data plane and the exact command that fixes it. docs/tuning.md explains every
//! finding (by its `id`) and documents the JSON form.

mod cpu;
mod kernel;
pub use kernel::probe_uring;
pub(crate) mod net;
mod nic;
mod xdp;

use serde::Serialize;

use crate::cpus::Topology;
use crate::host::Host;
use crate::nic::Nic;
use crate::plan::Plan;
use crate::target::Target;

/// How a finding came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Nothing to do.
    Ok,
    /// The data plane runs, but slower or less predictably than it could.
    Warn,
    /// The configured data plane cannot run as configured (or loses packets now).
    Fail,
    /// Not applicable to this configuration, or the host does not expose it.
    Skip,
}

impl Status {
    /// The lowercase name (`ok`, `warn`, `fail`, `skip`).
    pub fn name(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Warn => "warn",
            Status::Fail => "fail",
            Status::Skip => "skip",
        }
    }
}

/// One finding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// Stable identifier (`net.rmem_max`); docs/tuning.md has a section for each.
    pub id: &'static str,
    /// The outcome.
    pub status: Status,
    /// What was observed (`212992 bytes`).
    pub observed: String,
    /// Why it matters for the data plane, for this host and configuration.
    pub why: String,
    /// The command that fixes it, when the status is `warn` or `fail`.
    pub fix: Option<String>,
}

impl Finding {
    fn new(
        id: &'static str,
        status: Status,
        observed: impl Into<String>,
        why: impl Into<String>,
    ) -> Self {
        Self {
            id,
            status,
            observed: observed.into(),
            why: why.into(),
            fix: None,
        }
    }

    fn fix(mut self, fix: impl Into<String>) -> Self {
        if matches!(self.status, Status::Warn | Status::Fail) {
            self.fix = Some(fix.into());
        }
        self
    }
}

/// Everything a check looks at.
#[derive(Debug)]
pub struct Context<'a> {
    /// The host's files.
    pub host: &'a Host,
    /// Its CPUs.
    pub topology: &'a Topology,
    /// The data-plane interface, if known.
    pub nic: Option<&'a Nic>,
    /// What the daemon is configured to do.
    pub target: &'a Target,
    /// Where its threads and interrupts should go.
    pub plan: &'a Plan,
}

/// Every finding id, in report order.
pub const IDS: [&str; 28] = [
    "kernel.version",
    "io_uring.sysctl",
    "io_uring.probe",
    "limits.memlock",
    "net.rmem_max",
    "net.wmem_max",
    "net.udp_mem",
    "net.netdev_max_backlog",
    "net.netdev_budget",
    "net.busy_poll",
    "udp.rcvbuf_errors",
    "udp.in_errors",
    "softnet.dropped",
    "softnet.time_squeeze",
    "net.conntrack",
    "cpu.aes",
    "cpu.governor",
    "cpu.smt",
    "cpu.isolation",
    "cpu.irqbalance",
    "nic.queues",
    "nic.irq_affinity",
    "nic.offloads",
    "nic.udp_gro_forwarding",
    "nic.numa",
    "xdp.driver",
    "xdp.zerocopy",
    "xdp.queues",
];

/// Runs every check, in the order of [`IDS`].
pub fn run(ctx: &Context<'_>) -> Vec<Finding> {
    let mut findings = Vec::with_capacity(IDS.len());
    findings.extend(kernel::checks(ctx));
    findings.extend(net::checks(ctx));
    findings.extend(cpu::checks(ctx));
    findings.extend(nic::checks(ctx));
    findings.extend(xdp::checks(ctx));
    findings
}

/// Bytes as `8 MiB` where exact, else the number.
pub(crate) fn bytes(n: u64) -> String {
    if n >= 1 << 20 && n.is_multiple_of(1 << 20) {
        format!("{} MiB", n >> 20)
    } else if n >= 1 << 10 && n.is_multiple_of(1 << 10) {
        format!("{} KiB", n >> 10)
    } else {
        format!("{n} bytes")
    }
}
