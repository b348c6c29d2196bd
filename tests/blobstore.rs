//! `wasi:blobstore` (Golem 1.0's) through a wit-bindgen guest: containers are created, found
//! and deleted; objects are written through a value's body stream, read whole and in ranges,
//! listed, described, copied, moved and deleted; containers are the data directory's, shared by
//! every worker of every component; the store survives a restart and replay never reads it;
//! limits are refused with the reason; `golemw check` reads both tables.

use std::sync::Arc;

use golemw_runtime::{Executor, ExecutorOptions, RecoveryMode};
use golemw_tests::{guest_wasm, invoke_text as invoke};

fn open(dir: &std::path::Path) -> Arc<Executor> {
    let options = ExecutorOptions {
        fsync: false,
        ..ExecutorOptions::default()
    };
    Executor::open(dir, options).expect("open the data directory")
}

/// A data directory with the guest added as component `blobs`.
fn setup(dir: &std::path::Path) -> Arc<Executor> {
    let ex = open(dir);
    let wasm = std::fs::read(guest_wasm("blobstore")).unwrap();
    ex.components()
        .add("blobs", &wasm)
        .expect("add the component");
    ex
}

/// WAVE of a string.
fn s(text: &str) -> String {
    format!("{text:?}")
}

/// Rows of a table.
fn rows(ex: &Executor, table: lmdb::Database) -> Vec<Vec<u8>> {
    let mut keys = Vec::new();
    ex.storage()
        .scan_all(table, |key, _| keys.push(key.to_vec()))
        .unwrap();
    keys
}

#[test]
fn containers_are_created_found_and_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let ex = setup(dir.path());
    let w = ex.worker_id("blobs", "w").unwrap();
    let c = s("c");
    assert_eq!(invoke(&ex, &w, "container-exists", &[&c]), "ok(false)");
    let created = invoke(&ex, &w, "create-container", &[&c]);
    assert!(created.starts_with("ok("), "{created}");
    // Created again (as in Golem): the same container, its first creation time.
    assert_eq!(invoke(&ex, &w, "create-container", &[&c]), created);
    assert_eq!(invoke(&ex, &w, "container-exists", &[&c]), "ok(true)");
    assert_eq!(invoke(&ex, &w, "write", &[&c, &s("o"), "[1]"]), "ok");
    assert_eq!(invoke(&ex, &w, "delete-container", &[&c]), "ok");
    assert_eq!(invoke(&ex, &w, "container-exists", &[&c]), "ok(false)");
    assert!(rows(&ex, ex.storage().tables().blob_objects).is_empty());
    assert_eq!(
        invoke(&ex, &w, "delete-container", &[&c]),
        r#"err("container \"c\" does not exist")"#
    );
    assert_eq!(
        invoke(&ex, &w, "has", &[&c, &s("o")]),
        r#"err("container \"c\" does not exist")"#
    );
}

#[test]
fn objects_are_written_read_listed_described_copied_moved_and_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let ex = setup(dir.path());
    let w = ex.worker_id("blobs", "w").unwrap();
    let (c, d) = (s("c"), s("d"));
    invoke(&ex, &w, "create-container", &[&c]);
    invoke(&ex, &w, "create-container", &[&d]);
    // Written through the body stream in chunks (40000 bytes: three chunks).
    assert_eq!(
        invoke(&ex, &w, "write-filled", &[&c, &s("big"), "40000", "9"]),
        "ok"
    );
    assert_eq!(invoke(&ex, &w, "size", &[&c, &s("big")]), "ok(40000)");
    assert_eq!(invoke(&ex, &w, "info", &[&c, &s("big")]), "ok(40000)");
    assert_eq!(
        invoke(&ex, &w, "write", &[&c, &s("o"), "[1, 2, 3, 4]"]),
        "ok"
    );
    // Ranges: end exclusive and clamped to the size, as in Golem.
    assert_eq!(
        invoke(&ex, &w, "read", &[&c, &s("o"), "0", "100"]),
        "ok([1, 2, 3, 4])"
    );
    assert_eq!(
        invoke(&ex, &w, "read", &[&c, &s("o"), "1", "3"]),
        "ok([2, 3])"
    );
    assert!(invoke(&ex, &w, "read", &[&c, &s("o"), "3", "1"]).contains("past end"));
    assert_eq!(
        invoke(&ex, &w, "read", &[&c, &s("none"), "0", "1"]),
        r#"err("object \"none\" of container \"c\" does not exist")"#
    );
    // Replaced by a second write.
    assert_eq!(invoke(&ex, &w, "write", &[&c, &s("o"), "[5]"]), "ok");
    assert_eq!(invoke(&ex, &w, "read", &[&c, &s("o"), "0", "9"]), "ok([5])");
    // Listed (the guest reads two names at a time), per container.
    for name in ["a", "b", "e"] {
        invoke(&ex, &w, "write", &[&c, &s(name), "[]"]);
    }
    assert_eq!(
        invoke(&ex, &w, "list-names", &[&c]),
        r#"ok(["a", "b", "big", "e", "o"])"#
    );
    assert_eq!(invoke(&ex, &w, "list-names", &[&d]), "ok([])");
    assert_eq!(invoke(&ex, &w, "has", &[&c, &s("a")]), "ok(true)");
    assert_eq!(invoke(&ex, &w, "has", &[&d, &s("a")]), "ok(false)");
    // Copy and move, across containers.
    assert_eq!(
        invoke(&ex, &w, "copy", &[&c, &s("o"), &d, &s("o2"), "false"]),
        "ok"
    );
    assert_eq!(
        invoke(&ex, &w, "copy", &[&c, &s("big"), &d, &s("big"), "true"]),
        "ok"
    );
    assert_eq!(
        invoke(&ex, &w, "read", &[&d, &s("o2"), "0", "9"]),
        "ok([5])"
    );
    assert_eq!(invoke(&ex, &w, "size", &[&d, &s("big")]), "ok(40000)");
    assert_eq!(invoke(&ex, &w, "has", &[&c, &s("big")]), "ok(false)");
    assert!(
        invoke(&ex, &w, "copy", &[&c, &s("gone"), &d, &s("x"), "false"]).contains("does not exist")
    );
    // Deleted one by one, several at once (a missing one is no error), or all.
    assert_eq!(invoke(&ex, &w, "delete", &[&c, &s("a")]), "ok");
    assert_eq!(
        invoke(&ex, &w, "delete-many", &[&c, r#"["b", "nope"]"#]),
        "ok"
    );
    assert_eq!(invoke(&ex, &w, "list-names", &[&c]), r#"ok(["e", "o"])"#);
    assert_eq!(invoke(&ex, &w, "clear", &[&c]), "ok");
    assert_eq!(invoke(&ex, &w, "list-names", &[&c]), "ok([])");
    assert_eq!(invoke(&ex, &w, "container-exists", &[&c]), "ok(true)");
}

#[test]
fn the_store_survives_a_restart_and_replay_never_reads_it() {
    let dir = tempfile::tempdir().unwrap();
    let ex = setup(dir.path());
    let w = ex.worker_id("blobs", "w").unwrap();
    let c = s("c");
    invoke(&ex, &w, "create-container", &[&c]);
    invoke(&ex, &w, "write", &[&c, &s("o"), "[1, 2]"]);
    invoke(&ex, &w, "write-filled", &[&c, &s("p"), "70000", "3"]);
    assert_eq!(
        invoke(&ex, &w, "read", &[&c, &s("o"), "0", "2"]),
        "ok([1, 2])"
    );
    // A container kept in a static across invocations, and a snapshot holding its handle.
    assert_eq!(invoke(&ex, &w, "keep-container", &[&c]), "ok");
    ex.snapshot(&w).unwrap();
    invoke(&ex, &w, "write", &[&c, &s("q"), "[4]"]);
    drop(ex);

    let ex = open(dir.path());
    let report = ex.recover(&w, RecoveryMode::Auto).unwrap();
    assert!(report.snapshot_index.is_some(), "{report:?}");
    assert_eq!(invoke(&ex, &w, "read-kept", &[&s("q")]), "ok([4])");
    assert_eq!(invoke(&ex, &w, "write-kept", &[&s("r"), "[5]"]), "ok");
    assert_eq!(
        invoke(&ex, &w, "list-names", &[&c]),
        r#"ok(["o", "p", "q", "r"])"#
    );
    assert_eq!(invoke(&ex, &w, "size", &[&c, &s("p")]), "ok(70000)");
    let replayed = ex.state_digest(&w, RecoveryMode::FullReplay).unwrap();
    assert_eq!(replayed, ex.state_digest(&w, RecoveryMode::Auto).unwrap());
    // Behind the worker's back, both tables are emptied: a full replay reaches the same state.
    let tables = ex.storage().tables();
    for table in [tables.blob_objects, tables.blob_containers] {
        let keys = rows(&ex, table);
        ex.storage()
            .write(|txn| {
                for key in &keys {
                    txn.del(table, key, None)?;
                }
                Ok(())
            })
            .unwrap();
    }
    assert_eq!(
        ex.state_digest(&w, RecoveryMode::FullReplay).unwrap(),
        replayed
    );
    assert!(
        rows(&ex, tables.blob_containers).is_empty(),
        "replay wrote nothing"
    );
    assert_eq!(invoke(&ex, &w, "container-exists", &[&c]), "ok(false)");
}

#[test]
fn workers_of_every_component_share_containers_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let ex = setup(dir.path());
    let wasm = std::fs::read(guest_wasm("blobstore")).unwrap();
    ex.components().add("blobs2", &wasm).unwrap();
    let w1 = ex.worker_id("blobs", "w1").unwrap();
    let w2 = ex.worker_id("blobs", "w2").unwrap();
    let elsewhere = ex.worker_id("blobs2", "w").unwrap();
    let c = s("shared");
    invoke(&ex, &w1, "create-container", &[&c]);
    invoke(&ex, &w1, "write", &[&c, &s("o"), "[7]"]);
    assert_eq!(
        invoke(&ex, &w2, "read", &[&c, &s("o"), "0", "1"]),
        "ok([7])"
    );
    assert_eq!(
        invoke(&ex, &elsewhere, "read", &[&c, &s("o"), "0", "1"]),
        "ok([7])"
    );
    // A fork replays its source's history and shares the containers.
    let fork = ex.fork_worker(&w2, "f", None).unwrap().worker.id;
    invoke(&ex, &elsewhere, "write", &[&c, &s("o"), "[8]"]);
    assert_eq!(
        invoke(&ex, &fork, "read", &[&c, &s("o"), "0", "1"]),
        "ok([8])"
    );
    // Deleting a worker leaves the container: it is not the worker's.
    ex.delete_worker(&w1).unwrap();
    assert_eq!(invoke(&ex, &w2, "has", &[&c, &s("o")]), "ok(true)");
}

#[test]
fn limits_are_refused_with_a_clear_error_and_the_refusal_replays() {
    let dir = tempfile::tempdir().unwrap();
    let ex = setup(dir.path());
    let w = ex.worker_id("blobs", "w").unwrap();
    let c = s("c");
    invoke(&ex, &w, "create-container", &[&c]);
    let refused = |function: &str, args: &[&str], reason: &str| {
        let result = invoke(&ex, &w, function, args);
        assert!(
            result.starts_with("err(") && result.contains(reason),
            "{function}: {result}"
        );
    };
    // Container names: 1 to 128 bytes.
    assert!(invoke(&ex, &w, "create-container", &[&s(&"c".repeat(128))]).starts_with("ok("));
    refused(
        "create-container",
        &[&s(&"c".repeat(129))],
        "a container name is 1 to 128 bytes",
    );
    // Object names: 1 to 256 bytes.
    assert_eq!(
        invoke(&ex, &w, "write", &[&c, &s(&"o".repeat(256)), "[1]"]),
        "ok"
    );
    refused(
        "write",
        &[&c, &s(&"o".repeat(257)), "[1]"],
        "an object name is 1 to 256 bytes",
    );
    refused(
        "write",
        &[&c, &s(""), "[1]"],
        "an object name is 1 to 256 bytes",
    );
    // Objects: 4 MiB at most.
    assert_eq!(
        invoke(&ex, &w, "write-filled", &[&c, &s("max"), "4194304", "1"]),
        "ok"
    );
    assert_eq!(invoke(&ex, &w, "size", &[&c, &s("max")]), "ok(4194304)");
    refused(
        "write-filled",
        &[&c, &s("over"), "4194305", "1"],
        "the object is more than 4194304 bytes; at most 4194304 are allowed",
    );
    assert_eq!(invoke(&ex, &w, "has", &[&c, &s("over")]), "ok(false)");
    // Batches: 1024 names at most.
    let names: Vec<String> = (0..1025).map(|i| s(&i.to_string())).collect();
    refused(
        "delete-many",
        &[&c, &format!("[{}]", names.join(", "))],
        "1025 names in one call; at most 1024",
    );
    let live = ex.active_state_digest(&w).unwrap();
    assert_eq!(ex.state_digest(&w, RecoveryMode::FullReplay).unwrap(), live);
}

#[test]
fn check_reads_the_blob_tables_and_reports_orphans_and_damage() {
    let dir = tempfile::tempdir().unwrap();
    let ex = setup(dir.path());
    let w = ex.worker_id("blobs", "w").unwrap();
    invoke(&ex, &w, "create-container", &[&s("c")]);
    invoke(&ex, &w, "write", &[&s("c"), &s("o"), "[1]"]);
    let report = golemw_runtime::check::check(ex.storage(), |_| {}).unwrap();
    assert_eq!(report.read.get("blob_containers"), Some(&1));
    assert_eq!(report.read.get("blob_objects"), Some(&1));
    assert!(report.findings.is_empty(), "{:?}", report.findings);
    // An object whose container is gone, and a container record that does not read.
    let tables = ex.storage().tables();
    ex.storage()
        .write(|txn| {
            txn.del(tables.blob_containers, b"c", None)?;
            txn.put(
                tables.blob_containers,
                b"d",
                b"\x01junk",
                lmdb::WriteFlags::empty(),
            )?;
            Ok(())
        })
        .unwrap();
    let report = golemw_runtime::check::check(ex.storage(), |_| {}).unwrap();
    let tables_found: Vec<&str> = report.findings.iter().map(|f| f.table).collect();
    assert_eq!(
        tables_found,
        ["blob_containers", "blob_objects"],
        "{:?}",
        report.findings
    );
}
