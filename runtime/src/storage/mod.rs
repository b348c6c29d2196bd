//! One LMDB environment per data directory, with a named database per kind of record.
//!
//! Writes go through [`Storage::write`], which grows the map instead of failing when it is full.
//! Every commit reaches the OS page cache (so a killed process loses nothing). For power
//! failures the environment is opened with `NO_META_SYNC`: each commit fsyncs its data pages
//! *before* writing the meta page that points at them, so the file on disk is always a valid
//! database, and [`Storage::sync`] fsyncs the meta page too where durability is promised
//! (invocation completion, `oplog-commit`, idempotency keys). (`NO_SYNC` with an fsync after
//! the commit would save one fsync, but flushes the meta page and its data unordered: a power
//! failure during that flush can leave a meta page pointing at pages never written.)

pub mod codec;
mod group_commit;

pub use group_commit::{WriteOp, BATCH_WRITES_MAX};

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use lmdb::{Database, DatabaseFlags, Environment, EnvironmentFlags, RwTransaction, Transaction};

use crate::error::{Error, Result};

/// Initial map size. LMDB reserves address space, not disk, so this costs nothing up front.
const MAP_SIZE_INITIAL_BYTES: usize = 1 << 30;
/// Upper bound when growing the map; past it a write fails with a clear "storage full" error.
const MAP_SIZE_MAX_BYTES: usize = 1 << 40;
/// Named databases in the environment (see [`Tables`]), with room to add more.
const DATABASES_MAX: u32 = 32;

/// The named databases.
#[derive(Clone, Copy, Debug)]
pub struct Tables {
    /// `uuid ++ version(BE)` -> component version record.
    pub components: Database,
    /// component name -> uuid.
    pub component_names: Database,
    /// `uuid ++ version(BE)` -> sealed zstd-compressed wasm.
    pub component_wasm: Database,
    /// worker key (uuid ++ name) -> worker record.
    pub workers: Database,
    /// `worker uid ++ last index(BE)` -> oplog block.
    pub oplog: Database,
    /// `worker uid ++ idempotency key` -> completed invocation result.
    pub invocations: Database,
    /// `worker uid ++ oplog index(BE)` -> snapshot manifest.
    pub snapshots: Database,
    /// `worker uid ++ page hash` -> encoded snapshot page.
    pub snapshot_pages: Database,
    /// `owner worker uid ++ oplog index(BE)` -> promise record (see `crate::promises`).
    pub promises: Database,
    /// `worker uid` -> the promise a suspended worker awaits.
    pub suspensions: Database,
    /// `worker uid` -> when a worker suspended by a long sleep is due, and its invocation.
    pub sleeps: Database,
    /// `worker uid ++ sequence (BE)` -> an invocation queued for the worker (`invoke` without
    /// waiting), until it has run.
    pub queue: Database,
    /// Workers whose snapshot pages are shared with forks (see `crate::snapshots`):
    /// `worker uid` -> the page space its pages are stored under, and
    /// `space uid ++ member uid` -> (), the workers sharing a space.
    pub page_spaces: Database,
    /// `worker uid` -> where a fork's history came from (see `crate::forks`).
    pub forks: Database,
    /// `bucket length ++ bucket ++ key` -> a `wasi:keyvalue` value (see `crate::keyvalue`).
    pub keyvalue: Database,
    /// container name -> a `wasi:blobstore` container (see `crate::blobstore`).
    pub blob_containers: Database,
    /// `container length ++ container ++ object` -> a `wasi:blobstore` object.
    pub blob_objects: Database,
}

impl Tables {
    /// Every table, each from `table(name)` (created or opened).
    fn each(mut table: impl FnMut(&str) -> Result<Database>) -> Result<Tables> {
        Ok(Tables {
            components: table("components")?,
            component_names: table("component_names")?,
            component_wasm: table("component_wasm")?,
            workers: table("workers")?,
            oplog: table("oplog")?,
            invocations: table("invocations")?,
            snapshots: table("snapshots")?,
            snapshot_pages: table("snapshot_pages")?,
            promises: table("promises")?,
            suspensions: table("suspensions")?,
            sleeps: table("sleeps")?,
            queue: table("queue")?,
            page_spaces: table("page_spaces")?,
            forks: table("forks")?,
            keyvalue: table("keyvalue")?,
            blob_containers: table("blob_containers")?,
            blob_objects: table("blob_objects")?,
        })
    }
}

/// The storage of one data directory. Holds the directory's lock while alive.
pub struct Storage {
    env: Environment,
    tables: Tables,
    dir: PathBuf,
    /// Whether [`Storage::sync`] fsyncs (off only for benchmarks of batched commits).
    fsync: bool,
    /// Write transactions committed, and [`Storage::sync`] calls that fsynced: with fsync on,
    /// each commit fsyncs its data once and each sync the meta page once.
    commits: AtomicU64,
    syncs: AtomicU64,
    /// Writes committed through [`Storage::commit`] (several per commit when they meet).
    grouped_writes: AtomicU64,
    /// Where concurrent [`Storage::commit`] calls meet.
    group: group_commit::GroupCommit,
    /// The LMDB map grows up to this many bytes ([`Storage::set_map_limit`]).
    map_limit: usize,
    /// The data directory's lock (`None` for a read-only view, which takes none).
    _lock: Option<File>,
}

/// How many commits and syncs a [`Storage`] has made since it was opened.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IoCounts {
    pub commits: u64,
    pub syncs: u64,
    /// Writes made through [`Storage::commit`]; over the commits they took, the batch size.
    pub grouped_writes: u64,
}

impl Storage {
    fn with(env: Environment, tables: Tables, dir: &Path, lock: Option<File>) -> Self {
        Storage {
            env,
            tables,
            dir: dir.to_path_buf(),
            fsync: true,
            commits: AtomicU64::new(0),
            syncs: AtomicU64::new(0),
            grouped_writes: AtomicU64::new(0),
            group: group_commit::GroupCommit::default(),
            map_limit: MAP_SIZE_MAX_BYTES,
            _lock: lock,
        }
    }

    /// Opens (creating if needed) the data directory `dir` and takes its lock.
    pub fn open(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let lock = take_lock(dir)?;
        let db_dir = dir.join("lmdb");
        std::fs::create_dir_all(&db_dir).map_err(|e| Error::io(&db_dir, e))?;
        // Reopening with a smaller map size than the file keeps the file's size (LMDB picks the
        // larger), so the initial size is only a floor.
        let env = Environment::new()
            .set_max_dbs(DATABASES_MAX)
            .set_map_size(MAP_SIZE_INITIAL_BYTES)
            .set_flags(EnvironmentFlags::NO_META_SYNC | EnvironmentFlags::NO_TLS)
            .open(&db_dir)
            .map_err(|e| Error::Storage(format!("opening LMDB in {}: {e}", db_dir.display())))?;
        let create = |name: &str| Ok(env.create_db(Some(name), DatabaseFlags::empty())?);
        let tables = Tables::each(create)?;
        Ok(Storage::with(env, tables, dir, Some(lock)))
    }

    /// Opens the data directory `dir` for reading only, without its lock: LMDB lets readers in
    /// other processes read beside the one that writes (a running server), each seeing a
    /// consistent state. For `golemw check` and `golemw backup`.
    pub fn open_read_only(dir: &Path) -> Result<Self> {
        let db_dir = dir.join("lmdb");
        if !db_dir.join("data.mdb").is_file() {
            return Err(Error::Storage(format!(
                "{} is not a golemw data directory (it has no lmdb/data.mdb)",
                dir.display()
            )));
        }
        let env = Environment::new()
            .set_max_dbs(DATABASES_MAX)
            .set_flags(EnvironmentFlags::READ_ONLY | EnvironmentFlags::NO_TLS)
            .open(&db_dir)
            .map_err(|e| Error::Storage(format!("opening LMDB in {}: {e}", db_dir.display())))?;
        let open = |name: &str| {
            env.open_db(Some(name)).map_err(|e| match e {
                // Tables are created when a directory is opened for writing: one last written
                // by an older golemw lacks the newer ones, and read-only cannot add them.
                lmdb::Error::NotFound => Error::Storage(format!(
                    "{}: it has no table {name}: it was last written by an older golemw; any \
                     command of this one that writes to it (`golemw component list` will do) \
                     adds the table, then try again",
                    db_dir.display()
                )),
                e => Error::Storage(format!(
                    "{}: table {name} cannot be opened: {e}",
                    db_dir.display()
                )),
            })
        };
        let tables = Tables::each(open)?;
        Ok(Storage::with(env, tables, dir, None))
    }

    /// Every key and value of a table, in key order.
    pub fn scan_all(&self, db: Database, mut visit: impl FnMut(&[u8], &[u8])) -> Result<()> {
        use lmdb::Cursor;
        let txn = self.env.begin_ro_txn()?;
        let mut cursor = txn.open_ro_cursor(db)?;
        for item in cursor.iter_start() {
            let (key, value) = item?;
            visit(key, value);
        }
        Ok(())
    }

    /// Writes a consistent, compacted copy of the database into `to` (a new or empty
    /// directory), as of one read transaction: what `golemw backup` makes. The copy is a data
    /// directory of its own (memory images and the compiled-module cache are rebuilt there).
    pub fn copy_to(&self, to: &Path) -> Result<u64> {
        if to.exists()
            && std::fs::read_dir(to)
                .map_err(|e| Error::io(to, e))?
                .next()
                .is_some()
        {
            return Err(Error::Storage(format!(
                "{} is not empty; a backup goes into a new or empty directory",
                to.display()
            )));
        }
        let db_dir = to.join("lmdb");
        std::fs::create_dir_all(&db_dir).map_err(|e| Error::io(&db_dir, e))?;
        let path = std::ffi::CString::new(db_dir.as_os_str().as_encoded_bytes())
            .map_err(|_| Error::Storage(format!("{} has a NUL byte", db_dir.display())))?;
        // SAFETY: the environment is open for as long as `self`; the path is a valid C string.
        let rc = unsafe {
            lmdb_sys::mdb_env_copy2(self.env.env(), path.as_ptr(), lmdb_sys::MDB_CP_COMPACT)
        };
        if rc != 0 {
            return Err(Error::Storage(format!(
                "copying the database to {}: {}",
                db_dir.display(),
                lmdb::Error::from_err_code(rc)
            )));
        }
        let file = db_dir.join("data.mdb");
        let bytes = std::fs::metadata(&file)
            .map_err(|e| Error::io(&file, e))?
            .len();
        // The copy is complete on disk before it is reported made.
        std::fs::File::open(&file)
            .and_then(|f| f.sync_all())
            .map_err(|e| Error::io(&file, e))?;
        Ok(bytes)
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The named databases.
    pub fn tables(&self) -> Tables {
        self.tables
    }

    /// The LMDB environment, for read transactions.
    pub fn env(&self) -> &Environment {
        &self.env
    }

    /// Runs `body` in one write transaction and commits it. If the map is full, the transaction
    /// is aborted, the map doubled, and `body` run again: it must be safe to repeat.
    pub fn write<T>(&self, mut body: impl FnMut(&mut RwTransaction<'_>) -> Result<T>) -> Result<T> {
        /// 2^10 (1 GiB) doubled 10 times reaches MAP_SIZE_MAX_BYTES (1 TiB).
        const GROW_ATTEMPTS_MAX: usize = 11;
        for _ in 0..GROW_ATTEMPTS_MAX {
            let mut txn = self.env.begin_rw_txn()?;
            let outcome = body(&mut txn);
            let outcome = match outcome {
                Ok(value) => {
                    let committed = txn.commit().map(|()| value).map_err(|e| self.lmdb_error(e));
                    if committed.is_ok() {
                        self.commits.fetch_add(1, Ordering::Relaxed);
                    }
                    committed
                }
                Err(err) => {
                    txn.abort();
                    Err(err)
                }
            };
            match outcome {
                Err(Error::MapFull) => self.grow_map()?,
                other => return other.map_err(|err| self.with_dir(err)),
            }
        }
        Err(Error::Storage(
            "the LMDB map stayed full after growing; the disk may be full".into(),
        ))
    }

    /// Commits `op` together with the writes other threads are committing at the same moment
    /// (group commit, see [`group_commit`]): one transaction and, when any of them is
    /// `durable`, one [`Storage::sync`] for all. Returns once `op` is committed (and durable,
    /// if asked) or failed; a failed `op` leaves nothing in storage. `op` may run more than
    /// once (a batch is applied again without a write that failed, or after the map grew).
    pub fn commit(&self, op: WriteOp, durable: bool) -> Result<()> {
        self.group.submit(op, durable, &mut |ops, durable| {
            self.apply_batch(ops, durable)
        })
    }

    /// Applies a batch of writes in one transaction (see [`Storage::commit`]). A write that
    /// fails is dropped and the rest applied again in a fresh transaction, so that it leaves
    /// no trace; a failed commit or sync fails every write of the batch.
    fn apply_batch(&self, ops: &mut [WriteOp], durable: bool) -> Vec<Result<()>> {
        let mut results: Vec<Option<Result<()>>> = (0..ops.len()).map(|_| None).collect();
        let committed = loop {
            let pending: Vec<usize> = (0..ops.len()).filter(|&i| results[i].is_none()).collect();
            if pending.is_empty() {
                break Ok(0);
            }
            let mut failed: Option<(usize, Error)> = None;
            let attempt = self.write(|txn| {
                for &i in &pending {
                    match ops[i](txn) {
                        Ok(()) => {}
                        // The map grows and the whole batch is applied again.
                        Err(Error::MapFull) => return Err(Error::MapFull),
                        Err(err) => {
                            failed = Some((i, err));
                            return Err(Error::Storage("a write of the batch failed".into()));
                        }
                    }
                }
                Ok(pending.len())
            });
            match (attempt, failed.take()) {
                // Aborted: the failed write is answered, the others are applied again.
                (Err(_), Some((i, err))) => results[i] = Some(Err(err)),
                (Ok(count), _) => break Ok(count),
                (Err(err), None) => break Err(err),
            }
        };
        let outcome = committed.and_then(|count| {
            self.grouped_writes
                .fetch_add(count as u64, Ordering::Relaxed);
            crate::metrics::get().group_commit(count);
            match durable && count > 0 {
                true => self.sync(),
                false => Ok(()),
            }
        });
        results
            .into_iter()
            .map(|result| match (result, &outcome) {
                (Some(failed), _) => failed,
                (None, Ok(())) => Ok(()),
                (None, Err(err)) => Err(group_commit::copy_error(err)),
            })
            .collect()
    }

    /// Caps the storage at `bytes` (at least 1 MiB): past it, writes fail with
    /// [`Error::StorageLimit`] and leave nothing, as on a full disk. The map shrinks to the cap
    /// if it is larger and the data allow (LMDB keeps at least the file's size).
    pub fn set_map_limit(&mut self, bytes: usize) -> Result<()> {
        let bytes = bytes.max(1 << 20);
        self.map_limit = bytes;
        if self.env.info()?.map_size() > bytes {
            self.env.set_map_size(bytes)?;
        }
        Ok(())
    }

    fn grow_map(&self) -> Result<()> {
        let info = self.env.info()?;
        let current = info.map_size();
        if current >= self.map_limit {
            return Err(Error::StorageLimit {
                dir: self.dir.display().to_string(),
                limit_bytes: self.map_limit as u64,
            });
        }
        let next = (current * 2).min(self.map_limit);
        tracing::info!(from = current, to = next, "growing the LMDB map");
        self.env.set_map_size(next)?;
        Ok(())
    }

    /// Off: no fsync at all (LMDB's `NO_SYNC`), and [`Storage::sync`] does nothing. Commits
    /// still reach the OS (a killed process loses nothing), but a power failure may lose the
    /// last ones or, as the meta page may then reach the disk before its data, leave the
    /// database unreadable. For batched commits where the machine's uptime is trusted.
    pub fn set_fsync(&mut self, fsync: bool) -> Result<()> {
        // SAFETY: the environment is open for as long as `self`; `&mut self` means no
        // transaction of ours is running; NO_SYNC is one of the flags LMDB lets an open
        // environment change.
        let rc = unsafe {
            lmdb_sys::mdb_env_set_flags(self.env.env(), lmdb_sys::MDB_NOSYNC, i32::from(!fsync))
        };
        if rc != 0 {
            return Err(Error::Storage(format!(
                "setting LMDB's sync mode: {}",
                lmdb::Error::from_err_code(rc)
            )));
        }
        self.fsync = fsync;
        Ok(())
    }

    /// Makes committed transactions durable: their data is on disk already (each commit
    /// fsyncs it), this fsyncs the newest meta page.
    pub fn sync(&self) -> Result<()> {
        if !self.fsync {
            return Ok(());
        }
        self.env.sync(true).map_err(|e| match self.lmdb_error(e) {
            err @ Error::StorageFull { .. } => self.with_dir(err),
            err => Error::Storage(format!("fsync of the oplog failed: {err}")),
        })?;
        self.syncs.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// LMDB reports a short write, what a disk that fills mid-commit gives, as EIO: that is
    /// a full disk when the file system says it has (next to) no room left.
    fn lmdb_error(&self, err: lmdb::Error) -> Error {
        if err == lmdb::Error::Other(libc::EIO) {
            let path = std::ffi::CString::new(self.dir.as_os_str().as_encoded_bytes()).ok();
            // SAFETY: statvfs is plain data; all zeros is a valid value.
            let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
            // SAFETY: a valid C string and a statvfs to fill.
            let ok = path.is_some_and(|p| unsafe { libc::statvfs(p.as_ptr(), &mut stat) } == 0);
            // "Next to no room": less than a large commit's worth (the short write may have
            // been the one that used up the rest).
            if ok && (stat.f_bavail as u64) * (stat.f_frsize as u64) < (64 << 20) {
                return Error::StorageFull {
                    dir: String::new(),
                    detail: format!("{err} (a short write: the disk is full)"),
                };
            }
        }
        Error::from(err)
    }

    /// Names the data directory in a "disk full" error.
    fn with_dir(&self, err: Error) -> Error {
        match err {
            Error::StorageFull { dir, detail } if dir.is_empty() => Error::StorageFull {
                dir: self.dir.display().to_string(),
                detail,
            },
            other => other,
        }
    }

    /// Commits and syncs so far (what a durable operation costs in fsyncs, for tests and the
    /// benchmarks).
    pub fn io_counts(&self) -> IoCounts {
        IoCounts {
            commits: self.commits.load(Ordering::Relaxed),
            syncs: self.syncs.load(Ordering::Relaxed),
            grouped_writes: self.grouped_writes.load(Ordering::Relaxed),
        }
    }

    /// Calls `visit(key, value)` for every key of `db` that starts with `prefix` and is
    /// `key_len` bytes long, in key order, stopping at the first that is not.
    pub fn scan_prefix(
        &self,
        db: Database,
        prefix: &[u8],
        key_len: usize,
        mut visit: impl FnMut(&[u8], &[u8]),
    ) -> Result<()> {
        use lmdb::Cursor;
        let txn = self.env.begin_ro_txn()?;
        let mut cursor = txn.open_ro_cursor(db)?;
        for item in cursor.iter_from(prefix) {
            let (key, value) = item?;
            if key.len() != key_len || !key.starts_with(prefix) {
                break;
            }
            visit(key, value);
        }
        Ok(())
    }

    /// Reads one value by key.
    pub fn get(&self, db: Database, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let txn = self.env.begin_ro_txn()?;
        match txn.get(db, &key) {
            Ok(bytes) => Ok(Some(bytes.to_vec())),
            Err(lmdb::Error::NotFound) => Ok(None),
            Err(err) => Err(err.into()),
        }
    }
}

/// Takes the data directory's lock file, writing our pid into it for the error message of the
/// next process that tries.
fn take_lock(dir: &Path) -> Result<File> {
    let path = dir.join("LOCK");
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| Error::io(&path, e))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let pid = std::fs::read_to_string(&path).unwrap_or_default();
            return Err(Error::DataDirLocked {
                path: dir.display().to_string(),
                pid: pid.trim().to_string(),
            });
        }
        Err(std::fs::TryLockError::Error(e)) => return Err(Error::io(&path, e)),
    }
    file.set_len(0).map_err(|e| Error::io(&path, e))?;
    write!(file, "{}", std::process::id()).map_err(|e| Error::io(&path, e))?;
    Ok(file)
}

/// Deletes every key of `db` that starts with `prefix` and sorts at or after `from`.
pub fn delete_range(
    txn: &mut RwTransaction<'_>,
    db: Database,
    prefix: &[u8],
    from: &[u8],
) -> Result<usize> {
    use lmdb::Cursor;
    let keys: Vec<Vec<u8>> = {
        let mut cursor = txn.open_ro_cursor(db)?;
        let mut keys = Vec::new();
        for item in cursor.iter_from(from) {
            let (key, _) = item?;
            if !key.starts_with(prefix) {
                break;
            }
            keys.push(key.to_vec());
        }
        keys
    };
    for key in &keys {
        txn.del(db, key, None)?;
    }
    Ok(keys.len())
}

/// Deletes every key of `db` that starts with `prefix`.
pub fn delete_prefix(txn: &mut RwTransaction<'_>, db: Database, prefix: &[u8]) -> Result<usize> {
    delete_range(txn, db, prefix, prefix)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags(storage: &Storage) -> u32 {
        let mut flags = 0;
        // SAFETY: the environment is open; LMDB writes the flags into `flags`.
        let rc = unsafe { lmdb_sys::mdb_env_get_flags(storage.env.env(), &mut flags) };
        assert_eq!(rc, 0);
        flags
    }

    #[test]
    fn durable_storage_syncs_data_before_the_meta_page_and_batched_storage_does_not_sync() {
        let dir = tempfile::tempdir().unwrap();
        let mut storage = Storage::open(dir.path()).unwrap();
        // Each commit fsyncs its data before its meta page is written (never NO_SYNC, which
        // would let the meta page reach the disk first).
        assert_ne!(flags(&storage) & lmdb_sys::MDB_NOMETASYNC, 0);
        assert_eq!(flags(&storage) & lmdb_sys::MDB_NOSYNC, 0);
        storage.set_fsync(false).unwrap();
        assert_ne!(flags(&storage) & lmdb_sys::MDB_NOSYNC, 0);
        storage.set_fsync(true).unwrap();
        assert_eq!(flags(&storage) & lmdb_sys::MDB_NOSYNC, 0);
        // And the data survives a reopen either way.
        let db = storage.tables().workers;
        storage
            .write(|txn| Ok(txn.put(db, b"k", b"v", lmdb::WriteFlags::empty())?))
            .unwrap();
        storage.sync().unwrap();
        drop(storage);
        let storage = Storage::open(dir.path()).unwrap();
        let txn = storage.env().begin_ro_txn().unwrap();
        assert_eq!(txn.get(storage.tables().workers, b"k").unwrap(), b"v");
    }
}
