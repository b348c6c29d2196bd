//! `golemw worker new | invoke | get | list | delete | oplog | recover | revert | fork | update |
//! complete-promise | interrupt | resume | connect`

use std::process::ExitCode;

use anyhow::{bail, Context as _, Result};
use clap::Subcommand;
use golemw_runtime::history::{UpdateMode, UpdateOutcome};
use golemw_runtime::worker::RevertTarget;
use golemw_runtime::{Deferred, Error, RecoveryMode};

use super::{worker_id, Context};
use crate::output;
use golemw_runtime::WorkerRecord;

use crate::views::{self, OplogRow, WorkerDetails};

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
    ///
    /// An invocation that awaits a promise not yet complete suspends the worker: the command
    /// says which promise and exits with status 0. `worker complete-promise` resumes it, and
    /// this command with the same --idempotency-key then returns the result.
    Invoke {
        /// COMPONENT/WORKER
        worker: String,
        /// `ns:pkg/iface.{func}`, or `func` if unambiguous.
        function: String,
        /// Parameters as WAVE values.
        /// Options may come before or after them; negative numbers are values. A value that
        /// starts with `-` otherwise (`-inf`) goes after `--`, which ends the options.
        #[arg(allow_negative_numbers = true)]
        args: Vec<String>,
        /// Run at most once per key: a repeated key returns the stored result.
        #[arg(long)]
        idempotency_key: Option<String>,
        /// Queue the invocation and return its idempotency key once it is durably queued
        /// (Golem's `invoke`), instead of waiting for its result. A server runs it at once,
        /// after what is queued before it; without one, the worker's next invocation (in any
        /// process) runs it first.
        #[arg(long)]
        no_wait: bool,
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
    /// Go back in a worker's history: delete everything after an oplog index (or the last N
    /// invocations) and recover it from the nearest snapshot before that point. The revert is
    /// recorded in the oplog; a failed worker reverted to before its failure works again.
    #[command(group(clap::ArgGroup::new("target").required(true).args(["to_oplog_index", "last_invocations"])))]
    Revert {
        /// COMPONENT/WORKER
        worker: String,
        /// Keep the oplog up to and including this index (`worker oplog` shows indexes).
        #[arg(long, value_name = "N")]
        to_oplog_index: Option<u64>,
        /// Undo the last N invocations.
        #[arg(long, value_name = "N")]
        last_invocations: Option<u64>,
    },
    /// Make a new worker from another one's history: a copy of its oplog up to an index and of
    /// its snapshots up to there, after which the two live separate lives.
    ///
    /// The fork NEW is a worker of the same component, with the source's arguments and
    /// environment, on the component version the source ran at that index. Its state comes
    /// from the source's nearest snapshot at or before the index plus a replay of the entries
    /// after it, as at a restart: the snapshot's memory pages are shared with the source, not
    /// copied, so a fork costs about what a restore does (it is made in one durable transaction
    /// and started at its first use). Results of invocations that completed by the index are
    /// kept, so an idempotency key repeated to the fork answers as the source did. Promises the
    /// source created stay the source's; invocations queued for it are not the fork's.
    /// Deleting either worker leaves the other whole.
    ///
    /// The index defaults to the end of the source's oplog. It must be a point where the source
    /// was idle: not inside an invocation (one that is suspended, sleeping, retrying or
    /// interrupted too: fork before it), not inside a region a jump, revert or retry deleted,
    /// not inside an update. `worker oplog` shows the indexes.
    Fork {
        /// COMPONENT/WORKER: the worker to fork.
        worker: String,
        /// The new worker's name (in the same component).
        new_name: String,
        /// Copy the history up to and including this oplog index (default: all of it).
        #[arg(long, value_name = "N")]
        at_oplog_index: Option<u64>,
    },
    /// Move a worker to another version of its component (see `component update`).
    ///
    /// automatic: replay the worker's whole history on the new version; if the new code
    /// behaves differently on that history the update fails and the worker stays on its
    /// version. snapshot-based: the old version's golem:api/save-snapshot `save` export hands
    /// its state to the new version's golem:api/load-snapshot `load`; history before is skipped.
    /// Either way a memory snapshot of the new version is taken at once.
    #[command(disable_version_flag = true)]
    Update {
        /// COMPONENT/WORKER
        worker: String,
        /// The component version to move to.
        #[arg(long = "version", value_name = "V")]
        target_version: u64,
        /// automatic or snapshot-based.
        #[arg(long, default_value = "automatic")]
        mode: UpdateMode,
    },
    /// Complete a promise (golem:api's create-promise) with a payload, and resume the worker
    /// awaiting it: its suspended invocation finishes, and its result is stored under its
    /// idempotency key. Prints whether this call completed the promise (a second completion
    /// changes nothing); unknown and deleted promises are errors.
    #[command(group(clap::ArgGroup::new("payload").required(true).args(["data", "data_file"])))]
    CompletePromise {
        /// COMPONENT/WORKER: the worker that created the promise.
        worker: String,
        /// The promise's oplog index (the index of its create-promise entry).
        oplog_index: u64,
        /// The payload, as text (its UTF-8 bytes).
        data: Option<String>,
        /// Read the payload from a file instead.
        #[arg(long, value_name = "FILE")]
        data_file: Option<std::path::PathBuf>,
    },
    /// Mark a worker interrupted: nothing runs it (invocations, recovery, updates are refused,
    /// a completed promise does not resume it) until `worker resume`. A command running the
    /// worker holds the data directory, so this waits for no one: stop that process instead;
    /// its invocation is finished after `worker resume`.
    Interrupt {
        /// COMPONENT/WORKER
        worker: String,
    },
    /// Let an interrupted worker run again (back to idle, or suspended if it awaits a
    /// promise); an invocation left in flight, or whose promise was completed, finishes now.
    Resume {
        /// COMPONENT/WORKER
        worker: String,
    },
    /// Follow a worker's output (stdout, stderr) as it is committed, until interrupted; with
    /// --json, one object per line (`stream`, `index`, `text`). Needs `golemw serve` running
    /// on the data directory: it is what runs the worker meanwhile.
    Connect {
        /// COMPONENT/WORKER
        worker: String,
        /// Start at this oplog index (earlier output included); default: only new output.
        #[arg(long, value_name = "INDEX")]
        from: Option<u64>,
    },
}

/// `--env K=V` values as pairs.
pub fn parse_env(env: &[String]) -> Result<Vec<(String, String)>> {
    env.iter()
        .map(|kv| {
            kv.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .with_context(|| format!("--env {kv:?} is not K=V"))
        })
        .collect()
}

/// What `worker new` prints (without `--json`).
pub fn print_created(record: &WorkerRecord) {
    println!(
        "created worker {} on version {}",
        record.id, record.component_version
    );
}

pub fn run(ctx: &Context, cmd: WorkerCommand) -> Result<ExitCode> {
    let executor = ctx.executor()?;
    match cmd {
        WorkerCommand::New { worker, env, args } => {
            let id = worker_id(&executor, &worker)?;
            let env = parse_env(&env)?;
            let record = executor.create_worker(&id, args, env)?;
            if ctx.json {
                output::json(&record);
            } else {
                print_created(&record);
            }
        }
        WorkerCommand::Invoke {
            worker,
            function,
            args,
            idempotency_key,
            no_wait,
        } => {
            let id = worker_id(&executor, &worker)?;
            if no_wait {
                let key = executor.enqueue(&id, &function, &args, idempotency_key.as_deref())?;
                if ctx.json {
                    output::json(&serde_json::json!({
                        "status": "queued", "worker": id.to_string(), "idempotency_key": key,
                    }));
                } else {
                    println!("queued invocation {key} of {function} for worker {id}");
                }
                return Ok(ExitCode::SUCCESS);
            }
            let invoked = executor.invoke(&id, &function, &args, idempotency_key.as_deref())?;
            let outcome = match invoked.completed() {
                Ok(outcome) => outcome,
                Err(deferred) => {
                    super::promise::report_deferred(ctx, deferred);
                    return Ok(ExitCode::SUCCESS);
                }
            };
            if ctx.json {
                output::json(&serde_json::json!({
                    "status": "completed",
                    "result": outcome.result,
                    "from_idempotency_key": outcome.from_idempotency_key,
                }));
            } else if let Some(result) = outcome.result {
                println!("{result}");
            }
        }
        WorkerCommand::Get { worker } => {
            let id = worker_id(&executor, &worker)?;
            let details = WorkerDetails::read(&executor, &id)?;
            if ctx.json {
                output::json(&details.to_json());
            } else {
                print_details(details);
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
            } else {
                print_workers(&component, filter.as_ref().map(|f| f.to_string()), &workers);
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
            let rows = views::oplog_rows(&executor, &id, from, count)?;
            let corrupt = rows.iter().any(|r| matches!(r, OplogRow::Corrupt { .. }));
            if ctx.json {
                output::json(&rows.iter().map(OplogRow::to_json).collect::<Vec<_>>());
            } else {
                print_oplog(&rows);
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
            let report = match executor.recover(&id, mode) {
                Ok(report) => report,
                // Recovered, and the invocation it resumed awaits a promise again.
                Err(Error::WorkerSuspended {
                    worker,
                    promise,
                    idempotency_key,
                }) => {
                    let deferred = Deferred::Suspended {
                        worker,
                        promise,
                        idempotency_key,
                    };
                    super::promise::report_deferred(ctx, deferred);
                    return Ok(ExitCode::SUCCESS);
                }
                Err(err) => return Err(err.into()),
            };
            if ctx.json {
                // The report as the worker record keeps it, plus how the memory image was used.
                let mut value = serde_json::to_value(&report)?;
                value["image"] = serde_json::to_value(report.image)?;
                output::json(&value);
            } else {
                for reason in &report.skipped {
                    eprintln!("note: {reason}");
                }
                match report.snapshot_index {
                    Some(index) => println!(
                        "restored snapshot at oplog index {index} ({} bytes of memory) in {:.3} ms{}",
                        report.bytes_restored,
                        report.restore_us as f64 / 1000.0,
                        match report.image {
                            Some(image) => format!(
                                ", its memory image mapped ({} of {} pages right, {} written from \
                                 the snapshot)",
                                image.pages - image.repaired,
                                image.pages,
                                image.repaired
                            ),
                            None => String::new(),
                        }
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
        WorkerCommand::Revert {
            worker,
            to_oplog_index,
            last_invocations,
        } => {
            let id = worker_id(&executor, &worker)?;
            let target = match (to_oplog_index, last_invocations) {
                (Some(index), _) => RevertTarget::OplogIndex(index),
                (None, Some(count)) => RevertTarget::LastInvocations(count),
                (None, None) => bail!("give --to-oplog-index or --last-invocations"),
            };
            let report = executor.revert_worker(&id, target)?;
            if ctx.json {
                output::json(&views::reverted(&executor, &id, &report)?);
            } else {
                let record = executor.worker_record(&id)?;
                if let Some(region) = record.history.deleted.regions().last() {
                    println!("reverted {id}: entries {region} deleted");
                }
                match report.snapshot_index {
                    Some(index) => println!(
                        "recovered from the snapshot at oplog index {index}, replaying {} entries",
                        report.entries_replayed
                    ),
                    None => println!(
                        "recovered by full replay of {} entries",
                        report.entries_replayed
                    ),
                }
                println!(
                    "status {}, component version {}",
                    record.status.as_str(),
                    record.component_version
                );
            }
        }
        WorkerCommand::Fork {
            worker,
            new_name,
            at_oplog_index,
        } => {
            let id = worker_id(&executor, &worker)?;
            let fork = executor.fork_worker(&id, &new_name, at_oplog_index)?;
            if ctx.json {
                output::json(&fork);
            } else {
                print_forked(&fork);
            }
        }
        WorkerCommand::Update {
            worker,
            target_version,
            mode,
        } => {
            let id = worker_id(&executor, &worker)?;
            let update = executor.update_worker(&id, target_version, mode)?;
            if ctx.json {
                output::json(&update);
            } else {
                println!(
                    "updated {id} to version {target_version} ({mode}); a snapshot of it was taken"
                );
            }
        }
        WorkerCommand::CompletePromise {
            worker,
            oplog_index,
            data,
            data_file,
        } => super::promise::complete(ctx, &executor, &worker, oplog_index, data, data_file)?,
        WorkerCommand::Interrupt { worker } => {
            let id = worker_id(&executor, &worker)?;
            let previous = executor.interrupt_worker(&id)?;
            if ctx.json {
                output::json(&serde_json::json!({
                    "worker": id.to_string(), "status": "interrupted", "previous": previous,
                }));
            } else {
                println!("interrupted {id} (it was {})", previous.as_str());
            }
        }
        WorkerCommand::Connect { .. } => bail!(
            "`worker connect` follows a worker run by a server: start `golemw serve` on this \
             data directory first"
        ),
        WorkerCommand::Resume { worker } => {
            let id = worker_id(&executor, &worker)?;
            let status = executor.resume_worker(&id)?;
            if ctx.json {
                output::json(&serde_json::json!({ "worker": id.to_string(), "status": status }));
            } else {
                println!("resumed {id}: status {}", status.as_str());
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// What `worker fork` prints (without `--json`).
pub fn print_forked(fork: &golemw_runtime::executor::Fork) {
    println!(
        "forked {} at oplog index {} into {} (status {}, component version {})",
        fork.source,
        fork.oplog_index,
        fork.worker.id,
        fork.worker.status.as_str(),
        fork.worker.component_version
    );
    match fork.snapshots.last() {
        Some(index) => println!(
            "{} snapshot(s) shared with the source, the newest at oplog index {index}: its \
             first start restores it and replays {} entries",
            fork.snapshots.len(),
            fork.oplog_index - index
        ),
        None => println!(
            "no snapshot to share: its first start replays all {} entries",
            fork.oplog_index
        ),
    }
    println!(
        "{} oplog block(s) and {} invocation result(s) copied in {:.3} ms",
        fork.oplog_blocks,
        fork.invocation_results,
        fork.duration_us as f64 / 1000.0
    );
}

/// `worker get` as text.
pub fn print_details(details: WorkerDetails) {
    let id = details.id.clone();
    let WorkerDetails {
        record,
        oplog_len,
        latest_snapshot,
        snapshot_blocker: blocker,
        suspension,
        sleep,
        queued,
        image_bytes,
        origin,
        ..
    } = details;
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
    if let Some(origin) = &origin {
        println!(
            "forked from:       {} at oplog index {} ({})",
            origin.source,
            origin.at,
            output::timestamp(origin.forked_at_ms)
        );
    }
    match latest_snapshot {
        Some(index) => println!("latest snapshot:   at oplog index {index}"),
        None => println!("latest snapshot:   none"),
    }
    if let Some(reason) = &blocker {
        println!("snapshots:         disabled: {reason}");
    }
    if let Some(bytes) = image_bytes {
        println!(
            "memory image:      {:.1} MiB on disk (restarts map it)",
            bytes as f64 / (1 << 20) as f64
        );
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
    if let Some(s) = &suspension {
        println!(
            "awaiting:          {} (invocation {})",
            s.promise, s.idempotency_key
        );
    }
    if let Some(s) = &sleep {
        println!(
            "sleeping until:    {} (invocation {})",
            output::timestamp(s.until_ms),
            s.idempotency_key
        );
    }
    if queued > 0 {
        println!("queued:            {queued} invocations");
    }
    for region in record.history.deleted.regions() {
        println!("deleted entries:   {region} (jump, revert, retry or interrupted region)");
    }
    for u in &record.history.updates {
        let outcome = match &u.outcome {
            UpdateOutcome::Pending => "pending".to_string(),
            UpdateOutcome::Succeeded if u.undone => {
                "succeeded, then undone by a jump or revert".to_string()
            }
            UpdateOutcome::Succeeded => "succeeded".to_string(),
            UpdateOutcome::Failed(reason) => format!("failed: {reason}"),
        };
        let at = if u.completed_at > 0 {
            format!(" at oplog index {}", u.completed_at)
        } else {
            String::new()
        };
        println!(
            "update:            to version {} ({}){at}: {outcome}",
            u.target_version, u.mode
        );
    }
}

/// `worker list` as text.
pub fn print_workers(component: &str, filter: Option<String>, workers: &[WorkerRecord]) {
    if workers.is_empty() {
        match &filter {
            Some(filter) => println!("no workers of {component} match {filter}"),
            None => println!("no workers of {component}"),
        }
        return;
    }
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

/// `worker oplog` as text.
pub fn print_oplog(rows: &[OplogRow]) {
    for row in rows {
        match row {
            OplogRow::Entry {
                index,
                deleted,
                entry,
            } => {
                // Deleted entries stay visible, marked: the history shows what a jump or
                // revert undid.
                let mark = if *deleted { "x" } else { " " };
                println!("{index:>8} {mark} {:<28} {entry}", entry.kind());
            }
            OplogRow::Corrupt {
                first,
                last,
                detail,
            } => eprintln!("{first:>8}  entries {first}..={last} are CORRUPT: {detail}"),
        }
    }
}
