//! What the daemon tells its service manager, and the drain window at shutdown.
//!
//! [`ServiceManager`] speaks systemd's notify protocol (sd_notify(3), through the
//! `sd-notify` crate) when `NOTIFY_SOCKET` is set, and is silent otherwise: `READY=1` once
//! every shard is bound and the control thread runs (so a `Type=notify` unit's dependants
//! start only then), `RELOADING=1` with `MONOTONIC_USEC` while a SIGHUP reload runs (systemd
//! 253 and later require both), `READY=1` again after it, `STOPPING=1` at SIGTERM/SIGINT, and
//! `WATCHDOG=1` at half the unit's `WatchdogSec` while the worker threads are healthy, so a
//! wedged daemon is restarted by systemd rather than left holding its port.
//!
//! [`drain`]: on SIGTERM with a `drain_timeout`, new handshakes are refused and counted
//! (`dtlsd_handshakes_refused_total{reason="draining"}`) while live sessions run on until they
//! have all ended, the window has passed, or a second signal arrives; then the usual shutdown
//! sends close_notify to whatever is left.

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::{Duration, Instant};

use sd_notify::NotifyState;

use crate::daemon::Daemon;

/// The service manager's side of the daemon's life (a no-op without `NOTIFY_SOCKET`).
#[derive(Debug)]
pub struct ServiceManager {
    /// How often to send `WATCHDOG=1`: half the manager's `WATCHDOG_USEC`, `None` when the
    /// unit has no watchdog (or it is meant for another process, `WATCHDOG_PID`).
    watchdog_every: Option<Duration>,
    next_watchdog: Instant,
}

impl ServiceManager {
    /// Reads `WATCHDOG_USEC` / `WATCHDOG_PID` from the environment.
    pub fn from_env() -> Self {
        let watchdog_every = sd_notify::watchdog_enabled()
            .filter(|d| !d.is_zero())
            .map(|d| d / 2);
        if let Some(every) = watchdog_every {
            tracing::info!(
                every_ms = u64::try_from(every.as_millis()).unwrap_or(u64::MAX),
                "systemd watchdog enabled"
            );
        }
        Self {
            watchdog_every,
            next_watchdog: Instant::now(),
        }
    }

    /// Start-up is done: every shard is bound and the control thread runs.
    pub fn ready(&self, status: &str) {
        send(&[NotifyState::Ready, NotifyState::Status(status)]);
    }

    /// A reload starts (`RELOADING=1` and the monotonic clock, which systemd 253 and later
    /// require with it); call [`Self::ready`] when it is over, whatever its outcome.
    pub fn reloading(&self) {
        match NotifyState::monotonic_usec_now() {
            Ok(now) => send(&[NotifyState::Reloading, now]),
            Err(e) => tracing::warn!(error = %e, "sd_notify: no monotonic clock for RELOADING"),
        }
    }

    /// Shutdown starts.
    pub fn stopping(&self, status: &str) {
        send(&[NotifyState::Stopping, NotifyState::Status(status)]);
    }

    /// Called from the main loop: sends `WATCHDOG=1` when one is due and the daemon is
    /// `healthy` (a daemon whose workers failed stops pinging, so systemd acts on it).
    pub fn tick(&mut self, now: Instant, healthy: bool) {
        let Some(every) = self.watchdog_every else {
            return;
        };
        if healthy && now >= self.next_watchdog {
            send(&[NotifyState::Watchdog]);
            self.next_watchdog = now + every;
        }
    }
}

/// One notification; a manager that cannot be reached is logged, never fatal.
fn send(states: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!(error = %e, "sd_notify: could not reach the service manager");
    }
}

/// How a drain ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DrainEnd {
    /// No drain window was configured.
    Skipped,
    /// Every session ended on its own.
    Empty,
    /// The window passed with sessions still live.
    TimedOut,
    /// A second SIGTERM/SIGINT cut the window short.
    Interrupted,
}

/// Refuses new handshakes and waits up to `window` for `daemon`'s live sessions to end, or
/// until `interrupt` is set (the caller clears it first so that only a new signal counts);
/// `tick` runs on every poll (the watchdog).
pub fn drain(
    daemon: &Daemon,
    window: Duration,
    interrupt: &AtomicBool,
    poll: Duration,
    mut tick: impl FnMut(Instant),
) -> DrainEnd {
    if window.is_zero() {
        return DrainEnd::Skipped;
    }
    daemon.begin_drain();
    let started = Instant::now();
    let deadline = started + window;
    tracing::info!(
        sessions = daemon.live_sessions(),
        window_s = window.as_secs(),
        "draining: new handshakes refused; live sessions run on until they end or the window passes"
    );
    loop {
        let now = Instant::now();
        tick(now);
        if daemon.live_sessions() == 0 {
            tracing::info!(
                after_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
                "drained: no live session left"
            );
            return DrainEnd::Empty;
        }
        if interrupt.load(Relaxed) {
            tracing::info!(
                sessions = daemon.live_sessions(),
                "drain cut short by a second signal"
            );
            return DrainEnd::Interrupted;
        }
        if now >= deadline {
            tracing::info!(
                sessions = daemon.live_sessions(),
                "drain window over; closing the sessions left"
            );
            return DrainEnd::TimedOut;
        }
        std::thread::sleep(poll);
    }
}
