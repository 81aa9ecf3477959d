//! The Dagster webserver's GraphQL API, as far as Vigie uses it: reload a location
//! (`reloadRepositoryLocation`), reload the workspace (`reloadWorkspace`), read a
//! location's load status (`workspaceOrError`). The requests are data and the answers
//! are read by pure functions; [`Client`] only sends them.

use std::time::Duration;

use serde_json::{Value, json};

/// What the webserver says of one location.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Load {
    /// Its definitions loaded: the repositories' names, and the image the code server
    /// reports (`DAGSTER_CURRENT_IMAGE`, shown as the entry's `image` metadata).
    Loaded {
        /// The repositories (`__repository__` for a `Definitions` object).
        repositories: Vec<String>,
        /// The image the code server says it runs, when it says.
        image: Option<String>,
    },
    /// They failed to load: the Python exception first, then Dagster's message.
    Failed(String),
    /// The webserver cannot reach the code server (not listening yet, or gone).
    Unreachable(String),
    /// The webserver is still loading it.
    Loading,
    /// The webserver does not list it (its workspace was not read again yet).
    NotListed,
}

/// Why the webserver gave no usable answer.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum GraphqlError {
    /// No answer in time, or the connection failed.
    #[error("the Dagster webserver at {url} did not answer: {reason}")]
    Unanswered {
        /// The GraphQL URL.
        url: String,
        /// Why.
        reason: String,
    },
    /// An answer that is not what the API documents.
    #[error("the Dagster webserver at {url} answered {reason}")]
    Refused {
        /// The GraphQL URL.
        url: String,
        /// What it answered.
        reason: String,
    },
}

const ENTRY: &str = "name loadStatus displayMetadata { key value } locationOrLoadError { __typename \
    ... on RepositoryLocation { name repositories { name } } \
    ... on PythonError { message className causes { message className } } }";

/// The request that reloads one location (the webserver fetches its definitions from
/// the code server again) and returns its entry.
#[must_use]
pub fn reload_location(location: &str) -> Value {
    json!({
        "query": format!(
            "mutation VigieReloadLocation($name: String!) {{ \
               reloadRepositoryLocation(repositoryLocationName: $name) {{ __typename \
                 ... on WorkspaceLocationEntry {{ {ENTRY} }} \
                 ... on ReloadNotSupported {{ message }} \
                 ... on RepositoryLocationNotFound {{ message }} \
                 ... on UnauthorizedError {{ message }} \
                 ... on PythonError {{ message stack }} }} }}"
        ),
        "variables": { "name": location },
        "operationName": "VigieReloadLocation",
    })
}

/// The request that reloads the whole workspace (locations added or removed). Only
/// the names are asked: the definitions of a location the reload adds cannot be read
/// in the same answer (Dagster 1.13 answers 500, "Location … does not exist in
/// workspace"), so [`workspace`] is asked next.
#[must_use]
pub fn reload_workspace() -> Value {
    json!({
        "query": "mutation VigieReloadWorkspace { reloadWorkspace { __typename \
               ... on Workspace { locationEntries { name loadStatus } } \
               ... on UnauthorizedError { message } \
               ... on PythonError { message } } }",
        "operationName": "VigieReloadWorkspace",
    })
}

/// The request that reads every location's status, without reloading anything.
#[must_use]
pub fn workspace() -> Value {
    json!({
        "query": format!(
            "query VigieWorkspace {{ workspaceOrError {{ __typename \
               ... on Workspace {{ locationEntries {{ {ENTRY} }} }} \
               ... on PythonError {{ message stack }} }} }}"
        ),
        "operationName": "VigieWorkspace",
    })
}

/// What an answer to any of the three requests says of `location`.
///
/// # Errors
/// The answer holds GraphQL errors, or a refusal (`UnauthorizedError`, `PythonError`
/// of the webserver itself, `ReloadNotSupported`), or is not of the documented shape.
pub fn load_of(answer: &Value, location: &str) -> Result<Load, String> {
    if let Some(errors) = answer.get("errors").and_then(Value::as_array)
        && !errors.is_empty()
    {
        let messages: Vec<&str> = errors
            .iter()
            .filter_map(|e| e.get("message").and_then(Value::as_str))
            .collect();
        return Err(format!("GraphQL errors: {}", messages.join("; ")));
    }
    let data = answer
        .get("data")
        .ok_or_else(|| "an answer without data".to_owned())?;
    let result = [
        "reloadRepositoryLocation",
        "reloadWorkspace",
        "workspaceOrError",
    ]
    .iter()
    .find_map(|k| data.get(*k))
    .ok_or_else(|| "an answer without a known field".to_owned())?;
    match typename(result) {
        "WorkspaceLocationEntry" => Ok(entry_load(result)),
        "Workspace" => Ok(result
            .get("locationEntries")
            .and_then(Value::as_array)
            .and_then(|entries| {
                entries
                    .iter()
                    .find(|e| e.get("name").and_then(Value::as_str) == Some(location))
            })
            .map_or(Load::NotListed, entry_load)),
        "RepositoryLocationNotFound" => Ok(Load::NotListed),
        other => Err(format!(
            "{other}: {}",
            result
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or("no message")
        )),
    }
}

fn typename(v: &Value) -> &str {
    v.get("__typename").and_then(Value::as_str).unwrap_or("")
}

fn entry_load(entry: &Value) -> Load {
    let loaded = entry.get("locationOrLoadError").unwrap_or(&Value::Null);
    let text = |v: &Value, k: &str| {
        v.get(k)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .trim_end()
            .to_owned()
    };
    match typename(loaded) {
        "RepositoryLocation" => Load::Loaded {
            repositories: loaded
                .get("repositories")
                .and_then(Value::as_array)
                .map(|repos| {
                    repos
                        .iter()
                        .filter_map(|r| r.get("name").and_then(Value::as_str))
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default(),
            image: entry
                .get("displayMetadata")
                .and_then(Value::as_array)
                .and_then(|m| {
                    m.iter()
                        .find(|kv| kv.get("key").and_then(Value::as_str) == Some("image"))
                })
                .and_then(|kv| kv.get("value").and_then(Value::as_str))
                .map(str::to_owned),
        },
        "PythonError" if text(loaded, "className") == "DagsterUserCodeUnreachableError" => {
            Load::Unreachable(text(loaded, "message"))
        }
        "PythonError" => {
            // The exception raised by the user's code is a cause; `message` is Dagster's
            // generic "Error occurred during the loading of Dagster definitions".
            let mut lines: Vec<String> = loaded
                .get("causes")
                .and_then(Value::as_array)
                .map(|c| {
                    c.iter()
                        .map(|c| text(c, "message"))
                        .filter(|m| !m.is_empty())
                        .collect()
                })
                .unwrap_or_default();
            lines.push(text(loaded, "message"));
            Load::Failed(lines.join("\n"))
        }
        _ => Load::Loading,
    }
}

/// The first lines of a Python error, for a history entry or a notification.
#[must_use]
pub fn first_lines(error: &str, lines: usize) -> String {
    let mut out: Vec<&str> = error
        .lines()
        .map(str::trim_end)
        .filter(|l| !l.trim().is_empty())
        .take(lines)
        .collect();
    if error.lines().filter(|l| !l.trim().is_empty()).count() > lines {
        out.push("…");
    }
    let mut text = out.join("\n");
    if text.len() > 1024 {
        let mut cut = 1024;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push('…');
    }
    text
}

/// Answers are read up to this size (a workspace of many locations stays far below).
const MAX_ANSWER: usize = 4 << 20;

/// Posts `request` to the webserver at `url` and reads what it says of `location`.
///
/// # Errors
/// See [`GraphqlError`].
pub async fn ask(
    http: &reqwest::Client,
    url: &str,
    timeout: Duration,
    request: &Value,
    location: &str,
) -> Result<Load, GraphqlError> {
    let unanswered = |reason: String| GraphqlError::Unanswered {
        url: url.to_owned(),
        reason,
    };
    let refused = |reason: String| GraphqlError::Refused {
        url: url.to_owned(),
        reason,
    };
    let mut response = http
        .post(url)
        .timeout(timeout)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(request.to_string())
        .send()
        .await
        .map_err(|e| unanswered(chain(&e)))?;
    let status = response.status();
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| unanswered(chain(&e)))? {
        if body.len() + chunk.len() > MAX_ANSWER {
            return Err(refused(format!("more than {} MiB", MAX_ANSWER >> 20)));
        }
        body.extend_from_slice(&chunk);
    }
    if !status.is_success() {
        let text = String::from_utf8_lossy(&body);
        return Err(refused(format!(
            "HTTP {status}: {}",
            text.chars().take(200).collect::<String>()
        )));
    }
    let answer: Value = serde_json::from_slice(&body)
        .map_err(|e| refused(format!("something that is not JSON ({e})")))?;
    load_of(&answer, location).map_err(refused)
}

/// An error and its causes.
fn chain(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text = format!("{text}: {s}");
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_loaded_location_names_its_repositories() {
        let answer = json!({"data": {"reloadRepositoryLocation": {
            "__typename": "WorkspaceLocationEntry", "name": "sales", "loadStatus": "LOADED",
            "locationOrLoadError": {"__typename": "RepositoryLocation", "name": "sales",
                "repositories": [{"name": "__repository__"}]}}}});
        assert_eq!(
            load_of(&answer, "sales"),
            Ok(Load::Loaded {
                repositories: vec!["__repository__".into()],
                image: None
            })
        );
    }

    #[test]
    fn a_load_error_carries_the_python_error() {
        // As Dagster 1.13 answers for a module that raises at import.
        let answer = json!({"data": {"reloadRepositoryLocation": {
            "__typename": "WorkspaceLocationEntry", "name": "sales", "loadStatus": "LOADED",
            "locationOrLoadError": {"__typename": "PythonError",
                "message": "dagster._core.errors.DagsterUserCodeLoadError: Error occurred during the loading of Dagster definitions in\nexecutable_path=/opt/dagster/venv/bin/python3, module_name=defs, working_directory=/opt/dagster/app\n",
                "className": "DagsterUserCodeLoadError",
                "causes": [{"message": "RuntimeError: broken at import\n", "className": "RuntimeError"}]}}}});
        let Ok(Load::Failed(e)) = load_of(&answer, "sales") else {
            panic!("expected a load failure");
        };
        assert!(
            e.starts_with(
                "RuntimeError: broken at import\ndagster._core.errors.DagsterUserCodeLoadError"
            ),
            "{e}"
        );
        assert_eq!(
            first_lines(&e, 2),
            "RuntimeError: broken at import\ndagster._core.errors.DagsterUserCodeLoadError: Error occurred during the loading of Dagster definitions in\n…"
        );
        let unreachable = json!({"data": {"reloadRepositoryLocation": {
            "__typename": "WorkspaceLocationEntry", "name": "sales", "loadStatus": "LOADED",
            "locationOrLoadError": {"__typename": "PythonError",
                "message": "dagster._core.errors.DagsterUserCodeUnreachableError: Could not reach user code server. gRPC Error code: UNAVAILABLE\n",
                "className": "DagsterUserCodeUnreachableError"}}}});
        assert!(
            matches!(load_of(&unreachable, "sales"), Ok(Load::Unreachable(m)) if m.contains("UNAVAILABLE"))
        );
    }

    #[test]
    fn the_workspace_answer_is_searched_for_the_location() {
        let answer = json!({"data": {"workspaceOrError": {"__typename": "Workspace",
            "locationEntries": [
                {"name": "hr", "loadStatus": "LOADING", "locationOrLoadError": null},
                {"name": "sales", "loadStatus": "LOADED",
                    "displayMetadata": [{"key": "host", "value": "sales"}, {"key": "image", "value": "sales:aaaa"}],
                    "locationOrLoadError":
                    {"__typename": "RepositoryLocation", "name": "sales", "repositories": []}}]}}});
        assert_eq!(
            load_of(&answer, "sales"),
            Ok(Load::Loaded {
                repositories: vec![],
                image: Some("sales:aaaa".into())
            })
        );
        assert_eq!(load_of(&answer, "hr"), Ok(Load::Loading));
        assert_eq!(load_of(&answer, "finance"), Ok(Load::NotListed));
    }

    #[test]
    fn refusals_and_errors_are_reported_by_name() {
        let not_found = json!({"data": {"reloadRepositoryLocation": {
            "__typename": "RepositoryLocationNotFound", "message": "Location sales does not exist"}}});
        assert_eq!(load_of(&not_found, "sales"), Ok(Load::NotListed));
        let unauthorized = json!({"data": {"reloadWorkspace": {
            "__typename": "UnauthorizedError", "message": "no"}}});
        assert_eq!(
            load_of(&unauthorized, "sales"),
            Err("UnauthorizedError: no".into())
        );
        let errors = json!({"errors": [{"message": "Cannot query field"}]});
        assert!(
            load_of(&errors, "sales")
                .unwrap_err()
                .contains("Cannot query field")
        );
        assert!(load_of(&json!({"data": {}}), "sales").is_err());
        assert!(load_of(&json!([]), "sales").is_err());
    }

    #[test]
    fn first_lines_are_bounded() {
        let long = "x".repeat(5000);
        assert!(first_lines(&long, 3).len() <= 1024 + '…'.len_utf8());
        assert_eq!(first_lines("a\n\nb\nc\n", 5), "a\nb\nc");
    }
}
