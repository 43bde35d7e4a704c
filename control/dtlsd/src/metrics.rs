//! The `--metrics` endpoint: Prometheus text (exposition format 0.0.4) at `/metrics` and a
//! liveness answer at `/healthz`, served by one plain std thread.
//!
//! What it does: accepts one TCP connection at a time, reads one bounded HTTP/1.1 request
//! (at most [`MAX_REQUEST`] bytes, each read and write under [`IO_TIMEOUT`]), answers and
//! closes. `/metrics` renders the control thread's counters and every shard's data-plane
//! and I/O counters from the `Arc` handles the shards share ([`Sources`]); reading them is
//! a handful of relaxed atomic loads, so the endpoint never blocks or slows a shard.
//!
//! What it does not do: keep-alive, chunked bodies, TLS, more than one client at a time,
//! or histograms (I/O batch sizes are exposed as batch and datagram counters, whose ratio
//! is the mean batch size).

use std::fmt::Write as _;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::thread::JoinHandle;
use std::time::Duration;

use control::runtime::{ControlCounters, ControlStats};
use dtls_io::{IoCounters, IoStats};
use dtls_shard::{ShardCounters, ShardStats};

/// Largest request head read before answering 431.
pub const MAX_REQUEST: usize = 8 * 1024;
/// Read and write timeout of one connection.
pub const IO_TIMEOUT: Duration = Duration::from_secs(2);
/// How often the idle accept loop looks at the stop flag.
const ACCEPT_POLL: Duration = Duration::from_millis(50);
/// The exposition format's content type.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Errors of the metrics endpoint.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The listen address could not be bound (in use, not local, no permission).
    #[error("cannot serve metrics on {addr}: {source}")]
    Bind {
        /// The `--metrics` address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The server thread could not be started.
    #[error("cannot start the metrics thread: {0}")]
    Spawn(#[source] std::io::Error),
}

/// The counters of one shard: its data-plane counters and its listen socket's I/O counters.
#[derive(Debug, Clone)]
pub struct ShardSource {
    /// The shard's own counters.
    pub shard: Arc<ShardCounters>,
    /// The shard's listen-socket I/O counters.
    pub io: Arc<IoCounters>,
}

/// Everything `/metrics` reports.
#[derive(Debug, Clone)]
pub struct Sources {
    /// The control thread's counters.
    pub control: Arc<ControlCounters>,
    /// One entry per shard, in shard index order.
    pub shards: Vec<ShardSource>,
}

impl Sources {
    /// Reads every counter now and renders the exposition text.
    pub fn render(&self) -> String {
        let shards: Vec<(ShardStats, IoStats)> = self
            .shards
            .iter()
            .map(|s| (s.shard.snapshot(), s.io.snapshot()))
            .collect();
        render(&self.control.snapshot(), &shards)
    }
}

/// A bound, not yet serving, metrics listener: binding comes first so that a bad address
/// stops startup before any shard runs.
#[derive(Debug)]
pub struct Listener {
    inner: TcpListener,
    addr: SocketAddr,
}

impl Listener {
    /// Binds `addr`.
    ///
    /// # Errors
    /// [`Error::Bind`] naming the address.
    pub fn bind(addr: SocketAddr) -> Result<Self, Error> {
        let bind = |source| Error::Bind { addr, source };
        let inner = TcpListener::bind(addr).map_err(bind)?;
        inner.set_nonblocking(true).map_err(bind)?;
        let addr = inner.local_addr().map_err(bind)?;
        Ok(Self { inner, addr })
    }

    /// The bound address (the real port when `addr` asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves on a thread named `dtlsd-metrics` until `stop` is set.
    ///
    /// # Errors
    /// [`Error::Spawn`] when the thread cannot start.
    pub fn spawn(self, sources: Sources, stop: Arc<AtomicBool>) -> Result<JoinHandle<()>, Error> {
        std::thread::Builder::new()
            .name("dtlsd-metrics".into())
            .spawn(move || self.serve(&sources, &stop))
            .map_err(Error::Spawn)
    }

    fn serve(self, sources: &Sources, stop: &AtomicBool) {
        while !stop.load(Relaxed) {
            match self.inner.accept() {
                Ok((stream, _)) => {
                    if let Err(e) = handle_connection(stream, sources) {
                        tracing::debug!(error = %e, "metrics request failed");
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => std::thread::sleep(ACCEPT_POLL),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => {
                    // EMFILE and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "metrics accept failed");
                    std::thread::sleep(ACCEPT_POLL);
                }
            }
        }
    }
}

/// One request, one response, then the connection closes.
fn handle_connection(mut stream: TcpStream, sources: &Sources) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    let response = match read_head(&mut stream)? {
        None => respond(
            431,
            "Request Header Fields Too Large",
            "text/plain",
            "too large\n",
        ),
        Some(head) => route(&head, sources),
    };
    stream.write_all(&response)?;
    stream.flush()
}

/// Reads up to the blank line ending the request head; `None` when it exceeds
/// [`MAX_REQUEST`]. A connection closed early yields what arrived.
fn read_head(stream: &mut TcpStream) -> std::io::Result<Option<Vec<u8>>> {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    loop {
        if head.windows(4).any(|w| w == b"\r\n\r\n") || head.windows(2).any(|w| w == b"\n\n") {
            return Ok(Some(head));
        }
        if head.len() > MAX_REQUEST {
            return Ok(None);
        }
        let n = stream.read(&mut buf)?;
        if n == 0 {
            return Ok(Some(head));
        }
        head.extend_from_slice(&buf[..n]);
    }
}

/// The response to one request head.
fn route(head: &[u8], sources: &Sources) -> Vec<u8> {
    let line = head.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut parts = line.split_whitespace();
    let (Some(method), Some(target)) = (parts.next(), parts.next()) else {
        return respond(400, "Bad Request", "text/plain", "bad request\n");
    };
    let path = target.split('?').next().unwrap_or_default();
    if method != "GET" {
        return respond(405, "Method Not Allowed", "text/plain", "only GET\n");
    }
    match path {
        "/metrics" => respond(200, "OK", CONTENT_TYPE, &sources.render()),
        "/healthz" => respond(200, "OK", "text/plain", "ok\n"),
        _ => respond(404, "Not Found", "text/plain", "not found\n"),
    }
}

fn respond(code: u16, reason: &str, content_type: &str, body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Writes one metric family: `# HELP`, `# TYPE` and its samples.
struct Family<'a> {
    out: &'a mut String,
    name: &'static str,
}

impl<'a> Family<'a> {
    fn new(out: &'a mut String, name: &'static str, kind: &str, help: &str) -> Self {
        // Writing to a String cannot fail.
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        Self { out, name }
    }

    /// One sample; `labels` are `(name, value)` pairs whose values need no escaping.
    fn sample(&mut self, labels: &[(&str, &str)], value: u64) {
        let _ = write!(self.out, "{}", self.name);
        if !labels.is_empty() {
            let inner: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
            let _ = write!(self.out, "{{{}}}", inner.join(","));
        }
        let _ = writeln!(self.out, " {value}");
    }
}

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
        "serve: UDP GSO sends to the backend, each carrying two or more of one session's datagrams.",
        |s, _| s.upstream_gso_sends,
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
];

/// The `reason` values of `dtlsd_drops_total`.
/// Reads one drop counter of a shard.
type DropField = fn(&ShardStats) -> u64;

const DROP_REASONS: &[(&str, DropField)] = &[
    ("malformed", |s| s.drop_malformed),
    ("replay", |s| s.drop_replay),
    ("bad_tag", |s| s.drop_bad_tag),
    ("unknown_session", |s| s.drop_unknown_session),
    ("unknown_epoch", |s| s.drop_unknown_epoch),
    ("unexpected_content", |s| s.drop_unexpected_content),
    ("queue_full", |s| s.drop_queue_full),
    ("tx_full", |s| s.drop_tx_full),
    ("oversize", |s| s.drop_oversize),
    ("sequence_exhausted", |s| s.drop_sequence_exhausted),
    ("heartbeat", |s| s.drop_heartbeat),
    ("pending", |s| s.drop_pending),
];

/// Control-thread families without labels.
/// Reads one control-thread counter.
type ControlField = fn(&ControlStats) -> u64;

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
        "dtlsd_acceptor_drops_total",
        "Datagrams from unknown peers the acceptor dropped.",
        |c| c.acceptor_drops,
    ),
    (
        "dtlsd_half_open_refused_total",
        "Cookie-verified ClientHellos refused at the half-open cap.",
        |c| c.half_open_refused,
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
        "dtlsd_aead_limits_total",
        "Sessions closed because a key reached an AEAD limit.",
        |c| c.aead_limits,
    ),
    (
        "dtlsd_handshakes_resumed_total",
        "Completed handshakes that resumed a session from a ticket.",
        |c| c.handshakes_resumed,
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

/// Renders the exposition text from one reading of every counter (`shards` in index order).
pub fn render(control: &ControlStats, shards: &[(ShardStats, IoStats)]) -> String {
    let mut out = String::with_capacity(8 * 1024);
    let indices: Vec<String> = (0..shards.len()).map(|i| i.to_string()).collect();
    for &(name, kind, help, field) in SHARD_FAMILIES {
        let mut f = Family::new(&mut out, name, kind, help);
        for ((s, io), index) in shards.iter().zip(&indices) {
            f.sample(&[("shard", index)], field(s, io));
        }
    }
    let mut f = Family::new(
        &mut out,
        "dtlsd_drops_total",
        "counter",
        "Datagrams or records the data plane dropped, by reason.",
    );
    for ((s, _), index) in shards.iter().zip(&indices) {
        for &(reason, field) in DROP_REASONS {
            f.sample(&[("shard", index), ("reason", reason)], field(s));
        }
    }
    for &(name, help, field) in CONTROL_FAMILIES {
        Family::new(&mut out, name, "counter", help).sample(&[], field(control));
    }
    let mut f = Family::new(
        &mut out,
        "dtlsd_handshakes_failed_total",
        "counter",
        "Handshakes that failed, by reason.",
    );
    f.sample(&[("reason", "timeout")], control.handshakes_failed_timeout);
    f.sample(
        &[("reason", "peer_alert")],
        control.handshakes_failed_peer_alert,
    );
    f.sample(
        &[("reason", "protocol")],
        control.handshakes_failed_protocol,
    );
    Family::new(&mut out, "dtlsd_shards", "gauge", "Shards running.")
        .sample(&[], shards.len() as u64);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_value(text: &str, series: &str) -> Option<u64> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    }

    #[test]
    fn render_labels_shards_and_reasons() {
        let control = ControlStats {
            handshakes_completed: 3,
            handshakes_failed_timeout: 2,
            cookies_sent: 5,
            ..ControlStats::default()
        };
        let a = ShardStats {
            records_opened: 7,
            drop_replay: 4,
            sessions_active: 1,
            ..ShardStats::default()
        };
        let b = ShardStats {
            bytes_in: 99,
            ..ShardStats::default()
        };
        let io = IoStats {
            gso_segments: 11,
            ..IoStats::default()
        };
        let text = render(&control, &[(a, io), (b, IoStats::default())]);
        assert_eq!(
            sample_value(&text, "dtlsd_records_opened_total{shard=\"0\"}"),
            Some(7)
        );
        assert_eq!(
            sample_value(&text, "dtlsd_bytes_in_total{shard=\"1\"}"),
            Some(99)
        );
        assert_eq!(
            sample_value(&text, "dtlsd_sessions_active{shard=\"0\"}"),
            Some(1)
        );
        assert_eq!(
            sample_value(&text, "dtlsd_io_gso_segments_total{shard=\"0\"}"),
            Some(11)
        );
        assert_eq!(
            sample_value(&text, "dtlsd_drops_total{shard=\"0\",reason=\"replay\"}"),
            Some(4)
        );
        assert_eq!(
            sample_value(&text, "dtlsd_handshakes_completed_total"),
            Some(3)
        );
        assert_eq!(
            sample_value(&text, "dtlsd_handshakes_failed_total{reason=\"timeout\"}"),
            Some(2)
        );
        assert_eq!(sample_value(&text, "dtlsd_cookies_sent_total"), Some(5));
        assert_eq!(sample_value(&text, "dtlsd_shards"), Some(2));
    }

    #[test]
    fn every_family_has_help_and_type_before_its_samples() {
        let text = render(
            &ControlStats::default(),
            &[(ShardStats::default(), IoStats::default())],
        );
        let mut typed = std::collections::HashSet::new();
        let mut helped = std::collections::HashSet::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                helped.insert(rest.split(' ').next().expect("HELP has a name").to_owned());
            } else if let Some(rest) = line.strip_prefix("# TYPE ") {
                let mut parts = rest.split(' ');
                let name = parts.next().expect("TYPE has a name");
                let kind = parts.next().expect("TYPE has a kind");
                assert!(kind == "counter" || kind == "gauge", "{line}");
                assert_eq!(kind == "counter", name.ends_with("_total"), "{line}");
                assert!(name.starts_with("dtlsd_"), "{line}");
                assert!(typed.insert(name.to_owned()), "family {name} typed twice");
            } else {
                let name = line.split(['{', ' ']).next().expect("sample has a name");
                assert!(typed.contains(name) && helped.contains(name), "{line}");
            }
        }
        assert!(typed.len() > 40, "{} families", typed.len());
    }

    #[test]
    fn every_family_and_drop_reason_is_documented() {
        let docs = include_str!("../../../docs/dtlsd.md");
        let text = render(
            &ControlStats::default(),
            &[(ShardStats::default(), IoStats::default())],
        );
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let name = rest.split(' ').next().expect("TYPE has a name");
                assert!(
                    docs.contains(&format!("| `{name}` |")),
                    "{name} is not in docs/dtlsd.md's metrics table"
                );
            }
        }
        for (reason, _) in DROP_REASONS {
            assert!(
                docs.contains(&format!("`{reason}` (")),
                "drop reason {reason} is not explained in docs/dtlsd.md"
            );
        }
    }

    #[test]
    fn routes_answer_by_path_and_method() {
        let sources = Sources {
            control: Arc::new(ControlCounters::default()),
            shards: vec![],
        };
        let status = |head: &[u8]| {
            let r = String::from_utf8(route(head, &sources)).expect("utf-8 response");
            r.lines().next().expect("status line").to_owned()
        };
        assert_eq!(status(b"GET /healthz HTTP/1.1\r\n\r\n"), "HTTP/1.1 200 OK");
        assert_eq!(
            status(b"GET /metrics?x=1 HTTP/1.1\r\n\r\n"),
            "HTTP/1.1 200 OK"
        );
        assert_eq!(
            status(b"GET /nope HTTP/1.1\r\n\r\n"),
            "HTTP/1.1 404 Not Found"
        );
        assert_eq!(
            status(b"POST /metrics HTTP/1.1\r\n\r\n"),
            "HTTP/1.1 405 Method Not Allowed"
        );
        assert_eq!(status(b"\r\n\r\n"), "HTTP/1.1 400 Bad Request");
    }
}
