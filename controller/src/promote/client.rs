//! Where `vigie promote` and `vigie rollback` send their questions: the control socket
//! of a running `vigie run`, or the Kubernetes API.

use std::path::{Path, PathBuf};

use serde_json::json;

use super::{Ask, Done, Kind, Plan, PromoteError};

/// The running Vigie a person talks to.
pub enum Desk {
    /// `vigie run`, through its control socket.
    Standalone(PathBuf),
    /// The operator's Releases in a namespace.
    Kubernetes(super::kubernetes::Cluster),
}

impl Desk {
    /// The plan a person confirms.
    ///
    /// # Errors
    /// Why it is refused, or the desk cannot be reached.
    pub async fn plan(&self, kind: Kind, ask: &Ask, cache: &Path) -> Result<Plan, PromoteError> {
        match self {
            Self::Standalone(socket) => {
                let query = serde_urlencoded(ask);
                let (status, body) = crate::standalone::control::request(
                    socket,
                    "GET",
                    &format!("{}?{query}", kind.path()),
                    None,
                )
                .await?;
                answer(status, body)
            }
            Self::Kubernetes(cluster) => cluster.plan(kind, ask, cache).await,
        }
    }

    /// Records the person's decision.
    ///
    /// # Errors
    /// Why it is refused, or the desk cannot be reached.
    pub async fn apply(&self, kind: Kind, ask: &Ask) -> Result<Done, PromoteError> {
        match self {
            Self::Standalone(socket) => {
                let (status, body) = crate::standalone::control::request(
                    socket,
                    "POST",
                    kind.path(),
                    Some(&json!(ask)),
                )
                .await?;
                answer(status, body)
            }
            Self::Kubernetes(cluster) => cluster.apply(kind, ask).await,
        }
    }
}

/// The answer of `vigie run`: what was asked for, or its error.
fn answer<T: serde::de::DeserializeOwned>(
    status: u16,
    body: serde_json::Value,
) -> Result<T, PromoteError> {
    if (200..300).contains(&status) {
        return serde_json::from_value(body)
            .map_err(|e| PromoteError::Answer(format!("unexpected answer: {e}")));
    }
    Err(PromoteError::Answer(
        body.get("error")
            .and_then(|e| e.as_str())
            .map_or_else(|| format!("HTTP {status}: {body}"), str::to_owned),
    ))
}

/// The query string of an ask (percent-encoded).
fn serde_urlencoded(ask: &Ask) -> String {
    let mut pairs = vec![
        ("location", ask.location.clone()),
        ("environment", ask.environment.clone()),
    ];
    if let Some(sha) = &ask.sha {
        pairs.push(("sha", sha.to_string()));
    }
    pairs
        .into_iter()
        .map(|(k, v)| format!("{k}={}", encode(&v)))
        .collect::<Vec<_>>()
        .join("&")
}

fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_are_encoded() {
        let ask = Ask {
            location: "my app".into(),
            environment: "prod&x".into(),
            ..Ask::default()
        };
        assert_eq!(
            serde_urlencoded(&ask),
            "location=my%20app&environment=prod%26x"
        );
    }
}
