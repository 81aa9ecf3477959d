//! Tracking rules in the operator: the refs a CodeLocation's `track` rules follow are
//! checked on an interval and at once on a signed push webhook; a move sets the bound
//! Release's `spec.revision` (field manager `vigie-tracking`), with a `Tracked` Event;
//! a refusal (a force-push, a quarantined SHA) is a `TrackingRefused` Warning, once.
//! Releases that GitOps manages are not patched (git is their source of truth): with
//! `--write-back=tracking` the move is committed to the GitOps repository, which
//! the sync then applies (`WrittenBack` Event); without it, it is reported.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, atomic::Ordering},
    time::{Duration, Instant},
};

use kube::{
    Api, Resource, ResourceExt,
    api::{Patch, PatchParams},
    runtime::events::EventType,
};

use super::Ctx;
use crate::{
    api::{CodeLocation, Release},
    gitops::{repo::Credentials, track::Step, tracker},
};

/// Field manager of tracked revisions.
pub const FIELD_MANAGER: &str = "vigie-tracking";

/// Runs until the task is dropped.
pub async fn run(ctx: Arc<Ctx>, interval: Duration, cache: std::path::PathBuf) {
    let mut last: Option<Instant> = None;
    // What was last reported per Release, so a refusal is published once.
    let mut reported: HashMap<String, String> = HashMap::new();
    loop {
        let pushed = ctx.shared.track_pushed.swap(false, Ordering::Relaxed);
        if pushed || last.is_none_or(|t| t.elapsed() >= interval) {
            last = Some(Instant::now());
            for loc in ctx.locations.state() {
                if !loc.spec.track.is_empty() {
                    check(&ctx, &loc, &cache, &mut reported).await;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[allow(clippy::too_many_lines, reason = "check, then act on each rule's step")]
async fn check(
    ctx: &Ctx,
    loc: &CodeLocation,
    cache: &std::path::Path,
    reported: &mut HashMap<String, String>,
) {
    let ns = loc.namespace().unwrap_or_default();
    let Some(store) = ctx.release_store() else {
        return;
    };
    let bound: BTreeMap<String, Arc<Release>> = store
        .state()
        .into_iter()
        .filter(|r| {
            r.namespace().as_deref() == Some(ns.as_str()) && r.spec.code_location == loc.name_any()
        })
        .map(|r| (r.spec.environment.clone(), r))
        .collect();
    let known: BTreeMap<String, tracker::Known> = bound
        .iter()
        .map(|(env, r)| {
            let revision = r.spec.revision.as_ref().and_then(|v| v.parse().ok());
            let quarantined = r
                .status
                .as_ref()
                .map(|s| s.quarantine.iter().map(|q| q.sha.clone()).collect())
                .unwrap_or_default();
            (env.clone(), (revision, quarantined))
        })
        .collect();
    let (creds, url, rules, cache) = (
        Credentials::from_spec(loc.spec.repo.credentials.as_ref(), |s| {
            ctx.secrets.get(&ns, s)
        }),
        loc.spec.repo.url.clone(),
        loc.spec.track.clone(),
        cache.to_owned(),
    );
    let evaluating = tokio::task::spawn_blocking(move || {
        tracker::evaluate(&cache, &url, &creds, &rules, &|env| {
            known.get(env).cloned().unwrap_or_default()
        })
    });
    let outcomes = match tokio::time::timeout(Duration::from_secs(120), evaluating).await {
        Ok(Ok(Ok(o))) => o,
        Ok(Ok(Err(e))) => {
            tracing::warn!(code_location = %loc.name_any(), error = %e, "cannot check the tracked refs");
            return;
        }
        _ => {
            tracing::warn!(code_location = %loc.name_any(), "cannot check the tracked refs in time");
            return;
        }
    };
    for o in outcomes {
        let Some(r) = bound.get(&o.environment) else {
            continue;
        };
        let key = format!("{ns}/{}", r.name_any());
        match o.step {
            Step::Stay => {}
            Step::Move { sha, reference } => {
                if super::gitops::manages(&r.metadata) {
                    write_back(ctx, loc, r, &sha, &reference, reported).await;
                    continue;
                }
                let api: Api<Release> = Api::namespaced(ctx.client.clone(), &ns);
                let patch = serde_json::json!({ "spec": { "revision": sha.as_str() } });
                let params = PatchParams {
                    field_manager: Some(FIELD_MANAGER.into()),
                    ..PatchParams::default()
                };
                match api
                    .patch(&r.name_any(), &params, &Patch::Merge(&patch))
                    .await
                {
                    Ok(_) => {
                        let note = format!(
                            "{} {} → {} ({reference})",
                            loc.name_any(),
                            r.spec
                                .revision
                                .as_deref()
                                .map_or("-", |v| &v[..v.len().min(7)]),
                            sha.short()
                        );
                        tracing::info!(release = %key, "tracking: {note}");
                        publish(ctx, r, EventType::Normal, "Tracked", &note).await;
                        reported.remove(&key);
                    }
                    Err(e) => {
                        tracing::warn!(release = %key, error = %e, "tracking: failed to move the Release");
                    }
                }
            }
            Step::Refuse { reason, .. } => {
                if reported.get(&key) != Some(&reason) {
                    tracing::warn!(release = %key, "tracking: not followed: {reason}");
                    publish(ctx, r, EventType::Warning, "TrackingRefused", &reason).await;
                    reported.insert(key, reason);
                }
            }
        }
    }
}

/// A move of a Release that git manages: committed to the GitOps repository when
/// write-back of tracked updates is on (the sync then applies it), else reported.
async fn write_back(
    ctx: &Ctx,
    loc: &CodeLocation,
    r: &Release,
    sha: &crate::api::Sha,
    reference: &str,
    reported: &mut HashMap<String, String>,
) {
    let ns = r.namespace().unwrap_or_default();
    let key = format!("{ns}/{}", r.name_any());
    let Some(writer) = ctx.writer.as_ref().filter(|w| w.target.scope.tracking) else {
        let why = format!(
            "{reference} is at {}, but GitOps manages this Release: commit the revision to the manifests repository, or turn on --write-back=tracking",
            sha.short()
        );
        if reported.get(&key) != Some(&why) {
            tracing::warn!(release = %key, "{why}");
            publish(ctx, r, EventType::Warning, "TrackingNotApplied", &why).await;
            reported.insert(key, why);
        }
        return;
    };
    let message = crate::gitops::writeback::tracking_message(
        &loc.name_any(),
        &r.spec.environment,
        &key,
        r.spec.revision.as_deref(),
        sha,
        reference,
    );
    match writer.set_revision(&ns, &r.name_any(), sha, message).await {
        Ok(outcome @ crate::gitops::writeback::Outcome::Committed { .. }) => {
            let note = format!(
                "{} {} → {} ({reference}): {}",
                loc.name_any(),
                r.spec
                    .revision
                    .as_deref()
                    .map_or("-", |v| &v[..v.len().min(7)]),
                sha.short(),
                crate::gitops::writeback::describe(&outcome, &writer.target.source)
            );
            tracing::info!(release = %key, "tracking written back: {note}");
            ctx.shared.metrics.write_backs.inc();
            publish(ctx, r, EventType::Normal, "WrittenBack", &note).await;
            reported.remove(&key);
            // Sync at once: the commit is what moves the Release.
            ctx.shared.git_pushed.store(true, Ordering::Relaxed);
            ctx.shared.wake.notify_waiters();
        }
        // Committed before; the sync has not applied it yet.
        Ok(crate::gitops::writeback::Outcome::Unchanged) => {}
        Err(e) => {
            ctx.shared.metrics.write_back_errors.inc();
            if reported.get(&key) != Some(&e) {
                tracing::warn!(release = %key, error = %e, "tracking: write-back failed");
                publish(ctx, r, EventType::Warning, "WriteBackFailed", &e).await;
                reported.insert(key, e);
            }
        }
    }
}

async fn publish(ctx: &Ctx, r: &Release, type_: EventType, reason: &str, note: &str) {
    super::transition_event(ctx, r.object_ref(&()), type_, reason, note, "Track").await;
}
