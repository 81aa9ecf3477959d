//! Notifications against real receivers on 127.0.0.1: HTTP servers that check each
//! service's documented payload shape, and a real SMTP server (aiosmtpd) that requires
//! STARTTLS and authentication and receives the email.

mod receiver;
mod skip;
mod smtp;

use receiver::Receiver;
use smtp::Smtpd;
use std::{
    path::PathBuf,
    time::{Duration, Instant},
};

use prometheus_client::metrics::{counter::Counter, family::Family};
use vigie::{
    api::{
        SecretSource,
        environment::{
            EmailSink, EventKind, GenericWebhookSink, NotificationSink, NtfySink, WebhookUrlSink,
        },
    },
    metrics::NotificationLabel,
    notify::{
        Message,
        deliver::{Dispatcher, Job, Resolve, Retry},
    },
};

fn message(event: EventKind) -> Message {
    Message {
        event,
        environment: "prod".into(),
        location: "app".into(),
        release: "default/app-prod".into(),
        sha: "b".repeat(40).parse().unwrap(),
        previous: Some("a".repeat(40).parse().unwrap()),
        reason: Some("CI failed: test (3.13)".into()),
        url: Some("https://ci.example/runs/7".into()),
        by: None,
        author: Some("Alice <alice@example.com>".into()),
        subject: Some("Fix the cache".into()),
        at: "2026-11-23T10:00:00Z".parse().unwrap(),
    }
}

fn sink(name: &str) -> NotificationSink {
    NotificationSink {
        name: name.into(),
        events: vec![],
        discord: None,
        ms_teams: None,
        slack: None,
        ntfy: None,
        email: None,
        webhook: None,
        kubernetes_events: None,
    }
}

/// Secrets as files would hold them: `literal:VALUE` stands for a file's content.
fn resolver() -> Resolve {
    vigie::notify::deliver::resolve_with(|_ns: &str, source: &SecretSource| match source {
        SecretSource::File(f) => f
            .strip_prefix("literal:")
            .map(|v| v.as_bytes().to_vec())
            .ok_or_else(|| vigie::secrets::SecretError::Unset(format!("no {f}"))),
        _ => Err(vigie::secrets::SecretError::Unset("unsupported".into())),
    })
}

fn url(u: &str) -> WebhookUrlSink {
    WebhookUrlSink {
        url: SecretSource::File(format!("literal:{u}")),
    }
}

fn fast() -> Retry {
    Retry {
        attempts: 4,
        first_delay: Duration::from_millis(200),
        max_delay: Duration::from_secs(2),
        timeout: Duration::from_secs(2),
    }
}

fn job(sinks: Vec<NotificationSink>, event: EventKind) -> Job {
    Job {
        namespace: "default".into(),
        sinks,
        message: message(event),
        repo: None,
    }
}

fn count(
    family: &Family<NotificationLabel, Counter>,
    sink: &'static str,
    outcome: &'static str,
) -> u64 {
    family
        .get_or_create(&NotificationLabel { sink, outcome })
        .get()
}

#[tokio::test(flavor = "multi_thread")]
#[allow(clippy::too_many_lines, reason = "one check per service, in order")]
async fn each_service_gets_its_documented_payload() {
    let discord = Receiver::start(&[(204, "")]);
    let teams = Receiver::start(&[(202, "")]);
    let slack = Receiver::start(&[(200, "")]);
    let ntfy = Receiver::start(&[(200, "")]);
    let hook = Receiver::start(&[(200, "")]);
    let sinks = vec![
        NotificationSink {
            discord: Some(url(&discord.url("/api/webhooks/123/t0ken"))),
            ..sink("discord")
        },
        NotificationSink {
            ms_teams: Some(url(
                &teams.url("/workflows/abc/triggers/manual/paths/invoke?sig=x")
            )),
            ..sink("teams")
        },
        NotificationSink {
            slack: Some(url(&slack.url("/services/T0/B0/xyz"))),
            ..sink("slack")
        },
        NotificationSink {
            ntfy: Some(NtfySink {
                server: ntfy.url("/"),
                topic: "deploys".into(),
                token: Some(SecretSource::File("literal:tk_ntfy".into())),
            }),
            ..sink("ntfy")
        },
        NotificationSink {
            webhook: Some(GenericWebhookSink {
                url: SecretSource::File(format!("literal:{}", hook.url("/vigie"))),
                signing_secret: Some(SecretSource::File("literal:hmac-key".into())),
            }),
            ..sink("hook")
        },
    ];
    let counts = Family::default();
    let d = Dispatcher::start(resolver(), None, counts.clone(), fast());
    d.send(job(sinks, EventKind::VerificationFailed));
    let t = Duration::from_secs(10);

    // Discord: `POST /api/webhooks/{id}/{token}` with embeds (title ≤ 256, ≤ 25 fields).
    let r = &discord.wait(1, t)[0];
    assert_eq!(r.path, "/api/webhooks/123/t0ken");
    assert_eq!(r.header("content-type"), Some("application/json"));
    let v = r.json();
    let embed = &v["embeds"][0];
    assert_eq!(
        embed["title"],
        "app bbbbbbb failed in prod; rolling back to aaaaaaa"
    );
    assert!(embed["title"].as_str().unwrap().chars().count() <= 256);
    assert!(embed["fields"].as_array().unwrap().len() <= 25);
    assert_eq!(embed["description"], "CI failed: test (3.13)");
    assert_eq!(embed["url"], "https://ci.example/runs/7");
    let commit = embed["fields"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == "Commit")
        .unwrap();
    assert_eq!(
        commit["value"],
        "bbbbbbb Fix the cache (Alice <alice@example.com>)"
    );

    // Teams workflow: a message with one Adaptive Card attachment.
    let v = teams.wait(1, t)[0].json();
    assert_eq!(v["type"], "message");
    let card = &v["attachments"][0];
    assert_eq!(
        card["contentType"],
        "application/vnd.microsoft.card.adaptive"
    );
    assert_eq!(card["content"]["type"], "AdaptiveCard");
    assert_eq!(
        card["content"]["$schema"],
        "http://adaptivecards.io/schemas/adaptive-card.json"
    );
    let facts = card["content"]["body"][1]["facts"].as_array().unwrap();
    assert!(
        facts
            .iter()
            .any(|f| f["title"] == "Environment" && f["value"] == "prod")
    );

    // Slack: `text` and blocks.
    let v = slack.wait(1, t)[0].json();
    assert!(!v["text"].as_str().unwrap().is_empty());
    assert_eq!(v["blocks"][0]["type"], "header");

    // ntfy: a JSON publish to the server's root, with the token.
    let r = &ntfy.wait(1, t)[0];
    assert_eq!(r.path, "/");
    assert_eq!(r.header("authorization"), Some("Bearer tk_ntfy"));
    let v = r.json();
    assert_eq!(v["topic"], "deploys");
    assert_eq!(v["click"], "https://ci.example/runs/7");
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .contains("Commit: bbbbbbb Fix the cache")
    );

    // The generic webhook: the message, signed.
    let r = &hook.wait(1, t)[0];
    assert_eq!(r.header("x-vigie-event"), Some("VerificationFailed"));
    assert!(r.header("x-vigie-delivery").is_some_and(|d| d.len() == 32));
    vigie::ci::webhook::verify(b"hmac-key", &r.body, r.header("x-vigie-signature"))
        .expect("a valid signature");
    let v = r.json();
    assert_eq!(v["release"], "default/app-prod");
    assert_eq!(v["previous"], "a".repeat(40));

    // Each sink counts its delivery once the receiver's answer is in.
    let kinds = ["discord", "msTeams", "slack", "ntfy", "webhook"];
    let start = Instant::now();
    while kinds.iter().any(|k| count(&counts, k, "delivered") == 0) && start.elapsed() < t {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for kind in kinds {
        assert_eq!(count(&counts, kind, "delivered"), 1, "{kind}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn failures_are_retried_refusals_are_not_and_filters_hold() {
    // 500, then 429 with Retry-After, then 204: delivered on the third attempt.
    let flaky = Receiver::start(&[(500, ""), (429, "Retry-After: 1\r\n"), (204, "")]);
    // 404: the URL is wrong; retrying would not help.
    let gone = Receiver::start(&[(404, "")]);
    // Only CI failures.
    let filtered = Receiver::start(&[(204, "")]);
    let counts = Family::default();
    let d = Dispatcher::start(resolver(), None, counts.clone(), fast());
    let sinks = vec![
        NotificationSink {
            discord: Some(url(&flaky.url("/api/webhooks/1/a"))),
            ..sink("flaky")
        },
        NotificationSink {
            slack: Some(url(&gone.url("/services/x"))),
            ..sink("gone")
        },
        NotificationSink {
            events: vec![EventKind::VerificationFailed],
            ms_teams: Some(url(&filtered.url("/t"))),
            ..sink("ci-failures-only")
        },
    ];
    d.send(job(sinks.clone(), EventKind::Validated));
    let got = flaky.wait(3, Duration::from_secs(15));
    assert_eq!(got.len(), 3);
    let start = Instant::now();
    while count(&counts, "discord", "delivered") == 0 && start.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(count(&counts, "discord", "delivered"), 1);
    assert_eq!(count(&counts, "slack", "failed"), 1);
    assert_eq!(gone.requests().len(), 1, "a 404 is not retried");
    assert!(filtered.requests().is_empty(), "Validated is filtered out");

    d.send(job(sinks, EventKind::VerificationFailed));
    filtered.wait(1, Duration::from_secs(10));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hanging_sink_does_not_hold_back_the_others() {
    let hanging = Receiver::start(&[(0, "")]);
    let fine = Receiver::start(&[(204, "")]);
    let counts = Family::default();
    let retry = Retry {
        attempts: 2,
        first_delay: Duration::from_millis(100),
        max_delay: Duration::from_secs(1),
        timeout: Duration::from_secs(3),
    };
    let d = Dispatcher::start(resolver(), None, counts.clone(), retry);
    let sinks = vec![
        NotificationSink {
            discord: Some(url(&hanging.url("/api/webhooks/1/a"))),
            ..sink("hanging")
        },
        NotificationSink {
            slack: Some(url(&fine.url("/services/x"))),
            ..sink("fine")
        },
    ];
    d.send(job(sinks, EventKind::Deployed));
    // The good sink has its message while the hanging one is still being waited for.
    fine.wait(1, Duration::from_secs(10));
    assert_eq!(
        count(&counts, "discord", "failed"),
        0,
        "still waiting on it"
    );
    // Past its timeout, twice: given up, counted.
    let start = Instant::now();
    while count(&counts, "discord", "failed") == 0 && start.elapsed() < Duration::from_secs(20) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(count(&counts, "discord", "failed"), 1);
    assert_eq!(hanging.requests().len(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn email_goes_through_smtp_with_starttls_and_authentication() {
    let _ = tracing_subscriber::fmt().with_test_writer().try_init();
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/notify-smtp");
    let Some(server) = Smtpd::start(&dir) else {
        return;
    };
    let port = server.port;
    let ca_file = server.ca.clone();
    let email = |password: &str, ca: bool| NotificationSink {
        email: Some(EmailSink {
            host: "127.0.0.1".into(),
            port,
            starttls: true,
            username: Some("vigie".into()),
            password: Some(SecretSource::File(format!("literal:{password}"))),
            from: "vigie@example.com".into(),
            to: vec!["ops@example.com".into(), "dev@example.com".into()],
            ca_file: ca.then(|| ca_file.display().to_string()),
        }),
        ..sink("mail")
    };
    let counts = Family::default();
    let d = Dispatcher::start(resolver(), None, counts.clone(), fast());
    // A server whose certificate is not trusted is refused (no silent downgrade).
    d.send(job(vec![email("s3cret", false)], EventKind::HealthDown));
    // A wrong password is refused by the server, and not retried.
    d.send(job(vec![email("wrong", true)], EventKind::HealthDown));
    // The right one arrives.
    d.send(job(vec![email("s3cret", true)], EventKind::RolledBack));
    let start = Instant::now();
    while count(&counts, "email", "delivered") + count(&counts, "email", "failed") < 3
        && start.elapsed() < Duration::from_secs(30)
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(count(&counts, "email", "delivered"), 1);
    assert_eq!(count(&counts, "email", "failed"), 2);
    let received = server.received();
    assert_eq!(received.matches("=== end ===").count(), 1, "{received}");
    assert!(
        received.contains("MAIL FROM: vigie@example.com"),
        "{received}"
    );
    assert!(
        received.contains("RCPT TO: ops@example.com,dev@example.com"),
        "{received}"
    );
    assert!(
        received.contains("Subject: [vigie] app rolled back in prod: aaaaaaa serves again"),
        "{received}"
    );
    for needle in [
        "CI failed: test (3.13)",
        "Commit: bbbbbbb Fix the cache (Alice <alice@example.com>)",
        "CI: https://ci.example/runs/7",
    ] {
        assert!(received.contains(needle), "{needle} in {received}");
    }
    assert!(!received.contains("s3cret"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sink_gets_its_messages_in_the_order_of_the_transitions() {
    // The first delivery is refused once (503) and retried: the later messages wait for
    // it rather than overtake it.
    let discord = Receiver::start(&[(503, ""), (204, "")]);
    let sinks = vec![NotificationSink {
        discord: Some(url(&discord.url("/api/webhooks/1/t"))),
        ..sink("team")
    }];
    let d = Dispatcher::start(resolver(), None, Family::default(), fast());
    let events = [
        EventKind::DeployStarted,
        EventKind::Deployed,
        EventKind::VerificationFailed,
        EventKind::RolledBack,
        EventKind::HealthDown,
        EventKind::HealthRecovered,
    ];
    for e in events {
        d.send(job(sinks.clone(), e));
    }
    let got = discord.wait(events.len() + 1, Duration::from_secs(20));
    let titles: Vec<String> = got[1..]
        .iter()
        .map(|r| r.json()["embeds"][0]["title"].as_str().unwrap().to_owned())
        .collect();
    let expected: Vec<String> = events.iter().map(|e| message(*e).title()).collect();
    assert_eq!(titles, expected);
    assert_eq!(
        got[0].json()["embeds"][0]["title"],
        got[1].json()["embeds"][0]["title"],
        "the refused one, retried first"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn shutdown_waits_for_queued_messages_and_idle_lanes_close() {
    // Each sink refuses its first message once: the flush waits out the retry.
    let a = Receiver::start(&[(503, ""), (204, "")]);
    let b = Receiver::start(&[(503, ""), (204, "")]);
    let retry = Retry {
        attempts: 2,
        first_delay: Duration::from_millis(300),
        max_delay: Duration::from_millis(300),
        timeout: Duration::from_millis(500),
    };
    let d = Dispatcher::start(resolver(), None, Family::default(), retry);
    let sinks = vec![
        NotificationSink {
            discord: Some(url(&a.url("/api/webhooks/1/a"))),
            ..sink("a")
        },
        NotificationSink {
            discord: Some(url(&b.url("/api/webhooks/1/b"))),
            ..sink("b")
        },
        // Wants no deploys: not counted.
        NotificationSink {
            events: vec![EventKind::HealthDown],
            discord: Some(url(&b.url("/api/webhooks/1/c"))),
            ..sink("c")
        },
    ];
    for e in [EventKind::DeployStarted, EventKind::Deployed] {
        d.send(job(sinks.clone(), e));
    }
    assert_eq!(d.pending(), 4);
    assert_eq!(d.flush(Duration::from_secs(20)).await, 0);
    assert_eq!((a.requests().len(), b.requests().len()), (3, 3));
    assert_eq!(d.lanes(), 2);

    // Unused for twice the longest a message can take ((0.5 s + 0.3 s) × 2 attempts):
    // the lanes close; a new message opens one again.
    let start = Instant::now();
    while d.lanes() > 0 && start.elapsed() < Duration::from_secs(20) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(d.lanes(), 0, "idle lanes are closed");
    d.send(job(sinks[..1].to_vec(), EventKind::Validated));
    assert_eq!(d.flush(Duration::from_secs(20)).await, 0);
    assert_eq!(a.requests().len(), 4);
    assert_eq!(d.lanes(), 1);

    // A sink that never answers: the flush gives up after its grace, and says so.
    let hanging = Receiver::start(&[(0, "")]);
    d.send(job(
        vec![NotificationSink {
            slack: Some(url(&hanging.url("/services/x"))),
            ..sink("hanging")
        }],
        EventKind::RolledBack,
    ));
    assert_eq!(d.flush(Duration::from_millis(200)).await, 1);
}
