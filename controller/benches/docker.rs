//! `make bench`: figures for the standalone mode on the local Docker engine, each
//! against a baseline measured in the same run. Prints; asserts nothing.
//!
//! (a) manifest change → new SHA serving, against a raw `docker stop`/`rm`/`run`
//!     of the same image (target: ≤ 1.0×);
//! (b) red webhook → previous SHA serving again, against the raw `docker stop` of the
//!     bad container and `docker start` of the kept one, timed by the same client
//!     (target: ≤ 1.2×), with where Vigie's time goes, read from its debug log;
//! (c) 50 Releases deploying at once against 50 raw `docker run` in parallel (target:
//!     ≤ 1.5×), and one Release's rollback while the 49 others deploy, against the same
//!     rollback alone (target: ≤ 1.2×);
//! (d) resident memory of `vigie run` managing 50 releases idle (target: ≤ 50 MiB),
//!     against the same process managing none.
//!
//! `cargo bench --bench docker -- rollback fifty` runs only those parts (`deploy`,
//! `rollback`, `fifty`, `memory`).

#![allow(
    clippy::too_many_lines,
    reason = "a benchmark script: one story per part"
)]

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

fn wait_until(f: impl FnMut() -> bool) -> Result<(), ()> {
    wait_until_within(T, f)
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

/// (b) baseline: the same rollback by hand. The good SHA's container is kept stopped
/// (as Vigie keeps it); from the same instant, `docker stop` the bad one and `docker
/// start` the good one, while the client polls.
fn raw_rollback(rounds: usize) -> Vec<Duration> {
    let demo = Demo::get();
    let (good, bad) = (demo.sha("good"), demo.sha("bad"));
    let port = free_port();
    let publish = format!("127.0.0.1:{port}:8080");
    let (kept, running) = ("vigie-bench-raw-good", "vigie-bench-raw-bad");
    for (name, sha) in [(kept, good), (running, bad)] {
        let _ = Command::new("docker").args(["rm", "-f", name]).output();
        docker(&[
            "create",
            "--name",
            name,
            "-p",
            &publish,
            "-e",
            &format!("VIGIE_SHA={sha}"),
            &format!("vigie-demo:{sha}"),
        ]);
    }
    let mut times = Vec::new();
    for _ in 0..rounds {
        docker(&["stop", kept]);
        docker(&["start", running]);
        wait_until(|| serves(port, bad)).expect("the bad raw container serves");
        let start = Instant::now();
        let switch = std::thread::spawn(move || {
            docker(&["stop", running]);
            docker(&["start", kept]);
        });
        times.push(time_until_serving(port, good, start));
        switch.join().unwrap();
    }
    docker(&["rm", "-f", kept, running]);
    times
}

/// One rollback timed from the client: when the red verdict left, and how long until
/// the previous SHA served.
struct Sample {
    sent: jiff::Timestamp,
    took: Duration,
}

/// (b) red verdict → previous SHA serving again; the samples, and Vigie's log.
fn red_to_rollback(round: usize) -> (Vec<Sample>, String) {
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
    let mut samples = Vec::new();
    for bad in [demo.sha("bad"), demo.sha("fixed")] {
        v.write(
            "preprod.yaml",
            &release(&prefix, "preprod", Some(bad), port, ""),
        );
        v.wait_phase(&env, "Verifying", T);
        // Serving, and its first health check passed: the verdict finds it settled.
        wait_until(|| serves(port, bad)).expect("the bad SHA serves");
        std::thread::sleep(Duration::from_millis(300));
        let (sent, start) = (jiff::Timestamp::now(), Instant::now());
        v.verdict("app", bad, "failure");
        samples.push(Sample {
            sent,
            took: time_until_serving(port, good, start),
        });
        v.wait_phase(&env, "RolledBack", T);
    }
    (samples, v.log())
}

/// Where one rollback's time went, from the client's clock and Vigie's debug lines
/// (same machine, same clock): the webhook, the wait for a reconcile, each step of the
/// pipeline, the engine's calls within `act`, and the engine until the port answers.
fn trace(sample: &Sample, log: &str) -> Option<Vec<(String, Duration)>> {
    let lines: Vec<String> = log.lines().map(plain).collect();
    let at =
        |line: &str| -> Option<jiff::Timestamp> { line.split_whitespace().next()?.parse().ok() };
    let after = |from: usize, what: &str| {
        lines
            .iter()
            .enumerate()
            .skip(from)
            .find(|(_, l)| l.contains(what))
            .map(|(i, l)| (i, l.clone()))
    };
    let since = |a: jiff::Timestamp, b: jiff::Timestamp| b.duration_since(a).unsigned_abs();
    let first = lines.iter().position(|l| {
        l.contains("CI verdict received")
            && l.contains("Failure")
            && at(l).is_some_and(|t| t >= sample.sent)
    })?;
    let received = at(&lines[first])?;
    let (i, applied) = after(first, " applied ")?;
    let (_, timed) = after(i, "transition timed")?;
    let steps = laps(&timed);
    let total: Duration = steps.iter().map(|(_, d)| *d).sum();
    let started = at(&timed)?
        .checked_sub(jiff::SignedDuration::try_from(total).ok()?)
        .ok()?;
    let mut out = vec![
        (
            "webhook: verified, recorded, 202".to_owned(),
            since(sample.sent, received),
        ),
        (
            "until the reconcile starts".to_owned(),
            since(received, started),
        ),
    ];
    for (step, took) in steps {
        if step == "act" {
            for (call, t) in laps(&applied) {
                out.push((format!("act: engine {call}"), t));
            }
            continue;
        }
        out.push((step, took));
    }
    let serving = sample.took.checked_sub(since(sample.sent, at(&applied)?))?;
    out.push(("after the start, until the port serves".to_owned(), serving));
    Some(out)
}

/// A log line without its colours.
fn plain(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
            continue;
        }
        out.push(c);
    }
    out
}

/// The `steps=observe 1.2 ms · record 3.4 ms` of a debug line.
fn laps(line: &str) -> Vec<(String, Duration)> {
    let Some((_, steps)) = line.split_once("steps=") else {
        return Vec::new();
    };
    let steps = steps.split("container=").next().unwrap_or(steps);
    steps
        .split(" · ")
        .filter_map(|lap| {
            let mut words = lap.split_whitespace();
            let step = words.next()?.to_owned();
            let ms: f64 = words.next()?.parse().ok()?;
            Some((step, Duration::from_secs_f64(ms / 1000.0)))
        })
        .collect()
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

/// (d) resident memory with `n` releases, all validated, after `idle` of nothing.
fn idle_memory(n: usize, idle: Duration) -> u64 {
    let demo = Demo::get();
    let good = demo.sha("good");
    let test = format!("bench-memory-{n}");
    let mut v = Vigie::new(&test, &["bm"]);
    let ports = distinct_ports(n);
    v.write("all.yaml", &many("bm", n, &ports, |_| good.to_owned()));
    v.start();
    validate_all(&v, "bm", n, good);
    std::thread::sleep(idle);
    let pid = v.pid().expect("vigie runs");
    let rss = rss_kib(pid);
    drop(v);
    rss
}

/// (c) baseline: `n` raw `docker run` in parallel, until every one serves.
fn raw_parallel_runs(n: usize) -> Duration {
    let sha = Demo::get().sha("good").to_owned();
    let ports = distinct_ports(n);
    let names: Vec<String> = (0..n).map(|i| format!("vigie-bench-raw-{i}")).collect();
    for name in &names {
        let _ = Command::new("docker").args(["rm", "-f", name]).output();
    }
    let start = Instant::now();
    let runs: Vec<_> = names
        .iter()
        .zip(&ports)
        .map(|(name, port)| {
            let (name, sha, port) = (name.clone(), sha.clone(), *port);
            std::thread::spawn(move || {
                docker(&[
                    "run",
                    "-d",
                    "--name",
                    &name,
                    "-p",
                    &format!("127.0.0.1:{port}:8080"),
                    "-e",
                    &format!("VIGIE_SHA={sha}"),
                    &format!("vigie-demo:{sha}"),
                ]);
            })
        })
        .collect();
    for port in &ports {
        wait_until_within(FIFTY, || serves(*port, &sha)).expect("every raw container serves");
    }
    let took = start.elapsed();
    for r in runs {
        r.join().unwrap();
    }
    let mut rm = vec!["rm", "-f"];
    rm.extend(names.iter().map(String::as_str));
    docker(&rm);
    took
}

fn wait_until_within(limit: Duration, mut f: impl FnMut() -> bool) -> Result<(), ()> {
    let start = Instant::now();
    while !f() {
        if start.elapsed() > limit {
            return Err(());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}

/// `n` code locations and their Releases (`app{i}-{env}`) in the environment `env`,
/// each on its own port; `revision(i)` gives each its SHA.
fn many(env: &str, n: usize, ports: &[u16], revision: impl Fn(usize) -> String) -> String {
    let demo = Demo::get();
    let mut yaml = format!(
        "apiVersion: vigie.dev/v1alpha1\nkind: Environment\nmetadata: {{name: {env}}}\nspec:\n  backend: {{docker: {{}}}}\n  verification: {{timeout: 10m, healthTimeout: 5m}}\n",
    );
    for (i, port) in ports.iter().enumerate().take(n) {
        let _ = write!(
            yaml,
            "---\napiVersion: vigie.dev/v1alpha1\nkind: CodeLocation\nmetadata: {{name: app{i}}}\nspec:\n  repo: {{url: \"{url}\"}}\n  ci: {{webhook: {{}}}}\n  artifact: {{image: {{template: \"vigie-demo:{{sha}}\"}}}}\n  container: {{ports: [{{containerPort: 8080, hostPort: {port}}}]}}\n  healthCheck: {{path: /health, expectedBody: ok, timeout: 2s, retries: 5, interval: 500ms}}\n---\napiVersion: vigie.dev/v1alpha1\nkind: Release\nmetadata: {{name: app{i}-{env}}}\nspec: {{codeLocation: app{i}, environment: {env}, revision: {rev}}}\n",
            url = demo.url(),
            rev = revision(i),
        );
    }
    yaml
}

/// Sends a green verdict for each of the `n` Releases of `env` once it verifies `sha`,
/// and waits until every one is validated.
fn validate_all(v: &Vigie, env: &str, n: usize, sha: &str) {
    let phase = |i: usize| {
        v.state()
            .releases
            .get(&format!("default/app{i}-{env}"))
            .map(|r| r.status.phase)
    };
    for i in 0..n {
        wait_for(FIFTY, "a release to verify", || {
            (phase(i) == Some(vigie::api::Phase::Verifying)).then_some(())
        });
        v.verdict(&format!("app{i}"), sha, "success");
    }
    wait_for(FIFTY, "every release to be validated", || {
        (0..n)
            .all(|i| phase(i) == Some(vigie::api::Phase::Validated))
            .then_some(())
    });
}

/// What (c) measured with Vigie.
struct Fifty {
    deploy: Duration,
    alone: Duration,
    loaded: Duration,
}

/// (c) Vigie: `n` Releases deploying at once from one manifest change, until every one
/// serves; then the rollback of the first, alone and while the others deploy.
fn fifty_with_vigie(n: usize) -> Fifty {
    let demo = Demo::get();
    let (good, bad, fixed) = (demo.sha("good"), demo.sha("bad"), demo.sha("fixed"));
    let ports = distinct_ports(n);
    let mut v = Vigie::new("bench-fifty", &["bf"]);
    v.write("all.yaml", &many("bf", 0, &ports, |_| String::new()));
    v.start();
    let start = Instant::now();
    v.write("all.yaml", &many("bf", n, &ports, |_| good.to_owned()));
    for port in &ports {
        wait_until_within(FIFTY, || serves(*port, good)).expect("every release serves");
    }
    let deploy = start.elapsed();
    validate_all(&v, "bf", n, good);
    let victim = ports[0];
    let phase = |v: &Vigie, phase: vigie::api::Phase| {
        v.state()
            .releases
            .get("default/app0-bf")
            .is_some_and(|r| r.status.phase == phase)
    };
    let rollback = |v: &Vigie, bad: &str, others: &dyn Fn(usize) -> String| {
        v.write(
            "all.yaml",
            &many("bf", n, &ports, |i| {
                if i == 0 {
                    bad.to_owned()
                } else {
                    good.to_owned()
                }
            }),
        );
        wait_for(FIFTY, "the victim to verify", || {
            phase(v, vigie::api::Phase::Verifying).then_some(())
        });
        wait_until_within(FIFTY, || serves(victim, bad)).expect("the bad SHA serves");
        std::thread::sleep(Duration::from_millis(300));
        // The others move (or not) at the same instant as the red verdict.
        let start = Instant::now();
        v.write(
            "all.yaml",
            &many("bf", n, &ports, |i| {
                if i == 0 { bad.to_owned() } else { others(i) }
            }),
        );
        v.verdict("app0", bad, "failure");
        let took = time_until_serving(victim, good, start);
        wait_for(FIFTY, "the victim to be rolled back", || {
            phase(v, vigie::api::Phase::RolledBack).then_some(())
        });
        took
    };
    let alone = rollback(&v, bad, &|_| good.to_owned());
    let loaded = rollback(&v, fixed, &|_| fixed.to_owned());
    for (i, port) in ports.iter().enumerate().skip(1) {
        wait_until_within(FIFTY, || serves(*port, fixed))
            .unwrap_or_else(|()| panic!("release {i} never served the new SHA"));
    }
    Fifty {
        deploy,
        alone,
        loaded,
    }
}

/// `n` distinct free ports (each held until all are chosen, so none comes twice).
fn distinct_ports(n: usize) -> Vec<u16> {
    let held: Vec<std::net::TcpListener> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    held.iter()
        .map(|l| l.local_addr().unwrap().port())
        .collect()
}

fn ratio(ours: Duration, base: Duration) -> f64 {
    ours.as_secs_f64() / base.as_secs_f64()
}

fn main() {
    if !docker::docker_available() {
        eprintln!("bench: no Docker engine: run `make docker` first");
        std::process::exit(1);
    }
    let only: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let runs = |part: &str| only.is_empty() || only.iter().any(|o| o == part);
    let demo = Demo::get();
    let shas = [demo.sha("good"), demo.sha("fixed")];
    let rounds = 5;
    println!("Vigie standalone benchmarks (local Docker engine, {rounds} rounds where repeated)");

    if runs("deploy") {
        let raw = median(raw_redeploy(&shas, rounds));
        let ours = median(vigie_redeploy(&shas, rounds));
        println!("\n(a) new SHA serving after a change (medians)");
        println!(
            "    raw docker stop/rm/run of the same image : {}",
            secs(raw)
        );
        println!(
            "    vigie run, manifest change → serving      : {}",
            secs(ours)
        );
        println!(
            "    ratio                                     : {:.2}× (target ≤ 1.0×)",
            ratio(ours, raw)
        );
    }

    if runs("rollback") {
        let raw = raw_rollback(6);
        let mut samples = Vec::new();
        let mut traces = Vec::new();
        for round in 0..3 {
            let (s, log) = red_to_rollback(round);
            traces.extend(s.iter().filter_map(|s| trace(s, &log)));
            samples.extend(s);
        }
        let took: Vec<Duration> = samples.iter().map(|s| s.took).collect();
        let worst = *took.iter().max().unwrap();
        let (raw, ours) = (median(raw), median(took));
        println!(
            "\n(b) red verdict → previous SHA serving again (medians of {})",
            samples.len()
        );
        println!(
            "    raw docker stop (bad) + start (kept good) : {}",
            secs(raw)
        );
        println!(
            "    vigie run, red webhook → serving          : {} (worst {})",
            secs(ours),
            secs(worst)
        );
        println!(
            "    ratio                                     : {:.2}× (target ≤ 1.2×)",
            ratio(ours, raw)
        );
        if let Some(first) = traces.first() {
            println!(
                "    where Vigie's time goes (median of {} traced rollbacks):",
                traces.len()
            );
            for (k, (step, _)) in first.iter().enumerate() {
                let at: Vec<Duration> = traces
                    .iter()
                    .filter_map(|t| t.get(k).filter(|(s, _)| s == step).map(|(_, d)| *d))
                    .collect();
                if at.is_empty() {
                    continue;
                }
                println!(
                    "      {step:<40} {:>8.1} ms",
                    median(at).as_secs_f64() * 1000.0
                );
            }
        }
    }

    if runs("fifty") {
        let n = 50;
        let raw = raw_parallel_runs(n);
        let ours = fifty_with_vigie(n);
        println!("\n(c) {n} Releases at once");
        println!(
            "    raw: {n} docker run in parallel, all serving : {}",
            secs(raw)
        );
        println!(
            "    vigie run: one manifest change, all serving : {}",
            secs(ours.deploy)
        );
        println!(
            "    ratio                                       : {:.2}× (target ≤ 1.5×)",
            ratio(ours.deploy, raw)
        );
        println!(
            "    one Release's rollback, alone               : {}",
            secs(ours.alone)
        );
        println!(
            "    the same while {} others deploy              : {}",
            n - 1,
            secs(ours.loaded)
        );
        println!(
            "    ratio                                       : {:.2}× (target ≤ 1.2×)",
            ratio(ours.loaded, ours.alone)
        );
    }

    if runs("memory") {
        let idle = Duration::from_secs(10);
        let empty = idle_memory(0, idle);
        let fifty = idle_memory(50, idle);
        println!(
            "\n(d) resident memory of vigie run, idle {}s",
            idle.as_secs()
        );
        println!("    0 releases  : {:.1} MiB", mib(empty));
        println!("    50 releases : {:.1} MiB (target ≤ 50 MiB)", mib(fifty));
    }
}
