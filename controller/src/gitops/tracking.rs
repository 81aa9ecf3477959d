//! The one tracking path of both modes: a CodeLocation's `track` rules are evaluated
//! against its repository ([`super::tracker`]), each Release's step is planned
//! ([`super::track::plan`]) by who holds its revision, and the plan is carried out
//! through a small port ([`Tracking`]): the state file in `vigie run`, the API and
//! Events in `vigie controller`. Write-back commits, their metrics and the wake-up of
//! the manifests' sync are done here, once.

use std::{
    collections::HashMap,
    future::Future,
    path::PathBuf,
    sync::{Mutex, atomic::Ordering},
    time::Duration,
};

use super::{
    repo::Credentials,
    track::{Action, Holder, Refusal},
    tracker,
    writeback::{self, Writer},
};
use crate::{
    api::{ReleaseKey, Sha, code_location::TrackRule},
    metrics::Metrics,
};

/// What a write-back of a tracked update signals, the same in both modes.
pub struct Signals<'a> {
    /// Counts write-backs and their failures.
    pub metrics: &'a Metrics,
    /// Set when a commit was pushed: the manifests' sync fetches at once.
    pub pushed: &'a std::sync::atomic::AtomicBool,
    /// Wakes the sync.
    pub wake: &'a tokio::sync::Notify,
}

/// How long a repository may take to answer a check of the tracked refs.
pub const TIMEOUT: Duration = Duration::from_secs(120);

/// A Release bound to the code location, as tracking sees it.
#[derive(Clone, Debug)]
pub struct Bound {
    /// The Release.
    pub key: ReleaseKey,
    /// Its environment (the rules name environments).
    pub environment: String,
    /// Its revision as written (for the commit message and Events).
    pub revision: Option<String>,
    /// The commit it is at now, as tracking knows it.
    pub current: Option<Sha>,
    /// The SHAs quarantined in its environment.
    pub quarantined: Vec<Sha>,
    /// Who may set its revision.
    pub holder: Holder,
}

/// A code location whose `track` rules are checked.
pub struct Location<'a> {
    /// The CodeLocation's name.
    pub name: &'a str,
    /// The repository.
    pub url: &'a str,
    /// Its credentials.
    pub credentials: Credentials,
    /// The rules.
    pub rules: &'a [TrackRule],
    /// Where repositories are mirrored.
    pub cache: PathBuf,
}

/// Where a mode carries out a tracking plan.
pub trait Tracking: Send + Sync {
    /// Sets the Release's revision to `sha`, which `reference` names.
    fn move_to(
        &self,
        release: &Bound,
        sha: &Sha,
        reference: &str,
    ) -> impl Future<Output = Result<(), crate::error::RecordError>> + Send;

    /// Tells why the Release is not moved (called once per reason).
    fn report(
        &self,
        release: &Bound,
        refusal: Refusal,
        reason: &str,
    ) -> impl Future<Output = ()> + Send;

    /// The outcome of committing `sha` to the manifests repository: where it went
    /// (`describe`), or the error.
    fn written_back(
        &self,
        release: &Bound,
        sha: &Sha,
        reference: &str,
        outcome: Result<String, writeback::WriteBackError>,
    ) -> impl Future<Output = ()> + Send;
}

/// What was last reported per Release, so each reason is told once.
#[derive(Default)]
pub struct Reported(Mutex<HashMap<ReleaseKey, String>>);

impl Reported {
    /// Whether `reason` is new for `key` (and remembers it).
    fn first(&self, key: &ReleaseKey, reason: &str) -> bool {
        let mut m = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if m.get(key).is_some_and(|r| r == reason) {
            return false;
        }
        m.insert(key.clone(), reason.to_owned());
        true
    }

    fn clear(&self, key: &ReleaseKey) {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(key);
    }
}

/// Checks one code location's rules and carries out each bound Release's plan.
pub async fn check<T: Tracking>(
    location: Location<'_>,
    bound: &[Bound],
    writer: Option<&Writer>,
    signals: &Signals<'_>,
    port: &T,
    reported: &Reported,
) {
    let known: HashMap<String, tracker::Known> = bound
        .iter()
        .map(|b| {
            (
                b.environment.clone(),
                (b.current.clone(), b.quarantined.clone()),
            )
        })
        .collect();
    let (cache, url, creds, rules) = (
        location.cache.clone(),
        location.url.to_owned(),
        location.credentials.clone(),
        location.rules.to_vec(),
    );
    let evaluating = tokio::task::spawn_blocking(move || {
        tracker::evaluate(&cache, &url, &creds, &rules, &|env| {
            known.get(env).cloned().unwrap_or_default()
        })
    });
    let outcomes = match tokio::time::timeout(TIMEOUT, evaluating).await {
        Ok(Ok(Ok(o))) => o,
        Ok(Ok(Err(e))) => {
            tracing::warn!(code_location = %location.name, error = %e, "cannot check the tracked refs");
            return;
        }
        Ok(Err(e)) => {
            tracing::warn!(code_location = %location.name, error = %e, "cannot check the tracked refs");
            return;
        }
        Err(_) => {
            tracing::warn!(code_location = %location.name, "no answer from the repository within {} s", TIMEOUT.as_secs());
            return;
        }
    };
    for o in outcomes {
        let Some(release) = bound.iter().find(|b| b.environment == o.environment) else {
            tracing::debug!(code_location = %location.name, environment = %o.environment, "a tracking rule names an environment with no Release");
            continue;
        };
        let action = super::track::plan(o.step, release.holder);
        carry_out(
            action,
            release,
            location.name,
            writer,
            signals,
            port,
            reported,
        )
        .await;
    }
}

async fn carry_out<T: Tracking>(
    action: Action,
    release: &Bound,
    location: &str,
    writer: Option<&Writer>,
    signals: &Signals<'_>,
    port: &T,
    reported: &Reported,
) {
    let key = &release.key;
    match action {
        Action::Stay => {}
        Action::Move { sha, reference } => match port.move_to(release, &sha, &reference).await {
            Ok(()) => {
                tracing::info!(release = %key, sha = %sha.short(), reference = %reference, previous = release.current.as_ref().map_or("-", Sha::short), "tracking: moving the Release");
                reported.clear(key);
            }
            Err(e) => {
                tracing::warn!(release = %key, error = %e, "tracking: failed to move the Release");
            }
        },
        Action::Report { refusal, reason } => {
            if reported.first(key, &reason) {
                tracing::warn!(release = %key, "tracking: not followed: {reason}");
                port.report(release, refusal, &reason).await;
            }
        }
        Action::WriteBack { sha, reference } => {
            let Some(writer) = writer else {
                return;
            };
            let message = writeback::tracking_message(
                location,
                &release.environment,
                &key.to_string(),
                release.revision.as_deref(),
                &sha,
                &reference,
            );
            let outcome = match writer
                .set_revision(&key.namespace, &key.name, &sha, message)
                .await
            {
                // Committed before; the sync has not applied it yet.
                Ok(writeback::Outcome::Unchanged) => return,
                Ok(outcome) => {
                    let how = writeback::describe(&outcome, &writer.target.source);
                    tracing::info!(release = %key, sha = %sha.short(), reference = %reference, "tracking written back: {how}");
                    signals.metrics.write_backs.inc();
                    reported.clear(key);
                    // Sync at once: the commit is what moves the Release.
                    signals.pushed.store(true, Ordering::Relaxed);
                    signals.wake.notify_one();
                    signals.wake.notify_waiters();
                    Ok(how)
                }
                Err(e) => {
                    signals.metrics.write_back_errors.inc();
                    if !reported.first(key, &e.to_string()) {
                        return;
                    }
                    tracing::warn!(release = %key, error = %e, "tracking: write-back failed");
                    Err(e)
                }
            };
            port.written_back(release, &sha, &reference, outcome).await;
        }
    }
}
