//! Tracking at the edge: fetches the refs a CodeLocation's `track` rules name into a
//! mirror, and asks the pure rules ([`super::track`]) where each environment goes.

use std::path::Path;

use super::{
    repo::{Credentials, Mirror},
    track::{self, Current, Step},
};
use crate::api::{Sha, code_location::TrackRule};

/// What a rule decided for an environment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// The environment whose Release the rule moves.
    pub environment: String,
    /// The decision.
    pub step: Step,
}

/// Why the tracked refs could not be checked.
#[derive(Debug, thiserror::Error)]
pub enum TrackError {
    /// The repository could not be fetched or read.
    #[error(transparent)]
    Git(#[from] crate::git::GitError),
    /// A rule's tag pattern does not parse.
    #[error(transparent)]
    Pattern(#[from] track::NotARange),
}

/// What an environment's Release knows: its revision (a SHA) and its quarantine.
pub type Known = (Option<Sha>, Vec<Sha>);

/// Fetches the rules' refs from `url` into the mirror under `cache` and decides each
/// rule. Blocking (git2).
///
/// # Errors
/// The remote cannot be fetched; a rule's tag pattern does not parse.
pub fn evaluate(
    cache: &Path,
    url: &str,
    creds: &Credentials,
    rules: &[TrackRule],
    known: &dyn Fn(&str) -> Known,
) -> Result<Vec<Outcome>, TrackError> {
    let mirror = Mirror::open(cache, url)?;
    let mut refspecs: Vec<String> = rules
        .iter()
        .filter_map(|r| r.branch.as_ref().map(|b| format!("refs/heads/{b}")))
        .collect();
    if rules.iter().any(|r| r.tags.is_some()) {
        refspecs.push("refs/tags/*".into());
    }
    if refspecs.is_empty() {
        return Ok(Vec::new());
    }
    mirror.fetch(&refspecs, creds)?;
    let tags = tags(&mirror);
    let mut out = Vec::new();
    for rule in rules {
        let (revision, quarantined) = known(&rule.environment);
        let current = Current {
            revision: revision.as_ref(),
            quarantined: &quarantined,
        };
        let step = if let Some(branch) = &rule.branch {
            let tip = mirror.tip(&format!("refs/heads/{branch}"))?;
            let descends = revision
                .as_ref()
                .is_some_and(|r| mirror.descends_from(&tip, r));
            track::branch(branch, &tip, descends, &current)
        } else if let Some(pattern) = &rule.tags {
            let pattern = track::tag_pattern(pattern)?;
            track::tags(&pattern, &tags, &current)
        } else {
            Step::Stay
        };
        out.push(Outcome {
            environment: rule.environment.clone(),
            step,
        });
    }
    Ok(out)
}

/// Every tag of the mirror with the commit it names (annotated tags peeled).
fn tags(mirror: &Mirror) -> Vec<(String, Sha)> {
    let repo = mirror.repository();
    let Ok(refs) = repo.references_glob("refs/tags/*") else {
        return Vec::new();
    };
    refs.flatten()
        .filter_map(|r| {
            let name = r.shorthand().ok()?.to_owned();
            let commit = r.peel_to_commit().ok()?;
            Some((name, commit.id().to_string().parse().ok()?))
        })
        .collect()
}
