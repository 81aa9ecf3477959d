//! The objects Vigie applies for a workload, as data: its Deployment and Service, the
//! labels and owner reference on everything it creates, and the patch that sets the
//! image of an existing Deployment. Pure functions, tested as structs; `mod.rs` sends
//! them.

use std::collections::BTreeMap;

use k8s_openapi::{
    api::{
        apps::v1::{Deployment, DeploymentSpec},
        core::v1::{
            Container, ContainerPort, EnvVar as KubeEnvVar, GRPCAction, HTTPGetAction, PodSpec,
            PodTemplateSpec, Probe as KubeProbe, Service, ServicePort, ServiceSpec,
        },
    },
    apimachinery::pkg::{
        apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference},
        util::intstr::IntOrString,
    },
};

use super::SHA_ANNOTATION;
use crate::{
    api::{
        Sha,
        code_location::{Artifact, HealthCheck},
        common::{PortMapping, Protocol},
    },
    backend::{BackendError, Result, Workload, substitute},
};

/// The container Vigie creates in its Deployments.
const CONTAINER: &str = "app";

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

pub(super) fn owner_references(
    workload: &Workload,
    namespace: &str,
) -> Option<Vec<OwnerReference>> {
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

/// The readiness probe of a health check: the kubelet's native `grpc` probe (a
/// `grpc.health.v1.Health/Check` asking about `grpc.service`, ready on `SERVING`) when
/// `grpc` is set, else an HTTP GET of `path`; on the check's port, else the first
/// container port, else 80.
fn readiness_probe(h: &HealthCheck, ports: &[PortMapping]) -> KubeProbe {
    let port = i32::from(
        h.port
            .or_else(|| ports.first().map(|p| p.container_port))
            .unwrap_or(80),
    );
    let (http_get, grpc) = match &h.grpc {
        Some(g) => (
            None,
            Some(GRPCAction {
                port,
                // Unset means the empty service, the whole server, as gRPC defines it.
                service: (!g.service.is_empty()).then(|| g.service.clone()),
            }),
        ),
        None => (
            Some(HTTPGetAction {
                path: Some(h.path.clone()),
                port: IntOrString::Int(port),
                ..HTTPGetAction::default()
            }),
            None,
        ),
    };
    KubeProbe {
        http_get,
        grpc,
        period_seconds: Some(i32::try_from(h.interval.get().as_secs().max(1)).unwrap_or(10)),
        timeout_seconds: Some(i32::try_from(h.timeout.get().as_secs().max(1)).unwrap_or(10)),
        failure_threshold: Some(i32::try_from(h.retries.max(1)).unwrap_or(3)),
        ..KubeProbe::default()
    }
}

/// Literal environment variables, as a container spec takes them.
#[must_use]
pub fn env_vars(vars: &[crate::api::common::EnvVar]) -> Vec<KubeEnvVar> {
    vars.iter()
        .map(|e| KubeEnvVar {
            name: e.name.clone(),
            value: Some(e.value.clone()),
            value_from: None,
        })
        .collect()
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
    let readiness = workload
        .health_check
        .as_ref()
        .map(|h| readiness_probe(h, &c.ports));
    let image = image(workload, sha)?;
    let mut env = env_vars(&c.env);
    if workload.dagster.is_some() {
        // Dagster launches runs in the image the code server reports.
        env.retain(|e| e.name != "DAGSTER_CURRENT_IMAGE");
        env.push(KubeEnvVar {
            name: "DAGSTER_CURRENT_IMAGE".into(),
            value: Some(image.clone()),
            value_from: None,
        });
    }
    let container = Container {
        name: CONTAINER.into(),
        image: Some(image),
        command: (!c.command.is_empty()).then(|| c.command.clone()),
        args: (!c.args.is_empty()).then(|| c.args.clone()),
        working_dir: c.working_dir.clone(),
        env: (!env.is_empty()).then_some(env),
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
) -> std::result::Result<String, crate::backend::BackendError> {
    use crate::backend::BackendError;
    let containers = deployment
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .map(|s| s.containers.as_slice())
        .unwrap_or_default();
    match wanted {
        Some(w) if containers.iter().any(|c| c.name == w) => Ok(w.to_owned()),
        Some(w) => Err(BackendError::Unsupported(format!(
            "Deployment {} has no container {w:?} (it has {})",
            deployment.metadata.name.as_deref().unwrap_or("?"),
            containers
                .iter()
                .map(|c| c.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))),
        None => containers.first().map(|c| c.name.clone()).ok_or_else(|| {
            BackendError::Unsupported(format!(
                "Deployment {} has no container",
                deployment.metadata.name.as_deref().unwrap_or("?")
            ))
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::kubernetes::fixtures::{sha, workload};

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
    fn a_grpc_health_check_becomes_the_native_grpc_readiness_probe() {
        use crate::api::code_location::{DAGSTER_API_SERVICE, GrpcHealthCheck};

        let mut w = workload();
        let hc = w.health_check.as_mut().unwrap();
        hc.grpc = Some(GrpcHealthCheck {
            service: DAGSTER_API_SERVICE.into(),
        });
        hc.port = Some(4000);
        let d = deployment(&w, "apps", &sha('a'), 600).unwrap();
        let c = &d.spec.unwrap().template.spec.unwrap().containers[0];
        let probe = c.readiness_probe.clone().unwrap();
        assert_eq!(
            probe,
            KubeProbe {
                grpc: Some(GRPCAction {
                    port: 4000,
                    service: Some("DagsterApi".into()),
                }),
                period_seconds: Some(5),
                timeout_seconds: Some(2),
                failure_threshold: Some(3),
                ..KubeProbe::default()
            }
        );
        // The whole server: no service, and the first container port.
        let hc = w.health_check.as_mut().unwrap();
        hc.grpc = Some(GrpcHealthCheck::default());
        hc.port = None;
        let d = deployment(&w, "apps", &sha('a'), 600).unwrap();
        let c = &d.spec.unwrap().template.spec.unwrap().containers[0];
        let probe = c.readiness_probe.clone().unwrap();
        assert_eq!(
            (probe.grpc, probe.http_get),
            (
                Some(GRPCAction {
                    port: 8080,
                    service: None
                }),
                None
            )
        );
        // As the API server receives it.
        let json = serde_json::to_value(&c.readiness_probe).unwrap();
        assert_eq!(json["grpc"], serde_json::json!({"port": 8080}));
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
            e.to_string(),
            "Deployment web-preprod has no container \"sidecar\" (it has app)"
        );
    }
}
