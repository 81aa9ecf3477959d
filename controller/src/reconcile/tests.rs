//! The lifecycle scenarios through the same `reconcile::release` both modes call, with
//! an in-memory fake behind every port: the order of record and act, rollbacks,
//! timeouts, restarts, hooks, supersession, an unreachable engine, a missing image and
//! a store that refuses writes.

use super::{
    Error, Memory, Ports, Reconciled, ReleaseKey, Subject,
    fake::{
        Engine, FakeBackend, FakeCi, FakeClock, FakeDefinitions, FakeForge, FakeNotifier,
        FakeRevisions, FakeStore, Journal,
    },
    release,
};
use crate::{
    api::{
        CodeLocation, Environment, Phase, Release, ReleaseStatus, Sha,
        release::{CiState, HistoryEvent},
    },
    backend::Workload,
    error::Category,
    lifecycle::HookOutcome,
    metrics::Metrics,
};

const MANIFESTS: &str = r#"
apiVersion: vigie.dev/v1alpha1
kind: Environment
metadata: {name: preprod, namespace: apps}
spec:
  backend: {docker: {}}
  verification: {timeout: 5m, healthTimeout: 1m}
---
apiVersion: vigie.dev/v1alpha1
kind: CodeLocation
metadata: {name: app, namespace: apps}
spec:
  repo: {url: "https://git.example/app.git"}
  ci: {webhook: {}}
  artifact: {image: {template: "app:{sha}"}}
---
apiVersion: vigie.dev/v1alpha1
kind: Release
metadata: {name: app-preprod, namespace: apps}
spec: {codeLocation: app, environment: preprod}
"#;

fn sha(c: char) -> Sha {
    c.to_string().repeat(40).parse().unwrap()
}

/// One Release and a fake behind every port.
struct World {
    journal: Journal,
    backend: FakeBackend,
    store: FakeStore,
    ci: FakeCi,
    revisions: FakeRevisions,
    notifier: FakeNotifier,
    forge: FakeForge,
    definitions: FakeDefinitions,
    clock: FakeClock,
    memory: Memory,
    metrics: Metrics,
    key: ReleaseKey,
    release: Release,
    environment: Environment,
    location: CodeLocation,
}

impl World {
    fn new() -> Self {
        Self::with(|_| {})
    }

    fn with(change: impl FnOnce(&mut Environment)) -> Self {
        let docs: Vec<serde_json::Value> = serde_norway::Deserializer::from_str(MANIFESTS)
            .map(|d| serde::Deserialize::deserialize(d).unwrap())
            .collect();
        let mut environment: Environment = serde_json::from_value(docs[0].clone()).unwrap();
        change(&mut environment);
        let journal = Journal::default();
        Self {
            backend: FakeBackend::new(&journal),
            store: FakeStore::new(&journal),
            ci: FakeCi::default(),
            revisions: FakeRevisions::default(),
            notifier: FakeNotifier::new(&journal),
            forge: FakeForge::default(),
            definitions: FakeDefinitions::default(),
            clock: FakeClock::new(),
            memory: Memory::default(),
            metrics: Metrics::default(),
            key: ReleaseKey::new("apps", "app-preprod"),
            location: serde_json::from_value(docs[1].clone()).unwrap(),
            release: serde_json::from_value(docs[2].clone()).unwrap(),
            environment,
            journal,
        }
    }

    fn workload(&self) -> Workload {
        Workload::resolve(
            "test",
            "app-preprod",
            &self.release.spec,
            &self.location.spec,
            &self.environment.spec,
        )
    }

    /// One reconcile; an action that failed after the record is returned as an error.
    async fn reconcile(&self) -> Result<Reconciled, Error> {
        let workload = self.workload();
        let subject = Subject {
            key: &self.key,
            spec: &self.release.spec,
            generation: Some(1),
            environment: &self.environment.spec,
            windows: None,
            workload: &workload,
            ci: &self.location.spec.ci,
            upstream: None,
        };
        let ports = Ports {
            backend: Ok(&self.backend),
            store: &self.store,
            ci: &self.ci,
            revisions: &self.revisions,
            notifier: &self.notifier,
            forge: &self.forge,
            definitions: &self.definitions,
            clock: &self.clock,
            memory: &self.memory,
            metrics: &self.metrics,
        };
        let mut done = release(&subject, &ports).await?;
        match done.failed.take() {
            Some(e) => Err(e),
            None => Ok(done),
        }
    }

    /// Reconciles until the phase is `phase` (at most ten times, a second apart).
    async fn until(&self, phase: Phase) -> ReleaseStatus {
        for _ in 0..10 {
            let _ = self.reconcile().await;
            if self.status().phase == phase {
                return self.status();
            }
            self.clock.advance(1);
        }
        panic!(
            "never {phase:?}: {:#?}\n{:?}",
            self.status(),
            self.journal.lines()
        );
    }

    fn status(&self) -> ReleaseStatus {
        self.store.get(&self.key.to_string())
    }

    fn revision(&mut self, sha: &Sha) {
        self.release.spec.revision = Some(sha.to_string());
    }

    /// A, deployed and validated.
    async fn validated(a: &Sha) -> Self {
        let mut w = Self::new();
        w.revision(a);
        w.ci.set(a, CiState::Success);
        w.until(Phase::Validated).await;
        w.journal.clear();
        w
    }

    fn position(&self, line: &str) -> usize {
        let lines = self.journal.lines();
        lines
            .iter()
            .position(|l| l == line)
            .unwrap_or_else(|| panic!("no {line:?} in {lines:?}"))
    }
}

#[tokio::test]
async fn a_new_sha_is_recorded_before_it_is_deployed_then_validated_by_ci() {
    let mut w = World::new();
    let a = sha('a');
    w.revision(&a);
    let done = w.reconcile().await.unwrap();
    assert_eq!(done.status.phase, Phase::Deploying);
    assert!(w.position("record Deploying") < w.position(&format!("apply {}", a.short())));
    assert_eq!(w.backend.running(), Some(a.clone()));
    w.until(Phase::Verifying).await;
    w.ci.set(&a, CiState::Success);
    let status = w.until(Phase::Validated).await;
    assert_eq!(status.validated_sha, Some(a));
    let events = w.notifier.events();
    assert!(events.contains(&"DeployStarted".to_owned()), "{events:?}");
    assert!(events.contains(&"Validated".to_owned()), "{events:?}");
    let metrics = w.metrics.render();
    assert!(
        metrics.contains(r#"vigie_transitions_total{event="Validated"} 1"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_red_verdict_rolls_back_to_the_validated_sha_recorded_first() {
    let a = sha('a');
    let b = sha('b');
    let mut w = World::validated(&a).await;
    w.revision(&b);
    w.until(Phase::Verifying).await;
    assert_eq!(w.status().rollout.unwrap().rollback_point, Some(a.clone()));
    w.journal.clear();
    w.ci.set(&b, CiState::Failure);
    let status = w.until(Phase::RolledBack).await;
    assert_eq!(w.backend.running(), Some(a.clone()));
    // The decision to go back is on record before the engine moves.
    let lines = w.journal.lines();
    let back = w.position(&format!("apply {}", a.short()));
    assert!(
        lines[..back].iter().any(|l| l.starts_with("record ")),
        "{lines:?}"
    );
    assert!(status.quarantine.iter().any(|q| q.sha == b), "{status:#?}");
    assert!(
        w.notifier.events().contains(&"RolledBack".to_owned()),
        "{:?}",
        w.notifier.events()
    );
    // Quarantined: the same revision is not deployed again.
    w.journal.clear();
    w.clock.advance(60);
    w.reconcile().await.unwrap();
    assert!(
        !w.journal.lines().iter().any(|l| l.starts_with("apply")),
        "{:?}",
        w.journal.lines()
    );
}

#[tokio::test]
async fn the_forge_is_shown_each_recorded_state_even_when_the_engine_refuses() {
    use crate::forge::rules::State::{Failure, InProgress, Inactive, Success};
    let (a, b, c) = (sha('a'), sha('b'), sha('c'));
    let mut w = World::validated(&a).await;
    assert_eq!(w.forge.states_of(&a), vec![InProgress, Success]);
    // Red: B fails and A serves again, whatever the engine says after the record.
    w.revision(&b);
    w.until(Phase::Verifying).await;
    *w.backend.engine.lock().unwrap() = Engine::Refuses;
    w.ci.set(&b, CiState::Failure);
    let _ = w.reconcile().await;
    assert_eq!(w.status().phase, Phase::RollingBack);
    assert_eq!(w.forge.states_of(&b), vec![InProgress, Failure]);
    *w.backend.engine.lock().unwrap() = Engine::Up;
    w.until(Phase::RolledBack).await;
    assert_eq!(w.forge.states_of(&a), vec![InProgress, Success]);
    // C validated: it succeeds and A, which it replaced, goes inactive.
    w.revision(&c);
    w.until(Phase::Verifying).await;
    w.ci.set(&c, CiState::Success);
    w.until(Phase::Validated).await;
    assert_eq!(w.forge.states_of(&c), vec![InProgress, Success]);
    assert_eq!(w.forge.states_of(&a), vec![InProgress, Success, Inactive]);
}

#[tokio::test]
async fn no_verdict_within_the_verification_timeout_rolls_back() {
    let a = sha('a');
    let b = sha('b');
    let mut w = World::validated(&a).await;
    w.revision(&b);
    w.until(Phase::Verifying).await;
    w.clock.advance(6 * 60);
    let status = w.until(Phase::RolledBack).await;
    assert_eq!(w.backend.running(), Some(a));
    assert!(
        status
            .history
            .iter()
            .any(|h| h.event == HistoryEvent::RolledBack)
    );
}

#[tokio::test]
async fn a_restart_after_the_record_deploys_once_and_keeps_the_rollback_point() {
    let a = sha('a');
    let b = sha('b');
    let mut w = World::validated(&a).await;
    w.revision(&b);
    // The deploy of B is recorded, then the engine fails it (as a process dying before
    // the engine is told would).
    *w.backend.engine.lock().unwrap() = Engine::Refuses;
    let _ = w.reconcile().await;
    assert_eq!(w.status().rollout.as_ref().unwrap().sha, b);
    assert_eq!(w.backend.running(), Some(a.clone()));
    // A new process: its memory is empty, the store and the engine are not.
    w.memory = Memory::default();
    *w.backend.engine.lock().unwrap() = Engine::Up;
    w.journal.clear();
    w.until(Phase::Verifying).await;
    let applies: Vec<String> = w
        .journal
        .lines()
        .into_iter()
        .filter(|l| l.starts_with("apply"))
        .collect();
    assert_eq!(applies, vec![format!("apply {}", b.short())]);
    assert_eq!(
        w.status().rollout.unwrap().rollback_point,
        Some(a),
        "the rollback point survives the restart"
    );
    // Settled: reconciling again does not deploy again.
    w.journal.clear();
    w.reconcile().await.unwrap();
    assert!(!w.journal.lines().iter().any(|l| l.starts_with("apply")));
}

#[tokio::test]
async fn a_failed_pre_deploy_hook_keeps_the_workload_where_it_is() {
    let a = sha('a');
    let b = sha('b');
    let mut w = World::validated(&a).await;
    w.environment
        .spec
        .hooks
        .pre_deploy
        .push(crate::api::environment::Hook {
            name: "backup".into(),
            image: "backup:1".into(),
            command: vec![],
            env: vec![],
            mounts: vec![],
            timeout: "10m".parse().unwrap(),
            output: None,
        });
    w.backend.hooks.lock().unwrap().insert(
        "backup".into(),
        HookOutcome::Failed {
            reason: "exit 1".into(),
        },
    );
    w.revision(&b);
    for _ in 0..4 {
        let _ = w.reconcile().await;
        w.clock.advance(1);
    }
    assert_eq!(w.backend.running(), Some(a));
    assert_ne!(w.status().phase, Phase::Verifying);
    assert!(
        w.notifier.events().contains(&"HookFailed".to_owned()),
        "{:?}",
        w.notifier.events()
    );
}

#[tokio::test]
async fn a_newer_revision_supersedes_the_one_in_verification() {
    let a = sha('a');
    let b = sha('b');
    let c = sha('c');
    let mut w = World::validated(&a).await;
    w.revision(&b);
    w.until(Phase::Verifying).await;
    w.revision(&c);
    w.until(Phase::Verifying).await;
    let status = w.status();
    assert_eq!(status.rollout.as_ref().unwrap().sha, c);
    assert_eq!(status.rollout.unwrap().rollback_point, Some(a));
    assert_eq!(w.backend.running(), Some(c));
}

#[tokio::test]
async fn an_unreachable_engine_is_reported_and_nothing_is_deployed() {
    let a = sha('a');
    let b = sha('b');
    let mut w = World::validated(&a).await;
    *w.backend.engine.lock().unwrap() = Engine::Down;
    w.revision(&b);
    w.reconcile().await.unwrap();
    let status = w.status();
    let degraded = status
        .conditions
        .iter()
        .find(|c| c.type_ == crate::lifecycle::DEGRADED)
        .unwrap();
    assert!(degraded.message.contains("engine down"), "{degraded:?}");
    assert_eq!(w.backend.running(), Some(a));
    assert!(
        !w.journal.lines().iter().any(|l| l.starts_with("apply")),
        "{:?}",
        w.journal.lines()
    );
}

#[tokio::test]
async fn an_engine_that_refuses_the_deploy_is_on_record_and_retried() {
    let a = sha('a');
    let b = sha('b');
    let mut w = World::validated(&a).await;
    *w.backend.engine.lock().unwrap() = Engine::Refuses;
    w.revision(&b);
    let result = w.reconcile().await;
    assert!(
        matches!(&result, Err(e) if e.category() == Category::Engine),
        "{result:?}"
    );
    let status = w.status();
    assert_eq!(status.rollout.as_ref().map(|r| &r.sha), Some(&b));
    assert!(
        status
            .message
            .as_deref()
            .is_some_and(|m| m.starts_with("failed to apply: ") && m.contains("no space left")),
        "{status:#?}"
    );
    assert!(w.journal.lines().contains(&"failed engine".to_owned()));
    *w.backend.engine.lock().unwrap() = Engine::Up;
    w.until(Phase::Verifying).await;
    assert_eq!(w.backend.running(), Some(b));
}

#[tokio::test]
async fn a_missing_image_waits_for_its_artifact_without_failing_the_health_timeout() {
    let a = sha('a');
    let b = sha('b');
    let mut w = World::validated(&a).await;
    w.backend.missing.lock().unwrap().push(b.clone());
    w.revision(&b);
    let result = w.reconcile().await;
    assert!(
        matches!(&result, Err(e) if e.is_missing_artifact() && e.category() == Category::Artifact),
        "{result:?}"
    );
    // Past the health timeout (1m), within the verification timeout (5m): still waiting.
    w.clock.advance(120);
    let _ = w.reconcile().await;
    let status = w.status();
    assert_eq!(status.phase, Phase::Deploying, "{status:#?}");
    assert_eq!(w.backend.running(), Some(a.clone()));
    // The image arrives.
    w.backend.missing.lock().unwrap().clear();
    w.until(Phase::Verifying).await;
    assert_eq!(w.backend.running(), Some(b));
    let metrics = w.metrics.render();
    assert!(
        metrics.contains(r#"vigie_reconcile_errors_total{category="artifact"}"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn nothing_is_acted_on_when_the_status_cannot_be_recorded() {
    let a = sha('a');
    let b = sha('b');
    let mut w = World::validated(&a).await;
    *w.store.refuse.lock().unwrap() = true;
    w.revision(&b);
    let result = w.reconcile().await;
    assert!(
        matches!(&result, Err(e) if e.category() == Category::Store),
        "{result:?}"
    );
    assert!(w.journal.lines().is_empty(), "{:?}", w.journal.lines());
    assert_eq!(w.backend.running(), Some(a));
}

#[tokio::test]
async fn an_unhealthy_sha_rolls_back_after_the_health_timeout() {
    let a = sha('a');
    let b = sha('b');
    let mut w = World::validated(&a).await;
    w.backend.unhealthy.lock().unwrap().push(b.clone());
    w.revision(&b);
    let _ = w.reconcile().await;
    w.clock.advance(90);
    w.until(Phase::RolledBack).await;
    assert_eq!(w.backend.running(), Some(a));
}

#[tokio::test]
async fn a_branch_is_resolved_through_the_revisions_port() {
    let mut w = World::new();
    let a = sha('a');
    w.revisions
        .0
        .lock()
        .unwrap()
        .insert("main".into(), a.clone());
    w.release.spec.revision = Some("main".into());
    w.reconcile().await.unwrap();
    assert_eq!(w.backend.running(), Some(a));
    w.release.spec.revision = Some("gone".into());
    w.reconcile().await.unwrap();
    let status = w.status();
    assert!(
        status
            .message
            .as_deref()
            .is_some_and(|m| m.contains("gone")),
        "{status:#?}"
    );
}

/// Log lines written into a buffer a test reads.
#[derive(Clone, Default)]
struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Self;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

#[test]
fn what_a_reconcile_logs_carries_the_release_its_place_and_the_sha() {
    // Whether a log call is enabled is cached per call site, for every thread: a test
    // running the same reconcile on another thread, with no subscriber, would have it
    // cached as disabled. A process-wide subscriber that takes everything (and writes
    // nowhere) keeps every call site enabled; this thread's own subscriber still gets
    // this thread's lines.
    static EVERYTHING: std::sync::Once = std::sync::Once::new();
    EVERYTHING.call_once(|| {
        let _ = tracing::subscriber::set_global_default(
            tracing_subscriber::fmt()
                .with_max_level(tracing::Level::TRACE)
                .with_writer(std::io::sink)
                .finish(),
        );
    });
    let logs = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .json()
        .with_current_span(true)
        .with_span_list(false)
        .with_max_level(tracing::Level::DEBUG)
        .with_writer(logs.clone())
        .finish();
    let a = sha('a');
    tracing::subscriber::with_default(subscriber, || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(async {
                let mut w = World::new();
                w.revision(&a);
                w.until(Phase::Verifying).await;
            });
    });
    let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let started: Vec<&serde_json::Value> = lines
        .iter()
        .filter(|l| l["fields"]["event"] == "DeployStarted")
        .collect();
    assert_eq!(started.len(), 1, "{text}");
    let span = &started[0]["span"];
    assert_eq!(span["name"], "reconcile", "{text}");
    assert_eq!(span["release"], "app-preprod");
    assert_eq!(span["namespace"], "apps");
    assert_eq!(span["environment"], "preprod");
    assert_eq!(span["code_location"], "app");
    assert_eq!(span["sha"], a.short());
    assert_eq!(started[0]["fields"]["sha"], a.short());
}

#[tokio::test]
async fn definitions_that_fail_to_load_roll_back_with_the_python_error() {
    let a = sha('a');
    let b = sha('b');
    let mut w = World::validated(&a).await;
    w.definitions.fail(
        &b,
        "dagster._core.errors.DagsterImportError: Encountered ImportError\n  File \"defs.py\", line 3\nRuntimeError: broken at import",
    );
    w.revision(&b);
    // Healthy by its health check, but its definitions do not load: never Verifying.
    let status = w.until(Phase::RolledBack).await;
    assert_eq!(w.backend.running(), Some(a.clone()));
    let failed = status
        .history
        .iter()
        .find(|h| h.event == HistoryEvent::RolledBack && h.sha == b)
        .unwrap_or_else(|| panic!("{:#?}", status.history));
    let reason = failed.reason.clone().unwrap_or_default();
    assert!(
        reason.contains("failed to load") && reason.contains("RuntimeError: broken at import"),
        "{reason}"
    );
    assert!(reason.starts_with("unhealthy after deploy"), "{reason}");
    assert!(status.quarantine.iter().any(|q| q.sha == b), "{status:#?}");
}
