//! Git as a source of desired state: manifests read from a branch of a repository
//! ([`source`], [`repo`]), and tracking rules that move Releases to the commits a
//! branch or tag pattern names ([`track`], carried out the same way in both modes by
//! [`tracking`]), written back to the manifests repository when git is the source of
//! truth ([`writeback`]).

pub mod push;
pub mod repo;
pub mod source;
pub mod track;
pub mod tracker;
pub mod tracking;
pub mod writeback;
