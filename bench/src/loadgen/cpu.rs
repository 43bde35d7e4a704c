//! CPU time per thread of this process, from /proc/self/task/*/{comm,schedstat}.
//!
//! `schedstat`'s first field is the time on CPU in ns, its second the time spent runnable
//! but waiting for a CPU (the run queue); where it is missing, `stat`'s utime + stime (clock
//! ticks, assumed 100 Hz) is used and the wait is unknown (0). Threads are named: the server's
//! `dtlsd-shard-N` and `dtlsd-control`, the generator's `loadgen-N`, the echo backend's
//! `echo-backend`.

use std::collections::BTreeMap;
use std::fs;
use std::time::{Duration, Instant};

/// Clock ticks per second assumed for /proc/*/stat (USER_HZ is 100 on Linux).
const USER_HZ: u64 = 100;

/// CPU time of every thread at one instant, keyed by thread id.
#[derive(Debug, Clone)]
pub struct CpuSnapshot {
    at: Instant,
    /// tid → (name, ns on CPU, ns waiting on the run queue).
    threads: BTreeMap<u32, (String, u64, u64)>,
}

/// CPU use of one thread between two snapshots.
#[derive(Debug, Clone, PartialEq)]
pub struct ThreadCpu {
    /// Thread id (distinguishes same-named threads, e.g. two servers' shards).
    pub tid: u32,
    /// Thread name (`comm`).
    pub name: String,
    /// CPU time used, ns.
    pub cpu_ns: u64,
    /// `cpu_ns` over the wall time between the snapshots, percent of one core.
    pub percent: f64,
    /// Time it was runnable but waited for a CPU, ns (0 where unknown).
    pub wait_ns: u64,
}

/// A thread's time on CPU and on the run queue, ns.
fn thread_times(tid: &str) -> Option<(u64, u64)> {
    let base = format!("/proc/self/task/{tid}");
    if let Ok(s) = fs::read_to_string(format!("{base}/schedstat")) {
        let mut f = s.split_whitespace().map(|v| v.parse::<u64>().ok());
        if let (Some(Some(on)), Some(Some(wait))) = (f.next(), f.next()) {
            return Some((on, wait));
        }
    }
    let stat = fs::read_to_string(format!("{base}/stat")).ok()?;
    // Fields after the parenthesised comm: state is field 3, utime 14, stime 15.
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    Some(((utime + stime) * 1_000_000_000 / USER_HZ, 0))
}

impl CpuSnapshot {
    /// Reads every thread of this process now (threads that vanish meanwhile are skipped).
    pub fn take() -> Self {
        let mut threads = BTreeMap::new();
        if let Ok(dir) = fs::read_dir("/proc/self/task") {
            for entry in dir.flatten() {
                let tid = entry.file_name().to_string_lossy().into_owned();
                let Ok(id) = tid.parse::<u32>() else { continue };
                let name = fs::read_to_string(format!("/proc/self/task/{tid}/comm"))
                    .map(|s| s.trim().to_string())
                    .unwrap_or_default();
                if let Some((ns, wait)) = thread_times(&tid) {
                    threads.insert(id, (name, ns, wait));
                }
            }
        }
        Self {
            at: Instant::now(),
            threads,
        }
    }

    /// CPU used by each thread alive at both snapshots, from `self` to `later`, sorted by
    /// name. Threads with (nearly) no CPU and no known name prefix are left out.
    pub fn delta(&self, later: &CpuSnapshot) -> Vec<ThreadCpu> {
        let wall = later
            .at
            .saturating_duration_since(self.at)
            .max(Duration::from_micros(1));
        let mut out: Vec<ThreadCpu> = later
            .threads
            .iter()
            .filter_map(|(id, (name, ns, wait))| {
                let (before, waited) = self.threads.get(id).map_or((0, 0), |(_, b, w)| (*b, *w));
                let cpu_ns = ns.saturating_sub(before);
                let known = ["dtlsd-", "loadgen-", "echo-backend", "flood-"]
                    .iter()
                    .any(|p| name.starts_with(p));
                (known || cpu_ns > wall.as_nanos() as u64 / 100).then(|| ThreadCpu {
                    tid: *id,
                    name: name.clone(),
                    cpu_ns,
                    percent: cpu_ns as f64 * 100.0 / wall.as_nanos() as f64,
                    wait_ns: wait.saturating_sub(waited),
                })
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }
}

/// CPU time of the threads of every other process (kernel threads included) at one instant:
/// what the rest of the host took from the CPUs during a run. Their time slices on a CPU the
/// data path uses delay every datagram waiting there, whatever its record protection.
#[derive(Debug, Clone)]
pub struct OthersSnapshot {
    at: Instant,
    /// (pid, tid) → (process name, ns on CPU).
    threads: BTreeMap<(u32, u32), (String, u64)>,
}

/// CPU use of one other process (or kernel thread family) between two snapshots.
#[derive(Debug, Clone, PartialEq)]
pub struct ProcessCpu {
    /// The process's `comm`, kernel threads' up to the first `/` (`kworker`, `ksoftirqd`).
    pub name: String,
    /// CPU time used, ns.
    pub cpu_ns: u64,
    /// `cpu_ns` over the wall time between the snapshots, percent of one core.
    pub percent: f64,
}

/// A process name as the report groups it: per-CPU kernel threads by family.
fn process_group(comm: &str) -> String {
    comm.split('/').next().unwrap_or(comm).to_string()
}

impl OthersSnapshot {
    /// Reads every thread of every process but this one (those that vanish meanwhile are
    /// skipped; a process that starts later counts from zero).
    pub fn take() -> Self {
        let me = std::process::id();
        let mut threads = BTreeMap::new();
        let Ok(procs) = fs::read_dir("/proc") else {
            return Self {
                at: Instant::now(),
                threads,
            };
        };
        for p in procs.flatten() {
            let Ok(pid) = p.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            if pid == me {
                continue;
            }
            let name = fs::read_to_string(format!("/proc/{pid}/comm"))
                .map(|s| process_group(s.trim()))
                .unwrap_or_default();
            let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
                continue;
            };
            for t in tasks.flatten() {
                let Ok(tid) = t.file_name().to_string_lossy().parse::<u32>() else {
                    continue;
                };
                let ns = fs::read_to_string(format!("/proc/{pid}/task/{tid}/schedstat"))
                    .ok()
                    .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok());
                if let Some(ns) = ns {
                    threads.insert((pid, tid), (name.clone(), ns));
                }
            }
        }
        Self {
            at: Instant::now(),
            threads,
        }
    }

    /// CPU used by the other processes from `self` to `later`, per process name, the
    /// busiest first (only those with some CPU).
    pub fn delta(&self, later: &OthersSnapshot) -> Vec<ProcessCpu> {
        let wall = later
            .at
            .saturating_duration_since(self.at)
            .max(Duration::from_micros(1));
        let mut per: BTreeMap<&str, u64> = BTreeMap::new();
        for (key, (name, ns)) in &later.threads {
            let before = self.threads.get(key).map_or(0, |(_, b)| *b);
            let used = ns.saturating_sub(before);
            if used > 0 {
                *per.entry(name.as_str()).or_default() += used;
            }
        }
        let mut out: Vec<ProcessCpu> = per
            .into_iter()
            .map(|(name, cpu_ns)| ProcessCpu {
                name: name.to_string(),
                cpu_ns,
                percent: cpu_ns as f64 * 100.0 / wall.as_nanos() as f64,
            })
            .collect();
        out.sort_by(|a, b| b.cpu_ns.cmp(&a.cpu_ns).then(a.name.cmp(&b.name)));
        out
    }
}

/// The other processes' CPU in all, percent of one core.
pub fn others_percent(others: &[ProcessCpu]) -> f64 {
    others.iter().map(|p| p.percent).sum()
}

/// One line: the other processes' CPU in all, then the busiest few.
pub fn others_line(others: &[ProcessCpu]) -> String {
    let top: Vec<String> = others
        .iter()
        .take(4)
        .filter(|p| p.percent >= 0.05)
        .map(|p| format!("{} {:.2}%", p.name, p.percent))
        .collect();
    let mut line = format!("{:.2}% of a core in all", others_percent(others));
    if !top.is_empty() {
        let _ = std::fmt::Write::write_fmt(&mut line, format_args!(" ({})", top.join(", ")));
    }
    line
}

/// `{"name": percent, ...}` plus totals per group (`server`, `loadgen`, `echo`).
pub fn json(threads: &[ThreadCpu]) -> serde_json::Value {
    let mut per = serde_json::Map::new();
    let (mut server, mut loadgen, mut echo) = (0.0, 0.0, 0.0);
    for t in threads {
        let key = if per.contains_key(&t.name) {
            format!("{}#{}", t.name, per.len())
        } else {
            t.name.clone()
        };
        per.insert(key, serde_json::json!(round1(t.percent)));
        if t.name.starts_with("dtlsd-") {
            server += t.percent;
        } else if t.name.starts_with("loadgen-") {
            loadgen += t.percent;
        } else if t.name.starts_with("echo-backend") {
            echo += t.percent;
        }
    }
    let all: f64 = threads.iter().map(|t| t.percent).sum();
    serde_json::json!({
        "unit": "percent of one core",
        "threads": per,
        "server_total": round1(server),
        "loadgen_total": round1(loadgen),
        "echo_total": round1(echo),
        "process_total": round1(all),
        "cores": std::thread::available_parallelism().map_or(1, usize::from),
    })
}

/// One line: the share of the wall time `wall` each of the data path's threads (server,
/// echo backend, generator) spent runnable but waiting for a CPU, the longest first.
pub fn waits_line(threads: &[ThreadCpu], wall: Duration) -> String {
    let wall = wall.as_nanos().max(1) as f64;
    let mut waits: Vec<(&str, f64)> = threads
        .iter()
        .filter(|t| {
            ["dtlsd-", "loadgen-", "echo-backend"]
                .iter()
                .any(|p| t.name.starts_with(p))
        })
        .map(|t| (t.name.as_str(), t.wait_ns as f64 * 100.0 / wall))
        .filter(|(_, pct)| *pct >= 0.005)
        .collect();
    waits.sort_by(|a, b| b.1.total_cmp(&a.1));
    if waits.is_empty() {
        return "none".to_string();
    }
    waits
        .iter()
        .map(|(n, pct)| format!("{n} {pct:.2}%"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The busiest generator thread's CPU percent (0 when none ran).
pub fn max_loadgen_percent(threads: &[ThreadCpu]) -> f64 {
    threads
        .iter()
        .filter(|t| t.name.starts_with("loadgen-"))
        .map(|t| t.percent)
        .fold(0.0, f64::max)
}

/// One line: `name 87.3%, …` for the threads that used at least 0.5 % of a core, then the
/// process total over the cores available.
pub fn lines(threads: &[ThreadCpu]) -> String {
    let all: f64 = threads.iter().map(|t| t.percent).sum();
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let mut line = threads
        .iter()
        .filter(|t| t.percent >= 0.5)
        .map(|t| format!("{} {:.1}%", t.name, t.percent))
        .collect::<Vec<_>>()
        .join(", ");
    let _ =
        std::fmt::Write::write_fmt(&mut line, format_args!(" (all {all:.0}% of {cores} cores)"));
    line
}

fn round1(v: f64) -> f64 {
    (v * 10.0).round() / 10.0
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A busy child process shows among the others, under its name; this process's own
    /// threads do not.
    #[test]
    fn another_busy_process_is_counted() {
        let before = OthersSnapshot::take();
        let mut live = std::process::Command::new("sh")
            .args(["-c", "while :; do :; done"])
            .spawn()
            .expect("spawn sh");
        std::thread::sleep(Duration::from_millis(150));
        let after = OthersSnapshot::take();
        let _ = live.kill();
        let _ = live.wait();
        let others = before.delta(&after);
        let sh = others
            .iter()
            .find(|p| p.name == "sh")
            .expect("sh is listed");
        assert!(sh.cpu_ns > 10_000_000, "{sh:?}");
        assert!(others_percent(&others) >= sh.percent);
        assert!(
            others_line(&others).contains("sh "),
            "{}",
            others_line(&others)
        );
        let me = std::process::id();
        assert!(!after.threads.keys().any(|(pid, _)| *pid == me));
        assert_eq!(process_group("kworker/0:2-events"), "kworker");
    }

    #[test]
    fn a_busy_named_thread_shows_its_cpu() {
        let threads = std::thread::Builder::new()
            .name("loadgen-9".into())
            .spawn(|| {
                let before = CpuSnapshot::take();
                let start = Instant::now();
                let mut x = 0u64;
                while start.elapsed() < Duration::from_millis(30) {
                    x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
                }
                before.delta(&CpuSnapshot::take())
            })
            .expect("spawn")
            .join()
            .expect("join");
        let me = threads
            .iter()
            .find(|t| t.name == "loadgen-9")
            .expect("the thread is listed");
        assert!(me.cpu_ns > 0 && me.percent > 0.0, "{me:?}");
        let mut waited = me.clone();
        waited.wait_ns = 3_000_000;
        assert_eq!(
            waits_line(&[waited], Duration::from_millis(100)),
            "loadgen-9 3.00%"
        );
        assert!(max_loadgen_percent(&threads) >= me.percent);
        let j = json(&threads);
        assert!(j["threads"]["loadgen-9"].is_number());
        assert!(lines(&threads).contains("loadgen-9"));
    }
}
