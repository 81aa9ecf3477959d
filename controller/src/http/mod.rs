//! The HTTP side of both modes: the listener every outsider reaches, bounded.

pub mod listener;
