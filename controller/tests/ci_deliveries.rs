//! CI deliveries as real organisations send them, received by `vigie run`: GitHub's and
//! GitLab's published example payloads (tests/fixtures), changed only in SHA,
//! conclusion and repository; a CodeLocation's own `/hooks/ci` key; a GitLab project
//! named by its numeric id or by its path in another case; deliveries for a repository
//! no CodeLocation watches. No Docker engine is needed: the environment's engine is
//! unreachable and only what is recorded is read.

mod docker;
mod skip;

use std::{fmt::Write, time::Duration};

use docker::{SECRET, Vigie, http_post_reply};
use vigie::{api::release::CiState, ci::webhook};

const GITHUB_SECRET: &str = "github-hook-secret";
const GITLAB_TOKEN: &str = "gitlab-hook-token";
const OWN_KEY: &str = "the-location-s-own-key";

fn manifests(dir: &std::path::Path) -> String {
    let file = |name: &str| dir.join(name).display().to_string();
    format!(
        r#"apiVersion: vigie.dev/v1alpha1
kind: Environment
metadata: {{name: preprod}}
spec:
  backend: {{docker: {{host: "tcp://127.0.0.1:9"}}}}
---
apiVersion: vigie.dev/v1alpha1
kind: CodeLocation
metadata: {{name: app}}
spec:
  repo: {{url: "https://git.example/app.git"}}
  ci:
    github: {{repository: Octo-Org/Octo-Repo, apiUrl: "http://127.0.0.1:9", webhookSecret: {{file: "{github}"}}}}
    requiredChecks: [test]
    polling: never
  artifact: {{image: {{template: "app:{{sha}}"}}}}
---
apiVersion: vigie.dev/v1alpha1
kind: CodeLocation
metadata: {{name: own}}
spec:
  repo: {{url: "https://git.example/own.git"}}
  ci: {{webhook: {{secret: {{file: "{own}"}}}}}}
  artifact: {{image: {{template: "own:{{sha}}"}}}}
---
apiVersion: vigie.dev/v1alpha1
kind: CodeLocation
metadata: {{name: shared}}
spec:
  repo: {{url: "https://git.example/shared.git"}}
  ci: {{webhook: {{}}}}
  artifact: {{image: {{template: "shared:{{sha}}"}}}}
---
apiVersion: vigie.dev/v1alpha1
kind: CodeLocation
metadata: {{name: by-id}}
spec:
  repo: {{url: "https://git.example/by-id.git"}}
  ci: {{gitlab: {{project: "1", apiUrl: "http://127.0.0.1:9/api/v4", webhookToken: {{file: "{gitlab}"}}}}, polling: never}}
  artifact: {{image: {{template: "by-id:{{sha}}"}}}}
---
apiVersion: vigie.dev/v1alpha1
kind: CodeLocation
metadata: {{name: by-path}}
spec:
  repo: {{url: "https://git.example/by-path.git"}}
  ci: {{gitlab: {{project: GitLab-Org/GitLab-Test, apiUrl: "http://127.0.0.1:9/api/v4", webhookToken: {{file: "{gitlab}"}}}}, polling: never}}
  artifact: {{image: {{template: "by-path:{{sha}}"}}}}
"#,
        github = file("github-secret"),
        own = file("own-key"),
        gitlab = file("gitlab-token"),
    )
}

fn started(test: &str) -> Vigie {
    let mut vigie = Vigie::new(test, &[]);
    std::fs::write(vigie.dir.join("github-secret"), GITHUB_SECRET).unwrap();
    std::fs::write(vigie.dir.join("own-key"), OWN_KEY).unwrap();
    std::fs::write(vigie.dir.join("gitlab-token"), GITLAB_TOKEN).unwrap();
    vigie.write("app.yaml", &manifests(&vigie.dir));
    vigie.start();
    vigie
}

fn sha(c: char) -> String {
    c.to_string().repeat(40)
}

/// A payload GitHub published, with `edit` applied.
fn published(path: &str, edit: impl FnOnce(&mut serde_json::Value)) -> Vec<u8> {
    let path = format!("{}/tests/fixtures/{path}.json", env!("CARGO_MANIFEST_DIR"));
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    edit(&mut v);
    serde_json::to_vec(&v).unwrap()
}

/// Posts a GitHub delivery; the status and the `outcome` of the answer.
fn github(v: &Vigie, event: &str, delivery: &str, body: &[u8]) -> (u16, String) {
    let (status, reply) = http_post_reply(
        v.port,
        "/hooks/github",
        &[
            ("X-GitHub-Event", event.to_owned()),
            ("X-GitHub-Delivery", delivery.to_owned()),
            (
                "X-Hub-Signature-256",
                webhook::sign(GITHUB_SECRET.as_bytes(), body),
            ),
        ],
        body,
    );
    (status, outcome(&reply))
}

fn gitlab(v: &Vigie, body: &[u8]) -> (u16, String) {
    let (status, reply) = http_post_reply(
        v.port,
        "/hooks/gitlab",
        &[
            ("X-Gitlab-Event", "Pipeline Hook".to_owned()),
            ("X-Gitlab-Token", GITLAB_TOKEN.to_owned()),
        ],
        body,
    );
    (status, outcome(&reply))
}

/// Posts a `/hooks/ci` verdict signed with `key`.
fn ci(v: &Vigie, key: &str, location: &str, sha: &str) -> (u16, String) {
    let body = format!(r#"{{"codeLocation":"{location}","sha":"{sha}","state":"success"}}"#);
    let (status, reply) = http_post_reply(
        v.port,
        "/hooks/ci",
        &[(
            webhook::SIGNATURE_HEADER,
            webhook::sign(key.as_bytes(), body.as_bytes()),
        )],
        body.as_bytes(),
    );
    (status, reply)
}

fn outcome(reply: &str) -> String {
    serde_json::from_str::<serde_json::Value>(reply)
        .ok()
        .and_then(|v| v["outcome"].as_str().map(str::to_owned))
        .unwrap_or_else(|| reply.to_owned())
}

/// The verdict recorded for `(location, sha)`: state and failing checks.
fn recorded(v: &Vigie, location: &str, sha: &str) -> Option<(CiState, Vec<String>)> {
    let state = v.state();
    let stored = state.verdicts.stored(location);
    let verdict = stored.get(&sha.parse().unwrap())?;
    Some((verdict.state, verdict.failed_checks.clone()))
}

#[test]
fn a_published_workflow_run_is_judged_under_the_workflow_name() {
    let mut v = started("ci-deliveries-workflow-run");
    let (a, b) = (sha('a'), sha('b'));
    let body = published("github/workflow_run.completed", |p| {
        p["workflow_run"]["head_sha"] = a.clone().into();
        p["repository"]["full_name"] = "octo-org/octo-repo".into();
    });
    assert_eq!(github(&v, "workflow_run", "wr-1", &body).0, 202);
    assert_eq!(
        recorded(&v, "app", &a),
        Some((CiState::Success, vec![])),
        "requiredChecks [test] is met by the workflow named test (workflow.name); \
         the run's own name is empty in GitHub's example"
    );
    let body = published("github/workflow_run.completed", |p| {
        p["workflow_run"]["head_sha"] = b.clone().into();
        p["workflow_run"]["conclusion"] = "action_required".into();
        p["repository"]["full_name"] = "octo-org/octo-repo".into();
    });
    assert_eq!(github(&v, "workflow_run", "wr-2", &body).0, 202);
    assert_eq!(
        recorded(&v, "app", &b),
        Some((CiState::Failure, vec!["test".to_owned()])),
        "the failing check is named"
    );
    v.terminate();
}

#[test]
fn a_location_s_own_webhook_key_signs_its_verdicts_and_only_its_own() {
    let mut v = started("ci-deliveries-own-key");
    let a = sha('a');
    let (status, reply) = ci(&v, OWN_KEY, "own", &a);
    assert_eq!(status, 202, "{reply}");
    assert_eq!(recorded(&v, "own", &a), Some((CiState::Success, vec![])));
    let (status, reply) = ci(&v, SECRET, "own", &sha('b'));
    assert_eq!(
        status, 401,
        "the process-wide key does not speak for a location with its own: {reply}"
    );
    assert!(reply.contains("CodeLocation \\\"own\\\""), "{reply}");
    assert_eq!(ci(&v, SECRET, "shared", &a).0, 202, "the process-wide key");
    assert_eq!(
        ci(&v, OWN_KEY, "shared", &sha('c')).0,
        401,
        "a location's key does not speak for another location"
    );
    assert_eq!(recorded(&v, "shared", &sha('c')), None);
    assert_eq!(ci(&v, "guess", "own", &sha('d')).0, 401);
    v.terminate();
}

#[test]
fn a_gitlab_project_is_matched_by_its_numeric_id_and_its_path_in_any_case() {
    let mut v = started("ci-deliveries-gitlab-project");
    let a = sha('a');
    let body = published("gitlab/pipeline", |p| {
        p["object_attributes"]["sha"] = a.clone().into();
        p["object_attributes"]["status"] = "failed".into();
    });
    assert_eq!(gitlab(&v, &body), (202, "accepted".to_owned()));
    for location in ["by-id", "by-path"] {
        assert_eq!(
            recorded(&v, location, &a).map(|r| r.0),
            Some(CiState::Failure),
            "{location}: project 1 is gitlab-org/gitlab-test"
        );
    }
    v.terminate();
}

#[test]
fn deliveries_for_a_repository_no_location_watches_are_acknowledged_as_ignored() {
    let mut v = started("ci-deliveries-unwatched");
    let a = sha('a');
    let body = published("github/check_run.completed", |p| {
        p["check_run"]["head_sha"] = a.clone().into();
        p["repository"]["full_name"] = "someone/else".into();
    });
    assert_eq!(
        github(&v, "check_run", "cr-1", &body),
        (202, "ignored".to_owned()),
        "GitHub shows anything but 2xx as a failed delivery"
    );
    let body = published("gitlab/pipeline", |p| {
        p["object_attributes"]["sha"] = a.clone().into();
        p["project"]["id"] = 77.into();
        p["project"]["path_with_namespace"] = "someone/else".into();
    });
    assert_eq!(
        gitlab(&v, &body),
        (202, "ignored".to_owned()),
        "GitLab disables hooks that keep failing"
    );
    for location in ["app", "by-id", "by-path"] {
        assert_eq!(recorded(&v, location, &a), None, "{location}");
    }
    // A wrong signature is still refused: ignoring comes after verifying.
    let (status, _) = http_post_reply(
        v.port,
        "/hooks/github",
        &[
            ("X-GitHub-Event", "check_run".to_owned()),
            ("X-GitHub-Delivery", "cr-2".to_owned()),
            ("X-Hub-Signature-256", webhook::sign(b"guess", &body)),
        ],
        &body,
    );
    assert_eq!(status, 401);
    v.terminate();
}

/// A log line without its terminal colours.
fn plain(line: &str) -> String {
    let mut out = String::new();
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            chars.by_ref().find(|c| *c == 'm');
        } else {
            out.push(c);
        }
    }
    out
}

/// A verdict reconciles the Releases of the code location it names and no other, with
/// no refresh of the manifests: fifty Releases do not each ask their engine for their
/// containers because one of them got a verdict.
#[test]
fn a_verdict_wakes_the_releases_of_its_code_location_only() {
    let mut v = Vigie::new("ci-deliveries-wakes-one-location", &[]);
    std::fs::write(v.dir.join("github-secret"), GITHUB_SECRET).unwrap();
    std::fs::write(v.dir.join("own-key"), OWN_KEY).unwrap();
    std::fs::write(v.dir.join("gitlab-token"), GITLAB_TOKEN).unwrap();
    let mut releases = String::new();
    for l in ["shared", "by-id", "by-path"] {
        let _ = write!(
            releases,
            "---\napiVersion: vigie.dev/v1alpha1\nkind: Release\nmetadata: {{name: {l}-preprod}}\nspec: {{codeLocation: {l}, environment: preprod, revision: {}}}\n",
            sha('c')
        );
    }
    v.write("app.yaml", &(manifests(&v.dir) + &releases));
    // No refresh by the clock during the test: only the verdict wakes anything.
    v.interval = 3600.0;
    v.start();
    let refreshes = |v: &Vigie| v.log().matches(" refreshed").count();
    let before = refreshes(&v);
    assert_eq!(v.verdict("shared", &sha('c'), "failure"), 202);
    let woken = docker::wait_for(Duration::from_secs(10), "the verdict to wake", || {
        v.log()
            .lines()
            .map(plain)
            .find(|l| l.contains(" woken") && l.contains("\"shared\""))
    });
    assert!(
        woken.contains("releases=1"),
        "one Release of the three is woken: {woken}"
    );
    assert_eq!(
        refreshes(&v),
        before,
        "a verdict does not refresh the manifests nor wake every Release"
    );
    v.terminate();
}
