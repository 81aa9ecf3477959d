//! The Kubernetes client of `vigie controller`: client-side QPS/burst throttling (a
//! token bucket, as client-go's `--kube-api-qps`/`--kube-api-burst`) and a count of
//! every API request by verb, exported as `vigie_api_requests_total`.
//!
//! Two clients share the one bucket: the work of the reconcilers (status writes,
//! workloads) reserves tokens in order, and the background (Kubernetes Events, the
//! Environments' summaries) takes a token only when one is free and none is owed, so
//! that it never delays the work and the controller as a whole still keeps to the QPS.

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
        self.refill(now);
        self.tokens -= 1.0;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / self.qps)
        }
    }

    /// Takes a token only if one is free now (none reserved by waiting work):
    /// `Err` says how long until one would be, if no work came in between.
    pub fn take_free(&mut self, now: Instant) -> Result<(), Duration> {
        self.refill(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - self.tokens) / self.qps))
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.qps).min(self.burst);
    }
}

/// Whose request it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Priority {
    /// A reconciler's: reserves its token in order.
    Work,
    /// Waits for a free token: Events, summaries.
    Background,
}

/// Throttles and counts requests.
#[derive(Clone)]
pub struct ThrottleLayer {
    bucket: Arc<Mutex<Bucket>>,
    requests: Family<VerbLabel, Counter>,
    priority: Priority,
}

impl ThrottleLayer {
    /// `qps` requests per second after a `burst`; every request is counted in `requests`.
    #[must_use]
    pub fn new(qps: f64, burst: u32, requests: Family<VerbLabel, Counter>) -> Self {
        Self {
            bucket: Arc::new(Mutex::new(Bucket::new(qps, burst, Instant::now()))),
            requests,
            priority: Priority::Work,
        }
    }

    /// The same bucket and count, for the background.
    #[must_use]
    pub fn background(&self) -> Self {
        Self {
            priority: Priority::Background,
            ..self.clone()
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
            priority: self.priority,
        }
    }
}

/// The throttling service.
pub struct Throttle<S> {
    inner: S,
    bucket: Arc<Mutex<Bucket>>,
    requests: Family<VerbLabel, Counter>,
    priority: Priority,
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
        let bucket = self.bucket.clone();
        let priority = self.priority;
        // The inner future sends nothing until polled: waiting before polling it is
        // waiting before the request leaves.
        let sending = self.inner.call(req);
        Box::pin(async move {
            match priority {
                Priority::Work => {
                    let wait = bucket
                        .lock()
                        .map_or(Duration::ZERO, |mut b| b.take(Instant::now()));
                    if !wait.is_zero() {
                        tokio::time::sleep(wait).await;
                    }
                }
                Priority::Background => loop {
                    let free = bucket
                        .lock()
                        .map_or(Ok(()), |mut b| b.take_free(Instant::now()));
                    match free {
                        Ok(()) => break,
                        Err(wait) => tokio::time::sleep(wait).await,
                    }
                },
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
    fn the_background_takes_only_a_free_token_and_never_one_the_work_reserved() {
        let t0 = Instant::now();
        let mut b = Bucket::new(10.0, 2, t0);
        assert_eq!(
            b.take_free(t0),
            Ok(()),
            "a full bucket lends the background"
        );
        assert_eq!(b.take(t0), Duration::ZERO);
        // Empty: the background waits a tenth of a second for the next token.
        let w = b.take_free(t0).unwrap_err();
        assert!((w.as_secs_f64() - 0.1).abs() < 1e-9, "{w:?}");
        // Work reserves tokens ahead (0.1 s and 0.2 s from now): the background does not
        // take them when they come, only one after.
        assert!((b.take(t0).as_secs_f64() - 0.1).abs() < 1e-9);
        assert!((b.take(t0).as_secs_f64() - 0.2).abs() < 1e-9);
        let t1 = t0 + Duration::from_millis(150);
        let w = b.take_free(t1).unwrap_err();
        assert!((w.as_secs_f64() - 0.15).abs() < 1e-9, "{w:?}");
        let t2 = t0 + Duration::from_millis(300);
        assert_eq!(b.take_free(t2), Ok(()), "free once the work is served");
        // The background took its token: work coming now waits for the next one.
        assert!((b.take(t2).as_secs_f64() - 0.1).abs() < 1e-9);
        // Idle for long: both find the burst again, never more.
        let t3 = t2 + Duration::from_secs(10);
        assert_eq!(b.take_free(t3), Ok(()));
        assert_eq!(b.take_free(t3), Ok(()));
        assert!(b.take_free(t3).is_err(), "capped at the burst");
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
