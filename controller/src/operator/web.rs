//! The web view's ports in `vigie controller`, served by every replica (leader and
//! standby): the pages read Environments, CodeLocations and Releases from watches of
//! the API server (started at the first page asked for, so that an operator nobody
//! looks at makes no extra watch); decisions are merge patches of the Release through
//! [`Cluster`], as `vigie promote --kubernetes` makes them, written as `vigie-web`; people
//! log in with a Kubernetes bearer token (a `TokenReview`), and what they may change is
//! what Kubernetes lets them patch (a `SubjectAccessReview` per action).

use std::{
    collections::BTreeMap,
    path::PathBuf,
    sync::{Arc, Mutex, OnceLock},
    time::Duration,
};

use futures::{FutureExt as _, StreamExt as _, future::BoxFuture};
use k8s_openapi::api::{
    authentication::v1::{TokenReview, TokenReviewSpec, TokenReviewStatus},
    authorization::v1::{
        ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec, SubjectAccessReviewStatus,
    },
};
use kube::{
    Api, Client, ResourceExt as _,
    api::PostParams,
    runtime::{
        WatchStreamExt as _,
        reflector::{self, ObjectRef, Store, store::Writer},
        watcher,
    },
};
use tokio::sync::watch;

use super::secrets::SecretCache;
use crate::{
    api::{CodeLocation, Environment, Release, Sha, release::QuarantineClearance},
    promote::{
        Ask, Done, Kind, Plan, PromoteError,
        kubernetes::{Cluster, WEB_FIELD_MANAGER},
    },
    web::ports::{self, Named, Person, ReleaseView, Snapshot},
};

/// How long a page waits for the watches' first list before it says the API server
/// has not answered.
pub const SYNC_WAIT: Duration = Duration::from_secs(5);

/// The web view's routes for the objects of `namespace` (all namespaces when `None`);
/// commits are fetched into `cache`, with the credentials `secrets` holds.
pub fn router(
    client: Client,
    namespace: Option<String>,
    secrets: SecretCache,
    cache: PathBuf,
    options: crate::web::Options,
) -> axum::Router {
    let board = Arc::new(Board::new(
        client.clone(),
        namespace.clone(),
        secrets,
        cache.clone(),
    ));
    let desk = Arc::new(Desk::new(client.clone(), namespace, cache));
    let gate = Arc::new(Gate::new(client));
    crate::web::router(crate::web::Web::new(board, desk, Some(gate), options))
}

/// What the pages read in `vigie controller`: the API server's objects, watched.
pub struct Board {
    client: Client,
    namespace: Option<String>,
    secrets: SecretCache,
    auth: crate::ci::auth::Auth,
    cache: PathBuf,
    changes: Arc<watch::Sender<u64>>,
    watches: OnceLock<Watches>,
    /// How long a page waits for the first list ([`SYNC_WAIT`]).
    sync_wait: Duration,
}

/// The three watches, once started, and what they are failing with.
struct Watches {
    environments: Store<Environment>,
    locations: Store<CodeLocation>,
    releases: Store<Release>,
    faults: Arc<Faults>,
    tasks: Vec<tokio::task::AbortHandle>,
}

impl Drop for Watches {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// The error each watch fails with, while it does (by kind).
#[derive(Default)]
struct Faults(Mutex<BTreeMap<&'static str, String>>);

impl Faults {
    fn set(&self, kind: &'static str, error: String) {
        if let Ok(mut f) = self.0.lock() {
            f.insert(kind, error);
        }
    }

    fn clear(&self, kind: &'static str) {
        if let Ok(mut f) = self.0.lock() {
            f.remove(kind);
        }
    }

    /// One sentence per failing watch.
    fn sentences(&self) -> Vec<String> {
        self.0
            .lock()
            .map(|f| {
                f.iter()
                    .map(|(kind, e)| format!("watching {kind}: {e}"))
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Board {
    /// The board of `namespace` (all when `None`); nothing is watched until a page
    /// asks.
    #[must_use]
    pub fn new(
        client: Client,
        namespace: Option<String>,
        secrets: SecretCache,
        cache: PathBuf,
    ) -> Self {
        Self {
            client,
            namespace,
            secrets,
            auth: crate::ci::auth::Auth::default(),
            cache,
            changes: Arc::new(watch::channel(0).0),
            watches: OnceLock::new(),
            sync_wait: SYNC_WAIT,
        }
    }

    /// The watches, started by the first call (within the runtime).
    fn watches(&self) -> &Watches {
        self.watches.get_or_init(|| {
            tracing::debug!(
                namespace = self.namespace.as_deref().unwrap_or("(all)"),
                "web: watching Environments, CodeLocations and Releases"
            );
            let faults = Arc::new(Faults::default());
            let (environments, env_writer) = reflector::store::<Environment>();
            let (locations, loc_writer) = reflector::store::<CodeLocation>();
            let (releases, rel_writer) = reflector::store::<Release>();
            let ns = self.namespace.as_deref();
            let tasks = vec![
                tokio::spawn(follow(
                    super::scoped(&self.client, ns),
                    env_writer,
                    "Environments",
                    faults.clone(),
                    self.changes.clone(),
                ))
                .abort_handle(),
                tokio::spawn(follow(
                    super::scoped(&self.client, ns),
                    loc_writer,
                    "CodeLocations",
                    faults.clone(),
                    self.changes.clone(),
                ))
                .abort_handle(),
                tokio::spawn(follow(
                    super::scoped(&self.client, ns),
                    rel_writer,
                    "Releases",
                    faults.clone(),
                    self.changes.clone(),
                ))
                .abort_handle(),
            ];
            Watches {
                environments,
                locations,
                releases,
                faults,
                tasks,
            }
        })
    }

    /// The watches once they have listed everything, waiting at most [`SYNC_WAIT`] (the
    /// API server's answer, if it gave one, says why not).
    async fn synced(&self) -> Result<&Watches, String> {
        let w = self.watches();
        let ready = async {
            futures::try_join!(
                w.environments.wait_until_ready(),
                w.locations.wait_until_ready(),
                w.releases.wait_until_ready(),
            )
        };
        match tokio::time::timeout(self.sync_wait, ready).await {
            Ok(Ok(_)) => Ok(w),
            Ok(Err(e)) => Err(format!("the watches of the API server stopped: {e}")),
            Err(_) => {
                let faults = w.faults.sentences();
                Err(format!(
                    "the API server has not answered yet: {}",
                    if faults.is_empty() {
                        format!(
                            "no answer to the watches within {} ms",
                            self.sync_wait.as_millis()
                        )
                    } else {
                        faults.join("; ")
                    }
                ))
            }
        }
    }
}

/// Keeps `writer`'s store in step with `api`; every change after the first list (and
/// every list again) ticks `changes`. Failures are kept in `faults` until the watch
/// answers again; the watch backs off and retries by itself.
async fn follow<K>(
    api: Api<K>,
    writer: Writer<K>,
    kind: &'static str,
    faults: Arc<Faults>,
    changes: Arc<watch::Sender<u64>>,
) where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let stream =
        reflector::reflector(writer, watcher(api, super::watch_config())).default_backoff();
    futures::pin_mut!(stream);
    while let Some(event) = stream.next().await {
        match event {
            Err(e) => {
                tracing::warn!(error = %e, kind, "web: watching");
                faults.set(kind, e.to_string());
            }
            Ok(watcher::Event::Init | watcher::Event::InitApply(_)) => faults.clear(kind),
            Ok(watcher::Event::InitDone | watcher::Event::Apply(_) | watcher::Event::Delete(_)) => {
                faults.clear(kind);
                changes.send_modify(|n| *n = n.wrapping_add(1));
            }
        }
    }
}

/// What the pages show, from the watched objects (sorted by namespace and name);
/// `faults` become notices (the page may be out of date).
fn snapshot(
    environments: &[Arc<Environment>],
    locations: &[Arc<CodeLocation>],
    releases: &[Arc<Release>],
    faults: Vec<String>,
) -> Snapshot {
    fn named<T: Clone>(object: &impl kube::Resource<DynamicType = ()>, spec: &T) -> Named<T> {
        Named {
            namespace: object.meta().namespace.clone().unwrap_or_default(),
            name: object.meta().name.clone().unwrap_or_default(),
            spec: spec.clone(),
        }
    }
    let mut snapshot = Snapshot {
        environments: environments.iter().map(|e| named(&**e, &e.spec)).collect(),
        locations: locations.iter().map(|l| named(&**l, &l.spec)).collect(),
        releases: releases
            .iter()
            .map(|r| ReleaseView {
                namespace: r.namespace().unwrap_or_default(),
                name: r.name_any(),
                location: r.spec.code_location.clone(),
                environment: r.spec.environment.clone(),
                revision: r.spec.revision.clone(),
                status: r.status.clone().unwrap_or_default(),
            })
            .collect(),
        notices: faults
            .into_iter()
            .map(|f| format!("{f}; what is shown may be out of date"))
            .collect(),
    };
    snapshot
        .environments
        .sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    snapshot
        .locations
        .sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    snapshot
        .releases
        .sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    snapshot
}

impl ports::Board for Board {
    fn snapshot(&self) -> BoxFuture<'_, Result<Snapshot, String>> {
        async move {
            let w = self.synced().await?;
            Ok(snapshot(
                &w.environments.state(),
                &w.locations.state(),
                &w.releases.state(),
                w.faults.sentences(),
            ))
        }
        .boxed()
    }

    fn changes(&self) -> watch::Receiver<u64> {
        // A live page is someone looking: the watches start, if no page did it yet.
        self.watches();
        self.changes.subscribe()
    }

    fn commits(
        &self,
        namespace: &str,
        location: &str,
        to: &Sha,
        from: Option<&Sha>,
    ) -> BoxFuture<'_, Result<(Vec<crate::git::Commit>, bool), String>> {
        let (ns, location) = (namespace.to_owned(), location.to_owned());
        let (to, from) = (to.clone(), from.cloned());
        async move {
            let w = self.synced().await?;
            let l = w
                .locations
                .get(&ObjectRef::new(&location).within(&ns))
                .ok_or_else(|| format!("no CodeLocation {ns}/{location} in the cluster"))?;
            // The Secrets the CodeLocations name are kept by every replica's cache.
            let creds = crate::gitops::repo::Credentials::resolve(
                l.spec.repo.credentials.as_ref(),
                &self.auth,
                &|s| self.secrets.get(&ns, s),
            )
            .await;
            crate::standalone::web::commits_between(
                self.cache.clone(),
                l.spec.repo.url.clone(),
                creds,
                to,
                from,
            )
            .await
        }
        .boxed()
    }
}

/// What people do from the pages: [`Cluster`]'s plans and patches, written as
/// [`WEB_FIELD_MANAGER`] in the name of the person logged in.
pub struct Desk {
    client: Client,
    namespace: Option<String>,
    cache: PathBuf,
}

impl Desk {
    /// The desk of `namespace` (all when `None`); commits are fetched into `cache`.
    #[must_use]
    pub fn new(client: Client, namespace: Option<String>, cache: PathBuf) -> Self {
        Self {
            client,
            namespace,
            cache,
        }
    }

    /// The namespace `ns`, refused when the controller does not watch it.
    fn cluster(&self, ns: &str) -> Result<Cluster, PromoteError> {
        if self
            .namespace
            .as_deref()
            .is_some_and(|watched| watched != ns)
        {
            return Err(PromoteError::NotFound(format!(
                "namespace {ns} is not the one this controller watches"
            )));
        }
        Ok(Cluster::new(self.client.clone(), ns).written_as(WEB_FIELD_MANAGER))
    }
}

impl ports::Desk for Desk {
    fn plan(
        &self,
        kind: Kind,
        namespace: &str,
        ask: &Ask,
    ) -> BoxFuture<'_, Result<Plan, PromoteError>> {
        let (cluster, ask) = (self.cluster(namespace), ask.clone());
        async move { cluster?.plan(kind, &ask, &self.cache).await }.boxed()
    }

    fn apply(
        &self,
        kind: Kind,
        namespace: &str,
        ask: &Ask,
        by: &str,
    ) -> BoxFuture<'_, Result<Done, PromoteError>> {
        let (cluster, ask, by) = (self.cluster(namespace), ask.clone(), by.to_owned());
        async move { cluster?.apply_as(kind, &ask, &by).await }.boxed()
    }

    fn clear_quarantine(
        &self,
        namespace: &str,
        release: &str,
        clearance: QuarantineClearance,
    ) -> BoxFuture<'_, Result<(), PromoteError>> {
        let (cluster, key) = (self.cluster(namespace), format!("{namespace}/{release}"));
        let release = release.to_owned();
        async move {
            let (sha, by) = (clearance.sha.clone(), clearance.by.clone());
            cluster?.clear_quarantine(&release, clearance).await?;
            tracing::info!(release = %key, sha = %sha, by = %by, "web: quarantine clearance recorded");
            Ok(())
        }
        .boxed()
    }
}

/// People log in with a Kubernetes bearer token, reviewed by the API server; what
/// they may change is what Kubernetes lets them patch.
pub struct Gate {
    client: Client,
}

impl Gate {
    /// Reviews tokens and access with `client` (the controller's own account, which
    /// may create `tokenreviews` and `subjectaccessreviews`).
    #[must_use]
    pub fn new(client: Client) -> Self {
        Self { client }
    }
}

/// The person a token review names, or why the token is refused (never the token).
fn person(status: Option<TokenReviewStatus>) -> Result<Person, String> {
    let status = status.ok_or("the API server gave no answer to the token review")?;
    if status.authenticated != Some(true) {
        return Err(match status.error.filter(|e| !e.is_empty()) {
            Some(e) => format!("Kubernetes does not accept this token: {e}"),
            None => "Kubernetes does not accept this token".to_owned(),
        });
    }
    let user = status.user.unwrap_or_default();
    let name = user
        .username
        .filter(|u| !u.is_empty())
        .ok_or("Kubernetes accepts this token but names no user")?;
    Ok(Person {
        name,
        groups: user.groups.unwrap_or_default(),
        uid: user.uid.filter(|u| !u.is_empty()),
    })
}

/// The question whether `person` may patch the Release `namespace/name`.
fn access_review(person: &Person, namespace: &str, name: &str) -> SubjectAccessReview {
    SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: Some(person.name.clone()),
            groups: Some(person.groups.clone()).filter(|g| !g.is_empty()),
            uid: person.uid.clone(),
            resource_attributes: Some(ResourceAttributes {
                group: Some("vigie.dev".into()),
                resource: Some("releases".into()),
                verb: Some("patch".into()),
                namespace: Some(namespace.to_owned()),
                name: Some(name.to_owned()),
                ..ResourceAttributes::default()
            }),
            ..SubjectAccessReviewSpec::default()
        },
        ..SubjectAccessReview::default()
    }
}

/// The answer of an access review: allowed, or a sentence saying who may not do what
/// and why.
fn verdict(
    status: Option<SubjectAccessReviewStatus>,
    user: &str,
    namespace: &str,
    name: &str,
) -> Result<(), String> {
    let status = status.unwrap_or_default();
    if status.allowed {
        return Ok(());
    }
    let why = [status.reason, status.evaluation_error]
        .into_iter()
        .flatten()
        .find(|w| !w.is_empty())
        .unwrap_or_else(|| "no Role or ClusterRole grants it".to_owned());
    Err(format!(
        "Kubernetes does not allow {user} to patch Release {namespace}/{name}: {why}"
    ))
}

impl ports::Gatekeeper for Gate {
    fn login(&self, token: String) -> BoxFuture<'_, Result<Person, String>> {
        async move {
            let review = TokenReview {
                spec: TokenReviewSpec {
                    token: Some(token),
                    audiences: None,
                },
                ..TokenReview::default()
            };
            let reviewed = Api::<TokenReview>::all(self.client.clone())
                .create(&PostParams::default(), &review)
                .await
                .map_err(|e| {
                    tracing::warn!(error = %e, "web login: the token review failed");
                    format!("the API server did not review the token: {e}")
                })?;
            person(reviewed.status)
        }
        .boxed()
    }

    fn may_change(
        &self,
        person: &Person,
        namespace: &str,
        release: &str,
    ) -> BoxFuture<'_, Result<(), String>> {
        let review = access_review(person, namespace, release);
        let (user, ns, name) = (
            person.name.clone(),
            namespace.to_owned(),
            release.to_owned(),
        );
        async move {
            let reviewed = Api::<SubjectAccessReview>::all(self.client.clone())
                .create(&PostParams::default(), &review)
                .await
                .map_err(|e| {
                    tracing::warn!(error = %e, "web: the access review failed");
                    format!(
                        "the API server did not review {user}'s access to Release {ns}/{name}: {e}"
                    )
                })?;
            verdict(reviewed.status, &user, &ns, &name)
        }
        .boxed()
    }

    fn asks_for(&self) -> &'static str {
        "a Kubernetes bearer token (`kubectl create token NAME`)"
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::authentication::v1::UserInfo;

    use super::*;

    fn release(ns: &str, name: &str, revision: &str) -> Arc<Release> {
        let mut r = Release::new(
            name,
            serde_json::from_value(serde_json::json!({
                "codeLocation": "web",
                "environment": "preprod",
                "revision": revision,
            }))
            .unwrap(),
        );
        r.metadata.namespace = Some(ns.into());
        Arc::new(r)
    }

    /// The watched objects come out sorted, with their namespace, and a failing watch
    /// says the page may be stale.
    #[test]
    fn a_snapshot_lists_the_watched_objects_in_order() {
        let releases = [
            release("b", "web-prod", "main"),
            release("a", "web-preprod", "v1"),
        ];
        let s = snapshot(&[], &[], &releases, vec!["watching Releases: gone".into()]);
        let keys: Vec<_> = s.releases.iter().map(ReleaseView::key).collect();
        assert_eq!(keys, ["a/web-preprod", "b/web-prod"]);
        assert_eq!(s.releases[0].revision.as_deref(), Some("v1"));
        assert_eq!(s.releases[0].location, "web");
        assert_eq!(
            s.notices,
            ["watching Releases: gone; what is shown may be out of date"]
        );
    }

    /// An API server that does not answer: the page says so, naming the cause, after a
    /// bounded wait; nothing was watched before the page asked.
    #[tokio::test]
    async fn a_board_whose_api_server_does_not_answer_says_why() {
        use ports::Board as _;
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", closed.local_addr().unwrap());
        drop(closed);
        let config = kube::Config::new(url.parse().unwrap());
        let mut board = Board::new(
            Client::try_from(config).unwrap(),
            Some("apps".into()),
            SecretCache::default(),
            std::env::temp_dir(),
        );
        board.sync_wait = Duration::from_millis(500);
        assert!(board.watches.get().is_none(), "nothing watched yet");
        let e = board.snapshot().await.unwrap_err();
        assert!(
            e.starts_with("the API server has not answered yet: watching "),
            "{e}"
        );
    }

    /// An authenticated token names the person, their groups and uid; a refused one
    /// says why, in the API server's words.
    #[test]
    fn a_token_review_names_the_person_or_says_why_not() {
        let ok = person(Some(TokenReviewStatus {
            authenticated: Some(true),
            user: Some(UserInfo {
                username: Some("system:serviceaccount:apps:deployer".into()),
                groups: Some(vec!["system:serviceaccounts".into()]),
                uid: Some("1234".into()),
                extra: None,
            }),
            ..TokenReviewStatus::default()
        }));
        assert_eq!(
            ok,
            Ok(Person {
                name: "system:serviceaccount:apps:deployer".into(),
                groups: vec!["system:serviceaccounts".into()],
                uid: Some("1234".into()),
            })
        );
        let refused = person(Some(TokenReviewStatus {
            authenticated: Some(false),
            error: Some("invalid bearer token".into()),
            ..TokenReviewStatus::default()
        }));
        assert_eq!(
            refused,
            Err("Kubernetes does not accept this token: invalid bearer token".into())
        );
        assert!(person(Some(TokenReviewStatus::default())).is_err());
        assert!(person(None).is_err());
        let nameless = person(Some(TokenReviewStatus {
            authenticated: Some(true),
            ..TokenReviewStatus::default()
        }));
        assert!(nameless.unwrap_err().contains("names no user"));
    }

    /// The access review asks exactly whether the person may patch this Release.
    #[test]
    fn the_access_review_asks_for_patch_on_the_release() {
        let p = Person {
            name: "alice".into(),
            groups: vec!["devs".into()],
            uid: None,
        };
        let review = serde_json::to_value(access_review(&p, "apps", "web-prod")).unwrap();
        assert_eq!(
            review["spec"],
            serde_json::json!({
                "user": "alice",
                "groups": ["devs"],
                "resourceAttributes": {
                    "group": "vigie.dev",
                    "resource": "releases",
                    "verb": "patch",
                    "namespace": "apps",
                    "name": "web-prod",
                },
            })
        );
    }

    /// A denial names the user, the Release and the reason, or says nothing grants it.
    #[test]
    fn a_denial_names_who_what_and_why() {
        let allowed = SubjectAccessReviewStatus {
            allowed: true,
            ..SubjectAccessReviewStatus::default()
        };
        assert_eq!(verdict(Some(allowed), "alice", "apps", "web"), Ok(()));
        assert_eq!(
            verdict(None, "alice", "apps", "web"),
            Err(
                "Kubernetes does not allow alice to patch Release apps/web: no Role or ClusterRole grants it"
                    .into()
            )
        );
        let reasoned = SubjectAccessReviewStatus {
            reason: Some("denied by policy".into()),
            ..SubjectAccessReviewStatus::default()
        };
        assert!(
            verdict(Some(reasoned), "alice", "apps", "web")
                .unwrap_err()
                .ends_with(": denied by policy")
        );
    }
}
