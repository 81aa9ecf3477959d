//! The control socket of `vigie run`: a Unix socket (mode 0660) through which
//! `vigie promote` and `vigie rollback` ask the running Vigie for a plan, then record
//! a person's decision. Who asks is read from the socket's peer credentials (the OS
//! user), not from anything the client says. Decisions go to the state file (the
//! `requests` of the Release) before the answer, and wake the reconciler.

#![allow(
    clippy::result_large_err,
    reason = "the error is the HTTP answer itself, built once per request"
)]

use std::{
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    sync::Arc,
};

use axum::{
    Json, Router,
    extract::{ConnectInfo, Query, State as AxumState, connect_info},
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::get,
    serve::IncomingStream,
};
use jiff::Timestamp;
use serde_json::json;
use tokio::net::{UnixListener, UnixStream};

use crate::http::server::Shared;
use crate::store::Requests;
use crate::{
    api::ReleaseStatus,
    promote::{self, Ask, Done, Kind, Plan},
};

/// The default socket: `vigie.sock` beside the state file.
#[must_use]
pub fn default_socket(state: &Path) -> PathBuf {
    state.with_file_name("vigie.sock")
}

/// The OS user at the other end of the socket.
#[derive(Clone, Debug)]
pub struct Peer {
    /// The user name (or `uid N` when it has none).
    pub user: String,
}

impl connect_info::Connected<IncomingStream<'_, UnixListener>> for Peer {
    fn connect_info(stream: IncomingStream<'_, UnixListener>) -> Self {
        let user = stream
            .io()
            .peer_cred()
            .map_or_else(|_| "unknown".to_owned(), |cred| user_name(cred.uid()));
        Self { user }
    }
}

/// The name of user `uid` from `/etc/passwd`, else `uid N`.
#[must_use]
pub fn user_name(uid: u32) -> String {
    std::fs::read_to_string("/etc/passwd")
        .ok()
        .and_then(|passwd| {
            passwd.lines().find_map(|line| {
                let mut fields = line.split(':');
                let name = fields.next()?;
                let id = fields.nth(1)?;
                (id.parse::<u32>().ok()? == uid).then(|| name.to_owned())
            })
        })
        .unwrap_or_else(|| format!("uid {uid}"))
}

/// Binds the socket (replacing a stale one), mode 0660, and serves it.
///
/// # Errors
/// The socket cannot be created.
pub async fn serve(path: &Path, shared: Arc<Shared>, cache: PathBuf) -> std::io::Result<()> {
    if path.exists() {
        if UnixStream::connect(path).await.is_ok() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AddrInUse,
                format!("{} is in use by another vigie", path.display()),
            ));
        }
        std::fs::remove_file(path)?;
    }
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))?;
    let app = Router::new()
        .route("/v1/promote", get(promote_plan).post(promote_apply))
        .route("/v1/rollback", get(rollback_plan).post(rollback_apply))
        .with_state(Arc::new(Control {
            shared,
            cache,
            auth: crate::ci::auth::Auth::default(),
        }));
    tokio::spawn(async move {
        let service = app.into_make_service_with_connect_info::<Peer>();
        if let Err(e) = axum::serve(listener, service).await {
            tracing::error!(error = %e, "control socket stopped");
        }
    });
    Ok(())
}

struct Control {
    shared: Arc<Shared>,
    cache: PathBuf,
    /// Credentials of the repositories whose commits a plan lists (a GitHub App's
    /// installation tokens, kept between requests).
    auth: crate::ci::auth::Auth,
}

fn refuse(status: StatusCode, error: impl Into<String>) -> Response {
    (status, Json(json!({ "error": error.into() }))).into_response()
}

/// The Release of `location` in `environment`, its key, and the facts a plan needs.
struct Found {
    key: String,
    over: Option<String>,
    env: crate::api::environment::EnvironmentSpec,
    repo: (String, Option<crate::api::code_location::GitCredentials>),
    target: Option<ReleaseStatus>,
    upstream: Option<ReleaseStatus>,
}

impl Control {
    fn find(&self, ask: &Ask) -> Result<Found, Response> {
        let manifests = self
            .shared
            .manifests
            .read()
            .ok()
            .and_then(|m| m.clone())
            .ok_or_else(|| {
                refuse(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "no valid manifests are loaded yet",
                )
            })?;
        let ((ns, name), release) = manifests
            .releases
            .iter()
            .find(|(_, r)| {
                r.object.spec.code_location == ask.location
                    && r.object.spec.environment == ask.environment
            })
            .ok_or_else(|| {
                refuse(
                    StatusCode::NOT_FOUND,
                    format!(
                        "no Release of {} in {} in the manifests",
                        ask.location, ask.environment
                    ),
                )
            })?;
        let env = manifests
            .environments
            .get(&(ns.clone(), ask.environment.clone()))
            .map(|e| e.object.spec.clone())
            .ok_or_else(|| {
                refuse(
                    StatusCode::NOT_FOUND,
                    format!("no Environment {}", ask.environment),
                )
            })?;
        let location = manifests
            .code_locations
            .get(&(ns.clone(), ask.location.clone()))
            .ok_or_else(|| {
                refuse(
                    StatusCode::NOT_FOUND,
                    format!("no CodeLocation {}", ask.location),
                )
            })?;
        let repo = (
            location.object.spec.repo.url.clone(),
            location.object.spec.repo.credentials.clone(),
        );
        let key = crate::api::ReleaseKey::new(ns.clone(), name.clone()).to_string();
        let state = self.shared.state.lock().expect("state lock");
        let target = state.releases.get(&key).map(|r| r.status.clone());
        let upstream = env.promotion.as_ref().and_then(|p| {
            state
                .releases
                .values()
                .find(|r| r.environment == p.from && r.code_location == ask.location)
                .map(|r| r.status.clone())
        });
        Ok(Found {
            key,
            over: release.object.spec.revision.clone(),
            env,
            repo,
            target,
            upstream,
        })
    }

    /// The plan of `kind`, with its commits when `commits` (an error listing them is shown, not fatal).
    async fn plan(
        &self,
        kind: Kind,
        ask: &Ask,
        found: &Found,
        commits: bool,
    ) -> Result<Plan, Response> {
        let mut plan = promote::check(
            kind,
            ask,
            &found.env,
            found.upstream.as_ref(),
            found.target.as_ref(),
        )
        .map_err(|e| refuse(StatusCode::CONFLICT, e.to_string()))?;
        if commits {
            let (url, spec) = found.repo.clone();
            let creds = crate::gitops::repo::Credentials::resolve(
                spec.as_ref(),
                &self.auth,
                &crate::secrets::resolve,
            )
            .await;
            if let Err(e) =
                promote::fill_commits(&mut plan, kind, self.cache.join("code"), url, creds).await
            {
                plan.commits_error = Some(e.to_string());
            }
        }
        Ok(plan)
    }

    /// Records a person's request for a Release, then wakes the reconciler.
    async fn record(&self, key: &str, requests: Requests) -> Result<(), Response> {
        self.shared
            .update(|next| next.requests.insert(key.to_owned(), requests))
            .await
            .map_err(|e| {
                refuse(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("not recorded: {e}"),
                )
            })?;
        self.shared.wake.notify_one();
        Ok(())
    }
}

async fn promote_plan(c: AxumState<Arc<Control>>, ask: Query<Ask>) -> Response {
    show(c, Kind::Promote, ask).await
}

async fn rollback_plan(c: AxumState<Arc<Control>>, ask: Query<Ask>) -> Response {
    show(c, Kind::Rollback, ask).await
}

async fn promote_apply(
    c: AxumState<Arc<Control>>,
    peer: ConnectInfo<Peer>,
    ask: Json<Ask>,
) -> Response {
    decide(c, Kind::Promote, peer, ask).await
}

async fn rollback_apply(
    c: AxumState<Arc<Control>>,
    peer: ConnectInfo<Peer>,
    ask: Json<Ask>,
) -> Response {
    decide(c, Kind::Rollback, peer, ask).await
}

/// The plan a person reads before confirming.
async fn show(
    AxumState(c): AxumState<Arc<Control>>,
    kind: Kind,
    Query(ask): Query<Ask>,
) -> Response {
    let found = match c.find(&ask) {
        Ok(f) => f,
        Err(r) => return r,
    };
    match c.plan(kind, &ask, &found, true).await {
        Ok(plan) => Json(plan).into_response(),
        Err(r) => r,
    }
}

/// Records a person's confirmed decision, planned again first (the statuses may have
/// moved while they read).
async fn decide(
    AxumState(c): AxumState<Arc<Control>>,
    kind: Kind,
    ConnectInfo(peer): ConnectInfo<Peer>,
    Json(ask): Json<Ask>,
) -> Response {
    let found = match c.find(&ask) {
        Ok(f) => f,
        Err(r) => return r,
    };
    let plan = match c.plan(kind, &ask, &found, false).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    let at = Timestamp::now();
    let mut requests = Requests {
        revision: plan.sha.clone(),
        at,
        over: found.over.clone(),
        approval: None,
        break_glass: None,
        rollback: None,
    };
    match kind {
        Kind::Promote => {
            let p = promote::promotion(&plan, &peer.user, ask.reason, ask.break_glass, at);
            requests.approval = Some(p.approval);
            requests.break_glass = p.break_glass;
        }
        Kind::Rollback => {
            requests.rollback = Some(promote::rollback(&plan, &peer.user, ask.reason, at));
        }
    }
    tracing::info!(
        release = %found.key, sha = %plan.sha, by = %peer.user, ?kind,
        break_glass = requests.break_glass.is_some(), "decision recorded"
    );
    if let Err(r) = c.record(&found.key, requests).await {
        return r;
    }
    Json(Done {
        release: found.key,
        sha: plan.sha,
        by: peer.user,
        at,
    })
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_are_named_from_passwd() {
        assert_eq!(user_name(0), "root");
        assert_eq!(user_name(4_000_000_000), "uid 4000000000");
    }
}
