//! AES instructions, frequency governor, SMT siblings, isolated cores and irqbalance.

use super::{Context, Finding, Status};
use crate::cpus;

pub(super) fn checks(ctx: &Context<'_>) -> Vec<Finding> {
    vec![
        aes(ctx),
        governor(ctx),
        smt(ctx),
        isolation(ctx),
        irqbalance(ctx),
    ]
}

fn aes(ctx: &Context<'_>) -> Finding {
    let id = "cpu.aes";
    let flags = ctx.host.cpu_flags();
    if flags.is_empty() {
        return Finding::new(
            id,
            Status::Skip,
            "unreadable",
            "proc/cpuinfo lists no flags",
        );
    }
    let has = |f: &str| flags.iter().any(|x| x == f);
    if has("vaes") && has("vpclmulqdq") {
        Finding::new(
            id,
            Status::Ok,
            "aes, vaes, vpclmulqdq",
            "AES-GCM runs on the vector AES path (the fastest aws-lc has)",
        )
    } else if (has("aes") && has("pclmulqdq")) || (has("aes") && has("pmull")) {
        Finding::new(id, Status::Ok, "aes", "AES-GCM runs on AES instructions")
    } else {
        Finding::new(
            id,
            Status::Warn,
            "no aes",
            "without AES instructions AES-GCM is several times slower per record; \
             ChaCha20-Poly1305 is the faster suite on this CPU",
        )
        .fix("prefer TLS_CHACHA20_POLY1305_SHA256: tls13_cipher_suites = [\"TLS_CHACHA20_POLY1305_SHA256\", \"TLS_AES_128_GCM_SHA256\"]")
    }
}

fn governor(ctx: &Context<'_>) -> Finding {
    let id = "cpu.governor";
    let mut slow = Vec::new();
    let mut seen = 0;
    let mut names = std::collections::BTreeSet::new();
    for &cpu in &ctx.plan.shard_cores {
        if let Some(g) = ctx.host.read(&format!(
            "sys/devices/system/cpu/cpu{cpu}/cpufreq/scaling_governor"
        )) {
            seen += 1;
            if g != "performance" {
                slow.push(cpu);
            }
            names.insert(g);
        }
    }
    if seen == 0 {
        return Finding::new(
            id,
            Status::Skip,
            "no cpufreq",
            "the shard CPUs expose no cpufreq governor (common in VMs: the host decides)",
        );
    }
    let observed = names.into_iter().collect::<Vec<_>>().join(", ");
    if slow.is_empty() {
        Finding::new(id, Status::Ok, observed, "the shard CPUs run at full clock")
    } else {
        Finding::new(
            id,
            Status::Warn,
            observed,
            format!(
                "shard CPUs {} scale their clock with load: a burst arrives at a slow CPU and \
                 latency jumps while it ramps up",
                cpus::format_list(&slow)
            ),
        )
        .fix(format!(
            "cpupower -c {} frequency-set -g performance",
            cpus::format_list(&slow)
        ))
    }
}

fn smt(ctx: &Context<'_>) -> Finding {
    let id = "cpu.smt";
    let shared: Vec<usize> = ctx
        .plan
        .shard_cores
        .iter()
        .copied()
        .filter(|&c| {
            ctx.topology
                .other_siblings(c)
                .iter()
                .any(|s| ctx.plan.shard_cores.contains(s))
        })
        .collect();
    let observed = match ctx.topology.smt_active {
        Some(true) => "on",
        Some(false) => "off",
        None => "unknown",
    };
    if shared.is_empty() {
        Finding::new(
            id,
            Status::Ok,
            observed,
            "no two shards share a physical core",
        )
    } else {
        Finding::new(
            id,
            Status::Warn,
            observed,
            format!(
                "shards on CPUs {} share physical cores with other shards: siblings split one \
                 core's AES units and caches, so each gets well under a core",
                cpus::format_list(&shared)
            ),
        )
        .fix(format!(
            "dtls-tune plan --shards {} (one shard per physical core), or echo off > \
             /sys/devices/system/cpu/smt/control",
            ctx.topology.physical_cores().len().max(1)
        ))
    }
}

fn isolation(ctx: &Context<'_>) -> Finding {
    let id = "cpu.isolation";
    let shards = &ctx.plan.shard_cores;
    let isolated: Vec<usize> = shards
        .iter()
        .copied()
        .filter(|c| ctx.topology.isolated.contains(c))
        .collect();
    let nohz: Vec<usize> = shards
        .iter()
        .copied()
        .filter(|c| ctx.topology.nohz_full.contains(c))
        .collect();
    let observed = format!(
        "isolcpus {}, nohz_full {}",
        or_none(&ctx.topology.isolated),
        or_none(&ctx.topology.nohz_full)
    );
    if isolated.len() == shards.len() {
        Finding::new(
            id,
            Status::Ok,
            observed,
            if nohz.len() == shards.len() {
                "the shard CPUs are isolated and tickless"
            } else {
                "the shard CPUs are isolated from the scheduler"
            },
        )
    } else {
        let list = cpus::format_list(shards);
        Finding::new(
            id,
            Status::Warn,
            observed,
            "the shard CPUs also run other tasks: a preempted shard stops reading its queue \
             and its socket buffer fills; isolation matters most at high packet rates",
        )
        .fix(format!(
            "add `isolcpus=managed_irq,domain,{list} nohz_full={list}` to the kernel command \
             line (e.g. GRUB_CMDLINE_LINUX) and reboot"
        ))
    }
}

fn or_none(list: &[usize]) -> String {
    if list.is_empty() {
        "none".to_owned()
    } else {
        cpus::format_list(list)
    }
}

fn irqbalance(ctx: &Context<'_>) -> Finding {
    let id = "cpu.irqbalance";
    if ctx.host.process_running("irqbalance") {
        Finding::new(
            id,
            Status::Warn,
            "running",
            "irqbalance moves NIC interrupts between CPUs every few seconds, undoing the \
             queue-to-shard-core placement of `dtls-tune plan`",
        )
        .fix(format!(
            "systemctl disable --now irqbalance (or IRQBALANCE_BANNED_CPULIST={} in \
             /etc/default/irqbalance)",
            cpus::format_list(&ctx.plan.shard_cores)
        ))
    } else {
        Finding::new(
            id,
            Status::Ok,
            "not running",
            "interrupt placement stays where it is set",
        )
    }
}
