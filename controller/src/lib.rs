//! Vigie keeps every environment of a code location on a commit that CI has validated:
//! it deploys a new commit first, watches CI for it, and rolls back to the last
//! validated commit when CI turns red.
//!
//! The lifecycle rules live in [`lifecycle`], a pure module; [`manifest`] loads and
//! validates the resources from YAML files; [`api`] defines the resources; [`cli`]
//! is the `vigie` command.

pub mod api;
pub mod backend;
pub mod ci;
pub mod cli;
pub mod dagster;
pub mod error;
pub mod forge;
pub mod git;
pub mod gitops;
pub mod history;
pub mod http;
pub mod lifecycle;
pub mod manifest;
pub mod metrics;
pub mod notify;
pub mod operator;
pub mod promote;
pub mod reconcile;
pub mod secrets;
pub mod standalone;
pub mod store;
#[cfg(test)]
mod testing;
pub mod web;
