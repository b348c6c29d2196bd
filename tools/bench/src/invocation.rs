//! Figure 3: latency of one invocation of a trivial export (`counter`'s `get`, no host calls),
//! in process, durable commit versus batched, against plain Wasmer calling the core export.

use std::time::Instant;

use anyhow::{ensure, Result};

use crate::plain::PlainWasmer;
use crate::report::{Figure, Table};
use crate::stats::{fmt, ratio, Samples};
use crate::workers::BenchWorker;
use crate::Ctx;

const EXPORT: &str = "golemw:counter/api#get";
const WARMUP: usize = 50;

pub fn run(ctx: &Ctx) -> Result<Figure> {
    let wasm = std::fs::read(golemw_tests::guest_wasm("counter"))?;
    let mut durable = BenchWorker::new(ctx, &wasm, true)?;
    let mut batched = BenchWorker::new(ctx, &wasm, false)?;
    let mut plain = PlainWasmer::new(&wasm)?;
    let func = plain.function(EXPORT)?;
    let mut samples = [(); 3].map(|_| Samples::with_capacity(ctx.latency_runs));
    let bar = ctx.progress("invocation", (WARMUP + ctx.latency_runs) as u64);
    for round in 0..WARMUP + ctx.latency_runs {
        for k in 0..3 {
            let which = (round + k) % 3;
            let start = Instant::now();
            match which {
                0 => ensure!(durable.invoke(EXPORT, &[])?.is_some(), "no result"),
                1 => ensure!(batched.invoke(EXPORT, &[])?.is_some(), "no result"),
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
    Ok(figure(ctx, &samples))
}

fn figure(ctx: &Ctx, samples: &[Samples; 3]) -> Figure {
    let names = [
        "golemw, durable commit (fsync)",
        "golemw, batched commit (no fsync)",
        "plain Wasmer (core export call)",
    ];
    let plain = samples[2].median();
    let batched = samples[1].median();
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
    Figure {
        id: "invocation",
        title: "3. Invocation latency of a trivial export".into(),
        method: format!(
            "One invocation of the `counter` guest's `get` (reads a static, no host calls) through \
             `Executor::invoke` on an active worker, {} runs per configuration after {WARMUP} \
             warm-up runs, interleaved. Each golemw invocation appends two entries (invoked, \
             completed) and commits them with the worker record and the idempotency result in one \
             LMDB transaction, fsynced in the durable configuration. Plain Wasmer calls the core \
             export `{EXPORT}` directly (golem:api imports stubbed; `get` calls none).",
            ctx.latency_runs
        ),
        tables: vec![table],
        goals: Vec::new(),
        notes: vec![format!(
            "The fsync costs {} µs at p50 (durable − batched); the rest of golemw's fixed cost \
             ({} µs over plain Wasmer, batched) is WAVE parsing and printing, the oplog entries, \
             the canonical ABI and the LMDB transaction.",
            fmt(samples[0].median() - batched),
            fmt(batched - plain)
        )],
        metrics,
    }
}
