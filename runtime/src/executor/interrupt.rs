//! Interrupting and resuming workers (`golemw worker interrupt | resume`).
//!
//! One process holds a data directory at a time and a worker runs only inside a command, so
//! between commands no worker is running: interrupting marks the worker `interrupted` (durably),
//! and until it is resumed nothing runs it: invocations, recovery, snapshots and updates are
//! refused, and a promise it awaits can be completed but does not resume it. Resuming puts the
//! status back (`suspended` if it awaits a promise, else `idle`) and lets the worker go on: an
//! invocation that was in flight or suspended on a promise completed meanwhile is finished.

use super::Executor;
use crate::error::{Error, Result};
use crate::ids::WorkerId;
use crate::promises;
use crate::worker::WorkerStatus;

impl Executor {
    /// Marks a worker interrupted; returns the status it had. Interrupting an interrupted
    /// worker changes nothing; failed and exited workers cannot be interrupted.
    pub fn interrupt_worker(&mut self, id: &WorkerId) -> Result<WorkerStatus> {
        let mut record = self.worker_record(id)?;
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
        self.active.remove(id);
        record.status = WorkerStatus::Interrupted;
        self.put_record(&record)?;
        tracing::info!(worker = %id, previous = previous.as_str(), "interrupted");
        Ok(previous)
    }

    /// Resumes an interrupted worker; returns its status afterwards.
    pub fn resume_worker(&mut self, id: &WorkerId) -> Result<WorkerStatus> {
        let mut record = self.worker_record(id)?;
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
        match self.activate(id) {
            Ok(_) | Err(Error::Suspended { .. }) => {}
            Err(err) => return Err(err),
        }
        Ok(self.worker_record(id)?.status)
    }
}
