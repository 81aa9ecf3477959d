//! In-memory fakes of every port, for the pipeline's tests: a backend that runs one
//! SHA at a time, a store, CI verdicts, revisions, a notifier and a clock, all writing
//! what they are asked into one journal so a test can check the order.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
};

use jiff::{SignedDuration, Timestamp};

use super::{Error, Subject, ports};
use crate::{
    api::{ReleaseStatus, Sha, environment::Hooks, release::HealthState},
    backend::{Backend, BackendError, Probe, Workload},
    error::Category,
    lifecycle::{
        BackendState, CiVerdict, HookOutcome, HookRun, Notification, WorkloadObservation,
        WorkloadTarget,
    },
};

/// What the ports were asked, in order.
#[derive(Clone, Default)]
pub struct Journal(Arc<Mutex<Vec<String>>>);

impl Journal {
    pub fn push(&self, line: impl Into<String>) {
        self.0.lock().unwrap().push(line.into());
    }

    pub fn lines(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }

    pub fn clear(&self) {
        self.0.lock().unwrap().clear();
    }
}

/// How the fake engine behaves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Engine {
    /// Runs what it is told; each SHA's health is in `Backend::health`.
    Up,
    /// Answers nothing.
    Down,
    /// Answers, but refuses to change anything.
    Refuses,
}

/// A backend running one SHA, with a health per SHA (healthy unless told).
pub struct FakeBackend {
    pub journal: Journal,
    pub engine: Mutex<Engine>,
    pub running: Mutex<Option<Sha>>,
    pub unhealthy: Mutex<Vec<Sha>>,
    /// SHAs whose image does not exist.
    pub missing: Mutex<Vec<Sha>>,
    /// Hook outcomes to report, by hook name.
    pub hooks: Mutex<BTreeMap<String, HookOutcome>>,
}

impl FakeBackend {
    pub fn new(journal: &Journal) -> Self {
        Self {
            journal: journal.clone(),
            engine: Mutex::new(Engine::Up),
            running: Mutex::new(None),
            unhealthy: Mutex::new(Vec::new()),
            missing: Mutex::new(Vec::new()),
            hooks: Mutex::new(BTreeMap::new()),
        }
    }

    pub fn running(&self) -> Option<Sha> {
        self.running.lock().unwrap().clone()
    }
}

impl Backend for FakeBackend {
    async fn observe(&self, _: &Workload, _: Probe) -> WorkloadObservation {
        if *self.engine.lock().unwrap() == Engine::Down {
            return WorkloadObservation {
                backend: BackendState::Unreachable {
                    reason: "engine down".into(),
                },
                sha: None,
                health: HealthState::Unknown,
                reason: None,
            };
        }
        let sha = self.running();
        let health = match &sha {
            None => HealthState::Unknown,
            Some(s) if self.unhealthy.lock().unwrap().contains(s) => HealthState::Unhealthy,
            Some(_) => HealthState::Healthy,
        };
        WorkloadObservation {
            backend: BackendState::Reachable,
            sha,
            reason: (health == HealthState::Unhealthy).then(|| "health check failed".into()),
            health,
        }
    }

    async fn apply(&self, _: &Workload, target: &WorkloadTarget) -> crate::backend::Result<()> {
        if *self.engine.lock().unwrap() != Engine::Up {
            return Err(BackendError::Engine(
                "the engine refused: no space left".into(),
            ));
        }
        if self.missing.lock().unwrap().contains(&target.sha) {
            return Err(BackendError::Image {
                image: format!("app:{}", target.sha),
                reason: "not found".into(),
            });
        }
        self.journal.push(format!("apply {}", target.sha.short()));
        *self.running.lock().unwrap() = Some(target.sha.clone());
        Ok(())
    }

    async fn run_hooks(
        &self,
        _: &Workload,
        runs: &[HookRun],
        _: &Hooks,
    ) -> crate::backend::Result<BTreeMap<String, HookOutcome>> {
        let hooks = self.hooks.lock().unwrap().clone();
        Ok(runs
            .iter()
            .map(|r| {
                let outcome = hooks.get(&r.name).cloned().unwrap_or(HookOutcome::Running);
                (r.name.clone(), outcome)
            })
            .collect())
    }

    async fn delete(&self, _: &Workload) -> crate::backend::Result<()> {
        *self.running.lock().unwrap() = None;
        Ok(())
    }

    async fn orphan(&self, _: &Workload) -> crate::backend::Result<()> {
        Ok(())
    }

    async fn prune(&self, _: &str, _: &str, _: &[String]) -> crate::backend::Result<Vec<String>> {
        Ok(Vec::new())
    }
}

/// A store keeping statuses in memory; it can be made to refuse writes.
pub struct FakeStore {
    pub journal: Journal,
    pub statuses: Mutex<BTreeMap<String, ReleaseStatus>>,
    pub refuse: Mutex<bool>,
}

impl FakeStore {
    pub fn new(journal: &Journal) -> Self {
        Self {
            journal: journal.clone(),
            statuses: Mutex::new(BTreeMap::new()),
            refuse: Mutex::new(false),
        }
    }

    pub fn get(&self, key: &str) -> ReleaseStatus {
        self.statuses
            .lock()
            .unwrap()
            .get(key)
            .cloned()
            .unwrap_or_default()
    }
}

impl ports::Store for FakeStore {
    async fn status(&self, subject: &Subject<'_>) -> ReleaseStatus {
        self.get(&subject.key.to_string())
    }

    async fn record(&self, subject: &Subject<'_>, status: &ReleaseStatus) -> Result<(), Error> {
        if *self.refuse.lock().unwrap() {
            return Err(Error::Record {
                category: Category::Store,
                source: "disk full".into(),
            });
        }
        self.journal
            .push(format!("record {}", status.phase.as_str()));
        self.statuses
            .lock()
            .unwrap()
            .insert(subject.key.to_string(), status.clone());
        Ok(())
    }
}

/// CI verdicts set by the test.
#[derive(Default)]
pub struct FakeCi(pub Mutex<BTreeMap<Sha, CiVerdict>>);

impl FakeCi {
    pub fn set(&self, sha: &Sha, state: crate::api::release::CiState) {
        self.0.lock().unwrap().insert(
            sha.clone(),
            CiVerdict {
                state,
                url: Some(format!("https://ci.example/{}", sha.short())),
                failed_checks: Vec::new(),
                description: None,
            },
        );
    }
}

impl ports::Ci for FakeCi {
    async fn verdicts(&self, _: &Subject<'_>, _: Option<&Sha>) -> BTreeMap<Sha, CiVerdict> {
        self.0.lock().unwrap().clone()
    }
}

/// Branches and tags of the repository, set by the test.
#[derive(Default)]
pub struct FakeRevisions(pub Mutex<BTreeMap<String, Sha>>);

impl ports::Revisions for FakeRevisions {
    async fn resolve(&self, _: &str, revision: &str) -> Result<Sha, crate::git::GitError> {
        if let Ok(sha) = revision.parse() {
            return Ok(sha);
        }
        self.0
            .lock()
            .unwrap()
            .get(revision)
            .cloned()
            .ok_or_else(|| crate::git::GitError::NotFound(format!("no ref {revision}")))
    }
}

/// Records the transitions it is told.
pub struct FakeNotifier {
    pub journal: Journal,
    pub sent: Mutex<Vec<Notification>>,
}

impl FakeNotifier {
    pub fn new(journal: &Journal) -> Self {
        Self {
            journal: journal.clone(),
            sent: Mutex::new(Vec::new()),
        }
    }

    pub fn events(&self) -> Vec<String> {
        self.sent
            .lock()
            .unwrap()
            .iter()
            .map(|n| crate::metrics::event_name(n.event).to_owned())
            .collect()
    }
}

impl ports::Notifier for FakeNotifier {
    async fn transitions(&self, _: &Subject<'_>, notifications: &[Notification]) {
        for n in notifications {
            self.journal
                .push(format!("notify {}", crate::metrics::event_name(n.event)));
        }
        self.sent.lock().unwrap().extend_from_slice(notifications);
    }

    async fn action_failed(&self, _: &Subject<'_>, error: &Error) {
        self.journal
            .push(format!("failed {}", error.category().as_str()));
    }
}

/// A clock the test moves.
pub struct FakeClock(pub Mutex<Timestamp>);

impl FakeClock {
    pub fn new() -> Self {
        Self(Mutex::new("2026-11-24T10:00:00Z".parse().unwrap()))
    }

    pub fn advance(&self, seconds: i64) {
        let mut now = self.0.lock().unwrap();
        *now = now.checked_add(SignedDuration::from_secs(seconds)).unwrap();
    }
}

impl ports::Clock for FakeClock {
    fn now(&self) -> Timestamp {
        *self.0.lock().unwrap()
    }
}

/// Records what the forge would be asked to show after each reconcile.
#[derive(Default)]
pub struct FakeForge(pub Mutex<Vec<Vec<(Sha, crate::forge::rules::State)>>>);

impl FakeForge {
    /// The states reported for `sha`, in order, repeats folded.
    pub fn states_of(&self, sha: &Sha) -> Vec<crate::forge::rules::State> {
        let mut out = Vec::new();
        for round in self.0.lock().unwrap().iter() {
            for (s, state) in round {
                if s == sha && out.last() != Some(state) {
                    out.push(*state);
                }
            }
        }
        out
    }
}

impl ports::Forge for FakeForge {
    fn report(&self, subject: &Subject<'_>, status: &ReleaseStatus) {
        let wanted = crate::forge::rules::desired(status, &subject.spec.environment)
            .into_iter()
            .map(|w| (w.sha, w.state))
            .collect();
        self.0.lock().unwrap().push(wanted);
    }
}

/// Definitions judged by a list of SHAs whose definitions fail to load.
#[derive(Default)]
pub struct FakeDefinitions(Mutex<BTreeMap<Sha, String>>);

impl FakeDefinitions {
    /// `sha`'s definitions fail to load with `error`.
    pub fn fail(&self, sha: &Sha, error: &str) {
        self.0.lock().unwrap().insert(sha.clone(), error.to_owned());
    }
}

impl super::Definitions for FakeDefinitions {
    fn judge<'a>(
        &'a self,
        _: &'a Subject<'a>,
        status: &'a ReleaseStatus,
        observed: WorkloadObservation,
        _: crate::backend::Probe,
    ) -> futures::future::BoxFuture<'a, WorkloadObservation> {
        let failed = observed
            .sha
            .as_ref()
            .and_then(|s| self.0.lock().unwrap().get(s).cloned());
        let out = match (failed, observed.sha.clone()) {
            (Some(error), Some(sha)) => crate::dagster::judged(
                observed,
                Ok(&crate::dagster::graphql::Load::Failed(error)),
                "sales",
                crate::dagster::protected(status, &sha),
            ),
            _ => observed,
        };
        futures::FutureExt::boxed(futures::future::ready(out))
    }

    fn forget<'a>(
        &'a self,
        _: &'a crate::api::EnvironmentSpec,
        _: &'a str,
    ) -> futures::future::BoxFuture<'a, ()> {
        futures::FutureExt::boxed(futures::future::ready(()))
    }
}
