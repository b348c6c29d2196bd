//! Transactions and persistence control (`golem:api/host`): atomic regions, the retry policy
//! and retries of trapping invocations, the oplog persistence level, and the idempotence mode.
//! Crashes (SIGKILL inside a region, between a remote side effect and its commit) are in
//! `cli.rs`, with real processes.

use golemw_tests::Completes;
use std::time::{Duration, Instant};

use golemw_runtime::oplog::{DiscardReason, HostFunction, OplogEntry};
use golemw_runtime::{
    Deferred, Error, Executor, ExecutorOptions, Invoked, RecoveryMode, WorkerId, WorkerStatus,
};
use golemw_tests::{guest_wasm, invoke_text as invoke, try_invoke};

fn open(dir: &std::path::Path) -> std::sync::Arc<Executor> {
    let options = ExecutorOptions {
        fsync: false,
        ..ExecutorOptions::default()
    };
    Executor::open(dir, options).expect("open the data directory")
}

fn setup(dir: &std::path::Path) -> (std::sync::Arc<Executor>, WorkerId) {
    let ex = open(dir);
    let wasm = std::fs::read(guest_wasm("txn")).unwrap();
    ex.components().add("txn", &wasm).expect("add component");
    let id = ex.worker_id("txn", "w").unwrap();
    (ex, id)
}

fn entries(ex: &Executor, id: &WorkerId) -> Vec<(u64, OplogEntry)> {
    golemw_tests::oplog_entries(ex, id)
}

fn count_kind(ex: &Executor, id: &WorkerId, kind: &str) -> usize {
    entries(ex, id)
        .iter()
        .filter(|(_, e)| e.kind() == kind)
        .count()
}

/// `"<key> items=<n>"` -> (key, n)
fn key_and_items(result: &str) -> (String, u64) {
    let text = result.trim_matches('"');
    let (key, items) = text.split_once(" items=").expect(text);
    (key.to_string(), items.parse().unwrap())
}

/// The field `name=` of a result like `"before=.. key=.. retries=.. items=.."`.
fn field(result: &str, name: &str) -> String {
    result
        .trim_matches('"')
        .split(' ')
        .find_map(|part| part.strip_prefix(&format!("{name}=")))
        .unwrap_or_else(|| panic!("no {name} in {result}"))
        .to_string()
}

#[test]
fn an_atomic_region_is_recorded_by_its_markers_and_a_second_end_does_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (ex, id) = setup(dir.path());
    let (key, items) = key_and_items(&invoke(&ex, &id, "atomic-append", &["7", "0"]));
    assert_eq!(items, 1);
    let all = entries(&ex, &id);
    let begin = all
        .iter()
        .find(|(_, e)| matches!(e, OplogEntry::BeginAtomicRegion))
        .map(|(i, _)| *i)
        .expect("a begin-atomic-region entry");
    let ends: Vec<_> = all
        .iter()
        .filter_map(|(_, e)| match e {
            OplogEntry::EndAtomicRegion { begin } => Some(*begin),
            _ => None,
        })
        .collect();
    assert_eq!(ends, vec![begin], "one end, naming its begin");
    // Replay reproduces the region (same key, same items) without discarding anything.
    drop(ex);
    let ex = open(dir.path());
    ex.recover(&id, RecoveryMode::FullReplay).unwrap();
    assert_eq!(invoke(&ex, &id, "items", &[]), "[7]");
    assert_eq!(count_kind(&ex, &id, "discarded"), 0);
    // The key the region generated is the one in the oplog, replayed.
    let (again, items) = key_and_items(&invoke(&ex, &id, "atomic-append", &["8", "0"]));
    assert_eq!(items, 2);
    assert_ne!(again, key);
}

#[test]
fn a_trap_inside_an_atomic_region_discards_the_region_and_runs_it_again() {
    let dir = tempfile::tempdir().unwrap();
    let (ex, id) = setup(dir.path());
    let result = invoke(&ex, &id, "atomic-trap", &["5", "1"]);
    assert_eq!(field(&result, "retries"), "1");
    assert_eq!(
        field(&result, "items"),
        "1",
        "the region's append happened once"
    );
    let all = entries(&ex, &id);
    let begins: Vec<u64> = all
        .iter()
        .filter(|(_, e)| matches!(e, OplogEntry::BeginAtomicRegion))
        .map(|(i, _)| *i)
        .collect();
    assert_eq!(begins.len(), 2, "the region began twice");
    let (start, end) = all
        .iter()
        .find_map(|(_, e)| match e {
            OplogEntry::Discarded {
                start,
                end,
                reason: DiscardReason::Retry { attempt: 1, .. },
                ..
            } => Some((*start, *end)),
            _ => None,
        })
        .expect("the failed attempt's region was discarded");
    // Only the region was discarded: the key drawn before it is kept and replayed.
    assert_eq!(start, begins[0]);
    assert!(all
        .iter()
        .any(|(i, e)| *i == end && matches!(e, OplogEntry::Error { .. })));
    let keys: Vec<(u64, String)> = all
        .iter()
        .filter_map(|(i, e)| match e {
            OplogEntry::ImportedFunctionInvoked {
                function: HostFunction::GenerateIdempotencyKey,
                response,
                ..
            } => Some((*i, response.to_string())),
            _ => None,
        })
        .collect();
    assert_eq!(
        keys.len(),
        3,
        "before, in the failed region, in the retried region"
    );
    assert!(keys[0].0 < start && (start..=end).contains(&keys[1].0) && keys[2].0 > end);
    assert_ne!(keys[1].1, keys[2].1, "the region ran again, live");
    let record = ex.worker_record(&id).unwrap();
    assert_eq!(record.status, WorkerStatus::Idle);
    assert_eq!(record.retry_count, 0, "a success ends the retries");
    assert_eq!(record.history.deleted.regions().len(), 1);
    // The same state after a restart, with full replay and from a snapshot.
    let before = field(&result, "before");
    drop(ex);
    let ex = open(dir.path());
    ex.recover(&id, RecoveryMode::FullReplay).unwrap();
    assert_eq!(invoke(&ex, &id, "items", &[]), "[5]");
    let again = invoke(&ex, &id, "atomic-trap", &["6", "0"]);
    assert_ne!(field(&again, "before"), before);
    assert_eq!(field(&again, "items"), "2");
}

#[test]
fn the_default_retry_policy_is_golems_and_a_set_policy_is_recorded_and_survives_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let (mut ex, id) = setup(dir.path());
    assert_eq!(
        invoke(&ex, &id, "get-retry-policy", &[]),
        "{max-attempts: 3, min-delay: 100000000, max-delay: 1000000000, multiplier: 3}"
    );
    let policy = "{max-attempts: 5, min-delay: 1000000, max-delay: 8000000, multiplier: 2.5}";
    invoke(&ex, &id, "set-retry-policy", &[policy]);
    assert_eq!(invoke(&ex, &id, "get-retry-policy", &[]), policy);
    assert!(entries(&ex, &id).iter().any(|(_, e)| matches!(e,
        OplogEntry::ImportedFunctionInvoked { function: HostFunction::Golem(name), .. }
            if name == "set-retry-policy")));
    ex.snapshot(&id).unwrap();
    for mode in [RecoveryMode::FullReplay, RecoveryMode::Auto] {
        drop(ex);
        ex = open(dir.path());
        ex.recover(&id, mode).unwrap();
        assert_eq!(
            invoke(&ex, &id, "get-retry-policy", &[]),
            policy,
            "{mode:?}"
        );
    }
}

#[test]
fn a_trapping_invocation_is_retried_with_backoff_then_the_worker_fails() {
    let dir = tempfile::tempdir().unwrap();
    let (ex, id) = setup(dir.path());
    // 2 retries, 40 ms then 80 ms apart.
    invoke(
        &ex,
        &id,
        "set-retry-policy",
        &["{max-attempts: 2, min-delay: 40000000, max-delay: 1000000000, multiplier: 2.0}"],
    );
    let started = Instant::now();
    let err = try_invoke(&ex, &id, "always-trap", &[]).unwrap_err();
    let elapsed = started.elapsed();
    assert!(
        matches!(&err, Error::Trap { function, message }
            if function.contains("always-trap") && message.ends_with("(after 2 retries)")),
        "the trap is reported: {err}"
    );
    assert!(elapsed >= Duration::from_millis(120), "{elapsed:?}");
    let record = ex.worker_record(&id).unwrap();
    assert_eq!(record.status, WorkerStatus::Failed);
    assert_eq!(record.retry_count, 2, "retry-count = max-attempts");
    let delays: Vec<(u64, u64)> = entries(&ex, &id)
        .into_iter()
        .filter_map(|(_, e)| match e {
            OplogEntry::Discarded {
                reason: DiscardReason::Retry { attempt, delay_ms },
                ..
            } => Some((attempt, delay_ms)),
            _ => None,
        })
        .collect();
    assert_eq!(delays, vec![(1, 40), (2, 80)]);
    assert_eq!(count_kind(&ex, &id, "error"), 3, "three attempts failed");
    // Attempts are discarded after the invocation's entry: it is recorded once.
    assert_eq!(count_kind(&ex, &id, "exported-function-invoked"), 2);
    // After a restart the worker is still failed, with the same count.
    drop(ex);
    let ex = open(dir.path());
    let err = try_invoke(&ex, &id, "items", &[]).unwrap_err();
    assert!(matches!(err, Error::WorkerFailed { .. }), "{err}");
    let record = ex.worker_record(&id).unwrap();
    assert_eq!(
        (record.status, record.retry_count),
        (WorkerStatus::Failed, 2)
    );
}

#[test]
fn retry_count_counts_the_retries_of_the_running_invocation() {
    let dir = tempfile::tempdir().unwrap();
    let (ex, id) = setup(dir.path());
    invoke(
        &ex,
        &id,
        "set-retry-policy",
        &["{max-attempts: 4, min-delay: 1000000, max-delay: 1000000, multiplier: 1.0}"],
    );
    // The guest sees its own retry-count grow and succeeds on the third attempt.
    assert_eq!(invoke(&ex, &id, "trap-until", &["2"]), "2");
    let record = ex.worker_record(&id).unwrap();
    assert_eq!((record.status, record.retry_count), (WorkerStatus::Idle, 0));
    // Replay reproduces the successful attempt only.
    drop(ex);
    let ex = open(dir.path());
    ex.recover(&id, RecoveryMode::FullReplay).unwrap();
    assert_eq!(invoke(&ex, &id, "trap-until", &["0"]), "0");
}

#[test]
fn with_max_attempts_zero_a_trap_fails_the_worker_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let (ex, id) = setup(dir.path());
    invoke(
        &ex,
        &id,
        "set-retry-policy",
        &["{max-attempts: 0, min-delay: 0, max-delay: 0, multiplier: 1.0}"],
    );
    try_invoke(&ex, &id, "always-trap", &[]).unwrap_err();
    let record = ex.worker_record(&id).unwrap();
    assert_eq!(
        (record.status, record.retry_count),
        (WorkerStatus::Failed, 0)
    );
    assert_eq!(count_kind(&ex, &id, "discarded"), 0);
}

#[test]
fn persist_nothing_leaves_host_calls_unrecorded_and_they_run_live_again_on_replay() {
    let dir = tempfile::tempdir().unwrap();
    let (ex, id) = setup(dir.path());
    assert_eq!(invoke(&ex, &id, "get-persistence", &[]), "smart");
    let recorded_before = count_kind(&ex, &id, "imported-function-invoked");
    let draws = invoke(&ex, &id, "draw-unrecorded", &["4"]);
    let all = entries(&ex, &id);
    let host_calls: Vec<String> = all
        .iter()
        .filter(|(_, e)| e.kind() == "imported-function-invoked")
        .skip(recorded_before)
        .map(|(_, e)| e.to_string())
        .collect();
    // Only the two level changes are recorded: no random_get, no clock.
    assert_eq!(host_calls.len(), 2, "{host_calls:?}");
    assert!(host_calls[0].contains("set-oplog-persistence-level(persist-nothing)"));
    assert!(host_calls[1].contains("set-oplog-persistence-level(smart)"));
    assert_eq!(invoke(&ex, &id, "get-persistence", &[]), "smart");
    // Replay runs the draws live again: different numbers (4 random u64s repeating is
    // impossible in practice), and no divergence.
    drop(ex);
    let ex = open(dir.path());
    ex.recover(&id, RecoveryMode::FullReplay).unwrap();
    let replayed = invoke(&ex, &id, "last-draws", &[]);
    assert_ne!(replayed, draws);
    assert_eq!(replayed.matches(',').count(), 3);
    // The level itself persists across invocations and restarts until changed.
    invoke(&ex, &id, "set-persistence", &["persist-nothing"]);
    ex.snapshot(&id).unwrap();
    drop(ex);
    let ex = open(dir.path());
    assert_eq!(invoke(&ex, &id, "get-persistence", &[]), "persist-nothing");
    invoke(
        &ex,
        &id,
        "set-persistence",
        &["persist-remote-side-effects"],
    );
    assert_eq!(
        invoke(&ex, &id, "get-persistence", &[]),
        "persist-remote-side-effects"
    );
}

#[test]
fn idempotence_mode_is_on_by_default_and_off_wraps_remote_side_effects_in_markers() {
    let dir = tempfile::tempdir().unwrap();
    let (ex, id) = setup(dir.path());
    let other = ex.worker_id("txn", "other").unwrap();
    invoke(&ex, &other, "items", &[]);
    assert_eq!(invoke(&ex, &id, "get-idempotent", &[]), "true");
    assert_eq!(
        invoke(&ex, &id, "remote", &["\"other\"", "0"]),
        "\"status=idle version=0\""
    );
    assert_eq!(count_kind(&ex, &id, "begin-remote-write"), 0);
    invoke(&ex, &id, "set-idempotent", &["false"]);
    assert_eq!(invoke(&ex, &id, "get-idempotent", &[]), "false");
    invoke(&ex, &id, "remote", &["\"other\"", "0"]);
    let all = entries(&ex, &id);
    let begin = all
        .iter()
        .find(|(_, e)| matches!(e, OplogEntry::BeginRemoteWrite))
        .map(|(i, _)| *i)
        .expect("a begin-remote-write entry");
    assert!(matches!(
        &all[begin as usize].1,
        OplogEntry::ImportedFunctionInvoked {
            function: HostFunction::GetWorkerMetadata,
            ..
        }
    ));
    assert_eq!(
        all[begin as usize + 1].1,
        OplogEntry::EndRemoteWrite { begin }
    );
    // Replay goes through the markers, and the mode survives restarts.
    drop(ex);
    let ex = open(dir.path());
    ex.recover(&id, RecoveryMode::FullReplay).unwrap();
    assert_eq!(invoke(&ex, &id, "get-idempotent", &[]), "false");
    invoke(&ex, &id, "set-idempotent", &["true"]);
    assert_eq!(invoke(&ex, &id, "get-idempotent", &[]), "true");
}

/// With `wait_for_retries` off, a trapped invocation returns `RetryScheduled` at once (the
/// retry durably scheduled, the worker `retrying`), and `continue_retry` runs the next attempt;
/// if something activated the worker first, that ran the attempt, and `continue_retry` returns
/// its result.
#[test]
fn without_waiting_a_retry_is_continued_by_the_caller_or_by_the_next_activation() {
    let dir = tempfile::tempdir().unwrap();
    let ex = Executor::open(
        dir.path(),
        ExecutorOptions {
            fsync: false,
            wait_for_retries: false,
            ..ExecutorOptions::default()
        },
    )
    .unwrap();
    let wasm = std::fs::read(guest_wasm("txn")).unwrap();
    ex.components().add("txn", &wasm).unwrap();
    let policy =
        "{max-attempts: 2, min-delay: 3600000000000, max-delay: 3600000000000, multiplier: 1.0}";
    let scheduled = |ex: &Executor, id: &WorkerId| {
        let started = Instant::now();
        let invoked = ex
            .invoke(id, "trap-until", &["2".to_string()], None)
            .unwrap();
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no wait for the hour"
        );
        let Invoked::Deferred(Deferred::RetryScheduled {
            function,
            idempotency_key,
            attempt,
            delay,
            ..
        }) = invoked
        else {
            panic!("{invoked:?}")
        };
        assert_eq!((attempt, delay), (1, Duration::from_secs(3600)));
        assert_eq!(ex.worker_record(id).unwrap().status, WorkerStatus::Retrying);
        (function, idempotency_key)
    };

    // The caller goes on: each continuation runs one more attempt, until one returns.
    let a = ex.worker_id("txn", "a").unwrap();
    invoke(&ex, &a, "set-retry-policy", &[policy]);
    let (function, key) = scheduled(&ex, &a);
    let again = ex.continue_retry(&a, &function, &key).unwrap();
    assert!(
        matches!(
            again,
            Invoked::Deferred(Deferred::RetryScheduled { attempt: 2, .. })
        ),
        "{again:?}"
    );
    let done = ex.continue_retry(&a, &function, &key).done().unwrap();
    assert_eq!(done.result.as_deref(), Some("2"));
    assert_eq!(ex.worker_record(&a).unwrap().status, WorkerStatus::Idle);

    // Another invocation of the worker comes first: its activation runs the attempts (one
    // retry scheduled again, which refuses that invocation: the worker is busy; then it
    // returns), and the continuation finds the result.
    let b = ex.worker_id("txn", "b").unwrap();
    invoke(&ex, &b, "set-retry-policy", &[policy]);
    let (function, key) = scheduled(&ex, &b);
    let err = try_invoke(&ex, &b, "items", &[]).unwrap_err();
    assert!(
        matches!(&err, Error::WorkerBusy { why, .. } if why.contains("retry 2 of invocation")),
        "{err}"
    );
    assert_eq!(invoke(&ex, &b, "items", &[]), "[]");
    let done = ex.continue_retry(&b, &function, &key).done().unwrap();
    assert_eq!(done.result.as_deref(), Some("2"));
    assert_eq!(count_kind(&ex, &b, "exported-function-completed"), 3);
}
