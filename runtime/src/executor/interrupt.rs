//! Interrupting and resuming workers (`golemw worker interrupt | resume`).
//!
//! Interrupting stops an invocation running on the worker (at its next host call, or sooner by
//! Wasmer's interrupter for guest code that makes none: see [`Executor::stop_running`]), whose
//! entries so far are committed, and marks the worker `interrupted` (durably). Until it is
//! resumed nothing runs it: invocations, recovery, snapshots and updates are refused, and a
//! promise it awaits can be completed but does not resume it. Resuming puts the status back
//! (`suspended` if it awaits a promise, else `idle`) and lets the worker go on: an invocation
//! that was in flight, interrupted, or suspended on a promise completed meanwhile is finished.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::Executor;

/// How often an interrupt is sent again while the invocation has not stopped.
const INTERRUPT_RESEND: Duration = Duration::from_millis(5);
use crate::error::{Error, Result};
use crate::ids::WorkerId;
use crate::outcome::{Deferred, Halt};
use crate::promises;
use crate::worker_records::WorkerStatus;

impl Executor {
    /// Marks a worker interrupted; returns the status it had. Interrupting an interrupted
    /// worker changes nothing; failed and exited workers cannot be interrupted.
    pub fn interrupt_worker(&self, id: &WorkerId) -> Result<WorkerStatus> {
        let stopped_running = self.stop_running(id);
        let mut turn = self.turn(id);
        let mut record = self.stored_record(id)?;
        if stopped_running && record.status == WorkerStatus::Interrupted {
            // The running invocation stopped and recorded the interruption itself.
            turn.active = None;
            return Ok(WorkerStatus::Running);
        }
        let previous = record.status;
        match previous {
            WorkerStatus::Interrupted => return Ok(previous),
            WorkerStatus::Failed | WorkerStatus::Exited => {
                return Err(Error::InvalidStatus {
                    worker: id.clone(),
                    action: "interrupted",
                    status: previous.as_str(),
                })
            }
            _ => {}
        }
        turn.active = None;
        record.status = WorkerStatus::Interrupted;
        self.put_record(&record)?;
        tracing::info!(worker = %id, previous = previous.as_str(), "interrupted");
        Ok(previous)
    }

    /// Stops the invocation running on the worker, if one is: the gate refuses its next host
    /// call, and Wasmer's interrupter traps guest code that makes none (a signal to the thread
    /// running it, which can miss a guest that is just entering wasm: it is sent again every
    /// [`INTERRUPT_RESEND`] until the invocation's turn ends). Returns whether one was running;
    /// waits for it to stop.
    fn stop_running(&self, id: &WorkerId) -> bool {
        let Some(interrupt) = self.slots.interrupt_of(id) else {
            return false;
        };
        interrupt.requested.interrupt();
        let done = Arc::new(AtomicBool::new(false));
        let resend = {
            let done = Arc::clone(&done);
            std::thread::spawn(move || {
                while !done.load(Ordering::SeqCst) {
                    interrupt.wasm.interrupt();
                    std::thread::sleep(INTERRUPT_RESEND);
                }
            })
        };
        // Our turn comes once the running invocation has stopped and given its turn up.
        drop(self.turn(id));
        done.store(true, Ordering::SeqCst);
        let _ = resend.join();
        true
    }

    /// Resumes an interrupted worker; returns its status afterwards.
    pub fn resume_worker(&self, id: &WorkerId) -> Result<WorkerStatus> {
        let mut turn = self.turn(id);
        let mut record = self.stored_record(id)?;
        if record.status != WorkerStatus::Interrupted {
            return Err(Error::InvalidStatus {
                worker: id.clone(),
                action: "resumed",
                status: record.status.as_str(),
            });
        }
        let suspension = promises::suspension(&self.storage, &record.uid)?;
        record.status = if suspension.is_some() {
            WorkerStatus::Suspended
        } else {
            WorkerStatus::Idle
        };
        self.put_record(&record)?;
        // Bring it back now: an in-flight invocation, or one whose promise was completed while
        // it was interrupted, finishes here.
        turn.active = None;
        match self.activate(&mut turn, crate::worker::RecoveryMode::Auto) {
            // Its invocation went on and stopped again, not failing (suspended, asleep,
            // retrying): the status says so.
            Ok(_) => {}
            Err(Halt::Deferred(Deferred::RetryScheduled {
                function,
                idempotency_key,
                delay,
                ..
            })) => self.schedule_retry(id, &function, &idempotency_key, delay),
            Err(Halt::Deferred(_)) => {}
            Err(halt) => return Err(halt.into_error()),
        }
        drop(turn);
        Ok(self.worker_record(id)?.status)
    }
}
