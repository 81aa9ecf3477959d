//! Write-back: a Release's new revision (a tracked update, a rollback) committed to the
//! manifests repository, so that git stays the source of truth in GitOps mode.
//!
//! The edit is textual, so comments, order and quoting stay as people wrote them, and
//! it is checked: the edited document must parse to the original one with only
//! `spec.revision` changed, or nothing is committed. The commit is made on the fetched
//! tip and pushed without force; a push that loses a race (non-fast-forward, or the
//! branch moved under it) is retried on the new tip, a few times.

use std::{
    path::{Path, PathBuf},
    sync::LazyLock,
    time::Duration,
};

use git2::{ErrorCode, Oid, PushOptions, Signature};
use regex::Regex;
use serde_norway::Value;

use super::{
    repo::{Credentials, Mirror},
    source::GitSource,
};
use crate::api::Sha;

/// What a write-back did to one file's text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Edit {
    /// The Release is not in this text.
    NotHere,
    /// The Release already has this revision: nothing to commit.
    AlreadySet,
    /// The new text.
    Edited(String),
}

static SEPARATOR: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(?m)^---[ \t]*(?:#.*)?$").expect("valid regex"));
static REVISION: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r#"\brevision:[ \t]*("[^"\n]*"|'[^'\n]*'|[^\s,}#]+)?"#).expect("valid regex")
});
static SPEC_LINE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(?m)^spec:[ \t]*(?:#.*)?$").expect("valid regex"));

/// Sets `spec.revision` of the Release `namespace/name` in a file of YAML documents
/// (a document naming no namespace is in `default_namespace`).
///
/// # Errors
/// The Release is there but its revision cannot be edited safely (no `spec`, an
/// unusual layout), or it is there twice.
pub fn set_revision(
    text: &str,
    default_namespace: &str,
    namespace: &str,
    name: &str,
    revision: &str,
) -> Result<Edit, String> {
    let mut found = None;
    for (index, (start, end)) in documents(text).into_iter().enumerate() {
        let Ok(value) = serde_norway::from_str::<Value>(&text[start..end]) else {
            continue;
        };
        let is_it = value.get("kind").and_then(Value::as_str) == Some("Release")
            && value
                .get("metadata")
                .and_then(|m| m.get("name"))
                .and_then(Value::as_str)
                == Some(name)
            && value
                .get("metadata")
                .and_then(|m| m.get("namespace"))
                .and_then(Value::as_str)
                .unwrap_or(default_namespace)
                == namespace;
        if !is_it {
            continue;
        }
        if found.is_some() {
            return Err(format!(
                "Release {namespace}/{name} is defined twice in the same file"
            ));
        }
        found = Some((index + 1, start, end, value));
    }
    let Some((document, start, end, value)) = found else {
        return Ok(Edit::NotHere);
    };
    if value
        .get("spec")
        .and_then(|s| s.get("revision"))
        .and_then(Value::as_str)
        == Some(revision)
    {
        return Ok(Edit::AlreadySet);
    }
    let chunk = &text[start..end];
    let edited = edit_document(chunk, &value, revision).ok_or_else(|| {
        format!(
            "document {document} (Release/{name}): cannot edit spec.revision safely; write it as `revision: <sha>` under `spec:`"
        )
    })?;
    Ok(Edit::Edited(format!(
        "{}{edited}{}",
        &text[..start],
        &text[end..]
    )))
}

/// Byte ranges of the documents of a YAML stream (separator lines excluded).
fn documents(text: &str) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut start = 0;
    for m in SEPARATOR.find_iter(text) {
        out.push((start, m.start()));
        start = (m.end() + 1).min(text.len());
    }
    out.push((start, text.len()));
    out
}

/// The document with `spec.revision` set, checked by parsing it back; `None` when no
/// candidate edit gives exactly the expected document.
fn edit_document(chunk: &str, original: &Value, revision: &str) -> Option<String> {
    let mut expected = original.clone();
    let spec = expected.get_mut("spec")?.as_mapping_mut()?;
    spec.insert(Value::from("revision"), Value::from(revision));
    let checks =
        |candidate: &str| serde_norway::from_str::<Value>(candidate).is_ok_and(|v| v == expected);
    let plain = [revision.to_owned(), format!("\"{revision}\"")];
    // An existing `revision:` key, block or flow style: replace its value, in its quotes.
    for c in REVISION.captures_iter(chunk) {
        let forms = match c.get(1).map(|v| v.as_str().chars().next()) {
            Some(Some('"')) => [format!("\"{revision}\""), revision.to_owned()],
            Some(Some('\'')) => [format!("'{revision}'"), format!("\"{revision}\"")],
            _ => plain.clone(),
        };
        let key = c.get(0)?;
        let (at, to) = c
            .get(1)
            .map_or((key.end(), key.end()), |v| (v.start(), v.end()));
        let separator = if c.get(1).is_none() && !chunk[..at].ends_with([' ', '\t']) {
            " "
        } else {
            ""
        };
        for form in &forms {
            let candidate = format!("{}{separator}{form}{}", &chunk[..at], &chunk[to..]);
            if checks(&candidate) {
                return Some(candidate);
            }
        }
    }
    // No key yet: add one as the first line under a block-style `spec:`.
    let line = SPEC_LINE.find(chunk)?;
    let after = (line.end() + 1).min(chunk.len());
    let indent: String = chunk[after..]
        .lines()
        .find(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        .map(|l| l.chars().take_while(|c| *c == ' ').collect())
        .filter(|i: &String| !i.is_empty())
        .unwrap_or_else(|| "  ".into());
    for form in &plain {
        let candidate = format!(
            "{}{indent}revision: {form}\n{}",
            &chunk[..after],
            &chunk[after..]
        );
        if checks(&candidate) {
            return Some(candidate);
        }
    }
    None
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
    pub fn parse(s: &str) -> Result<Self, String> {
        let (name, rest) = s
            .split_once('<')
            .ok_or_else(|| format!("{s:?}: expected `Name <email>`"))?;
        let email = rest
            .strip_suffix('>')
            .ok_or_else(|| format!("{s:?}: expected `Name <email>`"))?;
        if name.trim().is_empty() || !email.contains('@') {
            return Err(format!("{s:?}: expected `Name <email>`"));
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
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut scope = Self::default();
        for word in s.split(',').map(str::trim).filter(|w| !w.is_empty()) {
            match word {
                "tracking" => scope.tracking = true,
                "rollbacks" => scope.rollbacks = true,
                "none" => {}
                other => {
                    return Err(format!(
                        "write-back: unknown {other:?} (expected tracking, rollbacks or none)"
                    ));
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
) -> Result<Outcome, String> {
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
            .map_err(|e| format!("{}: {e}", file.display()))?
            {
                Edit::NotHere => {}
                Edit::AlreadySet => return Ok(Outcome::Unchanged),
                Edit::Edited(new) => {
                    if edited.is_some() {
                        return Err(format!(
                            "Release {namespace}/{name} is defined in more than one file of {}",
                            target.source
                        ));
                    }
                    edited = Some((file, new));
                }
            }
        }
        let Some((file, text)) = edited else {
            return Err(format!(
                "Release {namespace}/{name} is not in {} at {}",
                target.source,
                tip.short()
            ));
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
                let oid = Oid::from_str(commit.as_str()).map_err(|e| e.message().to_owned())?;
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
            Err(Push::Failed(why)) => return Err(why),
        }
    }
    Err(format!(
        "{}: the branch moved during each of {ATTEMPTS} attempts (last: {last})",
        target.source
    ))
}

/// Makes the commit on `tip` (no ref moves).
fn commit(
    mirror: &Mirror,
    tip: &Sha,
    file: &Path,
    text: &str,
    author: &Author,
    message: &str,
) -> Result<Sha, String> {
    let repo = mirror.repository();
    let git = |e: git2::Error| format!("write-back commit: {}", e.message());
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
    oid.to_string().parse().map_err(|e| format!("{e}"))
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
    ) -> Result<Outcome, String> {
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
            Ok(Err(e)) => Err(format!("write-back: {e}")),
            Err(_) => Err(format!(
                "write-back: no answer from {} within 5 minutes",
                self.target.source
            )),
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

    fn edited(text: &str) -> String {
        match set_revision(text, "default", "default", "app-dev", SHA).unwrap() {
            Edit::Edited(t) => t,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_revision_is_replaced_in_place_keeping_comments_and_order() {
        let text = "# the dev environment\napiVersion: vigie.dev/v1alpha1\nkind: Release\nmetadata:\n  name: app-dev\nspec:\n  environment: dev   # follows main\n  codeLocation: app\n  revision: 1111111111111111111111111111111111111111  # tracked\n";
        assert_eq!(
            edited(text),
            text.replace("1111111111111111111111111111111111111111", SHA)
        );
    }

    #[test]
    fn quoting_and_flow_style_are_kept() {
        let text = "kind: Release\nmetadata: {name: app-dev}\nspec:\n  environment: dev\n  revision: \"main\"\n";
        assert_eq!(edited(text), text.replace("main", SHA));
        let text = "kind: Release\nmetadata: {name: app-dev}\nspec: {environment: dev, codeLocation: app, revision: v1.2.0}\n";
        assert_eq!(edited(text), text.replace("v1.2.0", SHA));
    }

    #[test]
    fn a_revision_that_would_not_read_as_a_string_is_quoted() {
        // A tag such as 1.10 reads as a number unquoted.
        let text = "kind: Release\nmetadata: {name: app-dev}\nspec:\n  revision: main\n";
        let Edit::Edited(t) = set_revision(text, "default", "default", "app-dev", "1.10").unwrap()
        else {
            panic!()
        };
        assert_eq!(t, text.replace("main", "\"1.10\""));
    }

    #[test]
    fn a_missing_revision_is_added_under_spec() {
        let text = "kind: Release\nmetadata:\n    name: app-dev\nspec:\n    environment: dev\n    codeLocation: app\n";
        assert_eq!(
            edited(text),
            format!(
                "kind: Release\nmetadata:\n    name: app-dev\nspec:\n    revision: {SHA}\n    environment: dev\n    codeLocation: app\n"
            )
        );
    }

    #[test]
    fn only_the_named_release_in_its_namespace_is_edited() {
        let text = "kind: Release\nmetadata: {name: app-prod}\nspec:\n  revision: aaa\n---\nkind: Release\nmetadata: {name: app-dev, namespace: other}\nspec:\n  revision: bbb\n--- # dev\nkind: Release\nmetadata:\n  name: app-dev\nspec:\n  revision: ccc\n";
        let out = edited(text);
        assert_eq!(out, text.replace("ccc", SHA));
        let other = set_revision(text, "default", "other", "app-dev", SHA).unwrap();
        assert_eq!(other, Edit::Edited(text.replace("bbb", SHA)));
        assert_eq!(
            set_revision(text, "default", "default", "nope", SHA).unwrap(),
            Edit::NotHere
        );
        // Another default namespace: the documents without one are there.
        assert_eq!(
            set_revision(text, "ops", "default", "app-dev", SHA).unwrap(),
            Edit::NotHere
        );
    }

    #[test]
    fn a_revision_key_elsewhere_in_the_document_is_left_alone() {
        // `revision:` inside an annotation and in a comment: only spec.revision moves.
        let text = "kind: Release\nmetadata:\n  name: app-dev\n  annotations:\n    note: \"revision: main\"\nspec:\n  # revision: old\n  revision: main\n";
        let out = edited(text);
        assert_eq!(
            out,
            text.replace("  revision: main", &format!("  revision: {SHA}"))
        );
    }

    #[test]
    fn already_set_and_twice_defined() {
        let text =
            format!("kind: Release\nmetadata: {{name: app-dev}}\nspec:\n  revision: {SHA}\n");
        assert_eq!(
            set_revision(&text, "default", "default", "app-dev", SHA).unwrap(),
            Edit::AlreadySet
        );
        let twice = format!("{text}---\n{text}");
        assert!(
            set_revision(&twice, "default", "default", "app-dev", "x")
                .unwrap_err()
                .contains("defined twice")
        );
    }

    #[test]
    fn an_uneditable_layout_is_refused_not_guessed() {
        // A spec given as an alias: editing the anchor would change another field too.
        let text = "kind: Environment\n---\nkind: Release\nmetadata: {name: app-dev}\nx-base: &spec {environment: dev, revision: main}\nspec: *spec\n";
        let err = set_revision(text, "default", "default", "app-dev", SHA).unwrap_err();
        assert!(err.contains("document 2 (Release/app-dev)"), "{err}");
    }

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
        assert!(
            Scope::parse("everything")
                .unwrap_err()
                .contains("everything")
        );
    }
}
