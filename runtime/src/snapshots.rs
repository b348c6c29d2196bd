//! Snapshot storage in LMDB: manifests keyed by worker and oplog index, pages keyed by worker
//! and content hash. Pages are scoped per worker so collecting unreferenced ones needs only the
//! worker's own manifests.

use std::collections::HashSet;

use golemw_snapshot::{Capture, Manifest, PageHash, SnapshotError};
use lmdb::{Transaction, WriteFlags};
use uuid::Uuid;

use crate::error::{Error, Result};
use crate::ids::OplogIndex;
use crate::storage::Storage;

fn manifest_key(uid: &Uuid, index: OplogIndex) -> [u8; 24] {
    let mut key = [0u8; 24];
    key[..16].copy_from_slice(uid.as_bytes());
    key[16..].copy_from_slice(&index.to_be_bytes());
    key
}

fn page_key(uid: &Uuid, hash: &PageHash) -> [u8; 48] {
    let mut key = [0u8; 48];
    key[..16].copy_from_slice(uid.as_bytes());
    key[16..].copy_from_slice(&hash.0);
    key
}

/// A stored manifest, or why it cannot be used.
pub struct StoredSnapshot {
    pub index: OplogIndex,
    /// Encoded size of the manifest.
    pub manifest_bytes: usize,
    pub manifest: std::result::Result<Manifest, SnapshotError>,
}

/// Writes a capture: its new pages and its manifest in one transaction (all or nothing).
pub fn put(storage: &Storage, uid: &Uuid, capture: &Capture) -> Result<()> {
    let tables = storage.tables();
    let manifest = capture.manifest.encode();
    let key = manifest_key(uid, capture.manifest.oplog_index);
    storage.write(|txn| {
        for (hash, bytes) in &capture.new_pages {
            txn.put(
                tables.snapshot_pages,
                &page_key(uid, hash),
                bytes,
                WriteFlags::empty(),
            )?;
        }
        txn.put(tables.snapshots, &key, &manifest, WriteFlags::empty())?;
        Ok(())
    })?;
    storage.sync()
}

/// Every snapshot of a worker, oldest first; undecodable ones are listed with their error.
pub fn list(storage: &Storage, uid: &Uuid) -> Result<Vec<StoredSnapshot>> {
    let mut out = Vec::new();
    storage.scan_prefix(
        storage.tables().snapshots,
        uid.as_bytes(),
        24,
        |key, value| {
            out.push(StoredSnapshot {
                index: manifest_index(key),
                manifest_bytes: value.len(),
                manifest: Manifest::decode(value),
            })
        },
    )?;
    Ok(out)
}

/// The manifest of the snapshot at `index`, if there is one (decoded, or why it could not be).
pub fn get(
    storage: &Storage,
    uid: &Uuid,
    index: OplogIndex,
) -> Result<Option<std::result::Result<Manifest, SnapshotError>>> {
    Ok(storage
        .get(storage.tables().snapshots, &manifest_key(uid, index))?
        .map(|bytes| Manifest::decode(&bytes)))
}

/// The oplog indexes of a worker's snapshots, oldest first, without decoding the manifests.
pub fn indexes(storage: &Storage, uid: &Uuid) -> Result<Vec<OplogIndex>> {
    let mut out = Vec::new();
    storage.scan_prefix(storage.tables().snapshots, uid.as_bytes(), 24, |key, _| {
        out.push(manifest_index(key))
    })?;
    Ok(out)
}

fn manifest_index(key: &[u8]) -> OplogIndex {
    u64::from_be_bytes(key[16..].try_into().expect("24-byte manifest key"))
}

/// The hashes of every page stored for a worker.
pub fn stored_pages(storage: &Storage, uid: &Uuid) -> Result<HashSet<PageHash>> {
    let mut out = HashSet::new();
    storage.scan_prefix(
        storage.tables().snapshot_pages,
        uid.as_bytes(),
        48,
        |key, _| {
            out.insert(PageHash(key[16..].try_into().expect("48-byte page key")));
        },
    )?;
    Ok(out)
}

/// Bytes of every stored page of a worker.
pub fn stored_page_bytes(storage: &Storage, uid: &Uuid) -> Result<u64> {
    let mut total = 0u64;
    storage.scan_prefix(
        storage.tables().snapshot_pages,
        uid.as_bytes(),
        48,
        |_, value| total += value.len() as u64,
    )?;
    Ok(total)
}

/// Reads pages for a restore, decoding each straight out of LMDB's memory map. Each page read
/// opens its own (cheap) read transaction, so pages can be read from several threads.
pub struct PageReader<'s> {
    storage: &'s Storage,
    uid: Uuid,
}

impl<'s> PageReader<'s> {
    pub fn new(storage: &'s Storage, uid: Uuid) -> Self {
        PageReader { storage, uid }
    }

    /// Decodes a stored page straight from LMDB's map into `dst` (no intermediate copy).
    pub fn read_into(
        &self,
        hash: &PageHash,
        dst: &mut [u8],
    ) -> std::result::Result<(), SnapshotError> {
        let txn = self
            .storage
            .env()
            .begin_ro_txn()
            .map_err(|e| SnapshotError::Fetch {
                hash: *hash,
                detail: e.to_string(),
            })?;
        match txn.get(
            self.storage.tables().snapshot_pages,
            &page_key(&self.uid, hash),
        ) {
            Ok(bytes) => golemw_snapshot::page::decode_page_into(bytes, dst, hash),
            Err(lmdb::Error::NotFound) => Err(SnapshotError::MissingPage { hash: *hash }),
            Err(e) => Err(SnapshotError::Fetch {
                hash: *hash,
                detail: e.to_string(),
            }),
        }
    }
}

/// Deletes snapshots and collects pages that no remaining manifest references. `drop` picks the
/// manifests to delete by oplog index.
pub fn delete_where(
    storage: &Storage,
    uid: &Uuid,
    drop: impl Fn(OplogIndex) -> bool,
) -> Result<usize> {
    let snapshots = list(storage, uid)?;
    let (dropped, kept): (Vec<_>, Vec<_>) = snapshots.into_iter().partition(|s| drop(s.index));
    if dropped.is_empty() {
        return Ok(0);
    }
    let referenced: HashSet<PageHash> = kept
        .iter()
        .filter_map(|s| s.manifest.as_ref().ok())
        .flat_map(|m| m.page_hashes())
        .collect();
    let unreferenced: Vec<PageHash> = stored_pages(storage, uid)?
        .into_iter()
        .filter(|h| !referenced.contains(h))
        .collect();
    let tables = storage.tables();
    storage.write(|txn| {
        for s in &dropped {
            txn.del(tables.snapshots, &manifest_key(uid, s.index), None)?;
        }
        for hash in &unreferenced {
            txn.del(tables.snapshot_pages, &page_key(uid, hash), None)?;
        }
        Ok(())
    })?;
    Ok(dropped.len())
}

/// Deletes every snapshot and page of a worker inside a transaction.
pub fn delete_all(txn: &mut lmdb::RwTransaction<'_>, storage: &Storage, uid: &Uuid) -> Result<()> {
    crate::storage::delete_prefix(txn, storage.tables().snapshots, uid.as_bytes())?;
    crate::storage::delete_prefix(txn, storage.tables().snapshot_pages, uid.as_bytes())?;
    Ok(())
}

impl From<SnapshotError> for Error {
    fn from(err: SnapshotError) -> Self {
        Error::Corrupt {
            what: "snapshot".into(),
            detail: err.to_string(),
        }
    }
}

/// When to take a snapshot, at idle points (after an invocation completed and committed).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Policy {
    /// Never: recovery always replays the whole oplog.
    Off,
    /// After every N completed invocations.
    Invocations(u64),
    /// Once at least N oplog entries were written since the last snapshot.
    Entries(u64),
    /// Once at least N seconds passed since the last snapshot.
    Seconds(u64),
}

impl Default for Policy {
    /// See docs/architecture.md ("Snapshot policy") for the measurements behind the default.
    fn default() -> Self {
        Policy::Entries(DEFAULT_SNAPSHOT_ENTRIES)
    }
}

/// Default `entries:N`: a snapshot once the tail to replay reaches this many entries.
pub const DEFAULT_SNAPSHOT_ENTRIES: u64 = 1000;
/// Snapshots kept per worker by default; older ones are pruned with their unshared pages.
pub const DEFAULT_SNAPSHOTS_KEEP: usize = 4;

impl std::fmt::Display for Policy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Policy::Off => f.write_str("off"),
            Policy::Invocations(n) => write!(f, "invocations:{n}"),
            Policy::Entries(n) => write!(f, "entries:{n}"),
            Policy::Seconds(n) => write!(f, "seconds:{n}"),
        }
    }
}

impl std::str::FromStr for Policy {
    type Err = String;

    fn from_str(text: &str) -> std::result::Result<Self, String> {
        let usage = || {
            format!(
                "invalid snapshot policy {text:?}: expected off, invocations:N, entries:N or seconds:N (N >= 1)"
            )
        };
        if text == "off" {
            return Ok(Policy::Off);
        }
        let (kind, n) = text.split_once(':').ok_or_else(usage)?;
        let n: u64 = n.parse().map_err(|_| usage())?;
        if n == 0 {
            return Err(usage());
        }
        match kind {
            "invocations" => Ok(Policy::Invocations(n)),
            "entries" => Ok(Policy::Entries(n)),
            "seconds" => Ok(Policy::Seconds(n)),
            _ => Err(usage()),
        }
    }
}

impl Policy {
    /// Whether a snapshot is due, given what happened since the last one.
    pub fn due(&self, invocations: u64, entries: u64, elapsed: std::time::Duration) -> bool {
        match *self {
            Policy::Off => false,
            Policy::Invocations(n) => invocations >= n,
            Policy::Entries(n) => entries >= n,
            Policy::Seconds(n) => invocations > 0 && elapsed.as_secs() >= n,
        }
    }
}

/// Memory below which a worker keeps no image file: restoring a few MiB by copying takes about a
/// millisecond, not worth a file per worker.
pub const DEFAULT_IMAGE_MIN_BYTES: u64 = 4 << 20;

/// Where a worker's memory image lives (see [`golemw_snapshot::image`]): a cache of its latest
/// snapshot's memory next to the LMDB environment, checked against the snapshot when used.
pub fn image_path(storage: &Storage, uid: &Uuid) -> std::path::PathBuf {
    storage.dir().join("images").join(format!("{uid}.mem"))
}

/// Opens a worker's image; `None` if it has none. With `create`, a new empty image replaces any
/// file there (see [`golemw_snapshot::MemoryImage::create`]).
pub fn open_image(
    storage: &Storage,
    uid: &Uuid,
    create: bool,
) -> Result<Option<golemw_snapshot::MemoryImage>> {
    let path = image_path(storage, uid);
    if !create {
        return golemw_snapshot::MemoryImage::open(&path).map_err(|e| Error::io(&path, e));
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    golemw_snapshot::MemoryImage::create(&path)
        .map(Some)
        .map_err(|e| Error::io(&path, e))
}

/// Removes a worker's image, if it has one (and one a crash left half made).
pub fn delete_image(storage: &Storage, uid: &Uuid) -> Result<()> {
    let path = image_path(storage, uid);
    golemw_snapshot::MemoryImage::remove(&path).map_err(|e| Error::io(&path, e))
}

/// Removes the images of workers that no longer exist: a crash between a worker's deletion
/// (committed) and the unlink of its image leaves its file behind. Called when a data directory
/// is opened, before any worker is in memory. Returns how many workers' images were removed.
pub fn remove_orphan_images(storage: &Storage) -> Result<usize> {
    let dir = storage.dir().join("images");
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(err) => return Err(Error::io(&dir, err)),
    };
    let mut orphans = std::collections::BTreeSet::new();
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(&dir, e))?;
        let name = entry.file_name();
        // `<uid>.mem`, or `<uid>.mem.new` (an image being replaced when the process stopped).
        let Some(uid) = name
            .to_str()
            .and_then(|n| n.strip_suffix(".new").or(Some(n)))
            .and_then(|n| n.strip_suffix(".mem"))
            .and_then(|n| Uuid::parse_str(n).ok())
        else {
            continue;
        };
        // Every stored worker has its `create` entry; a deleted one has no oplog at all.
        if crate::oplog::store::last_index(storage, &uid)? == 0 {
            orphans.insert(uid);
        }
    }
    for uid in &orphans {
        tracing::info!(%uid, "removing the memory image of a deleted worker");
        delete_image(storage, uid)?;
    }
    Ok(orphans.len())
}

#[cfg(test)]
mod tests {
    use super::Policy;

    #[test]
    fn policies_parse_and_print() {
        for text in ["off", "invocations:3", "entries:1000", "seconds:60"] {
            assert_eq!(text.parse::<Policy>().unwrap().to_string(), text);
        }
        for bad in [
            "",
            "on",
            "entries",
            "entries:",
            "entries:0",
            "entries:-1",
            "minutes:5",
        ] {
            assert!(bad.parse::<Policy>().is_err(), "{bad}");
        }
    }
}
