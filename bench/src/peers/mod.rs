//! B8: OpenSSL's DTLS 1.2 record path and handshake rate next to ours, on this machine, in
//! the same run (BENCHMARKS.md: "our / peer ratio").
//!
//! What it measures, both stacks in one process on one core, interleaved in rounds so both
//! see the same machine (the figure is the median over rounds, the ratio the median of the
//! per-round ratios):
//! - records: one 1200 B (configurable) application-data record written by the client and
//!   read by the server, AES-128-GCM. OpenSSL: `SSL_write` + `SSL_read` through an
//!   in-memory datagram pipe (one copy in and out of the pipe per record). Ours:
//!   plaintext copied into the record buffer, `Sealer::seal`, `Opener::open` with the
//!   replay check, plaintext copied out (the copies `SSL_write`/`SSL_read` make).
//!   Also raw aws-lc-rs AES-128-GCM seal + open with the same copies: the floor of any
//!   record layer on this machine, so `raw / OpenSSL` is the ceiling of the records ratio.
//! - handshakes: full DTLS 1.2 ECDHE-ECDSA-AES128-GCM-SHA256 handshakes, X25519, ECDSA
//!   P-256 server certificate from the test CA, cookie exchange ON in both (OpenSSL:
//!   `SSL_OP_COOKIE_EXCHANGE` with HMAC-SHA256 cookies; ours: the stateless `Acceptor`),
//!   client verifies the chain and the name `localhost`, extended master secret, session
//!   ticket issued, no resumption, MTU 1500, no loss.
//!
//! - over UDP loopback ([`udp`], `--transport udp`): OpenSSL's echo server thread next to
//!   our `dtlsd` relay, records per second and per server-CPU second (the unit of the
//!   "records/s per core" anchor in BENCHMARKS.md).
//!
//! - across a network ([`openssl_net`], `dtls-bench openssl-server`): the same OpenSSL server
//!   on a real address, driven by the generator that drives `dtlsd serve`
//!   (`dtls-bench throughput --server`); scripts/xdp-bench.sh runs it across its veth pair
//!   beside `dtlsd serve --io xdp|uring|mmsg` and reads each server's CPU from /proc.
//!
//! What it does not do: DTLS 1.3, multi-core scaling, or a pass/fail verdict. The in-memory
//! figures leave out sockets and kernel cost; the UDP figures include them.

pub mod openssl_net;
mod openssl_side;
mod openssl_udp;
mod ours;
mod thread_times;
pub mod udp;

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Value, json};

use crate::compare::{Better, Figure, figures_json};
use crate::host::HostInfo;
use crate::report::rfc3339_now;

/// The OpenSSL name of the suite both stacks run.
const SUITE_OPENSSL: &str = "ECDHE-ECDSA-AES128-GCM-SHA256";

/// Why B8 could not run.
#[derive(Debug, thiserror::Error)]
pub enum PeersError {
    /// Test certificates could not be generated.
    #[error("test PKI: {0}")]
    Pki(String),
    /// The OpenSSL side failed.
    #[error("OpenSSL: {0}")]
    OpenSsl(String),
    /// Our side failed.
    #[error("our stack: {0}")]
    Ours(String),
    /// The UDP loopback run failed (our server, the generator, or either side's I/O).
    #[error("UDP loopback run: {0}")]
    Udp(String),
    /// Bad options.
    #[error("{0}")]
    Options(String),
}

/// Certificates shared by both stacks.
#[derive(Debug, Clone)]
struct Pki {
    ca_cert_pem: String,
    server_cert_pem: String,
    server_key_pem: String,
    cookie_secret: [u8; 32],
}

impl Pki {
    fn generate() -> Result<Self, PeersError> {
        let pki = control::crypto::test_pki::TestPki::generate()
            .map_err(|e| PeersError::Pki(e.to_string()))?;
        let mut cookie_secret = [0u8; 32];
        control::Rng::fill(&mut control::crypto::SystemRng::new(), &mut cookie_secret);
        Ok(Self {
            ca_cert_pem: pki.ca.cert_pem,
            server_cert_pem: pki.server.cert_pem,
            server_key_pem: pki.server.key_pem,
            cookie_secret,
        })
    }
}

/// What to run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Config {
    /// Total timed work, split evenly over rounds and the four measurements.
    pub duration: Duration,
    /// Rounds (each measures all four; median reported).
    pub rounds: usize,
    /// Record plaintext size in bytes.
    pub size: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            duration: Duration::from_millis(2500),
            rounds: 5,
            size: 1200,
        }
    }
}

/// Rate over rounds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    /// Median per second.
    pub median: f64,
    /// Lowest round.
    pub min: f64,
    /// Highest round.
    pub max: f64,
    /// Operations over all rounds.
    pub total: u64,
}

fn median(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        return (f64::NAN, f64::NAN, f64::NAN);
    }
    let m = if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    };
    (m, v[0], v[n - 1])
}

#[derive(Debug, Default)]
struct Samples {
    rates: Vec<f64>,
    total: u64,
}

impl Samples {
    fn push(&mut self, (n, t): (u64, Duration)) -> f64 {
        let r = n as f64 / t.as_secs_f64().max(1e-9);
        self.rates.push(r);
        self.total += n;
        r
    }

    fn rate(self) -> Rate {
        let (median, min, max) = median(self.rates);
        Rate {
            median,
            min,
            max,
            total: self.total,
        }
    }
}

/// B8 results.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// What ran.
    pub config: Config,
    /// OpenSSL's version string.
    pub openssl_version: String,
    /// Our records (seal + open) per second.
    pub ours_records: Rate,
    /// OpenSSL's records (`SSL_write` + `SSL_read`) per second.
    pub openssl_records: Rate,
    /// Raw aws-lc-rs AES-128-GCM seal + open per second (the ceiling for ours).
    pub raw_records: Rate,
    /// Our full handshakes per second.
    pub ours_handshakes: Rate,
    /// OpenSSL's full handshakes per second.
    pub openssl_handshakes: Rate,
    /// Median per-round ratio ours / OpenSSL, records.
    pub records_ratio: f64,
    /// Median per-round ratio ours / raw AEAD, records.
    pub records_ratio_raw: f64,
    /// Median per-round ratio raw AEAD / OpenSSL: the most the records ratio can reach.
    pub records_ceiling: f64,
    /// Median per-round ratio ours / OpenSSL, handshakes.
    pub handshakes_ratio: f64,
}

/// Runs B8 (one warm-up round, then `rounds` measured rounds).
pub fn run(config: &Config) -> Result<Report, PeersError> {
    if !(1..=1000).contains(&config.rounds)
        || config.size == 0
        || config.size > dataplane::record::MAX_PLAINTEXT_LEN
    {
        return Err(PeersError::Options(format!(
            "rounds must be in 1..=1000 and size in 1..={}",
            dataplane::record::MAX_PLAINTEXT_LEN
        )));
    }
    let mtu = 1500;
    let pki = Pki::generate()?;
    let ossl = openssl_side::OpenSsl::new(&pki, mtu as u32)?;
    let mut ours = ours::Ours::new(&pki, mtu)?;
    let mut ossl_session = ossl.session()?;
    let mut our_records = ours::OurRecords::new(config.size)?;
    let mut raw = ours::RawAead::new(config.size)?;
    let payload = vec![0x5au8; config.size];
    let slice = config.duration / (5 * config.rounds as u32);
    let (mut or, mut sr, mut rr, mut oh, mut sh) = (
        Samples::default(),
        Samples::default(),
        Samples::default(),
        Samples::default(),
        Samples::default(),
    );
    let (mut rec_ratios, mut raw_ratios, mut ceilings, mut hs_ratios) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    // Round 0 is the warm-up (short, discarded).
    for round in 0..=config.rounds {
        let s = if round == 0 { slice / 4 } else { slice };
        // Alternate which stack goes first.
        let (o_rec, s_rec, o_hs, s_hs) = if round % 2 == 0 {
            let a = our_records.records(&payload, s)?;
            let b = ossl_session.records(&payload, s)?;
            let c = ours.handshakes(s)?;
            let d = ossl.handshakes(s)?;
            (a, b, c, d)
        } else {
            let b = ossl_session.records(&payload, s)?;
            let a = our_records.records(&payload, s)?;
            let d = ossl.handshakes(s)?;
            let c = ours.handshakes(s)?;
            (a, b, c, d)
        };
        let r_rec = raw.records(&payload, s)?;
        if round > 0 {
            let (a, b, r) = (or.push(o_rec), sr.push(s_rec), rr.push(r_rec));
            rec_ratios.push(a / b);
            raw_ratios.push(a / r);
            ceilings.push(r / b);
            let (c, d) = (oh.push(o_hs), sh.push(s_hs));
            hs_ratios.push(c / d);
        }
    }
    Ok(Report {
        config: *config,
        openssl_version: openssl::version::version().to_string(),
        ours_records: or.rate(),
        openssl_records: sr.rate(),
        raw_records: rr.rate(),
        ours_handshakes: oh.rate(),
        openssl_handshakes: sh.rate(),
        records_ratio: median(rec_ratios).0,
        records_ratio_raw: median(raw_ratios).0,
        records_ceiling: median(ceilings).0,
        handshakes_ratio: median(hs_ratios).0,
    })
}

impl Report {
    /// The tracked figures (all higher is better).
    pub fn figures(&self) -> Vec<Figure> {
        let size = self.config.size;
        vec![
            Figure::new(
                format!("peers.records.aes128gcm.{size}.ours.records_per_s"),
                self.ours_records.median,
                "records/s",
                Better::Higher,
            ),
            Figure::new(
                format!("peers.records.aes128gcm.{size}.openssl.records_per_s"),
                self.openssl_records.median,
                "records/s",
                Better::Higher,
            ),
            Figure::new(
                format!("peers.records.aes128gcm.{size}.ratio_ours_openssl"),
                self.records_ratio,
                "ratio",
                Better::Higher,
            ),
            Figure::new(
                format!("peers.records.aes128gcm.{size}.ratio_ours_raw_aead"),
                self.records_ratio_raw,
                "ratio",
                Better::Higher,
            ),
            Figure::new(
                "peers.handshakes.full_ecdhe_ecdsa.ours.handshakes_per_s",
                self.ours_handshakes.median,
                "handshakes/s",
                Better::Higher,
            ),
            Figure::new(
                "peers.handshakes.full_ecdhe_ecdsa.openssl.handshakes_per_s",
                self.openssl_handshakes.median,
                "handshakes/s",
                Better::Higher,
            ),
            Figure::new(
                "peers.handshakes.full_ecdhe_ecdsa.ratio_ours_openssl",
                self.handshakes_ratio,
                "ratio",
                Better::Higher,
            ),
        ]
    }

    /// The human-readable report.
    pub fn table(&self, host: &HostInfo) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "dtls-bench peers: B8 ours vs {} (DTLS 1.2, one core, in memory)",
            self.openssl_version
        );
        let _ = writeln!(
            s,
            "cpu: {} ({} logical cores), kernel {}, {}",
            host.cpu,
            host.cores,
            host.kernel,
            host.aead_impl()
        );
        let _ = writeln!(
            s,
            "median of {} rounds after 1 warm-up round, {:?} per measurement; cookie exchange on in both",
            self.config.rounds,
            self.config.duration / (5 * self.config.rounds as u32)
        );
        let _ = writeln!(
            s,
            "{:<50} {:>14} {:>25} {:>10}",
            "figure", "median/s", "(min..max)", "ns/op"
        );
        let row = |s: &mut String, name: &str, r: &Rate| {
            let _ = writeln!(
                s,
                "{name:<50} {:>14.0} {:>25} {:>10.1}",
                r.median,
                format!("({:.0}..{:.0})", r.min, r.max),
                1e9 / r.median
            );
        };
        let size = self.config.size;
        row(
            &mut s,
            &format!("records {size} B AES-128-GCM, ours (seal+open)"),
            &self.ours_records,
        );
        row(
            &mut s,
            &format!("records {size} B AES-128-GCM, OpenSSL (write+read)"),
            &self.openssl_records,
        );
        row(
            &mut s,
            &format!("records {size} B AES-128-GCM, raw aws-lc-rs (floor)"),
            &self.raw_records,
        );
        row(
            &mut s,
            "full handshakes ECDHE-ECDSA, ours",
            &self.ours_handshakes,
        );
        row(
            &mut s,
            "full handshakes ECDHE-ECDSA, OpenSSL",
            &self.openssl_handshakes,
        );
        let _ = writeln!(
            s,
            "ours / OpenSSL: records {:.2}x, handshakes {:.2}x (median of per-round ratios; goal: records >= 4x)",
            self.records_ratio, self.handshakes_ratio
        );
        let _ = writeln!(
            s,
            "records: ours / raw AEAD {:.3}; raw AEAD / OpenSSL {:.2}x is the most the records ratio can reach here",
            self.records_ratio_raw, self.records_ceiling
        );
        s
    }

    /// The JSON document (tool, version, timestamp, host, config, results, figures).
    pub fn json(&self, host: &HostInfo) -> Value {
        let rate = |r: &Rate| json!({"median_per_s": r.median, "min_per_s": r.min, "max_per_s": r.max, "total": r.total});
        json!({
            "tool": "dtls-bench peers",
            "version": env!("CARGO_PKG_VERSION"),
            "timestamp": rfc3339_now(),
            "host": {"cpu": host.cpu, "cores": host.cores, "kernel": host.kernel, "aead_impl": host.aead_impl()},
            "config": {
                "benchmark": "B8",
                "peer": self.openssl_version,
                "size": self.config.size,
                "rounds": self.config.rounds,
                "warmup_rounds": 1,
                "duration_ms": self.config.duration.as_millis() as u64,
                "suite": SUITE_OPENSSL,
                "group": "x25519",
                "certificate": "ECDSA P-256",
                "cookie_exchange": true,
                "mtu": 1500,
            },
            "results": {
                "records": {"ours": rate(&self.ours_records), "openssl": rate(&self.openssl_records), "raw_aead": rate(&self.raw_records)},
                "handshakes": {"ours": rate(&self.ours_handshakes), "openssl": rate(&self.openssl_handshakes)},
                "ratios": {"records_ours_openssl": self.records_ratio, "records_ours_raw_aead": self.records_ratio_raw, "records_raw_aead_openssl": self.records_ceiling, "handshakes_ours_openssl": self.handshakes_ratio},
            },
            "figures": figures_json(&self.figures()),
        })
    }
}

/// `dtls-bench peers` options.
#[derive(Debug, Clone, clap::Args)]
pub struct PeersArgs {
    /// Seconds of timed work in all (split over rounds and the four measurements).
    #[arg(long, value_name = "SECS", default_value_t = 2.5)]
    pub duration: f64,
    /// Measured rounds (median reported).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub rounds: u32,
    /// Record plaintext size in bytes.
    #[arg(long, default_value_t = 1200)]
    pub size: usize,
    /// In memory, over UDP loopback sockets, or both.
    #[arg(long, value_enum, default_value = "both")]
    pub transport: Transport,
    /// UDP: measured seconds per side (split over --udp-rounds slices).
    #[arg(long, value_name = "SECS", default_value_t = 3.0)]
    pub udp_duration: f64,
    /// UDP: slices per side (the sides alternate).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub udp_rounds: u32,
    /// UDP: client sessions per side.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub sessions: u32,
    /// UDP: outstanding records per session.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub window: u32,
    /// UDP: our generator's GSO/GRO (OpenSSL's client sends one record per send).
    #[arg(long, value_enum, default_value = "off")]
    pub gso: crate::loadgen::Switch,
    /// UDP: our server's I/O backend.
    #[arg(long, value_enum, default_value = "auto")]
    pub io: crate::loadgen::IoChoice,
    /// UDP: also measure OpenSSL relaying to a UDP echo backend (like-for-like with ours).
    #[arg(long, value_enum, default_value = "on")]
    pub openssl_relay: crate::loadgen::Switch,
    /// Also write the results (with a `figures` array) as JSON to this file.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
}

/// Where B8 moves its records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Transport {
    /// In memory only (no sockets).
    Memory,
    /// Over UDP loopback sockets only.
    Udp,
    /// Both.
    Both,
}

/// What `dtls-bench peers` measured.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// The in-memory figures (with `--transport memory|both`).
    pub memory: Option<Report>,
    /// The UDP loopback figures (with `--transport udp|both`).
    pub udp: Option<udp::UdpReport>,
}

impl Outcome {
    /// Why this run cannot be trusted (empty: it can). In memory: a measurement that
    /// counted nothing; over UDP: see [`udp::UdpReport::invalid_reasons`].
    pub fn invalid_reasons(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(m) = &self.memory {
            let rates = [
                ("our records", &m.ours_records),
                ("OpenSSL records", &m.openssl_records),
                ("raw AEAD records", &m.raw_records),
                ("our handshakes", &m.ours_handshakes),
                ("OpenSSL handshakes", &m.openssl_handshakes),
            ];
            for (what, r) in rates {
                if r.total == 0 || !(r.median.is_finite() && r.median > 0.0) {
                    out.push(format!("in memory, {what}: nothing measured"));
                }
            }
        }
        if let Some(u) = &self.udp {
            out.extend(u.invalid_reasons());
        }
        out
    }

    /// The JSON document: the in-memory document (or its frame) with `config.transport`,
    /// `results.udp`, the UDP figures appended, and the verdict (`valid`,
    /// `invalid_reasons`).
    pub fn json(&self, host: &HostInfo) -> Value {
        let mut doc = match &self.memory {
            Some(r) => r.json(host),
            None => json!({
                "tool": "dtls-bench peers",
                "version": env!("CARGO_PKG_VERSION"),
                "timestamp": rfc3339_now(),
                "host": {"cpu": host.cpu, "cores": host.cores, "kernel": host.kernel, "aead_impl": host.aead_impl()},
                "config": {"benchmark": "B8", "peer": openssl::version::version(), "suite": SUITE_OPENSSL},
                "results": {},
                "figures": [],
            }),
        };
        let transport = match (&self.memory, &self.udp) {
            (Some(_), Some(_)) => "both",
            (None, Some(_)) => "udp",
            _ => "memory",
        };
        doc["config"]["transport"] = json!(transport);
        if let Some(u) = &self.udp {
            doc["results"]["udp"] = u.json();
            let mut figs = self
                .memory
                .as_ref()
                .map(Report::figures)
                .unwrap_or_default();
            figs.extend(u.figures());
            doc["figures"] = figures_json(&figs);
        }
        let invalid = self.invalid_reasons();
        doc["valid"] = json!(invalid.is_empty());
        doc["invalid_reasons"] = json!(invalid);
        doc
    }
}

fn secs(flag: &str, v: f64) -> Result<Duration, PeersError> {
    if v.is_finite() && v > 0.0 && v < 86_400.0 {
        Ok(Duration::from_secs_f64(v))
    } else {
        Err(PeersError::Options(format!(
            "{flag}: {v} is not a number of seconds > 0"
        )))
    }
}

/// Runs `dtls-bench peers`: prints the tables (and an `INVALID:` line when
/// [`Outcome::invalid_reasons`] has any), writes the JSON if asked. The caller decides what
/// an invalid run does to the exit code.
pub fn run_cli(args: &PeersArgs) -> Result<Outcome, PeersError> {
    let config = Config {
        duration: secs("--duration", args.duration)?,
        rounds: args.rounds as usize,
        size: args.size,
    };
    let udp_config = udp::UdpConfig {
        duration: secs("--udp-duration", args.udp_duration)?,
        rounds: args.udp_rounds as usize,
        sessions: args.sessions as usize,
        window: args.window as usize,
        size: args.size,
        gso: args.gso.on(),
        io: args.io,
        openssl_relay: args.openssl_relay.on(),
    };
    let host = HostInfo::detect();
    let mut outcome = Outcome {
        memory: None,
        udp: None,
    };
    if args.transport != Transport::Udp {
        let report = run(&config)?;
        print!("{}", report.table(&host));
        outcome.memory = Some(report);
    }
    if args.transport != Transport::Memory {
        let report = udp::run(&udp_config)?;
        if outcome.memory.is_none() {
            println!(
                "dtls-bench peers: B8 ours vs {} (DTLS 1.2); cpu: {} ({} logical cores), kernel {}, {}",
                openssl::version::version(),
                host.cpu,
                host.cores,
                host.kernel,
                host.aead_impl()
            );
        }
        print!("{}", report.table());
        outcome.udp = Some(report);
    }
    let invalid = outcome.invalid_reasons();
    if !invalid.is_empty() {
        println!("INVALID: {}", invalid.join("; "));
    }
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&outcome.json(&host))
            .map_err(|e| PeersError::Options(format!("JSON: {e}")))?;
        std::fs::write(path, text + "\n")
            .map_err(|e| PeersError::Options(format!("{}: cannot write: {e}", path.display())))?;
        eprintln!("wrote {}", path.display());
    }
    Ok(outcome)
}
