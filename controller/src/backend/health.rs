//! The HTTP health check of a running SHA: GET on the published port, expected
//! status and body substring, a timeout per request, retries with exponential
//! backoff (`backon`). The gRPC check ([`super::grpc_health`]) fails with the same
//! [`HealthError`].

use backon::{ExponentialBuilder, Retryable};

use crate::api::code_location::HealthCheck;

/// Bodies are read up to this size; a health endpoint has no reason to send more.
const MAX_BODY: usize = 64 * 1024;

/// The URL checked for a port published on `host_ip:host_port`.
#[must_use]
pub fn url(host_ip: &str, host_port: u16, path: &str) -> String {
    let host = if host_ip.is_empty() || host_ip == "0.0.0.0" {
        "127.0.0.1"
    } else {
        host_ip
    };
    format!("http://{host}:{host_port}{path}")
}

/// Where a health check goes, and which kind it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// An HTTP GET of this URL.
    Http(String),
    /// A gRPC `Health/Check` call to this `host:port`.
    Grpc(String),
}

impl Target {
    /// The check of `hc` for a port published on `host_ip:host_port`: gRPC when
    /// `hc.grpc` is set, else HTTP on `hc.path`.
    #[must_use]
    pub fn new(host_ip: &str, host_port: u16, hc: &HealthCheck) -> Self {
        if hc.grpc.is_some() {
            Self::Grpc(super::grpc_health::address(host_ip, host_port))
        } else {
            Self::Http(url(host_ip, host_port, &hc.path))
        }
    }
}

/// Runs the check of `hc` on `target`, with its retries.
///
/// # Errors
/// The last attempt's failure.
pub async fn probe(
    client: &reqwest::Client,
    target: &Target,
    hc: &HealthCheck,
) -> Result<(), HealthError> {
    match target {
        Target::Http(url) => check(client, url, hc).await,
        Target::Grpc(address) => super::grpc_health::check(address, hc).await,
    }
}

/// Why a health check failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HealthError {
    /// No answer in time, or the connection failed.
    #[error("GET {url}: {reason}")]
    Unanswered {
        /// The URL checked.
        url: String,
        /// Why.
        reason: String,
    },
    /// An answer with another status.
    #[error("GET {url} returned {got}, expected {expected}")]
    Status {
        /// The URL checked.
        url: String,
        /// The status received.
        got: u16,
        /// The status expected.
        expected: u16,
    },
    /// An answer whose body lacks the expected text.
    #[error("GET {url}: the body does not contain {expected:?}")]
    Body {
        /// The URL checked.
        url: String,
        /// The text expected.
        expected: String,
    },
    /// gRPC: no answer in time, or the connection or the HTTP/2 exchange failed.
    #[error("gRPC Health/Check on {address}: {reason}")]
    GrpcUnanswered {
        /// The `host:port` checked.
        address: String,
        /// Why.
        reason: String,
    },
    /// gRPC: an answer that is not a well-formed `Health/Check` response.
    #[error("gRPC Health/Check on {address}: {reason}")]
    GrpcMalformed {
        /// The `host:port` checked.
        address: String,
        /// What is wrong with it.
        reason: String,
    },
    /// gRPC: the call failed with a status other than OK (and other than `NOT_FOUND`).
    #[error(
        "gRPC Health/Check on {address}: failed with {} ({code}){}",
        super::grpc_health::wire::code_name(*.code),
        if .message.is_empty() { String::new() } else { format!(": {}", .message) }
    )]
    GrpcStatus {
        /// The `host:port` checked.
        address: String,
        /// The `grpc-status` code.
        code: u32,
        /// The `grpc-message`, decoded.
        message: String,
    },
    /// gRPC: the server does not know the service asked about (`NOT_FOUND`, as the
    /// health protocol answers, or `SERVICE_UNKNOWN`).
    #[error("gRPC Health/Check on {address}: the server knows no service {service:?}")]
    GrpcServiceUnknown {
        /// The `host:port` checked.
        address: String,
        /// The service asked about.
        service: String,
    },
    /// gRPC: the server answered a status other than `SERVING`.
    #[error("gRPC Health/Check on {address}: {} is {status}", subject(.service))]
    GrpcNotServing {
        /// The `host:port` checked.
        address: String,
        /// The service asked about (empty: the whole server).
        service: String,
        /// The status answered (`NOT_SERVING`, `UNKNOWN`, …).
        status: String,
    },
}

/// What a gRPC health check asks about, in words.
fn subject(service: &str) -> String {
    if service.is_empty() {
        "the whole server".to_owned()
    } else {
        format!("service {service:?}")
    }
}

/// One request: `Ok` when the status and body are as expected, else why not.
async fn once(client: &reqwest::Client, url: &str, hc: &HealthCheck) -> Result<(), HealthError> {
    let unanswered = |reason: String| HealthError::Unanswered {
        url: url.to_owned(),
        reason,
    };
    let mut response = client
        .get(url)
        .timeout(hc.timeout.get())
        .send()
        .await
        .map_err(|e| unanswered(without_url(&e)))?;
    let status = response.status().as_u16();
    let mut body = Vec::new();
    while body.len() < MAX_BODY {
        match response.chunk().await {
            Ok(Some(chunk)) => body.extend_from_slice(&chunk),
            Ok(None) => break,
            Err(e) => return Err(unanswered(format!("reading the body: {}", without_url(&e)))),
        }
    }
    if status != hc.expected_status {
        return Err(HealthError::Status {
            url: url.to_owned(),
            got: status,
            expected: hc.expected_status,
        });
    }
    if let Some(expected) = &hc.expected_body {
        let body = String::from_utf8_lossy(&body);
        if !body.contains(expected.as_str()) {
            return Err(HealthError::Body {
                url: url.to_owned(),
                expected: expected.clone(),
            });
        }
    }
    Ok(())
}

fn without_url(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    if let Some(source) = std::error::Error::source(e) {
        text = format!("{text}: {source}");
    }
    text
}

/// Checks `url` with the retries of `hc`: `Ok` as soon as one request passes, else the
/// reason of the last failure.
///
/// # Errors
/// The last request's failure.
pub async fn check(
    client: &reqwest::Client,
    url: &str,
    hc: &HealthCheck,
) -> Result<(), HealthError> {
    let backoff = ExponentialBuilder::default()
        .with_min_delay(hc.interval.get())
        .with_factor(2.0)
        .with_max_times(usize::try_from(hc.retries).unwrap_or(usize::MAX));
    (|| once(client, url, hc)).retry(backoff).await
}

#[cfg(test)]
mod tests {
    use std::sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    };

    use tokio::{io::AsyncWriteExt, net::TcpListener};

    use super::*;

    /// A server answering each connection with the next canned response.
    async fn server(responses: Vec<&'static str>) -> (String, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let hits = Arc::new(AtomicUsize::new(0));
        let counter = hits.clone();
        tokio::spawn(async move {
            loop {
                let Ok((mut socket, _)) = listener.accept().await else {
                    return;
                };
                let i = counter.fetch_add(1, Ordering::SeqCst);
                let response = responses[i.min(responses.len() - 1)];
                let mut buf = [0_u8; 1024];
                let _ = tokio::io::AsyncReadExt::read(&mut socket, &mut buf).await;
                let _ = socket.write_all(response.as_bytes()).await;
            }
        });
        (format!("http://{addr}/health"), hits)
    }

    fn hc(retries: u32) -> HealthCheck {
        HealthCheck {
            path: "/health".into(),
            port: None,
            expected_status: 200,
            expected_body: Some("ok".into()),
            grpc: None,
            timeout: "1s".parse().unwrap(),
            retries,
            interval: "10ms".parse().unwrap(),
        }
    }

    const OK: &str = "HTTP/1.1 200 OK\r\ncontent-length: 3\r\nconnection: close\r\n\r\nok\n";
    const FAIL: &str = "HTTP/1.1 500 Internal Server Error\r\ncontent-length: 5\r\nconnection: close\r\n\r\nfail\n";
    const WRONG_BODY: &str =
        "HTTP/1.1 200 OK\r\ncontent-length: 5\r\nconnection: close\r\n\r\nnope\n";

    #[tokio::test]
    async fn retries_until_healthy() {
        let (url, hits) = server(vec![FAIL, FAIL, OK]).await;
        check(&reqwest::Client::new(), &url, &hc(3)).await.unwrap();
        assert_eq!(hits.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn gives_up_after_the_retries_with_the_last_reason() {
        let (url, hits) = server(vec![FAIL]).await;
        let e = check(&reqwest::Client::new(), &url, &hc(2))
            .await
            .unwrap_err();
        assert_eq!(hits.load(Ordering::SeqCst), 3);
        assert!(
            matches!(
                e,
                HealthError::Status {
                    got: 500,
                    expected: 200,
                    ..
                }
            ),
            "{e}"
        );
        assert!(e.to_string().ends_with("returned 500, expected 200"), "{e}");
        let (url, _) = server(vec![WRONG_BODY]).await;
        let e = check(&reqwest::Client::new(), &url, &hc(0))
            .await
            .unwrap_err();
        assert!(
            e.to_string().ends_with("the body does not contain \"ok\""),
            "{e}"
        );
    }

    #[test]
    fn the_target_is_grpc_when_grpc_is_set() {
        let mut check = hc(0);
        assert_eq!(
            Target::new("0.0.0.0", 8080, &check),
            Target::Http("http://127.0.0.1:8080/health".into())
        );
        check.grpc = Some(crate::api::code_location::GrpcHealthCheck::default());
        assert_eq!(
            Target::new("0.0.0.0", 4000, &check),
            Target::Grpc("127.0.0.1:4000".into())
        );
        assert_eq!(
            Target::new("vm.example", 4000, &check),
            Target::Grpc("vm.example:4000".into())
        );
    }

    #[tokio::test]
    async fn a_closed_port_is_unhealthy() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let e = check(
            &reqwest::Client::new(),
            &url("127.0.0.1", port, "/health"),
            &hc(1),
        )
        .await
        .unwrap_err();
        assert!(matches!(e, HealthError::Unanswered { .. }), "{e}");
        assert!(
            e.to_string()
                .starts_with(&format!("GET http://127.0.0.1:{port}/health:")),
            "{e}"
        );
    }
}
