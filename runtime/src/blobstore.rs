//! The store behind `wasi:blobstore` as Golem 1.0 provides it (`runtime/src/host/blobstore.rs`
//! is the host side): containers of named objects (byte strings) in the data directory's LMDB.
//!
//! **Scope**: as for `crate::keyvalue`, the data directory. Golem 1.0 stores a container under
//! the worker's account (`BlobStorageNamespace::CustomStorage(account_id)`), so every worker of
//! every component of the account sees container `c`; a data directory is golemw's account.
//!
//! ```text
//! blob_containers: container name                          -> [version][crc32][created-at ms, LE u64]
//! blob_objects:    name length (1) ++ container ++ object  -> [version][crc32][created-at ms, LE u64][data]
//! ```
//!
//! Read and written live only; replay returns what the oplog recorded. Writes that depend on
//! what is stored (copy, move, a write into a container deleted meanwhile) decide and write
//! under [`write_lock`], so what the oplog records is what the store did.

use std::sync::{Mutex, MutexGuard};

use lmdb::{Cursor, RwTransaction, Transaction, WriteFlags};

use crate::error::{Error, Result};
use crate::storage::{codec, Storage};

/// The longest container name, in bytes. Container and object name share one LMDB key, which
/// LMDB caps at 511 bytes: 1 (length) + 128 + [`OBJECT_NAME_BYTES_MAX`] (256) = 385.
pub const CONTAINER_NAME_BYTES_MAX: usize = 128;
/// The longest object name, in bytes (see [`CONTAINER_NAME_BYTES_MAX`]).
pub const OBJECT_NAME_BYTES_MAX: usize = 256;
/// The largest object. `get-data` records what it returns in the oplog and the guest receives
/// it as a canonical-ABI list built byte by byte (some 40 bytes of host memory per byte while
/// it is lowered): 4 MiB keeps that near 160 MB at worst.
pub const OBJECT_BYTES_MAX: usize = 4 << 20;
/// The most names one `delete-objects` call may take.
pub const BATCH_NAMES_MAX: usize = 1024;
/// The most bytes of names one recorded `list-objects` response may hold.
pub const LIST_BYTES_MAX: usize = 16 << 20;

/// Bytes before an object's data: its creation time.
const OBJECT_HEADER_BYTES: usize = 8;

/// Why a container name is refused (the guest receives it as the error).
pub fn check_container(name: &str) -> std::result::Result<(), String> {
    if name.is_empty() || name.len() > CONTAINER_NAME_BYTES_MAX {
        return Err(format!(
            "container name {:?} is {} bytes; a container name is 1 to \
             {CONTAINER_NAME_BYTES_MAX} bytes",
            shorten(name),
            name.len()
        ));
    }
    Ok(())
}

/// Why an object name is refused.
pub fn check_object(name: &str) -> std::result::Result<(), String> {
    if name.is_empty() || name.len() > OBJECT_NAME_BYTES_MAX {
        return Err(format!(
            "object name {:?} is {} bytes; an object name is 1 to {OBJECT_NAME_BYTES_MAX} bytes",
            shorten(name),
            name.len()
        ));
    }
    Ok(())
}

/// Why an object of `len` bytes is refused.
pub fn check_size(len: usize) -> std::result::Result<(), String> {
    if len > OBJECT_BYTES_MAX {
        return Err(format!(
            "the object is {len} bytes; at most {OBJECT_BYTES_MAX} are allowed"
        ));
    }
    Ok(())
}

/// Why a batch of `count` names is refused.
pub fn check_batch(count: usize) -> std::result::Result<(), String> {
    if count > BATCH_NAMES_MAX {
        return Err(format!(
            "{count} names in one call; at most {BATCH_NAMES_MAX} are allowed"
        ));
    }
    Ok(())
}

fn shorten(text: &str) -> String {
    match text.char_indices().nth(40) {
        Some((at, _)) => format!("{}...", &text[..at]),
        None => text.to_string(),
    }
}

/// Held by a live write from its decision to its commit: blob store writes of all workers
/// take turns, so a decision (the source exists, the container exists) still holds when the
/// change is written. Writes commit without fsync, so the turn is short.
pub fn write_lock() -> MutexGuard<'static, ()> {
    static WRITES: Mutex<()> = Mutex::new(());
    // A writer that panicked left nothing half done in the store (its transaction aborted).
    WRITES
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn container_prefix(container: &str) -> Vec<u8> {
    debug_assert!(
        check_container(container).is_ok(),
        "names are checked first"
    );
    let mut prefix = Vec::with_capacity(1 + container.len());
    prefix.push(container.len() as u8);
    prefix.extend_from_slice(container.as_bytes());
    prefix
}

fn object_key(container: &str, object: &str) -> Vec<u8> {
    debug_assert!(check_object(object).is_ok(), "names are checked first");
    let mut key = container_prefix(container);
    key.extend_from_slice(object.as_bytes());
    key
}

/// Splits an object row key into container and object; `None` if it is not one of ours.
pub fn parse_object_key(row: &[u8]) -> Option<(&str, &str)> {
    let (&len, rest) = row.split_first()?;
    let container = std::str::from_utf8(rest.get(..len as usize)?).ok()?;
    let object = std::str::from_utf8(&rest[len as usize..]).ok()?;
    (check_container(container).is_ok() && check_object(object).is_ok())
        .then_some((container, object))
}

/// An object as stored: when it was written, and its data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Object {
    pub created_at_ms: u64,
    pub data: Vec<u8>,
}

fn encode_object(created_at_ms: u64, data: &[u8]) -> Vec<u8> {
    let mut payload = Vec::with_capacity(OBJECT_HEADER_BYTES + data.len());
    payload.extend_from_slice(&created_at_ms.to_le_bytes());
    payload.extend_from_slice(data);
    codec::seal(&payload)
}

fn decode_object<'a>(sealed: &'a [u8], what: &str) -> Result<(u64, &'a [u8])> {
    let payload = codec::check(sealed, what)?;
    if payload.len() < OBJECT_HEADER_BYTES {
        return Err(Error::Corrupt {
            what: what.to_string(),
            detail: format!("{} bytes, shorter than an object's header", payload.len()),
        });
    }
    let (header, data) = payload.split_at(OBJECT_HEADER_BYTES);
    let created = u64::from_le_bytes(header.try_into().expect("8 bytes"));
    Ok((created, data))
}

fn what(container: &str, object: &str) -> String {
    format!("object {object:?} of blob container {container:?}")
}

fn read_container(txn: &impl Transaction, storage: &Storage, name: &str) -> Result<Option<u64>> {
    match txn.get(storage.tables().blob_containers, &name.as_bytes()) {
        Ok(sealed) => {
            let payload = codec::check(sealed, &format!("blob container {name:?}"))?;
            let bytes: [u8; 8] = payload.try_into().map_err(|_| Error::Corrupt {
                what: format!("blob container {name:?}"),
                detail: format!("{} bytes, not 8", payload.len()),
            })?;
            Ok(Some(u64::from_le_bytes(bytes)))
        }
        Err(lmdb::Error::NotFound) => Ok(None),
        Err(err) => Err(err.into()),
    }
}

/// When container `name` was created, if it exists.
pub fn container(storage: &Storage, name: &str) -> Result<Option<u64>> {
    let txn = storage.env().begin_ro_txn()?;
    read_container(&txn, storage, name)
}

/// Creates container `name` at `now_ms` unless it exists (creating it again changes nothing,
/// as in Golem); returns its creation time.
pub fn create_container(
    txn: &mut RwTransaction<'_>,
    storage: &Storage,
    name: &str,
    now_ms: u64,
) -> Result<u64> {
    if let Some(created) = read_container(txn, storage, name)? {
        return Ok(created);
    }
    txn.put(
        storage.tables().blob_containers,
        &name.as_bytes(),
        &codec::seal(&now_ms.to_le_bytes()),
        WriteFlags::empty(),
    )?;
    Ok(now_ms)
}

/// Deletes container `name` and every object in it.
pub fn delete_container(txn: &mut RwTransaction<'_>, storage: &Storage, name: &str) -> Result<()> {
    clear(txn, storage, name)?;
    match txn.del(storage.tables().blob_containers, &name.as_bytes(), None) {
        Ok(()) | Err(lmdb::Error::NotFound) => Ok(()),
        Err(err) => Err(err.into()),
    }
}

/// Deletes every object of container `name`, keeping the container.
pub fn clear(txn: &mut RwTransaction<'_>, storage: &Storage, name: &str) -> Result<()> {
    crate::storage::delete_prefix(txn, storage.tables().blob_objects, &container_prefix(name))?;
    Ok(())
}

/// An object, if it exists.
pub fn object(storage: &Storage, container: &str, object: &str) -> Result<Option<Object>> {
    let txn = storage.env().begin_ro_txn()?;
    read_object(&txn, storage, container, object)
}

fn read_object(
    txn: &impl Transaction,
    storage: &Storage,
    container: &str,
    object: &str,
) -> Result<Option<Object>> {
    match txn.get(
        storage.tables().blob_objects,
        &object_key(container, object),
    ) {
        Ok(sealed) => {
            let (created_at_ms, data) = decode_object(sealed, &what(container, object))?;
            debug_assert!(
                data.len() <= OBJECT_BYTES_MAX,
                "sizes are checked when written"
            );
            Ok(Some(Object {
                created_at_ms,
                data: data.to_vec(),
            }))
        }
        Err(lmdb::Error::NotFound) => Ok(None),
        Err(err) => Err(err.into()),
    }
}

/// Writes an object (replacing one of that name), created at `now_ms`.
pub fn put_object(
    txn: &mut RwTransaction<'_>,
    storage: &Storage,
    container: &str,
    object: &str,
    data: &[u8],
    now_ms: u64,
) -> Result<()> {
    assert!(
        data.len() <= OBJECT_BYTES_MAX,
        "sizes are checked before objects are written"
    );
    txn.put(
        storage.tables().blob_objects,
        &object_key(container, object),
        &encode_object(now_ms, data),
        WriteFlags::empty(),
    )?;
    Ok(())
}

/// Deletes an object, if it exists.
pub fn delete_object(
    txn: &mut RwTransaction<'_>,
    storage: &Storage,
    container: &str,
    object: &str,
) -> Result<()> {
    match txn.del(
        storage.tables().blob_objects,
        &object_key(container, object),
        None,
    ) {
        Ok(()) | Err(lmdb::Error::NotFound) => Ok(()),
        Err(err) => Err(err.into()),
    }
}

/// The names of container `name`'s objects, in byte order; `Err(reason)` when they would not
/// fit in one response ([`LIST_BYTES_MAX`]).
pub fn list_objects(
    storage: &Storage,
    name: &str,
) -> Result<std::result::Result<Vec<String>, String>> {
    let prefix = container_prefix(name);
    let txn = storage.env().begin_ro_txn()?;
    let mut cursor = txn.open_ro_cursor(storage.tables().blob_objects)?;
    let (mut names, mut bytes) = (Vec::new(), 0usize);
    for item in cursor.iter_from(&prefix) {
        let (row, _) = item?;
        if !row.starts_with(&prefix) {
            break;
        }
        let object = std::str::from_utf8(&row[prefix.len()..]).map_err(|_| Error::Corrupt {
            what: format!("an object name of blob container {name:?}"),
            detail: "not UTF-8".into(),
        })?;
        bytes += object.len() + 4;
        if bytes > LIST_BYTES_MAX {
            return Ok(Err(format!(
                "container {name:?} has more objects than one listing holds \
                 ({LIST_BYTES_MAX} bytes of names)"
            )));
        }
        names.push(object.to_string());
    }
    Ok(Ok(names))
}

/// What `golemw check` finds wrong with a container row.
pub fn check_container_row(key: &[u8], value: &[u8]) -> Option<String> {
    let name = std::str::from_utf8(key)
        .ok()
        .filter(|n| check_container(n).is_ok());
    let Some(name) = name else {
        return Some("a key that is not a container name within its limits".into());
    };
    match codec::check(value, &format!("blob container {name:?}")) {
        Err(err) => Some(err.to_string()),
        Ok(payload) if payload.len() != 8 => Some(format!("{} bytes, not 8", payload.len())),
        Ok(_) => None,
    }
}

/// What `golemw check` finds wrong with an object row (`containers`: the names of the
/// containers found readable).
pub fn check_object_row(
    key: &[u8],
    value: &[u8],
    containers: &std::collections::HashSet<String>,
) -> Option<String> {
    let Some((container, object)) = parse_object_key(key) else {
        return Some("a key that is not a container and object name within their limits".into());
    };
    if !containers.contains(container) {
        return Some(format!(
            "object {object:?} is in container {container:?}, which has no readable record"
        ));
    }
    match decode_object(value, &what(container, object)) {
        Err(err) => Some(err.to_string()),
        Ok((_, data)) if data.len() > OBJECT_BYTES_MAX => Some(format!(
            "{} bytes, more than the {OBJECT_BYTES_MAX} a guest can write",
            data.len()
        )),
        Ok(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn containers_hold_their_objects_apart_and_deleting_one_deletes_them() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::open(dir.path()).unwrap();
        storage
            .write(|txn| {
                assert_eq!(create_container(txn, &storage, "a", 5)?, 5);
                // Created again: it keeps its first creation time.
                assert_eq!(create_container(txn, &storage, "a", 9)?, 5);
                create_container(txn, &storage, "ab", 6)?;
                put_object(txn, &storage, "a", "bc", b"1", 7)?;
                put_object(txn, &storage, "ab", "c", b"2", 8)?;
                Ok(())
            })
            .unwrap();
        assert_eq!(list_objects(&storage, "a").unwrap().unwrap(), ["bc"]);
        assert_eq!(
            object(&storage, "ab", "c").unwrap(),
            Some(Object {
                created_at_ms: 8,
                data: b"2".to_vec()
            })
        );
        storage
            .write(|txn| delete_container(txn, &storage, "a"))
            .unwrap();
        assert_eq!(container(&storage, "a").unwrap(), None);
        assert_eq!(object(&storage, "a", "bc").unwrap(), None);
        assert_eq!(list_objects(&storage, "ab").unwrap().unwrap(), ["c"]);
        let containers = std::collections::HashSet::from(["ab".to_string()]);
        storage
            .scan_all(storage.tables().blob_objects, |key, value| {
                assert_eq!(check_object_row(key, value, &containers), None);
            })
            .unwrap();
    }

    #[test]
    fn limits_are_checked_at_their_bounds() {
        assert!(check_container("").is_err());
        assert!(check_container(&"c".repeat(CONTAINER_NAME_BYTES_MAX)).is_ok());
        assert!(check_container(&"c".repeat(CONTAINER_NAME_BYTES_MAX + 1)).is_err());
        assert!(check_object("").is_err());
        assert!(check_object(&"o".repeat(OBJECT_NAME_BYTES_MAX)).is_ok());
        assert!(check_object(&"o".repeat(OBJECT_NAME_BYTES_MAX + 1)).is_err());
        assert!(check_size(OBJECT_BYTES_MAX).is_ok());
        assert!(check_size(OBJECT_BYTES_MAX + 1).is_err());
        assert!(check_batch(BATCH_NAMES_MAX + 1).is_err());
        let key = object_key(
            &"c".repeat(CONTAINER_NAME_BYTES_MAX),
            &"o".repeat(OBJECT_NAME_BYTES_MAX),
        );
        assert!(key.len() <= 511, "LMDB's key limit");
    }
}
