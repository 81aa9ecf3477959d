//! Dagster code locations, first-class. After every observation of a Release whose
//! CodeLocation is a Dagster code location and whose Environment runs a Dagster
//! instance, the pipeline's `judge` step (port [`crate::reconcile::Definitions`]):
//!
//! 1. lists the location in the environment's `workspace.yaml` while something runs,
//!    and unlists it when nothing does ([`workspace`], written by a [`Workspaces`]
//!    store: a file on the host, or a ConfigMap key);
//! 2. asks the webserver to reload the location when the SHA that runs changed, or the
//!    whole workspace when the set of locations did ([`graphql`]);
//! 3. lays the answer over the observation ([`judged`]): definitions that fail to load
//!    make the SHA unhealthy, so it is rolled back like any failed health check, with
//!    the Python error's first lines as the reason.
//!
//! A webserver that does not answer is reported and asked again at the next
//! observation; it never holds a rollback: the SHA a Release goes back to is judged by
//! its health check alone when the webserver is silent.

pub mod configmap;
pub mod graphql;
pub mod workspace;

use std::{borrow::Cow, collections::HashMap, sync::Mutex, time::Duration};

use futures::{FutureExt, future::BoxFuture};

use crate::{
    api::{
        CodeLocationSpec, EnvironmentSpec, Phase, ReleaseStatus, Sha,
        code_location::Artifact,
        dagster::{DagsterInstance, DagsterWorkspace},
        environment::{Backend as BackendSpec, Hook},
    },
    backend::{CodeServer, Probe, Workload},
    lifecycle::{BackendState, WorkloadObservation},
    reconcile::{ReleaseKey, Subject},
};
use graphql::Load;
use release::HealthState;

use crate::api::release;

/// How many lines of a Python error go into the reason (history, notification).
pub const ERROR_LINES: usize = 8;

/// The pre-deploy hook that runs `dagster definitions validate` in the new SHA's image
/// when the Environment asks for it (`dagster.validateDefinitions`).
pub const VALIDATE_HOOK: &str = "vigie-dagster-definitions";

/// How long the definitions' validation may take.
const VALIDATE_TIMEOUT_SECS: u64 = 600;

/// The Environment as a Release of `location` sees it: with the definitions'
/// validation first among the pre-deploy hooks when asked for (the location's image
/// at the new SHA runs `dagster definitions validate`; a failure stops the deploy and
/// keeps what runs, as any pre-deploy hook).
#[must_use]
pub fn environment<'a>(
    environment: &'a EnvironmentSpec,
    location: &CodeLocationSpec,
) -> Cow<'a, EnvironmentSpec> {
    let (Some(instance), Some(dagster), Artifact::Image(image)) = (
        environment.dagster.as_ref(),
        location.dagster.as_ref(),
        &location.artifact,
    ) else {
        return Cow::Borrowed(environment);
    };
    if !instance.validate_definitions {
        return Cow::Borrowed(environment);
    }
    let mut environment = environment.clone();
    environment.hooks.pre_deploy.insert(
        0,
        Hook {
            name: VALIDATE_HOOK.to_owned(),
            image: image.template.clone(),
            command: dagster.validate_command(),
            env: Vec::new(),
            mounts: Vec::new(),
            timeout: crate::api::DurationSpec::from_secs(VALIDATE_TIMEOUT_SECS),
            output: None,
        },
    );
    Cow::Owned(environment)
}

/// Where the webserver reaches a Release's code server: its alias on the environment's
/// network (Docker), the published address (Docker, no network), or its Service
/// (Kubernetes).
///
/// # Errors
/// Docker without a network, when the code server's port is not published.
pub fn address(
    workload: &Workload,
    server: &CodeServer,
    backend: &BackendSpec,
) -> Result<workspace::Entry, String> {
    let entry = |host: String, port: u16| workspace::Entry {
        location: server.location.clone(),
        host,
        port,
    };
    let published = workload
        .container
        .ports
        .iter()
        .find(|p| p.container_port == server.port);
    match backend {
        BackendSpec::Kubernetes(k) => Ok(entry(
            format!(
                "{}.{}.svc",
                crate::backend::kubernetes::objects::object_name(workload),
                k.namespace
            ),
            published.map_or(server.port, |p| p.host_port.unwrap_or(p.container_port)),
        )),
        BackendSpec::Docker(_) if server.network.is_some() => {
            Ok(entry(server.location.clone(), server.port))
        }
        BackendSpec::Docker(_) => match published {
            Some(p) => Ok(entry(
                match p.host_ip.as_deref() {
                    None | Some("" | "0.0.0.0") => "127.0.0.1".to_owned(),
                    Some(ip) => ip.to_owned(),
                },
                p.host_port.unwrap_or(p.container_port),
            )),
            None => Err(format!(
                "the webserver cannot reach the code server of {}: publish its port {} (container.ports) or set the Environment's dagster.network",
                server.location, server.port
            )),
        },
    }
}

/// The observation with the webserver's answer laid over it. `protected` is the SHA a
/// Release keeps or goes back to (the validated one, a rollback's target): a silent
/// webserver leaves its health as the health check found it.
#[must_use]
pub fn judged(
    mut observed: WorkloadObservation,
    answer: Result<&Load, &str>,
    location: &str,
    protected: bool,
) -> WorkloadObservation {
    match answer {
        Ok(Load::Failed(error)) => {
            observed.health = HealthState::Unhealthy;
            observed.reason = Some(format!(
                "the definitions of Dagster location {location} failed to load: {}",
                graphql::first_lines(error, ERROR_LINES)
            ));
            observed
        }
        Ok(Load::Loading | Load::NotListed) if !protected => {
            observed.health = HealthState::Progressing;
            observed.reason = Some(format!(
                "waiting for the Dagster webserver to load location {location}"
            ));
            observed
        }
        Ok(Load::Unreachable(why)) if !protected => {
            observed.health = HealthState::Progressing;
            observed.reason = Some(format!(
                "the Dagster webserver does not reach the code server of location {location} yet: {}",
                graphql::first_lines(why, 2)
            ));
            observed
        }
        Err(why) if !protected => {
            observed.health = HealthState::Progressing;
            observed.reason = Some(format!(
                "the definitions of Dagster location {location} are not judged yet: {why}"
            ));
            observed
        }
        // Loaded; or not judged, for the SHA kept or gone back to.
        Ok(Load::Loaded { .. } | Load::Loading | Load::NotListed | Load::Unreachable(_))
        | Err(_) => observed,
    }
}

/// The image a code server at `sha` reports (`DAGSTER_CURRENT_IMAGE`), for an image
/// artifact.
fn expected_image(workload: &Workload, sha: &Sha) -> Option<String> {
    match &workload.artifact {
        Artifact::Image(i) => Some(crate::backend::substitute(&i.template, sha)),
        _ => None,
    }
}

/// Whether `sha` is what the Release keeps or goes back to.
#[must_use]
pub fn protected(status: &ReleaseStatus, sha: &Sha) -> bool {
    status.validated_sha.as_ref() == Some(sha)
        || (status.phase == Phase::RollingBack
            && status
                .rollout
                .as_ref()
                .and_then(|r| r.rollback_point.as_ref())
                == Some(sha))
}

/// Reads and writes workspaces.
pub trait Workspaces: Send + Sync {
    /// Lists `location` (served by `entry`) or unlists it (`None`) in the workspace of
    /// an environment whose backend is `backend`; `Ok(true)` when the set of listed
    /// locations changed.
    fn set<'a>(
        &'a self,
        backend: &'a BackendSpec,
        workspace: &'a DagsterWorkspace,
        location: &'a str,
        entry: Option<workspace::Entry>,
    ) -> BoxFuture<'a, Result<bool, String>>;
}

/// Workspaces kept in files on this host, written whole and renamed into place (mount
/// their directory, not the file: a renamed file is not seen through a file mount).
#[derive(Debug, Default)]
pub struct Files {
    /// One writer at a time per file.
    locks: Mutex<HashMap<String, std::sync::Arc<tokio::sync::Mutex<()>>>>,
}

impl Files {
    fn lock(&self, path: &str) -> std::sync::Arc<tokio::sync::Mutex<()>> {
        self.locks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(path.to_owned())
            .or_default()
            .clone()
    }
}

impl Workspaces for Files {
    fn set<'a>(
        &'a self,
        _backend: &'a BackendSpec,
        where_: &'a DagsterWorkspace,
        location: &'a str,
        entry: Option<workspace::Entry>,
    ) -> BoxFuture<'a, Result<bool, String>> {
        async move {
            let Some(path) = where_.file.clone() else {
                return Err(
                    "a ConfigMap workspace is written by vigie controller; vigie run writes workspace.file".into(),
                );
            };
            let lock = self.lock(&path);
            let _held = lock.lock().await;
            let location = location.to_owned();
            tokio::task::spawn_blocking(move || {
                let p = std::path::Path::new(&path);
                let text = match std::fs::read_to_string(p) {
                    Ok(t) => t,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
                    Err(e) => return Err(format!("failed to read the workspace {path}: {e}")),
                };
                match workspace::set(&text, &location, entry.as_ref())
                    .map_err(|e| format!("workspace {path}: {e}"))?
                {
                    workspace::Change::Unchanged => Ok(false),
                    workspace::Change::Changed { text, listed } => {
                        crate::store::write_atomically(p, text.as_bytes()).map_err(
                            |(action, e)| format!("failed to {action} the workspace {path}: {e}"),
                        )?;
                        Ok(listed)
                    }
                }
            })
            .await
            .map_err(|e| format!("failed to write the workspace: {e}"))?
        }
        .boxed()
    }
}

/// What was last judged for a Release.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Judgement {
    sha: Sha,
    load: Load,
}

/// The real `judge` step: a workspace store and the webserver's GraphQL API, shared by
/// both modes.
pub struct Instances<W> {
    workspaces: W,
    http: reqwest::Client,
    judged: Mutex<HashMap<ReleaseKey, Judgement>>,
    /// What was last written per (workspace, location): an unchanged entry is not read
    /// and written again at every observation, only at full probes (a hand edit is
    /// put right then).
    written: Mutex<HashMap<(String, String), Option<workspace::Entry>>>,
}

impl<W: Workspaces> Instances<W> {
    /// Judges through `workspaces`.
    ///
    /// # Panics
    /// When the TLS backend cannot start (never with rustls).
    #[must_use]
    pub fn new(workspaces: W) -> Self {
        Self {
            workspaces,
            http: reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(5))
                .build()
                .expect("an HTTP client with rustls"),
            judged: Mutex::new(HashMap::new()),
            written: Mutex::new(HashMap::new()),
        }
    }

    /// Lists (or unlists) `location` in `where_` through the store, unless that was the
    /// last thing written there and `again` is false; `Ok(true)` when the set of listed
    /// locations changed.
    async fn list(
        &self,
        backend: &BackendSpec,
        where_: &DagsterWorkspace,
        location: &str,
        entry: Option<workspace::Entry>,
        again: bool,
    ) -> Result<bool, String> {
        // The file, or the ConfigMap key in the environment's namespace.
        let place = match (&where_.file, &where_.config_map, backend) {
            (Some(file), _, _) => file.clone(),
            (None, Some(cm), BackendSpec::Kubernetes(k)) => {
                format!("{}/{}/{}", k.namespace, cm.name, cm.key)
            }
            _ => String::new(),
        };
        let key = (place, location.to_owned());
        let cached = || {
            self.written
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .get(&key)
                .cloned()
        };
        if !again && cached().as_ref() == Some(&entry) {
            return Ok(false);
        }
        let listed = self
            .workspaces
            .set(backend, where_, location, entry.clone())
            .await;
        let mut written = self
            .written
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match &listed {
            Ok(_) => written.insert(key, entry),
            Err(_) => written.remove(&key),
        };
        listed
    }

    fn last(&self, key: &ReleaseKey) -> Option<Judgement> {
        self.judged
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(key)
            .cloned()
    }

    fn remember(&self, key: &ReleaseKey, judgement: Option<Judgement>) {
        let mut judged = self
            .judged
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match judgement {
            Some(j) => judged.insert(key.clone(), j),
            None => judged.remove(key),
        };
    }

    async fn ask(
        &self,
        instance: &DagsterInstance,
        request: &serde_json::Value,
        location: &str,
    ) -> Result<Load, graphql::GraphqlError> {
        graphql::ask(
            &self.http,
            &instance.graphql_url,
            instance.timeout.get(),
            request,
            location,
        )
        .await
    }

    /// The webserver's answer to `request` about `location` at `sha`: a location
    /// listed in the file but not yet by the webserver is read again with the whole
    /// workspace; one still showing another SHA's image is not judged yet.
    async fn verdict(
        &self,
        instance: &DagsterInstance,
        request: &serde_json::Value,
        listed: bool,
        location: &str,
        workload: &Workload,
        sha: &Sha,
    ) -> Result<Load, graphql::GraphqlError> {
        let mut answer = self.ask(instance, request, location).await;
        if listed || matches!(answer, Ok(Load::NotListed)) {
            // Just written, or the webserver restarted, or the ConfigMap reached its
            // pod since: the whole workspace is read again, then the definitions.
            if !listed {
                answer = self
                    .ask(instance, &graphql::reload_workspace(), location)
                    .await;
            }
            if answer.is_ok() {
                answer = self.ask(instance, &graphql::workspace(), location).await;
            }
        }
        if let (
            Ok(Load::Loaded {
                image: Some(served),
                ..
            }),
            Some(expected),
        ) = (&answer, expected_image(workload, sha))
            && *served != expected
        {
            return Ok(Load::Unreachable(format!(
                "it still serves {served}, not {expected}"
            )));
        }
        answer
    }

    /// Unlists `location` from the environment's workspace (its Release is gone) and
    /// has the webserver drop it; failures are logged (nothing runs it any more).
    pub async fn forget(&self, environment: &EnvironmentSpec, location: &str) {
        let Some(instance) = environment.dagster.as_ref() else {
            return;
        };
        match self
            .list(
                &environment.backend,
                &instance.workspace,
                location,
                None,
                false,
            )
            .await
        {
            Ok(false) => {}
            Ok(true) => {
                if let Err(e) = self
                    .ask(instance, &graphql::reload_workspace(), location)
                    .await
                {
                    tracing::warn!(location, error = %e, "the Dagster webserver did not reload its workspace");
                }
            }
            Err(e) => tracing::warn!(location, error = %e, "the Dagster workspace was not written"),
        }
    }

    /// The pipeline's `judge` step for one Release (see the module's documentation).
    pub async fn judge(
        &self,
        subject: &Subject<'_>,
        status: &ReleaseStatus,
        observed: WorkloadObservation,
        probe: Probe,
    ) -> WorkloadObservation {
        let (Some(instance), Some(server)) = (
            subject.environment.dagster.as_ref(),
            subject.workload.dagster.as_ref(),
        ) else {
            return observed;
        };
        if matches!(observed.backend, BackendState::Unreachable { .. }) {
            return observed;
        }
        let location = server.location.as_str();
        // The workspace lists what runs, and nothing else.
        let entry = match observed.sha {
            Some(_) => match address(subject.workload, server, &subject.environment.backend) {
                Ok(entry) => Some(entry),
                Err(why) => {
                    return judged(observed, Err(&why), location, false);
                }
            },
            None => None,
        };
        let listed = match self
            .list(
                &subject.environment.backend,
                &instance.workspace,
                location,
                entry,
                probe == Probe::Full,
            )
            .await
        {
            Ok(listed) => listed,
            Err(why) => {
                tracing::warn!(location, error = %why, "the Dagster workspace was not written");
                let protected = observed.sha.as_ref().is_some_and(|s| protected(status, s));
                return judged(observed, Err(&why), location, protected);
            }
        };
        let Some(sha) = observed.sha.clone() else {
            self.remember(subject.key, None);
            if listed {
                // The location left: the webserver drops it (failures only logged).
                if let Err(e) = self
                    .ask(instance, &graphql::reload_workspace(), location)
                    .await
                {
                    tracing::warn!(location, error = %e, "the Dagster webserver did not reload its workspace");
                }
            }
            return observed;
        };
        if observed.health != HealthState::Healthy {
            // Not serving yet (or not at all): nothing to ask the webserver.
            return observed;
        }
        let last = self.last(subject.key).filter(|j| j.sha == sha);
        let request = if listed {
            graphql::reload_workspace()
        } else if last.is_none() {
            graphql::reload_location(location)
        } else if probe == Probe::Full {
            graphql::workspace()
        } else {
            let load = last.map_or(Load::Loading, |j| j.load);
            return judged(observed, Ok(&load), location, protected(status, &sha));
        };
        let answer = self
            .verdict(instance, &request, listed, location, subject.workload, &sha)
            .await;
        match &answer {
            Ok(load @ (Load::Loaded { .. } | Load::Failed(_))) => {
                self.remember(
                    subject.key,
                    Some(Judgement {
                        sha: sha.clone(),
                        load: load.clone(),
                    }),
                );
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(location, sha = %sha.short(), error = %e, "the Dagster webserver did not judge the location; asked again at the next observation");
            }
        }
        let answer = answer.map_err(|e| e.to_string());
        judged(
            observed,
            answer.as_ref().map_err(String::as_str),
            location,
            protected(status, &sha),
        )
    }
}

impl<W: Workspaces> crate::reconcile::Definitions for Instances<W> {
    fn judge<'a>(
        &'a self,
        subject: &'a Subject<'a>,
        status: &'a ReleaseStatus,
        observed: WorkloadObservation,
        probe: Probe,
    ) -> BoxFuture<'a, WorkloadObservation> {
        Instances::judge(self, subject, status, observed, probe).boxed()
    }

    fn forget<'a>(
        &'a self,
        environment: &'a EnvironmentSpec,
        location: &'a str,
    ) -> BoxFuture<'a, ()> {
        Instances::forget(self, environment, location).boxed()
    }
}

#[cfg(test)]
mod tests;
