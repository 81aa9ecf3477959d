//! The web view, served by both modes on the port of `/metrics` and `/hooks`: the grid
//! of code locations × environments (`/`), a page per Release
//! (`/releases/{namespace}/{name}`) with its timeline, and the actions a logged-in
//! person takes (promote with `DEPLOY` typed, roll back with `ROLLBACK`, clear a
//! quarantine). Pages are rendered on the server; `/events` (server-sent events) tells
//! open pages that something changed, and they fetch their live part again.
//!
//! What the pages read, do and whom they let in are ports ([`ports`]), implemented by
//! each mode. Every response carries a strict Content-Security-Policy; every form
//! carries a CSRF token bound to the session; assets are compiled into the binary.

pub mod chart;
pub mod grid;
pub mod page;
pub mod ports;
pub mod session;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{
    Form, Router,
    extract::{DefaultBodyLimit, Path, Query, Request, State},
    http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header},
    middleware::{self, Next},
    response::{IntoResponse, Redirect, Response},
    routing::{get, post},
};
use futures::StreamExt as _;
use jiff::Timestamp;
use serde::Deserialize;
use tokio::sync::{Semaphore, watch};

use self::{
    page::Viewer,
    ports::{Board, Desk, Gatekeeper, Person, ReleaseView, Snapshot},
    session::{Binding, Key},
};
use crate::{
    api::{Sha, release::QuarantineClearance},
    promote::{Ask, Kind, PromoteError},
};

/// The Content-Security-Policy of every page: nothing but this origin's own script,
/// stylesheet and forms; no frames, no inline code.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// Live streams (`/events`) open at once; more are refused (503) and the page falls
/// back to reloading by hand.
const MAX_STREAMS: usize = 128;
/// How long one live stream lasts before the browser opens another (it reconnects by
/// itself): a stream is never held forever.
const STREAM_LIFETIME: Duration = Duration::from_secs(300);
/// A comment sent on a quiet stream, so that proxies do not close it.
const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// Failed logins allowed per minute (all people together), against guessing.
const FAILED_LOGINS_PER_MINUTE: u32 = 20;
/// How long the commits of a Release page are kept before they are listed again.
const COMMITS_KEPT: Duration = Duration::from_secs(60);
/// How long listing commits may hold a page.
const COMMITS_WAIT: Duration = Duration::from_secs(3);

const CSS: &str = include_str!("assets/app.css");
const JS: &str = include_str!("assets/app.js");

/// How the web view is set up.
#[derive(Clone, Debug)]
pub struct Options {
    /// Signs sessions and CSRF tokens.
    pub key: Key,
    /// A reverse proxy's header naming the authenticated user, trusted as is.
    pub user_header: Option<HeaderName>,
    /// Whether cookies are marked `Secure` (the public URL is HTTPS).
    pub secure: bool,
}

/// The commits between two SHAs (newest first, whether cut), or why they are not listed.
type Listed = Result<(Vec<crate::git::Commit>, bool), String>;
/// Namespace, code location, to, from.
type CommitsKey = (String, String, Sha, Option<Sha>);

/// The web view's ports and what it keeps between requests.
pub struct Web {
    board: Arc<dyn Board>,
    desk: Arc<dyn Desk>,
    gate: Option<Arc<dyn Gatekeeper>>,
    options: Options,
    streams: Arc<Semaphore>,
    subjects: Subjects,
    commits: Mutex<HashMap<CommitsKey, (Instant, Listed)>>,
    failed_logins: Mutex<(Instant, u32)>,
}

impl Web {
    /// The web view over these ports; without a gatekeeper the pages are read-only.
    #[must_use]
    pub fn new(
        board: Arc<dyn Board>,
        desk: Arc<dyn Desk>,
        gate: Option<Arc<dyn Gatekeeper>>,
        options: Options,
    ) -> Arc<Self> {
        Arc::new(Self {
            board,
            desk,
            gate,
            options,
            streams: Arc::new(Semaphore::new(MAX_STREAMS)),
            subjects: Subjects::default(),
            commits: Mutex::new(HashMap::new()),
            failed_logins: Mutex::new((Instant::now(), 0)),
        })
    }

    /// The user the trusted reverse proxy names, when one is trusted and names one.
    fn proxy_user<'h>(&self, headers: &'h HeaderMap) -> Option<&'h str> {
        headers
            .get(self.options.user_header.as_ref()?)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|u| !u.is_empty() && u.len() <= 253)
    }

    /// The person a request comes from: the trusted proxy's header, else the session.
    fn who(&self, headers: &HeaderMap) -> Option<(Person, String)> {
        if let Some(user) = self.proxy_user(headers) {
            let csrf = session::csrf(&self.options.key, Binding::Proxy(user));
            return Some((
                Person {
                    name: user.to_owned(),
                    groups: Vec::new(),
                    uid: None,
                },
                csrf,
            ));
        }
        let value = cookie(headers)?;
        let person = session::read(&self.options.key, value, Timestamp::now())?;
        Some((
            person,
            session::csrf(&self.options.key, Binding::Session(value)),
        ))
    }

    fn viewer<'a>(&self, who: Option<&'a (Person, String)>) -> Viewer<'a> {
        Viewer {
            person: who.map(|(p, _)| p),
            csrf: who.map(|(_, c)| c.as_str()),
            can_login: self.gate.is_some(),
            can_logout: who.is_some() && self.options.user_header.is_none(),
        }
    }

    /// Everything, with the grids' cells given the subjects known.
    async fn read(&self) -> (Result<Snapshot, String>, Vec<grid::Grid>) {
        let snapshot = self.board.snapshot().await;
        let mut grids = snapshot
            .as_ref()
            .map(|s| grid::grids(s, Timestamp::now()))
            .unwrap_or_default();
        if let Ok(s) = &snapshot {
            self.subjects.fill(&mut grids, s, &self.board);
        }
        (snapshot, grids)
    }

    async fn commits(
        &self,
        r: &ReleaseView,
    ) -> Option<Result<(Vec<crate::git::Commit>, bool), String>> {
        let to = r.status.desired_sha.clone()?;
        let from = r.status.deployed_sha.clone();
        if Some(&to) == from.as_ref() {
            return None;
        }
        let key = (
            r.namespace.clone(),
            r.location.clone(),
            to.clone(),
            from.clone(),
        );
        if let Some((at, kept)) = self.commits.lock().expect("commits lock").get(&key)
            && at.elapsed() < COMMITS_KEPT
        {
            return Some(kept.clone());
        }
        let listed = tokio::time::timeout(
            COMMITS_WAIT,
            self.board
                .commits(&r.namespace, &r.location, &to, from.as_ref()),
        )
        .await
        .unwrap_or_else(|_| Err("the repository is slow to answer; reload in a moment".into()));
        let mut kept = self.commits.lock().expect("commits lock");
        kept.retain(|_, (at, _)| at.elapsed() < COMMITS_KEPT);
        kept.insert(key, (Instant::now(), listed.clone()));
        Some(listed)
    }
}

/// A SHA's subject (`None`: could not be read), and when it was looked up.
type Subject = (Option<String>, Instant);

/// Commit subjects of the SHAs on the grid, read from the repositories in the
/// background (a page never waits for git): a page shows what is known, and is told
/// to refresh when more is.
#[derive(Default)]
struct Subjects {
    known: Arc<Mutex<HashMap<Sha, Subject>>>,
    asked: Arc<Mutex<std::collections::HashSet<(String, String, Sha)>>>,
    changed: watch::Sender<u64>,
    turn: Arc<tokio::sync::Mutex<()>>,
}

/// How long a SHA whose subject could not be read waits before it is asked again.
const SUBJECT_RETRY: Duration = Duration::from_secs(300);
/// Subjects kept at most.
const SUBJECTS_KEPT: usize = 20_000;

impl Subjects {
    fn fill(&self, grids: &mut [grid::Grid], snapshot: &Snapshot, board: &Arc<dyn Board>) {
        let known = self.known.lock().expect("subjects lock");
        let mut missing = Vec::new();
        for g in grids.iter_mut() {
            for row in &mut g.rows {
                for cell in row.cells.iter_mut().flatten() {
                    let Some(sha) = &cell.deployed else { continue };
                    match known.get(sha) {
                        Some((Some(subject), _)) => cell.subject = Some(subject.clone()),
                        Some((None, at)) if at.elapsed() < SUBJECT_RETRY => {}
                        _ => missing.push((g.namespace.clone(), row.location.clone(), sha.clone())),
                    }
                }
            }
        }
        drop(known);
        if snapshot.locations.is_empty() {
            return;
        }
        for m in missing {
            if !self.asked.lock().expect("subjects lock").insert(m.clone()) {
                continue;
            }
            let (known, asked, changed, turn, board) = (
                self.known.clone(),
                self.asked.clone(),
                self.changed.clone(),
                self.turn.clone(),
                board.clone(),
            );
            tokio::spawn(async move {
                let _turn = turn.lock().await;
                let (ns, location, sha) = &m;
                let listed = board.commits(ns, location, sha, None).await;
                {
                    let mut known = known.lock().expect("subjects lock");
                    if known.len() > SUBJECTS_KEPT {
                        known.clear();
                    }
                    let now = Instant::now();
                    match listed {
                        Ok((commits, _)) => {
                            for c in commits {
                                known.insert(c.sha, (Some(c.subject), now));
                            }
                            known.entry(sha.clone()).or_insert((None, now));
                        }
                        Err(e) => {
                            tracing::debug!(sha = %sha, error = %e, "web: no commit subject");
                            known.insert(sha.clone(), (None, now));
                        }
                    }
                }
                asked.lock().expect("subjects lock").remove(&m);
                changed.send_modify(|n| *n = n.wrapping_add(1));
            });
        }
    }
}

/// The web view's routes.
pub fn router(web: Arc<Web>) -> Router {
    Router::new()
        .route("/", get(front))
        .route("/fragments/board", get(board_fragment))
        .route("/events", get(events))
        .route("/releases/{ns}/{name}", get(release_page))
        .route("/releases/{ns}/{name}/fragment", get(release_fragment))
        .route(
            "/releases/{ns}/{name}/promote",
            get(promote_plan).post(promote_apply),
        )
        .route(
            "/releases/{ns}/{name}/rollback",
            get(rollback_plan).post(rollback_apply),
        )
        .route("/releases/{ns}/{name}/clear-quarantine", post(clear))
        .route("/login", get(login_form).post(login))
        .route("/logout", post(logout))
        .route(
            "/assets/app.css",
            get(|| async { asset("text/css; charset=utf-8", CSS) }),
        )
        .route(
            "/assets/app.js",
            get(|| async { asset("text/javascript; charset=utf-8", JS) }),
        )
        .layer(DefaultBodyLimit::max(16 * 1024))
        .layer(middleware::from_fn(guard))
        .with_state(web)
}

fn asset(kind: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, kind)], body).into_response()
}

/// Headers on every answer of the web view, and the same-origin rule for every POST.
async fn guard(request: Request, next: Next) -> Response {
    if request.method() == axum::http::Method::POST && !same_origin(request.headers()) {
        return html(
            StatusCode::FORBIDDEN,
            page::message("Refused", "This form was sent from another site.", "/"),
        );
    }
    let mut response = next.run(request).await;
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    response
}

/// Whether a POST comes from a page of this origin, as far as the browser says
/// (`Sec-Fetch-Site`, then `Origin` against `Host`); a client that says neither is
/// left to the CSRF token.
fn same_origin(headers: &HeaderMap) -> bool {
    if let Some(site) = headers.get("sec-fetch-site") {
        return site == "same-origin";
    }
    let Some(origin) = headers.get(header::ORIGIN).and_then(|o| o.to_str().ok()) else {
        return true;
    };
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default();
    origin
        .split_once("://")
        .is_some_and(|(_, rest)| !host.is_empty() && rest == host)
}

fn cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(session::cookie_value)
}

fn html(status: StatusCode, body: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        body,
    )
        .into_response()
}

fn whole(
    web: &Web,
    who: Option<&(Person, String)>,
    status: StatusCode,
    title: &str,
    body: &str,
) -> Response {
    html(
        status,
        page::layout(title, &web.viewer(who), None, "", body),
    )
}

async fn front(State(web): State<Arc<Web>>, headers: HeaderMap) -> Response {
    let who = web.who(&headers);
    let (snapshot, grids) = web.read().await;
    let (notices, error) = split(&snapshot);
    let body = page::board(&grids, notices, error, Timestamp::now());
    html(
        StatusCode::OK,
        page::layout(
            "Environments",
            &web.viewer(who.as_ref()),
            Some("/fragments/board"),
            "",
            &body,
        ),
    )
}

fn split(snapshot: &Result<Snapshot, String>) -> (&[String], Option<&str>) {
    match snapshot {
        Ok(s) => (&s.notices, None),
        Err(e) => (&[], Some(e.as_str())),
    }
}

async fn board_fragment(State(web): State<Arc<Web>>) -> Response {
    let (snapshot, grids) = web.read().await;
    let (notices, error) = split(&snapshot);
    html(
        StatusCode::OK,
        page::board(&grids, notices, error, Timestamp::now()),
    )
}

/// `/events`: one `change` event each time what the pages show changes.
async fn events(State(web): State<Arc<Web>>) -> Response {
    let Ok(permit) = web.streams.clone().try_acquire_owned() else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "too many live pages open\n",
        )
            .into_response();
    };
    let mut board = web.board.changes();
    let mut subjects = web.subjects.changed.subscribe();
    board.mark_unchanged();
    subjects.mark_unchanged();
    let until = tokio::time::Instant::now() + STREAM_LIFETIME;
    let first = futures::stream::once(async {
        Ok::<_, std::convert::Infallible>("retry: 2000\n\n".to_owned())
    });
    let rest = futures::stream::unfold(
        (board, subjects, 0u64, permit),
        move |(mut board, mut subjects, mut n, permit)| async move {
            let line = tokio::select! {
                changed = board.changed() => {
                    if changed.is_err() {
                        return None;
                    }
                    n += 1;
                    format!("event: change\ndata: {n}\n\n")
                }
                changed = subjects.changed() => {
                    if changed.is_err() {
                        return None;
                    }
                    n += 1;
                    format!("event: change\ndata: {n}\n\n")
                }
                () = tokio::time::sleep(KEEP_ALIVE) => ": keep-alive\n\n".to_owned(),
                () = tokio::time::sleep_until(until) => return None,
            };
            Some((Ok(line), (board, subjects, n, permit)))
        },
    );
    (
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        axum::body::Body::from_stream(first.chain(rest)),
    )
        .into_response()
}

/// The Release `ns/name` in a snapshot.
fn find<'a>(snapshot: &'a Snapshot, ns: &str, name: &str) -> Option<&'a ReleaseView> {
    snapshot
        .releases
        .iter()
        .find(|r| r.namespace == ns && r.name == name)
}

#[derive(Deserialize)]
struct Done {
    #[serde(default)]
    recorded: Option<String>,
}

async fn release_page(
    State(web): State<Arc<Web>>,
    Path((ns, name)): Path<(String, String)>,
    Query(done): Query<Done>,
    headers: HeaderMap,
) -> Response {
    let who = web.who(&headers);
    let Some(body) = release_body(&web, &ns, &name, who.as_ref()).await else {
        return not_found(&web, who.as_ref(), &ns, &name);
    };
    let note = match done.recorded.as_deref() {
        Some("promote") => {
            "<p class=\"banner ok\" role=\"status\">Your promotion is recorded; Vigie deploys it now.</p>"
        }
        Some("rollback") => {
            "<p class=\"banner ok\" role=\"status\">Your rollback is recorded; Vigie restores the SHA now.</p>"
        }
        Some("clear") => {
            "<p class=\"banner ok\" role=\"status\">The quarantine clearance is recorded.</p>"
        }
        _ => "",
    };
    let live = format!("{}/fragment", page::release_url(&format!("{ns}/{name}")));
    html(
        StatusCode::OK,
        page::layout(
            &format!("{ns}/{name}"),
            &web.viewer(who.as_ref()),
            Some(&live),
            note,
            &body,
        ),
    )
}

async fn release_fragment(
    State(web): State<Arc<Web>>,
    Path((ns, name)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let who = web.who(&headers);
    match release_body(&web, &ns, &name, who.as_ref()).await {
        Some(body) => html(StatusCode::OK, body),
        None => html(
            StatusCode::NOT_FOUND,
            page::message("Not found", &format!("No Release {ns}/{name}."), "/"),
        ),
    }
}

async fn release_body(
    web: &Web,
    ns: &str,
    name: &str,
    who: Option<&(Person, String)>,
) -> Option<String> {
    let (snapshot, grids) = web.read().await;
    let snapshot = snapshot.ok()?;
    let r = find(&snapshot, ns, name)?;
    let key = r.key();
    let cell = grids
        .iter()
        .flat_map(|g| &g.rows)
        .flat_map(|row| row.cells.iter().flatten())
        .find(|c| c.release == key);
    let env = snapshot
        .environments
        .iter()
        .find(|e| e.namespace == ns && e.name == r.environment)
        .map(|e| &e.spec);
    let now = Timestamp::now();
    let facts = page::ReleaseFacts {
        cell,
        env,
        commits: web.commits(r).await,
        chart: chart::timeline(&r.status.history, now),
    };
    Some(page::release(r, &facts, &web.viewer(who), now))
}

fn not_found(web: &Web, who: Option<&(Person, String)>, ns: &str, name: &str) -> Response {
    whole(
        web,
        who,
        StatusCode::NOT_FOUND,
        "Not found",
        &page::message("Not found", &format!("No Release {ns}/{name}."), "/"),
    )
}

#[derive(Deserialize)]
struct PlanQuery {
    #[serde(default)]
    sha: Option<String>,
    #[serde(default)]
    to: Option<String>,
}

async fn promote_plan(
    web: State<Arc<Web>>,
    path: Path<(String, String)>,
    query: Query<PlanQuery>,
    headers: HeaderMap,
) -> Response {
    show_plan(web, Kind::Promote, path, query, headers).await
}

async fn rollback_plan(
    web: State<Arc<Web>>,
    path: Path<(String, String)>,
    query: Query<PlanQuery>,
    headers: HeaderMap,
) -> Response {
    show_plan(web, Kind::Rollback, path, query, headers).await
}

/// Who may act on `ns/name`, and the Release: the login, then the gatekeeper's review.
async fn allowed(
    web: &Web,
    headers: &HeaderMap,
    ns: &str,
    name: &str,
) -> Result<((Person, String), ReleaseView), Response> {
    let who = web.who(headers);
    let Some(who) = who else {
        let text = if web.gate.is_some() || web.options.user_header.is_some() {
            "Log in first: only people who logged in may promote, roll back or clear a quarantine."
        } else {
            "No login is configured: this page is read-only."
        };
        return Err(whole(
            web,
            None,
            StatusCode::UNAUTHORIZED,
            "Log in",
            &format!(
                "{}<p><a href=\"/login\">Log in</a></p>",
                page::message("Log in first", text, "/")
            ),
        ));
    };
    let snapshot = web.board.snapshot().await.map_err(|e| {
        whole(
            web,
            Some(&who),
            StatusCode::SERVICE_UNAVAILABLE,
            "Unavailable",
            &page::message("Unavailable", &e, "/"),
        )
    })?;
    let Some(r) = find(&snapshot, ns, name).cloned() else {
        return Err(not_found(web, Some(&who), ns, name));
    };
    if let Some(gate) = &web.gate
        && let Err(why) = gate.may_change(&who.0, ns, name).await
    {
        tracing::info!(user = %who.0.name, release = %format!("{ns}/{name}"), why = %why, "web: action refused");
        return Err(whole(
            web,
            Some(&who),
            StatusCode::FORBIDDEN,
            "Not allowed",
            &page::message(
                "Not allowed",
                &why,
                &page::release_url(&format!("{ns}/{name}")),
            ),
        ));
    }
    Ok((who, r))
}

fn parse_sha(text: Option<&str>) -> Result<Option<Sha>, String> {
    match text.map(str::trim).filter(|s| !s.is_empty()) {
        None => Ok(None),
        Some(s) => s
            .parse::<Sha>()
            .map(Some)
            .map_err(|_| "the SHA must be 40 hexadecimal digits".to_owned()),
    }
}

/// The SHA a form or link asks for, or the page that says it is not one.
fn asked_sha(
    web: &Web,
    who: &(Person, String),
    text: Option<&str>,
    back: &str,
) -> Result<Option<Sha>, Box<Response>> {
    parse_sha(text).map_err(|e| {
        Box::new(whole(
            web,
            Some(who),
            StatusCode::BAD_REQUEST,
            "Bad request",
            &page::message("Bad request", &e, back),
        ))
    })
}

async fn show_plan(
    State(web): State<Arc<Web>>,
    kind: Kind,
    Path((ns, name)): Path<(String, String)>,
    Query(q): Query<PlanQuery>,
    headers: HeaderMap,
) -> Response {
    let (who, r) = match allowed(&web, &headers, &ns, &name).await {
        Ok(found) => found,
        Err(response) => return response,
    };
    let back = page::release_url(&r.key());
    let sha = match asked_sha(&web, &who, q.sha.as_deref().or(q.to.as_deref()), &back) {
        Ok(s) => s,
        Err(response) => return *response,
    };
    let ask = Ask {
        location: r.location.clone(),
        environment: r.environment.clone(),
        sha,
        reason: None,
        break_glass: None,
    };
    match web.desk.plan(kind, &ns, &ask).await {
        Ok(plan) => whole(
            &web,
            Some(&who),
            StatusCode::OK,
            &format!("{} {}", kind.confirm(), r.key()),
            &page::plan(kind, &r.key(), &plan, &who.1, None),
        ),
        Err(e) => refused(&web, Some(&who), &e, &back),
    }
}

fn refused(web: &Web, who: Option<&(Person, String)>, e: &PromoteError, back: &str) -> Response {
    let status = match e {
        PromoteError::Refused(_) | PromoteError::ManagedByGitOps { .. } => StatusCode::CONFLICT,
        PromoteError::NotFound(_) => StatusCode::NOT_FOUND,
        // Not ready yet, or not recorded (a write raced another, or the disk refused):
        // the same request may succeed if tried again.
        PromoteError::NotReady(_) | PromoteError::NotRecorded(_) => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::BAD_GATEWAY,
    };
    whole(
        web,
        who,
        status,
        "Refused",
        &page::message("Refused", &e.to_string(), back),
    )
}

#[derive(Deserialize)]
struct Decision {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    sha: Option<String>,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    break_glass: Option<String>,
    #[serde(default)]
    confirm: String,
}

async fn promote_apply(
    web: State<Arc<Web>>,
    path: Path<(String, String)>,
    headers: HeaderMap,
    form: Form<Decision>,
) -> Response {
    apply(web, Kind::Promote, path, headers, form).await
}

async fn rollback_apply(
    web: State<Arc<Web>>,
    path: Path<(String, String)>,
    headers: HeaderMap,
    form: Form<Decision>,
) -> Response {
    apply(web, Kind::Rollback, path, headers, form).await
}

fn forged(web: &Web, who: &(Person, String)) -> Response {
    whole(
        web,
        Some(who),
        StatusCode::FORBIDDEN,
        "Refused",
        &page::message(
            "Refused",
            "This form's CSRF token does not belong to your session: reload the page and try again. Nothing was changed.",
            "/",
        ),
    )
}

fn given(text: Option<String>) -> Option<String> {
    text.map(|t| t.trim().to_owned()).filter(|t| !t.is_empty())
}

async fn apply(
    State(web): State<Arc<Web>>,
    kind: Kind,
    Path((ns, name)): Path<(String, String)>,
    headers: HeaderMap,
    Form(d): Form<Decision>,
) -> Response {
    let (who, r) = match allowed(&web, &headers, &ns, &name).await {
        Ok(found) => found,
        Err(response) => return response,
    };
    if !csrf_holds(&web, &headers, &d.csrf) {
        return forged(&web, &who);
    }
    let back = page::release_url(&r.key());
    let sha = match asked_sha(&web, &who, d.sha.as_deref(), &back) {
        Ok(s) => s,
        Err(response) => return *response,
    };
    let ask = Ask {
        location: r.location.clone(),
        environment: r.environment.clone(),
        sha,
        reason: given(d.reason),
        break_glass: given(d.break_glass),
    };
    if d.confirm.trim() != kind.confirm() {
        // Shown again with the plan, as the CLI asks again.
        return match web.desk.plan(kind, &ns, &ask).await {
            Ok(plan) => whole(
                &web,
                Some(&who),
                StatusCode::BAD_REQUEST,
                "Not confirmed",
                &page::plan(
                    kind,
                    &r.key(),
                    &plan,
                    &who.1,
                    Some(&format!(
                        "Not confirmed: type {} to confirm. Nothing was changed.",
                        kind.confirm()
                    )),
                ),
            ),
            Err(e) => refused(&web, Some(&who), &e, &back),
        };
    }
    match web.desk.apply(kind, &ns, &ask, &who.0.name).await {
        Ok(done) => {
            tracing::info!(release = %done.release, sha = %done.sha, by = %done.by, ?kind, "web: decision recorded");
            let word = match kind {
                Kind::Promote => "promote",
                Kind::Rollback => "rollback",
            };
            Redirect::to(&format!("{back}?recorded={word}")).into_response()
        }
        Err(e) => refused(&web, Some(&who), &e, &back),
    }
}

fn csrf_holds(web: &Web, headers: &HeaderMap, token: &str) -> bool {
    if let Some(user) = web.proxy_user(headers) {
        return session::csrf_holds(&web.options.key, Binding::Proxy(user), token);
    }
    cookie(headers)
        .is_some_and(|v| session::csrf_holds(&web.options.key, Binding::Session(v), token))
}

#[derive(Deserialize)]
struct Clearance {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    sha: String,
    #[serde(default)]
    reason: String,
}

async fn clear(
    State(web): State<Arc<Web>>,
    Path((ns, name)): Path<(String, String)>,
    headers: HeaderMap,
    Form(c): Form<Clearance>,
) -> Response {
    let (who, r) = match allowed(&web, &headers, &ns, &name).await {
        Ok(found) => found,
        Err(response) => return response,
    };
    if !csrf_holds(&web, &headers, &c.csrf) {
        return forged(&web, &who);
    }
    let back = page::release_url(&r.key());
    let Ok(Some(sha)) = parse_sha(Some(&c.sha)) else {
        {
            return whole(
                &web,
                Some(&who),
                StatusCode::BAD_REQUEST,
                "Bad request",
                &page::message(
                    "Bad request",
                    "the SHA must be 40 hexadecimal digits",
                    &back,
                ),
            );
        }
    };
    let reason = c.reason.trim();
    if reason.chars().count() < 3 || reason.len() > 1024 {
        return whole(
            &web,
            Some(&who),
            StatusCode::BAD_REQUEST,
            "Bad request",
            &page::message(
                "Bad request",
                "give a reason of 3 to 1024 characters; nothing was changed",
                &back,
            ),
        );
    }
    let clearance = QuarantineClearance {
        sha,
        by: who.0.name.clone(),
        reason: reason.to_owned(),
        at: Timestamp::now(),
    };
    match web.desk.clear_quarantine(&ns, &name, clearance).await {
        Ok(()) => Redirect::to(&format!("{back}?recorded=clear")).into_response(),
        Err(e) => refused(&web, Some(&who), &e, &back),
    }
}

async fn login_form(State(web): State<Arc<Web>>, headers: HeaderMap) -> Response {
    let who = web.who(&headers);
    match &web.gate {
        Some(gate) => whole(
            &web,
            who.as_ref(),
            StatusCode::OK,
            "Log in",
            &page::login(gate.asks_for(), None),
        ),
        None => whole(
            &web,
            who.as_ref(),
            StatusCode::NOT_FOUND,
            "Log in",
            &page::message(
                "No login",
                "No login is configured here: the pages are read-only.",
                "/",
            ),
        ),
    }
}

#[derive(Deserialize)]
struct Login {
    #[serde(default)]
    token: String,
}

async fn login(State(web): State<Arc<Web>>, Form(l): Form<Login>) -> Response {
    let Some(gate) = &web.gate else {
        return whole(
            &web,
            None,
            StatusCode::NOT_FOUND,
            "Log in",
            &page::message("No login", "No login is configured here.", "/"),
        );
    };
    {
        let mut failed = web.failed_logins.lock().expect("logins lock");
        if failed.0.elapsed() > Duration::from_secs(60) {
            *failed = (Instant::now(), 0);
        }
        if failed.1 >= FAILED_LOGINS_PER_MINUTE {
            return whole(
                &web,
                None,
                StatusCode::TOO_MANY_REQUESTS,
                "Log in",
                &page::login(
                    gate.asks_for(),
                    Some("Too many failed logins: wait a minute."),
                ),
            );
        }
    }
    let token = l.token.trim().to_owned();
    if token.is_empty() || token.len() > 16 * 1024 {
        return whole(
            &web,
            None,
            StatusCode::BAD_REQUEST,
            "Log in",
            &page::login(gate.asks_for(), Some("Give a token.")),
        );
    }
    match gate.login(token).await {
        Ok(person) => match session::issue(&web.options.key, &person, Timestamp::now()) {
            Ok(value) => {
                tracing::info!(user = %person.name, "web: logged in");
                let mut response = Redirect::to("/").into_response();
                if let Ok(v) =
                    HeaderValue::from_str(&session::set_cookie(&value, web.options.secure))
                {
                    response.headers_mut().insert(header::SET_COOKIE, v);
                }
                response
            }
            Err(e) => whole(
                &web,
                None,
                StatusCode::FORBIDDEN,
                "Log in",
                &page::login(gate.asks_for(), Some(&e.to_string())),
            ),
        },
        Err(why) => {
            web.failed_logins.lock().expect("logins lock").1 += 1;
            tracing::info!(why = %why, "web: login refused");
            whole(
                &web,
                None,
                StatusCode::UNAUTHORIZED,
                "Log in",
                &page::login(gate.asks_for(), Some(&format!("Refused: {why}"))),
            )
        }
    }
}

#[derive(Deserialize)]
struct Logout {
    #[serde(default)]
    csrf: String,
}

async fn logout(
    State(web): State<Arc<Web>>,
    headers: HeaderMap,
    Form(l): Form<Logout>,
) -> Response {
    if !cookie(&headers)
        .is_some_and(|v| session::csrf_holds(&web.options.key, Binding::Session(v), &l.csrf))
    {
        return html(
            StatusCode::FORBIDDEN,
            page::message(
                "Refused",
                "This form's CSRF token does not belong to your session.",
                "/",
            ),
        );
    }
    let mut response = Redirect::to("/").into_response();
    if let Ok(v) = HeaderValue::from_str(&session::clear_cookie(web.options.secure)) {
        response.headers_mut().insert(header::SET_COOKIE, v);
    }
    response
}

#[cfg(test)]
mod tests;
