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

use std::collections::BTreeMap;

use futures::FutureExt;
use k8s_openapi::{
    api::{
        apps::v1::{Deployment, DeploymentSpec},
        batch::v1::{Job, JobSpec},
        core::v1::{
            Container, ContainerPort, EnvVar as KubeEnvVar, HTTPGetAction, PodSpec,
            PodTemplateSpec, Probe as KubeProbe, Service, ServicePort, ServiceSpec,
        },
    },
    apimachinery::pkg::{
        apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference},
        util::intstr::IntOrString,
    },
};
use kube::{
    Api, Client,
    api::{DeleteParams, Patch, PatchParams, PostParams},
};

use super::{Backend, BackendError, Probe, Result, Workload, substitute};
use crate::{
    api::{
        Sha,
        code_location::Artifact,
        common::Protocol,
        environment::{Hook, Hooks},
        release::{ExistingDeployment, HealthState},
    },
    lifecycle::{BackendState, HookOutcome, HookRun, WorkloadObservation, WorkloadTarget},
};

/// Field manager of every server-side apply Vigie makes.
pub const FIELD_MANAGER: &str = "vigie";
/// Pod-template annotation naming the SHA a Deployment runs.
pub const SHA_ANNOTATION: &str = "vigie.dev/sha";
/// The container Vigie creates in its Deployments.
const CONTAINER: &str = "app";

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
    pub async fn delete(&self, workload: &Workload) -> Result<()> {
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
    pub async fn orphan(&self, workload: &Workload) -> Result<()> {
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
        let container = container_name(&current, existing.container.as_deref())
            .map_err(BackendError::Kubernetes)?;
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

/// Name of the Deployment and Service Vigie creates: the Release's name.
#[must_use]
pub fn object_name(workload: &Workload) -> String {
    workload.release.clone()
}

/// The Deployment a workload's status is read from.
#[must_use]
pub fn deployment_name(workload: &Workload) -> String {
    workload
        .deployment
        .as_ref()
        .map_or_else(|| object_name(workload), |d| d.name.clone())
}

/// Labels on everything Vigie creates for a workload.
#[must_use]
pub fn labels(workload: &Workload) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/managed-by".into(), "vigie".into()),
        (
            "app.kubernetes.io/name".into(),
            workload.code_location.clone(),
        ),
        ("vigie.dev/release".into(), workload.release.clone()),
        ("vigie.dev/environment".into(), workload.environment.clone()),
        ("vigie.dev/location".into(), workload.code_location.clone()),
    ])
}

/// The pod selector (immutable once created): the Release and environment.
fn selector(workload: &Workload) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("vigie.dev/release".into(), workload.release.clone()),
        ("vigie.dev/environment".into(), workload.environment.clone()),
    ])
}

fn owner_references(workload: &Workload, namespace: &str) -> Option<Vec<OwnerReference>> {
    let owner = workload
        .owner
        .as_ref()
        .filter(|o| o.namespace == namespace)?;
    Some(vec![OwnerReference {
        api_version: "vigie.dev/v1alpha1".into(),
        kind: "Release".into(),
        name: workload.release.clone(),
        uid: owner.uid.clone(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }])
}

/// The image a SHA runs.
///
/// # Errors
/// For artifacts other than images: compose files and checkouts are Docker's.
pub fn image(workload: &Workload, sha: &Sha) -> Result<String> {
    match &workload.artifact {
        Artifact::Image(i) => Ok(substitute(&i.template, sha)),
        Artifact::Compose(_) => Err(BackendError::Unsupported(
            "a compose artifact runs on Docker backends only; use an image artifact".into(),
        )),
        Artifact::GitCheckout(_) => Err(BackendError::Unsupported(
            "a gitCheckout artifact runs on Docker backends only; use an image artifact".into(),
        )),
    }
}

/// The Deployment Vigie applies for a workload at a SHA.
///
/// # Errors
/// When the artifact is not an image.
pub fn deployment(
    workload: &Workload,
    namespace: &str,
    sha: &Sha,
    progress_deadline_secs: i32,
) -> Result<Deployment> {
    let c = &workload.container;
    let mut template_labels = labels(workload);
    template_labels.extend(selector(workload));
    let readiness = workload.health_check.as_ref().map(|h| KubeProbe {
        http_get: Some(HTTPGetAction {
            path: Some(h.path.clone()),
            port: IntOrString::Int(i32::from(
                h.port
                    .or_else(|| c.ports.first().map(|p| p.container_port))
                    .unwrap_or(80),
            )),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(i32::try_from(h.interval.get().as_secs().max(1)).unwrap_or(10)),
        timeout_seconds: Some(i32::try_from(h.timeout.get().as_secs().max(1)).unwrap_or(10)),
        failure_threshold: Some(i32::try_from(h.retries.max(1)).unwrap_or(3)),
        ..KubeProbe::default()
    });
    let container = Container {
        name: CONTAINER.into(),
        image: Some(image(workload, sha)?),
        command: (!c.command.is_empty()).then(|| c.command.clone()),
        args: (!c.args.is_empty()).then(|| c.args.clone()),
        working_dir: c.working_dir.clone(),
        env: (!c.env.is_empty()).then(|| {
            c.env
                .iter()
                .map(|e| KubeEnvVar {
                    name: e.name.clone(),
                    value: Some(e.value.clone()),
                    value_from: None,
                })
                .collect()
        }),
        ports: (!c.ports.is_empty()).then(|| {
            c.ports
                .iter()
                .map(|p| ContainerPort {
                    container_port: i32::from(p.container_port),
                    protocol: Some(protocol(p.protocol)),
                    ..ContainerPort::default()
                })
                .collect()
        }),
        readiness_probe: readiness,
        ..Container::default()
    };
    let mut object_labels = labels(workload);
    if let Some(owner) = &workload.owner {
        object_labels.insert(
            "vigie.dev/release-namespace".into(),
            owner.namespace.clone(),
        );
    }
    Ok(Deployment {
        metadata: ObjectMeta {
            name: Some(object_name(workload)),
            namespace: Some(namespace.to_owned()),
            labels: Some(object_labels),
            owner_references: owner_references(workload, namespace),
            ..ObjectMeta::default()
        },
        spec: Some(DeploymentSpec {
            replicas: Some(i32::try_from(c.replicas).unwrap_or(i32::MAX)),
            selector: LabelSelector {
                match_labels: Some(selector(workload)),
                match_expressions: None,
            },
            revision_history_limit: Some(10),
            progress_deadline_seconds: Some(progress_deadline_secs.max(1)),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(template_labels),
                    annotations: Some(BTreeMap::from([(
                        SHA_ANNOTATION.to_owned(),
                        sha.as_str().to_owned(),
                    )])),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![container],
                    ..PodSpec::default()
                }),
            },
            ..DeploymentSpec::default()
        }),
        status: None,
    })
}

fn protocol(p: Protocol) -> String {
    match p {
        Protocol::Tcp => "TCP".into(),
        Protocol::Udp => "UDP".into(),
    }
}

/// The Service in front of a workload's pods, when it has ports.
#[must_use]
pub fn service(workload: &Workload, namespace: &str) -> Option<Service> {
    let ports = &workload.container.ports;
    if ports.is_empty() {
        return None;
    }
    Some(Service {
        metadata: ObjectMeta {
            name: Some(object_name(workload)),
            namespace: Some(namespace.to_owned()),
            labels: Some(labels(workload)),
            owner_references: owner_references(workload, namespace),
            ..ObjectMeta::default()
        },
        spec: Some(ServiceSpec {
            selector: Some(selector(workload)),
            ports: Some(
                ports
                    .iter()
                    .map(|p| ServicePort {
                        name: Some(format!(
                            "{}-{}",
                            protocol(p.protocol).to_lowercase(),
                            p.container_port
                        )),
                        port: i32::from(p.host_port.unwrap_or(p.container_port)),
                        target_port: Some(IntOrString::Int(i32::from(p.container_port))),
                        protocol: Some(protocol(p.protocol)),
                        ..ServicePort::default()
                    })
                    .collect(),
            ),
            ..ServiceSpec::default()
        }),
        status: None,
    })
}

/// The server-side-apply patch that sets one container's image in an existing
/// Deployment (and the SHA annotation), owning only those fields.
#[must_use]
pub fn image_patch(name: &str, container: &str, image: &str, sha: &Sha) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": { "name": name },
        "spec": { "template": {
            "metadata": { "annotations": { SHA_ANNOTATION: sha.as_str() } },
            "spec": { "containers": [ { "name": container, "image": image } ] }
        } }
    })
}

/// The container of an existing Deployment whose image Vigie sets.
///
/// # Errors
/// When the named container does not exist, or the Deployment has none.
pub fn container_name(
    deployment: &Deployment,
    wanted: Option<&str>,
) -> std::result::Result<String, String> {
    let containers = deployment
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .map(|s| s.containers.as_slice())
        .unwrap_or_default();
    match wanted {
        Some(w) if containers.iter().any(|c| c.name == w) => Ok(w.to_owned()),
        Some(w) => Err(format!(
            "Deployment {} has no container {w:?} (it has {})",
            deployment.metadata.name.as_deref().unwrap_or("?"),
            containers
                .iter()
                .map(|c| c.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )),
        None => containers.first().map(|c| c.name.clone()).ok_or_else(|| {
            format!(
                "Deployment {} has no container",
                deployment.metadata.name.as_deref().unwrap_or("?")
            )
        }),
    }
}

/// What a Deployment runs and how its rollout stands: the SHA of its pod template, and
/// Healthy once the controller has seen the latest spec and every replica is updated
/// and available with no old replica left; Unhealthy when the progress deadline passed.
#[must_use]
pub fn judge(deployment: &Deployment) -> (Option<Sha>, HealthState, Option<String>) {
    let spec = deployment.spec.as_ref();
    let sha = spec
        .and_then(|s| s.template.metadata.as_ref())
        .and_then(|m| m.annotations.as_ref())
        .and_then(|a| a.get(SHA_ANNOTATION))
        .and_then(|s| s.parse::<Sha>().ok());
    let Some(status) = deployment.status.as_ref() else {
        return (
            sha,
            HealthState::Progressing,
            Some("the Deployment has no status yet".into()),
        );
    };
    let generation = deployment.metadata.generation.unwrap_or(0);
    if status.observed_generation.unwrap_or(0) < generation {
        return (
            sha,
            HealthState::Progressing,
            Some("the Deployment controller has not seen the latest spec yet".into()),
        );
    }
    let deadline = status.conditions.iter().flatten().find(|c| {
        c.type_ == "Progressing"
            && c.status == "False"
            && c.reason.as_deref() == Some("ProgressDeadlineExceeded")
    });
    if let Some(c) = deadline {
        return (
            sha,
            HealthState::Unhealthy,
            Some(
                c.message
                    .clone()
                    .unwrap_or_else(|| "the rollout exceeded its progress deadline".into()),
            ),
        );
    }
    let want = spec.and_then(|s| s.replicas).unwrap_or(1);
    let updated = status.updated_replicas.unwrap_or(0);
    let available = status.available_replicas.unwrap_or(0);
    let total = status.replicas.unwrap_or(0);
    if updated >= want && available >= want && total <= want {
        (sha, HealthState::Healthy, None)
    } else {
        (
            sha,
            HealthState::Progressing,
            Some(format!(
                "{updated} of {want} replicas updated, {available} available, {} old",
                (total - updated).max(0)
            )),
        )
    }
}

/// `preDeploy` or `postDeploy`, for the hook's `VIGIE_HOOK_STAGE`.
#[must_use]
pub const fn stage(run: &HookRun) -> &'static str {
    if run.after_deploy {
        "postDeploy"
    } else {
        "preDeploy"
    }
}

/// The Job that runs a hook once for a rollout.
#[must_use]
pub fn hook_job(workload: &Workload, namespace: &str, hook: &Hook, run: &HookRun) -> Job {
    let previous = run.previous.as_ref().map_or("", Sha::as_str);
    let output = hook_output(workload, hook, run);
    let mut env: Vec<KubeEnvVar> = hook
        .env
        .iter()
        .map(|e| KubeEnvVar {
            name: e.name.clone(),
            value: Some(e.value.clone()),
            value_from: None,
        })
        .collect();
    for (k, v) in [
        ("VIGIE_SHA", run.sha.as_str()),
        ("VIGIE_PREVIOUS_SHA", previous),
        ("VIGIE_ENVIRONMENT", workload.environment.as_str()),
        ("VIGIE_CODE_LOCATION", workload.code_location.as_str()),
        ("VIGIE_HOOK_STAGE", stage(run)),
    ]
    .into_iter()
    .chain(output.as_deref().map(|o| ("VIGIE_OUTPUT", o)))
    {
        env.push(KubeEnvVar {
            name: k.into(),
            value: Some(v.into()),
            value_from: None,
        });
    }
    let mut job_labels = labels(workload);
    job_labels.insert("vigie.dev/hook".into(), hook.name.clone());
    Job {
        metadata: ObjectMeta {
            name: Some(hook_job_name(workload, run)),
            namespace: Some(namespace.to_owned()),
            labels: Some(job_labels.clone()),
            owner_references: owner_references(workload, namespace),
            ..ObjectMeta::default()
        },
        spec: Some(JobSpec {
            backoff_limit: Some(0),
            active_deadline_seconds: Some(
                i64::try_from(hook.timeout.get().as_secs().max(1)).unwrap_or(i64::MAX),
            ),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(job_labels),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    restart_policy: Some("Never".into()),
                    containers: vec![Container {
                        name: "hook".into(),
                        image: Some(hook.image.clone()),
                        command: (!hook.command.is_empty()).then(|| hook.command.clone()),
                        env: Some(env),
                        ..Container::default()
                    }],
                    ..PodSpec::default()
                }),
            },
            ..JobSpec::default()
        }),
        status: None,
    }
}

/// One Job per hook, SHA and rollout attempt.
#[must_use]
pub fn hook_job_name(workload: &Workload, run: &HookRun) -> String {
    use sha2::Digest;
    let attempt = hex::encode(
        &sha2::Sha256::digest(
            format!(
                "{}/{}/{}/{}",
                workload.release,
                run.name,
                run.sha,
                run.attempt.as_second()
            )
            .as_bytes(),
        )[..4],
    );
    let mut base = format!("{}-{}", workload.release, run.name);
    base.truncate(63 - 1 - 7 - 1 - 8);
    format!(
        "{}-{}-{attempt}",
        base.trim_end_matches('-'),
        run.sha.short()
    )
}

/// Where a hook run's output goes: `output` with `{sha}`, `{shortSha}`,
/// `{environment}` and `{time}` (the rollout's start, so that a run always names the
/// same place) filled in.
#[must_use]
pub fn hook_output(workload: &Workload, hook: &Hook, run: &HookRun) -> Option<String> {
    hook.output.as_ref().map(|o| {
        substitute(o, &run.sha)
            .replace("{environment}", &workload.environment)
            .replace(
                "{time}",
                &run.attempt.strftime("%Y%m%dT%H%M%SZ").to_string(),
            )
    })
}

/// The outcome of a hook's Job.
#[must_use]
pub fn hook_outcome(workload: &Workload, job: &Job, hook: &Hook, run: &HookRun) -> HookOutcome {
    let Some(status) = job.status.as_ref() else {
        return HookOutcome::Running;
    };
    if status.succeeded.unwrap_or(0) > 0 {
        return HookOutcome::Succeeded {
            output: hook_output(workload, hook, run),
        };
    }
    let failed = status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "Failed" && c.status == "True");
    if let Some(c) = failed {
        return HookOutcome::Failed {
            reason: format!(
                "hook {} failed: {}{}",
                hook.name,
                c.reason.as_deref().unwrap_or("Failed"),
                c.message
                    .as_deref()
                    .map(|m| format!(": {m}"))
                    .unwrap_or_default()
            ),
        };
    }
    HookOutcome::Running
}

impl Backend for KubernetesBackend {
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

#[cfg(test)]
mod tests {
    use k8s_openapi::api::{
        apps::v1::{DeploymentCondition, DeploymentStatus},
        batch::v1::{JobCondition, JobStatus},
    };

    use super::*;
    use crate::api::{
        code_location::{ContainerSettings, HealthCheck, ImageArtifact},
        common::{DurationSpec, EnvVar, PortMapping},
    };

    fn sha(c: char) -> Sha {
        std::iter::repeat_n(c, 40)
            .collect::<String>()
            .parse()
            .unwrap()
    }

    fn workload() -> Workload {
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
                timeout: DurationSpec::from_secs(2),
                retries: 3,
                interval: DurationSpec::from_secs(5),
            }),
            project: "vigie-preprod".into(),
            instance: "operator".into(),
            deployment: None,
            owner: Some(super::super::Owner {
                namespace: "apps".into(),
                uid: "u-1".into(),
            }),
        }
    }

    #[test]
    fn the_deployment_runs_the_shas_image_with_the_sha_on_its_template() {
        let d = deployment(&workload(), "apps", &sha('a'), 600).unwrap();
        let spec = d.spec.unwrap();
        assert_eq!(spec.replicas, Some(3));
        assert_eq!(spec.progress_deadline_seconds, Some(600));
        let template = spec.template;
        let meta = template.metadata.unwrap();
        assert_eq!(meta.annotations.unwrap()[SHA_ANNOTATION], sha('a').as_str());
        let labels = meta.labels.unwrap();
        for (k, v) in spec.selector.match_labels.unwrap() {
            assert_eq!(labels[&k], v, "the selector selects the template");
        }
        let c = &template.spec.unwrap().containers[0];
        assert_eq!(
            c.image.as_deref(),
            Some(format!("registry.example/web:{}", sha('a')).as_str())
        );
        assert_eq!(c.ports.as_ref().unwrap()[0].container_port, 8080);
        assert_eq!(c.env.as_ref().unwrap()[0].value.as_deref(), Some("preprod"));
        let probe = c
            .readiness_probe
            .as_ref()
            .unwrap()
            .http_get
            .as_ref()
            .unwrap();
        assert_eq!(
            (probe.path.as_deref(), &probe.port),
            (Some("/healthz"), &IntOrString::Int(8080))
        );
        let owner = &d.metadata.owner_references.unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.uid.as_str(), owner.controller),
            ("Release", "u-1", Some(true))
        );
        // The same inputs give the same object: re-applying changes nothing.
        assert_eq!(
            deployment(&workload(), "apps", &sha('a'), 600)
                .unwrap()
                .spec,
            deployment(&workload(), "apps", &sha('a'), 600)
                .unwrap()
                .spec
        );
    }

    #[test]
    fn no_owner_reference_across_namespaces() {
        let d = deployment(&workload(), "elsewhere", &sha('a'), 600).unwrap();
        assert!(d.metadata.owner_references.is_none());
        assert!(
            service(&workload(), "elsewhere")
                .unwrap()
                .metadata
                .owner_references
                .is_none()
        );
    }

    #[test]
    fn the_service_exposes_the_host_port_and_targets_the_container_port() {
        let s = service(&workload(), "apps").unwrap().spec.unwrap();
        let p = &s.ports.unwrap()[0];
        assert_eq!(
            (p.port, &p.target_port),
            (80, &Some(IntOrString::Int(8080)))
        );
        let mut w = workload();
        w.container.ports.clear();
        assert!(service(&w, "apps").is_none());
    }

    #[test]
    fn only_images_run_on_kubernetes() {
        let mut w = workload();
        w.artifact = Artifact::Compose(crate::api::code_location::ComposeArtifact {
            file: "/srv/compose.yaml".into(),
            service: "web".into(),
            tag: "{sha}".into(),
        });
        let e = deployment(&w, "apps", &sha('a'), 600)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("compose artifact runs on Docker backends only"),
            "{e}"
        );
    }

    fn judged(
        generation: i64,
        status: DeploymentStatus,
    ) -> (Option<Sha>, HealthState, Option<String>) {
        let mut d = deployment(&workload(), "apps", &sha('a'), 600).unwrap();
        d.metadata.generation = Some(generation);
        d.status = Some(status);
        judge(&d)
    }

    #[test]
    fn a_rollout_is_judged_from_the_deployment_status() {
        let done = DeploymentStatus {
            observed_generation: Some(2),
            replicas: Some(3),
            updated_replicas: Some(3),
            available_replicas: Some(3),
            ..DeploymentStatus::default()
        };
        assert_eq!(
            judged(2, done.clone()),
            (Some(sha('a')), HealthState::Healthy, None)
        );
        let (_, h, why) = judged(3, done.clone());
        assert_eq!(
            h,
            HealthState::Progressing,
            "the controller has not seen generation 3"
        );
        assert!(why.unwrap().contains("not seen the latest spec"));
        let old_left = DeploymentStatus {
            replicas: Some(4),
            ..done.clone()
        };
        let (_, h, why) = judged(2, old_left);
        assert_eq!(h, HealthState::Progressing);
        assert_eq!(why.unwrap(), "3 of 3 replicas updated, 3 available, 1 old");
        let unavailable = DeploymentStatus {
            available_replicas: Some(1),
            ..done.clone()
        };
        assert_eq!(judged(2, unavailable).1, HealthState::Progressing);
        let stuck = DeploymentStatus {
            available_replicas: Some(0),
            conditions: Some(vec![DeploymentCondition {
                type_: "Progressing".into(),
                status: "False".into(),
                reason: Some("ProgressDeadlineExceeded".into()),
                message: Some("ReplicaSet \"web-1\" has timed out progressing.".into()),
                ..DeploymentCondition::default()
            }]),
            ..done
        };
        let (_, h, why) = judged(2, stuck);
        assert_eq!(h, HealthState::Unhealthy);
        assert!(why.unwrap().contains("timed out progressing"));
        let mut fresh = deployment(&workload(), "apps", &sha('a'), 600).unwrap();
        fresh.status = None;
        assert_eq!(judge(&fresh).1, HealthState::Progressing);
    }

    #[test]
    fn an_existing_deployment_is_patched_on_its_image_only() {
        let p = image_patch("legacy", "app", "registry.example/web:x", &sha('b'));
        assert_eq!(
            p,
            serde_json::json!({
                "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "legacy"},
                "spec": {"template": {
                    "metadata": {"annotations": {"vigie.dev/sha": sha('b').as_str()}},
                    "spec": {"containers": [{"name": "app", "image": "registry.example/web:x"}]}
                }}
            })
        );
        let d = deployment(&workload(), "apps", &sha('a'), 600).unwrap();
        assert_eq!(container_name(&d, None).unwrap(), "app");
        assert_eq!(container_name(&d, Some("app")).unwrap(), "app");
        let e = container_name(&d, Some("sidecar")).unwrap_err();
        assert_eq!(
            e,
            "Deployment web-preprod has no container \"sidecar\" (it has app)"
        );
    }

    fn hook() -> Hook {
        Hook {
            name: "backup".into(),
            image: "registry.example/backup:1".into(),
            command: vec!["/backup".into()],
            env: vec![],
            mounts: vec![],
            timeout: DurationSpec::from_secs(300),
            output: Some("s3://backups/{shortSha}.sql".into()),
        }
    }

    fn run() -> HookRun {
        HookRun {
            name: "backup".into(),
            sha: sha('b'),
            previous: Some(sha('a')),
            attempt: "2026-11-24T10:00:00Z".parse().unwrap(),
            after_deploy: false,
        }
    }

    #[test]
    fn a_hook_runs_once_per_rollout_as_a_job() {
        let w = workload();
        let job = hook_job(&w, "apps", &hook(), &run());
        let name = job.metadata.name.clone().unwrap();
        assert!(name.len() <= 63, "{name}");
        assert!(name.starts_with("web-preprod-backup-bbbbbbb-"), "{name}");
        let mut later = run();
        later.attempt = "2026-11-24T11:00:00Z".parse().unwrap();
        assert_ne!(
            hook_job_name(&w, &later),
            name,
            "a new attempt is a new Job"
        );
        let spec = job.spec.unwrap();
        assert_eq!(
            (spec.backoff_limit, spec.active_deadline_seconds),
            (Some(0), Some(300))
        );
        let env = spec.template.spec.unwrap().containers[0]
            .env
            .clone()
            .unwrap();
        assert!(env.iter().any(
            |e| e.name == "VIGIE_PREVIOUS_SHA" && e.value.as_deref() == Some(sha('a').as_str())
        ));
        let mut long = w.clone();
        long.release = "a-very-long-release-name-that-goes-on-and-on-and-on".into();
        assert!(hook_job_name(&long, &run()).len() <= 63);
    }

    #[test]
    fn a_hook_job_outcome() {
        let job = |status: Option<JobStatus>| Job {
            status,
            ..hook_job(&workload(), "apps", &hook(), &run())
        };
        assert_eq!(
            hook_outcome(&workload(), &job(None), &hook(), &run()),
            HookOutcome::Running
        );
        let ok = JobStatus {
            succeeded: Some(1),
            ..JobStatus::default()
        };
        assert_eq!(
            hook_outcome(&workload(), &job(Some(ok)), &hook(), &run()),
            HookOutcome::Succeeded {
                output: Some("s3://backups/bbbbbbb.sql".into())
            }
        );
        let deadline = JobStatus {
            failed: Some(1),
            conditions: Some(vec![JobCondition {
                type_: "Failed".into(),
                status: "True".into(),
                reason: Some("DeadlineExceeded".into()),
                message: Some("Job was active longer than specified deadline".into()),
                ..JobCondition::default()
            }]),
            ..JobStatus::default()
        };
        assert_eq!(
            hook_outcome(&workload(), &job(Some(deadline)), &hook(), &run()),
            HookOutcome::Failed {
                reason: "hook backup failed: DeadlineExceeded: Job was active longer than specified deadline".into()
            }
        );
    }
}
