//! The judge step against a stand-in webserver speaking Dagster's GraphQL answers, and
//! the pure rules it applies.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use axum::{Json, Router, extract::State, routing::post};
use serde_json::{Value, json};

use super::*;
use crate::{
    api::{ReleaseSpec, code_location::CodeLocationSpec, environment::EnvironmentSpec},
    lifecycle::BackendState,
};

fn sha(c: char) -> Sha {
    c.to_string().repeat(40).parse().unwrap()
}

fn yaml<T: serde::de::DeserializeOwned>(text: &str) -> T {
    serde_json::from_value(serde_norway::from_str::<Value>(text).unwrap()).unwrap()
}

fn specs(graphql: &str, backend: &str) -> (EnvironmentSpec, CodeLocationSpec, ReleaseSpec) {
    let environment: EnvironmentSpec = yaml(&format!(
        "backend: {backend}\ndagster:\n  graphqlUrl: {graphql}\n  workspace: {{file: /unused}}\n  network: dagster\n  timeout: 2s\n"
    ));
    let location: CodeLocationSpec = yaml(
        "repo: {url: 'file:///repo'}\nci: {webhook: {}}\nartifact: {image: {template: 'sales:{sha}'}}\ncontainer: {ports: [{containerPort: 4000, hostPort: 14000}]}\ndagster: {module: sales.definitions}\n",
    );
    let release: ReleaseSpec = yaml("codeLocation: sales\nenvironment: dev\nrevision: main\n");
    (environment, location, release)
}

fn running(s: Option<Sha>) -> WorkloadObservation {
    WorkloadObservation {
        backend: BackendState::Reachable,
        sha: s,
        health: HealthState::Healthy,
        reason: None,
    }
}

#[test]
fn the_webserver_reaches_each_code_server_where_its_backend_puts_it() {
    let (environment, location, release) = specs("http://127.0.0.1:1/graphql", "{docker: {}}");
    let w = Workload::resolve("t", "sales-dev", &release, &location, &environment);
    let server = w.dagster.clone().unwrap();
    assert_eq!(server.location, "sales");
    assert_eq!(server.network.as_deref(), Some("dagster"));
    assert_eq!(
        w.container.command.join(" "),
        "dagster code-server start --host 0.0.0.0 --port 4000 --module-name sales.definitions --location-name sales"
    );
    // On the network: the alias, the container port.
    let e = address(&w, &server, &environment.backend).unwrap();
    assert_eq!((e.host.as_str(), e.port), ("sales", 4000));
    // No network: the published address.
    let mut bare = server.clone();
    bare.network = None;
    let e = address(&w, &bare, &environment.backend).unwrap();
    assert_eq!((e.host.as_str(), e.port), ("127.0.0.1", 14000));
    let mut unpublished = w.clone();
    unpublished.container.ports.clear();
    let e = address(&unpublished, &bare, &environment.backend).unwrap_err();
    assert!(e.contains("publish its port 4000"), "{e}");
    // Kubernetes: the Service, on its port.
    let (k8s, _, _) = specs("http://x/graphql", "{kubernetes: {namespace: data}}");
    let e = address(&w, &server, &k8s.backend).unwrap();
    assert_eq!((e.host.as_str(), e.port), ("sales-dev.data.svc", 14000));
}

#[test]
fn every_answer_is_laid_over_the_observation() {
    let failed = Load::Failed("ImportError: no module named pandas\n  File \"defs.py\"\n".into());
    let answers: Vec<Result<Load, &str>> = vec![
        Ok(Load::Loaded {
            repositories: vec!["__repository__".into()],
            image: None,
        }),
        Ok(Load::Unreachable("UNAVAILABLE".into())),
        Ok(failed),
        Ok(Load::Loading),
        Ok(Load::NotListed),
        Err("the Dagster webserver at http://x did not answer: refused"),
    ];
    for answer in &answers {
        for protected in [false, true] {
            let out = judged(
                running(Some(sha('a'))),
                answer.as_ref().map_err(|e| *e),
                "sales",
                protected,
            );
            let expected = match (answer, protected) {
                (Ok(Load::Failed(_)), _) => HealthState::Unhealthy,
                (Ok(Load::Loaded { .. }), _) | (_, true) => HealthState::Healthy,
                _ => HealthState::Progressing,
            };
            assert_eq!(out.health, expected, "{answer:?} protected={protected}");
            if expected == HealthState::Unhealthy {
                let reason = out.reason.unwrap();
                assert!(
                    reason.starts_with("the definitions of Dagster location sales failed to load: ImportError: no module named pandas"),
                    "{reason}"
                );
            }
        }
    }
}

#[test]
fn the_sha_kept_or_gone_back_to_is_protected() {
    let mut status = ReleaseStatus {
        validated_sha: Some(sha('a')),
        ..ReleaseStatus::default()
    };
    assert!(protected(&status, &sha('a')));
    assert!(!protected(&status, &sha('b')));
    status.phase = Phase::RollingBack;
    status.rollout = Some(crate::api::release::Rollout {
        rollback_point: Some(sha('c')),
        ..serde_json::from_value(
            json!({"sha": sha('b').to_string(), "startedAt": "2026-01-01T00:00:00Z"}),
        )
        .unwrap()
    });
    assert!(protected(&status, &sha('c')));
    assert!(!protected(&status, &sha('b')));
}

#[test]
fn the_definitions_are_validated_first_only_when_asked() {
    let (mut environment, location, _) = specs("http://x/graphql", "{docker: {}}");
    assert!(matches!(
        super::environment(&environment, &location),
        Cow::Borrowed(_)
    ));
    environment.dagster.as_mut().unwrap().validate_definitions = true;
    let with = super::environment(&environment, &location);
    let hook = &with.hooks.pre_deploy[0];
    assert_eq!(hook.name, VALIDATE_HOOK);
    assert_eq!(hook.image, "sales:{sha}");
    assert_eq!(
        hook.command.join(" "),
        "dagster definitions validate --module-name sales.definitions"
    );
}

/// A stand-in webserver: each location's answer is set by the test; every request's
/// operation is recorded.
#[derive(Default)]
struct Webserver {
    /// `locationOrLoadError` per listed location.
    locations: Mutex<BTreeMap<String, Value>>,
    /// The image every code server reports, when set.
    image: Mutex<Option<String>>,
    operations: Mutex<Vec<String>>,
}

async fn graphql(State(w): State<Arc<Webserver>>, Json(body): Json<Value>) -> Json<Value> {
    let op = body["operationName"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    w.operations.lock().unwrap().push(op.clone());
    let image = w.image.lock().unwrap().clone();
    let entry = |name: &str, loaded: &Value| {
        json!({"__typename": "WorkspaceLocationEntry", "name": name, "loadStatus": "LOADED",
            "displayMetadata": image.iter().map(|i| json!({"key": "image", "value": i})).collect::<Vec<_>>(),
            "locationOrLoadError": loaded})
    };
    let locations = w.locations.lock().unwrap().clone();
    let workspace = json!({"__typename": "Workspace", "locationEntries":
        locations.iter().map(|(n, l)| entry(n, l)).collect::<Vec<_>>()});
    Json(match op.as_str() {
        "VigieReloadLocation" => {
            let name = body["variables"]["name"].as_str().unwrap_or_default();
            let answer = locations.get(name).map_or_else(
                || json!({"__typename": "RepositoryLocationNotFound", "message": format!("Location {name} does not exist")}),
                |l| entry(name, l),
            );
            json!({"data": {"reloadRepositoryLocation": answer}})
        }
        "VigieReloadWorkspace" => json!({"data": {"reloadWorkspace": workspace}}),
        _ => json!({"data": {"workspaceOrError": workspace}}),
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

/// Workspaces in memory: the entry per location, and how often it was asked to write.
#[derive(Default)]
struct Memory(
    Mutex<BTreeMap<String, workspace::Entry>>,
    std::sync::atomic::AtomicUsize,
);

impl Workspaces for Memory {
    fn set<'a>(
        &'a self,
        _: &'a BackendSpec,
        _: &'a DagsterWorkspace,
        location: &'a str,
        entry: Option<workspace::Entry>,
    ) -> BoxFuture<'a, Result<bool, String>> {
        self.1.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let mut m = self.0.lock().unwrap();
        let listed = match entry {
            Some(e) => m.insert(location.to_owned(), e).is_none(),
            None => m.remove(location).is_some(),
        };
        futures::future::ready(Ok(listed)).boxed()
    }
}

fn loaded() -> Value {
    json!({"__typename": "RepositoryLocation", "name": "sales", "repositories": [{"name": "__repository__"}]})
}

fn import_error() -> Value {
    json!({"__typename": "PythonError",
        "message": "dagster._core.errors.DagsterUserCodeLoadError: Error occurred during the loading of Dagster definitions in\nexecutable_path=/opt/dagster/venv/bin/python3, module_name=sales.definitions, working_directory=/opt/dagster/app\n",
        "className": "DagsterUserCodeLoadError",
        "causes": [{"message": "ModuleNotFoundError: No module named 'pandas'\n", "className": "ModuleNotFoundError"}]})
}

fn subject<'a>(
    key: &'a ReleaseKey,
    release: &'a ReleaseSpec,
    environment: &'a EnvironmentSpec,
    workload: &'a Workload,
    location: &'a CodeLocationSpec,
) -> Subject<'a> {
    Subject {
        key,
        spec: release,
        generation: None,
        environment,
        windows: None,
        workload,
        ci: &location.ci,
        upstream: None,
    }
}

#[tokio::test]
async fn a_location_is_listed_reloaded_once_per_sha_and_judged() {
    let (web, addr) = webserver().await;
    let (environment, location, release) = specs(&format!("http://{addr}/graphql"), "{docker: {}}");
    let workload = Workload::resolve("t", "sales-dev", &release, &location, &environment);
    let key = ReleaseKey::new("data", "sales-dev");
    let subject = subject(&key, &release, &environment, &workload, &location);
    let instances = Instances::new(Memory::default());
    let mut status = ReleaseStatus::default();
    let ops = || std::mem::take(&mut *web.operations.lock().unwrap());

    // A first SHA: listed, the whole workspace read again, loaded.
    web.locations
        .lock()
        .unwrap()
        .insert("sales".into(), loaded());
    let out = instances
        .judge(&subject, &status, running(Some(sha('a'))), Probe::State)
        .await;
    assert_eq!(out.health, HealthState::Healthy, "{out:?}");
    assert_eq!(ops(), ["VigieReloadWorkspace", "VigieWorkspace"]);
    // Nothing changed: nothing asked, nothing written, until a full probe, which only
    // reads (and writes the workspace again, in case a hand edit dropped the entry).
    let writes = || {
        instances
            .workspaces
            .1
            .load(std::sync::atomic::Ordering::SeqCst)
    };
    assert_eq!(writes(), 1);
    instances
        .judge(&subject, &status, running(Some(sha('a'))), Probe::State)
        .await;
    assert_eq!(ops(), Vec::<String>::new());
    assert_eq!(writes(), 1);
    instances
        .judge(&subject, &status, running(Some(sha('a'))), Probe::Full)
        .await;
    assert_eq!(ops(), ["VigieWorkspace"]);
    assert_eq!(writes(), 2);
    status.validated_sha = Some(sha('a'));

    // A new SHA whose module raises at import: reloaded, unhealthy, with the error.
    web.locations
        .lock()
        .unwrap()
        .insert("sales".into(), import_error());
    let out = instances
        .judge(&subject, &status, running(Some(sha('b'))), Probe::State)
        .await;
    assert_eq!(ops(), ["VigieReloadLocation"]);
    assert_eq!(out.health, HealthState::Unhealthy);
    let reason = out.reason.unwrap();
    assert!(reason.contains("No module named 'pandas'"), "{reason}");
    assert!(reason.contains("DagsterUserCodeLoadError"), "{reason}");
    // Remembered between full probes.
    let again = instances
        .judge(&subject, &status, running(Some(sha('b'))), Probe::State)
        .await;
    assert_eq!(again.health, HealthState::Unhealthy);
    assert_eq!(ops(), Vec::<String>::new());

    // A webserver still showing another SHA's image has not judged this one.
    web.locations
        .lock()
        .unwrap()
        .insert("sales".into(), loaded());
    *web.image.lock().unwrap() = Some(format!("sales:{}", sha('a')));
    let out = instances
        .judge(&subject, &status, running(Some(sha('c'))), Probe::State)
        .await;
    assert_eq!(out.health, HealthState::Progressing, "{out:?}");
    assert!(out.reason.unwrap().contains("still serves sales:aaaa"));
    ops();

    // Rolled back to the validated SHA: reloaded again, loaded.
    web.locations
        .lock()
        .unwrap()
        .insert("sales".into(), loaded());
    let out = instances
        .judge(&subject, &status, running(Some(sha('a'))), Probe::State)
        .await;
    assert_eq!(ops(), ["VigieReloadLocation"]);
    assert_eq!(out.health, HealthState::Healthy);

    // Nothing runs: unlisted, and the webserver told.
    let out = instances
        .judge(&subject, &status, running(None), Probe::State)
        .await;
    assert_eq!(out.sha, None);
    assert_eq!(ops(), ["VigieReloadWorkspace"]);
}

#[tokio::test]
async fn a_silent_webserver_holds_a_new_sha_but_never_the_one_gone_back_to() {
    // Nothing listens there.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let (environment, location, release) = specs(&format!("http://{addr}/graphql"), "{docker: {}}");
    let workload = Workload::resolve("t", "sales-dev", &release, &location, &environment);
    let key = ReleaseKey::new("data", "sales-dev");
    let subject = subject(&key, &release, &environment, &workload, &location);
    let instances = Instances::new(Memory::default());
    let status = ReleaseStatus {
        validated_sha: Some(sha('a')),
        ..ReleaseStatus::default()
    };
    let new = instances
        .judge(&subject, &status, running(Some(sha('b'))), Probe::Full)
        .await;
    assert_eq!(new.health, HealthState::Progressing);
    let reason = new.reason.unwrap();
    assert!(
        reason.contains("not judged yet") && reason.contains(&addr.to_string()),
        "{reason}"
    );
    let kept = instances
        .judge(&subject, &status, running(Some(sha('a'))), Probe::Full)
        .await;
    assert_eq!(kept.health, HealthState::Healthy);
}
