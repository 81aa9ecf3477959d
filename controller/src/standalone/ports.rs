//! The pipeline's ports in `vigie run`: the state file as the [`Store`] and the
//! verdict store, the Environments' notification sinks as the [`Notifier`].

use std::collections::BTreeMap;

use jiff::Timestamp;

use crate::http::server::Shared;
use crate::store::{ReleaseRecord, Tracked};
use crate::{
    api::{ReleaseStatus, SecretSource, Sha},
    error::Category,
    gitops::{
        track::Refusal,
        tracking::{Bound, Tracking},
    },
    lifecycle::{CiVerdict, Notification},
    manifest::Manifests,
    reconcile::{Error, Notifier, Store, Subject, verdicts::VerdictStore},
};

/// The state file: each Release's record under its `namespace/name` key.
pub struct StateStore<'a>(pub &'a Shared);

impl Store for StateStore<'_> {
    async fn status(&self, subject: &Subject<'_>) -> ReleaseStatus {
        let state = self.0.state.lock().expect("state lock");
        state
            .releases
            .get(&subject.key.to_string())
            .map(|r| r.status.clone())
            .unwrap_or_default()
    }

    async fn record(&self, subject: &Subject<'_>, status: &ReleaseStatus) -> Result<(), Error> {
        let record = ReleaseRecord {
            code_location: subject.spec.code_location.clone(),
            environment: subject.spec.environment.clone(),
            status: status.clone(),
            removed_at: None,
        };
        self.0
            .update(|next| next.releases.insert(subject.key.to_string(), record))
            .await
            .map(|_| ())
            .map_err(|e| Error::Record {
                category: Category::Store,
                source: Box::new(e),
            })
    }
}

/// Verdicts kept in the state file, by code location name.
pub struct StateVerdicts<'a>(pub &'a Shared);

impl VerdictStore for StateVerdicts<'_> {
    fn stored(&self, subject: &Subject<'_>) -> BTreeMap<Sha, CiVerdict> {
        self.0
            .state
            .lock()
            .expect("state lock")
            .verdicts
            .for_location(&subject.spec.code_location)
    }

    async fn record(
        &self,
        subject: &Subject<'_>,
        sha: &Sha,
        verdict: &CiVerdict,
    ) -> Result<(), crate::error::RecordError> {
        let stored = crate::ci::StoredVerdict::new(
            verdict.clone(),
            Timestamp::now(),
            crate::ci::VerdictVia::Poll,
        );
        self.0
            .update(|next| {
                next.verdicts
                    .record(&subject.spec.code_location, sha.clone(), stored)
            })
            .await
            .map(|_| ())
            .map_err(crate::error::RecordError::store)
    }

    fn delivered_at(&self, subject: &Subject<'_>, sha: &Sha) -> Option<Timestamp> {
        self.0
            .state
            .lock()
            .expect("state lock")
            .verdicts
            .delivered_at(&subject.spec.code_location, sha)
    }

    fn secret(
        &self,
        _: &Subject<'_>,
        source: &SecretSource,
    ) -> Result<Vec<u8>, crate::secrets::SecretError> {
        crate::secrets::resolve(source)
    }
}

/// The Environment's notification sinks, with commit subjects from the code
/// location's repository.
pub struct Sinks<'a> {
    /// The background sender (none in unit tests without a runtime).
    pub dispatcher: Option<&'a crate::notify::deliver::Dispatcher>,
    /// The manifests in force.
    pub manifests: &'a Manifests,
    /// The process's credentials (a GitHub App's installation tokens).
    pub auth: &'a crate::ci::auth::Auth,
}

impl Notifier for Sinks<'_> {
    async fn transitions(&self, subject: &Subject<'_>, notifications: &[Notification]) {
        let Some(dispatcher) = self.dispatcher else {
            return;
        };
        let key = (
            subject.key.namespace.clone(),
            subject.spec.code_location.clone(),
        );
        // The credentials (an App's token may need a request) only when a sink is told.
        let repo = match self.manifests.code_locations.get(&key) {
            Some(l) if !subject.environment.notifications.is_empty() => {
                let spec = &l.object.spec.repo;
                let creds = crate::gitops::repo::Credentials::resolve(
                    spec.credentials.as_ref(),
                    self.auth,
                    &crate::secrets::resolve,
                )
                .await;
                Some((spec.url.clone(), creds))
            }
            _ => None,
        };
        crate::reconcile::send_to_sinks(dispatcher, subject, notifications, || repo);
    }

    async fn action_failed(&self, _: &Subject<'_>, _: &Error) {
        // The status says why and the pipeline logs it; no sink is told of a retry.
    }
}

/// Tracking in `vigie run`: a move is kept in the state over the manifest (or, with
/// write-back, committed to git and shown in `vigie status`); a refusal is kept for
/// `vigie status`.
pub struct StateTracking<'a>(pub &'a Shared);

impl Tracking for StateTracking<'_> {
    async fn move_to(
        &self,
        release: &Bound,
        sha: &Sha,
        reference: &str,
    ) -> Result<(), crate::error::RecordError> {
        let now = Timestamp::now();
        let tracked = Tracked {
            sha: Some(sha.clone()),
            reference: Some(reference.to_owned()),
            at: Some(now),
            refused: None,
        };
        self.0
            .update(|next| next.tracked.insert(release.key.to_string(), tracked))
            .await
            .map(|_| ())
            .map_err(crate::error::RecordError::store)
    }

    async fn report(&self, release: &Bound, _: Refusal, reason: &str) {
        let recorded = self
            .0
            .update(|next| {
                next.tracked
                    .entry(release.key.to_string())
                    .or_default()
                    .refused = Some(reason.to_owned());
            })
            .await;
        if let Err(e) = recorded {
            tracing::error!(error = %e, "failed to record a tracking refusal");
        }
    }

    async fn written_back(
        &self,
        release: &Bound,
        sha: &Sha,
        reference: &str,
        outcome: Result<String, crate::gitops::writeback::WriteBackError>,
    ) {
        let now = Timestamp::now();
        let (line, refused) = match outcome {
            Ok(how) => (
                format!("{} → {} ({reference}): {how}", release.key, sha.short()),
                None,
            ),
            Err(e) => (
                format!("{} → {} failed: {e}", release.key, sha.short()),
                Some(format!("not written back: {e}")),
            ),
        };
        let recorded = self
            .0
            .update(|next| {
                next.git_sync.get_or_insert_default().write_back = Some(format!("{line} ({now})"));
                // What the status shows for the Release: the ref followed, or why not.
                let entry = next.tracked.entry(release.key.to_string()).or_default();
                entry.reference = Some(reference.to_owned());
                entry.refused = refused;
            })
            .await;
        if let Err(e) = recorded {
            tracing::error!(error = %e, "failed to record a write-back");
        }
    }
}
