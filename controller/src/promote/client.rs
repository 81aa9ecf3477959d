//! Where `vigie promote` and `vigie rollback` send their questions: the control socket
//! of a running `vigie run` (the client side is here; `standalone::control` serves
//! it), or the Kubernetes API.

use std::path::{Path, PathBuf};

use serde_json::json;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::UnixStream,
};

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
                let (status, body) =
                    request(socket, "GET", &format!("{}?{query}", kind.path()), None).await?;
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
                let (status, body) =
                    request(socket, "POST", kind.path(), Some(&json!(ask))).await?;
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

/// Why the control socket could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// Nothing listens there.
    #[error("cannot reach vigie run at {}: {source} (is it running, with this --state?)", .socket.display())]
    Unreachable {
        /// The socket.
        socket: std::path::PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The exchange broke off.
    #[error("the control socket: {0}")]
    Io(#[from] std::io::Error),
    /// The answer is not HTTP.
    #[error("the control socket gave no HTTP {0}")]
    NotHttp(&'static str),
}

/// One HTTP/1.1 exchange over the control socket; returns the status and the body.
///
/// # Errors
/// The socket cannot be reached (no `vigie run` there), or the answer is not HTTP.
pub async fn request(
    socket: &Path,
    method: &str,
    path_and_query: &str,
    body: Option<&serde_json::Value>,
) -> Result<(u16, serde_json::Value), ControlError> {
    let mut stream =
        UnixStream::connect(socket)
            .await
            .map_err(|source| ControlError::Unreachable {
                socket: socket.to_owned(),
                source,
            })?;
    let body = body.map(serde_json::Value::to_string).unwrap_or_default();
    let head = format!(
        "{method} {path_and_query} HTTP/1.1\r\nHost: vigie\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(format!("{head}{body}").as_bytes()).await?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await?;
    let split = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or(ControlError::NotHttp("answer"))?;
    let head = String::from_utf8_lossy(&answer[..split]).into_owned();
    let body = &answer[split + 4..];
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or(ControlError::NotHttp("status"))?;
    let chunked = head
        .lines()
        .any(|l| l.eq_ignore_ascii_case("transfer-encoding: chunked"));
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_vec()
    };
    let value = serde_json::from_slice(&body)
        .unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(&body).into_owned()));
    Ok((status, value))
}

/// The body of a chunked HTTP/1.1 answer.
fn dechunk(mut rest: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = rest.windows(2).position(|w| w == b"\r\n") {
        let Some(n) = std::str::from_utf8(&rest[..eol])
            .ok()
            .and_then(|s| usize::from_str_radix(s.trim(), 16).ok())
        else {
            break;
        };
        let after = &rest[eol + 2..];
        if n == 0 || after.len() < n {
            break;
        }
        out.extend_from_slice(&after[..n]);
        rest = after[n..].strip_prefix(b"\r\n").unwrap_or(&after[n..]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunked_bodies_are_joined() {
        assert_eq!(
            dechunk(b"4\r\n{\"a\"\r\n3\r\n:1}\r\n0\r\n\r\n"),
            b"{\"a\":1}"
        );
    }

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
