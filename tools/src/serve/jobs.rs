//! Runs the HTTP handlers' work on the executor. The executor is shared by every request:
//! invocations of different workers run in parallel on tokio's blocking threads (guest code and
//! LMDB commits block), those of one worker one at a time in arrival order (the worker's turn,
//! awaited without holding a thread). Commits of concurrent invocations meet in one LMDB
//! transaction and one pair of fsyncs (group commit).

use std::sync::Arc;

use golemw_runtime::{Executor, Turn, WorkerId};

use super::api_error::ApiError;

/// A handle to the shared executor; cheap to clone.
#[derive(Clone)]
pub struct Jobs {
    executor: Arc<Executor>,
}

impl Jobs {
    pub fn new(executor: Arc<Executor>) -> Self {
        Jobs { executor }
    }

    /// The executor, for what is quick and never waits for a worker (reading records).
    pub fn executor(&self) -> &Executor {
        &self.executor
    }

    /// Runs `job` on a blocking thread and returns what it returned. A job that panics answers
    /// 500; the worker whose turn it held is recovered from storage by its next turn.
    pub async fn run<T: Send + 'static>(
        &self,
        job: impl FnOnce(&Executor) -> T + Send + 'static,
    ) -> Result<T, ApiError> {
        let executor = Arc::clone(&self.executor);
        match tokio::task::spawn_blocking(move || job(&executor)).await {
            Ok(value) => Ok(value),
            Err(err) => {
                let panic = err
                    .try_into_panic()
                    .map(|panic| {
                        panic
                            .downcast_ref::<String>()
                            .cloned()
                            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                            .unwrap_or_else(|| "unknown panic".into())
                    })
                    .unwrap_or_else(|_| "the job was cancelled".into());
                tracing::error!(%panic, "a request panicked");
                Err(ApiError::internal(format!("internal error: {panic}")))
            }
        }
    }

    /// Waits for the worker's turn (holding no thread), then runs `job` with it on a blocking
    /// thread.
    pub async fn in_turn<T: Send + 'static>(
        &self,
        id: &WorkerId,
        job: impl FnOnce(&Executor, Turn) -> T + Send + 'static,
    ) -> Result<T, ApiError> {
        let turn = self.executor.turn_async(id).await;
        self.run(move |ex| job(ex, turn)).await
    }
}
