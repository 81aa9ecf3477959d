//! CI verdicts for a SHA, kept per code location and SHA. Sources: the generic signed
//! webhook ([`webhook`]); GitHub ([`github`]) and GitLab ([`gitlab`]) — pure mappings of
//! their webhook and API payloads, received at `/hooks/github` and `/hooks/gitlab`
//! ([`crate::http::server`]) or polled ([`poll`], scheduled by
//! [`crate::reconcile::verdicts::Verdicts`]).

pub mod auth;
pub mod github;
pub mod github_app;
pub mod gitlab;
pub mod glob;
pub mod poll;
pub mod webhook;

use std::collections::BTreeMap;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

pub use crate::api::code_location::VerdictVia;
use crate::{
    api::{Sha, release::CiState},
    lifecycle::CiVerdict,
};

/// Verdicts kept per code location; older ones are dropped past this.
pub const VERDICTS_PER_LOCATION: usize = 200;

/// A verdict as stored, with when it arrived.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StoredVerdict {
    /// The verdict.
    pub state: CiState,
    /// Link to the run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Failing checks.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failed_checks: Vec<String>,
    /// A few words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// When it arrived.
    pub at: Timestamp,
    /// How it came.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub via: Option<VerdictVia>,
}

impl StoredVerdict {
    /// A verdict arrived at `at`, by `via`.
    #[must_use]
    pub fn new(v: CiVerdict, at: Timestamp, via: VerdictVia) -> Self {
        Self {
            state: v.state,
            url: v.url,
            failed_checks: v.failed_checks,
            description: v.description,
            at,
            via: Some(via),
        }
    }

    /// As the lifecycle sees it.
    #[must_use]
    pub fn verdict(&self) -> CiVerdict {
        CiVerdict {
            state: self.state,
            url: self.url.clone(),
            failed_checks: self.failed_checks.clone(),
            description: self.description.clone(),
        }
    }
}

impl StoredVerdict {
    /// As recorded on a CodeLocation.
    #[must_use]
    pub fn recorded(&self, sha: Sha) -> crate::api::code_location::RecordedVerdict {
        crate::api::code_location::RecordedVerdict {
            sha,
            state: self.state,
            url: self.url.clone(),
            failed_checks: self.failed_checks.clone(),
            description: self.description.clone(),
            at: self.at,
            via: self.via,
        }
    }

    /// From a CodeLocation's record.
    #[must_use]
    pub fn from_recorded(r: &crate::api::code_location::RecordedVerdict) -> (Sha, Self) {
        (
            r.sha.clone(),
            Self {
                state: r.state,
                url: r.url.clone(),
                failed_checks: r.failed_checks.clone(),
                description: r.description.clone(),
                at: r.at,
                via: r.via,
            },
        )
    }
}

/// Merges verdicts into a CodeLocation's record: per SHA the one received last wins;
/// the newest [`RECORDED_PER_LOCATION`] are kept, oldest first. Returns the merged
/// list and whether it differs from `existing`.
#[must_use]
pub fn merge_recorded(
    existing: &[crate::api::code_location::RecordedVerdict],
    incoming: &BTreeMap<Sha, StoredVerdict>,
) -> (Vec<crate::api::code_location::RecordedVerdict>, bool) {
    let mut by_sha: BTreeMap<Sha, StoredVerdict> =
        existing.iter().map(StoredVerdict::from_recorded).collect();
    for (sha, v) in incoming {
        if by_sha.get(sha).is_none_or(|old| old.at <= v.at) {
            by_sha.insert(sha.clone(), v.clone());
        }
    }
    let mut merged: Vec<_> = by_sha.into_iter().map(|(s, v)| v.recorded(s)).collect();
    merged.sort_by(|a, b| a.at.cmp(&b.at).then_with(|| a.sha.cmp(&b.sha)));
    let excess = merged.len().saturating_sub(RECORDED_PER_LOCATION);
    merged.drain(..excess);
    let changed = merged.as_slice() != existing;
    (merged, changed)
}

/// Verdicts kept on a CodeLocation's status (an object's size is bounded).
pub const RECORDED_PER_LOCATION: usize = 100;

/// Verdicts by code location and SHA.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Verdicts(BTreeMap<String, BTreeMap<Sha, StoredVerdict>>);

impl Verdicts {
    /// Records a verdict (the latest for a SHA wins); returns whether anything changed.
    pub fn record(&mut self, location: &str, sha: Sha, verdict: StoredVerdict) -> bool {
        let by_sha = self.0.entry(location.to_owned()).or_default();
        let changed = by_sha.get(&sha).is_none_or(|old| {
            (old.state, &old.url, &old.failed_checks)
                != (verdict.state, &verdict.url, &verdict.failed_checks)
        });
        by_sha.insert(sha, verdict);
        while by_sha.len() > VERDICTS_PER_LOCATION {
            let oldest = by_sha
                .iter()
                .min_by_key(|(_, v)| v.at)
                .map(|(s, _)| s.clone());
            match oldest {
                Some(s) => by_sha.remove(&s),
                None => break,
            };
        }
        changed
    }

    /// When the latest verdict for `sha` came by webhook, if it did.
    #[must_use]
    pub fn delivered_at(&self, location: &str, sha: &Sha) -> Option<Timestamp> {
        self.0
            .get(location)
            .and_then(|m| m.get(sha))
            .filter(|v| v.via == Some(VerdictVia::Webhook))
            .map(|v| v.at)
    }

    /// The verdicts of a location as stored.
    #[must_use]
    pub fn stored(&self, location: &str) -> BTreeMap<Sha, StoredVerdict> {
        self.0.get(location).cloned().unwrap_or_default()
    }

    /// The verdicts of a location, as the lifecycle sees them.
    #[must_use]
    pub fn for_location(&self, location: &str) -> BTreeMap<Sha, CiVerdict> {
        self.0
            .get(location)
            .map(|m| m.iter().map(|(s, v)| (s.clone(), v.verdict())).collect())
            .unwrap_or_default()
    }
}

/// A webhook's body that is not the payload its headers announce (after its signature
/// was verified).
#[derive(Debug, thiserror::Error)]
#[error("invalid {what}: {source}")]
pub struct PayloadError {
    /// What was expected (`check_run payload`, `Push Hook payload`).
    pub what: String,
    /// Why it does not parse.
    #[source]
    pub source: serde_json::Error,
}

impl PayloadError {
    /// A parse error of `what`.
    #[must_use]
    pub fn new(what: impl Into<String>, source: serde_json::Error) -> Self {
        Self {
            what: what.into(),
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sha(i: usize) -> Sha {
        format!("{i:040x}").parse().unwrap()
    }

    fn verdict(state: CiState, secs: i64) -> StoredVerdict {
        StoredVerdict {
            state,
            url: None,
            failed_checks: vec![],
            description: None,
            at: Timestamp::from_second(secs).unwrap(),
            via: Some(VerdictVia::Webhook),
        }
    }

    #[test]
    fn the_latest_verdict_wins_and_the_store_is_bounded() {
        let mut v = Verdicts::default();
        assert!(v.record("app", sha(1), verdict(CiState::Pending, 1)));
        assert!(v.record("app", sha(1), verdict(CiState::Failure, 2)));
        assert!(
            !v.record("app", sha(1), verdict(CiState::Failure, 3)),
            "the same verdict again changes nothing"
        );
        assert_eq!(v.for_location("app")[&sha(1)].state, CiState::Failure);
        for i in 2..(VERDICTS_PER_LOCATION + 10) {
            v.record(
                "app",
                sha(i),
                verdict(CiState::Success, i64::try_from(i).unwrap() + 10),
            );
        }
        let kept = v.for_location("app");
        assert_eq!(kept.len(), VERDICTS_PER_LOCATION);
        assert!(!kept.contains_key(&sha(1)), "the oldest went first");
        assert!(v.for_location("other").is_empty());
    }
}

/// What a provider's webhooks reported for one SHA, kept to recompute its verdict as
/// deliveries arrive one check at a time.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Reported {
    /// GitHub check runs (and workflow runs, as checks), latest per id.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub check_runs: Vec<github::CheckRun>,
    /// GitHub commit statuses, latest per id.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub statuses: Vec<github::CommitStatus>,
    /// GitLab pipelines, latest per id.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pipelines: Vec<gitlab::Pipeline>,
}

impl Reported {
    /// Adds or replaces a check run (by id).
    pub fn check_run(&mut self, run: github::CheckRun) {
        self.check_runs.retain(|r| r.id != run.id);
        self.check_runs.push(run);
    }

    /// Adds or replaces a commit status (by id, or by context when ids are absent).
    pub fn status(&mut self, status: github::CommitStatus) {
        self.statuses.retain(|s| {
            if status.id == 0 {
                s.context != status.context
            } else {
                s.id != status.id
            }
        });
        self.statuses.push(status);
    }

    /// Adds or replaces a pipeline (by id).
    pub fn pipeline(&mut self, pipeline: gitlab::Pipeline) {
        self.pipelines.retain(|p| p.id != pipeline.id);
        self.pipelines.push(pipeline);
    }
}
