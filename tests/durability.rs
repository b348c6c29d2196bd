//! Durable execution end to end, in process: real LMDB in a temp dir, real Wasmer, guests
//! built from source. Each "restart" drops the executor and opens the data directory again, so
//! the worker comes back by replaying its oplog.

use golemw_runtime::{Error, Executor, ExecutorOptions, RecoveryMode, WorkerId, WorkerStatus};
use golemw_tests::guest_wasm;
use golemw_tests::Completes;

fn open(dir: &std::path::Path) -> std::sync::Arc<Executor> {
    Executor::open(dir, ExecutorOptions::default()).expect("open the data directory")
}

fn add_component(executor: &Executor, guest: &str, name: &str) {
    let wasm = std::fs::read(guest_wasm(guest)).unwrap();
    executor
        .components()
        .add(name, &wasm)
        .expect("add component");
}

fn worker(executor: &Executor, component: &str, name: &str) -> WorkerId {
    executor.worker_id(component, name).unwrap()
}

fn invoke(executor: &Executor, id: &WorkerId, function: &str, args: &[&str]) -> Option<String> {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    executor
        .invoke(id, function, &args, None)
        .done()
        .unwrap_or_else(|e| panic!("{function}({args:?}) failed: {e}"))
        .result
}

#[test]
fn counter_state_survives_restarts() {
    let dir = tempfile::tempdir().unwrap();
    {
        let ex = open(dir.path());
        add_component(&ex, "counter", "counter");
        let id = worker(&ex, "counter", "w1");
        assert_eq!(
            invoke(&ex, &id, "golemw:counter/api.{add}", &["5"]).as_deref(),
            Some("5")
        );
        assert_eq!(invoke(&ex, &id, "add", &["3"]).as_deref(), Some("8"));
    }
    for round in 1..=3u64 {
        let ex = open(dir.path());
        let id = worker(&ex, "counter", "w1");
        assert_eq!(
            invoke(&ex, &id, "get", &[]).as_deref(),
            Some(&*(8 + round - 1).to_string())
        );
        assert_eq!(
            invoke(&ex, &id, "add", &["1"]).as_deref(),
            Some(&*(8 + round).to_string())
        );
    }
    let ex = open(dir.path());
    let id = worker(&ex, "counter", "w1");
    let report = ex.recover(&id, RecoveryMode::Auto).unwrap();
    assert_eq!(report.invocations_replayed, 2 + 3 * 2);
    assert_eq!(ex.worker_record(&id).unwrap().status, WorkerStatus::Idle);
}

#[test]
fn clock_and_random_values_replay_identically() {
    let dir = tempfile::tempdir().unwrap();
    let mut results = Vec::new();
    {
        let ex = open(dir.path());
        add_component(&ex, "clocks", "clocks");
        let id = worker(&ex, "clocks", "c");
        for f in ["now", "monotonic", "random", "now", "random"] {
            results.push(invoke(&ex, &id, f, &[]).unwrap());
        }
        invoke(&ex, &id, "sleep-ms", &["20"]);
        results.push(invoke(&ex, &id, "many-clocks", &["100"]).unwrap());
    }
    // Replay checks every recorded result against the replayed one: if a clock or random call
    // returned a fresh value on replay, recovery would fail with a divergence.
    let ex = open(dir.path());
    let id = worker(&ex, "clocks", "c");
    let started = std::time::Instant::now();
    let report = ex
        .recover(&id, RecoveryMode::Auto)
        .expect("replay matches the recorded results");
    assert_eq!(report.invocations_replayed, 7);
    assert!(
        started.elapsed() < std::time::Duration::from_millis(20_000),
        "replay must not sleep again"
    );
    // Two random draws differ, two clock reads are ordered: the values are real.
    assert_ne!(results[2], results[4]);
    assert!(results[0].parse::<u64>().unwrap() <= results[3].parse::<u64>().unwrap());
    // And the worker continues live afterwards with fresh values.
    let fresh = invoke(&ex, &id, "random", &[]).unwrap();
    assert_ne!(fresh, results[2]);
}

#[test]
fn the_oplog_records_host_calls_and_output() {
    let dir = tempfile::tempdir().unwrap();
    let ex = open(dir.path());
    add_component(&ex, "counter", "counter");
    let id = worker(&ex, "counter", "w");
    invoke(&ex, &id, "print", &["\"hello from the guest\""]);
    let index: u64 = invoke(&ex, &id, "get-oplog-index", &[])
        .unwrap()
        .parse()
        .unwrap();
    let key1 = invoke(&ex, &id, "idempotency-key", &[]).unwrap();
    let name = invoke(&ex, &id, "self-name", &[]).unwrap();
    assert_eq!(name, "\"w\"");
    let entries: Vec<_> = ex
        .oplog(&id, 1, 1000)
        .unwrap()
        .into_iter()
        .flat_map(|b| match b {
            golemw_runtime::oplog::store::BlockRead::Entries(e) => e,
            golemw_runtime::oplog::store::BlockRead::Corrupt { detail, .. } => panic!("{detail}"),
        })
        .collect();
    let kinds: Vec<_> = entries.iter().map(|(_, e)| e.kind()).collect();
    assert_eq!(kinds[0], "create");
    assert!(kinds.contains(&"log"), "{kinds:?}");
    assert_eq!(
        entries[index as usize - 1].1.kind(),
        "no-op",
        "get-oplog-index points at its no-op"
    );
    drop(ex);
    // After a restart the same idempotency key and oplog index come back from the oplog.
    let ex = open(dir.path());
    let id = worker(&ex, "counter", "w");
    ex.recover(&id, RecoveryMode::Auto).unwrap();
    let key2 = invoke(&ex, &id, "idempotency-key", &[]).unwrap();
    assert_ne!(key1, key2, "a new call generates a new key");
    assert_eq!(key1.len(), 38, "a quoted UUID: {key1}");
}

#[test]
fn an_idempotency_key_runs_the_invocation_once() {
    let dir = tempfile::tempdir().unwrap();
    let ex = open(dir.path());
    add_component(&ex, "counter", "counter");
    let id = worker(&ex, "counter", "w");
    let args = vec!["10".to_string()];
    let first = ex.invoke(&id, "add", &args, Some("key-1")).done().unwrap();
    let again = ex.invoke(&id, "add", &args, Some("key-1")).done().unwrap();
    assert_eq!(first.result.as_deref(), Some("10"));
    assert_eq!(again.result.as_deref(), Some("10"));
    assert!(again.from_idempotency_key);
    drop(ex);
    let ex = open(dir.path());
    let again = ex.invoke(&id, "add", &args, Some("key-1")).done().unwrap();
    assert!(again.from_idempotency_key);
    assert_eq!(invoke(&ex, &id, "get", &[]).as_deref(), Some("10"));
}

#[test]
fn a_diverging_replay_is_detected_and_fails_the_worker() {
    let dir = tempfile::tempdir().unwrap();
    let id;
    {
        let ex = open(dir.path());
        add_component(&ex, "diverge-v1", "div");
        id = worker(&ex, "div", "w");
        assert_eq!(invoke(&ex, &id, "compute", &["1"]).as_deref(), Some("2"));
        // Version 1 returns x+2 for the same call.
        let v2 = std::fs::read(guest_wasm("diverge-v2")).unwrap();
        ex.components().update("div", &v2).unwrap();
    }
    // Point the worker at version 1 behind the executor's back, as a broken update would.
    golemw_tests::set_worker_component_version(dir.path(), &id, 1);
    let ex = open(dir.path());
    let err = ex.recover(&id, RecoveryMode::Auto).unwrap_err();
    match &err {
        Error::Divergence { index, detail, .. } => {
            assert_eq!(*index, 2, "the invocation entry");
            assert!(detail.contains("returned 3 on replay but 2"), "{detail}");
        }
        other => panic!("expected a divergence, got {other}"),
    }
    let record = ex.worker_record(&id).unwrap();
    assert_eq!(record.status, WorkerStatus::Failed);
    assert!(record
        .last_error
        .unwrap()
        .contains("diverged at oplog index 2"));
    // Nothing was overwritten: the oplog still ends with the completed invocation.
    assert_eq!(ex.oplog_len(&id).unwrap(), 3);
}

#[test]
fn every_wit_type_round_trips_through_the_abi() {
    let dir = tempfile::tempdir().unwrap();
    let ex = open(dir.path());
    add_component(&ex, "types", "types");
    let id = worker(&ex, "types", "t");
    let cases: &[(&str, &str)] = &[
        ("echo-bool", "true"),
        ("echo-u8", "255"),
        ("echo-u16", "65535"),
        ("echo-u32", "4294967295"),
        ("echo-u64", "18446744073709551615"),
        ("echo-s8", "-128"),
        ("echo-s16", "-32768"),
        ("echo-s32", "-2147483648"),
        ("echo-s64", "-9223372036854775808"),
        ("echo-f32", "1.5"),
        ("echo-f64", "-0.25"),
        ("echo-char", "'ß'"),
        ("echo-string", "\"héllo \\\"wörld\\\" 🎉\""),
        ("echo-bytes", "[0, 1, 2, 255]"),
        ("echo-strings", "[\"a\", \"\", \"ccc\"]"),
        (
            "echo-record",
            "{a: 7, b: \"bee\", c: 3.25, d: false, e: [1, 2, 3], f: some(-5), g: 'x'}",
        ),
        ("echo-tuple", "(9, \"nine\", 9.5)"),
        ("echo-variant", "rect((1.5, 2.5))"),
        ("echo-variant", "named(\"n\")"),
        ("echo-variant", "point"),
        ("echo-enum", "blue"),
        ("echo-option", "some(\"x\")"),
        ("echo-option", "none"),
        ("echo-result", "ok(5)"),
        ("echo-result", "err(\"bad\")"),
        ("echo-small-flags", "{f0, f9, f11}"),
        ("echo-big-flags", "{b0, b8, b16, b31}"),
        ("echo-big-flags", "{}"),
        (
            "echo-nested",
            "[{name: \"a\", tags: [\"x\", \"y\"], opt: some((-1, 0.5))}, {name: \"b\", tags: []}]",
        ),
    ];
    for (function, value) in cases {
        let result = invoke(&ex, &id, function, &[value]).unwrap();
        assert_eq!(&result, value, "{function}");
    }
    // WAVE leaves out record fields that are `none`; both spellings are accepted as input.
    let explicit = "[{name: \"b\", tags: [], opt: none}]";
    assert_eq!(
        invoke(&ex, &id, "echo-nested", &[explicit]).unwrap(),
        "[{name: \"b\", tags: []}]"
    );
    let big = invoke(&ex, &id, "make-big", &[]).unwrap();
    assert_eq!(invoke(&ex, &id, "echo-big", &[&big]).unwrap(), big);
    let args: Vec<String> = (1..=18).map(|i| i.to_string()).collect();
    let args: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
    assert_eq!(invoke(&ex, &id, "sum18", &args).as_deref(), Some("171"));
    drop(ex);
    // Every one of those invocations replays with the same result.
    let ex = open(dir.path());
    ex.recover(&id, RecoveryMode::Auto)
        .expect("typed invocations replay");
}

#[test]
fn bad_invocations_get_clear_errors_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let ex = open(dir.path());
    add_component(&ex, "counter", "counter");
    let id = worker(&ex, "counter", "w");
    invoke(&ex, &id, "add", &["2"]);
    let len = ex.oplog_len(&id).unwrap();
    let call = |ex: &Executor, f: &str, args: &[&str]| {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        ex.invoke(&id, f, &args, None)
            .done()
            .unwrap_err()
            .to_string()
    };
    let err = call(&ex, "nope", &[]);
    assert!(
        err.contains("unknown function \"nope\"") && err.contains("golemw:counter/api.{add}"),
        "{err}"
    );
    let err = call(&ex, "add", &[]);
    assert!(
        err.contains("takes 1 parameter (n: u64) but 0 were given"),
        "{err}"
    );
    let err = call(&ex, "add", &["1", "2"]);
    assert!(err.contains("but 2 were given"), "{err}");
    let err = call(&ex, "add", &["\"five\""]);
    assert!(err.contains("parameter 1 (n: u64)"), "{err}");
    let err = call(&ex, "add", &["[1,"]);
    assert!(err.contains("parameter 1"), "{err}");
    let err = call(&ex, "add", &["-1"]);
    assert!(err.contains("parameter 1"), "{err}");
    assert_eq!(
        ex.oplog_len(&id).unwrap(),
        len,
        "refused invocations leave no trace"
    );
    assert_eq!(invoke(&ex, &id, "get", &[]).as_deref(), Some("2"));
    let unknown = ex.worker_id("counter", "ghost").unwrap();
    assert!(matches!(
        ex.worker_record(&unknown),
        Err(Error::UnknownWorker(_))
    ));
    assert!(matches!(
        ex.worker_id("nope", "w"),
        Err(Error::UnknownComponent(_))
    ));
}

#[test]
fn bad_modules_are_refused_at_upload_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let ex = open(dir.path());
    let components = ex.components();
    let err = components
        .add("garbage", b"not wasm at all")
        .unwrap_err()
        .to_string();
    assert!(err.contains("not a WebAssembly module"), "{err}");
    let good = std::fs::read(guest_wasm("counter")).unwrap();
    let err = components
        .add("truncated", &good[..good.len() / 2])
        .unwrap_err()
        .to_string();
    assert!(err.contains("not valid WebAssembly"), "{err}");
    let err = components
        .add("plain", &golemw_tests::module_without_component_type())
        .unwrap_err()
        .to_string();
    assert!(err.contains("no `component-type` custom section"), "{err}");
    let err = components
        .add("importer", &golemw_tests::module_with_foreign_import(&good))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("imports `launch-missiles` from `env`"),
        "{err}"
    );
    assert!(components.list().unwrap().is_empty(), "nothing was stored");
    components.add("counter", &good).unwrap();
    let err = components.add("counter", &good).unwrap_err().to_string();
    assert!(err.contains("already exists"), "{err}");
}

#[test]
fn a_compiled_module_is_cached_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    {
        let ex = open(dir.path());
        add_component(&ex, "counter", "counter");
        let id = worker(&ex, "counter", "w");
        invoke(&ex, &id, "add", &["1"]);
    }
    let cached: Vec<_> = std::fs::read_dir(dir.path().join("compiled"))
        .unwrap()
        .collect();
    assert_eq!(cached.len(), 1);
    let ex = open(dir.path());
    let id = worker(&ex, "counter", "w");
    assert_eq!(invoke(&ex, &id, "get", &[]).as_deref(), Some("1"));
}

#[test]
fn a_second_executor_on_the_same_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let _first = open(dir.path());
    let err = Executor::open(dir.path(), ExecutorOptions::default())
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("in use by another golemw process"), "{err}");
}

#[test]
fn a_corrupt_oplog_block_is_reported_with_its_indexes_and_never_replayed() {
    let dir = tempfile::tempdir().unwrap();
    let uid;
    let id;
    {
        let ex = open(dir.path());
        add_component(&ex, "counter", "counter");
        id = worker(&ex, "counter", "w");
        for n in 1..=3 {
            invoke(&ex, &id, "add", &[&n.to_string()]);
        }
        uid = ex.worker_record(&id).unwrap().uid;
    }
    // Entries 4 and 5 are the second invocation, committed as one block.
    golemw_tests::corrupt_oplog_block(dir.path(), &uid, 4);
    let ex = open(dir.path());
    let blocks = ex.oplog(&id, 1, 100).unwrap();
    let corrupt: Vec<_> = blocks
        .iter()
        .filter_map(|b| match b {
            golemw_runtime::oplog::store::BlockRead::Corrupt {
                first,
                last,
                detail,
            } => Some((*first, *last, detail.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(corrupt.len(), 1, "one block is damaged");
    assert_eq!((corrupt[0].0, corrupt[0].1), (4, 5));
    assert!(corrupt[0].2.contains("checksum"), "{}", corrupt[0].2);
    let err = ex.recover(&id, RecoveryMode::Auto).unwrap_err().to_string();
    assert!(
        err.contains("entries 4..=5") && err.contains("checksum"),
        "{err}"
    );
}

#[test]
fn a_replay_that_makes_a_different_host_call_names_the_index_and_the_calls() {
    let dir = tempfile::tempdir().unwrap();
    let id;
    {
        let ex = open(dir.path());
        add_component(&ex, "clocks", "clocks");
        id = worker(&ex, "clocks", "w");
        invoke(&ex, &id, "now", &[]);
    }
    // Rewrite the recorded invocation to call `random` instead of `now`: replay then meets a
    // random_get where the oplog has a clock_time_get.
    golemw_tests::rewrite_invoked_function(dir.path(), &id, "golemw:clocks/api#random");
    let ex = open(dir.path());
    let err = ex.recover(&id, RecoveryMode::Auto).unwrap_err().to_string();
    assert!(err.contains("diverged at oplog index 3"), "{err}");
    assert!(
        err.contains("wasi:random_get") && err.contains("wasi:clock_time_get"),
        "{err}"
    );
    assert_eq!(err.matches("diverged").count(), 1, "said once: {err}");
}

#[test]
fn a_worker_created_by_its_first_invocation_is_stored_by_that_invocations_commit() {
    let dir = tempfile::tempdir().unwrap();
    let options = || ExecutorOptions {
        snapshot_policy: golemw_runtime::SnapshotPolicy::Off,
        ..ExecutorOptions::default()
    };
    let ex = Executor::open(dir.path(), options()).unwrap();
    add_component(&ex, "init", "init");
    // What an invocation of a stored, active worker costs: one commit, one sync.
    let known = worker(&ex, "init", "known");
    ex.create_worker(&known, Vec::new(), Vec::new()).unwrap();
    invoke(&ex, &known, "add", &["1"]);
    let before = ex.storage().io_counts();
    invoke(&ex, &known, "add", &["1"]);
    let warm = ex.storage().io_counts();
    assert_eq!(
        (warm.commits - before.commits, warm.syncs - before.syncs),
        (1, 1)
    );

    // Invoking a new name creates the worker at no extra commit or sync.
    let fresh = worker(&ex, "init", "fresh");
    let started = invoke(&ex, &fresh, "started-at", &[]).unwrap();
    let after = ex.storage().io_counts();
    assert_eq!(
        (after.commits - warm.commits, after.syncs - warm.syncs),
        (1, 1),
        "creation shares the invocation's commit"
    );
    // An invocation that names no function of the component, or gives wrong parameters, is
    // refused before it creates anything: no commit, no worker.
    let refused = worker(&ex, "init", "refused");
    let err = ex.invoke(&refused, "nope", &[], None).done().unwrap_err();
    assert!(err.to_string().contains("unknown function"), "{err}");
    let err = ex.invoke(&refused, "add", &[], None).done().unwrap_err();
    assert!(matches!(err, Error::InvalidArguments(_)), "{err}");
    let err = ex
        .invoke(&refused, "add", &["\"one\"".to_string()], None)
        .done()
        .unwrap_err();
    assert!(matches!(err, Error::InvalidArguments(_)), "{err}");
    assert_eq!(ex.storage().io_counts(), after, "nothing was written");
    assert!(matches!(
        ex.worker_record(&refused),
        Err(Error::UnknownWorker(_))
    ));
    drop(ex);

    let ex = Executor::open(dir.path(), options()).unwrap();
    let entries = |ex: &Executor, id: &WorkerId| -> Vec<String> {
        ex.oplog(id, 1, 100)
            .unwrap()
            .into_iter()
            .flat_map(|block| match block {
                golemw_runtime::oplog::store::BlockRead::Entries(entries) => entries,
                golemw_runtime::oplog::store::BlockRead::Corrupt { detail, .. } => {
                    panic!("{detail}")
                }
            })
            .map(|(_, entry)| entry.kind().to_string())
            .collect()
    };
    // create, _initialize's clock and random calls, then the invocation.
    let fresh_entries = entries(&ex, &fresh);
    assert_eq!(
        &fresh_entries[..3],
        [
            "create",
            "imported-function-invoked",
            "imported-function-invoked"
        ]
    );
    assert!(
        fresh_entries[3..].contains(&"exported-function-completed".to_string()),
        "{fresh_entries:?}"
    );
    assert_eq!(
        invoke(&ex, &fresh, "started-at", &[]).unwrap(),
        started,
        "the start code's host calls replay from the invocation's commit"
    );
    assert_eq!(
        ex.worker_record(&fresh).unwrap().oplog_len,
        ex.oplog_len(&fresh).unwrap()
    );
    assert!(matches!(
        ex.worker_record(&refused),
        Err(Error::UnknownWorker(_))
    ));
    invoke(&ex, &refused, "started-at", &[]);
}

/// A result is stored under its idempotency key when the caller gave the key (it may repeat
/// it); an invocation without one writes no such row (its generated key is known to no one),
/// and its result is in the oplog all the same.
#[test]
fn a_result_is_kept_under_its_idempotency_key_only_when_the_caller_gave_one() {
    let dir = tempfile::tempdir().unwrap();
    let ex = Executor::open(dir.path(), ExecutorOptions::default()).unwrap();
    add_component(&ex, "counter", "counter");
    let id = worker(&ex, "counter", "w");
    let rows = |ex: &Executor| -> usize {
        use lmdb::{Cursor, Transaction};
        let uid = ex.worker_record(&id).unwrap().uid;
        let txn = ex.storage().env().begin_ro_txn().unwrap();
        let mut cursor = txn
            .open_ro_cursor(ex.storage().tables().invocations)
            .unwrap();
        cursor
            .iter_from(uid.as_bytes())
            .map(Result::unwrap)
            .take_while(|(key, _)| key.starts_with(uid.as_bytes()))
            .count()
    };
    assert_eq!(invoke(&ex, &id, "add", &["2"]).as_deref(), Some("2"));
    assert_eq!(invoke(&ex, &id, "add", &["3"]).as_deref(), Some("5"));
    assert_eq!(rows(&ex), 0);
    let keyed = ex
        .invoke(&id, "add", &["4".into()], Some("k"))
        .done()
        .unwrap();
    assert_eq!(
        (keyed.result.as_deref(), keyed.from_idempotency_key),
        (Some("9"), false)
    );
    assert_eq!(rows(&ex), 1);
    drop(ex);

    let ex = Executor::open(dir.path(), ExecutorOptions::default()).unwrap();
    let again = ex
        .invoke(&id, "add", &["4".into()], Some("k"))
        .done()
        .unwrap();
    assert_eq!(
        (again.result.as_deref(), again.from_idempotency_key),
        (Some("9"), true)
    );
    let completed: Vec<Option<String>> = golemw_tests::oplog_entries(&ex, &id)
        .into_iter()
        .filter_map(|(_, entry)| match entry {
            golemw_runtime::oplog::OplogEntry::ExportedFunctionCompleted { result, .. } => {
                Some(result)
            }
            _ => None,
        })
        .collect();
    assert_eq!(
        completed,
        [
            Some("2".to_string()),
            Some("5".to_string()),
            Some("9".to_string())
        ]
    );
    assert_eq!(invoke(&ex, &id, "get", &[]).as_deref(), Some("9"));
}
