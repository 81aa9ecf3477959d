//! Polling GitHub's and GitLab's REST APIs for a SHA's checks (the I/O edge of
//! [`super::github`] and [`super::gitlab`]): pagination, conditional requests (an
//! unchanged answer costs no quota), rate limits, and errors told apart.

use std::{collections::HashMap, sync::Mutex, time::Duration};

use jiff::Timestamp;
use reqwest::{StatusCode, header};

use super::{github, gitlab};
use crate::git::redact;

/// How long one request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// Pages read at most (100 check runs each).
const MAX_PAGES: usize = 10;

/// Why a poll gave no answer.
#[derive(Debug, thiserror::Error)]
pub enum PollError {
    /// The provider asks to wait (rate limit, `Retry-After`).
    #[error("rate limited by {url}; retry after {retry_after:?}")]
    RateLimited {
        /// The request.
        url: String,
        /// How long to wait.
        retry_after: Duration,
    },
    /// The provider refused the request (401, 403, 404, 422, …): a configuration problem.
    #[error("{url} answered {status}: {message}")]
    Refused {
        /// The request.
        url: String,
        /// The status.
        status: u16,
        /// The provider's message.
        message: String,
    },
    /// The provider failed or did not answer in time: try again later.
    #[error("{url}: {reason}")]
    Unavailable {
        /// The request.
        url: String,
        /// What happened.
        reason: String,
    },
    /// The answer is not what the API documents.
    #[error("{url} answered something that is not the documented JSON: {reason}")]
    Malformed {
        /// The request.
        url: String,
        /// The parse error.
        reason: String,
    },
}

/// A client with an ETag cache.
pub struct Client {
    http: reqwest::Client,
    /// URL → (ETag, body) of the last 200 answer.
    cache: Mutex<HashMap<String, (String, Vec<u8>)>>,
}

/// The wait a rate-limited answer asks for: `Retry-After` (seconds), else
/// `X-RateLimit-Reset`/`RateLimit-Reset` (epoch seconds) when the remaining quota is 0.
pub(crate) fn retry_after(headers: &header::HeaderMap, now: Timestamp) -> Option<Duration> {
    let get = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    if let Some(secs) = get("retry-after").and_then(|v| v.parse::<u64>().ok()) {
        return Some(Duration::from_secs(secs));
    }
    let remaining = get("x-ratelimit-remaining").or_else(|| get("ratelimit-remaining"));
    if remaining == Some("0") {
        let reset = get("x-ratelimit-reset")
            .or_else(|| get("ratelimit-reset"))
            .and_then(|v| v.parse::<i64>().ok());
        let wait = reset.map_or(60, |r| r.saturating_sub(now.as_second()).max(1));
        return Some(Duration::from_secs(u64::try_from(wait).unwrap_or(60)));
    }
    None
}

/// The `rel="next"` URL of a `Link` header.
fn next_link(headers: &header::HeaderMap) -> Option<String> {
    let link = headers.get(header::LINK)?.to_str().ok()?;
    link.split(',').find_map(|part| {
        let (url, rel) = part.split_once(';')?;
        rel.contains("rel=\"next\"").then(|| {
            url.trim()
                .trim_start_matches('<')
                .trim_end_matches('>')
                .to_owned()
        })
    })
}

/// A request that got no answer.
pub(crate) fn unanswered(shown: &str, e: &reqwest::Error) -> PollError {
    PollError::Unavailable {
        url: shown.to_owned(),
        reason: if e.is_timeout() {
            "timed out".into()
        } else {
            "no answer".into()
        },
    }
}

/// What a provider's answer tells when it is not a success: a rate limit, its failure,
/// its refusal (with its `message`); `None` for a success.
pub(crate) fn failure(
    shown: &str,
    status: StatusCode,
    headers: &header::HeaderMap,
    body: &[u8],
) -> Option<PollError> {
    if let Some(wait) =
        retry_after(headers, Timestamp::now()).filter(|_| matches!(status.as_u16(), 403 | 429))
    {
        return Some(PollError::RateLimited {
            url: shown.to_owned(),
            retry_after: wait,
        });
    }
    if status.is_server_error() {
        return Some(PollError::Unavailable {
            url: shown.to_owned(),
            reason: status.to_string(),
        });
    }
    if status.is_success() {
        return None;
    }
    let message = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| match v.get("message") {
            Some(serde_json::Value::String(m)) => Some(m.clone()),
            Some(other) => Some(other.to_string()),
            None => None,
        })
        .unwrap_or_default();
    Some(PollError::Refused {
        url: shown.to_owned(),
        status: status.as_u16(),
        message,
    })
}

impl Default for Client {
    fn default() -> Self {
        Self::new()
    }
}

impl Client {
    /// A client whose requests time out after 15 s.
    #[must_use]
    pub fn new() -> Self {
        Self::with_timeout(REQUEST_TIMEOUT)
    }

    /// A client whose requests time out after `timeout`.
    #[must_use]
    pub fn with_timeout(timeout: Duration) -> Self {
        let http = reqwest::Client::builder()
            .user_agent(concat!("vigie/", env!("CARGO_PKG_VERSION")))
            .timeout(timeout)
            .build()
            .expect("a reqwest client builds");
        Self {
            http,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// GET with `If-None-Match`; returns the body (the cached one on 304) and the headers.
    async fn get(
        &self,
        url: &str,
        auth: Option<(&str, String)>,
    ) -> Result<(Vec<u8>, header::HeaderMap), PollError> {
        let shown = redact(url);
        let mut request = self
            .http
            .get(url)
            .header(header::ACCEPT, "application/json");
        if let Some((name, value)) = auth {
            request = request.header(name, value);
        }
        let cached = self.cache.lock().expect("cache lock").get(url).cloned();
        if let Some((etag, _)) = &cached {
            request = request.header(header::IF_NONE_MATCH, etag.as_str());
        }
        let response = request.send().await.map_err(|e| unanswered(&shown, &e))?;
        let status = response.status();
        let headers = response.headers().clone();
        if status == StatusCode::NOT_MODIFIED
            && let Some((_, body)) = cached
        {
            return Ok((body, headers));
        }
        let body = response.bytes().await.map_err(|e| PollError::Unavailable {
            url: shown.clone(),
            reason: e.to_string(),
        })?;
        if let Some(e) = failure(&shown, status, &headers, &body) {
            return Err(e);
        }
        if let Some(etag) = headers.get(header::ETAG).and_then(|v| v.to_str().ok()) {
            self.cache
                .lock()
                .expect("cache lock")
                .insert(url.to_owned(), (etag.to_owned(), body.to_vec()));
        }
        Ok((body.to_vec(), headers))
    }

    /// Every check run of `sha` in `owner/repo`, all pages.
    pub async fn github_check_runs(
        &self,
        api: &str,
        repo: &str,
        sha: &str,
        token: Option<&str>,
    ) -> Result<Vec<github::CheckRun>, PollError> {
        let mut url = format!(
            "{}/repos/{repo}/commits/{sha}/check-runs?per_page=100",
            api.trim_end_matches('/')
        );
        let mut runs = Vec::new();
        for _ in 0..MAX_PAGES {
            let (body, headers) = self
                .get(
                    &url,
                    token.map(|t| ("authorization", format!("Bearer {t}"))),
                )
                .await?;
            let page: github::CheckRunsPage =
                serde_json::from_slice(&body).map_err(|e| PollError::Malformed {
                    url: redact(&url),
                    reason: e.to_string(),
                })?;
            runs.extend(page.check_runs);
            match next_link(&headers) {
                Some(next) => url = next,
                None => break,
            }
        }
        Ok(runs)
    }

    /// The combined status of `sha` in `owner/repo`.
    pub async fn github_status(
        &self,
        api: &str,
        repo: &str,
        sha: &str,
        token: Option<&str>,
    ) -> Result<github::CombinedStatus, PollError> {
        let url = format!(
            "{}/repos/{repo}/commits/{sha}/status?per_page=100",
            api.trim_end_matches('/')
        );
        let (body, _) = self
            .get(
                &url,
                token.map(|t| ("authorization", format!("Bearer {t}"))),
            )
            .await?;
        serde_json::from_slice(&body).map_err(|e| PollError::Malformed {
            url: redact(&url),
            reason: e.to_string(),
        })
    }

    /// Whether the repository (GitHub) or project (GitLab) can be read with the token:
    /// `GET /repos/{owner}/{repo}` or `GET /projects/:id`.
    ///
    /// # Errors
    /// The provider's refusal (401, 403, 404…) or why it did not answer.
    pub async fn check_access(
        &self,
        auth: &super::auth::Auth,
        ci: &crate::api::code_location::CiSpec,
        resolve: &super::auth::Resolve<'_>,
    ) -> Option<Result<(), PollError>> {
        if let Some(g) = &ci.github {
            let url = format!("{}/repos/{}", g.api_url.trim_end_matches('/'), g.repository);
            let token = auth.github(g, resolve).await.ok().flatten();
            let auth = token.map(|t| ("authorization", format!("Bearer {t}")));
            return Some(self.get(&url, auth).await.map(|_| ()));
        }
        if let Some(g) = &ci.gitlab {
            let url = format!(
                "{}/projects/{}",
                g.api_url.trim_end_matches('/'),
                encode_project(&g.project)
            );
            let token = auth.gitlab(g, resolve).await.ok().flatten();
            let auth = token.map(|t| ("private-token", t));
            return Some(self.get(&url, auth).await.map(|_| ()));
        }
        None
    }

    /// The pipelines of `sha` in a GitLab project (id or `group/project`).
    pub async fn gitlab_pipelines(
        &self,
        api: &str,
        project: &str,
        sha: &str,
        token: Option<&str>,
    ) -> Result<Vec<gitlab::Pipeline>, PollError> {
        let project = encode_project(project);
        let url = format!(
            "{}/projects/{project}/pipelines?sha={sha}&per_page=100",
            api.trim_end_matches('/')
        );
        let (body, _) = self
            .get(&url, token.map(|t| ("private-token", t.to_owned())))
            .await?;
        serde_json::from_slice(&body).map_err(|e| PollError::Malformed {
            url: redact(&url),
            reason: e.to_string(),
        })
    }
}

/// A GitLab project id or path, percent-encoded for a URL path segment.
pub(crate) fn encode_project(project: &str) -> String {
    project
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// A SHA's verdict from the provider a CodeLocation names, by polling its API; `None`
/// when the location's CI is not GitHub or GitLab.
pub async fn verdict(
    client: &Client,
    auth: &super::auth::Auth,
    ci: &crate::api::code_location::CiSpec,
    sha: &str,
    resolve: &super::auth::Resolve<'_>,
) -> Option<Result<crate::lifecycle::CiVerdict, PollError>> {
    let warned = |e: super::auth::AuthError| {
        tracing::warn!(error = %e, "CI credential unavailable; polling without it");
        None
    };
    if let Some(g) = &ci.github {
        let token = auth.github(g, resolve).await.unwrap_or_else(warned);
        let result = async {
            let runs = client
                .github_check_runs(&g.api_url, &g.repository, sha, token.as_deref())
                .await?;
            let status = client
                .github_status(&g.api_url, &g.repository, sha, token.as_deref())
                .await?;
            Ok(github::verdict(sha, &runs, &status, &ci.required_checks))
        };
        return Some(result.await);
    }
    if let Some(g) = &ci.gitlab {
        let token = auth.gitlab(g, resolve).await.unwrap_or_else(warned);
        let result = client
            .gitlab_pipelines(&g.api_url, &g.project, sha, token.as_deref())
            .await;
        return Some(result.map(|p| gitlab::verdict(sha, &p)));
    }
    None
}

#[cfg(test)]
mod tests {
    use std::sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    };

    use axum::{
        Router,
        extract::State,
        http::{HeaderMap, StatusCode},
        response::{IntoResponse, Response},
        routing::get,
    };

    use super::*;

    const SHA: &str = "476f1636fe090d4ba223d8c9a1cbbc83940090a8";

    #[derive(Default)]
    struct Fake {
        hits: AtomicUsize,
        mode: std::sync::Mutex<&'static str>,
    }

    fn run(id: u64, name: &str) -> serde_json::Value {
        serde_json::json!({"id": id, "head_sha": SHA, "name": name, "status": "completed", "conclusion": "success",
            "html_url": format!("https://github.example/runs/{id}"), "details_url": null})
    }

    async fn check_runs(
        State(fake): State<Arc<Fake>>,
        uri: axum::http::Uri,
        headers: HeaderMap,
    ) -> Response {
        fake.hits.fetch_add(1, Ordering::SeqCst);
        let mode = *fake.mode.lock().unwrap();
        match mode {
            "unauthorized" => {
                return (
                    StatusCode::UNAUTHORIZED,
                    r#"{"message": "Bad credentials"}"#,
                )
                    .into_response();
            }
            "missing" => {
                return (StatusCode::NOT_FOUND, r#"{"message": "Not Found"}"#).into_response();
            }
            "unprocessable" => {
                return (
                    StatusCode::UNPROCESSABLE_ENTITY,
                    r#"{"message": "No commit found for SHA"}"#,
                )
                    .into_response();
            }
            "limited" => {
                return (StatusCode::TOO_MANY_REQUESTS, [("retry-after", "7")], "").into_response();
            }
            "exhausted" => {
                return (
                    StatusCode::FORBIDDEN,
                    [("x-ratelimit-remaining", "0"), ("x-ratelimit-reset", "1")],
                    r#"{"message": "API rate limit exceeded"}"#,
                )
                    .into_response();
            }
            "broken" => return (StatusCode::BAD_GATEWAY, "").into_response(),
            "garbage" => return (StatusCode::OK, "<html>not json</html>").into_response(),
            "slow" => tokio::time::sleep(Duration::from_secs(3)).await,
            _ => {}
        }
        if headers.get("if-none-match").and_then(|v| v.to_str().ok()) == Some("\"v1\"") {
            return StatusCode::NOT_MODIFIED.into_response();
        }
        let page: usize = uri
            .query()
            .unwrap_or_default()
            .split('&')
            .find_map(|kv| kv.strip_prefix("page="))
            .and_then(|p| p.parse().ok())
            .unwrap_or(1);
        let host = headers
            .get("host")
            .and_then(|h| h.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let body = serde_json::json!({"total_count": 3, "check_runs": if page == 1 { vec![run(1, "test"), run(2, "lint")] } else { vec![run(3, "docs")] }});
        let mut response = (StatusCode::OK, [("etag", "\"v1\"")], body.to_string()).into_response();
        if page == 1 {
            let next = format!(
                "<http://{host}/repos/o/r/commits/{SHA}/check-runs?per_page=100&page=2>; rel=\"next\", <http://{host}/x?page=2>; rel=\"last\""
            );
            response.headers_mut().insert("link", next.parse().unwrap());
            response.headers_mut().remove("etag");
        }
        response
    }

    async fn serve(fake: Arc<Fake>) -> String {
        let app = Router::new()
            .route("/repos/o/r/commits/{sha}/check-runs", get(check_runs))
            .with_state(fake);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        format!("http://{addr}")
    }

    #[tokio::test]
    async fn pages_are_followed_and_unchanged_answers_are_cached() {
        let fake = Arc::new(Fake::default());
        let api = serve(fake.clone()).await;
        let client = Client::new();
        let runs = client
            .github_check_runs(&api, "o/r", SHA, Some("t0ken"))
            .await
            .unwrap();
        assert_eq!(runs.iter().map(|r| r.id).collect::<Vec<_>>(), vec![1, 2, 3]);
        assert_eq!(fake.hits.load(Ordering::SeqCst), 2);
        // Page 2 carried an ETag: asked again, it answers 304 and the cache is used.
        let again = client
            .get(
                &format!("{api}/repos/o/r/commits/{SHA}/check-runs?per_page=100&page=2"),
                None,
            )
            .await
            .unwrap();
        let page: github::CheckRunsPage = serde_json::from_slice(&again.0).unwrap();
        assert_eq!(page.check_runs[0].id, 3);
    }

    #[tokio::test]
    async fn every_failure_is_told_apart_and_never_panics() {
        let fake = Arc::new(Fake::default());
        let api = serve(fake.clone()).await;
        let client = Client::with_timeout(Duration::from_secs(1));
        for (mode, expected) in [
            ("slow", "timed out"),
            ("unauthorized", "answered 401: Bad credentials"),
            ("missing", "answered 404: Not Found"),
            ("unprocessable", "answered 422: No commit found for SHA"),
            ("limited", "retry after 7s"),
            ("exhausted", "rate limited"),
            ("broken", "502 Bad Gateway"),
            ("garbage", "not the documented JSON"),
        ] {
            *fake.mode.lock().unwrap() = mode;
            let e = client
                .github_check_runs(&api, "o/r", SHA, None)
                .await
                .unwrap_err()
                .to_string();
            assert!(e.contains(expected), "{mode}: {e}");
        }
    }

    #[test]
    fn link_headers_and_rate_limit_headers_are_read() {
        let mut h = header::HeaderMap::new();
        h.insert(header::LINK, r#"<https://api.github.com/x?page=2>; rel="next", <https://api.github.com/x?page=5>; rel="last""#.parse().unwrap());
        assert_eq!(
            next_link(&h).as_deref(),
            Some("https://api.github.com/x?page=2")
        );
        let now: Timestamp = "2026-11-23T10:00:00Z".parse().unwrap();
        let mut h = header::HeaderMap::new();
        h.insert("ratelimit-remaining", "0".parse().unwrap());
        h.insert(
            "ratelimit-reset",
            (now.as_second() + 30).to_string().parse().unwrap(),
        );
        assert_eq!(retry_after(&h, now), Some(Duration::from_secs(30)));
        let mut h = header::HeaderMap::new();
        h.insert("x-ratelimit-remaining", "12".parse().unwrap());
        assert_eq!(retry_after(&h, now), None);
    }
}
