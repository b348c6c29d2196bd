//! Durable sleeps: workers suspended by a sleep long enough not to hold a thread for.
//!
//! A guest sleep of at least the threshold (`ExecutorOptions::durable_sleep_min`) records its due
//! time in the oplog (a `golemw:sleep-until` host call), and the worker is suspended like one
//! awaiting a promise: its invocation stays open, its entries so far, its record (status
//! `suspended`) and its row here are committed in one durable transaction, and the instance is
//! dropped. A timer brings it back at the due time by recovery (nearest snapshot, replay up to
//! the sleep, which finds the due time recorded and sleeps only what is left), and the
//! invocation goes on live. The rows survive a restart, which schedules them again.
//!
//! ```text
//! sleeps: worker uid (16) -> Sleep (which worker, until when, which invocation)
//! ```

use lmdb::{Cursor, RwTransaction, Transaction, WriteFlags};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::Result;
use crate::ids::WorkerId;
use crate::storage::{codec, Storage};

/// A worker suspended by a sleep.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Sleep {
    /// The sleeping worker.
    pub worker: WorkerId,
    /// When it is due, ms since the epoch.
    pub until_ms: u64,
    /// The invocation that sleeps (its idempotency key).
    pub idempotency_key: String,
    /// When it went to sleep, ms since the epoch.
    pub since_ms: u64,
}

impl Sleep {
    /// How the sleeping invocation is deferred.
    pub fn into_deferred(self) -> crate::outcome::Deferred {
        crate::outcome::Deferred::Sleeping {
            worker: self.worker,
            until_ms: self.until_ms,
            idempotency_key: self.idempotency_key,
        }
    }
}

/// Whether a sleep with `left` to go suspends the worker under the threshold `min`. Never one
/// with nothing left: a woken sleeper whose due time has passed goes on (with a threshold of 0
/// it would otherwise suspend again, due at once, for ever).
pub fn suspends(left: std::time::Duration, min: std::time::Duration) -> bool {
    !left.is_zero() && left >= min
}

/// Records that the worker `uid` sleeps (inside the transaction that commits its record).
pub fn put(
    txn: &mut RwTransaction<'_>,
    storage: &Storage,
    uid: &Uuid,
    sleep: &Sleep,
) -> Result<()> {
    txn.put(
        storage.tables().sleeps,
        uid.as_bytes(),
        &codec::encode(sleep),
        WriteFlags::empty(),
    )?;
    Ok(())
}

/// The sleep of the worker `uid`, if it sleeps.
pub fn get(storage: &Storage, uid: &Uuid) -> Result<Option<Sleep>> {
    match storage.get(storage.tables().sleeps, uid.as_bytes())? {
        Some(bytes) => Ok(Some(codec::decode(&bytes, "worker sleep")?)),
        None => Ok(None),
    }
}

/// Deletes the worker's row inside a caller's transaction (it woke, or is being deleted).
pub fn delete(txn: &mut RwTransaction<'_>, storage: &Storage, uid: &Uuid) -> Result<()> {
    match txn.del(storage.tables().sleeps, uid.as_bytes(), None) {
        Ok(()) | Err(lmdb::Error::NotFound) => Ok(()),
        Err(err) => Err(err.into()),
    }
}

/// Forgets the sleep of the worker `uid` (it woke).
pub fn remove(storage: &Storage, uid: &Uuid) -> Result<()> {
    storage.write(|txn| delete(txn, storage, uid))
}

/// Every sleeping worker, in uid order.
pub fn all(storage: &Storage) -> Result<Vec<Sleep>> {
    let txn = storage.env().begin_ro_txn()?;
    let mut cursor = txn.open_ro_cursor(storage.tables().sleeps)?;
    let mut out = Vec::new();
    for item in cursor.iter_start() {
        let (_, value) = item?;
        out.push(codec::decode(value, "worker sleep")?);
    }
    Ok(out)
}
