//! Several generator threads (`--threads N`): the sessions of every group are split over
//! `loadgen-0` … `loadgen-{N-1}`, each thread handshakes its own share on its own sockets
//! (each pinned, [`super::run::pin_generator_at`]), and all start their data phase together.
//!
//! The threads keep in step through a [`Lockstep`]: every thread calls [`Lockstep::mark`]
//! at the same points (before each measured slice and after the last), the last one to
//! arrive takes a CPU snapshot of the process, and all go on together; so slice `k` of one
//! thread runs at the same time as slice `k` of the others, and the CPU between two marks
//! is every thread's for that slice. Each thread keeps its own counters and histograms;
//! the caller merges them ([`super::flow::Counts::add_concurrent`], `Histogram::add`).
//!
//! A thread that fails breaks the lockstep, so the others stop at their next mark instead
//! of waiting for it forever.

use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::Duration;

use anyhow::{Context as _, Result, anyhow, bail};

use super::client::{
    HANDSHAKE_TIMEOUT, HandshakePlan, HandshakeStats, TICKET_WAIT, run_handshakes,
};
use super::cpu::CpuSnapshot;
use super::flow::{FlowConfig, Flows};
use super::run::{Group, group_config, pin_generator_at};
use super::server::bind_ip_for;

/// Why a thread stopped when another one failed.
const BROKEN: &str = "another generator thread failed";

#[derive(Debug, Default)]
struct State {
    arrived: usize,
    generation: u64,
    broken: bool,
    sum: f64,
    last_sum: f64,
    marks: Vec<CpuSnapshot>,
}

/// The generator threads' meeting point: a barrier that snapshots the CPU at each mark and
/// can be broken by a thread that failed.
#[derive(Debug)]
pub struct Lockstep {
    threads: usize,
    state: Mutex<State>,
    wake: Condvar,
}

impl Lockstep {
    /// A lockstep of `threads` threads.
    pub fn new(threads: usize) -> Self {
        Self {
            threads: threads.max(1),
            state: Mutex::new(State::default()),
            wake: Condvar::new(),
        }
    }

    /// Waits until every thread has marked, with a CPU snapshot taken in between (by the
    /// last to arrive, while the others wait). Returns the snapshot's index.
    ///
    /// # Errors
    /// Another thread failed (the lockstep is broken).
    pub fn mark(&self) -> Result<usize> {
        self.meet(0.0, true).map(|(_, index)| index)
    }

    /// Waits until every thread has added its `value`; returns the sum (e.g. the threads'
    /// shares of a probed rate).
    ///
    /// # Errors
    /// Another thread failed (the lockstep is broken).
    pub fn sum(&self, value: f64) -> Result<f64> {
        self.meet(value, false).map(|(sum, _)| sum)
    }

    fn meet(&self, value: f64, snapshot: bool) -> Result<(f64, usize)> {
        let mut st = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if st.broken {
            bail!(BROKEN);
        }
        st.arrived += 1;
        st.sum += value;
        if st.arrived == self.threads {
            if snapshot {
                st.marks.push(CpuSnapshot::take());
            }
            st.arrived = 0;
            st.last_sum = std::mem::take(&mut st.sum);
            st.generation += 1;
            self.wake.notify_all();
        } else {
            let generation = st.generation;
            while st.generation == generation && !st.broken {
                st = self.wake.wait(st).unwrap_or_else(PoisonError::into_inner);
            }
            if st.broken {
                bail!(BROKEN);
            }
        }
        // Every thread reads the sum before any can complete the next meeting.
        Ok((st.last_sum, st.marks.len().saturating_sub(1)))
    }

    /// Breaks the lockstep: every waiting and later `mark` fails.
    pub fn abandon(&self) {
        let mut st = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        st.broken = true;
        self.wake.notify_all();
    }

    /// The CPU snapshot of mark `index`.
    pub fn snapshot(&self, index: usize) -> Option<CpuSnapshot> {
        let st = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        st.marks.get(index).cloned()
    }
}

/// Breaks the lockstep when a generator thread leaves early (an error or a panic).
struct BreakOnDrop<'a> {
    lockstep: &'a Lockstep,
    armed: bool,
}

impl Drop for BreakOnDrop<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.lockstep.abandon();
        }
    }
}

/// What one generator thread works with.
#[derive(Debug)]
pub struct Share<'a> {
    /// The thread's index (`loadgen-{index}`).
    pub index: usize,
    /// Its sessions, one [`Flows`] per group, in the groups' order.
    pub flows: Vec<Flows>,
    /// Its handshakes, one per group.
    pub handshakes: Vec<HandshakeStats>,
    /// The meeting point of all generator threads.
    pub lockstep: &'a Lockstep,
}

/// The sessions thread `index` of `threads` takes of `sessions`: an even split, the first
/// threads one more.
pub fn share_of(sessions: usize, threads: usize, index: usize) -> usize {
    let threads = threads.max(1);
    sessions / threads + usize::from(index < sessions % threads)
}

/// Runs `body` on `threads` generator threads (`loadgen-0` …), each after handshaking its
/// share of `sessions` sessions with every group and a first [`Lockstep::mark`] that starts
/// them together. Returns the bodies' results in thread order and the lockstep (its
/// snapshots give the CPU between marks).
///
/// # Errors
/// Fewer sessions than threads, a failed handshake, a failed body.
pub fn on_generators<T: Send>(
    groups: &[Group],
    sessions: usize,
    threads: usize,
    flow: FlowConfig,
    mtu: usize,
    body: impl Fn(Share<'_>) -> Result<T> + Sync,
) -> Result<(Vec<T>, Lockstep)> {
    let threads = threads.max(1);
    if sessions < threads {
        bail!("{sessions} sessions cannot be spread over {threads} generator threads");
    }
    let configs = groups
        .iter()
        .map(|g| group_config(g, mtu).map(Arc::new))
        .collect::<Result<Vec<_>>>()?;
    let lockstep = Lockstep::new(threads);
    let results = std::thread::scope(|scope| {
        let mut handles = Vec::with_capacity(threads);
        for index in 0..threads {
            let (lockstep, configs, body) = (&lockstep, &configs, &body);
            let handle = std::thread::Builder::new()
                .name(format!("loadgen-{index}"))
                .spawn_scoped(scope, move || {
                    let mut guard = BreakOnDrop {
                        lockstep,
                        armed: true,
                    };
                    pin_generator_at(index);
                    let n = share_of(sessions, threads, index);
                    let mut flows = Vec::with_capacity(groups.len());
                    let mut handshakes = Vec::with_capacity(groups.len());
                    for (g, config) in groups.iter().zip(configs) {
                        let plan = HandshakePlan {
                            server: g.server,
                            bind_ip: bind_ip_for(g.server),
                            sources: 1,
                            parallel: n,
                            total: Some(n as u64),
                            duration: Duration::from_secs(60),
                            keep: true,
                            collect_tickets: false,
                            offer_tickets: false,
                            timeout: HANDSHAKE_TIMEOUT,
                            ticket_wait: TICKET_WAIT,
                        };
                        let mut stats = run_handshakes(config, &plan, &mut Vec::new())?;
                        if stats.completed < n as u64 {
                            return Err(anyhow!(
                                "generator thread {index}: {} of {n} handshakes completed with {}: {}",
                                stats.completed,
                                g.server,
                                stats.first_error.as_deref().unwrap_or("no error reported")
                            ));
                        }
                        let established = std::mem::take(&mut stats.established);
                        flows.push(Flows::new(established, g.cipher, flow)?);
                        handshakes.push(stats);
                    }
                    lockstep.mark()?;
                    let out = body(Share {
                        index,
                        flows,
                        handshakes,
                        lockstep,
                    })?;
                    guard.armed = false;
                    Ok(out)
                })
                .context("spawn a generator thread")?;
            handles.push(handle);
        }
        // Join all, then report the first real failure (not a thread that stopped because
        // another one broke the lockstep).
        let joined: Vec<Result<T>> = handles
            .into_iter()
            .map(|h| {
                h.join()
                    .map_err(|_| anyhow!("a generator thread panicked"))
                    .and_then(|r| r)
            })
            .collect();
        let mut out = Vec::with_capacity(threads);
        let mut errors = Vec::new();
        for r in joined {
            match r {
                Ok(v) => out.push(v),
                Err(e) => errors.push(e),
            }
        }
        let secondary = |e: &anyhow::Error| e.to_string() == BROKEN;
        match errors
            .iter()
            .position(|e| !secondary(e))
            .or((!errors.is_empty()).then_some(0))
        {
            Some(i) => Err(errors.swap_remove(i)),
            None => Ok(out),
        }
    })?;
    Ok((results, lockstep))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_split_evenly_first_threads_one_more() {
        assert_eq!(
            (0..3).map(|i| share_of(8, 3, i)).collect::<Vec<_>>(),
            [3, 3, 2]
        );
        assert_eq!((0..3).map(|i| share_of(8, 3, i)).sum::<usize>(), 8);
        assert_eq!(share_of(5, 1, 0), 5);
    }

    #[test]
    fn lockstep_sums_and_marks_and_breaks() {
        let lockstep = Lockstep::new(2);
        let (a, b) = std::thread::scope(|s| {
            let h = s.spawn(|| (lockstep.sum(1.5), lockstep.mark()));
            let mine = (lockstep.sum(2.0), lockstep.mark());
            (mine, h.join().expect("joins"))
        });
        assert_eq!(a.0.expect("sum"), 3.5);
        assert_eq!(b.0.expect("sum"), 3.5);
        assert_eq!(a.1.expect("mark"), 0);
        assert_eq!(b.1.expect("mark"), 0);
        assert!(lockstep.snapshot(0).is_some());
        lockstep.abandon();
        assert!(lockstep.mark().is_err());
    }
}
