//! Kernel version, io_uring availability and the locked-memory limit.

use dtlsd::config::IoMode;

use super::{Context, Finding, Status, bytes};

/// Multishot recvmsg, which the io_uring backend needs, arrived in Linux 6.0.
const URING_MIN: (u32, u32) = (6, 0);

pub(super) fn checks(ctx: &Context<'_>) -> Vec<Finding> {
    vec![
        version(ctx),
        uring_sysctl(ctx),
        uring_probe(ctx),
        memlock(ctx),
    ]
}

/// `major.minor` of a kernel release string (`6.18.0-1-amd64`).
fn release(text: &str) -> Option<(u32, u32)> {
    let mut parts = text.split(['.', '-']);
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

fn version(ctx: &Context<'_>) -> Finding {
    let id = "kernel.version";
    let Some(text) = ctx.host.sysctl("kernel.osrelease") else {
        return Finding::new(
            id,
            Status::Skip,
            "unreadable",
            "kernel.osrelease is not readable",
        );
    };
    match release(&text) {
        Some(v) if v >= URING_MIN => Finding::new(
            id,
            Status::Ok,
            text,
            "6.0 or later: io_uring multishot recvmsg, UDP GSO and GRO are all there",
        ),
        Some(_) if ctx.target.io == IoMode::Mmsg => Finding::new(
            id,
            Status::Ok,
            text,
            "older than 6.0, but io = \"mmsg\" needs only recvmmsg/sendmmsg",
        ),
        Some(_) => Finding::new(
            id,
            if ctx.target.io == IoMode::Uring {
                Status::Fail
            } else {
                Status::Warn
            },
            text,
            "older than 6.0: no io_uring multishot recvmsg, so dtlsd falls back to \
             recvmmsg/sendmmsg (io = \"uring\" refuses to start)",
        )
        .fix("upgrade to a 6.x kernel, or set io = \"mmsg\" in the dtlsd configuration"),
        None => Finding::new(id, Status::Skip, text, "kernel.osrelease does not parse"),
    }
}

fn uring_sysctl(ctx: &Context<'_>) -> Finding {
    let id = "io_uring.sysctl";
    if ctx.target.io == IoMode::Mmsg {
        return Finding::new(id, Status::Skip, "-", "io = \"mmsg\": io_uring is not used");
    }
    let fix = "sysctl -w kernel.io_uring_disabled=0";
    match ctx.host.sysctl_u64("kernel.io_uring_disabled") {
        None => Finding::new(
            id,
            Status::Ok,
            "absent",
            "the sysctl does not exist (before 6.6): io_uring is not disabled by it",
        ),
        Some(0) => Finding::new(id, Status::Ok, "0", "io_uring is enabled for all processes"),
        Some(v) => {
            let status = match (v, ctx.target.io) {
                (_, IoMode::Uring) => Status::Fail,
                (1, _) => Status::Warn,
                _ => Status::Warn,
            };
            let who = if v == 1 {
                "only processes in kernel.io_uring_group may create rings"
            } else {
                "no process may create a ring"
            };
            Finding::new(
                id,
                status,
                v.to_string(),
                format!(
                    "{who}: dtlsd falls back to recvmmsg/sendmmsg (io = \"auto\") or refuses to \
                     start (io = \"uring\")"
                ),
            )
            .fix(fix)
        }
    }
}

/// Sets up the io_uring backend on a loopback socket, exactly as a shard does (ring flags,
/// opcode probe, provided-buffer ring, multishot recvmsg).
pub fn probe_uring() -> Result<(), String> {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    let config = dtls_io::IoConfig {
        mode: dtls_io::IoMode::Uring,
        ..dtls_io::IoConfig::default()
    };
    dtls_io::UdpIo::new(socket, &config)
        .map(drop)
        .map_err(|e| e.to_string())
}

fn uring_probe(ctx: &Context<'_>) -> Finding {
    let id = "io_uring.probe";
    if ctx.target.io == IoMode::Mmsg {
        return Finding::new(id, Status::Skip, "-", "io = \"mmsg\": io_uring is not used");
    }
    if !ctx.host.is_live() {
        return Finding::new(
            id,
            Status::Skip,
            "not run",
            "the probe runs only on the live host (root /), not on a copied tree",
        );
    }
    match probe_uring() {
        Ok(()) => Finding::new(
            id,
            Status::Ok,
            "ring set up",
            "a ring with the opcodes the shards use (multishot recvmsg, provided buffers, \
             sendmsg) sets up in this process",
        ),
        Err(reason) => Finding::new(
            id,
            if ctx.target.io == IoMode::Uring {
                Status::Fail
            } else {
                Status::Warn
            },
            reason,
            "the shards cannot set up io_uring here: io = \"auto\" falls back to \
             recvmmsg/sendmmsg; a container's seccomp profile or a systemd SystemCallFilter \
             without io_uring_* also causes this",
        )
        .fix(
            "sysctl -w kernel.io_uring_disabled=0; allow io_uring_setup, io_uring_enter and \
             io_uring_register in the seccomp profile (or set io = \"mmsg\")",
        ),
    }
}

fn memlock(ctx: &Context<'_>) -> Finding {
    let id = "limits.memlock";
    let Some(limit) = ctx.host.memlock_limit() else {
        return Finding::new(
            id,
            Status::Skip,
            "unreadable",
            "proc/self/limits is not readable",
        );
    };
    // io_uring rings are charged to the memory cgroup since 5.12; AF_XDP UMEM is pinned and
    // charged to RLIMIT_MEMLOCK unless the process has CAP_IPC_LOCK.
    let needed = if ctx.target.io == IoMode::Xdp {
        ctx.target.umem_bytes * ctx.target.shards as u64
    } else {
        0
    };
    let observed = limit.map_or("unlimited".to_owned(), bytes);
    match limit {
        Some(l) if l < needed => Finding::new(
            id,
            Status::Fail,
            observed,
            format!(
                "{} shards × {} of AF_XDP UMEM need {} locked; this is the limit of this \
                 process (set the daemon's with LimitMEMLOCK)",
                ctx.target.shards,
                bytes(ctx.target.umem_bytes),
                bytes(needed)
            ),
        )
        .fix("dtls-tune emit --systemd (LimitMEMLOCK=infinity), or ulimit -l unlimited"),
        _ => Finding::new(
            id,
            Status::Ok,
            observed,
            if needed > 0 {
                format!("covers the {} of UMEM the AF_XDP shards pin", bytes(needed))
            } else {
                "enough: only AF_XDP UMEM counts against it (io_uring rings are charged to the \
                 memory cgroup since 5.12)"
                    .to_owned()
            },
        ),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn releases_parse() {
        assert_eq!(super::release("6.18.0-1-amd64"), Some((6, 18)));
        assert_eq!(super::release("5.15.0"), Some((5, 15)));
        assert_eq!(super::release("x"), None);
    }
}
