//! Invocations that finish later than they were asked for: queued ones (`invoke` without
//! waiting), ones whose worker went to sleep durably, and ones whose retry was scheduled. Their
//! callers wait on [`Executor::await_invocation`] without holding a thread; whoever finishes the
//! invocation hands them its outcome.

use std::sync::Arc;

use tokio::sync::oneshot;

use super::background::{Background, Due};
use super::{Executor, ExecutorOptions, Turn};
use crate::error::{Error, Result};
use crate::ids::WorkerId;
use crate::oplog::now_ms;
use crate::outcome::{Deferred, Invoked};
use crate::queue::{self, QueuedInvocation};
use crate::worker::RecoveryMode;

/// How a deferred invocation ended, as handed to those waiting for it: its WAVE result, or the
/// error's message.
pub type Finished = std::result::Result<Option<String>, String>;

/// Where a queued, sleeping or running invocation is.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "status", rename_all = "kebab-case")]
pub enum InvocationStatus {
    /// Queued, waiting for the worker: `position` invocations are ahead of it.
    Pending { position: usize },
    /// Running now.
    Running,
    /// Started, and its worker is suspended: sleeping until `until_ms`, or awaiting a promise.
    Suspended { until_ms: Option<u64> },
    /// Finished with this result (WAVE, or null for a function without one).
    Completed { result: Option<String> },
}

impl Executor {
    /// Opens a data directory for a long-running process (a server): like [`Executor::open`],
    /// plus background threads that wake sleeping workers at their due time and run queued
    /// invocations. Workers a previous process left sleeping or with queued invocations are
    /// scheduled at once (a sleep whose time has passed wakes now).
    pub fn serve(dir: &std::path::Path, options: ExecutorOptions) -> Result<Arc<Executor>> {
        let executor = Executor::open(dir, options)?;
        let background = Background::start(Arc::downgrade(&executor))
            .map_err(|e| Error::Engine(format!("starting background threads: {e}")))?;
        if executor.background.set(background).is_err() {
            unreachable!("a new executor has no background yet");
        }
        let sleeps = crate::sleeps::all(&executor.storage)?;
        tracing::info!(sleeping = sleeps.len(), "scheduling sleeping workers");
        for sleep in sleeps {
            executor.schedule(sleep.until_ms, Due::Wake(sleep.worker));
        }
        for worker in queue::workers(&executor.storage)? {
            executor.spawn_drain(worker);
        }
        // Workers a stopped process left to resume (their promise completed meanwhile).
        executor.spawn_job(Box::new(|ex| {
            ex.resume_ready_workers();
        }));
        Ok(executor)
    }

    /// Timers not yet due (sleeping workers, scheduled retries), for metrics and tests.
    pub fn pending_timers(&self) -> usize {
        self.background.get().map_or(0, Background::pending_timers)
    }

    /// A sleep the worker just recorded (live, or again in the recovery that resumed it) gets
    /// its timer: in a serving executor; in another, its next use brings the worker back. The
    /// one place sleeps are scheduled besides start-up, which schedules every stored one.
    pub(super) fn wake_when_due(&self, deferred: &Deferred) {
        if let Deferred::Sleeping {
            worker, until_ms, ..
        } = deferred
        {
            self.schedule(*until_ms, Due::Wake(worker.clone()));
        }
    }

    fn schedule(&self, at_ms: u64, due: Due) {
        match self.background.get() {
            Some(background) => background.schedule(at_ms, due),
            None => tracing::warn!(?due, "no timers in this process; done when next used"),
        }
    }

    /// Runs the next attempt of invocation `key` once `delay` has passed.
    pub(super) fn schedule_retry(
        &self,
        worker: &WorkerId,
        function: &str,
        key: &str,
        delay: std::time::Duration,
    ) {
        let due = Due::Retry {
            worker: worker.clone(),
            function: function.to_string(),
            idempotency_key: key.to_string(),
        };
        self.schedule(now_ms() + delay.as_millis() as u64, due);
    }

    fn spawn_job(&self, job: super::background::Job) {
        match self.background.get() {
            Some(background) => background.spawn(job),
            None => job(self),
        }
    }

    /// Runs what a timer made due.
    pub(super) fn spawn_due(&self, due: Due) {
        self.spawn_job(Box::new(move |ex| match due {
            Due::Wake(worker) => ex.wake(&worker),
            Due::Retry {
                worker,
                function,
                idempotency_key,
            } => ex.retry_deferred(&worker, &function, &idempotency_key),
        }));
    }

    fn spawn_drain(&self, worker: WorkerId) {
        self.spawn_job(Box::new(move |ex| {
            let turn = ex.turn(&worker);
            ex.drain_then_resume(turn);
        }));
    }

    /// A deferred invocation stopped again (slept, suspended, retry scheduled) or ended:
    /// schedules its retry, or hands its outcome to those waiting for it.
    pub(super) fn defer_or_finish(&self, worker: &WorkerId, key: &str, outcome: &Result<Invoked>) {
        match outcome {
            // Completing the promise resumes it, the timer set when the sleep was recorded
            // wakes it, the worker's wake runs what is queued behind it, a finished retry
            // drains the queue: those waiting keep waiting.
            Ok(Invoked::Deferred(
                Deferred::Sleeping { .. } | Deferred::Suspended { .. } | Deferred::Queued { .. },
            ))
            | Err(
                Error::WorkerSuspended { .. }
                | Error::WorkerBusy { .. }
                | Error::WorkerInterrupted { .. },
            ) => {}
            Ok(Invoked::Deferred(Deferred::RetryScheduled {
                delay,
                function,
                idempotency_key,
                ..
            })) => self.schedule_retry(worker, function, idempotency_key, *delay),
            Ok(Invoked::Completed(done)) => self.finish(worker, key, Ok(done.result.clone())),
            Err(err) => self.finish(worker, key, Err(err.to_string())),
        }
    }

    /// Hands the outcome of invocation `key` to everyone waiting for it.
    pub(super) fn finish(&self, worker: &WorkerId, key: &str, finished: Finished) {
        let waiting = self
            .waiters
            .lock()
            .expect("waiters poisoned")
            .remove(&(worker.clone(), key.to_string()));
        for waiter in waiting.into_iter().flatten() {
            let _ = waiter.send(finished.clone());
        }
    }

    /// Waits (without holding a thread) until invocation `key` of a worker has finished, and
    /// returns how. Fails at once for an invocation that is not queued, running, suspended or
    /// finished with a stored result.
    pub async fn await_invocation(&self, id: &WorkerId, key: &str) -> Result<Option<String>> {
        let (sender, receiver) = oneshot::channel();
        self.waiters
            .lock()
            .expect("waiters poisoned")
            .entry((id.clone(), key.to_string()))
            .or_default()
            .push(sender);
        // Registered first, looked at second: an invocation finishing in between is seen by one
        // or the other.
        match self.invocation_status(id, key)? {
            Some(InvocationStatus::Completed { result }) => return Ok(result),
            Some(_) => {}
            None => {
                return Err(Error::UnknownInvocation {
                    worker: id.clone(),
                    idempotency_key: key.to_string(),
                })
            }
        }
        match receiver.await {
            Ok(Ok(result)) => Ok(result),
            Ok(Err(message)) => Err(Error::DeferredFailed {
                worker: id.clone(),
                idempotency_key: key.to_string(),
                message,
            }),
            Err(_) => Err(Error::Engine("the executor stopped".into())),
        }
    }

    /// Where invocation `key` of a worker is; `None`: no such invocation is known (never
    /// queued, or it ended without a result to keep).
    pub fn invocation_status(&self, id: &WorkerId, key: &str) -> Result<Option<InvocationStatus>> {
        let record = self.worker_record(id)?;
        if let Some(done) = self.completed_invocation(&record.uid, key)? {
            if !record.history.deleted.contains(done.completed_at) {
                return Ok(Some(InvocationStatus::Completed {
                    result: done.result,
                }));
            }
        }
        if self.slots.running(id).as_deref() == Some(key) {
            return Ok(Some(InvocationStatus::Running));
        }
        if let Some(sleep) = crate::sleeps::get(&self.storage, &record.uid)? {
            if sleep.idempotency_key == key {
                return Ok(Some(InvocationStatus::Suspended {
                    until_ms: Some(sleep.until_ms),
                }));
            }
        }
        if let Some(suspension) = crate::promises::suspension(&self.storage, &record.uid)? {
            if suspension.idempotency_key == key {
                return Ok(Some(InvocationStatus::Suspended { until_ms: None }));
            }
        }
        let queued = queue::list(&self.storage, &record.uid)?;
        Ok(queued
            .iter()
            .position(|(_, q)| q.idempotency_key == key)
            .map(|position| InvocationStatus::Pending { position }))
    }

    /// Queues an invocation for a worker (creating the worker if it does not exist) and returns
    /// its idempotency key once it is durably queued; the worker runs it after those queued
    /// before it. The function and parameters are checked now: a wrong call is refused, not
    /// queued. A key that already completed is not queued again.
    pub fn enqueue(
        &self,
        id: &WorkerId,
        function: &str,
        params: &[String],
        idempotency_key: Option<&str>,
    ) -> Result<String> {
        let key = self.push_queued(id, function, params, idempotency_key)?;
        if self.background.get().is_some() {
            self.spawn_drain(id.clone());
        }
        Ok(key)
    }

    /// Checks and queues an invocation (see [`Executor::enqueue`]) without starting the
    /// worker on it: for a worker that is suspended, whose wake runs its queue.
    pub(super) fn push_queued(
        &self,
        id: &WorkerId,
        function: &str,
        params: &[String],
        idempotency_key: Option<&str>,
    ) -> Result<String> {
        super::check_idempotency_key(idempotency_key)?;
        let record = match self.worker_record(id) {
            Ok(record) => record,
            Err(Error::UnknownWorker(_)) => {
                let latest = self.components.latest_of(&id.component_id)?;
                let (_, interface) = self.module(id.component_id, latest.version)?;
                crate::worker::parse_params(&*interface.find_export(function)?, params)?;
                match self.create_worker(id, Vec::new(), Vec::new()) {
                    Ok(record) => record,
                    Err(Error::WorkerExists(_)) => self.worker_record(id)?,
                    Err(err) => return Err(err),
                }
            }
            Err(err) => return Err(err),
        };
        let (_, interface) = self.module(id.component_id, record.component_version)?;
        crate::worker::parse_params(&*interface.find_export(function)?, params)?;
        let key = idempotency_key
            .map(str::to_string)
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        if self.completed_invocation(&record.uid, &key)?.is_some() {
            return Ok(key);
        }
        queue::push(
            &self.storage,
            record.uid,
            QueuedInvocation {
                worker: id.clone(),
                function: function.to_string(),
                params: params.to_vec(),
                idempotency_key: key.clone(),
                queued_at_ms: now_ms(),
            },
        )?;
        tracing::debug!(worker = %id, key, "invocation queued");
        Ok(key)
    }

    /// Runs the worker's queued invocations, in order, inside `turn`, until none is left or the
    /// worker stops (sleeps, suspends, waits for a retry, fails). Each outcome goes to those
    /// waiting for it. Returns whether the queue is empty.
    pub(super) fn drain_queue(&self, turn: &mut Turn) -> bool {
        let id = turn.worker().clone();
        loop {
            let Ok(record) = self.worker_record(&id) else {
                return true; // deleted meanwhile
            };
            let (sequence, queued) = match queue::first(&self.storage, &record.uid) {
                Ok(Some(first)) => first,
                Ok(None) => return true,
                Err(err) => {
                    tracing::warn!(worker = %id, %err, "reading the invocation queue failed");
                    return false;
                }
            };
            // Suspended (asleep, or awaiting a promise): its wake or resumption drains the queue.
            if record.status == crate::worker_records::WorkerStatus::Suspended
                || record.status == crate::worker_records::WorkerStatus::Interrupted
            {
                return false;
            }
            let key = queued.idempotency_key.clone();
            let (outcome, requests) = self.invoke_turn(
                turn,
                &queued.function,
                &queued.params,
                Some(&key),
                false,
                super::Completion::Durable,
            );
            for request in requests {
                self.spawn_job(Box::new(move |ex| {
                    if let Err(err) =
                        ex.update_worker(&request.worker, request.target_version, request.mode)
                    {
                        tracing::warn!(worker = %request.worker, %err, "update-worker request failed");
                    }
                }));
            }
            let ended = !matches!(
                outcome,
                Ok(Invoked::Deferred(_))
                    | Err(Error::WorkerSuspended { .. }
                        | Error::WorkerBusy { .. }
                        | Error::WorkerInterrupted { .. }
                        | Error::Interrupted { .. })
            ) && !matches!(&outcome, Err(err) if is_storage_failure(err));
            self.defer_or_finish(&id, &key, &outcome);
            if !ended {
                return false;
            }
            if let Err(err) = queue::remove(&self.storage, &record.uid, sequence) {
                tracing::warn!(worker = %id, %err, "removing a queued invocation failed");
                return false;
            }
        }
    }

    /// Drains the worker's queue, gives up the turn, and resumes workers whose promises the
    /// drained invocations completed.
    fn drain_then_resume(&self, mut turn: Turn) {
        self.drain_queue(&mut turn);
        drop(turn);
        self.resume_ready_workers();
    }

    /// Brings back a worker suspended by a sleep whose time has come: recovery replays up to the
    /// sleep and goes on live, finishing the invocation. Then its queued invocations run.
    pub(super) fn wake(&self, id: &WorkerId) {
        let mut turn = self.turn(id);
        let key = match self
            .worker_record(id)
            .and_then(|record| crate::sleeps::get(&self.storage, &record.uid))
        {
            Ok(Some(sleep)) => sleep.idempotency_key,
            // Woken already (by an earlier timer, or another use of the worker).
            Ok(None) => return self.drain_then_resume(turn),
            Err(err) => {
                tracing::warn!(worker = %id, %err, "waking a sleeping worker failed");
                return;
            }
        };
        tracing::debug!(worker = %id, key, "waking");
        turn.active = None;
        let outcome = match self.activate(&mut turn, RecoveryMode::Auto) {
            Ok(active) => match active.recovery.resumed.clone() {
                Some(resumed) if resumed.idempotency_key == key => match resumed.error {
                    Some(error) => Err(Error::Trap {
                        function: "the woken invocation".into(),
                        message: error,
                    }),
                    None => Ok(completed(resumed.result)),
                },
                // Finished by another process or path: its result is stored.
                _ => self
                    .completed_invocation(&active.worker.record.uid, &key)
                    .map(|done| completed(done.and_then(|d| d.result))),
            },
            Err(halt) => Self::answer_halt(halt, &key),
        };
        super::drop_unless_kept(&mut turn, &outcome);
        self.defer_or_finish(id, &key, &outcome);
        if matches!(outcome, Ok(Invoked::Completed(_))) {
            self.drain_then_resume(turn);
        }
    }

    /// The next attempt of an invocation whose retry was scheduled by a deferred run.
    fn retry_deferred(&self, id: &WorkerId, function: &str, key: &str) {
        let outcome = self.continue_retry(id, function, key);
        self.defer_or_finish(id, key, &outcome);
        if matches!(outcome, Ok(Invoked::Completed(_))) {
            self.spawn_drain(id.clone());
        }
    }
}

/// An invocation that ran to the end now (not answered from its idempotency key).
fn completed(result: Option<String>) -> Invoked {
    Invoked::Completed(super::InvocationOutcome {
        result,
        from_idempotency_key: false,
    })
}

/// Whether an error is storage failing (the invocation did not happen as far as storage
/// knows: its queued row stays, to be run again).
fn is_storage_failure(err: &Error) -> bool {
    matches!(
        err,
        Error::Storage(_)
            | Error::StorageFull { .. }
            | Error::StorageLimit { .. }
            | Error::MapFull
            | Error::Io { .. }
    )
}
