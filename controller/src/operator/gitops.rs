//! GitOps in the operator: the Environments, CodeLocations and Releases of a folder of
//! a git branch are server-side applied (field manager `vigie-gitops`, labelled
//! `app.kubernetes.io/managed-by: vigie-gitops`); those that leave the folder are
//! pruned (only labelled ones); changes made by hand to what git manages are reported
//! and put back. A commit with any invalid manifest applies nothing. The commit in
//! force, when, and the last error are in the ConfigMap `vigie-gitops` (next to the
//! leader Lease), in Events on it, and in metrics.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::{Arc, atomic::Ordering},
    time::{Duration, Instant},
};

use jiff::Timestamp;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::{
    Api, Resource, ResourceExt,
    api::{DeleteParams, ListParams, Patch, PatchParams},
    runtime::events::EventType,
};
use serde::{Serialize, de::DeserializeOwned};

use super::Ctx;
use crate::{
    api::{CodeLocation, Environment, Release, Sha},
    gitops::{repo::Credentials, source::GitSource},
    manifest::{self, Manifests},
};

/// Field manager of what git manages.
pub const FIELD_MANAGER: &str = "vigie-gitops";
/// Label on every object git manages (the only ones pruned).
pub const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "vigie-gitops");
/// Annotation naming the commit an object was last applied from.
pub const COMMIT_ANNOTATION: &str = "vigie.dev/gitops-commit";
/// The ConfigMap recording the synchronisation.
pub const STATUS_CONFIGMAP: &str = "vigie-gitops";

/// Options of the GitOps loop.
#[derive(Clone, Debug)]
pub struct Options {
    /// The folder of the branch followed.
    pub source: GitSource,
    /// Time between fetches (a push webhook fetches at once).
    pub interval: Duration,
    /// Credentials of the repository.
    pub credentials: Credentials,
    /// Where the repository is mirrored.
    pub cache: std::path::PathBuf,
    /// Namespace of objects that name none.
    pub default_namespace: String,
    /// What is committed back to the repository (tracked updates, rollbacks).
    pub write_back: crate::gitops::writeback::Scope,
    /// The author of those commits.
    pub author: crate::gitops::writeback::Author,
}

impl Options {
    /// Where write-backs go: this repository, branch and folder.
    #[must_use]
    pub fn write_back_target(&self) -> crate::gitops::writeback::Target {
        crate::gitops::writeback::Target {
            source: self.source.clone(),
            credentials: self.credentials.clone(),
            cache: self.cache.clone(),
            author: self.author.clone(),
            default_namespace: self.default_namespace.clone(),
            scope: self.write_back,
        }
    }
}

/// Whether GitOps manages this object (it carries the label).
#[must_use]
pub fn manages(meta: &kube::api::ObjectMeta) -> bool {
    meta.labels
        .as_ref()
        .and_then(|l| l.get(MANAGED_BY.0))
        .map(String::as_str)
        == Some(MANAGED_BY.1)
}

/// What one sync did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// Objects applied (`Kind ns/name`).
    pub applied: usize,
    /// Objects changed by hand and put back.
    pub drifted: Vec<String>,
    /// Objects pruned.
    pub pruned: Vec<String>,
}

/// Runs until the task is dropped: fetch, validate, apply, prune, record.
pub async fn run(ctx: Arc<Ctx>, options: Options) {
    if let Ok(mut w) = ctx.shared.git_watch.write() {
        *w = Some(options.source.clone());
    }
    let mut last_fetch: Option<Instant> = None;
    let mut synced = Synced::default();
    loop {
        let pushed = ctx.shared.git_pushed.swap(false, Ordering::Relaxed);
        if pushed || last_fetch.is_none_or(|t| t.elapsed() >= options.interval) {
            last_fetch = Some(Instant::now());
            once(&ctx, &options, &mut synced).await;
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(500)) => {}
            () = ctx.shared.wake.notified() => {}
        }
    }
}

#[allow(
    clippy::too_many_lines,
    reason = "fetch, validate, apply, record: one sync"
)]
async fn once(ctx: &Ctx, options: &Options, synced: &mut Synced) {
    let (cache, source, creds) = (
        options.cache.clone(),
        options.source.clone(),
        options.credentials.clone(),
    );
    let fetching = tokio::task::spawn_blocking(move || {
        crate::gitops::repo::fetch_folder(&cache, &source, &creds)
    });
    let fetched = match tokio::time::timeout(Duration::from_secs(120), fetching).await {
        Ok(Ok(r)) => r.map_err(String::from),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer from {} within 120 s", options.source)),
    };
    let now = Timestamp::now();
    let (sha, files) = match fetched {
        Ok(f) => f,
        Err(e) => {
            ctx.shared.metrics.git_sync_errors.inc();
            tracing::error!(source = %options.source, error = %e, "failed to fetch the manifests; the last good commit stays in force");
            fail(ctx, options, synced, &e, now, "FetchFailed").await;
            return;
        }
    };
    let report = manifest::load_sources(&files);
    // As `vigie run` does for its manifests: 1 while the last commit looked at is valid.
    ctx.shared
        .metrics
        .manifests_valid
        .set(i64::from(report.problems.is_empty()));
    if !report.problems.is_empty() {
        ctx.shared.metrics.git_sync_errors.inc();
        let problems: Vec<String> = report
            .problems
            .iter()
            .map(|p| format!("commit {}: {p}", sha.short()))
            .collect();
        let error = format!(
            "commit {} is invalid, nothing of it is applied; {} stays in force: {}",
            sha.short(),
            synced.commit.as_ref().map_or("nothing", Sha::short),
            problems.join("; ")
        );
        tracing::error!(source = %options.source, "{error}");
        fail(ctx, options, synced, &error, now, "InvalidCommit").await;
        return;
    }
    match apply(ctx, options, &report.manifests, &sha).await {
        Ok(r) => {
            let first = synced.commit.as_ref() != Some(&sha);
            *synced = Synced {
                commit: Some(sha.clone()),
                at: Some(now),
            };
            ctx.shared.metrics.git_synced.set(now.as_second());
            for d in &r.drifted {
                tracing::warn!(object = %d, commit = %sha.short(), "changed by hand; put back to what git says");
            }
            if first || !r.drifted.is_empty() || !r.pruned.is_empty() {
                tracing::info!(commit = %sha.short(), applied = r.applied, pruned = ?r.pruned, drifted = ?r.drifted, "manifests synced from git");
            }
            let reason = if r.drifted.is_empty() {
                "Synced"
            } else {
                "DriftCorrected"
            };
            let note = (!r.drifted.is_empty())
                .then(|| format!("changed by hand, put back: {}", r.drifted.join(", ")));
            let regarding = write_status(ctx, options, synced, None, now).await;
            if let Some(regarding) =
                regarding.filter(|_| first || note.is_some() || !r.pruned.is_empty())
            {
                let pruned =
                    (!r.pruned.is_empty()).then(|| format!("pruned: {}", r.pruned.join(", ")));
                let detail = [note, pruned]
                    .into_iter()
                    .flatten()
                    .collect::<Vec<_>>()
                    .join("; ");
                let type_ = if r.drifted.is_empty() {
                    EventType::Normal
                } else {
                    EventType::Warning
                };
                let note = if detail.is_empty() {
                    format!("{} at {}", options.source, sha.short())
                } else {
                    format!("{} at {}: {detail}", options.source, sha.short())
                };
                ctx.events
                    .transition(regarding, type_, reason, &note, "Sync");
            }
        }
        Err(e) => {
            ctx.shared.metrics.git_sync_errors.inc();
            tracing::error!(commit = %sha.short(), error = %e, "failed to apply the manifests");
            fail(ctx, options, synced, &e.to_string(), now, "ApplyFailed").await;
        }
    }
}

/// The namespace an object goes to: its own, else the default one.
fn namespace_of(meta: &kube::api::ObjectMeta, options: &Options) -> String {
    meta.namespace
        .clone()
        .unwrap_or_else(|| options.default_namespace.clone())
}

/// Why the objects of a commit could not all be applied or pruned.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// The API server refused or did not answer.
    #[error("{what}: {source}")]
    Api {
        /// What was asked (`applying Release apps/web-prod`).
        what: String,
        /// The client's error.
        #[source]
        source: kube::Error,
    },
    /// An object could not be written as JSON.
    #[error("{what}: {source}")]
    Json {
        /// Which object.
        what: String,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
}

/// Applies every object (Environments and CodeLocations before the Releases that name
/// them), then prunes, Releases first.
async fn apply(
    ctx: &Ctx,
    options: &Options,
    m: &Manifests,
    sha: &Sha,
) -> Result<Report, ApplyError> {
    let mut report = Report::default();
    let mut keep: BTreeSet<(String, String, String)> = BTreeSet::new();
    for ((_, name), l) in &m.environments {
        let ns = namespace_of(&l.object.metadata, options);
        apply_one::<Environment>(ctx, &ns, name, &l.object, sha, &mut report).await?;
        keep.insert(("Environment".into(), ns, name.clone()));
    }
    for ((_, name), l) in &m.code_locations {
        let ns = namespace_of(&l.object.metadata, options);
        apply_one::<CodeLocation>(ctx, &ns, name, &l.object, sha, &mut report).await?;
        keep.insert(("CodeLocation".into(), ns, name.clone()));
    }
    for ((_, name), l) in &m.releases {
        let ns = namespace_of(&l.object.metadata, options);
        apply_one::<Release>(ctx, &ns, name, &l.object, sha, &mut report).await?;
        keep.insert(("Release".into(), ns, name.clone()));
    }
    prune::<Release>(ctx, &keep, &mut report).await?;
    prune::<CodeLocation>(ctx, &keep, &mut report).await?;
    prune::<Environment>(ctx, &keep, &mut report).await?;
    Ok(report)
}

async fn apply_one<K>(
    ctx: &Ctx,
    ns: &str,
    name: &str,
    object: &K,
    sha: &Sha,
    report: &mut Report,
) -> Result<(), ApplyError>
where
    K: Resource<Scope = kube::core::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + Serialize
        + DeserializeOwned
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(ctx.client.clone(), ns);
    let kind = K::kind(&()).to_string();
    let json = |source| ApplyError::Json {
        what: format!("{kind} {ns}/{name}"),
        source,
    };
    let mut desired = serde_json::to_value(object).map_err(json)?;
    let desired_spec = desired.get("spec").cloned();
    // Drift: git's last applied spec differs from the live one, and git did not move.
    let live = api.get_opt(name).await.map_err(|source| ApplyError::Api {
        what: format!("{kind} {ns}/{name}"),
        source,
    })?;
    if let Some(live) = &live {
        let live_json = serde_json::to_value(live).map_err(json)?;
        let managed = live.labels().get(MANAGED_BY.0).map(String::as_str) == Some(MANAGED_BY.1);
        let same_commit = live.annotations().get(COMMIT_ANNOTATION) == Some(&sha.to_string());
        if managed && same_commit && live_json.get("spec") != desired_spec.as_ref() {
            report.drifted.push(format!("{kind} {ns}/{name}"));
        }
    }
    let meta = desired
        .get_mut("metadata")
        .and_then(|m| m.as_object_mut())
        .ok_or_else(|| ApplyError::Json {
            what: format!("{kind} {ns}/{name}"),
            source: serde::de::Error::custom("an object without metadata"),
        })?;
    meta.insert("namespace".into(), ns.into());
    meta.remove("resourceVersion");
    meta.remove("uid");
    let labels = meta
        .entry("labels")
        .or_insert_with(|| serde_json::json!({}));
    labels[MANAGED_BY.0] = MANAGED_BY.1.into();
    let annotations = meta
        .entry("annotations")
        .or_insert_with(|| serde_json::json!({}));
    annotations[COMMIT_ANNOTATION] = sha.to_string().into();
    if let Some(obj) = desired.as_object_mut() {
        obj.remove("status");
    }
    api.patch(
        name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&desired),
    )
    .await
    .map_err(|source| ApplyError::Api {
        what: format!("applying {kind} {ns}/{name}"),
        source,
    })?;
    report.applied += 1;
    Ok(())
}

async fn prune<K>(
    ctx: &Ctx,
    keep: &BTreeSet<(String, String, String)>,
    report: &mut Report,
) -> Result<(), ApplyError>
where
    K: Resource<Scope = kube::core::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
{
    let kind = K::kind(&()).to_string();
    let api: Api<K> = super::scoped(&ctx.client, ctx.options.namespace.as_deref());
    let selector = format!("{}={}", MANAGED_BY.0, MANAGED_BY.1);
    let list = api
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(|source| ApplyError::Api {
            what: format!("listing {kind}s"),
            source,
        })?;
    for o in list.items {
        let ns = o.namespace().unwrap_or_default();
        let name = o.name_any();
        if keep.contains(&(kind.clone(), ns.clone(), name.clone())) {
            continue;
        }
        let api: Api<K> = Api::namespaced(ctx.client.clone(), &ns);
        match api.delete(&name, &DeleteParams::background()).await {
            Ok(_) => report.pruned.push(format!("{kind} {ns}/{name}")),
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(source) => {
                return Err(ApplyError::Api {
                    what: format!("pruning {kind} {ns}/{name}"),
                    source,
                });
            }
        }
    }
    Ok(())
}

fn lease_namespace(ctx: &Ctx) -> String {
    ctx.lease_namespace.clone()
}

/// The commit in force and when it was taken.
#[derive(Debug, Default)]
struct Synced {
    commit: Option<Sha>,
    at: Option<Timestamp>,
}

/// Records a failure: the ConfigMap, and a Warning Event on it.
async fn fail(
    ctx: &Ctx,
    options: &Options,
    synced: &Synced,
    error: &str,
    now: Timestamp,
    reason: &str,
) {
    if let Some(regarding) = write_status(ctx, options, synced, Some(error), now).await {
        ctx.events
            .transition(regarding, EventType::Warning, reason, error, "Sync");
    }
}

/// Writes the ConfigMap `vigie-gitops`; returns its reference for Events.
async fn write_status(
    ctx: &Ctx,
    options: &Options,
    synced: &Synced,
    error: Option<&str>,
    now: Timestamp,
) -> Option<k8s_openapi::api::core::v1::ObjectReference> {
    let mut data = BTreeMap::from([
        ("source".to_owned(), options.source.to_string()),
        ("checkedAt".to_owned(), now.to_string()),
        ("error".to_owned(), error.unwrap_or_default().to_owned()),
    ]);
    if let Some(c) = &synced.commit {
        data.insert("commit".into(), c.to_string());
    }
    if let Some(at) = &synced.at {
        data.insert("syncedAt".into(), at.to_string());
    }
    let ns = lease_namespace(ctx);
    let api: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &ns);
    let patch = serde_json::json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": { "name": STATUS_CONFIGMAP, "labels": { MANAGED_BY.0: "vigie" } },
        "data": data,
    });
    match api
        .patch(
            STATUS_CONFIGMAP,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await
    {
        Ok(cm) => Some(cm.object_ref(&())),
        Err(e) => {
            tracing::warn!(error = %e, "failed to record the GitOps status in ConfigMap {ns}/{STATUS_CONFIGMAP}");
            None
        }
    }
}
