//! Text table and JSON for `dtls-bench records`.

use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use crate::compare::{Better, Figure, figures_json};
use crate::host::HostInfo;
use crate::records::{Config, Row, Stat};

fn yes(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}

/// The human-readable report.
pub fn table(host: &HostInfo, config: &Config, rows: &[Row]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "dtls-bench records: B0 record seal/open vs raw aws-lc-rs LessSafeKey, same buffers"
    );
    let _ = writeln!(
        s,
        "cpu: {} ({} logical cores), kernel {}",
        host.cpu, host.cores, host.kernel
    );
    let _ = writeln!(
        s,
        "AES-NI: {}  PCLMULQDQ: {}  VAES: {}  VPCLMULQDQ: {}  AVX2: {}  AVX-512F: {}  -> {}",
        yes(host.aes_ni),
        yes(host.pclmulqdq),
        yes(host.vaes),
        yes(host.vpclmulqdq),
        yes(host.avx2),
        yes(host.avx512f),
        host.aead_impl()
    );
    let _ = writeln!(
        s,
        "median of {} runs after 1 warm-up run; a run = median pass of {} records, >= {} ms timed",
        config.runs,
        config.batch,
        config.min_run.as_millis()
    );
    let _ = writeln!(
        s,
        "{:<17} {:>6} {:<5} {:>10} {:>19} {:>10} {:>9} {:>9} {:>9} {:>15}",
        "cipher",
        "size",
        "op",
        "ours ns",
        "(min..max)",
        "raw ns",
        "ours GB/s",
        "raw GB/s",
        "ours/raw",
        "(min..max)"
    );
    for r in rows {
        let (raw_ns, raw_gbps, ratio, spread) = match (r.raw, r.ratio) {
            (Some(raw), Some(ratio)) => (
                format!("{:.1}", raw.median_ns),
                format!("{:.2}", raw.gbps(r.size)),
                format!("{:.3}", ratio.median_ns),
                format!("({:.3}..{:.3})", ratio.min_ns, ratio.max_ns),
            ),
            _ => ("-".into(), "-".into(), "-".into(), String::new()),
        };
        let _ = writeln!(
            s,
            "{:<17} {:>6} {:<5} {:>10.1} {:>19} {:>10} {:>9.2} {:>9} {:>9} {:>15}",
            r.cipher.name(),
            r.size,
            r.op.name(),
            r.ours.median_ns,
            format!("({:.1}..{:.1})", r.ours.min_ns, r.ours.max_ns),
            raw_ns,
            r.ours.gbps(r.size),
            raw_gbps,
            ratio,
            spread
        );
    }
    let _ = writeln!(
        s,
        "ours/raw = median over runs of (raw ns / ours ns) of the same paired run; goal >= 0.95 at 1200 B"
    );
    s
}

fn stat_json(st: &Stat, size: usize) -> Value {
    json!({
        "median_ns": st.median_ns,
        "min_ns": st.min_ns,
        "max_ns": st.max_ns,
        "records_per_s": 1e9 / st.median_ns,
        "gbps_payload": st.gbps(size),
    })
}

/// The tracked figures of B0 (the `figures` array `dtls-bench compare` reads): per row
/// `records.<op>.<cipher>.<size>.ns_per_record` (lower is better) and, where raw aws-lc-rs
/// ran too, `records.<op>.<cipher>.<size>.ratio_to_raw` (higher is better).
pub fn figures(rows: &[Row]) -> Vec<Figure> {
    let mut out = Vec::new();
    for r in rows {
        let base = format!("records.{}.{}.{}", r.op.name(), r.cipher.name(), r.size);
        out.push(Figure::new(
            format!("{base}.ns_per_record"),
            r.ours.median_ns,
            "ns",
            Better::Lower,
        ));
        if let Some(ratio) = r.ratio() {
            out.push(Figure::new(
                format!("{base}.ratio_to_raw"),
                ratio,
                "ratio",
                Better::Higher,
            ));
        }
    }
    out
}

/// The JSON document (BENCHMARKS.md schema: tool, version, timestamp, host, config, results).
pub fn json(host: &HostInfo, config: &Config, rows: &[Row]) -> Value {
    let records: Vec<Value> = rows
        .iter()
        .map(|r| {
            json!({
                "cipher": r.cipher.name(),
                "size": r.size,
                "op": r.op.name(),
                "ours": stat_json(&r.ours, r.size),
                "raw": r.raw.map(|raw| stat_json(&raw, r.size)),
                "ratio_ours_raw": r.ratio(),
                "ratio_ours_raw_min": r.ratio.map(|x| x.min_ns),
                "ratio_ours_raw_max": r.ratio.map(|x| x.max_ns),
            })
        })
        .collect();
    let ratios: serde_json::Map<String, Value> = rows
        .iter()
        .filter_map(|r| {
            let key = format!("{}_{}_{}", r.op.name(), r.cipher.name(), r.size);
            r.ratio().map(|x| (key, json!(x)))
        })
        .collect();
    json!({
        "figures": figures_json(&figures(rows)),
        "tool": "dtls-bench records",
        "version": env!("CARGO_PKG_VERSION"),
        "timestamp": rfc3339_now(),
        "host": host.to_json(),
        "config": {
            "benchmark": "B0",
            "sizes": config.sizes,
            "ciphers": config.ciphers.iter().map(|c| c.name()).collect::<Vec<_>>(),
            "runs": config.runs,
            "warmup_runs": 1,
            "batch": config.batch,
            "min_run_ms": config.min_run.as_millis() as u64,
        },
        "results": {
            "records": records,
            "ratios": ratios,
        },
    })
}

/// Current UTC time as RFC 3339 (`2026-01-02T03:04:05Z`).
pub fn rfc3339_now() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    rfc3339(secs)
}

/// Unix seconds as RFC 3339 UTC (civil-from-days, proleptic Gregorian).
pub fn rfc3339(unix_secs: u64) -> String {
    let days = (unix_secs / 86_400) as i64;
    let rem = unix_secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::{Cipher, Op};
    use std::time::Duration;

    #[test]
    fn rfc3339_known_points() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_798_761_599), "2026-12-31T23:59:59Z");
    }

    #[test]
    fn json_and_table_carry_the_ratio() {
        let st = |ns| Stat {
            median_ns: ns,
            min_ns: ns,
            max_ns: ns,
        };
        let rows = vec![
            Row {
                cipher: Cipher::Aes128gcm,
                size: 1200,
                op: Op::Seal,
                ours: st(400.0),
                raw: Some(st(380.0)),
                ratio: Some(st(0.95)),
            },
            Row {
                cipher: Cipher::None,
                size: 1200,
                op: Op::Open,
                ours: st(10.0),
                raw: None,
                ratio: None,
            },
        ];
        let config = Config {
            sizes: vec![1200],
            ciphers: vec![Cipher::Aes128gcm, Cipher::None],
            runs: 5,
            batch: 8,
            min_run: Duration::from_millis(1),
        };
        let host = HostInfo::from_cpuinfo("model name : X\nflags : aes pclmulqdq\n");
        let v = json(&host, &config, &rows);
        assert_eq!(v["results"]["ratios"]["seal_aes128gcm_1200"], json!(0.95));
        assert_eq!(v["results"]["records"][1]["raw"], Value::Null);
        assert_eq!(v["host"]["flags"]["aes_ni"], json!(true));
        let figs = crate::compare::figures_from_json(&v).expect("figures array");
        assert_eq!(figs.len(), 3);
        assert_eq!(figs[1].name, "records.seal.aes128gcm.1200.ratio_to_raw");
        assert_eq!(figs[1].value, 0.95);
        assert_eq!(figs[2].name, "records.open.none.1200.ns_per_record");
        let t = table(&host, &config, &rows);
        assert!(t.contains("0.950"), "{t}");
        assert!(t.contains("AES-NI: yes"), "{t}");
    }
}
