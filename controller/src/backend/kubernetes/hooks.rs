//! Hooks on Kubernetes: one Job per hook, SHA and rollout attempt, built as data, and
//! its outcome read from the Job's status. `mod.rs` creates and reads the Jobs.

use k8s_openapi::{
    api::{
        batch::v1::{Job, JobSpec},
        core::v1::{Container, EnvVar as KubeEnvVar, PodSpec, PodTemplateSpec},
    },
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
};

use super::objects::{labels, owner_references};
use crate::{
    api::{Sha, environment::Hook},
    backend::{Workload, substitute},
    lifecycle::{HookOutcome, HookRun},
};

/// `preDeploy` or `postDeploy`, for the hook's `VIGIE_HOOK_STAGE`.
#[must_use]
pub const fn stage(run: &HookRun) -> &'static str {
    if run.after_deploy {
        "postDeploy"
    } else {
        "preDeploy"
    }
}

/// The Job that runs a hook once for a rollout.
#[must_use]
pub fn hook_job(workload: &Workload, namespace: &str, hook: &Hook, run: &HookRun) -> Job {
    let previous = run.previous.as_ref().map_or("", Sha::as_str);
    let output = hook_output(workload, hook, run);
    let mut env = super::objects::env_vars(&hook.env);
    for (k, v) in [
        ("VIGIE_SHA", run.sha.as_str()),
        ("VIGIE_PREVIOUS_SHA", previous),
        ("VIGIE_ENVIRONMENT", workload.environment.as_str()),
        ("VIGIE_CODE_LOCATION", workload.code_location.as_str()),
        ("VIGIE_HOOK_STAGE", stage(run)),
    ]
    .into_iter()
    .chain(output.as_deref().map(|o| ("VIGIE_OUTPUT", o)))
    {
        env.push(KubeEnvVar {
            name: k.into(),
            value: Some(v.into()),
            value_from: None,
        });
    }
    let mut job_labels = labels(workload);
    job_labels.insert("vigie.dev/hook".into(), hook.name.clone());
    Job {
        metadata: ObjectMeta {
            name: Some(hook_job_name(workload, run)),
            namespace: Some(namespace.to_owned()),
            labels: Some(job_labels.clone()),
            owner_references: owner_references(workload, namespace),
            ..ObjectMeta::default()
        },
        spec: Some(JobSpec {
            backoff_limit: Some(0),
            active_deadline_seconds: Some(
                i64::try_from(hook.timeout.get().as_secs().max(1)).unwrap_or(i64::MAX),
            ),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(job_labels),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    restart_policy: Some("Never".into()),
                    containers: vec![Container {
                        name: "hook".into(),
                        image: Some(crate::backend::substitute(&hook.image, &run.sha)),
                        command: (!hook.command.is_empty()).then(|| hook.command.clone()),
                        env: Some(env),
                        ..Container::default()
                    }],
                    ..PodSpec::default()
                }),
            },
            ..JobSpec::default()
        }),
        status: None,
    }
}

/// One Job per hook, SHA and rollout attempt.
#[must_use]
pub fn hook_job_name(workload: &Workload, run: &HookRun) -> String {
    use sha2::Digest;
    let attempt = hex::encode(
        &sha2::Sha256::digest(
            format!(
                "{}/{}/{}/{}",
                workload.release,
                run.name,
                run.sha,
                run.attempt.as_second()
            )
            .as_bytes(),
        )[..4],
    );
    let mut base = format!("{}-{}", workload.release, run.name);
    base.truncate(63 - 1 - 7 - 1 - 8);
    format!(
        "{}-{}-{attempt}",
        base.trim_end_matches('-'),
        run.sha.short()
    )
}

/// Where a hook run's output goes: `output` with `{sha}`, `{shortSha}`,
/// `{environment}` and `{time}` (the rollout's start, so that a run always names the
/// same place) filled in.
#[must_use]
pub fn hook_output(workload: &Workload, hook: &Hook, run: &HookRun) -> Option<String> {
    hook.output.as_ref().map(|o| {
        substitute(o, &run.sha)
            .replace("{environment}", &workload.environment)
            .replace(
                "{time}",
                &run.attempt.strftime("%Y%m%dT%H%M%SZ").to_string(),
            )
    })
}

/// The outcome of a hook's Job.
#[must_use]
pub fn hook_outcome(workload: &Workload, job: &Job, hook: &Hook, run: &HookRun) -> HookOutcome {
    let Some(status) = job.status.as_ref() else {
        return HookOutcome::Running;
    };
    if status.succeeded.unwrap_or(0) > 0 {
        return HookOutcome::Succeeded {
            output: hook_output(workload, hook, run),
        };
    }
    let failed = status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "Failed" && c.status == "True");
    if let Some(c) = failed {
        return HookOutcome::Failed {
            reason: format!(
                "hook {} failed: {}{}",
                hook.name,
                c.reason.as_deref().unwrap_or("Failed"),
                c.message
                    .as_deref()
                    .map(|m| format!(": {m}"))
                    .unwrap_or_default()
            ),
        };
    }
    HookOutcome::Running
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::batch::v1::{JobCondition, JobStatus};

    use super::*;
    use crate::{
        api::common::DurationSpec,
        backend::kubernetes::fixtures::{sha, workload},
    };

    fn hook() -> Hook {
        Hook {
            name: "backup".into(),
            image: "registry.example/backup:1".into(),
            command: vec!["/backup".into()],
            env: vec![],
            mounts: vec![],
            timeout: DurationSpec::from_secs(300),
            output: Some("s3://backups/{shortSha}.sql".into()),
        }
    }

    fn run() -> HookRun {
        HookRun {
            name: "backup".into(),
            sha: sha('b'),
            previous: Some(sha('a')),
            attempt: "2026-11-24T10:00:00Z".parse().unwrap(),
            after_deploy: false,
        }
    }

    #[test]
    fn a_hook_runs_once_per_rollout_as_a_job() {
        let w = workload();
        let job = hook_job(&w, "apps", &hook(), &run());
        let name = job.metadata.name.clone().unwrap();
        assert!(name.len() <= 63, "{name}");
        assert!(name.starts_with("web-preprod-backup-bbbbbbb-"), "{name}");
        let mut later = run();
        later.attempt = "2026-11-24T11:00:00Z".parse().unwrap();
        assert_ne!(
            hook_job_name(&w, &later),
            name,
            "a new attempt is a new Job"
        );
        let spec = job.spec.unwrap();
        assert_eq!(
            (spec.backoff_limit, spec.active_deadline_seconds),
            (Some(0), Some(300))
        );
        let env = spec.template.spec.unwrap().containers[0]
            .env
            .clone()
            .unwrap();
        assert!(env.iter().any(
            |e| e.name == "VIGIE_PREVIOUS_SHA" && e.value.as_deref() == Some(sha('a').as_str())
        ));
        let mut long = w.clone();
        long.release = "a-very-long-release-name-that-goes-on-and-on-and-on".into();
        assert!(hook_job_name(&long, &run()).len() <= 63);
    }

    #[test]
    fn a_hook_job_outcome() {
        let job = |status: Option<JobStatus>| Job {
            status,
            ..hook_job(&workload(), "apps", &hook(), &run())
        };
        assert_eq!(
            hook_outcome(&workload(), &job(None), &hook(), &run()),
            HookOutcome::Running
        );
        let ok = JobStatus {
            succeeded: Some(1),
            ..JobStatus::default()
        };
        assert_eq!(
            hook_outcome(&workload(), &job(Some(ok)), &hook(), &run()),
            HookOutcome::Succeeded {
                output: Some("s3://backups/bbbbbbb.sql".into())
            }
        );
        let deadline = JobStatus {
            failed: Some(1),
            conditions: Some(vec![JobCondition {
                type_: "Failed".into(),
                status: "True".into(),
                reason: Some("DeadlineExceeded".into()),
                message: Some("Job was active longer than specified deadline".into()),
                ..JobCondition::default()
            }]),
            ..JobStatus::default()
        };
        assert_eq!(
            hook_outcome(&workload(), &job(Some(deadline)), &hook(), &run()),
            HookOutcome::Failed {
                reason: "hook backup failed: DeadlineExceeded: Job was active longer than specified deadline".into()
            }
        );
    }
}
