//! `dtls-bench impair`: a UDP impairment proxy (these machines have no netem).
//!
//! What it does: clients send to the proxy's listen address; the proxy forwards each
//! datagram to the target from a per-client upstream socket (so the target sees one flow
//! per client) and relays the target's replies back to that client. Both directions are
//! impaired independently: loss, duplication, reordering and a fixed extra delay, decided
//! by a seeded PRNG so that a seeded run makes the same decisions for the same traffic.
//!
//! Decisions, per datagram and per direction, in this order (three PRNG draws each, always,
//! so the decision sequence does not depend on earlier outcomes):
//! 1. loss with probability `loss`: the datagram is dropped, nothing else applies;
//! 2. duplication with probability `dup`: a second copy is sent right after the first;
//! 3. reordering with probability `reorder`: the datagram (with its copy) is held and sent
//!    right after the next datagram of the same direction and flow that is not held, or
//!    when the hold time runs out, whichever comes first.
//!
//! Every sent datagram leaves `delay` after it arrived (a held one: after it was released,
//! but never before its own due time).
//!
//! What it does not do: rate limiting, bandwidth shaping, corruption, jitter, MTU
//! enforcement, or expiring idle flows (a flow lives until the proxy stops; at most
//! `max_flows` at once). Probabilities are fractions in `0..=1`; a `%` suffix reads a percentage.
//!
//! The pure parts ([`Impairer`], [`Lane`]) have no sockets and no clock of their own; the
//! socket side is [`Proxy`].

mod proxy;

use std::collections::VecDeque;
use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::{Duration, Instant};

pub use proxy::{DirectionStats, Proxy, ProxyHandle, ProxyStats};

/// Errors of the impairment proxy.
#[derive(Debug, thiserror::Error)]
pub enum ImpairError {
    /// A probability outside `0..=1` (or `0%..=100%`), or not a number.
    #[error(
        "{flag}: invalid probability {value:?}: expected a fraction in 0..=1 or a percentage 0%..=100%"
    )]
    Probability {
        /// The option or field name.
        flag: &'static str,
        /// What was given.
        value: String,
    },
    /// A delay or hold time above [`MAX_WAIT`].
    #[error("{flag}: {value:?} is longer than the maximum of {MAX_WAIT:?}")]
    Wait {
        /// The option or field name.
        flag: &'static str,
        /// What was given.
        value: Duration,
    },
    /// An address that does not parse or resolve.
    #[error("{flag}: invalid address {value:?}: {reason}")]
    Address {
        /// The option or field name.
        flag: &'static str,
        /// What was given.
        value: String,
        /// Why it was rejected.
        reason: String,
    },
    /// A socket operation failed while starting the proxy.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// Longest `delay` or `hold` accepted (keeps every deadline computation in range).
pub const MAX_WAIT: Duration = Duration::from_secs(3600);

/// Parses a probability: a fraction in `0..=1` (`0.1`) or a percentage (`10%`).
pub fn parse_probability(flag: &'static str, s: &str) -> Result<f64, ImpairError> {
    let bad = || ImpairError::Probability {
        flag,
        value: s.to_string(),
    };
    let t = s.trim();
    let p = match t.strip_suffix('%') {
        Some(pct) => pct.trim().parse::<f64>().map_err(|_| bad())? / 100.0,
        None => t.parse::<f64>().map_err(|_| bad())?,
    };
    if p.is_finite() && (0.0..=1.0).contains(&p) {
        Ok(p)
    } else {
        Err(bad())
    }
}

/// Parses `host:port` (IP literal or a name that resolves; the first address is used).
pub fn parse_addr(flag: &'static str, s: &str) -> Result<SocketAddr, ImpairError> {
    let bad = |reason: String| ImpairError::Address {
        flag,
        value: s.to_string(),
        reason,
    };
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(a);
    }
    let mut addrs = s.to_socket_addrs().map_err(|e| bad(e.to_string()))?;
    addrs
        .next()
        .ok_or_else(|| bad("resolves to no address".into()))
}

/// What to do to the datagrams of one direction.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Impairments {
    /// Probability of dropping a datagram (`0..=1`).
    pub loss: f64,
    /// Probability of sending a second copy (`0..=1`).
    pub dup: f64,
    /// Probability of holding a datagram until after the next one (`0..=1`).
    pub reorder: f64,
    /// Extra delay added to every datagram.
    pub delay: Duration,
    /// Longest a reordered datagram waits for a successor before it is sent anyway.
    pub hold: Duration,
}

impl Default for Impairments {
    fn default() -> Self {
        Self {
            loss: 0.0,
            dup: 0.0,
            reorder: 0.0,
            delay: Duration::ZERO,
            hold: Duration::from_millis(10),
        }
    }
}

impl Impairments {
    /// Checks every probability is a number in `0..=1` and the delay and hold are at most
    /// [`MAX_WAIT`].
    pub fn validate(&self) -> Result<(), ImpairError> {
        for (flag, value) in [("--delay", self.delay), ("--hold", self.hold)] {
            if value > MAX_WAIT {
                return Err(ImpairError::Wait { flag, value });
            }
        }
        for (flag, p) in [
            ("--loss", self.loss),
            ("--dup", self.dup),
            ("--reorder", self.reorder),
        ] {
            if !(p.is_finite() && (0.0..=1.0).contains(&p)) {
                return Err(ImpairError::Probability {
                    flag,
                    value: p.to_string(),
                });
            }
        }
        Ok(())
    }
}

/// Proxy configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct ImpairConfig {
    /// Where clients send (port 0 picks a free port; see [`ProxyHandle::local_addr`]).
    pub listen: SocketAddr,
    /// Where datagrams are forwarded.
    pub forward: SocketAddr,
    /// Client → target impairments.
    pub to_server: Impairments,
    /// Target → client impairments.
    pub to_client: Impairments,
    /// PRNG seed: flow `i` (in order of first datagram) direction `d` uses a stream derived
    /// from `(seed, i, d)`.
    pub seed: u64,
    /// Most client flows at once; datagrams from further clients are dropped and counted.
    pub max_flows: usize,
}

impl ImpairConfig {
    /// The same impairments both ways.
    pub fn symmetric(listen: SocketAddr, forward: SocketAddr, imp: Impairments, seed: u64) -> Self {
        Self {
            listen,
            forward,
            to_server: imp,
            to_client: imp,
            seed,
            max_flows: 1024,
        }
    }
}

/// SplitMix64 step (used to seed and to derive per-lane seeds).
fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// xoshiro256** (Blackman and Vigna), seeded through SplitMix64.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Xoshiro256 {
    s: [u64; 4],
}

impl Xoshiro256 {
    /// A generator whose whole output is fixed by `seed`.
    pub fn new(seed: u64) -> Self {
        let mut sm = seed;
        Self {
            s: [
                splitmix64(&mut sm),
                splitmix64(&mut sm),
                splitmix64(&mut sm),
                splitmix64(&mut sm),
            ],
        }
    }

    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let result = self.s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = self.s[1] << 17;
        self.s[2] ^= self.s[0];
        self.s[3] ^= self.s[1];
        self.s[1] ^= self.s[2];
        self.s[0] ^= self.s[3];
        self.s[2] ^= t;
        self.s[3] = self.s[3].rotate_left(45);
        result
    }

    /// Uniform in `[0, 1)` with 53 bits of precision.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

/// The seed of one lane: flow `flow` (0-based, in order of arrival), direction `dir`
/// (0 = to server, 1 = to client).
pub fn lane_seed(seed: u64, flow: u64, dir: u64) -> u64 {
    let mut s = seed ^ flow.wrapping_mul(0x2545_f491_4f6c_dd1d) ^ (dir << 63);
    splitmix64(&mut s)
}

/// The fate of one datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Decision {
    /// Dropped (then `duplicate` and `reorder` are false).
    pub drop: bool,
    /// Sent twice.
    pub duplicate: bool,
    /// Held until after the next datagram.
    pub reorder: bool,
}

/// Seeded per-datagram decisions, no sockets and no clock.
#[derive(Debug, Clone)]
pub struct Impairer {
    rng: Xoshiro256,
    loss: f64,
    dup: f64,
    reorder: f64,
}

impl Impairer {
    /// Decisions for `imp` from the PRNG stream of `seed`.
    pub fn new(imp: &Impairments, seed: u64) -> Self {
        Self {
            rng: Xoshiro256::new(seed),
            loss: imp.loss,
            dup: imp.dup,
            reorder: imp.reorder,
        }
    }

    /// The next datagram's fate. Always takes three draws, so decision `n` depends only on
    /// the seed and `n`.
    pub fn decide(&mut self) -> Decision {
        let (l, d, r) = (
            self.rng.next_f64(),
            self.rng.next_f64(),
            self.rng.next_f64(),
        );
        let drop = l < self.loss;
        Decision {
            drop,
            duplicate: !drop && d < self.dup,
            reorder: !drop && r < self.reorder,
        }
    }
}

/// One direction of one flow: decisions plus the hold and delay queues. Pure: the caller
/// passes `now` and sends what [`Lane::poll_due`] returns.
pub struct Lane {
    impairer: Impairer,
    delay: Duration,
    hold: Duration,
    /// Held (reordered) datagrams: (own due time, bytes), in arrival order.
    held: Vec<(Instant, Vec<u8>)>,
    /// When the oldest held datagram was held.
    held_since: Option<Instant>,
    /// Ready to send at the given time, in order.
    queue: VecDeque<(Instant, Vec<u8>)>,
}

impl fmt::Debug for Lane {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lane")
            .field("held", &self.held.len())
            .field("queued", &self.queue.len())
            .finish_non_exhaustive()
    }
}

impl Lane {
    /// A lane with `imp`'s impairments and the PRNG stream of `seed` (delay and hold
    /// capped at [`MAX_WAIT`]).
    pub fn new(imp: &Impairments, seed: u64) -> Self {
        Self {
            impairer: Impairer::new(imp, seed),
            // Clamped so that deadline arithmetic cannot overflow, validated or not.
            delay: imp.delay.min(MAX_WAIT),
            hold: imp.hold.min(MAX_WAIT),
            held: Vec::new(),
            held_since: None,
            queue: VecDeque::new(),
        }
    }

    /// Takes one datagram that arrived at `now`; returns its fate.
    pub fn handle_datagram(&mut self, now: Instant, datagram: &[u8]) -> Decision {
        let d = self.impairer.decide();
        if d.drop {
            return d;
        }
        let due = now + self.delay;
        let copies = if d.duplicate { 2 } else { 1 };
        if d.reorder {
            for _ in 0..copies {
                self.held.push((due, datagram.to_vec()));
            }
            self.held_since.get_or_insert(now);
        } else {
            for _ in 0..copies {
                self.queue.push_back((due, datagram.to_vec()));
            }
            self.release_held(due);
        }
        d
    }

    /// Moves every held datagram behind the queue, due no earlier than `after`.
    fn release_held(&mut self, after: Instant) {
        for (due, dg) in self.held.drain(..) {
            self.queue.push_back((due.max(after), dg));
        }
        self.held_since = None;
    }

    /// The next datagram to send at `now`, if one is due (releases held datagrams whose
    /// hold time ran out first).
    pub fn poll_due(&mut self, now: Instant) -> Option<Vec<u8>> {
        if let Some(since) = self.held_since
            && now >= since + self.hold
        {
            self.release_held(now);
        }
        match self.queue.front() {
            Some((due, _)) if *due <= now => self.queue.pop_front().map(|(_, dg)| dg),
            _ => None,
        }
    }

    /// When [`Lane::poll_due`] next has something to do.
    pub fn next_deadline(&self) -> Option<Instant> {
        let q = self.queue.front().map(|(due, _)| *due);
        let h = self.held_since.map(|since| since + self.hold);
        match (q, h) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Datagrams held or queued.
    pub fn pending(&self) -> usize {
        self.held.len() + self.queue.len()
    }
}

/// `dtls-bench impair` options.
#[derive(Debug, Clone, clap::Args)]
pub struct ImpairArgs {
    /// Address clients send to (`host:port`; port 0 picks one, printed at start).
    #[arg(long, value_name = "ADDR", value_parser = |s: &str| parse_addr("--listen", s))]
    pub listen: SocketAddr,
    /// Address datagrams are forwarded to (`host:port`).
    #[arg(long, value_name = "ADDR", value_parser = |s: &str| parse_addr("--forward", s))]
    pub forward: SocketAddr,
    /// Loss probability per datagram, each direction: a fraction 0..=1 (0.1) or a
    /// percentage (10%).
    #[arg(long, value_name = "P", default_value = "0", value_parser = |s: &str| parse_probability("--loss", s))]
    pub loss: f64,
    /// Duplication probability per datagram not lost (fraction or percentage).
    #[arg(long, value_name = "P", default_value = "0", value_parser = |s: &str| parse_probability("--dup", s))]
    pub dup: f64,
    /// Reordering probability per datagram not lost (fraction or percentage): the datagram
    /// is held and sent after the next one, or after --hold milliseconds.
    #[arg(long, value_name = "P", default_value = "0", value_parser = |s: &str| parse_probability("--reorder", s))]
    pub reorder: f64,
    /// Fixed extra delay in milliseconds, each direction.
    #[arg(long, value_name = "MS", default_value_t = 0)]
    pub delay: u64,
    /// Longest a reordered datagram waits for a successor, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 10)]
    pub hold: u64,
    /// PRNG seed: the same seed makes the same decisions for the same traffic.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Most client flows at once (each has its own upstream socket and thread).
    #[arg(long, default_value_t = 1024)]
    pub max_flows: usize,
    /// Stop after this many seconds and print the counters (default: run until killed,
    /// counters printed every 10 s).
    #[arg(long, value_name = "SECS")]
    pub duration: Option<u64>,
}

impl ImpairArgs {
    /// The proxy configuration these options describe.
    pub fn config(&self) -> ImpairConfig {
        let imp = Impairments {
            loss: self.loss,
            dup: self.dup,
            reorder: self.reorder,
            delay: Duration::from_millis(self.delay),
            hold: Duration::from_millis(self.hold),
        };
        ImpairConfig {
            max_flows: self.max_flows,
            ..ImpairConfig::symmetric(self.listen, self.forward, imp, self.seed)
        }
    }
}

/// One line of counters.
pub fn stats_line(s: &ProxyStats) -> String {
    let d = |x: &DirectionStats| {
        format!(
            "in {} out {} dropped {} duplicated {} reordered {} send-errors {}",
            x.received, x.sent, x.dropped, x.duplicated, x.reordered, x.send_errors
        )
    };
    format!(
        "flows {} refused {} | to server: {} | to client: {}",
        s.flows,
        s.refused,
        d(&s.to_server),
        d(&s.to_client)
    )
}

/// Runs the proxy for `dtls-bench impair` (until `--duration` ends, or forever).
pub fn run_cli(args: &ImpairArgs) -> Result<ProxyStats, ImpairError> {
    let config = args.config();
    let proxy = Proxy::start(config.clone())?;
    eprintln!(
        "impair: listening on {}, forwarding to {} (loss {}, dup {}, reorder {}, delay {} ms, hold {} ms, seed {})",
        proxy.local_addr(),
        config.forward,
        args.loss,
        args.dup,
        args.reorder,
        args.delay,
        args.hold,
        args.seed
    );
    let start = Instant::now();
    let step = Duration::from_secs(10);
    loop {
        let left = args
            .duration
            .map(|d| Duration::from_secs(d).saturating_sub(start.elapsed()));
        if left == Some(Duration::ZERO) {
            break;
        }
        std::thread::sleep(left.map_or(step, |l| l.min(step)));
        if args.duration.is_none() {
            eprintln!("impair: {}", stats_line(&proxy.stats()));
        }
    }
    Ok(proxy.stop())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn imp(loss: f64, dup: f64, reorder: f64) -> Impairments {
        Impairments {
            loss,
            dup,
            reorder,
            ..Impairments::default()
        }
    }

    #[test]
    fn probabilities_parse_as_fraction_or_percent() {
        assert_eq!(parse_probability("--loss", "0.1").ok(), Some(0.1));
        assert_eq!(parse_probability("--loss", "10%").ok(), Some(0.1));
        assert_eq!(parse_probability("--loss", "0").ok(), Some(0.0));
        assert_eq!(parse_probability("--loss", "100%").ok(), Some(1.0));
        for bad in ["1.5", "-0.1", "101%", "abc", "NaN", "inf", ""] {
            let e = parse_probability("--dup", bad).expect_err(bad);
            assert!(e.to_string().starts_with("--dup: "), "{e}");
        }
        assert!(parse_addr("--forward", "127.0.0.1:9").is_ok());
        let e = parse_addr("--listen", "not an address").expect_err("bad address");
        assert!(e.to_string().starts_with("--listen: "), "{e}");
        assert!(imp(0.5, 0.0, 1.0).validate().is_ok());
        assert!(imp(0.0, 2.0, 0.0).validate().is_err());
        let slow = Impairments {
            delay: MAX_WAIT + Duration::from_millis(1),
            ..Impairments::default()
        };
        let e = slow.validate().expect_err("delay too long");
        assert!(e.to_string().starts_with("--delay: "), "{e}");
    }

    #[test]
    fn same_seed_same_decisions_other_seed_differs() {
        let i = imp(0.1, 0.1, 0.1);
        let run = |seed| {
            let mut im = Impairer::new(&i, seed);
            (0..10_000).map(|_| im.decide()).collect::<Vec<_>>()
        };
        assert_eq!(run(7), run(7));
        assert_ne!(run(7), run(8));
        assert_ne!(lane_seed(7, 0, 0), lane_seed(7, 0, 1));
        assert_ne!(lane_seed(7, 0, 0), lane_seed(7, 1, 0));
    }

    #[test]
    fn decision_rates_match_configuration() {
        let n = 100_000;
        let mut im = Impairer::new(&imp(0.2, 0.1, 0.05), 42);
        let (mut drop, mut dup, mut reo) = (0, 0, 0);
        for _ in 0..n {
            let d = im.decide();
            drop += usize::from(d.drop);
            dup += usize::from(d.duplicate);
            reo += usize::from(d.reorder);
            assert!(!(d.drop && (d.duplicate || d.reorder)));
        }
        let kept = (n - drop) as f64;
        assert!((drop as f64 / n as f64 - 0.2).abs() < 0.01, "{drop}");
        assert!((dup as f64 / kept - 0.1).abs() < 0.01, "{dup}");
        assert!((reo as f64 / kept - 0.05).abs() < 0.01, "{reo}");
        let mut none = Impairer::new(&imp(0.0, 0.0, 0.0), 1);
        let mut all = Impairer::new(&imp(1.0, 1.0, 1.0), 1);
        for _ in 0..1000 {
            assert_eq!(
                none.decide(),
                Decision {
                    drop: false,
                    duplicate: false,
                    reorder: false
                }
            );
            assert!(all.decide().drop);
        }
    }

    #[test]
    fn lane_reorders_duplicates_and_delays() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        // Always reorder: each datagram waits for the next, the last for the hold time.
        let mut lane = Lane::new(
            &Impairments {
                reorder: 1.0,
                hold: ms(5),
                ..Impairments::default()
            },
            3,
        );
        lane.handle_datagram(t0, b"a");
        assert_eq!(lane.poll_due(t0), None);
        assert_eq!(lane.next_deadline(), Some(t0 + ms(5)));
        assert_eq!(lane.poll_due(t0 + ms(5)).as_deref(), Some(&b"a"[..]));
        assert_eq!(lane.pending(), 0);

        // Reorder only the first: "a" goes out after "b".
        let mut lane = Lane::new(&imp(0.0, 0.0, 0.0), 3);
        lane.held.push((t0, b"a".to_vec()));
        lane.held_since = Some(t0);
        lane.handle_datagram(t0, b"b");
        assert_eq!(lane.poll_due(t0).as_deref(), Some(&b"b"[..]));
        assert_eq!(lane.poll_due(t0).as_deref(), Some(&b"a"[..]));
        assert_eq!(lane.poll_due(t0), None);

        // Duplicate and delay: two copies, both 20 ms later.
        let mut lane = Lane::new(
            &Impairments {
                dup: 1.0,
                delay: ms(20),
                ..Impairments::default()
            },
            3,
        );
        lane.handle_datagram(t0, b"x");
        assert_eq!(lane.poll_due(t0 + ms(19)), None);
        assert_eq!(lane.next_deadline(), Some(t0 + ms(20)));
        assert_eq!(lane.poll_due(t0 + ms(20)).as_deref(), Some(&b"x"[..]));
        assert_eq!(lane.poll_due(t0 + ms(20)).as_deref(), Some(&b"x"[..]));
        assert_eq!(lane.poll_due(t0 + ms(20)), None);

        // Loss 1: nothing ever comes out.
        let mut lane = Lane::new(&imp(1.0, 0.0, 0.0), 3);
        assert!(lane.handle_datagram(t0, b"y").drop);
        assert_eq!(lane.pending(), 0);
        assert_eq!(lane.next_deadline(), None);
    }
}
