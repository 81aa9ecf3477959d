//! `vigie promote` and `vigie rollback`: which SHA a person may send where, what the
//! screen shows before they confirm, and what is written (the Release's revision with
//! an approval, a break-glass or a rollback request). Pure: both modes gather the
//! statuses and the commits, then call these rules; the lifecycle applies the result.

pub mod client;
mod error;
pub mod kubernetes;

pub use error::{PromoteError, Refusal};

pub use crate::git::Commit;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::{
    api::{
        Sha,
        environment::{ApprovalPolicy, EnvironmentSpec},
        release::{ApprovalGrant, BreakGlass, HistoryEvent, ReleaseStatus, RollbackRequest},
    },
    lifecycle::{Gate, Upstream, Windows, rollback_target},
};

/// What a person asks (`vigie promote`, `vigie rollback`).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Ask {
    /// The CodeLocation.
    pub location: String,
    /// The target Environment.
    pub environment: String,
    /// The SHA (promote: `--sha`; rollback: `--to`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha: Option<Sha>,
    /// Why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Promote outside the windows, with this reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub break_glass: Option<String>,
}

/// What a decision recorded.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Done {
    /// The Release (`namespace/name`).
    pub release: String,
    /// The SHA that goes.
    pub sha: Sha,
    /// Who, as the socket saw them.
    pub by: String,
    /// When.
    pub at: Timestamp,
}

/// What a person does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `vigie promote`.
    Promote,
    /// `vigie rollback`.
    Rollback,
}

impl Kind {
    /// The control socket's path for it.
    #[must_use]
    pub const fn path(self) -> &'static str {
        match self {
            Self::Promote => "/v1/promote",
            Self::Rollback => "/v1/rollback",
        }
    }

    /// The word a person types to confirm it.
    #[must_use]
    pub const fn confirm(self) -> &'static str {
        match self {
            Self::Promote => CONFIRM_PROMOTE,
            Self::Rollback => CONFIRM_ROLLBACK,
        }
    }
}

/// The word a person types to confirm a promotion.
pub const CONFIRM_PROMOTE: &str = "DEPLOY";
/// The word a person types to confirm a rollback.
pub const CONFIRM_ROLLBACK: &str = "ROLLBACK";

/// One environment's side of the screen.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Side {
    /// The Environment.
    pub environment: String,
    /// The Release's phase there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    /// What runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployed: Option<Sha>,
    /// The last validated SHA.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validated: Option<Sha>,
}

impl Side {
    /// A side from a Release's status (`None`: no Release there yet).
    #[must_use]
    pub fn of(environment: &str, status: Option<&ReleaseStatus>) -> Self {
        Self {
            environment: environment.to_owned(),
            phase: status.map(|s| s.phase.as_str().to_owned()),
            deployed: status.and_then(|s| s.deployed_sha.clone()),
            validated: status.and_then(|s| s.validated_sha.clone()),
        }
    }
}

/// What a person is about to do, shown before they confirm.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Plan {
    /// The code location.
    pub location: String,
    /// The environment the SHA comes from (promotion) — for a rollback, the same
    /// environment as `target`.
    pub upstream: Side,
    /// The environment the SHA goes to.
    pub target: Side,
    /// The SHA that will run.
    pub sha: Sha,
    /// The SHA replaced (what runs, or is in flight, now).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<Sha>,
    /// The commits between `from` and `sha`, newest first (bounded), when known.
    #[serde(default)]
    pub commits: Vec<Commit>,
    /// Whether the commits were cut at the bound.
    #[serde(default)]
    pub more_commits: bool,
    /// Why the commits could not be listed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commits_error: Option<String>,
    /// When the target's deploy windows are closed: when they open (a break-glass
    /// reason deploys anyway). Rollbacks ignore the windows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window_closed: Option<String>,
}

/// Chooses the SHA to promote from the upstream environment to `target`, and refuses
/// what must not go: no `promotion.from`, nothing validated upstream, a SHA not
/// validated upstream, suspect there, or quarantined or suspect in the target.
///
/// # Errors
/// Why the promotion is refused.
pub fn plan_promotion(
    location: &str,
    target_name: &str,
    target_env: &EnvironmentSpec,
    upstream: Option<&ReleaseStatus>,
    target: Option<&ReleaseStatus>,
    asked: Option<&Sha>,
) -> Result<Plan, Refusal> {
    let from_env = target_env
        .promotion
        .as_ref()
        .map(|p| p.from.clone())
        .ok_or_else(|| Refusal::NoPromotionSource {
            target: target_name.to_owned(),
        })?;
    let upstream_status = upstream.ok_or_else(|| Refusal::NoUpstreamRelease {
        location: location.to_owned(),
        from: from_env.clone(),
    })?;
    let validated_upstream = Upstream::of(upstream_status);
    let sha = match asked {
        Some(sha) => sha.clone(),
        None => upstream_status
            .validated_sha
            .clone()
            .ok_or_else(|| Refusal::NothingValidated {
                location: location.to_owned(),
                from: from_env.clone(),
            })?,
    };
    if !validated_upstream.validated.contains(&sha) {
        return Err(Refusal::NotValidatedUpstream {
            sha,
            from: from_env,
            target: target_name.to_owned(),
        });
    }
    if let Some(s) = upstream_status.suspect.iter().find(|s| s.sha == sha) {
        return Err(Refusal::SuspectUpstream {
            sha,
            from: from_env,
            reason: s.reason.clone(),
        });
    }
    if let Some(t) = target {
        if let Some(q) = t.quarantine.iter().find(|q| q.sha == sha) {
            return Err(Refusal::Quarantined {
                sha,
                target: target_name.to_owned(),
                reason: q.reason.clone(),
            });
        }
        if let Some(s) = t.suspect.iter().find(|s| s.sha == sha) {
            return Err(Refusal::SuspectInTarget {
                sha,
                target: target_name.to_owned(),
                reason: s.reason.clone(),
            });
        }
        if t.deployed_sha.as_ref() == Some(&sha) && t.validated_sha.as_ref() == Some(&sha) {
            return Err(Refusal::AlreadyValidated {
                sha,
                target: target_name.to_owned(),
            });
        }
    }
    Ok(Plan {
        location: location.to_owned(),
        upstream: Side::of(&from_env, Some(upstream_status)),
        target: Side::of(target_name, target),
        from: target.and_then(running),
        sha,
        commits: Vec::new(),
        more_commits: false,
        commits_error: None,
        window_closed: None,
    })
}

/// The plan of `kind` from the statuses found (no commits yet): the rules above, and
/// for a promotion whether the target's windows are closed now.
///
/// # Errors
/// Why it is refused.
pub fn check(
    kind: Kind,
    ask: &Ask,
    env: &EnvironmentSpec,
    upstream: Option<&ReleaseStatus>,
    target: Option<&ReleaseStatus>,
) -> Result<Plan, Refusal> {
    match kind {
        Kind::Promote => {
            let mut plan = plan_promotion(
                &ask.location,
                &ask.environment,
                env,
                upstream,
                target,
                ask.sha.as_ref(),
            )?;
            let windows = env.windows.as_ref().and_then(|w| Windows::new(w).ok());
            plan.window_closed = window_closed(windows.as_ref(), Timestamp::now());
            Ok(plan)
        }
        Kind::Rollback => plan_rollback(
            &ask.location,
            &ask.environment,
            &target.cloned().unwrap_or_default(),
            ask.sha.as_ref(),
        ),
    }
}

/// How many commits a plan lists at most.
pub const COMMITS_SHOWN: usize = 30;

/// The quarantine clearances a Release keeps on record (the newest).
pub const CLEARANCES_KEPT: usize = 16;

/// Lists the commits of a plan (brought in by a promotion, undone by a rollback) from
/// the code repository at `url`, mirrored under `cache`; blocking git2 runs off the runtime.
///
/// # Errors
/// The repository cannot be fetched, or a commit is not in it.
pub async fn fill_commits(
    plan: &mut Plan,
    kind: Kind,
    cache: std::path::PathBuf,
    url: String,
    creds: crate::gitops::repo::Credentials,
) -> Result<(), PromoteError> {
    let (tip, hide) = match kind {
        Kind::Promote => (plan.sha.clone(), plan.from.clone()),
        Kind::Rollback => match plan.from.clone() {
            Some(from) => (from, Some(plan.sha.clone())),
            None => return Ok(()),
        },
    };
    let (commits, more) = tokio::task::spawn_blocking(move || {
        crate::gitops::repo::commits_between(
            &cache,
            &url,
            &creds,
            &tip,
            hide.as_ref(),
            COMMITS_SHOWN,
        )
    })
    .await
    .map_err(|e| crate::git::GitError::Local(format!("listing the commits stopped: {e}")))??;
    plan.commits = commits;
    plan.more_commits = more;
    Ok(())
}

/// What runs (or is in flight) in a Release.
fn running(status: &ReleaseStatus) -> Option<Sha> {
    crate::lifecycle::decide::replaced(status, status.deployed_sha.as_ref())
}

/// Chooses the SHA a person rolls back to in `environment`: `asked`, else the validated
/// SHA when what runs is not it, else the validated SHA before it in the history. It must
/// have been validated here and not be quarantined.
///
/// # Errors
/// Why the rollback is refused.
pub fn plan_rollback(
    location: &str,
    environment: &str,
    status: &ReleaseStatus,
    asked: Option<&Sha>,
) -> Result<Plan, Refusal> {
    let from = running(status);
    let to = match asked {
        Some(sha) => sha.clone(),
        None => previous_validated(status, from.as_ref()).ok_or_else(|| {
            Refusal::NothingToRollBackTo {
                location: location.to_owned(),
                environment: environment.to_owned(),
            }
        })?,
    };
    rollback_target(status, &to)?;
    if from.as_ref() == Some(&to) {
        return Err(Refusal::AlreadyRuns {
            sha: to,
            environment: environment.to_owned(),
        });
    }
    let side = Side::of(environment, Some(status));
    Ok(Plan {
        location: location.to_owned(),
        upstream: side.clone(),
        target: side,
        sha: to,
        from,
        commits: Vec::new(),
        more_commits: false,
        commits_error: None,
        window_closed: None,
    })
}

/// The SHA a rollback without `--to` goes to.
fn previous_validated(status: &ReleaseStatus, running: Option<&Sha>) -> Option<Sha> {
    if let Some(v) = &status.validated_sha
        && Some(v) != running
    {
        return Some(v.clone());
    }
    status
        .history
        .iter()
        .rev()
        .filter(|h| h.event == HistoryEvent::Validated)
        .map(|h| &h.sha)
        .find(|sha| Some(*sha) != running && !status.quarantine.iter().any(|q| &q.sha == *sha))
        .cloned()
}

/// When the windows are closed at `now`: a sentence saying until when.
#[must_use]
pub fn window_closed(windows: Option<&Windows>, now: Timestamp) -> Option<String> {
    match windows?.gate(now) {
        Gate::Open => None,
        Gate::OpensAt(t) => Some(format!("the deploy windows are closed until {t}")),
        Gate::Never => Some("the deploy windows never open".to_owned()),
    }
}

/// What `vigie promote` writes on the target Release.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Promotion {
    /// The new revision.
    pub revision: Sha,
    /// The approval, when the environment asks for one (recorded anyway: who and why).
    pub approval: ApprovalGrant,
    /// The break-glass, when asked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub break_glass: Option<BreakGlass>,
}

/// The writes of a promotion by `by` at `at`.
#[must_use]
pub fn promotion(
    plan: &Plan,
    by: &str,
    reason: Option<String>,
    break_glass: Option<String>,
    at: Timestamp,
) -> Promotion {
    Promotion {
        revision: plan.sha.clone(),
        approval: ApprovalGrant {
            sha: plan.sha.clone(),
            by: by.to_owned(),
            reason,
            at: Some(at),
        },
        break_glass: break_glass.map(|reason| BreakGlass {
            sha: plan.sha.clone(),
            by: by.to_owned(),
            reason,
        }),
    }
}

/// The rollback request `vigie rollback` writes.
#[must_use]
pub fn rollback(plan: &Plan, by: &str, reason: Option<String>, at: Timestamp) -> RollbackRequest {
    RollbackRequest {
        to: plan.sha.clone(),
        by: by.to_owned(),
        reason,
        at,
    }
}

/// Whether the target environment asks for an approval.
#[must_use]
pub fn needs_approval(env: &EnvironmentSpec) -> bool {
    env.promotion
        .as_ref()
        .is_some_and(|p| p.approval == ApprovalPolicy::Manual)
}

/// The screen shown before a person confirms: the two sides, the SHA, the commits.
#[must_use]
pub fn render(plan: &Plan, rollback: bool) -> String {
    use std::fmt::Write;
    let short = |s: &Option<Sha>| s.as_ref().map_or("-", |s| s.short()).to_owned();
    let mut out = String::new();
    if rollback {
        let _ = writeln!(
            out,
            "Roll back {} in {}: {} → {}",
            plan.location,
            plan.target.environment,
            short(&plan.from),
            plan.sha.short()
        );
    } else {
        let _ = writeln!(
            out,
            "Promote {} from {} to {}\n",
            plan.location, plan.upstream.environment, plan.target.environment
        );
        let _ = writeln!(
            out,
            "  {:<12} {:<24} {:<24}",
            "", plan.upstream.environment, plan.target.environment
        );
        for (label, a, b) in [
            ("deployed", &plan.upstream.deployed, &plan.target.deployed),
            (
                "validated",
                &plan.upstream.validated,
                &plan.target.validated,
            ),
        ] {
            let _ = writeln!(out, "  {label:<12} {:<24} {:<24}", short(a), short(b));
        }
        let _ = writeln!(
            out,
            "  {:<12} {:<24} {:<24}",
            "phase",
            plan.upstream.phase.as_deref().unwrap_or("-"),
            plan.target.phase.as_deref().unwrap_or("-")
        );
        let _ = writeln!(
            out,
            "\n{} → {} in {}",
            short(&plan.from),
            plan.sha.short(),
            plan.target.environment
        );
    }
    if let Some(e) = &plan.commits_error {
        let _ = writeln!(out, "(commits not listed: {e})");
    } else if !plan.commits.is_empty() {
        let what = if rollback { "undone" } else { "brought in" };
        let _ = writeln!(out, "\nCommits {what}:");
        for c in &plan.commits {
            let _ = writeln!(out, "  {}  {}  ({})", c.sha.short(), c.subject, c.author);
        }
        if plan.more_commits {
            let _ = writeln!(out, "  …");
        }
    }
    if let Some(w) = &plan.window_closed {
        let note = if rollback {
            "a rollback goes anyway"
        } else {
            "the deploy waits unless --break-glass REASON"
        };
        let _ = writeln!(out, "\nNote: {w}; {note}.");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{
        environment::{Promotion as PromotionSpec, Strategy},
        release::{HistoryEntry, Phase, QuarantineCause, QuarantineEntry, SuspectEntry},
    };

    fn sha(c: char) -> Sha {
        c.to_string().repeat(40).parse().unwrap()
    }

    fn at() -> Timestamp {
        "2026-11-24T10:00:00Z".parse().unwrap()
    }

    fn prod() -> EnvironmentSpec {
        let mut env: EnvironmentSpec = serde_json::from_value(serde_json::json!({
            "backend": {"docker": {}},
        }))
        .unwrap();
        env.strategy = Strategy::ValidatedOnly;
        env.promotion = Some(PromotionSpec {
            from: "preprod".into(),
            approval: ApprovalPolicy::Manual,
        });
        env
    }

    fn validated(shas: &[char]) -> ReleaseStatus {
        ReleaseStatus {
            phase: Phase::Validated,
            validated_sha: shas.last().map(|c| sha(*c)),
            deployed_sha: shas.last().map(|c| sha(*c)),
            history: shas
                .iter()
                .map(|c| HistoryEntry {
                    at: at(),
                    event: HistoryEvent::Validated,
                    sha: sha(*c),
                    previous: None,
                    by: None,
                    reason: None,
                    url: None,
                    output: None,
                })
                .collect(),
            ..ReleaseStatus::default()
        }
    }

    #[test]
    fn the_upstream_validated_sha_is_promoted_by_default() {
        let plan = plan_promotion(
            "app",
            "prod",
            &prod(),
            Some(&validated(&['a', 'b'])),
            Some(&validated(&['a'])),
            None,
        )
        .unwrap();
        assert_eq!(plan.sha, sha('b'));
        assert_eq!(plan.from, Some(sha('a')));
        assert_eq!(plan.upstream.environment, "preprod");
        let screen = render(&plan, false);
        assert!(
            screen.contains("Promote app from preprod to prod"),
            "{screen}"
        );
        assert!(screen.contains("aaaaaaa → bbbbbbb in prod"), "{screen}");
    }

    #[test]
    fn what_must_not_go_is_refused_with_the_reason() {
        let up = validated(&['a', 'b']);
        let refuse = |asked: char, target: &ReleaseStatus, up: &ReleaseStatus| {
            plan_promotion(
                "app",
                "prod",
                &prod(),
                Some(up),
                Some(target),
                Some(&sha(asked)),
            )
            .unwrap_err()
        };
        assert!(
            refuse('c', &validated(&[]), &up)
                .to_string()
                .contains("not validated in preprod")
        );
        let mut suspect = up.clone();
        suspect.suspect.push(SuspectEntry {
            sha: sha('b'),
            at: at(),
            reason: "a later CI run failed".into(),
        });
        assert!(
            refuse('b', &validated(&[]), &suspect)
                .to_string()
                .contains("suspect in preprod")
        );
        let mut quarantined = validated(&['a']);
        quarantined.quarantine.push(QuarantineEntry {
            sha: sha('b'),
            at: at(),
            reason: "CI failed".into(),
            cause: QuarantineCause::CiFailed,
            ci_passed_later: false,
        });
        assert!(
            refuse('b', &quarantined, &up)
                .to_string()
                .contains("quarantined in prod")
        );
        assert!(
            refuse('b', &validated(&['b']), &up)
                .to_string()
                .contains("already runs")
        );
        assert!(matches!(
            refuse('b', &validated(&['b']), &up),
            Refusal::AlreadyValidated { .. }
        ));
        assert!(matches!(
            refuse('b', &quarantined, &up),
            Refusal::Quarantined { .. }
        ));
        // A SHA validated upstream, then rolled back there, is no longer validated there.
        let mut rolled = up.clone();
        rolled.quarantine.push(QuarantineEntry {
            sha: sha('a'),
            at: at(),
            reason: "rolled back by alice".into(),
            cause: QuarantineCause::Manual,
            ci_passed_later: false,
        });
        assert!(
            refuse('a', &validated(&[]), &rolled)
                .to_string()
                .contains("not validated in preprod")
        );
        let mut direct = prod();
        direct.promotion = None;
        assert!(
            plan_promotion("app", "prod", &direct, Some(&up), None, None)
                .unwrap_err()
                .to_string()
                .contains("no promotion.from")
        );
        assert!(
            plan_promotion("app", "prod", &prod(), None, None, None)
                .unwrap_err()
                .to_string()
                .contains("no Release in preprod")
        );
    }

    #[test]
    fn a_rollback_goes_to_the_previous_validated_sha_by_default() {
        let status = validated(&['a', 'b', 'c']);
        let plan = plan_rollback("app", "prod", &status, None).unwrap();
        assert_eq!(
            (plan.from.clone(), plan.sha.clone()),
            (Some(sha('c')), sha('b'))
        );
        assert!(render(&plan, true).contains("Roll back app in prod: ccccccc → bbbbbbb"));
        // Asked explicitly: any SHA validated here.
        assert_eq!(
            plan_rollback("app", "prod", &status, Some(&sha('a')))
                .unwrap()
                .sha,
            sha('a')
        );
        assert_eq!(
            plan_rollback("app", "prod", &status, Some(&sha('d'))).unwrap_err(),
            Refusal::NotARollbackTarget(crate::lifecycle::NotARollbackTarget::NeverValidated(sha(
                'd'
            )))
        );
        assert!(
            plan_rollback("app", "prod", &status, Some(&sha('d')))
                .unwrap_err()
                .to_string()
                .contains("never validated here")
        );
        assert!(
            plan_rollback("app", "prod", &status, Some(&sha('c')))
                .unwrap_err()
                .to_string()
                .contains("already")
        );
        assert!(
            plan_rollback("app", "prod", &validated(&['a']), None)
                .unwrap_err()
                .to_string()
                .contains("no earlier validated SHA")
        );
    }

    #[test]
    fn the_writes_name_the_person_and_the_sha() {
        let plan =
            plan_promotion("app", "prod", &prod(), Some(&validated(&['b'])), None, None).unwrap();
        let p = promotion(
            &plan,
            "alice",
            Some("release 1.2".into()),
            Some("hotfix".into()),
            at(),
        );
        assert_eq!(p.revision, sha('b'));
        assert_eq!(p.approval.by, "alice");
        assert_eq!(p.approval.at, Some(at()));
        assert_eq!(p.break_glass.unwrap().reason, "hotfix");
    }
}
