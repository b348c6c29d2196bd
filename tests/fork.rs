//! Forks: a new worker from another's history up to an oplog index, its state restored from
//! the nearest snapshot whose pages it shares with the source. A fork equals a full replay of
//! the prefix, lives on independently, survives the deletion of its source (and the source
//! survives the fork's), copies no page, and is refused where its source was not idle.

use golemw_tests::Completes;
use std::sync::Arc;
use std::time::Instant;

use golemw_runtime::history::UpdateMode;
use golemw_runtime::{
    snapshots, Deferred, Error, Executor, ExecutorOptions, Invoked, RecoveryMode, SnapshotPolicy,
    WorkerId, WorkerStatus,
};
use golemw_tests::{guest_wasm, invoke_text as invoke, try_invoke};

fn open_with(dir: &std::path::Path, policy: &str, keep: usize) -> Arc<Executor> {
    let options = ExecutorOptions {
        snapshot_policy: policy.parse::<SnapshotPolicy>().unwrap(),
        snapshots_keep: keep,
        fsync: false,
        ..ExecutorOptions::default()
    };
    Executor::open(dir, options).expect("open the data directory")
}

fn open(dir: &std::path::Path, policy: &str) -> Arc<Executor> {
    open_with(dir, policy, 64)
}

fn setup(dir: &std::path::Path, policy: &str, guest: &str) -> (Arc<Executor>, WorkerId) {
    let ex = open(dir, policy);
    let wasm = std::fs::read(guest_wasm(guest)).unwrap();
    ex.components().add(guest, &wasm).expect("add component");
    let id = ex.worker_id(guest, "w").unwrap();
    (ex, id)
}

fn named(ex: &Executor, id: &WorkerId, name: &str) -> WorkerId {
    ex.worker_id(&id.component_id.to_string(), name).unwrap()
}

/// Nothing damaged, by `golemw check`'s reading of every table.
fn assert_undamaged(ex: &Executor) {
    let report = golemw_runtime::check::check(ex.storage(), |_| {}).unwrap();
    assert!(
        report.findings.is_empty(),
        "check found damage: {:#?}",
        report.findings
    );
}

/// The recovery of `id` from storage in `mode`, and the state it reached.
fn recovered(
    ex: &Executor,
    id: &WorkerId,
    mode: RecoveryMode,
) -> (golemw_runtime::RecoveryReport, String) {
    let digest = ex.state_digest(id, mode).unwrap();
    let report = ex.worker_record(id).unwrap().last_recovery.unwrap();
    (report, digest)
}

/// Forking `w` as `f` at `at` is refused with an `InvalidFork` error that says `says`.
fn assert_fork_refused(ex: &Executor, w: &WorkerId, at: Option<u64>, says: &str) {
    match ex.fork_worker(w, "f", at) {
        Err(err @ Error::InvalidFork { .. }) => {
            assert!(err.to_string().contains(says), "fork at {at:?}: {err}")
        }
        other => panic!("fork at {at:?} should be refused, got {other:?}"),
    }
}

/// The indexes of `w`'s `exported-function-invoked` entries, oldest first.
fn invocation_starts(ex: &Executor, w: &WorkerId) -> Vec<u64> {
    golemw_tests::oplog_entries(ex, w)
        .into_iter()
        .filter(|(_, e)| {
            matches!(
                e,
                golemw_runtime::oplog::OplogEntry::ExportedFunctionInvoked { .. }
            )
        })
        .map(|(index, _)| index)
        .collect()
}

#[test]
fn a_fork_at_the_end_or_earlier_equals_a_full_replay_of_the_prefix_and_restores_from_a_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let (ex, w) = setup(dir.path(), "invocations:2", "counter");
    // After each invocation: the oplog length, the counter, and the live state's digest.
    let mut points = Vec::new();
    for n in 1..=7u64 {
        let value = invoke(&ex, &w, "add", &[&n.to_string()]);
        points.push((
            ex.oplog_len(&w).unwrap(),
            value,
            ex.active_state_digest(&w).unwrap(),
        ));
    }
    let source_snapshots =
        snapshots::indexes(ex.storage(), &ex.worker_record(&w).unwrap().uid).unwrap();
    assert_eq!(source_snapshots.len(), 3, "{source_snapshots:?}");

    // At the end (the default), and after the third invocation (between two snapshots).
    let at_end = ex.fork_worker(&w, "end", None).unwrap();
    let (last_len, last_value, last_digest) = points[6].clone();
    assert_eq!(at_end.oplog_index, last_len);
    let (mid_len, mid_value, mid_digest) = points[2].clone();
    let mid = ex.fork_worker(&w, "mid", Some(mid_len)).unwrap();
    assert_eq!(mid.oplog_index, mid_len);
    // The fork got the snapshots at or before its index, nothing else.
    assert_eq!(mid.snapshots, vec![source_snapshots[0]]);
    assert_eq!(at_end.snapshots, source_snapshots);
    for fork in [&at_end, &mid] {
        assert_eq!(fork.worker.status, WorkerStatus::Idle);
        assert_eq!(fork.worker.oplog_len, fork.oplog_index);
        assert_eq!(ex.oplog_len(&fork.worker.id).unwrap(), fork.oplog_index);
        assert_ne!(fork.worker.uid, ex.worker_record(&w).unwrap().uid);
    }
    // Its oplog is the source's prefix, entry for entry.
    let source_entries = golemw_tests::oplog_entries(&ex, &w);
    assert_eq!(
        golemw_tests::oplog_entries(&ex, &mid.worker.id),
        source_entries[..mid_len as usize].to_vec()
    );
    assert_eq!(
        golemw_tests::oplog_entries(&ex, &at_end.worker.id),
        source_entries
    );
    drop(ex);

    let ex = open(dir.path(), "invocations:2");
    for (fork, len, digest) in [
        (&at_end, last_len, &last_digest),
        (&mid, mid_len, &mid_digest),
    ] {
        let id = &fork.worker.id;
        let (report, restored) = recovered(&ex, id, RecoveryMode::Auto);
        // From the nearest snapshot, replaying only the tail.
        let nearest = *fork.snapshots.last().unwrap();
        assert_eq!(report.snapshot_index, Some(nearest), "{report:?}");
        assert_eq!(report.entries_replayed, len - nearest, "{report:?}");
        assert!(report.entries_replayed < len / 2, "{report:?}");
        let (full_report, full) = recovered(&ex, id, RecoveryMode::FullReplay);
        assert_eq!(full_report.snapshot_index, None);
        assert_eq!(full_report.entries_replayed, len);
        assert_eq!(
            restored, full,
            "{id}: restored state differs from a full replay"
        );
        assert_eq!(&full, digest, "{id}: not the source's state at {len}");
    }
    assert_eq!(invoke(&ex, &at_end.worker.id, "get", &[]), last_value);
    assert_eq!(invoke(&ex, &mid.worker.id, "get", &[]), mid_value);
    assert_eq!(mid_value, "6");
    assert_undamaged(&ex);
}

#[test]
fn source_and_fork_live_independent_lives() {
    let dir = tempfile::tempdir().unwrap();
    let (ex, w) = setup(dir.path(), "invocations:1", "counter");
    invoke(&ex, &w, "add", &["10"]);
    let fork = ex.fork_worker(&w, "f", None).unwrap();
    let f = fork.worker.id.clone();
    assert_eq!(invoke(&ex, &f, "add", &["1"]), "11");
    assert_eq!(invoke(&ex, &w, "add", &["100"]), "110");
    assert_eq!(invoke(&ex, &f, "add", &["1"]), "12");
    // Each knows its own name (recorded live after the fork).
    assert_eq!(invoke(&ex, &f, "self-name", &[]), "\"f\"");
    assert_eq!(invoke(&ex, &w, "self-name", &[]), "\"w\"");
    drop(ex);
    let ex = open(dir.path(), "invocations:1");
    assert_eq!(invoke(&ex, &w, "get", &[]), "110");
    assert_eq!(invoke(&ex, &f, "get", &[]), "12");
    for id in [&w, &f] {
        let auto = ex.state_digest(id, RecoveryMode::Auto).unwrap();
        let full = ex.state_digest(id, RecoveryMode::FullReplay).unwrap();
        assert_eq!(auto, full, "{id}");
    }
    let records = ex.list_workers(&w.component_id).unwrap();
    assert_eq!(records.len(), 2);
    assert_undamaged(&ex);
}

/// The memory guest's state across a few snapshots.
fn memory_workload(ex: &Executor, id: &WorkerId) -> String {
    invoke(ex, id, "fill-mib", &["4"]);
    let a = invoke(ex, id, "alloc", &["512"]);
    invoke(ex, id, "touch", &["10"]);
    invoke(ex, id, "free", &[&a]);
    invoke(ex, id, "alloc", &["2048"]);
    invoke(ex, id, "touch", &["50"]);
    invoke(ex, id, "checksum", &[])
}

#[test]
fn deleting_the_source_leaves_the_fork_whole_even_after_the_source_pruned_its_snapshots() {
    let dir = tempfile::tempdir().unwrap();
    let wasm = std::fs::read(guest_wasm("memory")).unwrap();
    let ex = open_with(dir.path(), "invocations:1", 2);
    ex.components().add("memory", &wasm).unwrap();
    let w = ex.worker_id("memory", "w").unwrap();
    let checksum = memory_workload(&ex, &w);
    let fork = ex.fork_worker(&w, "f", None).unwrap();
    let f = fork.worker.id.clone();
    assert_eq!(fork.snapshots.len(), 2);
    // The source moves on: its snapshots at the fork point are pruned (keep 2), and memory
    // it shared is rewritten, so only the fork's manifests still refer to those pages.
    for _ in 0..3 {
        invoke(&ex, &w, "touch", &["100"]);
    }
    let w_uid = ex.worker_record(&w).unwrap().uid;
    let w_snapshots = snapshots::indexes(ex.storage(), &w_uid).unwrap();
    assert!(
        w_snapshots.iter().all(|i| !fork.snapshots.contains(i)),
        "the source pruned what the fork copied: {w_snapshots:?} vs {:?}",
        fork.snapshots
    );
    assert_undamaged(&ex);
    ex.delete_worker(&w).unwrap();
    assert_undamaged(&ex);
    drop(ex);

    let ex = open_with(dir.path(), "invocations:1", 2);
    let (report, restored) = recovered(&ex, &f, RecoveryMode::Auto);
    assert_eq!(
        report.snapshot_index,
        fork.snapshots.last().copied(),
        "{report:?}"
    );
    assert!(report.skipped.is_empty(), "{report:?}");
    let (_, full) = recovered(&ex, &f, RecoveryMode::FullReplay);
    assert_eq!(restored, full);
    assert_eq!(invoke(&ex, &f, "checksum", &[]), checksum);
    // The fork goes on, snapshots and prunes in the space it now has alone.
    for _ in 0..3 {
        invoke(&ex, &f, "touch", &["30"]);
    }
    let after = invoke(&ex, &f, "checksum", &[]);
    assert_undamaged(&ex);
    drop(ex);
    let ex = open_with(dir.path(), "invocations:1", 2);
    assert_eq!(invoke(&ex, &f, "checksum", &[]), after);
    assert!(ex
        .worker_record(&f)
        .unwrap()
        .last_recovery
        .unwrap()
        .snapshot_index
        .is_some());
    // Deleting the last worker of the space leaves no page behind.
    ex.delete_worker(&f).unwrap();
    assert_eq!(snapshots::total_page_bytes(ex.storage()).unwrap(), 0);
    assert_undamaged(&ex);
}

#[test]
fn deleting_a_fork_leaves_its_source_and_a_fork_of_the_fork_whole() {
    let dir = tempfile::tempdir().unwrap();
    let wasm = std::fs::read(guest_wasm("memory")).unwrap();
    let ex = open_with(dir.path(), "invocations:1", 2);
    ex.components().add("memory", &wasm).unwrap();
    let w = ex.worker_id("memory", "w").unwrap();
    let checksum = memory_workload(&ex, &w);
    let f = ex.fork_worker(&w, "f", None).unwrap().worker.id;
    invoke(&ex, &f, "touch", &["20"]);
    let f_checksum = invoke(&ex, &f, "checksum", &[]);
    // A fork of the fork, then the middle one goes: both ends stay whole.
    let g = ex.fork_worker(&f, "g", None).unwrap();
    assert!(!g.snapshots.is_empty());
    ex.delete_worker(&f).unwrap();
    assert_undamaged(&ex);
    drop(ex);
    let ex = open_with(dir.path(), "invocations:1", 2);
    for (id, expected) in [(&w, &checksum), (&g.worker.id, &f_checksum)] {
        let (report, restored) = recovered(&ex, id, RecoveryMode::Auto);
        assert!(
            report.snapshot_index.is_some() && report.skipped.is_empty(),
            "{id}: {report:?}"
        );
        let (_, full) = recovered(&ex, id, RecoveryMode::FullReplay);
        assert_eq!(restored, full, "{id}");
        assert_eq!(&invoke(&ex, id, "checksum", &[]), expected, "{id}");
    }
    // The source goes on as before and keeps its pages consistent.
    invoke(&ex, &w, "touch", &["100"]);
    ex.delete_worker(&g.worker.id).unwrap();
    assert_undamaged(&ex);
    drop(ex);
    let ex = open_with(dir.path(), "invocations:1", 2);
    let (report, _) = recovered(&ex, &w, RecoveryMode::Auto);
    assert!(
        report.snapshot_index.is_some() && report.skipped.is_empty(),
        "{report:?}"
    );
    let verify = ex.verify_snapshots(&w, true, |_, _| {}).unwrap();
    assert!(verify.1.iter().all(|c| c.matches), "{:?}", verify.1);
    assert_undamaged(&ex);
}

#[test]
fn a_fork_of_a_64_mib_worker_copies_no_page_and_costs_about_a_restore() {
    let dir = tempfile::tempdir().unwrap();
    let wasm = std::fs::read(guest_wasm("memory")).unwrap();
    let options = ExecutorOptions {
        snapshot_policy: "invocations:1".parse().unwrap(),
        ..ExecutorOptions::default()
    };
    let ex = Executor::open(dir.path(), options.clone()).unwrap();
    ex.components().add("memory", &wasm).unwrap();
    let w = ex.worker_id("memory", "w").unwrap();
    invoke(&ex, &w, "fill-mib", &["64"]);
    let checksum = invoke(&ex, &w, "checksum", &[]);
    let memory: u64 = invoke(&ex, &w, "memory-bytes", &[]).parse().unwrap();
    assert!(memory >= 64 << 20, "{memory}");
    let before = snapshots::total_page_bytes(ex.storage()).unwrap();
    assert!(before >= 64 << 20, "the pages are stored: {before}");
    drop(ex);

    // A restore of the source from scratch (its memory image mapped), for comparison.
    let ex = Executor::open(dir.path(), options.clone()).unwrap();
    let started = Instant::now();
    let restore = ex.recover(&w, RecoveryMode::Auto).unwrap();
    let restore_ms = started.elapsed().as_secs_f64() * 1e3;
    assert!(restore.snapshot_index.is_some());

    let started = Instant::now();
    let fork = ex.fork_worker(&w, "f", None).unwrap();
    let fork_ms = started.elapsed().as_secs_f64() * 1e3;
    let after = snapshots::total_page_bytes(ex.storage()).unwrap();
    assert_eq!(after, before, "forking stored no page");
    assert_eq!(
        snapshots::stored_page_bytes(ex.storage(), &fork.worker.uid).unwrap(),
        snapshots::stored_page_bytes(ex.storage(), &ex.worker_record(&w).unwrap().uid).unwrap(),
        "the fork's snapshots use the source's pages"
    );
    // Its first start restores the shared snapshot (by copying: the fork has no memory image yet).
    let started = Instant::now();
    let first = ex.recover(&fork.worker.id, RecoveryMode::Auto).unwrap();
    let first_start_ms = started.elapsed().as_secs_f64() * 1e3;
    assert_eq!(first.snapshot_index, fork.snapshots.last().copied());
    assert!(first.bytes_restored >= 64 << 20);
    assert_eq!(invoke(&ex, &fork.worker.id, "checksum", &[]), checksum);
    eprintln!(
        "fork of a {} MiB worker: {fork_ms:.2} ms (oplog {} entries, {} blocks, {} snapshots \
         shared, 0 pages copied); restore of the source: {restore_ms:.2} ms (recovery {:.2} ms); \
         first start of the fork: {first_start_ms:.2} ms (recovery {:.2} ms)",
        memory >> 20,
        fork.oplog_index,
        fork.oplog_blocks,
        fork.snapshots.len(),
        restore.duration_us as f64 / 1e3,
        first.duration_us as f64 / 1e3,
    );
    // What a fork costs does not grow with memory: far below copying 64 MiB into LMDB.
    assert!(fork_ms < 1000.0, "fork took {fork_ms} ms");
    // A write to the fork stores only the pages it changed.
    invoke(&ex, &fork.worker.id, "touch-pages", &["1"]);
    let grown = snapshots::total_page_bytes(ex.storage()).unwrap() - after;
    assert!(
        grown < 8 << 20,
        "the fork's next snapshot stored {grown} bytes"
    );
    assert_undamaged(&ex);
}

#[test]
fn a_repeated_idempotency_key_answers_in_the_fork_as_in_the_source() {
    let dir = tempfile::tempdir().unwrap();
    let (ex, w) = setup(dir.path(), "off", "counter");
    let first = ex
        .invoke(&w, "add", &["5".into()], Some("k1"))
        .done()
        .unwrap();
    assert_eq!(first.result.as_deref(), Some("5"));
    let before_k2 = ex.oplog_len(&w).unwrap();
    ex.invoke(&w, "add", &["7".into()], Some("k2"))
        .done()
        .unwrap();
    let fork = ex.fork_worker(&w, "f", Some(before_k2)).unwrap();
    assert_eq!(
        fork.invocation_results, 1,
        "k1 only: k2 completed after the fork point"
    );
    let f = fork.worker.id;
    // k1 completed before the fork point: answered from the stored result, not run again.
    let again = ex
        .invoke(&f, "add", &["5".into()], Some("k1"))
        .done()
        .unwrap();
    assert!(again.from_idempotency_key);
    assert_eq!(again.result.as_deref(), Some("5"));
    // The same key for another call is refused in the fork too.
    assert!(matches!(
        ex.invoke(&f, "add", &["6".into()], Some("k1")).done(),
        Err(Error::IdempotencyKeyReused { .. })
    ));
    // k2 never happened in the fork: it runs there, on the fork's state.
    let k2 = ex
        .invoke(&f, "add", &["7".into()], Some("k2"))
        .done()
        .unwrap();
    assert!(!k2.from_idempotency_key);
    assert_eq!(k2.result.as_deref(), Some("12"));
    assert_eq!(invoke(&ex, &w, "get", &[]), "12");
    assert_eq!(invoke(&ex, &f, "get", &[]), "12");
    assert_eq!(invoke(&ex, &f, "add", &["1"]), "13");
}

#[test]
fn a_forks_copied_history_replays_under_its_sources_identity() {
    // The promises guest checks that a promise's id names the worker get-self-metadata names:
    // in the copied history both name the source, after it both name the fork.
    let dir = tempfile::tempdir().unwrap();
    let (ex, w) = setup(dir.path(), "off", "promises");
    let idx = invoke(&ex, &w, "create", &[]);
    assert_eq!(invoke(&ex, &w, "complete-own", &[&idx, "\"hi\""]), "true");
    assert_eq!(invoke(&ex, &w, "await-own", &[&idx]), "\"hi\"");
    let fork = ex.fork_worker(&w, "f", None).unwrap();
    let f = fork.worker.id.clone();
    drop(ex);
    let ex = open(dir.path(), "off");
    let (report, full) = recovered(&ex, &f, RecoveryMode::FullReplay);
    assert_eq!(report.invocations_replayed, 3, "{report:?}");
    assert_eq!(full, ex.state_digest(&w, RecoveryMode::FullReplay).unwrap());
    // Live, the fork is itself: its promises are its own.
    let own = invoke(&ex, &f, "create", &[]);
    assert_eq!(invoke(&ex, &f, "complete-own", &[&own, "\"mine\""]), "true");
    assert_eq!(invoke(&ex, &f, "await-own", &[&own]), "\"mine\"");
    let origin = golemw_runtime::forks::get(ex.storage(), &fork.worker.uid)
        .unwrap()
        .unwrap();
    assert_eq!((&origin.source, origin.at), (&w, fork.oplog_index));
    drop(ex);
    let ex = open(dir.path(), "off");
    let auto = ex.state_digest(&f, RecoveryMode::Auto).unwrap();
    assert_eq!(auto, ex.state_digest(&f, RecoveryMode::FullReplay).unwrap());
}

#[test]
fn a_fork_gets_the_component_version_its_source_ran_at_the_index() {
    let dir = tempfile::tempdir().unwrap();
    let (ex, w) = setup(dir.path(), "invocations:1", "counter");
    invoke(&ex, &w, "add", &["1"]);
    let before_update = ex.oplog_len(&w).unwrap();
    let wasm = std::fs::read(guest_wasm("counter")).unwrap();
    ex.components().update("counter", &wasm).unwrap();
    ex.update_worker(&w, 1, UpdateMode::Automatic).unwrap();
    invoke(&ex, &w, "add", &["2"]);
    let old = ex.fork_worker(&w, "old", Some(before_update)).unwrap();
    let new = ex.fork_worker(&w, "new", None).unwrap();
    assert_eq!(old.worker.component_version, 0);
    assert!(old.worker.history.updates.is_empty());
    assert_eq!(new.worker.component_version, 1);
    assert_eq!(new.worker.history.updates.len(), 1);
    // Snapshots of another version than the fork's are not given to it.
    let uid = ex.worker_record(&w).unwrap().uid;
    for index in &new.snapshots {
        let manifest = snapshots::get(ex.storage(), &uid, *index)
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(manifest.component_version, 1);
    }
    assert_eq!(invoke(&ex, &old.worker.id, "add", &["10"]), "11");
    assert_eq!(invoke(&ex, &new.worker.id, "add", &["10"]), "13");
    drop(ex);
    let ex = open(dir.path(), "invocations:1");
    for id in [&old.worker.id, &new.worker.id] {
        let auto = ex.state_digest(id, RecoveryMode::Auto).unwrap();
        assert_eq!(
            auto,
            ex.state_digest(id, RecoveryMode::FullReplay).unwrap(),
            "{id}"
        );
    }
    assert_eq!(
        ex.worker_record(&old.worker.id).unwrap().component_version,
        0
    );
}

#[test]
fn forks_are_refused_where_the_source_was_not_idle_and_for_bad_names() {
    let dir = tempfile::tempdir().unwrap();
    let (ex, w) = setup(dir.path(), "off", "counter");
    invoke(&ex, &w, "add", &["1"]);
    let len = ex.oplog_len(&w).unwrap();
    let unknown = named(&ex, &w, "nobody");
    assert!(matches!(
        ex.fork_worker(&unknown, "f", None),
        Err(Error::UnknownWorker(_))
    ));
    ex.create_worker(&named(&ex, &w, "taken"), vec![], vec![])
        .unwrap();
    assert!(matches!(
        ex.fork_worker(&w, "taken", None),
        Err(Error::WorkerExists(_))
    ));
    assert!(matches!(
        ex.fork_worker(&w, "w", None),
        Err(Error::WorkerExists(_))
    ));
    assert!(matches!(
        ex.fork_worker(&w, "a/b", None),
        Err(Error::InvalidWorkerName(_))
    ));
    assert!(matches!(
        ex.fork_worker(&w, "", None),
        Err(Error::InvalidWorkerName(_))
    ));
    assert_fork_refused(&ex, &w, Some(0), "does not exist");
    assert_fork_refused(&ex, &w, Some(len + 1), "past the end");
    // Inside the invocation: after its `exported-function-invoked` entry, before its end.
    let invoked = invocation_starts(&ex, &w)[0];
    assert_fork_refused(&ex, &w, Some(invoked), "had not ended");
    assert!(ex.workers().get(&named(&ex, &w, "f")).unwrap().is_none());
    // Before it: the worker as created.
    let early = ex.fork_worker(&w, "f", Some(invoked - 1)).unwrap();
    assert_eq!(invoke(&ex, &early.worker.id, "get", &[]), "0");
    assert_undamaged(&ex);
}

#[test]
fn a_suspended_or_time_travelled_source_is_forked_only_at_idle_points() {
    let dir = tempfile::tempdir().unwrap();
    let (ex, w) = setup(dir.path(), "invocations:1", "promises");
    match ex.invoke(&w, "add-and-await", &["3".into()], None) {
        Ok(Invoked::Deferred(Deferred::Suspended { .. })) => {}
        other => panic!("add-and-await should suspend, got {other:?}"),
    }
    assert_eq!(
        ex.worker_record(&w).unwrap().status,
        WorkerStatus::Suspended
    );
    let len = ex.oplog_len(&w).unwrap();
    assert_fork_refused(&ex, &w, None, "had not ended");
    let invoked = *invocation_starts(&ex, &w).last().unwrap();
    assert!(invoked <= len);
    let before = ex.fork_worker(&w, "f", Some(invoked - 1)).unwrap();
    assert_eq!(before.worker.status, WorkerStatus::Idle);
    assert_eq!(invoke(&ex, &before.worker.id, "total", &[]), "0");
    drop(ex);

    // Time travel: a region deleted by a jump.
    let dir = tempfile::tempdir().unwrap();
    let (ex, w) = setup(dir.path(), "invocations:1", "travel");
    invoke(&ex, &w, "add", &["1"]);
    let m: u64 = invoke(&ex, &w, "mark", &[]).parse().unwrap();
    invoke(&ex, &w, "add", &["2"]);
    let inside = ex.oplog_len(&w).unwrap();
    match try_invoke(&ex, &w, "jump", &[&m.to_string()]) {
        Err(Error::InvocationUndone { .. }) => {}
        other => panic!("jump: {other:?}"),
    }
    invoke(&ex, &w, "add", &["4"]);
    assert_fork_refused(&ex, &w, Some(inside), "deleted");
    let fork = ex.fork_worker(&w, "f", None).unwrap();
    assert_eq!(
        fork.worker.history.deleted,
        ex.worker_record(&w).unwrap().history.deleted
    );
    assert_eq!(invoke(&ex, &fork.worker.id, "history", &[]), "[1, 4]");
    drop(ex);
    let ex = open(dir.path(), "invocations:1");
    let auto = ex
        .state_digest(&fork.worker.id, RecoveryMode::Auto)
        .unwrap();
    assert_eq!(
        auto,
        ex.state_digest(&fork.worker.id, RecoveryMode::FullReplay)
            .unwrap()
    );
}

#[test]
fn a_fork_that_fails_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (ex, w) = setup(dir.path(), "invocations:1", "counter");
    for n in 1..=3 {
        invoke(&ex, &w, "add", &[&n.to_string()]);
    }
    let uid = ex.worker_record(&w).unwrap().uid;
    let len = ex.oplog_len(&w).unwrap();
    drop(ex);
    // A damaged block in the middle of the prefix, before the newest snapshot (so that only
    // the copy reads it): the transaction fails half-way, after the record and a block.
    assert!(len > 4);
    golemw_tests::corrupt_oplog_block(dir.path(), &uid, 2);
    let ex = open(dir.path(), "invocations:1");
    let rows = |ex: &Executor| {
        let tables = ex.storage().tables();
        [
            tables.workers,
            tables.oplog,
            tables.snapshots,
            tables.page_spaces,
            tables.forks,
            tables.invocations,
        ]
        .map(|db| {
            let mut n = 0;
            ex.storage().scan_all(db, |_, _| n += 1).unwrap();
            n
        })
    };
    let before = rows(&ex);
    match ex.fork_worker(&w, "f", None) {
        Err(Error::Corrupt { what, .. }) => assert!(what.contains("oplog"), "{what}"),
        other => panic!("forking a damaged history: {other:?}"),
    }
    assert_eq!(rows(&ex), before, "the failed fork left something");
    assert!(ex.workers().get(&named(&ex, &w, "f")).unwrap().is_none());
}

#[test]
fn a_page_collected_by_another_worker_of_the_space_is_stored_again_by_the_next_capture() {
    // The fork learns which pages its space holds at its first capture; the source then drops
    // the last snapshot using some of them. When the fork's memory comes to hold those very
    // pages (the same deterministic work), its capture must store them again, not refer to
    // pages that are gone.
    let dir = tempfile::tempdir().unwrap();
    let wasm = std::fs::read(guest_wasm("memory")).unwrap();
    let ex = open_with(dir.path(), "invocations:1", 2);
    ex.components().add("memory", &wasm).unwrap();
    let w = ex.worker_id("memory", "w").unwrap();
    invoke(&ex, &w, "fill-mib", &["4"]);
    let f = ex.fork_worker(&w, "f", None).unwrap().worker.id;
    invoke(&ex, &w, "touch", &["100"]);
    let w_touched = invoke(&ex, &w, "checksum", &[]);
    // The fork's first capture: it now knows of the source's touched pages.
    invoke(&ex, &f, "live-bytes", &[]);
    // The source moves on twice: its snapshots of the touched memory are pruned.
    invoke(&ex, &w, "touch", &["100"]);
    invoke(&ex, &w, "touch", &["100"]);
    assert_undamaged(&ex);
    // The fork does what the source did: the same pages, collected meanwhile.
    invoke(&ex, &f, "touch", &["100"]);
    assert_eq!(invoke(&ex, &f, "checksum", &[]), w_touched);
    assert_undamaged(&ex);
    drop(ex);
    let ex = open_with(dir.path(), "invocations:1", 2);
    let (report, restored) = recovered(&ex, &f, RecoveryMode::Auto);
    assert!(report.skipped.is_empty(), "{report:?}");
    let newest = snapshots::indexes(ex.storage(), &ex.worker_record(&f).unwrap().uid)
        .unwrap()
        .last()
        .copied();
    assert_eq!(report.snapshot_index, newest);
    assert_eq!(
        restored,
        ex.state_digest(&f, RecoveryMode::FullReplay).unwrap()
    );
}
