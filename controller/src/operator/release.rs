//! The Release controller: observe (workload, CI verdicts, upstream, hooks), decide
//! with the pure `decide`, record the status (server-side apply on the status
//! subresource), then act (hooks, workload) and publish a Kubernetes Event per
//! transition. A finalizer removes the workloads when the Release is deleted, unless
//! it carries `vigie.dev/orphan: "true"`.

use std::{
    collections::{BTreeMap, HashMap},
    sync::Arc,
    time::{Duration, Instant},
};

use futures::{FutureExt, StreamExt};
use jiff::Timestamp;
use k8s_openapi::api::apps::v1::Deployment;
use kube::{
    Api, Resource, ResourceExt,
    api::{Patch, PatchParams},
    runtime::{
        Controller, WatchStreamExt,
        controller::Action,
        events::{Event as KubeEvent, EventType},
        finalizer::{Event, finalizer},
        reflector::{self, ObjectRef, Store, store::Writer},
        watcher,
    },
};

use super::{Ctx, FINALIZER, ORPHAN_ANNOTATION, scoped, watch_config};
use crate::{
    api::{
        CodeLocation, ConditionStatus, Environment, Phase, Release, ReleaseStatus, Sha,
        environment::{Backend as BackendSpec, EventKind},
        release::HealthState,
    },
    backend::{
        AnyBackend, Backend, Owner, Probe, Workload, docker::DockerBackend,
        kubernetes::KubernetesBackend,
    },
    ci::StoredVerdict,
    lifecycle::{
        BackendState, CiVerdict, Desired, Input, Observations, Upstream, Windows,
        WorkloadObservation, WorkloadTarget, decide, set_condition,
    },
    metrics::{EventLabel, ResultLabel, event_name},
};

/// How long a revision's resolution is reused.
const RESOLVE_TTL: Duration = Duration::from_secs(30);
/// A rollout in flight is looked at again this often (Docker health, CI polls, the
/// verification deadline), even if no watch event comes.
const IN_FLIGHT: Duration = Duration::from_secs(5);
/// A hook Job running is looked at this often.
const HOOK_POLL: Duration = Duration::from_secs(2);
/// A steady Release on Docker is looked at this often (no watch on containers).
const STEADY_DOCKER: Duration = Duration::from_secs(30);
/// A steady Release on Kubernetes: watches bring every change; this is a resync.
const STEADY_KUBERNETES: Duration = Duration::from_secs(3600);

/// What the controller remembers between reconciles (nothing needed to resume).
#[derive(Default)]
pub struct Memory {
    applied: HashMap<String, (WorkloadTarget, Workload)>,
    artifact_missing: HashMap<String, (Sha, String)>,
    next_poll: HashMap<(String, Sha), Instant>,
    resolved: HashMap<(String, String), (Instant, Result<Sha, String>)>,
}

/// Why a reconcile failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The API refused or did not answer (transient: retried with backoff).
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// The finalizer could not be added or removed.
    #[error("finalizer: {0}")]
    Finalizer(String),
    /// The workload could not be applied (retried).
    #[error("{0}")]
    Apply(String),
}

/// Runs the Release controller until `stop` resolves.
#[allow(
    clippy::too_many_lines,
    reason = "the streams and their mappings, wired in one place"
)]
pub async fn controller(
    ctx: Arc<Ctx>,
    env_writer: Writer<Environment>,
    loc_writer: Writer<CodeLocation>,
    stop: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let client = ctx.client.clone();
    let ns = ctx.options.namespace.clone();
    // An Environment's status summarises its Releases: only its spec matters here (else
    // every Release's change would reconcile every other Release of the Environment).
    let environments = reflector::reflector(
        env_writer,
        watcher(
            scoped::<Environment>(&client, ns.as_deref()),
            watch_config(),
        ),
    )
    .default_backoff()
    .touched_objects()
    .predicate_filter(
        kube::runtime::predicates::generation,
        kube::runtime::PredicateConfig::default(),
    );
    // A CodeLocation matters for its spec and its CI verdicts.
    let locations = reflector::reflector(
        loc_writer,
        watcher(
            scoped::<CodeLocation>(&client, ns.as_deref()),
            watch_config(),
        ),
    )
    .default_backoff()
    .touched_objects()
    .predicate_filter(
        |l: &CodeLocation| {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            l.metadata.generation.hash(&mut h);
            serde_json::to_string(&l.status.as_ref().map(|s| &s.verdicts))
                .unwrap_or_default()
                .hash(&mut h);
            Some(h.finish())
        },
        kube::runtime::PredicateConfig::default(),
    );
    // Deployments are read from this cache, not fetched: observing costs no request.
    let (deploy_reader, deploy_writer) = reflector::store::<Deployment>();
    if let Ok(mut d) = ctx.deployments.lock() {
        *d = Some(deploy_reader);
    }
    let deployments = reflector::reflector(
        deploy_writer,
        watcher(
            scoped::<Deployment>(&client, ns.as_deref()),
            watch_config().labels("vigie.dev/release"),
        ),
    )
    .default_backoff()
    .touched_objects();
    // A Release is reconciled when its spec, finalizers, annotations or deletion change
    // — not when its status does (that is this controller writing): upstream status
    // changes reach downstream Releases through `trigger`.
    let (store, release_writer) = reflector::store::<Release>();
    let releases = reflector::reflector(
        release_writer,
        watcher(scoped::<Release>(&client, ns.as_deref()), watch_config()),
    )
    .default_backoff()
    .touched_objects()
    .predicate_filter(
        |r: &Release| {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            r.metadata.generation.hash(&mut h);
            r.finalizers().hash(&mut h);
            r.annotations().hash(&mut h);
            r.metadata.deletion_timestamp.is_some().hash(&mut h);
            Some(h.finish())
        },
        kube::runtime::PredicateConfig::default(),
    );
    let controller = Controller::for_stream(releases, store.clone()).with_config(
        kube::runtime::controller::Config::default().concurrency(ctx.options.concurrency),
    );
    if let Ok(mut s) = ctx.releases.lock() {
        *s = Some(store.clone());
    }
    let (by_env, by_loc, by_deploy) = (store.clone(), store.clone(), store.clone());
    let (trigger_tx, trigger_rx) = futures::channel::mpsc::unbounded();
    if let Ok(mut t) = ctx.trigger.lock() {
        *t = Some(trigger_tx);
    }
    controller
        .watches_stream(environments, move |env: Environment| {
            let ns = env.namespace();
            let name = env.name_any();
            by_env
                .state()
                .into_iter()
                .filter(|r| r.namespace() == ns && r.spec.environment == name)
                .map(|r| ObjectRef::from_obj(&*r))
                .collect::<Vec<_>>()
        })
        .watches_stream(locations, move |loc: CodeLocation| {
            let ns = loc.namespace();
            let name = loc.name_any();
            by_loc
                .state()
                .into_iter()
                .filter(|r| r.namespace() == ns && r.spec.code_location == name)
                .map(|r| ObjectRef::from_obj(&*r))
                .collect::<Vec<_>>()
        })
        .watches_stream(deployments, move |d: Deployment| {
            let labels = d.labels();
            let release = labels.get("vigie.dev/release").cloned();
            let ns = labels
                .get("vigie.dev/release-namespace")
                .cloned()
                .or_else(|| d.namespace());
            release.and_then(|r| {
                let obj = ObjectRef::<Release>::new(&r).within(ns.as_deref().unwrap_or_default());
                by_deploy.get(&obj).map(|_| obj)
            })
        })
        .reconcile_on(trigger_rx)
        .graceful_shutdown_on(stop)
        .run(reconcile, error_policy, ctx.clone())
        .for_each(|r| async move {
            if let Err(e) = r {
                tracing::debug!(error = %e, "release reconcile");
            }
        })
        .await;
}

/// Asks the controller to reconcile a Release now (a downstream one whose upstream
/// changed).
fn trigger(ctx: &Ctx, r: ObjectRef<Release>) {
    if let Ok(t) = ctx.trigger.lock()
        && let Some(tx) = t.as_ref()
    {
        let _ = tx.unbounded_send(r);
    }
}

#[allow(
    clippy::needless_pass_by_value,
    reason = "the signature kube-runtime calls"
)]
fn error_policy(release: Arc<Release>, error: &Error, ctx: Arc<Ctx>) -> Action {
    ctx.shared
        .metrics
        .reconciles
        .get_or_create(&ResultLabel { result: "error" })
        .inc();
    tracing::warn!(release = %release.name_any(), namespace = release.namespace().as_deref().unwrap_or(""), error = %error, "reconcile failed; retrying");
    match error {
        Error::Kube(kube::Error::Api(s)) if s.code == 409 => {
            Action::requeue(Duration::from_millis(200))
        }
        _ => Action::requeue(Duration::from_secs(5)),
    }
}

async fn reconcile(release: Arc<Release>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    // A Release is judged against its Environment and CodeLocation: not before their
    // caches hold the initial lists (else a present one would look missing).
    if !both_ready(&ctx.environments, &ctx.locations, Duration::from_secs(60)).await {
        return Ok(Action::requeue(Duration::from_secs(1)));
    }
    let started = Instant::now();
    let ns = release.namespace().unwrap_or_default();
    let api: Api<Release> = ctx.api(&ns);
    let result = finalizer(&api, FINALIZER, release, |event| async {
        match event {
            Event::Apply(r) => Box::pin(apply(&r, &ctx)).await,
            Event::Cleanup(r) => Box::pin(cleanup(&r, &ctx)).await,
        }
    })
    .await;
    let result = match result {
        Ok(a) => Ok(a),
        // The cache had not seen the finalizer another reconcile just added: the JSON
        // patch's test fails; the watch brings the fresh object in a moment.
        Err(kube::runtime::finalizer::Error::AddFinalizer(kube::Error::Api(s)))
            if s.code == 422 =>
        {
            Ok(Action::requeue(Duration::from_millis(500)))
        }
        Err(
            kube::runtime::finalizer::Error::ApplyFailed(e)
            | kube::runtime::finalizer::Error::CleanupFailed(e),
        ) => Err(e),
        Err(other) => Err(Error::Finalizer(other.to_string())),
    };
    ctx.shared
        .metrics
        .reconcile_seconds
        .observe(started.elapsed().as_secs_f64());
    if result.is_ok() {
        ctx.shared
            .metrics
            .reconciles
            .get_or_create(&ResultLabel { result: "ok" })
            .inc();
    }
    result
}

/// Whether both caches (Environments and CodeLocations) hold their initial lists,
/// asked every 50 ms for at most `within`. Not awaited with `Store::wait_until_ready`: its
/// oneshot channel keeps one waker, so of several reconciles waiting at once only the
/// last to poll was woken, and the others slept until the timeout (a CI run saw a
/// Release untouched for 60 s after the controller started).
async fn both_ready<A, B>(a: &Store<A>, b: &Store<B>, within: Duration) -> bool
where
    A: kube::Resource + Clone + 'static,
    A::DynamicType: std::hash::Hash + Eq + Clone,
    B: kube::Resource + Clone + 'static,
    B::DynamicType: std::hash::Hash + Eq + Clone,
{
    let until = Instant::now() + within;
    loop {
        let first = a.wait_until_ready().now_or_never();
        let second = b.wait_until_ready().now_or_never();
        if matches!(first, Some(Ok(()))) && matches!(second, Some(Ok(()))) {
            return true;
        }
        if Instant::now() >= until {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The backend of an Environment (Docker connections are kept while their settings
/// and TLS Secret stay the same).
pub(super) async fn backend_of(ctx: &Ctx, env: &Environment) -> Result<AnyBackend, String> {
    let ns = env.namespace().unwrap_or_default();
    match &env.spec.backend {
        BackendSpec::Kubernetes(k) => {
            let mut b = KubernetesBackend::new(ctx.client.clone(), k.namespace.clone());
            if let Some(store) = ctx.deployments.lock().ok().and_then(|d| d.clone()) {
                b = b.with_store(store);
            }
            Ok(AnyBackend::Kubernetes(b))
        }
        BackendSpec::Docker(d) => {
            let mut spec = d.clone();
            let mut fingerprint = serde_json::to_string(d).unwrap_or_default();
            if let Some(secret) = d.tls.as_ref().and_then(|t| t.secret_ref.as_ref()) {
                let files =
                    super::secrets::docker_tls(&ctx.client, &ns, &env.name_any(), &secret.name)
                        .await?;
                fingerprint.push_str(&files.fingerprint);
                spec.tls = Some(crate::api::environment::DockerTls {
                    secret_ref: None,
                    ca_file: Some(files.ca.display().to_string()),
                    cert_file: Some(files.cert.display().to_string()),
                    key_file: Some(files.key.display().to_string()),
                });
            }
            let key = format!("{ns}/{}", env.name_any());
            if let Ok(cache) = ctx.docker.lock()
                && let Some((f, b)) = cache.get(&key)
                && *f == fingerprint
            {
                return Ok(AnyBackend::Docker(b.clone()));
            }
            let b = DockerBackend::connect(&spec).map_err(|e| e.to_string())?;
            if let Ok(mut cache) = ctx.docker.lock() {
                cache.insert(key, (fingerprint, b.clone()));
            }
            Ok(AnyBackend::Docker(b))
        }
    }
}

fn workload(ctx: &Ctx, r: &Release, loc: &CodeLocation, env: &Environment) -> Workload {
    let mut w = Workload::resolve(
        &ctx.options.instance,
        &r.name_any(),
        &r.spec,
        &loc.spec,
        &env.spec,
    );
    w.owner = Some(Owner {
        namespace: r.namespace().unwrap_or_default(),
        uid: r.uid().unwrap_or_default(),
    });
    w
}

async fn write_status(api: &Api<Release>, name: &str, status: &ReleaseStatus) -> Result<(), Error> {
    let patch = serde_json::json!({
        "apiVersion": "vigie.dev/v1alpha1",
        "kind": "Release",
        "status": status,
    });
    api.patch_status(
        name,
        &PatchParams::apply(crate::backend::kubernetes::FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await?;
    Ok(())
}

/// A Release whose Environment or CodeLocation is missing waits for it.
async fn missing(
    api: &Api<Release>,
    r: &Release,
    reason: &str,
    message: String,
) -> Result<Action, Error> {
    let mut status = r.status.clone().unwrap_or_default();
    let now = Timestamp::now();
    for t in [crate::lifecycle::READY, crate::lifecycle::PROGRESSING] {
        set_condition(
            &mut status.conditions,
            t,
            ConditionStatus::False,
            reason,
            &message,
            now,
            r.metadata.generation,
        );
    }
    status.message = Some(message);
    if Some(&status) != r.status.as_ref() {
        write_status(api, &r.name_any(), &status).await?;
    }
    Ok(Action::await_change())
}

fn verdicts(loc: &CodeLocation) -> BTreeMap<Sha, CiVerdict> {
    loc.status
        .as_ref()
        .map(|s| {
            s.verdicts
                .iter()
                .map(|v| {
                    let (sha, stored) = StoredVerdict::from_recorded(v);
                    (sha, stored.verdict())
                })
                .collect()
        })
        .unwrap_or_default()
}

fn upstream(ctx: &Ctx, r: &Release, env: &Environment) -> Option<Upstream> {
    let from = &env.spec.promotion.as_ref()?.from;
    let store = ctx.release_store()?;
    let ns = r.namespace();
    let up = store.state().into_iter().find(|o| {
        o.namespace() == ns
            && &o.spec.environment == from
            && o.spec.code_location == r.spec.code_location
    })?;
    Some(Upstream::of(&up.status.clone().unwrap_or_default()))
}

fn downstream(ctx: &Ctx, r: &Release) {
    let Some(store) = ctx.release_store() else {
        return;
    };
    let ns = r.namespace();
    for env in ctx.environments.state() {
        if env.namespace() != ns
            || env.spec.promotion.as_ref().map(|p| &p.from) != Some(&r.spec.environment)
        {
            continue;
        }
        for o in store.state() {
            if o.namespace() == ns
                && o.spec.environment == env.name_any()
                && o.spec.code_location == r.spec.code_location
            {
                trigger(ctx, ObjectRef::from_obj(&*o));
            }
        }
    }
}

async fn resolve(ctx: &Ctx, repo: &str, revision: Option<&String>) -> Desired {
    let Some(revision) = revision.cloned() else {
        return Desired::None;
    };
    if let Ok(sha) = revision.parse::<Sha>() {
        return Desired::Sha(sha);
    }
    let key = (repo.to_owned(), revision.clone());
    let fresh = ctx.memory.lock().ok().and_then(|m| {
        m.resolved
            .get(&key)
            .filter(|(at, _)| at.elapsed() < RESOLVE_TTL)
            .map(|(_, r)| r.clone())
    });
    let result = if let Some(r) = fresh {
        r
    } else {
        let (url, rev) = key.clone();
        let resolving = tokio::task::spawn_blocking(move || crate::git::resolve(&url, &rev));
        let r = match tokio::time::timeout(Duration::from_secs(15), resolving).await {
            Ok(joined) => joined.unwrap_or_else(|e| Err(e.to_string())),
            Err(_) => Err("no answer from the repository within 15s".into()),
        };
        if let Ok(mut m) = ctx.memory.lock() {
            m.resolved.insert(key, (Instant::now(), r.clone()));
        }
        r
    };
    match result {
        Ok(sha) => Desired::Sha(sha),
        Err(reason) => Desired::Unresolved { revision, reason },
    }
}

/// Polls GitHub/GitLab for the SHA in flight when its turn has come; a new verdict is
/// written to the CodeLocation (the watch on it brings the Release back).
async fn poll_ci(
    ctx: &Ctx,
    loc: &CodeLocation,
    status: &ReleaseStatus,
    ci: &mut BTreeMap<Sha, CiVerdict>,
) {
    let spec = &loc.spec.ci;
    if spec.github.is_none() && spec.gitlab.is_none() {
        return;
    }
    let in_flight = matches!(
        status.phase,
        Phase::Deploying | Phase::Verifying | Phase::Failed
    );
    let Some(sha) = status
        .rollout
        .as_ref()
        .map(|r| r.sha.clone())
        .filter(|_| in_flight)
    else {
        return;
    };
    let ns = loc.namespace().unwrap_or_default();
    let key = (format!("{ns}/{}", loc.name_any()), sha.clone());
    let due = ctx.memory.lock().map_or(true, |m| {
        m.next_poll.get(&key).is_none_or(|t| *t <= Instant::now())
    });
    if !due {
        return;
    }
    let resolve = |s: &crate::api::SecretSource| ctx.secrets.get(&ns, s);
    let Some(result) = crate::ci::poll::verdict(&ctx.ci_client, spec, sha.as_str(), &resolve).await
    else {
        return;
    };
    let next = match result {
        Ok(v) => {
            ci.insert(sha.clone(), v.clone());
            let stored = BTreeMap::from([(sha.clone(), StoredVerdict::new(v, Timestamp::now()))]);
            if let Some(p) = &ctx.shared.persist
                && let Err(e) = p.persist(vec![(key.0.clone(), stored)]).await
            {
                tracing::warn!(code_location = %key.0, error = %e, "failed to record a polled CI verdict");
            }
            spec.poll_interval.get()
        }
        Err(crate::ci::poll::PollError::RateLimited { retry_after, .. }) => retry_after,
        Err(e) => {
            tracing::warn!(code_location = %key.0, sha = %sha.short(), error = %e, "CI poll failed");
            spec.poll_interval
                .get()
                .saturating_mul(2)
                .min(Duration::from_secs(300))
        }
    };
    if let Ok(mut m) = ctx.memory.lock() {
        m.next_poll.insert(key, Instant::now() + next);
    }
}

#[allow(
    clippy::too_many_lines,
    reason = "observe, decide, record, act: one story"
)]
async fn apply(r: &Release, ctx: &Arc<Ctx>) -> Result<Action, Error> {
    let ns = r.namespace().unwrap_or_default();
    let name = r.name_any();
    let key = format!("{ns}/{name}");
    let api: Api<Release> = ctx.api(&ns);
    let Some(env) = ctx
        .environments
        .get(&ObjectRef::new(&r.spec.environment).within(&ns))
    else {
        return missing(
            &api,
            r,
            "EnvironmentNotFound",
            format!("Environment {ns}/{} does not exist", r.spec.environment),
        )
        .await;
    };
    let Some(loc) = ctx
        .locations
        .get(&ObjectRef::new(&r.spec.code_location).within(&ns))
    else {
        return missing(
            &api,
            r,
            "CodeLocationNotFound",
            format!("CodeLocation {ns}/{} does not exist", r.spec.code_location),
        )
        .await;
    };
    let status = r.status.clone().unwrap_or_default();
    let workload = workload(ctx, r, &loc, &env);
    let backend = backend_of(ctx, &env).await;
    let desired = resolve(ctx, &workload.repo_url, r.spec.revision.as_ref()).await;
    let mut ci = verdicts(&loc);
    poll_ci(ctx, &loc, &status, &mut ci).await;
    // One instant for the probe's choice and the decision: a monitoring round due now
    // gets the full health check it counts.
    let now = Timestamp::now();
    let probe = if crate::lifecycle::decide::health_check_due(&env.spec, &status, now) {
        Probe::Full
    } else {
        Probe::State
    };
    let (observed, hooks) = match &backend {
        Ok(b) => {
            let runs = crate::lifecycle::decide::pending_hooks(&env.spec, &status);
            let hooks = if runs.is_empty() {
                BTreeMap::new()
            } else {
                b.run_hooks(&workload, &runs, &env.spec.hooks)
                    .await
                    .unwrap_or_default()
            };
            (b.observe(&workload, probe).await, hooks)
        }
        Err(reason) => (
            WorkloadObservation {
                backend: BackendState::Unreachable {
                    reason: reason.clone(),
                },
                sha: None,
                health: HealthState::Unknown,
                reason: None,
            },
            BTreeMap::new(),
        ),
    };
    let in_flight = status.rollout.as_ref().map(|o| &o.sha);
    let artifact_pending = ctx.memory.lock().ok().and_then(|m| {
        m.artifact_missing
            .get(&key)
            .filter(|(sha, _)| Some(sha) == in_flight)
            .map(|(_, why)| why.clone())
    });
    let windows = env.spec.windows.as_ref().and_then(|w| Windows::new(w).ok());
    let observations = Observations {
        now,
        desired,
        workload: observed.clone(),
        ci,
        upstream: upstream(ctx, r, &env),
        hooks,
        artifact_pending,
    };
    let decision = decide(&Input {
        spec: &r.spec,
        generation: r.metadata.generation,
        environment: &env.spec,
        windows: windows.as_ref(),
        status: &status,
        observed: &observations,
    });
    // Recorded before acting: the rollback point is in the API before the workload moves.
    let mut recorded = decision.status.clone();
    if recorded != status {
        write_status(&api, &name, &recorded).await?;
    }
    if recorded.validated_sha != status.validated_sha
        || recorded.suspect != status.suspect
        || recorded.history.len() != status.history.len()
    {
        downstream(ctx, r);
    }
    publish(ctx, r, &decision.notifications).await;
    notify(ctx, r, &env, &loc, &decision.notifications);
    write_back_rollback(ctx, r, &recorded);

    // Act.
    let mut apply_error = None;
    if let Ok(b) = &backend {
        if !decision.hooks.is_empty()
            && let Err(e) = b
                .run_hooks(&workload, &decision.hooks, &env.spec.hooks)
                .await
        {
            apply_error = Some(e.to_string());
        }
        if apply_error.is_none()
            && let Some(target) = decision.workload.clone()
        {
            let settled = ctx.memory.lock().is_ok_and(|m| {
                m.applied
                    .get(&key)
                    .is_some_and(|(t, w)| t == &target && w == &workload)
            }) && observed.sha.as_ref() == Some(&target.sha)
                && matches!(
                    observed.health,
                    HealthState::Healthy | HealthState::Progressing
                );
            if !settled {
                match b.apply(&workload, &target).await {
                    Ok(()) => {
                        if let Ok(mut m) = ctx.memory.lock() {
                            m.artifact_missing.remove(&key);
                            m.applied.insert(key.clone(), (target, workload.clone()));
                        }
                    }
                    Err(e) => {
                        if let Ok(mut m) = ctx.memory.lock() {
                            m.applied.remove(&key);
                            if matches!(e, crate::backend::BackendError::Image { .. }) {
                                m.artifact_missing
                                    .insert(key.clone(), (target.sha.clone(), e.to_string()));
                            }
                        }
                        apply_error = Some(e.to_string());
                    }
                }
            }
        }
    }
    if let Some(e) = apply_error {
        recorded.message = Some(format!("failed to apply: {e}"));
        write_status(&api, &name, &recorded).await?;
        publish_raw(ctx, r, EventType::Warning, "ApplyFailed", &e).await;
        return Err(Error::Apply(e));
    }
    let busy = matches!(
        recorded.phase,
        Phase::Deploying | Phase::Verifying | Phase::RollingBack
    );
    let polled = loc.spec.ci.github.is_some() || loc.spec.ci.gitlab.is_some();
    let mut after = match env.spec.backend {
        // Watches bring Deployment changes, CI verdicts (the CodeLocation's status) and
        // spec changes: only deadlines and CI polls need a timer.
        // Hook Jobs are not watched: look again while one runs.
        BackendSpec::Kubernetes(_)
            if !crate::lifecycle::decide::pending_hooks(&env.spec, &recorded).is_empty() =>
        {
            HOOK_POLL
        }
        BackendSpec::Kubernetes(_) if busy && polled => loc.spec.ci.poll_interval.get(),
        BackendSpec::Kubernetes(_) => STEADY_KUBERNETES,
        // Nothing watches containers: look again.
        BackendSpec::Docker(_) if busy => IN_FLIGHT,
        BackendSpec::Docker(_) => STEADY_DOCKER,
    };
    if let Some(d) = decision.requeue_after {
        after = after.min(d.max(Duration::from_millis(500)));
    }
    Ok(Action::requeue(after))
}

async fn cleanup(r: &Release, ctx: &Ctx) -> Result<Action, Error> {
    let ns = r.namespace().unwrap_or_default();
    let orphan = r.annotations().get(ORPHAN_ANNOTATION).map(String::as_str) == Some("true");
    let env = ctx
        .environments
        .get(&ObjectRef::new(&r.spec.environment).within(&ns));
    let loc = ctx
        .locations
        .get(&ObjectRef::new(&r.spec.code_location).within(&ns));
    let (Some(env), Some(loc)) = (env, loc) else {
        tracing::warn!(release = %r.name_any(), "deleted while its Environment or CodeLocation is gone: nothing known to remove");
        return Ok(Action::await_change());
    };
    let workload = workload(ctx, r, &loc, &env);
    let b = backend_of(ctx, &env).await.map_err(Error::Apply)?;
    if orphan {
        // Owner references would let the garbage collector take them anyway.
        if let AnyBackend::Kubernetes(k) = &b {
            k.orphan(&workload)
                .await
                .map_err(|e| Error::Apply(e.to_string()))?;
        }
        tracing::info!(release = %r.name_any(), namespace = %ns, "deleted with {ORPHAN_ANNOTATION}: its workloads stay");
        publish_raw(
            ctx,
            r,
            EventType::Normal,
            "Orphaned",
            "deleted; its workloads were left running",
        )
        .await;
    } else {
        b.delete(&workload)
            .await
            .map_err(|e| Error::Apply(e.to_string()))?;
        tracing::info!(release = %r.name_any(), namespace = %ns, "deleted: its workloads were removed");
    }
    if let Ok(mut m) = ctx.memory.lock() {
        let key = format!("{ns}/{}", r.name_any());
        m.applied.remove(&key);
        m.artifact_missing.remove(&key);
    }
    Ok(Action::await_change())
}

fn event_type(kind: EventKind) -> EventType {
    match kind {
        EventKind::VerificationFailed
        | EventKind::RolledBack
        | EventKind::Failed
        | EventKind::Suspect
        | EventKind::HealthDown
        | EventKind::HookFailed => EventType::Warning,
        _ => EventType::Normal,
    }
}

async fn publish(ctx: &Ctx, r: &Release, notifications: &[crate::lifecycle::Notification]) {
    for n in notifications {
        let name = event_name(n.event);
        ctx.shared
            .metrics
            .transitions
            .get_or_create(&EventLabel { event: name })
            .inc();
        let note = event_note(&r.spec.code_location, n);
        tracing::info!(event = name, release = %r.name_any(), namespace = r.namespace().as_deref().unwrap_or(""), "{note}");
        super::transition_event(
            ctx,
            r.object_ref(&()),
            event_type(n.event),
            name,
            &note,
            "Reconcile",
        )
        .await;
    }
}

/// The Event's note: location, short SHA, the other SHA, why, who, and the CI link.
#[must_use]
pub fn event_note(location: &str, n: &crate::lifecycle::Notification) -> String {
    use std::fmt::Write;
    let mut note = format!("{location} {}", n.sha.short());
    if let Some(p) = &n.previous {
        let _ = write!(note, " (previous {})", p.short());
    }
    if let Some(reason) = &n.reason {
        let _ = write!(note, ": {reason}");
    }
    if let Some(by) = &n.by {
        let _ = write!(note, " — by {by}");
    }
    if let Some(url) = &n.url {
        let _ = write!(note, " {url}");
    }
    note
}

/// Queues the transitions' notifications for the Environment's sinks (sent in the
/// background; the reconcile does not wait).
fn notify(
    ctx: &Ctx,
    r: &Release,
    env: &Environment,
    loc: &CodeLocation,
    notifications: &[crate::lifecycle::Notification],
) {
    let sinks = &env.spec.notifications;
    if sinks.is_empty() {
        return;
    }
    let ns = r.namespace().unwrap_or_default();
    let repo = (
        loc.spec.repo.url.clone(),
        crate::gitops::repo::Credentials::from_spec(loc.spec.repo.credentials.as_ref(), |s| {
            ctx.secrets.get(&ns, s)
        }),
    );
    for n in notifications {
        ctx.dispatcher.send(crate::notify::deliver::Job {
            namespace: ns.clone(),
            sinks: sinks.clone(),
            message: crate::notify::Message::of(
                n,
                &r.spec.environment,
                &r.spec.code_location,
                format!("{ns}/{}", r.name_any()),
            ),
            repo: Some(repo.clone()),
        });
    }
}

/// A rollback of a Release that git manages, committed to the GitOps repository when
/// write-back of rollbacks is on: its revision goes back to the SHA rolled back to.
/// In the background: the rollback itself does not wait for git.
fn write_back_rollback(ctx: &Arc<Ctx>, r: &Release, status: &ReleaseStatus) {
    let Some(writer) = ctx.writer.clone().filter(|w| w.target.scope.rollbacks) else {
        return;
    };
    if !super::gitops::manages(&r.metadata) {
        return;
    }
    let Some((from, to, reason)) = crate::gitops::writeback::pending_rollback(status) else {
        return;
    };
    let ns = r.namespace().unwrap_or_default();
    let key = format!("{ns}/{}", r.name_any());
    if !writer.due(&key, &to) {
        return;
    }
    let (ctx, r) = (ctx.clone(), r.clone());
    tokio::spawn(async move {
        let message = crate::gitops::writeback::rollback_message(
            &r.spec.code_location,
            &r.spec.environment,
            &key,
            &from,
            &to,
            Some(&reason),
        );
        match writer.set_revision(&ns, &r.name_any(), &to, message).await {
            Ok(crate::gitops::writeback::Outcome::Unchanged) => {}
            Ok(outcome) => {
                let note = format!(
                    "{} rolled back {} → {}: {}",
                    r.spec.code_location,
                    from.short(),
                    to.short(),
                    crate::gitops::writeback::describe(&outcome, &writer.target.source)
                );
                tracing::info!(release = %key, "rollback written back: {note}");
                ctx.shared.metrics.write_backs.inc();
                ctx.shared
                    .git_pushed
                    .store(true, std::sync::atomic::Ordering::Relaxed);
                ctx.shared.wake.notify_waiters();
                super::transition_event(
                    &ctx,
                    r.object_ref(&()),
                    EventType::Normal,
                    "WrittenBack",
                    &note,
                    "WriteBack",
                )
                .await;
            }
            Err(e) => {
                ctx.shared.metrics.write_back_errors.inc();
                tracing::warn!(release = %key, error = %e, "rollback: write-back failed");
                super::transition_event(
                    &ctx,
                    r.object_ref(&()),
                    EventType::Warning,
                    "WriteBackFailed",
                    &e,
                    "WriteBack",
                )
                .await;
            }
        }
    });
}

async fn publish_raw(ctx: &Ctx, r: &Release, type_: EventType, reason: &str, note: &str) {
    let mut note = note.to_owned();
    note.truncate(1000);
    let event = KubeEvent {
        type_,
        reason: reason.to_owned(),
        note: Some(note),
        action: "Reconcile".into(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&event, &r.object_ref(&())).await {
        tracing::warn!(error = %e, "failed to publish an Event");
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use futures::future::join_all;
    use kube::runtime::{reflector, watcher};

    use super::both_ready;
    use crate::api::{CodeLocation, Environment};

    /// Several reconciles (each its own task) waiting at once are all let through
    /// when the caches fill. With `Store::wait_until_ready` alone, three of four such
    /// tasks slept until their timeout: its oneshot keeps the waker of the last poller.
    #[tokio::test(flavor = "multi_thread")]
    async fn every_waiting_reconcile_sees_the_caches_ready() {
        let (environments, mut env_writer) = reflector::store::<Environment>();
        let (locations, mut loc_writer) = reflector::store::<CodeLocation>();
        let started = std::time::Instant::now();
        let waiting: Vec<_> = (0..4)
            .map(|_| {
                let (e, l) = (environments.clone(), locations.clone());
                tokio::spawn(async move {
                    let ready = both_ready(&e, &l, Duration::from_secs(30)).await;
                    (ready, started.elapsed())
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(200)).await;
        env_writer.apply_watcher_event(&watcher::Event::Init);
        env_writer.apply_watcher_event(&watcher::Event::InitDone);
        loc_writer.apply_watcher_event(&watcher::Event::Init);
        loc_writer.apply_watcher_event(&watcher::Event::InitDone);
        for waiter in join_all(waiting).await {
            let (ready, after) = waiter.unwrap();
            assert!(ready);
            // Released by the caches filling, not by the 30 s limit.
            assert!(after < Duration::from_secs(10), "{after:?}");
        }
    }

    #[tokio::test]
    async fn caches_that_never_fill_are_reported_after_the_wait() {
        let (environments, _env_writer) = reflector::store::<Environment>();
        let (locations, _loc_writer) = reflector::store::<CodeLocation>();
        assert!(!both_ready(&environments, &locations, Duration::from_millis(200)).await);
    }
}
