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
