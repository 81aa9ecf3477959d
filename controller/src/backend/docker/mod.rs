//! The Docker backend: bollard against a local socket, `DOCKER_HOST`, TCP with TLS,
//! or SSH. Containers are planned as data in [`plan`]; this module only sends them.
//!
//! Each SHA gets its own container (`vigie-<env>-<location>-<sha7>`); only the target
//! runs. The rollback point's container is kept stopped, with its image, so that a
//! rollback starts it again without re-pulling or rebuilding anything.

pub mod checkout;
pub mod compose;
pub mod plan;

use std::{collections::BTreeMap, path::Path, sync::Arc, time::Duration};

use bollard::{
    API_DEFAULT_VERSION, Docker,
    models::{ContainerInspectResponse, ContainerStateStatusEnum, HealthStatusEnum},
    query_parameters::{
        CreateContainerOptionsBuilder, CreateImageOptionsBuilder, InspectContainerOptions,
        KillContainerOptionsBuilder, ListContainersOptionsBuilder, LogsOptionsBuilder,
        RemoveContainerOptionsBuilder, StartContainerOptions, StopContainerOptionsBuilder,
    },
};
use futures::{StreamExt, TryStreamExt};
use jiff::Timestamp;
use tokio::sync::Mutex;

use self::plan::{
    ContainerPlan, LABEL_CONFIG, LABEL_HOOK, LABEL_HOOK_OUTPUT, LABEL_LOCATION, LABEL_SHA,
};
use super::{Backend, BackendError, Probe, Result, Workload, health};
use crate::{
    api::{
        Sha,
        code_location::Artifact,
        environment::{DockerBackend as DockerSpec, Hooks},
        release::HealthState,
    },
    lifecycle::{BackendState, HookOutcome, HookRun, WorkloadObservation, WorkloadTarget},
};

/// How long a request to the engine may take.
const ENGINE_TIMEOUT_SECS: u64 = 120;
/// Grace period of `docker stop`.
const STOP_GRACE_SECS: i32 = 10;
/// Deploys of new containers (create, stop the old one, start) at once on one engine.
/// A switch to a container that already exists (a rollback to the kept one) does not
/// wait for them: the engine is not saturated by fifty creations when a rollback comes.
const DEPLOY_LANES: usize = 4;
/// A container restarted this many times within [`LOOP_WINDOW`] is restart-looping.
const LOOP_RESTARTS: i64 = 2;
/// See [`LOOP_RESTARTS`].
const LOOP_WINDOW: Duration = Duration::from_secs(120);

/// A Docker engine.
#[derive(Clone)]
pub struct DockerBackend {
    client: Arc<Mutex<Client>>,
    http: reqwest::Client,
    host: String,
    /// For a remote engine (`tcp://`, `ssh://`), the machine health checks go to.
    remote: Option<String>,
    /// Deploys that create a container take one ([`DEPLOY_LANES`]).
    deploys: Arc<tokio::sync::Semaphore>,
    /// Switches to an existing container (rollbacks) go first.
    right_of_way: RightOfWay,
}

/// Rollbacks' right of way on one engine: while a switch to an existing container is
/// under way, deploys that create containers wait before each of their engine calls, so
/// the rollback's `stop` and `start` do not queue in the engine behind them.
#[derive(Clone)]
struct RightOfWay(Arc<tokio::sync::watch::Sender<usize>>);

impl RightOfWay {
    fn new() -> Self {
        Self(Arc::new(tokio::sync::watch::Sender::new(0)))
    }

    /// A switch starts; it has the right of way until the guard is dropped.
    fn switch(&self) -> Switching {
        self.0.send_modify(|n| *n += 1);
        Switching(self.0.clone())
    }

    /// Waits while a switch is under way.
    async fn give_way(&self) {
        let mut switches = self.0.subscribe();
        // `self` holds the sender: the wait cannot fail.
        let _ = switches.wait_for(|n| *n == 0).await;
    }
}

/// One switch under way (see [`RightOfWay`]).
struct Switching(Arc<tokio::sync::watch::Sender<usize>>);

impl Drop for Switching {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n -= 1);
    }
}

/// The machine of a remote engine address: `tcp://h:2376` and `ssh://user@h` give `h`.
fn remote_machine(host: &str) -> Option<String> {
    let rest = host
        .strip_prefix("tcp://")
        .or_else(|| host.strip_prefix("ssh://"))?;
    let rest = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
    let machine = rest.split(['/', ':']).next().filter(|m| !m.is_empty())?;
    // An engine on this machine's loopback is this machine: its loopback ports are ours.
    let local = machine == "localhost"
        || machine
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    (!local).then(|| machine.to_owned())
}

struct Client {
    docker: Docker,
    negotiated: bool,
}

fn engine(e: impl std::fmt::Display) -> BackendError {
    BackendError::Engine(e.to_string())
}

impl DockerBackend {
    /// Connects (lazily: nothing is sent yet) to the engine an Environment names.
    pub fn connect(spec: &DockerSpec) -> Result<Self> {
        let host = spec
            .host
            .clone()
            .or_else(|| std::env::var("DOCKER_HOST").ok())
            .unwrap_or_default();
        let docker = if host.is_empty() {
            Docker::connect_with_local_defaults()
        } else if let Some(path) = host.strip_prefix("unix://") {
            Docker::connect_with_unix(path, ENGINE_TIMEOUT_SECS, API_DEFAULT_VERSION)
        } else if host.starts_with("tcp://") {
            match &spec.tls {
                Some(tls) => match (&tls.ca_file, &tls.cert_file, &tls.key_file) {
                    (Some(ca), Some(cert), Some(key)) => Docker::connect_with_ssl(
                        &host,
                        Path::new(key),
                        Path::new(cert),
                        Path::new(ca),
                        ENGINE_TIMEOUT_SECS,
                        API_DEFAULT_VERSION,
                    ),
                    _ => {
                        return Err(BackendError::Engine(format!(
                            "{host}: tls.secretRef is read by the operator only; standalone, give caFile, certFile and keyFile"
                        )));
                    }
                },
                None => Docker::connect_with_http(&host, ENGINE_TIMEOUT_SECS, API_DEFAULT_VERSION),
            }
        } else if host.starts_with("ssh://") {
            Docker::connect_with_ssh(&host, ENGINE_TIMEOUT_SECS, API_DEFAULT_VERSION, None)
        } else {
            return Err(BackendError::Engine(format!("unsupported Docker host {host:?}")));
        }
        .map_err(|e| BackendError::Engine(format!("{}: {e}", display_host(&host))))?;
        let http = reqwest::Client::builder()
            .no_proxy()
            .build()
            .map_err(engine)?;
        Ok(Self {
            client: Arc::new(Mutex::new(Client {
                docker,
                negotiated: false,
            })),
            http,
            remote: remote_machine(&host),
            host,
            deploys: Arc::new(tokio::sync::Semaphore::new(DEPLOY_LANES)),
            right_of_way: RightOfWay::new(),
        })
    }

    /// The engine client, its API version negotiated on first success.
    async fn docker(&self) -> Result<Docker> {
        let mut client = self.client.lock().await;
        if !client.negotiated {
            let negotiated = client
                .docker
                .clone()
                .negotiate_version()
                .await
                .map_err(|e| BackendError::Engine(format!("{}: {e}", display_host(&self.host))))?;
            client.docker = negotiated;
            client.negotiated = true;
        }
        Ok(client.docker.clone())
    }

    /// Whether the engine answers (`GET /_ping`).
    ///
    /// # Errors
    /// Why it does not.
    pub async fn ping(&self) -> Result<()> {
        let docker = self.docker().await?;
        docker
            .ping()
            .await
            .map(|_| ())
            .map_err(|e| BackendError::Engine(format!("{}: {e}", display_host(&self.host))))
    }

    /// Every container of the workload (hook runs apart), inspected.
    async fn containers(
        &self,
        docker: &Docker,
        w: &Workload,
    ) -> Result<Vec<ContainerInspectResponse>> {
        let options = ListContainersOptionsBuilder::default()
            .all(true)
            .filters(&plan::workload_filter(w))
            .build();
        let list = docker
            .list_containers(Some(options))
            .await
            .map_err(engine)?;
        let mut out = Vec::new();
        for c in list {
            if c.labels
                .as_ref()
                .is_some_and(|l| l.contains_key(LABEL_HOOK))
            {
                continue;
            }
            let Some(id) = c.id else { continue };
            match docker
                .inspect_container(&id, None::<InspectContainerOptions>)
                .await
            {
                Ok(inspect) => out.push(inspect),
                // Removed between the list and the inspect.
                Err(bollard::errors::Error::DockerResponseServerError {
                    status_code: 404, ..
                }) => {}
                Err(e) => return Err(engine(e)),
            }
        }
        Ok(out)
    }

    async fn ensure_image(&self, docker: &Docker, image: &str) -> Result<()> {
        if docker.inspect_image(image).await.is_ok() {
            return Ok(());
        }
        let (repo, tag) = match image.rsplit_once(':') {
            Some((repo, tag)) if !tag.contains('/') => (repo, tag),
            _ => (image, "latest"),
        };
        let options = CreateImageOptionsBuilder::default()
            .from_image(repo)
            .tag(tag)
            .build();
        docker
            .create_image(Some(options), None, None)
            .try_collect::<Vec<_>>()
            .await
            .map_err(|e| BackendError::Image {
                image: image.to_owned(),
                reason: e.to_string(),
            })?;
        Ok(())
    }

    /// Creates the user-defined network a container joins, when missing (a Dagster
    /// environment's network: its webserver may be started before or after).
    async fn ensure_network(&self, docker: &Docker, network: &str) -> Result<()> {
        match docker
            .inspect_network(
                network,
                None::<bollard::query_parameters::InspectNetworkOptions>,
            )
            .await
        {
            Ok(_) => return Ok(()),
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => {}
            Err(e) => return Err(engine(e)),
        }
        let request = bollard::models::NetworkCreateRequest {
            name: network.to_owned(),
            driver: Some("bridge".into()),
            labels: Some(std::collections::HashMap::from([(
                plan::MANAGED_BY.to_owned(),
                "vigie".to_owned(),
            )])),
            ..bollard::models::NetworkCreateRequest::default()
        };
        match docker.create_network(request).await {
            // Created by another writer in between: as good.
            Ok(_)
            | Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 409, ..
            }) => Ok(()),
            Err(e) => Err(engine(e)),
        }
    }

    async fn create(&self, docker: &Docker, plan: &ContainerPlan) -> Result<()> {
        self.ensure_image(docker, &plan.image).await?;
        if let Some(network) = plan.network.as_deref().filter(|n| {
            !n.starts_with("container:") && !matches!(*n, "bridge" | "host" | "none" | "default")
        }) {
            self.ensure_network(docker, network).await?;
        }
        let options = CreateContainerOptionsBuilder::default()
            .name(&plan.name)
            .build();
        match docker
            .create_container(Some(options), plan.create_body())
            .await
        {
            Ok(_) => Ok(()),
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 409, ..
            }) => Err(self.name_taken(docker, plan).await),
            Err(e) => Err(engine(e)),
        }
    }

    /// Why a container could not be created under its name: who holds the name.
    async fn name_taken(&self, docker: &Docker, plan: &ContainerPlan) -> BackendError {
        let inspect = match docker
            .inspect_container(&plan.name, None::<InspectContainerOptions>)
            .await
        {
            Ok(inspect) => inspect,
            Err(e) => {
                return BackendError::NameTaken(format!(
                    "the container name {} is held by a container that cannot be inspected \
                     ({e}); remove it with `docker rm -f {}`",
                    plan.name, plan.name
                ));
            }
        };
        let config = inspect.config.unwrap_or_default();
        let holder = plan::NameHolder {
            id: inspect.id.unwrap_or_default(),
            image: config.image.unwrap_or_default(),
            state: inspect
                .state
                .and_then(|s| s.status)
                .map(|s| s.to_string())
                .unwrap_or_default(),
            labels: config.labels.unwrap_or_default(),
        };
        let instance = plan
            .labels
            .get(plan::LABEL_INSTANCE)
            .map_or("", String::as_str);
        BackendError::NameTaken(plan::name_taken(&plan.name, &holder, instance))
    }

    async fn remove(&self, docker: &Docker, id: &str) -> Result<()> {
        let options = RemoveContainerOptionsBuilder::default().force(true).build();
        match docker.remove_container(id, Some(options)).await {
            Ok(())
            | Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(()),
            Err(e) => Err(engine(e)),
        }
    }

    async fn stop(&self, docker: &Docker, id: &str) -> Result<()> {
        let options = StopContainerOptionsBuilder::default()
            .t(STOP_GRACE_SECS)
            .build();
        match docker.stop_container(id, Some(options)).await {
            Ok(())
            | Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 304 | 404,
                ..
            }) => Ok(()),
            Err(e) => Err(engine(e)),
        }
    }

    /// The last lines a container wrote, for a failed hook's reason.
    async fn tail(&self, docker: &Docker, id: &str) -> String {
        let options = LogsOptionsBuilder::default()
            .stdout(true)
            .stderr(true)
            .tail("5")
            .build();
        let lines: Vec<String> = docker
            .logs(id, Some(options))
            .filter_map(|l| async move { l.ok().map(|l| l.to_string()) })
            .collect()
            .await;
        lines.concat().trim().to_owned()
    }

    /// Moves a git-checkout artifact's working tree to `sha`; the container running the
    /// old code is stopped so that it restarts on the new tree.
    async fn sync_checkout(
        &self,
        docker: &Docker,
        w: &Workload,
        template: &str,
        container: &str,
        sha: &Sha,
    ) -> Result<()> {
        let path = plan::checkout_path(template, w);
        if checkout::head(Path::new(&path)).as_ref() == Some(sha) {
            return Ok(());
        }
        let (url, tree, at) = (w.repo_url.clone(), path.clone(), sha.clone());
        tokio::task::spawn_blocking(move || checkout::checkout(&url, Path::new(&tree), &at))
            .await
            .map_err(engine)??;
        if let Some(c) = self
            .containers(docker, w)
            .await?
            .iter()
            .find(|c| name(c) == container && is_running(c))
        {
            self.stop(docker, c.id.as_deref().unwrap_or_default())
                .await?;
        }
        Ok(())
    }

    /// Hook runs of SHAs other than the target are done with.
    async fn remove_other_hook_runs(&self, docker: &Docker, w: &Workload, sha: &Sha) -> Result<()> {
        let options = ListContainersOptionsBuilder::default()
            .all(true)
            .filters(&plan::workload_filter(w))
            .build();
        for c in docker
            .list_containers(Some(options))
            .await
            .map_err(engine)?
        {
            let labels = c.labels.unwrap_or_default();
            if labels.contains_key(LABEL_HOOK)
                && labels.get(LABEL_SHA).map(String::as_str) != Some(sha.as_str())
            {
                self.remove(docker, c.id.as_deref().unwrap_or_default())
                    .await?;
            }
        }
        Ok(())
    }

    async fn observe_container(
        &self,
        w: &Workload,
        c: &ContainerInspectResponse,
        probe: Probe,
    ) -> (HealthState, Option<String>) {
        let state = c.state.clone().unwrap_or_default();
        let restarts = c.restart_count.unwrap_or(0);
        let exit = state.exit_code.unwrap_or(0);
        match state.status {
            Some(ContainerStateStatusEnum::RESTARTING) => {
                return (
                    HealthState::Unhealthy,
                    Some(format!(
                        "restart-looping ({restarts} restarts, last exit code {exit})"
                    )),
                );
            }
            Some(ContainerStateStatusEnum::EXITED | ContainerStateStatusEnum::DEAD) => {
                return (
                    HealthState::Unhealthy,
                    Some(format!("exited with code {exit}")),
                );
            }
            Some(ContainerStateStatusEnum::CREATED) => {
                return (
                    HealthState::Progressing,
                    Some("created, not started".into()),
                );
            }
            Some(ContainerStateStatusEnum::RUNNING) => {}
            other => {
                return (
                    HealthState::Unhealthy,
                    Some(format!("container is {other:?}")),
                );
            }
        }
        let started = state
            .started_at
            .as_deref()
            .and_then(|s| s.parse::<Timestamp>().ok());
        let recently = started
            .is_some_and(|t| Timestamp::now().duration_since(t).unsigned_abs() < LOOP_WINDOW);
        if restarts >= LOOP_RESTARTS && recently {
            return (
                HealthState::Unhealthy,
                Some(format!(
                    "restart-looping ({restarts} restarts, last exit code {exit})"
                )),
            );
        }
        match state.health.and_then(|h| h.status) {
            Some(HealthStatusEnum::STARTING) => {
                return (
                    HealthState::Progressing,
                    Some("HEALTHCHECK starting".into()),
                );
            }
            Some(HealthStatusEnum::UNHEALTHY) => {
                return (
                    HealthState::Unhealthy,
                    Some("Docker HEALTHCHECK reports unhealthy".into()),
                );
            }
            _ => {}
        }
        let Some(hc) = w.health_check.as_ref().filter(|_| probe == Probe::Full) else {
            return (HealthState::Healthy, None);
        };
        let Some((ip, port)) = published_port(c, hc.port) else {
            return (
                HealthState::Unhealthy,
                Some("the health check's port is not published".into()),
            );
        };
        let address = match (ip.as_str(), &self.remote) {
            ("" | "0.0.0.0" | "::", Some(machine)) => machine.clone(),
            ("127.0.0.1" | "::1" | "localhost", Some(machine)) => {
                return (
                    HealthState::Unhealthy,
                    Some(format!(
                        "port {port} is published on the loopback of {machine}, which Vigie cannot reach: publish it on an address Vigie reaches (ports[].hostIp)"
                    )),
                );
            }
            (ip, _) => ip.to_owned(),
        };
        let target = health::Target::new(&address, port, hc);
        match health::probe(&self.http, &target, hc).await {
            Ok(()) => (HealthState::Healthy, None),
            Err(reason) => {
                // A container that died during the checks says more than the HTTP error.
                (HealthState::Unhealthy, Some(reason.to_string()))
            }
        }
    }
}

fn display_host(host: &str) -> &str {
    if host.is_empty() {
        "the local Docker engine"
    } else {
        host
    }
}

fn label<'a>(c: &'a ContainerInspectResponse, key: &str) -> Option<&'a str> {
    c.config
        .as_ref()?
        .labels
        .as_ref()?
        .get(key)
        .map(String::as_str)
}

fn name(c: &ContainerInspectResponse) -> &str {
    c.name
        .as_deref()
        .unwrap_or_default()
        .trim_start_matches('/')
}

fn is_running(c: &ContainerInspectResponse) -> bool {
    matches!(
        c.state.as_ref().and_then(|s| s.status),
        Some(ContainerStateStatusEnum::RUNNING | ContainerStateStatusEnum::RESTARTING)
    )
}

/// The host address and port where container port `port` (default: the first one) is published.
fn published_port(c: &ContainerInspectResponse, port: Option<u16>) -> Option<(String, u16)> {
    let ports = c.network_settings.as_ref()?.ports.as_ref()?;
    let mut keys: Vec<&String> = ports.keys().collect();
    keys.sort();
    let key = match port {
        Some(p) => keys
            .into_iter()
            .find(|k| k.split('/').next() == Some(p.to_string().as_str()))?,
        None => keys.into_iter().next()?,
    };
    let binding = ports.get(key)?.as_ref()?.first()?;
    Some((
        binding.host_ip.clone().unwrap_or_default(),
        binding.host_port.as_ref()?.parse().ok()?,
    ))
}

impl DockerBackend {
    /// Removes every container of one workload (a deleted Release, operator mode).
    ///
    /// # Errors
    /// When the engine refuses.
    pub async fn remove_workload(&self, w: &Workload) -> Result<Vec<String>> {
        let docker = self.docker().await?;
        let options = ListContainersOptionsBuilder::default()
            .all(true)
            .filters(&plan::environment_filter(&w.instance, &w.environment))
            .build();
        let mut removed = Vec::new();
        for c in docker
            .list_containers(Some(options))
            .await
            .map_err(engine)?
        {
            let location = c.labels.as_ref().and_then(|l| l.get(LABEL_LOCATION));
            if location == Some(&w.code_location) {
                self.remove(&docker, c.id.as_deref().unwrap_or_default())
                    .await?;
                removed.extend(c.names.unwrap_or_default());
            }
        }
        Ok(removed)
    }
}

impl Backend for DockerBackend {
    async fn delete(&self, w: &Workload) -> Result<()> {
        self.remove_workload(w).await.map(|_| ())
    }

    async fn orphan(&self, _: &Workload) -> Result<()> {
        // Containers are tied to no object that could take them away.
        Ok(())
    }

    async fn observe(&self, w: &Workload, probe: Probe) -> WorkloadObservation {
        let unreachable = |e: BackendError| WorkloadObservation {
            backend: BackendState::Unreachable {
                reason: e.to_string(),
            },
            sha: None,
            health: HealthState::Unknown,
            reason: None,
        };
        let docker = match self.docker().await {
            Ok(d) => d,
            Err(e) => return unreachable(e),
        };
        let containers = match self.containers(&docker, w).await {
            Ok(c) => c,
            Err(e) => return unreachable(e),
        };
        // What runs is the container started last: the one Vigie started on purpose.
        let current = containers.iter().max_by_key(|c| {
            c.state
                .as_ref()
                .and_then(|s| s.started_at.clone())
                .unwrap_or_default()
        });
        let Some(current) = current else {
            return WorkloadObservation {
                backend: BackendState::Reachable,
                sha: None,
                health: HealthState::Unknown,
                reason: None,
            };
        };
        let sha = label(current, LABEL_SHA).and_then(|s| s.parse().ok());
        let (health, reason) = self.observe_container(w, current, probe).await;
        WorkloadObservation {
            backend: BackendState::Reachable,
            sha,
            health,
            reason,
        }
    }

    async fn apply(&self, w: &Workload, target: &WorkloadTarget) -> Result<()> {
        let mut laps = crate::metrics::Laps::new(std::time::Instant::now());
        let docker = self.docker().await?;
        let service = match &w.artifact {
            Artifact::Compose(a) => {
                let (file, service) = (a.file.clone(), a.service.clone());
                Some(
                    tokio::task::spawn_blocking(move || compose::load(&file, &service))
                        .await
                        .map_err(engine)??,
                )
            }
            _ => None,
        };
        let want = plan::workload_container(w, &target.sha, service.as_ref());
        let keep = target.keep.as_ref().map(|k| plan::container_name(w, k));
        let containers = self.containers(&docker, w).await?;
        laps.lap("list");
        let existing = containers.iter().find(|c| name(c) == want.name);
        let needs_create = match existing {
            Some(c)
                if label(c, LABEL_CONFIG) == want.labels.get(LABEL_CONFIG).map(String::as_str) =>
            {
                false
            }
            Some(c) => {
                self.remove(&docker, c.id.as_deref().unwrap_or_default())
                    .await?;
                true
            }
            None => true,
        };
        // A new container waits for a lane; switching to one that exists does not, and
        // the deploys in the lanes give way to it at each of their engine calls.
        let (_lane, switching) = if needs_create {
            let lane = self.deploys.acquire().await.map_err(engine)?;
            self.right_of_way.give_way().await;
            laps.lap("lane");
            // Created before the old one stops: a failed pull leaves what runs alone.
            self.create(&docker, &want).await?;
            laps.lap("create");
            (Some(lane), None)
        } else {
            (None, Some(self.right_of_way.switch()))
        };
        // The working tree moves only once the container that runs it exists.
        if let Artifact::GitCheckout(g) = &w.artifact {
            self.sync_checkout(&docker, w, &g.path, &want.name, &target.sha)
                .await?;
        }
        let target_running = !needs_create && existing.is_some_and(is_running);
        for c in containers
            .iter()
            .filter(|c| name(c) != want.name && is_running(c))
        {
            if needs_create {
                self.right_of_way.give_way().await;
            }
            self.stop(&docker, c.id.as_deref().unwrap_or_default())
                .await?;
            laps.lap("stop");
        }
        if !target_running {
            if needs_create {
                self.right_of_way.give_way().await;
            }
            match docker
                .start_container(&want.name, None::<StartContainerOptions>)
                .await
            {
                Ok(())
                | Err(bollard::errors::Error::DockerResponseServerError {
                    status_code: 304, ..
                }) => {}
                Err(e) => return Err(engine(e)),
            }
            laps.lap("start");
        }
        // The deploys waiting on it go on while the replaced containers are removed.
        drop(switching);
        tracing::debug!(container = %want.name, steps = %laps, "applied");
        for c in containers
            .iter()
            .filter(|c| name(c) != want.name && Some(name(c)) != keep.as_deref())
        {
            self.remove(&docker, c.id.as_deref().unwrap_or_default())
                .await?;
        }
        self.remove_other_hook_runs(&docker, w, &target.sha).await
    }

    async fn run_hooks(
        &self,
        w: &Workload,
        runs: &[HookRun],
        hooks: &Hooks,
    ) -> Result<BTreeMap<String, HookOutcome>> {
        let docker = self.docker().await?;
        let mut outcomes = BTreeMap::new();
        for run in runs {
            let Some(hook) = hooks.find(&run.name) else {
                continue;
            };
            let name = plan::hook_container_name(w, &hook.name, run);
            let inspect = match docker
                .inspect_container(&name, None::<InspectContainerOptions>)
                .await
            {
                Ok(i) => i,
                Err(bollard::errors::Error::DockerResponseServerError {
                    status_code: 404, ..
                }) => {
                    let time = Timestamp::now().strftime("%Y%m%dT%H%M%SZ").to_string();
                    let plan = plan::hook_container(w, hook, run, &time);
                    if let Err(e) = self.create(&docker, &plan).await {
                        outcomes.insert(
                            run.name.clone(),
                            HookOutcome::Failed {
                                reason: e.to_string(),
                            },
                        );
                        continue;
                    }
                    docker
                        .start_container(&name, None::<StartContainerOptions>)
                        .await
                        .map_err(engine)?;
                    outcomes.insert(run.name.clone(), HookOutcome::Running);
                    continue;
                }
                Err(e) => return Err(engine(e)),
            };
            let state = inspect.state.clone().unwrap_or_default();
            let output = label(&inspect, LABEL_HOOK_OUTPUT).map(str::to_owned);
            let finished = matches!(
                state.status,
                Some(ContainerStateStatusEnum::EXITED | ContainerStateStatusEnum::DEAD)
            );
            let outcome = if finished {
                match state.exit_code {
                    Some(0) => HookOutcome::Succeeded { output },
                    code => {
                        let tail = self.tail(&docker, &name).await;
                        HookOutcome::Failed {
                            reason: format!("exit status {}: {tail}", code.unwrap_or(-1)),
                        }
                    }
                }
            } else {
                let started = state
                    .started_at
                    .as_deref()
                    .and_then(|s| s.parse::<Timestamp>().ok());
                let elapsed = started.map(|t| Timestamp::now().duration_since(t).unsigned_abs());
                if elapsed.is_some_and(|e| e > hook.timeout.get()) {
                    let options = KillContainerOptionsBuilder::default()
                        .signal("SIGKILL")
                        .build();
                    let _ = docker.kill_container(&name, Some(options)).await;
                    HookOutcome::Failed {
                        reason: format!("timed out after {}", hook.timeout),
                    }
                } else {
                    HookOutcome::Running
                }
            };
            outcomes.insert(run.name.clone(), outcome);
        }
        Ok(outcomes)
    }

    async fn prune(
        &self,
        instance: &str,
        environment: &str,
        keep: &[String],
    ) -> Result<Vec<String>> {
        let docker = self.docker().await?;
        let options = ListContainersOptionsBuilder::default()
            .all(true)
            .filters(&plan::environment_filter(instance, environment))
            .build();
        let mut removed = Vec::new();
        for c in docker
            .list_containers(Some(options))
            .await
            .map_err(engine)?
        {
            let location = c
                .labels
                .as_ref()
                .and_then(|l| l.get(LABEL_LOCATION))
                .cloned()
                .unwrap_or_default();
            if !keep.contains(&location) {
                self.remove(&docker, c.id.as_deref().unwrap_or_default())
                    .await?;
                removed.extend(
                    c.names
                        .unwrap_or_default()
                        .into_iter()
                        .map(|n| n.trim_start_matches('/').to_owned()),
                );
            }
        }
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::{RightOfWay, remote_machine};
    use futures::FutureExt;

    #[tokio::test]
    async fn a_deploy_gives_way_while_a_switch_is_under_way_and_only_then() {
        let road = RightOfWay::new();
        assert!(
            road.give_way().now_or_never().is_some(),
            "no switch: a deploy goes on at once"
        );
        let first = road.switch();
        let second = road.switch();
        let waiting = road.give_way();
        tokio::pin!(waiting);
        assert!(
            (&mut waiting).now_or_never().is_none(),
            "two switches under way"
        );
        drop(first);
        assert!(
            (&mut waiting).now_or_never().is_none(),
            "one still under way"
        );
        drop(second);
        tokio::time::timeout(std::time::Duration::from_secs(5), waiting)
            .await
            .expect("the deploy goes on once every switch is done");
        let cloned = road.clone();
        let _third = cloned.switch();
        assert!(
            road.give_way().now_or_never().is_none(),
            "the clients of one engine share its right of way"
        );
    }

    #[test]
    fn remote_engines_name_the_machine_health_checks_go_to() {
        assert_eq!(
            remote_machine("tcp://docker.example:2376").as_deref(),
            Some("docker.example")
        );
        assert_eq!(
            remote_machine("ssh://deploy@vm.example").as_deref(),
            Some("vm.example")
        );
        assert_eq!(
            remote_machine("ssh://deploy@vm.example:2222").as_deref(),
            Some("vm.example")
        );
        assert_eq!(remote_machine("unix:///var/run/docker.sock"), None);
        assert_eq!(
            remote_machine("tcp://127.0.0.1:2376"),
            None,
            "loopback is local"
        );
        assert_eq!(remote_machine("tcp://localhost:2376"), None);
        assert_eq!(remote_machine("ssh://me@127.0.0.2"), None);
        assert_eq!(remote_machine(""), None);
    }
}
