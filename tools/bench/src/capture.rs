//! Figure 6: the cost of snapshotting a 64 MiB worker against the share of its memory that
//! changed since the previous snapshot, and what the snapshots take in storage.

use crate::workers::Completes;
use std::collections::HashMap;
use std::hint::black_box;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use golemw_runtime::snapshots::{list, stored_page_bytes};
use golemw_runtime::{Executor, ExecutorOptions, SnapshotPolicy, WorkerId};
use golemw_snapshot::page::{decode_page_into, encode_page, fingerprint};
use golemw_snapshot::{CaptureStats, PageHash, PAGE_BYTES};

use crate::report::{Figure, Goal, Table};
use crate::restart::{copies, memory_worker, noise, COPY_REPS, MEMORY_MIB};
use crate::stats::{count, fmt, median};
use crate::Ctx;

/// Snapshots in the 1% series (the storage measurement).
const SERIES: usize = 100;
/// Snapshots in every other series.
const REPS: usize = 5;
const GOAL_MS: f64 = 5.0;
const MIB: f64 = 1024.0 * 1024.0;

/// One `Executor::snapshot`.
struct Shot {
    index: u64,
    stats: CaptureStats,
    wall: Duration,
    /// The invocation that made the change (its first write to each page is tracked).
    touched: Duration,
}

fn snapshot(ex: &Executor, id: &WorkerId) -> Result<Shot> {
    let index = ex.oplog_len(id)?;
    let start = Instant::now();
    let stats = ex.snapshot(id)?;
    Ok(Shot {
        index,
        stats,
        wall: start.elapsed(),
        touched: Duration::ZERO,
    })
}

/// Median µs per 64 KiB page of noise, on one thread, over 3 passes of 64 MiB: XXH3-128
/// fingerprint, BLAKE3 hash, encode (zstd-1 + CRC32), decode (CRC32 + copy).
fn per_page_us() -> Result<[f64; 4]> {
    let src = noise(MEMORY_MIB as usize * 1024 * 1024);
    let pages: Vec<&[u8]> = src.chunks(PAGE_BYTES).collect();
    let n = pages.len() as f64;
    let mut s = [(); 4].map(|_| Vec::new());
    let mut dst = vec![0u8; PAGE_BYTES];
    for _ in 0..3 {
        let t = Instant::now();
        black_box(pages.iter().fold(0, |a, p| a ^ fingerprint(p)));
        s[0].push(t.elapsed().as_secs_f64() * 1e6 / n);
        let t = Instant::now();
        for p in &pages {
            black_box(PageHash::of(p));
        }
        s[1].push(t.elapsed().as_secs_f64() * 1e6 / n);
        let t = Instant::now();
        let encoded: Vec<Vec<u8>> = pages.iter().map(|p| encode_page(p)).collect();
        s[2].push(t.elapsed().as_secs_f64() * 1e6 / n);
        let t = Instant::now();
        for e in &encoded {
            decode_page_into(e, &mut dst, &PageHash([0; 32]))?;
        }
        s[3].push(t.elapsed().as_secs_f64() * 1e6 / n);
    }
    Ok(s.map(|v| median(&v)))
}

/// One series of snapshots: `reps` rounds of `function(percent)` + `Executor::snapshot`.
struct Series {
    function: &'static str,
    percent: u32,
    shots: Vec<Shot>,
}

/// What a `function(percent)` call rewrites, for the tables.
fn label(function: &str, percent: u32) -> String {
    match function {
        "touch-pages" => format!("{percent}% of 64 KiB wasm pages, whole"),
        _ => format!("{percent}% of 4 KiB chunks, evenly spread"),
    }
}

/// The rounds with write tracking on: the first is the storage series.
const TRACKED: [(&str, u32, usize); 5] = [
    ("touch-pages", 1, SERIES),
    ("touch", 1, REPS),
    ("touch-pages", 0, REPS),
    ("touch-pages", 10, REPS),
    ("touch-pages", 100, REPS),
];
/// The same kinds of change with tracking off (every page fingerprinted), for the ratio.
const UNTRACKED: [(&str, u32, usize); 4] = [
    ("touch-pages", 1, REPS),
    ("touch", 1, REPS),
    ("touch-pages", 0, REPS),
    ("touch-pages", 100, REPS),
];

/// A worker, its first snapshot and the series in `plan`; with the pages that differ from
/// the previous snapshot and each manifest's size, by oplog index.
struct Run {
    first: Shot,
    series: Vec<Series>,
    changed: HashMap<u64, f64>,
    manifest_bytes: HashMap<u64, u64>,
    base_bytes: u64,
    series_bytes: u64,
    /// Disk space the worker's memory image takes at the end (allocated blocks).
    image_bytes: u64,
}

impl Run {
    /// The series of `function(percent)` rounds, if the plan had one.
    fn find_series(&self, function: &str, percent: u32) -> Option<&Series> {
        self.series
            .iter()
            .find(|s| s.function == function && s.percent == percent)
    }
}

fn run_plan(
    ctx: &Ctx,
    track_writes: bool,
    plan: &[(&'static str, u32, usize)],
    bar: &indicatif::ProgressBar,
) -> Result<Run> {
    let options = ExecutorOptions {
        snapshot_policy: SnapshotPolicy::Off,
        snapshots_keep: 1 + plan.iter().map(|p| p.2).sum::<usize>(),
        track_writes,
        ..ExecutorOptions::default()
    };
    let (_dir, ex, id) = memory_worker(ctx, options)?;
    let uid = ex.worker_record(&id)?.uid;
    let first = snapshot(&ex, &id)?;
    bar.inc(1);
    let base_bytes = stored_page_bytes(ex.storage(), &uid)?;
    let mut series_bytes = 0;
    let mut series = Vec::new();
    for (n, &(function, percent, reps)) in plan.iter().enumerate() {
        let mut shots = Vec::with_capacity(reps);
        for _ in 0..reps {
            let started = Instant::now();
            ex.invoke(&id, function, &[percent.to_string()], None)
                .done()?;
            let touched = started.elapsed();
            shots.push(Shot {
                touched,
                ..snapshot(&ex, &id)?
            });
            bar.inc(1);
        }
        if n == 0 {
            series_bytes = stored_page_bytes(ex.storage(), &uid)? - base_bytes;
        }
        series.push(Series {
            function,
            percent,
            shots,
        });
    }
    if track_writes && golemw_snapshot::dirty::available().is_ok() {
        anyhow::ensure!(ex.tracks_writes(&id)?, "write tracking should be on");
    }
    let mut changed = HashMap::new();
    let mut manifest_bytes = HashMap::new();
    let mut previous: Option<Vec<golemw_snapshot::PageRef>> = None;
    for s in list(ex.storage(), &uid)? {
        let manifest = s.manifest?;
        let differ = match &previous {
            Some(p) => (0..manifest.pages.len().max(p.len()))
                .filter(|&i| p.get(i) != manifest.pages.get(i))
                .count(),
            None => manifest.stats.pages_stored as usize,
        };
        changed.insert(s.index, differ as f64);
        manifest_bytes.insert(s.index, s.manifest_bytes as u64);
        previous = Some(manifest.pages);
    }
    let image = golemw_runtime::snapshots::image_path(ex.storage(), &uid);
    let image_bytes = std::os::unix::fs::MetadataExt::blocks(
        &std::fs::metadata(&image).with_context(|| format!("{}", image.display()))?,
    ) * 512;
    Ok(Run {
        first,
        series,
        changed,
        manifest_bytes,
        base_bytes,
        series_bytes,
        image_bytes,
    })
}

pub fn run(ctx: &Ctx) -> Result<Figure> {
    let shots: usize = TRACKED.iter().chain(&UNTRACKED).map(|p| p.2).sum();
    let bar = ctx.progress("capture", (COPY_REPS + 2 + shots) as u64);
    let copy = copies(&bar);
    let tracking = golemw_snapshot::dirty::available();
    let tracked = run_plan(ctx, true, &TRACKED, &bar)?;
    let untracked = run_plan(ctx, false, &UNTRACKED, &bar)?;
    bar.set_message("per-page costs");
    let [fp, hash, encode, decode] = per_page_us()?;
    bar.finish_and_clear();

    let capture_ms = |shots: &[Shot]| {
        median(
            &shots
                .iter()
                .map(|s| s.stats.capture_us as f64 / 1000.0)
                .collect::<Vec<_>>(),
        )
    };
    let find = |run: &Run, function: &str, percent: u32| {
        run.find_series(function, percent)
            .map(|s| capture_ms(&s.shots))
    };
    let mut table = Table::new(&[
        "change since the previous snapshot",
        "write tracking",
        "snapshots",
        "64 KiB pages changed",
        "pages written",
        "MiB written",
        "capture_us ms",
        "Executor::snapshot wall ms",
        "capture × memcpy 64 MiB",
        "tracking off ÷ on",
        "the touch invocation ms",
    ]);
    let mut row = |what: String, on: bool, run: &Run, shots: &[&Shot], vs: Option<f64>| {
        let med =
            |f: &dyn Fn(&Shot) -> f64| median(&shots.iter().map(|s| f(s)).collect::<Vec<_>>());
        let capture = med(&|s| s.stats.capture_us as f64) / 1000.0;
        table.row(vec![
            what,
            if on { "on" } else { "off" }.into(),
            shots.len().to_string(),
            fmt(med(&|s| run.changed[&s.index])),
            fmt(med(&|s| s.stats.pages_new as f64)),
            fmt(med(&|s| s.stats.bytes_new as f64) / MIB),
            fmt(capture),
            fmt(med(&|s| s.wall.as_secs_f64() * 1e6) / 1000.0),
            format!("{}×", fmt(capture * 1000.0 / copy.faulted)),
            vs.map_or(String::new(), |off| format!("{}×", fmt(off / capture))),
            match med(&|s| s.touched.as_secs_f64() * 1e6) / 1000.0 {
                0.0 => "—".into(),
                ms => fmt(ms),
            },
        ]);
    };
    let on = tracking.is_ok();
    row(
        "first snapshot (every page new; tracking starts)".into(),
        on,
        &tracked,
        &[&tracked.first],
        None,
    );
    row(
        "first snapshot (every page new)".into(),
        false,
        &untracked,
        &[&untracked.first],
        None,
    );
    let mut order: Vec<(&Series, bool, &Run)> = tracked
        .series
        .iter()
        .map(|s| (s, on, &tracked))
        .chain(untracked.series.iter().map(|s| (s, false, &untracked)))
        .collect();
    order.sort_by_key(|(s, on, _)| (s.function != "touch-pages", s.percent, !on));
    for (series, on_here, run) in order {
        let vs = if on_here {
            find(&untracked, series.function, series.percent)
        } else {
            None
        };
        row(
            label(series.function, series.percent),
            on_here,
            run,
            &series.shots.iter().collect::<Vec<_>>(),
            vs,
        );
    }
    for (what, t) in [
        ("baseline: memcpy 64 MiB into faulted memory", copy.faulted),
        ("baseline: memcpy 64 MiB into fresh memory", copy.fresh),
    ] {
        let mut cells = vec![String::new(); 11];
        cells[0] = what.into();
        cells[6] = fmt(t / 1000.0);
        cells[8] = format!("{}×", fmt(t / copy.faulted));
        table.row(cells);
    }

    let one = &tracked.series[0].shots;
    let manifests: u64 = one.iter().map(|s| tracked.manifest_bytes[&s.index]).sum();
    let memory_bytes = tracked.first.stats.pages_total as f64 * PAGE_BYTES as f64;
    let mut storage = Table::new(&["storage", "MiB", "per snapshot MiB"]);
    let mib = |b: f64| fmt(b / MIB);
    let mut srow = |what: &str, bytes: f64, n: f64| {
        storage.row(vec![what.into(), mib(bytes), mib(bytes / n)]);
    };
    srow(
        "first snapshot: pages (compressed when it helps)",
        tracked.base_bytes as f64,
        1.0,
    );
    let n = SERIES as f64;
    let what = label("touch-pages", 1);
    srow(
        &format!("{SERIES} snapshots at {what}: new pages"),
        tracked.series_bytes as f64,
        n,
    );
    srow(
        &format!("{SERIES} snapshots at {what}: manifests"),
        manifests as f64,
        n,
    );
    let total = (tracked.series_bytes + manifests) as f64;
    srow(&format!("{SERIES} snapshots at {what}: total"), total, n);
    srow(
        "memory image: the latest state, one file per worker (not per snapshot)",
        tracked.image_bytes as f64,
        1.0,
    );
    srow(
        &format!("for comparison: {SERIES} full copies of linear memory"),
        n * memory_bytes,
        n,
    );

    let mut costs = Table::new(&["step, one 64 KiB page, one thread", "µs/page", "GB/s"]);
    for (what, t) in [
        ("fingerprint (XXH3-128), every page read", fp),
        ("hash (BLAKE3), changed pages", hash),
        ("encode (zstd-1 attempt + CRC32), new pages", encode),
        ("decode (CRC32 + copy), restore", decode),
    ] {
        costs.row(vec![what.into(), fmt(t), fmt(PAGE_BYTES as f64 / t / 1e3)]);
    }

    let only_changed = [&tracked, &untracked].iter().all(|run| {
        run.series
            .iter()
            .flat_map(|s| &s.shots)
            .all(|s| s.stats.pages_new as f64 <= run.changed[&s.index])
    });
    let pages_changed = median(
        &one.iter()
            .map(|s| tracked.changed[&s.index])
            .collect::<Vec<_>>(),
    );
    let written = median(
        &one.iter()
            .map(|s| s.stats.bytes_new as f64)
            .collect::<Vec<_>>(),
    );
    let get = |run: &Run, f: &str, p: u32| find(run, f, p).unwrap_or(f64::NAN);
    let pages_1 = get(&tracked, "touch-pages", 1);
    let spread_1 = get(&tracked, "touch", 1);
    let zero_on = get(&tracked, "touch-pages", 0);
    let zero_off = get(&untracked, "touch-pages", 0);
    let pages_new = |run: &Run, f: &str, p: u32| {
        median(
            &run.find_series(f, p)
                .expect("series in the plan")
                .shots
                .iter()
                .map(|s| s.stats.pages_new as f64)
                .collect::<Vec<_>>(),
        )
    };
    let per_page_us = 1000.0 * (spread_1 - zero_on)
        / (pages_new(&tracked, "touch", 1) - pages_new(&tracked, "touch-pages", 0));
    Ok(Figure {
        id: "capture",
        title: "6. Snapshot capture cost against dirty ratio (64 MiB worker)".into(),
        method: format!(
            "A `memory` worker with {MEMORY_MIB} MiB of incompressible buffers, \
             `ExecutorOptions {{ snapshot_policy: off, track_writes, .. }}` (fsync on, the \
             default). With write tracking on: a first snapshot, then {SERIES} rounds of \
             `touch-pages(1)` + `Executor::snapshot` (the storage series), then {REPS} rounds \
             each of `touch(1)` and `touch-pages` at 0%, 10% and 100%. With tracking off, in a \
             second worker: {REPS} rounds of `touch-pages(1)`, `touch(1)` and `touch-pages(0)`. \
             `touch-pages(p)` rewrites p% of the 64 KiB wasm pages holding buffers, whole; \
             `touch(p)` rewrites p% of the 4 KiB chunks, evenly spread, so it changes one 64 KiB \
             page in ~6 at 1% (the worst case for 64 KiB snapshot pages). Write tracking: the \
             kernel's record of written pages (userfaultfd asynchronous write-protect + \
             PAGEMAP_SCAN; {}), so only written pages are read; off, every page is \
             fingerprinted and compared. capture_us is the CaptureStats time (scan, read, hash, \
             compress; no LMDB); the wall time of `Executor::snapshot` adds the LMDB write, its \
             fsyncs, the pruning check and bringing the memory image up to date (the pages that \
             changed; all of them at the first snapshot). The memory image's size is its \
             allocated blocks on disk at the end. \"64 KiB pages changed\" compares each manifest's page \
             table with the previous one. Storage: `snapshots::stored_page_bytes` before and \
             after the storage series plus the manifests' encoded sizes. Per-page costs: the \
             snapshot crate's functions on 64 MiB of noise, one thread, median of 3 passes. \
             Medians.",
            match &tracking {
                Ok(()) => "available on this machine".to_string(),
                Err(err) => format!("NOT available here ({err}), so both runs compared pages"),
            }
        ),
        tables: vec![table, storage, costs],
        goals: vec![
            Goal::under(
                "capture with 1% of pages changed (touch-pages(1), capture_us, median)",
                pages_1,
                GOAL_MS,
                "ms",
            ),
            Goal {
                target: "snapshots store only changed pages".into(),
                met: only_changed,
                detail: format!(
                    "{} every snapshot (storage series: median {} of {} pages changed and \
                     written, {} MiB per snapshot)",
                    if only_changed { "in" } else { "NOT in" },
                    fmt(pages_changed),
                    tracked.first.stats.pages_stored,
                    fmt(written / MIB),
                ),
            },
        ],
        notes: vec![
            format!(
                "Storage for {SERIES} snapshots at 1% of pages: {} MiB ({} bytes) on top of the \
                 first snapshot's {} MiB.",
                mib(total),
                count(total),
                mib(tracked.base_bytes as f64)
            ),
            format!(
                "Where a capture goes. Finding what changed: {} ms with tracking (0% change) \
                 against {} ms fingerprinting every page ({}× less). Each 64 KiB page that did \
                 change then costs {} µs (BLAKE3 + zstd attempt + CRC, spread over the cores): \
                 ((touch(1) − touch-pages(0)) / their pages written). So `touch(1)`, which \
                 changes ~1 page in 6, costs {} ms: a snapshot page is 64 KiB, and a 4 KiB write \
                 makes all of it new.",
                fmt(zero_on),
                fmt(zero_off),
                fmt(zero_off / zero_on),
                fmt(per_page_us),
                fmt(spread_1),
            ),
        ],
        metrics: vec![
            ("capture_1pct_ms".into(), pages_1),
            ("capture_1pct_spread_ms".into(), spread_1),
            (
                "capture_1pct_untracked_ms".into(),
                get(&untracked, "touch-pages", 1),
            ),
            ("capture_10pct_ms".into(), get(&tracked, "touch-pages", 10)),
            (
                "capture_100pct_ms".into(),
                get(&tracked, "touch-pages", 100),
            ),
            ("capture_0pct_ms".into(), zero_on),
            ("capture_0pct_untracked_ms".into(), zero_off),
            ("storage_100_snapshots_1pct_bytes".into(), total),
            ("fingerprint_us_per_page".into(), fp),
            ("blake3_us_per_page".into(), hash),
            ("encode_us_per_page".into(), encode),
            ("decode_us_per_page".into(), decode),
        ],
    })
}
