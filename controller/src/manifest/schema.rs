//! Structural validation of a document against a CRD's OpenAPI v3 schema, as the
//! API server does it: types, required fields, unknown fields, enums, patterns,
//! bounds and one-of groups. Every problem is collected, not only the first.

use std::fmt::Write as _;

use regex::Regex;
use serde_json::Value;

/// One structural problem: the dotted path of the field and what is wrong with it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SchemaProblem {
    /// `spec.backend.docker.host`, `spec.notifications[0].name`.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

/// Checks `value` against `schema` and returns every problem found.
#[must_use]
pub fn check(schema: &Value, value: &Value) -> Vec<SchemaProblem> {
    let mut problems = Vec::new();
    walk(schema, value, "", &mut problems);
    problems
}

fn join(path: &str, field: &str) -> String {
    if path.is_empty() {
        field.to_owned()
    } else {
        format!("{path}.{field}")
    }
}

fn describe(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn type_matches(expected: &str, value: &Value) -> bool {
    match expected {
        "object" => value.is_object(),
        "array" => value.is_array(),
        "string" => value.is_string(),
        "boolean" => value.is_boolean(),
        "integer" => value.is_i64() || value.is_u64(),
        "number" => value.is_number(),
        _ => true,
    }
}

fn walk(schema: &Value, value: &Value, path: &str, out: &mut Vec<SchemaProblem>) {
    let mut problem = |message: String| {
        out.push(SchemaProblem {
            path: if path.is_empty() {
                "(document)".to_owned()
            } else {
                path.to_owned()
            },
            message,
        });
    };
    if value.is_null() {
        if schema.get("nullable").and_then(Value::as_bool) != Some(true) {
            problem("must not be null".to_owned());
        }
        return;
    }
    if schema
        .get("x-kubernetes-int-or-string")
        .and_then(Value::as_bool)
        == Some(true)
    {
        if !(value.is_string() || value.is_i64() || value.is_u64()) {
            problem(format!(
                "expected an integer or a string, got {}",
                describe(value)
            ));
        }
        return;
    }
    if let Some(expected) = schema.get("type").and_then(Value::as_str)
        && !type_matches(expected, value)
    {
        problem(format!("expected {expected}, got {}", describe(value)));
        return;
    }
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array)
        && !allowed.contains(value)
    {
        let names: Vec<String> = allowed
            .iter()
            .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned))
            .collect();
        problem(format!("{value} is not one of: {}", names.join(", ")));
    }
    match value {
        Value::String(s) => check_string(schema, s, &mut problem),
        Value::Number(n) => check_number(schema, n, &mut problem),
        Value::Array(items) => {
            check_len(
                schema,
                items.len(),
                "minItems",
                "maxItems",
                "item",
                &mut problem,
            );
            if let Some(item_schema) = schema.get("items") {
                for (i, item) in items.iter().enumerate() {
                    walk(item_schema, item, &format!("{path}[{i}]"), out);
                }
            }
        }
        Value::Object(map) => check_object(schema, map, path, out),
        Value::Null | Value::Bool(_) => {}
    }
}

fn check_string(schema: &Value, s: &str, problem: &mut impl FnMut(String)) {
    let len = s.chars().count();
    check_len(schema, len, "minLength", "maxLength", "character", problem);
    if let Some(pattern) = schema.get("pattern").and_then(Value::as_str) {
        match Regex::new(pattern) {
            Ok(re) if !re.is_match(s) => {
                problem(format!("{s:?} does not match the pattern {pattern}"));
            }
            Ok(_) => {}
            Err(e) => problem(format!("the schema's pattern {pattern} is invalid: {e}")),
        }
    }
}

fn check_len(
    schema: &Value,
    len: usize,
    min_key: &str,
    max_key: &str,
    unit: &str,
    problem: &mut impl FnMut(String),
) {
    let bound = |key| {
        schema
            .get(key)
            .and_then(Value::as_u64)
            .and_then(|b| usize::try_from(b).ok())
    };
    if let Some(min) = bound(min_key)
        && len < min
    {
        problem(format!(
            "must have at least {min} {unit}{}",
            if min == 1 { "" } else { "s" }
        ));
    }
    if let Some(max) = bound(max_key)
        && len > max
    {
        problem(format!(
            "must have at most {max} {unit}{}",
            if max == 1 { "" } else { "s" }
        ));
    }
}

fn check_number(schema: &Value, n: &serde_json::Number, problem: &mut impl FnMut(String)) {
    let Some(x) = n.as_f64() else { return };
    if let Some(min) = schema.get("minimum").and_then(Value::as_f64)
        && x < min
    {
        problem(format!("{n} is less than the minimum {min}"));
    }
    if let Some(max) = schema.get("maximum").and_then(Value::as_f64)
        && x > max
    {
        problem(format!("{n} is greater than the maximum {max}"));
    }
}

fn check_object(
    schema: &Value,
    map: &serde_json::Map<String, Value>,
    path: &str,
    out: &mut Vec<SchemaProblem>,
) {
    let properties = schema.get("properties").and_then(Value::as_object);
    let additional = schema.get("additionalProperties");
    let preserve = schema
        .get("x-kubernetes-preserve-unknown-fields")
        .and_then(Value::as_bool)
        == Some(true);
    if let Some(required) = schema.get("required").and_then(Value::as_array) {
        for field in required.iter().filter_map(Value::as_str) {
            if !map.contains_key(field) {
                out.push(SchemaProblem {
                    path: join(path, field),
                    message: "required field missing".to_owned(),
                });
            }
        }
    }
    for group in ["oneOf", "anyOf"] {
        if let Some(branches) = schema.get(group).and_then(Value::as_array) {
            check_one_of(group, branches, map, path, out);
        }
    }
    for (key, child) in map {
        let child_path = join(path, key);
        if let Some(child_schema) = properties.and_then(|p| p.get(key)) {
            walk(child_schema, child, &child_path, out);
        } else if let Some(additional) = additional.filter(|a| a.is_object()) {
            walk(additional, child, &child_path, out);
        } else if !(preserve || additional == Some(&Value::Bool(true))) && properties.is_some() {
            let mut message = "unknown field".to_owned();
            if let Some(known) = properties
                && let Some(close) = closest(key, known.keys())
            {
                let _ = write!(message, " (did you mean {close:?}?)");
            }
            out.push(SchemaProblem {
                path: child_path,
                message,
            });
        }
    }
}

/// One-of groups generated for enums with data: each branch lists the required key.
fn check_one_of(
    group: &str,
    branches: &[Value],
    map: &serde_json::Map<String, Value>,
    path: &str,
    out: &mut Vec<SchemaProblem>,
) {
    let keys: Vec<Vec<&str>> = branches
        .iter()
        .map(|b| {
            b.get("required")
                .and_then(Value::as_array)
                .map(|r| r.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default()
        })
        .collect();
    let matched = keys
        .iter()
        .filter(|req| req.iter().all(|k| map.contains_key(*k)))
        .count();
    let ok = if group == "oneOf" {
        matched == 1
    } else {
        matched >= 1
    };
    if !ok {
        let names: Vec<&str> = keys.iter().flatten().copied().collect();
        let quantifier = if group == "oneOf" {
            "exactly one"
        } else {
            "at least one"
        };
        out.push(SchemaProblem {
            path: if path.is_empty() {
                "(document)".to_owned()
            } else {
                path.to_owned()
            },
            message: format!("set {quantifier} of: {}", names.join(", ")),
        });
    }
}

/// The known field closest to a misspelt one, when it is close enough to be a typo.
fn closest<'a>(key: &str, known: impl Iterator<Item = &'a String>) -> Option<&'a str> {
    let lower = key.to_ascii_lowercase();
    known
        .map(|k| (edit_distance(&lower, &k.to_ascii_lowercase()), k))
        .filter(|(d, k)| *d <= 2.max(k.len() / 4))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k.as_str())
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn schema() -> Value {
        json!({
            "type": "object",
            "required": ["name"],
            "properties": {
                "name": {"type": "string", "pattern": "^[a-z]+$", "maxLength": 5},
                "port": {"type": "integer", "minimum": 1, "maximum": 65535},
                "mode": {"type": "string", "enum": ["A", "B"]},
                "tags": {"type": "array", "maxItems": 1, "items": {"type": "string"}},
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
                "backend": {
                    "type": "object",
                    "oneOf": [{"required": ["docker"]}, {"required": ["kubernetes"]}],
                    "properties": {"docker": {"type": "object"}, "kubernetes": {"type": "object"}}
                }
            }
        })
    }

    fn paths(value: &Value) -> Vec<String> {
        check(&schema(), value)
            .into_iter()
            .map(|p| format!("{}: {}", p.path, p.message))
            .collect()
    }

    #[test]
    fn a_valid_document_has_no_problem() {
        let v = json!({"name": "abc", "port": 80, "mode": "A", "tags": ["x"], "labels": {"a": "b"},
                        "free": {"anything": 1}, "backend": {"docker": {}}});
        assert!(paths(&v).is_empty(), "{:?}", paths(&v));
    }

    #[test]
    fn every_problem_is_reported_with_its_path() {
        let v = json!({"port": 70000, "mode": "C", "tags": ["x", 3], "labels": {"a": 1},
                        "nmae": "x", "backend": {"docker": {}, "kubernetes": {}}});
        let got = paths(&v);
        assert_eq!(
            got,
            vec![
                "name: required field missing",
                "backend: set exactly one of: docker, kubernetes",
                "labels.a: expected string, got integer",
                "mode: \"C\" is not one of: A, B",
                "nmae: unknown field (did you mean \"name\"?)",
                "port: 70000 is greater than the maximum 65535",
                "tags: must have at most 1 item",
                "tags[1]: expected string, got integer",
            ]
        );
    }

    #[test]
    fn patterns_lengths_and_nulls() {
        let got = paths(&json!({"name": "ABCDEFG", "backend": {}, "port": null}));
        assert_eq!(
            got,
            vec![
                "backend: set exactly one of: docker, kubernetes",
                "name: must have at most 5 characters",
                "name: \"ABCDEFG\" does not match the pattern ^[a-z]+$",
                "port: must not be null",
            ]
        );
    }

    #[test]
    fn edit_distance_finds_typos_only() {
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        let known = ["strategy".to_owned(), "backend".to_owned()];
        assert_eq!(closest("stratgey", known.iter()), Some("strategy"));
        assert_eq!(closest("zzz", known.iter()), None);
    }
}
