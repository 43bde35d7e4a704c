//! Loss sweeps over seeded runs (TESTING.md "Loss / reorder"): full ECDHE-ECDSA handshakes
//! (cookie exchange included) through a channel that drops each datagram independently in
//! both directions. Completion is both sides holding keys (verified to match), measured on
//! the virtual clock. Prints the completion-time distribution.

mod support;

use std::time::Duration;

use control::CipherSuite;
use support::channel::Impairment;
use support::fixtures::*;
use support::pair::{Pair, PairConfig};

const RUNS: u64 = 1000;

struct Sweep {
    times: Vec<Option<Duration>>,
}

impl Sweep {
    fn run(loss: f64, limit: Duration, seed_base: u64) -> Self {
        let suite = CipherSuite::EcdheEcdsaAes128GcmSha256;
        let client = client_config(&[suite]);
        let server = server_config(&[suite]);
        let mut times = Vec::with_capacity(RUNS as usize);
        for seed in 0..RUNS {
            let imp = Impairment {
                loss,
                // Some reordering too: one-way delay 5 ms plus up to 20 ms on a third.
                reorder: 0.3,
                jitter: Duration::from_millis(20),
                ..Impairment::perfect()
            };
            let cfg = PairConfig::new(client.clone(), server.clone())
                .impaired(imp)
                .seed(seed_base + seed);
            let mut pair = Pair::new(cfg);
            let done = pair.handshake(limit);
            if done {
                pair.assert_keys_match();
                times.push(Some(pair.elapsed()));
            } else {
                times.push(None);
            }
        }
        Self { times }
    }

    fn completed(&self) -> usize {
        self.times.iter().flatten().count()
    }

    fn print(&self, name: &str) {
        let edges = [0.1, 0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 16.0, 30.0, 60.0];
        let mut counts = vec![0usize; edges.len()];
        for t in self.times.iter().flatten() {
            let s = t.as_secs_f64();
            let i = edges
                .iter()
                .position(|&e| s <= e)
                .unwrap_or(edges.len() - 1);
            counts[i] += 1;
        }
        let mut sorted: Vec<f64> = self
            .times
            .iter()
            .flatten()
            .map(Duration::as_secs_f64)
            .collect();
        sorted.sort_by(f64::total_cmp);
        let pct = |p: f64| {
            sorted
                .get(((sorted.len() as f64 * p) as usize).min(sorted.len().saturating_sub(1)))
                .copied()
                .unwrap_or(f64::NAN)
        };
        println!(
            "{name}: {}/{} complete ({:.2} %); p50 {:.3} s, p90 {:.3} s, p99 {:.3} s, max {:.3} s",
            self.completed(),
            self.times.len(),
            100.0 * self.completed() as f64 / self.times.len() as f64,
            pct(0.5),
            pct(0.9),
            pct(0.99),
            sorted.last().copied().unwrap_or(f64::NAN)
        );
        let mut lo = 0.0;
        for (e, c) in edges.iter().zip(&counts) {
            println!("  ({lo:>5.1} s, {e:>5.1} s]: {c}");
            lo = *e;
        }
        println!("  not complete: {}", self.times.len() - self.completed());
    }
}

#[test]
fn loss_10_percent_completes_999_permille_within_10s() {
    let sweep = Sweep::run(0.10, Duration::from_secs(10), 10_000);
    sweep.print("10 % loss, 10 s limit");
    assert!(
        sweep.completed() * 1000 >= 999 * RUNS as usize,
        "only {} of {RUNS} completed within 10 s at 10 % loss",
        sweep.completed()
    );
}

#[test]
fn loss_30_percent_completes_95_percent_within_30s() {
    let sweep = Sweep::run(0.30, Duration::from_secs(30), 20_000);
    sweep.print("30 % loss, 30 s limit");
    assert!(
        sweep.completed() * 100 >= 95 * RUNS as usize,
        "only {} of {RUNS} completed within 30 s at 30 % loss",
        sweep.completed()
    );
}
