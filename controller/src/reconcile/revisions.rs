//! Revisions resolved with git (`ls-remote`), each answer reused for a while.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use super::ports::Revisions;
use crate::{api::Sha, git::GitError};

/// How long a revision's resolution is reused.
pub const TTL: Duration = Duration::from_secs(30);
/// How long a repository may take to answer.
pub const TIMEOUT: Duration = Duration::from_secs(15);

/// Answers by (repository, revision), with when they were had.
type Answers = HashMap<(String, String), (Instant, Result<Sha, GitError>)>;

/// The git implementation of [`Revisions`]: a full SHA is itself; a branch or a tag is
/// asked of the repository, off the async runtime, at most every [`TTL`].
#[derive(Default)]
pub struct Git {
    resolved: Mutex<Answers>,
}

impl Revisions for Git {
    async fn resolve(&self, repo: &str, revision: &str) -> Result<Sha, GitError> {
        if let Ok(sha) = revision.parse::<Sha>() {
            return Ok(sha);
        }
        let key = (repo.to_owned(), revision.to_owned());
        let fresh = self.resolved.lock().ok().and_then(|m| {
            m.get(&key)
                .filter(|(at, _)| at.elapsed() < TTL)
                .map(|(_, r)| r.clone())
        });
        if let Some(r) = fresh {
            return r;
        }
        let (url, rev) = key.clone();
        let resolving = tokio::task::spawn_blocking(move || crate::git::resolve(&url, &rev));
        let result = match tokio::time::timeout(TIMEOUT, resolving).await {
            Ok(joined) => joined.unwrap_or_else(|e| Err(GitError::Local(e.to_string()))),
            Err(_) => Err(GitError::Timeout(TIMEOUT.as_secs())),
        };
        if let Ok(mut m) = self.resolved.lock() {
            m.retain(|_, (at, _)| at.elapsed() < TTL);
            m.insert(key, (Instant::now(), result.clone()));
        }
        result
    }
}
