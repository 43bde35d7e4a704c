//! The record-level MITM (issue 18, Adversarial checklist): a local source → `dtlsd connect`
//! → our proxy ([`common::mitm`]) → `dtlsd serve` → a backend that records and echoes what
//! it receives. One test per manipulation, for DTLS 1.2 and DTLS 1.3 (connection IDs on, as
//! by default), each with a fixed seed printed in its output.
//!
//! Every test asserts what the backend got: each application payload exactly once, byte for
//! byte, and nothing else (the injected plaintext canary never); what the source got back:
//! each echo exactly once, unaltered; one session on each side (the manipulation did not
//! break it); and the proxy's counters show the manipulation happened.
//!
//! Every wait has a deadline only for liveness (generous); daemons are killed on drop.

mod common;

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use common::mitm::{CANARY, Manipulation, Mitm, MitmStats};
use common::probe::RecordingBackend;
use common::{Daemon, TempDir, certs};

/// serve's default CID length (what the client puts in its records toward the server).
const SERVE_CID_LEN: usize = 8;
/// Payloads after the first (which starts the handshake), sent in bursts.
const BURSTS: usize = 5;
const BURST: usize = 8;
/// Liveness only: a manipulated handshake on a loaded 2-core machine.
const LIVENESS: Duration = Duration::from_secs(90);
/// How long duplicates and replays get to show up once everything arrived.
const SETTLE: Duration = Duration::from_millis(500);

/// Payload `i`: its number, then a pattern of it, 24 to 1200 bytes.
fn payload(i: usize) -> Vec<u8> {
    let len = 24 + (i * 389) % 1177;
    let mut p = format!("payload {i:04} ").into_bytes();
    p.extend((p.len()..len).map(|j| (j as u8).wrapping_mul(7) ^ i as u8));
    p
}

/// How often each of `got` appears; fails on anything not in `sent`.
fn tally(
    what: &str,
    got: &[Vec<u8>],
    sent: &[Vec<u8>],
    context: &dyn Fn() -> String,
) -> Vec<usize> {
    let index: HashMap<&[u8], usize> = sent
        .iter()
        .enumerate()
        .map(|(i, p)| (p.as_slice(), i))
        .collect();
    let mut counts = vec![0; sent.len()];
    for g in got {
        assert!(
            !g.windows(CANARY.len()).any(|w| w == CANARY),
            "{what}: the injected plaintext canary came through\n{}",
            context()
        );
        let Some(&i) = index.get(g.as_slice()) else {
            panic!(
                "{what}: a datagram that was never sent ({} bytes: {:?}...)\n{}",
                g.len(),
                &g[..g.len().min(32)],
                context()
            );
        };
        counts[i] += 1;
    }
    counts
}

/// The source's socket: sends payloads to `dtlsd connect`, collects the echoes.
struct Source {
    sock: UdpSocket,
    echoes: Vec<Vec<u8>>,
}

impl Source {
    fn new(entry: SocketAddr) -> Self {
        let sock = UdpSocket::bind("127.0.0.1:0").expect("bind source");
        sock.connect(entry).expect("connect source");
        sock.set_read_timeout(Some(Duration::from_millis(10)))
            .expect("read timeout");
        Self {
            sock,
            echoes: Vec::new(),
        }
    }

    fn drain(&mut self) {
        let mut buf = vec![0u8; 65_536];
        while let Ok(n) = self.sock.recv(&mut buf) {
            self.echoes.push(buf[..n].to_vec());
        }
    }

    /// Waits until the backend has each of `sent` and every echo came back (liveness bound).
    fn wait_all(
        &mut self,
        backend: &RecordingBackend,
        sent: &[Vec<u8>],
        context: &dyn Fn() -> String,
    ) {
        let deadline = Instant::now() + LIVENESS;
        loop {
            self.drain();
            let got = backend.received();
            let delivered = sent.iter().all(|p| got.contains(p));
            let echoed = sent.iter().all(|p| self.echoes.contains(p));
            if delivered && echoed {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "not every payload made it through (delivered {delivered}, echoed {echoed}; \
                 backend has {} of {})\n{}",
                sent.iter().filter(|p| got.contains(p)).count(),
                sent.len(),
                context()
            );
        }
    }
}

/// The whole run of one manipulation for one version; returns the proxy's counters and
/// `serve`'s drop counters for the sum of `reasons` (what the manipulation should show up as).
fn run(version: &str, manipulation: Manipulation, seed: u64, reasons: &[&str]) -> (MitmStats, u64) {
    run_with(version, manipulation, seed, reasons, &[], "info")
}

/// [`run`] with `extra` arguments for both daemons (`--no-connection-id`: no CIDs) and
/// both daemons' log filter (`RUST_LOG`).
fn run_with(
    version: &str,
    manipulation: Manipulation,
    seed: u64,
    reasons: &[&str],
    extra: &[&str],
    log: &str,
) -> (MitmStats, u64) {
    // MITM_SEED overrides the test's seed (to explore; each test's own seed is what CI runs).
    let seed = std::env::var("MITM_SEED")
        .ok()
        .and_then(|s| u64::from_str_radix(s.trim_start_matches("0x"), 16).ok())
        .unwrap_or(seed);
    println!("mitm {manipulation:?} DTLS {version} seed {seed:#x}");
    let pki = TempDir::new(&format!("mitm-{version}-{manipulation:?}"));
    certs(&pki);
    let backend = RecordingBackend::echoing();
    let mut tuning = vec!["--shards", "1", "--versions", version];
    tuning.extend(extra);
    let cid_len = if extra.contains(&"--no-connection-id") {
        0
    } else {
        SERVE_CID_LEN
    };
    let env = [("RUST_LOG", log)];
    let serve = Daemon::start_serve_with_metrics_env(backend.addr, &pki, &tuning, &env);
    let mitm = Mitm::start(serve.listen, manipulation, seed, cid_len);
    let connect = Daemon::start_connect_env(mitm.addr, &pki, &tuning, &env);
    let context = || {
        let (_, metrics) = common::http_get(serve.metrics(), "/metrics");
        let counters: Vec<&str> = metrics
            .lines()
            .filter(|l| !l.starts_with('#') && (l.contains("drops") || l.contains("handshake")))
            .filter(|l| !l.ends_with(" 0"))
            .collect();
        format!(
            "proxy: {:?}\n--- serve counters:\n{}\n--- serve:\n{}\n--- connect:\n{}",
            mitm.stats(),
            counters.join("\n"),
            serve.log(),
            connect.log()
        )
    };
    let mut source = Source::new(connect.listen);

    // The first payload starts the handshake (connect queues it until the keys are in).
    let mut sent = vec![payload(0)];
    source.sock.send(&sent[0]).expect("send");
    source.wait_all(&backend, &sent, &context);
    // Both sides are established (data went through and came back).
    mitm.arm();
    for b in 0..BURSTS {
        let burst: Vec<Vec<u8>> = (0..BURST).map(|i| payload(1 + b * BURST + i)).collect();
        for p in &burst {
            source.sock.send(p).expect("send");
        }
        sent.extend(burst);
        source.wait_all(&backend, &sent, &context);
    }

    // A late replay of the whole conversation, then one more payload through the same
    // session: the replays are refused and the session is still up.
    if manipulation == Manipulation::DelayReplay {
        let replayed = mitm.replay_history();
        assert!(replayed > 0);
        let last = payload(9999);
        source.sock.send(&last).expect("send");
        sent.push(last);
        source.wait_all(&backend, &sent, &context);
    }

    std::thread::sleep(SETTLE);
    source.drain();
    let at_backend = tally("backend", &backend.received(), &sent, &context);
    let at_source = tally("source", &source.echoes, &sent, &context);
    for (i, (b, s)) in at_backend.iter().zip(&at_source).enumerate() {
        assert_eq!(
            *b,
            1,
            "payload {i} reached the backend {b} times\n{}",
            context()
        );
        assert_eq!(*s, 1, "payload {i} came back {s} times\n{}", context());
    }

    // Nothing of the canary is logged either (Operational: never forwarded or logged).
    if log == "trace" {
        // The filter took: serve's debug lines (a shard pinned to its core) are there.
        assert!(serve.log().contains("shard pinned"), "{}", context());
    }
    let canary = String::from_utf8_lossy(CANARY);
    for (who, log) in [("serve", serve.log()), ("connect", connect.log())] {
        assert!(
            !log.contains(&*canary),
            "{who} logged the canary\n{}",
            context()
        );
    }

    // One session each side: the manipulation neither broke nor duplicated it.
    let established = format!("version={version}");
    for (who, log) in [("serve", serve.log()), ("connect", connect.log())] {
        let n = log
            .lines()
            .filter(|l| l.contains("session established"))
            .count();
        assert_eq!(n, 1, "{who}: {n} sessions established\n{}", context());
        assert!(log.contains(&established), "{who}\n{}", context());
    }
    let stats = mitm.stats();
    let dropped = reasons.iter().map(|r| drops(&serve, r)).sum();
    println!("proxy: {stats:?}; serve drops {reasons:?}: {dropped}");
    (stats, dropped)
}

/// The sum of `dtlsd_drops_total{shard="0",reason=...}` on a daemon started with one shard.
fn drops(serve: &Daemon, reason: &str) -> u64 {
    serve
        .metric(&format!(
            "dtlsd_drops_total{{shard=\"0\",reason=\"{reason}\"}}"
        ))
        .unwrap_or(0)
}

// ---------- Loss / reorder: duplicate every datagram ----------

fn duplicate_every_datagram(version: &str) {
    let (s, dropped) = run(version, Manipulation::Duplicate, 0xd0_0001, &["replay"]);
    assert!(
        dropped > 0,
        "no duplicate refused by the replay window: {s:?}"
    );
    assert!(s.duplicated > 2 * (1 + BURSTS * BURST) as u64, "{s:?}");
}

#[test]
fn duplicate_every_datagram_delivers_each_payload_once_dtls12() {
    duplicate_every_datagram("1.2");
}

#[test]
fn duplicate_every_datagram_delivers_each_payload_once_dtls13() {
    duplicate_every_datagram("1.3");
}

// ---------- Record layer: replay of every record [replays delivered: 0] ----------

fn replay_of_every_record(version: &str) {
    let (s, dropped) = run(version, Manipulation::DelayReplay, 0x4e_0002, &["replay"]);
    assert!(dropped > 0, "no replay refused by the replay window: {s:?}");
    assert!(s.replayed > s.records_in, "{s:?}");
}

#[test]
fn replay_of_every_record_delivers_no_replay_dtls12() {
    replay_of_every_record("1.2");
}

#[test]
fn replay_of_every_record_delivers_no_replay_dtls13() {
    replay_of_every_record("1.3");
}

// ---------- Loss / reorder: records shuffled (handshake fragments included) ----------

fn reordered_records(version: &str, extra: &[&str]) {
    let (s, _) = run_with(
        version,
        Manipulation::Reorder,
        0x0e_0003,
        &[],
        extra,
        "info",
    );
    assert!(s.reordered_batches > 0, "{s:?}");
}

/// Issue 18 finding, fixed: with connection IDs a DTLS 1.2 client's Finished (a tls12_cid
/// record) alone in a datagram ahead of the session's keys used to be parked by the shard
/// and never reach control, so the handshake stalled in ExpectFinished.
#[test]
fn reordered_records_deliver_each_payload_once_dtls12() {
    reordered_records("1.2", &[]);
}

#[test]
fn reordered_records_deliver_each_payload_once_dtls12_without_cids() {
    reordered_records("1.2", &["--no-connection-id"]);
}

#[test]
fn reordered_records_deliver_each_payload_once_dtls13() {
    reordered_records("1.3", &[]);
}

// ---------- Record layer: bad-tag records dropped silently (bit flips) ----------

fn bad_tag_records(version: &str) {
    let (s, dropped) = run(version, Manipulation::FlipBits, 0xf1_0004, &["bad_tag"]);
    assert!(dropped > 0, "no flipped record counted as bad_tag: {s:?}");
    assert!(s.flipped > (BURSTS * BURST) as u64, "{s:?}");
}

#[test]
fn bad_tag_records_are_dropped_and_the_original_delivered_dtls12() {
    bad_tag_records("1.2");
}

#[test]
fn bad_tag_records_are_dropped_and_the_original_delivered_dtls13() {
    bad_tag_records("1.3");
}

// ---------- Parsing: record length larger than the rest of the datagram (truncation) ----------

fn truncated_datagrams(version: &str) {
    let (s, dropped) = run(
        version,
        Manipulation::Truncate,
        0x7c_0005,
        &["malformed", "bad_tag"],
    );
    assert!(dropped > 0, "no truncated record counted: {s:?}");
    assert!(s.truncated > (BURSTS * BURST) as u64, "{s:?}");
}

#[test]
fn record_length_beyond_the_datagram_is_dropped_dtls12() {
    truncated_datagrams("1.2");
}

#[test]
fn record_length_beyond_the_datagram_is_dropped_dtls13() {
    truncated_datagrams("1.3");
}

// ---------- Operational: canary plaintext never forwarded; forged records injected ----------

fn injected_records(version: &str) {
    let reasons = [
        "bad_tag",
        "malformed",
        "unknown_epoch",
        "unknown_session",
        "unexpected_content",
    ];
    let (s, dropped) = run(version, Manipulation::Inject, 0x1a_0006, &reasons);
    assert!(dropped > 0, "no forged record counted: {s:?}");
    assert!(s.injected > (BURSTS * BURST) as u64, "{s:?}");
    assert!(s.canaries > 0, "{s:?}");
}

#[test]
fn injected_records_and_canary_plaintext_never_reach_the_backend_dtls12() {
    injected_records("1.2");
}

#[test]
fn injected_records_and_canary_plaintext_never_reach_the_backend_dtls13() {
    injected_records("1.3");
}

/// Operational: canary plaintext is never logged, not even at `trace` (both daemons log
/// everything they log at all; [`run_with`] asserts the canary is in neither log).
fn canary_at_trace(version: &str) {
    let (s, _) = run_with(version, Manipulation::Inject, 0x1a_0016, &[], &[], "trace");
    assert!(s.canaries > 0, "{s:?}");
}

#[test]
fn canary_plaintext_is_not_logged_at_trace_dtls12() {
    canary_at_trace("1.2");
}

#[test]
fn canary_plaintext_is_not_logged_at_trace_dtls13() {
    canary_at_trace("1.3");
}

// ---------- State machine: spoofed epoch-0 alerts and HVRs on a live session ----------

fn spoofed_epoch0_records(version: &str) {
    let (s, _) = run(version, Manipulation::SpoofEpoch0, 0xe0_0007, &[]);
    assert!(s.spoofed > (BURSTS * BURST) as u64, "{s:?}");
}

#[test]
fn spoofed_epoch0_alerts_and_hello_verify_requests_on_a_live_session_do_nothing_dtls12() {
    spoofed_epoch0_records("1.2");
}

#[test]
fn spoofed_epoch0_alerts_and_hello_verify_requests_on_a_live_session_do_nothing_dtls13() {
    spoofed_epoch0_records("1.3");
}
