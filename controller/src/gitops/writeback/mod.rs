//! Write-back: a Release's new revision (a tracked update, a rollback) committed to the
//! manifests repository, so that git stays the source of truth in GitOps mode.
//!
//! The edit is textual, so comments, order and quoting stay as people wrote them, and
//! it is checked: the edited document must parse to the original one with only
//! `spec.revision` changed, or nothing is committed ([`edit`]). The commit is made on
//! the fetched tip and pushed without force; a push that loses a race (non-fast-forward,
//! or the branch moved under it) is retried on the new tip, a few times (this module).

pub mod edit;

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use git2::{ErrorCode, Oid, PushOptions, Signature};

pub use self::edit::{Edit, set_revision};
use super::{
    repo::{Credentials, Mirror},
    source::GitSource,
};
use crate::{api::Sha, git::GitError};

/// Why a write-back did not happen. Each variant carries the message for people.
#[derive(Debug, thiserror::Error)]
pub enum WriteBackError {
    /// An option's value does not parse (`--write-back`, `--git-author`).
    #[error("{0}")]
    Option(String),
    /// The manifests repository could not be fetched or read, or the commit made.
    #[error(transparent)]
    Git(#[from] GitError),
    /// The Release is in no file, or in several, or its revision cannot be edited safely.
    #[error("{0}")]
    Edit(String),
    /// The remote refused the push, or the branch moved during every attempt.
    #[error("{0}")]
    Push(String),
    /// The write-back did not finish in time.
    #[error("{0}")]
    Timeout(String),
}

impl WriteBackError {
    /// The kind of fault.
    #[must_use]
    pub fn category(&self) -> crate::error::Category {
        use crate::error::Category;
        match self {
            Self::Option(_) | Self::Edit(_) => Category::InvalidSpec,
            Self::Git(e) => e.category(),
            Self::Push(_) => Category::Forge,
            Self::Timeout(_) => Category::Transient,
        }
    }
}

impl From<WriteBackError> for String {
    fn from(e: WriteBackError) -> Self {
        e.to_string()
    }
}

/// Who commits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Author {
    /// Name.
    pub name: String,
    /// Email address.
    pub email: String,
}

impl Author {
    /// Parses `Name <email>`.
    ///
    /// # Errors
    /// Not of that form.
    pub fn parse(s: &str) -> Result<Self, WriteBackError> {
        let expected = || WriteBackError::Option(format!("{s:?}: expected `Name <email>`"));
        let (name, rest) = s.split_once('<').ok_or_else(expected)?;
        let email = rest.strip_suffix('>').ok_or_else(expected)?;
        if name.trim().is_empty() || !email.contains('@') {
            return Err(expected());
        }
        Ok(Self {
            name: name.trim().to_owned(),
            email: email.trim().to_owned(),
        })
    }
}

impl Default for Author {
    fn default() -> Self {
        Self {
            name: "Vigie".into(),
            email: "vigie@localhost".into(),
        }
    }
}

/// What is written back.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Scope {
    /// Tracked updates (a branch's new commit, a new matching tag).
    pub tracking: bool,
    /// Rollbacks: the revision is set back to the SHA rolled back to.
    pub rollbacks: bool,
}

impl Scope {
    /// Parses a comma-separated list of `tracking`, `rollbacks` (or `none`).
    ///
    /// # Errors
    /// An unknown word.
    pub fn parse(s: &str) -> Result<Self, WriteBackError> {
        let mut scope = Self::default();
        for word in s.split(',').map(str::trim).filter(|w| !w.is_empty()) {
            match word {
                "tracking" => scope.tracking = true,
                "rollbacks" => scope.rollbacks = true,
                "none" => {}
                other => {
                    return Err(WriteBackError::Option(format!(
                        "write-back: unknown {other:?} (expected tracking, rollbacks or none)"
                    )));
                }
            }
        }
        Ok(scope)
    }

    /// Whether anything is written back.
    #[must_use]
    pub const fn any(self) -> bool {
        self.tracking || self.rollbacks
    }
}

/// Where and how to write back.
#[derive(Clone, Debug)]
pub struct Target {
    /// The manifests repository, branch and folder.
    pub source: GitSource,
    /// Its credentials (they must allow pushing).
    pub credentials: Credentials,
    /// Where its write-back mirror is kept.
    pub cache: PathBuf,
    /// The commits' author and committer.
    pub author: Author,
    /// Namespace of the documents that name none.
    pub default_namespace: String,
    /// What is written back.
    pub scope: Scope,
}

/// A write-back that was done.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A commit was pushed; `attempts` counts the pushes (more than 1 after a lost race).
    Committed {
        /// The new commit.
        commit: Sha,
        /// The file edited, in the repository.
        file: PathBuf,
        /// Pushes made.
        attempts: u32,
    },
    /// The repository already had this revision.
    Unchanged,
}

/// How many pushes are tried before giving up on a branch that keeps moving.
const ATTEMPTS: u32 = 5;

/// Sets `spec.revision` of `namespace/name` to `revision` in the manifests repository:
/// one commit with `message`, pushed to the branch. Blocking (git2).
///
/// # Errors
/// The Release is not in the folder, its revision cannot be edited safely, the remote
/// refuses the credentials or the push, or the branch kept moving for every attempt.
pub fn write_revision(
    target: &Target,
    namespace: &str,
    name: &str,
    revision: &Sha,
    message: &str,
) -> Result<Outcome, WriteBackError> {
    let mirror = Mirror::open(&target.cache.join("write-back"), &target.source.url)?;
    let branch = format!("refs/heads/{}", target.source.branch);
    let mut last = String::new();
    for attempt in 1..=ATTEMPTS {
        mirror.fetch(std::slice::from_ref(&branch), &target.credentials)?;
        let tip = mirror.tip(&branch)?;
        let mut edited = None;
        for (file, text) in mirror.files(&tip, &target.source.dir)? {
            match set_revision(
                &text,
                &target.default_namespace,
                namespace,
                name,
                revision.as_str(),
            )
            .map_err(|e| WriteBackError::Edit(format!("{}: {e}", file.display())))?
            {
                Edit::NotHere => {}
                Edit::AlreadySet => return Ok(Outcome::Unchanged),
                Edit::Edited(new) => {
                    if edited.is_some() {
                        return Err(WriteBackError::Edit(format!(
                            "Release {namespace}/{name} is defined in more than one file of {}",
                            target.source
                        )));
                    }
                    edited = Some((file, new));
                }
            }
        }
        let Some((file, text)) = edited else {
            return Err(WriteBackError::Edit(format!(
                "Release {namespace}/{name} is not in {} at {}",
                target.source,
                tip.short()
            )));
        };
        let commit = commit(&mirror, &tip, &file, &text, &target.author, message)?;
        match push(
            &mirror,
            &target.source.url,
            &commit,
            &branch,
            &target.credentials,
        ) {
            Ok(()) => {
                // The mirror's branch follows what was pushed.
                let oid = Oid::from_str(commit.as_str())
                    .map_err(|e| GitError::Local(e.message().to_owned()))?;
                let _ = mirror
                    .repository()
                    .reference(&branch, oid, true, "vigie write-back");
                return Ok(Outcome::Committed {
                    commit,
                    file,
                    attempts: attempt,
                });
            }
            Err(Push::Raced(why)) => {
                tracing::info!(attempt, reason = %why, "write-back: the branch moved, retrying on its new tip");
                last = why;
                std::thread::sleep(Duration::from_millis(200 * u64::from(attempt)));
            }
            Err(Push::Failed(why)) => return Err(WriteBackError::Push(why)),
        }
    }
    Err(WriteBackError::Push(format!(
        "{}: the branch moved during each of {ATTEMPTS} attempts (last: {last})",
        target.source
    )))
}

/// Makes the commit on `tip` (no ref moves).
fn commit(
    mirror: &Mirror,
    tip: &Sha,
    file: &Path,
    text: &str,
    author: &Author,
    message: &str,
) -> Result<Sha, GitError> {
    let repo = mirror.repository();
    let git = |e: git2::Error| GitError::Local(format!("write-back commit: {}", e.message()));
    let parent = repo
        .find_commit(Oid::from_str(tip.as_str()).map_err(git)?)
        .map_err(git)?;
    let tree = parent.tree().map_err(git)?;
    let executable = tree
        .get_path(file)
        .is_ok_and(|e| e.filemode() == i32::from(git2::FileMode::BlobExecutable));
    let mode = if executable {
        git2::FileMode::BlobExecutable
    } else {
        git2::FileMode::Blob
    };
    let blob = repo.blob(text.as_bytes()).map_err(git)?;
    let mut update = git2::build::TreeUpdateBuilder::new();
    update.upsert(file, blob, mode);
    let new_tree = update.create_updated(repo, &tree).map_err(git)?;
    let new_tree = repo.find_tree(new_tree).map_err(git)?;
    let signature = Signature::now(&author.name, &author.email).map_err(git)?;
    let oid = repo
        .commit(None, &signature, &signature, message, &new_tree, &[&parent])
        .map_err(git)?;
    oid.to_string()
        .parse()
        .map_err(|e| GitError::Local(format!("write-back commit: {e}")))
}

enum Push {
    /// The branch moved: fetch and try again.
    Raced(String),
    /// Anything else.
    Failed(String),
}

/// Pushes `commit` to `branch` without force.
fn push(
    mirror: &Mirror,
    url: &str,
    commit: &Sha,
    branch: &str,
    creds: &Credentials,
) -> Result<(), Push> {
    let repo = mirror.repository();
    let shown = crate::git::redact(url);
    let local = "refs/vigie/write-back";
    let oid = Oid::from_str(commit.as_str()).map_err(|e| Push::Failed(e.message().to_owned()))?;
    repo.reference(local, oid, true, "vigie write-back")
        .map_err(|e| Push::Failed(format!("write-back: {}", e.message())))?;
    let refused = std::cell::RefCell::new(None);
    let rejected = std::cell::RefCell::new(None::<String>);
    let mut callbacks = super::repo::callbacks(url, creds, &refused);
    callbacks.push_update_reference(|_reference, status| {
        if let Some(why) = status {
            *rejected.borrow_mut() = Some(why.to_owned());
        }
        Ok(())
    });
    let mut options = PushOptions::new();
    options.remote_callbacks(callbacks);
    let mut remote = repo
        .remote_anonymous(url)
        .map_err(|e| Push::Failed(format!("{shown}: {}", e.message())))?;
    let result = remote.push(&[format!("{local}:{branch}")], Some(&mut options));
    drop(options);
    if let Err(e) = result {
        if let Some(why) = refused.borrow().clone() {
            return Err(Push::Failed(format!("{shown}: {why}")));
        }
        return Err(if e.code() == ErrorCode::NotFastForward {
            Push::Raced(format!("non-fast-forward: {}", e.message()))
        } else {
            Push::Failed(format!("cannot push to {shown}: {}", e.message()))
        });
    }
    match rejected.borrow().clone() {
        None => Ok(()),
        // The remote refused the update: it moved under us (or a hook refused).
        Some(why) if is_race(&why) => Err(Push::Raced(why)),
        Some(why) => Err(Push::Failed(format!("{shown} refused the push: {why}"))),
    }
}

/// Whether a remote's refusal means the branch moved under the push.
fn is_race(status: &str) -> bool {
    [
        "non-fast-forward",
        "fetch first",
        "failed to update ref",
        "cannot lock ref",
        "stale",
    ]
    .iter()
    .any(|s| status.contains(s))
}

/// The rollback a Release's status calls for writing back, as `(from, to, why)`: its
/// desired SHA is quarantined here and it is held at its validated SHA. Read from the
/// status, not from a transition, so a rollback not written back before a restart is
/// written after it.
#[must_use]
pub fn pending_rollback(status: &crate::api::ReleaseStatus) -> Option<(Sha, Sha, String)> {
    let desired = status.desired_sha.as_ref()?;
    let validated = status.validated_sha.as_ref()?;
    if desired == validated {
        return None;
    }
    let q = status.quarantine.iter().find(|q| &q.sha == desired)?;
    Some((desired.clone(), validated.clone(), q.reason.clone()))
}

/// How long a write-back of the same revision for the same Release waits before it is
/// tried again (the sync may not have applied the last one yet).
const RETRY_AFTER: Duration = Duration::from_secs(30);

/// The write-backs of one manifests repository, made one at a time (two at once would
/// only race each other).
pub struct Writer {
    /// Where and what.
    pub target: Target,
    lock: tokio::sync::Mutex<()>,
    tried: std::sync::Mutex<std::collections::HashMap<String, (Sha, std::time::Instant)>>,
}

impl Writer {
    /// A writer for `target`.
    #[must_use]
    pub fn new(target: Target) -> Self {
        Self {
            target,
            lock: tokio::sync::Mutex::new(()),
            tried: std::sync::Mutex::new(std::collections::HashMap::new()),
        }
    }

    /// Whether writing `revision` for `release` is due: not tried in the last 30 s.
    /// Marks it tried.
    pub fn due(&self, release: &str, revision: &Sha) -> bool {
        let Ok(mut tried) = self.tried.lock() else {
            return true;
        };
        let now = std::time::Instant::now();
        if let Some((sha, at)) = tried.get(release)
            && sha == revision
            && now.duration_since(*at) < RETRY_AFTER
        {
            return false;
        }
        tried.insert(release.to_owned(), (revision.clone(), now));
        true
    }

    /// [`write_revision`] off the async threads, after the write-backs before it.
    ///
    /// # Errors
    /// As [`write_revision`]; or no answer within 5 minutes.
    pub async fn set_revision(
        &self,
        namespace: &str,
        name: &str,
        revision: &Sha,
        message: String,
    ) -> Result<Outcome, WriteBackError> {
        let _one_at_a_time = self.lock.lock().await;
        let (target, namespace, name, revision) = (
            self.target.clone(),
            namespace.to_owned(),
            name.to_owned(),
            revision.clone(),
        );
        let writing = tokio::task::spawn_blocking(move || {
            write_revision(&target, &namespace, &name, &revision, &message)
        });
        match tokio::time::timeout(Duration::from_secs(300), writing).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => Err(WriteBackError::Timeout(format!("write-back: {e}"))),
            Err(_) => Err(WriteBackError::Timeout(format!(
                "write-back: no answer from {} within 5 minutes",
                self.target.source
            ))),
        }
    }
}

/// The commit message of a tracked update.
#[must_use]
pub fn tracking_message(
    location: &str,
    environment: &str,
    release: &str,
    old: Option<&str>,
    new: &Sha,
    reference: &str,
) -> String {
    let old_short = old.map_or("-", |o| &o[..o.len().min(7)]);
    format!(
        "vigie: {location} in {environment}: {old_short} → {} ({reference})\n\nRelease {release}: spec.revision {} → {}, following {reference}.\n",
        new.short(),
        old.unwrap_or("(none)"),
        new.as_str()
    )
}

/// The commit message of a rollback.
#[must_use]
pub fn rollback_message(
    location: &str,
    environment: &str,
    release: &str,
    from: &Sha,
    to: &Sha,
    reason: Option<&str>,
) -> String {
    format!(
        "vigie: roll back {location} in {environment}: {} → {}\n\nRelease {release}: spec.revision {} → {} (the last validated SHA).\n{} was rolled back: {}\n",
        from.short(),
        to.short(),
        from.as_str(),
        to.as_str(),
        from.short(),
        reason.unwrap_or("verification failed")
    )
}

/// A one-line account of a write-back, for Events, logs and the status.
#[must_use]
pub fn describe(outcome: &Outcome, source: &GitSource) -> String {
    match outcome {
        Outcome::Committed {
            commit,
            file,
            attempts,
        } => {
            let retried = if *attempts > 1 {
                format!(" after {} lost races", attempts - 1)
            } else {
                String::new()
            };
            format!(
                "committed {} to {source} ({}){retried}",
                commit.short(),
                file.display()
            )
        }
        Outcome::Unchanged => format!("{source} already has it"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHA: &str = "0123456789abcdef0123456789abcdef01234567";

    #[test]
    fn a_rollback_is_pending_while_the_quarantined_sha_is_still_asked_for() {
        use crate::api::{
            ReleaseStatus,
            release::{QuarantineCause, QuarantineEntry},
        };
        let (good, bad): (Sha, Sha) = ("a".repeat(40).parse().unwrap(), SHA.parse().unwrap());
        let mut status = ReleaseStatus {
            desired_sha: Some(bad.clone()),
            validated_sha: Some(good.clone()),
            ..ReleaseStatus::default()
        };
        assert_eq!(
            pending_rollback(&status),
            None,
            "not quarantined: in flight"
        );
        status.quarantine.push(QuarantineEntry {
            sha: bad.clone(),
            at: jiff::Timestamp::UNIX_EPOCH,
            reason: "CI failed: tests".into(),
            cause: QuarantineCause::CiFailed,
            ci_passed_later: false,
        });
        assert_eq!(
            pending_rollback(&status),
            Some((bad.clone(), good.clone(), "CI failed: tests".into()))
        );
        // Written back and applied: the Release asks for the validated SHA again.
        status.desired_sha = Some(good.clone());
        assert_eq!(pending_rollback(&status), None);
        // Nothing to go back to.
        status.desired_sha = Some(bad);
        status.validated_sha = None;
        assert_eq!(pending_rollback(&status), None);
    }

    #[test]
    fn authors_and_scopes_parse() {
        assert_eq!(
            Author::parse("Vigie Bot <bot@example.com>").unwrap(),
            Author {
                name: "Vigie Bot".into(),
                email: "bot@example.com".into()
            }
        );
        assert!(Author::parse("vigie").is_err());
        assert_eq!(
            Scope::parse("tracking, rollbacks").unwrap(),
            Scope {
                tracking: true,
                rollbacks: true
            }
        );
        assert!(!Scope::parse("none").unwrap().any());
        let e = Scope::parse("everything").unwrap_err();
        assert!(
            matches!(&e, WriteBackError::Option(m) if m.contains("everything")),
            "{e:?}"
        );
        assert_eq!(e.category(), crate::error::Category::InvalidSpec);
    }
}
