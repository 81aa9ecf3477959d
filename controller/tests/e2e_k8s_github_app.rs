//! `vigie controller` on the real control plane authenticates as a GitHub App whose
//! private key is in a Kubernetes Secret: installation tokens, minted from a stand-in
//! of GitHub that verifies the App's JSON web tokens with the public key and mints
//! tokens living 20 s, poll CI and fetch the tracked branch from a real git server
//! (smart HTTP); both take only a live installation token. A CodeLocation naming an
//! installation that does not exist is told so in its Ready condition.

#![allow(clippy::too_many_lines, reason = "one story, in order")]

mod docker;
mod gitserve;
mod k8s;
mod providers;
mod skip;

use std::{
    collections::{HashMap, HashSet},
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use gitserve::{HttpGit, git};
use k8s::{Controller, Namespace, admin, apply, eventually, kubectl, manifests, stderr, stdout};
use kube::Api;
use providers::github_app::{APP_ID, INSTALLATION_ID, Seen, app_key, fake_github_app};
use vigie::api::{Phase, Release};

const T: Duration = Duration::from_secs(90);

async fn release(ns: &str) -> Option<Release> {
    let api: Api<Release> = Api::namespaced(k8s::client().await, ns);
    api.get_opt("web-preprod").await.ok().flatten()
}

async fn wait_phase(ns: &str, phase: Phase, sha: &str) -> Release {
    eventually(T, &format!("web-preprod {phase:?} at {sha}"), || async {
        release(ns).await.filter(|r| {
            r.spec.revision.as_deref() == Some(sha)
                && r.status.as_ref().is_some_and(|s| s.phase == phase)
        })
    })
    .await
}

fn ready(ns: &str, location: &str) -> String {
    stdout(&kubectl(&[
        "-n",
        ns,
        "get",
        "codelocation",
        location,
        "-o",
        "jsonpath={.status.conditions[?(@.type==\"Ready\")].status} {.status.conditions[?(@.type==\"Ready\")].message}",
    ]))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_github_app_with_its_key_in_a_secret_polls_ci_and_fetches_the_tracked_branch() {
    if !k8s::enabled("github-app") {
        return;
    }
    let ns = Namespace::new("github-app");
    let n = ns.name.clone();
    let dir = std::env::temp_dir().join(format!("{n}-app"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();

    // The App's key in a Secret, as `kubectl create secret` puts GitHub's .pem file.
    let (pem, public_key) = app_key(&dir);
    let out = kubectl(&[
        "-n",
        &n,
        "create",
        "secret",
        "generic",
        "github-app",
        &format!("--from-file=private-key.pem={}", pem.display()),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let conclusions = Arc::new(Mutex::new(HashMap::new()));
    let (api, seen) = fake_github_app(public_key, 20, conclusions.clone());

    // The code: a repository served over smart HTTP that takes only a live
    // installation token as the password of x-access-token.
    let root = dir.join("git");
    std::fs::create_dir_all(&root).unwrap();
    let bare = root.join("web.git");
    let work = dir.join("web");
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
    let commit = |text: &str| {
        std::fs::write(work.join("app.txt"), text).unwrap();
        git(&work, &["add", "-A"]);
        git(&work, &["commit", "-q", "-m", text]);
        git(&work, &["push", "-q", "origin", "main"]);
        git(&work, &["rev-parse", "HEAD"])
    };
    let a = commit("one");
    let (taken, refused) = (
        Arc::new(Mutex::new(HashSet::new())),
        Arc::new(AtomicUsize::new(0)),
    );
    let check = {
        let (seen, taken, refused) = (seen.clone(), taken.clone(), refused.clone());
        Arc::new(move |user: &str, password: &str| {
            let ok = user == "x-access-token" && seen.valid(password);
            if ok {
                taken.lock().unwrap().insert(password.to_owned());
            } else {
                refused.fetch_add(1, Ordering::SeqCst);
            }
            ok
        })
    };
    let server = HttpGit::start_checked(&root, check);

    let api_url = format!("http://127.0.0.1:{api}");
    let app = |installation: u64| {
        format!(
            "{{appId: {APP_ID}, installationId: {installation}, privateKey: {{secretKeyRef: {{name: github-app, key: private-key.pem}}}}}}"
        )
    };
    let yaml = manifests(&n, "REV")
        .replace("  revision: \"REV\"\n", "")
        .replace(
            "  repo: {url: \"https://git.example/web.git\"}",
            &format!(
                "  repo:\n    url: \"{}\"\n    credentials:\n      githubApp: {{apiUrl: \"{api_url}\", appId: {APP_ID}, installationId: {INSTALLATION_ID}, privateKey: {{secretKeyRef: {{name: github-app, key: private-key.pem}}}}}}\n  track: [{{environment: preprod, branch: main}}]",
                server.url("web.git")
            ),
        )
        .replace(
            "  ci: {webhook: {}}",
            &format!(
                "  ci: {{github: {{repository: octo/app, apiUrl: \"{api_url}\", app: {}}}, pollInterval: 5s}}",
                app(INSTALLATION_ID)
            ),
        );
    assert!(
        yaml.contains("githubApp") && yaml.contains("app: {appId"),
        "{yaml}"
    );
    apply(&yaml);
    apply(&format!(
        r#"apiVersion: vigie.dev/v1alpha1
kind: CodeLocation
metadata: {{name: elsewhere, namespace: {n}}}
spec:
  repo: {{url: "https://git.example/elsewhere.git"}}
  ci: {{github: {{repository: octo/elsewhere, apiUrl: "{api_url}", app: {}}}}}
  artifact: {{image: {{template: "registry.example/elsewhere:{{sha}}"}}}}
"#,
        app(INSTALLATION_ID + 1)
    ));
    let mut controller = Controller::new(&ns, &admin(), "one");
    controller.args(&[
        "--track-interval=2".into(),
        format!("--gitops-cache={}", dir.join("cache").display()),
    ]);
    controller.start();

    // The location's Ready condition: the App's token reads the repository; a wrong
    // installation is named.
    let web = eventually(T, "CodeLocation web judged", || async {
        Some(ready(&n, "web")).filter(|t| !t.trim().is_empty())
    })
    .await;
    assert!(
        web.starts_with("True") && web.contains("the CI provider answers"),
        "{web}"
    );
    let elsewhere = eventually(T, "CodeLocation elsewhere judged", || async {
        Some(ready(&n, "elsewhere")).filter(|t| !t.trim().is_empty())
    })
    .await;
    assert!(
        elsewhere.starts_with("False")
            && elsewhere.contains(&format!(
                "installation {} of App {APP_ID} not found (404)",
                INSTALLATION_ID + 1
            )),
        "{elsewhere}"
    );

    // main, fetched with an installation token, is deployed; CI is polled with one.
    wait_phase(&n, Phase::Verifying, &a).await;
    conclusions.lock().unwrap().insert(a.clone(), "success");
    wait_phase(&n, Phase::Validated, &a).await;

    // Tokens live 20 s and are replaced after 15: git and CI go on with the next one.
    eventually(T, "a refreshed token used to fetch", || async {
        (taken.lock().unwrap().len() >= 2).then_some(())
    })
    .await;
    let b = commit("two");
    conclusions.lock().unwrap().insert(b.clone(), "failure");
    let r = wait_phase(&n, Phase::RolledBack, &b).await;
    assert_eq!(
        r.status.unwrap().validated_sha.map(|s| s.to_string()),
        Some(a.clone())
    );

    let minted = Seen::count(&seen.minted);
    assert!(minted >= 2, "minted {minted}");
    assert!(minted <= 10, "tokens are reused while fresh: {minted}");
    assert_eq!(
        Seen::count(&seen.jwt_refused),
        0,
        "every JSON web token verified"
    );
    assert_eq!(
        Seen::count(&seen.token_refused),
        0,
        "no call with an expired or unknown token"
    );
    assert_eq!(
        refused.load(Ordering::SeqCst),
        0,
        "git took every token offered"
    );
    let log = std::fs::read_to_string(&controller.log).unwrap_or_default();
    assert!(!log.contains("ghs_installation"), "a token reached the log");
    drop(controller);
    let _ = std::fs::remove_dir_all(&dir);
}
