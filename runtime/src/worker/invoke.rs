//! Running an invocation live: calling the export, classifying how it ended, and recording the
//! outcome (completion, retry, suspension, jump).

use wasm_wave::value::Value;
use wasmer::RuntimeError;

use super::Worker;
use crate::abi::{parse_wave, to_wave};
use crate::component::ExportedFunction;
use crate::error::{Error, Result};
use crate::host::{from_wasmer, to_wasmer, GuestMem};
use crate::oplog::{now_ms, OplogEntry};
use crate::outcome::{Halt, Unwind};
use crate::stop::StopReason;
use crate::storage::codec;
use crate::worker_records::{invocation_key, InvocationResult, WorkerStatus};

/// How one call of an export ended.
pub(super) enum CallOutcome {
    Returned(Option<Value>),
    Trapped(String),
    Exited(u32),
}

/// How one call of an export stopped: it ended, or a host function unwound the guest though
/// nothing failed (to be settled: see [`Worker::call_and_settle`]).
pub(super) enum Called {
    Ended(CallOutcome),
    Unwound(Unwind),
}

/// Parses WAVE params against an export's param types, with errors that name the param.
pub fn parse_params(export: &ExportedFunction, params: &[String]) -> Result<Vec<Value>> {
    let names = export.abi.param_names();
    let types = export.abi.param_types();
    let signature = || {
        names
            .iter()
            .zip(types)
            .map(|(n, t)| format!("{n}: {}", t))
            .collect::<Vec<_>>()
            .join(", ")
    };
    if params.len() != types.len() {
        return Err(Error::InvalidArguments(format!(
            "{} takes {} parameter{} ({}) but {} {} given",
            export.display_name,
            types.len(),
            if types.len() == 1 { "" } else { "s" },
            signature(),
            params.len(),
            if params.len() == 1 { "was" } else { "were" }
        )));
    }
    params
        .iter()
        .zip(types)
        .zip(names)
        .enumerate()
        .map(|(i, ((text, ty), name))| {
            parse_wave(ty, text).map_err(|e| {
                Error::InvalidArguments(format!(
                    "parameter {} ({name}: {}) of {}: {e}",
                    i + 1,
                    ty,
                    export.display_name
                ))
            })
        })
        .collect()
}

impl Worker {
    /// Invokes an export live with WAVE params; returns the WAVE result. `keep_result` stores
    /// the result under the idempotency key, for a caller that may repeat the key; without it
    /// (a key generated for this call, known to nobody) the result is only in the oplog, and
    /// the commit writes one table fewer.
    pub fn invoke(
        &mut self,
        function: &str,
        params: &[String],
        idempotency_key: &str,
        keep_result: bool,
        durable: bool,
    ) -> Result<Option<String>, Halt> {
        match self.record.status {
            WorkerStatus::Failed => {
                return Err(Error::WorkerFailed {
                    worker: self.record.id.clone(),
                    reason: self.record.last_error.clone().unwrap_or_default(),
                }
                .into())
            }
            WorkerStatus::Exited => {
                return Err(Error::WorkerExited {
                    worker: self.record.id.clone(),
                }
                .into())
            }
            _ => {}
        }
        let started = std::time::Instant::now();
        let export = self.interface.find_export(function)?;
        let values = parse_params(&export, params)?;
        let canonical: Vec<String> = values.iter().map(to_wave).collect::<Result<_, _>>()?;
        let invoked = self.gate().append(OplogEntry::ExportedFunctionInvoked {
            timestamp_ms: now_ms(),
            function: export.core_name.clone(),
            params: canonical,
            idempotency_key: idempotency_key.to_string(),
        })?;
        self.begin_invocation(invoked, idempotency_key);
        self.record.status = WorkerStatus::Running;
        let outcome = self.call_and_settle(&export, &values, idempotency_key)?;
        // What replaying it will cost: the same parsing, entries and call (not the commit).
        self.snapshots.replay_us += started.elapsed().as_micros() as u64;
        let result = self.finish_live(&export, idempotency_key, keep_result, durable, outcome)?;
        self.snapshots.invocations_since += 1;
        self.maybe_snapshot();
        Ok(result)
    }

    /// Records how a live invocation ended and commits it durably with the worker record and,
    /// with `keep_result`, the result under its idempotency key, in one transaction.
    pub(super) fn finish_live(
        &mut self,
        export: &ExportedFunction,
        idempotency_key: &str,
        keep_result: bool,
        durable: bool,
        outcome: CallOutcome,
    ) -> Result<Option<String>, Halt> {
        match &outcome {
            CallOutcome::Trapped(message) => {
                if let Some(retry) =
                    self.schedule_retry(&export.display_name, idempotency_key, message)?
                {
                    return Err(Halt::Deferred(retry));
                }
            }
            // It ran to the end: the retries of this invocation, if any, are over.
            _ => {
                self.record.retry_count = 0;
                self.record.last_error = None;
            }
        }
        let (entry, status, returned) = match outcome {
            CallOutcome::Returned(value) => {
                let result = value.as_ref().map(to_wave).transpose()?;
                (
                    OplogEntry::ExportedFunctionCompleted {
                        timestamp_ms: now_ms(),
                        result: result.clone(),
                    },
                    WorkerStatus::Idle,
                    Ok(result),
                )
            }

            CallOutcome::Trapped(message) => (
                OplogEntry::Error {
                    timestamp_ms: now_ms(),
                    message: message.clone(),
                },
                WorkerStatus::Failed,
                Err(Error::Trap {
                    function: export.display_name.clone(),
                    message,
                }),
            ),
            // A clean exit (0) ends the invocation like a return without a result; another
            // code is reported with the code (the worker is exited either way).
            CallOutcome::Exited(code) => (
                OplogEntry::Exited {
                    timestamp_ms: now_ms(),
                    code,
                },
                WorkerStatus::Exited,
                match code {
                    0 => Ok(None),
                    code => Err(Error::GuestExited {
                        worker: self.record.id.clone(),
                        code,
                    }),
                },
            ),
        };
        let completed_at = self.gate().append(entry)?;
        self.record.status = status;
        if let Err(err) = &returned {
            self.record.last_error = Some(err.to_string());
        }
        self.record.oplog_len = completed_at;
        let result_value = match &returned {
            Ok(result) if keep_result => Some(codec::encode(&InvocationResult {
                function: export.display_name.clone(),
                result: result.clone(),
                completed_at,
            })),
            _ => None,
        };
        let invocation_key = invocation_key(&self.record.uid, idempotency_key);
        let invocations = self.storage.tables().invocations;
        self.commit_record_with(durable, move |txn| {
            if let Some(value) = &result_value {
                txn.put(
                    invocations,
                    &invocation_key,
                    value,
                    lmdb::WriteFlags::empty(),
                )?;
            }
            Ok(())
        })?;
        Ok(returned?)
    }

    /// Calls an export for invocation `idempotency_key`. A guest unwound mid-call is settled
    /// here, the same live and in replay: a jump, a promise awaited or a long sleep is recorded
    /// as such and returned as the halt to report; so is an interrupt (an error).
    pub(super) fn call_and_settle(
        &mut self,
        export: &ExportedFunction,
        values: &[Value],
        idempotency_key: &str,
    ) -> Result<CallOutcome, Halt> {
        let called = match self.call_export(export, values) {
            Err(Error::Interrupted { .. }) => return Err(self.interrupted().into()),
            other => other?,
        };
        match called {
            Called::Ended(outcome) => Ok(outcome),
            Called::Unwound(Unwind::Jump { target }) => Err(self.record_jump(target)),
            Called::Unwound(Unwind::AwaitPromise { promise }) => {
                Err(self.suspend(promise, idempotency_key))
            }
            Called::Unwound(Unwind::Sleep { until_ms }) => {
                Err(self.sleep(until_ms, idempotency_key))
            }
        }
    }

    /// Calls an export: lower params, call, lift the result, post-return.
    pub(super) fn call_export(
        &mut self,
        export: &ExportedFunction,
        values: &[Value],
    ) -> Result<Called> {
        let func = self
            .instance
            .exports
            .get_function(&export.core_name)
            .cloned()
            .map_err(|_| {
                Error::UnknownFunction(format!("the module has no export {}", export.core_name))
            })?;
        let memory = self.memory.clone();
        let realloc = self.realloc.clone();
        let core_args = {
            let mut mem = GuestMem {
                store: &mut self.store,
                memory: &memory,
                realloc: realloc.as_ref(),
            };
            match export.abi.lower_params(&mut mem, values) {
                Ok(args) => args,
                Err(err) => return self.trapped_or_fatal(err.to_string()),
            }
        };
        let args: Vec<wasmer::Value> = core_args.into_iter().map(to_wasmer).collect();
        // The deadline counts from here (replayed calls included: a replay is no slower than
        // the run it repeats).
        self.stop.clear_deadline();
        let watch = self
            .watchdog
            .as_ref()
            .map(|w| w.watch(self.stop.clone(), self.store.interrupter()));
        let called = func.call(&mut self.store, &args);
        drop(watch);
        let results = match called {
            Ok(results) => results,
            Err(err) => return self.classify_trap(err),
        };
        let core_results = results
            .iter()
            .map(from_wasmer)
            .collect::<Result<Vec<_>, RuntimeError>>()
            .map_err(|e| Error::Engine(e.message()))?;
        let lifted = {
            let mem = GuestMem {
                store: &mut self.store,
                memory: &memory,
                realloc: realloc.as_ref(),
            };
            export.abi.lift_result(&mem, &core_results)
        };
        let value = match lifted {
            Ok(value) => value,
            Err(err) => {
                return self.trapped_or_fatal(format!("the result could not be read: {err}"))
            }
        };
        let post_name = crate::abi::post_return_name(&export.core_name);
        if let Ok(post) = self.instance.exports.get_function(&post_name).cloned() {
            if let Err(err) = post.call(&mut self.store, &results) {
                return self.classify_trap(err);
            }
        }
        Ok(Called::Ended(CallOutcome::Returned(value)))
    }

    pub(super) fn trapped_or_fatal(&mut self, message: String) -> Result<Called> {
        match self.gate().take_fatal() {
            Some(err) => Err(err),
            None => Ok(Called::Ended(CallOutcome::Trapped(message))),
        }
    }

    /// A guest call failed: a host-side fatal error (divergence, storage), an unwind, an exit,
    /// or a trap.
    pub(super) fn classify_trap(&mut self, err: RuntimeError) -> Result<Called> {
        let fatal = self.gate().take_fatal();
        let unwound = self.gate().take_unwind();
        // Whatever trapped once the call was asked to stop is the stop: Wasmer's signal can
        // land where its trap is not reported as `HostInterrupt`, and an invocation being
        // interrupted must not be retried; one past its deadline is a trap like any other.
        match (fatal, self.stop.reason()) {
            // A host function stopped the guest on purpose: settled below, not a trap.
            (None, _) if unwound.is_some() => {}
            (Some(Error::DeadlineExceeded { deadline, .. }), _)
            | (None, Some(StopReason::DeadlineExceeded { deadline })) => {
                return Ok(Called::Ended(CallOutcome::Trapped(format!(
                    "the invocation ran past its deadline of {} ms and was stopped",
                    deadline.as_millis()
                ))))
            }
            (Some(fatal), _) => return Err(fatal),
            (None, Some(StopReason::Interrupted)) => {
                return Err(Error::Interrupted {
                    worker: self.record.id.clone(),
                })
            }
            (None, None) => {}
        }
        if let Some(why) = unwound {
            return Ok(Called::Unwound(why));
        }
        let message = match err.downcast::<wasmer_wasix::WasiError>() {
            Ok(wasmer_wasix::WasiError::Exit(code)) => {
                return Ok(Called::Ended(CallOutcome::Exited(code.raw() as u32)))
            }
            Ok(other) => other.to_string(),
            Err(err) => err.message(),
        };
        // A Rust guest's panic is `unreachable`; what it printed says why.
        Ok(Called::Ended(CallOutcome::Trapped(
            match self.gate().stderr_tail() {
                Some(said) => format!("{message} (the guest wrote to stderr: {said})"),
                None => message,
            },
        )))
    }
}
