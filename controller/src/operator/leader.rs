//! Leader election on a `coordination.k8s.io` Lease, as client-go does it: the holder
//! renews the Lease every few seconds; another replica takes it once it has not been
//! renewed for its duration; a replica stopping releases it so the next one takes
//! over at once. The rule that decides is pure ([`step`]); the Lease I/O is
//! [`Elector`].

use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::{
    api::coordination::v1::{Lease, LeaseSpec},
    apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta},
};
use kube::{Api, Client, api::PostParams};

/// What a replica knows of the Lease.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseView {
    /// The holder, if any (empty means released).
    pub holder: Option<String>,
    /// When the holder last renewed it.
    pub renewed: Option<Timestamp>,
    /// How long a renewal holds.
    pub duration: Duration,
}

/// What a replica does next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Take the Lease (absent, released or expired).
    Acquire,
    /// It is ours: renew it.
    Renew,
    /// Someone else holds it and it is fresh.
    Wait {
        /// The holder.
        holder: String,
    },
}

/// Decides the next step of replica `me`.
#[must_use]
pub fn step(me: &str, lease: Option<&LeaseView>, now: Timestamp) -> Step {
    let Some(lease) = lease else {
        return Step::Acquire;
    };
    let holder = lease.holder.as_deref().filter(|h| !h.is_empty());
    match holder {
        None => Step::Acquire,
        Some(h) if h == me => Step::Renew,
        Some(h) => {
            let expired = lease.renewed.is_none_or(|r| {
                let held = jiff::SignedDuration::try_from(lease.duration)
                    .unwrap_or(jiff::SignedDuration::MAX);
                r.checked_add(held).is_ok_and(|until| until < now)
            });
            if expired {
                Step::Acquire
            } else {
                Step::Wait {
                    holder: h.to_owned(),
                }
            }
        }
    }
}

/// Where Kubernetes puts the namespace of a pod's service account.
pub const SERVICE_ACCOUNT_NAMESPACE: &str =
    "/var/run/secrets/kubernetes.io/serviceaccount/namespace";

/// The namespace of the Lease (and of the ConfigMaps next to it): `--lease-namespace`
/// when given; else the namespace the controller runs in: its pod's (`pod`, the service
/// account's namespace file), else the kubeconfig context's (`kubeconfig`); else
/// `default`. The chart grants Leases in the release's namespace only, which is the
/// pod's, and the context's for a process run outside the cluster with a kubeconfig of
/// the chart's ServiceAccount set to that namespace.
#[must_use]
pub fn lease_namespace(flag: Option<&str>, pod: Option<&str>, kubeconfig: Option<&str>) -> String {
    [flag, pod, kubeconfig]
        .into_iter()
        .flatten()
        .map(str::trim)
        .find(|n| !n.is_empty())
        .unwrap_or("default")
        .to_owned()
}

/// Timings of the election.
#[derive(Clone, Copy, Debug)]
pub struct Timings {
    /// How long a renewal holds.
    pub lease_duration: Duration,
    /// Time between tries (and renewals).
    pub retry_period: Duration,
    /// A holder that could not renew within this gives up leading.
    pub renew_deadline: Duration,
}

impl Default for Timings {
    fn default() -> Self {
        Self {
            lease_duration: Duration::from_secs(15),
            retry_period: Duration::from_secs(2),
            renew_deadline: Duration::from_secs(10),
        }
    }
}

/// One replica's side of the election.
pub struct Elector {
    api: Api<Lease>,
    name: String,
    identity: String,
    timings: Timings,
}

fn view(lease: &Lease) -> LeaseView {
    let spec = lease.spec.as_ref();
    LeaseView {
        holder: spec.and_then(|s| s.holder_identity.clone()),
        renewed: spec
            .and_then(|s| s.renew_time.as_ref())
            .map(|t| t.0)
            .or_else(|| spec.and_then(|s| s.acquire_time.as_ref()).map(|t| t.0)),
        duration: Duration::from_secs(
            spec.and_then(|s| s.lease_duration_seconds)
                .and_then(|s| u64::try_from(s).ok())
                .unwrap_or(15),
        ),
    }
}

impl Elector {
    /// An elector for Lease `namespace/name`, as `identity`.
    #[must_use]
    pub fn new(
        client: Client,
        namespace: &str,
        name: &str,
        identity: &str,
        timings: Timings,
    ) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            name: name.to_owned(),
            identity: identity.to_owned(),
            timings,
        }
    }

    /// This replica's identity.
    #[must_use]
    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// Tries once; `Ok(true)` when this replica leads after it.
    ///
    /// # Errors
    /// When the API refuses (a lost race is `Ok(false)`, not an error).
    pub async fn try_once(&self) -> Result<bool, kube::Error> {
        let current = self.api.get_opt(&self.name).await?;
        let now = Timestamp::now();
        match step(&self.identity, current.as_ref().map(view).as_ref(), now) {
            Step::Wait { .. } => Ok(false),
            Step::Renew => {
                let mut lease = current.expect("Renew implies a Lease");
                if let Some(spec) = lease.spec.as_mut() {
                    spec.renew_time = Some(MicroTime(now));
                }
                self.write(lease, false).await
            }
            Step::Acquire => {
                let transitions = current
                    .as_ref()
                    .and_then(|l| l.spec.as_ref())
                    .and_then(|s| s.lease_transitions)
                    .unwrap_or(0);
                let spec = LeaseSpec {
                    holder_identity: Some(self.identity.clone()),
                    acquire_time: Some(MicroTime(now)),
                    renew_time: Some(MicroTime(now)),
                    lease_duration_seconds: Some(
                        i32::try_from(self.timings.lease_duration.as_secs()).unwrap_or(15),
                    ),
                    lease_transitions: Some(transitions + i32::from(current.is_some())),
                    ..LeaseSpec::default()
                };
                if let Some(mut lease) = current {
                    lease.spec = Some(spec);
                    self.write(lease, false).await
                } else {
                    let lease = Lease {
                        metadata: ObjectMeta {
                            name: Some(self.name.clone()),
                            ..ObjectMeta::default()
                        },
                        spec: Some(spec),
                    };
                    self.write(lease, true).await
                }
            }
        }
    }

    /// Creates or replaces (with the read resourceVersion: a concurrent writer wins and
    /// this try fails with `Ok(false)`).
    async fn write(&self, lease: Lease, create: bool) -> Result<bool, kube::Error> {
        let pp = PostParams::default();
        let result = if create {
            self.api.create(&pp, &lease).await
        } else {
            self.api.replace(&self.name, &pp, &lease).await
        };
        match result {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Waits until this replica leads.
    pub async fn acquire(&self) {
        let mut waiting_for: Option<String> = None;
        loop {
            match self.try_once().await {
                Ok(true) => {
                    tracing::info!(identity = %self.identity, lease = %self.name, "became the leader");
                    return;
                }
                Ok(false) => {
                    let holder = self
                        .api
                        .get_opt(&self.name)
                        .await
                        .ok()
                        .flatten()
                        .and_then(|l| l.spec.and_then(|s| s.holder_identity));
                    if holder != waiting_for {
                        tracing::info!(holder = ?holder, "another replica leads; standing by");
                        waiting_for = holder;
                    }
                }
                Err(e) => tracing::warn!(error = %e, "leader election: cannot read the Lease"),
            }
            tokio::time::sleep(self.timings.retry_period).await;
        }
    }

    /// Renews until a renewal fails for longer than the renew deadline, or the Lease
    /// was taken: returns then (the caller must stop leading).
    pub async fn keep(&self) {
        let mut last_ok = std::time::Instant::now();
        loop {
            tokio::time::sleep(self.timings.retry_period).await;
            match self.try_once().await {
                Ok(true) => last_ok = std::time::Instant::now(),
                Ok(false) => {
                    tracing::error!(identity = %self.identity, "lost the Lease to another replica");
                    return;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "failed to renew the Lease");
                    if last_ok.elapsed() > self.timings.renew_deadline {
                        tracing::error!("could not renew the Lease within the renew deadline");
                        return;
                    }
                }
            }
        }
    }

    /// Gives the Lease up (on shutdown) so another replica takes over at once.
    pub async fn release(&self) {
        let Ok(Some(mut lease)) = self.api.get_opt(&self.name).await else {
            return;
        };
        let Some(spec) = lease.spec.as_mut() else {
            return;
        };
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return;
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(MicroTime(Timestamp::now()));
        match self.write(lease, false).await {
            Ok(true) => tracing::info!("released the Lease"),
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e, "failed to release the Lease"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(secs: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + secs).unwrap()
    }

    fn held(by: &str, renewed: i64) -> LeaseView {
        LeaseView {
            holder: Some(by.into()),
            renewed: Some(t(renewed)),
            duration: Duration::from_secs(15),
        }
    }

    #[test]
    fn the_rules_of_the_election() {
        assert_eq!(step("a", None, t(0)), Step::Acquire);
        assert_eq!(step("a", Some(&held("a", 0)), t(100)), Step::Renew);
        assert_eq!(
            step("a", Some(&held("b", 0)), t(10)),
            Step::Wait { holder: "b".into() }
        );
        assert_eq!(
            step("a", Some(&held("b", 0)), t(15)),
            Step::Wait { holder: "b".into() },
            "exactly at the end of the duration it still holds"
        );
        assert_eq!(step("a", Some(&held("b", 0)), t(16)), Step::Acquire);
        let released = LeaseView {
            holder: Some(String::new()),
            ..held("b", 0)
        };
        assert_eq!(step("a", Some(&released), t(1)), Step::Acquire);
        let never = LeaseView {
            renewed: None,
            ..held("b", 0)
        };
        assert_eq!(step("a", Some(&never), t(1)), Step::Acquire);
    }

    #[test]
    fn the_lease_goes_where_the_controller_runs_unless_told() {
        let ns = |flag, pod, kubeconfig| lease_namespace(flag, pod, kubeconfig);
        assert_eq!(
            ns(Some("ops"), Some("vigie-system"), Some("apps")),
            "ops",
            "the flag overrides"
        );
        assert_eq!(
            ns(None, Some("vigie-system\n"), Some("apps")),
            "vigie-system",
            "in a pod: the service account's namespace (the file ends with no newline, but might)"
        );
        assert_eq!(
            ns(None, None, Some("vigie-system")),
            "vigie-system",
            "outside the cluster: the kubeconfig context's"
        );
        assert_eq!(ns(None, None, None), "default");
        assert_eq!(
            ns(Some(""), Some("  "), Some("apps")),
            "apps",
            "empty values count as unset"
        );
    }

    #[test]
    fn a_lease_reads_back_what_was_written() {
        let lease = Lease {
            metadata: ObjectMeta::default(),
            spec: Some(LeaseSpec {
                holder_identity: Some("x".into()),
                acquire_time: Some(MicroTime(t(0))),
                renew_time: None,
                lease_duration_seconds: Some(7),
                ..LeaseSpec::default()
            }),
        };
        assert_eq!(
            view(&lease),
            LeaseView {
                holder: Some("x".into()),
                renewed: Some(t(0)),
                duration: Duration::from_secs(7)
            }
        );
    }
}
