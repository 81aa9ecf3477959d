//! Tracking rules in the operator: the refs a CodeLocation's `track` rules follow are
//! checked on an interval and at once on a signed push webhook; a move sets the bound
//! Release's `spec.revision` (field manager `vigie-tracking`), with a `Tracked` Event;
//! a refusal (a force-push, a quarantined SHA) is a `TrackingRefused` Warning, once.
//! Releases that GitOps manages are not patched (git is their source of truth): with
//! `--write-back=tracking` the move is committed to the GitOps repository, which
//! the sync then applies (`WrittenBack` Event); without it, it is reported.

use std::{
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
    api::{CodeLocation, Release, Sha},
    gitops::{
        repo::Credentials,
        track::{Holder, Refusal},
        tracking::{self, Bound, Reported, Tracking},
    },
    reconcile::ReleaseKey,
};

/// Field manager of tracked revisions.
pub const FIELD_MANAGER: &str = "vigie-tracking";

/// Runs until the task is dropped.
pub async fn run(ctx: Arc<Ctx>, interval: Duration, cache: std::path::PathBuf) {
    let mut last: Option<Instant> = None;
    // What was last reported per Release, so a refusal is published once.
    let reported = Reported::default();
    loop {
        let pushed = ctx.shared.track_pushed.swap(false, Ordering::Relaxed);
        if pushed || last.is_none_or(|t| t.elapsed() >= interval) {
            last = Some(Instant::now());
            for loc in ctx.locations.state() {
                if !loc.spec.track.is_empty() {
                    check(&ctx, &loc, &cache, &reported).await;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn check(ctx: &Ctx, loc: &CodeLocation, cache: &std::path::Path, reported: &Reported) {
    let ns = loc.namespace().unwrap_or_default();
    let Some(store) = ctx.release_store() else {
        return;
    };
    let writer = ctx.writer.as_deref().filter(|w| w.target.scope.tracking);
    let releases: Vec<Arc<Release>> = store
        .state()
        .into_iter()
        .filter(|r| {
            r.namespace().as_deref() == Some(ns.as_str()) && r.spec.code_location == loc.name_any()
        })
        .collect();
    let bound: Vec<Bound> = releases
        .iter()
        .map(|r| Bound {
            key: ReleaseKey::new(&ns, r.name_any()),
            environment: r.spec.environment.clone(),
            revision: r.spec.revision.clone(),
            current: r.spec.revision.as_ref().and_then(|v| v.parse().ok()),
            quarantined: r
                .status
                .as_ref()
                .map(|s| s.quarantine.iter().map(|q| q.sha.clone()).collect())
                .unwrap_or_default(),
            // Releases that GitOps manages are not patched: git is their source of truth.
            holder: if super::gitops::manages(&r.metadata) {
                Holder::Git {
                    write_back: writer.is_some(),
                }
            } else {
                Holder::Vigie
            },
        })
        .collect();
    let name = loc.name_any();
    let place = tracking::Location {
        name: &name,
        url: &loc.spec.repo.url,
        credentials: Credentials::resolve(
            loc.spec.repo.credentials.as_ref(),
            ctx.polls.auth(),
            &|s| ctx.secrets.get(&ns, s),
        )
        .await,
        rules: &loc.spec.track,
        cache: cache.to_owned(),
    };
    let port = ApiTracking {
        ctx,
        location: &name,
        releases: &releases,
    };
    let signals = tracking::Signals {
        metrics: &ctx.shared.metrics,
        pushed: &ctx.shared.git_pushed,
        wake: &ctx.shared.wake,
    };
    tracking::check(place, &bound, writer, &signals, &port, reported).await;
}

/// Tracking in the operator: a move patches the Release's `spec.revision` (field
/// manager `vigie-tracking`); everything is told as Events on the Release.
struct ApiTracking<'a> {
    ctx: &'a Ctx,
    location: &'a str,
    releases: &'a [Arc<Release>],
}

impl ApiTracking<'_> {
    fn release(&self, b: &Bound) -> Option<&Release> {
        self.releases
            .iter()
            .find(|r| r.name_any() == b.key.name)
            .map(AsRef::as_ref)
    }

    fn publish(&self, b: &Bound, type_: EventType, reason: &str, note: &str) {
        if let Some(r) = self.release(b) {
            self.ctx
                .events
                .transition(r.object_ref(&()), type_, reason, note, "Track");
        }
    }

    /// `web 1111111 → 2222222 (main)`.
    fn moved(&self, b: &Bound, sha: &Sha, reference: &str) -> String {
        format!(
            "{} {} → {} ({reference})",
            self.location,
            b.revision.as_deref().map_or("-", |v| &v[..v.len().min(7)]),
            sha.short()
        )
    }
}

impl Tracking for ApiTracking<'_> {
    async fn move_to(
        &self,
        b: &Bound,
        sha: &Sha,
        reference: &str,
    ) -> Result<(), crate::error::RecordError> {
        let api: Api<Release> = Api::namespaced(self.ctx.client.clone(), &b.key.namespace);
        let patch = serde_json::json!({ "spec": { "revision": sha.as_str() } });
        let params = PatchParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..PatchParams::default()
        };
        api.patch(&b.key.name, &params, &Patch::Merge(&patch))
            .await
            .map_err(crate::error::RecordError::kubernetes)?;
        let note = self.moved(b, sha, reference);
        self.publish(b, EventType::Normal, "Tracked", &note);
        Ok(())
    }

    async fn report(&self, b: &Bound, refusal: Refusal, reason: &str) {
        let event = match refusal {
            Refusal::NotFollowed => "TrackingRefused",
            Refusal::NotApplied => "TrackingNotApplied",
        };
        self.publish(b, EventType::Warning, event, reason);
    }

    async fn written_back(
        &self,
        b: &Bound,
        sha: &Sha,
        reference: &str,
        outcome: Result<String, crate::gitops::writeback::WriteBackError>,
    ) {
        match outcome {
            Ok(how) => {
                let note = format!("{}: {how}", self.moved(b, sha, reference));
                self.publish(b, EventType::Normal, "WrittenBack", &note);
            }
            Err(e) => {
                self.publish(b, EventType::Warning, "WriteBackFailed", &e.to_string());
            }
        }
    }
}
