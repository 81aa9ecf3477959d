//! Reporting deployments back to the forge, so that a commit's page shows where it
//! runs: a GitHub Deployment per environment and SHA with its statuses (and optionally
//! a commit status `vigie/<environment>`), a GitLab deployment per environment and SHA.
//!
//! - [`rules`] (pure): what each SHA of a Release should show, from its recorded status;
//! - [`client`] (the edge): GitHub's and GitLab's REST APIs, the bodies built as data;
//! - [`report`]: the [`crate::reconcile::Forge`] port both modes pass to the pipeline,
//!   sending in the background with retries, never awaited by a reconcile.

pub mod client;
pub mod report;
pub mod rules;

pub use report::{Reporter, Resolve, Retry};

/// Vigie's public URL as given (`--public-url`): `http(s)://host[/path]`, without a
/// trailing slash.
///
/// # Errors
/// Not an http(s) URL with a host, or with a query or fragment.
pub fn public_url(given: &str) -> Result<String, String> {
    let trimmed = given.trim().trim_end_matches('/');
    let rest = trimmed
        .strip_prefix("https://")
        .or_else(|| trimmed.strip_prefix("http://"))
        .ok_or_else(|| format!("{given:?} is not an http:// or https:// URL"))?;
    if rest.is_empty() || rest.starts_with('/') {
        return Err(format!("{given:?} names no host"));
    }
    if rest.contains(['?', '#', ' ']) {
        return Err(format!(
            "{given:?} must not have a query, a fragment or spaces"
        ));
    }
    Ok(trimmed.to_owned())
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_public_url_is_checked_and_trimmed() {
        assert_eq!(
            super::public_url("https://vigie.example.com/").as_deref(),
            Ok("https://vigie.example.com")
        );
        assert_eq!(
            super::public_url("http://10.0.0.1:8080/vigie").as_deref(),
            Ok("http://10.0.0.1:8080/vigie")
        );
        for bad in ["vigie.example.com", "ftp://x", "https://", "https://x/?a=1"] {
            assert!(super::public_url(bad).is_err(), "{bad}");
        }
    }
}
