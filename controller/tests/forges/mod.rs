//! Local stand-ins of GitHub's and GitLab's REST APIs for reporting back to the forge:
//! deployments, deployment statuses and commit statuses (and, so that one stand-in
//! serves a whole scenario, the check runs, combined status and pipelines that polling
//! reads). They check the token, keep what they were sent, answer with the documented
//! JSON, and fail on demand (rate limits with `Retry-After`, 5xx, slowness).

#![allow(dead_code, reason = "each test binary uses part of it")]

use std::{
    collections::{HashMap, VecDeque},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{
    Router,
    body::Bytes,
    extract::State,
    http::{HeaderMap, Method, StatusCode, Uri},
    response::{IntoResponse, Response},
};
use serde_json::{Value, json};

/// The token allowed to write.
pub const GITHUB_TOKEN: &str = "ghp_report_token";
/// The GitLab token allowed to write (`api` scope).
pub const GITLAB_TOKEN: &str = "glpat-report-token";

/// An answer given instead of the documented one.
#[derive(Clone, Debug)]
pub enum Fault {
    /// This status, with `Retry-After` seconds when given.
    Status(u16, Option<u64>),
    /// A documented answer, this late.
    Slow(Duration),
    /// `403` with `x-ratelimit-remaining: 0` and a reset this many seconds ahead.
    Exhausted(u64),
}

/// One request received.
#[derive(Clone, Debug)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub body: Value,
    pub at: Instant,
    pub status: u16,
}

#[derive(Default)]
pub struct Book {
    pub requests: Vec<Request>,
    /// GitHub deployments, oldest first.
    pub deployments: Vec<Value>,
    /// GitHub deployment statuses by deployment id, oldest first.
    pub statuses: HashMap<u64, Vec<Value>>,
    /// Commit statuses, oldest first.
    pub commit_statuses: Vec<Value>,
    /// GitLab deployments, oldest first.
    pub gitlab: Vec<Value>,
    /// Faults for the next report requests (deployments and statuses), in order.
    pub faults: VecDeque<Fault>,
    /// Check-run conclusion (GitHub) or pipeline status (GitLab) per SHA.
    pub ci: HashMap<String, String>,
    next_id: u64,
}

/// A running stand-in.
#[derive(Clone)]
pub struct Forge {
    pub port: u16,
    pub book: Arc<Mutex<Book>>,
}

impl Forge {
    /// Starts a GitHub stand-in (`http://127.0.0.1:port`) or a GitLab one
    /// (`http://127.0.0.1:port/api/v4`) on its own thread.
    pub fn start() -> Self {
        let book = Arc::new(Mutex::new(Book {
            next_id: 100,
            ..Book::default()
        }));
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let state = book.clone();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let app = Router::new().fallback(handle).with_state(state);
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                axum::serve(listener, app).await.unwrap();
            });
        });
        Self { port, book }
    }

    pub fn github_api(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn gitlab_api(&self) -> String {
        format!("http://127.0.0.1:{}/api/v4", self.port)
    }

    pub fn fail(&self, faults: impl IntoIterator<Item = Fault>) {
        self.book.lock().unwrap().faults.extend(faults);
    }

    pub fn set_ci(&self, sha: &str, state: &str) {
        self.book
            .lock()
            .unwrap()
            .ci
            .insert(sha.to_owned(), state.to_owned());
    }

    /// GitHub deployments of `sha` in `environment`.
    pub fn deployments(&self, environment: &str, sha: &str) -> Vec<Value> {
        self.book
            .lock()
            .unwrap()
            .deployments
            .iter()
            .filter(|d| d["environment"] == environment && d["sha"] == sha)
            .cloned()
            .collect()
    }

    /// The states of the statuses of GitHub's deployment of (environment, SHA), oldest
    /// first; empty when there is no deployment.
    pub fn states(&self, environment: &str, sha: &str) -> Vec<String> {
        let book = self.book.lock().unwrap();
        book.deployments
            .iter()
            .filter(|d| d["environment"] == environment && d["sha"] == sha)
            .flat_map(|d| {
                book.statuses
                    .get(&d["id"].as_u64().unwrap())
                    .cloned()
                    .unwrap_or_default()
            })
            .map(|s| s["state"].as_str().unwrap().to_owned())
            .collect()
    }

    /// The newest deployment status of (environment, SHA) on GitHub.
    pub fn latest_status(&self, environment: &str, sha: &str) -> Option<Value> {
        let book = self.book.lock().unwrap();
        let d = book
            .deployments
            .iter()
            .rfind(|d| d["environment"] == environment && d["sha"] == sha)?;
        book.statuses.get(&d["id"].as_u64()?)?.last().cloned()
    }

    /// The commit statuses posted for `sha` in `context`: their states, oldest first.
    pub fn commit_states(&self, sha: &str, context: &str) -> Vec<String> {
        self.book
            .lock()
            .unwrap()
            .commit_statuses
            .iter()
            .filter(|s| s["sha"] == sha && s["context"] == context)
            .map(|s| s["state"].as_str().unwrap().to_owned())
            .collect()
    }

    /// GitLab: the statuses the deployments of (environment, SHA) went through, one
    /// list per deployment, oldest first.
    pub fn gitlab_states(&self, environment: &str, sha: &str) -> Vec<Vec<String>> {
        self.book
            .lock()
            .unwrap()
            .gitlab
            .iter()
            .filter(|d| d["environment"]["name"] == environment && d["sha"] == sha)
            .map(|d| {
                d["history"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|s| s.as_str().unwrap().to_owned())
                    .collect()
            })
            .collect()
    }

    /// Requests whose path contains `part`, with their answer's status.
    pub fn requests(&self, part: &str) -> Vec<Request> {
        self.book
            .lock()
            .unwrap()
            .requests
            .iter()
            .filter(|r| r.path.contains(part))
            .cloned()
            .collect()
    }

    /// Waits until `f` holds, at most `timeout`.
    pub fn wait(&self, timeout: Duration, what: &str, f: impl Fn(&Self) -> bool) {
        let start = Instant::now();
        while !f(self) {
            assert!(
                start.elapsed() < timeout,
                "timed out after {timeout:?} waiting for {what}; requests: {:#?}",
                self.book
                    .lock()
                    .unwrap()
                    .requests
                    .iter()
                    .map(|r| format!("{} {} → {}", r.method, r.path, r.status))
                    .collect::<Vec<_>>()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

fn query(uri: &Uri, name: &str) -> Option<String> {
    uri.query()?.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == name).then(|| v.replace("%2F", "/").replace("%20", " "))
    })
}

fn answer(status: u16, body: &Value) -> Response {
    (
        StatusCode::from_u16(status).unwrap(),
        [("content-type", "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn is_report(method: &Method, path: &str) -> bool {
    path.contains("/deployments")
        || (method == Method::POST && path.contains("/statuses/"))
        || path.ends_with("/statuses")
}

async fn handle(
    State(book): State<Arc<Mutex<Book>>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_owned();
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let fault = if is_report(&method, &path) {
        book.lock().unwrap().faults.pop_front()
    } else {
        None
    };
    let response = match fault {
        Some(Fault::Status(code, retry)) => {
            let mut r = answer(code, &json!({"message": "stand-in fault"}));
            if let Some(s) = retry {
                r.headers_mut()
                    .insert("retry-after", s.to_string().parse().unwrap());
            }
            r
        }
        Some(Fault::Exhausted(secs)) => {
            let reset = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs()
                + secs;
            let mut r = answer(403, &json!({"message": "API rate limit exceeded"}));
            r.headers_mut()
                .insert("x-ratelimit-remaining", "0".parse().unwrap());
            r.headers_mut()
                .insert("x-ratelimit-reset", reset.to_string().parse().unwrap());
            r
        }
        Some(Fault::Slow(d)) => {
            tokio::time::sleep(d).await;
            route(&book, &method, &uri, &headers, &body)
        }
        None => route(&book, &method, &uri, &headers, &body),
    };
    book.lock().unwrap().requests.push(Request {
        method: method.to_string(),
        path: uri.to_string(),
        body,
        at: Instant::now(),
        status: response.status().as_u16(),
    });
    response
}

fn route(
    book: &Mutex<Book>,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &Value,
) -> Response {
    let path = uri.path();
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(rest) = path.strip_prefix("/api/v4/projects/") {
        if header("private-token") != Some(GITLAB_TOKEN) {
            return answer(401, &json!({"message": "401 Unauthorized"}));
        }
        return gitlab(book, method, uri, rest, body);
    }
    let Some(rest) = path.strip_prefix("/repos/") else {
        return answer(404, &json!({"message": "Not Found"}));
    };
    if header("authorization") != Some(&format!("Bearer {GITHUB_TOKEN}")) {
        return answer(401, &json!({"message": "Bad credentials"}));
    }
    github(book, method, uri, rest, body)
}

fn now() -> String {
    "2026-12-02T10:00:00Z".to_owned()
}

fn missing(body: &Value, fields: &[&str]) -> Option<Response> {
    let absent: Vec<&str> = fields
        .iter()
        .copied()
        .filter(|f| body.get(f).is_none_or(Value::is_null))
        .collect();
    (!absent.is_empty()).then(|| {
        answer(
            422,
            &json!({"message": format!("Invalid request: missing {}", absent.join(", "))}),
        )
    })
}

#[allow(clippy::too_many_lines, reason = "one arm per documented endpoint")]
fn github(book: &Mutex<Book>, method: &Method, uri: &Uri, rest: &str, body: &Value) -> Response {
    let parts: Vec<&str> = rest.split('/').collect();
    let mut b = book.lock().unwrap();
    match (method.as_str(), &parts[..]) {
        ("GET", [_, _]) => answer(200, &json!({"id": 1, "full_name": "octo/app"})),
        ("GET", [_, _, "commits", sha, "check-runs"]) => {
            let c = b.ci.get(*sha).cloned().unwrap_or_else(|| "queued".into());
            let (status, conclusion) = match c.as_str() {
                "queued" | "in_progress" => (c.clone(), Value::Null),
                done => ("completed".into(), json!(done)),
            };
            answer(
                200,
                &json!({"total_count": 1, "check_runs": [{"id": 1, "head_sha": sha, "name": "test",
                    "status": status, "conclusion": conclusion, "html_url": "https://github.example/runs/1", "details_url": null}]}),
            )
        }
        ("GET", [_, _, "commits", sha, "status"]) => {
            let statuses: Vec<Value> = b
                .commit_statuses
                .iter()
                .rev()
                .filter(|s| s["sha"] == *sha)
                .cloned()
                .collect();
            answer(
                200,
                &json!({"state": "pending", "sha": sha, "total_count": statuses.len(), "statuses": statuses}),
            )
        }
        ("GET", [_, _, "commits", sha, "statuses"]) => {
            let statuses: Vec<Value> = b
                .commit_statuses
                .iter()
                .rev()
                .filter(|s| s["sha"] == *sha)
                .cloned()
                .collect();
            answer(200, &json!(statuses))
        }
        ("POST", [_, _, "statuses", sha]) => {
            if let Some(r) = missing(body, &["state"]) {
                return r;
            }
            b.next_id += 1;
            let status = json!({"id": b.next_id, "sha": sha, "state": body["state"],
                "context": body.get("context").cloned().unwrap_or(json!("default")),
                "description": body["description"], "target_url": body["target_url"],
                "created_at": now(), "updated_at": now()});
            b.commit_statuses.push(status.clone());
            answer(201, &status)
        }
        ("GET", [_, _, "deployments"]) => {
            let sha = query(uri, "sha");
            let env = query(uri, "environment");
            let task = query(uri, "task");
            let found: Vec<Value> = b
                .deployments
                .iter()
                .rev()
                .filter(|d| sha.as_ref().is_none_or(|s| d["sha"] == *s))
                .filter(|d| env.as_ref().is_none_or(|e| d["environment"] == *e))
                .filter(|d| task.as_ref().is_none_or(|t| d["task"] == *t))
                .cloned()
                .collect();
            answer(200, &json!(found))
        }
        ("POST", [_, _, "deployments"]) => {
            if let Some(r) = missing(body, &["ref"]) {
                return r;
            }
            if body["auto_merge"] != json!(false) || body["required_contexts"] != json!([]) {
                return answer(
                    409,
                    &json!({"message": "Conflict: auto_merge and required_contexts must be off"}),
                );
            }
            b.next_id += 1;
            let d = json!({"id": b.next_id, "sha": body["ref"], "ref": body["ref"],
                "task": body.get("task").cloned().unwrap_or(json!("deploy")),
                "payload": body.get("payload").cloned().unwrap_or(json!({})),
                "environment": body.get("environment").cloned().unwrap_or(json!("production")),
                "description": body["description"],
                "transient_environment": body["transient_environment"],
                "created_at": now(), "updated_at": now()});
            b.deployments.push(d.clone());
            answer(201, &d)
        }
        ("GET", [_, _, "deployments", id, "statuses"]) => {
            let id: u64 = id.parse().unwrap_or_default();
            if !b.deployments.iter().any(|d| d["id"] == id) {
                return answer(404, &json!({"message": "Not Found"}));
            }
            let per_page: usize = query(uri, "per_page")
                .and_then(|p| p.parse().ok())
                .unwrap_or(30);
            let list: Vec<Value> = b
                .statuses
                .get(&id)
                .map(|s| s.iter().rev().take(per_page).cloned().collect())
                .unwrap_or_default();
            answer(200, &json!(list))
        }
        ("POST", [_, _, "deployments", id, "statuses"]) => {
            let id: u64 = id.parse().unwrap_or_default();
            if !b.deployments.iter().any(|d| d["id"] == id) {
                return answer(404, &json!({"message": "Not Found"}));
            }
            if let Some(r) = missing(body, &["state"]) {
                return r;
            }
            let allowed = [
                "error",
                "failure",
                "inactive",
                "in_progress",
                "queued",
                "pending",
                "success",
            ];
            if !body["state"].as_str().is_some_and(|s| allowed.contains(&s)) {
                return answer(422, &json!({"message": "Validation Failed: state"}));
            }
            b.next_id += 1;
            let status = json!({"id": b.next_id, "state": body["state"],
                "description": body["description"], "environment_url": body["environment_url"],
                "log_url": body["log_url"], "target_url": body["log_url"],
                "auto_inactive": body["auto_inactive"], "created_at": now()});
            b.statuses.entry(id).or_default().push(status.clone());
            answer(201, &status)
        }
        _ => answer(404, &json!({"message": "Not Found"})),
    }
}

fn gitlab(book: &Mutex<Book>, method: &Method, uri: &Uri, rest: &str, body: &Value) -> Response {
    let parts: Vec<&str> = rest.split('/').collect();
    let mut b = book.lock().unwrap();
    match (method.as_str(), &parts[..]) {
        ("GET", [_]) => answer(200, &json!({"id": 7, "path_with_namespace": "data/app"})),
        ("GET", [_, "pipelines"]) => {
            let sha = query(uri, "sha").unwrap_or_default();
            let status = b.ci.get(&sha).cloned().unwrap_or_else(|| "created".into());
            answer(
                200,
                &json!([{"id": 47, "iid": 12, "project_id": 7, "status": status, "source": "push", "ref": "main",
                    "sha": sha, "web_url": "https://gitlab.example/data/app/-/pipelines/47",
                    "created_at": now(), "updated_at": now()}]),
            )
        }
        ("GET", [_, "deployments"]) => {
            let env = query(uri, "environment");
            let mut found: Vec<Value> = b
                .gitlab
                .iter()
                .filter(|d| env.as_ref().is_none_or(|e| d["environment"]["name"] == *e))
                .cloned()
                .collect();
            if query(uri, "sort").as_deref() == Some("desc") {
                found.reverse();
            }
            answer(200, &json!(found))
        }
        ("POST", [_, "deployments"]) => {
            if let Some(r) = missing(body, &["environment", "sha", "ref", "tag", "status"]) {
                return r;
            }
            let status = body["status"].as_str().unwrap_or_default().to_owned();
            if !["running", "success", "failed", "canceled"].contains(&status.as_str()) {
                return answer(400, &json!({"message": {"status": ["is invalid"]}}));
            }
            b.next_id += 1;
            let iid = b.gitlab.len() + 1;
            let d = json!({"id": b.next_id, "iid": iid, "ref": body["ref"], "sha": body["sha"],
                "status": status, "created_at": now(), "updated_at": now(),
                "environment": {"id": 1, "name": body["environment"]},
                "history": [status]});
            b.gitlab.push(d.clone());
            answer(201, &d)
        }
        ("PUT", [_, "deployments", id]) => {
            let id: u64 = id.parse().unwrap_or_default();
            let Some(d) = b.gitlab.iter_mut().find(|d| d["id"] == id) else {
                return answer(404, &json!({"message": "404 Not found"}));
            };
            let to = body["status"].as_str().unwrap_or_default().to_owned();
            let from = d["status"].as_str().unwrap_or_default().to_owned();
            // GitLab's state machine: `run` only from created; the others from any other.
            let ok = match to.as_str() {
                "running" => from == "created",
                "success" | "failed" | "canceled" => from != to,
                _ => false,
            };
            if !ok {
                return answer(
                    400,
                    &json!({"message": format!("Cannot transition status via :{to} from :{from}")}),
                );
            }
            d["status"] = json!(to);
            d["history"].as_array_mut().unwrap().push(json!(to));
            answer(200, d)
        }
        _ => answer(404, &json!({"message": "404 Not found"})),
    }
}
