//! The data-plane interface: receive queues, interrupt placement, offloads, NUMA node.

use dtlsd::config::IoMode;

use super::{Context, Finding, Status};
use crate::cpus;

pub(super) fn checks(ctx: &Context<'_>) -> Vec<Finding> {
    vec![
        queues(ctx),
        irq_affinity(ctx),
        offloads(ctx),
        udp_gro_forwarding(ctx),
        numa(ctx),
    ]
}

fn no_nic(id: &'static str, ctx: &Context<'_>) -> Finding {
    Finding::new(
        id,
        Status::Skip,
        "no interface",
        match &ctx.target.interface {
            Some(name) => format!("interface {name} is not in sys/class/net"),
            None => "no interface named (--interface or the config's `interface`) and no \
                     IPv4 default route"
                .to_owned(),
        },
    )
}

fn queues(ctx: &Context<'_>) -> Finding {
    let id = "nic.queues";
    let Some(nic) = ctx.nic else {
        return no_nic(id, ctx);
    };
    let shards = ctx.target.shards;
    let observed = format!("{} receive queues, {shards} shards", nic.rx_queues);
    if nic.rx_queues >= shards {
        Finding::new(
            id,
            Status::Ok,
            observed,
            "RSS can hand each shard's core its own queue",
        )
    } else if ctx.target.io == IoMode::Xdp {
        // xdp.queues reports the refusal itself.
        Finding::new(
            id,
            Status::Fail,
            observed,
            "each AF_XDP shard reads its own receive queue: dtlsd refuses to start with more \
             shards than queues",
        )
        .fix(format!("ethtool -L {} combined {shards}", nic.name))
    } else {
        Finding::new(
            id,
            Status::Warn,
            observed,
            "fewer queues than shards: the softirq work of the extra shards' packets lands on \
             the queue cores unless RPS spreads it",
        )
        .fix(format!(
            "ethtool -L {} combined {shards} (where the NIC has that many), else the RPS \
             lines of `dtls-tune plan`",
            nic.name
        ))
    }
}

fn irq_affinity(ctx: &Context<'_>) -> Finding {
    let id = "nic.irq_affinity";
    let Some(nic) = ctx.nic else {
        return no_nic(id, ctx);
    };
    if ctx.plan.irqs.is_empty() {
        return Finding::new(
            id,
            Status::Skip,
            "no MSI interrupts",
            format!(
                "{} lists no device interrupts (virtual interfaces have none)",
                nic.name
            ),
        );
    }
    let off: Vec<String> = ctx
        .plan
        .irqs
        .iter()
        .filter_map(|(irq, _, cpu)| {
            let now = nic.irqs.iter().find(|i| i.number == *irq)?;
            (now.affinity != [*cpu]).then(|| {
                format!(
                    "{irq} on {} (plan: {cpu})",
                    cpus::format_list(&now.affinity)
                )
            })
        })
        .collect();
    let observed = format!(
        "{} of {} queue interrupts off plan",
        off.len(),
        ctx.plan.irqs.len()
    );
    if off.is_empty() {
        Finding::new(
            id,
            Status::Ok,
            observed,
            "each queue interrupts the core of the shard that reads it",
        )
    } else {
        Finding::new(
            id,
            Status::Warn,
            observed,
            format!(
                "interrupts {}: the softirq work for a queue runs on another core than the \
                 shard that reads it, so every packet crosses caches (and may steal a shard \
                 core's time)",
                off.join(", ")
            ),
        )
        .fix("dtls-tune plan --script plan.sh && sh plan.sh (review it first)")
    }
}

fn offloads(ctx: &Context<'_>) -> Finding {
    let id = "nic.offloads";
    let Some(nic) = ctx.nic else {
        return no_nic(id, ctx);
    };
    let wanted = [
        ("generic-receive-offload", "GRO"),
        ("generic-segmentation-offload", "GSO"),
        ("tx-udp-segmentation", "UDP segmentation offload"),
    ];
    let known: Vec<(&str, &str, bool)> = wanted
        .iter()
        .filter_map(|(f, short)| Some((*f, *short, nic.feature(f)?)))
        .collect();
    if known.is_empty() {
        return Finding::new(
            id,
            Status::Skip,
            "not readable",
            format!(
                "no ethtool feature list for {} (ethtool missing?)",
                nic.name
            ),
        );
    }
    let off: Vec<&str> = known.iter().filter(|k| !k.2).map(|k| k.0).collect();
    let observed = known
        .iter()
        .map(|(_, short, on)| format!("{short} {}", if *on { "on" } else { "off" }))
        .collect::<Vec<_>>()
        .join(", ");
    if off.is_empty() || ctx.target.io == IoMode::Xdp {
        Finding::new(
            id,
            Status::Ok,
            observed,
            if ctx.target.io == IoMode::Xdp {
                "AF_XDP takes frames before GRO and sends whole frames: these offloads do not apply"
            } else {
                "the shards' UDP GRO and GSO batches pass through the stack whole"
            },
        )
    } else {
        let fixes: Vec<String> = off
            .iter()
            .filter(|f| !nic.features.get(**f).is_some_and(|v| v.contains("[fixed]")))
            .map(|f| format!("ethtool -K {} {f} on", nic.name))
            .collect();
        let finding = Finding::new(
            id,
            Status::Warn,
            observed,
            format!(
                "{} off: the shards' receive and send batches are split into single \
                 datagrams in the stack, one traversal each",
                off.join(", ")
            ),
        );
        if fixes.is_empty() {
            finding.fix("fixed off by the driver: nothing to change on this NIC")
        } else {
            finding.fix(fixes.join("; "))
        }
    }
}

fn udp_gro_forwarding(ctx: &Context<'_>) -> Finding {
    let id = "nic.udp_gro_forwarding";
    let Some(nic) = ctx.nic else {
        return no_nic(id, ctx);
    };
    match nic.feature("rx-udp-gro-forwarding") {
        None => Finding::new(
            id,
            Status::Skip,
            "not listed",
            "ethtool lists no rx-udp-gro-forwarding",
        ),
        Some(true) => Finding::new(
            id,
            Status::Ok,
            "on",
            "forwarded UDP (containers behind this interface) is aggregated too",
        ),
        Some(false) => Finding::new(
            id,
            Status::Warn,
            "off",
            "UDP that this host forwards (a dtlsd in a container or namespace behind this \
             interface) is not GRO-aggregated: one stack traversal per datagram",
        )
        .fix(format!("ethtool -K {} rx-udp-gro-forwarding on", nic.name)),
    }
}

fn numa(ctx: &Context<'_>) -> Finding {
    let id = "nic.numa";
    let Some(nic) = ctx.nic else {
        return no_nic(id, ctx);
    };
    let Some(node) = nic.numa_node else {
        return Finding::new(
            id,
            Status::Ok,
            "no node",
            "single node, or the NIC reports none",
        );
    };
    let remote: Vec<usize> = ctx
        .plan
        .shard_cores
        .iter()
        .copied()
        .filter(|c| ctx.topology.node.get(c).is_some_and(|n| *n != node))
        .collect();
    if remote.is_empty() {
        Finding::new(
            id,
            Status::Ok,
            format!("node {node}"),
            "every shard runs on the NIC's node",
        )
    } else {
        let local: Vec<usize> = ctx
            .topology
            .node
            .iter()
            .filter(|(_, n)| **n == node)
            .map(|(c, _)| *c)
            .collect();
        Finding::new(
            id,
            Status::Warn,
            format!("node {node}"),
            format!(
                "shards on CPUs {} run on another node than the NIC: every packet crosses the \
                 interconnect (DMA to remote memory, remote cache misses)",
                cpus::format_list(&remote)
            ),
        )
        .fix(format!(
            "set cpus = \"{}\" (CPUs of node {node})",
            cpus::format_list(&local)
        ))
    }
}
