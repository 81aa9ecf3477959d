//! Push webhooks reach whichever replica the Service picks, but only the leader
//! fetches. A standby that receives a push for the manifests repository or a tracked
//! code repository passes it on through the ConfigMap `vigie-push`, next to the Lease:
//! it sets an annotation to the time of the push, and the leader, which watches that
//! ConfigMap, fetches at once.

use std::{
    collections::BTreeMap,
    sync::{Arc, atomic::Ordering},
    time::Duration,
};

use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::{
    Api, Client, ResourceExt,
    api::{Patch, PatchParams},
    runtime::{WatchStreamExt, watcher},
};

use crate::http::server::Shared;

/// The ConfigMap pushes are relayed through.
pub const CONFIGMAP: &str = "vigie-push";
/// Time of the last push to the manifests branch a standby received.
pub const MANIFESTS_PUSHED: &str = "vigie.dev/manifests-pushed-at";
/// Time of the last push to a tracked code repository a standby received.
pub const CODE_PUSHED: &str = "vigie.dev/code-pushed-at";

/// On a standby: passes on the pushes its webhooks received. Runs until dropped.
pub async fn standby(client: Client, namespace: String, shared: Arc<Shared>) {
    let api: Api<ConfigMap> = Api::namespaced(client, &namespace);
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        if shared.metrics.leader.get() == 1 {
            // The leader's own loops take its pushes.
            continue;
        }
        for (flag, annotation) in [
            (&shared.git_pushed, MANIFESTS_PUSHED),
            (&shared.track_pushed, CODE_PUSHED),
        ] {
            if !flag.swap(false, Ordering::Relaxed) {
                continue;
            }
            // One field manager per annotation: applying one leaves the other alone.
            let manager = format!(
                "vigie-relay-{}",
                annotation.trim_start_matches("vigie.dev/")
            );
            let patch = serde_json::json!({
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {
                    "name": CONFIGMAP,
                    "annotations": { annotation: jiff::Timestamp::now().to_string() },
                },
            });
            match api
                .patch(
                    CONFIGMAP,
                    &PatchParams::apply(&manager).force(),
                    &Patch::Apply(&patch),
                )
                .await
            {
                Ok(_) => tracing::info!(annotation, "push passed on to the leader"),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot pass a push on to the leader (ConfigMap {namespace}/{CONFIGMAP}); it fetches at its next interval");
                }
            }
        }
    }
}

/// On the leader: a change of either annotation makes it fetch (or check the tracked
/// refs) now. Runs until dropped.
pub async fn leader(client: Client, namespace: String, shared: Arc<Shared>) {
    let api: Api<ConfigMap> = Api::namespaced(client, &namespace);
    let config = watcher::Config::default().fields(&format!("metadata.name={CONFIGMAP}"));
    let mut seen: BTreeMap<&str, String> = BTreeMap::new();
    let mut stream = watcher(api, config)
        .default_backoff()
        .applied_objects()
        .boxed();
    while let Some(event) = stream.next().await {
        let cm = match event {
            Ok(cm) => cm,
            Err(e) => {
                tracing::warn!(error = %e, "watching ConfigMap {namespace}/{CONFIGMAP}");
                continue;
            }
        };
        for (annotation, flag) in [
            (MANIFESTS_PUSHED, &shared.git_pushed),
            (CODE_PUSHED, &shared.track_pushed),
        ] {
            let Some(at) = cm.annotations().get(annotation) else {
                continue;
            };
            if seen.get(annotation) != Some(at) {
                seen.insert(annotation, at.clone());
                tracing::info!(annotation, at = %at, "a push relayed by a standby");
                flag.store(true, Ordering::Relaxed);
                shared.wake.notify_waiters();
            }
        }
    }
}
