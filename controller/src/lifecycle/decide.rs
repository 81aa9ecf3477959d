//! The release lifecycle as one pure function: from the spec, the recorded status and
//! what was observed (workload, CI verdicts, upstream validations, hooks, the clock)
//! to the new status, the workload's target, the hooks to run and the notifications.
//!
//! No I/O happens here: this module imports neither kube's client nor bollard, and
//! the clock is an input. Deciding again on the same inputs and the returned status
//! yields the same status and no notification: the decision is a fixpoint.

use std::{
    collections::{BTreeMap, BTreeSet},
    time::Duration,
};

use jiff::Timestamp;

use super::{
    conditions,
    windows::{Gate, Windows},
};
use crate::api::{
    Sha,
    environment::{
        ApprovalPolicy, CiErrorPolicy, EnvironmentSpec, EventKind, GreenRerunPolicy, Hook,
        Strategy, TimeoutPolicy,
    },
    release::{
        CiState, CiSummary, HealthState, HealthSummary, HistoryEntry, HistoryEvent, MonitorState,
        Phase, QuarantineCause as Cause, QuarantineEntry, ReleaseSpec, ReleaseStatus, Rollout,
        ShortShas, SuspectEntry,
    },
};

/// How many transitions one decision may chain before it stops (a safety net: the
/// lifecycle has no cycle that needs more than a handful).
const MAX_STEPS: usize = 16;

/// The desired commit, as resolved by the edge from `spec.revision`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Desired {
    /// `spec.revision` is empty.
    None,
    /// The revision resolved to this SHA.
    Sha(Sha),
    /// The revision (a tag or branch) could not be resolved.
    Unresolved {
        /// The revision as written.
        revision: String,
        /// Why it could not be resolved.
        reason: String,
    },
}

impl Desired {
    fn sha(&self) -> Option<&Sha> {
        match self {
            Self::Sha(sha) => Some(sha),
            Self::None | Self::Unresolved { .. } => None,
        }
    }
}

/// Whether the backend could be asked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BackendState {
    /// The backend answered.
    Reachable,
    /// The backend did not answer; nothing observed about the workload can be trusted.
    Unreachable {
        /// Why.
        reason: String,
    },
}

/// What the backend reports about the workload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkloadObservation {
    /// Whether the backend answered.
    pub backend: BackendState,
    /// The SHA the workload runs, if any.
    pub sha: Option<Sha>,
    /// Its health (HTTP check, container state, rollout state), judged after the retries.
    pub health: HealthState,
    /// Why it is not healthy.
    pub reason: Option<String>,
}

/// A CI verdict for one SHA.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CiVerdict {
    /// The verdict.
    pub state: CiState,
    /// Link to the run.
    pub url: Option<String>,
    /// Failing check names.
    pub failed_checks: Vec<String>,
    /// A few words from CI.
    pub description: Option<String>,
}

/// What the upstream environment (`promotion.from`) holds for this code location.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Upstream {
    /// SHAs validated upstream.
    pub validated: BTreeSet<Sha>,
    /// SHAs whose upstream validation was revoked.
    pub suspect: BTreeSet<Sha>,
}

impl Upstream {
    /// What an upstream Release's status says: the SHAs it validated (and did not
    /// quarantine since) and the SHAs it marked suspect.
    #[must_use]
    pub fn of(status: &ReleaseStatus) -> Self {
        let mut validated: BTreeSet<Sha> = status
            .history
            .iter()
            .filter(|h| {
                h.event == crate::api::release::HistoryEvent::Validated
                    && !status.quarantine.iter().any(|q| q.sha == h.sha)
            })
            .map(|h| h.sha.clone())
            .collect();
        validated.extend(status.validated_sha.clone());
        let suspect = status.suspect.iter().map(|s| s.sha.clone()).collect();
        Self { validated, suspect }
    }
}

/// Outcome of one hook run for the SHA in flight.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HookOutcome {
    /// Started, not finished.
    Running,
    /// Exited 0; the output (a backup) is here.
    Succeeded {
        /// Where the output was written.
        output: Option<String>,
    },
    /// Exited non-zero, timed out or could not start.
    Failed {
        /// Why.
        reason: String,
    },
}

/// Everything observed outside the status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observations {
    /// The clock.
    pub now: Timestamp,
    /// The desired commit.
    pub desired: Desired,
    /// The workload.
    pub workload: WorkloadObservation,
    /// CI verdicts known, by SHA.
    pub ci: BTreeMap<Sha, CiVerdict>,
    /// The upstream environment's validations, when the environment promotes from one.
    pub upstream: Option<Upstream>,
    /// Outcomes of the pre-deploy hooks for the SHA in flight, by hook name.
    pub hooks: BTreeMap<String, HookOutcome>,
    /// Why the SHA in flight could not be deployed at the last attempt because its
    /// artifact is not available yet (an image not pushed yet). Waiting for it does not
    /// count against the health timeout, only against the verification timeout.
    pub artifact_pending: Option<String>,
}

/// Everything `decide` reads.
#[derive(Clone, Copy, Debug)]
pub struct Input<'a> {
    /// The Release's spec.
    pub spec: &'a ReleaseSpec,
    /// `metadata.generation` of the Release.
    pub generation: Option<i64>,
    /// The Environment's spec.
    pub environment: &'a EnvironmentSpec,
    /// The Environment's deploy windows, resolved.
    pub windows: Option<&'a Windows>,
    /// The recorded status.
    pub status: &'a ReleaseStatus,
    /// What was observed.
    pub observed: &'a Observations,
}

/// What the workload should run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkloadTarget {
    /// The SHA to run.
    pub sha: Sha,
    /// A SHA whose workload must be kept ready (stopped) for a fast rollback.
    pub keep: Option<Sha>,
}

/// A pre-deploy hook that must run (once: the edge names its run after the hook and SHA).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HookRun {
    /// Hook name.
    pub name: String,
    /// The SHA about to be deployed.
    pub sha: Sha,
    /// The SHA running now (the rollback point).
    pub previous: Option<Sha>,
    /// When the rollout started: a new attempt at the same SHA (after a clearance) is
    /// a new run, with its own backup.
    pub attempt: Timestamp,
    /// A post-deploy hook (a smoke test), run against the new SHA once it is up.
    pub after_deploy: bool,
}

/// The hook that must run next for the rollout recorded in `status`, if any (one at a
/// time, in order): the pre-deploy hooks before the workload moves, then, once the new
/// SHA was seen up and healthy, the post-deploy hooks.
#[must_use]
pub fn pending_hooks(env: &EnvironmentSpec, status: &ReleaseStatus) -> Vec<HookRun> {
    let Some(rollout) = status
        .rollout
        .as_ref()
        .filter(|_| status.phase == Phase::Deploying)
    else {
        return Vec::new();
    };
    let run = |h: &Hook, after_deploy: bool| HookRun {
        name: h.name.clone(),
        sha: rollout.sha.clone(),
        previous: rollout.rollback_point.clone(),
        attempt: rollout.started_at,
        after_deploy,
    };
    let pending = |hooks: &[Hook]| {
        hooks
            .iter()
            .find(|h| !rollout.hooks_done.contains(&h.name))
            .cloned()
    };
    if let Some(h) = pending(&env.hooks.pre_deploy) {
        return vec![run(&h, false)];
    }
    rollout
        .up_at
        .and_then(|_| pending(&env.hooks.post_deploy))
        .map(|h| vec![run(&h, true)])
        .unwrap_or_default()
}

/// A notification to send, from a transition (sent once per transition).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notification {
    /// What happened.
    pub event: EventKind,
    /// The SHA concerned.
    pub sha: Sha,
    /// The other SHA (rollback point, rollback target).
    pub previous: Option<Sha>,
    /// Why.
    pub reason: Option<String>,
    /// Link to the CI run or logs.
    pub url: Option<String>,
    /// Who, for a person's act.
    pub by: Option<String>,
}

/// The result of a decision.
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    /// The status to record before anything is applied (`reconcile::record` writes it;
    /// `reconcile::act` acts only on what was recorded).
    pub status: ReleaseStatus,
    /// What the workload should run; `None` leaves it as it is.
    pub workload: Option<WorkloadTarget>,
    /// Pre-deploy hooks that must have run before the workload moves.
    pub hooks: Vec<HookRun>,
    /// Notifications for the transitions made.
    pub notifications: Vec<Notification>,
    /// When to decide again even if nothing changes (a deadline, a window opening).
    pub requeue_after: Option<Duration>,
}

/// Why a desired SHA cannot start now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Block {
    /// It was rolled back here.
    Quarantined {
        /// Since when.
        since: Timestamp,
        /// Why it was rolled back.
        reason: String,
    },
    /// The environment has `promotion.from` but no view of it.
    NoUpstream,
    /// Not validated in the upstream environment.
    NotValidatedUpstream,
    /// Validated upstream, but suspect there.
    SuspectUpstream,
    /// Outside the deploy windows.
    OutsideWindow {
        /// When the windows open.
        until: Timestamp,
    },
    /// The windows never open.
    NoWindow,
    /// The last attempt at this SHA failed and needs a person.
    Failed,
}

/// Decides the next status, target, hooks and notifications. Pure.
#[must_use]
pub fn decide(input: &Input<'_>) -> Decision {
    let mut d = Decider {
        input,
        status: input.status.clone(),
        notifications: Vec::new(),
        block: None,
    };
    d.bookkeeping();
    let reachable = input.observed.workload.backend == BackendState::Reachable;
    if reachable {
        for _ in 0..MAX_STEPS {
            if !d.step() {
                break;
            }
        }
    }
    d.aftermath();
    d.finish()
}

struct Decider<'a> {
    input: &'a Input<'a>,
    status: ReleaseStatus,
    notifications: Vec<Notification>,
    block: Option<Block>,
}

impl Decider<'_> {
    fn obs(&self) -> &Observations {
        self.input.observed
    }

    fn now(&self) -> Timestamp {
        self.input.observed.now
    }

    fn env(&self) -> &EnvironmentSpec {
        self.input.environment
    }

    fn verdict(&self, sha: &Sha) -> Option<&CiVerdict> {
        self.obs().ci.get(sha)
    }

    fn notify(
        &mut self,
        event: EventKind,
        sha: &Sha,
        previous: Option<&Sha>,
        reason: Option<String>,
        url: Option<String>,
        by: Option<String>,
    ) {
        self.notifications.push(Notification {
            event,
            sha: sha.clone(),
            previous: previous.cloned(),
            reason,
            url,
            by,
        });
    }

    /// A history entry at `now` with only the event and SHA filled in.
    fn entry(&self, event: HistoryEvent, sha: &Sha) -> HistoryEntry {
        HistoryEntry {
            at: self.now(),
            event,
            sha: sha.clone(),
            previous: None,
            by: None,
            reason: None,
            url: None,
            output: None,
        }
    }

    /// Appends to the history, dropping the oldest entries past the environment's limit.
    fn record(&mut self, entry: HistoryEntry) {
        self.status.history.push(entry);
        let limit = usize::try_from(self.env().history_limit.max(1)).unwrap_or(usize::MAX);
        if self.status.history.len() > limit {
            let excess = self.status.history.len() - limit;
            self.status.history.drain(..excess);
        }
    }

    fn set_phase(&mut self, phase: Phase) {
        if self.status.phase != phase {
            self.status.phase = phase;
            self.status.phase_since = Some(self.now());
        }
    }

    fn is_quarantined(&self, sha: &Sha) -> bool {
        self.status.quarantine.iter().any(|q| &q.sha == sha)
    }

    fn is_suspect(&self, sha: &Sha) -> bool {
        self.status.suspect.iter().any(|s| &s.sha == sha)
    }

    /// Records what is observed and what people asked, before any transition.
    fn bookkeeping(&mut self) {
        let obs = self.input.observed;
        self.status.observed_generation = self.input.generation.or(self.status.observed_generation);
        self.status.desired_sha = obs.desired.sha().cloned();
        if obs.workload.backend == BackendState::Reachable {
            self.status.deployed_sha.clone_from(&obs.workload.sha);
            self.status.health = Some(HealthSummary {
                state: obs.workload.health,
                reason: obs.workload.reason.clone(),
            });
        }
        self.clear_quarantines();
        self.record_ci_recoveries();
        self.manual_rollback();
        self.record_approval();
    }

    /// Records a new approval once, when it is given (it lets its SHA in later, when
    /// the gates allow): in the history, in `status.approved`, and to the sinks. The
    /// same person approving the same SHA again (a break-glass after an approval) is
    /// the approval already on record. An approval of a SHA that may not run here (quarantined, not validated upstream) is
    /// not recorded: the condition says why it is refused.
    fn record_approval(&mut self) {
        let Some(approval) = self.input.spec.approval.clone() else {
            return;
        };
        let known = self
            .status
            .approved
            .as_ref()
            .is_some_and(|a| a.sha == approval.sha && a.by == approval.by);
        if known || self.admissible(&approval.sha).is_err() {
            return;
        }
        self.status.approved = Some(approval.clone());
        let current = self.status.validated_sha.clone();
        self.record(HistoryEntry {
            previous: current.clone(),
            by: Some(approval.by.clone()),
            reason: approval.reason.clone(),
            ..self.entry(HistoryEvent::Approved, &approval.sha)
        });
        self.notify(
            EventKind::Approved,
            &approval.sha,
            current.as_ref(),
            approval.reason.clone(),
            None,
            Some(approval.by.clone()),
        );
    }

    /// Records what the transitions made observable: revoked validations, green re-runs
    /// of SHAs quarantined during this decision, the periodic health check.
    fn aftermath(&mut self) {
        self.revoke_validations();
        self.record_ci_recoveries();
        self.monitor();
    }

    /// Carries out a person's rollback request once, while the revision names its target:
    /// what runs (or is in flight) is quarantined and the target, validated here before,
    /// becomes the validated SHA and is restored. Windows and approvals do not apply.
    fn manual_rollback(&mut self) {
        let Some(req) = self.input.spec.rollback.as_ref() else {
            return;
        };
        if self
            .status
            .rollback_request_done
            .is_some_and(|t| t >= req.at)
            || self.obs().desired.sha() != Some(&req.to)
        {
            return;
        }
        self.status.rollback_request_done = Some(req.at);
        let asked = format!(
            "rolled back by {}{}",
            req.by,
            req.reason
                .as_ref()
                .map(|r| format!(": {r}"))
                .unwrap_or_default()
        );
        if let Err(why) = rollback_target(&self.status, &req.to) {
            let reason = format!("{asked} refused: {why}");
            self.record(HistoryEntry {
                by: Some(req.by.clone()),
                reason: Some(reason.clone()),
                ..self.entry(HistoryEvent::Failed, &req.to)
            });
            self.notify(
                EventKind::Failed,
                &req.to,
                None,
                Some(reason),
                None,
                Some(req.by.clone()),
            );
            return;
        }
        // Asked for what already runs or is in flight: nothing to roll back from; a
        // rollout of it carries on and is verified as any other.
        let from = replaced(&self.status, self.obs().workload.sha.as_ref());
        let Some(from) = from.filter(|f| f != &req.to) else {
            return;
        };
        self.status.validated_sha = Some(req.to.clone());
        if !self.is_quarantined(&from) {
            self.status.quarantine.push(QuarantineEntry {
                sha: from.clone(),
                at: self.now(),
                reason: asked.clone(),
                cause: Cause::Manual,
                ci_passed_later: false,
            });
        }
        self.status.rollout = Some(Rollout {
            sha: from.clone(),
            rollback_point: Some(req.to.clone()),
            started_at: self.now(),
            deployed_at: Some(self.now()),
            up_at: None,
            healthy_at: None,
            hooks_done: Vec::new(),
            failure: Some(asked.clone()),
        });
        self.set_phase(Phase::RollingBack);
        self.record(HistoryEntry {
            previous: Some(req.to.clone()),
            by: Some(req.by.clone()),
            reason: Some(asked),
            ..self.entry(HistoryEvent::RolledBack, &from)
        });
    }

    /// The periodic health check: once per `monitoring.interval`, what runs in a settled
    /// Release is counted healthy or not; `failureThreshold` failures in a row mark it
    /// Degraded (one `HealthDown`), `recoveryThreshold` good checks in a row mark it
    /// Healthy again (one `HealthRecovered`). Nothing repeats while the state holds.
    fn monitor(&mut self) {
        let w = self.obs().workload.clone();
        let settled = !matches!(
            self.status.phase,
            Phase::Deploying | Phase::Verifying | Phase::RollingBack
        );
        let Some(running) = w.sha.clone().filter(|_| settled) else {
            return;
        };
        if w.backend != BackendState::Reachable {
            return;
        }
        let m = self.env().monitoring.clone();
        let mut mon = self.status.monitor.clone().unwrap_or_default();
        if mon
            .last_check
            .is_some_and(|t| self.now() < t + m.interval.get())
        {
            return;
        }
        mon.last_check = Some(self.now());
        if mon.sha.as_ref() != Some(&running) {
            mon.sha = Some(running.clone());
            mon.failures = 0;
            mon.successes = 0;
        }
        match w.health {
            HealthState::Healthy => {
                mon.successes = mon.successes.saturating_add(1);
                mon.failures = 0;
            }
            HealthState::Unhealthy | HealthState::Unknown => {
                mon.failures = mon.failures.saturating_add(1);
                mon.successes = 0;
                mon.reason = Some(w.reason.clone().unwrap_or_else(|| match w.health {
                    HealthState::Unknown => "not running".into(),
                    _ => "the health check fails".into(),
                }));
            }
            // Starting: not judged.
            HealthState::Progressing => {}
        }
        let change = match mon.state {
            MonitorState::Healthy if mon.failures >= m.failure_threshold => {
                Some(MonitorState::Degraded)
            }
            MonitorState::Degraded if mon.successes >= m.recovery_threshold => {
                Some(MonitorState::Healthy)
            }
            _ => None,
        };
        if let Some(state) = change {
            mon.state = state;
            mon.since = Some(self.now());
            let (event, history, reason) = if state == MonitorState::Degraded {
                let why = mon.reason.clone().unwrap_or_default();
                (
                    EventKind::HealthDown,
                    HistoryEvent::HealthDown,
                    format!("down: {} check(s) in a row failed: {why}", mon.failures),
                )
            } else {
                mon.reason = None;
                (
                    EventKind::HealthRecovered,
                    HistoryEvent::HealthRecovered,
                    format!("recovered: {} check(s) in a row passed", mon.successes),
                )
            };
            self.record(HistoryEntry {
                reason: Some(reason.clone()),
                ..self.entry(history, &running)
            });
            self.notify(event, &running, None, Some(reason), None, None);
            if state == MonitorState::Degraded
                && m.mark_suspect
                && self.status.validated_sha.as_ref() == Some(&running)
                && !self.is_suspect(&running)
            {
                let reason = format!(
                    "went down while validated: {}",
                    mon.reason.clone().unwrap_or_default()
                );
                self.status.suspect.push(SuspectEntry {
                    sha: running.clone(),
                    at: self.now(),
                    reason: reason.clone(),
                });
                self.record(HistoryEntry {
                    reason: Some(reason.clone()),
                    ..self.entry(HistoryEvent::Suspect, &running)
                });
                self.notify(EventKind::Suspect, &running, None, Some(reason), None, None);
            }
        }
        self.status.monitor = Some(mon);
    }

    /// Lifts quarantines that a person cleared, on the record.
    fn clear_quarantines(&mut self) {
        for clearance in &self.input.spec.clear_quarantine {
            let before = self.status.quarantine.len();
            self.status
                .quarantine
                .retain(|q| !(q.sha == clearance.sha && q.at < clearance.at));
            if self.status.quarantine.len() != before {
                self.record(HistoryEntry {
                    by: Some(clearance.by.clone()),
                    reason: Some(clearance.reason.clone()),
                    ..self.entry(HistoryEvent::QuarantineCleared, &clearance.sha)
                });
                // A failed attempt at the cleared SHA is closed: it may be tried afresh.
                if self.status.phase == Phase::Failed
                    && self
                        .status
                        .rollout
                        .as_ref()
                        .is_some_and(|r| r.sha == clearance.sha)
                {
                    self.status.rollout = None;
                    self.set_phase(Phase::Pending);
                }
            }
        }
    }

    /// A red re-run of CI for the validated SHA makes it suspect (the health monitor
    /// does so too, with `markSuspect`, when it marks it Degraded).
    fn revoke_validations(&mut self) {
        let Some(validated) = self.status.validated_sha.clone() else {
            return;
        };
        if self.is_suspect(&validated) {
            return;
        }
        let Some(v) = self
            .verdict(&validated)
            .filter(|v| v.state == CiState::Failure)
            .cloned()
        else {
            return;
        };
        let reason = format!("a later CI run failed{}", failed_checks_suffix(&v));
        let url = v.url;
        self.status.suspect.push(SuspectEntry {
            sha: validated.clone(),
            at: self.now(),
            reason: reason.clone(),
        });
        self.record(HistoryEntry {
            reason: Some(reason.clone()),
            url: url.clone(),
            ..self.entry(HistoryEvent::Suspect, &validated)
        });
        self.notify(
            EventKind::Suspect,
            &validated,
            None,
            Some(reason),
            url,
            None,
        );
    }

    /// A green re-run for a quarantined SHA is recorded. When CI caused the rollback
    /// (and the policy is `Lift`) the quarantine is lifted: the verdict that rolled it
    /// back is overturned, and the SHA may be deployed and validated again. A rollback
    /// for health stays quarantined until a person clears it.
    fn record_ci_recoveries(&mut self) {
        // In a ValidatedOnly environment the verdict comes from upstream, not from a re-run here.
        if self.env().strategy == Strategy::ValidatedOnly {
            return;
        }
        let lift = self.env().verification.on_green_rerun == GreenRerunPolicy::Lift;
        let green = |sha: &Sha| {
            self.input
                .observed
                .ci
                .get(sha)
                .filter(|v| v.state == CiState::Success)
                .map(|v| v.url.clone())
        };
        let mut lifted = Vec::new();
        let mut kept = Vec::new();
        // A person's rollback is not about CI: a green run changes nothing there.
        for q in self
            .status
            .quarantine
            .iter()
            .filter(|q| q.cause != Cause::Manual)
        {
            let Some(url) = green(&q.sha) else { continue };
            if lift && q.cause.is_ci() {
                lifted.push((q.sha.clone(), q.reason.clone(), url));
            } else if !q.ci_passed_later {
                kept.push((q.sha.clone(), q.cause, url));
            }
        }
        for (sha, was, url) in lifted {
            self.status.quarantine.retain(|q| q.sha != sha);
            self.record(HistoryEntry {
                reason: Some(format!(
                    "a CI re-run passed after the rollback ({was}); the quarantine is lifted"
                )),
                url,
                ..self.entry(HistoryEvent::CiPassed, &sha)
            });
            // A failed attempt at the SHA is closed: it may be tried afresh.
            if self.status.phase == Phase::Failed
                && self.status.rollout.as_ref().is_some_and(|r| r.sha == sha)
                && self.obs().workload.sha.as_ref() != Some(&sha)
            {
                self.status.rollout = None;
                self.set_phase(Phase::Pending);
            }
        }
        for (sha, cause, url) in kept {
            if let Some(q) = self.status.quarantine.iter_mut().find(|q| q.sha == sha) {
                q.ci_passed_later = true;
            }
            let why = if cause.is_ci() {
                "verification.onGreenRerun is Keep"
            } else {
                "it was rolled back for its health, not for CI"
            };
            self.record(HistoryEntry {
                reason: Some(format!(
                    "a CI re-run passed after the rollback; the SHA stays quarantined until cleared ({why})"
                )),
                url,
                ..self.entry(HistoryEvent::CiPassed, &sha)
            });
        }
    }

    /// One transition; `false` when there is none to make.
    fn step(&mut self) -> bool {
        self.block = None;
        match self.status.phase {
            Phase::RollingBack => self.step_rolling_back(),
            Phase::Deploying | Phase::Verifying => self.step_in_flight(),
            Phase::Pending
            | Phase::AwaitingApproval
            | Phase::Validated
            | Phase::RolledBack
            | Phase::Failed => self.step_idle(),
        }
    }

    fn step_rolling_back(&mut self) -> bool {
        let Some(rollout) = self.status.rollout.clone() else {
            // A rollback with nothing recorded cannot be continued; say so.
            self.set_phase(Phase::Failed);
            return true;
        };
        let Some(to) = rollout.rollback_point.clone() else {
            self.set_phase(Phase::Failed);
            return true;
        };
        let w = &self.obs().workload;
        if w.sha.as_ref() == Some(&to) && w.health == HealthState::Healthy {
            self.set_phase(Phase::RolledBack);
            self.status.rollout = None;
            self.notify(
                EventKind::RolledBack,
                &rollout.sha,
                Some(&to),
                rollout.failure.clone(),
                self.status.ci.as_ref().and_then(|c| c.url.clone()),
                None,
            );
            return true;
        }
        // A rollback whose target never gets healthy needs a person: say so once.
        let since = self.status.phase_since.unwrap_or(rollout.started_at);
        let limit = self.env().verification.health_timeout;
        if self.now() >= since + limit.get() {
            let reason = format!(
                "rolling back to {} did not bring it back healthy within {limit}: {}",
                to.short(),
                w.reason
                    .clone()
                    .unwrap_or_else(|| "no healthy observation".into())
            );
            let mut rollout = rollout;
            rollout.failure = Some(reason.clone());
            self.status.rollout = Some(rollout.clone());
            self.set_phase(Phase::Failed);
            self.record(HistoryEntry {
                previous: Some(to.clone()),
                reason: Some(reason.clone()),
                ..self.entry(HistoryEvent::Failed, &rollout.sha)
            });
            self.notify(
                EventKind::Failed,
                &rollout.sha,
                Some(&to),
                Some(reason),
                None,
                None,
            );
            return true;
        }
        false
    }

    fn step_in_flight(&mut self) -> bool {
        let Some(mut rollout) = self.status.rollout.clone() else {
            self.set_phase(Phase::Pending);
            return true;
        };
        // A newer revision supersedes the one in flight, if it may start now. Going back
        // to the validated SHA abandons the rollout: the validated SHA is put back as is.
        if let Some(desired) = self.obs().desired.sha().cloned()
            && desired != rollout.sha
        {
            let back_to_validated = Some(&desired) == self.status.validated_sha.as_ref();
            if back_to_validated || self.gate(&desired).is_ok() {
                self.record(HistoryEntry {
                    reason: Some(format!("superseded by {}", desired.short())),
                    ..self.entry(HistoryEvent::Superseded, &rollout.sha)
                });
                if back_to_validated {
                    self.status.rollout = None;
                    self.set_phase(Phase::Validated);
                } else {
                    self.start_rollout(&desired);
                }
                return true;
            }
        }
        let verdict = self.verdict(&rollout.sha).cloned();
        if let Some(v) = &verdict {
            self.status.ci = Some(summary(&rollout.sha, v));
        }
        if let Some(v) = verdict.as_ref().filter(|v| v.state == CiState::Failure) {
            let reason = format!("CI failed{}", failed_checks_suffix(v));
            self.begin_rollback(&mut rollout, reason, v.url.clone(), Cause::CiFailed);
            return true;
        }
        match self.status.phase {
            Phase::Deploying => self.step_deploying(rollout),
            _ => self.step_verifying(rollout, verdict),
        }
    }

    fn step_deploying(&mut self, mut rollout: Rollout) -> bool {
        // Pre-deploy hooks first, in order; each must succeed before the workload moves.
        for hook in &self.env().hooks.pre_deploy {
            if rollout.hooks_done.contains(&hook.name) {
                continue;
            }
            let outcome =
                self.hook_outcome(&hook.name, rollout.started_at, &self.env().hooks.pre_deploy);
            match outcome {
                Some(HookOutcome::Succeeded { output }) => {
                    rollout.hooks_done.push(hook.name.clone());
                    let output = output.clone();
                    self.record(HistoryEntry {
                        previous: rollout.rollback_point.clone(),
                        reason: Some(format!("pre-deploy hook {} succeeded", hook.name)),
                        output,
                        ..self.entry(HistoryEvent::HookSucceeded, &rollout.sha)
                    });
                    if rollout.hooks_done.len() == self.env().hooks.pre_deploy.len() {
                        rollout.deployed_at = Some(self.now());
                    }
                    self.status.rollout = Some(rollout);
                    return true;
                }
                Some(HookOutcome::Failed { reason }) => {
                    let reason = format!(
                        "pre-deploy hook {} failed: {reason}; the deploy is stopped and what runs is kept",
                        hook.name
                    );
                    rollout.failure = Some(reason.clone());
                    self.status.rollout = Some(rollout.clone());
                    self.set_phase(Phase::Failed);
                    self.record(HistoryEntry {
                        previous: rollout.rollback_point.clone(),
                        reason: Some(reason.clone()),
                        ..self.entry(HistoryEvent::Failed, &rollout.sha)
                    });
                    self.notify(
                        EventKind::HookFailed,
                        &rollout.sha,
                        rollout.rollback_point.as_ref(),
                        Some(reason),
                        None,
                        None,
                    );
                    return true;
                }
                Some(HookOutcome::Running) | None => return false,
            }
        }
        let deadline = rollout.deployed_at.unwrap_or(rollout.started_at)
            + self.env().verification.health_timeout.get();
        let w = self.obs().workload.clone();
        if w.sha.as_ref() == Some(&rollout.sha) {
            match w.health {
                HealthState::Healthy => {
                    if let Some(changed) = self.smoke_tests(&mut rollout) {
                        return changed;
                    }
                    self.start_verifying(rollout);
                    return true;
                }
                HealthState::Unhealthy => {
                    let reason = format!(
                        "unhealthy after deploy: {}",
                        w.reason.unwrap_or_else(|| "health check failed".into())
                    );
                    self.begin_rollback(&mut rollout, reason, None, Cause::Unhealthy);
                    return true;
                }
                HealthState::Progressing | HealthState::Unknown => {}
            }
        }
        if let Some(why) = self.obs().artifact_pending.clone() {
            let limit = self.env().verification.timeout;
            if self.now() >= rollout.started_at + limit.get() {
                let reason = format!("its artifact was not available within {limit}: {why}");
                self.begin_rollback(&mut rollout, reason, None, Cause::ArtifactUnavailable);
                return true;
            }
            return false;
        }
        if self.now() >= deadline {
            let reason = format!(
                "not healthy within {}",
                self.env().verification.health_timeout
            );
            self.begin_rollback(&mut rollout, reason, None, Cause::Unhealthy);
            return true;
        }
        false
    }

    /// What a hook of `hooks`, started from `since`, reported; one that has not ended
    /// past the budget of the list has failed.
    fn hook_outcome(&self, name: &str, since: Timestamp, hooks: &[Hook]) -> Option<HookOutcome> {
        let budget = hook_budget(hooks);
        match self.obs().hooks.get(name).cloned() {
            Some(HookOutcome::Running) | None if self.now() >= since + budget => {
                Some(HookOutcome::Failed {
                    reason: format!("no outcome within {}s", budget.as_secs()),
                })
            }
            other => other,
        }
    }

    /// The new SHA is up, healthy and past its smoke tests: verification starts.
    fn start_verifying(&mut self, mut rollout: Rollout) {
        rollout.healthy_at = Some(self.now());
        self.status.rollout = Some(rollout.clone());
        self.set_phase(Phase::Verifying);
        let next = if self.env().strategy == Strategy::ValidatedOnly {
            "healthy; validated upstream, no CI wait here"
        } else {
            "healthy; waiting for CI"
        };
        self.notify(
            EventKind::Deployed,
            &rollout.sha,
            rollout.rollback_point.as_ref(),
            Some(next.to_owned()),
            None,
            None,
        );
    }

    /// The post-deploy hooks of a SHA seen up and healthy, in order. `None` when they
    /// are all done (verification may start); else whether the status changed.
    fn smoke_tests(&mut self, rollout: &mut Rollout) -> Option<bool> {
        let hook = self
            .env()
            .hooks
            .post_deploy
            .iter()
            .find(|h| !rollout.hooks_done.contains(&h.name))?
            .name
            .clone();
        let Some(up_at) = rollout.up_at else {
            rollout.up_at = Some(self.now());
            self.status.rollout = Some(rollout.clone());
            return Some(true);
        };
        let outcome = self.hook_outcome(&hook, up_at, &self.env().hooks.post_deploy);
        match outcome {
            Some(HookOutcome::Succeeded { output }) => {
                rollout.hooks_done.push(hook.clone());
                self.record(HistoryEntry {
                    previous: rollout.rollback_point.clone(),
                    reason: Some(format!("post-deploy hook {hook} succeeded")),
                    output,
                    ..self.entry(HistoryEvent::HookSucceeded, &rollout.sha)
                });
                self.status.rollout = Some(rollout.clone());
                Some(true)
            }
            Some(HookOutcome::Failed { reason }) => {
                let reason = format!("post-deploy hook {hook} failed: {reason}");
                self.notify(
                    EventKind::HookFailed,
                    &rollout.sha,
                    rollout.rollback_point.as_ref(),
                    Some(reason.clone()),
                    None,
                    None,
                );
                self.begin_rollback(rollout, reason, None, Cause::Unhealthy);
                Some(true)
            }
            Some(HookOutcome::Running) | None => Some(false),
        }
    }

    fn step_verifying(&mut self, mut rollout: Rollout, verdict: Option<CiVerdict>) -> bool {
        let w = self.obs().workload.clone();
        if w.sha.as_ref() != Some(&rollout.sha) {
            // The workload no longer runs the SHA: deploy it again (verification restarts).
            rollout.healthy_at = None;
            self.status.rollout = Some(rollout);
            self.set_phase(Phase::Deploying);
            return true;
        }
        if w.health == HealthState::Unhealthy {
            let reason = format!(
                "unhealthy during verification: {}",
                w.reason.unwrap_or_else(|| "health check failed".into())
            );
            self.begin_rollback(&mut rollout, reason, None, Cause::Unhealthy);
            return true;
        }
        if self.env().strategy == Strategy::ValidatedOnly {
            // The upstream validation is the verdict; it must still hold now.
            let from = self
                .env()
                .promotion
                .as_ref()
                .map_or("upstream", |p| p.from.as_str())
                .to_owned();
            let still = self.obs().upstream.as_ref().is_some_and(|u| {
                u.validated.contains(&rollout.sha) && !u.suspect.contains(&rollout.sha)
            });
            if still {
                self.validate(&rollout, Some(format!("validated in {from}")), None);
            } else {
                let reason = format!("its validation in {from} was revoked during the deploy");
                self.begin_rollback(&mut rollout, reason, None, Cause::UpstreamRevoked);
            }
            return true;
        }
        let timeout = self.env().verification.timeout;
        let timed_out = self.now() >= rollout.healthy_at.unwrap_or(self.now()) + timeout.get();
        match verdict {
            Some(v) if v.state == CiState::Success => {
                self.validate(&rollout, None, v.url);
                true
            }
            Some(v) if v.state == CiState::Error => match self.env().verification.on_ci_error {
                CiErrorPolicy::Rollback => {
                    self.begin_rollback(&mut rollout, error_reason(&v), v.url, Cause::CiError);
                    true
                }
                CiErrorPolicy::Keep => {
                    self.keep_unverified(&mut rollout, &error_reason(&v));
                    true
                }
                CiErrorPolicy::Wait => {
                    self.on_timeout(&mut rollout, timed_out, Some(error_reason(&v)), v.url)
                }
            },
            other => self.on_timeout(&mut rollout, timed_out, None, other.and_then(|v| v.url)),
        }
    }

    fn on_timeout(
        &mut self,
        rollout: &mut Rollout,
        timed_out: bool,
        last_error: Option<String>,
        url: Option<String>,
    ) -> bool {
        if !timed_out {
            return false;
        }
        let mut reason = format!("no CI verdict within {}", self.env().verification.timeout);
        if let Some(error) = last_error {
            reason = format!("{reason} (last: {error})");
        }
        match self.env().verification.on_timeout {
            TimeoutPolicy::Rollback => self.begin_rollback(rollout, reason, url, Cause::CiTimeout),
            TimeoutPolicy::Keep => self.keep_unverified(rollout, &reason),
        }
        true
    }

    fn validate(&mut self, rollout: &Rollout, reason: Option<String>, url: Option<String>) {
        let previous = self.status.validated_sha.clone();
        self.status.validated_sha = Some(rollout.sha.clone());
        self.status.rollout = None;
        self.status.suspect.retain(|s| s.sha != rollout.sha);
        self.set_phase(Phase::Validated);
        self.record(HistoryEntry {
            previous: previous.clone(),
            reason: reason.clone(),
            url: url.clone(),
            ..self.entry(HistoryEvent::Validated, &rollout.sha)
        });
        self.notify(
            EventKind::Validated,
            &rollout.sha,
            previous.as_ref(),
            reason,
            url,
            None,
        );
    }

    fn keep_unverified(&mut self, rollout: &mut Rollout, reason: &str) {
        let reason = format!("{reason}; kept running unvalidated (policy Keep)");
        rollout.failure = Some(reason.clone());
        self.status.rollout = Some(rollout.clone());
        self.set_phase(Phase::Failed);
        self.record(HistoryEntry {
            previous: rollout.rollback_point.clone(),
            reason: Some(reason.clone()),
            ..self.entry(HistoryEvent::Failed, &rollout.sha)
        });
        self.notify(
            EventKind::Failed,
            &rollout.sha,
            rollout.rollback_point.as_ref(),
            Some(reason),
            None,
            None,
        );
    }

    /// Quarantines the SHA in flight and returns to the rollback point, or fails loudly
    /// when there is none, keeping whatever runs.
    fn begin_rollback(
        &mut self,
        rollout: &mut Rollout,
        reason: String,
        url: Option<String>,
        cause: Cause,
    ) {
        if !self.is_quarantined(&rollout.sha) {
            self.status.quarantine.push(QuarantineEntry {
                sha: rollout.sha.clone(),
                at: self.now(),
                reason: reason.clone(),
                cause,
                ci_passed_later: false,
            });
        }
        if let Some(to) = rollout.rollback_point.clone() {
            rollout.failure = Some(reason.clone());
            self.status.rollout = Some(rollout.clone());
            self.set_phase(Phase::RollingBack);
            self.record(HistoryEntry {
                previous: Some(to.clone()),
                reason: Some(reason.clone()),
                url: url.clone(),
                ..self.entry(HistoryEvent::RolledBack, &rollout.sha)
            });
            self.notify(
                EventKind::VerificationFailed,
                &rollout.sha,
                Some(&to),
                Some(reason),
                url,
                None,
            );
        } else {
            let reason =
                format!("{reason}; no validated SHA to roll back to, whatever runs is kept");
            rollout.failure = Some(reason.clone());
            self.status.rollout = Some(rollout.clone());
            self.set_phase(Phase::Failed);
            self.record(HistoryEntry {
                reason: Some(reason.clone()),
                url: url.clone(),
                ..self.entry(HistoryEvent::Failed, &rollout.sha)
            });
            self.notify(
                EventKind::Failed,
                &rollout.sha,
                None,
                Some(reason),
                url,
                None,
            );
        }
    }

    fn step_idle(&mut self) -> bool {
        let Some(desired) = self.obs().desired.sha().cloned() else {
            return false;
        };
        if Some(&desired) == self.status.validated_sha.as_ref() {
            if self.status.phase != Phase::Validated {
                self.status.rollout = None;
                self.set_phase(Phase::Validated);
                return true;
            }
            return false;
        }
        // A SHA kept running unvalidated (policy Keep) still takes a late verdict.
        if self.status.phase == Phase::Failed
            && let Some(mut rollout) = self.status.rollout.clone().filter(|r| r.sha == desired)
        {
            if self.env().strategy == Strategy::ValidatedOnly {
                // Validation comes from upstream only: a person must act.
                self.block = Some(Block::Failed);
                return false;
            }
            let running = self.obs().workload.sha.as_ref() == Some(&desired);
            match self.verdict(&desired).map(|v| (v.state, v.clone())) {
                Some((CiState::Success, v)) if running && !self.is_quarantined(&desired) => {
                    self.validate(&rollout, Some("late CI verdict".into()), v.url);
                    return true;
                }
                Some((CiState::Failure, v)) if running && !self.is_quarantined(&desired) => {
                    let reason = format!("CI failed{}", failed_checks_suffix(&v));
                    self.begin_rollback(&mut rollout, reason, v.url.clone(), Cause::CiFailed);
                    return true;
                }
                _ => {
                    self.block = Some(Block::Failed);
                    return false;
                }
            }
        }
        match self.gate(&desired) {
            Ok(()) => {
                self.start_rollout(&desired);
                true
            }
            Err(Refusal::Approval) => {
                if self.status.phase == Phase::AwaitingApproval {
                    return false;
                }
                self.set_phase(Phase::AwaitingApproval);
                self.notify(
                    EventKind::AwaitingApproval,
                    &desired,
                    self.status.validated_sha.clone().as_ref(),
                    None,
                    None,
                    None,
                );
                true
            }
            Err(Refusal::Blocked(block)) => {
                let changed = match block {
                    // Waiting outside the window or for upstream is Pending; a quarantine
                    // or a failure keeps the phase that says what happened.
                    Block::Quarantined { .. } | Block::Failed => false,
                    _ => {
                        let was = self.status.phase;
                        self.set_phase(Phase::Pending);
                        was != Phase::Pending
                    }
                };
                self.block = Some(block);
                changed
            }
        }
    }

    /// Whether `sha` may start now: quarantine, upstream validation, approval, windows.
    fn gate(&self, sha: &Sha) -> Result<(), Refusal> {
        self.admissible(sha).map_err(Refusal::Blocked)?;
        self.cleared(sha)
    }

    /// Whether `sha` may ever run here as things stand: not quarantined and, for a
    /// validated-only environment, validated and not suspect upstream.
    fn admissible(&self, sha: &Sha) -> Result<(), Block> {
        if let Some(q) = self.status.quarantine.iter().find(|q| &q.sha == sha) {
            return Err(Block::Quarantined {
                since: q.at,
                reason: q.reason.clone(),
            });
        }
        if self.env().strategy == Strategy::ValidatedOnly {
            let Some(upstream) = &self.obs().upstream else {
                return Err(Block::NoUpstream);
            };
            if !upstream.validated.contains(sha) {
                return Err(Block::NotValidatedUpstream);
            }
            if upstream.suspect.contains(sha) {
                return Err(Block::SuspectUpstream);
            }
        }
        Ok(())
    }

    /// Whether the people and the calendar let an admissible `sha` start now: its
    /// approval when the promotion asks for one, the deploy windows or a break-glass.
    fn cleared(&self, sha: &Sha) -> Result<(), Refusal> {
        let needs_approval = self
            .env()
            .promotion
            .as_ref()
            .is_some_and(|p| p.approval == ApprovalPolicy::Manual);
        if needs_approval
            && self
                .input
                .spec
                .approval
                .as_ref()
                .is_none_or(|a| &a.sha != sha)
        {
            return Err(Refusal::Approval);
        }
        if let Some(windows) = self.input.windows {
            let glass = self
                .input
                .spec
                .break_glass
                .as_ref()
                .is_some_and(|b| &b.sha == sha);
            match windows.gate(self.now()) {
                Gate::Open => {}
                _ if glass => {}
                Gate::OpensAt(until) => {
                    return Err(Refusal::Blocked(Block::OutsideWindow { until }));
                }
                Gate::Never => return Err(Refusal::Blocked(Block::NoWindow)),
            }
        }
        Ok(())
    }

    /// Records the rollback point and starts deploying `sha`.
    fn start_rollout(&mut self, sha: &Sha) {
        let rollback_point = self.status.validated_sha.clone();
        if let (Some(windows), Some(glass)) = (
            self.input.windows,
            self.input
                .spec
                .break_glass
                .as_ref()
                .filter(|b| &b.sha == sha),
        ) && windows.gate(self.now()) != Gate::Open
        {
            self.record(HistoryEntry {
                previous: rollback_point.clone(),
                by: Some(glass.by.clone()),
                reason: Some(glass.reason.clone()),
                ..self.entry(HistoryEvent::BreakGlass, sha)
            });
            self.notify(
                EventKind::BreakGlass,
                sha,
                rollback_point.as_ref(),
                Some(glass.reason.clone()),
                None,
                Some(glass.by.clone()),
            );
        }
        let hooks_pending = !self.env().hooks.pre_deploy.is_empty();
        self.status.rollout = Some(Rollout {
            sha: sha.clone(),
            rollback_point: rollback_point.clone(),
            started_at: self.now(),
            deployed_at: if hooks_pending {
                None
            } else {
                Some(self.now())
            },
            up_at: None,
            healthy_at: None,
            hooks_done: Vec::new(),
            failure: None,
        });
        self.status.ci = self.verdict(sha).map(|v| summary(sha, v));
        self.set_phase(Phase::Deploying);
        self.record(HistoryEntry {
            previous: rollback_point.clone(),
            ..self.entry(HistoryEvent::Deployed, sha)
        });
        self.notify(
            EventKind::DeployStarted,
            sha,
            rollback_point.as_ref(),
            None,
            None,
            None,
        );
    }

    fn finish(mut self) -> Decision {
        let now = self.now();
        let reachable = self.obs().workload.backend == BackendState::Reachable;
        let workload = if reachable { self.target() } else { None };
        let hooks = self.pending_hooks();
        self.status.short = ShortShas {
            desired: self
                .status
                .desired_sha
                .as_ref()
                .map(|s| s.short().to_owned()),
            deployed: self
                .status
                .deployed_sha
                .as_ref()
                .map(|s| s.short().to_owned()),
            validated: self
                .status
                .validated_sha
                .as_ref()
                .map(|s| s.short().to_owned()),
        };
        let requeue_after = self.requeue_after();
        let view = conditions::View {
            phase: self.status.phase,
            observed: self.obs(),
            status: &self.status,
            block: self.block.as_ref(),
            generation: self.status.observed_generation,
        };
        let (conditions, message) = conditions::compute(&view, &self.input.status.conditions, now);
        self.status.conditions = conditions;
        self.status.message = Some(message);
        Decision {
            status: self.status,
            workload,
            hooks,
            notifications: self.notifications,
            requeue_after,
        }
    }

    /// What the workload should run, from the final phase.
    fn target(&self) -> Option<WorkloadTarget> {
        let validated = || {
            self.status
                .validated_sha
                .clone()
                .map(|sha| WorkloadTarget { sha, keep: None })
        };
        let rollout = self.status.rollout.as_ref();
        match self.status.phase {
            Phase::Deploying => rollout.and_then(|r| {
                r.deployed_at.map(|_| WorkloadTarget {
                    sha: r.sha.clone(),
                    keep: r.rollback_point.clone(),
                })
            }),
            Phase::Verifying => rollout.map(|r| WorkloadTarget {
                sha: r.sha.clone(),
                keep: r.rollback_point.clone(),
            }),
            Phase::RollingBack => rollout
                .and_then(|r| r.rollback_point.clone())
                .map(|sha| WorkloadTarget { sha, keep: None }),
            Phase::Validated | Phase::RolledBack | Phase::Pending | Phase::AwaitingApproval => {
                validated()
            }
            // A person is needed: leave whatever runs.
            Phase::Failed => None,
        }
    }

    fn pending_hooks(&self) -> Vec<HookRun> {
        pending_hooks(self.env(), &self.status)
    }

    fn requeue_after(&self) -> Option<Duration> {
        let now = self.now();
        let until = |t: Timestamp| -> Option<Duration> {
            let d = t.duration_since(now);
            Some(
                Duration::try_from(d)
                    .unwrap_or(Duration::ZERO)
                    .max(Duration::from_secs(1)),
            )
        };
        if self.obs().workload.backend != BackendState::Reachable {
            return Some(Duration::from_secs(10));
        }
        let rollout = self.status.rollout.as_ref();
        match (self.status.phase, &self.block) {
            (Phase::Deploying, _) if self.obs().artifact_pending.is_some() => {
                Some(Duration::from_secs(10))
            }
            // A hook reports when asked: every few seconds while one runs.
            (Phase::Deploying, _) if !self.pending_hooks().is_empty() => {
                Some(Duration::from_secs(5))
            }
            (Phase::Deploying, _) => rollout.and_then(|r| {
                until(
                    r.deployed_at.unwrap_or(r.started_at)
                        + self.env().verification.health_timeout.get(),
                )
            }),
            (Phase::RollingBack, _) => until(
                self.status.phase_since.unwrap_or(now)
                    + self.env().verification.health_timeout.get(),
            ),
            (Phase::Verifying, _) => rollout.and_then(|r| {
                until(r.healthy_at.unwrap_or(now) + self.env().verification.timeout.get())
            }),
            (_, Some(Block::OutsideWindow { until: t })) => until(*t),
            _ => None,
        }
        .into_iter()
        .chain(self.next_check().and_then(until))
        .min()
    }

    /// When the health monitor checks next, for a settled Release with something running.
    fn next_check(&self) -> Option<Timestamp> {
        let settled = !matches!(
            self.status.phase,
            Phase::Deploying | Phase::Verifying | Phase::RollingBack
        );
        (settled && self.obs().workload.sha.is_some())
            .then(|| self.status.monitor.as_ref()?.last_check)
            .flatten()
            .map(|t| t + self.env().monitoring.interval.get())
    }
}

/// Whether the next observation must run the HTTP health check (not only read the
/// container or Deployment state): while a deploy or rollback is in flight, before
/// anything was deployed, and when a monitoring round is due (the monitor counts the
/// observation it is given as that round's check).
#[must_use]
pub fn health_check_due(env: &EnvironmentSpec, status: &ReleaseStatus, now: Timestamp) -> bool {
    matches!(
        status.phase,
        Phase::Deploying | Phase::Verifying | Phase::RollingBack
    ) || status.deployed_sha.is_none()
        || status
            .monitor
            .as_ref()
            .and_then(|m| m.last_check)
            .is_none_or(|t| now >= t + env.monitoring.interval.get())
}

/// How long a list of hooks may take before one that never reported (its Job or
/// container cannot be created) counts as failed: each hook's own timeout bounds its
/// run; all of them and a minute bound the list.
fn hook_budget(hooks: &[Hook]) -> Duration {
    hooks.iter().map(|h| h.timeout.get()).sum::<Duration>() + Duration::from_secs(60)
}

/// The SHA a promotion or rollback replaces: the one in flight (or failed, or being
/// rolled back), else what `running` says runs, else the validated SHA.
#[must_use]
pub fn replaced(status: &ReleaseStatus, running: Option<&Sha>) -> Option<Sha> {
    status
        .rollout
        .as_ref()
        .filter(|_| {
            matches!(
                status.phase,
                Phase::Deploying | Phase::Verifying | Phase::Failed | Phase::RollingBack
            )
        })
        .map(|r| r.sha.clone())
        .or_else(|| running.cloned())
        .or_else(|| status.validated_sha.clone())
}

/// Why a person may not roll back to a SHA.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NotARollbackTarget {
    /// It is quarantined here.
    #[error("{} is quarantined here ({reason}); clear it first", .sha.short())]
    Quarantined {
        /// The SHA.
        sha: Sha,
        /// Why it was quarantined.
        reason: String,
    },
    /// It was never validated here (in the history kept).
    #[error("{} was never validated here (in the history kept)", .0.short())]
    NeverValidated(Sha),
}

/// Whether a person may roll back to `to`: it was validated here (it is the validated
/// SHA, or the kept history says it was) and is not quarantined.
///
/// # Errors
/// Why the rollback is refused.
pub fn rollback_target(status: &ReleaseStatus, to: &Sha) -> Result<(), NotARollbackTarget> {
    if let Some(q) = status.quarantine.iter().find(|q| &q.sha == to) {
        return Err(NotARollbackTarget::Quarantined {
            sha: to.clone(),
            reason: q.reason.clone(),
        });
    }
    let validated = status.validated_sha.as_ref() == Some(to)
        || status
            .history
            .iter()
            .any(|h| h.event == HistoryEvent::Validated && &h.sha == to);
    if validated {
        Ok(())
    } else {
        Err(NotARollbackTarget::NeverValidated(to.clone()))
    }
}

/// Why `gate` refused a SHA.
enum Refusal {
    Approval,
    Blocked(Block),
}

fn summary(sha: &Sha, v: &CiVerdict) -> CiSummary {
    CiSummary {
        sha: sha.clone(),
        state: v.state,
        url: v.url.clone(),
        failed_checks: v.failed_checks.clone(),
        description: v.description.clone(),
    }
}

fn failed_checks_suffix(v: &CiVerdict) -> String {
    if v.failed_checks.is_empty() {
        String::new()
    } else {
        format!(": {}", v.failed_checks.join(", "))
    }
}

fn error_reason(v: &CiVerdict) -> String {
    format!(
        "CI error{}",
        v.description
            .as_ref()
            .map(|d| format!(": {d}"))
            .unwrap_or_default()
    )
}
