//! `dtls-sessions`: what an established session costs the data plane, measured on the
//! sans-IO shard core in memory (no sockets, no handshakes: sessions are installed with
//! `ShardCommand::InstallKeys`/`InstallKeys13` as control would after a handshake).
//!
//! - `memory` (B7): bytes per established session in the shard, at a given number of
//!   sessions, for DTLS 1.2 and 1.3, with and without connection IDs. Each case runs in a
//!   child process of its own (so that one case's freed memory cannot hide the next one's
//!   growth) and reports two figures: the Rust heap, exact, from a counting global
//!   allocator (`stats_alloc`), and the resident set growth (`VmRSS`), which also holds
//!   what aws-lc allocates through `malloc` for each AEAD key (the counting allocator never
//!   sees it) and the pages of the preallocated tables actually touched.
//! - `packets` (B6 sessions): nanoseconds per relayed record pair (one record from the
//!   peer opened and handed upstream, its echo sealed back, as in `dtls-icount`'s
//!   `packet-*` workloads) with 1, 1 000, 100 000 established sessions, the records spread
//!   over the sessions at random, reported as a ratio to one session.
//! - `sweep` (issue 15, latency tail): how long the shard's periodic sweep
//!   (`ShardCore::handle_timeout`) holds the shard thread, with a large table and few or
//!   many sessions: the longest single call and the total per second of virtual time, the
//!   clock stepped as a driver steps it (every turn, a turn at most `recv_wait` apart).
//!
//! Not measured: the kernel (sockets, one per session upstream in serve mode), the driver
//! (epoll registration per upstream socket), the control plane (see
//! `control/tests/session_memory.rs`).

use std::alloc::System;
use std::hint::black_box;
use std::net::{Ipv4Addr, SocketAddr};
use std::process::{Command, ExitCode};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail, ensure};
use clap::{Parser, Subcommand, ValueEnum};
use dataplane::record::v13::{HeaderForm, InnerContentType, Sealer13, TrafficKeys13};
use dataplane::record::{Aead, CidSealer, ContentType, DTLS_1_2, RecordKey, ReplayWindow, Sealer};
use dtls_shard::{
    Effects, FlowRef, HeartbeatPolicy, OpenFlow, ReadKeys, ReadKeys13, SessionId, ShardCommand,
    ShardConfig, ShardCore, ShardQueues, UpstreamPrefix, WriteKeys, WriteKeys13,
};
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

#[derive(Debug, Parser)]
#[command(
    name = "dtls-sessions",
    about = "Bytes per session and per-packet cost against the session count, shard core in memory"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Version {
    #[value(name = "1.2")]
    V12,
    #[value(name = "1.3")]
    V13,
}

impl Version {
    fn name(self) -> &'static str {
        match self {
            Version::V12 => "1.2",
            Version::V13 => "1.3",
        }
    }
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// B7: bytes per established session (1.2 and 1.3, with and without CIDs).
    Memory {
        /// Session counts (the shard's table is sized to each).
        #[arg(long, value_delimiter = ',', default_value = "10000,100000")]
        sessions: Vec<usize>,
    },
    /// Sizes of the per-session types (what a session's table slot and boxes hold).
    Sizes,
    /// One case of `memory`, in this process (what `memory` runs as a child).
    MemoryOne {
        #[arg(long)]
        version: Version,
        #[arg(long)]
        cid: bool,
        #[arg(long)]
        sessions: usize,
    },
    /// B6 sessions: nanoseconds per relayed record pair against the number of sessions.
    Packets {
        /// Session counts; the first is the reference of the ratio.
        #[arg(long, value_delimiter = ',', default_value = "1,1000,100000")]
        sessions: Vec<usize>,
        /// Timed record pairs per session count.
        #[arg(long, default_value_t = 300_000)]
        packets: usize,
        /// Plaintext bytes per record.
        #[arg(long, default_value_t = 1200)]
        size: usize,
        #[arg(long, value_enum, default_value = "1.2")]
        version: Version,
        /// Connection IDs both ways (sessions found by CID).
        #[arg(long)]
        cid: bool,
        /// Rounds: each session count is measured this many times, the best round kept.
        #[arg(long, default_value_t = 3)]
        rounds: usize,
    },
    /// Issue 15: the sweep's pause of the shard thread (`handle_timeout`), per call and per
    /// second of virtual time, with a table of `--capacity` slots.
    Sweep {
        /// Slots of the session table (`max_sessions`).
        #[arg(long, default_value_t = 1_000_000)]
        capacity: usize,
        /// Live session counts (installed in the lowest slots, as the free list hands them
        /// out).
        #[arg(long, value_delimiter = ',', default_value = "64,100000")]
        sessions: Vec<usize>,
        /// Virtual time between two calls, microseconds (1000: an idle shard's turn,
        /// `recv_wait`; 1000000: a clock that jumps a whole sweep interval).
        #[arg(long, value_delimiter = ',', default_value = "100,1000,1000000")]
        steps_us: Vec<u64>,
        /// Virtual seconds per case.
        #[arg(long, default_value_t = 5)]
        seconds: u64,
    },
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("dtls-sessions: error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Cmd::Memory { sessions } => memory(&sessions),
        Cmd::Sizes => {
            sizes();
            Ok(())
        }
        Cmd::MemoryOne {
            version,
            cid,
            sessions,
        } => {
            let m = memory_one(version, cid, sessions)?;
            println!("{}", m.line());
            Ok(())
        }
        Cmd::Packets {
            sessions,
            packets,
            size,
            version,
            cid,
            rounds,
        } => packets_table(&sessions, packets, size, version, cid, rounds),
        Cmd::Sweep {
            capacity,
            sessions,
            steps_us,
            seconds,
        } => sweep_table(capacity, &sessions, &steps_us, seconds),
    }
}

/// The CID length of the CID cases (the daemon's QUIC-LB layout is 8 octets).
const CID_LEN: usize = 8;
/// The AEAD of every session (the daemon's default suites use AES-128-GCM).
const AEAD: Aead = Aead::Aes128Gcm;

/// The address of session `i` (unique for `i < 2^24`).
fn peer(i: usize) -> SocketAddr {
    let i = i as u32;
    SocketAddr::from((Ipv4Addr::from(0x0a00_0000 | (i & 0x00ff_ffff)), 4433))
}

/// Our CID of session `i` (unique; first octet as the daemon's server id layout).
fn cid(i: usize) -> [u8; CID_LEN] {
    let b = (i as u64).to_be_bytes();
    [7, b[3], b[4], b[5], b[6], b[7], 0x5a, 0xa5]
}

fn key12() -> Result<RecordKey> {
    Ok(RecordKey::new(AEAD, &[0x42; 16], &[0x24; 4])?)
}

fn keys13() -> Result<TrafficKeys13> {
    Ok(TrafficKeys13::new(
        AEAD,
        &[0x42; 16],
        &[0x24; 12],
        &[0x17; 16],
    )?)
}

/// What control sends a shard for session `i` after its handshake.
fn install(version: Version, with_cid: bool, i: usize) -> Result<ShardCommand> {
    let (ours, theirs) = if with_cid {
        (cid(i).to_vec(), vec![0xc1; CID_LEN])
    } else {
        (Vec::new(), Vec::new())
    };
    let session = SessionId::new(i as u64 + 1);
    Ok(match version {
        Version::V12 => ShardCommand::InstallKeys {
            session,
            peer: peer(i),
            read: ReadKeys {
                epoch: 1,
                key: key12()?,
                replay_window: ReplayWindow::DEFAULT_SIZE,
            },
            write: WriteKeys {
                epoch: 1,
                key: key12()?,
                next_seq: 0,
            },
            heartbeat: HeartbeatPolicy::default(),
            cid: ours,
            peer_cid: theirs,
            rrc: false,
            upstream: UpstreamPrefix::None,
        },
        Version::V13 => ShardCommand::InstallKeys13 {
            session,
            peer: peer(i),
            read: Some(Box::new(ReadKeys13 {
                epoch: 3,
                keys: keys13()?,
                replay_window: ReplayWindow::DEFAULT_SIZE,
                next_expected: 0,
            })),
            write: Some(Box::new(WriteKeys13 {
                epoch: 3,
                keys: keys13()?,
                next_seq: 0,
            })),
            cid: ours,
            peer_cid: theirs,
            rrc: false,
            upstream: UpstreamPrefix::None,
        },
    })
}

/// Upstream flows: a 4-byte id per session, the size of the driver's `UdpSocket` (a file
/// descriptor); the socket's kernel side is not in this figure.
#[derive(Debug, Default)]
struct Flows(u32);

impl OpenFlow<u32> for Flows {
    fn open_flow(&mut self, _peer: SocketAddr) -> std::io::Result<u32> {
        self.0 += 1;
        Ok(self.0)
    }
}

/// A shard core for `n` sessions (its table preallocated for them) and its effects.
fn core(n: usize, with_cid: bool) -> (ShardCore<u32>, Effects) {
    let backend = SocketAddr::from(([192, 0, 2, 2], 9));
    let mut config = ShardConfig::new(backend);
    config.max_sessions = n;
    if with_cid {
        config.cid_len = CID_LEN;
    }
    let core = ShardCore::new(Arc::new(ShardQueues::new(1024, 1024)), config, 1, &[1; 32]);
    let fx = Effects::new(config.tx_batch, config.max_datagram, false);
    (core, fx)
}

/// Installs sessions `0..n`.
fn install_all(
    core: &mut ShardCore<u32>,
    fx: &mut Effects,
    flows: &mut Flows,
    version: Version,
    with_cid: bool,
    n: usize,
    now: Instant,
) -> Result<()> {
    for i in 0..n {
        core.handle_command(now, install(version, with_cid, i)?, fx, flows);
        fx.opened.clear();
    }
    ensure!(
        core.sessions().len() == n,
        "{} of {n} sessions installed",
        core.sessions().len()
    );
    Ok(())
}

/// Bytes allocated and not freed since `region` began.
fn live(region: &Region<'_, System>) -> i64 {
    let c = region.change();
    // stats_alloc already counts a realloc's growth in bytes_allocated (and its shrinking in
    // bytes_deallocated); bytes_reallocated is the same change again.
    c.bytes_allocated as i64 - c.bytes_deallocated as i64
}

/// Resident set size of this process, KiB.
fn rss_kib() -> Result<i64> {
    let status = std::fs::read_to_string("/proc/self/status").context("/proc/self/status")?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("VmRSS in /proc/self/status")
}

/// One `memory` case.
#[derive(Debug)]
struct MemoryCase {
    version: Version,
    cid: bool,
    sessions: usize,
    /// Rust heap of the empty core sized for `sessions` (tables preallocated).
    heap_empty: i64,
    /// Rust heap once every session is installed.
    heap_full: i64,
    /// Allocations made by installing the sessions (and still live).
    allocs_per_session: f64,
    /// RSS growth, KiB, empty core and full.
    rss_empty_kib: i64,
    rss_full_kib: i64,
}

impl MemoryCase {
    fn line(&self) -> String {
        format!(
            "case {} {} {} {} {} {:.2} {} {}",
            self.version.name(),
            u8::from(self.cid),
            self.sessions,
            self.heap_empty,
            self.heap_full,
            self.allocs_per_session,
            self.rss_empty_kib,
            self.rss_full_kib
        )
    }

    fn parse(line: &str) -> Result<Self> {
        let f: Vec<&str> = line.split_whitespace().collect();
        ensure!(f.len() == 9 && f[0] == "case", "bad case line {line:?}");
        let int = |s: &str| {
            s.parse::<i64>()
                .with_context(|| format!("bad number {s:?}"))
        };
        Ok(Self {
            version: if f[1] == "1.3" {
                Version::V13
            } else {
                Version::V12
            },
            cid: f[2] == "1",
            sessions: f[3].parse()?,
            heap_empty: int(f[4])?,
            heap_full: int(f[5])?,
            allocs_per_session: f[6].parse()?,
            rss_empty_kib: int(f[7])?,
            rss_full_kib: int(f[8])?,
        })
    }
}

fn memory_one(version: Version, with_cid: bool, n: usize) -> Result<MemoryCase> {
    ensure!(n > 0, "at least one session");
    let now = Instant::now();
    // Warm up what is set up once per process (aws-lc's CPU detection, the hash seeds).
    {
        let (mut core, mut fx) = core(1, with_cid);
        install_all(
            &mut core,
            &mut fx,
            &mut Flows::default(),
            version,
            with_cid,
            1,
            now,
        )?;
    }
    let rss0 = rss_kib()?;
    let region = Region::new(GLOBAL);
    let (mut core, mut fx) = core(n, with_cid);
    let heap_empty = live(&region);
    let rss_empty_kib = rss_kib()? - rss0;
    let allocs0 = region.change().allocations as i64 - region.change().deallocations as i64;
    let mut flows = Flows::default();
    install_all(&mut core, &mut fx, &mut flows, version, with_cid, n, now)?;
    let heap_full = live(&region);
    let allocs = region.change().allocations as i64 - region.change().deallocations as i64;
    let rss_full_kib = rss_kib()? - rss0;
    black_box((&core, &fx));
    Ok(MemoryCase {
        version,
        cid: with_cid,
        sessions: n,
        heap_empty,
        heap_full,
        allocs_per_session: (allocs - allocs0) as f64 / n as f64,
        rss_empty_kib,
        rss_full_kib,
    })
}

fn memory(sessions: &[usize]) -> Result<()> {
    let exe = std::env::current_exe().context("locating this executable")?;
    println!(
        "B7: bytes per established session in one shard (sans-IO core, AES-128-GCM, table sized to the session count)"
    );
    println!(
        "  heap: Rust heap (counting allocator), exact; RSS: resident set growth, includes aws-lc's malloc'd AEAD contexts"
    );
    println!(
        "{:<4} {:<4} {:>8} {:>14} {:>14} {:>14} {:>12} {:>14} {:>12}",
        "ver",
        "cid",
        "sessions",
        "empty B/slot",
        "install B/s",
        "heap B/sess",
        "allocs/sess",
        "RSS B/sess",
        "RSS MiB"
    );
    for &n in sessions {
        for version in [Version::V12, Version::V13] {
            for with_cid in [false, true] {
                let mut cmd = Command::new(&exe);
                cmd.args([
                    "memory-one",
                    "--version",
                    version.name(),
                    "--sessions",
                    &n.to_string(),
                ]);
                if with_cid {
                    cmd.arg("--cid");
                }
                let out = cmd.output().context("running memory-one")?;
                if !out.status.success() {
                    bail!(
                        "memory-one {} cid={with_cid} {n}: {}",
                        version.name(),
                        String::from_utf8_lossy(&out.stderr).trim()
                    );
                }
                let text = String::from_utf8_lossy(&out.stdout);
                let line = text
                    .lines()
                    .find(|l| l.starts_with("case "))
                    .context("no case line from memory-one")?;
                let m = MemoryCase::parse(line)?;
                let per = |b: i64| b as f64 / m.sessions as f64;
                println!(
                    "{:<4} {:<4} {:>8} {:>14.0} {:>14.0} {:>14.0} {:>12.2} {:>14.0} {:>12.1}",
                    m.version.name(),
                    if m.cid { "yes" } else { "no" },
                    m.sessions,
                    per(m.heap_empty),
                    per(m.heap_full - m.heap_empty),
                    per(m.heap_full),
                    m.allocs_per_session,
                    per(m.rss_full_kib * 1024),
                    m.rss_full_kib as f64 / 1024.0,
                );
            }
        }
    }
    Ok(())
}

/// Prints `size_of` of what a session is made of.
fn sizes() {
    use std::mem::size_of;
    let rows: [(&str, usize); 15] = [
        (
            "Session<UdpSocket> (table slot payload)",
            size_of::<dtls_shard::Session<std::net::UdpSocket>>(),
        ),
        ("ReadState", size_of::<dtls_shard::ReadState>()),
        ("WriteState", size_of::<dtls_shard::WriteState>()),
        ("CidKey", size_of::<dtls_shard::CidKey>()),
        ("RecordKey", size_of::<RecordKey>()),
        ("ReplayWindow (+ heap words)", size_of::<ReplayWindow>()),
        ("Opener", size_of::<dataplane::record::Opener>()),
        ("Sealer", size_of::<Sealer>()),
        ("CidOpener", size_of::<dataplane::record::CidOpener>()),
        ("CidSealer", size_of::<CidSealer>()),
        (
            "ReadEpochs<CidOpener> (boxed)",
            size_of::<dtls_shard::ReadEpochs<dataplane::record::CidOpener>>(),
        ),
        ("TrafficKeys13", size_of::<TrafficKeys13>()),
        (
            "dataplane::record::v13::Opener13",
            size_of::<dataplane::record::v13::Opener13>(),
        ),
        (
            "ReadEpochs<Opener13> (boxed)",
            size_of::<dtls_shard::ReadEpochs<dataplane::record::v13::Opener13>>(),
        ),
        ("Write13 (boxed)", size_of::<dtls_shard::Write13>()),
    ];
    for (name, size) in rows {
        println!("{name:<44} {size:>6} B");
    }
}

/// xorshift64*: the order in which sessions send (deterministic).
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n as u64) as usize
    }
}

/// Seals one application-data record of `size` bytes from session `s` with sequence number
/// `seq` into `buf`; returns its length.
fn seal_from(
    version: Version,
    with_cid: bool,
    s: usize,
    seq: u64,
    size: usize,
    buf: &mut [u8],
) -> Result<usize> {
    Ok(match (version, with_cid) {
        (Version::V12, false) => {
            let mut sealer = Sealer::new(1, key12()?, seq)?;
            sealer.seal(ContentType::ApplicationData, DTLS_1_2, buf, size)?
        }
        (Version::V12, true) => {
            let mut sealer = CidSealer::new(1, key12()?, seq, &cid(s))?;
            sealer.seal(ContentType::ApplicationData, buf, size, 0)?
        }
        (Version::V13, with_cid) => {
            let ours = cid(s);
            let form = if with_cid {
                HeaderForm {
                    cid: Some(&ours),
                    ..HeaderForm::default()
                }
            } else {
                HeaderForm::default()
            };
            let mut sealer = Sealer13::new(3, keys13()?).with_next_sequence(seq);
            sealer.seal(InnerContentType::ApplicationData, &form, buf, size, 0)?
        }
    })
}

/// Records per prepared batch (the timed loop runs over one batch at a time).
const BATCH: usize = 2048;

/// Median nanoseconds per record pair with `n` sessions.
fn packets_at(
    n: usize,
    total: usize,
    size: usize,
    version: Version,
    with_cid: bool,
) -> Result<f64> {
    let now = Instant::now();
    let (mut core, mut fx) = core(n, with_cid);
    let mut flows = Flows::default();
    install_all(&mut core, &mut fx, &mut flows, version, with_cid, n, now)?;
    let refs: Vec<FlowRef> = (0..n)
        .map(|i| {
            let id = if with_cid {
                core.sessions().lookup_cid(&cid(i))
            } else {
                core.sessions().lookup(&peer(i))
            };
            id.map(FlowRef::Session).context("installed session")
        })
        .collect::<Result<_>>()?;
    let mut seq = vec![0u64; n];
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let stride = (size + 128).next_multiple_of(64);
    let mut batch = vec![0u8; stride * BATCH];
    let mut lens = vec![0usize; BATCH];
    let mut who = vec![0usize; BATCH];
    let mut reply = vec![0u8; size];
    let mut per_batch = Vec::new();
    let batches = total.div_ceil(BATCH) + 1; // the first one warms up
    for b in 0..batches {
        for j in 0..BATCH {
            let s = rng.below(n);
            who[j] = s;
            let slot = &mut batch[j * stride..(j + 1) * stride];
            slot.fill(0x5a);
            lens[j] = seal_from(version, with_cid, s, seq[s], size, slot)?;
            seq[s] += 1;
        }
        let started = Instant::now();
        for j in 0..BATCH {
            let s = who[j];
            let datagram = &mut batch[j * stride..j * stride + lens[j]];
            core.handle_datagram(now, peer(s), black_box(datagram), &mut fx, &mut flows);
            let mut relayed = 0;
            core.flush_flows(&mut fx, |_, payload, _| {
                let dst = reply
                    .get_mut(..payload.len())
                    .ok_or_else(|| std::io::Error::other("reply longer than the record"))?;
                dst.copy_from_slice(payload);
                relayed = payload.len();
                Ok(relayed)
            });
            ensure!(relayed == size, "relayed {relayed} bytes upstream");
            core.handle_flow_datagram(now, refs[s], &mut reply[..relayed], &mut fx);
            let sent: usize = fx.net.sends().map(|x| x.payload.len()).sum();
            ensure!(black_box(sent) > size, "reply of {sent} bytes");
            fx.net.clear();
        }
        let ns = started.elapsed().as_nanos() as f64 / BATCH as f64;
        if b > 0 {
            per_batch.push(ns);
        }
    }
    per_batch.sort_by(f64::total_cmp);
    Ok(per_batch[per_batch.len() / 2])
}

fn packets_table(
    sessions: &[usize],
    total: usize,
    size: usize,
    version: Version,
    with_cid: bool,
    rounds: usize,
) -> Result<()> {
    ensure!(!sessions.is_empty(), "no session counts");
    ensure!(
        sessions.iter().all(|&n| n > 0),
        "session counts must be positive"
    );
    println!(
        "B6 sessions: ns per relayed record pair (open + upstream + seal of the echo), DTLS {}, {}AES-128-GCM, {size} B, records from sessions at random; median of {BATCH}-record batches, best of {rounds} rounds",
        version.name(),
        if with_cid { "CIDs, " } else { "" }
    );
    println!("{:>9} {:>12} {:>10}", "sessions", "ns/pair", "ratio");
    let mut first = None;
    for &n in sessions {
        let mut best = f64::INFINITY;
        for _ in 0..rounds.max(1) {
            best = best.min(packets_at(n, total, size, version, with_cid)?);
        }
        let base = *first.get_or_insert(best);
        println!("{n:>9} {best:>12.0} {:>10.2}", best / base);
    }
    Ok(())
}

/// One `sweep` case: wall-clock nanoseconds of each `handle_timeout` call.
#[derive(Debug)]
struct SweepCase {
    calls: usize,
    /// Longest single call.
    max_ns: u64,
    /// 99th percentile of the calls.
    p99_ns: u64,
    /// All calls together, per second of virtual time.
    per_second_ns: f64,
}

/// Drives `handle_timeout` of a core with `capacity` slots and `n` live sessions (DTLS 1.2,
/// keepalive on but not negotiated by the peers, so every pass looks at each session and
/// nothing expires) for `seconds` of virtual time in steps of `step`.
fn sweep_at(capacity: usize, n: usize, step: Duration, seconds: u64) -> Result<SweepCase> {
    ensure!(n <= capacity, "{n} sessions in {capacity} slots");
    ensure!(!step.is_zero(), "a step of zero");
    let backend = SocketAddr::from(([192, 0, 2, 2], 9));
    let mut config = ShardConfig::new(backend);
    config.max_sessions = capacity;
    config.keepalive = Some(Duration::from_secs(30));
    config.idle_timeout = Duration::from_secs(300);
    let mut core = ShardCore::new(Arc::new(ShardQueues::new(1024, 1024)), config, 1, &[1; 32]);
    let mut fx = Effects::new(config.tx_batch, config.max_datagram, false);
    let t0 = Instant::now();
    install_all(
        &mut core,
        &mut fx,
        &mut Flows::default(),
        Version::V12,
        false,
        n,
        t0,
    )?;
    // The first call (a whole pass in every version) warms the table's pages; not timed.
    core.handle_timeout(t0, &mut fx);
    let end = Duration::from_secs(seconds);
    let mut took = Vec::new();
    let mut at = step;
    while at <= end {
        let now = t0 + at;
        let started = Instant::now();
        black_box(core.handle_timeout(black_box(now), &mut fx));
        took.push(started.elapsed().as_nanos() as u64);
        at += step;
    }
    ensure!(
        core.sessions().len() == n,
        "{} of {n} sessions left",
        core.sessions().len()
    );
    ensure!(!took.is_empty(), "no call in {seconds} s of {step:?} steps");
    let total: u64 = took.iter().sum();
    let calls = took.len();
    took.sort_unstable();
    Ok(SweepCase {
        calls,
        max_ns: took[calls - 1],
        p99_ns: took[(calls * 99 / 100).min(calls - 1)],
        per_second_ns: total as f64 / (at - step).as_secs_f64(),
    })
}

fn sweep_table(capacity: usize, sessions: &[usize], steps_us: &[u64], seconds: u64) -> Result<()> {
    println!(
        "issue 15: ShardCore::handle_timeout with {capacity} slots, sweep interval 1 s, keepalive on, {seconds} s of virtual time per case"
    );
    println!(
        "{:>9} {:>10} {:>8} {:>12} {:>12} {:>14}",
        "sessions", "step µs", "calls", "max µs", "p99 µs", "µs per s"
    );
    for &n in sessions {
        for &us in steps_us {
            let c = sweep_at(capacity, n, Duration::from_micros(us), seconds)?;
            println!(
                "{n:>9} {us:>10} {:>8} {:>12.1} {:>12.1} {:>14.1}",
                c.calls,
                c.max_ns as f64 / 1e3,
                c.p99_ns as f64 / 1e3,
                c.per_second_ns / 1e3
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_case_installs_and_relays() {
        for version in [Version::V12, Version::V13] {
            for with_cid in [false, true] {
                let m = memory_one(version, with_cid, 64).expect("memory case");
                assert!(m.heap_full > m.heap_empty, "{m:?}");
                assert_eq!(
                    MemoryCase::parse(&m.line()).expect("parses").heap_full,
                    m.heap_full
                );
                let ns = packets_at(3, BATCH, 100, version, with_cid).expect("packets");
                assert!(ns > 0.0);
            }
        }
    }

    #[test]
    fn the_sweep_case_runs_and_keeps_every_session() {
        let c = sweep_at(4096, 8, Duration::from_millis(250), 2).expect("sweep case");
        assert_eq!(c.calls, 8);
        assert!(c.max_ns >= c.p99_ns);
    }
}
