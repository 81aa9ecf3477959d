//! `vigie run --manifests URL#BRANCH:DIR`: the manifests are a folder of a git branch,
//! fetched with git2 from a real repository (file://), against the real engine.

mod docker;
mod gitserve;
mod skip;

use gitserve::git;

use std::{path::Path, process::Command, time::Duration};

use docker::{
    Demo, IMAGE_ARTIFACT, SECRET, Vigie, docker_available, free_port, http_get, http_post, release,
    vm_manifests, wait_for,
};

const T: Duration = Duration::from_secs(60);

/// Commits everything in `work` and pushes it; returns the commit.
fn push(work: &Path, message: &str) -> String {
    git(work, &["add", "-A"]);
    git(work, &["commit", "-q", "-m", message]);
    git(work, &["push", "-q", "origin", "main"]);
    git(work, &["rev-parse", "HEAD"])
}

/// GitHub's `push` event for `branch` of the repository at `url`, signed with `secret`.
fn pushed(v: &Vigie, url: &str, branch: &str, after: &str, secret: &str) -> u16 {
    let body = format!(
        r#"{{"ref": "refs/heads/{branch}", "before": "0000000000000000000000000000000000000000", "after": "{after}",
        "repository": {{"full_name": "acme/ops", "clone_url": "{url}", "ssh_url": "git@git.example:acme/ops.git"}},
        "pusher": {{"name": "ops"}}, "commits": []}}"#
    );
    let signature = vigie::ci::webhook::sign(secret.as_bytes(), body.as_bytes());
    http_post(
        v.port,
        "/hooks/github",
        &[
            ("X-GitHub-Event", "push".to_owned()),
            ("X-GitHub-Delivery", format!("push-{after}")),
            ("X-Hub-Signature-256", signature),
        ],
        body.as_bytes(),
    )
}

fn serving(port: u16, sha: &str) {
    wait_for(T, &format!("serving {sha}"), || {
        http_get(port, "/").filter(|(s, b)| *s == 200 && b.contains(sha))
    });
}

fn status(v: &Vigie) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_vigie"))
        .args(["status", "--state"])
        .arg(&v.state)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
#[allow(clippy::too_many_lines, reason = "one story, in order")]
fn the_manifests_follow_a_branch_and_an_invalid_commit_changes_nothing() {
    if !docker_available() {
        return;
    }
    let demo = Demo::get();
    let (a, b) = (demo.sha("good"), demo.sha("fixed"));
    let port = free_port();
    let mut v = Vigie::new("gitops", &["gitops-preprod", "gitops-prod"]);
    let bare = v.dir.join("ops.git");
    let work = v.dir.join("ops");
    git(
        &v.dir,
        &["init", "-q", "--bare", "-b", "main", bare.to_str().unwrap()],
    );
    git(
        &v.dir,
        &[
            "clone",
            "-q",
            bare.to_str().unwrap(),
            work.to_str().unwrap(),
        ],
    );
    git(&work, &["checkout", "-q", "-b", "main"]);
    std::fs::create_dir_all(work.join("vm")).unwrap();
    std::fs::write(work.join("README.md"), "not a manifest\n").unwrap();
    std::fs::write(
        work.join("vm/base.yaml"),
        vm_manifests("gitops", demo, IMAGE_ARTIFACT),
    )
    .unwrap();
    std::fs::write(
        work.join("vm/preprod.yaml"),
        release("gitops", "preprod", Some(a), port, ""),
    )
    .unwrap();
    let first = push(&work, "preprod at the good commit");
    v.source = Some(format!("file://{}#main:vm", bare.display()));
    // Fetched once at the start, then only when a push webhook says so.
    v.extra_args = vec!["--git-interval".into(), "3600".into()];
    let url = format!("file://{}", bare.display());
    v.start();
    v.wait_phase("gitops-preprod", "Verifying", T);
    serving(port, a);
    let shown = status(&v);
    assert!(
        shown.contains(&format!(
            "Manifests from file://{}#main:vm: commit {}",
            bare.display(),
            &first[..7]
        )),
        "{shown}"
    );

    // A new commit moves the Release.
    std::fs::write(
        work.join("vm/preprod.yaml"),
        release("gitops", "preprod", Some(b), port, ""),
    )
    .unwrap();
    let second = push(&work, "preprod at the fixed commit");
    assert_eq!(pushed(&v, &url, "main", &second, "not-the-secret"), 401);
    assert_eq!(
        pushed(&v, &url, "other", &second, SECRET),
        202,
        "another branch: ignored"
    );
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        http_get(port, "/").is_some_and(|(_, body)| body.contains(a)),
        "no fetch without a push to the branch"
    );
    assert_eq!(pushed(&v, &url, "main", &second, SECRET), 202);
    serving(port, b);

    // An invalid commit applies nothing, and says which commit, file, document and field.
    std::fs::write(
        work.join("vm/preprod.yaml"),
        release("gitops", "preprod", Some(a), port, "").replace(
            "  codeLocation: app",
            "  codeLocation: app\n  revison: main",
        ),
    )
    .unwrap();
    let bad = push(&work, "a typo");
    assert_eq!(pushed(&v, &url, "main", &bad, SECRET), 202);
    wait_for(T, "the invalid commit reported", || {
        let s = v.state();
        s.git_sync
            .as_ref()
            .and_then(|g| g.error.clone())
            .filter(|e| e.contains(&bad[..7]))
    });
    let s = v.state();
    let sync = s.git_sync.unwrap();
    assert_eq!(
        sync.commit.unwrap().as_str(),
        second,
        "the last good commit stays in force"
    );
    assert_eq!(
        s.manifest_problems,
        [format!(
            "commit {}: vm/preprod.yaml: document 1 (Release/app-preprod): spec.revison: unknown field (did you mean \"revision\"?)",
            &bad[..7]
        )]
    );
    let shown = status(&v);
    assert!(
        shown.contains(&format!(
            "error: commit {} is invalid; {} stays in force",
            &bad[..7],
            &second[..7]
        )),
        "{shown}"
    );
    std::thread::sleep(Duration::from_secs(2));
    serving(port, b);

    // Fixed by the next commit; deleting a Release's manifest removes it (after the grace).
    std::fs::remove_file(work.join("vm/preprod.yaml")).unwrap();
    let gone = push(&work, "no preprod any more");
    assert_eq!(pushed(&v, &url, "main", &gone, SECRET), 202);
    wait_for(T, "the preprod container removed", || {
        Vigie::containers("gitops-preprod").is_empty().then_some(())
    });
    let s = v.state();
    assert!(s.git_sync.unwrap().error.is_none());
    assert!(s.manifest_problems.is_empty());

    // An unreachable remote: the error shows, the last state stays.
    std::fs::rename(&bare, v.dir.join("moved.git")).unwrap();
    assert_eq!(pushed(&v, &url, "main", &gone, SECRET), 202);
    wait_for(T, "the fetch error reported", || {
        v.state()
            .git_sync
            .and_then(|g| g.error)
            .filter(|e| e.contains("cannot fetch"))
    });
    assert!(v.log().contains("the last good commit stays in force"));
}

/// Two environments of one code location: dev follows `main`, staging the newest
/// `>=1.0.0, <2` tag.
fn tracking_manifests(demo_url: &str, dev_port: u16, staging_port: u16) -> String {
    format!(
        r#"apiVersion: vigie.dev/v1alpha1
kind: Environment
metadata: {{name: trk-dev}}
spec:
  backend: {{docker: {{}}}}
  verification: {{timeout: 2m, healthTimeout: 1m}}
---
apiVersion: vigie.dev/v1alpha1
kind: Environment
metadata: {{name: trk-staging}}
spec:
  backend: {{docker: {{}}}}
  verification: {{timeout: 2m, healthTimeout: 1m}}
---
apiVersion: vigie.dev/v1alpha1
kind: CodeLocation
metadata: {{name: app}}
spec:
  repo: {{url: "{demo_url}"}}
  track:
    - {{environment: trk-dev, branch: main}}
    - {{environment: trk-staging, tags: ">=1.0.0, <2"}}
  ci: {{webhook: {{}}}}
  artifact:
{IMAGE_ARTIFACT}
  container:
    ports: [{{containerPort: 8080}}]
  healthCheck: {{path: /health, expectedBody: ok, timeout: 2s, retries: 3, interval: 500ms}}
---
apiVersion: vigie.dev/v1alpha1
kind: Release
metadata: {{name: app-dev}}
spec:
  codeLocation: app
  environment: trk-dev
  overrides: {{ports: [{{containerPort: 8080, hostPort: {dev_port}}}]}}
---
apiVersion: vigie.dev/v1alpha1
kind: Release
metadata: {{name: app-staging}}
spec:
  codeLocation: app
  environment: trk-staging
  overrides: {{ports: [{{containerPort: 8080, hostPort: {staging_port}}}]}}
"#
    )
}

#[test]
fn releases_follow_a_branch_forward_and_the_newest_matching_tag() {
    if !docker_available() {
        return;
    }
    let demo = Demo::get();
    let (good, bad, fixed, crash) = (
        demo.sha("good"),
        demo.sha("bad"),
        demo.sha("fixed"),
        demo.sha("crash"),
    );
    let (dev, staging) = (free_port(), free_port());
    let mut v = Vigie::new("tracking", &["trk-dev", "trk-staging"]);
    // The code repository: the demo's commits, with branches and tags moved by the test.
    let code = v.dir.join("app.git");
    git(
        &v.dir,
        &["init", "-q", "--bare", "-b", "main", code.to_str().unwrap()],
    );
    let publish = |refspec: &str, force: bool| {
        let mut args = vec!["push", "-q"];
        if force {
            args.push("--force");
        }
        args.extend([code.to_str().unwrap(), refspec]);
        git(&demo.repo, &args);
    };
    publish(&format!("{good}:refs/heads/main"), false);
    publish(&format!("{good}:refs/tags/v1.0.0"), false);
    publish(&format!("{fixed}:refs/tags/v2.0.0"), false);
    publish(&format!("{crash}:refs/tags/latest"), false);
    let url = format!("file://{}", code.display());
    v.write("all.yaml", &tracking_manifests(&url, dev, staging));
    v.extra_args = vec!["--track-interval".into(), "3600".into()];
    v.start();
    serving(dev, good);
    serving(staging, good);

    // main moves forward (good -> bad -> fixed): dev follows on the push webhook.
    publish(&format!("{fixed}:refs/heads/main"), false);
    assert_eq!(pushed(&v, &url, "main", fixed, SECRET), 202);
    serving(dev, fixed);
    let t = v.state().tracked["default/app-dev"].clone();
    assert_eq!(
        (t.sha.unwrap().as_str(), t.reference.as_deref()),
        (fixed, Some("main"))
    );

    // A force-push back is reported, not followed.
    publish(&format!("{bad}:refs/heads/main"), true);
    assert_eq!(pushed(&v, &url, "main", bad, SECRET), 202);
    let refused = wait_for(T, "the force-push refused", || {
        v.state()
            .tracked
            .get("default/app-dev")
            .and_then(|t| t.refused.clone())
    });
    assert!(refused.contains("does not descend from"), "{refused}");
    std::thread::sleep(Duration::from_secs(1));
    serving(dev, fixed);

    // A new tag in the range moves staging; one outside it does not.
    publish(&format!("{fixed}:refs/tags/v1.1.0"), false);
    assert_eq!(pushed(&v, &url, "main", bad, SECRET), 202);
    serving(staging, fixed);
    assert_eq!(
        v.state().tracked["default/app-staging"]
            .reference
            .as_deref(),
        Some("v1.1.0")
    );
}

#[test]
#[allow(clippy::too_many_lines, reason = "one story, in order")]
fn tracked_updates_and_rollbacks_are_written_back_to_the_manifests_repository() {
    if !docker_available() {
        return;
    }
    let demo = Demo::get();
    let (good, bad) = (demo.sha("good"), demo.sha("bad"));
    let (dev, staging) = (free_port(), free_port());
    let mut v = Vigie::new("write-back", &["trk-dev", "trk-staging"]);
    // The code repository, whose main dev follows.
    let code = v.dir.join("app.git");
    git(
        &v.dir,
        &["init", "-q", "--bare", "-b", "main", code.to_str().unwrap()],
    );
    let publish = |refspec: &str| {
        git(&demo.repo, &["push", "-q", code.to_str().unwrap(), refspec]);
    };
    publish(&format!("{good}:refs/heads/main"));
    let code_url = format!("file://{}", code.display());
    // The manifests repository: the Releases name no revision; Vigie writes them.
    let ops = v.dir.join("ops.git");
    let work = v.dir.join("ops");
    git(
        &v.dir,
        &["init", "-q", "--bare", "-b", "main", ops.to_str().unwrap()],
    );
    git(
        &v.dir,
        &["clone", "-q", ops.to_str().unwrap(), work.to_str().unwrap()],
    );
    git(&work, &["checkout", "-q", "-b", "main"]);
    std::fs::create_dir_all(work.join("vm")).unwrap();
    std::fs::write(
        work.join("vm/all.yaml"),
        tracking_manifests(&code_url, dev, staging),
    )
    .unwrap();
    push(&work, "dev and staging");
    v.source = Some(format!("file://{}#main:vm", ops.display()));
    v.extra_args = vec![
        "--write-back".into(),
        "tracking,rollbacks".into(),
        "--git-author".into(),
        "Vigie Bot <vigie@example.com>".into(),
        "--git-interval".into(),
        "3600".into(),
        "--track-interval".into(),
        "3600".into(),
    ];
    let log = |n: &str| git(&ops, &["log", "--format=%s|%an", "-n", n, "main"]);
    let dev_revision = || {
        let text = git(&ops, &["show", "main:vm/all.yaml"]);
        let doc = text.split("name: app-dev}").nth(1).unwrap().to_owned();
        doc.lines()
            .find_map(|l| l.trim().strip_prefix("revision: ").map(str::to_owned))
    };
    v.start();

    // The first check moves dev to main's tip: a commit in the manifests repository,
    // which the next fetch applies.
    serving(dev, good);
    assert_eq!(dev_revision().as_deref(), Some(good));
    assert!(
        log("3").contains(&format!(
            "vigie: app in trk-dev: - → {} (main)|Vigie Bot",
            &good[..7]
        )),
        "{}",
        log("3")
    );
    assert!(
        v.state().tracked["default/app-dev"].sha.is_none(),
        "git holds it, not the state"
    );
    assert_eq!(v.verdict("app", good, "success"), 202);
    v.wait_phase("trk-dev", "Validated", T);

    // main moves forward: committed, applied, deployed.
    publish(&format!("{bad}:refs/heads/main"));
    assert_eq!(pushed(&v, &code_url, "main", bad, SECRET), 202);
    serving(dev, bad);
    assert_eq!(dev_revision().as_deref(), Some(bad));
    assert!(log("1").starts_with(&format!(
        "vigie: app in trk-dev: {} → {} (main)",
        &good[..7],
        &bad[..7]
    )));
    v.wait_phase("trk-dev", "Verifying", T);

    // CI fails: the rollback is committed too, so git says what runs.
    assert_eq!(v.verdict("app", bad, "failure"), 202);
    serving(dev, good);
    wait_for(T, "the rollback written back", || {
        (dev_revision().as_deref() == Some(good)).then_some(())
    });
    assert!(
        log("1").starts_with(&format!(
            "vigie: roll back app in trk-dev: {} → {}|Vigie Bot",
            &bad[..7],
            &good[..7]
        )),
        "{}",
        log("1")
    );
    let body = git(&ops, &["log", "-1", "--format=%b", "main"]);
    assert!(body.contains("was rolled back: CI failed"), "{body}");
    // The rolled-back SHA is main's tip, quarantined: tracking does not take it again.
    let row = v.wait_phase("trk-dev", "Validated", T);
    assert_eq!(row.quarantined, vec![bad.to_owned()]);
    let commits = git(&ops, &["rev-list", "--count", "main"]);
    assert_eq!(pushed(&v, &code_url, "main", bad, SECRET), 202);
    let refused = wait_for(T, "the quarantined tip refused", || {
        v.state()
            .tracked
            .get("default/app-dev")
            .and_then(|t| t.refused.clone())
    });
    assert!(refused.contains("quarantined"), "{refused}");
    assert_eq!(git(&ops, &["rev-list", "--count", "main"]), commits);
    let shown = status(&v);
    assert!(
        shown.contains("write-back: default/app-dev rolled back"),
        "{shown}"
    );
}

#[test]
fn a_rollback_not_yet_written_back_is_written_after_a_restart() {
    if !docker_available() {
        return;
    }
    let demo = Demo::get();
    let (good, bad) = (demo.sha("good"), demo.sha("bad"));
    let port = free_port();
    let mut v = Vigie::new("write-back-restart", &["wbr-preprod", "wbr-prod"]);
    let ops = v.dir.join("ops.git");
    let work = v.dir.join("ops");
    git(
        &v.dir,
        &["init", "-q", "--bare", "-b", "main", ops.to_str().unwrap()],
    );
    git(
        &v.dir,
        &["clone", "-q", ops.to_str().unwrap(), work.to_str().unwrap()],
    );
    git(&work, &["checkout", "-q", "-b", "main"]);
    std::fs::create_dir_all(work.join("vm")).unwrap();
    std::fs::write(
        work.join("vm/base.yaml"),
        vm_manifests("wbr", demo, IMAGE_ARTIFACT),
    )
    .unwrap();
    std::fs::write(
        work.join("vm/preprod.yaml"),
        release("wbr", "preprod", Some(good), port, ""),
    )
    .unwrap();
    push(&work, "preprod at good");
    let url = format!("file://{}", ops.display());
    v.source = Some(format!("{url}#main:vm"));
    v.extra_args = vec!["--git-interval".into(), "3600".into()];
    v.start();
    serving(port, good);
    assert_eq!(v.verdict("app", good, "success"), 202);
    v.wait_phase("wbr-preprod", "Validated", T);
    std::fs::write(
        work.join("vm/preprod.yaml"),
        release("wbr", "preprod", Some(bad), port, ""),
    )
    .unwrap();
    let at_bad = push(&work, "preprod at bad");
    assert_eq!(pushed(&v, &url, "main", &at_bad, SECRET), 202);
    v.wait_phase("wbr-preprod", "Verifying", T);
    // Rolled back while write-back is off: git still says `bad`.
    assert_eq!(v.verdict("app", bad, "failure"), 202);
    v.wait_phase("wbr-preprod", "RolledBack", T);
    v.kill();
    assert_eq!(git(&ops, &["rev-parse", "main"]), at_bad);

    // Restarted with write-back of rollbacks: the status says what git must say.
    v.extra_args
        .extend(["--write-back".into(), "rollbacks".into()]);
    v.start();
    let subject = wait_for(T, "the rollback written back", || {
        let s = git(&ops, &["log", "-1", "--format=%s", "main"]);
        s.starts_with("vigie: roll back").then_some(s)
    });
    assert_eq!(
        subject,
        format!(
            "vigie: roll back app in wbr-preprod: {} → {}",
            &bad[..7],
            &good[..7]
        )
    );
    assert!(
        git(&ops, &["show", "main:vm/preprod.yaml"]).contains(good),
        "the revision is the validated SHA again"
    );
    let row = v.wait_phase("wbr-preprod", "Validated", T);
    assert_eq!(row.quarantined, vec![bad.to_owned()]);
    serving(port, good);
    // Once applied, nothing more is committed.
    let commits = git(&ops, &["rev-list", "--count", "main"]);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(git(&ops, &["rev-list", "--count", "main"]), commits);
}
