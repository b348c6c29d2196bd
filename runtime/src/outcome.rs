//! How work on a worker ends when it does not end with a result, and nothing failed.
//!
//! A guest can be unwound mid-invocation for reasons that are not errors: it jumped back in
//! its history (`set-oplog-index`), it awaits a promise that is not complete, it sleeps past
//! the durable-sleep threshold. And an invocation can end its run without finishing: suspended,
//! asleep, queued behind one of those, or trapped with a retry scheduled. These travel as
//! values of their own, never as [`Error`]s, at three levels:
//!
//! - [`Unwind`]: a host function stops the guest; kept in the gate until the worker settles it.
//! - [`Halt`]: the worker layer's way out of a call or a recovery: failed, jumped, or deferred.
//! - [`Invoked`]: what the executor answers an invocation: completed, or [`Deferred`].

use std::time::Duration;

use crate::error::Error;
use crate::ids::{OplogIndex, PromiseId, WorkerId};

/// Why a host function unwound the guest; the worker records it durably (a jump, a
/// suspension, a sleep) before anything above it learns of it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Unwind {
    /// `set-oplog-index(target)`, live and valid.
    #[error("the guest went back to oplog index {target}")]
    Jump { target: OplogIndex },
    /// `await-promise` of a promise that is not complete.
    #[error("the guest awaits {promise}, which is not complete")]
    AwaitPromise { promise: PromiseId },
    /// A sleep past the durable-sleep threshold, due at `until_ms` (ms since the epoch).
    #[error("the guest sleeps until {until_ms} ms since the epoch")]
    Sleep { until_ms: u64 },
}

/// An invocation that is not over and has not failed: something brings it back later.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Deferred {
    /// It awaits a promise that is not complete: the worker is suspended. Completing the
    /// promise resumes it.
    #[error("worker {worker} is suspended: invocation {idempotency_key} awaits {promise}")]
    Suspended {
        worker: WorkerId,
        promise: PromiseId,
        idempotency_key: String,
    },
    /// It sleeps until `until_ms`: the worker is suspended and is brought back at that time.
    #[error("worker {worker} is sleeping until {until_ms} ms since the epoch (invocation {idempotency_key})")]
    Sleeping {
        worker: WorkerId,
        until_ms: u64,
        idempotency_key: String,
    },
    /// The worker is in another invocation that is suspended: this one runs once that is over.
    #[error("worker {worker} is busy with a suspended invocation; invocation {idempotency_key} is queued behind it")]
    Queued {
        worker: WorkerId,
        idempotency_key: String,
    },
    /// It trapped and a retry is scheduled (the attempt is deleted from history). With
    /// `ExecutorOptions::wait_for_retries` off this is answered; `Executor::continue_retry`
    /// goes on once `delay` has passed.
    #[error("worker {worker} trapped; retry {attempt} of invocation {idempotency_key} is scheduled in {delay:?}")]
    RetryScheduled {
        worker: WorkerId,
        /// The export's display name.
        function: String,
        idempotency_key: String,
        attempt: u64,
        delay: Duration,
    },
}

impl Deferred {
    /// The worker whose invocation is deferred.
    pub fn worker(&self) -> &WorkerId {
        match self {
            Deferred::Suspended { worker, .. }
            | Deferred::Sleeping { worker, .. }
            | Deferred::Queued { worker, .. }
            | Deferred::RetryScheduled { worker, .. } => worker,
        }
    }

    /// The idempotency key of the deferred invocation.
    pub fn idempotency_key(&self) -> &str {
        match self {
            Deferred::Suspended {
                idempotency_key, ..
            }
            | Deferred::Sleeping {
                idempotency_key, ..
            }
            | Deferred::Queued {
                idempotency_key, ..
            }
            | Deferred::RetryScheduled {
                idempotency_key, ..
            } => idempotency_key,
        }
    }

    /// Whether the worker's instance is gone with it (the guest was unwound, or the attempt
    /// discarded): everything but `Queued`, which touched nothing.
    pub fn drops_instance(&self) -> bool {
        !matches!(self, Deferred::Queued { .. })
    }

    /// The refusal another operation gets from a worker whose invocation is deferred.
    pub fn refusal(self) -> Error {
        match self {
            Deferred::Suspended {
                worker,
                promise,
                idempotency_key,
            } => Error::WorkerSuspended {
                worker,
                promise,
                idempotency_key,
            },
            deferred => Error::WorkerBusy {
                worker: deferred.worker().clone(),
                why: deferred.to_string(),
            },
        }
    }
}

/// The result of an invocation that completed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InvocationOutcome {
    /// WAVE text of the result; `None` for functions without a result.
    pub result: Option<String>,
    /// True when the idempotency key had already completed and the stored result was returned.
    pub from_idempotency_key: bool,
}

/// How an invocation answered by the executor ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Invoked {
    /// It ran to the end (now, or earlier under the same idempotency key).
    Completed(InvocationOutcome),
    /// It is not over; see [`Deferred`]. `Executor::await_invocation` waits for it.
    Deferred(Deferred),
}

impl Invoked {
    /// The outcome of a completed invocation, else how it was deferred.
    pub fn completed(self) -> Result<InvocationOutcome, Deferred> {
        match self {
            Invoked::Completed(outcome) => Ok(outcome),
            Invoked::Deferred(deferred) => Err(deferred),
        }
    }
}

/// Why the worker layer stopped short of a result: the call failed, or the guest jumped back
/// in history (the executor recovers the worker), or the invocation was deferred.
#[derive(Debug, thiserror::Error)]
pub enum Halt {
    #[error(transparent)]
    Failed(Error),
    #[error("the guest went back to oplog index {target}")]
    Jumped { target: OplogIndex },
    #[error(transparent)]
    Deferred(Deferred),
}

impl From<Error> for Halt {
    fn from(err: Error) -> Self {
        Halt::Failed(err)
    }
}

impl From<crate::abi::AbiError> for Halt {
    fn from(err: crate::abi::AbiError) -> Self {
        Halt::Failed(err.into())
    }
}

impl Halt {
    /// For operations that need the worker between invocations (snapshot, update, digest):
    /// a deferred invocation is a refusal. A jump never gets here (recovery settles it).
    pub fn into_error(self) -> Error {
        match self {
            Halt::Failed(err) => err,
            Halt::Deferred(deferred) => deferred.refusal(),
            Halt::Jumped { target } => Error::Engine(format!(
                "a jump back to oplog index {target} was left unsettled"
            )),
        }
    }
}
