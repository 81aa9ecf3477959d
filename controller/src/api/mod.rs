//! The custom resources `Environment`, `CodeLocation` and `Release` (group `vigie.dev`,
//! version `v1alpha1`), and their generated CRDs.

pub mod code_location;
pub mod common;
pub mod dagster;
pub mod environment;
pub mod key;
pub mod release;

pub use code_location::{CodeLocation, CodeLocationSpec, CodeLocationStatus};
pub use common::{Condition, ConditionStatus, DurationSpec, SecretSource, Sha};
pub use environment::{Environment, EnvironmentSpec, EnvironmentStatus};
pub use key::{ObjectKey, ReleaseKey};
pub use release::{Phase, Release, ReleaseSpec, ReleaseStatus};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

/// The API group.
pub const GROUP: &str = "vigie.dev";
/// The API version.
pub const VERSION: &str = "v1alpha1";
/// `apiVersion` of the three kinds.
pub const API_VERSION: &str = "vigie.dev/v1alpha1";

/// The three CRDs, in the order they are written.
#[must_use]
pub fn crds() -> Vec<CustomResourceDefinition> {
    vec![Environment::crd(), CodeLocation::crd(), Release::crd()]
}

/// Each CRD as `(file name, YAML document)`, the file named after the CRD
/// (`releases.vigie.dev.yaml`), as checked in under `crds/`.
pub fn crd_files() -> Result<Vec<(String, String)>, serde_norway::Error> {
    crds()
        .into_iter()
        .map(|crd| {
            let name = crd.metadata.name.clone().unwrap_or_default();
            Ok((
                format!("{name}.yaml"),
                format!("---\n{}", serde_norway::to_string(&crd)?),
            ))
        })
        .collect()
}

/// The CRDs as one multi-document YAML stream.
pub fn crds_yaml() -> Result<String, serde_norway::Error> {
    Ok(crd_files()?.into_iter().map(|(_, yaml)| yaml).collect())
}
