//! The state file of standalone mode: every Release's status, the CI verdicts
//! received and the webhook deliveries seen. Written atomically (temporary file,
//! fsync, rename, fsync of the directory) with a checksum over the content, so that
//! a torn or corrupt file is detected and reported — never silently reset.

use std::{
    collections::{BTreeMap, VecDeque},
    io::Write,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};

use crate::{api::ReleaseStatus, ci::Verdicts};

/// The format tag written in the file.
pub const FORMAT: &str = "vigie-state/1";
/// Webhook deliveries remembered to refuse replays.
pub const DELIVERIES_KEPT: usize = 4096;

/// The state of every Release and what CI said.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct State {
    /// Releases by `namespace/name`.
    #[serde(default)]
    pub releases: BTreeMap<String, ReleaseRecord>,
    /// CI verdicts by code location and SHA.
    #[serde(default)]
    pub verdicts: Verdicts,
    /// SHA-256 of the webhook bodies accepted, newest last (bounded).
    #[serde(default)]
    pub deliveries: VecDeque<String>,
    /// What GitHub and GitLab webhooks reported, by code location and SHA.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub reported: BTreeMap<String, BTreeMap<crate::api::Sha, crate::ci::Reported>>,
    /// Problems of the manifests as last read; empty when they were valid.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub manifest_problems: Vec<String>,
    /// A git source's synchronisation: the commit in force, when, and the last error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git_sync: Option<GitSync>,
    /// Where tracking rules moved Releases (by `namespace/name`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tracked: BTreeMap<String, Tracked>,
    /// What people asked through `vigie promote` and `vigie rollback` (by `namespace/name`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub requests: BTreeMap<String, Requests>,
    /// Quarantines people cleared from the web view (by `namespace/name`), laid over
    /// the manifests' `clearQuarantine`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub clearances: BTreeMap<String, Vec<crate::api::release::QuarantineClearance>>,
}

/// A person's promotion or rollback of one Release, laid over its manifest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Requests {
    /// The revision asked for; it replaces the manifest's while the manifest still says
    /// what it said when it was asked (`over`), and a later tracked move replaces it.
    pub revision: crate::api::Sha,
    /// When it was asked.
    pub at: jiff::Timestamp,
    /// The manifest's revision when it was asked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub over: Option<String>,
    /// The approval given with a promotion.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<crate::api::release::ApprovalGrant>,
    /// The break-glass given with a promotion.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub break_glass: Option<crate::api::release::BreakGlass>,
    /// A rollback request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback: Option<crate::api::release::RollbackRequest>,
}

impl Requests {
    /// Lays the request over a Release's spec read from the manifests, unless the
    /// manifest's revision changed since, or a tracking rule moved it later (`tracked_at`).
    pub fn apply(&self, spec: &mut crate::api::ReleaseSpec, tracked_at: Option<jiff::Timestamp>) {
        if spec.revision != self.over || tracked_at.is_some_and(|t| t > self.at) {
            return;
        }
        spec.revision = Some(self.revision.to_string());
        if self.approval.is_some() {
            spec.approval.clone_from(&self.approval);
        }
        if self.break_glass.is_some() {
            spec.break_glass.clone_from(&self.break_glass);
        }
        if self.rollback.is_some() {
            spec.rollback.clone_from(&self.rollback);
        }
    }
}

/// Where a tracking rule moved a Release.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Tracked {
    /// The commit the Release follows now (it replaces the manifest's revision).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha: Option<crate::api::Sha>,
    /// The branch or tag that named it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    /// When the Release was moved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<jiff::Timestamp>,
    /// Why the latest commit of the ref was not followed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refused: Option<String>,
}

/// Where a git source of manifests stands.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GitSync {
    /// `URL#BRANCH:DIR`, credentials redacted.
    pub source: String,
    /// The commit whose manifests are in force.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<crate::api::Sha>,
    /// When that commit was taken.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub synced_at: Option<jiff::Timestamp>,
    /// When the remote was last fetched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checked_at: Option<jiff::Timestamp>,
    /// Why the latest fetch or commit is not in force.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The last write-back to the repository: what was committed, or why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub write_back: Option<String>,
}

/// One Release as recorded.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReleaseRecord {
    /// Its CodeLocation.
    pub code_location: String,
    /// Its Environment.
    pub environment: String,
    /// Its status.
    pub status: ReleaseStatus,
    /// When it left the manifests. Its record is kept (a Release that comes back keeps
    /// its history and quarantine) and its containers go after a grace period.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub removed_at: Option<jiff::Timestamp>,
}

impl State {
    /// Remembers a delivery; `false` when it was already seen (a replay).
    pub fn remember_delivery(&mut self, digest: String) -> bool {
        if self.deliveries.contains(&digest) {
            return false;
        }
        self.deliveries.push_back(digest);
        while self.deliveries.len() > DELIVERIES_KEPT {
            self.deliveries.pop_front();
        }
        true
    }
}

/// Why the state file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// It cannot be read or written.
    #[error("failed to {action} state file {path}: {source}")]
    Io {
        /// read, write, …
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// It is torn, truncated or edited: its content does not match its checksum or does not parse.
    #[error(
        "state file {path} is corrupt ({reason}); it is left as is: restore it from a backup, or move it away to start from nothing"
    )]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

#[derive(Serialize, Deserialize)]
struct Envelope<'a> {
    format: String,
    checksum: String,
    #[serde(borrow)]
    state: &'a RawValue,
}

fn checksum(content: &str) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(content.as_bytes())))
}

/// Reads the state file; `Ok(None)` when there is none yet.
pub fn load(path: &Path) -> Result<Option<State>, StateError> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(StateError::Io {
                action: "read",
                path: path.to_owned(),
                source,
            });
        }
    };
    let corrupt = |reason: String| StateError::Corrupt {
        path: path.to_owned(),
        reason,
    };
    let envelope: Envelope<'_> =
        serde_json::from_str(&text).map_err(|e| corrupt(format!("not a state file: {e}")))?;
    if envelope.format != FORMAT {
        return Err(corrupt(format!(
            "format {:?}, expected {FORMAT:?}",
            envelope.format
        )));
    }
    let content = envelope.state.get();
    if checksum(content) != envelope.checksum {
        return Err(corrupt("checksum mismatch".into()));
    }
    let state = serde_json::from_str(content)
        .map_err(|e| corrupt(format!("content does not parse: {e}")))?;
    Ok(Some(state))
}

/// Writes the state file atomically: a temporary file beside it, fsync, rename, fsync
/// of the directory. A crash leaves either the old file or the new one, never a mix.
pub fn save(path: &Path, state: &State) -> Result<(), StateError> {
    let io = |action, source| StateError::Io {
        action,
        path: path.to_owned(),
        source,
    };
    let content =
        serde_json::to_string(state).map_err(|e| io("serialize", std::io::Error::other(e)))?;
    let text = format!(
        "{{\"format\":{},\"checksum\":\"{}\",\"state\":{content}}}\n",
        serde_json::Value::from(FORMAT),
        checksum(&content)
    );
    write_atomically(path, text.as_bytes()).map_err(|(action, e)| io(action, e))
}

/// Writes `bytes` to `path` atomically: a temporary file beside it, fsync,
/// rename, fsync of the directory. A crash leaves either the old file or the new one.
///
/// # Errors
/// The step that failed (`"write"`, `"rename into"`, ...) and why.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), (&'static str, std::io::Error)> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| ("create the directory of", e))?;
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("state");
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    {
        let mut file =
            std::fs::File::create(&tmp).map_err(|e| ("create a temporary file for", e))?;
        file.write_all(bytes).map_err(|e| ("write", e))?;
        file.sync_all().map_err(|e| ("fsync", e))?;
    }
    std::fs::rename(&tmp, path).map_err(|e| ("rename into", e))?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| ("fsync the directory of", e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::Phase;

    fn tmp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("vigie-state-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir.join("state.json")
    }

    fn sample() -> State {
        let mut s = State::default();
        s.releases.insert(
            "default/app-preprod".into(),
            ReleaseRecord {
                code_location: "app".into(),
                environment: "preprod".into(),
                status: ReleaseStatus {
                    phase: Phase::Validated,
                    ..ReleaseStatus::default()
                },
                removed_at: None,
            },
        );
        assert!(s.remember_delivery("abc".into()));
        assert!(!s.remember_delivery("abc".into()));
        s
    }

    #[test]
    fn a_saved_state_loads_back() {
        let path = tmp("roundtrip");
        assert_eq!(load(&path).unwrap(), None);
        save(&path, &sample()).unwrap();
        assert_eq!(load(&path).unwrap(), Some(sample()));
        let leftovers: Vec<_> = std::fs::read_dir(path.parent().unwrap()).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "no temporary file left behind");
    }

    #[test]
    fn torn_edited_or_foreign_files_are_reported_not_reset() {
        let path = tmp("corrupt");
        save(&path, &sample()).unwrap();
        let good = std::fs::read_to_string(&path).unwrap();
        for (bad, needle) in [
            (good[..good.len() / 2].to_owned(), "not a state file"),
            (good.replace("Validated", "Verifying"), "checksum mismatch"),
            (good.replace(FORMAT, "other/9"), "format"),
            (String::new(), "not a state file"),
        ] {
            std::fs::write(&path, &bad).unwrap();
            let e = load(&path).unwrap_err().to_string();
            assert!(e.contains(needle) && e.contains("is corrupt"), "{e}");
            assert_eq!(
                std::fs::read_to_string(&path).unwrap(),
                bad,
                "the file is left as is"
            );
        }
    }
}
