//! Manifests that would exhaust or hang Vigie: an alias bomb is refused in bounded
//! memory, symbolic link loops end the walk with a problem (and `vigie run` keeps
//! reloading and stopping), an unreadable file makes the set invalid under `vigie run`
//! as under `vigie validate`, and SIGTERM is obeyed while a round waits on an engine
//! that never answers. No Docker engine is needed.

mod docker;
mod skip;

use std::{
    net::TcpListener,
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use docker::{Vigie, http_get, wait_for};

/// A valid set whose engine is unreachable (`host`: the Docker host).
fn manifests(host: &str) -> String {
    format!(
        r#"apiVersion: vigie.dev/v1alpha1
kind: Environment
metadata: {{name: preprod}}
spec:
  backend: {{docker: {{host: "{host}"}}}}
---
apiVersion: vigie.dev/v1alpha1
kind: CodeLocation
metadata: {{name: app}}
spec:
  repo: {{url: "https://git.example/app.git"}}
  ci: {{webhook: {{}}}}
  artifact: {{image: {{template: "app:{{sha}}"}}}}
---
apiVersion: vigie.dev/v1alpha1
kind: Release
metadata: {{name: app-preprod}}
spec:
  codeLocation: app
  environment: preprod
  revision: "1111111111111111111111111111111111111111"
"#
    )
}

const UNREACHABLE: &str = "tcp://127.0.0.1:9";

/// A list of 10,000 items aliased 1,000 times: 34 KB of YAML, 10 million nodes.
fn alias_bomb() -> String {
    let list = vec!["x"; 10_000].join(", ");
    let aliases = vec!["*a"; 1_000].join(", ");
    format!(
        "apiVersion: vigie.dev/v1alpha1\nkind: Environment\nmetadata: {{name: bomb}}\n\
         spec:\n  backend: {{docker: {{}}}}\n  a: &a [{list}]\n  b: [{aliases}]\n"
    )
}

/// `vigie validate DIR` with at most 1 GiB of address space; waits at most 60 s.
fn validate_bounded(dir: &Path) -> (Option<i32>, String) {
    let mut child = Command::new("prlimit")
        .arg(format!("--as={}", 1u64 << 30))
        .arg("--")
        .arg(env!("CARGO_BIN_EXE_vigie"))
        .arg("validate")
        .arg(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("prlimit (util-linux) runs");
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(60) {
        if child.try_wait().unwrap().is_some() {
            let out = child.wait_with_output().unwrap();
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            return (out.status.code(), text);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
    (None, "still running after 60 s".into())
}

fn fresh_dir(name: &str) -> std::path::PathBuf {
    let dir = docker::root().join("target/e2e").join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn an_alias_bomb_is_refused_in_bounded_memory() {
    let dir = fresh_dir("hostile-yaml-bomb");
    std::fs::write(dir.join("app.yaml"), manifests(UNREACHABLE)).unwrap();
    let bomb = alias_bomb();
    assert!(bomb.len() < 40_000);
    std::fs::write(dir.join("bomb.yaml"), &bomb).unwrap();
    let (code, text) = validate_bounded(&dir);
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains(
            "bomb.yaml: document 1: expands to more than 2 MiB once its aliases are expanded"
        ),
        "{text}"
    );
}

#[test]
fn symbolic_link_loops_end_the_walk_with_a_problem() {
    let dir = fresh_dir("hostile-symlink-validate");
    std::fs::write(dir.join("app.yaml"), manifests(UNREACHABLE)).unwrap();
    std::fs::create_dir(dir.join("sub")).unwrap();
    // Two loops at the top and one below: an exponential walk without loop detection.
    std::os::unix::fs::symlink(".", dir.join("a")).unwrap();
    std::os::unix::fs::symlink(".", dir.join("b")).unwrap();
    std::os::unix::fs::symlink("..", dir.join("sub/up")).unwrap();
    let (code, text) = validate_bounded(&dir);
    assert_eq!(code, Some(1), "{text}");
    for link in ["a", "b", "sub/up"] {
        let line = format!(
            "{}: symbolic link loop: leads back to {}",
            dir.join(link).display(),
            dir.display()
        );
        assert!(text.contains(&line), "{line} in {text}");
    }
    // A link to a directory outside the tree is followed, once.
    let outside = fresh_dir("hostile-symlink-outside");
    std::fs::write(outside.join("more.yaml"), "").unwrap();
    for link in ["a", "b", "sub/up"] {
        std::fs::remove_file(dir.join(link)).unwrap();
    }
    std::os::unix::fs::symlink(&outside, dir.join("x")).unwrap();
    std::os::unix::fs::symlink(&outside, dir.join("y")).unwrap();
    let (code, text) = validate_bounded(&dir);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("2 files:"), "{text}");
}

#[test]
fn vigie_run_reports_link_loops_keeps_reloading_and_stops_on_sigterm() {
    let mut vigie = Vigie::new("hostile-symlink-run", &[]);
    vigie.write("app.yaml", &manifests(UNREACHABLE));
    vigie.start();
    std::os::unix::fs::symlink(".", vigie.manifests.join("a")).unwrap();
    std::os::unix::fs::symlink(".", vigie.manifests.join("b")).unwrap();
    let problems = wait_for(Duration::from_secs(10), "the loops to be reported", || {
        Some(vigie.state().manifest_problems).filter(|p| p.len() == 2)
    });
    assert!(
        problems
            .iter()
            .all(|p| p.contains("symbolic link loop: leads back to")),
        "{problems:?}"
    );
    let (status, _) = http_get(vigie.port, "/healthz").expect("/healthz answers");
    assert_eq!(status, 200);
    // Later changes are still taken.
    std::fs::remove_file(vigie.manifests.join("a")).unwrap();
    std::fs::remove_file(vigie.manifests.join("b")).unwrap();
    vigie.write(
        "broken.yaml",
        "apiVersion: vigie.dev/v1alpha1\nkind: Release\n",
    );
    let problems = wait_for(Duration::from_secs(10), "the new problem", || {
        Some(vigie.state().manifest_problems)
            .filter(|p| p.iter().any(|p| p.contains("broken.yaml")))
    });
    assert!(!problems.iter().any(|p| p.contains("loop")), "{problems:?}");
    let status = vigie.terminate_within(Duration::from_secs(15));
    assert!(status.is_some_and(|s| s.success()), "{}", vigie.log());
}

#[test]
fn an_unreadable_file_makes_the_set_invalid_under_vigie_run() {
    let mut vigie = Vigie::new("hostile-unreadable-run", &[]);
    vigie.write("app.yaml", &manifests(UNREACHABLE));
    vigie.start();
    let valid = |v: &Vigie| {
        http_get(v.port, "/metrics")
            .map(|(_, m)| m)
            .unwrap_or_default()
            .lines()
            .find(|l| l.starts_with("vigie_manifests_valid "))
            .map(str::to_owned)
    };
    assert_eq!(valid(&vigie).as_deref(), Some("vigie_manifests_valid 1"));
    std::fs::write(vigie.manifests.join("latin1.yaml"), b"kind: caf\xe9\n").unwrap();
    let problems = wait_for(
        Duration::from_secs(10),
        "the problem to be recorded",
        || Some(vigie.state().manifest_problems).filter(|p| !p.is_empty()),
    );
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(
        problems[0].ends_with("latin1.yaml: cannot read: not UTF-8 (invalid byte at offset 9); manifests are UTF-8 text"),
        "{problems:?}"
    );
    assert_eq!(valid(&vigie).as_deref(), Some("vigie_manifests_valid 0"));
    let out = Command::new(env!("CARGO_BIN_EXE_vigie"))
        .args(["status", "--state"])
        .arg(&vigie.state)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("The manifests are invalid"), "{text}");
    assert!(
        text.contains("latin1.yaml: cannot read: not UTF-8"),
        "{text}"
    );
    // Removed: the set is valid again.
    std::fs::remove_file(vigie.manifests.join("latin1.yaml")).unwrap();
    wait_for(Duration::from_secs(10), "the problem to clear", || {
        vigie.state().manifest_problems.is_empty().then_some(())
    });
    assert_eq!(valid(&vigie).as_deref(), Some("vigie_manifests_valid 1"));
    vigie.terminate();
}

#[test]
fn sigterm_is_obeyed_while_a_reconcile_waits_on_an_engine_that_never_answers() {
    // An "engine" that accepts connections and never answers: each call waits for the
    // client's timeout (two minutes).
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let held = std::thread::spawn(move || {
        let mut streams = Vec::new();
        for stream in silent.incoming().take(64) {
            streams.push(stream);
        }
    });
    let mut vigie = Vigie::new("hostile-silent-engine", &[]);
    vigie.write("app.yaml", &manifests(&format!("tcp://127.0.0.1:{port}")));
    vigie.spawn();
    // The first reconcile is under way, held by the engine.
    std::thread::sleep(Duration::from_secs(2));
    let (status, _) = http_get(vigie.port, "/readyz").expect("/readyz answers");
    assert_eq!(status, 503, "the first reconcile has not ended");
    let exited = vigie.terminate_within(Duration::from_secs(20));
    assert!(
        exited.is_some(),
        "still running 20 s after SIGTERM: {}",
        vigie.log()
    );
    assert!(
        vigie
            .log()
            .contains("stopping: waiting for the reconciles in progress"),
        "{}",
        vigie.log()
    );
    drop(held);
}
