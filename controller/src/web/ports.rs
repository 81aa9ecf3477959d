//! What the web view reads and does, one small port each, with a real implementation
//! per mode: the state file and the manifests (`standalone::web`), the API server's
//! objects and reviews (`operator::web`). The pages never touch either directly.

use futures::future::BoxFuture;
use tokio::sync::watch;

use crate::{
    api::{CodeLocationSpec, EnvironmentSpec, ReleaseStatus, Sha, release::QuarantineClearance},
    promote::{Ask, Done, Kind, Plan, PromoteError},
};

/// Everything the pages show, read at once.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    /// Every Environment.
    pub environments: Vec<Named<EnvironmentSpec>>,
    /// Every CodeLocation.
    pub locations: Vec<Named<CodeLocationSpec>>,
    /// Every Release, with its recorded status.
    pub releases: Vec<ReleaseView>,
    /// What stops the page from being the whole truth (invalid manifests, a git source
    /// that does not sync), one sentence each.
    pub notices: Vec<String>,
}

/// A namespaced object's name and spec.
#[derive(Clone, Debug)]
pub struct Named<T> {
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// Its spec.
    pub spec: T,
}

/// A Release as the pages show it.
#[derive(Clone, Debug, Default)]
pub struct ReleaseView {
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// Its CodeLocation.
    pub location: String,
    /// Its Environment.
    pub environment: String,
    /// The revision asked for (`spec.revision`, or what a tracking rule or a person set).
    pub revision: Option<String>,
    /// Its recorded status.
    pub status: ReleaseStatus,
}

impl ReleaseView {
    /// `namespace/name`.
    #[must_use]
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// Reads what the pages show, and says when it changed.
pub trait Board: Send + Sync {
    /// Everything, now; an error when the source cannot be read (shown as a banner).
    fn snapshot(&self) -> BoxFuture<'_, Result<Snapshot, String>>;

    /// Ticks at every change of what [`Board::snapshot`] returns (live pages follow it).
    fn changes(&self) -> watch::Receiver<u64>;

    /// The commits between `from` (excluded) and `to`, newest first, bounded; for the
    /// Release page. `Err` says why they cannot be listed.
    fn commits(
        &self,
        namespace: &str,
        location: &str,
        to: &Sha,
        from: Option<&Sha>,
    ) -> BoxFuture<'_, Result<(Vec<crate::git::Commit>, bool), String>>;
}

/// What a person does from the pages: the same rules and records as `vigie promote`
/// and `vigie rollback`.
pub trait Desk: Send + Sync {
    /// The plan shown before a person confirms (with the commits).
    fn plan(
        &self,
        kind: Kind,
        namespace: &str,
        ask: &Ask,
    ) -> BoxFuture<'_, Result<Plan, PromoteError>>;

    /// Records the confirmed decision of `by`, planned again first.
    fn apply(
        &self,
        kind: Kind,
        namespace: &str,
        ask: &Ask,
        by: &str,
    ) -> BoxFuture<'_, Result<Done, PromoteError>>;

    /// Records a person's clearance of a quarantined SHA on a Release.
    fn clear_quarantine(
        &self,
        namespace: &str,
        release: &str,
        clearance: QuarantineClearance,
    ) -> BoxFuture<'_, Result<(), PromoteError>>;
}

/// A person the pages know.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Person {
    /// The name recorded with what they do.
    pub name: String,
    /// Their groups (Kubernetes), for the access reviews.
    pub groups: Vec<String>,
    /// Their uid (Kubernetes), for the access reviews.
    pub uid: Option<String>,
}

/// Who may log in and what they may change.
pub trait Gatekeeper: Send + Sync {
    /// The person a login token names; `Err` says why it is refused (never echoing it).
    fn login(&self, token: String) -> BoxFuture<'_, Result<Person, String>>;

    /// Whether `person` may change the Release `namespace/name`; `Err` says why not.
    fn may_change(
        &self,
        person: &Person,
        namespace: &str,
        release: &str,
    ) -> BoxFuture<'_, Result<(), String>>;

    /// What the login form asks for ("a token from the token file", "a Kubernetes
    /// bearer token").
    fn asks_for(&self) -> &'static str;
}
