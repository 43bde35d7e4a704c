//! `dtls-bench handshakes` (B4): full (and, with `--resume`, ticket-resumed) DTLS 1.2 or
//! (`--version 1.3`) DTLS 1.3 handshakes per second against the in-process `dtlsd` (or
//! `--server ADDR`), next to the crypto-only bound measured in the same run.
//!
//! Clients are our engine (`control::Connection::client`, the server's certificate verified
//! against the test CA), `--parallel` handshakes in flight on one `loadgen-0` thread, each
//! on a fresh socket, cookie exchange included: DTLS 1.2 ECDHE-ECDSA AES-128-GCM with
//! X25519; DTLS 1.3 TLS_AES_128_GCM_SHA256 offering only `--group`'s key share (so no
//! HelloRetryRequest), resumed with the NewSessionTicket of an earlier handshake
//! (psk_dhe_ke: a fresh key exchange, no signatures).
//!
//! The crypto-only bound is what one core can do of the asymmetric operations a full
//! handshake cannot avoid (both sides), median of 5 timed runs, single thread: for DTLS 1.2
//! and DTLS 1.3 with X25519, two X25519 key generations, two agreements, one ECDSA P-256
//! signature and one verification; with X25519MLKEM768 also an ML-KEM-768 key generation,
//! encapsulation and decapsulation (aws-lc-rs); with P-256 the same with P-256 ECDH. The
//! symmetric rest (HKDF key schedule, transcript hashes, Finished MACs, record AEAD: a few
//! dozen hash blocks per handshake, microseconds against the ~100 µs of the asymmetric
//! operations) is left out of both. Reported: handshakes/s, handshakes per CPU-second of
//! the server's control thread (where the server's handshake work runs), and each over
//! the bound.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow, bail};
use control::crypto::pem::{parse_certificates, parse_private_key};
use control::crypto::test_pki::TestPki;
use control::crypto::tls13::{ClientKeyShare, ServerKeyShare};
use control::crypto::{EphemeralKeyPair, SeededRng, SigningKey, verify_signature};
use control::{CipherSuite, NamedGroup, ProtocolVersion, SignatureScheme};
use serde_json::{Value, json};

use crate::compare::{Better, Figure};
use crate::loadgen::client::{
    HANDSHAKE_TIMEOUT, HandshakePlan, HandshakeStats, TICKET_WAIT, client_config, run_handshakes,
};
use crate::loadgen::cpu::{self, ThreadCpu};
use crate::loadgen::server::{ServerSetup, TestServer, bind_ip_for};
use crate::loadgen::{CipherChoice, IoChoice};
use crate::loadgen::{run, threads};
use crate::records::Version;

/// The DTLS 1.3 key-exchange group of a `handshakes --version 1.3` run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum Group {
    /// X25519MLKEM768 (the hybrid post-quantum group, offered first by default).
    #[default]
    #[value(name = "x25519mlkem768")]
    X25519Mlkem768,
    /// X25519.
    #[value(name = "x25519")]
    X25519,
    /// P-256 (secp256r1).
    #[value(name = "p256")]
    P256,
}

impl Group {
    /// The group on the wire.
    pub fn named(self) -> NamedGroup {
        match self {
            Group::X25519Mlkem768 => NamedGroup::X25519Mlkem768,
            Group::X25519 => NamedGroup::X25519,
            Group::P256 => NamedGroup::Secp256r1,
        }
    }

    /// The name on the command line and in JSON.
    pub fn name(self) -> &'static str {
        match self {
            Group::X25519Mlkem768 => "x25519mlkem768",
            Group::X25519 => "x25519",
            Group::P256 => "p256",
        }
    }
}

/// Settings of one `handshakes` run.
#[derive(Debug, Clone)]
pub struct Config {
    /// Time to keep starting handshakes (per kind).
    pub duration: Duration,
    /// Handshakes in flight at once.
    pub parallel: usize,
    /// Also measure ticket-resumed handshakes.
    pub resume: bool,
    /// A running server instead of the in-process one (then `ca` is required).
    pub server: Option<SocketAddr>,
    /// CA certificate of `server`.
    pub ca: Option<PathBuf>,
    /// The DTLS version the clients offer (only that one).
    pub version: Version,
    /// DTLS 1.3: the only group the clients offer.
    pub group: Group,
    /// Handshake workers of the in-process server (`--control-threads`).
    pub control_threads: usize,
    /// Generator threads: `parallel` is split over them, each with its own sockets and
    /// tickets.
    pub threads: usize,
}

/// Loopback sources the clients spread over against a loopback server: 127.0.0.1 to
/// 127.0.0.16, so a server with several handshake workers (which it picks by a hash of the
/// source address) shares the load out (slot `i` binds the `i % 16`-th).
const LOOPBACK_SOURCES: u8 = 16;

impl Config {
    /// What the crypto bound measures: `None` for DTLS 1.2 (X25519), else the 1.3 group.
    fn bound_group(&self) -> Option<Group> {
        (self.version == Version::V13).then_some(self.group)
    }
}

/// One kind of handshake measured.
#[derive(Debug, Clone)]
pub struct Kind {
    /// `full` or `resumed`.
    pub name: &'static str,
    /// Completed.
    pub completed: u64,
    /// Of which abbreviated.
    pub resumed: u64,
    /// Failed.
    pub failed: u64,
    /// Completed per second.
    pub rate: f64,
    /// Completed per CPU-second of `dtlsd-control` (in-process only).
    pub per_control_cpu_s: Option<f64>,
    /// CPU per thread.
    pub cpu: Vec<ThreadCpu>,
    /// First error.
    pub first_error: Option<String>,
}

/// The outcome.
#[derive(Debug)]
pub struct Outcome {
    /// Result document.
    pub doc: Value,
    /// Text report.
    pub text: String,
    /// The crypto-only bound, handshakes/s on one core.
    pub bound: f64,
    /// Full (then resumed) handshakes.
    pub kinds: Vec<Kind>,
}

struct BoundKeys {
    key: SigningKey,
    cert: control::crypto::pki_types::CertificateDer<'static>,
}

fn bound_keys() -> Result<BoundKeys> {
    let pki = TestPki::generate().context("test PKI")?;
    let chain = parse_certificates(pki.server.cert_pem.as_bytes()).context("test cert")?;
    let der = parse_private_key(pki.server.key_pem.as_bytes()).context("test key")?;
    let key = SigningKey::from_der(&der).context("signing key")?;
    let cert = chain
        .into_iter()
        .next()
        .ok_or_else(|| anyhow!("empty chain"))?;
    Ok(BoundKeys { key, cert })
}

/// The asymmetric operations of one full ECDHE-ECDSA handshake, both sides.
fn crypto_ops(k: &BoundKeys, rng: &mut SeededRng, msg: &[u8]) -> Result<()> {
    let c = EphemeralKeyPair::generate(NamedGroup::X25519, rng).context("keygen")?;
    let s = EphemeralKeyPair::generate(NamedGroup::X25519, rng).context("keygen")?;
    let c_pub = c.public_key().to_vec();
    let s_pub = s.public_key().to_vec();
    let a = c.agree(&s_pub).context("agree")?;
    let b = s.agree(&c_pub).context("agree")?;
    if a.as_bytes() != b.as_bytes() {
        bail!("X25519 agreement mismatch");
    }
    let sig = k
        .key
        .sign(SignatureScheme::EcdsaSecp256r1Sha256, msg)
        .context("sign")?;
    verify_signature(SignatureScheme::EcdsaSecp256r1Sha256, &k.cert, msg, &sig)
        .context("verify")?;
    Ok(())
}

/// The asymmetric operations of one full DTLS 1.3 handshake with `group`, both sides: the
/// client's key share generated, the server's answer (key generation and agreement, or
/// for X25519MLKEM768 also ML-KEM-768 encapsulation), the client's completion (agreement,
/// and decapsulation), one ECDSA P-256 CertificateVerify signature and its verification.
fn crypto_ops13(group: NamedGroup, k: &BoundKeys, rng: &mut SeededRng, msg: &[u8]) -> Result<()> {
    let client = ClientKeyShare::generate(group, rng).context("client key share")?;
    let server = ServerKeyShare::respond(group, client.public_key(), rng).context("respond")?;
    let shared = client.complete(server.public_key()).context("complete")?;
    if shared.as_bytes() != server.shared_secret().as_bytes() {
        bail!("{group:?} shared secrets differ");
    }
    let sig = k
        .key
        .sign(SignatureScheme::EcdsaSecp256r1Sha256, msg)
        .context("sign")?;
    verify_signature(SignatureScheme::EcdsaSecp256r1Sha256, &k.cert, msg, &sig)
        .context("verify")?;
    Ok(())
}

/// The server's share of a DTLS 1.3 handshake with `group`: its answer to the client's
/// key share and one signature. The client share is made once, outside the timing.
fn server_crypto_ops13(
    client_share: &[u8],
    group: NamedGroup,
    k: &BoundKeys,
    rng: &mut SeededRng,
    msg: &[u8],
) -> Result<()> {
    ServerKeyShare::respond(group, client_share, rng).context("respond")?;
    k.key
        .sign(SignatureScheme::EcdsaSecp256r1Sha256, msg)
        .context("sign")?;
    Ok(())
}

/// The server's share of those: one X25519 key generation and agreement, one signature.
fn server_crypto_ops(k: &BoundKeys, rng: &mut SeededRng, msg: &[u8]) -> Result<()> {
    let s = EphemeralKeyPair::generate(NamedGroup::X25519, rng).context("keygen")?;
    let peer = [9u8; 32];
    s.agree(&peer).context("agree")?;
    k.key
        .sign(SignatureScheme::EcdsaSecp256r1Sha256, msg)
        .context("sign")?;
    Ok(())
}

/// Operations per second of `op` on this thread: median of 5 runs of ~`run_time` each.
fn median_rate(
    run_time: Duration,
    mut op: impl FnMut(&BoundKeys, &mut SeededRng, &[u8]) -> Result<()>,
) -> Result<f64> {
    let keys = bound_keys()?;
    let mut rng = SeededRng::new(9);
    let msg = [0x42u8; 150];
    op(&keys, &mut rng, &msg)?;
    let mut rates = Vec::with_capacity(5);
    for _ in 0..5 {
        let start = Instant::now();
        let mut n = 0u64;
        while start.elapsed() < run_time {
            op(&keys, &mut rng, &msg)?;
            n += 1;
        }
        rates.push(n as f64 / start.elapsed().as_secs_f64());
    }
    rates.sort_by(f64::total_cmp);
    Ok(rates[2])
}

/// Crypto-only full handshakes/s (both sides' asymmetric operations) on this thread: median
/// of 5 runs of ~`run_time` each.
pub fn crypto_bound(run_time: Duration) -> Result<f64> {
    median_rate(run_time, crypto_ops)
}

/// Crypto-only handshakes/s of the server side alone (X25519 keygen + agree, ECDSA P-256
/// sign): the bound for handshakes per CPU-second of the server's control thread.
pub fn server_crypto_bound(run_time: Duration) -> Result<f64> {
    median_rate(run_time, server_crypto_ops)
}

/// [`crypto_bound`] of a DTLS 1.3 handshake with `group`.
pub fn crypto_bound13(group: Group, run_time: Duration) -> Result<f64> {
    let group = group.named();
    median_rate(run_time, |k, rng, msg| crypto_ops13(group, k, rng, msg))
}

/// [`server_crypto_bound`] of a DTLS 1.3 handshake with `group`.
pub fn server_crypto_bound13(group: Group, run_time: Duration) -> Result<f64> {
    let group = group.named();
    let client = ClientKeyShare::generate(group, &mut SeededRng::new(3)).context("key share")?;
    let share = client.public_key().to_vec();
    median_rate(run_time, |k, rng, msg| {
        server_crypto_ops13(&share, group, k, rng, msg)
    })
}

/// The crypto-only bound of `group` (`None`: DTLS 1.2).
fn bound_of(group: Option<Group>, run_time: Duration) -> Result<f64> {
    match group {
        None => crypto_bound(run_time),
        Some(g) => crypto_bound13(g, run_time),
    }
}

/// The server-side bound of `group` (`None`: DTLS 1.2).
fn server_bound_of(group: Option<Group>, run_time: Duration) -> Result<f64> {
    match group {
        None => server_crypto_bound(run_time),
        Some(g) => server_crypto_bound13(g, run_time),
    }
}

/// The client configuration of `cfg`: DTLS 1.2 ECDHE-ECDSA AES-128-GCM, or DTLS 1.3
/// TLS_AES_128_GCM_SHA256 with `cfg.group` alone.
fn handshake_config(ca: &std::path::Path, cfg: &Config) -> Result<control::Config> {
    let mut config = client_config(ca, CipherChoice::Aes128Gcm, 1200)?;
    if let Some(group) = cfg.bound_group() {
        config.versions = vec![ProtocolVersion::Dtls1_3];
        config.tls13_groups = vec![group.named()];
        config.tls13_cipher_suites = vec![CipherSuite::Tls13Aes128GcmSha256];
        config.validate_client().context("client configuration")?;
    }
    Ok(config)
}

fn measure(
    config: &Arc<control::Config>,
    server: SocketAddr,
    cfg: &Config,
    tickets: &mut [Vec<control::SessionTicket>],
    collect_tickets: bool,
    offer_tickets: bool,
) -> Result<(HandshakeStats, Vec<ThreadCpu>)> {
    let threads = tickets.len().max(1);
    let plan = |index: usize| HandshakePlan {
        server,
        bind_ip: bind_ip_for(server),
        sources: if server.ip().is_loopback() {
            LOOPBACK_SOURCES
        } else {
            1
        },
        parallel: threads::share_of(cfg.parallel, threads, index),
        total: None,
        duration: cfg.duration,
        keep: false,
        collect_tickets,
        offer_tickets,
        timeout: HANDSHAKE_TIMEOUT,
        ticket_wait: TICKET_WAIT,
    };
    // CPU snapshots between two marks that every generator thread makes: all of them are
    // alive at both, so each one's CPU is in the difference.
    let lockstep = threads::Lockstep::new(threads);
    let lockstep = &lockstep;
    let results = std::thread::scope(|scope| {
        let handles = tickets
            .iter_mut()
            .enumerate()
            .map(|(index, tickets)| {
                let plan = plan(index);
                std::thread::Builder::new()
                    .name(format!("loadgen-{index}"))
                    .spawn_scoped(scope, move || {
                        run::pin_generator_at(index);
                        let first = lockstep.mark()?;
                        let stats = run_handshakes(config, &plan, tickets);
                        if stats.is_err() {
                            lockstep.abandon();
                        }
                        let stats = stats?;
                        let last = lockstep.mark()?;
                        Ok((stats, first, last))
                    })
                    .context("spawn a generator thread")
            })
            .collect::<Result<Vec<_>>>()?;
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .map_err(|_| anyhow!("a generator thread panicked"))
                    .and_then(|r| r)
            })
            .collect::<Result<Vec<_>>>()
    })?;
    let (first, last) = results.first().map_or((0, 0), |r| (r.1, r.2));
    let cpu = match (lockstep.snapshot(first), lockstep.snapshot(last)) {
        (Some(before), Some(after)) => before.delta(&after),
        _ => Vec::new(),
    };
    // The threads ran side by side: counts add up over the longest thread's time.
    let mut stats = HandshakeStats::default();
    for (s, _, _) in results {
        stats.started += s.started;
        stats.completed += s.completed;
        stats.resumed += s.resumed;
        stats.failed += s.failed;
        stats.elapsed = stats.elapsed.max(s.elapsed);
        stats.datagrams_out += s.datagrams_out;
        stats.datagrams_in += s.datagrams_in;
        stats.durations.extend(s.durations);
        if stats.first_error.is_none() {
            stats.first_error = s.first_error;
        }
    }
    Ok((stats, cpu))
}

/// Full handshakes against a fresh in-process server with `cfg.control_threads` workers,
/// the same clients and measurement as [`run`] but without the crypto-only bound (three
/// timed runs of ~0.5 s each) or the report: what `dtls-tune autotune` trials handshake
/// workers with. `cfg.server` is ignored.
///
/// # Errors
/// The server or the clients cannot start.
pub fn full_in_process(cfg: &Config) -> Result<Kind> {
    if cfg.threads == 0 || cfg.threads > cfg.parallel {
        bail!("threads must be in 1..=parallel ({})", cfg.parallel);
    }
    let server = TestServer::start(&ServerSetup {
        shards: 1,
        control_threads: cfg.control_threads.max(1),
        io: IoChoice::Auto,
        null_protection: false,
        mtu: 1500,
        data_io: Default::default(),
    })?;
    let config = Arc::new(handshake_config(server.ca(), cfg)?);
    let mut tickets: Vec<Vec<control::SessionTicket>> =
        (0..cfg.threads).map(|_| Vec::new()).collect();
    let (full, cpu) = measure(&config, server.addr(), cfg, &mut tickets, false, false)?;
    server.shutdown()?;
    Ok(kind("full", &full, cpu, true))
}

/// Runs the benchmark.
pub fn run(cfg: &Config) -> Result<Outcome> {
    let in_process = match cfg.server {
        Some(_) => None,
        None => Some(TestServer::start(&ServerSetup {
            shards: 1,
            control_threads: cfg.control_threads.max(1),
            io: IoChoice::Auto,
            null_protection: false,
            mtu: 1500,
            data_io: Default::default(),
        })?),
    };
    let (server, ca) = match (
        &in_process,
        run::External::from_args(cfg.server, cfg.ca.as_deref())?,
    ) {
        (Some(s), _) => (s.addr(), s.ca().to_path_buf()),
        (None, Some(ext)) => (ext.addr, ext.ca),
        (None, None) => bail!("no server: neither in-process nor --server"),
    };
    if cfg.threads == 0 || cfg.threads > cfg.parallel {
        bail!(
            "--threads {}: must be in 1..=--parallel ({})",
            cfg.threads,
            cfg.parallel
        );
    }
    let config = Arc::new(handshake_config(&ca, cfg)?);
    let group = cfg.bound_group();
    let bound_before = bound_of(group, Duration::from_millis(100))?;
    let mut kinds = Vec::new();
    let mut tickets: Vec<Vec<control::SessionTicket>> =
        (0..cfg.threads).map(|_| Vec::new()).collect();
    let (full, cpu_full) = measure(&config, server, cfg, &mut tickets, cfg.resume, false)?;
    kinds.push(kind("full", &full, cpu_full, in_process.is_some()));
    if cfg.resume {
        let (resumed, cpu_res) = measure(&config, server, cfg, &mut tickets, true, true)?;
        let mut k = kind("resumed", &resumed, cpu_res, in_process.is_some());
        if resumed.resumed == 0 {
            k.first_error.get_or_insert_with(|| {
                "the server issued no session tickets: no handshake was resumed".into()
            });
        }
        kinds.push(k);
    }
    let bound_after = bound_of(group, Duration::from_millis(100))?;
    let server_bound = server_bound_of(group, Duration::from_millis(100))?;
    let counters = in_process.as_ref().map(TestServer::counters_json);
    if let Some(s) = in_process {
        s.shutdown()?;
    }
    let bound = (bound_before + bound_after) / 2.0;
    let mut out = report(cfg, server, bound, (bound_before, bound_after), kinds);
    out.doc["results"]["server_counters"] = counters.unwrap_or(Value::Null);
    out.doc["results"]["server_side_bound_per_s"] = json!(server_bound);
    let mut control_ratio = None;
    if let Some(kinds) = out.doc["results"]["kinds"].as_array_mut() {
        for k in kinds {
            let r = k["per_control_cpu_s"].as_f64().map(|v| v / server_bound);
            control_ratio = control_ratio.or(r);
            k["control_ratio_to_server_bound"] = json!(r);
        }
    }
    let _ = writeln!(
        out.text,
        "  server-side crypto bound ({}, 1 core): {server_bound:.0}/s; control thread at {} of it per CPU-second",
        match group {
            None => "X25519 keygen + agree + ECDSA P-256 sign".to_string(),
            Some(g) => format!("{} answer + ECDSA P-256 sign", group_ops(g).0),
        },
        control_ratio.map_or("?".into(), |r| format!("{r:.3}"))
    );
    Ok(out)
}

/// How the report names `group`'s key exchange: (the group, the operations of both sides).
fn group_ops(group: Group) -> (&'static str, &'static str) {
    match group {
        Group::X25519Mlkem768 => (
            "X25519MLKEM768",
            "2 X25519 keygen + 2 agree + ML-KEM-768 keygen + encap + decap",
        ),
        Group::X25519 => ("X25519", "2 X25519 keygen + 2 agree"),
        Group::P256 => ("P-256", "2 P-256 keygen + 2 ECDH"),
    }
}

fn kind(name: &'static str, s: &HandshakeStats, cpu: Vec<ThreadCpu>, in_process: bool) -> Kind {
    let control_s: f64 = cpu
        .iter()
        // `dtlsd-control` with one worker, `dtlsd-control-N` with several.
        .filter(|t| t.name.starts_with("dtlsd-control"))
        .map(|t| t.cpu_ns as f64 / 1e9)
        .sum();
    Kind {
        name,
        completed: s.completed,
        resumed: s.resumed,
        failed: s.failed,
        rate: s.rate(),
        per_control_cpu_s: (in_process && control_s > 0.0).then(|| s.completed as f64 / control_s),
        cpu,
        first_error: s.first_error.clone(),
    }
}

/// The in-process server's worker count, when it has several, and the generator's
/// thread count, when it has several.
fn workers_note(cfg: &Config) -> String {
    let mut note = String::new();
    if cfg.server.is_none() && cfg.control_threads > 1 {
        note += &format!(" ({} handshake workers)", cfg.control_threads);
    }
    if cfg.threads > 1 {
        note += &format!(", {} generator threads", cfg.threads);
    }
    note
}

fn report(
    cfg: &Config,
    server: SocketAddr,
    bound: f64,
    bounds: (f64, f64),
    kinds: Vec<Kind>,
) -> Outcome {
    let mut text = String::new();
    // DTLS 1.2 keeps its figure names; DTLS 1.3's carry the version and group, so a
    // comparison never sets one against the other.
    let prefix = match cfg.bound_group() {
        None => "handshakes".to_string(),
        Some(g) => format!("handshakes13_{}", g.name()),
    };
    let mut figures = vec![Figure::new(
        format!("{prefix}.crypto_bound"),
        bound,
        "handshakes/s",
        Better::Higher,
    )];
    let mut invalid = Vec::new();
    match cfg.bound_group() {
        None => {
            let _ = writeln!(
                text,
                "dtls-bench handshakes: {} in flight against {server}{}, ECDHE-ECDSA P-256 / X25519, cookie on",
                cfg.parallel,
                workers_note(cfg)
            );
            let _ = writeln!(
                text,
                "  crypto-only bound (2 X25519 keygen + 2 agree + ECDSA P-256 sign + verify, 1 core): {bound:.0}/s (before {:.0}, after {:.0})",
                bounds.0, bounds.1
            );
        }
        Some(g) => {
            let (name, ops) = group_ops(g);
            let _ = writeln!(
                text,
                "dtls-bench handshakes: {} in flight against {server}{}, DTLS 1.3 TLS_AES_128_GCM_SHA256, {name}, ECDSA P-256 certificate, cookie on",
                cfg.parallel,
                workers_note(cfg)
            );
            let _ = writeln!(
                text,
                "  crypto-only bound ({ops} + ECDSA P-256 sign + verify, 1 core; HKDF and hashes left out, microseconds): {bound:.0}/s (before {:.0}, after {:.0})",
                bounds.0, bounds.1
            );
        }
    }
    for k in &kinds {
        let _ = writeln!(
            text,
            "  {:<7} {:>8.0}/s  ratio to bound {:.3}{}  ({} completed, {} resumed, {} failed)",
            k.name,
            k.rate,
            k.rate / bound,
            k.per_control_cpu_s.map_or(String::new(), |r| format!(
                "; per control CPU-second {r:.0}, ratio {:.3}",
                r / bound
            )),
            k.completed,
            k.resumed,
            k.failed
        );
        let _ = writeln!(text, "    cpu: {}", cpu::lines(&k.cpu));
        if let Some(e) = &k.first_error {
            let _ = writeln!(text, "    note: {e}");
        }
        figures.push(Figure::new(
            format!("{prefix}.{}.per_s", k.name),
            k.rate,
            "handshakes/s",
            Better::Higher,
        ));
        figures.push(Figure::new(
            format!("{prefix}.{}.ratio_to_bound", k.name),
            k.rate / bound,
            "ratio",
            Better::Higher,
        ));
        invalid.extend(run::saturation_reasons(&k.cpu));
        if k.completed == 0 && k.name == "full" {
            invalid.push("no full handshake completed".into());
        }
    }
    if !invalid.is_empty() {
        let _ = writeln!(text, "  INVALID: {}", invalid.join("; "));
    }
    let full_rate = kinds.first().map(|k| k.rate);
    let results = json!({
        "handshakes_per_s": full_rate,
        "crypto_bound_per_s": bound,
        "crypto_bound_before_after": [bounds.0, bounds.1],
        "kinds": kinds.iter().map(|k| json!({
            "kind": k.name,
            "per_s": k.rate,
            "completed": k.completed,
            "resumed": k.resumed,
            "failed": k.failed,
            "per_control_cpu_s": k.per_control_cpu_s,
            "ratio_to_bound": k.rate / bound,
            "control_ratio_to_bound": k.per_control_cpu_s.map(|r| r / bound),
            "cpu": cpu::json(&k.cpu),
            "note": k.first_error,
        })).collect::<Vec<_>>(),
        "ratios": {"full_to_bound": full_rate.map(|r| r / bound)},
    });
    let config = json!({
        "benchmark": "B4",
        "duration_s": cfg.duration.as_secs_f64(),
        "parallel": cfg.parallel,
        "control_threads": cfg.server.is_none().then_some(cfg.control_threads),
        "generator_threads": cfg.threads,
        "resume": cfg.resume,
        "server": cfg.server.map_or("in-process".to_string(), |a| a.to_string()),
        "version": cfg.version.name(),
        "suite": match cfg.bound_group() {
            None => "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
            Some(_) => "TLS_AES_128_GCM_SHA256",
        },
        "group": cfg.bound_group().map_or("x25519", Group::name),
    });
    Outcome {
        doc: run::document("dtls-bench handshakes", config, results, &figures, &invalid),
        text,
        bound,
        kinds,
    }
}
