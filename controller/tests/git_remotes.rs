//! git2 against real remotes: Git's smart-HTTP server (`git http-backend`) with a
//! token, and OpenSSH with a client key and the server's host key checked against
//! `known_hosts`.

mod gitserve;

use gitserve::git;

use std::path::Path;

use vigie::gitops::repo::{Credentials, Mirror};

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

    let e = mirror.fetch(&main, &Credentials::default()).unwrap_err();
    assert!(e.contains("cannot fetch from"), "{e}");
    let wrong = Credentials {
        token: Some("not-it".into()),
        ..Credentials::default()
    };
    let e = mirror.fetch(&main, &wrong).unwrap_err();
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
        assert!(
            std::env::var("VIGIE_E2E_DOCKER").is_err(),
            "make test needs openssh-server (sshd) and root for the SSH tests"
        );
        eprintln!("skipped: no sshd, or not root");
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
    let e = mirror.fetch(&main, &unknown).unwrap_err();
    assert!(e.contains("is not in knownHosts"), "{e}");

    let impostor = Credentials {
        ssh_key: Some(server.client_key.clone()),
        known_hosts: Some(server.wrong_known_hosts.clone()),
        ..Credentials::default()
    };
    let e = mirror.fetch(&main, &impostor).unwrap_err();
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
