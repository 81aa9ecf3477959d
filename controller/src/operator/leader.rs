//! Leader election on a `coordination.k8s.io` Lease, as client-go does it: the holder
//! renews the Lease every few seconds; another replica takes it once it has not been
//! renewed for its duration; a replica stopping releases it so the next one takes
//! over at once. The rule that decides is pure ([`step`]); the Lease I/O is
//! [`Elector`].

use std::{net::SocketAddr, time::Duration};

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

/// Decides the next step of replica `me`. A Lease `me` holds is renewed however fresh,
/// so a replica started again with the same identity (a container restarted in its pod)
/// leads again at once instead of waiting for its own Lease to expire.
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

/// Who a replica is in the Lease.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Identity {
    /// Given (`--identity`): used as is.
    Given(String),
    /// Named after the pod or the host ([`name`]); [`Identity::resolve`] completes it
    /// once the listener is bound.
    Named(String),
}

/// What tells a process from every other one running at the same time, and stays the
/// same when it is started again in the same place: the kernel's boot, the network
/// namespace (a pod's outlives its containers) and the address it listens on (two live
/// processes cannot listen on the same address of the same network namespace).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Place {
    /// The kernel's boot id (`/proc/sys/kernel/random/boot_id`).
    pub boot: String,
    /// The network namespace (`/proc/self/ns/net`: `net:[4026531840]`).
    pub network: String,
    /// The address the listener is bound to.
    pub listen: SocketAddr,
}

impl Place {
    /// This process's place, when the kernel tells (Linux); `None` otherwise.
    #[must_use]
    pub fn here(listen: SocketAddr) -> Option<Self> {
        let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
        let network = std::fs::read_link("/proc/self/ns/net").ok()?;
        let boot = boot.trim();
        (!boot.is_empty()).then(|| Self {
            boot: boot.to_owned(),
            network: network.to_string_lossy().into_owned(),
            listen,
        })
    }
}

/// The name a replica goes by: its pod's (`POD_NAME`, from the downward API), else its
/// host's, else `vigie`.
#[must_use]
pub fn name(pod: Option<&str>, host: Option<&str>) -> String {
    [pod, host]
        .into_iter()
        .flatten()
        .map(str::trim)
        .find(|n| !n.is_empty())
        .unwrap_or("vigie")
        .to_owned()
}

impl Identity {
    /// The identity written in the Lease. A given one as is. A named one followed by 12
    /// hex digits of its [`Place`] (`vigie-5f7c9d8b4-qx2lm_3f9c2a1b04de`): a container
    /// restarted in its pod, or a process restarted on its machine with the same
    /// `--listen`, is the same replica and takes its own Lease back at once ([`step`]),
    /// while any other process, even of the same pod or host name, is another replica.
    /// Where the place is unknown, the process id stands in for it: a new identity at
    /// each start, which waits for its old Lease to expire.
    #[must_use]
    pub fn resolve(&self, place: Option<&Place>, pid: u32) -> String {
        use sha2::Digest as _;
        match (self, place) {
            (Self::Given(identity), _) => identity.clone(),
            (Self::Named(name), Some(p)) => {
                let digest = sha2::Sha256::digest(
                    format!("{}\n{}\n{}", p.boot, p.network, p.listen).as_bytes(),
                );
                format!("{name}_{}", hex::encode(&digest[..6]))
            }
            (Self::Named(name), None) => format!("{name}_{pid}"),
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
            step("a", Some(&held("a", 0)), t(1)),
            Step::Renew,
            "its own Lease, however fresh: a replica restarted as `a` leads again at once"
        );
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

    fn place(boot: &str, network: &str, listen: &str) -> Place {
        Place {
            boot: boot.into(),
            network: network.into(),
            listen: listen.parse().unwrap(),
        }
    }

    #[test]
    fn a_replica_is_named_after_its_pod_else_its_host() {
        assert_eq!(
            name(Some("vigie-5f7c9d8b4-qx2lm"), Some("node-1")),
            "vigie-5f7c9d8b4-qx2lm"
        );
        assert_eq!(name(None, Some("laptop\n")), "laptop");
        assert_eq!(name(Some(""), Some(" ")), "vigie");
        assert_eq!(name(None, None), "vigie");
    }

    #[test]
    fn the_same_replica_restarted_in_place_keeps_its_identity_and_no_other_process_shares_it() {
        let named = Identity::Named("vigie-0".into());
        let here = place("b00t", "net:[4026531840]", "0.0.0.0:8080");
        let id = named.resolve(Some(&here), 41);
        assert!(id.starts_with("vigie-0_"), "{id}");
        assert_eq!(id.len(), "vigie-0_".len() + 12, "{id}");
        assert_eq!(
            named.resolve(Some(&here), 97),
            id,
            "restarted (another pid) in the same pod, or with the same --listen on the same machine"
        );
        for (why, elsewhere) in [
            (
                "another listen address",
                place("b00t", "net:[4026531840]", "0.0.0.0:8081"),
            ),
            (
                "another network namespace (pod)",
                place("b00t", "net:[4026532001]", "0.0.0.0:8080"),
            ),
            (
                "another machine, or a reboot",
                place("other", "net:[4026531840]", "0.0.0.0:8080"),
            ),
        ] {
            assert_ne!(named.resolve(Some(&elsewhere), 41), id, "{why}");
        }
        assert_ne!(
            Identity::Named("vigie-1".into()).resolve(Some(&here), 41),
            id,
            "another pod"
        );
    }

    #[test]
    fn without_a_place_the_process_id_stands_in_and_a_given_identity_is_kept() {
        let named = Identity::Named("laptop".into());
        assert_eq!(named.resolve(None, 41), "laptop_41");
        assert_ne!(named.resolve(None, 97), named.resolve(None, 41));
        let here = place("b00t", "net:[1]", "127.0.0.1:8080");
        assert_eq!(
            Identity::Given("one".into()).resolve(Some(&here), 41),
            "one"
        );
        assert_eq!(Identity::Given("one".into()).resolve(None, 41), "one");
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
