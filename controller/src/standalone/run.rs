//! `vigie run`: the reconciler on one VM. A refresh loads the manifests (a directory or
//! a git branch), applies tracking rules and removes what no Release wants any more;
//! each Release then goes through the same pipeline as the operator
//! ([`crate::reconcile`]) with the state file as its store, on its own: a [`Queue`]
//! runs a bounded number at once, one at a time per Release, woken by events and by
//! their deadlines, so a slow health check, hook or engine call of one Release never
//! delays another's rollback.

use crate::backend::BackendError;
use std::{
    collections::BTreeMap,
    net::SocketAddr,
    path::PathBuf,
    sync::{Arc, atomic::Ordering},
    time::{Duration, Instant},
};

use jiff::Timestamp;
use tokio::{net::TcpListener, task::JoinSet};

use super::{
    ports::{Sinks, StateStore, StateVerdicts},
    queue::Queue,
};
use crate::{
    api::{
        Phase, Release, Sha,
        environment::{Backend as BackendSpec, DockerBackend as DockerSpec, EnvironmentSpec},
    },
    backend::{Backend, Workload, docker::DockerBackend},
    error::Category,
    gitops::{source::Source, track::Holder},
    http::server::{self, Shared},
    lifecycle::{Upstream, Windows},
    manifest::{self, Manifests},
    metrics::CategoryLabel,
    reconcile::{
        self, Memory, Ports, Reconciled, ReleaseKey, Subject, SystemClock,
        revisions::Git,
        verdicts::{Polls, Verdicts},
    },
    store::{self as state, ReleaseRecord, StateError},
};

/// Options of `vigie run`.
#[derive(Clone, Debug)]
pub struct Options {
    /// The manifests: a directory or file, or a folder of a git branch.
    pub manifests: crate::gitops::source::Source,
    /// How often a git source is fetched (a signed push webhook fetches at once).
    pub git_interval: Duration,
    /// Where git sources are mirrored.
    pub git_cache: PathBuf,
    /// Credentials of the manifests repository.
    pub git_credentials: crate::gitops::repo::Credentials,
    /// How often tracked refs are checked (a signed push webhook checks at once).
    pub track_interval: Duration,
    /// The state file.
    pub state: PathBuf,
    /// The control socket of `vigie promote` and `vigie rollback`.
    pub control_socket: PathBuf,
    /// Where HTTP listens.
    pub listen: SocketAddr,
    /// The bounds of every HTTP connection.
    pub http: crate::http::listener::Limits,
    /// The webhook HMAC key.
    pub secret: Option<Vec<u8>>,
    /// Time between refreshes when nothing wakes the reconciler (every Release is
    /// reconciled at each).
    pub interval: Duration,
    /// Releases reconciled at once.
    pub concurrency: usize,
    /// How long a Release may be missing from the manifests before its containers are
    /// removed: a file rewritten by `git pull` or an editor is not a removal.
    pub removal_grace: Duration,
    /// What is committed back to a git source of manifests (tracked updates, rollbacks).
    pub write_back: crate::gitops::writeback::Scope,
    /// The author of those commits.
    pub git_author: crate::gitops::writeback::Author,
    /// Vigie's public URL: reports to the forge link back to a Release's history.
    pub public_url: Option<String>,
    /// The web view (`None`: not served).
    pub web: Option<super::web::Setup>,
}

/// Why `vigie run` stopped.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The state file cannot be used.
    #[error(transparent)]
    State(#[from] StateError),
    /// The control socket cannot be created.
    #[error("failed to create the control socket {path}: {source}")]
    Control {
        /// The socket.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The listen address cannot be bound.
    #[error("failed to listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// How long a refresh or the reconciles in progress may go on after SIGTERM or SIGINT.
const ROUND_GRACE: Duration = Duration::from_secs(10);

/// Runs until SIGTERM or SIGINT.
pub async fn run(options: Options) -> Result<(), RunError> {
    let loaded = state::load(&options.state)?;
    if loaded.is_none() {
        tracing::info!(path = %options.state.display(), "no state file yet: starting from nothing");
    }
    let shared = Arc::new(Shared::new(
        loaded.unwrap_or_default(),
        options.state.clone(),
        options.secret.clone(),
    ));
    let listener = TcpListener::bind(options.listen)
        .await
        .map_err(|source| RunError::Listen {
            addr: options.listen,
            source,
        })?;
    super::control::serve(
        &options.control_socket,
        shared.clone(),
        options.git_cache.clone(),
    )
    .await
    .map_err(|source| RunError::Control {
        path: options.control_socket.clone(),
        source,
    })?;
    tracing::info!(
        listen = %options.listen,
        control = %options.control_socket.display(),
        manifests = %shown(&options.manifests),
        "vigie run started"
    );
    let mut app = server::router(shared.clone());
    if let Some(setup) = options.web.clone() {
        app = app.merge(super::web::router(
            setup,
            shared.clone(),
            options.git_cache.clone(),
        ));
    }
    let server = tokio::spawn(crate::http::listener::serve(
        listener,
        app,
        options.http,
        shared.metrics.http_refused.clone(),
    ));
    // A change in the manifests wakes the reconciler at once (the interval stays the
    // fallback: a watcher can miss events, e.g. on network filesystems).
    let _watcher = match &options.manifests {
        Source::Path(path) => watch(path, shared.clone()),
        Source::Git(g) => {
            if let Ok(mut w) = shared.git_watch.write() {
                w.clone_from(&Some(g.clone()));
            }
            None
        }
    };
    let mut runner = Runner::new(options.clone(), shared.clone());
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing a SIGTERM handler");
    let stop = async {
        tokio::select! {
            _ = terminate.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    };
    runner.drive(stop).await;
    tracing::info!("vigie run stopping");
    // Messages of the last transitions go out first (a systemd stop waits 90 s).
    if let Some(d) = &runner.dispatcher {
        d.flush(Duration::from_secs(10)).await;
    }
    runner.reporter.flush(Duration::from_secs(5)).await;
    server.abort();
    let _ = std::fs::remove_file(&options.control_socket);
    Ok(())
}

impl Runner {
    /// Refreshes and reconciles until `stop` resolves, then lets what is in progress end
    /// (within [`ROUND_GRACE`]).
    async fn drive(&mut self, stop: impl std::future::Future<Output = ()>) {
        tokio::pin!(stop);
        let mut tasks = JoinSet::new();
        let mut refresh = true;
        let mut next_refresh = Instant::now();
        loop {
            if refresh {
                refresh = false;
                // A signal is taken during a refresh too: it has a grace period to end.
                let stopped = {
                    let refreshing = self.refresh();
                    tokio::pin!(refreshing);
                    tokio::select! {
                        () = &mut refreshing => false,
                        () = &mut stop => {
                            tracing::info!(grace_s = ROUND_GRACE.as_secs(), "stopping: waiting for the refresh in progress");
                            if tokio::time::timeout(ROUND_GRACE, refreshing).await.is_err() {
                                tracing::warn!("the refresh in progress did not end in time; stopped");
                            }
                            true
                        }
                    }
                };
                if stopped {
                    break;
                }
                next_refresh = Instant::now() + self.options.interval;
            }
            self.start(&mut tasks);
            let deadline = self
                .queue
                .next_deadline()
                .map_or(next_refresh, |d| d.min(next_refresh));
            tokio::select! {
                Some(joined) = tasks.join_next() => match joined {
                    Ok((key, outcome)) => self.finished(&key, outcome.as_ref()),
                    Err(e) => tracing::error!(error = %e, "a reconcile task ended abnormally"),
                },
                () = tokio::time::sleep_until(deadline.into()) => {
                    refresh = Instant::now() >= next_refresh;
                }
                () = self.shared.wake.notified() => refresh = true,
                () = self.shared.nudge.notified() => self.wake_named(),
                () = &mut stop => break,
            }
        }
        // What is being applied ends first: it is recorded, so stopping it later would lose
        // nothing, but a rollback half-done is worse than one done.
        if !tasks.is_empty() {
            tracing::info!(
                in_flight = tasks.len(),
                grace_s = ROUND_GRACE.as_secs(),
                "stopping: waiting for the reconciles in progress"
            );
            let ending = async { while tasks.join_next().await.is_some() {} };
            if tokio::time::timeout(ROUND_GRACE, ending).await.is_err() {
                tracing::warn!("the reconciles in progress did not end in time; stopped");
            }
        }
    }
}

fn shown(source: &Source) -> String {
    match source {
        Source::Path(p) => p.display().to_string(),
        Source::Git(g) => g.to_string(),
    }
}

/// Watches the manifests for changes; `None` (with a warning) when it cannot.
fn watch(path: &std::path::Path, shared: Arc<Shared>) -> Option<notify::RecommendedWatcher> {
    use notify::Watcher;
    let handler = move |event: notify::Result<notify::Event>| {
        if event.is_ok_and(|e| !e.kind.is_access()) {
            shared.wake.notify_one();
        }
    };
    let mut watcher = match notify::recommended_watcher(handler) {
        Ok(w) => w,
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch the manifests; changes are seen at the next interval");
            return None;
        }
    };
    if let Err(e) = watcher.watch(path, notify::RecursiveMode::Recursive) {
        tracing::warn!(error = %e, "cannot watch the manifests; changes are seen at the next interval");
        return None;
    }
    Some(watcher)
}

/// The reconciler's memory between refreshes (nothing here is needed to resume).
pub struct Runner {
    options: Options,
    instance: String,
    shared: Arc<Shared>,
    manifests: Option<Arc<Manifests>>,
    fingerprint: Option<String>,
    backends: Arc<BTreeMap<String, Result<DockerBackend, BackendError>>>,
    windows: Arc<BTreeMap<String, Windows>>,
    /// The Releases of the manifests in force, with the state's overlays.
    items: BTreeMap<ReleaseKey, Arc<Item>>,
    /// Which Releases are reconciled next.
    queue: Queue<ReleaseKey, Instant>,
    /// The Releases not reconciled yet since the manifests were first loaded (ready
    /// once it is empty).
    first_pass: Option<std::collections::BTreeSet<ReleaseKey>>,
    /// What the pipeline applied, per Release.
    memory: Arc<Memory>,
    /// When each SHA in flight may be polled again (GitHub, GitLab).
    polls: Arc<Polls>,
    /// Revisions resolved with git, reused for a while.
    revisions: Arc<Git>,
    /// A git source: when it was last fetched, and the last commit looked at.
    git_fetched: Option<Instant>,
    git_seen: Option<Sha>,
    /// When the tracked refs were last checked.
    track_checked: Option<Instant>,
    /// What tracking last reported per Release.
    tracking_reported: crate::gitops::tracking::Reported,
    /// Write-back to a git source of manifests, when it is on.
    writer: Option<Arc<crate::gitops::writeback::Writer>>,
    /// Sends the Environments' notifications in the background.
    dispatcher: Option<crate::notify::deliver::Dispatcher>,
    /// Reports deployments back to the forge in the background.
    reporter: crate::forge::Reporter,
    /// Writes the Dagster workspaces and has the webservers judge the code locations.
    dagster: Arc<crate::dagster::Instances<crate::dagster::Files>>,
    /// The removal of what no Release wants any more, per environment, under way.
    pruning: BTreeMap<String, tokio::task::JoinHandle<()>>,
    /// The Docker engines of the manifests in force, by what names them.
    engines: Vec<(DockerSpec, DockerBackend)>,
}

/// What one reconcile task holds: the ports and the manifests in force when it started.
struct Pipeline {
    shared: Arc<Shared>,
    manifests: Arc<Manifests>,
    backends: Arc<BTreeMap<String, Result<DockerBackend, BackendError>>>,
    windows: Arc<BTreeMap<String, Windows>>,
    memory: Arc<Memory>,
    polls: Arc<Polls>,
    revisions: Arc<Git>,
    dispatcher: Option<crate::notify::deliver::Dispatcher>,
    reporter: crate::forge::Reporter,
    dagster: Arc<crate::dagster::Instances<crate::dagster::Files>>,
}

/// One Release, ready to be reconciled.
struct Item {
    key: ReleaseKey,
    release: Release,
    environment: EnvironmentSpec,
    workload: Workload,
    ci: crate::api::code_location::CiSpec,
}

impl Runner {
    /// A runner with nothing loaded yet.
    #[must_use]
    pub fn new(options: Options, shared: Arc<Shared>) -> Self {
        let writer = match &options.manifests {
            Source::Git(g) if options.write_back.any() => Some(Arc::new(
                crate::gitops::writeback::Writer::new(crate::gitops::writeback::Target {
                    source: g.clone(),
                    credentials: options.git_credentials.clone(),
                    cache: options.git_cache.clone(),
                    author: options.git_author.clone(),
                    default_namespace: "default".into(),
                    scope: options.write_back,
                }),
            )),
            _ => None,
        };
        // Started inside the runtime (`vigie run`); unit tests without one send nothing.
        let dispatcher = tokio::runtime::Handle::try_current().is_ok().then(|| {
            crate::notify::deliver::Dispatcher::start(
                crate::notify::deliver::resolve_with(|_, source| crate::secrets::resolve(source)),
                Some(options.git_cache.join("commits")),
                shared.metrics.notifications.clone(),
                crate::notify::deliver::Retry::default(),
            )
        });
        let polls = Polls::default();
        let reporter = crate::forge::Reporter::new(
            polls.shared_auth(),
            Arc::new(|_, source| crate::secrets::resolve(source)),
            options.public_url.clone(),
            shared.metrics.forge_reports.clone(),
            crate::forge::Retry::default(),
        );
        Self {
            writer,
            dispatcher,
            reporter,
            dagster: Arc::new(crate::dagster::Instances::new(
                crate::dagster::Files::default(),
            )),
            instance: instance_id(&options.state),
            queue: Queue::new(options.concurrency),
            options,
            shared,
            manifests: None,
            fingerprint: None,
            backends: Arc::default(),
            windows: Arc::default(),
            items: BTreeMap::new(),
            first_pass: None,
            pruning: BTreeMap::new(),
            engines: Vec::new(),
            memory: Arc::default(),
            polls: Arc::new(polls),
            revisions: Arc::default(),
            git_fetched: None,
            git_seen: None,
            track_checked: None,
            tracking_reported: crate::gitops::tracking::Reported::default(),
        }
    }

    /// Reloads the manifests when they changed; an invalid set is reported and the
    /// last good one kept.
    async fn reload(&mut self) {
        match self.options.manifests.clone() {
            Source::Path(path) => {
                // Off the runtime: a slow filesystem does not hold the HTTP side or
                // the signals.
                let loading =
                    tokio::task::spawn_blocking(move || manifest::load_paths(&[path])).await;
                match loading {
                    Ok(report) => self.load(report, None).await,
                    Err(e) => tracing::error!(error = %e, "failed to read the manifests"),
                }
            }
            Source::Git(g) => self.reload_git(&g).await,
        }
    }

    /// Fetches a git source when due (interval, or a push webhook), and loads the
    /// commit it is at when that commit was not looked at yet.
    async fn reload_git(&mut self, g: &crate::gitops::source::GitSource) {
        let pushed = self.shared.git_pushed.swap(false, Ordering::Relaxed);
        let due = pushed
            || self
                .git_fetched
                .is_none_or(|t| t.elapsed() >= self.options.git_interval);
        if !due {
            return;
        }
        self.git_fetched = Some(Instant::now());
        let (cache, source, creds) = (
            self.options.git_cache.clone(),
            g.clone(),
            self.options.git_credentials.clone(),
        );
        let fetching = tokio::task::spawn_blocking(move || {
            crate::gitops::repo::fetch_folder(&cache, &source, &creds)
        });
        let fetched = match tokio::time::timeout(Duration::from_secs(120), fetching).await {
            Ok(Ok(r)) => r.map_err(String::from),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("no answer from {g} within 120 s")),
        };
        let now = Timestamp::now();
        match fetched {
            Err(e) => {
                self.shared.metrics.git_sync_errors.inc();
                tracing::error!(source = %g, error = %e, "failed to fetch the manifests; the last good commit stays in force");
                self.record_sync(|s| {
                    s.error = Some(e.clone());
                    s.checked_at = Some(now);
                })
                .await;
            }
            Ok((sha, files)) => {
                if self.git_seen.as_ref() == Some(&sha) {
                    self.record_sync(|s| {
                        if s.commit.as_ref() == Some(&sha) {
                            s.error = None;
                        }
                        s.checked_at = Some(now);
                    })
                    .await;
                    return;
                }
                self.git_seen = Some(sha.clone());
                let report = manifest::load_sources(&files);
                let valid = report.problems.is_empty();
                self.load(report, Some(&sha)).await;
                let problems = self
                    .shared
                    .state
                    .lock()
                    .expect("state lock")
                    .manifest_problems
                    .clone();
                self.record_sync(|s| {
                    s.checked_at = Some(now);
                    if valid && problems.is_empty() {
                        s.commit = Some(sha.clone());
                        s.synced_at = Some(now);
                        s.error = None;
                    } else {
                        s.error = Some(format!(
                            "commit {} is invalid; {} stays in force",
                            sha.short(),
                            s.commit.as_ref().map_or("nothing", Sha::short)
                        ));
                    }
                })
                .await;
                if valid {
                    self.shared.metrics.git_synced.set(now.as_second());
                } else {
                    self.shared.metrics.git_sync_errors.inc();
                }
            }
        }
    }

    /// Checks the refs tracking rules name when due (interval, or a push webhook), and
    /// moves the matching Releases (recorded in the state; a refusal is recorded too).
    async fn track(&mut self) {
        let pushed = self.shared.track_pushed.swap(false, Ordering::Relaxed);
        let due = pushed
            || self
                .track_checked
                .is_none_or(|t| t.elapsed() >= self.options.track_interval);
        let Some(m) = self.manifests.clone().filter(|_| due) else {
            return;
        };
        self.track_checked = Some(Instant::now());
        let snapshot = self.shared.state.lock().expect("state lock").clone();
        // With write-back of tracked updates, git holds the revisions: moves are
        // committed there; else the state holds them over the manifests.
        let writer = self.writer.clone().filter(|w| w.target.scope.tracking);
        let holder = match writer {
            Some(_) => Holder::Git { write_back: true },
            None => Holder::Vigie,
        };
        let port = super::ports::StateTracking(&self.shared);
        for ((ns, name), location) in &m.code_locations {
            let spec = &location.object.spec;
            if spec.track.is_empty() {
                continue;
            }
            let bound = bound(&m, &snapshot, ns, name, holder);
            let place = crate::gitops::tracking::Location {
                name,
                url: &spec.repo.url,
                credentials: crate::gitops::repo::Credentials::resolve(
                    spec.repo.credentials.as_ref(),
                    self.polls.auth(),
                    &crate::secrets::resolve,
                )
                .await,
                rules: &spec.track,
                cache: self.options.git_cache.clone(),
            };
            crate::gitops::tracking::check(
                place,
                &bound,
                writer.as_deref(),
                &crate::gitops::tracking::Signals {
                    metrics: &self.shared.metrics,
                    pushed: &self.shared.git_pushed,
                    wake: &self.shared.wake,
                },
                &port,
                &self.tracking_reported,
            )
            .await;
        }
    }

    /// With write-back of rollbacks on, each rollback's revision is committed to the
    /// manifests repository, in the background (the rollback does not wait for git).
    /// Read from the status: a rollback not written back before a restart is after it.
    fn write_back_rollback(&self, item: &Item, done: &Reconciled) {
        let Some(writer) = self.writer.clone().filter(|w| w.target.scope.rollbacks) else {
            return;
        };
        let Some((from, to, reason)) = crate::gitops::writeback::pending_rollback(&done.status)
        else {
            return;
        };
        let key = item.key.to_string();
        if !writer.due(&key, &to) {
            return;
        }
        let message = crate::gitops::writeback::rollback_message(
            &item.release.spec.code_location,
            &item.release.spec.environment,
            &key,
            &from,
            &to,
            Some(&reason),
        );
        let (shared, ns, name) = (
            self.shared.clone(),
            item.key.namespace.clone(),
            item.key.name.clone(),
        );
        tokio::spawn(async move {
            let result = writer.set_revision(&ns, &name, &to, message).await;
            let line = match &result {
                Ok(crate::gitops::writeback::Outcome::Unchanged) => return,
                Ok(outcome) => {
                    shared.metrics.write_backs.inc();
                    shared.git_pushed.store(true, Ordering::Relaxed);
                    shared.wake.notify_one();
                    let line = format!(
                        "{key} rolled back {} → {}: {}",
                        from.short(),
                        to.short(),
                        crate::gitops::writeback::describe(outcome, &writer.target.source)
                    );
                    tracing::info!(release = %key, "rollback written back: {line}");
                    line
                }
                Err(e) => {
                    shared.metrics.write_back_errors.inc();
                    tracing::warn!(release = %key, error = %e, "rollback: write-back failed");
                    format!("{key} rollback to {} failed: {e}", to.short())
                }
            };
            let now = Timestamp::now();
            let recorded = shared
                .update(|next| {
                    next.git_sync.get_or_insert_default().write_back =
                        Some(format!("{line} ({now})"));
                })
                .await;
            if let Err(e) = recorded {
                tracing::error!(error = %e, "failed to record a write-back");
            }
        });
    }

    /// Updates the record of the git source's synchronisation in the state.
    async fn record_sync(&self, update: impl FnOnce(&mut state::GitSync)) {
        let source = match &self.options.manifests {
            Source::Git(g) => Some(g.to_string()),
            Source::Path(_) => None,
        };
        let recorded = self
            .shared
            .update(|next| {
                let sync = next.git_sync.get_or_insert_default();
                if let Some(source) = source {
                    sync.source = source;
                }
                update(sync);
            })
            .await;
        if let Err(e) = recorded {
            tracing::error!(error = %e, "failed to record the manifests' synchronisation");
        }
    }
}

impl Runner {
    /// Takes a loaded set when it differs from the current one (`commit`: the git
    /// commit it was read from, named in every problem).
    async fn load(&mut self, report: manifest::LoadReport, commit: Option<&Sha>) {
        let fingerprint = report.fingerprint.clone();
        if self.fingerprint.as_deref() == Some(fingerprint.as_str()) {
            return;
        }
        tracing::debug!(%fingerprint, "manifests changed");
        self.fingerprint = Some(fingerprint);
        let prefix = commit.map_or_else(String::new, |c| format!("commit {}: ", c.short()));
        self.record_manifest_problems(
            report
                .problems
                .iter()
                .map(|p| format!("{prefix}{p}"))
                .collect(),
        )
        .await;
        if !report.problems.is_empty() {
            self.shared.metrics.manifests_valid.set(0);
            let kept = if self.manifests.is_some() {
                "keeping the last valid set"
            } else {
                "nothing to run yet"
            };
            tracing::error!(
                problems = report.problems.len(),
                "the manifests are invalid; {kept}"
            );
            for problem in &report.problems {
                tracing::error!("{prefix}{problem}");
            }
            return;
        }
        let m = Arc::new(report.manifests);
        let namespaces: std::collections::BTreeSet<&String> = m
            .environments
            .keys()
            .chain(m.code_locations.keys())
            .chain(m.releases.keys())
            .map(|(ns, _)| ns)
            .collect();
        if namespaces.len() > 1 {
            let listed: Vec<&str> = namespaces.iter().map(|n| n.as_str()).collect();
            let problem = format!(
                "vigie run serves one namespace; the manifests use {}: run one vigie per namespace",
                listed.join(", ")
            );
            tracing::error!("{problem}; keeping the last valid set");
            self.record_manifest_problems(vec![problem]).await;
            self.shared.metrics.manifests_valid.set(0);
            return;
        }
        tracing::info!("{}", m.summary(report.files.len()));
        self.shared.metrics.manifests_valid.set(1);
        self.environments(&m);
        if let Ok(mut repos) = self.shared.tracked_repos.write() {
            *repos = m
                .code_locations
                .values()
                .filter(|l| !l.object.spec.track.is_empty())
                .map(|l| l.object.spec.repo.url.clone())
                .collect();
        }
        if let Ok(mut ci) = self.shared.ci.write() {
            *ci = m
                .code_locations
                .iter()
                .map(|((_, n), l)| (n.clone(), l.object.spec.ci.clone()))
                .collect();
        }
        if let Ok(mut shared) = self.shared.manifests.write() {
            *shared = Some(m.clone());
        }
        self.shared.changed();
        self.manifests = Some(m);
    }

    /// The backend and the deploy windows of each environment of `m`.
    fn environments(&mut self, m: &Manifests) {
        let mut backends = BTreeMap::new();
        let mut windows = BTreeMap::new();
        let mut engines = Vec::new();
        for ((_, name), env) in &m.environments {
            let backend = match &env.object.spec.backend {
                BackendSpec::Docker(d) => self.engine(&mut engines, d),
                BackendSpec::Kubernetes(k) => Err(BackendError::Unsupported(format!(
                    "the Kubernetes backend (namespace {}) needs the operator, not vigie run",
                    k.namespace
                ))),
            };
            if let Err(e) = &backend {
                tracing::error!(environment = %name, error = %e, "backend unusable");
            }
            backends.insert(name.clone(), backend);
            if let Some(w) = env
                .object
                .spec
                .windows
                .as_ref()
                .and_then(|w| Windows::new(w).ok())
            {
                windows.insert(name.clone(), w);
            }
        }
        self.engines = engines;
        self.backends = Arc::new(backends);
        self.windows = Arc::new(windows);
    }

    /// The client of the engine `spec` names: one per engine, shared by the
    /// environments on it and kept across reloads, so that its deploy lanes and the
    /// rollbacks' right of way hold for every deploy on that engine.
    fn engine(
        &self,
        fresh: &mut Vec<(DockerSpec, DockerBackend)>,
        spec: &DockerSpec,
    ) -> Result<DockerBackend, BackendError> {
        let same = |(s, _): &&(DockerSpec, DockerBackend)| s.host == spec.host && s.tls == spec.tls;
        if let Some((_, b)) = fresh.iter().find(same) {
            return Ok(b.clone());
        }
        let b = match self.engines.iter().find(same) {
            Some((_, b)) => b.clone(),
            None => DockerBackend::connect(spec)?,
        };
        fresh.push((spec.clone(), b.clone()));
        Ok(b)
    }

    /// Keeps the manifests' problems in the state, for `vigie status`.
    async fn record_manifest_problems(&self, problems: Vec<String>) {
        let recorded = self
            .shared
            .update(|next| next.manifest_problems = problems)
            .await;
        if let Err(e) = recorded {
            tracing::error!(error = %e, "failed to record the manifests' problems");
        }
    }

    fn items(&self) -> Vec<Item> {
        let Some(m) = &self.manifests else {
            return Vec::new();
        };
        let (tracked, requests, clearances) = {
            let state = self.shared.state.lock().expect("state lock");
            (
                state.tracked.clone(),
                state.requests.clone(),
                state.clearances.clone(),
            )
        };
        m.releases
            .iter()
            .filter_map(|((ns, name), r)| {
                let location = m
                    .code_locations
                    .get(&(ns.clone(), r.object.spec.code_location.clone()))?;
                let environment = m
                    .environments
                    .get(&(ns.clone(), r.object.spec.environment.clone()))?;
                let key = ReleaseKey::new(ns, name);
                let shown = key.to_string();
                let mut release = r.object.clone();
                // A person's promotion or rollback is laid over the manifest; then a
                // tracking rule's move replaces the revision (unless the person's is newer).
                let track = tracked.get(&shown);
                if let Some(req) = requests.get(&shown) {
                    req.apply(&mut release.spec, track.and_then(|t| t.at));
                }
                if let Some(cleared) = clearances.get(&shown) {
                    release
                        .spec
                        .clear_quarantine
                        .extend(cleared.iter().cloned());
                }
                if let Some(t) = track
                    && let Some(sha) = &t.sha
                    && requests.get(&shown).is_none_or(|req| {
                        t.at.is_some_and(|at| at > req.at) || r.object.spec.revision != req.over
                    })
                {
                    release.spec.revision = Some(sha.to_string());
                }
                Some(Item {
                    key,
                    release,
                    environment: crate::dagster::environment(
                        &environment.object.spec,
                        &location.object.spec,
                    )
                    .into_owned(),
                    workload: Workload::resolve(
                        &self.instance,
                        name,
                        &r.object.spec,
                        &location.object.spec,
                        &environment.object.spec,
                    ),
                    ci: location.object.spec.ci.clone(),
                })
            })
            .collect()
    }

    /// Reloads the manifests and applies tracking rules when due, marks the Releases
    /// that left the manifests, removes what no Release wants any more, and wakes every
    /// Release.
    pub async fn refresh(&mut self) {
        let started = Instant::now();
        self.reload().await;
        self.track().await;
        let items = self.items();
        // Releases that left the manifests are marked (their containers go after the
        // grace period); those back are unmarked.
        if let Err(e) = self.mark_removed(&items).await {
            tracing::error!(error = %e, "failed to record the state; nothing is applied until it can be");
            self.shared
                .metrics
                .reconcile_errors
                .get_or_create(&CategoryLabel {
                    category: Category::Store.as_str(),
                })
                .inc();
            self.queue.retain(|_| false);
            return;
        }
        self.prune(&items);
        self.items = items
            .into_iter()
            .map(|i| (i.key.clone(), Arc::new(i)))
            .collect();
        self.queue.retain(|k| self.items.contains_key(k));
        for key in self.items.keys() {
            self.queue.wake(key);
        }
        if self.manifests.is_some() && self.first_pass.is_none() {
            self.first_pass = Some(self.items.keys().cloned().collect());
            self.check_ready();
        }
        tracing::debug!(
            releases = self.items.len(),
            in_flight = self.queue.in_flight(),
            elapsed_ms = started.elapsed().as_millis(),
            "refreshed"
        );
    }

    /// Wakes the Releases of the code locations a verdict named (no refresh: the
    /// manifests and the other Releases are as they were). A person's promotion,
    /// rollback or clearance is laid over the manifests: it refreshes.
    fn wake_named(&mut self) {
        let woken = self.shared.take_woken();
        let keys: Vec<ReleaseKey> = self
            .items
            .values()
            .filter(|i| woken.contains(&i.release.spec.code_location))
            .map(|i| i.key.clone())
            .collect();
        tracing::debug!(releases = keys.len(), ?woken, "woken");
        for key in &keys {
            self.queue.wake(key);
        }
    }

    /// Starts the reconciles due: those woken, and those whose deadline passed.
    fn start(&mut self, tasks: &mut JoinSet<(ReleaseKey, Option<Reconciled>)>) {
        self.queue.wake_due(Instant::now());
        let Some(manifests) = self.manifests.clone() else {
            return;
        };
        for key in self.queue.take() {
            let Some(item) = self.items.get(&key).cloned() else {
                self.queue.done(&key, None);
                continue;
            };
            let pipeline = Pipeline {
                shared: self.shared.clone(),
                manifests: manifests.clone(),
                backends: self.backends.clone(),
                windows: self.windows.clone(),
                memory: self.memory.clone(),
                polls: self.polls.clone(),
                revisions: self.revisions.clone(),
                dispatcher: self.dispatcher.clone(),
                reporter: self.reporter.clone(),
                dagster: self.dagster.clone(),
            };
            tasks.spawn(async move {
                let outcome = pipeline.reconcile(&item).await;
                (item.key.clone(), outcome)
            });
        }
    }

    /// A Release's reconcile ended: its deadline, the rollback written back, and the
    /// Releases promoting from it woken when what they read changed.
    fn finished(&mut self, key: &ReleaseKey, outcome: Option<&Reconciled>) {
        let again = outcome
            .and_then(|d| d.requeue_after)
            .map(|after| Instant::now() + after);
        self.queue.done(key, again);
        if let Some(done) = outcome
            && let Some(item) = self.items.get(key).cloned()
        {
            self.write_back_rollback(&item, done);
            if done.upstream_changed {
                let downstream: Vec<ReleaseKey> = self
                    .items
                    .values()
                    .filter(|i| {
                        i.release.spec.code_location == item.release.spec.code_location
                            && i.environment
                                .promotion
                                .as_ref()
                                .is_some_and(|p| p.from == item.release.spec.environment)
                    })
                    .map(|i| i.key.clone())
                    .collect();
                for k in &downstream {
                    self.queue.wake(k);
                }
            }
        }
        let phases: Vec<Phase> = self
            .shared
            .state
            .lock()
            .expect("state lock")
            .releases
            .values()
            .map(|r| r.status.phase)
            .collect();
        self.shared.metrics.set_phases(phases.into_iter());
        if let Some(first) = &mut self.first_pass {
            first.remove(key);
        }
        self.check_ready();
    }

    /// Ready once the manifests are loaded and every Release was reconciled once.
    fn check_ready(&self) {
        if self
            .first_pass
            .as_ref()
            .is_some_and(std::collections::BTreeSet::is_empty)
        {
            self.shared.ready.store(true, Ordering::Relaxed);
        }
    }

    /// Marks the Releases no longer in the manifests as removed (now), and those in
    /// them as not.
    async fn mark_removed(&self, items: &[Item]) -> Result<(), StateError> {
        if self.manifests.is_none() {
            return Ok(());
        }
        let now = Timestamp::now();
        let grace = self.options.removal_grace;
        self.shared
            .update(|next| mark_removed(next, items, now, grace))
            .await
    }
}

/// Marks the Releases not among `items` as removed at `now`, and those among them as not.
fn mark_removed(next: &mut state::State, items: &[Item], now: Timestamp, grace: Duration) {
    for (key, record) in &mut next.releases {
        let present = items.iter().any(|i| i.key.to_string() == *key);
        if present {
            record.removed_at = None;
        } else if record.removed_at.is_none() {
            tracing::info!(
                release = %key,
                "left the manifests; its containers go in {}s unless it comes back",
                grace.as_secs()
            );
            record.removed_at = Some(now);
        }
    }
}

impl Pipeline {
    /// One Release through the pipeline; `None` when its status could not be recorded.
    async fn reconcile(&self, item: &Item) -> Option<Reconciled> {
        let upstream = {
            let state = self.shared.state.lock().expect("state lock");
            upstream(
                &state.releases,
                &item.environment,
                &item.release.spec.code_location,
            )
        };
        let subject = Subject {
            key: &item.key,
            spec: &item.release.spec,
            generation: None,
            environment: &item.environment,
            windows: self.windows.get(&item.workload.environment),
            workload: &item.workload,
            ci: &item.ci,
            upstream: upstream.as_ref(),
        };
        let store = StateStore(&self.shared);
        let ci = Verdicts {
            polls: &self.polls,
            store: StateVerdicts(&self.shared),
        };
        let notifier = Sinks {
            dispatcher: self.dispatcher.as_ref(),
            manifests: &self.manifests,
            auth: self.polls.auth(),
        };
        let ports = Ports {
            backend: backend(&self.backends, &item.workload.environment),
            store: &store,
            ci: &ci,
            revisions: &*self.revisions,
            notifier: &notifier,
            forge: &self.reporter,
            definitions: &*self.dagster,
            clock: &SystemClock,
            memory: &self.memory,
            metrics: &self.shared.metrics,
        };
        reconcile::release(&subject, &ports).await.ok()
    }
}

/// The backend of `environment`, or why there is none.
fn backend<'a>(
    backends: &'a BTreeMap<String, Result<DockerBackend, BackendError>>,
    environment: &str,
) -> Result<&'a DockerBackend, BackendError> {
    match backends.get(environment) {
        Some(Ok(b)) => Ok(b),
        Some(Err(e)) => Err(e.clone()),
        None => Err(BackendError::Unsupported(format!(
            "no backend for environment {environment}"
        ))),
    }
}

impl Runner {
    /// A copy of every recorded Release.
    fn records(&self) -> Vec<ReleaseRecord> {
        self.shared
            .state
            .lock()
            .expect("state lock")
            .releases
            .values()
            .cloned()
            .collect()
    }

    /// Removes the containers of code locations that no Release binds to an environment
    /// any more, and their Dagster workspace entries: in the background, one task per
    /// environment at a time, so an engine that does not answer holds nothing else.
    fn prune(&mut self, items: &[Item]) {
        let Some(m) = self.manifests.clone() else {
            return;
        };
        let now = Timestamp::now();
        let recently_removed: Vec<ReleaseRecord> = self
            .records()
            .into_iter()
            .filter(|r| {
                r.removed_at.is_some_and(|t| {
                    now.duration_since(t).unsigned_abs() < self.options.removal_grace
                })
            })
            .collect();
        self.pruning.retain(|_, task| !task.is_finished());
        for ((_, env), environment) in &m.environments {
            if self.pruning.contains_key(env) || backend(&self.backends, env).is_err() {
                continue;
            }
            let keep: Vec<String> = items
                .iter()
                .filter(|i| &i.workload.environment == env)
                .map(|i| i.workload.code_location.clone())
                .chain(
                    recently_removed
                        .iter()
                        .filter(|r| &r.environment == env)
                        .map(|r| r.code_location.clone()),
                )
                .collect();
            // Dagster locations nothing runs here any more leave the workspace.
            let forget: Vec<String> = m
                .code_locations
                .iter()
                .filter(|_| environment.object.spec.dagster.is_some())
                .filter_map(|((_, name), l)| {
                    let d = l.object.spec.dagster.as_ref()?;
                    (!keep.contains(name)).then(|| d.name(name).to_owned())
                })
                .collect();
            let (backends, dagster, instance, env_name, spec) = (
                self.backends.clone(),
                self.dagster.clone(),
                self.instance.clone(),
                env.clone(),
                environment.object.spec.clone(),
            );
            let task = tokio::spawn(async move {
                for location in &forget {
                    crate::reconcile::Definitions::forget(&*dagster, &spec, location).await;
                }
                let Ok(backend) = backend(&backends, &env_name) else {
                    return;
                };
                match backend.prune(&instance, &env_name, &keep).await {
                    Ok(removed) if !removed.is_empty() => {
                        tracing::info!(environment = %env_name, ?removed, "removed containers no longer desired");
                    }
                    Ok(_) => {}
                    Err(e) => tracing::debug!(environment = %env_name, error = %e, "prune skipped"),
                }
            });
            self.pruning.insert(env.clone(), task);
        }
    }
}

/// The Releases binding the code location `ns/name`, as tracking sees them: at the
/// revision the state's overlay or the manifest gives.
fn bound(
    m: &Manifests,
    snapshot: &state::State,
    ns: &str,
    name: &str,
    holder: Holder,
) -> Vec<crate::gitops::tracking::Bound> {
    m.releases
        .iter()
        .filter(|((rns, _), r)| rns == ns && r.object.spec.code_location == name)
        .map(|((rns, rname), r)| {
            let key = ReleaseKey::new(rns, rname);
            let shown = key.to_string();
            let current = snapshot
                .tracked
                .get(&shown)
                .and_then(|t| t.sha.clone())
                .or_else(|| r.object.spec.revision.as_ref()?.parse().ok());
            let quarantined = snapshot
                .releases
                .get(&shown)
                .map(|rec| {
                    rec.status
                        .quarantine
                        .iter()
                        .map(|q| q.sha.clone())
                        .collect()
                })
                .unwrap_or_default();
            crate::gitops::tracking::Bound {
                key,
                environment: r.object.spec.environment.clone(),
                revision: r.object.spec.revision.clone(),
                current,
                quarantined,
                holder,
            }
        })
        .collect()
}

/// A stable id of this Vigie (from its state file's absolute path), labelled on every
/// container it owns.
fn instance_id(state: &std::path::Path) -> String {
    use sha2::Digest;
    let dir = state
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    let absolute = std::fs::canonicalize(dir)
        .unwrap_or_else(|_| dir.to_owned())
        .join(state.file_name().unwrap_or_default());
    hex::encode(&sha2::Sha256::digest(absolute.display().to_string().as_bytes())[..6])
}

/// What the upstream environment (`promotion.from`) validated for a code location.
fn upstream(
    releases: &BTreeMap<String, ReleaseRecord>,
    env: &EnvironmentSpec,
    location: &str,
) -> Option<Upstream> {
    let from = &env.promotion.as_ref()?.from;
    let record = releases
        .values()
        .find(|r| &r.environment == from && r.code_location == location)?;
    Some(Upstream::of(&record.status))
}
