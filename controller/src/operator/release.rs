//! The Release controller: watches, the finalizer and requeue timing around the one
//! pipeline ([`crate::reconcile`]), with the operator's ports ([`super::ports`]): the
//! status subresource, the CodeLocation's verdicts, Kubernetes Events. The workloads
//! go with a deleted Release (owner references, or a finalizer where those cannot do
//! it: [`super::finalizer`]), unless it carries `vigie.dev/orphan: "true"`.

use crate::backend::BackendError;
use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use futures::{FutureExt, StreamExt, TryStreamExt};
use jiff::Timestamp;
use k8s_openapi::api::apps::v1::Deployment;
use kube::{
    Api, Resource, ResourceExt,
    runtime::{
        Controller, WatchStreamExt,
        controller::Action,
        events::EventType,
        finalizer::{Event, finalizer},
        reflector::{self, ObjectRef, Store, store::Writer},
        watcher,
    },
};

use super::{
    Ctx, FINALIZER, ORPHAN_ANNOTATION, lean, objects_config,
    ports::{EventNotifier, LocationVerdicts, StatusStore, publish, write_status},
    scoped, watch_config,
};
use crate::{
    api::{
        CodeLocation, ConditionStatus, Environment, Phase, Release, ReleaseStatus,
        environment::Backend as BackendSpec,
    },
    backend::{
        AnyBackend, Backend, Owner, Workload, docker::DockerBackend, kubernetes::KubernetesBackend,
    },
    error::Category,
    lifecycle::{Upstream, Windows, set_condition},
    metrics::CategoryLabel,
    reconcile::{self, Ports, ReleaseKey, Subject, SystemClock, verdicts::Verdicts},
};

/// A rollout in flight is looked at again this often (Docker health, CI polls, the
/// verification deadline), even if no watch event comes.
const IN_FLIGHT: Duration = Duration::from_secs(5);
/// A hook Job running is looked at this often.
const HOOK_POLL: Duration = Duration::from_secs(2);
/// A steady Release on Docker is looked at this often (no watch on containers).
const STEADY_DOCKER: Duration = Duration::from_secs(30);
/// A steady Release on Kubernetes: watches bring every change; this is a resync.
const STEADY_KUBERNETES: Duration = Duration::from_secs(3600);

/// The first retry after a failed reconcile; each further failure doubles it.
const RETRY: Duration = Duration::from_secs(5);
/// The longest wait between retries of a failing Release.
const MAX_RETRY: Duration = Duration::from_secs(300);

/// Why a reconcile failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The API refused or did not answer (transient: retried with backoff).
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// The finalizer could not be added or removed.
    #[error("finalizer: {0}")]
    Finalizer(String),
    /// The pipeline could not record the status, or an action failed after it did.
    #[error(transparent)]
    Reconcile(#[from] reconcile::Error),
    /// The Environment's backend cannot be used (its TLS Secret, its engine address).
    #[error("backend: {0}")]
    Backend(#[source] BackendError),
}

impl Error {
    /// The kind of fault: drives [`error_policy`].
    #[must_use]
    pub fn category(&self) -> Category {
        match self {
            Self::Kube(kube::Error::Api(s)) if s.code == 409 => Category::Conflict,
            Self::Kube(_) | Self::Finalizer(_) => Category::Transient,
            Self::Reconcile(e) => e.category(),
            Self::Backend(e) => e.category(),
        }
    }
}

/// How long to wait before retrying a Release after `failures` failures in a row of
/// this category: a conflict at once, an invalid spec not until it changes (the watch
/// brings the change), anything else with exponential backoff.
#[must_use]
pub fn retry_after(category: Category, failures: u32) -> Option<Duration> {
    match category {
        Category::Conflict => Some(Duration::from_millis(200)),
        Category::InvalidSpec => None,
        _ => Some(
            RETRY
                .saturating_mul(2_u32.saturating_pow(failures.saturating_sub(1).min(16)))
                .min(MAX_RETRY),
        ),
    }
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
            objects_config(&ctx.options),
        )
        .modify(lean),
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
            objects_config(&ctx.options),
        )
        .modify(lean),
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
        )
        .modify(lean),
    )
    .default_backoff()
    .touched_objects();
    // A Release is reconciled when its spec, finalizers, annotations or deletion change
    // — not when its status does (that is this controller writing): upstream status
    // changes reach downstream Releases through `trigger`.
    let (store, release_writer) = reflector::store::<Release>();
    let gone = ctx.clone();
    let releases = reflector::reflector(
        release_writer,
        watcher(
            scoped::<Release>(&client, ns.as_deref()),
            objects_config(&ctx.options),
        )
        .modify(lean),
    )
    .default_backoff()
    // A Release without the finalizer is not reconciled once deleted: forget it here.
    .inspect_ok(move |e| {
        if let watcher::Event::Delete(r) = e {
            gone.memory.forget(&ReleaseKey::new(
                r.namespace().unwrap_or_default(),
                r.name_any(),
            ));
            if let Ok(mut f) = gone.failures.lock() {
                f.remove(&ObjectRef::from_obj(r));
            }
        }
    })
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
    let category = error.category();
    if !matches!(error, Error::Reconcile(_)) {
        // The pipeline counts its own failures.
        ctx.shared
            .metrics
            .reconcile_errors
            .get_or_create(&CategoryLabel {
                category: category.as_str(),
            })
            .inc();
    }
    let failures = ctx.failures.lock().map_or(1, |mut f| {
        let n = f.entry(ObjectRef::from_obj(&*release)).or_insert(0);
        *n = n.saturating_add(1);
        *n
    });
    let after = retry_after(category, failures);
    tracing::warn!(
        release = %release.name_any(),
        namespace = release.namespace().as_deref().unwrap_or(""),
        error = %error,
        category = category.as_str(),
        retry_s = after.map(|d| d.as_secs_f64()),
        "reconcile failed"
    );
    after.map_or_else(Action::await_change, Action::requeue)
}

async fn reconcile(release: Arc<Release>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    // A Release is judged against its Environment and CodeLocation: not before their
    // caches hold the initial lists (else a present one would look missing).
    if !both_ready(&ctx.environments, &ctx.locations, Duration::from_secs(60)).await {
        return Ok(Action::requeue(Duration::from_secs(1)));
    }
    let ns = release.namespace().unwrap_or_default();
    let api: Api<Release> = ctx.api(&ns);
    let object = ObjectRef::from_obj(&*release);
    if !wants_finalizer(&ctx, &release) {
        // What it owns goes with it (owner references): no finalizer to add or run.
        let result = if release.metadata.deletion_timestamp.is_some() {
            ctx.memory.forget(&ReleaseKey::new(&ns, release.name_any()));
            Ok(Action::await_change())
        } else {
            Box::pin(apply(&release, &ctx)).await
        };
        if result.is_ok()
            && let Ok(mut f) = ctx.failures.lock()
        {
            f.remove(&object);
        }
        return result;
    }
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
    if result.is_ok()
        && let Ok(mut f) = ctx.failures.lock()
    {
        f.remove(&object);
    }
    result
}

/// The Release's Environment and CodeLocation, from the caches; `None` when either is
/// missing.
fn parents(
    ctx: &Ctx,
    r: &Release,
) -> Option<(Arc<crate::api::Environment>, Arc<crate::api::CodeLocation>)> {
    let ns = r.namespace().unwrap_or_default();
    let env = ctx
        .environments
        .get(&ObjectRef::new(&r.spec.environment).within(&ns))?;
    let loc = ctx
        .locations
        .get(&ObjectRef::new(&r.spec.code_location).within(&ns))?;
    Some((env, loc))
}

/// Whether the Release carries the finalizer, or needs it
/// ([`super::finalizer::needed`]); a Release whose Environment or CodeLocation is
/// missing owns nothing yet.
fn wants_finalizer(ctx: &Ctx, r: &Release) -> bool {
    if r.finalizers().iter().any(|f| f == FINALIZER) {
        return true;
    }
    let Some((env, loc)) = parents(ctx, r) else {
        return false;
    };
    let orphan = r.annotations().get(ORPHAN_ANNOTATION).map(String::as_str) == Some("true");
    let dagster = workload(ctx, r, &loc, &env).dagster.is_some();
    super::finalizer::needed(
        &r.namespace().unwrap_or_default(),
        orphan,
        &env.spec,
        dagster,
    )
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
pub(super) async fn backend_of(ctx: &Ctx, env: &Environment) -> Result<AnyBackend, BackendError> {
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
            let b = DockerBackend::connect(&spec)?;
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

async fn apply(r: &Release, ctx: &Arc<Ctx>) -> Result<Action, Error> {
    let ns = r.namespace().unwrap_or_default();
    let key = ReleaseKey::new(&ns, r.name_any());
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
    let workload = workload(ctx, r, &loc, &env);
    let backend = backend_of(ctx, &env).await;
    let windows = env.spec.windows.as_ref().and_then(|w| Windows::new(w).ok());
    let upstream = upstream(ctx, r, &env);
    let environment = crate::dagster::environment(&env.spec, &loc.spec);
    let subject = Subject {
        key: &key,
        spec: &r.spec,
        generation: r.metadata.generation,
        environment: &environment,
        windows: windows.as_ref(),
        workload: &workload,
        ci: &loc.spec.ci,
        upstream: upstream.as_ref(),
    };
    let store = StatusStore {
        api: &api,
        release: r,
    };
    let ci = Verdicts {
        polls: &ctx.polls,
        store: LocationVerdicts {
            ctx,
            location: &loc,
        },
    };
    let notifier = EventNotifier {
        ctx,
        release: r,
        location: &loc,
    };
    let ports = Ports {
        backend: backend.as_ref().map_err(Clone::clone),
        store: &store,
        ci: &ci,
        revisions: &ctx.revisions,
        notifier: &notifier,
        forge: &ctx.reporter,
        definitions: &ctx.dagster,
        clock: &SystemClock,
        memory: &ctx.memory,
        metrics: &ctx.shared.metrics,
    };
    let mut done = reconcile::release(&subject, &ports).await?;
    if done.upstream_changed {
        downstream(ctx, r);
    }
    write_back_rollback(ctx, r, &done.status);
    if let Some(e) = done.failed.take() {
        return Err(Error::Reconcile(e));
    }
    Ok(Action::requeue(requeue(&env, &loc, &done)))
}

/// When to look at a Release again although no watch event comes.
fn requeue(env: &Environment, loc: &CodeLocation, done: &reconcile::Reconciled) -> Duration {
    let busy = matches!(
        done.status.phase,
        Phase::Deploying | Phase::Verifying | Phase::RollingBack
    );
    let polled = loc.spec.ci.polling() != crate::api::code_location::Polling::Never;
    let after = match env.spec.backend {
        // Watches bring Deployment changes, CI verdicts (the CodeLocation's status) and
        // spec changes: only deadlines and CI polls need a timer.
        // Hook Jobs are not watched: look again while one runs.
        BackendSpec::Kubernetes(_)
            if !crate::lifecycle::decide::pending_hooks(&env.spec, &done.status).is_empty() =>
        {
            HOOK_POLL
        }
        BackendSpec::Kubernetes(_) if busy && polled => loc.spec.ci.poll_interval.get(),
        BackendSpec::Kubernetes(_) => STEADY_KUBERNETES,
        // Nothing watches containers: look again.
        BackendSpec::Docker(_) if busy => IN_FLIGHT,
        BackendSpec::Docker(_) => STEADY_DOCKER,
    };
    match done.requeue_after {
        Some(d) => after.min(d.max(Duration::from_millis(500))),
        None => after,
    }
}

async fn cleanup(r: &Release, ctx: &Ctx) -> Result<Action, Error> {
    let ns = r.namespace().unwrap_or_default();
    let orphan = r.annotations().get(ORPHAN_ANNOTATION).map(String::as_str) == Some("true");
    let Some((env, loc)) = parents(ctx, r) else {
        tracing::warn!(release = %r.name_any(), "deleted while its Environment or CodeLocation is gone: nothing known to remove");
        return Ok(Action::await_change());
    };
    let workload = workload(ctx, r, &loc, &env);
    let b = backend_of(ctx, &env).await.map_err(Error::Backend)?;
    if orphan {
        // On Kubernetes, owner references would let the garbage collector take them.
        b.orphan(&workload)
            .await
            .map_err(|e| Error::Reconcile(reconcile::Error::Apply(e)))?;
        tracing::info!(release = %r.name_any(), namespace = %ns, "deleted with {ORPHAN_ANNOTATION}: its workloads stay");
        publish(
            ctx,
            r,
            EventType::Normal,
            "Orphaned",
            "deleted; its workloads were left running",
        );
    } else {
        b.delete(&workload)
            .await
            .map_err(|e| Error::Reconcile(reconcile::Error::Apply(e)))?;
        tracing::info!(release = %r.name_any(), namespace = %ns, "deleted: its workloads were removed");
    }
    if let Some(server) = &workload.dagster {
        crate::reconcile::Definitions::forget(&ctx.dagster, &env.spec, &server.location).await;
    }
    ctx.memory.forget(&ReleaseKey::new(&ns, r.name_any()));
    Ok(Action::await_change())
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
    let key = ReleaseKey::new(&ns, r.name_any()).to_string();
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
                ctx.events.transition(
                    r.object_ref(&()),
                    EventType::Normal,
                    "WrittenBack",
                    &note,
                    "WriteBack",
                );
            }
            Err(e) => {
                ctx.shared.metrics.write_back_errors.inc();
                tracing::warn!(release = %key, error = %e, "rollback: write-back failed");
                ctx.events.transition(
                    r.object_ref(&()),
                    EventType::Warning,
                    "WriteBackFailed",
                    &e.to_string(),
                    "WriteBack",
                );
            }
        }
    });
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
