//! `wasi:keyvalue` under SIGKILL: processes writing keys one `set` at a time are killed at
//! different moments. A write's change is committed with the oplog block holding its entry
//! (in a long invocation, every 4096 entries), so afterwards the bucket holds exactly the keys
//! whose `set` the oplog holds: none lost, none made unrecorded.
//! (A test of the `golemw` binary, so it is built with the `golemw` package.)

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use golemw_runtime::oplog::{HostFunction, HostValue, OplogEntry};
use golemw_runtime::storage::{codec, Storage};
use golemw_tests::guest_wasm;
use lmdb::{Cursor, Transaction};

fn golemw(data_dir: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_golemw"));
    command.arg("--data-dir").arg(data_dir).args(args);
    command
}

/// The keys of bucket `b` that the oplogs' `set` entries name, and the keys the table holds.
fn recorded_and_stored(dir: &Path) -> (BTreeSet<String>, BTreeSet<String>) {
    let storage = Storage::open(dir).unwrap();
    let tables = storage.tables();
    let mut uids = Vec::new();
    {
        let txn = storage.env().begin_ro_txn().unwrap();
        for item in txn.open_ro_cursor(tables.workers).unwrap().iter_start() {
            let record: golemw_runtime::WorkerRecord =
                codec::decode(item.unwrap().1, "record").unwrap();
            uids.push(record.uid);
        }
    }
    let mut recorded = BTreeSet::new();
    for uid in uids {
        let entries =
            golemw_runtime::oplog::store::read_entries(&storage, &uid, 1, usize::MAX).unwrap();
        for (_, entry) in entries {
            if let OplogEntry::ImportedFunctionInvoked {
                function: HostFunction::Golem(name),
                request: HostValue::Wave(request),
                response: HostValue::Unit,
            } = entry
            {
                if name == "wasi:keyvalue/eventual@0.1.0.set" {
                    // `"b", "KEY", <n bytes, crc32 ...>`
                    let key = request.split('"').nth(3).unwrap().to_string();
                    recorded.insert(key);
                }
            }
        }
    }
    let mut stored = BTreeSet::new();
    storage
        .scan_all(tables.keyvalue, |row, _| {
            let (bucket, key) = golemw_runtime::keyvalue::parse_row_key(row).unwrap();
            assert_eq!(bucket, "b");
            stored.insert(key.to_string());
        })
        .unwrap();
    (recorded, stored)
}

/// Keys written per invocation: enough for an invocation to commit several oplog blocks (of
/// 4096 entries) on its way, so that a kill can land between two of its commits.
const KEYS_PER_ROUND: u32 = 10_000;

#[test]
fn sigkill_while_writing_keys_leaves_exactly_the_recorded_writes() {
    let dir = tempfile::tempdir().unwrap();
    let wasm = guest_wasm("keyvalue");
    let added = golemw(dir.path(), &["component", "add", wasm.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(added.status.success(), "{added:?}");
    let count = KEYS_PER_ROUND.to_string();
    let (mut full_round, mut partial_kills, mut round) = (Duration::ZERO, 0, 0u32);
    // Until a kill has landed in the middle of the writes (the timing adapts to the machine),
    // within bounds.
    while round < 6 || (partial_kills == 0 && round < 30) {
        let prefix = format!("\"r{round}-\"");
        let started = std::time::Instant::now();
        let mut child = golemw(
            dir.path(),
            &[
                "worker",
                "invoke",
                "keyvalue/w",
                "set-range",
                "\"b\"",
                &prefix,
                &count,
            ],
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
        let killed = round % 2 == 1;
        if killed {
            // Somewhere from start-up (recovery of the last round's interrupted invocation)
            // to the end of the writes, as measured on an uninterrupted round.
            std::thread::sleep(full_round * (round % 7 + 1) / 8);
            let _ = child.kill(); // SIGKILL
        }
        let output = child.wait_with_output().unwrap();
        if !killed {
            assert!(output.status.success(), "round {round}: {output:?}");
            full_round = started.elapsed();
        }
        // After every process: the store holds exactly what the oplog recorded.
        let (recorded, stored) = recorded_and_stored(dir.path());
        let only_recorded: Vec<_> = recorded.difference(&stored).take(5).collect();
        let only_stored: Vec<_> = stored.difference(&recorded).take(5).collect();
        assert!(
            only_recorded.is_empty() && only_stored.is_empty(),
            "round {round}: the bucket must hold exactly the keys whose set is in the oplog; \
             recorded, not stored: {only_recorded:?}; stored, not recorded: {only_stored:?}"
        );
        let written = stored
            .iter()
            .filter(|k| k.starts_with(&format!("r{round}-")))
            .count();
        if killed && written > 0 && written < KEYS_PER_ROUND as usize {
            partial_kills += 1;
        }
        if !killed {
            assert_eq!(written, KEYS_PER_ROUND as usize, "round {round}");
        }
        round += 1;
    }
    assert!(
        partial_kills > 0,
        "no kill landed in the middle of the writes"
    );
    eprintln!("{round} rounds, {partial_kills} killed in the middle of their writes");
}
