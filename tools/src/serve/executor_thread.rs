//! The one thread that owns the executor. Wasmer stores and the LMDB writer are used from it
//! alone; HTTP handlers send it jobs and await their answers, so requests run one at a time, in
//! the order their bodies finished arriving.

use std::panic::AssertUnwindSafe;
use std::sync::mpsc;
use std::thread::JoinHandle;

use golemw_runtime::{Executor, ExecutorOptions};

use super::api_error::ApiError;
use crate::commands::Context;

/// A job for the executor; returns whether it panicked.
type Job = Box<dyn FnOnce(&mut Executor) -> bool + Send>;

/// A handle to send jobs to the executor's thread; cheap to clone.
#[derive(Clone)]
pub struct ExecutorThread {
    jobs: mpsc::Sender<Job>,
}

impl ExecutorThread {
    /// Opens the data directory on a new thread; fails as opening it fails (e.g. another
    /// process holds it). The thread ends when every handle is dropped.
    pub fn start(ctx: Context) -> anyhow::Result<(Self, JoinHandle<()>)> {
        // A trapped invocation's retry backoff is waited out on a timer (see the invoke
        // route), not by sleeping the thread every request runs on.
        let options = ExecutorOptions {
            wait_for_retries: false,
            ..ctx.executor_options()
        };
        let (jobs, queue) = mpsc::channel::<Job>();
        let (opened, open_result) = mpsc::sync_channel(1);
        let thread = std::thread::Builder::new()
            .name("golemw-executor".into())
            .spawn(move || {
                let mut executor = match ctx.executor_with(options.clone()) {
                    Ok(executor) => {
                        let _ = opened.send(Ok(()));
                        executor
                    }
                    Err(err) => {
                        let _ = opened.send(Err(err));
                        return;
                    }
                };
                for job in queue {
                    if !job(&mut executor) {
                        continue;
                    }
                    // A panic may have left a worker's instance half-run in memory, with
                    // entries not committed: drop every instance with the executor, and let
                    // the next activations recover the workers from storage.
                    tracing::error!("reopening the data directory after a panic");
                    drop(executor);
                    executor = match ctx.executor_with(options.clone()) {
                        Ok(executor) => executor,
                        Err(err) => {
                            tracing::error!(%err, "could not reopen the data directory; no more requests are served");
                            return;
                        }
                    };
                }
            })?;
        match open_result.recv() {
            Ok(Ok(())) => Ok((ExecutorThread { jobs }, thread)),
            Ok(Err(err)) => Err(err),
            Err(_) => anyhow::bail!("the executor thread stopped while opening the data directory"),
        }
    }

    /// Runs `job` on the executor's thread and returns what it returned. A job that panics
    /// answers 500, and the executor is reopened before the next job (see [`Self::start`]).
    pub async fn run<T: Send + 'static>(
        &self,
        job: impl FnOnce(&mut Executor) -> T + Send + 'static,
    ) -> Result<T, ApiError> {
        let (answer, answered) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move |executor: &mut Executor| {
            let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| job(executor)));
            let panicked = outcome.is_err();
            let _ = answer.send(outcome.map_err(|panic| {
                panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "unknown panic".into())
            }));
            panicked
        });
        self.jobs
            .send(job)
            .map_err(|_| ApiError::internal("the executor thread has stopped"))?;
        match answered.await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(panic)) => {
                tracing::error!(%panic, "a request panicked on the executor thread");
                Err(ApiError::internal(format!("internal error: {panic}")))
            }
            Err(_) => Err(ApiError::internal("the executor thread has stopped")),
        }
    }
}
