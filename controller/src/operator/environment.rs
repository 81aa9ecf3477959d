//! The Environment controller: is the backend reachable (the namespace exists and can
//! be used; the Docker engine answers), and one line per Release bound to it.
//!
//! Its cost in API requests is bounded: the namespace of a Kubernetes backend is read
//! when the spec changes and then hourly (a Docker engine is pinged every minute: no
//! API request), and the summary of the Releases, which changes with each of their
//! transitions, is written at most every [`SUMMARY_EVERY`] per Environment.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use futures::StreamExt;
use jiff::Timestamp;
use kube::{
    Api, ResourceExt,
    api::{Patch, PatchParams},
    runtime::{Controller, controller::Action, reflector::ObjectRef},
};

use super::{Ctx, objects_config, scoped};
use crate::{
    api::{
        ConditionStatus, Environment, EnvironmentStatus, Phase, Release,
        environment::{Backend as BackendSpec, ReleaseSummary},
        release::HealthState,
    },
    backend::AnyBackend,
    lifecycle::set_condition,
};

/// A Docker engine is pinged again this often.
const RECHECK_DOCKER: Duration = Duration::from_secs(60);
/// A Kubernetes namespace is read again this often (a resync: a deleted namespace also
/// shows in the Releases, whose Deployments go with it).
const RECHECK_KUBERNETES: Duration = Duration::from_secs(3600);
/// A backend that did not answer is checked again this often.
const RECHECK_FAILED: Duration = Duration::from_secs(10);
/// The Releases' summary is written at most this often per Environment.
const SUMMARY_EVERY: Duration = Duration::from_secs(10);

/// What the controller remembers of an Environment between reconciles.
#[derive(Clone, Debug)]
struct Seen {
    /// The generation whose backend was checked, when, and the answer.
    checked: (Option<i64>, Instant, Result<(), String>),
    /// When its status was last written.
    written: Option<Instant>,
}

/// The controller's context: the operator's, and what it remembers.
struct EnvCtx {
    ctx: Arc<Ctx>,
    seen: Mutex<HashMap<ObjectRef<Environment>, Seen>>,
}

/// Whether the backend is checked again: a new generation, or the last check is older
/// than `every`.
fn check_due(
    checked: Option<&(Option<i64>, Instant, Result<(), String>)>,
    generation: Option<i64>,
    now: Instant,
    every: Duration,
) -> bool {
    checked.is_none_or(|(g, at, _)| *g != generation || now.saturating_duration_since(*at) >= every)
}

/// How long a status write waits: not at all when what the Environment itself says
/// changed (its backend, its generation), else until [`SUMMARY_EVERY`] after the last
/// write (the summary of its Releases).
fn write_wait(own_change: bool, written: Option<Instant>, now: Instant) -> Duration {
    match written {
        Some(at) if !own_change => SUMMARY_EVERY.saturating_sub(now.saturating_duration_since(at)),
        _ => Duration::ZERO,
    }
}

/// Runs the Environment controller until `stop` resolves.
pub async fn controller(
    ctx: Arc<Ctx>,
    stop: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let client = ctx.client.clone();
    let ns = ctx.options.namespace.clone();
    let config = objects_config(&ctx.options);
    let env_ctx = Arc::new(EnvCtx {
        ctx,
        seen: Mutex::new(HashMap::new()),
    });
    Controller::new(
        scoped::<Environment>(&client, ns.as_deref()),
        config.clone(),
    )
    .watches(
        scoped::<Release>(&client, ns.as_deref()),
        config,
        |r: Release| {
            Some(ObjectRef::new(&r.spec.environment).within(&r.namespace().unwrap_or_default()))
        },
    )
    .graceful_shutdown_on(stop)
    .run(
        reconcile,
        |_, e, _| {
            tracing::warn!(error = %e, "environment reconcile failed");
            Action::requeue(Duration::from_secs(10))
        },
        env_ctx,
    )
    .for_each(|_| async {})
    .await;
}

async fn check(ctx: &Ctx, env: &Environment) -> Result<(), crate::backend::BackendError> {
    match super::release::backend_of(ctx, env).await? {
        AnyBackend::Kubernetes(k) => k.check().await,
        AnyBackend::Docker(d) => d.ping().await,
    }
}

#[allow(clippy::too_many_lines, reason = "one status, built field by field")]
async fn reconcile(env: Arc<Environment>, env_ctx: Arc<EnvCtx>) -> Result<Action, kube::Error> {
    let ctx = &env_ctx.ctx;
    let ns = env.namespace().unwrap_or_default();
    let name = env.name_any();
    let key = ObjectRef::from_obj(&*env);
    let every = match env.spec.backend {
        BackendSpec::Kubernetes(_) => RECHECK_KUBERNETES,
        BackendSpec::Docker(_) => RECHECK_DOCKER,
    };
    let seen = env_ctx.seen.lock().ok().and_then(|s| s.get(&key).cloned());
    let started = Instant::now();
    // A backend that did not answer is asked again sooner.
    let every_after = |c: &(Option<i64>, Instant, Result<(), String>)| {
        if c.2.is_ok() { every } else { RECHECK_FAILED }
    };
    let checked = match seen.as_ref().map(|s| &s.checked) {
        Some(c) if !check_due(Some(c), env.metadata.generation, started, every_after(c)) => {
            c.clone()
        }
        _ => (
            env.metadata.generation,
            started,
            check(ctx, &env).await.map_err(|e| e.to_string()),
        ),
    };
    let reachable = checked.2.clone();
    let releases: Vec<Arc<Release>> = ctx
        .release_store()
        .map(|s| s.state())
        .unwrap_or_default()
        .into_iter()
        .filter(|r| r.namespace().as_deref() == Some(ns.as_str()) && r.spec.environment == name)
        .collect();
    let mut summaries: Vec<ReleaseSummary> = releases
        .iter()
        .map(|r| {
            let s = r.status.clone().unwrap_or_default();
            ReleaseSummary {
                code_location: r.spec.code_location.clone(),
                phase: format!("{:?}", s.phase),
                deployed: s.deployed_sha.as_ref().map(|d| d.short().to_owned()),
            }
        })
        .collect();
    summaries.sort_by(|a, b| a.code_location.cmp(&b.code_location));
    let unhealthy: Vec<String> = releases
        .iter()
        .filter(|r| {
            let s = r.status.clone().unwrap_or_default();
            matches!(s.phase, Phase::Failed | Phase::RolledBack)
                || s.health.is_some_and(|h| h.state == HealthState::Unhealthy)
                || s.monitor
                    .is_some_and(|m| m.state == crate::api::release::MonitorState::Degraded)
        })
        .map(|r| r.name_any())
        .collect();
    let old = env.status.clone().unwrap_or_default();
    let mut status = EnvironmentStatus {
        conditions: old.conditions.clone(),
        observed_generation: env.metadata.generation,
        release_count: u32::try_from(releases.len()).unwrap_or(u32::MAX),
        releases: summaries,
    };
    let now = Timestamp::now();
    let what = match &env.spec.backend {
        BackendSpec::Kubernetes(k) => format!("namespace {}", k.namespace),
        BackendSpec::Docker(d) => format!(
            "Docker engine {}",
            d.host.as_deref().unwrap_or("(local socket)")
        ),
    };
    match &reachable {
        Ok(()) => set_condition(
            &mut status.conditions,
            crate::lifecycle::READY,
            ConditionStatus::True,
            "BackendReachable",
            &format!("{what} answers"),
            now,
            env.metadata.generation,
        ),
        Err(e) => set_condition(
            &mut status.conditions,
            crate::lifecycle::READY,
            ConditionStatus::False,
            "BackendUnavailable",
            e,
            now,
            env.metadata.generation,
        ),
    }
    if unhealthy.is_empty() {
        set_condition(
            &mut status.conditions,
            crate::lifecycle::DEGRADED,
            ConditionStatus::False,
            "AllHealthy",
            "no Release is failed, rolled back or unhealthy",
            now,
            env.metadata.generation,
        );
    } else {
        set_condition(
            &mut status.conditions,
            crate::lifecycle::DEGRADED,
            ConditionStatus::True,
            "ReleasesUnhealthy",
            &format!("failed, rolled back or unhealthy: {}", unhealthy.join(", ")),
            now,
            env.metadata.generation,
        );
    }
    let mut written = seen.and_then(|s| s.written);
    let every = every_after(&checked);
    let mut next = every.saturating_sub(started.saturating_duration_since(checked.1));
    if env.status.as_ref() != Some(&status) {
        let own_change = old.observed_generation != status.observed_generation
            || old
                .conditions
                .iter()
                .find(|c| c.type_ == crate::lifecycle::READY)
                != status
                    .conditions
                    .iter()
                    .find(|c| c.type_ == crate::lifecycle::READY);
        let wait = write_wait(own_change, written, Instant::now());
        if !wait.is_zero() {
            remember(&env_ctx, key, checked, written);
            return Ok(Action::requeue(wait.min(next)));
        }
        // A change of its own (generation, Ready) is the reconciler's work; a summary
        // alone waits for a token the work leaves free.
        let client = if own_change {
            ctx.client.clone()
        } else {
            ctx.background.clone()
        };
        let api: Api<Environment> = Api::namespaced(client, &ns);
        let patch = serde_json::json!({
            "apiVersion": "vigie.dev/v1alpha1",
            "kind": "Environment",
            "status": status,
        });
        api.patch_status(
            &name,
            &PatchParams::apply(crate::backend::kubernetes::FIELD_MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await?;
        written = Some(Instant::now());
    }
    remember(&env_ctx, key, checked, written);
    if next.is_zero() {
        next = every;
    }
    Ok(Action::requeue(next))
}

fn remember(
    env_ctx: &EnvCtx,
    key: ObjectRef<Environment>,
    checked: (Option<i64>, Instant, Result<(), String>),
    written: Option<Instant>,
) {
    if let Ok(mut s) = env_ctx.seen.lock() {
        s.insert(key, Seen { checked, written });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_backend_is_checked_again_on_a_new_generation_or_when_the_last_check_is_old() {
        let t0 = Instant::now();
        let every = Duration::from_secs(3600);
        assert!(check_due(None, Some(1), t0, every));
        let checked = (Some(1), t0, Ok(()));
        assert!(!check_due(
            Some(&checked),
            Some(1),
            t0 + Duration::from_secs(60),
            every
        ));
        assert!(check_due(
            Some(&checked),
            Some(2),
            t0 + Duration::from_secs(1),
            every
        ));
        assert!(check_due(Some(&checked), Some(1), t0 + every, every));
    }

    #[test]
    fn the_summary_of_the_releases_is_written_at_most_every_ten_seconds() {
        let t0 = Instant::now();
        assert_eq!(write_wait(false, None, t0), Duration::ZERO, "never written");
        assert_eq!(
            write_wait(false, Some(t0), t0 + Duration::from_secs(4)),
            Duration::from_secs(6)
        );
        assert_eq!(
            write_wait(false, Some(t0), t0 + Duration::from_secs(11)),
            Duration::ZERO
        );
        assert_eq!(
            write_wait(true, Some(t0), t0 + Duration::from_secs(1)),
            Duration::ZERO,
            "the backend or the spec changed: at once"
        );
    }
}
