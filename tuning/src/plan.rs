//! `dtls-tune plan`: which core each shard runs on, where the handshake workers go, and
//! where the NIC's interrupts and RPS work land; written as a `dtlsd` config snippet and a
//! shell script to review.
//!
//! The rules (docs/tuning.md explains why): shards take one hyperthread per physical core,
//! cores of the NIC's NUMA node first, isolated CPUs when the host isolates any, CPU 0 last
//! (it takes the timer and housekeeping work); handshake workers take the next cores, never a
//! shard core's sibling while another core is free; queue `i`'s interrupt goes to shard
//! `i mod N`'s core (with AF_XDP shard `i` reads queue `i`, so the frames it reads were
//! received on its own core); RPS spreads a queue over the shard cores only when sockets
//! serve fewer queues than shards.

use std::fmt::Write as _;

use dtlsd::config::IoMode;

use crate::cpus::{self, Topology};
use crate::nic::Nic;
use crate::target::Target;

/// A plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Shard `i` runs on `shard_cores[i]`.
    pub shard_cores: Vec<usize>,
    /// CPUs the handshake workers may run on.
    pub worker_cores: Vec<usize>,
    /// (IRQ number, its name, the CPU it should interrupt).
    pub irqs: Vec<(u32, Option<String>, usize)>,
    /// (receive queue, `rps_cpus` CPUs; empty: RPS off).
    pub rps: Vec<(usize, Vec<usize>)>,
    /// The interface the IRQ and RPS parts are for.
    pub interface: Option<String>,
    /// Things the operator should know (shards sharing a core, too few queues, ...).
    pub notes: Vec<String>,
}

/// Computes the plan for `target` on a host with `topology` and NIC `nic`.
pub fn plan(topology: &Topology, nic: Option<&Nic>, target: &Target) -> Plan {
    let mut notes = Vec::new();
    let order = core_order(topology, nic);
    let shards = target.shards.max(1);
    let shard_cores: Vec<usize> = match &target.cpus {
        Some(list) if !list.is_empty() => {
            notes.push("shard cores come from the configuration's `cpus` key".to_owned());
            (0..shards).map(|i| list[i % list.len()]).collect()
        }
        _ => {
            if shards > order.len() && !order.is_empty() {
                notes.push(format!(
                    "{shards} shards on {} usable CPUs: some shards share a CPU",
                    order.len()
                ));
            }
            (0..shards)
                .map(|i| order.get(i % order.len().max(1)).copied().unwrap_or(0))
                .collect()
        }
    };
    // Workers: free CPUs that are not a shard core's sibling, then any free CPU, then
    // (a small host) the CPUs the shards leave least loaded: CPU 0's or the last shard's.
    let busy = |c: &usize| shard_cores.contains(c);
    let sibling_of_shard = |c: &usize| {
        shard_cores
            .iter()
            .any(|s| topology.other_siblings(*s).contains(c))
    };
    let mut free: Vec<usize> = order.iter().copied().filter(|c| !busy(c)).collect();
    let mut others: Vec<usize> = topology
        .online
        .iter()
        .copied()
        .filter(|c| !busy(c) && !free.contains(c))
        .collect();
    free.append(&mut others);
    // Stable: the shards' order among the CPUs that are not a shard's sibling, then those.
    free.sort_by_key(|c| sibling_of_shard(c));
    let workers = target.control_threads.max(1);
    let worker_cores: Vec<usize> = if free.is_empty() {
        notes.push(
            "no CPU is left for the handshake workers: they share the shards' CPUs".to_owned(),
        );
        shard_cores.clone()
    } else {
        free.iter().copied().take(workers).collect()
    };
    let mut irqs = Vec::new();
    let mut rps = Vec::new();
    if let Some(nic) = nic {
        let queue_irqs = nic.queue_irqs();
        for (index, irq) in queue_irqs.iter().enumerate() {
            let queue = irq.queue.unwrap_or(index);
            irqs.push((
                irq.number,
                irq.name.clone(),
                shard_cores[queue % shard_cores.len()],
            ));
        }
        let xdp = target.io == IoMode::Xdp;
        if nic.rx_queues < shards {
            notes.push(format!(
                "{} has {} receive queues for {shards} shards{}",
                nic.name,
                nic.rx_queues,
                if xdp {
                    ": dtlsd refuses to start AF_XDP shards without a queue each"
                } else {
                    ": RPS spreads each queue's packets over the shard cores"
                }
            ));
        } else if nic.rx_queues > shards && xdp {
            notes.push(format!(
                "{} has {} receive queues for {shards} shards: set `ethtool -L {} combined \
                 {shards}` so no queue goes unread by AF_XDP",
                nic.name, nic.rx_queues, nic.name
            ));
        }
        let spread = !xdp && nic.rx_queues < shards;
        for q in 0..nic.rx_queues {
            rps.push((
                q,
                if spread {
                    shard_cores.clone()
                } else {
                    Vec::new()
                },
            ));
        }
    }
    Plan {
        shard_cores,
        worker_cores,
        irqs,
        rps,
        interface: nic.map(|n| n.name.clone()),
        notes,
    }
}

/// CPUs in the order shards take them: isolated CPUs if any (else all online), first
/// siblings before second ones, the NIC's node first, CPU 0 last.
fn core_order(topology: &Topology, nic: Option<&Nic>) -> Vec<usize> {
    let pool: Vec<usize> = if topology.isolated.is_empty() {
        topology.online.clone()
    } else {
        topology
            .isolated
            .iter()
            .copied()
            .filter(|c| topology.online.contains(c))
            .collect()
    };
    let primaries = topology.physical_cores();
    let nic_node = nic.and_then(|n| n.numa_node);
    let mut order = pool;
    order.sort_by_key(|&c| {
        (
            !primaries.contains(&c),
            nic_node.is_some() && topology.node.get(&c) != nic_node.as_ref(),
            c == 0,
            c,
        )
    });
    order
}

impl Plan {
    /// The `dtlsd` configuration snippet (`[serve]` or `[connect]` table).
    pub fn config_snippet(&self, target: &Target) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# dtls-tune plan: {} shards on CPUs {}, handshake workers on {}",
            self.shard_cores.len(),
            cpus::format_list(&self.shard_cores),
            cpus::format_list(&self.worker_cores)
        );
        let _ = writeln!(out, "[{}]", target.role);
        let _ = writeln!(out, "shards = {}", self.shard_cores.len());
        let list: Vec<String> = self.shard_cores.iter().map(ToString::to_string).collect();
        let _ = writeln!(out, "cpus = \"{}\"", list.join(","));
        let _ = writeln!(out, "control_threads = {}", target.control_threads.max(1));
        if target.io != IoMode::Auto {
            let _ = writeln!(out, "io = \"{}\"", target.io_name());
        }
        if let (IoMode::Xdp, Some(interface)) = (target.io, &target.interface) {
            let _ = writeln!(out, "interface = \"{interface}\"");
        }
        out
    }

    /// The shell script that applies the IRQ, RPS and worker-thread parts (for review; the
    /// `cpus` key pins the shards themselves).
    pub fn script(&self, irqbalance_running: bool) -> String {
        let mut out = String::from(
            "#!/bin/sh\n# Written by `dtls-tune plan`: review before running, as root.\nset -eu\n",
        );
        if irqbalance_running {
            out.push_str(
                "\n# irqbalance would move the interrupts pinned below.\nsystemctl disable --now irqbalance\n",
            );
        }
        if !self.irqs.is_empty() {
            let _ = writeln!(
                out,
                "\n# Each queue's interrupt on the core of the shard that reads it."
            );
            for (irq, name, cpu) in &self.irqs {
                let _ = writeln!(
                    out,
                    "echo {cpu} > /proc/irq/{irq}/smp_affinity_list  # {}",
                    name.as_deref().unwrap_or("unnamed")
                );
            }
        }
        if let Some(interface) = &self.interface
            && !self.rps.is_empty()
        {
            let _ = writeln!(out, "\n# Receive packet steering (0: off).");
            for (queue, cpus) in &self.rps {
                let mask = if cpus.is_empty() {
                    "0".to_owned()
                } else {
                    cpus::format_mask(cpus)
                };
                let _ = writeln!(
                    out,
                    "echo {mask} > /sys/class/net/{interface}/queues/rx-{queue}/rps_cpus"
                );
            }
        }
        let _ = write!(
            out,
            "\n# Handshake workers (threads dtlsd-control*) on CPUs {workers}; run after \
             dtlsd starts.\nfor pid in $(pidof dtlsd); do\n  for task in /proc/\"$pid\"/task/*; do\n    \
             case \"$(cat \"$task\"/comm)\" in\n      dtlsd-control*) taskset -pc {workers} \
             \"${{task##*/}}\" ;;\n    esac\n  done\ndone\n",
            workers = cpus::format_list(&self.worker_cores)
        );
        out
    }
}
