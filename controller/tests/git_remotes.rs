//! git2 against real remotes: Git's smart-HTTP server (`git http-backend`) with a
//! token, and OpenSSH with a client key and the server's host key checked against
//! `known_hosts`.

mod gitserve;
mod skip;

use gitserve::git;

use std::path::Path;

use vigie::gitops::{
    repo::{Credentials, Mirror},
    source::GitSource,
    writeback::{Author, Outcome, Scope, Target, write_revision},
};

/// A bare repository `ops.git` under `root` with one commit holding `vm/app.yaml`.
fn repository(root: &Path) -> String {
    let _ = std::fs::remove_dir_all(root);
    std::fs::create_dir_all(root).unwrap();
    let bare = root.join("ops.git");
    let work = root.join("work");
    git(
        root,
        &["init", "-q", "--bare", "-b", "main", bare.to_str().unwrap()],
    );
    git(root, &["init", "-q", "-b", "main", work.to_str().unwrap()]);
    std::fs::create_dir_all(work.join("vm")).unwrap();
    std::fs::write(work.join("vm/app.yaml"), "kind: Release\n").unwrap();
    std::fs::write(work.join("notes.txt"), "not a manifest\n").unwrap();
    git(&work, &["add", "-A"]);
    git(&work, &["commit", "-q", "-m", "first"]);
    git(&work, &["push", "-q", bare.to_str().unwrap(), "main"]);
    git(&work, &["rev-parse", "HEAD"])
}

fn root(test: &str) -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../target/git-remotes")
        .join(test)
}

#[test]
fn an_https_style_remote_takes_the_token_and_refuses_without_it() {
    let dir = root("http");
    let head = repository(&dir);
    let server = gitserve::HttpGit::start(&dir, "s3cret-token");
    let url = server.url("ops.git");
    let cache = dir.join("cache");
    let mirror = Mirror::open(&cache, &url).unwrap();
    let main = vec!["refs/heads/main".to_owned()];

    let e = mirror
        .fetch(&main, &Credentials::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("cannot fetch from"), "{e}");
    let wrong = Credentials {
        token: Some("not-it".into()),
        ..Credentials::default()
    };
    let e = mirror.fetch(&main, &wrong).unwrap_err().to_string();
    assert!(!e.contains("not-it"), "a token in a message: {e}");

    let right = Credentials {
        token: Some("s3cret-token".into()),
        ..Credentials::default()
    };
    mirror.fetch(&main, &right).unwrap();
    let tip = mirror.tip("refs/heads/main").unwrap();
    assert_eq!(tip.as_str(), head);
    let files = mirror.files(&tip, "vm").unwrap();
    assert_eq!(
        files,
        [(
            Path::new("vm/app.yaml").to_owned(),
            "kind: Release\n".to_owned()
        )]
    );
    assert!(format!("{right:?}").contains("***"));
}

#[test]
fn an_ssh_remote_is_trusted_only_with_its_known_host_key() {
    let dir = root("ssh");
    let head = repository(&dir);
    let Some(server) = gitserve::SshGit::start(&dir.join("sshd")) else {
        skip::skip(
            "sshd and root for the SSH tests (Debian: openssh-server; make deps installs it)",
            "VIGIE_E2E_DOCKER",
        );
        return;
    };
    let url = server.url(&dir.join("ops.git"));
    let cache = dir.join("cache");
    let mirror = Mirror::open(&cache, &url).unwrap();
    let main = vec!["refs/heads/main".to_owned()];

    let unknown = Credentials {
        ssh_key: Some(server.client_key.clone()),
        ..Credentials::default()
    };
    let e = mirror.fetch(&main, &unknown).unwrap_err().to_string();
    assert!(e.contains("is not in knownHosts"), "{e}");

    let impostor = Credentials {
        ssh_key: Some(server.client_key.clone()),
        known_hosts: Some(server.wrong_known_hosts.clone()),
        ..Credentials::default()
    };
    let e = mirror.fetch(&main, &impostor).unwrap_err().to_string();
    assert!(e.contains("differs from the one in knownHosts"), "{e}");
    assert!(!e.contains("PRIVATE KEY"), "{e}");

    let trusted = Credentials {
        ssh_key: Some(server.client_key.clone()),
        known_hosts: Some(server.known_hosts.clone()),
        ..Credentials::default()
    };
    mirror.fetch(&main, &trusted).unwrap();
    assert_eq!(mirror.tip("refs/heads/main").unwrap().as_str(), head);
}

const OLD: &str = "a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1";
const NEW: &str = "b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2";

/// A bare manifests repository `ops.git` under `root`: `vm/app.yaml` holds an
/// Environment and the Release `app-dev` at `OLD`, with comments.
fn manifests_repository(root: &Path) -> std::path::PathBuf {
    let _ = std::fs::remove_dir_all(root);
    std::fs::create_dir_all(root).unwrap();
    let bare = root.join("ops.git");
    let work = root.join("work");
    git(
        root,
        &["init", "-q", "--bare", "-b", "main", bare.to_str().unwrap()],
    );
    git(root, &["init", "-q", "-b", "main", work.to_str().unwrap()]);
    std::fs::create_dir_all(work.join("vm")).unwrap();
    std::fs::write(work.join("vm/app.yaml"), manifest(OLD)).unwrap();
    std::fs::write(work.join("notes.txt"), "0\n").unwrap();
    git(&work, &["add", "-A"]);
    git(&work, &["commit", "-q", "-m", "first"]);
    git(&work, &["push", "-q", bare.to_str().unwrap(), "main"]);
    bare
}

fn manifest(revision: &str) -> String {
    format!(
        "apiVersion: vigie.dev/v1alpha1\nkind: Environment\nmetadata: {{name: dev}}\nspec:\n  backend: {{docker: {{}}}}\n---\n# dev follows main\napiVersion: vigie.dev/v1alpha1\nkind: Release\nmetadata:\n  name: app-dev\nspec:\n  environment: dev\n  codeLocation: app\n  revision: {revision}   # moved by Vigie\n"
    )
}

/// Someone else's push to the bare repository: a new line in `notes.txt`.
fn concurrent_push(root: &Path, n: u32) {
    let other = root.join("other");
    let bare = root.join("ops.git");
    if !other.exists() {
        git(
            root,
            &[
                "clone",
                "-q",
                bare.to_str().unwrap(),
                other.to_str().unwrap(),
            ],
        );
    }
    git(&other, &["pull", "-q", "--ff-only"]);
    std::fs::write(other.join("notes.txt"), format!("{n}\n")).unwrap();
    git(&other, &["commit", "-q", "-am", &format!("concurrent {n}")]);
    git(&other, &["push", "-q", "origin", "main"]);
}

fn target(url: String, cache: std::path::PathBuf, credentials: Credentials) -> Target {
    Target {
        source: GitSource {
            url,
            branch: "main".into(),
            dir: "vm".into(),
        },
        credentials,
        cache,
        author: Author::parse("Vigie Bot <vigie@example.com>").unwrap(),
        default_namespace: "default".into(),
        scope: Scope {
            tracking: true,
            rollbacks: true,
        },
    }
}

fn sha(s: &str) -> vigie::api::Sha {
    s.parse().unwrap()
}

#[test]
fn write_back_commits_over_http_and_retries_when_the_branch_moves() {
    let dir = root("write-back-http");
    let bare = manifests_repository(&dir);
    // A concurrent push lands while Vigie pushes, twice: first between Vigie's fetch and
    // its push (it sees a tip it does not have), then during its push itself (the remote
    // refuses to move a branch that is no longer where Vigie said).
    let races = std::sync::Arc::new(std::sync::Mutex::new(Vec::<&'static str>::new()));
    let (r, d) = (races.clone(), dir.clone());
    let server = gitserve::HttpGit::start_with(
        &dir,
        "s3cret-token",
        std::sync::Arc::new(move |method: &str, target: &str| {
            let mut races = r.lock().unwrap();
            let receive_refs = method == "GET" && target.ends_with("service=git-receive-pack");
            let receive_pack = method == "POST" && target.ends_with("/git-receive-pack");
            if receive_refs && races.is_empty() {
                races.push("before the push");
                concurrent_push(&d, 1);
            } else if receive_pack && races.len() == 1 {
                races.push("during the push");
                concurrent_push(&d, 2);
            }
        }),
    );
    let creds = Credentials {
        token: Some("s3cret-token".into()),
        ..Credentials::default()
    };
    let t = target(server.url("ops.git"), dir.join("cache"), creds);
    let message = "vigie: app in dev a1a1a1a → b2b2b2b (main)";
    let outcome = write_revision(&t, "default", "app-dev", &sha(NEW), message).unwrap();
    let Outcome::Committed {
        commit,
        file,
        attempts,
    } = outcome
    else {
        panic!("{outcome:?}")
    };
    assert_eq!(
        *races.lock().unwrap(),
        ["before the push", "during the push"]
    );
    assert_eq!(attempts, 3, "two lost races, then the push");
    assert_eq!(file, Path::new("vm/app.yaml"));
    // The branch has Vigie's commit on top of both concurrent ones, nothing lost.
    assert_eq!(git(&bare, &["rev-parse", "main"]), commit.as_str());
    assert_eq!(
        git(&bare, &["log", "--format=%s|%an <%ae>", "-3", "main"]),
        format!(
            "{message}|Vigie Bot <vigie@example.com>\nconcurrent 2|ops <ops@example.com>\nconcurrent 1|ops <ops@example.com>"
        )
    );
    assert_eq!(git(&bare, &["show", "main:notes.txt"]), "2");
    assert_eq!(
        git(&bare, &["show", "main:vm/app.yaml"]),
        manifest(NEW).trim_end()
    );
    // Once there, writing the same revision again commits nothing.
    assert_eq!(
        write_revision(&t, "default", "app-dev", &sha(NEW), message).unwrap(),
        Outcome::Unchanged
    );
    assert_eq!(git(&bare, &["rev-parse", "main"]), commit.as_str());
    // A Release that is not in the folder is named, and nothing is pushed.
    let e = write_revision(&t, "default", "app-prod", &sha(OLD), message)
        .unwrap_err()
        .to_string();
    assert!(e.contains("Release default/app-prod is not in"), "{e}");
    assert!(!e.contains("s3cret"), "{e}");
    // Without the token, the push is refused with a clear error.
    let t = target(
        server.url("ops.git"),
        dir.join("cache2"),
        Credentials::default(),
    );
    let e = write_revision(&t, "default", "app-dev", &sha(OLD), message)
        .unwrap_err()
        .to_string();
    assert!(e.contains("cannot fetch"), "{e}");
}

#[test]
fn write_back_over_ssh_and_file() {
    let dir = root("write-back-file");
    let bare = manifests_repository(&dir);
    let t = target(
        format!("file://{}", bare.display()),
        dir.join("cache"),
        Credentials::default(),
    );
    let outcome = write_revision(&t, "default", "app-dev", &sha(NEW), "vigie: file").unwrap();
    assert!(
        matches!(outcome, Outcome::Committed { attempts: 1, .. }),
        "{outcome:?}"
    );
    assert_eq!(
        git(&bare, &["show", "main:vm/app.yaml"]),
        manifest(NEW).trim_end()
    );

    let dir = root("write-back-ssh");
    let bare = manifests_repository(&dir);
    let Some(server) = gitserve::SshGit::start(&dir.join("sshd")) else {
        skip::skip(
            "sshd and root for the SSH tests (Debian: openssh-server; make deps installs it)",
            "VIGIE_E2E_DOCKER",
        );
        return;
    };
    let impostor = Credentials {
        ssh_key: Some(server.client_key.clone()),
        known_hosts: Some(server.wrong_known_hosts.clone()),
        ..Credentials::default()
    };
    let t = target(server.url(&bare), dir.join("cache"), impostor);
    let e = write_revision(&t, "default", "app-dev", &sha(NEW), "vigie: ssh")
        .unwrap_err()
        .to_string();
    assert!(e.contains("differs from the one in knownHosts"), "{e}");
    // known_hosts hashed by OpenSSH's own `ssh-keygen -H`.
    let file = dir.join("known_hosts");
    std::fs::write(&file, &server.known_hosts).unwrap();
    let out = std::process::Command::new("ssh-keygen")
        .arg("-H")
        .arg("-f")
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let hashed = std::fs::read_to_string(&file).unwrap();
    assert!(hashed.starts_with("|1|"), "{hashed}");
    let trusted = Credentials {
        ssh_key: Some(server.client_key.clone()),
        known_hosts: Some(hashed),
        ..Credentials::default()
    };
    let t = target(server.url(&bare), dir.join("cache"), trusted);
    let outcome = write_revision(&t, "default", "app-dev", &sha(NEW), "vigie: ssh").unwrap();
    assert!(
        matches!(outcome, Outcome::Committed { attempts: 1, .. }),
        "{outcome:?}"
    );
    assert_eq!(
        git(&bare, &["log", "-1", "--format=%s", "main"]),
        "vigie: ssh"
    );
}
