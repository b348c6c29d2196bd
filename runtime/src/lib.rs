//! golemw-runtime: durable WebAssembly workers on Wasmer.
//!
//! Data flows one way: an invocation enters the [`executor`], runs in a [`worker`] whose host
//! calls pass through the durability [`gate`], which appends to the [`oplog`] in [`storage`].
//! Recovery runs the other way: oplog -> gate (replay) -> worker.

pub mod abi;
pub mod blobstore;
pub mod check;
pub mod component;
pub mod component_binary;
pub mod error;
pub mod executor;
pub mod forks;
pub mod gate;
pub mod history;
pub mod host;
pub mod ids;
pub mod keyvalue;
pub mod memory_limit;
pub mod metrics;
pub mod oplog;
pub mod outcome;
pub mod output_tap;
pub mod promises;
pub mod queue;
pub mod rpc;
pub mod sleeps;
pub mod snapshots;
pub mod stop;
pub mod storage;
pub mod stubs;
pub mod watchdog;
pub mod wit_value;
pub mod worker;
pub mod worker_filter;
pub mod worker_records;

#[cfg(test)]
mod untrusted_input_tests;

pub use error::{Error, Result};
pub use executor::{Executor, ExecutorOptions, InvocationOutcome, Turn};
pub use ids::{ComponentId, OplogIndex, WorkerId};
pub use outcome::{Deferred, Invoked};
pub use snapshots::Policy as SnapshotPolicy;
pub use worker::RecoveryMode;
pub use worker_records::{RecoveryReport, WorkerRecord, WorkerStatus, WorkerStore};
