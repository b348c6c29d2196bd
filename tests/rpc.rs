//! Worker-to-worker calls (`golem:rpc@0.1.0`) between real guests (`rpc-caller` calling
//! `rpc-callee` and itself): every function, every error case, fan-out, calls that would wait
//! on themselves, replay that makes no call, and SIGKILLs of a server in the middle of chains
//! of calls (each call's effect exactly once).

use golemw_tests::Completes;
use std::sync::Arc;
use std::time::{Duration, Instant};

use golemw_runtime::abi::wave_string;
use golemw_runtime::oplog::{HostFunction, OplogEntry};
use golemw_runtime::{Executor, ExecutorOptions, RecoveryMode, WorkerId};
use golemw_tests::guest_wasm;

fn options() -> ExecutorOptions {
    ExecutorOptions {
        fsync: false,
        ..ExecutorOptions::default()
    }
}

/// An executor with both components added.
fn setup(dir: &std::path::Path) -> Arc<Executor> {
    let ex = Executor::open(dir, options()).expect("open the data directory");
    add_components(&ex);
    ex
}

fn add_components(ex: &Executor) {
    for name in ["rpc-caller", "rpc-callee"] {
        let wasm = std::fs::read(guest_wasm(name)).unwrap();
        ex.components().add(name, &wasm).expect("add component");
    }
}

fn caller(ex: &Executor, name: &str) -> WorkerId {
    ex.worker_id("rpc-caller", name).unwrap()
}

fn callee(ex: &Executor, name: &str) -> WorkerId {
    ex.worker_id("rpc-callee", name).unwrap()
}

fn invoke(ex: &Executor, id: &WorkerId, function: &str, args: &[String]) -> String {
    ex.invoke(id, function, args, None)
        .done()
        .unwrap_or_else(|e| panic!("{id}.{function}({args:?}) failed: {e}"))
        .result
        .unwrap_or_default()
}

fn uri(id: &WorkerId) -> String {
    wave_string(&id.uri())
}

/// `call(target, function, params)` on the caller worker `from`: the WAVE of its
/// `result<wit-value, rpc-error>`.
fn call(ex: &Executor, from: &WorkerId, target: &str, function: &str, params: &[&str]) -> String {
    invoke(
        ex,
        from,
        "call",
        &[
            target.to_string(),
            wave_string(function),
            format!("[{}]", params.join(", ")),
        ],
    )
}

const ADD: &str = "golemw:rpc-callee/api.{add}";

fn total(ex: &Executor, id: &WorkerId) -> u64 {
    invoke(ex, id, "total", &[]).parse().unwrap()
}

/// The RPC host calls in a worker's oplog, by function name.
fn rpc_entries(ex: &Executor, id: &WorkerId) -> Vec<String> {
    golemw_tests::oplog_entries(ex, id)
        .into_iter()
        .filter_map(|(_, entry)| match entry {
            OplogEntry::ImportedFunctionInvoked {
                function: HostFunction::Golem(name),
                ..
            } if name.contains("golem:rpc") || name.contains("wasi:io/poll") => Some(name),
            _ => None,
        })
        .collect()
}

#[test]
fn invoke_and_await_runs_the_callee_once_and_replay_calls_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let ex = setup(dir.path());
    let (c, b) = (caller(&ex, "c"), callee(&ex, "b"));
    // The first call creates the callee.
    assert_eq!(
        invoke(&ex, &c, "add-remote", &[uri(&b), "5".into()]),
        "ok(5)"
    );
    assert_eq!(
        invoke(&ex, &c, "add-remote", &[uri(&b), "3".into()]),
        "ok(8)"
    );
    assert_eq!(total(&ex, &b), 8);
    assert_eq!(invoke(&ex, &c, "calls", &[]), "2");
    assert_eq!(
        rpc_entries(&ex, &c),
        vec!["golem:rpc/types@0.1.0.[method]wasm-rpc.invoke-and-await"; 2]
    );
    // A full replay of the caller returns the recorded results: the callee is not called.
    ex.recover(&c, RecoveryMode::FullReplay).unwrap();
    assert_eq!(invoke(&ex, &c, "calls", &[]), "2");
    assert_eq!(total(&ex, &b), 8);
    // And after a restart of the process.
    drop(ex);
    let ex = Executor::open(dir.path(), options()).unwrap();
    ex.recover(&c, RecoveryMode::FullReplay).unwrap();
    assert_eq!(invoke(&ex, &c, "calls", &[]), "2");
    assert_eq!(total(&ex, &b), 8);
}

#[test]
fn parameters_and_results_of_every_type_cross_as_trees() {
    let dir = tempfile::tempdir().unwrap();
    let ex = setup(dir.path());
    let (c, b) = (caller(&ex, "c"), callee(&ex, "b"));
    // Two parameters, a tuple result.
    assert_eq!(
        call(
            &ex,
            &c,
            &uri(&b),
            "golemw:rpc-callee/api.{pair}",
            &["{nodes: [prim-string(\"x\")]}", "{nodes: [prim-u32(21)]}"],
        ),
        "ok({nodes: [tuple-value([1]), tuple-value([2, 3]), prim-string(\"x\"), prim-u32(42)]})"
    );
    // No result: an empty tuple.
    assert_eq!(
        call(&ex, &c, &uri(&b), "golemw:rpc-callee/api.{nothing}", &[]),
        "ok({nodes: [tuple-value([])]})"
    );
    assert_eq!(invoke(&ex, &callee(&ex, "b"), "nothings", &[]), "1");
    // A record with a field of every kind, sent breadth first and echoed back.
    let shapes = "{nodes: [record-value([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17]), \
        prim-u8(1), prim-s16(-2), prim-u32(3), prim-s64(-4), prim-float32(1.5), prim-float64(-2.25), \
        prim-char('λ'), prim-bool(true), prim-string(\"hi\"), list-value([18, 19]), \
        option-value(some(20)), result-value(err(some(21))), tuple-value([22, 23]), \
        variant-value((1, some(24))), enum-value(2), flags-value([true, false, true]), \
        list-value([25, 26]), prim-u16(7), prim-u16(8), prim-string(\"o\"), prim-string(\"bad\"), \
        prim-u8(9), prim-string(\"t\"), prim-u32(10), option-value(some(27)), option-value(none), \
        record-value([28, 29]), prim-s32(-1), prim-s32(2)]}";
    let echoed = call(&ex, &c, &uri(&b), "golemw:rpc-callee/api.{echo}", &[shapes]);
    // The same value, laid out depth first under the results tuple.
    let direct = invoke(
        &ex,
        &b,
        "echo",
        &[
            "{a: 1, b: -2, c: 3, d: -4, e: 1.5, f: -2.25, g: 'λ', h: true, s: \"hi\", l: [7, 8], \
           o: some(\"o\"), r: err(\"bad\"), t: (9, \"t\"), p: dog(10), c2: blue, fl: {read, exec}, \
           pts: [some({x: -1, y: 2}), none]}"
                .to_string(),
        ],
    );
    assert!(direct.contains("p: dog(10)"), "{direct}");
    let expected = [
        "tuple-value([1])",
        "record-value([2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 14, 16, 18, 21, 23, 24, 25])",
        "prim-u8(1)",
        "prim-s16(-2)",
        "prim-u32(3)",
        "prim-s64(-4)",
        "prim-float32(1.5)",
        "prim-float64(-2.25)",
        "prim-char('λ')",
        "prim-bool(true)",
        "prim-string(\"hi\")",
        "list-value([12, 13])",
        "prim-u16(7)",
        "prim-u16(8)",
        "option-value(some(15))",
        "prim-string(\"o\")",
        "result-value(err(some(17)))",
        "prim-string(\"bad\")",
        "tuple-value([19, 20])",
        "prim-u8(9)",
        "prim-string(\"t\")",
        "variant-value((1, some(22)))",
        "prim-u32(10)",
        "enum-value(2)",
        "flags-value([true, false, true])",
        "list-value([26, 30])",
        "option-value(some(27))",
        "record-value([28, 29])",
        "prim-s32(-1)",
        "prim-s32(2)",
        "option-value(none)",
    ];
    assert_eq!(echoed, format!("ok({{nodes: [{}]}})", expected.join(", ")));
}

#[test]
fn bad_calls_are_rpc_errors_that_name_the_problem_and_never_trap_the_caller() {
    let dir = tempfile::tempdir().unwrap();
    let ex = setup(dir.path());
    let (c, b) = (caller(&ex, "c"), callee(&ex, "b"));
    let u64_five = "{nodes: [prim-u64(5)]}";
    let cases: Vec<(String, &str, Vec<&str>, &str)> = vec![
        (uri(&b), ADD, vec!["{nodes: [prim-string(\"x\")]}"], "err(protocol-error(\"parameter 1 (`n`) of golemw:rpc-callee/api.{add}: expected prim-u64 (for u64), found prim-string"),
        (uri(&b), ADD, vec![], "err(protocol-error(\"golemw:rpc-callee/api.{add} takes 1 parameters (n), the call gives 0"),
        (uri(&b), ADD, vec![u64_five, u64_five], "takes 1 parameters"),
        (uri(&b), ADD, vec!["{nodes: []}"], "the wit-value has no nodes"),
        (uri(&b), ADD, vec!["{nodes: [prim-u64(1), prim-u64(2)]}"], "ok({nodes: [tuple-value([1]), prim-u64(1)]})"),
        (uri(&b), "golemw:rpc-callee/api.{pair}", vec!["{nodes: [list-value([0])]}", "{nodes: [prim-u32(1)]}"], "expected prim-string"),
        (uri(&b), "golemw:rpc-callee/api.{nope}", vec![], "err(not-found(\"unknown function"),
        (wave_string(&format!("urn:worker:{}/w", uuid::Uuid::from_u128(7))), ADD, vec![u64_five], "err(not-found(\"no component"),
        (wave_string("http://example.com/w"), ADD, vec![u64_five], "err(not-found(\"\\\"http://example.com/w\\\" is not a worker URI"),
        (wave_string(&format!("urn:worker:{}/a%2", b.component_id)), ADD, vec![u64_five], "err(not-found("),
        (wave_string("urn:worker:no-such-component/w"), ADD, vec![u64_five], "err(not-found(\"no component \\\"no-such-component\\\" (by name or UUID)"),
    ];
    for (target, function, params, expected) in &cases {
        let answer = call(&ex, &c, target, function, params);
        assert!(
            answer.contains(expected),
            "{function}({params:?}) at {target}: {answer} does not contain {expected}"
        );
    }
    // A callee that traps (after its retries) is a remote error with its message; the caller
    // goes on, and so does its next call to a failed worker.
    let failing = callee(&ex, "failing");
    let answer = call(
        &ex,
        &c,
        &uri(&failing),
        "golemw:rpc-callee/api.{fail}",
        &["{nodes: [prim-string(\"boom\")]}"],
    );
    assert!(answer.starts_with("err(remote-internal-error("), "{answer}");
    assert!(answer.contains("boom"), "{answer}");
    let again = call(&ex, &c, &uri(&failing), ADD, &[u64_five]);
    assert!(again.starts_with("err(remote-internal-error("), "{again}");
    assert!(again.contains("failed"), "{again}");
    // Nothing above trapped the caller or changed the callee's total.
    assert_eq!(invoke(&ex, &c, "calls", &[]), "0");
    assert_eq!(total(&ex, &b), 1);
}

#[test]
fn a_call_that_would_wait_on_itself_is_denied_not_hung() {
    let dir = tempfile::tempdir().unwrap();
    let ex = setup(dir.path());
    let (c1, c2, b) = (caller(&ex, "c1"), caller(&ex, "c2"), callee(&ex, "b"));
    // Calling oneself.
    let answer = call(&ex, &c1, &uri(&c1), "golemw:rpc-caller/api.{calls}", &[]);
    assert!(
        answer.starts_with("err(denied(\"the call would wait for itself: c1 -> c1"),
        "{answer}"
    );
    // c1 -> c2 -> c1 while c1 waits for c2: c2's call back is refused, c2 returns its error, c1
    // gets it as c2's result.
    let answer = invoke(
        &ex,
        &c1,
        "chain",
        &[format!("[{}, {}]", uri(&c2), uri(&c1)), uri(&b), "1".into()],
    );
    assert!(
        answer.starts_with("err(\"denied: the call would wait for itself"),
        "{answer}"
    );
    // Whichever of the two waits came second found the cycle.
    assert!(
        answer.contains("c2 -> c1 -> c2") || answer.contains("c1 -> c2 -> c1"),
        "{answer}"
    );
    // A chain without a cycle goes through: c1 -> c2 -> b.
    let answer = invoke(
        &ex,
        &c1,
        "chain",
        &[format!("[{}]", uri(&c2)), uri(&b), "4".into()],
    );
    assert_eq!(answer, "ok(4)");
    assert_eq!(total(&ex, &b), 4);
}

#[test]
fn async_calls_fan_out_and_their_results_are_replayed() {
    let dir = tempfile::tempdir().unwrap();
    let ex = setup(dir.path());
    let c = caller(&ex, "c");
    let targets: Vec<WorkerId> = (0..100).map(|i| callee(&ex, &format!("b{i}"))).collect();
    let list = format!(
        "[{}]",
        targets.iter().map(uri).collect::<Vec<_>>().join(", ")
    );
    let answer = invoke(&ex, &c, "fan-out", &[list.clone(), "2".into()]);
    assert_eq!(answer, format!("[{}]", vec!["ok(2)"; 100].join(", ")));
    for target in &targets {
        assert_eq!(total(&ex, target), 2);
    }
    // One async call, then `subscribe`/`block`/`get`.
    let answer = call_async(&ex, &c, &targets[0]);
    assert_eq!(answer, "ok({nodes: [tuple-value([1]), prim-u64(3)]})");
    let names = rpc_entries(&ex, &c);
    let count = |f: &str| names.iter().filter(|n| n.ends_with(f)).count();
    assert_eq!(count("async-invoke-and-await"), 101);
    assert_eq!(count("future-invoke-result.get"), 101);
    assert!(count(".poll") >= 1, "{names:?}");
    assert_eq!(count("pollable.block"), 1);
    // Replay makes none of these calls again.
    ex.recover(&c, RecoveryMode::FullReplay).unwrap();
    for target in &targets[1..] {
        assert_eq!(total(&ex, target), 2);
    }
    assert_eq!(total(&ex, &targets[0]), 3);
}

fn call_async(ex: &Executor, from: &WorkerId, target: &WorkerId) -> String {
    invoke(
        ex,
        from,
        "call-async",
        &[
            uri(target),
            wave_string(ADD),
            "[{nodes: [prim-u64(1)]}]".into(),
        ],
    )
}

#[test]
fn a_future_kept_across_invocations_and_a_restart_is_finished_once() {
    let dir = tempfile::tempdir().unwrap();
    let ex = setup(dir.path());
    let (c, b) = (caller(&ex, "c"), callee(&ex, "b"));
    let start = |ex: &Executor| {
        invoke(
            ex,
            &c,
            "start",
            &[uri(&b), wave_string(ADD), "[{nodes: [prim-u64(7)]}]".into()],
        )
    };
    assert_eq!(start(&ex), "1");
    let finished = wait_for_finish(&ex, &c, "1");
    assert_eq!(
        finished,
        "some(ok({nodes: [tuple-value([1]), prim-u64(7)]}))"
    );
    // A second future, its result not yet asked for when the process stops.
    assert_eq!(start(&ex), "2");
    while invoke(&ex, &c, "ready", &["2".into()]) != "true" {
        std::thread::sleep(Duration::from_millis(5));
    }
    drop(ex);
    // Recovery replays the start (no call), and `finish` asks live: the call is sent again under
    // the same idempotency key, and the callee answers from its stored result.
    let ex = Executor::open(dir.path(), options()).unwrap();
    let finished = wait_for_finish(&ex, &c, "2");
    assert_eq!(
        finished,
        "some(ok({nodes: [tuple-value([1]), prim-u64(14)]}))"
    );
    assert_eq!(total(&ex, &b), 14);
}

fn wait_for_finish(ex: &Executor, c: &WorkerId, id: &str) -> String {
    let started = Instant::now();
    loop {
        let answer = invoke(ex, c, "finish", &[id.to_string()]);
        if answer != "none" {
            return answer;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "never finished"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn invoke_queues_at_the_callee_which_runs_it_once() {
    let dir = tempfile::tempdir().unwrap();
    let ex = Executor::serve(dir.path(), options()).unwrap();
    add_components(&ex);
    let (c, b) = (caller(&ex, "c"), callee(&ex, "b"));
    let enqueue = |ex: &Executor| {
        invoke(
            ex,
            &c,
            "enqueue",
            &[
                uri(&b),
                wave_string("golemw:rpc-callee/api.{nothing}"),
                "[]".into(),
            ],
        )
    };
    assert_eq!(enqueue(&ex), "ok");
    assert_eq!(enqueue(&ex), "ok");
    let started = Instant::now();
    while invoke(&ex, &b, "nothings", &[]) != "2" {
        assert!(started.elapsed() < Duration::from_secs(30), "never ran");
        std::thread::sleep(Duration::from_millis(5));
    }
    // Errors are checked before anything is queued.
    let answer = invoke(
        &ex,
        &c,
        "enqueue",
        &[
            uri(&b),
            wave_string("golemw:rpc-callee/api.{nothing}"),
            "[{nodes: [prim-u8(1)]}]".into(),
        ],
    );
    assert!(answer.starts_with("err(protocol-error("), "{answer}");
    ex.recover(&c, RecoveryMode::FullReplay).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(invoke(&ex, &b, "nothings", &[]), "2");
}

#[test]
fn stubgen_writes_the_stub_the_typed_guest_is_built_with() {
    let wasm = std::fs::read(guest_wasm("rpc-callee")).unwrap();
    let (resolve, world) = golemw_runtime::component::decode_world(&wasm).unwrap();
    let wit = golemw_runtime::stubs::stub_wit(&resolve, world, "rpc_callee.wasm").unwrap();
    let committed = golemw_tests::repo_root().join("tests/guests/rpc-stub-caller/stub/stub.wit");
    assert_eq!(
        wit,
        std::fs::read_to_string(&committed).unwrap(),
        "{} is not what stubgen writes now: regenerate it with `golemw stubgen`",
        committed.display()
    );
    // The caller's own stub: its functions take and return wit-values and rpc-errors.
    let caller = std::fs::read(guest_wasm("rpc-caller")).unwrap();
    let (resolve, world) = golemw_runtime::component::decode_world(&caller).unwrap();
    let wit = golemw_runtime::stubs::stub_wit(&resolve, world, "x").unwrap();
    assert!(wit.contains("package golemw:rpc-caller-stub;"), "{wit}");
    assert!(
        wit.contains("use golemw:rpc-caller/api.{rpc-error, wit-value};"),
        "{wit}"
    );
    assert!(
        wit.contains("blocking-chain: func(hops: list<string>, sink: string, n: u64) -> result<u64, string>;"),
        "{wit}"
    );
}

#[test]
fn typed_calls_through_a_stub_interface_are_linked_to_rpc() {
    let dir = tempfile::tempdir().unwrap();
    let ex = setup(dir.path());
    let wasm = std::fs::read(guest_wasm("rpc-stub-caller")).unwrap();
    ex.components().add("rpc-stub-caller", &wasm).unwrap();
    let s = ex.worker_id("rpc-stub-caller", "s").unwrap();
    let b = callee(&ex, "b");
    assert_eq!(invoke(&ex, &s, "add", &[uri(&b), "5".into()]), "5");
    // The component may be named instead of given by UUID.
    assert_eq!(
        invoke(
            &ex,
            &s,
            "add",
            &["\"urn:worker:rpc-callee/b\"".into(), "0".into()]
        ),
        "5"
    );
    assert_eq!(invoke(&ex, &s, "add", &[uri(&b), "2".into()]), "7");
    assert_eq!(
        invoke(&ex, &s, "pair", &[uri(&b), "\"x\"".into(), "4".into()]),
        "(\"x\", 8)"
    );
    invoke(&ex, &s, "nothing", &[uri(&b)]);
    assert_eq!(invoke(&ex, &s, "nothing-async", &[uri(&b)]), "true");
    assert_eq!(invoke(&ex, &b, "nothings", &[]), "2");
    let shapes = "{a: 1, b: -2, c: 3, d: -4, e: 1.5, f: -2.25, g: 'λ', h: true, s: \"hi\", \
                  l: [7, 8], o: some(\"o\"), r: err(\"bad\"), t: (9, \"t\"), p: dog(10), c2: blue, \
                  fl: {read, exec}, pts: [some({x: -1, y: 2}), none]}";
    let direct = invoke(&ex, &b, "echo", &[shapes.to_string()]);
    assert_eq!(
        invoke(&ex, &s, "echo", &[uri(&b), shapes.to_string()]),
        direct
    );
    let targets: Vec<WorkerId> = (0..5).map(|i| callee(&ex, &format!("m{i}"))).collect();
    let list = format!(
        "[{}]",
        targets.iter().map(uri).collect::<Vec<_>>().join(", ")
    );
    assert_eq!(
        invoke(&ex, &s, "add-all", &[list, "3".into()]),
        "[3, 3, 3, 3, 3]"
    );
    // Replay calls nothing again.
    ex.recover(&s, RecoveryMode::FullReplay).unwrap();
    assert_eq!(total(&ex, &b), 7);
    assert_eq!(total(&ex, &targets[4]), 3);
    // A call that fails traps the caller with the rpc-error, as a generated stub would.
    let err = ex
        .invoke(
            &s,
            "fail",
            &[uri(&callee(&ex, "f")), "\"boom\"".into()],
            None,
        )
        .done()
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("calling golemw:rpc-callee/api.{fail} of urn:worker:"),
        "{err}"
    );
    assert!(err.contains("remote internal error"), "{err}");
}

#[test]
fn a_replay_that_would_make_another_call_is_a_divergence() {
    let dir = tempfile::tempdir().unwrap();
    let ex = setup(dir.path());
    let (c, b) = (caller(&ex, "c"), callee(&ex, "b"));
    assert_eq!(
        invoke(&ex, &c, "add-remote", &[uri(&b), "5".into()]),
        "ok(5)"
    );
    drop(ex);
    // The oplog says the call went to another worker: the guest's call does not match it.
    golemw_tests::rewrite_entries(dir.path(), &c, |entry| match entry {
        OplogEntry::ImportedFunctionInvoked {
            function: function @ HostFunction::Golem(_),
            request: golemw_runtime::oplog::HostValue::Wave(request),
            response,
        } => OplogEntry::ImportedFunctionInvoked {
            function: function.clone(),
            request: golemw_runtime::oplog::HostValue::Wave(request.replace("/b\"", "/other\"")),
            response: response.clone(),
        },
        other => other.clone(),
    });
    let ex = Executor::open(dir.path(), options()).unwrap();
    let err = ex
        .recover(&c, RecoveryMode::FullReplay)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("diverged") || err.contains("divergence"),
        "{err}"
    );
    assert!(err.contains("invoke-and-await"), "{err}");
    // Nothing was called: the callee's total is what the one call made it.
    assert_eq!(total(&ex, &b), 5);
}
