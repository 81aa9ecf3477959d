//! The ports of the pipeline, one small trait each. The real implementations live with
//! their mode (`standalone::ports`, `operator::ports`) or their subject
//! ([`crate::backend`], [`super::verdicts::Verdicts`], [`super::revisions::Git`]); the
//! in-memory fakes of the pipeline's tests are in `reconcile/fake.rs`.

use std::{collections::BTreeMap, future::Future};

use futures::{FutureExt, future::BoxFuture};
use jiff::Timestamp;

use super::{Error, Subject};
use crate::{
    api::{ReleaseStatus, Sha},
    backend::Probe,
    lifecycle::{CiVerdict, Notification, WorkloadObservation},
};

/// A Release's recorded status and history: the state file (`vigie run`) or the
/// Release's status subresource (`vigie controller`).
pub trait Store: Send + Sync {
    /// The status last recorded for the Release (the default when none is).
    fn status(&self, subject: &Subject<'_>) -> impl Future<Output = ReleaseStatus> + Send;

    /// Records `status`, durably, before anything acts on it.
    fn record(
        &self,
        subject: &Subject<'_>,
        status: &ReleaseStatus,
    ) -> impl Future<Output = Result<(), Error>> + Send;
}

/// The CI verdicts of a code location's SHAs: those stored (webhooks, earlier polls),
/// plus a poll of the provider for the SHA in flight when its turn has come.
pub trait Ci: Send + Sync {
    /// Every verdict known for the Release's code location, by SHA; `in_flight` is the
    /// SHA being verified, which may be polled for.
    fn verdicts(
        &self,
        subject: &Subject<'_>,
        in_flight: Option<&Sha>,
    ) -> impl Future<Output = BTreeMap<Sha, CiVerdict>> + Send;
}

/// Turns a revision (a branch, a tag, a full SHA) into a commit.
pub trait Revisions: Send + Sync {
    /// The commit `revision` names in `repo`, or why it cannot be known now.
    fn resolve(
        &self,
        repo: &str,
        revision: &str,
    ) -> impl Future<Output = Result<Sha, crate::git::GitError>> + Send;
}

/// Tells people what happened: notification sinks, Kubernetes Events.
pub trait Notifier: Send + Sync {
    /// The transitions `decide` made (already recorded).
    fn transitions(
        &self,
        subject: &Subject<'_>,
        notifications: &[Notification],
    ) -> impl Future<Output = ()> + Send;

    /// An action failed after its decision was recorded (the status says why).
    fn action_failed(
        &self,
        subject: &Subject<'_>,
        error: &Error,
    ) -> impl Future<Output = ()> + Send;
}

/// Shows each Release's deployments on the forge (GitHub, GitLab): the recorded status
/// is handed over after every reconcile and sent in the background, so that a slow or
/// failing forge never holds a deploy or a rollback.
pub trait Forge: Send + Sync {
    /// The status recorded for the subject; queued, never awaited.
    fn report(&self, subject: &Subject<'_>, status: &ReleaseStatus);
}

/// No forge to report to.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoForge;

impl Forge for NoForge {
    fn report(&self, _: &Subject<'_>, _: &ReleaseStatus) {}
}

/// Has an application server say whether what runs can be used: today the Dagster
/// webserver, which loads each code location's definitions ([`crate::dagster`]).
pub trait Definitions: Send + Sync {
    /// The observation with the server's judgement laid over it: a code location whose
    /// definitions fail to load is unhealthy.
    fn judge<'a>(
        &'a self,
        subject: &'a Subject<'a>,
        status: &'a ReleaseStatus,
        observed: WorkloadObservation,
        probe: Probe,
    ) -> BoxFuture<'a, WorkloadObservation>;

    /// Nothing runs `location` in `environment` any more (its Release was deleted or
    /// left the manifests): the server stops listing it.
    fn forget<'a>(
        &'a self,
        environment: &'a crate::api::EnvironmentSpec,
        location: &'a str,
    ) -> BoxFuture<'a, ()>;
}

/// Nothing judges definitions.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoDefinitions;

impl Definitions for NoDefinitions {
    fn judge<'a>(
        &'a self,
        _: &'a Subject<'a>,
        _: &'a ReleaseStatus,
        observed: WorkloadObservation,
        _: Probe,
    ) -> BoxFuture<'a, WorkloadObservation> {
        futures::future::ready(observed).boxed()
    }

    fn forget<'a>(&'a self, _: &'a crate::api::EnvironmentSpec, _: &'a str) -> BoxFuture<'a, ()> {
        futures::future::ready(()).boxed()
    }
}

/// The time, passed in: never read inside the rules.
pub trait Clock: Send + Sync {
    /// Now.
    fn now(&self) -> Timestamp;
}

/// The system clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }
}
