//! End to end against the real Docker engine: the one-VM scenario, and each artifact
//! kind deployed, validated and rolled back.

mod docker;
mod skip;

use std::time::Duration;

use docker::{
    Demo, IMAGE_ARTIFACT, Vigie, docker_available, free_port, http_get, release, vm_manifests,
    wait_for,
};
use vigie::api::release::HistoryEvent;

const T: Duration = Duration::from_secs(60);

fn serving(port: u16) -> Option<String> {
    http_get(port, "/")
        .filter(|(s, _)| *s == 200)
        .map(|(_, b)| b)
}

fn wait_serving(port: u16, sha: &str) -> String {
    wait_for(T, &format!("{sha} to serve on {port}"), || {
        serving(port).filter(|b| b.contains(sha))
    })
}

#[test]
#[allow(clippy::too_many_lines, reason = "one scenario, read top to bottom")]
fn the_vm_scenario() {
    if !docker_available() {
        return;
    }
    let demo = Demo::get();
    let (a, b) = (demo.sha("good"), demo.sha("bad"));
    let (pre, prod) = (free_port(), free_port());
    let mut v = Vigie::new("vm", &["vm-preprod", "vm-prod"]);
    v.write("base.yaml", &vm_manifests("vm", demo, IMAGE_ARTIFACT));
    v.write("preprod.yaml", &release("vm", "preprod", Some(a), pre, ""));
    v.write("prod.yaml", &release("vm", "prod", None, prod, ""));
    v.start();

    // A is deployed, healthy, then validated by CI.
    v.wait_phase("vm-preprod", "Verifying", T);
    wait_serving(pre, a);
    assert_eq!(v.verdict("app", a, "success"), 202);
    let row = v.wait_phase("vm-preprod", "Validated", T);
    assert_eq!(row.validated_sha.as_deref(), Some(a));

    // The manifest moves to B: B serves before CI says anything.
    v.write("preprod.yaml", &release("vm", "preprod", Some(b), pre, ""));
    wait_serving(pre, b);
    let row = v.wait_phase("vm-preprod", "Verifying", T);
    assert_eq!(
        (row.deployed_sha.as_deref(), row.validated_sha.as_deref()),
        (Some(b), Some(a))
    );
    // A's container is kept, stopped, for a fast rollback.
    let a_name = format!("vigie-vm-preprod-app-{}", &a[..7]);
    let b_name = format!("vigie-vm-preprod-app-{}", &b[..7]);
    let mut expected = vec![
        (a_name.clone(), "exited".to_owned()),
        (b_name.clone(), "running".to_owned()),
    ];
    expected.sort();
    assert_eq!(Vigie::containers("vm-preprod"), expected);
    let a_id = Vigie::container_id(&a_name).unwrap();

    // Red CI for B: A serves again, from the very same container.
    assert_eq!(v.verdict("app", b, "failure"), 202);
    wait_serving(pre, a);
    let row = v.wait_phase("vm-preprod", "RolledBack", T);
    assert_eq!(row.deployed_sha.as_deref(), Some(a));
    assert_eq!(
        row.ci_url.as_deref(),
        Some(format!("https://ci.example/app/{b}/failure").as_str())
    );
    assert_eq!(row.quarantined, vec![b.to_owned()]);
    assert_eq!(
        Vigie::container_id(&a_name).as_deref(),
        Some(a_id.as_str()),
        "rolled back without recreating A"
    );
    let state = v.state();
    let status = &state.releases["default/app-preprod"].status;
    let history: Vec<(HistoryEvent, String)> = status
        .history
        .iter()
        .map(|h| (h.event, h.sha.to_string()))
        .collect();
    assert_eq!(
        history,
        vec![
            (HistoryEvent::Deployed, a.to_owned()),
            (HistoryEvent::Validated, a.to_owned()),
            (HistoryEvent::Deployed, b.to_owned()),
            (HistoryEvent::RolledBack, b.to_owned()),
        ]
    );
    let rolled_back = status.history.last().unwrap();
    assert_eq!(rolled_back.reason.as_deref(), Some("CI failed"));
    assert_eq!(
        rolled_back.url.as_deref(),
        Some(format!("https://ci.example/app/{b}/failure").as_str())
    );
    wait_for(T, "B's container to be removed", || {
        (Vigie::containers("vm-preprod") == vec![(a_name.clone(), "running".into())]).then_some(())
    });

    // prod refuses B: not validated in preprod, even with an approval naming it.
    let approval =
        |sha: &str| format!("  approval: {{sha: {sha}, by: alice, reason: weekly release}}\n");
    v.write(
        "prod.yaml",
        &release("vm", "prod", Some(b), prod, &approval(b)),
    );
    wait_for(T, "prod to refuse B", || {
        v.row("vm-prod").filter(|r| {
            r.message
                .as_deref()
                .is_some_and(|m| m.contains("not validated in the promotion source"))
        })
    });
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(serving(prod), None, "nothing was deployed to prod");
    assert_eq!(v.row("vm-prod").unwrap().phase, "Pending");

    // A, validated in preprod and approved by name, goes to prod.
    v.write(
        "prod.yaml",
        &release("vm", "prod", Some(a), prod, &approval(a)),
    );
    let row = v.wait_phase("vm-prod", "Validated", T);
    assert_eq!(row.validated_sha.as_deref(), Some(a));
    wait_serving(prod, a);
    let prod_status = &v.state().releases["default/app-prod"].status;
    let approved = prod_status
        .history
        .iter()
        .find(|h| h.event == HistoryEvent::Approved)
        .unwrap();
    assert_eq!(
        (approved.sha.as_str(), approved.by.as_deref()),
        (a, Some("alice"))
    );

    // The HTTP surface of `vigie run`.
    assert_eq!(http_get(v.port, "/healthz").map(|(s, _)| s), Some(200));
    assert_eq!(http_get(v.port, "/readyz").map(|(s, _)| s), Some(200));
    let (_, metrics) = http_get(v.port, "/metrics").unwrap();
    for line in [
        "vigie_transitions_total{event=\"RolledBack\"} 1",
        "vigie_releases{phase=\"RolledBack\"} 1",
        "vigie_releases{phase=\"Validated\"} 1",
        "vigie_webhook_deliveries_total{outcome=\"accepted\"} 2",
        "vigie_manifests_valid 1",
    ] {
        assert!(metrics.contains(line), "{line} in\n{metrics}");
    }
    // Reconciles count Releases, as in the operator (e2e_k8s.rs), not rounds.
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("vigie_reconciles_total{result=\"ok\"}") && !l.ends_with(" 0")),
        "{metrics}"
    );

    // Labels for docker compose, and the state for `vigie status -o json`.
    let out = std::process::Command::new("docker")
        .args(["inspect", "--format", "{{json .Config.Labels}}", &a_name])
        .output()
        .unwrap();
    let labels: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(labels["app.kubernetes.io/managed-by"], "vigie");
    assert_eq!(labels["vigie.dev/sha"], a);
    assert_eq!(labels["com.docker.compose.project"], "vigie-vm-preprod");
    assert_eq!(labels["com.docker.compose.service"], "app");
    let json = std::process::Command::new(env!("CARGO_BIN_EXE_vigie"))
        .args(["status", "-o", "json", "--state"])
        .arg(&v.state)
        .output()
        .unwrap();
    let rows: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    let pre_row = rows
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["environment"] == "vm-preprod")
        .unwrap();
    for key in [
        "codeLocation",
        "environment",
        "desiredSha",
        "deployedSha",
        "validatedSha",
        "phase",
    ] {
        assert!(pre_row.get(key).is_some(), "{key} in {pre_row}");
    }
    assert_eq!(pre_row["phase"], "RolledBack");
}

/// Deploys `good`, validates it, deploys `bad`, turns CI red and checks the rollback.
fn deploy_validate_rollback(test: &str, artifact: &str, setup: impl FnOnce(&Vigie)) -> Vigie {
    let demo = Demo::get();
    let (a, b) = (demo.sha("good"), demo.sha("bad"));
    let port = free_port();
    let env = format!("{test}-preprod");
    let mut v = Vigie::new(test, &[&env, &format!("{test}-prod")]);
    setup(&v);
    v.write(
        "base.yaml",
        &vm_manifests(
            test,
            demo,
            &artifact.replace("@DIR@", &v.dir.display().to_string()),
        ),
    );
    v.write("preprod.yaml", &release(test, "preprod", Some(a), port, ""));
    v.start();
    v.wait_phase(&env, "Verifying", T);
    let body = wait_serving(port, a);
    assert!(body.contains("Bonjour from the good commit"), "{body}");
    assert_eq!(v.verdict("app", a, "success"), 202);
    v.wait_phase(&env, "Validated", T);
    v.write("preprod.yaml", &release(test, "preprod", Some(b), port, ""));
    let body = wait_serving(port, b);
    assert!(body.contains("This commit breaks a test"), "{body}");
    v.wait_phase(&env, "Verifying", T);
    assert_eq!(v.verdict("app", b, "failure"), 202);
    let body = wait_serving(port, a);
    assert!(body.contains("Bonjour from the good commit"), "{body}");
    let row = v.wait_phase(&env, "RolledBack", T);
    assert_eq!(row.quarantined, vec![b.to_owned()]);
    v
}

#[test]
fn an_image_per_sha_is_deployed_validated_and_rolled_back() {
    if !docker_available() {
        return;
    }
    deploy_validate_rollback("kind-image", IMAGE_ARTIFACT, |_| {});
}

#[test]
fn a_compose_service_is_deployed_validated_and_rolled_back() {
    if !docker_available() {
        return;
    }
    let v = deploy_validate_rollback(
        "kind-compose",
        "    compose: {file: \"@DIR@/compose/docker-compose.yml\", service: web}",
        |v| {
            let dir = v.dir.join("compose");
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(
            dir.join("docker-compose.yml"),
            "name: shop\nservices:\n  web:\n    image: vigie-demo:latest\n    environment:\n      GREETING: from-compose\n    ports: [\"8080\"]\n",
        )
        .unwrap();
        },
    );
    let a = Demo::get().sha("good");
    let name = format!("vigie-kind-compose-preprod-app-{}", &a[..7]);
    let out = std::process::Command::new("docker")
        .args([
            "inspect",
            "--format",
            "{{json .Config.Labels}}|{{.Config.Image}}|{{json .Config.Env}}",
            &name,
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("\"com.docker.compose.project\":\"shop\""),
        "{text}"
    );
    assert!(
        text.contains("\"com.docker.compose.service\":\"web\""),
        "{text}"
    );
    assert!(
        text.contains(&format!("|vigie-demo:{a}|")),
        "the compose image's tag is the SHA: {text}"
    );
    assert!(text.contains("GREETING=from-compose"), "{text}");
    drop(v);
}

#[test]
fn a_git_checkout_is_deployed_validated_and_rolled_back() {
    if !docker_available() {
        return;
    }
    let artifact = "    gitCheckout: {path: \"@DIR@/tree/{environment}\", image: \"vigie-demo-runtime:latest\", mountPath: /app}";
    let v = deploy_validate_rollback("kind-checkout", artifact, |_| {});
    let tree = v.dir.join("tree/kind-checkout-preprod");
    assert_eq!(
        std::fs::read_to_string(tree.join("message"))
            .unwrap()
            .trim(),
        "Bonjour from the good commit",
        "the working tree is back on the good commit"
    );
    let head = vigie::backend::docker::checkout::head(&tree).unwrap();
    assert_eq!(head.as_str(), Demo::get().sha("good"));
}
