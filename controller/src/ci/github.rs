//! GitHub's verdict for a SHA, from its check runs
//! (`GET /repos/{owner}/{repo}/commits/{sha}/check-runs`) and its combined status
//! (`GET /repos/{owner}/{repo}/commits/{sha}/status`). Pure: the payloads in, the
//! verdict out; fetching them is the edge's job.
//!
//! Mapping: `success`, `neutral`, `skipped` pass; `failure`, `timed_out`,
//! `action_required` fail; `cancelled`, `stale` (and a status `error`) are CI errors;
//! anything not completed waits. A SHA with no check yet is pending, never green.

use serde::{Deserialize, Serialize};

use super::glob;
use crate::{api::release::CiState, lifecycle::CiVerdict};

/// One page of `GET …/commits/{sha}/check-runs`.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct CheckRunsPage {
    /// Total over all pages.
    pub total_count: u64,
    /// The runs of this page.
    pub check_runs: Vec<CheckRun>,
}

/// A check run, as the API returns it (the fields Vigie reads).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckRun {
    /// Run id; a re-run has a higher id than the run it replaces.
    pub id: u64,
    /// The commit it ran on.
    pub head_sha: String,
    /// Check name (the job's name for GitHub Actions).
    pub name: String,
    /// `queued`, `in_progress`, `completed`, `waiting`, `requested`, `pending`.
    pub status: String,
    /// Set once completed.
    #[serde(default)]
    pub conclusion: Option<String>,
    /// Link to the run.
    #[serde(default)]
    pub html_url: Option<String>,
    /// Link to the logs (the CI's own page).
    #[serde(default)]
    pub details_url: Option<String>,
}

/// `GET …/commits/{sha}/status`.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct CombinedStatus {
    /// The statuses, newest first per context.
    #[serde(default)]
    pub statuses: Vec<CommitStatus>,
}

/// One commit status.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitStatus {
    /// `error`, `failure`, `pending`, `success`.
    pub state: String,
    /// Its name.
    pub context: String,
    /// Link to the build.
    #[serde(default)]
    pub target_url: Option<String>,
    /// A few words.
    #[serde(default)]
    pub description: Option<String>,
    /// Status id: the newest per context wins.
    #[serde(default)]
    pub id: u64,
}

/// The outcome of one named check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    Pass,
    Fail,
    Error,
    Wait,
}

fn check_run_outcome(run: &CheckRun) -> Outcome {
    if run.status != "completed" {
        return Outcome::Wait;
    }
    match run.conclusion.as_deref() {
        Some("success" | "neutral" | "skipped") => Outcome::Pass,
        Some("failure" | "timed_out" | "action_required") => Outcome::Fail,
        // cancelled, stale, or completed without a known conclusion: not green, not red.
        _ => Outcome::Error,
    }
}

fn status_outcome(status: &CommitStatus) -> Outcome {
    match status.state.as_str() {
        "success" => Outcome::Pass,
        "failure" => Outcome::Fail,
        "error" => Outcome::Error,
        _ => Outcome::Wait,
    }
}

/// The verdict for `sha` from its check runs (all pages) and combined status.
/// `required` names the checks that count (globs allowed); empty means every check.
#[must_use]
pub fn verdict(
    sha: &str,
    runs: &[CheckRun],
    status: &CombinedStatus,
    required: &[String],
) -> CiVerdict {
    // The latest run per name: a re-run replaces the run it re-runs.
    let mut checks: Vec<(String, Outcome, Option<String>)> = Vec::new();
    let mut latest: std::collections::BTreeMap<&str, &CheckRun> = std::collections::BTreeMap::new();
    for run in runs.iter().filter(|r| r.head_sha == sha) {
        let slot = latest.entry(run.name.as_str()).or_insert(run);
        if run.id > slot.id {
            *slot = run;
        }
    }
    for run in latest.values() {
        let url = run.html_url.clone().or_else(|| run.details_url.clone());
        checks.push((run.name.clone(), check_run_outcome(run), url));
    }
    let mut newest: std::collections::BTreeMap<&str, &CommitStatus> =
        std::collections::BTreeMap::new();
    for s in &status.statuses {
        let slot = newest.entry(s.context.as_str()).or_insert(s);
        if s.id > slot.id {
            *slot = s;
        }
    }
    for s in newest.values() {
        checks.push((s.context.clone(), status_outcome(s), s.target_url.clone()));
    }
    combine(&checks, required)
}

/// Combines named outcomes under the required patterns.
fn combine(checks: &[(String, Outcome, Option<String>)], required: &[String]) -> CiVerdict {
    let counted: Vec<&(String, Outcome, Option<String>)> = if required.is_empty() {
        checks.iter().collect()
    } else {
        checks
            .iter()
            .filter(|(name, _, _)| required.iter().any(|p| glob::matches(p, name)))
            .collect()
    };
    let failed: Vec<&(String, Outcome, Option<String>)> = counted
        .iter()
        .copied()
        .filter(|c| c.1 == Outcome::Fail)
        .collect();
    let errored: Vec<&(String, Outcome, Option<String>)> = counted
        .iter()
        .copied()
        .filter(|c| c.1 == Outcome::Error)
        .collect();
    let missing: Vec<&String> = required
        .iter()
        .filter(|p| !checks.iter().any(|(n, _, _)| glob::matches(p, n)))
        .collect();
    let waiting = counted.iter().any(|c| c.1 == Outcome::Wait);
    let first_url =
        |list: &[&(String, Outcome, Option<String>)]| list.iter().find_map(|c| c.2.clone());
    if !failed.is_empty() {
        return CiVerdict {
            state: CiState::Failure,
            url: first_url(&failed),
            failed_checks: failed.iter().map(|c| c.0.clone()).collect(),
            description: None,
        };
    }
    if counted.is_empty() || !missing.is_empty() || waiting {
        let description = if counted.is_empty() {
            Some("no check has reported for this commit yet".to_owned())
        } else if !missing.is_empty() {
            Some(format!(
                "waiting for required checks: {}",
                missing
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        } else {
            None
        };
        return CiVerdict {
            state: CiState::Pending,
            url: first_url(&counted),
            failed_checks: Vec::new(),
            description,
        };
    }
    if !errored.is_empty() {
        return CiVerdict {
            state: CiState::Error,
            url: first_url(&errored),
            failed_checks: errored.iter().map(|c| c.0.clone()).collect(),
            description: Some("cancelled or stale checks".to_owned()),
        };
    }
    CiVerdict {
        state: CiState::Success,
        url: first_url(&counted),
        failed_checks: Vec::new(),
        description: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHA: &str = "476f1636fe090d4ba223d8c9a1cbbc83940090a8";

    fn run(id: u64, name: &str, status: &str, conclusion: Option<&str>) -> CheckRun {
        CheckRun {
            id,
            head_sha: SHA.into(),
            name: name.into(),
            status: status.into(),
            conclusion: conclusion.map(str::to_owned),
            html_url: Some(format!("https://github.com/o/r/runs/{id}")),
            details_url: None,
        }
    }

    fn none() -> CombinedStatus {
        CombinedStatus::default()
    }

    #[test]
    fn every_conclusion_maps_to_its_verdict() {
        for (status, conclusion, state) in [
            ("completed", Some("success"), CiState::Success),
            ("completed", Some("neutral"), CiState::Success),
            ("completed", Some("skipped"), CiState::Success),
            ("completed", Some("failure"), CiState::Failure),
            ("completed", Some("timed_out"), CiState::Failure),
            ("completed", Some("action_required"), CiState::Failure),
            ("completed", Some("cancelled"), CiState::Error),
            ("completed", Some("stale"), CiState::Error),
            ("completed", None, CiState::Error),
            ("queued", None, CiState::Pending),
            ("in_progress", None, CiState::Pending),
            ("waiting", None, CiState::Pending),
            ("requested", None, CiState::Pending),
            ("pending", None, CiState::Pending),
        ] {
            let v = verdict(SHA, &[run(1, "test", status, conclusion)], &none(), &[]);
            assert_eq!(v.state, state, "{status} {conclusion:?}");
        }
    }

    #[test]
    fn no_check_yet_is_pending_never_green() {
        let v = verdict(SHA, &[], &none(), &[]);
        assert_eq!(v.state, CiState::Pending);
        assert_eq!(
            v.description.as_deref(),
            Some("no check has reported for this commit yet")
        );
    }

    #[test]
    fn required_checks_count_and_extra_checks_do_not() {
        let runs = [
            run(1, "test (3.13)", "completed", Some("success")),
            run(2, "docs", "completed", Some("failure")),
        ];
        let required = vec!["test*".to_owned()];
        assert_eq!(
            verdict(SHA, &runs, &none(), &required).state,
            CiState::Success,
            "docs is not required"
        );
        assert_eq!(
            verdict(SHA, &runs, &none(), &[]).state,
            CiState::Failure,
            "everything counts"
        );
        let v = verdict(
            SHA,
            &runs,
            &none(),
            &["test*".to_owned(), "lint".to_owned()],
        );
        assert_eq!(v.state, CiState::Pending, "lint has not reported");
        assert_eq!(
            v.description.as_deref(),
            Some("waiting for required checks: lint")
        );
    }

    #[test]
    fn a_rerun_replaces_the_run_it_reruns() {
        let runs = [
            run(1, "test", "completed", Some("failure")),
            run(7, "test", "completed", Some("success")),
        ];
        assert_eq!(verdict(SHA, &runs, &none(), &[]).state, CiState::Success);
        let runs = [
            run(7, "test", "completed", Some("success")),
            run(9, "test", "in_progress", None),
        ];
        assert_eq!(verdict(SHA, &runs, &none(), &[]).state, CiState::Pending);
    }

    #[test]
    fn failures_name_the_checks_and_link_the_first() {
        let runs = [
            run(3, "lint", "completed", Some("failure")),
            run(4, "test", "completed", Some("timed_out")),
            run(5, "build", "in_progress", None),
        ];
        let v = verdict(SHA, &runs, &none(), &[]);
        assert_eq!(
            v.state,
            CiState::Failure,
            "a failure is final even while others run"
        );
        assert_eq!(v.failed_checks, vec!["lint", "test"]);
        assert_eq!(v.url.as_deref(), Some("https://github.com/o/r/runs/3"));
    }

    #[test]
    fn statuses_count_with_the_newest_per_context() {
        let status: CombinedStatus = serde_json::from_value(serde_json::json!({
            "state": "failure",
            "sha": SHA,
            "total_count": 2,
            "statuses": [
                {"id": 2, "state": "success", "context": "ci/jenkins", "target_url": "https://ci.example/2", "description": "ok"},
                {"id": 1, "state": "failure", "context": "ci/jenkins", "target_url": "https://ci.example/1", "description": "broke"},
                {"id": 3, "state": "error", "context": "ci/other", "target_url": null, "description": "runner lost"}
            ]
        }))
        .unwrap();
        let v = verdict(SHA, &[], &status, &["ci/jenkins".to_owned()]);
        assert_eq!(v.state, CiState::Success);
        let v = verdict(SHA, &[], &status, &[]);
        assert_eq!(
            (v.state, v.failed_checks.clone()),
            (CiState::Error, vec!["ci/other".to_owned()])
        );
    }

    #[test]
    fn runs_of_another_sha_are_ignored() {
        let mut other = run(1, "test", "completed", Some("failure"));
        other.head_sha = "0".repeat(40);
        assert_eq!(verdict(SHA, &[other], &none(), &[]).state, CiState::Pending);
    }

    #[test]
    fn a_page_as_github_documents_it_parses() {
        let page: CheckRunsPage = serde_json::from_str(
            r#"{"total_count": 1, "check_runs": [{
                "id": 4, "head_sha": "476f1636fe090d4ba223d8c9a1cbbc83940090a8", "node_id": "MDg6Q2hlY2tSdW40",
                "external_id": "", "url": "https://api.github.com/repos/github/hello-world/check-runs/4",
                "html_url": "https://github.com/github/hello-world/runs/4", "details_url": "https://example.com",
                "status": "completed", "conclusion": "neutral", "started_at": "2018-05-04T01:14:52Z",
                "completed_at": "2018-05-04T01:14:52Z",
                "output": {"title": "Mighty Readme report", "summary": "There are 0 failures found", "text": "", "annotations_count": 2, "annotations_url": ""},
                "name": "mighty_readme", "check_suite": {"id": 5},
                "app": {"id": 1, "slug": "octoapp", "name": "Octocat App"},
                "pull_requests": []
            }]}"#,
        )
        .unwrap();
        assert_eq!(page.total_count, 1);
        assert_eq!(
            verdict(SHA, &page.check_runs, &none(), &[]).state,
            CiState::Success
        );
    }
}

/// A GitHub webhook delivery, as far as verdicts go.
#[derive(Clone, Debug)]
pub enum Event {
    /// `ping`: answered, nothing else.
    Ping,
    /// A check run was created or changed.
    CheckRun {
        /// `owner/repo`.
        repository: String,
        /// The run.
        run: CheckRun,
    },
    /// A check suite completed (a hint to poll the check runs).
    CheckSuite {
        /// `owner/repo`.
        repository: String,
        /// The commit.
        sha: String,
    },
    /// A commit status was set.
    Status {
        /// `owner/repo`.
        repository: String,
        /// The commit.
        sha: String,
        /// The status.
        status: CommitStatus,
    },
    /// A workflow run changed: counted as a check named after the workflow.
    WorkflowRun {
        /// `owner/repo`.
        repository: String,
        /// The run, as a check run.
        run: CheckRun,
    },
    /// Any other event: acknowledged (202) and ignored.
    Ignored(String),
}

#[derive(Deserialize)]
struct Repo {
    full_name: String,
}

#[derive(Deserialize)]
struct CheckRunEvent {
    check_run: CheckRun,
    repository: Repo,
}

#[derive(Deserialize)]
struct SuiteBody {
    head_sha: String,
}

#[derive(Deserialize)]
struct CheckSuiteEvent {
    check_suite: SuiteBody,
    repository: Repo,
}

#[derive(Deserialize)]
struct StatusEvent {
    sha: String,
    #[serde(flatten)]
    status: CommitStatus,
    repository: Repo,
}

#[derive(Deserialize)]
struct WorkflowRunBody {
    id: u64,
    head_sha: String,
    /// The run's name: empty in GitHub's own published examples.
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    workflow_id: Option<u64>,
    status: String,
    #[serde(default)]
    conclusion: Option<String>,
    #[serde(default)]
    html_url: Option<String>,
}

#[derive(Deserialize)]
struct WorkflowBody {
    #[serde(default)]
    name: Option<String>,
}

#[derive(Deserialize)]
struct WorkflowRunEvent {
    workflow_run: WorkflowRunBody,
    /// The workflow: its `name` is the one `requiredChecks` name.
    #[serde(default)]
    workflow: Option<WorkflowBody>,
    repository: Repo,
}

/// The check name a workflow run counts under: the workflow's name (`workflow.name`),
/// else the run's, else the workflow's id — never empty.
fn workflow_check_name(e: &WorkflowRunEvent) -> String {
    let named = |n: Option<&String>| n.map(|n| n.trim().to_owned()).filter(|n| !n.is_empty());
    named(e.workflow.as_ref().and_then(|w| w.name.as_ref()))
        .or_else(|| named(e.workflow_run.name.as_ref()))
        .unwrap_or_else(|| match e.workflow_run.workflow_id {
            Some(id) => format!("workflow {id}"),
            None => format!("workflow run {}", e.workflow_run.id),
        })
}

/// Parses a delivery whose signature was verified (`X-Hub-Signature-256`, the same
/// `sha256=<hex HMAC>` scheme as [`super::webhook::verify`]). `event` is the
/// `X-GitHub-Event` header.
///
/// # Errors
/// The body is not the payload `event` announces.
pub fn parse_event(event: &str, body: &[u8]) -> Result<Event, super::PayloadError> {
    let bad = |e: serde_json::Error| super::PayloadError::new(format!("{event} payload"), e);
    Ok(match event {
        "ping" => Event::Ping,
        "check_run" => {
            let e: CheckRunEvent = serde_json::from_slice(body).map_err(bad)?;
            Event::CheckRun {
                repository: e.repository.full_name,
                run: e.check_run,
            }
        }
        "check_suite" => {
            let e: CheckSuiteEvent = serde_json::from_slice(body).map_err(bad)?;
            Event::CheckSuite {
                repository: e.repository.full_name,
                sha: e.check_suite.head_sha,
            }
        }
        "status" => {
            let e: StatusEvent = serde_json::from_slice(body).map_err(bad)?;
            Event::Status {
                repository: e.repository.full_name,
                sha: e.sha,
                status: e.status,
            }
        }
        "workflow_run" => {
            let e: WorkflowRunEvent = serde_json::from_slice(body).map_err(bad)?;
            let name = workflow_check_name(&e);
            let w = e.workflow_run;
            Event::WorkflowRun {
                repository: e.repository.full_name,
                run: CheckRun {
                    id: w.id,
                    head_sha: w.head_sha,
                    name,
                    status: w.status,
                    conclusion: w.conclusion,
                    html_url: w.html_url,
                    details_url: None,
                },
            }
        }
        other => Event::Ignored(other.to_owned()),
    })
}

#[cfg(test)]
mod webhook_tests {
    use super::*;

    /// A payload GitHub published (tests/fixtures/github), with `edit` applied.
    fn published(name: &str, edit: impl FnOnce(&mut serde_json::Value)) -> Vec<u8> {
        let path = format!(
            "{}/tests/fixtures/github/{name}.json",
            env!("CARGO_MANIFEST_DIR")
        );
        let mut v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        edit(&mut v);
        serde_json::to_vec(&v).unwrap()
    }

    #[test]
    fn a_published_workflow_run_counts_under_the_workflow_name() {
        let body = published("workflow_run.completed", |_| {});
        let Event::WorkflowRun { repository, run } = parse_event("workflow_run", &body).unwrap()
        else {
            panic!("not a workflow run")
        };
        assert_eq!(repository, "octo-org/octo-repo");
        assert_eq!(
            run.name, "test",
            "workflow.name, not the empty workflow_run.name"
        );
        assert_eq!(run.head_sha, "3484a3fb816e0859fd6e1cea078d76385ff50625");
        assert_eq!(
            verdict(
                &run.head_sha,
                std::slice::from_ref(&run),
                &CombinedStatus::default(),
                &["test".to_owned()]
            )
            .state,
            CiState::Success,
            "requiredChecks [test] is met by the workflow named test"
        );
        let body = published("workflow_run.completed", |v| {
            v["workflow_run"]["conclusion"] = "action_required".into();
        });
        let Event::WorkflowRun { run, .. } = parse_event("workflow_run", &body).unwrap() else {
            panic!("not a workflow run")
        };
        let v = verdict(
            &run.head_sha,
            std::slice::from_ref(&run),
            &CombinedStatus::default(),
            &[],
        );
        assert_eq!(
            (v.state, v.failed_checks),
            (CiState::Failure, vec!["test".to_owned()])
        );
        // Without a workflow object and with an empty run name, the run is still named.
        let body = published("workflow_run.completed", |v| {
            v.as_object_mut().unwrap().remove("workflow");
        });
        let Event::WorkflowRun { run, .. } = parse_event("workflow_run", &body).unwrap() else {
            panic!("not a workflow run")
        };
        assert!(
            !run.name.is_empty() && run.name.starts_with("workflow"),
            "{}",
            run.name
        );
    }

    #[test]
    fn every_published_event_vigie_handles_parses() {
        match parse_event("check_run", &published("check_run.completed", |_| {})).unwrap() {
            Event::CheckRun { repository, run } => {
                assert_eq!(repository, "Codertocat/Hello-World");
                assert_eq!(
                    (run.status.as_str(), run.name.is_empty()),
                    ("completed", false)
                );
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            parse_event("check_run", &published("check_run.created", |_| {})).unwrap(),
            Event::CheckRun { run, .. } if run.conclusion.is_none()
        ));
        assert!(matches!(
            parse_event("check_suite", &published("check_suite.completed", |_| {})).unwrap(),
            Event::CheckSuite { sha, .. } if sha == "ec26c3e57ca3a959ca5aad62de7213c562f8c821"
        ));
        assert!(matches!(
            parse_event("status", &published("status", |_| {})).unwrap(),
            Event::Status { sha, .. } if sha == "6113728f27ae82c7b1a177c8d03f9e96e0adf246"
        ));
        assert!(matches!(
            parse_event("workflow_run", &published("workflow_run.requested", |_| {})).unwrap(),
            Event::WorkflowRun { run, .. } if run.status != "completed" && run.name == "test"
        ));
        assert!(matches!(
            parse_event("ping", &published("ping", |_| {})).unwrap(),
            Event::Ping
        ));
    }

    #[test]
    fn deliveries_shaped_as_documented_parse() {
        let check_run = br#"{"action": "completed", "check_run": {"id": 128620228, "name": "Octocoders-linter",
            "node_id": "MDg6Q2hlY2tSdW4xMjg2MjAyMjg=", "head_sha": "ec26c3e57ca3a959ca5aad62de7213c562f8c821",
            "external_id": "", "url": "https://api.github.com/repos/Codertocat/Hello-World/check-runs/128620228",
            "html_url": "https://github.com/Codertocat/Hello-World/runs/128620228", "details_url": "https://octocoders.io",
            "status": "completed", "conclusion": "failure", "started_at": "2019-05-15T15:21:12Z",
            "completed_at": "2019-05-15T15:21:45Z", "check_suite": {"id": 118578147, "head_branch": "changes"}},
            "repository": {"id": 186853002, "name": "Hello-World", "full_name": "Codertocat/Hello-World"},
            "sender": {"login": "Codertocat"}}"#;
        match parse_event("check_run", check_run).unwrap() {
            Event::CheckRun { repository, run } => {
                assert_eq!(repository, "Codertocat/Hello-World");
                assert_eq!(
                    (run.name.as_str(), run.conclusion.as_deref()),
                    ("Octocoders-linter", Some("failure"))
                );
            }
            other => panic!("{other:?}"),
        }
        let status = br#"{"id": 6805126730, "sha": "6113728f27ae82c7b1a177c8d03f9e96e0adf246", "name": "Codertocat/Hello-World",
            "target_url": null, "context": "default", "description": null, "state": "success",
            "commit": {"sha": "6113728f27ae82c7b1a177c8d03f9e96e0adf246"}, "branches": [],
            "created_at": "2019-05-15T15:20:55+00:00", "updated_at": "2019-05-15T15:20:55+00:00",
            "repository": {"full_name": "Codertocat/Hello-World"}}"#;
        match parse_event("status", status).unwrap() {
            Event::Status { sha, status, .. } => {
                assert_eq!(sha, "6113728f27ae82c7b1a177c8d03f9e96e0adf246");
                assert_eq!(
                    (status.context.as_str(), status.state.as_str(), status.id),
                    ("default", "success", 6_805_126_730)
                );
            }
            other => panic!("{other:?}"),
        }
        let workflow = br#"{"action": "completed", "workflow_run": {"id": 30433642, "name": "Build", "head_branch": "main",
            "head_sha": "acb5820ced9479c074f688cc328bf03f341a511d", "status": "completed", "conclusion": "success",
            "html_url": "https://github.com/octo-org/octo-repo/actions/runs/30433642"},
            "repository": {"full_name": "octo-org/octo-repo"}}"#;
        assert!(
            matches!(parse_event("workflow_run", workflow).unwrap(), Event::WorkflowRun { run, .. } if run.name == "Build")
        );
        let suite = br#"{"action": "completed", "check_suite": {"id": 1, "head_sha": "acb5820ced9479c074f688cc328bf03f341a511d", "status": "completed", "conclusion": "success"}, "repository": {"full_name": "o/r"}}"#;
        assert!(matches!(
            parse_event("check_suite", suite).unwrap(),
            Event::CheckSuite { .. }
        ));
        assert!(matches!(
            parse_event("ping", br#"{"zen": "Keep it logically awesome."}"#).unwrap(),
            Event::Ping
        ));
        assert!(matches!(parse_event("push", b"{}").unwrap(), Event::Ignored(e) if e == "push"));
        let e = parse_event("check_run", br#"{"check_run": {"id": "x"}}"#).unwrap_err();
        assert!(
            e.to_string().starts_with("invalid check_run payload:"),
            "{e}"
        );
    }
}
