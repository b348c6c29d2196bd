//! The executor's side of promises: completing one from outside, refusing to replay a worker
//! that would only suspend again, and resuming suspended workers whose promise was completed.
//!
//! A suspended worker is never in memory: its instance was unwound inside the invocation.
//! Resuming it is recovering it (replay up to the await, then live).

use std::sync::atomic::Ordering;

use super::{Executor, Turn};
use crate::error::{Error, Result};
use crate::ids::WorkerId;
use crate::outcome::{Deferred, Halt};
use crate::promises::{
    self, PromiseCompletion, PromiseId, Resumption, ResumptionOutcome, Suspension,
    RESUMES_PER_PASS_MAX,
};
use crate::worker_records::WorkerStatus;

impl Executor {
    /// Completes a promise with `data` (`golemw worker complete-promise`), then resumes every
    /// suspended worker that can go on (the awaiting one among them). Completing a promise that
    /// already was returns `completed: false` and still resumes a worker left waiting on it (a
    /// process stopped before resuming it). Unknown and deleted promises are errors.
    pub fn complete_promise(&self, id: &PromiseId, data: &[u8]) -> Result<PromiseCompletion> {
        let completed = promises::complete(&self.storage, id, data)?;
        let resumed = self.resume_ready_workers_now();
        Ok(PromiseCompletion { completed, resumed })
    }

    /// What a suspended worker awaits; `None` if it is not suspended.
    pub fn suspension(&self, id: &WorkerId) -> Result<Option<Suspension>> {
        let record = self.worker_record(id)?;
        promises::suspension(&self.storage, &record.uid)
    }

    /// Before recovering a worker: an interrupted one does not run until resumed; one
    /// suspended on a promise that is still pending would replay only to suspend again at the
    /// same await, so it is not recovered.
    pub(super) fn refuse_if_not_runnable(&self, id: &WorkerId) -> Result<(), Halt> {
        let record = match self.worker_record(id) {
            Ok(record) => record,
            // Recovery reports it.
            Err(_) => return Ok(()),
        };
        if record.status == WorkerStatus::Interrupted {
            return Err(Error::WorkerInterrupted { worker: id.clone() }.into());
        }
        if let Some(suspension) = promises::suspension(&self.storage, &record.uid)? {
            if !promises::is_ready(&self.storage, &suspension)? {
                return Err(Halt::Deferred(suspension.into_deferred()));
            }
        }
        // A worker asleep past the durable-sleep threshold would replay only to sleep again.
        if let (Some(min), Some(sleep)) = (
            self.options.durable_sleep_min,
            crate::sleeps::get(&self.storage, &record.uid)?,
        ) {
            let left = sleep.until_ms.saturating_sub(crate::oplog::now_ms());
            if crate::sleeps::suspends(std::time::Duration::from_millis(left), min) {
                return Err(Halt::Deferred(sleep.into_deferred()));
            }
        }
        Ok(())
    }

    /// After a recovery that succeeded: the worker is past any await it was suspended on.
    pub(super) fn forget_suspension(&self, turn: &mut Turn) -> Result<()> {
        let Some(active) = turn.active.as_mut() else {
            return Ok(());
        };
        let uid = active.worker.record.uid;
        if active.worker.record.status == WorkerStatus::Suspended {
            active.worker.record.status = WorkerStatus::Idle;
        }
        if promises::suspension(&self.storage, &uid)?.is_some() {
            promises::remove_suspension(&self.storage, &uid)?;
        }
        if crate::sleeps::get(&self.storage, &uid)?.is_some() {
            crate::sleeps::remove(&self.storage, &uid)?;
        }
        Ok(())
    }

    /// Resumes suspended workers whose promise was completed or deleted since the last look
    /// (by a guest's `complete-promise`, or from outside), once the calling invocation is over.
    pub(super) fn resume_ready_workers(&self) -> Vec<Resumption> {
        if promises::events() == self.promise_events_seen.load(Ordering::SeqCst) {
            return Vec::new();
        }
        // One thread resumes for all; one that finds another at it leaves it the work (the
        // other looks again until the events stop changing).
        if self.resuming.swap(true, Ordering::SeqCst) {
            return Vec::new();
        }
        let resumed = self.resume_ready_workers_now();
        self.resuming.store(false, Ordering::SeqCst);
        resumed
    }

    /// Resumes every suspended worker whose promise is no longer pending, repeatedly (a resumed
    /// invocation may complete further promises), at most [`RESUMES_PER_PASS_MAX`] of them.
    pub(super) fn resume_ready_workers_now(&self) -> Vec<Resumption> {
        let mut resumed = Vec::new();
        loop {
            self.promise_events_seen
                .store(promises::events(), Ordering::SeqCst);
            let ready = match promises::ready_suspensions(&self.storage) {
                // Interrupted workers wait for `worker resume`.
                Ok(ready) => ready
                    .into_iter()
                    .filter(|s| {
                        self.worker_record(&s.worker)
                            .is_ok_and(|r| r.status != WorkerStatus::Interrupted)
                    })
                    .collect::<Vec<_>>(),
                Err(err) => {
                    tracing::warn!(%err, "reading suspended workers failed");
                    return resumed;
                }
            };
            if ready.is_empty() {
                return resumed;
            }
            for suspension in ready {
                if resumed.len() >= RESUMES_PER_PASS_MAX {
                    tracing::warn!(
                        "resumed {RESUMES_PER_PASS_MAX} workers in one pass; the rest resume \
                         when next used"
                    );
                    return resumed;
                }
                resumed.push(self.resume(suspension));
            }
        }
    }

    /// Resumes one suspended worker: recovers it; its open invocation goes on live from the
    /// await.
    fn resume(&self, suspension: Suspension) -> Resumption {
        let id = suspension.worker.clone();
        let mut turn = self.turn(&id);
        turn.active = None;
        tracing::info!(worker = %id, promise = %suspension.promise, "resuming");
        let outcome = match self.activate(&mut turn, crate::worker::RecoveryMode::Auto) {
            Ok(active) => match active.recovery.resumed.clone() {
                Some(done) => match done.error {
                    Some(error) => ResumptionOutcome::Trapped { error },
                    None => ResumptionOutcome::Finished {
                        result: done.result,
                    },
                },
                // A process stopped after the invocation finished and before its suspension
                // was forgotten: the result is already stored.
                None => ResumptionOutcome::Finished {
                    result: self
                        .completed_invocation(
                            &suspension_uid(self, &id),
                            &suspension.idempotency_key,
                        )
                        .ok()
                        .flatten()
                        .and_then(|done| done.result),
                },
            },
            Err(Halt::Deferred(Deferred::Suspended { promise, .. })) => {
                ResumptionOutcome::SuspendedAgain { promise }
            }
            // Asleep again (its wake is scheduled by the activation), or trapped with a retry
            // scheduled: those waiting keep waiting.
            Err(Halt::Deferred(Deferred::Sleeping { until_ms, .. })) => {
                ResumptionOutcome::Sleeping { until_ms }
            }
            Err(Halt::Deferred(Deferred::RetryScheduled {
                attempt,
                delay,
                function,
                idempotency_key,
                ..
            })) => {
                self.schedule_retry(&id, &function, &idempotency_key, delay);
                ResumptionOutcome::RetryScheduled {
                    attempt,
                    delay_ms: delay.as_millis() as u64,
                }
            }
            Err(halt) => {
                let err = halt.into_error();
                // Not to be retried after every invocation: the next use of the worker says
                // what is wrong.
                if let Ok(record) = self.worker_record(&id) {
                    let _ = promises::remove_suspension(&self.storage, &record.uid);
                }
                ResumptionOutcome::Failed {
                    error: err.to_string(),
                }
            }
        };
        // Those waiting for the invocation hear how it went on.
        match &outcome {
            ResumptionOutcome::Finished { result } => {
                self.finish(&id, &suspension.idempotency_key, Ok(result.clone()))
            }
            ResumptionOutcome::Trapped { error } | ResumptionOutcome::Failed { error } => {
                self.finish(&id, &suspension.idempotency_key, Err(error.clone()))
            }
            ResumptionOutcome::SuspendedAgain { .. }
            | ResumptionOutcome::Sleeping { .. }
            | ResumptionOutcome::RetryScheduled { .. } => {}
        }
        // What was queued behind the suspended invocation runs now.
        if matches!(outcome, ResumptionOutcome::Finished { .. }) {
            self.drain_queue(&mut turn);
        }
        Resumption {
            worker: id,
            idempotency_key: suspension.idempotency_key,
            outcome,
        }
    }
}

fn suspension_uid(executor: &Executor, id: &WorkerId) -> uuid::Uuid {
    executor
        .worker_record(id)
        .map(|r| r.uid)
        .unwrap_or_default()
}
