//! HTTP of `vigie run`: `/healthz`, `/readyz`, `/metrics` and the signed CI webhook
//! `/hooks/ci`. A delivery is verified before it is parsed, recorded in the state
//! file before it is acknowledged, and wakes the reconciler.

use std::{
    collections::BTreeSet,
    path::PathBuf,
    sync::{
        Arc, Mutex, RwLock,
        atomic::{AtomicBool, Ordering},
    },
};

use axum::{
    Json, Router,
    body::Bytes,
    extract::{DefaultBodyLimit, State as AxumState},
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use jiff::Timestamp;
use serde_json::json;
use sha2::{Digest, Sha256};
use tokio::sync::Notify;

use super::state::{self, State};
use crate::{
    ci::{
        StoredVerdict,
        webhook::{self, MAX_BODY, SIGNATURE_HEADER, WebhookError},
    },
    metrics::{Metrics, OutcomeLabel},
};

/// What the server and the reconciler share.
pub struct Shared {
    /// The authoritative state; the file is rewritten from it under this lock.
    pub state: Mutex<State>,
    /// Where the state is saved.
    pub state_path: PathBuf,
    /// The HMAC key of `/hooks/ci`; deliveries are refused without one.
    pub secret: Option<Vec<u8>>,
    /// Wakes the reconciler early (a verdict arrived).
    pub wake: Notify,
    /// Metrics.
    pub metrics: Metrics,
    /// Set once manifests are loaded and a first round is done.
    pub ready: AtomicBool,
    /// Code locations of the current manifests.
    pub locations: RwLock<BTreeSet<String>>,
}

impl Shared {
    /// A fresh shared state.
    #[must_use]
    pub fn new(state: State, state_path: PathBuf, secret: Option<Vec<u8>>) -> Self {
        Self {
            state: Mutex::new(state),
            state_path,
            secret,
            wake: Notify::new(),
            metrics: Metrics::default(),
            ready: AtomicBool::new(false),
            locations: RwLock::new(BTreeSet::new()),
        }
    }
}

/// The router.
pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/hooks/ci", post(ci_hook))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(shared)
}

async fn readyz(AxumState(shared): AxumState<Arc<Shared>>) -> Response {
    if shared.ready.load(Ordering::Relaxed) {
        "ready\n".into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: manifests not loaded or first round not done\n",
        )
            .into_response()
    }
}

async fn metrics(AxumState(shared): AxumState<Arc<Shared>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        shared.metrics.render(),
    )
        .into_response()
}

fn reply(
    shared: &Shared,
    outcome: &'static str,
    status: StatusCode,
    message: impl Into<String>,
) -> Response {
    shared
        .metrics
        .webhooks
        .get_or_create(&OutcomeLabel { outcome })
        .inc();
    (
        status,
        Json(json!({ "outcome": outcome, "message": message.into() })),
    )
        .into_response()
}

async fn ci_hook(
    AxumState(shared): AxumState<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(secret) = shared.secret.as_deref() else {
        return reply(
            &shared,
            "error",
            StatusCode::SERVICE_UNAVAILABLE,
            "no webhook secret is configured",
        );
    };
    let signature = headers.get(SIGNATURE_HEADER).and_then(|v| v.to_str().ok());
    if let Err(e) = webhook::verify(secret, &body, signature) {
        tracing::warn!(error = %e, "refused a CI webhook delivery");
        return reply(
            &shared,
            "unauthorized",
            StatusCode::UNAUTHORIZED,
            e.to_string(),
        );
    }
    let report = match webhook::parse(&body) {
        Ok(r) => r,
        Err(WebhookError::InvalidBody(e)) => {
            return reply(&shared, "bad_request", StatusCode::BAD_REQUEST, e);
        }
        Err(e) => {
            return reply(
                &shared,
                "bad_request",
                StatusCode::BAD_REQUEST,
                e.to_string(),
            );
        }
    };
    if let Err(e) = webhook::check_fresh(&report, Timestamp::now()) {
        return reply(&shared, "stale", StatusCode::BAD_REQUEST, e.to_string());
    }
    let known = shared
        .locations
        .read()
        .is_ok_and(|l| l.contains(&report.code_location));
    if !known {
        return reply(
            &shared,
            "unknown_location",
            StatusCode::NOT_FOUND,
            format!(
                "no CodeLocation {:?} in the manifests",
                report.code_location
            ),
        );
    }
    let result = record_verdict(&shared, &report, &body);
    match result {
        Ok(true) => {
            tracing::info!(
                code_location = %report.code_location,
                sha = %report.sha.short(),
                state = ?report.state,
                "CI verdict received"
            );
            shared.wake.notify_one();
            reply(
                &shared,
                "accepted",
                StatusCode::ACCEPTED,
                format!("verdict for {} recorded", report.sha.short()),
            )
        }
        Ok(false) => reply(
            &shared,
            "duplicate",
            StatusCode::CONFLICT,
            "this delivery was already received",
        ),
        Err(e) => {
            tracing::error!(error = %e, "failed to record a CI verdict");
            reply(
                &shared,
                "error",
                StatusCode::INTERNAL_SERVER_ERROR,
                "failed to record the verdict",
            )
        }
    }
}

/// Records a verified verdict in the state file; `Ok(false)` for a replayed delivery.
fn record_verdict(
    shared: &Shared,
    report: &webhook::Report,
    body: &[u8],
) -> Result<bool, state::StateError> {
    let digest = hex::encode(Sha256::digest(body));
    let mut current = shared.state.lock().expect("state lock");
    let mut next = current.clone();
    if !next.remember_delivery(digest) {
        return Ok(false);
    }
    let verdict = StoredVerdict {
        state: report.state.into(),
        url: report.url.clone(),
        failed_checks: report.failed_checks.clone(),
        description: report.description.clone(),
        at: Timestamp::now(),
    };
    next.verdicts
        .record(&report.code_location, report.sha.clone(), verdict);
    // Saved before it is acknowledged: a crash after the 202 loses nothing.
    state::save(&shared.state_path, &next)?;
    *current = next;
    Ok(true)
}
