//! The Release's conditions (`Ready`, `Progressing`, `Verified`, `Degraded`) and
//! its one-line message, computed from the decided state. `lastTransitionTime`
//! moves only when a condition's status changes.

use jiff::Timestamp;

use super::decide::{BackendState, Block, Desired, Observations};
use crate::api::{
    common::{Condition, ConditionStatus},
    release::{HealthState, Phase, ReleaseStatus},
};

/// Condition type: the validated SHA runs, healthy, and is the desired one.
pub const READY: &str = "Ready";
/// Condition type: a deploy or rollback is under way (False says why nothing moves).
pub const PROGRESSING: &str = "Progressing";
/// Condition type: the running SHA is validated by CI.
pub const VERIFIED: &str = "Verified";
/// Condition type: something is wrong and may need a person.
pub const DEGRADED: &str = "Degraded";

/// Reasons, as constants so that metrics and tests never depend on formatting.
pub mod reason {
    /// The validated SHA runs.
    pub const UP_TO_DATE: &str = "UpToDate";
    /// Deploying.
    pub const DEPLOYING: &str = "Deploying";
    /// Waiting for the SHA's artifact (its image) to be available.
    pub const ARTIFACT_NOT_AVAILABLE: &str = "ArtifactNotAvailable";
    /// Waiting for a pre-deploy hook, or a post-deploy hook (a smoke test).
    pub const RUNNING_HOOKS: &str = "RunningHooks";
    /// Waiting for CI.
    pub const VERIFYING: &str = "Verifying";
    /// Rolling back.
    pub const ROLLING_BACK: &str = "RollingBack";
    /// Rolled back.
    pub const ROLLED_BACK: &str = "RolledBack";
    /// Waiting for an approval.
    pub const AWAITING_APPROVAL: &str = "AwaitingApproval";
    /// Outside the deploy windows.
    pub const OUTSIDE_DEPLOY_WINDOW: &str = "OutsideDeployWindow";
    /// The deploy windows never open.
    pub const NO_DEPLOY_WINDOW: &str = "NoDeployWindow";
    /// Not validated upstream.
    pub const NOT_VALIDATED_UPSTREAM: &str = "NotValidatedUpstream";
    /// Suspect upstream.
    pub const SUSPECT_UPSTREAM: &str = "SuspectUpstream";
    /// No view of the upstream environment.
    pub const NO_UPSTREAM: &str = "NoUpstream";
    /// The desired SHA is quarantined.
    pub const QUARANTINED: &str = "Quarantined";
    /// A person is needed.
    pub const FAILED: &str = "Failed";
    /// `spec.revision` is empty.
    pub const NO_REVISION: &str = "NoRevision";
    /// `spec.revision` could not be resolved.
    pub const REVISION_UNRESOLVED: &str = "RevisionUnresolved";
    /// The backend does not answer.
    pub const BACKEND_UNAVAILABLE: &str = "BackendUnavailable";
    /// The workload is unhealthy.
    pub const UNHEALTHY: &str = "Unhealthy";
    /// Everything is fine.
    pub const HEALTHY: &str = "Healthy";
    /// The running SHA is validated.
    pub const VALIDATED: &str = "Validated";
    /// The running SHA is not validated.
    pub const NOT_VALIDATED: &str = "NotValidated";
    /// The validated SHA became suspect.
    pub const SUSPECT: &str = "Suspect";
    /// Nothing runs yet.
    pub const NOTHING_DEPLOYED: &str = "NothingDeployed";
}

/// Sets one condition, keeping its `lastTransitionTime` when its status stays.
pub fn set(
    conditions: &mut Vec<Condition>,
    type_: &str,
    status: ConditionStatus,
    reason: &str,
    message: &str,
    now: Timestamp,
    generation: Option<i64>,
) {
    let last_transition_time = conditions
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .map_or(now, |c| c.last_transition_time);
    let c = Condition {
        type_: type_.to_owned(),
        status,
        reason: reason.to_owned(),
        message: message.to_owned(),
        last_transition_time,
        observed_generation: generation,
    };
    match conditions.iter_mut().find(|c| c.type_ == type_) {
        Some(existing) => *existing = c,
        None => conditions.push(c),
    }
}

/// What the conditions are computed from.
pub(super) struct View<'a> {
    pub phase: Phase,
    pub observed: &'a Observations,
    pub status: &'a ReleaseStatus,
    pub block: Option<&'a Block>,
    pub generation: Option<i64>,
}

/// The four conditions and a one-line message.
pub(super) fn compute(
    view: &View<'_>,
    previous: &[Condition],
    now: Timestamp,
) -> (Vec<Condition>, String) {
    let (progressing, progressing_reason, message) = progressing(view);
    let (verified, verified_reason, verified_message) = verified(view);
    let (degraded, degraded_reason, degraded_message) = degraded(view);
    let ready = view.phase == Phase::Validated
        && view.status.deployed_sha.is_some()
        && view.status.deployed_sha == view.status.validated_sha
        && degraded == ConditionStatus::False
        && matches!(view.observed.desired, Desired::Sha(ref d) if Some(d) == view.status.validated_sha.as_ref());
    let ready_reason = if ready {
        reason::UP_TO_DATE
    } else {
        progressing_reason
    };
    let make = |type_: &str, status, reason: &str, message: &str| {
        let mut c = Condition {
            type_: type_.to_owned(),
            status,
            reason: reason.to_owned(),
            message: message.to_owned(),
            last_transition_time: now,
            observed_generation: view.generation,
        };
        if let Some(old) = previous
            .iter()
            .find(|p| p.type_ == type_ && p.status == status)
        {
            c.last_transition_time = old.last_transition_time;
        }
        c
    };
    let ready_status = if ready {
        ConditionStatus::True
    } else {
        ConditionStatus::False
    };
    let conditions = vec![
        make(READY, ready_status, ready_reason, &message),
        make(PROGRESSING, progressing, progressing_reason, &message),
        make(VERIFIED, verified, verified_reason, &verified_message),
        make(DEGRADED, degraded, degraded_reason, &degraded_message),
    ];
    (conditions, message)
}

fn short(sha: Option<&crate::api::Sha>) -> &str {
    sha.map_or("-", crate::api::Sha::short)
}

#[allow(
    clippy::too_many_lines,
    reason = "one arm per phase or block: the table reads best whole"
)]
fn progressing(view: &View<'_>) -> (ConditionStatus, &'static str, String) {
    use ConditionStatus::{False, True};
    let s = view.status;
    let rollout = s.rollout.as_ref();
    let desired = match &view.observed.desired {
        Desired::Sha(sha) => sha.short().to_owned(),
        Desired::None => {
            return (
                False,
                reason::NO_REVISION,
                "spec.revision is empty: nothing to deploy".into(),
            );
        }
        Desired::Unresolved {
            revision,
            reason: why,
        } => {
            return (
                False,
                reason::REVISION_UNRESOLVED,
                format!("revision {revision:?} cannot be resolved: {why}"),
            );
        }
    };
    match (view.phase, view.block) {
        (Phase::Deploying, _) if view.observed.artifact_pending.is_some() => (
            True,
            reason::ARTIFACT_NOT_AVAILABLE,
            format!(
                "waiting for the artifact of {}: {}",
                short(rollout.map(|r| &r.sha)),
                view.observed.artifact_pending.clone().unwrap_or_default()
            ),
        ),
        (Phase::Deploying, _) => match rollout {
            Some(r) if r.deployed_at.is_none() => (
                True,
                reason::RUNNING_HOOKS,
                format!(
                    "running pre-deploy hooks before deploying {}",
                    r.sha.short()
                ),
            ),
            Some(r) if r.up_at.is_some() && r.healthy_at.is_none() => (
                True,
                reason::RUNNING_HOOKS,
                format!(
                    "{} is up; running its post-deploy hooks before verifying it",
                    r.sha.short()
                ),
            ),
            Some(r) => (
                True,
                reason::DEPLOYING,
                format!("deploying {}, waiting for it to be healthy", r.sha.short()),
            ),
            None => (True, reason::DEPLOYING, "deploying".into()),
        },
        (Phase::Verifying, _) => (
            True,
            reason::VERIFYING,
            format!(
                "{} is deployed and healthy; waiting for CI",
                short(rollout.map(|r| &r.sha))
            ),
        ),
        (Phase::RollingBack, _) => (
            True,
            reason::ROLLING_BACK,
            format!(
                "rolling back {} to {}: {}",
                short(rollout.map(|r| &r.sha)),
                short(rollout.and_then(|r| r.rollback_point.as_ref())),
                rollout.and_then(|r| r.failure.clone()).unwrap_or_default()
            ),
        ),
        (Phase::AwaitingApproval, _) => (
            False,
            reason::AWAITING_APPROVAL,
            format!("{desired} waits for an approval naming it (vigie promote, or spec.approval)"),
        ),
        (_, Some(Block::OutsideWindow { until })) => (
            False,
            reason::OUTSIDE_DEPLOY_WINDOW,
            format!("{desired} waits for the deploy window, until {until}"),
        ),
        (_, Some(Block::NoWindow)) => (
            False,
            reason::NO_DEPLOY_WINDOW,
            format!("{desired} waits: the deploy windows never open"),
        ),
        (_, Some(Block::NotValidatedUpstream)) => (
            False,
            reason::NOT_VALIDATED_UPSTREAM,
            format!("{desired} is refused: it is not validated in the promotion source"),
        ),
        (_, Some(Block::SuspectUpstream)) => (
            False,
            reason::SUSPECT_UPSTREAM,
            format!("{desired} is refused: its validation in the promotion source was revoked"),
        ),
        (_, Some(Block::NoUpstream)) => (
            False,
            reason::NO_UPSTREAM,
            format!("{desired} waits: the promotion source has no Release of this code location"),
        ),
        (_, Some(Block::Quarantined { since, reason: why })) => (
            False,
            reason::QUARANTINED,
            format!(
                "{desired} was rolled back here at {since} ({why}); it is not redeployed until cleared or a newer revision arrives"
            ),
        ),
        (Phase::Failed, _) => (
            False,
            reason::FAILED,
            rollout
                .and_then(|r| r.failure.clone())
                .unwrap_or_else(|| "the last deploy failed and needs a person".into()),
        ),
        (Phase::RolledBack, _) => (
            False,
            reason::ROLLED_BACK,
            format!("rolled back; {} serves", short(s.validated_sha.as_ref())),
        ),
        _ => (
            False,
            reason::UP_TO_DATE,
            format!(
                "{} is validated and deployed",
                short(s.validated_sha.as_ref())
            ),
        ),
    }
}

fn verified(view: &View<'_>) -> (ConditionStatus, &'static str, String) {
    let s = view.status;
    let Some(deployed) = s.deployed_sha.as_ref() else {
        return (
            ConditionStatus::Unknown,
            reason::NOTHING_DEPLOYED,
            "nothing runs".into(),
        );
    };
    if s.validated_sha.as_ref() == Some(deployed) {
        if s.suspect.iter().any(|x| &x.sha == deployed) {
            return (
                ConditionStatus::False,
                reason::SUSPECT,
                format!("{} was validated, then became suspect", deployed.short()),
            );
        }
        let url =
            s.ci.as_ref()
                .filter(|c| &c.sha == deployed)
                .and_then(|c| c.url.clone());
        let message = url.map_or_else(
            || format!("{} is validated", deployed.short()),
            |u| format!("{} is validated ({u})", deployed.short()),
        );
        return (ConditionStatus::True, reason::VALIDATED, message);
    }
    if view.phase == Phase::Verifying {
        return (
            ConditionStatus::Unknown,
            reason::VERIFYING,
            format!("waiting for CI on {}", deployed.short()),
        );
    }
    (
        ConditionStatus::False,
        reason::NOT_VALIDATED,
        format!("{} is not validated", deployed.short()),
    )
}

fn degraded(view: &View<'_>) -> (ConditionStatus, &'static str, String) {
    let w = &view.observed.workload;
    if let BackendState::Unreachable { reason: why } = &w.backend {
        return (
            ConditionStatus::True,
            reason::BACKEND_UNAVAILABLE,
            format!("the backend does not answer: {why}"),
        );
    }
    if view.phase == Phase::Failed {
        let why = view
            .status
            .rollout
            .as_ref()
            .and_then(|r| r.failure.clone())
            .unwrap_or_default();
        return (ConditionStatus::True, reason::FAILED, why);
    }
    if w.health == HealthState::Unhealthy {
        return (
            ConditionStatus::True,
            reason::UNHEALTHY,
            w.reason
                .clone()
                .unwrap_or_else(|| "the health check fails".into()),
        );
    }
    if let Some(m) = view
        .status
        .monitor
        .as_ref()
        .filter(|m| m.state == crate::api::release::MonitorState::Degraded)
    {
        return (
            ConditionStatus::True,
            reason::UNHEALTHY,
            format!(
                "the health monitor marked it down{}: {}",
                m.since.map(|t| format!(" at {t}")).unwrap_or_default(),
                m.reason.as_deref().unwrap_or("checks failed")
            ),
        );
    }
    (ConditionStatus::False, reason::HEALTHY, String::new())
}
