//! Measurements as JSON (the committed baseline has the same shape) and the comparison
//! that gates CI.
//!
//! A workload fails the gate when it costs more than `tolerance` percent above the
//! baseline, or when the baseline has it and the current run does not (coverage lost).
//! Improvements beyond the tolerance pass with a hint to update the baseline; workloads the
//! baseline lacks pass with a hint too. A different valgrind, rustc or CPU feature set is a
//! warning, never a failure: counts depend on all three, so the baseline is to be
//! refreshed (`scripts/icount.sh --update`) when they change on purpose.

use std::fmt;

use anyhow::{Context as _, Result, bail};
use serde_json::{Map, Value, json};

use crate::workload::ALL;

/// Schema version of the JSON file.
const SCHEMA: u64 = 1;

/// One run of every workload, or the committed baseline.
#[derive(Debug, Clone, PartialEq)]
pub struct Measurement {
    /// `valgrind --version`.
    pub valgrind: String,
    /// `rustc --version` of the compiler that built the measured binary.
    pub rustc: String,
    /// CPU features seen under valgrind (they pick aws-lc's code path).
    pub cpu_features: String,
    /// The two iteration counts whose difference was measured.
    pub iterations: (u64, u64),
    /// Instructions per iteration by workload, in report order.
    pub workloads: Vec<(String, f64)>,
}

impl Measurement {
    /// The JSON document.
    pub fn to_json(&self) -> Value {
        let workloads: Map<String, Value> = self
            .workloads
            .iter()
            .map(|(name, v)| (name.clone(), json!(v)))
            .collect();
        json!({
            "tool": "dtls-icount",
            "schema": SCHEMA,
            "unit": "instructions per iteration (callgrind Ir)",
            "valgrind": self.valgrind,
            "rustc": self.rustc,
            "cpu_features": self.cpu_features,
            "iterations": [self.iterations.0, self.iterations.1],
            "workloads": workloads,
        })
    }

    /// Parses a document written by [`Measurement::to_json`].
    pub fn from_json(v: &Value) -> Result<Self> {
        let schema = v.get("schema").and_then(Value::as_u64);
        if schema != Some(SCHEMA) {
            bail!("unsupported schema {schema:?}, expected {SCHEMA}");
        }
        let text = |key: &str| -> Result<String> {
            v.get(key)
                .and_then(Value::as_str)
                .map(str::to_owned)
                .with_context(|| format!("missing string field {key:?}"))
        };
        let iterations = match v.get("iterations").and_then(Value::as_array) {
            Some(a) => match (
                a.first().and_then(Value::as_u64),
                a.get(1).and_then(Value::as_u64),
            ) {
                (Some(k1), Some(k2)) if a.len() == 2 => (k1, k2),
                _ => bail!("`iterations` must be two integers"),
            },
            None => bail!("missing field \"iterations\""),
        };
        let mut workloads = v
            .get("workloads")
            .and_then(Value::as_object)
            .context("missing object field \"workloads\"")?
            .iter()
            .map(|(name, x)| {
                x.as_f64()
                    .filter(|x| x.is_finite() && *x > 0.0)
                    .map(|x| (name.clone(), x))
                    .with_context(|| format!("workload {name:?}: not a positive number"))
            })
            .collect::<Result<Vec<_>>>()?;
        // Report order: known workloads as listed, then unknown ones as the file has them.
        workloads.sort_by_key(|(name, _)| {
            ALL.iter()
                .position(|w| w.name() == name)
                .unwrap_or(ALL.len())
        });
        Ok(Self {
            valgrind: text("valgrind")?,
            rustc: text("rustc")?,
            cpu_features: text("cpu_features")?,
            iterations,
            workloads,
        })
    }

    fn get(&self, name: &str) -> Option<f64> {
        self.workloads
            .iter()
            .find(|(n, _)| n == name)
            .map(|&(_, v)| v)
    }
}

/// The outcome for one workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Within the tolerance.
    Ok,
    /// More instructions than the baseline beyond the tolerance: fails the gate.
    Regression,
    /// Fewer instructions beyond the tolerance: passes; the baseline should be updated.
    Improvement,
    /// In the baseline but not measured: fails the gate.
    Missing,
    /// Measured but not in the baseline: passes; the baseline should be updated.
    New,
}

impl Verdict {
    fn label(self) -> &'static str {
        match self {
            Verdict::Ok => "ok",
            Verdict::Regression => "REGRESSION",
            Verdict::Improvement => "improved",
            Verdict::Missing => "MISSING",
            Verdict::New => "new",
        }
    }
}

/// One row of the comparison.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// Workload name.
    pub name: String,
    /// Current instructions per iteration.
    pub current: Option<f64>,
    /// Baseline instructions per iteration.
    pub baseline: Option<f64>,
    /// `(current - baseline) / baseline` in percent, when both exist.
    pub change_pct: Option<f64>,
    /// The outcome.
    pub verdict: Verdict,
}

/// Every row plus warnings about the environment.
#[derive(Debug, Clone, PartialEq)]
pub struct Comparison {
    /// Current workloads in order, then the baseline's missing ones.
    pub rows: Vec<Row>,
    /// Differences in valgrind, rustc, CPU features or iteration counts.
    pub warnings: Vec<String>,
    /// The tolerance used, in percent.
    pub tolerance_pct: f64,
}

impl Comparison {
    /// Whether the gate fails: a regression or a missing workload.
    pub fn failed(&self) -> bool {
        self.rows
            .iter()
            .any(|r| matches!(r.verdict, Verdict::Regression | Verdict::Missing))
    }

    /// Whether the baseline is out of date although the gate passes.
    pub fn suggests_update(&self) -> bool {
        self.rows
            .iter()
            .any(|r| matches!(r.verdict, Verdict::Improvement | Verdict::New))
    }
}

/// Compares `current` against `baseline` with a tolerance in percent.
pub fn compare(baseline: &Measurement, current: &Measurement, tolerance_pct: f64) -> Comparison {
    let mut rows = Vec::new();
    for (name, cur) in &current.workloads {
        let row = match baseline.get(name) {
            None => Row {
                name: name.clone(),
                current: Some(*cur),
                baseline: None,
                change_pct: None,
                verdict: Verdict::New,
            },
            Some(base) => {
                let change = (cur - base) / base * 100.0;
                let verdict = if change > tolerance_pct {
                    Verdict::Regression
                } else if change < -tolerance_pct {
                    Verdict::Improvement
                } else {
                    Verdict::Ok
                };
                Row {
                    name: name.clone(),
                    current: Some(*cur),
                    baseline: Some(base),
                    change_pct: Some(change),
                    verdict,
                }
            }
        };
        rows.push(row);
    }
    for (name, base) in &baseline.workloads {
        if current.get(name).is_none() {
            rows.push(Row {
                name: name.clone(),
                current: None,
                baseline: Some(*base),
                change_pct: None,
                verdict: Verdict::Missing,
            });
        }
    }
    let mut warnings = Vec::new();
    let mut differs = |what: &str, base: &str, cur: &str| {
        if base != cur {
            warnings.push(format!(
                "{what} differs from the baseline's (baseline: {base}; now: {cur}); \
                 instruction counts depend on it: update the baseline if the change is intended"
            ));
        }
    };
    differs("valgrind", &baseline.valgrind, &current.valgrind);
    differs("rustc", &baseline.rustc, &current.rustc);
    differs(
        "CPU features under valgrind",
        &baseline.cpu_features,
        &current.cpu_features,
    );
    if baseline.iterations != current.iterations {
        warnings.push(format!(
            "iteration counts differ (baseline {:?}, now {:?})",
            baseline.iterations, current.iterations
        ));
    }
    Comparison {
        rows,
        warnings,
        tolerance_pct,
    }
}

fn cell(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_owned(), |v| format!("{v:.1}"))
}

impl fmt::Display for Comparison {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{:<24} {:>14} {:>14} {:>9}  verdict (tolerance {}%)",
            "workload", "instr/iter", "baseline", "change", self.tolerance_pct
        )?;
        for r in &self.rows {
            let change = r
                .change_pct
                .map_or_else(|| "-".to_owned(), |c| format!("{c:+.2}%"));
            writeln!(
                f,
                "{:<24} {:>14} {:>14} {:>9}  {}",
                r.name,
                cell(r.current),
                cell(r.baseline),
                change,
                r.verdict.label()
            )?;
        }
        for w in &self.warnings {
            writeln!(f, "warning: {w}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(workloads: &[(&str, f64)]) -> Measurement {
        Measurement {
            valgrind: "valgrind-3.19.0".into(),
            rustc: "rustc 1.95.0".into(),
            cpu_features: "aes avx2".into(),
            iterations: (200, 1200),
            workloads: workloads.iter().map(|&(n, v)| (n.to_owned(), v)).collect(),
        }
    }

    fn verdict(c: &Comparison, name: &str) -> Verdict {
        c.rows
            .iter()
            .find(|r| r.name == name)
            .map(|r| r.verdict)
            .expect("row present")
    }

    #[test]
    fn equal_run_passes() {
        let base = m(&[("a", 1000.0), ("b", 50.0)]);
        let c = compare(&base, &base.clone(), 3.0);
        assert!(!c.failed() && !c.suggests_update());
        assert!(c.warnings.is_empty());
        assert_eq!(c.rows.len(), 2);
        assert!(c.rows.iter().all(|r| r.change_pct == Some(0.0)));
    }

    #[test]
    fn regression_beyond_tolerance_fails_and_within_passes() {
        let base = m(&[("a", 1000.0), ("b", 1000.0)]);
        let cur = m(&[("a", 1031.0), ("b", 1029.0)]);
        let c = compare(&base, &cur, 3.0);
        assert!(c.failed());
        assert_eq!(verdict(&c, "a"), Verdict::Regression);
        assert_eq!(verdict(&c, "b"), Verdict::Ok);
        assert!(c.to_string().contains("REGRESSION"));
        // A looser tolerance lets the same run pass.
        assert!(!compare(&base, &cur, 5.0).failed());
    }

    #[test]
    fn improvement_passes_with_update_hint() {
        let base = m(&[("a", 1000.0)]);
        let c = compare(&base, &m(&[("a", 900.0)]), 3.0);
        assert!(!c.failed());
        assert!(c.suggests_update());
        assert_eq!(verdict(&c, "a"), Verdict::Improvement);
    }

    #[test]
    fn missing_workload_fails_and_new_one_is_reported() {
        let base = m(&[("a", 1000.0), ("gone", 10.0)]);
        let cur = m(&[("a", 1000.0), ("fresh", 10.0)]);
        let c = compare(&base, &cur, 3.0);
        assert!(c.failed());
        assert_eq!(verdict(&c, "gone"), Verdict::Missing);
        assert_eq!(verdict(&c, "fresh"), Verdict::New);
        assert!(c.to_string().contains("MISSING"));
    }

    #[test]
    fn toolchain_change_warns_without_failing() {
        let base = m(&[("a", 1000.0)]);
        let mut cur = base.clone();
        cur.rustc = "rustc 1.96.0".into();
        let c = compare(&base, &cur, 3.0);
        assert!(!c.failed());
        assert_eq!(c.warnings.len(), 1);
        assert!(c.warnings[0].contains("rustc"), "{:?}", c.warnings);
    }

    #[test]
    fn json_round_trips_and_rejects_garbage() {
        let base = m(&[("a", 1000.5), ("b", 3.0)]);
        let back = Measurement::from_json(&base.to_json()).expect("parses");
        assert_eq!(back, base);
        let mut v = base.to_json();
        v["workloads"]["a"] = json!(-1);
        assert!(Measurement::from_json(&v).is_err());
        let mut v = base.to_json();
        v["schema"] = json!(99);
        assert!(Measurement::from_json(&v).is_err());
        assert!(Measurement::from_json(&json!({})).is_err());
    }
}
