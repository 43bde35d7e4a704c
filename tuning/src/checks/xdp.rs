//! AF_XDP (`io = "xdp"`): native XDP support of the driver, zero-copy, queues per shard.

use dtlsd::config::IoMode;

use super::{Context, Finding, Status};

/// Drivers with native (driver-mode) XDP in mainline Linux. Others run the program in
/// generic mode, after the kernel has built an skb: it works, without the speed-up.
pub const NATIVE_XDP: [&str; 20] = [
    "ixgbe",
    "ixgbevf",
    "i40e",
    "ice",
    "igb",
    "igc",
    "mlx4_core",
    "mlx5_core",
    "bnxt_en",
    "nfp",
    "qede",
    "virtio_net",
    "veth",
    "tun",
    "ena",
    "hv_netvsc",
    "sfc",
    "stmmac",
    "mvneta",
    "mvpp2",
];

/// Drivers with AF_XDP zero-copy in mainline Linux (the UMEM is the NIC's DMA memory).
pub const ZERO_COPY: [&str; 6] = ["i40e", "ice", "ixgbe", "mlx5_core", "igc", "stmmac"];

pub(super) fn checks(ctx: &Context<'_>) -> Vec<Finding> {
    vec![driver(ctx), zero_copy(ctx), queues(ctx)]
}

fn skip(id: &'static str, ctx: &Context<'_>) -> Option<Finding> {
    if ctx.target.io != IoMode::Xdp {
        return Some(Finding::new(
            id,
            Status::Skip,
            format!("io = \"{}\"", ctx.target.io_name()),
            "AF_XDP is not configured (io = \"xdp\", interface = \"IF\" in [serve])",
        ));
    }
    if ctx.nic.is_none() {
        return Some(
            Finding::new(
                id,
                Status::Fail,
                "no interface",
                format!(
                    "interface {} does not exist: dtlsd refuses to start",
                    ctx.target.interface.as_deref().unwrap_or("(none)")
                ),
            )
            .fix("set `interface` in [serve] to an interface of `ip link`"),
        );
    }
    None
}

fn driver(ctx: &Context<'_>) -> Finding {
    let id = "xdp.driver";
    if let Some(f) = skip(id, ctx) {
        return f;
    }
    let Some(nic) = ctx.nic else {
        return Finding::new(id, Status::Skip, "-", "-");
    };
    let Some(driver) = &nic.driver else {
        return Finding::new(
            id,
            Status::Skip,
            "unknown driver",
            "neither device/uevent nor ethtool -i names the driver",
        );
    };
    if NATIVE_XDP.contains(&driver.as_str()) {
        Finding::new(
            id,
            Status::Ok,
            driver.clone(),
            "the driver runs XDP programs natively, before any skb is built",
        )
    } else {
        Finding::new(
            id,
            Status::Warn,
            driver.clone(),
            "not a driver with native XDP that we know of: the kernel runs dtlsd's program in \
             generic mode, after building an skb, which gives up most of AF_XDP's gain",
        )
        .fix("use a NIC whose driver has native XDP (ice, i40e, ixgbe, mlx5_core, ...), or io = \"uring\"")
    }
}

fn zero_copy(ctx: &Context<'_>) -> Finding {
    let id = "xdp.zerocopy";
    if let Some(f) = skip(id, ctx) {
        return f;
    }
    let Some(driver) = ctx.nic.and_then(|n| n.driver.clone()) else {
        return Finding::new(
            id,
            Status::Skip,
            "unknown driver",
            "the driver is not known",
        );
    };
    if ZERO_COPY.contains(&driver.as_str()) {
        Finding::new(
            id,
            Status::Ok,
            driver,
            "the sockets bind zero-copy: frames are DMAed straight into the UMEM",
        )
    } else {
        Finding::new(
            id,
            Status::Warn,
            driver,
            "no AF_XDP zero-copy in this driver: dtlsd binds in copy mode, one copy per frame \
             each way (still no skb and no socket layer)",
        )
        .fix("for zero-copy use a NIC driven by i40e, ice, ixgbe, mlx5_core or igc")
    }
}

fn queues(ctx: &Context<'_>) -> Finding {
    let id = "xdp.queues";
    if let Some(f) = skip(id, ctx) {
        return f;
    }
    let Some(nic) = ctx.nic else {
        return Finding::new(id, Status::Skip, "-", "-");
    };
    let shards = ctx.target.shards;
    let observed = format!("{} receive queues, {shards} shards", nic.rx_queues);
    if nic.rx_queues < shards {
        Finding::new(
            id,
            Status::Fail,
            observed,
            "shard i reads receive queue i: dtlsd refuses more shards than queues",
        )
        .fix(format!("ethtool -L {} combined {shards}", nic.name))
    } else if nic.rx_queues > shards {
        Finding::new(
            id,
            Status::Warn,
            observed,
            format!(
                "RSS also hashes flows to queues {shards}..{}, which no AF_XDP socket reads: \
                 their datagrams go to the kernel socket, which dtlsd does not read in xdp mode",
                nic.rx_queues - 1
            ),
        )
        .fix(format!("ethtool -L {} combined {shards}", nic.name))
    } else {
        Finding::new(id, Status::Ok, observed, "one queue per AF_XDP shard")
    }
}
