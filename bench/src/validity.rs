//! Whether a result tells the truth: the `"valid"` and `"invalid_reasons"` fields of every
//! result document, and what the command line does with them.
//!
//! A measuring subcommand (`throughput`, `latency`, `handshakes`, `flood`, `peers`) whose run
//! is invalid still prints its report and writes its files, marked `"valid": false`, and
//! then exits with [`EXIT_INVALID_RUN`] (3), distinct from an error (1) and from `compare`'s
//! regression (1) and unusable input (2). `quick`, the tour, ends with an
//! [`invalid_banner`] and exits 0. `compare` refuses a file marked invalid (exit 2).

use serde_json::Value;

/// Exit code of a measuring subcommand whose run was invalid (its files are written, and
/// marked `"valid": false`).
pub const EXIT_INVALID_RUN: u8 = 3;

/// A run that completed but whose figures cannot be trusted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("INVALID run: {}", .reasons.join("; "))]
pub struct InvalidRun {
    /// Why.
    pub reasons: Vec<String>,
}

/// Why `doc` is marked invalid (`"valid": false`), or `None` when it is not. The reasons are
/// its `invalid_reasons`, or for a merged `summary.json` its `invalid_runs`.
pub fn invalid_reasons(doc: &Value) -> Option<Vec<String>> {
    if doc.get("valid").and_then(Value::as_bool) != Some(false) {
        return None;
    }
    let text = |v: &Value| v.as_str().map_or_else(|| v.to_string(), str::to_owned);
    let mut reasons: Vec<String> = doc
        .get("invalid_reasons")
        .and_then(Value::as_array)
        .map(|r| r.iter().map(text).collect())
        .unwrap_or_default();
    for run in doc
        .get("invalid_runs")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let file = run.get("file").map_or_else(|| "a file".to_owned(), text);
        let why = run
            .get("reasons")
            .and_then(Value::as_array)
            .map(|r| r.iter().map(text).collect::<Vec<_>>().join(", "))
            .unwrap_or_default();
        reasons.push(format!("{file} is invalid ({why})"));
    }
    if reasons.is_empty() {
        reasons.push("marked \"valid\": false without a reason".to_owned());
    }
    Some(reasons)
}

/// `Err` with the reasons when `doc` is marked invalid.
///
/// # Errors
/// [`InvalidRun`] when `"valid"` is `false`.
pub fn check(doc: &Value) -> Result<(), InvalidRun> {
    match invalid_reasons(doc) {
        Some(reasons) => Err(InvalidRun { reasons }),
        None => Ok(()),
    }
}

/// The banner `quick` ends with when its run is invalid: impossible to miss at the end of
/// the output, one reason per line.
pub fn invalid_banner(reasons: &[String]) -> String {
    let rule = "=".repeat(72);
    let mut out = format!("{rule}\nINVALID RUN: these figures do not measure the data plane\n");
    for r in reasons {
        out.push_str("  - ");
        out.push_str(r);
        out.push('\n');
    }
    out.push_str("(the results are written with \"valid\": false; `compare` refuses them)\n");
    out.push_str(&rule);
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reasons_come_from_the_document() {
        assert_eq!(
            invalid_reasons(&json!({"valid": true, "invalid_reasons": []})),
            None
        );
        assert_eq!(invalid_reasons(&json!({"figures": []})), None, "no verdict");
        let doc =
            json!({"valid": false, "invalid_reasons": ["generator thread loadgen-0 saturated"]});
        assert_eq!(
            check(&doc),
            Err(InvalidRun {
                reasons: vec!["generator thread loadgen-0 saturated".into()]
            })
        );
        let summary = json!({"valid": false, "invalid_runs": [
            {"file": "r/b5-flood.json", "tool": "dtls-bench flood", "reasons": ["x", "y"]}
        ]});
        assert_eq!(
            invalid_reasons(&summary),
            Some(vec!["r/b5-flood.json is invalid (x, y)".into()])
        );
        assert_eq!(
            invalid_reasons(&json!({"valid": false})),
            Some(vec!["marked \"valid\": false without a reason".into()])
        );
    }

    #[test]
    fn the_banner_names_every_reason_on_its_own_line() {
        let b = invalid_banner(&["one".into(), "two".into()]);
        assert!(b.starts_with("====") && b.ends_with("====\n"));
        assert!(b.contains("INVALID RUN") && b.contains("  - one\n  - two\n"));
    }
}
