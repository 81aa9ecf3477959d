//! Standalone mode: `vigie run` on a VM with Docker and no Kubernetes, driven by a
//! directory of manifests, recording status in a state file.

pub mod control;
pub(crate) mod ports;
pub mod run;
pub mod state;
pub mod status;
