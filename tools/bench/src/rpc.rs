//! Figure: worker-to-worker calls (`golem:rpc` `invoke-and-await`) against a local invocation
//! of the same function, one caller at a time and with many at once (durable, commits
//! batched), and a fan-out of 100 async calls against 100 local invocations one after another.

use crate::workers::Completes;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{ensure, Result};
use golemw_runtime::{Executor, ExecutorOptions, WorkerId};

use crate::report::{Figure, Goal, Table};
use crate::stats::{fmt, ratio, Samples};
use crate::throughput::run_clients;
use crate::Ctx;

/// Concurrent callers per configuration, each with a callee of its own.
const CLIENTS: &[usize] = &[1, 16];
/// Fan-out width and repetitions.
const FAN_OUT: usize = 100;
const FAN_OUT_REPS: usize = 10;
const ADD: &str = "golemw:rpc-callee/api.{add}";

/// What one configuration measured.
struct Run {
    clients: usize,
    local: Samples,
    local_seconds: f64,
    rpc: Samples,
    rpc_seconds: f64,
}

pub fn run(ctx: &Ctx) -> Result<Figure> {
    let dir = ctx.temp_dir()?;
    // Durable (fsync at every commit), as a server runs.
    let ex = Executor::open(dir.path(), ExecutorOptions::default())?;
    for name in ["rpc-caller", "rpc-callee"] {
        let wasm = std::fs::read(golemw_tests::guest_wasm(name))?;
        ex.components().add(name, &wasm)?;
    }
    let bar = ctx.progress("rpc", CLIENTS.len() as u64 + 1);
    let mut runs = Vec::new();
    for &clients in CLIENTS {
        runs.push(measure(&ex, clients)?);
        bar.inc(1);
    }
    let (fan_out, sequential) = fan_out(&ex)?;
    bar.finish_and_clear();

    let mut table = Table::new(&[
        "callers",
        "local p50 ms",
        "local p99 ms",
        "local inv/s",
        "RPC p50 ms",
        "RPC p99 ms",
        "RPC calls/s",
        "RPC p50 ÷ local p50",
    ]);
    let mut metrics = Vec::new();
    for run in &runs {
        let (local_p50, rpc_p50) = (run.local.median() / 1000.0, run.rpc.median() / 1000.0);
        table.row(vec![
            run.clients.to_string(),
            fmt(local_p50),
            fmt(run.local.p99() / 1000.0),
            crate::stats::count(run.local.count() as f64 / run.local_seconds),
            fmt(rpc_p50),
            fmt(run.rpc.p99() / 1000.0),
            crate::stats::count(run.rpc.count() as f64 / run.rpc_seconds),
            ratio(rpc_p50, local_p50),
        ]);
        metrics.push((format!("local_{}_p50_ms", run.clients), local_p50));
        metrics.push((format!("rpc_{}_p50_ms", run.clients), rpc_p50));
        metrics.push((
            format!("rpc_{}_p99_ms", run.clients),
            run.rpc.p99() / 1000.0,
        ));
    }
    let mut fan_table = Table::new(&["work", "median ms", "per call ms", "× the fan-out"]);
    let (fan_ms, seq_ms) = (fan_out.median() / 1000.0, sequential.median() / 1000.0);
    fan_table.row(vec![
        format!("fan-out: {FAN_OUT} async calls, awaited with poll"),
        fmt(fan_ms),
        fmt(fan_ms / FAN_OUT as f64),
        "1.00×".into(),
    ]);
    fan_table.row(vec![
        format!("{FAN_OUT} local invocations one after another"),
        fmt(seq_ms),
        fmt(seq_ms / FAN_OUT as f64),
        ratio(seq_ms, fan_ms),
    ]);
    metrics.push(("fan_out_100_ms".into(), fan_ms));
    metrics.push(("sequential_100_ms".into(), seq_ms));
    let goals = runs
        .iter()
        .map(|run| {
            Goal::under(
                &format!(
                    "durable RPC p50 ÷ local durable invocation p50, {} caller(s) at once,",
                    run.clients
                ),
                run.rpc.median() / run.local.median(),
                2.0,
                "×",
            )
        })
        .collect();
    let notes = vec![
        "An RPC is two invocations: the callee's, committed without an fsync of its own (the \
         caller's durable commit comes later in the same LMDB environment, so it makes the \
         callee's durable too before anyone outside learns the result), and the caller's, \
         fsynced before it answers; plus a hop to a call thread and back. The local baseline is \
         one invocation and one durable commit."
            .into(),
        "With many callers on 2 cores the run is CPU-bound: an RPC costs about the CPU of two \
         local invocations (compare the calls/s with the invocations/s), so its p50 cannot fall \
         below about twice a local one there; the ratio above 2× is queueing among the callers' \
         and call threads."
            .into(),
        "Anchor: Golem's published worker-to-worker echo is 4.4 ms for one worker (v1.0, Redis \
         in memory), and its nightly benchmark 100-148 ms p50 against 1.5 ms for a direct call."
            .into(),
    ];
    Ok(Figure {
        id: "rpc",
        title: "Worker-to-worker calls".into(),
        method: format!(
            "In process, one executor on a fresh data directory, every commit fsynced. Local: \
             N threads each invoking `add(1)` on a callee worker of its own (`Executor::invoke`, \
             an idempotency key each). RPC: N threads each invoking `add-remote` on a caller \
             worker of its own, which makes a `golem:rpc` `invoke-and-await` of the same `add(1)` \
             on its callee and returns its result (the caller's oplog records the call; the \
             callee runs it under the call's idempotency key). Each configuration: 1 s warm-up, \
             then 4 s measured; latency is the whole invocation as its thread sees it. Fan-out: \
             `fan-out` on a caller, {FAN_OUT} `async-invoke-and-await` calls of `add(1)` on \
             {FAN_OUT} callee workers, awaited with `wasi:io/poll`, against {FAN_OUT} \
             `Executor::invoke` of `add(1)` one after another; {FAN_OUT_REPS} repetitions, \
             median."
        ),
        tables: vec![table, fan_table],
        goals,
        notes,
        metrics,
    })
}

/// `clients` threads of local invocations, then of RPCs.
fn measure(ex: &Arc<Executor>, clients: usize) -> Result<Run> {
    let callees: Vec<WorkerId> = (0..clients)
        .map(|i| ex.worker_id("rpc-callee", &format!("b{clients}-{i}")))
        .collect::<Result<_, _>>()?;
    let callers: Vec<WorkerId> = (0..clients)
        .map(|i| ex.worker_id("rpc-caller", &format!("c{clients}-{i}")))
        .collect::<Result<_, _>>()?;
    let (local, local_seconds) = run_clients(clients, |i, deadline, record| {
        let mut n = 0u64;
        while Instant::now() < deadline {
            let start = Instant::now();
            ex.invoke(&callees[i], ADD, &["1".into()], Some(&format!("l{n}")))
                .done()?;
            record(start.elapsed());
            n += 1;
        }
        Ok(())
    })?;
    let (rpc, rpc_seconds) = run_clients(clients, |i, deadline, record| {
        let target = format!("{:?}", callees[i].uri());
        let mut n = 0u64;
        while Instant::now() < deadline {
            let start = Instant::now();
            let outcome = ex
                .invoke(
                    &callers[i],
                    "add-remote",
                    &[target.clone(), "1".into()],
                    Some(&format!("r{n}")),
                )
                .done()?;
            record(start.elapsed());
            let result = outcome.result.unwrap_or_default();
            ensure!(result.starts_with("ok("), "add-remote answered {result}");
            n += 1;
        }
        Ok(())
    })?;
    Ok(Run {
        clients,
        local,
        local_seconds,
        rpc,
        rpc_seconds,
    })
}

/// Durations (µs) of a fan-out of [`FAN_OUT`] async calls, and of as many local invocations
/// one after another.
fn fan_out(ex: &Arc<Executor>) -> Result<(Samples, Samples)> {
    let targets: Vec<WorkerId> = (0..FAN_OUT)
        .map(|i| ex.worker_id("rpc-callee", &format!("f{i}")))
        .collect::<Result<_, _>>()?;
    let list = format!(
        "[{}]",
        targets
            .iter()
            .map(|t| format!("{:?}", t.uri()))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let caller = ex.worker_id("rpc-caller", "fan")?;
    let (mut fanned, mut sequential) = (Samples::default(), Samples::default());
    // One of each first: workers created and active.
    for rep in 0..=FAN_OUT_REPS {
        let start = Instant::now();
        let answer = ex
            .invoke(&caller, "fan-out", &[list.clone(), "1".into()], None)
            .done()?
            .result
            .unwrap_or_default();
        let took = start.elapsed();
        ensure!(
            answer.matches("ok(").count() == FAN_OUT,
            "fan-out answered {answer}"
        );
        let start = Instant::now();
        for target in &targets {
            ex.invoke(target, ADD, &["1".into()], None).done()?;
        }
        if rep > 0 {
            fanned.push(took);
            sequential.push(start.elapsed());
        }
    }
    Ok((fanned, sequential))
}
