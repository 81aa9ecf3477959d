//! Pre-deploy hooks on the real engine: one-off containers with the image, command,
//! mounts, environment and timeout of the spec. One succeeds and leaves its backup
//! where its output says, one fails, one hangs and is killed at its timeout, one's image
//! is not there; then a post-deploy smoke test reaches the new container on localhost.

mod docker;
mod skip;

use std::{collections::BTreeMap, time::Duration};

use docker::{Demo, docker_available, wait_for};
use vigie::{
    api::{
        code_location::{Artifact, ContainerSettings, ImageArtifact},
        common::PortMapping,
        environment::{DockerBackend as DockerSpec, Hook, Hooks},
    },
    backend::{Backend, Workload, docker::DockerBackend},
    lifecycle::{HookOutcome, HookRun, WorkloadTarget},
};

fn workload() -> Workload {
    Workload {
        environment: "hooks-prod".into(),
        code_location: "app".into(),
        release: "app-prod".into(),
        repo_url: Demo::get().url(),
        artifact: Artifact::Image(ImageArtifact {
            template: "vigie-demo:{sha}".into(),
        }),
        container: ContainerSettings {
            ports: vec![PortMapping {
                container_port: 8080,
                host_port: None,
                host_ip: None,
                protocol: vigie::api::common::Protocol::Tcp,
            }],
            ..ContainerSettings::default()
        },
        health_check: None,
        project: "vigie-hooks".into(),
        instance: "hooks-test".into(),
        deployment: None,
        owner: None,
        dagster: None,
    }
}

fn hook(yaml: &str) -> Hook {
    serde_norway::from_str(yaml).unwrap()
}

fn names(prefix: &str) -> Vec<(String, String)> {
    docker::Vigie::containers("hooks-prod")
        .into_iter()
        .filter(|(n, _)| n.starts_with(prefix))
        .collect()
}

/// Asks for the runs until none is running (at most a minute).
async fn settle(
    backend: &DockerBackend,
    w: &Workload,
    runs: &[HookRun],
    hooks: &Hooks,
) -> BTreeMap<String, HookOutcome> {
    let start = std::time::Instant::now();
    loop {
        let o = backend.run_hooks(w, runs, hooks).await.unwrap();
        if !o.values().any(|o| *o == HookOutcome::Running) {
            return o;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "hooks still running: {o:?}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

fn remove_hook_runs() {
    for (name, _) in names("vigie-hook-") {
        let _ = std::process::Command::new("docker")
            .args(["rm", "-f", &name])
            .output();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(
    clippy::too_many_lines,
    reason = "one story: the pre-deploy hooks, then a smoke test"
)]
async fn hooks_succeed_fail_time_out_and_smoke_test_as_one_off_containers() {
    if !docker_available() {
        return;
    }
    let demo = Demo::get();
    let (a, b) = (demo.sha("good"), demo.sha("fixed"));
    let dir = docker::root().join("target/e2e/hooks");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("backups")).unwrap();
    let w = workload();
    let backend = DockerBackend::connect(&DockerSpec::default()).unwrap();
    backend
        .prune("hooks-test", "hooks-prod", &[])
        .await
        .unwrap();
    remove_hook_runs();
    let pre = vec![
        hook(&format!(
            r#"{{name: backup, image: "vigie-demo:latest", command: [/demo-app, hook, "1", "0"],
               env: [{{name: LABEL, value: nightly}}],
               mounts: [{{source: "{}", target: /backups}}], timeout: 30s,
               output: "/backups/{{environment}}-{{shortSha}}-{{time}}.txt"}}"#,
            dir.join("backups").display()
        )),
        hook(
            r#"{name: migrate, image: "vigie-demo:latest", command: [/demo-app, hook, "0", "3"], timeout: 30s}"#,
        ),
        hook(
            r#"{name: stuck, image: "vigie-demo:latest", command: [/demo-app, hook, "600", "0"], timeout: 2s}"#,
        ),
        hook(r#"{name: nowhere, image: "vigie-no-such-image:1", command: [/x], timeout: 30s}"#),
    ];
    // A smoke test: the demo app's own health probe, against localhost.
    let post = vec![hook(
        r#"{name: smoke, image: "vigie-demo:latest", command: [/demo-app, check], timeout: 30s}"#,
    )];
    let hooks = Hooks {
        pre_deploy: pre.clone(),
        post_deploy: post,
    };
    let at = jiff::Timestamp::now();
    let runs: Vec<HookRun> = pre
        .iter()
        .map(|h| HookRun {
            name: h.name.clone(),
            sha: b.parse().unwrap(),
            previous: Some(a.parse().unwrap()),
            attempt: at,
            after_deploy: false,
        })
        .collect();

    let first = backend.run_hooks(&w, &runs, &hooks).await.unwrap();
    assert_eq!(first["backup"], HookOutcome::Running);
    assert_eq!(first["stuck"], HookOutcome::Running);
    let HookOutcome::Failed { reason } = &first["nowhere"] else {
        panic!("an image that is not there cannot start: {first:?}");
    };
    assert!(reason.contains("vigie-no-such-image:1"), "{reason}");

    let outcomes = settle(&backend, &w, &runs, &hooks).await;
    let HookOutcome::Succeeded {
        output: Some(output),
    } = &outcomes["backup"]
    else {
        panic!("{outcomes:?}");
    };
    let file = output.strip_prefix("/backups/").unwrap();
    assert!(
        file.starts_with(&format!("hooks-prod-{}-", &b[..7])),
        "{output}"
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("backups").join(file)).unwrap(),
        format!("backup of {a} before {b}\n"),
        "VIGIE_SHA and VIGIE_PREVIOUS_SHA reach the hook, its mount is the host's"
    );
    assert_eq!(
        outcomes["migrate"],
        HookOutcome::Failed {
            reason: "exit status 3: hook done after 0s, exit 3".into()
        }
    );
    assert_eq!(
        outcomes["stuck"],
        HookOutcome::Failed {
            reason: "timed out after 2s".into()
        }
    );
    let stuck = format!("vigie-hook-hooks-prod-app-stuck-{}-", &b[..7]);
    wait_for(
        Duration::from_secs(30),
        "the stuck hook to be killed",
        || {
            names(&stuck)
                .iter()
                .all(|(_, state)| state == "exited")
                .then_some(())
        },
    );

    // Asked again, each run answers from its container: nothing runs twice.
    let again = backend.run_hooks(&w, &runs, &hooks).await.unwrap();
    assert_eq!(again["backup"], outcomes["backup"]);
    assert_eq!(again["migrate"], outcomes["migrate"]);
    assert_eq!(names("vigie-hook-hooks-prod-app-backup-").len(), 1);

    // Once B runs, a post-deploy hook shares its network: the app answers on localhost.
    backend
        .apply(
            &w,
            &WorkloadTarget {
                sha: b.parse().unwrap(),
                keep: None,
            },
        )
        .await
        .unwrap();
    let smoke = [HookRun {
        name: "smoke".into(),
        after_deploy: true,
        ..runs[0].clone()
    }];
    let outcome = settle(&backend, &w, &smoke, &hooks).await["smoke"].clone();
    assert_eq!(outcome, HookOutcome::Succeeded { output: None });
    backend
        .prune("hooks-test", "hooks-prod", &[])
        .await
        .unwrap();
    remove_hook_runs();
}
