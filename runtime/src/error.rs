//! The runtime's error type. Every variant a user can cause says what was wrong; what to do about
//! it depends on how the user reached the runtime, so the CLI and the HTTP API add their own
//! hints (`tools/src/hints.rs`, `tools/src/serve/api_error.rs`).

use crate::ids::{OplogIndex, WorkerId};

/// Result alias for the runtime.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Errors of the golemw runtime.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("storage error: {0}")]
    Storage(String),

    /// The LMDB map is full; [`crate::storage::Storage::write`] grows it and retries.
    #[error("storage is full (LMDB map full)")]
    MapFull,

    /// The disk holding the data directory is full: nothing of the failed write was kept.
    #[error("no space left on device in {dir} ({detail}); free some space and retry: nothing of the failed operation was kept")]
    StorageFull { dir: String, detail: String },

    /// The storage reached the limit it was given (`ExecutorOptions::max_storage_bytes`).
    #[error("the storage of {dir} reached its limit of {limit_bytes} bytes; nothing of the failed operation was kept")]
    StorageLimit { dir: String, limit_bytes: u64 },

    #[error("the data directory {path} is in use by another golemw process (pid {pid})")]
    DataDirLocked { path: String, pid: String },

    #[error("corrupt {what} in storage: {detail}")]
    Corrupt { what: String, detail: String },

    #[error("invalid component: {0}")]
    InvalidComponent(String),

    #[error("unknown component {0:?}")]
    UnknownComponent(String),

    #[error("component {name} has no version {version} (latest is {latest})")]
    UnknownComponentVersion {
        name: String,
        version: u64,
        latest: u64,
    },

    #[error("a component named {0:?} already exists")]
    ComponentExists(String),

    #[error("unknown worker {0}")]
    UnknownWorker(WorkerId),

    #[error("worker {0} already exists")]
    WorkerExists(WorkerId),

    #[error("invalid worker name: {0}")]
    InvalidWorkerName(String),

    #[error("{0}")]
    UnknownFunction(String),

    #[error("{0}")]
    InvalidArguments(String),

    #[error("worker {worker} has failed and cannot be invoked: {reason}")]
    WorkerFailed { worker: WorkerId, reason: String },

    #[error("worker {worker} has exited and cannot be invoked")]
    WorkerExited { worker: WorkerId },

    /// The invocation called `proc_exit` with a code other than 0: the worker is exited.
    #[error("the guest of worker {worker} exited with code {code} (proc_exit)")]
    GuestExited { worker: WorkerId, code: u32 },

    #[error("replay of worker {worker} diverged at oplog index {index}: {detail}")]
    Divergence {
        worker: WorkerId,
        index: OplogIndex,
        detail: String,
    },

    /// The worker went back in its history while (or after) running this invocation, deleting
    /// it; the invocation's effects are gone.
    #[error("worker {worker} went back to oplog index {target} (set-oplog-index); this invocation was undone")]
    InvocationUndone {
        worker: WorkerId,
        target: OplogIndex,
    },

    /// A new invocation of a suspended worker is refused until its promise is completed.
    #[error("worker {worker} is suspended (invocation {idempotency_key} awaits {promise}); complete-promise must complete it before the worker is invoked again")]
    WorkerSuspended {
        worker: WorkerId,
        promise: crate::ids::PromiseId,
        idempotency_key: String,
    },

    /// An operation that needs the worker between invocations found one deferred (asleep,
    /// retrying): `why` says which.
    #[error("{why}; the worker cannot do this until that invocation is over")]
    WorkerBusy { worker: WorkerId, why: String },

    #[error("worker {worker} is interrupted; resuming it lets it run again")]
    WorkerInterrupted { worker: WorkerId },

    #[error("worker {worker} has no invocation with idempotency key {idempotency_key:?} queued, running or finished with a result")]
    UnknownInvocation {
        worker: WorkerId,
        idempotency_key: String,
    },

    /// A queued, sleeping or retried invocation ended with an error (in the background).
    #[error("invocation {idempotency_key} of worker {worker} failed: {message}")]
    DeferredFailed {
        worker: WorkerId,
        idempotency_key: String,
        message: String,
    },

    /// A completed idempotency key repeated for another call (Stripe answers such a request
    /// 422 rather than replay the first call's result for it).
    #[error("idempotency key {idempotency_key:?} of worker {worker} belongs to another invocation: {detail}")]
    IdempotencyKeyReused {
        worker: WorkerId,
        idempotency_key: String,
        detail: String,
    },

    #[error("worker {worker} has {max} invocations queued already; wait for some to run")]
    QueueFull { worker: WorkerId, max: usize },

    /// The running invocation was stopped by an interrupt request (Golem's wording). Its
    /// entries so far are kept; `worker resume` finishes it.
    #[error("Interrupted via the Golem API (worker {worker}); resuming the worker finishes the invocation")]
    Interrupted { worker: WorkerId },

    #[error("worker {worker} cannot be {action}: it is {status}")]
    InvalidStatus {
        worker: WorkerId,
        action: &'static str,
        status: &'static str,
    },

    #[error("unknown {0}: no create-promise made it")]
    UnknownPromise(crate::ids::PromiseId),

    #[error("{0} was deleted (delete-promise)")]
    PromiseDeleted(crate::ids::PromiseId),

    #[error("invalid revert of worker {worker}: {reason}")]
    InvalidRevert { worker: WorkerId, reason: String },

    #[error("cannot fork worker {worker}: {reason}")]
    InvalidFork { worker: WorkerId, reason: String },

    #[error("update of worker {worker} to version {version} failed: {reason}; it stays on version {current}")]
    UpdateFailed {
        worker: WorkerId,
        version: u64,
        current: u64,
        reason: String,
    },

    /// Raised at a host call of an invocation that ran past its deadline; the worker turns it
    /// into a trap (and the retry policy applies).
    #[error("the invocation of worker {worker} ran past its deadline of {deadline:?}")]
    DeadlineExceeded {
        worker: WorkerId,
        deadline: std::time::Duration,
    },

    #[error("invocation of {function} trapped: {message}")]
    Trap { function: String, message: String },

    #[error("wasm engine error: {0}")]
    Engine(String),

    #[error("{0}")]
    Abi(#[from] crate::abi::AbiError),

    #[error("I/O error on {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}

impl From<lmdb::Error> for Error {
    fn from(err: lmdb::Error) -> Self {
        /// ENOSPC and EDQUOT: what LMDB returns when a write or fsync finds the disk full.
        const NO_SPACE: [i32; 2] = [28, 122];
        match err {
            lmdb::Error::MapFull => Error::MapFull,
            lmdb::Error::Other(code) if NO_SPACE.contains(&code) => Error::StorageFull {
                dir: String::new(),
                detail: err.to_string(),
            },
            err => Error::Storage(err.to_string()),
        }
    }
}

impl Error {
    pub(crate) fn io(path: impl AsRef<std::path::Path>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.as_ref().display().to_string(),
            source,
        }
    }
}
