//! Credentials for GitHub's and GitLab's APIs, one place for every caller (polling,
//! reporting back to the forge): the token a CodeLocation's CI settings name.

use crate::{
    api::{
        SecretSource,
        code_location::{GitHubCi, GitLabCi},
    },
    secrets::SecretError,
};

/// Reads a secret the CI settings name.
pub type Resolve<'a> = dyn Fn(&SecretSource) -> Result<Vec<u8>, SecretError> + Sync + 'a;

/// Why no credential could be had.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The secret holding the token cannot be read.
    #[error("{what}: {source}")]
    Secret {
        /// Which credential (`ci.github.token`).
        what: &'static str,
        /// Why.
        #[source]
        source: SecretError,
    },
    /// The secret is not UTF-8 text.
    #[error("{what}: not UTF-8 text")]
    NotText {
        /// Which credential.
        what: &'static str,
    },
}

/// The credentials of the process: long-lived, one per process, shared by every
/// caller of the providers' APIs.
#[derive(Debug, Default)]
pub struct Auth;

fn read(
    what: &'static str,
    source: Option<&SecretSource>,
    resolve: &Resolve<'_>,
) -> Result<Option<String>, AuthError> {
    let Some(source) = source else {
        return Ok(None);
    };
    let bytes = resolve(source).map_err(|source| AuthError::Secret { what, source })?;
    let text = String::from_utf8(bytes).map_err(|_| AuthError::NotText { what })?;
    Ok(Some(text.trim().to_owned()))
}

impl Auth {
    /// The bearer token for GitHub's API; `None` to call it anonymously.
    ///
    /// # Errors
    /// A credential is named but cannot be had.
    #[allow(
        clippy::unused_async,
        reason = "credentials may need a request to the provider"
    )]
    pub async fn github(
        &self,
        ci: &GitHubCi,
        resolve: &Resolve<'_>,
    ) -> Result<Option<String>, AuthError> {
        read("ci.github.token", ci.token.as_ref(), resolve)
    }

    /// The `PRIVATE-TOKEN` for GitLab's API; `None` to call it anonymously.
    ///
    /// # Errors
    /// A credential is named but cannot be had.
    #[allow(
        clippy::unused_async,
        reason = "credentials may need a request to the provider"
    )]
    pub async fn gitlab(
        &self,
        ci: &GitLabCi,
        resolve: &Resolve<'_>,
    ) -> Result<Option<String>, AuthError> {
        read("ci.gitlab.token", ci.token.as_ref(), resolve)
    }
}
