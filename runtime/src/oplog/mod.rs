//! The operation log: what a worker did, in order, so it can be replayed.

pub mod entry;
pub mod store;

pub use entry::{now_ms, DiscardReason, HostFunction, HostValue, LogStream, OplogEntry};
