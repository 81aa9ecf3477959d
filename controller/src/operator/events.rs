//! Kubernetes Events go out in the background, after the work: a reconcile puts its
//! Events in a queue and goes on, and one task creates them, in order, through the
//! background client (a token only when the reconcilers leave one free: see
//! [`super::client`]). Under load — 5,000 Releases deploying at once — the Events
//! trail the rollout instead of holding it; each is still one API request, stamped
//! with the time of its transition, not of its sending.
//!
//! As the Events of client-go's broadcaster, they are best effort: a queue over
//! [`CAPACITY`] drops the new ones, counted in `vigie_events_dropped_total`, and a
//! refused create is logged. `vigie_events_queued` is how many wait.

use k8s_openapi::{
    api::{core::v1::ObjectReference, events::v1::Event},
    apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta},
};
use kube::{
    Api, Client,
    runtime::events::{Event as KubeEvent, EventType, Recorder, Reporter},
};
use prometheus_client::metrics::{counter::Counter, gauge::Gauge};
use tokio::sync::mpsc;

/// Events waiting at most; two per Release for 8,000 Releases deploying at once.
pub const CAPACITY: usize = 16_384;

/// Notes are cut to this many bytes (the API server's limit is 1 kB).
const NOTE_MAX: usize = 1000;

enum Outgoing {
    /// One Event of its own (a transition: each SHA shows).
    Own(Box<Event>),
    /// Folded by kube's recorder into a series with the same reason (a failure that
    /// repeats at each retry).
    Series(Box<(KubeEvent, ObjectReference)>),
}

/// The queue of Events to create.
#[derive(Clone)]
pub struct Events {
    queue: mpsc::Sender<Outgoing>,
    queued: Gauge,
    dropped: Counter,
    identity: String,
}

impl Events {
    /// Starts the task that creates the Events with `client` (the background one).
    #[must_use]
    pub fn start(client: Client, identity: &str, queued: Gauge, dropped: Counter) -> Self {
        let (queue, mut rx) = mpsc::channel::<Outgoing>(CAPACITY);
        let recorder = Recorder::new(
            client.clone(),
            Reporter {
                controller: "vigie".into(),
                instance: Some(identity.to_owned()),
            },
        );
        let gauge = queued.clone();
        tokio::spawn(async move {
            while let Some(out) = rx.recv().await {
                let sent = match out {
                    Outgoing::Own(event) => {
                        let ns = event.metadata.namespace.clone().unwrap_or_default();
                        Api::<Event>::namespaced(client.clone(), &ns)
                            .create(&kube::api::PostParams::default(), &event)
                            .await
                            .map(drop)
                    }
                    Outgoing::Series(series) => recorder.publish(&series.0, &series.1).await,
                };
                gauge.dec();
                if let Err(e) = sent {
                    tracing::warn!(error = %e, "failed to publish an Event");
                }
            }
        });
        Self {
            queue,
            queued,
            dropped,
            identity: identity.to_owned(),
        }
    }

    /// One Event for one transition, on `regarding`. Unlike kube's recorder, which
    /// folds Events of the same reason into a series that keeps the first note, every
    /// transition gets its own Event, so `kubectl get events` shows each SHA.
    pub fn transition(
        &self,
        regarding: ObjectReference,
        type_: EventType,
        reason: &str,
        note: &str,
        action: &str,
    ) {
        let event = own_event(
            regarding,
            type_,
            reason,
            note,
            action,
            &self.identity,
            jiff::Timestamp::now(),
        );
        self.send(Outgoing::Own(Box::new(event)));
    }

    /// One Event folded with the earlier ones of the same reason on `regarding`.
    pub fn series(&self, regarding: ObjectReference, type_: EventType, reason: &str, note: &str) {
        let event = KubeEvent {
            type_,
            reason: reason.to_owned(),
            note: Some(cut(note)),
            action: "Reconcile".into(),
            secondary: None,
        };
        self.send(Outgoing::Series(Box::new((event, regarding))));
    }

    /// Waits until every queued Event is created, or `within` has passed (on the way
    /// out: the last transitions' Events before the Lease is given up).
    pub async fn flush(&self, within: std::time::Duration) {
        let deadline = tokio::time::Instant::now() + within;
        while self.queued.get() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    fn send(&self, out: Outgoing) {
        // Counted before it is sent: the task may take it first.
        self.queued.inc();
        if self.queue.try_send(out).is_err() {
            self.queued.dec();
            self.dropped.inc();
            tracing::warn!(
                capacity = CAPACITY,
                "an Event was dropped: too many wait to be published"
            );
        }
    }
}

fn cut(note: &str) -> String {
    let mut note = note.to_owned();
    if note.len() > NOTE_MAX {
        let mut at = NOTE_MAX;
        while !note.is_char_boundary(at) {
            at -= 1;
        }
        note.truncate(at);
    }
    note
}

/// The Event of one transition at `now`: its name is unique (the object's name and a
/// digest of the reason, the note and the instant).
fn own_event(
    regarding: ObjectReference,
    type_: EventType,
    reason: &str,
    note: &str,
    action: &str,
    identity: &str,
    now: jiff::Timestamp,
) -> Event {
    use sha2::Digest;
    let ns = regarding
        .namespace
        .clone()
        .unwrap_or_else(|| "default".into());
    let digest = hex::encode(
        &sha2::Sha256::digest(format!("{reason}{note}{}", now.as_nanosecond()).as_bytes())[..6],
    );
    Event {
        metadata: ObjectMeta {
            name: Some(format!(
                "{}.{digest}",
                regarding.name.as_deref().unwrap_or("vigie")
            )),
            namespace: Some(ns),
            ..ObjectMeta::default()
        },
        event_time: Some(MicroTime(now)),
        action: Some(action.to_owned()),
        reason: Some(reason.to_owned()),
        note: Some(cut(note)),
        type_: Some(
            match type_ {
                EventType::Normal => "Normal",
                EventType::Warning => "Warning",
            }
            .to_owned(),
        ),
        regarding: Some(regarding),
        reporting_controller: Some("vigie.dev/controller".into()),
        reporting_instance: Some(identity.to_owned()),
        ..Event::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_transition_event_is_stamped_with_its_instant_and_named_apart() {
        let regarding = ObjectReference {
            kind: Some("Release".into()),
            name: Some("web-preprod".into()),
            namespace: Some("shop".into()),
            ..ObjectReference::default()
        };
        let at: jiff::Timestamp = "2026-12-03T10:00:00Z".parse().unwrap();
        let long = "é".repeat(NOTE_MAX);
        let e = own_event(
            regarding.clone(),
            EventType::Warning,
            "RolledBack",
            &long,
            "Reconcile",
            "vigie-0",
            at,
        );
        assert_eq!(e.event_time, Some(MicroTime(at)));
        assert_eq!(e.metadata.namespace.as_deref(), Some("shop"));
        assert!(
            e.metadata
                .name
                .as_deref()
                .unwrap()
                .starts_with("web-preprod.")
        );
        assert_eq!(e.type_.as_deref(), Some("Warning"));
        let note = e.note.unwrap();
        assert!(note.len() <= NOTE_MAX && note.chars().all(|c| c == 'é'));
        let later = own_event(
            regarding,
            EventType::Warning,
            "RolledBack",
            &long,
            "Reconcile",
            "vigie-0",
            at + jiff::SignedDuration::from_nanos(1),
        );
        assert_ne!(e.metadata.name, later.metadata.name);
    }

    #[tokio::test]
    async fn a_full_queue_drops_and_counts_instead_of_waiting() {
        let (queue, _rx) = mpsc::channel(1);
        let events = Events {
            queue,
            queued: Gauge::default(),
            dropped: Counter::default(),
            identity: "vigie-0".into(),
        };
        let regarding = ObjectReference {
            name: Some("r".into()),
            ..ObjectReference::default()
        };
        events.transition(regarding.clone(), EventType::Normal, "A", "", "Reconcile");
        events.series(regarding, EventType::Warning, "B", "");
        assert_eq!(events.queued.get(), 1);
        assert_eq!(events.dropped.get(), 1);
    }
}
