//! Property tests: random sequences of events (new revisions, CI verdicts, health,
//! the clock, approvals, break-glass, clearances, hooks, backend outages, upstream
//! changes) driven through `decide`, checking the lifecycle's invariants after every
//! step.

mod support;

use std::collections::BTreeSet;

use proptest::prelude::*;
use support::{
    World, environment, sha, validated_only, weekend_freeze, with_backup_hook, with_smoke_test,
};
use vigie::{
    api::{
        Phase, Sha,
        environment::{
            ApprovalPolicy, CiErrorPolicy, EnvironmentSpec, EventKind, GreenRerunPolicy,
            Strategy as Rollout, TimeoutPolicy,
        },
        release::{CiState, HealthState},
    },
    lifecycle::{BackendState, Decision, HookOutcome, WorkloadTarget},
};

const SHAS: [char; 4] = ['a', 'b', 'c', 'd'];

#[derive(Clone, Debug)]
enum Event {
    Want(usize),
    Ci(usize, CiState),
    Tick(i64),
    /// The backend applies the last target; the new workload is healthy or not.
    Follow(HealthState),
    Health(HealthState),
    BackendDown,
    BackendUp,
    Upstream(u8, u8),
    Approve(usize),
    BreakGlass(usize),
    Clear(usize),
    Hook(u8),
    /// The SHA in flight's image is (not) available.
    Artifact(bool),
    /// A person rolls back to this SHA (`vigie rollback`).
    RollBack(usize),
}

fn ci_state() -> impl Strategy<Value = CiState> {
    prop_oneof![
        Just(CiState::Pending),
        Just(CiState::Success),
        Just(CiState::Failure),
        Just(CiState::Error)
    ]
}

fn health() -> impl Strategy<Value = HealthState> {
    prop_oneof![
        4 => Just(HealthState::Healthy),
        1 => Just(HealthState::Unhealthy),
        1 => Just(HealthState::Progressing),
    ]
}

fn event() -> impl Strategy<Value = Event> {
    let sha = 0..SHAS.len();
    prop_oneof![
        3 => sha.clone().prop_map(Event::Want),
        4 => (sha.clone(), ci_state()).prop_map(|(i, s)| Event::Ci(i, s)),
        3 => (1_i64..400).prop_map(Event::Tick),
        5 => health().prop_map(Event::Follow),
        1 => health().prop_map(Event::Health),
        1 => Just(Event::BackendDown),
        2 => Just(Event::BackendUp),
        2 => (0_u8..16, 0_u8..16).prop_map(|(v, s)| Event::Upstream(v, s)),
        2 => sha.clone().prop_map(Event::Approve),
        1 => sha.clone().prop_map(Event::BreakGlass),
        1 => sha.clone().prop_map(Event::Clear),
        2 => (0_u8..6).prop_map(Event::Hook),
        1 => any::<bool>().prop_map(Event::Artifact),
        1 => sha.prop_map(Event::RollBack),
    ]
}

fn env_strategy() -> impl Strategy<Value = (EnvironmentSpec, bool)> {
    (
        0_u8..4,
        prop_oneof![
            Just(CiErrorPolicy::Wait),
            Just(CiErrorPolicy::Rollback),
            Just(CiErrorPolicy::Keep)
        ],
        prop_oneof![Just(TimeoutPolicy::Rollback), Just(TimeoutPolicy::Keep)],
        any::<bool>(),
        any::<bool>(),
        2_u32..12,
        any::<bool>(),
        prop_oneof![Just(GreenRerunPolicy::Lift), Just(GreenRerunPolicy::Keep)],
        (1_u32..4, 1_u32..4),
    )
        .prop_map(
            |(kind, on_error, on_timeout, hooks, suspect, limit, windows, on_green, thresholds)| {
                let mut env = match kind {
                    0 | 1 => environment(),
                    2 => validated_only(ApprovalPolicy::Manual),
                    _ => validated_only(ApprovalPolicy::Automatic),
                };
                if hooks {
                    env = with_smoke_test(with_backup_hook(env));
                }
                env.verification.on_ci_error = on_error;
                env.verification.on_timeout = on_timeout;
                env.verification.on_green_rerun = on_green;
                env.monitoring.mark_suspect = suspect;
                env.monitoring.interval = vigie::api::common::DurationSpec::from_secs(60);
                (
                    env.monitoring.failure_threshold,
                    env.monitoring.recovery_threshold,
                ) = thresholds;
                env.history_limit = limit;
                (env, windows)
            },
        )
}

fn set(mask: u8) -> Vec<char> {
    SHAS.iter()
        .enumerate()
        .filter(|(i, _)| mask & (1 << i) != 0)
        .map(|(_, c)| *c)
        .collect()
}

struct Run {
    world: World,
    last_target: Option<WorkloadTarget>,
    /// Every SHA ever validated upstream during the run.
    upstream_ever: BTreeSet<Sha>,
    /// Every SHA validated here during the run.
    validated_ever: BTreeSet<Sha>,
    /// The last health alert sent (HealthDown or HealthRecovered).
    last_alert: Option<EventKind>,
}

impl Run {
    fn apply(&mut self, event: &Event) {
        let w = &mut self.world;
        match event {
            Event::Want(i) => {
                w.want(SHAS[*i]);
                // Hook outcomes are reported for the SHA in flight only.
                w.obs.hooks.clear();
            }
            Event::Ci(i, state) => {
                w.ci(SHAS[*i], *state);
            }
            Event::Tick(s) => {
                w.advance(*s);
            }
            Event::Follow(h) => {
                if let Some(t) = &self.last_target {
                    let c = t.sha.as_str().chars().next().unwrap();
                    w.running(c, *h);
                }
            }
            Event::Health(h) => {
                w.obs.workload.health = *h;
            }
            Event::BackendDown => {
                w.obs.workload.backend = BackendState::Unreachable {
                    reason: "down".into(),
                }
            }
            Event::BackendUp => w.obs.workload.backend = BackendState::Reachable,
            Event::Upstream(v, s) => {
                let validated = set(*v);
                self.upstream_ever.extend(validated.iter().map(|c| sha(*c)));
                w.upstream(&validated, &set(*s));
            }
            Event::Approve(i) => {
                w.approve(SHAS[*i], "bob");
            }
            Event::BreakGlass(i) => {
                w.break_glass(SHAS[*i], "carol", "hotfix");
            }
            Event::Clear(i) => {
                w.clear(SHAS[*i], "alice");
            }
            Event::RollBack(i) => {
                w.roll_back_to(SHAS[*i], "dave");
                w.obs.hooks.clear();
            }
            Event::Artifact(missing) => {
                w.obs.artifact_pending = missing.then(|| "image not found".to_owned());
            }
            Event::Hook(o) => {
                let outcome = match o % 3 {
                    0 => HookOutcome::Running,
                    1 => HookOutcome::Succeeded {
                        output: Some("/backups/x.tgz".into()),
                    },
                    _ => HookOutcome::Failed {
                        reason: "exit status 1".into(),
                    },
                };
                w.hook(if *o < 3 { "backup" } else { "smoke" }, outcome);
            }
        }
    }

    fn check_alerts(&mut self, d: &Decision) -> Result<(), TestCaseError> {
        // Health alerts alternate: down, recovered, down… never twice the same in a row.
        for n in &d.notifications {
            if matches!(n.event, EventKind::HealthDown | EventKind::HealthRecovered) {
                prop_assert!(self.last_alert != Some(n.event), "{:?} repeated", n.event);
                if self.last_alert.is_none() {
                    prop_assert_eq!(n.event, EventKind::HealthDown, "recovered before down");
                }
                self.last_alert = Some(n.event);
            }
        }
        Ok(())
    }

    #[allow(
        clippy::too_many_lines,
        reason = "one invariant after the other, each a few lines"
    )]
    fn check(&mut self, d: &Decision) -> Result<(), TestCaseError> {
        self.check_alerts(d)?;
        let w = &self.world;
        let before = &w.status;
        let after = &d.status;
        // The rollback point is never lost.
        if before.validated_sha.is_some() {
            prop_assert!(after.validated_sha.is_some(), "validated SHA lost");
        }
        match after.phase {
            Phase::Deploying | Phase::Verifying => {
                let r = after.rollout.as_ref().expect("a rollout in flight");
                prop_assert_eq!(
                    &r.rollback_point,
                    &after.validated_sha,
                    "rollback point differs from the validated SHA"
                );
            }
            Phase::RollingBack => {
                let r = after.rollout.as_ref().expect("a rollout being rolled back");
                prop_assert!(r.rollback_point.is_some(), "rolling back to nothing");
                if let Some(t) = &d.workload {
                    prop_assert_eq!(Some(&t.sha), r.rollback_point.as_ref());
                }
            }
            Phase::Validated => prop_assert!(after.validated_sha.is_some()),
            _ => {}
        }
        // `validatedSha` only ever becomes a SHA whose verdict was success (or, in a
        // ValidatedOnly environment, that was validated upstream).
        if after.validated_sha != before.validated_sha {
            let new = after.validated_sha.as_ref().unwrap();
            let by_person = w
                .spec
                .rollback
                .as_ref()
                .is_some_and(|r| &r.to == new && self.validated_ever.contains(new));
            let ok = by_person
                || if w.env.strategy == Rollout::ValidatedOnly {
                    w.obs
                        .upstream
                        .as_ref()
                        .is_some_and(|u| u.validated.contains(new))
                } else {
                    w.obs
                        .ci
                        .get(new)
                        .is_some_and(|v| v.state == CiState::Success)
                };
            prop_assert!(ok, "{new:?} validated without a green verdict");
        }
        if let Some(t) = &d.workload {
            // Nothing unvalidated enters a ValidatedOnly environment.
            if w.env.strategy == Rollout::ValidatedOnly {
                prop_assert!(
                    self.upstream_ever.contains(&t.sha),
                    "{:?} entered without upstream validation",
                    t.sha
                );
            }
            // A quarantined SHA is never deployed automatically.
            prop_assert!(
                !after.quarantine.iter().any(|q| q.sha == t.sha),
                "quarantined {:?} targeted",
                t.sha
            );
            if let Some(keep) = &t.keep {
                prop_assert_eq!(Some(keep), after.validated_sha.as_ref());
            }
        }
        // A quarantine is lifted by a person's clearance, or by a green CI verdict for a
        // SHA that CI made roll back (policy Lift, outside ValidatedOnly) — never otherwise.
        for q in &before.quarantine {
            if after.quarantine.iter().any(|a| a.sha == q.sha) {
                continue;
            }
            let cleared = w
                .spec
                .clear_quarantine
                .iter()
                .any(|c| c.sha == q.sha && c.at > q.at);
            let green = w
                .obs
                .ci
                .get(&q.sha)
                .is_some_and(|v| v.state == CiState::Success);
            let ci_lift = q.cause.is_ci()
                && green
                && w.env.verification.on_green_rerun == GreenRerunPolicy::Lift
                && w.env.strategy != Rollout::ValidatedOnly;
            prop_assert!(
                cleared || ci_lift,
                "quarantine of {:?} ({:?}) lifted without a clearance or a green re-run",
                q.sha,
                q.cause
            );
        }
        self.validated_ever.extend(after.validated_sha.clone());
        // History stays bounded.
        prop_assert!(after.history.len() <= w.env.history_limit as usize);
        // Deciding again on the same inputs changes nothing and notifies nothing.
        let mut again = w.clone();
        again.status = after.clone();
        let d2 = again.peek();
        prop_assert_eq!(&d2.status, after, "not a fixpoint");
        prop_assert!(
            d2.notifications.is_empty(),
            "second decision notified {:?}",
            d2.notifications
        );
        prop_assert_eq!(&d2.workload, &d.workload);
        Ok(())
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, max_shrink_iters: 10_000, ..ProptestConfig::default() })]

    #[test]
    fn lifecycle_invariants_hold((env, windows) in env_strategy(), events in prop::collection::vec(event(), 1..60)) {
        let mut world = World::new(env);
        if windows {
            world.windows = Some(weekend_freeze());
            // Thursday evening: the freeze starts within a few hours of ticks.
            world.at("2026-11-26T20:00:00Z");
        }
        let mut run = Run { world, last_target: None, upstream_ever: BTreeSet::new(), validated_ever: BTreeSet::new(), last_alert: None };
        for event in &events {
            run.apply(event);
            let d = run.world.peek();
            run.check(&d)?;
            if d.workload.is_some() {
                run.last_target.clone_from(&d.workload);
            }
            run.world.status = d.status;
        }
    }
}
