//! Credentials for GitHub's and GitLab's APIs, one place for every caller (polling,
//! reporting back to the forge, cloning): the token a CodeLocation's settings name,
//! or an installation token of a GitHub App, minted with a JSON web token signed by
//! the App's key ([`super::github_app`]), kept per installation and refreshed before
//! it expires, one request at a time per installation.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use jiff::Timestamp;
use reqwest::{StatusCode, header};

use super::github_app::{AppKey, InstallationToken, KeyError};
use crate::{
    api::{
        SecretSource,
        code_location::{GitHubApp, GitHubCi, GitLabCi},
    },
    git::redact,
    secrets::SecretError,
};

/// Reads a secret the CI settings name.
pub type Resolve<'a> = dyn Fn(&SecretSource) -> Result<Vec<u8>, SecretError> + Sync + 'a;

/// How long before it expires an installation token is replaced (GitHub's last an hour).
pub const REFRESH_AHEAD: Duration = Duration::from_secs(300);
/// How long GitHub's refusal to mint a token is remembered before asking again.
const FAILURE_HOLD: Duration = Duration::from_secs(30);
/// A gap between GitHub's clock (its `Date`) and ours that explains a refused token.
const SKEW_TOLERATED: i64 = 30;
/// How long one request for a token may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

/// Why no credential could be had.
#[derive(Clone, Debug, thiserror::Error)]
pub enum AuthError {
    /// The secret holding the token or key cannot be read.
    #[error("{what}: {source}")]
    Secret {
        /// Which credential (`ci.github.token`, `ci.github.app.privateKey`).
        what: &'static str,
        /// Why.
        #[source]
        source: SecretError,
    },
    /// The secret is not UTF-8 text.
    #[error("{what}: not UTF-8 text")]
    NotText {
        /// Which credential.
        what: &'static str,
    },
    /// The App's private key cannot sign.
    #[error("{what}: {source}")]
    Key {
        /// Which key (`ci.github.app.privateKey`).
        what: &'static str,
        /// Why.
        #[source]
        source: KeyError,
    },
    /// GitHub did not answer, or answered 5xx: it may work on the next attempt.
    #[error("failed to mint an installation token at {url}: {reason}")]
    Unavailable {
        /// The request.
        url: String,
        /// What happened.
        reason: String,
    },
    /// GitHub refused the App's JSON web token (401): the key is not the App's, or
    /// the App ID or client ID is wrong.
    #[error(
        "{url} refused the App's JSON web token (401 {message:?}): is privateKey the key of \
         App {issuer}, and {issuer} its ID or client ID?"
    )]
    Rejected {
        /// The request.
        url: String,
        /// The App ID or client ID sent as `iss`.
        issuer: String,
        /// GitHub's message.
        message: String,
    },
    /// GitHub refused the token and its clock is far from ours.
    #[error(
        "{url} refused the App's JSON web token and its clock differs from ours by {skew_secs}s: \
         set this host's time (NTP)"
    )]
    ClockSkew {
        /// The request.
        url: String,
        /// GitHub's time minus ours.
        skew_secs: i64,
    },
    /// No such installation of the App (404).
    #[error(
        "{url}: installation {installation_id} of App {issuer} not found (404): is the App \
         installed on the repository's owner, and installationId that installation?"
    )]
    InstallationNotFound {
        /// The request.
        url: String,
        /// The App.
        issuer: String,
        /// The installation.
        installation_id: u64,
    },
    /// Another refusal (403: the App suspended, 422…).
    #[error("failed to mint an installation token: {url} answered {status}: {message}")]
    Refused {
        /// The request.
        url: String,
        /// The status.
        status: u16,
        /// GitHub's message.
        message: String,
    },
    /// The answer is not the documented `{"token": …, "expires_at": …}`.
    #[error("{url} answered something that is not an installation token: {reason}")]
    Malformed {
        /// The request.
        url: String,
        /// The parse error.
        reason: String,
    },
}

/// Which installation token: the API, the App (its `iss`), the installation.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Installation {
    api: String,
    issuer: String,
    id: u64,
}

/// What is known of an installation's token.
#[derive(Default)]
enum Slot {
    /// Nothing yet.
    #[default]
    Empty,
    /// A token, good until `refresh_at` (then minted again).
    Token { value: String, refresh_at: Instant },
    /// GitHub refused; asked again after `until`.
    Failed { error: AuthError, until: Instant },
}

/// The credentials of the process: long-lived, one per process, shared by every
/// caller of the providers' APIs. Installation tokens are kept here.
pub struct Auth {
    http: reqwest::Client,
    /// One slot per installation, each behind its own lock: callers of the same
    /// installation wait for one mint instead of each asking GitHub.
    installations: Mutex<HashMap<Installation, Arc<tokio::sync::Mutex<Slot>>>>,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.installations.lock().map_or(0, |m| m.len());
        f.debug_struct("Auth")
            .field("installations", &n)
            .finish_non_exhaustive()
    }
}

impl Default for Auth {
    fn default() -> Self {
        let http = reqwest::Client::builder()
            .user_agent(concat!("vigie/", env!("CARGO_PKG_VERSION")))
            .timeout(REQUEST_TIMEOUT)
            .build()
            .expect("a reqwest client builds");
        Self {
            http,
            installations: Mutex::new(HashMap::new()),
        }
    }
}

fn read(
    what: &'static str,
    source: Option<&SecretSource>,
    resolve: &Resolve<'_>,
) -> Result<Option<String>, AuthError> {
    let Some(source) = source else {
        return Ok(None);
    };
    let bytes = resolve(source).map_err(|source| AuthError::Secret { what, source })?;
    let text = String::from_utf8(bytes).map_err(|_| AuthError::NotText { what })?;
    Ok(Some(text.trim().to_owned()))
}

/// When a token valid for `lifetime` is replaced: [`REFRESH_AHEAD`] before it
/// expires, or after three quarters of its life when it is short.
fn refresh_after(lifetime: Duration) -> Duration {
    lifetime.saturating_sub(REFRESH_AHEAD.min(lifetime / 4))
}

/// GitHub's message in an error answer.
fn message(body: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("message").and_then(|m| m.as_str()).map(str::to_owned))
        .unwrap_or_default()
}

impl Auth {
    /// The bearer token for GitHub's API: an installation token of `ci.github.app`,
    /// else `ci.github.token`; `None` to call it anonymously.
    ///
    /// # Errors
    /// A credential is named but cannot be had.
    pub async fn github(
        &self,
        ci: &GitHubCi,
        resolve: &Resolve<'_>,
    ) -> Result<Option<String>, AuthError> {
        if let Some(app) = &ci.app {
            return self
                .github_app(&ci.api_url, app, "ci.github.app.privateKey", resolve)
                .await
                .map(Some);
        }
        read("ci.github.token", ci.token.as_ref(), resolve)
    }

    /// The `PRIVATE-TOKEN` for GitLab's API; `None` to call it anonymously.
    ///
    /// # Errors
    /// A credential is named but cannot be had.
    #[allow(
        clippy::unused_async,
        reason = "credentials may need a request to the provider"
    )]
    pub async fn gitlab(
        &self,
        ci: &GitLabCi,
        resolve: &Resolve<'_>,
    ) -> Result<Option<String>, AuthError> {
        read("ci.gitlab.token", ci.token.as_ref(), resolve)
    }

    /// An installation token of `app` at the API `api_url`: the one kept while it has
    /// more than [`REFRESH_AHEAD`] to live, else a new one. Concurrent callers for the
    /// same installation share one request; a refusal is remembered for 30 s. `what`
    /// names the key's field in errors.
    ///
    /// # Errors
    /// The key cannot be read or cannot sign, or GitHub refuses or does not answer.
    pub async fn github_app(
        &self,
        api_url: &str,
        app: &GitHubApp,
        what: &'static str,
        resolve: &Resolve<'_>,
    ) -> Result<String, AuthError> {
        let at = Installation {
            api: api_url.trim_end_matches('/').to_owned(),
            issuer: app.issuer(),
            id: app.installation_id,
        };
        let slot = {
            let mut all = self
                .installations
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            all.entry(at.clone()).or_default().clone()
        };
        let mut slot = slot.lock().await;
        let now = Instant::now();
        match &*slot {
            Slot::Token { value, refresh_at } if now < *refresh_at => return Ok(value.clone()),
            Slot::Failed { error, until } if now < *until => return Err(error.clone()),
            _ => {}
        }
        let pem = resolve(&app.private_key).map_err(|source| AuthError::Secret { what, source })?;
        let key = AppKey::from_pem(&pem).map_err(|source| AuthError::Key { what, source })?;
        let jwt = key
            .jwt(&at.issuer, Timestamp::now())
            .map_err(|source| AuthError::Key { what, source })?;
        match self.mint(&at, &jwt).await {
            Ok((value, lifetime)) => {
                tracing::debug!(
                    installation = at.id,
                    valid_s = lifetime.as_secs(),
                    "minted a GitHub App installation token"
                );
                *slot = Slot::Token {
                    value: value.clone(),
                    refresh_at: now + refresh_after(lifetime),
                };
                Ok(value)
            }
            Err(error) => {
                *slot = Slot::Failed {
                    error: error.clone(),
                    until: now + FAILURE_HOLD,
                };
                Err(error)
            }
        }
    }

    /// `POST /app/installations/{id}/access_tokens` with the JSON web token; the
    /// token and how long it lives, by GitHub's clock.
    async fn mint(&self, at: &Installation, jwt: &str) -> Result<(String, Duration), AuthError> {
        let url = format!("{}/app/installations/{}/access_tokens", at.api, at.id);
        let shown = redact(&url);
        let unavailable = |reason: String| AuthError::Unavailable {
            url: shown.clone(),
            reason,
        };
        let response = self
            .http
            .post(&url)
            .header(header::ACCEPT, "application/vnd.github+json")
            .header("x-github-api-version", "2022-11-28")
            .bearer_auth(jwt)
            .send()
            .await
            .map_err(|e| {
                unavailable(if e.is_timeout() {
                    "timed out".into()
                } else {
                    "no answer".into()
                })
            })?;
        let status = response.status();
        let local = Timestamp::now();
        let remote = response
            .headers()
            .get(header::DATE)
            .and_then(|d| d.to_str().ok())
            .and_then(|d| jiff::fmt::rfc2822::parse(d).ok())
            .map(|z| z.timestamp());
        let body = response
            .bytes()
            .await
            .map_err(|e| unavailable(e.to_string()))?;
        match status {
            StatusCode::CREATED | StatusCode::OK => {
                let answer: InstallationToken =
                    serde_json::from_slice(&body).map_err(|e| AuthError::Malformed {
                        url: shown.clone(),
                        reason: e.to_string(),
                    })?;
                let now = remote.unwrap_or(local);
                let secs = answer.expires_at.as_second() - now.as_second();
                let lifetime = Duration::from_secs(u64::try_from(secs).unwrap_or(0));
                Ok((answer.token, lifetime))
            }
            StatusCode::UNAUTHORIZED => {
                let skew = remote.map_or(0, |r| r.as_second() - local.as_second());
                if skew.abs() > SKEW_TOLERATED {
                    return Err(AuthError::ClockSkew {
                        url: shown,
                        skew_secs: skew,
                    });
                }
                Err(AuthError::Rejected {
                    url: shown,
                    issuer: at.issuer.clone(),
                    message: message(&body),
                })
            }
            StatusCode::NOT_FOUND => Err(AuthError::InstallationNotFound {
                url: shown,
                issuer: at.issuer.clone(),
                installation_id: at.id,
            }),
            s if s.is_server_error() => Err(unavailable(s.to_string())),
            s => Err(AuthError::Refused {
                url: shown,
                status: s.as_u16(),
                message: message(&body),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use axum::{
        Router,
        extract::{Path, State},
        http::{HeaderMap, StatusCode},
        response::{IntoResponse, Response},
        routing::post,
    };

    use super::*;
    use crate::ci::github_app::tests::{pkcs1_key, verify};

    /// A stand-in of GitHub's `POST /app/installations/{id}/access_tokens`: App 42,
    /// installations 7 and 70, tokens living `ttl` seconds.
    struct Fake {
        public_key: Vec<u8>,
        ttl: i64,
        minted: AtomicUsize,
        /// GitHub's clock, ahead of ours by this many seconds.
        skew: i64,
    }

    async fn access_tokens(
        State(fake): State<Arc<Fake>>,
        Path(id): Path<u64>,
        headers: HeaderMap,
    ) -> Response {
        let now = Timestamp::now().as_second() + fake.skew;
        let date = Timestamp::from_second(now).unwrap();
        let date = jiff::fmt::rfc2822::DateTimePrinter::new()
            .timestamp_to_rfc9110_string(&date)
            .unwrap();
        let refuse = |status: StatusCode, message: &str| {
            (
                status,
                [("date", date.clone())],
                serde_json::json!({"message": message}).to_string(),
            )
                .into_response()
        };
        assert_eq!(
            headers.get("accept").unwrap(),
            "application/vnd.github+json"
        );
        let jwt = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or_default();
        let claims = match verify(jwt, &fake.public_key, now) {
            Ok(c) => c,
            Err(why) => return refuse(StatusCode::UNAUTHORIZED, why),
        };
        if claims["iss"] != "42" {
            return refuse(StatusCode::UNAUTHORIZED, "Integration not found");
        }
        if id != 7 && id != 70 {
            return refuse(StatusCode::NOT_FOUND, "Not Found");
        }
        // Slow enough for concurrent callers to meet here if they were not held back.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let n = fake.minted.fetch_add(1, Ordering::SeqCst) + 1;
        let expires = Timestamp::from_second(now + fake.ttl).unwrap();
        (
            StatusCode::CREATED,
            [("date", date)],
            serde_json::json!({"token": format!("ghs_{n}"), "expires_at": expires,
                "permissions": {"checks": "read", "statuses": "read"}})
            .to_string(),
        )
            .into_response()
    }

    async fn serve(fake: Arc<Fake>) -> String {
        let app = Router::new()
            .route("/app/installations/{id}/access_tokens", post(access_tokens))
            .with_state(fake);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        format!("http://{addr}")
    }

    struct Setup {
        pem: String,
        fake: Arc<Fake>,
        api: String,
    }

    async fn setup(name: &str, ttl: i64, skew: i64) -> Setup {
        let dir = std::env::temp_dir().join(format!("vigie-auth-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let pem = pkcs1_key(&dir);
        std::fs::remove_dir_all(&dir).unwrap();
        let public_key = AppKey::from_pem(pem.as_bytes()).unwrap().public_key();
        let fake = Arc::new(Fake {
            public_key,
            ttl,
            minted: AtomicUsize::new(0),
            skew,
        });
        let api = serve(fake.clone()).await;
        Setup { pem, fake, api }
    }

    fn app(installation_id: u64) -> GitHubApp {
        GitHubApp {
            app_id: Some(42),
            client_id: None,
            installation_id,
            private_key: SecretSource::Env("VIGIE_TEST_APP_KEY".into()),
        }
    }

    fn ci(api: &str, app: GitHubApp) -> GitHubCi {
        GitHubCi {
            repository: "octo/app".into(),
            api_url: api.into(),
            token: None,
            app: Some(app),
            webhook_secret: None,
            report: None,
        }
    }

    #[test]
    fn tokens_are_replaced_five_minutes_ahead_or_at_three_quarters_of_a_short_life() {
        assert_eq!(
            refresh_after(Duration::from_secs(3600)),
            Duration::from_secs(3300)
        );
        assert_eq!(
            refresh_after(Duration::from_secs(8)),
            Duration::from_secs(6)
        );
        assert_eq!(refresh_after(Duration::ZERO), Duration::ZERO);
    }

    #[tokio::test]
    async fn an_installation_token_is_minted_once_for_concurrent_callers_and_refreshed_before_it_expires()
     {
        let s = setup("refresh", 4, 0).await;
        let auth = Auth::default();
        let pem = s.pem.clone();
        let resolve = move |_: &SecretSource| Ok(pem.clone().into_bytes());
        let ci = ci(&s.api, app(7));
        let tokens = futures::future::join_all((0..8).map(|_| auth.github(&ci, &resolve))).await;
        for t in &tokens {
            assert_eq!(t.as_ref().unwrap().as_deref(), Some("ghs_1"));
        }
        assert_eq!(s.fake.minted.load(Ordering::SeqCst), 1, "one request");
        assert_eq!(
            auth.github(&ci, &resolve).await.unwrap().as_deref(),
            Some("ghs_1"),
            "kept while fresh"
        );
        // A token living 4 s is replaced after 3 s, while it still works.
        tokio::time::sleep(Duration::from_millis(3300)).await;
        assert_eq!(
            auth.github(&ci, &resolve).await.unwrap().as_deref(),
            Some("ghs_2")
        );
        assert_eq!(s.fake.minted.load(Ordering::SeqCst), 2);
        // The same installation named by the client ID, at the same API: the same token.
        let same = GitHubApp {
            client_id: Some("42".into()),
            app_id: None,
            ..app(7)
        };
        let api = format!("{}/", s.api);
        assert_eq!(
            auth.github_app(&api, &same, "k", &resolve).await.unwrap(),
            "ghs_2"
        );
        // Another installation has its own.
        assert_eq!(
            auth.github_app(&s.api, &app(70), "k", &resolve)
                .await
                .unwrap(),
            "ghs_3"
        );
    }

    #[tokio::test]
    async fn refusals_name_their_cause_and_are_not_asked_again_at_once() {
        let s = setup("refusals", 3600, 0).await;
        let auth = Auth::default();
        let pem = s.pem.clone();
        let resolve = move |_: &SecretSource| Ok(pem.clone().into_bytes());

        let e = auth
            .github(&ci(&s.api, app(8)), &resolve)
            .await
            .unwrap_err();
        assert!(matches!(e, AuthError::InstallationNotFound { .. }), "{e:?}");
        assert!(
            e.to_string()
                .contains("installation 8 of App 42 not found (404)"),
            "{e}"
        );
        let again = auth
            .github(&ci(&s.api, app(8)), &resolve)
            .await
            .unwrap_err();
        assert!(matches!(again, AuthError::InstallationNotFound { .. }));
        assert_eq!(s.fake.minted.load(Ordering::SeqCst), 0);

        // Another App's key: GitHub cannot verify the signature.
        let dir = std::env::temp_dir().join(format!("vigie-auth-other-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let other = pkcs1_key(&dir);
        std::fs::remove_dir_all(&dir).unwrap();
        let wrong = move |_: &SecretSource| Ok(other.clone().into_bytes());
        let e = auth
            .github(&ci(&s.api, app(7)), &wrong)
            .await
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(
                "refused the App's JSON web token (401 \"A JSON web token could not be decoded\")"
            ) && e.contains("is privateKey the key of App 42"),
            "{e}"
        );

        let unreadable = |_: &SecretSource| {
            Err(SecretError::Unreadable {
                path: "/etc/vigie/app.pem".into(),
                kind: std::io::ErrorKind::NotFound,
            })
        };
        let e = auth
            .github(&ci(&s.api, app(9)), &unreadable)
            .await
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "ci.github.app.privateKey: cannot read secret file /etc/vigie/app.pem: entity not found"
        );
        let token = |_: &SecretSource| Ok(b"ghp_personal".to_vec());
        let e = auth
            .github(&ci(&s.api, app(9)), &token)
            .await
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("ci.github.app.privateKey: not a PEM private key"),
            "{e}"
        );
        assert_eq!(s.fake.minted.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn a_clock_far_from_githubs_is_named() {
        // GitHub's clock ten minutes ahead: our token looks expired to it.
        let s = setup("skew", 3600, 600).await;
        let auth = Auth::default();
        let pem = s.pem.clone();
        let resolve = move |_: &SecretSource| Ok(pem.clone().into_bytes());
        let e = auth
            .github(&ci(&s.api, app(7)), &resolve)
            .await
            .unwrap_err();
        let AuthError::ClockSkew { skew_secs, .. } = &e else {
            panic!("{e:?}")
        };
        assert!((599..=601).contains(skew_secs), "{skew_secs}");
        assert!(e.to_string().contains("set this host's time (NTP)"), "{e}");
    }

    #[tokio::test]
    async fn a_personal_token_is_still_read_and_nothing_means_anonymous() {
        let auth = Auth::default();
        let token = |_: &SecretSource| Ok(b"ghp_personal\n".to_vec());
        let mut ci = ci("http://127.0.0.1:1", app(7));
        ci.app = None;
        assert_eq!(auth.github(&ci, &token).await.unwrap(), None);
        ci.token = Some(SecretSource::Env("GITHUB_TOKEN".into()));
        assert_eq!(
            auth.github(&ci, &token).await.unwrap().as_deref(),
            Some("ghp_personal")
        );
    }
}
