//! Hostile guests against the runtime's bounds: what a guest controls has a limit, and going
//! past it leaves the worker readable.

use golemw_runtime::oplog::store::BlockRead;
use golemw_runtime::oplog::OplogEntry;
use golemw_runtime::{Executor, ExecutorOptions, RecoveryMode, WorkerId};
use golemw_tests::guest_wasm;

fn open(dir: &std::path::Path) -> Executor {
    Executor::open(dir, ExecutorOptions::default()).unwrap()
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
    let wasm = std::fs::read(guest_wasm("hostile")).unwrap();
    ex.components().add("hostile", &wasm).unwrap();
    let id = ex.worker_id("hostile", "loud").unwrap();
    ex.invoke(&id, "flood", &["80".into()], None).unwrap();
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
    ex.invoke(&id, "flood", &["1".into()], None).unwrap();
    let (after, _) = output(&entries(&ex, &id));
    assert_eq!(after, total + (1 << 20));
    assert_eq!(
        ex.invoke(&id, "add", &["2".into()], None)
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
            .unwrap()
            .result
            .as_deref(),
        Some("5")
    );
}
