//! `vigie controller` against a real control plane (e2e/k8s.sh: etcd, kube-apiserver
//! with RBAC, kube-controller-manager, kube-scheduler, kwok nodes): the CRDs as the
//! API server sees them, the Helm chart's RBAC, the Release lifecycle through kubectl,
//! a controller killed mid-verification, leader election, existing Deployments, Docker
//! hosts over TLS with certificates from a Secret.
//!
//! Each test has its own namespace (dumped when it fails) and its own controller
//! process watching only that namespace.

#![allow(
    clippy::many_single_char_names,
    reason = "n is the namespace; a and b are the two SHAs"
)]
#![allow(clippy::too_many_lines, reason = "each test tells one story, in order")]

mod docker;
mod forges;
mod gitserve;
mod skip;

use gitserve::git;
mod k8s;
mod providers;
mod receiver;
mod smtp;

use std::time::Duration;

use k8s::{
    Controller, Namespace, admin, apply, eventually, kubectl, kubectl_as, kubectl_stdin, manifests,
    sha, stderr, stdout,
};
use k8s_openapi::api::{
    apps::v1::{Deployment, ReplicaSet},
    coordination::v1::Lease,
    core::v1::Service,
};
use kube::{Api, api::ListParams};
use vigie::api::{Phase, Release};

const T: Duration = Duration::from_secs(60);

async fn release(ns: &str, name: &str) -> Option<Release> {
    let api: Api<Release> = Api::namespaced(k8s::client().await, ns);
    api.get_opt(name).await.ok().flatten()
}

async fn wait_phase(ns: &str, name: &str, phase: Phase) -> Release {
    eventually(T, &format!("Release {name} in phase {phase:?}"), || async {
        release(ns, name)
            .await
            .filter(|r| r.status.as_ref().is_some_and(|s| s.phase == phase))
    })
    .await
}

async fn deployment(ns: &str, name: &str) -> Option<Deployment> {
    let api: Api<Deployment> = Api::namespaced(k8s::client().await, ns);
    api.get_opt(name).await.ok().flatten()
}

fn image_of(d: &Deployment) -> String {
    d.spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap()
        .containers[0]
        .image
        .clone()
        .unwrap_or_default()
}

/// Waits until the Deployment runs `image` with every replica updated and available.
async fn wait_rolled_out(ns: &str, name: &str, image: &str) -> Deployment {
    eventually(
        T,
        &format!("Deployment {name} rolled out at {image}"),
        || async {
            deployment(ns, name).await.filter(|d| {
                let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
                let s = d.status.clone().unwrap_or_default();
                image_of(d) == image
                    && s.observed_generation >= d.metadata.generation
                    && s.updated_replicas.unwrap_or(0) == want
                    && s.available_replicas.unwrap_or(0) == want
                    && s.replicas.unwrap_or(0) == want
            })
        },
    )
    .await
}

fn image(s: &str) -> String {
    format!("registry.example/web:{s}")
}

fn set_revision(ns: &str, name: &str, revision: &str) {
    let out = kubectl(&[
        "-n",
        ns,
        "patch",
        "release",
        name,
        "--type=merge",
        "-p",
        &format!(r#"{{"spec":{{"revision":"{revision}"}}}}"#),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_api_server_accepts_the_crds_and_enforces_their_rules() {
    if !k8s::enabled("crds") {
        return;
    }
    let ns = Namespace::new("crds");
    let n = &ns.name;
    apply(&manifests(n, &sha('a')));
    let cases: [(&str, String, &str); 6] = [
        (
            "a revision that is neither a SHA nor a ref",
            format!(
                "apiVersion: vigie.dev/v1alpha1\nkind: Release\nmetadata: {{name: bad-rev, namespace: {n}}}\nspec: {{codeLocation: web, environment: preprod, revision: 'not a ref!'}}\n"
            ),
            "spec.revision",
        ),
        (
            "an unknown field",
            format!(
                "apiVersion: vigie.dev/v1alpha1\nkind: Release\nmetadata: {{name: typo, namespace: {n}}}\nspec: {{codeLocation: web, environment: preprod, revison: main}}\n"
            ),
            "unknown field \"spec.revison\"",
        ),
        (
            "an immutable environment changed",
            format!(
                "apiVersion: vigie.dev/v1alpha1\nkind: Release\nmetadata: {{name: web-preprod, namespace: {n}}}\nspec: {{codeLocation: web, environment: prod, revision: '{}'}}\n",
                sha('a')
            ),
            "environment is immutable",
        ),
        (
            "a backend that is both Docker and Kubernetes",
            format!(
                "apiVersion: vigie.dev/v1alpha1\nkind: Environment\nmetadata: {{name: both, namespace: {n}}}\nspec: {{backend: {{docker: {{}}, kubernetes: {{namespace: x}}}}}}\n"
            ),
            "backend",
        ),
        (
            "TLS on a socket engine (a CEL rule)",
            format!(
                "apiVersion: vigie.dev/v1alpha1\nkind: Environment\nmetadata: {{name: tls, namespace: {n}}}\nspec: {{backend: {{docker: {{host: 'unix:///var/run/docker.sock', tls: {{caFile: /a, certFile: /b, keyFile: /c}}}}}}}}\n"
            ),
            "tls applies only to a tcp:// host",
        ),
        (
            "a hook name in both preDeploy and postDeploy (a CEL rule)",
            format!(
                "apiVersion: vigie.dev/v1alpha1\nkind: Environment\nmetadata: {{name: hooks, namespace: {n}}}\nspec: {{backend: {{docker: {{}}}}, hooks: {{preDeploy: [{{name: check, image: 'x:1'}}], postDeploy: [{{name: check, image: 'x:1'}}]}}}}\n"
            ),
            "hook names must be unique across preDeploy and postDeploy",
        ),
    ];
    // The Kubernetes example passes the API server's validation as it is, in this
    // test's namespace (`apps` belongs to the quickstart test, which runs beside it
    // and deletes `apps` when it ends).
    let example = std::fs::read_to_string(k8s::root().join("examples/kubernetes/web.yaml"))
        .unwrap()
        .replace("namespace: apps", &format!("namespace: {n}"));
    let out = kubectl_stdin(
        &admin(),
        &["apply", "--dry-run=server", "-f", "-"],
        &example,
    );
    assert!(
        out.status.success(),
        "examples/kubernetes: {}",
        stderr(&out)
    );
    for (what, yaml, expected) in cases {
        let out = kubectl_stdin(&admin(), &["apply", "-f", "-"], &yaml);
        assert!(!out.status.success(), "{what}: accepted\n{yaml}");
        let message = stderr(&out);
        assert!(
            message.contains(expected),
            "{what}: the API server's message does not name {expected:?}:\n{message}"
        );
    }
}

/// Installs the chart in `ns` and returns a kubeconfig holding a token of its
/// ServiceAccount, its context in `ns` (as `kubectl config set-context --namespace`
/// leaves it).
fn helm_install(ns: &Namespace) -> std::path::PathBuf {
    let n = &ns.name;
    let chart = k8s::root().join("charts/vigie");
    let out = std::process::Command::new(k8s::bin("helm"))
        .args(["install", n, chart.to_str().unwrap(), "--namespace", n])
        .args(["--kubeconfig", admin().to_str().unwrap()])
        .args([
            "--set",
            "replicaCount=1",
            "--set",
            &format!("secretNamespaces={{{n}}}"),
        ])
        .args(["--wait", "--timeout", "120s"])
        .output()
        .unwrap();
    assert!(out.status.success(), "helm install: {}", stderr(&out));
    let sa = format!("{n}-vigie");
    let token = kubectl(&["-n", n, "create", "token", &sa, "--duration=2h"]);
    assert!(token.status.success(), "{}", stderr(&token));
    let path = std::env::temp_dir().join(format!("{n}-sa.kubeconfig"));
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: e2e\n  cluster:\n    server: https://127.0.0.1:16443\n    certificate-authority: {}\nusers:\n- name: vigie\n  user:\n    token: {}\ncontexts:\n- name: e2e\n  context: {{cluster: e2e, user: vigie, namespace: {n}}}\ncurrent-context: e2e\n",
            k8s::dir().join("pki/ca.crt").display(),
            stdout(&token).trim()
        ),
    )
    .unwrap();
    path
}

/// helm as the admin.
fn helm(args: &[&str]) -> std::process::Output {
    std::process::Command::new(k8s::bin("helm"))
        .args(["--kubeconfig", admin().to_str().unwrap()])
        .args(args)
        .output()
        .unwrap()
}

/// `secretNamespaces` naming a namespace that does not exist: the install stops before
/// creating anything, names the namespace and how to create it, and leaves no `failed`
/// release behind. The release's own namespace may be listed even when
/// `--create-namespace` creates it.
#[tokio::test(flavor = "multi_thread")]
async fn the_chart_refuses_secret_namespaces_that_do_not_exist() {
    if !k8s::enabled("chart-ns") {
        return;
    }
    let ns = Namespace::new("chart-ns");
    let n = ns.name.clone();
    let chart = k8s::root().join("charts/vigie");
    let chart = chart.to_str().unwrap();
    let (apps, system) = (format!("{n}-apps"), format!("{n}-sys"));
    let secrets = format!("secretNamespaces={{{apps},{system}}}");
    let install = || {
        helm(&[
            "install",
            &n,
            chart,
            "--namespace",
            &system,
            "--create-namespace",
            "--set",
            &secrets,
            "--set",
            "replicaCount=0",
        ])
    };

    let refused = install();
    let message = stderr(&refused);
    assert!(!refused.status.success(), "{}", stdout(&refused));
    assert!(
        message.contains(&format!("namespace {apps:?} does not exist"))
            && message.contains(&format!("kubectl create namespace {apps}")),
        "{message}"
    );
    let status = helm(&["status", &n, "--namespace", &system]);
    assert!(
        !status.status.success(),
        "a release was left behind:\n{}",
        stdout(&status)
    );

    let created = kubectl(&["create", "namespace", &apps]);
    assert!(created.status.success(), "{}", stderr(&created));
    let installed = install();
    assert!(installed.status.success(), "{}", stderr(&installed));
    let status = helm(&["status", &n, "--namespace", &system, "-o", "json"]);
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(status["info"]["status"], "deployed");

    let out = helm(&["uninstall", &n, "--namespace", &system]);
    assert!(out.status.success(), "{}", stderr(&out));
    let _ = kubectl(&["delete", "namespace", &apps, &system, "--wait=false"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn under_the_charts_service_account_a_red_verdict_rolls_the_deployment_back() {
    if !k8s::enabled("lifecycle") {
        return;
    }
    let ns = Namespace::new("lifecycle");
    let n = ns.name.clone();
    let sa = helm_install(&ns);
    // The chart's own Deployment rolled out (kwok runs its pod).
    wait_rolled_out(&n, &format!("{n}-vigie"), "vigie:0.1.0").await;

    let mut controller = Controller::new(&ns, &sa, "sa");
    controller.start();
    let (a, b) = (sha('a'), sha('b'));
    apply(&manifests(&n, &a));
    wait_rolled_out(&n, "web-preprod", &image(&a)).await;
    wait_phase(&n, "web-preprod", Phase::Verifying).await;
    let svc: Api<Service> = Api::namespaced(k8s::client().await, &n);
    let service = svc.get("web-preprod").await.expect("the Service exists");
    let port = &service.spec.unwrap().ports.unwrap()[0];
    assert_eq!(
        (port.port, port.target_port.clone()),
        (
            80,
            Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(8080))
        )
    );

    assert_eq!(controller.verdict("web", &a, "success"), 202);
    let r = wait_phase(&n, "web-preprod", Phase::Validated).await;
    assert_eq!(r.status.unwrap().validated_sha.unwrap().as_str(), a);

    set_revision(&n, "web-preprod", &b);
    wait_rolled_out(&n, "web-preprod", &image(&b)).await;
    wait_phase(&n, "web-preprod", Phase::Verifying).await;
    let red = std::time::Instant::now();
    assert_eq!(controller.verdict("web", &b, "failure"), 202);
    let r = wait_phase(&n, "web-preprod", Phase::RolledBack).await;
    wait_rolled_out(&n, "web-preprod", &image(&a)).await;
    eprintln!(
        "red verdict -> Deployment available at the validated image: {:?}",
        red.elapsed()
    );
    let status = r.status.unwrap();
    assert_eq!(status.deployed_sha.unwrap().as_str(), a);
    assert!(status.quarantine.iter().any(|q| q.sha.as_str() == b));
    let ready = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .unwrap();
    assert_eq!(ready.observed_generation, r.metadata.generation);

    // What a user sees.
    let table = stdout(&kubectl(&["-n", &n, "get", "releases"]));
    assert!(
        table.contains("web-preprod") && table.contains("RolledBack") && table.contains(&a[..7]),
        "{table}"
    );
    // Events go out in the background, after the transitions.
    let reasons = ["DeployStarted", "Deployed", "Validated", "RolledBack"];
    let events = events_showing(
        &n,
        "involvedObject.kind=Release",
        None,
        "an Event of each transition",
        |e| reasons.iter().all(|r| e.contains(r)),
    )
    .await;
    for reason in reasons {
        assert!(events.contains(reason), "no {reason} Event:\n{events}");
    }
    // The same metrics, with the same meaning, as `vigie run` shows for the same story
    // (e2e_docker.rs): transitions, Releases by phase, reconciles of a Release.
    let metrics = eventually(T, "the phases counted", || async {
        controller
            .metrics()
            .filter(|m| m.contains("vigie_releases{phase=\"RolledBack\"} 1"))
    })
    .await;
    for line in [
        "vigie_transitions_total{event=\"RolledBack\"} 1",
        "vigie_transitions_total{event=\"Validated\"} 1",
        "vigie_webhook_deliveries_total{outcome=\"accepted\"} 2",
    ] {
        assert!(metrics.contains(line), "{line} in\n{metrics}");
    }
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("vigie_reconciles_total{result=\"ok\"}") && !l.ends_with(" 0")),
        "{metrics}"
    );

    // The chart grants what the controller used, and no more.
    let can = |args: &[&str]| {
        let mut full = vec!["auth", "can-i"];
        full.extend_from_slice(args);
        stdout(&kubectl_as(&sa, &full)).trim() == "yes"
    };
    assert!(can(&["patch", "deployments", "-n", &n]));
    assert!(
        can(&["get", "secrets", "-n", &n]),
        "Secrets in secretNamespaces"
    );
    assert!(!can(&["list", "secrets", "-n", &n]), "get only, not list");
    assert!(
        !can(&["get", "secrets", "-n", "default"]),
        "Secrets elsewhere"
    );
    assert!(!can(&["create", "pods", "-n", &n]));
    assert!(!can(&["delete", "nodes"]));
    assert!(
        !can(&["update", "leases", "-n", "default"]),
        "Leases outside its namespace"
    );
    let denied = kubectl_as(&sa, &["-n", "default", "get", "secret", "anything"]);
    assert!(stderr(&denied).contains("forbidden"), "{}", stderr(&denied));
    let log = controller.log();
    assert!(
        !log.to_lowercase().contains("forbidden"),
        "the controller was refused something:\n{log}"
    );

    // Deleting the Release removes its workloads (the finalizer runs first).
    let out = kubectl(&[
        "-n",
        &n,
        "delete",
        "release",
        "web-preprod",
        "--timeout=60s",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    eventually(T, "the Deployment and Service gone", || async {
        let d = deployment(&n, "web-preprod").await;
        let s = svc.get_opt("web-preprod").await.ok().flatten();
        (d.is_none() && s.is_none()).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_controller_killed_mid_verification_resumes_without_a_second_rollout() {
    if !k8s::enabled("restart") {
        return;
    }
    let ns = Namespace::new("restart");
    let n = ns.name.clone();
    let mut controller = Controller::new(&ns, &admin(), "one");
    controller.start();
    let (a, b) = (sha('a'), sha('b'));
    apply(&manifests(&n, &a));
    wait_phase(&n, "web-preprod", Phase::Verifying).await;
    assert_eq!(controller.verdict("web", &a, "success"), 202);
    wait_phase(&n, "web-preprod", Phase::Validated).await;
    set_revision(&n, "web-preprod", &b);
    let before = wait_rolled_out(&n, "web-preprod", &image(&b)).await;
    wait_phase(&n, "web-preprod", Phase::Verifying).await;
    let rs: Api<ReplicaSet> = Api::namespaced(k8s::client().await, &n);
    let sets = |list: Vec<ReplicaSet>| {
        let mut names: Vec<String> = list.into_iter().filter_map(|r| r.metadata.name).collect();
        names.sort();
        names
    };
    let sets_before = sets(rs.list(&ListParams::default()).await.unwrap().items);

    controller.kill();
    controller.start();
    // The restarted controller reconciles (its metrics count the rounds) ...
    eventually(T, "the restarted controller's first reconciles", || async {
        controller.metrics().filter(|m| {
            m.lines().any(|l| {
                l.starts_with("vigie_reconciles_total{result=\"ok\"}") && !l.ends_with(" 0")
            })
        })
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    // ... and leaves the rollout alone.
    let after = deployment(&n, "web-preprod").await.unwrap();
    assert_eq!(
        after.metadata.generation, before.metadata.generation,
        "a second rollout"
    );
    assert_eq!(
        sets(rs.list(&ListParams::default()).await.unwrap().items),
        sets_before
    );
    let r = release(&n, "web-preprod").await.unwrap();
    let status = r.status.unwrap();
    assert_eq!(status.phase, Phase::Verifying);
    assert_eq!(status.rollout.unwrap().sha.as_str(), b);
    assert_eq!(controller.verdict("web", &b, "success"), 202);
    let r = wait_phase(&n, "web-preprod", Phase::Validated).await;
    assert_eq!(r.status.unwrap().validated_sha.unwrap().as_str(), b);
    assert_eq!(
        deployment(&n, "web-preprod")
            .await
            .unwrap()
            .metadata
            .generation,
        before.metadata.generation
    );
}

async fn holder(ns: &str) -> Option<String> {
    let api: Api<Lease> = Api::namespaced(k8s::client().await, ns);
    api.get_opt("vigie-controller")
        .await
        .ok()
        .flatten()
        .and_then(|l| l.spec?.holder_identity)
        .filter(|h| !h.is_empty())
}

fn leads(c: &Controller) -> bool {
    c.metrics()
        .is_some_and(|m| m.lines().any(|l| l == "vigie_leader 1"))
}

#[tokio::test(flavor = "multi_thread")]
async fn two_controllers_elect_one_leader_and_the_other_takes_over() {
    if !k8s::enabled("leader") {
        return;
    }
    let ns = Namespace::new("leader");
    let n = ns.name.clone();
    let mut one = Controller::new(&ns, &admin(), "one");
    let mut two = Controller::new(&ns, &admin(), "two");
    one.start();
    two.start();
    let first = eventually(T, "a Lease holder", || holder(&n)).await;
    let (mut leader, mut standby) = if first == "one" {
        (one, two)
    } else {
        (two, one)
    };
    eventually(T, "the holder reporting it leads", || async {
        leads(&leader).then_some(())
    })
    .await;
    assert!(!leads(&standby), "two leaders");
    apply(&manifests(&n, &sha('a')));
    wait_rolled_out(&n, "web-preprod", &image(&sha('a'))).await;
    // The standby answers webhooks too: the verdict goes to the CodeLocation's status.
    assert_eq!(standby.verdict("web", &sha('a'), "success"), 202);
    wait_phase(&n, "web-preprod", Phase::Validated).await;

    // The leader dies without a word: the standby takes over once the Lease expires.
    let dead = holder(&n).await.unwrap();
    leader.kill();
    let next = eventually(Duration::from_secs(45), "another holder", || async {
        holder(&n).await.filter(|h| *h != dead)
    })
    .await;
    assert_ne!(next, dead);
    eventually(T, "the new leader reporting it", || async {
        leads(&standby).then_some(())
    })
    .await;
    set_revision(&n, "web-preprod", &sha('b'));
    wait_rolled_out(&n, "web-preprod", &image(&sha('b'))).await;

    // SIGTERM hands over at once: the Lease is released on the way out.
    leader.start();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(!leads(&leader), "the restarted replica must stand by");
    let handed = std::time::Instant::now();
    let status = standby.terminate().unwrap();
    assert!(
        status.success(),
        "vigie controller exit on SIGTERM: {status:?}"
    );
    eventually(Duration::from_secs(10), "the handover", || async {
        leads(&leader).then_some(())
    })
    .await;
    eprintln!("handover after SIGTERM: {:?}", handed.elapsed());
    std::mem::swap(&mut leader, &mut standby);
}

/// A controller SIGKILLed and started again in the same place — a container restarted
/// in its pod (the chart sets `POD_NAME`), or a process restarted on a laptop with the
/// same `--listen` (no `POD_NAME`, as docs/kubernetes.md runs it) — has the same
/// identity and takes its own Lease back at once, instead of waiting out the lease
/// duration (15 s). Another process with the same pod or host name but listening
/// elsewhere is another replica: it stands by.
#[tokio::test(flavor = "multi_thread")]
async fn a_controller_restarted_in_place_takes_its_own_lease_back_at_once() {
    if !k8s::enabled("relead") {
        return;
    }
    let ns = Namespace::new("relead");
    let n = ns.name.clone();
    for (variant, pod) in [("pod", Some("vigie-5f7c9d8b4-qx2lm")), ("host", None)] {
        let derived = |name: &str| {
            let mut c = Controller::new(&ns, &admin(), name);
            c.without_arg("--identity=");
            c.env("POD_NAME", pod);
            c
        };
        let mut c = derived(variant);
        c.start();
        eventually(T, &format!("{variant}: the controller leading"), || async {
            leads(&c).then_some(())
        })
        .await;
        let held = holder(&n).await.expect("a holder");
        if let Some(pod) = pod {
            assert!(held.starts_with(pod), "{held} is not named after {pod}");
        }

        let mut other = derived(&format!("{variant}-other"));
        other.start();
        eventually(
            T,
            &format!("{variant}: the other process answering"),
            || async { other.metrics() },
        )
        .await;
        // Two retry periods (2 s each): time enough to take a Lease it thought its own.
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert!(
            !leads(&other),
            "{variant}: a second process with the same name leads too"
        );
        assert_eq!(holder(&n).await.as_deref(), Some(held.as_str()));
        other.kill();

        c.kill();
        let restarted = std::time::Instant::now();
        c.start();
        eventually(
            Duration::from_secs(8),
            &format!(
                "{variant}: the restarted controller leading again, before its old Lease expires"
            ),
            || async { leads(&c).then_some(()) },
        )
        .await;
        eprintln!(
            "{variant}: SIGKILL, restart -> leading again after {:?}",
            restarted.elapsed()
        );
        assert_eq!(holder(&n).await.as_deref(), Some(held.as_str()));
        // The next variant starts with no Lease.
        c.kill();
        let out = kubectl(&["-n", &n, "delete", "lease", "vigie-controller"]);
        assert!(out.status.success(), "{}", stderr(&out));
    }
}

/// Run outside the cluster as the chart's ServiceAccount, from a kubeconfig whose
/// context names the release's namespace, the controller takes its Lease there (where
/// the chart grants it) without `--lease-namespace`.
#[tokio::test(flavor = "multi_thread")]
async fn outside_the_cluster_the_lease_goes_to_the_kubeconfig_contexts_namespace() {
    if !k8s::enabled("lease-ns") {
        return;
    }
    let ns = Namespace::new("lease-ns");
    let n = ns.name.clone();
    let sa = helm_install(&ns);
    let mut c = Controller::new(&ns, &sa, "sa");
    c.without_arg("--lease-namespace=");
    c.start();
    eventually(T, "the controller leading", || async {
        leads(&c).then_some(())
    })
    .await;
    assert_eq!(holder(&n).await.as_deref(), Some("sa"));
    let log = c.log();
    assert!(
        !log.to_lowercase().contains("forbidden"),
        "the controller was refused something:\n{log}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_existing_deployment_gets_its_image_set_and_outlives_its_release() {
    if !k8s::enabled("existing") {
        return;
    }
    let ns = Namespace::new("existing");
    let n = ns.name.clone();
    let out = kubectl(&[
        "-n",
        &n,
        "create",
        "deployment",
        "legacy",
        "--image=registry.example/legacy:old",
        "--replicas=1",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let mut controller = Controller::new(&ns, &admin(), "one");
    controller.start();
    let a = sha('a');
    apply(&manifests(&n, &a).replace(
        "  revision: \"",
        "  deployment: {name: legacy}\n  revision: \"",
    ));
    let d = wait_rolled_out(&n, "legacy", &image(&a)).await;
    let template = d.spec.unwrap().template;
    assert_eq!(template.spec.unwrap().containers[0].name, "legacy");
    assert_eq!(
        template.metadata.unwrap().annotations.unwrap()["vigie.dev/sha"],
        a
    );
    assert!(
        deployment(&n, "web-preprod").await.is_none(),
        "nothing else created"
    );
    wait_phase(&n, "web-preprod", Phase::Verifying).await;

    // Not Vigie's to delete.
    let out = kubectl(&[
        "-n",
        &n,
        "delete",
        "release",
        "web-preprod",
        "--timeout=60s",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(deployment(&n, "legacy").await.is_some());

    // A managed Release deleted with the orphan annotation leaves its workloads too.
    apply(&manifests(&n, &a).replace(
        "{name: web-preprod, namespace",
        "{name: kept, annotations: {vigie.dev/orphan: \"true\"}, namespace",
    ));
    wait_rolled_out(&n, "kept", &image(&a)).await;
    let out = kubectl(&["-n", &n, "delete", "release", "kept", "--timeout=60s"]);
    assert!(out.status.success(), "{}", stderr(&out));
    tokio::time::sleep(Duration::from_secs(1)).await;
    let kept = deployment(&n, "kept")
        .await
        .expect("the orphaned Deployment stays");
    assert!(kept.metadata.deletion_timestamp.is_none());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_docker_host_over_tls_is_driven_from_the_cluster() {
    if !k8s::enabled("docker-tls") {
        return;
    }
    if !docker::docker_available() {
        return;
    }
    let tls = std::path::PathBuf::from(
        std::env::var("VIGIE_E2E_TLS_DIR").unwrap_or_else(|_| "/var/lib/vigie-e2e/tls".into()),
    );
    assert!(
        tls.join("client-key.pem").exists(),
        "run e2e/docker.sh ensure (it makes the TLS listener)"
    );
    let demo = docker::Demo::get();
    let ns = Namespace::new("docker-tls");
    let n = ns.name.clone();
    let out = kubectl(&[
        "-n",
        &n,
        "create",
        "secret",
        "generic",
        "engine-tls",
        &format!("--from-file=ca.crt={}", tls.join("ca.pem").display()),
        &format!(
            "--from-file=tls.crt={}",
            tls.join("client-cert.pem").display()
        ),
        &format!(
            "--from-file=tls.key={}",
            tls.join("client-key.pem").display()
        ),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let port = k8s::free_port();
    let good = demo.sha("good");
    apply(&format!(
        r#"apiVersion: vigie.dev/v1alpha1
kind: Environment
metadata: {{name: vm, namespace: {n}}}
spec:
  backend:
    docker:
      host: tcp://127.0.0.1:2376
      tls: {{secretRef: {{name: engine-tls}}}}
---
apiVersion: vigie.dev/v1alpha1
kind: CodeLocation
metadata: {{name: app, namespace: {n}}}
spec:
  repo: {{url: "{url}"}}
  ci: {{webhook: {{}}}}
  artifact: {{image: {{template: "vigie-demo:{{sha}}"}}}}
  container: {{ports: [{{containerPort: 8080, hostPort: {port}}}]}}
  healthCheck: {{path: /healthz}}
---
apiVersion: vigie.dev/v1alpha1
kind: Release
metadata: {{name: app-vm, namespace: {n}}}
spec: {{codeLocation: app, environment: vm, revision: "{good}"}}
"#,
        url = demo.url()
    ));
    let mut controller = Controller::new(&ns, &admin(), "one");
    controller.start();
    eventually(T, "the demo app answering on the TLS engine", || async {
        docker::http_get(port, "/").filter(|(s, _)| *s == 200)
    })
    .await;
    wait_phase(&n, "app-vm", Phase::Verifying).await;
    eventually(T, "the Environment Ready", || async {
        (stdout(&kubectl(&[
            "-n",
            &n,
            "get",
            "environment",
            "vm",
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
        ])) == "True")
            .then_some(())
    })
    .await;
    let out = kubectl(&["-n", &n, "delete", "release", "app-vm", "--timeout=60s"]);
    assert!(out.status.success(), "{}", stderr(&out));
    eventually(T, "the container removed", || async {
        docker::http_get(port, "/").is_none().then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn ci_tokens_and_webhook_secrets_come_from_kubernetes_secrets() {
    if !k8s::enabled("ci-secrets") {
        return;
    }
    let ns = Namespace::new("ci-secrets");
    let n = ns.name.clone();
    let statuses = std::sync::Arc::new(std::sync::Mutex::new(std::collections::HashMap::new()));
    let gitlab = providers::fake_gitlab(statuses.clone());
    let out = kubectl(&[
        "-n",
        &n,
        "create",
        "secret",
        "generic",
        "ci",
        "--from-literal=gitlab-token=read-api-token",
        "--from-literal=github-webhook=gh-hook-secret",
        "--from-literal=own-key=the-location-s-own-key",
        "--from-literal=gitlab-hook=gl-hook-token",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let (a, b) = (sha('a'), sha('b'));
    let polled = format!(
        "  ci: {{gitlab: {{project: data/app, apiUrl: \"http://127.0.0.1:{gitlab}/api/v4\", token: {{secretKeyRef: {{name: ci, key: gitlab-token}}}}}}, pollInterval: 5s}}"
    );
    apply(&manifests(&n, &a).replace("  ci: {webhook: {}}", &polled));
    apply(&format!(
        r#"apiVersion: vigie.dev/v1alpha1
kind: CodeLocation
metadata: {{name: api, namespace: {n}}}
spec:
  repo: {{url: "https://git.example/api.git"}}
  ci: {{github: {{repository: octo/api, webhookSecret: {{secretKeyRef: {{name: ci, key: github-webhook}}}}}}}}
  artifact: {{image: {{template: "registry.example/api:{{sha}}"}}}}
---
apiVersion: vigie.dev/v1alpha1
kind: CodeLocation
metadata: {{name: broken, namespace: {n}}}
spec:
  repo: {{url: "https://git.example/broken.git"}}
  ci: {{gitlab: {{project: data/app, apiUrl: "http://127.0.0.1:{gitlab}/api/v4", token: {{secretKeyRef: {{name: ci, key: no-such-key}}}}}}}}
  artifact: {{image: {{template: "registry.example/broken:{{sha}}"}}}}
---
apiVersion: vigie.dev/v1alpha1
kind: CodeLocation
metadata: {{name: own, namespace: {n}}}
spec:
  repo: {{url: "https://git.example/own.git"}}
  ci: {{webhook: {{secret: {{secretKeyRef: {{name: ci, key: own-key}}}}}}}}
  artifact: {{image: {{template: "registry.example/own:{{sha}}"}}}}
---
apiVersion: vigie.dev/v1alpha1
kind: CodeLocation
metadata: {{name: lab, namespace: {n}}}
spec:
  repo: {{url: "https://git.example/lab.git"}}
  ci: {{gitlab: {{project: "1", apiUrl: "http://127.0.0.1:{gitlab}/api/v4", webhookToken: {{secretKeyRef: {{name: ci, key: gitlab-hook}}}}}}, polling: never}}
  artifact: {{image: {{template: "registry.example/lab:{{sha}}"}}}}
"#
    ));
    let mut controller = Controller::new(&ns, &admin(), "one");
    controller.start();
    let ready = |name: &'static str| {
        let n = n.clone();
        async move {
            let out = kubectl(&[
                "-n",
                &n,
                "get",
                "codelocation",
                name,
                "-o",
                "jsonpath={.status.conditions[?(@.type==\"Ready\")].status} {.status.conditions[?(@.type==\"Ready\")].message}",
            ]);
            let text = stdout(&out);
            (!text.trim().is_empty()).then_some(text)
        }
    };
    let web = eventually(T, "CodeLocation web judged", || ready("web")).await;
    assert!(
        web.starts_with("True") && web.contains("the CI provider answers"),
        "{web}"
    );
    let broken = eventually(T, "CodeLocation broken judged", || ready("broken")).await;
    assert!(
        broken.starts_with("False")
            && broken.contains(&format!("Secret {n}/ci has no key \"no-such-key\"")),
        "{broken}"
    );

    // Polled with the Secret's token (the stand-in answers 401 without it).
    wait_phase(&n, "web-preprod", Phase::Verifying).await;
    statuses.lock().unwrap().insert(a.clone(), "success");
    wait_phase(&n, "web-preprod", Phase::Validated).await;
    statuses.lock().unwrap().insert(b.clone(), "failed");
    set_revision(&n, "web-preprod", &b);
    let r = wait_phase(&n, "web-preprod", Phase::RolledBack).await;
    assert_eq!(
        r.status.unwrap().ci.unwrap().url.as_deref(),
        Some("https://gitlab.example/data/app/-/pipelines/47")
    );
    wait_rolled_out(&n, "web-preprod", &image(&a)).await;

    // A GitHub webhook signed with the Secret's value is taken; the verdict lands on
    // the CodeLocation's status; a wrong signature is refused.
    let body = format!(
        r#"{{"action": "completed", "check_run": {{"id": 7, "name": "test", "head_sha": "{a}",
        "html_url": "https://github.com/octo/api/runs/7", "details_url": null,
        "status": "completed", "conclusion": "success", "started_at": "2026-11-23T10:00:00Z",
        "check_suite": {{"id": 1}}}}, "repository": {{"full_name": "octo/api"}}, "sender": {{"login": "octocat"}}}}"#
    );
    let post = |secret: &str, delivery: &str| {
        let signature = vigie::ci::webhook::sign(secret.as_bytes(), body.as_bytes());
        k8s::http(
            controller.port,
            "POST",
            "/hooks/github",
            &[
                ("x-github-event", "check_run".into()),
                ("x-github-delivery", delivery.into()),
                ("x-hub-signature-256", signature),
            ],
            body.as_bytes(),
        )
        .map_or(0, |(s, _)| s)
    };
    assert_eq!(post("not-the-secret", "d-1"), 401);
    assert_eq!(post("gh-hook-secret", "d-2"), 202);
    assert_eq!(post("gh-hook-secret", "d-2"), 409, "a replayed delivery");
    let recorded = stdout(&kubectl(&[
        "-n",
        &n,
        "get",
        "codelocation",
        "api",
        "-o",
        "jsonpath={.status.verdicts[0].sha} {.status.verdicts[0].state}",
    ]));
    assert_eq!(recorded, format!("{a} Success"));
    // A repository no CodeLocation watches: acknowledged and ignored (2xx), so that
    // GitHub does not show the delivery as failed.
    let other = body.replace("octo/api", "someone/else");
    let signature = vigie::ci::webhook::sign(b"gh-hook-secret", other.as_bytes());
    let (status, reply) = k8s::http(
        controller.port,
        "POST",
        "/hooks/github",
        &[
            ("x-github-event", "check_run".into()),
            ("x-github-delivery", "d-3".into()),
            ("x-hub-signature-256", signature),
        ],
        other.as_bytes(),
    )
    .unwrap();
    assert_eq!(status, 202, "{reply}");
    assert!(reply.contains("\"ignored\""), "{reply}");

    // A CodeLocation's own ci.webhook.secret, from its Secret, signs its verdicts; the
    // process-wide key does not speak for it.
    let own = |key: &str, sha: &str| {
        let body = format!(r#"{{"codeLocation":"own","sha":"{sha}","state":"success"}}"#);
        let signature = vigie::ci::webhook::sign(key.as_bytes(), body.as_bytes());
        k8s::http(
            controller.port,
            "POST",
            "/hooks/ci",
            &[(vigie::ci::webhook::SIGNATURE_HEADER, signature)],
            body.as_bytes(),
        )
        .map_or(0, |(s, _)| s)
    };
    eventually(
        T,
        "a verdict signed with the location's own key",
        || async { (own("the-location-s-own-key", &a) == 202).then_some(()) },
    )
    .await;
    assert_eq!(own(k8s::WEBHOOK_SECRET, &b), 401);
    let recorded = stdout(&kubectl(&[
        "-n",
        &n,
        "get",
        "codelocation",
        "own",
        "-o",
        "jsonpath={.status.verdicts[*].sha}",
    ]));
    assert_eq!(recorded, a, "only the verdict signed with its own key");

    // GitLab's published Pipeline Hook names project 1: the location that names the
    // project by its numeric id gets the verdict.
    let mut pipeline: serde_json::Value = serde_json::from_slice(
        &std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/gitlab/pipeline.json"
        ))
        .unwrap(),
    )
    .unwrap();
    pipeline["object_attributes"]["sha"] = a.clone().into();
    let pipeline = serde_json::to_vec(&pipeline).unwrap();
    let (status, reply) = k8s::http(
        controller.port,
        "POST",
        "/hooks/gitlab",
        &[
            ("x-gitlab-event", "Pipeline Hook".into()),
            ("x-gitlab-token", "gl-hook-token".into()),
        ],
        &pipeline,
    )
    .unwrap();
    assert_eq!(status, 202, "{reply}");
    let recorded = stdout(&kubectl(&[
        "-n",
        &n,
        "get",
        "codelocation",
        "lab",
        "-o",
        "jsonpath={.status.verdicts[0].sha} {.status.verdicts[0].state} {.status.verdicts[0].via}",
    ]));
    assert_eq!(recorded, format!("{a} Success webhook"));

    let log = controller.log();
    for secret in [
        "read-api-token",
        "gh-hook-secret",
        "the-location-s-own-key",
        "gl-hook-token",
    ] {
        assert!(!log.contains(secret), "a secret value in the log");
    }
}

/// Waits until the forge stand-in shows what `f` wants.
async fn forge_shows(forge: &forges::Forge, what: &str, f: impl Fn(&forges::Forge) -> bool) {
    let start = std::time::Instant::now();
    while !f(forge) {
        assert!(
            start.elapsed() < T,
            "timed out after {T:?} waiting for the forge to show {what}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The operator reports to the forge what the pipeline records (the same code as
/// `vigie run`): a GitHub stand-in shows deploy, validate, red and rollback, with the
/// token from a Secret; a controller killed mid-verification creates no second
/// Deployment there.
#[tokio::test(flavor = "multi_thread")]
async fn the_operator_reports_deployments_to_the_forge() {
    if !k8s::enabled("forge") {
        return;
    }
    let ns = Namespace::new("forge");
    let n = ns.name.clone();
    let forge = forges::Forge::start();
    let out = kubectl(&[
        "-n",
        &n,
        "create",
        "secret",
        "generic",
        "github",
        &format!("--from-literal=token={}", forges::GITHUB_TOKEN),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let (a, b) = (sha('a'), sha('b'));
    let ci = format!(
        "  ci: {{github: {{repository: octo/app, apiUrl: \"{}\", token: {{secretKeyRef: {{name: github, key: token}}}}, report: {{commitStatus: true}}}}, requiredChecks: [test], pollInterval: 5s}}",
        forge.github_api()
    );
    apply(
        &manifests(&n, &a)
            .replace("  ci: {webhook: {}}", &ci)
            .replace(
                "  verification: {timeout: 10m}",
                "  verification: {timeout: 10m}\n  url: https://preprod.example.com",
            ),
    );
    let mut controller = Controller::new(&ns, &admin(), "one");
    controller.args(&["--public-url".into(), "https://vigie.example.com".into()]);
    controller.start();
    wait_phase(&n, "web-preprod", Phase::Verifying).await;
    forge_shows(&forge, "A in progress", |f| {
        f.states("preprod", &a) == ["in_progress"]
    })
    .await;
    forge.set_ci(&a, "success");
    wait_phase(&n, "web-preprod", Phase::Validated).await;
    forge_shows(&forge, "A success", |f| {
        f.states("preprod", &a) == ["in_progress", "success"]
    })
    .await;
    let latest = forge.latest_status("preprod", &a).unwrap();
    assert_eq!(
        latest["log_url"],
        format!("https://vigie.example.com/releases/{n}/web-preprod")
    );
    assert_eq!(latest["environment_url"], "https://preprod.example.com");

    // B, then a crash while it is verified.
    set_revision(&n, "web-preprod", &b);
    wait_phase(&n, "web-preprod", Phase::Verifying).await;
    forge_shows(&forge, "B in progress", |f| {
        f.states("preprod", &b) == ["in_progress"]
    })
    .await;
    controller.kill();
    forge.fail([
        forges::Fault::Status(503, None),
        forges::Fault::Status(429, Some(2)),
    ]);
    controller.start();
    forge.set_ci(&b, "failure");
    wait_phase(&n, "web-preprod", Phase::RolledBack).await;
    wait_rolled_out(&n, "web-preprod", &image(&a)).await;
    forge_shows(&forge, "B failure", |f| {
        f.states("preprod", &b) == ["in_progress", "failure"]
    })
    .await;
    assert_eq!(forge.deployments("preprod", &a).len(), 1);
    assert_eq!(forge.deployments("preprod", &b).len(), 1);
    assert_eq!(
        forge.commit_states(&b, "vigie/preprod"),
        ["pending", "failure"]
    );
    assert!(
        !controller.log().contains(forges::GITHUB_TOKEN),
        "a token in the log"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pre_deploy_hook_runs_as_a_job_before_the_deployment_moves() {
    if !k8s::enabled("hooks") {
        return;
    }
    let ns = Namespace::new("hooks");
    let n = ns.name.clone();
    let a = sha('a');
    let hooks = "  verification: {timeout: 10m}\n  hooks:\n    preDeploy:\n    - {name: backup, image: registry.example/backup:1, command: [/backup], timeout: 5m, output: \"s3://backups/{shortSha}.sql\"}";
    apply(&manifests(&n, &a).replace("  verification: {timeout: 10m}", hooks));
    let mut controller = Controller::new(&ns, &admin(), "one");
    controller.start();
    let r = wait_phase(&n, "web-preprod", Phase::Verifying).await;
    let status = r.status.unwrap();
    let hook = entry(&status, vigie::api::release::HistoryEvent::HookSucceeded);
    assert_eq!(hook.output.as_deref(), Some("s3://backups/aaaaaaa.sql"));
    // The Job ran (kwok completes Job pods) before the Deployment was created.
    let jobs = hook_jobs(&n, "backup");
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    assert!(
        jobs[0].name.starts_with("web-preprod-backup-aaaaaaa-"),
        "{jobs:?}"
    );
    assert_eq!(jobs[0].succeeded, "1", "{jobs:?}");
    let completed = jobs[0].completed.expect("the Job completed");
    let d = deployment(&n, "web-preprod").await.unwrap();
    let created = d.metadata.creation_timestamp.unwrap().0;
    assert!(
        completed <= created,
        "the Deployment ({created}) came before the hook finished ({completed})"
    );
    // Deleting the Release removes the hook's Jobs too.
    let out = kubectl(&[
        "-n",
        &n,
        "delete",
        "release",
        "web-preprod",
        "--timeout=60s",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let left = stdout(&kubectl(&["-n", &n, "get", "jobs", "-o", "name"]));
    assert!(left.trim().is_empty(), "{left}");
}

/// A hook's Job as kubectl reports it; a count not set yet is empty.
#[derive(Debug)]
struct HookJob {
    name: String,
    succeeded: String,
    failed: String,
    created: jiff::Timestamp,
    completed: Option<jiff::Timestamp>,
}

/// The Jobs of a hook, oldest first.
fn hook_jobs(ns: &str, hook: &str) -> Vec<HookJob> {
    let out = stdout(&kubectl(&[
        "-n",
        ns,
        "get",
        "jobs",
        "-l",
        &format!("vigie.dev/hook={hook}"),
        "--sort-by=.metadata.creationTimestamp",
        "-o",
        "jsonpath={range .items[*]}{.metadata.name} {.status.succeeded} {.status.failed} {.metadata.creationTimestamp} {.status.completionTime}{'\\n'}{end}",
    ]));
    out.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            // An unset field prints as nothing: keep the columns by splitting on ' '.
            let p: Vec<&str> = l.split(' ').collect();
            HookJob {
                name: p[0].to_owned(),
                succeeded: p[1].to_owned(),
                failed: p[2].to_owned(),
                created: p[3].parse().unwrap(),
                completed: p[4].parse().ok(),
            }
        })
        .collect()
}

/// The first history entry of `event`.
fn entry(
    status: &vigie::api::release::ReleaseStatus,
    event: vigie::api::release::HistoryEvent,
) -> &vigie::api::release::HistoryEntry {
    status
        .history
        .iter()
        .find(|h| h.event == event)
        .unwrap_or_else(|| panic!("no {event:?} entry: {:?}", status.history))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_post_deploy_job_counts_as_health_and_its_failure_rolls_back() {
    if !k8s::enabled("smoke") {
        return;
    }
    let ns = Namespace::new("smoke");
    let n = ns.name.clone();
    let (a, b) = (sha('a'), sha('b'));
    let hooks = "  verification: {timeout: 10m}\n  hooks:\n    postDeploy:\n    - {name: smoke, image: registry.example/smoke:1, command: [/smoke], timeout: 2m}";
    apply(&manifests(&n, &a).replace("  verification: {timeout: 10m}", hooks));
    let mut controller = Controller::new(&ns, &admin(), "one");
    controller.start();

    // a: the smoke test runs once the Deployment is available, then verification.
    let r = wait_phase(&n, "web-preprod", Phase::Verifying).await;
    let status = r.status.unwrap();
    let hook = entry(&status, vigie::api::release::HistoryEvent::HookSucceeded);
    assert_eq!(hook.sha.as_str(), a);
    assert_eq!(
        hook.reason.as_deref(),
        Some("post-deploy hook smoke succeeded")
    );
    let d = deployment(&n, "web-preprod").await.unwrap();
    let available = d
        .status
        .unwrap()
        .conditions
        .unwrap_or_default()
        .into_iter()
        .find(|c| c.type_ == "Available" && c.status == "True")
        .and_then(|c| c.last_transition_time)
        .expect("the Deployment is Available")
        .0;
    let jobs = hook_jobs(&n, "smoke");
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    let HookJob {
        name,
        succeeded,
        created,
        ..
    } = &jobs[0];
    assert!(name.starts_with("web-preprod-smoke-aaaaaaa-"), "{name}");
    assert_eq!(succeeded, "1");
    assert!(
        *created >= available,
        "the smoke test ({created}) started before the Deployment was available ({available})"
    );
    assert_eq!(controller.verdict("web", &a, "success"), 202);
    wait_phase(&n, "web-preprod", Phase::Validated).await;

    // b: the smoke test fails (kwok fails the pods of this image, e2e/k8s/kwok-stages.yaml):
    // b is rolled back and quarantined, and the failure is an Event.
    let out = kubectl(&[
        "-n",
        &n,
        "patch",
        "environment",
        "preprod",
        "--type=merge",
        "-p",
        r#"{"spec":{"hooks":{"postDeploy":[{"name":"smoke","image":"vigie-e2e.invalid/fails:1","timeout":"2m"}]}}}"#,
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    set_revision(&n, "web-preprod", &b);
    let r = wait_phase(&n, "web-preprod", Phase::RolledBack).await;
    wait_rolled_out(&n, "web-preprod", &image(&a)).await;
    let status = r.status.unwrap();
    assert_eq!(status.deployed_sha.as_ref().unwrap().as_str(), a);
    assert!(status.quarantine.iter().any(|q| q.sha.as_str() == b));
    let rolled = entry(&status, vigie::api::release::HistoryEvent::RolledBack);
    assert_eq!(rolled.sha.as_str(), b);
    let reason = rolled.reason.clone().unwrap_or_default();
    assert!(reason.contains("post-deploy hook smoke failed"), "{reason}");
    let jobs = hook_jobs(&n, "smoke");
    let failed = jobs
        .iter()
        .find(|j| j.name.starts_with("web-preprod-smoke-bbbbbbb-"))
        .unwrap_or_else(|| panic!("no Job for b: {jobs:?}"));
    assert_eq!(failed.failed, "1", "{jobs:?}");
    let events = events_showing(
        &n,
        "involvedObject.kind=Release,reason=HookFailed",
        Some("jsonpath={.items[*].message}"),
        "a HookFailed Event",
        |e| e.contains("post-deploy hook smoke failed"),
    )
    .await;
    assert!(events.contains("post-deploy hook smoke failed"), "{events}");
}

/// Waits until the Events of `ns` that `selector` picks (`kubectl get events
/// --field-selector`, printed as `output` asks) show what `shows` wants, and returns
/// them: Events go out in the background, after their transitions.
async fn events_showing(
    ns: &str,
    selector: &str,
    output: Option<&str>,
    what: &str,
    shows: impl Fn(&str) -> bool,
) -> String {
    eventually(T, what, || async {
        let mut args = vec!["-n", ns, "get", "events", "--field-selector", selector];
        if let Some(o) = output {
            args.extend(["-o", o]);
        }
        Some(stdout(&kubectl(&args))).filter(|e| shows(e))
    })
    .await
}

/// A fresh bare repository `<name>.git` in a temporary folder, and a work tree on
/// `main` that pushes to it: `(folder, bare, work)`.
fn repository(
    folder: &str,
    name: &str,
) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(folder);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let bare = dir.join(format!("{name}.git"));
    let work = dir.join(name);
    git(
        &dir,
        &["init", "-q", "--bare", "-b", "main", bare.to_str().unwrap()],
    );
    git(
        &dir,
        &[
            "clone",
            "-q",
            bare.to_str().unwrap(),
            work.to_str().unwrap(),
        ],
    );
    git(&work, &["checkout", "-q", "-b", "main"]);
    (dir, bare, work)
}

fn commit_all(work: &std::path::Path, message: &str) -> String {
    git(work, &["add", "-A"]);
    git(work, &["commit", "-q", "-m", message]);
    git(work, &["push", "-q", "origin", "main"]);
    git(work, &["rev-parse", "HEAD"])
}

fn configmap(ns: &str, key: &str) -> String {
    stdout(&kubectl(&[
        "-n",
        ns,
        "get",
        "configmap",
        "vigie-gitops",
        "-o",
        &format!("jsonpath={{.data.{key}}}"),
    ]))
}

#[tokio::test(flavor = "multi_thread")]
async fn gitops_applies_a_branch_prunes_what_leaves_it_and_puts_back_hand_changes() {
    if !k8s::enabled("gitops") {
        return;
    }
    let ns = Namespace::new("gitops");
    let n = ns.name.clone();
    let (dir, bare, work) = repository(&format!("{n}-git"), "ops");
    std::fs::create_dir_all(work.join("k8s")).unwrap();
    let (a, b, c) = (sha('a'), sha('b'), sha('c'));
    std::fs::write(work.join("k8s/web.yaml"), manifests(&n, &a)).unwrap();
    let first = commit_all(&work, "web at a");

    let mut controller = Controller::new(&ns, &admin(), "one");
    controller.args(&[
        format!("--gitops-repo=file://{}", bare.display()),
        "--gitops-ref=main".into(),
        "--gitops-path=k8s".into(),
        "--gitops-interval=1".into(),
        format!("--gitops-cache={}", dir.join("cache").display()),
    ]);
    controller.start();
    wait_rolled_out(&n, "web-preprod", &image(&a)).await;
    let labels = stdout(&kubectl(&[
        "-n",
        &n,
        "get",
        "release",
        "web-preprod",
        "-o",
        "jsonpath={.metadata.labels.app\\.kubernetes\\.io/managed-by}",
    ]));
    assert_eq!(labels, "vigie-gitops");
    eventually(T, "the synced commit recorded", || async {
        (configmap(&n, "commit") == first).then_some(())
    })
    .await;

    // A new commit moves the Release.
    std::fs::write(work.join("k8s/web.yaml"), manifests(&n, &b)).unwrap();
    let second = commit_all(&work, "web at b");
    wait_rolled_out(&n, "web-preprod", &image(&b)).await;
    eventually(T, "the second commit recorded", || async {
        (configmap(&n, "commit") == second).then_some(())
    })
    .await;

    // A change by hand to what git manages is reported and put back.
    set_revision(&n, "web-preprod", &c);
    eventually(T, "the hand change put back", || async {
        release(&n, "web-preprod")
            .await
            .filter(|r| r.spec.revision.as_deref() == Some(b.as_str()))
    })
    .await;
    let events = events_showing(
        &n,
        "involvedObject.name=vigie-gitops",
        None,
        "a DriftCorrected Event",
        |e| e.contains("DriftCorrected"),
    )
    .await;
    assert!(
        events.contains(&format!("Release {n}/web-preprod")),
        "{events}"
    );

    // An invalid commit applies nothing and names its commit, file, document and field.
    std::fs::write(
        work.join("k8s/web.yaml"),
        manifests(&n, &a).replace(
            "  codeLocation: web",
            "  codeLocation: web\n  revison: main",
        ),
    )
    .unwrap();
    let bad = commit_all(&work, "a typo");
    let error = eventually(T, "the invalid commit reported", || async {
        Some(configmap(&n, "error")).filter(|e| e.contains(&bad[..7]))
    })
    .await;
    assert!(
        error.contains(&format!("commit {}: k8s/web.yaml: document 3 (Release/web-preprod): spec.revison: unknown field", &bad[..7])),
        "{error}"
    );
    assert_eq!(
        configmap(&n, "commit"),
        second,
        "the last good commit stays in force"
    );
    assert_eq!(
        release(&n, "web-preprod")
            .await
            .unwrap()
            .spec
            .revision
            .as_deref(),
        Some(b.as_str())
    );

    // A Release that leaves the branch is pruned, and its workloads with it.
    let without_release = manifests(&n, &b);
    let cut = without_release.rfind("---").unwrap();
    std::fs::write(work.join("k8s/web.yaml"), &without_release[..cut]).unwrap();
    commit_all(&work, "no more web-preprod");
    eventually(T, "the Release and its Deployment pruned", || async {
        (release(&n, "web-preprod").await.is_none()
            && deployment(&n, "web-preprod").await.is_none())
        .then_some(())
    })
    .await;
    assert!(release(&n, "web-preprod").await.is_none());
    let envs = stdout(&kubectl(&["-n", &n, "get", "environments", "-o", "name"]));
    assert!(
        envs.contains("preprod"),
        "only what left the branch goes: {envs}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tracked_branch_moves_the_release_forward_and_a_force_push_is_refused() {
    if !k8s::enabled("tracking") {
        return;
    }
    let ns = Namespace::new("tracking");
    let n = ns.name.clone();
    let (dir, bare, work) = repository(&format!("{n}-code"), "web");
    std::fs::write(work.join("app.txt"), "one\n").unwrap();
    let one = commit_all(&work, "one");
    let url = format!("file://{}", bare.display());
    let yaml = manifests(&n, "REV")
        .replace("  revision: \"REV\"\n", "")
        .replace(
            "  repo: {url: \"https://git.example/web.git\"}",
            &format!(
                "  repo: {{url: \"{url}\"}}\n  track: [{{environment: preprod, branch: main}}]"
            ),
        );
    apply(&yaml);
    let mut controller = Controller::new(&ns, &admin(), "one");
    controller.args(&[
        "--track-interval=1".into(),
        format!("--gitops-cache={}", dir.join("cache").display()),
    ]);
    controller.start();
    wait_rolled_out(&n, "web-preprod", &image(&one)).await;

    std::fs::write(work.join("app.txt"), "two\n").unwrap();
    let two = commit_all(&work, "two");
    wait_rolled_out(&n, "web-preprod", &image(&two)).await;
    let events = events_showing(&n, "reason=Tracked", None, "a Tracked Event", |e| {
        e.contains(&two[..7])
    })
    .await;
    assert!(events.contains("(main)"), "{events}");

    // History rewritten: main now points to a commit that does not descend from two.
    git(&work, &["checkout", "-q", "--orphan", "rewritten"]);
    std::fs::write(work.join("app.txt"), "rewritten\n").unwrap();
    git(&work, &["add", "-A"]);
    git(&work, &["commit", "-q", "-m", "rewritten"]);
    git(
        &work,
        &["push", "-q", "--force", "origin", "rewritten:main"],
    );
    let refused = events_showing(
        &n,
        "reason=TrackingRefused",
        None,
        "a TrackingRefused Event",
        |e| e.contains("does not descend from"),
    )
    .await;
    assert!(refused.contains(&two[..7]), "{refused}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        release(&n, "web-preprod")
            .await
            .unwrap()
            .spec
            .revision
            .as_deref(),
        Some(two.as_str())
    );
}

fn file_at(bare: &std::path::Path, path: &str) -> String {
    git(bare, &["show", &format!("main:{path}")])
}

#[tokio::test(flavor = "multi_thread")]
#[allow(clippy::too_many_lines, reason = "one story, in order")]
async fn tracked_updates_and_rollbacks_are_committed_to_the_gitops_repository() {
    if !k8s::enabled("write-back") {
        return;
    }
    let ns = Namespace::new("writeback");
    let n = ns.name.clone();
    // The code repository, whose main preprod follows.
    let (_code_dir, code, code_work) = repository(&format!("{n}-code"), "web");
    std::fs::write(code_work.join("app.txt"), "one\n").unwrap();
    let one = commit_all(&code_work, "one");
    // The GitOps repository: the Release at `one`, tracking main.
    let (dir, bare, work) = repository(&format!("{n}-git"), "ops");
    std::fs::create_dir_all(work.join("k8s")).unwrap();
    let yaml = manifests(&n, &one).replace(
        "  repo: {url: \"https://git.example/web.git\"}",
        &format!(
            "  repo: {{url: \"file://{}\"}}\n  track: [{{environment: preprod, branch: main}}]",
            code.display()
        ),
    );
    std::fs::write(work.join("k8s/web.yaml"), yaml).unwrap();
    commit_all(&work, "web at one, following main");
    let mut controller = Controller::new(&ns, &admin(), "one");
    controller.args(&[
        format!("--gitops-repo=file://{}", bare.display()),
        "--gitops-path=k8s".into(),
        "--gitops-interval=1".into(),
        "--gitops-write-back=tracking,rollbacks".into(),
        "--gitops-author=Vigie Bot <vigie@example.com>".into(),
        "--track-interval=1".into(),
        format!("--gitops-cache={}", dir.join("cache").display()),
    ]);
    controller.start();
    wait_rolled_out(&n, "web-preprod", &image(&one)).await;
    assert_eq!(controller.verdict("web", &one, "success"), 202);
    wait_phase(&n, "web-preprod", Phase::Validated).await;

    // A new commit on main: committed to the GitOps repository, which the sync applies.
    std::fs::write(code_work.join("app.txt"), "two\n").unwrap();
    let two = commit_all(&code_work, "two");
    let written = events_showing(&n, "reason=WrittenBack", None, "a WrittenBack Event", |e| {
        e.contains(&two[..7])
    })
    .await;
    assert!(written.contains("(main)"), "{written}");
    assert!(
        file_at(&bare, "k8s/web.yaml").contains(&format!("  revision: \"{two}\"")),
        "the quoting is kept"
    );
    assert_eq!(
        git(&bare, &["log", "-1", "--format=%s|%an", "main"]),
        format!(
            "vigie: web in preprod: {} → {} (main)|Vigie Bot",
            &one[..7],
            &two[..7]
        )
    );
    wait_rolled_out(&n, "web-preprod", &image(&two)).await;
    let r = release(&n, "web-preprod").await.unwrap();
    assert_eq!(r.spec.revision.as_deref(), Some(two.as_str()));
    assert!(
        r.metadata
            .managed_fields
            .unwrap_or_default()
            .iter()
            .all(|f| f.manager.as_deref() != Some("vigie-tracking")),
        "git moved it, not a patch"
    );

    // CI fails: the rollback is committed too, so git says what runs.
    wait_phase(&n, "web-preprod", Phase::Verifying).await;
    assert_eq!(controller.verdict("web", &two, "failure"), 202);
    wait_rolled_out(&n, "web-preprod", &image(&one)).await;
    eventually(T, "the rollback committed and applied", || async {
        release(&n, "web-preprod")
            .await
            .filter(|r| r.spec.revision.as_deref() == Some(one.as_str()))
    })
    .await;
    let subject = git(&bare, &["log", "-1", "--format=%s", "main"]);
    assert_eq!(
        subject,
        format!(
            "vigie: roll back web in preprod: {} → {}",
            &two[..7],
            &one[..7]
        )
    );
    let r = wait_phase(&n, "web-preprod", Phase::Validated).await;
    let status = r.status.unwrap();
    assert_eq!(status.quarantine[0].sha.as_str(), two);
    // main's tip is quarantined: nothing more is committed.
    let commits = git(&bare, &["rev-list", "--count", "main"]);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(git(&bare, &["rev-list", "--count", "main"]), commits);
    let metrics = controller.metrics().unwrap_or_default();
    assert!(
        metrics.contains("vigie_git_write_backs_total 2"),
        "{metrics}"
    );
}

/// GitHub's `push` event for `main` of the repository at `url`, signed.
fn github_push(url: &str, after: &str) -> (Vec<(&'static str, String)>, Vec<u8>) {
    let body = format!(
        r#"{{"ref": "refs/heads/main", "before": "0000000000000000000000000000000000000000", "after": "{after}",
        "repository": {{"full_name": "acme/ops", "clone_url": "{url}"}}, "pusher": {{"name": "ops"}}, "commits": []}}"#
    )
    .into_bytes();
    let signature = vigie::ci::webhook::sign(k8s::WEBHOOK_SECRET.as_bytes(), &body);
    (
        vec![
            ("X-GitHub-Event", "push".to_owned()),
            ("X-GitHub-Delivery", format!("push-{after}")),
            ("X-Hub-Signature-256", signature),
        ],
        body,
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn a_push_webhook_that_reaches_the_standby_makes_the_leader_fetch() {
    if !k8s::enabled("relay") {
        return;
    }
    let ns = Namespace::new("relay");
    let n = ns.name.clone();
    let (dir, bare, work) = repository(&format!("{n}-git"), "ops");
    std::fs::create_dir_all(work.join("k8s")).unwrap();
    std::fs::write(work.join("k8s/web.yaml"), manifests(&n, &sha('a'))).unwrap();
    commit_all(&work, "web at a");
    let url = format!("file://{}", bare.display());
    let start = |identity: &str| {
        let mut c = Controller::new(&ns, &admin(), identity);
        c.args(&[
            format!("--gitops-repo={url}"),
            "--gitops-path=k8s".into(),
            // Fetched at the start, then only on a push.
            "--gitops-interval=3600".into(),
            format!("--gitops-cache={}", dir.join(identity).display()),
        ]);
        c.start();
        c
    };
    let (one, two) = (start("one"), start("two"));
    let first = eventually(T, "a Lease holder", || holder(&n)).await;
    let standby = if first == "one" { two } else { one };
    wait_rolled_out(&n, "web-preprod", &image(&sha('a'))).await;
    eventually(T, "the standby standing by", || async {
        standby.metrics().filter(|m| m.contains("vigie_leader 0"))
    })
    .await;

    std::fs::write(work.join("k8s/web.yaml"), manifests(&n, &sha('b'))).unwrap();
    let next = commit_all(&work, "web at b");
    let (headers, body) = github_push(&url, &next);
    let answer = k8s::http(standby.port, "POST", "/hooks/github", &headers, &body).unwrap();
    assert_eq!(answer.0, 202, "{answer:?}");
    let sent = std::time::Instant::now();
    wait_rolled_out(&n, "web-preprod", &image(&sha('b'))).await;
    eprintln!(
        "push to the standby → Deployment at the new image: {:?}",
        sent.elapsed()
    );
    assert!(
        standby.log().contains("push passed on to the leader"),
        "{}",
        standby.log()
    );
}

/// `vigie ARGS --kubernetes -n NS` as the cluster admin, with `input` on stdin.
fn vigie_cli(ns: &str, args: &[&str], input: &str) -> std::process::Output {
    docker::with_stdin(
        std::process::Command::new(env!("CARGO_BIN_EXE_vigie"))
            .args(args)
            .args(["--kubernetes", "-n", ns])
            .env("KUBECONFIG", admin())
            .env(
                "XDG_CACHE_HOME",
                std::env::temp_dir().join(format!("{ns}-cache")),
            ),
        input,
    )
}

/// The data-platform example's Environments, pointed at this test's namespace and at
/// local receivers: Teams and ntfy over HTTP, email through a real SMTP server. Its
/// deploy windows (Tuesday to Thursday, office hours) are left out: windows are the
/// VM scenario's; here any day must do.
fn data_platform_environments(ns: &str, ntfy: &str, smtp: &smtp::Smtpd) -> String {
    let example = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../examples/data-platform/environments.yaml"),
    )
    .unwrap();
    let mut out = String::new();
    let mut skipping = false;
    for line in example.lines() {
        if line == "  windows:" {
            skipping = true;
            continue;
        }
        if skipping && line.starts_with("    ") {
            continue;
        }
        skipping = false;
        out.push_str(line);
        out.push('\n');
    }
    out.replace("namespace: data-platform", &format!("namespace: {ns}"))
        .replace("{namespace: dagster-dev}", &format!("{{namespace: {ns}}}"))
        .replace(
            "{namespace: dagster-staging}",
            &format!("{{namespace: {ns}}}"),
        )
        .replace("{namespace: dagster-prod}", &format!("{{namespace: {ns}}}"))
        .replace("https://ntfy.example.org", ntfy)
        .replace("host: smtp.example.org", "host: 127.0.0.1")
        .replace("port: 587", &format!("port: {}", smtp.port))
        .replace(
            "starttls: true",
            &format!("starttls: true\n        caFile: \"{}\"", smtp.ca.display()),
        )
}

fn titles(r: &receiver::Receiver, title: impl Fn(&serde_json::Value) -> String) -> Vec<String> {
    r.requests().iter().map(|q| title(&q.json())).collect()
}

fn teams_title(v: &serde_json::Value) -> String {
    assert_eq!(v["type"], "message");
    let card = &v["attachments"][0];
    assert_eq!(
        card["contentType"],
        "application/vnd.microsoft.card.adaptive"
    );
    assert_eq!(card["content"]["type"], "AdaptiveCard");
    card["content"]["body"][0]["text"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_data_platform_notifies_teams_ntfy_and_email_and_is_promoted_with_the_cli() {
    if !k8s::enabled("platform") {
        return;
    }
    let Some(mail) = smtp::Smtpd::start(&std::env::temp_dir().join("vigie-platform-smtp")) else {
        return;
    };
    let ns = Namespace::new("platform");
    let n = ns.name.clone();
    let teams = receiver::Receiver::start(&[(202, "")]);
    let ntfy = receiver::Receiver::start(&[(200, "")]);
    // The code: three commits, of which CI fails the second.
    let (_dir, bare, work) = repository(&format!("{n}-code"), "data-platform");
    std::fs::write(work.join("assets.py"), "v1\n").unwrap();
    let a = commit_all(&work, "Add the orders asset");
    std::fs::write(work.join("assets.py"), "v2\n").unwrap();
    let b = commit_all(&work, "Rewrite the orders join");
    std::fs::write(work.join("assets.py"), "v3\n").unwrap();
    let c = commit_all(&work, "Fix the orders join");
    let (sa, sb, sc) = (&a[..7], &b[..7], &c[..7]);

    apply(&format!(
        r#"apiVersion: v1
kind: Secret
metadata: {{name: vigie-notifications, namespace: {n}}}
stringData:
  teams-webhook-url: "{teams}"
  ntfy-token: tk_platform
  smtp-password: s3cret
"#,
        teams = teams.url("/workflows/data/triggers/manual/paths/invoke?sig=secret-sig")
    ));
    apply(&data_platform_environments(&n, &ntfy.url(""), &mail));
    apply(&format!(
        r#"apiVersion: vigie.dev/v1alpha1
kind: CodeLocation
metadata: {{name: data-platform, namespace: {n}}}
spec:
  repo: {{url: "file://{bare}"}}
  ci: {{webhook: {{}}}}
  artifact: {{image: {{template: "registry.example/data-platform:{{sha}}"}}}}
  container:
    ports: [{{containerPort: 4000}}]
---
apiVersion: vigie.dev/v1alpha1
kind: Release
metadata: {{name: data-platform-staging, namespace: {n}}}
spec: {{codeLocation: data-platform, environment: staging, revision: "{a}"}}
---
apiVersion: vigie.dev/v1alpha1
kind: Release
metadata: {{name: data-platform-prod, namespace: {n}}}
spec: {{codeLocation: data-platform, environment: prod}}
"#,
        bare = bare.display()
    ));
    let mut controller = Controller::new(&ns, &admin(), "one");
    controller.start();

    // Staging: A validated; B red and rolled back.
    wait_phase(&n, "data-platform-staging", Phase::Verifying).await;
    assert_eq!(controller.verdict("data-platform", &a, "success"), 202);
    wait_phase(&n, "data-platform-staging", Phase::Validated).await;
    set_revision(&n, "data-platform-staging", &b);
    wait_rolled_out(
        &n,
        "data-platform-staging",
        &format!("registry.example/data-platform:{b}"),
    )
    .await;
    wait_phase(&n, "data-platform-staging", Phase::Verifying).await;
    assert_eq!(controller.verdict("data-platform", &b, "failure"), 202);
    wait_phase(&n, "data-platform-staging", Phase::RolledBack).await;

    // The person at the keyboard, as the API server knows them.
    let user = stdout(&kubectl(&[
        "auth",
        "whoami",
        "-o",
        "jsonpath={.status.userInfo.username}",
    ]));
    assert!(!user.is_empty());

    // B is quarantined in staging: prod refuses it.
    let out = vigie_cli(
        &n,
        &[
            "promote",
            "data-platform",
            "--to",
            "prod",
            "--sha",
            &b,
            "--yes",
        ],
        "",
    );
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains(&format!("{sb} is not validated in staging")),
        "{}",
        stderr(&out)
    );
    // A mistyped confirmation changes nothing.
    let promote = ["promote", "data-platform", "--to", "prod"];
    let out = vigie_cli(&n, &promote, "DEPLOY?\n");
    assert!(!out.status.success());
    assert!(stderr(&out).contains("not confirmed"), "{}", stderr(&out));
    let shown = stdout(&out);
    assert!(shown.contains(&format!("- → {sa} in prod")), "{shown}");
    assert!(
        shown.contains("Add the orders asset"),
        "commits listed: {shown}"
    );
    let prod = release(&n, "data-platform-prod").await.unwrap();
    assert_eq!(prod.spec.revision, None);
    assert_eq!(prod.spec.approval, None);

    // DEPLOY typed: the Release names A, approved by the Kubernetes user.
    let out = vigie_cli(&n, &promote, "DEPLOY\n");
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains(&format!("{sa} approved for prod by {user}")),
        "{}",
        stdout(&out)
    );
    let r = wait_phase(&n, "data-platform-prod", Phase::Validated).await;
    let status = r.status.unwrap();
    assert_eq!(status.validated_sha.unwrap().as_str(), a);
    let approved = status.approved.unwrap();
    assert_eq!(
        (approved.sha.as_str(), approved.by.as_str()),
        (a.as_str(), user.as_str())
    );
    let fields = stdout(&kubectl(&[
        "-n",
        &n,
        "get",
        "release",
        "data-platform-prod",
        "--show-managed-fields",
        "-o",
        "jsonpath={.metadata.managedFields[*].manager}",
    ]));
    assert!(fields.contains("vigie-cli"), "{fields}");

    // C through staging and to prod, then a person rolls prod back to A.
    set_revision(&n, "data-platform-staging", &c);
    wait_phase(&n, "data-platform-staging", Phase::Verifying).await;
    assert_eq!(controller.verdict("data-platform", &c, "success"), 202);
    wait_phase(&n, "data-platform-staging", Phase::Validated).await;
    // A Release the GitOps sync owns is not patched: the change to commit is shown.
    let out = kubectl(&[
        "-n",
        &n,
        "label",
        "release",
        "data-platform-prod",
        "app.kubernetes.io/managed-by=vigie-gitops",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = vigie_cli(
        &n,
        &[
            "promote",
            "data-platform",
            "--to",
            "prod",
            "--sha",
            &c,
            "--yes",
        ],
        "",
    );
    assert!(!out.status.success());
    let said = stderr(&out);
    let out = kubectl(&[
        "-n",
        &n,
        "label",
        "release",
        "data-platform-prod",
        "app.kubernetes.io/managed-by-",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        said.contains("is managed by GitOps")
            && said.contains("revision:")
            && said.contains(&c)
            && said.contains("approval:"),
        "{said}"
    );

    let out = vigie_cli(
        &n,
        &[
            "promote",
            "data-platform",
            "--to",
            "prod",
            "--yes",
            "--reason",
            "weekly release",
        ],
        "",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    eventually(T, "prod to run C, validated", || async {
        release(&n, "data-platform-prod")
            .await
            .and_then(|r| r.status)
            .filter(|s| {
                s.phase == Phase::Validated
                    && s.validated_sha.as_ref().is_some_and(|v| v.as_str() == c)
            })
    })
    .await;
    let rollback = [
        "rollback",
        "data-platform",
        "--env",
        "prod",
        "--reason",
        "orders are late",
    ];
    let out = vigie_cli(&n, &rollback, "ROLLBACK\n");
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains(&format!("Roll back data-platform in prod: {sc} → {sa}")),
        "{}",
        stdout(&out)
    );
    wait_rolled_out(
        &n,
        "data-platform-prod",
        &format!("registry.example/data-platform:{a}"),
    )
    .await;
    let r = eventually(T, "prod back on A", || async {
        release(&n, "data-platform-prod").await.filter(|r| {
            r.status.as_ref().is_some_and(|s| {
                s.phase == Phase::Validated
                    && s.validated_sha.as_ref().is_some_and(|v| v.as_str() == a)
            })
        })
    })
    .await;
    let request = r.spec.rollback.unwrap();
    assert_eq!(
        (request.to.as_str(), request.by.as_str()),
        (a.as_str(), user.as_str())
    );

    // `vigie history --kubernetes` reads the Release's record.
    let out = vigie_cli(&n, &["history", "data-platform", "--env", "prod"], "");
    assert!(out.status.success(), "{}", stderr(&out));
    let table = stdout(&out);
    for (event, needle) in [
        ("Approved", user.as_str()),
        ("Approved", "weekly release"),
        ("RolledBack", "orders are late"),
    ] {
        assert!(
            table
                .lines()
                .any(|l| l.contains(event) && l.contains(needle)),
            "{event} with {needle} in\n{table}"
        );
    }

    // Teams heard staging and prod; ntfy staging's failure; email prod's deploys and
    // its rollback, through STARTTLS and AUTH.
    let teams_got = eventually(T, "Teams to hear the rollback", || async {
        let t = titles(&teams, teams_title);
        t.iter()
            .any(|t| t.starts_with("data-platform rolled back in prod"))
            .then_some(t)
    })
    .await;
    for title in [
        format!("Deploying data-platform {sa} to staging"),
        format!("data-platform {sa} validated in staging"),
        format!("data-platform {sb} failed in staging; rolling back to {sa}"),
        format!("data-platform rolled back in staging: {sa} serves again"),
        format!("data-platform {sa} approved for prod"),
        format!("data-platform {sa} is up in prod"),
        format!("data-platform {sa} validated in prod"),
        format!("data-platform rolled back in prod: {sa} serves again"),
    ] {
        assert!(teams_got.contains(&title), "{title} in {teams_got:#?}");
    }
    let pushes = ntfy.requests();
    assert!(
        pushes
            .iter()
            .all(|p| p.header("authorization") == Some("Bearer tk_platform"))
    );
    let ntfy_got: Vec<(String, String)> = pushes
        .iter()
        .map(|p| {
            let v = p.json();
            (
                v["topic"].as_str().unwrap().to_owned(),
                v["title"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        ntfy_got,
        vec![
            (
                "data-platform-staging".to_owned(),
                format!("data-platform {sb} failed in staging; rolling back to {sa}")
            ),
            (
                "data-platform-staging".to_owned(),
                format!("data-platform rolled back in staging: {sa} serves again")
            ),
        ]
    );
    let mails = eventually(T, "the rollback's email", || async {
        let m = mail.received();
        m.contains("rolled back in prod").then_some(m)
    })
    .await;
    assert!(
        mails.contains("RCPT TO: data-platform@example.org"),
        "{mails}"
    );
    for subject in [
        format!("Subject: [vigie] data-platform {sa} is up in prod"),
        format!("Subject: [vigie] data-platform {sc} is up in prod"),
        format!("Subject: [vigie] data-platform rolled back in prod: {sa} serves again"),
    ] {
        assert!(mails.contains(&subject), "{subject} in {mails}");
    }
    assert!(
        mails.contains("Fix the orders join"),
        "the commit's subject: {mails}"
    );
    assert_eq!(mails.matches("=== end ===").count(), 3, "{mails}");
    let log = controller.log();
    assert!(!log.contains("secret-sig") && !log.contains("s3cret") && !log.contains("tk_platform"));
}

/// The page docs/kubernetes.md.
fn quickstart_page() -> String {
    std::fs::read_to_string(k8s::root().join("docs/kubernetes.md")).unwrap()
}

/// What the quickstart must keep doing, checked without a cluster: every shell block
/// is marked, the namespace of `secretNamespaces` is created before the install, the
/// `/hooks/ci` key comes from a Secret the chart names and a delivery is signed with
/// openssl, and nothing the test runs needs the internet.
#[test]
fn the_kubernetes_quickstart_marks_its_blocks_and_needs_no_internet() {
    let blocks = k8s::docs::shell_blocks(&quickstart_page()).unwrap();
    let run: String = blocks
        .iter()
        .filter(|b| b.mark == k8s::docs::Mark::Run)
        .map(|b| b.code.as_str())
        .collect();
    let at = |what: &str| {
        run.find(what)
            .unwrap_or_else(|| panic!("the quickstart no longer runs {what:?}"))
    };
    assert!(at("kubectl create namespace apps") < at("helm install vigie"));
    assert!(at("--set 'secretNamespaces={apps}'") > at("helm install vigie"));
    assert!(at("create secret generic vigie-hooks-ci") < at("helm install vigie"));
    at("--set webhookSecret.existingSecret=vigie-hooks-ci");
    at("openssl dgst -sha256 -hmac");
    at("X-Vigie-Signature: sha256=");
    for phase in ["Verifying", "Validated", "RolledBack"] {
        at(&format!("--for=jsonpath='{{.status.phase}}'={phase}"));
    }
    for online in ["github.com", "ghcr.io", "docker.io", "https://g"] {
        assert!(!run.contains(online), "the quickstart runs {online:?}");
    }
}

/// helm release `vigie` and namespaces `apps` and `vigie-system` gone, whatever a
/// previous run left: a Release whose controller is gone keeps its finalizer, so it is
/// dropped first.
fn clean_quickstart() {
    let _ = helm(&[
        "uninstall",
        "vigie",
        "--namespace",
        "vigie-system",
        "--wait",
    ]);
    let releases = stdout(&kubectl(&["-n", "apps", "get", "releases", "-o", "name"]));
    for r in releases.lines() {
        let _ = kubectl(&[
            "-n",
            "apps",
            "patch",
            r,
            "--type=merge",
            "-p",
            r#"{"metadata":{"finalizers":null}}"#,
        ]);
    }
    let _ = kubectl(&[
        "delete",
        "clusterrole,clusterrolebinding",
        "-l",
        "app.kubernetes.io/name=vigie,app.kubernetes.io/instance=vigie",
    ]);
    let out = kubectl(&[
        "delete",
        "namespace",
        "apps",
        "vigie-system",
        "--ignore-not-found",
        "--timeout=180s",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
}

/// Cleans up after the quickstart, and when it failed, prints the controller's log
/// and what the cluster holds first.
struct Quickstart {
    scratch: std::path::PathBuf,
}

impl Drop for Quickstart {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for ns in ["apps", "vigie-system"] {
                eprintln!("===== namespace {ns} at the failure =====");
                eprintln!(
                    "{}",
                    stdout(&kubectl(&[
                        "-n",
                        ns,
                        "get",
                        "releases,deployments,pods,leases,events",
                        "-o",
                        "wide"
                    ]))
                );
            }
            let logs = std::process::Command::new("find")
                .arg(&self.scratch)
                .args(["-name", "vigie.log"])
                .output()
                .unwrap();
            for log in stdout(&logs).lines() {
                eprintln!("===== {log} =====");
                eprintln!("{}", std::fs::read_to_string(log).unwrap_or_default());
            }
        }
        clean_quickstart();
        let _ = std::fs::remove_dir_all(&self.scratch);
    }
}

fn helm_status(release: &str, ns: &str) -> Option<serde_json::Value> {
    let out = helm(&["status", release, "--namespace", ns, "-o", "json"]);
    out.status
        .success()
        .then(|| serde_json::from_slice(&out.stdout).unwrap())
}

/// docs/kubernetes.md runs as written on the e2e control plane: its marked shell
/// blocks in order, in one shell at the repository's root, with `VIGIE` (the binary of
/// this build), `VIGIE_LISTEN` (a free port) and `VIGIE_IMAGE` (kwok pulls no image)
/// set as the page says a reader may, and `VIGIE_NAMESPACE=apps` (`--namespace`): the
/// other tests of this binary run at the same time in namespaces of their own, which a
/// controller watching every namespace would act on. After the blocks that promise
/// something, the test checks it apart from the page's own commands.
#[tokio::test(flavor = "multi_thread")]
async fn docs_kubernetes_md_runs_as_written() {
    if !k8s::enabled("docs") {
        return;
    }
    let blocks = k8s::docs::shell_blocks(&quickstart_page()).unwrap();
    let scratch = std::env::temp_dir().join(format!("vigie-docs-k8s-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&scratch);
    std::fs::create_dir_all(scratch.join("tmp")).unwrap();
    clean_quickstart();
    let _guard = Quickstart {
        scratch: scratch.clone(),
    };
    let port = k8s::free_port();
    let image = "vigie-e2e.invalid/vigie:docs";
    let mut shell = k8s::docs::Shell::start(
        &k8s::root(),
        &scratch,
        &[
            ("VIGIE", env!("CARGO_BIN_EXE_vigie").into()),
            ("VIGIE_LISTEN", format!("127.0.0.1:{port}")),
            ("VIGIE_IMAGE", image.into()),
            ("VIGIE_NAMESPACE", "apps".into()),
            ("TMPDIR", scratch.join("tmp").display().to_string()),
            // The reader's git knows who they are.
            ("GIT_AUTHOR_NAME", "Reader".into()),
            ("GIT_AUTHOR_EMAIL", "reader@example.org".into()),
            ("GIT_COMMITTER_NAME", "Reader".into()),
            ("GIT_COMMITTER_EMAIL", "reader@example.org".into()),
        ],
    );
    let mut checked = std::collections::BTreeSet::new();
    for block in blocks.iter().filter(|b| b.mark == k8s::docs::Mark::Run) {
        let what = format!("docs/kubernetes.md:{}", block.line);
        let started = std::time::Instant::now();
        if let Err(e) = shell.run(&what, &block.code, Duration::from_secs(300)) {
            panic!("{what}: {e}\n===== the shell =====\n{}", shell.log());
        }
        eprintln!("{what}: ran in {:?}", started.elapsed());
        let mut var = |name: &str| {
            shell
                .var(name)
                .unwrap_or_else(|e| panic!("reading ${name}: {e}"))
        };
        let code = &block.code;
        if code.contains("helm install vigie") {
            let status = helm_status("vigie", "vigie-system").expect("the release exists");
            assert_eq!(status["info"]["status"], "deployed", "{status}");
            for crd in ["environments", "codelocations", "releases"] {
                let established = stdout(&kubectl(&[
                    "get",
                    &format!("crd/{crd}.vigie.dev"),
                    "-o",
                    r#"jsonpath={.status.conditions[?(@.type=="Established")].status}"#,
                ]));
                assert_eq!(established, "True", "{crd}");
            }
            checked.insert("installed");
        }
        if code.contains("\"$VIGIE\" controller") {
            assert!(
                !code.contains("--lease-namespace"),
                "the Lease's namespace comes from the kubeconfig's context"
            );
            let lease = holder("vigie-system").await;
            assert!(lease.is_some(), "no holder of the Lease in vigie-system");
            let metrics = k8s::http(port, "GET", "/metrics", &[], b"").map(|(_, m)| m);
            assert!(
                metrics.is_some_and(|m| m.lines().any(|l| l == "vigie_leader 1")),
                "the controller does not lead"
            );
            checked.insert("leading");
        }
        if code.contains("=Verifying") && code.contains("kubectl apply") {
            let good = var("good");
            let r = wait_phase("apps", "web-preprod", Phase::Verifying).await;
            assert_eq!(
                r.status.unwrap().rollout.unwrap().sha.as_str(),
                good,
                "main, resolved in the repository on disk"
            );
            wait_rolled_out("apps", "web-preprod", &format!("localhost/web:{good}")).await;
            checked.insert("verifying");
        }
        if code.contains("=Validated") {
            let good = var("good");
            let r = release("apps", "web-preprod").await.unwrap();
            let status = r.status.unwrap();
            assert_eq!(status.phase, Phase::Validated);
            assert_eq!(status.validated_sha.unwrap().as_str(), good);
            checked.insert("validated");
        }
        if code.contains("=RolledBack") {
            let (good, bad) = (var("good"), var("bad"));
            let r = release("apps", "web-preprod").await.unwrap();
            let status = r.status.unwrap();
            assert_eq!(status.phase, Phase::RolledBack);
            assert_eq!(status.deployed_sha.unwrap().as_str(), good);
            assert!(status.quarantine.iter().any(|q| q.sha.as_str() == bad));
            wait_rolled_out("apps", "web-preprod", &format!("localhost/web:{good}")).await;
            checked.insert("rolled back");
        }
        if code.contains("delete release web-preprod") {
            assert!(release("apps", "web-preprod").await.is_none());
            assert!(deployment("apps", "web-preprod").await.is_none());
            checked.insert("deleted");
        }
        if code.contains("helm upgrade vigie") {
            let status = helm_status("vigie", "vigie-system").expect("the release exists");
            assert_eq!(
                (&status["info"]["status"], &status["version"]),
                (&serde_json::json!("deployed"), &serde_json::json!(2)),
                "{status}"
            );
            wait_rolled_out("vigie-system", "vigie", image).await;
            checked.insert("in the cluster");
        }
        if code.contains("helm uninstall vigie") {
            assert!(helm_status("vigie", "vigie-system").is_none());
            let gone = kubectl(&["get", "namespace", "apps", "vigie-system"]);
            assert!(!gone.status.success(), "{}", stdout(&gone));
            checked.insert("cleaned up");
        }
    }
    assert_eq!(
        checked.into_iter().collect::<Vec<_>>(),
        [
            "cleaned up",
            "deleted",
            "in the cluster",
            "installed",
            "leading",
            "rolled back",
            "validated",
            "verifying"
        ],
        "a step of the quickstart the test checks is gone from the page"
    );
}

/// `application/x-www-form-urlencoded`, as a browser sends a form.
fn form(fields: &[(&str, &str)]) -> Vec<u8> {
    let encode = |s: &str| -> String {
        s.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                    char::from(b).to_string()
                }
                b' ' => "+".to_owned(),
                _ => format!("%{b:02X}"),
            })
            .collect()
    };
    fields
        .iter()
        .map(|(k, v)| format!("{k}={}", encode(v)))
        .collect::<Vec<_>>()
        .join("&")
        .into_bytes()
}

/// A browser of the web view: its session cookie, once logged in.
struct Browser {
    port: u16,
    cookie: Option<String>,
}

impl Browser {
    fn headers(&self, more: &[(&'static str, String)]) -> Vec<(&'static str, String)> {
        let mut headers = more.to_vec();
        if let Some(c) = &self.cookie {
            headers.push(("cookie", c.clone()));
        }
        headers
    }

    fn get(&self, path: &str) -> k8s::Answer {
        k8s::exchange(self.port, "GET", path, &self.headers(&[]), b"")
            .unwrap_or_else(|| panic!("GET {path}: no answer"))
    }

    fn post(&self, path: &str, fields: &[(&str, &str)]) -> k8s::Answer {
        let headers = self.headers(&[(
            "content-type",
            "application/x-www-form-urlencoded".to_owned(),
        )]);
        k8s::exchange(self.port, "POST", path, &headers, &form(fields))
            .unwrap_or_else(|| panic!("POST {path}: no answer"))
    }

    /// Logs in with `token`; the answer (a session cookie kept when it gives one).
    fn login(&mut self, token: &str) -> k8s::Answer {
        let answer = self.post("/login", &[("token", token)]);
        if let Some(set) = answer.header("set-cookie") {
            self.cookie = set.split(';').next().map(str::to_owned);
        }
        answer
    }

    /// The CSRF token of the session (the log-out form of any page carries it).
    fn csrf(&self) -> String {
        let page = self.get("/").body;
        let at = page
            .find("name=\"csrf\" value=\"")
            .expect("a form with a CSRF token")
            + 19;
        page[at..].split('"').next().unwrap().to_owned()
    }
}

/// A token of the ServiceAccount `name` in `ns`, as `kubectl create token` gives it.
fn token(ns: &str, name: &str) -> String {
    let out = kubectl(&["-n", ns, "create", "token", name, "--duration=1h"]);
    assert!(out.status.success(), "{}", stderr(&out));
    stdout(&out).trim().to_owned()
}

/// The operator's web view, served by a standby replica running as the chart's
/// ServiceAccount (so the chart grants the token and access reviews): the grid lists
/// the Release; a garbage token is refused; a ServiceAccount that may not patch
/// Releases logs in but is refused every action with Kubernetes' answer, and nothing
/// changes; one bound to a Role that allows it clears a quarantine and rolls back, in
/// its own name, written as `vigie-web`. The chart's session key outlives an upgrade.
#[tokio::test(flavor = "multi_thread")]
async fn the_web_view_lets_act_only_whom_kubernetes_lets_patch_the_release() {
    if !k8s::enabled("web") {
        return;
    }
    let started = std::time::Instant::now();
    let ns = Namespace::new("web");
    let n = ns.name.clone();
    let sa = helm_install(&ns);

    // The session key the chart made: random, and the same after an upgrade.
    let session_key = || {
        stdout(&kubectl(&[
            "-n",
            &n,
            "get",
            "secret",
            &format!("{n}-vigie-web-session"),
            "-o",
            "jsonpath={.data.session-key}",
        ]))
    };
    let key = session_key();
    assert_eq!(key.len(), 64, "48 characters, in base64: {key:?}");
    let chart = k8s::root().join("charts/vigie");
    let upgraded = helm(&[
        "upgrade",
        &n,
        chart.to_str().unwrap(),
        "--namespace",
        &n,
        "--reuse-values",
    ]);
    assert!(upgraded.status.success(), "{}", stderr(&upgraded));
    assert_eq!(session_key(), key, "the upgrade kept the session key");

    // Another replica holds the Lease: this one stands by and reconciles nothing, so
    // the status written below stays as written.
    let now = jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%S.%6fZ");
    apply(&format!(
        "apiVersion: coordination.k8s.io/v1\nkind: Lease\nmetadata: {{name: vigie-controller, namespace: {n}}}\nspec: {{holderIdentity: elsewhere, leaseDurationSeconds: 3600, renewTime: \"{now}\"}}\n"
    ));
    let (a, b, c) = (sha('a'), sha('b'), sha('c'));
    apply(&format!(
        r#"apiVersion: vigie.dev/v1alpha1
kind: Environment
metadata: {{name: preprod, namespace: {n}}}
spec:
  backend: {{kubernetes: {{namespace: {n}}}}}
---
apiVersion: vigie.dev/v1alpha1
kind: CodeLocation
metadata: {{name: web, namespace: {n}}}
spec:
  repo: {{url: "file:///nonexistent/vigie-e2e/web.git"}}
  ci: {{webhook: {{}}}}
  artifact: {{image: {{template: "registry.example/web:{{sha}}"}}}}
---
apiVersion: vigie.dev/v1alpha1
kind: Release
metadata: {{name: web-preprod, namespace: {n}}}
spec: {{codeLocation: web, environment: preprod, revision: "{c}"}}
"#
    ));
    // `a` validated, `b` rolled back and quarantined, `c` running now.
    let releases: Api<Release> = Api::namespaced(k8s::client().await, &n);
    releases
        .patch_status(
            "web-preprod",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(serde_json::json!({"status": {
                "phase": "Verifying",
                "desiredSha": c, "deployedSha": c, "validatedSha": a,
                "quarantine": [{"sha": b, "at": "2026-01-01T10:00:00Z", "reason": "CI failed: test"}],
                "history": [
                    {"at": "2026-01-01T09:00:00Z", "event": "Validated", "sha": a},
                    {"at": "2026-01-01T10:00:00Z", "event": "RolledBack", "sha": b, "previous": a},
                ],
            }})),
        )
        .await
        .unwrap();

    let mut controller = Controller::new(&ns, &sa, "web");
    controller.start();
    let release_url = format!("/releases/{n}/web-preprod");
    let grid = eventually(T, "the grid listing the Release", || async {
        k8s::exchange(controller.port, "GET", "/", &[], b"")
            .filter(|a| a.status == 200 && a.body.contains(&release_url))
    })
    .await;
    assert!(
        grid.header("content-security-policy").is_some(),
        "{:?}",
        grid.headers
    );
    assert!(
        controller
            .metrics()
            .is_some_and(|m| m.contains("vigie_leader 0")),
        "the pages come from a standby replica"
    );
    let page = Browser {
        port: controller.port,
        cookie: None,
    }
    .get(&release_url);
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.body.contains(&b[..7]), "the quarantined SHA is shown");

    // A garbage token.
    let mut stranger = Browser {
        port: controller.port,
        cookie: None,
    };
    let refused = stranger.login("not-a-token");
    assert_eq!(refused.status, 401, "{}", refused.body);
    assert!(
        refused
            .body
            .contains("Kubernetes does not accept this token"),
        "{}",
        refused.body
    );
    assert!(stranger.cookie.is_none());

    // Two people: `viewer` may do nothing; `deployer` may patch Releases here.
    apply(&format!(
        r"apiVersion: v1
kind: ServiceAccount
metadata: {{name: viewer, namespace: {n}}}
---
apiVersion: v1
kind: ServiceAccount
metadata: {{name: deployer, namespace: {n}}}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {{name: release-patcher, namespace: {n}}}
rules:
  - apiGroups: [vigie.dev]
    resources: [releases]
    verbs: [patch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {{name: deployer-patches-releases, namespace: {n}}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: release-patcher}}
subjects: [{{kind: ServiceAccount, name: deployer, namespace: {n}}}]
"
    ));

    let mut viewer = Browser {
        port: controller.port,
        cookie: None,
    };
    let login = viewer.login(&token(&n, "viewer"));
    assert_eq!(login.status, 303, "{}", login.body);
    assert!(viewer.cookie.is_some(), "a session cookie");
    let csrf = viewer.csrf();
    let not_allowed = format!(
        "Kubernetes does not allow system:serviceaccount:{n}:viewer to patch Release {n}/web-preprod"
    );
    let plan = viewer.get(&format!("{release_url}/rollback"));
    assert_eq!(plan.status, 403, "{}", plan.body);
    assert!(plan.body.contains(&not_allowed), "{}", plan.body);
    let clear = viewer.post(
        &format!("{release_url}/clear-quarantine"),
        &[("csrf", &csrf), ("sha", &b), ("reason", "looks fine to me")],
    );
    assert_eq!(clear.status, 403, "{}", clear.body);
    assert!(clear.body.contains(&not_allowed), "{}", clear.body);
    let rollback = viewer.post(
        &format!("{release_url}/rollback"),
        &[("csrf", &csrf), ("sha", &a), ("confirm", "ROLLBACK")],
    );
    assert_eq!(rollback.status, 403, "{}", rollback.body);
    let r = releases.get("web-preprod").await.unwrap();
    assert!(r.spec.clear_quarantine.is_empty() && r.spec.rollback.is_none());
    assert_eq!(r.spec.revision.as_deref(), Some(c.as_str()));

    let mut deployer = Browser {
        port: controller.port,
        cookie: None,
    };
    let login = deployer.login(&token(&n, "deployer"));
    assert_eq!(login.status, 303, "{}", login.body);
    let csrf = deployer.csrf();
    let me = format!("system:serviceaccount:{n}:deployer");
    let cleared = deployer.post(
        &format!("{release_url}/clear-quarantine"),
        &[
            ("csrf", &csrf),
            ("sha", &b),
            ("reason", "the test was flaky"),
        ],
    );
    assert_eq!(cleared.status, 303, "{}", cleared.body);
    assert_eq!(
        cleared.header("location"),
        Some(format!("{release_url}?recorded=clear").as_str())
    );
    let r = releases.get("web-preprod").await.unwrap();
    let clearance = &r.spec.clear_quarantine[..];
    assert_eq!(clearance.len(), 1, "{clearance:?}");
    assert_eq!(
        (
            clearance[0].sha.as_str(),
            clearance[0].by.as_str(),
            clearance[0].reason.as_str()
        ),
        (b.as_str(), me.as_str(), "the test was flaky")
    );
    let managers = |r: &Release| -> Vec<String> {
        r.metadata
            .managed_fields
            .iter()
            .flatten()
            .filter_map(|m| m.manager.clone())
            .collect()
    };
    assert!(
        managers(&r).contains(&"vigie-web".to_owned()),
        "{:?}",
        managers(&r)
    );
    // A SHA that is not quarantined there is refused, and nothing changes.
    let again = deployer.post(
        &format!("{release_url}/clear-quarantine"),
        &[("csrf", &csrf), ("sha", &c), ("reason", "not quarantined")],
    );
    assert_eq!(again.status, 404, "{}", again.body);
    assert!(again.body.contains("is not quarantined"), "{}", again.body);

    // The rollback plan (the repository cannot be read: the plan says so and goes on),
    // then the rollback, confirmed.
    let plan = deployer.get(&format!("{release_url}/rollback"));
    assert_eq!(plan.status, 200, "{}", plan.body);
    assert!(
        plan.body.contains(&a[..7]) && plan.body.contains("ROLLBACK"),
        "{}",
        plan.body
    );
    let rolled = deployer.post(
        &format!("{release_url}/rollback"),
        &[
            ("csrf", &csrf),
            ("sha", &a),
            ("reason", "c breaks the login page"),
            ("confirm", "ROLLBACK"),
        ],
    );
    assert_eq!(rolled.status, 303, "{}", rolled.body);
    let r = releases.get("web-preprod").await.unwrap();
    assert_eq!(r.spec.revision.as_deref(), Some(a.as_str()));
    let request = r.spec.rollback.clone().expect("a rollback request");
    assert_eq!(
        (request.to.as_str(), request.by.as_str()),
        (a.as_str(), me.as_str())
    );
    assert_eq!(request.reason.as_deref(), Some("c breaks the login page"));

    // The chart granted all of it: the controller was refused nothing.
    for review in [
        "tokenreviews.authentication.k8s.io",
        "subjectaccessreviews.authorization.k8s.io",
    ] {
        let can = kubectl_as(&sa, &["auth", "can-i", "create", review]);
        assert_eq!(stdout(&can).trim(), "yes", "create {review}");
    }
    let log = controller.log();
    assert!(
        !log.to_lowercase().contains("forbidden"),
        "the controller was refused something:\n{log}"
    );
    eprintln!("web view on the operator: {:?}", started.elapsed());
}
