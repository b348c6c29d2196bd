//! `golemw worker new | invoke | get | list | delete | oplog | recover`

use std::process::ExitCode;

use anyhow::{bail, Context as _, Result};
use clap::Subcommand;
use golemw_runtime::oplog::store::BlockRead;
use golemw_runtime::RecoveryMode;

use super::{worker_id, Context};
use crate::output;

#[derive(Subcommand)]
pub enum WorkerCommand {
    /// Create a worker on the latest version of a component.
    New {
        /// COMPONENT/WORKER: component name or UUID, a slash, the new worker's name.
        worker: String,
        /// Environment variable for the worker, fixed for its lifetime (repeatable).
        #[arg(long = "env", value_name = "K=V")]
        env: Vec<String>,
        /// Command-line arguments for the worker (after `--`).
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Invoke a function and print its result as WAVE (creates the worker if needed).
    Invoke {
        /// COMPONENT/WORKER
        worker: String,
        /// `ns:pkg/iface.{func}`, or `func` if unambiguous.
        function: String,
        /// Parameters as WAVE values.
        #[arg(allow_hyphen_values = true)]
        args: Vec<String>,
        /// Run at most once per key: a repeated key returns the stored result.
        #[arg(long)]
        idempotency_key: Option<String>,
    },
    /// Show a worker's metadata: status, version, args, env, retries, oplog length.
    Get {
        /// COMPONENT/WORKER
        worker: String,
    },
    /// List the workers of a component, optionally only those matching a filter.
    List {
        /// Component name or UUID.
        component: String,
        /// Only workers matching EXPR, e.g. `name like 'acc-%' and status == idle or version >= 2`.
        ///
        /// Conditions (the filters of golem:api's get-workers):
        ///   name OP STRING          OP: == (or =), !=, like, not like
        ///   env.VAR OP STRING       OP as for name; false if the worker has no VAR
        ///   status OP STATUS        OP: ==, !=, <, <=, >, >=; statuses in this order:
        ///                           running, idle, suspended, interrupted, retrying, failed, exited
        ///   version OP N            component version
        ///   created-at OP TIME      ms since the Unix epoch, or UTC 2024-05-01[T12:30:00[.123]Z]
        /// Combine with `and` (binds tighter) and `or`, group with parentheses. `like` is SQL's:
        /// `%` matches any run of characters, `_` one character, `\` escapes the next one; the
        /// whole name must match. Values are 'single-' or "double-quoted" (escape quotes with
        /// \), or bare words. Keywords are case-insensitive. `env.'odd name'` quotes a variable.
        #[arg(long, value_name = "EXPR", verbatim_doc_comment)]
        filter: Option<String>,
    },
    /// Delete a worker with its oplog.
    Delete {
        /// COMPONENT/WORKER
        worker: String,
    },
    /// Show a worker's oplog.
    Oplog {
        /// COMPONENT/WORKER
        worker: String,
        /// First index to show (the first entry is 1).
        #[arg(long, default_value_t = 1)]
        from: u64,
        /// How many entries to show.
        #[arg(long, default_value_t = 100)]
        count: usize,
    },
    /// Bring a worker back without invoking anything, and report how: the snapshot used (if
    /// any), entries replayed, bytes restored, time taken.
    Recover {
        /// COMPONENT/WORKER
        worker: String,
        /// Ignore snapshots and replay the whole oplog.
        #[arg(long)]
        full_replay: bool,
    },
}

pub fn run(ctx: &Context, cmd: WorkerCommand) -> Result<ExitCode> {
    let mut executor = ctx.executor()?;
    match cmd {
        WorkerCommand::New { worker, env, args } => {
            let id = worker_id(&executor, &worker)?;
            let env = env
                .iter()
                .map(|kv| {
                    kv.split_once('=')
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .with_context(|| format!("--env {kv:?} is not K=V"))
                })
                .collect::<Result<Vec<_>>>()?;
            let record = executor.create_worker(&id, args, env)?;
            if ctx.json {
                output::json(&record);
            } else {
                println!(
                    "created worker {} on version {}",
                    record.id, record.component_version
                );
            }
        }
        WorkerCommand::Invoke {
            worker,
            function,
            args,
            idempotency_key,
        } => {
            let id = worker_id(&executor, &worker)?;
            let outcome = executor.invoke(&id, &function, &args, idempotency_key.as_deref())?;
            if ctx.json {
                output::json(&serde_json::json!({
                    "result": outcome.result,
                    "from_idempotency_key": outcome.from_idempotency_key,
                }));
            } else if let Some(result) = outcome.result {
                println!("{result}");
            }
        }
        WorkerCommand::Get { worker } => {
            let id = worker_id(&executor, &worker)?;
            let record = executor.worker_record(&id)?;
            let oplog_len = executor.oplog_len(&id)?;
            let latest_snapshot =
                golemw_runtime::snapshots::indexes(executor.storage(), &record.uid)?
                    .last()
                    .copied();
            let blocker = executor.snapshot_blocker(&id)?;
            if ctx.json {
                let mut value = serde_json::to_value(&record)?;
                value["oplog_len"] = oplog_len.into();
                value["uri"] = id.uri().into();
                value["latest_snapshot_index"] = latest_snapshot.into();
                value["snapshots_disabled"] = blocker.clone().into();
                output::json(&value);
            } else {
                println!("worker:            {}", record.id.worker_name);
                println!("component:         {}", record.id.component_id);
                println!("uri:               {}", id.uri());
                println!("status:            {}", record.status.as_str());
                println!("component version: {}", record.component_version);
                println!("args:              {:?}", record.args);
                println!("env:               {:?}", record.env);
                println!(
                    "created:           {}",
                    output::timestamp(record.created_at_ms)
                );
                println!("retry count:       {}", record.retry_count);
                println!("oplog length:      {oplog_len}");
                match latest_snapshot {
                    Some(index) => println!("latest snapshot:   at oplog index {index}"),
                    None => println!("latest snapshot:   none"),
                }
                if let Some(reason) = &blocker {
                    println!("snapshots:         disabled: {reason}");
                }
                if let Some(r) = &record.last_recovery {
                    println!(
                        "last recovery:     {}, {} entries replayed, {:.3} ms",
                        match r.snapshot_index {
                            Some(i) => format!("from snapshot at {i}"),
                            None => "full replay".to_string(),
                        },
                        r.entries_replayed,
                        r.duration_us as f64 / 1000.0
                    );
                }
                if let Some(err) = &record.last_error {
                    println!("last error:        {err}");
                }
            }
        }
        WorkerCommand::List { component, filter } => {
            let filter = filter
                .as_deref()
                .map(crate::filter_expr::parse)
                .transpose()?;
            let id = executor.components().resolve_id(&component)?;
            let mut workers = executor.list_workers(&id)?;
            if let Some(filter) = &filter {
                workers.retain(|w| filter.matches(w));
            }
            if ctx.json {
                output::json(&workers);
            } else if workers.is_empty() {
                match &filter {
                    Some(filter) => println!("no workers of {component} match {filter}"),
                    None => println!("no workers of {component}"),
                }
            } else {
                println!(
                    "{:<32} {:<11} {:>7} {:>8}  CREATED",
                    "NAME", "STATUS", "VERSION", "OPLOG"
                );
                for w in workers {
                    println!(
                        "{:<32} {:<11} {:>7} {:>8}  {}",
                        w.id.worker_name,
                        w.status.as_str(),
                        w.component_version,
                        w.oplog_len,
                        output::timestamp(w.created_at_ms)
                    );
                }
            }
        }
        WorkerCommand::Delete { worker } => {
            let id = worker_id(&executor, &worker)?;
            executor.delete_worker(&id)?;
            if ctx.json {
                output::json(&serde_json::json!({ "deleted": id.to_string() }));
            } else {
                println!("deleted worker {id}");
            }
        }
        WorkerCommand::Oplog {
            worker,
            from,
            count,
        } => {
            let id = worker_id(&executor, &worker)?;
            let blocks = executor.oplog(&id, from, count)?;
            let mut shown = 0usize;
            let mut corrupt = false;
            let mut rows = Vec::new();
            'blocks: for block in blocks {
                match block {
                    BlockRead::Entries(entries) => {
                        for (index, entry) in entries.into_iter().filter(|(i, _)| *i >= from) {
                            if shown == count {
                                break 'blocks;
                            }
                            shown += 1;
                            if ctx.json {
                                rows.push(serde_json::json!({
                                    "index": index,
                                    "kind": entry.kind(),
                                    "entry": entry,
                                }));
                            } else {
                                println!("{index:>8}  {:<28} {entry}", entry.kind());
                            }
                        }
                    }
                    BlockRead::Corrupt {
                        first,
                        last,
                        detail,
                    } => {
                        corrupt = true;
                        if ctx.json {
                            rows.push(serde_json::json!({
                                "first": first, "last": last, "corrupt": detail,
                            }));
                        } else {
                            eprintln!("{first:>8}  entries {first}..={last} are CORRUPT: {detail}");
                        }
                    }
                }
            }
            if ctx.json {
                output::json(&rows);
            }
            if corrupt {
                bail!("the oplog of {id} has corrupt entries (see above)");
            }
        }
        WorkerCommand::Recover {
            worker,
            full_replay,
        } => {
            let id = worker_id(&executor, &worker)?;
            let mode = if full_replay {
                RecoveryMode::FullReplay
            } else {
                RecoveryMode::Auto
            };
            let report = executor.recover(&id, mode)?;
            if ctx.json {
                output::json(&report);
            } else {
                for reason in &report.skipped {
                    eprintln!("warning: {reason}");
                }
                match report.snapshot_index {
                    Some(index) => println!(
                        "restored snapshot at oplog index {index} ({} bytes of memory) in {:.3} ms",
                        report.bytes_restored,
                        report.restore_us as f64 / 1000.0
                    ),
                    None => println!("no snapshot used: full replay"),
                }
                println!(
                    "recovered {id}: replayed {} entries ({} invocations) in {:.3} ms",
                    report.entries_replayed,
                    report.invocations_replayed,
                    report.duration_us as f64 / 1000.0
                );
                if report.resumed_invocation {
                    println!(
                        "an invocation that was in flight when the worker stopped was completed"
                    );
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
