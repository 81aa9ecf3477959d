//! The Backend port: drives a Release's workload to a SHA and reports what runs.
//! Implementations: Docker through bollard ([`docker`]: containers, compose services,
//! git checkouts) and Kubernetes Deployments ([`kubernetes`]); [`AnyBackend`] picks one
//! per Environment. The pipeline ([`crate::reconcile`]) is generic over it; the
//! lifecycle never sees it: it receives a [`WorkloadObservation`] and returns a
//! [`WorkloadTarget`].

pub mod docker;
pub mod grpc_health;
pub mod health;
pub mod kubernetes;

use std::{collections::BTreeMap, future::Future};

use crate::{
    api::{
        Sha,
        code_location::{Artifact, CodeLocationSpec, ContainerSettings, HealthCheck},
        common::EnvVar,
        environment::{EnvironmentSpec, Hooks},
        release::ReleaseSpec,
    },
    lifecycle::{HookOutcome, HookRun, WorkloadObservation, WorkloadTarget},
};

/// Everything a backend needs to know about one Release's workload, resolved from
/// the Release, its CodeLocation and its Environment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Workload {
    /// Environment name.
    pub environment: String,
    /// CodeLocation name.
    pub code_location: String,
    /// Release name.
    pub release: String,
    /// The repository's clone URL.
    pub repo_url: String,
    /// How a SHA becomes something that runs.
    pub artifact: Artifact,
    /// Container settings with the Release's overrides applied.
    pub container: ContainerSettings,
    /// HTTP or gRPC health check.
    pub health_check: Option<HealthCheck>,
    /// Compose project label of the containers.
    pub project: String,
    /// Which Vigie owns the containers (`vigie.dev/instance`): another Vigie on the same
    /// host, even with the same environment names, never touches them.
    pub instance: String,
    /// Kubernetes: an existing Deployment to drive instead of creating one.
    pub deployment: Option<crate::api::release::ExistingDeployment>,
    /// Kubernetes: the Release that owns what is created (namespace, uid), for owner
    /// references.
    pub owner: Option<Owner>,
    /// A Dagster code server: the name it is listed under, its port, its network.
    pub dagster: Option<CodeServer>,
}

/// A Dagster code server, resolved with the workload: what its container and its
/// workspace entry need.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CodeServer {
    /// The name it is listed under.
    pub location: String,
    /// The port it listens on in the container.
    pub port: u16,
    /// Docker: the network it joins, under `location` as alias.
    pub network: Option<String>,
}

/// The Release owning a workload, as an owner reference needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Owner {
    /// The Release's namespace.
    pub namespace: String,
    /// The Release's uid.
    pub uid: String,
}

impl Workload {
    /// Resolves a Release against its CodeLocation and Environment: the Release's ports
    /// replace the location's when given; its env vars are added or replace by name.
    #[must_use]
    pub fn resolve(
        instance: &str,
        release_name: &str,
        release: &ReleaseSpec,
        location: &CodeLocationSpec,
        environment: &EnvironmentSpec,
    ) -> Self {
        let mut container = location.container.clone();
        if !release.overrides.ports.is_empty() {
            container.ports.clone_from(&release.overrides.ports);
        }
        for var in &release.overrides.env {
            match container.env.iter_mut().find(|e| e.name == var.name) {
                Some(existing) => existing.value.clone_from(&var.value),
                None => container.env.push(EnvVar {
                    name: var.name.clone(),
                    value: var.value.clone(),
                }),
            }
        }
        let dagster = location.dagster.as_ref().map(|d| {
            // The code server's command is Vigie's (validation refuses another one).
            container.command = d.command(&release.code_location);
            container.args.clear();
            CodeServer {
                location: d.name(&release.code_location).to_owned(),
                port: d.port,
                network: environment.dagster.as_ref().and_then(|i| i.network.clone()),
            }
        });
        let project = match &environment.backend {
            crate::api::environment::Backend::Docker(d) => d.compose_project.clone(),
            crate::api::environment::Backend::Kubernetes(_) => None,
        }
        .unwrap_or_else(|| format!("vigie-{}", release.environment));
        Self {
            environment: release.environment.clone(),
            code_location: release.code_location.clone(),
            release: release_name.to_owned(),
            repo_url: location.repo.url.clone(),
            artifact: location.artifact.clone(),
            container,
            health_check: location.health_check.clone().or_else(|| {
                location
                    .dagster
                    .as_ref()
                    .map(|d| HealthCheck::dagster_code_server(d.port))
            }),
            project,
            instance: instance.to_owned(),
            deployment: release.deployment.clone(),
            owner: None,
            dagster,
        }
    }
}

/// How deep an observation goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Probe {
    /// Container state only (steady phases: cheap, every tick).
    State,
    /// Container state and the HTTP health check with its retries (a deploy or
    /// rollback in flight, or a monitoring round).
    Full,
}

/// Why a backend could not act.
#[derive(Clone, Debug, thiserror::Error)]
pub enum BackendError {
    /// The engine did not answer or refused the request.
    #[error("failed to reach the Docker engine: {0}")]
    Engine(String),
    /// The TLS Secret of a Docker host cannot be used (the message names it).
    #[error("{reason}")]
    TlsSecret {
        /// What is wrong.
        reason: String,
        /// The kind of fault (a missing Secret waits for a person, an API that does
        /// not answer is retried).
        category: crate::error::Category,
    },
    /// A container name Vigie needs is held by a container it does not drive (the
    /// message says which and what to do).
    #[error("{0}")]
    NameTaken(String),
    /// The Kubernetes API refused or did not answer.
    #[error("Kubernetes API: {0}")]
    Kubernetes(String),
    /// The workload asks for something this backend cannot do.
    #[error("{0}")]
    Unsupported(String),
    /// The image for the SHA is neither present nor pullable.
    #[error("failed to get image {image}: {reason}")]
    Image {
        /// The image reference.
        image: String,
        /// Why.
        reason: String,
    },
    /// The compose file could not be used.
    #[error("failed to use compose file {file}: {reason}")]
    Compose {
        /// The file.
        file: String,
        /// Why.
        reason: String,
    },
    /// The working tree could not be checked out at the SHA.
    #[error("failed to check out {sha} in {path}: {reason}")]
    Checkout {
        /// The SHA.
        sha: String,
        /// The working tree.
        path: String,
        /// Why.
        reason: String,
    },
}

impl BackendError {
    /// The kind of fault.
    #[must_use]
    pub fn category(&self) -> crate::error::Category {
        use crate::error::Category;
        match self {
            Self::Engine(_) | Self::NameTaken(_) => Category::Engine,
            Self::Kubernetes(_) => Category::Transient,
            Self::Unsupported(_) | Self::Compose { .. } => Category::InvalidSpec,
            Self::TlsSecret { category, .. } => *category,
            Self::Image { .. } => Category::Artifact,
            Self::Checkout { .. } => Category::Forge,
        }
    }

    /// Whether the SHA's artifact (its image) is not available: waiting for it counts
    /// against the verification timeout only.
    #[must_use]
    pub fn is_missing_artifact(&self) -> bool {
        matches!(self, Self::Image { .. })
    }
}

/// Result alias of this module.
pub type Result<T, E = BackendError> = std::result::Result<T, E>;

/// Drives workloads to a SHA and reports what runs.
pub trait Backend: Send + Sync {
    /// What runs for the workload, and how healthy it is. Never fails: an engine that
    /// does not answer is reported as [`crate::lifecycle::BackendState::Unreachable`].
    fn observe(
        &self,
        workload: &Workload,
        probe: Probe,
    ) -> impl Future<Output = WorkloadObservation> + Send;

    /// Makes the workload run `target.sha`, keeping `target.keep` ready for a fast
    /// rollback and removing every other container of the workload. Idempotent.
    fn apply(
        &self,
        workload: &Workload,
        target: &WorkloadTarget,
    ) -> impl Future<Output = Result<()>> + Send;

    /// Starts the hook runs that are not started yet (one per hook and SHA) and
    /// reports the outcome of each.
    fn run_hooks(
        &self,
        workload: &Workload,
        runs: &[HookRun],
        hooks: &Hooks,
    ) -> impl Future<Output = Result<BTreeMap<String, HookOutcome>>> + Send;

    /// Removes what runs for the workload: its Release was deleted. Idempotent.
    fn delete(&self, workload: &Workload) -> impl Future<Output = Result<()>> + Send;

    /// Leaves what runs for the workload running without its Release (deleted with
    /// `vigie.dev/orphan: "true"`): nothing that would remove it with the Release stays.
    fn orphan(&self, workload: &Workload) -> impl Future<Output = Result<()>> + Send;

    /// Removes every container of `environment` labelled as this instance's whose code
    /// location is not in `keep`.
    fn prune(
        &self,
        instance: &str,
        environment: &str,
        keep: &[String],
    ) -> impl Future<Output = Result<Vec<String>>> + Send;
}

/// The `{sha}` and `{shortSha}` substitutions of templates.
#[must_use]
pub fn substitute(template: &str, sha: &Sha) -> String {
    template
        .replace("{sha}", sha.as_str())
        .replace("{shortSha}", sha.short())
}

/// A Docker or a Kubernetes backend, chosen by the Environment (the operator drives both).
#[derive(Clone)]
pub enum AnyBackend {
    /// A Docker engine.
    Docker(docker::DockerBackend),
    /// A Kubernetes namespace.
    Kubernetes(kubernetes::KubernetesBackend),
}

impl Backend for AnyBackend {
    async fn observe(&self, workload: &Workload, probe: Probe) -> WorkloadObservation {
        match self {
            Self::Docker(b) => b.observe(workload, probe).await,
            Self::Kubernetes(b) => b.observe(workload, probe).await,
        }
    }

    async fn apply(&self, workload: &Workload, target: &WorkloadTarget) -> Result<()> {
        match self {
            Self::Docker(b) => b.apply(workload, target).await,
            Self::Kubernetes(b) => b.apply(workload, target).await,
        }
    }

    async fn run_hooks(
        &self,
        workload: &Workload,
        runs: &[HookRun],
        hooks: &Hooks,
    ) -> Result<BTreeMap<String, HookOutcome>> {
        match self {
            Self::Docker(b) => b.run_hooks(workload, runs, hooks).await,
            Self::Kubernetes(b) => b.run_hooks(workload, runs, hooks).await,
        }
    }

    async fn delete(&self, workload: &Workload) -> Result<()> {
        match self {
            Self::Docker(b) => b.delete(workload).await,
            Self::Kubernetes(b) => Backend::delete(b, workload).await,
        }
    }

    async fn orphan(&self, workload: &Workload) -> Result<()> {
        match self {
            Self::Docker(b) => b.orphan(workload).await,
            Self::Kubernetes(b) => Backend::orphan(b, workload).await,
        }
    }

    async fn prune(
        &self,
        instance: &str,
        environment: &str,
        keep: &[String],
    ) -> Result<Vec<String>> {
        match self {
            Self::Docker(b) => b.prune(instance, environment, keep).await,
            Self::Kubernetes(b) => b.prune(instance, environment, keep).await,
        }
    }
}
