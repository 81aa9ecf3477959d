//! Standalone mode: `vigie run` on a VM with Docker and no Kubernetes, driven by a
//! directory of manifests, recording status in a state file.

pub mod control;
pub mod desk;
pub(crate) mod ports;
pub mod queue;
pub mod run;
/// The state file, under its former path.
pub use crate::store as state;
pub mod status;
pub mod web;
