//! The standard `process_*` metrics of a Prometheus client, read from `/proc/self` at each
//! scrape (Prometheus' client libraries name them; Linux only, like the daemon).

use std::fs;

/// What `/proc/self` says about the daemon now. A field `/proc` did not give is `None`
/// and its family is left out.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ProcessStats {
    /// User and system CPU time, seconds.
    pub cpu_seconds: Option<f64>,
    /// Resident set size, bytes.
    pub resident_bytes: Option<u64>,
    /// Virtual memory size, bytes.
    pub virtual_bytes: Option<u64>,
    /// Open file descriptors.
    pub open_fds: Option<u64>,
    /// The soft limit on open file descriptors.
    pub max_fds: Option<u64>,
    /// Start time, seconds since the Unix epoch.
    pub start_time_seconds: Option<f64>,
    /// Threads.
    pub threads: Option<u64>,
}

/// Clock ticks per second of `/proc/*/stat` times: USER_HZ, which the kernel ABI fixes at
/// 100 on every architecture the daemon builds for (proc(5), `sysconf(_SC_CLK_TCK)`).
const USER_HZ: f64 = 100.0;

impl ProcessStats {
    /// Reads `/proc/self/{stat,status,fd}`, `/proc/stat` and the open-files limit.
    pub fn read() -> Self {
        let stat = fs::read_to_string("/proc/self/stat").ok();
        let status = fs::read_to_string("/proc/self/status").ok();
        let boot = fs::read_to_string("/proc/stat").ok();
        let fields = stat.as_deref().map(stat_fields).unwrap_or_default();
        let field = |n: usize| fields.get(n).and_then(|f| f.parse::<u64>().ok());
        let kib = |key: &str| status.as_deref().and_then(|s| status_value(s, key));
        let boot_time = boot.as_deref().and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("btime "))
                .and_then(|v| v.trim().parse::<u64>().ok())
        });
        Self {
            // Fields 14 and 15 (utime, stime), counted from 1 in proc(5).
            cpu_seconds: field(13)
                .zip(field(14))
                .map(|(u, s)| (u + s) as f64 / USER_HZ),
            resident_bytes: kib("VmRSS:").map(|k| k * 1024),
            virtual_bytes: kib("VmSize:").map(|k| k * 1024),
            open_fds: fs::read_dir("/proc/self/fd").ok().map(|d| d.count() as u64),
            max_fds: rlimit::getrlimit(rlimit::Resource::NOFILE)
                .ok()
                .map(|(soft, _)| soft),
            // Field 22: start time in ticks after boot.
            start_time_seconds: boot_time
                .zip(field(21))
                .map(|(b, t)| b as f64 + t as f64 / USER_HZ),
            threads: kib("Threads:"),
        }
    }
}

/// The fields of `/proc/self/stat` after the command name (which may hold spaces and
/// parentheses), numbered from 0 = field 1 (`pid`) as in proc(5).
fn stat_fields(stat: &str) -> Vec<String> {
    let Some((pid, rest)) = stat.split_once(" (") else {
        return Vec::new();
    };
    let Some((comm, tail)) = rest.rsplit_once(") ") else {
        return Vec::new();
    };
    [pid.to_owned(), comm.to_owned()]
        .into_iter()
        .chain(tail.split_whitespace().map(str::to_owned))
        .collect()
}

/// The number after `key` on its line of `/proc/self/status` (`VmRSS:   1234 kB`).
fn status_value(status: &str, key: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_survive_a_command_name_with_spaces_and_parentheses() {
        let f = stat_fields("42 (a (b) c) S 1 2 3 4 5 6 7 8 9 10 11 12 13");
        assert_eq!(f[0], "42");
        assert_eq!(f[1], "a (b) c");
        assert_eq!(f[2], "S");
        assert_eq!(f[13], "11");
    }

    #[test]
    fn this_process_reads_as_alive() {
        let p = ProcessStats::read();
        assert!(p.resident_bytes.is_some_and(|b| b > 1 << 20), "{p:?}");
        assert!(p.virtual_bytes >= p.resident_bytes, "{p:?}");
        assert!(p.open_fds.is_some_and(|n| n >= 3), "{p:?}");
        assert!(p.max_fds >= p.open_fds, "{p:?}");
        assert!(p.threads.is_some_and(|n| n >= 1), "{p:?}");
        assert!(p.cpu_seconds.is_some(), "{p:?}");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs_f64();
        let start = p.start_time_seconds.expect("start time");
        assert!(
            start <= now + 1.0 && start > now - 86_400.0 * 365.0,
            "{start} vs {now}"
        );
    }
}
