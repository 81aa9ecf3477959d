//! What the pipeline remembers between reconciles of a Release, in memory only:
//! nothing here is needed to resume after a restart (the status is), it only spares
//! the engine a second identical apply and tells a missing artifact from a failure.

use std::{collections::HashMap, sync::Mutex};

use super::ReleaseKey;
use crate::{
    api::Sha,
    backend::{BackendError, Workload},
    lifecycle::WorkloadTarget,
};

/// Per-Release memory of the last apply.
#[derive(Default)]
pub struct Memory {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// The target and workload last applied without error.
    applied: HashMap<ReleaseKey, (WorkloadTarget, Workload)>,
    /// The SHA whose artifact was missing at the last apply, and why.
    artifact_missing: HashMap<ReleaseKey, (Sha, String)>,
}

impl Memory {
    fn with<T>(&self, f: impl FnOnce(&mut Inner) -> T) -> T {
        let mut inner = self
            .inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut inner)
    }

    /// Why the artifact of `in_flight` was missing at the last attempt, if it was.
    #[must_use]
    pub fn artifact_pending(&self, key: &ReleaseKey, in_flight: Option<&Sha>) -> Option<String> {
        self.with(|m| {
            m.artifact_missing
                .get(key)
                .filter(|(sha, _)| Some(sha) == in_flight)
                .map(|(_, why)| why.clone())
        })
    }

    /// Whether `target` was applied to this very workload already.
    #[must_use]
    pub fn applied(&self, key: &ReleaseKey, target: &WorkloadTarget, workload: &Workload) -> bool {
        self.with(|m| {
            m.applied
                .get(key)
                .is_some_and(|(t, w)| t == target && w == workload)
        })
    }

    /// `target` was applied.
    pub fn remember_applied(&self, key: &ReleaseKey, target: &WorkloadTarget, workload: &Workload) {
        self.with(|m| {
            m.artifact_missing.remove(key);
            m.applied
                .insert(key.clone(), (target.clone(), workload.clone()));
        });
    }

    /// Applying `target` failed with `error`.
    pub fn forget_applied(&self, key: &ReleaseKey, target: &WorkloadTarget, error: &BackendError) {
        self.with(|m| {
            m.applied.remove(key);
            if error.is_missing_artifact() {
                m.artifact_missing
                    .insert(key.clone(), (target.sha.clone(), error.to_string()));
            }
        });
    }

    /// The Release is gone.
    pub fn forget(&self, key: &ReleaseKey) {
        self.with(|m| {
            m.applied.remove(key);
            m.artifact_missing.remove(key);
        });
    }
}
