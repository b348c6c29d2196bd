//! Promises: `create-promise`, `await-promise`, `complete-promise` and `delete-promise` through a
//! wit-bindgen guest; an await on an incomplete promise suspends the worker, completing the
//! promise resumes it, and the invocation's result is kept under its idempotency key.

use golemw_runtime::oplog::{HostFunction, OplogEntry};
use golemw_runtime::promises::{PromiseId, ResumptionOutcome};
use golemw_runtime::{
    Deferred, Error, Executor, ExecutorOptions, Invoked, RecoveryMode, WorkerId, WorkerStatus,
};
use golemw_tests::guest_wasm;
use golemw_tests::Completes;

fn open(dir: &std::path::Path) -> std::sync::Arc<Executor> {
    let options = ExecutorOptions {
        fsync: false,
        ..ExecutorOptions::default()
    };
    Executor::open(dir, options).expect("open the data directory")
}

fn setup(dir: &std::path::Path) -> std::sync::Arc<Executor> {
    let ex = open(dir);
    let wasm = std::fs::read(guest_wasm("promises")).unwrap();
    ex.components()
        .add("promises", &wasm)
        .expect("add component");
    ex
}

fn worker(ex: &Executor, name: &str) -> WorkerId {
    ex.worker_id("promises", name).unwrap()
}

fn try_invoke(
    ex: &Executor,
    id: &WorkerId,
    key: Option<&str>,
    function: &str,
    args: &[&str],
) -> Result<Option<String>, Error> {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    ex.invoke(id, function, &args, key).done().map(|o| o.result)
}

fn invoke(ex: &Executor, id: &WorkerId, function: &str, args: &[&str]) -> String {
    try_invoke(ex, id, None, function, args)
        .unwrap_or_else(|e| panic!("{function}({args:?}) failed: {e}"))
        .unwrap_or_default()
}

/// Invokes a function that must suspend; returns the promise it awaits.
fn suspends(ex: &Executor, id: &WorkerId, key: &str, function: &str, args: &[&str]) -> PromiseId {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    match ex.invoke(id, function, &args, Some(key)) {
        Ok(Invoked::Deferred(Deferred::Suspended {
            worker,
            promise,
            idempotency_key,
        })) => {
            assert_eq!(&worker, id);
            assert_eq!(idempotency_key, key);
            promise
        }
        other => panic!("{function}({args:?}) should suspend, got {other:?}"),
    }
}

fn status(ex: &Executor, id: &WorkerId) -> WorkerStatus {
    ex.worker_record(id).unwrap().status
}

fn promise(id: &WorkerId, oplog_idx: u64) -> PromiseId {
    PromiseId {
        worker: id.clone(),
        oplog_idx,
    }
}

fn entries(ex: &Executor, id: &WorkerId) -> Vec<(u64, OplogEntry)> {
    golemw_tests::oplog_entries(ex, id)
}

#[test]
fn create_promise_returns_the_index_of_its_own_entry() {
    let dir = tempfile::tempdir().unwrap();
    let ex = setup(dir.path());
    let a = worker(&ex, "a");
    let idx: u64 = invoke(&ex, &a, "create", &[]).parse().unwrap();
    let entries = entries(&ex, &a);
    let (_, entry) = entries.iter().find(|(i, _)| *i == idx).unwrap();
    assert!(
        matches!(entry, OplogEntry::ImportedFunctionInvoked { function: HostFunction::Golem(f), .. } if f == "create-promise"),
        "{entry}"
    );
    // A second promise gets a later index.
    let second: u64 = invoke(&ex, &a, "create", &[]).parse().unwrap();
    assert!(second > idx);
}

#[test]
fn await_suspends_the_worker_and_completing_the_promise_resumes_it() {
    let dir = tempfile::tempdir().unwrap();
    let ex = setup(dir.path());
    let a = worker(&ex, "a");
    let awaited = suspends(&ex, &a, "k1", "add-and-await", &["5"]);
    assert_eq!(awaited.worker, a);
    assert_eq!(status(&ex, &a), WorkerStatus::Suspended);
    let suspension = ex.suspension(&a).unwrap().expect("suspended");
    assert_eq!(suspension.promise, awaited);
    assert_eq!(suspension.idempotency_key, "k1");
    // Nothing of the await is recorded while it waits; the invocation is open.
    let last = entries(&ex, &a).pop().unwrap().1;
    assert!(
        matches!(&last, OplogEntry::ImportedFunctionInvoked { function: HostFunction::Golem(f), .. } if f == "create-promise"),
        "{last}"
    );

    let completion = ex.complete_promise(&awaited, b"hello").unwrap();
    assert!(completion.completed);
    assert_eq!(completion.resumed.len(), 1);
    assert_eq!(completion.resumed[0].worker, a);
    assert_eq!(completion.resumed[0].idempotency_key, "k1");
    match &completion.resumed[0].outcome {
        ResumptionOutcome::Finished { result } => {
            assert_eq!(result.as_deref(), Some("\"5:hello\""))
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(status(&ex, &a), WorkerStatus::Idle);
    assert!(ex.suspension(&a).unwrap().is_none());
    // The result is kept under the invocation's idempotency key.
    let again = ex
        .invoke(&a, "add-and-await", &["5".to_string()], Some("k1"))
        .done()
        .unwrap();
    assert!(again.from_idempotency_key);
    assert_eq!(again.result.as_deref(), Some("\"5:hello\""));
    // The invocation ran once.
    assert_eq!(invoke(&ex, &a, "total", &[]), "5");
}

#[test]
fn completing_a_promise_twice_returns_false() {
    let dir = tempfile::tempdir().unwrap();
    let ex = setup(dir.path());
    let a = worker(&ex, "a");
    let idx = invoke(&ex, &a, "create", &[]);
    let id = promise(&a, idx.parse().unwrap());
    assert!(ex.complete_promise(&id, b"one").unwrap().completed);
    assert!(!ex.complete_promise(&id, b"two").unwrap().completed);
    // The first payload stays.
    assert_eq!(invoke(&ex, &a, "await-own", &[&idx]), "\"one\"");
    // From a guest: true, then false.
    let idx = invoke(&ex, &a, "create", &[]);
    assert_eq!(invoke(&ex, &a, "complete-own", &[&idx, "\"x\""]), "true");
    assert_eq!(invoke(&ex, &a, "complete-own", &[&idx, "\"y\""]), "false");
    assert_eq!(invoke(&ex, &a, "await-own", &[&idx]), "\"x\"");
}

#[test]
fn unknown_and_deleted_promises_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let ex = setup(dir.path());
    let a = worker(&ex, "a");
    invoke(&ex, &a, "total", &[]);
    match ex.complete_promise(&promise(&a, 999), b"x") {
        Err(err @ Error::UnknownPromise(_)) => {
            let text = err.to_string();
            assert!(text.contains("unknown promise 999"), "{text}");
        }
        other => panic!("{other:?}"),
    }
    match ex.complete_promise(&promise(&worker(&ex, "nobody"), 1), b"x") {
        Err(Error::UnknownPromise(_)) => {}
        other => panic!("{other:?}"),
    }
    let idx = invoke(&ex, &a, "create", &[]);
    invoke(&ex, &a, "delete-own", &[&idx]);
    // Deleting twice changes nothing.
    invoke(&ex, &a, "delete-own", &[&idx]);
    match ex.complete_promise(&promise(&a, idx.parse().unwrap()), b"x") {
        Err(err @ Error::PromiseDeleted(_)) => {
            assert!(err.to_string().contains("was deleted"), "{err}")
        }
        other => panic!("{other:?}"),
    }
    // From a guest, using such a promise traps (the worker fails, with the reason).
    let b = worker(&ex, "b");
    match try_invoke(&ex, &b, None, "await-own", &["999"]) {
        Err(Error::Trap { message, .. }) => {
            assert!(message.contains("unknown promise 999"), "{message}")
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(status(&ex, &b), WorkerStatus::Failed);
    let c = worker(&ex, "c");
    let idx = invoke(&ex, &c, "create", &[]);
    invoke(&ex, &c, "delete-own", &[&idx]);
    match try_invoke(&ex, &c, None, "complete-own", &[&idx, "\"x\""]) {
        Err(Error::Trap { message, .. }) => assert!(message.contains("was deleted"), "{message}"),
        other => panic!("{other:?}"),
    }
    // The refusal is recorded: replay fails the worker in the same way, without the store.
    drop(ex);
    let ex = open(dir.path());
    ex.recover(&c, RecoveryMode::FullReplay).unwrap();
    assert_eq!(status(&ex, &c), WorkerStatus::Failed);
}

#[test]
fn a_suspended_worker_refuses_other_invocations_until_resumed() {
    let dir = tempfile::tempdir().unwrap();
    let ex = setup(dir.path());
    let a = worker(&ex, "a");
    let awaited = suspends(&ex, &a, "k1", "add-and-await", &["2"]);
    match try_invoke(&ex, &a, None, "total", &[]) {
        Err(err @ Error::WorkerSuspended { .. }) => {
            let text = err.to_string();
            assert!(
                text.contains("is suspended")
                    && text.contains(&format!("promise {}", awaited.oplog_idx))
                    && text.contains("complete-promise"),
                "{text}"
            );
        }
        other => panic!("{other:?}"),
    }
    // The suspended invocation itself, asked for again: still suspended.
    assert_eq!(suspends(&ex, &a, "k1", "add-and-await", &["2"]), awaited);
    // After a restart too.
    drop(ex);
    let ex = open(dir.path());
    assert!(matches!(
        try_invoke(&ex, &a, None, "total", &[]),
        Err(Error::WorkerSuspended { .. })
    ));
    assert!(ex.complete_promise(&awaited, b"go").unwrap().completed);
    assert_eq!(invoke(&ex, &a, "total", &[]), "2");
}

#[test]
fn a_worker_completes_another_workers_promise() {
    let dir = tempfile::tempdir().unwrap();
    let ex = setup(dir.path());
    let a = worker(&ex, "a");
    let b = worker(&ex, "b");
    let awaited = suspends(&ex, &a, "ka", "add-and-await", &["7"]);
    let idx = awaited.oplog_idx.to_string();
    // b completes a's promise; a resumes once b's invocation is over.
    assert_eq!(
        invoke(&ex, &b, "complete-other", &["\"a\"", &idx, "\"from b\""]),
        "true"
    );
    assert_eq!(status(&ex, &a), WorkerStatus::Idle);
    let done = ex
        .invoke(&a, "add-and-await", &["7".to_string()], Some("ka"))
        .done()
        .unwrap();
    assert!(done.from_idempotency_key);
    assert_eq!(done.result.as_deref(), Some("\"7:from b\""));
    assert_eq!(
        invoke(&ex, &b, "complete-other", &["\"a\"", &idx, "\"again\""]),
        "false"
    );
    // A worker can await another worker's promise, too.
    let idx = invoke(&ex, &a, "create", &[]);
    let awaited = suspends(&ex, &b, "kb", "await-other", &["\"a\"", &idx]);
    assert_eq!(awaited.worker, a);
    assert_eq!(invoke(&ex, &a, "complete-own", &[&idx, "\"hi b\""]), "true");
    let done = ex
        .invoke(
            &b,
            "await-other",
            &["\"a\"".into(), idx.clone()],
            Some("kb"),
        )
        .done()
        .unwrap();
    assert_eq!(done.result.as_deref(), Some("\"hi b\""));
}

#[test]
fn a_resumed_invocation_can_suspend_again() {
    let dir = tempfile::tempdir().unwrap();
    let ex = setup(dir.path());
    let a = worker(&ex, "a");
    let first = invoke(&ex, &a, "create", &[]);
    let awaited = suspends(&ex, &a, "k", "await-twice", &[&first]);
    assert_eq!(awaited.oplog_idx.to_string(), first);
    let completion = ex.complete_promise(&awaited, b"1").unwrap();
    let second = match &completion.resumed[0].outcome {
        ResumptionOutcome::SuspendedAgain { promise } => promise.clone(),
        other => panic!("{other:?}"),
    };
    assert!(second.oplog_idx > awaited.oplog_idx);
    assert_eq!(status(&ex, &a), WorkerStatus::Suspended);
    let completion = ex.complete_promise(&second, b"2").unwrap();
    assert!(matches!(
        &completion.resumed[0].outcome,
        ResumptionOutcome::Finished { result: Some(r) } if r == "\"1+2\""
    ));
}

/// The awaited payload is in the oplog: replay returns it even after the promise was deleted,
/// and a restart while suspended loses nothing.
#[test]
fn replay_does_not_need_the_promise_store() {
    let dir = tempfile::tempdir().unwrap();
    let ex = setup(dir.path());
    let a = worker(&ex, "a");
    let awaited = suspends(&ex, &a, "k1", "add-and-await", &["3"]);
    drop(ex);
    let ex = open(dir.path());
    assert_eq!(status(&ex, &a), WorkerStatus::Suspended);
    ex.complete_promise(&awaited, b"late").unwrap();
    invoke(&ex, &a, "delete-own", &[&awaited.oplog_idx.to_string()]);
    drop(ex);
    let ex = open(dir.path());
    let report = ex.recover(&a, RecoveryMode::FullReplay).unwrap();
    assert!(!report.resumed_invocation);
    assert_eq!(invoke(&ex, &a, "total", &[]), "3");
    let done = ex
        .invoke(&a, "add-and-await", &["3".to_string()], Some("k1"))
        .done()
        .unwrap();
    assert_eq!(done.result.as_deref(), Some("\"3:late\""));
    // Deleting a worker deletes its promises.
    ex.delete_worker(&a).unwrap();
    assert!(matches!(
        ex.complete_promise(&awaited, b"x"),
        Err(Error::UnknownPromise(_))
    ));
}

/// `interrupt` marks a worker interrupted: invocations are refused and a completed promise does
/// not resume it until `resume`, which puts the status back and lets it go on.
#[test]
fn an_interrupted_worker_runs_nothing_until_resumed() {
    let dir = tempfile::tempdir().unwrap();
    let ex = setup(dir.path());
    let a = worker(&ex, "a");
    invoke(&ex, &a, "total", &[]);
    assert_eq!(ex.interrupt_worker(&a).unwrap(), WorkerStatus::Idle);
    assert_eq!(status(&ex, &a), WorkerStatus::Interrupted);
    // Twice: nothing changes.
    assert_eq!(ex.interrupt_worker(&a).unwrap(), WorkerStatus::Interrupted);
    match try_invoke(&ex, &a, None, "total", &[]) {
        Err(err @ Error::WorkerInterrupted { .. }) => {
            assert!(
                err.to_string().contains("is interrupted; resuming it"),
                "{err}"
            )
        }
        other => panic!("{other:?}"),
    }
    // It stays interrupted across a restart.
    drop(ex);
    let ex = open(dir.path());
    assert!(matches!(
        try_invoke(&ex, &a, None, "total", &[]),
        Err(Error::WorkerInterrupted { .. })
    ));
    assert_eq!(ex.resume_worker(&a).unwrap(), WorkerStatus::Idle);
    assert!(matches!(
        ex.resume_worker(&a),
        Err(Error::InvalidStatus { .. })
    ));
    assert_eq!(invoke(&ex, &a, "total", &[]), "0");

    // A suspended worker, interrupted: completing its promise does not resume it; resuming does.
    let awaited = suspends(&ex, &a, "k", "add-and-await", &["6"]);
    assert_eq!(ex.interrupt_worker(&a).unwrap(), WorkerStatus::Suspended);
    let completion = ex.complete_promise(&awaited, b"later").unwrap();
    assert!(completion.completed && completion.resumed.is_empty());
    assert_eq!(status(&ex, &a), WorkerStatus::Interrupted);
    assert_eq!(ex.resume_worker(&a).unwrap(), WorkerStatus::Idle);
    let done = ex
        .invoke(&a, "add-and-await", &["6".to_string()], Some("k"))
        .done()
        .unwrap();
    assert_eq!(done.result.as_deref(), Some("\"6:later\""));
    // Interrupted while suspended on a pending promise: resumed, it is suspended again.
    let awaited = suspends(&ex, &a, "k2", "add-and-await", &["1"]);
    ex.interrupt_worker(&a).unwrap();
    assert_eq!(ex.resume_worker(&a).unwrap(), WorkerStatus::Suspended);
    assert!(ex.complete_promise(&awaited, b"x").unwrap().completed);
    assert_eq!(invoke(&ex, &a, "total", &[]), "7");
}

/// An invocation resumed by a completed promise that then sleeps past the durable-sleep
/// threshold stays deferred: those waiting for it hear its result after the sleep, not a
/// failure, and the wake is scheduled by the resumption itself.
#[test]
fn a_resumed_invocation_that_sleeps_is_woken_and_finishes() {
    let dir = tempfile::tempdir().unwrap();
    let options = ExecutorOptions {
        fsync: false,
        durable_sleep_min: Some(std::time::Duration::from_millis(100)),
        ..ExecutorOptions::default()
    };
    let ex = Executor::serve(dir.path(), options).unwrap();
    let wasm = std::fs::read(guest_wasm("promises")).unwrap();
    ex.components().add("promises", &wasm).unwrap();
    let a = worker(&ex, "a");
    let idx = invoke(&ex, &a, "create", &[]);
    let awaited = suspends(&ex, &a, "k", "await-then-sleep", &[&idx, "400"]);

    let started = std::time::Instant::now();
    let completion = ex.complete_promise(&awaited, b"later").unwrap();
    assert_eq!(completion.resumed.len(), 1);
    match &completion.resumed[0].outcome {
        ResumptionOutcome::Sleeping { until_ms } => {
            assert!(
                *until_ms >= golemw_runtime::oplog::now_ms() + 100,
                "{until_ms}"
            )
        }
        other => panic!("the resumed invocation should sleep, got {other:?}"),
    }
    assert!(
        started.elapsed() < std::time::Duration::from_millis(300),
        "the sleep held the completing thread"
    );
    assert_eq!(status(&ex, &a), WorkerStatus::Suspended);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let result = runtime.block_on(ex.await_invocation(&a, "k")).unwrap();
    assert_eq!(result.as_deref(), Some("\"later\""));
    assert!(started.elapsed() >= std::time::Duration::from_millis(400));
    assert_eq!(status(&ex, &a), WorkerStatus::Idle);
    assert_eq!(ex.pending_timers(), 0);
}
