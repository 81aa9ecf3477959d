//! Serving HTTP to whoever can reach the port, with every connection bounded.
//!
//! `/hooks/*` answers anyone, so nothing a peer sends may hold a connection, a task or a
//! file descriptor for long: the request head must arrive within
//! [`Limits::header_timeout`] (an idle keep-alive connection included), the body within
//! [`Limits::body_timeout`], and connections are counted per peer address and in all.
//! A connection over either bound is closed as soon as it is accepted. The bound in all
//! stays under the process's open-file limit ([`Limits::within_open_files`]), so the
//! state file, git and the Docker engine always find a descriptor: a flood of
//! connections can delay a webhook, never a deploy or a rollback.

use std::{
    collections::HashMap,
    future::Future,
    io,
    net::IpAddr,
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
    time::Duration,
};

use axum::{Router, body::Body};
use bytes::Bytes;
use http_body::{Frame, SizeHint};
use hyper::{body::Incoming, server::conn::http1, service::service_fn};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::{
    net::{TcpListener, TcpStream},
    sync::{OwnedSemaphorePermit, Semaphore},
    time::Sleep,
};
use tower::ServiceExt as _;

use prometheus_client::metrics::{counter::Counter, family::Family};

use crate::metrics::RejectionLabel;

/// Descriptors kept for everything but HTTP connections (state file, git, Docker
/// engine, Kubernetes API, notifications, hook output), whatever the open-file limit.
pub const RESERVED_FILES: u64 = 256;

/// The bounds of every connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Time a request head (line and headers) may take to arrive, counted from the
    /// first byte awaited: after a connection opens and between keep-alive requests.
    pub header_timeout: Duration,
    /// Time a request body may take to arrive, counted from its head.
    pub body_timeout: Duration,
    /// Connections open at once, from everyone.
    pub max_connections: usize,
    /// Connections open at once from one peer address.
    pub max_per_peer: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            max_connections: 512,
            max_per_peer: 32,
        }
    }
}

impl Limits {
    /// These limits with the bound in all lowered so that `open_files` (the soft
    /// open-file limit) keeps [`RESERVED_FILES`] descriptors, and half of what is left
    /// at the least, for everything else; at least one connection stays possible.
    #[must_use]
    pub fn within_open_files(self, open_files: u64) -> Self {
        let spare = open_files
            .saturating_sub(RESERVED_FILES)
            .min(open_files / 2);
        let fit = usize::try_from(spare).unwrap_or(usize::MAX).max(1);
        let max_connections = self.max_connections.min(fit).max(1);
        Self {
            max_connections,
            max_per_peer: self.max_per_peer.clamp(1, max_connections),
            ..self
        }
    }
}

/// Raises the soft open-file limit to the hard one (a service started with the usual
/// soft limit of 1024 would otherwise run out first) and returns the soft limit in force.
#[must_use]
pub fn raise_open_files() -> u64 {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => n,
        Err(e) => {
            tracing::warn!(error = %e, "failed to read or raise the open-file limit");
            rlimit::getrlimit(rlimit::Resource::NOFILE).map_or(1024, |(soft, _)| soft)
        }
    }
}

/// Connections open now, in all and by peer.
struct Gate {
    all: Arc<Semaphore>,
    peers: Mutex<HashMap<IpAddr, usize>>,
    max_per_peer: usize,
}

/// A connection's place in the [`Gate`], given back when it closes.
struct Admitted {
    gate: Arc<Gate>,
    peer: IpAddr,
    _all: OwnedSemaphorePermit,
}

/// Why a connection was closed at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Refusal {
    /// The bound in all is reached.
    Full,
    /// The peer's bound is reached.
    Peer,
}

impl Refusal {
    fn label(self) -> &'static str {
        match self {
            Self::Full => "max_connections",
            Self::Peer => "max_per_peer",
        }
    }
}

impl Gate {
    fn admit(self: &Arc<Self>, peer: IpAddr) -> Result<Admitted, Refusal> {
        let mut peers = self
            .peers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let open = peers.entry(peer).or_insert(0);
        if *open >= self.max_per_peer {
            return Err(Refusal::Peer);
        }
        let all = self
            .all
            .clone()
            .try_acquire_owned()
            .map_err(|_| Refusal::Full)?;
        *open += 1;
        Ok(Admitted {
            gate: self.clone(),
            peer,
            _all: all,
        })
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut peers = self
            .gate
            .peers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(open) = peers.get_mut(&self.peer) {
            *open = open.saturating_sub(1);
            if *open == 0 {
                peers.remove(&self.peer);
            }
        }
    }
}

/// Serves `app` on `listener` until the task is dropped, within `limits`; refused
/// connections are counted in `refused` (`vigie_http_connections_refused_total`).
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    refused: Family<RejectionLabel, Counter>,
) {
    let gate = Arc::new(Gate {
        all: Arc::new(Semaphore::new(limits.max_connections)),
        peers: Mutex::new(HashMap::new()),
        max_per_peer: limits.max_per_peer,
    });
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                accept_failed(&e).await;
                continue;
            }
        };
        let admitted = match gate.admit(peer.ip()) {
            Ok(a) => a,
            Err(refusal) => {
                refused
                    .get_or_create(&RejectionLabel {
                        reason: refusal.label(),
                    })
                    .inc();
                tracing::debug!(peer = %peer, reason = refusal.label(), "refused an HTTP connection");
                drop(stream);
                continue;
            }
        };
        tokio::spawn(connection(stream, app.clone(), limits, admitted));
    }
}

/// A failed accept: out of descriptors (or another transient fault), waits a moment
/// rather than spin, as the other side of the bound in [`Limits::within_open_files`].
async fn accept_failed(e: &io::Error) {
    match e.kind() {
        io::ErrorKind::ConnectionAborted
        | io::ErrorKind::ConnectionReset
        | io::ErrorKind::Interrupted => {}
        _ => {
            tracing::warn!(error = %e, "failed to accept an HTTP connection");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

async fn connection(stream: TcpStream, app: Router, limits: Limits, admitted: Admitted) {
    let _ = stream.set_nodelay(true);
    let body_timeout = limits.body_timeout;
    let service = service_fn(move |request: hyper::Request<Incoming>| {
        let request = request.map(|body| Body::new(Deadline::new(body, body_timeout)));
        app.clone().oneshot(request)
    });
    let served = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .serve_connection(TokioIo::new(stream), service)
        .await;
    if let Err(e) = served {
        tracing::debug!(error = %e, "HTTP connection closed");
    }
    drop(admitted);
}

/// A request body that fails once its deadline passes, however it trickles in.
struct Deadline<B> {
    inner: B,
    deadline: Pin<Box<Sleep>>,
}

impl<B> Deadline<B> {
    fn new(inner: B, within: Duration) -> Self {
        Self {
            inner,
            deadline: Box::pin(tokio::time::sleep(within)),
        }
    }
}

/// The body did not arrive in time.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive in time")]
pub struct BodyTimeout;

impl<B> http_body::Body for Deadline<B>
where
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: Into<axum::BoxError>,
{
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if let Poll::Ready(frame) = Pin::new(&mut self.inner).poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        if self.deadline.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Some(Err(BodyTimeout.into())));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use std::{
        io::{Read, Write},
        net::{SocketAddr, TcpStream as StdStream},
        time::Instant,
    };

    use axum::routing::{get, post};

    use super::*;
    use crate::metrics::Metrics;

    const SHORT: Limits = Limits {
        header_timeout: Duration::from_millis(600),
        body_timeout: Duration::from_millis(900),
        max_connections: 8,
        max_per_peer: 3,
    };

    async fn server(limits: Limits) -> (SocketAddr, Arc<Metrics>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = Router::new()
            .route("/healthz", get(|| async { "ok\n" }))
            .route(
                "/echo",
                post(|body: Bytes| async move { format!("{} bytes", body.len()) }),
            );
        let metrics = Arc::new(Metrics::default());
        tokio::spawn(serve(listener, app, limits, metrics.http_refused.clone()));
        (addr, metrics)
    }

    /// A client connection from `from` (any address of 127.0.0.0/8).
    fn connect(addr: SocketAddr, from: [u8; 4]) -> StdStream {
        let socket =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        socket
            .bind(&SocketAddr::from((from, 0)).into())
            .expect("binding a loopback address");
        socket.connect(&addr.into()).unwrap();
        let stream = StdStream::from(socket);
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        stream
    }

    /// Reads until the server closes; the time it took and what came.
    fn until_closed(mut s: StdStream) -> (Duration, String) {
        let start = Instant::now();
        let mut got = Vec::new();
        let mut buf = [0; 1024];
        loop {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
        (start.elapsed(), String::from_utf8_lossy(&got).into_owned())
    }

    fn get_healthz(addr: SocketAddr, from: [u8; 4]) -> String {
        let mut s = connect(addr, from);
        s.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            .unwrap();
        until_closed(s).1
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_head_that_never_ends_is_closed_after_the_header_timeout() {
        let (addr, _) = server(SHORT).await;
        let (took, got) = tokio::task::spawn_blocking(move || {
            let mut s = connect(addr, [127, 0, 0, 1]);
            s.write_all(b"POST /echo HTTP/1.1\r\nhost: x\r\n").unwrap();
            until_closed(s)
        })
        .await
        .unwrap();
        assert!(took < Duration::from_secs(3), "held for {took:?}");
        assert!(!got.contains("200"), "{got}");
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_connection_that_sends_nothing_and_an_idle_keep_alive_one_are_closed() {
        let (addr, _) = server(SHORT).await;
        let (silent, idle) = tokio::task::spawn_blocking(move || {
            let silent = until_closed(connect(addr, [127, 0, 0, 1])).0;
            let mut s = connect(addr, [127, 0, 0, 1]);
            s.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
                .unwrap();
            let (idle, got) = until_closed(s);
            assert!(got.starts_with("HTTP/1.1 200"), "{got}");
            (silent, idle)
        })
        .await
        .unwrap();
        assert!(silent < Duration::from_secs(3), "silent held {silent:?}");
        assert!(idle < Duration::from_secs(3), "idle held {idle:?}");
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_body_that_trickles_in_is_cut_at_the_body_timeout() {
        let (addr, _) = server(SHORT).await;
        let took = tokio::task::spawn_blocking(move || {
            let mut s = connect(addr, [127, 0, 0, 1]);
            s.write_all(b"POST /echo HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\n")
                .unwrap();
            let start = Instant::now();
            // One byte every 200 ms: never idle for long, never done within 900 ms.
            for _ in 0..40 {
                if s.write_all(b"x").is_err() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(200));
                if start.elapsed() > Duration::from_secs(6) {
                    break;
                }
            }
            let (_, got) = until_closed(s);
            assert!(!got.contains("100 bytes"), "{got}");
            start.elapsed()
        })
        .await
        .unwrap();
        assert!(took < Duration::from_secs(4), "held {took:?}");
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_request_in_time_is_served() {
        let (addr, _) = server(SHORT).await;
        let got = tokio::task::spawn_blocking(move || {
            let mut s = connect(addr, [127, 0, 0, 1]);
            s.write_all(b"POST /echo HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\nconnection: close\r\n\r\nhello")
                .unwrap();
            until_closed(s).1
        })
        .await
        .unwrap();
        assert!(got.contains("5 bytes"), "{got}");
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn one_peer_cannot_take_every_connection() {
        let limits = Limits {
            header_timeout: Duration::from_secs(30),
            ..SHORT
        };
        let (addr, metrics) = server(limits).await;
        let answered = tokio::task::spawn_blocking(move || {
            // 127.0.0.2 opens ten connections and sends nothing: three are held.
            let held: Vec<_> = (0..10).map(|_| connect(addr, [127, 0, 0, 2])).collect();
            std::thread::sleep(Duration::from_millis(200));
            let answered = get_healthz(addr, [127, 0, 0, 1]);
            drop(held);
            answered
        })
        .await
        .unwrap();
        assert!(answered.starts_with("HTTP/1.1 200"), "{answered}");
        let rendered = metrics.render();
        assert!(
            rendered.contains(r#"vigie_http_connections_refused_total{reason="max_per_peer"} 7"#),
            "{rendered}"
        );
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn connections_beyond_the_bound_in_all_are_closed_at_once() {
        let limits = Limits {
            header_timeout: Duration::from_secs(30),
            ..SHORT
        };
        let (addr, metrics) = server(limits).await;
        tokio::task::spawn_blocking(move || {
            // Three peers hold eight connections between them (3 + 3 + 2).
            let mut held = Vec::new();
            for host in [2, 3, 4] {
                for _ in 0..3 {
                    held.push(connect(addr, [127, 0, 0, host]));
                }
            }
            std::thread::sleep(Duration::from_millis(200));
            let (took, _) = until_closed(connect(addr, [127, 0, 0, 5]));
            assert!(took < Duration::from_secs(1), "{took:?}");
            // One closes: a slot is free again.
            drop(held.pop());
            drop(held.remove(0));
            std::thread::sleep(Duration::from_millis(200));
            let answered = get_healthz(addr, [127, 0, 0, 1]);
            assert!(answered.starts_with("HTTP/1.1 200"), "{answered}");
        })
        .await
        .unwrap();
        assert!(
            metrics
                .render()
                .contains(r#"vigie_http_connections_refused_total{reason="max_connections"}"#)
        );
    }

    #[test]
    fn the_bound_in_all_keeps_descriptors_for_everything_else() {
        let limits = Limits::default();
        assert_eq!(limits.within_open_files(1_048_576).max_connections, 512);
        assert_eq!(limits.within_open_files(1024).max_connections, 512);
        assert_eq!(limits.within_open_files(600).max_connections, 300);
        assert_eq!(limits.within_open_files(400).max_connections, 144);
        assert_eq!(limits.within_open_files(256).max_connections, 1);
        assert_eq!(limits.within_open_files(0).max_connections, 1);
        let few = limits.within_open_files(300);
        assert_eq!(few.max_connections, 44);
        assert_eq!(few.max_per_peer, 32);
        assert_eq!(limits.within_open_files(280).max_per_peer, 24);
    }
}
