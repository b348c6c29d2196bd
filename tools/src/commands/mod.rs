//! One module per command group; each turns parsed arguments into executor calls and output.

pub mod component;
pub mod promise;
pub mod run;
pub mod snapshot;
pub mod storage;
pub mod stubgen;
pub mod worker;

use std::path::PathBuf;

use anyhow::{Context as _, Result};
use golemw_runtime::{Executor, ExecutorOptions, WorkerId};

/// What every command gets from the global flags.
#[derive(Clone)]
pub struct Context {
    pub data_dir: PathBuf,
    pub json: bool,
    pub snapshot_policy: golemw_runtime::SnapshotPolicy,
    pub snapshots_keep: usize,
    pub write_tracking: bool,
    pub memory_images: bool,
    pub max_storage_mib: Option<u64>,
    pub max_memory_mib: u64,
}

impl Context {
    /// Opens the data directory; guest output is echoed unless output is JSON.
    pub fn executor(&self) -> Result<std::sync::Arc<Executor>> {
        self.executor_with(self.executor_options())
    }

    /// The executor options the global flags ask for.
    pub fn executor_options(&self) -> ExecutorOptions {
        ExecutorOptions {
            echo_output: !self.json,
            snapshot_policy: self.snapshot_policy,
            snapshots_keep: self.snapshots_keep,
            track_writes: self.write_tracking,
            memory_image_min_bytes: self
                .memory_images
                .then_some(golemw_runtime::snapshots::DEFAULT_IMAGE_MIN_BYTES),
            max_storage_bytes: self.max_storage_mib.map(|mib| mib << 20),
            max_memory_bytes: Some(self.max_memory_mib.saturating_mul(1 << 20)),
            ..ExecutorOptions::default()
        }
    }

    /// Opens the data directory with `options`.
    pub fn executor_with(&self, options: ExecutorOptions) -> Result<std::sync::Arc<Executor>> {
        Executor::open(&self.data_dir, options)
            .with_context(|| format!("opening the data directory {}", self.data_dir.display()))
    }
}

/// Splits `COMPONENT/WORKER` and resolves the component.
pub fn worker_id(executor: &Executor, spec: &str) -> Result<WorkerId> {
    let (component, worker) = spec.split_once('/').with_context(|| {
        format!(
            "{spec:?} is not COMPONENT/WORKER (a component name or UUID, a slash, a worker name)"
        )
    })?;
    Ok(executor.worker_id(component, worker)?)
}
