//! Git at the edge: resolving a revision (branch or tag) to a SHA on a remote, the
//! `git ls-remote` way, with git2.

use git2::{Direction, Remote};

use crate::{api::Sha, error::Category};

/// Why git could not answer. Each variant carries the message for people (credentials
/// redacted); the variant says what kind of fault it is.
#[derive(Clone, Debug, thiserror::Error)]
pub enum GitError {
    /// The remote did not answer, refused the credentials, or its host key is not
    /// trusted.
    #[error("{0}")]
    Remote(String),
    /// A branch, tag, commit or folder is not where it was looked for.
    #[error("{0}")]
    NotFound(String),
    /// The local mirror could not be created or read.
    #[error("{0}")]
    Local(String),
    /// The remote did not answer in time.
    #[error("no answer from the repository within {0}s")]
    Timeout(u64),
}

impl GitError {
    /// The kind of fault.
    #[must_use]
    pub fn category(&self) -> Category {
        match self {
            Self::Remote(_) | Self::Timeout(_) => Category::Forge,
            Self::NotFound(_) => Category::InvalidSpec,
            Self::Local(_) => Category::Store,
        }
    }
}

impl From<GitError> for String {
    fn from(e: GitError) -> Self {
        e.to_string()
    }
}

/// One commit, as a person reads it in a list (a promotion's or a rollback's).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Commit {
    /// The commit.
    pub sha: Sha,
    /// Its subject line.
    pub subject: String,
    /// Its author's name.
    pub author: String,
}

/// `url` with any user and password replaced by `***`, for messages.
#[must_use]
pub fn redact(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => match rest.split_once('@') {
            Some((userinfo, host)) if !userinfo.contains('/') => format!("{scheme}://***@{host}"),
            _ => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

/// Resolves `revision` on the repository at `url`: a full SHA is itself; otherwise
/// `refs/heads/<revision>`, then `refs/tags/<revision>` (annotated tags peeled).
///
/// # Errors
/// The remote cannot be reached, or names no such branch or tag.
pub fn resolve(url: &str, revision: &str) -> Result<Sha, GitError> {
    if let Ok(sha) = revision.parse::<Sha>() {
        return Ok(sha);
    }
    let shown = redact(url);
    let mut remote = Remote::create_detached(url)
        .map_err(|e| GitError::Remote(format!("{shown}: {}", e.message())))?;
    remote
        .connect(Direction::Fetch)
        .map_err(|e| GitError::Remote(format!("cannot reach {shown}: {}", e.message())))?;
    let heads = remote
        .list()
        .map_err(|e| GitError::Remote(format!("{shown}: {}", e.message())))?;
    let find = |name: &str| {
        heads
            .iter()
            .find(|h| h.name() == name)
            .map(|h| h.oid().to_string())
    };
    let peeled = find(&format!("refs/tags/{revision}^{{}}"));
    let sha = find(&format!("refs/heads/{revision}"))
        .or(peeled)
        .or_else(|| find(&format!("refs/tags/{revision}")))
        .ok_or_else(|| GitError::NotFound(format!("no branch or tag {revision:?} in {shown}")))?;
    sha.parse()
        .map_err(|e| GitError::Remote(format!("{shown} answered {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::git;

    #[test]
    fn credentials_never_reach_messages() {
        assert_eq!(
            redact("https://user:t0ken@git.example/org/app.git"),
            "https://***@git.example/org/app.git"
        );
        assert_eq!(
            redact("https://git.example/org/app.git"),
            "https://git.example/org/app.git"
        );
        assert_eq!(
            redact("ssh://git@git.example/org/app.git"),
            "ssh://***@git.example/org/app.git"
        );
        let e = resolve("https://user:t0ken@127.0.0.1:1/org/app.git", "main").unwrap_err();
        assert!(!e.to_string().contains("t0ken"), "{e}");
        assert_eq!(e.category(), Category::Forge);
    }

    #[test]
    fn branches_and_tags_resolve_to_shas() {
        let dir = std::env::temp_dir().join(format!("vigie-git-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        git(&dir, &["init", "-q", "-b", "main"]);
        git(&dir, &["commit", "-q", "--allow-empty", "-m", "one"]);
        let one = git(&dir, &["rev-parse", "HEAD"]);
        git(&dir, &["tag", "-a", "v1.0.0", "-m", "release"]);
        git(&dir, &["commit", "-q", "--allow-empty", "-m", "two"]);
        let two = git(&dir, &["rev-parse", "HEAD"]);
        let url = format!("file://{}", dir.display());
        assert_eq!(resolve(&url, "main").unwrap().to_string(), two);
        assert_eq!(
            resolve(&url, "v1.0.0").unwrap().to_string(),
            one,
            "annotated tags are peeled"
        );
        assert_eq!(resolve(&url, &one).unwrap().to_string(), one);
        let missing = resolve(&url, "nope").unwrap_err();
        assert!(
            matches!(&missing, GitError::NotFound(m) if m.contains("no branch or tag \"nope\"")),
            "{missing:?}"
        );
        assert_eq!(missing.category(), Category::InvalidSpec);
        let unreachable = resolve("file:///nonexistent/repo", "main").unwrap_err();
        assert!(
            matches!(&unreachable, GitError::Remote(m) if m.contains("cannot reach")),
            "{unreachable:?}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
