//! A worker: one instance of a component, its oplog, and the two ways it runs: replay
//! (recovery) and live (invocation). Replay calls each recorded export again with its recorded
//! params while the gate feeds host calls from the oplog; results are checked against the record.
//!
//! Moving through history (jumps, reverts) is in [`travel`]; moving to another component
//! version is in [`update`].

mod regions;
mod retry;
mod suspend;
mod travel;
mod update;

pub use regions::settle_interrupted;
pub use travel::{revert, RevertTarget};
pub use update::UpdateFailure;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use uuid::Uuid;
use wasm_wave::value::Value;
use wasm_wave::wasm::WasmValue;
use wasmer::{AsStoreMut, Function, FunctionEnv, Instance, Memory, Module, RuntimeError, Store};

use crate::abi::{parse_wave, to_wave};
use crate::component::{ExportedFunction, Interface};
use crate::error::{Error, Result};
use crate::gate::{Gate, Mode};
use crate::history::History;
use crate::host::{self, from_wasmer, to_wasmer, GuestMem, HostState};
use crate::ids::{ComponentId, ComponentVersion, OplogIndex, WorkerId};
use crate::oplog::{now_ms, OplogEntry};
use crate::snapshots::Policy;
use crate::storage::{codec, Storage};

/// The statuses of the spec's `worker-status`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum WorkerStatus {
    Running,
    Idle,
    Suspended,
    Interrupted,
    Retrying,
    Failed,
    Exited,
}

impl WorkerStatus {
    /// The WIT enum case name.
    pub fn as_str(&self) -> &'static str {
        match self {
            WorkerStatus::Running => "running",
            WorkerStatus::Idle => "idle",
            WorkerStatus::Suspended => "suspended",
            WorkerStatus::Interrupted => "interrupted",
            WorkerStatus::Retrying => "retrying",
            WorkerStatus::Failed => "failed",
            WorkerStatus::Exited => "exited",
        }
    }
}

/// What the data directory keeps about a worker besides its oplog.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct WorkerRecord {
    /// Component and name.
    pub id: WorkerId,
    /// Internal key of the worker's oplog and invocation results; new for every incarnation,
    /// so a deleted and re-created worker never sees old entries.
    pub uid: Uuid,
    /// The component version the worker runs.
    pub component_version: ComponentVersion,
    /// Command-line arguments, fixed at creation.
    pub args: Vec<String>,
    /// Environment variables, fixed at creation.
    pub env: Vec<(String, String)>,
    /// Creation time, ms since the epoch.
    pub created_at_ms: u64,
    /// Status as of the last commit.
    pub status: WorkerStatus,
    /// Retries of failed invocations so far.
    pub retry_count: u64,
    /// Why the worker failed, when it did.
    pub last_error: Option<String>,
    /// Oplog length as of the last commit.
    pub oplog_len: OplogIndex,
    /// How the worker was last brought back from storage.
    pub last_recovery: Option<RecoveryReport>,
    /// Deleted regions, updates, and so where replay starts and on which version.
    pub history: History,
}

/// A completed invocation, kept by idempotency key.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct InvocationResult {
    /// The export's display name.
    pub function: String,
    /// The WAVE-encoded result, `None` for functions without one.
    pub result: Option<String>,
    /// Index of the `exported-function-completed` entry.
    pub completed_at: OplogIndex,
}

/// The key of an invocation result: worker uid, then the idempotency key.
pub fn invocation_key(uid: &Uuid, idempotency_key: &str) -> Vec<u8> {
    let mut key = uid.as_bytes().to_vec();
    key.extend_from_slice(idempotency_key.as_bytes());
    key
}

/// The worker's identity and storage, for host functions that describe workers.
pub struct WorkerContext {
    pub id: WorkerId,
    pub record: WorkerRecord,
    pub storage: Arc<Storage>,
    /// Workers per page of a `get-workers` enumeration.
    pub enumeration_page_size: usize,
}

impl WorkerContext {
    /// This worker's metadata as it is while it runs.
    pub fn self_metadata(&self) -> WorkerRecord {
        WorkerRecord {
            status: WorkerStatus::Running,
            ..self.record.clone()
        }
    }

    /// Another worker's metadata, given a `worker-id` value.
    pub fn lookup_worker(&self, worker_id: &Value) -> Option<WorkerRecord> {
        let id = worker_id_from_value(worker_id)?;
        if id == self.id {
            return Some(self.self_metadata());
        }
        let bytes = self
            .storage
            .get(self.storage.tables().workers, &id.storage_key())
            .ok()??;
        codec::decode(&bytes, "worker record").ok()
    }
}

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
fn context_for(inputs: &InstanceInputs<'_>, record: &WorkerRecord) -> Arc<WorkerContext> {
    Arc::new(WorkerContext {
        id: record.id.clone(),
        record: record.clone(),
        storage: Arc::clone(inputs.storage),
        enumeration_page_size: inputs.enumeration_page_size.max(1),
    })
}

/// Reads a WIT `worker-id` record value.
pub fn worker_id_from_value(value: &Value) -> Option<WorkerId> {
    let mut component = None;
    let mut name = None;
    for (field, v) in value.unwrap_record() {
        match field.as_ref() {
            "component-id" => {
                for (f, uuid) in v.unwrap_record() {
                    if f == "uuid" {
                        let (mut high, mut low) = (0, 0);
                        for (part, bits) in uuid.unwrap_record() {
                            match part.as_ref() {
                                "high-bits" => high = bits.unwrap_u64(),
                                "low-bits" => low = bits.unwrap_u64(),
                                _ => {}
                            }
                        }
                        component = Some(ComponentId(Uuid::from_u64_pair(high, low)));
                    }
                }
            }
            "worker-name" => name = Some(v.unwrap_string().to_string()),
            _ => {}
        }
    }
    Some(WorkerId {
        component_id: component?,
        worker_name: name?,
    })
}

/// The WAVE text of a `worker-metadata` record.
pub fn worker_metadata_wave(record: &WorkerRecord) -> String {
    use crate::host::golem::wave_string;
    let (high, low) = record.id.component_id.0.as_u64_pair();
    let args: Vec<String> = record.args.iter().map(|a| wave_string(a)).collect();
    let env: Vec<String> = record
        .env
        .iter()
        .map(|(k, v)| format!("({}, {})", wave_string(k), wave_string(v)))
        .collect();
    format!(
        "{{worker-id: {{component-id: {{uuid: {{high-bits: {high}, low-bits: {low}}}}}, worker-name: {}}}, \
         args: [{}], env: [{}], status: {}, component-version: {}, retry-count: {}}}",
        wave_string(&record.id.worker_name),
        args.join(", "),
        env.join(", "),
        record.status.as_str(),
        record.component_version,
        record.retry_count
    )
}

/// How a worker was brought back.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct RecoveryReport {
    /// Oplog entries replayed (deleted regions are passed over, not counted).
    pub entries_replayed: u64,
    /// Invocations re-executed during replay.
    pub invocations_replayed: u64,
    /// Whether an invocation that was in flight when the worker last stopped was finished live.
    pub resumed_invocation: bool,
    /// Wall time of instantiation plus replay.
    pub duration_us: u64,
    /// The oplog index of the snapshot restored, if one was.
    pub snapshot_index: Option<OplogIndex>,
    /// Bytes of linear memory restored from it.
    pub bytes_restored: u64,
    /// Time to instantiate and restore the snapshot, before replaying the tail.
    pub restore_us: u64,
    /// Snapshots that could not be used, and why (newest first).
    pub skipped: Vec<String>,
    /// The invocation that was in flight and was finished live, with how it ended.
    pub resumed: Option<ResumedInvocation>,
    /// When a live instance was rewound in place to the snapshot (after a jump): the 64 KiB
    /// pages that differed and were written. `None`: a fresh instance was restored.
    pub pages_rewritten: Option<u64>,
    /// When the worker's memory image was mapped for the restore, how much of it was right.
    /// Not kept in the stored record (its layout is pinned): `worker recover` shows it.
    #[serde(skip)]
    pub image: Option<ImageUse>,
}

/// A memory image mapped for a restore.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ImageUse {
    /// 64 KiB pages of the snapshot.
    pub pages: u64,
    /// Of them, pages the image had wrong, written from storage instead.
    pub repaired: u64,
}

/// An invocation recovery finished live (it was in flight when the worker stopped, or a jump
/// went back into it).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ResumedInvocation {
    pub idempotency_key: String,
    /// The WAVE result, when it returned one.
    pub result: Option<String>,
    /// Why it failed, when it did.
    pub error: Option<String>,
}

/// The outcome of one call of an export.
enum CallOutcome {
    Returned(Option<Value>),
    Trapped(String),
    Exited(u32),
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
    interrupt: Arc<AtomicBool>,
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

/// How a snapshot's state reaches an instance.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RestoreInto {
    /// A fresh instance, every page copied from storage.
    Fresh,
    /// A fresh instance, the worker's memory image mapped where it has one (see
    /// `golemw_snapshot::image`), else as [`RestoreInto::Fresh`].
    FreshFromImage,
    /// A live instance of the same module, rewound: only the pages that differ are written.
    InPlace,
}

/// Whether an instance starts from scratch or is about to be overwritten by a snapshot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Start {
    Fresh,
    Restore,
}

/// Host-side state saved in a snapshot.
#[derive(Serialize, Deserialize)]
struct HostSnapshot {
    last_monotonic_ns: u64,
    /// Open `get-workers` resources (a guest may keep one across invocations).
    enumerations: crate::host::get_workers::Enumerations,
    /// Retry policy, persistence level, idempotence mode.
    persistence: crate::host::persistence::Persistence,
}

/// Snapshot bookkeeping of a live worker.
struct SnapshotTracker {
    policy: Policy,
    keep: usize,
    /// Oplog index of the newest snapshot (0: none).
    last_index: OplogIndex,
    /// Its page table, for change detection.
    last_pages: Option<Vec<golemw_snapshot::PageRef>>,
    /// The kernel's record of pages written since memory last equalled `last_pages` exactly.
    /// None: not tracking yet (the next capture reads all of memory and starts) or not
    /// possible here (`track_writes` is then false).
    written: Option<golemw_snapshot::DirtyTracker>,
    /// Whether to try tracking writes.
    track_writes: bool,
    /// Pages storage holds for this worker, loaded at the first capture.
    stored: Option<HashSet<golemw_snapshot::PageHash>>,
    /// Keep a memory image when memory is at least this large; `None`: never.
    image_min_bytes: Option<u64>,
    /// How the last restore into this instance used the memory image, for its report.
    mapped: Option<ImageUse>,
    /// The worker's memory image as this instance mapped or last wrote it. `None`: this
    /// instance has not; the next capture then replaces the file (a new inode) rather than
    /// writing into one that another instance may have mapped.
    image: Option<golemw_snapshot::MemoryImage>,
    /// Invocations since the newest snapshot (replayed ones included).
    invocations_since: u64,
    /// When the newest snapshot was taken (or the worker created), ms since the epoch.
    since_ms: u64,
}

impl SnapshotTracker {
    /// The pages of `memory` written since the kernel's record last restarted (it restarts
    /// now), or None when the caller must read all of memory: not tracking yet (tracking
    /// starts now, so the next call answers) or tracking unavailable (then `track_writes`
    /// turns false and stays so).
    fn take_written(&mut self, memory: &[u8]) -> Option<golemw_snapshot::PageSet> {
        if !self.track_writes {
            return None;
        }
        if let Some(written) = self.written.as_mut() {
            match written.take(memory) {
                Ok(pages) => return Some(pages),
                Err(err) => tracing::debug!(%err, "write tracking lost; starting again"),
            }
        }
        self.written = None;
        match golemw_snapshot::DirtyTracker::new(memory) {
            Ok(mut started) => {
                // Everything counts as written until the first look: take it now so that
                // the next call hears only of later writes.
                if started.take(memory).is_ok() {
                    self.written = Some(started);
                }
            }
            Err(err) => {
                tracing::debug!(%err, "pages will be compared by fingerprint");
                self.track_writes = false;
            }
        }
        None
    }

    fn new(policy: Policy, keep: usize, track_writes: bool, image_min_bytes: Option<u64>) -> Self {
        SnapshotTracker {
            policy,
            keep: keep.max(1),
            last_index: 0,
            last_pages: None,
            written: None,
            track_writes,
            stored: None,
            image_min_bytes,
            mapped: None,
            image: None,
            invocations_since: 0,
            since_ms: now_ms(),
        }
    }
}

/// Maps the worker's memory image over `memory` (a fresh instance's, grown to the snapshot's
/// size) and writes the pages it has wrong from storage. `None` when the worker has no image or
/// it cannot be mapped (`memory` then holds what it held, or zeros where a failed mapping took
/// it): the caller copies from storage, which is right over either.
fn map_image(
    storage: &Arc<Storage>,
    record: &WorkerRecord,
    manifest: &golemw_snapshot::Manifest,
    memory: &mut [u8],
    reader: &crate::snapshots::PageReader<'_>,
) -> Result<Option<(golemw_snapshot::MemoryImage, ImageUse)>> {
    let started = Instant::now();
    let unusable = |err: &dyn std::fmt::Display| {
        tracing::warn!(worker = %record.id, %err, "memory image not used; copying from storage");
    };
    let mut image = match crate::snapshots::open_image(storage, &record.uid, false) {
        Ok(Some(image)) => image,
        Ok(None) => return Ok(None),
        Err(err) => {
            unusable(&err);
            return Ok(None);
        }
    };
    // SAFETY: `memory` is the linear memory of an instance that runs nothing until restore
    // ends: a page-aligned region of Wasmer's own reservation, which Wasmer unmaps whole. The
    // image file is written only by this worker's captures, through `write_changed` by the
    // instance that mapped it, or replaced by a new file otherwise.
    let differ = match unsafe { image.map_over(memory, &manifest.pages) } {
        Ok(differ) => differ,
        Err(err) => {
            unusable(&err);
            return Ok(None);
        }
    };
    if !differ.is_empty() {
        let mut wrong = vec![false; manifest.pages.len()];
        differ.iter().for_each(|&index| wrong[index] = true);
        golemw_snapshot::restore_over_candidates(
            manifest,
            memory,
            |hash, page| reader.read_into(hash, page),
            |index| wrong[index],
        )?;
    }
    tracing::debug!(
        worker = %record.id,
        pages = manifest.pages.len(),
        repaired = differ.len(),
        map_us = started.elapsed().as_micros() as u64,
        "memory image mapped"
    );
    let used = ImageUse {
        pages: manifest.pages.len() as u64,
        repaired: differ.len() as u64,
    };
    Ok(Some((image, used)))
}

impl Worker {
    /// Creates the instance and replays the worker's oplog; afterwards the worker is live.
    pub fn recover(
        inputs: InstanceInputs<'_>,
        record: WorkerRecord,
        mode: RecoveryMode,
    ) -> Result<(Worker, RecoveryReport)> {
        Worker::recover_reusing(inputs, record, mode, None)
    }

    /// [`Worker::recover`], rewinding `live` (an instance of this worker, e.g. the one that just
    /// jumped back) in place when a snapshot allows instead of instantiating anew. A recovery
    /// whose resumed invocation jumps back again records that jump and starts over, reusing
    /// the instance the same way.
    pub fn recover_reusing(
        inputs: InstanceInputs<'_>,
        mut record: WorkerRecord,
        mode: RecoveryMode,
        mut live: Option<Worker>,
    ) -> Result<(Worker, RecoveryReport)> {
        loop {
            let mut jumped = None;
            match Worker::recover_once(&inputs, record, mode, live.take(), &mut jumped) {
                Err(Error::JumpRequested { target }) if jumped.is_some() => {
                    let worker: Worker = jumped.take().expect("checked");
                    tracing::debug!(worker = %worker.record.id, target, "jumped back during recovery");
                    record = worker.record.clone();
                    live = Some(worker);
                }
                other => return other,
            }
        }
    }

    /// Starts a worker that is not in storage yet: instantiates it live on an oplog that holds
    /// only `create` (pending, like everything its start code records). Its first commit
    /// stores the record, `create` and what followed in one transaction.
    pub fn create(
        inputs: InstanceInputs<'_>,
        record: WorkerRecord,
        create: OplogEntry,
    ) -> Result<(Worker, RecoveryReport)> {
        let started = Instant::now();
        let OplogEntry::Create { args, env, .. } = &create else {
            unreachable!("Worker::create is given a `create` entry");
        };
        let (args, env) = (args.clone(), env.clone());
        let mut gate = history_gate(inputs.storage, &record, 0, inputs.echo_output, 0);
        gate.append(create)?;
        gate.set_birth(codec::encode(&record));
        let created_at_ms = record.created_at_ms;
        let mut worker = Worker::instantiate(&inputs, record, gate, &args, &env, Start::Fresh)?;
        worker.snapshots.since_ms = created_at_ms;
        let report = RecoveryReport {
            duration_us: started.elapsed().as_micros() as u64,
            ..RecoveryReport::default()
        };
        Ok((worker, report))
    }

    /// Whether the worker is new and its first commit has not stored it yet.
    pub fn is_unborn(&mut self) -> bool {
        self.gate().is_unborn()
    }

    /// Stores a new worker that nothing has committed yet (its invocation failed before any
    /// commit), durably, with the entries its start code recorded.
    pub fn commit_birth(&mut self) -> Result<()> {
        self.record.oplog_len = self.oplog_len();
        let record = codec::encode(&self.record);
        let key = self.record.id.storage_key();
        let workers = self.storage.tables().workers;
        self.gate().commit_with(true, move |txn| {
            Ok(txn.put(workers, &key, &record, lmdb::WriteFlags::empty())?)
        })
    }

    /// One recovery; a jump during it leaves the worker in `jumped`.
    fn recover_once(
        inputs: &InstanceInputs<'_>,
        record: WorkerRecord,
        mode: RecoveryMode,
        live: Option<Worker>,
        jumped: &mut Option<Worker>,
    ) -> Result<(Worker, RecoveryReport)> {
        let started = Instant::now();
        let committed = crate::oplog::store::last_index(inputs.storage, &record.uid)?;
        let mut skipped = Vec::new();
        if mode != RecoveryMode::FullReplay {
            if let Some(blocker) = &inputs.interface.snapshot_blocker {
                skipped.push(format!("snapshots are not used: {blocker}"));
            } else if let Some((worker, mut report)) = Worker::recover_from_snapshot(
                inputs,
                &record,
                committed,
                mode,
                &mut skipped,
                live,
                jumped,
            )? {
                report.skipped = skipped;
                report.duration_us = started.elapsed().as_micros() as u64;
                return Ok((worker, report));
            }
        }
        if let RecoveryMode::FromSnapshot(index) = mode {
            return Err(Error::Corrupt {
                what: format!("snapshot at oplog index {index} of worker {}", record.id),
                detail: format!("it cannot be used: {}", skipped.join("; ")),
            });
        }
        // History starts at `create`, or at the last snapshot-based update (all before it is
        // skipped for good).
        let start = record.history.replay_start();
        let mut gate = history_gate(
            inputs.storage,
            &record,
            committed,
            inputs.echo_output,
            start - 1,
        );
        let corrupt = |detail: String| Error::Corrupt {
            what: format!("oplog of worker {}", record.id),
            detail,
        };
        let mut report = RecoveryReport {
            skipped,
            ..RecoveryReport::default()
        };
        let mut worker =
            match gate.next_replayed()? {
                Some((_, OplogEntry::Create { args, env, .. })) if start == 1 => {
                    Worker::instantiate(inputs, record, gate, &args, &env, Start::Fresh)?
                }
                Some((index, OplogEntry::SnapshotUpdateStarted { payload, .. })) if start > 1 => {
                    let (args, env) = (record.args.clone(), record.env.clone());
                    let mut worker =
                        Worker::instantiate(inputs, record, gate, &args, &env, Start::Fresh)?;
                    worker.replay_load(index, &payload)?;
                    worker
                }
                Some((index, other)) => {
                    return Err(corrupt(format!(
                    "history starts at entry {start}, which should be `{}` but entry {index} is {}",
                    if start == 1 { "create" } else { "snapshot-update-started" },
                    other.kind()
                )))
                }
                None => {
                    return Err(corrupt(
                        "it is empty; it should start with a `create` entry".into(),
                    ))
                }
            };
        if let Err(err) = worker.replay(&mut report) {
            if matches!(err, Error::JumpRequested { .. }) {
                *jumped = Some(worker);
            }
            return Err(err);
        }
        worker.snapshots.invocations_since = report.invocations_replayed;
        worker.snapshots.since_ms = worker.record.created_at_ms;
        report.entries_replayed = worker.gate().replayed();
        report.duration_us = started.elapsed().as_micros() as u64;
        Ok((worker, report))
    }

    /// Tries the worker's snapshots, newest first; `None` if none could be used (the reasons
    /// are added to `skipped`). A snapshot that fails its checksum, cannot be decoded, belongs to
    /// another component version, misses a page, or whose tail replay diverges is skipped.
    fn recover_from_snapshot(
        inputs: &InstanceInputs<'_>,
        record: &WorkerRecord,
        committed: OplogIndex,
        mode: RecoveryMode,
        skipped: &mut Vec<String>,
        mut live: Option<Worker>,
        jumped: &mut Option<Worker>,
    ) -> Result<Option<(Worker, RecoveryReport)>> {
        // Keys first: only the manifest of a snapshot that may be used is read and decoded (a
        // worker can keep a hundred of them, each tens of KiB).
        let indexes = crate::snapshots::indexes(inputs.storage, &record.uid)?;
        for &index in indexes.iter().rev() {
            if index > committed {
                continue;
            }
            if let RecoveryMode::FromSnapshot(wanted) = mode {
                if index != wanted {
                    continue;
                }
            }
            // Snapshots outside the effective history are expected after a jump or update:
            // noted in the report, not warned about.
            let outside = if let Some(region) = record.history.deleted.containing(index) {
                Some(format!(
                    "it is inside the region {region} that a jump or revert deleted"
                ))
            } else if index < record.history.replay_start() {
                Some(format!(
                    "it was taken before the snapshot-based update at oplog index {}",
                    record.history.replay_start()
                ))
            } else {
                None
            };
            if let Some(reason) = outside {
                tracing::debug!(worker = %record.id, index = index, %reason, "snapshot not used");
                skipped.push(format!("snapshot at {}: {reason}", index));
                continue;
            }
            let mut skip = |reason: String| {
                tracing::warn!(worker = %record.id, index = index, %reason, "snapshot skipped");
                skipped.push(format!("snapshot at {}: {reason}", index));
            };
            let manifest = match crate::snapshots::get(inputs.storage, &record.uid, index)? {
                Some(Ok(manifest)) => manifest,
                Some(Err(err)) => {
                    skip(err.to_string());
                    continue;
                }
                None => continue, // pruned meanwhile
            };
            let manifest = &manifest;
            if manifest.component_version != record.component_version {
                skip(format!(
                    "taken on component version {}, the worker runs version {}",
                    manifest.component_version, record.component_version
                ));
                continue;
            }
            let restore_started = Instant::now();
            // A live instance of the worker is rewound in place: only pages that differ are
            // written. If it cannot be (memory grew, other version), a fresh one is made.
            let mut rewound = None;
            let mut instantiated_us = 0;
            if let Some(mut instance) = live.take() {
                match instance.rewind(inputs, record, index, committed, manifest) {
                    Ok(written) => rewound = Some((instance, written)),
                    Err(err) => {
                        tracing::debug!(worker = %record.id, %err, "no in-place rewind");
                    }
                }
            }
            let (mut worker, pages_rewritten) = match rewound {
                Some((worker, written)) => (worker, Some(written)),
                None => {
                    let gate =
                        history_gate(inputs.storage, record, committed, inputs.echo_output, index);
                    let mut worker = Worker::instantiate(
                        inputs,
                        record.clone(),
                        gate,
                        &record.args,
                        &record.env,
                        Start::Restore,
                    )?;
                    instantiated_us = restore_started.elapsed().as_micros() as u64;
                    // A snapshot asked for by index (verify, recover --from-snapshot) is read
                    // from storage: that is what is being checked.
                    let into = match mode {
                        RecoveryMode::Auto => RestoreInto::FreshFromImage,
                        _ => RestoreInto::Fresh,
                    };
                    if let Err(err) = worker.restore_state(manifest, into) {
                        skip(err.to_string());
                        continue;
                    }
                    (worker, None)
                }
            };
            tracing::debug!(
                worker = %record.id,
                index = index,
                instantiate_us = instantiated_us,
                restore_us = restore_started.elapsed().as_micros() as u64 - instantiated_us,
                "snapshot restored"
            );
            let mut report = RecoveryReport {
                snapshot_index: Some(index),
                bytes_restored: manifest.memory_bytes,
                restore_us: restore_started.elapsed().as_micros() as u64,
                pages_rewritten,
                image: worker.snapshots.mapped.take(),
                ..RecoveryReport::default()
            };
            match worker.replay(&mut report) {
                Ok(()) => {}
                Err(err @ Error::Divergence { .. }) => {
                    skip(format!("the replay after it diverged: {err}"));
                    continue;
                }
                Err(err @ Error::JumpRequested { .. }) => {
                    *jumped = Some(worker);
                    return Err(err);
                }
                Err(err) => return Err(err),
            }
            report.entries_replayed = worker.gate().replayed();
            worker.snapshots.last_index = index;
            worker.snapshots.last_pages = Some(manifest.pages.clone());
            worker.snapshots.invocations_since = report.invocations_replayed;
            worker.snapshots.since_ms = manifest.created_at_ms;
            return Ok(Some((worker, report)));
        }
        Ok(None)
    }

    /// Overwrites the instance's memory and globals with a snapshot's. A fresh instance gets
    /// every page; `in_place` rewinds a live instance of the same module, writing only the
    /// pages that differ. Returns the pages written in place (0 for a fresh instance).
    fn restore_state(
        &mut self,
        manifest: &golemw_snapshot::Manifest,
        into: RestoreInto,
    ) -> Result<u64> {
        let in_place = into == RestoreInto::InPlace;
        let wasm_page = wasmer::WASM_PAGE_SIZE as u64;
        let current = self.memory.view(&self.store).data_size();
        if in_place && manifest.memory_bytes < current {
            // Linear memory cannot shrink.
            return Err(Error::Engine(format!(
                "memory grew from {} to {current} bytes since the snapshot",
                manifest.memory_bytes
            )));
        }
        if manifest.memory_bytes < current {
            return Err(Error::Corrupt {
                what: "snapshot".into(),
                detail: format!(
                    "its memory ({} bytes) is smaller than a fresh instance's ({current} bytes)",
                    manifest.memory_bytes
                ),
            });
        }
        if manifest.memory_bytes > current {
            let grow = (manifest.memory_bytes - current).div_ceil(wasm_page) as u32;
            self.memory
                .grow(&mut self.store, wasmer::Pages(grow))
                .map_err(|e| Error::Engine(format!("growing memory for the snapshot: {e}")))?;
        }
        let reader = crate::snapshots::PageReader::new(&self.storage, self.record.uid);
        let written = {
            let view = self.memory.view(&self.store);
            // SAFETY: no wasm code runs while we hold this slice (the instance is idle: it was
            // just created and nothing has been called), and the slice is dropped before the
            // store is used again, so nothing else reads or writes the memory meanwhile.
            let memory = unsafe { view.data_unchecked_mut() };
            if in_place {
                let tracker = &mut self.snapshots;
                // Pages that may differ from the snapshot: written since the last capture, or
                // different between that capture and this snapshot. Without the kernel's
                // record, every page's fingerprint is compared.
                let candidates = match tracker.take_written(memory) {
                    Some(written) => tracker.last_pages.as_ref().map(|last| (written, last)),
                    None => None,
                };
                let read = |hash: &golemw_snapshot::PageHash, page: &mut [u8]| {
                    reader.read_into(hash, page)
                };
                let rewritten = match candidates {
                    Some((written, last)) => {
                        golemw_snapshot::restore_over_candidates(manifest, memory, read, |i| {
                            written.contains(i) || last.get(i) != manifest.pages.get(i)
                        })?
                    }
                    None => golemw_snapshot::restore_over(manifest, memory, read)?,
                };
                // Memory equals the snapshot now: restart the record from here (our own
                // writes just now are not news). The caller sets `last_pages` to match.
                tracker.take_written(memory);
                rewritten
            } else {
                let use_image = into == RestoreInto::FreshFromImage
                    && self
                        .snapshots
                        .image_min_bytes
                        .is_some_and(|min| manifest.memory_bytes >= min);
                let image = match use_image {
                    true => map_image(&self.storage, &self.record, manifest, memory, &reader)?,
                    false => None,
                };
                if let Some((image, used)) = image {
                    self.snapshots.image = Some(image);
                    self.snapshots.mapped = Some(used);
                } else {
                    // A fresh instance's memory is zero beyond what it had before growing and,
                    // when the module's data segments are all it writes at instantiation,
                    // outside them.
                    let initialized = self.interface.initialized_memory.as_deref();
                    let page = golemw_snapshot::PAGE_BYTES as u64;
                    let known_zero = |index: usize| {
                        let start = index as u64 * page;
                        let end = start + page;
                        start >= current
                            || initialized.is_some_and(|ranges| {
                                !ranges.iter().any(|r| r.start < end && start < r.end)
                            })
                    };
                    golemw_snapshot::restore_into_fresh(
                        manifest,
                        memory,
                        |hash, page| reader.read_into(hash, page),
                        known_zero,
                    )?;
                }
                // Memory equals the snapshot: start the kernel's record here (about 1 ms per
                // 64 MiB restored), so the next capture or rewind reads only what the replay
                // and later invocations write. The caller sets `last_pages` to match.
                let tracker = &mut self.snapshots;
                let started = Instant::now();
                tracker.take_written(memory);
                if tracker.written.is_some() {
                    tracing::debug!(
                        worker = %self.record.id,
                        track_us = started.elapsed().as_micros() as u64,
                        "write tracking started"
                    );
                }
                0
            }
        };
        let mut store = self.store.as_store_mut();
        let objects = store.objects_mut();
        let count = objects.as_u128_globals().len();
        if count != manifest.globals.len() {
            return Err(Error::Corrupt {
                what: "snapshot".into(),
                detail: format!(
                    "it has {} globals, the instance {count}",
                    manifest.globals.len()
                ),
            });
        }
        for (index, value) in manifest.globals.iter().enumerate() {
            // The values were read from an instance of the same module (component version
            // checked above) with the same global layout, so each fits its global's type.
            objects.set_global_unchecked(index, *value);
        }
        let host: HostSnapshot =
            postcard::from_bytes(&manifest.host_state).map_err(|e| Error::Corrupt {
                what: "snapshot host state".into(),
                detail: e.to_string(),
            })?;
        let state = self.env.as_mut(&mut self.store);
        state.last_monotonic_ns = host.last_monotonic_ns;
        state.enumerations = host.enumerations;
        state.persistence = host.persistence;
        crate::host::persistence::apply_level(state);
        Ok(written)
    }

    /// Prepares this live instance to be rewound to the snapshot at `index` (then replay the
    /// tail from there): same module, a fresh gate, the new record; memory and globals in
    /// place. Returns the pages written. On error the instance must be dropped.
    fn rewind(
        &mut self,
        inputs: &InstanceInputs<'_>,
        record: &WorkerRecord,
        index: OplogIndex,
        committed: OplogIndex,
        manifest: &golemw_snapshot::Manifest,
    ) -> Result<u64> {
        if self.record.component_version != record.component_version
            || !Arc::ptr_eq(&self.interface, inputs.interface)
        {
            return Err(Error::Engine(
                "the live instance runs another component version".into(),
            ));
        }
        let mut gate = history_gate(inputs.storage, record, committed, inputs.echo_output, index);
        gate.set_interrupt(Arc::clone(&self.interrupt));
        let written = self.restore_state(manifest, RestoreInto::InPlace)?;
        let context = context_for(inputs, record);
        let state = self.env.as_mut(&mut self.store);
        state.gate = gate;
        // The persistence level restored with the snapshot applies to the new gate.
        crate::host::persistence::apply_level(state);
        state.context = context;
        state.update_requests.clear();
        self.record = record.clone();
        Ok(written)
    }

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
        let engine_error =
            |what: &str, e: &dyn std::fmt::Display| Error::Engine(format!("{what}: {e}"));
        let mut store = Store::new(inputs.engine.clone());
        let mut wasi = wasmer_wasix::WasiEnvBuilder::new(record.id.worker_name.clone())
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
        let context = context_for(inputs, &record);
        let interrupt = Arc::new(AtomicBool::new(false));
        gate.set_interrupt(Arc::clone(&interrupt));
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
                durable_sleep_min: inputs.durable_sleep_min,
            },
        );
        host::wasi::override_imports(&mut store, &host_env, &mut imports);
        host::golem::define_imports(
            &mut store,
            &host_env,
            &mut imports,
            inputs.module,
            &inputs.interface.golem_imports,
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
            interrupt,
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

    /// The fatal error a host function raised, else `fallback`.
    fn fatal_or(&mut self, fallback: Error) -> Error {
        self.gate().take_fatal().unwrap_or(fallback)
    }

    /// Replays the rest of the oplog.
    fn replay(&mut self, report: &mut RecoveryReport) -> Result<()> {
        while let Some((index, entry)) = self.gate().next_replayed()? {
            match entry {
                OplogEntry::ExportedFunctionInvoked {
                    function,
                    params,
                    idempotency_key,
                    ..
                } => {
                    report.invocations_replayed += 1;
                    self.replay_invocation(index, &function, &params, &idempotency_key, report)?;
                }
                OplogEntry::Error { message, .. } => {
                    self.record.status = WorkerStatus::Failed;
                    self.record.last_error = Some(message);
                }
                OplogEntry::Exited { .. } => self.record.status = WorkerStatus::Exited,
                OplogEntry::Jump { .. } | OplogEntry::NoOp => {}
                other => {
                    return Err(self.gate().diverged(
                        index,
                        format!("expected an invocation, found {}: {other}", other.kind()),
                    ))
                }
            }
        }
        Ok(())
    }

    fn replay_invocation(
        &mut self,
        index: OplogIndex,
        function: &str,
        params: &[String],
        idempotency_key: &str,
        report: &mut RecoveryReport,
    ) -> Result<()> {
        let export = self
            .interface
            .find_export(function)
            .map_err(|e| Error::Divergence {
                worker: self.record.id.clone(),
                index,
                detail: format!("the recorded invocation of {function} cannot be replayed: {e}"),
            })?;
        let values = parse_params(&export, params)?;
        self.begin_invocation(index);
        let outcome = match self.call_export(&export, &values) {
            Err(Error::JumpRequested { target }) => return Err(self.record_jump(target)),
            Err(err @ Error::Suspended { .. }) => return Err(self.suspend(err, idempotency_key)),
            Err(err @ Error::Sleeping { .. }) => return Err(self.sleep(err, idempotency_key)),
            Err(Error::Interrupted { .. }) => return Err(self.interrupted()),
            other => other?,
        };
        if self.gate().mode() == Mode::Live {
            // The oplog ended inside this invocation: it was in flight when the worker stopped
            // (or a jump went back into it). It has now finished live; record it like any live
            // invocation, and keep how it ended for whoever is waiting for it.
            report.resumed_invocation = true;
            // Whoever waits for it may know its key (it was suspended, retried or interrupted
            // and may be asked for again): keep the result.
            let (result, error) = match self.finish_live(&export, idempotency_key, true, outcome) {
                Ok(result) => (result, None),
                Err(err @ Error::Trap { .. }) => (None, Some(err.to_string())),
                Err(err) => return Err(err),
            };
            report.resumed = Some(ResumedInvocation {
                idempotency_key: idempotency_key.to_string(),
                result,
                error,
            });
            self.snapshots.invocations_since += 1;
            return Ok(());
        }
        let next = self.gate().next_replayed()?;
        match (outcome, next) {
            (
                CallOutcome::Returned(value),
                Some((_, OplogEntry::ExportedFunctionCompleted { result, .. })),
            ) => {
                let replayed = value.as_ref().map(to_wave).transpose()?;
                // Host calls made with persistence off ran live again: the result may differ.
                if replayed != result && !self.gate().take_unrecorded() {
                    return Err(self.gate().diverged(
                        index,
                        format!(
                            "{} returned {} on replay but {} when it ran",
                            export.display_name,
                            replayed.as_deref().unwrap_or("nothing"),
                            result.as_deref().unwrap_or("nothing")
                        ),
                    ));
                }
                Ok(())
            }
            (CallOutcome::Trapped(message), Some((_, OplogEntry::Error { .. }))) => {
                self.record.status = WorkerStatus::Failed;
                self.record.last_error = Some(message);
                Ok(())
            }
            (CallOutcome::Exited(_), Some((_, OplogEntry::Exited { .. }))) => {
                self.record.status = WorkerStatus::Exited;
                Ok(())
            }
            (outcome, next) => {
                let got = match outcome {
                    CallOutcome::Returned(_) => "returned".to_string(),
                    CallOutcome::Trapped(m) => format!("trapped ({m})"),
                    CallOutcome::Exited(c) => format!("exited with code {c}"),
                };
                let (at, recorded) = match next {
                    Some((i, e)) => (i, e.to_string()),
                    None => (index, "the end of the oplog".into()),
                };
                Err(self.gate().diverged(
                    at,
                    format!(
                        "{} {got} on replay, but the oplog has: {recorded}",
                        export.display_name
                    ),
                ))
            }
        }
    }

    /// Invokes an export live with WAVE params; returns the WAVE result. `keep_result` stores
    /// the result under the idempotency key, for a caller that may repeat the key; without it
    /// (a key generated for this call, known to nobody) the result is only in the oplog, and
    /// the commit writes one table fewer.
    pub fn invoke(
        &mut self,
        function: &str,
        params: &[String],
        idempotency_key: &str,
        keep_result: bool,
    ) -> Result<Option<String>> {
        match self.record.status {
            WorkerStatus::Failed => {
                return Err(Error::WorkerFailed {
                    worker: self.record.id.clone(),
                    reason: self.record.last_error.clone().unwrap_or_default(),
                })
            }
            WorkerStatus::Exited => {
                return Err(Error::WorkerExited {
                    worker: self.record.id.clone(),
                })
            }
            _ => {}
        }
        let export = self.interface.find_export(function)?;
        let values = parse_params(&export, params)?;
        let canonical: Vec<String> = values.iter().map(to_wave).collect::<Result<_, _>>()?;
        let invoked = self.gate().append(OplogEntry::ExportedFunctionInvoked {
            timestamp_ms: now_ms(),
            function: export.core_name.clone(),
            params: canonical,
            idempotency_key: idempotency_key.to_string(),
        })?;
        self.begin_invocation(invoked);
        self.record.status = WorkerStatus::Running;
        let outcome = match self.call_export(&export, &values) {
            Err(Error::JumpRequested { target }) => return Err(self.record_jump(target)),
            Err(err @ Error::Suspended { .. }) => return Err(self.suspend(err, idempotency_key)),
            Err(err @ Error::Sleeping { .. }) => return Err(self.sleep(err, idempotency_key)),
            Err(Error::Interrupted { .. }) => return Err(self.interrupted()),
            other => other?,
        };
        let result = self.finish_live(&export, idempotency_key, keep_result, outcome)?;
        self.snapshots.invocations_since += 1;
        self.maybe_snapshot();
        Ok(result)
    }

    /// Takes a snapshot if the policy says one is due. A failed snapshot never fails the
    /// invocation that preceded it: recovery then replays a longer tail, that is all.
    fn maybe_snapshot(&mut self) {
        if self.record.status != WorkerStatus::Idle || self.interface.snapshot_blocker.is_some() {
            return;
        }
        let entries = self.oplog_len() - self.snapshots.last_index;
        let tracker = &self.snapshots;
        let elapsed = std::time::Duration::from_millis(now_ms().saturating_sub(tracker.since_ms));
        if !tracker
            .policy
            .due(tracker.invocations_since, entries, elapsed)
        {
            return;
        }
        if let Err(err) = self.snapshot() {
            tracing::warn!(worker = %self.record.id, %err, "snapshot failed; recovery will replay further");
        }
    }

    /// Captures memory, globals and host state at this idle point, stores the snapshot, and
    /// prunes old ones beyond the number to keep.
    pub fn snapshot(&mut self) -> Result<golemw_snapshot::CaptureStats> {
        if let Some(blocker) = &self.interface.snapshot_blocker {
            return Err(Error::Engine(format!(
                "this worker cannot be snapshotted: {blocker}"
            )));
        }
        assert_eq!(
            self.gate().pending_len(),
            0,
            "snapshots are taken after a commit"
        );
        let index = self.oplog_len();
        let globals = self.store.as_store_mut().objects_mut().as_u128_globals();
        let state = self.env.as_ref(&self.store);
        let host_state = postcard::to_stdvec(&HostSnapshot {
            last_monotonic_ns: state.last_monotonic_ns,
            enumerations: state.enumerations.clone(),
            persistence: state.persistence.clone(),
        })
        .expect("encoding into a Vec cannot fail");
        if self.snapshots.stored.is_none() {
            self.snapshots.stored = Some(crate::snapshots::stored_pages(
                &self.storage,
                &self.record.uid,
            )?);
        }
        let tracker = &mut self.snapshots;
        let capture = {
            let view = self.memory.view(&self.store);
            // SAFETY: this is an idle point: no wasm frame is on the stack and nothing runs
            // until this function returns, by which time the slice is gone.
            let memory = unsafe { view.data_unchecked() };
            // Taken before memory is read: from here the record counts writes after this
            // capture. Nothing writes in between (idle point).
            let written = tracker.take_written(memory);
            let stored = tracker.stored.as_ref().expect("loaded above");
            let state = golemw_snapshot::State {
                memory,
                globals,
                host_state,
                oplog_index: index,
                component_version: self.record.component_version,
                created_at_ms: now_ms(),
            };
            let is_stored = |hash: &golemw_snapshot::PageHash| stored.contains(hash);
            match (written, tracker.last_pages.as_deref()) {
                (Some(written), Some(last)) => {
                    golemw_snapshot::capture_written(state, last, &written, is_stored)
                }
                (_, last) => golemw_snapshot::capture(state, last, is_stored),
            }
        };
        if let Err(err) = crate::snapshots::put(&self.storage, &self.record.uid, &capture) {
            // The kernel's record restarted at this capture, which is not stored, while
            // `last_pages` still describes the previous one: the next capture must read all
            // of memory again.
            self.snapshots.written = None;
            return Err(err);
        }
        let stats = capture.manifest.stats;
        let tracker = &mut self.snapshots;
        if let Some(stored) = tracker.stored.as_mut() {
            stored.extend(capture.new_pages.iter().map(|(hash, _)| *hash));
        }
        tracker.last_pages = Some(capture.manifest.pages);
        tracker.last_index = index;
        tracker.invocations_since = 0;
        tracker.since_ms = now_ms();
        self.write_image();
        self.prune_snapshots()?;
        tracing::debug!(worker = %self.record.id, index, ?stats, "snapshot taken");
        Ok(stats)
    }

    /// Brings the worker's memory image to the snapshot just taken (memory equals `last_pages`),
    /// where memory is large enough to keep one. A failure costs only speed: the image is
    /// removed and the next restore copies from storage.
    fn write_image(&mut self) {
        let Some(min) = self.snapshots.image_min_bytes else {
            return;
        };
        let view = self.memory.view(&self.store);
        if view.data_size() < min {
            return;
        }
        // SAFETY: an idle point (right after a capture): nothing runs while the slice lives.
        let memory = unsafe { view.data_unchecked() };
        let tracker = &mut self.snapshots;
        let pages = tracker.last_pages.as_deref().expect("set by the capture");
        let started = Instant::now();
        let image = match tracker.image.take() {
            Some(image) => Ok(image),
            // Not mapped or written by this instance: a new file, since another instance of
            // this worker (one being replaced) may still map the old one.
            None => crate::snapshots::open_image(&self.storage, &self.record.uid, true)
                .map(|image| image.expect("created")),
        };
        let written = image.and_then(|mut image| {
            let path = || crate::snapshots::image_path(&self.storage, &self.record.uid);
            let written = image
                .write_changed(memory, pages)
                .map_err(|e| Error::io(path(), e))?;
            Ok((image, written))
        });
        match written {
            Ok((image, pages_written)) => {
                tracing::debug!(
                    worker = %self.record.id,
                    pages_written,
                    image_us = started.elapsed().as_micros() as u64,
                    "memory image written"
                );
                tracker.image = Some(image);
            }
            Err(err) => {
                tracing::warn!(worker = %self.record.id, %err, "memory image dropped");
                let _ = crate::snapshots::delete_image(&self.storage, &self.record.uid);
            }
        }
    }

    fn prune_snapshots(&mut self) -> Result<()> {
        // Keys only: decoding every kept manifest here cost milliseconds per snapshot.
        let indexes = crate::snapshots::indexes(&self.storage, &self.record.uid)?;
        if indexes.len() <= self.snapshots.keep {
            return Ok(());
        }
        let cutoff = indexes[indexes.len() - self.snapshots.keep];
        crate::snapshots::delete_where(&self.storage, &self.record.uid, |index| index < cutoff)?;
        // Pages may have been collected: reload the set at the next capture.
        self.snapshots.stored = None;
        Ok(())
    }

    /// Whether the kernel is recording which pages of this instance's memory are written
    /// (from its restore, rewind or first snapshot on, where available).
    pub fn tracks_writes(&self) -> bool {
        self.snapshots.written.is_some()
    }

    /// A digest of the instance state (memory and globals): equal digests, equal states.
    pub fn state_digest(&mut self) -> String {
        let globals = self.store.as_store_mut().objects_mut().as_u128_globals();
        let mut hasher = blake3::Hasher::new();
        {
            let view = self.memory.view(&self.store);
            // SAFETY: as in `snapshot`: idle point, slice dropped before the store is used.
            hasher.update(unsafe { view.data_unchecked() });
        }
        for global in globals {
            hasher.update(&global.to_le_bytes());
        }
        hasher.finalize().to_hex().to_string()
    }

    /// Records how a live invocation ended and commits it durably with the worker record and,
    /// with `keep_result`, the result under its idempotency key, in one transaction.
    fn finish_live(
        &mut self,
        export: &ExportedFunction,
        idempotency_key: &str,
        keep_result: bool,
        outcome: CallOutcome,
    ) -> Result<Option<String>> {
        match &outcome {
            CallOutcome::Trapped(message) => {
                if let Some(retry) =
                    self.schedule_retry(&export.display_name, idempotency_key, message)?
                {
                    return Err(retry);
                }
            }
            // It ran to the end: the retries of this invocation, if any, are over.
            _ => {
                self.record.retry_count = 0;
                self.record.last_error = None;
            }
        }
        let (entry, status, returned) = match outcome {
            CallOutcome::Returned(value) => {
                let result = value.as_ref().map(to_wave).transpose()?;
                (
                    OplogEntry::ExportedFunctionCompleted {
                        timestamp_ms: now_ms(),
                        result: result.clone(),
                    },
                    WorkerStatus::Idle,
                    Ok(result),
                )
            }

            CallOutcome::Trapped(message) => (
                OplogEntry::Error {
                    timestamp_ms: now_ms(),
                    message: message.clone(),
                },
                WorkerStatus::Failed,
                Err(Error::Trap {
                    function: export.display_name.clone(),
                    message,
                }),
            ),
            CallOutcome::Exited(code) => (
                OplogEntry::Exited {
                    timestamp_ms: now_ms(),
                    code,
                },
                WorkerStatus::Exited,
                Ok(None),
            ),
        };
        let completed_at = self.gate().append(entry)?;
        self.record.status = status;
        if let Err(err) = &returned {
            self.record.last_error = Some(err.to_string());
        }
        self.record.oplog_len = completed_at;
        let record = codec::encode(&self.record);
        let record_key = self.record.id.storage_key();
        let result_value = match &returned {
            Ok(result) if keep_result => Some(codec::encode(&InvocationResult {
                function: export.display_name.clone(),
                result: result.clone(),
                completed_at,
            })),
            _ => None,
        };
        let invocation_key = invocation_key(&self.record.uid, idempotency_key);
        let tables = self.storage.tables();
        self.gate().commit_with(true, move |txn| {
            use lmdb::WriteFlags;
            txn.put(tables.workers, &record_key, &record, WriteFlags::empty())?;
            if let Some(value) = &result_value {
                txn.put(
                    tables.invocations,
                    &invocation_key,
                    value,
                    WriteFlags::empty(),
                )?;
            }
            Ok(())
        })?;
        returned
    }

    /// Calls an export: lower params, call, lift the result, post-return.
    fn call_export(&mut self, export: &ExportedFunction, values: &[Value]) -> Result<CallOutcome> {
        let func = self
            .instance
            .exports
            .get_function(&export.core_name)
            .cloned()
            .map_err(|_| {
                Error::UnknownFunction(format!("the module has no export {}", export.core_name))
            })?;
        let memory = self.memory.clone();
        let realloc = self.realloc.clone();
        let core_args = {
            let mut mem = GuestMem {
                store: &mut self.store,
                memory: &memory,
                realloc: realloc.as_ref(),
            };
            match export.abi.lower_params(&mut mem, values) {
                Ok(args) => args,
                Err(err) => return self.trapped_or_fatal(err.to_string()),
            }
        };
        let args: Vec<wasmer::Value> = core_args.into_iter().map(to_wasmer).collect();
        let results = match func.call(&mut self.store, &args) {
            Ok(results) => results,
            Err(err) => return self.classify_trap(err),
        };
        let core_results = results
            .iter()
            .map(from_wasmer)
            .collect::<Result<Vec<_>, RuntimeError>>()
            .map_err(|e| Error::Engine(e.message()))?;
        let lifted = {
            let mem = GuestMem {
                store: &mut self.store,
                memory: &memory,
                realloc: realloc.as_ref(),
            };
            export.abi.lift_result(&mem, &core_results)
        };
        let value = match lifted {
            Ok(value) => value,
            Err(err) => {
                return self.trapped_or_fatal(format!("the result could not be read: {err}"))
            }
        };
        let post_name = crate::abi::post_return_name(&export.core_name);
        if let Ok(post) = self.instance.exports.get_function(&post_name).cloned() {
            if let Err(err) = post.call(&mut self.store, &results) {
                return self.classify_trap(err);
            }
        }
        Ok(CallOutcome::Returned(value))
    }

    fn trapped_or_fatal(&mut self, message: String) -> Result<CallOutcome> {
        match self.gate().take_fatal() {
            Some(err) => Err(err),
            None => Ok(CallOutcome::Trapped(message)),
        }
    }

    /// A guest call failed: a host-side fatal error (divergence, storage), an exit, or a trap.
    fn classify_trap(&mut self, err: RuntimeError) -> Result<CallOutcome> {
        if let Some(fatal) = self.gate().take_fatal() {
            return Err(fatal);
        }
        // Whatever trapped once an interrupt was asked for is the interrupt: Wasmer's signal
        // can land where its trap is not reported as `HostInterrupt`, and an invocation being
        // interrupted must not be retried.
        if self.interrupt.load(Ordering::Relaxed) {
            return Err(Error::Interrupted {
                worker: self.record.id.clone(),
            });
        }
        match err.downcast::<wasmer_wasix::WasiError>() {
            Ok(wasmer_wasix::WasiError::Exit(code)) => Ok(CallOutcome::Exited(code.raw() as u32)),
            Ok(other) => Ok(CallOutcome::Trapped(other.to_string())),
            Err(err) => Ok(CallOutcome::Trapped(err.message())),
        }
    }

    /// What stops this worker's running invocation from another thread: the flag its gate
    /// checks at every host call, and Wasmer's interrupter for guest code between host calls.
    pub fn interrupter(&self) -> (Arc<AtomicBool>, wasmer::Interrupter) {
        (Arc::clone(&self.interrupt), self.store.interrupter())
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

/// Parses WAVE params against an export's param types, with errors that name the param.
pub fn parse_params(export: &ExportedFunction, params: &[String]) -> Result<Vec<Value>> {
    let names = export.abi.param_names();
    let types = export.abi.param_types();
    let signature = || {
        names
            .iter()
            .zip(types)
            .map(|(n, t)| format!("{n}: {}", t))
            .collect::<Vec<_>>()
            .join(", ")
    };
    if params.len() != types.len() {
        return Err(Error::InvalidArguments(format!(
            "{} takes {} parameter{} ({}) but {} {} given",
            export.display_name,
            types.len(),
            if types.len() == 1 { "" } else { "s" },
            signature(),
            params.len(),
            if params.len() == 1 { "was" } else { "were" }
        )));
    }
    params
        .iter()
        .zip(types)
        .zip(names)
        .enumerate()
        .map(|(i, ((text, ty), name))| {
            parse_wave(ty, text).map_err(|e| {
                Error::InvalidArguments(format!(
                    "parameter {} ({name}: {}) of {}: {e}",
                    i + 1,
                    ty,
                    export.display_name
                ))
            })
        })
        .collect()
}
