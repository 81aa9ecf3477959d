//! The `Environment` resource: where things run and the rules there.

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{
    Condition, DurationSpec, EnvVar, Mount, NAME_PATTERN, SecretRef, SecretSource,
};

/// Where things run and the rules there: backend, strategy, verification,
/// promotion, deploy windows, hooks, notifications and health monitoring.
#[derive(CustomResource, KubeSchema, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "vigie.dev",
    version = "v1alpha1",
    kind = "Environment",
    namespaced,
    status = "EnvironmentStatus",
    shortname = "env",
    category = "vigie",
    doc = "Where releases run and the rules there (backend, strategy, verification, promotion, windows, hooks, notifications, monitoring).",
    printcolumn(name = "Strategy", type_ = "string", json_path = ".spec.strategy"),
    printcolumn(name = "From", type_ = "string", json_path = ".spec.promotion.from"),
    printcolumn(
        name = "Releases",
        type_ = "integer",
        json_path = ".status.releaseCount"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[x_kube(validation = Rule::new("self.strategy != 'ValidatedOnly' || has(self.promotion)")
    .message("strategy ValidatedOnly requires promotion.from: the environment whose validated SHAs are accepted")
    .field_path(".promotion"))]
#[x_kube(validation = Rule::new("!has(self.dagster) || !has(self.dagster.workspace.configMap) || has(self.backend.kubernetes)")
    .message("dagster.workspace.configMap needs a kubernetes backend (the ConfigMap lives in its namespace); a Docker environment uses dagster.workspace.file")
    .field_path(".dagster.workspace.configMap"))]
#[x_kube(validation = Rule::new("!has(self.dagster) || !has(self.dagster.network) || has(self.backend.docker)")
    .message("dagster.network is the Docker network the code servers join; a kubernetes environment reaches them through their Services")
    .field_path(".dagster.network"))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EnvironmentSpec {
    /// Where the workloads of this environment run: a Docker host or a Kubernetes namespace.
    pub backend: Backend,
    /// `DeployFirst`: deploy a new SHA, then wait for CI and roll back on red.
    /// `ValidatedOnly`: only accept SHAs already validated in `promotion.from`.
    #[serde(default)]
    pub strategy: Strategy,
    /// How a deployed SHA is verified, and what a timeout or a CI error means.
    #[serde(default)]
    pub verification: Verification,
    /// Where SHAs are promoted from, and whether a person must approve each one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub promotion: Option<Promotion>,
    /// Weekly deploy windows in a time zone. Outside them a change waits; rollbacks never do.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub windows: Option<DeployWindows>,
    /// Commands run before a deploy (backups) and after it (smoke tests).
    #[serde(default)]
    pub hooks: Hooks,
    /// Where notifications go, each sink with the events it wants (at most 32).
    #[serde(default)]
    #[schemars(length(max = 32))]
    #[x_kube(validation = Rule::new("self.all(a, self.exists_one(b, a.name == b.name))").message("notification sink names must be unique"))]
    pub notifications: Vec<NotificationSink>,
    /// Periodic health monitoring of the releases running here.
    #[serde(default)]
    pub monitoring: Monitoring,
    /// The environment's address (`https://preprod.example.com`), shown on the forge
    /// as the deployment's environment URL when reporting is on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^https?://\S+$"), length(max = 2048))]
    pub url: Option<String>,
    /// How many entries each Release keeps in `status.history`.
    #[serde(default = "default_history_limit")]
    #[schemars(range(min = 1, max = 500))]
    pub history_limit: u32,
    /// The Dagster instance running here: Vigie writes its workspace and has its
    /// webserver reload each code location after a deploy or a rollback.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dagster: Option<super::dagster::DagsterInstance>,
}

fn default_history_limit() -> u32 {
    50
}

/// Where the workloads run. Exactly one of `docker` or `kubernetes`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub enum Backend {
    /// A Docker engine reached through a local socket, TCP with TLS, or SSH.
    Docker(DockerBackend),
    /// A namespace of the Kubernetes cluster the operator runs in.
    Kubernetes(KubernetesBackend),
}

/// A Docker engine.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[x_kube(validation = Rule::new("!has(self.tls) || (has(self.host) && self.host.startsWith('tcp://'))")
    .message("tls applies only to a tcp:// host")
    .field_path(".tls"))]
pub struct DockerBackend {
    /// Engine address: `unix:///var/run/docker.sock`, `tcp://host:2376` or `ssh://user@host`.
    /// Defaults to `DOCKER_HOST`, then to the local socket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^(unix:///\S+|tcp://[^\s/]+:[0-9]{1,5}|ssh://[^\s/]+)$"))]
    pub host: Option<String>,
    /// TLS client configuration for a `tcp://` host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<DockerTls>,
    /// The compose project name given to the containers (so `docker compose ps` lists them).
    /// Defaults to `vigie-<environment>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = "^[a-z0-9][a-z0-9_-]*$"))]
    pub compose_project: Option<String>,
}

/// TLS material for a Docker engine over TCP: a Secret (`ca.crt`, `tls.crt`, `tls.key`)
/// or three files on the Vigie host.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[x_kube(validation = Rule::new("has(self.secretRef) != (has(self.caFile) && has(self.certFile) && has(self.keyFile))")
    .message("set either secretRef, or all of caFile, certFile and keyFile"))]
pub struct DockerTls {
    /// A Secret holding `ca.crt`, `tls.crt` and `tls.key`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<SecretRef>,
    /// Path of the CA certificate that signed the engine's certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<String>,
    /// Path of the client certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_file: Option<String>,
    /// Path of the client key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_file: Option<String>,
}

/// A Kubernetes namespace.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KubernetesBackend {
    /// Namespace the Deployments and Services are created in.
    #[schemars(regex(pattern = NAME_PATTERN), length(max = 63))]
    pub namespace: String,
}

/// How new SHAs enter an environment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum Strategy {
    /// Deploy the new SHA at once, watch CI for it, roll back on red.
    #[default]
    DeployFirst,
    /// Accept only SHAs already validated in `promotion.from`.
    ValidatedOnly,
}

/// How a deployed SHA is verified.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Verification {
    /// How long to wait for a definitive CI verdict once the SHA is deployed and healthy (10s to 24h).
    #[serde(default = "default_verification_timeout")]
    #[x_kube(validation = Rule::new("duration(self) >= duration('10s') && duration(self) <= duration('24h')").message("must be between 10s and 24h"))]
    pub timeout: DurationSpec,
    /// What a timeout means: `Rollback` (treat as red) or `Keep` (keep the SHA running, unvalidated, phase Failed).
    #[serde(default)]
    pub on_timeout: TimeoutPolicy,
    /// What a CI error (cancelled, runner lost, API unreachable) means:
    /// `Wait` for a definitive verdict until the timeout, `Rollback` at once, or `Keep` the SHA unvalidated.
    #[serde(default)]
    pub on_ci_error: CiErrorPolicy,
    /// What a CI re-run that passes does for a SHA rolled back because of CI (a failed
    /// check, an error, no verdict in time): `Lift` its quarantine, so the SHA is deployed
    /// again if the Release still asks for it and validated once healthy, or `Keep` it
    /// quarantined until a person clears it. A rollback for health is never lifted by CI.
    #[serde(default)]
    pub on_green_rerun: GreenRerunPolicy,
    /// How long a new SHA has to become healthy before it is rolled back (10s to 1h).
    #[serde(default = "default_health_timeout")]
    #[x_kube(validation = Rule::new("duration(self) >= duration('10s') && duration(self) <= duration('1h')").message("must be between 10s and 1h"))]
    pub health_timeout: DurationSpec,
}

fn default_verification_timeout() -> DurationSpec {
    DurationSpec::from_secs(300)
}

fn default_health_timeout() -> DurationSpec {
    DurationSpec::from_secs(300)
}

impl Default for Verification {
    fn default() -> Self {
        Self {
            timeout: default_verification_timeout(),
            on_timeout: TimeoutPolicy::default(),
            on_ci_error: CiErrorPolicy::default(),
            on_green_rerun: GreenRerunPolicy::default(),
            health_timeout: default_health_timeout(),
        }
    }
}

/// What a verification timeout means.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum TimeoutPolicy {
    /// Roll back to the last validated SHA.
    #[default]
    Rollback,
    /// Keep the SHA running, unvalidated (phase Failed, reason VerificationTimedOut).
    Keep,
}

/// What a CI error means (as opposed to a CI failure, which always rolls back).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum CiErrorPolicy {
    /// Keep waiting for a definitive verdict (a re-run) until the verification timeout.
    #[default]
    Wait,
    /// Roll back at once.
    Rollback,
    /// Keep the SHA running, unvalidated (phase Failed, reason CiError).
    Keep,
}

/// What a green CI re-run does for a SHA that CI made roll back.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum GreenRerunPolicy {
    /// Lift the quarantine: the SHA may be deployed again and validated.
    #[default]
    Lift,
    /// Keep the quarantine until a person clears it; the pass is recorded.
    Keep,
}

/// Where SHAs come from and who lets them in.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Promotion {
    /// The Environment whose validated SHAs this one accepts.
    #[schemars(regex(pattern = NAME_PATTERN), length(max = 253))]
    pub from: String,
    /// `Manual`: each SHA needs an approval naming it. `Automatic`: none.
    #[serde(default)]
    pub approval: ApprovalPolicy,
}

/// Whether a promoted SHA needs a person's approval.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ApprovalPolicy {
    /// An approval naming the exact SHA is required (`vigie promote`, or `spec.approval`).
    #[default]
    Manual,
    /// No approval: a SHA validated upstream goes in.
    Automatic,
}

/// Weekly deploy windows. With no `allow` range every time is allowed but the `deny` ranges.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[x_kube(validation = Rule::new("size(self.allow) + size(self.deny) > 0").message("give at least one allow or deny range"))]
pub struct DeployWindows {
    /// IANA time zone the ranges are written in, e.g. `Europe/Brussels`.
    #[schemars(regex(pattern = r"^(UTC|[A-Za-z_]+(/[A-Za-z0-9_+-]+)+)$"))]
    pub time_zone: String,
    /// Ranges in which deploys may start.
    #[serde(default)]
    #[schemars(length(max = 64))]
    pub allow: Vec<WeeklyRange>,
    /// Ranges in which deploys may not start (win over `allow`).
    #[serde(default)]
    #[schemars(length(max = 64))]
    pub deny: Vec<WeeklyRange>,
}

/// Pattern of a weekly instant such as `Fri 16:00`.
pub const WEEKLY_TIME_PATTERN: &str =
    "^(Mon|Tue|Wed|Thu|Fri|Sat|Sun) ([01][0-9]|2[0-3]):[0-5][0-9]$";

/// A weekly range such as `from: Fri 16:00`, `to: Mon 08:00` (it may wrap over the week's end).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[x_kube(validation = Rule::new("self.from != self.to").message("from and to must differ"))]
pub struct WeeklyRange {
    /// Start, inclusive: a weekday and a 24-hour time, e.g. `Fri 16:00`.
    #[schemars(regex(pattern = WEEKLY_TIME_PATTERN), length(max = 16))]
    pub from: String,
    /// End, exclusive: a weekday and a 24-hour time, e.g. `Mon 08:00`.
    #[schemars(regex(pattern = WEEKLY_TIME_PATTERN), length(max = 16))]
    pub to: String,
}

/// Commands run around a deploy.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[x_kube(validation = Rule::new("!has(self.preDeploy) || !has(self.postDeploy) || self.preDeploy.all(p, self.postDeploy.all(q, q.name != p.name))").message("hook names must be unique across preDeploy and postDeploy"))]
pub struct Hooks {
    /// Run before the workload moves (a backup); each must exit 0 or the deploy stops.
    #[serde(default)]
    #[schemars(length(max = 16))]
    #[x_kube(validation = Rule::new("self.all(a, self.exists_one(b, a.name == b.name))").message("hook names must be unique"))]
    pub pre_deploy: Vec<Hook>,
    /// Run once the new SHA is up and healthy, before verification (smoke tests); a
    /// failure counts as unhealthy: the SHA is rolled back. On Docker each runs in the
    /// new container's network (the app answers on `localhost`).
    #[serde(default)]
    #[schemars(length(max = 16))]
    #[x_kube(validation = Rule::new("self.all(a, self.exists_one(b, a.name == b.name))").message("hook names must be unique"))]
    pub post_deploy: Vec<Hook>,
}

impl Hooks {
    /// The hook of either list named `name` (names are unique in an environment).
    #[must_use]
    pub fn find(&self, name: &str) -> Option<&Hook> {
        self.pre_deploy
            .iter()
            .chain(&self.post_deploy)
            .find(|h| h.name == name)
    }
}

/// A one-off container (Docker) or Job (Kubernetes).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Hook {
    /// Name of the hook, unique in the environment.
    #[schemars(regex(pattern = NAME_PATTERN), length(max = 63))]
    pub name: String,
    /// Image to run; `{sha}` and `{shortSha}` are replaced by the SHA being deployed
    /// (a check run in the new SHA's own image).
    #[schemars(length(min = 1))]
    pub image: String,
    /// Command and arguments.
    #[serde(default)]
    pub command: Vec<String>,
    /// Environment variables. `VIGIE_SHA`, `VIGIE_PREVIOUS_SHA` and `VIGIE_ENVIRONMENT` are added.
    #[serde(default)]
    pub env: Vec<EnvVar>,
    /// Host paths or volumes mounted into the hook's container.
    #[serde(default)]
    pub mounts: Vec<Mount>,
    /// Longest run allowed (1s to 6h); past it the hook is killed and counts as failed.
    #[serde(default = "default_hook_timeout")]
    #[x_kube(validation = Rule::new("duration(self) >= duration('1s') && duration(self) <= duration('6h')").message("must be between 1s and 6h"))]
    pub timeout: DurationSpec,
    /// Where the hook's output (a backup) lands, linked from the Release history.
    /// `{sha}`, `{environment}` and `{time}` are replaced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
}

fn default_hook_timeout() -> DurationSpec {
    DurationSpec::from_secs(600)
}

/// Events a notification sink can subscribe to.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
pub enum EventKind {
    /// A deploy of a new SHA started.
    DeployStarted,
    /// The new SHA is up and healthy; CI is being watched.
    Deployed,
    /// CI validated the SHA.
    Validated,
    /// CI failed (or errored, or timed out) for the SHA: a rollback starts.
    VerificationFailed,
    /// The previous validated SHA serves again.
    RolledBack,
    /// A deploy or rollback failed and needs a person.
    Failed,
    /// A SHA waits for an approval.
    AwaitingApproval,
    /// A person approved a SHA.
    Approved,
    /// A person deployed outside the deploy windows (break-glass).
    BreakGlass,
    /// A validated SHA became suspect (red re-run, health).
    Suspect,
    /// The health monitor saw a release go down.
    HealthDown,
    /// The health monitor saw a release recover.
    HealthRecovered,
    /// A pre- or post-deploy hook failed.
    HookFailed,
}

/// A place notifications go. Exactly one of the sink kinds is set.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[x_kube(validation = Rule::new("[has(self.discord), has(self.msTeams), has(self.slack), has(self.ntfy), has(self.email), has(self.webhook), has(self.kubernetesEvents)].filter(x, x).size() == 1")
    .message("set exactly one of discord, msTeams, slack, ntfy, email, webhook, kubernetesEvents"))]
pub struct NotificationSink {
    /// Name of the sink, unique in the environment.
    #[schemars(regex(pattern = NAME_PATTERN), length(max = 63))]
    pub name: String,
    /// Events sent to this sink; empty means all.
    #[serde(default)]
    pub events: Vec<EventKind>,
    /// A Discord channel webhook.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub discord: Option<WebhookUrlSink>,
    /// An MS Teams workflow webhook (Adaptive Card).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ms_teams: Option<WebhookUrlSink>,
    /// A Slack incoming webhook.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slack: Option<WebhookUrlSink>,
    /// An ntfy topic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ntfy: Option<NtfySink>,
    /// Email through SMTP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<EmailSink>,
    /// A generic JSON webhook, signed with HMAC-SHA256.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<GenericWebhookSink>,
    /// Kubernetes Events on the Release (operator mode).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubernetes_events: Option<KubernetesEventsSink>,
}

/// A chat service reached by a secret webhook URL.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WebhookUrlSink {
    /// The webhook URL; it is a secret, so it is read from a Secret, a file or a variable.
    pub url: SecretSource,
}

/// An ntfy topic.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NtfySink {
    /// Base URL of the ntfy server.
    #[serde(default = "default_ntfy_server")]
    #[schemars(regex(pattern = "^https?://"))]
    pub server: String,
    /// Topic name.
    #[schemars(regex(pattern = "^[A-Za-z0-9_-]{1,64}$"))]
    pub topic: String,
    /// Access token, if the topic is protected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<SecretSource>,
}

fn default_ntfy_server() -> String {
    "https://ntfy.sh".to_owned()
}

/// Email through an SMTP server.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EmailSink {
    /// SMTP server host name.
    #[schemars(length(min = 1))]
    pub host: String,
    /// SMTP port (587 for STARTTLS).
    #[serde(default = "default_smtp_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: u16,
    /// Require STARTTLS before authenticating.
    #[serde(default = "default_true")]
    pub starttls: bool,
    /// SMTP user name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// SMTP password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<SecretSource>,
    /// Sender address.
    #[schemars(regex(pattern = "^[^@\\s]+@[^@\\s]+$"))]
    pub from: String,
    /// Recipient addresses.
    #[schemars(length(min = 1))]
    pub to: Vec<String>,
    /// PEM file of CA certificates to trust for the server (a private CA), besides the
    /// public ones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<String>,
}

fn default_smtp_port() -> u16 {
    587
}

fn default_true() -> bool {
    true
}

/// A generic JSON webhook.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GenericWebhookSink {
    /// Where the JSON is POSTed.
    pub url: SecretSource,
    /// HMAC-SHA256 key; the signature goes in `X-Vigie-Signature: sha256=<hex>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signing_secret: Option<SecretSource>,
}

/// Kubernetes Events on the Release (no settings).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KubernetesEventsSink {}

/// Periodic health monitoring.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Monitoring {
    /// How often each running release is checked (5s to 24h; default 1h).
    #[serde(default = "default_monitor_interval")]
    #[x_kube(validation = Rule::new("duration(self) >= duration('5s') && duration(self) <= duration('24h')").message("must be between 5s and 24h"))]
    pub interval: DurationSpec,
    /// Consecutive failed checks before a release is marked Degraded (and alerted once).
    #[serde(default = "default_failure_threshold")]
    #[schemars(range(min = 1, max = 20))]
    pub failure_threshold: u32,
    /// Consecutive good checks before a Degraded release is marked Healthy again (and
    /// the recovery alerted once): the flap threshold, so that a release that answers
    /// every other check neither alerts nor recovers at each one.
    #[serde(default = "default_recovery_threshold")]
    #[schemars(range(min = 1, max = 20))]
    pub recovery_threshold: u32,
    /// Mark the running validated SHA suspect when it goes down (it can then not be promoted).
    #[serde(default)]
    pub mark_suspect: bool,
}

fn default_monitor_interval() -> DurationSpec {
    DurationSpec::from_secs(3600)
}

fn default_failure_threshold() -> u32 {
    2
}

fn default_recovery_threshold() -> u32 {
    2
}

impl Default for Monitoring {
    fn default() -> Self {
        Self {
            interval: default_monitor_interval(),
            failure_threshold: default_failure_threshold(),
            recovery_threshold: default_recovery_threshold(),
            mark_suspect: false,
        }
    }
}

/// Observed state of an Environment.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct EnvironmentStatus {
    /// `Ready` (backend reachable) and `Degraded` (some release is not healthy).
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// The generation of the spec last acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Number of Releases bound to this environment.
    #[serde(default)]
    pub release_count: u32,
    /// One line per Release bound to this environment.
    #[serde(default)]
    pub releases: Vec<ReleaseSummary>,
}

/// A Release as summarised on its Environment.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReleaseSummary {
    /// The code location.
    pub code_location: String,
    /// The Release's phase.
    pub phase: String,
    /// Short SHA deployed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployed: Option<String>,
}
