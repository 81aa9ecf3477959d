//! Push webhooks, pure: GitHub's `push` event and GitLab's `Push Hook`, reduced to the
//! repository, the ref and the new commit, and matched against watched repositories.

use serde::Deserialize;

/// A push, as both providers describe it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Push {
    /// `refs/heads/main`, `refs/tags/v1.2.0`.
    pub reference: String,
    /// The commit the ref points to now (all zeros when deleted).
    pub after: String,
    /// The repository's clone URLs (HTTPS and SSH), as the payload gives them.
    pub urls: Vec<String>,
}

#[derive(Deserialize)]
struct GitHubPush {
    #[serde(rename = "ref")]
    reference: String,
    after: String,
    repository: GitHubRepository,
}

#[derive(Deserialize)]
#[allow(clippy::struct_field_names, reason = "GitHub's names")]
struct GitHubRepository {
    #[serde(default)]
    clone_url: Option<String>,
    #[serde(default)]
    ssh_url: Option<String>,
    #[serde(default)]
    html_url: Option<String>,
}

#[derive(Deserialize)]
struct GitLabPush {
    #[serde(rename = "ref")]
    reference: String,
    after: String,
    project: GitLabProject,
}

#[derive(Deserialize)]
#[allow(clippy::struct_field_names, reason = "GitLab's names")]
struct GitLabProject {
    #[serde(default)]
    git_http_url: Option<String>,
    #[serde(default)]
    git_ssh_url: Option<String>,
    #[serde(default)]
    web_url: Option<String>,
}

/// A GitHub `push` event.
///
/// # Errors
/// The payload is not a push event.
pub fn github(body: &[u8]) -> Result<Push, crate::ci::PayloadError> {
    let p: GitHubPush = serde_json::from_slice(body)
        .map_err(|e| crate::ci::PayloadError::new("push payload", e))?;
    let r = p.repository;
    Ok(Push {
        reference: p.reference,
        after: p.after,
        urls: [r.clone_url, r.ssh_url, r.html_url]
            .into_iter()
            .flatten()
            .collect(),
    })
}

/// A GitLab `Push Hook` or `Tag Push Hook`.
///
/// # Errors
/// The payload is not a push hook.
pub fn gitlab(body: &[u8]) -> Result<Push, crate::ci::PayloadError> {
    let p: GitLabPush = serde_json::from_slice(body)
        .map_err(|e| crate::ci::PayloadError::new("Push Hook payload", e))?;
    let r = p.project;
    Ok(Push {
        reference: p.reference,
        after: p.after,
        urls: [r.git_http_url, r.git_ssh_url, r.web_url]
            .into_iter()
            .flatten()
            .collect(),
    })
}

/// A clone URL reduced to `host/path` (no scheme, user, port, `.git` or trailing
/// slash; host lower-cased), so the HTTPS and SSH URLs of a repository compare equal.
#[must_use]
pub fn normalize(url: &str) -> String {
    let url = url.trim();
    let (host, path) = if let Some(rest) = url.split_once("://").map(|(_, r)| r) {
        let rest = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
        rest.split_once('/').unwrap_or((rest, ""))
    } else if let Some((userhost, path)) = url.split_once(':') {
        (userhost.rsplit_once('@').map_or(userhost, |(_, h)| h), path)
    } else {
        ("", url)
    };
    let host = host
        .split(':')
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase();
    let path = path.trim_matches('/');
    let path = path.strip_suffix(".git").unwrap_or(path);
    format!("{host}/{path}")
}

impl Push {
    /// Whether this push is to `url` (any of the payload's URLs).
    #[must_use]
    pub fn is_for(&self, url: &str) -> bool {
        let want = normalize(url);
        self.urls.iter().any(|u| normalize(u) == want)
    }

    /// The branch pushed, if a branch was.
    #[must_use]
    pub fn branch(&self) -> Option<&str> {
        self.reference.strip_prefix("refs/heads/")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn published(path: &str) -> Vec<u8> {
        std::fs::read(format!(
            "{}/tests/fixtures/{path}.json",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap()
    }

    #[test]
    fn the_published_push_payloads_parse() {
        let p = github(&published("github/push")).unwrap();
        assert_eq!(
            (p.reference.as_str(), p.branch()),
            ("refs/tags/simple-tag", None)
        );
        assert!(p.is_for("https://github.com/Codertocat/Hello-World.git"));
        assert!(p.is_for("git@github.com:Codertocat/Hello-World.git"));
        let p = gitlab(&published("gitlab/push")).unwrap();
        assert_eq!(p.branch(), Some("master"));
        assert_eq!(p.after, "da1560886d4f094c3e6c9ef40349f7d38b5d27d7");
        assert!(p.is_for("http://example.com/mike/diaspora.git"));
        assert!(p.is_for("git@example.com:mike/diaspora.git"));
        let p = gitlab(&published("gitlab/tag_push")).unwrap();
        assert_eq!(
            (p.reference.as_str(), p.branch()),
            ("refs/tags/v1.0.0", None)
        );
        assert!(p.is_for("ssh://git@example.com/jsmith/example.git"));
    }

    #[test]
    fn urls_of_one_repository_compare_equal() {
        let n = normalize("https://github.com/Acme/ops.git");
        assert_eq!(n, "github.com/Acme/ops");
        assert_eq!(normalize("git@GitHub.com:Acme/ops.git"), n);
        assert_eq!(normalize("ssh://git@github.com:22/Acme/ops"), n);
        assert_eq!(normalize("https://user:t0ken@github.com/Acme/ops/"), n);
        assert_ne!(normalize("https://github.com/Acme/ops2.git"), n);
        assert_eq!(normalize("file:///srv/git/ops.git"), "/srv/git/ops");
    }

    #[test]
    fn github_and_gitlab_pushes_as_documented() {
        let gh = br#"{"ref": "refs/heads/main", "before": "0000000000000000000000000000000000000000",
            "after": "6113728f27ae82c7b1a177c8d03f9e96e0adf246", "created": true, "deleted": false, "forced": false,
            "repository": {"id": 1, "full_name": "acme/ops", "clone_url": "https://github.com/acme/ops.git",
            "ssh_url": "git@github.com:acme/ops.git", "html_url": "https://github.com/acme/ops"},
            "pusher": {"name": "octocat"}, "commits": []}"#;
        let p = github(gh).unwrap();
        assert_eq!(p.branch(), Some("main"));
        assert_eq!(p.after, "6113728f27ae82c7b1a177c8d03f9e96e0adf246");
        assert!(p.is_for("git@github.com:acme/ops.git"));
        assert!(!p.is_for("https://github.com/acme/web.git"));
        let gl = br#"{"object_kind": "push", "event_name": "push", "before": "95790bf891e76fee5e1747ab589903a6a1f80f22",
            "after": "da1560886d4f094c3e6c9ef40349f7d38b5d27d7", "ref": "refs/tags/v1.2.0", "checkout_sha": "da1560886d4f094c3e6c9ef40349f7d38b5d27d7",
            "user_name": "John Smith", "project_id": 15,
            "project": {"id": 15, "name": "ops", "web_url": "https://gitlab.example/data/ops",
              "git_ssh_url": "git@gitlab.example:data/ops.git", "git_http_url": "https://gitlab.example/data/ops.git",
              "path_with_namespace": "data/ops"}, "commits": [], "total_commits_count": 0}"#;
        let p = gitlab(gl).unwrap();
        assert_eq!(p.branch(), None);
        assert_eq!(p.reference, "refs/tags/v1.2.0");
        assert!(p.is_for("https://gitlab.example/data/ops"));
        assert!(github(b"{}").is_err());
    }
}
