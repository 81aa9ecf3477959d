//! Dagster code locations under `vigie controller` on the real control plane (kwok runs
//! no containers, so the webserver is a stand-in speaking Dagster's GraphQL answers):
//! the code servers' Deployments (command, `DAGSTER_CURRENT_IMAGE`, the native gRPC
//! readiness probe Dagster's own chart checks with `grpc-health-check`), the workspace
//! ConfigMap written by two Releases at once next to an entry Vigie does not own, and
//! a deleted Release's location leaving it.

#![allow(clippy::too_many_lines, reason = "one story, in order")]

#[path = "dagster/entries.rs"]
mod dagster_entries;
mod k8s;
mod skip;

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{Json, Router, extract::State, routing::post};
use k8s::{Controller, Namespace, admin, apply, eventually, kubectl, sha, stderr, stdout};
use k8s_openapi::api::apps::v1::Deployment;
use kube::Api;
use serde_json::{Value, json};
use vigie::api::{Phase, Release};

const T: Duration = Duration::from_secs(90);

/// A webserver that loads every location it knows; as Dagster's, it knows a location
/// of its workspace file only once asked to read the workspace again. The operations
/// it got.
#[derive(Default)]
struct Webserver {
    operations: Mutex<Vec<String>>,
    read: Mutex<bool>,
}

async fn graphql(State(w): State<Arc<Webserver>>, Json(body): Json<Value>) -> Json<Value> {
    let op = body["operationName"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    w.operations.lock().unwrap().push(op.clone());
    let entry = |name: &str| {
        json!({"__typename": "WorkspaceLocationEntry", "name": name, "loadStatus": "LOADED",
            "locationOrLoadError": {"__typename": "RepositoryLocation", "name": name,
                "repositories": [{"name": "__repository__"}]}})
    };
    let read = *w.read.lock().unwrap();
    Json(match op.as_str() {
        "VigieReloadLocation" if read => {
            json!({"data": {"reloadRepositoryLocation": entry(body["variables"]["name"].as_str().unwrap_or_default())}})
        }
        "VigieReloadLocation" => {
            json!({"data": {"reloadRepositoryLocation": {"__typename": "RepositoryLocationNotFound", "message": "Location does not exist."}}})
        }
        "VigieReloadWorkspace" => {
            *w.read.lock().unwrap() = true;
            json!({"data": {"reloadWorkspace": {"__typename": "Workspace", "locationEntries": []}}})
        }
        _ => {
            let entries = ["sales", "hr"].map(entry);
            json!({"data": {"workspaceOrError": {"__typename": "Workspace", "locationEntries": entries}}})
        }
    })
}

async fn webserver() -> (Arc<Webserver>, SocketAddr) {
    let w = Arc::new(Webserver::default());
    let app = Router::new()
        .route("/graphql", post(graphql))
        .with_state(w.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (w, addr)
}

fn manifests(ns: &str, graphql: &str) -> String {
    let location = |name: &str| {
        format!(
            r#"---
apiVersion: vigie.dev/v1alpha1
kind: CodeLocation
metadata: {{name: {name}, namespace: {ns}}}
spec:
  repo: {{url: "https://git.example/{name}.git"}}
  ci: {{webhook: {{}}}}
  artifact: {{image: {{template: "registry.example/{name}:{{sha}}"}}}}
  container:
    ports: [{{containerPort: 4000}}]
  dagster: {{module: {name}.definitions, workingDirectory: /opt/dagster/app}}
---
apiVersion: vigie.dev/v1alpha1
kind: Release
metadata: {{name: {name}-dev, namespace: {ns}}}
spec: {{codeLocation: {name}, environment: dev, revision: "{a}"}}
"#,
            a = sha('a')
        )
    };
    format!(
        r"apiVersion: vigie.dev/v1alpha1
kind: Environment
metadata: {{name: dev, namespace: {ns}}}
spec:
  backend: {{kubernetes: {{namespace: {ns}}}}}
  verification: {{timeout: 10m}}
  dagster:
    graphqlUrl: {graphql}
    workspace: {{configMap: {{name: dagster-workspace}}}}
{}{}",
        location("sales"),
        location("hr")
    )
}

fn workspace(ns: &str) -> String {
    stdout(&kubectl(&[
        "-n",
        ns,
        "get",
        "configmap",
        "dagster-workspace",
        "-o",
        "jsonpath={.data.workspace\\.yaml}",
    ]))
}

/// The entries of the workspace ConfigMap.
fn entries(ns: &str) -> Vec<String> {
    dagster_entries::entries(&workspace(ns))
}

async fn phase(ns: &str, name: &str) -> Option<Phase> {
    let api: Api<Release> = Api::namespaced(k8s::client().await, ns);
    api.get_opt(name)
        .await
        .ok()
        .flatten()
        .and_then(|r| r.status.map(|s| s.phase))
}

#[tokio::test(flavor = "multi_thread")]
async fn code_servers_get_grpc_probes_and_the_workspace_configmap_lists_what_runs() {
    if !k8s::enabled("dagster") {
        return;
    }
    let ns = Namespace::new("dagster");
    let n = ns.name.clone();
    let (web, addr) = webserver().await;
    // The workspace already holds an entry of someone else's.
    apply(&format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: dagster-workspace, namespace: {n}}}\ndata:\n  workspace.yaml: |\n    load_from:\n    - python_module:\n        module_name: ops.definitions\n        location_name: ops\n"
    ));
    apply(&manifests(&n, &format!("http://{addr}/graphql")));
    let mut controller = Controller::new(&ns, &admin(), "one");
    controller.start();
    for name in ["sales-dev", "hr-dev"] {
        eventually(T, &format!("{name} Verifying"), || async {
            (phase(&n, name).await == Some(Phase::Verifying)).then_some(())
        })
        .await;
    }

    // Both listed by their Service, the other entry kept; the webserver told.
    let listed = entries(&n);
    for want in [
        "python_module ops -:null".to_owned(),
        format!("grpc_server sales sales-dev.{n}.svc:4000"),
        format!("grpc_server hr hr-dev.{n}.svc:4000"),
    ] {
        assert!(listed.contains(&want), "{want}: {listed:?}");
    }
    assert_eq!(listed.len(), 3, "{listed:?}");
    assert!(
        web.operations
            .lock()
            .unwrap()
            .iter()
            .any(|o| o == "VigieReloadWorkspace"),
        "{:?}",
        web.operations.lock().unwrap()
    );

    // The code server's Deployment: Vigie's command, the SHA's image named to Dagster,
    // the native gRPC readiness probe on the service Dagster's check asks about.
    let api: Api<Deployment> = Api::namespaced(k8s::client().await, &n);
    let d = api.get("sales-dev").await.unwrap();
    let c = &d.spec.unwrap().template.spec.unwrap().containers[0];
    assert_eq!(
        c.command.clone().unwrap_or_default().join(" "),
        "dagster code-server start --host 0.0.0.0 --port 4000 --module-name sales.definitions --working-directory /opt/dagster/app --location-name sales"
    );
    let image = format!("registry.example/sales:{}", sha('a'));
    assert!(
        c.env.iter().flatten().any(
            |e| e.name == "DAGSTER_CURRENT_IMAGE" && e.value.as_deref() == Some(image.as_str())
        ),
        "{:?}",
        c.env
    );
    let probe = c.readiness_probe.clone().expect("a readiness probe");
    let grpc = probe.grpc.expect("a gRPC probe");
    assert_eq!(
        (grpc.port, grpc.service.as_deref()),
        (4000, Some("DagsterApi"))
    );
    assert!(probe.http_get.is_none());

    // A deleted Release's location leaves the workspace.
    let out = kubectl(&["-n", &n, "delete", "release", "hr-dev", "--timeout=60s"]);
    assert!(out.status.success(), "{}", stderr(&out));
    eventually(T, "hr unlisted", || async {
        let listed = entries(&n);
        (!listed.iter().any(|e| e.contains(" hr "))).then_some(listed)
    })
    .await;
    let listed = entries(&n);
    assert_eq!(listed.len(), 2, "{listed:?}");
}
