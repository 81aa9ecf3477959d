//! Sending notifications: a bounded queue drained by a background task, one delivery
//! per sink, each retried with backoff (honouring `Retry-After`) and bounded by a
//! timeout. Nothing here is awaited by a reconcile: [`Dispatcher::send`] only queues.
//! Webhook URLs, tokens and passwords are secrets: they are read when sending and never
//! appear in logs or errors, which name the sink instead.

use std::{
    collections::HashMap,
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use futures::FutureExt;

use lettre::{
    AsyncSmtpTransport, AsyncTransport, Tokio1Executor,
    message::header::ContentType,
    transport::smtp::{
        authentication::Credentials as SmtpCredentials,
        client::{Certificate, Tls, TlsParameters},
    },
};
use prometheus_client::metrics::{counter::Counter, family::Family};

use super::{Message, wants};
use crate::{
    api::{
        SecretSource, Sha,
        environment::{EmailSink, NotificationSink},
    },
    gitops::repo::{Credentials, Mirror},
    metrics::NotificationLabel,
};

/// Reads a secret a sink names, in a namespace (ignored outside Kubernetes), when a
/// message is delivered: a rotated Secret is used from the next message on, and one
/// created after its Environment is found. The error names what is missing, never a
/// value.
pub type Resolve = Arc<
    dyn Fn(
            String,
            SecretSource,
        ) -> futures::future::BoxFuture<'static, Result<Vec<u8>, SecretError>>
        + Send
        + Sync,
>;

/// Why a sink's secret could not be read.
#[derive(Debug)]
pub enum SecretError {
    /// Trying again will not help: no such Secret or key, not allowed.
    Permanent(String),
    /// It may work on the next attempt: the API server did not answer.
    Transient(String),
}

/// A [`Resolve`] from a synchronous function; every error is permanent.
pub fn resolve_with(
    f: impl Fn(&str, &SecretSource) -> Result<Vec<u8>, crate::secrets::SecretError>
    + Send
    + Sync
    + 'static,
) -> Resolve {
    Arc::new(move |ns, source| {
        Box::pin(futures::future::ready(
            f(&ns, &source).map_err(|e| SecretError::Permanent(e.to_string())),
        ))
    })
}

/// One message for the sinks of one Environment.
#[derive(Clone, Debug)]
pub struct Job {
    /// Namespace of the Environment (for Secrets).
    pub namespace: String,
    /// The Environment's sinks; those that do not want the event are skipped.
    pub sinks: Vec<NotificationSink>,
    /// The message; author and subject are looked up in `repo` when missing.
    pub message: Message,
    /// The code repository and its credentials.
    pub repo: Option<(String, Credentials)>,
}

/// How deliveries are retried.
#[derive(Clone, Copy, Debug)]
pub struct Retry {
    /// Attempts per sink and message.
    pub attempts: u32,
    /// Wait before the second attempt; doubled each time after.
    pub first_delay: Duration,
    /// Longest wait, `Retry-After` included.
    pub max_delay: Duration,
    /// Longest time one attempt may take.
    pub timeout: Duration,
}

impl Default for Retry {
    fn default() -> Self {
        Self {
            attempts: 5,
            first_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(60),
            timeout: Duration::from_secs(10),
        }
    }
}

/// How long the queue may get before new messages are dropped (and counted).
const QUEUE: usize = 1024;

impl Retry {
    /// The longest one message can keep its sink's lane busy: every attempt timing out
    /// and every wait at its longest.
    #[must_use]
    pub fn longest(&self) -> Duration {
        (self.timeout + self.max_delay) * self.attempts
    }
}

/// Queues notifications and sends them in the background.
#[derive(Clone)]
pub struct Dispatcher {
    tx: tokio::sync::mpsc::Sender<Job>,
    counts: Family<NotificationLabel, Counter>,
    /// Deliveries (one message for one sink) queued or being sent.
    pending: Arc<AtomicUsize>,
    /// Sink lanes alive.
    lanes: Arc<AtomicUsize>,
}

impl Dispatcher {
    /// Starts the sender (on the current Tokio runtime). `cache` holds mirrors of code
    /// repositories, for commit authors and subjects.
    #[must_use]
    pub fn start(
        resolve: Resolve,
        cache: Option<PathBuf>,
        counts: Family<NotificationLabel, Counter>,
        retry: Retry,
    ) -> Self {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Job>(QUEUE);
        let sender = Sender {
            http: reqwest::Client::builder()
                .timeout(retry.timeout)
                .user_agent(concat!("vigie/", env!("CARGO_PKG_VERSION")))
                .build()
                .unwrap_or_default(),
            resolve,
            counts: counts.clone(),
            retry,
            // At most 16 attempts at once, whatever the number of sinks; a sink waiting
            // to retry holds no slot.
            limit: tokio::sync::Semaphore::new(16),
            // Commit details: at most 4 lookups in the mirrors at once.
            lookups: tokio::sync::Semaphore::new(4),
        };
        let sender = Arc::new(sender);
        let pending = Arc::new(AtomicUsize::new(0));
        let alive = Arc::new(AtomicUsize::new(0));
        let lane_counts = counts.clone();
        let (lane_pending, lane_alive) = (pending.clone(), alive.clone());
        // A lane unused for this long is closed (an Environment or a sink deleted leaves
        // none behind). Longer than a message can keep it busy, so a lane started
        // afterwards never overtakes an older message still being retried.
        let idle = (retry.longest() * 2).max(Duration::from_millis(400));
        tokio::spawn(async move {
            // One lane per sink of an Environment: its messages go out in the order of
            // the transitions, while a slow or failing sink holds back only itself.
            let mut lanes: HashMap<String, Lane> = HashMap::new();
            let mut prune = tokio::time::interval(idle / 4);
            prune.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                let job = tokio::select! {
                    job = rx.recv() => match job {
                        Some(job) => job,
                        None => break,
                    },
                    _ = prune.tick() => {
                        lanes.retain(|_, l| l.in_use(idle));
                        lane_alive.store(lanes.len(), Ordering::Relaxed);
                        continue;
                    }
                };
                let sinks: Vec<NotificationSink> = job
                    .sinks
                    .iter()
                    .filter(|s| wants(s, job.message.event))
                    .cloned()
                    .collect();
                let key = crate::api::ObjectKey::new(
                    job.namespace.clone(),
                    job.message.environment.clone(),
                )
                .to_string();
                let namespace = job.namespace.clone();
                let message = {
                    let (sender, cache) = (sender.clone(), cache.clone());
                    async move { Arc::new(sender.enrich(job.message, job.repo, cache).await) }
                        .boxed()
                        .shared()
                };
                for sink in sinks {
                    let name = format!("{key}/{}", sink.name);
                    let delivery = Delivery {
                        sink,
                        namespace: namespace.clone(),
                        message: message.clone(),
                        _pending: Pending(lane_pending.clone()),
                    };
                    let queue = lanes
                        .entry(name.clone())
                        .or_insert_with(|| Lane::start(sender.clone()));
                    queue.used = Instant::now();
                    let sent = match queue.tx.try_send(delivery) {
                        // A lane whose task ended (it panicked) is started again.
                        Err(tokio::sync::mpsc::error::TrySendError::Closed(d)) => {
                            let fresh = Lane::start(sender.clone());
                            let sent = fresh.tx.try_send(d);
                            lanes.insert(name, fresh);
                            sent
                        }
                        other => other,
                    };
                    if let Err(e) = sent {
                        let d = match e {
                            tokio::sync::mpsc::error::TrySendError::Full(d)
                            | tokio::sync::mpsc::error::TrySendError::Closed(d) => d,
                        };
                        lane_counts
                            .get_or_create(&NotificationLabel {
                                sink: kind(&d.sink),
                                outcome: "dropped",
                            })
                            .inc();
                        tracing::warn!(sink = %d.sink.name, "notification queue of the sink full: message dropped");
                    }
                }
                lane_alive.store(lanes.len(), Ordering::Relaxed);
            }
        });
        Self {
            tx,
            counts,
            pending,
            lanes: alive,
        }
    }

    /// Deliveries (one message for one sink) queued or being sent.
    #[must_use]
    pub fn pending(&self) -> usize {
        self.pending.load(Ordering::Relaxed)
    }

    /// Sink lanes alive (one per sink of an Environment that was sent to recently).
    #[must_use]
    pub fn lanes(&self) -> usize {
        self.lanes.load(Ordering::Relaxed)
    }

    /// Waits until every queued message was delivered or given up, for at most
    /// `grace`: called on shutdown, so that a deploy's last messages are not lost.
    /// Returns how many deliveries were still pending (logged).
    pub async fn flush(&self, grace: Duration) -> usize {
        let until = Instant::now() + grace;
        while self.pending() > 0 && Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let left = self.pending();
        if left > 0 {
            tracing::warn!(
                pending = left,
                "stopping with notifications not delivered after {grace:?}"
            );
        }
        left
    }

    /// Queues a message; never waits. A full queue drops it, counted and logged.
    pub fn send(&self, job: Job) {
        let wanted = job
            .sinks
            .iter()
            .filter(|s| wants(s, job.message.event))
            .count();
        if wanted == 0 {
            return;
        }
        self.pending.fetch_add(wanted, Ordering::Relaxed);
        if let Err(e) = self.tx.try_send(job) {
            self.pending.fetch_sub(wanted, Ordering::Relaxed);
            let job = match e {
                tokio::sync::mpsc::error::TrySendError::Full(j)
                | tokio::sync::mpsc::error::TrySendError::Closed(j) => j,
            };
            for sink in &job.sinks {
                self.counts
                    .get_or_create(&NotificationLabel {
                        sink: kind(sink),
                        outcome: "dropped",
                    })
                    .inc();
            }
            tracing::warn!(release = %job.message.release, "notification queue full: message dropped");
        }
    }
}

/// How many messages one sink may have waiting before new ones are dropped (counted).
const LANE: usize = 256;

/// One message for one sink, its commit details looked up once for all its sinks.
struct Delivery {
    sink: NotificationSink,
    namespace: String,
    message: futures::future::Shared<futures::future::BoxFuture<'static, Arc<Message>>>,
    /// Counted in [`Dispatcher::pending`] until delivered, given up or dropped.
    _pending: Pending,
}

/// One pending delivery, counted (by [`Dispatcher::send`]) until this is dropped.
struct Pending(Arc<AtomicUsize>);

impl Drop for Pending {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A sink's lane: delivers its messages one after the other, each with its retries.
struct Lane {
    tx: tokio::sync::mpsc::Sender<Delivery>,
    /// When a message was last queued.
    used: Instant,
}

impl Lane {
    fn start(sender: Arc<Sender>) -> Self {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Delivery>(LANE);
        tokio::spawn(async move {
            while let Some(d) = rx.recv().await {
                let message = d.message.await;
                sender.with_retries(&d.sink, &d.namespace, &message).await;
            }
        });
        Self {
            tx,
            used: Instant::now(),
        }
    }

    /// Whether to keep the lane: alive, and used within `idle` or with messages
    /// waiting. Dropping the last sender lets its task finish what it holds, then end.
    fn in_use(&self, idle: Duration) -> bool {
        !self.tx.is_closed()
            && (self.used.elapsed() < idle || self.tx.capacity() < self.tx.max_capacity())
    }
}

struct Sender {
    http: reqwest::Client,
    resolve: Resolve,
    counts: Family<NotificationLabel, Counter>,
    retry: Retry,
    limit: tokio::sync::Semaphore,
    lookups: tokio::sync::Semaphore,
}

/// Why one attempt failed.
#[derive(Debug, PartialEq, Eq)]
pub enum Failure {
    /// Try again, after at least this long when the service said so.
    Retry(String, Option<Duration>),
    /// Trying again would not help (a refused URL or payload, a missing secret).
    Permanent(String),
}

/// What an HTTP answer means for a delivery.
///
/// # Errors
/// A refusal: 408, 429 and 5xx are worth retrying (after `Retry-After` when given);
/// other 4xx are not.
pub fn classify(status: u16, retry_after: Option<&str>) -> Result<(), Failure> {
    match status {
        200..=299 => Ok(()),
        408 | 429 | 500..=599 => Err(Failure::Retry(
            format!("HTTP {status}"),
            retry_after
                .and_then(|v| v.trim().parse::<f64>().ok())
                .filter(|s| s.is_finite() && *s >= 0.0)
                .and_then(|s| Duration::try_from_secs_f64(s).ok()),
        )),
        _ => Err(Failure::Permanent(format!("HTTP {status}"))),
    }
}

/// The kind of a sink, for metrics and logs.
#[must_use]
pub fn kind(sink: &NotificationSink) -> &'static str {
    if sink.discord.is_some() {
        "discord"
    } else if sink.ms_teams.is_some() {
        "msTeams"
    } else if sink.slack.is_some() {
        "slack"
    } else if sink.ntfy.is_some() {
        "ntfy"
    } else if sink.email.is_some() {
        "email"
    } else if sink.webhook.is_some() {
        "webhook"
    } else {
        "kubernetesEvents"
    }
}

impl Sender {
    /// The message with its commit's author and subject, looked up in the code
    /// repository when missing (at most 30 s; without them when it fails).
    async fn enrich(
        &self,
        mut message: Message,
        repo: Option<(String, Credentials)>,
        cache: Option<PathBuf>,
    ) -> Message {
        if message.subject.is_none()
            && let (Some((url, creds)), Some(cache)) = (repo, cache)
        {
            let sha = message.sha.clone();
            let _slot = self.lookups.acquire().await;
            let lookup =
                tokio::task::spawn_blocking(move || commit_details(&cache, &url, &creds, &sha));
            if let Ok(Ok(Some((author, subject)))) =
                tokio::time::timeout(Duration::from_secs(30), lookup).await
            {
                message.author = Some(author);
                message.subject = Some(subject);
            }
        }
        message
    }

    async fn with_retries(&self, sink: &NotificationSink, namespace: &str, m: &Message) {
        let kind = kind(sink);
        if kind == "kubernetesEvents" {
            // The operator publishes the Events itself, as this sink's filter says
            // (`operator::ports::published_as_event`); outside Kubernetes there is
            // nowhere to put one.
            return;
        }
        let mut delay = self.retry.first_delay;
        for attempt in 1..=self.retry.attempts {
            let result = {
                let Ok(_slot) = self.limit.acquire().await else {
                    return;
                };
                tokio::time::timeout(self.retry.timeout, self.once(sink, namespace, m))
                    .await
                    .unwrap_or_else(|_| {
                        Err(Failure::Retry(
                            format!("no answer within {:?}", self.retry.timeout),
                            None,
                        ))
                    })
            };
            let (why, wait) = match result {
                Ok(()) => {
                    self.count(kind, "delivered");
                    tracing::info!(sink = %sink.name, kind, release = %m.release, event = ?m.event, attempt, "notification delivered");
                    return;
                }
                Err(Failure::Permanent(why)) => {
                    self.count(kind, "failed");
                    tracing::warn!(sink = %sink.name, kind, release = %m.release, "notification refused: {why}");
                    return;
                }
                Err(Failure::Retry(why, after)) => (why, after),
            };
            if attempt == self.retry.attempts {
                self.count(kind, "failed");
                tracing::warn!(sink = %sink.name, kind, release = %m.release, attempts = attempt, "notification not delivered: {why}");
                return;
            }
            let wait = wait.unwrap_or(delay).min(self.retry.max_delay);
            tracing::debug!(sink = %sink.name, attempt, "notification failed ({why}); retrying in {wait:?}");
            tokio::time::sleep(wait).await;
            delay = (delay * 2).min(self.retry.max_delay);
        }
    }

    fn count(&self, sink: &'static str, outcome: &'static str) {
        self.counts
            .get_or_create(&NotificationLabel { sink, outcome })
            .inc();
    }

    async fn secret(
        &self,
        namespace: &str,
        source: &SecretSource,
        what: &str,
    ) -> Result<String, Failure> {
        let value = (self.resolve)(namespace.to_owned(), source.clone())
            .await
            .map_err(|e| match e {
                SecretError::Permanent(e) => {
                    Failure::Permanent(format!("its {what} cannot be read: {e}"))
                }
                SecretError::Transient(e) => {
                    Failure::Retry(format!("its {what} cannot be read now: {e}"), None)
                }
            })?;
        String::from_utf8(value)
            .map(|s| s.trim().to_owned())
            .map_err(|_| Failure::Permanent(format!("its {what} is not UTF-8 text")))
    }

    async fn once(&self, sink: &NotificationSink, ns: &str, m: &Message) -> Result<(), Failure> {
        if let Some(s) = &sink.discord {
            let url = self.secret(ns, &s.url, "webhook URL").await?;
            return self.post(&url, &super::discord(m), &[]).await;
        }
        if let Some(s) = &sink.ms_teams {
            let url = self.secret(ns, &s.url, "webhook URL").await?;
            return self.post(&url, &super::teams(m), &[]).await;
        }
        if let Some(s) = &sink.slack {
            let url = self.secret(ns, &s.url, "webhook URL").await?;
            return self.post(&url, &super::slack(m), &[]).await;
        }
        if let Some(s) = &sink.ntfy {
            let mut headers = Vec::new();
            if let Some(t) = &s.token {
                headers.push((
                    "Authorization",
                    format!("Bearer {}", self.secret(ns, t, "token").await?),
                ));
            }
            let url = s.server.trim_end_matches('/').to_owned();
            return self.post(&url, &super::ntfy(m, &s.topic), &headers).await;
        }
        if let Some(s) = &sink.webhook {
            let url = self.secret(ns, &s.url, "URL").await?;
            let body = super::webhook(m);
            let bytes = serde_json::to_vec(&body).unwrap_or_default();
            let mut headers = vec![
                (
                    "X-Vigie-Event",
                    crate::metrics::event_name(m.event).to_owned(),
                ),
                ("X-Vigie-Delivery", delivery_id(m)),
            ];
            if let Some(key) = &s.signing_secret {
                let key = self.secret(ns, key, "signing secret").await?;
                headers.push((
                    "X-Vigie-Signature",
                    crate::ci::webhook::sign(key.as_bytes(), &bytes),
                ));
            }
            return self.post_bytes(&url, bytes, &headers).await;
        }
        if let Some(s) = &sink.email {
            let password = s
                .password
                .as_ref()
                .map(|p| self.secret(ns, p, "SMTP password"));
            let password = match password {
                Some(p) => Some(p.await?),
                None => None,
            };
            return send_email(s, password, m, self.retry.timeout).await;
        }
        Ok(())
    }

    async fn post(
        &self,
        url: &str,
        body: &serde_json::Value,
        headers: &[(&str, String)],
    ) -> Result<(), Failure> {
        self.post_bytes(url, serde_json::to_vec(body).unwrap_or_default(), headers)
            .await
    }

    async fn post_bytes(
        &self,
        url: &str,
        body: Vec<u8>,
        headers: &[(&str, String)],
    ) -> Result<(), Failure> {
        let mut request = self
            .http
            .post(url)
            .header("Content-Type", "application/json")
            .body(body);
        for (k, v) in headers {
            request = request.header(*k, v);
        }
        // The URL is a secret (Discord, Teams and Slack put the key in it): errors
        // describe the failure without it.
        let response = request.send().await.map_err(|e| {
            let why = if e.is_timeout() {
                "no answer in time"
            } else if e.is_connect() {
                "cannot connect"
            } else {
                "request failed"
            };
            Failure::Retry(why.to_owned(), None)
        })?;
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        classify(response.status().as_u16(), retry_after.as_deref())
    }
}

/// A stable id for one message (same release, event, SHA and time: same id).
fn delivery_id(m: &Message) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(
        format!("{}|{:?}|{}|{}", m.release, m.event, m.sha.as_str(), m.at).as_bytes(),
    );
    hex::encode(&digest[..16])
}

async fn send_email(
    s: &EmailSink,
    password: Option<String>,
    m: &Message,
    timeout: Duration,
) -> Result<(), Failure> {
    let permanent =
        |what: &str, e: &dyn std::fmt::Display| Failure::Permanent(format!("{what}: {e}"));
    let mut builder = lettre::Message::builder()
        .from(s.from.parse().map_err(|e| permanent("from", &e))?)
        .subject(super::email_subject(m))
        .header(ContentType::TEXT_PLAIN);
    for to in &s.to {
        builder = builder.to(to.parse().map_err(|e| permanent("to", &e))?);
    }
    let email = builder
        .body(m.text())
        .map_err(|e| permanent("message", &e))?;
    let mut transport =
        AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&s.host).port(s.port);
    if s.starttls {
        let mut tls = TlsParameters::builder(s.host.clone());
        if let Some(file) = &s.ca_file {
            let pem = std::fs::read(file)
                .map_err(|e| Failure::Permanent(format!("caFile {file}: {}", e.kind())))?;
            let cert = Certificate::from_pem(&pem).map_err(|e| permanent("caFile", &e))?;
            tls = tls.add_root_certificate(cert);
        }
        let tls = tls.build_rustls().map_err(|e| permanent("TLS", &e))?;
        transport = transport.tls(Tls::Required(tls));
    }
    if let (Some(user), Some(password)) = (&s.username, password) {
        transport = transport.credentials(SmtpCredentials::new(user.clone(), password));
    }
    let transport = transport.timeout(Some(timeout)).build();
    transport.send(email).await.map(|_| ()).map_err(|e| {
        // Never the password: lettre's errors carry the server's answer, not ours.
        // An untrusted certificate will not become trusted by retrying.
        if e.is_permanent() || e.to_string().contains("invalid peer certificate") {
            Failure::Permanent(format!("SMTP: {e}"))
        } else {
            Failure::Retry(format!("SMTP: {e}"), None)
        }
    })
}

/// The author and subject of `sha` in the code repository at `url`, fetched into a
/// mirror when it is not there yet. Blocking (git2).
fn commit_details(
    cache: &std::path::Path,
    url: &str,
    creds: &Credentials,
    sha: &Sha,
) -> Option<(String, String)> {
    let mirror = Mirror::open(cache, url).ok()?;
    if let Some(found) = mirror.author_and_subject(sha) {
        return Some(found);
    }
    mirror
        .fetch(&["refs/heads/*".into(), "refs/tags/*".into()], creds)
        .ok()?;
    mirror.author_and_subject(sha)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_classified() {
        assert_eq!(classify(204, None), Ok(()));
        assert_eq!(classify(202, None), Ok(()));
        assert_eq!(
            classify(429, Some("2.5")),
            Err(Failure::Retry(
                "HTTP 429".into(),
                Some(Duration::from_millis(2500))
            ))
        );
        // A Retry-After too large for a duration is ignored, not a panic.
        assert_eq!(
            classify(503, Some("1e20")),
            Err(Failure::Retry("HTTP 503".into(), None))
        );
        assert_eq!(
            classify(503, Some("soon")),
            Err(Failure::Retry("HTTP 503".into(), None))
        );
        assert_eq!(
            classify(408, None),
            Err(Failure::Retry("HTTP 408".into(), None))
        );
        assert_eq!(
            classify(404, None),
            Err(Failure::Permanent("HTTP 404".into()))
        );
        assert_eq!(
            classify(400, Some("1")),
            Err(Failure::Permanent("HTTP 400".into()))
        );
    }
}
