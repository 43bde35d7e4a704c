//! Socket buffer limits, UDP memory, the softnet backlog and budget, busy polling, the
//! kernel's UDP and softnet drop counters, and conntrack.

use super::{Context, Finding, Status, bytes};

/// The page size `udp_mem` counts in (x86-64 and most arm64 kernels).
const PAGE: u64 = 4096;
/// `netdev_budget` we suggest when the softnet loop runs out of budget (twice the default).
pub const BUDGET: u64 = 600;
/// `netdev_budget_usecs` to go with it.
pub const BUDGET_USECS: u64 = 4000;

pub(super) fn checks(ctx: &Context<'_>) -> Vec<Finding> {
    vec![
        buffer_max(
            ctx,
            "net.rmem_max",
            "net.core.rmem_max",
            ctx.target.recv_buffer,
            "SO_RCVBUF",
        ),
        buffer_max(
            ctx,
            "net.wmem_max",
            "net.core.wmem_max",
            ctx.target.send_buffer,
            "SO_SNDBUF",
        ),
        udp_mem(ctx),
        backlog(ctx),
        budget(ctx),
        busy_poll(ctx),
        rcvbuf_errors(ctx),
        in_errors(ctx),
        softnet_dropped(ctx),
        time_squeeze(ctx),
        conntrack(ctx),
    ]
}

/// The `netdev_max_backlog` we want: as many ~1 KiB datagrams as one shard's receive
/// buffer holds, so a burst the socket could take is not dropped before it gets there.
pub fn wanted_backlog(recv_buffer: u64) -> u64 {
    (recv_buffer / 1024).next_power_of_two().max(1000)
}

/// `udp_mem` (pages) that lets every shard fill its receive buffer at once (the kernel
/// charges twice the requested size: socket(7)), or `None` when the current one does.
pub fn wanted_udp_mem(current: [u64; 3], shards: usize, recv_buffer: u64) -> Option<[u64; 3]> {
    let need = (shards as u64 * recv_buffer * 2).div_ceil(PAGE);
    (current[2] < need).then(|| [current[0], current[1].max(need / 2), need])
}

fn buffer_max(ctx: &Context<'_>, id: &'static str, key: &str, wanted: u64, opt: &str) -> Finding {
    let Some(v) = ctx.host.sysctl_u64(key) else {
        return Finding::new(
            id,
            Status::Skip,
            "unreadable",
            format!("{key} is not readable"),
        );
    };
    if v >= wanted {
        Finding::new(
            id,
            Status::Ok,
            bytes(v),
            format!(
                "the {} each shard socket asks for with {opt} is granted",
                bytes(wanted)
            ),
        )
    } else {
        Finding::new(
            id,
            Status::Warn,
            bytes(v),
            format!(
                "each shard socket asks for {} with {opt}; without CAP_NET_ADMIN (which \
                 {opt}FORCE needs) the kernel silently caps it at {key}, and a burst larger \
                 than the buffer is dropped",
                bytes(wanted)
            ),
        )
        .fix(format!("sysctl -w {key}={wanted}"))
    }
}

fn udp_mem(ctx: &Context<'_>) -> Finding {
    let id = "net.udp_mem";
    let parsed: Option<Vec<u64>> = ctx.host.sysctl("net.ipv4.udp_mem").map(|t| {
        t.split_whitespace()
            .filter_map(|v| v.parse().ok())
            .collect()
    });
    let Some([a, b, c]) = parsed.as_deref().and_then(|v| <[u64; 3]>::try_from(v).ok()) else {
        return Finding::new(
            id,
            Status::Skip,
            "unreadable",
            "net.ipv4.udp_mem is not readable",
        );
    };
    let observed = format!("{a} {b} {c} pages");
    match wanted_udp_mem([a, b, c], ctx.target.shards, ctx.target.recv_buffer) {
        None => Finding::new(
            id,
            Status::Ok,
            observed,
            format!(
                "all {} shard receive buffers can fill at once within the UDP memory limit",
                ctx.target.shards
            ),
        ),
        Some([na, nb, nc]) => Finding::new(
            id,
            Status::Warn,
            observed,
            format!(
                "{} shards × {} receive buffers (charged twice over) exceed the global UDP \
                 limit of {}: past it every UDP socket drops (UDP MemErrors)",
                ctx.target.shards,
                bytes(ctx.target.recv_buffer),
                bytes(c * PAGE)
            ),
        )
        .fix(format!("sysctl -w net.ipv4.udp_mem=\"{na} {nb} {nc}\"")),
    }
}

fn backlog(ctx: &Context<'_>) -> Finding {
    let id = "net.netdev_max_backlog";
    let Some(v) = ctx.host.sysctl_u64("net.core.netdev_max_backlog") else {
        return Finding::new(id, Status::Skip, "unreadable", "not readable");
    };
    let wanted = wanted_backlog(ctx.target.recv_buffer);
    if v >= wanted {
        Finding::new(
            id,
            Status::Ok,
            v.to_string(),
            "the per-CPU input queue holds a full socket buffer's burst",
        )
    } else {
        Finding::new(
            id,
            Status::Warn,
            v.to_string(),
            format!(
                "the per-CPU input queue (used by RPS, veth and loopback) drops past {v} \
                 packets, fewer than one shard's {} receive buffer holds",
                bytes(ctx.target.recv_buffer)
            ),
        )
        .fix(format!("sysctl -w net.core.netdev_max_backlog={wanted}"))
    }
}

fn budget(ctx: &Context<'_>) -> Finding {
    let id = "net.netdev_budget";
    let Some(v) = ctx.host.sysctl_u64("net.core.netdev_budget") else {
        return Finding::new(id, Status::Skip, "unreadable", "not readable");
    };
    let squeezed = ctx.host.softnet().map_or(0, |s| s.2);
    if squeezed > 0 && v < BUDGET {
        Finding::new(
            id,
            Status::Warn,
            v.to_string(),
            format!(
                "the receive softirq ran out of budget {squeezed} times (time_squeeze) and \
                 left packets for later"
            ),
        )
        .fix(format!(
            "sysctl -w net.core.netdev_budget={BUDGET} net.core.netdev_budget_usecs={BUDGET_USECS}"
        ))
    } else {
        Finding::new(
            id,
            Status::Ok,
            v.to_string(),
            if squeezed > 0 {
                "already raised"
            } else {
                "the receive softirq has not run out of budget (time_squeeze 0)"
            },
        )
    }
}

fn busy_poll(ctx: &Context<'_>) -> Finding {
    let id = "net.busy_poll";
    let (Some(poll), Some(read)) = (
        ctx.host.sysctl_u64("net.core.busy_poll"),
        ctx.host.sysctl_u64("net.core.busy_read"),
    ) else {
        return Finding::new(id, Status::Skip, "unreadable", "not readable");
    };
    let observed = format!("busy_poll {poll} µs, busy_read {read} µs");
    let isolated = ctx
        .plan
        .shard_cores
        .iter()
        .all(|c| ctx.topology.isolated.contains(c));
    if poll == 0 && read == 0 {
        Finding::new(
            id,
            Status::Ok,
            observed,
            "off: shards sleep in the kernel until packets arrive",
        )
    } else if isolated {
        Finding::new(
            id,
            Status::Ok,
            observed,
            "on, and the shard cores are isolated: spinning costs nothing else",
        )
    } else {
        Finding::new(
            id,
            Status::Warn,
            observed,
            "busy polling spins in every poll and read on the shard cores, which other \
             tasks share (they are not isolated): lower latency for much more CPU",
        )
        .fix("sysctl -w net.core.busy_poll=0 net.core.busy_read=0")
    }
}

fn rcvbuf_errors(ctx: &Context<'_>) -> Finding {
    let id = "udp.rcvbuf_errors";
    let udp = ctx.host.snmp("Udp");
    let Some(&n) = udp.get("RcvbufErrors") else {
        return Finding::new(
            id,
            Status::Skip,
            "unreadable",
            "proc/net/snmp has no Udp RcvbufErrors",
        );
    };
    if n == 0 {
        Finding::new(
            id,
            Status::Ok,
            "0",
            "no datagram was dropped for a full receive buffer since boot",
        )
    } else {
        Finding::new(
            id,
            Status::Warn,
            n.to_string(),
            "datagrams were dropped because a socket's receive buffer was full (since boot, \
             all UDP sockets): the shards or backends fell behind, or buffers are capped",
        )
        .fix(format!(
            "sysctl -w net.core.rmem_max={}; then watch `nstat -az UdpRcvbufErrors`",
            ctx.target.recv_buffer
        ))
    }
}

fn in_errors(ctx: &Context<'_>) -> Finding {
    let id = "udp.in_errors";
    let udp = ctx.host.snmp("Udp");
    let Some(&n) = udp.get("InErrors") else {
        return Finding::new(
            id,
            Status::Skip,
            "unreadable",
            "proc/net/snmp has no Udp InErrors",
        );
    };
    let get = |k: &str| udp.get(k).copied().unwrap_or(0);
    let observed = format!(
        "{n} (RcvbufErrors {}, InCsumErrors {}, MemErrors {})",
        get("RcvbufErrors"),
        get("InCsumErrors"),
        get("MemErrors")
    );
    if n == 0 {
        return Finding::new(
            id,
            Status::Ok,
            observed,
            "no UDP datagram was dropped on receive since boot",
        );
    }
    let fix = if get("MemErrors") > 0 {
        "raise net.ipv4.udp_mem (see net.udp_mem)"
    } else if get("InCsumErrors") > 0 {
        "check the link and the NIC's receive checksum offload: `ethtool -S IF`"
    } else {
        "raise net.core.rmem_max (see net.rmem_max) or add shards"
    };
    Finding::new(
        id,
        Status::Warn,
        observed,
        "UDP dropped datagrams on receive since boot: full buffers, the global UDP memory \
         limit, or bad checksums",
    )
    .fix(fix)
}

fn softnet_dropped(ctx: &Context<'_>) -> Finding {
    let id = "softnet.dropped";
    let Some((_, dropped, _)) = ctx.host.softnet() else {
        return Finding::new(
            id,
            Status::Skip,
            "unreadable",
            "proc/net/softnet_stat is not readable",
        );
    };
    if dropped == 0 {
        Finding::new(
            id,
            Status::Ok,
            "0",
            "no packet was dropped for a full per-CPU input queue",
        )
    } else {
        Finding::new(
            id,
            Status::Warn,
            dropped.to_string(),
            "packets were dropped because a CPU's input queue (netdev_max_backlog) was full",
        )
        .fix(format!(
            "sysctl -w net.core.netdev_max_backlog={}",
            wanted_backlog(ctx.target.recv_buffer).max(
                ctx.host
                    .sysctl_u64("net.core.netdev_max_backlog")
                    .unwrap_or(0)
                    * 2
            )
        ))
    }
}

fn time_squeeze(ctx: &Context<'_>) -> Finding {
    let id = "softnet.time_squeeze";
    let Some((_, _, squeezed)) = ctx.host.softnet() else {
        return Finding::new(
            id,
            Status::Skip,
            "unreadable",
            "proc/net/softnet_stat is not readable",
        );
    };
    if squeezed == 0 {
        Finding::new(
            id,
            Status::Ok,
            "0",
            "the receive softirq always finished its work",
        )
    } else {
        Finding::new(
            id,
            Status::Warn,
            squeezed.to_string(),
            "the receive softirq stopped with work left (budget or time ran out): packets wait \
             longer and queues fill",
        )
        .fix(format!(
            "sysctl -w net.core.netdev_budget={BUDGET} net.core.netdev_budget_usecs={BUDGET_USECS}"
        ))
    }
}

fn conntrack(ctx: &Context<'_>) -> Finding {
    let id = "net.conntrack";
    let Some(max) = ctx.host.sysctl_u64("net.netfilter.nf_conntrack_max") else {
        return Finding::new(
            id,
            Status::Ok,
            "not loaded",
            "connection tracking is not loaded",
        );
    };
    let count = ctx
        .host
        .sysctl_u64("net.netfilter.nf_conntrack_count")
        .unwrap_or(0);
    let port = ctx.target.port.map_or("PORT".to_owned(), |p| p.to_string());
    let fix = format!(
        "nft add table inet dtlsd_notrack; nft add chain inet dtlsd_notrack pre \
         '{{ type filter hook prerouting priority raw; }}'; nft add rule inet dtlsd_notrack \
         pre udp dport {port} notrack; nft add chain inet dtlsd_notrack out \
         '{{ type filter hook output priority raw; }}'; nft add rule inet dtlsd_notrack out \
         udp sport {port} notrack"
    );
    let full = count * 10 >= max * 9;
    Finding::new(
        id,
        if full { Status::Fail } else { Status::Warn },
        format!("{count} of {max} entries"),
        format!(
            "conntrack is loaded: unless the data port is exempt, every client 4-tuple takes \
             an entry and every datagram a lookup; a full table drops new flows{}",
            if full { " (it is nearly full now)" } else { "" }
        ),
    )
    .fix(fix)
}
