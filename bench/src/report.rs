//! Text table and JSON for `dtls-bench records`.

use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use crate::compare::{Better, Figure, figures_json};
use crate::host::HostInfo;
use crate::records::{Config, Row, Stat, Version};

fn yes(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}

/// What a report calls the subject, the baseline and their ratio.
struct Labels {
    title: &'static str,
    ours: &'static str,
    baseline: &'static str,
    ratio: &'static str,
}

impl Labels {
    fn of(version: Version) -> Self {
        match version {
            Version::V12 => Self {
                title: "dtls-bench records: B0 record seal/open vs raw aws-lc-rs LessSafeKey, same buffers",
                ours: "ours",
                baseline: "raw",
                ratio: "ours/raw",
            },
            Version::V13 => Self {
                title: "dtls-bench records --version 1.3: B0 DTLS 1.3 record seal/open vs our DTLS 1.2 record layer, same buffers",
                ours: "1.3",
                baseline: "1.2",
                ratio: "1.3/1.2",
            },
        }
    }
}

/// The human-readable report.
pub fn table(host: &HostInfo, config: &Config, rows: &[Row]) -> String {
    let labels = Labels::of(config.version);
    let mut s = String::new();
    let _ = writeln!(s, "{}", labels.title);
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
        format!("{} ns", labels.ours),
        "(min..max)",
        format!("{} ns", labels.baseline),
        format!("{} GB/s", labels.ours),
        format!("{} GB/s", labels.baseline),
        labels.ratio,
        "(min..max)"
    );
    for r in rows {
        let (base_ns, base_gbps, ratio, spread) = match (r.baseline, r.ratio) {
            (Some(base), Some(ratio)) => (
                format!("{:.1}", base.median_ns),
                format!("{:.2}", base.gbps(r.size)),
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
            base_ns,
            r.ours.gbps(r.size),
            base_gbps,
            ratio,
            spread
        );
    }
    let _ = writeln!(
        s,
        "{r} = median over runs of ({b} ns / {o} ns) of the same paired run; goal >= 0.95 at 1200 B",
        r = labels.ratio,
        b = labels.baseline,
        o = labels.ours,
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

/// The tracked figures of B0 (the `figures` array `dtls-bench compare` reads). DTLS 1.2:
/// per row `records.<op>.<cipher>.<size>.ns_per_record` (lower is better) and, where raw
/// aws-lc-rs ran too, `records.<op>.<cipher>.<size>.ratio_to_raw` (higher is better).
/// DTLS 1.3: `records13.<op>.<cipher>.<size>.ns_per_record` and
/// `records13.<op>.<cipher>.<size>.ratio_to_v12` (1.2 ns / 1.3 ns of the same run).
pub fn figures(version: Version, rows: &[Row]) -> Vec<Figure> {
    let (prefix, ratio_name) = match version {
        Version::V12 => ("records", "ratio_to_raw"),
        Version::V13 => ("records13", "ratio_to_v12"),
    };
    let mut out = Vec::new();
    for r in rows {
        let base = format!("{prefix}.{}.{}.{}", r.op.name(), r.cipher.name(), r.size);
        out.push(Figure::new(
            format!("{base}.ns_per_record"),
            r.ours.median_ns,
            "ns",
            Better::Lower,
        ));
        if let Some(ratio) = r.ratio() {
            out.push(Figure::new(
                format!("{base}.{ratio_name}"),
                ratio,
                "ratio",
                Better::Higher,
            ));
        }
    }
    out
}

/// The JSON document (BENCHMARKS.md schema: tool, version, timestamp, host, config,
/// results). DTLS 1.2 keeps the original fields (`ours`, `raw`, `ratio_ours_raw*`,
/// `ratios`); DTLS 1.3 adds `config.dtls_version` and names its fields after what they
/// compare (`v13`, `v12`, `ratio_v13_v12*`, `ratios_v13_v12`).
pub fn json(host: &HostInfo, config: &Config, rows: &[Row]) -> Value {
    let (ours_key, base_key, ratio_key, ratios_key) = match config.version {
        Version::V12 => ("ours", "raw", "ratio_ours_raw", "ratios"),
        Version::V13 => ("v13", "v12", "ratio_v13_v12", "ratios_v13_v12"),
    };
    let records: Vec<Value> = rows
        .iter()
        .map(|r| {
            let mut o = serde_json::Map::new();
            o.insert("cipher".into(), json!(r.cipher.name()));
            o.insert("size".into(), json!(r.size));
            o.insert("op".into(), json!(r.op.name()));
            o.insert(ours_key.into(), stat_json(&r.ours, r.size));
            o.insert(
                base_key.into(),
                json!(r.baseline.map(|b| stat_json(&b, r.size))),
            );
            o.insert(ratio_key.into(), json!(r.ratio()));
            o.insert(format!("{ratio_key}_min"), json!(r.ratio.map(|x| x.min_ns)));
            o.insert(format!("{ratio_key}_max"), json!(r.ratio.map(|x| x.max_ns)));
            Value::Object(o)
        })
        .collect();
    let ratios: serde_json::Map<String, Value> = rows
        .iter()
        .filter_map(|r| {
            let key = format!("{}_{}_{}", r.op.name(), r.cipher.name(), r.size);
            r.ratio().map(|x| (key, json!(x)))
        })
        .collect();
    let mut cfg = json!({
        "benchmark": "B0",
        "sizes": config.sizes,
        "ciphers": config.ciphers.iter().map(|c| c.name()).collect::<Vec<_>>(),
        "runs": config.runs,
        "warmup_runs": 1,
        "batch": config.batch,
        "min_run_ms": config.min_run.as_millis() as u64,
    });
    if config.version == Version::V13 {
        cfg["dtls_version"] = json!(config.version.name());
        cfg["baseline"] = json!("dtls 1.2 record layer");
    }
    let mut results = serde_json::Map::new();
    results.insert("records".into(), Value::Array(records));
    results.insert(ratios_key.into(), Value::Object(ratios));
    json!({
        "figures": figures_json(&figures(config.version, rows)),
        "tool": "dtls-bench records",
        "version": env!("CARGO_PKG_VERSION"),
        "timestamp": rfc3339_now(),
        "host": host.to_json(),
        "config": cfg,
        "results": results,
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

    /// Fixed host facts, so tables and documents can be compared whole.
    fn fixed_host() -> HostInfo {
        HostInfo {
            cpu: "Test CPU".into(),
            cores: 2,
            kernel: "6.1.0".into(),
            aes_ni: true,
            pclmulqdq: true,
            vaes: false,
            vpclmulqdq: false,
            avx2: true,
            avx512f: false,
            arm_aes: false,
        }
    }

    /// The DTLS 1.2 report, table and JSON, exactly as before `--version` existed.
    #[test]
    fn records_v12_report_is_unchanged() {
        let st = |ns, lo, hi| Stat {
            median_ns: ns,
            min_ns: lo,
            max_ns: hi,
        };
        let rows = vec![
            Row {
                cipher: Cipher::Aes128gcm,
                size: 1200,
                op: Op::Open,
                ours: st(400.0, 390.5, 420.25),
                baseline: Some(st(384.0, 380.0, 390.0)),
                ratio: Some(st(0.96, 0.95, 0.975)),
            },
            Row {
                cipher: Cipher::None,
                size: 64,
                op: Op::Seal,
                ours: st(16.0, 15.5, 17.0),
                baseline: None,
                ratio: None,
            },
        ];
        let config = Config {
            version: Version::V12,
            sizes: vec![64, 1200],
            ciphers: vec![Cipher::Aes128gcm, Cipher::None],
            runs: 5,
            batch: 8,
            min_run: Duration::from_millis(3),
        };
        let host = fixed_host();
        let expected_table = concat!(
            "dtls-bench records: B0 record seal/open vs raw aws-lc-rs LessSafeKey, same buffers\n",
            "cpu: Test CPU (2 logical cores), kernel 6.1.0\n",
            "AES-NI: yes  PCLMULQDQ: yes  VAES: no  VPCLMULQDQ: no  AVX2: yes  AVX-512F: no  -> aws-lc AES-GCM AES-NI/PCLMULQDQ\n",
            "median of 5 runs after 1 warm-up run; a run = median pass of 8 records, >= 3 ms timed\n",
            "cipher              size op       ours ns          (min..max)     raw ns ours GB/s  raw GB/s  ours/raw      (min..max)\n",
            "aes128gcm           1200 open       400.0      (390.5..420.2)      384.0      3.00      3.12     0.960  (0.950..0.975)\n",
            "none                  64 seal        16.0        (15.5..17.0)          -      4.00         -         -                \n",
            "ours/raw = median over runs of (raw ns / ours ns) of the same paired run; goal >= 0.95 at 1200 B\n",
        );
        assert_eq!(table(&host, &config, &rows), expected_table);
        let mut v = json(&host, &config, &rows);
        v["timestamp"] = json!("T");
        v["version"] = json!("V");
        let text = serde_json::to_string_pretty(&v).expect("serializes") + "\n";
        assert_eq!(text, include_str!("../tests/data/records_v12_report.json"));
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
                baseline: Some(st(380.0)),
                ratio: Some(st(0.95)),
            },
            Row {
                cipher: Cipher::None,
                size: 1200,
                op: Op::Open,
                ours: st(10.0),
                baseline: None,
                ratio: None,
            },
        ];
        let config = Config {
            version: Version::V12,
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

    #[test]
    fn records_v13_report_names_what_it_compares() {
        let st = |ns| Stat {
            median_ns: ns,
            min_ns: ns,
            max_ns: ns,
        };
        let rows = vec![Row {
            cipher: Cipher::Chacha20poly1305,
            size: 1200,
            op: Op::Open,
            ours: st(500.0),
            baseline: Some(st(480.0)),
            ratio: Some(st(0.96)),
        }];
        let config = Config {
            version: Version::V13,
            sizes: vec![1200],
            ciphers: vec![Cipher::Chacha20poly1305],
            runs: 5,
            batch: 8,
            min_run: Duration::from_millis(1),
        };
        let host = fixed_host();
        let t = table(&host, &config, &rows);
        let header = t.lines().nth(4).expect("column header");
        for col in ["1.3 ns", "1.2 ns", "1.3 GB/s", "1.2 GB/s", "1.3/1.2"] {
            assert!(header.contains(col), "{t}");
        }
        assert!(!t.contains("raw") && !t.contains("ours"), "{t}");
        assert!(t.contains("0.960"), "{t}");
        assert!(t.contains("(1.2 ns / 1.3 ns)"), "{t}");

        let v = json(&host, &config, &rows);
        assert_eq!(v["config"]["dtls_version"], json!("1.3"));
        let rec = &v["results"]["records"][0];
        assert_eq!(rec["v13"]["median_ns"], json!(500.0));
        assert_eq!(rec["v12"]["median_ns"], json!(480.0));
        assert_eq!(rec["ratio_v13_v12"], json!(0.96));
        assert_eq!(rec["ratio_v13_v12_min"], json!(0.96));
        assert_eq!(rec["ratio_v13_v12_max"], json!(0.96));
        for old in ["ours", "raw", "ratio_ours_raw"] {
            assert!(rec.get(old).is_none(), "{rec}");
        }
        assert_eq!(
            v["results"]["ratios_v13_v12"]["open_chacha20poly1305_1200"],
            json!(0.96)
        );
        assert!(v["results"].get("ratios").is_none());
        let figs = crate::compare::figures_from_json(&v).expect("figures array");
        let names: Vec<&str> = figs.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "records13.open.chacha20poly1305.1200.ns_per_record",
                "records13.open.chacha20poly1305.1200.ratio_to_v12",
            ]
        );
    }
}
