//! The `.hgrm` and `.hlog` writers produce files that parse back.

use std::time::{Duration, SystemTime};

use bench::hist::{self, HGRM_SCALE, Interval, Percentiles};
use hdrhistogram::Histogram;
use hdrhistogram::serialization::Deserializer;
use hdrhistogram::serialization::interval_log::{IntervalLogIterator, LogEntry};

fn sample(seed: u64, n: u64) -> Histogram<u64> {
    let mut h = hist::new_latency_ns().expect("valid bounds");
    let mut x = seed;
    for _ in 0..n {
        // xorshift: a spread of values from ~1 µs to ~10 ms.
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        h.record(1_000 + x % 10_000_000).expect("in range");
    }
    h
}

#[test]
fn hgrm_has_header_ascending_rows_and_footer() {
    let h = sample(7, 10_000);
    let text = hist::hgrm(&h, HGRM_SCALE);
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().expect("header").split_whitespace().collect();
    assert_eq!(
        header,
        ["Value", "Percentile", "TotalCount", "1/(1-Percentile)"]
    );
    assert_eq!(lines.next(), Some(""), "blank line after the header");
    let mut rows = Vec::new();
    let mut footer = Vec::new();
    for l in lines {
        if l.starts_with("#[") {
            footer.push(l);
        } else {
            assert!(footer.is_empty(), "row after the footer: {l}");
            let f: Vec<&str> = l.split_whitespace().collect();
            assert!(f.len() == 3 || f.len() == 4, "row {l:?}");
            let value: f64 = f[0].parse().expect("value");
            let pct: f64 = f[1].parse().expect("percentile");
            let count: u64 = f[2].parse().expect("count");
            rows.push((value, pct, count));
        }
    }
    assert!(rows.len() > 20, "{} rows", rows.len());
    for w in rows.windows(2) {
        assert!(w[1].0 >= w[0].0, "values ascend: {w:?}");
        assert!(w[1].1 >= w[0].1, "percentiles ascend: {w:?}");
        assert!(w[1].2 >= w[0].2, "counts ascend: {w:?}");
    }
    let last = rows.last().expect("rows");
    assert_eq!(last.1, 1.0);
    assert_eq!(last.2, 10_000);
    assert!((last.0 - h.max() as f64 / HGRM_SCALE).abs() < 0.01 * last.0);
    assert_eq!(footer.len(), 3, "{footer:?}");
    assert!(footer[0].starts_with("#[Mean    =") && footer[0].contains("StdDeviation"));
    assert!(footer[1].starts_with("#[Max     =") && footer[1].contains("Total count"));
    assert!(footer[1].trim_end_matches(']').ends_with("10000"));
    assert!(
        footer[2].starts_with("#[Buckets =") && footer[2].contains("SubBuckets     =         2048")
    );
    let mean: f64 = footer[0]
        .split(['=', ','])
        .nth(1)
        .expect("mean")
        .trim()
        .parse()
        .expect("mean parses");
    assert!((mean - h.mean() / HGRM_SCALE).abs() < 0.01);
}

#[test]
fn hgrm_of_empty_histogram_has_footer_only() {
    let h = hist::new_latency_ns().expect("valid bounds");
    let text = hist::hgrm(&h, HGRM_SCALE);
    assert_eq!(text.lines().filter(|l| l.starts_with("#[")).count(), 3);
    assert!(text.contains("Total count    =            0"));
}

#[test]
fn hlog_reads_back_with_the_interval_log_reader() {
    let intervals: Vec<Interval> = (0..3)
        .map(|i| Interval {
            start: Duration::from_secs(i),
            length: Duration::from_secs(1),
            histogram: sample(i + 1, 1000 * (i + 1)),
        })
        .collect();
    let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let bytes = hist::hlog(start, &intervals).expect("log written");
    let text = String::from_utf8(bytes.clone()).expect("text");
    assert!(text.starts_with("#[Logged with dtls-bench]\n#[Histogram log format version 1.3]\n"));
    assert!(text.contains("\n\"StartTimestamp\",\"Interval_Length\",\"Interval_Max\",\"Interval_Compressed_Histogram\"\n"));
    let mut deser = Deserializer::new();
    let mut seen = 0;
    let mut start_time = None;
    for entry in IntervalLogIterator::new(&bytes) {
        match entry.expect("entry parses") {
            LogEntry::StartTime(t) => start_time = Some(t),
            LogEntry::BaseTime(_) => {}
            LogEntry::Interval(ilh) => {
                let want = &intervals[seen];
                assert_eq!(ilh.start_timestamp(), want.start);
                assert_eq!(ilh.duration(), want.length);
                let decoded = base64_decode(ilh.encoded_histogram());
                let h: Histogram<u64> = deser
                    .deserialize(&mut decoded.as_slice())
                    .expect("V2 compressed histogram decodes");
                assert_eq!(h, want.histogram);
                // The max column is in ms (divisor 10^6).
                assert!((ilh.max() - want.histogram.max() as f64 / 1e6).abs() < 0.001);
                seen += 1;
            }
        }
    }
    assert_eq!(seen, 3);
    assert_eq!(start_time, Some(Duration::from_secs(1_800_000_000)));
}

#[test]
fn percentiles_read_the_histogram() {
    let mut h = hist::new_latency_ns().expect("valid bounds");
    for v in 1..=10_000u64 {
        h.record(v * 1000).expect("in range");
    }
    let p = Percentiles::of(&h);
    assert_eq!(p.count, 10_000);
    assert!(p.p50.abs_diff(5_000_000) < 5_000_000 / 500);
    assert!(p.p99.abs_diff(9_900_000) < 9_900_000 / 500);
    assert!(p.p50 <= p.p90 && p.p90 <= p.p99 && p.p99 <= p.p999 && p.p999 <= p.p9999);
    assert!(p.p9999 <= p.max);
    assert_eq!(
        Percentiles::of(&hist::new_latency_ns().expect("bounds")).count,
        0
    );
}

/// Standard base64 (the `.hlog` histogram column), decoded by hand to keep the test free of
/// another dependency.
fn base64_decode(s: &str) -> Vec<u8> {
    let val = |c: u8| -> u32 {
        match c {
            b'A'..=b'Z' => u32::from(c - b'A'),
            b'a'..=b'z' => u32::from(c - b'a') + 26,
            b'0'..=b'9' => u32::from(c - b'0') + 52,
            b'+' => 62,
            b'/' => 63,
            _ => panic!("not base64: {c}"),
        }
    };
    let bytes: Vec<u8> = s.bytes().filter(|&c| c != b'=').collect();
    let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
    for chunk in bytes.chunks(4) {
        let mut acc = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            acc |= val(c) << (18 - 6 * i);
        }
        let n = chunk.len() * 6 / 8;
        for i in 0..n {
            out.push((acc >> (16 - 8 * i)) as u8);
        }
    }
    out
}
