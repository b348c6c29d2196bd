//! Moving a worker to another component version, once it is idle.
//!
//! - Automatic: recover the worker on the new version by replaying its whole (effective)
//!   history. Memory snapshots of the old version are useless for new code, so this is always a
//!   full replay; a snapshot of the new version is taken at once so the next restart is fast.
//! - Snapshot-based: the old version's `save` export produces bytes; a fresh instance of the new
//!   version takes them in its `load` export. History before that point is skipped for good:
//!   replay starts at the `snapshot-update-started` entry, which keeps the bytes.
//!
//! Either way the update reaches storage in one transaction or not at all (the new instance's
//! entries are held in memory until it commits), and a failure is recorded in the oplog and
//! the worker record while the worker stays on its old version.

use wasm_wave::value::Value;
use wasm_wave::wasm::WasmValue;

use super::invoke::{CallOutcome, Called};
use super::{history_gate, InstanceInputs, RecoveryMode, Start, Worker, WorkerStatus};
use crate::abi::to_wave;
use crate::error::{Error, Result};
use crate::history::{UpdateMode, UpdateOutcome};
use crate::oplog::{now_ms, OplogEntry};

/// The export a snapshot-based update calls on the old version.
pub const SAVE_EXPORT: &str = "golem:api/save-snapshot@0.2.0#save";
/// The export a snapshot-based update calls on the new version.
pub const LOAD_EXPORT: &str = "golem:api/load-snapshot@0.2.0#load";

/// Why an update failed, and the old worker if its instance is still good to use (`None`:
/// recover it from storage; its record already says the update failed).
pub struct UpdateFailure {
    pub reason: String,
    /// Boxed: a worker is large, and failure is the rare path.
    pub worker: Option<Box<Worker>>,
}

impl Worker {
    /// Applies the pending update `slot` of this worker's history in automatic mode.
    pub fn update_automatic(
        mut self,
        inputs: InstanceInputs<'_>,
        slot: usize,
    ) -> Result<Worker, UpdateFailure> {
        let target = self.record.history.updates[slot].target_version;
        let at = self.oplog_len() + 1;
        let mut candidate = self.record.clone();
        {
            let update = &mut candidate.history.updates[slot];
            update.outcome = UpdateOutcome::Succeeded;
            update.started_at = at;
            update.completed_at = at;
        }
        candidate.component_version = target;
        candidate.status = WorkerStatus::Idle;
        let replayed = Worker::recover(inputs, candidate.clone(), RecoveryMode::FullReplay);
        let mut updated = match replayed {
            Ok((updated, _)) => updated,
            Err(err) => {
                let reason = format!("replaying the history on version {target} failed: {err}");
                return Err(self.fail_update(slot, reason));
            }
        };
        let committed = (|| {
            let index = updated.gate().append(OplogEntry::UpdateSucceeded {
                timestamp_ms: now_ms(),
                target_version: target,
                mode: UpdateMode::Automatic,
            })?;
            debug_assert_eq!(index, at);
            candidate.oplog_len = at;
            candidate.last_recovery = self.record.last_recovery.clone();
            updated.record = candidate;
            updated.commit_record(true)
        })();
        if let Err(err) = committed {
            return Err(self.fail_update(slot, format!("recording the update failed: {err}")));
        }
        updated.snapshot_after_update();
        Ok(updated)
    }

    /// Applies the pending update `slot` of this worker's history in snapshot-based mode.
    pub fn update_snapshot_based(
        mut self,
        inputs: InstanceInputs<'_>,
        slot: usize,
    ) -> Result<Worker, UpdateFailure> {
        let target = self.record.history.updates[slot].target_version;
        let from = self.record.component_version;
        let save = match self.interface.find_export(SAVE_EXPORT) {
            Ok(save) => save,
            Err(_) => {
                let reason = format!("version {from} does not export {SAVE_EXPORT}");
                return Err(self.fail_update(slot, reason));
            }
        };
        let load = match inputs.interface.find_export(LOAD_EXPORT) {
            Ok(load) => load,
            Err(_) => {
                let reason = format!("version {target} does not export {LOAD_EXPORT}");
                return Err(self.fail_update(slot, reason));
            }
        };

        // 1. The old version saves its state: an invocation like any other, recorded in its
        //    history (it may change state, and replay of the old version must reproduce it).
        let payload = match self.call_save(&save) {
            Ok(payload) => payload,
            Err(reason) => {
                // The instance stopped half-way through `save`: its memory cannot be trusted.
                // Its entries were held and are dropped; recovery rebuilds it from storage.
                let failure = self.fail_update(slot, reason);
                return Err(UpdateFailure {
                    reason: failure.reason,
                    worker: None,
                });
            }
        };

        // 2. A fresh instance of the new version loads it. Everything it records is held in
        //    memory until the update succeeds.
        let start = self.oplog_len() + 1;
        let mut candidate = self.record.clone();
        candidate.component_version = target;
        candidate.status = WorkerStatus::Idle;
        let mut gate = history_gate(
            &self.storage,
            &candidate,
            start - 1,
            inputs.echo_output,
            start - 1,
        );
        gate.set_holding(true);
        let started = gate.append(OplogEntry::SnapshotUpdateStarted {
            timestamp_ms: now_ms(),
            target_version: target,
            payload: payload.clone(),
        });
        if let Err(err) = started {
            return Err(self.fail_update(slot, err.to_string()));
        }
        let (args, env) = (candidate.args.clone(), candidate.env.clone());
        let loaded = Worker::instantiate(&inputs, candidate, gate, &args, &env, Start::Fresh)
            .map_err(|e| format!("starting version {target} failed: {e}"))
            .and_then(|mut updated| match updated.call_load(&load, &payload) {
                Ok(()) => Ok(updated),
                Err(reason) => Err(reason),
            });
        let mut updated = match loaded {
            Ok(updated) => updated,
            // The new instance and its held entries are dropped, never written.
            Err(reason) => return Err(self.fail_update(slot, reason)),
        };

        // 3. Commit: the held entries, `update-succeeded` and the record, in one transaction.
        let committed = (|| {
            let at = updated.gate().append(OplogEntry::UpdateSucceeded {
                timestamp_ms: now_ms(),
                target_version: target,
                mode: UpdateMode::SnapshotBased,
            })?;
            let update = &mut updated.record.history.updates[slot];
            update.outcome = UpdateOutcome::Succeeded;
            update.started_at = start;
            update.completed_at = at;
            updated.record.oplog_len = at;
            updated.record.last_recovery = self.record.last_recovery.clone();
            let history = updated.record.history.clone();
            updated.commit_record(true)?;
            updated.gate().set_holding(false);
            *updated.gate().history_mut() = history;
            Ok::<_, Error>(())
        })();
        if let Err(err) = committed {
            drop(updated);
            return Err(self.fail_update(slot, format!("recording the update failed: {err}")));
        }
        updated.snapshot_after_update();
        Ok(updated)
    }

    /// Calls `save` live with its entries held; the payload, or why it failed (the held
    /// entries are then discarded).
    fn call_save(&mut self, save: &crate::component::ExportedFunction) -> Result<Vec<u8>, String> {
        self.gate().set_holding(true);
        let outcome = (|| {
            self.gate().append(OplogEntry::ExportedFunctionInvoked {
                timestamp_ms: now_ms(),
                function: save.core_name.clone(),
                params: Vec::new(),
                idempotency_key: format!("update-save-{}", uuid::Uuid::new_v4()),
            })?;
            self.call_export(save, &[])
        })();
        let result = match outcome {
            Ok(Called::Ended(CallOutcome::Returned(Some(value)))) => {
                let bytes = list_of_u8(&value);
                match (to_wave(&value), bytes) {
                    (Ok(wave), Some(bytes)) => self
                        .gate()
                        .append(OplogEntry::ExportedFunctionCompleted {
                            timestamp_ms: now_ms(),
                            result: Some(wave),
                        })
                        .map(|_| bytes)
                        .map_err(|e| e.to_string()),
                    _ => Err(format!(
                        "{SAVE_EXPORT} returned something other than list<u8>"
                    )),
                }
            }
            Ok(Called::Ended(CallOutcome::Returned(None))) => {
                Err(format!("{SAVE_EXPORT} returned nothing"))
            }
            Ok(Called::Ended(CallOutcome::Trapped(message))) => {
                Err(format!("{SAVE_EXPORT} trapped: {message}"))
            }
            Ok(Called::Ended(CallOutcome::Exited(code))) => {
                Err(format!("{SAVE_EXPORT} exited with code {code}"))
            }
            Ok(Called::Unwound(why)) => Err(format!("{SAVE_EXPORT} cannot be run: {why}")),
            Err(err) => Err(format!("{SAVE_EXPORT} failed: {err}")),
        };
        match result {
            Ok(bytes) => {
                // Recorded and committed: the old version's history now includes the save.
                self.gate().set_holding(false);
                self.record.oplog_len = self.oplog_len();
                self.commit_record(false).map_err(|e| e.to_string())?;
                Ok(bytes)
            }
            Err(reason) => {
                self.gate().discard_pending();
                self.gate().set_holding(false);
                Err(reason)
            }
        }
    }

    /// Calls `load(payload)` on a fresh instance; `Ok` only if it returned `ok`.
    fn call_load(
        &mut self,
        load: &crate::component::ExportedFunction,
        payload: &[u8],
    ) -> Result<(), String> {
        let value = payload_value(load, payload)?;
        match self.call_export(load, &[value]) {
            Ok(Called::Ended(CallOutcome::Returned(Some(result)))) => {
                match result.unwrap_result() {
                    Ok(_) => Ok(()),
                    Err(message) => Err(format!(
                        "{LOAD_EXPORT} returned an error: {}",
                        message
                            .map(|m| m.unwrap_string().to_string())
                            .unwrap_or_default()
                    )),
                }
            }
            Ok(Called::Ended(CallOutcome::Returned(None))) => {
                Err(format!("{LOAD_EXPORT} returned nothing"))
            }
            Ok(Called::Ended(CallOutcome::Trapped(message))) => {
                Err(format!("{LOAD_EXPORT} trapped: {message}"))
            }
            Ok(Called::Ended(CallOutcome::Exited(code))) => {
                Err(format!("{LOAD_EXPORT} exited with code {code}"))
            }
            Ok(Called::Unwound(why)) => Err(format!("{LOAD_EXPORT} cannot be run: {why}")),
            Err(err) => Err(format!("{LOAD_EXPORT} failed: {err}")),
        }
    }

    /// Replays the `load` call at the start of a history that began with a snapshot-based
    /// update (`index` is its `snapshot-update-started` entry).
    pub(super) fn replay_load(&mut self, index: u64, payload: &[u8]) -> Result<()> {
        let worker = self.record.id.clone();
        let diverged = move |detail: String| Error::Divergence {
            worker,
            index,
            detail,
        };
        let load = self.interface.find_export(LOAD_EXPORT).map_err(|_| {
            diverged.clone()(format!(
                "version {} does not export {LOAD_EXPORT}, but history starts with a snapshot-based update",
                self.record.component_version
            ))
        })?;
        match self.call_load(&load, payload) {
            Ok(()) => Ok(()),
            Err(reason) => Err(self.gate().take_fatal().unwrap_or_else(|| {
                diverged(format!(
                    "the snapshot-based update loaded when it ran, but on replay {reason}"
                ))
            })),
        }
    }

    /// Records that update `slot` failed (oplog entry and record, durably); the worker stays
    /// on its version.
    pub fn fail_update(mut self, slot: usize, reason: String) -> UpdateFailure {
        tracing::warn!(worker = %self.record.id, %reason, "update failed");
        let (target_version, mode) = {
            let update = &self.record.history.updates[slot];
            (update.target_version, update.mode)
        };
        let recorded = (|| {
            let at = self.gate().append(OplogEntry::UpdateFailed {
                timestamp_ms: now_ms(),
                target_version,
                mode,
                reason: reason.clone(),
            })?;
            let update = &mut self.record.history.updates[slot];
            update.outcome = UpdateOutcome::Failed(reason.clone());
            update.started_at = at;
            update.completed_at = at;
            self.record.oplog_len = at;
            self.commit_record(true)
        })();
        if let Err(err) = recorded {
            tracing::error!(worker = %self.record.id, %err, "recording a failed update failed");
        }
        UpdateFailure {
            reason,
            worker: Some(Box::new(self)),
        }
    }

    /// A snapshot of the new version right away, so the next restart need not replay.
    fn snapshot_after_update(&mut self) {
        if self.interface.snapshot_blocker.is_some() {
            return;
        }
        if let Err(err) = self.snapshot() {
            tracing::warn!(worker = %self.record.id, %err, "snapshot after update failed");
        }
    }

    /// Takes the `update-worker` requests the last invocation made.
    pub fn take_update_requests(&mut self) -> Vec<crate::history::UpdateRequest> {
        std::mem::take(&mut self.env.as_mut(&mut self.store).update_requests)
    }
}

/// The bytes of a `list<u8>` value.
fn list_of_u8(value: &Value) -> Option<Vec<u8>> {
    use wasm_wave::wasm::WasmTypeKind;
    if value.kind() != WasmTypeKind::List {
        return None;
    }
    value
        .unwrap_list()
        .map(|item| (item.kind() == WasmTypeKind::U8).then(|| item.unwrap_u8()))
        .collect()
}

/// `payload` as the `list<u8>` parameter of `load`.
fn payload_value(
    load: &crate::component::ExportedFunction,
    payload: &[u8],
) -> Result<Value, String> {
    let ty = load
        .abi
        .param_types()
        .first()
        .ok_or_else(|| format!("{LOAD_EXPORT} takes no parameter"))?;
    Value::make_list(ty, payload.iter().map(|b| Value::make_u8(*b)))
        .map_err(|e| format!("{LOAD_EXPORT} does not take list<u8>: {e}"))
}
