//! When a Release carries the finalizer `vigie.dev/cleanup`. Adding it costs a write
//! and a reconcile round, so it is added only where the garbage collector cannot do
//! the cleanup: what Vigie creates in the Release's own namespace carries an owner
//! reference to it (the Deployment, its Service, the hook Jobs) and goes with it.

use crate::api::environment::{Backend, EnvironmentSpec};

/// Whether a Release in `namespace` needs the finalizer before anything is applied for
/// it: containers (Docker) have no garbage collector; objects in another namespace
/// cannot be owned by it; a Release to orphan must have its owner references dropped
/// first; a Dagster code location leaves the webserver's workspace entry to remove.
#[must_use]
pub fn needed(namespace: &str, orphan: bool, environment: &EnvironmentSpec, dagster: bool) -> bool {
    match &environment.backend {
        Backend::Docker(_) => true,
        Backend::Kubernetes(k) => orphan || dagster || k.namespace != namespace,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(backend: &serde_json::Value) -> EnvironmentSpec {
        serde_json::from_value(serde_json::json!({ "backend": backend })).unwrap()
    }

    #[test]
    fn only_what_the_garbage_collector_cannot_remove_needs_the_finalizer() {
        let here = env(&serde_json::json!({"kubernetes": {"namespace": "apps"}}));
        assert!(
            !needed("apps", false, &here, false),
            "owned: the GC removes it"
        );
        assert!(
            needed("apps", true, &here, false),
            "orphaned: owner refs go first"
        );
        assert!(
            needed("apps", false, &here, true),
            "a Dagster workspace entry"
        );
        assert!(
            needed("vigie", false, &here, false),
            "in another namespace: no owner reference"
        );
        let docker = env(&serde_json::json!({"docker": {}}));
        assert!(needed("apps", false, &docker, false), "containers");
    }
}
