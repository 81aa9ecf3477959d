//! The `Release` resource: one CodeLocation bound to one Environment, and its record.

use jiff::Timestamp;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{Condition, EnvVar, NAME_PATTERN, PortMapping, REVISION_PATTERN, Sha};

/// One CodeLocation bound to one Environment. `spec.revision` is the desired commit;
/// the status is the truth about what runs, what is validated and what happened.
#[derive(CustomResource, KubeSchema, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "vigie.dev",
    version = "v1alpha1",
    kind = "Release",
    namespaced,
    status = "ReleaseStatus",
    shortname = "rel",
    category = "vigie",
    doc = "One CodeLocation bound to one Environment: the desired revision, and the record of what was deployed, validated, rolled back and approved.",
    printcolumn(name = "Location", type_ = "string", json_path = ".spec.codeLocation"),
    printcolumn(
        name = "Environment",
        type_ = "string",
        json_path = ".spec.environment"
    ),
    printcolumn(
        name = "Desired",
        type_ = "string",
        json_path = ".status.short.desired"
    ),
    printcolumn(
        name = "Deployed",
        type_ = "string",
        json_path = ".status.short.deployed"
    ),
    printcolumn(
        name = "Validated",
        type_ = "string",
        json_path = ".status.short.validated"
    ),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReleaseSpec {
    /// Name of the CodeLocation (same namespace).
    #[schemars(regex(pattern = NAME_PATTERN), length(max = 253))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("codeLocation is immutable"))]
    pub code_location: String,
    /// Name of the Environment (same namespace).
    #[schemars(regex(pattern = NAME_PATTERN), length(max = 253))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("environment is immutable"))]
    pub environment: String,
    /// The desired commit: a full 40-digit SHA, or a tag or branch resolved to one.
    /// Empty while a tracking rule has not picked a commit yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = REVISION_PATTERN))]
    pub revision: Option<String>,
    /// Per-environment overrides of the CodeLocation's container settings.
    #[serde(default)]
    pub overrides: Overrides,
    /// Kubernetes backends: set the image of this existing Deployment (created by
    /// someone else) instead of creating a Deployment and a Service for the Release.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment: Option<ExistingDeployment>,
    /// An approval naming the exact SHA it lets in (for `approval: Manual` environments).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<ApprovalGrant>,
    /// Deploy outside the deploy windows anyway, on the record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub break_glass: Option<BreakGlass>,
    /// Lift the quarantine of rolled-back SHAs, on the record.
    #[serde(default)]
    pub clear_quarantine: Vec<QuarantineClearance>,
    /// A person's rollback to a SHA validated here before (`vigie rollback`). It applies
    /// once, while `revision` names the same SHA: what runs is quarantined and the
    /// target is restored, whatever the deploy windows and approvals say.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback: Option<RollbackRequest>,
}

/// A person's request to go back to a SHA validated here before.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RollbackRequest {
    /// The SHA to restore; it must have been validated in this environment.
    pub to: Sha,
    /// Who rolls back (Kubernetes or OS user name).
    #[schemars(length(min = 1, max = 253))]
    pub by: String,
    /// Why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub reason: Option<String>,
    /// When it was asked: a request is carried out once.
    #[schemars(with = "String")]
    pub at: Timestamp,
}

/// Per-environment overrides.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Overrides {
    /// Replace the CodeLocation's ports.
    #[serde(default)]
    pub ports: Vec<PortMapping>,
    /// Added to (or replacing by name) the CodeLocation's environment variables.
    #[serde(default)]
    pub env: Vec<EnvVar>,
}

/// An existing Deployment whose container image Vigie sets to the SHA's image.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExistingDeployment {
    /// The Deployment's name, in the Environment's namespace.
    #[schemars(regex(pattern = NAME_PATTERN), length(max = 253))]
    pub name: String,
    /// The container whose image is set. Defaults to the first container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = NAME_PATTERN), length(max = 63))]
    pub container: Option<String>,
}

/// A person's approval of one SHA.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ApprovalGrant {
    /// The exact SHA approved.
    pub sha: Sha,
    /// Who approves (Kubernetes or OS user name).
    #[schemars(length(min = 1, max = 253))]
    pub by: String,
    /// Why, in a few words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// When the approval was given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<String>")]
    pub at: Option<Timestamp>,
}

/// A person's override of the deploy windows for one SHA.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BreakGlass {
    /// The SHA allowed outside the windows.
    pub sha: Sha,
    /// Who breaks the glass.
    #[schemars(length(min = 1, max = 253))]
    pub by: String,
    /// Why: recorded in the history and sent to the notification sinks.
    #[schemars(length(min = 3, max = 1024))]
    pub reason: String,
}

/// A person's clearance of a quarantined SHA.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct QuarantineClearance {
    /// The SHA cleared.
    pub sha: Sha,
    /// Who clears it.
    #[schemars(length(min = 1, max = 253))]
    pub by: String,
    /// Why.
    #[schemars(length(min = 3, max = 1024))]
    pub reason: String,
    /// When the clearance was given: it lifts only quarantines recorded before this instant.
    #[schemars(with = "String")]
    pub at: Timestamp,
}

/// Where a Release is in its lifecycle.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum Phase {
    /// Nothing to do yet, or the desired SHA waits (window, upstream validation, quarantine).
    #[default]
    Pending,
    /// The desired SHA waits for an approval naming it.
    AwaitingApproval,
    /// The desired SHA is being deployed (hooks, then the workload), not yet healthy.
    Deploying,
    /// The desired SHA runs and is healthy; its CI verdict is awaited.
    Verifying,
    /// The running SHA is validated.
    Validated,
    /// The last validated SHA is being restored.
    RollingBack,
    /// The last validated SHA serves again; the bad SHA is quarantined.
    RolledBack,
    /// A person is needed (no rollback target, a failed hook, a kept unverified SHA).
    Failed,
}

impl Phase {
    /// The phase's name as written in the status.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "Pending",
            Self::AwaitingApproval => "AwaitingApproval",
            Self::Deploying => "Deploying",
            Self::Verifying => "Verifying",
            Self::Validated => "Validated",
            Self::RollingBack => "RollingBack",
            Self::RolledBack => "RolledBack",
            Self::Failed => "Failed",
        }
    }
}

/// Observed state of a Release.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReleaseStatus {
    /// Where the Release is in its lifecycle.
    #[serde(default)]
    pub phase: Phase,
    /// When the phase last changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<String>")]
    pub phase_since: Option<Timestamp>,
    /// A sentence about the current phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The generation of the spec last acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `spec.revision` resolved to a SHA.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub desired_sha: Option<Sha>,
    /// The SHA the workload runs, as last observed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployed_sha: Option<Sha>,
    /// The last SHA validated in this environment; the rollback target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validated_sha: Option<Sha>,
    /// Seven-digit forms of the three SHAs, for `kubectl get`.
    #[serde(default)]
    pub short: ShortShas,
    /// The deploy in flight (or the one that failed), with its rollback point.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<Rollout>,
    /// The latest CI verdict seen for the SHA in flight (or the last one verified).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ci: Option<CiSummary>,
    /// The latest health observation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<HealthSummary>,
    /// SHAs rolled back here: never redeployed automatically until cleared.
    #[serde(default)]
    pub quarantine: Vec<QuarantineEntry>,
    /// Validated SHAs whose validation was revoked: they cannot be promoted.
    #[serde(default)]
    pub suspect: Vec<SuspectEntry>,
    /// The periodic health monitor's view of what runs (`monitoring` in the Environment).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub monitor: Option<MonitorStatus>,
    /// The last approval seen in the spec, as recorded (SHA, who, when, why).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approved: Option<ApprovalGrant>,
    /// The `at` of the last rollback request carried out (each is carried out once).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<String>")]
    pub rollback_request_done: Option<Timestamp>,
    /// `Ready`, `Progressing`, `Verified`, `Degraded`.
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// What was deployed, validated, rolled back and approved, by whom and when (newest last, bounded).
    #[serde(default)]
    pub history: Vec<HistoryEntry>,
}

/// Seven-digit SHAs for printer columns.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ShortShas {
    /// Desired.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub desired: Option<String>,
    /// Deployed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployed: Option<String>,
    /// Validated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validated: Option<String>,
}

/// A deploy in flight.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Rollout {
    /// The SHA being deployed.
    pub sha: Sha,
    /// The validated SHA to return to if this one fails (recorded before the deploy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback_point: Option<Sha>,
    /// When the deploy started.
    #[schemars(with = "String")]
    pub started_at: Timestamp,
    /// When the pre-deploy hooks were done and the workload was told to move.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<String>")]
    pub deployed_at: Option<Timestamp>,
    /// When the SHA was first seen deployed and healthy; its post-deploy hooks (smoke
    /// tests) run from then, before verification starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<String>")]
    pub up_at: Option<Timestamp>,
    /// When the SHA was deployed, healthy and past its post-deploy hooks (verification
    /// started).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<String>")]
    pub healthy_at: Option<Timestamp>,
    /// Hooks (pre- and post-deploy) that succeeded for this SHA.
    #[serde(default)]
    pub hooks_done: Vec<String>,
    /// Why the rollout ended badly, when it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
}

/// A CI verdict state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum CiState {
    /// Still running, or no check reported yet.
    Pending,
    /// Every required check passed.
    Success,
    /// A required check failed.
    Failure,
    /// CI could not give a verdict (cancelled, runner lost, API unreachable).
    Error,
}

/// The CI verdict for a SHA, with its link.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct CiSummary {
    /// The SHA judged.
    pub sha: Sha,
    /// The verdict.
    pub state: CiState,
    /// Link to the CI run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Names of the failing checks.
    #[serde(default)]
    pub failed_checks: Vec<String>,
    /// What CI said, in a few words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// Health of the running workload.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum HealthState {
    /// Answers as expected.
    Healthy,
    /// Does not answer as expected, exited or restart-loops.
    Unhealthy,
    /// Starting; not judged yet.
    Progressing,
    /// Not known (backend unreachable, nothing running).
    Unknown,
}

/// The latest health observation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct HealthSummary {
    /// The state.
    pub state: HealthState,
    /// Why, when not healthy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// What the periodic health monitor concluded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum MonitorState {
    /// The checks pass (or not enough of them failed in a row yet).
    #[default]
    Healthy,
    /// `failureThreshold` checks in a row failed; `HealthDown` was sent once.
    Degraded,
}

/// The periodic health monitor's record for a Release.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct MonitorStatus {
    /// Healthy or Degraded.
    pub state: MonitorState,
    /// Since when.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<String>")]
    pub since: Option<Timestamp>,
    /// When the last check was counted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<String>")]
    pub last_check: Option<Timestamp>,
    /// The SHA the last check saw running.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha: Option<Sha>,
    /// Failed checks in a row.
    #[serde(default)]
    pub failures: u32,
    /// Good checks in a row.
    #[serde(default)]
    pub successes: u32,
    /// What the last failed check said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// A SHA rolled back in this environment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct QuarantineEntry {
    /// The SHA.
    pub sha: Sha,
    /// When it was quarantined.
    #[schemars(with = "String")]
    pub at: Timestamp,
    /// Why.
    pub reason: String,
    /// What kind of failure caused the rollback; only a CI one can be lifted by a green re-run.
    #[serde(default)]
    pub cause: QuarantineCause,
    /// A later CI run passed for this SHA, and the quarantine stays (a health rollback,
    /// or `verification.onGreenRerun: Keep`) until a person clears it.
    #[serde(default)]
    pub ci_passed_later: bool,
}

/// What caused a rollback. A rollback caused by CI (a failed check, an error, no verdict in
/// time) is undone by a CI re-run that passes; one caused by the workload itself is not.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum QuarantineCause {
    /// A required check failed.
    CiFailed,
    /// CI errored (cancelled, runner lost) and the policy rolled back.
    CiError,
    /// No definitive CI verdict came within the verification timeout.
    CiTimeout,
    /// The workload was unhealthy, crashed, or was not healthy in time.
    Unhealthy,
    /// The SHA's artifact was not available in time.
    ArtifactUnavailable,
    /// Its validation upstream was revoked during the deploy.
    UpstreamRevoked,
    /// A person rolled it back (`vigie rollback`); only a person clears it.
    Manual,
    /// Recorded before causes were kept; never lifted automatically.
    #[default]
    Unknown,
}

impl QuarantineCause {
    /// Whether CI's verdict caused the rollback, so that a green re-run may undo it.
    #[must_use]
    pub const fn is_ci(self) -> bool {
        matches!(self, Self::CiFailed | Self::CiError | Self::CiTimeout)
    }
}

/// A validated SHA whose validation was revoked.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct SuspectEntry {
    /// The SHA.
    pub sha: Sha,
    /// When it became suspect.
    #[schemars(with = "String")]
    pub at: Timestamp,
    /// Why (a red CI re-run, the health monitor).
    pub reason: String,
}

/// What a history entry records.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum HistoryEvent {
    /// A deploy of `sha` started (`previous` is the rollback point).
    Deployed,
    /// `sha` was validated.
    Validated,
    /// `sha` was superseded by a newer revision before it was validated.
    Superseded,
    /// `sha` was rolled back to `previous`.
    RolledBack,
    /// `sha` was approved by `by`.
    Approved,
    /// The deploy windows were overridden for `sha` by `by`.
    BreakGlass,
    /// `sha` became suspect.
    Suspect,
    /// The quarantine of `sha` was lifted by `by`.
    QuarantineCleared,
    /// A pre-deploy hook succeeded for `sha`; `output` links its backup.
    HookSucceeded,
    /// A CI run passed for `sha` after it was rolled back: its quarantine is lifted when
    /// CI caused the rollback (`verification.onGreenRerun: Lift`), else it stays until cleared.
    CiPassed,
    /// The deploy of `sha` failed and needs a person.
    Failed,
    /// The health monitor marked `sha` Degraded (`failureThreshold` checks failed in a row).
    HealthDown,
    /// The health monitor marked `sha` Healthy again (`recoveryThreshold` good checks).
    HealthRecovered,
}

/// One line of a Release's history.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct HistoryEntry {
    /// When.
    #[schemars(with = "String")]
    pub at: Timestamp,
    /// What.
    pub event: HistoryEvent,
    /// The SHA concerned.
    pub sha: Sha,
    /// The other SHA: rollback point of a deploy, target of a rollback.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<Sha>,
    /// Who, for a person's act.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
    /// Why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Link to the CI run or logs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Where a hook's output (a backup) was written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
}
