//! Notifications: one [`Message`] per transition, shaped for each service a sink
//! names (Discord, MS Teams, Slack, ntfy, email, a signed generic webhook), and sent
//! in the background by [`deliver::Dispatcher`] with retries, so that a slow or broken
//! sink never holds a deploy back.
//!
//! The shapes are pure functions of the message, tested against the services'
//! documented formats; the I/O is in [`deliver`].

pub mod deliver;

use jiff::Timestamp;
use serde::Serialize;
use serde_json::{Value, json};

use crate::api::{
    Sha,
    environment::{EventKind, NotificationSink},
};

/// What happened to one Release, with what a person needs to act on it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Message {
    /// What happened.
    pub event: EventKind,
    /// The Environment.
    pub environment: String,
    /// The CodeLocation.
    pub location: String,
    /// The Release (`namespace/name`).
    pub release: String,
    /// The SHA concerned (the one rolled back, for a rollback).
    pub sha: Sha,
    /// The other SHA: the rollback point of a deploy, the SHA serving again after a rollback.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub previous: Option<Sha>,
    /// Why.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Link to the CI run and its logs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Who, for a person's act.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
    /// The commit's author.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    /// The commit's subject line.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// When.
    pub at: Timestamp,
}

/// How a message reads at a glance.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tone {
    /// Good news.
    Good,
    /// Something a person should look at.
    Warning,
    /// Something went wrong.
    Bad,
    /// Progress.
    Info,
}

impl Message {
    /// The message of one transition of the Release `release` (`namespace/name`),
    /// stamped now; author and subject are looked up when it is sent.
    #[must_use]
    pub fn of(
        n: &crate::lifecycle::Notification,
        environment: &str,
        location: &str,
        release: String,
    ) -> Self {
        Self {
            event: n.event,
            environment: environment.to_owned(),
            location: location.to_owned(),
            release,
            sha: n.sha.clone(),
            previous: n.previous.clone(),
            reason: n.reason.clone(),
            url: n.url.clone(),
            by: n.by.clone(),
            author: None,
            subject: None,
            at: Timestamp::now(),
        }
    }

    /// The one-line summary: what, where, which commit.
    #[must_use]
    pub fn title(&self) -> String {
        let (loc, env, short) = (&self.location, &self.environment, self.sha.short());
        let previous = self.previous.as_ref().map_or("-", Sha::short);
        match self.event {
            EventKind::DeployStarted => format!("Deploying {loc} {short} to {env}"),
            EventKind::Deployed => format!("{loc} {short} is up in {env}"),
            EventKind::Validated => format!("{loc} {short} validated in {env}"),
            EventKind::VerificationFailed => {
                format!("{loc} {short} failed in {env}; rolling back to {previous}")
            }
            EventKind::RolledBack => format!("{loc} rolled back in {env}: {previous} serves again"),
            EventKind::Failed => format!("{loc} {short} failed in {env}; a person is needed"),
            EventKind::AwaitingApproval => {
                format!("{loc} {short} waits for approval to enter {env}")
            }
            EventKind::Approved => format!("{loc} {short} approved for {env}"),
            EventKind::BreakGlass => {
                format!("{loc} {short} deployed to {env} outside the deploy windows")
            }
            EventKind::Suspect => format!("{loc} {short} is suspect in {env}"),
            EventKind::HealthDown => format!("{loc} {short} is down in {env}"),
            EventKind::HealthRecovered => format!("{loc} {short} recovered in {env}"),
            EventKind::HookFailed => format!("A hook failed for {loc} {short} in {env}"),
        }
    }

    /// How it reads.
    #[must_use]
    pub const fn tone(&self) -> Tone {
        match self.event {
            EventKind::Validated | EventKind::HealthRecovered => Tone::Good,
            EventKind::VerificationFailed
            | EventKind::Failed
            | EventKind::HealthDown
            | EventKind::HookFailed
            | EventKind::Suspect => Tone::Bad,
            EventKind::RolledBack | EventKind::AwaitingApproval | EventKind::BreakGlass => {
                Tone::Warning
            }
            EventKind::DeployStarted | EventKind::Deployed | EventKind::Approved => Tone::Info,
        }
    }

    /// `short subject (author)`, as far as known.
    #[must_use]
    pub fn commit(&self) -> String {
        let mut out = self.sha.short().to_owned();
        if let Some(s) = &self.subject {
            out.push(' ');
            out.push_str(s);
        }
        if let Some(a) = &self.author {
            out.push_str(" (");
            out.push_str(a);
            out.push(')');
        }
        out
    }

    /// The facts shown under the title, in order.
    #[must_use]
    pub fn facts(&self) -> Vec<(&'static str, String)> {
        let mut facts = vec![
            ("Environment", self.environment.clone()),
            ("Location", self.location.clone()),
            ("Commit", self.commit()),
        ];
        if let Some(p) = &self.previous {
            let label = if self.event == EventKind::RolledBack
                || self.event == EventKind::VerificationFailed
            {
                "Back to"
            } else {
                "Previous"
            };
            facts.push((label, p.short().to_owned()));
        }
        if let Some(by) = &self.by {
            facts.push(("By", by.clone()));
        }
        facts
    }

    /// The whole message as plain text (email, ntfy).
    #[must_use]
    pub fn text(&self) -> String {
        let mut out = String::new();
        if let Some(r) = &self.reason {
            out.push_str(r);
            out.push_str("\n\n");
        }
        for (k, v) in self.facts() {
            out.push_str(k);
            out.push_str(": ");
            out.push_str(&v);
            out.push('\n');
        }
        if let Some(u) = &self.url {
            out.push_str("CI: ");
            out.push_str(u);
            out.push('\n');
        }
        out.push_str("Release: ");
        out.push_str(&self.release);
        out.push('\n');
        out
    }
}

/// Whether a sink takes this event (no list means every event).
#[must_use]
pub fn wants(sink: &NotificationSink, event: EventKind) -> bool {
    sink.events.is_empty() || sink.events.contains(&event)
}

/// A Discord webhook execution (`POST /api/webhooks/{id}/{token}`): one embed.
#[must_use]
pub fn discord(m: &Message) -> Value {
    let color = match m.tone() {
        Tone::Good => 0x002e_cc71,
        Tone::Warning => 0x00e6_7e22,
        Tone::Bad => 0x00e7_4c3c,
        Tone::Info => 0x0034_98db,
    };
    let fields: Vec<Value> = m
        .facts()
        .into_iter()
        .map(|(name, value)| json!({"name": name, "value": clip(&value, 1024), "inline": name != "Commit"}))
        .collect();
    let mut embed = json!({
        "title": clip(&m.title(), 256),
        "color": color,
        "fields": fields,
        "timestamp": m.at.to_string(),
        "footer": {"text": clip(&m.release, 2048)},
    });
    if let Some(r) = &m.reason {
        embed["description"] = json!(clip(r, 4096));
    }
    if let Some(u) = &m.url {
        embed["url"] = json!(u);
    }
    json!({"username": "Vigie", "allowed_mentions": {"parse": []}, "embeds": [embed]})
}

/// An MS Teams workflow webhook ("When a Teams webhook request is received"): a message
/// with one Adaptive Card attachment.
#[must_use]
pub fn teams(m: &Message) -> Value {
    let color = match m.tone() {
        Tone::Good => "Good",
        Tone::Warning => "Warning",
        Tone::Bad => "Attention",
        Tone::Info => "Accent",
    };
    let facts: Vec<Value> = m
        .facts()
        .into_iter()
        .map(|(title, value)| json!({"title": title, "value": value}))
        .collect();
    let mut body = vec![
        json!({"type": "TextBlock", "text": m.title(), "size": "Medium", "weight": "Bolder", "color": color, "wrap": true}),
        json!({"type": "FactSet", "facts": facts}),
    ];
    if let Some(r) = &m.reason {
        body.push(json!({"type": "TextBlock", "text": r, "wrap": true}));
    }
    let mut content = json!({
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "type": "AdaptiveCard",
        "version": "1.4",
        "body": body,
    });
    if let Some(u) = &m.url {
        content["actions"] = json!([{"type": "Action.OpenUrl", "title": "CI run", "url": u}]);
    }
    json!({
        "type": "message",
        "attachments": [{
            "contentType": "application/vnd.microsoft.card.adaptive",
            "contentUrl": null,
            "content": content,
        }],
    })
}

/// A Slack incoming webhook: `text` (the notification's fallback) and Block Kit blocks.
#[must_use]
pub fn slack(m: &Message) -> Value {
    let fields: Vec<Value> = m
        .facts()
        .into_iter()
        .map(|(k, v)| json!({"type": "mrkdwn", "text": format!("*{k}*\n{}", slack_escape(&v))}))
        .collect();
    let mut blocks = vec![
        json!({"type": "header", "text": {"type": "plain_text", "text": clip(&m.title(), 150)}}),
        json!({"type": "section", "fields": fields}),
    ];
    if let Some(r) = &m.reason {
        blocks.push(
            json!({"type": "section", "text": {"type": "mrkdwn", "text": clip(&slack_escape(r), 3000)}}),
        );
    }
    if let Some(u) = &m.url {
        blocks.push(json!({"type": "context", "elements": [{"type": "mrkdwn", "text": format!("<{u}|CI run>")}]}));
    }
    json!({"text": m.title(), "blocks": blocks})
}

/// Slack's three escaped characters.
fn slack_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// An ntfy JSON publish (`POST` to the server's root): topic, title, message, tags,
/// priority and the click link.
#[must_use]
pub fn ntfy(m: &Message, topic: &str) -> Value {
    let (tag, priority) = match m.tone() {
        Tone::Good => ("white_check_mark", 3),
        Tone::Warning => ("warning", 4),
        Tone::Bad => ("rotating_light", 5),
        Tone::Info => ("rocket", 3),
    };
    let mut v = json!({
        "topic": topic,
        "title": m.title(),
        "message": m.text(),
        "tags": [tag, m.environment],
        "priority": priority,
    });
    if let Some(u) = &m.url {
        v["click"] = json!(u);
    }
    v
}

/// The email subject.
#[must_use]
pub fn email_subject(m: &Message) -> String {
    format!("[vigie] {}", m.title())
}

/// The generic webhook's JSON body: the message itself, versioned.
#[must_use]
pub fn webhook(m: &Message) -> Value {
    let mut v = serde_json::to_value(m).unwrap_or_default();
    v["version"] = json!(1);
    v["title"] = json!(m.title());
    v
}

/// At most `max` characters (services refuse longer fields).
fn clip(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_owned();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

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
            subject: Some("Fix the <cache> & retry".into()),
            at: "2026-11-23T10:00:00Z".parse().unwrap(),
        }
    }

    #[test]
    fn every_message_names_environment_location_commit_author_subject_and_ci() {
        let m = message(EventKind::VerificationFailed);
        assert_eq!(
            m.title(),
            "app bbbbbbb failed in prod; rolling back to aaaaaaa"
        );
        let text = m.text();
        for needle in [
            "CI failed: test (3.13)",
            "Environment: prod",
            "Location: app",
            "Commit: bbbbbbb Fix the <cache> & retry (Alice <alice@example.com>)",
            "Back to: aaaaaaa",
            "CI: https://ci.example/runs/7",
        ] {
            assert!(text.contains(needle), "{needle} in {text}");
        }
        for event in [
            EventKind::DeployStarted,
            EventKind::Deployed,
            EventKind::Validated,
            EventKind::RolledBack,
            EventKind::Failed,
            EventKind::AwaitingApproval,
            EventKind::Approved,
            EventKind::BreakGlass,
            EventKind::Suspect,
            EventKind::HealthDown,
            EventKind::HealthRecovered,
            EventKind::HookFailed,
        ] {
            let t = message(event).title();
            assert!(t.contains("app") && t.contains("prod"), "{t}");
        }
    }

    #[test]
    fn discord_gets_one_embed_within_its_limits() {
        let mut m = message(EventKind::Validated);
        m.reason = Some("x".repeat(5000));
        let v = discord(&m);
        let embed = &v["embeds"][0];
        assert_eq!(embed["title"], "app bbbbbbb validated in prod");
        assert_eq!(embed["color"], 0x002e_cc71);
        assert_eq!(embed["url"], "https://ci.example/runs/7");
        assert_eq!(embed["description"].as_str().unwrap().chars().count(), 4096);
        assert_eq!(embed["fields"][2]["name"], "Commit");
        assert_eq!(embed["fields"][2]["inline"], false);
        assert_eq!(embed["timestamp"], "2026-11-23T10:00:00Z");
        assert_eq!(v["allowed_mentions"]["parse"], json!([]));
    }

    #[test]
    fn teams_gets_an_adaptive_card() {
        let v = teams(&message(EventKind::RolledBack));
        assert_eq!(v["type"], "message");
        let a = &v["attachments"][0];
        assert_eq!(a["contentType"], "application/vnd.microsoft.card.adaptive");
        assert_eq!(a["content"]["type"], "AdaptiveCard");
        assert_eq!(a["content"]["body"][0]["color"], "Warning");
        assert_eq!(a["content"]["body"][1]["type"], "FactSet");
        assert_eq!(
            a["content"]["actions"][0]["url"],
            "https://ci.example/runs/7"
        );
    }

    #[test]
    fn slack_gets_text_and_escaped_blocks() {
        let v = slack(&message(EventKind::Failed));
        assert!(v["text"].as_str().unwrap().contains("a person is needed"));
        assert_eq!(v["blocks"][0]["type"], "header");
        let commit = v["blocks"][1]["fields"][2]["text"].as_str().unwrap();
        assert!(
            commit.contains("Fix the &lt;cache&gt; &amp; retry"),
            "{commit}"
        );
        assert_eq!(
            v["blocks"][3]["elements"][0]["text"],
            "<https://ci.example/runs/7|CI run>"
        );
    }

    #[test]
    fn ntfy_gets_a_json_publish() {
        let v = ntfy(&message(EventKind::HealthDown), "deploys");
        assert_eq!(v["topic"], "deploys");
        assert_eq!(v["priority"], 5);
        assert_eq!(v["click"], "https://ci.example/runs/7");
        assert_eq!(v["tags"], json!(["rotating_light", "prod"]));
    }

    #[test]
    fn the_generic_webhook_carries_the_message() {
        let v = webhook(&message(EventKind::Validated));
        assert_eq!(v["version"], 1);
        assert_eq!(v["event"], "Validated");
        assert_eq!(v["sha"], "b".repeat(40));
        assert_eq!(v["subject"], "Fix the <cache> & retry");
    }
}
