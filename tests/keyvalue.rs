//! `wasi:keyvalue@0.1.0` through a wit-bindgen guest: every operation round-trips; buckets are
//! the data directory's, shared by every worker of every component; the store survives a
//! restart, and replay never reads it (its rows deleted behind the worker's back, a full replay
//! still reaches the same state); a write is committed with its oplog entry; limits are
//! refused with the reason; forks replay what their source read; and the functions provided are
//! exactly those of Golem's WIT (for `wasi:blobstore` too).

use std::sync::Arc;

use golemw_runtime::oplog::{HostFunction, OplogEntry};
use golemw_runtime::{Executor, ExecutorOptions, RecoveryMode};
use golemw_tests::{guest_wasm, invoke_text as invoke, oplog_entries, Completes};

fn open(dir: &std::path::Path) -> Arc<Executor> {
    let options = ExecutorOptions {
        fsync: false,
        ..ExecutorOptions::default()
    };
    Executor::open(dir, options).expect("open the data directory")
}

/// A data directory with the guest added as component `kv`.
fn setup(dir: &std::path::Path) -> Arc<Executor> {
    let ex = open(dir);
    let wasm = std::fs::read(guest_wasm("keyvalue")).unwrap();
    ex.components().add("kv", &wasm).expect("add the component");
    ex
}

/// WAVE of a string.
fn s(text: &str) -> String {
    format!("{text:?}")
}

/// How many rows the keyvalue table holds.
fn rows(ex: &Executor) -> usize {
    let mut count = 0;
    ex.storage()
        .scan_all(ex.storage().tables().keyvalue, |_, _| count += 1)
        .unwrap();
    count
}

#[test]
fn set_get_delete_exists_and_batch_operations_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let ex = setup(dir.path());
    let w = ex.worker_id("kv", "w").unwrap();
    let (b, k) = (s("bucket"), s("key"));

    assert_eq!(invoke(&ex, &w, "get", &[&b, &k]), "ok(none)");
    assert_eq!(invoke(&ex, &w, "exists", &[&b, &k]), "ok(false)");
    assert_eq!(invoke(&ex, &w, "set", &[&b, &k, "[1, 2, 3]"]), "ok");
    assert_eq!(invoke(&ex, &w, "get", &[&b, &k]), "ok(some([1, 2, 3]))");
    assert_eq!(invoke(&ex, &w, "size", &[&b, &k]), "ok(some(3))");
    assert_eq!(invoke(&ex, &w, "exists", &[&b, &k]), "ok(true)");
    // A set replaces; an empty value is a value.
    assert_eq!(invoke(&ex, &w, "set", &[&b, &k, "[9]"]), "ok");
    assert_eq!(invoke(&ex, &w, "get", &[&b, &k]), "ok(some([9]))");
    assert_eq!(invoke(&ex, &w, "set", &[&b, &s(""), "[]"]), "ok");
    assert_eq!(invoke(&ex, &w, "get", &[&b, &s("")]), "ok(some([]))");
    // Delete, and delete again (nothing to delete is not an error).
    assert_eq!(invoke(&ex, &w, "delete", &[&b, &k]), "ok");
    assert_eq!(invoke(&ex, &w, "get", &[&b, &k]), "ok(none)");
    assert_eq!(invoke(&ex, &w, "exists", &[&b, &k]), "ok(false)");
    assert_eq!(invoke(&ex, &w, "delete", &[&b, &k]), "ok");

    // Batches.
    let batch = s("batch");
    assert_eq!(
        invoke(
            &ex,
            &w,
            "set-many",
            &[&batch, r#"[("a", [1]), ("b", [2, 2]), ("c", [])]"#]
        ),
        "ok"
    );
    assert_eq!(
        invoke(&ex, &w, "get-many", &[&batch, r#"["c", "x", "a"]"#]),
        "ok([some([]), none, some([1])])"
    );
    assert_eq!(invoke(&ex, &w, "keys", &[&batch]), r#"ok(["a", "b", "c"])"#);
    assert_eq!(
        invoke(&ex, &w, "delete-many", &[&batch, r#"["a", "b", "nope"]"#]),
        "ok"
    );
    assert_eq!(invoke(&ex, &w, "keys", &[&batch]), r#"ok(["c"])"#);
    // Buckets are apart: the first bucket's key "" is not in "batch", and a new bucket is empty.
    assert_eq!(invoke(&ex, &w, "keys", &[&s("empty")]), "ok([])");
    assert_eq!(invoke(&ex, &w, "keys", &[&b]), r#"ok([""])"#);

    // Each operation is an oplog entry named after its function.
    let recorded: Vec<String> = oplog_entries(&ex, &w)
        .into_iter()
        .filter_map(|(_, e)| match e {
            OplogEntry::ImportedFunctionInvoked {
                function: HostFunction::Golem(name),
                ..
            } => Some(name),
            _ => None,
        })
        .collect();
    for name in [
        "wasi:keyvalue/eventual@0.1.0.get",
        "wasi:keyvalue/eventual@0.1.0.set",
        "wasi:keyvalue/eventual@0.1.0.delete",
        "wasi:keyvalue/eventual@0.1.0.exists",
        "wasi:keyvalue/eventual-batch@0.1.0.set-many",
        "wasi:keyvalue/eventual-batch@0.1.0.get-many",
        "wasi:keyvalue/eventual-batch@0.1.0.keys",
        "wasi:keyvalue/eventual-batch@0.1.0.delete-many",
    ] {
        assert!(recorded.iter().any(|r| r == name), "{name} in {recorded:?}");
    }
}

#[test]
fn the_store_survives_a_restart_and_replay_never_reads_it() {
    let dir = tempfile::tempdir().unwrap();
    let ex = setup(dir.path());
    let w = ex.worker_id("kv", "w").unwrap();
    let b = s("b");
    invoke(&ex, &w, "set", &[&b, &s("one"), "[1]"]);
    invoke(
        &ex,
        &w,
        "set-many",
        &[&b, r#"[("two", [2]), ("three", [3])]"#],
    );
    // A bucket kept in a static across invocations, and a snapshot holding its handle.
    assert_eq!(invoke(&ex, &w, "open-kept", &[&b]), "ok");
    ex.snapshot(&w).unwrap();
    assert_eq!(invoke(&ex, &w, "set-kept", &[&s("four"), "[4]"]), "ok");
    drop(ex);

    let ex = open(dir.path());
    let report = ex.recover(&w, RecoveryMode::Auto).unwrap();
    assert!(report.snapshot_index.is_some(), "{report:?}");
    // The store is still there, and the kept handle came back from the snapshot.
    assert_eq!(invoke(&ex, &w, "get-kept", &[&s("one")]), "ok(some([1]))");
    assert_eq!(invoke(&ex, &w, "get", &[&b, &s("four")]), "ok(some([4]))");
    assert_eq!(
        invoke(&ex, &w, "get-many", &[&b, r#"["two", "three"]"#]),
        "ok([some([2]), some([3])])"
    );
    assert_eq!(
        invoke(&ex, &w, "keys", &[&b]),
        r#"ok(["four", "one", "three", "two"])"#
    );
    let replayed = ex.state_digest(&w, RecoveryMode::FullReplay).unwrap();
    assert_eq!(replayed, ex.state_digest(&w, RecoveryMode::Auto).unwrap());

    // Behind the worker's back, the store is emptied: a full replay still reaches the same
    // state (what the reads returned comes from the oplog), and only a new read sees the change.
    let table = ex.storage().tables().keyvalue;
    let mut keys = Vec::new();
    ex.storage()
        .scan_all(table, |key, _| keys.push(key.to_vec()))
        .unwrap();
    ex.storage()
        .write(|txn| {
            for key in &keys {
                txn.del(table, key, None)?;
            }
            Ok(())
        })
        .unwrap();
    assert_eq!(rows(&ex), 0);
    assert_eq!(
        ex.state_digest(&w, RecoveryMode::FullReplay).unwrap(),
        replayed
    );
    drop(ex);
    let ex = open(dir.path());
    assert_eq!(
        ex.state_digest(&w, RecoveryMode::FullReplay).unwrap(),
        replayed
    );
    assert_eq!(rows(&ex), 0, "replay wrote nothing either");
    assert_eq!(invoke(&ex, &w, "get", &[&b, &s("one")]), "ok(none)");
}

#[test]
fn a_write_is_committed_with_its_oplog_entry_even_when_its_invocation_traps() {
    let dir = tempfile::tempdir().unwrap();
    let ex = setup(dir.path());
    let w = ex.worker_id("kv", "w").unwrap();
    // The invocation traps after its set and never completes; the set is in storage with its
    // entry all the same (the commit that writes the failed attempt's entries writes it).
    let args = [s("b"), s("k"), "[7]".to_string()];
    let result = ex.invoke(&w, "set-then-trap", &args, None).done();
    assert!(result.is_err(), "{result:?}");
    assert_eq!(rows(&ex), 1);
    let sets = oplog_entries(&ex, &w)
        .into_iter()
        .filter(|(_, e)| {
            matches!(e, OplogEntry::ImportedFunctionInvoked { function: HostFunction::Golem(name), .. }
                if name == "wasi:keyvalue/eventual@0.1.0.set")
        })
        .count();
    assert!(sets >= 1, "the set's entry is committed");
    let other = ex.worker_id("kv", "other").unwrap();
    assert_eq!(
        invoke(&ex, &other, "get", &[&s("b"), &s("k")]),
        "ok(some([7]))"
    );
}

#[test]
fn under_persist_nothing_a_write_is_made_unrecorded_and_made_again_on_replay() {
    let dir = tempfile::tempdir().unwrap();
    let ex = setup(dir.path());
    let w = ex.worker_id("kv", "w").unwrap();
    let set_entries = |ex: &Executor| {
        oplog_entries(ex, &w)
            .into_iter()
            .filter(|(_, e)| {
                matches!(e, OplogEntry::ImportedFunctionInvoked { function: HostFunction::Golem(name), .. }
                    if name.starts_with("wasi:keyvalue/"))
            })
            .count()
    };
    assert_eq!(
        invoke(&ex, &w, "set-unrecorded", &[&s("b"), &s("k"), "[1]"]),
        "ok"
    );
    assert_eq!(set_entries(&ex), 0, "nothing recorded");
    assert_eq!(rows(&ex), 1, "the change is made all the same");
    // Replay runs the unrecorded write again, as Golem runs any unrecorded call again, while
    // the recorded delete after it replays without the store: persist-nothing means exactly
    // that its side effects happen again.
    invoke(&ex, &w, "delete", &[&s("b"), &s("k")]);
    assert_eq!(rows(&ex), 0);
    ex.recover(&w, RecoveryMode::FullReplay).unwrap();
    assert_eq!(rows(&ex), 1, "the unrecorded set ran again");
    let other = ex.worker_id("kv", "other").unwrap();
    assert_eq!(
        invoke(&ex, &other, "get", &[&s("b"), &s("k")]),
        "ok(some([1]))"
    );
}

#[test]
fn writes_wait_for_the_invocations_commit_and_the_worker_reads_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let ex = setup(dir.path());
    let w = ex.worker_id("kv", "w").unwrap();
    invoke(&ex, &w, "set", &[&s("b"), &s("other"), "[0]"]);
    // Before its commit, the worker sees what it wrote and deleted.
    assert_eq!(
        invoke(&ex, &w, "read-own-writes", &[&s("b"), &s("k"), "[1, 2]"]),
        "ok((some([1, 2]), true, true, none))"
    );
    assert_eq!(invoke(&ex, &w, "keys", &[&s("b")]), r#"ok(["other"])"#);
    // One commit for many writes: 200 sets cost far fewer than 200 commits.
    let before = ex.storage().io_counts().commits;
    invoke(&ex, &w, "set-range", &[&s("b"), &s("r"), "200"]);
    let commits = ex.storage().io_counts().commits - before;
    assert!(commits < 10, "{commits} commits for 200 sets");
    assert_eq!(rows(&ex), 201);
    // Past 16 MiB of values waiting, the worker commits them before going on: 20 values of
    // 1 MiB, all there, and each read back by the next invocation.
    invoke(
        &ex,
        &w,
        "fill-range",
        &[&s("big"), &s("v"), "20", "1048576"],
    );
    for i in [0, 16, 19] {
        assert_eq!(
            invoke(&ex, &w, "size", &[&s("big"), &s(&format!("v{i}"))]),
            "ok(some(1048576))"
        );
    }
    assert_eq!(rows(&ex), 221);
    let live = ex.active_state_digest(&w).unwrap();
    assert_eq!(ex.state_digest(&w, RecoveryMode::FullReplay).unwrap(), live);
}

#[test]
fn workers_of_every_component_share_a_bucket_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let ex = setup(dir.path());
    let wasm = std::fs::read(guest_wasm("keyvalue")).unwrap();
    ex.components().add("kv2", &wasm).unwrap();
    let (w1, w2) = (
        ex.worker_id("kv", "w1").unwrap(),
        ex.worker_id("kv", "w2").unwrap(),
    );
    let elsewhere = ex.worker_id("kv2", "w1").unwrap();
    assert_eq!(
        invoke(&ex, &w1, "set", &[&s("shared"), &s("k"), "[1]"]),
        "ok"
    );
    assert_eq!(
        invoke(&ex, &w2, "get", &[&s("shared"), &s("k")]),
        "ok(some([1]))"
    );
    assert_eq!(
        invoke(&ex, &elsewhere, "get", &[&s("shared"), &s("k")]),
        "ok(some([1]))"
    );
    assert_eq!(
        invoke(&ex, &elsewhere, "delete", &[&s("shared"), &s("k")]),
        "ok"
    );
    assert_eq!(
        invoke(&ex, &w1, "exists", &[&s("shared"), &s("k")]),
        "ok(false)"
    );
    // Deleting a worker leaves the bucket: it is not the worker's.
    invoke(&ex, &w2, "set", &[&s("shared"), &s("kept"), "[2]"]);
    ex.delete_worker(&w2).unwrap();
    assert_eq!(
        invoke(&ex, &w1, "get", &[&s("shared"), &s("kept")]),
        "ok(some([2]))"
    );
}

#[test]
fn limits_are_refused_with_a_clear_error_and_the_refusal_replays() {
    let dir = tempfile::tempdir().unwrap();
    let ex = setup(dir.path());
    let w = ex.worker_id("kv", "w").unwrap();
    let b = s("b");
    let refused = |function: &str, args: &[&str], reason: &str| {
        let result = invoke(&ex, &w, function, args);
        assert!(
            result.starts_with("err(") && result.contains(reason),
            "{function}: {result}"
        );
    };
    // Keys: 256 bytes at most.
    let key_max = s(&"k".repeat(256));
    assert_eq!(invoke(&ex, &w, "set", &[&b, &key_max, "[1]"]), "ok");
    let key_over = s(&"k".repeat(257));
    refused(
        "set",
        &[&b, &key_over, "[1]"],
        "is 257 bytes; at most 256 are allowed",
    );
    refused("get", &[&b, &key_over], "at most 256 are allowed");
    // Values: 1 MiB at most.
    assert_eq!(
        invoke(&ex, &w, "set-filled", &[&b, &s("big"), "1048576", "7"]),
        "ok"
    );
    assert_eq!(
        invoke(&ex, &w, "size", &[&b, &s("big")]),
        "ok(some(1048576))"
    );
    refused(
        "set-filled",
        &[&b, &s("bigger"), "1048577", "7"],
        "the value is 1048577 bytes; at most 1048576 are allowed",
    );
    // Bucket names: 1 to 128 bytes.
    assert_eq!(invoke(&ex, &w, "keys", &[&s(&"b".repeat(128))]), "ok([])");
    refused(
        "keys",
        &[&s(&"b".repeat(129))],
        "a bucket name is 1 to 128 bytes",
    );
    refused(
        "set",
        &[&s(""), &s("k"), "[1]"],
        "a bucket name is 1 to 128 bytes",
    );
    // Batches: 1024 keys at most.
    let keys: Vec<String> = (0..1025).map(|i| s(&i.to_string())).collect();
    let keys = format!("[{}]", keys.join(", "));
    refused(
        "get-many",
        &[&b, &keys],
        "1025 keys in one call; at most 1024",
    );
    refused("delete-many", &[&b, &keys], "at most 1024");
    // Nothing refused was stored, and the refusals replay as they were recorded.
    assert_eq!(
        invoke(&ex, &w, "keys", &[&b]),
        format!(r#"ok(["big", {key_max}])"#)
    );
    let live = ex.active_state_digest(&w).unwrap();
    assert_eq!(ex.state_digest(&w, RecoveryMode::FullReplay).unwrap(), live);
}

#[test]
fn a_fork_replays_what_its_source_read_and_shares_its_buckets() {
    let dir = tempfile::tempdir().unwrap();
    let ex = setup(dir.path());
    let w = ex.worker_id("kv", "w").unwrap();
    let (b, k) = (s("b"), s("k"));
    invoke(&ex, &w, "set", &[&b, &k, "[1]"]);
    assert_eq!(invoke(&ex, &w, "get", &[&b, &k]), "ok(some([1]))");
    let at_fork = ex.active_state_digest(&w).unwrap();
    let fork = ex.fork_worker(&w, "f", None).unwrap();
    // The source changes the value after the fork point.
    invoke(&ex, &w, "set", &[&b, &k, "[2]"]);
    // The fork's history replays the read of [1] from the oplog, not the store's [2].
    let f = fork.worker.id;
    assert_eq!(
        ex.state_digest(&f, RecoveryMode::FullReplay).unwrap(),
        at_fork
    );
    // Live, it sees the shared bucket as it is now.
    assert_eq!(invoke(&ex, &f, "get", &[&b, &k]), "ok(some([2]))");
}

#[test]
fn check_reads_the_keyvalue_table_and_reports_damaged_rows() {
    let dir = tempfile::tempdir().unwrap();
    let ex = setup(dir.path());
    let w = ex.worker_id("kv", "w").unwrap();
    invoke(&ex, &w, "set", &[&s("b"), &s("good"), "[1]"]);
    let report = golemw_runtime::check::check(ex.storage(), |_| {}).unwrap();
    assert_eq!(report.read.get("keyvalue"), Some(&1));
    assert!(report.findings.is_empty(), "{:?}", report.findings);
    // A value whose checksum fails, and a key that is no bucket and key.
    let table = ex.storage().tables().keyvalue;
    ex.storage()
        .write(|txn| {
            txn.put(
                table,
                b"\x01bbad",
                b"\x01garbage",
                lmdb::WriteFlags::empty(),
            )?;
            txn.put(table, b"\xffx", b"", lmdb::WriteFlags::empty())?;
            Ok(())
        })
        .unwrap();
    let report = golemw_runtime::check::check(ex.storage(), |_| {}).unwrap();
    let found: Vec<_> = report
        .findings
        .iter()
        .filter(|f| f.table == "keyvalue")
        .collect();
    assert_eq!(found.len(), 2, "{:?}", report.findings);
}

#[test]
fn every_function_of_golems_keyvalue_and_blobstore_wit_is_provided_and_nothing_else() {
    use golemw_runtime::host::{blobstore, keyvalue};
    let mut resolve = wit_parser::Resolve::new();
    resolve
        .push_dir(golemw_tests::repo_root().join("wit"))
        .unwrap();
    for (interface, provided) in keyvalue::PROVIDED.iter().chain(blobstore::PROVIDED.iter()) {
        let (_, iface) = resolve
            .interfaces
            .iter()
            .find(|(id, _)| resolve.id_of(*id).as_deref() == Some(*interface))
            .unwrap_or_else(|| panic!("{interface} is not in wit/"));
        let mut in_wit: Vec<String> = iface.functions.keys().cloned().collect();
        for (name, ty) in &iface.types {
            if matches!(resolve.types[*ty].kind, wit_parser::TypeDefKind::Resource) {
                in_wit.push(format!("[resource-drop]{name}"));
            }
        }
        in_wit.sort();
        let mut provided: Vec<String> = provided.iter().map(|n| n.to_string()).collect();
        provided.sort();
        assert_eq!(provided, in_wit, "{interface}");
    }
}
