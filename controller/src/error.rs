//! What kind of fault an error is. The category drives the operator's retries (an
//! invalid spec waits for a change; transient faults back off) and labels
//! `vigie_reconcile_errors_total{category}`; it comes from the error's variant, never
//! from its text.

/// The kind of a fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Category {
    /// The resources ask for something impossible: waits for a change.
    InvalidSpec,
    /// A fault that passes (a timeout, an API that does not answer): retried with backoff.
    Transient,
    /// Someone else wrote first: retried at once.
    Conflict,
    /// The Docker engine refused or did not answer.
    Engine,
    /// The artifact of a SHA is not available (yet).
    Artifact,
    /// GitHub, GitLab or a git remote refused or did not answer.
    Forge,
    /// The state could not be written.
    Store,
}

impl Category {
    /// The label value.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidSpec => "invalid_spec",
            Self::Transient => "transient",
            Self::Conflict => "conflict",
            Self::Engine => "engine",
            Self::Artifact => "artifact",
            Self::Forge => "forge",
            Self::Store => "store",
        }
    }
}

/// Why something could not be recorded durably (the state file, a status in the
/// Kubernetes API): the cause, kept, and its category.
#[derive(Debug, thiserror::Error)]
#[error("{source}")]
pub struct RecordError {
    /// The kind of fault.
    pub category: Category,
    /// The cause.
    #[source]
    pub source: Box<dyn std::error::Error + Send + Sync>,
}

impl RecordError {
    /// The state file could not be written.
    pub fn store(source: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Self {
            category: Category::Store,
            source: source.into(),
        }
    }

    /// The Kubernetes API refused or did not answer (a conflict is retried at once).
    #[must_use]
    pub fn kubernetes(source: kube::Error) -> Self {
        let category = match &source {
            kube::Error::Api(s) if s.code == 409 => Category::Conflict,
            kube::Error::Api(s) if s.code == 422 || s.code == 400 => Category::InvalidSpec,
            _ => Category::Transient,
        };
        Self {
            category,
            source: Box::new(source),
        }
    }
}
