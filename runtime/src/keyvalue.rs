//! The store behind `wasi:keyvalue@0.1.0` (`runtime/src/host/keyvalue.rs` is the host side):
//! buckets of keys and byte values in the data directory's LMDB.
//!
//! **Scope.** Golem 1.0 keys a bucket by the worker's *account* and the bucket's name
//! (`KeyValueStorageNamespace::UserDefined { account_id, bucket }` in its worker executor): every
//! worker of every component of one account sees the same bucket `b`. A golemw data directory
//! is one deployment with one owner, so it is the account: a bucket is named by its name alone,
//! shared by all workers of all components of the directory. It outlives the workers and the
//! components that wrote it, as it does in Golem, and goes with the data directory.
//!
//! ```text
//! keyvalue: bucket length (1) ++ bucket name ++ key -> [version][crc32][value bytes]
//! ```
//!
//! The length prefix keeps buckets apart (`a` + `bc` is not `ab` + `c`) and makes a bucket's
//! keys one contiguous range. Everything here is read and written **live** only: replay returns
//! what the oplog recorded and never comes here.

use lmdb::{Cursor, RwTransaction, Transaction, WriteFlags};

use crate::error::{Error, Result};
use crate::storage::{codec, Storage};

/// The longest bucket name, in bytes. Bucket and key share one LMDB key, which LMDB caps at
/// 511 bytes: 1 (length) + 128 + [`KEY_BYTES_MAX`] (256) = 385 leaves room to spare.
pub const BUCKET_NAME_BYTES_MAX: usize = 128;
/// The longest key, in bytes (see [`BUCKET_NAME_BYTES_MAX`] for the arithmetic).
pub const KEY_BYTES_MAX: usize = 256;
/// The largest value. Every `get` records the value it returns in the worker's oplog, and a
/// guest hands a value over as a canonical-ABI list lifted byte by byte: 1 MiB keeps both
/// moderate (a block, and ~40 MB of lifted values at worst); large data belongs in the blob
/// store.
pub const VALUE_BYTES_MAX: usize = 1 << 20;
/// The most keys one batch call (`get-many`, `set-many`, `delete-many`) may name.
pub const BATCH_KEYS_MAX: usize = 1024;
/// The most bytes one recorded response (`get-many`, `keys`) may hold: 16 MiB, as a promise's
/// payload, keeps an entry well inside a block.
pub const RESPONSE_BYTES_MAX: usize = 16 << 20;

/// Why a name, key or value is refused (the guest receives it as the error's trace).
pub fn check_bucket(name: &str) -> std::result::Result<(), String> {
    if name.is_empty() || name.len() > BUCKET_NAME_BYTES_MAX {
        return Err(format!(
            "bucket name {:?} is {} bytes; a bucket name is 1 to {BUCKET_NAME_BYTES_MAX} bytes",
            shorten(name),
            name.len()
        ));
    }
    Ok(())
}

/// See [`check_bucket`].
pub fn check_key(key: &str) -> std::result::Result<(), String> {
    if key.len() > KEY_BYTES_MAX {
        return Err(format!(
            "key {:?} is {} bytes; at most {KEY_BYTES_MAX} are allowed",
            shorten(key),
            key.len()
        ));
    }
    Ok(())
}

/// See [`check_bucket`].
pub fn check_value(len: usize) -> std::result::Result<(), String> {
    if len > VALUE_BYTES_MAX {
        return Err(format!(
            "the value is {len} bytes; at most {VALUE_BYTES_MAX} are allowed"
        ));
    }
    Ok(())
}

/// See [`check_bucket`].
pub fn check_batch(count: usize) -> std::result::Result<(), String> {
    if count > BATCH_KEYS_MAX {
        return Err(format!(
            "{count} keys in one call; at most {BATCH_KEYS_MAX} are allowed"
        ));
    }
    Ok(())
}

/// The first 40 characters of a name, for messages about names that are too long.
fn shorten(text: &str) -> String {
    match text.char_indices().nth(40) {
        Some((at, _)) => format!("{}...", &text[..at]),
        None => text.to_string(),
    }
}

/// The prefix of every key of `bucket`.
fn bucket_prefix(bucket: &str) -> Vec<u8> {
    debug_assert!(
        check_bucket(bucket).is_ok(),
        "bucket names are checked first"
    );
    let mut prefix = Vec::with_capacity(1 + bucket.len());
    prefix.push(bucket.len() as u8);
    prefix.extend_from_slice(bucket.as_bytes());
    prefix
}

/// The LMDB key of `key` in `bucket`.
fn row_key(bucket: &str, key: &str) -> Vec<u8> {
    debug_assert!(check_key(key).is_ok(), "keys are checked first");
    let mut row = bucket_prefix(bucket);
    row.extend_from_slice(key.as_bytes());
    row
}

/// Splits a row key into bucket and key; `None` if it is not one this module writes.
pub fn parse_row_key(row: &[u8]) -> Option<(&str, &str)> {
    let (&len, rest) = row.split_first()?;
    let bucket = std::str::from_utf8(rest.get(..len as usize)?).ok()?;
    let key = std::str::from_utf8(&rest[len as usize..]).ok()?;
    (check_bucket(bucket).is_ok() && check_key(key).is_ok()).then_some((bucket, key))
}

fn what(bucket: &str, key: &str) -> String {
    format!("value of key {key:?} in key-value bucket {bucket:?}")
}

/// The value of `key` in `bucket`, if it has one.
pub fn get(storage: &Storage, bucket: &str, key: &str) -> Result<Option<Vec<u8>>> {
    let txn = storage.env().begin_ro_txn()?;
    read(&txn, storage, bucket, key)
}

fn read(
    txn: &impl Transaction,
    storage: &Storage,
    bucket: &str,
    key: &str,
) -> Result<Option<Vec<u8>>> {
    match txn.get(storage.tables().keyvalue, &row_key(bucket, key)) {
        Ok(sealed) => {
            let value = codec::check(sealed, &what(bucket, key))?;
            debug_assert!(
                value.len() <= VALUE_BYTES_MAX,
                "values are checked when set"
            );
            Ok(Some(value.to_vec()))
        }
        Err(lmdb::Error::NotFound) => Ok(None),
        Err(err) => Err(err.into()),
    }
}

/// The values of `keys` in `bucket`, in their order, read in one transaction.
pub fn get_many(storage: &Storage, bucket: &str, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>> {
    let txn = storage.env().begin_ro_txn()?;
    keys.iter()
        .map(|key| read(&txn, storage, bucket, key))
        .collect()
}

/// Whether `key` has a value in `bucket`.
pub fn exists(storage: &Storage, bucket: &str, key: &str) -> Result<bool> {
    let txn = storage.env().begin_ro_txn()?;
    match txn.get(storage.tables().keyvalue, &row_key(bucket, key)) {
        Ok(_) => Ok(true),
        Err(lmdb::Error::NotFound) => Ok(false),
        Err(err) => Err(err.into()),
    }
}

/// Every key of `bucket`, in byte order; `Err(reason)` when they would not fit in one
/// response ([`RESPONSE_BYTES_MAX`]).
pub fn keys(storage: &Storage, bucket: &str) -> Result<std::result::Result<Vec<String>, String>> {
    let prefix = bucket_prefix(bucket);
    let txn = storage.env().begin_ro_txn()?;
    let mut cursor = txn.open_ro_cursor(storage.tables().keyvalue)?;
    let mut keys = Vec::new();
    let mut bytes = 0usize;
    for item in cursor.iter_from(&prefix) {
        let (row, _) = item?;
        if !row.starts_with(&prefix) {
            break;
        }
        let key = std::str::from_utf8(&row[prefix.len()..]).map_err(|_| Error::Corrupt {
            what: format!("a key of key-value bucket {bucket:?}"),
            detail: "not UTF-8".into(),
        })?;
        // A string costs its bytes and a length in the recorded list.
        bytes += key.len() + 4;
        if bytes > RESPONSE_BYTES_MAX {
            return Ok(Err(format!(
                "bucket {bucket:?} has more keys than one response holds ({RESPONSE_BYTES_MAX} \
                 bytes); more than {} keys",
                keys.len()
            )));
        }
        keys.push(key.to_string());
    }
    Ok(Ok(keys))
}

/// Sets `key` in `bucket` to `value` (inside the transaction of the call's oplog entry).
pub fn put(
    txn: &mut RwTransaction<'_>,
    storage: &Storage,
    bucket: &str,
    key: &str,
    value: &[u8],
) -> Result<()> {
    assert!(
        value.len() <= VALUE_BYTES_MAX,
        "values are checked before they are written"
    );
    txn.put(
        storage.tables().keyvalue,
        &row_key(bucket, key),
        &codec::seal(value),
        WriteFlags::empty(),
    )?;
    Ok(())
}

/// Removes `key` from `bucket`, if it is there (inside the transaction of the call's entry).
pub fn delete(
    txn: &mut RwTransaction<'_>,
    storage: &Storage,
    bucket: &str,
    key: &str,
) -> Result<()> {
    match txn.del(storage.tables().keyvalue, &row_key(bucket, key), None) {
        Ok(()) | Err(lmdb::Error::NotFound) => Ok(()),
        Err(err) => Err(err.into()),
    }
}

/// What `golemw check` finds wrong with one row, if anything.
pub fn check_row(row: &[u8], value: &[u8]) -> Option<String> {
    let Some((bucket, key)) = parse_row_key(row) else {
        return Some("a key that is not a bucket name and key within their limits".into());
    };
    match codec::check(value, &what(bucket, key)) {
        Err(err) => Some(err.to_string()),
        Ok(value) if value.len() > VALUE_BYTES_MAX => Some(format!(
            "the value is {} bytes, more than the {VALUE_BYTES_MAX} a guest can set",
            value.len()
        )),
        Ok(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_kept_apart_and_their_keys_listed_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::open(dir.path()).unwrap();
        storage
            .write(|txn| {
                put(txn, &storage, "a", "bc", b"1")?;
                put(txn, &storage, "ab", "c", b"2")?;
                put(txn, &storage, "a", "a", b"3")?;
                Ok(())
            })
            .unwrap();
        assert_eq!(get(&storage, "a", "bc").unwrap(), Some(b"1".to_vec()));
        assert_eq!(get(&storage, "ab", "c").unwrap(), Some(b"2".to_vec()));
        assert_eq!(get(&storage, "a", "c").unwrap(), None);
        assert_eq!(keys(&storage, "a").unwrap().unwrap(), ["a", "bc"]);
        assert_eq!(keys(&storage, "ab").unwrap().unwrap(), ["c"]);
        storage
            .write(|txn| delete(txn, &storage, "a", "bc"))
            .unwrap();
        assert!(!exists(&storage, "a", "bc").unwrap());
        assert!(exists(&storage, "a", "a").unwrap());
        storage
            .scan_all(storage.tables().keyvalue, |row, value| {
                assert_eq!(check_row(row, value), None);
            })
            .unwrap();
    }

    #[test]
    fn limits_are_checked_at_their_bounds() {
        assert!(check_bucket("").is_err());
        assert!(check_bucket(&"b".repeat(BUCKET_NAME_BYTES_MAX)).is_ok());
        assert!(check_bucket(&"b".repeat(BUCKET_NAME_BYTES_MAX + 1)).is_err());
        assert!(check_key(&"k".repeat(KEY_BYTES_MAX)).is_ok());
        assert!(check_key(&"k".repeat(KEY_BYTES_MAX + 1)).is_err());
        assert!(check_value(VALUE_BYTES_MAX).is_ok());
        assert!(check_value(VALUE_BYTES_MAX + 1).is_err());
        assert!(check_batch(BATCH_KEYS_MAX + 1).is_err());
        // The longest bucket and key still make a key LMDB accepts (at most 511 bytes).
        let row = row_key(
            &"b".repeat(BUCKET_NAME_BYTES_MAX),
            &"k".repeat(KEY_BYTES_MAX),
        );
        assert!(row.len() <= 511);
        assert_eq!(
            parse_row_key(&row).map(|(b, k)| (b.len(), k.len())),
            Some((BUCKET_NAME_BYTES_MAX, KEY_BYTES_MAX))
        );
    }
}
