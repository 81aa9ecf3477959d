//! Every transition of the release lifecycle, one test each, on the pure `decide`.

mod support;

use support::{
    World, environment, sha, validated_only, weekend_freeze, with_backup_hook, with_smoke_test,
};
use vigie::{
    api::{
        ConditionStatus, Phase,
        environment::{ApprovalPolicy, CiErrorPolicy, EventKind, GreenRerunPolicy, TimeoutPolicy},
        release::{CiState, HealthState, HistoryEvent, MonitorState, QuarantineCause},
    },
    lifecycle::{BackendState, Decision, HookOutcome, PROGRESSING, READY, WorkloadTarget, reason},
};

fn events(d: &Decision) -> Vec<EventKind> {
    d.notifications.iter().map(|n| n.event).collect()
}

fn history(w: &World) -> Vec<(HistoryEvent, String)> {
    w.status
        .history
        .iter()
        .map(|h| (h.event, h.sha.short().to_owned()))
        .collect()
}

#[allow(
    clippy::unnecessary_wraps,
    reason = "compared with `Decision::workload`, an Option"
)]
fn target(c: char, keep: Option<char>) -> Option<WorkloadTarget> {
    Some(WorkloadTarget {
        sha: sha(c),
        keep: keep.map(sha),
    })
}

fn condition<'a>(w: &'a World, type_: &str) -> &'a vigie::api::Condition {
    w.status
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .unwrap()
}

#[test]
fn nothing_to_do_without_a_revision() {
    let mut w = World::new(environment());
    let d = w.decide();
    assert_eq!(w.status.phase, Phase::Pending);
    assert_eq!(d.workload, None);
    assert!(d.notifications.is_empty());
    assert_eq!(condition(&w, PROGRESSING).reason, reason::NO_REVISION);
}

#[test]
fn a_first_deploy_starts_with_no_rollback_point() {
    let mut w = World::new(environment());
    let d = w.want('a').decide();
    assert_eq!(w.status.phase, Phase::Deploying);
    assert_eq!(d.workload, target('a', None));
    assert_eq!(events(&d), vec![EventKind::DeployStarted]);
    let rollout = w.status.rollout.as_ref().unwrap();
    assert_eq!(rollout.rollback_point, None);
    assert_eq!(
        history(&w),
        vec![(HistoryEvent::Deployed, "aaaaaaa".into())]
    );
}

#[test]
fn the_rollback_point_is_recorded_before_the_deploy() {
    let mut w = World::validated(environment(), 'a');
    let d = w.want('b').decide();
    assert_eq!(w.status.phase, Phase::Deploying);
    assert_eq!(
        w.status.rollout.as_ref().unwrap().rollback_point,
        Some(sha('a'))
    );
    // The previous SHA is kept ready for a fast rollback.
    assert_eq!(d.workload, target('b', Some('a')));
    let last = w.status.history.last().unwrap();
    assert_eq!(
        (last.event, last.previous.clone()),
        (HistoryEvent::Deployed, Some(sha('a')))
    );
    assert_eq!(w.status.validated_sha, Some(sha('a')));
}

#[test]
fn verification_waits_until_deployed_and_healthy() {
    let mut w = World::validated(environment(), 'a');
    // CI is already green for B, but B does not run yet: no validation.
    w.want('b').ci('b', CiState::Success);
    w.decide();
    assert_eq!(w.status.phase, Phase::Deploying);
    w.running('b', HealthState::Progressing);
    let d = w.decide();
    assert_eq!(w.status.phase, Phase::Deploying);
    assert!(d.notifications.is_empty());
    // Healthy: verification starts, and the verdict for this exact SHA validates it.
    w.running('b', HealthState::Healthy);
    let d = w.decide();
    assert_eq!(events(&d), vec![EventKind::Deployed, EventKind::Validated]);
    assert_eq!(w.status.phase, Phase::Validated);
    assert_eq!(w.status.validated_sha, Some(sha('b')));
    assert_eq!(d.workload, target('b', None));
}

#[test]
fn verifying_waits_for_ci_then_validates() {
    let mut w = World::validated(environment(), 'a');
    w.want('b').decide();
    let d = w.running('b', HealthState::Healthy).decide();
    assert_eq!(w.status.phase, Phase::Verifying);
    assert_eq!(events(&d), vec![EventKind::Deployed]);
    assert_eq!(d.workload, target('b', Some('a')));
    assert!(d.requeue_after.is_some_and(|r| r.as_secs() == 300));
    assert_eq!(condition(&w, "Verified").status, ConditionStatus::Unknown);
    // A verdict for another SHA changes nothing.
    w.ci('c', CiState::Failure);
    let d = w.advance(60).decide();
    assert_eq!(w.status.phase, Phase::Verifying);
    assert!(d.notifications.is_empty());
    w.ci('b', CiState::Success);
    let d = w.advance(60).decide();
    assert_eq!(w.status.phase, Phase::Validated);
    assert_eq!(events(&d), vec![EventKind::Validated]);
    assert_eq!(condition(&w, READY).status, ConditionStatus::True);
    assert_eq!(
        condition(&w, "Verified").message,
        "bbbbbbb is validated (https://ci.example/runs/b)"
    );
}

#[test]
fn red_ci_rolls_back_and_quarantines() {
    let mut w = World::validated(environment(), 'a');
    w.want('b').decide();
    w.running('b', HealthState::Healthy).decide();
    let d = w.ci('b', CiState::Failure).decide();
    assert_eq!(w.status.phase, Phase::RollingBack);
    assert_eq!(d.workload, target('a', None));
    assert_eq!(events(&d), vec![EventKind::VerificationFailed]);
    let n = &d.notifications[0];
    assert_eq!(n.url.as_deref(), Some("https://ci.example/runs/b"));
    assert_eq!(n.reason.as_deref(), Some("CI failed: tests"));
    assert_eq!(w.status.quarantine[0].sha, sha('b'));
    let entry = w.status.history.last().unwrap();
    assert_eq!(
        (entry.event, &entry.previous),
        (HistoryEvent::RolledBack, &Some(sha('a')))
    );
    assert_eq!(entry.url.as_deref(), Some("https://ci.example/runs/b"));
    // A serves again: RolledBack.
    let d = w.running('a', HealthState::Healthy).decide();
    assert_eq!(w.status.phase, Phase::RolledBack);
    assert_eq!(events(&d), vec![EventKind::RolledBack]);
    assert_eq!(w.status.ci.as_ref().unwrap().state, CiState::Failure);
}

#[test]
fn red_ci_during_deploying_rolls_back_at_once() {
    let mut w = World::validated(environment(), 'a');
    w.want('b').decide();
    w.running('b', HealthState::Progressing)
        .ci('b', CiState::Failure);
    let d = w.decide();
    assert_eq!(w.status.phase, Phase::RollingBack);
    assert_eq!(d.workload, target('a', None));
}

#[test]
fn a_quarantined_sha_is_not_redeployed() {
    let mut w = World::validated(environment(), 'a');
    w.want('b').decide();
    w.running('b', HealthState::Healthy).decide();
    w.ci('b', CiState::Failure).decide();
    w.running('a', HealthState::Healthy).decide();
    // A resync, a GitOps re-apply, a tracker: the desired SHA is still B.
    for _ in 0..3 {
        let d = w.advance(600).decide();
        assert_eq!(w.status.phase, Phase::RolledBack);
        assert_eq!(d.workload, target('a', None));
        assert!(d.notifications.is_empty());
    }
    assert_eq!(condition(&w, PROGRESSING).reason, reason::QUARANTINED);
    // A newer revision goes ahead, with A as its rollback point.
    let d = w.want('c').decide();
    assert_eq!(w.status.phase, Phase::Deploying);
    assert_eq!(d.workload, target('c', Some('a')));
    // Going back to B later still does not redeploy it.
    w.running('c', HealthState::Healthy)
        .ci('c', CiState::Success)
        .decide();
    let d = w.want('b').decide();
    assert_eq!(d.workload, target('c', None));
    assert_eq!(w.status.phase, Phase::Validated);
}

#[test]
fn a_clearance_lifts_the_quarantine_on_the_record() {
    let mut w = World::validated(environment(), 'a');
    w.want('b').decide();
    w.running('b', HealthState::Healthy).decide();
    w.ci('b', CiState::Failure).decide();
    w.running('a', HealthState::Healthy).decide();
    w.obs.ci.remove(&sha('b'));
    w.advance(60).clear('b', "alice");
    let d = w.decide();
    assert!(w.status.quarantine.is_empty());
    assert!(history(&w).contains(&(HistoryEvent::QuarantineCleared, "bbbbbbb".into())));
    let cleared = w
        .status
        .history
        .iter()
        .find(|h| h.event == HistoryEvent::QuarantineCleared)
        .unwrap();
    assert_eq!(cleared.by.as_deref(), Some("alice"));
    assert_eq!(w.status.phase, Phase::Deploying);
    assert_eq!(d.workload, target('b', Some('a')));
    // The same clearance does not lift a later quarantine.
    w.running('b', HealthState::Healthy).decide();
    w.advance(60).ci('b', CiState::Failure).decide();
    assert_eq!(w.status.quarantine.len(), 1);
    w.running('a', HealthState::Healthy).decide();
    assert_eq!(w.status.phase, Phase::RolledBack);
}

#[test]
fn a_newer_revision_supersedes_the_one_being_verified() {
    let mut w = World::validated(environment(), 'a');
    w.want('b').decide();
    w.running('b', HealthState::Healthy).decide();
    assert_eq!(w.status.phase, Phase::Verifying);
    let d = w.want('c').decide();
    assert_eq!(w.status.phase, Phase::Deploying);
    // The rollback point stays A: B was never validated.
    assert_eq!(
        w.status.rollout.as_ref().unwrap().rollback_point,
        Some(sha('a'))
    );
    assert_eq!(d.workload, target('c', Some('a')));
    let tail: Vec<_> = history(&w).into_iter().rev().take(2).collect();
    assert_eq!(
        tail,
        vec![
            (HistoryEvent::Deployed, "ccccccc".into()),
            (HistoryEvent::Superseded, "bbbbbbb".into())
        ]
    );
    // A late red verdict for the superseded B changes nothing.
    let d = w.ci('b', CiState::Failure).decide();
    assert_eq!(w.status.phase, Phase::Deploying);
    assert!(d.notifications.is_empty());
    assert!(w.status.quarantine.is_empty());
}

#[test]
fn a_first_deploy_that_fails_keeps_what_runs_and_invents_nothing() {
    let mut w = World::new(environment());
    w.want('b').decide();
    w.running('b', HealthState::Healthy).decide();
    let d = w.ci('b', CiState::Failure).decide();
    assert_eq!(w.status.phase, Phase::Failed);
    assert_eq!(d.workload, None, "no rollback target is invented");
    assert_eq!(events(&d), vec![EventKind::Failed]);
    assert!(
        d.notifications[0]
            .reason
            .as_deref()
            .unwrap()
            .contains("no validated SHA to roll back to")
    );
    assert_eq!(w.status.quarantine[0].sha, sha('b'));
    assert_eq!(w.status.validated_sha, None);
    assert_eq!(condition(&w, "Degraded").status, ConditionStatus::True);
    // Stays failed (no second deploy) until a newer revision.
    let d = w.advance(60).decide();
    assert_eq!((w.status.phase, d.workload.clone()), (Phase::Failed, None));
    let d = w.want('c').decide();
    assert_eq!(w.status.phase, Phase::Deploying);
    assert_eq!(d.workload, target('c', None));
}

#[test]
fn ci_error_policies() {
    for (policy, phase, workload) in [
        (
            CiErrorPolicy::Wait,
            Phase::Verifying,
            target('b', Some('a')),
        ),
        (
            CiErrorPolicy::Rollback,
            Phase::RollingBack,
            target('a', None),
        ),
        (CiErrorPolicy::Keep, Phase::Failed, None),
    ] {
        let mut env = environment();
        env.verification.on_ci_error = policy;
        let mut w = World::validated(env, 'a');
        w.want('b').decide();
        w.running('b', HealthState::Healthy).decide();
        let d = w.ci('b', CiState::Error).advance(30).decide();
        assert_eq!(w.status.phase, phase, "{policy:?}");
        assert_eq!(d.workload, workload, "{policy:?}");
    }
}

#[test]
fn ci_error_with_wait_ends_at_the_timeout_and_a_rerun_can_still_validate() {
    let mut w = World::validated(environment(), 'a');
    w.want('b').decide();
    w.running('b', HealthState::Healthy).decide();
    w.ci('b', CiState::Error).advance(120).decide();
    assert_eq!(w.status.phase, Phase::Verifying);
    w.ci('b', CiState::Success).advance(60).decide();
    assert_eq!(w.status.phase, Phase::Validated);

    let mut w = World::validated(environment(), 'a');
    w.want('b').decide();
    w.running('b', HealthState::Healthy).decide();
    let d = w.ci('b', CiState::Error).advance(300).decide();
    assert_eq!(w.status.phase, Phase::RollingBack);
    assert!(
        d.notifications[0]
            .reason
            .as_deref()
            .unwrap()
            .contains("no CI verdict within 5m (last: CI error: runner lost)")
    );
}

#[test]
fn verification_timeout_policies() {
    let mut w = World::validated(environment(), 'a');
    w.want('b').decide();
    w.running('b', HealthState::Healthy).decide();
    w.advance(299).decide();
    assert_eq!(w.status.phase, Phase::Verifying);
    let d = w.advance(1).decide();
    assert_eq!(w.status.phase, Phase::RollingBack);
    assert_eq!(d.workload, target('a', None));

    let mut env = environment();
    env.verification.on_timeout = TimeoutPolicy::Keep;
    let mut w = World::validated(env, 'a');
    w.want('b').decide();
    w.running('b', HealthState::Healthy).decide();
    let d = w.advance(300).decide();
    assert_eq!(w.status.phase, Phase::Failed);
    assert_eq!(d.workload, None, "Keep leaves B running");
    assert_eq!(
        w.status.rollout.as_ref().unwrap().rollback_point,
        Some(sha('a')),
        "the rollback point is kept"
    );
    // A late verdict is still taken: green validates B.
    let d = w.ci('b', CiState::Success).decide();
    assert_eq!(w.status.phase, Phase::Validated);
    assert_eq!(events(&d), vec![EventKind::Validated]);
}

#[test]
fn unhealthy_new_sha_rolls_back_in_both_phases() {
    let mut w = World::validated(environment(), 'a');
    w.want('b').decide();
    let d = w.running('b', HealthState::Unhealthy).decide();
    assert_eq!(w.status.phase, Phase::RollingBack);
    assert_eq!(d.workload, target('a', None));
    assert!(
        d.notifications[0]
            .reason
            .as_deref()
            .unwrap()
            .contains("GET /health returned 500")
    );

    let mut w = World::validated(environment(), 'a');
    w.want('b').decide();
    w.running('b', HealthState::Healthy).decide();
    w.running('b', HealthState::Unhealthy).decide();
    assert_eq!(w.status.phase, Phase::RollingBack);
}

#[test]
fn a_sha_never_healthy_rolls_back_after_the_health_timeout() {
    let mut w = World::validated(environment(), 'a');
    w.want('b').decide();
    w.running('b', HealthState::Progressing)
        .advance(299)
        .decide();
    assert_eq!(w.status.phase, Phase::Deploying);
    let d = w.advance(1).decide();
    assert_eq!(w.status.phase, Phase::RollingBack);
    assert_eq!(
        d.notifications[0].reason.as_deref(),
        Some("not healthy within 5m")
    );
}

#[test]
fn validated_only_refuses_shas_not_validated_upstream() {
    let mut w = World::validated_upstream('a');
    let d = w.want('b').upstream(&['a'], &[]).decide();
    assert_eq!(w.status.phase, Phase::Pending);
    assert_eq!(d.workload, target('a', None));
    assert_eq!(
        condition(&w, PROGRESSING).reason,
        reason::NOT_VALIDATED_UPSTREAM
    );
    // Suspect upstream is refused too.
    w.upstream(&['a', 'b'], &['b']).decide();
    assert_eq!(condition(&w, PROGRESSING).reason, reason::SUSPECT_UPSTREAM);
    assert_eq!(w.status.phase, Phase::Pending);
    // No view of upstream at all.
    w.obs.upstream = None;
    w.decide();
    assert_eq!(condition(&w, PROGRESSING).reason, reason::NO_UPSTREAM);
}

#[test]
fn manual_approval_must_name_the_exact_sha() {
    let mut w = World::validated_upstream('a');
    w.want('b').upstream(&['a', 'b'], &[]);
    let d = w.decide();
    assert_eq!(w.status.phase, Phase::AwaitingApproval);
    assert_eq!(events(&d), vec![EventKind::AwaitingApproval]);
    assert_eq!(d.workload, target('a', None));
    // Asked once, not on every resync.
    assert!(w.advance(60).decide().notifications.is_empty());
    // An approval for another SHA does not count; one for a SHA not validated upstream
    // is not even recorded: the refusal is what the status says.
    let d = w.approve('c', "bob").decide();
    assert_eq!(w.status.phase, Phase::AwaitingApproval);
    assert!(events(&d).is_empty());
    assert_ne!(w.status.approved.as_ref().map(|a| &a.sha), Some(&sha('c')));
    assert!(!history(&w).contains(&(HistoryEvent::Approved, sha('c').short().to_owned())));
    let d = w.approve('b', "bob").decide();
    assert_eq!(w.status.phase, Phase::Deploying);
    assert_eq!(
        events(&d),
        vec![EventKind::Approved, EventKind::DeployStarted]
    );
    let approved = w
        .status
        .history
        .iter()
        .rev()
        .find(|h| h.event == HistoryEvent::Approved)
        .unwrap();
    assert_eq!(
        (approved.sha.clone(), approved.by.as_deref()),
        (sha('b'), Some("bob"))
    );
    // The same person approving again (with a break-glass, say) is not a new approval.
    w.spec.approval.as_mut().unwrap().reason = Some("and break the glass".into());
    let d = w.decide();
    assert!(!events(&d).contains(&EventKind::Approved));
    // Validated upstream: healthy is enough, no second CI watch.
    let d = w.running('b', HealthState::Healthy).decide();
    assert_eq!(w.status.phase, Phase::Validated);
    assert_eq!(events(&d), vec![EventKind::Deployed, EventKind::Validated]);
}

#[test]
fn automatic_promotion_needs_no_approval() {
    let mut w = World::new(validated_only(ApprovalPolicy::Automatic));
    let d = w.want('b').upstream(&['b'], &[]).decide();
    assert_eq!(w.status.phase, Phase::Deploying);
    assert_eq!(d.workload, target('b', None));
}

#[test]
fn outside_the_window_a_change_waits_and_says_until_when() {
    let mut w = World::validated(environment(), 'a');
    w.windows = Some(weekend_freeze());
    // Friday 2026-11-27 17:00 Brussels = 16:00Z.
    let d = w.at("2026-11-27T16:00:00Z").want('b').decide();
    assert_eq!(w.status.phase, Phase::Pending);
    assert_eq!(d.workload, target('a', None));
    let c = condition(&w, PROGRESSING);
    assert_eq!(c.reason, reason::OUTSIDE_DEPLOY_WINDOW);
    assert!(
        c.message.contains("until 2026-11-30T07:00:00Z"),
        "{}",
        c.message
    );
    // Woken at the health monitor's next check (hourly), which comes before the
    // window opens; with the monitor far off, at the opening.
    assert_eq!(d.requeue_after.map(|r| r.as_secs()), Some(3600));
    w.env.monitoring.interval = "168h".parse().unwrap();
    let d = w.decide();
    assert_eq!(
        d.requeue_after.map(|r| r.as_secs()),
        Some(2 * 86_400 + 15 * 3600)
    );
    // Monday 08:00 Brussels: it goes.
    w.at("2026-11-30T07:00:00Z").decide();
    assert_eq!(w.status.phase, Phase::Deploying);
}

#[test]
fn break_glass_deploys_outside_the_window_on_the_record() {
    let mut w = World::validated(environment(), 'a');
    w.windows = Some(weekend_freeze());
    let d = w
        .at("2026-11-28T10:00:00Z")
        .want('b')
        .break_glass('b', "carol", "hotfix for the login outage")
        .decide();
    assert_eq!(w.status.phase, Phase::Deploying);
    assert_eq!(
        events(&d),
        vec![EventKind::BreakGlass, EventKind::DeployStarted]
    );
    let entry = w
        .status
        .history
        .iter()
        .find(|h| h.event == HistoryEvent::BreakGlass)
        .unwrap();
    assert_eq!(entry.by.as_deref(), Some("carol"));
    assert_eq!(entry.reason.as_deref(), Some("hotfix for the login outage"));
    // A break-glass for another SHA does not open the window.
    let mut w = World::validated(environment(), 'a');
    w.windows = Some(weekend_freeze());
    w.at("2026-11-28T10:00:00Z")
        .want('b')
        .break_glass('c', "carol", "hotfix")
        .decide();
    assert_eq!(w.status.phase, Phase::Pending);
}

#[test]
fn windows_never_block_a_rollback() {
    let mut w = World::validated(environment(), 'a');
    w.windows = Some(weekend_freeze());
    w.at("2026-11-27T14:00:00Z").want('b').decide();
    w.running('b', HealthState::Healthy).decide();
    // The freeze starts; CI turns red inside it.
    let d = w
        .at("2026-11-27T15:30:00Z")
        .ci('b', CiState::Failure)
        .decide();
    assert_eq!(w.status.phase, Phase::RollingBack);
    assert_eq!(d.workload, target('a', None));
    w.running('a', HealthState::Healthy).decide();
    assert_eq!(w.status.phase, Phase::RolledBack);
}

#[test]
fn a_red_rerun_makes_the_validated_sha_suspect_once() {
    let mut w = World::validated(environment(), 'a');
    let d = w.ci('a', CiState::Failure).decide();
    assert_eq!(events(&d), vec![EventKind::Suspect]);
    assert_eq!(w.status.suspect[0].sha, sha('a'));
    assert_eq!(
        w.status.validated_sha,
        Some(sha('a')),
        "still the rollback target"
    );
    assert_eq!(condition(&w, "Verified").reason, reason::SUSPECT);
    assert!(w.advance(60).decide().notifications.is_empty());
}

fn monitored(failure_threshold: u32, recovery_threshold: u32, mark_suspect: bool) -> World {
    let mut env = environment();
    env.monitoring.failure_threshold = failure_threshold;
    env.monitoring.recovery_threshold = recovery_threshold;
    env.monitoring.mark_suspect = mark_suspect;
    World::validated(env, 'a')
}

/// One monitoring round an hour later with the workload in `health`.
fn check(w: &mut World, health: HealthState) -> Vec<EventKind> {
    let d = w.advance(3600).running('a', health).decide();
    events(&d)
}

#[test]
fn health_is_checked_each_interval_and_alerts_once_down_and_once_recovered() {
    let mut w = monitored(2, 2, false);
    let mon = w
        .status
        .monitor
        .clone()
        .expect("a first check at validation");
    assert_eq!(mon.state, MonitorState::Healthy);
    // Between two checks nothing is counted, whatever is observed.
    let d = w.advance(60).running('a', HealthState::Unhealthy).decide();
    assert!(d.notifications.is_empty());
    assert_eq!(w.status.monitor.as_ref().unwrap().failures, 0);
    assert_eq!(d.requeue_after, Some(std::time::Duration::from_secs(3540)));
    // One failed check is not enough (threshold 2); the second alerts, once.
    assert!(check(&mut w, HealthState::Unhealthy).is_empty());
    assert_eq!(
        check(&mut w, HealthState::Unhealthy),
        vec![EventKind::HealthDown]
    );
    assert_eq!(
        w.status.monitor.as_ref().unwrap().state,
        MonitorState::Degraded
    );
    for _ in 0..5 {
        assert!(
            check(&mut w, HealthState::Unhealthy).is_empty(),
            "no repeat while down"
        );
    }
    // Flapping: a good check between bad ones neither recovers nor alerts (threshold 2).
    assert!(check(&mut w, HealthState::Healthy).is_empty());
    assert!(check(&mut w, HealthState::Unhealthy).is_empty());
    assert!(check(&mut w, HealthState::Healthy).is_empty());
    assert_eq!(
        check(&mut w, HealthState::Healthy),
        vec![EventKind::HealthRecovered]
    );
    assert!(check(&mut w, HealthState::Healthy).is_empty());
    let recorded: Vec<HistoryEvent> = w
        .status
        .history
        .iter()
        .map(|h| h.event)
        .filter(|e| matches!(e, HistoryEvent::HealthDown | HistoryEvent::HealthRecovered))
        .collect();
    assert_eq!(
        recorded,
        vec![HistoryEvent::HealthDown, HistoryEvent::HealthRecovered]
    );
    let down = w
        .status
        .history
        .iter()
        .find(|h| h.event == HistoryEvent::HealthDown)
        .unwrap();
    assert!(
        down.reason
            .as_deref()
            .unwrap()
            .contains("GET /health returned 500"),
        "{down:?}"
    );
    // Deciding again at the same instant is a fixpoint: no second check.
    assert!(w.decide().notifications.is_empty());
}

#[test]
fn the_full_health_check_runs_in_flight_and_once_per_monitoring_round() {
    use vigie::lifecycle::decide::health_check_due;
    let mut w = World::new(environment());
    assert!(
        health_check_due(&w.env, &w.status, w.obs.now),
        "nothing deployed yet"
    );
    w.want('b').decide();
    assert_eq!(w.status.phase, Phase::Deploying);
    assert!(health_check_due(&w.env, &w.status, w.obs.now), "in flight");
    let mut w = monitored(2, 2, false);
    let round = w.status.monitor.as_ref().unwrap().last_check.unwrap();
    let hour = w.env.monitoring.interval.get();
    // Between rounds the container state is enough; at the round, the HTTP check runs.
    assert!(!health_check_due(&w.env, &w.status, round));
    assert!(!health_check_due(
        &w.env,
        &w.status,
        round + hour - std::time::Duration::from_secs(1)
    ));
    assert!(health_check_due(&w.env, &w.status, round + hour));
    // The round that observation feeds is the one the monitor counts.
    w.at(&(round + hour).to_string())
        .running('a', HealthState::Unhealthy);
    w.decide();
    let mon = w.status.monitor.clone().unwrap();
    assert_eq!((mon.last_check, mon.failures), (Some(round + hour), 1));
    assert!(!health_check_due(&w.env, &w.status, round + hour));
}

#[test]
fn a_release_that_flaps_under_the_threshold_never_alerts() {
    let mut w = monitored(2, 1, false);
    for i in 0..20 {
        let health = if i % 2 == 0 {
            HealthState::Unhealthy
        } else {
            HealthState::Healthy
        };
        assert!(check(&mut w, health).is_empty(), "check {i}");
    }
    assert_eq!(
        w.status.monitor.as_ref().unwrap().state,
        MonitorState::Healthy
    );
}

#[test]
fn monitoring_pauses_while_a_deploy_is_in_flight() {
    let mut w = monitored(1, 1, false);
    w.advance(3600).want('b').decide();
    assert_eq!(w.status.phase, Phase::Deploying);
    // The old SHA is still what runs, unhealthy: the lifecycle judges the deploy, not the monitor.
    let d = w
        .advance(3600)
        .running('a', HealthState::Unhealthy)
        .decide();
    assert!(
        !events(&d).contains(&EventKind::HealthDown),
        "{:?}",
        events(&d)
    );
}

#[test]
fn monitoring_can_mark_the_running_sha_suspect() {
    let mut w = monitored(1, 1, true);
    assert_eq!(
        check(&mut w, HealthState::Unhealthy),
        vec![EventKind::HealthDown, EventKind::Suspect]
    );
    assert_eq!(w.status.suspect[0].sha, sha('a'));
    assert_eq!(condition(&w, "Degraded").reason, reason::UNHEALTHY);
    // Without markSuspect, going down is Degraded and alerted only.
    let mut w = monitored(1, 1, false);
    assert_eq!(
        check(&mut w, HealthState::Unhealthy),
        vec![EventKind::HealthDown]
    );
    assert!(w.status.suspect.is_empty());
}

#[test]
fn a_person_rolls_back_to_an_earlier_validated_sha_whatever_the_windows() {
    let mut w = World::validated(environment(), 'a');
    w.want('b').ci('b', CiState::Success).decide();
    w.running('b', HealthState::Healthy).decide();
    assert_eq!(w.status.validated_sha, Some(sha('b')));
    // A freeze is on and B misbehaves in a way CI did not see: a person goes back to A.
    w.windows = Some(weekend_freeze());
    w.at("2026-11-28T12:00:00Z");
    let d = w.roll_back_to('a', "alice").decide();
    assert_eq!(w.status.phase, Phase::RollingBack);
    assert_eq!(d.workload, target('a', None));
    assert_eq!(w.status.validated_sha, Some(sha('a')));
    let q = &w.status.quarantine[0];
    assert_eq!(
        (q.sha.clone(), q.cause),
        (sha('b'), QuarantineCause::Manual)
    );
    let entry = w.status.history.last().unwrap();
    assert_eq!(entry.event, HistoryEvent::RolledBack);
    assert_eq!(entry.by.as_deref(), Some("alice"));
    assert_eq!(entry.previous, Some(sha('a')));
    assert_eq!(
        entry.reason.as_deref(),
        Some("rolled back by alice: checkout is broken")
    );
    let d = w.running('a', HealthState::Healthy).decide();
    assert_eq!(events(&d), vec![EventKind::RolledBack]);
    assert_eq!(w.status.phase, Phase::Validated);
    // Carried out once: deciding again changes nothing, and B is not redeployed.
    let d = w.advance(60).decide();
    assert!(d.notifications.is_empty());
    assert_eq!(
        w.status
            .history
            .iter()
            .filter(|h| h.event == HistoryEvent::RolledBack)
            .count(),
        1
    );
    // B, rolled back by a person, cannot be promoted from here.
    assert!(
        !vigie::lifecycle::Upstream::of(&w.status)
            .validated
            .contains(&sha('b'))
    );
}

#[test]
fn a_rollback_to_the_sha_already_in_flight_lets_its_rollout_carry_on() {
    // A validated, then B, then A asked again: A is in flight, C runs validated.
    let mut w = World::validated(environment(), 'a');
    w.want('c').ci('c', CiState::Success).decide();
    w.running('c', HealthState::Healthy).decide();
    assert_eq!(w.status.validated_sha, Some(sha('c')));
    w.want('a').decide();
    assert_eq!(w.status.phase, Phase::Deploying);
    // A person "rolls back" to A, the SHA being deployed: nothing to roll back from.
    let d = w.advance(1).roll_back_to('a', "alice").decide();
    assert_eq!(w.status.phase, Phase::Deploying);
    assert_eq!(
        w.status.validated_sha,
        Some(sha('c')),
        "C stays the rollback point"
    );
    let r = w.status.rollout.clone().unwrap();
    assert_eq!((r.sha, r.rollback_point), (sha('a'), Some(sha('c'))));
    assert!(w.status.quarantine.is_empty());
    assert!(!events(&d).contains(&EventKind::RolledBack));
}

#[test]
fn a_rollback_to_a_sha_never_validated_here_is_refused_on_the_record() {
    let mut w = World::validated(environment(), 'a');
    // Refused on the record; the revision, which names C, is then a plain change.
    let d = w.roll_back_to('c', "bob").decide();
    assert_eq!(
        events(&d),
        vec![EventKind::Failed, EventKind::DeployStarted]
    );
    assert!(w.status.quarantine.is_empty());
    assert_eq!(w.status.validated_sha, Some(sha('a')));
    let entry = w
        .status
        .history
        .iter()
        .find(|h| h.event == HistoryEvent::Failed)
        .unwrap();
    assert_eq!(entry.by.as_deref(), Some("bob"));
    assert!(
        entry
            .reason
            .as_deref()
            .unwrap()
            .contains("was never validated here"),
        "{entry:?}"
    );
    assert!(vigie::lifecycle::rollback_target(&w.status, &sha('a')).is_ok());
    assert!(vigie::lifecycle::rollback_target(&w.status, &sha('c')).is_err());
}

#[test]
fn a_rollback_while_a_sha_is_kept_unvalidated_quarantines_it() {
    let mut env = environment();
    env.verification.on_timeout = TimeoutPolicy::Keep;
    let mut w = World::validated(env, 'a');
    w.want('b').decide();
    w.running('b', HealthState::Healthy).decide();
    w.advance(3600).decide();
    assert_eq!(w.status.phase, Phase::Failed);
    let d = w.roll_back_to('a', "alice").decide();
    assert_eq!(d.workload, target('a', None));
    assert_eq!(w.status.quarantine[0].sha, sha('b'));
    w.running('a', HealthState::Healthy).decide();
    assert_eq!(w.status.phase, Phase::Validated);
}

#[test]
fn a_green_rerun_after_a_ci_rollback_lifts_the_quarantine_and_the_sha_becomes_validated() {
    let mut w = World::validated(environment(), 'a');
    w.want('b').decide();
    w.running('b', HealthState::Healthy).decide();
    w.ci('b', CiState::Failure).decide();
    assert_eq!(w.status.quarantine[0].cause, QuarantineCause::CiFailed);
    w.running('a', HealthState::Healthy).decide();
    assert_eq!(w.status.phase, Phase::RolledBack);
    // The re-run passes: the quarantine goes, and B (still asked for) is deployed again.
    let d = w.ci('b', CiState::Success).decide();
    assert!(w.status.quarantine.is_empty());
    assert_eq!(w.status.phase, Phase::Deploying);
    assert_eq!(d.workload, target('b', Some('a')));
    let lifted = w
        .status
        .history
        .iter()
        .find(|h| h.event == HistoryEvent::CiPassed)
        .unwrap();
    assert!(
        lifted
            .reason
            .as_deref()
            .unwrap()
            .contains("(CI failed: tests); the quarantine is lifted"),
        "{lifted:?}"
    );
    // Healthy again with the green verdict: validated, and the rollback stays on the record.
    w.running('b', HealthState::Healthy).decide();
    assert_eq!(w.status.phase, Phase::Validated);
    assert_eq!(w.status.validated_sha, Some(sha('b')));
    assert_eq!(
        history(&w)[2..],
        vec![
            (HistoryEvent::Deployed, "bbbbbbb".into()),
            (HistoryEvent::RolledBack, "bbbbbbb".into()),
            (HistoryEvent::CiPassed, "bbbbbbb".into()),
            (HistoryEvent::Deployed, "bbbbbbb".into()),
            (HistoryEvent::Validated, "bbbbbbb".into()),
        ]
    );
}

#[test]
fn a_green_rerun_lifts_rollbacks_for_ci_errors_and_timeouts_too() {
    // CI error with policy Rollback.
    let mut env = environment();
    env.verification.on_ci_error = CiErrorPolicy::Rollback;
    let mut w = World::validated(env, 'a');
    w.want('b').decide();
    w.running('b', HealthState::Healthy).decide();
    w.ci('b', CiState::Error).decide();
    assert_eq!(w.status.quarantine[0].cause, QuarantineCause::CiError);
    w.running('a', HealthState::Healthy).decide();
    w.ci('b', CiState::Success).decide();
    assert!(w.status.quarantine.is_empty());
    assert_eq!(w.status.phase, Phase::Deploying);

    // No verdict within the verification timeout.
    let mut w = World::validated(environment(), 'a');
    w.want('b').decide();
    w.running('b', HealthState::Healthy).decide();
    w.advance(300).decide();
    assert_eq!(w.status.quarantine[0].cause, QuarantineCause::CiTimeout);
    w.running('a', HealthState::Healthy).decide();
    w.ci('b', CiState::Success).decide();
    assert!(w.status.quarantine.is_empty());
    assert_eq!(w.status.phase, Phase::Deploying);
}

#[test]
fn a_green_rerun_after_a_health_rollback_is_recorded_but_the_sha_stays_quarantined() {
    let mut w = World::validated(environment(), 'a');
    w.want('b').decide();
    w.running('b', HealthState::Unhealthy).decide();
    assert_eq!(w.status.quarantine[0].cause, QuarantineCause::Unhealthy);
    w.running('a', HealthState::Healthy).decide();
    let d = w.ci('b', CiState::Success).decide();
    assert_eq!(d.workload, target('a', None));
    assert_eq!(w.status.phase, Phase::RolledBack);
    assert!(w.status.quarantine[0].ci_passed_later);
    let last = w.status.history.last().unwrap();
    assert_eq!(last.event, HistoryEvent::CiPassed);
    assert!(
        last.reason
            .as_deref()
            .unwrap()
            .contains("rolled back for its health, not for CI"),
        "{last:?}"
    );
    let before = w.status.history.len();
    w.advance(60).decide();
    assert_eq!(w.status.history.len(), before, "recorded once");
}

#[test]
fn with_on_green_rerun_keep_a_ci_rollback_stays_quarantined() {
    let mut env = environment();
    env.verification.on_green_rerun = GreenRerunPolicy::Keep;
    let mut w = World::validated(env, 'a');
    w.want('b').decide();
    w.running('b', HealthState::Healthy).decide();
    w.ci('b', CiState::Failure).decide();
    w.running('a', HealthState::Healthy).decide();
    let d = w.ci('b', CiState::Success).decide();
    assert_eq!(d.workload, target('a', None));
    assert_eq!(w.status.phase, Phase::RolledBack);
    assert_eq!(w.status.quarantine.len(), 1);
    let tail: Vec<_> = history(&w).into_iter().rev().take(2).collect();
    assert_eq!(
        tail,
        vec![
            (HistoryEvent::CiPassed, "bbbbbbb".into()),
            (HistoryEvent::RolledBack, "bbbbbbb".into())
        ]
    );
    assert!(
        w.status
            .history
            .last()
            .unwrap()
            .reason
            .as_deref()
            .unwrap()
            .contains("onGreenRerun is Keep")
    );
}

#[test]
fn a_failed_sha_without_rollback_point_is_validated_by_a_green_rerun() {
    let mut w = World::new(environment());
    w.want('b').decide();
    w.running('b', HealthState::Healthy).decide();
    w.ci('b', CiState::Failure).decide();
    assert_eq!(w.status.phase, Phase::Failed);
    w.ci('b', CiState::Success).decide();
    assert!(w.status.quarantine.is_empty());
    assert_eq!(w.status.phase, Phase::Validated);
    assert_eq!(w.status.validated_sha, Some(sha('b')));
}

#[test]
fn an_unreachable_backend_freezes_the_lifecycle() {
    let mut w = World::validated(environment(), 'a');
    w.want('b').decide();
    w.running('b', HealthState::Healthy).decide();
    w.obs.workload.backend = BackendState::Unreachable {
        reason: "connection refused".into(),
    };
    let d = w.ci('b', CiState::Failure).advance(600).decide();
    assert_eq!(
        w.status.phase,
        Phase::Verifying,
        "no transition on unreliable observations"
    );
    assert_eq!(d.workload, None);
    assert_eq!(
        condition(&w, "Degraded").reason,
        reason::BACKEND_UNAVAILABLE
    );
    assert!(d.requeue_after.is_some());
    // Back: the red verdict is acted on.
    w.obs.workload.backend = BackendState::Reachable;
    let d = w.decide();
    assert_eq!(w.status.phase, Phase::RollingBack);
    assert_eq!(d.workload, target('a', None));
}

#[test]
fn pre_deploy_hooks_run_before_the_workload_moves() {
    let mut w = World::validated(with_backup_hook(environment()), 'a');
    let d = w.want('b').decide();
    assert_eq!(w.status.phase, Phase::Deploying);
    assert_eq!(
        d.workload, None,
        "what runs is left alone while the backup runs"
    );
    assert_eq!(d.hooks.len(), 1);
    assert_eq!(
        (
            d.hooks[0].name.as_str(),
            &d.hooks[0].sha,
            &d.hooks[0].previous
        ),
        ("backup", &sha('b'), &Some(sha('a')))
    );
    assert_eq!(condition(&w, PROGRESSING).reason, reason::RUNNING_HOOKS);
    let d = w.hook("backup", HookOutcome::Running).decide();
    assert_eq!(d.workload, None);
    let d = w
        .hook(
            "backup",
            HookOutcome::Succeeded {
                output: Some("/backups/b.tgz".into()),
            },
        )
        .decide();
    assert_eq!(d.workload, target('b', Some('a')));
    assert!(d.hooks.is_empty());
    let entry = w
        .status
        .history
        .iter()
        .rev()
        .find(|h| h.event == HistoryEvent::HookSucceeded)
        .unwrap();
    assert_eq!(entry.output.as_deref(), Some("/backups/b.tgz"));
}

#[test]
fn a_pre_deploy_hook_that_never_reports_stops_the_deploy_after_its_timeout() {
    // Its Job cannot be created (a quota, an admission webhook): no outcome ever comes.
    let mut w = World::validated(with_backup_hook(environment()), 'a');
    let d = w.want('b').decide();
    assert_eq!(d.requeue_after, Some(std::time::Duration::from_secs(5)));
    w.advance(600).decide();
    assert_eq!(w.status.phase, Phase::Deploying, "within the 10m timeout");
    let d = w.advance(61).decide();
    assert_eq!(w.status.phase, Phase::Failed);
    assert_eq!(d.workload, None, "what runs is kept");
    assert_eq!(events(&d), vec![EventKind::HookFailed]);
    assert!(
        w.status
            .rollout
            .as_ref()
            .and_then(|r| r.failure.clone())
            .is_some_and(|f| f.contains("no outcome within 660s")),
        "{:?}",
        w.status.rollout
    );
    assert_eq!(w.status.validated_sha, Some(sha('a')));
}

#[test]
fn a_failing_hook_stops_the_deploy_and_keeps_what_runs() {
    let mut w = World::validated(with_backup_hook(environment()), 'a');
    w.want('b').decide();
    let d = w
        .hook(
            "backup",
            HookOutcome::Failed {
                reason: "exit status 2".into(),
            },
        )
        .decide();
    assert_eq!(w.status.phase, Phase::Failed);
    assert_eq!(d.workload, None);
    assert_eq!(events(&d), vec![EventKind::HookFailed]);
    assert!(
        w.status.quarantine.is_empty(),
        "B never ran: nothing to quarantine"
    );
    assert_eq!(w.status.validated_sha, Some(sha('a')));
    assert!(w.advance(60).decide().notifications.is_empty());
}

#[test]
fn post_deploy_hooks_run_once_up_and_healthy_and_count_as_health() {
    use vigie::lifecycle::decide::pending_hooks;
    let mut w = World::validated(environment(), 'a');
    w.env = with_smoke_test(w.env.clone());
    let d = w.want('b').decide();
    assert_eq!(d.workload, target('b', Some('a')));
    assert!(d.hooks.is_empty(), "not before the new SHA runs");
    // Up and healthy: the smoke test starts; verification waits for it.
    let d = w.running('b', HealthState::Healthy).decide();
    assert_eq!(w.status.phase, Phase::Deploying);
    assert_eq!(d.hooks.len(), 1);
    assert_eq!(
        (d.hooks[0].name.as_str(), d.hooks[0].after_deploy),
        ("smoke", true)
    );
    assert_eq!(pending_hooks(&w.env, &w.status), d.hooks);
    assert_eq!(condition(&w, PROGRESSING).reason, reason::RUNNING_HOOKS);
    let d = w.hook("smoke", HookOutcome::Running).decide();
    assert!(d.notifications.is_empty());
    assert_eq!(w.status.phase, Phase::Deploying);
    // It passes: verification starts, the smoke test is on the record.
    let d = w
        .hook("smoke", HookOutcome::Succeeded { output: None })
        .decide();
    assert_eq!(w.status.phase, Phase::Verifying);
    assert_eq!(events(&d), vec![EventKind::Deployed]);
    assert!(pending_hooks(&w.env, &w.status).is_empty(), "run once");
    assert!(history(&w).contains(&(HistoryEvent::HookSucceeded, "bbbbbbb".into())));

    // Another SHA whose smoke test fails: unhealthy, rolled back and quarantined.
    let mut w = World::validated(environment(), 'a');
    w.env = with_smoke_test(w.env.clone());
    w.want('c').decide();
    w.running('c', HealthState::Healthy).decide();
    let d = w
        .hook(
            "smoke",
            HookOutcome::Failed {
                reason: "exit status 1: /checkout answered 502".into(),
            },
        )
        .decide();
    assert_eq!(w.status.phase, Phase::RollingBack);
    assert_eq!(d.workload, target('a', None));
    assert_eq!(
        events(&d),
        vec![EventKind::HookFailed, EventKind::VerificationFailed]
    );
    let q = &w.status.quarantine[0];
    assert_eq!(
        (q.sha.clone(), q.cause),
        (sha('c'), QuarantineCause::Unhealthy)
    );
    assert!(
        q.reason.contains("post-deploy hook smoke failed"),
        "{}",
        q.reason
    );

    // A smoke test that never reports (its container cannot be created) is asked
    // about every few seconds, then given up after its timeout and a minute.
    let mut w = World::validated(environment(), 'a');
    w.env = with_smoke_test(w.env.clone());
    w.want('d').decide();
    let d = w.running('d', HealthState::Healthy).decide();
    assert_eq!(d.requeue_after, Some(std::time::Duration::from_secs(5)));
    w.advance(600).decide();
    assert_eq!(w.status.phase, Phase::Deploying, "within the 10m timeout");
    w.advance(61).decide();
    assert_eq!(w.status.phase, Phase::RollingBack);
    assert!(
        w.status.quarantine[0]
            .reason
            .contains("no outcome within 660s"),
        "{}",
        w.status.quarantine[0].reason
    );
}

#[test]
fn resuming_after_a_crash_does_not_deploy_twice() {
    let mut w = World::validated(environment(), 'a');
    w.want('b').decide();
    let deployed = w
        .status
        .history
        .iter()
        .filter(|h| h.event == HistoryEvent::Deployed)
        .count();
    // The controller died after the backend moved to B; a new process decides from the record.
    let mut restarted = w.clone();
    restarted.running('b', HealthState::Healthy);
    let d = restarted.decide();
    assert_eq!(restarted.status.phase, Phase::Verifying);
    assert_eq!(
        restarted
            .status
            .history
            .iter()
            .filter(|h| h.event == HistoryEvent::Deployed)
            .count(),
        deployed
    );
    assert_eq!(
        restarted.status.rollout.as_ref().unwrap().rollback_point,
        Some(sha('a'))
    );
    assert_eq!(events(&d), vec![EventKind::Deployed]);
    // It died before recording anything: the old record (Validated A) plus B running
    // resumes the deploy of B with A as rollback point.
    let mut w = World::validated(environment(), 'a');
    w.want('b').running('b', HealthState::Healthy);
    let d = w.decide();
    assert_eq!(w.status.phase, Phase::Verifying);
    assert_eq!(
        w.status.rollout.as_ref().unwrap().rollback_point,
        Some(sha('a'))
    );
    assert_eq!(d.workload, target('b', Some('a')));
}

#[test]
fn a_workload_that_lost_its_sha_is_redeployed() {
    let mut w = World::validated(environment(), 'a');
    w.want('b').decide();
    w.running('b', HealthState::Healthy).decide();
    w.running('a', HealthState::Healthy).decide();
    assert_eq!(w.status.phase, Phase::Deploying);
    // A validated workload that vanished is put back.
    let mut w = World::validated(environment(), 'a');
    w.obs.workload.sha = None;
    let d = w.decide();
    assert_eq!(d.workload, target('a', None));
    assert_eq!(w.status.phase, Phase::Validated);
    assert_eq!(condition(&w, READY).status, ConditionStatus::False);
}

#[test]
fn history_stays_bounded() {
    let mut env = environment();
    env.history_limit = 5;
    let mut w = World::validated(env, 'a');
    for c in ['b', 'c', 'd', 'e', 'f', '1', '2', '3'] {
        w.want(c).ci(c, CiState::Success);
        let d = w.decide();
        w.follow(&d).decide();
        assert!(w.status.history.len() <= 5);
    }
    assert_eq!(w.status.validated_sha, Some(sha('3')));
    assert_eq!(
        w.status.history.last().unwrap().event,
        HistoryEvent::Validated
    );
}

#[test]
fn conditions_keep_their_transition_time_while_unchanged() {
    let mut w = World::validated(environment(), 'a');
    let ready = condition(&w, READY).clone();
    w.advance(3600).decide();
    assert_eq!(
        condition(&w, READY).last_transition_time,
        ready.last_transition_time
    );
    w.want('b').decide();
    assert_ne!(
        condition(&w, READY).last_transition_time,
        ready.last_transition_time
    );
    assert_eq!(condition(&w, READY).status, ConditionStatus::False);
    assert_eq!(w.status.observed_generation, Some(1));
    assert_eq!(w.status.short.desired.as_deref(), Some("bbbbbbb"));
}

#[test]
fn deciding_twice_is_a_fixpoint() {
    let mut w = World::validated(environment(), 'a');
    w.want('b').decide();
    let again = w.peek();
    assert_eq!(again.status, w.status);
    assert!(again.notifications.is_empty());
}

trait Upstreamed {
    fn validated_upstream(c: char) -> World;
}

impl Upstreamed for World {
    /// A prod-like world (ValidatedOnly, manual approval) with `c` validated and running.
    fn validated_upstream(c: char) -> World {
        let mut w = World::new(validated_only(ApprovalPolicy::Manual));
        w.want(c).upstream(&[c], &[]).approve(c, "bob");
        let d = w.decide();
        w.follow(&d).decide();
        assert_eq!(w.status.phase, Phase::Validated);
        w.spec.approval = None;
        w
    }
}

#[test]
fn going_back_and_forth_between_validated_shas_redeploys_each() {
    let mut w = World::validated(environment(), 'a');
    for c in ['b', 'a', 'b', 'a'] {
        w.want(c).ci(c, CiState::Success);
        let d = w.decide();
        assert_eq!(
            d.workload,
            target(c, if c == 'a' { Some('b') } else { Some('a') }),
            "deploying {c}"
        );
        w.follow(&d).decide();
        assert_eq!(
            (w.status.phase, w.status.validated_sha.clone()),
            (Phase::Validated, Some(sha(c)))
        );
    }
}

#[test]
fn a_rollback_whose_target_never_gets_healthy_fails_loudly() {
    let mut w = World::validated(environment(), 'a');
    w.want('b').decide();
    w.running('b', HealthState::Healthy).decide();
    let d = w.ci('b', CiState::Failure).decide();
    assert_eq!(w.status.phase, Phase::RollingBack);
    assert_eq!(d.requeue_after.map(|r| r.as_secs()), Some(300));
    w.running('a', HealthState::Unhealthy).advance(299).decide();
    assert_eq!(w.status.phase, Phase::RollingBack);
    let d = w.advance(1).decide();
    assert_eq!(w.status.phase, Phase::Failed);
    assert_eq!(events(&d), vec![EventKind::Failed]);
    assert!(
        d.notifications[0]
            .reason
            .as_deref()
            .unwrap()
            .starts_with("rolling back to aaaaaaa did not bring it back healthy within 5m")
    );
    assert!(w.advance(60).decide().notifications.is_empty(), "said once");
}

#[test]
fn a_missing_artifact_waits_until_the_verification_timeout() {
    let mut env = environment();
    env.verification.timeout = "10m".parse().unwrap();
    let mut w = World::validated(env, 'a');
    w.want('b').decide();
    w.obs.artifact_pending = Some("failed to get image app:bbbb: not found".into());
    let d = w.advance(400).decide();
    assert_eq!(
        w.status.phase,
        Phase::Deploying,
        "waiting for the image is not a health failure"
    );
    assert_eq!(
        condition(&w, PROGRESSING).reason,
        reason::ARTIFACT_NOT_AVAILABLE
    );
    assert_eq!(d.workload, target('b', Some('a')), "the apply is retried");
    let d = w.advance(200).decide();
    assert_eq!(
        w.status.phase,
        Phase::RolledBack,
        "A never stopped: the rollback is immediate"
    );
    assert!(
        d.notifications[0]
            .reason
            .as_deref()
            .unwrap()
            .starts_with("its artifact was not available within 10m")
    );
    // Once the image appears, the deploy goes on as usual.
    let mut w = World::validated(environment(), 'a');
    w.want('b').decide();
    w.obs.artifact_pending = Some("not yet".into());
    w.advance(120).decide();
    w.obs.artifact_pending = None;
    w.running('b', HealthState::Healthy).decide();
    assert_eq!(w.status.phase, Phase::Verifying);
}
