//! Figure: forks. A `memory` worker with 64 MiB of buffers and a 10^5-entry history, snapshotted
//! at its end, is forked at its end (`Executor::fork_worker`: the oplog prefix, the snapshot
//! manifests and keyed results copied in one durable transaction, the pages shared). Timed, per
//! fork: the fork itself; its first recovery (the nearest snapshot, copied from storage: a fork
//! has no memory image yet); and the same recovery by full replay of the copied history, which
//! is what forking costs where a worker comes back by replaying it (Golem's fork). The source's
//! own restore (from its memory image) is the reference a fork should be close to.

use anyhow::{ensure, Result};
use golemw_runtime::{snapshots, ExecutorOptions, RecoveryMode, SnapshotPolicy};

use crate::report::{Figure, Goal, Table};
use crate::restart::{grow, memory_worker, MEMORY_MIB};
use crate::stats::{fmt, ratio, Samples};
use crate::Ctx;

const HISTORY: u64 = 100_000;
const REPS: usize = 5;
/// A fork and its first restore together, against the source's restore.
const GOAL_RATIO: f64 = 3.0;

pub fn run(ctx: &Ctx) -> Result<Figure> {
    let options = ExecutorOptions {
        // Snapshots while the history is built, and one at its end (below).
        snapshot_policy: SnapshotPolicy::Entries(10_000),
        ..ExecutorOptions::default()
    };
    let (_dir, mut ex, id) = memory_worker(ctx, options)?;
    let bar = ctx.progress("fork", HISTORY + REPS as u64);
    let mut len = ex.oplog_len(&id)?;
    grow(&mut ex, &id, &mut len, HISTORY, &bar)?;
    ex.snapshot(&id)?;
    let uid = ex.worker_record(&id)?.uid;
    let pages_before = snapshots::stored_page_bytes(ex.storage(), &uid)?;
    let [mut fork, mut first, mut replay, mut source] = [(); 4].map(|_| Samples::default());
    for i in 0..REPS {
        let name = format!("fork-{i}");
        let started = std::time::Instant::now();
        ex.fork_worker(&id, &name, None)?;
        fork.push(started.elapsed());
        let forked = ex.worker_id("memory", &name)?;
        let started = std::time::Instant::now();
        let report = ex.recover(&forked, RecoveryMode::Auto)?;
        first.push(started.elapsed());
        ensure!(
            report.snapshot_index.is_some(),
            "the fork came back without a snapshot"
        );
        let started = std::time::Instant::now();
        ex.recover(&forked, RecoveryMode::FullReplay)?;
        replay.push(started.elapsed());
        let started = std::time::Instant::now();
        ex.recover(&id, RecoveryMode::Auto)?;
        source.push(started.elapsed());
        bar.inc(1);
    }
    bar.finish_and_clear();
    let pages_after = snapshots::stored_page_bytes(ex.storage(), &uid)?;
    let entries = ex.oplog_len(&id)?;

    let ms = |s: &Samples| s.median() / 1000.0;
    let by_snapshot = ms(&fork) + ms(&first);
    let by_replay = ms(&fork) + ms(&replay);
    let mut table = Table::new(&["step", "median ms", "× the source's restore"]);
    for (step, value) in [
        (
            "fork (copy the prefix and manifests, durable commit)",
            ms(&fork),
        ),
        (
            "the fork's first recovery: nearest snapshot + tail",
            ms(&first),
        ),
        ("the same by full replay of the copied history", ms(&replay)),
        (
            "the source's restore (nearest snapshot, memory image)",
            ms(&source),
        ),
        ("fork + first recovery", by_snapshot),
        ("fork + full replay (forking by replay)", by_replay),
    ] {
        table.row(vec![
            step.to_string(),
            fmt(value),
            ratio(value, ms(&source)),
        ]);
    }
    let metrics = vec![
        ("fork_ms".to_string(), ms(&fork)),
        ("first_recovery_ms".to_string(), ms(&first)),
        ("full_replay_ms".to_string(), ms(&replay)),
        ("source_restore_ms".to_string(), ms(&source)),
    ];
    Ok(Figure {
        id: "fork",
        title: "Forks: a 64 MiB worker with 10^5 entries of history".into(),
        method: format!(
            "In process, one executor, fsync on. A `memory` worker with {MEMORY_MIB} MiB of \
             buffers and {entries} oplog entries (`clocks` invocations, snapshots every 10^4 \
             entries while built, one more at the end) is forked at its end {REPS} times, each \
             fork a new worker; after each fork, the fork is recovered (nearest snapshot, the \
             default way), then again by full replay, then the source is restored. Medians."
        ),
        tables: vec![table],
        goals: vec![Goal::under(
            "fork + its first recovery ÷ the source's restore",
            by_snapshot / ms(&source),
            GOAL_RATIO,
            "×",
        )],
        notes: vec![
            format!(
                "Forking by replay would cost {} ms against {} ms: {:.0}× more.",
                fmt(by_replay),
                fmt(by_snapshot),
                by_replay / by_snapshot
            ),
            format!(
                "Stored page bytes of the source's page space: {pages_before} before the \
                 {REPS} forks, {pages_after} after (the forks share the pages; nothing is \
                 copied)."
            ),
            "The fork's first recovery copies its pages from storage: it has no memory image \
             until its first snapshot, while the source maps its own (figure 5)."
                .into(),
        ],
        metrics,
    })
}
