//! `vigie history`: what happened to one code location in one environment — deployed,
//! validated, rolled back, approved, overridden; who and why — from the state file
//! (`vigie run`) or from the Release's status in Kubernetes.

use std::fmt::Write as _;

use crate::api::release::{HistoryEntry, HistoryEvent};

/// One line per entry, oldest first: time, event, SHA, the other SHA, who, and why
/// (with the CI link or the hook's output).
#[must_use]
pub fn table(entries: &[HistoryEntry]) -> String {
    let mut out = String::from(
        "TIME                  EVENT              SHA      OTHER    BY        DETAILS\n",
    );
    for e in entries {
        let mut details = e.reason.clone().unwrap_or_default();
        for link in [&e.url, &e.output].into_iter().flatten() {
            if !details.is_empty() {
                details.push(' ');
            }
            details.push_str(link);
        }
        let _ = writeln!(
            out,
            "{:<21} {:<18} {:<8} {:<8} {:<9} {}",
            e.at.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
            event(e.event),
            e.sha.short(),
            e.previous.as_ref().map_or("-", |p| p.short()),
            e.by.as_deref().unwrap_or("-"),
            details
        );
    }
    out
}

fn event(e: HistoryEvent) -> &'static str {
    match e {
        HistoryEvent::Deployed => "Deployed",
        HistoryEvent::Validated => "Validated",
        HistoryEvent::Superseded => "Superseded",
        HistoryEvent::RolledBack => "RolledBack",
        HistoryEvent::Approved => "Approved",
        HistoryEvent::BreakGlass => "BreakGlass",
        HistoryEvent::Suspect => "Suspect",
        HistoryEvent::QuarantineCleared => "QuarantineCleared",
        HistoryEvent::HookSucceeded => "HookSucceeded",
        HistoryEvent::CiPassed => "CiPassed",
        HistoryEvent::Failed => "Failed",
        HistoryEvent::HealthDown => "HealthDown",
        HistoryEvent::HealthRecovered => "HealthRecovered",
    }
}

/// Why a Release's history could not be read.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    /// The state file could not be read.
    #[error(transparent)]
    State(#[from] crate::store::StateError),
    /// The Kubernetes API refused or did not answer.
    #[error("{what}: {source}")]
    Kubernetes {
        /// What was asked.
        what: String,
        /// The client's error.
        #[source]
        source: kube::Error,
    },
    /// There is no state file, or no such Release.
    #[error("{0}")]
    NotFound(String),
}

/// The history of the Release binding `location` to `environment` in the state file.
///
/// # Errors
/// No state file, or no such Release in it.
pub fn from_state(
    path: &std::path::Path,
    location: &str,
    environment: &str,
) -> Result<Vec<HistoryEntry>, HistoryError> {
    let state = crate::store::load(path)?
        .ok_or_else(|| HistoryError::NotFound(format!("no state file at {}", path.display())))?;
    state
        .releases
        .values()
        .find(|r| r.code_location == location && r.environment == environment)
        .map(|r| r.status.history.clone())
        .ok_or_else(|| {
            HistoryError::NotFound(format!(
                "no Release of {location} in {environment} in {}",
                path.display()
            ))
        })
}

/// The history of the Release binding `location` to `environment` in `namespace`.
///
/// # Errors
/// The API cannot be reached, or there is no such Release.
pub async fn from_kubernetes(
    namespace: &str,
    location: &str,
    environment: &str,
) -> Result<Vec<HistoryEntry>, HistoryError> {
    let client = kube::Client::try_default()
        .await
        .map_err(|source| HistoryError::Kubernetes {
            what: "cannot reach Kubernetes".into(),
            source,
        })?;
    let api: kube::Api<crate::api::Release> = kube::Api::namespaced(client, namespace);
    let list = api
        .list(&kube::api::ListParams::default())
        .await
        .map_err(|source| HistoryError::Kubernetes {
            what: format!("cannot list Releases in {namespace}"),
            source,
        })?;
    list.items
        .into_iter()
        .find(|r| r.spec.code_location == location && r.spec.environment == environment)
        .map(|r| r.status.map(|s| s.history).unwrap_or_default())
        .ok_or_else(|| {
            HistoryError::NotFound(format!(
                "no Release of {location} in {environment} in namespace {namespace}"
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_says_what_who_and_why() {
        let entry = |event, sha: char, previous: Option<char>| HistoryEntry {
            at: "2026-11-23T10:00:00Z".parse().unwrap(),
            event,
            sha: sha.to_string().repeat(40).parse().unwrap(),
            previous: previous.map(|p| p.to_string().repeat(40).parse().unwrap()),
            by: None,
            reason: None,
            url: None,
            output: None,
        };
        let rolled = HistoryEntry {
            reason: Some("CI failed: tests".into()),
            url: Some("https://ci.example/runs/7".into()),
            ..entry(HistoryEvent::RolledBack, 'b', Some('a'))
        };
        let approved = HistoryEntry {
            by: Some("alice".into()),
            reason: Some("release 1.2".into()),
            ..entry(HistoryEvent::Approved, 'c', None)
        };
        let out = table(&[
            entry(HistoryEvent::Deployed, 'b', Some('a')),
            rolled,
            approved,
        ]);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 4);
        assert!(
            lines[1].starts_with("2026-11-23T10:00:00Z  Deployed           bbbbbbb  aaaaaaa  -")
        );
        assert!(
            lines[2].contains("RolledBack")
                && lines[2].ends_with("CI failed: tests https://ci.example/runs/7"),
            "{}",
            lines[2]
        );
        assert!(
            lines[3].contains("alice") && lines[3].ends_with("release 1.2"),
            "{}",
            lines[3]
        );
    }
}
