//! The control socket of `vigie run`: a Unix socket (mode 0660) through which
//! `vigie promote` and `vigie rollback` ask the running Vigie for a plan, then record
//! a person's decision. Who asks is read from the socket's peer credentials (the OS
//! user), not from anything the client says. Decisions go to the state file (the
//! `requests` of the Release) before the answer, and wake the reconciler.

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
use serde_json::json;
use tokio::net::{UnixListener, UnixStream};

use crate::http::server::Shared;
use crate::promote::{Ask, Done, Kind, Plan, PromoteError};

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
            desk: super::desk::Desk::new(shared, cache),
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
    desk: super::desk::Desk,
}

fn refuse(status: StatusCode, error: impl Into<String>) -> Response {
    (status, Json(json!({ "error": error.into() }))).into_response()
}

/// The answer to a refused or failed decision.
fn refusal(e: &PromoteError) -> Response {
    let status = match e {
        PromoteError::Refused(_) => StatusCode::CONFLICT,
        PromoteError::NotFound(_) => StatusCode::NOT_FOUND,
        PromoteError::NotReady(_) => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    refuse(status, e.to_string())
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
    match c.desk.plan(kind, &ask).await {
        Ok(plan) => Json::<Plan>(plan).into_response(),
        Err(e) => refusal(&e),
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
    match c.desk.decide(kind, ask, &peer.user).await {
        Ok(done) => Json::<Done>(done).into_response(),
        Err(e) => refusal(&e),
    }
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
