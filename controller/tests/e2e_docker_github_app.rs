//! End to end on the real Docker engine: `vigie run` authenticates as a GitHub App.
//! A stand-in of GitHub verifies the App's JSON web tokens with the public key and
//! mints installation tokens that live 20 s; its CI endpoints and a real git server
//! (smart HTTP) take only those tokens, unexpired. Vigie must mint, reuse and
//! refresh them before they expire, for polling CI and for fetching the repository.

mod docker;
mod gitserve;
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

use docker::{
    Demo, IMAGE_ARTIFACT, Vigie, docker_available, free_port, http_get, release, vm_manifests,
    wait_for,
};
use gitserve::{HttpGit, git};
use providers::github_app::{APP_ID, INSTALLATION_ID, Seen, app_key, fake_github_app};

const T: Duration = Duration::from_secs(90);
/// How long the stand-in's installation tokens live (Vigie replaces them after 15 s).
const TOKEN_TTL: i64 = 20;

fn serving(port: u16, sha: &str) {
    wait_for(T, &format!("serving {sha}"), || {
        http_get(port, "/").filter(|(s, b)| *s == 200 && b.contains(sha))
    });
}

#[test]
#[allow(clippy::too_many_lines, reason = "one story, in order")]
fn a_github_app_polls_ci_and_fetches_the_repository_with_installation_tokens_refreshed_before_they_expire()
 {
    if !docker_available() {
        return;
    }
    let demo = Demo::get();
    let (good, bad) = (demo.sha("good"), demo.sha("bad"));
    let port = free_port();
    let mut v = Vigie::new("ghapp", &["ghapp-preprod", "ghapp-prod"]);
    let (pem, public_key) = app_key(&v.dir);
    let conclusions = Arc::new(Mutex::new(HashMap::new()));
    let (api, seen) = fake_github_app(public_key, TOKEN_TTL, conclusions.clone());

    // The code repository over smart HTTP: only a live installation token, as the
    // password of user x-access-token, is taken.
    let root = v.dir.join("git");
    std::fs::create_dir_all(&root).unwrap();
    let code = root.join("app.git");
    git(
        &root,
        &["init", "-q", "--bare", "-b", "main", code.to_str().unwrap()],
    );
    let publish = |sha: &str| {
        git(
            &demo.repo,
            &[
                "push",
                "-q",
                "--force",
                code.to_str().unwrap(),
                &format!("{sha}:refs/heads/main"),
            ],
        );
    };
    publish(good);
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

    let app = format!(
        "{{appId: {APP_ID}, installationId: {INSTALLATION_ID}, privateKey: {{file: \"{}\"}}}}",
        pem.display()
    );
    let api_url = format!("http://127.0.0.1:{api}");
    let manifests = vm_manifests("ghapp", demo, IMAGE_ARTIFACT)
        .replace(
            &format!("  repo: {{url: \"{}\"}}", demo.url()),
            &format!(
                "  repo:\n    url: \"{}\"\n    credentials:\n      githubApp: {{apiUrl: \"{api_url}\", appId: {APP_ID}, installationId: {INSTALLATION_ID}, privateKey: {{file: \"{}\"}}}}\n  track: [{{environment: ghapp-preprod, branch: main}}]",
                server.url("app.git"),
                pem.display()
            ),
        )
        .replace(
            "  ci: {webhook: {}}",
            &format!("  ci: {{github: {{repository: octo/app, apiUrl: \"{api_url}\", app: {app}}}, pollInterval: 5s}}"),
        );
    assert!(
        manifests.contains("githubApp") && manifests.contains("app: {appId"),
        "{manifests}"
    );
    v.write("base.yaml", &manifests);
    v.write("preprod.yaml", &release("ghapp", "preprod", None, port, ""));
    v.extra_args = vec!["--track-interval".into(), "5".into()];
    v.start();

    // main is fetched with an installation token and deployed; CI is polled with one.
    v.wait_phase("ghapp-preprod", "Verifying", T);
    serving(port, good);
    conclusions
        .lock()
        .unwrap()
        .insert(good.to_owned(), "success");
    let row = v.wait_phase("ghapp-preprod", "Validated", T);
    assert_eq!(row.validated_sha.as_deref(), Some(good));

    // A token lives 20 s and is replaced after 15: git and CI go on with the next one.
    wait_for(T, "a token refreshed and used to fetch", || {
        (taken.lock().unwrap().len() >= 2).then_some(())
    });
    conclusions
        .lock()
        .unwrap()
        .insert(bad.to_owned(), "failure");
    publish(bad);
    let row = v.wait_phase("ghapp-preprod", "RolledBack", T);
    assert_eq!(row.validated_sha.as_deref(), Some(good));
    serving(port, good);

    let minted = Seen::count(&seen.minted);
    assert!(minted >= 2, "minted {minted}");
    assert!(
        minted <= 8,
        "tokens are reused while fresh, not minted per call: {minted}"
    );
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
    assert!(Seen::count(&seen.served) > 0);
    assert_eq!(
        refused.load(Ordering::SeqCst),
        0,
        "git took every token offered"
    );
    let log = v.log();
    assert!(!log.contains("ghs_installation"), "a token reached the log");
}
