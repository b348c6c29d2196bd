//! Figure 3: latency of one invocation of a trivial export (`counter`'s `get`, no host calls),
//! in process, durable commit versus batched, against plain Wasmer calling the core export.

use std::time::{Duration, Instant};

use anyhow::{ensure, Result};
use golemw_runtime::oplog::store::{self, BlockEncoder};
use golemw_runtime::oplog::{now_ms, OplogEntry};
use golemw_runtime::storage::Storage;
use lmdb::WriteFlags;
use uuid::Uuid;

use crate::plain::PlainWasmer;
use crate::report::{Figure, Goal, Table};
use crate::stats::{fmt, ratio, Samples};
use crate::workers::BenchWorker;
use crate::Ctx;

const EXPORT: &str = "golemw:counter/api#get";
const WARMUP: usize = 50;

pub fn run(ctx: &Ctx) -> Result<Figure> {
    let wasm = std::fs::read(golemw_tests::guest_wasm("counter"))?;
    let mut durable = BenchWorker::new(ctx, &wasm, true)?;
    let mut batched = BenchWorker::new(ctx, &wasm, false)?;
    let mut limited = BenchWorker::with_limits(ctx, &wasm, false, true)?;
    // The same guest built as a component (`wasm32-wasip2`), batched like `batched`.
    let component_wasm = std::fs::read(golemw_tests::guest_component("counter"))?;
    let mut component = BenchWorker::new(ctx, &component_wasm, false)?;
    let mut plain = PlainWasmer::new(&wasm)?;
    let func = plain.function(EXPORT)?;
    let mut samples = [(); 5].map(|_| Samples::with_capacity(ctx.latency_runs));
    let bar = ctx.progress("invocation", (WARMUP + ctx.latency_runs) as u64);
    for round in 0..WARMUP + ctx.latency_runs {
        for which in crate::stats::round_order(round, 5) {
            let start = Instant::now();
            match which {
                0 => ensure!(durable.invoke(EXPORT, &[])?.is_some(), "no result"),
                1 => ensure!(batched.invoke(EXPORT, &[])?.is_some(), "no result"),
                2 => ensure!(limited.invoke(EXPORT, &[])?.is_some(), "no result"),
                4 => ensure!(component.invoke(EXPORT, &[])?.is_some(), "no result"),
                _ => ensure!(plain.call(&func, &[])?.len() == 1, "no result"),
            }
            let elapsed = start.elapsed();
            if round >= WARMUP {
                samples[which].push(elapsed);
            }
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    let parts = breakdown(ctx)?;
    Ok(figure(ctx, &samples, &parts))
}

/// The parts of a commit, timed alone on fresh `Storage`s: encoding the two entries of a `get`
/// invocation into a block, the LMDB write transaction of a commit (the block, a worker record,
/// an invocation result) without fsync, and the same transaction committed durably (its data
/// fsync, then the meta page's).
fn breakdown(ctx: &Ctx) -> Result<[Samples; 3]> {
    let dir = ctx.temp_dir()?;
    let mut batched = Storage::open(dir.path())?;
    batched.set_fsync(false)?;
    let durable_dir = ctx.temp_dir()?;
    let durable = Storage::open(durable_dir.path())?;
    let tables = batched.tables();
    let uid = Uuid::new_v4();
    let mut encoder = BlockEncoder::default();
    let mut parts = [(); 3].map(|_| Samples::with_capacity(ctx.latency_runs));
    for i in 0..(WARMUP + ctx.latency_runs) as u64 {
        let entries = [
            OplogEntry::ExportedFunctionInvoked {
                timestamp_ms: now_ms(),
                function: EXPORT.into(),
                params: Vec::new(),
                idempotency_key: Uuid::new_v4().to_string(),
            },
            OplogEntry::ExportedFunctionCompleted {
                timestamp_ms: now_ms(),
                result: Some(i.to_string()),
            },
        ];
        let mut timed = [Duration::ZERO; 3];
        let start = Instant::now();
        let block = encoder.encode(&entries);
        timed[0] = start.elapsed();
        let commit = |storage: &Storage| {
            storage.write(|txn| {
                store::append_block(txn, storage, &uid, 2 * i + 1, &block, 2)?;
                txn.put(
                    tables.workers,
                    &uid.as_bytes(),
                    &[7u8; 160],
                    WriteFlags::empty(),
                )?;
                Ok(())
            })
        };
        let start = Instant::now();
        commit(&batched)?;
        timed[1] = start.elapsed();
        let start = Instant::now();
        commit(&durable)?;
        durable.sync()?;
        timed[2] = start.elapsed();
        if i >= WARMUP as u64 {
            for (samples, t) in parts.iter_mut().zip(timed) {
                samples.push(t);
            }
        }
    }
    Ok(parts)
}

fn figure(ctx: &Ctx, samples: &[Samples; 5], parts: &[Samples; 3]) -> Figure {
    let names = [
        "golemw, durable commit (fsync)",
        "golemw, batched commit (no fsync)",
        "golemw, batched, serve's default limits (deadline 60 s, 1 GiB)",
        "plain Wasmer (core export call)",
        "golemw, batched, the guest as a component (wasm32-wasip2)",
    ];
    let plain = samples[3].median();
    let limited = samples[2].median();
    let batched = samples[1].median();
    let component = samples[4].median();
    let mut table = Table::new(&[
        "configuration",
        "p50 µs",
        "p99 µs",
        "× plain Wasmer (p50)",
        "× batched (p50)",
    ]);
    let mut metrics = Vec::new();
    for (name, s) in names.iter().zip(samples) {
        table.row(vec![
            name.to_string(),
            fmt(s.median()),
            fmt(s.p99()),
            ratio(s.median(), plain),
            ratio(s.median(), batched),
        ]);
        metrics.push((format!("{name}: p50_us"), s.median()));
        metrics.push((format!("{name}: p99_us"), s.p99()));
    }
    let mut split = Table::new(&["part of a commit, timed alone", "p50 µs", "p99 µs"]);
    let part_names = [
        "BlockEncoder::encode of the 2 entries (postcard + zstd)",
        "LMDB write transaction: block + record, no fsync",
        "the same, durable: its data fsync, then Storage::sync (the meta page's)",
    ];
    for (name, s) in part_names.iter().zip(parts) {
        split.row(vec![name.to_string(), fmt(s.median()), fmt(s.p99())]);
        metrics.push((format!("{name}: p50_us"), s.median()));
    }
    Figure {
        id: "invocation",
        title: "3. Invocation latency of a trivial export".into(),
        method: format!(
            "One invocation of the `counter` guest's `get` (reads a static, no host calls) through \
             `Executor::invoke` on an active worker, {} runs per configuration after {WARMUP} \
             warm-up runs, interleaved in an order shuffled each round. Each golemw invocation appends two entries (invoked, \
             completed) and commits them with the worker record in one LMDB transaction (an \
             invocation given an idempotency key also stores its result under the key), made durable (two fsyncs) in the durable configuration. Plain Wasmer calls the core \
             export `{EXPORT}` directly (golem:api imports stubbed; `get` calls none). The component \
             row runs the same guest source built with `--target wasm32-wasip2` (a component whose \
             main module imports WASI 0.2), loaded by `component add` like any component. The second table \
             times the parts of a commit alone on a fresh data directory, same number of runs.",
            ctx.latency_runs
        ),
        tables: vec![table, split],
        goals: vec![
            Goal::under(
                "cost of serve's default limits on an invocation: p50 with ÷ without (batched)",
                limited / batched,
                1.05,
                "×",
            ),
            Goal::under(
                "a component costs no more than its core module: p50 component ÷ core (batched; 5% for noise)",
                component / batched,
                1.05,
                "×",
            ),
        ],
        notes: vec![
            format!(
                "Limits: the watchdog's guard around the guest call (a map entry under a lock, \
                 taken off when the call returns) and Wasmer's memory tunables: {} µs at p50 \
                 with them, {} µs without ({} µs).",
                fmt(limited),
                fmt(batched),
                fmt(limited - batched)
            ),
            format!(
                "Durable − batched: {} µs at p50, two fsyncs: LMDB syncs a commit's data \
                 before writing the meta page that points at it, then the meta page (the durable \
                 commit alone: {} µs, against {} µs without fsync).",
                fmt(samples[0].median() - batched),
                fmt(parts[2].median()),
                fmt(parts[1].median())
            ),
            format!(
                "Batched − plain Wasmer: {} µs at p50, of which the LMDB transaction ({} µs alone) \
                 and the encoding ({} µs alone) are {} µs; the remainder, {} µs (within the noise \
                 of this subtraction), is the executor and worker around the call (WAVE parsing \
                 and printing, idempotency key, oplog entries, canonical ABI).",
                fmt(batched - plain),
                fmt(parts[1].median()),
                fmt(parts[0].median()),
                fmt(parts[0].median() + parts[1].median()),
                fmt(batched - plain - parts[0].median() - parts[1].median())
            ),
        ],
        metrics,
    }
}
