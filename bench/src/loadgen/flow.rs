//! The data phase: established sessions exchange application-data records with the server,
//! which relays them to the echo backend and back.
//!
//! Each session owns a `dtls-io` `UdpIo` (mmsg backend: the generator waits on all session
//! sockets through one epoll set, which io_uring's completion ring would bypass) and a
//! `TxBatch` records are sealed into in place. Received datagrams are split into records
//! and opened in place in the `RecvBatch`; application data is checked byte for byte, other
//! records (a retransmitted flight, an alert) go to the session's engine. A DTLS 1.3
//! session's records carry the unified header (`Sealer13`/`Opener13`, 16-bit sequence
//! numbers, length present, no CID); its post-handshake records (the server's
//! NewSessionTicket, ACKs), opened with the data keys, go to the engine as the daemon's
//! shard hands them to its control thread, and the engine's answers (ACKs) are sent.
//!
//! Two drivers: [`Flows::closed_loop`] (a window of outstanding datagrams per session, the
//! throughput figure) and [`Flows::open_loop`] (a fixed aggregate rate, latency recorded
//! from the intended send time so that a stalled generator or server cannot hide delays:
//! coordinated omission corrected).

use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use control::Connection;
use control::crypto::pki_types::UnixTime;
use dataplane::record::ContentType;
use dtls_io::{IoConfig, IoMode, TxBatch, UdpIo};
use hdrhistogram::Histogram;
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use rustix::time::{
    Itimerspec, TimerfdClockId, TimerfdFlags, TimerfdTimerFlags, Timespec, timerfd_create,
    timerfd_settime,
};

use super::client::Established;
use super::protection::{Protection, Received};
use super::{CipherChoice, IP_UDP_HEADER, MIN_PAYLOAD, Pattern};

/// A session with outstanding datagrams and no echo for this long reopens its window (the
/// outstanding ones count as lost).
const STALL: Duration = Duration::from_millis(200);
/// Open loop: consecutive datagrams given to one session before the next one's turn.
const OPEN_LOOP_RUN: u64 = 8;
/// The epoll token of the open loop's send timer (no flow has this index).
const SEND_TIMER: Token = Token(usize::MAX);
/// Receive-side GRO only up to this many sessions (memory: 512 KiB of buffers each).
const GRO_MAX_SESSIONS: usize = 128;
/// Longest single wait.
const MAX_WAIT: Duration = Duration::from_millis(5);

/// Data phase settings.
#[derive(Debug, Clone, Copy)]
pub struct FlowConfig {
    /// Plaintext bytes per record.
    pub size: usize,
    /// Closed loop: outstanding datagrams per session.
    pub window: usize,
    /// UDP GSO on sends and (up to 128 sessions) GRO on receives, generator side.
    pub gso: bool,
}

/// Counters of one driver run.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Counts {
    /// Records sent.
    pub sent: u64,
    /// Echoed records received, opened and verified.
    pub received: u64,
    /// Echoes that opened but whose payload did not match.
    pub corrupt: u64,
    /// Records that failed to open (authentication, replay, format).
    pub open_errors: u64,
    /// Echoes that came back after a later one (counted lost first, then taken back).
    pub late: u64,
    /// Datagrams lost: gaps in a session's echoed sequence numbers, plus the window of a
    /// session that stalled.
    pub lost: u64,
    /// Echoes of datagrams sent before this run started (a previous phase), ignored.
    pub stale: u64,
    /// Records that were late beyond the end of the run (still outstanding at the end).
    pub outstanding_at_end: u64,
    /// Datagrams the kernel refused (send errors).
    pub send_errors: u64,
    /// Wall time of the run.
    pub elapsed: Duration,
    /// Open loop: largest lag of an actual send behind its intended time.
    pub max_send_lag: Duration,
    /// Open loop: sends more than 1 ms behind their intended time.
    pub late_sends: u64,
    /// Verified echoes that came in records carrying a connection ID (RFC 9146
    /// `tls12_cid`, or DTLS 1.3 with the C bit).
    pub cid_records: u64,
    /// Open loop: waits on the send timer armed (a sleeping generator arms it once per
    /// send time; a spinning one never).
    pub timer_arms: u64,
    /// Open loop: polls that did not wait, made while spinning.
    pub spin_polls: u64,
}

impl Counts {
    /// Verified echoes per second.
    pub fn pps(&self) -> f64 {
        self.received as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Adds another run's counters (elapsed adds up).
    pub fn add(&mut self, o: &Counts) {
        self.sent += o.sent;
        self.received += o.received;
        self.corrupt += o.corrupt;
        self.open_errors += o.open_errors;
        self.lost += o.lost;
        self.late += o.late;
        self.stale += o.stale;
        self.outstanding_at_end += o.outstanding_at_end;
        self.send_errors += o.send_errors;
        self.elapsed += o.elapsed;
        self.max_send_lag = self.max_send_lag.max(o.max_send_lag);
        self.late_sends += o.late_sends;
        self.cid_records += o.cid_records;
        self.timer_arms += o.timer_arms;
        self.spin_polls += o.spin_polls;
    }

    /// Adds the counters of a run that went on at the same time (another generator
    /// thread's share of the same slice): counts add up, the elapsed time is the longer.
    pub fn add_concurrent(&mut self, o: &Counts) {
        let elapsed = self.elapsed.max(o.elapsed);
        self.add(o);
        self.elapsed = elapsed;
    }
}

/// What the echo of one record did to its session: the flow's sequence bookkeeping.
struct Echoes<'a> {
    run_first_seq: u64,
    next_expected: &'a mut u64,
    outstanding: &'a mut usize,
}

impl Echoes<'_> {
    /// Checks one opened application-data record; true when it was a verified echo.
    fn check(
        &mut self,
        pattern: &Pattern,
        size: usize,
        plaintext: &[u8],
        counts: &mut Counts,
        hist: Option<&mut Histogram<u64>>,
        now_ns: u64,
    ) -> bool {
        match pattern.check(plaintext, size) {
            Some((seq, _)) if seq < self.run_first_seq => {
                counts.stale += 1;
                false
            }
            Some((seq, sent_ns)) => {
                // One session's path is FIFO end to end: a gap in the echoed sequence
                // numbers is loss (released from the window now); an echo below the
                // expected one was late, not lost.
                if seq >= *self.next_expected {
                    let gap = seq - *self.next_expected;
                    counts.lost += gap;
                    *self.outstanding = self.outstanding.saturating_sub(gap as usize);
                    *self.next_expected = seq + 1;
                    *self.outstanding = self.outstanding.saturating_sub(1);
                } else {
                    counts.lost = counts.lost.saturating_sub(1);
                    counts.late += 1;
                }
                if let Some(h) = hist {
                    h.saturating_record(now_ns.saturating_sub(sent_ns).max(1));
                }
                true
            }
            None => {
                counts.corrupt += 1;
                false
            }
        }
    }
}

struct Flow {
    io: UdpIo,
    tx: TxBatch,
    protection: Protection,
    conn: Connection,
    server: SocketAddr,
    next_seq: u64,
    run_first_seq: u64,
    next_expected: u64,
    outstanding: usize,
    last_progress: Instant,
    dirty: bool,
}

/// An open loop's send times: datagram `k` is due at `start_ns + k × gap_ns`.
struct Schedule {
    start_ns: u64,
    gap_ns: f64,
    /// The next datagram's number.
    next: u64,
    sessions: u64,
}

impl Schedule {
    /// When the next datagram is due (ns since the flows' epoch).
    fn next_due(&self) -> u64 {
        self.start_ns + (self.next as f64 * self.gap_ns) as u64
    }

    /// The session of the next datagram: runs of [`OPEN_LOOP_RUN`] datagrams per session,
    /// sessions in turn, so a turn's due datagrams mostly share a session and leave in one
    /// GSO send.
    fn session(&self) -> usize {
        ((self.next / OPEN_LOOP_RUN) % self.sessions.max(1)) as usize
    }
}

/// The sessions of one generator thread in their data phase.
pub struct Flows {
    flows: Vec<Flow>,
    poll: Poll,
    /// Open loop: a timerfd in the epoll set, armed for the next send, so one wait ends at
    /// the first reply or at the send time, whichever comes first, to the nanosecond (a
    /// timerfd has no timer slack; `sleep` has 50 µs of it, and a reply arriving during a
    /// sleep used to wait it out).
    send_timer: std::os::fd::OwnedFd,
    /// The send time (ns since `epoch`) the timer is armed for and has not yet been seen to
    /// fire: a wait that a reply ended leaves the timer armed for the same send, and the
    /// next wait does not arm it again (one `timerfd_settime` per send time, not per wait).
    timer_armed_for: Option<u64>,
    /// `timerfd_settime` calls made (the mechanism test reads it).
    timer_arms: u64,
    /// Open loop: poll without sleeping between sends (see [`Flows::set_spin`]).
    spin: bool,
    events: Events,
    pattern: Pattern,
    cfg: FlowConfig,
    epoch: Instant,
    record_len: usize,
    batch: usize,
    send_errors_base: u64,
    cid_sessions: usize,
}

impl std::fmt::Debug for Flows {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Flows")
            .field("sessions", &self.flows.len())
            .field("cfg", &self.cfg)
            .finish_non_exhaustive()
    }
}

impl Flows {
    /// Takes over established sessions. With `cipher` `none` both directions switch to
    /// `RecordKey::null_baseline()` (the server must run with null record protection).
    pub fn new(sessions: Vec<Established>, cipher: CipherChoice, cfg: FlowConfig) -> Result<Self> {
        if cfg.size < MIN_PAYLOAD || cfg.size > dataplane::record::MAX_PLAINTEXT_LEN {
            bail!("payload size {} outside {MIN_PAYLOAD}..=16384", cfg.size);
        }
        let poll = Poll::new().context("epoll")?;
        let mut flows = Vec::with_capacity(sessions.len());
        let mut record_len = 0;
        let mut cid_sessions = 0;
        // GRO needs 64 KiB receive buffers: 512 KiB per session, so only for few sessions.
        let gro = cfg.gso && sessions.len() <= GRO_MAX_SESSIONS;
        let io_cfg = IoConfig {
            mode: IoMode::Mmsg,
            batch: if gro { 8 } else { 32 },
            recv_buffer_size: if gro {
                65_535
            } else {
                2048.max(cfg.size + 128)
            },
            gso: cfg.gso,
            ..IoConfig::default()
        };
        for (i, s) in sessions.into_iter().enumerate() {
            let Established {
                socket,
                server,
                conn,
                keys,
                ..
            } = s;
            let protection = Protection::new(*keys, cipher)?;
            cid_sessions += usize::from(protection.uses_cid());
            if gro {
                let _ = dtls_io::enable_gro(&socket);
            }
            record_len = protection.record_len(cfg.size);
            let io = UdpIo::new(socket, &io_cfg).context("session socket I/O")?;
            poll.registry()
                .register(
                    &mut SourceFd(&io.socket().as_raw_fd()),
                    Token(i),
                    Interest::READABLE,
                )
                .context("epoll register")?;
            let tx = TxBatch::new(cfg.window.max(64), record_len, cfg.gso);
            flows.push(Flow {
                io,
                tx,
                protection,
                conn,
                server,
                next_seq: 0,
                run_first_seq: 0,
                next_expected: 0,
                outstanding: 0,
                last_progress: Instant::now(),
                dirty: false,
            });
        }
        let send_timer = timerfd_create(
            TimerfdClockId::Monotonic,
            TimerfdFlags::NONBLOCK | TimerfdFlags::CLOEXEC,
        )
        .context("timerfd")?;
        poll.registry()
            .register(
                &mut SourceFd(&send_timer.as_raw_fd()),
                SEND_TIMER,
                Interest::READABLE,
            )
            .context("epoll register timerfd")?;
        Ok(Self {
            flows,
            poll,
            send_timer,
            timer_armed_for: None,
            timer_arms: 0,
            spin: false,
            events: Events::with_capacity(1024),
            pattern: Pattern::new(cfg.size),
            cfg,
            epoch: Instant::now(),
            record_len,
            batch: io_cfg.batch,
            send_errors_base: 0,
            cid_sessions,
        })
    }

    /// Open loop: spin instead of sleeping between sends. The thread polls its sockets
    /// without waiting until the next send time, so a datagram leaves at its time to within
    /// a poll and a reply is read without a wake-up; the thread takes its whole core (give
    /// each generator thread a core no server thread uses). Sleeping, each send waits for a
    /// timer and each reply for a wake-up: on the 2-core VM that added about 45 µs to every
    /// round trip at 70k pps (p50 79 µs sleeping, 32 µs spinning, same binaries).
    pub fn set_spin(&mut self, spin: bool) {
        self.spin = spin;
    }

    /// Number of sessions.
    pub fn len(&self) -> usize {
        self.flows.len()
    }

    /// True without sessions.
    pub fn is_empty(&self) -> bool {
        self.flows.is_empty()
    }

    /// Bytes of one datagram on the wire (record + IPv4/UDP headers).
    pub fn wire_bytes(&self) -> usize {
        self.record_len + IP_UDP_HEADER
    }

    /// Sessions whose records carry a connection ID (either way).
    pub fn cid_sessions(&self) -> usize {
        self.cid_sessions
    }

    /// Record bytes of one datagram (UDP payload).
    pub fn record_len(&self) -> usize {
        self.record_len
    }

    fn now_ns(&self, t: Instant) -> u64 {
        t.saturating_duration_since(self.epoch).as_nanos() as u64
    }

    fn send_errors(&self) -> u64 {
        self.flows.iter().map(|f| f.io.stats().send_errors).sum()
    }

    /// Queues one record on flow `i` stamped `time_ns`; false when its batch is full.
    fn push(&mut self, i: usize, time_ns: u64) -> bool {
        let size = self.cfg.size;
        let pattern = &self.pattern;
        let Some(f) = self.flows.get_mut(i) else {
            return false;
        };
        let seq = f.next_seq;
        let off = f.protection.plaintext_offset();
        let record_len = f.protection.record_len(size);
        let protection = &mut f.protection;
        let pushed = f.tx.push_with(f.server, record_len, |buf| {
            pattern.write(&mut buf[off..off + size], seq, time_ns);
            // The buffer is record_len long and the sequence space is 2^48 (1.3: 2^64):
            // sealing fails only when exhausted, and then nothing is queued (length 0).
            protection.seal(ContentType::ApplicationData, buf, size)
        });
        match pushed {
            Ok(n) if n > 0 => {
                f.next_seq += 1;
                f.outstanding += 1;
                f.dirty = true;
                true
            }
            _ => false,
        }
    }

    fn flush_dirty(&mut self) -> Result<()> {
        for f in &mut self.flows {
            if f.dirty {
                f.io.flush(&mut f.tx).context("send")?;
                f.dirty = false;
            }
        }
        Ok(())
    }

    /// Receives everything ready on flow `i`; records latencies (now - stamped time) into
    /// `hist` when given.
    fn drain(
        &mut self,
        i: usize,
        counts: &mut Counts,
        mut hist: Option<&mut Histogram<u64>>,
    ) -> Result<()> {
        let size = self.cfg.size;
        let batch = self.batch;
        let epoch = self.epoch;
        let pattern = &self.pattern;
        let Some(f) = self.flows.get_mut(i) else {
            return Ok(());
        };
        loop {
            let rx = f.io.poll_recv(Duration::ZERO).context("receive")?;
            let messages = rx.message_count();
            if messages == 0 {
                break;
            }
            let now = Instant::now();
            let now_ns = now.saturating_duration_since(epoch).as_nanos() as u64;
            let mut got = 0usize;
            let mut echoes = Echoes {
                run_first_seq: f.run_first_seq,
                next_expected: &mut f.next_expected,
                outstanding: &mut f.outstanding,
            };
            // An application record's plaintext: checked against the echo it should be.
            let mut echoed = |plaintext: &[u8], counts: &mut Counts| {
                if echoes.check(
                    pattern,
                    size,
                    plaintext,
                    counts,
                    hist.as_deref_mut(),
                    now_ns,
                ) {
                    got += 1;
                    true
                } else {
                    false
                }
            };
            let mut answered = false;
            for dg in rx.iter_mut() {
                if dg.source != f.server {
                    continue;
                }
                let (conn, server) = (&mut f.conn, f.server);
                f.protection.open_datagram(dg.payload, |rec| match rec {
                    Received::Data { plaintext, cid } => {
                        if echoed(plaintext, counts) && cid {
                            counts.cid_records += 1;
                        }
                    }
                    Received::Engine(bytes) => {
                        conn.handle_datagram(now, UnixTime::now(), server, bytes);
                        answered = true;
                    }
                    Received::PostHandshake {
                        record,
                        ack,
                        plaintext,
                    } => {
                        conn.handle_post_handshake(now, UnixTime::now(), record, ack, plaintext);
                        answered = true;
                    }
                    Received::OpenError => counts.open_errors += 1,
                    Received::Ignored => {}
                });
            }
            if answered {
                // The engine's ACKs, sealed with its own reserved sequence numbers.
                let mut buf = [0u8; 1500];
                while let Some(t) = f.conn.poll_transmit(now, &mut buf) {
                    let _ = f.io.socket().send_to(&buf[..t.len], t.destination);
                }
            }
            counts.received += got as u64;
            if got > 0 {
                f.last_progress = now;
            }
            if messages < batch {
                break;
            }
        }
        Ok(())
    }

    fn wait(&mut self, timeout: Duration) -> Result<()> {
        match self.poll.poll(&mut self.events, Some(timeout)) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => Ok(()),
            Err(e) => Err(e).context("epoll wait"),
        }
    }

    fn ready(&self) -> Vec<usize> {
        self.events
            .iter()
            .map(|e| e.token())
            .filter(|t| *t != SEND_TIMER)
            .map(|t| t.0)
            .collect()
    }

    /// Notes a fired send timer among the last wait's events (it must be armed again).
    fn note_timer_fired(&mut self) {
        if self.events.iter().any(|e| e.token() == SEND_TIMER) {
            self.timer_armed_for = None;
        }
    }

    /// Makes the send timer fire at `due` (ns since `epoch`), `ns` (> 0) from now, unless it
    /// is armed for that very send time already (a reply ended the last wait before it).
    fn arm_send_timer_for(&mut self, due: u64, ns: u64) -> Result<()> {
        if self.timer_armed_for == Some(due) {
            return Ok(());
        }
        self.arm_send_timer(ns)?;
        self.timer_armed_for = Some(due);
        Ok(())
    }

    /// Arms the send timer to fire once, `ns` (> 0) from now.
    fn arm_send_timer(&mut self, ns: u64) -> Result<()> {
        let zero = Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        let value = Timespec {
            tv_sec: (ns / 1_000_000_000) as _,
            tv_nsec: (ns % 1_000_000_000) as _,
        };
        timerfd_settime(
            &self.send_timer,
            TimerfdTimerFlags::empty(),
            &Itimerspec {
                it_interval: zero,
                it_value: value,
            },
        )
        .context("arm the send timer")?;
        self.timer_arms += 1;
        Ok(())
    }

    /// Closed loop for `duration`: every session keeps `window` datagrams outstanding.
    /// `hist` (optional) gets every round-trip time, ns.
    pub fn closed_loop(
        &mut self,
        duration: Duration,
        mut hist: Option<&mut Histogram<u64>>,
    ) -> Result<Counts> {
        let mut counts = Counts::default();
        self.send_errors_base = self.send_errors();
        let start = Instant::now();
        let end = start + duration;
        let window = self.cfg.window.max(1);
        let mut ready = Vec::with_capacity(self.flows.len());
        let mut last_stall_check = start;
        for f in &mut self.flows {
            f.last_progress = start;
            f.run_first_seq = f.next_seq;
            f.next_expected = f.next_seq;
        }
        loop {
            let now = Instant::now();
            if now >= end {
                break;
            }
            let t = self.now_ns(now);
            for i in 0..self.flows.len() {
                let deficit = window.saturating_sub(self.flows[i].outstanding);
                for _ in 0..deficit {
                    if !self.push(i, t) {
                        break;
                    }
                    counts.sent += 1;
                }
            }
            self.flush_dirty()?;
            self.wait(MAX_WAIT.min(end.saturating_duration_since(now)))?;
            ready.clear();
            ready.extend(self.ready());
            for &i in &ready {
                self.drain(i, &mut counts, hist.as_deref_mut())?;
            }
            if now.duration_since(last_stall_check) > STALL / 4 {
                last_stall_check = now;
                for f in &mut self.flows {
                    if f.outstanding > 0 && now.duration_since(f.last_progress) > STALL {
                        counts.lost += f.outstanding as u64;
                        f.outstanding = 0;
                        f.next_expected = f.next_seq;
                        f.last_progress = now;
                    }
                }
            }
        }
        counts.elapsed = start.elapsed();
        self.settle(&mut counts)?;
        Ok(counts)
    }

    /// Open loop at `rate` datagrams/s in total (sessions in turn, 8 consecutive datagrams
    /// each) for `duration`.
    /// Latency is recorded from each datagram's intended send time into `hist`; every
    /// `interval`, `on_interval` gets the interval's histogram (then reset).
    pub fn open_loop(
        &mut self,
        rate: f64,
        duration: Duration,
        hist: &mut Histogram<u64>,
        interval: Duration,
        mut on_interval: impl FnMut(Duration, &Histogram<u64>),
    ) -> Result<Counts> {
        if !(rate.is_finite() && rate >= f64::MIN_POSITIVE) || self.flows.is_empty() {
            bail!("open loop needs a positive rate and at least one session");
        }
        let mut counts = Counts::default();
        self.send_errors_base = self.send_errors();
        let gap_ns = 1e9 / rate;
        let start = Instant::now();
        let end = start + duration;
        let mut schedule = Schedule {
            start_ns: self.now_ns(start),
            gap_ns,
            next: 0,
            sessions: self.flows.len() as u64,
        };
        let mut interval_hist = hist.clone();
        interval_hist.reset();
        let mut interval_start = start;
        let mut ready = Vec::with_capacity(self.flows.len());
        for f in &mut self.flows {
            f.run_first_seq = f.next_seq;
            f.next_expected = f.next_seq;
            f.outstanding = 0;
        }
        // A timer left armed by an earlier run fires for nothing; this run arms its own.
        self.timer_armed_for = None;
        let arms_before = self.timer_arms;
        loop {
            let now = Instant::now();
            if now >= end {
                break;
            }
            self.send_due(&mut schedule, &mut counts)?;
            let next_due = schedule.next_due();
            let wait_ns = next_due.saturating_sub(self.now_ns(Instant::now()));
            // Spinning: a poll that does not wait, then round again. Else one wait that ends
            // at the first reply (drained at once) or at the next send time (the timerfd,
            // exact), whichever comes first; epoll's own timeout, whole milliseconds, is only
            // a bound.
            if self.spin {
                counts.spin_polls += 1;
                self.wait(Duration::ZERO)?;
            } else if wait_ns > 0 {
                self.arm_send_timer_for(next_due, wait_ns)?;
                self.wait(MAX_WAIT)?;
            } else {
                self.wait(Duration::ZERO)?;
            }
            self.note_timer_fired();
            ready.clear();
            ready.extend(self.ready());
            for &i in &ready {
                self.drain(i, &mut counts, Some(&mut interval_hist))?;
                // A burst of replies (after a stall of the server) takes a while to read:
                // what fell due meanwhile leaves now, not after the last socket.
                if schedule.next_due() <= self.now_ns(Instant::now()) {
                    self.send_due(&mut schedule, &mut counts)?;
                }
            }
            if now.duration_since(interval_start) >= interval {
                on_interval(interval_start.duration_since(start), &interval_hist);
                let _ = hist.add(&interval_hist);
                interval_hist.reset();
                interval_start = now;
            }
        }
        counts.elapsed = start.elapsed();
        counts.timer_arms = self.timer_arms - arms_before;
        let mut tail = Counts::default();
        self.settle_into(&mut tail, Some(&mut interval_hist))?;
        counts.received += tail.received;
        counts.corrupt += tail.corrupt;
        counts.open_errors += tail.open_errors;
        counts.stale += tail.stale;
        counts.outstanding_at_end = counts.sent.saturating_sub(counts.received);
        on_interval(interval_start.duration_since(start), &interval_hist);
        let _ = hist.add(&interval_hist);
        counts.send_errors = self.send_errors() - self.send_errors_base;
        Ok(counts)
    }

    /// Sends every datagram of `schedule` due by now, each stamped with its intended time,
    /// and flushes them.
    fn send_due(&mut self, schedule: &mut Schedule, counts: &mut Counts) -> Result<()> {
        let now_ns = self.now_ns(Instant::now());
        loop {
            let due = schedule.next_due();
            if due > now_ns {
                break;
            }
            let i = schedule.session();
            if !self.push(i, due) {
                // Batch full: send what is queued and continue.
                self.flush_dirty()?;
                if !self.push(i, due) {
                    break;
                }
            }
            let lag = Duration::from_nanos(now_ns - due);
            counts.max_send_lag = counts.max_send_lag.max(lag);
            if lag > Duration::from_millis(1) {
                counts.late_sends += 1;
            }
            counts.sent += 1;
            schedule.next += 1;
        }
        self.flush_dirty()
    }

    /// After a closed-loop run: waits briefly for the echoes still in flight (not counted
    /// in the rate), then resets the windows.
    fn settle(&mut self, counts: &mut Counts) -> Result<()> {
        let mut tail = Counts::default();
        self.settle_into(&mut tail, None)?;
        counts.corrupt += tail.corrupt;
        counts.open_errors += tail.open_errors;
        counts.outstanding_at_end = self.flows.iter().map(|f| f.outstanding as u64).sum();
        counts.send_errors = self.send_errors() - self.send_errors_base;
        for f in &mut self.flows {
            f.outstanding = 0;
        }
        Ok(())
    }

    fn settle_into(
        &mut self,
        tail: &mut Counts,
        mut hist: Option<&mut Histogram<u64>>,
    ) -> Result<()> {
        let deadline = Instant::now() + Duration::from_millis(100);
        let mut ready = Vec::new();
        while Instant::now() < deadline && self.flows.iter().any(|f| f.outstanding > 0) {
            self.wait(Duration::from_millis(5))?;
            ready.clear();
            ready.extend(self.ready());
            for &i in &ready {
                self.drain(i, tail, hist.as_deref_mut())?;
            }
        }
        Ok(())
    }

    /// Sends close_notify on every session (best effort), sealed with the session's data
    /// sealer: the engine's own epoch-1 sequence numbers lie far behind the data records by
    /// now, so a close_notify from the engine would be refused by the server's replay window.
    pub fn close(mut self) {
        // RFC 5246 §7.2: AlertLevel warning(1), AlertDescription close_notify(0).
        const CLOSE_NOTIFY: [u8; 2] = [1, 0];
        for f in &mut self.flows {
            let off = f.protection.plaintext_offset();
            let record_len = f.protection.record_len(CLOSE_NOTIFY.len());
            let protection = &mut f.protection;
            let _ = f.tx.push_with(f.server, record_len, |buf| {
                buf[off..off + CLOSE_NOTIFY.len()].copy_from_slice(&CLOSE_NOTIFY);
                protection.seal(ContentType::Alert, buf, CLOSE_NOTIFY.len())
            });
            let _ = f.io.flush(&mut f.tx);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Datagram k is due at start + k × gap; runs of OPEN_LOOP_RUN per session, in turn.
    #[test]
    fn the_schedule_spaces_sends_and_takes_sessions_in_runs() {
        let mut s = Schedule {
            start_ns: 1_000,
            gap_ns: 2_500.0,
            next: 0,
            sessions: 3,
        };
        let mut seen = Vec::new();
        for _ in 0..(3 * OPEN_LOOP_RUN + 2) {
            seen.push((s.next_due(), s.session()));
            s.next += 1;
        }
        assert_eq!(seen[0], (1_000, 0));
        assert_eq!(seen[1].0, 3_500);
        assert!(seen[..OPEN_LOOP_RUN as usize].iter().all(|&(_, i)| i == 0));
        assert_eq!(seen[OPEN_LOOP_RUN as usize].1, 1);
        assert_eq!(seen[2 * OPEN_LOOP_RUN as usize].1, 2);
        assert_eq!(
            seen[3 * OPEN_LOOP_RUN as usize].1,
            0,
            "back to the first session"
        );
    }

    /// The open loop's wait ends on the send timer's own event (armed for the next send),
    /// not on epoll's millisecond timeout: the bound given here is far longer than the timer.
    #[test]
    fn the_send_timer_ends_the_wait_with_its_own_event() {
        let cfg = FlowConfig {
            size: 1200,
            window: 1,
            gso: false,
        };
        let mut flows = Flows::new(Vec::new(), CipherChoice::Aes128Gcm, cfg).expect("flows");
        flows.arm_send_timer(200_000).expect("arm");
        let mut woke = false;
        // A bounded number of waits: the timer's event is the only thing that can arrive.
        for _ in 0..100 {
            flows
                .poll
                .poll(&mut flows.events, Some(Duration::from_secs(10)))
                .expect("wait");
            if flows.events.iter().any(|e| e.token() == SEND_TIMER) {
                woke = true;
                break;
            }
        }
        assert!(woke, "the send timer raised no event");
        assert!(flows.ready().is_empty(), "the timer is not a flow");
    }
    /// The send timer is armed once per send time: a wait that ended before it fired (a
    /// reply) leaves it armed, and arming it for the same send time again makes no call;
    /// once its event was seen, or for another send time, it is armed again.
    #[test]
    fn the_send_timer_is_armed_once_per_send_time() {
        let cfg = FlowConfig {
            size: 1200,
            window: 1,
            gso: false,
        };
        let mut flows = Flows::new(Vec::new(), CipherChoice::Aes128Gcm, cfg).expect("flows");
        flows.arm_send_timer_for(1_000, 200_000).expect("arm");
        flows.arm_send_timer_for(1_000, 150_000).expect("arm");
        assert_eq!(flows.timer_arms, 1, "same send time: armed once");
        let mut fired = false;
        for _ in 0..100 {
            flows.wait(Duration::from_secs(10)).expect("wait");
            flows.note_timer_fired();
            if flows.timer_armed_for.is_none() {
                fired = true;
                break;
            }
        }
        assert!(fired, "the timer's event was not seen");
        flows.arm_send_timer_for(1_000, 200_000).expect("arm");
        assert_eq!(flows.timer_arms, 2, "fired: armed again");
        flows.arm_send_timer_for(2_000, 200_000).expect("arm");
        assert_eq!(flows.timer_arms, 3, "another send time");
    }
}
