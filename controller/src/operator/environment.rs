//! The Environment controller: is the backend reachable (the namespace exists and can
//! be used; the Docker engine answers), and one line per Release bound to it.

use std::{sync::Arc, time::Duration};

use futures::StreamExt;
use jiff::Timestamp;
use kube::{
    Api, ResourceExt,
    api::{Patch, PatchParams},
    runtime::{Controller, controller::Action, reflector::ObjectRef},
};

use super::{Ctx, scoped, watch_config};
use crate::{
    api::{
        ConditionStatus, Environment, EnvironmentStatus, Phase, Release,
        environment::{Backend as BackendSpec, ReleaseSummary},
        release::HealthState,
    },
    backend::AnyBackend,
    lifecycle::set_condition,
};

/// The backend is checked again this often.
const RECHECK: Duration = Duration::from_secs(60);

/// Runs the Environment controller until `stop` resolves.
pub async fn controller(
    ctx: Arc<Ctx>,
    stop: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let client = ctx.client.clone();
    let ns = ctx.options.namespace.clone();
    Controller::new(
        scoped::<Environment>(&client, ns.as_deref()),
        watch_config(),
    )
    .watches(
        scoped::<Release>(&client, ns.as_deref()),
        watch_config(),
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
        ctx,
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
async fn reconcile(env: Arc<Environment>, ctx: Arc<Ctx>) -> Result<Action, kube::Error> {
    let ns = env.namespace().unwrap_or_default();
    let name = env.name_any();
    let reachable = check(&ctx, &env).await;
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
            &e.to_string(),
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
    if env.status.as_ref() != Some(&status) {
        let api: Api<Environment> = Api::namespaced(ctx.client.clone(), &ns);
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
    }
    Ok(Action::requeue(RECHECK))
}
