//! The Docker backend over TCP with TLS client certificates, against the real engine
//! that `e2e/docker.sh` starts with a TLS listener on 127.0.0.1:2376.

mod docker;
mod skip;

use std::path::PathBuf;

use docker::{Demo, docker_available, free_port, http_get, wait_for};
use vigie::{
    api::{
        code_location::{Artifact, ContainerSettings, ImageArtifact},
        common::{PortMapping, Protocol},
        environment::{DockerBackend as DockerSpec, DockerTls},
        release::HealthState,
    },
    backend::{Backend, Probe, Workload, docker::DockerBackend},
    lifecycle::{BackendState, WorkloadTarget},
};

/// The TLS material `e2e/docker.sh` generated when it started the engine; without it
/// (an engine started some other way) the test is skipped, and says so.
fn tls_dir() -> Option<PathBuf> {
    let dir = PathBuf::from(
        std::env::var("VIGIE_E2E_TLS_DIR").unwrap_or_else(|_| "/var/lib/vigie-e2e/tls".into()),
    );
    dir.join("client-key.pem").exists().then_some(dir)
}

fn spec(tls: Option<&PathBuf>) -> DockerSpec {
    DockerSpec {
        host: Some("tcp://127.0.0.1:2376".into()),
        tls: tls.map(|dir| DockerTls {
            secret_ref: None,
            ca_file: Some(dir.join("ca.pem").display().to_string()),
            cert_file: Some(dir.join("client-cert.pem").display().to_string()),
            key_file: Some(dir.join("client-key.pem").display().to_string()),
        }),
        compose_project: None,
    }
}

fn workload(port: u16) -> Workload {
    Workload {
        environment: "tls-preprod".into(),
        code_location: "app".into(),
        release: "app-tls".into(),
        repo_url: Demo::get().url(),
        artifact: Artifact::Image(ImageArtifact {
            template: "vigie-demo:{sha}".into(),
        }),
        container: ContainerSettings {
            ports: vec![PortMapping {
                container_port: 8080,
                host_port: Some(port),
                host_ip: None,
                protocol: Protocol::Tcp,
            }],
            replicas: 1,
            ..ContainerSettings::default()
        },
        health_check: None,
        project: "vigie-tls".into(),
        instance: "tls-test".into(),
        deployment: None,
        owner: None,
        dagster: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_backend_drives_an_engine_over_tcp_with_tls() {
    if !docker_available() {
        return;
    }
    let Some(dir) = tls_dir() else {
        skip::skip(
            "the engine's TLS listener on 127.0.0.1:2376 (start the engine with e2e/docker.sh, not systemd)",
            "VIGIE_E2E_DOCKER",
        );
        return;
    };
    let demo = Demo::get();
    let a = demo.sha("good").parse().unwrap();
    let port = free_port();
    let w = workload(port);
    let backend = DockerBackend::connect(&spec(Some(&dir))).unwrap();
    let seen = backend.observe(&w, Probe::State).await;
    assert_eq!(seen.backend, BackendState::Reachable, "{seen:?}");
    backend
        .apply(&w, &WorkloadTarget { sha: a, keep: None })
        .await
        .unwrap();
    let body = wait_for(
        std::time::Duration::from_secs(30),
        "the container over TLS to serve",
        || {
            http_get(port, "/")
                .filter(|(s, _)| *s == 200)
                .map(|(_, b)| b)
        },
    );
    assert!(body.contains(demo.sha("good")), "{body}");
    let seen = backend.observe(&w, Probe::State).await;
    assert_eq!(
        (seen.sha.map(|s| s.to_string()), seen.health),
        (Some(demo.sha("good").to_owned()), HealthState::Healthy)
    );
    assert!(
        backend
            .prune("tls-test", "tls-preprod", &[])
            .await
            .unwrap()
            .len()
            == 1
    );

    // Without a client certificate the engine refuses: the backend says so.
    let plain = DockerBackend::connect(&spec(None)).unwrap();
    match plain.observe(&w, Probe::State).await.backend {
        BackendState::Unreachable { reason } => {
            assert!(reason.contains("127.0.0.1:2376"), "{reason}");
        }
        BackendState::Reachable => {
            panic!("an engine requiring client certificates answered without one")
        }
    }
}
