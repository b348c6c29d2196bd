//! Figure 1: the durability overhead per recorded host call.
//!
//! The `clocks` guest's `many-clocks(n)` reads the WASI wall clock n times. One invocation of
//! many-clocks(1000) and of many-clocks(0) is timed, interleaved, in four configurations: golemw
//! with a durable commit (fsync) at invocation end, golemw with a batched commit (no fsync), the
//! same under `golemw serve`'s default limits, and plain Wasmer calling the core export directly. t(0) is the fixed cost per invocation;
//! (t(1000) - t(0)) / 1000 the marginal cost of one host call.

use std::time::Instant;

use anyhow::{ensure, Result};
use wasmer::Value;

use crate::plain::PlainWasmer;
use crate::report::{Figure, Goal, Table};
use crate::stats::{fmt, ratio, Samples};
use crate::workers::BenchWorker;
use crate::Ctx;

const CALLS: u32 = 1000;
const WARMUP: usize = 20;
/// The goal per recorded call, µs.
const GOAL_US: f64 = 2.0;
/// What Golem 1.0 measured per recorded call, µs.
const GOLEM_1_US: f64 = 90.0;
const EXPORT: &str = "golemw:clocks/api#many-clocks";

/// One configuration: a name and a way to run many-clocks(n) once.
struct Config<'a> {
    name: &'static str,
    call: Box<dyn FnMut(u32) -> Result<()> + 'a>,
    /// Timed samples for n = CALLS and n = 0.
    full: Samples,
    empty: Samples,
}

fn golemw(worker: &mut BenchWorker) -> impl FnMut(u32) -> Result<()> + '_ {
    move |n| {
        let result = worker.invoke(EXPORT, &[n.to_string()])?;
        ensure!(result.is_some(), "many-clocks returned nothing");
        Ok(())
    }
}

pub fn run(ctx: &Ctx) -> Result<Figure> {
    let wasm = std::fs::read(golemw_tests::guest_wasm("clocks"))?;
    let mut durable = BenchWorker::new(ctx, &wasm, true)?;
    let mut batched = BenchWorker::new(ctx, &wasm, false)?;
    let mut limited = BenchWorker::with_limits(ctx, &wasm, false, true)?;
    let mut plain = PlainWasmer::new(&wasm)?;
    let func = plain.function(EXPORT)?;
    let plain_call = move |n: u32| -> Result<()> {
        plain.call(&func, &[Value::I32(n as i32)])?;
        Ok(())
    };
    let mut configs = [
        config("golemw, durable commit (fsync)", golemw(&mut durable)),
        config("golemw, batched commit (no fsync)", golemw(&mut batched)),
        config(LIMITED, golemw(&mut limited)),
        config("plain Wasmer (no durability)", plain_call),
    ];
    let bar = ctx.progress("host-calls", (ctx.runs + WARMUP) as u64);
    for round in 0..WARMUP + ctx.runs {
        // A different order each round: no configuration always runs first, or after another.
        for which in crate::stats::round_order(round, configs.len()) {
            let c = &mut configs[which];
            for n in [CALLS, 0] {
                let start = Instant::now();
                (c.call)(n)?;
                let elapsed = start.elapsed();
                if round >= WARMUP {
                    if n == 0 { &mut c.empty } else { &mut c.full }.push(elapsed);
                }
            }
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    let summaries: Vec<Summary> = configs.iter().map(Summary::of).collect();
    drop(configs);
    let before = durable.oplog_len()?;
    golemw(&mut durable)(CALLS)?;
    let entries_per_invocation = durable.oplog_len()? - before;
    Ok(figure(ctx, &summaries, entries_per_invocation))
}

/// Medians and p99s of one configuration, µs.
struct Summary {
    name: &'static str,
    full: f64,
    full_p99: f64,
    empty: f64,
    empty_p99: f64,
}

impl Summary {
    fn of(c: &Config<'_>) -> Summary {
        Summary {
            name: c.name,
            full: c.full.median(),
            full_p99: c.full.p99(),
            empty: c.empty.median(),
            empty_p99: c.empty.p99(),
        }
    }

    /// Marginal µs per host call: (t(CALLS) - t(0)) / CALLS.
    fn marginal(&self) -> f64 {
        (self.full - self.empty) / f64::from(CALLS)
    }
}

fn figure(ctx: &Ctx, rows: &[Summary], entries_per_invocation: u64) -> Figure {
    let plain = rows.last().expect("plain Wasmer is the last configuration");
    let mut table = Table::new(&[
        "configuration",
        "many-clocks(1000) median µs",
        "p99 µs",
        "many-clocks(0) median µs",
        "p99 µs",
        "µs/call (t/1000)",
        "marginal µs/call",
        "× plain (t1000)",
        "× plain (marginal)",
    ]);
    let mut metrics = Vec::new();
    for r in rows {
        table.row(vec![
            r.name.to_string(),
            fmt(r.full),
            fmt(r.full_p99),
            fmt(r.empty),
            fmt(r.empty_p99),
            fmt(r.full / f64::from(CALLS)),
            fmt(r.marginal()),
            ratio(r.full, plain.full),
            ratio(r.marginal(), plain.marginal()),
        ]);
        for (what, v) in [
            ("t1000_median_us", r.full),
            ("t1000_p99_us", r.full_p99),
            ("t0_median_us", r.empty),
            ("t0_p99_us", r.empty_p99),
            ("marginal_us_per_call", r.marginal()),
        ] {
            metrics.push((format!("{}: {what}", r.name), v));
        }
    }
    let durable = &rows[0];
    let batched = &rows[1];
    let limited = &rows[2];
    Figure {
        id: "host-calls",
        title: "1. Durability overhead per recorded host call".into(),
        method: format!(
            "One invocation of the `clocks` guest's `many-clocks(n)` (n WASI `clock_time_get` \
             calls of the wall clock), timed end to end, {} runs per configuration after {WARMUP} \
             warm-up runs, configurations interleaved in an order shuffled each round. golemw runs through `Executor::invoke` on an \
             active worker (WAVE params, oplog entries, canonical ABI, commit of the block and the \
             worker record in one LMDB transaction); plain Wasmer calls \
             the core export `{EXPORT}` directly on the same module with wasmer-wasix's own \
             clock. t(0) is the fixed cost of an invocation; the marginal cost of one host call is \
             (t(1000) − t(0)) / 1000 from the medians.",
            ctx.runs
        ),
        tables: vec![table],
        goals: vec![
            Goal::under(
                "marginal cost per recorded host call (golemw, durable commit)",
                durable.marginal(),
                GOAL_US,
                "µs",
            ),
            Goal::under(
                "cost of serve's default limits: many-clocks(1000) with ÷ without (batched, medians)",
                limited.full / batched.full,
                1.05,
                "×",
            ),
        ],
        notes: vec![
            format!(
                "Limits (`{LIMITED}`): the watchdog's guard around each guest call, Wasmer's \
                 memory tunables, and the interrupt check every recorded host call makes. With \
                 them: t(1000) {} µs, t(0) {} µs, marginal {} µs/call; without (batched): {} µs, \
                 {} µs, {} µs/call.",
                fmt(limited.full),
                fmt(limited.empty),
                fmt(limited.marginal()),
                fmt(batched.full),
                fmt(batched.empty),
                fmt(batched.marginal())
            ),
            format!(
                "Recording overhead per call over plain Wasmer (marginal golemw − marginal plain): \
                 {} µs durable, {} µs batched.",
                fmt(durable.marginal() - plain.marginal()),
                fmt(batched.marginal() - plain.marginal())
            ),
            format!(
                "Golem 1.0 measured about {GOLEM_1_US} µs per recorded call; golemw's marginal \
                 cost is {:.0}× less.",
                GOLEM_1_US / durable.marginal()
            ),
            format!(
                "Fixed cost of an invocation (t(0)): {} µs durable, {} µs batched, {} µs plain; \
                 durable − batched ({} µs) is the fsync.",
                fmt(durable.empty),
                fmt(batched.empty),
                fmt(plain.empty),
                fmt(durable.empty - batched.empty)
            ),
            format!(
                "Durable − batched marginal: {} µs per call, i.e. {} µs more fsync for a \
                 1000-entry block than for a 2-entry one (more dirty pages to write).",
                fmt(durable.marginal() - batched.marginal()),
                fmt((durable.marginal() - batched.marginal()) * f64::from(CALLS))
            ),
            format!(
                "Oplog entries per many-clocks(1000) invocation: {entries_per_invocation} \
                 (exported-function-invoked, one per host call, exported-function-completed)."
            ),
        ],
        metrics,
    }
}

/// The configuration under `golemw serve`'s default limits.
const LIMITED: &str = "golemw, batched, serve's default limits (deadline 60 s, 1 GiB)";

fn config<'a>(name: &'static str, call: impl FnMut(u32) -> Result<()> + 'a) -> Config<'a> {
    Config {
        name,
        call: Box::new(call),
        full: Samples::default(),
        empty: Samples::default(),
    }
}
