//! The HTTP side, mounted by both modes: `/healthz`, `/readyz`, `/metrics` and the CI
//! webhooks ([`server`]), served by a listener that bounds every connection
//! ([`listener`]).

pub mod listener;
pub mod server;
