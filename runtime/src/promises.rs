//! Promises (`golem:api/host`'s `create-promise` … `delete-promise`) and the suspensions of
//! workers awaiting them.
//!
//! A promise is identified by its owner worker and the oplog index of the `create-promise` entry
//! that made it. Its state lives in the `promises` table, keyed by the owner's *uid* (so a
//! deleted and re-created worker never sees the promises of its predecessor):
//!
//! ```text
//! promises:    owner uid (16) ++ oplog index (8, BE) -> PromiseRecord (pending | completed | deleted)
//! suspensions: awaiting worker uid (16)              -> Suspension (which promise, which invocation)
//! ```
//!
//! The store is only read and written live: the guest sees a promise's payload through the
//! `await-promise` oplog entry, so replay never needs the store. A worker is `suspended` while it
//! has a row in `suspensions`; see `docs/architecture.md` (Promises and suspension).

use lmdb::{Cursor, RwTransaction, Transaction, WriteFlags};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::{Error, Result};
pub use crate::ids::PromiseId;
use crate::ids::{OplogIndex, WorkerId};
use crate::oplog::now_ms;
use crate::storage::{codec, Storage};
use crate::worker_records::WorkerRecord;

/// The largest payload a promise can be completed with. It is recorded in the oplog of every
/// worker that awaits it (one entry, one block): 16 MiB keeps a block and its zstd buffers well
/// inside memory while allowing any sensible message.
pub const PROMISE_PAYLOAD_BYTES_MAX: usize = 16 << 20;

/// How many suspended workers one pass of the executor resumes at most, so that workers that
/// keep completing each other's promises cannot keep a command running forever.
pub const RESUMES_PER_PASS_MAX: usize = 64;

/// What the store keeps about one promise.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PromiseRecord {
    /// When `create-promise` ran, ms since the epoch.
    pub created_at_ms: u64,
    /// Where it is.
    pub state: PromiseState,
}

/// The life of a promise: pending, then completed (once), and deleted at any point. A deleted
/// promise keeps a tombstone so that using it is reported as "deleted", not "unknown".
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum PromiseState {
    Pending,
    Completed {
        /// The payload.
        data: Vec<u8>,
        /// When it was completed, ms since the epoch.
        completed_at_ms: u64,
    },
    Deleted {
        /// When it was deleted, ms since the epoch.
        deleted_at_ms: u64,
    },
}

/// A worker is suspended: its invocation `idempotency_key` awaits `promise`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Suspension {
    /// The awaiting worker.
    pub worker: WorkerId,
    /// The promise it awaits.
    pub promise: PromiseId,
    /// The invocation that awaits it (its idempotency key).
    pub idempotency_key: String,
    /// When it was suspended, ms since the epoch.
    pub since_ms: u64,
}

impl Suspension {
    /// How the invocation that suspended is deferred.
    pub fn into_deferred(self) -> crate::outcome::Deferred {
        crate::outcome::Deferred::Suspended {
            worker: self.worker,
            promise: self.promise,
            idempotency_key: self.idempotency_key,
        }
    }
}

/// The key of a promise in the `promises` table.
fn promise_key(owner_uid: &Uuid, oplog_idx: OplogIndex) -> Vec<u8> {
    let mut key = owner_uid.as_bytes().to_vec();
    key.extend_from_slice(&oplog_idx.to_be_bytes());
    key
}

/// The uid of a promise's owner, if the owner exists.
fn owner_uid(storage: &Storage, id: &PromiseId) -> Result<Option<Uuid>> {
    let Some(bytes) = storage.get(storage.tables().workers, &id.worker.storage_key())? else {
        return Ok(None);
    };
    let record: WorkerRecord = codec::decode(&bytes, &format!("record of worker {}", id.worker))?;
    Ok(Some(record.uid))
}

/// A promise's record, `None` if it never existed (or its owner was deleted).
pub fn get(storage: &Storage, id: &PromiseId) -> Result<Option<PromiseRecord>> {
    let Some(uid) = owner_uid(storage, id)? else {
        return Ok(None);
    };
    match storage.get(storage.tables().promises, &promise_key(&uid, id.oplog_idx))? {
        Some(bytes) => Ok(Some(codec::decode(&bytes, &id.to_string())?)),
        None => Ok(None),
    }
}

/// Records a new pending promise of the worker `owner_uid` (inside the transaction that commits
/// its `create-promise` entry).
pub fn put_pending(
    txn: &mut RwTransaction<'_>,
    storage: &Storage,
    owner_uid: &Uuid,
    oplog_idx: OplogIndex,
) -> Result<()> {
    let record = PromiseRecord {
        created_at_ms: now_ms(),
        state: PromiseState::Pending,
    };
    txn.put(
        storage.tables().promises,
        &promise_key(owner_uid, oplog_idx),
        &codec::encode(&record),
        WriteFlags::empty(),
    )?;
    Ok(())
}

/// What completing a promise would do, decided from its current record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Completion {
    /// It is pending: this call completes it.
    Completes,
    /// It was already completed: nothing changes.
    AlreadyCompleted,
}

/// Checks that a promise can be completed (or was): an error for unknown and deleted ones.
pub fn check_completion(storage: &Storage, id: &PromiseId, data_len: usize) -> Result<Completion> {
    if data_len > PROMISE_PAYLOAD_BYTES_MAX {
        return Err(Error::InvalidArguments(format!(
            "the payload of {id} is {data_len} bytes; at most {PROMISE_PAYLOAD_BYTES_MAX} are allowed"
        )));
    }
    match get(storage, id)?.map(|r| r.state) {
        None => Err(Error::UnknownPromise(id.clone())),
        Some(PromiseState::Deleted { .. }) => Err(Error::PromiseDeleted(id.clone())),
        Some(PromiseState::Completed { .. }) => Ok(Completion::AlreadyCompleted),
        Some(PromiseState::Pending) => Ok(Completion::Completes),
    }
}

/// Writes a promise's new state (inside a caller's transaction). `created_at_ms` is kept.
pub fn put_state(
    txn: &mut RwTransaction<'_>,
    storage: &Storage,
    id: &PromiseId,
    state: PromiseState,
) -> Result<()> {
    let uid = owner_uid(storage, id)?.ok_or_else(|| Error::UnknownPromise(id.clone()))?;
    let key = promise_key(&uid, id.oplog_idx);
    let created_at_ms = match txn.get(storage.tables().promises, &key) {
        Ok(bytes) => codec::decode::<PromiseRecord>(bytes, &id.to_string())?.created_at_ms,
        Err(lmdb::Error::NotFound) => return Err(Error::UnknownPromise(id.clone())),
        Err(err) => return Err(err.into()),
    };
    let record = PromiseRecord {
        created_at_ms,
        state,
    };
    txn.put(
        storage.tables().promises,
        &key,
        &codec::encode(&record),
        WriteFlags::empty(),
    )?;
    Ok(())
}

/// Completes a promise from outside any worker (`golemw worker complete-promise`), durably.
/// Returns whether this call completed it (false: it already was).
pub fn complete(storage: &Storage, id: &PromiseId, data: &[u8]) -> Result<bool> {
    if check_completion(storage, id, data.len())? == Completion::AlreadyCompleted {
        return Ok(false);
    }
    storage.write(|txn| {
        put_state(
            txn,
            storage,
            id,
            PromiseState::Completed {
                data: data.to_vec(),
                completed_at_ms: now_ms(),
            },
        )
    })?;
    storage.sync()?;
    note_event();
    Ok(true)
}

/// Deletes every promise of a worker and its suspension (the worker is being deleted).
pub fn delete_all(txn: &mut RwTransaction<'_>, storage: &Storage, uid: &Uuid) -> Result<()> {
    let tables = storage.tables();
    crate::storage::delete_prefix(txn, tables.promises, uid.as_bytes())?;
    match txn.del(tables.suspensions, uid.as_bytes(), None) {
        Ok(()) | Err(lmdb::Error::NotFound) => Ok(()),
        Err(err) => Err(err.into()),
    }
}

/// Records that the worker `uid` is suspended (inside the transaction that commits its record).
pub fn put_suspension(
    txn: &mut RwTransaction<'_>,
    storage: &Storage,
    uid: &Uuid,
    suspension: &Suspension,
) -> Result<()> {
    txn.put(
        storage.tables().suspensions,
        uid.as_bytes(),
        &codec::encode(suspension),
        WriteFlags::empty(),
    )?;
    Ok(())
}

/// The suspension of the worker `uid`, if it is suspended.
pub fn suspension(storage: &Storage, uid: &Uuid) -> Result<Option<Suspension>> {
    match storage.get(storage.tables().suspensions, uid.as_bytes())? {
        Some(bytes) => Ok(Some(codec::decode(&bytes, "worker suspension")?)),
        None => Ok(None),
    }
}

/// Forgets the suspension of the worker `uid` (it resumed, or will never need to).
pub fn remove_suspension(storage: &Storage, uid: &Uuid) -> Result<()> {
    storage.write(|txn| delete_suspension(txn, storage, uid))
}

/// [`remove_suspension`] inside `txn`.
pub fn delete_suspension(txn: &mut RwTransaction<'_>, storage: &Storage, uid: &Uuid) -> Result<()> {
    match txn.del(storage.tables().suspensions, uid.as_bytes(), None) {
        Ok(()) | Err(lmdb::Error::NotFound) => Ok(()),
        Err(err) => Err(err.into()),
    }
}

/// Whether a suspended worker can go on: its promise is no longer pending (completed; or
/// deleted or gone, in which case its await traps).
pub fn is_ready(storage: &Storage, suspension: &Suspension) -> Result<bool> {
    Ok(!matches!(
        get(storage, &suspension.promise)?.map(|r| r.state),
        Some(PromiseState::Pending)
    ))
}

/// Every suspended worker whose promise is no longer pending, in uid order.
pub fn ready_suspensions(storage: &Storage) -> Result<Vec<Suspension>> {
    let suspensions: Vec<Suspension> = {
        let txn = storage.env().begin_ro_txn()?;
        let mut cursor = txn.open_ro_cursor(storage.tables().suspensions)?;
        let mut out = Vec::new();
        for item in cursor.iter_start() {
            let (_, value) = item?;
            out.push(codec::decode(value, "worker suspension")?);
        }
        out
    };
    let mut ready = Vec::new();
    for suspension in suspensions {
        if is_ready(storage, &suspension)? {
            ready.push(suspension);
        }
    }
    Ok(ready)
}

/// Counts completions and deletions of promises made in this process (by guests or from
/// outside). The executor looks for workers to resume only when it changed: scanning the
/// suspended workers after every invocation would cost a read per suspended worker.
static EVENTS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Notes that a promise was completed or deleted.
pub fn note_event() {
    EVENTS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
}

/// The number of completions and deletions so far (see [`note_event`]).
pub fn events() -> u64 {
    EVENTS.load(std::sync::atomic::Ordering::SeqCst)
}

/// The outcome of `golemw worker complete-promise`.
#[derive(Clone, Debug, Serialize)]
pub struct PromiseCompletion {
    /// Whether this call completed the promise (false: it already was).
    pub completed: bool,
    /// The suspended workers that were resumed afterwards.
    pub resumed: Vec<Resumption>,
}

/// A suspended worker that was resumed, and how its invocation went on.
#[derive(Clone, Debug, Serialize)]
pub struct Resumption {
    /// The worker.
    pub worker: WorkerId,
    /// The invocation that had been suspended.
    pub idempotency_key: String,
    /// How it went on.
    pub outcome: ResumptionOutcome,
}

/// How a resumed invocation went on.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ResumptionOutcome {
    /// It finished; its WAVE result (stored under its idempotency key).
    Finished { result: Option<String> },
    /// It trapped; the worker failed.
    Trapped { error: String },
    /// It awaits another promise that is not complete.
    SuspendedAgain { promise: PromiseId },
    /// It went to sleep (a durable sleep); a timer brings it back at `until_ms`.
    Sleeping { until_ms: u64 },
    /// It trapped and the retry policy scheduled another attempt, `delay_ms` from now.
    RetryScheduled { attempt: u64, delay_ms: u64 },
    /// The worker could not be recovered.
    Failed { error: String },
}
