//! A working tree on the Docker host moved to a SHA with git2: the `git fetch` +
//! `git reset --hard SHA` of the VM scripts. Untracked files (data the app writes)
//! are left alone, as `reset --hard` does.

use std::path::Path;

use git2::{FetchOptions, Oid, Repository, build::CheckoutBuilder};

use crate::{api::Sha, backend::BackendError};

fn err(sha: &Sha, path: &Path, reason: &dyn std::fmt::Display) -> BackendError {
    BackendError::Checkout {
        sha: sha.to_string(),
        path: path.display().to_string(),
        reason: reason.to_string(),
    }
}

/// Makes the working tree at `path` hold `sha`, cloning `url` there first if needed
/// and fetching when the commit is not known yet.
pub fn checkout(url: &str, path: &Path, sha: &Sha) -> Result<(), BackendError> {
    let repo = if let Ok(repo) = Repository::open(path) {
        repo
    } else {
        std::fs::create_dir_all(path).map_err(|e| err(sha, path, &e))?;
        Repository::init(path).map_err(|e| err(sha, path, &e))?
    };
    let oid = Oid::from_str(sha.as_str()).map_err(|e| err(sha, path, &e))?;
    if repo.find_commit(oid).is_err() {
        let mut remote = repo.remote_anonymous(url).map_err(|e| err(sha, path, &e))?;
        remote
            .fetch(
                &[
                    "+refs/heads/*:refs/remotes/origin/*",
                    "+refs/tags/*:refs/tags/*",
                ],
                Some(&mut FetchOptions::new()),
                None,
            )
            .map_err(|e| {
                err(
                    sha,
                    path,
                    &format!("fetch from {}: {e}", crate::git::redact(url)),
                )
            })?;
    }
    let commit = repo.find_commit(oid).map_err(|_| {
        err(
            sha,
            path,
            &format!("commit not found in {}", crate::git::redact(url)),
        )
    })?;
    repo.checkout_tree(commit.as_object(), Some(CheckoutBuilder::new().force()))
        .map_err(|e| err(sha, path, &e))?;
    repo.set_head_detached(oid)
        .map_err(|e| err(sha, path, &e))?;
    Ok(())
}

/// The SHA the working tree at `path` holds, if it is a repository with a commit.
#[must_use]
pub fn head(path: &Path) -> Option<Sha> {
    let repo = Repository::open(path).ok()?;
    let oid = repo.head().ok()?.target()?;
    oid.to_string().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::git;

    #[test]
    fn the_working_tree_follows_the_sha_and_keeps_untracked_files() {
        let tmp = std::env::temp_dir().join(format!("vigie-checkout-{}", std::process::id()));
        let origin = tmp.join("origin");
        std::fs::create_dir_all(&origin).unwrap();
        git(&origin, &["init", "-q", "-b", "main"]);
        std::fs::write(origin.join("health"), "ok\n").unwrap();
        git(&origin, &["add", "-A"]);
        git(&origin, &["commit", "-q", "-m", "good"]);
        let a: Sha = git(&origin, &["rev-parse", "HEAD"]).parse().unwrap();
        std::fs::write(origin.join("health"), "fail\n").unwrap();
        git(&origin, &["commit", "-q", "-am", "bad"]);
        let b: Sha = git(&origin, &["rev-parse", "HEAD"]).parse().unwrap();

        let url = format!("file://{}", origin.display());
        let tree = tmp.join("preprod");
        checkout(&url, &tree, &b).unwrap();
        assert_eq!(
            std::fs::read_to_string(tree.join("health")).unwrap(),
            "fail\n"
        );
        std::fs::write(tree.join("data.db"), "user data").unwrap();
        checkout(&url, &tree, &a).unwrap();
        assert_eq!(
            std::fs::read_to_string(tree.join("health")).unwrap(),
            "ok\n"
        );
        assert_eq!(head(&tree), Some(a));
        assert!(tree.join("data.db").exists(), "untracked files are kept");

        let unknown: Sha = "0123456789abcdef0123456789abcdef01234567".parse().unwrap();
        let e = checkout(&url, &tree, &unknown).unwrap_err().to_string();
        assert!(e.contains("commit not found"), "{e}");
        std::fs::remove_dir_all(&tmp).unwrap();
    }
}
