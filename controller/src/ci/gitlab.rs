//! GitLab's verdict for a SHA, from its pipelines
//! (`GET /projects/:id/pipelines?sha=…`): the latest pipeline of each ref counts.
//! Pure: the payload in, the verdict out.
//!
//! Mapping: `success` passes; `failed` fails; `canceled` and `skipped` are CI errors;
//! `created`, `waiting_for_resource`, `preparing`, `pending`, `running`, `manual`,
//! `scheduled` wait. No pipeline yet is pending, never green.

use serde::{Deserialize, Serialize};

use crate::{api::release::CiState, lifecycle::CiVerdict};

/// A pipeline, as `GET /projects/:id/pipelines` lists it (the fields Vigie reads).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pipeline {
    /// Pipeline id; newer pipelines have higher ids.
    pub id: u64,
    /// The commit.
    pub sha: String,
    /// The branch or tag.
    #[serde(rename = "ref")]
    pub ref_: String,
    /// Its status.
    pub status: String,
    /// Link to the pipeline.
    #[serde(default)]
    pub web_url: Option<String>,
}

/// The state a pipeline status maps to.
#[must_use]
pub fn state(status: &str) -> CiState {
    match status {
        "success" => CiState::Success,
        "failed" => CiState::Failure,
        "canceled" | "canceling" | "skipped" => CiState::Error,
        // created, waiting_for_resource, preparing, pending, running, manual, scheduled,
        // and anything new: wait.
        _ => CiState::Pending,
    }
}

/// The verdict for `sha` from its pipelines: the latest pipeline of each ref; any
/// failed fails, then any waiting waits, then any error errs, else success.
#[must_use]
pub fn verdict(sha: &str, pipelines: &[Pipeline]) -> CiVerdict {
    let mut latest: std::collections::BTreeMap<&str, &Pipeline> = std::collections::BTreeMap::new();
    for p in pipelines.iter().filter(|p| p.sha == sha) {
        let slot = latest.entry(p.ref_.as_str()).or_insert(p);
        if p.id > slot.id {
            *slot = p;
        }
    }
    if latest.is_empty() {
        return CiVerdict {
            state: CiState::Pending,
            url: None,
            failed_checks: Vec::new(),
            description: Some("no pipeline for this commit yet".to_owned()),
        };
    }
    let with = |wanted: CiState| -> Vec<&&Pipeline> {
        latest
            .values()
            .filter(|p| state(&p.status) == wanted)
            .collect()
    };
    for wanted in [CiState::Failure, CiState::Pending, CiState::Error] {
        let found = with(wanted);
        if let Some(first) = found.first() {
            return CiVerdict {
                state: wanted,
                url: first.web_url.clone(),
                failed_checks: if wanted == CiState::Pending {
                    Vec::new()
                } else {
                    found
                        .iter()
                        .map(|p| format!("pipeline #{} ({})", p.id, p.ref_))
                        .collect()
                },
                description: Some(format!("pipeline #{} is {}", first.id, first.status)),
            };
        }
    }
    let first = latest.values().next().expect("not empty");
    CiVerdict {
        state: CiState::Success,
        url: first.web_url.clone(),
        failed_checks: Vec::new(),
        description: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHA: &str = "476f1636fe090d4ba223d8c9a1cbbc83940090a8";

    fn p(id: u64, r: &str, status: &str) -> Pipeline {
        Pipeline {
            id,
            sha: SHA.into(),
            ref_: r.into(),
            status: status.into(),
            web_url: Some(format!("https://gitlab.example/p/-/pipelines/{id}")),
        }
    }

    #[test]
    fn every_status_maps_to_its_verdict() {
        for (status, expected) in [
            ("success", CiState::Success),
            ("failed", CiState::Failure),
            ("canceled", CiState::Error),
            ("skipped", CiState::Error),
            ("created", CiState::Pending),
            ("waiting_for_resource", CiState::Pending),
            ("preparing", CiState::Pending),
            ("pending", CiState::Pending),
            ("running", CiState::Pending),
            ("manual", CiState::Pending),
            ("scheduled", CiState::Pending),
        ] {
            assert_eq!(
                verdict(SHA, &[p(1, "main", status)]).state,
                expected,
                "{status}"
            );
        }
    }

    #[test]
    fn the_latest_pipeline_per_ref_counts() {
        assert_eq!(
            verdict(SHA, &[p(1, "main", "failed"), p(2, "main", "success")]).state,
            CiState::Success,
            "a retried pipeline"
        );
        let v = verdict(SHA, &[p(1, "main", "success"), p(3, "v1.0.0", "failed")]);
        assert_eq!(
            (v.state, v.failed_checks.clone()),
            (CiState::Failure, vec!["pipeline #3 (v1.0.0)".to_owned()])
        );
        assert_eq!(
            v.url.as_deref(),
            Some("https://gitlab.example/p/-/pipelines/3")
        );
        assert_eq!(verdict(SHA, &[]).state, CiState::Pending, "no pipeline yet");
    }

    #[test]
    fn a_list_as_gitlab_documents_it_parses() {
        let list: Vec<Pipeline> = serde_json::from_str(
            r#"[{"id": 47, "iid": 12, "project_id": 1, "status": "pending", "source": "push", "ref": "new-pipeline",
                 "sha": "476f1636fe090d4ba223d8c9a1cbbc83940090a8", "name": "Build pipeline",
                 "web_url": "https://example.com/foo/bar/pipelines/47",
                 "created_at": "2016-08-11T11:28:34.085Z", "updated_at": "2016-08-11T11:32:35.169Z"}]"#,
        )
        .unwrap();
        let v = verdict(SHA, &list);
        assert_eq!(
            (v.state, v.url.as_deref()),
            (
                CiState::Pending,
                Some("https://example.com/foo/bar/pipelines/47")
            )
        );
    }
}

/// Header carrying a GitLab webhook's secret token.
pub const TOKEN_HEADER: &str = "x-gitlab-token";

/// Compares the `X-Gitlab-Token` header with the configured token, in constant time.
#[must_use]
pub fn token_matches(expected: &[u8], given: Option<&str>) -> bool {
    use subtle::ConstantTimeEq;
    given.is_some_and(|g| g.as_bytes().ct_eq(expected).into())
}

#[derive(Deserialize)]
struct PipelineHook {
    object_attributes: PipelineAttributes,
    project: Project,
}

#[derive(Deserialize)]
struct PipelineAttributes {
    id: u64,
    #[serde(rename = "ref")]
    ref_: String,
    sha: String,
    status: String,
    #[serde(default)]
    url: Option<String>,
}

#[derive(Deserialize)]
struct Project {
    id: u64,
    path_with_namespace: String,
    #[serde(default)]
    web_url: Option<String>,
}

/// The project a delivery is about: its numeric id and its path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProjectRef {
    /// `project.id`.
    pub id: u64,
    /// `project.path_with_namespace`.
    pub path: String,
}

impl ProjectRef {
    /// Whether a CodeLocation's `ci.gitlab.project` names this project: its numeric id,
    /// or its path, compared as GitLab compares paths (without regard to case).
    #[must_use]
    pub fn is(&self, configured: &str) -> bool {
        let configured = configured.trim().trim_matches('/');
        if !configured.is_empty() && configured.bytes().all(|b| b.is_ascii_digit()) {
            return configured.parse::<u64>() == Ok(self.id);
        }
        configured.eq_ignore_ascii_case(&self.path)
    }
}

impl std::fmt::Display for ProjectRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (id {})", self.path, self.id)
    }
}

/// Parses a Pipeline Hook delivery into `(project, pipeline)`; `Ok(None)` for
/// other kinds of events (acknowledged and ignored).
///
/// # Errors
/// The body is not JSON, or not a Pipeline Hook though it says it is.
pub fn parse_pipeline_hook(
    body: &[u8],
) -> Result<Option<(ProjectRef, Pipeline)>, super::PayloadError> {
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| super::PayloadError::new("payload", e))?;
    if value.get("object_kind").and_then(serde_json::Value::as_str) != Some("pipeline") {
        return Ok(None);
    }
    let hook: PipelineHook = serde_json::from_value(value)
        .map_err(|e| super::PayloadError::new("pipeline payload", e))?;
    let a = hook.object_attributes;
    let web_url = a.url.or_else(|| {
        hook.project
            .web_url
            .map(|w| format!("{w}/-/pipelines/{}", a.id))
    });
    Ok(Some((
        ProjectRef {
            id: hook.project.id,
            path: hook.project.path_with_namespace,
        },
        Pipeline {
            id: a.id,
            sha: a.sha,
            ref_: a.ref_,
            status: a.status,
            web_url,
        },
    )))
}

#[cfg(test)]
mod hook_tests {
    use super::*;

    #[test]
    fn pipeline_hooks_shaped_as_documented_parse() {
        let body = br#"{"object_kind": "pipeline",
            "object_attributes": {"id": 31, "iid": 3, "name": "Pipeline for branch: master", "ref": "master", "tag": false,
              "sha": "bcbb5ec396a2c0f828686f14fac9b80b780504f2", "before_sha": "bcbb5ec396a2c0f828686f14fac9b80b780504f2",
              "source": "merge_request_event", "status": "success", "detailed_status": "passed",
              "stages": ["build", "test", "deploy"], "created_at": "2016-08-12 15:23:28 UTC",
              "finished_at": "2016-08-12 15:26:29 UTC", "duration": 63, "queued_duration": 12,
              "variables": [], "url": "http://example.com/gitlab-org/gitlab-test/-/pipelines/31"},
            "project": {"id": 1, "name": "Gitlab Test", "path_with_namespace": "gitlab-org/gitlab-test",
              "web_url": "http://192.168.64.1:3005/gitlab-org/gitlab-test"},
            "builds": []}"#;
        let (project, pipeline) = parse_pipeline_hook(body).unwrap().unwrap();
        assert_eq!(project.path, "gitlab-org/gitlab-test");
        assert_eq!(project.id, 1);
        assert_eq!((pipeline.id, pipeline.status.as_str()), (31, "success"));
        assert_eq!(
            pipeline.web_url.as_deref(),
            Some("http://example.com/gitlab-org/gitlab-test/-/pipelines/31")
        );
        assert_eq!(
            parse_pipeline_hook(br#"{"object_kind": "push"}"#)
                .unwrap()
                .map(|(p, _)| p),
            None
        );
        assert!(
            parse_pipeline_hook(br#"{"object_kind": "pipeline"}"#)
                .unwrap_err()
                .to_string()
                .starts_with("invalid pipeline payload")
        );
    }

    #[test]
    fn a_project_is_named_by_its_id_or_its_path_in_any_case() {
        let p = ProjectRef {
            id: 4242,
            path: "Data-Platform/Finance".into(),
        };
        for configured in [
            "4242",
            "Data-Platform/Finance",
            "data-platform/finance",
            "DATA-PLATFORM/FINANCE",
            "/data-platform/finance/",
        ] {
            assert!(p.is(configured), "{configured}");
        }
        for configured in [
            "424",
            "42420",
            "data-platform",
            "data-platform/finance-2",
            "",
            "other/4242",
        ] {
            assert!(!p.is(configured), "{configured}");
        }
    }

    #[test]
    fn the_published_pipeline_hook_example_parses() {
        let body = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/gitlab/pipeline.json"
        ))
        .unwrap();
        let (project, pipeline) = parse_pipeline_hook(&body).unwrap().unwrap();
        assert_eq!(
            project,
            ProjectRef {
                id: 1,
                path: "gitlab-org/gitlab-test".into()
            }
        );
        assert_eq!(
            (
                pipeline.id,
                pipeline.ref_.as_str(),
                pipeline.status.as_str()
            ),
            (31, "master", "success")
        );
    }

    #[test]
    fn tokens_compare_exactly() {
        assert!(token_matches(b"s3cret", Some("s3cret")));
        assert!(!token_matches(b"s3cret", Some("s3cre")));
        assert!(!token_matches(b"s3cret", Some("s3cret ")));
        assert!(!token_matches(b"s3cret", None));
    }
}
