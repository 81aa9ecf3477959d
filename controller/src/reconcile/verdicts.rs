//! The real [`Ci`] port: the verdicts stored for a code location (webhooks, earlier
//! polls) plus a poll of GitHub or GitLab for the SHA in flight when its turn has come.
//! One polling policy for both modes: every `ci.pollInterval` after an answer, the
//! provider's `Retry-After` when it asks to wait, and exponential backoff with jitter
//! (from the interval up to 5 minutes) after failures.

use std::{
    collections::{BTreeMap, HashMap},
    future::Future,
    sync::Mutex,
    time::{Duration, Instant},
};

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};

use super::{Subject, ports::Ci};
use crate::{
    api::{SecretSource, Sha, code_location::Polling},
    lifecycle::CiVerdict,
};

/// The longest wait between two polls of a failing provider.
pub const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// A poll schedule not asked about for this long is forgotten.
const FORGET_AFTER: Duration = Duration::from_secs(3600);

/// Where a mode keeps verdicts: the state file, or the CodeLocation's status.
pub trait VerdictStore: Send + Sync {
    /// The verdicts recorded for the subject's code location.
    fn stored(&self, subject: &Subject<'_>) -> BTreeMap<Sha, CiVerdict>;

    /// Records a polled verdict (webhooks and polls feed the same verdicts).
    fn record(
        &self,
        subject: &Subject<'_>,
        sha: &Sha,
        verdict: &CiVerdict,
    ) -> impl Future<Output = Result<(), crate::error::RecordError>> + Send;

    /// When the latest verdict for `sha` came by webhook delivery, if it did (the
    /// silence `polling: fallback` waits for is counted from it).
    fn delivered_at(&self, subject: &Subject<'_>, sha: &Sha) -> Option<jiff::Timestamp>;

    /// Reads a secret the CI settings name (a token).
    fn secret(
        &self,
        subject: &Subject<'_>,
        source: &SecretSource,
    ) -> Result<Vec<u8>, crate::secrets::SecretError>;
}

/// When each (code location, SHA) may be polled again: long-lived, one per process.
#[derive(Default)]
pub struct Polls {
    client: crate::ci::poll::Client,
    auth: std::sync::Arc<crate::ci::auth::Auth>,
    turns: Mutex<HashMap<(String, Sha), Turn>>,
}

struct Turn {
    due: Instant,
    backoff: ExponentialBackoff,
    asked: Instant,
    /// When the SHA was first asked about: its verification began about then.
    since: Instant,
}

/// Whether a SHA in flight is polled under `polling`, given how long it has been in
/// flight and how long ago its last webhook delivery came (`None`: none yet).
#[must_use]
pub fn polled(
    polling: Polling,
    in_flight_for: Duration,
    since_delivery: Option<Duration>,
    fallback_after: Duration,
) -> bool {
    match polling {
        Polling::Always => true,
        Polling::Never => false,
        Polling::Fallback => {
            let silence = since_delivery.map_or(in_flight_for, |d| d.min(in_flight_for));
            silence >= fallback_after
        }
    }
}

/// What a poll's outcome means for the next one.
#[derive(Debug, PartialEq, Eq)]
enum Next {
    /// An answer: the regular interval, backoff reset.
    Interval,
    /// The provider asked to wait this long.
    Wait(Duration),
    /// A failure: the next step of the backoff.
    Backoff,
}

fn backoff(interval: Duration) -> ExponentialBackoff {
    ExponentialBuilder::default()
        .with_min_delay(interval)
        .with_max_delay(MAX_BACKOFF)
        .with_jitter()
        .without_max_times()
        .build()
}

impl Polls {
    /// The HTTP client of GitHub and GitLab requests.
    #[must_use]
    pub fn client(&self) -> &crate::ci::poll::Client {
        &self.client
    }

    /// The credentials of GitHub and GitLab requests.
    #[must_use]
    pub fn auth(&self) -> &crate::ci::auth::Auth {
        &self.auth
    }

    /// The credentials, to share with the other callers of the providers' APIs.
    #[must_use]
    pub fn shared_auth(&self) -> std::sync::Arc<crate::ci::auth::Auth> {
        self.auth.clone()
    }

    /// Whether the (location, SHA) may be polled now, and for how long it has been
    /// asked about.
    fn due(&self, key: &(String, Sha), now: Instant, interval: Duration) -> (bool, Duration) {
        let Ok(mut turns) = self.turns.lock() else {
            return (true, Duration::ZERO);
        };
        turns.retain(|_, t| now.duration_since(t.asked) < FORGET_AFTER);
        let turn = turns.entry(key.clone()).or_insert_with(|| Turn {
            due: now,
            backoff: backoff(interval),
            asked: now,
            since: now,
        });
        turn.asked = now;
        (turn.due <= now, now.duration_since(turn.since))
    }

    /// Sets the next turn after an outcome; returns the delay chosen.
    fn schedule(&self, key: (String, Sha), interval: Duration, next: &Next) -> Duration {
        let now = Instant::now();
        let Ok(mut turns) = self.turns.lock() else {
            return interval;
        };
        let turn = turns.entry(key).or_insert_with(|| Turn {
            due: now,
            backoff: backoff(interval),
            asked: now,
            since: now,
        });
        let delay = match next {
            Next::Interval => {
                turn.backoff = backoff(interval);
                interval
            }
            Next::Wait(d) => *d,
            Next::Backoff => turn.backoff.next().unwrap_or(MAX_BACKOFF),
        };
        turn.due = now + delay;
        delay
    }
}

/// Stored verdicts plus polling, for one reconcile.
pub struct Verdicts<'a, S> {
    /// The process's poll schedule and HTTP client.
    pub polls: &'a Polls,
    /// Where verdicts are kept.
    pub store: S,
}

impl<S: VerdictStore> Ci for Verdicts<'_, S> {
    async fn verdicts(
        &self,
        subject: &Subject<'_>,
        in_flight: Option<&Sha>,
    ) -> BTreeMap<Sha, CiVerdict> {
        let mut known = self.store.stored(subject);
        let spec = subject.ci;
        let polling = spec.polling();
        let Some(sha) = in_flight.filter(|_| polling != Polling::Never) else {
            return known;
        };
        let key = (subject.location_key(), sha.clone());
        let interval = spec.poll_interval.get();
        let (due, in_flight_for) = self.polls.due(&key, Instant::now(), interval);
        let since_delivery = self
            .store
            .delivered_at(subject, sha)
            .map(|at| jiff::Timestamp::now().duration_since(at).unsigned_abs());
        if !due
            || !polled(
                polling,
                in_flight_for,
                since_delivery,
                spec.poll_fallback_after(),
            )
        {
            return known;
        }
        let resolve = |s: &SecretSource| self.store.secret(subject, s);
        let Some(result) = crate::ci::poll::verdict(
            &self.polls.client,
            &self.polls.auth,
            spec,
            sha.as_str(),
            &resolve,
        )
        .await
        else {
            return known;
        };
        let next = match result {
            Ok(verdict) => {
                if let Err(e) = self.store.record(subject, sha, &verdict).await {
                    tracing::warn!(error = %e, "failed to record a polled CI verdict");
                }
                known.insert(sha.clone(), verdict);
                Next::Interval
            }
            Err(crate::ci::poll::PollError::RateLimited { retry_after, .. }) => {
                Next::Wait(retry_after)
            }
            Err(e) => {
                tracing::warn!(error = %e, "CI poll failed");
                Next::Backoff
            }
        };
        let delay = self.polls.schedule(key, interval, &next);
        if next != Next::Interval {
            tracing::debug!(delay_s = delay.as_secs(), "CI polled again after a delay");
        }
        known
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> (String, Sha) {
        ("default/app".into(), "a".repeat(40).parse().unwrap())
    }

    #[test]
    fn a_new_sha_is_polled_at_once_then_every_interval() {
        let polls = Polls::default();
        let now = Instant::now();
        let ten = Duration::from_secs(10);
        assert!(polls.due(&key(), now, ten).0);
        let d = polls.schedule(key(), ten, &Next::Interval);
        assert_eq!(d, ten);
        assert!(!polls.due(&key(), Instant::now(), ten).0);
        let later = Instant::now() + Duration::from_secs(11);
        let (due, asked_for) = polls.due(&key(), later, ten);
        assert!(due);
        assert!(asked_for >= Duration::from_secs(11), "{asked_for:?}");
    }

    #[test]
    fn failures_back_off_exponentially_up_to_five_minutes_and_an_answer_resets() {
        let polls = Polls::default();
        let interval = Duration::from_secs(10);
        let delays: Vec<Duration> = (0..12)
            .map(|_| polls.schedule(key(), interval, &Next::Backoff))
            .collect();
        assert!(delays[0] >= interval, "{delays:?}");
        assert!(delays[3] > delays[0], "{delays:?}");
        // With jitter a delay may pass the cap by up to its own size, never more.
        assert!(delays.iter().all(|d| *d <= MAX_BACKOFF * 2), "{delays:?}");
        assert_eq!(polls.schedule(key(), interval, &Next::Interval), interval);
        assert!(polls.schedule(key(), interval, &Next::Backoff) < Duration::from_secs(21));
    }

    #[test]
    fn polling_follows_the_mode_and_the_silence_of_webhooks() {
        let s = Duration::from_secs;
        let after = s(120);
        for in_flight in [s(0), s(119), s(120), s(3600)] {
            for delivered in [None, Some(s(0)), Some(s(119)), Some(s(120)), Some(s(7200))] {
                assert!(polled(Polling::Always, in_flight, delivered, after));
                assert!(!polled(Polling::Never, in_flight, delivered, after));
                // Silent since the later of: the SHA went in flight, its last delivery.
                let silence = delivered.map_or(in_flight, |d| d.min(in_flight));
                assert_eq!(
                    polled(Polling::Fallback, in_flight, delivered, after),
                    silence >= after,
                    "in flight {in_flight:?}, delivered {delivered:?} ago"
                );
            }
        }
        // A SHA just in flight with a webhook that spoke long ago (for an earlier
        // verification) waits the whole silence.
        assert!(!polled(Polling::Fallback, s(5), Some(s(7200)), after));
        // A webhook that stopped speaking two minutes ago: polled.
        assert!(polled(Polling::Fallback, s(600), Some(s(121)), after));
        assert!(!polled(Polling::Fallback, s(600), Some(s(30)), after));
    }

    #[test]
    fn a_rate_limit_waits_what_the_provider_asks() {
        let polls = Polls::default();
        let d = polls.schedule(
            key(),
            Duration::from_secs(10),
            &Next::Wait(Duration::from_secs(42)),
        );
        assert_eq!(d, Duration::from_secs(42));
    }
}
