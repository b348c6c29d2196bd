//! Worker enumeration through `golem:api/host.get-workers`, from a guest built with wit-bindgen:
//! every filter kind, any-of-all-of combinations, paging, the `precise` flag, resource handles
//! and their drop, and replay of an enumeration. Real LMDB in temp dirs, real Wasmer.

use golemw_tests::Completes;
use std::path::Path;

use golemw_runtime::oplog::store::BlockRead;
use golemw_runtime::oplog::{HostFunction, OplogEntry};
use golemw_runtime::{
    Error, Executor, ExecutorOptions, RecoveryMode, SnapshotPolicy, WorkerId, WorkerStatus,
};
use golemw_tests::guest_wasm;

const COMPONENT: &str = "enum";

fn open_with(dir: &Path, page_size: usize) -> std::sync::Arc<Executor> {
    let options = ExecutorOptions {
        enumeration_page_size: page_size,
        snapshot_policy: SnapshotPolicy::Off,
        ..ExecutorOptions::default()
    };
    Executor::open(dir, options).expect("open the data directory")
}

fn open(dir: &Path) -> std::sync::Arc<Executor> {
    open_with(dir, 100)
}

fn add_component(executor: &Executor) {
    let wasm = std::fs::read(guest_wasm("enumerate")).unwrap();
    executor.components().add(COMPONENT, &wasm).unwrap();
}

fn id(executor: &Executor, name: &str) -> WorkerId {
    executor.worker_id(COMPONENT, name).unwrap()
}

fn create(executor: &Executor, name: &str, env: &[(&str, &str)]) {
    let env = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let worker = id(executor, name);
    executor
        .create_worker(&worker, vec![format!("arg-of-{name}")], env)
        .unwrap();
    // Creation times are in ms: keep them apart so created-at filters can tell them apart.
    std::thread::sleep(std::time::Duration::from_millis(3));
}

fn invoke(executor: &Executor, worker: &str, function: &str, args: &[&str]) -> String {
    let worker = id(executor, worker);
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    executor
        .invoke(&worker, function, &args, None)
        .done()
        .unwrap_or_else(|e| panic!("{function}({args:?}) failed: {e}"))
        .result
        .unwrap_or_default()
}

fn invoke_err(executor: &Executor, worker: &str, function: &str, args: &[&str]) -> Error {
    let worker = id(executor, worker);
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    match executor.invoke(&worker, function, &args, None).done() {
        Ok(outcome) => panic!("{function}({args:?}) should fail, returned {outcome:?}"),
        Err(err) => err,
    }
}

/// `some(worker-any-filter)` from all-filters given as lists of property filters in WAVE.
fn any(all: &[&[&str]]) -> String {
    let all: Vec<String> = all
        .iter()
        .map(|props| format!("{{filters: [{}]}}", props.join(", ")))
        .collect();
    format!("some({{filters: [{}]}})", all.join(", "))
}

fn name(comparator: &str, value: &str) -> String {
    format!("name({{comparator: {comparator}, value: \"{value}\"}})")
}

fn status(comparator: &str, value: &str) -> String {
    format!("status({{comparator: {comparator}, value: {value}}})")
}

fn version(comparator: &str, value: u64) -> String {
    format!("version({{comparator: {comparator}, value: {value}}})")
}

fn created_at(comparator: &str, value: u64) -> String {
    format!("created-at({{comparator: {comparator}, value: {value}}})")
}

fn env(var: &str, comparator: &str, value: &str) -> String {
    format!("env({{name: \"{var}\", comparator: {comparator}, value: \"{value}\"}})")
}

/// Parses a WAVE `list<list<string>>` (strings without quotes or escapes).
fn pages(wave: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let mut depth = 0;
    let mut in_string = false;
    let mut current = String::new();
    for c in wave.chars() {
        match (in_string, c) {
            (true, '"') => {
                in_string = false;
                out.last_mut()
                    .map(|p: &mut Vec<String>| p.push(std::mem::take(&mut current)))
                    .expect("a string inside a page");
            }
            (true, c) => current.push(c),
            (false, '"') => in_string = true,
            (false, '[') => {
                depth += 1;
                if depth == 2 {
                    out.push(Vec::new());
                }
            }
            (false, ']') => depth -= 1,
            _ => {}
        }
    }
    out
}

/// The names a `pages` call returns, all pages flattened.
fn names(executor: &Executor, filter: &str, precise: bool) -> Vec<String> {
    let result = invoke(executor, "lister", "pages", &[filter, &precise.to_string()]);
    pages(&result).concat()
}

/// Workers of the filter tests, in name (byte) order: acc-1 acc-10 acc-2 bob carol lister.
/// carol and lister run version 1, the rest version 0; bob has failed; lister runs the
/// enumerations (status `running` while it does).
fn population(dir: &Path) -> (std::sync::Arc<Executor>, u64) {
    let ex = open(dir);
    add_component(&ex);
    create(&ex, "acc-1", &[("REGION", "eu-west"), ("TIER", "gold")]);
    create(&ex, "acc-2", &[("REGION", "us-east")]);
    create(&ex, "acc-10", &[]);
    create(&ex, "bob", &[("REGION", "eu-north")]);
    let bob_created = ex.worker_record(&id(&ex, "bob")).unwrap().created_at_ms;
    let err = invoke_err(&ex, "bob", "fail", &[]);
    assert!(matches!(err, Error::Trap { .. }), "{err}");
    let wasm = std::fs::read(guest_wasm("enumerate")).unwrap();
    ex.components().update(COMPONENT, &wasm).unwrap();
    create(&ex, "carol", &[]);
    create(&ex, "lister", &[]);
    (ex, bob_created)
}

#[test]
fn every_filter_kind_selects_the_right_workers() {
    let dir = tempfile::tempdir().unwrap();
    let (ex, bob_created) = population(dir.path());
    let all = ["acc-1", "acc-10", "acc-2", "bob", "carol", "lister"];
    let cases: Vec<(String, Vec<&str>)> = vec![
        // No filter: every worker of the component, in name order.
        ("none".into(), all.to_vec()),
        // Names: equal, not-equal, like with % and _, not-like.
        (any(&[&[&name("equal", "acc-1")]]), vec!["acc-1"]),
        (any(&[&[&name("equal", "acc")]]), vec![]),
        (
            any(&[&[&name("not-equal", "lister")]]),
            vec!["acc-1", "acc-10", "acc-2", "bob", "carol"],
        ),
        (
            any(&[&[&name("like", "acc-%")]]),
            vec!["acc-1", "acc-10", "acc-2"],
        ),
        (any(&[&[&name("like", "acc-_")]]), vec!["acc-1", "acc-2"]),
        (any(&[&[&name("like", "%o%")]]), vec!["bob", "carol"]),
        (any(&[&[&name("like", "acc")]]), vec![]),
        (any(&[&[&name("like", "%")]]), all.to_vec()),
        (
            any(&[&[&name("not-like", "acc-%")]]),
            vec!["bob", "carol", "lister"],
        ),
        // Statuses, ordered as declared: running < idle < ... < failed < exited.
        (any(&[&[&status("equal", "failed")]]), vec!["bob"]),
        (any(&[&[&status("equal", "running")]]), vec!["lister"]),
        (
            any(&[&[&status("equal", "idle")]]),
            vec!["acc-1", "acc-10", "acc-2", "carol"],
        ),
        (
            any(&[&[&status("not-equal", "idle")]]),
            vec!["bob", "lister"],
        ),
        (any(&[&[&status("greater-equal", "retrying")]]), vec!["bob"]),
        (any(&[&[&status("less", "idle")]]), vec!["lister"]),
        (any(&[&[&status("equal", "exited")]]), vec![]),
        // Component versions.
        (any(&[&[&version("equal", 1)]]), vec!["carol", "lister"]),
        (
            any(&[&[&version("less", 1)]]),
            vec!["acc-1", "acc-10", "acc-2", "bob"],
        ),
        (any(&[&[&version("greater", 1)]]), vec![]),
        // Creation times (ms since the epoch).
        (
            any(&[&[&created_at("greater-equal", bob_created)]]),
            vec!["bob", "carol", "lister"],
        ),
        (
            any(&[&[&created_at("less", bob_created)]]),
            vec!["acc-1", "acc-10", "acc-2"],
        ),
        (any(&[&[&created_at("equal", bob_created)]]), vec!["bob"]),
        // Environment variables; a worker without the variable never matches.
        (
            any(&[&[&env("REGION", "like", "eu-%")]]),
            vec!["acc-1", "bob"],
        ),
        (any(&[&[&env("REGION", "equal", "us-east")]]), vec!["acc-2"]),
        (any(&[&[&env("REGION", "not-like", "eu-%")]]), vec!["acc-2"]),
        (
            any(&[&[&env("REGION", "not-equal", "x")]]),
            vec!["acc-1", "acc-2", "bob"],
        ),
        (any(&[&[&env("TIER", "equal", "gold")]]), vec!["acc-1"]),
        // any-of-all-of: (acc-% and REGION us-east) or failed.
        (
            any(&[
                &[&name("like", "acc-%"), &env("REGION", "equal", "us-east")],
                &[&status("equal", "failed")],
            ]),
            vec!["acc-2", "bob"],
        ),
        // all-of: every condition must hold.
        (
            any(&[&[&name("like", "acc-%"), &version("greater-equal", 1)]]),
            vec![],
        ),
        (
            any(&[&[
                &env("REGION", "like", "eu-%"),
                &status("not-equal", "failed"),
            ]]),
            vec!["acc-1"],
        ),
        // Overlapping all-filters return each worker once.
        (
            any(&[&[&name("like", "acc-%")], &[&name("like", "%-1%")]]),
            vec!["acc-1", "acc-10", "acc-2"],
        ),
        // An empty any-filter matches nothing; an empty all-filter matches everything.
        ("some({filters: []})".into(), vec![]),
        (any(&[&[]]), all.to_vec()),
    ];
    for (filter, expected) in &cases {
        for precise in [false, true] {
            assert_eq!(
                names(&ex, filter, precise),
                *expected,
                "filter {filter}, precise {precise}"
            );
        }
    }
}

#[test]
fn metadata_matches_the_worker_records() {
    let dir = tempfile::tempdir().unwrap();
    let (ex, _) = population(dir.path());
    let result = invoke(
        &ex,
        "lister",
        "metadata",
        &[&any(&[&[&name("equal", "acc-1")]]), "true"],
    );
    let component = ex.components().resolve_id(COMPONENT).unwrap();
    let (high, low) = component.0.as_u64_pair();
    assert_eq!(
        result,
        format!(
            "[{{worker-id: {{component-id: {{uuid: {{high-bits: {high}, low-bits: {low}}}}}, \
             worker-name: \"acc-1\"}}, args: [\"arg-of-acc-1\"], \
             env: [(\"REGION\", \"eu-west\"), (\"TIER\", \"gold\")], status: idle, \
             component-version: 0, retry-count: 0}}]"
        )
    );
    // The enumerating worker sees itself running, on the version it was created on.
    let me = invoke(
        &ex,
        "lister",
        "metadata",
        &[&any(&[&[&name("equal", "lister")]]), "false"],
    );
    assert!(
        me.contains("worker-name: \"lister\"")
            && me.contains("status: running")
            && me.contains("component-version: 1"),
        "{me}"
    );
}

#[test]
fn results_come_in_pages_until_get_next_returns_none() {
    let dir = tempfile::tempdir().unwrap();
    let ex = open_with(dir.path(), 2);
    add_component(&ex);
    for n in ["w1", "w2", "w3", "w4", "w5"] {
        create(&ex, n, &[]);
    }
    create(&ex, "zz-lister", &[]);
    let lister = |ex: &Executor, filter: &str, precise: bool| {
        let worker = id(ex, "zz-lister");
        let out = ex
            .invoke(
                &worker,
                "pages",
                &[filter.into(), precise.to_string()],
                None,
            )
            .done()
            .unwrap();
        pages(&out.result.unwrap())
    };
    for precise in [false, true] {
        assert_eq!(
            lister(&ex, "none", precise),
            vec![vec!["w1", "w2"], vec!["w3", "w4"], vec!["w5", "zz-lister"]],
            "precise {precise}"
        );
        // Pages hold matching workers only, and are full until the last one.
        assert_eq!(
            lister(&ex, &any(&[&[&name("not-equal", "w2")]]), precise),
            vec![vec!["w1", "w3"], vec!["w4", "w5"], vec!["zz-lister"]]
        );
        assert_eq!(
            lister(&ex, &any(&[&[&name("like", "w_")]]), precise),
            vec![vec!["w1", "w2"], vec!["w3", "w4"], vec!["w5"]]
        );
        // Nothing matches: the first get-next returns none.
        assert!(lister(&ex, &any(&[&[&name("equal", "nobody")]]), precise).is_empty());
    }
    // Page by page through a handle kept open across invocations; after none, none again.
    let h = invoke(&ex, "zz-lister", "open", &["none", "false"]);
    let next = |ex: &Executor| invoke(ex, "zz-lister", "next", &[&h]);
    assert_eq!(next(&ex), "some([\"w1=idle\", \"w2=idle\"])");
    assert_eq!(next(&ex), "some([\"w3=idle\", \"w4=idle\"])");
    assert_eq!(next(&ex), "some([\"w5=idle\", \"zz-lister=running\"])");
    assert_eq!(next(&ex), "none");
    assert_eq!(next(&ex), "none");
}

#[test]
fn precise_reads_the_latest_records_and_not_precise_the_snapshot_at_construction() {
    let dir = tempfile::tempdir().unwrap();
    let ex = open(dir.path());
    add_component(&ex);
    create(&ex, "a", &[]);
    create(&ex, "b", &[]);
    create(&ex, "lister", &[]);
    let cached = invoke(&ex, "lister", "open", &["none", "false"]);
    let precise = invoke(&ex, "lister", "open", &["none", "true"]);
    assert_eq!((cached.as_str(), precise.as_str()), ("1", "2"), "handles");
    // After construction: b fails, a new worker appears.
    invoke_err(&ex, "b", "fail", &[]);
    assert_eq!(
        ex.worker_record(&id(&ex, "b")).unwrap().status,
        WorkerStatus::Failed
    );
    create(&ex, "m-new", &[]);
    assert_eq!(
        invoke(&ex, "lister", "next", &[&cached]),
        "some([\"a=idle\", \"b=idle\", \"lister=running\"])",
        "not precise: the records as they were when the enumeration was constructed"
    );
    assert_eq!(
        invoke(&ex, "lister", "next", &[&precise]),
        "some([\"a=idle\", \"b=failed\", \"lister=running\", \"m-new=idle\"])",
        "precise: the latest records"
    );
    assert_eq!(invoke(&ex, "lister", "next", &[&cached]), "none");
    assert_eq!(invoke(&ex, "lister", "next", &[&precise]), "none");
    // A fresh non-precise enumeration sees the new state.
    assert_eq!(names(&ex, "none", false), vec!["a", "b", "lister", "m-new"]);
    assert_eq!(
        invoke(
            &ex,
            "lister",
            "pages",
            &[&any(&[&[&status("equal", "failed")]]), "false"]
        ),
        "[[\"b\"]]"
    );
}

#[test]
fn a_dropped_handle_cannot_be_used() {
    let dir = tempfile::tempdir().unwrap();
    let ex = open(dir.path());
    add_component(&ex);
    create(&ex, "user", &[]);
    let h = invoke(&ex, "user", "open", &["none", "true"]);
    assert_eq!(
        invoke(&ex, "user", "next-raw", &[&h]),
        "some([\"user=running\"])",
        "the handle works before it is dropped"
    );
    invoke(&ex, "user", "close", &[&h]);
    let err = invoke_err(&ex, "user", "next-raw", &[&h]);
    let message = err.to_string();
    assert!(
        message.contains("[method]get-workers.get-next on get-workers handle 1, which was dropped"),
        "{message}"
    );
    let record = ex.worker_record(&id(&ex, "user")).unwrap();
    assert_eq!(record.status, WorkerStatus::Failed);

    // Dropping twice traps too, and so does a handle the host never gave out.
    create(&ex, "twice", &[]);
    let h = invoke(&ex, "twice", "open", &["none", "false"]);
    invoke(&ex, "twice", "drop-raw", &[&h]);
    let err = invoke_err(&ex, "twice", "drop-raw", &[&h]);
    assert!(
        err.to_string()
            .contains("[resource-drop]get-workers on get-workers handle 1, which was dropped"),
        "{err}"
    );
    create(&ex, "stranger", &[]);
    let err = invoke_err(&ex, "stranger", "next-raw", &["7"]);
    assert!(
        err.to_string()
            .contains("get-workers handle 7, which this worker was never given"),
        "{err}"
    );

    // The trap is in the oplog: recovery reproduces it (the same handle numbers, the same drop).
    drop(ex);
    let ex = open(dir.path());
    for worker in ["user", "twice", "stranger"] {
        let worker = id(&ex, worker);
        ex.recover(&worker, RecoveryMode::FullReplay)
            .expect("replay reproduces the trap");
        assert_eq!(
            ex.worker_record(&worker).unwrap().status,
            WorkerStatus::Failed
        );
    }
}

fn get_workers_entries(ex: &Executor, worker: &WorkerId) -> Vec<(String, String)> {
    ex.oplog(worker, 1, 10_000)
        .unwrap()
        .into_iter()
        .flat_map(|block| match block {
            BlockRead::Entries(entries) => entries,
            BlockRead::Corrupt { detail, .. } => panic!("{detail}"),
        })
        .filter_map(|(_, entry)| match entry {
            OplogEntry::ImportedFunctionInvoked {
                function: HostFunction::Golem(function),
                response,
                ..
            } if function.contains("get-workers") => Some((function, response.to_string())),
            _ => None,
        })
        .collect()
}

#[test]
fn an_enumerating_worker_recovers_identically() {
    let dir = tempfile::tempdir().unwrap();
    let (first_pages, handle, first_next, state) = {
        let ex = open_with(dir.path(), 2);
        add_component(&ex);
        for n in ["a", "b", "c", "d", "e"] {
            create(&ex, n, &[]);
        }
        create(&ex, "lister", &[]);
        let first_pages = invoke(&ex, "lister", "pages", &["none", "true"]);
        let handle = invoke(&ex, "lister", "open", &["none", "false"]);
        let first_next = invoke(&ex, "lister", "next", &[&handle]);
        let lister = id(&ex, "lister");
        let entries = get_workers_entries(&ex, &lister);
        let kinds: Vec<&str> = entries.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!(
            kinds,
            [
                "[constructor]get-workers",
                "[method]get-workers.get-next",
                "[method]get-workers.get-next",
                "[method]get-workers.get-next",
                "[method]get-workers.get-next",
                "[constructor]get-workers",
                "[method]get-workers.get-next",
            ],
            "every constructor and get-next is recorded"
        );
        assert_eq!(entries[0].1, "1", "the handle is recorded");
        assert_eq!(entries[4].1, "none");
        let state = ex.state_digest(&lister, RecoveryMode::FullReplay).unwrap();
        (first_pages, handle, first_next, state)
    };
    assert_eq!(
        first_pages,
        "[[\"a\", \"b\"], [\"c\", \"d\"], [\"e\", \"lister\"]]"
    );
    assert_eq!(first_next, "some([\"a=idle\", \"b=idle\"])");

    // Change the worker table under the recorded enumeration: replay must not read it.
    {
        let ex = open_with(dir.path(), 2);
        let a = id(&ex, "a");
        ex.delete_worker(&a).unwrap();
        invoke_err(&ex, "c", "fail", &[]);
        create(&ex, "b2", &[]);
    }
    let ex = open_with(dir.path(), 2);
    let lister = id(&ex, "lister");
    let report = ex.recover(&lister, RecoveryMode::FullReplay).unwrap();
    assert_eq!(report.invocations_replayed, 3);
    assert_eq!(
        ex.state_digest(&lister, RecoveryMode::FullReplay).unwrap(),
        state,
        "the replayed instance is identical"
    );
    // Live again, the open enumeration continues after the last page it returned ("b"), from a
    // fresh snapshot of the records.
    assert_eq!(
        invoke(&ex, "lister", "next", &[&handle]),
        "some([\"b2=idle\", \"c=failed\"])"
    );

    // The same from a memory snapshot: the open enumeration is part of its host state.
    ex.snapshot(&lister).unwrap();
    drop(ex);
    let ex = open_with(dir.path(), 2);
    let report = ex.recover(&lister, RecoveryMode::Auto).unwrap();
    assert!(report.snapshot_index.is_some(), "{report:?}");
    assert_eq!(
        invoke(&ex, "lister", "next", &[&handle]),
        "some([\"d=idle\", \"e=idle\"])"
    );
    assert_eq!(
        invoke(&ex, "lister", "next", &[&handle]),
        "some([\"lister=running\"])"
    );
    assert_eq!(invoke(&ex, "lister", "next", &[&handle]), "none");
    // And the next enumeration gets the next handle.
    assert_eq!(invoke(&ex, "lister", "open", &["none", "true"]), "3");
}

#[test]
fn a_worker_created_by_the_invocation_that_enumerates_lists_itself() {
    // Such a worker is stored by its invocation's first commit, after the enumeration: it must
    // still be listed, once, in its place by name, on whichever page that falls.
    let dir = tempfile::tempdir().unwrap();
    let ex = open_with(dir.path(), 2);
    add_component(&ex);
    for n in ["b", "d"] {
        create(&ex, n, &[]);
    }
    for (new, expected) in [
        ("a", vec![vec!["a", "b"], vec!["d"]]),
        ("c", vec![vec!["a", "b"], vec!["c", "d"]]),
        ("e", vec![vec!["a", "b"], vec!["c", "d"], vec!["e"]]),
    ] {
        for precise in [false, true] {
            let worker = id(&ex, new);
            let listed = ex
                .invoke(
                    &worker,
                    "pages",
                    &["none".into(), precise.to_string()],
                    None,
                )
                .done()
                .unwrap()
                .result
                .unwrap();
            assert_eq!(pages(&listed), expected, "{new}, precise {precise}");
        }
    }
    // Filters apply to it like to any other: its status while it enumerates is `running`.
    let metadata = |ex: &Executor, worker: &str, filter: &str| {
        let worker = id(ex, worker);
        ex.invoke(&worker, "metadata", &[filter.into(), "true".into()], None)
            .done()
            .unwrap()
            .result
            .unwrap()
    };
    let running = metadata(&ex, "f", &any(&[&[&status("equal", "running")]]));
    assert!(
        running.contains("worker-name: \"f\"") && running.matches("worker-name").count() == 1,
        "{running}"
    );
    let others = metadata(&ex, "g", &any(&[&[&name("not-equal", "g")]]));
    assert_eq!(
        others.matches("worker-name").count(),
        6,
        "a b c d e f: {others}"
    );
    assert!(!others.contains("worker-name: \"g\""), "{others}");
}
