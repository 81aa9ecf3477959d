//! `vigie promote --kubernetes` and `vigie rollback --kubernetes`: the plan is made
//! from the Releases' statuses in the API; the decision is a merge patch of the target
//! Release's spec (field manager `vigie-cli`) naming the person the API server says
//! the caller is (a `SelfSubjectReview`). A Release managed by GitOps is not patched
//! (the sync would put it back): the change to commit is printed instead.

use std::sync::Arc;

use jiff::Timestamp;
use k8s_openapi::api::authentication::v1::SelfSubjectReview;
use kube::{
    Api, Client, ResourceExt,
    api::{ListParams, Patch, PatchParams, PostParams},
};
use serde_json::json;

use super::{Ask, Done, Kind, Plan, PromoteError};
use crate::{
    api::{CodeLocation, Environment, Release},
    gitops::repo::Credentials,
    operator::{gitops::MANAGED_BY, secrets::SecretCache},
};

/// The field manager of the patches.
pub const FIELD_MANAGER: &str = "vigie-cli";

/// A namespace of the cluster in the current kubeconfig.
pub struct Cluster {
    client: Client,
    namespace: String,
}

/// The target Release and what a plan needs.
struct Found {
    release: Release,
    env: Environment,
    upstream: Option<Release>,
}

impl Cluster {
    /// Connects with the current kubeconfig (or the in-cluster account).
    ///
    /// # Errors
    /// Kubernetes cannot be reached.
    pub async fn connect(namespace: &str) -> Result<Self, PromoteError> {
        let client = Client::try_default()
            .await
            .map_err(|source| PromoteError::Kubernetes {
                what: "cannot reach Kubernetes".into(),
                source,
            })?;
        Ok(Self {
            client,
            namespace: namespace.to_owned(),
        })
    }

    /// Who the API server says the caller is.
    ///
    /// # Errors
    /// The review is refused.
    pub async fn who(&self) -> Result<String, PromoteError> {
        let api: Api<SelfSubjectReview> = Api::all(self.client.clone());
        let review = api
            .create(&PostParams::default(), &SelfSubjectReview::default())
            .await
            .map_err(|source| PromoteError::Kubernetes {
                what: "cannot ask the API server who you are".into(),
                source,
            })?;
        review
            .status
            .and_then(|s| s.user_info)
            .and_then(|u| u.username)
            .filter(|u| !u.is_empty())
            .ok_or(PromoteError::Anonymous)
    }

    async fn find(&self, ask: &Ask) -> Result<Found, PromoteError> {
        let ns = &self.namespace;
        let releases: Api<Release> = Api::namespaced(self.client.clone(), ns);
        let list = releases
            .list(&ListParams::default())
            .await
            .map_err(|source| PromoteError::Kubernetes {
                what: format!("cannot list Releases in {ns}"),
                source,
            })?
            .items;
        let release = list
            .iter()
            .find(|r| r.spec.code_location == ask.location && r.spec.environment == ask.environment)
            .cloned()
            .ok_or_else(|| {
                PromoteError::NotFound(format!(
                    "no Release of {} in {} in namespace {ns}",
                    ask.location, ask.environment
                ))
            })?;
        let env = Api::<Environment>::namespaced(self.client.clone(), ns)
            .get(&ask.environment)
            .await
            .map_err(|source| PromoteError::Kubernetes {
                what: format!("cannot read Environment {ns}/{}", ask.environment),
                source,
            })?;
        let upstream = env.spec.promotion.as_ref().and_then(|p| {
            list.iter()
                .find(|r| r.spec.code_location == ask.location && r.spec.environment == p.from)
                .cloned()
        });
        Ok(Found {
            release,
            env,
            upstream,
        })
    }

    /// The plan of a promotion or rollback, with the commits between the two SHAs
    /// (the CodeLocation's repository, fetched into `cache`).
    ///
    /// # Errors
    /// Why it is refused, or the API cannot be read.
    pub async fn plan(
        &self,
        kind: Kind,
        ask: &Ask,
        cache: &std::path::Path,
    ) -> Result<Plan, PromoteError> {
        let found = self.find(ask).await?;
        let mut plan = checked(kind, ask, &found)?;
        if let Err(e) = self.commits(&mut plan, kind, &ask.location, cache).await {
            plan.commits_error = Some(e.to_string());
        }
        Ok(plan)
    }

    async fn commits(
        &self,
        plan: &mut Plan,
        kind: Kind,
        location: &str,
        cache: &std::path::Path,
    ) -> Result<(), PromoteError> {
        let ns = &self.namespace;
        let l = Api::<CodeLocation>::namespaced(self.client.clone(), ns)
            .get(location)
            .await
            .map_err(|source| PromoteError::Kubernetes {
                what: format!("cannot read CodeLocation {ns}/{location}"),
                source,
            })?;
        let secrets = SecretCache::default();
        secrets.refresh(&self.client, &[Arc::new(l.clone())]).await;
        let creds = Credentials::resolve(
            l.spec.repo.credentials.as_ref(),
            &crate::ci::auth::Auth::default(),
            &|s| secrets.get(ns, s),
        )
        .await;
        super::fill_commits(plan, kind, cache.to_owned(), l.spec.repo.url.clone(), creds).await
    }

    /// Records the decision on the target Release, planned again first (the statuses
    /// may have moved while the person read).
    ///
    /// # Errors
    /// Why it is refused, the Release is managed by GitOps, or the patch failed.
    pub async fn apply(&self, kind: Kind, ask: &Ask) -> Result<Done, PromoteError> {
        let by = self.who().await?;
        let found = self.find(ask).await?;
        let plan = checked(kind, ask, &found)?;
        let at = Timestamp::now();
        let spec = match kind {
            Kind::Promote => {
                let p =
                    super::promotion(&plan, &by, ask.reason.clone(), ask.break_glass.clone(), at);
                let mut spec = json!({
                    "revision": p.revision.to_string(),
                    "approval": p.approval,
                });
                if let Some(glass) = p.break_glass {
                    spec["breakGlass"] = json!(glass);
                }
                spec
            }
            Kind::Rollback => json!({
                "revision": plan.sha.to_string(),
                "rollback": super::rollback(&plan, &by, ask.reason.clone(), at),
            }),
        };
        let name = found.release.name_any();
        if found
            .release
            .labels()
            .get(MANAGED_BY.0)
            .is_some_and(|v| v == MANAGED_BY.1)
        {
            let yaml = serde_norway::to_string(&json!({ "spec": spec })).unwrap_or_default();
            return Err(PromoteError::ManagedByGitOps {
                release: format!("{}/{name}", self.namespace),
                change: yaml,
            });
        }
        Api::<Release>::namespaced(self.client.clone(), &self.namespace)
            .patch(
                &name,
                &PatchParams {
                    field_manager: Some(FIELD_MANAGER.to_owned()),
                    ..PatchParams::default()
                },
                &Patch::Merge(json!({ "spec": spec })),
            )
            .await
            .map_err(|source| PromoteError::Kubernetes {
                what: format!("cannot update Release {}/{name}", self.namespace),
                source,
            })?;
        Ok(Done {
            release: format!("{}/{name}", self.namespace),
            sha: plan.sha,
            by,
            at,
        })
    }
}

/// The plan, without the commits: the rules of [`super`] on the statuses found.
fn checked(kind: Kind, ask: &Ask, found: &Found) -> Result<Plan, super::Refusal> {
    super::check(
        kind,
        ask,
        &found.env.spec,
        found.upstream.as_ref().and_then(|u| u.status.as_ref()),
        found.release.status.as_ref(),
    )
}
