//! Where manifests come from: a directory (or file) on disk, or a folder of a branch
//! of a git repository, written `URL#BRANCH:DIR`.

use std::{fmt, path::PathBuf};

/// A manifests source.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// A directory or file on disk.
    Path(PathBuf),
    /// A folder of a branch of a git repository.
    Git(GitSource),
}

/// A folder of a branch of a git repository.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GitSource {
    /// Clone URL (`https://`, `http://`, `ssh://`, `git@host:path`, `file://`).
    pub url: String,
    /// The branch followed.
    pub branch: String,
    /// The folder of the manifests in the repository (`""` for the root).
    pub dir: String,
}

impl fmt::Display for GitSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}#{}", crate::git::redact(&self.url), self.branch)?;
        if !self.dir.is_empty() {
            write!(f, ":{}", self.dir)?;
        }
        Ok(())
    }
}

fn is_url(s: &str) -> bool {
    ["https://", "http://", "ssh://", "file://", "git://"]
        .iter()
        .any(|p| s.starts_with(p))
        || (s.contains('@') && s.split_once(':').is_some_and(|(h, _)| !h.contains('/')))
}

/// Why a source cannot be used.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum SourceError {
    /// A part of `URL#BRANCH:DIR` is wrong.
    #[error(
        "{given:?}: {reason} (expected URL#BRANCH:DIR, e.g. https://git.example/ops.git#main:vm)"
    )]
    Malformed {
        /// What was given (credentials redacted).
        given: String,
        /// What is wrong.
        reason: &'static str,
    },
}

/// Parses a `--manifests` value: a git source when it is a URL, else a path.
///
/// # Errors
/// A URL whose branch or folder is malformed.
pub fn parse(s: &str) -> Result<Source, SourceError> {
    if !is_url(s) {
        return Ok(Source::Path(PathBuf::from(s)));
    }
    let malformed = |reason| SourceError::Malformed {
        given: crate::git::redact(s),
        reason,
    };
    let (url, rest) = match s.rsplit_once('#') {
        Some((url, rest)) => (url, Some(rest)),
        None => (s, None),
    };
    let (branch, dir) = match rest {
        None => ("main", ""),
        Some(r) => r.split_once(':').unwrap_or((r, "")),
    };
    if url.is_empty() {
        return Err(malformed("no URL"));
    }
    if branch.is_empty()
        || branch.starts_with(['-', '/', '.'])
        || branch.ends_with(['/', '.'])
        || branch.contains("..")
        || branch.contains(|c: char| c.is_whitespace() || "~^:?*[\\".contains(c))
    {
        return Err(malformed("not a branch name"));
    }
    let dir = dir.trim_matches('/');
    if dir.split('/').any(|part| part == ".." || part == ".") || dir.contains('\\') {
        return Err(malformed(
            "the folder must be a plain path inside the repository",
        ));
    }
    Ok(Source::Git(GitSource {
        url: url.to_owned(),
        branch: branch.to_owned(),
        dir: dir.to_owned(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn git(url: &str, branch: &str, dir: &str) -> Source {
        Source::Git(GitSource {
            url: url.into(),
            branch: branch.into(),
            dir: dir.into(),
        })
    }

    #[test]
    fn sources_are_paths_or_url_branch_and_folder() {
        assert_eq!(
            parse("examples/vm").unwrap(),
            Source::Path("examples/vm".into())
        );
        assert_eq!(
            parse("/etc/vigie").unwrap(),
            Source::Path("/etc/vigie".into())
        );
        assert_eq!(
            parse("https://git.example/ops.git#main:envs/vm").unwrap(),
            git("https://git.example/ops.git", "main", "envs/vm")
        );
        assert_eq!(
            parse("https://git.example/ops.git").unwrap(),
            git("https://git.example/ops.git", "main", "")
        );
        assert_eq!(
            parse("file:///srv/ops.git#release/1.x").unwrap(),
            git("file:///srv/ops.git", "release/1.x", "")
        );
        assert_eq!(
            parse("git@github.com:acme/ops.git#prod:/vm/").unwrap(),
            git("git@github.com:acme/ops.git", "prod", "vm")
        );
        assert_eq!(
            parse("ssh://git@127.0.0.1:2222/srv/ops.git#main:.").unwrap_err(),
            SourceError::Malformed {
                given: "ssh://***@127.0.0.1:2222/srv/ops.git#main:.".into(),
                reason: "the folder must be a plain path inside the repository"
            }
        );
        for bad in [
            "https://h/ops.git#",
            "https://h/ops.git#a..b",
            "https://h/ops.git#-x",
            "https://h/o.git#a b",
        ] {
            assert!(
                matches!(
                    parse(bad),
                    Err(SourceError::Malformed {
                        reason: "not a branch name",
                        ..
                    })
                ),
                "{bad}"
            );
        }
        assert!(parse("https://h/o.git#main:../etc").is_err());
    }

    #[test]
    fn a_source_shows_without_its_credentials() {
        let Source::Git(g) = parse("https://user:t0ken@git.example/ops.git#main:vm").unwrap()
        else {
            panic!()
        };
        assert_eq!(g.to_string(), "https://***@git.example/ops.git#main:vm");
    }
}
