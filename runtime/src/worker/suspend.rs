//! Suspension: an invocation awaits a promise that is not complete.
//!
//! The guest has been unwound (like a jump, but nothing is deleted and no completion is
//! recorded): the invocation stays open in the oplog. What is durable afterwards, in one
//! transaction: the entries up to (not including) the await, the worker record with status
//! `suspended`, and the worker's row in the `suspensions` table naming the promise and the
//! invocation. The instance is dropped by the executor; resuming is recovering, which replays up
//! to the await and goes on live.

use super::{Worker, WorkerStatus};
use crate::error::Error;
use crate::ids::PromiseId;
use crate::oplog::now_ms;
use crate::outcome::Halt;
use crate::promises::{self, Suspension};
use crate::sleeps::Sleep;

impl Worker {
    /// The invocation `idempotency_key` awaits `promise`, which is not complete: records the
    /// suspension durably and returns it as the halt to report.
    pub(super) fn suspend(&mut self, promise: PromiseId, idempotency_key: &str) -> Halt {
        let suspension = Suspension {
            worker: self.record.id.clone(),
            promise,
            idempotency_key: idempotency_key.to_string(),
            since_ms: now_ms(),
        };
        self.record.status = WorkerStatus::Suspended;
        self.record.oplog_len = self.oplog_len();
        let uid = self.record.uid;
        let storage = std::sync::Arc::clone(&self.storage);
        tracing::info!(worker = %self.record.id, promise = %suspension.promise, "suspended");
        let row = suspension.clone();
        // A sleep it woke from is over: the worker is in one deferral at a time.
        let committed = self.commit_record_with(true, move |txn| {
            crate::sleeps::delete(txn, &storage, &uid)?;
            promises::put_suspension(txn, &storage, &uid, &row)
        });
        match committed {
            Ok(()) => Halt::Deferred(suspension.into_deferred()),
            Err(err) => Halt::Failed(err),
        }
    }
}

impl Worker {
    /// The invocation `idempotency_key` sleeps until `until_ms`, long enough to suspend the
    /// worker (its due time is recorded in the oplog). Records the suspension durably, with the
    /// worker's row in `sleeps`, and returns it as the halt to report.
    pub(super) fn sleep(&mut self, until_ms: u64, idempotency_key: &str) -> Halt {
        let sleep = Sleep {
            worker: self.record.id.clone(),
            until_ms,
            idempotency_key: idempotency_key.to_string(),
            since_ms: now_ms(),
        };
        self.record.status = WorkerStatus::Suspended;
        self.record.oplog_len = self.oplog_len();
        let uid = self.record.uid;
        let storage = std::sync::Arc::clone(&self.storage);
        tracing::info!(worker = %self.record.id, until_ms, "sleeping");
        let row = sleep.clone();
        // An await it resumed from is over: the worker is in one deferral at a time.
        let committed = self.commit_record_with(true, move |txn| {
            promises::delete_suspension(txn, &storage, &uid)?;
            crate::sleeps::put(txn, &storage, &uid, &row)
        });
        match committed {
            Ok(()) => Halt::Deferred(sleep.into_deferred()),
            Err(err) => Halt::Failed(err),
        }
    }

    /// The running invocation was interrupted: commits what it recorded so far with the record
    /// (status `interrupted`), durably, and returns the error to report. `worker resume`
    /// recovers the worker, which finishes the invocation live.
    pub(super) fn interrupted(&mut self) -> Error {
        self.record.status = WorkerStatus::Interrupted;
        self.record.oplog_len = self.oplog_len();
        tracing::info!(worker = %self.record.id, "invocation interrupted");
        match self.commit_record(true) {
            Ok(()) => Error::Interrupted {
                worker: self.record.id.clone(),
            },
            Err(err) => err,
        }
    }
}
