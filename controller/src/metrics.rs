//! Prometheus metrics, prefixed `vigie_`. Label values come from fixed names
//! (phases, events, outcomes), never from `Debug` output.

use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

use crate::api::{Phase, environment::EventKind};

/// `result` of a reconcile.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    /// `ok` or `error`.
    pub result: &'static str,
}

/// `event` of a transition.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EventLabel {
    /// The event's name.
    pub event: &'static str,
}

/// A notification sink's kind and what became of a message.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NotificationLabel {
    /// discord, msTeams, slack, ntfy, email, webhook.
    pub sink: &'static str,
    /// delivered, failed, dropped.
    pub outcome: &'static str,
}

/// A forge report's provider and what became of it.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ForgeLabel {
    /// github, gitlab.
    pub provider: &'static str,
    /// delivered, unchanged, retried, failed.
    pub outcome: &'static str,
}

/// `outcome` of a webhook delivery.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    /// accepted, duplicate, unauthorized, bad_request, stale, unknown_location, error.
    pub outcome: &'static str,
}

/// `category` of a failed reconcile.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CategoryLabel {
    /// invalid_spec, transient, conflict, engine, artifact, forge, store.
    pub category: &'static str,
}

/// `reason` an HTTP connection was refused.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RejectionLabel {
    /// max_connections, max_per_peer.
    pub reason: &'static str,
}

/// `phase` of Releases.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PhaseLabel {
    /// The phase's name.
    pub phase: &'static str,
}

/// `verb` of a Kubernetes API request.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VerbLabel {
    /// get, watch, create, update, patch, delete, other.
    pub verb: &'static str,
}

/// The metrics of one Vigie process.
pub struct Metrics {
    registry: Registry,
    /// Reconciles of a Release by result (both modes).
    pub reconciles: Family<ResultLabel, Counter>,
    /// Failed reconciles of a Release by the category of the fault.
    pub reconcile_errors: Family<CategoryLabel, Counter>,
    /// Duration of reconcile rounds.
    pub reconcile_seconds: Histogram,
    /// Lifecycle transitions by event.
    pub transitions: Family<EventLabel, Counter>,
    /// Webhook deliveries by outcome.
    pub webhooks: Family<OutcomeLabel, Counter>,
    /// Releases by phase.
    pub releases: Family<PhaseLabel, Gauge>,
    /// 1 when the last manifest load was valid.
    pub manifests_valid: Gauge,
    /// Kubernetes API requests made, by verb (operator).
    pub api_requests: Family<VerbLabel, Counter>,
    /// 1 while this replica leads (operator).
    pub leader: Gauge,
    /// Unix time of the last git commit of manifests taken.
    pub git_synced: Gauge,
    /// Failed fetches of the manifests repository and invalid commits.
    pub git_sync_errors: Counter,
    /// Commits written back to the manifests repository.
    pub write_backs: Counter,
    /// Write-backs that failed.
    pub write_back_errors: Counter,
    /// Writes of the state file (`vigie run`), each saving every change made since the last.
    pub state_writes: Counter,
    /// Notifications by sink kind and outcome.
    pub notifications: Family<NotificationLabel, Counter>,
    /// HTTP connections closed at once, by reason.
    pub http_refused: Family<RejectionLabel, Counter>,
    /// Reports to the forge (deployment statuses, commit statuses) by provider and outcome.
    pub forge_reports: Family<ForgeLabel, Counter>,
    /// Kubernetes Events waiting to be created (operator).
    pub events_queued: Gauge,
    /// Kubernetes Events dropped: too many were waiting (operator).
    pub events_dropped: Counter,
}

impl Default for Metrics {
    #[allow(
        clippy::too_many_lines,
        reason = "one registration per metric, read as a list"
    )]
    fn default() -> Self {
        let mut registry = Registry::with_prefix("vigie");
        let reconciles = Family::<ResultLabel, Counter>::default();
        let reconcile_seconds = Histogram::new([0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0, 120.0]);
        let transitions = Family::<EventLabel, Counter>::default();
        let webhooks = Family::<OutcomeLabel, Counter>::default();
        let releases = Family::<PhaseLabel, Gauge>::default();
        let manifests_valid = Gauge::default();
        let api_requests = Family::<VerbLabel, Counter>::default();
        let leader = Gauge::default();
        let git_synced = Gauge::default();
        let git_sync_errors = Counter::default();
        let write_backs = Counter::default();
        let write_back_errors = Counter::default();
        let state_writes = Counter::default();
        registry.register(
            "state_writes",
            "Writes of the state file, each saving every change made since the last",
            state_writes.clone(),
        );
        let notifications = Family::<NotificationLabel, Counter>::default();
        let http_refused = Family::<RejectionLabel, Counter>::default();
        let reconcile_errors = Family::<CategoryLabel, Counter>::default();
        let forge_reports = Family::<ForgeLabel, Counter>::default();
        let events_queued = Gauge::default();
        let events_dropped = Counter::default();
        registry.register(
            "events_queued",
            "Kubernetes Events waiting to be created",
            events_queued.clone(),
        );
        registry.register(
            "events_dropped",
            "Kubernetes Events dropped: too many were waiting",
            events_dropped.clone(),
        );
        registry.register(
            "forge_reports",
            "Reports to the forge (deployments, commit statuses) by provider and outcome",
            forge_reports.clone(),
        );
        registry.register(
            "reconcile_errors",
            "Failed reconciles of a Release by the category of the fault",
            reconcile_errors.clone(),
        );
        registry.register(
            "http_connections_refused",
            "HTTP connections closed as soon as accepted, by the bound they were over",
            http_refused.clone(),
        );
        registry.register(
            "notifications",
            "Notifications by sink kind and outcome",
            notifications.clone(),
        );
        registry.register(
            "git_write_backs",
            "Commits written back to the manifests repository",
            write_backs.clone(),
        );
        registry.register(
            "git_write_back_errors",
            "Write-backs to the manifests repository that failed",
            write_back_errors.clone(),
        );
        registry.register(
            "git_synced_timestamp_seconds",
            "Unix time of the last commit of manifests taken from git",
            git_synced.clone(),
        );
        registry.register(
            "git_sync_errors",
            "Failed fetches of the manifests repository and invalid commits",
            git_sync_errors.clone(),
        );
        registry.register(
            "api_requests",
            "Kubernetes API requests by verb",
            api_requests.clone(),
        );
        registry.register("leader", "1 while this replica leads", leader.clone());
        registry.register(
            "reconciles",
            "Reconciles of a Release by result",
            reconciles.clone(),
        );
        registry.register(
            "reconcile_seconds",
            "Duration of reconcile rounds",
            reconcile_seconds.clone(),
        );
        registry.register(
            "transitions",
            "Lifecycle transitions by event",
            transitions.clone(),
        );
        registry.register(
            "webhook_deliveries",
            "Webhook deliveries by outcome",
            webhooks.clone(),
        );
        registry.register("releases", "Releases by phase", releases.clone());
        registry.register(
            "manifests_valid",
            "1 when the last manifest load was valid",
            manifests_valid.clone(),
        );
        Self {
            registry,
            reconciles,
            reconcile_errors,
            reconcile_seconds,
            transitions,
            webhooks,
            releases,
            manifests_valid,
            api_requests,
            leader,
            git_synced,
            git_sync_errors,
            write_backs,
            write_back_errors,
            state_writes,
            notifications,
            http_refused,
            forge_reports,
            events_queued,
            events_dropped,
        }
    }
}

impl Metrics {
    /// The text exposition format.
    #[must_use]
    pub fn render(&self) -> String {
        let mut out = String::new();
        encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }

    /// Sets the per-phase gauges from the phases of all Releases.
    pub fn set_phases(&self, phases: impl Iterator<Item = Phase>) {
        let mut counts = std::collections::BTreeMap::new();
        for phase in ALL_PHASES {
            counts.insert(phase.as_str(), 0_i64);
        }
        for phase in phases {
            *counts.entry(phase.as_str()).or_default() += 1;
        }
        for (phase, n) in counts {
            self.releases.get_or_create(&PhaseLabel { phase }).set(n);
        }
    }
}

const ALL_PHASES: [Phase; 8] = [
    Phase::Pending,
    Phase::AwaitingApproval,
    Phase::Deploying,
    Phase::Verifying,
    Phase::Validated,
    Phase::RollingBack,
    Phase::RolledBack,
    Phase::Failed,
];

/// The fixed name of an event.
#[must_use]
pub fn event_name(e: EventKind) -> &'static str {
    match e {
        EventKind::DeployStarted => "DeployStarted",
        EventKind::Deployed => "Deployed",
        EventKind::Validated => "Validated",
        EventKind::VerificationFailed => "VerificationFailed",
        EventKind::RolledBack => "RolledBack",
        EventKind::Failed => "Failed",
        EventKind::AwaitingApproval => "AwaitingApproval",
        EventKind::Approved => "Approved",
        EventKind::BreakGlass => "BreakGlass",
        EventKind::Suspect => "Suspect",
        EventKind::HealthDown => "HealthDown",
        EventKind::HealthRecovered => "HealthRecovered",
        EventKind::HookFailed => "HookFailed",
    }
}

/// The time each step of a task took, shown as `step 1.2 ms · step 0.3 ms` (the
/// debug lines that say where a transition's time went).
pub struct Laps {
    last: std::time::Instant,
    laps: Vec<(&'static str, std::time::Duration)>,
}

impl Laps {
    /// Laps from `started`.
    #[must_use]
    pub fn new(started: std::time::Instant) -> Self {
        Self {
            last: started,
            laps: Vec::with_capacity(8),
        }
    }

    /// The step that just ended.
    pub fn lap(&mut self, step: &'static str) {
        let now = std::time::Instant::now();
        self.laps.push((step, now - self.last));
        self.last = now;
    }
}

impl std::fmt::Display for Laps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, (step, took)) in self.laps.iter().enumerate() {
            let sep = if i == 0 { "" } else { " · " };
            write!(f, "{sep}{step} {:.1} ms", took.as_secs_f64() * 1000.0)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_render_with_the_prefix_and_fixed_labels() {
        let m = Metrics::default();
        m.reconciles
            .get_or_create(&ResultLabel { result: "ok" })
            .inc();
        m.transitions
            .get_or_create(&EventLabel {
                event: event_name(EventKind::RolledBack),
            })
            .inc();
        m.set_phases([Phase::Validated, Phase::Validated, Phase::Failed].into_iter());
        let text = m.render();
        assert!(
            text.contains("vigie_reconciles_total{result=\"ok\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("vigie_transitions_total{event=\"RolledBack\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("vigie_releases{phase=\"Validated\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("vigie_releases{phase=\"Deploying\"} 0"),
            "{text}"
        );
    }
}
