//! Snapshot storage in LMDB: manifests keyed by worker and oplog index, pages keyed by *page
//! space* and content hash.
//!
//! A worker's page space is its own uid until it is forked: a fork gets copies of its source's
//! manifests and shares the source's space, so forking copies no page. Collecting the pages no
//! manifest references then needs the manifests of every worker in the space, read inside the
//! transaction that deletes (so that a concurrent capture or fork in the same space cannot be
//! missed); a worker nobody forked collects with its own manifests only, as before.
//!
//! ```text
//! snapshots:      worker uid (16) ++ oplog index (8, BE)  -> manifest
//! snapshot_pages: space uid (16) ++ BLAKE3 (32)          -> encoded page
//! page_spaces:    worker uid (16)                         -> SpaceRow (its space), only when shared
//!                 space uid (16) ++ member uid (16)       -> () for every worker sharing it
//! ```

use std::collections::HashSet;

use golemw_snapshot::{Capture, Manifest, PageHash, SnapshotError};
use lmdb::{Cursor, Transaction, WriteFlags};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::{Error, Result};
use crate::ids::OplogIndex;
use crate::storage::{codec, Storage, Tables};

fn manifest_key(uid: &Uuid, index: OplogIndex) -> [u8; 24] {
    let mut key = [0u8; 24];
    key[..16].copy_from_slice(uid.as_bytes());
    key[16..].copy_from_slice(&index.to_be_bytes());
    key
}

fn page_key(space: &Uuid, hash: &PageHash) -> [u8; 48] {
    let mut key = [0u8; 48];
    key[..16].copy_from_slice(space.as_bytes());
    key[16..].copy_from_slice(&hash.0);
    key
}

fn member_key(space: &Uuid, member: &Uuid) -> [u8; 32] {
    let mut key = [0u8; 32];
    key[..16].copy_from_slice(space.as_bytes());
    key[16..].copy_from_slice(member.as_bytes());
    key
}

/// The page space of a worker whose pages are shared (the row under its uid).
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub struct SpaceRow {
    /// The uid the shared pages are stored under (the first source's).
    pub space: Uuid,
}

/// The page space of `uid` as `txn` sees it, and whether other workers share it.
fn space_in(txn: &impl Transaction, tables: &Tables, uid: &Uuid) -> Result<(Uuid, bool)> {
    match txn.get(tables.page_spaces, &uid.as_bytes()) {
        Ok(bytes) => {
            let row: SpaceRow = codec::decode(bytes, &format!("page space of worker {uid}"))?;
            Ok((row.space, true))
        }
        Err(lmdb::Error::NotFound) => Ok((*uid, false)),
        Err(err) => Err(err.into()),
    }
}

/// The uid the pages of worker `uid` are stored under: its own, or the one it shares with the
/// workers it was forked from or into.
pub fn page_space(storage: &Storage, uid: &Uuid) -> Result<Uuid> {
    let txn = storage.env().begin_ro_txn()?;
    Ok(space_in(&txn, &storage.tables(), uid)?.0)
}

/// The workers sharing the page space `space`, as `txn` sees them.
fn members_in(txn: &impl Transaction, tables: &Tables, space: &Uuid) -> Result<Vec<Uuid>> {
    let mut cursor = txn.open_ro_cursor(tables.page_spaces)?;
    let mut out = Vec::new();
    for item in cursor.iter_from(space.as_bytes()) {
        let (key, _) = item?;
        if !key.starts_with(space.as_bytes()) {
            break;
        }
        // The 16-byte row of the space's own worker sorts first; members are 32 bytes.
        if let Ok(member) = Uuid::from_slice(&key[16.min(key.len())..]) {
            out.push(member);
        }
    }
    Ok(out)
}

/// Every page hash referenced by a decodable manifest of `uid`, as `txn` sees them.
fn referenced_in(
    txn: &impl Transaction,
    tables: &Tables,
    uid: &Uuid,
    into: &mut HashSet<PageHash>,
) -> Result<()> {
    let mut cursor = txn.open_ro_cursor(tables.snapshots)?;
    for item in cursor.iter_from(uid.as_bytes()) {
        let (key, value) = item?;
        if key.len() != 24 || !key.starts_with(uid.as_bytes()) {
            break;
        }
        if let Ok(manifest) = Manifest::decode(value) {
            into.extend(manifest.page_hashes());
        }
    }
    Ok(())
}

/// The pages stored in `space`, as `txn` sees them.
fn pages_in(txn: &impl Transaction, tables: &Tables, space: &Uuid) -> Result<Vec<PageHash>> {
    let mut cursor = txn.open_ro_cursor(tables.snapshot_pages)?;
    let mut out = Vec::new();
    for item in cursor.iter_from(space.as_bytes()) {
        let (key, _) = item?;
        if key.len() != 48 || !key.starts_with(space.as_bytes()) {
            break;
        }
        out.push(PageHash(key[16..].try_into().expect("48-byte page key")));
    }
    Ok(out)
}

/// Deletes the pages of the shared `space` that no manifest of any of its members references
/// (read in `txn`, after the caller's deletions in it). Returns how many were deleted.
fn collect_shared(
    txn: &mut lmdb::RwTransaction<'_>,
    tables: &Tables,
    space: &Uuid,
) -> Result<usize> {
    let mut referenced = HashSet::new();
    for member in members_in(txn, tables, space)? {
        referenced_in(txn, tables, &member, &mut referenced)?;
    }
    let unreferenced: Vec<PageHash> = pages_in(txn, tables, space)?
        .into_iter()
        .filter(|h| !referenced.contains(h))
        .collect();
    for hash in &unreferenced {
        txn.del(tables.snapshot_pages, &page_key(space, hash), None)?;
    }
    Ok(unreferenced.len())
}

/// A stored manifest, or why it cannot be used.
pub struct StoredSnapshot {
    pub index: OplogIndex,
    /// Encoded size of the manifest.
    pub manifest_bytes: usize,
    pub manifest: std::result::Result<Manifest, SnapshotError>,
}

/// What [`put`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Put {
    Stored,
    /// Nothing was written: the worker shares its pages with forks, and this many pages the
    /// capture took as stored were collected meanwhile (another worker of the space dropped its
    /// last snapshot using them). Capture again with a fresh list of stored pages.
    MissingPages(usize),
}

/// Writes a capture: its new pages and its manifest in one transaction (all or nothing).
pub fn put(storage: &Storage, uid: &Uuid, capture: &Capture) -> Result<Put> {
    let tables = storage.tables();
    let manifest = capture.manifest.encode();
    let key = manifest_key(uid, capture.manifest.oplog_index);
    let mut missing = 0;
    let written = storage.write(|txn| {
        missing = 0;
        let (space, shared) = space_in(txn, &tables, uid)?;
        for (hash, bytes) in &capture.new_pages {
            txn.put(
                tables.snapshot_pages,
                &page_key(&space, hash),
                bytes,
                WriteFlags::empty(),
            )?;
        }
        if shared {
            // Pages the capture did not write because they were stored: other workers of the
            // space may have collected some since this worker last looked.
            let new: HashSet<&PageHash> = capture.new_pages.iter().map(|(h, _)| h).collect();
            for hash in capture.manifest.page_hashes() {
                if !new.contains(&hash) {
                    match txn.get(tables.snapshot_pages, &page_key(&space, &hash)) {
                        Ok(_) => {}
                        Err(lmdb::Error::NotFound) => missing += 1,
                        Err(err) => return Err(err.into()),
                    }
                }
            }
            if missing > 0 {
                return Err(Error::Storage(format!(
                    "{missing} shared pages were collected meanwhile"
                )));
            }
        }
        txn.put(tables.snapshots, &key, &manifest, WriteFlags::empty())?;
        Ok(())
    });
    match written {
        Err(_) if missing > 0 => return Ok(Put::MissingPages(missing)),
        other => other?,
    }
    storage.sync()?;
    Ok(Put::Stored)
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

/// The hashes of every page stored in a worker's page space (its own pages, and those it
/// shares with the workers it was forked from or into).
pub fn stored_pages(storage: &Storage, uid: &Uuid) -> Result<HashSet<PageHash>> {
    let txn = storage.env().begin_ro_txn()?;
    let tables = storage.tables();
    let (space, _) = space_in(&txn, &tables, uid)?;
    Ok(pages_in(&txn, &tables, &space)?.into_iter().collect())
}

/// Bytes of every page stored in a worker's page space (shared with its forks, if it has any:
/// see [`page_space`]).
pub fn stored_page_bytes(storage: &Storage, uid: &Uuid) -> Result<u64> {
    let space = page_space(storage, uid)?;
    let mut total = 0u64;
    storage.scan_prefix(
        storage.tables().snapshot_pages,
        space.as_bytes(),
        48,
        |_, value| total += value.len() as u64,
    )?;
    Ok(total)
}

/// Bytes of every stored page of every worker.
pub fn total_page_bytes(storage: &Storage) -> Result<u64> {
    let mut total = 0u64;
    storage.scan_all(storage.tables().snapshot_pages, |_, value| {
        total += value.len() as u64
    })?;
    Ok(total)
}

/// Reads pages for a restore, decoding each straight out of LMDB's memory map. Each page read
/// opens its own (cheap) read transaction, so pages can be read from several threads.
pub struct PageReader<'s> {
    storage: &'s Storage,
    /// The page space of the worker whose pages are read.
    space: Uuid,
}

impl<'s> PageReader<'s> {
    /// A reader of the pages of worker `uid` (in its page space).
    pub fn new(storage: &'s Storage, uid: Uuid) -> Result<Self> {
        Ok(PageReader {
            storage,
            space: page_space(storage, &uid)?,
        })
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
            &page_key(&self.space, hash),
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
    let tables = storage.tables();
    // A worker nobody forked is the only one to use its pages, and only it (in its turn) can
    // change its manifests or be forked: its collection is computed outside the transaction.
    let shared = space_in(&storage.env().begin_ro_txn()?, &tables, uid)?.1;
    let unshared = match !shared {
        true => {
            let referenced: HashSet<PageHash> = kept
                .iter()
                .filter_map(|s| s.manifest.as_ref().ok())
                .flat_map(|m| m.page_hashes())
                .collect();
            Some(
                stored_pages(storage, uid)?
                    .into_iter()
                    .filter(|h| !referenced.contains(h))
                    .collect::<Vec<_>>(),
            )
        }
        false => None,
    };
    storage.write(|txn| {
        for s in &dropped {
            txn.del(tables.snapshots, &manifest_key(uid, s.index), None)?;
        }
        match (&unshared, space_in(txn, &tables, uid)?) {
            (Some(unreferenced), (_, false)) => {
                for hash in unreferenced {
                    txn.del(tables.snapshot_pages, &page_key(uid, hash), None)?;
                }
            }
            // Shared (or became so): every member's manifests count.
            (_, (space, _)) => {
                collect_shared(txn, &tables, &space)?;
            }
        }
        Ok(())
    })?;
    Ok(dropped.len())
}

/// Deletes every snapshot of a worker inside a transaction, and the pages only it used: all of
/// its page space if it shared it with no one, else those no other member's manifest references.
pub fn delete_all(txn: &mut lmdb::RwTransaction<'_>, storage: &Storage, uid: &Uuid) -> Result<()> {
    let tables = storage.tables();
    crate::storage::delete_prefix(txn, tables.snapshots, uid.as_bytes())?;
    let (space, shared) = space_in(txn, &tables, uid)?;
    if !shared {
        crate::storage::delete_prefix(txn, tables.snapshot_pages, uid.as_bytes())?;
        return Ok(());
    }
    del_if_present(txn, tables.page_spaces, uid.as_bytes())?;
    del_if_present(txn, tables.page_spaces, &member_key(&space, uid))?;
    let members = members_in(txn, &tables, &space)?;
    match members.as_slice() {
        [] => {
            crate::storage::delete_prefix(txn, tables.snapshot_pages, space.as_bytes())?;
        }
        rest => {
            collect_shared(txn, &tables, &space)?;
            if rest == [space] {
                // Only the worker whose uid names the space is left: it shares with no one.
                del_if_present(txn, tables.page_spaces, space.as_bytes())?;
                del_if_present(txn, tables.page_spaces, &member_key(&space, &space))?;
            }
        }
    }
    Ok(())
}

fn del_if_present(txn: &mut lmdb::RwTransaction<'_>, db: lmdb::Database, key: &[u8]) -> Result<()> {
    match txn.del(db, &key, None) {
        Ok(()) | Err(lmdb::Error::NotFound) => Ok(()),
        Err(err) => Err(err.into()),
    }
}

/// Gives the new worker `fork` copies of the manifests of `source` at the indexes `keep`
/// accepts (those that decode), sharing `source`'s page space: no page is copied. Returns the
/// indexes copied. Inside the transaction that creates the fork.
pub fn share_with_fork(
    txn: &mut lmdb::RwTransaction<'_>,
    storage: &Storage,
    source: &Uuid,
    fork: &Uuid,
    keep: impl Fn(OplogIndex, &Manifest) -> bool,
) -> Result<Vec<OplogIndex>> {
    let tables = storage.tables();
    let manifests: Vec<(OplogIndex, Vec<u8>)> = {
        let mut cursor = txn.open_ro_cursor(tables.snapshots)?;
        let mut out = Vec::new();
        for item in cursor.iter_from(source.as_bytes()) {
            let (key, value) = item?;
            if key.len() != 24 || !key.starts_with(source.as_bytes()) {
                break;
            }
            let index = manifest_index(key);
            if Manifest::decode(value).is_ok_and(|m| keep(index, &m)) {
                out.push((index, value.to_vec()));
            }
        }
        out
    };
    if manifests.is_empty() {
        return Ok(Vec::new());
    }
    for (index, bytes) in &manifests {
        txn.put(
            tables.snapshots,
            &manifest_key(fork, *index),
            bytes,
            WriteFlags::NO_OVERWRITE,
        )?;
    }
    let (space, shared) = space_in(txn, &tables, source)?;
    let row = codec::encode(&SpaceRow { space });
    let join = |txn: &mut lmdb::RwTransaction<'_>, member: &Uuid| -> Result<()> {
        txn.put(
            tables.page_spaces,
            &member.as_bytes(),
            &row,
            WriteFlags::empty(),
        )?;
        txn.put(
            tables.page_spaces,
            &member_key(&space, member),
            &[],
            WriteFlags::empty(),
        )?;
        Ok(())
    };
    if !shared {
        join(txn, source)?;
    }
    join(txn, fork)?;
    Ok(manifests.into_iter().map(|(index, _)| index).collect())
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
    /// Once the guest time of the invocations since the last snapshot (what a restart would
    /// run again to replay them) reaches N milliseconds, and is more than the snapshot is
    /// expected to cost ([`SinceSnapshot::capture_us`]): a snapshot never costs more than the
    /// replay it saves.
    ReplayMs(u64),
}

impl Default for Policy {
    /// See docs/architecture.md ("Snapshot policy") for the measurements behind the default.
    fn default() -> Self {
        Policy::ReplayMs(DEFAULT_SNAPSHOT_REPLAY_MS)
    }
}

/// Default `replay-ms:N`: a snapshot once replaying the tail would take this long. A restart
/// is then a restore (about 10 ms for 64 MiB mapped from its image) plus at most this much
/// guest work, whatever the invocations cost; entry counts did not bound that (a tail of 500
/// heavy invocations fits in 1000 entries).
pub const DEFAULT_SNAPSHOT_REPLAY_MS: u64 = 50;

/// What happened since a worker's last snapshot (or its creation), for [`Policy::due`].
#[derive(Clone, Copy, Debug, Default)]
pub struct SinceSnapshot {
    /// Invocations, replayed ones included.
    pub invocations: u64,
    /// Oplog entries written.
    pub entries: u64,
    /// Wall-clock time.
    pub elapsed: std::time::Duration,
    /// Guest time of those invocations (their export calls, live or replayed), µs.
    pub replay_us: u64,
    /// What a snapshot now is expected to cost, µs: the last one's time plus the memory added
    /// since at [`CAPTURE_US_PER_KIB`] (every added page is new to storage).
    pub capture_us: u64,
}

/// What capturing a new page costs, µs per KiB: figure 6 of BENCHMARKS.md measures about 67 µs
/// per changed 64 KiB page (BLAKE3, a zstd attempt, CRC) on this project's reference machine.
pub const CAPTURE_US_PER_KIB: u64 = 1;
/// Snapshots kept per worker by default; older ones are pruned with their unshared pages.
pub const DEFAULT_SNAPSHOTS_KEEP: usize = 4;

impl std::fmt::Display for Policy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Policy::Off => f.write_str("off"),
            Policy::Invocations(n) => write!(f, "invocations:{n}"),
            Policy::Entries(n) => write!(f, "entries:{n}"),
            Policy::Seconds(n) => write!(f, "seconds:{n}"),
            Policy::ReplayMs(n) => write!(f, "replay-ms:{n}"),
        }
    }
}

impl std::str::FromStr for Policy {
    type Err = String;

    fn from_str(text: &str) -> std::result::Result<Self, String> {
        let usage = || {
            format!(
                "invalid snapshot policy {text:?}: expected off, invocations:N, entries:N, seconds:N or replay-ms:N (N >= 1)"
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
            "replay-ms" => Ok(Policy::ReplayMs(n)),
            _ => Err(usage()),
        }
    }
}

impl Policy {
    /// Whether a snapshot is due, given what happened since the last one.
    pub fn due(&self, since: &SinceSnapshot) -> bool {
        match *self {
            Policy::Off => false,
            Policy::Invocations(n) => since.invocations >= n,
            Policy::Entries(n) => since.entries >= n,
            Policy::Seconds(n) => since.invocations > 0 && since.elapsed.as_secs() >= n,
            Policy::ReplayMs(n) => {
                since.replay_us >= n.saturating_mul(1000) && since.replay_us >= since.capture_us
            }
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
    use super::SinceSnapshot;

    #[test]
    fn replay_ms_waits_while_a_snapshot_would_cost_more_than_the_replay_it_saves() {
        let policy: Policy = "replay-ms:50".parse().unwrap();
        let since = |replay_ms: u64, capture_ms: u64| SinceSnapshot {
            invocations: 1,
            replay_us: replay_ms * 1000,
            capture_us: capture_ms * 1000,
            ..SinceSnapshot::default()
        };
        assert!(!policy.due(&since(49, 0)), "under N");
        assert!(policy.due(&since(50, 10)), "N reached, cheap to capture");
        // A gigabyte just added (about a second to capture) against 250 ms of replay: later.
        assert!(!policy.due(&since(250, 1024)));
        assert!(policy.due(&since(1100, 1024)));
    }

    use super::Policy;

    #[test]
    fn policies_parse_and_print() {
        for text in [
            "off",
            "invocations:3",
            "entries:1000",
            "seconds:60",
            "replay-ms:50",
        ] {
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
