//! `/healthz`: whether every shard and the control thread are still turning.
//!
//! Each loop marks its [`Progress`](dtls_shard::Progress) once per turn (a relaxed store of
//! the clock reading it takes anyway). An idle shard still turns about every millisecond
//! (its epoll wait is bounded), and the control thread at least every few milliseconds, so
//! a stamp older than [`STALL_AFTER`] means that loop is stuck or gone: `/healthz` then
//! answers 503, which a liveness probe acts on.

use std::time::{Duration, Instant};

use super::Sources;

/// A loop whose last turn is older than this is reported stalled.
pub const STALL_AFTER: Duration = Duration::from_secs(5);

/// How long ago each loop last turned, read at one instant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Health {
    /// Each shard's age, in shard index order.
    pub shards: Vec<Duration>,
    /// The control thread's age.
    pub control: Duration,
}

impl Health {
    /// Reads every loop's stamp against `now`.
    pub fn read(sources: &Sources, now: Instant) -> Self {
        Self {
            shards: sources.shards.iter().map(|s| s.progress.age(now)).collect(),
            // The stalest handshake worker speaks for the control plane.
            control: sources
                .workers
                .iter()
                .map(|w| w.progress.age(now))
                .fold(sources.control_progress.age(now), Duration::max),
        }
    }

    /// Whether every loop turned within [`STALL_AFTER`].
    pub fn is_ok(&self) -> bool {
        self.shards
            .iter()
            .chain([&self.control])
            .all(|age| *age <= STALL_AFTER)
    }

    /// The JSON body of `/healthz`, e.g. `{"status":"ok","stall_after_ms":5000,
    /// "shards":[{"shard":0,"last_progress_ms":1,"ok":true}],"control":{"last_progress_ms":3,
    /// "ok":true}}`; `status` is `"stalled"` when a loop is.
    pub fn to_json(&self) -> String {
        let loop_age = |age: &Duration| LoopAge {
            last_progress_ms: millis(*age),
            ok: *age <= STALL_AFTER,
        };
        let body = Body {
            status: if self.is_ok() { "ok" } else { "stalled" },
            stall_after_ms: millis(STALL_AFTER),
            shards: self
                .shards
                .iter()
                .enumerate()
                .map(|(shard, age)| ShardAge {
                    shard,
                    age: loop_age(age),
                })
                .collect(),
            control: loop_age(&self.control),
        };
        // Serializing plain structs of numbers and strings cannot fail.
        let mut json = serde_json::to_string(&body).unwrap_or_default();
        json.push('\n');
        json
    }
}

/// The `/healthz` body, fields in this order.
#[derive(serde::Serialize)]
struct Body {
    status: &'static str,
    stall_after_ms: u64,
    shards: Vec<ShardAge>,
    control: LoopAge,
}

#[derive(serde::Serialize)]
struct ShardAge {
    shard: usize,
    #[serde(flatten)]
    age: LoopAge,
}

#[derive(serde::Serialize)]
struct LoopAge {
    last_progress_ms: u64,
    ok: bool,
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use dtls_io::IoCounters;
    use dtls_runtime::ControlCounters;
    use dtls_shard::{Progress, ShardCounters};

    use super::super::ShardSource;
    use super::*;

    fn sources(epoch: Instant, shards: usize) -> Sources {
        Sources {
            control: Arc::new(ControlCounters::default()),
            control_progress: Arc::new(Progress::new(epoch)),
            workers: Vec::new(),
            shards: (0..shards)
                .map(|_| ShardSource {
                    shard: Arc::new(ShardCounters::default()),
                    io: Arc::new(IoCounters::default()),
                    progress: Arc::new(Progress::new(epoch)),
                    snapshots: Arc::default(),
                    listen: std::net::SocketAddr::from(([127, 0, 0, 1], 4433)),
                })
                .collect(),
            certificates: Arc::default(),
            forwarding: None,
        }
    }

    #[test]
    fn fresh_stamps_are_ok_and_listed() {
        let epoch = Instant::now();
        let s = sources(epoch, 2);
        let now = epoch + Duration::from_secs(60);
        s.control_progress.mark(now - Duration::from_millis(3));
        for shard in &s.shards {
            shard.progress.mark(now - Duration::from_millis(1));
        }
        let health = Health::read(&s, now);
        assert!(health.is_ok());
        let json: serde_json::Value =
            serde_json::from_str(&health.to_json()).expect("healthz body is JSON");
        assert_eq!(json["status"], "ok");
        assert_eq!(json["control"]["last_progress_ms"], 3);
        let shards = json["shards"].as_array().expect("shards array");
        assert_eq!(shards.len(), 2);
        assert_eq!(shards[1]["shard"], 1);
        assert_eq!(shards[1]["last_progress_ms"], 1);
    }

    #[test]
    fn a_stale_stamp_is_stalled() {
        let epoch = Instant::now();
        let s = sources(epoch, 3);
        let now = epoch + Duration::from_secs(60);
        s.control_progress.mark(now);
        for shard in &s.shards {
            shard.progress.mark(now);
        }
        // Shard 1 stopped turning six seconds ago.
        s.shards[1].progress.mark(now - Duration::from_secs(6));
        let health = Health::read(&s, now);
        assert!(!health.is_ok());
        let json: serde_json::Value =
            serde_json::from_str(&health.to_json()).expect("healthz body is JSON");
        assert_eq!(json["status"], "stalled");
        assert_eq!(json["shards"][1]["ok"], false);
        assert_eq!(json["shards"][0]["ok"], true);

        // The control thread alone stuck is stalled too.
        s.shards[1].progress.mark(now);
        s.control_progress
            .mark(now - STALL_AFTER - Duration::from_millis(1));
        assert!(!Health::read(&s, now).is_ok());
    }
}
