//! Where a fork starts: a worker's history as it was when oplog index N was its last entry
//! (`Executor::fork_worker` copies the storage; this decides what the copy means).
//!
//! A fork at N is refused when N is not a point the worker was ever idle at:
//! - N is 0 or past the end of the oplog;
//! - N lies in a region a jump, revert, retry or interrupted atomic region deleted (a deletion
//!   recorded after N would contain N: every deleted region ends right before the entry that
//!   deletes it, so refusing these leaves every later deletion wholly after N);
//! - N lies inside a snapshot-based update (its entries are written together);
//! - N lies inside an invocation, begun and not ended by N (suspended, sleeping, retrying,
//!   interrupted or simply in the middle): recovery would finish it live, in the fork, as an
//!   invocation nobody asked the fork for.
//!
//! Otherwise the fork's history is the source's as of N: the deleted regions recorded by then
//! (all of them end before N), the updates completed by then (pending ones are the source's
//! business), and so the component version at N; its status is what replaying it establishes
//! (failed after an `error` entry, exited after `exited`, else idle).

use std::sync::Arc;

use super::history_gate;
use crate::error::{Error, Result};
use crate::history::{DeletedRegions, History, UpdateOutcome};
use crate::ids::{ComponentVersion, OplogIndex};
use crate::oplog::OplogEntry;
use crate::storage::Storage;
use crate::worker_records::{WorkerRecord, WorkerStatus};

/// What a fork at a valid oplog index starts with.
#[derive(Clone, Debug)]
pub struct ForkPoint {
    /// The oplog index forked at.
    pub at: OplogIndex,
    /// The source's history as of `at`.
    pub history: History,
    /// The component version the history runs on at `at`.
    pub component_version: ComponentVersion,
    /// The status replaying the history establishes.
    pub status: WorkerStatus,
    pub last_error: Option<String>,
}

/// Decides whether `source` (its stored record; its oplog has `last` entries and snapshots at
/// `snapshots`) can be forked at `at`, and what the fork starts from.
pub fn fork_point(
    storage: &Arc<Storage>,
    source: &WorkerRecord,
    at: OplogIndex,
    last: OplogIndex,
    snapshots: &[OplogIndex],
) -> Result<ForkPoint> {
    let invalid = |reason: String| Error::InvalidFork {
        worker: source.id.clone(),
        reason,
    };
    if at == 0 {
        return Err(invalid(
            "oplog index 0 does not exist; the first entry is 1".into(),
        ));
    }
    if at > last {
        return Err(invalid(format!(
            "oplog index {at} is past the end of its oplog, which has {last} entries"
        )));
    }
    if let Some(region) = source.history.deleted.containing(at) {
        return Err(invalid(format!(
            "oplog index {at} is in the region {region} that a jump, revert or retry deleted \
             from its history; fork at an index outside it"
        )));
    }
    if let Some(update) = source.history.updates.iter().find(|u| {
        u.outcome == UpdateOutcome::Succeeded && u.started_at <= at && at < u.completed_at
    }) {
        return Err(invalid(format!(
            "oplog index {at} is inside the update to version {} ({}..={}); fork at {} or {}",
            update.target_version,
            update.started_at,
            update.completed_at,
            update.started_at - 1,
            update.completed_at
        )));
    }
    let mut deleted = DeletedRegions::default();
    for region in source.history.deleted.regions() {
        if region.end < at {
            deleted.add(*region);
        }
    }
    let history = History {
        initial_version: source.history.initial_version,
        deleted,
        updates: source
            .history
            .updates
            .iter()
            .filter(|u| u.completed_at != 0 && u.completed_at <= at)
            .cloned()
            .collect(),
    };
    // Read from the newest point known to be idle: a snapshot (taken only between
    // invocations) in the fork's effective history, else where that history starts.
    let start = history.replay_start();
    let idle = snapshots
        .iter()
        .copied()
        .filter(|&i| i <= at && i >= start && !history.deleted.contains(i))
        .max()
        .unwrap_or(start - 1);
    let view = WorkerRecord {
        history: history.clone(),
        ..source.clone()
    };
    let mut gate = history_gate(storage, &view, at, false, idle);
    let mut open = None;
    let mut status = WorkerStatus::Idle;
    let mut last_error = None;
    while let Some((index, entry)) = gate.next_replayed()? {
        match entry {
            OplogEntry::ExportedFunctionInvoked { .. } => open = Some(index),
            OplogEntry::ExportedFunctionCompleted { .. } => open = None,
            OplogEntry::Error { message, .. } => {
                open = None;
                status = WorkerStatus::Failed;
                last_error = Some(message);
            }
            OplogEntry::Exited { .. } => {
                open = None;
                status = WorkerStatus::Exited;
            }
            _ => {}
        }
    }
    if let Some(begun) = open {
        return Err(invalid(format!(
            "at oplog index {at} the invocation begun at {begun} had not ended (it was running, \
             suspended, sleeping, retrying or interrupted there); fork at {} or at an index \
             where no invocation is open",
            begun - 1
        )));
    }
    Ok(ForkPoint {
        at,
        component_version: history.version(),
        history,
        status,
        last_error,
    })
}
