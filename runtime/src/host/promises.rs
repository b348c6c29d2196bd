//! The promise functions of `golem:api/host@0.2.0`: `create-promise`, `await-promise`,
//! `complete-promise`, `delete-promise` (the store is [`crate::promises`]).
//!
//! What is recorded, so that replay never reads the store:
//!
//! - `create-promise`: response = the index of its own entry (the promise's `oplog-idx`). The
//!   pending promise is written in the same transaction as the entry, so a promise exists
//!   exactly when its `create-promise` entry does.
//! - `await-promise`: recorded **only when it returns**: response = the payload. On a promise
//!   that is still pending nothing is recorded: the guest is unwound with [`Unwind::AwaitPromise`](crate::outcome::Unwind)
//!   and the worker suspends with its invocation open in the oplog. Resuming is recovering: replay
//!   reaches the await with no entry left, the gate is live, and the await reads the (now
//!   completed) promise and records its payload.
//! - `complete-promise`: response = whether this call completed it; the completion is written
//!   in the same transaction as the entry.
//! - `delete-promise`: response = unit; the tombstone is written with the entry.
//!
//! Using an unknown or deleted promise (await, complete, or delete of an unknown one) traps the
//! guest with a message saying which; the refusal is recorded, so replay traps the same way.

use std::sync::Arc;

use wasm_wave::value::Value;
use wasm_wave::wasm::WasmValue;

use super::{Failure, HostState};
use crate::abi::parse_wave;
use crate::abi::wave_string;
use crate::component::ImportedFunction;
use crate::error::{Error, Result};
use crate::gate::Gate;
use crate::oplog::{now_ms, HostFunction, HostValue, OplogEntry};
use crate::outcome::Unwind;
use crate::promises::{self, Completion, PromiseId, PromiseState};

/// The functions this module implements.
pub const FUNCTIONS: &[&str] = &[
    "create-promise",
    "await-promise",
    "complete-promise",
    "delete-promise",
];

/// One call of a promise function.
pub(crate) fn call(
    state: &mut HostState,
    func: &ImportedFunction,
    params: Vec<Value>,
) -> Result<Option<Value>, Failure> {
    let function = HostFunction::Golem(func.name.clone());
    let context = Arc::clone(&state.context);
    let storage = Arc::clone(&context.storage);
    let gate = &mut state.gate;
    let trap = |message: String| Failure::Trap(format!("{}: {message}", func.name));
    let shape = |value: &HostValue| {
        Failure::Fatal(Error::Corrupt {
            what: format!("recorded result of {}", func.name),
            detail: format!("unexpected shape: {value}"),
        })
    };
    match func.name.as_str() {
        "create-promise" => {
            let index = match gate.replayed_response(&function, &HostValue::Unit)? {
                Some(HostValue::U64(index)) => index,
                Some(other) => return Err(shape(&other)),
                None => {
                    // The promise is named after the entry that records its creation.
                    let index = gate.next_index();
                    let at =
                        gate.append(invoked(function, HostValue::Unit, HostValue::U64(index)))?;
                    assert_eq!(at, index, "an appended entry gets the gate's next index");
                    let uid = context.record.uid;
                    let storage = Arc::clone(&storage);
                    gate.commit_with(false, move |txn| {
                        promises::put_pending(txn, &storage, &uid, index)
                    })?;
                    index
                }
            };
            // Named after the worker that recorded the entry (a fork's copied history names
            // its source's promises, as the source's memory does).
            let id = PromiseId {
                worker: context.id_at(index).clone(),
                oplog_idx: index,
            };
            Ok(typed(func, &promise_id_wave(&id))?)
        }
        "await-promise" => {
            let id = promise_id(&params, 0, &func.name)?;
            let request = HostValue::Wave(promise_id_wave(&id));
            let data = match gate.replayed_response(&function, &request)? {
                Some(HostValue::Bytes(data)) => data,
                Some(HostValue::Wave(reason)) => return Err(trap(unquote(&reason))),
                Some(other) => return Err(shape(&other)),
                None => match promises::get(&storage, &id)?.map(|r| r.state) {
                    Some(PromiseState::Completed { data, .. }) => {
                        gate.append(invoked(function, request, HostValue::Bytes(data.clone())))?;
                        data
                    }
                    Some(PromiseState::Pending) => {
                        // Nothing is recorded: the worker suspends with this invocation open.
                        return Err(Failure::Unwind(Unwind::AwaitPromise { promise: id }));
                    }
                    Some(PromiseState::Deleted { .. }) => {
                        return Err(
                            refuse(gate, function, request, Error::PromiseDeleted(id))?.into()
                        )
                    }
                    None => {
                        return Err(
                            refuse(gate, function, request, Error::UnknownPromise(id))?.into()
                        )
                    }
                },
            };
            let ty = func
                .abi
                .result_type()
                .ok_or_else(|| Error::Engine(format!("{} has no result type", func.name)))?;
            let list = Value::make_list(ty, data.iter().map(|b| Value::make_u8(*b)))
                .map_err(|e| Error::Engine(format!("the payload as list<u8>: {e}")))?;
            Ok(Some(list))
        }
        "complete-promise" => {
            let id = promise_id(&params, 0, &func.name)?;
            let data: Vec<u8> = params
                .get(1)
                .map(|v| v.unwrap_list().map(|b| b.unwrap_u8()).collect())
                .unwrap_or_default();
            let request = HostValue::Wave(format!(
                "{}, <{} bytes, crc32 {:08x}>",
                promise_id_wave(&id),
                data.len(),
                crc32fast::hash(&data)
            ));
            let completed = match gate.replayed_response(&function, &request)? {
                Some(HostValue::U64(completed)) => completed == 1,
                Some(HostValue::Wave(reason)) => return Err(trap(unquote(&reason))),
                Some(other) => return Err(shape(&other)),
                None => match promises::check_completion(&storage, &id, data.len()) {
                    Ok(Completion::Completes) => {
                        gate.append(invoked(function, request, HostValue::U64(1)))?;
                        let completed = PromiseState::Completed {
                            data,
                            completed_at_ms: now_ms(),
                        };
                        let (storage, id) = (Arc::clone(&storage), id.clone());
                        gate.commit_with(false, move |txn| {
                            promises::put_state(txn, &storage, &id, completed.clone())
                        })?;
                        promises::note_event();
                        true
                    }
                    Ok(Completion::AlreadyCompleted) => {
                        gate.append(invoked(function, request, HostValue::U64(0)))?;
                        false
                    }
                    Err(
                        err @ (Error::UnknownPromise(_)
                        | Error::PromiseDeleted(_)
                        | Error::InvalidArguments(_)),
                    ) => return Err(refuse(gate, function, request, err)?.into()),
                    Err(err) => return Err(err.into()),
                },
            };
            Ok(typed(func, if completed { "true" } else { "false" })?)
        }
        "delete-promise" => {
            let id = promise_id(&params, 0, &func.name)?;
            let request = HostValue::Wave(promise_id_wave(&id));
            match gate.replayed_response(&function, &request)? {
                Some(HostValue::Unit) => Ok(None),
                Some(HostValue::Wave(reason)) => Err(trap(unquote(&reason))),
                Some(other) => Err(shape(&other)),
                None => match promises::get(&storage, &id)?.map(|r| r.state) {
                    None => Err(refuse(gate, function, request, Error::UnknownPromise(id))?.into()),
                    // Deleting twice changes nothing.
                    Some(PromiseState::Deleted { .. }) => {
                        gate.append(invoked(function, request, HostValue::Unit))?;
                        Ok(None)
                    }
                    Some(_) => {
                        gate.append(invoked(function, request, HostValue::Unit))?;
                        let deleted = PromiseState::Deleted {
                            deleted_at_ms: now_ms(),
                        };
                        let (storage, id) = (Arc::clone(&storage), id.clone());
                        gate.commit_with(false, move |txn| {
                            promises::put_state(txn, &storage, &id, deleted.clone())
                        })?;
                        promises::note_event();
                        Ok(None)
                    }
                },
            }
        }
        other => Err(Error::Engine(format!("{other} is not a promise function")).into()),
    }
}

/// The recorded response of this call while the gate replays (checking that the oplog has the
/// same call there), or `None` once it is live.
fn invoked(function: HostFunction, request: HostValue, response: HostValue) -> OplogEntry {
    OplogEntry::ImportedFunctionInvoked {
        function,
        request,
        response,
    }
}

/// Records that a call was refused (so replay refuses it again) and returns the guest trap.
fn refuse(
    gate: &mut Gate,
    function: HostFunction,
    request: HostValue,
    reason: Error,
) -> Result<Error> {
    let message = reason.to_string();
    let name = function.to_string();
    gate.append(invoked(
        function,
        request,
        HostValue::Wave(wave_string(&message)),
    ))?;
    Ok(Error::Trap {
        function: name,
        message,
    })
}

fn unquote(reason: &str) -> String {
    reason.trim_matches('"').replace("\\\"", "\"")
}

fn typed(func: &ImportedFunction, text: &str) -> Result<Option<Value>> {
    let ty = func
        .abi
        .result_type()
        .ok_or_else(|| Error::Engine(format!("{} has no result type", func.name)))?;
    Ok(Some(parse_wave(ty, text)?))
}

/// Reads a `promise-id` param.
fn promise_id(params: &[Value], at: usize, function: &str) -> Result<PromiseId> {
    let bad = || Error::Trap {
        function: function.to_string(),
        message: "the promise-id parameter could not be read".into(),
    };
    let value = params.get(at).ok_or_else(bad)?;
    let mut worker = None;
    let mut oplog_idx = None;
    for (field, v) in value.unwrap_record() {
        match field.as_ref() {
            "worker-id" => worker = super::context::worker_id_from_value(&v),
            "oplog-idx" => oplog_idx = Some(v.unwrap_u64()),
            _ => {}
        }
    }
    Ok(PromiseId {
        worker: worker.ok_or_else(bad)?,
        oplog_idx: oplog_idx.ok_or_else(bad)?,
    })
}

/// The WAVE text of a `promise-id` value.
pub fn promise_id_wave(id: &PromiseId) -> String {
    let (high, low) = id.worker.component_id.0.as_u64_pair();
    format!(
        "{{worker-id: {{component-id: {{uuid: {{high-bits: {high}, low-bits: {low}}}}}, \
         worker-name: {}}}, oplog-idx: {}}}",
        wave_string(&id.worker.worker_name),
        id.oplog_idx
    )
}
