//! Many workers at once, in process: invocations of different workers in parallel, one
//! worker's in arrival order, group commit, eviction, interrupts, durable sleeps and queued
//! invocations. Real LMDB in a temp dir, real Wasmer, guests built from source.

use golemw_tests::Completes;
use std::future::Future;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use golemw_runtime::executor::InvocationStatus;
use golemw_runtime::{Deferred, Error, Executor, ExecutorOptions, Invoked, WorkerId, WorkerStatus};
use golemw_tests::guest_wasm;

fn open_with(dir: &std::path::Path, options: ExecutorOptions) -> std::sync::Arc<Executor> {
    Executor::open(dir, options).expect("open the data directory")
}

fn add_component(executor: &Executor, guest: &str, name: &str) {
    let wasm = std::fs::read(guest_wasm(guest)).unwrap();
    executor
        .components()
        .add(name, &wasm)
        .expect("add component");
}

fn invoke(executor: &Executor, id: &WorkerId, function: &str, args: &[&str]) -> Option<String> {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    executor
        .invoke(id, function, &args, None)
        .done()
        .unwrap_or_else(|e| panic!("{function}({args:?}) on {id} failed: {e}"))
        .result
}

/// Opens a data directory a serving executor just let go of (its background threads drop their
/// last references to it a moment after its owner does).
fn reopen(dir: &std::path::Path) -> std::sync::Arc<Executor> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match Executor::open(dir, ExecutorOptions::default()) {
            Ok(ex) => return ex,
            Err(Error::DataDirLocked { .. }) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20))
            }
            Err(err) => panic!("reopening: {err}"),
        }
    }
}

fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(future)
}

#[test]
fn a_sleeping_worker_does_not_hold_up_another_worker() {
    let dir = tempfile::tempdir().unwrap();
    let ex = Arc::new(open_with(dir.path(), ExecutorOptions::default()));
    add_component(&ex, "clocks", "clocks");
    add_component(&ex, "counter", "counter");
    let sleeper = ex.worker_id("clocks", "a").unwrap();
    let other = ex.worker_id("counter", "b").unwrap();
    invoke(&ex, &sleeper, "now", &[]);
    invoke(&ex, &other, "get", &[]);
    let sleeping = {
        let ex = Arc::clone(&ex);
        let sleeper = sleeper.clone();
        std::thread::spawn(move || {
            invoke(&ex, &sleeper, "sleep-ms", &["3000"]);
            Instant::now()
        })
    };
    // While A sleeps in its thread (one-shot executors sleep in the process), B runs.
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        ex.worker_record(&sleeper).unwrap().status,
        WorkerStatus::Running
    );
    for i in 1..=20u64 {
        assert_eq!(invoke(&ex, &other, "add", &["1"]), Some(i.to_string()));
    }
    let b_done = Instant::now();
    let a_done = sleeping.join().unwrap();
    assert!(
        b_done < a_done,
        "B's 20 invocations finished only after A's sleep"
    );
}

#[test]
fn turns_of_one_worker_are_given_in_arrival_order() {
    let dir = tempfile::tempdir().unwrap();
    let ex = open_with(dir.path(), ExecutorOptions::default());
    add_component(&ex, "counter", "counter");
    let id = ex.worker_id("counter", "w").unwrap();
    let first = ex.turn(&id);
    // Three callers line up (a turn future takes its place in line when made), then are
    // polled in reverse order: only the first in line gets the turn when it is given up.
    let mut waiting: Vec<_> = (0..3).map(|_| Box::pin(ex.turn_async(&id))).collect();
    let waker = std::task::Waker::noop();
    let mut cx = std::task::Context::from_waker(waker);
    for future in waiting.iter_mut().rev() {
        assert!(future.as_mut().poll(&mut cx).is_pending());
    }
    drop(first);
    assert!(waiting[2].as_mut().poll(&mut cx).is_pending());
    assert!(waiting[1].as_mut().poll(&mut cx).is_pending());
    let std::task::Poll::Ready(second) = waiting[0].as_mut().poll(&mut cx) else {
        panic!("the first in line did not get the turn");
    };
    // A caller that gives up its place does not block those behind it.
    drop(waiting.remove(1));
    drop(second);
    assert!(waiting[1].as_mut().poll(&mut cx).is_ready());
}

#[test]
fn concurrent_invocations_of_one_worker_all_count_once() {
    let dir = tempfile::tempdir().unwrap();
    let ex = Arc::new(open_with(dir.path(), ExecutorOptions::default()));
    add_component(&ex, "counter", "counter");
    let id = ex.worker_id("counter", "shared").unwrap();
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let (ex, id) = (Arc::clone(&ex), id.clone());
            std::thread::spawn(move || {
                for _ in 0..10 {
                    invoke(&ex, &id, "add", &["1"]);
                }
            })
        })
        .collect();
    threads.into_iter().for_each(|t| t.join().unwrap());
    assert_eq!(invoke(&ex, &id, "get", &[]), Some("80".into()));
    drop(ex);
    let ex = open_with(dir.path(), ExecutorOptions::default());
    assert_eq!(invoke(&ex, &id, "get", &[]), Some("80".into()));
}

#[test]
fn commits_of_concurrent_workers_share_fsyncs_and_a_lone_commit_pays_one() {
    let dir = tempfile::tempdir().unwrap();
    let ex = Arc::new(open_with(dir.path(), ExecutorOptions::default()));
    add_component(&ex, "counter", "counter");
    let ids: Vec<WorkerId> = (0..16)
        .map(|i| ex.worker_id("counter", &format!("w{i}")).unwrap())
        .collect();
    for id in &ids {
        invoke(&ex, id, "get", &[]);
    }
    // A lone invocation: one commit, one meta sync (and its data sync inside the commit).
    let before = ex.storage().io_counts();
    invoke(&ex, &ids[0], "add", &["1"]);
    let after = ex.storage().io_counts();
    assert_eq!(after.commits - before.commits, 1);
    assert_eq!(after.syncs - before.syncs, 1);
    // Sixteen workers invoked at once, 20 times each: their commits meet.
    const ROUNDS: u64 = 20;
    let before = ex.storage().io_counts();
    let start = Arc::new(Barrier::new(ids.len()));
    let threads: Vec<_> = ids
        .iter()
        .cloned()
        .map(|id| {
            let (ex, start) = (Arc::clone(&ex), Arc::clone(&start));
            std::thread::spawn(move || {
                start.wait();
                for _ in 0..ROUNDS {
                    invoke(&ex, &id, "add", &["1"]);
                }
            })
        })
        .collect();
    threads.into_iter().for_each(|t| t.join().unwrap());
    let after = ex.storage().io_counts();
    let invocations = ROUNDS * ids.len() as u64;
    let syncs = after.syncs - before.syncs;
    assert_eq!(after.grouped_writes - before.grouped_writes, invocations);
    assert!(
        syncs < invocations,
        "{invocations} concurrent invocations made {syncs} syncs: none were shared"
    );
    // Every one of them is durable: a new process sees them all.
    drop(ex);
    let ex = open_with(dir.path(), ExecutorOptions::default());
    assert_eq!(
        invoke(&ex, &ids[0], "get", &[]),
        Some((ROUNDS + 1).to_string())
    );
    for id in &ids[1..] {
        assert_eq!(invoke(&ex, id, "get", &[]), Some(ROUNDS.to_string()));
    }
}

#[test]
fn idle_workers_past_the_budget_are_evicted_and_come_back_from_storage() {
    let dir = tempfile::tempdir().unwrap();
    let options = ExecutorOptions {
        max_active_workers: 2,
        ..ExecutorOptions::default()
    };
    let ex = open_with(dir.path(), options);
    add_component(&ex, "counter", "counter");
    let ids: Vec<WorkerId> = (0..5)
        .map(|i| ex.worker_id("counter", &format!("w{i}")).unwrap())
        .collect();
    for (i, id) in ids.iter().enumerate() {
        invoke(&ex, id, "add", &[&(i + 1).to_string()]);
    }
    let (loaded, evicted) = ex.active_counts();
    assert!(loaded <= 2, "{loaded} instances loaded with a budget of 2");
    assert!(evicted >= 3, "only {evicted} evicted");
    for (i, id) in ids.iter().enumerate() {
        assert_eq!(invoke(&ex, id, "get", &[]), Some((i + 1).to_string()));
    }
    assert!(ex.active_counts().0 <= 2);
}

/// Past a budget of linear memory, idle workers are evicted as past a budget of instances:
/// four workers grown to about 11 MiB each, under a budget of 24 MiB, leave at most two in
/// memory; each comes back from storage with its state.
#[test]
fn idle_workers_past_the_memory_budget_are_evicted_and_come_back() {
    let dir = tempfile::tempdir().unwrap();
    const BUDGET: u64 = 24 << 20;
    let options = ExecutorOptions {
        max_active_memory: Some(BUDGET),
        ..ExecutorOptions::default()
    };
    let ex = open_with(dir.path(), options);
    add_component(&ex, "hostile", "hostile");
    let ids: Vec<WorkerId> = (0..4)
        .map(|i| ex.worker_id("hostile", &format!("big{i}")).unwrap())
        .collect();
    for (i, id) in ids.iter().enumerate() {
        invoke(&ex, id, "add", &[&(i + 1).to_string()]);
        let pages: u32 = invoke(&ex, id, "grow", &["160"]).unwrap().parse().unwrap();
        assert!(pages > 160, "grown to {pages} pages");
        assert!(
            ex.active_memory_bytes() <= BUDGET,
            "{} bytes of memory loaded with a budget of {BUDGET}",
            ex.active_memory_bytes()
        );
    }
    let (loaded, evicted) = ex.active_counts();
    assert!(
        loaded <= 2,
        "{loaded} instances of ~11 MiB loaded under 24 MiB"
    );
    assert!(evicted >= 2, "only {evicted} evicted");
    for (i, id) in ids.iter().enumerate() {
        assert_eq!(invoke(&ex, id, "add", &["0"]), Some((i + 1).to_string()));
    }
    assert!(ex.active_memory_bytes() <= BUDGET);
}

/// A runaway guest (a loop with or without host calls) is stopped at the invocation deadline
/// and traps; the retry policy applies, each attempt is stopped the same way, and the worker
/// ends failed with the reason. Other workers are answered meanwhile.
#[test]
fn an_invocation_past_its_deadline_traps_and_each_retry_is_stopped_too() {
    let _alone = LONG_CALLS.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let deadline = Duration::from_millis(200);
    let options = ExecutorOptions {
        invocation_deadline: Some(deadline),
        ..ExecutorOptions::default()
    };
    let ex = Arc::new(open_with(dir.path(), options));
    add_component(&ex, "hostile", "hostile");
    for (worker, function) in [("a", "spin"), ("b", "spin-with-clock")] {
        let id = ex.worker_id("hostile", worker).unwrap();
        assert_eq!(invoke(&ex, &id, "add", &["5"]), Some("5".into()));
        let started = Instant::now();
        let spinning = {
            let (ex, id) = (Arc::clone(&ex), id.clone());
            std::thread::spawn(move || ex.invoke(&id, function, &[], Some("runaway")).done())
        };
        let calm = ex.worker_id("hostile", &format!("calm-{worker}")).unwrap();
        assert_eq!(invoke(&ex, &calm, "add", &["1"]), Some("1".into()));
        let err = spinning.join().unwrap().unwrap_err();
        let took = started.elapsed();
        assert!(
            err.to_string()
                .contains("ran past its deadline of 200 ms and was stopped"),
            "{function}: {err}"
        );
        // The first attempt and the policy's three retries, each stopped at the deadline.
        assert!(took >= deadline * 4, "{function} failed after {took:?}");
        let record = ex.worker_record(&id).unwrap();
        assert_eq!(record.status, WorkerStatus::Failed, "{function}");
        assert!(
            record
                .last_error
                .as_deref()
                .unwrap_or("")
                .contains("deadline"),
            "{:?}",
            record.last_error
        );
    }
}

#[test]
fn interrupt_stops_a_running_invocation_even_in_a_loop_without_host_calls() {
    let dir = tempfile::tempdir().unwrap();
    let ex = Arc::new(open_with(dir.path(), ExecutorOptions::default()));
    add_component(&ex, "hostile", "hostile");
    for (worker, function) in [("a", "spin"), ("b", "spin-with-clock")] {
        let id = ex.worker_id("hostile", worker).unwrap();
        assert_eq!(invoke(&ex, &id, "add", &["5"]), Some("5".into()));
        let running = {
            let (ex, id) = (Arc::clone(&ex), id.clone());
            std::thread::spawn(move || ex.invoke(&id, function, &[], Some("the-spin")).done())
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while ex.worker_record(&id).unwrap().status != WorkerStatus::Running {
            assert!(
                !running.is_finished(),
                "{function} ended: {:?}",
                running.join()
            );
            assert!(Instant::now() < deadline, "{function} never started");
            std::thread::sleep(Duration::from_millis(10));
        }
        std::thread::sleep(Duration::from_millis(100));
        let previous = ex.interrupt_worker(&id).unwrap();
        assert_eq!(previous, WorkerStatus::Running, "{function}");
        let err = running.join().unwrap().unwrap_err();
        assert!(
            matches!(err, Error::Interrupted { .. }),
            "{function}: {err}"
        );
        assert!(
            err.to_string().contains("Interrupted via the Golem API"),
            "{err}"
        );
        assert_eq!(
            ex.worker_record(&id).unwrap().status,
            WorkerStatus::Interrupted
        );
        // Interrupted: nothing runs it until resumed.
        let refused = ex
            .invoke(&id, "add", &["1".into()], None)
            .done()
            .unwrap_err();
        assert!(
            matches!(refused, Error::WorkerInterrupted { .. }),
            "{refused}"
        );
    }
}

#[test]
fn a_long_sleep_suspends_the_worker_and_a_timer_finishes_the_invocation() {
    let dir = tempfile::tempdir().unwrap();
    let options = ExecutorOptions {
        durable_sleep_min: Some(Duration::from_millis(100)),
        ..ExecutorOptions::default()
    };
    let ex = Executor::serve(dir.path(), options.clone()).unwrap();
    add_component(&ex, "clocks", "clocks");
    let id = ex.worker_id("clocks", "sleeper").unwrap();
    // The worker exists first, so that the time below is the sleep's alone.
    ex.invoke(&id, "now", &[], None).done().unwrap();
    let started = Instant::now();
    let invoked = ex
        .invoke(&id, "sleep-ms", &["700".into()], Some("nap"))
        .unwrap();
    let Invoked::Deferred(Deferred::Sleeping {
        until_ms,
        idempotency_key,
        ..
    }) = invoked
    else {
        panic!("expected the worker to sleep durably, got {invoked:?}");
    };
    assert_eq!(idempotency_key, "nap");
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "the sleep held the thread"
    );
    assert_eq!(
        ex.worker_record(&id).unwrap().status,
        WorkerStatus::Suspended
    );
    assert_eq!(ex.pending_timers(), 1);
    assert!(matches!(
        ex.invocation_status(&id, "nap").unwrap(),
        Some(InvocationStatus::Suspended { until_ms: Some(u) }) if u == until_ms
    ));
    // Another invocation meanwhile is queued behind the sleeping one.
    let queued = ex.invoke(&id, "now", &[], Some("after-nap")).unwrap();
    assert!(
        matches!(queued, Invoked::Deferred(Deferred::Queued { .. })),
        "{queued:?}"
    );
    block_on(ex.await_invocation(&id, "nap")).unwrap();
    let woke = started.elapsed();
    assert!(woke >= Duration::from_millis(700), "woke after {woke:?}");
    let result = block_on(ex.await_invocation(&id, "after-nap")).unwrap();
    assert!(result.is_some());
    assert_eq!(ex.worker_record(&id).unwrap().status, WorkerStatus::Idle);
    // The sleep is one `sleep-until` entry and one `poll_oneoff` entry, replayed as such.
    drop(ex);
    let ex = reopen(dir.path());
    ex.recover(&id, golemw_runtime::RecoveryMode::FullReplay)
        .unwrap();
}

/// With a threshold of 0 every sleep is recorded durably, however short: the woken sleeper, whose due
/// time has passed by the time recovery reaches its sleep, goes on (it once suspended again,
/// due at once, for ever).
#[test]
fn with_a_threshold_of_zero_short_sleeps_suspend_and_finish() {
    let dir = tempfile::tempdir().unwrap();
    let options = ExecutorOptions {
        durable_sleep_min: Some(Duration::ZERO),
        ..ExecutorOptions::default()
    };
    let ex = Executor::serve(dir.path(), options).unwrap();
    add_component(&ex, "clocks", "clocks");
    let id = ex.worker_id("clocks", "short").unwrap();
    for (n, ms) in [1, 1, 5, 20].into_iter().enumerate() {
        let key = format!("s{n}");
        match ex.invoke(&id, "sleep-ms", &[ms.to_string()], Some(&key)) {
            Ok(Invoked::Deferred(Deferred::Sleeping { .. })) => {
                let done = block_on(ex.await_invocation(&id, &key));
                assert!(done.is_ok(), "sleep {n} of {ms} ms: {done:?}");
            }
            // Its due time passed before it could suspend: it slept in place.
            Ok(Invoked::Completed(_)) => {}
            Ok(other) => panic!("sleep {n} of {ms} ms: {other:?}"),
            Err(err) => panic!("sleep {n} of {ms} ms: {err}"),
        }
    }
    assert_eq!(ex.worker_record(&id).unwrap().status, WorkerStatus::Idle);
    assert_eq!(ex.pending_timers(), 0);
}

#[test]
fn a_worker_sleeping_when_the_process_stops_wakes_in_the_next_one() {
    let dir = tempfile::tempdir().unwrap();
    let options = ExecutorOptions {
        durable_sleep_min: Some(Duration::from_millis(100)),
        ..ExecutorOptions::default()
    };
    let id = {
        let ex = Executor::serve(dir.path(), options.clone()).unwrap();
        add_component(&ex, "clocks", "clocks");
        let id = ex.worker_id("clocks", "sleeper").unwrap();
        let invoked = ex
            .invoke(&id, "sleep-ms", &["500".into()], Some("nap"))
            .unwrap();
        assert!(
            matches!(invoked, Invoked::Deferred(Deferred::Sleeping { .. })),
            "{invoked:?}"
        );
        id
    };
    // Stopped before the due time; the new process schedules the sleeper and wakes it.
    std::thread::sleep(Duration::from_millis(100));
    let ex = Executor::serve(dir.path(), options).unwrap();
    assert_eq!(ex.pending_timers(), 1);
    block_on(ex.await_invocation(&id, "nap")).unwrap();
    assert_eq!(ex.worker_record(&id).unwrap().status, WorkerStatus::Idle);
}

#[test]
fn queued_invocations_run_in_order_once_each() {
    let dir = tempfile::tempdir().unwrap();
    let ex = Executor::serve(dir.path(), ExecutorOptions::default()).unwrap();
    add_component(&ex, "counter", "counter");
    let id = ex.worker_id("counter", "q").unwrap();
    let keys: Vec<String> = (1..=10)
        .map(|i| {
            ex.enqueue(&id, "add", &[i.to_string()], Some(&format!("k{i}")))
                .unwrap()
        })
        .collect();
    // The same key queued again is not queued twice.
    assert_eq!(
        ex.enqueue(&id, "add", &["10".into()], Some("k10")).unwrap(),
        "k10"
    );
    let mut total = 0;
    for (i, key) in keys.iter().enumerate() {
        total += i as u64 + 1;
        let result = block_on(ex.await_invocation(&id, key)).unwrap();
        assert_eq!(result, Some(total.to_string()), "{key}");
    }
    assert_eq!(invoke(&ex, &id, "get", &[]), Some("55".into()));
    // A wrong call is refused, not queued.
    let err = ex.enqueue(&id, "add", &[], None).unwrap_err();
    assert!(matches!(err, Error::InvalidArguments(_)), "{err}");
    let err = ex.enqueue(&id, "nope", &[], None).unwrap_err();
    assert!(matches!(err, Error::UnknownFunction(_)), "{err}");
}

/// The CPUs a thread of this process may run on (`Cpus_allowed_list` of /proc), by thread id.
fn thread_affinities() -> Vec<(String, String)> {
    let mut out = Vec::new();
    for task in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        let status = std::fs::read_to_string(task.path().join("status")).unwrap_or_default();
        if let Some(line) = status.lines().find(|l| l.starts_with("Cpus_allowed_list:")) {
            let cpus = line["Cpus_allowed_list:".len()..].trim().to_string();
            out.push((task.file_name().to_string_lossy().into_owned(), cpus));
        }
    }
    out
}

/// Held by the tests whose guest calls run long under a watchdog (and so get confined): the
/// confinement test looks at every thread of the process, and must see only its own.
static LONG_CALLS: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// The scheduling policy of each thread of this process (field 41 of /proc/self/task/*/stat;
/// 5 is SCHED_IDLE).
fn thread_policies() -> Vec<(String, i32)> {
    let mut out = Vec::new();
    for task in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
        // After the command name in parentheses (which may hold spaces): state is field 3.
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        if let Some(policy) = rest.split_whitespace().nth(41 - 3) {
            out.push((
                task.file_name().to_string_lossy().into_owned(),
                policy.parse().unwrap(),
            ));
        }
    }
    out
}

/// A guest call running long is moved to one core with the other long calls, and to the
/// lowest priority, SCHED_IDLE (when the test runs as root, which may raise it again); its thread gets every
/// core and its priority back when the call ends; short calls never are touched.
#[test]
fn a_long_call_is_confined_to_one_core_until_it_returns() {
    let _alone = LONG_CALLS.lock().unwrap_or_else(|e| e.into_inner());
    let all = std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find(|l| l.starts_with("Cpus_allowed_list:"))
        .map(|l| l["Cpus_allowed_list:".len()..].trim().to_string())
        .unwrap();
    if std::thread::available_parallelism().map_or(1, |n| n.get()) < 2 {
        eprintln!("one core: nothing to confine to (Cpus_allowed_list {all})");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let options = ExecutorOptions {
        invocation_deadline: Some(Duration::from_millis(1500)),
        confine_after: Some(Duration::from_millis(50)),
        ..ExecutorOptions::default()
    };
    let ex = Arc::new(open_with(dir.path(), options));
    add_component(&ex, "hostile", "hostile");
    let id = ex.worker_id("hostile", "spinner").unwrap();
    assert_eq!(invoke(&ex, &id, "add", &["1"]), Some("1".into()));
    let confined = || {
        thread_affinities()
            .into_iter()
            .filter(|(_, cpus)| *cpus != all)
            .count()
    };
    let lowered = || {
        thread_policies()
            .into_iter()
            .filter(|(_, policy)| *policy == 5)
            .count()
    };
    assert_eq!(confined(), 0, "nothing is confined before a long call");
    assert_eq!(lowered(), 0, "nothing is lowered before a long call");
    let spinning = {
        let (ex, id) = (Arc::clone(&ex), id.clone());
        std::thread::spawn(move || ex.invoke(&id, "spin", &[], Some("long")).done())
    };
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(
        confined(),
        1,
        "the spinning call's thread: {:?}",
        thread_affinities()
    );
    // Uid: real, effective, saved, filesystem.
    let root = std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1).map(|euid| euid == "0"))
        .unwrap();
    assert_eq!(
        lowered(),
        usize::from(root),
        "the spinning call's thread SCHED_IDLE when the process may raise it again: {:?}",
        thread_policies()
    );
    assert!(spinning.join().unwrap().is_err(), "stopped at its deadline");
    assert_eq!(confined(), 0, "cores given back: {:?}", thread_affinities());
    assert_eq!(lowered(), 0, "priority given back: {:?}", thread_policies());
}

/// A call that takes long without computing (the guest sleeps in its thread) is not confined:
/// the watchdog confines by the CPU a call uses, not by how long it has been running.
#[test]
fn a_long_call_that_waits_is_not_confined() {
    let _alone = LONG_CALLS.lock().unwrap_or_else(|e| e.into_inner());
    if std::thread::available_parallelism().map_or(1, |n| n.get()) < 2 {
        return;
    }
    let all = std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find(|l| l.starts_with("Cpus_allowed_list:"))
        .map(|l| l["Cpus_allowed_list:".len()..].trim().to_string())
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let options = ExecutorOptions {
        confine_after: Some(Duration::from_millis(20)),
        ..ExecutorOptions::default()
    };
    let ex = Arc::new(open_with(dir.path(), options));
    add_component(&ex, "clocks", "clocks");
    let id = ex.worker_id("clocks", "napper").unwrap();
    ex.invoke(&id, "now", &[], None).done().unwrap();
    let sleeping = {
        let (ex, id) = (Arc::clone(&ex), id.clone());
        std::thread::spawn(move || ex.invoke(&id, "sleep-ms", &["600".into()], None).done())
    };
    std::thread::sleep(Duration::from_millis(300));
    let confined = thread_affinities()
        .into_iter()
        .filter(|(_, cpus)| *cpus != all)
        .count();
    let lowered = thread_policies()
        .into_iter()
        .filter(|(_, policy)| *policy == 5)
        .count();
    assert_eq!(confined, 0, "{:?}", thread_affinities());
    assert_eq!(lowered, 0, "{:?}", thread_policies());
    sleeping.join().unwrap().unwrap();
}
