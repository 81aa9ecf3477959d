//! HTTP of `vigie run` and `vigie controller`: `/healthz`, `/readyz`, `/metrics` and
//! the CI webhooks `/hooks/ci`, `/hooks/github`, `/hooks/gitlab`. A delivery is
//! verified before it is parsed, recorded (state file standalone; CodeLocation status
//! in the operator) before it is acknowledged, and wakes the reconciler.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::PathBuf,
    sync::{
        Arc, Mutex, RwLock,
        atomic::{AtomicBool, Ordering},
    },
};

use axum::{
    Json, Router,
    body::Bytes,
    extract::{DefaultBodyLimit, State as AxumState},
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use jiff::Timestamp;
use serde_json::json;
use sha2::{Digest, Sha256};
use tokio::sync::Notify;

use crate::store::{self as state, State};
use crate::{
    api::{Sha, code_location::CiSpec},
    ci::{
        Reported, StoredVerdict, github, gitlab,
        webhook::{self, MAX_BODY, SIGNATURE_HEADER, WebhookError},
    },
    metrics::{Metrics, OutcomeLabel},
    secrets::SecretError,
};

/// Reads a secret a code location names (`location key`, source).
pub type SecretResolver =
    Arc<dyn Fn(&str, &crate::api::SecretSource) -> Result<Vec<u8>, SecretError> + Send + Sync>;

/// Makes verdicts durable somewhere other than the state file (the operator: the
/// CodeLocation status), before a delivery is acknowledged.
pub trait Persist: Send + Sync {
    /// Stores the verdicts of these locations (`location key` → verdicts by SHA).
    fn persist(
        &self,
        verdicts: Vec<(String, BTreeMap<Sha, StoredVerdict>)>,
    ) -> futures::future::BoxFuture<'_, Result<(), crate::error::RecordError>>;
}

/// What the server and the reconciler share.
pub struct Shared {
    /// The authoritative state; the file is rewritten from it under this lock.
    pub state: Mutex<State>,
    /// Where the state is saved (`vigie run`); `None` keeps it in memory (the operator,
    /// which persists verdicts through [`Shared::persist`]).
    pub state_path: Option<PathBuf>,
    /// Reads the secrets code locations name.
    pub resolver: SecretResolver,
    /// Where verdicts go before a delivery is acknowledged, besides the state.
    pub persist: Option<Arc<dyn Persist>>,
    /// The HMAC key of `/hooks/ci`; deliveries are refused without one.
    pub secret: Option<Vec<u8>>,
    /// Wakes the reconciler for a refresh: every Release is reconciled (`vigie run`),
    /// the GitOps loop looks for a push (the operator).
    pub wake: Notify,
    /// The code locations whose verdicts changed since the reconciler last looked
    /// (`vigie run` reconciles their Releases only; see [`Shared::wake_locations`]).
    /// Bounded by the code locations there are; the operator, whose watches bring the
    /// verdicts, never takes them.
    woken: Mutex<BTreeSet<String>>,
    /// Wakes the reconciler for what [`Shared::take_woken`] gives.
    pub nudge: Notify,
    /// Metrics.
    pub metrics: Metrics,
    /// Set once manifests are loaded and a first round is done.
    pub ready: AtomicBool,
    /// The CI settings of the current manifests' code locations, by name.
    pub ci: RwLock<BTreeMap<String, CiSpec>>,
    /// The git source of the manifests, when they come from git (push webhooks for it
    /// fetch at once).
    pub git_watch: RwLock<Option<crate::gitops::source::GitSource>>,
    /// Set by a push webhook for the manifests repository.
    pub git_pushed: AtomicBool,
    /// Repositories of code locations with tracking rules (push webhooks for them check
    /// the tracked refs at once).
    pub tracked_repos: RwLock<Vec<String>>,
    /// Set by a push webhook for a tracked repository.
    pub track_pushed: AtomicBool,
    /// The manifests in force (`vigie run`), for `vigie promote` and `vigie rollback`.
    pub manifests: RwLock<Option<Arc<crate::manifest::Manifests>>>,
    /// Ticks at every change of the state or of the manifests in force (the web
    /// view's live pages follow it).
    pub changes: tokio::sync::watch::Sender<u64>,
    /// Every change made, saved or not yet (see [`Shared::update`]).
    staged: Mutex<Staged>,
    /// One writer of the state file at a time.
    writer: tokio::sync::Mutex<()>,
}

/// The state with every change made so far, saved or not: writers that arrive while the
/// file is being written are saved together by the next write (a group commit).
struct Staged {
    state: State,
    /// One per change not saved yet, in the order made.
    unsaved: Vec<Ticket>,
}

/// Whether a change was saved: empty until its write ends, then `Ok` or why not.
type Ticket = Arc<std::sync::OnceLock<Result<(), String>>>;

impl Shared {
    /// A fresh shared state.
    #[must_use]
    pub fn new(state: State, state_path: PathBuf, secret: Option<Vec<u8>>) -> Self {
        Self {
            state_path: Some(state_path),
            resolver: Arc::new(|_, source| crate::secrets::resolve(source)),
            persist: None,
            secret,
            wake: Notify::new(),
            woken: Mutex::new(BTreeSet::new()),
            nudge: Notify::new(),
            metrics: Metrics::default(),
            ready: AtomicBool::new(false),
            ci: RwLock::new(BTreeMap::new()),
            git_watch: RwLock::new(None),
            git_pushed: AtomicBool::new(false),
            tracked_repos: RwLock::new(Vec::new()),
            track_pushed: AtomicBool::new(false),
            manifests: RwLock::new(None),
            changes: tokio::sync::watch::Sender::new(0),
            staged: Mutex::new(Staged {
                state: state.clone(),
                unsaved: Vec::new(),
            }),
            writer: tokio::sync::Mutex::new(()),
            state: Mutex::new(state),
        }
    }
}

impl Shared {
    /// A shared state kept in memory only (the operator).
    #[must_use]
    pub fn new_in_memory(secret: Option<Vec<u8>>) -> Self {
        Self {
            state_path: None,
            ..Self::new(State::default(), PathBuf::new(), secret)
        }
    }

    /// The one way to change the state: `change` edits the state with every change made
    /// before it; the call returns once that is saved (written and fsynced off the async
    /// runtime, when there is a file) and in [`Shared::state`]. Changes made while the
    /// file is being written are saved together by the next write, so many Releases
    /// recording at once cost a few writes, not one each. Readers of
    /// [`Shared::state`] see only what is saved, never half of a change. On a failed
    /// write nothing changes: every change not saved yet is dropped and each of their
    /// callers gets the error. Returns what `change` returns.
    ///
    /// # Errors
    /// When the file cannot be written.
    pub async fn update<T>(
        &self,
        change: impl FnOnce(&mut State) -> T,
    ) -> Result<T, state::StateError> {
        let (out, mine) = {
            let mut staged = self.staged.lock().expect("state lock");
            let mut next = staged.state.clone();
            let out = change(&mut next);
            if next == staged.state {
                // Nothing to save; what was read stands once the changes before it are saved.
                match staged.unsaved.last().cloned() {
                    Some(last) => (out, last),
                    None => return Ok(out),
                }
            } else {
                staged.state = next;
                let ticket = Ticket::default();
                staged.unsaved.push(ticket.clone());
                (out, ticket)
            }
        };
        let _turn = self.writer.lock().await;
        if let Some(saved) = mine.get() {
            // Another caller's write took this change.
            return saved.clone().map(|()| out).map_err(|e| self.lost(&e));
        }
        let (next, tickets) = {
            let mut staged = self.staged.lock().expect("state lock");
            (staged.state.clone(), std::mem::take(&mut staged.unsaved))
        };
        if let Some(path) = self.state_path.clone() {
            self.metrics.state_writes.inc();
            let written = next.clone();
            let result = tokio::task::spawn_blocking(move || state::save(&path, &written))
                .await
                .map_err(|e| state::StateError::Io {
                    action: "write",
                    path: self.state_path.clone().unwrap_or_default(),
                    source: std::io::Error::other(e),
                })
                .and_then(|r| r);
            if let Err(e) = result {
                // Back to what is saved: every change not saved is dropped, those made
                // during this write too, and each of their callers is told.
                let mut staged = self.staged.lock().expect("state lock");
                staged
                    .state
                    .clone_from(&self.state.lock().expect("state lock"));
                let reason = e.to_string();
                for t in tickets.iter().chain(&staged.unsaved) {
                    let _ = t.set(Err(reason.clone()));
                }
                staged.unsaved.clear();
                return Err(e);
            }
        }
        *self.state.lock().expect("state lock") = next;
        for t in &tickets {
            let _ = t.set(Ok(()));
        }
        self.changed();
        Ok(out)
    }

    /// The error of a change dropped by another caller's failed write.
    fn lost(&self, reason: &str) -> state::StateError {
        state::StateError::Io {
            action: "write",
            path: self.state_path.clone().unwrap_or_default(),
            source: std::io::Error::other(reason.to_owned()),
        }
    }

    /// A verdict of these code locations changed: their Releases are reconciled, and
    /// no other (a verdict for one Release does not make fifty observe their engine).
    pub fn wake_locations(&self, locations: &[String]) {
        self.woken
            .lock()
            .expect("woken lock")
            .extend(locations.iter().cloned());
        self.nudge.notify_one();
    }

    /// The code locations woken since the last call.
    pub fn take_woken(&self) -> BTreeSet<String> {
        std::mem::take(&mut *self.woken.lock().expect("woken lock"))
    }

    /// Tells the live pages that what they show changed.
    pub fn changed(&self) {
        self.changes.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// The CodeLocation keys a delivery naming `name` reaches: the exact key, else
    /// every `namespace/name` key with that name.
    fn locations_named(&self, name: &str) -> Vec<String> {
        let Ok(specs) = self.ci.read() else {
            return Vec::new();
        };
        if specs.contains_key(name) {
            return vec![name.to_owned()];
        }
        specs
            .keys()
            .filter(|k| {
                k.parse::<crate::api::key::ObjectKey>()
                    .is_ok_and(|k| k.name == name)
            })
            .cloned()
            .collect()
    }

    /// Hands the verdicts of `locations` to [`Shared::persist`]; on failure the
    /// delivery is forgotten, so the sender's retry is not taken for a replay.
    async fn persist_verdicts(
        &self,
        locations: &[String],
        delivery: &str,
    ) -> Result<(), crate::error::RecordError> {
        let Some(persist) = &self.persist else {
            return Ok(());
        };
        let verdicts = {
            let state = self.state.lock().expect("state lock");
            locations
                .iter()
                .map(|l| (l.clone(), state.verdicts.stored(l)))
                .collect()
        };
        let result = persist.persist(verdicts).await;
        if result.is_err() {
            // In memory only (the operator has no state file): nothing to fail.
            let _ = self
                .update(|state| state.deliveries.retain(|d| d != delivery))
                .await;
        }
        result
    }
}

/// The router.
pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/hooks/ci", post(ci_hook))
        .route("/hooks/github", post(github_hook))
        .route("/hooks/gitlab", post(gitlab_hook))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(shared)
}

async fn readyz(AxumState(shared): AxumState<Arc<Shared>>) -> Response {
    if shared.ready.load(Ordering::Relaxed) {
        "ready\n".into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: manifests not loaded or first round not done\n",
        )
            .into_response()
    }
}

async fn metrics(AxumState(shared): AxumState<Arc<Shared>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        shared.metrics.render(),
    )
        .into_response()
}

fn reply(
    shared: &Shared,
    outcome: &'static str,
    status: StatusCode,
    message: impl Into<String>,
) -> Response {
    shared
        .metrics
        .webhooks
        .get_or_create(&OutcomeLabel { outcome })
        .inc();
    (
        status,
        Json(json!({ "outcome": outcome, "message": message.into() })),
    )
        .into_response()
}

/// A key `/hooks/ci` deliveries may be signed with, and whom it speaks for.
struct CiKey {
    /// The CodeLocation whose own `ci.webhook.secret` this is; `None` for the
    /// process-wide secret, which speaks for every location without a key of its own.
    owner: Option<String>,
    secret: Vec<u8>,
}

/// The keys of `/hooks/ci`: each location's own `ci.webhook.secret`, and the
/// process-wide secret; `unreadable` lists the locations whose own key cannot be read.
fn ci_keys(
    shared: &Shared,
    specs: &BTreeMap<String, CiSpec>,
) -> (Vec<CiKey>, BTreeMap<String, String>) {
    let mut keys: Vec<CiKey> = shared
        .secret
        .iter()
        .map(|s| CiKey {
            owner: None,
            secret: s.clone(),
        })
        .collect();
    let mut unreadable = BTreeMap::new();
    for (name, spec) in specs {
        let Some(source) = spec.webhook.as_ref().and_then(|w| w.secret.as_ref()) else {
            continue;
        };
        match (shared.resolver)(name, source) {
            Ok(secret) => keys.push(CiKey {
                owner: Some(name.clone()),
                secret,
            }),
            Err(e) => {
                tracing::warn!(code_location = %name, error = %e, "webhook secret unavailable");
                unreadable.insert(name.clone(), e.to_string());
            }
        }
    }
    (keys, unreadable)
}

/// Whether `location` has a `ci.webhook.secret` of its own.
fn has_own_key(specs: &BTreeMap<String, CiSpec>, location: &str) -> bool {
    specs
        .get(location)
        .and_then(|s| s.webhook.as_ref())
        .is_some_and(|w| w.secret.is_some())
}

/// Why a delivery is refused: `(outcome, status, message)`.
type Refused = (&'static str, StatusCode, String);

/// The keys that verify a `/hooks/ci` delivery (each tried, in constant time, before
/// the body is read), with the locations whose own key cannot be read; or the refusal.
fn ci_signers(
    shared: &Shared,
    specs: &BTreeMap<String, CiSpec>,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(Vec<CiKey>, BTreeMap<String, String>), Refused> {
    let (keys, unreadable) = ci_keys(shared, specs);
    if keys.is_empty() && unreadable.is_empty() {
        return Err((
            "error",
            StatusCode::SERVICE_UNAVAILABLE,
            "no webhook secret is configured: set --webhook-secret(-file) or the CodeLocation's ci.webhook.secret".into(),
        ));
    }
    let signature = headers.get(SIGNATURE_HEADER).and_then(|v| v.to_str().ok());
    let none_readable = keys.is_empty();
    let mut refusal = WebhookError::BadSignature;
    let mut signers = Vec::new();
    for key in keys {
        match webhook::verify(&key.secret, body, signature) {
            Ok(()) => signers.push(key),
            Err(e) => refusal = e,
        }
    }
    if !signers.is_empty() {
        return Ok((signers, unreadable));
    }
    if let Some((name, why)) = unreadable.iter().next().filter(|_| none_readable) {
        return Err((
            "error",
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the webhook secret of CodeLocation {name} cannot be read: {why}"),
        ));
    }
    tracing::warn!(error = %refusal, "refused a CI webhook delivery");
    Err((
        "unauthorized",
        StatusCode::UNAUTHORIZED,
        refusal.to_string(),
    ))
}

/// Of the locations a verified delivery names, those its key speaks for: a location
/// with a key of its own takes only that key; the others, the process-wide one.
fn ci_speaks_for(
    specs: &BTreeMap<String, CiSpec>,
    (signers, unreadable): &(Vec<CiKey>, BTreeMap<String, String>),
    named: &[String],
    code_location: &str,
) -> Result<Vec<String>, Refused> {
    let locations: Vec<String> = named
        .iter()
        .filter(|l| {
            signers.iter().any(|k| match &k.owner {
                Some(owner) => owner == *l,
                None => !has_own_key(specs, l),
            })
        })
        .cloned()
        .collect();
    if !locations.is_empty() {
        return Ok(locations);
    }
    if let Some((name, why)) = named.iter().find_map(|l| unreadable.get_key_value(l)) {
        return Err((
            "error",
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the webhook secret of CodeLocation {name} cannot be read: {why}"),
        ));
    }
    tracing::warn!(
        code_location,
        "refused a CI verdict signed with another location's key"
    );
    Err((
        "unauthorized",
        StatusCode::UNAUTHORIZED,
        format!(
            "the signature is not made with the key of CodeLocation {code_location:?} (its ci.webhook.secret, else the process-wide secret)"
        ),
    ))
}

async fn ci_hook(
    AxumState(shared): AxumState<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let specs = shared.ci.read().map(|c| c.clone()).unwrap_or_default();
    let signers = match ci_signers(&shared, &specs, &headers, &body) {
        Ok(s) => s,
        Err((outcome, status, message)) => return reply(&shared, outcome, status, message),
    };
    let report = match webhook::parse(&body) {
        Ok(r) => r,
        Err(WebhookError::InvalidBody(e)) => {
            return reply(&shared, "bad_request", StatusCode::BAD_REQUEST, e);
        }
        Err(e) => {
            return reply(
                &shared,
                "bad_request",
                StatusCode::BAD_REQUEST,
                e.to_string(),
            );
        }
    };
    if let Err(e) = webhook::check_fresh(&report, Timestamp::now()) {
        return reply(&shared, "stale", StatusCode::BAD_REQUEST, e.to_string());
    }
    let named = shared.locations_named(&report.code_location);
    if named.is_empty() {
        return reply(
            &shared,
            "unknown_location",
            StatusCode::NOT_FOUND,
            format!("no CodeLocation {:?} is known", report.code_location),
        );
    }
    let locations = match ci_speaks_for(&specs, &signers, &named, &report.code_location) {
        Ok(l) => l,
        Err((outcome, status, message)) => return reply(&shared, outcome, status, message),
    };
    let digest = hex::encode(Sha256::digest(&body));
    let result = record_verdict(&shared, &report, &locations, &digest).await;
    if matches!(result, Ok(true))
        && let Err(e) = shared.persist_verdicts(&locations, &digest).await
    {
        tracing::error!(error = %e, "failed to persist a CI verdict");
        return reply(
            &shared,
            "error",
            StatusCode::SERVICE_UNAVAILABLE,
            "failed to record the verdict; retry",
        );
    }
    match result {
        Ok(true) => {
            tracing::info!(
                code_location = %report.code_location,
                sha = %report.sha.short(),
                state = ?report.state,
                "CI verdict received"
            );
            shared.wake_locations(&locations);
            reply(
                &shared,
                "accepted",
                StatusCode::ACCEPTED,
                format!("verdict for {} recorded", report.sha.short()),
            )
        }
        Ok(false) => reply(
            &shared,
            "duplicate",
            StatusCode::CONFLICT,
            "this delivery was already received",
        ),
        Err(e) => {
            tracing::error!(error = %e, "failed to record a CI verdict");
            reply(
                &shared,
                "error",
                StatusCode::INTERNAL_SERVER_ERROR,
                "failed to record the verdict",
            )
        }
    }
}

/// Records a verified verdict in the state file; `Ok(false)` for a replayed delivery.
/// Saved before it is acknowledged: a crash after the 202 loses nothing.
async fn record_verdict(
    shared: &Shared,
    report: &webhook::Report,
    locations: &[String],
    digest: &str,
) -> Result<bool, state::StateError> {
    let verdict = StoredVerdict::new(
        crate::lifecycle::CiVerdict {
            state: report.state.into(),
            url: report.url.clone(),
            failed_checks: report.failed_checks.clone(),
            description: report.description.clone(),
        },
        Timestamp::now(),
        crate::ci::VerdictVia::Webhook,
    );
    shared
        .update(|next| {
            if !next.remember_delivery(digest.to_owned()) {
                return false;
            }
            for location in locations {
                next.verdicts
                    .record(location, report.sha.clone(), verdict.clone());
            }
            true
        })
        .await
}

/// Locations whose secret (from `pick`) verifies the delivery, with their CI settings.
fn verified<'a>(
    specs: &'a BTreeMap<String, CiSpec>,
    resolver: &SecretResolver,
    pick: impl Fn(&CiSpec) -> Option<&crate::api::SecretSource>,
    check: impl Fn(&[u8]) -> bool,
) -> Result<Vec<(&'a String, &'a CiSpec)>, &'static str> {
    let mut configured = false;
    let mut matched = Vec::new();
    for (name, spec) in specs {
        let Some(source) = pick(spec) else { continue };
        match resolver(name, source) {
            Ok(secret) => {
                configured = true;
                if check(&secret) {
                    matched.push((name, spec));
                }
            }
            Err(e) => {
                tracing::warn!(code_location = %name, error = %e, "webhook secret unavailable");
            }
        }
    }
    if !configured {
        return Err("no webhook secret is configured for this provider");
    }
    Ok(matched)
}

/// Records what a provider reported for `(location, sha)` and the verdict it gives.
async fn record_reported(
    shared: &Shared,
    delivery: &str,
    targets: &[(String, Vec<String>)],
    sha: &Sha,
    update: impl Fn(&mut Reported) + Send + Sync,
    judge: impl Fn(&Reported, &[String]) -> crate::lifecycle::CiVerdict + Send + Sync,
) -> Result<bool, state::StateError> {
    shared
        .update(|next| {
            if !next.remember_delivery(delivery.to_owned()) {
                return false;
            }
            reported(next, targets, sha, &update, &judge);
            true
        })
        .await
}

fn reported(
    next: &mut State,
    targets: &[(String, Vec<String>)],
    sha: &Sha,
    update: &impl Fn(&mut Reported),
    judge: &impl Fn(&Reported, &[String]) -> crate::lifecycle::CiVerdict,
) {
    for (location, required) in targets {
        let reported = next
            .reported
            .entry(location.clone())
            .or_default()
            .entry(sha.clone())
            .or_default();
        update(reported);
        let v = judge(reported, required);
        tracing::info!(code_location = %location, sha = %sha.short(), state = ?v.state, "CI verdict from a provider webhook");
        next.verdicts.record(
            location,
            sha.clone(),
            StoredVerdict::new(v, Timestamp::now(), crate::ci::VerdictVia::Webhook),
        );
        let kept = next.verdicts.for_location(location);
        if let Some(by_sha) = next.reported.get_mut(location) {
            by_sha.retain(|s, _| kept.contains_key(s));
        }
    }
}

async fn github_hook(
    AxumState(shared): AxumState<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let specs = shared.ci.read().map(|c| c.clone()).unwrap_or_default();
    let signature = header("x-hub-signature-256");
    if header("x-github-event").as_deref() == Some("push") {
        let check = |secret: &[u8]| webhook::verify(secret, &body, signature.as_deref()).is_ok();
        let secrets = push_secrets(&shared, &specs, |spec| {
            spec.github.as_ref().and_then(|g| g.webhook_secret.as_ref())
        });
        return push_hook(&shared, &secrets, check, crate::gitops::push::github(&body));
    }
    let matched = match verified(
        &specs,
        &shared.resolver,
        |spec| spec.github.as_ref().and_then(|g| g.webhook_secret.as_ref()),
        |secret| webhook::verify(secret, &body, signature.as_deref()).is_ok(),
    ) {
        Err(e) => return reply(&shared, "error", StatusCode::SERVICE_UNAVAILABLE, e),
        Ok(m) if m.is_empty() => {
            return reply(
                &shared,
                "unauthorized",
                StatusCode::UNAUTHORIZED,
                "missing or wrong X-Hub-Signature-256",
            );
        }
        Ok(m) => m,
    };
    let Some(delivery) = header("x-github-delivery") else {
        return reply(
            &shared,
            "bad_request",
            StatusCode::BAD_REQUEST,
            "missing X-GitHub-Delivery",
        );
    };
    let event = header("x-github-event").unwrap_or_default();
    let parsed = match github::parse_event(&event, &body) {
        Ok(e) => e,
        Err(e) => {
            return reply(
                &shared,
                "bad_request",
                StatusCode::BAD_REQUEST,
                e.to_string(),
            );
        }
    };
    let (repository, sha, update) = match github_update(parsed) {
        Ok(u) => u,
        Err((outcome, status, message)) => return reply(&shared, outcome, status, message),
    };
    let Ok(sha) = sha.parse::<Sha>() else {
        return reply(
            &shared,
            "bad_request",
            StatusCode::BAD_REQUEST,
            format!("{sha:?} is not a full commit SHA"),
        );
    };
    let targets = watching(&matched, |spec| {
        spec.github
            .as_ref()
            .is_some_and(|g| g.repository.eq_ignore_ascii_case(&repository))
    });
    if targets.is_empty() {
        return reply(
            &shared,
            "ignored",
            StatusCode::ACCEPTED,
            format!("no CodeLocation watches {repository}; nothing recorded"),
        );
    }
    let judge = |r: &Reported, required: &[String]| {
        github::verdict(
            sha.as_str(),
            &r.check_runs,
            &github::CombinedStatus {
                statuses: r.statuses.clone(),
            },
            required,
        )
    };
    let delivery = format!("github:{delivery}");
    let result = record_reported(&shared, &delivery, &targets, &sha, update, judge).await;
    finish(&shared, result, &targets, &delivery, &sha).await
}

async fn gitlab_hook(
    AxumState(shared): AxumState<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let token = headers
        .get(gitlab::TOKEN_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let specs = shared.ci.read().map(|c| c.clone()).unwrap_or_default();
    let event = headers.get("x-gitlab-event").and_then(|v| v.to_str().ok());
    if matches!(event, Some("Push Hook" | "Tag Push Hook")) {
        let check = |secret: &[u8]| gitlab::token_matches(secret, token.as_deref());
        let secrets = push_secrets(&shared, &specs, |spec| {
            spec.gitlab.as_ref().and_then(|g| g.webhook_token.as_ref())
        });
        return push_hook(&shared, &secrets, check, crate::gitops::push::gitlab(&body));
    }
    let matched = match verified(
        &specs,
        &shared.resolver,
        |spec| spec.gitlab.as_ref().and_then(|g| g.webhook_token.as_ref()),
        |secret| gitlab::token_matches(secret, token.as_deref()),
    ) {
        Err(e) => return reply(&shared, "error", StatusCode::SERVICE_UNAVAILABLE, e),
        Ok(m) if m.is_empty() => {
            return reply(
                &shared,
                "unauthorized",
                StatusCode::UNAUTHORIZED,
                "missing or wrong X-Gitlab-Token",
            );
        }
        Ok(m) => m,
    };
    let (project, pipeline) = match gitlab::parse_pipeline_hook(&body) {
        Ok(Some(p)) => p,
        Ok(None) => {
            return reply(
                &shared,
                "ignored",
                StatusCode::ACCEPTED,
                "not a Pipeline Hook",
            );
        }
        Err(e) => {
            return reply(
                &shared,
                "bad_request",
                StatusCode::BAD_REQUEST,
                e.to_string(),
            );
        }
    };
    let Ok(sha) = pipeline.sha.parse::<Sha>() else {
        return reply(
            &shared,
            "bad_request",
            StatusCode::BAD_REQUEST,
            format!("{:?} is not a full commit SHA", pipeline.sha),
        );
    };
    let targets = watching(&matched, |spec| {
        spec.gitlab.as_ref().is_some_and(|g| project.is(&g.project))
    });
    if targets.is_empty() {
        return reply(
            &shared,
            "ignored",
            StatusCode::ACCEPTED,
            format!("no CodeLocation watches {project}; nothing recorded"),
        );
    }
    // GitLab sends no delivery id: a pipeline's id and status identify a delivery.
    let delivery = format!(
        "gitlab:{}:{}:{}",
        pipeline.id,
        pipeline.status,
        hex::encode(Sha256::digest(&body))
    );
    let update = move |r: &mut Reported| r.pipeline(pipeline.clone());
    let judge = |r: &Reported, _: &[String]| gitlab::verdict(sha.as_str(), &r.pipelines);
    let result = record_reported(&shared, &delivery, &targets, &sha, update, judge).await;
    finish(&shared, result, &targets, &delivery, &sha).await
}

async fn finish(
    shared: &Shared,
    result: Result<bool, state::StateError>,
    targets: &[(String, Vec<String>)],
    delivery: &str,
    sha: &Sha,
) -> Response {
    if matches!(result, Ok(true)) {
        let locations: Vec<String> = targets.iter().map(|(l, _)| l.clone()).collect();
        if let Err(e) = shared.persist_verdicts(&locations, delivery).await {
            tracing::error!(error = %e, "failed to persist a CI verdict");
            return reply(
                shared,
                "error",
                StatusCode::SERVICE_UNAVAILABLE,
                "failed to record the delivery; retry",
            );
        }
    }
    match result {
        Ok(true) => {
            let locations: Vec<String> = targets.iter().map(|(l, _)| l.clone()).collect();
            shared.wake_locations(&locations);
            reply(
                shared,
                "accepted",
                StatusCode::ACCEPTED,
                format!("verdict for {} updated", sha.short()),
            )
        }
        Ok(false) => reply(
            shared,
            "duplicate",
            StatusCode::CONFLICT,
            "this delivery was already received",
        ),
        Err(e) => {
            tracing::error!(error = %e, "failed to record a CI delivery");
            reply(
                shared,
                "error",
                StatusCode::INTERNAL_SERVER_ERROR,
                "failed to record the delivery",
            )
        }
    }
}

/// The secrets a push webhook may be signed with: Vigie's own webhook key, and the
/// provider's webhook secret of every code location.
fn push_secrets(
    shared: &Shared,
    specs: &BTreeMap<String, CiSpec>,
    pick: impl Fn(&CiSpec) -> Option<&crate::api::SecretSource>,
) -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = shared.secret.iter().cloned().collect();
    for (name, spec) in specs {
        if let Some(source) = pick(spec)
            && let Ok(secret) = (shared.resolver)(name, source)
        {
            out.push(secret);
        }
    }
    out
}

/// A push to a watched repository: the manifests' branch is fetched at once.
fn push_hook(
    shared: &Shared,
    secrets: &[Vec<u8>],
    check: impl Fn(&[u8]) -> bool,
    parsed: Result<crate::gitops::push::Push, crate::ci::PayloadError>,
) -> Response {
    if secrets.is_empty() {
        return reply(
            shared,
            "error",
            StatusCode::SERVICE_UNAVAILABLE,
            "no webhook secret is configured",
        );
    }
    if !secrets.iter().any(|s| check(s)) {
        return reply(
            shared,
            "unauthorized",
            StatusCode::UNAUTHORIZED,
            "missing or wrong signature or token",
        );
    }
    let push = match parsed {
        Ok(p) => p,
        Err(e) => {
            return reply(
                shared,
                "bad_request",
                StatusCode::BAD_REQUEST,
                e.to_string(),
            );
        }
    };
    let watched = shared.git_watch.read().ok().and_then(|w| w.clone());
    if let Some(g) = watched
        && push.is_for(&g.url)
        && push.branch() == Some(g.branch.as_str())
    {
        tracing::info!(source = %g, after = %push.after, "push to the manifests branch: fetching");
        shared.git_pushed.store(true, Ordering::Relaxed);
        shared.wake.notify_one();
        return reply(
            shared,
            "accepted",
            StatusCode::ACCEPTED,
            "fetching the manifests",
        );
    }
    let tracked = shared
        .tracked_repos
        .read()
        .is_ok_and(|repos| repos.iter().any(|r| push.is_for(r)));
    if tracked {
        tracing::info!(reference = %push.reference, after = %push.after, "push to a tracked repository: checking its refs");
        shared.track_pushed.store(true, Ordering::Relaxed);
        shared.wake.notify_one();
        return reply(
            shared,
            "accepted",
            StatusCode::ACCEPTED,
            "checking the tracked refs",
        );
    }
    reply(
        shared,
        "ignored",
        StatusCode::ACCEPTED,
        format!("{} of no watched repository and branch", push.reference),
    )
}

/// A change to what a provider reported for one SHA.
type Update = Box<dyn Fn(&mut Reported) + Send + Sync>;

/// What a GitHub event changes: `(repository, sha, update)`, or the reply when it
/// changes nothing.
fn github_update(
    parsed: github::Event,
) -> Result<(String, String, Update), (&'static str, StatusCode, String)> {
    match parsed {
        github::Event::Ping => Err(("pong", StatusCode::OK, "pong".to_owned())),
        github::Event::Ignored(e) => Err((
            "ignored",
            StatusCode::ACCEPTED,
            format!("event {e:?} ignored"),
        )),
        github::Event::CheckSuite { .. } => Err((
            "ignored",
            StatusCode::ACCEPTED,
            "check_suite: the check runs carry the verdict".to_owned(),
        )),
        github::Event::CheckRun { repository, run }
        | github::Event::WorkflowRun { repository, run } => {
            let sha = run.head_sha.clone();
            Ok((
                repository,
                sha,
                Box::new(move |r: &mut Reported| r.check_run(run.clone())),
            ))
        }
        github::Event::Status {
            repository,
            sha,
            status,
        } => Ok((
            repository,
            sha,
            Box::new(move |r: &mut Reported| r.status(status.clone())),
        )),
    }
}

/// The verified locations whose CI settings `watches` accepts, with their required checks.
fn watching(
    matched: &[(&String, &CiSpec)],
    watches: impl Fn(&CiSpec) -> bool,
) -> Vec<(String, Vec<String>)> {
    matched
        .iter()
        .filter(|(_, spec)| watches(spec))
        .map(|(name, spec)| ((*name).clone(), spec.required_checks.clone()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::Shared;
    use crate::store::{self as state, State};

    fn scratch(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("vigie-shared-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn shared(dir: &std::path::Path) -> Shared {
        Shared::new(State::default(), dir.join("state.json"), None)
    }

    fn note(n: usize) -> impl FnOnce(&mut State) {
        move |s: &mut State| s.deliveries.push_back(format!("change {n}"))
    }

    #[tokio::test(flavor = "current_thread")]
    async fn changes_made_at_once_are_saved_together_and_each_caller_waits_for_its_own() {
        let dir = scratch("together");
        let shared = shared(&dir);
        // All 50 are made while the first write is under way: the next write takes
        // the 49 others.
        let results = futures::future::join_all((0..50).map(|n| shared.update(note(n)))).await;
        assert!(results.iter().all(Result::is_ok));
        assert_eq!(shared.metrics.state_writes.get(), 2);
        let on_disk = state::load(&dir.join("state.json")).unwrap().unwrap();
        assert_eq!(on_disk.deliveries.len(), 50);
        assert_eq!(*shared.state.lock().unwrap(), on_disk);
        // Nothing changed: nothing written, and nothing waited for.
        shared.update(|_| ()).await.unwrap();
        assert_eq!(shared.metrics.state_writes.get(), 2);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_failed_write_drops_every_change_not_saved_and_tells_each_caller() {
        let dir = scratch("failed");
        // A file where the state's directory should be: no write can succeed.
        std::fs::write(dir.join("missing"), "").unwrap();
        let shared = shared(&dir.join("missing"));
        let results = futures::future::join_all((0..3).map(|n| shared.update(note(n)))).await;
        for r in &results {
            let e = r.as_ref().unwrap_err().to_string();
            assert!(e.contains("state"), "{e}");
        }
        assert_eq!(*shared.state.lock().unwrap(), State::default());
        // The next change starts from what is saved, not from what was dropped.
        std::fs::remove_file(dir.join("missing")).unwrap();
        std::fs::create_dir(dir.join("missing")).unwrap();
        shared.update(note(9)).await.unwrap();
        let on_disk = state::load(&dir.join("missing/state.json"))
            .unwrap()
            .unwrap();
        assert_eq!(on_disk.deliveries, ["change 9"]);
    }
}
