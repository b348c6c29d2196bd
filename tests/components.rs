//! Component binaries, as Golem users build them: Rust's `wasm32-wasip2` target (whose main
//! module imports WASI 0.2 directly) and wit-component with the preview 1 adapter (what
//! cargo-component makes), loaded, run durably, restarted, restored from snapshots; and what
//! cannot run is refused with the reason.

use golemw_tests::Completes;
use std::sync::Arc;

use golemw_runtime::oplog::{LogStream, OplogEntry};
use golemw_runtime::{Deferred, Error, Executor, ExecutorOptions, Invoked, RecoveryMode, WorkerId};
use golemw_tests::{guest_component, guest_wasm};

fn options() -> ExecutorOptions {
    ExecutorOptions {
        fsync: false,
        ..ExecutorOptions::default()
    }
}

fn open(dir: &std::path::Path) -> Arc<Executor> {
    Executor::open(dir, options()).expect("open the data directory")
}

fn invoke(ex: &Executor, id: &WorkerId, function: &str, args: &[&str]) -> String {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    ex.invoke(id, function, &args, None)
        .done()
        .unwrap_or_else(|e| panic!("{id}.{function}({args:?}) failed: {e}"))
        .result
        .unwrap_or_default()
}

/// The core guest `name` made a component with wit-component and the preview 1 adapter.
fn adapted(name: &str) -> Vec<u8> {
    let core = std::fs::read(guest_wasm(name)).unwrap();
    wit_component::ComponentEncoder::default()
        .module(&core)
        .unwrap()
        .adapter(
            wasi_preview1_component_adapter_provider::WASI_SNAPSHOT_PREVIEW1_ADAPTER_NAME,
            wasi_preview1_component_adapter_provider::WASI_SNAPSHOT_PREVIEW1_REACTOR_ADAPTER,
        )
        .unwrap()
        .validate(true)
        .encode()
        .expect("wit-component encodes the component")
}

#[test]
fn a_wasip2_component_runs_durably_with_wasi_0_2_and_comes_back_after_a_restart() {
    let wasm = std::fs::read(guest_component("counter")).unwrap();
    assert!(
        wasmparser::Parser::is_component(&wasm),
        "a component binary"
    );
    let dir = tempfile::tempdir().unwrap();
    let ex = open(dir.path());
    let record = ex.components().add("counter", &wasm).unwrap();
    assert!(
        record
            .exports
            .contains(&"golemw:counter/api.{add}".to_string()),
        "{:?}",
        record.exports
    );
    let id = ex.worker_id("counter", "w").unwrap();
    assert_eq!(invoke(&ex, &id, "add", &["5"]), "5");
    assert_eq!(invoke(&ex, &id, "add", &["2"]), "7");
    // Stdout through wasi:io/streams is a log entry, as preview 1's fd_write is.
    invoke(&ex, &id, "print", &["\"hello from wasip2\""]);
    let logged = golemw_tests::oplog_entries(&ex, &id)
        .into_iter()
        .any(|(_, e)| {
            matches!(e, OplogEntry::Log { stream: LogStream::Stdout, ref bytes } if bytes == b"hello from wasip2\n")
        });
    assert!(logged, "the print is in the oplog");
    let key = invoke(&ex, &id, "idempotency-key", &[]);
    ex.snapshot(&id).unwrap();
    invoke(&ex, &id, "add", &["1"]);
    drop(ex);
    let ex = open(dir.path());
    // From the snapshot and the tail, and from the whole history: the same state.
    ex.recover(&id, RecoveryMode::Auto).unwrap();
    assert_eq!(invoke(&ex, &id, "get", &[]), "8");
    ex.recover(&id, RecoveryMode::FullReplay).unwrap();
    assert_eq!(invoke(&ex, &id, "get", &[]), "8");
    // The recorded key came back from the oplog, not a new one.
    let replayed = golemw_tests::oplog_entries(&ex, &id)
        .into_iter()
        .filter(|(_, e)| matches!(e, OplogEntry::ExportedFunctionCompleted { result: Some(r), .. } if *r == key))
        .count();
    assert_eq!(replayed, 1);
}

#[test]
fn wasi_0_2_clocks_randomness_and_timers_are_recorded_and_replayed() {
    let wasm = std::fs::read(guest_component("clocks")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ex = open(dir.path());
    ex.components().add("clocks", &wasm).unwrap();
    let id = ex.worker_id("clocks", "c").unwrap();
    let now: u64 = invoke(&ex, &id, "now", &[]).parse().unwrap();
    let wall = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    assert!(wall.abs_diff(now) < 10_000_000_000, "{now} vs {wall}");
    let random = invoke(&ex, &id, "random", &[]);
    let started = std::time::Instant::now();
    invoke(&ex, &id, "sleep-ms", &["30"]);
    assert!(started.elapsed() >= std::time::Duration::from_millis(30));
    let first = invoke(&ex, &id, "monotonic", &[]);
    let second: u64 = invoke(&ex, &id, "monotonic", &[]).parse().unwrap();
    assert!(second >= first.parse().unwrap());
    // Replay returns what was recorded: the sleep is not slept again.
    let before = golemw_tests::oplog_entries(&ex, &id).len();
    let replaying = std::time::Instant::now();
    ex.recover(&id, RecoveryMode::FullReplay).unwrap();
    assert!(replaying.elapsed() < std::time::Duration::from_millis(30) * 10);
    assert_eq!(golemw_tests::oplog_entries(&ex, &id).len(), before);
    assert_ne!(invoke(&ex, &id, "random", &[]), random);
}

#[test]
fn a_component_made_with_the_preview1_adapter_runs_its_main_module() {
    let wasm = adapted("counter");
    assert!(wasmparser::Parser::is_component(&wasm));
    let dir = tempfile::tempdir().unwrap();
    let ex = open(dir.path());
    let record = ex.components().add("counter", &wasm).unwrap();
    // What is stored is the main module (the adapter and glue are left out).
    assert!(
        record.size < wasm.len() as u64,
        "{} of {}",
        record.size,
        wasm.len()
    );
    let id = ex.worker_id("counter", "w").unwrap();
    assert_eq!(invoke(&ex, &id, "add", &["3"]), "3");
    invoke(&ex, &id, "print", &["\"through preview 1\""]);
    drop(ex);
    let ex = open(dir.path());
    assert_eq!(invoke(&ex, &id, "get", &[]), "3");
    // The same component as a new version updates the worker like a core module would.
    ex.components()
        .update("counter", &adapted("counter"))
        .unwrap();
}

#[test]
fn what_cannot_run_is_refused_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let ex = open(dir.path());
    let refused = |wasm: &[u8]| match ex.components().add("x", wasm) {
        Err(Error::InvalidComponent(reason)) => reason,
        other => panic!("expected a refusal, got {other:?}"),
    };
    // Two modules with code: a composition.
    let mut two = wasm_encoder::Component::new();
    for _ in 0..2 {
        let mut module = wasm_encoder::Module::new();
        let mut memories = wasm_encoder::MemorySection::new();
        memories.memory(wasm_encoder::MemoryType {
            minimum: 1,
            maximum: None,
            memory64: false,
            shared: false,
            page_size_log2: None,
        });
        module.section(&memories);
        let mut exports = wasm_encoder::ExportSection::new();
        exports.export("memory", wasm_encoder::ExportKind::Memory, 0);
        module.section(&exports);
        two.section(&wasm_encoder::ModuleSection(&module));
    }
    let reason = refused(&two.finish());
    assert!(reason.contains("2 main modules"), "{reason}");
    // A WIT package is types, not code.
    let mut resolve = wit_parser::Resolve::default();
    let package = resolve
        .push_str("p.wit", "package a:b; interface i { f: func(); }")
        .unwrap();
    let wit = wit_component::encode(&resolve, package, false).unwrap();
    let reason = refused(&wit);
    assert!(reason.contains("WIT package"), "{reason}");
    // A truncated component.
    let wasm = std::fs::read(guest_component("counter")).unwrap();
    let reason = refused(&wasm[..wasm.len() / 2]);
    assert!(!reason.is_empty());
    // Nothing was stored.
    assert!(ex.components().list().unwrap().is_empty());
}

fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(future)
}

/// A WASI 0.2 sleep (`subscribe-duration` and `pollable.block`, what Rust's `wasm32-wasip2`
/// `thread::sleep` does) past the durable-sleep threshold suspends the worker as preview 1's
/// does: no thread is held, the worker wakes at its due time, also in a process started while
/// it slept, and replay does not sleep again.
#[test]
fn a_long_wasi_0_2_sleep_suspends_the_worker_durably() {
    let wasm = std::fs::read(guest_component("clocks")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let options = ExecutorOptions {
        durable_sleep_min: Some(std::time::Duration::from_millis(100)),
        ..options()
    };
    let id = {
        let ex = Executor::serve(dir.path(), options.clone()).unwrap();
        ex.components().add("clocks", &wasm).unwrap();
        let id = ex.worker_id("clocks", "sleeper").unwrap();
        invoke(&ex, &id, "now", &[]);
        let started = std::time::Instant::now();
        let invoked = ex
            .invoke(&id, "sleep-ms", &["400".into()], Some("nap"))
            .unwrap();
        assert!(
            matches!(invoked, Invoked::Deferred(Deferred::Sleeping { .. })),
            "{invoked:?}"
        );
        assert!(started.elapsed() < std::time::Duration::from_millis(300));
        assert_eq!(
            ex.worker_record(&id).unwrap().status,
            golemw_runtime::WorkerStatus::Suspended
        );
        let woke: Result<Option<String>, Error> = block_on(ex.await_invocation(&id, "nap"));
        woke.unwrap();
        assert!(started.elapsed() >= std::time::Duration::from_millis(400));
        // Asleep again, and the process stops before the due time.
        let invoked = ex
            .invoke(&id, "sleep-ms", &["600".into()], Some("nap-2"))
            .unwrap();
        assert!(
            matches!(invoked, Invoked::Deferred(Deferred::Sleeping { .. })),
            "{invoked:?}"
        );
        id
    };
    let ex = Executor::serve(dir.path(), options).unwrap();
    assert_eq!(ex.pending_timers(), 1);
    let woke: Result<Option<String>, Error> = block_on(ex.await_invocation(&id, "nap-2"));
    woke.unwrap();
    assert_eq!(
        ex.worker_record(&id).unwrap().status,
        golemw_runtime::WorkerStatus::Idle
    );
    // The history replays without sleeping.
    let replaying = std::time::Instant::now();
    ex.recover(&id, RecoveryMode::FullReplay).unwrap();
    assert!(replaying.elapsed() < std::time::Duration::from_millis(400));
    assert!(!invoke(&ex, &id, "now", &[]).is_empty());
}
