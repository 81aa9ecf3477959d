//! The real [`Forge`] port: what [`super::rules::desired`] says each Release's SHAs
//! should show is queued, and a background task per (forge, environment, SHA) sends it
//! with retries. Nothing here is awaited by a reconcile: [`Reporter::report`] compares
//! with what it asked last and queues, in memory. A newer state for the same target
//! replaces one not sent yet; a failing forge holds back only its own targets (and waits
//! as long as its `Retry-After` or rate-limit headers ask, for all of them).

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use prometheus_client::metrics::{counter::Counter, family::Family};

use super::{
    client::{Again, Client, Delivered, Report, ReportError},
    rules::{self, State},
};
use crate::{
    api::{
        ReleaseStatus, SecretSource, Sha,
        code_location::{GitHubCi, GitLabCi},
    },
    ci::{auth::Auth, poll::PollError},
    metrics::ForgeLabel,
    reconcile::{Forge, Subject},
    secrets::SecretError,
};

/// Reads a secret the CI settings name, in a namespace (ignored outside Kubernetes).
pub type Resolve = Arc<dyn Fn(&str, &SecretSource) -> Result<Vec<u8>, SecretError> + Send + Sync>;

/// How reports are retried.
#[derive(Clone, Copy, Debug)]
pub struct Retry {
    /// Attempts per report.
    pub attempts: u32,
    /// Wait before the second attempt; doubled each time after.
    pub first_delay: Duration,
    /// Longest wait of the backoff.
    pub max_delay: Duration,
    /// Longest time one attempt (its few requests) may take.
    pub timeout: Duration,
    /// A `Retry-After` longer than this is not waited for in the lane: the report is
    /// given up and queued again by a reconcile once that time has passed.
    pub max_wait: Duration,
    /// After a report was given up, how long before a reconcile queues it again.
    pub again_after: Duration,
}

impl Default for Retry {
    fn default() -> Self {
        Self {
            attempts: 6,
            first_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(60),
            timeout: Duration::from_secs(45),
            max_wait: Duration::from_secs(600),
            again_after: Duration::from_secs(300),
        }
    }
}

/// Where a report goes.
#[derive(Clone, Debug)]
enum Provider {
    GitHub(Box<GitHubCi>),
    GitLab(Box<GitLabCi>),
}

impl Provider {
    fn name(&self) -> &'static str {
        match self {
            Self::GitHub(_) => "github",
            Self::GitLab(_) => "gitlab",
        }
    }

    fn api(&self) -> &str {
        match self {
            Self::GitHub(g) => &g.api_url,
            Self::GitLab(g) => &g.api_url,
        }
    }
}

/// One (forge, project, environment, SHA, Release): what a report is about.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Key {
    api: String,
    project: String,
    release: String,
    environment: String,
    sha: Sha,
}

/// A report waiting to be sent.
#[derive(Clone, Debug)]
struct Job {
    key: Key,
    provider: Provider,
    namespace: String,
    report: Report,
}

/// What was asked last for a target.
#[derive(Clone, Copy, Debug)]
struct Asked {
    state: State,
    /// Given up: queued again by a reconcile after this instant.
    again_at: Option<Instant>,
}

#[derive(Default)]
struct Book {
    asked: HashMap<Key, Asked>,
    waiting: HashMap<Key, Job>,
    running: HashSet<Key>,
    /// Deployment ids found or created on GitHub.
    ids: HashMap<Key, u64>,
    /// Forges (API URLs) that asked to wait, until when.
    blocked: HashMap<String, Instant>,
}

/// Bounds of the book: a process watching many Releases for months forgets old SHAs.
const MAX_ENTRIES: usize = 20_000;

struct Inner {
    client: Client,
    auth: Arc<Auth>,
    resolve: Resolve,
    public_url: Option<String>,
    retry: Retry,
    counts: Family<ForgeLabel, Counter>,
    book: Mutex<Book>,
    /// At most this many reports sent at once.
    limit: tokio::sync::Semaphore,
}

/// Reports deployments back to GitHub and GitLab, in the background. Cheap to clone.
#[derive(Clone)]
pub struct Reporter {
    inner: Arc<Inner>,
}

impl Reporter {
    /// A reporter with the process's credentials (`auth`, shared with polling), the
    /// reader of the Secrets the CI settings name, and Vigie's public URL (the link back
    /// to a Release's history, `{public_url}/releases/{namespace}/{name}`).
    #[must_use]
    pub fn new(
        auth: Arc<Auth>,
        resolve: Resolve,
        public_url: Option<String>,
        counts: Family<ForgeLabel, Counter>,
        retry: Retry,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                client: Client::new(retry.timeout.min(Duration::from_secs(15))),
                auth,
                resolve,
                public_url: public_url.map(|u| u.trim_end_matches('/').to_owned()),
                retry,
                counts,
                book: Mutex::new(Book::default()),
                limit: tokio::sync::Semaphore::new(8),
            }),
        }
    }

    /// Reports queued or being sent.
    #[must_use]
    pub fn pending(&self) -> usize {
        self.inner.book.lock().map_or(0, |b| b.running.len())
    }

    /// Waits until every queued report was sent or given up, for at most `grace`
    /// (on shutdown). Returns how many were left; a restarted Vigie sends them.
    pub async fn flush(&self, grace: Duration) -> usize {
        let until = Instant::now() + grace;
        while self.pending() > 0 && Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let left = self.pending();
        if left > 0 {
            tracing::warn!(
                pending = left,
                "stopping with forge reports not sent; they are sent after the restart"
            );
        }
        left
    }

    /// The link back to a Release's history.
    fn log_url(&self, subject: &Subject<'_>) -> Option<String> {
        let base = self.inner.public_url.as_ref()?;
        Some(format!(
            "{base}/releases/{}/{}",
            subject.key.namespace, subject.key.name
        ))
    }

    /// Queues `job` unless the same state was asked last (and not given up since).
    fn queue(&self, job: Job) {
        let now = Instant::now();
        let Ok(mut book) = self.inner.book.lock() else {
            return;
        };
        if let Some(asked) = book.asked.get(&job.key)
            && asked.state == job.report.state
            && asked.again_at.is_none_or(|t| now < t)
        {
            return;
        }
        if book.asked.len() > MAX_ENTRIES {
            book.asked.clear();
            book.ids.clear();
        }
        book.asked.insert(
            job.key.clone(),
            Asked {
                state: job.report.state,
                again_at: None,
            },
        );
        let key = job.key.clone();
        book.waiting.insert(key.clone(), job);
        if book.running.insert(key.clone()) {
            let this = self.clone();
            tokio::spawn(async move { this.lane(key).await });
        }
    }

    /// Sends the reports of one target, newest first, one at a time.
    async fn lane(&self, key: Key) {
        loop {
            let job = {
                let Ok(mut book) = self.inner.book.lock() else {
                    return;
                };
                if let Some(job) = book.waiting.remove(&key) {
                    job
                } else {
                    book.running.remove(&key);
                    return;
                }
            };
            self.with_retries(job).await;
        }
    }

    /// Whether a newer report for the key waits (this one is then dropped).
    fn superseded(&self, key: &Key) -> bool {
        self.inner
            .book
            .lock()
            .is_ok_and(|b| b.waiting.contains_key(key))
    }

    /// How long the forge asked everyone to wait still.
    fn blocked(&self, api: &str) -> Option<Duration> {
        let book = self.inner.book.lock().ok()?;
        let until = *book.blocked.get(api)?;
        until.checked_duration_since(Instant::now())
    }

    fn block(&self, api: &str, wait: Duration) {
        if let Ok(mut book) = self.inner.book.lock() {
            let until = Instant::now() + wait;
            let slot = book.blocked.entry(api.to_owned()).or_insert(until);
            *slot = (*slot).max(until);
        }
    }

    /// Gives a report up: a reconcile queues it again after `after`.
    fn give_up(&self, key: &Key, after: Duration) {
        if let Ok(mut book) = self.inner.book.lock()
            && let Some(asked) = book.asked.get_mut(key)
        {
            asked.again_at = Some(Instant::now() + after);
        }
    }

    fn count(&self, provider: &'static str, outcome: &'static str) {
        self.inner
            .counts
            .get_or_create(&ForgeLabel { provider, outcome })
            .inc();
    }

    async fn with_retries(&self, job: Job) {
        let retry = self.inner.retry;
        let provider = job.provider.name();
        let api = job.provider.api().to_owned();
        let mut delay = retry.first_delay;
        for attempt in 1..=retry.attempts {
            if let Some(wait) = self.blocked(&api) {
                tokio::time::sleep(wait).await;
            }
            if self.superseded(&job.key) {
                return;
            }
            let result = {
                let Ok(_slot) = self.inner.limit.acquire().await else {
                    return;
                };
                tokio::time::timeout(retry.timeout, self.once(&job))
                    .await
                    .unwrap_or_else(|_| {
                        Err(ReportError::Api(PollError::Unavailable {
                            url: api.clone(),
                            reason: format!("no answer within {:?}", retry.timeout),
                        }))
                    })
            };
            let report = &job.report;
            let error = match result {
                Ok(done) => {
                    let outcome = match done {
                        Delivered::Written => "delivered",
                        Delivered::Unchanged => "unchanged",
                    };
                    self.count(provider, outcome);
                    tracing::info!(
                        provider,
                        release = %report.release,
                        environment = %report.environment,
                        sha = %report.sha.short(),
                        state = report.state.as_str(),
                        outcome,
                        attempt,
                        "reported to the forge"
                    );
                    return;
                }
                Err(e) => e,
            };
            let wait = match error.again() {
                Again::Never => None,
                Again::Backoff => Some(delay),
                Again::After(d) => {
                    self.block(&api, d);
                    Some(d)
                }
            };
            let last = attempt == retry.attempts;
            match wait {
                Some(wait) if !last && wait <= retry.max_wait => {
                    self.count(provider, "retried");
                    tracing::debug!(provider, release = %report.release, sha = %report.sha.short(), error = %error, attempt, "forge report failed; retrying in {wait:?}");
                    tokio::time::sleep(wait.min(retry.max_wait)).await;
                    delay = (delay * 2).min(retry.max_delay);
                }
                _ => {
                    self.count(provider, "failed");
                    tracing::warn!(
                        provider,
                        release = %report.release,
                        environment = %report.environment,
                        sha = %report.sha.short(),
                        state = report.state.as_str(),
                        error = %error,
                        attempts = attempt,
                        "failed to report to the forge"
                    );
                    let after = wait.map_or(retry.again_after, |w| w.max(retry.again_after));
                    self.give_up(&job.key, after);
                    return;
                }
            }
        }
    }

    /// One attempt: the token, then the provider's requests.
    async fn once(&self, job: &Job) -> Result<Delivered, ReportError> {
        let inner = &self.inner;
        let resolve = |s: &SecretSource| (inner.resolve)(&job.namespace, s);
        match &job.provider {
            Provider::GitHub(g) => {
                let token = inner
                    .auth
                    .github(g, &resolve)
                    .await
                    .map_err(ReportError::Credential)?
                    .ok_or(ReportError::NoToken("ci.github.token"))?;
                let settings =
                    g.report
                        .clone()
                        .unwrap_or(crate::api::code_location::GitHubReport {
                            deployments: true,
                            commit_status: false,
                        });
                let known = inner
                    .book
                    .lock()
                    .ok()
                    .and_then(|b| b.ids.get(&job.key).copied());
                let result = inner
                    .client
                    .github(
                        &g.api_url,
                        &g.repository,
                        &token,
                        &job.report,
                        (settings.deployments, settings.commit_status),
                        known,
                    )
                    .await;
                let (id, done) = match result {
                    // The deployment this process knew is gone (deleted on GitHub): it
                    // is looked up again, and created again if need be, at once.
                    Err(ReportError::Api(PollError::Refused {
                        status: 404, url, ..
                    })) if known.is_some() => {
                        if let Ok(mut book) = inner.book.lock() {
                            book.ids.remove(&job.key);
                        }
                        return Err(ReportError::Api(PollError::Unavailable {
                            url,
                            reason: "the deployment is gone; looking it up again".into(),
                        }));
                    }
                    other => other?,
                };
                if let (Some(id), Ok(mut book)) = (id, inner.book.lock()) {
                    book.ids.insert(job.key.clone(), id);
                }
                Ok(done)
            }
            Provider::GitLab(g) => {
                let token = inner
                    .auth
                    .gitlab(g, &resolve)
                    .await
                    .map_err(ReportError::Credential)?
                    .ok_or(ReportError::NoToken("ci.gitlab.token"))?;
                inner
                    .client
                    .gitlab(&g.api_url, &g.project, &token, &job.report)
                    .await
            }
        }
    }
}

impl Forge for Reporter {
    fn report(&self, subject: &Subject<'_>, status: &ReleaseStatus) {
        let ci = subject.ci;
        let provider = if let Some(g) = ci.github.as_ref().filter(|g| {
            g.report
                .as_ref()
                .is_some_and(|r| r.deployments || r.commit_status)
        }) {
            (g.api_url.as_str(), g.repository.as_str(), None, Some(g))
        } else if let Some(g) = ci
            .gitlab
            .as_ref()
            .filter(|g| g.report.as_ref().is_some_and(|r| r.deployments))
        {
            (g.api_url.as_str(), g.project.as_str(), Some(g), None)
        } else {
            return;
        };
        let (api, project, gitlab, github) = provider;
        let environment = &subject.spec.environment;
        let git_ref = subject
            .spec
            .revision
            .clone()
            .unwrap_or_else(|| "main".to_owned());
        for wanted in rules::desired(status, environment) {
            let key = Key {
                api: api.to_owned(),
                project: project.to_owned(),
                release: subject.key.to_string(),
                environment: environment.clone(),
                sha: wanted.sha.clone(),
            };
            let provider = match (github, gitlab) {
                (Some(g), _) => Provider::GitHub(Box::new(g.clone())),
                (_, Some(g)) => Provider::GitLab(Box::new(g.clone())),
                _ => return,
            };
            self.queue(Job {
                key,
                provider,
                namespace: subject.key.namespace.clone(),
                report: Report {
                    release: subject.key.to_string(),
                    environment: environment.clone(),
                    sha: wanted.sha,
                    git_ref: git_ref.clone(),
                    state: wanted.state,
                    description: wanted.description,
                    environment_url: subject.environment.url.clone(),
                    log_url: self.log_url(subject),
                },
            });
        }
    }
}
