//! An object's identity (a Release, a CodeLocation, an Environment): its namespace and
//! name, written `namespace/name` where a string is needed (the state file, logs, the
//! maps webhooks look locations up in). Keys are built and read here only.

use std::{fmt, str::FromStr};

/// An object's namespace and name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectKey {
    /// The namespace (`default` for manifests that name none).
    pub namespace: String,
    /// The object's name.
    pub name: String,
}

/// A Release's key.
pub type ReleaseKey = ObjectKey;

impl ObjectKey {
    /// The key of `name` in `namespace`.
    #[must_use]
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
        }
    }

    /// The key of another object of the same namespace: the Release's CodeLocation or
    /// Environment.
    #[must_use]
    pub fn sibling(&self, other: &str) -> Self {
        Self::new(self.namespace.clone(), other)
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// A key that is not `namespace/name`.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0:?} is not namespace/name")]
pub struct KeyError(pub String);

impl FromStr for ObjectKey {
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
        assert_eq!(key.sibling("web").to_string(), "apps/web");
        for bad in ["", "web", "/web", "apps/", "a/b/c"] {
            assert!(bad.parse::<ReleaseKey>().is_err(), "{bad}");
        }
    }
}
