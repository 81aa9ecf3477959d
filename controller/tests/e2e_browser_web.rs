//! The web view in a real browser (Debian's headless Chromium) against `vigie run` on
//! the real Docker engine: the grid follows a rollback live, a person logs in and
//! promotes with `DEPLOY` typed, forged and anonymous actions are refused, the pages
//! work by keyboard and on a phone. Screenshots go to `target/e2e-browser/web/`, and to
//! `docs/web/` with `VIGIE_DOCS_SCREENSHOTS=1`.

mod browser;
mod docker;
mod skip;

use std::{
    io::{Read as _, Write as _},
    net::TcpStream,
    path::PathBuf,
    time::Duration,
};

use browser::{Browser, key};
use docker::{
    Demo, IMAGE_ARTIFACT, Vigie, docker_available, free_port, http_get, release, root,
    vm_manifests, wait_for,
};
use vigie::api::release::HistoryEvent;

const T: Duration = Duration::from_secs(60);
/// How soon a live page must show a transition.
const LIVE: Duration = Duration::from_secs(5);
const TOKEN: &str = "alice-token-0123456789abcdef";

fn screenshot(b: &Browser, name: &str) {
    let dir = browser::evidence_dir().join("web");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{name}.png"));
    b.screenshot(&path);
    if std::env::var_os("VIGIE_DOCS_SCREENSHOTS").is_some() {
        let docs = root().join("docs/web");
        std::fs::create_dir_all(&docs).unwrap();
        std::fs::copy(&path, docs.join(format!("{name}.png"))).unwrap();
    }
}

/// `POST` a form; status, headers and body.
fn post_form(port: u16, path: &str, cookie: Option<&str>, body: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let cookie = cookie
        .map(|c| format!("Cookie: vigie_session={c}\r\n"))
        .unwrap_or_default();
    write!(
        stream,
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\
         Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n{cookie}\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, response)
}

/// Runs `f` again when the live page replaced the element it held (at most 3 times).
fn settled<T>(f: impl Fn() -> T) -> T {
    for _ in 0..2 {
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(&f)) {
            Ok(v) => return v,
            Err(e) => {
                let text = e.downcast_ref::<String>().cloned().unwrap_or_default();
                // The element left the page as it was replaced (see `is_gone`).
                if !text.contains("stale element")
                    && !text.contains("does not belong to the document")
                {
                    std::panic::resume_unwind(e);
                }
            }
        }
    }
    f()
}

/// Puts the keyboard's focus in the form field `css`, as a person who starts typing:
/// the live page then leaves the form alone.
fn focus(b: &Browser, css: &str) {
    b.wait_for(css, LIVE);
    let js = format!("document.querySelector({css:?}).focus(); return true;");
    b.execute_script(&js, &[]);
}

fn start(test: &str) -> (Vigie, u16, u16, PathBuf) {
    let demo = Demo::get();
    let (pre, prod) = (free_port(), free_port());
    let mut v = Vigie::new(test, &[&format!("{test}-preprod"), &format!("{test}-prod")]);
    let tokens = v.dir.join("tokens");
    std::fs::write(
        &tokens,
        format!("# people of the web view\nalice:{TOKEN}\n"),
    )
    .unwrap();
    v.extra_args = vec!["--web-token-file".into(), tokens.display().to_string()];
    v.write("base.yaml", &vm_manifests(test, demo, IMAGE_ARTIFACT));
    v.write(
        "preprod.yaml",
        &release(test, "preprod", Some(demo.sha("good")), pre, ""),
    );
    v.write("prod.yaml", &release(test, "prod", None, prod, ""));
    v.start();
    (v, pre, prod, tokens)
}

fn cell(env: &str, phase: &str) -> String {
    format!("td[data-env=\"{env}\"][data-phase=\"{phase}\"]")
}

#[test]
#[allow(clippy::too_many_lines, reason = "one scenario, read top to bottom")]
fn the_grid_follows_a_rollback_live_and_a_person_promotes_with_deploy_typed() {
    if !docker_available() || !browser::browser_available() {
        return;
    }
    let demo = Demo::get();
    let (a, b) = (demo.sha("good"), demo.sha("bad"));
    let (v, pre, _prod, _) = start("wv");
    let base = format!("http://127.0.0.1:{}", v.port);
    v.wait_phase("wv-preprod", "Verifying", T);
    assert_eq!(v.verdict("app", a, "success"), 202);
    v.wait_phase("wv-preprod", "Validated", T);

    let browser = Browser::start();
    browser.goto(&format!("{base}/"));
    browser.wait_for(&cell("wv-preprod", "validated"), LIVE);
    // The cell names what runs, with its commit's subject (read in the background).
    let subject = docker::git_subject(&demo.repo, a);
    browser.wait_text("td[data-env=\"wv-preprod\"] .subject", &subject, LIVE);
    let sha = settled(|| browser.find("td[data-env=\"wv-preprod\"] .sha").text());
    assert!(sha.contains(&a[..7]), "the short SHA of what runs: {sha}");
    // Environments come in promotion order: preprod, then prod (promoted from it).
    let heads: Vec<String> = browser
        .find_all("table.grid thead th[data-env]")
        .iter()
        .map(|h| h.attribute("data-env").unwrap_or_default())
        .collect();
    assert_eq!(heads, ["wv-preprod", "wv-prod"]);
    screenshot(&browser, "grid");

    // A mark that a reload would lose: the page must change without one.
    browser.execute_script("window.__kept = 42; return true;", &[]);
    v.write("preprod.yaml", &release("wv", "preprod", Some(b), pre, ""));
    browser.wait_for(&cell("wv-preprod", "verifying"), T);
    assert_eq!(v.verdict("app", b, "failure"), 202);
    let rolled = browser.wait_for(&cell("wv-preprod", "rolled-back"), LIVE);
    assert!(rolled.text().contains("quarantined"), "{}", rolled.text());
    assert!(rolled.text().contains(&b[..7]), "{}", rolled.text());
    assert_eq!(
        browser.execute_script("return window.__kept;", &[]),
        serde_json::json!(42),
        "the grid changed without a reload"
    );
    screenshot(&browser, "grid-rolled-back");

    // Nobody logged in: the pages say so, and actions are refused.
    browser.goto(&format!("{base}/releases/default/app-prod"));
    browser.wait_text("section.actions", "Log in", LIVE);
    let (status, _) = post_form(
        v.port,
        "/releases/default/app-prod/promote",
        None,
        &format!("confirm=DEPLOY&sha={a}&csrf=x"),
    );
    assert_eq!(status, 401, "an anonymous promotion");
    let (status, _) = post_form(
        v.port,
        "/releases/default/app-prod/promote",
        Some("forged.session"),
        &format!("confirm=DEPLOY&sha={a}&csrf=x"),
    );
    assert_eq!(status, 401, "a forged session is nobody");

    // A wrong token is refused; the right one logs in.
    browser.goto(&format!("{base}/login"));
    browser.find("#token").send_keys("not-the-token-0123456789");
    browser.find("#login-button").click();
    browser.wait_text("main", "not in the token file", LIVE);
    assert!(browser.cookie("vigie_session").is_none());
    browser.find("#token").send_keys(TOKEN);
    browser.find("#login-button").click();
    browser.wait_text("header", "alice", LIVE);
    let session = browser.cookie("vigie_session").expect("a session cookie");
    assert_eq!(
        session.http_only,
        Some(true),
        "the session cookie is HttpOnly"
    );

    // Promote A to prod: both sides shown, DEPLOY typed.
    browser.goto(&format!("{base}/releases/default/app-prod"));
    settled(|| browser.find("#promote").click());
    browser.wait_text("main", "From wv-preprod", LIVE);
    assert!(browser.body_text().contains(&a[..7]));
    let confirm = browser.find("#confirm");
    let button = browser.find("#confirm-button");
    confirm.send_keys("DEPLOX");
    assert!(!button.is_enabled(), "a mistyped word cannot be sent");
    confirm.clear();
    confirm.send_keys("DEPLOY");
    assert!(button.is_enabled());
    browser
        .find("input[name=reason]")
        .send_keys("release train of the week");
    screenshot(&browser, "promote");
    button.click();
    browser.wait_text("body", "Your promotion is recorded", LIVE);
    v.wait_phase("wv-prod", "Validated", T);
    let state = v.state();
    let approval = state.requests["default/app-prod"]
        .approval
        .clone()
        .expect("the promotion's approval");
    assert_eq!((approval.by.as_str(), approval.sha.as_str()), ("alice", a));
    browser.wait_for(&cell("wv-prod", "validated"), LIVE);

    // A forged CSRF token is refused; nothing changes.
    browser.goto(&format!("{base}/releases/default/app-preprod"));
    focus(&browser, "form.clear input[name=reason]");
    let form = browser.find("form.clear");
    form.find("input[name=reason]")
        .send_keys("the flaky test is fixed");
    browser.execute_script(
        "document.querySelector('form.clear input[name=csrf]').value = 'forged'; return true;",
        &[],
    );
    form.find("button").click();
    browser.wait_text("main", "CSRF token does not belong to your session", LIVE);
    assert_eq!(
        v.row("wv-preprod").unwrap().quarantined,
        [b.to_owned()],
        "still quarantined"
    );
    // The same form, unforged, clears the quarantine on the record.
    browser.goto(&format!("{base}/releases/default/app-preprod"));
    focus(&browser, "form.clear input[name=reason]");
    let form = browser.find("form.clear");
    form.find("input[name=reason]")
        .send_keys("the flaky test is fixed");
    form.find("button").click();
    browser.wait_text("body", "quarantine clearance is recorded", LIVE);
    // Lifted on the record; the manifest still asks for B, so B is tried again.
    let history = wait_for(T, "the clearance in the history", || {
        let history = v.state().releases["default/app-preprod"]
            .status
            .history
            .clone();
        history
            .iter()
            .any(|h| h.event == HistoryEvent::QuarantineCleared)
            .then_some(history)
    });
    let at = history
        .iter()
        .position(|h| h.event == HistoryEvent::QuarantineCleared)
        .unwrap();
    assert_eq!(history[at].by.as_deref(), Some("alice"));
    assert_eq!(history[at].sha.as_str(), b);
    wait_for(T, "B deployed again after the clearance", || {
        v.state().releases["default/app-preprod"].status.history[at..]
            .iter()
            .any(|h| h.event == HistoryEvent::Deployed && h.sha.as_str() == b)
            .then_some(())
    });
    browser.wait_text("ol.history", "quarantine cleared", LIVE);
    browser.wait_for("svg.release-timeline", LIVE);
    screenshot(&browser, "release");
    browser.execute_script(
        "const s = document.querySelector('svg.release-timeline'); \
         (s.closest('section') || s).scrollIntoView({block: 'start'}); return true;",
        &[],
    );
    screenshot(&browser, "release-timeline");

    // Logging out ends the session.
    settled(|| browser.find("header button").click());
    browser.wait_text("header", "Log in", LIVE);
    assert!(browser.cookie("vigie_session").is_none());
}

#[test]
fn the_pages_work_by_keyboard_and_on_a_phone_and_send_a_strict_policy() {
    if !docker_available() || !browser::browser_available() {
        return;
    }
    let demo = Demo::get();
    let (v, ..) = start("wk");
    let base = format!("http://127.0.0.1:{}", v.port);
    v.wait_phase("wk-preprod", "Verifying", T);
    assert_eq!(v.verdict("app", demo.sha("good"), "success"), 202);
    v.wait_phase("wk-preprod", "Validated", T);

    // Every answer carries the policy; no asset comes from elsewhere.
    let mut stream = TcpStream::connect(("127.0.0.1", v.port)).unwrap();
    write!(
        stream,
        "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let head = response.split("\r\n\r\n").next().unwrap().to_lowercase();
    assert!(
        head.contains("content-security-policy: default-src 'none'; script-src 'self'"),
        "{head}"
    );
    assert!(head.contains("x-frame-options: deny"), "{head}");
    let page = http_get(v.port, "/").unwrap().1;
    assert!(!page.contains("src=\"http") && !page.contains("stylesheet\" href=\"http"));
    assert!(
        !page.contains("<style") && !page.contains(" style="),
        "no inline style"
    );
    assert_eq!(
        page.matches("<script").count(),
        page.matches("<script src=\"/assets/app.js\"").count(),
        "no inline script"
    );

    // By keyboard: Tab reaches a cell, Enter opens its Release.
    let browser = Browser::start();
    browser.goto(&format!("{base}/"));
    browser.wait_for(&cell("wk-preprod", "validated"), LIVE);
    let mut reached = false;
    for _ in 0..12 {
        let focused = browser.tab();
        if focused.attribute("class").as_deref() == Some("open") {
            reached = true;
            break;
        }
    }
    assert!(reached, "Tab reaches the first cell's link");
    browser.press(&[key::ENTER]);
    browser.wait_until(LIVE, "the Release page", || {
        browser
            .current_url()
            .contains("/releases/default/app-")
            .then_some(())
    });
    assert!(
        browser
            .console_log()
            .iter()
            .all(|l| !l.message.contains("Content Security Policy")),
        "no script or style is refused by the policy"
    );

    // On a phone: the page fits the screen's width; the grid scrolls inside it.
    let phone = Browser::start_phone();
    phone.goto(&format!("{base}/"));
    phone.wait_for(&cell("wk-preprod", "validated"), LIVE);
    let overflow = phone.execute_script(
        "return document.documentElement.scrollWidth - window.innerWidth;",
        &[],
    );
    assert!(
        overflow.as_i64().unwrap_or(1) <= 0,
        "the page is wider than the phone: {overflow}"
    );
    screenshot(&phone, "phone");
}
