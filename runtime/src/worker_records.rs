//! What the data directory keeps about each worker besides its oplog: the worker record, the
//! results of completed invocations by idempotency key, and [`WorkerStore`], the one place that
//! encodes, reads and writes records (table `workers`).
//!
//! Below the worker, executor and host modules that use them: this module depends only on
//! storage, ids and history.

use std::sync::Arc;

use lmdb::{Cursor, RwTransaction, Transaction, WriteFlags};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::{Error, Result};
use crate::history::History;
use crate::ids::{ComponentId, ComponentVersion, OplogIndex, WorkerId};
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

/// Copies the stored invocation results of worker `from` that `keep` accepts to worker `to`,
/// under the same idempotency keys (inside the transaction that creates the fork `to`).
/// Returns how many were copied; a result that does not decode is an error.
pub fn copy_results(
    txn: &mut RwTransaction<'_>,
    storage: &Storage,
    from: &Uuid,
    to: &Uuid,
    keep: impl Fn(&InvocationResult) -> bool,
) -> Result<usize> {
    /// Rows read per batch (a cursor cannot stay open while the transaction writes).
    const BATCH_ROWS: usize = 4096;
    let db = storage.tables().invocations;
    let mut copied = 0;
    let mut after: Option<Vec<u8>> = None;
    loop {
        let batch: Vec<(Vec<u8>, Vec<u8>)> = {
            let mut cursor = txn.open_ro_cursor(db)?;
            let start = after.clone().unwrap_or_else(|| from.as_bytes().to_vec());
            let mut rows = Vec::new();
            for item in cursor.iter_from(&start) {
                let (key, value) = item?;
                if !key.starts_with(from.as_bytes()) || rows.len() == BATCH_ROWS {
                    break;
                }
                if after.as_deref() == Some(key) {
                    continue;
                }
                rows.push((key.to_vec(), value.to_vec()));
            }
            rows
        };
        let Some((last_key, _)) = batch.last() else {
            return Ok(copied);
        };
        after = Some(last_key.clone());
        for (key, value) in &batch {
            let result: InvocationResult = codec::decode(value, "invocation result")?;
            if keep(&result) {
                let mut copy = to.as_bytes().to_vec();
                copy.extend_from_slice(&key[16..]);
                txn.put(db, &copy, value, WriteFlags::NO_OVERWRITE)?;
                copied += 1;
            }
        }
    }
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

/// A worker record encoded for a write: what a commit closure (`'static`, `Send`) puts.
#[derive(Clone)]
pub struct EncodedRecord {
    id: WorkerId,
    key: Vec<u8>,
    bytes: Vec<u8>,
    db: lmdb::Database,
}

impl EncodedRecord {
    /// Writes the record over the stored one.
    pub fn put(&self, txn: &mut RwTransaction<'_>) -> Result<()> {
        txn.put(self.db, &self.key, &self.bytes, WriteFlags::empty())?;
        Ok(())
    }

    /// Writes the record of a worker that must not exist yet.
    pub fn put_new(&self, txn: &mut RwTransaction<'_>) -> Result<()> {
        match txn.put(self.db, &self.key, &self.bytes, WriteFlags::NO_OVERWRITE) {
            Err(lmdb::Error::KeyExist) => Err(Error::WorkerExists(self.id.clone())),
            other => Ok(other?),
        }
    }
}

/// Worker records in storage.
#[derive(Clone)]
pub struct WorkerStore {
    storage: Arc<Storage>,
}

impl WorkerStore {
    pub fn new(storage: Arc<Storage>) -> Self {
        WorkerStore { storage }
    }

    /// `record`, encoded for a write.
    pub fn encode(&self, record: &WorkerRecord) -> EncodedRecord {
        EncodedRecord {
            id: record.id.clone(),
            key: record.id.storage_key(),
            bytes: codec::encode(record),
            db: self.storage.tables().workers,
        }
    }

    /// The stored record of a worker, if it exists.
    pub fn get(&self, id: &WorkerId) -> Result<Option<WorkerRecord>> {
        match self
            .storage
            .get(self.storage.tables().workers, &id.storage_key())?
        {
            Some(bytes) => Ok(Some(codec::decode(
                &bytes,
                &format!("record of worker {id}"),
            )?)),
            None => Ok(None),
        }
    }

    /// The stored record of a worker that must exist.
    pub fn require(&self, id: &WorkerId) -> Result<WorkerRecord> {
        self.get(id)?
            .ok_or_else(|| Error::UnknownWorker(id.clone()))
    }

    /// Every stored record of a component, by name.
    pub fn list(&self, component: &ComponentId) -> Result<Vec<WorkerRecord>> {
        let txn = self.storage.env().begin_ro_txn()?;
        let mut cursor = txn.open_ro_cursor(self.storage.tables().workers)?;
        let mut out = Vec::new();
        for item in cursor.iter_from(component.0.as_bytes()) {
            let (key, value) = item?;
            if key.len() < 16 || &key[..16] != component.0.as_bytes() {
                break;
            }
            out.push(codec::decode(value, "worker record")?);
        }
        Ok(out)
    }

    /// Writes a record without making it durable (the next durable commit carries it).
    pub fn save(&self, record: &WorkerRecord) -> Result<()> {
        let encoded = self.encode(record);
        self.storage.write(|txn| encoded.put(txn))
    }

    /// Writes a record durably (through group commit).
    pub fn put_durable(&self, record: &WorkerRecord) -> Result<()> {
        let encoded = self.encode(record);
        self.storage
            .commit(Box::new(move |txn| encoded.put(txn)), true)
    }
}
