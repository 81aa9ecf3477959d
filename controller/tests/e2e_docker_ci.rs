//! End to end: GitHub and GitLab webhook deliveries, shaped as their documentation
//! shows them, judging SHAs deployed on the real Docker engine.

mod docker;
mod providers;
mod skip;

use std::time::Duration;

use docker::{
    Demo, IMAGE_ARTIFACT, Vigie, docker_available, free_port, http_get, http_post, release,
    vm_manifests, wait_for,
};
use providers::{counting, fake_github, fake_gitlab};
use vigie::api::release::HistoryEvent;

const T: Duration = Duration::from_secs(60);
const SECRET: &str = "github-webhook-secret";

fn check_run(
    id: u64,
    sha: &str,
    name: &str,
    status: &str,
    conclusion: Option<&str>,
    repo: &str,
) -> String {
    let conclusion = conclusion.map_or("null".to_owned(), |c| format!("\"{c}\""));
    format!(
        r#"{{"action": "completed", "check_run": {{"id": {id}, "name": "{name}", "head_sha": "{sha}",
        "html_url": "https://github.com/{repo}/runs/{id}", "details_url": "https://ci.example/{id}",
        "status": "{status}", "conclusion": {conclusion}, "started_at": "2026-11-23T10:00:00Z",
        "check_suite": {{"id": 1}}}}, "repository": {{"full_name": "{repo}"}}, "sender": {{"login": "octocat"}}}}"#
    )
}

fn github(v: &Vigie, event: &str, delivery: &str, body: &str, secret: &str) -> u16 {
    let signature = vigie::ci::webhook::sign(secret.as_bytes(), body.as_bytes());
    http_post(
        v.port,
        "/hooks/github",
        &[
            ("X-GitHub-Event", event.to_owned()),
            ("X-GitHub-Delivery", delivery.to_owned()),
            ("X-Hub-Signature-256", signature),
        ],
        body.as_bytes(),
    )
}

fn serving(port: u16, sha: &str) {
    wait_for(T, "serving", || {
        http_get(port, "/").filter(|(s, b)| *s == 200 && b.contains(sha))
    });
}

#[test]
#[allow(clippy::too_many_lines, reason = "one scenario, read top to bottom")]
fn github_check_runs_validate_and_roll_back() {
    if !docker_available() {
        return;
    }
    let demo = Demo::get();
    let (a, b) = (demo.sha("good"), demo.sha("bad"));
    let port = free_port();
    let mut v = Vigie::new("gh", &["gh-preprod", "gh-prod"]);
    std::fs::write(v.dir.join("gh-secret"), format!("{SECRET}\n")).unwrap();
    let ci = format!(
        "  ci: {{github: {{repository: octo/app, webhookSecret: {{file: \"{}\"}}}}, requiredChecks: [\"test*\"]}}",
        v.dir.join("gh-secret").display()
    );
    v.write(
        "base.yaml",
        &vm_manifests("gh", demo, IMAGE_ARTIFACT).replace("  ci: {webhook: {}}", &ci),
    );
    v.write("preprod.yaml", &release("gh", "preprod", Some(a), port, ""));
    v.start();
    v.wait_phase("gh-preprod", "Verifying", T);

    // Refusals first: nothing changes.
    let body = check_run(
        10,
        a,
        "test (3.13)",
        "completed",
        Some("success"),
        "octo/app",
    );
    assert_eq!(
        github(&v, "check_run", "d-0", &body, "wrong"),
        401,
        "wrong secret"
    );
    assert_eq!(
        http_post(
            v.port,
            "/hooks/github",
            &[("X-GitHub-Event", "check_run".into())],
            body.as_bytes()
        ),
        401,
        "unsigned"
    );
    assert_eq!(
        github(
            &v,
            "ping",
            "d-ping",
            r#"{"zen": "Design for failure.", "hook_id": 1}"#,
            SECRET
        ),
        200
    );
    assert_eq!(
        github(&v, "push", "d-push", "{}", SECRET),
        400,
        "a push event without its fields"
    );
    assert_eq!(
        github(&v, "issues", "d-issues", "{}", SECRET),
        202,
        "unknown events are acknowledged and ignored"
    );
    let other = check_run(
        11,
        a,
        "test (3.13)",
        "completed",
        Some("success"),
        "someone/else",
    );
    assert_eq!(
        github(&v, "check_run", "d-other", &other, SECRET),
        202,
        "a repository no CodeLocation watches: acknowledged, ignored"
    );
    let wrong_sha = check_run(
        13,
        "not-a-sha",
        "test (3.13)",
        "completed",
        Some("success"),
        "octo/app",
    );
    assert_eq!(
        github(&v, "check_run", "d-wrong", &wrong_sha, SECRET),
        400,
        "a wrong SHA in the payload"
    );
    let huge = check_run(
        14,
        a,
        &"x".repeat(1024 * 1024),
        "completed",
        Some("success"),
        "octo/app",
    );
    assert_eq!(
        github(&v, "check_run", "d-huge", &huge, SECRET),
        413,
        "over 1 MiB"
    );
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(v.row("gh-preprod").unwrap().phase, "Verifying");

    // A required check passes, an extra one fails: validated.
    assert_eq!(
        github(
            &v,
            "check_run",
            "d-docs",
            &check_run(12, a, "docs", "completed", Some("failure"), "octo/app"),
            SECRET
        ),
        202
    );
    assert_eq!(github(&v, "check_run", "d-1", &body, SECRET), 202);
    assert_eq!(
        github(&v, "check_run", "d-1", &body, SECRET),
        409,
        "a replayed delivery"
    );
    let row = v.wait_phase("gh-preprod", "Validated", T);
    assert_eq!(row.validated_sha.as_deref(), Some(a));

    // B: running, then failing: rolled back, with the failing check and its link.
    v.write("preprod.yaml", &release("gh", "preprod", Some(b), port, ""));
    v.wait_phase("gh-preprod", "Verifying", T);
    assert_eq!(
        github(
            &v,
            "check_run",
            "d-2",
            &check_run(20, b, "test (3.13)", "in_progress", None, "octo/app"),
            SECRET
        ),
        202
    );
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        v.row("gh-preprod").unwrap().phase,
        "Verifying",
        "a running check waits"
    );
    assert_eq!(
        github(
            &v,
            "check_run",
            "d-3",
            &check_run(
                20,
                b,
                "test (3.13)",
                "completed",
                Some("failure"),
                "octo/app"
            ),
            SECRET
        ),
        202
    );
    let row = v.wait_phase("gh-preprod", "RolledBack", T);
    serving(port, a);
    assert_eq!(
        row.ci_url.as_deref(),
        Some("https://github.com/octo/app/runs/20")
    );
    let status = v.state().releases["default/app-preprod"].status.clone();
    assert_eq!(
        status.ci.unwrap().failed_checks,
        vec!["test (3.13)".to_owned()]
    );

    // A re-run turns it green: CI made B roll back, so its quarantine is lifted; B (still
    // asked for) is deployed again and validated, and the rollback stays on the record.
    assert_eq!(
        github(
            &v,
            "check_run",
            "d-4",
            &check_run(
                21,
                b,
                "test (3.13)",
                "completed",
                Some("success"),
                "octo/app"
            ),
            SECRET
        ),
        202
    );
    let row = v.wait_phase("gh-preprod", "Validated", T);
    assert_eq!(row.deployed_sha.as_deref(), Some(b));
    assert!(row.quarantined.is_empty(), "{:?}", row.quarantined);
    serving(port, b);
    let status = v.state().releases["default/app-preprod"].status.clone();
    let events: Vec<_> = status
        .history
        .iter()
        .filter(|h| h.sha.as_str() == b)
        .map(|h| h.event)
        .collect();
    assert_eq!(
        events,
        vec![
            HistoryEvent::Deployed,
            HistoryEvent::RolledBack,
            HistoryEvent::CiPassed,
            HistoryEvent::Deployed,
            HistoryEvent::Validated
        ]
    );
    assert_eq!(
        status.validated_sha.as_ref().map(vigie::api::Sha::as_str),
        Some(b)
    );
}

#[test]
fn gitlab_pipeline_hooks_validate_and_roll_back() {
    if !docker_available() {
        return;
    }
    let demo = Demo::get();
    let (a, b) = (demo.sha("good"), demo.sha("bad"));
    let port = free_port();
    let mut v = Vigie::new("gl", &["gl-preprod", "gl-prod"]);
    std::fs::write(v.dir.join("gl-token"), "gitlab-token").unwrap();
    let ci = format!(
        "  ci: {{gitlab: {{project: data/app, webhookToken: {{file: \"{}\"}}}}}}",
        v.dir.join("gl-token").display()
    );
    v.write(
        "base.yaml",
        &vm_manifests("gl", demo, IMAGE_ARTIFACT).replace("  ci: {webhook: {}}", &ci),
    );
    v.write("preprod.yaml", &release("gl", "preprod", Some(a), port, ""));
    v.start();
    v.wait_phase("gl-preprod", "Verifying", T);
    let hook = |id: u64, sha: &str, status: &str| {
        format!(
            r#"{{"object_kind": "pipeline", "object_attributes": {{"id": {id}, "iid": {id}, "ref": "main", "tag": false,
            "sha": "{sha}", "status": "{status}", "detailed_status": "{status}", "stages": ["test"],
            "url": "https://gitlab.example/data/app/-/pipelines/{id}"}},
            "project": {{"id": 7, "name": "app", "path_with_namespace": "data/app", "web_url": "https://gitlab.example/data/app"}},
            "builds": []}}"#
        )
    };
    let deliver = |token: &str, body: &str| {
        http_post(
            v.port,
            "/hooks/gitlab",
            &[
                ("X-Gitlab-Token", token.to_owned()),
                ("X-Gitlab-Event", "Pipeline Hook".into()),
            ],
            body.as_bytes(),
        )
    };
    assert_eq!(deliver("wrong", &hook(1, a, "success")), 401);
    assert_eq!(deliver("gitlab-token", &hook(1, a, "running")), 202);
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(v.row("gl-preprod").unwrap().phase, "Verifying");
    assert_eq!(deliver("gitlab-token", &hook(1, a, "success")), 202);
    v.wait_phase("gl-preprod", "Validated", T);
    v.write("preprod.yaml", &release("gl", "preprod", Some(b), port, ""));
    v.wait_phase("gl-preprod", "Verifying", T);
    assert_eq!(deliver("gitlab-token", &hook(2, b, "failed")), 202);
    let row = v.wait_phase("gl-preprod", "RolledBack", T);
    assert_eq!(
        row.ci_url.as_deref(),
        Some("https://gitlab.example/data/app/-/pipelines/2")
    );
    serving(port, a);
}

#[test]
fn github_is_polled_for_the_sha_in_flight() {
    if !docker_available() {
        return;
    }
    let demo = Demo::get();
    let (a, b) = (demo.sha("good"), demo.sha("bad"));
    let conclusions = std::sync::Arc::new(std::sync::Mutex::new(std::collections::HashMap::new()));
    let api = fake_github(conclusions.clone());
    let port = free_port();
    let mut v = Vigie::new("ghpoll", &["ghpoll-preprod", "ghpoll-prod"]);
    let ci = format!(
        "  ci: {{github: {{repository: octo/app, apiUrl: \"http://127.0.0.1:{api}\"}}, pollInterval: 5s}}"
    );
    v.write(
        "base.yaml",
        &vm_manifests("ghpoll", demo, IMAGE_ARTIFACT).replace("  ci: {webhook: {}}", &ci),
    );
    v.write(
        "preprod.yaml",
        &release("ghpoll", "preprod", Some(a), port, ""),
    );
    v.start();
    v.wait_phase("ghpoll-preprod", "Verifying", T);
    conclusions
        .lock()
        .unwrap()
        .insert(a.to_owned(), "in_progress");
    std::thread::sleep(Duration::from_secs(6));
    assert_eq!(
        v.row("ghpoll-preprod").unwrap().phase,
        "Verifying",
        "a running check waits"
    );
    conclusions.lock().unwrap().insert(a.to_owned(), "success");
    v.wait_phase("ghpoll-preprod", "Validated", T);
    conclusions.lock().unwrap().insert(b.to_owned(), "failure");
    v.write(
        "preprod.yaml",
        &release("ghpoll", "preprod", Some(b), port, ""),
    );
    let row = v.wait_phase("ghpoll-preprod", "RolledBack", T);
    assert_eq!(
        row.ci_url.as_deref(),
        Some("https://github.com/octo/app/runs/1")
    );
    serving(port, a);
}

#[test]
fn gitlab_is_polled_for_the_sha_in_flight() {
    if !docker_available() {
        return;
    }
    let demo = Demo::get();
    let (a, b) = (demo.sha("good"), demo.sha("bad"));
    let statuses = std::sync::Arc::new(std::sync::Mutex::new(std::collections::HashMap::new()));
    let api = fake_gitlab(statuses.clone());
    let port = free_port();
    let mut v = Vigie::new("glpoll", &["glpoll-preprod", "glpoll-prod"]);
    std::fs::write(v.dir.join("gl-token"), "read-api-token\n").unwrap();
    let ci = format!(
        "  ci: {{gitlab: {{project: data/app, apiUrl: \"http://127.0.0.1:{api}/api/v4\", token: {{file: \"{}\"}}}}, pollInterval: 5s}}",
        v.dir.join("gl-token").display()
    );
    v.write(
        "base.yaml",
        &vm_manifests("glpoll", demo, IMAGE_ARTIFACT).replace("  ci: {webhook: {}}", &ci),
    );
    v.write(
        "preprod.yaml",
        &release("glpoll", "preprod", Some(a), port, ""),
    );
    v.start();
    v.wait_phase("glpoll-preprod", "Verifying", T);
    statuses.lock().unwrap().insert(a.to_owned(), "success");
    v.wait_phase("glpoll-preprod", "Validated", T);
    statuses.lock().unwrap().insert(b.to_owned(), "failed");
    v.write(
        "preprod.yaml",
        &release("glpoll", "preprod", Some(b), port, ""),
    );
    let row = v.wait_phase("glpoll-preprod", "RolledBack", T);
    assert_eq!(
        row.ci_url.as_deref(),
        Some("https://gitlab.example/data/app/-/pipelines/47")
    );
    serving(port, a);
}

#[test]
#[allow(clippy::too_many_lines, reason = "one scenario, read top to bottom")]
fn github_is_polled_as_the_location_chooses_never_or_after_webhooks_fall_silent() {
    if !docker_available() {
        return;
    }
    let demo = Demo::get();
    let (a, b) = (demo.sha("good"), demo.sha("bad"));
    let conclusions = std::sync::Arc::new(std::sync::Mutex::new(std::collections::HashMap::new()));
    let (api, hits) = counting(fake_github(conclusions.clone()));
    let port = free_port();
    let mut v = Vigie::new("ghmode", &["ghmode-preprod", "ghmode-prod"]);
    let secret = v.dir.join("gh-secret");
    std::fs::write(&secret, SECRET).unwrap();
    let ci = |polling: &str| {
        format!(
            "  ci: {{github: {{repository: octo/app, apiUrl: \"http://127.0.0.1:{api}\", webhookSecret: {{file: \"{}\"}}}}, requiredChecks: [test], pollInterval: 5s{polling}}}",
            secret.display()
        )
    };
    let base = vm_manifests("ghmode", demo, IMAGE_ARTIFACT);
    v.write(
        "base.yaml",
        &base.replace("  ci: {webhook: {}}", &ci(", polling: never")),
    );
    v.write(
        "preprod.yaml",
        &release("ghmode", "preprod", Some(a), port, ""),
    );
    // polling: never — CI says success, but only a delivery may tell Vigie.
    conclusions.lock().unwrap().insert(a.to_owned(), "success");
    v.start();
    v.wait_phase("ghmode-preprod", "Verifying", T);
    std::thread::sleep(Duration::from_secs(7));
    assert_eq!(
        v.row("ghmode-preprod").unwrap().phase,
        "Verifying",
        "not polled: still waiting for a delivery"
    );
    // GitHub's published workflow_run example (workflow "test", an empty run name),
    // changed only in SHA and repository, meets requiredChecks [test].
    let mut run: serde_json::Value = serde_json::from_slice(
        &std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/github/workflow_run.completed.json"
        ))
        .unwrap(),
    )
    .unwrap();
    run["workflow_run"]["head_sha"] = a.into();
    run["repository"]["full_name"] = "octo/app".into();
    assert_eq!(
        github(&v, "workflow_run", "m-1", &run.to_string(), SECRET),
        202
    );
    v.wait_phase("ghmode-preprod", "Validated", T);
    assert_eq!(
        hits.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "polling: never asked the provider"
    );

    // The default with a webhook secret: webhooks, and polling once they fall silent.
    v.write(
        "base.yaml",
        &base.replace("  ci: {webhook: {}}", &ci(", pollFallbackAfter: 10s")),
    );
    std::thread::sleep(Duration::from_secs(2));
    conclusions.lock().unwrap().insert(b.to_owned(), "failure");
    v.write(
        "preprod.yaml",
        &release("ghmode", "preprod", Some(b), port, ""),
    );
    v.wait_phase("ghmode-preprod", "Verifying", T);
    let verifying = std::time::Instant::now();
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(
        hits.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "within the silence, the provider is not asked"
    );
    let row = v.wait_phase("ghmode-preprod", "RolledBack", T);
    assert!(
        verifying.elapsed() >= Duration::from_secs(5),
        "judged by a poll after the silence"
    );
    assert!(hits.load(std::sync::atomic::Ordering::SeqCst) > 0, "polled");
    assert_eq!(
        row.ci_url.as_deref(),
        Some("https://github.com/octo/app/runs/1"),
        "the polled verdict"
    );
    serving(port, a);
}
