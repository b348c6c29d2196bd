//! Promises on the command line: reporting a suspended invocation, and
//! `golemw worker complete-promise`.

use std::path::PathBuf;

use anyhow::{Context as _, Result};
use golemw_runtime::promises::{PromiseId, ResumptionOutcome};
use golemw_runtime::{Deferred, Executor};

use super::{worker_id, Context};
use crate::output;

/// Reports an invocation that is not over (the process then exits cleanly: nothing failed):
/// suspended on a promise, with how to complete it; asleep, queued or waiting for a retry.
pub fn report_deferred(ctx: &Context, deferred: Deferred) {
    let Deferred::Suspended {
        worker,
        promise,
        idempotency_key,
    } = deferred
    else {
        if ctx.json {
            let status = match &deferred {
                Deferred::Sleeping { .. } => "sleeping",
                Deferred::Queued { .. } => "queued",
                _ => "retry-scheduled",
            };
            output::json(&serde_json::json!({
                "status": status,
                "worker": deferred.worker().to_string(),
                "idempotency_key": deferred.idempotency_key(),
                "message": deferred.to_string(),
            }));
        } else {
            println!("{deferred}");
        }
        return;
    };
    if ctx.json {
        output::json(&serde_json::json!({
            "status": "suspended",
            "worker": worker.to_string(),
            "idempotency_key": idempotency_key,
            "promise": { "worker": promise.worker.to_string(), "oplog_idx": promise.oplog_idx },
        }));
    } else {
        println!("worker {worker} is suspended: invocation {idempotency_key} awaits {promise}");
        println!(
            "complete it with `golemw worker complete-promise {} {} DATA`; the invocation then \
             finishes and `golemw worker invoke ... --idempotency-key {idempotency_key}` returns \
             its result",
            promise.worker, promise.oplog_idx
        );
    }
}

/// `golemw worker complete-promise COMPONENT/WORKER OPLOG-INDEX (DATA | --data-file FILE)`.
pub fn complete(
    ctx: &Context,
    executor: &Executor,
    worker: &str,
    oplog_idx: u64,
    data: Option<String>,
    data_file: Option<PathBuf>,
) -> Result<()> {
    let id = PromiseId {
        worker: worker_id(executor, worker)?,
        oplog_idx,
    };
    let data = match (data, data_file) {
        (Some(text), None) => text.into_bytes(),
        (None, Some(path)) => {
            std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?
        }
        _ => anyhow::bail!("give the payload as DATA or with --data-file FILE (one of them)"),
    };
    let outcome = executor.complete_promise(&id, &data)?;
    if ctx.json {
        output::json(&outcome);
        return Ok(());
    }
    if outcome.completed {
        println!("completed {id} ({} bytes)", data.len());
    } else {
        println!("{id} was already completed; nothing changed");
    }
    for resumed in &outcome.resumed {
        let invocation = format!(
            "worker {} resumed: invocation {}",
            resumed.worker, resumed.idempotency_key
        );
        match &resumed.outcome {
            ResumptionOutcome::Finished { result: Some(r) } => {
                println!("{invocation} returned {r}")
            }
            ResumptionOutcome::Finished { result: None } => println!("{invocation} finished"),
            ResumptionOutcome::Trapped { error } => println!("{invocation} trapped: {error}"),
            ResumptionOutcome::SuspendedAgain { promise } => {
                println!("{invocation} is suspended again, awaiting {promise}")
            }
            ResumptionOutcome::Sleeping { until_ms } => {
                println!("{invocation} sleeps until {until_ms} ms since the epoch")
            }
            ResumptionOutcome::RetryScheduled { attempt, delay_ms } => {
                println!("{invocation} trapped; retry {attempt} is scheduled in {delay_ms} ms")
            }
            ResumptionOutcome::Failed { error } => {
                println!("worker {} could not be resumed: {error}", resumed.worker)
            }
        }
    }
    Ok(())
}
