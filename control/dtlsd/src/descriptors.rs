//! The open-files limit (`RLIMIT_NOFILE`) against what the configured caps can need.
//!
//! Every session holds one upstream UDP socket (serve: to the backend; connect: to the
//! server, opened when its source first sends), so the caps decide how many descriptors the
//! daemon can need: each shard's session cap and its own few (listen socket, epoll set,
//! io_uring ring), plus the process's fixed ones and the metrics endpoint's. At start
//! ([`ensure`]) the soft limit is raised to that need when the hard limit allows; when it
//! does not, the soft limit is raised as far as it goes and a warning names the numbers and
//! how to raise the hard limit. Either way the daemon runs: a session that finds no
//! descriptor later is refused and counted (`dtlsd_sessions_refused_total{reason=
//! "descriptors"}`), and established sessions are not affected.

use dtls_shard::ShardConfig;

/// Descriptors each shard holds besides its sessions' sockets: the listen socket, the epoll
/// set over the upstream sockets, the io_uring ring, with room to spare.
pub const PER_SHARD: u64 = 8;
/// Descriptors of the process besides the shards and the metrics endpoint: standard
/// streams, the signal pipe, files read at a reload, the allocator and logging, with room to
/// spare.
pub const FIXED: u64 = 64;

/// What the caps can need: `shards` shards of `config.max_sessions` sessions each, plus
/// the fixed descriptors and, with `metrics`, the endpoint's.
pub fn needed(shards: usize, config: &ShardConfig, metrics: bool) -> u64 {
    let sessions = config.max_sessions.max(1) as u64;
    let endpoint = if metrics {
        crate::metrics::MAX_DESCRIPTORS as u64
    } else {
        0
    };
    (shards.max(1) as u64)
        .saturating_mul(sessions.saturating_add(PER_SHARD))
        .saturating_add(FIXED)
        .saturating_add(endpoint)
}

/// What to do about the limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plan {
    /// The soft limit covers the need.
    Enough,
    /// Raise the soft limit to `to` (the need; the hard limit allows it).
    Raise {
        /// The new soft limit.
        to: u64,
    },
    /// The hard limit is below the need: raise the soft limit to the hard one (`Some`) or
    /// leave it (`None`, already equal), and warn.
    Short {
        /// The new soft limit, if it can grow.
        to: Option<u64>,
    },
}

/// The plan for `needed` descriptors under the limits `soft` and `hard`.
pub fn plan(needed: u64, soft: u64, hard: u64) -> Plan {
    if soft >= needed {
        Plan::Enough
    } else if hard >= needed {
        Plan::Raise { to: needed }
    } else if hard > soft {
        Plan::Short { to: Some(hard) }
    } else {
        Plan::Short { to: None }
    }
}

/// What [`ensure`] found and did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    /// Descriptors the caps can need.
    pub needed: u64,
    /// The soft limit found at start.
    pub soft: u64,
    /// The hard limit.
    pub hard: u64,
    /// The soft limit in force now.
    pub now: u64,
}

impl Outcome {
    /// Whether the limit in force covers the need.
    pub fn is_enough(&self) -> bool {
        self.now >= self.needed
    }
}

/// Checks `RLIMIT_NOFILE` against what `shards` shards with `config` (and the metrics
/// endpoint when `metrics`) can need, raises the soft limit as far as needed and allowed,
/// and logs what it did: raising at info, a shortfall as a warning with the numbers and
/// how to raise the hard limit. `None` when the limit cannot be read (logged).
pub fn ensure(shards: usize, config: &ShardConfig, metrics: bool) -> Option<Outcome> {
    let needed = needed(shards, config, metrics);
    let (soft, hard) = match rlimit::getrlimit(rlimit::Resource::NOFILE) {
        Ok(limits) => limits,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the open-files limit (RLIMIT_NOFILE)");
            return None;
        }
    };
    let raise = |to: u64| match rlimit::setrlimit(rlimit::Resource::NOFILE, to, hard) {
        Ok(()) => to,
        Err(e) => {
            tracing::warn!(error = %e, from = soft, to, "cannot raise the open-files limit");
            soft
        }
    };
    let now = match plan(needed, soft, hard) {
        Plan::Enough => soft,
        Plan::Raise { to } | Plan::Short { to: Some(to) } => raise(to),
        Plan::Short { to: None } => soft,
    };
    let outcome = Outcome {
        needed,
        soft,
        hard,
        now,
    };
    let max_sessions = config.max_sessions;
    if outcome.is_enough() {
        if now > soft {
            tracing::info!(
                from = soft,
                to = now,
                needed,
                shards,
                max_sessions,
                "raised the open-files limit (RLIMIT_NOFILE) to what the session caps can need"
            );
        }
    } else {
        tracing::warn!(
            available = now,
            needed,
            shards,
            max_sessions,
            hard,
            "open-files limit (RLIMIT_NOFILE) {now} is below the {needed} that \
             {max_sessions} sessions on each of {shards} shards can need: sessions beyond it \
             are refused (dtlsd_sessions_refused_total{{reason=\"descriptors\"}}); raise it to {needed} \
             with LimitNOFILE={needed} in the systemd unit or `ulimit -n {needed}` before \
             starting dtlsd"
        );
    }
    Some(outcome)
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use super::*;

    #[test]
    fn need_counts_every_session_socket_and_the_fixed_ones() {
        let backend: SocketAddr = "127.0.0.1:9".parse().expect("address");
        let mut config = ShardConfig::new(backend);
        config.max_sessions = 1000;
        assert_eq!(needed(4, &config, false), 4 * (1000 + PER_SHARD) + FIXED);
        assert_eq!(
            needed(4, &config, true),
            4 * (1000 + PER_SHARD) + FIXED + crate::metrics::MAX_DESCRIPTORS as u64
        );
    }

    #[test]
    fn plan_raises_within_the_hard_limit_and_reports_a_shortfall() {
        assert_eq!(plan(5000, 8192, 8192), Plan::Enough);
        assert_eq!(plan(5000, 5000, 5000), Plan::Enough);
        assert_eq!(plan(5000, 1024, 524_288), Plan::Raise { to: 5000 });
        assert_eq!(plan(5000, 1024, 5000), Plan::Raise { to: 5000 });
        assert_eq!(plan(5000, 1024, 4096), Plan::Short { to: Some(4096) });
        assert_eq!(plan(5000, 4096, 4096), Plan::Short { to: None });
    }
}
