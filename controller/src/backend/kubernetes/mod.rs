//! The Kubernetes backend: a Deployment (and a Service when ports are set) per
//! Release in the Environment's namespace, or an existing Deployment whose container
//! image is set to the SHA's image.
//!
//! The SHA a Deployment runs is the `vigie.dev/sha` annotation of its pod template.
//! A rollback applies the previous SHA's pod template again: the Deployment controller
//! finds the ReplicaSet it kept (`revisionHistoryLimit`) with the same template hash
//! and scales it back up, as `kubectl rollout undo` does. The rollout is judged from
//! the Deployment's status: `observedGeneration`, updated and available replicas, and
//! the `Progressing` condition's progress deadline. Everything created carries Vigie's
//! labels and, when the Release lives in the same namespace, an owner reference to it.
//!
//! The objects are built as data in [`objects`], a rollout is judged from a
//! Deployment's status in [`rollout`], hook Jobs are built and read in [`hooks`]; this
//! module only talks to the API.

pub mod hooks;
pub mod objects;
pub mod rollout;

use std::collections::BTreeMap;

use futures::FutureExt;
use k8s_openapi::api::{apps::v1::Deployment, batch::v1::Job, core::v1::Service};
use kube::{
    Api, Client,
    api::{DeleteParams, Patch, PatchParams, PostParams},
};

pub use self::{
    hooks::{hook_job, hook_job_name, hook_outcome, hook_output, stage},
    objects::{
        container_name, deployment, deployment_name, image, image_patch, labels, object_name,
        service,
    },
    rollout::judge,
};
use super::{Backend, BackendError, Probe, Result, Workload};
use crate::{
    api::{
        Sha,
        environment::Hooks,
        release::{ExistingDeployment, HealthState},
    },
    lifecycle::{BackendState, HookOutcome, HookRun, WorkloadObservation, WorkloadTarget},
};

/// Field manager of every server-side apply Vigie makes.
pub const FIELD_MANAGER: &str = "vigie";
/// Pod-template annotation naming the SHA a Deployment runs.
pub const SHA_ANNOTATION: &str = "vigie.dev/sha";

/// Drives Deployments in one namespace.
#[derive(Clone)]
pub struct KubernetesBackend {
    client: Client,
    namespace: String,
    /// A watch-fed cache of the Deployments Vigie labels; read before asking the API.
    store: Option<kube::runtime::reflector::Store<Deployment>>,
}

impl KubernetesBackend {
    /// A backend for `namespace`.
    #[must_use]
    pub fn new(client: Client, namespace: impl Into<String>) -> Self {
        Self {
            client,
            namespace: namespace.into(),
            store: None,
        }
    }

    /// Reads Deployments from `store` (fed by a watch) when it has them.
    #[must_use]
    pub fn with_store(mut self, store: kube::runtime::reflector::Store<Deployment>) -> Self {
        self.store = Some(store);
        self
    }

    /// The namespace workloads go to.
    #[must_use]
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    fn deployments(&self) -> Api<Deployment> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    fn services(&self) -> Api<Service> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    fn jobs(&self) -> Api<Job> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    /// Whether the namespace exists and can be read: the Environment's `Ready`.
    ///
    /// # Errors
    /// Why it cannot be used.
    pub async fn check(&self) -> Result<()> {
        let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(self.client.clone());
        match namespaces.get_opt(&self.namespace).await {
            Ok(Some(_)) => Ok(()),
            Ok(None) => Err(BackendError::Kubernetes(format!(
                "namespace {} does not exist",
                self.namespace
            ))),
            // Reading namespaces may not be granted: listing Deployments there is what
            // Vigie needs.
            Err(kube::Error::Api(s)) if s.code == 403 => self
                .deployments()
                .list(&kube::api::ListParams::default().limit(1))
                .await
                .map(|_| ())
                .map_err(api_error),
            Err(e) => Err(api_error(e)),
        }
    }

    /// Removes what Vigie created for the workload (its Deployment and Service, its
    /// hook Jobs). An existing Deployment named by the Release is left as it is.
    ///
    /// # Errors
    /// When the API refuses.
    async fn remove(&self, workload: &Workload) -> Result<()> {
        let dp = DeleteParams::background();
        if workload.deployment.is_none() {
            let name = object_name(workload);
            ignore_missing(self.deployments().delete(&name, &dp).await.map(|_| ()))?;
            ignore_missing(self.services().delete(&name, &dp).await.map(|_| ()))?;
        }
        let selector = format!("vigie.dev/release={}", workload.release);
        ignore_missing(
            self.jobs()
                .delete_collection(&dp, &kube::api::ListParams::default().labels(&selector))
                .await
                .map(|_| ()),
        )
    }

    /// Leaves the workload to run without its Release: drops the owner references, so
    /// the garbage collector does not remove it with the Release.
    ///
    /// # Errors
    /// When the API refuses.
    async fn disown(&self, workload: &Workload) -> Result<()> {
        if workload.deployment.is_some() {
            return Ok(());
        }
        let name = object_name(workload);
        let patch = Patch::Merge(serde_json::json!({ "metadata": { "ownerReferences": null } }));
        let params = PatchParams::default();
        ignore_missing(
            self.deployments()
                .patch(&name, &params, &patch)
                .await
                .map(|_| ()),
        )?;
        ignore_missing(
            self.services()
                .patch(&name, &params, &patch)
                .await
                .map(|_| ()),
        )
    }

    async fn apply_existing(
        &self,
        workload: &Workload,
        existing: &ExistingDeployment,
        image: &str,
        sha: &Sha,
    ) -> Result<()> {
        let current = self
            .deployments()
            .get_opt(&existing.name)
            .await
            .map_err(api_error)?
            .ok_or_else(|| {
                BackendError::Kubernetes(format!(
                    "Deployment {}/{} named by Release {} does not exist",
                    self.namespace, existing.name, workload.release
                ))
            })?;
        let container = container_name(&current, existing.container.as_deref())?;
        let mut patch = image_patch(&existing.name, &container, image, sha);
        // Labelled so the watch on Vigie's Deployments sees it.
        patch["metadata"]["labels"] = serde_json::json!({
            "vigie.dev/release": workload.release,
            "vigie.dev/release-namespace": workload.owner.as_ref().map(|o| o.namespace.as_str()),
        });
        self.deployments()
            .patch(
                &existing.name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&patch),
            )
            .await
            .map_err(api_error)?;
        Ok(())
    }
}

fn api_error(e: kube::Error) -> BackendError {
    match e {
        kube::Error::Api(s) => BackendError::Kubernetes(format!("{} ({})", s.message, s.code)),
        other => BackendError::Kubernetes(other.to_string()),
    }
}

fn ignore_missing(r: std::result::Result<(), kube::Error>) -> Result<()> {
    match r {
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        other => other.map_err(api_error),
    }
}

impl Backend for KubernetesBackend {
    async fn delete(&self, workload: &Workload) -> Result<()> {
        self.remove(workload).await
    }

    async fn orphan(&self, workload: &Workload) -> Result<()> {
        self.disown(workload).await
    }

    async fn observe(&self, workload: &Workload, _probe: Probe) -> WorkloadObservation {
        let name = deployment_name(workload);
        let cached = self.store.as_ref().and_then(|s| {
            s.get(&kube::runtime::reflector::ObjectRef::new(&name).within(&self.namespace))
        });
        // A ready cache that lacks a Deployment Vigie creates is an answer; an existing
        // Deployment may not carry Vigie's label yet, so it is asked for.
        let trusted = workload.deployment.is_none()
            && self.store.as_ref().is_some_and(|s| {
                s.wait_until_ready()
                    .now_or_never()
                    .is_some_and(|r| r.is_ok())
            });
        let fetched = match cached {
            Some(d) => Ok(Some((*d).clone())),
            None if trusted => Ok(None),
            None => self.deployments().get_opt(&name).await,
        };
        match fetched {
            Ok(Some(d)) => {
                let (sha, health, reason) = judge(&d);
                WorkloadObservation {
                    backend: BackendState::Reachable,
                    sha,
                    health,
                    reason,
                }
            }
            Ok(None) => WorkloadObservation {
                backend: BackendState::Reachable,
                sha: None,
                health: HealthState::Unknown,
                reason: workload
                    .deployment
                    .as_ref()
                    .map(|d| format!("Deployment {}/{} does not exist", self.namespace, d.name)),
            },
            Err(e) => WorkloadObservation {
                backend: BackendState::Unreachable {
                    reason: api_error(e).to_string(),
                },
                sha: None,
                health: HealthState::Unknown,
                reason: None,
            },
        }
    }

    async fn apply(&self, workload: &Workload, target: &WorkloadTarget) -> Result<()> {
        let image = image(workload, &target.sha)?;
        if let Some(existing) = &workload.deployment {
            return self
                .apply_existing(workload, existing, &image, &target.sha)
                .await;
        }
        let params = PatchParams::apply(FIELD_MANAGER).force();
        let name = object_name(workload);
        let deadline = workload.health_check.as_ref().map_or(600, |h| {
            h.interval.get().as_secs() * u64::from(h.retries.max(1)) + 600
        });
        let d = deployment(
            workload,
            &self.namespace,
            &target.sha,
            i32::try_from(deadline).unwrap_or(600),
        )?;
        self.deployments()
            .patch(&name, &params, &Patch::Apply(&d))
            .await
            .map_err(api_error)?;
        match service(workload, &self.namespace) {
            Some(s) => {
                self.services()
                    .patch(&name, &params, &Patch::Apply(&s))
                    .await
                    .map_err(api_error)?;
            }
            None => ignore_missing(
                self.services()
                    .delete(&name, &DeleteParams::default())
                    .await
                    .map(|_| ()),
            )?,
        }
        Ok(())
    }

    async fn run_hooks(
        &self,
        workload: &Workload,
        runs: &[HookRun],
        hooks: &Hooks,
    ) -> Result<BTreeMap<String, HookOutcome>> {
        let mut out = BTreeMap::new();
        for run in runs {
            let Some(hook) = hooks.find(&run.name) else {
                continue;
            };
            if !hook.mounts.is_empty() {
                out.insert(
                    run.name.clone(),
                    HookOutcome::Failed {
                        reason: format!(
                            "hook {}: host mounts are for Docker backends; on Kubernetes give the Job's image what it needs",
                            hook.name
                        ),
                    },
                );
                continue;
            }
            let name = hook_job_name(workload, run);
            let job = if let Some(j) = self.jobs().get_opt(&name).await.map_err(api_error)? {
                j
            } else {
                let job = hook_job(workload, &self.namespace, hook, run);
                match self.jobs().create(&PostParams::default(), &job).await {
                    Ok(j) => j,
                    Err(kube::Error::Api(s)) if s.code == 409 => {
                        self.jobs().get(&name).await.map_err(api_error)?
                    }
                    Err(e) => return Err(api_error(e)),
                }
            };
            out.insert(run.name.clone(), hook_outcome(workload, &job, hook, run));
        }
        Ok(out)
    }

    async fn prune(
        &self,
        _instance: &str,
        _environment: &str,
        _keep: &[String],
    ) -> Result<Vec<String>> {
        // Owner references and the Release finalizer remove what a deleted Release
        // owned; nothing is left to sweep.
        Ok(Vec::new())
    }
}

/// The workload and SHAs the tests of the submodules build their objects from.
#[cfg(test)]
mod fixtures {
    use crate::{
        api::{
            Sha,
            code_location::{Artifact, ContainerSettings, HealthCheck, ImageArtifact},
            common::{DurationSpec, EnvVar, PortMapping, Protocol},
        },
        backend::{Owner, Workload},
    };

    pub(super) fn sha(c: char) -> Sha {
        std::iter::repeat_n(c, 40)
            .collect::<String>()
            .parse()
            .unwrap()
    }

    pub(super) fn workload() -> Workload {
        Workload {
            environment: "preprod".into(),
            code_location: "web".into(),
            release: "web-preprod".into(),
            repo_url: "https://git.example/web.git".into(),
            artifact: Artifact::Image(ImageArtifact {
                template: "registry.example/web:{sha}".into(),
            }),
            container: ContainerSettings {
                ports: vec![PortMapping {
                    container_port: 8080,
                    host_port: Some(80),
                    host_ip: None,
                    protocol: Protocol::Tcp,
                }],
                env: vec![EnvVar {
                    name: "MODE".into(),
                    value: "preprod".into(),
                }],
                replicas: 3,
                ..ContainerSettings::default()
            },
            health_check: Some(HealthCheck {
                path: "/healthz".into(),
                port: None,
                expected_status: 200,
                expected_body: None,
                grpc: None,
                timeout: DurationSpec::from_secs(2),
                retries: 3,
                interval: DurationSpec::from_secs(5),
            }),
            project: "vigie-preprod".into(),
            instance: "operator".into(),
            deployment: None,
            owner: Some(Owner {
                namespace: "apps".into(),
                uid: "u-1".into(),
            }),
            dagster: None,
        }
    }
}
