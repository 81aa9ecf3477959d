//! The VM example's production path, end to end, against the real engine: `vigie run`
//! with a preprod that follows every commit and a prod that takes only what preprod
//! validated, after a person types DEPLOY at `vigie promote` (through the control
//! socket), behind a backup hook and a smoke test, deploy windows (with a break-glass), health
//! monitoring (every 5 s here, hourly in the example) and Discord messages; then
//! `vigie rollback` and `vigie history`.

mod docker;
mod receiver;
mod skip;

use std::{
    path::Path,
    process::{Command, Output},
    time::Duration,
};

use docker::{Demo, Vigie, docker_available, free_port, http_get, wait_for};
use jiff::{Timestamp, ToSpan, tz::TimeZone};
use receiver::Receiver;
use vigie::api::release::{HistoryEntry, HistoryEvent};

const T: Duration = Duration::from_secs(60);

fn serving(port: u16, sha: &str) {
    wait_for(T, &format!("{sha} to serve on {port}"), || {
        http_get(port, "/")
            .filter(|(s, b)| *s == 200 && b.contains(sha))
            .map(|_| ())
    });
}

/// `vigie ARGS` with `input` on stdin.
fn vigie(args: &[&str], state: &Path, input: &str) -> Output {
    docker::with_stdin(
        Command::new(env!("CARGO_BIN_EXE_vigie"))
            .args(args)
            .arg("--state")
            .arg(state),
        input,
    )
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The name of the OS user running the tests, as `vigie run` sees a socket peer.
fn os_user() -> String {
    let out = Command::new("id").arg("-un").output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// A weekly deny range `Ddd HH:MM` to `Ddd HH:MM` (UTC) around now: from `before` ago
/// to `after` from now.
fn deny_around(before: i64, after: i64) -> String {
    let at = |t: Timestamp| {
        let z = t.to_zoned(TimeZone::UTC);
        format!("{} {}", z.strftime("%a"), z.strftime("%H:%M"))
    };
    let now = Timestamp::now();
    format!(
        "{{from: \"{}\", to: \"{}\"}}",
        at(now - before.hours()),
        at(now + after.hours())
    )
}

fn environments(dir: &Path, discord: &Path, deny: &str) -> String {
    let hook = format!(
        r#"    preDeploy:
      - name: backup
        image: vigie-demo:latest
        command: [/demo-app, hook, "1", "0"]
        mounts: [{{source: "{backups}", target: /backups}}]
        timeout: 1m
        output: /backups/prod-{{shortSha}}-{{time}}.txt
    postDeploy:
      - name: smoke
        image: vigie-demo:latest
        command: [/demo-app, check]
        timeout: 30s
"#,
        backups = dir.join("backups").display()
    );
    let discord = format!("{{url: {{file: \"{}\"}}}}", discord.display());
    format!(
        r"apiVersion: vigie.dev/v1alpha1
kind: Environment
metadata: {{name: vmp-preprod}}
spec:
  backend: {{docker: {{}}}}
  verification: {{timeout: 2m, healthTimeout: 1m}}
---
apiVersion: vigie.dev/v1alpha1
kind: Environment
metadata: {{name: vmp-prod}}
spec:
  backend: {{docker: {{}}}}
  strategy: ValidatedOnly
  promotion: {{from: vmp-preprod, approval: Manual}}
  verification: {{healthTimeout: 1m}}
  windows:
    timeZone: UTC
    deny: [{deny}]
  hooks:
{hook}  monitoring: {{interval: 5s, failureThreshold: 2, recoveryThreshold: 2, markSuspect: true}}
  notifications:
    - name: deployments
      events: [AwaitingApproval, Approved, BreakGlass, Deployed, Validated, RolledBack, Failed, HookFailed]
      discord: {discord}
    - name: health
      events: [HealthDown, HealthRecovered]
      discord: {discord}
"
    )
}

fn app(demo: &Demo, dir: &Path) -> String {
    format!(
        r#"apiVersion: vigie.dev/v1alpha1
kind: CodeLocation
metadata: {{name: app}}
spec:
  repo: {{url: "{url}"}}
  ci: {{webhook: {{}}}}
  artifact:
    gitCheckout: {{path: "{tree}/{{environment}}", image: "vigie-demo-runtime:latest", mountPath: /app}}
  container:
    ports: [{{containerPort: 8080}}]
  healthCheck: {{path: /health, expectedBody: ok, timeout: 2s, retries: 1, interval: 500ms}}
"#,
        url = demo.url(),
        tree = dir.join("tree").display()
    )
}

fn release(env: &str, revision: Option<&str>, port: u16) -> String {
    docker::release("vmp", env, revision, port, "")
}

fn prod_history(v: &Vigie) -> Vec<HistoryEntry> {
    v.state().releases["default/app-prod"]
        .status
        .history
        .clone()
}

fn count(v: &Vigie, event: HistoryEvent) -> usize {
    prod_history(v).iter().filter(|h| h.event == event).count()
}

fn titles(discord: &Receiver) -> Vec<String> {
    discord
        .requests()
        .iter()
        .map(|r| r.json()["embeds"][0]["title"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
#[allow(clippy::too_many_lines, reason = "one production path, in order")]
fn the_vm_production_path() {
    if !docker_available() {
        return;
    }
    let demo = Demo::get();
    let (a, b) = (demo.sha("good"), demo.sha("fixed"));
    let (sa, sb) = (&a[..7], &b[..7]);
    let (pre, prod) = (free_port(), free_port());
    let user = os_user();
    let discord = Receiver::start(&[(204, "")]);
    let mut v = Vigie::new("production", &["vmp-preprod", "vmp-prod"]);
    let hook_url = v.dir.join("discord-url");
    std::fs::write(&hook_url, discord.url("/api/webhooks/7/prod-token")).unwrap();
    let state = v.state.clone();
    // The deploy windows are open now: the freeze starts in 3 hours.
    v.write(
        "environments.yaml",
        &environments(&v.dir, &hook_url, &deny_around(-3, 4)),
    );
    v.write("app.yaml", &app(demo, &v.dir));
    v.write("preprod.yaml", &release("preprod", Some(a), pre));
    v.write("prod.yaml", &release("prod", None, prod));
    v.start();

    // Preprod deploys A first; CI validates it.
    v.wait_phase("vmp-preprod", "Verifying", T);
    serving(pre, a);
    assert_eq!(v.verdict("app", a, "success"), 202);
    v.wait_phase("vmp-preprod", "Validated", T);

    // A person promotes A to prod and mistypes the confirmation: nothing changes.
    let promote = ["promote", "app", "--to", "vmp-prod"];
    let out = vigie(&promote, &state, "deploy\n");
    assert!(!out.status.success(), "{}", text(&out));
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(
        shown.contains("Promote app from vmp-preprod to vmp-prod"),
        "{shown}"
    );
    assert!(shown.contains(&format!("- → {sa} in vmp-prod")), "{shown}");
    assert!(shown.contains("Type DEPLOY"), "{shown}");
    assert!(
        text(&out).contains("not confirmed (expected DEPLOY); nothing was changed"),
        "{}",
        text(&out)
    );
    std::thread::sleep(Duration::from_secs(1));
    assert!(v.state().requests.is_empty(), "no request was recorded");
    assert_eq!(v.row("vmp-prod").unwrap().desired_sha, None);

    // Typed right: approved by the OS user, backed up, deployed, validated.
    let out = vigie(&promote, &state, "DEPLOY\n");
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains(&format!("{sa} approved for vmp-prod by {user}")),
        "{}",
        text(&out)
    );
    let row = v.wait_phase("vmp-prod", "Validated", T);
    assert_eq!(row.validated_sha.as_deref(), Some(a));
    serving(prod, a);
    let history = prod_history(&v);
    let approved = history
        .iter()
        .find(|h| h.event == HistoryEvent::Approved)
        .unwrap();
    assert_eq!(
        (approved.sha.as_str(), approved.by.as_deref()),
        (a, Some(user.as_str()))
    );
    let backup = history
        .iter()
        .find(|h| h.event == HistoryEvent::HookSucceeded)
        .unwrap();
    let output = backup.output.clone().unwrap();
    let file = output.strip_prefix("/backups/").unwrap();
    assert!(file.starts_with(&format!("prod-{sa}-")), "{output}");
    assert_eq!(
        std::fs::read_to_string(v.dir.join("backups").join(file)).unwrap(),
        format!("backup of  before {a}\n"),
        "the hook's output is where the history says"
    );
    let events: Vec<HistoryEvent> = history.iter().map(|h| h.event).collect();
    let at = |e| events.iter().position(|x| *x == e).unwrap();
    assert!(
        at(HistoryEvent::Deployed) < at(HistoryEvent::HookSucceeded)
            && at(HistoryEvent::HookSucceeded) < at(HistoryEvent::Validated),
        "the rollout starts with the backup: {events:?}"
    );

    // B is not validated in preprod yet: prod refuses it, whoever asks.
    let out = vigie(
        &["promote", "app", "--to", "vmp-prod", "--sha", b, "--yes"],
        &state,
        "",
    );
    assert!(!out.status.success());
    assert!(
        text(&out).contains(&format!("{sb} is not validated in vmp-preprod")),
        "{}",
        text(&out)
    );

    // B goes through preprod; then a freeze starts (the window closes).
    v.write("preprod.yaml", &release("preprod", Some(b), pre));
    v.wait_phase("vmp-preprod", "Verifying", T);
    assert_eq!(v.verdict("app", b, "success"), 202);
    v.wait_phase("vmp-preprod", "Validated", T);
    v.write(
        "environments.yaml",
        &environments(&v.dir, &hook_url, &deny_around(1, 2)),
    );
    std::thread::sleep(Duration::from_secs(2));

    // Approved during the freeze: recorded at once, the deploy waits for the window.
    let out = vigie(&promote, &state, "DEPLOY\n");
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("the deploy waits unless --break-glass REASON"),
        "{}",
        text(&out)
    );
    let row = wait_for(T, "prod to wait for the window", || {
        v.row("vmp-prod").filter(|r| {
            r.message
                .as_deref()
                .is_some_and(|m| m.contains("waits for the deploy window, until"))
        })
    });
    assert_eq!(row.desired_sha.as_deref(), Some(b));
    assert_eq!(row.deployed_sha.as_deref(), Some(a));
    wait_for(T, "B's approval in the history", || {
        prod_history(&v)
            .iter()
            .any(|h| h.event == HistoryEvent::Approved && h.sha.as_str() == b)
            .then_some(())
    });
    std::thread::sleep(Duration::from_secs(2));
    serving(prod, a);

    // Break-glass: a named person deploys B anyway, on the record.
    let out = vigie(
        &[
            "promote",
            "app",
            "--to",
            "vmp-prod",
            "--break-glass",
            "login page hotfix",
            "--yes",
        ],
        &state,
        "",
    );
    assert!(out.status.success(), "{}", text(&out));
    serving(prod, b);
    let row = v.wait_phase("vmp-prod", "Validated", T);
    assert_eq!(row.validated_sha.as_deref(), Some(b));
    let history = prod_history(&v);
    let glass = history
        .iter()
        .find(|h| h.event == HistoryEvent::BreakGlass)
        .unwrap();
    assert_eq!(
        (
            glass.sha.as_str(),
            glass.by.as_deref(),
            glass.reason.as_deref()
        ),
        (b, Some(user.as_str()), Some("login page hotfix"))
    );
    let hooks: Vec<String> = prod_history(&v)
        .iter()
        .filter(|h| h.event == HistoryEvent::HookSucceeded)
        .map(|h| format!("{} {}", h.sha.short(), h.reason.clone().unwrap_or_default()))
        .collect();
    assert_eq!(
        hooks,
        [
            format!("{sa} pre-deploy hook backup succeeded"),
            format!("{sa} post-deploy hook smoke succeeded"),
            format!("{sb} pre-deploy hook backup succeeded"),
            format!("{sb} post-deploy hook smoke succeeded"),
        ],
        "a backup before and a smoke test after each deploy"
    );

    // Monitoring: prod starts answering 500; one HealthDown, however long it lasts.
    let health = v.dir.join("tree/vmp-prod/health");
    std::fs::write(&health, "fail\n").unwrap();
    wait_for(T, "HealthDown", || {
        (count(&v, HistoryEvent::HealthDown) == 1).then_some(())
    });
    assert_eq!(v.row("vmp-prod").unwrap().phase, "Validated");
    std::thread::sleep(Duration::from_secs(15));
    assert_eq!(
        count(&v, HistoryEvent::HealthDown),
        1,
        "no repeat while down"
    );
    let monitor = v.state().releases["default/app-prod"]
        .status
        .monitor
        .clone()
        .unwrap();
    assert!(monitor.failures >= 4, "checked each interval: {monitor:?}");
    // It answers again: one HealthRecovered.
    std::fs::write(&health, "ok\n").unwrap();
    wait_for(T, "HealthRecovered", || {
        (count(&v, HistoryEvent::HealthRecovered) == 1).then_some(())
    });
    assert_eq!(count(&v, HistoryEvent::HealthDown), 1);

    // A person rolls prod back to A, during the freeze: rollbacks are never blocked.
    let rollback = [
        "rollback",
        "app",
        "--env",
        "vmp-prod",
        "--reason",
        "B is slow",
    ];
    let out = vigie(&rollback, &state, "yes\n");
    assert!(!out.status.success(), "only ROLLBACK confirms");
    let out = vigie(&rollback, &state, "ROLLBACK\n");
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .contains(&format!("Roll back app in vmp-prod: {sb} → {sa}")),
        "{}",
        text(&out)
    );
    serving(prod, a);
    let row = v.wait_phase("vmp-prod", "Validated", T);
    assert_eq!(row.validated_sha.as_deref(), Some(a));
    let state_now = v.state();
    let status = &state_now.releases["default/app-prod"].status;
    assert!(
        status.quarantine.iter().any(|q| q.sha.as_str() == b),
        "B stays out until a person clears it"
    );
    let rolled = status
        .history
        .iter()
        .rfind(|h| h.event == HistoryEvent::RolledBack)
        .unwrap();
    assert_eq!(
        (rolled.sha.as_str(), rolled.by.as_deref()),
        (b, Some(user.as_str()))
    );
    assert_eq!(
        rolled.reason.as_deref(),
        Some(format!("rolled back by {user}: B is slow").as_str())
    );

    // `vigie history` tells it all: who approved, who broke the glass, who rolled back.
    let out = vigie(&["history", "app", "--env", "vmp-prod"], &state, "");
    assert!(out.status.success(), "{}", text(&out));
    let table = String::from_utf8_lossy(&out.stdout);
    for (event, needle) in [
        ("Approved", user.as_str()),
        ("BreakGlass", "login page hotfix"),
        ("HookSucceeded", "/backups/prod-"),
        ("HealthDown", sb),
        ("HealthRecovered", sb),
        ("RolledBack", "B is slow"),
    ] {
        assert!(
            table
                .lines()
                .any(|l| l.contains(event) && l.contains(needle)),
            "{event} with {needle} in\n{table}"
        );
    }

    // Discord heard each step once, in order, with no repeats while down.
    let got = wait_for(T, "the rollback's Discord message", || {
        let t = titles(&discord);
        t.iter()
            .any(|t| t.starts_with("app rolled back in vmp-prod"))
            .then_some(t)
    });
    let expected = [
        format!("app {sa} approved for vmp-prod"),
        format!("app {sa} is up in vmp-prod"),
        format!("app {sa} validated in vmp-prod"),
        format!("app {sb} approved for vmp-prod"),
        format!("app {sb} deployed to vmp-prod outside the deploy windows"),
        format!("app {sb} validated in vmp-prod"),
        format!("app {sb} is down in vmp-prod"),
        format!("app {sb} recovered in vmp-prod"),
        format!("app rolled back in vmp-prod: {sa} serves again"),
    ];
    let mut rest = got.iter();
    for title in &expected {
        assert!(rest.any(|t| t == title), "{title} in order in\n{got:#?}");
    }
    assert_eq!(
        got.iter().filter(|t| t.contains("is down")).count(),
        1,
        "{got:#?}"
    );
    assert!(
        !v.log().contains("prod-token"),
        "the webhook URL is a secret"
    );
}
