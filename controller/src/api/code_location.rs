//! The `CodeLocation` resource: one deployable unit, its repository, CI and artifact.

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{
    Condition, DurationSpec, EnvVar, Mount, NAME_PATTERN, PortMapping, SecretSource,
};

/// One deployable unit: a git repository, the CI that judges its commits,
/// how a commit becomes something that runs, and how to tell it is healthy.
#[derive(CustomResource, KubeSchema, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "vigie.dev",
    version = "v1alpha1",
    kind = "CodeLocation",
    namespaced,
    status = "CodeLocationStatus",
    shortname = "cl",
    category = "vigie",
    doc = "One deployable unit: its git repository, CI provider and required checks, artifact, container settings and health check.",
    printcolumn(name = "Repository", type_ = "string", json_path = ".spec.repo.url"),
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
#[x_kube(validation = Rule::new("!has(self.dagster) || !has(self.container) || ((!has(self.container.command) || size(self.container.command) == 0) && (!has(self.container.args) || size(self.container.args) == 0))")
    .message("dagster starts the code server itself: remove container.command and container.args")
    .field_path(".dagster"))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CodeLocationSpec {
    /// The git repository holding the code.
    pub repo: Repository,
    /// Which git refs move which environment's Release: a branch (every new commit)
    /// or a tag pattern (glob such as `v*`, or a semver range such as `>=1.2, <2`).
    #[serde(default)]
    pub track: Vec<TrackRule>,
    /// The CI whose verdict validates a SHA, and the checks that count.
    pub ci: CiSpec,
    /// How a SHA becomes something that runs. Exactly one of `image`, `compose`, `gitCheckout`.
    pub artifact: Artifact,
    /// Container settings shared by every environment (Releases may override ports and env).
    #[serde(default)]
    pub container: ContainerSettings,
    /// Health check of a running SHA: an HTTP GET, or a gRPC `Health/Check` with `grpc`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<HealthCheck>,
    /// A Dagster code location: Vigie starts its code server (the command is Vigie's),
    /// lists it in the Environment's workspace and has the webserver judge that its
    /// definitions load.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dagster: Option<super::dagster::DagsterCodeLocation>,
}

/// A git repository.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Repository {
    /// Clone URL: `https://…`, `ssh://…`, `git@host:path` or `file://…`.
    #[schemars(regex(
        pattern = r"^(https?://|ssh://|file://|[A-Za-z0-9_.-]+@[A-Za-z0-9_.-]+:)\S+$"
    ))]
    pub url: String,
    /// The main branch (commit subjects between SHAs are read from it).
    #[serde(default = "default_branch")]
    #[schemars(regex(pattern = r"^[A-Za-z0-9_][A-Za-z0-9._/-]*$"))]
    pub branch: String,
    /// Credentials: a token or a GitHub App for HTTPS, or an SSH key and known hosts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials: Option<GitCredentials>,
}

fn default_branch() -> String {
    "main".to_owned()
}

/// Credentials for a git remote.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[x_kube(validation = Rule::new("[has(self.token), has(self.sshKey), has(self.githubApp)].filter(x, x).size() == 1").message("set exactly one of token (HTTPS), githubApp (HTTPS) or sshKey (SSH)"))]
#[x_kube(validation = Rule::new("!has(self.sshKey) || has(self.knownHosts)").message("sshKey requires knownHosts: unknown hosts are never trusted").field_path(".knownHosts"))]
pub struct GitCredentials {
    /// Token for HTTPS remotes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<SecretSource>,
    /// A GitHub App whose installation tokens are sent for HTTPS remotes (user
    /// `x-access-token`), minted and refreshed by Vigie.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub github_app: Option<GitHubAppClone>,
    /// Private key for SSH remotes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssh_key: Option<SecretSource>,
    /// `known_hosts` lines for SSH remotes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub known_hosts: Option<SecretSource>,
}

/// Maps a git ref to the Release of one environment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[x_kube(validation = Rule::new("has(self.branch) != has(self.tags)").message("set exactly one of branch or tags"))]
pub struct TrackRule {
    /// The Environment whose Release follows the ref.
    #[schemars(regex(pattern = NAME_PATTERN), length(max = 253))]
    pub environment: String,
    /// Follow every new commit on this branch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[A-Za-z0-9_][A-Za-z0-9._/-]*$"))]
    pub branch: Option<String>,
    /// Follow the newest tag matching this glob (`v*`) or semver range (`>=1.0.0, <2`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 255))]
    pub tags: Option<String>,
}

/// The CI provider and the checks that count. Exactly one provider is set.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[x_kube(validation = Rule::new("[has(self.github), has(self.gitlab), has(self.webhook)].filter(x, x).size() == 1")
    .message("set exactly one of github, gitlab, webhook"))]
#[x_kube(validation = Rule::new("!has(self.polling) || self.polling != 'never' || (has(self.github) && has(self.github.webhookSecret)) || (has(self.gitlab) && has(self.gitlab.webhookToken)) || has(self.webhook)")
    .message("polling: never needs the provider's webhook secret (github.webhookSecret or gitlab.webhookToken): without it no verdict can reach Vigie")
    .field_path(".polling"))]
#[x_kube(validation = Rule::new("!(has(self.github) && has(self.github.report) && has(self.github.report.commitStatus) && self.github.report.commitStatus) || (size(self.requiredChecks) > 0 && self.requiredChecks.all(c, !c.startsWith('vigie/') && c != '*'))")
    .message("github.report.commitStatus needs requiredChecks naming the CI checks (not '*' nor 'vigie/…'): Vigie's own status vigie/<environment> must not count as a check")
    .field_path(".requiredChecks"))]
pub struct CiSpec {
    /// GitHub check runs and commit statuses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub github: Option<GitHubCi>,
    /// GitLab pipelines.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gitlab: Option<GitLabCi>,
    /// Signed verdicts posted to `/hooks/ci` (any CI, or `vigie ci report`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<WebhookCi>,
    /// Names of the checks that must pass (globs allowed); empty means every check.
    #[serde(default)]
    pub required_checks: Vec<String>,
    /// How often CI is polled while a SHA is being verified (5s to 10m).
    #[serde(default = "default_poll_interval")]
    #[x_kube(validation = Rule::new("duration(self) >= duration('5s') && duration(self) <= duration('10m')").message("must be between 5s and 10m"))]
    pub poll_interval: DurationSpec,
    /// When GitHub or GitLab is polled for the SHA being verified: `always` (every
    /// `pollInterval`), `never` (webhook deliveries only), or `fallback` (webhooks, and
    /// polling once no delivery has come for `pollFallbackAfter`). Default: `fallback`
    /// when the provider's webhook secret is set, else `always`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub polling: Option<Polling>,
    /// With `polling: fallback`, how long without a delivery for the SHA being verified
    /// before the provider is polled (10s to 1h; default 2m).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("duration(self) >= duration('10s') && duration(self) <= duration('1h')").message("must be between 10s and 1h"))]
    pub poll_fallback_after: Option<DurationSpec>,
}

/// When a provider's API is polled for verdicts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum Polling {
    /// Every `pollInterval` while a SHA is verified.
    Always,
    /// Never: verdicts come by webhook only.
    Never,
    /// Only after `pollFallbackAfter` without a webhook delivery for the SHA.
    Fallback,
}

/// The silence after which `polling: fallback` polls, when not set.
pub const DEFAULT_POLL_FALLBACK_AFTER: std::time::Duration = std::time::Duration::from_secs(120);

impl CiSpec {
    /// The polling in force: as set, else `fallback` when the provider's webhook
    /// secret is set, else `always`. `never` for `webhook` CI (nothing to poll).
    #[must_use]
    pub fn polling(&self) -> Polling {
        if self.github.is_none() && self.gitlab.is_none() {
            return Polling::Never;
        }
        if let Some(p) = self.polling {
            return p;
        }
        let webhooks = self
            .github
            .as_ref()
            .is_some_and(|g| g.webhook_secret.is_some())
            || self
                .gitlab
                .as_ref()
                .is_some_and(|g| g.webhook_token.is_some());
        if webhooks {
            Polling::Fallback
        } else {
            Polling::Always
        }
    }

    /// With `polling: fallback`, the silence after which the provider is polled.
    #[must_use]
    pub fn poll_fallback_after(&self) -> std::time::Duration {
        self.poll_fallback_after
            .as_ref()
            .map_or(DEFAULT_POLL_FALLBACK_AFTER, |d| d.get())
    }
}

fn default_poll_interval() -> DurationSpec {
    DurationSpec::from_secs(10)
}

/// GitHub (github.com or Enterprise).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[x_kube(validation = Rule::new("!has(self.token) || !has(self.app)").message("set either token or app, not both").field_path(".app"))]
pub struct GitHubCi {
    /// `owner/repo`.
    #[schemars(regex(pattern = r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$"))]
    pub repository: String,
    /// API base URL (`https://github.example.com/api/v3` for Enterprise).
    #[serde(default = "default_github_api")]
    #[schemars(regex(pattern = "^https?://"))]
    pub api_url: String,
    /// API token (a personal access token). Exclusive with `app`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<SecretSource>,
    /// A GitHub App installation whose tokens Vigie mints and refreshes, instead of
    /// a personal token. Exclusive with `token`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app: Option<GitHubApp>,
    /// Secret of the repository webhook (`X-Hub-Signature-256`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_secret: Option<SecretSource>,
    /// Report deployments back to GitHub (a Deployment per environment and SHA with its
    /// statuses, and optionally a commit status `vigie/<environment>`). Off when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report: Option<GitHubReport>,
}

/// What Vigie reports back to GitHub, with the token of `ci.github.token` (it needs
/// `deployments: write`, and `statuses: write` for commit statuses).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GitHubReport {
    /// A Deployment per environment and SHA, its status following the Release:
    /// `in_progress` while deploying and verifying, `success` once validated, `failure`
    /// when rolled back, `error` when a person is needed, `inactive` once replaced.
    #[serde(default = "yes")]
    pub deployments: bool,
    /// A commit status `vigie/<environment>` on each SHA deployed (`pending`, `success`,
    /// `failure`, `error`). It needs `ci.requiredChecks`, so that Vigie never waits for
    /// its own status.
    #[serde(default)]
    pub commit_status: bool,
}

/// What Vigie reports back to GitLab, with the token of `ci.gitlab.token` (a token with
/// the `api` scope and the Developer role).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GitLabReport {
    /// A deployment per environment and SHA, its status following the Release:
    /// `running` while deploying and verifying, `success` once validated, `failed` when
    /// rolled back or when a person is needed.
    #[serde(default = "yes")]
    pub deployments: bool,
}

fn yes() -> bool {
    true
}

fn default_github_api() -> String {
    "https://api.github.com".to_owned()
}

/// A GitHub App installation: Vigie signs a JSON web token with the App's private key
/// and exchanges it for an installation token (valid one hour, refreshed before it
/// expires).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[x_kube(validation = Rule::new("has(self.appId) != has(self.clientId)").message("set either appId or clientId"))]
pub struct GitHubApp {
    /// The App's ID (its settings page, "App ID"). Exclusive with `clientId`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub app_id: Option<u64>,
    /// The App's client ID (`Iv23…`), which GitHub recommends as the token issuer;
    /// older GitHub Enterprise Server versions take `appId` only. Exclusive with `appId`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[A-Za-z0-9._-]+$"), length(max = 100))]
    pub client_id: Option<String>,
    /// The installation of the App on the repository's owner (the number at the end of
    /// `https://github.com/organizations/<org>/settings/installations/<id>`).
    #[schemars(range(min = 1))]
    pub installation_id: u64,
    /// The App's private key, as GitHub downloads it (PEM, `BEGIN RSA PRIVATE KEY`;
    /// PKCS#8 `BEGIN PRIVATE KEY` is accepted too).
    pub private_key: SecretSource,
}

impl GitHubApp {
    /// The issuer of the App's tokens: its client ID, else its App ID.
    #[must_use]
    pub fn issuer(&self) -> String {
        match (&self.client_id, self.app_id) {
            (Some(id), _) => id.clone(),
            (None, Some(id)) => id.to_string(),
            (None, None) => String::new(),
        }
    }
}

/// A GitHub App whose installation tokens clone a repository over HTTPS.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[x_kube(validation = Rule::new("has(self.appId) != has(self.clientId)").message("set either appId or clientId"))]
pub struct GitHubAppClone {
    /// The API that mints the tokens (`https://github.example.com/api/v3` for Enterprise).
    #[serde(default = "default_github_api")]
    #[schemars(regex(pattern = "^https?://"))]
    pub api_url: String,
    /// The App's ID. Exclusive with `clientId`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub app_id: Option<u64>,
    /// The App's client ID (`Iv23…`). Exclusive with `appId`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[A-Za-z0-9._-]+$"), length(max = 100))]
    pub client_id: Option<String>,
    /// The installation of the App on the repository's owner.
    #[schemars(range(min = 1))]
    pub installation_id: u64,
    /// The App's private key (PEM).
    pub private_key: SecretSource,
}

impl GitHubAppClone {
    /// The App, without the API it is reached at.
    #[must_use]
    pub fn app(&self) -> GitHubApp {
        GitHubApp {
            app_id: self.app_id,
            client_id: self.client_id.clone(),
            installation_id: self.installation_id,
            private_key: self.private_key.clone(),
        }
    }
}

/// GitLab (gitlab.com or self-managed).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GitLabCi {
    /// Project id or `group/project` path.
    #[schemars(length(min = 1))]
    pub project: String,
    /// API base URL.
    #[serde(default = "default_gitlab_api")]
    #[schemars(regex(pattern = "^https?://"))]
    pub api_url: String,
    /// API token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<SecretSource>,
    /// Secret token of the project webhook (`X-Gitlab-Token`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_token: Option<SecretSource>,
    /// Report deployments back to GitLab (a deployment per environment and SHA with its
    /// status). Off when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report: Option<GitLabReport>,
}

fn default_gitlab_api() -> String {
    "https://gitlab.com/api/v4".to_owned()
}

/// Verdicts posted to `/hooks/ci`, signed with HMAC-SHA256.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WebhookCi {
    /// This location's own HMAC key: when set, its verdicts must be signed with it (the
    /// process-wide webhook secret is not accepted for it); else the process-wide secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<SecretSource>,
}

/// How a SHA becomes something that runs. Exactly one kind.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub enum Artifact {
    /// A container image per SHA.
    Image(ImageArtifact),
    /// A service of an existing compose file, its image tag set to the SHA.
    Compose(ComposeArtifact),
    /// A git checkout of the SHA in a directory mounted into the container.
    GitCheckout(GitCheckoutArtifact),
}

/// A container image per SHA.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ImageArtifact {
    /// Image reference with `{sha}` (or `{shortSha}`), e.g. `registry.example.com/app:{sha}`.
    #[schemars(regex(pattern = r"^\S*\{(sha|shortSha)\}\S*$"))]
    pub template: String,
}

/// A service of a compose file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ComposeArtifact {
    /// Path of the compose file on the Vigie host.
    #[schemars(length(min = 1))]
    pub file: String,
    /// The service to run.
    #[schemars(length(min = 1))]
    pub service: String,
    /// Image tag template for the service (`{sha}` by default): the service's image with this tag.
    #[serde(default = "default_tag_template")]
    #[schemars(regex(pattern = r"\{(sha|shortSha)\}"))]
    pub tag: String,
}

fn default_tag_template() -> String {
    "{sha}".to_owned()
}

/// A git checkout bind-mounted into a container of a fixed image.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GitCheckoutArtifact {
    /// Directory on the host holding the working tree (one per environment: `{environment}` is replaced).
    #[schemars(regex(pattern = "^/"))]
    pub path: String,
    /// Image that runs the code.
    #[schemars(length(min = 1))]
    pub image: String,
    /// Where the working tree is mounted in the container.
    #[serde(default = "default_mount_path")]
    #[schemars(regex(pattern = "^/"))]
    pub mount_path: String,
}

fn default_mount_path() -> String {
    "/app".to_owned()
}

/// Container settings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ContainerSettings {
    /// Ports the application listens on, and where they are published.
    #[serde(default)]
    pub ports: Vec<PortMapping>,
    /// Environment variables.
    #[serde(default)]
    pub env: Vec<EnvVar>,
    /// Entrypoint override.
    #[serde(default)]
    pub command: Vec<String>,
    /// Arguments.
    #[serde(default)]
    pub args: Vec<String>,
    /// Host paths or volumes to mount.
    #[serde(default)]
    pub volumes: Vec<Mount>,
    /// Working directory in the container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    /// Number of replicas (Kubernetes backend).
    #[serde(default = "default_replicas")]
    #[schemars(range(min = 1, max = 100))]
    pub replicas: u32,
}

impl Default for ContainerSettings {
    fn default() -> Self {
        Self {
            ports: Vec::new(),
            env: Vec::new(),
            command: Vec::new(),
            args: Vec::new(),
            volumes: Vec::new(),
            working_dir: None,
            replicas: default_replicas(),
        }
    }
}

fn default_replicas() -> u32 {
    1
}

/// Health check of a running SHA: an HTTP GET on `path` (the default), or a gRPC
/// `grpc.health.v1.Health/Check` when `grpc` is set. Either kind has a timeout per
/// request and retries with a doubling delay.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[x_kube(validation = Rule::new("!has(self.grpc) || !has(self.expectedBody)")
    .message("expectedBody applies to HTTP checks only: a grpc check passes when the server answers SERVING")
    .field_path(".expectedBody"))]
#[x_kube(validation = Rule::new("!has(self.grpc) || ((!has(self.path) || self.path == '/') && (!has(self.expectedStatus) || self.expectedStatus == 200))")
    .message("path and expectedStatus apply to HTTP checks only: a grpc check passes when the server answers SERVING")
    .field_path(".grpc"))]
pub struct HealthCheck {
    /// Path requested with GET (HTTP checks only).
    #[serde(default = "default_health_path")]
    #[schemars(regex(pattern = "^/"))]
    pub path: String,
    /// Container port to check (HTTP or gRPC); defaults to the first port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: Option<u16>,
    /// Expected HTTP status (HTTP checks only).
    #[serde(default = "default_expected_status")]
    #[schemars(range(min = 100, max = 599))]
    pub expected_status: u16,
    /// A substring the body must contain (HTTP checks only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_body: Option<String>,
    /// Check with the gRPC health protocol instead of HTTP: a `grpc.health.v1.Health/Check`
    /// call over HTTP/2 without TLS on `port`, healthy when it answers `SERVING`. `path`,
    /// `expectedStatus` and `expectedBody` do not apply. On Kubernetes the readiness
    /// probe is the kubelet's native `grpc` probe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grpc: Option<GrpcHealthCheck>,
    /// Timeout of one request (100ms to 5m).
    #[serde(default = "default_health_request_timeout")]
    #[x_kube(validation = Rule::new("duration(self) >= duration('100ms') && duration(self) <= duration('5m')").message("must be between 100ms and 5m"))]
    pub timeout: DurationSpec,
    /// Retries after a failed request before the SHA is unhealthy (0 to 20).
    #[serde(default = "default_retries")]
    #[schemars(range(min = 0, max = 20))]
    pub retries: u32,
    /// First delay between retries; it doubles each time (100ms to 5m).
    #[serde(default = "default_retry_interval")]
    #[x_kube(validation = Rule::new("duration(self) >= duration('100ms') && duration(self) <= duration('5m')").message("must be between 100ms and 5m"))]
    pub interval: DurationSpec,
}

/// A gRPC health check: the unary call `grpc.health.v1.Health/Check`, judged as
/// `dagster api grpc-health-check` judges a Dagster code server: healthy only when the
/// answer's status is `SERVING`; any other status (`UNKNOWN`, `NOT_SERVING`,
/// `SERVICE_UNKNOWN`) or a failed call (`NOT_FOUND` for a service the server does not
/// know, no answer) is unhealthy. Vigie bounds each call by `timeout`, which Dagster's
/// CLI does not.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GrpcHealthCheck {
    /// The service name sent in the `HealthCheckRequest`. Empty (the default) asks about
    /// the server as a whole, as the gRPC health protocol says. A Dagster code server
    /// (`dagster code-server start`, `dagster api grpc`) is checked with `DagsterApi`:
    /// the service `dagster api grpc-health-check` sends, and the one the server marks
    /// `SERVING` once it listens.
    #[serde(default)]
    #[schemars(length(max = 1024))]
    pub service: String,
}

/// The service a Dagster code server registers with its gRPC health servicer, and that
/// `dagster api grpc-health-check` asks about (Dagster's `_grpc/server.py`,
/// `_grpc/client.py` `health_check_query`).
pub const DAGSTER_API_SERVICE: &str = "DagsterApi";

impl HealthCheck {
    /// The health check of a Dagster code server when the CodeLocation sets none: gRPC
    /// health on `port`, asked about the service `dagster api grpc-health-check` asks
    /// about.
    #[must_use]
    pub fn dagster_code_server(port: u16) -> Self {
        Self {
            grpc: Some(GrpcHealthCheck {
                service: DAGSTER_API_SERVICE.to_owned(),
            }),
            port: Some(port),
            // A code server opens its port once its definitions are loaded: seconds
            // for a small project (1 s, 2 s, ... 32 s: a minute in all).
            retries: 6,
            interval: DurationSpec::from_secs(1),
            ..Self::default()
        }
    }
}

impl Default for HealthCheck {
    fn default() -> Self {
        Self {
            path: default_health_path(),
            port: None,
            expected_status: default_expected_status(),
            expected_body: None,
            timeout: default_health_request_timeout(),
            retries: default_retries(),
            interval: default_retry_interval(),
            grpc: None,
        }
    }
}

fn default_health_path() -> String {
    "/".to_owned()
}

fn default_expected_status() -> u16 {
    200
}

fn default_health_request_timeout() -> DurationSpec {
    DurationSpec::from_secs(10)
}

fn default_retries() -> u32 {
    3
}

fn default_retry_interval() -> DurationSpec {
    DurationSpec::from_secs(2)
}

/// Observed state of a CodeLocation.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct CodeLocationStatus {
    /// `Ready`: the configuration is usable and CI answers.
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// The generation of the spec last acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// CI verdicts of this location's SHAs, received by webhook or polled (operator
    /// mode; standalone keeps them in its state file). The latest per SHA, bounded.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub verdicts: Vec<RecordedVerdict>,
}

/// A CI verdict for one SHA, as recorded on its CodeLocation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct RecordedVerdict {
    /// The SHA judged.
    pub sha: crate::api::Sha,
    /// The verdict.
    pub state: crate::api::release::CiState,
    /// Link to the CI run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Names of the failing checks.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failed_checks: Vec<String>,
    /// What CI said, in a few words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// When Vigie received it.
    #[schemars(with = "String")]
    pub at: jiff::Timestamp,
    /// How it came: a webhook delivery or a poll of the provider.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub via: Option<VerdictVia>,
}

/// How a verdict reached Vigie.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum VerdictVia {
    /// A webhook delivery (`/hooks/ci`, `/hooks/github`, `/hooks/gitlab`).
    Webhook,
    /// A poll of GitHub's or GitLab's API.
    Poll,
}
