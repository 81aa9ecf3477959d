//! How a Deployment's rollout stands, judged from its status alone. Pure: the status
//! is read by `mod.rs` (from the watch cache or the API).

use k8s_openapi::api::apps::v1::Deployment;

use super::SHA_ANNOTATION;
use crate::api::{Sha, release::HealthState};

/// What a Deployment runs and how its rollout stands: the SHA of its pod template, and
/// Healthy once the controller has seen the latest spec and every replica is updated
/// and available with no old replica left; Unhealthy when the progress deadline passed.
#[must_use]
pub fn judge(deployment: &Deployment) -> (Option<Sha>, HealthState, Option<String>) {
    let spec = deployment.spec.as_ref();
    let sha = spec
        .and_then(|s| s.template.metadata.as_ref())
        .and_then(|m| m.annotations.as_ref())
        .and_then(|a| a.get(SHA_ANNOTATION))
        .and_then(|s| s.parse::<Sha>().ok());
    let Some(status) = deployment.status.as_ref() else {
        return (
            sha,
            HealthState::Progressing,
            Some("the Deployment has no status yet".into()),
        );
    };
    let generation = deployment.metadata.generation.unwrap_or(0);
    if status.observed_generation.unwrap_or(0) < generation {
        return (
            sha,
            HealthState::Progressing,
            Some("the Deployment controller has not seen the latest spec yet".into()),
        );
    }
    let deadline = status.conditions.iter().flatten().find(|c| {
        c.type_ == "Progressing"
            && c.status == "False"
            && c.reason.as_deref() == Some("ProgressDeadlineExceeded")
    });
    if let Some(c) = deadline {
        return (
            sha,
            HealthState::Unhealthy,
            Some(
                c.message
                    .clone()
                    .unwrap_or_else(|| "the rollout exceeded its progress deadline".into()),
            ),
        );
    }
    let want = spec.and_then(|s| s.replicas).unwrap_or(1);
    let updated = status.updated_replicas.unwrap_or(0);
    let available = status.available_replicas.unwrap_or(0);
    let total = status.replicas.unwrap_or(0);
    if updated >= want && available >= want && total <= want {
        (sha, HealthState::Healthy, None)
    } else {
        (
            sha,
            HealthState::Progressing,
            Some(format!(
                "{updated} of {want} replicas updated, {available} available, {} old",
                (total - updated).max(0)
            )),
        )
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::apps::v1::{DeploymentCondition, DeploymentStatus};

    use super::*;
    use crate::backend::kubernetes::{
        deployment,
        fixtures::{sha, workload},
    };

    fn judged(
        generation: i64,
        status: DeploymentStatus,
    ) -> (Option<Sha>, HealthState, Option<String>) {
        let mut d = deployment(&workload(), "apps", &sha('a'), 600).unwrap();
        d.metadata.generation = Some(generation);
        d.status = Some(status);
        judge(&d)
    }

    #[test]
    fn a_rollout_is_judged_from_the_deployment_status() {
        let done = DeploymentStatus {
            observed_generation: Some(2),
            replicas: Some(3),
            updated_replicas: Some(3),
            available_replicas: Some(3),
            ..DeploymentStatus::default()
        };
        assert_eq!(
            judged(2, done.clone()),
            (Some(sha('a')), HealthState::Healthy, None)
        );
        let (_, h, why) = judged(3, done.clone());
        assert_eq!(
            h,
            HealthState::Progressing,
            "the controller has not seen generation 3"
        );
        assert!(why.unwrap().contains("not seen the latest spec"));
        let old_left = DeploymentStatus {
            replicas: Some(4),
            ..done.clone()
        };
        let (_, h, why) = judged(2, old_left);
        assert_eq!(h, HealthState::Progressing);
        assert_eq!(why.unwrap(), "3 of 3 replicas updated, 3 available, 1 old");
        let unavailable = DeploymentStatus {
            available_replicas: Some(1),
            ..done.clone()
        };
        assert_eq!(judged(2, unavailable).1, HealthState::Progressing);
        let stuck = DeploymentStatus {
            available_replicas: Some(0),
            conditions: Some(vec![DeploymentCondition {
                type_: "Progressing".into(),
                status: "False".into(),
                reason: Some("ProgressDeadlineExceeded".into()),
                message: Some("ReplicaSet \"web-1\" has timed out progressing.".into()),
                ..DeploymentCondition::default()
            }]),
            ..done
        };
        let (_, h, why) = judged(2, stuck);
        assert_eq!(h, HealthState::Unhealthy);
        assert!(why.unwrap().contains("timed out progressing"));
        let mut fresh = deployment(&workload(), "apps", &sha('a'), 600).unwrap();
        fresh.status = None;
        assert_eq!(judge(&fresh).1, HealthState::Progressing);
    }
}
