//! `make bench`: figures for the standalone mode on the local Docker engine, each
//! against a baseline measured in the same run. Prints; asserts nothing.
//!
//! (a) manifest change → new SHA serving, against a raw `docker stop`/`rm`/`run`
//!     of the same image (target: ≤ 1.2×);
//! (b) red webhook → previous SHA serving again (target: ≤ 2 s; the scripts this
//!     replaces poll CI every 10 s and redeploy in about 40 s);
//! (c) resident memory of `vigie run` managing 50 releases idle (target: ≤ 50 MiB),
//!     against the same process managing none.

#[path = "../tests/docker/mod.rs"]
mod docker;
#[path = "../tests/skip/mod.rs"]
mod skip;

use std::{
    fmt::Write as _,
    process::Command,
    time::{Duration, Instant},
};

use docker::{Demo, IMAGE_ARTIFACT, Vigie, free_port, http_get, release, vm_manifests, wait_for};

const T: Duration = Duration::from_secs(120);
/// Fifty releases start at once: give them longer.
const FIFTY: Duration = Duration::from_secs(300);

fn serves(port: u16, sha: &str) -> bool {
    http_get(port, "/").is_some_and(|(s, b)| s == 200 && b.contains(sha))
}

fn time_until_serving(port: u16, sha: &str, start: Instant) -> Duration {
    wait_until(|| serves(port, sha))
        .unwrap_or_else(|()| panic!("{} never served on port {port}", &sha[..7]));
    start.elapsed()
}

fn wait_until(mut f: impl FnMut() -> bool) -> Result<(), ()> {
    let start = Instant::now();
    while !f() {
        if start.elapsed() > T {
            return Err(());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn docker(args: &[&str]) {
    let out = Command::new("docker").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn secs(d: Duration) -> String {
    format!("{:.3} s", d.as_secs_f64())
}

/// (a) baseline: the raw commands the VM scripts would run. A client polls from the
/// moment the change starts, exactly as for Vigie, so that both figures include the
/// same port handover (connections caught by the old container's proxy as it goes).
fn raw_redeploy(shas: &[&str], rounds: usize) -> Vec<Duration> {
    let port = free_port();
    let name = "vigie-bench-raw";
    let _ = Command::new("docker").args(["rm", "-f", name]).output();
    let publish = format!("127.0.0.1:{port}:8080");
    docker(&[
        "run",
        "-d",
        "--name",
        name,
        "-p",
        &publish,
        &format!("vigie-demo:{}", shas[0]),
    ]);
    wait_until(|| serves(port, shas[0])).expect("the first raw container serves");
    let mut times = Vec::new();
    for i in 1..=rounds {
        let sha = shas[i % shas.len()].to_owned();
        let start = Instant::now();
        let publish = publish.clone();
        let redeploy = std::thread::spawn(move || {
            docker(&["stop", name]);
            docker(&["rm", name]);
            docker(&[
                "run",
                "-d",
                "--name",
                name,
                "-p",
                &publish,
                "-e",
                &format!("VIGIE_SHA={sha}"),
                &format!("vigie-demo:{sha}"),
            ]);
        });
        times.push(time_until_serving(port, shas[i % shas.len()], start));
        redeploy.join().unwrap();
    }
    docker(&["rm", "-f", name]);
    times
}

/// (a) Vigie: a manifest change, until the new SHA serves.
fn vigie_redeploy(shas: &[&str], rounds: usize) -> Vec<Duration> {
    let demo = Demo::get();
    let port = free_port();
    let mut v = Vigie::new("bench-deploy", &["bd-preprod", "bd-prod"]);
    v.write("base.yaml", &vm_manifests("bd", demo, IMAGE_ARTIFACT));
    v.write(
        "preprod.yaml",
        &release("bd", "preprod", Some(shas[0]), port, ""),
    );
    v.start();
    v.wait_phase("bd-preprod", "Verifying", T);
    v.verdict("app", shas[0], "success");
    v.wait_phase("bd-preprod", "Validated", T);
    let mut times = Vec::new();
    for i in 1..=rounds {
        let sha = shas[i % shas.len()];
        let start = Instant::now();
        v.write(
            "preprod.yaml",
            &release("bd", "preprod", Some(sha), port, ""),
        );
        times.push(time_until_serving(port, sha, start));
        // Validated again (a distinct delivery each round), so the next deploy starts clean.
        let body = format!(
            r#"{{"codeLocation":"app","sha":"{sha}","state":"success","url":"https://ci.example/{i}"}}"#
        );
        v.post(body.as_bytes());
        v.wait_phase("bd-preprod", "Validated", T);
    }
    times
}

/// (b) red verdict → previous SHA serving again.
fn red_to_rollback(round: usize) -> Vec<Duration> {
    let demo = Demo::get();
    let good = demo.sha("good");
    let port = free_port();
    let prefix = format!("br{round}");
    let mut v = Vigie::new(
        &format!("bench-rollback-{round}"),
        &[&format!("{prefix}-preprod"), &format!("{prefix}-prod")],
    );
    v.write("base.yaml", &vm_manifests(&prefix, demo, IMAGE_ARTIFACT));
    v.write(
        "preprod.yaml",
        &release(&prefix, "preprod", Some(good), port, ""),
    );
    v.start();
    let env = format!("{prefix}-preprod");
    v.wait_phase(&env, "Verifying", T);
    v.verdict("app", good, "success");
    v.wait_phase(&env, "Validated", T);
    let mut times = Vec::new();
    for bad in [demo.sha("bad"), demo.sha("fixed")] {
        v.write(
            "preprod.yaml",
            &release(&prefix, "preprod", Some(bad), port, ""),
        );
        v.wait_phase(&env, "Verifying", T);
        let start = Instant::now();
        v.verdict("app", bad, "failure");
        times.push(time_until_serving(port, good, start));
        v.wait_phase(&env, "RolledBack", T);
    }
    times
}

#[allow(
    clippy::cast_precision_loss,
    reason = "a memory figure in MiB; exact to far below its precision"
)]
fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
        .unwrap()
}

/// (c) resident memory with `n` releases, all validated, after `idle` of nothing.
fn idle_memory(n: usize, idle: Duration) -> u64 {
    let demo = Demo::get();
    let good = demo.sha("good");
    let test = format!("bench-memory-{n}");
    let mut v = Vigie::new(&test, &["bm"]);
    let mut yaml = String::from(
        "apiVersion: vigie.dev/v1alpha1\nkind: Environment\nmetadata: {name: bm}\nspec:\n  backend: {docker: {}}\n",
    );
    for i in 0..n {
        let port = free_port();
        let _ = write!(
            yaml,
            "---\napiVersion: vigie.dev/v1alpha1\nkind: CodeLocation\nmetadata: {{name: app{i}}}\nspec:\n  repo: {{url: \"{url}\"}}\n  ci: {{webhook: {{}}}}\n  artifact: {{image: {{template: \"vigie-demo:{{sha}}\"}}}}\n  container: {{ports: [{{containerPort: 8080, hostPort: {port}}}]}}\n  healthCheck: {{path: /health, expectedBody: ok, timeout: 2s, retries: 5, interval: 500ms}}\n---\napiVersion: vigie.dev/v1alpha1\nkind: Release\nmetadata: {{name: app{i}-bm}}\nspec: {{codeLocation: app{i}, environment: bm, revision: {good}}}\n",
            url = demo.url()
        );
    }
    v.write("all.yaml", &yaml);
    v.start();
    for i in 0..n {
        wait_for(FIFTY, "a release to verify", || {
            v.state()
                .releases
                .get(&format!("default/app{i}-bm"))
                .filter(|r| r.status.phase == vigie::api::Phase::Verifying)
                .map(|_| ())
        });
        v.verdict(&format!("app{i}"), good, "success");
    }
    wait_for(FIFTY, "every release to be validated", || {
        let state = v.state();
        (state.releases.len() == n
            && state
                .releases
                .values()
                .all(|r| r.status.phase == vigie::api::Phase::Validated))
        .then_some(())
    });
    std::thread::sleep(idle);
    let pid = v.pid().expect("vigie runs");
    let rss = rss_kib(pid);
    drop(v);
    rss
}

fn main() {
    if !docker::docker_available() {
        eprintln!("bench: no Docker engine: run `make docker` first");
        std::process::exit(1);
    }
    let demo = Demo::get();
    let shas = [demo.sha("good"), demo.sha("fixed")];
    let rounds = 5;

    println!("Vigie standalone benchmarks (local Docker engine, {rounds} rounds where repeated)\n");
    let raw = median(raw_redeploy(&shas, rounds));
    let ours = median(vigie_redeploy(&shas, rounds));
    println!("(a) new SHA serving after a change");
    println!(
        "    raw docker stop/rm/run of the same image : {}",
        secs(raw)
    );
    println!(
        "    vigie run, manifest change → serving      : {}",
        secs(ours)
    );
    println!(
        "    ratio                                     : {:.2}× (target ≤ 1.2×)",
        ours.as_secs_f64() / raw.as_secs_f64()
    );

    let mut rollbacks = Vec::new();
    for round in 0..3 {
        rollbacks.extend(red_to_rollback(round));
    }
    let worst = *rollbacks.iter().max().unwrap();
    println!(
        "\n(b) red webhook → previous SHA serving again ({} samples)",
        rollbacks.len()
    );
    println!(
        "    median {} · worst {} (target ≤ 2 s; the scripts replaced: 10 s CI poll + ~40 s redeploy)",
        secs(median(rollbacks)),
        secs(worst)
    );

    let idle = Duration::from_secs(10);
    let empty = idle_memory(0, idle);
    let fifty = idle_memory(50, idle);
    println!(
        "\n(c) resident memory of vigie run, idle {}s",
        idle.as_secs()
    );
    println!("    0 releases  : {:.1} MiB", mib(empty));
    println!("    50 releases : {:.1} MiB (target ≤ 50 MiB)", mib(fifty));
}
