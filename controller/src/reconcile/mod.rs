//! The one per-Release pipeline, called by `vigie run` and `vigie controller` alike:
//!
//! ```text
//! observe ─► judge ──────► resolve ─► verdicts ─► decide ─► record ─► act ─► report
//! Backend    Definitions   Revisions  Ci          (pure)    Store     Backend Notifier, Forge
//! ```
//!
//! Each step is a function named for it; the I/O steps reach the world only through
//! the [`ports`]. [`record`] is the only way to get a [`Recorded`] decision and [`act`]
//! takes nothing else: the rollback point is on disk (or in the API) before the
//! workload moves. The modes differ only in where Releases come from and which port
//! implementations they pass.

pub mod memory;
pub mod ports;
pub mod revisions;
pub mod verdicts;

#[cfg(test)]
mod fake;
#[cfg(test)]
mod tests;

use std::{collections::BTreeMap, time::Instant};

pub use crate::api::ReleaseKey;
pub use memory::Memory;
pub use ports::{
    Ci, Clock, Definitions, Forge, NoDefinitions, NoForge, Notifier, Revisions, Store, SystemClock,
};

use crate::{
    api::{
        Phase, ReleaseStatus, Sha, code_location::CiSpec, environment::EnvironmentSpec,
        release::HealthState, release::ReleaseSpec,
    },
    backend::{Backend, BackendError, Probe, Workload},
    error::Category,
    lifecycle::{
        BackendState, Decision, Desired, HookOutcome, HookRun, Input, Notification, Observations,
        Upstream, Windows, WorkloadObservation, WorkloadTarget, decide,
    },
    metrics::{CategoryLabel, EventLabel, Metrics, ResultLabel, event_name},
};

/// What a Release is reconciled against, read by the mode before the pipeline runs.
#[derive(Clone, Copy, Debug)]
pub struct Subject<'a> {
    /// The Release.
    pub key: &'a ReleaseKey,
    /// Its spec (with a person's promotion or a tracking move laid over, standalone).
    pub spec: &'a ReleaseSpec,
    /// `metadata.generation` (the operator; `None` from files).
    pub generation: Option<i64>,
    /// Its Environment's spec.
    pub environment: &'a EnvironmentSpec,
    /// The Environment's deploy windows, resolved.
    pub windows: Option<&'a Windows>,
    /// What runs it: containers or a Deployment.
    pub workload: &'a Workload,
    /// Its CodeLocation's CI settings.
    pub ci: &'a CiSpec,
    /// What the upstream environment validated, when this one promotes from one.
    pub upstream: Option<&'a Upstream>,
}

impl Subject<'_> {
    /// `namespace/codeLocation`.
    #[must_use]
    pub fn location_key(&self) -> String {
        self.key.sibling(&self.spec.code_location).to_string()
    }
}

/// The ports one reconcile goes through.
pub struct Ports<'a, B, S, C, R, N, K> {
    /// The Environment's backend, or why it cannot be reached.
    pub backend: Result<&'a B, BackendError>,
    /// Where the status is recorded.
    pub store: &'a S,
    /// CI verdicts.
    pub ci: &'a C,
    /// Revision resolution.
    pub revisions: &'a R,
    /// Who is told.
    pub notifier: &'a N,
    /// The forge the deployments are reported to (in the background).
    pub forge: &'a dyn Forge,
    /// Whoever says whether the definitions of what runs load (the Dagster webserver).
    pub definitions: &'a dyn Definitions,
    /// The time.
    pub clock: &'a K,
    /// What was applied, between reconciles (nothing needed to resume).
    pub memory: &'a Memory,
    /// The process's metrics.
    pub metrics: &'a Metrics,
}

/// Why a reconcile did not finish.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The status could not be recorded: nothing was acted on.
    #[error("failed to record the status: {source}")]
    Record {
        /// The kind of fault.
        category: Category,
        /// The cause.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The backend refused an action the recorded decision asked for.
    #[error("failed to apply: {0}")]
    Apply(#[source] BackendError),
}

impl Error {
    /// The kind of fault.
    #[must_use]
    pub fn category(&self) -> Category {
        match self {
            Self::Record { category, .. } => *category,
            Self::Apply(e) => e.category(),
        }
    }

    /// Whether the SHA's artifact is not available (yet).
    #[must_use]
    pub fn is_missing_artifact(&self) -> bool {
        matches!(self, Self::Apply(e) if e.is_missing_artifact())
    }
}

/// What one reconcile did.
#[derive(Debug)]
pub struct Reconciled {
    /// The status recorded.
    pub status: ReleaseStatus,
    /// When to reconcile again even if nothing changes (a deadline, a window opening).
    pub requeue_after: Option<std::time::Duration>,
    /// Whether what downstream environments read changed (validated SHA, suspects,
    /// history): they are reconciled at once.
    pub upstream_changed: bool,
    /// The action that failed after the decision was recorded (the status says why;
    /// the notifier was told). Its category says whether and when to retry.
    pub failed: Option<Error>,
}

/// Runs the pipeline for one Release: observe, resolve, verdicts, decide, record,
/// act, report. An error means nothing was recorded, so nothing was acted on; an
/// action that failed after the record is in [`Reconciled::failed`], the status saying
/// why.
#[tracing::instrument(
    name = "reconcile",
    skip_all,
    fields(
        release = %subject.key.name,
        namespace = %subject.key.namespace,
        environment = %subject.spec.environment,
        code_location = %subject.spec.code_location,
        sha = tracing::field::Empty,
    )
)]
pub async fn release<B, S, C, R, N, K>(
    subject: &Subject<'_>,
    ports: &Ports<'_, B, S, C, R, N, K>,
) -> Result<Reconciled, Error>
where
    B: Backend,
    S: Store,
    C: Ci,
    R: Revisions,
    N: Notifier,
    K: Clock,
{
    let started = Instant::now();
    let mut laps = crate::metrics::Laps::new(started);
    let result: Result<Reconciled, Error> = async {
        let status = ports.store.status(subject).await;
        // One instant for the probe's choice and the decision: a monitoring round due now
        // gets the full health check it counts.
        let now = ports.clock.now();
        let (observed, hooks) = observe(subject, &status, now, ports).await;
        laps.lap("observe");
        let desired = resolve(subject, ports.revisions).await;
        laps.lap("resolve");
        let ci = verdicts(subject, &status, ports.ci).await;
        laps.lap("verdicts");
        let artifact_pending = ports
            .memory
            .artifact_pending(subject.key, status.rollout.as_ref().map(|r| &r.sha));
        let observations = Observations {
            now,
            desired,
            workload: observed.clone(),
            ci,
            upstream: subject.upstream.cloned(),
            hooks,
            artifact_pending,
        };
        let decision = decide(&Input {
            spec: subject.spec,
            generation: subject.generation,
            environment: subject.environment,
            windows: subject.windows,
            status: &status,
            observed: &observations,
        });
        laps.lap("decide");
        let recorded = record(subject, &status, decision, ports.store).await?;
        laps.lap("record");
        if let Some(sha) = recorded
            .status
            .rollout
            .as_ref()
            .map(|r| &r.sha)
            .or(recorded.status.deployed_sha.as_ref())
        {
            tracing::Span::current().record("sha", sha.short());
        }
        let acted = act(subject, &recorded, &observed, ports).await;
        laps.lap("act");
        report(subject, &recorded, ports.notifier, ports.metrics).await;
        laps.lap("report");
        // Where the time of a transition went, step by step (`RUST_LOG=vigie=debug`).
        if !recorded.notifications.is_empty() {
            tracing::debug!(steps = %laps, "transition timed");
        }
        let mut status = recorded.status;
        let failed = match acted {
            Ok(()) => None,
            Err(e) => {
                status.message = Some(e.to_string());
                ports.store.record(subject, &status).await?;
                ports.notifier.action_failed(subject, &e).await;
                Some(e)
            }
        };
        // What is recorded, shown on the forge: queued, never awaited.
        ports.forge.report(subject, &status);
        Ok(Reconciled {
            status,
            requeue_after: recorded.requeue_after,
            upstream_changed: recorded.upstream_changed,
            failed,
        })
    }
    .await;
    let metrics = ports.metrics;
    metrics
        .reconcile_seconds
        .observe(started.elapsed().as_secs_f64());
    let error = match &result {
        Ok(done) => done.failed.as_ref(),
        Err(e) => Some(e),
    };
    let outcome = if error.is_none() { "ok" } else { "error" };
    metrics
        .reconciles
        .get_or_create(&ResultLabel { result: outcome })
        .inc();
    if let Some(e) = error {
        metrics
            .reconcile_errors
            .get_or_create(&CategoryLabel {
                category: e.category().as_str(),
            })
            .inc();
        tracing::error!(error = %e, category = e.category().as_str(), "reconcile failed");
    }
    result
}

/// What runs, how healthy it is (a full health check only when one is due), and the
/// outcomes of the pre-deploy hooks of the SHA in flight.
pub async fn observe<B, S, C, R, N, K>(
    subject: &Subject<'_>,
    status: &ReleaseStatus,
    now: jiff::Timestamp,
    ports: &Ports<'_, B, S, C, R, N, K>,
) -> (WorkloadObservation, BTreeMap<String, HookOutcome>)
where
    B: Backend,
{
    let backend = match &ports.backend {
        Ok(b) => *b,
        Err(reason) => {
            return (
                WorkloadObservation {
                    backend: BackendState::Unreachable {
                        reason: reason.to_string(),
                    },
                    sha: None,
                    health: HealthState::Unknown,
                    reason: None,
                },
                BTreeMap::new(),
            );
        }
    };
    let probe = if crate::lifecycle::decide::health_check_due(subject.environment, status, now) {
        Probe::Full
    } else {
        Probe::State
    };
    let runs = crate::lifecycle::decide::pending_hooks(subject.environment, status);
    let hooks = if runs.is_empty() {
        BTreeMap::new()
    } else {
        backend
            .run_hooks(subject.workload, &runs, &subject.environment.hooks)
            .await
            .unwrap_or_default()
    };
    let observed = backend.observe(subject.workload, probe).await;
    (judge(subject, status, observed, probe, ports).await, hooks)
}

/// Has the application server judge what runs (a Dagster code location's definitions
/// must load): a verdict of "does not load" makes the observation unhealthy.
pub async fn judge<B, S, C, R, N, K>(
    subject: &Subject<'_>,
    status: &ReleaseStatus,
    observed: WorkloadObservation,
    probe: Probe,
    ports: &Ports<'_, B, S, C, R, N, K>,
) -> WorkloadObservation {
    ports
        .definitions
        .judge(subject, status, observed, probe)
        .await
}

/// The commit the Release asks for.
pub async fn resolve<R: Revisions>(subject: &Subject<'_>, revisions: &R) -> Desired {
    let Some(revision) = subject.spec.revision.clone() else {
        return Desired::None;
    };
    match revisions
        .resolve(&subject.workload.repo_url, &revision)
        .await
    {
        Ok(sha) => Desired::Sha(sha),
        Err(e) => Desired::Unresolved {
            revision,
            reason: e.to_string(),
        },
    }
}

/// The CI verdicts of the code location; the SHA in flight may be polled for.
pub async fn verdicts<C: Ci>(
    subject: &Subject<'_>,
    status: &ReleaseStatus,
    ci: &C,
) -> BTreeMap<Sha, crate::lifecycle::CiVerdict> {
    let in_flight = matches!(
        status.phase,
        Phase::Deploying | Phase::Verifying | Phase::Failed
    );
    let sha = status
        .rollout
        .as_ref()
        .map(|r| &r.sha)
        .filter(|_| in_flight);
    ci.verdicts(subject, sha).await
}

/// A decision whose status is recorded: the only thing [`act`] takes.
#[derive(Debug)]
pub struct Recorded {
    status: ReleaseStatus,
    workload: Option<WorkloadTarget>,
    hooks: Vec<HookRun>,
    notifications: Vec<Notification>,
    requeue_after: Option<std::time::Duration>,
    upstream_changed: bool,
}

impl Recorded {
    /// The status recorded.
    #[must_use]
    pub fn status(&self) -> &ReleaseStatus {
        &self.status
    }
}

/// Records the decision's status (no write when nothing changed).
pub async fn record<S: Store>(
    subject: &Subject<'_>,
    before: &ReleaseStatus,
    decision: Decision,
    store: &S,
) -> Result<Recorded, Error> {
    if decision.status != *before {
        store.record(subject, &decision.status).await?;
    }
    let upstream_changed = decision.status.validated_sha != before.validated_sha
        || decision.status.suspect != before.suspect
        || decision.status.history.len() != before.history.len();
    Ok(Recorded {
        status: decision.status,
        workload: decision.workload,
        hooks: decision.hooks,
        notifications: decision.notifications,
        requeue_after: decision.requeue_after,
        upstream_changed,
    })
}

/// Carries out a recorded decision: the pre-deploy hooks, then the workload (not
/// again when it already runs the target, healthy or on its way).
pub async fn act<B, S, C, R, N, K>(
    subject: &Subject<'_>,
    recorded: &Recorded,
    observed: &WorkloadObservation,
    ports: &Ports<'_, B, S, C, R, N, K>,
) -> Result<(), Error>
where
    B: Backend,
{
    let Ok(backend) = ports.backend else {
        return Ok(());
    };
    if !recorded.hooks.is_empty() {
        backend
            .run_hooks(
                subject.workload,
                &recorded.hooks,
                &subject.environment.hooks,
            )
            .await
            .map_err(Error::Apply)?;
    }
    let Some(target) = &recorded.workload else {
        return Ok(());
    };
    let settled = ports.memory.applied(subject.key, target, subject.workload)
        && observed.sha.as_ref() == Some(&target.sha)
        && matches!(
            observed.health,
            HealthState::Healthy | HealthState::Progressing
        );
    if settled {
        return Ok(());
    }
    match backend.apply(subject.workload, target).await {
        Ok(()) => {
            ports
                .memory
                .remember_applied(subject.key, target, subject.workload);
            Ok(())
        }
        Err(e) => {
            ports.memory.forget_applied(subject.key, target, &e);
            Err(Error::Apply(e))
        }
    }
}

/// Queues one message per transition for the sinks of the subject's Environment (the
/// notifier of both modes); `repo` gives the code location's repository, whose commits
/// the messages name, and is asked only when there are sinks.
pub fn send_to_sinks(
    dispatcher: &crate::notify::deliver::Dispatcher,
    subject: &Subject<'_>,
    notifications: &[Notification],
    repo: impl FnOnce() -> Option<(String, crate::gitops::repo::Credentials)>,
) {
    let sinks = &subject.environment.notifications;
    if sinks.is_empty() || notifications.is_empty() {
        return;
    }
    let repo = repo();
    for n in notifications {
        dispatcher.send(crate::notify::deliver::Job {
            namespace: subject.key.namespace.clone(),
            sinks: sinks.clone(),
            message: crate::notify::Message::of(
                n,
                &subject.spec.environment,
                &subject.spec.code_location,
                subject.key.to_string(),
            ),
            repo: repo.clone(),
        });
    }
}

/// Counts, logs (one structured line per transition) and notifies the transitions.
pub async fn report<N: Notifier>(
    subject: &Subject<'_>,
    recorded: &Recorded,
    notifier: &N,
    metrics: &Metrics,
) {
    for n in &recorded.notifications {
        let event = event_name(n.event);
        metrics
            .transitions
            .get_or_create(&EventLabel { event })
            .inc();
        tracing::info!(
            event,
            sha = %n.sha.short(),
            previous = n.previous.as_ref().map_or("-", Sha::short),
            reason = n.reason.as_deref().unwrap_or(""),
            url = n.url.as_deref().unwrap_or(""),
            by = n.by.as_deref().unwrap_or(""),
            "{event}"
        );
    }
    if !recorded.notifications.is_empty() {
        notifier.transitions(subject, &recorded.notifications).await;
    }
}
