//! B8 over real UDP loopback sockets: records per second and records per **server CPU
//! second** ("per core") of OpenSSL's DTLS 1.2 echo server next to our `dtlsd` relay, with
//! the same sessions, window and record size, driven from the same generator thread.
//!
//! - OpenSSL ([`super::openssl_udp`]): one server thread (`ossl-server`), `SSL_read` →
//!   `SSL_write` of every record, one `recv`/`send` per record, ECDHE-ECDSA-AES128-GCM-SHA256.
//! - OpenSSL as a relay (unless turned off): one thread (`ossl-relay`) that sends each
//!   record's plaintext to a UDP echo backend and seals the answer: the same four datagrams
//!   per record as our relay, so the like-for-like figure.
//! - Ours: the in-process `dtlsd::serve::Server` with one shard, relaying every record to a
//!   UDP echo backend and sealing the answer (h2's load generator: `crate::loadgen`), the same
//!   suite. Its per-core figure divides by the CPU of the `dtlsd-shard-*` threads; the
//!   control thread (`dtlsd-control`) and the echo backend are reported on their own.
//!
//! Both servers live for the whole run; the sides alternate in slices (order swapped each
//! round) after one unmeasured warm-up slice each. CPU comes from /proc (schedstat) per
//! thread between snapshots taken around each slice; the server's split into user space
//! (the record layer, the event loop) and kernel (UDP stack, syscalls) from /proc's
//! tick-sampled utime/stime ([`super::thread_times`]).
//!
//! What it does not do: pin threads (the generator and the servers share this machine's
//! cores), count the generator's or the echo backend's CPU against any side, or make our
//! relay skip its backend leg: ours moves four datagrams per record (client ↔ relay ↔
//! backend), OpenSSL's echo two, so the ratio to the echo leans against us.

use std::fmt::Write as _;
use std::time::Duration;

use serde_json::{Value, json};

use super::openssl_side::OpenSsl;
use super::openssl_udp::{ECHO_THREAD, OpenSslUdp, RELAY_THREAD};
use super::thread_times::{Split, ThreadTimes};
use super::{PeersError, Pki, median};
use crate::compare::{Better, Figure};
use crate::loadgen::cpu::{CpuSnapshot, ThreadCpu};
use crate::loadgen::flow::FlowConfig;
use crate::loadgen::run::{self, Group};
use crate::loadgen::server::{Echo, ServerSetup, TestServer};
use crate::loadgen::{CipherChoice, IoChoice, MIN_PAYLOAD};

/// MTU both servers assume.
const MTU: u16 = 1500;
/// Shortest warm-up slice.
const MIN_WARMUP: Duration = Duration::from_millis(50);

/// What the UDP run measures.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct UdpConfig {
    /// Measured time per side, split over `rounds` slices.
    pub duration: Duration,
    /// Slices per side (sides alternate).
    pub rounds: usize,
    /// Client sessions per side.
    pub sessions: usize,
    /// Outstanding records per session.
    pub window: usize,
    /// Record plaintext bytes.
    pub size: usize,
    /// Our generator's UDP GSO/GRO (OpenSSL's client sends one record per `send`).
    pub gso: bool,
    /// Our server's I/O backend.
    pub io: IoChoice,
    /// Also measure OpenSSL as a relay to a UDP echo backend.
    pub openssl_relay: bool,
}

impl Default for UdpConfig {
    fn default() -> Self {
        Self {
            duration: Duration::from_secs(3),
            rounds: 3,
            sessions: 8,
            window: 16,
            size: 1200,
            gso: false,
            io: IoChoice::Auto,
            openssl_relay: true,
        }
    }
}

/// Counters of one closed-loop slice (the OpenSSL client's; ours come from `loadgen`).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct SliceCounts {
    /// Records sent.
    pub sent: u64,
    /// Echoes received and verified.
    pub received: u64,
    /// Echoes whose payload did not match.
    pub corrupt: u64,
    /// Records counted lost when a window stalled.
    pub lost: u64,
    /// Echoes of records from an earlier slice, ignored.
    pub stale: u64,
    /// Records the socket refused.
    pub send_errors: u64,
    /// Records still unanswered after the settle time.
    pub outstanding_at_end: u64,
    /// Wall time of the slice (without the settle time).
    pub elapsed: Duration,
}

/// One side's totals over its measured slices.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UdpSide {
    /// Verified echoes.
    pub records: u64,
    /// Records counted lost.
    pub lost: u64,
    /// Corrupt echoes.
    pub corrupt: u64,
    /// Wall time.
    pub elapsed: Duration,
    /// CPU of the server's data-path threads (`ossl-server`; `dtlsd-shard-*`).
    pub server_cpu: Duration,
    /// Of which in user space (tick-sampled estimate).
    pub server_user: Duration,
    /// Of which in the kernel (tick-sampled estimate).
    pub server_system: Duration,
    /// CPU of `dtlsd-control` (ours only).
    pub control_cpu: Duration,
    /// CPU of the echo backend thread (ours only).
    pub backend_cpu: Duration,
    /// CPU of the generator thread.
    pub generator_cpu: Duration,
    /// CPU of the other side's server while this side ran (it should idle).
    pub idle_peer_cpu: Duration,
    /// Records per server-CPU second of each slice.
    pub slice_per_core: Vec<f64>,
}

impl UdpSide {
    /// Verified records per second of wall time.
    pub fn records_per_s(&self) -> f64 {
        self.records as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Verified records per second of server CPU.
    pub fn records_per_core_s(&self) -> f64 {
        self.records as f64 / self.server_cpu.as_secs_f64().max(1e-9)
    }

    /// Server user-space CPU per record, ns (estimate: see the module doc).
    pub fn user_ns_per_record(&self) -> f64 {
        self.server_user.as_nanos() as f64 / (self.records.max(1)) as f64
    }

    /// Server kernel CPU per record, ns (estimate: see the module doc).
    pub fn system_ns_per_record(&self) -> f64 {
        self.server_system.as_nanos() as f64 / (self.records.max(1)) as f64
    }

    /// The server's CPU as a share of one core over the wall time, percent.
    pub fn server_percent(&self) -> f64 {
        100.0 * self.server_cpu.as_secs_f64() / self.elapsed.as_secs_f64().max(1e-9)
    }

    fn add(&mut self, records: u64, lost: u64, corrupt: u64, elapsed: Duration, cpu: &SliceCpu) {
        self.records += records;
        self.lost += lost;
        self.corrupt += corrupt;
        self.elapsed += elapsed;
        self.server_cpu += cpu.server;
        self.server_user += cpu.split.user;
        self.server_system += cpu.split.system;
        self.control_cpu += cpu.control;
        self.backend_cpu += cpu.backend;
        self.generator_cpu += cpu.generator;
        self.idle_peer_cpu += cpu.peer;
        self.slice_per_core
            .push(records as f64 / cpu.server.as_secs_f64().max(1e-9));
    }

    /// The generator thread's CPU while this side ran, percent of one core.
    pub fn generator_percent(&self) -> f64 {
        100.0 * self.generator_cpu.as_secs_f64() / self.elapsed.as_secs_f64().max(1e-9)
    }

    fn json(&self) -> Value {
        let s = |d: Duration| d.as_secs_f64();
        json!({
            "records": self.records,
            "seconds": s(self.elapsed),
            "records_per_s": self.records_per_s(),
            "records_per_core_s": self.records_per_core_s(),
            "slice_records_per_core_s": self.slice_per_core,
            "lost": self.lost,
            "corrupt": self.corrupt,
            "server_user_ns_per_record": self.user_ns_per_record(),
            "server_system_ns_per_record": self.system_ns_per_record(),
            "cpu_s": {
                "server": s(self.server_cpu),
                "server_user": s(self.server_user),
                "server_system": s(self.server_system),
                "control": s(self.control_cpu),
                "echo_backend": s(self.backend_cpu),
                "generator": s(self.generator_cpu),
                "other_server_idle": s(self.idle_peer_cpu),
            },
            "server_percent_of_core": self.server_percent(),
        })
    }
}

/// CPU of the threads that matter, over one slice.
#[derive(Debug, Default)]
struct SliceCpu {
    server: Duration,
    split: Split,
    control: Duration,
    backend: Duration,
    generator: Duration,
    peer: Duration,
}

/// The sides of the UDP run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Ours,
    OpenSslEcho,
    OpenSslRelay,
}

impl Side {
    fn is_server(self, thread: &str) -> bool {
        match self {
            Side::Ours => thread.starts_with("dtlsd-shard-"),
            Side::OpenSslEcho => thread == ECHO_THREAD,
            Side::OpenSslRelay => thread == RELAY_THREAD,
        }
    }
}

impl SliceCpu {
    fn of(threads: &[ThreadCpu], side: Side) -> Self {
        let mut c = SliceCpu::default();
        let all = [Side::Ours, Side::OpenSslEcho, Side::OpenSslRelay];
        for t in threads {
            let d = Duration::from_nanos(t.cpu_ns);
            if side.is_server(&t.name) {
                c.server += d;
            } else if all.iter().any(|s| s.is_server(&t.name)) {
                c.peer += d;
            } else if t.name == "dtlsd-control" {
                c.control += d;
            } else if t.name == "echo-backend" {
                c.backend += d;
            } else if t.name.starts_with("loadgen-") {
                c.generator += d;
            }
        }
        c
    }
}

/// The UDP run's results.
#[derive(Debug, Clone, PartialEq)]
pub struct UdpReport {
    /// What ran.
    pub config: UdpConfig,
    /// OpenSSL's echo server.
    pub openssl: UdpSide,
    /// OpenSSL as a relay to an echo backend (when measured).
    pub openssl_relay: Option<UdpSide>,
    /// Ours / OpenSSL relay, records per server-CPU second (when measured).
    pub ratio_relay_per_core: Option<f64>,
    /// OpenSSL echo / ours, server user-space CPU per record: the record path alone (none
    /// when a side's user time stayed under one clock tick).
    pub ratio_user_per_record: Option<f64>,
    /// Our relay.
    pub ours: UdpSide,
    /// Ours / OpenSSL, records per server-CPU second, over all slices.
    pub ratio_per_core: f64,
    /// Ours / OpenSSL, records per second of wall time.
    pub ratio_per_s: f64,
    /// Lowest and highest per-round ratio of records per server-CPU second.
    pub ratio_per_core_range: (f64, f64),
    /// Records OpenSSL's server thread echoed (its own count, warm-up included).
    pub openssl_server_echoed: u64,
    /// Records our shards opened (server counters, warm-up included; the shard publishes
    /// its counters once per loop turn, so up to one turn's records may be missing).
    pub ours_server_opened: u64,
}

fn udp_err(e: impl std::fmt::Display) -> PeersError {
    PeersError::Udp(format!("{e:#}"))
}

/// Runs both sides over loopback (one warm-up slice each, then `rounds` slices each).
pub fn run(cfg: &UdpConfig) -> Result<UdpReport, PeersError> {
    if !(1..=1000).contains(&cfg.rounds)
        || !(1..=4096).contains(&cfg.sessions)
        || !(1..=1024).contains(&cfg.window)
        || !(MIN_PAYLOAD..=1400).contains(&cfg.size)
    {
        return Err(PeersError::Options(format!(
            "UDP run: rounds in 1..=1000, sessions in 1..=4096, window in 1..=1024, size in {MIN_PAYLOAD}..=1400"
        )));
    }
    let slice = cfg.duration / cfg.rounds as u32;
    let warmup = (slice / 4).max(MIN_WARMUP);
    let ossl = OpenSsl::new(&Pki::generate()?, u32::from(MTU))?;
    let mut peer = OpenSslUdp::start(&ossl, cfg.sessions, cfg.window, cfg.size, None)?;
    let relay_backend = if cfg.openssl_relay {
        Some(Echo::start().map_err(udp_err)?)
    } else {
        None
    };
    let mut relay = match &relay_backend {
        Some(b) => Some(OpenSslUdp::start(
            &ossl,
            cfg.sessions,
            cfg.window,
            cfg.size,
            Some(b.addr()),
        )?),
        None => None,
    };
    let server = TestServer::start(&ServerSetup {
        shards: 1,
        control_threads: 1,
        io: cfg.io,
        null_protection: false,
        mtu: MTU,
        data_io: Default::default(),
    })
    .map_err(udp_err)?;
    let group = Group {
        server: server.addr(),
        ca: server.ca().to_path_buf(),
        cipher: CipherChoice::Aes128Gcm,
        version: crate::records::Version::V12,
        cid: false,
    };
    let flow = FlowConfig {
        size: cfg.size,
        window: cfg.window,
        gso: cfg.gso,
    };
    let peer_ref = &mut peer;
    let relay_ref = relay.as_mut();
    let (openssl, ours, openssl_relay) = run::on_loadgen(
        std::slice::from_ref(&group),
        cfg.sessions,
        flow,
        usize::from(MTU),
        move |mut flows, _| {
            let flows = flows
                .first_mut()
                .ok_or_else(|| anyhow::anyhow!("no sessions with our server"))?;
            let mut relay_ref = relay_ref;
            flows.closed_loop(warmup, None)?;
            peer_ref.closed_loop(warmup)?;
            if let Some(r) = relay_ref.as_deref_mut() {
                r.closed_loop(warmup)?;
            }
            let (mut openssl, mut ours, mut relay) =
                (UdpSide::default(), UdpSide::default(), UdpSide::default());
            let mut sides = vec![Side::Ours, Side::OpenSslEcho];
            if relay_ref.is_some() {
                sides.push(Side::OpenSslRelay);
            }
            for round in 0..cfg.rounds {
                // Reverse the order every other round so drift hits all sides alike.
                let order: Vec<Side> = if round % 2 == 0 {
                    sides.clone()
                } else {
                    sides.iter().rev().copied().collect()
                };
                for side in order {
                    let times = ThreadTimes::take();
                    let before = CpuSnapshot::take();
                    let (c, into) = match side {
                        Side::Ours => {
                            let c = flows.closed_loop(slice, None)?;
                            ((c.received, c.lost, c.corrupt, c.elapsed), &mut ours)
                        }
                        Side::OpenSslEcho => {
                            let c = peer_ref.closed_loop(slice)?;
                            ((c.received, c.lost, c.corrupt, c.elapsed), &mut openssl)
                        }
                        Side::OpenSslRelay => {
                            let Some(r) = relay_ref.as_deref_mut() else {
                                continue;
                            };
                            let c = r.closed_loop(slice)?;
                            ((c.received, c.lost, c.corrupt, c.elapsed), &mut relay)
                        }
                    };
                    let mut cpu = SliceCpu::of(&before.delta(&CpuSnapshot::take()), side);
                    cpu.split = times.split_since(&ThreadTimes::take(), |t| side.is_server(t));
                    into.add(c.0, c.1, c.2, c.3, &cpu);
                }
            }
            Ok((openssl, ours, relay_ref.is_some().then_some(relay)))
        },
    )
    .map_err(udp_err)?;
    let ours_server_opened = server
        .stats()
        .map_or(0, |s| s.shards_total().records_opened);
    server.shutdown().map_err(udp_err)?;
    let openssl_server_echoed = peer.finish()?;
    if let Some(r) = relay {
        r.finish()?;
    }
    drop(relay_backend);
    for (who, side) in [("ours", &ours), ("OpenSSL echo", &openssl)]
        .into_iter()
        .chain(openssl_relay.iter().map(|r| ("OpenSSL relay", r)))
    {
        if side.records == 0 || side.server_cpu.is_zero() {
            return Err(PeersError::Udp(format!(
                "{who}: no records echoed or no server CPU measured ({side:?})"
            )));
        }
    }
    let ratios: Vec<f64> = ours
        .slice_per_core
        .iter()
        .zip(&openssl.slice_per_core)
        .map(|(a, b)| a / b)
        .collect();
    let (_, lo, hi) = median(ratios);
    Ok(UdpReport {
        config: *cfg,
        ratio_user_per_record: (!ours.server_user.is_zero() && !openssl.server_user.is_zero())
            .then(|| openssl.user_ns_per_record() / ours.user_ns_per_record()),
        ratio_relay_per_core: openssl_relay
            .as_ref()
            .map(|r| ours.records_per_core_s() / r.records_per_core_s()),
        openssl_relay,
        ratio_per_core: ours.records_per_core_s() / openssl.records_per_core_s(),
        ratio_per_s: ours.records_per_s() / openssl.records_per_s(),
        ratio_per_core_range: (lo, hi),
        openssl,
        ours,
        openssl_server_echoed,
        ours_server_opened,
    })
}

impl UdpReport {
    /// Why this run cannot be trusted (empty: it can): records that came back corrupt, or
    /// the generator thread at [`run::SATURATED_PERCENT`] of a core or more while a side
    /// ran (then it, not the server, set the pace; BENCHMARKS.md rules).
    pub fn invalid_reasons(&self) -> Vec<String> {
        let mut out = Vec::new();
        let sides = [("ours", &self.ours), ("OpenSSL echo", &self.openssl)];
        for (who, side) in sides
            .into_iter()
            .chain(self.openssl_relay.iter().map(|r| ("OpenSSL relay", r)))
        {
            if side.corrupt > 0 {
                out.push(format!("UDP, {who}: {} corrupt records", side.corrupt));
            }
            let generator = side.generator_percent();
            if generator >= run::SATURATED_PERCENT {
                out.push(format!(
                    "UDP, {who}: generator thread loadgen-0 saturated ({generator:.1}% of a core >= {}%)",
                    run::SATURATED_PERCENT
                ));
            }
        }
        out
    }

    /// The tracked figures (all higher is better).
    pub fn figures(&self) -> Vec<Figure> {
        let f = |name: &str, v: f64, unit: &str| {
            Figure::new(format!("peers.udp.{name}"), v, unit, Better::Higher)
        };
        let mut figs = vec![
            f(
                "records_per_core_s.ours",
                self.ours.records_per_core_s(),
                "records/cpu-s",
            ),
            f(
                "records_per_core_s.openssl",
                self.openssl.records_per_core_s(),
                "records/cpu-s",
            ),
            f("records_per_core_s.ratio", self.ratio_per_core, "ratio"),
            f("records_per_s.ours", self.ours.records_per_s(), "records/s"),
            f(
                "records_per_s.openssl",
                self.openssl.records_per_s(),
                "records/s",
            ),
        ];
        if let Some(ratio) = self.ratio_user_per_record {
            for (who, side) in [("ours", &self.ours), ("openssl", &self.openssl)] {
                figs.push(Figure::new(
                    format!("peers.udp.server_user_ns_per_record.{who}"),
                    side.user_ns_per_record(),
                    "ns",
                    Better::Lower,
                ));
            }
            figs.push(f(
                "server_user_ns_per_record.ratio_openssl_ours",
                ratio,
                "ratio",
            ));
        }
        if let (Some(r), Some(ratio)) = (&self.openssl_relay, self.ratio_relay_per_core) {
            figs.push(f(
                "records_per_core_s.openssl_relay",
                r.records_per_core_s(),
                "records/cpu-s",
            ));
            figs.push(f("records_per_core_s.ratio_relay", ratio, "ratio"));
        }
        figs
    }

    /// The human-readable report.
    pub fn table(&self) -> String {
        let c = &self.config;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "B8 over UDP loopback: {} sessions x window {}, {} B records, AES-128-GCM, {} slices of {:?} per side (+1 warm-up each), our generator GSO {}",
            c.sessions,
            c.window,
            c.size,
            c.rounds,
            c.duration / c.rounds as u32,
            if c.gso { "on" } else { "off" }
        );
        let _ = writeln!(
            s,
            "{:<44} {:>12} {:>16} {:>10} {:>16}",
            "side", "records/s", "records/cpu-s", "server %", "user+kernel ns"
        );
        let mut rows = vec![("OpenSSL echo server (ossl-server)", &self.openssl)];
        if let Some(r) = &self.openssl_relay {
            rows.push(("OpenSSL relay to echo backend (ossl-relay)", r));
        }
        rows.push(("ours: dtlsd relay (dtlsd-shard-0)", &self.ours));
        for (name, side) in rows {
            let _ = writeln!(
                s,
                "{name:<44} {:>12.0} {:>16.0} {:>9.1}% {:>16}",
                side.records_per_s(),
                side.records_per_core_s(),
                side.server_percent(),
                format!(
                    "{:.0}+{:.0}",
                    side.user_ns_per_record(),
                    side.system_ns_per_record()
                )
            );
        }
        let o = &self.ours;
        let _ = writeln!(
            s,
            "ours, not in the figure: dtlsd-control {:.3} s CPU, echo backend {:.3} s CPU over {:.2} s",
            o.control_cpu.as_secs_f64(),
            o.backend_cpu.as_secs_f64(),
            o.elapsed.as_secs_f64()
        );
        let _ = writeln!(
            s,
            "ours / OpenSSL per server core: {:.2}x (slices {:.2}..{:.2}), per second: {:.2}x; lost {} / {}",
            self.ratio_per_core,
            self.ratio_per_core_range.0,
            self.ratio_per_core_range.1,
            self.ratio_per_s,
            o.lost,
            self.openssl.lost
        );
        if let Some(ratio) = self.ratio_user_per_record {
            let _ = writeln!(
                s,
                "server user-space CPU per record (record layer + event loop, tick-sampled): OpenSSL / ours {ratio:.2}x"
            );
        }
        if let (Some(r), Some(ratio)) = (&self.openssl_relay, self.ratio_relay_per_core) {
            let _ = writeln!(
                s,
                "ours / OpenSSL relay per server core: {ratio:.2}x (both move 4 datagrams per record); relay lost {}",
                r.lost
            );
        }
        s
    }

    /// The `results.udp` object.
    pub fn json(&self) -> Value {
        let c = &self.config;
        json!({
            "config": {
                "transport": "udp loopback",
                "duration_per_side_s": c.duration.as_secs_f64(),
                "rounds": c.rounds,
                "sessions": c.sessions,
                "window": c.window,
                "size": c.size,
                "our_generator_gso": c.gso,
                "our_io": c.io.name(),
                "our_shards": 1,
                "openssl_server": "one thread, SSL_read -> SSL_write echo, one recv/send per record, socket per session",
                "openssl_relay": c.openssl_relay.then_some("one thread, SSL_read -> send to a UDP echo backend, recv -> SSL_write, connected socket per session upstream"),
                "our_server": "dtlsd relay to a UDP echo backend (4 datagrams per record)",
            },
            "openssl": self.openssl.json(),
            "openssl_relay": self.openssl_relay.as_ref().map(UdpSide::json),
            "ratio_relay_per_core": self.ratio_relay_per_core,
            "ours": self.ours.json(),
            "ratio_per_core": self.ratio_per_core,
            "ratio_per_core_min": self.ratio_per_core_range.0,
            "ratio_per_core_max": self.ratio_per_core_range.1,
            "ratio_per_s": self.ratio_per_s,
            "ratio_user_per_record_openssl_ours": self.ratio_user_per_record,
            "openssl_server_echoed": self.openssl_server_echoed,
            "ours_server_records_opened": self.ours_server_opened,
        })
    }
}
