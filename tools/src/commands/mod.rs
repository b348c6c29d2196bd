//! One module per command group; each turns parsed arguments into executor calls and output.

pub mod component;
pub mod promise;
pub mod run;
pub mod snapshot;
pub mod worker;

use std::path::PathBuf;

use anyhow::{Context as _, Result};
use golemw_runtime::{Executor, ExecutorOptions, WorkerId};

/// What every command gets from the global flags.
pub struct Context {
    pub data_dir: PathBuf,
    pub json: bool,
    pub snapshot_policy: golemw_runtime::SnapshotPolicy,
    pub snapshots_keep: usize,
}

impl Context {
    /// Opens the data directory; guest output is echoed unless output is JSON.
    ///
    /// The executor is leaked on purpose: the process ends right after the command, and
    /// everything a command commits is in the OS page cache before it returns (golemw is
    /// SIGKILL-safe by design), so tearing the executor down — unmapping every instance's
    /// memory, stopping the runtime — would only delay the exit (milliseconds for a 64 MiB
    /// worker). The OS releases the data directory's lock at exit.
    pub fn executor(&self) -> Result<&'static mut Executor> {
        let executor = Executor::open(
            &self.data_dir,
            ExecutorOptions {
                echo_output: !self.json,
                snapshot_policy: self.snapshot_policy,
                snapshots_keep: self.snapshots_keep,
                ..ExecutorOptions::default()
            },
        )
        .with_context(|| format!("opening the data directory {}", self.data_dir.display()))?;
        Ok(Box::leak(Box::new(executor)))
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
