//! Bringing a worker back: from scratch or from the nearest usable snapshot (restored into a
//! fresh instance, or rewound in place after a jump), then replaying the tail of its oplog.

use std::sync::Arc;
use std::time::Instant;

use wasmer::AsStoreMut;

use super::invoke::{parse_params, CallOutcome};
use super::snapshot::HostSnapshot;
use super::{context_for, history_gate, InstanceInputs, RecoveryMode, Start, Worker};
use crate::abi::to_wave;
use crate::error::{Error, Result};
use crate::gate::Mode;
use crate::ids::OplogIndex;
use crate::oplog::OplogEntry;
use crate::outcome::Halt;
use crate::storage::Storage;
use crate::worker_records::{
    ImageUse, RecoveryReport, ResumedInvocation, WorkerRecord, WorkerStatus, WorkerStore,
};

/// How a snapshot's state reaches an instance.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum RestoreInto {
    /// A fresh instance, every page copied from storage.
    Fresh,
    /// A fresh instance, the worker's memory image mapped where it has one (see
    /// `golemw_snapshot::image`), else as [`RestoreInto::Fresh`].
    FreshFromImage,
    /// A live instance of the same module, rewound: only the pages that differ are written.
    InPlace,
}

/// Maps the worker's memory image over `memory` (a fresh instance's, grown to the snapshot's
/// size) and writes the pages it has wrong from storage. `None` when the worker has no image or
/// it cannot be mapped (`memory` then holds what it held, or zeros where a failed mapping took
/// it): the caller copies from storage, which is right over either.
pub(super) fn map_image(
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
    ) -> Result<(Worker, RecoveryReport), Halt> {
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
    ) -> Result<(Worker, RecoveryReport), Halt> {
        loop {
            let mut jumped = None;
            match Worker::recover_once(&inputs, record, mode, live.take(), &mut jumped) {
                Err(Halt::Jumped { target }) if jumped.is_some() => {
                    let worker: Worker = jumped.take().expect("checked");
                    tracing::debug!(worker = %worker.record.id, target, "jumped back during recovery");
                    record = worker.record.clone();
                    live = Some(worker);
                }
                other => {
                    if let Ok((_, report)) = &other {
                        crate::metrics::get().restore(
                            report.snapshot_index,
                            report.duration_us,
                            report.entries_replayed,
                        );
                    }
                    return other;
                }
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
        gate.set_birth(WorkerStore::new(Arc::clone(inputs.storage)).encode(&record));
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
        self.commit_record(true)
    }

    /// One recovery; a jump during it leaves the worker in `jumped`.
    pub(super) fn recover_once(
        inputs: &InstanceInputs<'_>,
        record: WorkerRecord,
        mode: RecoveryMode,
        live: Option<Worker>,
        jumped: &mut Option<Worker>,
    ) -> Result<(Worker, RecoveryReport), Halt> {
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
            }
            .into());
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
                ))
                    .into())
                }
                None => {
                    return Err(corrupt(
                        "it is empty; it should start with a `create` entry".into(),
                    )
                    .into())
                }
            };
        if let Err(err) = worker.replay(&mut report) {
            if matches!(err, Halt::Jumped { .. }) {
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
    pub(super) fn recover_from_snapshot(
        inputs: &InstanceInputs<'_>,
        record: &WorkerRecord,
        committed: OplogIndex,
        mode: RecoveryMode,
        skipped: &mut Vec<String>,
        mut live: Option<Worker>,
        jumped: &mut Option<Worker>,
    ) -> Result<Option<(Worker, RecoveryReport)>, Halt> {
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
                Err(Halt::Failed(err @ Error::Divergence { .. })) => {
                    skip(format!("the replay after it diverged: {err}"));
                    continue;
                }
                Err(err @ Halt::Jumped { .. }) => {
                    *jumped = Some(worker);
                    return Err(err);
                }
                Err(err) => return Err(err),
            }
            report.entries_replayed = worker.gate().replayed();
            worker.snapshots.last_index = index;
            worker.snapshots.last_pages = Some(manifest.pages.clone());
            // Its pages are stored: only memory added from here on is new to a snapshot.
            worker.snapshots.last_memory_bytes = manifest.memory_bytes;
            worker.snapshots.invocations_since = report.invocations_replayed;
            worker.snapshots.since_ms = manifest.created_at_ms;
            return Ok(Some((worker, report)));
        }
        Ok(None)
    }

    /// Overwrites the instance's memory and globals with a snapshot's. A fresh instance gets
    /// every page; `in_place` rewinds a live instance of the same module, writing only the
    /// pages that differ. Returns the pages written in place (0 for a fresh instance).
    pub(super) fn restore_state(
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
        let reader = crate::snapshots::PageReader::new(&self.storage, self.record.uid)?;
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
        let corrupt = |e: postcard::Error| Error::Corrupt {
            what: "snapshot host state".into(),
            detail: e.to_string(),
        };
        let (host, rest): (HostSnapshot, &[u8]) =
            postcard::take_from_bytes(&manifest.host_state).map_err(corrupt)?;
        let (rpc, rest): (crate::host::rpc::RpcHandles, &[u8]) = match rest.is_empty() {
            true => (Default::default(), rest),
            false => postcard::take_from_bytes(rest).map_err(corrupt)?,
        };
        let (wasi2, rest): (crate::host::wasi2::Handles, &[u8]) = match rest.is_empty() {
            true => (Default::default(), rest),
            false => postcard::take_from_bytes(rest).map_err(corrupt)?,
        };
        let (http, rest): (crate::host::http::HttpHandles, &[u8]) = match rest.is_empty() {
            true => (Default::default(), rest),
            false => postcard::take_from_bytes(rest).map_err(corrupt)?,
        };
        let (keyvalue, rest): (crate::host::keyvalue::Handles, &[u8]) = match rest.is_empty() {
            true => (Default::default(), rest),
            false => postcard::take_from_bytes(rest).map_err(corrupt)?,
        };
        let blobstore: crate::host::blobstore::Handles = match rest.is_empty() {
            true => Default::default(),
            false => postcard::from_bytes(rest).map_err(corrupt)?,
        };
        let state = self.env.as_mut(&mut self.store);
        state.last_monotonic_ns = host.last_monotonic_ns;
        state.enumerations = host.enumerations;
        state.persistence = host.persistence;
        state.rpc = rpc;
        state.wasi2 = wasi2;
        state.http = http;
        state.keyvalue = keyvalue;
        state.blobstore = blobstore;
        crate::host::persistence::apply_level(state);
        Ok(written)
    }

    /// Prepares this live instance to be rewound to the snapshot at `index` (then replay the
    /// tail from there): same module, a fresh gate, the new record; memory and globals in
    /// place. Returns the pages written. On error the instance must be dropped.
    pub(super) fn rewind(
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
        gate.set_stop(self.stop.clone());
        let written = self.restore_state(manifest, RestoreInto::InPlace)?;
        let context = context_for(inputs, record)?;
        let state = self.env.as_mut(&mut self.store);
        state.gate = gate;
        // The persistence level restored with the snapshot applies to the new gate.
        crate::host::persistence::apply_level(state);
        state.context = context;
        state.update_requests.clear();
        self.record = record.clone();
        Ok(written)
    }

    /// Replays the rest of the oplog.
    pub(super) fn replay(&mut self, report: &mut RecoveryReport) -> Result<(), Halt> {
        while let Some((index, entry)) = self.gate().next_replayed()? {
            match entry {
                OplogEntry::ExportedFunctionInvoked {
                    function,
                    params,
                    idempotency_key,
                    ..
                } => {
                    report.invocations_replayed += 1;
                    // Counted whole (parsing, entries, the call, the comparison): it is what
                    // this replay cost, and what the next one will.
                    let started = std::time::Instant::now();
                    self.replay_invocation(index, &function, &params, &idempotency_key, report)?;
                    self.snapshots.replay_us += started.elapsed().as_micros() as u64;
                }
                OplogEntry::Error { message, .. } => {
                    self.record.status = WorkerStatus::Failed;
                    self.record.last_error = Some(message);
                }
                OplogEntry::Exited { .. } => self.record.status = WorkerStatus::Exited,
                OplogEntry::Jump { .. } | OplogEntry::NoOp => {}
                other => {
                    return Err(self
                        .gate()
                        .diverged(
                            index,
                            format!("expected an invocation, found {}: {other}", other.kind()),
                        )
                        .into())
                }
            }
        }
        Ok(())
    }

    pub(super) fn replay_invocation(
        &mut self,
        index: OplogIndex,
        function: &str,
        params: &[String],
        idempotency_key: &str,
        report: &mut RecoveryReport,
    ) -> Result<(), Halt> {
        let export = self
            .interface
            .find_export(function)
            .map_err(|e| Error::Divergence {
                worker: self.record.id.clone(),
                index,
                detail: format!("the recorded invocation of {function} cannot be replayed: {e}"),
            })?;
        let values = parse_params(&export, params)?;
        self.begin_invocation(index, idempotency_key);
        let outcome = self.call_and_settle(&export, &values, idempotency_key)?;
        if self.gate().mode() == Mode::Live {
            // The oplog ended inside this invocation: it was in flight when the worker stopped
            // (or a jump went back into it). It has now finished live; record it like any live
            // invocation, and keep how it ended for whoever is waiting for it.
            report.resumed_invocation = true;
            // Whoever waits for it may know its key (it was suspended, retried or interrupted
            // and may be asked for again): keep the result.
            let (result, error) =
                match self.finish_live(&export, idempotency_key, true, true, outcome) {
                    Ok(result) => (result, None),
                    Err(Halt::Failed(err @ Error::Trap { .. })) => (None, Some(err.to_string())),
                    Err(halt) => return Err(halt),
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
                    return Err(self
                        .gate()
                        .diverged(
                            index,
                            format!(
                                "{} returned {} on replay but {} when it ran",
                                export.display_name,
                                replayed.as_deref().unwrap_or("nothing"),
                                result.as_deref().unwrap_or("nothing")
                            ),
                        )
                        .into());
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
                Err(self
                    .gate()
                    .diverged(
                        at,
                        format!(
                            "{} {got} on replay, but the oplog has: {recorded}",
                            export.display_name
                        ),
                    )
                    .into())
            }
        }
    }
}
