//! `check --json` against the schema documented in docs/tuning.md, and every finding id
//! documented there.

mod common;

use common::{arg, run};
use serde_json::Value;

fn docs() -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/tuning.md");
    std::fs::read_to_string(path).expect("docs/tuning.md")
}

/// The ```json block after the `check-json-schema` marker.
fn schema() -> Value {
    let docs = docs();
    let after = docs
        .split("<!-- check-json-schema")
        .nth(1)
        .expect("schema marker");
    let block = after
        .split("```json")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .expect("json block");
    serde_json::from_str(block).expect("schema is JSON")
}

/// Validates `value` against the JSON Schema subset the documented schema uses: `type`
/// (one or a list), `required`, `properties`, `additionalProperties: false`, `items`,
/// `enum`, `minimum`. Returns the first violation.
fn validate(schema: &Value, value: &Value, at: &str) -> Result<(), String> {
    if let Some(types) = schema.get("type") {
        let types: Vec<&str> = match types {
            Value::String(t) => vec![t.as_str()],
            Value::Array(list) => list.iter().filter_map(Value::as_str).collect(),
            _ => return Err(format!("{at}: bad type in schema")),
        };
        let ok = types.iter().any(|t| match *t {
            "object" => value.is_object(),
            "array" => value.is_array(),
            "string" => value.is_string(),
            "integer" => value.is_u64() || value.is_i64(),
            "number" => value.is_number(),
            "boolean" => value.is_boolean(),
            "null" => value.is_null(),
            _ => false,
        });
        if !ok {
            return Err(format!("{at}: {value} is not {types:?}"));
        }
    }
    if let Some(Value::Array(options)) = schema.get("enum")
        && !options.contains(value)
    {
        return Err(format!("{at}: {value} not in {options:?}"));
    }
    if let (Some(min), Some(n)) = (
        schema.get("minimum").and_then(Value::as_f64),
        value.as_f64(),
    ) && n < min
    {
        return Err(format!("{at}: {n} < {min}"));
    }
    if let Value::Object(map) = value {
        let props = schema.get("properties").and_then(Value::as_object);
        for key in schema
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let key = key.as_str().unwrap_or_default();
            if !map.contains_key(key) {
                return Err(format!("{at}: missing {key}"));
            }
        }
        for (key, v) in map {
            match props.and_then(|p| p.get(key)) {
                Some(s) => validate(s, v, &format!("{at}.{key}"))?,
                None if schema.get("additionalProperties") == Some(&Value::Bool(false)) => {
                    return Err(format!("{at}: unexpected {key}"));
                }
                None => {}
            }
        }
    }
    if let (Value::Array(items), Some(s)) = (value, schema.get("items")) {
        for (i, v) in items.iter().enumerate() {
            validate(s, v, &format!("{at}[{i}]"))?;
        }
    }
    Ok(())
}

fn check_json(args: &[&str]) -> Value {
    let mut all = vec!["check", "--json"];
    all.extend_from_slice(args);
    let out = run(&all);
    serde_json::from_slice(&out.stdout).expect("check --json prints JSON")
}

#[test]
fn check_json_matches_the_documented_schema() {
    let schema = schema();
    for args in [
        vec![
            "--root".to_owned(),
            arg("good-host"),
            "--config".to_owned(),
            arg("good-host.toml"),
        ],
        vec!["--root".to_owned(), arg("bad-host")],
        vec![
            "--root".to_owned(),
            arg("bad-host"),
            "--config".to_owned(),
            arg("bad-host-xdp.toml"),
        ],
    ] {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let value = check_json(&args);
        validate(&schema, &value, "$").unwrap_or_else(|e| panic!("{args:?}: {e}"));
        let findings = value["findings"].as_array().expect("findings");
        assert_eq!(findings.len(), dtls_tune::checks::IDS.len());
        for f in findings {
            let needs_fix = matches!(f["status"].as_str(), Some("warn" | "fail"));
            assert_eq!(f["fix"].is_string(), needs_fix, "{f}");
        }
        let summary = &value["summary"];
        let total: u64 = ["ok", "warn", "fail", "skip"]
            .iter()
            .map(|k| summary[k].as_u64().unwrap_or(0))
            .sum();
        assert_eq!(total as usize, findings.len());
    }
}

#[test]
fn the_validator_rejects_what_the_schema_forbids() {
    let schema = schema();
    let mut value = check_json(&["--root", &arg("bad-host")]);
    assert!(validate(&schema, &value, "$").is_ok());
    value["findings"][0]["status"] = Value::from("maybe");
    assert!(validate(&schema, &value, "$").is_err());
    let mut value = check_json(&["--root", &arg("bad-host")]);
    value["extra"] = Value::from(1);
    assert!(validate(&schema, &value, "$").is_err());
    let mut value = check_json(&["--root", &arg("bad-host")]);
    value["target"]
        .as_object_mut()
        .expect("target")
        .remove("shards");
    assert!(validate(&schema, &value, "$").is_err());
}

#[test]
fn every_finding_is_documented() {
    let docs = docs();
    for id in dtls_tune::checks::IDS {
        assert!(
            docs.lines()
                .any(|l| l.starts_with("### ") && l.contains(&format!("`{id}`"))),
            "docs/tuning.md has no section for {id}"
        );
    }
}
