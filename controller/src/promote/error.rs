//! Why `vigie promote` and `vigie rollback` do not go through: the rules refuse
//! ([`Refusal`], a sentence naming the SHA and environments), or something on the way
//! fails ([`PromoteError`]). Both modes and the HTTP answers tell them apart by variant.

use crate::api::Sha;

/// Why the rules refuse a promotion or a rollback.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The target takes commits directly.
    #[error(
        "{target} has no promotion.from: it takes commits directly, not from another environment"
    )]
    NoPromotionSource {
        /// The target environment.
        target: String,
    },
    /// The location has no Release upstream.
    #[error("{location} has no Release in {from}: nothing can be promoted from there")]
    NoUpstreamRelease {
        /// The code location.
        location: String,
        /// The upstream environment.
        from: String,
    },
    /// Nothing validated upstream yet.
    #[error("nothing is validated in {from} for {location} yet")]
    NothingValidated {
        /// The code location.
        location: String,
        /// The upstream environment.
        from: String,
    },
    /// The SHA was not validated upstream.
    #[error("{} is not validated in {from}: only a SHA validated there can go to {target}", .sha.short())]
    NotValidatedUpstream {
        /// The SHA.
        sha: Sha,
        /// The upstream environment.
        from: String,
        /// The target environment.
        target: String,
    },
    /// The SHA is suspect upstream.
    #[error("{} is suspect in {from} ({reason}): it cannot be promoted", .sha.short())]
    SuspectUpstream {
        /// The SHA.
        sha: Sha,
        /// The upstream environment.
        from: String,
        /// Why it is suspect.
        reason: String,
    },
    /// The SHA is quarantined in the target.
    #[error("{} is quarantined in {target} ({reason}): clear it before promoting it again", .sha.short())]
    Quarantined {
        /// The SHA.
        sha: Sha,
        /// The target environment.
        target: String,
        /// Why it was quarantined.
        reason: String,
    },
    /// The SHA is suspect in the target.
    #[error("{} is suspect in {target} ({reason})", .sha.short())]
    SuspectInTarget {
        /// The SHA.
        sha: Sha,
        /// The target environment.
        target: String,
        /// Why it is suspect.
        reason: String,
    },
    /// The SHA already runs, validated, in the target.
    #[error("{} already runs, validated, in {target}: nothing to promote", .sha.short())]
    AlreadyValidated {
        /// The SHA.
        sha: Sha,
        /// The target environment.
        target: String,
    },
    /// No earlier validated SHA to roll back to.
    #[error("{location} has no earlier validated SHA in {environment} to roll back to")]
    NothingToRollBackTo {
        /// The code location.
        location: String,
        /// The environment.
        environment: String,
    },
    /// The SHA asked for may not be rolled back to.
    #[error("cannot roll back to {0}")]
    NotARollbackTarget(#[from] crate::lifecycle::NotARollbackTarget),
    /// The SHA asked for already runs.
    #[error("{} is what runs in {environment} already", .sha.short())]
    AlreadyRuns {
        /// The SHA.
        sha: Sha,
        /// The environment.
        environment: String,
    },
}

/// Why a promotion or a rollback did not go through.
#[derive(Debug, thiserror::Error)]
pub enum PromoteError {
    /// The rules refuse it.
    #[error(transparent)]
    Refused(#[from] Refusal),
    /// A Release, Environment or CodeLocation it needs does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The Release is managed by GitOps: a change here would be put back by the next
    /// sync; `change` is what to commit instead.
    #[error(
        "Release {release} is managed by GitOps: a change made here would be put back by the \
         next sync. Commit this to its manifest instead:\n\n{change}"
    )]
    ManagedByGitOps {
        /// `namespace/name`.
        release: String,
        /// The YAML to commit.
        change: String,
    },
    /// The Kubernetes API refused or did not answer.
    #[error("{what}: {source}")]
    Kubernetes {
        /// What was asked.
        what: String,
        /// The client's error.
        #[source]
        source: kube::Error,
    },
    /// The API server did not say who the caller is.
    #[error("the API server did not say who you are")]
    Anonymous,
    /// The control socket of `vigie run` could not be used.
    #[error(transparent)]
    Control(#[from] super::client::ControlError),
    /// `vigie run` answered with an error.
    #[error("{0}")]
    Answer(String),
    /// The commits between the two SHAs could not be listed.
    #[error(transparent)]
    Git(#[from] crate::git::GitError),
    /// The person did not type the confirmation word.
    #[error("not confirmed (expected {word}); nothing was changed")]
    NotConfirmed {
        /// The word asked for.
        word: &'static str,
    },
    /// The terminal could not be read or written.
    #[error("the terminal: {0}")]
    Terminal(#[from] std::io::Error),
    /// Nothing can be decided yet (`vigie run` has no valid manifests loaded).
    #[error("{0}")]
    NotReady(String),
    /// The decision could not be recorded; nothing changed.
    #[error("not recorded: {0}")]
    NotRecorded(String),
}

impl PromoteError {
    /// The kind of fault.
    #[must_use]
    pub fn category(&self) -> crate::error::Category {
        use crate::error::Category;
        match self {
            Self::Refused(_) | Self::ManagedByGitOps { .. } | Self::NotConfirmed { .. } => {
                Category::InvalidSpec
            }
            Self::NotFound(_) | Self::Answer(_) | Self::Anonymous => Category::InvalidSpec,
            Self::Kubernetes { .. }
            | Self::Control(_)
            | Self::Terminal(_)
            | Self::NotReady(_)
            | Self::NotRecorded(_) => Category::Transient,
            Self::Git(_) => Category::Forge,
        }
    }
}
