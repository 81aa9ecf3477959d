//! A small world for driving `decide` in tests: specs, observations and a clock.

#![allow(
    dead_code,
    reason = "each test file uses a different part of the helpers"
)]

use std::collections::{BTreeMap, BTreeSet};

use jiff::{SignedDuration, Timestamp};
use vigie::{
    api::{
        Sha,
        environment::{
            ApprovalPolicy, Backend, DeployWindows, DockerBackend, EnvironmentSpec, Hook, Hooks,
            Monitoring, Promotion, Strategy, Verification, WeeklyRange,
        },
        release::{
            ApprovalGrant, BreakGlass, CiState, HealthState, Overrides, QuarantineClearance,
            ReleaseSpec, ReleaseStatus,
        },
    },
    lifecycle::{
        BackendState, CiVerdict, Decision, Desired, HookOutcome, Input, Observations, Upstream,
        Windows, WorkloadObservation, decide,
    },
};

/// A SHA made of one repeated hex digit: `sha('a')` is `aaaa…a`.
pub fn sha(c: char) -> Sha {
    c.to_string().repeat(40).parse().unwrap()
}

pub fn environment() -> EnvironmentSpec {
    EnvironmentSpec {
        backend: Backend::Docker(DockerBackend::default()),
        strategy: Strategy::DeployFirst,
        verification: Verification::default(),
        promotion: None,
        windows: None,
        hooks: Hooks::default(),
        notifications: Vec::new(),
        monitoring: Monitoring::default(),
        url: None,
        history_limit: 50,
        dagster: None,
    }
}

pub fn validated_only(approval: ApprovalPolicy) -> EnvironmentSpec {
    EnvironmentSpec {
        strategy: Strategy::ValidatedOnly,
        promotion: Some(Promotion {
            from: "preprod".into(),
            approval,
        }),
        ..environment()
    }
}

pub fn with_backup_hook(mut env: EnvironmentSpec) -> EnvironmentSpec {
    env.hooks.pre_deploy.push(Hook {
        name: "backup".into(),
        image: "backup:1".into(),
        command: vec![],
        env: vec![],
        mounts: vec![],
        timeout: "10m".parse().unwrap(),
        output: Some("/backups/{sha}.tgz".into()),
    });
    env
}

/// A post-deploy smoke test, `smoke`.
pub fn with_smoke_test(mut env: EnvironmentSpec) -> EnvironmentSpec {
    let mut smoke = with_backup_hook(environment()).hooks.pre_deploy.remove(0);
    smoke.name = "smoke".into();
    smoke.output = None;
    env.hooks.post_deploy.push(smoke);
    env
}

/// Deny Friday 16:00 to Monday 08:00 in Brussels.
pub fn weekend_freeze() -> Windows {
    Windows::new(&DeployWindows {
        time_zone: "Europe/Brussels".into(),
        allow: vec![],
        deny: vec![WeeklyRange {
            from: "Fri 16:00".into(),
            to: "Mon 08:00".into(),
        }],
    })
    .unwrap()
}

/// Everything `decide` reads, owned, with a simulated workload.
#[derive(Clone, Debug)]
pub struct World {
    pub env: EnvironmentSpec,
    pub windows: Option<Windows>,
    pub spec: ReleaseSpec,
    pub status: ReleaseStatus,
    pub obs: Observations,
}

impl World {
    /// A Tuesday at 10:00 UTC, nothing deployed, backend reachable.
    pub fn new(env: EnvironmentSpec) -> Self {
        Self {
            env,
            windows: None,
            spec: ReleaseSpec {
                code_location: "app".into(),
                environment: "preprod".into(),
                revision: None,
                overrides: Overrides::default(),
                deployment: None,
                approval: None,
                break_glass: None,
                clear_quarantine: vec![],
                rollback: None,
            },
            status: ReleaseStatus::default(),
            obs: Observations {
                now: "2026-11-24T10:00:00Z".parse().unwrap(),
                desired: Desired::None,
                workload: WorkloadObservation {
                    backend: BackendState::Reachable,
                    sha: None,
                    health: HealthState::Unknown,
                    reason: None,
                },
                ci: BTreeMap::new(),
                upstream: None,
                hooks: BTreeMap::new(),
                artifact_pending: None,
            },
        }
    }

    /// Decides once without recording.
    pub fn peek(&self) -> Decision {
        decide(&Input {
            spec: &self.spec,
            generation: Some(1),
            environment: &self.env,
            windows: self.windows.as_ref(),
            status: &self.status,
            observed: &self.obs,
        })
    }

    /// Decides once and records the status, as the reconciler does after applying.
    pub fn decide(&mut self) -> Decision {
        let d = self.peek();
        self.status = d.status.clone();
        d
    }

    pub fn want(&mut self, c: char) -> &mut Self {
        self.obs.desired = Desired::Sha(sha(c));
        self.spec.revision = Some(sha(c).to_string());
        self
    }

    pub fn running(&mut self, c: char, health: HealthState) -> &mut Self {
        self.obs.workload.sha = Some(sha(c));
        self.obs.workload.health = health;
        self.obs.workload.reason =
            (health == HealthState::Unhealthy).then(|| "GET /health returned 500".into());
        self
    }

    pub fn ci(&mut self, c: char, state: CiState) -> &mut Self {
        self.obs.ci.insert(
            sha(c),
            CiVerdict {
                state,
                url: Some(format!("https://ci.example/runs/{c}")),
                failed_checks: if state == CiState::Failure {
                    vec!["tests".into()]
                } else {
                    vec![]
                },
                description: (state == CiState::Error).then(|| "runner lost".into()),
            },
        );
        self
    }

    pub fn upstream(&mut self, validated: &[char], suspect: &[char]) -> &mut Self {
        self.obs.upstream = Some(Upstream {
            validated: validated.iter().map(|c| sha(*c)).collect::<BTreeSet<_>>(),
            suspect: suspect.iter().map(|c| sha(*c)).collect(),
        });
        self
    }

    pub fn approve(&mut self, c: char, by: &str) -> &mut Self {
        self.spec.approval = Some(ApprovalGrant {
            sha: sha(c),
            by: by.into(),
            reason: Some("release 1.2".into()),
            at: None,
        });
        self
    }

    pub fn break_glass(&mut self, c: char, by: &str, reason: &str) -> &mut Self {
        self.spec.break_glass = Some(BreakGlass {
            sha: sha(c),
            by: by.into(),
            reason: reason.into(),
        });
        self
    }

    pub fn clear(&mut self, c: char, by: &str) -> &mut Self {
        self.spec.clear_quarantine.push(QuarantineClearance {
            sha: sha(c),
            by: by.into(),
            reason: "fixed the flaky test".into(),
            at: self.obs.now,
        });
        self
    }

    /// A person asks to go back to `c` (what `vigie rollback` writes): the revision and
    /// the request name it.
    pub fn roll_back_to(&mut self, c: char, by: &str) -> &mut Self {
        self.want(c);
        self.spec.rollback = Some(vigie::api::release::RollbackRequest {
            to: sha(c),
            by: by.into(),
            reason: Some("checkout is broken".into()),
            at: self.obs.now,
        });
        self
    }

    pub fn hook(&mut self, name: &str, outcome: HookOutcome) -> &mut Self {
        self.obs.hooks.insert(name.into(), outcome);
        self
    }

    pub fn advance(&mut self, seconds: i64) -> &mut Self {
        self.obs.now += SignedDuration::from_secs(seconds);
        self
    }

    pub fn at(&mut self, t: &str) -> &mut Self {
        self.obs.now = t.parse::<Timestamp>().unwrap();
        self
    }

    /// The workload follows the last target, healthy: what a working backend does.
    pub fn follow(&mut self, d: &Decision) -> &mut Self {
        if let Some(t) = &d.workload {
            let c = t.sha.as_str().chars().next().unwrap();
            self.running(c, HealthState::Healthy);
        }
        self
    }

    /// Drives A to Validated: deployed, healthy, green.
    pub fn validated(env: EnvironmentSpec, c: char) -> Self {
        let mut w = Self::new(env);
        w.want(c).ci(c, CiState::Success);
        for hook in w.env.hooks.pre_deploy.clone() {
            w.hook(&hook.name, HookOutcome::Succeeded { output: None });
            w.decide();
        }
        let d = w.decide();
        w.follow(&d);
        w.decide();
        // Hook outcomes are reported for the SHA in flight only.
        w.obs.hooks.clear();
        assert_eq!(
            w.status.phase,
            vigie::api::Phase::Validated,
            "setup: {c} validated"
        );
        w
    }
}
