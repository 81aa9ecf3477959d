//! `vigie controller`: the operator. kube-rs controllers for Release (owns its
//! workloads), Environment (its backend is reachable; a summary of its Releases) and
//! CodeLocation (its secrets and CI access), with the same pure `decide` as `vigie run`.
//!
//! Every replica serves `/healthz`, `/readyz`, `/metrics`, the CI webhooks (a verdict
//! is written to the CodeLocation's status, so any replica can take it) and the web
//! view ([`web`]); only the replica holding the Lease runs the controllers.

pub mod client;
mod environment;
mod events;
mod finalizer;
pub mod gitops;
pub mod leader;
mod location;
mod ports;
pub mod relay;
mod release;
pub mod secrets;
mod tracking;
pub mod web;

use std::{
    collections::{BTreeMap, HashMap},
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use futures::{StreamExt, future::BoxFuture};
use kube::{
    Api, Client, ResourceExt,
    api::{Patch, PatchParams},
    runtime::{
        WatchStreamExt,
        reflector::{self, Store},
        watcher,
    },
};
use tokio::net::TcpListener;

use crate::{
    api::{CodeLocation, Environment, Release, Sha},
    ci::StoredVerdict,
    error::RecordError,
    http::server::{self, Persist, Shared},
};

/// Field manager of the CI verdicts written to CodeLocation statuses.
pub const CI_FIELD_MANAGER: &str = "vigie-ci";
/// The Release finalizer: the workloads go before the Release does.
pub const FINALIZER: &str = "vigie.dev/cleanup";
/// A Release with this annotation set to `"true"` leaves its workloads running when
/// deleted.
pub const ORPHAN_ANNOTATION: &str = "vigie.dev/orphan";

/// Options of `vigie controller`.
#[derive(Clone, Debug)]
pub struct Options {
    /// Where HTTP listens.
    pub listen: SocketAddr,
    /// The bounds of every HTTP connection.
    pub http: crate::http::listener::Limits,
    /// Watch one namespace only; all namespaces when `None`.
    pub namespace: Option<String>,
    /// Reconcile only the Releases, Environments and CodeLocations with these labels.
    pub selector: Option<String>,
    /// Run only while holding the Lease.
    pub leader_election: bool,
    /// The Lease's namespace when given (`--lease-namespace`); else the namespace the
    /// controller runs in ([`leader::lease_namespace`]).
    pub lease_namespace: Option<String>,
    /// The Lease's name.
    pub lease_name: String,
    /// This replica's identity in the Lease, given or named after the pod or host
    /// ([`leader::Identity::resolve`] completes it once the listener is bound).
    pub identity: leader::Identity,
    /// Client-side API requests per second.
    pub qps: f64,
    /// Requests allowed at once above `qps`.
    pub burst: u32,
    /// The HMAC key of `/hooks/ci`.
    pub webhook_secret: Option<Vec<u8>>,
    /// Releases reconciled at once.
    pub concurrency: u16,
    /// Labels Docker containers with this instance id (`vigie.dev/instance`).
    pub instance: String,
    /// Apply the manifests of a git branch (GitOps), when set.
    pub gitops: Option<gitops::Options>,
    /// How often the refs of `track` rules are checked.
    pub track_interval: Duration,
    /// Where git repositories (manifests, tracked code) are mirrored.
    pub git_cache: std::path::PathBuf,
    /// Vigie's public URL: reports to the forge link back to a Release's history.
    pub public_url: Option<String>,
    /// The web view's sessions, when it is served ([`web`]).
    pub web: Option<crate::web::Options>,
}

/// Why `vigie controller` stopped.
#[derive(Debug, thiserror::Error)]
pub enum OperatorError {
    /// No kubeconfig or in-cluster configuration.
    #[error("failed to configure the Kubernetes client: {0}")]
    Config(String),
    /// The listen address cannot be bound.
    #[error("failed to listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The Lease was lost: another replica leads now.
    #[error("lost the leader Lease")]
    LostLease,
}

/// What the controllers share.
pub struct Ctx {
    pub(crate) client: Client,
    pub(crate) options: Options,
    /// The Lease's namespace, where the ConfigMaps `vigie-push` and `vigie-gitops` go.
    pub(crate) lease_namespace: String,
    pub(crate) shared: Arc<Shared>,
    /// Kubernetes Events, created in the background.
    pub(crate) events: events::Events,
    /// The client of the background: what may wait for the reconcilers' work.
    pub(crate) background: Client,
    pub(crate) environments: Store<Environment>,
    pub(crate) locations: Store<CodeLocation>,
    pub(crate) releases: Mutex<Option<Store<Release>>>,
    pub(crate) deployments: Mutex<Option<Store<k8s_openapi::api::apps::v1::Deployment>>>,
    /// Reconciles a Release now (a downstream one whose upstream changed).
    pub(crate) trigger: Mutex<
        Option<
            futures::channel::mpsc::UnboundedSender<kube::runtime::reflector::ObjectRef<Release>>,
        >,
    >,
    pub(crate) secrets: secrets::SecretCache,
    /// When each SHA in flight may be polled again (GitHub, GitLab).
    pub(crate) polls: crate::reconcile::verdicts::Polls,
    /// Revisions resolved with git, reused for a while.
    pub(crate) revisions: crate::reconcile::revisions::Git,
    /// What the pipeline applied, per Release.
    pub(crate) memory: crate::reconcile::Memory,
    /// Failures in a row per Release, for the retry backoff.
    pub(crate) failures: Mutex<HashMap<kube::runtime::reflector::ObjectRef<Release>, u32>>,
    pub(crate) docker: Mutex<HashMap<String, (String, crate::backend::docker::DockerBackend)>>,
    /// Write-back to the GitOps repository, when it is on.
    pub(crate) writer: Option<Arc<crate::gitops::writeback::Writer>>,
    /// Sends the Environments' notifications in the background.
    pub(crate) dispatcher: crate::notify::deliver::Dispatcher,
    /// Reports deployments back to the forge in the background.
    pub(crate) reporter: crate::forge::Reporter,
    /// Writes the Dagster workspaces and has the webservers judge the code locations.
    pub(crate) dagster: crate::dagster::Instances<crate::dagster::configmap::ConfigMaps>,
}

impl Ctx {
    fn api<K>(&self, namespace: &str) -> Api<K>
    where
        K: kube::Resource<Scope = kube::core::NamespaceResourceScope, DynamicType = ()>
            + Clone
            + serde::de::DeserializeOwned
            + std::fmt::Debug,
    {
        Api::namespaced(self.client.clone(), namespace)
    }

    fn release_store(&self) -> Option<Store<Release>> {
        self.releases.lock().ok().and_then(|s| s.clone())
    }
}

/// Keeps `vigie_releases{phase}` at the count of the watched Releases in each phase,
/// as `vigie run` does after each round (read from the cache: no request).
async fn count_phases(ctx: Arc<Ctx>) {
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    loop {
        tick.tick().await;
        if let Some(store) = ctx.release_store() {
            ctx.shared.metrics.set_phases(
                store
                    .state()
                    .iter()
                    .map(|r| r.status.as_ref().map(|s| s.phase).unwrap_or_default()),
            );
        }
    }
}

/// Builds the clients from the kubeconfig or the in-cluster configuration, throttled
/// by one bucket: the reconcilers' work, and the background (Events, summaries) that
/// takes only the tokens the work leaves free.
///
/// # Errors
/// When no configuration is found.
pub async fn clients(
    qps: f64,
    burst: u32,
    metrics: &crate::metrics::Metrics,
) -> Result<(Client, Client), OperatorError> {
    let config = kube::Config::infer()
        .await
        .map_err(|e| OperatorError::Config(e.to_string()))?;
    let work = client::ThrottleLayer::new(qps, burst, metrics.api_requests.clone());
    let background = work.background();
    let build = |layer: &client::ThrottleLayer| {
        kube::client::ClientBuilder::try_from(config.clone())
            .map(|b| b.with_layer(layer).build())
            .map_err(|e| OperatorError::Config(e.to_string()))
    };
    Ok((build(&work)?, build(&background)?))
}

/// How long a watch request lasts before it is made again (the API server's own
/// default is 30 to 60 minutes; kube's 290 s would cost each watch 12 requests an hour
/// when nothing changes). A dead connection is still noticed: the API server sends a
/// bookmark every minute or so, and the watcher gives up after this long without one.
const WATCH_TIMEOUT_S: u32 = 1800;

fn watch_config() -> watcher::Config {
    watcher::Config::default()
        .any_semantic()
        .timeout(WATCH_TIMEOUT_S)
}

/// The watch of the objects Vigie reconciles (Releases, Environments, CodeLocations):
/// those matching `--selector`, when given.
fn objects_config(options: &Options) -> watcher::Config {
    match &options.selector {
        Some(s) => watch_config().labels(s),
        None => watch_config(),
    }
}

/// Drops from a cached object what no reconcile reads and takes the most room: its
/// managed fields and `kubectl apply`'s copy of the last configuration.
pub(crate) fn lean<K: kube::Resource>(o: &mut K) {
    o.meta_mut().managed_fields = None;
    if let Some(a) = o.meta_mut().annotations.as_mut() {
        a.remove("kubectl.kubernetes.io/last-applied-configuration");
    }
}

fn scoped<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: kube::Resource<Scope = kube::core::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// Writes verdicts to CodeLocation statuses (read, merge, write with the read
/// resourceVersion; retried on a conflict).
struct KubePersist {
    client: Client,
}

impl KubePersist {
    async fn persist_one(
        &self,
        key: &str,
        verdicts: &BTreeMap<Sha, StoredVerdict>,
    ) -> Result<(), RecordError> {
        let crate::api::key::ObjectKey {
            namespace: ns,
            name,
        } = key
            .parse()
            .map_err(|e: crate::api::key::KeyError| RecordError {
                category: crate::error::Category::InvalidSpec,
                source: Box::new(e),
            })?;
        let name = name.as_str();
        let api: Api<CodeLocation> = Api::namespaced(self.client.clone(), &ns);
        for _ in 0..5 {
            let current = api
                .get_status(name)
                .await
                .map_err(RecordError::kubernetes)?;
            let existing = current
                .status
                .as_ref()
                .map(|s| s.verdicts.clone())
                .unwrap_or_default();
            let (merged, changed) = crate::ci::merge_recorded(&existing, verdicts);
            if !changed {
                return Ok(());
            }
            let patch = serde_json::json!({
                "metadata": { "resourceVersion": current.resource_version() },
                "status": { "verdicts": merged },
            });
            match api
                .patch_status(
                    name,
                    &PatchParams {
                        field_manager: Some(CI_FIELD_MANAGER.into()),
                        ..PatchParams::default()
                    },
                    &Patch::Merge(&patch),
                )
                .await
            {
                Ok(_) => return Ok(()),
                Err(kube::Error::Api(s)) if s.code == 409 => {}
                Err(e) => return Err(RecordError::kubernetes(e)),
            }
        }
        Err(RecordError {
            category: crate::error::Category::Conflict,
            source: format!("{key}: status kept changing; gave up after 5 tries").into(),
        })
    }
}

impl Persist for KubePersist {
    fn persist(
        &self,
        verdicts: Vec<(String, BTreeMap<Sha, StoredVerdict>)>,
    ) -> BoxFuture<'_, Result<(), RecordError>> {
        Box::pin(async move {
            for (key, v) in &verdicts {
                self.persist_one(key, v).await?;
            }
            Ok(())
        })
    }
}

/// Keeps `shared.ci` (the CI settings webhooks are checked against, by
/// `namespace/name`) and the secret cache in step with the CodeLocations. Runs on
/// every replica.
async fn follow_locations(
    client: Client,
    namespace: Option<String>,
    shared: Arc<Shared>,
    secrets: secrets::SecretCache,
) {
    let (reader, writer) = reflector::store::<CodeLocation>();
    let api = scoped::<CodeLocation>(&client, namespace.as_deref());
    let stream = reflector::reflector(writer, watcher(api, watch_config())).default_backoff();
    futures::pin_mut!(stream);
    while let Some(event) = stream.next().await {
        match event {
            Err(e) => {
                tracing::warn!(error = %e, "watching CodeLocations");
                continue;
            }
            // The store swaps in the initial list at InitDone: act on the whole list then.
            Ok(watcher::Event::Init | watcher::Event::InitApply(_)) => continue,
            Ok(watcher::Event::InitDone) => tracing::debug!("CodeLocations synced"),
            Ok(_) => {}
        }
        let all = reader.state();
        // The settings first: a delivery to /hooks/ci for a location just created is
        // matched at once, not after the Secrets of every location are read again (a
        // delivery signed with the location's own Secret waits for that read, as
        // before, and the forge retries it).
        let ci = all
            .iter()
            .map(|l| {
                (
                    crate::api::key::ObjectKey::new(
                        l.namespace().unwrap_or_default(),
                        l.name_any(),
                    )
                    .to_string(),
                    l.spec.ci.clone(),
                )
            })
            .collect();
        if let Ok(mut current) = shared.ci.write() {
            *current = ci;
        }
        if let Ok(mut repos) = shared.tracked_repos.write() {
            *repos = all
                .iter()
                .filter(|l| !l.spec.track.is_empty())
                .map(|l| l.spec.repo.url.clone())
                .collect();
        }
        secrets.refresh(&client, &all).await;
        shared
            .ready
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Runs until SIGTERM or SIGINT (or the Lease is lost).
///
/// # Errors
/// When the client cannot be configured, the address bound, or the Lease is lost.
#[allow(
    clippy::too_many_lines,
    reason = "start, lead, run, stop: read in order"
)]
pub async fn run(options: Options) -> Result<(), OperatorError> {
    let secrets_cache = secrets::SecretCache::default();
    let mut shared = Shared::new_in_memory(options.webhook_secret.clone());
    shared.resolver = secrets_cache.resolver();
    let (client, background) = clients(options.qps, options.burst, &shared.metrics).await?;
    shared.persist = Some(Arc::new(KubePersist {
        client: client.clone(),
    }));
    let lease_namespace = leader::lease_namespace(
        options.lease_namespace.as_deref(),
        std::fs::read_to_string(leader::SERVICE_ACCOUNT_NAMESPACE)
            .ok()
            .as_deref(),
        Some(client.default_namespace()),
    );
    let shared = Arc::new(shared);
    let listener =
        TcpListener::bind(options.listen)
            .await
            .map_err(|source| OperatorError::Listen {
                addr: options.listen,
                source,
            })?;
    let listen_failed = |source| OperatorError::Listen {
        addr: options.listen,
        source,
    };
    let bound = listener.local_addr().map_err(listen_failed)?;
    // A named identity rests on the address being this process's for as long as it may
    // lead: the socket is held until `run` returns, whatever becomes of the HTTP task.
    let _held = std::os::fd::AsFd::as_fd(&listener)
        .try_clone_to_owned()
        .map_err(listen_failed)?;
    let identity = options
        .identity
        .resolve(leader::Place::here(bound).as_ref(), std::process::id());
    tracing::info!(listen = %bound, identity = %identity, lease_namespace = %lease_namespace, namespace = options.namespace.as_deref().unwrap_or("(all)"), "vigie controller started");
    let mut app = server::router(shared.clone());
    if let Some(web) = options.web.clone() {
        // Commits shown by the pages are mirrored apart from the GitOps repository.
        app = app.merge(web::router(
            client.clone(),
            options.namespace.clone(),
            secrets_cache.clone(),
            options.git_cache.join("web"),
            web,
        ));
    }
    let http = tokio::spawn(crate::http::listener::serve(
        listener,
        app,
        options.http,
        shared.metrics.http_refused.clone(),
    ));
    let follower = tokio::spawn(follow_locations(
        client.clone(),
        options.namespace.clone(),
        shared.clone(),
        secrets_cache.clone(),
    ));
    let shutdown = shutdown_signal();
    futures::pin_mut!(shutdown);

    // Every replica answers push webhooks for the manifests branch; a standby passes
    // them on to the leader.
    if let (Some(g), Ok(mut w)) = (&options.gitops, shared.git_watch.write()) {
        *w = Some(g.source.clone());
    }
    let relay = options.leader_election.then(|| {
        tokio::spawn(relay::standby(
            client.clone(),
            lease_namespace.clone(),
            shared.clone(),
        ))
    });
    let stop_relay = || {
        if let Some(r) = &relay {
            r.abort();
        }
    };

    let elector = options.leader_election.then(|| {
        leader::Elector::new(
            client.clone(),
            &lease_namespace,
            &options.lease_name,
            &identity,
            leader::Timings::default(),
        )
    });
    if let Some(e) = &elector {
        tokio::select! {
            () = e.acquire() => {}
            () = &mut shutdown => {
                http.abort();
                follower.abort();
                stop_relay();
                return Ok(());
            }
        }
    }
    shared.metrics.leader.set(1);

    let (env_reader, env_writer) = reflector::store::<Environment>();
    let (loc_reader, loc_writer) = reflector::store::<CodeLocation>();
    let polls = crate::reconcile::verdicts::Polls::default();
    // The CI token is read from the Secret cache that polling reads (it follows
    // CodeLocations' Secrets).
    let forge = {
        let cache = secrets_cache.clone();
        crate::forge::Reporter::new(
            polls.shared_auth(),
            Arc::new(move |ns, source| cache.get(ns, source)),
            options.public_url.clone(),
            shared.metrics.forge_reports.clone(),
            crate::forge::Retry::default(),
        )
    };
    let ctx = Arc::new(Ctx {
        reporter: forge,
        dagster: crate::dagster::Instances::new(crate::dagster::configmap::ConfigMaps::new(
            client.clone(),
        )),
        events: events::Events::start(
            background.clone(),
            &identity,
            shared.metrics.events_queued.clone(),
            shared.metrics.events_dropped.clone(),
        ),
        background,
        client: client.clone(),
        options: options.clone(),
        lease_namespace: lease_namespace.clone(),
        shared: shared.clone(),
        environments: env_reader,
        locations: loc_reader,
        releases: Mutex::new(None),
        deployments: Mutex::new(None),
        trigger: Mutex::new(None),
        dispatcher: {
            // Read when a message goes out: Environments' Secrets are not in the cache
            // (it follows CodeLocations), and a rotated webhook URL applies at once.
            let client = client.clone();
            crate::notify::deliver::Dispatcher::start(
                Arc::new(move |ns, source| {
                    let client = client.clone();
                    Box::pin(async move {
                        use crate::notify::deliver::SecretError;
                        match &source {
                            crate::api::SecretSource::SecretKeyRef(r) => {
                                secrets::read_classified(&client, &ns, r).await.map_err(
                                    |(why, transient)| {
                                        if transient {
                                            SecretError::Transient(why)
                                        } else {
                                            SecretError::Permanent(why)
                                        }
                                    },
                                )
                            }
                            // Whoever writes an Environment must not make the operator
                            // send its own files or variables (its token) anywhere.
                            _ => Err(SecretError::Permanent(
                                "with the operator, a sink's secrets come from Kubernetes Secrets (secretKeyRef); env and file sources are refused".into(),
                            )),
                        }
                    })
                }),
                Some(options.git_cache.join("commits")),
                shared.metrics.notifications.clone(),
                crate::notify::deliver::Retry::default(),
            )
        },
        secrets: secrets_cache,
        polls,
        revisions: crate::reconcile::revisions::Git::default(),
        memory: crate::reconcile::Memory::default(),
        failures: Mutex::new(HashMap::new()),
        docker: Mutex::new(HashMap::new()),
        writer: options
            .gitops
            .as_ref()
            .filter(|g| g.write_back.any())
            .map(|g| Arc::new(crate::gitops::writeback::Writer::new(g.write_back_target()))),
    });
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };
    let releases = tokio::spawn(release::controller(
        ctx.clone(),
        env_writer,
        loc_writer,
        stopped(),
    ));
    let environments = tokio::spawn(environment::controller(ctx.clone(), stopped()));
    let locations = tokio::spawn(location::controller(ctx.clone(), stopped()));
    let gitops = options
        .gitops
        .clone()
        .map(|g| tokio::spawn(gitops::run(ctx.clone(), g)));
    let tracker = tokio::spawn(tracking::run(
        ctx.clone(),
        options.track_interval,
        options.git_cache.clone(),
    ));
    let phases = tokio::spawn(count_phases(ctx.clone()));
    let relayed = options.leader_election.then(|| {
        tokio::spawn(relay::leader(
            client.clone(),
            lease_namespace.clone(),
            shared.clone(),
        ))
    });

    let lost = async {
        match &elector {
            Some(e) => e.keep().await,
            None => futures::future::pending().await,
        }
    };
    let result = tokio::select! {
        () = &mut shutdown => Ok(()),
        () = lost => Err(OperatorError::LostLease),
    };
    tracing::info!("vigie controller stopping");
    if let Some(g) = &gitops {
        g.abort();
    }
    tracker.abort();
    phases.abort();
    if let Some(r) = &relayed {
        r.abort();
    }
    let _ = stop_tx.send(true);
    let drain = async {
        let _ = releases.await;
        let _ = environments.await;
        let _ = locations.await;
    };
    if tokio::time::timeout(Duration::from_secs(20), drain)
        .await
        .is_err()
    {
        tracing::warn!("controllers did not stop within 20 s");
    }
    // The last transitions' messages (a rollback's, say) go out before the Lease is
    // given up; within the pod's default 30 s grace period.
    ctx.dispatcher.flush(Duration::from_secs(5)).await;
    ctx.reporter.flush(Duration::from_secs(3)).await;
    ctx.events.flush(Duration::from_secs(3)).await;
    shared.metrics.leader.set(0);
    if result.is_ok()
        && let Some(e) = &elector
    {
        e.release().await;
    }
    http.abort();
    follower.abort();
    stop_relay();
    result
}

async fn shutdown_signal() {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing a SIGTERM handler");
    tokio::select! {
        _ = terminate.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
