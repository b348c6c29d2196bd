//! Component updates: automatic (replay history on the new version) and snapshot-based
//! (`save` on the old version, `load` on the new). Failures are recorded and leave the worker
//! working on its old version; successes take a memory snapshot of the new version at once.

use golemw_runtime::history::{UpdateMode, UpdateOutcome};
use golemw_runtime::{Error, Executor, ExecutorOptions, RecoveryMode, SnapshotPolicy, WorkerId};
use golemw_tests::guest_wasm;
use golemw_tests::Completes;

fn open(dir: &std::path::Path) -> std::sync::Arc<Executor> {
    let options = ExecutorOptions {
        snapshot_policy: "off".parse::<SnapshotPolicy>().unwrap(),
        fsync: false,
        ..ExecutorOptions::default()
    };
    Executor::open(dir, options).expect("open the data directory")
}

/// A component `name` whose first version (0) is guest `v1`, with a worker on it;
/// `add_version` adds version 1 afterwards (new workers start on the latest version). The
/// guests report their own version numbers (1, 2) from `version`.
fn on_v1(dir: &std::path::Path, name: &str, v1: &str) -> (std::sync::Arc<Executor>, WorkerId) {
    let ex = open(dir);
    let wasm = std::fs::read(guest_wasm(v1)).unwrap();
    ex.components().add(name, &wasm).unwrap();
    let id = ex.worker_id(name, "w").unwrap();
    ex.create_worker(&id, Vec::new(), Vec::new()).unwrap();
    (ex, id)
}

fn add_version(ex: &Executor, name: &str, guest: &str) {
    let wasm = std::fs::read(guest_wasm(guest)).unwrap();
    ex.components().update(name, &wasm).unwrap();
}

fn invoke(ex: &Executor, id: &WorkerId, function: &str, args: &[&str]) -> Option<String> {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    ex.invoke(id, function, &args, None)
        .done()
        .unwrap_or_else(|e| panic!("{function}({args:?}) failed: {e}"))
        .result
}

fn kinds(ex: &Executor, id: &WorkerId) -> Vec<&'static str> {
    golemw_tests::oplog_entries(ex, id)
        .iter()
        .map(|(_, e)| e.kind())
        .collect()
}

fn snapshot_versions(ex: &Executor, id: &WorkerId) -> Vec<(u64, u64)> {
    let uid = ex.worker_record(id).unwrap().uid;
    golemw_runtime::snapshots::list(ex.storage(), &uid)
        .unwrap()
        .into_iter()
        .map(|s| (s.index, s.manifest.unwrap().component_version))
        .collect()
}

#[test]
fn an_automatic_update_replays_history_on_the_new_version_and_snapshots_it() {
    let dir = tempfile::tempdir().unwrap();
    let (ex, id) = on_v1(dir.path(), "upd", "update-v1");
    add_version(&ex, "upd", "update-v2");
    invoke(&ex, &id, "add", &["5"]);
    invoke(&ex, &id, "add", &["7"]);
    // (Not `version` before the update: its result differs between the versions, so replaying
    // it on the new one would diverge, and the update fail; the next test does exactly that.)

    let update = ex.update_worker(&id, 1, UpdateMode::Automatic).unwrap();
    assert_eq!(update.outcome, UpdateOutcome::Succeeded);
    let record = ex.worker_record(&id).unwrap();
    assert_eq!(record.component_version, 1);
    assert_eq!(invoke(&ex, &id, "version", &[]).unwrap(), "2");
    assert_eq!(invoke(&ex, &id, "get", &[]).unwrap(), "12");
    assert!(kinds(&ex, &id).contains(&"update-succeeded"));
    // A snapshot of the new version was taken at once, at the update.
    assert!(
        snapshot_versions(&ex, &id).contains(&(update.completed_at, 1)),
        "{:?}",
        snapshot_versions(&ex, &id)
    );
    drop(ex);

    let ex = open(dir.path());
    let report = ex.recover(&id, RecoveryMode::Auto).unwrap();
    assert!(report.snapshot_index.unwrap() >= update.completed_at);
    assert_eq!(invoke(&ex, &id, "version", &[]).unwrap(), "2");
    assert_eq!(invoke(&ex, &id, "get", &[]).unwrap(), "12");
    let auto = ex.state_digest(&id, RecoveryMode::Auto).unwrap();
    let full = ex.state_digest(&id, RecoveryMode::FullReplay).unwrap();
    assert_eq!(auto, full);
}

#[test]
fn an_automatic_update_that_diverges_fails_and_the_worker_stays_on_the_old_version() {
    let dir = tempfile::tempdir().unwrap();
    let (ex, id) = on_v1(dir.path(), "div", "diverge-v1");
    add_version(&ex, "div", "diverge-v2");
    assert_eq!(invoke(&ex, &id, "compute", &["1"]).unwrap(), "2");

    let err = ex.update_worker(&id, 1, UpdateMode::Automatic).unwrap_err();
    assert!(matches!(err, Error::UpdateFailed { .. }), "{err}");
    assert!(err.to_string().contains("diverged"), "{err}");
    let record = ex.worker_record(&id).unwrap();
    assert_eq!(record.component_version, 0);
    let update = record.history.updates.last().unwrap();
    assert!(
        matches!(&update.outcome, UpdateOutcome::Failed(reason) if reason.contains("diverged")),
        "{update:?}"
    );
    assert!(kinds(&ex, &id).contains(&"update-failed"));
    // Still working, on version 1.
    assert_eq!(invoke(&ex, &id, "compute", &["10"]).unwrap(), "11");
    drop(ex);
    let ex = open(dir.path());
    assert_eq!(invoke(&ex, &id, "compute", &["20"]).unwrap(), "21");
    assert_eq!(ex.worker_record(&id).unwrap().component_version, 0);
}

#[test]
fn a_snapshot_based_update_hands_state_over_and_skips_the_old_history() {
    let dir = tempfile::tempdir().unwrap();
    let (ex, id) = on_v1(dir.path(), "upd", "update-v1");
    add_version(&ex, "upd", "update-v2");
    for _ in 0..20 {
        invoke(&ex, &id, "add", &["5"]);
    }
    let update = ex.update_worker(&id, 1, UpdateMode::SnapshotBased).unwrap();
    assert_eq!(update.outcome, UpdateOutcome::Succeeded);
    assert_eq!(invoke(&ex, &id, "version", &[]).unwrap(), "2");
    assert_eq!(invoke(&ex, &id, "get", &[]).unwrap(), "100");
    let kinds = kinds(&ex, &id);
    assert!(kinds.contains(&"snapshot-update-started"), "{kinds:?}");
    assert!(kinds.contains(&"update-succeeded"), "{kinds:?}");
    assert!(snapshot_versions(&ex, &id).contains(&(update.completed_at, 1)));
    invoke(&ex, &id, "add", &["1"]);
    drop(ex);

    // Even a full replay starts at the update: the 20 old invocations are not replayed.
    let ex = open(dir.path());
    let report = ex.recover(&id, RecoveryMode::FullReplay).unwrap();
    assert!(report.invocations_replayed <= 3, "{report:?}");
    assert_eq!(invoke(&ex, &id, "get", &[]).unwrap(), "101");
    let auto = ex.state_digest(&id, RecoveryMode::Auto).unwrap();
    let full = ex.state_digest(&id, RecoveryMode::FullReplay).unwrap();
    assert_eq!(auto, full);
}

#[test]
fn a_snapshot_based_update_whose_load_fails_leaves_the_worker_on_the_old_version() {
    let dir = tempfile::tempdir().unwrap();
    let (ex, id) = on_v1(dir.path(), "upd", "update-v1");
    add_version(&ex, "upd", "update-v2-badload");
    invoke(&ex, &id, "add", &["5"]);
    let err = ex
        .update_worker(&id, 1, UpdateMode::SnapshotBased)
        .unwrap_err();
    assert!(err.to_string().contains("refuses to load"), "{err}");
    let record = ex.worker_record(&id).unwrap();
    assert_eq!(record.component_version, 0);
    assert!(matches!(
        record.history.updates.last().unwrap().outcome,
        UpdateOutcome::Failed(_)
    ));
    // The new version's entries were never written.
    let kinds = kinds(&ex, &id);
    assert!(!kinds.contains(&"snapshot-update-started"), "{kinds:?}");
    assert!(kinds.contains(&"update-failed"), "{kinds:?}");
    assert_eq!(invoke(&ex, &id, "add", &["1"]).unwrap(), "6");
    assert_eq!(invoke(&ex, &id, "version", &[]).unwrap(), "1");
    drop(ex);
    let ex = open(dir.path());
    assert_eq!(invoke(&ex, &id, "get", &[]).unwrap(), "6");
    let auto = ex.state_digest(&id, RecoveryMode::Auto).unwrap();
    let full = ex.state_digest(&id, RecoveryMode::FullReplay).unwrap();
    assert_eq!(auto, full);
}

#[test]
fn the_update_worker_host_function_updates_once_the_invocation_is_over() {
    let dir = tempfile::tempdir().unwrap();
    let (ex, id) = on_v1(dir.path(), "upd", "update-v1");
    add_version(&ex, "upd", "update-v2");
    invoke(&ex, &id, "add", &["3"]);
    invoke(&ex, &id, "request-update", &["1", "false"]);
    assert_eq!(ex.worker_record(&id).unwrap().component_version, 1);
    assert_eq!(invoke(&ex, &id, "version", &[]).unwrap(), "2");
    assert_eq!(invoke(&ex, &id, "get", &[]).unwrap(), "3");
    // A request for a version that does not exist changes nothing; the invocation succeeds.
    invoke(&ex, &id, "request-update", &["9", "true"]);
    let record = ex.worker_record(&id).unwrap();
    assert_eq!(record.component_version, 1);
    drop(ex);
    let ex = open(dir.path());
    assert_eq!(invoke(&ex, &id, "get", &[]).unwrap(), "3");
    assert_eq!(invoke(&ex, &id, "version", &[]).unwrap(), "2");
}

#[test]
fn a_jump_back_before_an_update_returns_to_the_old_version() {
    let dir = tempfile::tempdir().unwrap();
    let (ex, id) = on_v1(dir.path(), "upd", "update-v1");
    add_version(&ex, "upd", "update-v2");
    invoke(&ex, &id, "add", &["4"]);
    let before = ex.oplog_len(&id).unwrap();
    ex.update_worker(&id, 1, UpdateMode::SnapshotBased).unwrap();
    invoke(&ex, &id, "add", &["1"]);
    assert_eq!(invoke(&ex, &id, "version", &[]).unwrap(), "2");
    ex.revert_worker(
        &id,
        golemw_runtime::worker::RevertTarget::OplogIndex(before),
    )
    .unwrap();
    let record = ex.worker_record(&id).unwrap();
    assert_eq!(record.component_version, 0);
    assert!(record.history.updates.last().unwrap().undone);
    assert_eq!(invoke(&ex, &id, "version", &[]).unwrap(), "1");
    assert_eq!(invoke(&ex, &id, "get", &[]).unwrap(), "4");
}

/// The latest version of each component is found by one seek, whichever components sort
/// before or after it; a worker created by invocation starts on it.
#[test]
fn the_latest_version_is_found_among_neighbouring_components() {
    let dir = tempfile::tempdir().unwrap();
    let ex = open(dir.path());
    let wasm = std::fs::read(guest_wasm("update-v1")).unwrap();
    let names = ["a", "b", "c"];
    for name in names {
        ex.components().add(name, &wasm).unwrap();
    }
    for (updates, name) in names.iter().enumerate() {
        for _ in 0..updates {
            add_version(&ex, name, "update-v2");
        }
    }
    for (updates, name) in names.iter().enumerate() {
        let id = ex.components().resolve_id(name).unwrap();
        let latest = ex.components().latest_of(&id).unwrap();
        assert_eq!(
            (latest.name.as_str(), latest.version),
            (*name, updates as u64)
        );
        assert_eq!(
            ex.components().latest(name).unwrap().version,
            updates as u64
        );
        let versions = ex.components().versions(&id).unwrap();
        assert_eq!(versions.last().unwrap().version, latest.version);
        let worker = ex.worker_id(name, "fresh").unwrap();
        invoke(&ex, &worker, "version", &[]);
        assert_eq!(
            ex.worker_record(&worker).unwrap().component_version,
            updates as u64
        );
    }
    let unknown = golemw_runtime::ComponentId(uuid::Uuid::new_v4());
    assert!(matches!(
        ex.components().latest_of(&unknown),
        Err(Error::UnknownComponent(_))
    ));
}
