//! Reporting back to the forge against local stand-ins of GitHub's and GitLab's APIs:
//! the lifecycle's statuses, one deployment per (environment, SHA) even across a
//! restart, rate limits and server errors retried without holding the reconcile, and
//! refusals not retried.

mod forges;

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use forges::{Fault, Forge, GITHUB_TOKEN, GITLAB_TOKEN};
use jiff::Timestamp;
use vigie::{
    api::{
        CodeLocation, Environment, Phase, Release, ReleaseStatus, Sha,
        release::{HistoryEntry, HistoryEvent, Rollout},
    },
    backend::Workload,
    forge::{Reporter, Retry},
    reconcile::{Forge as _, ReleaseKey, Subject},
};

const T: Duration = Duration::from_secs(20);

fn sha(c: char) -> Sha {
    c.to_string().repeat(40).parse().unwrap()
}

/// The Environment, CodeLocation and Release of one scenario, `ci` the location's CI.
struct World {
    key: ReleaseKey,
    environment: Environment,
    location: CodeLocation,
    release: Release,
    workload: Workload,
}

impl World {
    fn new(ci: &str) -> Self {
        let yaml = format!(
            r#"
apiVersion: vigie.dev/v1alpha1
kind: Environment
metadata: {{name: preprod, namespace: apps}}
spec:
  backend: {{docker: {{}}}}
  url: https://preprod.example.com
---
apiVersion: vigie.dev/v1alpha1
kind: CodeLocation
metadata: {{name: app, namespace: apps}}
spec:
  repo: {{url: "https://git.example/app.git"}}
  ci: {ci}
  artifact: {{image: {{template: "app:{{sha}}"}}}}
---
apiVersion: vigie.dev/v1alpha1
kind: Release
metadata: {{name: app-preprod, namespace: apps}}
spec: {{codeLocation: app, environment: preprod, revision: main}}
"#
        );
        let docs: Vec<serde_json::Value> = serde_norway::Deserializer::from_str(&yaml)
            .map(|d| serde::Deserialize::deserialize(d).unwrap())
            .collect();
        let environment: Environment = serde_json::from_value(docs[0].clone()).unwrap();
        let location: CodeLocation = serde_json::from_value(docs[1].clone()).unwrap();
        let release: Release = serde_json::from_value(docs[2].clone()).unwrap();
        let workload = Workload::resolve(
            "test",
            "app-preprod",
            &release.spec,
            &location.spec,
            &environment.spec,
        );
        Self {
            key: ReleaseKey::new("apps", "app-preprod"),
            environment,
            location,
            release,
            workload,
        }
    }

    /// Hands `status` to the reporter as a reconcile does; returns how long it took.
    fn report(&self, reporter: &Reporter, status: &ReleaseStatus) -> Duration {
        let subject = Subject {
            key: &self.key,
            spec: &self.release.spec,
            generation: None,
            environment: &self.environment.spec,
            windows: None,
            workload: &self.workload,
            ci: &self.location.spec.ci,
            upstream: None,
        };
        let started = Instant::now();
        reporter.report(&subject, status);
        started.elapsed()
    }
}

fn github_ci(forge: &Forge, token: &std::path::Path, report: &str) -> String {
    format!(
        r#"{{github: {{repository: octo/app, apiUrl: "{}", token: {{file: "{}"}}, report: {report}}}, requiredChecks: [test]}}"#,
        forge.github_api(),
        token.display()
    )
}

fn token_file(name: &str, token: &str) -> tempfile_path::Path {
    tempfile_path::Path::new(name, token)
}

/// A file holding a token, removed on drop.
mod tempfile_path {
    pub struct Path(std::path::PathBuf);
    impl Path {
        pub fn new(name: &str, token: &str) -> Self {
            let dir = std::env::temp_dir()
                .join(format!("vigie-forge-report-{}-{name}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            let file = dir.join("token");
            std::fs::write(&file, format!("{token}\n")).unwrap();
            Self(file)
        }
    }
    impl std::ops::Deref for Path {
        type Target = std::path::Path;
        fn deref(&self) -> &std::path::Path {
            &self.0
        }
    }
    impl Drop for Path {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(self.0.parent().unwrap());
        }
    }
}

fn reporter(public_url: Option<&str>, retry: Retry) -> Reporter {
    Reporter::new(
        Arc::default(),
        Arc::new(|_, source| vigie::secrets::resolve(source)),
        public_url.map(str::to_owned),
        prometheus_client::metrics::family::Family::default(),
        retry,
    )
}

fn quick() -> Retry {
    Retry {
        attempts: 5,
        first_delay: Duration::from_millis(200),
        max_delay: Duration::from_secs(2),
        timeout: Duration::from_secs(5),
        max_wait: Duration::from_secs(10),
        again_after: Duration::from_secs(60),
    }
}

fn at() -> Timestamp {
    "2026-12-02T10:00:00Z".parse().unwrap()
}

fn entry(event: HistoryEvent, s: &Sha) -> HistoryEntry {
    HistoryEntry {
        at: at(),
        event,
        sha: s.clone(),
        previous: None,
        by: None,
        reason: None,
        url: None,
        output: None,
    }
}

/// The status of the Release in `phase`, `validated` the last validated SHA, `rollout`
/// the SHA in flight, `history` what happened.
fn status(
    phase: Phase,
    validated: Option<&Sha>,
    rollout: Option<&Sha>,
    history: &[(HistoryEvent, &Sha)],
) -> ReleaseStatus {
    ReleaseStatus {
        phase,
        validated_sha: validated.cloned(),
        rollout: rollout.map(|s| Rollout {
            sha: s.clone(),
            rollback_point: validated.cloned(),
            started_at: at(),
            deployed_at: None,
            up_at: None,
            healthy_at: None,
            hooks_done: Vec::new(),
            failure: matches!(phase, Phase::RollingBack | Phase::RolledBack)
                .then(|| "CI failed: test".to_owned()),
        }),
        history: history.iter().map(|(e, s)| entry(*e, s)).collect(),
        ..ReleaseStatus::default()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn github_deployments_follow_deploy_validate_red_rollback_and_replace() {
    use HistoryEvent::{Deployed, RolledBack, Validated};
    let forge = Forge::start();
    let token = token_file("lifecycle", GITHUB_TOKEN);
    let w = World::new(&github_ci(
        &forge,
        &token,
        "{deployments: true, commitStatus: true}",
    ));
    let vigie = reporter(Some("https://vigie.example.com/"), quick());
    let (a, b, c) = (sha('a'), sha('b'), sha('c'));
    let mut history = vec![(Deployed, &a)];
    w.report(&vigie, &status(Phase::Deploying, None, Some(&a), &history));
    forge.wait(T, "A in progress", |f| {
        f.states("preprod", a.as_str()) == ["in_progress"]
    });
    history.push((Validated, &a));
    w.report(
        &vigie,
        &status(Phase::Validated, Some(&a), Some(&a), &history),
    );
    forge.wait(T, "A success", |f| {
        f.states("preprod", a.as_str()) == ["in_progress", "success"]
    });
    history.push((Deployed, &b));
    w.report(
        &vigie,
        &status(Phase::Verifying, Some(&a), Some(&b), &history),
    );
    forge.wait(T, "B in progress", |f| {
        f.states("preprod", b.as_str()) == ["in_progress"]
    });
    // Reported again (every reconcile does): nothing more is written.
    for _ in 0..5 {
        w.report(
            &vigie,
            &status(Phase::Verifying, Some(&a), Some(&b), &history),
        );
    }
    history.push((RolledBack, &b));
    w.report(
        &vigie,
        &status(Phase::RolledBack, Some(&a), Some(&b), &history),
    );
    forge.wait(T, "B failure", |f| {
        f.states("preprod", b.as_str()) == ["in_progress", "failure"]
    });
    history.extend([(Deployed, &c), (Validated, &c)]);
    w.report(
        &vigie,
        &status(Phase::Validated, Some(&c), Some(&c), &history),
    );
    forge.wait(T, "C success, A inactive", |f| {
        f.states("preprod", c.as_str()) == ["success"]
            && f.states("preprod", a.as_str()) == ["in_progress", "success", "inactive"]
    });
    // One deployment per (environment, SHA), as documented, linking back to Vigie.
    for s in [&a, &b, &c] {
        let found = forge.deployments("preprod", s.as_str());
        assert_eq!(found.len(), 1, "{found:#?}");
        assert_eq!(found[0]["task"], "deploy");
        assert_eq!(found[0]["payload"]["vigie"]["release"], "apps/app-preprod");
        assert_eq!(found[0]["transient_environment"], false);
    }
    let latest = forge.latest_status("preprod", b.as_str()).unwrap();
    assert_eq!(
        latest["log_url"],
        "https://vigie.example.com/releases/apps/app-preprod"
    );
    assert_eq!(latest["environment_url"], "https://preprod.example.com");
    assert_eq!(latest["auto_inactive"], false);
    assert_eq!(
        latest["description"],
        "bbbbbbb rolled back in preprod: CI failed: test"
    );
    // The commit statuses vigie/preprod, inactive leaving C's predecessor as it was.
    assert_eq!(
        forge.commit_states(b.as_str(), "vigie/preprod"),
        ["pending", "failure"]
    );
    forge.wait(T, "A's commit status", |f| {
        f.commit_states(a.as_str(), "vigie/preprod") == ["pending", "success"]
    });
    let posts = forge
        .requests("/statuses")
        .into_iter()
        .filter(|q| q.method == "POST")
        .count();
    // Deployment statuses: A 3, B 2, C 1; commit statuses: A 2, B 2, C 1.
    assert_eq!(posts, 6 + 5, "no status posted twice");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restarted_vigie_finds_its_deployment_and_creates_no_second_one() {
    use HistoryEvent::{Deployed, RolledBack, Validated};
    let forge = Forge::start();
    let token = token_file("restart", GITHUB_TOKEN);
    let w = World::new(&github_ci(&forge, &token, "{}"));
    let (a, b) = (sha('a'), sha('b'));
    let history = vec![(Validated, &a), (Deployed, &b)];
    let verifying = status(Phase::Verifying, Some(&a), Some(&b), &history);
    let first = reporter(None, quick());
    w.report(&first, &verifying);
    forge.wait(T, "B in progress", |f| {
        f.states("preprod", b.as_str()) == ["in_progress"]
    });
    assert_eq!(first.flush(T).await, 0);
    drop(first);
    // Another process: it knows nothing, asks the forge and finds what is there.
    let second = reporter(None, quick());
    w.report(&second, &verifying);
    assert_eq!(second.flush(T).await, 0);
    assert_eq!(forge.deployments("preprod", b.as_str()).len(), 1);
    assert_eq!(forge.deployments("preprod", a.as_str()).len(), 1);
    assert_eq!(forge.states("preprod", b.as_str()), ["in_progress"]);
    assert_eq!(forge.states("preprod", a.as_str()), ["success"]);
    let mut history = history;
    history.push((RolledBack, &b));
    w.report(
        &second,
        &status(Phase::RolledBack, Some(&a), Some(&b), &history),
    );
    forge.wait(T, "B failure", |f| {
        f.states("preprod", b.as_str()) == ["in_progress", "failure"]
    });
    assert_eq!(forge.deployments("preprod", b.as_str()).len(), 1);
    assert!(
        forge.latest_status("preprod", b.as_str()).unwrap()["log_url"].is_null(),
        "no public URL: no link"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn rate_limits_and_server_errors_are_waited_out_without_holding_the_reconcile() {
    use HistoryEvent::{Deployed, RolledBack};
    let forge = Forge::start();
    let token = token_file("limits", GITHUB_TOKEN);
    let w = World::new(&github_ci(&forge, &token, "{}"));
    let b = sha('b');
    forge.fail([
        Fault::Status(429, Some(1)),
        Fault::Status(502, None),
        Fault::Exhausted(1),
        Fault::Slow(Duration::from_secs(2)),
    ]);
    let r = reporter(None, quick());
    // Nothing validated yet: one SHA, one lane, so the requests follow each other.
    let mut history = vec![(Deployed, &b)];
    let took = w.report(&r, &status(Phase::Verifying, None, Some(&b), &history));
    assert!(took < Duration::from_millis(50), "report waited {took:?}");
    // The rollback comes while the forge still refuses: handed over at once too.
    history.push((RolledBack, &b));
    let took = w.report(&r, &status(Phase::RolledBack, None, Some(&b), &history));
    assert!(took < Duration::from_millis(50), "report waited {took:?}");
    forge.wait(T, "B failure", |f| {
        f.states("preprod", b.as_str()).last().map(String::as_str) == Some("failure")
    });
    assert_eq!(forge.deployments("preprod", b.as_str()).len(), 1);
    // Retry-After was honoured: nothing was asked within the second after the 429.
    let asked = forge.requests("/deployments");
    let limited = asked.iter().position(|q| q.status == 429).unwrap();
    let waited = asked[limited + 1].at.duration_since(asked[limited].at);
    assert!(waited >= Duration::from_millis(950), "{waited:?}");
    let exhausted = asked.iter().position(|q| q.status == 403).unwrap();
    assert!(
        asked[exhausted + 1].at.duration_since(asked[exhausted].at) >= Duration::from_millis(500),
        "x-ratelimit-reset was honoured"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refused_token_is_not_retried_and_a_missing_one_sends_nothing() {
    use HistoryEvent::Deployed;
    let forge = Forge::start();
    let token = token_file("refused", "wrong-token");
    let w = World::new(&github_ci(&forge, &token, "{}"));
    let b = sha('b');
    let r = reporter(None, quick());
    w.report(
        &r,
        &status(Phase::Deploying, None, Some(&b), &[(Deployed, &b)]),
    );
    assert_eq!(r.flush(T).await, 0);
    let asked = forge.requests("/deployments");
    assert_eq!(asked.len(), 1, "a 401 is not retried: {asked:#?}");
    assert_eq!(asked[0].status, 401);
    // Asked again at once by the next reconcile: not sent again before a while.
    w.report(
        &r,
        &status(Phase::Deploying, None, Some(&b), &[(Deployed, &b)]),
    );
    assert_eq!(r.flush(T).await, 0);
    assert_eq!(forge.requests("/deployments").len(), 1);

    let anonymous = World::new(&format!(
        r#"{{github: {{repository: octo/app, apiUrl: "{}", report: {{}}}}}}"#,
        forge.github_api()
    ));
    anonymous.report(&r, &status(Phase::Deploying, None, Some(&sha('c')), &[]));
    assert_eq!(r.flush(T).await, 0);
    assert_eq!(
        forge.requests("/deployments").len(),
        1,
        "no token: no request"
    );
    // Reporting is off without `report`: nothing is asked.
    let off = World::new(&format!(
        r#"{{github: {{repository: octo/app, apiUrl: "{}", token: {{file: "{}"}}}}}}"#,
        forge.github_api(),
        token.display()
    ));
    off.report(&r, &status(Phase::Deploying, None, Some(&sha('d')), &[]));
    assert_eq!(r.pending(), 0);
    assert_eq!(forge.requests("/deployments").len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn gitlab_deployments_follow_the_lifecycle_and_a_redeploy_is_a_new_one() {
    use HistoryEvent::{CiPassed, Deployed, RolledBack, Validated};
    let forge = Forge::start();
    let token = token_file("gitlab", GITLAB_TOKEN);
    let w = World::new(&format!(
        r#"{{gitlab: {{project: data/app, apiUrl: "{}", token: {{file: "{}"}}, report: {{}}}}}}"#,
        forge.gitlab_api(),
        token.display()
    ));
    let r = reporter(None, quick());
    let (a, b) = (sha('a'), sha('b'));
    let mut history = vec![(Validated, &a), (Deployed, &b)];
    w.report(&r, &status(Phase::Verifying, Some(&a), Some(&b), &history));
    forge.wait(T, "B running", |f| {
        f.gitlab_states("preprod", b.as_str()) == [["running"]]
    });
    forge.wait(T, "A success", |f| {
        f.gitlab_states("preprod", a.as_str()) == [["success"]]
    });
    history.push((RolledBack, &b));
    w.report(&r, &status(Phase::RolledBack, Some(&a), Some(&b), &history));
    forge.wait(T, "B failed", |f| {
        f.gitlab_states("preprod", b.as_str()) == [["running", "failed"]]
    });
    // A green re-run brings B back: GitLab runs a deployment only from `created`, so
    // the redeploy is a new deployment; once validated A is left as it was.
    history.extend([(CiPassed, &b), (Deployed, &b)]);
    w.report(&r, &status(Phase::Deploying, Some(&a), Some(&b), &history));
    forge.wait(T, "B redeployed", |f| {
        f.gitlab_states("preprod", b.as_str()).len() == 2
    });
    history.push((Validated, &b));
    w.report(&r, &status(Phase::Validated, Some(&b), Some(&b), &history));
    forge.wait(T, "B redeployed and validated", |f| {
        f.gitlab_states("preprod", b.as_str())
            .last()
            .is_some_and(|d| d.last().map(String::as_str) == Some("success"))
    });
    let deployments = forge.gitlab_states("preprod", b.as_str());
    assert_eq!(deployments.len(), 2, "{deployments:?}");
    assert_eq!(deployments[0], ["running", "failed"]);
    assert_eq!(forge.gitlab_states("preprod", a.as_str()), [["success"]]);
    let created = forge
        .requests("/deployments")
        .into_iter()
        .find(|q| q.method == "POST")
        .unwrap();
    assert_eq!(created.body["ref"], "main");
    assert_eq!(created.body["tag"], false);
    assert!(
        forge
            .requests("/deployments")
            .iter()
            .all(|q| q.status < 400),
        "every request was one GitLab accepts"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_deployment_deleted_on_the_forge_is_created_again() {
    use HistoryEvent::{Deployed, RolledBack};
    let forge = Forge::start();
    let token = token_file("deleted", GITHUB_TOKEN);
    let w = World::new(&github_ci(&forge, &token, "{}"));
    let b = sha('b');
    let r = reporter(None, quick());
    let mut history = vec![(Deployed, &b)];
    w.report(&r, &status(Phase::Verifying, None, Some(&b), &history));
    forge.wait(T, "B in progress", |f| {
        f.states("preprod", b.as_str()) == ["in_progress"]
    });
    // Someone deletes it on GitHub (`DELETE /repos/{owner}/{repo}/deployments/{id}`).
    forge.book.lock().unwrap().deployments.clear();
    history.push((RolledBack, &b));
    w.report(&r, &status(Phase::RolledBack, None, Some(&b), &history));
    forge.wait(T, "B failure on a new deployment", |f| {
        f.states("preprod", b.as_str()) == ["failure"]
    });
    assert_eq!(forge.deployments("preprod", b.as_str()).len(), 1);
}
