//! Hand-made inputs for the error-path tests: modules that are wrong in one specific way, and
//! storage edits that simulate what a broken update or a disk fault would leave behind.

use std::path::Path;

use golemw_runtime::storage::{codec, Storage};
use golemw_runtime::{WorkerId, WorkerRecord};
use wasm_encoder::{
    CustomSection, EntityType, ExportKind, ExportSection, FunctionSection, ImportSection,
    MemorySection, MemoryType, Module, TypeSection,
};

/// A memory section with one 64 KiB page, as every hand-made module here needs.
pub(crate) fn one_page_memory() -> MemorySection {
    let mut memories = MemorySection::new();
    memories.memory(MemoryType {
        minimum: 1,
        maximum: None,
        memory64: false,
        shared: false,
        page_size_log2: None,
    });
    memories
}

/// A valid core module with a memory and no `component-type` section.
pub fn module_without_component_type() -> Vec<u8> {
    let mut module = Module::new();
    module.section(&crate::fixtures::one_page_memory());
    let mut exports = ExportSection::new();
    exports.export("memory", ExportKind::Memory, 0);
    module.section(&exports);
    module.finish()
}

/// A module carrying `guest`'s `component-type` sections but importing `env.launch-missiles`,
/// which no runtime provides.
pub fn module_with_foreign_import(guest: &[u8]) -> Vec<u8> {
    let mut module = Module::new();
    let mut types = TypeSection::new();
    types.ty().function([], []);
    module.section(&types);
    let mut imports = ImportSection::new();
    imports.import("env", "launch-missiles", EntityType::Function(0));
    module.section(&imports);
    module.section(&FunctionSection::new());
    module.section(&crate::fixtures::one_page_memory());
    let mut exports = ExportSection::new();
    exports.export("memory", ExportKind::Memory, 0);
    module.section(&exports);
    for payload in wasmparser::Parser::new(0).parse_all(guest) {
        if let Ok(wasmparser::Payload::CustomSection(section)) = payload {
            if section.name().starts_with("component-type") {
                module.section(&CustomSection {
                    name: section.name().into(),
                    data: section.data().into(),
                });
            }
        }
    }
    module.finish()
}

/// Rewrites a worker's component version directly in storage (the executor must be closed).
pub fn set_worker_component_version(data_dir: &Path, id: &WorkerId, version: u64) {
    edit_worker_record(data_dir, id, |record| record.component_version = version);
}

/// Applies `edit` to a worker's stored record (the executor must be closed).
pub fn edit_worker_record(data_dir: &Path, id: &WorkerId, edit: impl FnOnce(&mut WorkerRecord)) {
    let storage = Storage::open(data_dir).expect("open storage");
    let db = storage.tables().workers;
    let key = id.storage_key();
    let bytes = storage
        .get(db, &key)
        .unwrap()
        .expect("worker record exists");
    let mut record: WorkerRecord = codec::decode(&bytes, "worker record").unwrap();
    edit(&mut record);
    let encoded = codec::encode(&record);
    storage
        .write(|txn| {
            txn.put(db, &key, &encoded, lmdb::WriteFlags::empty())?;
            Ok(())
        })
        .unwrap();
    storage.sync().unwrap();
}

/// Flips one byte in the middle of each stored page that the snapshot at `index` uses and no
/// older snapshot does. Returns how many pages were damaged.
pub fn corrupt_pages_of_snapshot(data_dir: &Path, uid: &uuid::Uuid, index: u64) -> usize {
    use golemw_runtime::snapshots;
    let storage = Storage::open(data_dir).expect("open storage");
    let list = snapshots::list(&storage, uid).unwrap();
    let target = list
        .iter()
        .find(|s| s.index == index)
        .expect("snapshot exists");
    let target_pages = target.manifest.as_ref().unwrap().page_hashes();
    let older: std::collections::HashSet<_> = list
        .iter()
        .filter(|s| s.index < index)
        .flat_map(|s| s.manifest.as_ref().unwrap().page_hashes())
        .collect();
    let db = storage.tables().snapshot_pages;
    let mut damaged = 0;
    for hash in target_pages.iter().filter(|h| !older.contains(h)) {
        let mut key = uid.as_bytes().to_vec();
        key.extend_from_slice(&hash.0);
        let mut bytes = storage.get(db, &key).unwrap().expect("page stored");
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0x5a;
        storage
            .write(|txn| Ok(txn.put(db, &key, &bytes, lmdb::WriteFlags::empty())?))
            .unwrap();
        damaged += 1;
    }
    storage.sync().unwrap();
    damaged
}

/// Flips one byte of the manifest of the snapshot at `index`.
pub fn corrupt_manifest(data_dir: &Path, uid: &uuid::Uuid, index: u64) {
    let storage = Storage::open(data_dir).expect("open storage");
    let db = storage.tables().snapshots;
    let mut key = uid.as_bytes().to_vec();
    key.extend_from_slice(&index.to_be_bytes());
    let mut bytes = storage.get(db, &key).unwrap().expect("manifest stored");
    let last = bytes.len() - 1;
    bytes[last] ^= 0x01;
    storage
        .write(|txn| Ok(txn.put(db, &key, &bytes, lmdb::WriteFlags::empty())?))
        .unwrap();
    storage.sync().unwrap();
}

/// Flips one byte in the middle of the oplog block that holds entry `index` of a worker.
pub fn corrupt_oplog_block(data_dir: &Path, uid: &uuid::Uuid, index: u64) {
    use lmdb::{Cursor, Transaction};
    let storage = Storage::open(data_dir).expect("open storage");
    let db = storage.tables().oplog;
    let key = golemw_runtime::oplog::store::block_key(uid, index);
    let (found_key, mut bytes) = {
        let txn = storage.env().begin_ro_txn().unwrap();
        let mut cursor = txn.open_ro_cursor(db).unwrap();
        let (k, v) = cursor.iter_from(key).next().expect("a block").unwrap();
        (k.to_vec(), v.to_vec())
    };
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x10;
    storage
        .write(|txn| Ok(txn.put(db, &found_key, &bytes, lmdb::WriteFlags::empty())?))
        .unwrap();
    storage.sync().unwrap();
}

/// Rewrites the function name of every `exported-function-invoked` entry of a worker's oplog
/// (re-encoding the blocks), as a guest built from different code would have recorded it.
pub fn rewrite_invoked_function(data_dir: &Path, id: &WorkerId, function: &str) {
    use golemw_runtime::oplog::OplogEntry;
    rewrite_entries(data_dir, id, |entry| match entry {
        OplogEntry::ExportedFunctionInvoked {
            timestamp_ms,
            params,
            idempotency_key,
            ..
        } => OplogEntry::ExportedFunctionInvoked {
            timestamp_ms: *timestamp_ms,
            function: function.to_string(),
            params: params.clone(),
            idempotency_key: idempotency_key.clone(),
        },
        other => other.clone(),
    });
}

/// Rewrites every oplog entry of a worker with `edit` (re-encoding the blocks), as a run of
/// other code would have recorded it.
pub fn rewrite_entries(
    data_dir: &Path,
    id: &WorkerId,
    edit: impl Fn(&golemw_runtime::oplog::OplogEntry) -> golemw_runtime::oplog::OplogEntry,
) {
    use golemw_runtime::oplog::store::{self, BlockEncoder, BlockRead};
    use golemw_runtime::oplog::OplogEntry;
    let storage = Storage::open(data_dir).expect("open storage");
    let bytes = storage
        .get(storage.tables().workers, &id.storage_key())
        .unwrap()
        .unwrap();
    let record: WorkerRecord = codec::decode(&bytes, "worker record").unwrap();
    let blocks = store::read_blocks(&storage, &record.uid, 1, usize::MAX).unwrap();
    let mut encoder = BlockEncoder::default();
    storage
        .write(|txn| {
            for block in &blocks {
                let BlockRead::Entries(entries) = block else {
                    panic!("corrupt block")
                };
                let first = entries[0].0;
                let rewritten: Vec<OplogEntry> = entries.iter().map(|(_, e)| edit(e)).collect();
                let last = first + rewritten.len() as u64 - 1;
                txn.del(
                    storage.tables().oplog,
                    &store::block_key(&record.uid, last),
                    None,
                )?;
                let encoded = encoder.encode(&rewritten);
                store::append_block(txn, &storage, &record.uid, first, &encoded, rewritten.len())?;
            }
            Ok(())
        })
        .unwrap();
    storage.sync().unwrap();
}
