//! `vigie promote --kubernetes` and `vigie rollback --kubernetes`, and the operator's
//! web view: the plan is made from the Releases' statuses in the API; the decision is
//! a merge patch of the target Release's spec (field manager `vigie-cli`, or
//! `vigie-web` for the pages) naming the person: the one the API server says the
//! caller is (a `SelfSubjectReview`), or the one the pages logged in. A Release
//! managed by GitOps is not patched (the sync would put it back): the change to commit
//! is given instead.

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
    api::{CodeLocation, Environment, Release, release::QuarantineClearance},
    gitops::repo::Credentials,
    operator::{gitops::MANAGED_BY, secrets::SecretCache},
};

/// The field manager of the CLI's patches.
pub const FIELD_MANAGER: &str = "vigie-cli";
/// The field manager of the web view's patches.
pub const WEB_FIELD_MANAGER: &str = "vigie-web";

/// A namespace of a cluster, and the field manager its patches are written as.
pub struct Cluster {
    client: Client,
    namespace: String,
    field_manager: &'static str,
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
        Ok(Self::new(client, namespace))
    }

    /// A namespace of the cluster `client` talks to; patches are written as
    /// [`FIELD_MANAGER`] until [`Cluster::written_as`] says otherwise.
    #[must_use]
    pub fn new(client: Client, namespace: &str) -> Self {
        Self {
            client,
            namespace: namespace.to_owned(),
            field_manager: FIELD_MANAGER,
        }
    }

    /// The same namespace, its patches written as `field_manager`.
    #[must_use]
    pub fn written_as(self, field_manager: &'static str) -> Self {
        Self {
            field_manager,
            ..self
        }
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

    /// Records the decision of the caller (the person the API server says it is) on the
    /// target Release, planned again first (the statuses may have moved while the
    /// person read).
    ///
    /// # Errors
    /// Why it is refused, the caller is anonymous, the Release is managed by GitOps, or
    /// the patch failed.
    pub async fn apply(&self, kind: Kind, ask: &Ask) -> Result<Done, PromoteError> {
        let by = self.who().await?;
        self.apply_as(kind, ask, &by).await
    }

    /// Records the decision of `by` on the target Release, planned again first.
    ///
    /// # Errors
    /// Why it is refused, the Release is managed by GitOps, or the patch failed.
    pub async fn apply_as(&self, kind: Kind, ask: &Ask, by: &str) -> Result<Done, PromoteError> {
        let found = self.find(ask).await?;
        let plan = checked(kind, ask, &found)?;
        let at = Timestamp::now();
        let spec = match kind {
            Kind::Promote => {
                let p =
                    super::promotion(&plan, by, ask.reason.clone(), ask.break_glass.clone(), at);
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
                "rollback": super::rollback(&plan, by, ask.reason.clone(), at),
            }),
        };
        let name = found.release.name_any();
        self.not_gitops(&found.release, &spec)?;
        self.patch(&name, &json!({ "spec": spec })).await?;
        Ok(Done {
            release: format!("{}/{name}", self.namespace),
            sha: plan.sha,
            by: by.to_owned(),
            at,
        })
    }

    /// Records a person's clearance of a quarantined SHA on the Release `name`: its
    /// `spec.clearQuarantine` (the last [`super::CLEARANCES_KEPT`] kept), written with
    /// the `resourceVersion` read, so that a change made meanwhile is refused rather
    /// than lost.
    ///
    /// # Errors
    /// The Release is missing, the SHA is not quarantined there, the Release is managed
    /// by GitOps, it changed meanwhile, or the patch failed.
    pub async fn clear_quarantine(
        &self,
        name: &str,
        clearance: QuarantineClearance,
    ) -> Result<(), PromoteError> {
        let ns = &self.namespace;
        let release = Api::<Release>::namespaced(self.client.clone(), ns)
            .get_opt(name)
            .await
            .map_err(|source| PromoteError::Kubernetes {
                what: format!("cannot read Release {ns}/{name}"),
                source,
            })?
            .ok_or_else(|| PromoteError::NotFound(format!("no Release {ns}/{name}")))?;
        let spec = clearance_spec(&release, clearance)?;
        self.not_gitops(&release, &spec)?;
        let patch = json!({
            "metadata": { "resourceVersion": release.resource_version() },
            "spec": spec,
        });
        match self.patch(name, &patch).await {
            Err(PromoteError::Kubernetes {
                source: kube::Error::Api(status),
                ..
            }) if status.code == 409 => Err(PromoteError::NotRecorded(format!(
                "Release {ns}/{name} changed while the clearance was written; reload and try again"
            ))),
            other => other,
        }
    }

    /// Refuses a change to a Release the GitOps sync would put back, with the YAML to
    /// commit instead.
    fn not_gitops(&self, release: &Release, spec: &serde_json::Value) -> Result<(), PromoteError> {
        if release
            .labels()
            .get(MANAGED_BY.0)
            .is_some_and(|v| v == MANAGED_BY.1)
        {
            let yaml = serde_norway::to_string(&json!({ "spec": spec })).unwrap_or_default();
            return Err(PromoteError::ManagedByGitOps {
                release: format!("{}/{}", self.namespace, release.name_any()),
                change: yaml,
            });
        }
        Ok(())
    }

    /// A JSON merge patch of the Release `name`, as this cluster's field manager.
    async fn patch(&self, name: &str, patch: &serde_json::Value) -> Result<(), PromoteError> {
        Api::<Release>::namespaced(self.client.clone(), &self.namespace)
            .patch(
                name,
                &PatchParams {
                    field_manager: Some(self.field_manager.to_owned()),
                    ..PatchParams::default()
                },
                &Patch::Merge(patch),
            )
            .await
            .map_err(|source| PromoteError::Kubernetes {
                what: format!("cannot update Release {}/{name}", self.namespace),
                source,
            })?;
        Ok(())
    }
}

/// The `spec` part of a clearance: the Release's clearances (the last
/// [`super::CLEARANCES_KEPT`], this one included). Refused when the SHA is not
/// quarantined in the Release's status.
fn clearance_spec(
    release: &Release,
    clearance: QuarantineClearance,
) -> Result<serde_json::Value, PromoteError> {
    let quarantined = release
        .status
        .as_ref()
        .is_some_and(|s| s.quarantine.iter().any(|q| q.sha == clearance.sha));
    if !quarantined {
        return Err(PromoteError::NotFound(format!(
            "{} is not quarantined in {}/{}",
            clearance.sha.short(),
            release.namespace().unwrap_or_default(),
            release.name_any()
        )));
    }
    let mut list = release.spec.clear_quarantine.clone();
    list.push(clearance);
    let excess = list.len().saturating_sub(super::CLEARANCES_KEPT);
    list.drain(..excess);
    Ok(json!({ "clearQuarantine": list }))
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

#[cfg(test)]
mod tests {
    use jiff::Timestamp;

    use super::*;
    use crate::api::Sha;

    fn sha(c: char) -> Sha {
        c.to_string().repeat(40).parse().unwrap()
    }

    fn clearance(c: char, n: i64) -> QuarantineClearance {
        QuarantineClearance {
            sha: sha(c),
            by: format!("person-{n}"),
            reason: "fixed upstream".into(),
            at: Timestamp::from_second(1_800_000_000 + n).unwrap(),
        }
    }

    /// More clearances on record than are kept.
    const CLEARANCES: usize = 20;

    /// A Release `apps/web` with `b` quarantined and `given` clearances on record.
    fn quarantined(given: usize) -> Release {
        serde_json::from_value(json!({
            "apiVersion": "vigie.dev/v1alpha1",
            "kind": "Release",
            "metadata": {"name": "web", "namespace": "apps", "resourceVersion": "7"},
            "spec": {
                "codeLocation": "web",
                "environment": "prod",
                "clearQuarantine": (0..given)
                    .map(|n| clearance('c', i64::try_from(n).unwrap()))
                    .collect::<Vec<_>>(),
            },
            "status": {"quarantine": [{"sha": sha('b'), "at": "2026-01-01T00:00:00Z", "reason": "red"}]},
        }))
        .unwrap()
    }

    /// The new clearance goes after those on record, and only the newest are kept.
    #[test]
    fn a_clearance_is_added_to_the_newest_kept() {
        let spec = clearance_spec(&quarantined(2), clearance('b', 99)).unwrap();
        let list = spec["clearQuarantine"].as_array().unwrap();
        assert_eq!(list.len(), 3);
        assert_eq!(list[2]["by"], "person-99");
        assert_eq!(list[2]["sha"], sha('b').as_str());

        let spec = clearance_spec(&quarantined(CLEARANCES), clearance('b', 99)).unwrap();
        let list = spec["clearQuarantine"].as_array().unwrap();
        assert_eq!(list.len(), super::super::CLEARANCES_KEPT);
        let first_kept = CLEARANCES + 1 - super::super::CLEARANCES_KEPT;
        assert_eq!(list[0]["by"], format!("person-{first_kept}"));
        assert_eq!(list.last().unwrap()["by"], "person-99");
    }

    /// A SHA that is not quarantined there is refused, naming it and the Release.
    #[test]
    fn a_sha_not_quarantined_is_refused() {
        let e = clearance_spec(&quarantined(0), clearance('d', 1)).unwrap_err();
        assert!(matches!(e, PromoteError::NotFound(_)), "{e:?}");
        assert_eq!(e.to_string(), "ddddddd is not quarantined in apps/web");
    }
}
