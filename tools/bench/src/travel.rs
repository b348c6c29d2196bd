//! Figure 8: time travel. A `memory` worker with 64 MiB of buffers and a 10^6-entry history,
//! snapshotted every 10^4 entries, calls `set-oplog-index` to a point 10^5 entries back. Timed:
//! from the `jump` invocation until the executor returns with the worker live again at the
//! target (record the jump, restore the newest snapshot before the target, replay to it). The
//! same jump on a copy of the data directory whose snapshots were deleted is the baseline:
//! Golem's model, a full replay up to the target.

use crate::workers::Completes;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _, Result};
use golemw_runtime::{Error, Executor, ExecutorOptions, RecoveryReport, SnapshotPolicy};

use crate::report::{Figure, Goal, Table};
use crate::restart::{grow, memory_worker, MEMORY_MIB};
use crate::stats::{count, fmt, median, ratio};
use crate::Ctx;

const HISTORY: u64 = 1_000_000;
const BACK: u64 = 100_000;
const SNAPSHOT_EVERY: u64 = 10_000;
/// Every snapshot of the history is kept.
const KEEP: usize = (HISTORY / SNAPSHOT_EVERY) as usize + 10;
/// Timed jumps from snapshots, and by full replay (each on a fresh copy of the history).
const REPS: usize = 9;
const FULL_REPS: usize = 5;
const SPEEDUP_GOAL: f64 = 50.0;
const LIVE_GOAL_MS: f64 = 50.0;

/// One timed jump: wall time until live again, and how the worker was recovered.
struct Jump {
    wall: Duration,
    report: RecoveryReport,
}

/// Copies a data directory (sparse: LMDB's map is mostly holes).
pub fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    let status = Command::new("cp")
        .arg("-r")
        .arg("--sparse=always")
        .arg(from)
        .arg(to)
        .status()
        .context("running cp")?;
    ensure!(status.success(), "cp -r {} failed", from.display());
    // Flush the copy now: otherwise the jump's fsync would write it back (tens of MiB) and be
    // timed as part of the jump.
    let status = Command::new("sync").status().context("running sync")?;
    ensure!(status.success(), "sync failed");
    Ok(())
}

/// How the timed jump recovers.
#[derive(Clone, Copy, PartialEq)]
enum Way {
    /// Nearest snapshot, rewinding in place the pages the kernel says were written.
    Tracked,
    /// Nearest snapshot, rewinding in place after comparing every page (tracking off).
    Compared,
    /// Full replay: the copy's snapshots are deleted first (untimed).
    FullReplay,
}

/// Jumps back to `target` in the worker of `dir` and times it.
fn jump(dir: &Path, target: u64, way: Way) -> Result<Jump> {
    // The build's policy, with fsync on; `snapshots_keep` must cover the history, or the
    // first snapshot this executor takes prunes the ones the jump needs.
    let options = ExecutorOptions {
        snapshot_policy: SnapshotPolicy::Entries(SNAPSHOT_EVERY),
        snapshots_keep: KEEP,
        track_writes: way == Way::Tracked,
        ..ExecutorOptions::default()
    };
    let without_snapshots = way == Way::FullReplay;
    let ex = Executor::open(dir, options)?;
    let id = ex.worker_id("memory", "w")?;
    if without_snapshots {
        let uid = ex.worker_record(&id)?.uid;
        let storage = ex.storage().clone();
        storage.write(|txn| golemw_runtime::snapshots::delete_all(txn, &storage, &uid))?;
    }
    // The worker is live (recovered, untimed) before it jumps.
    ex.invoke(&id, "memory-bytes", &[], None).done()?;
    let started = Instant::now();
    match ex.invoke(&id, "jump", &[target.to_string()], None) {
        Err(Error::InvocationUndone { target: t, .. }) if t == target => {}
        other => bail!("jump({target}) should undo its own invocation, got {other:?}"),
    }
    let wall = started.elapsed();
    let report = ex
        .worker_record(&id)?
        .last_recovery
        .context("no recovery report after the jump")?;
    Ok(Jump { wall, report })
}

pub fn run(ctx: &Ctx) -> Result<Figure> {
    let bar = ctx.progress("time-travel", HISTORY);
    let options = ExecutorOptions {
        fsync: false,
        snapshot_policy: SnapshotPolicy::Entries(SNAPSHOT_EVERY),
        snapshots_keep: KEEP,
        ..ExecutorOptions::default()
    };
    let (history, mut ex, id) = memory_worker(ctx, options)?;
    let mut len = ex.oplog_len(&id)?;
    grow(&mut ex, &id, &mut len, HISTORY, &bar)?;
    drop(ex);
    bar.finish_and_clear();
    // The history is `len` entries; the activating `memory-bytes` call adds 3 before the jump.
    let target = len - BACK;

    let scratch = ctx.temp_dir()?;
    let runs = |way: Way, reps: usize| -> Result<Vec<Jump>> {
        let mut out = Vec::new();
        for rep in 0..reps {
            let dir = scratch.path().join(format!("run-{rep}"));
            copy_dir(history.path(), &dir)?;
            out.push(jump(&dir, target, way)?);
            std::fs::remove_dir_all(&dir)?;
        }
        Ok(out)
    };
    let tracking = golemw_snapshot::dirty::available();
    let snap = runs(Way::Tracked, REPS)?;
    let compared = runs(Way::Compared, REPS)?;
    let full = runs(Way::FullReplay, FULL_REPS)?;
    for j in snap.iter().chain(&compared) {
        let used = j
            .report
            .snapshot_index
            .context("the jump used no snapshot")?;
        ensure!(
            used <= target && used + SNAPSHOT_EVERY + 1_000 > target,
            "the jump restored the snapshot at {used}, not the newest before {target}"
        );
    }
    ensure!(full.iter().all(|j| j.report.snapshot_index.is_none()));

    let ms =
        |jumps: &[Jump], f: &dyn Fn(&Jump) -> f64| median(&jumps.iter().map(f).collect::<Vec<_>>());
    let snap_ms = ms(&snap, &|j| j.wall.as_secs_f64() * 1e3);
    let compared_ms = ms(&compared, &|j| j.wall.as_secs_f64() * 1e3);
    let full_ms = ms(&full, &|j| j.wall.as_secs_f64() * 1e3);
    let mut table = Table::new(&[
        "recovery after the jump",
        "live again (ms, median)",
        "snapshot restored at",
        "entries replayed",
        "recovery (ms)",
        "of which restore (ms)",
        "pages rewritten in place",
        "speedup",
    ]);
    for (name, jumps, total) in [
        (
            "nearest snapshot + tail, pages the kernel saw written",
            &snap,
            snap_ms,
        ),
        (
            "nearest snapshot + tail, every page compared (tracking off)",
            &compared,
            compared_ms,
        ),
        ("full replay (no snapshots)", &full, full_ms),
    ] {
        table.row(vec![
            name.into(),
            fmt(total),
            jumps[0]
                .report
                .snapshot_index
                .map_or("—".into(), |i| i.to_string()),
            count(ms(jumps, &|j| j.report.entries_replayed as f64)),
            fmt(ms(jumps, &|j| j.report.duration_us as f64 / 1e3)),
            fmt(ms(jumps, &|j| j.report.restore_us as f64 / 1e3)),
            jumps[0]
                .report
                .pages_rewritten
                .map_or("— (fresh instance)".into(), |p| p.to_string()),
            ratio(full_ms, total),
        ]);
    }
    let speedup = full_ms / snap_ms;
    // What is left: the restore (pages written since the snapshot, read back), and the tail
    // replayed at the rate the full replay itself runs.
    let restore_ms = ms(&snap, &|j| j.report.restore_us as f64 / 1e3);
    let compared_restore_ms = ms(&compared, &|j| j.report.restore_us as f64 / 1e3);
    let tail = ms(&snap, &|j| j.report.entries_replayed as f64);
    let per_entry_ms = ms(&full, &|j| j.report.duration_us as f64 / 1e3)
        / ms(&full, &|j| j.report.entries_replayed as f64);
    let notes = vec![
        format!(
            "Where the {} ms go: the in-place restore takes {} ms with the kernel's record of \
             written pages against {} ms comparing every page of the 64 MiB; replaying the {} \
             tail entries takes about {} ms at the full replay's own rate ({} µs per entry); \
             the rest is recording the jump durably (a durable commit: two fsyncs) and the executor's \
             bookkeeping. The tail is set by the snapshot interval (10^4 entries; the target \
             falls just before a snapshot).",
            fmt(snap_ms),
            fmt(restore_ms),
            fmt(compared_restore_ms),
            count(tail),
            fmt(tail * per_entry_ms),
            fmt(per_entry_ms * 1e3),
        ),
        match &tracking {
            Ok(()) => "Write tracking (userfaultfd asynchronous write-protect + PAGEMAP_SCAN) \
                       was available on this machine. The worker's record starts when its \
                       memory equals a snapshot (restore, capture, rewind); its price is the \
                       first write to each 4 KiB page after that, about 2 µs (see figure 6)."
                .to_string(),
            Err(err) => format!(
                "Write tracking was NOT available here ({err}): both snapshot rows compared \
                 every page."
            ),
        },
    ];
    Ok(Figure {
        id: "time-travel",
        title: "9. Time travel: set-oplog-index 10^5 entries back in a 10^6-entry history".into(),
        method: format!(
            "A `memory` worker with {MEMORY_MIB} MiB of incompressible buffers builds a history of \
             {} entries with `clocks` invocations under `snapshot_policy: entries:{SNAPSHOT_EVERY}` \
             (fsync off while building). Each timed run copies that data directory, opens an \
             executor (the same policy and `snapshots_keep: {KEEP}`, fsync on), makes the worker live (untimed), then times \
             `invoke(jump, [{target}])`: the guest calls set-oplog-index({target}), {BACK} entries \
             back; the executor records the jump durably, recovers the worker from the newest \
             snapshot outside the deleted region, replays to the target and returns once the worker \
             is live again (the interrupted `clocks` invocation at the target finishes live). The \
             live instance is rewound in place. With write tracking, the pages it rewrites are \
             those the kernel saw written since the instance's memory last equalled a snapshot \
             plus those whose hash differs between that snapshot's page table and the target's; \
             with `track_writes: false` every 64 KiB page's XXH3 fingerprint is compared with \
             the target's. Only differing pages are decoded into memory. The baseline deletes \
             the copy's snapshots first, so recovery replays from the first entry. {REPS} runs \
             from snapshots each way, {FULL_REPS} by full replay. The target falls just \
             before a snapshot, so the tail replayed is close to the worst case ({SNAPSHOT_EVERY} \
             entries).",
            count(len as f64)
        ),
        tables: vec![table],
        goals: vec![
            Goal {
                target: format!("at least {SPEEDUP_GOAL}× faster than full replay"),
                met: speedup >= SPEEDUP_GOAL,
                detail: format!(
                    "{speedup:.1}× ({} ms vs {} ms){}",
                    fmt(snap_ms),
                    fmt(full_ms),
                    if speedup >= SPEEDUP_GOAL {
                        String::new()
                    } else {
                        format!(": missed by {:.1}×", SPEEDUP_GOAL / speedup)
                    }
                ),
            },
            Goal::under("live again after the jump", snap_ms, LIVE_GOAL_MS, "ms"),
        ],
        notes,
        metrics: vec![
            ("snapshot_ms".into(), snap_ms),
            ("snapshot_untracked_ms".into(), compared_ms),
            ("full_replay_ms".into(), full_ms),
            ("speedup".into(), speedup),
        ],
    })
}
