//! Workspaces kept in ConfigMaps (operator mode): read, changed with [`super::workspace`]
//! and replaced with the resourceVersion read, so that two Releases writing at once
//! never lose each other's entries (the loser reads again and retries). A file
//! workspace is written as in `vigie run`.

use futures::{FutureExt, future::BoxFuture};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::{
    Api,
    api::{ObjectMeta, PostParams},
};

use super::{Files, Workspaces, workspace};
use crate::api::{dagster::DagsterWorkspace, environment::Backend as BackendSpec};

/// Attempts of a read-change-replace that keeps losing the race.
const ATTEMPTS: usize = 8;

/// Workspaces in ConfigMaps of the environments' namespaces, or in files.
pub struct ConfigMaps {
    client: kube::Client,
    files: Files,
}

impl ConfigMaps {
    /// Writes through `client`.
    #[must_use]
    pub fn new(client: kube::Client) -> Self {
        Self {
            client,
            files: Files::default(),
        }
    }

    async fn set_key(
        &self,
        namespace: &str,
        name: &str,
        key: &str,
        location: &str,
        entry: Option<&workspace::Entry>,
    ) -> Result<bool, String> {
        let api: Api<ConfigMap> = Api::namespaced(self.client.clone(), namespace);
        let at = format!("ConfigMap {namespace}/{name}");
        for _ in 0..ATTEMPTS {
            let current = api
                .get_opt(name)
                .await
                .map_err(|e| format!("failed to read {at}: {e}"))?;
            let text = current
                .as_ref()
                .and_then(|c| c.data.as_ref())
                .and_then(|d| d.get(key))
                .cloned()
                .unwrap_or_default();
            let (text, listed) = match workspace::set(&text, location, entry)
                .map_err(|e| format!("{at} key {key}: {e}"))?
            {
                workspace::Change::Unchanged => return Ok(false),
                workspace::Change::Changed { text, listed } => (text, listed),
            };
            let params = PostParams {
                field_manager: Some("vigie".into()),
                ..PostParams::default()
            };
            let written = if let Some(mut cm) = current {
                cm.data.get_or_insert_default().insert(key.to_owned(), text);
                api.replace(name, &params, &cm).await.map(|_| ())
            } else {
                let cm = ConfigMap {
                    metadata: ObjectMeta {
                        name: Some(name.to_owned()),
                        namespace: Some(namespace.to_owned()),
                        labels: Some(
                            [(
                                "app.kubernetes.io/managed-by".to_owned(),
                                "vigie".to_owned(),
                            )]
                            .into(),
                        ),
                        ..ObjectMeta::default()
                    },
                    data: Some([(key.to_owned(), text)].into()),
                    ..ConfigMap::default()
                };
                api.create(&params, &cm).await.map(|_| ())
            };
            match written {
                Ok(()) => return Ok(listed),
                // Someone wrote in between (or created it): read again.
                Err(kube::Error::Api(e)) if e.code == 409 => {}
                Err(e) => return Err(format!("failed to write {at}: {e}")),
            }
        }
        Err(format!(
            "failed to write {at}: {ATTEMPTS} writers in a row changed it first"
        ))
    }
}

impl Workspaces for ConfigMaps {
    fn set<'a>(
        &'a self,
        backend: &'a BackendSpec,
        where_: &'a DagsterWorkspace,
        location: &'a str,
        entry: Option<workspace::Entry>,
    ) -> BoxFuture<'a, Result<bool, String>> {
        async move {
            let Some(cm) = &where_.config_map else {
                return self.files.set(backend, where_, location, entry).await;
            };
            let BackendSpec::Kubernetes(k) = backend else {
                return Err(
                    "a ConfigMap workspace needs a kubernetes backend (its namespace holds the ConfigMap); a Docker environment uses workspace.file".into(),
                );
            };
            self.set_key(&k.namespace, &cm.name, &cm.key, location, entry.as_ref())
                .await
        }
        .boxed()
    }
}
