//! What the forge should show for a Release, from its recorded status alone: the state
//! of the deployment of each SHA that matters now (the one in flight, the validated one,
//! the one it replaced), and what each provider calls that state. Pure: no I/O, no
//! clock. Level-triggered: the same status always gives the same answer, so a restarted
//! Vigie recomputes it and the forge is only written where it differs.

use crate::api::{
    Phase, ReleaseStatus, Sha,
    release::{HistoryEntry, HistoryEvent},
};

/// The state a (environment, SHA) deployment should show.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum State {
    /// Being deployed, or deployed and waiting for CI.
    InProgress,
    /// Validated: it serves the environment.
    Success,
    /// Rolled back (CI red, a timeout, unhealthy).
    Failure,
    /// Stopped and a person is needed (no rollback target, a failed hook).
    Error,
    /// Replaced by a newer validated SHA, or superseded before it was validated.
    Inactive,
}

impl State {
    /// The name used in logs and metrics.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::InProgress => "in_progress",
            Self::Success => "success",
            Self::Failure => "failure",
            Self::Error => "error",
            Self::Inactive => "inactive",
        }
    }

    /// GitHub's deployment status `state`.
    #[must_use]
    pub const fn github_deployment(self) -> &'static str {
        self.as_str()
    }

    /// GitHub's commit status `state`; `None` leaves the commit status as it is (a
    /// replaced SHA was validated here, and stays so).
    #[must_use]
    pub const fn github_commit(self) -> Option<&'static str> {
        match self {
            Self::InProgress => Some("pending"),
            Self::Success => Some("success"),
            Self::Failure => Some("failure"),
            Self::Error => Some("error"),
            Self::Inactive => None,
        }
    }

    /// Whether a deployment that does not exist yet is created to show this state: a
    /// SHA merely replaced is not worth a new deployment.
    #[must_use]
    pub const fn creates(self) -> bool {
        !matches!(self, Self::Inactive)
    }
}

/// The GitLab deployment `status` to set, given the one it has (`None`: no deployment
/// yet); `None` when nothing is to be written. GitLab has no `inactive`: a replaced SHA
/// keeps its `success` (GitLab shows the newest one as the environment's), and a
/// superseded one still `running` is `canceled`.
#[must_use]
pub fn gitlab_deployment(current: Option<&str>, wanted: State) -> Option<&'static str> {
    let status = match wanted {
        State::InProgress => "running",
        State::Success => "success",
        State::Failure | State::Error => "failed",
        State::Inactive => match current {
            Some("running" | "created") => "canceled",
            _ => return None,
        },
    };
    (current != Some(status)).then_some(status)
}

/// What to do on GitLab for a (environment, SHA), given the status of its newest
/// deployment there (`None`: none yet).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GitLabStep {
    /// It shows the state already (or a replaced SHA has no deployment to update).
    Nothing,
    /// A deployment with this status: the first, or a redeploy (GitLab moves a
    /// deployment to `running` only from `created`, so a SHA deployed again after a
    /// rollback gets a new deployment, as a retried job does in GitLab).
    Create(&'static str),
    /// The deployment's status becomes this.
    Update(&'static str),
}

/// The GitLab step for `wanted`, given the newest deployment's status.
#[must_use]
pub fn gitlab_step(current: Option<&str>, wanted: State) -> GitLabStep {
    match (current, gitlab_deployment(current, wanted)) {
        (_, None) => GitLabStep::Nothing,
        (None, Some(status)) => GitLabStep::Create(status),
        (Some(c), Some("running")) if c != "created" => GitLabStep::Create("running"),
        (Some(_), Some(status)) => GitLabStep::Update(status),
    }
}

/// A SHA and the state its deployment should show, with a short reason for people.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Wanted {
    /// The SHA.
    pub sha: Sha,
    /// Its state.
    pub state: State,
    /// A sentence for the forge's description (at most 140 characters).
    pub description: String,
}

/// The last history event that settles a SHA's deployment.
fn last_event(history: &[HistoryEntry], sha: &Sha) -> Option<HistoryEvent> {
    history
        .iter()
        .rev()
        .filter(|h| &h.sha == sha)
        .map(|h| h.event)
        .find(|e| {
            matches!(
                e,
                HistoryEvent::Deployed
                    | HistoryEvent::Validated
                    | HistoryEvent::Superseded
                    | HistoryEvent::RolledBack
                    | HistoryEvent::Failed
            )
        })
}

/// What the forge should show for a Release in `environment`: at most one entry per SHA,
/// for the SHA in flight, the validated one and the one each replaced.
#[must_use]
pub fn desired(status: &ReleaseStatus, environment: &str) -> Vec<Wanted> {
    let mut out: Vec<Wanted> = Vec::new();
    let mut want = |sha: &Sha, state: State, why: String| {
        if !out.iter().any(|w| &w.sha == sha) {
            out.push(Wanted {
                sha: sha.clone(),
                state,
                description: cut(&why),
            });
        }
    };
    let failure = status
        .rollout
        .as_ref()
        .and_then(|r| r.failure.clone())
        .or_else(|| status.message.clone())
        .unwrap_or_default();
    // The SHA in flight (or the one whose deploy ended badly) first: it wins over the rest.
    if let Some(rollout) = &status.rollout
        && status.validated_sha.as_ref() != Some(&rollout.sha)
    {
        let sha = &rollout.sha;
        let short = sha.short();
        let settled = match status.phase {
            Phase::Deploying | Phase::Verifying => Some(State::InProgress),
            Phase::RollingBack | Phase::RolledBack => Some(State::Failure),
            Phase::Failed => Some(State::Error),
            _ => match last_event(&status.history, sha) {
                Some(HistoryEvent::Superseded) => Some(State::Inactive),
                Some(HistoryEvent::RolledBack) => Some(State::Failure),
                Some(HistoryEvent::Failed) => Some(State::Error),
                _ => None,
            },
        };
        match settled {
            Some(State::InProgress) if status.phase == Phase::Deploying => {
                want(
                    sha,
                    State::InProgress,
                    format!("deploying {short} to {environment}"),
                );
            }
            Some(State::InProgress) => want(
                sha,
                State::InProgress,
                format!("{short} runs in {environment}; waiting for CI"),
            ),
            Some(State::Failure) => want(
                sha,
                State::Failure,
                format!("{short} rolled back in {environment}: {failure}"),
            ),
            Some(State::Error) => want(
                sha,
                State::Error,
                format!("{short} needs a person in {environment}: {failure}"),
            ),
            Some(State::Inactive) => want(
                sha,
                State::Inactive,
                format!("{short} superseded in {environment}"),
            ),
            Some(State::Success) | None => {}
        }
    }
    // The validated SHA serves the environment (or serves again after a rollback).
    if let Some(v) = &status.validated_sha {
        let why = if status.phase == Phase::RolledBack {
            format!("{} serves {environment} again", v.short())
        } else {
            format!("{} validated in {environment}", v.short())
        };
        want(v, State::Success, why);
        // The SHA it replaced: the newest other SHA validated here before it.
        if let Some(previous) = status
            .history
            .iter()
            .rev()
            .filter(|h| h.event == HistoryEvent::Validated && &h.sha != v)
            .map(|h| &h.sha)
            .next()
        {
            want(
                previous,
                State::Inactive,
                format!("replaced by {} in {environment}", v.short()),
            );
        }
    }
    out
}

/// At most 140 characters (GitHub's limit for descriptions), cut on a char boundary.
#[must_use]
pub fn cut(text: &str) -> String {
    const MAX: usize = 140;
    if text.chars().count() <= MAX {
        return text.to_owned();
    }
    let mut s: String = text.chars().take(MAX - 1).collect();
    s.push('…');
    s
}

#[cfg(test)]
mod tests {
    use jiff::Timestamp;

    use super::*;
    use crate::api::release::Rollout;

    fn sha(c: char) -> Sha {
        c.to_string().repeat(40).parse().unwrap()
    }

    fn at() -> Timestamp {
        "2026-12-02T10:00:00Z".parse().unwrap()
    }

    fn entry(event: HistoryEvent, c: char) -> HistoryEntry {
        HistoryEntry {
            at: at(),
            event,
            sha: sha(c),
            previous: None,
            by: None,
            reason: None,
            url: None,
            output: None,
        }
    }

    #[allow(
        clippy::unnecessary_wraps,
        reason = "the status field it fills is an Option"
    )]
    fn rollout(c: char, failure: Option<&str>) -> Option<Rollout> {
        Some(Rollout {
            sha: sha(c),
            rollback_point: Some(sha('a')),
            started_at: at(),
            deployed_at: None,
            up_at: None,
            healthy_at: None,
            hooks_done: Vec::new(),
            failure: failure.map(str::to_owned),
        })
    }

    fn states(status: &ReleaseStatus) -> Vec<(char, State)> {
        desired(status, "preprod")
            .into_iter()
            .map(|w| (w.sha.as_str().chars().next().unwrap(), w.state))
            .collect()
    }

    /// `a` validated earlier; `b` the SHA in flight in each phase.
    fn with(phase: Phase, history: &[(HistoryEvent, char)]) -> ReleaseStatus {
        ReleaseStatus {
            phase,
            validated_sha: Some(sha('a')),
            deployed_sha: Some(sha('b')),
            rollout: rollout('b', Some("CI failed: test")),
            history: history.iter().map(|(e, c)| entry(*e, *c)).collect(),
            ..ReleaseStatus::default()
        }
    }

    #[test]
    fn every_phase_maps_to_the_states_of_its_shas() {
        use HistoryEvent as H;
        let deployed = [(H::Validated, 'a'), (H::Deployed, 'b')];
        for (phase, history, expected) in [
            // Deploying and verifying: in progress; the validated one still serves.
            (
                Phase::Deploying,
                &deployed[..],
                vec![('b', State::InProgress), ('a', State::Success)],
            ),
            (
                Phase::Verifying,
                &deployed[..],
                vec![('b', State::InProgress), ('a', State::Success)],
            ),
            // Red: the SHA rolled back fails; the rollback point serves again.
            (
                Phase::RollingBack,
                &[
                    (H::Validated, 'a'),
                    (H::Deployed, 'b'),
                    (H::RolledBack, 'b'),
                ][..],
                vec![('b', State::Failure), ('a', State::Success)],
            ),
            (
                Phase::RolledBack,
                &[
                    (H::Validated, 'a'),
                    (H::Deployed, 'b'),
                    (H::RolledBack, 'b'),
                ][..],
                vec![('b', State::Failure), ('a', State::Success)],
            ),
            // A person is needed.
            (
                Phase::Failed,
                &[(H::Validated, 'a'), (H::Deployed, 'b'), (H::Failed, 'b')][..],
                vec![('b', State::Error), ('a', State::Success)],
            ),
            // Waiting (a window, an approval) after a rollback: it stays failed.
            (
                Phase::Pending,
                &[
                    (H::Validated, 'a'),
                    (H::Deployed, 'b'),
                    (H::RolledBack, 'b'),
                ][..],
                vec![('b', State::Failure), ('a', State::Success)],
            ),
            (
                Phase::AwaitingApproval,
                &[
                    (H::Validated, 'a'),
                    (H::Deployed, 'b'),
                    (H::Superseded, 'b'),
                ][..],
                vec![('b', State::Inactive), ('a', State::Success)],
            ),
            (
                Phase::Pending,
                &[(H::Validated, 'a'), (H::Deployed, 'b'), (H::Failed, 'b')][..],
                vec![('b', State::Error), ('a', State::Success)],
            ),
        ] {
            let status = with(phase, history);
            assert_eq!(states(&status), expected, "{phase:?}");
        }
    }

    #[test]
    fn validated_succeeds_and_the_one_it_replaced_goes_inactive() {
        use HistoryEvent as H;
        let status = ReleaseStatus {
            phase: Phase::Validated,
            validated_sha: Some(sha('b')),
            deployed_sha: Some(sha('b')),
            rollout: rollout('b', None),
            history: [(H::Validated, 'a'), (H::Deployed, 'b'), (H::Validated, 'b')]
                .iter()
                .map(|(e, c)| entry(*e, *c))
                .collect(),
            ..ReleaseStatus::default()
        };
        assert_eq!(
            states(&status),
            vec![('b', State::Success), ('a', State::Inactive)]
        );
        let first = ReleaseStatus {
            history: vec![entry(H::Deployed, 'b'), entry(H::Validated, 'b')],
            ..status
        };
        assert_eq!(
            states(&first),
            vec![('b', State::Success)],
            "nothing replaced"
        );
    }

    #[test]
    fn a_rerun_that_turns_green_makes_the_rolled_back_sha_succeed_again() {
        use HistoryEvent as H;
        let history = [
            (H::Validated, 'a'),
            (H::Deployed, 'b'),
            (H::RolledBack, 'b'),
            (H::CiPassed, 'b'),
            (H::Deployed, 'b'),
        ];
        let redeploying = with(Phase::Deploying, &history);
        assert_eq!(
            states(&redeploying),
            vec![('b', State::InProgress), ('a', State::Success)]
        );
        let mut validated = with(Phase::Validated, &history);
        validated.validated_sha = Some(sha('b'));
        validated.history.push(entry(H::Validated, 'b'));
        assert_eq!(
            states(&validated),
            vec![('b', State::Success), ('a', State::Inactive)]
        );
    }

    #[test]
    fn a_first_deploy_with_nothing_validated_reports_only_its_sha() {
        let status = ReleaseStatus {
            phase: Phase::Deploying,
            rollout: rollout('b', None),
            history: vec![entry(HistoryEvent::Deployed, 'b')],
            ..ReleaseStatus::default()
        };
        assert_eq!(states(&status), vec![('b', State::InProgress)]);
        assert!(states(&ReleaseStatus::default()).is_empty(), "nothing yet");
    }

    #[test]
    fn descriptions_say_why_and_fit_in_140_characters() {
        let status = with(Phase::RolledBack, &[]);
        let wanted = desired(&status, "preprod");
        assert_eq!(
            wanted[0].description,
            "bbbbbbb rolled back in preprod: CI failed: test"
        );
        assert_eq!(wanted[1].description, "aaaaaaa serves preprod again");
        let mut long = status;
        long.rollout = rollout('b', Some(&"é".repeat(500)));
        let d = &desired(&long, "preprod")[0].description;
        assert_eq!(d.chars().count(), 140);
        assert!(d.ends_with('…'));
    }

    #[test]
    fn each_provider_names_the_states() {
        use State::*;
        let all = [InProgress, Success, Failure, Error, Inactive];
        let github: Vec<_> = all.iter().map(|s| s.github_deployment()).collect();
        assert_eq!(
            github,
            ["in_progress", "success", "failure", "error", "inactive"]
        );
        let commit: Vec<_> = all.iter().map(|s| s.github_commit()).collect();
        assert_eq!(
            commit,
            [
                Some("pending"),
                Some("success"),
                Some("failure"),
                Some("error"),
                None
            ]
        );
        assert_eq!(
            all.iter().map(|s| s.creates()).collect::<Vec<_>>(),
            [true, true, true, true, false]
        );
    }

    #[test]
    fn gitlab_steps_create_update_or_leave_alone() {
        use GitLabStep::*;
        use State::*;
        for (current, wanted, expected) in [
            (None, InProgress, Create("running")),
            (None, Failure, Create("failed")),
            (None, Inactive, Nothing),
            (Some("created"), InProgress, Update("running")),
            (Some("running"), InProgress, Nothing),
            (Some("running"), Success, Update("success")),
            (Some("running"), Failure, Update("failed")),
            (Some("running"), Inactive, Update("canceled")),
            // Deployed again after a rollback: a new deployment, as GitLab does.
            (Some("failed"), InProgress, Create("running")),
            (Some("success"), InProgress, Create("running")),
            (Some("failed"), Success, Update("success")),
        ] {
            assert_eq!(
                gitlab_step(current, wanted),
                expected,
                "{current:?} → {wanted:?}"
            );
        }
    }

    #[test]
    fn gitlab_statuses_are_written_only_when_they_change() {
        use State::*;
        for (current, wanted, expected) in [
            (None, InProgress, Some("running")),
            (Some("running"), InProgress, None),
            (Some("running"), Success, Some("success")),
            (Some("success"), Success, None),
            (Some("running"), Failure, Some("failed")),
            (Some("failed"), Failure, None),
            (Some("running"), Error, Some("failed")),
            (Some("failed"), InProgress, Some("running")),
            (None, Success, Some("success")),
            // GitLab has no inactive: a replaced success stays, a superseded run stops.
            (Some("success"), Inactive, None),
            (Some("running"), Inactive, Some("canceled")),
            (Some("created"), Inactive, Some("canceled")),
            (Some("canceled"), Inactive, None),
            (None, Inactive, None),
        ] {
            assert_eq!(
                gitlab_deployment(current, wanted),
                expected,
                "{current:?} → {wanted:?}"
            );
        }
    }
}
