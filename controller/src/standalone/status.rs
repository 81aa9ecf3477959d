//! `vigie status`: the table of environments × code locations from the state file.

use std::fmt::Write as _;

use serde::Serialize;

use crate::api::{Sha, release::CiState};
use crate::store::State;

/// One line of `vigie status -o json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Row {
    /// The Release (`namespace/name`).
    pub release: String,
    /// The code location.
    pub code_location: String,
    /// The environment.
    pub environment: String,
    /// Desired SHA.
    pub desired_sha: Option<String>,
    /// Deployed SHA.
    pub deployed_sha: Option<String>,
    /// Last validated SHA.
    pub validated_sha: Option<String>,
    /// Phase.
    pub phase: String,
    /// When the phase began.
    pub since: Option<String>,
    /// What is going on.
    pub message: Option<String>,
    /// The last CI verdict seen for the SHA in flight or last verified.
    pub ci_state: Option<String>,
    /// Link to that CI run.
    pub ci_url: Option<String>,
    /// Quarantined SHAs.
    pub quarantined: Vec<String>,
}

/// The rows, sorted by environment then code location.
#[must_use]
pub fn rows(state: &State) -> Vec<Row> {
    let mut rows: Vec<Row> = state
        .releases
        .iter()
        .filter(|(_, r)| r.removed_at.is_none())
        .map(|(key, r)| {
            let s = &r.status;
            Row {
                release: key.clone(),
                code_location: r.code_location.clone(),
                environment: r.environment.clone(),
                desired_sha: s.desired_sha.as_ref().map(ToString::to_string),
                deployed_sha: s.deployed_sha.as_ref().map(ToString::to_string),
                validated_sha: s.validated_sha.as_ref().map(ToString::to_string),
                phase: s.phase.as_str().to_owned(),
                since: s.phase_since.map(|t| t.to_string()),
                message: s.message.clone(),
                ci_state: s.ci.as_ref().map(|c| match c.state {
                    CiState::Pending => "pending".to_owned(),
                    CiState::Success => "success".to_owned(),
                    CiState::Failure => "failure".to_owned(),
                    CiState::Error => "error".to_owned(),
                }),
                ci_url: s.ci.as_ref().and_then(|c| c.url.clone()),
                quarantined: s.quarantine.iter().map(|q| q.sha.to_string()).collect(),
            }
        })
        .collect();
    rows.sort_by(|a, b| {
        (&a.environment, &a.code_location).cmp(&(&b.environment, &b.code_location))
    });
    rows
}

fn short(sha: Option<&String>) -> String {
    sha.and_then(|s| s.parse::<Sha>().ok())
        .map_or_else(|| "-".to_owned(), |s| s.short().to_owned())
}

/// The human table.
#[must_use]
pub fn table(rows: &[Row]) -> String {
    let header = [
        "ENVIRONMENT",
        "LOCATION",
        "DESIRED",
        "DEPLOYED",
        "VALIDATED",
        "PHASE",
        "SINCE",
        "MESSAGE",
    ];
    let lines: Vec<[String; 8]> = rows
        .iter()
        .map(|r| {
            [
                r.environment.clone(),
                r.code_location.clone(),
                short(r.desired_sha.as_ref()),
                short(r.deployed_sha.as_ref()),
                short(r.validated_sha.as_ref()),
                r.phase.clone(),
                r.since.clone().unwrap_or_else(|| "-".into()),
                r.message.clone().unwrap_or_default(),
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for line in &lines {
        for (w, cell) in widths.iter_mut().zip(line) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut push = |cells: &[String]| {
        let mut line = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                line.push_str(cell);
            } else {
                let _ = write!(line, "{cell:<width$}  ", width = widths[i]);
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    };
    push(&header.map(str::to_owned));
    for line in &lines {
        push(line);
    }
    out
}

/// The git source's line: the commit in force, since when, and the last error.
#[must_use]
pub fn git_sync(sync: Option<&super::state::GitSync>) -> String {
    let Some(s) = sync else {
        return String::new();
    };
    let mut out = format!(
        "\nManifests from {}: {}",
        s.source,
        match (&s.commit, &s.synced_at) {
            (Some(c), Some(at)) => format!("commit {} (taken {at})", c.short()),
            _ => "no commit taken yet".to_owned(),
        }
    );
    if let Some(at) = &s.checked_at {
        let _ = write!(out, ", fetched {at}");
    }
    out.push('\n');
    if let Some(e) = &s.error {
        let _ = writeln!(out, "  error: {e}");
    }
    if let Some(w) = &s.write_back {
        let _ = writeln!(out, "  write-back: {w}");
    }
    out
}

/// The manifests' problems, when the last change was invalid.
#[must_use]
pub fn problems(problems: &[String]) -> String {
    if problems.is_empty() {
        return String::new();
    }
    let mut out = format!(
        "\nThe manifests are invalid; the last valid set keeps running. {} problem(s):\n",
        problems.len()
    );
    for p in problems {
        let _ = writeln!(out, "  {p}");
    }
    out
}
