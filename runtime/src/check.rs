//! `golemw check`: reads every record of a data directory and reports what is damaged, so that
//! storage corruption is never silent. Every value golemw writes carries a checksum (records,
//! oplog blocks, manifests, pages), which is verified; pages are also hashed again against the
//! name they are stored under. What ties records together is checked too: history whose
//! worker record is missing or unreadable (the worker would otherwise look new, and its name be
//! taken by a fresh worker), snapshots whose pages are gone (in the worker's own page space or
//! the one it shares with forks), page-space rows that disagree, names of missing components.
//!
//! LMDB's own pages carry no checksum: damage there shows as LMDB errors while reading (here,
//! a finding for the table), or as a crash of the reader, which the CLI runs in a child process
//! so that it can say which table it was reading.

use std::collections::{BTreeMap, HashSet};

use lmdb::Database;
use uuid::Uuid;

use crate::component::ComponentRecord;
use crate::error::Result;
use crate::oplog::store::{decode_block, BlockRead};
use crate::storage::{codec, Storage};
use crate::worker_records::WorkerRecord;

/// Something damaged.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Finding {
    /// The table (or `images`) it is in.
    pub table: &'static str,
    /// Which record: a key, a worker, a page.
    pub at: String,
    pub problem: String,
}

/// What a check read and found.
#[derive(Debug, Default, serde::Serialize)]
pub struct Report {
    /// Records read, by table.
    pub read: BTreeMap<&'static str, u64>,
    pub findings: Vec<Finding>,
}

/// Biggest component a check decompresses (as `component add` accepts at most).
const WASM_BYTES_MAX: usize = 512 << 20;

/// Checks every table of `storage`; `progress` is told each table as it starts.
pub fn check(storage: &Storage, mut progress: impl FnMut(&'static str)) -> Result<Report> {
    let tables = storage.tables();
    let mut report = Report::default();
    let find = |report: &mut Report, table: &'static str, at: String, problem: String| {
        report.findings.push(Finding { table, at, problem });
    };

    progress("components");
    let mut components = HashSet::new();
    scan(
        storage,
        &mut report,
        "components",
        tables.components,
        |report, key, value| match codec::decode::<ComponentRecord>(value, "component record") {
            Ok(record) => {
                components.insert(record.id.0);
            }
            Err(err) => find(report, "components", hex_key(key), err.to_string()),
        },
    )?;
    progress("component_names");
    scan(
        storage,
        &mut report,
        "component_names",
        tables.component_names,
        |report, key, value| {
            let name = String::from_utf8_lossy(key).into_owned();
            match Uuid::from_slice(value) {
                Ok(id) if components.contains(&id) => {}
                Ok(id) => find(
                    report,
                    "component_names",
                    name,
                    format!("names component {id}, which has no readable record"),
                ),
                Err(_) => find(report, "component_names", name, "not a UUID".into()),
            }
        },
    )?;
    progress("component_wasm");
    scan(
        storage,
        &mut report,
        "component_wasm",
        tables.component_wasm,
        |report, key, value| {
            let problem = match codec::check(value, "component wasm") {
                Ok(compressed) => zstd::bulk::decompress(compressed, WASM_BYTES_MAX)
                    .err()
                    .map(|e| format!("does not decompress: {e}")),
                Err(err) => Some(err.to_string()),
            };
            if let Some(problem) = problem {
                find(report, "component_wasm", hex_key(key), problem);
            }
        },
    )?;

    progress("workers");
    let mut workers: HashSet<Uuid> = HashSet::new();
    scan(
        storage,
        &mut report,
        "workers",
        tables.workers,
        |report, key, value| match codec::decode::<WorkerRecord>(value, "worker record") {
            Ok(record) if record.id.storage_key() != key => find(
                report,
                "workers",
                record.id.to_string(),
                "stored under another worker's key".into(),
            ),
            Ok(record) => {
                workers.insert(record.uid);
            }
            Err(err) => find(report, "workers", worker_key(key), err.to_string()),
        },
    )?;

    progress("oplog");
    let mut orphans: BTreeMap<Uuid, u64> = BTreeMap::new();
    scan(
        storage,
        &mut report,
        "oplog",
        tables.oplog,
        |report, key, value| {
            let Some((uid, last)) = uid_and_index(key) else {
                return find(
                    report,
                    "oplog",
                    hex_key(key),
                    "a key of the wrong length".into(),
                );
            };
            if !workers.contains(&uid) {
                *orphans.entry(uid).or_default() += 1;
            }
            if let BlockRead::Corrupt {
                first,
                last,
                detail,
            } = decode_block(value, last)
            {
                find(
                    report,
                    "oplog",
                    format!("worker uid {uid}, entries {first}..={last}"),
                    detail,
                );
            }
        },
    )?;
    for (uid, blocks) in orphans {
        find(
            &mut report,
            "oplog",
            format!("worker uid {uid}"),
            format!(
                "{blocks} oplog blocks whose worker record is missing or unreadable: the worker's \
                 history is here, its record is not (restore it from a backup)"
            ),
        );
    }

    progress("snapshot_pages");
    let mut pages: HashSet<(Uuid, [u8; 32])> = HashSet::new();
    let mut page = vec![0u8; golemw_snapshot::PAGE_BYTES];
    scan(
        storage,
        &mut report,
        "snapshot_pages",
        tables.snapshot_pages,
        |report, key, value| {
            let (Ok(uid), Ok(hash)) = (
                Uuid::from_slice(&key[..16.min(key.len())]),
                <[u8; 32]>::try_from(&key[16.min(key.len())..]),
            ) else {
                return find(
                    report,
                    "snapshot_pages",
                    hex_key(key),
                    "a key of the wrong length".into(),
                );
            };
            let name = golemw_snapshot::PageHash(hash);
            match golemw_snapshot::page::decode_page_into(value, &mut page, &name) {
                Ok(()) if golemw_snapshot::PageHash::of(&page) == name => {
                    pages.insert((uid, hash));
                }
                Ok(()) => find(
                    report,
                    "snapshot_pages",
                    format!("worker uid {uid}, page {name}"),
                    "its content does not hash to its name".into(),
                ),
                Err(err) => find(
                    report,
                    "snapshot_pages",
                    format!("worker uid {uid}, page {name}"),
                    err.to_string(),
                ),
            }
        },
    )?;
    progress("page_spaces");
    // Workers sharing pages with forks: their manifests' pages are under the space's uid.
    let mut spaces: BTreeMap<Uuid, Uuid> = BTreeMap::new();
    let mut members: HashSet<(Uuid, Uuid)> = HashSet::new();
    scan(
        storage,
        &mut report,
        "page_spaces",
        tables.page_spaces,
        |report, key, value| match key.len() {
            16 => {
                let uid = Uuid::from_slice(key).expect("16 bytes");
                match codec::decode::<crate::snapshots::SpaceRow>(value, "page space") {
                    Ok(row) => {
                        spaces.insert(uid, row.space);
                    }
                    Err(err) => find(
                        report,
                        "page_spaces",
                        format!("worker uid {uid}"),
                        format!("{err} (its snapshots' pages cannot be found)"),
                    ),
                }
            }
            32 => {
                let space = Uuid::from_slice(&key[..16]).expect("16 bytes");
                let member = Uuid::from_slice(&key[16..]).expect("16 bytes");
                members.insert((space, member));
            }
            _ => find(
                report,
                "page_spaces",
                hex_key(key),
                "a key of the wrong length".into(),
            ),
        },
    )?;
    for (uid, space) in &spaces {
        if !members.contains(&(*space, *uid)) {
            find(
                &mut report,
                "page_spaces",
                format!("worker uid {uid}"),
                format!(
                    "shares page space {space} but is not listed among its members (deleting                      another member could collect pages its snapshots use)"
                ),
            );
        }
    }
    for (space, member) in &members {
        if spaces.get(member) != Some(space) {
            find(
                &mut report,
                "page_spaces",
                format!("worker uid {member}"),
                format!("listed as a member of page space {space}, which is not its space"),
            );
        }
    }
    progress("snapshots");
    scan(
        storage,
        &mut report,
        "snapshots",
        tables.snapshots,
        |report, key, value| {
            let Some((uid, index)) = uid_and_index(key) else {
                return find(
                    report,
                    "snapshots",
                    hex_key(key),
                    "a key of the wrong length".into(),
                );
            };
            let at = format!("worker uid {uid}, snapshot at {index}");
            let space = spaces.get(&uid).copied().unwrap_or(uid);
            match golemw_snapshot::Manifest::decode(value) {
                Ok(manifest) => {
                    let missing = manifest
                        .pages
                        .iter()
                        .filter(|p| match p {
                            golemw_snapshot::PageRef::Stored { hash, .. } => {
                                !pages.contains(&(space, hash.0))
                            }
                            golemw_snapshot::PageRef::Zero => false,
                        })
                        .count();
                    if missing > 0 {
                        find(
                            report,
                            "snapshots",
                            at,
                            format!(
                                "{missing} of its pages are missing or damaged (recovery skips it)"
                            ),
                        );
                    }
                }
                Err(err) => find(report, "snapshots", at, err.to_string()),
            }
        },
    )?;

    for (name, table) in [
        ("invocations", tables.invocations),
        ("promises", tables.promises),
        ("suspensions", tables.suspensions),
        ("sleeps", tables.sleeps),
        ("queue", tables.queue),
        ("forks", tables.forks),
    ] {
        progress(name);
        scan(storage, &mut report, name, table, |report, key, value| {
            if let Err(err) = codec::check(value, name) {
                find(report, name, hex_key(key), err.to_string());
            }
        })?;
    }
    // Buckets belong to the data directory, not to a worker or component (see
    // `crate::keyvalue`): each row is checked on its own.
    progress("keyvalue");
    scan(
        storage,
        &mut report,
        "keyvalue",
        tables.keyvalue,
        |report, key, value| {
            if let Some(problem) = crate::keyvalue::check_row(key, value) {
                find(report, "keyvalue", hex_key(key), problem);
            }
        },
    )?;
    // Blob containers too; an object must be in a container that reads.
    progress("blob_containers");
    let mut containers = HashSet::new();
    scan(
        storage,
        &mut report,
        "blob_containers",
        tables.blob_containers,
        |report, key, value| match crate::blobstore::check_container_row(key, value) {
            Some(problem) => find(report, "blob_containers", hex_key(key), problem),
            None => {
                containers.insert(String::from_utf8_lossy(key).into_owned());
            }
        },
    )?;
    progress("blob_objects");
    scan(
        storage,
        &mut report,
        "blob_objects",
        tables.blob_objects,
        |report, key, value| {
            if let Some(problem) = crate::blobstore::check_object_row(key, value, &containers) {
                find(report, "blob_objects", hex_key(key), problem);
            }
        },
    )?;
    Ok(report)
}

/// Reads a whole table; an LMDB error while reading is a finding, not the end of the check.
fn scan(
    storage: &Storage,
    report: &mut Report,
    name: &'static str,
    table: Database,
    mut visit: impl FnMut(&mut Report, &[u8], &[u8]),
) -> Result<()> {
    let mut read = 0u64;
    let mut findings = Report::default();
    let scanned = storage.scan_all(table, |key, value| {
        read += 1;
        visit(&mut findings, key, value);
    });
    report.findings.append(&mut findings.findings);
    *report.read.entry(name).or_default() += read;
    if let Err(err) = scanned {
        report.findings.push(Finding {
            table: name,
            at: format!("after {read} records"),
            problem: format!("LMDB could not read the table on: {err}"),
        });
    }
    Ok(())
}

fn uid_and_index(key: &[u8]) -> Option<(Uuid, u64)> {
    if key.len() != 24 {
        return None;
    }
    let uid = Uuid::from_slice(&key[..16]).ok()?;
    Some((uid, u64::from_be_bytes(key[16..].try_into().ok()?)))
}

/// A worker key as `component-uuid/name` when it reads as one.
fn worker_key(key: &[u8]) -> String {
    match (Uuid::from_slice(&key[..16.min(key.len())]), key.get(16..)) {
        (Ok(component), Some(name)) => format!("{component}/{}", String::from_utf8_lossy(name)),
        _ => hex_key(key),
    }
}

fn hex_key(key: &[u8]) -> String {
    key.iter().map(|b| format!("{b:02x}")).collect()
}
