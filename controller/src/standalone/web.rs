//! The web view's ports in `vigie run`: the manifests in force and the state file are
//! what the pages show; decisions go through the same [`Desk`] as the control socket;
//! people log in with a token from a file (re-read at each login, so that a rotated
//! file applies at once).

use std::{path::PathBuf, sync::Arc};

use futures::{FutureExt as _, future::BoxFuture};
use tokio::sync::watch;

use super::desk::Desk;
use crate::{
    api::{Sha, release::QuarantineClearance},
    http::server::Shared,
    promote::{Ask, Done, Kind, Plan, PromoteError},
    web::{
        ports::{self, Named, Person, ReleaseView, Snapshot},
        session,
    },
};

/// What the pages read in `vigie run`.
pub struct Board {
    shared: Arc<Shared>,
    cache: PathBuf,
    auth: crate::ci::auth::Auth,
}

impl Board {
    /// The board of the shared state; commits are fetched into `cache/code`.
    #[must_use]
    pub fn new(shared: Arc<Shared>, cache: PathBuf) -> Self {
        Self {
            shared,
            cache,
            auth: crate::ci::auth::Auth::default(),
        }
    }

    /// Everything the pages show, from the manifests in force and the state.
    #[must_use]
    pub fn read(&self) -> Snapshot {
        let manifests = self.shared.manifests.read().ok().and_then(|m| m.clone());
        let state = self.shared.state.lock().expect("state lock");
        let mut snapshot = Snapshot::default();
        if let Some(m) = &manifests {
            snapshot.environments = m
                .environments
                .iter()
                .map(|((ns, name), e)| Named {
                    namespace: ns.clone(),
                    name: name.clone(),
                    spec: e.object.spec.clone(),
                })
                .collect();
            snapshot.locations = m
                .code_locations
                .iter()
                .map(|((ns, name), l)| Named {
                    namespace: ns.clone(),
                    name: name.clone(),
                    spec: l.object.spec.clone(),
                })
                .collect();
            snapshot.releases = m
                .releases
                .iter()
                .map(|((ns, name), r)| {
                    let key = crate::api::ReleaseKey::new(ns, name).to_string();
                    ReleaseView {
                        namespace: ns.clone(),
                        name: name.clone(),
                        location: r.object.spec.code_location.clone(),
                        environment: r.object.spec.environment.clone(),
                        revision: r.object.spec.revision.clone(),
                        status: state
                            .releases
                            .get(&key)
                            .map(|r| r.status.clone())
                            .unwrap_or_default(),
                    }
                })
                .collect();
        } else {
            snapshot
                .notices
                .push("no valid manifests are loaded yet".to_owned());
        }
        if !state.manifest_problems.is_empty() {
            snapshot.notices.push(format!(
                "the manifests are invalid; the last valid set keeps running ({} problem(s), see `vigie status`)",
                state.manifest_problems.len()
            ));
        }
        if let Some(e) = state.git_sync.as_ref().and_then(|g| g.error.as_ref()) {
            snapshot
                .notices
                .push(format!("the manifests' git source does not sync: {e}"));
        }
        snapshot
    }
}

impl ports::Board for Board {
    fn snapshot(&self) -> BoxFuture<'_, Result<Snapshot, String>> {
        let snapshot = self.read();
        async move { Ok(snapshot) }.boxed()
    }

    fn changes(&self) -> watch::Receiver<u64> {
        self.shared.changes.subscribe()
    }

    fn commits(
        &self,
        namespace: &str,
        location: &str,
        to: &Sha,
        from: Option<&Sha>,
    ) -> BoxFuture<'_, Result<(Vec<crate::git::Commit>, bool), String>> {
        let repo = self
            .shared
            .manifests
            .read()
            .ok()
            .and_then(|m| m.clone())
            .and_then(|m| {
                m.code_locations
                    .get(&(namespace.to_owned(), location.to_owned()))
                    .map(|l| l.object.spec.repo.clone())
            });
        let (to, from) = (to.clone(), from.cloned());
        let cache = self.cache.join("code");
        async move {
            let repo = repo.ok_or("the CodeLocation is not in the manifests")?;
            let creds = crate::gitops::repo::Credentials::resolve(
                repo.credentials.as_ref(),
                &self.auth,
                &crate::secrets::resolve,
            )
            .await;
            commits_between(cache, repo.url, creds, to, from).await
        }
        .boxed()
    }
}

/// The commits between two SHAs of a repository mirrored under `cache`, off the runtime.
pub(crate) async fn commits_between(
    cache: PathBuf,
    url: String,
    creds: crate::gitops::repo::Credentials,
    to: Sha,
    from: Option<Sha>,
) -> Result<(Vec<crate::git::Commit>, bool), String> {
    tokio::task::spawn_blocking(move || {
        crate::gitops::repo::commits_between(
            &cache,
            &url,
            &creds,
            &to,
            from.as_ref(),
            crate::promote::COMMITS_SHOWN,
        )
    })
    .await
    .map_err(|e| format!("listing the commits stopped: {e}"))?
    .map_err(|e| e.to_string())
}

impl ports::Desk for Desk {
    fn plan(&self, kind: Kind, _: &str, ask: &Ask) -> BoxFuture<'_, Result<Plan, PromoteError>> {
        let ask = ask.clone();
        async move { Desk::plan(self, kind, &ask).await }.boxed()
    }

    fn apply(
        &self,
        kind: Kind,
        _: &str,
        ask: &Ask,
        by: &str,
    ) -> BoxFuture<'_, Result<Done, PromoteError>> {
        let (ask, by) = (ask.clone(), by.to_owned());
        async move { self.decide(kind, ask, &by).await }.boxed()
    }

    fn clear_quarantine(
        &self,
        namespace: &str,
        release: &str,
        clearance: QuarantineClearance,
    ) -> BoxFuture<'_, Result<(), PromoteError>> {
        let key = format!("{namespace}/{release}");
        async move { Desk::clear_quarantine(self, &key, clearance).await }.boxed()
    }
}

/// The web view of `vigie run`, as its options say.
#[derive(Clone, Debug)]
pub struct Setup {
    /// Sessions, and the reverse proxy's header when trusted.
    pub options: crate::web::Options,
    /// Who may log in (`None`: only the proxy's header, or nobody).
    pub tokens: Option<TokenFile>,
}

/// The web view's routes over the shared state; commits are read from `cache/code`.
pub fn router(setup: Setup, shared: Arc<Shared>, cache: PathBuf) -> axum::Router {
    let board = Arc::new(Board::new(shared.clone(), cache.clone()));
    let desk = Arc::new(Desk::new(shared, cache));
    let gate = setup
        .tokens
        .map(|t| Arc::new(t) as Arc<dyn ports::Gatekeeper>);
    crate::web::router(crate::web::Web::new(board, desk, gate, setup.options))
}

/// People log in with a token from a file of `name:token` lines.
#[derive(Clone, Debug)]
pub struct TokenFile {
    path: PathBuf,
}

impl TokenFile {
    /// The token file at `path`, checked now so that a wrong file stops `vigie run` at
    /// start rather than at the first login.
    ///
    /// # Errors
    /// The file cannot be read or a line is wrong.
    pub fn new(path: PathBuf) -> Result<Self, String> {
        let file = Self { path };
        file.people()?;
        Ok(file)
    }

    fn people(&self) -> Result<Vec<(String, String)>, String> {
        let text = std::fs::read_to_string(&self.path)
            .map_err(|e| format!("web token file {}: {e}", self.path.display()))?;
        session::token_file(&text)
            .map_err(|e| format!("web token file {}: {e}", self.path.display()))
    }
}

impl ports::Gatekeeper for TokenFile {
    fn login(&self, token: String) -> BoxFuture<'_, Result<Person, String>> {
        let found = self.people().map(|people| {
            session::holder(&people, token.trim()).map(|name| Person {
                name: name.to_owned(),
                groups: Vec::new(),
                uid: None,
            })
        });
        async move {
            match found {
                Ok(Some(person)) => Ok(person),
                Ok(None) => Err("this token is not in the token file".to_owned()),
                Err(e) => {
                    tracing::error!(error = %e, "web login: the token file cannot be used");
                    Err("the token file cannot be read; see Vigie's log".to_owned())
                }
            }
        }
        .boxed()
    }

    fn may_change(&self, _: &Person, _: &str, _: &str) -> BoxFuture<'_, Result<(), String>> {
        // Everyone in the token file may act, as everyone with access to the control
        // socket may.
        async { Ok(()) }.boxed()
    }

    fn asks_for(&self) -> &'static str {
        "your token from Vigie's token file"
    }
}
