//! The `golemw` command, as a user runs it: separate processes on one data directory, including
//! processes killed with SIGKILL in the middle of their work.

use golemw_tests::Completes;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use golemw_tests::guest_wasm;

fn golemw(data_dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_golemw"))
        .arg("--data-dir")
        .arg(data_dir)
        .args(args)
        .output()
        .expect("run golemw")
}

fn ok(data_dir: &Path, args: &[&str]) -> String {
    let out = golemw(data_dir, args);
    assert!(
        out.status.success(),
        "golemw {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn fails(data_dir: &Path, args: &[&str]) -> String {
    let out = golemw(data_dir, args);
    assert!(!out.status.success(), "golemw {args:?} should fail");
    String::from_utf8(out.stderr).unwrap()
}

#[test]
fn run_keeps_state_across_processes() {
    let dir = tempfile::tempdir().unwrap();
    let wasm = guest_wasm("counter");
    let wasm = wasm.to_str().unwrap();
    assert_eq!(ok(dir.path(), &["run", wasm, "add", "2"]).trim(), "2");
    assert_eq!(ok(dir.path(), &["run", wasm, "add", "3"]).trim(), "5");
    assert_eq!(
        ok(dir.path(), &["worker", "invoke", "counter/main", "get"]).trim(),
        "5"
    );
}

#[test]
fn guest_output_is_printed_once_and_not_again_on_replay() {
    let dir = tempfile::tempdir().unwrap();
    let wasm = guest_wasm("counter");
    let out = ok(
        dir.path(),
        &["run", wasm.to_str().unwrap(), "print", "\"hello, world\""],
    );
    assert_eq!(out.matches("hello, world").count(), 1, "{out}");
    // A new process replays the print invocation: the text must not appear again.
    let out = ok(dir.path(), &["worker", "invoke", "counter/main", "get"]);
    assert_eq!(out.trim(), "0");
    let out = ok(dir.path(), &["worker", "recover", "counter/main"]);
    assert!(!out.contains("hello"), "{out}");
    // The oplog has it, as a log entry.
    let oplog = ok(dir.path(), &["worker", "oplog", "counter/main"]);
    assert!(
        oplog.contains("log") && oplog.contains("hello, world"),
        "{oplog}"
    );
}

#[test]
fn component_and_worker_commands() {
    let dir = tempfile::tempdir().unwrap();
    let wasm = guest_wasm("counter");
    let wasm = wasm.to_str().unwrap();
    let out = ok(dir.path(), &["component", "add", wasm, "--name", "ctr"]);
    assert!(out.contains("version 0"), "{out}");
    let out = ok(dir.path(), &["component", "update", "ctr", wasm]);
    assert!(out.contains("version 1"), "{out}");
    let list: serde_json::Value =
        serde_json::from_str(&ok(dir.path(), &["--json", "component", "list"])).unwrap();
    assert_eq!(list[0]["name"], "ctr");
    assert_eq!(list[0]["version"], 1);
    ok(
        dir.path(),
        &["worker", "new", "ctr/w1", "--env", "A=1", "--", "x", "y"],
    );
    let get: serde_json::Value =
        serde_json::from_str(&ok(dir.path(), &["--json", "worker", "get", "ctr/w1"])).unwrap();
    assert_eq!(get["status"], "idle");
    assert_eq!(get["component_version"], 1);
    assert_eq!(get["args"], serde_json::json!(["x", "y"]));
    assert_eq!(get["env"], serde_json::json!([["A", "1"]]));
    assert_eq!(get["retry_count"], 0);
    assert_eq!(get["oplog_len"], 1);
    ok(dir.path(), &["worker", "invoke", "ctr/w2", "add", "1"]);
    let list: serde_json::Value =
        serde_json::from_str(&ok(dir.path(), &["--json", "worker", "list", "ctr"])).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 2);
    let id = list[0]["id"]["component_id"].as_str().unwrap().to_string();
    // A component can be named by its UUID too.
    assert_eq!(
        ok(
            dir.path(),
            &["worker", "invoke", &format!("{id}/w2"), "get"]
        )
        .trim(),
        "1"
    );
    ok(dir.path(), &["worker", "delete", "ctr/w2"]);
    let err = fails(dir.path(), &["worker", "get", "ctr/w2"]);
    assert!(err.contains("unknown worker"), "{err}");
    let oplog: serde_json::Value =
        serde_json::from_str(&ok(dir.path(), &["--json", "worker", "oplog", "ctr/w1"])).unwrap();
    assert_eq!(oplog[0]["kind"], "create");
}

#[test]
fn bad_input_gets_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.wasm");
    std::fs::write(&junk, b"junk").unwrap();
    let err = fails(dir.path(), &["component", "add", junk.to_str().unwrap()]);
    assert!(err.contains("not a WebAssembly module"), "{err}");
    let wasm = guest_wasm("counter");
    let wasm = wasm.to_str().unwrap();
    ok(dir.path(), &["component", "add", wasm]);
    let err = fails(
        dir.path(),
        &["worker", "invoke", "counter/w", "add", "{oops"],
    );
    assert!(err.contains("parameter 1 (n: u64)"), "{err}");
    let err = fails(dir.path(), &["worker", "invoke", "counter/w", "frobnicate"]);
    assert!(err.contains("unknown function"), "{err}");
    let err = fails(dir.path(), &["worker", "invoke", "nosuch/w", "get"]);
    assert!(err.contains("unknown component \"nosuch\""), "{err}");
    let err = fails(dir.path(), &["worker", "get", "no-slash"]);
    assert!(err.contains("is not COMPONENT/WORKER"), "{err}");
}

/// Each process invokes a worker name that does not exist yet, which creates the worker; some
/// are killed with SIGKILL at different points. The worker is stored by the invocation's commit,
/// so afterwards each name is either unknown (killed before the commit) or a worker whose add
/// happened; a process that reported its result always left the worker. No oplog block is left
/// without its worker.
#[test]
fn sigkill_during_the_invocation_that_creates_a_worker_leaves_it_whole_or_absent() {
    use lmdb::{Cursor, Transaction};
    let dir = tempfile::tempdir().unwrap();
    let wasm = guest_wasm("counter");
    ok(dir.path(), &["component", "add", wasm.to_str().unwrap()]);
    let rounds = 12u64;
    let (mut reported, mut killed_while_running) = (Vec::new(), 0);
    for round in 0..rounds {
        let worker = format!("counter/n{round}");
        let mut child = Command::new(env!("CARGO_BIN_EXE_golemw"))
            .arg("--data-dir")
            .arg(dir.path())
            .args(["worker", "invoke", &worker, "add", "1"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        if round % 3 != 0 {
            std::thread::sleep(Duration::from_micros(2_000 * round));
            if child.try_wait().unwrap().is_none() {
                killed_while_running += 1;
            }
            let _ = child.kill(); // SIGKILL
        }
        if child.wait_with_output().unwrap().status.success() {
            reported.push(round);
        }
    }
    assert!(
        killed_while_running > 0,
        "no kill landed while a process ran"
    );
    let mut stored = 0;
    for round in 0..rounds {
        let worker = format!("counter/n{round}");
        let get = golemw(dir.path(), &["worker", "get", &worker]);
        if !get.status.success() {
            let err = String::from_utf8_lossy(&get.stderr);
            assert!(err.contains("unknown worker"), "round {round}: {err}");
            assert!(
                !reported.contains(&round),
                "round {round} reported but is gone"
            );
            continue;
        }
        stored += 1;
        let value = ok(dir.path(), &["worker", "invoke", &worker, "get"]);
        assert_eq!(
            value.trim(),
            "1",
            "round {round}: a stored worker holds its add"
        );
    }
    assert!(
        stored >= reported.len(),
        "{stored} stored, {reported:?} reported"
    );
    eprintln!("{killed_while_running} kills while running; {stored} of {rounds} workers stored");
    // Every oplog block belongs to a stored worker.
    let storage = golemw_runtime::storage::Storage::open(dir.path()).unwrap();
    let tables = storage.tables();
    let txn = storage.env().begin_ro_txn().unwrap();
    let mut uids = std::collections::HashSet::new();
    for item in txn.open_ro_cursor(tables.workers).unwrap().iter_start() {
        let record: golemw_runtime::WorkerRecord =
            golemw_runtime::storage::codec::decode(item.unwrap().1, "record").unwrap();
        uids.insert(*record.uid.as_bytes());
    }
    for item in txn.open_ro_cursor(tables.oplog).unwrap().iter_start() {
        let key = item.unwrap().0;
        assert!(uids.contains(&key[..16]), "an oplog block without a worker");
    }
}

/// Invocations run one per process; one process is killed with SIGKILL while it works. Every
/// invocation that reported its result must be in the worker's state afterwards.
#[test]
fn sigkill_during_a_sequence_of_invocations_loses_no_completed_invocation() {
    let dir = tempfile::tempdir().unwrap();
    let wasm = guest_wasm("counter");
    ok(dir.path(), &["component", "add", wasm.to_str().unwrap()]);
    let mut completed = 0u64;
    let mut last_seen = 0u64;
    let mut killed_while_running = 0;
    for round in 0..12u64 {
        let mut child = Command::new(env!("CARGO_BIN_EXE_golemw"))
            .arg("--data-dir")
            .arg(dir.path())
            .args(["worker", "invoke", "counter/k", "add", "1"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        if round % 2 == 1 {
            // Kill at a different point each time: start-up, replay, the invocation, the commit.
            // A process here lives about 10-30 ms.
            std::thread::sleep(Duration::from_micros(1_500 * round));
            if child.try_wait().unwrap().is_none() {
                killed_while_running += 1;
            }
            let _ = child.kill(); // SIGKILL
        }
        let out = child.wait_with_output().unwrap();
        if out.status.success() {
            completed += 1;
            let value: u64 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
            // Strictly increasing: no earlier add was lost or applied twice. It may jump by
            // two when a killed process committed its add just before it died.
            assert!(
                value > last_seen && value <= round + 1,
                "round {round}: {value} after {last_seen}"
            );
            last_seen = value;
        }
    }
    assert!(
        killed_while_running > 0,
        "no kill landed while a process was running"
    );
    let total: u64 = ok(dir.path(), &["worker", "invoke", "counter/k", "get"])
        .trim()
        .parse()
        .unwrap();
    // A killed invocation may have committed just before it died; none that reported may be lost.
    assert!(
        total >= last_seen && total >= completed && total <= 12,
        "total {total}, completed {completed}"
    );
    let completed_entries = ok(
        dir.path(),
        &["worker", "oplog", "counter/k", "--count", "100000"],
    )
    .matches("completed ->")
    .count() as u64;
    assert_eq!(completed_entries, total + 1, "every add plus the final get");
}

/// Each invocation is followed by a snapshot (policy invocations:1) that writes megabytes of
/// pages; processes are killed at different points of that write. The worker must always come
/// back, and every snapshot left behind must reproduce the full replay's state.
#[test]
fn sigkill_during_a_snapshot_write_leaves_a_recoverable_worker() {
    let dir = tempfile::tempdir().unwrap();
    let wasm = guest_wasm("memory");
    let policy = ["--snapshot-policy", "invocations:1"];
    let with_policy = |args: &[&str]| -> Vec<String> {
        policy.iter().chain(args).map(|s| s.to_string()).collect()
    };
    ok(dir.path(), &["component", "add", wasm.to_str().unwrap()]);
    let args = with_policy(&["worker", "invoke", "memory/k", "fill-mib", "16"]);
    ok(
        dir.path(),
        &args.iter().map(|s| s.as_str()).collect::<Vec<_>>(),
    );
    let mut killed_while_running = 0;
    for round in 0..8u64 {
        let mut child = Command::new(env!("CARGO_BIN_EXE_golemw"))
            .arg("--data-dir")
            .arg(dir.path())
            .args(with_policy(&[
                "worker", "invoke", "memory/k", "touch", "30",
            ]))
            // Every other process compares pages instead of asking the kernel which were
            // written: snapshots taken either way chain into each other.
            .env("GOLEMW_WRITE_TRACKING", (round % 2 == 0).to_string())
            // Some processes keep no memory image: the image falls behind the snapshots, and
            // a kill can land mid-write of it; the next restore must still be exact.
            .env("GOLEMW_MEMORY_IMAGES", (round % 3 != 2).to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(10 + 12 * round));
        if child.try_wait().unwrap().is_none() {
            killed_while_running += 1;
        }
        let _ = child.kill();
        let _ = child.wait();
    }
    assert!(
        killed_while_running > 0,
        "no kill landed while a process was running"
    );
    let out = ok(dir.path(), &["snapshot", "verify", "memory/k", "--all"]);
    assert!(out.contains("ok") && !out.contains("MISMATCH"), "{out}");
    // The flag is parsed (a bad value is refused), and a recovery without tracking works.
    let err = fails(
        dir.path(),
        &["--write-tracking", "maybe", "worker", "get", "memory/k"],
    );
    assert!(err.contains("--write-tracking"), "{err}");
    ok(
        dir.path(),
        &["--write-tracking", "false", "worker", "recover", "memory/k"],
    );
    let recover = ok(dir.path(), &["--json", "worker", "recover", "memory/k"]);
    let report: serde_json::Value = serde_json::from_str(&recover).unwrap();
    assert!(report["snapshot_index"].is_u64(), "{report}");
    assert!(report["image"]["pages"].as_u64() > Some(0), "{report}");
    let text = ok(dir.path(), &["worker", "recover", "memory/k"]);
    assert!(text.contains("its memory image mapped ("), "{text}");
    let get: serde_json::Value =
        serde_json::from_str(&ok(dir.path(), &["--json", "worker", "get", "memory/k"])).unwrap();
    assert!(get["memory_image_bytes"].as_u64() > Some(16 << 20), "{get}");
    let text = ok(dir.path(), &["worker", "get", "memory/k"]);
    assert!(text.contains("memory image:"), "{text}");
    // Restored through the memory image (whatever state the kills left it in) and by copying
    // the snapshot's pages: the same memory.
    let mapped = ok(dir.path(), &["worker", "invoke", "memory/k", "checksum"]);
    let copied = ok(
        dir.path(),
        &[
            "--memory-images",
            "false",
            "worker",
            "invoke",
            "memory/k",
            "checksum",
        ],
    );
    assert_eq!(mapped, copied);
}

/// `worker update` processes killed at different points (replaying history on the new version,
/// committing, taking the snapshot after it). Afterwards the worker always works, on one of the
/// two versions, with its state intact; an update a killed process left pending is applied by
/// the next process that activates the worker.
#[test]
fn sigkill_during_an_update_leaves_the_worker_on_one_version_or_the_other() {
    use golemw_runtime::{Executor, ExecutorOptions};
    let dir = tempfile::tempdir().unwrap();
    const ADDS: u64 = 20_000;
    {
        let options = ExecutorOptions {
            fsync: false,
            ..ExecutorOptions::default()
        };
        let ex = Executor::open(dir.path(), options).unwrap();
        let v1 = std::fs::read(guest_wasm("update-v1")).unwrap();
        ex.components().add("upd", &v1).unwrap();
        let id = ex.worker_id("upd", "w").unwrap();
        for _ in 0..ADDS {
            ex.invoke(&id, "add", &["1".to_string()], None)
                .done()
                .unwrap();
        }
        let v2 = std::fs::read(guest_wasm("update-v2")).unwrap();
        ex.components().update("upd", &v2).unwrap();
    }
    // How long one uninterrupted update takes (recovery, full replay on the new version,
    // commit, snapshot): the kills below are spread over that time.
    let started = std::time::Instant::now();
    ok(
        dir.path(),
        &[
            "worker",
            "update",
            "upd/w",
            "--version",
            "1",
            "--mode",
            "automatic",
        ],
    );
    let full = started.elapsed();
    let mut killed_while_running = 0;
    let mut killed_mid_update = 0;
    for round in 0..12u32 {
        // Snapshot-based updates last: once one succeeds, history starts there and automatic
        // updates become short.
        let mode = if round >= 10 {
            "snapshot-based"
        } else {
            "automatic"
        };
        let mut child = Command::new(env!("CARGO_BIN_EXE_golemw"))
            .arg("--data-dir")
            .arg(dir.path())
            .args([
                "worker",
                "update",
                "upd/w",
                "--version",
                "1",
                "--mode",
                mode,
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(full * (round + 1) / 13);
        if child.try_wait().unwrap().is_none() {
            killed_while_running += 1;
        }
        let _ = child.kill(); // SIGKILL
        let _ = child.wait();
        {
            // Did the kill land mid-update? Then the record still says pending.
            let ex = Executor::open(dir.path(), ExecutorOptions::default()).unwrap();
            let id = ex.worker_id("upd", "w").unwrap();
            let record = ex.worker_record(&id).unwrap();
            if record
                .history
                .updates
                .iter()
                .any(|u| u.outcome == golemw_runtime::history::UpdateOutcome::Pending)
            {
                killed_mid_update += 1;
            }
        }

        // Whatever happened, the worker works, its state is whole, and the version it reports
        // is the one its record says.
        let got = ok(dir.path(), &["worker", "invoke", "upd/w", "get"]);
        assert_eq!(got.trim(), ADDS.to_string(), "round {round}");
        let record: serde_json::Value =
            serde_json::from_str(&ok(dir.path(), &["--json", "worker", "get", "upd/w"])).unwrap();
        let version = record["component_version"].as_u64().unwrap();
        let reported = ok(dir.path(), &["worker", "invoke", "upd/w", "version"]);
        assert_eq!(
            reported.trim(),
            (version + 1).to_string(),
            "round {round}: record says version {version}"
        );
        assert!(
            record["history"]["updates"]
                .as_array()
                .unwrap()
                .iter()
                .all(|u| u["outcome"] != "pending"),
            "round {round}: a pending update was left: {record}"
        );
    }
    assert!(
        killed_while_running > 0 && killed_mid_update > 0,
        "no kill landed while an update was running ({killed_while_running} while the \
         process ran, {killed_mid_update} with the update pending)"
    );
    eprintln!("{killed_while_running} kills while running, {killed_mid_update} mid-update");
    let out = ok(
        dir.path(),
        &[
            "worker", "oplog", "upd/w", "--from", "20000", "--count", "100000",
        ],
    );
    assert!(
        out.contains("update-succeeded")
            || out.contains("update-failed")
            || out.contains("snapshot-update-started"),
        "{out}"
    );
}

/// `worker revert` and `worker update` from the command line, and how `worker get` and
/// `worker oplog` show them.
#[test]
fn revert_and_update_commands() {
    let dir = tempfile::tempdir().unwrap();
    let v1 = guest_wasm("update-v1");
    let v2 = guest_wasm("update-v2");
    ok(
        dir.path(),
        &["component", "add", v1.to_str().unwrap(), "--name", "upd"],
    );
    for n in ["1", "2", "3"] {
        ok(dir.path(), &["worker", "invoke", "upd/w", "add", n]);
    }
    let out = ok(
        dir.path(),
        &["worker", "revert", "upd/w", "--last-invocations", "1"],
    );
    assert!(out.contains("deleted"), "{out}");
    assert_eq!(
        ok(dir.path(), &["worker", "invoke", "upd/w", "get"]).trim(),
        "3"
    );
    let oplog = ok(dir.path(), &["worker", "oplog", "upd/w"]);
    assert!(oplog.contains("revert to"), "{oplog}");
    assert!(
        oplog
            .lines()
            .any(|l| l.contains(" x ") && l.contains("add(3)")),
        "deleted entries are marked: {oplog}"
    );
    let err = fails(
        dir.path(),
        &["worker", "revert", "upd/w", "--last-invocations", "99"],
    );
    assert!(err.contains("not 99"), "{err}");
    let err = fails(dir.path(), &["worker", "revert", "upd/w"]);
    assert!(
        err.contains("--to-oplog-index") || err.contains("required"),
        "{err}"
    );

    ok(
        dir.path(),
        &["component", "update", "upd", v2.to_str().unwrap()],
    );
    let out = ok(
        dir.path(),
        &[
            "worker",
            "update",
            "upd/w",
            "--version",
            "1",
            "--mode",
            "snapshot-based",
        ],
    );
    assert!(out.contains("version 1"), "{out}");
    assert_eq!(
        ok(dir.path(), &["worker", "invoke", "upd/w", "version"]).trim(),
        "2"
    );
    let get = ok(dir.path(), &["worker", "get", "upd/w"]);
    assert!(get.contains("component version: 1"), "{get}");
    assert!(
        get.contains("to version 1 (snapshot-based)") && get.contains("succeeded"),
        "{get}"
    );
    let err = fails(dir.path(), &["worker", "update", "upd/w", "--version", "7"]);
    assert!(err.contains("no version 7"), "{err}");
    let err = fails(
        dir.path(),
        &[
            "worker",
            "update",
            "upd/w",
            "--version",
            "1",
            "--mode",
            "sideways",
        ],
    );
    assert!(err.contains("unknown update mode"), "{err}");
}

/// `worker list --filter`: the get-workers filters as an expression on the command line.
#[test]
fn worker_list_filters_with_an_expression() {
    let dir = tempfile::tempdir().unwrap();
    let wasm = guest_wasm("counter");
    let wasm = wasm.to_str().unwrap();
    ok(dir.path(), &["component", "add", wasm, "--name", "ctr"]);
    ok(
        dir.path(),
        &["worker", "new", "ctr/acc-1", "--env", "REGION=eu-west"],
    );
    ok(
        dir.path(),
        &["worker", "new", "ctr/acc-2", "--env", "REGION=us-east"],
    );
    ok(dir.path(), &["worker", "new", "ctr/bob"]);
    ok(dir.path(), &["component", "update", "ctr", wasm]);
    ok(
        dir.path(),
        &["worker", "new", "ctr/carol", "--env", "REGION=eu-north"],
    );
    let names = |filter: &str| -> Vec<String> {
        let out = ok(
            dir.path(),
            &["--json", "worker", "list", "ctr", "--filter", filter],
        );
        let list: serde_json::Value = serde_json::from_str(&out).unwrap();
        list.as_array()
            .unwrap()
            .iter()
            .map(|w| w["id"]["worker_name"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(names("name like 'acc-%'"), ["acc-1", "acc-2"]);
    assert_eq!(names("name not like acc-%"), ["bob", "carol"]);
    assert_eq!(names("name == bob or name = 'carol'"), ["bob", "carol"]);
    assert_eq!(names("version >= 1"), ["carol"]);
    assert_eq!(
        names("status == idle and version < 1"),
        ["acc-1", "acc-2", "bob"]
    );
    assert_eq!(names("status != idle"), Vec::<String>::new());
    assert_eq!(names("env.REGION like 'eu-%'"), ["acc-1", "carol"]);
    assert_eq!(
        names("name like 'acc-%' and env.REGION == us-east or version >= 1"),
        ["acc-2", "carol"]
    );
    assert_eq!(
        names("(name == bob or env.REGION != 'us-east') and version == 0"),
        ["acc-1", "bob"]
    );
    assert_eq!(
        names("created-at >= 2000-01-01"),
        ["acc-1", "acc-2", "bob", "carol"]
    );
    assert_eq!(
        names("created-at < 2000-01-01T00:00:00Z"),
        Vec::<String>::new()
    );
    // Text output: the table, or a line saying nothing matched.
    let out = ok(
        dir.path(),
        &["worker", "list", "ctr", "--filter", "version >= 1"],
    );
    assert!(
        out.contains("NAME") && out.contains("carol") && !out.contains("bob"),
        "{out}"
    );
    let out = ok(
        dir.path(),
        &["worker", "list", "ctr", "--filter", "name like 'z%'"],
    );
    assert_eq!(out.trim(), "no workers of ctr match name like 'z%'");
    // Without --filter, everything, as before.
    let out = ok(dir.path(), &["--json", "worker", "list", "ctr"]);
    let list: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 4);
    // Bad expressions: what is wrong and where.
    let err = fails(
        dir.path(),
        &["worker", "list", "ctr", "--filter", "status == sleepy"],
    );
    assert!(
        err.contains("invalid --filter expression: unknown status `sleepy`")
            && err.contains("status == sleepy\n")
            && err.contains("          ^"),
        "{err}"
    );
    let err = fails(
        dir.path(),
        &["worker", "list", "ctr", "--filter", "name > 'a'"],
    );
    assert!(
        err.contains("`name` is compared with ==, !=, like or not like"),
        "{err}"
    );
    let err = fails(
        dir.path(),
        &["worker", "list", "ctr", "--filter", "age == 3"],
    );
    assert!(
        err.contains("expected a condition on name, status"),
        "{err}"
    );
    // The syntax is in --help.
    let help = ok(dir.path(), &["worker", "list", "--help"]);
    assert!(
        help.contains("env.VAR OP STRING") && help.contains("not like"),
        "{help}"
    );
}

/// `worker invoke` of a function that awaits an incomplete promise: the process says the worker
/// is suspended, names the promise and exits with status 0; `worker complete-promise` resumes
/// it, and the result is then returned for the invocation's idempotency key.
#[test]
fn a_suspended_invocation_exits_cleanly_and_complete_promise_resumes_it() {
    let dir = tempfile::tempdir().unwrap();
    let wasm = guest_wasm("promises");
    ok(dir.path(), &["component", "add", wasm.to_str().unwrap()]);
    let invoke_k = [
        "worker",
        "invoke",
        "--idempotency-key",
        "order-1",
        "promises/w",
        "add-and-await",
        "4",
    ];
    let out = ok(dir.path(), &invoke_k);
    assert!(
        out.contains("is suspended") && out.contains("awaits promise") && out.contains("order-1"),
        "{out}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&ok(dir.path(), &[&["--json"][..], &invoke_k].concat())).unwrap();
    assert_eq!(json["status"], "suspended");
    assert_eq!(json["idempotency_key"], "order-1");
    let idx = json["promise"]["oplog_idx"].as_u64().unwrap().to_string();
    assert!(out.contains(&format!("promise {idx} ")), "{out}");
    let get: serde_json::Value =
        serde_json::from_str(&ok(dir.path(), &["--json", "worker", "get", "promises/w"])).unwrap();
    assert_eq!(get["status"], "suspended");
    assert_eq!(
        get["awaiting"]["promise"]["oplog_idx"]
            .as_u64()
            .unwrap()
            .to_string(),
        idx
    );
    // Another invocation is refused, naming the promise.
    let err = fails(dir.path(), &["worker", "invoke", "promises/w", "total"]);
    assert!(
        err.contains("is suspended") && err.contains(&format!("promise {idx} ")),
        "{err}"
    );

    let payload = dir.path().join("payload.txt");
    std::fs::write(&payload, "paid").unwrap();
    let out = ok(
        dir.path(),
        &[
            "worker",
            "complete-promise",
            "promises/w",
            &idx,
            "--data-file",
            payload.to_str().unwrap(),
        ],
    );
    assert!(
        out.contains("completed promise") && out.contains("returned \"4:paid\""),
        "{out}"
    );
    let json: serde_json::Value = serde_json::from_str(&ok(
        dir.path(),
        &[
            "--json",
            "worker",
            "complete-promise",
            "promises/w",
            &idx,
            "again",
        ],
    ))
    .unwrap();
    assert_eq!(json["completed"], false);
    let out = ok(
        dir.path(),
        &["worker", "complete-promise", "promises/w", &idx, "again"],
    );
    assert!(out.contains("already completed"), "{out}");
    assert_eq!(ok(dir.path(), &invoke_k).trim(), "\"4:paid\"");
    assert_eq!(
        ok(dir.path(), &["worker", "invoke", "promises/w", "total"]).trim(),
        "4"
    );
    let get: serde_json::Value =
        serde_json::from_str(&ok(dir.path(), &["--json", "worker", "get", "promises/w"])).unwrap();
    assert_eq!(get["status"], "idle");
    assert!(get["awaiting"].is_null());
    // Unknown and deleted promises: clear errors.
    let err = fails(
        dir.path(),
        &["worker", "complete-promise", "promises/w", "999", "x"],
    );
    assert!(err.contains("unknown promise 999"), "{err}");
    let idx = ok(dir.path(), &["worker", "invoke", "promises/w", "create"]);
    ok(
        dir.path(),
        &["worker", "invoke", "promises/w", "delete-own", idx.trim()],
    );
    let err = fails(
        dir.path(),
        &["worker", "complete-promise", "promises/w", idx.trim(), "x"],
    );
    assert!(err.contains("was deleted"), "{err}");
    let err = fails(
        dir.path(),
        &["worker", "complete-promise", "promises/w", "5"],
    );
    assert!(
        err.contains("--data-file") || err.contains("required"),
        "{err}"
    );
}

/// Processes invoking a function that adds to a total, creates a promise and awaits it are
/// killed with SIGKILL at different points on the way to the await (start-up, the invocation,
/// the commit of the promise, the suspension); some `complete-promise` processes are killed
/// too. After each restart the invocation is suspended on a promise, completing it finishes the
/// invocation, and it ran exactly once.
#[test]
fn sigkill_on_the_way_to_an_await_then_completion_after_restart_finishes_it_once() {
    let dir = tempfile::tempdir().unwrap();
    let wasm = guest_wasm("promises");
    ok(dir.path(), &["component", "add", wasm.to_str().unwrap()]);
    // Compile once, so that the kills below land in the invocation, not in the compiler.
    ok(dir.path(), &["worker", "invoke", "promises/warm", "total"]);
    let started = std::time::Instant::now();
    ok(
        dir.path(),
        &[
            "worker",
            "invoke",
            "--idempotency-key",
            "k",
            "promises/warm",
            "add-and-await",
            "1",
        ],
    );
    let full = started.elapsed();
    let spawn = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_golemw"))
            .arg("--data-dir")
            .arg(dir.path())
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    let mut killed_while_running = 0;
    for round in 0..10u32 {
        let name = format!("promises/w{round}");
        let key = format!("k{round}");
        let invoke = [
            "--json",
            "worker",
            "invoke",
            "--idempotency-key",
            &key,
            &name,
            "add-and-await",
            "1",
        ];
        let mut child = spawn(&invoke);
        std::thread::sleep(full * round / 9);
        if child.try_wait().unwrap().is_none() {
            killed_while_running += 1;
        }
        let _ = child.kill(); // SIGKILL
        let _ = child.wait();
        // After the restart: the invocation (resumed, or run again if it had not committed
        // anything) is suspended on its promise.
        let out: serde_json::Value = serde_json::from_str(&ok(dir.path(), &invoke)).unwrap();
        assert_eq!(out["status"], "suspended", "round {round}: {out}");
        let idx = out["promise"]["oplog_idx"].as_u64().unwrap().to_string();
        let data = format!("p{round}");
        if round % 2 == 1 {
            // Kill a completion too, somewhere between completing and resuming.
            let mut child = spawn(&["worker", "complete-promise", &name, &idx, &data]);
            std::thread::sleep(full * round / 12);
            let _ = child.kill();
            let _ = child.wait();
        }
        let out: serde_json::Value = serde_json::from_str(&ok(
            dir.path(),
            &["--json", "worker", "complete-promise", &name, &idx, &data],
        ))
        .unwrap();
        // Completed by this call, or by the killed one (then resumed now, or already).
        assert!(
            out["completed"] == true || round % 2 == 1,
            "round {round}: {out}"
        );
        let result = ok(dir.path(), &invoke[1..]);
        assert_eq!(result.trim(), format!("\"1:{data}\""), "round {round}");
        assert_eq!(
            ok(dir.path(), &["worker", "invoke", &name, "total"]).trim(),
            "1",
            "round {round}: the invocation ran more than once"
        );
        let oplog = ok(dir.path(), &["worker", "oplog", &name, "--count", "1000"]);
        assert_eq!(
            oplog.matches("add-and-await(1)").count(),
            1,
            "round {round}: {oplog}"
        );
        assert_eq!(oplog.matches("completed -> \"1:").count(), 1, "{oplog}");
    }
    eprintln!("{killed_while_running} of 10 invoke processes killed while running");
    assert!(
        killed_while_running > 0,
        "no kill landed while a process was running"
    );
}

/// `worker interrupt` and `worker resume`: statuses interrupted and back; invocations refused
/// in between, in other processes too.
#[test]
fn worker_interrupt_and_resume_commands() {
    let dir = tempfile::tempdir().unwrap();
    let wasm = guest_wasm("promises");
    ok(dir.path(), &["component", "add", wasm.to_str().unwrap()]);
    ok(dir.path(), &["worker", "new", "promises/w"]);
    let out = ok(dir.path(), &["worker", "interrupt", "promises/w"]);
    assert!(
        out.contains("interrupted") && out.contains("was idle"),
        "{out}"
    );
    let get: serde_json::Value =
        serde_json::from_str(&ok(dir.path(), &["--json", "worker", "get", "promises/w"])).unwrap();
    assert_eq!(get["status"], "interrupted");
    let err = fails(dir.path(), &["worker", "invoke", "promises/w", "total"]);
    assert!(
        err.contains("is interrupted") && err.contains("worker resume"),
        "{err}"
    );
    let out: serde_json::Value = serde_json::from_str(&ok(
        dir.path(),
        &["--json", "worker", "resume", "promises/w"],
    ))
    .unwrap();
    assert_eq!(out["status"], "idle");
    let err = fails(dir.path(), &["worker", "resume", "promises/w"]);
    assert!(err.contains("cannot be resumed: it is idle"), "{err}");
    assert_eq!(
        ok(dir.path(), &["worker", "invoke", "promises/w", "total"]).trim(),
        "0"
    );
}

/// Starts `golemw ARGS`, waits until its stdout has a line starting with `marker`, waits
/// `grace` more, then kills it with SIGKILL. Returns that line.
fn kill_after_line(data_dir: &Path, args: &[&str], marker: &str, grace: Duration) -> String {
    use std::io::{BufRead, BufReader};
    let mut child = Command::new(env!("CARGO_BIN_EXE_golemw"))
        .arg("--data-dir")
        .arg(data_dir)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let line = BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .find(|line| line.starts_with(marker))
        .unwrap_or_else(|| panic!("golemw {args:?} ended before printing {marker:?}"));
    std::thread::sleep(grace);
    assert!(
        child.try_wait().unwrap().is_none(),
        "golemw {args:?} ended before it could be killed"
    );
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    line
}

fn worker_json(data_dir: &Path, worker: &str) -> serde_json::Value {
    serde_json::from_str(&ok(data_dir, &["--json", "worker", "get", worker])).unwrap()
}

/// A process killed inside an atomic region (after the region had committed entries): the next
/// process discards the region and runs it again, live; its effect on the worker appears once.
#[test]
fn sigkill_inside_an_atomic_region_runs_the_region_again_and_its_effects_appear_once() {
    let dir = tempfile::tempdir().unwrap();
    let wasm = guest_wasm("txn");
    ok(dir.path(), &["component", "add", wasm.to_str().unwrap()]);
    ok(
        dir.path(),
        &["worker", "invoke", "txn/w", "atomic-append", "1", "0"],
    );
    let invoke = [
        "worker",
        "invoke",
        "txn/w",
        "--idempotency-key",
        "k1",
        "atomic-append",
        "2",
        "1500",
    ];
    // The region's idempotency key is committed before it is printed; the kill lands in the
    // sleep that follows, before the region ends.
    let line = kill_after_line(dir.path(), &invoke, "in-region ", Duration::ZERO);
    let first_key = line.trim_start_matches("in-region ").to_string();
    let out = ok(dir.path(), &invoke);
    let result = out.lines().last().unwrap().trim_matches('"').to_string();
    let (key, items) = result.split_once(" items=").unwrap();
    assert_ne!(key, first_key, "the region ran again, live: {out}");
    assert!(out.contains(&format!("in-region {key}")), "{out}");
    assert_eq!(items, "2", "{out}");
    assert_eq!(
        ok(dir.path(), &["worker", "invoke", "txn/w", "items"]).trim(),
        "[1, 2]"
    );
    let oplog = ok(dir.path(), &["worker", "oplog", "txn/w"]);
    assert!(
        oplog.contains("discarded: atomic region interrupted"),
        "{oplog}"
    );
    assert_eq!(worker_json(dir.path(), "txn/w")["status"], "idle");
}

/// Idempotence on (the default): the remote side effect ran, the process died before its
/// record was committed, so the next process runs it again (at-least-once); it sees the other
/// worker as it is now.
#[test]
fn sigkill_after_a_remote_side_effect_runs_it_again_with_idempotence_on() {
    let dir = tempfile::tempdir().unwrap();
    let wasm = guest_wasm("txn");
    ok(dir.path(), &["component", "add", wasm.to_str().unwrap()]);
    ok(dir.path(), &["worker", "invoke", "txn/b", "items"]);
    let invoke = [
        "worker",
        "invoke",
        "txn/a",
        "--idempotency-key",
        "r1",
        "remote",
        "\"b\"",
        "1500",
    ];
    let line = kill_after_line(dir.path(), &invoke, "remote-done", Duration::ZERO);
    assert_eq!(line, "remote-done status=idle version=0");
    // Change what the effect observes: b fails.
    ok(
        dir.path(),
        &[
            "worker",
            "invoke",
            "txn/b",
            "set-retry-policy",
            "{max-attempts: 0, min-delay: 0, max-delay: 0, multiplier: 1.0}",
        ],
    );
    fails(dir.path(), &["worker", "invoke", "txn/b", "always-trap"]);
    let out = ok(dir.path(), &invoke);
    assert!(
        out.contains("remote-done status=failed"),
        "ran again: {out}"
    );
    assert_eq!(
        out.lines().last().unwrap(),
        "\"status=failed version=0\"",
        "{out}"
    );
    let oplog = ok(dir.path(), &["worker", "oplog", "txn/a"]);
    assert_eq!(oplog.matches("get-worker-metadata").count(), 1, "{oplog}");
    assert_eq!(worker_json(dir.path(), "txn/a")["status"], "idle");
}

/// Idempotence off: the begin marker was committed before the remote side effect ran and the
/// process died before its end marker: the next process cannot know whether the effect
/// happened and must not run it twice, so the worker fails (at-most-once).
#[test]
fn sigkill_after_a_remote_side_effect_fails_the_worker_with_idempotence_off() {
    let dir = tempfile::tempdir().unwrap();
    let wasm = guest_wasm("txn");
    ok(dir.path(), &["component", "add", wasm.to_str().unwrap()]);
    ok(dir.path(), &["worker", "invoke", "txn/b", "items"]);
    ok(
        dir.path(),
        &["worker", "invoke", "txn/a", "set-idempotent", "false"],
    );
    let invoke = [
        "worker",
        "invoke",
        "txn/a",
        "--idempotency-key",
        "r2",
        "remote",
        "\"b\"",
        "1500",
    ];
    kill_after_line(dir.path(), &invoke, "remote-done", Duration::ZERO);
    let err = fails(dir.path(), &invoke);
    assert!(
        err.contains("remote side effect") && err.contains("idempotence mode off"),
        "{err}"
    );
    let get = worker_json(dir.path(), "txn/a");
    assert_eq!(get["status"], "failed");
    let oplog = ok(dir.path(), &["worker", "oplog", "txn/a"]);
    assert!(oplog.contains("begin-remote-write") || oplog.contains("remote side effect begins"));
    assert!(
        oplog.contains("discarded: remote side effect interrupted"),
        "{oplog}"
    );
    // It stays failed in later processes.
    fails(dir.path(), &["worker", "invoke", "txn/a", "items"]);
}

/// A trapping invocation is retried by the worker's policy: `retrying` while it waits (a
/// process killed then leaves it so, and the next one runs the retry), `failed` with
/// retry-count = max-attempts once they are used up.
#[test]
fn retries_show_as_retrying_and_end_in_failed_with_retry_count_max_attempts() {
    let dir = tempfile::tempdir().unwrap();
    let wasm = guest_wasm("txn");
    ok(dir.path(), &["component", "add", wasm.to_str().unwrap()]);
    // A long first delay: the process is killed while it waits.
    ok(
        dir.path(),
        &[
            "worker",
            "invoke",
            "txn/r",
            "set-retry-policy",
            "{max-attempts: 3, min-delay: 5000000000, max-delay: 5000000000, multiplier: 1.0}",
        ],
    );
    let invoke = [
        "worker",
        "invoke",
        "txn/r",
        "--idempotency-key",
        "t1",
        "trap-until",
        "1",
    ];
    kill_after_line(
        dir.path(),
        &invoke,
        "attempt with retry-count 0",
        Duration::from_millis(700),
    );
    let get = worker_json(dir.path(), "txn/r");
    assert_eq!(get["status"], "retrying", "{get}");
    assert_eq!(get["retry_count"], 1);
    // The next process runs the retry (without waiting the delay again): it succeeds.
    let out = ok(dir.path(), &invoke);
    assert_eq!(out.lines().last().unwrap(), "1", "{out}");
    let get = worker_json(dir.path(), "txn/r");
    assert_eq!(
        (&get["status"], &get["retry_count"]),
        (&"idle".into(), &0.into())
    );

    // Exhaustion: 2 retries, then failed.
    ok(
        dir.path(),
        &[
            "worker",
            "invoke",
            "txn/f",
            "set-retry-policy",
            "{max-attempts: 2, min-delay: 10000000, max-delay: 20000000, multiplier: 2.0}",
        ],
    );
    let err = fails(dir.path(), &["worker", "invoke", "txn/f", "always-trap"]);
    assert!(err.contains("after 2 retries"), "{err}");
    let get = worker_json(dir.path(), "txn/f");
    assert_eq!(get["status"], "failed");
    assert_eq!(get["retry_count"], 2);
    let text = ok(dir.path(), &["worker", "get", "txn/f"]);
    assert!(text.contains("retry count:       2"), "{text}");
    let oplog = ok(dir.path(), &["worker", "oplog", "txn/f"]);
    assert_eq!(oplog.matches("failed attempt, retry").count(), 2, "{oplog}");
}

#[test]
fn options_may_follow_the_wave_arguments_and_negative_numbers_are_values() {
    let dir = tempfile::tempdir().unwrap();
    let wasm = guest_wasm("counter");
    ok(dir.path(), &["component", "add", wasm.to_str().unwrap()]);
    // The README's synopsis: options after the arguments.
    let args = [
        "worker",
        "invoke",
        "counter/w",
        "add",
        "2",
        "--idempotency-key",
        "k1",
    ];
    assert_eq!(ok(dir.path(), &args).trim(), "2");
    assert_eq!(
        ok(dir.path(), &args).trim(),
        "2",
        "the key was not taken as the key"
    );
    let types = guest_wasm("types");
    ok(dir.path(), &["component", "add", types.to_str().unwrap()]);
    let echo = ok(
        dir.path(),
        &["worker", "invoke", "types/t", "echo-s64", "-5", "--json"],
    );
    assert!(echo.contains("\"-5\""), "{echo}");
    // A value starting with `-` that is not a number goes after `--`.
    let inf = ok(
        dir.path(),
        &["worker", "invoke", "types/t", "echo-f64", "--", "-inf"],
    );
    assert_eq!(inf.trim(), "-inf");
}

/// Runtime errors name no command; the CLI adds the one that helps, on stderr and under --json.
#[test]
fn errors_come_with_the_cli_hint_that_helps() {
    let dir = tempfile::tempdir().unwrap();
    let err = fails(dir.path(), &["worker", "get", "nope/w"]);
    assert!(
        err.contains("error: unknown component \"nope\"")
            && err.contains("hint: `golemw component list` shows the known ones"),
        "{err}"
    );
    let out = golemw(dir.path(), &["--json", "worker", "get", "nope/w"]);
    assert!(!out.status.success());
    let body: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        body["hint"], "`golemw component list` shows the known ones",
        "{body}"
    );
    // No hint where none helps: the field is null.
    let wasm = guest_wasm("counter");
    ok(
        dir.path(),
        &[
            "component",
            "add",
            wasm.to_str().unwrap(),
            "--name",
            "counter",
        ],
    );
    let out = golemw(
        dir.path(),
        &["--json", "worker", "invoke", "counter/w", "nope"],
    );
    assert!(!out.status.success());
    let body: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(body["hint"].is_null(), "{body}");
}

/// A guest's `proc_exit(n)` is the command's exit status, with the code in the message.
#[test]
fn a_guests_exit_code_is_the_commands() {
    let dir = tempfile::tempdir().unwrap();
    let wasm = guest_wasm("hostile");
    ok(
        dir.path(),
        &[
            "component",
            "add",
            wasm.to_str().unwrap(),
            "--name",
            "hostile",
        ],
    );
    let out = golemw(
        dir.path(),
        &["worker", "invoke", "hostile/w", "exit-with", "7"],
    );
    assert_eq!(out.status.code(), Some(7));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("exited with code 7"), "{err}");
}

/// `--max-storage-mib`: past the cap a command fails as on a full disk and keeps nothing of
/// itself; without the cap the same data directory takes writes again.
#[test]
fn a_storage_cap_refuses_writes_past_it_and_lifting_it_lets_them_in() {
    let dir = tempfile::tempdir().unwrap();
    let wasm = guest_wasm("counter");
    ok(
        dir.path(),
        &[
            "component",
            "add",
            wasm.to_str().unwrap(),
            "--name",
            "counter",
        ],
    );
    // Output that does not compress, 64 KiB per invocation, until the 2 MiB cap refuses one.
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut refused = None;
    for n in 0..200 {
        let text: String = (0..(64 << 10))
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                char::from(b'a' + (seed % 26) as u8)
            })
            .collect();
        let arg = format!("\"{text}\"");
        let key = format!("p{n}");
        let out = golemw(
            dir.path(),
            &[
                "--max-storage-mib",
                "2",
                "--json",
                "worker",
                "invoke",
                "counter/w",
                "print",
                &arg,
                "--idempotency-key",
                &key,
            ],
        );
        if !out.status.success() {
            refused = Some(String::from_utf8_lossy(&out.stdout).into_owned());
            break;
        }
    }
    let refused = refused.expect("the cap never refused a write");
    assert!(
        refused.contains("reached its limit of 2097152 bytes"),
        "{refused}"
    );
    // Without the cap: writes go in, and the counter is where it was.
    assert_eq!(
        ok(dir.path(), &["worker", "invoke", "counter/w", "add", "1"]).trim(),
        "1"
    );
}

#[test]
fn stubgen_and_a_typed_call_between_two_workers_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let callee = guest_wasm("rpc-callee");
    let caller = guest_wasm("rpc-stub-caller");
    let (callee, caller) = (callee.to_str().unwrap(), caller.to_str().unwrap());
    let stub = ok(dir.path(), &["stubgen", callee]);
    let committed = golemw_tests::repo_root().join("tests/guests/rpc-stub-caller/stub/stub.wit");
    assert_eq!(stub, std::fs::read_to_string(committed).unwrap());
    ok(
        dir.path(),
        &["component", "add", callee, "--name", "rpc-callee"],
    );
    ok(dir.path(), &["component", "add", caller, "--name", "shop"]);
    let target = "\"urn:worker:rpc-callee/b\"";
    assert_eq!(
        ok(
            dir.path(),
            &["worker", "invoke", "shop/s", "add", target, "5"]
        )
        .trim(),
        "5"
    );
    assert_eq!(
        ok(
            dir.path(),
            &["worker", "invoke", "shop/s", "add", target, "2"]
        )
        .trim(),
        "7"
    );
    assert_eq!(
        ok(dir.path(), &["worker", "invoke", "rpc-callee/b", "total"]).trim(),
        "7"
    );
    let err = fails(dir.path(), &["stubgen", "/no/such/file.wasm"]);
    assert!(err.contains("/no/such/file.wasm"), "{err}");
}

#[test]
fn check_reports_damage_and_backup_makes_a_hot_copy() {
    use golemw_runtime::storage::Storage;
    let dir = tempfile::tempdir().unwrap();
    let wasm = guest_wasm("counter");
    ok(dir.path(), &["component", "add", wasm.to_str().unwrap()]);
    ok(dir.path(), &["worker", "invoke", "counter/a", "add", "1"]);
    ok(dir.path(), &["worker", "invoke", "counter/b", "add", "2"]);
    ok(dir.path(), &["snapshot", "take", "counter/a"]);
    assert!(ok(dir.path(), &["check"]).contains("nothing damaged"));

    // A hot copy, while a server holds the data directory and answers.
    let backup = dir.path().join("backup");
    {
        let server = golemw_tests::server::Server::start_with(
            env!("CARGO_BIN_EXE_golemw").as_ref(),
            dir.path(),
            &[],
        );
        let said = ok(dir.path(), &["backup", backup.to_str().unwrap()]);
        assert!(said.contains("backed up"), "{said}");
        assert_eq!(server.result("counter/a", "add", &["10"]), "11");
        // Into a directory that is not empty: refused.
        let err = fails(dir.path(), &["backup", backup.to_str().unwrap()]);
        assert!(err.contains("not empty"), "{err}");
    }
    // The copy is a data directory of its own, as of the moment it was made.
    assert_eq!(
        ok(&backup, &["worker", "invoke", "counter/a", "get"]).trim(),
        "1"
    );
    assert!(ok(&backup, &["check"]).contains("nothing damaged"));

    // Damage: a flipped byte in a's oplog, and b's record gone while its history stays.
    let (uid_a, uid_b) = {
        let storage = Storage::open_read_only(dir.path()).unwrap();
        let mut uids = Vec::new();
        storage
            .scan_all(storage.tables().workers, |_, value| {
                let record: golemw_runtime::WorkerRecord =
                    golemw_runtime::storage::codec::decode(value, "record").unwrap();
                uids.push((record.id.worker_name.clone(), record.uid));
            })
            .unwrap();
        uids.sort();
        (uids[0].1, uids[1].1)
    };
    golemw_tests::corrupt_oplog_block(dir.path(), &uid_a, 2);
    {
        let storage = Storage::open(dir.path()).unwrap();
        let db = storage.tables().workers;
        let component = {
            let mut key = None;
            storage
                .scan_all(db, |k, _| {
                    if k.ends_with(b"b") {
                        key = Some(k.to_vec());
                    }
                })
                .unwrap();
            key.unwrap()
        };
        storage
            .write(|txn| {
                txn.del(db, &component, None)?;
                Ok(())
            })
            .unwrap();
        storage.sync().unwrap();
    }
    let out = golemw(dir.path(), &["--json", "check"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let findings = report["findings"].as_array().unwrap();
    let says = |table: &str, at: &str, problem: &str| {
        findings.iter().any(|f| {
            f["table"] == table
                && f["at"].as_str().unwrap().contains(at)
                && f["problem"].as_str().unwrap().contains(problem)
        })
    };
    assert!(says("oplog", &uid_a.to_string(), "checksum"), "{report}");
    assert!(
        says(
            "oplog",
            &uid_b.to_string(),
            "worker record is missing or unreadable"
        ),
        "{report}"
    );
    assert_eq!(report["damaged"], true);
}

#[test]
fn worker_fork_makes_an_independent_worker_locally_and_through_a_server() {
    let dir = tempfile::tempdir().unwrap();
    let wasm = guest_wasm("counter");
    ok(dir.path(), &["component", "add", wasm.to_str().unwrap()]);
    for n in ["1", "2", "3"] {
        ok(dir.path(), &["worker", "invoke", "counter/w", "add", n]);
    }
    ok(dir.path(), &["snapshot", "take", "counter/w"]);
    let help = ok(dir.path(), &["worker", "fork", "--help"]);
    assert!(
        help.contains("--at-oplog-index") && help.contains("shared with the source"),
        "{help}"
    );

    // At the end, as JSON.
    let fork: serde_json::Value = serde_json::from_str(&ok(
        dir.path(),
        &["--json", "worker", "fork", "counter/w", "f"],
    ))
    .unwrap();
    assert_eq!(fork["source"]["worker_name"], "w");
    assert_eq!(fork["worker"]["id"]["worker_name"], "f");
    assert_eq!(fork["worker"]["status"], "idle");
    let len = fork["oplog_index"].as_u64().unwrap();
    assert_eq!(fork["snapshots"], serde_json::json!([len]));
    assert_eq!(
        ok(dir.path(), &["worker", "invoke", "counter/f", "add", "10"]).trim(),
        "16"
    );
    assert_eq!(
        ok(dir.path(), &["worker", "invoke", "counter/w", "get"]).trim(),
        "6"
    );
    let get = worker_json(dir.path(), "counter/f");
    assert_eq!(get["forked_from"]["source"]["worker_name"], "w");
    assert_eq!(get["forked_from"]["at"], len);
    assert!(worker_json(dir.path(), "counter/w")["forked_from"].is_null());
    // Earlier, as text: after the first invocation (create, invoked, completed).
    let said = ok(
        dir.path(),
        &[
            "worker",
            "fork",
            "counter/w",
            "early",
            "--at-oplog-index",
            "3",
        ],
    );
    assert!(
        said.contains("at oplog index 3") && said.contains("no snapshot to share"),
        "{said}"
    );
    assert_eq!(
        ok(dir.path(), &["worker", "invoke", "counter/early", "get"]).trim(),
        "1"
    );
    // Refusals say why.
    let err = fails(dir.path(), &["worker", "fork", "counter/w", "f"]);
    assert!(err.contains("already exists"), "{err}");
    let err = fails(
        dir.path(),
        &["worker", "fork", "counter/w", "g", "--at-oplog-index", "2"],
    );
    assert!(
        err.contains("cannot fork") && err.contains("had not ended"),
        "{err}"
    );

    // Through a server holding the data directory: the same command, the same JSON.
    let server = golemw_tests::server::Server::start_with(
        env!("CARGO_BIN_EXE_golemw").as_ref(),
        dir.path(),
        &[],
    );
    let remote: serde_json::Value = serde_json::from_str(&ok(
        dir.path(),
        &[
            "--json",
            "worker",
            "fork",
            "counter/f",
            "ff",
            "--at-oplog-index",
            &len.to_string(),
        ],
    ))
    .unwrap();
    assert_eq!(remote["source"]["worker_name"], "f");
    assert_eq!(remote["oplog_index"], len);
    assert_eq!(server.result("counter/ff", "get", &[]), "6");
    let shown = ok(dir.path(), &["worker", "get", "counter/ff"]);
    assert!(
        shown.contains("forked from:") && shown.contains("/f at oplog index"),
        "{shown}"
    );
    let (status, body) = server.post_json(
        "/v1/components/counter/workers/f/fork",
        serde_json::json!({ "target": "fg", "oplog_index": 0 }),
    );
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["kind"], "invalid-fork");
    drop(server);
    assert!(ok(dir.path(), &["check"]).contains("nothing damaged"));
}
