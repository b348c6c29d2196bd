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
        Self::with_limits(ctx, wasm, fsync, false)
    }

    /// As [`BenchWorker::new`]; with `limits`, under the limits `golemw serve` sets by default:
    /// a 60 s invocation deadline (the watchdog watches every call), long calls confined after
    /// 50 ms, and at most 1 GiB of linear memory (Wasmer's tunables check every `memory.grow`).
    pub fn with_limits(ctx: &Ctx, wasm: &[u8], fsync: bool, limits: bool) -> Result<Self> {
        let dir = ctx.temp_dir()?;
        // Snapshots off: these figures measure the durability gate, not capture.
        let mut options = ExecutorOptions {
            echo_output: false,
            fsync,
            snapshot_policy: golemw_runtime::SnapshotPolicy::Off,
            ..ExecutorOptions::default()
        };
        if limits {
            options.invocation_deadline = Some(std::time::Duration::from_secs(60));
            options.confine_after = Some(golemw_runtime::watchdog::DEFAULT_CONFINE_AFTER);
            options.max_memory_bytes = Some(1 << 30);
        }
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
            .done()
            .with_context(|| format!("invoking {function}"))?;
        Ok(outcome.result)
    }

    /// The worker's oplog length.
    pub fn oplog_len(&self) -> Result<u64> {
        Ok(self.executor.oplog_len(&self.id)?)
    }
}

/// An invocation a benchmark expects to complete: its outcome, or an error saying why not (a
/// deferral included).
pub trait Completes {
    fn done(self) -> Result<golemw_runtime::InvocationOutcome>;
}

impl Completes for std::result::Result<golemw_runtime::Invoked, golemw_runtime::Error> {
    fn done(self) -> Result<golemw_runtime::InvocationOutcome> {
        self?
            .completed()
            .map_err(|deferred| anyhow::anyhow!("the invocation did not complete: {deferred}"))
    }
}
