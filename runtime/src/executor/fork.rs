//! Forks: a new worker whose history is another's up to an oplog index, and whose state comes
//! from the nearest snapshot, sharing the source's stored pages. What each table gives the fork
//! (see docs/architecture.md, Forks):
//!
//! - `workers`: a record of its own (new uid, the source's arguments and environment, the
//!   history and component version as of the fork point, the status replay establishes);
//! - `oplog`: entries `1..=N`, in blocks of its own (copied as they are; the last one cut at N);
//! - `snapshots`: copies of the source's manifests at or before N in the fork's history;
//!   `snapshot_pages`: nothing: the fork joins the source's page space (`page_spaces`);
//! - `invocations`: the results of invocations that completed by N, so a repeated key answers
//!   in the fork as it did in the source;
//! - `forks`: where its history came from, so that replay derives identities as the source did;
//! - `promises`: nothing. Promise ids in the copied history name the source (its memory and
//!   its oplog say so), and those promises stay the source's: the fork awaiting one awaits the
//!   source's (completed once, for both), and fails on it if the source is deleted;
//! - `suspensions`, `sleeps`: nothing (a fork point is never inside an invocation);
//! - `queue`: nothing: invocations queued for the source are the source's;
//! - memory images: nothing (a cache; the fork's first restore copies from the pages).

use std::time::Instant;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::Executor;
use crate::error::{Error, Result};
use crate::forks::Origin;
use crate::ids::{validate_worker_name, OplogIndex, WorkerId};
use crate::oplog::{now_ms, store};
use crate::worker_records::WorkerRecord;

/// What [`Executor::fork_worker`] made.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Fork {
    /// The worker forked.
    pub source: WorkerId,
    /// The last entry of its oplog the fork copied.
    pub oplog_index: OplogIndex,
    /// The new worker's record.
    pub worker: WorkerRecord,
    /// Oplog blocks written for the fork.
    pub oplog_blocks: usize,
    /// The snapshots the fork got (manifests copied; their pages are shared, not copied).
    pub snapshots: Vec<OplogIndex>,
    /// Stored invocation results copied (by idempotency key).
    pub invocation_results: usize,
    /// Wall time of the fork, its durable commit included.
    pub duration_us: u64,
}

impl Executor {
    /// Forks `source` into a new worker `target_name` of the same component whose history is
    /// the source's up to oplog index `at` (default: all it has committed), made in one
    /// durable transaction. The fork is not started: its first use restores the nearest
    /// snapshot (shared with the source) and replays the rest, like any restart. Refused for an
    /// unknown source, a name that is taken or invalid, and an index that is 0, past the end,
    /// deleted from the source's history, or inside an update or an invocation (see
    /// `crate::worker::fork_point`).
    pub fn fork_worker(
        &self,
        source: &WorkerId,
        target_name: &str,
        at: Option<OplogIndex>,
    ) -> Result<Fork> {
        let started = Instant::now();
        validate_worker_name(target_name).map_err(Error::InvalidWorkerName)?;
        let target = WorkerId {
            component_id: source.component_id,
            worker_name: target_name.to_string(),
        };
        // The source's turn: it is idle, and everything it did is committed, while it is read.
        // The target's is not taken (two turns could wait on each other); its record is written
        // only if the name is free when the transaction commits.
        let turn = self.turn(source);
        let record = self.stored_record(source)?;
        if target == *source
            || self.slots.record(&target).is_some()
            || self.workers.get(&target)?.is_some()
        {
            return Err(Error::WorkerExists(target));
        }
        let last = store::last_index(&self.storage, &record.uid)?;
        let at = at.unwrap_or(last);
        let snapshot_indexes = crate::snapshots::indexes(&self.storage, &record.uid)?;
        let point = crate::worker::fork_point(&self.storage, &record, at, last, &snapshot_indexes)?;
        let now = now_ms();
        let source_origin = crate::forks::get(&self.storage, &record.uid)?;
        let origin = Origin::new(source, source_origin.as_ref(), at, now);
        let fork = WorkerRecord {
            id: target,
            uid: Uuid::new_v4(),
            component_version: point.component_version,
            args: record.args.clone(),
            env: record.env.clone(),
            created_at_ms: now,
            status: point.status,
            retry_count: 0,
            last_error: point.last_error.clone(),
            oplog_len: at,
            last_recovery: None,
            history: point.history.clone(),
        };
        let encoded = self.workers.encode(&fork);
        let storage = &self.storage;
        let history = &point.history;
        let start = history.replay_start();
        let (oplog_blocks, snapshots, invocation_results) = storage.write(|txn| {
            encoded.put_new(txn)?;
            let blocks = store::copy_prefix(txn, storage, &record.uid, &fork.uid, at)?;
            let snapshots = crate::snapshots::share_with_fork(
                txn,
                storage,
                &record.uid,
                &fork.uid,
                |index, manifest| {
                    index <= at
                        && index >= start
                        && !history.deleted.contains(index)
                        && manifest.component_version == fork.component_version
                },
            )?;
            let results = crate::worker_records::copy_results(
                txn,
                storage,
                &record.uid,
                &fork.uid,
                |result| {
                    result.completed_at <= at && !history.deleted.contains(result.completed_at)
                },
            )?;
            crate::forks::put(txn, storage, &fork.uid, &origin)?;
            Ok((blocks, snapshots, results))
        })?;
        self.storage.sync()?;
        drop(turn);
        tracing::info!(
            source = %source, fork = %fork.id, at, ?snapshots, "forked"
        );
        Ok(Fork {
            source: source.clone(),
            oplog_index: at,
            worker: fork,
            oplog_blocks,
            snapshots,
            invocation_results,
            duration_us: started.elapsed().as_micros() as u64,
        })
    }
}
