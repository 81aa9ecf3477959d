//! Secrets named by CodeLocations (`secretKeyRef`), read from the API and cached, so
//! the webhook handlers (synchronous) and the CI pollers can use them. Values are
//! never logged; an error names the Secret and key, never the value.

use std::{
    collections::HashMap,
    sync::{Arc, RwLock},
};

use k8s_openapi::api::core::v1::Secret;
use kube::{Api, Client, ResourceExt};

use crate::{
    api::{CodeLocation, SecretSource, common::SecretKeyRef},
    http::server::SecretResolver,
    secrets::SecretError,
};

/// `(namespace, secret, key)` → value, or why it is unavailable.
type Entries = HashMap<(String, String, String), Result<Vec<u8>, SecretError>>;

/// The cache.
#[derive(Clone, Default)]
pub struct SecretCache(Arc<RwLock<Entries>>);

/// Every `secretKeyRef` a CodeLocation names.
#[must_use]
pub fn references(location: &CodeLocation) -> Vec<SecretKeyRef> {
    let spec = &location.spec;
    let mut sources: Vec<Option<&SecretSource>> = Vec::new();
    if let Some(g) = &spec.ci.github {
        sources.extend([g.token.as_ref(), g.webhook_secret.as_ref()]);
        sources.push(g.app.as_ref().map(|a| &a.private_key));
    }
    if let Some(g) = &spec.ci.gitlab {
        sources.extend([g.token.as_ref(), g.webhook_token.as_ref()]);
    }
    if let Some(w) = &spec.ci.webhook {
        sources.push(w.secret.as_ref());
    }
    if let Some(c) = &spec.repo.credentials {
        sources.extend([c.token.as_ref(), c.ssh_key.as_ref(), c.known_hosts.as_ref()]);
        sources.push(c.github_app.as_ref().map(|a| &a.private_key));
    }
    sources
        .into_iter()
        .flatten()
        .filter_map(|s| match s {
            SecretSource::SecretKeyRef(r) => Some(r.clone()),
            _ => None,
        })
        .collect()
}

/// Reads one key of a Secret.
///
/// # Errors
/// Names the Secret and key and why (missing, forbidden, no such key).
pub async fn read(
    client: &Client,
    namespace: &str,
    r: &SecretKeyRef,
) -> Result<Vec<u8>, SecretError> {
    read_classified(client, namespace, r)
        .await
        .map_err(|(why, transient)| {
            if transient {
                SecretError::Unanswered(why)
            } else {
                SecretError::Kubernetes(why)
            }
        })
}

/// [`read`], saying whether the failure may pass (`true`: the API server did not
/// answer) or not (no such Secret or key, forbidden).
///
/// # Errors
/// Why, and whether it is transient.
pub async fn read_classified(
    client: &Client,
    namespace: &str,
    r: &SecretKeyRef,
) -> Result<Vec<u8>, (String, bool)> {
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    match api.get_opt(&r.name).await {
        Ok(Some(secret)) => secret
            .data
            .as_ref()
            .and_then(|d| d.get(&r.key))
            .map(|v| {
                let mut v = v.0.clone();
                while v.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                    v.pop();
                }
                v
            })
            .ok_or_else(|| {
                (
                    format!("Secret {namespace}/{} has no key {:?}", r.name, r.key),
                    false,
                )
            }),
        Ok(None) => Err((
            format!("Secret {namespace}/{} does not exist", r.name),
            false,
        )),
        Err(kube::Error::Api(s)) if s.code == 403 => Err((
            format!(
                "reading Secret {namespace}/{} is forbidden: grant vigie get on secrets in {namespace}",
                r.name
            ),
            false,
        )),
        Err(e) => Err((format!("reading Secret {namespace}/{}: {e}", r.name), true)),
    }
}

impl SecretCache {
    /// Reads every Secret the locations name (and forgets the others).
    pub async fn refresh(&self, client: &Client, locations: &[Arc<CodeLocation>]) {
        let mut next = Entries::new();
        for l in locations {
            let ns = l.namespace().unwrap_or_default();
            for r in references(l) {
                let key = (ns.clone(), r.name.clone(), r.key.clone());
                if next.contains_key(&key) {
                    continue;
                }
                let value = read(client, &ns, &r).await;
                if let Err(e) = &value {
                    tracing::warn!(code_location = %l.name_any(), error = %e, "secret unavailable");
                }
                next.insert(key, value);
            }
        }
        if let Ok(mut current) = self.0.write() {
            *current = next;
        }
    }

    /// The value of a source for a location in `namespace`.
    ///
    /// # Errors
    /// Why it is unavailable.
    pub fn get(&self, namespace: &str, source: &SecretSource) -> Result<Vec<u8>, SecretError> {
        match source {
            SecretSource::SecretKeyRef(r) => self
                .0
                .read()
                .map_err(|_| SecretError::Kubernetes("secret cache poisoned".to_owned()))?
                .get(&(namespace.to_owned(), r.name.clone(), r.key.clone()))
                .cloned()
                .unwrap_or_else(|| {
                    Err(SecretError::Unanswered(format!(
                        "Secret {namespace}/{} (key {:?}) not read yet",
                        r.name, r.key
                    )))
                }),
            other => crate::secrets::resolve(other),
        }
    }

    /// A resolver for the webhook handlers: the location key is `namespace/name`.
    #[must_use]
    pub fn resolver(&self) -> SecretResolver {
        let cache = self.clone();
        Arc::new(move |location: &str, source: &SecretSource| {
            let namespace = location
                .parse::<crate::api::key::ObjectKey>()
                .map(|k| k.namespace)
                .unwrap_or_default();
            cache.get(&namespace, source)
        })
    }
}

/// TLS files of a Docker engine, written from a Secret.
pub struct DockerTlsFiles {
    /// CA certificate.
    pub ca: std::path::PathBuf,
    /// Client certificate.
    pub cert: std::path::PathBuf,
    /// Client key.
    pub key: std::path::PathBuf,
    /// Changes when the Secret's content does.
    pub fingerprint: String,
}

/// Writes the `ca.crt`, `tls.crt` and `tls.key` of Secret `namespace/name` to files
/// only this process's user can read (bollard reads certificates from files).
///
/// # Errors
/// Names the Secret and the missing key, or the I/O failure.
pub async fn docker_tls(
    client: &Client,
    namespace: &str,
    environment: &str,
    name: &str,
) -> Result<DockerTlsFiles, crate::backend::BackendError> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};

    use sha2::Digest;

    use crate::{backend::BackendError, error::Category};
    let refused = |reason: String| BackendError::TlsSecret {
        reason,
        category: Category::InvalidSpec,
    };
    let failed = |reason: String| BackendError::TlsSecret {
        reason,
        category: Category::Transient,
    };
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let secret = match api.get_opt(name).await {
        Ok(Some(s)) => s,
        Ok(None) => {
            return Err(refused(format!(
                "TLS Secret {namespace}/{name} does not exist"
            )));
        }
        Err(kube::Error::Api(s)) if s.code == 403 => {
            return Err(refused(format!(
                "reading TLS Secret {namespace}/{name} is forbidden: grant vigie get on secrets in {namespace}"
            )));
        }
        Err(e) => {
            return Err(failed(format!(
                "reading TLS Secret {namespace}/{name}: {e}"
            )));
        }
    };
    let data = secret.data.unwrap_or_default();
    let get = |k: &str| {
        data.get(k)
            .map(|v| v.0.clone())
            .ok_or_else(|| refused(format!("TLS Secret {namespace}/{name} has no key {k:?}")))
    };
    let (ca, cert, key) = (get("ca.crt")?, get("tls.crt")?, get("tls.key")?);
    let mut h = sha2::Sha256::new();
    for part in [&ca, &cert, &key] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part);
    }
    let fingerprint = hex::encode(&h.finalize()[..8]);
    let dir = std::env::temp_dir()
        .join(format!("vigie-docker-tls-{}", std::process::id()))
        .join(format!("{namespace}-{environment}-{fingerprint}"));
    let write = |file: &str, content: &[u8]| -> Result<std::path::PathBuf, BackendError> {
        let path = dir.join(file);
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| failed(format!("writing {}: {e}", path.display())))?;
        std::io::Write::write_all(&mut f, content)
            .map_err(|e| failed(format!("writing {}: {e}", path.display())))?;
        Ok(path)
    };
    if dir.join("key.pem").exists() {
        // Written already for this content (the folder is named after it).
        return Ok(DockerTlsFiles {
            ca: dir.join("ca.pem"),
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
            fingerprint,
        });
    }
    std::fs::create_dir_all(&dir)
        .map_err(|e| failed(format!("creating {}: {e}", dir.display())))?;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| failed(format!("securing {}: {e}", dir.display())))?;
    Ok(DockerTlsFiles {
        ca: write("ca.pem", &ca)?,
        cert: write("cert.pem", &cert)?,
        key: write("key.pem", &key)?,
        fingerprint,
    })
}
