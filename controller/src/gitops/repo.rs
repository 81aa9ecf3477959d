//! A local mirror of a remote branch (git2): fetched on demand, read at a commit,
//! asked about ancestry. Credentials: a token (or a GitHub App's installation token,
//! had before the blocking work) for HTTPS, a private key for SSH with
//! the server's host key checked against `known_hosts` lines (an unknown or changed
//! host key is refused, never trusted silently). Secrets never reach messages.

use std::path::{Path, PathBuf};

use git2::{
    CertificateCheckStatus, Cred, CredentialType, FetchOptions, Oid, RemoteCallbacks, Repository,
};

use crate::{api::Sha, git::GitError};

/// Credentials for a remote.
#[derive(Clone, Default)]
pub struct Credentials {
    /// HTTPS token (sent as the password; the user is the URL's, else `x-access-token`).
    pub token: Option<String>,
    /// SSH private key (OpenSSH or PEM format).
    pub ssh_key: Option<String>,
    /// `known_hosts` lines the SSH server's key must match.
    pub known_hosts: Option<String>,
}

impl Credentials {
    /// A repository's credentials as a CodeLocation names them, each read by `resolve`
    /// (files and variables standalone; Secrets too in the operator). One that cannot
    /// be read is left out, with a warning naming where it was looked for.
    pub fn from_spec(
        spec: Option<&crate::api::code_location::GitCredentials>,
        resolve: impl Fn(&crate::api::SecretSource) -> Result<Vec<u8>, crate::secrets::SecretError>,
    ) -> Self {
        let Some(c) = spec else {
            return Self::default();
        };
        let read = |s: Option<&crate::api::SecretSource>| {
            s.and_then(|s| match resolve(s) {
                Ok(v) => String::from_utf8(v).ok(),
                Err(e) => {
                    tracing::warn!(error = %e, "repository credential unavailable");
                    None
                }
            })
        };
        Self {
            token: read(c.token.as_ref()),
            // A key keeps a final newline: OpenSSH wants it.
            ssh_key: read(c.ssh_key.as_ref()).map(|k| k + "\n"),
            known_hosts: read(c.known_hosts.as_ref()),
        }
    }

    /// [`Self::from_spec`], plus an installation token when the credentials name a
    /// GitHub App (`githubApp`): minted, or reused while fresh, by `auth`, before any
    /// blocking git work. An App that gives no token is left out, with a warning
    /// naming why (the remote then refuses, and says so).
    pub async fn resolve(
        spec: Option<&crate::api::code_location::GitCredentials>,
        auth: &crate::ci::auth::Auth,
        resolve: &crate::ci::auth::Resolve<'_>,
    ) -> Self {
        let mut creds = Self::from_spec(spec, resolve);
        if let Some(app) = spec.and_then(|c| c.github_app.as_ref()) {
            let what = "repo.credentials.githubApp.privateKey";
            match auth
                .github_app(&app.api_url, &app.app(), what, resolve)
                .await
            {
                Ok(token) => creds.token = Some(token),
                Err(e) => tracing::warn!(error = %e, "repository credential unavailable"),
            }
        }
        creds
    }
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("token", &self.token.as_ref().map(|_| "***"))
            .field("ssh_key", &self.ssh_key.as_ref().map(|_| "***"))
            .field(
                "known_hosts",
                &self.known_hosts.as_ref().map(|k| k.lines().count()),
            )
            .finish()
    }
}

/// Whether a hashed `known_hosts` name (`|1|salt|hash`, as `ssh-keygen -H` writes
/// them: HMAC-SHA1 of the name keyed by the salt) is `name`.
fn hashed_name_is(entry: &str, name: &str) -> bool {
    use base64::Engine as _;
    use hmac::{KeyInit as _, Mac as _};
    let Some(rest) = entry.strip_prefix("|1|") else {
        return false;
    };
    let Some((salt, hash)) = rest.split_once('|') else {
        return false;
    };
    let b64 = base64::engine::general_purpose::STANDARD;
    let (Ok(salt), Ok(hash)) = (b64.decode(salt), b64.decode(hash)) else {
        return false;
    };
    let Ok(mut mac) = hmac::Hmac::<sha1::Sha1>::new_from_slice(&salt) else {
        return false;
    };
    mac.update(name.as_bytes());
    mac.verify_slice(&hash).is_ok()
}

/// The SSH port a remote URL names (`ssh://host:2222/…`), else 22.
fn ssh_port(url: &str) -> u16 {
    url.strip_prefix("ssh://")
        .and_then(|rest| rest.split('/').next())
        .and_then(|authority| {
            authority
                .rsplit_once('@')
                .map_or(Some(authority), |(_, h)| Some(h))
        })
        .and_then(|host| host.rsplit_once(':'))
        .and_then(|(_, port)| port.parse().ok())
        .unwrap_or(22)
}

/// Whether an SSH host key is listed for `host` (on `port`) in `known_hosts` text;
/// `Err` names why not (no entry for the host, or a different key: a possible
/// impostor). Entries are in clear (`host`, `[host]:port`, comma-separated) or hashed
/// (`|1|…`, where the name is `host` on port 22, else `[host]:port`).
///
/// # Errors
/// The host is unknown, or its key differs from every listed one.
pub fn check_host_key(
    known_hosts: &str,
    host: &str,
    port: u16,
    key: &[u8],
) -> Result<(), HostKeyError> {
    use base64::Engine as _;
    let hashed_name = if port == 22 {
        host.to_owned()
    } else {
        format!("[{host}]:{port}")
    };
    let mut listed = false;
    for line in known_hosts.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut parts = line.split_whitespace();
        let (Some(hosts), Some(_kind), Some(b64)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let names_host = hosts.split(',').any(|h| {
            h == host
                || hashed_name_is(h, &hashed_name)
                || h.strip_prefix('[')
                    .and_then(|h| h.split_once("]:"))
                    .is_some_and(|(name, _port)| name == host)
        });
        if !names_host {
            continue;
        }
        listed = true;
        if base64::engine::general_purpose::STANDARD
            .decode(b64)
            .is_ok_and(|k| k == key)
        {
            return Ok(());
        }
    }
    if listed {
        Err(HostKeyError::Changed(host.to_owned()))
    } else {
        Err(HostKeyError::Unknown(host.to_owned()))
    }
}

/// Why an SSH host is not trusted.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HostKeyError {
    /// Its key differs from every one listed for it.
    #[error(
        "the host key of {0} differs from the one in knownHosts: refusing to connect (a changed \
         server, or an impostor)"
    )]
    Changed(String),
    /// It is not listed.
    #[error("{0} is not in knownHosts: add its key (ssh-keyscan {0}) to trust it")]
    Unknown(String),
}

pub(super) fn callbacks<'a>(
    url: &str,
    creds: &'a Credentials,
    refused: &'a std::cell::RefCell<Option<String>>,
) -> RemoteCallbacks<'a> {
    let port = ssh_port(url);
    let mut cb = RemoteCallbacks::new();
    let mut tried = false;
    cb.credentials(move |_url, username, allowed| {
        // libgit2 asks again after a refusal: once is enough.
        if tried {
            return Err(git2::Error::from_str("the credentials were refused"));
        }
        tried = true;
        if allowed.contains(CredentialType::SSH_KEY)
            && let Some(key) = &creds.ssh_key
        {
            return Cred::ssh_key_from_memory(username.unwrap_or("git"), None, key, None);
        }
        if allowed.contains(CredentialType::USER_PASS_PLAINTEXT)
            && let Some(token) = &creds.token
        {
            return Cred::userpass_plaintext(username.unwrap_or("x-access-token"), token);
        }
        if allowed.contains(CredentialType::USERNAME) {
            return Cred::username(username.unwrap_or("git"));
        }
        Err(git2::Error::from_str("no credentials for this remote"))
    });
    cb.certificate_check(move |cert, host| {
        let Some(hostkey) = cert.as_hostkey() else {
            // TLS: libgit2 has verified the certificate chain already.
            return Ok(CertificateCheckStatus::CertificatePassthrough);
        };
        let Some(key) = hostkey.hostkey() else {
            *refused.borrow_mut() = Some(format!("{host} sent no host key"));
            return Err(git2::Error::from_str("no host key"));
        };
        let known = creds.known_hosts.as_deref().unwrap_or_default();
        match check_host_key(known, host, port, key) {
            Ok(()) => Ok(CertificateCheckStatus::CertificateOk),
            Err(why) => {
                let why = why.to_string();
                *refused.borrow_mut() = Some(why.clone());
                Err(git2::Error::from_str(&why))
            }
        }
    });
    cb
}

/// A bare mirror of one remote, under a cache directory.
pub struct Mirror {
    repo: Repository,
    url: String,
}

impl Mirror {
    /// Opens (or creates) the mirror of `url` under `cache`.
    ///
    /// # Errors
    /// When the cache cannot be written.
    pub fn open(cache: &Path, url: &str) -> Result<Self, GitError> {
        use sha2::Digest;
        let name = hex::encode(&sha2::Sha256::digest(url.as_bytes())[..8]);
        let path: PathBuf = cache.join(name);
        let repo = match Repository::open_bare(&path) {
            Ok(r) => r,
            Err(_) => Repository::init_bare(&path).map_err(|e| {
                GitError::Local(format!("cannot create {}: {}", path.display(), e.message()))
            })?,
        };
        Ok(Self {
            repo,
            url: url.to_owned(),
        })
    }

    /// The local repository (tests, write-back).
    #[must_use]
    pub fn repository(&self) -> &Repository {
        &self.repo
    }

    /// Fetches `refs` (`refs/heads/x`, `refs/tags/*`…) into the mirror, under the same
    /// names; returns nothing but errors.
    ///
    /// # Errors
    /// The remote is unreachable, refuses the credentials, or its host key is unknown.
    pub fn fetch(&self, refspecs: &[String], creds: &Credentials) -> Result<(), GitError> {
        let shown = crate::git::redact(&self.url);
        let refused = std::cell::RefCell::new(None);
        let mut options = FetchOptions::new();
        options.remote_callbacks(callbacks(&self.url, creds, &refused));
        options.download_tags(git2::AutotagOption::None);
        options.prune(git2::FetchPrune::On);
        let mut remote = self
            .repo
            .remote_anonymous(&self.url)
            .map_err(|e| GitError::Remote(format!("{shown}: {}", e.message())))?;
        let specs: Vec<String> = refspecs.iter().map(|r| format!("+{r}:{r}")).collect();
        remote.fetch(&specs, Some(&mut options), None).map_err(|e| {
            GitError::Remote(match refused.borrow().clone() {
                Some(why) => format!("{shown}: {why}"),
                None => format!("cannot fetch from {shown}: {}", e.message()),
            })
        })
    }

    /// The commit a local ref points to.
    ///
    /// # Errors
    /// The ref does not exist (the branch is not on the remote).
    pub fn tip(&self, reference: &str) -> Result<Sha, GitError> {
        let r = self.repo.find_reference(reference).map_err(|_| {
            GitError::NotFound(format!(
                "{reference} is not on {}",
                crate::git::redact(&self.url)
            ))
        })?;
        let commit = r
            .peel_to_commit()
            .map_err(|e| GitError::NotFound(format!("{reference}: {}", e.message())))?;
        Ok(sha_of(commit.id()))
    }

    /// Every `.yaml`/`.yml` file under `dir` at `sha`, with its path in the repository.
    ///
    /// # Errors
    /// The commit or folder is missing, or a file is not UTF-8.
    pub fn files(&self, sha: &Sha, dir: &str) -> Result<Vec<(PathBuf, String)>, GitError> {
        let commit = self
            .repo
            .find_commit(oid(sha)?)
            .map_err(|e| GitError::NotFound(format!("commit {}: {}", sha.short(), e.message())))?;
        let root = commit.tree().map_err(local)?;
        let tree = if dir.is_empty() {
            root
        } else {
            let entry = root.get_path(Path::new(dir)).map_err(|_| {
                GitError::NotFound(format!("commit {}: no folder {dir:?}", sha.short()))
            })?;
            self.repo.find_tree(entry.id()).map_err(|_| {
                GitError::NotFound(format!("commit {}: {dir:?} is not a folder", sha.short()))
            })?
        };
        let mut out = Vec::new();
        let mut error = None;
        tree.walk(git2::TreeWalkMode::PreOrder, |parent, entry| {
            let name = entry.name().unwrap_or_default();
            if entry.kind() != Some(git2::ObjectType::Blob)
                || !Path::new(name).extension().is_some_and(|e| {
                    e.eq_ignore_ascii_case("yaml") || e.eq_ignore_ascii_case("yml")
                })
            {
                return git2::TreeWalkResult::Ok;
            }
            let path = Path::new(dir).join(parent).join(name);
            match self.repo.find_blob(entry.id()) {
                Ok(blob) if blob.size() as u64 > crate::manifest::yaml::MAX_FILE_BYTES => {
                    error = Some(format!(
                        "{}: larger than {} MiB",
                        path.display(),
                        crate::manifest::yaml::MAX_FILE_BYTES >> 20
                    ));
                }
                Ok(blob) => match std::str::from_utf8(blob.content()) {
                    Ok(text) => out.push((path, text.to_owned())),
                    Err(_) => error = Some(format!("{}: not UTF-8", path.display())),
                },
                Err(e) => error = Some(format!("{}: {}", path.display(), e.message())),
            }
            git2::TreeWalkResult::Ok
        })
        .map_err(local)?;
        if let Some(e) = error {
            return Err(GitError::NotFound(e));
        }
        out.sort();
        Ok(out)
    }

    /// Whether `new` has `old` in its history (a fast-forward from `old`).
    #[must_use]
    pub fn descends_from(&self, new: &Sha, old: &Sha) -> bool {
        let (Ok(n), Ok(o)) = (Oid::from_str(new.as_str()), Oid::from_str(old.as_str())) else {
            return false;
        };
        n == o || self.repo.graph_descendant_of(n, o).unwrap_or(false)
    }

    /// The author (`Name <email>`) and subject line of a commit, if the mirror has it.
    #[must_use]
    pub fn author_and_subject(&self, sha: &Sha) -> Option<(String, String)> {
        let oid = Oid::from_str(sha.as_str()).ok()?;
        let commit = self.repo.find_commit(oid).ok()?;
        let author = commit.author();
        let who = match (author.name().ok(), author.email().ok()) {
            (Some(n), Some(e)) => format!("{n} <{e}>"),
            (Some(n), None) => n.to_owned(),
            (None, Some(e)) => e.to_owned(),
            (None, None) => return None,
        };
        Some((who, commit.summary().ok().flatten()?.to_owned()))
    }

    /// The commits reachable from `tip` and not from `hide`, newest first, at most
    /// `limit`, and whether there were more.
    ///
    /// # Errors
    /// A commit is not in the mirror.
    pub fn log(
        &self,
        tip: &Sha,
        hide: Option<&Sha>,
        limit: usize,
    ) -> Result<(Vec<crate::git::Commit>, bool), GitError> {
        let missing =
            |s: &Sha| GitError::NotFound(format!("commit {} is not in the repository", s.short()));
        let mut walk = self.repo.revwalk().map_err(local)?;
        walk.set_sorting(git2::Sort::TOPOLOGICAL | git2::Sort::TIME)
            .map_err(local)?;
        walk.push(oid(tip)?).map_err(|_| missing(tip))?;
        if let Some(h) = hide {
            walk.hide(oid(h)?).map_err(|_| missing(h))?;
        }
        let mut out = Vec::new();
        for id in walk {
            let id = id.map_err(local)?;
            if out.len() == limit {
                return Ok((out, true));
            }
            let commit = self.repo.find_commit(id).map_err(local)?;
            out.push(crate::git::Commit {
                sha: sha_of(id),
                subject: commit
                    .summary()
                    .ok()
                    .flatten()
                    .unwrap_or_default()
                    .to_owned(),
                author: commit.author().name().ok().unwrap_or_default().to_owned(),
            });
        }
        Ok((out, false))
    }

    /// Whether the mirror has the commit.
    #[must_use]
    pub fn has(&self, sha: &Sha) -> bool {
        Oid::from_str(sha.as_str()).is_ok_and(|o| self.repo.find_commit(o).is_ok())
    }

    /// The subject line of a commit, if the mirror has it.
    #[must_use]
    pub fn subject(&self, sha: &Sha) -> Option<String> {
        let oid = Oid::from_str(sha.as_str()).ok()?;
        let commit = self.repo.find_commit(oid).ok()?;
        commit.summary().ok().flatten().map(str::to_owned)
    }
}

/// The commits between `hide` and `tip` in the repository at `url` (newest first, at
/// most `limit`, and whether there were more), fetched into a mirror under `cache`
/// when missing. Blocking (git2).
///
/// # Errors
/// The repository cannot be fetched, or a commit is not in it.
pub fn commits_between(
    cache: &Path,
    url: &str,
    creds: &Credentials,
    tip: &Sha,
    hide: Option<&Sha>,
    limit: usize,
) -> Result<(Vec<crate::git::Commit>, bool), GitError> {
    let mirror = Mirror::open(cache, url)?;
    if !mirror.has(tip) || hide.is_some_and(|h| !mirror.has(h)) {
        mirror.fetch(&["refs/heads/*".into(), "refs/tags/*".into()], creds)?;
    }
    mirror.log(tip, hide, limit)
}

/// Fetches a folder of a branch: the branch's tip and the manifests under the folder.
/// Blocking (git2).
///
/// # Errors
/// The remote cannot be fetched, or the branch or folder is missing.
pub fn fetch_folder(
    cache: &Path,
    source: &super::source::GitSource,
    creds: &Credentials,
) -> Result<(Sha, Vec<(PathBuf, String)>), GitError> {
    let mirror = Mirror::open(cache, &source.url)?;
    let reference = format!("refs/heads/{}", source.branch);
    mirror.fetch(std::slice::from_ref(&reference), creds)?;
    let sha = mirror.tip(&reference)?;
    let files = mirror.files(&sha, &source.dir)?;
    Ok((sha, files))
}

/// A libgit2 failure on the local mirror.
#[allow(
    clippy::needless_pass_by_value,
    reason = "used as map_err(local), which passes the error by value"
)]
fn local(e: git2::Error) -> GitError {
    GitError::Local(e.message().to_owned())
}

/// The object id of a SHA.
fn oid(sha: &Sha) -> Result<Oid, GitError> {
    Oid::from_str(sha.as_str()).map_err(local)
}

/// The SHA of an object id (40 hex digits: always one).
fn sha_of(id: Oid) -> Sha {
    id.to_string()
        .parse()
        .expect("a git object id is 40 hex digits")
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl";

    #[test]
    fn host_keys_are_checked_against_known_hosts() {
        use base64::Engine as _;
        let key = base64::engine::general_purpose::STANDARD
            .decode(KEY)
            .unwrap();
        let known = format!(
            "# vigie\ngit.example,10.0.0.1 ssh-ed25519 {KEY}\n[127.0.0.1]:2222 ssh-ed25519 {KEY}\n"
        );
        assert_eq!(check_host_key(&known, "git.example", 22, &key), Ok(()));
        assert_eq!(check_host_key(&known, "10.0.0.1", 22, &key), Ok(()));
        assert_eq!(check_host_key(&known, "127.0.0.1", 2222, &key), Ok(()));
        let other = vec![7u8; key.len()];
        assert_eq!(
            check_host_key(&known, "git.example", 22, &other),
            Err(HostKeyError::Changed("git.example".into()))
        );
        assert_eq!(
            check_host_key(&known, "elsewhere", 22, &key),
            Err(HostKeyError::Unknown("elsewhere".into()))
        );
        assert!(
            check_host_key("", "git.example", 22, &key)
                .unwrap_err()
                .to_string()
                .contains("not in knownHosts")
        );
    }

    #[test]
    fn hashed_known_hosts_entries_are_read() {
        use base64::Engine as _;
        let key = base64::engine::general_purpose::STANDARD
            .decode(KEY)
            .unwrap();
        // Written by `ssh-keygen -H` from `git.example …` and `[127.0.0.1]:2222 …`.
        let known = format!(
            "|1|HX33LvWYoW2Ws2Rw1nRNQ1JaOuI=|aggjAGtzODQnsk23RzN3aXrgCZ4= ssh-ed25519 {KEY}\n|1|TFhARmThDPVTHnfzbjMscWNV1QY=|/11ETGdstjVSeTuz26mB0f4dR+g= ssh-ed25519 {KEY}\n"
        );
        assert_eq!(check_host_key(&known, "git.example", 22, &key), Ok(()));
        assert_eq!(check_host_key(&known, "127.0.0.1", 2222, &key), Ok(()));
        // The port is part of a hashed name.
        assert!(
            check_host_key(&known, "127.0.0.1", 22, &key)
                .unwrap_err()
                .to_string()
                .contains("not in knownHosts")
        );
        let other = vec![7u8; key.len()];
        assert_eq!(
            check_host_key(&known, "git.example", 22, &other),
            Err(HostKeyError::Changed("git.example".into()))
        );
        assert!(!hashed_name_is("|1|not base64|x", "git.example"));
    }

    #[test]
    fn ssh_ports_come_from_the_url() {
        assert_eq!(ssh_port("ssh://git@127.0.0.1:2222/srv/ops.git"), 2222);
        assert_eq!(ssh_port("ssh://git.example/ops.git"), 22);
        assert_eq!(ssh_port("git@git.example:acme/ops.git"), 22);
        assert_eq!(ssh_port("https://git.example:8443/ops.git"), 22);
    }

    #[test]
    fn credentials_do_not_show_in_debug() {
        let c = Credentials {
            token: Some("t0ken".into()),
            ssh_key: Some("-----BEGIN OPENSSH PRIVATE KEY-----".into()),
            known_hosts: Some("a b c\n".into()),
        };
        let shown = format!("{c:?}");
        assert!(
            !shown.contains("t0ken") && !shown.contains("PRIVATE"),
            "{shown}"
        );
    }
}
