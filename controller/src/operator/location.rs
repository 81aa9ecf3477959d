//! The CodeLocation controller: the Secrets it names can be read, and its CI provider
//! answers with its token (`Ready`).

use std::{sync::Arc, time::Duration};

use futures::StreamExt;
use jiff::Timestamp;
use kube::{
    Api, ResourceExt,
    api::{Patch, PatchParams},
    runtime::{Controller, controller::Action},
};

use super::{Ctx, objects_config, scoped, secrets};
use crate::{
    api::{CodeLocation, ConditionStatus},
    lifecycle::set_condition,
};

/// CI access is checked again this often.
const RECHECK: Duration = Duration::from_secs(600);

/// Runs the CodeLocation controller until `stop` resolves.
pub async fn controller(
    ctx: Arc<Ctx>,
    stop: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let client = ctx.client.clone();
    let ns = ctx.options.namespace.clone();
    Controller::new(
        scoped::<CodeLocation>(&client, ns.as_deref()),
        objects_config(&ctx.options),
    )
    .graceful_shutdown_on(stop)
    .run(
        reconcile,
        |_, e, _| {
            tracing::warn!(error = %e, "code location reconcile failed");
            Action::requeue(Duration::from_secs(10))
        },
        ctx,
    )
    .for_each(|_| async {})
    .await;
}

/// What is wrong with a location's configuration.
#[derive(Debug, thiserror::Error)]
enum Misconfigured {
    /// Secrets it names cannot be read.
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Secrets(Vec<crate::secrets::SecretError>),
    /// The CI provider refuses or does not answer.
    #[error("CI provider: {0}")]
    Provider(crate::ci::poll::PollError),
    /// A GitHub App gives no installation token.
    #[error("{0}")]
    Credential(crate::ci::auth::AuthError),
}

/// What is wrong with a location's configuration, if anything; else what works.
async fn problems(ctx: &Ctx, loc: &CodeLocation) -> Result<String, Misconfigured> {
    let ns = loc.namespace().unwrap_or_default();
    let mut errors = Vec::new();
    for r in secrets::references(loc) {
        if let Err(e) = secrets::read(&ctx.client, &ns, &r).await {
            errors.push(e);
        }
    }
    if !errors.is_empty() {
        return Err(Misconfigured::Secrets(errors));
    }
    let resolve = |s: &crate::api::SecretSource| ctx.secrets.get(&ns, s);
    let auth = ctx.polls.auth();
    if let Some(g) = &loc.spec.ci.github {
        auth.github(g, &resolve)
            .await
            .map_err(Misconfigured::Credential)?;
    }
    if let Some(app) = loc
        .spec
        .repo
        .credentials
        .as_ref()
        .and_then(|c| c.github_app.as_ref())
    {
        let what = "repo.credentials.githubApp.privateKey";
        auth.github_app(&app.api_url, &app.app(), what, &resolve)
            .await
            .map_err(Misconfigured::Credential)?;
    }
    match ctx
        .polls
        .client()
        .check_access(ctx.polls.auth(), &loc.spec.ci, &resolve)
        .await
    {
        None => Ok("configuration usable; CI reports through /hooks/ci".into()),
        Some(Ok(())) => Ok("configuration usable; the CI provider answers".into()),
        Some(Err(e)) => Err(Misconfigured::Provider(e)),
    }
}

async fn reconcile(loc: Arc<CodeLocation>, ctx: Arc<Ctx>) -> Result<Action, kube::Error> {
    let ns = loc.namespace().unwrap_or_default();
    let name = loc.name_any();
    let verdict = problems(&ctx, &loc).await;
    let old = loc.status.clone().unwrap_or_default();
    let mut conditions = old.conditions.clone();
    let now = Timestamp::now();
    match &verdict {
        Ok(m) => set_condition(
            &mut conditions,
            crate::lifecycle::READY,
            ConditionStatus::True,
            "Configured",
            m,
            now,
            loc.metadata.generation,
        ),
        Err(e) => set_condition(
            &mut conditions,
            crate::lifecycle::READY,
            ConditionStatus::False,
            "ConfigurationInvalid",
            &e.to_string(),
            now,
            loc.metadata.generation,
        ),
    }
    if conditions != old.conditions || old.observed_generation != loc.metadata.generation {
        let api: Api<CodeLocation> = Api::namespaced(ctx.client.clone(), &ns);
        let patch = serde_json::json!({
            "apiVersion": "vigie.dev/v1alpha1",
            "kind": "CodeLocation",
            "status": { "conditions": conditions, "observedGeneration": loc.metadata.generation },
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
