//! Queued invocations: Golem's `invoke`, which returns once the invocation is durably queued
//! for the worker instead of waiting for its result.
//!
//! A queued invocation is a row in the `queue` table until it has run. It is not an oplog entry:
//! appending to a worker's oplog takes the worker's turn (its gate assigns the indexes), and a
//! queued invocation must be accepted while the worker runs another one. The row is written in
//! a durable commit before the caller is answered, so a crash loses nothing queued. The worker
//! runs its queued invocations in order, each under its idempotency key: the key makes the run
//! exactly-once whatever crashes (a row whose key has a stored result is done and is removed;
//! the invocation's own `exported-function-invoked` entry records it in the oplog once it runs).
//!
//! ```text
//! queue: worker uid (16) ++ sequence (8, BE) -> QueuedInvocation
//! ```

use lmdb::{Cursor, Transaction, WriteFlags};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::{Error, Result};
use crate::ids::WorkerId;
use crate::storage::{codec, Storage};

/// Invocations queued for one worker at most; past it `invoke` is refused until some have run
/// (a bound on what a client can make the server store and the worker owe).
pub const QUEUED_INVOCATIONS_MAX: usize = 1024;

/// An invocation waiting for its worker.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct QueuedInvocation {
    /// The worker it is for.
    pub worker: WorkerId,
    /// The function, as the caller named it.
    pub function: String,
    /// Its parameters, WAVE.
    pub params: Vec<String>,
    /// Its idempotency key (the caller's, or one made for it).
    pub idempotency_key: String,
    /// When it was queued, ms since the epoch.
    pub queued_at_ms: u64,
}

fn key(uid: &Uuid, sequence: u64) -> [u8; 24] {
    let mut key = [0u8; 24];
    key[..16].copy_from_slice(uid.as_bytes());
    key[16..].copy_from_slice(&sequence.to_be_bytes());
    key
}

/// Every queued invocation of the worker `uid`, in order, with its sequence number.
pub fn list(storage: &Storage, uid: &Uuid) -> Result<Vec<(u64, QueuedInvocation)>> {
    let mut out = Vec::new();
    let mut failure = None;
    storage.scan_prefix(storage.tables().queue, uid.as_bytes(), 24, |key, value| {
        let sequence = u64::from_be_bytes(key[16..24].try_into().expect("24-byte key"));
        match codec::decode(value, "queued invocation") {
            Ok(invocation) => out.push((sequence, invocation)),
            Err(err) => failure = Some(err),
        }
    })?;
    match failure {
        Some(err) => Err(err),
        None => Ok(out),
    }
}

/// The first queued invocation of the worker `uid`.
pub fn first(storage: &Storage, uid: &Uuid) -> Result<Option<(u64, QueuedInvocation)>> {
    let txn = storage.env().begin_ro_txn()?;
    let mut cursor = txn.open_ro_cursor(storage.tables().queue)?;
    let found = match cursor.iter_from(uid.as_bytes()).next() {
        Some(item) => {
            let (key, value) = item?;
            match key.len() == 24 && key.starts_with(uid.as_bytes()) {
                true => Some((
                    u64::from_be_bytes(key[16..24].try_into().expect("24-byte key")),
                    codec::decode(value, "queued invocation")?,
                )),
                false => None,
            }
        }
        None => None,
    };
    Ok(found)
}

/// Queues an invocation for the worker `uid`, durably (group commit). A key already queued is
/// not queued twice (the call is answered as queued). Refused past [`QUEUED_INVOCATIONS_MAX`].
pub fn push(
    storage: &std::sync::Arc<Storage>,
    uid: Uuid,
    invocation: QueuedInvocation,
) -> Result<()> {
    let storage_ref = std::sync::Arc::clone(storage);
    storage.commit(
        Box::new(move |txn| {
            let db = storage_ref.tables().queue;
            let mut last = None;
            let mut count = 0;
            {
                let mut cursor = txn.open_ro_cursor(db)?;
                for item in cursor.iter_from(uid.as_bytes()) {
                    let (key, value) = item?;
                    if key.len() != 24 || !key.starts_with(uid.as_bytes()) {
                        break;
                    }
                    let queued: QueuedInvocation = codec::decode(value, "queued invocation")?;
                    if queued.idempotency_key == invocation.idempotency_key {
                        return Ok(());
                    }
                    count += 1;
                    last = Some(u64::from_be_bytes(
                        key[16..24].try_into().expect("24 bytes"),
                    ));
                }
            }
            if count >= QUEUED_INVOCATIONS_MAX {
                return Err(Error::QueueFull {
                    worker: invocation.worker.clone(),
                    max: QUEUED_INVOCATIONS_MAX,
                });
            }
            let sequence = last.map_or(0, |last| last + 1);
            txn.put(
                db,
                &key(&uid, sequence),
                &codec::encode(&invocation),
                WriteFlags::NO_OVERWRITE,
            )?;
            Ok(())
        }),
        true,
    )
}

/// Removes a queued invocation that has run (not durably: a row left by a crash is found done
/// by its idempotency key and removed again).
pub fn remove(storage: &Storage, uid: &Uuid, sequence: u64) -> Result<()> {
    let db = storage.tables().queue;
    storage.write(|txn| match txn.del(db, &key(uid, sequence), None) {
        Ok(()) | Err(lmdb::Error::NotFound) => Ok(()),
        Err(err) => Err(err.into()),
    })
}

/// Deletes every queued invocation of a worker (it is being deleted).
pub fn delete_all(txn: &mut lmdb::RwTransaction<'_>, storage: &Storage, uid: &Uuid) -> Result<()> {
    crate::storage::delete_prefix(txn, storage.tables().queue, uid.as_bytes())?;
    Ok(())
}

/// The workers that have queued invocations (for a server starting on a data directory).
pub fn workers(storage: &Storage) -> Result<Vec<WorkerId>> {
    let txn = storage.env().begin_ro_txn()?;
    let mut cursor = txn.open_ro_cursor(storage.tables().queue)?;
    let mut out: Vec<WorkerId> = Vec::new();
    let mut last_uid: Option<Vec<u8>> = None;
    for item in cursor.iter_start() {
        let (key, value) = item?;
        if last_uid.as_deref() == Some(&key[..16.min(key.len())]) {
            continue;
        }
        last_uid = Some(key[..16.min(key.len())].to_vec());
        let queued: QueuedInvocation = codec::decode(value, "queued invocation")?;
        out.push(queued.worker);
    }
    Ok(out)
}
