//! The pipeline's ports in `vigie run`: the state file as the [`Store`] and the
//! verdict store, the Environments' notification sinks as the [`Notifier`].

use std::collections::BTreeMap;

use jiff::Timestamp;

use super::state::ReleaseRecord;
use crate::http::server::Shared;
use crate::{
    api::{ReleaseStatus, SecretSource, Sha},
    error::Category,
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
    ) -> Result<(), String> {
        let stored = crate::ci::StoredVerdict::new(verdict.clone(), Timestamp::now());
        self.0
            .update(|next| {
                next.verdicts
                    .record(&subject.spec.code_location, sha.clone(), stored)
            })
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    fn secret(&self, _: &Subject<'_>, source: &SecretSource) -> Result<Vec<u8>, String> {
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
}

impl Notifier for Sinks<'_> {
    async fn transitions(&self, subject: &Subject<'_>, notifications: &[Notification]) {
        let Some(dispatcher) = self.dispatcher else {
            return;
        };
        let sinks = &subject.environment.notifications;
        if sinks.is_empty() {
            return;
        }
        let ns = &subject.key.namespace;
        let repo = self
            .manifests
            .code_locations
            .get(&(ns.clone(), subject.spec.code_location.clone()))
            .map(|l| {
                let spec = &l.object.spec.repo;
                (
                    spec.url.clone(),
                    crate::gitops::repo::Credentials::from_spec(
                        spec.credentials.as_ref(),
                        crate::secrets::resolve,
                    ),
                )
            });
        for n in notifications {
            dispatcher.send(crate::notify::deliver::Job {
                namespace: ns.clone(),
                sinks: sinks.clone(),
                message: crate::notify::Message::of(
                    n,
                    &subject.spec.environment,
                    &subject.spec.code_location,
                    subject.key.to_string(),
                ),
                repo: repo.clone(),
            });
        }
    }

    async fn action_failed(&self, _: &Subject<'_>, _: &Error) {
        // The status says why and the pipeline logs it; no sink is told of a retry.
    }
}
