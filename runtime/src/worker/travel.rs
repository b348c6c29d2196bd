//! Going back in history: `set-oplog-index` from inside the guest, and reverts from outside.
//!
//! Both append an entry that deletes a region (`jump` or `revert`), record the region in the
//! worker record in the same transaction, and leave the instance for recovery to rebuild: the
//! executor drops it and recovers the worker from the newest snapshot outside every deleted
//! region, replaying the rest (which may end inside an invocation; it then finishes live).

use std::sync::Arc;

use super::{history_gate, Worker, WorkerRecord, WorkerStatus};
use crate::error::{Error, Result};
use crate::history::Region;
use crate::ids::OplogIndex;
use crate::oplog::store::{self, BlockEncoder};
use crate::oplog::{now_ms, OplogEntry};
use crate::outcome::Halt;
use crate::storage::Storage;
use crate::worker_records::WorkerStore;

/// Where a revert goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RevertTarget {
    /// Keep entries up to and including this index.
    OplogIndex(OplogIndex),
    /// Undo the last N invocations (from their `exported-function-invoked` entries on).
    LastInvocations(u64),
}

impl Worker {
    /// The guest called `set-oplog-index(target)` (already validated): records the jump that
    /// deletes everything after `target` up to the jump itself, durably, and returns the halt
    /// that tells the executor to recover the worker.
    pub(super) fn record_jump(&mut self, target: OplogIndex) -> Halt {
        match self.try_record_jump(target) {
            Ok(()) => Halt::Jumped { target },
            Err(err) => Halt::Failed(err),
        }
    }

    fn try_record_jump(&mut self, target: OplogIndex) -> Result<()> {
        let at = self.oplog_len() + 1;
        let region = Region {
            start: target + 1,
            end: at - 1,
        };
        self.gate().append(OplogEntry::Jump {
            timestamp_ms: now_ms(),
            start: region.start,
            end: region.end,
        })?;
        apply_deletion(&mut self.record, region, at);
        tracing::info!(worker = %self.record.id, target, %region, "set-oplog-index: jumping back");
        self.commit_record(true)
    }
}

/// Updates a record for a deleted region; `at` is the index of the entry recording it.
fn apply_deletion(record: &mut WorkerRecord, region: Region, at: OplogIndex) {
    record.history.delete(region);
    record.component_version = record.history.version();
    // Recovery recomputes failure from what is left (an `error` entry outside the region).
    record.status = WorkerStatus::Idle;
    record.last_error = None;
    record.oplog_len = at;
}

/// Reverts a worker that is not in memory: appends a `revert` entry deleting everything after
/// the target and updates the record, in one durable transaction. Returns the target index.
pub fn revert(
    storage: &Arc<Storage>,
    record: &mut WorkerRecord,
    target: RevertTarget,
) -> Result<OplogIndex> {
    let last = store::last_index(storage, &record.uid)?;
    let invalid = |reason: String| Error::InvalidRevert {
        worker: record.id.clone(),
        reason,
    };
    let target = match target {
        RevertTarget::OplogIndex(index) => index,
        RevertTarget::LastInvocations(0) => {
            return Err(invalid(
                "the number of invocations to undo must be at least 1".into(),
            ))
        }
        RevertTarget::LastInvocations(count) => {
            let starts = invocation_starts(storage, record, last)?;
            if (starts.len() as u64) < count {
                return Err(invalid(format!(
                    "it has {} invocation{} in its effective history, not {count}",
                    starts.len(),
                    if starts.len() == 1 { "" } else { "s" }
                )));
            }
            starts[starts.len() - count as usize] - 1
        }
    };
    if let Some(reason) = record.history.jump_target_error(target, last + 1) {
        return Err(invalid(reason));
    }
    if target == last {
        return Err(invalid(format!(
            "{target} is its last oplog index: there is nothing after it to undo"
        )));
    }
    let at = last + 1;
    let region = Region {
        start: target + 1,
        end: last,
    };
    let entry = OplogEntry::Revert {
        timestamp_ms: now_ms(),
        start: region.start,
        end: region.end,
    };
    apply_deletion(record, region, at);
    let block = BlockEncoder::default().encode(std::slice::from_ref(&entry));
    let encoded = WorkerStore::new(Arc::clone(storage)).encode(record);
    let uid = record.uid;
    storage.write(|txn| {
        store::append_block(txn, storage, &uid, at, &block, 1)?;
        encoded.put(txn)
    })?;
    storage.sync()?;
    tracing::info!(worker = %record.id, target, %region, "reverted");
    Ok(target)
}

/// Indexes of the `exported-function-invoked` entries of the effective history, in order.
fn invocation_starts(
    storage: &Arc<Storage>,
    record: &WorkerRecord,
    last: OplogIndex,
) -> Result<Vec<OplogIndex>> {
    let start = record.history.replay_start();
    let mut gate = history_gate(storage, record, last, false, start - 1);
    let mut starts = Vec::new();
    while let Some((index, entry)) = gate.next_replayed()? {
        if let OplogEntry::ExportedFunctionInvoked { .. } = entry {
            starts.push(index);
        }
    }
    Ok(starts)
}
