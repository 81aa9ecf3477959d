//! `make bench-k8s`: 500 Releases applied at once on the real control plane
//! (e2e/k8s.sh), against the same 500 Deployments created directly through the API in
//! the same run. Prints figures; asserts nothing about time.
//!
//! - time until every Release is Deployed (its Deployment available at the SHA's
//!   image), and the baseline: time until 500 Deployments created directly are
//!   available;
//! - the controller's resident memory after the rollout and after an idle minute;
//! - Kubernetes API requests per Release (`vigie_api_requests_total`);
//! - API requests per hour when nothing changes (an idle minute, extrapolated), with
//!   leader election off (its Lease renewals, 2 requests every 2 s, come on top).

#![allow(
    clippy::too_many_lines,
    clippy::cast_precision_loss,
    reason = "a benchmark script: one story; figures printed as floats"
)]

use std::{
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

const N: usize = 500;
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
        "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}
    }))
    .unwrap();
    api.create(&PostParams::default(), &ns).await.unwrap();
}

fn direct(ns: &str, i: usize) -> Deployment {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": format!("app-{i}"), "namespace": ns},
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

/// Waits until `done` holds for `N` objects listed in `ns`.
async fn wait_all<K>(api: &Api<K>, what: &str, done: impl Fn(&K) -> bool) -> Duration
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let start = Instant::now();
    loop {
        let list = api.list(&ListParams::default()).await.unwrap();
        let n = list.items.iter().filter(|o| done(o)).count();
        if n >= N {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < Duration::from_secs(1800),
            "{what}: only {n} of {N} after 30 min"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
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
fn requests(port: u16) -> Vec<(String, f64)> {
    metrics(port)
        .lines()
        .filter_map(|l| {
            let rest = l.strip_prefix("vigie_api_requests_total{verb=\"")?;
            let (verb, value) = rest.split_once("\"} ")?;
            Some((verb.to_owned(), value.parse().ok()?))
        })
        .collect()
}

fn total(r: &[(String, f64)]) -> f64 {
    r.iter().map(|(_, v)| v).sum()
}

struct Kill(Child);
impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
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
    let base_ns = format!("bench-direct-{stamp}");
    let vigie_ns = format!("bench-vigie-{stamp}");
    namespace(&client, &base_ns).await;
    namespace(&client, &vigie_ns).await;

    // Baseline: the API server and the Deployment controller alone.
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &base_ns);
    let start = Instant::now();
    stream::iter(0..N)
        .for_each_concurrent(IN_FLIGHT, |i| {
            let api = deployments.clone();
            let ns = base_ns.clone();
            async move {
                api.create(&PostParams::default(), &direct(&ns, i))
                    .await
                    .unwrap();
            }
        })
        .await;
    let created = start.elapsed();
    let rest = wait_all(&deployments, "direct Deployments available", available).await;
    let direct_total = start.elapsed();
    println!(
        "baseline: {N} Deployments created directly in {:.2} s, all available after {:.2} s",
        created.as_secs_f64(),
        direct_total.as_secs_f64()
    );
    let _ = rest;

    // Vigie: one Environment, one CodeLocation, 500 Releases.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(env!("CARGO_BIN_EXE_vigie"))
        .args([
            "controller",
            &format!("--listen=127.0.0.1:{port}"),
            &format!("--namespace={vigie_ns}"),
            "--leader-elect=false",
            &format!("--kube-api-qps={QPS}"),
            &format!("--kube-api-burst={BURST}"),
            "--log-format=json",
        ])
        .env("KUBECONFIG", kubeconfig())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("vigie controller starts");
    let pid = child.id();
    let guard = Kill(child);
    let shared = format!(
        r#"{{"apiVersion": "vigie.dev/v1alpha1", "kind": "Environment", "metadata": {{"name": "preprod", "namespace": "{vigie_ns}"}},
            "spec": {{"backend": {{"kubernetes": {{"namespace": "{vigie_ns}"}}}}}}}}"#
    );
    let dynamic = |kind: &str| {
        let gvk = kube::api::GroupVersionKind::gvk("vigie.dev", "v1alpha1", kind);
        let ar = kube::api::ApiResource::from_gvk(&gvk);
        Api::<kube::api::DynamicObject>::namespaced_with(client.clone(), &vigie_ns, &ar)
    };
    let env: kube::api::DynamicObject = serde_json::from_str(&shared).unwrap();
    dynamic("Environment")
        .create(&PostParams::default(), &env)
        .await
        .unwrap();
    let loc: kube::api::DynamicObject = serde_json::from_value(serde_json::json!({
        "apiVersion": "vigie.dev/v1alpha1", "kind": "CodeLocation",
        "metadata": {"name": "app", "namespace": vigie_ns},
        "spec": {"repo": {"url": "https://git.example/app.git"}, "ci": {"webhook": {}},
            "artifact": {"image": {"template": "registry.example/app:{sha}"}},
            "container": {"ports": [{"containerPort": 8080}]}}
    }))
    .unwrap();
    dynamic("CodeLocation")
        .create(&PostParams::default(), &loc)
        .await
        .unwrap();
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let before = total(&requests(port));
    let releases: Api<Release> = Api::namespaced(client.clone(), &vigie_ns);
    let start = Instant::now();
    let api = dynamic("Release");
    stream::iter(0..N)
        .for_each_concurrent(IN_FLIGHT, |i| {
            let api = api.clone();
            let ns = vigie_ns.clone();
            async move {
                let r: kube::api::DynamicObject = serde_json::from_value(serde_json::json!({
                    "apiVersion": "vigie.dev/v1alpha1", "kind": "Release",
                    "metadata": {"name": format!("app-{i}"), "namespace": ns},
                    "spec": {"codeLocation": "app", "environment": "preprod", "revision": sha(i)}
                }))
                .unwrap();
                api.create(&PostParams::default(), &r).await.unwrap();
            }
        })
        .await;
    let applied = start.elapsed();
    wait_all(&releases, "Releases deployed", |r: &Release| {
        r.status
            .as_ref()
            .is_some_and(|s| s.phase == Phase::Verifying && s.deployed_sha.is_some())
    })
    .await;
    let vigie_total = start.elapsed();
    let vigie_deployments: Api<Deployment> = Api::namespaced(client.clone(), &vigie_ns);
    let all_available = vigie_deployments
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .iter()
        .filter(|d| available(d))
        .count();
    let rollout_requests = total(&requests(port)) - before;
    let rss_rollout = rss_kib(pid);
    println!(
        "vigie: {N} Releases applied in {:.2} s, all Deployed after {:.2} s ({all_available} Deployments available); ratio to the baseline {:.2}x (qps {QPS}, burst {BURST})",
        applied.as_secs_f64(),
        vigie_total.as_secs_f64(),
        vigie_total.as_secs_f64() / direct_total.as_secs_f64()
    );
    println!(
        "API requests: {rollout_requests:.0} for {N} Releases = {:.1} per Release ({})",
        rollout_requests / N as f64,
        requests(port)
            .iter()
            .map(|(v, n)| format!("{v} {n:.0}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "controller RSS after the rollout: {:.1} MiB",
        rss_rollout as f64 / 1024.0
    );

    // Idle: nothing changes for a minute.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let idle_start = total(&requests(port));
    let window = Duration::from_secs(60);
    tokio::time::sleep(window).await;
    let idle = total(&requests(port)) - idle_start;
    println!(
        "idle: {idle:.0} API requests in {} s = {:.0} per hour (leader election off; its Lease renewals add 3600/hour)",
        window.as_secs(),
        idle * 3600.0 / window.as_secs_f64()
    );
    println!(
        "controller RSS after an idle minute: {:.1} MiB",
        rss_kib(pid) as f64 / 1024.0
    );

    drop(guard);
    for ns in [&base_ns, &vigie_ns] {
        let api: Api<Namespace> = Api::all(client.clone());
        let _ = api.delete(ns, &DeleteParams::default()).await;
    }
}
