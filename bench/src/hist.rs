//! Latency histograms and their files: HdrHistogram `.hgrm` (percentile distribution text, as
//! HdrHistogram's `outputPercentileDistribution` and wrk2 print it) and `.hlog` (interval log
//! of V2 deflate-compressed histograms, with the version and legend header lines that
//! HistogramLogAnalyzer and HistogramLogProcessor expect).
//!
//! Values are recorded in nanoseconds (1 ns to 60 s, 3 significant digits); the `.hgrm` text
//! prints them in microseconds (scaling ratio 1000) and the `.hlog` max column in
//! milliseconds (max value divisor 10^6), which is what those tools assume.
//!
//! What it does not do: read `.hgrm` back (the format is for people and plotters) or
//! correct for coordinated omission (callers record from the intended send time).

use std::fmt::Write as _;
use std::time::{Duration, SystemTime};

use hdrhistogram::Histogram;
use hdrhistogram::serialization::V2DeflateSerializer;
use hdrhistogram::serialization::interval_log::IntervalLogWriterBuilder;

/// Significant decimal digits kept (BENCHMARKS.md: 3).
pub const SIGFIG: u8 = 3;
/// Highest trackable latency, ns (60 s).
pub const HIGHEST_NS: u64 = 60_000_000_000;
/// `.hgrm` values are printed in µs: ns divided by this.
pub const HGRM_SCALE: f64 = 1000.0;
/// `.hlog` interval max column is in ms: ns divided by this.
pub const HLOG_MAX_DIVISOR: f64 = 1_000_000.0;
/// Percentile ticks per half distance, as HdrHistogram's and wrk2's default output.
const TICKS_PER_HALF_DISTANCE: u32 = 5;

/// Errors of the histogram writers.
#[derive(Debug, thiserror::Error)]
pub enum HistError {
    /// The histogram could not be created (bad bounds).
    #[error("histogram bounds: {0:?}")]
    Creation(hdrhistogram::CreationError),
    /// Serializing an interval failed.
    #[error("interval log: {0}")]
    Log(String),
}

/// A new latency histogram in ns, 3 significant digits.
pub fn new_latency_ns() -> Result<Histogram<u64>, HistError> {
    Histogram::new_with_bounds(1, HIGHEST_NS, SIGFIG).map_err(HistError::Creation)
}

/// Sub-buckets per bucket for `sigfig` significant digits (HdrHistogram's `subBucketCount`).
fn sub_bucket_count(sigfig: u8) -> u64 {
    (2 * 10u64.pow(u32::from(sigfig))).next_power_of_two()
}

/// The percentile distribution of `h` as HdrHistogram prints it: header, one row per
/// percentile tick (value, percentile, total count, 1/(1-percentile)), then the
/// `#[Mean …]`, `#[Max …]` and `#[Buckets …]` footer. Values divided by `scale`.
pub fn hgrm(h: &Histogram<u64>, scale: f64) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:>12} {:>14} {:>10} {:>14}\n",
        "Value", "Percentile", "TotalCount", "1/(1-Percentile)"
    );
    let mut total = 0u64;
    if !h.is_empty() {
        for v in h.iter_quantiles(TICKS_PER_HALF_DISTANCE) {
            total += v.count_since_last_iteration();
            let value = h.highest_equivalent(v.value_iterated_to()) as f64 / scale;
            let q = v.quantile_iterated_to();
            if q < 1.0 {
                let _ = writeln!(
                    s,
                    "{value:12.3} {q:2.12} {total:10} {:14.2}",
                    1.0 / (1.0 - q)
                );
            } else {
                let _ = writeln!(s, "{value:12.3} {q:2.12} {total:10}");
            }
        }
    }
    let _ = writeln!(
        s,
        "#[Mean    = {:12.3}, StdDeviation   = {:12.3}]",
        h.mean() / scale,
        h.stdev() / scale
    );
    let _ = writeln!(
        s,
        "#[Max     = {:12.3}, Total count    = {:12}]",
        h.max() as f64 / scale,
        h.len()
    );
    let _ = writeln!(
        s,
        "#[Buckets = {:12}, SubBuckets     = {:12}]",
        h.buckets(),
        sub_bucket_count(h.sigfig())
    );
    s
}

/// One interval of an `.hlog`: its histogram, start offset from the log's base time, length.
#[derive(Debug, Clone)]
pub struct Interval {
    /// Start, relative to the log's start time.
    pub start: Duration,
    /// Length of the interval.
    pub length: Duration,
    /// Latencies recorded during it, ns.
    pub histogram: Histogram<u64>,
}

/// An HdrHistogram interval log (format version 1.3) of `intervals`, started at `start`
/// (written as StartTime and BaseTime; interval timestamps are offsets from it).
pub fn hlog(start: SystemTime, intervals: &[Interval]) -> Result<Vec<u8>, HistError> {
    let mut buf = Vec::new();
    let mut serializer = V2DeflateSerializer::new();
    {
        let mut header = IntervalLogWriterBuilder::new();
        header
            .add_comment("[Logged with dtls-bench]")
            .add_comment("[Histogram log format version 1.3]")
            .with_start_time(start)
            .with_base_time(start)
            .with_max_value_divisor(HLOG_MAX_DIVISOR);
        header
            .begin_log_with(&mut buf, &mut serializer)
            .map_err(|e| HistError::Log(e.to_string()))?;
    }
    buf.extend_from_slice(
        b"\"StartTimestamp\",\"Interval_Length\",\"Interval_Max\",\"Interval_Compressed_Histogram\"\n",
    );
    let mut builder = IntervalLogWriterBuilder::new();
    builder.with_max_value_divisor(HLOG_MAX_DIVISOR);
    // The divisor line was written with the header; a second builder only writes intervals.
    let mut body = Vec::new();
    {
        let mut writer = builder
            .begin_log_with(&mut body, &mut serializer)
            .map_err(|e| HistError::Log(e.to_string()))?;
        for i in intervals {
            writer
                .write_histogram(&i.histogram, i.start, i.length, None)
                .map_err(|e| HistError::Log(e.to_string()))?;
        }
    }
    // Drop the second builder's repeated `#[MaxValueDivisor …]` line.
    let skip = if body.starts_with(b"#[MaxValueDivisor") {
        body.iter().position(|&b| b == b'\n').map_or(0, |p| p + 1)
    } else {
        0
    };
    buf.extend_from_slice(&body[skip..]);
    Ok(buf)
}

/// Latency percentiles (ns) for the JSON report.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Percentiles {
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th.
    pub p99: u64,
    /// 99.9th.
    pub p999: u64,
    /// 99.99th.
    pub p9999: u64,
    /// Largest recorded.
    pub max: u64,
    /// Samples.
    pub count: u64,
    /// Mean.
    pub mean: f64,
}

impl Percentiles {
    /// Reads the percentiles from `h` (all zero when empty).
    pub fn of(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Self::default();
        }
        Self {
            p50: h.value_at_quantile(0.5),
            p90: h.value_at_quantile(0.9),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            p9999: h.value_at_quantile(0.9999),
            max: h.max(),
            count: h.len(),
            mean: h.mean(),
        }
    }

    /// `{"p50", "p90", "p99", "p999", "p9999", "max", "count", "mean"}`, ns.
    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "p50": self.p50, "p90": self.p90, "p99": self.p99, "p999": self.p999,
            "p9999": self.p9999, "max": self.max, "count": self.count, "mean": self.mean,
        })
    }

    /// One line: `p50 … µs, p90 …, …, max …`.
    pub fn line_us(&self) -> String {
        let us = |v: u64| v as f64 / 1000.0;
        format!(
            "p50 {:.1} µs, p90 {:.1}, p99 {:.1}, p99.9 {:.1}, p99.99 {:.1}, max {:.1} ({} samples)",
            us(self.p50),
            us(self.p90),
            us(self.p99),
            us(self.p999),
            us(self.p9999),
            us(self.max),
            self.count
        )
    }
}
