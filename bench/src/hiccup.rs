//! Host hiccups (B3): how long the host kept each CPU from a thread that wanted to run.
//!
//! One probe thread per CPU, pinned to it and in `SCHED_FIFO` where the process may use it,
//! sleeps [`PERIOD`] in a loop and records how much later than asked it woke (the method of
//! Azul's jHiccup, written here from its description). A real-time thread preempts every
//! ordinary thread of its CPU on wake-up, so what still delays it is the host: kernel work
//! that does not yield (this kernel is built `PREEMPT_NONE`), interrupts, or a hypervisor that
//! did not run the vCPU. Such a stall delays every datagram that needs that CPU meanwhile,
//! plaintext and DTLS alike, and no data plane can do better than the host it runs on.
//!
//! Each wake-up is recorded with its expected interval ([`Histogram::record_correct`]): a
//! 10 ms stall also records the nine ticks it swallowed, so the histogram is of time, like the
//! latency histogram, and its percentiles compare with latency percentiles of the same run. The
//! stalled share is the time lost to hiccups of [`STALL_FLOOR`] or more over the wall time: at
//! 1.2 %, latency percentiles from p99 up measure the host as much as the data plane.
//!
//! Stalls the probes cannot see: time the CPU gave to another ordinary thread. A real-time
//! probe preempts it, the data path's threads may have to wait for its time slice; so each
//! snapshot also reads the CPU time of every other process on the host
//! ([`OthersSnapshot`]), and the report names the busiest.
//!
//! The probes cost each CPU one short wake-up per period (about 1 000 per second); `dtls-bench
//! latency --no-hiccups` leaves them out.

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow};
use hdrhistogram::Histogram;
use serde_json::{Value, json};

use crate::hist;
use crate::loadgen::cpu::{self, OthersSnapshot, ProcessCpu};

/// How long each probe sleeps between wake-ups.
pub const PERIOD: Duration = Duration::from_millis(1);

/// Hiccups at least this long count as stalled time.
pub const STALL_FLOOR: Duration = Duration::from_millis(1);

/// A burst of stalls goes on while each wake-up is at least this late. A host that takes a
/// busy vCPU away in slices lets the probe (real-time, first in line) run for a moment
/// between them; the datagrams waiting on that CPU get no further meanwhile, so for them the
/// burst is one stall as long as all of it.
pub const BURST_GAP: Duration = Duration::from_micros(250);

/// The probes' `SCHED_FIFO` priority: the lowest real-time one, above every ordinary thread,
/// below the kernel's own real-time threads.
const FIFO_PRIORITY: i32 = 1;

/// One probe's running totals.
#[derive(Debug, Clone)]
struct Totals {
    histogram: Histogram<u64>,
    stalled_ns: u64,
    wakeups: u64,
    /// The longest burst of stalls (first hiccup's due time to the last one's wake-up).
    longest_burst: Duration,
    /// The burst going on: how long it has lasted so far (`None`: none).
    burst: Option<Duration>,
}

impl Totals {
    fn new() -> Result<Self> {
        Ok(Self {
            histogram: hist::new_latency_ns().context("hiccup histogram")?,
            stalled_ns: 0,
            wakeups: 0,
            longest_burst: Duration::ZERO,
            burst: None,
        })
    }

    /// One wake-up `late` after its time.
    fn record(&mut self, late: Duration, period: Duration) {
        let ns = u64::try_from(late.as_nanos()).unwrap_or(u64::MAX);
        let period_ns = u64::try_from(period.as_nanos()).unwrap_or(u64::MAX).max(1);
        let _ = self.histogram.record_correct(ns.max(1), period_ns);
        if late >= STALL_FLOOR {
            self.stalled_ns = self.stalled_ns.saturating_add(ns);
        }
        // A burst starts with a stall and goes on while the wake-ups stay late: its length
        // is the lateness of each wake-up and the sleeps between them.
        self.burst = match self.burst {
            None if late >= STALL_FLOOR => Some(late),
            Some(sofar) if late >= BURST_GAP => Some(sofar + period + late),
            _ => None,
        };
        if let Some(b) = self.burst {
            self.longest_burst = self.longest_burst.max(b);
        }
        self.wakeups += 1;
    }
}

/// One probe thread.
#[derive(Debug)]
struct Probe {
    cpu: usize,
    totals: Arc<Mutex<Totals>>,
    handle: Option<JoinHandle<()>>,
}

/// The probes, one per CPU, running until dropped.
#[derive(Debug)]
pub struct HiccupMeter {
    probes: Vec<Probe>,
    stop: Arc<AtomicBool>,
    period: Duration,
    realtime: bool,
}

impl HiccupMeter {
    /// A probe on every CPU this process may run on.
    ///
    /// # Errors
    /// The CPUs cannot be listed, or a probe thread cannot start.
    pub fn on_all_cpus() -> Result<Self> {
        let cpus: Vec<usize> = core_affinity::get_core_ids()
            .ok_or_else(|| anyhow!("cannot list the CPUs"))?
            .into_iter()
            .map(|c| c.id)
            .collect();
        Self::start(&cpus, PERIOD)
    }

    /// A probe on each of `cpus`, waking every `period`. Returns once every probe runs.
    ///
    /// # Errors
    /// A probe thread cannot start or cannot be pinned to its CPU.
    pub fn start(cpus: &[usize], period: Duration) -> Result<Self> {
        if period.is_zero() {
            anyhow::bail!("the hiccup period must be positive");
        }
        let stop = Arc::new(AtomicBool::new(false));
        let mut meter = Self {
            probes: Vec::with_capacity(cpus.len()),
            stop: Arc::clone(&stop),
            period,
            realtime: true,
        };
        let (ready_tx, ready_rx) = mpsc::channel();
        for &cpu in cpus {
            let totals = Arc::new(Mutex::new(Totals::new()?));
            let handle = {
                let (totals, stop, ready) =
                    (Arc::clone(&totals), Arc::clone(&stop), ready_tx.clone());
                std::thread::Builder::new()
                    .name(format!("hiccup-{cpu}"))
                    .spawn(move || probe(cpu, period, &totals, &stop, &ready))
                    .context("spawn a hiccup probe")?
            };
            meter.probes.push(Probe {
                cpu,
                totals,
                handle: Some(handle),
            });
        }
        drop(ready_tx);
        for _ in 0..meter.probes.len() {
            match ready_rx.recv() {
                Ok(Ok(realtime)) => meter.realtime &= realtime,
                Ok(Err(e)) => return Err(anyhow!(e)),
                Err(_) => return Err(anyhow!("a hiccup probe stopped before it ran")),
            }
        }
        Ok(meter)
    }

    /// Every probe's totals so far. The longest burst is the longest since the previous
    /// snapshot (a snapshot starts the next window), so take the snapshots of a run from one
    /// thread, one at its start and one at its end.
    ///
    /// # Errors
    /// A probe panicked while holding its totals.
    pub fn snapshot(&self) -> Result<HiccupSnapshot> {
        let cpus = self
            .probes
            .iter()
            .map(|p| {
                let mut totals = p
                    .totals
                    .lock()
                    .map_err(|_| anyhow!("hiccup probe {} failed", p.cpu))?;
                let copy = totals.clone();
                totals.longest_burst = totals.burst.unwrap_or_default();
                Ok((p.cpu, copy))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(HiccupSnapshot {
            at: Instant::now(),
            cpus,
            period: self.period,
            realtime: self.realtime,
            others: OthersSnapshot::take(),
        })
    }
}

impl Drop for HiccupMeter {
    fn drop(&mut self) {
        self.stop.store(true, Relaxed);
        for p in &mut self.probes {
            if let Some(h) = p.handle.take() {
                let _ = h.join();
            }
        }
    }
}

/// A probe: pinned to `cpu`, real-time where allowed, sleeping `period` until `stop`.
fn probe(
    cpu: usize,
    period: Duration,
    totals: &Mutex<Totals>,
    stop: &AtomicBool,
    ready: &mpsc::Sender<std::result::Result<bool, String>>,
) {
    if !core_affinity::set_for_current(core_affinity::CoreId { id: cpu }) {
        let _ = ready.send(Err(format!("cannot pin a hiccup probe to cpu {cpu}")));
        return;
    }
    let realtime = dtls_io::set_current_thread_fifo(FIFO_PRIORITY).is_ok();
    if ready.send(Ok(realtime)).is_err() {
        return;
    }
    while !stop.load(Relaxed) {
        let asked = Instant::now();
        std::thread::sleep(period);
        let late = asked.elapsed().saturating_sub(period);
        match totals.lock() {
            Ok(mut t) => t.record(late, period),
            Err(_) => return,
        }
    }
}

/// The probes' totals at one moment.
#[derive(Debug, Clone)]
pub struct HiccupSnapshot {
    at: Instant,
    cpus: Vec<(usize, Totals)>,
    period: Duration,
    realtime: bool,
    others: OthersSnapshot,
}

impl HiccupSnapshot {
    /// The hiccups between `earlier` and this snapshot.
    ///
    /// # Errors
    /// The snapshots are of different meters.
    pub fn since(&self, earlier: &HiccupSnapshot) -> Result<Hiccups> {
        if self.cpus.len() != earlier.cpus.len() {
            anyhow::bail!("hiccup snapshots of different probes");
        }
        let cpus = self
            .cpus
            .iter()
            .zip(&earlier.cpus)
            .map(|((cpu, now), (_, then))| {
                let mut histogram = now.histogram.clone();
                histogram
                    .subtract(&then.histogram)
                    .context("hiccup histograms")?;
                Ok(CpuHiccups {
                    cpu: *cpu,
                    histogram,
                    stalled: Duration::from_nanos(now.stalled_ns.saturating_sub(then.stalled_ns)),
                    longest_burst: now.longest_burst,
                    wakeups: now.wakeups.saturating_sub(then.wakeups),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Hiccups {
            period: self.period,
            wall: self.at.saturating_duration_since(earlier.at),
            realtime: self.realtime,
            cpus,
            others: earlier.others.delta(&self.others),
        })
    }
}

/// One CPU's hiccups over a run.
#[derive(Debug, Clone)]
pub struct CpuHiccups {
    /// The CPU.
    pub cpu: usize,
    /// How late the probe woke, ns, recorded with the expected interval (a histogram of time).
    pub histogram: Histogram<u64>,
    /// Time lost to hiccups of [`STALL_FLOOR`] or more.
    pub stalled: Duration,
    /// The longest burst of stalls ([`BURST_GAP`]): for the datagrams waiting on this CPU,
    /// the longest the host kept it.
    pub longest_burst: Duration,
    /// The probe's wake-ups.
    pub wakeups: u64,
}

impl CpuHiccups {
    /// The stalled time as a share of `wall` (0..=1).
    pub fn stalled_share(&self, wall: Duration) -> f64 {
        if wall.is_zero() {
            0.0
        } else {
            (self.stalled.as_secs_f64() / wall.as_secs_f64()).min(1.0)
        }
    }
}

/// The hiccups of every probed CPU over one run.
#[derive(Debug, Clone)]
pub struct Hiccups {
    /// The probes' sleep.
    pub period: Duration,
    /// The run's wall time.
    pub wall: Duration,
    /// Every probe ran in `SCHED_FIFO` (else the figures include the time slices of this
    /// process's own threads on that CPU).
    pub realtime: bool,
    /// Per CPU.
    pub cpus: Vec<CpuHiccups>,
    /// The other processes' CPU time over the run, the busiest first.
    pub others: Vec<ProcessCpu>,
}

/// Other processes' CPU (percent of one core) from which the report adds a note.
const OTHERS_NOTE_PERCENT: f64 = 0.5;

/// How many CPUs the report line names (the most stalled first).
const LINE_CPUS: usize = 4;

impl Hiccups {
    /// The most stalled CPU and its share of the wall time.
    pub fn worst(&self) -> Option<(&CpuHiccups, f64)> {
        self.cpus
            .iter()
            .map(|c| (c, c.stalled_share(self.wall)))
            .max_by(|a, b| a.1.total_cmp(&b.1))
    }

    /// One line for the report: the most stalled CPUs' p99, p99.9, max and stalled share.
    pub fn line(&self) -> String {
        let ms = |ns: u64| ns as f64 / 1e6;
        let mut cpus: Vec<(&CpuHiccups, f64)> = self
            .cpus
            .iter()
            .map(|c| (c, c.stalled_share(self.wall)))
            .collect();
        cpus.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cpu.cmp(&b.0.cpu)));
        let mut parts: Vec<String> = cpus
            .iter()
            .take(LINE_CPUS)
            .map(|(c, share)| {
                let h = &c.histogram;
                format!(
                    "cpu{} p99 {:.2} ms, p99.9 {:.2}, max {:.2}, stalled {:.2} % in bursts up to {:.2} ms",
                    c.cpu,
                    ms(h.value_at_quantile(0.99)),
                    ms(h.value_at_quantile(0.999)),
                    ms(h.max()),
                    share * 100.0,
                    c.longest_burst.as_secs_f64() * 1e3
                )
            })
            .collect();
        if cpus.len() > LINE_CPUS {
            parts.push(format!("{} more CPUs less stalled", cpus.len() - LINE_CPUS));
        }
        let class = if self.realtime {
            "SCHED_FIFO"
        } else {
            "SCHED_OTHER: includes this process's own time slices"
        };
        format!("{} ({:?} sleeps, {class})", parts.join("; "), self.period)
    }

    /// A note when the other processes took [`OTHERS_NOTE_PERCENT`] of a core or more.
    pub fn others_note(&self) -> Option<String> {
        let all = cpu::others_percent(&self.others);
        let top = self.others.first()?;
        (all >= OTHERS_NOTE_PERCENT).then(|| {
            format!(
                "other processes took {all:.2} % of a core during the run (most: {} {:.2} %); their time slices on the data path's CPUs delay the datagrams waiting there",
                top.name, top.percent
            )
        })
    }

    /// A note when the host stalled a CPU long enough to reach the reported percentiles:
    /// from which percentile up the latency figures measure the host as much as the data
    /// plane (`None` under 0.01 % stalled).
    pub fn note(&self) -> Option<String> {
        let (cpu, share) = self.worst()?;
        let from = [(0.01, "p99"), (0.001, "p99.9"), (0.0001, "p99.99")]
            .into_iter()
            .find(|(floor, _)| share >= *floor)
            .map(|(_, p)| p)?;
        Some(format!(
            "the host stalled cpu{} for {:.2} % of the run (bursts up to {:.2} ms): latency from {from} up measures the host as much as the data plane",
            cpu.cpu,
            share * 100.0,
            cpu.longest_burst.as_secs_f64() * 1e3
        ))
    }

    /// The result document's `hiccups` object (ns).
    pub fn json(&self) -> Value {
        let cpus: Vec<Value> = self
            .cpus
            .iter()
            .map(|c| {
                let h = &c.histogram;
                json!({
                    "cpu": c.cpu,
                    "p50_ns": h.value_at_quantile(0.5),
                    "p99_ns": h.value_at_quantile(0.99),
                    "p999_ns": h.value_at_quantile(0.999),
                    "max_ns": h.max(),
                    "stalled_ns": u64::try_from(c.stalled.as_nanos()).unwrap_or(u64::MAX),
                    "stalled_share": c.stalled_share(self.wall),
                    "longest_burst_ns": u64::try_from(c.longest_burst.as_nanos()).unwrap_or(u64::MAX),
                    "wakeups": c.wakeups,
                })
            })
            .collect();
        json!({
            "period_ns": u64::try_from(self.period.as_nanos()).unwrap_or(u64::MAX),
            "stall_floor_ns": u64::try_from(STALL_FLOOR.as_nanos()).unwrap_or(u64::MAX),
            "burst_gap_ns": u64::try_from(BURST_GAP.as_nanos()).unwrap_or(u64::MAX),
            "wall_ns": u64::try_from(self.wall.as_nanos()).unwrap_or(u64::MAX),
            "realtime": self.realtime,
            "cpus": cpus,
            "note": self.note(),
            "others": {
                "percent_of_a_core": cpu::others_percent(&self.others),
                "processes": self.others.iter().take(8).map(|p| json!({"name": p.name, "cpu_ns": p.cpu_ns, "percent": p.percent})).collect::<Vec<_>>(),
                "note": self.others_note(),
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hiccups(lates_ms: &[u64], wall: Duration) -> Hiccups {
        let mut t = Totals::new().expect("totals");
        for &ms in lates_ms {
            t.record(Duration::from_millis(ms), PERIOD);
        }
        Hiccups {
            period: PERIOD,
            wall,
            realtime: true,
            cpus: vec![CpuHiccups {
                cpu: 0,
                histogram: t.histogram,
                stalled: Duration::from_nanos(t.stalled_ns),
                longest_burst: t.longest_burst,
                wakeups: t.wakeups,
            }],
            others: Vec::new(),
        }
    }

    /// A 10 ms stall counts its swallowed ticks in the histogram (time-weighted) and 10 ms of
    /// stalled time; sub-floor lateness is not stalled time.
    #[test]
    fn a_stall_is_recorded_as_time() {
        let mut lates = vec![0; 990];
        lates.push(10);
        let h = hiccups(&lates, Duration::from_secs(1));
        let cpu = &h.cpus[0];
        assert_eq!(cpu.wakeups, 991);
        assert_eq!(cpu.stalled, Duration::from_millis(10));
        // 990 on-time ticks and 10 recorded for the stall (10, 9, ... 1 ms).
        assert_eq!(cpu.histogram.len(), 1000);
        assert!(cpu.histogram.value_at_quantile(0.995) >= 4_000_000);
        assert!((cpu.stalled_share(h.wall) - 0.01).abs() < 1e-9);
        let note = h.note().expect("1 % stalled gets a note");
        assert!(note.contains("from p99 up"), "{note}");
        assert_eq!(cpu.longest_burst, Duration::from_millis(10));
        let quiet = hiccups(&[0; 1000], Duration::from_secs(1));
        assert_eq!(quiet.cpus[0].stalled, Duration::ZERO);
        assert!(quiet.note().is_none());
    }

    /// Stalls the probe woke between, each late, are one burst as long as all of them with
    /// the sleeps between; an on-time wake-up ends it.
    #[test]
    fn back_to_back_stalls_are_one_burst() {
        let mut lates = vec![0, 2, 2, 1, 0, 3, 0];
        lates.extend([0; 100]);
        let h = hiccups(&lates, Duration::from_secs(1));
        let cpu = &h.cpus[0];
        // 2 + (1 + 2) + (1 + 1) ms: the first burst; the 3 ms stall alone is shorter.
        assert_eq!(cpu.longest_burst, Duration::from_millis(7));
        assert_eq!(cpu.stalled, Duration::from_millis(8));
        assert!(h.note().expect("note").contains("bursts up to 7.00 ms"));
    }

    /// The probes run, wake about once per period, and a snapshot difference covers the
    /// time between the snapshots only.
    #[test]
    fn probes_wake_once_per_period_and_snapshots_subtract() {
        let meter = HiccupMeter::start(&[0], Duration::from_millis(2)).expect("meter");
        let first = meter.snapshot().expect("snapshot");
        std::thread::sleep(Duration::from_millis(200));
        let second = meter.snapshot().expect("snapshot");
        let h = second.since(&first).expect("since");
        assert_eq!(h.cpus.len(), 1);
        let wakeups = h.cpus[0].wakeups;
        // 200 ms of 2 ms sleeps: at most 100 wake-ups, and some even on a loaded host.
        assert!((1..=101).contains(&wakeups), "{wakeups} wake-ups");
        assert!(h.wall >= Duration::from_millis(200));
        assert!(h.cpus[0].histogram.len() >= wakeups);
        let json = h.json();
        assert_eq!(json["cpus"][0]["wakeups"], wakeups);
        assert!(h.line().starts_with("cpu0 p99 "), "{}", h.line());
    }
}
