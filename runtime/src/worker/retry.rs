//! Retrying an invocation that trapped, by the worker's retry policy
//! (`crate::host::persistence::RetryPolicy`).
//!
//! A retry reuses the deletion machinery of time travel: the failed attempt is recorded (an
//! `error` entry) and then discarded (a `discarded` entry deleting it, and the region added to
//! the record's history, in one durable transaction), and the worker status becomes
//! `retrying`. The executor waits the backoff delay and recovers the worker: replay stops at the
//! start of the discarded region, inside the invocation, and the invocation finishes live, as
//! an invocation interrupted by a crash would. The region discarded is the whole attempt (all
//! after its `exported-function-invoked` entry), or, when the trap came inside an atomic
//! region, that region only (the outermost one still open): what ran before it is replayed.
//!
//! A process that stops while a worker is `retrying` loses nothing: the next activation
//! recovers the worker, which finishes the invocation live (without waiting the delay again).

use super::{Worker, WorkerStatus};
use crate::error::Result;
use crate::history::Region;
use crate::ids::OplogIndex;
use crate::oplog::{now_ms, DiscardReason, OplogEntry};
use crate::outcome::Deferred;

impl Worker {
    /// An invocation whose `exported-function-invoked` entry is at `index` starts, live or
    /// replayed: resets the per-invocation host state.
    pub(super) fn begin_invocation(&mut self, index: OplogIndex, idempotency_key: &str) {
        let state = self.env.as_mut(&mut self.store);
        state.invocation_key.clear();
        state.invocation_key.push_str(idempotency_key);
        state.persistence.begin_invocation(index);
        state.gate.take_unrecorded();
        state.gate.begin_output();
    }

    /// The running invocation trapped with `message`. If the retry policy allows another
    /// attempt, discards this one durably, marks the worker `retrying` and returns the
    /// [`Deferred::RetryScheduled`] that tells the executor to wait and recover; `None` when the
    /// retries are used up (the worker then fails as before).
    pub(super) fn schedule_retry(
        &mut self,
        function: &str,
        idempotency_key: &str,
        message: &str,
    ) -> Result<Option<Deferred>> {
        let state = self.env.as_ref(&self.store);
        let policy = state.persistence.retry_policy.clone();
        let invoked = state.persistence.invocation_start;
        let region_start = state
            .persistence
            .open_regions
            .first()
            .copied()
            .unwrap_or(invoked + 1);
        let retries_done = self.record.retry_count;
        if invoked == 0 || retries_done >= u64::from(policy.max_attempts) {
            return Ok(None);
        }
        let delay = policy.delay(retries_done);
        let attempt = retries_done + 1;
        let failed_at = self.gate().append(OplogEntry::Error {
            timestamp_ms: now_ms(),
            message: message.to_string(),
        })?;
        let region = Region {
            start: region_start,
            end: failed_at,
        };
        let at = self.gate().append(OplogEntry::Discarded {
            timestamp_ms: now_ms(),
            start: region.start,
            end: region.end,
            reason: DiscardReason::Retry {
                attempt,
                delay_ms: delay.as_millis() as u64,
            },
        })?;
        self.record.history.delete(region);
        self.record.component_version = self.record.history.version();
        self.record.status = WorkerStatus::Retrying;
        self.record.retry_count = attempt;
        self.record.last_error = Some(message.to_string());
        self.record.oplog_len = at;
        self.commit_record(true)?;
        tracing::info!(
            worker = %self.record.id, attempt, ?delay, %region, %message,
            "invocation trapped; retry scheduled"
        );
        Ok(Some(Deferred::RetryScheduled {
            worker: self.record.id.clone(),
            function: function.to_string(),
            idempotency_key: idempotency_key.to_string(),
            attempt,
            delay,
        }))
    }
}
