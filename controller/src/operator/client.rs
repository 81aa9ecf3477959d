//! The Kubernetes client of `vigie controller`: client-side QPS/burst throttling (a
//! token bucket, as client-go's `--kube-api-qps`/`--kube-api-burst`) and a count of
//! every API request by verb, exported as `vigie_api_requests_total`.

use std::{
    sync::{Arc, Mutex},
    task::{Context, Poll},
    time::{Duration, Instant},
};

use futures::future::BoxFuture;
use http::Request;
use prometheus_client::metrics::{counter::Counter, family::Family};
use tower::{Layer, Service};

use crate::metrics::VerbLabel;

/// A token bucket: `burst` requests at once, then `qps` per second.
#[derive(Debug)]
pub struct Bucket {
    qps: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl Bucket {
    /// A full bucket.
    #[must_use]
    pub fn new(qps: f64, burst: u32, now: Instant) -> Self {
        let burst = f64::from(burst.max(1));
        Self {
            qps: qps.max(0.001),
            burst,
            tokens: burst,
            last: now,
        }
    }

    /// Takes a token; returns how long the request must wait for it (tokens are
    /// reserved, so waiting requests leave in order).
    pub fn take(&mut self, now: Instant) -> Duration {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.qps).min(self.burst);
        self.tokens -= 1.0;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / self.qps)
        }
    }
}

/// Throttles and counts requests.
#[derive(Clone)]
pub struct ThrottleLayer {
    bucket: Arc<Mutex<Bucket>>,
    requests: Family<VerbLabel, Counter>,
}

impl ThrottleLayer {
    /// `qps` requests per second after a `burst`; every request is counted in `requests`.
    #[must_use]
    pub fn new(qps: f64, burst: u32, requests: Family<VerbLabel, Counter>) -> Self {
        Self {
            bucket: Arc::new(Mutex::new(Bucket::new(qps, burst, Instant::now()))),
            requests,
        }
    }
}

impl<S> Layer<S> for ThrottleLayer {
    type Service = Throttle<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Throttle {
            inner,
            bucket: self.bucket.clone(),
            requests: self.requests.clone(),
        }
    }
}

/// The throttling service.
pub struct Throttle<S> {
    inner: S,
    bucket: Arc<Mutex<Bucket>>,
    requests: Family<VerbLabel, Counter>,
}

/// The verb of a request, as the API server's audit log names it.
#[must_use]
pub fn verb(method: &http::Method, query: Option<&str>) -> &'static str {
    let watch = query.is_some_and(|q| q.split('&').any(|p| p == "watch=true" || p == "watch=1"));
    match *method {
        http::Method::GET if watch => "watch",
        http::Method::GET => "get",
        http::Method::POST => "create",
        http::Method::PUT => "update",
        http::Method::PATCH => "patch",
        http::Method::DELETE => "delete",
        _ => "other",
    }
}

impl<S, B> Service<Request<B>> for Throttle<S>
where
    S: Service<Request<B>> + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let verb = verb(req.method(), req.uri().query());
        tracing::trace!(verb, path = req.uri().path(), "API request");
        self.requests.get_or_create(&VerbLabel { verb }).inc();
        let wait = self
            .bucket
            .lock()
            .map_or(Duration::ZERO, |mut b| b.take(Instant::now()));
        // The inner future sends nothing until polled: waiting before polling it is
        // waiting before the request leaves.
        let sending = self.inner.call(req);
        Box::pin(async move {
            if !wait.is_zero() {
                tokio::time::sleep(wait).await;
            }
            sending.await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bucket_lets_a_burst_through_then_paces_at_qps() {
        let t0 = Instant::now();
        let mut b = Bucket::new(10.0, 3, t0);
        assert_eq!(b.take(t0), Duration::ZERO);
        assert_eq!(b.take(t0), Duration::ZERO);
        assert_eq!(b.take(t0), Duration::ZERO);
        let w = b.take(t0);
        assert!((w.as_secs_f64() - 0.1).abs() < 1e-9, "{w:?}");
        let w = b.take(t0);
        assert!(
            (w.as_secs_f64() - 0.2).abs() < 1e-9,
            "reserved in order: {w:?}"
        );
        // A second later the debt is paid and 8 tokens are back, capped at the burst.
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!(b.take(t1), Duration::ZERO);
        assert_eq!(b.take(t1), Duration::ZERO);
        assert_eq!(b.take(t1), Duration::ZERO);
        assert!(b.take(t1) > Duration::ZERO);
    }

    #[test]
    fn verbs_are_named_as_the_audit_log_names_them() {
        assert_eq!(
            verb(&http::Method::GET, Some("watch=true&resourceVersion=1")),
            "watch"
        );
        assert_eq!(verb(&http::Method::GET, Some("limit=500")), "get");
        assert_eq!(verb(&http::Method::GET, None), "get");
        assert_eq!(verb(&http::Method::PATCH, None), "patch");
        assert_eq!(verb(&http::Method::POST, None), "create");
        assert_eq!(verb(&http::Method::PUT, None), "update");
        assert_eq!(verb(&http::Method::DELETE, None), "delete");
    }
}
