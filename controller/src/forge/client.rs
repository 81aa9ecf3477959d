//! The I/O edge of reporting: GitHub's and GitLab's REST APIs. The request bodies are
//! built as data by pure functions (tested as data); [`Client`] sends them and tells
//! the answers apart as polling does (`Retry-After` and rate-limit headers, refusals,
//! failures). Idempotent: the deployment of a (environment, SHA) is looked up before
//! one is created, and a status equal to the latest one there is not posted again.

use std::time::Duration;

use jiff::Timestamp;
use reqwest::{Method, StatusCode, header};
use serde_json::{Value, json};

use super::rules::{GitLabStep, State, gitlab_step};
use crate::{
    api::Sha,
    ci::poll::{PollError, encode_project, failure, retry_after, unanswered},
    git::redact,
};

/// How long one request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// The task of the deployments Vigie creates on GitHub.
pub const TASK: &str = "deploy";

/// Why a report could not be delivered.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// The token named by the CI settings cannot be read.
    #[error("failed to read the token: {0}")]
    Credential(#[source] crate::ci::auth::AuthError),
    /// No token is configured: reporting writes to the API and needs one.
    #[error("{0} is not set: reporting to the forge needs a token allowed to write deployments")]
    NoToken(&'static str),
    /// The provider's API did not take the request: the same answers as a poll's.
    #[error(transparent)]
    Api(#[from] PollError),
}

/// Whether and when a failed report is worth another attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Again {
    /// Trying again will not help (a refusal, no token).
    Never,
    /// Try again after the backoff's next step.
    Backoff,
    /// The provider asked to wait this long.
    After(Duration),
}

impl ReportError {
    /// Whether to try again, and when.
    #[must_use]
    pub fn again(&self) -> Again {
        match self {
            Self::Api(PollError::RateLimited { retry_after, .. }) => Again::After(*retry_after),
            Self::Api(
                PollError::Unavailable { .. }
                | PollError::Malformed { .. }
                | PollError::Refused { status: 408, .. },
            )
            | Self::Credential(_) => Again::Backoff,
            Self::Api(PollError::Refused { .. }) | Self::NoToken(_) => Again::Never,
        }
    }
}

/// What a report did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Delivered {
    /// Something was written.
    Written,
    /// The forge showed it already: nothing was written.
    Unchanged,
}

/// One report: what a (environment, SHA) should show, and where.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    /// The Release, `namespace/name` (in the deployment's payload, to find it again).
    pub release: String,
    /// The environment's name on the forge.
    pub environment: String,
    /// The commit.
    pub sha: Sha,
    /// The ref the deployment names (GitLab): the revision the Release asks for.
    pub git_ref: String,
    /// The state.
    pub state: State,
    /// A sentence (at most 140 characters).
    pub description: String,
    /// The environment's URL (`Environment.spec.url`).
    pub environment_url: Option<String>,
    /// The link back to Vigie's history of the Release.
    pub log_url: Option<String>,
}

/// `POST /repos/{owner}/{repo}/deployments`.
#[must_use]
pub fn github_deployment(r: &Report) -> Value {
    json!({
        "ref": r.sha.as_str(),
        "task": TASK,
        "auto_merge": false,
        "required_contexts": [],
        "payload": {"vigie": {"release": r.release}},
        "environment": r.environment,
        "description": r.description,
        "transient_environment": false,
    })
}

/// `POST /repos/{owner}/{repo}/deployments/{id}/statuses`. `auto_inactive` is off:
/// Vigie marks the SHA it replaced inactive itself, and only that one (another code
/// location may deploy to an environment of the same name).
#[must_use]
pub fn github_deployment_status(r: &Report) -> Value {
    let mut body = json!({
        "state": r.state.github_deployment(),
        "description": r.description,
        "auto_inactive": false,
    });
    if let Some(url) = &r.environment_url {
        body["environment_url"] = json!(url);
    }
    if let Some(url) = &r.log_url {
        body["log_url"] = json!(url);
    }
    body
}

/// The context of Vigie's commit status for an environment.
#[must_use]
pub fn commit_context(environment: &str) -> String {
    format!("vigie/{environment}")
}

/// `POST /repos/{owner}/{repo}/statuses/{sha}`; `None` when the state leaves the
/// commit status as it is.
#[must_use]
pub fn github_commit_status(r: &Report) -> Option<Value> {
    let state = r.state.github_commit()?;
    let mut body = json!({
        "state": state,
        "context": commit_context(&r.environment),
        "description": r.description,
    });
    if let Some(url) = r.log_url.as_ref().or(r.environment_url.as_ref()) {
        body["target_url"] = json!(url);
    }
    Some(body)
}

/// `POST /projects/:id/deployments`.
#[must_use]
pub fn gitlab_deployment(r: &Report, status: &str) -> Value {
    json!({
        "environment": r.environment,
        "sha": r.sha.as_str(),
        "ref": r.git_ref,
        "tag": false,
        "status": status,
    })
}

/// The newest deployment Vigie made for the Release among a GitHub answer's.
#[must_use]
pub fn ours(deployments: &[Value], release: &str) -> Option<u64> {
    deployments
        .iter()
        .filter(|d| {
            let payload = match d.get("payload") {
                // GitHub returns a payload given as a string as that string.
                Some(Value::String(s)) => serde_json::from_str(s).unwrap_or(Value::Null),
                Some(v) => v.clone(),
                None => Value::Null,
            };
            payload.pointer("/vigie/release").and_then(Value::as_str) == Some(release)
        })
        .filter_map(|d| d.get("id").and_then(Value::as_u64))
        .max()
}

/// An HTTP client for the forges' APIs.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
}

impl Default for Client {
    fn default() -> Self {
        Self::new(REQUEST_TIMEOUT)
    }
}

/// A request's authentication header.
type Auth<'a> = (&'static str, &'a str);

impl Client {
    /// A client whose requests time out after `timeout`.
    #[must_use]
    pub fn new(timeout: Duration) -> Self {
        let http = reqwest::Client::builder()
            .user_agent(concat!("vigie/", env!("CARGO_PKG_VERSION")))
            .timeout(timeout)
            .build()
            .expect("a reqwest client builds");
        Self { http }
    }

    async fn send(
        &self,
        method: Method,
        url: &str,
        auth: Auth<'_>,
        body: Option<&Value>,
    ) -> Result<Value, ReportError> {
        let shown = format!("{method} {}", redact(url));
        let github = auth.0 == "authorization";
        let accept = if github {
            "application/vnd.github+json"
        } else {
            "application/json"
        };
        let mut request = self
            .http
            .request(method, url)
            .header(header::ACCEPT, accept)
            .header(auth.0, auth.1);
        if github {
            request = request.header("x-github-api-version", "2022-11-28");
        }
        if let Some(body) = body {
            request = request
                .header(header::CONTENT_TYPE, "application/json")
                .body(serde_json::to_vec(body).unwrap_or_default());
        }
        let response = request.send().await.map_err(|e| unanswered(&shown, &e))?;
        let status = response.status();
        let headers = response.headers().clone();
        // A 429 without a word of when: a minute.
        if status == StatusCode::TOO_MANY_REQUESTS
            && retry_after(&headers, Timestamp::now()).is_none()
        {
            return Err(ReportError::Api(PollError::RateLimited {
                url: shown,
                retry_after: Duration::from_secs(60),
            }));
        }
        let bytes = response.bytes().await.map_err(|e| {
            ReportError::Api(PollError::Unavailable {
                url: shown.clone(),
                reason: e.to_string(),
            })
        })?;
        if let Some(e) = failure(&shown, status, &headers, &bytes) {
            return Err(e.into());
        }
        let parsed = serde_json::from_slice::<Value>(&bytes);
        parsed.map_err(|e| {
            ReportError::Api(PollError::Malformed {
                url: shown,
                reason: e.to_string(),
            })
        })
    }

    /// Shows `r` on GitHub: the Vigie deployment of (environment, SHA) found or
    /// created (`known` is its id when this process knows it), its newest status
    /// compared and a status posted when it differs; then the commit status when
    /// `commit_status`. Returns the deployment's id (none for a replaced SHA without
    /// one) and whether anything was written.
    pub async fn github(
        &self,
        api: &str,
        repo: &str,
        token: &str,
        r: &Report,
        (deployments, commit_status): (bool, bool),
        known: Option<u64>,
    ) -> Result<(Option<u64>, Delivered), ReportError> {
        let api = api.trim_end_matches('/');
        let bearer = format!("Bearer {token}");
        let auth = ("authorization", bearer.as_str());
        let mut written = false;
        let mut id = known;
        if deployments {
            if id.is_none() {
                let url = format!(
                    "{api}/repos/{repo}/deployments?sha={}&environment={}&task={TASK}&per_page=100",
                    r.sha.as_str(),
                    query(&r.environment)
                );
                let found = self.send(Method::GET, &url, auth, None).await?;
                id = ours(found.as_array().map_or(&[][..], Vec::as_slice), &r.release);
            }
            if id.is_none() && r.state.creates() {
                let url = format!("{api}/repos/{repo}/deployments");
                let created = self
                    .send(Method::POST, &url, auth, Some(&github_deployment(r)))
                    .await?;
                id = created.get("id").and_then(Value::as_u64);
                if id.is_none() {
                    return Err(ReportError::Api(PollError::Malformed {
                        url,
                        reason: "no deployment id".into(),
                    }));
                }
                written = true;
            }
            if let Some(id) = id {
                let url = format!("{api}/repos/{repo}/deployments/{id}/statuses");
                let latest = self
                    .send(Method::GET, &format!("{url}?per_page=1"), auth, None)
                    .await?;
                let state = latest.pointer("/0/state").and_then(Value::as_str);
                if state != Some(r.state.github_deployment()) {
                    self.send(Method::POST, &url, auth, Some(&github_deployment_status(r)))
                        .await?;
                    written = true;
                }
            }
        }
        if commit_status && let Some(body) = github_commit_status(r) {
            let sha = r.sha.as_str();
            let url = format!("{api}/repos/{repo}/commits/{sha}/statuses?per_page=100");
            let statuses = self.send(Method::GET, &url, auth, None).await?;
            let context = commit_context(&r.environment);
            let latest = statuses.as_array().and_then(|all| {
                all.iter()
                    .filter(|s| s.get("context").and_then(Value::as_str) == Some(&context))
                    .max_by_key(|s| s.get("id").and_then(Value::as_u64).unwrap_or(0))
                    .and_then(|s| s.get("state").and_then(Value::as_str))
            });
            if latest != body.get("state").and_then(Value::as_str) {
                let url = format!("{api}/repos/{repo}/statuses/{sha}");
                self.send(Method::POST, &url, auth, Some(&body)).await?;
                written = true;
            }
        }
        let delivered = if written {
            Delivered::Written
        } else {
            Delivered::Unchanged
        };
        Ok((id, delivered))
    }

    /// Shows `r` on GitLab: the newest deployment of the SHA in the environment found,
    /// then created or updated as [`gitlab_step`] says.
    pub async fn gitlab(
        &self,
        api: &str,
        project: &str,
        token: &str,
        r: &Report,
    ) -> Result<Delivered, ReportError> {
        let api = api.trim_end_matches('/');
        let project = encode_project(project);
        let auth = ("private-token", token);
        let url = format!(
            "{api}/projects/{project}/deployments?environment={}&order_by=id&sort=desc&per_page=100",
            query(&r.environment)
        );
        let found = self.send(Method::GET, &url, auth, None).await?;
        let newest = found.as_array().and_then(|all| {
            all.iter()
                .filter(|d| d.get("sha").and_then(Value::as_str) == Some(r.sha.as_str()))
                .max_by_key(|d| d.get("id").and_then(Value::as_u64).unwrap_or(0))
        });
        let current = newest.and_then(|d| d.get("status").and_then(Value::as_str));
        match gitlab_step(current, r.state) {
            GitLabStep::Nothing => Ok(Delivered::Unchanged),
            GitLabStep::Create(status) => {
                let url = format!("{api}/projects/{project}/deployments");
                self.send(
                    Method::POST,
                    &url,
                    auth,
                    Some(&gitlab_deployment(r, status)),
                )
                .await?;
                Ok(Delivered::Written)
            }
            GitLabStep::Update(status) => {
                let id = newest
                    .and_then(|d| d.get("id").and_then(Value::as_u64))
                    .unwrap_or_default();
                let url = format!("{api}/projects/{project}/deployments/{id}");
                self.send(Method::PUT, &url, auth, Some(&json!({"status": status})))
                    .await?;
                Ok(Delivered::Written)
            }
        }
    }
}

/// A query-string value, percent-encoded.
fn query(value: &str) -> String {
    value
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(state: State) -> Report {
        Report {
            release: "apps/app-preprod".into(),
            environment: "preprod".into(),
            sha: "a".repeat(40).parse().unwrap(),
            git_ref: "main".into(),
            state,
            description: "aaaaaaa validated in preprod".into(),
            environment_url: Some("https://preprod.example.com".into()),
            log_url: Some("https://vigie.example.com/releases/apps/app-preprod".into()),
        }
    }

    #[test]
    fn github_bodies_are_the_documented_ones() {
        let r = report(State::Success);
        assert_eq!(
            github_deployment(&r),
            json!({"ref": "a".repeat(40), "task": "deploy", "auto_merge": false, "required_contexts": [],
                "payload": {"vigie": {"release": "apps/app-preprod"}}, "environment": "preprod",
                "description": "aaaaaaa validated in preprod", "transient_environment": false})
        );
        assert_eq!(
            github_deployment_status(&r),
            json!({"state": "success", "description": "aaaaaaa validated in preprod", "auto_inactive": false,
                "environment_url": "https://preprod.example.com",
                "log_url": "https://vigie.example.com/releases/apps/app-preprod"})
        );
        assert_eq!(
            github_commit_status(&r),
            Some(json!({"state": "success", "context": "vigie/preprod",
                "description": "aaaaaaa validated in preprod",
                "target_url": "https://vigie.example.com/releases/apps/app-preprod"}))
        );
        assert_eq!(github_commit_status(&report(State::Inactive)), None);
        let bare = Report {
            environment_url: None,
            log_url: None,
            ..report(State::InProgress)
        };
        assert_eq!(
            github_deployment_status(&bare),
            json!({"state": "in_progress", "description": "aaaaaaa validated in preprod", "auto_inactive": false}),
            "no URL is sent when none is configured"
        );
    }

    #[test]
    fn gitlab_body_is_the_documented_one() {
        assert_eq!(
            gitlab_deployment(&report(State::InProgress), "running"),
            json!({"environment": "preprod", "sha": "a".repeat(40), "ref": "main", "tag": false, "status": "running"})
        );
    }

    #[test]
    fn only_vigies_own_deployment_of_the_release_is_taken() {
        let answer = json!([
            {"id": 9, "payload": {"vigie": {"release": "apps/other"}}},
            {"id": 7, "payload": {"vigie": {"release": "apps/app-preprod"}}},
            {"id": 8, "payload": "{\"vigie\": {\"release\": \"apps/app-preprod\"}}"},
            {"id": 10, "payload": {}},
            {"id": 11, "payload": "not json"}
        ]);
        assert_eq!(
            ours(answer.as_array().unwrap(), "apps/app-preprod"),
            Some(8)
        );
        assert_eq!(ours(&[], "apps/app-preprod"), None);
    }

    #[test]
    fn errors_say_whether_to_try_again() {
        let refused = |status| {
            ReportError::Api(PollError::Refused {
                url: "u".into(),
                status,
                message: String::new(),
            })
        };
        assert_eq!(refused(401).again(), Again::Never);
        assert_eq!(refused(422).again(), Again::Never);
        assert_eq!(refused(408).again(), Again::Backoff);
        assert_eq!(
            ReportError::NoToken("ci.github.token").again(),
            Again::Never
        );
        assert_eq!(
            ReportError::Api(PollError::RateLimited {
                url: "u".into(),
                retry_after: Duration::from_secs(7)
            })
            .again(),
            Again::After(Duration::from_secs(7))
        );
        assert_eq!(
            ReportError::Api(PollError::Unavailable {
                url: "u".into(),
                reason: "502".into()
            })
            .again(),
            Again::Backoff
        );
        assert_eq!(query("pre prod/eu"), "pre%20prod%2Feu");
    }
}
