//! Secret values at the edge: from an environment variable or a file (standalone),
//! or a Kubernetes Secret (operator). Values are never logged nor put in errors.

use crate::{api::SecretSource, error::Category};

/// Why a secret is unavailable: where it was looked for, never its value.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    /// The environment variable is not set.
    #[error("environment variable {0} is not set")]
    Unset(String),
    /// The file cannot be read.
    #[error("cannot read secret file {path}: {kind}")]
    Unreadable {
        /// The file.
        path: String,
        /// Why.
        kind: std::io::ErrorKind,
    },
    /// A Secret named where only the operator can read it (standalone).
    #[error("Secret {name}/{key} is read by the operator only; standalone, use env or file")]
    OperatorOnly {
        /// The Secret.
        name: String,
        /// The key.
        key: String,
    },
    /// A Kubernetes Secret is missing, lacks the key, is forbidden, or was not read yet.
    #[error("{0}")]
    Kubernetes(String),
    /// The Kubernetes API did not answer: it may work on the next attempt.
    #[error("{0}")]
    Unanswered(String),
}

impl SecretError {
    /// The kind of fault.
    #[must_use]
    pub fn category(&self) -> Category {
        match self {
            Self::Unanswered(_) => Category::Transient,
            _ => Category::InvalidSpec,
        }
    }
}

impl From<SecretError> for String {
    fn from(e: SecretError) -> Self {
        e.to_string()
    }
}

/// Reads a secret. The error names where it was looked for, never the value.
///
/// # Errors
/// The variable is not set, the file cannot be read, or a Kubernetes Secret is named.
pub fn resolve(source: &SecretSource) -> Result<Vec<u8>, SecretError> {
    match source {
        SecretSource::Env(name) => std::env::var(name)
            .map(std::string::String::into_bytes)
            .map_err(|_| SecretError::Unset(name.clone())),
        SecretSource::File(path) => std::fs::read(path)
            .map(|mut v| {
                while v.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                    v.pop();
                }
                v
            })
            .map_err(|e| SecretError::Unreadable {
                path: path.clone(),
                kind: e.kind(),
            }),
        SecretSource::SecretKeyRef(r) => Err(SecretError::OperatorOnly {
            name: r.name.clone(),
            key: r.key.clone(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_come_from_files_and_variables_and_errors_hide_them() {
        let path = std::env::temp_dir().join(format!("vigie-secret-{}", std::process::id()));
        std::fs::write(&path, "t0ken\n").unwrap();
        assert_eq!(
            resolve(&SecretSource::File(path.display().to_string())).unwrap(),
            b"t0ken"
        );
        std::fs::remove_file(&path).unwrap();
        let e = resolve(&SecretSource::File(path.display().to_string())).unwrap_err();
        assert!(e.to_string().starts_with("cannot read secret file"), "{e}");
        assert_eq!(
            resolve(&SecretSource::Env("VIGIE_TEST_UNSET_VARIABLE".into()))
                .unwrap_err()
                .to_string(),
            "environment variable VIGIE_TEST_UNSET_VARIABLE is not set"
        );
    }
}
