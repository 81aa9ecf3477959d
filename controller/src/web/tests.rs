//! The web view's routes against in-memory ports: who may see and do what, and how
//! every refusal reads. The real ports are exercised by the browser and end-to-end
//! tests; here every path of the login, the CSRF token and the review is walked.

use std::sync::{Arc, Mutex};

use axum::{
    body::Body,
    http::{Request, StatusCode, header},
};
use futures::{FutureExt as _, StreamExt as _, future::BoxFuture};
use tokio::sync::watch;
use tower::ServiceExt as _;

use super::{
    Options, Web,
    ports::{self, Named, Person, ReleaseView, Snapshot},
    router,
    session::{self, Binding, Key},
};
use crate::{
    api::{Phase, ReleaseStatus, Sha, release::QuarantineClearance},
    promote::{Ask, Done, Kind, Plan, PromoteError, Side},
};

fn sha(c: char) -> Sha {
    c.to_string().repeat(40).parse().unwrap()
}

struct Board {
    changes: watch::Sender<u64>,
}

impl ports::Board for Board {
    fn snapshot(&self) -> BoxFuture<'_, Result<Snapshot, String>> {
        let env = |name: &str, from: Option<&str>| Named {
            namespace: "apps".into(),
            name: name.into(),
            spec: serde_json::from_value(match from {
                Some(f) => serde_json::json!({"backend": {"docker": {}}, "promotion": {"from": f}}),
                None => serde_json::json!({"backend": {"docker": {}}}),
            })
            .unwrap(),
        };
        let release = |environment: &str, status: ReleaseStatus| ReleaseView {
            namespace: "apps".into(),
            name: format!("web-{environment}"),
            location: "web".into(),
            environment: environment.into(),
            revision: None,
            status,
        };
        let snapshot = Snapshot {
            environments: vec![env("dev", None), env("prod", Some("dev"))],
            locations: Vec::new(),
            releases: vec![
                release(
                    "dev",
                    ReleaseStatus {
                        phase: Phase::Validated,
                        deployed_sha: Some(sha('a')),
                        validated_sha: Some(sha('a')),
                        message: Some("<script>alert(1)</script>".into()),
                        ..ReleaseStatus::default()
                    },
                ),
                release("prod", ReleaseStatus::default()),
            ],
            notices: Vec::new(),
        };
        async move { Ok(snapshot) }.boxed()
    }

    fn changes(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    fn commits(
        &self,
        _: &str,
        _: &str,
        _: &Sha,
        _: Option<&Sha>,
    ) -> BoxFuture<'_, Result<(Vec<crate::git::Commit>, bool), String>> {
        async { Err("no repository here".to_owned()) }.boxed()
    }
}

#[derive(Default)]
struct Desk {
    applied: Mutex<Vec<(Kind, String, Ask)>>,
    cleared: Mutex<Vec<QuarantineClearance>>,
}

impl ports::Desk for Desk {
    fn plan(&self, _: Kind, _: &str, ask: &Ask) -> BoxFuture<'_, Result<Plan, PromoteError>> {
        let plan = Plan {
            location: ask.location.clone(),
            upstream: Side::default(),
            target: Side::default(),
            sha: ask.sha.clone().unwrap_or_else(|| sha('a')),
            from: None,
            commits: Vec::new(),
            more_commits: false,
            commits_error: None,
            window_closed: None,
        };
        async move { Ok(plan) }.boxed()
    }

    fn apply(
        &self,
        kind: Kind,
        ns: &str,
        ask: &Ask,
        by: &str,
    ) -> BoxFuture<'_, Result<Done, PromoteError>> {
        self.applied
            .lock()
            .unwrap()
            .push((kind, by.to_owned(), ask.clone()));
        let done = Done {
            release: format!("{ns}/web-{}", ask.environment),
            sha: sha('a'),
            by: by.to_owned(),
            at: jiff::Timestamp::UNIX_EPOCH,
        };
        async move { Ok(done) }.boxed()
    }

    fn clear_quarantine(
        &self,
        _: &str,
        _: &str,
        clearance: QuarantineClearance,
    ) -> BoxFuture<'_, Result<(), PromoteError>> {
        self.cleared.lock().unwrap().push(clearance);
        async { Ok(()) }.boxed()
    }
}

/// alice may change anything; mallory logs in but may not change anything.
struct Gate;

impl ports::Gatekeeper for Gate {
    fn login(&self, token: String) -> BoxFuture<'_, Result<Person, String>> {
        let person = match token.as_str() {
            "alice-token" => Ok("alice"),
            "mallory-token" => Ok("mallory"),
            _ => Err("unknown token".to_owned()),
        }
        .map(|name| Person {
            name: name.into(),
            groups: Vec::new(),
            uid: None,
        });
        async move { person }.boxed()
    }

    fn may_change(
        &self,
        person: &Person,
        ns: &str,
        name: &str,
    ) -> BoxFuture<'_, Result<(), String>> {
        let answer = if person.name == "alice" {
            Ok(())
        } else {
            Err(format!("{} may not patch Release {ns}/{name}", person.name))
        };
        async move { answer }.boxed()
    }

    fn asks_for(&self) -> &'static str {
        "a test token"
    }
}

struct Fixture {
    app: axum::Router,
    desk: Arc<Desk>,
    key: Key,
}

fn fixture(gate: bool, user_header: Option<&str>) -> Fixture {
    let desk = Arc::new(Desk::default());
    let key = Key::random();
    let web = Web::new(
        Arc::new(Board {
            changes: watch::Sender::new(0),
        }),
        desk.clone(),
        gate.then(|| Arc::new(Gate) as Arc<dyn ports::Gatekeeper>),
        Options {
            key: key.clone(),
            user_header: user_header.map(|h| h.parse().unwrap()),
            secure: false,
        },
    );
    Fixture {
        app: router(web),
        desk,
        key,
    }
}

async fn send(
    app: &axum::Router,
    request: Request<Body>,
) -> (StatusCode, axum::http::HeaderMap, String) {
    let response = app.clone().oneshot(request).await.unwrap();
    let (parts, body) = response.into_parts();
    let bytes = axum::body::to_bytes(body, 1 << 20).await.unwrap();
    (
        parts.status,
        parts.headers,
        String::from_utf8_lossy(&bytes).into_owned(),
    )
}

fn get(path: &str, cookie: Option<&str>) -> Request<Body> {
    let mut r = Request::get(path);
    if let Some(c) = cookie {
        r = r.header(header::COOKIE, format!("{}={c}", session::COOKIE));
    }
    r.body(Body::empty()).unwrap()
}

fn post(path: &str, cookie: Option<&str>, form: &str) -> Request<Body> {
    let mut r = Request::post(path)
        .header(header::HOST, "vigie.example")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
    if let Some(c) = cookie {
        r = r.header(header::COOKIE, format!("{}={c}", session::COOKIE));
    }
    r.body(Body::from(form.to_owned())).unwrap()
}

/// Logs in with `token`; the session cookie's value.
async fn login(f: &Fixture, token: &str) -> Option<String> {
    let (status, headers, _) = send(&f.app, post("/login", None, &format!("token={token}"))).await;
    if status != StatusCode::SEE_OTHER {
        return None;
    }
    let set = headers.get(header::SET_COOKIE)?.to_str().ok()?.to_owned();
    Some(session::cookie_value(set.split(';').next()?)?.to_owned())
}

#[tokio::test]
async fn the_grid_is_public_escaped_and_sent_with_a_strict_policy() {
    let f = fixture(true, None);
    let (status, headers, body) = send(&f.app, get("/", None)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers[header::CONTENT_SECURITY_POLICY], super::CSP);
    assert_eq!(headers[header::X_FRAME_OPTIONS], "DENY");
    assert_eq!(headers[header::CACHE_CONTROL], "no-store");
    assert!(body.contains("data-release=\"apps/web-dev\""), "{body}");
    assert!(body.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
    assert!(!body.contains("<script>alert"), "status text is escaped");
    assert!(body.contains("href=\"/login\""));
    let (status, headers, js) = send(&f.app, get("/assets/app.js", None)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        headers[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/javascript")
    );
    assert!(js.contains("EventSource"));
    let (status, _, body) = send(&f.app, get("/releases/apps/web-dev", None)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.contains("Log in</a> to promote"));
    let (status, _, _) = send(&f.app, get("/releases/apps/nope", None)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn actions_need_a_login_a_matching_csrf_token_and_the_gatekeepers_yes() {
    let f = fixture(true, None);
    let promote = "/releases/apps/web-prod/promote";
    let form = |csrf: &str| format!("csrf={csrf}&confirm=DEPLOY&sha={}&reason=train", sha('a'));

    // Nobody logged in, a wrong token, a forged cookie: refused, nothing applied.
    let (status, _, body) = send(&f.app, post(promote, None, &form("x"))).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert!(login(&f, "wrong").await.is_none());
    let (status, _, _) = send(&f.app, post(promote, Some("forged.cookie"), &form("x"))).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // alice: her plan page carries her CSRF token; another token is refused.
    let alice = login(&f, "alice-token").await.expect("alice logs in");
    let csrf = session::csrf(&f.key, Binding::Session(&alice));
    let (status, _, page) = send(&f.app, get(promote, Some(&alice))).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        page.contains(&csrf) && page.contains("data-confirm=\"DEPLOY\""),
        "{page}"
    );
    for forged in [
        "",
        "forged",
        &session::csrf(&f.key, Binding::Session("other")),
    ] {
        let (status, _, body) = send(&f.app, post(promote, Some(&alice), &form(forged))).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{forged}");
        assert!(body.contains("CSRF token does not belong"), "{body}");
    }
    // A form sent from another site is refused before anything else.
    let mut cross = post(promote, Some(&alice), &form(&csrf));
    cross
        .headers_mut()
        .insert(header::ORIGIN, "https://evil.example".parse().unwrap());
    assert_eq!(send(&f.app, cross).await.0, StatusCode::FORBIDDEN);
    let mut cross = post(promote, Some(&alice), &form(&csrf));
    cross
        .headers_mut()
        .insert("sec-fetch-site", "cross-site".parse().unwrap());
    assert_eq!(send(&f.app, cross).await.0, StatusCode::FORBIDDEN);
    // The confirmation word must be typed.
    let unconfirmed = format!("csrf={csrf}&confirm=deploy&sha={}", sha('a'));
    let (status, _, body) = send(&f.app, post(promote, Some(&alice), &unconfirmed)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body.contains("Not confirmed: type DEPLOY"), "{body}");
    assert!(
        f.desk.applied.lock().unwrap().is_empty(),
        "nothing applied so far"
    );

    // All good: applied as alice, with her reason, then back to the Release page.
    let (status, headers, _) = send(&f.app, post(promote, Some(&alice), &form(&csrf))).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(
        headers[header::LOCATION],
        "/releases/apps/web-prod?recorded=promote"
    );
    let applied = f.desk.applied.lock().unwrap().clone();
    assert_eq!(applied.len(), 1);
    let (kind, by, ask) = &applied[0];
    assert_eq!((*kind, by.as_str()), (Kind::Promote, "alice"));
    assert_eq!(
        (ask.location.as_str(), ask.environment.as_str()),
        ("web", "prod")
    );
    assert_eq!(ask.reason.as_deref(), Some("train"));
    assert_eq!(ask.sha, Some(sha('a')));

    // mallory logs in, but the gatekeeper says no: 403 with its reason.
    let mallory = login(&f, "mallory-token").await.expect("mallory logs in");
    let csrf = session::csrf(&f.key, Binding::Session(&mallory));
    let rollback = format!("csrf={csrf}&confirm=ROLLBACK");
    let (status, _, body) = send(
        &f.app,
        post("/releases/apps/web-dev/rollback", Some(&mallory), &rollback),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(
        body.contains("mallory may not patch Release apps/web-dev"),
        "{body}"
    );
    assert_eq!(
        f.desk.applied.lock().unwrap().len(),
        1,
        "mallory changed nothing"
    );
}

#[tokio::test]
async fn a_quarantine_clearance_needs_a_reason_and_names_the_person() {
    let f = fixture(true, None);
    let alice = login(&f, "alice-token").await.unwrap();
    let csrf = session::csrf(&f.key, Binding::Session(&alice));
    let path = "/releases/apps/web-dev/clear-quarantine";
    for bad in [
        format!("csrf={csrf}&sha={}&reason=no", sha('b')),
        format!("csrf={csrf}&sha=abc&reason=fixed%20now"),
    ] {
        assert_eq!(
            send(&f.app, post(path, Some(&alice), &bad)).await.0,
            StatusCode::BAD_REQUEST
        );
    }
    let good = format!("csrf={csrf}&sha={}&reason=fixed%20now", sha('b'));
    let (status, headers, _) = send(&f.app, post(path, Some(&alice), &good)).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(
        headers[header::LOCATION],
        "/releases/apps/web-dev?recorded=clear"
    );
    let cleared = f.desk.cleared.lock().unwrap().clone();
    assert_eq!(cleared.len(), 1);
    assert_eq!(
        (cleared[0].by.as_str(), cleared[0].reason.as_str()),
        ("alice", "fixed now")
    );
}

#[tokio::test]
async fn without_a_gatekeeper_the_pages_are_read_only_unless_a_proxy_is_trusted() {
    let f = fixture(false, None);
    let (status, _, body) = send(&f.app, get("/login", None)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(body.contains("read-only"));
    let (status, _, _) = send(&f.app, post("/login", None, "token=alice-token")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, _, page) = send(&f.app, get("/", None)).await;
    assert!(page.contains("read-only") && !page.contains("href=\"/login\""));

    // A trusted reverse proxy names the user; its CSRF token is bound to that user.
    let f = fixture(false, Some("x-forwarded-user"));
    let csrf = session::csrf(&f.key, Binding::Proxy("bob"));
    let form = format!("csrf={csrf}&confirm=ROLLBACK");
    let mut request = post("/releases/apps/web-dev/rollback", None, &form);
    request
        .headers_mut()
        .insert("x-forwarded-user", "bob".parse().unwrap());
    assert_eq!(send(&f.app, request).await.0, StatusCode::SEE_OTHER);
    let mut request = post("/releases/apps/web-dev/rollback", None, &form);
    request
        .headers_mut()
        .insert("x-forwarded-user", "carol".parse().unwrap());
    assert_eq!(
        send(&f.app, request).await.0,
        StatusCode::FORBIDDEN,
        "bob's token is not carol's"
    );
    let applied = f.desk.applied.lock().unwrap().clone();
    assert_eq!(applied.len(), 1);
    assert_eq!(
        (applied[0].0, applied[0].1.as_str()),
        (Kind::Rollback, "bob")
    );
}

#[tokio::test]
async fn failed_logins_are_slowed_down() {
    let f = fixture(true, None);
    for _ in 0..super::FAILED_LOGINS_PER_MINUTE {
        assert!(login(&f, "guess").await.is_none());
    }
    let (status, _, _) = send(&f.app, post("/login", None, "token=alice-token")).await;
    assert_eq!(
        status,
        StatusCode::TOO_MANY_REQUESTS,
        "even the right token waits"
    );
}

#[tokio::test]
async fn live_pages_hear_of_every_change() {
    let board = Arc::new(Board {
        changes: watch::Sender::new(0),
    });
    let web = Web::new(
        board.clone(),
        Arc::new(Desk::default()),
        None,
        Options {
            key: Key::random(),
            user_header: None,
            secure: false,
        },
    );
    let app = router(web);
    let response = app.clone().oneshot(get("/events", None)).await.unwrap();
    assert_eq!(
        response.headers()[header::CONTENT_TYPE],
        "text/event-stream"
    );
    let mut body = response.into_body().into_data_stream();
    let first = body.next().await.unwrap().unwrap();
    assert_eq!(&first[..], b"retry: 2000\n\n");
    board.changes.send_modify(|n| *n += 1);
    let next = tokio::time::timeout(std::time::Duration::from_secs(5), body.next())
        .await
        .expect("an event within a second")
        .unwrap()
        .unwrap();
    assert_eq!(&next[..], b"event: change\ndata: 1\n\n");
}
