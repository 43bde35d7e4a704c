//! Running a scenario: server groups, the generator thread, CPU accounting and the JSON
//! document every data-plane command writes.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result, anyhow};
use serde_json::{Value, json};

use super::CipherChoice;
use super::client::{
    HANDSHAKE_TIMEOUT, HandshakePlan, HandshakeStats, TICKET_WAIT, client_config, run_handshakes,
};
use super::cpu::{CpuSnapshot, ThreadCpu};
use super::flow::{FlowConfig, Flows};
use super::server::bind_ip_for;
use crate::compare::{Figure, figures_json};
use crate::host::HostInfo;
use crate::records::Version;

/// A generator thread at or above this share of one core is saturated: the run is invalid.
pub const SATURATED_PERCENT: f64 = 95.0;

/// Sessions of one server the generator drives.
#[derive(Debug, Clone)]
pub struct Group {
    /// The server.
    pub server: SocketAddr,
    /// Its CA certificate.
    pub ca: PathBuf,
    /// Record protection.
    pub cipher: CipherChoice,
    /// The DTLS version the sessions speak (the server takes both).
    pub version: Version,
    /// The clients offer RFC 9146 / RFC 9147 §9 connection IDs, asking for a
    /// [`CLIENT_CID_LEN`]-byte CID of their own: with a server that gives one too, records
    /// carry a CID both ways (`tls12_cid`, or DTLS 1.3 with the C bit).
    pub cid: bool,
}

/// The length of the CID a generator client asks the server to put in its records (with
/// [`Group::cid`]): dtlsd serve's default length, so both directions carry a CID of the
/// same size.
pub const CLIENT_CID_LEN: u8 = 8;

/// A running server the generator drives instead of an in-process one (`--server`).
#[derive(Debug, Clone)]
pub struct External {
    /// Its address.
    pub addr: SocketAddr,
    /// The CA certificate that signed its certificate (the clients verify `localhost`).
    pub ca: PathBuf,
}

impl External {
    /// `--server` and `--ca` as given on the command line: `None` without `--server`.
    ///
    /// # Errors
    /// `--server` without `--ca`.
    pub fn from_args(
        server: Option<SocketAddr>,
        ca: Option<&std::path::Path>,
    ) -> Result<Option<Self>> {
        match (server, ca) {
            (None, _) => Ok(None),
            (Some(addr), Some(ca)) => Ok(Some(Self {
                addr,
                ca: ca.to_path_buf(),
            })),
            (Some(_), None) => Err(anyhow!(
                "--server needs --ca (the CA certificate that signed the server's)"
            )),
        }
    }

    /// The client group of `cipher`'s sessions in `version` against this server.
    pub fn group(&self, cipher: CipherChoice, version: Version) -> Group {
        Group {
            server: self.addr,
            ca: self.ca.clone(),
            cipher,
            version,
            cid: false,
        }
    }
}

/// Runs `body` on a new thread named `loadgen-0` after handshaking `sessions` sessions with
/// every group (all in flight at once, per group) and turning them into [`Flows`].
pub fn on_loadgen<T: Send>(
    groups: &[Group],
    sessions: usize,
    flow: FlowConfig,
    mtu: usize,
    body: impl FnOnce(Vec<Flows>, Vec<HandshakeStats>) -> Result<T> + Send,
) -> Result<T> {
    std::thread::scope(|scope| {
        let handle = std::thread::Builder::new()
            .name("loadgen-0".into())
            .spawn_scoped(scope, move || {
                pin_generator();
                let mut all_flows = Vec::new();
                let mut all_stats = Vec::new();
                for g in groups {
                    let config = Arc::new(group_config(g, mtu)?);
                    let plan = HandshakePlan {
                        server: g.server,
                        bind_ip: bind_ip_for(g.server),
                        sources: 1,
                        parallel: sessions,
                        total: Some(sessions as u64),
                        duration: Duration::from_secs(60),
                        keep: true,
                        collect_tickets: false,
                        offer_tickets: false,
                        timeout: HANDSHAKE_TIMEOUT,
                        ticket_wait: TICKET_WAIT,
                    };
                    let mut stats = run_handshakes(&config, &plan, &mut Vec::new())?;
                    if stats.completed < sessions as u64 {
                        return Err(anyhow!(
                            "{} of {sessions} handshakes completed with {}: {}",
                            stats.completed,
                            g.server,
                            stats.first_error.as_deref().unwrap_or("no error reported")
                        ));
                    }
                    let established = std::mem::take(&mut stats.established);
                    all_flows.push(Flows::new(established, g.cipher, flow)?);
                    all_stats.push(stats);
                }
                body(all_flows, all_stats)
            })
            .context("spawn the generator thread")?;
        handle
            .join()
            .map_err(|_| anyhow!("the generator thread panicked"))?
    })
}

/// How reports and figure names call `cipher`'s sessions in `version`: the cipher's name,
/// with `_dtls13` for DTLS 1.3 (the null baseline is the same in both).
pub fn label(cipher: CipherChoice, version: Version) -> String {
    match version {
        Version::V13 if !cipher.is_null() => format!("{}_dtls13", cipher.name()),
        _ => cipher.name().to_string(),
    }
}

/// The client configuration of `g`'s sessions: `g.cipher`'s suite alone, in `g.version`.
pub fn group_config(g: &Group, mtu: usize) -> Result<control::Config> {
    let mut config = client_config(&g.ca, g.cipher, mtu)?;
    if g.cid {
        config.connection_id = control::ConnectionIds::On {
            len: CLIENT_CID_LEN,
        };
    }
    if g.version == Version::V13 {
        let suite = g
            .cipher
            .suite13()
            .ok_or_else(|| anyhow!("DTLS 1.3 has no null record protection (--cipher none)"))?;
        config.versions = vec![control::ProtocolVersion::Dtls1_3];
        config.tls13_cipher_suites = vec![suite];
        config.validate_client().context("client configuration")?;
    }
    Ok(config)
}

/// Where the in-process echo backend runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum BackendPlacement {
    /// A core of its own from three cores (the second-to-last), not pinned on two.
    #[default]
    Auto,
    /// Off the cores of `threads` spinning generator threads (the last ones): a spinning
    /// thread never leaves its core, so an echo scheduled there waits for the spinner's time
    /// slice. On a host without a core to spare it shares shard 0's.
    OffSpinningGenerators {
        /// Generator threads (on the last cores).
        threads: usize,
    },
}

/// The core of the in-process echo backend.
///
/// [`BackendPlacement::Auto`]: the second-to-last where there are three or more (shard 0
/// has the first, the generator the last); none (not pinned) on one or two. Sharing the
/// generator's core made each echo wait for the generator's time slice to end whenever both
/// were runnable, a wait of scheduler latency that showed in the latency tail of plaintext
/// and DTLS alike. On two cores there is no third, and pinned to either core every relayed
/// datagram woke a thread on the other core twice more (shard → echo, echo → shard: an IPI
/// each, about 10 µs of the waker's CPU on the nested-virtualization VMs we measure on).
/// Left to the scheduler, the echo runs next to the shard while the shard's core has room
/// (the wake-ups stay local) and moves to the generator's under full load. Measured on the
/// 2-core VM, open loop at 60k pps, echo pinned to the generator's core / shard's core /
/// unpinned: p99 42-45 ms (invalid) / 0.31-0.34 ms / 0.34-0.48 ms; closed-loop maximum
/// 720k / 549k / 700k pps (docs/benchmarks.md, B3).
///
/// [`BackendPlacement::OffSpinningGenerators`]: the core below the generators' where there
/// is one besides shard 0's, else shard 0's (the first).
pub fn backend_core(
    cores: &[core_affinity::CoreId],
    placement: BackendPlacement,
) -> Option<core_affinity::CoreId> {
    match placement {
        BackendPlacement::Auto => match cores.len() {
            0..=2 => None,
            n => cores.get(n - 2).copied(),
        },
        BackendPlacement::OffSpinningGenerators { threads } => {
            let n = cores.len();
            if n > threads.max(1) + 1 {
                cores.get(n - 1 - threads.max(1)).copied()
            } else {
                cores.first().copied()
            }
        }
    }
}

/// Pins the calling echo backend thread to [`backend_core`]; returns the core, or `None`
/// when not pinned.
pub fn pin_backend(placement: BackendPlacement) -> Option<usize> {
    let cores = core_affinity::get_core_ids()?;
    let core = backend_core(&cores, placement)?;
    core_affinity::set_for_current(core).then_some(core.id)
}

/// Pins the calling generator thread to the last core when there are at least two (the
/// server pins shard N to core N, so the generator stays off shard 0's core). Returns the
/// core, or `None` when not pinned.
pub fn pin_generator() -> Option<usize> {
    pin_generator_at(0)
}

/// Pins generator thread `index` to the `index`-th core counted from the last (wrapping),
/// when there are at least two: thread 0 on the last core, thread 1 on the one before, ….
/// Returns the core, or `None` when not pinned.
pub fn pin_generator_at(index: usize) -> Option<usize> {
    let cores = core_affinity::get_core_ids()?;
    if cores.len() < 2 {
        return None;
    }
    let core = *cores.get(cores.len() - 1 - index % cores.len())?;
    core_affinity::set_for_current(core).then_some(core.id)
}

/// CPU time per thread (name and id) summed over several measured slices.
#[derive(Debug, Clone, Default)]
pub struct CpuAccum {
    cpu_ns: BTreeMap<(String, u32), u64>,
    wall: Duration,
}

impl CpuAccum {
    /// Adds the CPU used between two snapshots.
    pub fn add(&mut self, before: &CpuSnapshot, after: &CpuSnapshot, wall: Duration) {
        for t in before.delta(after) {
            *self.cpu_ns.entry((t.name, t.tid)).or_default() += t.cpu_ns;
        }
        self.wall += wall;
    }

    /// Adds the CPU the threads named `name` used between two snapshots, without wall
    /// time: for a thread that ended before the slice's closing snapshot and took its
    /// own.
    pub fn add_named(&mut self, before: &CpuSnapshot, after: &CpuSnapshot, name: &str) {
        // One entry however many threads of that name came and went.
        for t in before.delta(after).into_iter().filter(|t| t.name == name) {
            *self.cpu_ns.entry((t.name, 0)).or_default() += t.cpu_ns;
        }
    }

    /// The accumulated CPU as per-thread percentages of the accumulated wall time.
    pub fn threads(&self) -> Vec<ThreadCpu> {
        let wall = self.wall.as_nanos().max(1) as f64;
        self.cpu_ns
            .iter()
            .map(|((name, tid), ns)| ThreadCpu {
                tid: *tid,
                name: name.clone(),
                cpu_ns: *ns,
                percent: *ns as f64 * 100.0 / wall,
                wait_ns: 0,
            })
            .collect()
    }
}

/// A result document: `tool`, `version`, `timestamp`, `host`, `config`, `results`,
/// `figures`, `valid` and `invalid_reasons`.
pub fn document(
    tool: &str,
    config: Value,
    results: Value,
    figures: &[Figure],
    invalid_reasons: &[String],
) -> Value {
    json!({
        "tool": tool,
        "version": env!("CARGO_PKG_VERSION"),
        "timestamp": crate::report::rfc3339_now(),
        "host": HostInfo::detect().to_json(),
        "config": config,
        "results": results,
        "figures": figures_json(figures),
        "valid": invalid_reasons.is_empty(),
        "invalid_reasons": invalid_reasons,
    })
}

/// Reasons a run is invalid because of the generator's CPU (one per saturated thread).
pub fn saturation_reasons(threads: &[ThreadCpu]) -> Vec<String> {
    threads
        .iter()
        .filter(|t| t.name.starts_with("loadgen-") && t.percent >= SATURATED_PERCENT)
        .map(|t| {
            format!(
                "generator thread {} saturated ({:.1}% of a core >= {SATURATED_PERCENT}%)",
                t.name, t.percent
            )
        })
        .collect()
}

/// Writes a JSON document to `path` (pretty, trailing newline).
pub fn write_json(path: &std::path::Path, doc: &Value) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    }
    let text = serde_json::to_string_pretty(doc).context("serialize JSON")?;
    std::fs::write(path, text + "\n").with_context(|| format!("write {}", path.display()))
}

/// The path MTU a server is started with for `size`-byte payloads (room for the record
/// and IP/UDP headers, at least an Ethernet MTU).
pub fn server_mtu(size: usize) -> u16 {
    u16::try_from((size + 128).clamp(1500, 9000)).unwrap_or(9000)
}

/// One in-process server per cipher (the `none` baseline gets null record protection after
/// its handshake), each with its own echo backend, and the client groups that reach them:
/// DTLS `version` sessions, except the null baseline's (DTLS 1.2).
///
/// # Errors
/// A server that cannot start.
pub fn start_servers(
    ciphers: &[CipherChoice],
    version: Version,
    shards: usize,
    io: super::IoChoice,
    mtu: u16,
) -> anyhow::Result<(Vec<super::server::TestServer>, Vec<Group>)> {
    start_servers_with(
        ciphers,
        version,
        shards,
        io,
        mtu,
        Default::default(),
        BackendPlacement::Auto,
    )
}

/// [`start_servers`] with the shards' batch, ring, GSO and socket buffer sizes set
/// (`dtls-tune autotune` trials them).
///
/// # Errors
/// A server that cannot start.
pub fn start_servers_with(
    ciphers: &[CipherChoice],
    version: Version,
    shards: usize,
    io: super::IoChoice,
    mtu: u16,
    data_io: dtlsd::config::DataIo,
    backend: BackendPlacement,
) -> anyhow::Result<(Vec<super::server::TestServer>, Vec<Group>)> {
    let servers = ciphers
        .iter()
        .map(|c| {
            super::server::TestServer::start_placed(
                &super::server::ServerSetup {
                    shards,
                    control_threads: 1,
                    io,
                    null_protection: c.is_null(),
                    mtu,
                    data_io,
                },
                backend,
            )
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let groups = servers
        .iter()
        .zip(ciphers)
        .map(|(s, c)| Group {
            server: s.addr(),
            ca: s.ca().to_path_buf(),
            cipher: *c,
            // The null baseline is plaintext whatever the version: its handshake is 1.2.
            version: if c.is_null() { Version::V12 } else { version },
            cid: false,
        })
        .collect();
    Ok((servers, groups))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Core ids 0..n.
    fn ids(n: usize) -> Vec<core_affinity::CoreId> {
        (0..n).map(|id| core_affinity::CoreId { id }).collect()
    }

    #[test]
    fn the_echo_backend_gets_a_core_of_its_own_from_three_cores_and_none_on_two() {
        let auto = BackendPlacement::Auto;
        assert!(backend_core(&ids(1), auto).is_none());
        // Two cores: shard 0 has one, the generator the other; the backend is not pinned.
        assert!(backend_core(&ids(2), auto).is_none());
        // Three or more: neither shard 0's (first) nor the generator's (last).
        assert_eq!(backend_core(&ids(3), auto).map(|c| c.id), Some(1));
        assert_eq!(backend_core(&ids(16), auto).map(|c| c.id), Some(14));
    }

    /// Next to spinning generator threads the echo never takes one of their cores: below
    /// them where a core is left besides shard 0's, else on shard 0's.
    #[test]
    fn the_echo_backend_stays_off_spinning_generators() {
        let spin = |threads| BackendPlacement::OffSpinningGenerators { threads };
        assert_eq!(backend_core(&ids(1), spin(1)).map(|c| c.id), Some(0));
        assert_eq!(backend_core(&ids(2), spin(1)).map(|c| c.id), Some(0));
        assert_eq!(backend_core(&ids(3), spin(1)).map(|c| c.id), Some(1));
        assert_eq!(backend_core(&ids(3), spin(2)).map(|c| c.id), Some(0));
        assert_eq!(backend_core(&ids(16), spin(4)).map(|c| c.id), Some(11));
    }
}
