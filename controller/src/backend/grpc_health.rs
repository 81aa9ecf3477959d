//! The gRPC health check of a running SHA: the unary call
//! `grpc.health.v1.Health/Check` over HTTP/2 without TLS (prior knowledge, no upgrade),
//! judged as Dagster judges its code servers, with a timeout per call and retries with
//! exponential backoff (`backon`), like the HTTP check.
//!
//! What `dagster api grpc-health-check -p PORT` does (Dagster 1.13,
//! `dagster/_cli/api.py` `grpc_health_check_command`, `dagster/_grpc/client.py`
//! `DagsterGrpcClient.health_check_query`, `dagster/_grpc/server.py`):
//! - it opens an insecure channel to `localhost:PORT` (`--host` to change it) and calls
//!   `HealthStub(channel).Check(HealthCheckRequest(service="DagsterApi"))`, with no
//!   deadline: a server that accepts the connection and never answers holds it forever;
//! - the code server (`dagster api grpc`, `dagster code-server start`) registers the
//!   stock `grpc_health.v1.health.HealthServicer` (which starts with `""`, the whole
//!   server, `SERVING`) and sets `"DagsterApi"` to `SERVING` once it has started;
//! - healthy only when the answer's status name is `SERVING`: the CLI then prints
//!   `gRPC connection successful` and exits 0. Any other status prints
//!   `Unable to connect to gRPC server: NOT_SERVING` (or `UNKNOWN`, `SERVICE_UNKNOWN`)
//!   and exits 1; a failed call (`NOT_FOUND` for a service the server does not know,
//!   `UNAVAILABLE` for a closed port) prints the `RpcError`, then
//!   `Unable to connect to gRPC server: 0` (the number of `UNKNOWN`), and exits 1;
//! - Dagster's Helm chart runs that command as the readiness probe of each code server
//!   (`exec`, `timeoutSeconds: 10`): there the kubelet bounds it.
//!
//! Vigie asks the same question and gives the same verdict, with the service of the
//! check (`DagsterApi` for a Dagster code server), but bounds each call by the check's
//! `timeout` and says why a call failed. `tests/grpc_health.rs` compares both verdicts
//! on real servers.

pub mod wire;

use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;

use self::wire::{Answer, ServingStatus, WireError};
use crate::{api::code_location::HealthCheck, backend::health::HealthError};

/// The address (`host:port`) checked for a port published on `host_ip:host_port`: the
/// loopback for an unspecified address, brackets around an IPv6 one.
#[must_use]
pub fn address(host_ip: &str, host_port: u16) -> String {
    match host_ip {
        "" | "0.0.0.0" => format!("127.0.0.1:{host_port}"),
        "::" => format!("[::1]:{host_port}"),
        ip if ip.contains(':') && !ip.starts_with('[') => format!("[{ip}]:{host_port}"),
        host => format!("{host}:{host_port}"),
    }
}

/// The most header (and trailer) bytes accepted in an answer.
const MAX_HEADERS: u32 = 16 * 1024;

/// What one finished exchange brought back, before it is judged.
#[derive(Debug, Default)]
struct Exchange {
    status: StatusCode,
    headers: HeaderMap,
    body: Vec<u8>,
    /// The body went past [`wire::MAX_BODY`]: the rest was not read.
    oversize: bool,
    trailers: Option<HeaderMap>,
}

impl Exchange {
    /// The call's answer: its `grpc-status` from the trailers, else from the headers (a
    /// trailers-only answer).
    fn answer(&self) -> Result<Answer, WireError> {
        wire::check_head(
            self.status.as_u16(),
            self.headers
                .get(header::CONTENT_TYPE)
                .map(http::HeaderValue::as_bytes),
        )?;
        if self.oversize {
            return Err(WireError::BodyTooLarge);
        }
        let source = match &self.trailers {
            Some(t) if t.contains_key("grpc-status") => t,
            _ => &self.headers,
        };
        wire::answer(
            source.get("grpc-status").map(http::HeaderValue::as_bytes),
            source.get("grpc-message").map(http::HeaderValue::as_bytes),
            &self.body,
        )
    }
}

/// Aborts the task driving the connection when the call is over or abandoned.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// One `Health/Check` exchange with `address`, the body read up to [`wire::MAX_BODY`].
/// Unbounded in time: [`once`] bounds it.
async fn exchange(address: &str, service: &str) -> Result<Exchange, String> {
    let stream = TcpStream::connect(address)
        .await
        .map_err(|e| format!("failed to connect: {e}"))?;
    let _ = stream.set_nodelay(true);
    let (mut sender, connection) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .max_header_list_size(MAX_HEADERS)
        .handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("failed to start HTTP/2: {}", chain(&e)))?;
    let _driver = AbortOnDrop(tokio::spawn(async move {
        let _ = connection.await;
    }));
    let request = Request::post(format!("http://{address}{}", wire::PATH))
        .header(header::CONTENT_TYPE, "application/grpc")
        .header(header::TE, "trailers")
        .header("grpc-accept-encoding", "identity")
        .header(
            header::USER_AGENT,
            concat!("vigie/", env!("CARGO_PKG_VERSION")),
        )
        .body(Full::new(Bytes::from(wire::request(service))))
        .map_err(|e| format!("failed to build the request: {e}"))?;
    let response = sender.send_request(request).await.map_err(|e| {
        format!(
            "the HTTP/2 exchange failed (is it a gRPC server?): {}",
            chain(&e)
        )
    })?;
    let (head, mut body) = response.into_parts();
    let mut exchange = Exchange {
        status: head.status,
        headers: head.headers,
        ..Exchange::default()
    };
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| format!("failed to read the answer: {}", chain(&e)))?;
        match frame.into_data() {
            Ok(data) => {
                if exchange.body.len() + data.len() > wire::MAX_BODY {
                    exchange.oversize = true;
                    break;
                }
                exchange.body.extend_from_slice(&data);
            }
            Err(frame) => {
                if let Ok(trailers) = frame.into_trailers() {
                    exchange.trailers = Some(trailers);
                }
            }
        }
    }
    Ok(exchange)
}

fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let more = s.to_string();
        if !text.contains(&more) {
            text = format!("{text}: {more}");
        }
        source = s.source();
    }
    text
}

/// The verdict on an answer: `Ok` only for `SERVING`.
fn judge(address: &str, service: &str, answer: Answer) -> Result<(), HealthError> {
    match answer {
        Answer::Status(ServingStatus::Serving) => Ok(()),
        Answer::Status(ServingStatus::ServiceUnknown)
        | Answer::Failed {
            code: wire::NOT_FOUND,
            ..
        } => Err(HealthError::GrpcServiceUnknown {
            address: address.to_owned(),
            service: service.to_owned(),
        }),
        Answer::Status(status) => Err(HealthError::GrpcNotServing {
            address: address.to_owned(),
            service: service.to_owned(),
            status: status.to_string(),
        }),
        Answer::Failed { code, message } => Err(HealthError::GrpcStatus {
            address: address.to_owned(),
            code,
            message,
        }),
    }
}

/// One call, bounded by `timeout`: `Ok` when the server answers `SERVING` for
/// `service`, else why not.
async fn once(address: &str, service: &str, timeout: Duration) -> Result<(), HealthError> {
    let unanswered = |reason: String| HealthError::GrpcUnanswered {
        address: address.to_owned(),
        reason,
    };
    let exchange = tokio::time::timeout(timeout, exchange(address, service))
        .await
        .map_err(|_| unanswered(format!("no answer within {timeout:?}")))?
        .map_err(unanswered)?;
    let answer = exchange.answer().map_err(|e| HealthError::GrpcMalformed {
        address: address.to_owned(),
        reason: e.to_string(),
    })?;
    judge(address, service, answer)
}

/// Checks the gRPC server at `address` (`host:port`) with the retries of `hc`: `Ok` as
/// soon as one call answers `SERVING` for the service of `hc.grpc` (the whole server
/// when unset), else the reason of the last failure.
///
/// # Errors
/// The last call's failure.
pub async fn check(address: &str, hc: &HealthCheck) -> Result<(), HealthError> {
    let service = hc.grpc.as_ref().map_or("", |g| g.service.as_str());
    let backoff = ExponentialBuilder::default()
        .with_min_delay(hc.interval.get())
        .with_factor(2.0)
        .with_max_times(usize::try_from(hc.retries).unwrap_or(usize::MAX));
    (|| once(address, service, hc.timeout.get()))
        .retry(backoff)
        .await
}

#[cfg(test)]
mod tests {
    use std::sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    };

    use tokio::{
        io::{AsyncReadExt, AsyncWriteExt},
        net::TcpListener,
    };

    use super::*;
    use crate::api::code_location::GrpcHealthCheck;

    fn hc(service: &str, retries: u32) -> HealthCheck {
        HealthCheck {
            path: "/".into(),
            port: None,
            expected_status: 200,
            expected_body: None,
            grpc: Some(GrpcHealthCheck {
                service: service.into(),
            }),
            timeout: "300ms".parse().unwrap(),
            retries,
            interval: "10ms".parse().unwrap(),
        }
    }

    /// How the test server answers each call.
    #[derive(Clone, Copy)]
    enum Reply {
        /// `grpc-status: 0` and a `HealthCheckResponse` with this status.
        Status(u8),
        /// A trailers-only answer with this `grpc-status` and message.
        Fail(u32, &'static str),
        /// HTTP 200 with `text/plain`.
        NotGrpc,
        /// A body with a compressed flag.
        Compressed,
        /// Headers, then nothing ever.
        Stall,
        /// A message longer than any health answer, in several frames.
        Huge,
    }

    /// An HTTP/2 server (hyper's) answering each call with the next reply, and
    /// counting calls and checking each request's shape.
    async fn server(
        replies: Vec<Reply>,
        expected_service: &'static str,
    ) -> (String, Arc<AtomicUsize>) {
        use http_body_util::StreamBody;
        use hyper::body::{Frame, Incoming};

        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let calls = Arc::new(AtomicUsize::new(0));
        let counter = calls.clone();
        tokio::spawn(async move {
            loop {
                let Ok((socket, _)) = listener.accept().await else {
                    return;
                };
                let replies = replies.clone();
                let counter = counter.clone();
                let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                    let reply = replies[counter
                        .fetch_add(1, Ordering::SeqCst)
                        .min(replies.len() - 1)];
                    async move {
                        assert_eq!(request.uri().path(), wire::PATH);
                        assert_eq!(request.headers()["content-type"], "application/grpc");
                        assert_eq!(request.headers()["te"], "trailers");
                        let body = request.into_body().collect().await.unwrap().to_bytes();
                        assert_eq!(body.as_ref(), wire::request(expected_service));
                        let data = |bytes: Vec<u8>| Frame::data(Bytes::from(bytes));
                        let mut ok = HeaderMap::new();
                        ok.insert("grpc-status", "0".parse().unwrap());
                        let ok = Frame::trailers(ok);
                        let (content_type, head, frames): (_, Vec<(_, String)>, Vec<_>) =
                            match reply {
                                Reply::Status(s) => (
                                    "application/grpc",
                                    vec![],
                                    vec![data(wire::frame(&[0x08, s])), ok],
                                ),
                                Reply::Fail(code, message) => (
                                    "application/grpc",
                                    vec![
                                        ("grpc-status", code.to_string()),
                                        ("grpc-message", message.into()),
                                    ],
                                    vec![],
                                ),
                                Reply::NotGrpc => {
                                    ("text/plain", vec![], vec![data(b"hello".to_vec())])
                                }
                                Reply::Compressed => (
                                    "application/grpc",
                                    vec![],
                                    vec![data(vec![1, 0, 0, 0, 2, 0x08, 1]), ok],
                                ),
                                Reply::Huge => (
                                    "application/grpc",
                                    vec![],
                                    vec![data(vec![0; wire::MAX_BODY]), data(vec![0; 10]), ok],
                                ),
                                Reply::Stall => {
                                    tokio::time::sleep(Duration::from_secs(30)).await;
                                    ("application/grpc", vec![], vec![])
                                }
                            };
                        let mut response =
                            http::Response::builder().header("content-type", content_type);
                        for (name, value) in head {
                            response = response.header(name, value);
                        }
                        Ok::<_, std::convert::Infallible>(
                            response
                                .body(StreamBody::new(futures::stream::iter(
                                    frames.into_iter().map(Ok::<_, std::convert::Infallible>),
                                )))
                                .unwrap(),
                        )
                    }
                });
                tokio::spawn(async move {
                    let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(socket), service)
                        .await;
                });
            }
        });
        (address, calls)
    }

    #[test]
    fn unspecified_and_ipv6_addresses_are_written_to_connect() {
        assert_eq!(address("", 4000), "127.0.0.1:4000");
        assert_eq!(address("0.0.0.0", 4000), "127.0.0.1:4000");
        assert_eq!(address("::", 4000), "[::1]:4000");
        assert_eq!(address("fd00::5", 4000), "[fd00::5]:4000");
        assert_eq!(address("10.0.0.7", 4000), "10.0.0.7:4000");
        assert_eq!(address("machine.lan", 4000), "machine.lan:4000");
    }

    #[tokio::test]
    async fn serving_passes_and_retries_wait_for_it() {
        let (address, calls) = server(
            vec![
                Reply::Fail(5, "unknown service"),
                Reply::Status(2),
                Reply::Status(1),
            ],
            "DagsterApi",
        )
        .await;
        check(&address, &hc("DagsterApi", 3)).await.unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        let (address, _) = server(vec![Reply::Status(1)], "").await;
        check(&address, &hc("", 0)).await.unwrap();
    }

    #[tokio::test]
    async fn every_other_answer_is_unhealthy_and_says_why() {
        for (reply, service, expected) in [
            (
                Reply::Status(2),
                "DagsterApi",
                "service \"DagsterApi\" is NOT_SERVING",
            ),
            (Reply::Status(0), "", "the whole server is UNKNOWN"),
            (
                Reply::Status(3),
                "api",
                "the server knows no service \"api\"",
            ),
            (
                Reply::Fail(5, "unknown%20service"),
                "api",
                "the server knows no service \"api\"",
            ),
            (
                Reply::Fail(14, "draining"),
                "",
                "failed with UNAVAILABLE (14): draining",
            ),
            (Reply::Fail(12, ""), "", "failed with UNIMPLEMENTED (12)"),
            (
                Reply::NotGrpc,
                "",
                "answered content-type \"text/plain\", not application/grpc",
            ),
            (
                Reply::Compressed,
                "",
                "the message is compressed, though Vigie accepts only the identity encoding",
            ),
            (Reply::Stall, "", "no answer within 300ms"),
            (Reply::Huge, "", "an answer over 8202 bytes"),
        ] {
            let (address, calls) = server(vec![reply], service).await;
            let e = check(&address, &hc(service, 0)).await.unwrap_err();
            assert_eq!(calls.load(Ordering::SeqCst), 1);
            assert_eq!(
                e.to_string(),
                format!("gRPC Health/Check on {address}: {expected}"),
            );
        }
    }

    #[tokio::test]
    async fn a_closed_port_is_unanswered() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap().to_string();
        drop(listener);
        let e = check(&address, &hc("", 1)).await.unwrap_err();
        assert!(matches!(e, HealthError::GrpcUnanswered { .. }), "{e}");
        assert!(
            e.to_string().starts_with(&format!(
                "gRPC Health/Check on {address}: failed to connect:"
            )),
            "{e}"
        );
    }

    /// Raw TCP servers: one that never says a word, one that answers HTTP/1.1, one
    /// that sends garbage; each call ends within the timeout with the reason.
    #[tokio::test]
    async fn silent_http1_and_garbage_servers_fail_within_the_timeout() {
        for (reply, expected) in [
            (&b""[..], "no answer within 300ms"),
            (
                b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                "is it a gRPC server?",
            ),
            (
                &[0xde, 0xad, 0xbe, 0xef, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
                "is it a gRPC server?",
            ),
        ] {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let address = listener.local_addr().unwrap().to_string();
            tokio::spawn(async move {
                while let Ok((mut socket, _)) = listener.accept().await {
                    tokio::spawn(async move {
                        let mut buf = [0_u8; 1024];
                        let _ = socket.read(&mut buf).await;
                        if reply.is_empty() {
                            tokio::time::sleep(Duration::from_secs(30)).await;
                        } else {
                            let _ = socket.write_all(reply).await;
                        }
                    });
                }
            });
            let started = std::time::Instant::now();
            let e = check(&address, &hc("", 0)).await.unwrap_err();
            assert!(started.elapsed() < Duration::from_secs(2), "{e}");
            assert!(matches!(e, HealthError::GrpcUnanswered { .. }), "{e}");
            assert!(e.to_string().contains(expected), "{expected}: {e}");
        }
    }
}
