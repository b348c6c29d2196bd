//! A worker: one instance of a component, its oplog, and the two ways it runs: replay
//! (recovery) and live (invocation). Replay calls each recorded export again with its recorded
//! params while the gate feeds host calls from the oplog; results are checked against the record.
//!
//! By phase: bringing a worker back is in [`recover`], running an invocation live in [`invoke`],
//! snapshots in [`snapshot`]; what ends an invocation early in [`retry`] (a trap) and
//! [`suspend`] (a promise or a long sleep); moving through history (jumps, reverts) in
//! [`travel`]; moving to another component version in [`update`]. The records a worker keeps in
//! storage are in [`crate::worker_records`].

mod fork;
mod invoke;
mod recover;
mod regions;
mod retry;
mod snapshot;
mod suspend;
mod travel;
mod update;

pub use fork::{fork_point, ForkPoint};
pub use invoke::parse_params;
pub use regions::settle_interrupted;
pub use travel::{revert, RevertTarget};
pub use update::UpdateFailure;

use std::sync::Arc;

use wasmer::{Function, FunctionEnv, Instance, Memory, Module, Store};

use crate::component::Interface;
use crate::error::{Error, Result};
use crate::gate::Gate;
use crate::host::{self, HostState};
use crate::ids::OplogIndex;
use crate::snapshots::Policy;
use crate::stop::StopSignal;
use crate::storage::Storage;
use crate::watchdog::Watchdog;
use crate::worker_records::{WorkerRecord, WorkerStatus, WorkerStore};
use host::WorkerContext;
use snapshot::SnapshotTracker;

/// A gate over `record`'s effective history (deleted regions passed over) that replays the
/// entries after `after` up to `committed`, then goes live.
fn history_gate(
    storage: &Arc<Storage>,
    record: &WorkerRecord,
    committed: OplogIndex,
    echo_output: bool,
    after: OplogIndex,
) -> Gate {
    Gate::new(
        Arc::clone(storage),
        record.id.clone(),
        record.uid,
        committed,
        echo_output,
    )
    .with_history(record.history.clone())
    .resume_after(after)
}

/// What host functions know of the worker an instance is created (or rewound) for.
fn context_for(inputs: &InstanceInputs<'_>, record: &WorkerRecord) -> Result<Arc<WorkerContext>> {
    Ok(Arc::new(WorkerContext {
        id: record.id.clone(),
        record: record.clone(),
        storage: Arc::clone(inputs.storage),
        enumeration_page_size: inputs.enumeration_page_size.max(1),
        origin: crate::forks::get(inputs.storage, &record.uid)?,
    }))
}

/// A live instance of a worker.
pub struct Worker {
    store: Store,
    env: FunctionEnv<HostState>,
    instance: Instance,
    memory: Memory,
    realloc: Option<Function>,
    interface: Arc<Interface>,
    storage: Arc<Storage>,
    snapshots: SnapshotTracker,
    /// Set from another thread to stop the running invocation (the gate checks it at every
    /// host call; [`Worker::interrupter`] also stops guest code that makes none).
    stop: StopSignal,
    /// Stops a call that runs past the invocation deadline, when there is one.
    watchdog: Option<Watchdog>,
    /// The worker's record, kept current and written at every commit.
    pub record: WorkerRecord,
}

// SAFETY: a worker moves between threads only with its turn (`executor::slots`): one thread
// at a time has it, and only between invocations, with no wasm frame and no host function on
// any stack. Wasmer's `Store` is not `Send` because it holds raw pointers into its own VM
// allocations (instances, tables, globals, function contexts), the `on_called` hook and host
// environments boxed as `dyn Any`; none of that is tied to the thread that made it. The trap
// handler's and the interrupt registry's thread state exist only for the duration of a call,
// which runs wholly on one thread; the hook is never set (it is for async calls); the host
// environments are ours (`HostState`, whose fields are `Send`) and wasmer-wasix's `WasiEnv`,
// which is `Send` (WASIX moves it between threads itself). Exclusive use is what a
// `Mutex<Store>` would give; see docs/architecture.md (Concurrency).
unsafe impl Send for Worker {}

/// Everything needed to instantiate a worker.
pub struct InstanceInputs<'a> {
    pub storage: &'a Arc<Storage>,
    pub engine: &'a wasmer::Engine,
    pub module: &'a Module,
    pub interface: &'a Arc<Interface>,
    pub wasi_runtime: &'a Arc<dyn wasmer_wasix::Runtime + Send + Sync>,
    pub echo_output: bool,
    pub snapshot_policy: Policy,
    pub snapshots_keep: usize,
    pub enumeration_page_size: usize,
    /// Ask the kernel which pages were written (see `golemw_snapshot::dirty`).
    pub track_writes: bool,
    /// Keep a memory image for memories at least this large (see `golemw_snapshot::image`).
    pub image_min_bytes: Option<u64>,
    /// Sleeps at least this long suspend the worker durably (see [`crate::sleeps`]).
    pub durable_sleep_min: Option<std::time::Duration>,
    /// Stops guest calls that run past the invocation deadline, when there is one.
    pub watchdog: Option<&'a Watchdog>,
    /// How the worker's `golem:rpc` calls reach other workers.
    pub rpc_dispatch: Option<Arc<dyn crate::rpc::Dispatch>>,
    /// Followers of workers' output as it is written (see [`crate::output_tap`]).
    pub output_tap: Option<Arc<crate::output_tap::OutputTap>>,
}

/// How to bring a worker back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecoveryMode {
    /// From the newest usable snapshot, else by full replay.
    Auto,
    /// Replay the whole oplog, ignoring snapshots.
    FullReplay,
    /// From the snapshot at this oplog index (an error if it cannot be used).
    FromSnapshot(OplogIndex),
}

/// Whether an instance starts from scratch or is about to be overwritten by a snapshot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Start {
    Fresh,
    Restore,
}

impl Worker {
    fn instantiate(
        inputs: &InstanceInputs<'_>,
        record: WorkerRecord,
        mut gate: Gate,
        args: &[String],
        env: &[(String, String)],
        start: Start,
    ) -> Result<Worker> {
        // A module `start` function runs inside Instance::new; when a snapshot will overwrite
        // the state it builds, its host calls must neither consume oplog entries nor record.
        gate.set_discarding(start == Start::Restore);
        gate.set_output_tap(inputs.output_tap.clone());
        let engine_error =
            |what: &str, e: &dyn std::fmt::Display| Error::Engine(format!("{what}: {e}"));
        let context = context_for(inputs, &record)?;
        let mut store = Store::new(inputs.engine.clone());
        let mut wasi = wasmer_wasix::WasiEnvBuilder::new(context.program_name())
            .args(args)
            .envs(env.iter().map(|(k, v)| (k.clone(), v.clone())))
            .runtime(Arc::clone(inputs.wasi_runtime))
            .finalize(&mut store)
            .map_err(|e| engine_error("setting up WASI", &e))?;
        // Preview 1 imports even for a module that imports no WASI at all (wasix would refuse
        // to guess its version); unused imports cost nothing.
        let mut imports = wasmer_wasix::generate_import_object_from_env(
            &mut store,
            &wasi.env,
            wasmer_wasix::WasiVersion::Snapshot1,
        );
        let stop = StopSignal::default();
        gate.set_stop(stop.clone());
        let host_env = FunctionEnv::new(
            &mut store,
            HostState {
                gate,
                context,
                interface: Arc::clone(inputs.interface),
                memory: None,
                realloc: None,
                wasi_fd_write: None,
                last_monotonic_ns: 0,
                update_requests: Vec::new(),
                enumerations: Default::default(),
                persistence: Default::default(),
                invocation_key: String::new(),
                wasi2: Default::default(),
                http: Default::default(),
                keyvalue: Default::default(),
                blobstore: Default::default(),
                rpc: Default::default(),
                rpc_dispatch: inputs.rpc_dispatch.clone(),
                durable_sleep_min: inputs.durable_sleep_min,
            },
        );
        host::wasi::override_imports(&mut store, &host_env, &mut imports);
        host::golem::define_imports(
            &mut store,
            &host_env,
            &mut imports,
            inputs.module,
            &inputs.interface.host_imports,
        );
        let instance = Instance::new(&mut store, inputs.module, &imports)
            .map_err(|e| engine_error("instantiating the module", &e))?;
        wasi.initialize(&mut store, instance.clone())
            .map_err(|e| engine_error("initialising WASI", &e))?;
        let memory = instance
            .exports
            .get_memory("memory")
            .map_err(|e| engine_error("the module's memory", &e))?
            .clone();
        let realloc = instance.exports.get_function("cabi_realloc").ok().cloned();
        {
            let state = host_env.as_mut(&mut store);
            state.memory = Some(memory.clone());
            state.realloc = realloc.clone();
        }
        host_env.as_mut(&mut store).gate.set_discarding(false);
        let mut worker = Worker {
            store,
            env: host_env,
            instance: instance.clone(),
            memory,
            realloc,
            interface: Arc::clone(inputs.interface),
            storage: Arc::clone(inputs.storage),
            snapshots: SnapshotTracker::new(
                inputs.snapshot_policy,
                inputs.snapshots_keep,
                inputs.track_writes,
                inputs.image_min_bytes,
            ),
            stop,
            watchdog: inputs.watchdog.cloned(),
            record,
        };
        if start == Start::Restore {
            // Never run start code again on restore: its effects are in the snapshot and its
            // host calls in the oplog before it.
            return Ok(worker);
        }
        // Reactor start code. Its host calls are in the oplog right after `create`, so during
        // recovery the gate replays them.
        if let Ok(init) = instance.exports.get_function("_initialize") {
            if let Err(err) = init.call(&mut worker.store, &[]) {
                return Err(worker.fatal_or(Error::Trap {
                    function: "_initialize".into(),
                    message: err.message(),
                }));
            }
        }
        Ok(worker)
    }

    fn gate(&mut self) -> &mut Gate {
        &mut self.env.as_mut(&mut self.store).gate
    }

    /// Writes pending entries and the worker record in one transaction.
    fn commit_record(&mut self, durable: bool) -> Result<()> {
        self.commit_record_with(durable, |_| Ok(()))
    }

    /// Writes pending entries, the worker record and what `extra` writes in one transaction.
    fn commit_record_with(
        &mut self,
        durable: bool,
        mut extra: impl FnMut(&mut lmdb::RwTransaction<'_>) -> Result<()> + Send + 'static,
    ) -> Result<()> {
        let record = WorkerStore::new(Arc::clone(&self.storage)).encode(&self.record);
        self.gate().commit_with(durable, move |txn| {
            record.put(txn)?;
            extra(txn)
        })
    }

    /// The fatal error a host function raised, else `fallback`.
    fn fatal_or(&mut self, fallback: Error) -> Error {
        self.gate().take_fatal().unwrap_or(fallback)
    }

    /// What stops this worker's running invocation from another thread: the flag its gate
    /// checks at every host call, and Wasmer's interrupter for guest code between host calls.
    pub fn interrupter(&self) -> (StopSignal, wasmer::Interrupter) {
        (self.stop.clone(), self.store.interrupter())
    }

    /// Entries in the oplog (committed or pending).
    pub fn oplog_len(&mut self) -> OplogIndex {
        self.gate().next_index() - 1
    }

    /// The linear memory's current size in bytes.
    pub fn memory_size(&self) -> u64 {
        self.memory.view(&self.store).data_size()
    }
}
