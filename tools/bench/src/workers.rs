//! A golemw worker in a fresh data directory, driven through the public `Executor` API.

use anyhow::{Context as _, Result};
use golemw_runtime::{Executor, ExecutorOptions, WorkerId};

use crate::Ctx;

pub struct BenchWorker {
    executor: std::sync::Arc<Executor>,
    id: WorkerId,
    /// Dropped last: the executor holds the directory's LMDB environment.
    _dir: tempfile::TempDir,
}

impl BenchWorker {
    /// Adds `wasm` as a component, creates a worker and makes it active (so later invocations
    /// measure no recovery).
    pub fn new(ctx: &Ctx, wasm: &[u8], fsync: bool) -> Result<Self> {
        let dir = ctx.temp_dir()?;
        // Snapshots off: these figures measure the durability gate, not capture.
        let options = ExecutorOptions {
            echo_output: false,
            fsync,
            snapshot_policy: golemw_runtime::SnapshotPolicy::Off,
            ..ExecutorOptions::default()
        };
        let executor = Executor::open(dir.path(), options).context("opening the executor")?;
        executor
            .components()
            .add("bench", wasm)
            .context("adding the component")?;
        let id = executor.worker_id("bench", "bench")?;
        executor.create_worker(&id, Vec::new(), Vec::new())?;
        Ok(BenchWorker {
            executor,
            id,
            _dir: dir,
        })
    }

    /// One live invocation with WAVE params, no idempotency key (the executor makes one).
    pub fn invoke(&mut self, function: &str, params: &[String]) -> Result<Option<String>> {
        let outcome = self
            .executor
            .invoke(&self.id, function, params, None)
            .with_context(|| format!("invoking {function}"))?;
        Ok(outcome.result)
    }

    /// The worker's oplog length.
    pub fn oplog_len(&self) -> Result<u64> {
        Ok(self.executor.oplog_len(&self.id)?)
    }
}
