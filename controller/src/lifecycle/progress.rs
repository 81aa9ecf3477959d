//! Which status changes are worth a write: a transition is, a step of a rollout in
//! flight is not. While a Release deploys or rolls back, each watch event of its
//! workload ("0 of 3 replicas updated", then "1 of 3"…) changes what `decide` would
//! record without changing what it decided; those steps stay in memory and the next
//! transition (healthy, unhealthy, another phase) writes them all at once.

use crate::api::{
    Phase, ReleaseStatus,
    release::{HealthState, HealthSummary},
};

/// Whether `decided` differs from `recorded` only by the progress of a rollout in
/// flight: the same phase, deploying or rolling back, a workload that is neither
/// healthy nor unhealthy on either side, and nothing else changed than what was
/// observed of it (its SHA, its progress, and the conditions computed from them).
#[must_use]
pub fn progress_only(recorded: &ReleaseStatus, decided: &ReleaseStatus) -> bool {
    let in_flight = matches!(recorded.phase, Phase::Deploying | Phase::RollingBack);
    if !in_flight || recorded.phase != decided.phase {
        return false;
    }
    let pending = |h: Option<&HealthSummary>| {
        h.is_none_or(|h| matches!(h.state, HealthState::Progressing | HealthState::Unknown))
    };
    if !pending(recorded.health.as_ref()) || !pending(decided.health.as_ref()) {
        return false;
    }
    without_progress(recorded) == without_progress(decided)
}

/// The status without what a rollout's progress changes.
fn without_progress(status: &ReleaseStatus) -> ReleaseStatus {
    let mut s = status.clone();
    s.health = None;
    s.deployed_sha = None;
    s.short.deployed = None;
    s.conditions = Vec::new();
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{Sha, release::Rollout};

    fn sha(c: char) -> Sha {
        std::iter::repeat_n(c, 40)
            .collect::<String>()
            .parse()
            .unwrap()
    }

    fn deploying() -> ReleaseStatus {
        ReleaseStatus {
            phase: Phase::Deploying,
            desired_sha: Some(sha('a')),
            rollout: Some(Rollout {
                sha: sha('a'),
                rollback_point: None,
                started_at: jiff::Timestamp::from_second(1_800_000_000).unwrap(),
                deployed_at: None,
                up_at: None,
                healthy_at: None,
                hooks_done: Vec::new(),
                failure: None,
            }),
            health: Some(HealthSummary {
                state: HealthState::Unknown,
                reason: None,
            }),
            ..ReleaseStatus::default()
        }
    }

    fn progressing(reason: &str) -> ReleaseStatus {
        let mut s = deploying();
        s.deployed_sha = Some(sha('a'));
        s.short.deployed = Some("aaaaaaa".into());
        s.health = Some(HealthSummary {
            state: HealthState::Progressing,
            reason: Some(reason.into()),
        });
        s
    }

    #[test]
    fn the_steps_of_a_rollout_are_not_written() {
        let started = deploying();
        let first = progressing("0 of 1 replicas updated, 0 available, 0 old");
        let second = progressing("1 of 1 replicas updated, 0 available, 0 old");
        assert!(progress_only(&started, &first));
        assert!(progress_only(&first, &second));
        let mut back = second.clone();
        back.phase = Phase::RollingBack;
        let mut back_further = back.clone();
        back_further.health = started.health.clone();
        assert!(progress_only(&back, &back_further));
    }

    #[test]
    fn transitions_are_written() {
        let step = progressing("1 of 1 replicas updated, 0 available, 0 old");
        let mut healthy = step.clone();
        healthy.health = Some(HealthSummary {
            state: HealthState::Healthy,
            reason: None,
        });
        assert!(
            !progress_only(&step, &healthy),
            "the workload became healthy"
        );
        let mut unhealthy = step.clone();
        unhealthy.health = Some(HealthSummary {
            state: HealthState::Unhealthy,
            reason: Some("ProgressDeadlineExceeded".into()),
        });
        assert!(!progress_only(&step, &unhealthy), "or unhealthy");
        let mut verifying = step.clone();
        verifying.phase = Phase::Verifying;
        assert!(!progress_only(&step, &verifying), "another phase");
        let mut retargeted = step.clone();
        retargeted.desired_sha = Some(sha('b'));
        assert!(!progress_only(&step, &retargeted), "something else changed");
        let mut failed = step.clone();
        failed.message = Some("failed to apply".into());
        assert!(!progress_only(&step, &failed), "an action failed");
        let mut pending = ReleaseStatus::default();
        assert!(!progress_only(&pending, &deploying()), "a deploy starts");
        pending.phase = Phase::Verifying;
        let mut verifying_step = pending.clone();
        verifying_step.deployed_sha = Some(sha('a'));
        assert!(
            !progress_only(&pending, &verifying_step),
            "only a rollout in flight has steps"
        );
    }
}
