//! What recovery does first when the worker stopped in the middle of an invocation: look at the
//! tail of its history for an atomic region or a remote side effect that was left open.
//!
//! - An atomic region begun and not ended (`mark-begin-operation` without its
//!   `mark-end-operation`): the region is discarded (a `discarded` entry deletes it from its
//!   begin to the end of the oplog, as a jump does) so that recovery replays the invocation up
//!   to the region and runs the region again, live.
//! - A remote side effect begun with idempotence off and not ended: nobody knows whether it
//!   happened, and running it again could make it happen twice, so the worker fails (an
//!   `error` entry; the invocation's entries are discarded so that replay ends at the failure).
//!   This wins over an enclosing atomic region: at-most-once is the stronger promise.
//!
//! Both are written with the record in one durable transaction before recovery starts, so a
//! process killed here does the same again at the next start.

use std::sync::Arc;

use super::{history_gate, WorkerRecord, WorkerStatus};
use crate::error::Result;
use crate::history::Region;
use crate::ids::OplogIndex;
use crate::oplog::store::{self, BlockEncoder};
use crate::oplog::{now_ms, DiscardReason, OplogEntry};
use crate::storage::Storage;
use crate::worker_records::WorkerStore;

/// The shape of the effective history's tail.
#[derive(Default)]
struct Tail {
    /// The `exported-function-invoked` entry of an invocation with no end in the oplog.
    in_flight: Option<OplogIndex>,
    /// Its atomic regions begun and not ended, in order.
    open_regions: Vec<OplogIndex>,
    /// Its remote side effect begun and not ended (idempotence off).
    open_write: Option<OplogIndex>,
}

/// Reads the effective history from `from` to `last`.
fn scan(
    storage: &Arc<Storage>,
    record: &WorkerRecord,
    from: OplogIndex,
    last: OplogIndex,
) -> Result<Tail> {
    let mut gate = history_gate(storage, record, last, false, from - 1);
    let mut tail = Tail::default();
    while let Some((index, entry)) = gate.next_replayed()? {
        match entry {
            OplogEntry::ExportedFunctionInvoked { .. } => {
                tail = Tail {
                    in_flight: Some(index),
                    ..Tail::default()
                }
            }
            OplogEntry::ExportedFunctionCompleted { .. }
            | OplogEntry::Error { .. }
            | OplogEntry::Exited { .. } => tail = Tail::default(),
            OplogEntry::BeginAtomicRegion => tail.open_regions.push(index),
            OplogEntry::EndAtomicRegion { begin } => {
                if let Some(at) = tail.open_regions.iter().position(|&b| b == begin) {
                    tail.open_regions.truncate(at);
                }
            }
            OplogEntry::BeginRemoteWrite => tail.open_write = Some(index),
            OplogEntry::EndRemoteWrite { .. } => tail.open_write = None,
            _ => {}
        }
    }
    Ok(tail)
}

/// Settles an atomic region or remote side effect the worker's last process left open (see
/// the module docs), updating `record` and the oplog durably. Does nothing when the history
/// does not end inside an invocation.
pub fn settle_interrupted(storage: &Arc<Storage>, record: &mut WorkerRecord) -> Result<()> {
    let last = store::last_index(storage, &record.uid)?;
    let first = record.history.replay_start();
    // Entries after the record's oplog length belong to the invocation in flight (the record
    // is written at every invocation end), so the scan is short; from `first` if in doubt.
    let from = record.oplog_len.clamp(first, last.max(first));
    let mut tail = scan(storage, record, from, last)?;
    if tail.in_flight.is_none() && (!tail.open_regions.is_empty() || tail.open_write.is_some()) {
        tail = scan(storage, record, first, last)?;
    }
    let Some(invoked) = tail.in_flight else {
        return Ok(());
    };
    let mut entries = Vec::new();
    let region;
    if let Some(write) = tail.open_write {
        region = Region {
            start: invoked,
            end: last,
        };
        let message = format!(
            "the worker stopped during a remote side effect (oplog index {write}) with \
             idempotence mode off: it may or may not have happened, and it must not happen twice"
        );
        entries.push(OplogEntry::Discarded {
            timestamp_ms: now_ms(),
            start: region.start,
            end: region.end,
            reason: DiscardReason::UnfinishedRemoteWrite,
        });
        entries.push(OplogEntry::Error {
            timestamp_ms: now_ms(),
            message: message.clone(),
        });
        record.status = WorkerStatus::Failed;
        record.last_error = Some(message);
    } else if let Some(&begin) = tail.open_regions.first() {
        region = Region {
            start: begin,
            end: last,
        };
        entries.push(OplogEntry::Discarded {
            timestamp_ms: now_ms(),
            start: region.start,
            end: region.end,
            reason: DiscardReason::OpenAtomicRegion,
        });
    } else {
        return Ok(());
    }
    record.history.delete(region);
    record.component_version = record.history.version();
    record.oplog_len = last + entries.len() as u64;
    let block = BlockEncoder::default().encode(&entries);
    let encoded = WorkerStore::new(Arc::clone(storage)).encode(record);
    let uid = record.uid;
    storage.write(|txn| {
        store::append_block(txn, storage, &uid, last + 1, &block, entries.len())?;
        encoded.put(txn)
    })?;
    storage.sync()?;
    tracing::info!(worker = %record.id, %region, "discarded what the last process left open");
    Ok(())
}
