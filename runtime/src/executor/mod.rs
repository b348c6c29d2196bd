//! The executor: owns a data directory and the workers active in this process.
//!
//! Every operation that touches a worker first takes the worker's turn ([`slots`]): invocations
//! of different workers run in parallel on the callers' threads, those of one worker one at a
//! time, in arrival order. Then it makes the worker active: if it is not in memory it is
//! recovered from its oplog. Workers stay active until evicted (past
//! [`ExecutorOptions::max_active_workers`]) or the executor is dropped, so a long-running
//! process replays each worker rarely. Commits of different workers meet in one transaction
//! ([`Storage::commit`]).

mod background;
mod deferred;
mod fork;
mod interrupt;
mod promises;
mod rpc;
mod slots;

pub use deferred::{Finished, InvocationStatus};
pub use fork::Fork;
pub use slots::Turn;

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex};

use uuid::Uuid;

use crate::component::{ComponentRecord, ComponentStore, Interface};
use crate::error::{Error, Result};
use crate::history::{History, UpdateMode, UpdateOutcome, UpdateRecord};
use crate::ids::{validate_worker_name, ComponentId, ComponentVersion, OplogIndex, WorkerId};
use crate::oplog::store::{self, BlockEncoder, BlockRead};
use crate::oplog::{now_ms, OplogEntry};
pub use crate::outcome::InvocationOutcome;
use crate::outcome::{Deferred, Halt, Invoked};
use crate::snapshots::Policy;
use crate::storage::{codec, Storage};
use crate::watchdog::Watchdog;
use crate::worker::{InstanceInputs, RecoveryMode, RevertTarget, Worker};
use crate::worker_records::{
    invocation_key, InvocationResult, RecoveryReport, WorkerRecord, WorkerStatus, WorkerStore,
};

/// The longest idempotency key accepted (results are stored under `worker uid ++ key`, and LMDB
/// keys are at most 511 bytes).
pub const IDEMPOTENCY_KEY_BYTES_MAX: usize = 256;

/// Settings of an executor.
#[derive(Clone, Debug)]
pub struct ExecutorOptions {
    /// Print guest stdout/stderr as it is written live.
    pub echo_output: bool,
    /// fsync at every durable commit (invocation end, idempotency keys, `oplog-commit`). Off,
    /// commits still reach the OS page cache: a killed process loses nothing, a power cut may.
    pub fsync: bool,
    /// When workers are snapshotted.
    pub snapshot_policy: Policy,
    /// How many snapshots to keep per worker.
    pub snapshots_keep: usize,
    /// Workers per page of a guest's `get-workers` enumeration.
    pub enumeration_page_size: usize,
    /// Ask the kernel which pages of a worker's memory were written (Linux 6.7+), so capture
    /// and in-place rewind skip the rest instead of comparing every page. Falls back to
    /// comparing on its own where unavailable; off forces the comparison.
    pub track_writes: bool,
    /// Keep the memory of workers with at least this many bytes of it as an image file next to
    /// LMDB, written at each snapshot, that a restart maps copy-on-write instead of copying
    /// (checked page by page against the snapshot, so a stale or damaged image only costs the
    /// pages it has wrong). `None`: never.
    pub memory_image_min_bytes: Option<u64>,
    /// Wait out the backoff before retrying a trapped invocation inside the call that ran it,
    /// sleeping this thread. Off, the call answers [`Deferred::RetryScheduled`] as soon as the
    /// retry is durably scheduled, and [`Executor::continue_retry`] goes on once the delay has
    /// passed: a server runs other requests meanwhile.
    pub wait_for_retries: bool,
    /// Workers kept in memory at most; past it, the least recently used idle ones are dropped
    /// and come back from storage (nearest snapshot plus tail) when next used.
    pub max_active_workers: usize,
    /// Linear memory of the workers kept in memory, in bytes, at most; past it, the least
    /// recently used idle ones are dropped as past `max_active_workers`. A worker counts its
    /// whole linear memory (what it may touch), not what it has touched. `None`: no limit.
    pub max_active_memory: Option<u64>,
    /// Guest sleeps at least this long suspend the worker durably and free its thread; a timer
    /// brings it back when due ([`crate::sleeps`]). Needs an executor that runs timers
    /// ([`Executor::serve`]); `None` (one-shot commands): sleeps wait in the process.
    pub durable_sleep_min: Option<std::time::Duration>,
    /// A guest call (an invocation, or the replay of one) running longer than this is stopped
    /// and traps, and the worker's retry policy applies: a runaway guest costs a thread and a
    /// core for this long at most. `None`: no limit.
    pub invocation_deadline: Option<std::time::Duration>,
    /// The most the LMDB environment may grow to, in bytes (`None`: 1 TiB). Past it, a write
    /// fails as on a full disk and leaves nothing behind.
    pub max_storage_bytes: Option<u64>,
    /// The most linear memory one worker may have, in bytes (`None`: wasm32's 4 GiB). Past it
    /// `memory.grow` fails, as at 4 GiB; a module that starts larger is refused.
    pub max_memory_bytes: Option<u64>,
    /// A guest call that has run this long is confined to one core with the other long ones
    /// until it returns (`crate::watchdog`), so that runaway guests cannot take every core from
    /// short invocations. Needs an [`ExecutorOptions::invocation_deadline`]; `None`: never.
    pub confine_after: Option<std::time::Duration>,
}

/// Default of [`ExecutorOptions::max_active_workers`]: an idle `counter`-sized instance costs
/// about 1.3 MiB resident (its 1.1 MiB linear memory and Wasmer's instance around it), so 1,024
/// of them stay near 1.3 GiB, and a restore brings an evicted one back in about a millisecond.
pub const DEFAULT_MAX_ACTIVE_WORKERS: usize = 1024;

/// Default of the durable-sleep threshold in a server (`golemw serve --durable-sleep-min-ms`).
/// Measured (BENCHMARKS.md, figure "sleepers", last table): a durable sleep costs the server
/// about 2.8 ms of CPU (the suspending commit, the timer, the recovery that wakes it) against
/// 1.5 ms held in a thread, and wakes under a millisecond later. That extra work is 140% of a
/// 1 ms sleep and 19% of a 10 ms one, but under 3% of a 100 ms one, while every sleep held in
/// the process ties up a thread (and its instance) for its whole length. So from 100 ms on a
/// sleep suspends; shorter ones (polling loops, backoffs) stay in the thread.
pub const DEFAULT_DURABLE_SLEEP_MIN_MS: u64 = 100;

impl Default for ExecutorOptions {
    fn default() -> Self {
        ExecutorOptions {
            echo_output: false,
            fsync: true,
            snapshot_policy: Policy::default(),
            snapshots_keep: crate::snapshots::DEFAULT_SNAPSHOTS_KEEP,
            enumeration_page_size: crate::host::get_workers::DEFAULT_PAGE_SIZE,
            track_writes: true,
            memory_image_min_bytes: Some(crate::snapshots::DEFAULT_IMAGE_MIN_BYTES),
            wait_for_retries: true,
            max_active_workers: DEFAULT_MAX_ACTIVE_WORKERS,
            max_active_memory: None,
            durable_sleep_min: None,
            invocation_deadline: None,
            max_storage_bytes: None,
            max_memory_bytes: None,
            confine_after: Some(crate::watchdog::DEFAULT_CONFINE_AFTER),
        }
    }
}

/// The outcome of checking one snapshot against a full replay.
#[derive(Clone, Debug, serde::Serialize)]
pub struct SnapshotCheck {
    /// The snapshot's oplog index.
    pub index: OplogIndex,
    /// Digest of the state after restoring it and replaying to the end (or why that failed).
    pub digest: std::result::Result<String, String>,
    /// Whether it equals the full replay's digest.
    pub matches: bool,
}

/// A worker in memory, with how it was recovered.
pub(crate) struct Active {
    worker: Worker,
    recovery: RecoveryReport,
}

/// Someone waiting for a deferred invocation's outcome.
type Waiter = tokio::sync::oneshot::Sender<Finished>;

/// A compiled module and its decoded interface.
type LoadedModule = (wasmer::Module, Arc<Interface>);

/// Owns one data directory. Shared by every thread that uses it (`&self` everywhere).
pub struct Executor {
    storage: Arc<Storage>,
    components: ComponentStore,
    workers: WorkerStore,
    /// wasmer-wasix schedules its background work on tokio; it must outlive every worker
    /// (taken in `drop`, to shut down without blocking whatever thread drops the executor).
    tokio: Option<tokio::runtime::Runtime>,
    wasi_runtime: Arc<dyn wasmer_wasix::Runtime + Send + Sync>,
    modules: Mutex<HashMap<(ComponentId, ComponentVersion), LoadedModule>>,
    /// Each worker's turn and, between turns, its instance.
    slots: slots::Slots,
    options: ExecutorOptions,
    /// [`crate::promises::events`] when suspended workers were last looked at (`u64::MAX`: not
    /// yet; the first invocation looks, for workers a stopped process left to resume).
    promise_events_seen: AtomicU64,
    /// Whether a thread is resuming suspended workers (one at a time does it for all).
    resuming: AtomicBool,
    /// Timers and threads of a serving executor ([`Executor::serve`]); unset in one-shot use.
    background: std::sync::OnceLock<background::Background>,
    /// Stops guest calls past [`ExecutorOptions::invocation_deadline`].
    watchdog: Option<Watchdog>,
    /// Callers waiting for deferred invocations, by worker and idempotency key.
    waiters: Mutex<HashMap<(WorkerId, String), Vec<Waiter>>>,
    /// Worker-to-worker calls in flight, and who waits for whom.
    calls: rpc::Calls,
    /// What workers' host functions call other workers through (this executor, weakly).
    dispatcher: Arc<dyn crate::rpc::Dispatch>,
    /// Followers of workers' output as it is written.
    output_tap: Arc<crate::output_tap::OutputTap>,
}

impl Drop for Executor {
    fn drop(&mut self) {
        if let Some(tokio) = self.tokio.take() {
            tokio.shutdown_background();
        }
    }
}

impl Executor {
    /// Opens (creating if needed) a data directory; fails if another process holds it.
    /// Shared: calls between workers reach the executor through a weak reference to it.
    pub fn open(dir: &Path, options: ExecutorOptions) -> Result<Arc<Self>> {
        let mut storage = Storage::open(dir)?;
        storage.set_fsync(options.fsync)?;
        if let Some(limit) = options.max_storage_bytes {
            storage.set_map_limit(limit as usize)?;
        }
        let storage = Arc::new(storage);
        if let Err(err) = crate::snapshots::remove_orphan_images(&storage) {
            // Images only make restarts faster: one that cannot be looked at costs disk space.
            tracing::warn!(%err, "could not look for the memory images of deleted workers");
        }
        let mut engine = wasmer::Engine::default();
        if let Some(limit) = options.max_memory_bytes {
            use wasmer::sys::NativeEngineExt;
            engine.set_tunables(crate::memory_limit::LimitingTunables::new(limit));
        }
        let tokio = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("golemw-wasix")
            .enable_all()
            .build()
            .map_err(|e| Error::Engine(format!("starting the tokio runtime: {e}")))?;
        let task_manager = wasmer_wasix::runtime::task_manager::tokio::TokioTaskManager::new(
            tokio.handle().clone(),
        );
        let mut runtime = wasmer_wasix::PluggableRuntime::new(Arc::new(task_manager));
        runtime.set_engine(engine.clone());
        let watchdog = match options.invocation_deadline {
            Some(deadline) => Some(
                Watchdog::start(deadline, options.confine_after)
                    .map_err(|e| Error::Engine(format!("starting the watchdog thread: {e}")))?,
            ),
            None => None,
        };
        Ok(Arc::new_cyclic(|me| Executor {
            components: ComponentStore::new(
                Arc::clone(&storage),
                engine,
                crate::host::is_provided_import,
            ),
            workers: WorkerStore::new(Arc::clone(&storage)),
            storage,
            tokio: Some(tokio),
            wasi_runtime: Arc::new(runtime),
            modules: Mutex::new(HashMap::new()),
            slots: slots::Slots::new(
                options.max_active_workers,
                options.max_active_memory.unwrap_or(u64::MAX),
            ),
            watchdog,
            options,
            promise_events_seen: AtomicU64::new(u64::MAX),
            resuming: AtomicBool::new(false),
            background: std::sync::OnceLock::new(),
            waiters: Mutex::new(HashMap::new()),
            calls: Default::default(),
            dispatcher: Arc::new(rpc::Dispatcher {
                executor: me.clone(),
            }),
            output_tap: Arc::default(),
        }))
    }

    /// Enters the tokio runtime wasmer-wasix schedules on, for the current thread.
    fn enter_tokio(&self) -> tokio::runtime::EnterGuard<'_> {
        self.tokio.as_ref().expect("set until drop").enter()
    }

    /// Waits (blocking this thread) until it is this caller's turn to use the worker; every
    /// operation on a worker takes its turn. Dropping the turn gives it to the next caller.
    pub fn turn(&self, id: &WorkerId) -> Turn {
        self.slots.turn(id)
    }

    /// [`Executor::turn`] for async callers: waits without holding a thread (a server holds
    /// none while a request waits behind another invocation of the same worker).
    pub fn turn_async(&self, id: &WorkerId) -> impl std::future::Future<Output = Turn> + Send {
        self.slots.turn_async(id)
    }

    /// Instances in memory now, and evicted so far.
    pub fn active_counts(&self) -> (u64, u64) {
        self.slots.counts()
    }

    /// The linear memory of the workers in memory now, in bytes (each as its last invocation
    /// left it).
    pub fn active_memory_bytes(&self) -> u64 {
        self.slots.loaded_bytes()
    }

    /// The component store.
    pub fn components(&self) -> &ComponentStore {
        &self.components
    }

    /// The worker records as storage has them (no running worker's view: see
    /// [`Executor::worker_record`]).
    pub fn workers(&self) -> &WorkerStore {
        &self.workers
    }

    /// Follows workers' output as their guests write it, before any commit (see
    /// [`crate::output_tap`]).
    pub fn output_tap(&self) -> &Arc<crate::output_tap::OutputTap> {
        &self.output_tap
    }

    /// The storage.
    pub fn storage(&self) -> &Arc<Storage> {
        &self.storage
    }

    /// Resolves `COMPONENT` (name or UUID) and a worker name into a worker id.
    pub fn worker_id(&self, component: &str, worker_name: &str) -> Result<WorkerId> {
        validate_worker_name(worker_name).map_err(Error::InvalidWorkerName)?;
        Ok(WorkerId {
            component_id: self.components.resolve_id(component)?,
            worker_name: worker_name.to_string(),
        })
    }

    /// Creates a worker on the latest version of its component (a durable commit).
    pub fn create_worker(
        &self,
        id: &WorkerId,
        args: Vec<String>,
        env: Vec<(String, String)>,
    ) -> Result<WorkerRecord> {
        let turn = self.turn(id);
        if turn.active.is_some() {
            // Started by an invocation and not stored yet, or stored: either way it exists.
            return Err(Error::WorkerExists(id.clone()));
        }
        self.write_new_worker(id, args, env)
    }

    /// Writes a new worker's record and `create` entry in one durable transaction.
    fn write_new_worker(
        &self,
        id: &WorkerId,
        args: Vec<String>,
        env: Vec<(String, String)>,
    ) -> Result<WorkerRecord> {
        let (record, create) = self.new_worker(id, args, env)?;
        let block = BlockEncoder::default().encode(std::slice::from_ref(&create));
        let encoded = self.workers.encode(&record);
        let uid = record.uid;
        let storage = Arc::clone(&self.storage);
        self.storage.commit(
            Box::new(move |txn| {
                encoded.put_new(txn)?;
                store::append_block(txn, &storage, &uid, 1, &block, 1)
            }),
            true,
        )?;
        Ok(record)
    }

    /// The record and `create` entry of a new worker on the latest version of its component.
    fn new_worker(
        &self,
        id: &WorkerId,
        args: Vec<String>,
        env: Vec<(String, String)>,
    ) -> Result<(WorkerRecord, OplogEntry)> {
        let latest = self.components.latest_of(&id.component_id)?;
        let record = WorkerRecord {
            id: id.clone(),
            uid: Uuid::new_v4(),
            component_version: latest.version,
            args: args.clone(),
            env: env.clone(),
            created_at_ms: now_ms(),
            status: WorkerStatus::Idle,
            retry_count: 0,
            last_error: None,
            oplog_len: 1,
            last_recovery: None,
            history: History::new(latest.version),
        };
        let create = OplogEntry::Create {
            timestamp_ms: record.created_at_ms,
            component_version: latest.version,
            args,
            env,
        };
        Ok((record, create))
    }

    /// Starts a new worker in memory only (see [`Worker::create`]) for an invocation of
    /// `function` with `params`: the first commit of its first invocation stores it. An
    /// invocation that names no function of the component, or gives it wrong parameters, is
    /// refused before anything is created, and so is one whose start code (`_initialize`)
    /// fails: the error is returned and the name stays free (nothing ran that anyone saw).
    fn start_new_worker(&self, turn: &mut Turn, function: &str, params: &[String]) -> Result<()> {
        let id = turn.worker().clone();
        let (record, create) = self.new_worker(&id, Vec::new(), Vec::new())?;
        let (module, interface) = self.module(id.component_id, record.component_version)?;
        crate::worker::parse_params(&*interface.find_export(function)?, params)?;
        let inputs = self.instance_inputs(&module, &interface);
        let _tokio = self.enter_tokio();
        match Worker::create(inputs, record, create) {
            Ok((mut worker, recovery)) => {
                worker.record.last_recovery = Some(recovery.clone());
                turn.active = Some(Active { worker, recovery });
                Ok(())
            }
            Err(err) => Err(err),
        }
    }

    /// The record of a worker: as the instance in memory has it, else as stored. A worker
    /// running an invocation is shown `running`.
    pub fn worker_record(&self, id: &WorkerId) -> Result<WorkerRecord> {
        if let Some(record) = self.slots.record(id) {
            return Ok(record);
        }
        self.stored_record(id)
    }

    /// The record of a worker as storage has it.
    fn stored_record(&self, id: &WorkerId) -> Result<WorkerRecord> {
        self.workers.require(id)
    }

    /// Every worker of a component, by name (a running worker as its turn's holder sees it).
    pub fn list_workers(&self, component: &ComponentId) -> Result<Vec<WorkerRecord>> {
        let mut records = self.workers.list(component)?;
        for record in &mut records {
            if let Some(active) = self.slots.record(&record.id) {
                *record = active;
            }
        }
        Ok(records)
    }

    /// Deletes a worker: its record, oplog and stored results, its snapshots and the pages no
    /// other worker's snapshot uses (forks share pages with their sources).
    pub fn delete_worker(&self, id: &WorkerId) -> Result<()> {
        let mut turn = self.turn(id);
        let record = self.worker_record(id)?;
        turn.active = None;
        let tables = self.storage.tables();
        let storage = Arc::clone(&self.storage);
        self.storage.write(|txn| {
            txn.del(tables.workers, &id.storage_key(), None)?;
            store::delete_all(txn, &storage, &record.uid)?;
            crate::snapshots::delete_all(txn, &storage, &record.uid)?;
            crate::storage::delete_prefix(txn, tables.invocations, record.uid.as_bytes())?;
            crate::promises::delete_all(txn, &storage, &record.uid)?;
            crate::sleeps::delete(txn, &storage, &record.uid)?;
            crate::queue::delete_all(txn, &storage, &record.uid)?;
            crate::forks::delete(txn, &storage, &record.uid)?;
            Ok(())
        })?;
        self.storage.sync()?;
        crate::snapshots::delete_image(&self.storage, &record.uid)
    }

    /// The compiled module and decoded interface of a component version (cached).
    fn module(&self, id: ComponentId, version: ComponentVersion) -> Result<LoadedModule> {
        if let Some((module, interface)) =
            self.modules.lock().expect("poisoned").get(&(id, version))
        {
            return Ok((module.clone(), Arc::clone(interface)));
        }
        // Loaded outside the lock (a first compile takes seconds); two threads loading the same
        // version at once both do, and the first to finish is kept.
        let record: ComponentRecord = self.components.get(&id, version)?;
        let wasm = self.components.wasm(&id, version)?;
        let mut interface = crate::component::decode_interface(&wasm)?;
        interface.snapshot_blocker = crate::component::snapshot_blocker(&wasm)?;
        interface.initialized_memory = crate::component::initialized_memory(&wasm)?;
        let interface = Arc::new(interface);
        let module = self.components.module(&record)?;
        let mut modules = self.modules.lock().expect("poisoned");
        let (module, interface) = modules.entry((id, version)).or_insert((module, interface));
        Ok((module.clone(), Arc::clone(interface)))
    }

    /// Makes the worker of `turn` active, recovering it from its oplog if it is not in memory.
    fn activate<'t>(&self, turn: &'t mut Turn, mode: RecoveryMode) -> Result<&'t mut Active, Halt> {
        if turn.active.is_none() {
            let id = turn.worker().clone();
            self.refuse_if_not_runnable(&id)?;
            // The recovery report is saved with the record at the worker's next commit (an
            // activation is nearly always for an invocation): not a commit of its own.
            if let Err(halt) = self.recover_into_memory(turn, mode, None, false) {
                // The invocation recovery resumed went to sleep again: a timer brings it back
                // whichever path recovered it.
                if let Halt::Deferred(deferred) = &halt {
                    self.wake_when_due(deferred);
                }
                return Err(halt);
            }
            self.forget_suspension(turn)?;
            // Updates requested while the worker was busy, or left pending by a process that
            // stopped: the worker is idle now.
            let pending: Vec<usize> = turn
                .active
                .as_ref()
                .expect("recovered above")
                .worker
                .record
                .history
                .updates
                .iter()
                .enumerate()
                .filter(|(_, u)| u.outcome == UpdateOutcome::Pending)
                .map(|(slot, _)| slot)
                .collect();
            for slot in pending {
                if let Err(err) = self.run_update(turn, slot) {
                    tracing::warn!(worker = %id, %err, "pending update failed");
                }
                if turn.active.is_none() {
                    self.recover_into_memory(turn, RecoveryMode::Auto, None, false)?;
                }
            }
        }
        Ok(turn.active.as_mut().expect("activated above"))
    }

    /// [`Executor::activate`] for work that needs the worker between invocations (a snapshot,
    /// an update, a digest): an invocation that is not over is a refusal.
    fn activate_idle<'t>(&self, turn: &'t mut Turn, mode: RecoveryMode) -> Result<&'t mut Active> {
        self.activate(turn, mode).map_err(Halt::into_error)
    }

    /// Recovers the worker of `turn` and makes it active, rewinding `live` (its instance that
    /// just went back in history) in place if a snapshot allows. Jumps made during recovery are
    /// handled by `Worker::recover_reusing` itself; a retry it schedules is waited for here.
    /// `save_report` writes the record with its new recovery report now (not durably).
    fn recover_into_memory(
        &self,
        turn: &mut Turn,
        mode: RecoveryMode,
        mut live: Option<Worker>,
        save_report: bool,
    ) -> Result<(), Halt> {
        let id = turn.worker().clone();
        turn.active = None;
        loop {
            let mut record = self.stored_record(&id)?;
            // An atomic region or remote side effect left open by a crash is settled first.
            crate::worker::settle_interrupted(&self.storage, &mut record)?;
            let (module, interface) = self.module(id.component_id, record.component_version)?;
            let inputs = self.instance_inputs(&module, &interface);
            let _tokio = self.enter_tokio();
            match Worker::recover_reusing(inputs, record.clone(), mode, live.take()) {
                Ok((mut worker, recovery)) => {
                    tracing::debug!(worker = %id, ?recovery, "recovered");
                    worker.record.last_recovery = Some(recovery.clone());
                    if save_report {
                        self.save_record(&worker.record)?;
                    }
                    turn.active = Some(Active { worker, recovery });
                    return Ok(());
                }
                // The invocation recovery finished live trapped again, and may be retried.
                Err(Halt::Deferred(Deferred::RetryScheduled { delay, .. }))
                    if self.options.wait_for_retries =>
                {
                    std::thread::sleep(delay);
                    continue;
                }
                Err(halt) => {
                    if let Halt::Failed(err @ Error::Divergence { .. }) = &halt {
                        // Mark the worker failed; the oplog stays as it is for inspection.
                        let failed = WorkerRecord {
                            status: WorkerStatus::Failed,
                            last_error: Some(err.to_string()),
                            ..record
                        };
                        self.put_record(&failed)?;
                    }
                    return Err(halt);
                }
            }
        }
    }

    /// What instantiating a worker of this module needs.
    fn instance_inputs<'a>(
        &'a self,
        module: &'a wasmer::Module,
        interface: &'a Arc<Interface>,
    ) -> InstanceInputs<'a> {
        InstanceInputs {
            storage: &self.storage,
            engine: self.components.engine(),
            module,
            interface,
            wasi_runtime: &self.wasi_runtime,
            echo_output: self.options.echo_output,
            snapshot_policy: self.options.snapshot_policy,
            snapshots_keep: self.options.snapshots_keep,
            enumeration_page_size: self.options.enumeration_page_size,
            track_writes: self.options.track_writes,
            image_min_bytes: self.options.memory_image_min_bytes,
            durable_sleep_min: self.options.durable_sleep_min,
            watchdog: self.watchdog.as_ref(),
            rpc_dispatch: Some(Arc::clone(&self.dispatcher)),
            output_tap: Some(Arc::clone(&self.output_tap)),
        }
    }

    /// Applies update `slot` (pending) of the active, idle worker of `turn`.
    fn run_update(&self, turn: &mut Turn, slot: usize) -> Result<UpdateRecord> {
        let id = turn.worker().clone();
        let Some(Active { worker, recovery }) = turn.active.take() else {
            return Err(Error::UnknownWorker(id));
        };
        let update = worker.record.history.updates[slot].clone();
        let current = worker.record.component_version;
        let failed = |reason: String| Error::UpdateFailed {
            worker: id.clone(),
            version: update.target_version,
            current,
            reason,
        };
        let (module, interface) = match self.module(id.component_id, update.target_version) {
            Ok(found) => found,
            Err(err) => {
                let failure = worker.fail_update(slot, err.to_string());
                if let Some(worker) = failure.worker {
                    turn.active = Some(Active {
                        worker: *worker,
                        recovery,
                    });
                }
                return Err(failed(failure.reason));
            }
        };
        let inputs = self.instance_inputs(&module, &interface);
        let _tokio = self.enter_tokio();
        let outcome = match update.mode {
            UpdateMode::Automatic => worker.update_automatic(inputs, slot),
            UpdateMode::SnapshotBased => worker.update_snapshot_based(inputs, slot),
        };
        match outcome {
            Ok(updated) => {
                let record = updated.record.history.updates[slot].clone();
                tracing::info!(worker = %id, version = update.target_version, mode = %update.mode, "updated");
                turn.active = Some(Active {
                    worker: updated,
                    recovery,
                });
                Ok(record)
            }
            Err(failure) => {
                if let Some(worker) = failure.worker {
                    turn.active = Some(Active {
                        worker: *worker,
                        recovery,
                    });
                }
                Err(failed(failure.reason))
            }
        }
    }

    /// Updates a worker to another version of its component, once it is idle (between
    /// commands it always is). Returns the update as recorded; a failed update is an error,
    /// and the worker stays on its version.
    pub fn update_worker(
        &self,
        id: &WorkerId,
        target_version: ComponentVersion,
        mode: UpdateMode,
    ) -> Result<UpdateRecord> {
        let mut turn = self.turn(id);
        self.update_in(&mut turn, target_version, mode)
    }

    fn update_in(
        &self,
        turn: &mut Turn,
        target_version: ComponentVersion,
        mode: UpdateMode,
    ) -> Result<UpdateRecord> {
        // An unknown version is refused before anything is recorded.
        self.components
            .get(&turn.worker().component_id, target_version)?;
        let worker = &mut self.activate_idle(turn, RecoveryMode::Auto)?.worker;
        worker.record.history.updates.push(UpdateRecord {
            target_version,
            mode,
            requested_at_ms: now_ms(),
            outcome: UpdateOutcome::Pending,
            started_at: 0,
            completed_at: 0,
            undone: false,
        });
        let slot = worker.record.history.updates.len() - 1;
        // Durable before it runs: a process killed mid-update applies it at the next start.
        let record = worker.record.clone();
        self.put_record(&record)?;
        self.run_update(turn, slot)
    }

    /// Reverts a worker: deletes its history after an oplog index, or its last N invocations,
    /// recording a `revert` entry, then recovers it. Works on failed workers too (reverting
    /// past the failure brings them back).
    pub fn revert_worker(&self, id: &WorkerId, target: RevertTarget) -> Result<RecoveryReport> {
        let mut turn = self.turn(id);
        let mut record = self.worker_record(id)?;
        let live = turn.active.take().map(|active| active.worker);
        crate::worker::revert(&self.storage, &mut record, target)?;
        // Recovery finds out whether the worker still awaits a promise (and suspends it again).
        crate::promises::remove_suspension(&self.storage, &record.uid)?;
        crate::sleeps::remove(&self.storage, &record.uid)?;
        self.recover_into_memory(&mut turn, RecoveryMode::Auto, live, true)
            .map_err(Halt::into_error)?;
        Ok(turn.active.as_ref().expect("recovered").recovery.clone())
    }

    /// An idempotency key that already completed may only be repeated for the same call: the
    /// same function with the same parameters (compared as canonical WAVE with the recorded
    /// `exported-function-invoked` entry). Anything else is refused rather than answered with
    /// another call's result.
    fn check_same_invocation(
        &self,
        id: &WorkerId,
        version: ComponentVersion,
        done: &InvocationResult,
        key: &str,
        function: &str,
        params: &[String],
    ) -> Result<()> {
        /// How far back from its completion the invocation's start is looked for (a block's
        /// worth); an invocation longer than that is compared by function only.
        const LOOK_BACK: u64 = crate::oplog::store::BLOCK_ENTRIES_MAX as u64;
        let reused = |detail: String| Error::IdempotencyKeyReused {
            worker: id.clone(),
            idempotency_key: key.to_string(),
            detail,
        };
        let (_, interface) = self.module(id.component_id, version)?;
        let export = interface.find_export(function)?;
        if export.display_name != done.function {
            return Err(reused(format!(
                "it was used for {}, not {}",
                done.function, export.display_name
            )));
        }
        let values = crate::worker::parse_params(&export, params)?;
        let canonical: Vec<String> = values
            .iter()
            .map(crate::abi::to_wave)
            .collect::<Result<_, _>>()?;
        let from = done.completed_at.saturating_sub(LOOK_BACK).max(1);
        let record = self.worker_record(id)?;
        let blocks = store::read_blocks(
            &self.storage,
            &record.uid,
            from,
            (done.completed_at - from + 1) as usize,
        )?;
        let recorded = blocks
            .into_iter()
            .filter_map(|block| match block {
                BlockRead::Entries(entries) => Some(entries),
                BlockRead::Corrupt { .. } => None,
            })
            .flatten()
            .filter(|(index, _)| *index <= done.completed_at)
            .filter_map(|(_, entry)| match entry {
                OplogEntry::ExportedFunctionInvoked {
                    idempotency_key,
                    params,
                    ..
                } if idempotency_key == key => Some(params),
                _ => None,
            })
            .next_back();
        match recorded {
            Some(recorded) if recorded != canonical => Err(reused(format!(
                "it was used with parameters ({}), not ({})",
                recorded.join(", "),
                canonical.join(", ")
            ))),
            _ => Ok(()),
        }
    }

    /// Writes a worker record without making it durable.
    fn save_record(&self, record: &WorkerRecord) -> Result<()> {
        self.workers.save(record)
    }

    /// Writes a worker record durably.
    fn put_record(&self, record: &WorkerRecord) -> Result<()> {
        self.workers.put_durable(record)
    }

    /// Why a worker cannot be snapshotted, if it cannot.
    pub fn snapshot_blocker(&self, id: &WorkerId) -> Result<Option<String>> {
        let record = self.worker_record(id)?;
        let (_, interface) = self.module(id.component_id, record.component_version)?;
        Ok(interface.snapshot_blocker.clone())
    }

    /// Recovers a worker without invoking anything and reports how (the report is saved with
    /// the worker record, for `worker get`).
    pub fn recover(&self, id: &WorkerId, mode: RecoveryMode) -> Result<RecoveryReport> {
        let mut turn = self.turn(id);
        turn.active = None;
        let active = self.activate_idle(&mut turn, mode)?;
        let (record, recovery) = (active.worker.record.clone(), active.recovery.clone());
        self.save_record(&record)?;
        Ok(recovery)
    }

    /// Takes a snapshot of a worker now (it is idle between invocations).
    pub fn snapshot(&self, id: &WorkerId) -> Result<golemw_snapshot::CaptureStats> {
        let mut turn = self.turn(id);
        let _tokio = self.enter_tokio();
        self.activate_idle(&mut turn, RecoveryMode::Auto)?
            .worker
            .snapshot()
    }

    /// The state digest of a worker recovered in `mode` (the instance is dropped afterwards).
    pub fn state_digest(&self, id: &WorkerId, mode: RecoveryMode) -> Result<String> {
        let mut turn = self.turn(id);
        turn.active = None;
        let worker = &mut self.activate_idle(&mut turn, mode)?.worker;
        let digest = worker.state_digest();
        let record = worker.record.clone();
        self.save_record(&record)?;
        turn.active = None;
        Ok(digest)
    }

    /// The state digest of the worker as it is in memory now (activated if it is not).
    pub fn active_state_digest(&self, id: &WorkerId) -> Result<String> {
        let mut turn = self.turn(id);
        Ok(self
            .activate_idle(&mut turn, RecoveryMode::Auto)?
            .worker
            .state_digest())
    }

    /// Whether the kernel is recording which pages of the worker's memory are written
    /// (activated if it is not); see [`ExecutorOptions::track_writes`].
    pub fn tracks_writes(&self, id: &WorkerId) -> Result<bool> {
        let mut turn = self.turn(id);
        Ok(self
            .activate_idle(&mut turn, RecoveryMode::Auto)?
            .worker
            .tracks_writes())
    }

    /// Restores from each snapshot (or the newest only), replays to the end and compares the
    /// final state with a full replay from the first entry. `progress(done, total)` is called
    /// after each step.
    pub fn verify_snapshots(
        &self,
        id: &WorkerId,
        all: bool,
        mut progress: impl FnMut(usize, usize),
    ) -> Result<(String, Vec<SnapshotCheck>)> {
        let record = self.worker_record(id)?;
        let mut indexes = crate::snapshots::indexes(&self.storage, &record.uid)?;
        if !all {
            indexes = indexes.into_iter().last().into_iter().collect();
        }
        let total = indexes.len() + 1;
        let reference = self.state_digest(id, RecoveryMode::FullReplay)?;
        progress(1, total);
        let mut checks = Vec::new();
        for (i, index) in indexes.into_iter().enumerate() {
            let digest = self
                .state_digest(id, RecoveryMode::FromSnapshot(index))
                .map_err(|e| e.to_string());
            let matches = digest.as_ref().is_ok_and(|d| *d == reference);
            checks.push(SnapshotCheck {
                index,
                digest,
                matches,
            });
            progress(i + 2, total);
        }
        Ok((reference, checks))
    }

    /// The stored result of a completed invocation with this idempotency key, if any.
    pub fn completed_invocation(&self, uid: &Uuid, key: &str) -> Result<Option<InvocationResult>> {
        match self
            .storage
            .get(self.storage.tables().invocations, &invocation_key(uid, key))?
        {
            Some(bytes) => Ok(Some(codec::decode(&bytes, "invocation result")?)),
            None => Ok(None),
        }
    }

    /// Invokes `function` on a worker with WAVE params, creating the worker if it does not
    /// exist. With an idempotency key that already completed, returns the stored result.
    /// Waits (blocking this thread) for the worker's turn; see [`Executor::invoke_in`]. An
    /// invocation that is not over when its run ends (suspended, asleep, queued, retrying) is
    /// answered [`Invoked::Deferred`]; [`Executor::await_invocation`] waits for its end.
    pub fn invoke(
        &self,
        id: &WorkerId,
        function: &str,
        params: &[String],
        idempotency_key: Option<&str>,
    ) -> Result<Invoked> {
        self.invoke_in(self.turn(id), function, params, idempotency_key)
    }

    /// [`Executor::invoke`] on the worker whose turn the caller holds (from
    /// [`Executor::turn_async`], say). The turn is given up when the invocation is over; then
    /// what the invocation asked of other workers (updates, resuming workers whose promise it
    /// completed) is done, each in that worker's turn.
    ///
    /// A worker created here is stored by the invocation's own durable commit (one commit,
    /// not two: see [`Worker::create`]), or by a commit of its own when the invocation fails
    /// before committing anything. An unknown function, wrong parameters or start code that
    /// fails create nothing.
    pub fn invoke_in(
        &self,
        turn: Turn,
        function: &str,
        params: &[String],
        idempotency_key: Option<&str>,
    ) -> Result<Invoked> {
        self.invoke_in_as(turn, function, params, idempotency_key, Completion::Durable)
    }

    /// [`Executor::invoke_in`], its completion committed as `completion` says.
    fn invoke_in_as(
        &self,
        mut turn: Turn,
        function: &str,
        params: &[String],
        idempotency_key: Option<&str>,
        completion: Completion,
    ) -> Result<Invoked> {
        check_idempotency_key(idempotency_key)?;
        let (result, requests) = self.invoke_turn(
            &mut turn,
            function,
            params,
            idempotency_key,
            true,
            completion,
        );
        drop(turn);
        for request in requests {
            // Failures are recorded on the target worker; the caller's invocation is done.
            if let Err(err) =
                self.update_worker(&request.worker, request.target_version, request.mode)
            {
                tracing::warn!(worker = %request.worker, %err, "update-worker request failed");
            }
        }
        // Workers whose promise this invocation completed go on now that it is over.
        self.resume_ready_workers();
        result
    }

    /// The invocation inside its turn: creates the worker if it is new, runs it, and drops the
    /// instance when it cannot be trusted to match storage any more. With `queued_first`,
    /// invocations queued for the worker earlier run before it (arrival order); if they cannot
    /// all run now (the worker sleeps), this one is queued behind them ([`Deferred::Queued`]).
    fn invoke_turn(
        &self,
        turn: &mut Turn,
        function: &str,
        params: &[String],
        idempotency_key: Option<&str>,
        queued_first: bool,
        completion: Completion,
    ) -> (Result<Invoked>, Vec<crate::history::UpdateRequest>) {
        let id = turn.worker().clone();
        if queued_first && self.has_queued(&id) && !self.drain_queue(turn) {
            return (
                self.queue_behind(&id, function, params, idempotency_key),
                Vec::new(),
            );
        }
        let is_new = turn.active.is_none()
            && matches!(self.stored_record(&id), Err(Error::UnknownWorker(_)));
        if is_new {
            if let Err(err) = self.start_new_worker(turn, function, params) {
                return (Err(err), Vec::new());
            }
        }
        let (outcome, requests) =
            self.invoke_existing(turn, function, params, idempotency_key, completion);
        if is_new {
            let stored = match turn.active.as_mut() {
                Some(active) => match active.worker.is_unborn() {
                    true => active.worker.commit_birth(),
                    false => Ok(()),
                },
                // Every path that deactivates a worker commits first; this only guards that.
                None => match self.stored_record(&id) {
                    Err(Error::UnknownWorker(_)) => {
                        tracing::warn!(worker = %id, "a new worker left memory unstored");
                        self.write_new_worker(&id, Vec::new(), Vec::new())
                            .map(|_| ())
                    }
                    _ => Ok(()),
                },
            };
            if let Err(err) = stored {
                // Its name was taken by another process meanwhile, or storage failed: the
                // instance is not the stored worker's.
                turn.active = None;
                return (Err(err), requests);
            }
        }
        drop_unless_kept(turn, &outcome);
        (outcome, requests)
    }

    fn invoke_existing(
        &self,
        turn: &mut Turn,
        function: &str,
        params: &[String],
        idempotency_key: Option<&str>,
        completion: Completion,
    ) -> (Result<Invoked>, Vec<crate::history::UpdateRequest>) {
        let active = match self.activate(turn, RecoveryMode::Auto) {
            Ok(active) => active,
            Err(Halt::Deferred(deferred)) => {
                let answer =
                    self.deferred_at_activation(turn, deferred, function, params, idempotency_key);
                return (answer, Vec::new());
            }
            Err(halt) => return (Err(halt.into_error()), Vec::new()),
        };
        let uid = active.worker.record.uid;
        let history = active.worker.record.history.clone();
        if let Some(key) = idempotency_key {
            match self.completed_invocation(&uid, key) {
                // A result whose invocation a jump or revert deleted no longer counts.
                Ok(Some(done)) if !history.deleted.contains(done.completed_at) => {
                    let version = active.worker.record.component_version;
                    let id = turn.worker().clone();
                    if let Err(err) =
                        self.check_same_invocation(&id, version, &done, key, function, params)
                    {
                        return (Err(err), Vec::new());
                    }
                    let outcome = InvocationOutcome {
                        result: done.result,
                        from_idempotency_key: true,
                    };
                    return (Ok(Invoked::Completed(outcome)), Vec::new());
                }
                Ok(_) => {}
                Err(err) => return (Err(err), Vec::new()),
            }
        }
        let key = idempotency_key
            .map(str::to_string)
            .unwrap_or_else(|| Uuid::new_v4().to_string());
        let _tokio = self.enter_tokio();
        let (requested, wasm) = turn
            .active
            .as_ref()
            .expect("activated above")
            .worker
            .interrupter();
        turn.set_running(Some(&key), Some(slots::Interrupt { requested, wasm }));
        let worker = &mut turn.active.as_mut().expect("activated above").worker;
        let invoked = worker.invoke(
            function,
            params,
            &key,
            idempotency_key.is_some(),
            completion == Completion::Durable,
        );
        let requests = worker.take_update_requests();
        turn.set_running(None, None);
        drop(_tokio);
        let result = match invoked {
            Ok(result) => Ok(Invoked::Completed(InvocationOutcome {
                result,
                from_idempotency_key: false,
            })),
            Err(Halt::Jumped { target }) => self.after_jump(turn, target, &key),
            Err(Halt::Deferred(Deferred::RetryScheduled {
                delay, function, ..
            })) if self.options.wait_for_retries => {
                // Status `retrying` is recorded; wait, then recovery runs the invocation again
                // (and again, while it traps and the policy allows).
                std::thread::sleep(delay);
                self.after_retry(turn, &function, &key)
            }
            // The caller waits (see `continue_retry`); whatever activates the worker first
            // recovers it and so runs the invocation again. A sleep just recorded gets its timer.
            Err(Halt::Deferred(deferred)) => {
                self.wake_when_due(&deferred);
                Ok(Invoked::Deferred(deferred))
            }
            Err(Halt::Failed(err)) => Err(err),
        };
        (result, requests)
    }

    /// Activating the worker for invocation `key` found an invocation that is not over: the
    /// one recovery resumed, or one it declined to resume (a promise still pending, a sleep
    /// not due). If it is this one, that is the answer; behind a sleep this one is queued;
    /// anything else refuses it.
    fn deferred_at_activation(
        &self,
        turn: &Turn,
        deferred: Deferred,
        function: &str,
        params: &[String],
        key: Option<&str>,
    ) -> Result<Invoked> {
        if key == Some(deferred.idempotency_key()) {
            return Ok(Invoked::Deferred(deferred));
        }
        match deferred {
            Deferred::Sleeping { .. } => self.queue_behind(turn.worker(), function, params, key),
            other => Err(other.refusal()),
        }
    }

    /// Recovery for invocation `key` stopped short of a result: if it is that invocation
    /// that is not over, that is its answer; anything else is an error.
    fn answer_halt(halt: Halt, key: &str) -> Result<Invoked> {
        match halt {
            Halt::Deferred(deferred) if deferred.idempotency_key() == key => {
                Ok(Invoked::Deferred(deferred))
            }
            halt => Err(halt.into_error()),
        }
    }

    /// Whether the worker has invocations queued (a stored worker; one read).
    fn has_queued(&self, id: &WorkerId) -> bool {
        self.worker_record(id)
            .and_then(|record| crate::queue::first(&self.storage, &record.uid))
            .is_ok_and(|first| first.is_some())
    }

    /// Queues an invocation behind the worker's suspended one and reports it queued.
    fn queue_behind(
        &self,
        id: &WorkerId,
        function: &str,
        params: &[String],
        idempotency_key: Option<&str>,
    ) -> Result<Invoked> {
        let key = self.push_queued(id, function, params, idempotency_key)?;
        Ok(Invoked::Deferred(Deferred::Queued {
            worker: id.clone(),
            idempotency_key: key,
        }))
    }

    /// The invocation with idempotency key `key` jumped back to `target`: recovers the worker
    /// on its new history. If the jump went back into that same invocation, it has run again
    /// to the end and its result is returned; otherwise it was deleted.
    fn after_jump(&self, turn: &mut Turn, target: OplogIndex, key: &str) -> Result<Invoked> {
        let live = turn.active.take().map(|active| active.worker);
        if let Err(halt) = self.recover_into_memory(turn, RecoveryMode::Auto, live, true) {
            return Self::answer_halt(halt, key);
        }
        let recovery = turn.active.as_ref().expect("recovered").recovery.clone();
        match recovery.resumed {
            Some(resumed) if resumed.idempotency_key == key => match resumed.error {
                Some(error) => Err(Error::Trap {
                    function: "the resumed invocation".into(),
                    message: error,
                }),
                None => Ok(Invoked::Completed(InvocationOutcome {
                    result: resumed.result,
                    from_idempotency_key: false,
                })),
            },
            _ => Err(Error::InvocationUndone {
                worker: turn.worker().clone(),
                target,
            }),
        }
    }

    /// Goes on with an invocation whose retry was scheduled (the [`Deferred::RetryScheduled`]
    /// a call answers when [`ExecutorOptions::wait_for_retries`] is off), once its delay has
    /// passed: recovers the worker, which runs the invocation again, and returns how it ended,
    /// or `RetryScheduled` again for the next attempt. If something else recovered the worker
    /// meanwhile, the invocation has finished already and its result is returned.
    pub fn continue_retry(
        &self,
        id: &WorkerId,
        function: &str,
        idempotency_key: &str,
    ) -> Result<Invoked> {
        let mut turn = self.turn(id);
        let uid = self.worker_record(id)?.uid;
        let result = match self.completed_invocation(&uid, idempotency_key)? {
            Some(done) => Ok(Invoked::Completed(InvocationOutcome {
                result: done.result,
                from_idempotency_key: false,
            })),
            None => self.after_retry(&mut turn, function, idempotency_key),
        };
        drop_unless_kept(&mut turn, &result);
        drop(turn);
        self.resume_ready_workers();
        result
    }

    /// The invocation with idempotency key `key` trapped and a retry was scheduled: recovers
    /// the worker, which runs it again (retrying while it traps and the policy allows), and
    /// returns how it ended.
    fn after_retry(&self, turn: &mut Turn, function: &str, key: &str) -> Result<Invoked> {
        turn.active = None;
        let active = match self.activate(turn, RecoveryMode::Auto) {
            Ok(active) => active,
            Err(halt) => return Self::answer_halt(halt, key),
        };
        let retries = active.worker.record.retry_count;
        match active.recovery.resumed.clone() {
            Some(resumed) if resumed.idempotency_key == key => match resumed.error {
                // The last attempt's trap, as a first attempt's would be reported.
                Some(error) => {
                    let prefix = Error::Trap {
                        function: function.to_string(),
                        message: String::new(),
                    }
                    .to_string();
                    let message = error.strip_prefix(&prefix).unwrap_or(&error);
                    Err(Error::Trap {
                        function: function.to_string(),
                        message: format!("{message} (after {retries} retries)"),
                    })
                }
                None => Ok(Invoked::Completed(InvocationOutcome {
                    result: resumed.result,
                    from_idempotency_key: false,
                })),
            },
            _ => Err(Error::Engine(format!(
                "worker {}: the retried invocation {key} was not resumed by recovery",
                turn.worker()
            ))),
        }
    }

    /// Reads oplog blocks of a worker from index `from`; corrupt blocks are returned as such.
    pub fn oplog(&self, id: &WorkerId, from: OplogIndex, count: usize) -> Result<Vec<BlockRead>> {
        let record = self.worker_record(id)?;
        store::read_blocks(&self.storage, &record.uid, from.max(1), count)
    }

    /// The length of a worker's oplog.
    pub fn oplog_len(&self, id: &WorkerId) -> Result<OplogIndex> {
        let record = self.worker_record(id)?;
        store::last_index(&self.storage, &record.uid)
    }
}

/// How an invocation's completion is committed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Completion {
    /// Fsynced before the invocation is answered.
    Durable,
    /// Committed (a killed process keeps it) but not fsynced: for a call whose caller's own
    /// durable commit comes later in the same environment, and so makes this one durable too
    /// (LMDB commits in order), before anyone outside hears of the result.
    BeforeCallersCommit,
}

/// Refuses an idempotency key that is empty or too long to be part of an LMDB key.
fn check_idempotency_key(key: Option<&str>) -> Result<()> {
    match key {
        Some(key) if key.is_empty() || key.len() > IDEMPOTENCY_KEY_BYTES_MAX => {
            Err(Error::InvalidArguments(format!(
                "an idempotency key is 1 to {IDEMPOTENCY_KEY_BYTES_MAX} bytes; this one is {}",
                key.len()
            )))
        }
        _ => Ok(()),
    }
}

/// Whether the instance of a worker whose invocation ended with `err` still matches storage
/// and may be kept for the next invocation. Refusals before anything ran and traps (recorded
/// and committed) keep it; anything else drops it: a failed commit (memory holds what storage
/// does not: the next attempt must start from storage), an engine or storage error.
fn keeps_instance(err: &Error) -> bool {
    matches!(
        err,
        Error::UnknownFunction(_)
            | Error::InvalidArguments(_)
            | Error::WorkerFailed { .. }
            | Error::WorkerExited { .. }
            | Error::WorkerSuspended { .. }
            | Error::WorkerBusy { .. }
            | Error::WorkerInterrupted { .. }
            | Error::Trap { .. }
            | Error::GuestExited { .. }
            | Error::InvocationUndone { .. }
            | Error::QueueFull { .. }
    )
}

/// Drops the instance of `turn` unless it still matches storage after `outcome`: see
/// [`keeps_instance`]; an invocation deferred mid-run (the guest unwound, or its attempt
/// discarded for a retry) drops it too.
fn drop_unless_kept(turn: &mut Turn, outcome: &Result<Invoked>) {
    let keep = match outcome {
        Ok(Invoked::Completed(_)) => true,
        Ok(Invoked::Deferred(deferred)) => !deferred.drops_instance(),
        Err(err) => keeps_instance(err),
    };
    if !keep {
        turn.active = None;
    }
}
