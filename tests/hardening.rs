//! Hostile guests against the runtime's bounds: what a guest controls has a limit, and going
//! past it leaves the worker readable.

use golemw_runtime::oplog::store::BlockRead;
use golemw_runtime::oplog::OplogEntry;
use golemw_runtime::{Error, Executor, ExecutorOptions, RecoveryMode, WorkerId, WorkerStatus};
use golemw_tests::guest_wasm;
use golemw_tests::Completes;

fn open(dir: &std::path::Path) -> std::sync::Arc<Executor> {
    Executor::open(dir, ExecutorOptions::default()).unwrap()
}

/// Adds the guest `name` as a component of the same name.
fn add_guest(ex: &Executor, name: &str) {
    let wasm = std::fs::read(guest_wasm(name)).unwrap();
    ex.components().add(name, &wasm).unwrap();
}

/// Every entry of a worker's oplog; a corrupt block fails the test.
fn entries(ex: &Executor, id: &WorkerId) -> Vec<OplogEntry> {
    let len = ex.oplog_len(id).unwrap() as usize;
    ex.oplog(id, 1, len)
        .unwrap()
        .into_iter()
        .flat_map(|block| match block {
            BlockRead::Entries(entries) => entries,
            BlockRead::Corrupt { detail, .. } => panic!("unreadable oplog: {detail}"),
        })
        .map(|(_, entry)| entry)
        .collect()
}

/// Output bytes in the oplog, and the last output entry's text.
fn output(entries: &[OplogEntry]) -> (u64, Vec<u8>) {
    let mut total = 0;
    let mut last = Vec::new();
    for entry in entries {
        if let OplogEntry::Log { bytes, .. } = entry {
            total += bytes.len() as u64;
            last = bytes.clone();
        }
    }
    (total, last)
}

/// An invocation printing 80 MiB keeps 64 MiB and a marker; the oplog stays readable (a 260 MiB
/// flood once left a block no reader accepted), replay reproduces the same entries, and the
/// next invocation starts its own count.
#[test]
fn output_past_the_per_invocation_bound_is_dropped_after_a_marker() {
    let dir = tempfile::tempdir().unwrap();
    let ex = open(dir.path());
    add_guest(&ex, "hostile");
    let id = ex.worker_id("hostile", "loud").unwrap();
    ex.invoke(&id, "flood", &["80".into()], None)
        .done()
        .unwrap();
    let all = entries(&ex, &id);
    let (total, last) = output(&all);
    let marker = b"\n[golemw: this invocation's output passed 64 MiB; the rest is dropped]\n";
    assert_eq!(total, (64 << 20) + marker.len() as u64);
    assert!(last.ends_with(marker));
    // No entry holds more than one call's worth (1 MiB) plus the marker.
    for entry in &all {
        if let OplogEntry::Log { bytes, .. } = entry {
            assert!(bytes.len() <= (1 << 20) + marker.len(), "{}", bytes.len());
        }
    }
    // A small flood afterwards is kept whole: the bound is per invocation.
    ex.invoke(&id, "flood", &["1".into()], None).done().unwrap();
    let (after, _) = output(&entries(&ex, &id));
    assert_eq!(after, total + (1 << 20));
    assert_eq!(
        ex.invoke(&id, "add", &["2".into()], None)
            .done()
            .unwrap()
            .result
            .as_deref(),
        Some("2")
    );
    // Replayed from scratch in a new process: same output consumed, same state.
    drop(ex);
    let ex = open(dir.path());
    ex.recover(&id, RecoveryMode::FullReplay).unwrap();
    assert_eq!(
        ex.invoke(&id, "add", &["3".into()], None)
            .done()
            .unwrap()
            .result
            .as_deref(),
        Some("5")
    );
}

/// `proc_exit(n)`: a code other than 0 is reported with the code (it used to read as a
/// completed invocation without a result); 0 is a clean end. The worker is exited either way,
/// in this process and the next.
#[test]
fn proc_exit_is_reported_with_its_code() {
    let dir = tempfile::tempdir().unwrap();
    let ex = open(dir.path());
    add_guest(&ex, "hostile");
    let id = ex.worker_id("hostile", "quits").unwrap();
    assert_eq!(
        ex.invoke(&id, "add", &["1".into()], None)
            .done()
            .unwrap()
            .result
            .as_deref(),
        Some("1")
    );
    match ex.invoke(&id, "exit-with", &["3".into()], None).done() {
        Err(err @ Error::GuestExited { code: 3, .. }) => {
            assert!(err.to_string().contains("exited with code 3"), "{err}")
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(ex.worker_record(&id).unwrap().status, WorkerStatus::Exited);
    let refused = ex
        .invoke(&id, "add", &["1".into()], None)
        .done()
        .unwrap_err();
    assert!(matches!(refused, Error::WorkerExited { .. }), "{refused}");
    let clean = ex.worker_id("hostile", "done").unwrap();
    let outcome = ex
        .invoke(&clean, "exit-with", &["0".into()], None)
        .done()
        .unwrap();
    assert_eq!(outcome.result, None);
    assert_eq!(
        ex.worker_record(&clean).unwrap().status,
        WorkerStatus::Exited
    );
    drop(ex);
    let ex = open(dir.path());
    assert_eq!(ex.worker_record(&id).unwrap().status, WorkerStatus::Exited);
    let refused = ex
        .invoke(&id, "add", &["1".into()], None)
        .done()
        .unwrap_err();
    assert!(matches!(refused, Error::WorkerExited { .. }), "{refused}");
}

/// A completed idempotency key repeated for another call (another function, or other
/// parameters) is refused, not answered with the first call's result; repeated for the same
/// call it returns the stored result.
#[test]
fn an_idempotency_key_repeated_for_another_call_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let ex = open(dir.path());
    add_guest(&ex, "counter");
    let id = ex.worker_id("counter", "w").unwrap();
    let first = ex
        .invoke(&id, "add", &["2".into()], Some("k"))
        .done()
        .unwrap();
    assert_eq!(first.result.as_deref(), Some("2"));
    // The same call: the stored result.
    let again = ex
        .invoke(&id, "add", &["2".into()], Some("k"))
        .done()
        .unwrap();
    assert_eq!(
        (again.result.as_deref(), again.from_idempotency_key),
        (Some("2"), true)
    );
    let other_params = ex
        .invoke(&id, "add", &["3".into()], Some("k"))
        .done()
        .unwrap_err();
    assert!(
        matches!(other_params, Error::IdempotencyKeyReused { .. })
            && other_params.to_string().contains("parameters (2), not (3)"),
        "{other_params}"
    );
    let other_function = ex.invoke(&id, "get", &[], Some("k")).done().unwrap_err();
    assert!(
        matches!(other_function, Error::IdempotencyKeyReused { .. })
            && other_function.to_string().contains("{add}, not"),
        "{other_function}"
    );
    // Nothing ran for the refused calls.
    assert_eq!(
        ex.invoke(&id, "get", &[], None)
            .done()
            .unwrap()
            .result
            .as_deref(),
        Some("2")
    );
}

/// WAVE arguments come from clients: wasm-wave bounds their nesting (100 levels) instead of
/// recursing on them, and the error echoes at most 200 characters of the text. 100,000 `[` are
/// refused with a short message, and no worker is created for the refused call.
#[test]
fn deeply_nested_wave_is_refused_with_a_short_message() {
    let dir = tempfile::tempdir().unwrap();
    let ex = open(dir.path());
    add_guest(&ex, "counter");
    let id = ex.worker_id("counter", "w").unwrap();
    let err = ex
        .invoke(&id, "add", &["[".repeat(100_000)], None)
        .done()
        .unwrap_err();
    let message = err.to_string();
    assert!(message.contains("nesting too deep"), "{message}");
    assert!(message.len() < 1_000, "{} bytes", message.len());
    assert!(matches!(
        ex.worker_record(&id),
        Err(Error::UnknownWorker(_))
    ));
}

/// A write that fails for want of space leaves no trace in memory: the instance that ran the
/// failed invocation is dropped and the next attempt starts from storage, so the retried key
/// runs once. (On a full disk, retries of key k7 once answered 11 instead of 8: the failed
/// attempts' effects stayed in the live instance.) The storage is capped small to fill it.
#[test]
fn an_invocation_whose_commit_finds_storage_full_runs_once_when_retried() {
    let dir = tempfile::tempdir().unwrap();
    let capped = |limit: u64| ExecutorOptions {
        max_storage_bytes: Some(limit),
        ..ExecutorOptions::default()
    };
    let ex = Executor::open(dir.path(), capped(4 << 20)).unwrap();
    add_guest(&ex, "counter");
    let id = ex.worker_id("counter", "w").unwrap();
    assert_eq!(
        ex.invoke(&id, "add", &["1".into()], Some("k0"))
            .done()
            .unwrap()
            .result
            .as_deref(),
        Some("1")
    );
    // Fill the storage with output that does not compress, in ever smaller pieces.
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut noise = |len: usize| -> String {
        (0..len)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                char::from(b'a' + (seed % 26) as u8)
            })
            .collect()
    };
    let mut full = 0;
    for size in [64 << 10, 8 << 10, 1 << 10, 64] {
        for n in 0.. {
            let text = format!("\"{}\"", noise(size));
            match ex
                .invoke(&id, "print", &[text], Some(&format!("p{size}-{n}")))
                .done()
            {
                Ok(_) => {}
                Err(Error::StorageLimit { .. }) => {
                    full += 1;
                    break;
                }
                Err(err) => panic!("{err}"),
            }
            assert!(n < 10_000, "storage never filled");
        }
    }
    assert_eq!(full, 4);
    // Then with invocations like the one under test, until one is refused: the storage is
    // full to the last page such a commit needs.
    let mut counter = 1u64;
    for n in 0.. {
        match ex
            .invoke(&id, "add", &["1".into()], Some(&format!("a{n}")))
            .done()
        {
            Ok(_) => counter += 1,
            Err(Error::StorageLimit { .. }) => break,
            Err(err) => panic!("{err}"),
        }
        assert!(n < 100_000, "storage never filled");
    }
    let expected = (counter + 5).to_string();
    // Key k7, three times against the full storage.
    let mut failed = 0;
    for _ in 0..3 {
        match ex.invoke(&id, "add", &["5".into()], Some("k7")).done() {
            Ok(outcome) => assert_eq!(outcome.result.as_deref(), Some(expected.as_str())),
            Err(Error::StorageLimit { .. }) => failed += 1,
            Err(err) => panic!("{err}"),
        }
    }
    assert!(
        failed >= 1,
        "the storage was not full enough to refuse the invocation"
    );
    // Room again: the retried key runs once, however many attempts failed.
    drop(ex);
    let ex = Executor::open(dir.path(), capped(64 << 20)).unwrap();
    let outcome = ex
        .invoke(&id, "add", &["5".into()], Some("k7"))
        .done()
        .unwrap();
    assert_eq!(outcome.result.as_deref(), Some(expected.as_str()));
    let again = ex
        .invoke(&id, "add", &["5".into()], Some("k7"))
        .done()
        .unwrap();
    assert_eq!(
        (again.result.as_deref(), again.from_idempotency_key),
        (Some(expected.as_str()), true)
    );
    assert_eq!(
        ex.invoke(&id, "get", &[], None)
            .done()
            .unwrap()
            .result
            .as_deref(),
        Some(expected.as_str())
    );
}

/// A new worker whose start-up code (`_initialize`) traps on its first invocation is not
/// stored: the invocation fails with the trap and the name stays free (it used to leave a
/// worker record behind).
#[test]
fn a_new_worker_whose_start_up_code_traps_is_not_stored() {
    let dir = tempfile::tempdir().unwrap();
    let ex = open(dir.path());
    add_guest(&ex, "init-trap");
    let id = ex.worker_id("init-trap", "w").unwrap();
    for _ in 0..2 {
        match ex.invoke(&id, "get", &[], None).done() {
            Err(Error::Trap { function, .. }) => assert_eq!(function, "_initialize"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            ex.worker_record(&id),
            Err(Error::UnknownWorker(_))
        ));
        assert!(ex.list_workers(&id.component_id).unwrap().is_empty());
    }
}

#[test]
fn a_worker_cannot_grow_its_memory_past_the_limit_and_one_starting_past_it_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let options = |mib: u64| ExecutorOptions {
        fsync: false,
        max_memory_bytes: Some(mib << 20),
        ..ExecutorOptions::default()
    };
    let ex = Executor::open(dir.path(), options(8)).unwrap();
    add_guest(&ex, "hostile");
    let id = ex.worker_id("hostile", "h").unwrap();
    let grow = |pages: &str| {
        ex.invoke(&id, "grow", &[pages.to_string()], None)
            .done()
            .unwrap()
            .result
            .unwrap()
    };
    let size: u32 = grow("0").parse().unwrap();
    assert!(size < 128, "the guest starts below 8 MiB: {size} pages");
    // Up to the limit: 128 pages of 64 KiB.
    assert_eq!(grow(&(128 - size).to_string()), "128");
    // Past it, memory.grow fails as it would at 4 GiB: the guest sees it and goes on.
    assert_eq!(grow("1"), u32::MAX.to_string());
    assert_eq!(grow("0"), "128");
    // Replay grows the same: the state is whole after a restart.
    drop(ex);
    let ex = Executor::open(dir.path(), options(8)).unwrap();
    ex.recover(&id, RecoveryMode::FullReplay).unwrap();
    assert_eq!(
        ex.invoke(&id, "grow", &["0".to_string()], None)
            .done()
            .unwrap()
            .result
            .as_deref(),
        Some("128")
    );
    drop(ex);
    // A limit below what the module starts with refuses it, saying why.
    let ex = Executor::open(dir.path(), options(0)).unwrap();
    let other = ex.worker_id("hostile", "other").unwrap();
    let err = ex
        .invoke(&other, "add", &["1".to_string()], None)
        .done()
        .unwrap_err()
        .to_string();
    assert!(err.contains("the limit per worker is 64 KiB"), "{err}");
}
