//! The pipeline's ports in the operator: the Release's status subresource as the
//! [`Store`], the CodeLocation's status as the verdict store, Kubernetes Events and
//! the notification sinks as the [`Notifier`].

use std::collections::BTreeMap;

use kube::{
    Api, Resource, ResourceExt,
    api::{Patch, PatchParams},
    runtime::events::EventType,
};

use super::Ctx;
use crate::{
    api::{
        CodeLocation, Release, ReleaseStatus, SecretSource, Sha,
        environment::{EnvironmentSpec, EventKind},
    },
    ci::StoredVerdict,
    error::Category,
    lifecycle::{CiVerdict, Notification},
    metrics::event_name,
    reconcile::{Error, Notifier, Store, Subject, verdicts::VerdictStore},
};

/// A Release's status subresource, written by server-side apply with one field manager,
/// once per transition ([`crate::lifecycle::progress`]).
pub struct StatusStore<'a> {
    /// The Releases of the namespace.
    pub api: &'a Api<Release>,
    /// The Release as the watch brought it (its status is the record).
    pub release: &'a Release,
}

/// Writes `status` to the Release's status subresource.
pub(super) async fn write_status(
    api: &Api<Release>,
    name: &str,
    status: &ReleaseStatus,
) -> Result<(), kube::Error> {
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

impl Store for StatusStore<'_> {
    async fn status(&self, _: &Subject<'_>) -> ReleaseStatus {
        self.release.status.clone().unwrap_or_default()
    }

    async fn record(&self, _: &Subject<'_>, status: &ReleaseStatus) -> Result<(), Error> {
        // One write per transition: the steps of a rollout in flight (each watch event
        // of its Deployment) stay in memory until the next transition writes them.
        let recorded = self.release.status.clone().unwrap_or_default();
        if crate::lifecycle::progress::progress_only(&recorded, status) {
            return Ok(());
        }
        write_status(self.api, &self.release.name_any(), status)
            .await
            .map_err(|e| Error::Record {
                category: match &e {
                    kube::Error::Api(s) if s.code == 409 => Category::Conflict,
                    _ => Category::Transient,
                },
                source: Box::new(e),
            })
    }
}

/// Verdicts kept in the CodeLocation's `status.verdicts`.
pub struct LocationVerdicts<'a> {
    /// The controller's context (the persister, the Secret cache).
    pub ctx: &'a Ctx,
    /// The CodeLocation as the watch brought it.
    pub location: &'a CodeLocation,
}

impl VerdictStore for LocationVerdicts<'_> {
    fn stored(&self, _: &Subject<'_>) -> BTreeMap<Sha, CiVerdict> {
        self.location
            .status
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

    async fn record(
        &self,
        subject: &Subject<'_>,
        sha: &Sha,
        verdict: &CiVerdict,
    ) -> Result<(), crate::error::RecordError> {
        let Some(persist) = &self.ctx.shared.persist else {
            return Ok(());
        };
        let stored = BTreeMap::from([(
            sha.clone(),
            StoredVerdict::new(
                verdict.clone(),
                jiff::Timestamp::now(),
                crate::ci::VerdictVia::Poll,
            ),
        )]);
        persist
            .persist(vec![(subject.location_key(), stored)])
            .await
    }

    fn delivered_at(&self, _: &Subject<'_>, sha: &Sha) -> Option<jiff::Timestamp> {
        self.location
            .status
            .as_ref()?
            .verdicts
            .iter()
            .find(|v| &v.sha == sha && v.via == Some(crate::ci::VerdictVia::Webhook))
            .map(|v| v.at)
    }

    fn secret(
        &self,
        subject: &Subject<'_>,
        source: &SecretSource,
    ) -> Result<Vec<u8>, crate::secrets::SecretError> {
        self.ctx.secrets.get(&subject.key.namespace, source)
    }
}

/// One Kubernetes Event per transition on the Release, and the Environment's sinks.
pub struct EventNotifier<'a> {
    /// The controller's context (Event recorder, dispatcher, Secret cache).
    pub ctx: &'a Ctx,
    /// The Release.
    pub release: &'a Release,
    /// Its CodeLocation (the repository, for commit subjects).
    pub location: &'a CodeLocation,
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

/// Whether a transition becomes a Kubernetes Event on the Release: every one, unless
/// the Environment lists `kubernetesEvents` sinks; then those their `events` name (a
/// sink with no `events`: every one). Each Event is one API request.
#[must_use]
pub fn published_as_event(environment: &EnvironmentSpec, kind: EventKind) -> bool {
    let mut sinks = environment
        .notifications
        .iter()
        .filter(|s| s.kubernetes_events.is_some())
        .peekable();
    sinks.peek().is_none() || sinks.any(|s| s.events.is_empty() || s.events.contains(&kind))
}

/// The Event's note: location, short SHA, the other SHA, why, who, and the CI link.
#[must_use]
pub fn event_note(location: &str, n: &Notification) -> String {
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

impl Notifier for EventNotifier<'_> {
    async fn transitions(&self, subject: &Subject<'_>, notifications: &[Notification]) {
        let r = self.release;
        for n in notifications
            .iter()
            .filter(|n| published_as_event(subject.environment, n.event))
        {
            self.ctx.events.transition(
                r.object_ref(&()),
                event_type(n.event),
                event_name(n.event),
                &event_note(&r.spec.code_location, n),
                "Reconcile",
            );
        }
        let repo = &self.location.spec.repo;
        // The credentials (an App's token may need a request) only when a sink is told.
        let creds = if subject.environment.notifications.is_empty() {
            None
        } else {
            let resolve =
                |s: &crate::api::SecretSource| self.ctx.secrets.get(&subject.key.namespace, s);
            Some(
                crate::gitops::repo::Credentials::resolve(
                    repo.credentials.as_ref(),
                    self.ctx.polls.auth(),
                    &resolve,
                )
                .await,
            )
        };
        crate::reconcile::send_to_sinks(&self.ctx.dispatcher, subject, notifications, || {
            creds.map(|c| (repo.url.clone(), c))
        });
    }

    async fn action_failed(&self, _: &Subject<'_>, error: &Error) {
        let note = match error {
            Error::Apply(e) => e.to_string(),
            other @ Error::Record { .. } => other.to_string(),
        };
        publish(
            self.ctx,
            self.release,
            EventType::Warning,
            "ApplyFailed",
            &note,
        );
    }
}

/// Publishes one Event on a Release, folded into a series with those of the same
/// reason (notes over 1000 bytes are cut), in the background.
pub(super) fn publish(ctx: &Ctx, r: &Release, type_: EventType, reason: &str, note: &str) {
    ctx.events.series(r.object_ref(&()), type_, reason, note);
}

#[cfg(test)]
mod tests {
    use super::published_as_event;
    use crate::api::environment::{EnvironmentSpec, EventKind};

    fn environment(sinks: &str) -> EnvironmentSpec {
        let sinks: serde_json::Value = serde_json::from_str(sinks).unwrap();
        serde_json::from_value(serde_json::json!({
            "backend": {"kubernetes": {"namespace": "apps"}},
            "notifications": sinks,
        }))
        .unwrap()
    }

    #[test]
    fn every_transition_is_an_event_unless_a_kubernetes_events_sink_chooses() {
        let all = [
            EventKind::DeployStarted,
            EventKind::Deployed,
            EventKind::Validated,
            EventKind::VerificationFailed,
            EventKind::RolledBack,
            EventKind::Failed,
        ];
        let none = environment("[]");
        let chat_only = environment(
            r#"[
            {"name": "chat", "events": ["RolledBack"], "webhook": {"url": {"file": "/u"}}}
        ]"#,
        );
        let every = environment(r#"[{"name": "events", "kubernetesEvents": {}}]"#);
        for kind in all {
            assert!(published_as_event(&none, kind), "{kind:?} with no sink");
            assert!(
                published_as_event(&chat_only, kind),
                "{kind:?}: another sink's filter does not choose the Events"
            );
            assert!(
                published_as_event(&every, kind),
                "{kind:?}: a sink with no filter"
            );
        }
        let failures = environment(
            r#"[
            {"name": "events", "kubernetesEvents": {}, "events": ["VerificationFailed", "RolledBack", "Failed"]}
        ]"#,
        );
        let chosen: Vec<EventKind> = all
            .into_iter()
            .filter(|k| published_as_event(&failures, *k))
            .collect();
        assert_eq!(
            chosen,
            [
                EventKind::VerificationFailed,
                EventKind::RolledBack,
                EventKind::Failed
            ]
        );
        let two = environment(
            r#"[
            {"name": "a", "kubernetesEvents": {}, "events": ["Deployed"]},
            {"name": "b", "kubernetesEvents": {}, "events": ["Failed"]}
        ]"#,
        );
        assert!(published_as_event(&two, EventKind::Deployed));
        assert!(published_as_event(&two, EventKind::Failed));
        assert!(!published_as_event(&two, EventKind::DeployStarted));
    }
}
