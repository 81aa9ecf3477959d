//! `make bench-k8s`: Releases applied at once on the real control plane
//! (e2e/k8s.sh), spread over 50 namespaces (an Environment and a CodeLocation in each),
//! against the same number of Deployments created directly through the API in the
//! same run, over 50 namespaces too. 500 by default; `VIGIE_BENCH_K8S_RELEASES=500,5000`
//! runs each size in turn (5,000 needs the capacity of a control plane started by
//! this version of e2e/k8s.sh, 2 kwok nodes of 6,000 pods, and takes about 10 minutes
//! here). Prints figures, each next to its baseline; asserts nothing about time.
//!
//! - time until every Release is Deployed (its Deployment available at the SHA's
//!   image), and the baseline: time until the Deployments created directly are
//!   available;
//! - Kubernetes API requests per Release by verb (`vigie_api_requests_total`), against
//!   the one create per Deployment of the baseline;
//! - the controller's resident memory after the rollout and after an idle minute;
//! - API requests per hour when nothing changes (an idle minute, extrapolated), with
//!   leader election off: its Lease renewals (2 requests every 2 s) are excluded.
//!
//! `VIGIE_BENCH_K8S_EVENTS=all,failures` runs the Vigie part twice against the same
//! baseline: every transition an Event (the default), then Environments whose
//! `kubernetesEvents` sink names only the failures (what a first deploy that goes well
//! costs without its two Events).
//!
//! `VIGIE_BENCH_K8S_LOG=<folder>` keeps each controller's debug log there.
//!
//! The controller reconciles only the bench's objects (`--selector`): other sessions'
//! Releases in the cluster are left alone.

#![allow(
    clippy::too_many_lines,
    clippy::cast_precision_loss,
    reason = "a benchmark script: one story; figures printed as floats"
)]

use std::{
    collections::BTreeMap,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use futures::{StreamExt, stream};
use k8s_openapi::api::{apps::v1::Deployment, core::v1::Namespace};
use kube::{
    Api, Client,
    api::{DeleteParams, ListParams, PostParams},
};
use vigie::api::{Phase, Release};

const NAMESPACES: usize = 50;
const IN_FLIGHT: usize = 16;
const QPS: &str = "100";
const BURST: &str = "200";

fn kubeconfig() -> std::path::PathBuf {
    std::path::PathBuf::from(
        std::env::var("VIGIE_E2E_K8S_DIR").unwrap_or_else(|_| "/var/lib/vigie-e2e/k8s".into()),
    )
    .join("admin.kubeconfig")
}

async fn client() -> Client {
    let config = kube::Config::from_custom_kubeconfig(
        kube::config::Kubeconfig::read_from(kubeconfig()).expect("run e2e/k8s.sh ensure"),
        &kube::config::KubeConfigOptions::default(),
    )
    .await
    .unwrap();
    kube::Client::try_from(config).unwrap()
}

fn sha(i: usize) -> String {
    format!("{i:040x}")
}

async fn namespace(client: &Client, name: &str) {
    let api: Api<Namespace> = Api::all(client.clone());
    let ns: Namespace = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": {"vigie.dev/bench": "k8s"}}
    }))
    .unwrap();
    api.create(&PostParams::default(), &ns).await.unwrap();
}

fn direct(ns: &str, i: usize, run: &str) -> Deployment {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": format!("app-{i}"), "namespace": ns, "labels": {"bench": run}},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": format!("app-{i}")}},
            "template": {
                "metadata": {"labels": {"app": format!("app-{i}")}},
                "spec": {"containers": [{"name": "app", "image": format!("registry.example/app:{}", sha(i)),
                    "ports": [{"containerPort": 8080}]}]}
            }
        }
    }))
    .unwrap()
}

fn available(d: &Deployment) -> bool {
    let s = d.status.clone().unwrap_or_default();
    s.observed_generation >= d.metadata.generation && s.available_replicas.unwrap_or(0) >= 1
}

/// Waits until `done` holds for `total` objects with the label `selector`, as a watch
/// brings them (a list of thousands of Releases every half second would load the API
/// server the run measures).
async fn wait_all<K>(
    api: &Api<K>,
    selector: &str,
    total: usize,
    what: &str,
    done: impl Fn(&K) -> bool,
) -> Duration
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    use kube::runtime::{WatchStreamExt, watcher};
    let start = Instant::now();
    let mut finished = std::collections::BTreeSet::new();
    let objects = watcher(api.clone(), watcher::Config::default().labels(selector))
        .default_backoff()
        .applied_objects();
    futures::pin_mut!(objects);
    let watching = async {
        while let Some(o) = objects.next().await {
            let Ok(o) = o else { continue };
            let key = (o.meta().namespace.clone(), o.meta().name.clone());
            if done(&o) {
                finished.insert(key);
            } else {
                finished.remove(&key);
            }
            if finished.len() >= total {
                return;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(3600), watching)
        .await
        .unwrap_or_else(|_| panic!("{what}: only {} of {total} after an hour", finished.len()));
    start.elapsed()
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn metrics(port: u16) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

/// `vigie_api_requests_total` by verb.
fn requests(port: u16) -> BTreeMap<String, f64> {
    metrics(port)
        .lines()
        .filter_map(|l| {
            let rest = l.strip_prefix("vigie_api_requests_total{verb=\"")?;
            let (verb, value) = rest.split_once("\"} ")?;
            Some((verb.to_owned(), value.parse().ok()?))
        })
        .collect()
}

/// `vigie_events_queued`: Kubernetes Events the controller has yet to create.
fn events_queued(port: u16) -> f64 {
    metrics(port)
        .lines()
        .find_map(|l| l.strip_prefix("vigie_events_queued ")?.trim().parse().ok())
        .unwrap_or(0.0)
}

fn total(r: &BTreeMap<String, f64>) -> f64 {
    r.values().sum()
}

/// `after - before`, by verb, each divided by `per`.
fn by_verb(before: &BTreeMap<String, f64>, after: &BTreeMap<String, f64>, per: f64) -> String {
    after
        .iter()
        .map(|(v, n)| (v, n - before.get(v).copied().unwrap_or(0.0)))
        .filter(|(_, n)| *n > 0.0)
        .map(|(v, n)| format!("{v} {:.2}", n / per))
        .collect::<Vec<_>>()
        .join(", ")
}

struct Kill(Child);
impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Removes a run's namespaces; the Releases' finalizers, if any, are cleared first (the
/// controller that would run them is gone).
async fn remove(client: &Client, namespaces: &[String]) {
    for ns in namespaces {
        let releases: Api<Release> = Api::namespaced(client.clone(), ns);
        if let Ok(list) = releases.list(&ListParams::default()).await {
            for r in list
                .items
                .iter()
                .filter(|r| r.metadata.finalizers.is_some())
            {
                let name = r.metadata.name.clone().unwrap_or_default();
                let _ = releases
                    .patch(
                        &name,
                        &kube::api::PatchParams::default(),
                        &kube::api::Patch::Merge(
                            serde_json::json!({"metadata": {"finalizers": null}}),
                        ),
                    )
                    .await;
            }
        }
        let api: Api<Namespace> = Api::all(client.clone());
        let _ = api.delete(ns, &DeleteParams::default()).await;
    }
}

/// Which transitions the bench's Environments publish as Kubernetes Events.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Events {
    /// Every transition (no `kubernetesEvents` sink: the default).
    All,
    /// Those that need a person: a `kubernetesEvents` sink naming the failures.
    Failures,
}

/// The bench's `NAMESPACES` namespaces `<prefix>-0`, `<prefix>-1`…, created.
async fn namespaces(client: &Client, prefix: &str) -> Vec<String> {
    let names: Vec<String> = (0..NAMESPACES).map(|j| format!("{prefix}-{j}")).collect();
    for ns in &names {
        namespace(client, ns).await;
    }
    names
}

/// One size: `n` Deployments created directly, then `n` Releases for each pass, over 50
/// namespaces each.
async fn run(client: &Client, n: usize, stamp: u64, passes: &[Events]) {
    let run = format!("{stamp}-{n}");
    let direct_ns = namespaces(client, &format!("bench-direct-{run}")).await;
    println!(
        "== {n} Releases over {NAMESPACES} namespaces, vs {n} Deployments created directly over {NAMESPACES} namespaces"
    );

    // Baseline: the API server and the Deployment controller alone.
    let start = Instant::now();
    stream::iter(0..n)
        .for_each_concurrent(IN_FLIGHT, |i| {
            let ns = direct_ns[i % NAMESPACES].clone();
            let api: Api<Deployment> = Api::namespaced(client.clone(), &ns);
            let run = run.clone();
            async move {
                api.create(&PostParams::default(), &direct(&ns, i, &run))
                    .await
                    .unwrap();
            }
        })
        .await;
    let created = start.elapsed();
    let all_deployments: Api<Deployment> = Api::all(client.clone());
    wait_all(
        &all_deployments,
        &format!("bench={run}"),
        n,
        "direct Deployments available",
        available,
    )
    .await;
    let direct_total = start.elapsed();
    println!(
        "baseline: {n} Deployments created directly in {:.2} s (1 create each), all available after {:.2} s",
        created.as_secs_f64(),
        direct_total.as_secs_f64()
    );
    remove(client, &direct_ns).await;
    for (k, events) in passes.iter().enumerate() {
        vigie(client, n, &format!("{run}-{k}"), direct_total, *events).await;
    }
}

/// Vigie: an Environment and a CodeLocation per namespace, n Releases.
async fn vigie(client: &Client, n: usize, run: &str, direct_total: Duration, events: Events) {
    let vigie_ns = namespaces(client, &format!("bench-vigie-{run}")).await;
    println!(
        "-- {}",
        match events {
            Events::All => "every transition an Event (the default)",
            Events::Failures =>
                "Events for failures only (a kubernetesEvents sink: VerificationFailed, RolledBack, Failed, HookFailed)",
        }
    );
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let selector = format!("vigie.dev/bench={run}");
    // VIGIE_BENCH_K8S_LOG=<folder>: the controller's debug log of each pass there.
    let log = std::env::var_os("VIGIE_BENCH_K8S_LOG").map(|dir| {
        std::fs::File::create(std::path::Path::new(&dir).join(format!("controller-{run}.log")))
            .expect("VIGIE_BENCH_K8S_LOG is a folder")
    });
    let child = Command::new(env!("CARGO_BIN_EXE_vigie"))
        .args([
            "controller",
            &format!("--listen=127.0.0.1:{port}"),
            &format!("--selector={selector}"),
            "--leader-elect=false",
            &format!("--kube-api-qps={QPS}"),
            &format!("--kube-api-burst={BURST}"),
            "--log-format=json",
        ])
        .env("KUBECONFIG", kubeconfig())
        .env(
            "RUST_LOG",
            if log.is_some() { "vigie=debug" } else { "warn" },
        )
        .stdout(Stdio::null())
        .stderr(log.map_or_else(Stdio::null, Stdio::from))
        .spawn()
        .expect("vigie controller starts");
    let pid = child.id();
    let guard = Kill(child);
    let dynamic = |kind: &str, ns: &str| {
        let gvk = kube::api::GroupVersionKind::gvk("vigie.dev", "v1alpha1", kind);
        let ar = kube::api::ApiResource::from_gvk(&gvk);
        Api::<kube::api::DynamicObject>::namespaced_with(client.clone(), ns, &ar)
    };
    let labels = serde_json::json!({"vigie.dev/bench": run});
    let notifications = match events {
        Events::All => serde_json::json!([]),
        Events::Failures => serde_json::json!([{"name": "events", "kubernetesEvents": {},
            "events": ["VerificationFailed", "RolledBack", "Failed", "HookFailed"]}]),
    };
    for ns in &vigie_ns {
        let env: kube::api::DynamicObject = serde_json::from_value(serde_json::json!({
            "apiVersion": "vigie.dev/v1alpha1", "kind": "Environment",
            "metadata": {"name": "preprod", "namespace": ns, "labels": labels},
            "spec": {"backend": {"kubernetes": {"namespace": ns}},
                // No verdict comes: the first Releases would fail their verification
                // (5 minutes by default) before the last of 5,000 is Deployed.
                "verification": {"timeout": "2h"},
                "notifications": notifications}
        }))
        .unwrap();
        dynamic("Environment", ns)
            .create(&PostParams::default(), &env)
            .await
            .unwrap();
        let loc: kube::api::DynamicObject = serde_json::from_value(serde_json::json!({
            "apiVersion": "vigie.dev/v1alpha1", "kind": "CodeLocation",
            "metadata": {"name": "app", "namespace": ns, "labels": labels},
            "spec": {"repo": {"url": "https://git.example/app.git"}, "ci": {"webhook": {}},
                "artifact": {"image": {"template": "registry.example/app:{sha}"}},
                "container": {"ports": [{"containerPort": 8080}]}}
        }))
        .unwrap();
        dynamic("CodeLocation", ns)
            .create(&PostParams::default(), &loc)
            .await
            .unwrap();
    }
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The Environments and CodeLocations settle (their first status) before the count.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let before = requests(port);
    let start = Instant::now();
    stream::iter(0..n)
        .for_each_concurrent(IN_FLIGHT, |i| {
            let ns = vigie_ns[i % NAMESPACES].clone();
            let api = dynamic("Release", &ns);
            let labels = labels.clone();
            async move {
                let r: kube::api::DynamicObject = serde_json::from_value(serde_json::json!({
                    "apiVersion": "vigie.dev/v1alpha1", "kind": "Release",
                    "metadata": {"name": format!("app-{i}"), "namespace": ns, "labels": labels},
                    "spec": {"codeLocation": "app", "environment": "preprod", "revision": sha(i)}
                }))
                .unwrap();
                api.create(&PostParams::default(), &r).await.unwrap();
            }
        })
        .await;
    let applied = start.elapsed();
    let all_releases: Api<Release> = Api::all(client.clone());
    wait_all(
        &all_releases,
        &selector,
        n,
        "Releases deployed",
        |r: &Release| {
            r.status
                .as_ref()
                .is_some_and(|s| s.phase == Phase::Verifying && s.deployed_sha.is_some())
        },
    )
    .await;
    let vigie_total = start.elapsed();
    let deployed = requests(port);
    // The Events trail the rollout (they take only the tokens the work leaves free):
    // they are counted too, once all are created.
    while events_queued(port) > 0.0 {
        assert!(
            start.elapsed() < Duration::from_secs(3600),
            "Events still queued after an hour"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let events_done = start.elapsed();
    let after = requests(port);
    let rss_rollout = rss_kib(pid);
    let rollout_requests = total(&after) - total(&before);
    println!(
        "vigie: {n} Releases applied in {:.2} s, all Deployed after {:.2} s; ratio to the baseline {:.2}x (target <= {}x; before: 4.1x at 500 in one namespace) (qps {QPS}, burst {BURST})",
        applied.as_secs_f64(),
        vigie_total.as_secs_f64(),
        vigie_total.as_secs_f64() / direct_total.as_secs_f64(),
        if n > 500 { "2" } else { "1.5" },
    );
    println!(
        "API requests per Release, first deploy: {:.2} ({}) — baseline: 1 create per Deployment created directly; target <= 3; before: 8.3 (patch 5.6, create 2.0, get 0.6)",
        rollout_requests / n as f64,
        by_verb(&before, &after, n as f64)
    );
    println!(
        "  until all Deployed: {:.2} per Release ({}); the Events, created in the background, all out after {:.2} s",
        (total(&deployed) - total(&before)) / n as f64,
        by_verb(&before, &deployed, n as f64),
        events_done.as_secs_f64()
    );
    println!(
        "controller RSS after the rollout: {:.1} MiB (target <= 150 MiB at 5,000; before: 53.1 MiB at 500)",
        rss_rollout as f64 / 1024.0
    );

    // Idle: nothing changes for a minute.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let idle_start = requests(port);
    let window = Duration::from_secs(60);
    tokio::time::sleep(window).await;
    let idle_end = requests(port);
    let idle = total(&idle_end) - total(&idle_start);
    let per_hour = 3600.0 / window.as_secs_f64();
    println!(
        "idle: {idle:.0} API requests in {} s = {:.0} per hour ({}) — leader election off, its Lease renewals (3600/hour) excluded; target 0; before: 60 per hour",
        window.as_secs(),
        idle * per_hour,
        by_verb(&idle_start, &idle_end, 1.0 / per_hour)
    );
    println!(
        "controller RSS after an idle minute: {:.1} MiB",
        rss_kib(pid) as f64 / 1024.0
    );
    drop(guard);
    remove(client, &vigie_ns).await;
}

#[tokio::main]
async fn main() {
    let crds = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../crds");
    let kubectl = kubeconfig().parent().unwrap().join("bin/kubectl");
    let applied = Command::new(kubectl)
        .arg("--kubeconfig")
        .arg(kubeconfig())
        .args(["apply", "--server-side", "-f"])
        .arg(&crds)
        .output()
        .expect("kubectl (e2e/k8s.sh ensure builds it)");
    assert!(
        applied.status.success(),
        "{}",
        String::from_utf8_lossy(&applied.stderr)
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let client = client().await;
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        % 1_000_000;
    let sizes = std::env::var("VIGIE_BENCH_K8S_RELEASES").unwrap_or_else(|_| "500".into());
    let passes: Vec<Events> = std::env::var("VIGIE_BENCH_K8S_EVENTS")
        .unwrap_or_else(|_| "all".into())
        .split(',')
        .map(|e| match e.trim() {
            "all" => Events::All,
            "failures" => Events::Failures,
            other => panic!("VIGIE_BENCH_K8S_EVENTS: {other:?} is neither all nor failures"),
        })
        .collect();
    for n in sizes
        .split(',')
        .filter_map(|s| s.trim().parse::<usize>().ok())
    {
        run(&client, n, stamp, &passes).await;
    }
}
