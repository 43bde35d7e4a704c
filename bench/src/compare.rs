//! `dtls-bench compare`: the regression gate over two result JSON files, and the
//! `figures` array every dtls-bench result carries.
//!
//! The schema compare reads is one top-level array, whatever else the document holds:
//!
//! ```json
//! { "figures": [
//!     { "name": "records.seal.aes128gcm.1200.ns_per_record", "value": 301.5,
//!       "unit": "ns", "better": "lower" },
//!     { "name": "records.seal.aes128gcm.1200.ratio_to_raw", "value": 0.97,
//!       "unit": "ratio", "better": "higher" } ] }
//! ```
//!
//! `name` is unique within a file and stable across runs; its last dot-separated part names
//! the measure (Bencher's BMF uses it). `value` is a finite number. `better` is `"higher"`
//! or `"lower"`. `unit` is free text (may be empty).
//!
//! Outcomes: a figure of BASE that changed in its bad direction by more than the threshold
//! (percent of the base value) is a regression; a figure of BASE missing from NEW is a
//! warning, not a failure; a figure only in NEW is listed as new. Exit codes of the
//! subcommand: 0 no regression, 1 at least one regression, 2 unusable input (unreadable
//! file, malformed JSON, a run marked invalid with `"valid": false`, no or malformed
//! `figures`, a figure whose direction changed, a bad threshold).
//!
//! What it does not do: statistics across runs (feed it medians), or decide which figures
//! are stable enough to gate on (gate on same-run ratios and instruction counts, not
//! wall time).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value, json};

/// Which way is good.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Better {
    /// Throughput, rates, ratios.
    Higher,
    /// Latency, ns/record, bytes out per byte in.
    Lower,
}

impl Better {
    /// `"higher"` / `"lower"`.
    pub fn name(self) -> &'static str {
        match self {
            Better::Higher => "higher",
            Better::Lower => "lower",
        }
    }
}

/// One tracked figure.
#[derive(Debug, Clone, PartialEq)]
pub struct Figure {
    /// Stable, unique name; the last dot-separated part names the measure.
    pub name: String,
    /// The value (finite).
    pub value: f64,
    /// Unit, free text.
    pub unit: String,
    /// Direction.
    pub better: Better,
}

impl Figure {
    /// A figure.
    pub fn new(name: impl Into<String>, value: f64, unit: &str, better: Better) -> Self {
        Self {
            name: name.into(),
            value,
            unit: unit.to_string(),
            better,
        }
    }

    /// Its JSON object in the `figures` array.
    pub fn to_json(&self) -> Value {
        json!({
            "name": self.name,
            "value": self.value,
            "unit": self.unit,
            "better": self.better.name(),
        })
    }
}

/// The `figures` array for a result document (non-finite values are left out: JSON has
/// no NaN).
pub fn figures_json(figures: &[Figure]) -> Value {
    Value::Array(
        figures
            .iter()
            .filter(|f| f.value.is_finite())
            .map(Figure::to_json)
            .collect(),
    )
}

/// Why a file could not be compared.
#[derive(Debug, thiserror::Error)]
pub enum CompareError {
    /// The file could not be read.
    #[error("{path}: cannot read: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not JSON.
    #[error("{path}: malformed JSON: {source}")]
    Json {
        /// The file.
        path: PathBuf,
        /// The parser's error.
        #[source]
        source: serde_json::Error,
    },
    /// The JSON has no usable `figures` array.
    #[error("{path}: {reason}")]
    Schema {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The file's run is marked invalid (`"valid": false`): its figures measure something
    /// else than the data plane (a saturated generator, nothing came back, ...).
    #[error(
        "{path}: the run is marked invalid (\"valid\": false), so its figures are not comparable: {}",
        .reasons.join("; ")
    )]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Its `invalid_reasons` (or a merged summary's invalid files).
        reasons: Vec<String>,
    },
    /// A figure is "higher is better" in one file and "lower" in the other.
    #[error("figure {name:?}: better is {base} in BASE but {new} in NEW")]
    DirectionChanged {
        /// The figure.
        name: String,
        /// BASE's direction.
        base: &'static str,
        /// NEW's direction.
        new: &'static str,
    },
    /// An export file could not be written.
    #[error("{path}: cannot write: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Threshold not a finite, non-negative percentage.
    #[error("--threshold: {0} is not a finite percentage >= 0")]
    Threshold(f64),
}

/// Reads the `figures` array of a parsed document.
pub fn figures_from_json(doc: &Value) -> Result<Vec<Figure>, String> {
    let arr = doc
        .get("figures")
        .ok_or("no top-level \"figures\" array")?
        .as_array()
        .ok_or("\"figures\" is not an array")?;
    let mut out: Vec<Figure> = Vec::with_capacity(arr.len());
    for (i, f) in arr.iter().enumerate() {
        let name = f
            .get("name")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .ok_or(format!("figures[{i}]: \"name\" missing or not a string"))?;
        let value = f
            .get("value")
            .and_then(Value::as_f64)
            .filter(|v| v.is_finite())
            .ok_or(format!(
                "figures[{i}] {name:?}: \"value\" missing or not a number"
            ))?;
        let better = match f.get("better").and_then(Value::as_str) {
            Some("higher") => Better::Higher,
            Some("lower") => Better::Lower,
            _ => {
                return Err(format!(
                    "figures[{i}] {name:?}: \"better\" must be \"higher\" or \"lower\""
                ));
            }
        };
        let unit = match f.get("unit") {
            None | Some(Value::Null) => "",
            Some(Value::String(s)) => s.as_str(),
            Some(_) => return Err(format!("figures[{i}] {name:?}: \"unit\" is not a string")),
        };
        if out.iter().any(|o| o.name == name) {
            return Err(format!("figures[{i}]: duplicate name {name:?}"));
        }
        out.push(Figure::new(name, value, unit, better));
    }
    Ok(out)
}

/// Reads a result file's figures; a file marked invalid is refused.
pub fn load(path: &Path) -> Result<Vec<Figure>, CompareError> {
    let text = std::fs::read_to_string(path).map_err(|source| CompareError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let doc: Value = serde_json::from_str(&text).map_err(|source| CompareError::Json {
        path: path.to_path_buf(),
        source,
    })?;
    if let Some(reasons) = crate::validity::invalid_reasons(&doc) {
        return Err(CompareError::Invalid {
            path: path.to_path_buf(),
            reasons,
        });
    }
    figures_from_json(&doc).map_err(|reason| CompareError::Schema {
        path: path.to_path_buf(),
        reason,
    })
}

/// The outcome for one figure present in both files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Within the threshold either way.
    Unchanged,
    /// Better by more than the threshold.
    Improved,
    /// Worse by more than the threshold.
    Regressed,
}

/// One figure in both files.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    /// The figure's name.
    pub name: String,
    /// Unit (NEW's).
    pub unit: String,
    /// Direction.
    pub better: Better,
    /// BASE value.
    pub base: f64,
    /// NEW value.
    pub new: f64,
    /// (new - base) / |base| in percent; ±infinity when base is 0 and new is not.
    pub change_pct: f64,
    /// Verdict at the threshold.
    pub verdict: Verdict,
}

/// The comparison of two files.
#[derive(Debug, Clone, PartialEq)]
pub struct Comparison {
    /// Threshold in percent.
    pub threshold_pct: f64,
    /// Figures in both, in BASE's order.
    pub changes: Vec<Change>,
    /// In BASE, not in NEW (a warning).
    pub missing: Vec<String>,
    /// In NEW, not in BASE.
    pub added: Vec<String>,
}

fn change_pct(base: f64, new: f64) -> f64 {
    if base == 0.0 {
        if new == 0.0 {
            0.0
        } else {
            f64::INFINITY.copysign(new)
        }
    } else {
        (new - base) / base.abs() * 100.0
    }
}

/// Compares NEW to BASE at `threshold_pct` percent.
pub fn compare(
    base: &[Figure],
    new: &[Figure],
    threshold_pct: f64,
) -> Result<Comparison, CompareError> {
    if !(threshold_pct.is_finite() && threshold_pct >= 0.0) {
        return Err(CompareError::Threshold(threshold_pct));
    }
    let mut changes = Vec::new();
    let mut missing = Vec::new();
    for b in base {
        let Some(n) = new.iter().find(|n| n.name == b.name) else {
            missing.push(b.name.clone());
            continue;
        };
        if n.better != b.better {
            return Err(CompareError::DirectionChanged {
                name: b.name.clone(),
                base: b.better.name(),
                new: n.better.name(),
            });
        }
        let pct = change_pct(b.value, n.value);
        // Signed so that positive means better.
        let gain = match b.better {
            Better::Higher => pct,
            Better::Lower => -pct,
        };
        let verdict = if gain < -threshold_pct {
            Verdict::Regressed
        } else if gain > threshold_pct {
            Verdict::Improved
        } else {
            Verdict::Unchanged
        };
        changes.push(Change {
            name: b.name.clone(),
            unit: n.unit.clone(),
            better: b.better,
            base: b.value,
            new: n.value,
            change_pct: pct,
            verdict,
        });
    }
    let added = new
        .iter()
        .filter(|n| !base.iter().any(|b| b.name == n.name))
        .map(|n| n.name.clone())
        .collect();
    Ok(Comparison {
        threshold_pct,
        changes,
        missing,
        added,
    })
}

impl Comparison {
    /// The regressed figures.
    pub fn regressions(&self) -> impl Iterator<Item = &Change> {
        self.changes
            .iter()
            .filter(|c| c.verdict == Verdict::Regressed)
    }

    /// Whether any figure regressed.
    pub fn has_regression(&self) -> bool {
        self.regressions().next().is_some()
    }

    /// The report: every common figure, then regressions, missing and new figures.
    pub fn table(&self) -> String {
        let mut s = String::new();
        let w = self
            .changes
            .iter()
            .map(|c| c.name.len())
            .max()
            .unwrap_or(6)
            .max(6);
        let _ = writeln!(
            s,
            "{:<w$} {:>14} {:>14} {:>9} {:<7} {:<9} verdict",
            "figure", "base", "new", "change", "better", "unit"
        );
        for c in &self.changes {
            let verdict = match c.verdict {
                Verdict::Unchanged => "ok",
                Verdict::Improved => "improved",
                Verdict::Regressed => "REGRESSED",
            };
            let _ = writeln!(
                s,
                "{:<w$} {:>14.4} {:>14.4} {:>8.2}% {:<7} {:<9} {verdict}",
                c.name,
                c.base,
                c.new,
                c.change_pct,
                c.better.name(),
                c.unit
            );
        }
        let regressed: Vec<&Change> = self.regressions().collect();
        if regressed.is_empty() {
            let _ = writeln!(
                s,
                "no regression beyond {}% ({} figures compared)",
                self.threshold_pct,
                self.changes.len()
            );
        } else {
            let _ = writeln!(
                s,
                "{} regression(s) beyond {}%:",
                regressed.len(),
                self.threshold_pct
            );
            for c in regressed {
                let _ = writeln!(
                    s,
                    "  {}: base {} -> new {} ({:+.2}%, {} is better)",
                    c.name,
                    c.base,
                    c.new,
                    c.change_pct,
                    c.better.name()
                );
            }
        }
        for m in &self.missing {
            let _ = writeln!(s, "warning: {m} is in BASE but missing from NEW");
        }
        for a in &self.added {
            let _ = writeln!(s, "new figure: {a}");
        }
        s
    }
}

/// github-action-benchmark custom JSON (`customBiggerIsBetter` for [`Better::Higher`],
/// `customSmallerIsBetter` for [`Better::Lower`]): `[{name, unit, value}]` of the figures
/// with that direction.
pub fn github_json(figures: &[Figure], better: Better) -> Value {
    Value::Array(
        figures
            .iter()
            .filter(|f| f.better == better)
            .map(|f| json!({ "name": f.name, "unit": f.unit, "value": f.value }))
            .collect(),
    )
}

/// The file name of the `customSmallerIsBetter` companion of `path`: `-smaller` before the
/// extension (`gh.json` → `gh-smaller.json`).
pub fn smaller_path(path: &Path) -> PathBuf {
    let stem = path
        .file_stem()
        .map_or_else(String::new, |s| s.to_string_lossy().into_owned());
    let name = match path.extension() {
        Some(ext) => format!("{stem}-smaller.{}", ext.to_string_lossy()),
        None => format!("{stem}-smaller"),
    };
    path.with_file_name(name)
}

/// Bencher Metric Format: `{ benchmark: { measure: { "value": v } } }`, where the measure is
/// the last dot-separated part of the figure's name and the benchmark the rest (a name
/// without a dot is its own benchmark, measured as `value`).
pub fn bmf(figures: &[Figure]) -> Value {
    let mut out = Map::new();
    for f in figures {
        let (bench, measure) = f.name.rsplit_once('.').unwrap_or((&f.name, "value"));
        let entry = out
            .entry(bench.to_string())
            .or_insert_with(|| Value::Object(Map::new()));
        if let Value::Object(m) = entry {
            m.insert(measure.to_string(), json!({ "value": f.value }));
        }
    }
    Value::Object(out)
}

/// What `dtls-bench compare` was asked to do (also its command-line options).
#[derive(Debug, Clone, PartialEq, clap::Args)]
pub struct Options {
    /// The baseline result file (any JSON with a top-level `figures` array).
    #[arg(value_name = "BASE.json")]
    pub base: PathBuf,
    /// The result file under test.
    #[arg(value_name = "NEW.json")]
    pub new: PathBuf,
    /// Regression threshold in percent of the base value. Exit codes: 0 no regression,
    /// 1 regression, 2 unusable input (including a file marked `"valid": false`). A figure
    /// missing from NEW is a warning only.
    #[arg(long = "threshold", value_name = "PCT", default_value_t = 5.0)]
    pub threshold_pct: f64,
    /// github-action-benchmark output: this file gets NEW's higher-is-better figures
    /// (`customBiggerIsBetter`), the same name with `-smaller` before the extension the
    /// lower-is-better ones (`customSmallerIsBetter`).
    #[arg(long, value_name = "F")]
    pub github_json: Option<PathBuf>,
    /// Bencher Metric Format output of NEW's figures.
    #[arg(long, value_name = "F")]
    pub bmf: Option<PathBuf>,
}

/// Runs `dtls-bench compare`: prints the table (stdout) or the error (stderr) and returns
/// the exit code (0 no regression, 1 regression, 2 unusable input).
pub fn run_cli(opts: &Options) -> i32 {
    match run(opts) {
        Ok(c) => {
            print!("{}", c.table());
            i32::from(c.has_regression())
        }
        Err(e) => {
            eprintln!("dtls-bench compare: error: {e}");
            2
        }
    }
}

fn write_json(path: &Path, doc: &Value) -> Result<(), CompareError> {
    let text = serde_json::to_string_pretty(doc).map_err(|e| CompareError::Write {
        path: path.to_path_buf(),
        source: std::io::Error::other(e),
    })?;
    std::fs::write(path, text + "\n").map_err(|source| CompareError::Write {
        path: path.to_path_buf(),
        source,
    })
}

/// Loads both files, compares them and writes the requested exports (of NEW's figures).
pub fn run(opts: &Options) -> Result<Comparison, CompareError> {
    let base = load(&opts.base)?;
    let new = load(&opts.new)?;
    let comparison = compare(&base, &new, opts.threshold_pct)?;
    if let Some(path) = &opts.github_json {
        write_json(path, &github_json(&new, Better::Higher))?;
        write_json(&smaller_path(path), &github_json(&new, Better::Lower))?;
    }
    if let Some(path) = &opts.bmf {
        write_json(path, &bmf(&new))?;
    }
    Ok(comparison)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn figs() -> Vec<Figure> {
        vec![
            Figure::new("a.pps", 100.0, "pps", Better::Higher),
            Figure::new("a.p99_ns", 1000.0, "ns", Better::Lower),
        ]
    }

    #[test]
    fn round_trip_and_verdicts() {
        let doc = json!({ "figures": figures_json(&figs()) });
        let back = figures_from_json(&doc).expect("parses");
        assert_eq!(back, figs());
        let c = compare(&back, &back, 5.0).expect("compares");
        assert!(!c.has_regression());
        let mut worse = figs();
        worse[0].value = 90.0;
        worse[1].value = 1100.0;
        let c = compare(&figs(), &worse, 5.0).expect("compares");
        assert_eq!(c.regressions().count(), 2);
        assert!((c.changes[0].change_pct + 10.0).abs() < 1e-9);
        let c = compare(&figs(), &worse, 15.0).expect("compares");
        assert!(!c.has_regression());
        let c = compare(&worse, &figs(), 5.0).expect("compares");
        assert!(c.changes.iter().all(|x| x.verdict == Verdict::Improved));
        assert!(compare(&figs(), &figs(), f64::NAN).is_err());
        assert!(compare(&figs(), &figs(), -1.0).is_err());
    }

    #[test]
    fn schema_errors_are_named() {
        for (doc, what) in [
            (json!({}), "no top-level"),
            (json!({"figures": 3}), "not an array"),
            (
                json!({"figures": [{"value": 1, "better": "higher"}]}),
                "name",
            ),
            (
                json!({"figures": [{"name": "x", "better": "higher"}]}),
                "value",
            ),
            (json!({"figures": [{"name": "x", "value": 1}]}), "better"),
            (
                json!({"figures": [{"name": "x", "value": 1, "better": "up"}]}),
                "better",
            ),
            (
                json!({"figures": [{"name": "x", "value": 1, "better": "lower", "unit": 5}]}),
                "unit",
            ),
            (
                json!({"figures": [
                    {"name": "x", "value": 1, "better": "lower"},
                    {"name": "x", "value": 2, "better": "lower"}]}),
                "duplicate",
            ),
        ] {
            let e = figures_from_json(&doc).expect_err(what);
            assert!(e.contains(what), "{e} should mention {what}");
        }
    }

    #[test]
    fn zero_base_and_direction_change() {
        let base = vec![Figure::new("drops", 0.0, "", Better::Lower)];
        let new = vec![Figure::new("drops", 3.0, "", Better::Lower)];
        let c = compare(&base, &new, 5.0).expect("compares");
        assert!(c.has_regression());
        let flipped = vec![Figure::new("drops", 0.0, "", Better::Higher)];
        assert!(matches!(
            compare(&base, &flipped, 5.0),
            Err(CompareError::DirectionChanged { .. })
        ));
    }

    #[test]
    fn exports() {
        let g = github_json(&figs(), Better::Higher);
        assert_eq!(g, json!([{"name": "a.pps", "unit": "pps", "value": 100.0}]));
        let b = bmf(&figs());
        assert_eq!(b["a"]["pps"]["value"], json!(100.0));
        assert_eq!(b["a"]["p99_ns"]["value"], json!(1000.0));
        assert_eq!(
            smaller_path(Path::new("/x/gh.json")),
            Path::new("/x/gh-smaller.json")
        );
        assert_eq!(smaller_path(Path::new("gh")), Path::new("gh-smaller"));
    }
}
