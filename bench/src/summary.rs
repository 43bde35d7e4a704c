//! `dtls-bench summary FILE...`: one table over several result files — every tracked
//! figure, the same-run ratios first — and one merged result file for `compare`.
//!
//! `scripts/bench.sh` runs the standard suite (B0–B8 at the primary size), one JSON file per
//! benchmark, and ends with this command. A file whose run was marked invalid (`"valid":
//! false`, e.g. a saturated load generator) is flagged in the table with its reasons.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use crate::compare::{Figure, figures_from_json, figures_json};

/// Arguments of `dtls-bench summary`.
#[derive(Debug, Clone, clap::Args)]
pub struct SummaryArgs {
    /// Result files written by dtls-bench subcommands (`--json` outputs, `result.json`).
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// Also write every figure of every file into one result file (its `figures` array is
    /// what `dtls-bench compare` reads).
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
}

/// Why a summary could not be made.
#[derive(Debug, thiserror::Error)]
pub enum SummaryError {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A file is not JSON or has no usable `figures` array.
    #[error("{path}: {reason}")]
    Schema {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The merged file could not be written.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

/// One input file, read.
#[derive(Debug)]
pub struct Run {
    /// Its path.
    pub path: PathBuf,
    /// Its `tool` field.
    pub tool: String,
    /// Whether the run was valid, and why not.
    pub invalid_reasons: Option<Vec<String>>,
    /// Its figures.
    pub figures: Vec<Figure>,
}

/// Reads one result file.
///
/// # Errors
/// An unreadable file, malformed JSON or a malformed `figures` array.
pub fn read(path: &Path) -> Result<Run, SummaryError> {
    let text = std::fs::read_to_string(path).map_err(|source| SummaryError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let schema = |reason: String| SummaryError::Schema {
        path: path.to_path_buf(),
        reason,
    };
    let doc: Value = serde_json::from_str(&text).map_err(|e| schema(e.to_string()))?;
    let figures = figures_from_json(&doc).map_err(schema)?;
    let tool = doc
        .get("tool")
        .and_then(Value::as_str)
        .unwrap_or("dtls-bench")
        .to_owned();
    let invalid_reasons = crate::validity::invalid_reasons(&doc);
    Ok(Run {
        path: path.to_path_buf(),
        tool,
        invalid_reasons,
        figures,
    })
}

/// A file's short name: its stem (`b1b2-uring` for `results/x/b1b2-uring.json`).
fn stem(path: &Path) -> String {
    path.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Whether a figure is a same-run ratio (the numbers that hold on a noisy machine).
fn is_ratio(f: &Figure) -> bool {
    let measure = f.name.rsplit('.').next().unwrap_or("");
    f.unit == "ratio" || measure.starts_with("ratio") || measure == "r1" || measure.contains("_to_")
}

/// The summary table: ratios first, then every other figure, file by file.
pub fn table(runs: &[Run]) -> String {
    let mut out = String::new();
    let width = runs
        .iter()
        .flat_map(|r| r.figures.iter().map(|f| f.name.len()))
        .max()
        .unwrap_or(10)
        .max(10);
    let file_width = runs
        .iter()
        .map(|r| stem(&r.path).len())
        .max()
        .unwrap_or(4)
        .max(4);
    for (title, want_ratio) in [("Same-run ratios", true), ("Figures", false)] {
        let _ = writeln!(out, "{title}");
        let _ = writeln!(
            out,
            "{:file_width$}  {:width$}  {:>14}  {:<12}  better",
            "file", "name", "value", "unit"
        );
        for run in runs {
            let file = stem(&run.path);
            for f in run.figures.iter().filter(|f| is_ratio(f) == want_ratio) {
                let _ = writeln!(
                    out,
                    "{file:file_width$}  {:width$}  {:>14}  {:<12}  {}",
                    f.name,
                    format_value(f.value),
                    f.unit,
                    f.better.name()
                );
            }
        }
        let _ = writeln!(out);
    }
    for run in runs {
        if let Some(reasons) = &run.invalid_reasons {
            let _ = writeln!(
                out,
                "INVALID RUN {} ({}): {}",
                run.path.display(),
                run.tool,
                reasons.join("; ")
            );
        }
    }
    out
}

fn format_value(v: f64) -> String {
    if v.abs() >= 1000.0 || v == v.trunc() {
        format!("{v:.0}")
    } else {
        format!("{v:.3}")
    }
}

/// The merged result document: every figure, its name prefixed with its file's stem
/// (`b1b2-uring.throughput.aes128gcm.1200.r1`: the same benchmark run with other settings
/// stays apart, and one suite directory compares against another), and which files were
/// invalid. A name still seen twice keeps its first value.
pub fn merged(runs: &[Run]) -> Value {
    let mut figures: Vec<Figure> = Vec::new();
    for run in runs {
        let file = stem(&run.path);
        for f in &run.figures {
            let name = format!("{file}.{}", f.name);
            if !figures.iter().any(|g| g.name == name) {
                figures.push(Figure { name, ..f.clone() });
            }
        }
    }
    let invalid: Vec<Value> = runs
        .iter()
        .filter(|r| r.invalid_reasons.is_some())
        .map(|r| {
            json!({
                "file": r.path.display().to_string(),
                "tool": r.tool,
                "reasons": r.invalid_reasons,
            })
        })
        .collect();
    json!({
        "tool": "dtls-bench summary",
        "version": env!("CARGO_PKG_VERSION"),
        "files": runs.iter().map(|r| r.path.display().to_string()).collect::<Vec<_>>(),
        "valid": invalid.is_empty(),
        "invalid_runs": invalid,
        "figures": figures_json(&figures),
    })
}

/// Runs `dtls-bench summary`: prints the table, writes the merged file when asked.
///
/// # Errors
/// A file that cannot be read or used, or a merged file that cannot be written.
pub fn run_cli(args: &SummaryArgs) -> Result<(), SummaryError> {
    let runs = args
        .files
        .iter()
        .map(|p| read(p))
        .collect::<Result<Vec<_>, _>>()?;
    print!("{}", table(&runs));
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&merged(&runs)).unwrap_or_default() + "\n";
        std::fs::write(path, text).map_err(|source| SummaryError::Write {
            path: path.clone(),
            source,
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compare::Better;

    fn run(figures: Vec<Figure>, invalid: Option<Vec<String>>) -> Run {
        Run {
            path: PathBuf::from("x.json"),
            tool: "dtls-bench test".into(),
            invalid_reasons: invalid,
            figures,
        }
    }

    #[test]
    fn ratios_come_first_and_invalid_runs_are_flagged() {
        let runs = [
            run(
                vec![
                    Figure::new(
                        "throughput.aes128gcm.1200.pps",
                        170_000.0,
                        "pps",
                        Better::Higher,
                    ),
                    Figure::new(
                        "throughput.aes128gcm.1200.r1",
                        0.87,
                        "ratio",
                        Better::Higher,
                    ),
                ],
                None,
            ),
            run(
                vec![Figure::new(
                    "records.seal.aes128gcm.1200.ratio_to_raw",
                    0.98,
                    "",
                    Better::Higher,
                )],
                Some(vec!["generator saturated".into()]),
            ),
        ];
        let t = table(&runs);
        let ratios = t.find("Same-run ratios").expect("ratios section");
        let figures = t.find("Figures").expect("figures section");
        let r1 = t.find(".r1").expect("r1 listed");
        let pps = t.find(".pps").expect("pps listed");
        assert!(ratios < r1 && r1 < figures && figures < pps, "{t}");
        assert!(t.find("ratio_to_raw").expect("listed") < figures, "{t}");
        assert!(
            t.contains("INVALID RUN x.json (dtls-bench test): generator saturated"),
            "{t}"
        );
        assert!(
            t.contains("x     throughput.aes128gcm.1200.r1"),
            "file column: {t}"
        );
        let doc = merged(&runs);
        assert_eq!(doc["valid"], json!(false));
        assert_eq!(doc["figures"].as_array().map(Vec::len), Some(3));
        assert_eq!(doc["figures"][0]["name"], "x.throughput.aes128gcm.1200.pps");
        assert_eq!(figures_from_json(&doc).map(|f| f.len()), Ok(3));
    }
}
