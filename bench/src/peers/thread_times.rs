//! User and system (kernel) CPU time of this process's threads, grouped by thread name, from
//! /proc/self/task/*/stat (`utime`, `stime`).
//!
//! The kernel keeps the exact total per thread, but splits it into user and system by
//! sampling at each clock tick, so the split is a statistical estimate with a resolution of
//! one tick (10 ms at USER_HZ = 100): good to a few percent over slices of a second or more.
//! Totals for rates come from `crate::loadgen::cpu` (schedstat, nanoseconds); this module
//! only tells where that time went.

use std::collections::BTreeMap;
use std::fs;
use std::time::Duration;

/// Clock ticks per second of /proc/*/stat times (USER_HZ, 100 on Linux).
const USER_HZ: u64 = 100;

/// Ticks of user and system time per thread id, with the thread's name.
#[derive(Debug, Clone, Default)]
pub(super) struct ThreadTimes {
    threads: BTreeMap<u32, (String, u64, u64)>,
}

/// User and system time.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(super) struct Split {
    /// Time in user space.
    pub user: Duration,
    /// Time in the kernel.
    pub system: Duration,
}

fn ticks(n: u64) -> Duration {
    Duration::from_millis(n.saturating_mul(1000) / USER_HZ)
}

/// (name, utime, stime) of one thread, or `None` when it vanished or the line is odd.
fn read_thread(tid: &str) -> Option<(String, u64, u64)> {
    let stat = fs::read_to_string(format!("/proc/self/task/{tid}/stat")).ok()?;
    // "pid (comm) state ..." — comm may hold spaces or parentheses: split at the last ')'.
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let name = stat.get(open + 1..close)?.to_string();
    let rest: Vec<&str> = stat.get(close + 1..)?.split_whitespace().collect();
    // After the comm: state is field 3; utime and stime are fields 14 and 15.
    let utime = rest.get(11)?.parse().ok()?;
    let stime = rest.get(12)?.parse().ok()?;
    Some((name, utime, stime))
}

impl ThreadTimes {
    /// Reads every thread of this process now (threads that vanish meanwhile are skipped).
    pub(super) fn take() -> Self {
        let mut threads = BTreeMap::new();
        if let Ok(dir) = fs::read_dir("/proc/self/task") {
            for entry in dir.flatten() {
                let tid = entry.file_name().to_string_lossy().into_owned();
                let (Ok(id), Some(t)) = (tid.parse::<u32>(), read_thread(&tid)) else {
                    continue;
                };
                threads.insert(id, t);
            }
        }
        Self { threads }
    }

    /// User and system time used from `self` to `later` by the threads `matches` accepts
    /// by name (threads started in between count from zero).
    pub(super) fn split_since(&self, later: &ThreadTimes, matches: impl Fn(&str) -> bool) -> Split {
        let (mut u, mut s) = (0u64, 0u64);
        for (id, (name, ut, st)) in &later.threads {
            if !matches(name) {
                continue;
            }
            let (ub, sb) = self.threads.get(id).map_or((0, 0), |(_, a, b)| (*a, *b));
            u += ut.saturating_sub(ub);
            s += st.saturating_sub(sb);
        }
        Split {
            user: ticks(u),
            system: ticks(s),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_thread_is_found_and_its_cpu_time_shows_up() {
        let name = std::thread::current().name().map(str::to_owned);
        let before = ThreadTimes::take();
        assert!(!before.threads.is_empty(), "no threads read from /proc");
        // Spin in user space until at least one tick of CPU shows up (the bound only
        // avoids a hang).
        let t0 = std::time::Instant::now();
        let mut x = 0u64;
        let after = loop {
            for i in 0..1_000_000u64 {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(i);
            }
            std::hint::black_box(x);
            let after = ThreadTimes::take();
            let all = before.split_since(&after, |_| true);
            if all.user + all.system > Duration::ZERO {
                break after;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(60),
                "no CPU time ever recorded"
            );
        };
        let none = before.split_since(&after, |_| false);
        assert_eq!(none, Split::default());
        // Thread names are truncated to 15 bytes by the kernel.
        if let Some(n) = name {
            let short: String = n.chars().take(15).collect();
            assert!(after.threads.values().any(|(t, _, _)| *t == short));
        }
    }
}
