//! `dtls-tune emit`: a sysctl.d file, a tuned profile or a systemd drop-in, for review;
//! nothing is applied. Also the parsers that read those formats back (`apply` reads the
//! sysctl part; the tests read all three).

use std::fmt::Write as _;

use dtlsd::config::IoMode;

use crate::checks::net::{BUDGET, BUDGET_USECS, wanted_backlog, wanted_udp_mem};
use crate::cpus::{self, Topology};
use crate::host::Host;
use crate::plan::Plan;
use crate::target::Target;

/// One sysctl this tool wants set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sysctl {
    /// Dotted name.
    pub key: &'static str,
    /// The value now (`None`: not readable).
    pub current: Option<String>,
    /// The value wanted (never lower than the current one).
    pub wanted: String,
}

impl Sysctl {
    /// Whether applying it changes anything.
    pub fn changes(&self) -> bool {
        self.current.as_deref().map(normalize) != Some(normalize(&self.wanted))
    }
}

/// Collapses whitespace (`udp_mem` is tab-separated in /proc, space-separated in files).
fn normalize(v: &str) -> String {
    v.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The sysctls the checks ask for on this host, each at least its current value.
pub fn sysctls(host: &Host, target: &Target) -> Vec<Sysctl> {
    let mut out = Vec::new();
    let mut at_least = |key: &'static str, wanted: u64| {
        let current = host.sysctl(key);
        let now = current
            .as_deref()
            .and_then(|c| c.parse::<u64>().ok())
            .unwrap_or(0);
        out.push(Sysctl {
            key,
            current,
            wanted: now.max(wanted).to_string(),
        });
    };
    at_least("net.core.rmem_max", target.recv_buffer);
    at_least("net.core.wmem_max", target.send_buffer);
    at_least(
        "net.core.netdev_max_backlog",
        wanted_backlog(target.recv_buffer),
    );
    if host.softnet().is_some_and(|s| s.2 > 0) {
        at_least("net.core.netdev_budget", BUDGET);
        at_least("net.core.netdev_budget_usecs", BUDGET_USECS);
    }
    let udp_mem = host.sysctl("net.ipv4.udp_mem");
    let parsed: Option<[u64; 3]> = udp_mem.as_deref().and_then(|t| {
        let v: Vec<u64> = t
            .split_whitespace()
            .filter_map(|x| x.parse().ok())
            .collect();
        v.try_into().ok()
    });
    if let Some(now) = parsed {
        let wanted = wanted_udp_mem(now, target.shards, target.recv_buffer).unwrap_or(now);
        out.push(Sysctl {
            key: "net.ipv4.udp_mem",
            current: udp_mem,
            wanted: format!("{} {} {}", wanted[0], wanted[1], wanted[2]),
        });
    }
    out
}

/// A sysctl.d(5) file (`/etc/sysctl.d/60-dtlsd.conf`).
pub fn sysctl_conf(sysctls: &[Sysctl]) -> String {
    let mut out = String::from(
        "# Written by `dtls-tune emit --sysctl` for /etc/sysctl.d/60-dtlsd.conf.\n\
         # Review, install, then `sysctl --system` (or `dtls-tune apply --yes`).\n",
    );
    for s in sysctls {
        let _ = writeln!(
            out,
            "# now: {}\n{} = {}",
            s.current
                .as_deref()
                .map_or("unreadable".to_owned(), normalize),
            s.key,
            s.wanted
        );
    }
    out
}

/// A tuned profile (`/etc/tuned/dtlsd/tuned.conf`): governor, the sysctls, irqbalance kept
/// off the shard cores, and the isolation kernel arguments.
pub fn tuned_profile(sysctls: &[Sysctl], plan: &Plan) -> String {
    let shards = cpus::format_list(&plan.shard_cores);
    let mut out = format!(
        "# Written by `dtls-tune emit --tuned` for /etc/tuned/dtlsd/tuned.conf.\n\
         # Review, install, then `tuned-adm profile dtlsd`.\n\
         [main]\n\
         summary=dtlsd data plane: shard cores {shards}\n\n\
         [cpu]\n\
         governor=performance\n\
         energy_perf_bias=performance\n\n\
         [irqbalance]\n\
         banned_cpus={shards}\n\n\
         [sysctl]\n"
    );
    for s in sysctls {
        let _ = writeln!(out, "{}={}", s.key, s.wanted);
    }
    let _ = write!(
        out,
        "\n[bootloader]\ncmdline_dtlsd=isolcpus=managed_irq,domain,{shards} nohz_full={shards}\n"
    );
    out
}

/// A systemd drop-in for `dtlsd-serve@.service` (or `dtlsd-connect@`): the CPUs the plan
/// uses, and for AF_XDP the capabilities, locked memory, address family and syscalls it
/// needs on top of the shipped unit (these settings add to the unit's own lists).
pub fn systemd_dropin(plan: &Plan, target: &Target, topology: &Topology) -> String {
    let mut used: Vec<usize> = plan.shard_cores.clone();
    used.extend(&plan.worker_cores);
    let affinity = if used.is_empty() {
        cpus::format_list(&topology.online)
    } else {
        cpus::format_list(&used)
    };
    let mut out = format!(
        "# Written by `dtls-tune emit --systemd` for\n\
         # /etc/systemd/system/dtlsd-{role}@.service.d/50-dtls-tune.conf.\n\
         # Review, install, then `systemctl daemon-reload` and restart the instances.\n\
         [Service]\n\
         # Shards ({shards}) and handshake workers ({workers}); `cpus` pins each shard.\n\
         CPUAffinity={affinity}\n",
        role = target.role,
        shards = cpus::format_list(&plan.shard_cores),
        workers = cpus::format_list(&plan.worker_cores),
    );
    if target.io == IoMode::Xdp {
        out.push_str(
            "# AF_XDP: bpf() and the XDP link (CAP_BPF, CAP_NET_ADMIN), AF_XDP sockets\n\
             # (CAP_NET_RAW), UMEM pinned without a memlock cap (CAP_IPC_LOCK).\n\
             AmbientCapabilities=CAP_NET_ADMIN CAP_NET_RAW CAP_BPF CAP_IPC_LOCK\n\
             CapabilityBoundingSet=CAP_NET_ADMIN CAP_NET_RAW CAP_BPF CAP_IPC_LOCK\n\
             LimitMEMLOCK=infinity\n\
             RestrictAddressFamilies=AF_XDP\n\
             SystemCallFilter=bpf\n",
        );
    } else {
        out.push_str(
            "# Socket buffers: raise net.core.rmem_max/wmem_max (`dtls-tune emit --sysctl`)\n\
             # rather than granting CAP_NET_ADMIN for SO_RCVBUFFORCE.\n",
        );
    }
    out
}

/// Parses sysctl.d(5) text: `key = value` lines, `#` and `;` comments, blank lines, a
/// leading `-` (ignore failures) allowed.
///
/// # Errors
/// The first line that is none of those, with its number.
pub fn parse_sysctl_conf(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        let (key, value) = line
            .split_once('=')
            .ok_or_else(|| format!("line {}: no `=`", n + 1))?;
        let key = key.trim().trim_start_matches('-');
        if key.is_empty()
            || !key
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '/' | '-'))
        {
            return Err(format!("line {}: bad key `{key}`", n + 1));
        }
        out.push((key.to_owned(), value.trim().to_owned()));
    }
    Ok(out)
}

/// Parses INI text as tuned and systemd write it: `[section]` headers, `key=value` lines,
/// `#`/`;` comments. Returns (section, key, value) in order.
///
/// # Errors
/// A line before the first section, or one that is none of those, with its number.
pub fn parse_ini(text: &str) -> Result<Vec<(String, String, String)>, String> {
    let mut out = Vec::new();
    let mut section: Option<String> = None;
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = Some(name.to_owned());
            continue;
        }
        let (key, value) = line
            .split_once('=')
            .ok_or_else(|| format!("line {}: no `=`", n + 1))?;
        let section = section
            .clone()
            .ok_or_else(|| format!("line {}: key before any [section]", n + 1))?;
        out.push((section, key.trim().to_owned(), value.trim().to_owned()));
    }
    Ok(out)
}
