//! The exposition: every family's name, type, help and labels, encoded by
//! `prometheus-client` in the OpenMetrics text format from one reading of the counters.
//!
//! The families are tables of (name, type, help, field): the names are the sample names
//! Prometheus stores and docs/dtlsd.md lists (`dtlsd_bytes_in_total`); OpenMetrics writes a
//! counter's `# TYPE` and `# HELP` under the name without `_total`, which the encoder adds
//! back to each sample. Values are read by a [`Collector`] at each scrape (relaxed atomic
//! loads), never copied into a registry of their own.

use std::fmt;

use control::CipherSuite;
use dtls_io::IoStats;
use dtls_runtime::{ControlStats, LatencyReading};
use dtls_shard::ShardStats;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use super::process::ProcessStats;
use super::{CertificateReading, Sources};

/// The content type of `/metrics`: OpenMetrics 1.0 text, the format Prometheus asks for
/// first by default.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// One reading of every counter: the control thread's, and each shard's data-plane and
/// listen-socket counters in shard index order, plus the histogram, session mix, process
/// and certificate readings.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// The control thread's counters.
    pub control: ControlStats,
    /// Each shard's counters, in index order.
    pub shards: Vec<(ShardStats, IoStats)>,
    /// Each shard's listen address, in index order (empty: not known).
    pub shard_listen: Vec<std::net::SocketAddr>,
    /// Handshake durations.
    pub latency: LatencyReading,
    /// Installed sessions per suite.
    pub suites: Vec<(CipherSuite, u64)>,
    /// Each handshake worker's counters, in worker order.
    pub workers: Vec<WorkerReading>,
    /// The process (`/proc/self`).
    pub process: ProcessStats,
    /// `(config key, file, earliest notAfter)` of each certificate file in use.
    pub certificates: Vec<CertificateReading>,
    /// The node forwarder's counters, in a fleet.
    pub forwarding: Option<crate::forward::ForwardStats>,
}

/// One handshake worker's counters at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WorkerReading {
    /// Engines it created.
    pub handshakes_started: u64,
    /// Handshakes it completed.
    pub handshakes_completed: u64,
    /// Sessions it holds.
    pub sessions: u64,
    /// Messages waiting in its lanes at its last turn.
    pub backlog: u64,
}

impl Snapshot {
    /// Reads every counter of `sources` now.
    pub fn read(sources: &Sources) -> Self {
        Self {
            control: sources.control.snapshot(),
            shards: sources
                .shards
                .iter()
                .map(|s| (s.shard.snapshot(), s.io.snapshot()))
                .collect(),
            shard_listen: sources.shards.iter().map(|s| s.listen).collect(),
            latency: sources.control.observed.latency(),
            suites: sources.control.observed.sessions_by_suite(),
            workers: sources
                .workers
                .iter()
                .map(|w| {
                    use std::sync::atomic::Ordering::Relaxed;
                    let c = &w.counters;
                    WorkerReading {
                        handshakes_started: c.handshakes_started.load(Relaxed),
                        handshakes_completed: c.handshakes_completed.load(Relaxed),
                        sessions: c.sessions.load(Relaxed),
                        backlog: c.backlog.load(Relaxed),
                    }
                })
                .collect(),
            process: ProcessStats::read(),
            certificates: sources.certificates.read(),
            forwarding: sources.forwarding.as_ref().map(|c| c.snapshot()),
        }
    }
}

/// Where a scrape's values come from.
#[derive(Debug)]
enum Reading {
    /// The running daemon's counters, read at each scrape.
    Live(Sources),
    /// Fixed values (tests, and [`render`]).
    Fixed(Box<Snapshot>),
}

impl Collector for Reading {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> fmt::Result {
        match self {
            Self::Live(sources) => encode(&Snapshot::read(sources), &mut encoder),
            Self::Fixed(snapshot) => encode(snapshot, &mut encoder),
        }
    }
}

/// A registry whose only collector reads `sources` at each scrape.
pub(crate) fn registry(sources: Sources) -> Registry {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Reading::Live(sources)));
    registry
}

/// Encodes `registry` as a complete OpenMetrics text exposition (ending in `# EOF`).
///
/// # Errors
/// Only what the encoder reports (writing to a `String` itself cannot fail).
pub(crate) fn encode_registry(registry: &Registry) -> Result<String, fmt::Error> {
    let mut out = String::with_capacity(16 * 1024);
    prometheus_client::encoding::text::encode(&mut out, registry)?;
    Ok(out)
}

/// Renders the exposition text of one reading of every counter (`shards` in index order).
pub fn render(control: &ControlStats, shards: &[(ShardStats, IoStats)]) -> String {
    render_snapshot(Snapshot {
        control: *control,
        shards: shards.to_vec(),
        ..Snapshot::default()
    })
}

/// Renders the exposition text of `snapshot`.
pub fn render_snapshot(snapshot: Snapshot) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Reading::Fixed(Box::new(snapshot))));
    // Writing to a String cannot fail, and no family here has a name the encoder refuses.
    encode_registry(&registry).unwrap_or_default()
}

/// The name OpenMetrics gives a family of `kind` whose samples are called `name`: a
/// counter's family drops the `_total` its samples carry.
fn family_name(name: &'static str, kind: MetricType) -> &'static str {
    match kind {
        MetricType::Counter => name.strip_suffix("_total").unwrap_or(name),
        _ => name,
    }
}

fn metric_type(kind: &str) -> MetricType {
    if kind == "gauge" {
        MetricType::Gauge
    } else {
        MetricType::Counter
    }
}

/// One sample of `kind` with `value`.
fn sample(
    kind: MetricType,
    value: u64,
    encoder: prometheus_client::encoding::MetricEncoder<'_>,
) -> fmt::Result {
    match kind {
        MetricType::Gauge => ConstGauge::new(value).encode(encoder),
        _ => ConstCounter::new(value).encode(encoder),
    }
}

/// Writes every family of `snapshot`.
fn encode(snapshot: &Snapshot, encoder: &mut DescriptorEncoder<'_>) -> fmt::Result {
    let shards = &snapshot.shards;
    let indices: Vec<String> = (0..shards.len()).map(|i| i.to_string()).collect();
    for &(name, kind, help, field) in SHARD_FAMILIES {
        let kind = metric_type(kind);
        let mut family = encoder.encode_descriptor(family_name(name, kind), help, None, kind)?;
        for ((s, io), index) in shards.iter().zip(&indices) {
            let labels = [("shard", index.as_str())];
            sample(kind, field(s, io), family.encode_family(&labels)?)?;
        }
    }
    for (name, help, reasons) in [
        (
            "dtlsd_drops_total",
            "Datagrams or records the data plane dropped, by reason.",
            DROP_REASONS,
        ),
        (
            "dtlsd_sessions_refused_total",
            "New sessions refused because their upstream socket could not be had, by reason.",
            REFUSAL_REASONS,
        ),
    ] {
        let kind = MetricType::Counter;
        let mut family = encoder.encode_descriptor(family_name(name, kind), help, None, kind)?;
        for ((s, _), index) in shards.iter().zip(&indices) {
            for &(reason, field) in reasons {
                let labels = [("shard", index.as_str()), ("reason", reason)];
                sample(kind, field(s), family.encode_family(&labels)?)?;
            }
        }
    }
    let control = &snapshot.control;
    for &(name, help, field) in CONTROL_FAMILIES {
        let kind = MetricType::Counter;
        let family = encoder.encode_descriptor(family_name(name, kind), help, None, kind)?;
        sample(kind, field(control), family)?;
    }
    let kind = MetricType::Counter;
    let mut family = encoder.encode_descriptor(
        family_name("dtlsd_handshakes_failed_total", kind),
        "Handshakes that failed, by reason.",
        None,
        kind,
    )?;
    for (reason, value) in [
        ("timeout", control.handshakes_failed_timeout),
        ("peer_alert", control.handshakes_failed_peer_alert),
        ("protocol", control.handshakes_failed_protocol),
        ("access_denied", control.handshakes_failed_identity),
    ] {
        sample(kind, value, family.encode_family(&[("reason", reason)])?)?;
    }
    let mut family = encoder.encode_descriptor(
        family_name("dtlsd_handshakes_resumed_total", kind),
        "Completed handshakes that resumed a session from a ticket, by DTLS version.",
        None,
        kind,
    )?;
    for (version, value) in [
        ("1.2", control.handshakes_resumed12),
        ("1.3", control.handshakes_resumed13),
    ] {
        sample(kind, value, family.encode_family(&[("version", version)])?)?;
    }
    let mut family = encoder.encode_descriptor(
        family_name("dtlsd_handshakes_refused_total", kind),
        "Handshakes not started because a cap, the rate or the access lists refused them, by reason.",
        None,
        kind,
    )?;
    for &(reason, field) in HANDSHAKE_REFUSAL_REASONS {
        sample(
            kind,
            field(control),
            family.encode_family(&[("reason", reason)])?,
        )?;
    }
    let family = encoder.encode_descriptor(
        "dtlsd_reassembly_bytes",
        "Bytes handshakes in progress hold in reassembly buffers (of the shared budget).",
        None,
        MetricType::Gauge,
    )?;
    sample(MetricType::Gauge, control.reassembly_bytes, family)?;
    let family = encoder.encode_descriptor(
        "dtlsd_hello_pool_held",
        "Fragmented ClientHellos being put together before any cookie (preallocated pool).",
        None,
        MetricType::Gauge,
    )?;
    sample(MetricType::Gauge, control.hello_pool_held, family)?;
    encode_workers(&snapshot.workers, encoder)?;
    let family =
        encoder.encode_descriptor("dtlsd_shards", "Shards running.", None, MetricType::Gauge)?;
    sample(MetricType::Gauge, shards.len() as u64, family)?;
    let mut family = encoder.encode_descriptor(
        "dtlsd_shard_listen",
        "The listen address each shard's socket is bound to (always 1).",
        None,
        MetricType::Gauge,
    )?;
    for (index, listen) in snapshot.shard_listen.iter().enumerate() {
        let (shard, listen) = (index.to_string(), listen.to_string());
        sample(
            MetricType::Gauge,
            1,
            family.encode_family(&[("shard", shard.as_str()), ("listen", listen.as_str())])?,
        )?;
    }
    if let Some(forwarding) = &snapshot.forwarding {
        encode_forwarding(forwarding, encoder)?;
    }
    encode_observations(snapshot, encoder)
}

/// The node forwarder's families (only in a fleet).
fn encode_forwarding(
    f: &crate::forward::ForwardStats,
    encoder: &mut DescriptorEncoder<'_>,
) -> fmt::Result {
    let kind = MetricType::Counter;
    for (name, help, value) in [
        (
            "dtlsd_forwarded_out_total",
            "Records under a connection ID naming another node, sent to that node.",
            f.out,
        ),
        (
            "dtlsd_forwarded_in_total",
            "Records other nodes forwarded here that authenticated and went to their shard.",
            f.in_,
        ),
    ] {
        let family = encoder.encode_descriptor(family_name(name, kind), help, None, kind)?;
        sample(kind, value, family)?;
    }
    let mut family = encoder.encode_descriptor(
        family_name("dtlsd_forward_drops_total", kind),
        "Node-to-node forwarding drops, by reason.",
        None,
        kind,
    )?;
    for (reason, value) in crate::forward::DROP_REASONS.iter().zip(f.drops) {
        sample(kind, value, family.encode_family(&[("reason", *reason)])?)?;
    }
    Ok(())
}

/// The build, the handshake-duration histogram, sessions by version and suite, certificate
/// expiry and the `process_*` families.
fn encode_observations(snapshot: &Snapshot, encoder: &mut DescriptorEncoder<'_>) -> fmt::Result {
    let mut family = encoder.encode_descriptor(
        "dtlsd_build",
        "The running build: crate version and git commit.",
        None,
        MetricType::Info,
    )?;
    family.encode_info(&[
        ("version", env!("CARGO_PKG_VERSION")),
        ("commit", BUILD_COMMIT),
    ])?;
    let mut family = encoder.encode_descriptor(
        "dtlsd_handshake_duration_seconds",
        "Completed handshakes by how long they took, from the engine's creation (the first \
         cookie-verified ClientHello, or the local source's first datagram) to the keys' \
         hand-over.",
        None,
        MetricType::Histogram,
    )?;
    // The encoder sums the per-bucket counts itself and writes `+Inf` for `f64::MAX`.
    let mut previous = 0;
    let buckets: Vec<(f64, u64)> = snapshot
        .latency
        .buckets
        .iter()
        .map(|&(bound, cumulative)| {
            let n = cumulative - previous.min(cumulative);
            previous = cumulative;
            (if bound.is_finite() { bound } else { f64::MAX }, n)
        })
        .collect();
    family.encode_histogram::<NoLabels>(snapshot.latency.sum, previous, &buckets, None)?;
    let mut family = encoder.encode_descriptor(
        "dtlsd_sessions",
        "Installed sessions by DTLS version and cipher suite.",
        None,
        MetricType::Gauge,
    )?;
    for (suite, n) in &snapshot.suites {
        let version = if suite.tls13_params().is_some() {
            "1.3"
        } else {
            "1.2"
        };
        let name = format!("{suite:?}");
        let labels = [("version", version), ("suite", name.as_str())];
        sample(MetricType::Gauge, *n, family.encode_family(&labels)?)?;
    }
    let mut family = encoder.encode_descriptor(
        "dtlsd_certificate_expiry_timestamp_seconds",
        "Earliest notAfter (Unix seconds) of the certificates in each configured file.",
        None,
        MetricType::Gauge,
    )?;
    for c in &snapshot.certificates {
        let path = c.path.display().to_string();
        let labels = [("key", c.key), ("path", path.as_str())];
        let value = u64::try_from(c.not_after).unwrap_or(0);
        sample(MetricType::Gauge, value, family.encode_family(&labels)?)?;
    }
    encode_process(&snapshot.process, encoder)
}

/// The families every Prometheus client library exposes, under their standard names.
fn encode_process(p: &ProcessStats, encoder: &mut DescriptorEncoder<'_>) -> fmt::Result {
    if let Some(cpu) = p.cpu_seconds {
        let family = encoder.encode_descriptor(
            "process_cpu_seconds",
            "Total user and system CPU time spent in seconds.",
            None,
            MetricType::Counter,
        )?;
        ConstCounter::new(cpu).encode(family)?;
    }
    if let Some(start) = p.start_time_seconds {
        let family = encoder.encode_descriptor(
            "process_start_time_seconds",
            "Start time of the process since unix epoch in seconds.",
            None,
            MetricType::Gauge,
        )?;
        ConstGauge::new(start).encode(family)?;
    }
    for (name, help, value) in [
        (
            "process_resident_memory_bytes",
            "Resident memory size in bytes.",
            p.resident_bytes,
        ),
        (
            "process_virtual_memory_bytes",
            "Virtual memory size in bytes.",
            p.virtual_bytes,
        ),
        (
            "process_open_fds",
            "Number of open file descriptors.",
            p.open_fds,
        ),
        (
            "process_max_fds",
            "Maximum number of open file descriptors.",
            p.max_fds,
        ),
        (
            "process_threads",
            "Number of OS threads in the process.",
            p.threads,
        ),
    ] {
        if let Some(v) = value {
            let family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            sample(MetricType::Gauge, v, family)?;
        }
    }
    Ok(())
}

/// The git commit this binary was built from (`build.rs`), or `unknown`.
const BUILD_COMMIT: &str = env!("DTLSD_GIT_COMMIT");

/// An empty label set for the histogram's exemplars (none are written).
type NoLabels = [(&'static str, &'static str); 0];

/// A per-shard family: one sample per shard, labelled `shard="N"`.
type ShardField = fn(&ShardStats, &IoStats) -> u64;

/// Per-shard families without a reason label: name, type, help, value.
const SHARD_FAMILIES: &[(&str, &str, &str, ShardField)] = &[
    (
        "dtlsd_datagrams_in_total",
        "counter",
        "Datagrams received on the listen socket (serve: DTLS from peers; connect: local plaintext).",
        |s, _| s.datagrams_in,
    ),
    (
        "dtlsd_bytes_in_total",
        "counter",
        "Bytes received on the listen socket.",
        |s, _| s.bytes_in,
    ),
    (
        "dtlsd_datagrams_out_total",
        "counter",
        "Datagrams queued on the listen socket (serve: DTLS to peers; connect: plaintext to local sources).",
        |s, _| s.datagrams_out,
    ),
    (
        "dtlsd_bytes_out_total",
        "counter",
        "Bytes queued on the listen socket.",
        |s, _| s.bytes_out,
    ),
    (
        "dtlsd_upstream_datagrams_out_total",
        "counter",
        "Datagrams sent on upstream sockets (serve: plaintext to the backend; connect: DTLS to the server).",
        |s, _| s.upstream_datagrams_out,
    ),
    (
        "dtlsd_upstream_bytes_out_total",
        "counter",
        "Bytes sent on upstream sockets.",
        |s, _| s.upstream_bytes_out,
    ),
    (
        "dtlsd_upstream_datagrams_in_total",
        "counter",
        "Datagrams received on upstream sockets (serve: backend plaintext; connect: DTLS from the server).",
        |s, _| s.upstream_datagrams_in,
    ),
    (
        "dtlsd_upstream_bytes_in_total",
        "counter",
        "Bytes received on upstream sockets.",
        |s, _| s.upstream_bytes_in,
    ),
    (
        "dtlsd_records_opened_total",
        "counter",
        "Records authenticated and decrypted.",
        |s, _| s.records_opened,
    ),
    (
        "dtlsd_records_sealed_total",
        "counter",
        "Records sealed.",
        |s, _| s.records_sealed,
    ),
    (
        "dtlsd_seal_failures_total",
        "counter",
        "AEAD failures while sealing (internal errors).",
        |s, _| s.seal_failed,
    ),
    (
        "dtlsd_handshake_datagrams_forwarded_total",
        "counter",
        "Datagrams handed to the control thread.",
        |s, _| s.handshake_forwarded,
    ),
    (
        "dtlsd_handshake_datagrams_admitted_total",
        "counter",
        "Of the datagrams handed to the control thread, those of peers whose cookie-verified handshake it holds, staged ahead of the fair stage.",
        |s, _| s.handshake_admitted,
    ),
    (
        "dtlsd_upstream_send_errors_total",
        "counter",
        "Failed sends to the backend.",
        |s, _| s.upstream_send_errors,
    ),
    (
        "dtlsd_upstream_recv_errors_total",
        "counter",
        "Failed receives from the backend.",
        |s, _| s.upstream_recv_errors,
    ),
    (
        "dtlsd_sessions_active",
        "gauge",
        "Sessions in the shard's table now.",
        |s, _| s.sessions_active,
    ),
    (
        "dtlsd_early_bytes",
        "gauge",
        "Bytes of protected datagrams parked for peers whose keys are on their way.",
        |s, _| s.early_bytes,
    ),
    (
        "dtlsd_pending_bytes",
        "gauge",
        "Connect mode: plaintext bytes held for sources waiting for their handshake.",
        |s, _| s.pending_bytes,
    ),
    (
        "dtlsd_handshake_stage_bytes",
        "gauge",
        "Bytes of handshake datagrams waiting in the fair stage for the control thread.",
        |s, _| s.handshake_stage_bytes,
    ),
    (
        "dtlsd_sessions_installed_total",
        "counter",
        "Sessions created from completed handshakes.",
        |s, _| s.sessions_installed,
    ),
    (
        "dtlsd_sessions_rekeyed_total",
        "counter",
        "New keys installed for an existing session.",
        |s, _| s.sessions_rekeyed,
    ),
    (
        "dtlsd_session_install_failures_total",
        "counter",
        "Key installations the shard refused.",
        |s, _| s.install_failed,
    ),
    (
        "dtlsd_sessions_closed_total",
        "counter",
        "Sessions ended by close_notify, fatal alert or control.",
        |s, _| s.sessions_closed,
    ),
    (
        "dtlsd_sessions_expired_total",
        "counter",
        "Sessions removed by the idle sweep.",
        |s, _| s.sessions_expired,
    ),
    (
        "dtlsd_shard_commands_total",
        "counter",
        "Commands taken from the control queue.",
        |s, _| s.commands,
    ),
    (
        "dtlsd_heartbeats_answered_total",
        "counter",
        "HeartbeatRequests from peers answered (RFC 6520).",
        |s, _| s.heartbeats_answered,
    ),
    (
        "dtlsd_post_handshake_forwarded_total",
        "counter",
        "DTLS 1.3 post-handshake messages and ACKs opened by the shard and handed to control.",
        |s, _| s.post_handshake_forwarded,
    ),
    (
        "dtlsd_sessions_moved_total",
        "counter",
        "Sessions whose peer moved to a new address under their connection ID (RFC 9147 §9).",
        |s, _| s.sessions_moved,
    ),
    (
        "dtlsd_rrc_challenges_sent_total",
        "counter",
        "Return-routability check (RFC 9853): path_challenges sent to a peer's new address.",
        |s, _| s.rrc_challenges_sent,
    ),
    (
        "dtlsd_rrc_validated_total",
        "counter",
        "Return-routability checks the new address passed (the session moved).",
        |s, _| s.rrc_validated,
    ),
    (
        "dtlsd_rrc_failed_total",
        "counter",
        "Return-routability checks given up unanswered (the session stayed where it was).",
        |s, _| s.rrc_failed,
    ),
    (
        "dtlsd_rrc_responses_sent_total",
        "counter",
        "path_challenges from peers answered with a path_response (RFC 9853).",
        |s, _| s.rrc_responses_sent,
    ),
    (
        "dtlsd_peer_cid_switches_total",
        "counter",
        "DTLS 1.3: times a peer switched to a later connection ID of ours (issued with NewConnectionId); the earlier ones are retired.",
        |s, _| s.peer_cid_switches,
    ),
    (
        "dtlsd_cids_retired_total",
        "counter",
        "DTLS 1.3: connection IDs of ours retired because the peer switched to a later one.",
        |s, _| s.cids_retired,
    ),
    (
        "dtlsd_cid_rotations_total",
        "counter",
        "DTLS 1.3: times our records switched to a spare connection ID of the peer after an address change.",
        |s, _| s.cid_rotations,
    ),
    (
        "dtlsd_cid_handoffs_total",
        "counter",
        "Records under a connection ID naming another shard, handed to that shard's queue by this one.",
        |s, _| s.cid_handoffs,
    ),
    (
        "dtlsd_cid_forwards_total",
        "counter",
        "Records under a connection ID naming another node, queued for the node forwarder by this shard.",
        |s, _| s.cid_forwards,
    ),
    (
        "dtlsd_keepalive_sent_total",
        "counter",
        "Keepalive HeartbeatRequests sent (first sends and retransmissions).",
        |s, _| s.keepalive_sent,
    ),
    (
        "dtlsd_keepalive_answered_total",
        "counter",
        "Keepalive HeartbeatRequests the peer answered.",
        |s, _| s.keepalive_answered,
    ),
    (
        "dtlsd_sessions_keepalive_timeout_total",
        "counter",
        "Sessions closed because the peer answered no keepalive request.",
        |s, _| s.sessions_keepalive_timeout,
    ),
    (
        "dtlsd_upstream_gso_sends_total",
        "counter",
        "UDP GSO sends on upstream flows (serve: to the backend; connect: to the server), each carrying two or more of one session's datagrams.",
        |s, _| s.upstream_gso_sends,
    ),
    (
        "dtlsd_upstream_send_calls_total",
        "counter",
        "Send calls on upstream flows, GSO or single (datagrams out / send calls = datagrams per send).",
        |s, _| s.upstream_send_calls,
    ),
    (
        "dtlsd_upstream_send_syscalls_total",
        "counter",
        "Kernel calls that carried the upstream sends: one io_uring_enter for every flow's sends of a turn (io_uring), one sendmmsg per flow (mmsg).",
        |s, _| s.upstream_send_syscalls,
    ),
    (
        "dtlsd_upstream_gro_receives_total",
        "counter",
        "Receives on upstream flows that brought two or more datagrams at once (UDP GRO).",
        |s, _| s.upstream_gro_receives,
    ),
    (
        "dtlsd_early_records_parked_total",
        "counter",
        "serve: protected datagrams held while their peer's handshake finished.",
        |s, _| s.early_parked,
    ),
    (
        "dtlsd_early_records_replayed_total",
        "counter",
        "serve: held datagrams opened once the session's keys arrived.",
        |s, _| s.early_replayed,
    ),
    (
        "dtlsd_handshakes_requested_total",
        "counter",
        "connect: handshakes asked of the control thread for new local sources.",
        |s, _| s.handshakes_requested,
    ),
    (
        "dtlsd_io_recv_batches_total",
        "counter",
        "Non-empty receive batches on the listen socket.",
        |_, i| i.recv_batches,
    ),
    (
        "dtlsd_io_recv_datagrams_total",
        "counter",
        "Datagrams in those receive batches.",
        |_, i| i.datagrams_in,
    ),
    (
        "dtlsd_io_send_batches_total",
        "counter",
        "Send flushes that sent at least one datagram.",
        |_, i| i.send_batches,
    ),
    (
        "dtlsd_io_send_datagrams_total",
        "counter",
        "Datagrams the kernel accepted in those flushes.",
        |_, i| i.datagrams_out,
    ),
    (
        "dtlsd_io_gso_sends_total",
        "counter",
        "Sends carrying a UDP GSO segment size.",
        |_, i| i.gso_sends,
    ),
    (
        "dtlsd_io_gso_segments_total",
        "counter",
        "Datagrams sent inside GSO sends.",
        |_, i| i.gso_segments,
    ),
    (
        "dtlsd_io_gro_datagrams_total",
        "counter",
        "GRO super-datagrams received.",
        |_, i| i.gro_datagrams,
    ),
    (
        "dtlsd_io_gro_segments_total",
        "counter",
        "Datagrams received inside GRO super-datagrams.",
        |_, i| i.gro_segments,
    ),
    (
        "dtlsd_io_send_errors_total",
        "counter",
        "Datagrams the kernel refused to send.",
        |_, i| i.send_errors,
    ),
    (
        "dtlsd_io_recv_buffer_exhausted_total",
        "counter",
        "Times the receive path ran out of buffers.",
        |_, i| i.recv_buffer_exhausted,
    ),
    (
        "dtlsd_io_recv_rearms_total",
        "counter",
        "Times the multishot receive was armed again.",
        |_, i| i.recv_rearms,
    ),
    (
        "dtlsd_io_recv_truncated_total",
        "counter",
        "Received datagrams too large for a buffer.",
        |_, i| i.recv_truncated,
    ),
    (
        "dtlsd_io_kernel_drops_total",
        "counter",
        "Datagrams the kernel dropped on the listen socket (SO_RXQ_OVFL).",
        |_, i| i.kernel_drops,
    ),
    (
        "dtlsd_xdp_rx_frames_total",
        "counter",
        "Frames taken off the AF_XDP RX ring (--io xdp).",
        |_, i| i.xdp_rx_frames,
    ),
    (
        "dtlsd_xdp_rx_malformed_total",
        "counter",
        "AF_XDP frames dropped: too short, bad IP version or lengths.",
        |_, i| i.xdp_rx_malformed,
    ),
    (
        "dtlsd_xdp_rx_bad_checksum_total",
        "counter",
        "AF_XDP frames dropped: IPv4 header or UDP checksum wrong.",
        |_, i| i.xdp_rx_bad_checksum,
    ),
    (
        "dtlsd_xdp_rx_not_udp_total",
        "counter",
        "AF_XDP frames dropped: not unfragmented UDP over IPv4/IPv6.",
        |_, i| i.xdp_rx_not_udp,
    ),
    (
        "dtlsd_xdp_rx_not_ours_total",
        "counter",
        "AF_XDP frames dropped: UDP to another port.",
        |_, i| i.xdp_rx_not_ours,
    ),
    (
        "dtlsd_xdp_tx_too_big_total",
        "counter",
        "AF_XDP sends refused as larger than the interface MTU (EMSGSIZE; also in dtlsd_io_send_errors_total).",
        |_, i| i.xdp_tx_too_big,
    ),
    (
        "dtlsd_xdp_tx_no_neighbour_total",
        "counter",
        "AF_XDP sends dropped: no MAC known for the peer and no listen socket to send through (also in dtlsd_io_send_errors_total).",
        |_, i| i.xdp_tx_no_neighbour,
    ),
    (
        "dtlsd_xdp_rx_kernel_total",
        "counter",
        "Datagrams for the DTLS port the XDP program passed to the kernel (IP fragments it reassembled, IPv4 options, IPv6 extension headers), read from the listen socket (also in dtlsd_io_recv_datagrams_total).",
        |_, i| i.xdp_rx_kernel,
    ),
    (
        "dtlsd_xdp_tx_kernel_total",
        "counter",
        "Datagrams sent through the listen socket because no MAC was learned for the peer: the kernel's route and neighbour tables pick the next hop (also in dtlsd_io_send_datagrams_total).",
        |_, i| i.xdp_tx_kernel,
    ),
    (
        "dtlsd_xdp_next_hop_routed_total",
        "counter",
        "Peers whose replies the kernel's route table sends elsewhere than to the MAC their frames came from (another gateway on the link, or another interface through the listen socket): asymmetric routing, looked up once per peer.",
        |_, i| i.xdp_next_hop_routed,
    ),
    (
        "dtlsd_xdp_umem_exhausted_total",
        "counter",
        "AF_XDP sends dropped: no free UMEM frame (also in dtlsd_io_send_errors_total).",
        |_, i| i.xdp_umem_exhausted,
    ),
    (
        "dtlsd_xdp_kernel_fill_ring_empty_total",
        "counter",
        "Frames the kernel dropped for want of a fill-ring buffer (receive-side UMEM exhaustion, XDP_STATISTICS, read once per sweep).",
        |_, i| i.xdp_kernel_fill_ring_empty,
    ),
    (
        "dtlsd_xdp_kernel_rx_ring_full_total",
        "counter",
        "Frames the kernel dropped because the AF_XDP RX ring was full (XDP_STATISTICS).",
        |_, i| i.xdp_kernel_rx_ring_full,
    ),
    (
        "dtlsd_xdp_kernel_rx_dropped_total",
        "counter",
        "Frames the kernel dropped for other reasons, e.g. too large for a UMEM frame (XDP_STATISTICS).",
        |_, i| i.xdp_kernel_rx_dropped,
    ),
];

/// Reads one drop counter of a shard.
type DropField = fn(&ShardStats) -> u64;

/// The `reason` values of `dtlsd_drops_total`.
pub(crate) const DROP_REASONS: &[(&str, DropField)] = &[
    ("malformed", |s| s.drop_malformed),
    ("replay", |s| s.drop_replay),
    ("bad_tag", |s| s.drop_bad_tag),
    ("unknown_session", |s| s.drop_unknown_session),
    ("unknown_epoch", |s| s.drop_unknown_epoch),
    ("retired_epoch", |s| s.drop_retired_epoch),
    ("not_moved", |s| s.drop_not_moved),
    ("retired_cid", |s| s.drop_retired_cid),
    ("handoff_full", |s| s.drop_handoff_full),
    ("forward_full", |s| s.drop_forward_full),
    ("unexpected_content", |s| s.drop_unexpected_content),
    ("queue_full", |s| s.drop_queue_full),
    ("tx_full", |s| s.drop_tx_full),
    ("oversize", |s| s.drop_oversize),
    ("sequence_exhausted", |s| s.drop_sequence_exhausted),
    ("heartbeat", |s| s.drop_heartbeat),
    ("pending", |s| s.drop_pending),
    ("refused", |s| s.drop_refused),
    ("handshake_overflow", |s| s.drop_handshake_overflow),
];

/// The `reason` values of `dtlsd_sessions_refused_total`.
pub(crate) const REFUSAL_REASONS: &[(&str, DropField)] = &[
    ("descriptors", |s| s.sessions_refused_descriptors),
    ("socket", |s| s.sessions_refused_socket),
    ("transparent", |s| s.sessions_refused_transparent),
];

/// The per-worker families (`worker` label) and `dtlsd_control_threads`.
fn encode_workers(workers: &[WorkerReading], encoder: &mut DescriptorEncoder<'_>) -> fmt::Result {
    type WorkerField = fn(&WorkerReading) -> u64;
    let families: [(&str, MetricType, &str, WorkerField); 4] = [
        (
            "dtlsd_control_worker_handshakes_started_total",
            MetricType::Counter,
            "Handshakes started, by handshake worker.",
            |w| w.handshakes_started,
        ),
        (
            "dtlsd_control_worker_handshakes_completed_total",
            MetricType::Counter,
            "Handshakes completed, by handshake worker.",
            |w| w.handshakes_completed,
        ),
        (
            "dtlsd_control_worker_sessions",
            MetricType::Gauge,
            "Installed sessions each handshake worker holds.",
            |w| w.sessions,
        ),
        (
            "dtlsd_control_worker_backlog",
            MetricType::Gauge,
            "Messages waiting for each handshake worker (all shards) at its last turn.",
            |w| w.backlog,
        ),
    ];
    let indices: Vec<String> = (0..workers.len()).map(|i| i.to_string()).collect();
    for (name, kind, help, field) in families {
        let mut family = encoder.encode_descriptor(family_name(name, kind), help, None, kind)?;
        for (w, index) in workers.iter().zip(&indices) {
            sample(
                kind,
                field(w),
                family.encode_family(&[("worker", index.as_str())])?,
            )?;
        }
    }
    let family = encoder.encode_descriptor(
        "dtlsd_control_threads",
        "Handshake worker threads running.",
        None,
        MetricType::Gauge,
    )?;
    sample(MetricType::Gauge, workers.len() as u64, family)
}

/// Reads one control-thread counter.
type ControlField = fn(&ControlStats) -> u64;

/// The `reason` values of `dtlsd_handshakes_refused_total`.
pub(crate) const HANDSHAKE_REFUSAL_REASONS: &[(&str, ControlField)] = &[
    ("max_sessions", |c| c.sessions_refused),
    ("half_open_per_source", |c| c.half_open_refused_source),
    ("draining", |c| c.handshakes_refused_draining),
    ("handshake_rate", |c| c.handshakes_refused_rate),
    ("sessions_per_address", |c| c.sessions_refused_per_address),
    ("denied", |c| c.datagrams_denied),
    ("not_allowed", |c| c.datagrams_not_allowed),
];

/// Control-thread families without labels (all counters): name, help, value.
const CONTROL_FAMILIES: &[(&str, &str, ControlField)] = &[
    (
        "dtlsd_handshakes_started_total",
        "Handshakes started: serve, from a cookie-verified ClientHello; connect, for a new local source.",
        |c| c.handshakes_started,
    ),
    (
        "dtlsd_handshakes_completed_total",
        "Handshakes completed (keys handed to a shard).",
        |c| c.handshakes_completed,
    ),
    (
        "dtlsd_cookies_sent_total",
        "HelloVerifyRequests (and version alerts) sent by the stateless acceptor.",
        |c| c.cookies_sent,
    ),
    (
        "dtlsd_cookies_rejected_total",
        "ClientHellos whose cookie did not verify (forged, altered, expired, or another address's), answered statelessly.",
        |c| c.cookies_rejected,
    ),
    (
        "dtlsd_acceptor_drops_total",
        "Datagrams from unknown peers the acceptor dropped.",
        |c| c.acceptor_drops,
    ),
    (
        "dtlsd_half_open_refused_total",
        "Connect mode: handshakes for new local sources refused at the half-open cap.",
        |c| c.half_open_refused,
    ),
    (
        "dtlsd_handshakes_shed_total",
        "Cookie-verified handshakes shed by an overloaded handshake worker, before any asymmetric crypto.",
        |c| c.handshakes_shed,
    ),
    (
        "dtlsd_half_open_shed_total",
        "Half-open handshakes dropped to make room for newer ones.",
        |c| c.half_open_shed,
    ),
    (
        "dtlsd_sessions_revoked_total",
        "Live sessions closed by a reload (PSK removed, client certificate no longer verifies).",
        |c| c.sessions_revoked,
    ),
    (
        "dtlsd_control_install_failures_total",
        "Sessions a shard reported it could not install.",
        |c| c.install_failed,
    ),
    (
        "dtlsd_hello_pool_evicted_total",
        "Fragmented ClientHellos evicted from the pool before they were complete.",
        |c| c.hello_pool_evicted,
    ),
    (
        "dtlsd_reassembly_refused_total",
        "Handshake fragments not buffered because the shared reassembly budget was spent.",
        |c| c.reassembly_refused,
    ),
    (
        "dtlsd_log_lines_suppressed_total",
        "Handshake-failure and refusal log lines not written (rate limit).",
        |c| c.log_lines_suppressed,
    ),
    (
        "dtlsd_control_commands_dropped_total",
        "Commands to a shard dropped because its queue was full.",
        |c| c.queue_full_drops,
    ),
    (
        "dtlsd_control_sessions_closed_total",
        "Session closes the shards reported to the control thread.",
        |c| c.sessions_closed,
    ),
    (
        "dtlsd_sessions_engine_failed_total",
        "DTLS 1.3 sessions closed because their engine failed on a post-handshake message of the peer (a fatal alert went out).",
        |c| c.sessions_engine_failed,
    ),
    (
        "dtlsd_aead_limits_total",
        "Keys that reached an AEAD limit (DTLS 1.2: session closed; DTLS 1.3: KeyUpdate).",
        |c| c.aead_limits,
    ),
    (
        "dtlsd_post_handshake_total",
        "DTLS 1.3 post-handshake records (KeyUpdate, ACK, ...) handed to the session's engine.",
        |c| c.post_handshake,
    ),
    (
        "dtlsd_post_handshake_dropped_total",
        "DTLS 1.3 post-handshake records dropped (session or engine gone).",
        |c| c.post_handshake_dropped,
    ),
    (
        "dtlsd_peer_cids_spare_total",
        "DTLS 1.3 spare connection IDs of peers (NewConnectionId) handed to a shard for use after address changes.",
        |c| c.peer_cids_spare,
    ),
    (
        "dtlsd_cid_requests_total",
        "DTLS 1.3 requests for more spare connection IDs of a peer (RequestConnectionId) after address changes left fewer than two.",
        |c| c.cid_requests,
    ),
    (
        "dtlsd_cids_issued_total",
        "DTLS 1.3 connection IDs of ours issued to peers after the handshake (NewConnectionId), within 8 unused per peer and 256 per session.",
        |c| c.cids_issued,
    ),
    (
        "dtlsd_cid_retirements_total",
        "DTLS 1.3 retirements of our connection IDs reported by the shards, each answered with fresh spare CIDs within the bounds.",
        |c| c.cid_retirements,
    ),
    (
        "dtlsd_key_updates_total",
        "DTLS 1.3 key updates (new read or write epoch) handed to a shard.",
        |c| c.key_updates,
    ),
    (
        "dtlsd_key_updates_stale_total",
        "DTLS 1.3 KeyUpdates that moved no epoch: sent in an epoch older than the peer's newest (before our ACK of its previous one), acknowledged and ignored.",
        |c| c.key_updates_stale,
    ),
    (
        "dtlsd_ticket_rotations_total",
        "Session-ticket key rotations.",
        |c| c.ticket_rotations,
    ),
    (
        "dtlsd_ticket_rotation_failures_total",
        "Session-ticket key rotations that failed (the current key stays).",
        |c| c.ticket_rotation_failures,
    ),
    (
        "dtlsd_reloads_total",
        "Configurations reloaded on SIGHUP and in use for new handshakes.",
        |c| c.reloads,
    ),
    (
        "dtlsd_reloads_failed_total",
        "Reloaded configurations the engine refused (the previous one stays).",
        |c| c.reloads_failed,
    ),
];

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn sample_value(text: &str, series: &str) -> Option<u64> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    }

    /// Every family's `# TYPE` kind by family name; panics on a sample before its family's
    /// `# HELP` and `# TYPE`, or a sample whose name does not fit its family's kind.
    fn families(text: &str) -> HashMap<String, String> {
        let mut typed = HashMap::new();
        let mut helped = std::collections::HashSet::new();
        let mut lines = text.lines().peekable();
        while let Some(line) = lines.next() {
            if line == "# EOF" {
                assert!(lines.peek().is_none(), "lines after # EOF");
            } else if let Some(rest) = line.strip_prefix("# HELP ") {
                helped.insert(rest.split(' ').next().expect("HELP has a name").to_owned());
            } else if let Some(rest) = line.strip_prefix("# TYPE ") {
                let mut parts = rest.split(' ');
                let name = parts.next().expect("TYPE has a name");
                let kind = parts.next().expect("TYPE has a kind");
                assert!(
                    ["counter", "gauge", "histogram", "info"].contains(&kind),
                    "{line}"
                );
                assert!(
                    name.starts_with("dtlsd_") || name.starts_with("process_"),
                    "{line}"
                );
                assert!(!name.ends_with("_total"), "OpenMetrics family {line}");
                let previous = typed.insert(name.to_owned(), kind.to_owned());
                assert!(previous.is_none(), "family {name} typed twice");
            } else {
                let series = line.split(['{', ' ']).next().expect("sample has a name");
                let typed_as = |suffix: &str, kind: &str| {
                    series
                        .strip_suffix(suffix)
                        .filter(|f| typed.get(*f).is_some_and(|k| k == kind))
                        .map(|f| (f, kind.to_owned()))
                };
                let (family, kind) = typed_as("_total", "counter")
                    .or_else(|| typed_as("_info", "info"))
                    .or_else(|| typed_as("_bucket", "histogram"))
                    .or_else(|| typed_as("_sum", "histogram"))
                    .or_else(|| typed_as("_count", "histogram"))
                    .unwrap_or((series, "gauge".to_owned()));
                let kind = kind.as_str();
                assert_eq!(typed.get(family).map(String::as_str), Some(kind), "{line}");
                assert!(helped.contains(family), "{line}");
            }
        }
        assert_eq!(text.lines().last(), Some("# EOF"));
        typed
    }

    #[test]
    fn render_labels_shards_and_reasons() {
        let control = ControlStats {
            handshakes_completed: 3,
            handshakes_failed_timeout: 2,
            cookies_sent: 5,
            handshakes_refused_rate: 12,
            sessions_refused_per_address: 13,
            datagrams_denied: 14,
            datagrams_not_allowed: 15,
            handshakes_failed_identity: 16,
            handshakes_resumed12: 17,
            handshakes_resumed13: 18,
            ..ControlStats::default()
        };
        let a = ShardStats {
            records_opened: 7,
            drop_replay: 4,
            sessions_active: 1,
            sessions_refused_descriptors: 6,
            ..ShardStats::default()
        };
        let b = ShardStats {
            bytes_in: 99,
            drop_refused: 8,
            ..ShardStats::default()
        };
        let io = IoStats {
            gso_segments: 11,
            ..IoStats::default()
        };
        let text = render(&control, &[(a, io), (b, IoStats::default())]);
        let expect = [
            ("dtlsd_records_opened_total{shard=\"0\"}", 7),
            ("dtlsd_bytes_in_total{shard=\"1\"}", 99),
            ("dtlsd_sessions_active{shard=\"0\"}", 1),
            ("dtlsd_io_gso_segments_total{shard=\"0\"}", 11),
            ("dtlsd_drops_total{shard=\"0\",reason=\"replay\"}", 4),
            ("dtlsd_drops_total{shard=\"1\",reason=\"refused\"}", 8),
            (
                "dtlsd_sessions_refused_total{shard=\"0\",reason=\"descriptors\"}",
                6,
            ),
            (
                "dtlsd_sessions_refused_total{shard=\"1\",reason=\"socket\"}",
                0,
            ),
            ("dtlsd_handshakes_completed_total", 3),
            ("dtlsd_handshakes_failed_total{reason=\"timeout\"}", 2),
            ("dtlsd_cookies_sent_total", 5),
            (
                "dtlsd_handshakes_refused_total{reason=\"handshake_rate\"}",
                12,
            ),
            (
                "dtlsd_handshakes_refused_total{reason=\"sessions_per_address\"}",
                13,
            ),
            ("dtlsd_handshakes_refused_total{reason=\"denied\"}", 14),
            ("dtlsd_handshakes_refused_total{reason=\"not_allowed\"}", 15),
            (
                "dtlsd_handshakes_failed_total{reason=\"access_denied\"}",
                16,
            ),
            ("dtlsd_handshakes_resumed_total{version=\"1.2\"}", 17),
            ("dtlsd_handshakes_resumed_total{version=\"1.3\"}", 18),
            ("dtlsd_shards", 2),
        ];
        for (series, value) in expect {
            assert_eq!(sample_value(&text, series), Some(value), "{series}\n{text}");
        }
    }

    #[test]
    fn every_family_has_help_and_type_before_its_samples() {
        let text = render(
            &ControlStats::default(),
            &[(ShardStats::default(), IoStats::default())],
        );
        let typed = families(&text);
        assert!(typed.len() > 40, "{} families", typed.len());
        assert_eq!(
            typed.get("dtlsd_sessions_active").map(String::as_str),
            Some("gauge")
        );
        assert_eq!(typed.get("dtlsd_shards").map(String::as_str), Some("gauge"));
        assert_eq!(
            typed.get("dtlsd_drops").map(String::as_str),
            Some("counter")
        );
    }

    #[test]
    fn counter_names_end_in_total_and_gauges_do_not() {
        for &(name, kind, _, _) in SHARD_FAMILIES {
            assert_eq!(kind == "counter", name.ends_with("_total"), "{name}");
            assert!(kind == "counter" || kind == "gauge", "{name}");
        }
        for &(name, _, _) in CONTROL_FAMILIES {
            assert!(name.ends_with("_total"), "{name}");
        }
    }

    /// A snapshot with every optional family present.
    fn full_snapshot() -> Snapshot {
        let observed = dtls_runtime::Observed::default();
        Snapshot {
            control: ControlStats::default(),
            shards: vec![(ShardStats::default(), IoStats::default())],
            shard_listen: vec![std::net::SocketAddr::from(([127, 0, 0, 1], 4433))],
            latency: observed.latency(),
            suites: observed.sessions_by_suite(),
            workers: vec![WorkerReading::default(); 2],
            process: ProcessStats::read(),
            certificates: vec![CertificateReading {
                key: "cert",
                path: "/etc/dtlsd/server.pem".into(),
                not_after: 1_900_000_000,
            }],
            forwarding: Some(crate::forward::ForwardStats::default()),
        }
    }

    #[test]
    fn build_histogram_sessions_certificates_and_process_families() {
        let mut snapshot = full_snapshot();
        snapshot.latency = LatencyReading {
            buckets: dtls_runtime::HANDSHAKE_BUCKETS
                .iter()
                .copied()
                .chain([f64::INFINITY])
                .enumerate()
                .map(|(i, b)| (b, if i < 3 { 1 } else { 4 }))
                .collect(),
            sum: 0.5,
        };
        snapshot.suites = vec![
            (CipherSuite::EcdheEcdsaAes128GcmSha256, 3),
            (CipherSuite::Tls13Aes128GcmSha256, 2),
        ];
        let text = render_snapshot(snapshot);
        families(&text);
        assert!(
            text.contains(&format!(
                "dtlsd_build_info{{version=\"{}\",commit=\"{BUILD_COMMIT}\"}} 1",
                env!("CARGO_PKG_VERSION")
            )),
            "{text}"
        );
        for (series, value) in [
            ("dtlsd_handshake_duration_seconds_bucket{le=\"0.001\"}", 1),
            ("dtlsd_handshake_duration_seconds_bucket{le=\"0.01\"}", 4),
            ("dtlsd_handshake_duration_seconds_bucket{le=\"+Inf\"}", 4),
            ("dtlsd_handshake_duration_seconds_count", 4),
            (
                "dtlsd_sessions{version=\"1.2\",suite=\"EcdheEcdsaAes128GcmSha256\"}",
                3,
            ),
            (
                "dtlsd_sessions{version=\"1.3\",suite=\"Tls13Aes128GcmSha256\"}",
                2,
            ),
            (
                "dtlsd_certificate_expiry_timestamp_seconds{key=\"cert\",path=\"/etc/dtlsd/server.pem\"}",
                1_900_000_000,
            ),
        ] {
            assert_eq!(sample_value(&text, series), Some(value), "{series}\n{text}");
        }
        assert!(
            text.contains("dtlsd_handshake_duration_seconds_sum 0.5"),
            "{text}"
        );
        assert!(text.contains("\nprocess_resident_memory_bytes "), "{text}");
        assert!(text.contains("\nprocess_cpu_seconds_total "), "{text}");
    }

    /// docs/grafana/dtlsd.json: every series a panel's query names is one the daemon
    /// exposes (a renamed metric must not leave an empty panel behind).
    #[test]
    fn every_dashboard_query_names_an_exposed_metric() {
        let dashboard: serde_json::Value =
            serde_json::from_str(include_str!("../../../../docs/grafana/dtlsd.json"))
                .expect("the dashboard is JSON");
        let text = render_snapshot(full_snapshot());
        let exposed: std::collections::HashSet<&str> = text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| l.split(['{', ' ']).next())
            .collect();
        let mut queries = 0;
        for panel in dashboard["panels"].as_array().expect("panels") {
            for target in panel["targets"].as_array().expect("targets") {
                let expr = target["expr"].as_str().expect("expr");
                queries += 1;
                let names = expr
                    .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .filter(|w| w.starts_with("dtlsd_") || w.starts_with("process_"));
                let mut any = false;
                for name in names {
                    any = true;
                    assert!(
                        exposed.contains(name),
                        "panel {:?} queries {name}, which dtlsd does not expose",
                        panel["title"]
                    );
                }
                assert!(any, "a query that names no metric: {expr}");
            }
        }
        assert!(queries >= 20, "{queries} queries");
        let variables = dashboard["templating"]["list"].to_string();
        assert!(variables.contains("dtlsd_build_info"), "{variables}");
    }

    /// docs/operations.md names only metrics the daemon exposes (its alerts and checks
    /// would otherwise watch nothing).
    #[test]
    fn every_metric_the_operations_guide_names_is_exposed() {
        let guide = include_str!("../../../../docs/operations.md");
        let text = render_snapshot(full_snapshot());
        let exposed: std::collections::HashSet<&str> = text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| l.split(['{', ' ']).next())
            .collect();
        let named: Vec<&str> = guide
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|w| w.starts_with("dtlsd_") && w.len() > "dtlsd_".len())
            // Not a metric: the package's file name pattern (dtlsd_VERSION-1_ARCH.deb).
            .filter(|w| !w.bytes().any(|b| b.is_ascii_uppercase()))
            .collect();
        assert!(named.len() >= 8, "{named:?}");
        for name in named {
            assert!(
                exposed.contains(name),
                "docs/operations.md names {name}, which dtlsd does not expose"
            );
        }
    }

    #[test]
    fn every_family_and_reason_is_documented() {
        let docs = include_str!("../../../../docs/dtlsd.md");
        let text = render_snapshot(full_snapshot());
        for (family, kind) in families(&text) {
            let name = match kind.as_str() {
                "counter" => format!("{family}_total"),
                "info" => format!("{family}_info"),
                _ => family,
            };
            assert!(
                docs.contains(&format!("| `{name}` |")),
                "{name} is not in docs/dtlsd.md's metrics table"
            );
        }
        let control_reasons = HANDSHAKE_REFUSAL_REASONS.iter().map(|(r, _)| r);
        for reason in DROP_REASONS
            .iter()
            .chain(REFUSAL_REASONS)
            .map(|(r, _)| r)
            .chain(control_reasons)
        {
            assert!(
                docs.contains(&format!("`{reason}` (")),
                "reason {reason} is not explained in docs/dtlsd.md"
            );
        }
    }
}
