//! The decisions people take in `vigie run`, whoever brings them: the control socket
//! (`vigie promote`, `vigie rollback`, the OS user from the socket's credentials) or
//! the web view (a logged-in person). The plan is made by the rules of
//! [`crate::promote`] from the manifests in force and the recorded statuses; the
//! decision goes to the state file (`requests` of the Release) before the answer, and
//! wakes the reconciler.

use std::{path::PathBuf, sync::Arc};

use jiff::Timestamp;

use crate::http::server::Shared;
use crate::store::Requests;
use crate::{
    api::{ReleaseStatus, release::QuarantineClearance},
    promote::{self, Ask, Done, Kind, Plan, PromoteError},
};

/// Where decisions are taken and recorded.
pub struct Desk {
    shared: Arc<Shared>,
    cache: PathBuf,
    /// Credentials of the repositories whose commits a plan lists (a GitHub App's
    /// installation tokens, kept between requests).
    auth: crate::ci::auth::Auth,
}

/// The Release of `location` in `environment`, its key, and the facts a plan needs.
struct Found {
    key: String,
    over: Option<String>,
    env: crate::api::environment::EnvironmentSpec,
    repo: (String, Option<crate::api::code_location::GitCredentials>),
    target: Option<ReleaseStatus>,
    upstream: Option<ReleaseStatus>,
}

impl Desk {
    /// A desk over the shared state; commits are fetched into `cache/code`.
    #[must_use]
    pub fn new(shared: Arc<Shared>, cache: PathBuf) -> Self {
        Self {
            shared,
            cache,
            auth: crate::ci::auth::Auth::default(),
        }
    }

    fn find(&self, ask: &Ask) -> Result<Found, PromoteError> {
        let manifests = self
            .shared
            .manifests
            .read()
            .ok()
            .and_then(|m| m.clone())
            .ok_or_else(|| PromoteError::NotReady("no valid manifests are loaded yet".into()))?;
        let ((ns, name), release) = manifests
            .releases
            .iter()
            .find(|(_, r)| {
                r.object.spec.code_location == ask.location
                    && r.object.spec.environment == ask.environment
            })
            .ok_or_else(|| {
                PromoteError::NotFound(format!(
                    "no Release of {} in {} in the manifests",
                    ask.location, ask.environment
                ))
            })?;
        let env = manifests
            .environments
            .get(&(ns.clone(), ask.environment.clone()))
            .map(|e| e.object.spec.clone())
            .ok_or_else(|| PromoteError::NotFound(format!("no Environment {}", ask.environment)))?;
        let location = manifests
            .code_locations
            .get(&(ns.clone(), ask.location.clone()))
            .ok_or_else(|| PromoteError::NotFound(format!("no CodeLocation {}", ask.location)))?;
        let repo = (
            location.object.spec.repo.url.clone(),
            location.object.spec.repo.credentials.clone(),
        );
        let key = crate::api::ReleaseKey::new(ns.clone(), name.clone()).to_string();
        let state = self.shared.state.lock().expect("state lock");
        let target = state.releases.get(&key).map(|r| r.status.clone());
        let upstream = env.promotion.as_ref().and_then(|p| {
            state
                .releases
                .values()
                .find(|r| r.environment == p.from && r.code_location == ask.location)
                .map(|r| r.status.clone())
        });
        Ok(Found {
            key,
            over: release.object.spec.revision.clone(),
            env,
            repo,
            target,
            upstream,
        })
    }

    async fn plan_found(
        &self,
        kind: Kind,
        ask: &Ask,
        found: &Found,
        commits: bool,
    ) -> Result<Plan, PromoteError> {
        let mut plan = promote::check(
            kind,
            ask,
            &found.env,
            found.upstream.as_ref(),
            found.target.as_ref(),
        )?;
        if commits {
            let (url, spec) = found.repo.clone();
            let creds = crate::gitops::repo::Credentials::resolve(
                spec.as_ref(),
                &self.auth,
                &crate::secrets::resolve,
            )
            .await;
            if let Err(e) =
                promote::fill_commits(&mut plan, kind, self.cache.join("code"), url, creds).await
            {
                plan.commits_error = Some(e.to_string());
            }
        }
        Ok(plan)
    }

    /// The plan a person reads before confirming, with the commits it brings or undoes.
    ///
    /// # Errors
    /// Why it is refused, or nothing can be decided yet.
    pub async fn plan(&self, kind: Kind, ask: &Ask) -> Result<Plan, PromoteError> {
        let found = self.find(ask)?;
        self.plan_found(kind, ask, &found, true).await
    }

    /// Records the confirmed decision of `by`, planned again first (the statuses may
    /// have moved while they read), then wakes the reconciler.
    ///
    /// # Errors
    /// Why it is refused, or the state file cannot be written (nothing changed then).
    pub async fn decide(&self, kind: Kind, ask: Ask, by: &str) -> Result<Done, PromoteError> {
        let found = self.find(&ask)?;
        let plan = self.plan_found(kind, &ask, &found, false).await?;
        let at = Timestamp::now();
        let mut requests = Requests {
            revision: plan.sha.clone(),
            at,
            over: found.over.clone(),
            approval: None,
            break_glass: None,
            rollback: None,
        };
        match kind {
            Kind::Promote => {
                let p = promote::promotion(&plan, by, ask.reason, ask.break_glass, at);
                requests.approval = Some(p.approval);
                requests.break_glass = p.break_glass;
            }
            Kind::Rollback => {
                requests.rollback = Some(promote::rollback(&plan, by, ask.reason, at));
            }
        }
        tracing::info!(
            release = %found.key, sha = %plan.sha, by, ?kind,
            break_glass = requests.break_glass.is_some(), "decision recorded"
        );
        let key = found.key.clone();
        self.shared
            .update(|next| next.requests.insert(key, requests))
            .await
            .map_err(|e| PromoteError::NotRecorded(e.to_string()))?;
        self.shared.wake.notify_one();
        Ok(Done {
            release: found.key,
            sha: plan.sha,
            by: by.to_owned(),
            at,
        })
    }

    /// Records a person's clearance of a quarantined SHA on the Release `key`
    /// (`namespace/name`), laid over its manifest from then on, and wakes the reconciler.
    ///
    /// # Errors
    /// The Release is unknown, the SHA is not quarantined there, or the state file
    /// cannot be written.
    pub async fn clear_quarantine(
        &self,
        key: &str,
        clearance: QuarantineClearance,
    ) -> Result<(), PromoteError> {
        {
            let state = self.shared.state.lock().expect("state lock");
            let record = state
                .releases
                .get(key)
                .ok_or_else(|| PromoteError::NotFound(format!("no Release {key}")))?;
            if !record
                .status
                .quarantine
                .iter()
                .any(|q| q.sha == clearance.sha)
            {
                return Err(PromoteError::NotFound(format!(
                    "{} is not quarantined in {key}",
                    clearance.sha.short()
                )));
            }
        }
        tracing::info!(release = %key, sha = %clearance.sha, by = %clearance.by, "quarantine clearance recorded");
        self.shared
            .update(|next| {
                let list = next.clearances.entry(key.to_owned()).or_default();
                list.push(clearance);
                let excess = list.len().saturating_sub(promote::CLEARANCES_KEPT);
                list.drain(..excess);
            })
            .await
            .map_err(|e| PromoteError::NotRecorded(e.to_string()))?;
        self.shared.wake.notify_one();
        Ok(())
    }
}
