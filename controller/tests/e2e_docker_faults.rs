//! End to end against the real Docker engine: crashes of Vigie itself, bad SHAs,
//! hooks, and hostile webhook deliveries.

mod docker;
mod skip;

use std::time::Duration;

use docker::{
    Demo, IMAGE_ARTIFACT, Vigie, docker_available, free_port, http_get, http_post, release,
    vm_manifests, wait_for,
};
use vigie::api::release::{HealthState, HistoryEvent};

const T: Duration = Duration::from_secs(60);

fn wait_serving(port: u16, sha: &str) {
    wait_for(T, &format!("{sha} to serve on {port}"), || {
        http_get(port, "/").filter(|(s, b)| *s == 200 && b.contains(sha))
    });
}

/// Starts a Vigie with `good` validated in `<test>-preprod`, serving on the returned port.
fn validated(test: &str, manifests: &str) -> (Vigie, u16) {
    let demo = Demo::get();
    let a = demo.sha("good");
    let port = free_port();
    let mut v = Vigie::new(test, &[&format!("{test}-preprod"), &format!("{test}-prod")]);
    v.write("base.yaml", manifests);
    v.write("preprod.yaml", &release(test, "preprod", Some(a), port, ""));
    v.start();
    v.wait_phase(&format!("{test}-preprod"), "Verifying", T);
    assert_eq!(v.verdict("app", a, "success"), 202);
    v.wait_phase(&format!("{test}-preprod"), "Validated", T);
    wait_serving(port, a);
    (v, port)
}

#[test]
fn a_crash_looping_sha_is_rolled_back() {
    if !docker_available() {
        return;
    }
    let demo = Demo::get();
    let (v, port) = validated("crash", &vm_manifests("crash", demo, IMAGE_ARTIFACT));
    let (a, c) = (demo.sha("good"), demo.sha("crash"));
    v.write(
        "preprod.yaml",
        &release("crash", "preprod", Some(c), port, ""),
    );
    let row = v.wait_phase("crash-preprod", "RolledBack", T);
    assert_eq!(row.deployed_sha.as_deref(), Some(a));
    assert_eq!(row.quarantined, vec![c.to_owned()]);
    wait_serving(port, a);
    let status = &v.state().releases["default/app-preprod"].status;
    let entry = status
        .history
        .iter()
        .rev()
        .find(|h| h.event == HistoryEvent::RolledBack)
        .unwrap();
    let reason = entry.reason.as_deref().unwrap();
    assert!(reason.starts_with("unhealthy after deploy:"), "{reason}");
}

#[test]
fn a_sha_failing_its_health_check_is_rolled_back() {
    if !docker_available() {
        return;
    }
    let demo = Demo::get();
    let (v, port) = validated("sick", &vm_manifests("sick", demo, IMAGE_ARTIFACT));
    let (a, u) = (demo.sha("good"), demo.sha("unhealthy"));
    v.write(
        "preprod.yaml",
        &release("sick", "preprod", Some(u), port, ""),
    );
    v.wait_phase("sick-preprod", "RolledBack", T);
    wait_serving(port, a);
    let status = &v.state().releases["default/app-preprod"].status;
    let entry = status
        .history
        .iter()
        .rev()
        .find(|h| h.event == HistoryEvent::RolledBack)
        .unwrap();
    assert!(
        entry
            .reason
            .as_deref()
            .unwrap()
            .contains("returned 500, expected 200"),
        "{:?}",
        entry.reason
    );
}

#[test]
fn killed_while_verifying_it_resumes_without_a_second_deploy() {
    if !docker_available() {
        return;
    }
    let demo = Demo::get();
    let (mut v, port) = validated("killv", &vm_manifests("killv", demo, IMAGE_ARTIFACT));
    let (a, b) = (demo.sha("good"), demo.sha("bad"));
    v.write(
        "preprod.yaml",
        &release("killv", "preprod", Some(b), port, ""),
    );
    v.wait_phase("killv-preprod", "Verifying", T);
    let b_name = format!("vigie-killv-preprod-app-{}", &b[..7]);
    let b_id = Vigie::container_id(&b_name).unwrap();
    v.kill();
    v.start();
    std::thread::sleep(Duration::from_secs(2));
    let row = v.wait_phase("killv-preprod", "Verifying", T);
    assert_eq!(
        Vigie::container_id(&b_name).as_deref(),
        Some(b_id.as_str()),
        "B was not deployed twice"
    );
    let status = &v.state().releases["default/app-preprod"].status;
    assert_eq!(
        status
            .rollout
            .as_ref()
            .unwrap()
            .rollback_point
            .as_ref()
            .map(vigie::api::Sha::as_str),
        Some(a)
    );
    assert_eq!(
        status
            .history
            .iter()
            .filter(|h| h.event == HistoryEvent::Deployed && h.sha.as_str() == b)
            .count(),
        1
    );
    assert_eq!(row.validated_sha.as_deref(), Some(a));
    assert_eq!(v.verdict("app", b, "failure"), 202);
    v.wait_phase("killv-preprod", "RolledBack", T);
    wait_serving(port, a);
}

#[test]
fn killed_while_deploying_it_resumes_without_a_second_hook_or_deploy() {
    if !docker_available() {
        return;
    }
    let demo = Demo::get();
    let test = "killd";
    // Docker creates the bind mount's source when the hook starts.
    let backups = docker::root().join("target/e2e").join(test).join("backups");
    let hooks = format!(
        "  hooks:\n    preDeploy:\n      - name: backup\n        image: vigie-demo:latest\n        command: [/demo-app, hook, \"4\", \"0\"]\n        mounts: [{{source: \"{}\", target: /backups}}]\n        timeout: 1m\n        output: /backups/{{environment}}-{{shortSha}}.txt\n",
        backups.display()
    );
    let manifests = vm_manifests(test, demo, IMAGE_ARTIFACT).replace(
        "  verification: {timeout: 2m, healthTimeout: 1m}\n",
        &format!("  verification: {{timeout: 2m, healthTimeout: 1m}}\n{hooks}"),
    );
    let (mut v, port) = validated(test, &manifests);
    let (a, b) = (demo.sha("good"), demo.sha("bad"));
    v.write("preprod.yaml", &release(test, "preprod", Some(b), port, ""));
    // The backup hook runs for 4 seconds: kill Vigie in the middle of it.
    // One run per hook and rollout: `vigie-hook-<env>-<location>-<hook>-<sha7>-<attempt>`.
    let prefix = format!("vigie-hook-{test}-preprod-app-backup-{}-", &b[..7]);
    let hook_runs = || -> Vec<String> {
        Vigie::containers(&format!("{test}-preprod"))
            .into_iter()
            .map(|(n, _)| n)
            .filter(|n| n.starts_with(&prefix))
            .collect()
    };
    let hook_name = wait_for(T, "the hook to start", || hook_runs().into_iter().next());
    let hook_id = Vigie::container_id(&hook_name).unwrap();
    assert_eq!(
        v.row(&format!("{test}-preprod")).unwrap().phase,
        "Deploying"
    );
    v.kill();
    std::thread::sleep(Duration::from_secs(1));
    v.start();
    v.wait_phase(&format!("{test}-preprod"), "Verifying", T);
    wait_serving(port, b);
    assert_eq!(hook_runs(), vec![hook_name.clone()], "one hook run");
    assert_eq!(
        Vigie::container_id(&hook_name).as_deref(),
        Some(hook_id.as_str()),
        "the hook ran once"
    );
    let status = &v.state().releases["default/app-preprod"].status;
    assert_eq!(
        status
            .rollout
            .as_ref()
            .unwrap()
            .rollback_point
            .as_ref()
            .map(vigie::api::Sha::as_str),
        Some(a)
    );
    let hook = status
        .history
        .iter()
        .rev()
        .find(|h| h.event == HistoryEvent::HookSucceeded)
        .unwrap();
    assert_eq!(
        hook.output.as_deref(),
        Some(format!("/backups/{test}-preprod-{}.txt", &b[..7]).as_str())
    );
    let backup =
        std::fs::read_to_string(backups.join(format!("{test}-preprod-{}.txt", &b[..7]))).unwrap();
    assert_eq!(backup, format!("backup of {a} before {b}\n"));
    assert_eq!(
        status
            .history
            .iter()
            .filter(|h| h.event == HistoryEvent::Deployed && h.sha.as_str() == b)
            .count(),
        1
    );
    assert_eq!(v.verdict("app", b, "success"), 202);
    v.wait_phase(&format!("{test}-preprod"), "Validated", T);
}

#[test]
fn hostile_webhook_deliveries_change_nothing() {
    if !docker_available() {
        return;
    }
    let demo = Demo::get();
    let (v, _port) = validated("hook", &vm_manifests("hook", demo, IMAGE_ARTIFACT));
    let b = demo.sha("bad");
    let before = std::fs::read(&v.state).unwrap();
    let body = format!(
        r#"{{"codeLocation":"app","sha":"{b}","state":"failure","url":"https://ci.example/x"}}"#
    );
    let post =
        |headers: &[(&str, String)], body: &[u8]| http_post(v.port, "/hooks/ci", headers, body);
    assert_eq!(post(&[], body.as_bytes()), 401, "no signature");
    let wrong = vigie::ci::webhook::sign(b"not the secret", body.as_bytes());
    assert_eq!(
        post(&[("X-Vigie-Signature", wrong)], body.as_bytes()),
        401,
        "wrong key"
    );
    let right = vigie::ci::webhook::sign(docker::SECRET.as_bytes(), body.as_bytes());
    let tampered = body.replace("failure", "success");
    assert_eq!(
        post(&[("X-Vigie-Signature", right)], tampered.as_bytes()),
        401,
        "body changed after signing"
    );
    let huge = format!(
        r#"{{"codeLocation":"app","sha":"{b}","state":"failure","url":"https://ci.example/{}"}}"#,
        "x".repeat(1024 * 1024)
    );
    let signed = vigie::ci::webhook::sign(docker::SECRET.as_bytes(), huge.as_bytes());
    assert_eq!(
        post(&[("X-Vigie-Signature", signed)], huge.as_bytes()),
        413,
        "over 1 MiB"
    );
    assert_eq!(v.post(b"{not json"), 400, "signed garbage");
    let stale_body = format!(
        r#"{{"codeLocation":"app","sha":"{b}","state":"failure","timestamp":"{}"}}"#,
        jiff::Timestamp::now() - jiff::SignedDuration::from_secs(600)
    );
    assert_eq!(
        v.post(stale_body.as_bytes()),
        400,
        "a signed delivery from 10 minutes ago"
    );
    assert_eq!(
        v.verdict("nope", b, "failure"),
        404,
        "unknown code location"
    );
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        std::fs::read(&v.state).unwrap(),
        before,
        "the state file is unchanged"
    );
    // A genuine delivery is accepted once; its replay is refused and changes nothing.
    let fixed = demo.sha("fixed");
    assert_eq!(v.verdict("app", fixed, "pending"), 202);
    std::thread::sleep(Duration::from_secs(1));
    let after = std::fs::read(&v.state).unwrap();
    assert_eq!(v.verdict("app", fixed, "pending"), 409, "replayed delivery");
    assert_eq!(
        v.verdict("app", demo.sha("good"), "success"),
        409,
        "the first verdict, replayed"
    );
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        std::fs::read(&v.state).unwrap(),
        after,
        "a replay changes nothing"
    );
    let state = v.state();
    assert_eq!(
        state.releases["default/app-preprod"].status.phase,
        vigie::api::Phase::Validated
    );
    assert!(
        !state
            .verdicts
            .for_location("app")
            .contains_key(&b.parse().unwrap()),
        "no verdict recorded for B"
    );
}

#[test]
fn an_invalid_change_keeps_the_last_valid_set_and_says_why() {
    if !docker_available() {
        return;
    }
    let demo = Demo::get();
    let (v, port) = validated("invalid", &vm_manifests("invalid", demo, IMAGE_ARTIFACT));
    let (a, b) = (demo.sha("good"), demo.sha("bad"));
    v.write(
        "preprod.yaml",
        &release(
            "invalid",
            "preprod",
            Some("not a sha!"),
            port,
            "  colour: red\n",
        ),
    );
    let problems = wait_for(T, "the problems to be recorded", || {
        Some(v.state().manifest_problems).filter(|p| !p.is_empty())
    });
    assert!(
        problems
            .iter()
            .any(|p| p.contains("preprod.yaml: document 1 (Release/app-preprod): spec.revision:")),
        "{problems:?}"
    );
    assert!(
        problems
            .iter()
            .any(|p| p.ends_with("spec.colour: unknown field")),
        "{problems:?}"
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_vigie"))
        .args(["status", "--state"])
        .arg(&v.state)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("The manifests are invalid; the last valid set keeps running. 2 problem(s):"),
        "{text}"
    );
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(v.row("invalid-preprod").unwrap().phase, "Validated");
    wait_serving(port, a);
    // Fixed: the new set is taken, the problems are gone.
    v.write(
        "preprod.yaml",
        &release("invalid", "preprod", Some(b), port, ""),
    );
    v.wait_phase("invalid-preprod", "Verifying", T);
    assert!(v.state().manifest_problems.is_empty());
}

#[test]
fn a_release_removed_from_the_manifests_has_its_containers_removed() {
    if !docker_available() {
        return;
    }
    let demo = Demo::get();
    let (v, _port) = validated("prune", &vm_manifests("prune", demo, IMAGE_ARTIFACT));
    assert_eq!(Vigie::containers("prune-preprod").len(), 1);
    let a = demo.sha("good");
    let name = format!("vigie-prune-preprod-app-{}", &a[..7]);
    let id = Vigie::container_id(&name).unwrap();
    // Missing for less than the grace period (a `git pull`, an editor's save): nothing goes.
    let file = v.manifests.join("preprod.yaml");
    let content = std::fs::read_to_string(&file).unwrap();
    std::fs::remove_file(&file).unwrap();
    std::thread::sleep(Duration::from_millis(700));
    std::fs::write(&file, &content).unwrap();
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(Vigie::container_id(&name).as_deref(), Some(id.as_str()));
    let row = v.wait_phase("prune-preprod", "Validated", T);
    assert_eq!(
        row.validated_sha.as_deref(),
        Some(a),
        "history and validation kept"
    );
    // Gone for good: its containers are removed after the grace period.
    std::fs::remove_file(&file).unwrap();
    wait_for(T, "the containers to be removed", || {
        Vigie::containers("prune-preprod").is_empty().then_some(())
    });
    // Its record stays (history, quarantine), marked removed, out of `vigie status`.
    assert!(
        v.state().releases["default/app-preprod"]
            .removed_at
            .is_some()
    );
    assert!(v.row("prune-preprod").is_none());
}

#[test]
fn a_sha_whose_image_is_not_there_yet_waits_for_it() {
    if !docker_available() {
        return;
    }
    let demo = Demo::get();
    let (a, f) = (demo.sha("good"), demo.sha("fixed"));
    // A registry that refuses at once (nothing listens on 127.0.0.1:1): only local images count.
    let repo = "127.0.0.1:1/vigie-later";
    let tag = |sha: &str| {
        let out = std::process::Command::new("docker")
            .args([
                "tag",
                &format!("vigie-demo:{sha}"),
                &format!("{repo}:{sha}"),
            ])
            .output()
            .unwrap();
        assert!(out.status.success());
    };
    let _ = std::process::Command::new("docker")
        .args(["rmi", &format!("{repo}:{f}")])
        .output();
    tag(a);
    let artifact = format!("    image: {{template: \"{repo}:{{sha}}\"}}");
    let (v, port) = validated("later", &vm_manifests("later", demo, &artifact));
    v.write(
        "preprod.yaml",
        &release("later", "preprod", Some(f), port, ""),
    );
    wait_for(T, "the wait for the image to show", || {
        let state = v.state();
        let status = state.releases.get("default/app-preprod")?.status.clone();
        status
            .conditions
            .iter()
            .find(|c| c.type_ == "Progressing" && c.reason == "ArtifactNotAvailable")
            .map(|_| ())
    });
    assert_eq!(v.row("later-preprod").unwrap().phase, "Deploying");
    wait_serving(port, a);
    // The image is pushed: the deploy proceeds.
    tag(f);
    v.wait_phase("later-preprod", "Verifying", T);
    wait_serving(port, f);
    let _ = std::process::Command::new("docker")
        .args(["rmi", &format!("{repo}:{a}"), &format!("{repo}:{f}")])
        .output();
}

#[test]
fn a_corrupt_state_file_is_reported_and_left_alone() {
    let dir = docker::root().join("target/e2e/corrupt");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("manifests")).unwrap();
    let state = dir.join("state.json");
    let torn = r#"{"format":"vigie-state/1","checksum":"sha256:00","state":{"releases":{"#;
    std::fs::write(&state, torn).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_vigie"))
        .args(["run", "--listen", "127.0.0.1:0", "--manifests"])
        .arg(dir.join("manifests"))
        .arg("--state")
        .arg(&state)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("is corrupt") && err.contains("left as is"),
        "{err}"
    );
    assert_eq!(
        std::fs::read_to_string(&state).unwrap(),
        torn,
        "never silently reset"
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_vigie"))
        .args(["status", "--state"])
        .arg(&state)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("is corrupt"));
}

#[test]
fn dockers_own_healthcheck_is_honoured() {
    if !docker_available() {
        return;
    }
    let demo = Demo::get();
    let (a, u) = (demo.sha("good"), demo.sha("unhealthy"));
    // No HTTP health check: the images' HEALTHCHECK is the judge.
    let manifests = vm_manifests("dockerhc", demo, "    image: {template: \"vigie-demo-hc:{sha}\"}").replace(
        "  healthCheck: {path: /health, expectedBody: ok, timeout: 2s, retries: 3, interval: 500ms}\n",
        "",
    );
    assert!(!manifests.contains("healthCheck"));
    let (v, port) = validated("dockerhc", &manifests);
    let status = v.state().releases["default/app-preprod"].status.clone();
    assert_eq!(status.health.unwrap().state, HealthState::Healthy);
    v.write(
        "preprod.yaml",
        &release("dockerhc", "preprod", Some(u), port, ""),
    );
    v.wait_phase("dockerhc-preprod", "RolledBack", T);
    wait_serving(port, a);
    let status = v.state().releases["default/app-preprod"].status.clone();
    let entry = status
        .history
        .iter()
        .rev()
        .find(|h| h.event == HistoryEvent::RolledBack)
        .unwrap();
    assert_eq!(
        entry.reason.as_deref(),
        Some("unhealthy after deploy: Docker HEALTHCHECK reports unhealthy")
    );
}

#[test]
fn a_container_name_held_by_a_foreign_container_is_reported_with_what_to_do() {
    if !docker_available() {
        return;
    }
    let demo = Demo::get();
    let a = demo.sha("good");
    let test = "taken";
    let name = format!("vigie-{test}-preprod-app-{}", &a[..7]);
    let docker = |args: &[&str]| {
        std::process::Command::new("docker")
            .args(args)
            .output()
            .unwrap()
    };
    let port = free_port();
    let mut v = Vigie::new(test, &[&format!("{test}-preprod")]);
    // Someone created a container under the name Vigie gives this SHA, by hand.
    docker(&["rm", "-f", &name]);
    let image = format!("vigie-demo:{a}");
    let created = docker(&["create", "--name", &name, &image]);
    assert!(created.status.success(), "{created:?}");
    let id = String::from_utf8_lossy(&created.stdout).trim().to_owned();
    v.write("base.yaml", &vm_manifests(test, demo, IMAGE_ARTIFACT));
    v.write("preprod.yaml", &release(test, "preprod", Some(a), port, ""));
    v.spawn();
    let row = wait_for(T, "the taken name to be reported", || {
        v.row(&format!("{test}-preprod")).filter(|r| {
            r.message
                .as_deref()
                .is_some_and(|m| m.contains("is held by"))
        })
    });
    let message = row.message.unwrap();
    assert_eq!(
        message,
        format!(
            "failed to apply: the container name {name} is held by a container Vigie did not \
             create (container {}, image {image}, created): remove it with `docker rm -f \
             {name}`, or rename it with `docker rename {name} NEW_NAME`, and Vigie creates \
             its own at the next round",
            &id[..12]
        )
    );
    assert!(!message.contains("409"), "{message}");
    // Once the name is free, the deploy goes on.
    docker(&["rm", "-f", &name]);
    v.wait_phase(&format!("{test}-preprod"), "Verifying", T);
    wait_serving(port, a);
    v.terminate();
    v.remove_containers();
}

#[test]
fn a_release_whose_health_check_retries_does_not_hold_another_releases_rollback() {
    if !docker_available() {
        return;
    }
    let demo = Demo::get();
    let (good, bad, unhealthy) = (demo.sha("good"), demo.sha("bad"), demo.sha("unhealthy"));
    let (v, port) = validated("alone", &vm_manifests("alone", demo, IMAGE_ARTIFACT));
    // A second code location in the same environment whose health check retries for
    // about 30 s (0.5 + 1 + 2 + 4 + 8 + 16 s) before it gives up.
    let slow_port = free_port();
    let slow = |sha: &str| {
        format!(
            r#"apiVersion: vigie.dev/v1alpha1
kind: CodeLocation
metadata: {{name: slow}}
spec:
  repo: {{url: "{url}"}}
  ci: {{webhook: {{}}}}
  artifact:
{IMAGE_ARTIFACT}
  container:
    ports: [{{containerPort: 8080, hostPort: {slow_port}}}]
  healthCheck: {{path: /health, expectedBody: ok, timeout: 2s, retries: 6, interval: 500ms}}
---
apiVersion: vigie.dev/v1alpha1
kind: Release
metadata: {{name: slow-preprod}}
spec: {{codeLocation: slow, environment: alone-preprod, revision: {sha}}}
"#,
            url = demo.url()
        )
    };
    v.write("slow.yaml", &slow(good));
    let phase = |name: &str| {
        v.state()
            .releases
            .get(&format!("default/{name}"))
            .map(|r| r.status.phase)
    };
    wait_for(T, "the slow release to verify", || {
        (phase("slow-preprod") == Some(vigie::api::Phase::Verifying)).then_some(())
    });
    assert_eq!(v.verdict("slow", good, "success"), 202);
    wait_for(T, "the slow release to be validated", || {
        (phase("slow-preprod") == Some(vigie::api::Phase::Validated)).then_some(())
    });
    v.write(
        "preprod.yaml",
        &release("alone", "preprod", Some(bad), port, ""),
    );
    v.wait_phase("alone-preprod", "Verifying", T);
    wait_serving(port, bad);
    // The slow release moves to a SHA that answers 500 on /health: once it serves,
    // its reconcile is inside the health check's retries.
    v.write("slow.yaml", &slow(unhealthy));
    wait_serving(slow_port, unhealthy);
    assert_eq!(v.verdict("app", bad, "failure"), 202);
    wait_for(T, "the red release to be rolled back", || {
        (phase("app-preprod") == Some(vigie::api::Phase::RolledBack)).then_some(())
    });
    // Rolled back while the other's health check still retries: it did not wait for it.
    let other = phase("slow-preprod");
    assert!(
        matches!(
            other,
            Some(vigie::api::Phase::Deploying | vigie::api::Phase::Verifying)
        ),
        "{other:?}: {}",
        v.log()
    );
    wait_serving(port, good);
    wait_for(T, "the slow release to be rolled back in its turn", || {
        (phase("slow-preprod") == Some(vigie::api::Phase::RolledBack)).then_some(())
    });
    wait_serving(slow_port, good);
}
