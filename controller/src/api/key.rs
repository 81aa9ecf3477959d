//! A Release's identity: its namespace and name, written `namespace/name` where a
//! string is needed (the state file, logs).

use std::{fmt, str::FromStr};

/// A Release's namespace and name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ReleaseKey {
    /// The namespace (`default` for manifests that name none).
    pub namespace: String,
    /// The Release's name.
    pub name: String,
}

impl ReleaseKey {
    /// The key of `name` in `namespace`.
    #[must_use]
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
        }
    }

    /// The key of another object of the same namespace (`namespace/other`): the
    /// Release's CodeLocation or Environment.
    #[must_use]
    pub fn sibling(&self, other: &str) -> String {
        format!("{}/{other}", self.namespace)
    }
}

impl fmt::Display for ReleaseKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// A key that is not `namespace/name`.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0:?} is not namespace/name")]
pub struct KeyError(pub String);

impl FromStr for ReleaseKey {
    type Err = KeyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.split_once('/') {
            Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => {
                Ok(Self::new(ns, name))
            }
            _ => Err(KeyError(s.to_owned())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_written_and_read_as_namespace_slash_name() {
        let key = ReleaseKey::new("apps", "web-prod");
        assert_eq!(key.to_string(), "apps/web-prod");
        assert_eq!("apps/web-prod".parse::<ReleaseKey>(), Ok(key.clone()));
        assert_eq!(key.sibling("web"), "apps/web");
        for bad in ["", "web", "/web", "apps/", "a/b/c"] {
            assert!(bad.parse::<ReleaseKey>().is_err(), "{bad}");
        }
    }
}
