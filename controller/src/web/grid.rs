//! The grid of the front page, decided from a [`Snapshot`]: code locations as rows,
//! environments as columns in promotion order, one cell per Release, and a banner per
//! environment whose deploy windows are closed or whose backend does not answer. Pure:
//! the time is passed in.

use std::collections::{BTreeMap, BTreeSet};

use jiff::Timestamp;

use super::ports::{Named, ReleaseView, Snapshot};
use crate::{
    api::{
        EnvironmentSpec, Phase, Sha,
        release::{CiSummary, HealthState, MonitorState},
    },
    lifecycle::{Gate, Windows},
};

/// The reason of the `Ready` condition when the backend does not answer.
const BACKEND_UNAVAILABLE: &str = "BackendUnavailable";

/// One namespace's grid.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grid {
    /// The namespace.
    pub namespace: String,
    /// The environments, in promotion order.
    pub columns: Vec<Column>,
    /// The code locations, by name.
    pub rows: Vec<Row>,
}

/// An environment's column head.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Column {
    /// The Environment.
    pub name: String,
    /// Where its SHAs come from, and whether a person approves each one.
    pub from: Option<(String, bool)>,
    /// What holds or troubles the whole environment.
    pub banners: Vec<Banner>,
}

/// What a banner over an environment says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Banner {
    /// The deploy windows are closed; `until` when they open (`None`: they never do).
    WindowClosed {
        /// When they open.
        until: Option<Timestamp>,
    },
    /// The backend does not answer (for these Releases, with the last reason given).
    BackendDown {
        /// What the last attempt said.
        reason: String,
    },
}

/// A code location's row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Row {
    /// The CodeLocation.
    pub location: String,
    /// Its repository (credentials redacted).
    pub repo: String,
    /// One cell per column (`None`: no Release of this location there).
    pub cells: Vec<Option<Cell>>,
}

/// A Release's cell.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cell {
    /// The Release (`namespace/name`).
    pub release: String,
    /// Its badge.
    pub badge: Badge,
    /// What runs.
    pub deployed: Option<Sha>,
    /// The subject of what runs, when known (filled by the pages from the repository).
    pub subject: Option<String>,
    /// What is asked for, when it is not what runs.
    pub desired: Option<Sha>,
    /// The last validated SHA, when it is not what runs.
    pub validated: Option<Sha>,
    /// The CI verdict last seen.
    pub ci: Option<CiSummary>,
    /// The branch or tag a tracking rule follows here.
    pub tracking: Option<String>,
    /// Quarantined SHAs.
    pub quarantined: Vec<Sha>,
    /// Suspect SHAs.
    pub suspect: Vec<Sha>,
    /// What the health monitor says, when it is not plain good health.
    pub health: Option<String>,
    /// The status message.
    pub message: Option<String>,
}

/// A cell's phase, as a person reads it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Badge {
    /// Nothing to do, or waiting for something other than a window.
    Pending,
    /// The desired SHA waits for a person's approval.
    AwaitingApproval,
    /// The desired SHA waits for the deploy windows to open.
    HeldByWindow,
    /// Being deployed.
    Deploying,
    /// Deployed, waiting for CI.
    Verifying,
    /// Validated.
    Validated,
    /// Being rolled back.
    RollingBack,
    /// Rolled back to the last validated SHA.
    RolledBack,
    /// A person is needed.
    Failed,
}

impl Badge {
    /// The words on the badge.
    #[must_use]
    pub const fn label(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::AwaitingApproval => "awaiting approval",
            Self::HeldByWindow => "held by a window",
            Self::Deploying => "deploying",
            Self::Verifying => "verifying",
            Self::Validated => "validated",
            Self::RollingBack => "rolling back",
            Self::RolledBack => "rolled back",
            Self::Failed => "failed",
        }
    }

    /// The CSS class of the badge.
    #[must_use]
    pub const fn class(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::AwaitingApproval => "approval",
            Self::HeldByWindow => "window",
            Self::Deploying => "deploying",
            Self::Verifying => "verifying",
            Self::Validated => "validated",
            Self::RollingBack => "rolling-back",
            Self::RolledBack => "rolled-back",
            Self::Failed => "failed",
        }
    }
}

/// The badge of a Release: its phase, except that a Pending Release whose desired SHA
/// is held by closed windows says so.
#[must_use]
pub fn badge(phase: Phase, window_closed: bool, waiting: bool) -> Badge {
    match phase {
        Phase::Pending if window_closed && waiting => Badge::HeldByWindow,
        Phase::Pending => Badge::Pending,
        Phase::AwaitingApproval => Badge::AwaitingApproval,
        Phase::Deploying => Badge::Deploying,
        Phase::Verifying => Badge::Verifying,
        Phase::Validated => Badge::Validated,
        Phase::RollingBack => Badge::RollingBack,
        Phase::RolledBack => Badge::RolledBack,
        Phase::Failed => Badge::Failed,
    }
}

/// The environments' names in promotion order: those promoted from nothing first, then
/// each after the one it is promoted from (by name among equals; a cycle or an unknown
/// source counts as a start).
#[must_use]
pub fn promotion_order<'a>(environments: &[(&'a str, Option<&'a str>)]) -> Vec<String> {
    let known: BTreeMap<&'a str, Option<&'a str>> = environments.iter().copied().collect();
    let depth = |mut name: &'a str| {
        let mut seen = BTreeSet::new();
        let mut depth = 0usize;
        while let Some(Some(from)) = known.get(name) {
            if !known.contains_key(from) || !seen.insert(name) {
                break;
            }
            depth += 1;
            name = from;
        }
        depth
    };
    let mut names: Vec<(usize, &str)> = known.keys().map(|n| (depth(n), *n)).collect();
    names.sort_unstable();
    names.into_iter().map(|(_, n)| n.to_owned()).collect()
}

/// The banner of `spec`'s deploy windows when they are closed at `now`.
fn closed(spec: &EnvironmentSpec, now: Timestamp) -> Option<Banner> {
    let windows = Windows::new(spec.windows.as_ref()?).ok()?;
    match windows.gate(now) {
        Gate::Open => None,
        Gate::OpensAt(t) => Some(Banner::WindowClosed { until: Some(t) }),
        Gate::Never => Some(Banner::WindowClosed { until: None }),
    }
}

/// The grids, one per namespace (by name), from everything read.
#[must_use]
pub fn grids(snapshot: &Snapshot, now: Timestamp) -> Vec<Grid> {
    let namespaces: BTreeSet<&str> = snapshot
        .environments
        .iter()
        .map(|e| e.namespace.as_str())
        .chain(snapshot.locations.iter().map(|l| l.namespace.as_str()))
        .chain(snapshot.releases.iter().map(|r| r.namespace.as_str()))
        .collect();
    namespaces
        .into_iter()
        .map(|ns| grid(snapshot, ns, now))
        .collect()
}

fn grid(snapshot: &Snapshot, ns: &str, now: Timestamp) -> Grid {
    let environments: BTreeMap<&str, &Named<EnvironmentSpec>> = snapshot
        .environments
        .iter()
        .filter(|e| e.namespace == ns)
        .map(|e| (e.name.as_str(), e))
        .collect();
    let releases: Vec<&ReleaseView> = snapshot
        .releases
        .iter()
        .filter(|r| r.namespace == ns)
        .collect();
    // Environments named by a Release but not (or no longer) defined still get a column.
    let mut env_names: Vec<(&str, Option<&str>)> = environments
        .values()
        .map(|e| {
            (
                e.name.as_str(),
                e.spec.promotion.as_ref().map(|p| p.from.as_str()),
            )
        })
        .collect();
    for r in &releases {
        if !environments.contains_key(r.environment.as_str()) {
            env_names.push((r.environment.as_str(), None));
        }
    }
    env_names.sort_unstable();
    env_names.dedup_by_key(|(n, _)| *n);
    let order = promotion_order(&env_names);
    let closed_now: BTreeMap<&str, Option<Banner>> = environments
        .iter()
        .map(|(n, e)| (*n, closed(&e.spec, now)))
        .collect();
    let columns = order
        .iter()
        .map(|name| {
            let spec = environments.get(name.as_str()).map(|e| &e.spec);
            let mut banners = Vec::new();
            if let Some(Some(banner)) = closed_now.get(name.as_str()) {
                banners.push(banner.clone());
            }
            if let Some(reason) = backend_down(&releases, name) {
                banners.push(Banner::BackendDown { reason });
            }
            Column {
                name: name.clone(),
                from: spec.and_then(|s| s.promotion.as_ref()).map(|p| {
                    (
                        p.from.clone(),
                        p.approval == crate::api::environment::ApprovalPolicy::Manual,
                    )
                }),
                banners,
            }
        })
        .collect::<Vec<_>>();
    let mut location_names: BTreeMap<&str, String> = snapshot
        .locations
        .iter()
        .filter(|l| l.namespace == ns)
        .map(|l| (l.name.as_str(), crate::git::redact(&l.spec.repo.url)))
        .collect();
    for r in &releases {
        location_names.entry(r.location.as_str()).or_default();
    }
    let rows = location_names
        .into_iter()
        .map(|(location, repo)| {
            let tracking = snapshot
                .locations
                .iter()
                .find(|l| l.namespace == ns && l.name == location)
                .map(|l| l.spec.track.clone())
                .unwrap_or_default();
            let cells = columns
                .iter()
                .map(|c| {
                    let r = releases
                        .iter()
                        .find(|r| r.location == location && r.environment == c.name)?;
                    let window_closed =
                        closed_now.get(c.name.as_str()).is_some_and(Option::is_some);
                    let rule = tracking.iter().find(|t| t.environment == c.name);
                    Some(cell(r, window_closed, rule))
                })
                .collect();
            Row {
                location: location.to_owned(),
                repo,
                cells,
            }
        })
        .collect();
    Grid {
        namespace: ns.to_owned(),
        columns,
        rows,
    }
}

/// The reason given by a Release of `environment` whose backend does not answer.
fn backend_down(releases: &[&ReleaseView], environment: &str) -> Option<String> {
    releases
        .iter()
        .filter(|r| r.environment == environment)
        .flat_map(|r| &r.status.conditions)
        .find(|c| {
            c.type_ == "Ready"
                && c.status == crate::api::ConditionStatus::False
                && c.reason == BACKEND_UNAVAILABLE
        })
        .map(|c| c.message.clone())
}

fn cell(
    r: &ReleaseView,
    window_closed: bool,
    rule: Option<&crate::api::code_location::TrackRule>,
) -> Cell {
    let s = &r.status;
    let waiting = s.desired_sha.is_some() && s.desired_sha != s.deployed_sha;
    let health = match (&s.monitor, &s.health) {
        (Some(m), _) if m.state == MonitorState::Degraded => Some(format!(
            "degraded{}",
            m.reason
                .as_deref()
                .map(|r| format!(": {r}"))
                .unwrap_or_default()
        )),
        (_, Some(h)) if h.state == HealthState::Unhealthy => Some(format!(
            "unhealthy{}",
            h.reason
                .as_deref()
                .map(|r| format!(": {r}"))
                .unwrap_or_default()
        )),
        _ => None,
    };
    Cell {
        release: r.key(),
        badge: badge(s.phase, window_closed, waiting),
        deployed: s.deployed_sha.clone(),
        subject: None,
        desired: s
            .desired_sha
            .clone()
            .filter(|d| Some(d) != s.deployed_sha.as_ref()),
        validated: s
            .validated_sha
            .clone()
            .filter(|v| Some(v) != s.deployed_sha.as_ref()),
        ci: s.ci.clone(),
        tracking: rule.and_then(|t| {
            t.branch
                .as_ref()
                .map(|b| format!("branch {b}"))
                .or_else(|| t.tags.as_ref().map(|g| format!("tags {g}")))
        }),
        quarantined: s.quarantine.iter().map(|q| q.sha.clone()).collect(),
        suspect: s.suspect.iter().map(|q| q.sha.clone()).collect(),
        health,
        message: s.message.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{
        Condition, ConditionStatus, ReleaseStatus,
        release::{QuarantineCause, QuarantineEntry},
    };

    fn sha(c: char) -> Sha {
        c.to_string().repeat(40).parse().unwrap()
    }

    fn env(name: &str, from: Option<&str>) -> Named<EnvironmentSpec> {
        let mut spec = serde_json::json!({"backend": {"docker": {}}});
        if let Some(f) = from {
            spec["promotion"] = serde_json::json!({"from": f, "approval": "Manual"});
        }
        Named {
            namespace: "apps".into(),
            name: name.into(),
            spec: serde_json::from_value(spec).unwrap(),
        }
    }

    fn release(location: &str, environment: &str, status: ReleaseStatus) -> ReleaseView {
        ReleaseView {
            namespace: "apps".into(),
            name: format!("{location}-{environment}"),
            location: location.into(),
            environment: environment.into(),
            revision: None,
            status,
        }
    }

    #[test]
    fn environments_come_in_promotion_order() {
        let order = promotion_order(&[
            ("prod", Some("staging")),
            ("dev", None),
            ("staging", Some("dev")),
            ("alpha", None),
        ]);
        assert_eq!(order, ["alpha", "dev", "staging", "prod"]);
        // A cycle or an unknown source does not loop, and every name comes once.
        let order = promotion_order(&[("a", Some("b")), ("b", Some("a")), ("c", Some("zz"))]);
        let mut sorted = order.clone();
        sorted.sort();
        assert_eq!(sorted, ["a", "b", "c"]);
        assert_eq!(order[0], "c");
    }

    #[test]
    fn every_phase_has_a_badge_and_closed_windows_hold_only_what_waits() {
        let phases = [
            Phase::Pending,
            Phase::AwaitingApproval,
            Phase::Deploying,
            Phase::Verifying,
            Phase::Validated,
            Phase::RollingBack,
            Phase::RolledBack,
            Phase::Failed,
        ];
        let mut labels = BTreeSet::new();
        for phase in phases {
            for (closed, waiting) in [(false, false), (false, true), (true, false), (true, true)] {
                let b = badge(phase, closed, waiting);
                labels.insert(b.label());
                let held = phase == Phase::Pending && closed && waiting;
                assert_eq!(
                    b == Badge::HeldByWindow,
                    held,
                    "{phase:?} {closed} {waiting}"
                );
            }
        }
        assert_eq!(labels.len(), 9, "nine distinct badges: {labels:?}");
    }

    #[test]
    fn a_grid_has_a_cell_per_release_and_banners_for_troubled_environments() {
        let down = ReleaseStatus {
            phase: Phase::Verifying,
            deployed_sha: Some(sha('b')),
            validated_sha: Some(sha('a')),
            conditions: vec![Condition {
                type_: "Ready".into(),
                status: ConditionStatus::False,
                reason: BACKEND_UNAVAILABLE.into(),
                message: "cannot reach the Docker engine".into(),
                last_transition_time: Timestamp::UNIX_EPOCH,
                observed_generation: None,
            }],
            quarantine: vec![QuarantineEntry {
                sha: sha('c'),
                at: Timestamp::UNIX_EPOCH,
                reason: "red".into(),
                cause: QuarantineCause::CiFailed,
                ci_passed_later: false,
            }],
            ..ReleaseStatus::default()
        };
        let snapshot = Snapshot {
            environments: vec![env("prod", Some("dev")), env("dev", None)],
            locations: Vec::new(),
            releases: vec![
                release("billing", "dev", down),
                release(
                    "billing",
                    "prod",
                    ReleaseStatus {
                        phase: Phase::Validated,
                        deployed_sha: Some(sha('a')),
                        validated_sha: Some(sha('a')),
                        ..ReleaseStatus::default()
                    },
                ),
                release("orders", "qa", ReleaseStatus::default()),
            ],
            notices: Vec::new(),
        };
        let grids = grids(&snapshot, Timestamp::UNIX_EPOCH);
        assert_eq!(grids.len(), 1);
        let g = &grids[0];
        let names: Vec<_> = g.columns.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(
            names,
            ["dev", "qa", "prod"],
            "an undefined environment still shows"
        );
        assert_eq!(g.columns[2].from, Some(("dev".into(), true)));
        assert_eq!(
            g.columns[0].banners,
            [Banner::BackendDown {
                reason: "cannot reach the Docker engine".into()
            }]
        );
        assert!(g.columns[2].banners.is_empty());
        let rows: Vec<_> = g.rows.iter().map(|r| r.location.as_str()).collect();
        assert_eq!(rows, ["billing", "orders"]);
        let billing = &g.rows[0];
        let dev = billing.cells[0].as_ref().unwrap();
        assert_eq!(dev.badge, Badge::Verifying);
        assert_eq!(dev.validated, Some(sha('a')), "the rollback target shows");
        assert_eq!(dev.quarantined, [sha('c')]);
        assert!(billing.cells[1].is_none(), "no Release of billing in qa");
        let prod = billing.cells[2].as_ref().unwrap();
        assert_eq!(prod.validated, None, "what runs is what is validated");
        assert_eq!(prod.release, "apps/billing-prod");
    }
}
