//! Time travel: `set-oplog-index` from inside a guest and `revert` from outside delete a region
//! of history; the worker comes back from the newest snapshot outside every deleted region, and
//! its state is as if the region never ran, with or without snapshots.

use golemw_runtime::oplog::OplogEntry;
use golemw_runtime::worker::RevertTarget;
use golemw_runtime::{
    Error, Executor, ExecutorOptions, RecoveryMode, SnapshotPolicy, WorkerId, WorkerStatus,
};
use golemw_tests::Completes;
use golemw_tests::{guest_wasm, try_invoke};

fn open(dir: &std::path::Path, policy: &str) -> std::sync::Arc<Executor> {
    let options = ExecutorOptions {
        snapshot_policy: policy.parse::<SnapshotPolicy>().unwrap(),
        snapshots_keep: 64,
        fsync: false,
        ..ExecutorOptions::default()
    };
    Executor::open(dir, options).expect("open the data directory")
}

fn setup(dir: &std::path::Path, policy: &str) -> (std::sync::Arc<Executor>, WorkerId) {
    let ex = open(dir, policy);
    let wasm = std::fs::read(guest_wasm("travel")).unwrap();
    ex.components().add("travel", &wasm).expect("add component");
    let id = ex.worker_id("travel", "w").unwrap();
    (ex, id)
}

fn invoke(ex: &Executor, id: &WorkerId, function: &str, args: &[&str]) -> Option<String> {
    try_invoke(ex, id, function, args)
        .unwrap_or_else(|e| panic!("{function}({args:?}) failed: {e}"))
}

fn history(ex: &Executor, id: &WorkerId) -> String {
    invoke(ex, id, "history", &[]).unwrap()
}

fn mark(ex: &Executor, id: &WorkerId) -> u64 {
    invoke(ex, id, "mark", &[]).unwrap().parse().unwrap()
}

/// Jumps back to `to` from a separate invocation, which the jump deletes.
fn jump(ex: &Executor, id: &WorkerId, to: u64) {
    match try_invoke(ex, id, "jump", &[&to.to_string()]) {
        Err(Error::InvocationUndone { target, .. }) => assert_eq!(target, to),
        other => panic!("jump({to}) should undo its own invocation, got {other:?}"),
    }
}

fn snapshot_indexes(ex: &Executor, id: &WorkerId) -> Vec<u64> {
    let uid = ex.worker_record(id).unwrap().uid;
    golemw_runtime::snapshots::indexes(ex.storage(), &uid).unwrap()
}

fn entries(ex: &Executor, id: &WorkerId) -> Vec<(u64, OplogEntry)> {
    golemw_tests::oplog_entries(ex, id)
}

/// Restart, then check that snapshot recovery and full replay reach the same state.
fn restart_and_compare(
    dir: &std::path::Path,
    id: &WorkerId,
    policy: &str,
) -> std::sync::Arc<Executor> {
    let ex = open(dir, policy);
    let auto = ex.state_digest(id, RecoveryMode::Auto).unwrap();
    let full = ex.state_digest(id, RecoveryMode::FullReplay).unwrap();
    assert_eq!(auto, full, "snapshot recovery and full replay disagree");
    ex
}

/// The same travels, with snapshots after every invocation and without any; returns the
/// guest-visible history at each step.
fn nested_jumps(policy: &str) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let (ex, id) = setup(dir.path(), policy);
    let mut seen = Vec::new();
    invoke(&ex, &id, "add", &["1"]);
    let m0 = mark(&ex, &id);
    invoke(&ex, &id, "add", &["2"]);
    let m1 = mark(&ex, &id);
    invoke(&ex, &id, "add", &["3"]);
    invoke(&ex, &id, "add", &["4"]);
    seen.push(history(&ex, &id));
    jump(&ex, &id, m1);
    seen.push(history(&ex, &id));
    invoke(&ex, &id, "add", &["7"]);
    seen.push(history(&ex, &id));
    // Back again, to before the first jump.
    jump(&ex, &id, m0);
    seen.push(history(&ex, &id));
    invoke(&ex, &id, "add", &["9"]);
    seen.push(history(&ex, &id));
    let oplog = entries(&ex, &id);
    let jumps = oplog
        .iter()
        .filter(|(_, e)| matches!(e, OplogEntry::Jump { .. }))
        .count();
    assert_eq!(jumps, 2, "both jumps are in the oplog");
    drop(ex);
    let ex = restart_and_compare(dir.path(), &id, policy);
    seen.push(history(&ex, &id));
    assert_eq!(
        ex.worker_record(&id).unwrap().status,
        WorkerStatus::Idle,
        "the worker is usable after its jumps"
    );
    seen
}

#[test]
fn jumps_nest_and_give_the_same_state_with_and_without_snapshots() {
    let with = nested_jumps("invocations:1");
    let without = nested_jumps("off");
    let expected = vec![
        "[1, 2, 3, 4]",
        "[1, 2]",
        "[1, 2, 7]",
        "[1]",
        "[1, 9]",
        "[1, 9]",
    ];
    assert_eq!(with, expected);
    assert_eq!(without, expected);
}

#[test]
fn a_jump_back_past_several_snapshots_restores_the_newest_one_before_the_target() {
    let dir = tempfile::tempdir().unwrap();
    let (ex, id) = setup(dir.path(), "invocations:1");
    invoke(&ex, &id, "add", &["1"]);
    invoke(&ex, &id, "add", &["2"]);
    let m = mark(&ex, &id);
    invoke(&ex, &id, "add", &["3"]);
    invoke(&ex, &id, "add", &["4"]);
    let before: Vec<u64> = snapshot_indexes(&ex, &id);
    let expected = *before.iter().filter(|&&i| i <= m).max().unwrap();
    let deleted: Vec<u64> = before.iter().copied().filter(|&i| i > m).collect();
    assert!(deleted.len() >= 3, "snapshots after the target: {before:?}");

    jump(&ex, &id, m);
    let report = ex.worker_record(&id).unwrap().last_recovery.unwrap();
    assert_eq!(report.snapshot_index, Some(expected), "{report:?}");
    for index in &deleted {
        assert!(
            report
                .skipped
                .iter()
                .any(|s| s.contains(&format!("snapshot at {index}")) && s.contains("deleted")),
            "snapshot {index} should be skipped as deleted: {:?}",
            report.skipped
        );
    }
    // The invocation the target was inside (`mark`) ran again to its end.
    assert!(report.resumed_invocation, "{report:?}");
    // The live instance was rewound in place (only differing pages written), and the state it
    // reached is exactly what a fresh instance replaying the whole history reaches.
    assert!(report.pages_rewritten.is_some(), "{report:?}");
    let rewound = ex.active_state_digest(&id).unwrap();
    let full = ex.state_digest(&id, RecoveryMode::FullReplay).unwrap();
    assert_eq!(rewound, full, "in-place rewind differs from a full replay");
    assert_eq!(history(&ex, &id), "[1, 2]");
    drop(ex);

    // A later restart still never uses the deleted snapshots.
    let ex = open(dir.path(), "invocations:1");
    let report = ex.recover(&id, RecoveryMode::Auto).unwrap();
    let used = report.snapshot_index.unwrap();
    assert!(!deleted.contains(&used), "used deleted snapshot {used}");
    assert_eq!(history(&ex, &id), "[1, 2]");
}

#[test]
fn a_retry_loop_inside_one_invocation_returns_the_result_of_its_last_attempt() {
    let dir = tempfile::tempdir().unwrap();
    let (ex, id) = setup(dir.path(), "invocations:2");
    invoke(&ex, &id, "add", &["5"]);
    let mut jumps = 0;
    for _ in 0..5 {
        let drawn: u64 = invoke(&ex, &id, "draw-until-divisible", &["16"])
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(
            drawn % 16,
            0,
            "returned a draw the loop should have retried"
        );
        jumps = entries(&ex, &id)
            .iter()
            .filter(|(_, e)| matches!(e, OplogEntry::Jump { .. }))
            .count();
        if jumps > 0 {
            break;
        }
    }
    assert!(jumps > 0, "15 of 16 draws jump back; none did in 5 calls");
    assert_eq!(history(&ex, &id), "[5]");
    drop(ex);
    let ex = restart_and_compare(dir.path(), &id, "invocations:2");
    assert_eq!(history(&ex, &id), "[5]");
}

#[test]
fn a_jump_within_the_same_invocation_undoes_part_of_it() {
    let dir = tempfile::tempdir().unwrap();
    let (ex, id) = setup(dir.path(), "off");
    invoke(&ex, &id, "add", &["1"]);
    let m = mark(&ex, &id);
    // add-then-jump adds 50 and jumps back to `m`, which is in an earlier invocation: its own
    // invocation is deleted, and the `mark` invocation finishes again.
    match try_invoke(&ex, &id, "add-then-jump", &["50", &m.to_string()]) {
        Err(Error::InvocationUndone { target, .. }) => assert_eq!(target, m),
        other => panic!("expected the invocation to be undone, got {other:?}"),
    }
    assert_eq!(history(&ex, &id), "[1]");
}

#[test]
fn forward_and_unknown_jumps_trap_with_a_clear_message_and_revert_brings_the_worker_back() {
    let dir = tempfile::tempdir().unwrap();
    let (ex, id) = setup(dir.path(), "invocations:1");
    invoke(&ex, &id, "add", &["1"]);
    let len = ex.oplog_len(&id).unwrap();
    let err = try_invoke(&ex, &id, "jump", &[&(len + 100).to_string()]).unwrap_err();
    assert!(
        err.to_string().contains("can only go back in history"),
        "{err}"
    );
    let record = ex.worker_record(&id).unwrap();
    assert_eq!(record.status, WorkerStatus::Failed);
    assert!(
        record
            .last_error
            .as_deref()
            .unwrap()
            .contains("set-oplog-index"),
        "{record:?}"
    );
    drop(ex);

    // The refusal is recorded: replay reaches the same failure, no divergence.
    let ex = open(dir.path(), "invocations:1");
    ex.recover(&id, RecoveryMode::FullReplay).unwrap();
    assert_eq!(ex.worker_record(&id).unwrap().status, WorkerStatus::Failed);

    // Reverting the failed invocation brings the worker back.
    ex.revert_worker(&id, RevertTarget::LastInvocations(1))
        .unwrap();
    let record = ex.worker_record(&id).unwrap();
    assert_eq!(record.status, WorkerStatus::Idle, "{record:?}");
    assert_eq!(invoke(&ex, &id, "add", &["2"]).unwrap(), "3");

    // Index 0 does not exist.
    let err = try_invoke(&ex, &id, "jump", &["0"]).unwrap_err();
    assert!(err.to_string().contains("oplog index 0"), "{err}");
}

#[test]
fn revert_by_invocation_count_and_by_index_is_recorded_and_forgets_results() {
    let dir = tempfile::tempdir().unwrap();
    let (ex, id) = setup(dir.path(), "invocations:2");
    for n in 1..=4 {
        invoke(&ex, &id, "add", &[&n.to_string()]);
    }
    let keyed = ex
        .invoke(&id, "add", &["5".to_string()], Some("key-5"))
        .done()
        .unwrap();
    assert_eq!(keyed.result.as_deref(), Some("15"));

    // Undo the keyed invocation and the one before it.
    ex.revert_worker(&id, RevertTarget::LastInvocations(2))
        .unwrap();
    assert_eq!(history(&ex, &id), "[1, 2, 3]");
    let oplog = entries(&ex, &id);
    assert!(
        oplog
            .iter()
            .any(|(_, e)| matches!(e, OplogEntry::Revert { .. })),
        "the revert is in the oplog"
    );
    // The keyed invocation was undone: the same key runs again.
    let again = ex
        .invoke(&id, "add", &["5".to_string()], Some("key-5"))
        .done()
        .unwrap();
    assert!(!again.from_idempotency_key);
    assert_eq!(again.result.as_deref(), Some("11"));

    // By index: keep everything up to the completion of the first `add`.
    let first_completed = oplog
        .iter()
        .find(|(_, e)| matches!(e, OplogEntry::ExportedFunctionCompleted { .. }))
        .unwrap()
        .0;
    let report = ex
        .revert_worker(&id, RevertTarget::OplogIndex(first_completed))
        .unwrap();
    assert!(report.snapshot_index.is_none_or(|s| s <= first_completed));
    assert_eq!(history(&ex, &id), "[1]");

    // Bad targets are refused with the reason, and nothing changes.
    let len = ex.oplog_len(&id).unwrap();
    for (target, wanted) in [
        (RevertTarget::LastInvocations(100), "not 100"),
        (RevertTarget::OplogIndex(first_completed + 2), "deleted"),
        (RevertTarget::OplogIndex(len + 5), "only go back"),
        (RevertTarget::OplogIndex(len), "nothing after it"),
    ] {
        let err = ex.revert_worker(&id, target).unwrap_err();
        assert!(err.to_string().contains(wanted), "{target:?}: {err}");
    }
    assert_eq!(
        ex.oplog_len(&id).unwrap(),
        len,
        "a refused revert writes nothing"
    );
    drop(ex);
    let ex = restart_and_compare(dir.path(), &id, "invocations:2");
    assert_eq!(history(&ex, &id), "[1]");
}
