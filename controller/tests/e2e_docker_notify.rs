//! The VM scenario's Discord messages, end to end: `vigie run` against the real engine
//! posts to a local receiver that speaks Discord's webhook API, with the commit's
//! author and subject read from the code repository.

mod docker;
mod receiver;
mod skip;

use std::time::Duration;

use docker::{Demo, IMAGE_ARTIFACT, Vigie, docker_available, free_port, release, vm_manifests};
use receiver::Receiver;

const T: Duration = Duration::from_secs(60);

/// The VM example's manifests (Environments `{prefix}-preprod` and `{prefix}-prod`) with
/// a Discord sink named `team` for `events`, its webhook URL in a file of `v`.
fn with_discord(v: &Vigie, prefix: &str, events: &str, discord: &Receiver) -> String {
    let hook = v.dir.join("discord-url");
    std::fs::write(&hook, discord.url("/api/webhooks/42/secret-token")).unwrap();
    let sinks = format!(
        "  notifications:\n    - name: team\n      events: [{events}]\n      discord: {{url: {{file: \"{}\"}}}}\n",
        hook.display()
    );
    vm_manifests(prefix, Demo::get(), IMAGE_ARTIFACT).replacen(
        "  verification: {timeout: 2m, healthTimeout: 1m}\n",
        &format!("  verification: {{timeout: 2m, healthTimeout: 1m}}\n{sinks}"),
        1,
    )
}

#[test]
#[allow(clippy::too_many_lines, reason = "one story, in order")]
fn deploys_validations_and_rollbacks_reach_discord() {
    if !docker_available() {
        return;
    }
    let demo = Demo::get();
    let (good, bad) = (demo.sha("good"), demo.sha("bad"));
    let port = free_port();
    let discord = Receiver::start(&[(204, "")]);
    let mut v = Vigie::new("notify", &["ntf-preprod", "ntf-prod"]);
    let manifests = with_discord(
        &v,
        "ntf",
        "Validated, VerificationFailed, RolledBack",
        &discord,
    );
    v.write("base.yaml", &manifests);
    v.write(
        "preprod.yaml",
        &release("ntf", "preprod", Some(good), port, ""),
    );
    v.start();
    v.wait_phase("ntf-preprod", "Verifying", T);
    assert_eq!(v.verdict("app", good, "success"), 202);
    let got = discord.wait(1, T);
    let embed = got[0].json()["embeds"][0].clone();
    assert_eq!(
        embed["title"],
        format!("app {} validated in ntf-preprod", &good[..7])
    );
    let commit = embed["fields"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == "Commit")
        .unwrap()["value"]
        .as_str()
        .unwrap()
        .to_owned();
    let subject = docker::git_subject(&demo.repo, good);
    assert!(commit.contains(&subject), "{commit} names {subject}");
    assert!(commit.contains('<'), "the author: {commit}");

    v.write(
        "preprod.yaml",
        &release("ntf", "preprod", Some(bad), port, ""),
    );
    v.wait_phase("ntf-preprod", "Verifying", T);
    assert_eq!(v.verdict("app", bad, "failure"), 202);
    let got = discord.wait(3, T);
    let titles: Vec<String> = got
        .iter()
        .map(|r| r.json()["embeds"][0]["title"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        titles[1..],
        [
            format!(
                "app {} failed in ntf-preprod; rolling back to {}",
                &bad[..7],
                &good[..7]
            ),
            format!(
                "app rolled back in ntf-preprod: {} serves again",
                &good[..7]
            ),
        ]
    );
    let failed = got[1].json();
    assert_eq!(
        failed["embeds"][0]["url"],
        format!("https://ci.example/app/{bad}/failure")
    );
    // Only the events asked for: no DeployStarted or Deployed.
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(discord.requests().len(), 3);
    assert!(
        !v.log().contains("secret-token"),
        "the webhook URL is a secret"
    );

    // `vigie history` reads the same record.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_vigie"))
        .args(["history", "app", "--env", "ntf-preprod", "--state"])
        .arg(&v.state)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let table = String::from_utf8_lossy(&out.stdout);
    let rolled = table
        .lines()
        .find(|l| l.contains("RolledBack"))
        .unwrap_or_else(|| panic!("{table}"));
    assert!(
        rolled.contains(&bad[..7]) && rolled.contains(&good[..7]),
        "{rolled}"
    );
    assert!(
        rolled.contains(&format!("https://ci.example/app/{bad}/failure")),
        "{rolled}"
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_vigie"))
        .args(["history", "app", "--env", "nowhere", "--state"])
        .arg(&v.state)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no Release of app in nowhere"));
}

#[test]
fn a_message_still_being_retried_goes_out_before_vigie_stops() {
    if !docker_available() {
        return;
    }
    let demo = Demo::get();
    let good = demo.sha("good");
    let port = free_port();
    // Refused three times: with the default backoff (1 s, 2 s, 4 s) the fourth attempt,
    // answered, comes about 7 s after the first.
    let discord = Receiver::start(&[(503, ""), (503, ""), (503, ""), (204, "")]);
    let mut v = Vigie::new("notify-stop", &["nst-preprod", "nst-prod"]);
    let manifests = with_discord(&v, "nst", "Deployed", &discord);
    v.write("base.yaml", &manifests);
    v.write(
        "preprod.yaml",
        &release("nst", "preprod", Some(good), port, ""),
    );
    v.start();
    v.wait_phase("nst-preprod", "Verifying", T);
    discord.wait(1, T);
    let status = v.terminate();
    assert!(status.success(), "{status}");
    let got = discord.requests();
    assert_eq!(got.len(), 4, "delivered before the exit, after its retries");
    assert_eq!(
        got[3].json()["embeds"][0]["title"],
        format!("app {} is up in nst-preprod", &good[..7])
    );
    let log = v.log();
    assert!(log.contains("vigie run stopping"), "{log}");
    assert!(!log.contains("notifications not delivered"), "{log}");
}
