//! `make bench-web`: how long the web view takes to answer with 50 code locations × 5
//! environments (250 Releases, each with a full history), over real HTTP on 127.0.0.1,
//! next to a baseline measured in the same run: a static asset of the same server
//! (same listener, same headers, no rendering). Prints medians, the 99th percentile and
//! the ratio; the goal (under 100 ms per page, one request) is reported, not asserted.

use std::{
    io::{Read as _, Write as _},
    net::TcpStream,
    sync::Arc,
    time::{Duration, Instant},
};

use futures::{FutureExt as _, future::BoxFuture};
use jiff::{SignedDuration, Timestamp};
use tokio::sync::watch;
use vigie::{
    api::{
        Phase, ReleaseStatus, Sha,
        release::{
            CiState, CiSummary, HistoryEntry, HistoryEvent, QuarantineCause, QuarantineEntry,
        },
    },
    promote::{Ask, Done, Kind, Plan, PromoteError},
    web::{
        Options, Web,
        ports::{self, Named, ReleaseView, Snapshot},
        session::Key,
    },
};

const LOCATIONS: usize = 50;
const ENVIRONMENTS: [&str; 5] = ["dev", "qa", "staging", "preprod", "prod"];
const HISTORY: usize = 40;
const ROUNDS: usize = 200;

fn sha(n: usize) -> Sha {
    format!("{n:040x}").parse().unwrap()
}

fn snapshot() -> Snapshot {
    let now = Timestamp::now();
    let environments = ENVIRONMENTS
        .iter()
        .enumerate()
        .map(|(i, name)| Named {
            namespace: "data".into(),
            name: (*name).into(),
            spec: serde_json::from_value(if i == 0 {
                serde_json::json!({"backend": {"docker": {}}})
            } else {
                serde_json::json!({"backend": {"docker": {}}, "promotion": {"from": ENVIRONMENTS[i - 1], "approval": "Manual"}})
            })
            .unwrap(),
        })
        .collect();
    let phases = [
        Phase::Validated,
        Phase::Verifying,
        Phase::RolledBack,
        Phase::AwaitingApproval,
        Phase::Failed,
    ];
    let mut releases = Vec::new();
    for l in 0..LOCATIONS {
        for (e, env) in ENVIRONMENTS.iter().enumerate() {
            let base = l * 1000 + e * 100;
            let history = (0..HISTORY)
                .map(|h| HistoryEntry {
                    at: now - SignedDuration::from_mins(i64::try_from((HISTORY - h) * 7).unwrap()),
                    event: [
                        HistoryEvent::Deployed,
                        HistoryEvent::Validated,
                        HistoryEvent::Deployed,
                        HistoryEvent::RolledBack,
                    ][h % 4],
                    sha: sha(base + h / 2),
                    previous: Some(sha(base + h / 2 + 1)),
                    by: (h % 5 == 0).then(|| "alice".to_owned()),
                    reason: Some("CI failed: tests".into()),
                    url: Some(format!("https://ci.example/{l}/{h}")),
                    output: None,
                })
                .collect();
            releases.push(ReleaseView {
                namespace: "data".into(),
                name: format!("loc{l}-{env}"),
                location: format!("loc{l}"),
                environment: (*env).into(),
                revision: Some(sha(base + 1).to_string()),
                status: ReleaseStatus {
                    phase: phases[(l + e) % phases.len()],
                    phase_since: Some(now),
                    message: Some("a sentence about the phase, as long as they usually are".into()),
                    desired_sha: Some(sha(base + 1)),
                    deployed_sha: Some(sha(base + 1)),
                    validated_sha: Some(sha(base)),
                    ci: Some(CiSummary {
                        sha: sha(base + 1),
                        state: CiState::Failure,
                        url: Some("https://ci.example/run/1".into()),
                        failed_checks: vec!["tests".into(), "lint".into()],
                        description: None,
                    }),
                    quarantine: vec![QuarantineEntry {
                        sha: sha(base + 2),
                        at: now,
                        reason: "CI failed".into(),
                        cause: QuarantineCause::CiFailed,
                        ci_passed_later: false,
                    }],
                    history,
                    ..ReleaseStatus::default()
                },
            });
        }
    }
    Snapshot {
        environments,
        locations: Vec::new(),
        releases,
        notices: Vec::new(),
    }
}

struct Board {
    snapshot: Snapshot,
    changes: watch::Sender<u64>,
}

impl ports::Board for Board {
    fn snapshot(&self) -> BoxFuture<'_, Result<Snapshot, String>> {
        let s = self.snapshot.clone();
        async move { Ok(s) }.boxed()
    }
    fn changes(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }
    fn commits(
        &self,
        _: &str,
        _: &str,
        _: &Sha,
        _: Option<&Sha>,
    ) -> BoxFuture<'_, Result<(Vec<vigie::git::Commit>, bool), String>> {
        async { Ok((Vec::new(), false)) }.boxed()
    }
}

struct Desk;

impl ports::Desk for Desk {
    fn plan(&self, _: Kind, _: &str, _: &Ask) -> BoxFuture<'_, Result<Plan, PromoteError>> {
        async { Err(PromoteError::NotReady("a benchmark".into())) }.boxed()
    }
    fn apply(
        &self,
        _: Kind,
        _: &str,
        _: &Ask,
        _: &str,
    ) -> BoxFuture<'_, Result<Done, PromoteError>> {
        async { Err(PromoteError::NotReady("a benchmark".into())) }.boxed()
    }
    fn clear_quarantine(
        &self,
        _: &str,
        _: &str,
        _: vigie::api::release::QuarantineClearance,
    ) -> BoxFuture<'_, Result<(), PromoteError>> {
        async { Err(PromoteError::NotReady("a benchmark".into())) }.boxed()
    }
}

/// One GET over a fresh connection: the time to the whole answer, and its size.
fn get(port: u16, path: &str) -> (Duration, usize) {
    let start = Instant::now();
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).unwrap();
    let took = start.elapsed();
    assert!(
        answer.starts_with(b"HTTP/1.1 200"),
        "{path}: {}",
        String::from_utf8_lossy(&answer[..60.min(answer.len())])
    );
    (took, answer.len())
}

fn measure(port: u16, path: &str) -> (Duration, Duration, usize) {
    let mut times: Vec<Duration> = Vec::with_capacity(ROUNDS);
    let mut size = 0;
    for _ in 0..10 {
        get(port, path);
    }
    for _ in 0..ROUNDS {
        let (t, s) = get(port, path);
        times.push(t);
        size = s;
    }
    times.sort();
    (times[ROUNDS / 2], times[ROUNDS * 99 / 100], size)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let port = listener.local_addr().unwrap().port();
    let web = Web::new(
        Arc::new(Board {
            snapshot: snapshot(),
            changes: watch::Sender::new(0),
        }),
        Arc::new(Desk),
        None,
        Options {
            key: Key::random(),
            user_header: None,
            secure: false,
        },
    );
    let limits = vigie::http::listener::Limits {
        header_timeout: Duration::from_secs(10),
        body_timeout: Duration::from_secs(30),
        max_connections: 512,
        max_per_peer: 512,
    };
    runtime.spawn(vigie::http::listener::serve(
        listener,
        vigie::web::router(web),
        limits,
        prometheus_client::metrics::family::Family::default(),
    ));
    println!(
        "web view, {LOCATIONS} code locations × {} environments ({} Releases, {HISTORY} history entries each), {ROUNDS} requests each, one connection per request:",
        ENVIRONMENTS.len(),
        LOCATIONS * ENVIRONMENTS.len()
    );
    let (base, base99, base_size) = measure(port, "/assets/app.css");
    println!(
        "  baseline  GET /assets/app.css           median {:7.2} ms  p99 {:7.2} ms  {base_size:>8} bytes",
        ms(base),
        ms(base99)
    );
    for (what, path) in [
        ("grid", "/"),
        ("grid part", "/fragments/board"),
        ("Release", "/releases/data/loc25-prod"),
    ] {
        let (median, p99, size) = measure(port, path);
        println!(
            "  {what:<9} GET {path:<30} median {:7.2} ms  p99 {:7.2} ms  {size:>8} bytes  {:5.1}× the baseline  (goal: under 100 ms: {})",
            ms(median),
            ms(p99),
            median.as_secs_f64() / base.as_secs_f64(),
            if p99 < Duration::from_millis(100) {
                "met"
            } else {
                "NOT met"
            }
        );
    }
}
