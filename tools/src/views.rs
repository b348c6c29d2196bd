//! What `golemw` shows of a worker, computed in one place for the command line and the HTTP API
//! of `golemw serve`.

use golemw_runtime::oplog::store::BlockRead;
use golemw_runtime::oplog::OplogEntry;
use golemw_runtime::promises::Suspension;
use golemw_runtime::{Executor, RecoveryReport, Result, WorkerId, WorkerRecord};

/// A worker's record and what is known of it beyond the record.
pub struct WorkerDetails {
    pub id: WorkerId,
    pub record: WorkerRecord,
    pub oplog_len: u64,
    pub latest_snapshot: Option<u64>,
    /// Why snapshots are off for this worker's component, if they are.
    pub snapshot_blocker: Option<String>,
    pub suspension: Option<Suspension>,
    /// The sleep the worker is suspended in, if it is (a server's durable sleep).
    pub sleep: Option<golemw_runtime::sleeps::Sleep>,
    /// Invocations queued for the worker, not yet run.
    pub queued: usize,
    /// The memory image's size on disk (allocated: zero pages are holes), if it has one.
    pub image_bytes: Option<u64>,
    /// Where its history came from, if it is a fork.
    pub origin: Option<golemw_runtime::forks::Origin>,
}

impl WorkerDetails {
    pub fn read(executor: &Executor, id: &WorkerId) -> Result<Self> {
        let record = executor.worker_record(id)?;
        let oplog_len = executor.oplog_len(id)?;
        let latest_snapshot = golemw_runtime::snapshots::indexes(executor.storage(), &record.uid)?
            .last()
            .copied();
        let snapshot_blocker = executor.snapshot_blocker(id)?;
        let suspension = executor.suspension(id)?;
        let sleep = golemw_runtime::sleeps::get(executor.storage(), &record.uid)?;
        let queued = golemw_runtime::queue::list(executor.storage(), &record.uid)?.len();
        let image_bytes = std::fs::metadata(golemw_runtime::snapshots::image_path(
            executor.storage(),
            &record.uid,
        ))
        .ok()
        .map(|meta| std::os::unix::fs::MetadataExt::blocks(&meta) * 512);
        let origin = golemw_runtime::forks::get(executor.storage(), &record.uid)?;
        Ok(WorkerDetails {
            id: id.clone(),
            record,
            oplog_len,
            latest_snapshot,
            snapshot_blocker,
            suspension,
            sleep,
            queued,
            image_bytes,
            origin,
        })
    }

    /// The record's fields plus the rest, as `worker get --json` prints them.
    pub fn to_json(&self) -> serde_json::Value {
        let mut value =
            serde_json::to_value(&self.record).expect("JSON serialisation of our own types");
        value["awaiting"] =
            serde_json::to_value(&self.suspension).expect("JSON serialisation of our own types");
        value["sleeping_until_ms"] = self.sleep.as_ref().map(|s| s.until_ms).into();
        value["sleep"] =
            serde_json::to_value(&self.sleep).expect("JSON serialisation of our own types");
        value["queued_invocations"] = self.queued.into();
        value["oplog_len"] = self.oplog_len.into();
        value["uri"] = self.id.uri().into();
        value["latest_snapshot_index"] = self.latest_snapshot.into();
        value["snapshots_disabled"] = self.snapshot_blocker.clone().into();
        value["memory_image_bytes"] = self.image_bytes.into();
        value["forked_from"] =
            serde_json::to_value(&self.origin).expect("JSON serialisation of our own types");
        value
    }
}

/// One row of a worker's oplog as shown: an entry, or a block that could not be decoded.
pub enum OplogRow {
    Entry {
        index: u64,
        /// Deleted by a jump, revert, retry or interrupted region (kept visible, marked).
        deleted: bool,
        entry: OplogEntry,
    },
    Corrupt {
        first: u64,
        last: u64,
        detail: String,
    },
}

impl OplogRow {
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            OplogRow::Entry {
                index,
                deleted,
                entry,
            } => serde_json::json!({
                "index": index,
                "kind": entry.kind(),
                "deleted": deleted,
                "entry": entry,
            }),
            OplogRow::Corrupt {
                first,
                last,
                detail,
            } => serde_json::json!({ "first": first, "last": last, "corrupt": detail }),
        }
    }
}

/// Up to `count` rows of a worker's oplog from index `from` (the first entry is 1).
pub fn oplog_rows(
    executor: &Executor,
    id: &WorkerId,
    from: u64,
    count: usize,
) -> Result<Vec<OplogRow>> {
    let history = executor.worker_record(id)?.history;
    let mut rows = Vec::new();
    let mut shown = 0usize;
    for block in executor.oplog(id, from, count)? {
        match block {
            BlockRead::Entries(entries) => {
                for (index, entry) in entries.into_iter().filter(|(i, _)| *i >= from) {
                    if shown == count {
                        return Ok(rows);
                    }
                    shown += 1;
                    rows.push(OplogRow::Entry {
                        index,
                        deleted: history.deleted.contains(index),
                        entry,
                    });
                }
            }
            BlockRead::Corrupt {
                first,
                last,
                detail,
            } => rows.push(OplogRow::Corrupt {
                first,
                last,
                detail,
            }),
        }
    }
    Ok(rows)
}

/// A worker after a revert, as `worker revert --json` prints it: the region deleted, where the
/// worker is now and how it was recovered.
pub fn reverted(
    executor: &Executor,
    id: &WorkerId,
    recovery: &RecoveryReport,
) -> Result<serde_json::Value> {
    let record = executor.worker_record(id)?;
    Ok(serde_json::json!({
        "worker": id.to_string(),
        "deleted": record.history.deleted.regions().last(),
        "status": record.status.as_str(),
        "component_version": record.component_version,
        "recovery": recovery,
    }))
}

impl WorkerDetails {
    /// Reads back what [`WorkerDetails::to_json`] wrote (the CLI through a server).
    pub fn from_json(value: &serde_json::Value) -> serde_json::Result<Self> {
        let record: WorkerRecord = serde_json::from_value(value.clone())?;
        Ok(WorkerDetails {
            id: record.id.clone(),
            record,
            oplog_len: value["oplog_len"].as_u64().unwrap_or(0),
            latest_snapshot: value["latest_snapshot_index"].as_u64(),
            snapshot_blocker: value["snapshots_disabled"].as_str().map(str::to_string),
            suspension: serde_json::from_value(value["awaiting"].clone())?,
            sleep: serde_json::from_value(value["sleep"].clone())?,
            queued: value["queued_invocations"].as_u64().unwrap_or(0) as usize,
            image_bytes: value["memory_image_bytes"].as_u64(),
            origin: serde_json::from_value(value["forked_from"].clone())?,
        })
    }
}

impl OplogRow {
    /// Reads back what [`OplogRow::to_json`] wrote (the CLI through a server).
    pub fn from_json(value: &serde_json::Value) -> serde_json::Result<Self> {
        if let Some(detail) = value["corrupt"].as_str() {
            return Ok(OplogRow::Corrupt {
                first: value["first"].as_u64().unwrap_or(0),
                last: value["last"].as_u64().unwrap_or(0),
                detail: detail.to_string(),
            });
        }
        Ok(OplogRow::Entry {
            index: value["index"].as_u64().unwrap_or(0),
            deleted: value["deleted"].as_bool().unwrap_or(false),
            entry: serde_json::from_value(value["entry"].clone())?,
        })
    }
}

/// A worker's snapshots as `snapshot list --json` prints them (and `GET .../snapshots`
/// answers): `{"snapshots": [row...], "stored_page_bytes": N}`, oldest first; a snapshot that
/// cannot be read has `error` instead of its sizes.
pub fn snapshot_list(executor: &Executor, id: &WorkerId) -> Result<serde_json::Value> {
    let uid = executor.worker_record(id)?.uid;
    let list = golemw_runtime::snapshots::list(executor.storage(), &uid)?;
    let stored_page_bytes = golemw_runtime::snapshots::stored_page_bytes(executor.storage(), &uid)?;
    let now = golemw_runtime::oplog::now_ms();
    let rows: Vec<serde_json::Value> = list
        .iter()
        .map(|s| match &s.manifest {
            Ok(m) => serde_json::json!({
                "index": s.index,
                "component_version": m.component_version,
                "memory_bytes": m.memory_bytes,
                "pages_total": m.stats.pages_total,
                "pages_stored": m.stats.pages_stored,
                "pages_new": m.stats.pages_new,
                "bytes_new": m.stats.bytes_new,
                "manifest_bytes": s.manifest_bytes,
                "capture_us": m.stats.capture_us,
                "age_s": now.saturating_sub(m.created_at_ms) / 1000,
            }),
            Err(e) => serde_json::json!({ "index": s.index, "error": e.to_string() }),
        })
        .collect();
    Ok(serde_json::json!({ "snapshots": rows, "stored_page_bytes": stored_page_bytes }))
}
