//! The release lifecycle: pure rules, no I/O. [`decide`] turns the spec, the recorded
//! status and the observations into the next status and what to do; [`windows`] does
//! the deploy-window arithmetic; [`progress`] tells a transition, worth a status write,
//! from a step of a rollout in flight.

mod conditions;
pub mod decide;
pub mod progress;
pub mod windows;

pub use conditions::{DEGRADED, PROGRESSING, READY, VERIFIED, reason, set as set_condition};
pub use decide::{
    BackendState, Block, CiVerdict, Decision, Desired, HookOutcome, HookRun, Input,
    NotARollbackTarget, Notification, Observations, Upstream, WorkloadObservation, WorkloadTarget,
    decide, rollback_target,
};
pub use windows::{Gate, Windows};
