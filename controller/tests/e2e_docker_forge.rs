//! End to end on the real Docker engine: `vigie run` deploys, validates, turns red and
//! rolls back while reporting each step to local stand-ins of GitHub and GitLab, which
//! also answer its CI polls. A crash mid-verification creates no second deployment; a
//! forge that rate-limits, fails and answers slowly does not delay the rollback.

mod docker;
mod forges;
mod skip;

use std::time::{Duration, Instant};

use docker::{
    Demo, IMAGE_ARTIFACT, Vigie, docker_available, free_port, http_get, release, wait_for,
};
use forges::{Fault, Forge, GITHUB_TOKEN, GITLAB_TOKEN};

const T: Duration = Duration::from_secs(90);

fn serving(port: u16, sha: &str) {
    wait_for(T, "serving", || {
        http_get(port, "/").filter(|(s, b)| *s == 200 && b.contains(sha))
    });
}

/// The demo's manifests with `ci` and the preprod Environment's `url`.
fn manifests(prefix: &str, demo: &Demo, ci: &str, url: &str) -> String {
    docker::vm_manifests(prefix, demo, IMAGE_ARTIFACT)
        .replace("  ci: {webhook: {}}", ci)
        .replace(
            &format!("metadata: {{name: {prefix}-preprod}}\nspec:\n"),
            &format!("metadata: {{name: {prefix}-preprod}}\nspec:\n  url: {url}\n"),
        )
}

#[test]
#[allow(clippy::too_many_lines, reason = "one scenario, read top to bottom")]
fn github_shows_deploy_validate_red_rollback_across_a_crash() {
    if !docker_available() {
        return;
    }
    let demo = Demo::get();
    let (a, b) = (demo.sha("good"), demo.sha("bad"));
    let forge = Forge::start();
    let port = free_port();
    let mut v = Vigie::new("ghreport", &["ghreport-preprod", "ghreport-prod"]);
    std::fs::write(v.dir.join("gh-token"), format!("{GITHUB_TOKEN}\n")).unwrap();
    let ci = format!(
        "  ci: {{github: {{repository: octo/app, apiUrl: \"{}\", token: {{file: \"{}\"}}, report: {{commitStatus: true}}}}, requiredChecks: [test], pollInterval: 5s}}",
        forge.github_api(),
        v.dir.join("gh-token").display()
    );
    let url = format!("http://127.0.0.1:{port}");
    v.write("base.yaml", &manifests("ghreport", demo, &ci, &url));
    v.extra_args = vec!["--public-url".into(), "https://vigie.example.test/".into()];
    let env = "ghreport-preprod";

    // Deploy A, validate it.
    v.write(
        "preprod.yaml",
        &release("ghreport", "preprod", Some(a), port, ""),
    );
    v.start();
    v.wait_phase(env, "Verifying", T);
    forge.wait(T, "A in progress", |f| f.states(env, a) == ["in_progress"]);
    forge.set_ci(a, "success");
    v.wait_phase(env, "Validated", T);
    forge.wait(T, "A success", |f| {
        f.states(env, a) == ["in_progress", "success"]
    });
    let latest = forge.latest_status(env, a).unwrap();
    assert_eq!(latest["environment_url"], url.as_str());
    assert_eq!(
        latest["log_url"],
        "https://vigie.example.test/releases/default/app-preprod"
    );

    // Deploy B; Vigie crashes while B is verified, and starts again.
    v.write(
        "preprod.yaml",
        &release("ghreport", "preprod", Some(b), port, ""),
    );
    v.wait_phase(env, "Verifying", T);
    forge.wait(T, "B in progress", |f| f.states(env, b) == ["in_progress"]);
    v.kill();
    v.start();
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(v.row(env).unwrap().phase, "Verifying");

    // B turns red while the forge refuses, rate-limits and crawls: the rollback does
    // not wait for it, and the forge is told once it answers again.
    forge.fail([
        Fault::Slow(Duration::from_secs(8)),
        Fault::Status(503, None),
        Fault::Status(429, Some(3)),
        Fault::Exhausted(2),
    ]);
    let red = Instant::now();
    forge.set_ci(b, "failure");
    v.wait_phase(env, "RolledBack", T);
    serving(port, a);
    let took = red.elapsed();
    assert!(
        took < Duration::from_secs(30),
        "the rollback took {took:?} (CI polled every 5 s)"
    );
    let context = format!("vigie/{env}");
    forge.wait(T, "B failure", |f| {
        f.states(env, b) == ["in_progress", "failure"]
            && f.commit_states(b, &context) == ["pending", "failure"]
    });

    // One Deployment per (environment, SHA), the restart notwithstanding.
    assert_eq!(forge.deployments(env, a).len(), 1);
    assert_eq!(forge.deployments(env, b).len(), 1);
    assert_eq!(forge.states(env, a), ["in_progress", "success"]);
    assert_eq!(
        forge.commit_states(b, &format!("vigie/{env}")),
        ["pending", "failure"]
    );
    assert_eq!(
        forge.commit_states(a, &format!("vigie/{env}")),
        ["pending", "success"]
    );
    let log = v.log();
    assert!(
        log.contains("reported to the forge"),
        "the reports are logged"
    );
    let metrics = http_get(v.port, "/metrics").unwrap().1;
    assert!(
        metrics.contains("vigie_forge_reports_total{provider=\"github\",outcome=\"retried\"}"),
        "{metrics}"
    );
}

#[test]
fn gitlab_shows_deploy_validate_red_rollback() {
    if !docker_available() {
        return;
    }
    let demo = Demo::get();
    let (a, b) = (demo.sha("good"), demo.sha("bad"));
    let forge = Forge::start();
    let port = free_port();
    let mut v = Vigie::new("glreport", &["glreport-preprod", "glreport-prod"]);
    std::fs::write(v.dir.join("gl-token"), GITLAB_TOKEN).unwrap();
    let ci = format!(
        "  ci: {{gitlab: {{project: data/app, apiUrl: \"{}\", token: {{file: \"{}\"}}, report: {{}}}}, pollInterval: 5s}}",
        forge.gitlab_api(),
        v.dir.join("gl-token").display()
    );
    v.write(
        "base.yaml",
        &manifests("glreport", demo, &ci, &format!("http://127.0.0.1:{port}")),
    );
    let env = "glreport-preprod";
    v.write(
        "preprod.yaml",
        &release("glreport", "preprod", Some(a), port, ""),
    );
    v.start();
    v.wait_phase(env, "Verifying", T);
    forge.wait(T, "A running", |f| f.gitlab_states(env, a) == [["running"]]);
    forge.set_ci(a, "success");
    v.wait_phase(env, "Validated", T);
    forge.wait(T, "A success", |f| {
        f.gitlab_states(env, a) == [["running", "success"]]
    });
    v.write(
        "preprod.yaml",
        &release("glreport", "preprod", Some(b), port, ""),
    );
    v.wait_phase(env, "Verifying", T);
    forge.wait(T, "B running", |f| f.gitlab_states(env, b) == [["running"]]);
    forge.set_ci(b, "failed");
    v.wait_phase(env, "RolledBack", T);
    serving(port, a);
    forge.wait(T, "B failed", |f| {
        f.gitlab_states(env, b) == [["running", "failed"]]
    });
    assert_eq!(forge.gitlab_states(env, a), [["running", "success"]]);
    assert!(
        forge
            .requests("/deployments")
            .iter()
            .all(|q| q.status < 400),
        "every request was one GitLab accepts"
    );
}
