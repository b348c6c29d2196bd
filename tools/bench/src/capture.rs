//! Figure 6: the cost of snapshotting a 64 MiB worker against the share of its memory that
//! changed since the previous snapshot, and what the snapshots take in storage.

use std::collections::HashMap;
use std::hint::black_box;
use std::time::{Duration, Instant};

use anyhow::Result;
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
/// Snapshots at each other dirty ratio.
const REPS: usize = 5;
const OTHER: [u32; 3] = [0, 10, 100];
const GOAL_MS: f64 = 5.0;
const MIB: f64 = 1024.0 * 1024.0;

/// One `Executor::snapshot`.
struct Shot {
    index: u64,
    stats: CaptureStats,
    wall: Duration,
}

fn snapshot(ex: &mut Executor, id: &WorkerId) -> Result<Shot> {
    let index = ex.oplog_len(id)?;
    let start = Instant::now();
    let stats = ex.snapshot(id)?;
    Ok(Shot {
        index,
        stats,
        wall: start.elapsed(),
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

pub fn run(ctx: &Ctx) -> Result<Figure> {
    let bar = ctx.progress(
        "capture",
        (COPY_REPS + 1 + SERIES + OTHER.len() * REPS) as u64,
    );
    let copy = copies(&bar);
    let options = ExecutorOptions {
        snapshot_policy: SnapshotPolicy::Off,
        snapshots_keep: 1 + SERIES + OTHER.len() * REPS,
        ..ExecutorOptions::default()
    };
    let (_dir, mut ex, id) = memory_worker(ctx, options)?;
    let uid = ex.worker_record(&id)?.uid;
    let first = snapshot(&mut ex, &id)?;
    bar.inc(1);
    let base_bytes = stored_page_bytes(ex.storage(), &uid)?;
    let mut series_bytes = 0;
    let mut series: Vec<(u32, Vec<Shot>)> = Vec::new();
    for (percent, n) in [(1, SERIES)].into_iter().chain(OTHER.map(|p| (p, REPS))) {
        let mut shots = Vec::with_capacity(n);
        for _ in 0..n {
            ex.invoke(&id, "touch", &[percent.to_string()], None)?;
            shots.push(snapshot(&mut ex, &id)?);
            bar.inc(1);
        }
        if percent == 1 {
            series_bytes = stored_page_bytes(ex.storage(), &uid)? - base_bytes;
        }
        series.push((percent, shots));
    }
    bar.set_message("per-page costs");
    let [fp, hash, encode, decode] = per_page_us()?;
    bar.finish_and_clear();

    // Pages that differ from the previous snapshot's, and manifest sizes, by oplog index.
    let stored = list(ex.storage(), &uid)?;
    let mut changed = HashMap::new();
    let mut manifest_bytes = HashMap::new();
    let mut previous: Option<Vec<golemw_snapshot::PageRef>> = None;
    for s in stored {
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
    drop(ex);

    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    let model_us = |s: &CaptureStats| {
        (s.pages_total as f64 * fp + s.pages_new as f64 * (hash + encode)) / cores
    };
    let mut table = Table::new(&[
        "dirty (share of 4 KiB chunks touch rewrote)",
        "snapshots",
        "64 KiB pages changed",
        "pages written",
        "MiB written",
        "capture_us ms",
        "Executor::snapshot wall ms",
        "capture × memcpy 64 MiB",
        "model ms",
    ]);
    let mut row = |what: String, shots: &[&Shot]| {
        let med =
            |f: &dyn Fn(&Shot) -> f64| median(&shots.iter().map(|s| f(s)).collect::<Vec<_>>());
        let capture = med(&|s| s.stats.capture_us as f64);
        table.row(vec![
            what,
            shots.len().to_string(),
            fmt(med(&|s| changed[&s.index])),
            fmt(med(&|s| s.stats.pages_new as f64)),
            fmt(med(&|s| s.stats.bytes_new as f64) / MIB),
            fmt(capture / 1000.0),
            fmt(med(&|s| s.wall.as_secs_f64() * 1e6) / 1000.0),
            format!("{}×", fmt(capture / copy.faulted)),
            fmt(med(&|s| model_us(&s.stats)) / 1000.0),
        ]);
        capture
    };
    row("first snapshot (every page new)".into(), &[&first]);
    let mut capture_ms = HashMap::new();
    let mut sorted: Vec<&(u32, Vec<Shot>)> = series.iter().collect();
    sorted.sort_by_key(|(p, _)| *p);
    for (percent, shots) in sorted {
        let c = row(format!("{percent}%"), &shots.iter().collect::<Vec<_>>());
        capture_ms.insert(*percent, c / 1000.0);
    }
    for (what, t) in [
        ("baseline: memcpy 64 MiB into faulted memory", copy.faulted),
        ("baseline: memcpy 64 MiB into fresh memory", copy.fresh),
    ] {
        let mut cells = vec![String::new(); 9];
        cells[0] = what.into();
        cells[5] = fmt(t / 1000.0);
        cells[7] = format!("{}×", fmt(t / copy.faulted));
        table.row(cells);
    }

    let one = &series[0].1;
    let manifests: u64 = one.iter().map(|s| manifest_bytes[&s.index]).sum();
    let memory_bytes = first.stats.pages_total as f64 * PAGE_BYTES as f64;
    let mut storage = Table::new(&["storage", "MiB", "per snapshot MiB"]);
    let mib = |b: f64| fmt(b / MIB);
    let mut srow = |what: &str, bytes: f64, n: f64| {
        storage.row(vec![what.into(), mib(bytes), mib(bytes / n)]);
    };
    srow(
        "first snapshot: pages (compressed when it helps)",
        base_bytes as f64,
        1.0,
    );
    let n = SERIES as f64;
    srow(
        &format!("{SERIES} snapshots at 1%: new pages"),
        series_bytes as f64,
        n,
    );
    srow(
        &format!("{SERIES} snapshots at 1%: manifests"),
        manifests as f64,
        n,
    );
    let total = (series_bytes + manifests) as f64;
    srow(&format!("{SERIES} snapshots at 1%: total"), total, n);
    srow(
        &format!("for comparison: {SERIES} full copies of linear memory"),
        n * memory_bytes,
        n,
    );
    srow(
        &format!("for comparison: bytes touch(1) rewrote, {SERIES} times"),
        n * 0.01 * MEMORY_MIB as f64 * MIB,
        n,
    );

    let mut costs = Table::new(&["step, one 64 KiB page, one thread", "µs/page", "GB/s"]);
    for (what, t) in [
        ("fingerprint (XXH3-128), every page", fp),
        ("hash (BLAKE3), changed pages", hash),
        ("encode (zstd-1 attempt + CRC32), new pages", encode),
        ("decode (CRC32 + copy), restore", decode),
    ] {
        costs.row(vec![what.into(), fmt(t), fmt(PAGE_BYTES as f64 / t / 1e3)]);
    }

    let pages_new = |shots: &[Shot]| {
        median(
            &shots
                .iter()
                .map(|s| s.stats.pages_new as f64)
                .collect::<Vec<_>>(),
        )
    };
    let zero = &series.iter().find(|(p, _)| *p == 0).expect("a 0% series").1;
    let only_changed = series
        .iter()
        .flat_map(|(_, shots)| shots)
        .all(|s| s.stats.pages_new as f64 <= changed[&s.index]);
    let written = median(
        &one.iter()
            .map(|s| s.stats.bytes_new as f64)
            .collect::<Vec<_>>(),
    );
    let pages_changed = median(&one.iter().map(|s| changed[&s.index]).collect::<Vec<_>>());
    Ok(Figure {
        id: "capture",
        title: "6. Snapshot capture cost against dirty ratio (64 MiB worker)".into(),
        method: format!(
            "A `memory` worker with {MEMORY_MIB} MiB of incompressible buffers, \
             `ExecutorOptions {{ snapshot_policy: off, snapshots_keep: {}, .. }}` (fsync on, \
             the default). A first snapshot, then {SERIES} rounds of `touch(1)` + \
             `Executor::snapshot`, then {REPS} rounds each at 0%, 10% and 100%. `touch(p)` \
             rewrites p% of the 4 KiB chunks of the buffers, evenly spread. capture_us is the \
             CaptureStats time (fingerprint, hash, compress; no LMDB); the wall time of \
             `Executor::snapshot` adds the LMDB write, its fsync and the pruning check. \"64 KiB \
             pages changed\" compares each manifest's page table with the previous one. Storage: \
             `snapshots::stored_page_bytes` before and after the 1% series plus the manifests' \
             encoded sizes. Per-page costs: the snapshot crate's functions on 64 MiB of noise, \
             one thread, median of 3 passes; \"model\" = (pages × fingerprint + pages written × \
             (hash + encode)) / {cores} cores. Medians.",
            1 + SERIES + OTHER.len() * REPS
        ),
        tables: vec![table, storage, costs],
        goals: vec![
            Goal::under(
                "capture at 1% dirty (capture_us, median)",
                capture_ms[&1],
                GOAL_MS,
                "ms",
            ),
            Goal {
                target: "snapshots store only changed pages".into(),
                met: only_changed,
                detail: format!(
                    "{} every snapshot (1% series: median {} of {} pages changed and written, \
                     {} MiB per snapshot — {:.1}× the ~{} MiB touch(1) rewrote, because a \
                     snapshot page is 64 KiB and touch(1)'s 4 KiB chunks land on ~1 page in {:.1})",
                    if only_changed { "in" } else { "NOT in" },
                    fmt(pages_changed),
                    first.stats.pages_stored,
                    fmt(written / MIB),
                    written / (0.01 * MEMORY_MIB as f64 * MIB),
                    fmt(0.01 * MEMORY_MIB as f64),
                    first.stats.pages_stored as f64 / pages_changed
                ),
            },
        ],
        notes: vec![
            format!(
                "Storage for {SERIES} snapshots at 1%: {} MiB ({} bytes) on top of the first \
                 snapshot's {} MiB.",
                mib(total),
                count(total),
                mib(base_bytes as f64)
            ),
            format!(
                "Where the 1% capture goes: the 0% capture (fingerprint every page, write \
                 nothing) costs {} ms; each further page written costs {} µs ((capture 1% − \
                 capture 0%) / (pages 1% − pages 0%)). The wall time of Executor::snapshot adds \
                 {} ms at 1% over capture_us: the LMDB write of the new pages, the fsync, and \
                 listing (decoding) every kept manifest to decide on pruning.",
                fmt(capture_ms[&0]),
                fmt(1000.0 * (capture_ms[&1] - capture_ms[&0]) / (pages_new(one) - pages_new(zero))),
                fmt(median(
                    &one.iter()
                        .map(|s| s.wall.as_secs_f64() * 1e3)
                        .collect::<Vec<_>>()
                ) - capture_ms[&1])
            ),
        ],
        metrics: vec![
            ("capture_1pct_ms".into(), capture_ms[&1]),
            ("capture_10pct_ms".into(), capture_ms[&10]),
            ("capture_100pct_ms".into(), capture_ms[&100]),
            ("capture_0pct_ms".into(), capture_ms[&0]),
            ("storage_100_snapshots_1pct_bytes".into(), total),
            ("fingerprint_us_per_page".into(), fp),
            ("blake3_us_per_page".into(), hash),
            ("encode_us_per_page".into(), encode),
            ("decode_us_per_page".into(), decode),
        ],
    })
}
